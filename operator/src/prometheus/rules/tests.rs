//! The generated rules: the exact text for the default profile, the profile's names used
//! everywhere, every expression well formed, no rule reading raw samples over more than the
//! short window, and the chart's copy in step.

use std::time::Duration;

use super::*;
use crate::cli::metric_name;

/// The start of `invoice-operator rules` with the default profile and interval: the 5m rate
/// and error ratio, which read raw samples.
const DEFAULT_RULES_HEAD: &str = r#"# Recording rules of invoice-operator for its metric profile, printed by `invoice-operator rules`.
groups:
- name: invoiceops-sli
  interval: 30s
  rules:
  - record: invoiceops:requests:rate5m
    expr: sum by (namespace, service, invoiceops_class) (label_replace(rate(invoice_http_requests_total[5m]), "invoiceops_class", "${1}xx", "code", "([0-9]).."))
  - record: slo:sli_error:ratio_rate5m
    expr: label_replace(label_replace((sum by (namespace, service) (invoiceops:requests:rate5m{invoiceops_class="5xx"}) or 0 * sum by (namespace, service) (invoiceops:requests:rate5m)) / sum by (namespace, service) (invoiceops:requests:rate5m), "sloth_service", "$1", "service", "(.*)"), "sloth_id", "$1-availability", "service", "(.*)")
    labels:
      sloth_slo: availability
      sloth_window: 5m
"#;

/// A default-profile error-ratio rule over `WINDOW`, averaging the rate recorded at `SOURCE`.
const AVERAGED_RATIO_RULE: &str = r#"  - record: slo:sli_error:ratio_rateWINDOW
    expr: label_replace(label_replace((sum by (namespace, service) (avg_over_time(invoiceops:requests:SOURCE{invoiceops_class="5xx"}[WINDOW])) or 0 * sum by (namespace, service) (avg_over_time(invoiceops:requests:SOURCE[WINDOW]))) / sum by (namespace, service) (avg_over_time(invoiceops:requests:SOURCE[WINDOW])), "sloth_service", "$1", "service", "(.*)"), "sloth_id", "$1-availability", "service", "(.*)")
    labels:
      sloth_slo: availability
      sloth_window: WINDOW
"#;

/// The start of the hourly group of the default rules: the 1h rate.
const DEFAULT_HOURLY_HEAD: &str = r#"- name: invoiceops-sli-hourly
  interval: 1h
  rules:
  - record: invoiceops:requests:rate1h
    expr: avg_over_time(invoiceops:requests:rate5m[1h])
"#;

/// [`AVERAGED_RATIO_RULE`] over `window`, averaging `source` (`rate5m` or `rate1h`).
fn averaged_ratio_rule(window: &str, source: &str) -> String {
    AVERAGED_RATIO_RULE
        .replace("WINDOW", window)
        .replace("SOURCE", source)
}

/// `invoice-operator rules` with the default profile and interval.
fn default_rules_text() -> String {
    let mut text = DEFAULT_RULES_HEAD.to_owned();
    for window in ["30m", "1h", "2h", "6h"] {
        text += &averaged_ratio_rule(window, "rate5m");
    }
    for window in ["1d", "3d"] {
        text += &averaged_ratio_rule(window, "rate1h");
    }
    text += DEFAULT_HOURLY_HEAD;
    text += &averaged_ratio_rule("30d", "rate1h");
    text
}

/// The chart's copy, rendered by templates/prometheusrule.yaml.
const CHART_COPY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/invoice-operator/files/recording-rules.yaml"
);

fn default_rules() -> RuleFile {
    rule_file(&MetricProfile::default(), DEFAULT_INTERVAL)
}

fn custom_profile() -> MetricProfile {
    MetricProfile {
        requests_total: "http_requests_total".to_owned(),
        namespace_label: "kubernetes_namespace".to_owned(),
        service_label: "app".to_owned(),
        code_label: "status".to_owned(),
        ..MetricProfile::default()
    }
}

fn rules(file: &RuleFile) -> impl Iterator<Item = &RecordingRule> {
    file.groups.iter().flat_map(|group| &group.rules)
}

#[test]
fn the_default_profile_gives_exactly_these_rules() {
    assert_eq!(default_rules().to_yaml(), default_rules_text());
}

/// The chart's copy at `path` is `printed`, what `command` prints (`make chart-rules` copies it).
pub(in crate::prometheus) fn assert_chart_copy(path: &str, printed: &str, command: &str) {
    assert_eq!(
        std::fs::read_to_string(path).unwrap_or_default(),
        printed,
        "{path} drifted from `{command}`: run `make chart-rules`"
    );
}

#[test]
fn the_charts_copy_is_the_default_rules() {
    let printed = default_rules().to_yaml();
    assert_chart_copy(CHART_COPY, &printed, "invoice-operator rules");
}

#[test]
fn the_groups_are_named_and_timed_and_ordered_by_dependency() {
    let file = rule_file(&MetricProfile::default(), Duration::from_secs(60));
    let groups: Vec<(&str, &str)> = file
        .groups
        .iter()
        .map(|group| (group.name.as_str(), group.interval.as_str()))
        .collect();
    assert_eq!(groups, [(SLI_GROUP, "1m"), (HOURLY_GROUP, "1h")]);
    // Each group records its source series before the rules reading it.
    assert_eq!(file.groups[0].rules[0].record, RATE_5M);
    assert_eq!(file.groups[1].rules[0].record, RATE_1H);
    let ratios: Vec<String> = rules(&file)
        .filter(|rule| rule.record.starts_with(SLOTH_ERROR_RATIO_PREFIX))
        .map(|rule| rule.labels["sloth_window"].clone())
        .collect();
    assert_eq!(ratios, ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]);
    assert_eq!(
        error_ratio_series(WINDOWS[7]),
        "slo:sli_error:ratio_rate30d"
    );
}

/// Identifier-like words of an expression, string literals included.
fn words(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| !word.is_empty())
        .collect()
}

#[test]
fn a_custom_profile_names_its_own_labels_and_metric_everywhere() {
    let profile = custom_profile();
    let file = rule_file(&profile, DEFAULT_INTERVAL);
    for rule in rules(&file) {
        let words = words(&rule.expr);
        for default in [
            "namespace",
            "service",
            "code",
            "invoice_http_requests_total",
        ] {
            assert!(!words.contains(&default), "{default} in {}", rule.expr);
        }
        if rule.record == RATE_1H {
            continue; // an average over time keeps the labels of its source
        }
        for label in ["kubernetes_namespace", "app"] {
            assert!(words.contains(&label), "{label} missing in {}", rule.expr);
        }
    }
    let rate = &file.groups[0].rules[0].expr;
    assert!(rate.contains("rate(http_requests_total[5m])"), "{rate}");
    assert!(rate.contains(r#""status", "([0-9]).."#), "{rate}");
    let ratio = &file.groups[0].rules[1].expr;
    assert!(
        ratio.contains(r#""sloth_service", "$1", "app", "(.*)""#),
        "{ratio}"
    );
}

/// A label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    metric_name(name).is_ok() && !name.contains(':')
}

/// A Prometheus range duration: one or more number-unit pairs.
fn is_range(text: &str) -> bool {
    let units = ["ms", "s", "m", "h", "d", "w", "y"];
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let Some(unit) = units.iter().find(|unit| rest[digits..].starts_with(**unit)) else {
            return false;
        };
        if digits == 0 {
            return false;
        }
        rest = &rest[digits + unit.len()..];
    }
    !text.is_empty()
}

/// What a hand lexer can check without a PromQL parser: brackets balance and close in order
/// outside string literals, every literal ends, every function is one the rules use, every
/// selector names a valid metric, every grouping a valid label, every range a duration.
fn check_expr(expr: &str) {
    let mut open = Vec::new();
    let mut characters = expr.char_indices().peekable();
    while let Some((index, character)) = characters.next() {
        match character {
            '"' => loop {
                match characters.next() {
                    Some((_, '\\')) => {
                        characters.next();
                    }
                    Some((_, '"')) => break,
                    Some(_) => {}
                    None => panic!("unterminated string in {expr}"),
                }
            },
            '(' | '[' | '{' => open.push((character, index)),
            ')' | ']' | '}' => {
                let (opened, start) = open
                    .pop()
                    .unwrap_or_else(|| panic!("extra {character} in {expr}"));
                let expected = match opened {
                    '(' => ')',
                    '[' => ']',
                    _ => '}',
                };
                assert_eq!(
                    character, expected,
                    "{opened} closed by {character} in {expr}"
                );
                if opened == '[' {
                    assert!(is_range(&expr[start + 1..index]), "range in {expr}");
                }
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "unclosed {open:?} in {expr}");
    check_names(expr);
}

/// Every identifier outside string literals is a known function or keyword, a valid label
/// name in `by (...)` or before `=`, or else a valid metric name.
fn check_names(expr: &str) {
    const FUNCTIONS: [&str; 4] = ["sum", "rate", "avg_over_time", "label_replace"];
    let mut unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join("\"\"");
    while let Some(start) = unquoted.find("by (") {
        let list_start = start + "by (".len();
        let length = unquoted[list_start..].find(')').expect("by list closes");
        for label in unquoted[list_start..list_start + length].split(", ") {
            assert!(is_label_name(label), "{label:?} grouped by in {expr}");
        }
        unquoted.replace_range(start..list_start + length, "(");
    }
    let mut rest = unquoted.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        match (word, after.trim_start().chars().next()) {
            ("or", _) => {}
            (function, Some('(')) => {
                assert!(FUNCTIONS.contains(&function), "{function}( in {expr}")
            }
            (label, Some('=')) => assert!(is_label_name(label), "{label} in {expr}"),
            (metric, _) => assert_eq!(metric_name(metric).as_deref(), Ok(metric), "{expr}"),
        }
        rest = after;
    }
}

#[test]
fn every_expression_is_well_formed_and_every_name_valid() {
    for profile in [MetricProfile::default(), custom_profile()] {
        let file = rule_file(&profile, DEFAULT_INTERVAL);
        for rule in rules(&file) {
            check_expr(&rule.expr);
            assert_eq!(
                metric_name(&rule.record).as_deref(),
                Ok(rule.record.as_str())
            );
            for name in rule.labels.keys() {
                assert!(is_label_name(name), "{name}");
            }
        }
    }
}

#[test]
fn the_lexer_catches_broken_expressions() {
    for broken in [
        "sum(rate(x[5m])",
        "sum(rate(x[5m)])",
        r#"x{a="b}"#,
        "rat(x[5m])",
        "x[5 minutes]",
        "sum by (a-b) (x)",
    ] {
        assert!(
            std::panic::catch_unwind(|| check_expr(broken)).is_err(),
            "{broken} accepted"
        );
    }
}

/// The ranges read directly from `series` in `expr` (`series[W]` or `series{...}[W]`).
fn ranges_of<'a>(expr: &'a str, series: &str) -> Vec<&'a str> {
    expr.match_indices(series)
        .filter_map(|(at, _)| {
            let mut rest = &expr[at + series.len()..];
            if rest.starts_with('{') {
                rest = &rest[rest.find('}')? + 1..];
            }
            Some(rest.strip_prefix('[')?.split_once(']')?.0)
        })
        .collect()
}

#[test]
fn no_rule_reads_more_than_an_hour_of_raw_samples() {
    let profile = MetricProfile::default();
    let mut raw_reads = 0;
    for rule in rules(&rule_file(&profile, DEFAULT_INTERVAL)) {
        for window in ranges_of(&rule.expr, &profile.requests_total) {
            assert_eq!(window, "5m", "{}", rule.expr);
            raw_reads += 1;
        }
        // The 5-minute rates are averaged over less than a day, hourly rates from a day on.
        for window in ranges_of(&rule.expr, RATE_5M) {
            assert!(["30m", "1h", "2h", "6h"].contains(&window), "{}", rule.expr);
        }
        for window in ranges_of(&rule.expr, RATE_1H) {
            assert!(["1d", "3d", "30d"].contains(&window), "{}", rule.expr);
        }
    }
    assert_eq!(raw_reads, 1, "only {RATE_5M} reads raw samples");
}

#[test]
fn intervals_from_a_second_to_five_minutes_are_accepted() {
    assert_eq!(check_interval(Duration::from_secs(30)), Ok(()));
    assert_eq!(check_interval(Duration::from_secs(1)), Ok(()));
    assert_eq!(check_interval(MAX_INTERVAL), Ok(()));
    assert_eq!(check_interval(Duration::ZERO), Err(IntervalError::TooShort));
    assert_eq!(
        check_interval(Duration::from_millis(500)),
        Err(IntervalError::TooShort)
    );
    assert_eq!(
        check_interval(Duration::from_secs(301)),
        Err(IntervalError::TooLong)
    );
}
