//! Tests of the API types: examples round-trip, defaults are safe, every validation rule
//! fires with its field path, and the committed CRD matches the code.

use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::*;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every InvoiceService document in `examples/`, with the file it came from.
fn example_documents() -> Vec<(String, Value)> {
    let mut documents = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(repository_root().join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            if value["kind"] == "InvoiceService" {
                documents.push((path.display().to_string(), value));
            }
        }
    }
    documents
}

/// True when every field of `subset` is present with the same value in `superset`.
fn is_contained(subset: &Value, superset: &Value) -> bool {
    match (subset, superset) {
        (Value::Object(small), Value::Object(large)) => small.iter().all(|(key, value)| {
            large
                .get(key)
                .is_some_and(|other| is_contained(value, other))
        }),
        (Value::Array(small), Value::Array(large)) => {
            small.len() == large.len() && small.iter().zip(large).all(|(a, b)| is_contained(a, b))
        }
        _ => subset == superset,
    }
}

fn full_example() -> InvoiceService {
    let (_, value) = example_documents()
        .into_iter()
        .find(|(path, _)| path.ends_with("billing-api-three-zones.yaml"))
        .expect("the three-zone example exists");
    serde_json::from_value(value).unwrap()
}

#[test]
fn examples_exist_for_minimal_and_three_zone_services() {
    let files: Vec<String> = example_documents()
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    assert!(
        files.iter().any(|path| path.ends_with("minimal.yaml")),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|path| path.ends_with("billing-api-three-zones.yaml")),
        "{files:?}"
    );
}

#[test]
fn every_example_round_trips_without_losing_or_changing_a_field() {
    for (path, original) in example_documents() {
        let parsed: InvoiceService = serde_json::from_value(original.clone())
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        let written = serde_json::to_value(&parsed).unwrap();
        assert!(
            is_contained(&original, &written),
            "{path}: a field changed in {written:#}"
        );
        let reparsed: InvoiceService = serde_json::from_value(written).unwrap();
        assert_eq!(reparsed, parsed, "{path}: second round trip differs");
    }
}

#[test]
fn every_example_passes_validation() {
    for (path, value) in example_documents() {
        let service: InvoiceService = serde_json::from_value(value).unwrap();
        assert_eq!(validate(&service.spec), Vec::new(), "{path}");
    }
}

#[test]
fn decimals_and_durations_keep_the_text_the_user_wrote() {
    let service = full_example();
    assert_eq!(service.spec.slos.availability.objective.as_str(), "99.95");
    let read_only = service.spec.remediation.read_only.as_ref().unwrap();
    assert_eq!(
        read_only.exit_when.db_pool_utilization_below.as_str(),
        "0.70"
    );
    let written = serde_json::to_value(&service).unwrap();
    assert_eq!(
        written["spec"]["slos"]["availability"]["objective"],
        "99.95"
    );
    assert_eq!(
        written["spec"]["remediation"]["readOnly"]["exitWhen"]["dbPoolUtilizationBelow"],
        "0.70"
    );
    assert_eq!(written["spec"]["slos"]["latency"]["threshold"], "200ms");
}

#[test]
fn minimal_manifest_gets_safe_defaults() {
    let minimal: InvoiceService = serde_yaml::from_str(
        "apiVersion: invoiceops.dev/v1alpha1\nkind: InvoiceService\nmetadata: {name: a}\n\
         spec: {workload: {deployment: a}, slos: {availability: {objective: \"99.9\"}}}",
    )
    .unwrap();
    let spec = &minimal.spec;
    assert_eq!(validate(spec), Vec::new());
    assert_eq!(spec.signals.interval.get().as_secs(), 15);
    assert_eq!(spec.signals.min_request_rate.as_str(), "0.5");
    assert_eq!(spec.slos.availability.window.get().as_secs(), 30 * 86_400);
    assert_eq!(
        spec.slos.availability.burn_rate_windows,
        default_burn_rate_windows()
    );
    let remediation = &spec.remediation;
    assert_eq!(remediation.mode, RemediationMode::Enforce);
    assert!(!remediation.paused);
    assert_eq!(remediation.budget.max_actions, 6);
    assert_eq!(remediation.budget.per.get().as_secs(), 3600);
    assert_eq!(remediation.cooldown.get().as_secs(), 120);
    assert_eq!(remediation.verify_window.get().as_secs(), 180);
    assert_eq!(
        remediation.max_unhealthy_pods,
        IntOrString::String("40%".into())
    );
    assert_eq!(remediation.restart_pod.max_unavailable, 1);
    assert!(remediation.scale.min_replicas <= remediation.scale.max_replicas);
    assert!(remediation.blackout_windows.is_empty());
    // Without a mode switch and with no zones, the rungs that could not act are left out.
    assert_eq!(
        spec.effective_ladder(),
        vec![Rung::RestartPod, Rung::RolloutRestart, Rung::ScaleOut]
    );
}

#[test]
fn default_ladder_includes_read_only_and_failover_when_the_spec_supports_them() {
    let mut service = full_example();
    service.spec.remediation.ladder = None;
    assert_eq!(service.spec.effective_ladder(), Rung::ALL.to_vec());
}

#[test]
fn default_burn_rate_windows_follow_the_sre_workbook() {
    let windows: Vec<(u64, u64, f64, BurnSeverity)> = default_burn_rate_windows()
        .iter()
        .map(|w| {
            (
                w.long.get().as_secs(),
                w.short.get().as_secs(),
                w.factor.get(),
                w.severity,
            )
        })
        .collect();
    assert_eq!(
        windows,
        vec![
            (3600, 300, 14.4, BurnSeverity::Page),
            (6 * 3600, 1800, 6.0, BurnSeverity::Page),
            (86_400, 7200, 3.0, BurnSeverity::Ticket),
            (3 * 86_400, 6 * 3600, 1.0, BurnSeverity::Ticket),
        ]
    );
}

/// One validation rule: how to break the full example, and the field that must be named.
struct Case {
    rule: &'static str,
    break_spec: fn(&mut InvoiceServiceSpec),
    field: &'static str,
}

fn decimal(text: &'static str) -> Decimal {
    Decimal::from_static(text)
}

fn duration(text: &'static str) -> Duration {
    Duration::from_static(text)
}

#[test]
fn each_validation_rule_reports_its_field() {
    let cases = [
        Case {
            rule: "exactly one workload form",
            break_spec: |spec| spec.workload.deployment = Some("extra".into()),
            field: "spec.workload",
        },
        Case {
            rule: "no workload at all",
            break_spec: |spec| spec.workload.deployments = None,
            field: "spec.workload",
        },
        Case {
            rule: "at least one zonal deployment",
            break_spec: |spec| spec.workload.deployments = Some(Vec::new()),
            field: "spec.workload.deployments",
        },
        Case {
            rule: "unique zones",
            break_spec: |spec| spec.workload.deployments.as_mut().unwrap()[1].zone = "az1".into(),
            field: "spec.workload.deployments",
        },
        Case {
            rule: "unique deployment names",
            break_spec: |spec| {
                spec.workload.deployments.as_mut().unwrap()[2].name = "billing-api-az1".into()
            },
            field: "spec.workload.deployments",
        },
        Case {
            rule: "zones only with a single deployment",
            break_spec: |spec| spec.workload.zones = Some(vec!["az1".into(), "az2".into()]),
            field: "spec.workload.zones",
        },
        Case {
            rule: "unique zones for a single deployment",
            break_spec: |spec| {
                spec.workload.deployments = None;
                spec.workload.deployment = Some("billing-api".into());
                spec.workload.zones = Some(vec!["az1".into(), "az1".into()]);
            },
            field: "spec.workload.zones",
        },
        Case {
            rule: "no failover by node affinity for a Rollout",
            break_spec: |spec| {
                spec.workload.deployments = None;
                spec.workload.deployment = Some("billing-api".into());
                spec.workload.zones = Some(vec!["az1".into(), "az2".into()]);
                spec.workload.kind = WorkloadKind::Rollout;
            },
            field: "spec.workload.zones",
        },
        Case {
            rule: "interval not below the minimum",
            break_spec: |spec| spec.signals.interval = duration("1s"),
            field: "spec.signals.interval",
        },
        Case {
            rule: "prometheus url is http(s)",
            break_spec: |spec| {
                spec.signals.prometheus = Some(PrometheusSource {
                    url: "prometheus:9090".into(),
                })
            },
            field: "spec.signals.prometheus.url",
        },
        Case {
            rule: "custom queries are not blank",
            break_spec: |spec| {
                spec.signals.queries = Some(CustomQueries {
                    error_ratio: Some("  ".into()),
                    ..CustomQueries::default()
                })
            },
            field: "spec.signals.queries.errorRatio",
        },
        Case {
            rule: "custom query parses as PromQL",
            break_spec: |spec| {
                spec.signals.queries = Some(CustomQueries {
                    latency: Some(
                        "histogram_quantile($quantile, sum by (le) (rate(x[$window]))".into(),
                    ),
                    ..CustomQueries::default()
                })
            },
            field: "spec.signals.queries.latency",
        },
        Case {
            rule: "custom query yields an instant vector or a scalar",
            break_spec: |spec| {
                spec.signals.queries = Some(CustomQueries {
                    request_rate: Some("http_requests_total[$window]".into()),
                    ..CustomQueries::default()
                })
            },
            field: "spec.signals.queries.requestRate",
        },
        Case {
            rule: "prometheus url names a host",
            break_spec: |spec| {
                spec.signals.prometheus = Some(PrometheusSource {
                    url: "http://:9090".into(),
                })
            },
            field: "spec.signals.prometheus.url",
        },
        Case {
            rule: "prometheus url is a URL",
            break_spec: |spec| {
                spec.signals.prometheus = Some(PrometheusSource {
                    url: "http://prometheus monitoring:9090".into(),
                })
            },
            field: "spec.signals.prometheus.url",
        },
        Case {
            rule: "objective below 100",
            break_spec: |spec| spec.slos.availability.objective = decimal("100"),
            field: "spec.slos.availability.objective",
        },
        Case {
            rule: "objective above 0",
            break_spec: |spec| spec.slos.availability.objective = decimal("0"),
            field: "spec.slos.availability.objective",
        },
        Case {
            rule: "burn-rate short window shorter than long",
            break_spec: |spec| spec.slos.availability.burn_rate_windows[0].short = duration("2h"),
            field: "spec.slos.availability.burnRateWindows[0].short",
        },
        Case {
            rule: "burn-rate long window within the SLO window",
            break_spec: |spec| spec.slos.availability.burn_rate_windows[3].long = duration("60d"),
            field: "spec.slos.availability.burnRateWindows[3].long",
        },
        Case {
            rule: "burn-rate factor positive",
            break_spec: |spec| spec.slos.availability.burn_rate_windows[1].factor = decimal("0"),
            field: "spec.slos.availability.burnRateWindows[1].factor",
        },
        Case {
            rule: "latency percentile below 100",
            break_spec: |spec| spec.slos.latency.as_mut().unwrap().percentile = decimal("100"),
            field: "spec.slos.latency.percentile",
        },
        Case {
            rule: "latency threshold positive",
            break_spec: |spec| spec.slos.latency.as_mut().unwrap().threshold = duration("0ms"),
            field: "spec.slos.latency.threshold",
        },
        Case {
            rule: "verify window not shorter than the interval",
            break_spec: |spec| spec.remediation.verify_window = duration("10s"),
            field: "spec.remediation.verifyWindow",
        },
        Case {
            rule: "canary window not shorter than the interval",
            break_spec: |spec| {
                spec.remediation.zone_failover.fail_back.canary_for = duration("10s")
            },
            field: "spec.remediation.zoneFailover.failBack.canaryFor",
        },
        Case {
            rule: "maxUnhealthyPods percentage at most 100%",
            break_spec: |spec| {
                spec.remediation.max_unhealthy_pods = IntOrString::String("140%".into())
            },
            field: "spec.remediation.maxUnhealthyPods",
        },
        Case {
            rule: "maxUnhealthyPods count not negative",
            break_spec: |spec| spec.remediation.max_unhealthy_pods = IntOrString::Int(-1),
            field: "spec.remediation.maxUnhealthyPods",
        },
        Case {
            rule: "ladder without duplicates",
            break_spec: |spec| {
                spec.remediation.ladder = Some(vec![Rung::RestartPod, Rung::RestartPod])
            },
            field: "spec.remediation.ladder",
        },
        Case {
            rule: "ZoneFailover needs two zones",
            break_spec: |spec| spec.workload.deployments.as_mut().unwrap().truncate(1),
            field: "spec.remediation.ladder",
        },
        Case {
            rule: "ReadOnly needs a switch",
            break_spec: |spec| spec.remediation.read_only = None,
            field: "spec.remediation.ladder",
        },
        Case {
            rule: "restart error ratio at most 1",
            break_spec: |spec| spec.remediation.restart_pod.error_ratio_above = decimal("1.5"),
            field: "spec.remediation.restartPod.errorRatioAbove",
        },
        Case {
            rule: "minReplicas not above maxReplicas",
            break_spec: |spec| spec.remediation.scale.min_replicas = 20,
            field: "spec.remediation.scale.minReplicas",
        },
        Case {
            rule: "scale step at least 1",
            break_spec: |spec| spec.remediation.scale.step = 0,
            field: "spec.remediation.scale.step",
        },
        Case {
            rule: "read-only exit below enter",
            break_spec: |spec| {
                spec.remediation
                    .read_only
                    .as_mut()
                    .unwrap()
                    .exit_when
                    .db_pool_utilization_below = decimal("0.99")
            },
            field: "spec.remediation.readOnly.exitWhen.dbPoolUtilizationBelow",
        },
        Case {
            rule: "zone error ratio at most 1",
            break_spec: |spec| {
                spec.remediation
                    .zone_failover
                    .unhealthy_when
                    .zone_error_ratio_above = decimal("3")
            },
            field: "spec.remediation.zoneFailover.unhealthyWhen.zoneErrorRatioAbove",
        },
        Case {
            rule: "minHealthyZones leaves a zone to fail over",
            break_spec: |spec| spec.remediation.zone_failover.min_healthy_zones = 3,
            field: "spec.remediation.zoneFailover.minHealthyZones",
        },
        Case {
            rule: "blackout schedule is cron",
            break_spec: |spec| spec.remediation.blackout_windows[0].schedule = "0 25 * * *".into(),
            field: "spec.remediation.blackoutWindows[0].schedule",
        },
        Case {
            rule: "blackout time zone is an IANA name",
            break_spec: |spec| {
                spec.remediation.blackout_windows[0].time_zone = Some("Europe/Berlln".into())
            },
            field: "spec.remediation.blackoutWindows[0].timeZone",
        },
        Case {
            rule: "blackout duration bounded",
            break_spec: |spec| spec.remediation.blackout_windows[0].duration = duration("60d"),
            field: "spec.remediation.blackoutWindows[0].duration",
        },
        Case {
            rule: "Enforce needs an action budget of at least 1",
            break_spec: |spec| spec.remediation.budget.max_actions = 0,
            field: "spec.remediation.budget.maxActions",
        },
        Case {
            rule: "budget window positive",
            break_spec: |spec| spec.remediation.budget.per = duration("0s"),
            field: "spec.remediation.budget.per",
        },
        Case {
            rule: "RTO not shorter than the interval",
            break_spec: |spec| spec.slos.recovery.as_mut().unwrap().rto = duration("1s"),
            field: "spec.slos.recovery.rto",
        },
        Case {
            rule: "settle period not shorter than the interval",
            break_spec: |spec| spec.slos.recovery.as_mut().unwrap().settle_for = duration("1s"),
            field: "spec.slos.recovery.settleFor",
        },
        Case {
            rule: "at-risk share at most 1",
            break_spec: |spec| spec.slos.recovery.as_mut().unwrap().at_risk_after = decimal("1.5"),
            field: "spec.slos.recovery.atRiskAfter",
        },
        Case {
            rule: "RPO positive",
            break_spec: |spec| spec.slos.recovery.as_mut().unwrap().rpo = Some(duration("0s")),
            field: "spec.slos.recovery.rpo",
        },
    ];
    for case in cases {
        let mut spec = full_example().spec;
        (case.break_spec)(&mut spec);
        let problems = validate(&spec);
        assert!(
            problems.iter().any(|problem| problem.field == case.field),
            "rule {:?}: expected a problem at {}, got {problems:?}",
            case.rule,
            case.field
        );
        for problem in &problems {
            let message = problem.to_string();
            assert!(message.starts_with("spec."), "{message}");
            assert!(!message.ends_with('.'), "no trailing period: {message}");
        }
    }
}

/// The problems of the full example with `queries` as its custom PromQL.
fn problems_with_queries(queries: CustomQueries) -> Vec<SpecProblem> {
    let mut spec = full_example().spec;
    spec.signals.queries = Some(queries);
    validate(&spec)
}

#[test]
fn custom_promql_with_placeholders_is_valid() {
    let queries = CustomQueries {
        error_ratio: Some(
            "sum(rate(http_requests_total{job=\"billing\",code=~\"5..\"}[$window])) \
             / sum(rate(http_requests_total{job=\"billing\"}[$window]))"
                .into(),
        ),
        request_rate: Some("sum(rate(http_requests_total{job=\"billing\"}[$window]))".into()),
        latency: Some(
            "histogram_quantile($quantile, sum by (le) \
             (rate(http_request_duration_seconds_bucket{job=\"billing\"}[$window])))"
                .into(),
        ),
        db_pool_utilization: Some("max(db_pool_in_use / db_pool_size) or vector(0)".into()),
    };
    assert_eq!(problems_with_queries(queries), Vec::new());
    // A scalar answer is read as well as a vector.
    let scalar = CustomQueries {
        db_pool_utilization: Some("scalar(max(db_pool_in_use))".into()),
        ..CustomQueries::default()
    };
    assert_eq!(problems_with_queries(scalar), Vec::new());
}

#[test]
fn unparseable_custom_promql_is_refused_naming_the_query_and_the_parser_error() {
    let broken = "sum(rate(http_requests_total{code=~\"5..\"}[$window])";
    let problems = problems_with_queries(CustomQueries {
        error_ratio: Some(broken.into()),
        ..CustomQueries::default()
    });
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problem = &problems[0];
    assert_eq!(problem.field, "spec.signals.queries.errorRatio");
    // The query as the user wrote it (placeholders unfilled), then the parser's words.
    assert!(
        problem
            .message
            .starts_with(&format!("{broken:?} is not valid PromQL: ")),
        "{problem}"
    );
    assert!(problem.message.len() > format!("{broken:?} is not valid PromQL: ").len());
    assert!(!problem.message.ends_with('.'), "{problem}");
}

#[test]
fn each_custom_query_is_checked_on_its_own() {
    let problems = problems_with_queries(CustomQueries {
        error_ratio: Some("rate(errors_total[$window]) /".into()),
        request_rate: Some("sum(rate(requests_total[$window]))".into()),
        latency: Some("histogram_quantile($quantile, rate(latency_bucket[$window])".into()),
        db_pool_utilization: Some("up{".into()),
    });
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.signals.queries.errorRatio",
            "spec.signals.queries.latency",
            "spec.signals.queries.dbPoolUtilization",
        ]
    );
}

#[test]
fn a_range_vector_query_is_refused_as_unreadable() {
    let problems = problems_with_queries(CustomQueries {
        error_ratio: Some("errors_total[$window] / requests_total[$window]".into()),
        request_rate: Some("requests_total[$window]".into()),
        ..CustomQueries::default()
    });
    let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("spec.signals.queries.errorRatio: ")
            && messages[0].contains("is not valid PromQL"),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("spec.signals.queries.requestRate: ")
            && messages[1].contains("yields a matrix"),
        "{messages:?}"
    );
}

#[test]
fn prometheus_urls_are_parsed() {
    let problems_for = |url: &str| {
        let mut spec = full_example().spec;
        spec.signals.prometheus = Some(PrometheusSource { url: url.into() });
        validate(&spec)
    };
    for good in [
        "http://prometheus.monitoring:9090",
        "https://prometheus.example.com/",
        "http://thanos-query.monitoring.svc:10902/prefix",
        "http://[::1]:9090",
        "http://127.0.0.1:9090",
    ] {
        assert_eq!(problems_for(good), Vec::new(), "{good}");
    }
    for (bad, words) in [
        ("prometheus.monitoring:9090", "scheme"),
        ("ftp://prometheus.monitoring", "scheme"),
        ("file:///etc/prometheus", "scheme"),
        ("http://", "not a URL"),
        ("http://:9090", "not a URL"),
        ("http://prometheus:99999", "not a URL"),
        ("http://prom etheus:9090", "not a URL"),
        ("/api/v1", "not a URL"),
    ] {
        let problems = problems_for(bad);
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert_eq!(problems[0].field, "spec.signals.prometheus.url", "{bad}");
        assert!(
            problems[0].message.contains(words),
            "{bad}: {}",
            problems[0]
        );
    }
}

#[test]
fn blackout_time_zones_are_iana_names() {
    let problems_for = |zone: &str| {
        let mut spec = full_example().spec;
        spec.remediation.blackout_windows[0].time_zone = Some(zone.into());
        validate(&spec)
    };
    for good in [
        "Europe/Berlin",
        "America/New_York",
        "Asia/Kolkata",
        "UTC",
        "Etc/GMT+2",
    ] {
        assert_eq!(problems_for(good), Vec::new(), "{good}");
    }
    for bad in [
        "Europe/Berln",
        "CEST",
        "+01:00",
        "Local",
        "",
        "../../etc/passwd",
    ] {
        let problems = problems_for(bad);
        assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
        assert_eq!(
            problems[0].field, "spec.remediation.blackoutWindows[0].timeZone",
            "{bad:?}"
        );
        assert!(
            problems[0].message.contains(&format!("{bad:?}")),
            "{}",
            problems[0]
        );
    }
}

#[test]
fn durations_in_weeks_are_valid_wherever_durations_are() {
    let mut spec = full_example().spec;
    spec.slos.availability.window = duration("4w");
    spec.remediation.budget.per = duration("1w");
    assert_eq!(validate(&spec), Vec::new());
    assert_eq!(spec.slos.availability.window.get().as_secs(), 28 * 86_400);
    // Burn-rate windows are compared with the window in weeks as with one in days.
    spec.slos.availability.burn_rate_windows[3].long = duration("5w");
    let fields: Vec<String> = validate(&spec).into_iter().map(|p| p.field).collect();
    assert_eq!(fields, ["spec.slos.availability.burnRateWindows[3].long"]);
}

#[test]
fn an_action_budget_of_zero_is_valid_only_in_dry_run() {
    let mut spec = full_example().spec;
    spec.remediation.budget.max_actions = 0;
    let fields: Vec<String> = validate(&spec).into_iter().map(|p| p.field).collect();
    assert_eq!(fields, ["spec.remediation.budget.maxActions"]);
    spec.remediation.mode = RemediationMode::DryRun;
    assert_eq!(validate(&spec), Vec::new(), "DryRun never acts anyway");
}

#[test]
fn validation_reports_every_problem_not_just_the_first() {
    let mut spec = full_example().spec;
    spec.remediation.scale.min_replicas = 20;
    spec.slos.availability.objective = decimal("0");
    spec.signals.interval = duration("1s");
    let fields: Vec<String> = validate(&spec).into_iter().map(|p| p.field).collect();
    assert_eq!(fields.len(), 3, "{fields:?}");
}

#[test]
fn committed_crd_matches_the_code() {
    let path = repository_root().join("crds/invoiceservices.invoiceops.dev.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == crd_yaml(),
        "{} is out of date with the Rust types: run `make crds` and commit the result",
        path.display()
    );
}

#[test]
fn crd_has_printer_columns_short_name_and_status_subresource() {
    let yaml = crd_yaml();
    for needle in [
        "shortNames:\n    - invsvc",
        "name: Phase",
        "name: Availability",
        "name: Budget",
        "name: Last Action",
        "name: Mode",
        "name: Age",
        "subresources:\n      status: {}",
    ] {
        assert!(yaml.contains(needle), "missing {needle:?}");
    }
}

#[test]
fn every_spec_field_is_documented_for_kubectl_explain() {
    let crd: Value = serde_yaml::from_str(crd_yaml().split_once("---\n").unwrap().1).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut undocumented = Vec::new();
    find_undocumented("", schema, &mut undocumented);
    assert_eq!(undocumented, Vec::<String>::new());
}

fn find_undocumented(path: &str, properties: &Value, undocumented: &mut Vec<String>) {
    let Some(properties) = properties.as_object() else {
        return;
    };
    for (name, schema) in properties {
        let field = format!("{path}.{name}");
        // Embedded Kubernetes types (metadata, conditions) document themselves upstream.
        if field == ".metadata" || field.starts_with(".status.conditions") {
            continue;
        }
        if schema.get("description").is_none() {
            undocumented.push(field.clone());
        }
        find_undocumented(&field, &schema["properties"], undocumented);
        find_undocumented(&field, &schema["items"]["properties"], undocumented);
    }
}

#[test]
fn a_phase_is_spelled_as_status_serialises_it() {
    for phase in crate::api::Phase::ALL {
        assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
    }
}
