//! The chart's Grafana dashboard (charts/invoice-operator/files/dashboard.json): it parses,
//! every panel has a title, a place and a query, and every PromQL expression in it (panels,
//! annotations, variables) reads only metrics the operator exports, so it cannot silently
//! rot when a metric is renamed.

use serde_json::Value;

use super::tests::exported_series;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/invoice-operator/files/dashboard.json"
);

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("dashboard.json");
    serde_json::from_str(&text).expect("dashboard.json is JSON")
}

/// Every PromQL expression of the dashboard, with where it is.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            found.push((format!("panel {title}"), expr.to_owned()));
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        if let Some(expr) = annotation["expr"].as_str() {
            found.push((
                format!("annotation {}", annotation["name"]),
                expr.to_owned(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            found.push((format!("variable {}", variable["name"]), query.to_owned()));
        }
    }
    found
}

/// The metric names an expression reads: the `invoiceops_` words (and `up`) outside string
/// literals.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut outside = String::new();
    for (index, part) in expr.split('"').enumerate() {
        if index % 2 == 0 {
            outside.push_str(part);
            outside.push(' ');
        }
    }
    for word in outside.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("invoiceops_") || word == "up" {
            names.push(word.to_owned());
        }
    }
    names
}

#[test]
fn every_panel_has_a_title_a_place_and_a_query() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "invoice-operator");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "{title}: id reused"
        );
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        if panel["type"] != "row" {
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title} has no query");
        }
    }
    let titles: Vec<&str> = panels
        .iter()
        .filter_map(|panel| panel["title"].as_str())
        .collect();
    for wanted in [
        "Services by phase",
        "Error budget remaining",
        "Actions by kind and result",
        "Blocked decisions by gate",
        "Burn rate per window",
        "Fleet cycle time",
        "Prometheus queries",
        "Kubernetes API requests",
        "Leader",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted}: {titles:?}");
    }
}

#[test]
fn every_expression_reads_only_metrics_the_operator_exports() {
    let exported = exported_series();
    let expressions = expressions(&dashboard());
    assert!(expressions.len() > 20, "{expressions:?}");
    for (place, expr) in &expressions {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: reads no metric: {expr}");
        for name in names {
            assert!(
                name == "up" || exported.contains(&name),
                "{place}: {name} is not a metric the operator exports: {expr}"
            );
        }
        let open = expr.matches('(').count();
        assert_eq!(open, expr.matches(')').count(), "{place}: {expr}");
    }
}

#[test]
fn the_check_has_teeth() {
    let exported = exported_series();
    let renamed = metric_names("sum(invoiceops_decisions_blocked{job=\"$job\"})");
    assert_eq!(renamed, ["invoiceops_decisions_blocked"]);
    assert!(
        !exported.contains(&renamed[0]),
        "a counter is exported with _total only"
    );
}
