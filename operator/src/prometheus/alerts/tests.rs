//! The generated alerts: every alert named, annotated and linked to a runbook section that
//! exists, every metric it reads one the operator exports, every selector limited to the
//! operator's job, the settings used everywhere, and the chart's copy in step.

use std::{collections::BTreeSet, time::Duration};

use super::*;
use crate::{metrics::Metrics, prometheus::rules::tests::assert_chart_copy};

/// The chart's copy, rendered by templates/prometheusrule-alerts.yaml.
const CHART_COPY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/invoice-operator/files/alerting-rules.yaml"
);

/// The runbook the alerts link to.
const RUNBOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/runbook.md");

const ALL: [&str; 8] = [
    NEEDS_ATTENTION,
    LADDER_EXHAUSTED,
    SIGNALS_UNTRUSTED,
    BURN_BLOCKED,
    OPERATOR_DOWN,
    NO_LEADER,
    CYCLE_OVERRUNS,
    QUERIES_FAILING,
];

fn default_alerts() -> AlertFile {
    alert_file(&AlertSettings::default())
}

fn rules(file: &AlertFile) -> impl Iterator<Item = &AlertingRule> {
    file.groups.iter().flat_map(|group| &group.rules)
}

/// Every series name the operator's `/metrics` carries once each family has a series: the
/// sample names of the encoded text (`_total`, `_bucket`, `_info` and the like included).
pub(crate) fn exported_series() -> BTreeSet<String> {
    let text = metrics_with_every_family().encode();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The operator's metrics with one series in every labelled family.
fn metrics_with_every_family() -> Metrics {
    use crate::metrics::{
        BurnRateLabels, ErrorLabels, GateLabels, KubernetesRequestLabels, PermissionLabels,
        QueryErrorLabels, QueryLabels, RemediationLabels, ServiceState,
    };
    let metrics = Metrics::default();
    let remediation = RemediationLabels {
        action: "RestartPod",
        result: "applied",
        mode: "Enforce",
    };
    metrics.remediations.get_or_create(&remediation).inc();
    metrics
        .blocked
        .get_or_create(&GateLabels { gate: "Cooldown" })
        .inc();
    let error = ErrorLabels { error: "status" };
    metrics.reconcile_errors.get_or_create(&error).inc();
    let kind = "pod_rates";
    metrics
        .prometheus_queries
        .get_or_create(&QueryLabels { kind })
        .inc();
    let reason = "QueryFailed";
    let query_error = QueryErrorLabels { kind, reason };
    metrics
        .prometheus_query_errors
        .get_or_create(&query_error)
        .inc();
    let burn = BurnRateLabels {
        namespace: "billing".to_owned(),
        service: "invoices".to_owned(),
        window: "5m".to_owned(),
    };
    metrics.burn_rates.get_or_create(&burn).set(1.0);
    let state = ServiceState {
        phase: "Healthy",
        mode: "Enforce",
        needs_attention: false,
        signals_trusted: true,
        error_budget_remaining: Some(1.0),
        availability: Some(1.0),
        ladder_rung: 0,
        ladder_exhausted: false,
        incident_open: false,
    };
    metrics.service_state.set("billing", "invoices", &state);
    let permission = PermissionLabels {
        verb: "create",
        resource: "pods/eviction",
    };
    metrics.permission_missing.get_or_create(&permission).set(0);
    let request = KubernetesRequestLabels {
        method: "GET",
        watch: "false",
    };
    metrics.kubernetes_requests.get_or_create(&request).inc();
    metrics
}

/// Identifier-like words of an expression outside string literals.
fn words(expr: &str) -> Vec<&str> {
    let mut outside = Vec::new();
    for (index, part) in expr.split('"').enumerate() {
        if index % 2 == 0 {
            outside.push(part);
        }
    }
    outside
        .into_iter()
        .flat_map(|part| part.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')))
        .filter(|word| !word.is_empty())
        .collect()
}

#[test]
fn the_charts_copy_is_the_default_alerts() {
    let printed = default_alerts().to_yaml();
    assert_chart_copy(CHART_COPY, &printed, "invoice-operator rules --alerts");
}

#[test]
fn every_alert_is_there_once_with_a_severity_and_annotations() {
    let file = default_alerts();
    assert_eq!(file.groups.len(), 1);
    assert_eq!(file.groups[0].name, ALERT_GROUP);
    let names: Vec<&str> = rules(&file).map(|rule| rule.alert.as_str()).collect();
    assert_eq!(names, ALL);
    for rule in rules(&file) {
        let severity = rule.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{}: {severity:?}",
            rule.alert
        );
        let keys: Vec<&str> = rule.annotations.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["description", "runbook_url", "summary"],
            "{}",
            rule.alert
        );
        assert!(!rule.for_duration.is_empty(), "{}", rule.alert);
    }
}

#[test]
fn every_description_names_what_the_alert_is_about_from_its_labels() {
    for rule in rules(&default_alerts()) {
        let description = &rule.annotations["description"];
        let expected = match rule.alert.as_str() {
            BURN_BLOCKED => "{{ $labels.gate }}",
            OPERATOR_DOWN => "{{ $labels.job }}",
            NO_LEADER => "invoice-operator",
            CYCLE_OVERRUNS => "{{ $value | humanize }}",
            QUERIES_FAILING => "{{ $labels.kind }}",
            _ => "{{ $labels.namespace }}/{{ $labels.service }}",
        };
        assert!(
            description.contains(expected),
            "{}: {description}",
            rule.alert
        );
    }
}

#[test]
fn every_runbook_url_points_at_a_section_of_the_runbook() {
    let runbook = std::fs::read_to_string(RUNBOOK).expect("docs/runbook.md");
    let headings: Vec<String> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(runbook_anchor)
        .collect();
    for rule in rules(&default_alerts()) {
        let url = &rule.annotations["runbook_url"];
        let anchor = url
            .strip_prefix("docs/runbook.md#")
            .unwrap_or_else(|| panic!("{url}"));
        assert!(
            headings.iter().any(|heading| heading == anchor),
            "docs/runbook.md has no section {anchor} ({})",
            rule.alert
        );
    }
}

#[test]
fn every_metric_read_is_one_the_operator_exports() {
    let exported = exported_series();
    assert!(
        exported.contains("invoiceops_decisions_blocked_total"),
        "{exported:?}"
    );
    for rule in rules(&default_alerts()) {
        for word in words(&rule.expr) {
            if word.starts_with("invoiceops_") {
                assert!(
                    exported.contains(word),
                    "{}: {word} is not exported",
                    rule.alert
                );
            }
        }
    }
}

#[test]
fn every_selector_is_limited_to_the_operators_job() {
    for rule in rules(&default_alerts()) {
        let selectors = rule.expr.matches('{').count();
        let limited = rule.expr.matches("{job=\"invoice-operator\"").count();
        assert!(selectors > 0, "{}", rule.alert);
        assert_eq!(selectors, limited, "{}: {}", rule.alert, rule.expr);
        let open = rule.expr.matches('(').count();
        assert_eq!(open, rule.expr.matches(')').count(), "{}", rule.expr);
    }
}

#[test]
fn the_burn_alert_joins_both_page_windows_and_fires_per_gate() {
    let file = default_alerts();
    let rule = rules(&file)
        .find(|rule| rule.alert == BURN_BLOCKED)
        .expect("burn");
    assert!(
        rule.expr.starts_with("sum by (gate) (increase("),
        "{}",
        rule.expr
    );
    for window in ["window=\"1h\"} > 14.4", "window=\"5m\"} > 14.4"] {
        assert!(
            rule.expr.contains(window),
            "{window} missing in {}",
            rule.expr
        );
    }
    assert!(
        rule.expr.contains("and on (namespace, service)"),
        "{}",
        rule.expr
    );
    assert_eq!(rule.labels["severity"], "critical");
}

#[test]
fn the_settings_are_used_everywhere() {
    let settings = AlertSettings {
        runbook_url: "https://docs.example/runbook.html".to_owned(),
        operator_job: "ops/invoices".to_owned(),
        untrusted_for: Duration::from_secs(30) * 4,
    };
    let file = alert_file(&settings);
    for rule in rules(&file) {
        assert!(!rule.expr.contains("\"invoice-operator\""), "{}", rule.expr);
        assert!(rule.expr.contains("{job=\"ops/invoices\""), "{}", rule.expr);
        assert_eq!(
            rule.annotations["runbook_url"],
            format!(
                "https://docs.example/runbook.html#{}",
                rule.alert.to_lowercase()
            )
        );
    }
    let untrusted = rules(&file)
        .find(|rule| rule.alert == SIGNALS_UNTRUSTED)
        .expect("untrusted");
    assert_eq!(untrusted.for_duration, "2m");
    let default = default_alerts();
    let untrusted = rules(&default)
        .find(|rule| rule.alert == SIGNALS_UNTRUSTED)
        .expect("untrusted");
    assert_eq!(untrusted.for_duration, "5m");
}
