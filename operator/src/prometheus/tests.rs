//! Unit tests of planning and splitting, fed recorded answers; the live source against the
//! loopback `PrometheusStub` fixture.

use std::{collections::BTreeSet, time::Duration};

use serde_json::{Value, json};

use super::*;
use crate::{
    api::InvoiceServiceSpec,
    fixtures::{PromAnswer, PrometheusStub},
    signals::{RequestRates, ServiceKey, UnknownReason},
};

const DETECTION: Duration = Duration::from_secs(60);
const STALE_AFTER: Duration = Duration::from_secs(120);
/// Evaluation time of every recorded answer.
const NOW: f64 = 1_700_000_000.0;

fn minutes(count: u64) -> Duration {
    Duration::from_secs(60 * count)
}

fn hours(count: u64) -> Duration {
    minutes(60 * count)
}

fn days(count: u64) -> Duration {
    hours(24 * count)
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// A valid spec with the workbook's burn-rate windows, a 30-day SLO and p99, plus `extra`.
fn spec(extra: Value) -> InvoiceServiceSpec {
    let mut base = json!({
        "workload": {"deployment": "billing-api"},
        "slos": {
            "availability": {"objective": "99.95"},
            "latency": {"threshold": "200ms", "percentile": "99"}
        }
    });
    merge(&mut base, extra);
    serde_json::from_value(base).expect("test spec is valid")
}

fn key(namespace: &str, service: &str) -> ServiceKey {
    ServiceKey {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
    }
}

fn selector(namespace: &str, service: &str) -> ServiceSelector {
    ServiceSelector {
        key: key(namespace, service),
        quantile: Some("0.99".to_owned()),
        certificate: Some(format!("{service}-tls")),
    }
}

fn series(labels: &[(&str, &str)], value: f64) -> Series {
    Series {
        labels: labels
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        timestamp: NOW,
        value,
    }
}

fn pod_rate(service: &str, pod: &str, zone: &str, class: &str, value: f64) -> Series {
    series(
        &[
            ("namespace", "invoicing"),
            ("service", service),
            ("pod", pod),
            ("zone", zone),
            (promql::CLASS_LABEL, class),
        ],
        value,
    )
}

fn fresh(service: &str, pod: &str, age_seconds: f64) -> Series {
    series(
        &[
            ("namespace", "invoicing"),
            ("service", service),
            ("pod", pod),
        ],
        NOW - age_seconds,
    )
}

fn pool(service: &str, pod: &str, gauge: &str, value: f64) -> Series {
    series(
        &[
            ("namespace", "invoicing"),
            ("service", service),
            ("pod", pod),
            (promql::POOL_GAUGE_LABEL, gauge),
        ],
        value,
    )
}

fn service_rate(service: &str, class: &str, value: f64) -> Series {
    series(
        &[
            ("namespace", "invoicing"),
            ("service", service),
            (promql::CLASS_LABEL, class),
        ],
        value,
    )
}

/// A fleet query with one burn-rate window (5m) and p99.
fn small_query() -> FleetQuery {
    let mut query = FleetQuery::new(DETECTION, STALE_AFTER);
    query.windows.insert(minutes(5));
    query.quantiles.insert("0.99".to_owned());
    query
}

/// Answers for `billing` (pods a in az1 and b in az2, both fresh) and nothing else.
fn billing_answers() -> Vec<(QueryKind, QueryOutcome)> {
    vec![
        (
            QueryKind::PodRates,
            Ok(vec![
                pod_rate("billing", "billing-a", "az1", "2xx", 10.0),
                pod_rate("billing", "billing-a", "az1", "5xx", 1.0),
                pod_rate("billing", "billing-a", "az1", "4xx", 0.5),
                pod_rate("billing", "billing-b", "az2", "2xx", 8.0),
            ]),
        ),
        (
            QueryKind::Freshness,
            Ok(vec![
                fresh("billing", "billing-a", 3.0),
                fresh("billing", "billing-b", 4.0),
            ]),
        ),
        (
            QueryKind::ServiceRates(minutes(5)),
            Ok(vec![
                service_rate("billing", "2xx", 18.0),
                service_rate("billing", "5xx", 2.0),
            ]),
        ),
        (
            QueryKind::ServiceLatency("0.99".to_owned()),
            Ok(vec![series(
                &[("namespace", "invoicing"), ("service", "billing")],
                0.18,
            )]),
        ),
        (
            QueryKind::PodLatency("0.99".to_owned()),
            Ok(vec![series(
                &[
                    ("namespace", "invoicing"),
                    ("service", "billing"),
                    ("pod", "billing-a"),
                    ("zone", "az1"),
                ],
                0.25,
            )]),
        ),
        (
            QueryKind::DbPool,
            Ok(vec![
                pool("billing", "billing-a", promql::POOL_ACTIVE, 8.0),
                pool("billing", "billing-a", promql::POOL_MAX, 10.0),
                pool("billing", "billing-b", promql::POOL_ACTIVE, 2.0),
                pool("billing", "billing-b", promql::POOL_MAX, 10.0),
            ]),
        ),
        (
            QueryKind::Certificates,
            Ok(vec![series(
                &[("namespace", "invoicing"), ("name", "billing-tls")],
                1.9e9,
            )]),
        ),
    ]
}

fn split(answers: Vec<(QueryKind, QueryOutcome)>) -> FleetMetrics {
    FleetMetrics::from_outcomes(&small_query(), &MetricProfile::default(), answers)
}

fn replace(
    mut answers: Vec<(QueryKind, QueryOutcome)>,
    kind: QueryKind,
    outcome: QueryOutcome,
) -> Vec<(QueryKind, QueryOutcome)> {
    for answer in &mut answers {
        if answer.0 == kind {
            answer.1 = outcome.clone();
        }
    }
    answers
}

fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{actual} is not {expected}"
    );
}

#[test]
fn for_services_collects_the_distinct_windows_and_quantiles() {
    let workbook = spec(json!({}));
    let tighter = spec(json!({
        "slos": {
            "availability": {
                "window": "28d",
                "burnRateWindows": [
                    {"long": "1h", "short": "5m", "factor": "14.4", "severity": "Page"},
                    {"long": "2h", "short": "10m", "factor": "10", "severity": "Page"}
                ]
            },
            "latency": {"percentile": "99.9"}
        }
    }));
    let custom = spec(json!({
        "signals": {"queries": {"errorRatio": "my_ratio[$window]"}},
        "slos": {"availability": {"window": "90d"}, "latency": {"percentile": "50"}}
    }));
    let query = FleetQuery::for_services([&workbook, &tighter, &custom], DETECTION, STALE_AFTER);
    let expected_windows: BTreeSet<Duration> = [
        minutes(5),
        minutes(10),
        minutes(30),
        hours(1),
        hours(2),
        hours(6),
        days(1),
        days(3),
        days(28),
        days(30),
    ]
    .into();
    assert_eq!(query.windows, expected_windows);
    let expected_quantiles: BTreeSet<String> = ["0.99".to_owned(), "0.999".to_owned()].into();
    assert_eq!(query.quantiles, expected_quantiles);
    assert_eq!(query.only, None);
    assert!(!uses_fleet_queries(&custom), "custom PromQL is per service");
}

#[test]
fn the_number_of_planned_queries_does_not_depend_on_the_number_of_services() {
    let profile = MetricProfile::default();
    let plan_for = |services: usize| {
        let specs: Vec<InvoiceServiceSpec> = (0..services).map(|_| spec(json!({}))).collect();
        FleetQuery::for_services(&specs, DETECTION, STALE_AFTER).plan(&profile)
    };
    let one = plan_for(1);
    // Workbook windows (5m 30m 1h 2h 6h 1d 3d), the 30-day SLO window and p99:
    // 4 + 8 + 2 × 1.
    assert_eq!(one.len(), 14);
    for services in [2, 100, 1_000] {
        assert_eq!(plan_for(services), one, "{services} services");
    }
    let query = FleetQuery::for_services([&spec(json!({}))], DETECTION, STALE_AFTER);
    assert_eq!(query.planned_queries(), one.len());
}

#[test]
fn the_detection_window_is_not_queried_twice() {
    let mut query = small_query();
    query.windows.insert(DETECTION);
    let plan = query.plan(&MetricProfile::default());
    let window_queries = plan
        .iter()
        .filter(|planned| matches!(planned.kind, QueryKind::ServiceRates(_)))
        .count();
    assert_eq!(window_queries, 1, "only 5m; 1m comes from the pod sums");
    assert_eq!(query.planned_queries(), plan.len());
}

#[test]
fn a_recorded_vector_answer_is_split_per_pod_and_summed_per_service() {
    // A real /api/v1/query body as Prometheus sends it.
    let body = json!({
        "status": "success",
        "data": {"resultType": "vector", "result": [
            {"metric": {"namespace": "invoicing", "service": "billing", "pod": "billing-a", "zone": "az1", "invoiceops_class": "2xx"}, "value": [NOW, "10"]},
            {"metric": {"namespace": "invoicing", "service": "billing", "pod": "billing-a", "zone": "az1", "invoiceops_class": "5xx"}, "value": [NOW, "1"]},
            {"metric": {"namespace": "invoicing", "service": "billing", "pod": "billing-a", "zone": "az1", "invoiceops_class": "4xx"}, "value": [NOW, "0.5"]},
            {"metric": {"namespace": "invoicing", "service": "billing", "pod": "billing-b", "zone": "az2", "invoiceops_class": "2xx"}, "value": [NOW, "8"]},
            {"metric": {"namespace": "other", "service": "billing", "pod": "billing-a", "zone": "az3", "invoiceops_class": "5xx"}, "value": [NOW, "100"]}
        ]}
    })
    .to_string();
    let answers = replace(
        billing_answers(),
        QueryKind::PodRates,
        parse_query_response(&body),
    );
    let metrics = split(answers).service(&selector("invoicing", "billing"));

    let pod_a = &metrics.pods["billing-a"];
    assert_eq!(pod_a.zone.as_deref(), Some("az1"));
    assert_eq!(
        pod_a.rates,
        Ok(RequestRates {
            total: 11.5,
            server_errors: 1.0,
            client_errors: 0.5
        })
    );
    assert_close(pod_a.rates.unwrap().error_ratio(0.5).unwrap(), 1.0 / 11.5);
    assert_eq!(pod_a.latency_seconds, Ok(0.25));
    assert_eq!(pod_a.db_pool_utilization, Ok(0.8));
    let pod_b = &metrics.pods["billing-b"];
    assert_eq!(pod_b.zone.as_deref(), Some("az2"));
    assert_eq!(pod_b.latency_seconds, Err(UnknownReason::NoData));
    assert_eq!(
        metrics.pods.len(),
        2,
        "the other namespace's pod is not ours"
    );

    // The detection window is the sum of the pods; the 5m window is the service answer.
    assert_eq!(
        metrics.rates(DETECTION),
        Ok(RequestRates {
            total: 19.5,
            server_errors: 1.0,
            client_errors: 0.5
        })
    );
    assert_close(
        metrics.rates(minutes(5)).unwrap().error_ratio(0.5).unwrap(),
        0.1,
    );
    assert_eq!(metrics.latency_seconds, Ok(0.18));
    assert_eq!(metrics.db_pool_utilization, Ok(0.5));
    assert_eq!(metrics.certificate_expires_at, Ok(1.9e9));
}

#[test]
fn nan_and_infinite_samples_are_not_a_number() {
    let mut answers = billing_answers();
    answers.push((
        QueryKind::PodRates,
        Ok(vec![
            pod_rate("billing", "billing-a", "az1", "2xx", f64::NAN),
            pod_rate("billing", "billing-b", "az2", "2xx", 8.0),
        ]),
    ));
    let answers = replace(
        answers,
        QueryKind::ServiceLatency("0.99".to_owned()),
        Ok(vec![series(
            &[("namespace", "invoicing"), ("service", "billing")],
            f64::NAN,
        )]),
    );
    let answers = replace(
        answers,
        QueryKind::DbPool,
        Ok(vec![
            pool("billing", "billing-a", promql::POOL_ACTIVE, f64::NAN),
            pool("billing", "billing-a", promql::POOL_MAX, 10.0),
            pool("billing", "billing-b", promql::POOL_ACTIVE, 1.0),
            pool("billing", "billing-b", promql::POOL_MAX, 0.0),
        ]),
    );
    let answers = replace(
        answers,
        QueryKind::Certificates,
        Ok(vec![series(
            &[("namespace", "invoicing"), ("name", "billing-tls")],
            f64::INFINITY,
        )]),
    );
    let metrics = split(answers).service(&selector("invoicing", "billing"));
    assert_eq!(
        metrics.pods["billing-a"].rates,
        Err(UnknownReason::NotANumber)
    );
    assert_eq!(
        metrics.pods["billing-a"].db_pool_utilization,
        Err(UnknownReason::NotANumber)
    );
    assert_eq!(
        metrics.pods["billing-b"].db_pool_utilization,
        Err(UnknownReason::NotANumber)
    );
    assert_eq!(metrics.latency_seconds, Err(UnknownReason::NotANumber));
    assert_eq!(
        metrics.certificate_expires_at,
        Err(UnknownReason::NotANumber)
    );
    // Pod a is unknown, so the service's detection rates are pod b's alone.
    assert_eq!(metrics.rates(DETECTION).map(|rates| rates.total), Ok(8.0));
    // 1 / 0 over the pods that report numbers is no utilisation either.
    assert_eq!(metrics.db_pool_utilization, Err(UnknownReason::NotANumber));
}

#[test]
fn a_service_without_series_has_no_data() {
    let metrics = split(billing_answers()).service(&selector("invoicing", "ghost"));
    assert_eq!(metrics.rates(DETECTION), Err(UnknownReason::NoData));
    assert_eq!(metrics.rates(minutes(5)), Err(UnknownReason::NoData));
    assert_eq!(metrics.windows.len(), 2, "every window is reported");
    assert_eq!(metrics.latency_seconds, Err(UnknownReason::NoData));
    assert_eq!(metrics.db_pool_utilization, Err(UnknownReason::NoData));
    assert_eq!(metrics.certificate_expires_at, Err(UnknownReason::NoData));
    assert!(metrics.pods.is_empty());
}

#[test]
fn zero_traffic_is_a_measurement_and_low_traffic_is_left_to_the_engine() {
    let answers = replace(
        billing_answers(),
        QueryKind::ServiceRates(minutes(5)),
        Ok(vec![service_rate("billing", "2xx", 0.0)]),
    );
    let metrics = split(answers).service(&selector("invoicing", "billing"));
    let rates = metrics.rates(minutes(5));
    assert_eq!(rates, Ok(RequestRates::default()));
    assert_eq!(
        rates.unwrap().error_ratio(0.5),
        Err(UnknownReason::LowTraffic)
    );
}

#[test]
fn stale_pods_are_unknown_and_left_out_of_service_sums() {
    let answers = replace(
        billing_answers(),
        QueryKind::Freshness,
        // Pod a's newest sample is 10 minutes old; pod b's series ended (no current sample).
        Ok(vec![fresh("billing", "billing-a", 600.0)]),
    );
    let metrics = split(answers).service(&selector("invoicing", "billing"));
    for pod in ["billing-a", "billing-b"] {
        let pod = &metrics.pods[pod];
        assert_eq!(pod.rates, Err(UnknownReason::Stale));
        assert_eq!(pod.db_pool_utilization, Err(UnknownReason::Stale));
    }
    assert_eq!(metrics.rates(DETECTION), Err(UnknownReason::Stale));
    assert_eq!(metrics.db_pool_utilization, Err(UnknownReason::Stale));
    // Service-level answers over their own windows are not per-pod samples.
    assert!(metrics.rates(minutes(5)).is_ok());
    assert_eq!(metrics.latency_seconds, Ok(0.18));

    let answers = replace(
        billing_answers(),
        QueryKind::Freshness,
        Ok(vec![
            fresh("billing", "billing-a", 600.0),
            fresh("billing", "billing-b", 1.0),
        ]),
    );
    let metrics = split(answers).service(&selector("invoicing", "billing"));
    assert_eq!(metrics.rates(DETECTION).map(|rates| rates.total), Ok(8.0));
    assert_eq!(metrics.db_pool_utilization, Ok(0.2));
}

#[test]
fn a_failed_query_marks_only_the_values_it_measures() {
    let answers = replace(
        billing_answers(),
        QueryKind::ServiceLatency("0.99".to_owned()),
        Err(UnknownReason::QueryFailed),
    );
    let metrics = split(answers).service(&selector("invoicing", "billing"));
    assert_eq!(metrics.latency_seconds, Err(UnknownReason::QueryFailed));
    assert!(metrics.rates(DETECTION).is_ok());
    assert!(metrics.rates(minutes(5)).is_ok());
    assert_eq!(metrics.pods["billing-a"].latency_seconds, Ok(0.25));

    // Without freshness no pod can be trusted.
    let answers = replace(
        billing_answers(),
        QueryKind::Freshness,
        Err(UnknownReason::QueryFailed),
    );
    let metrics = split(answers).service(&selector("invoicing", "billing"));
    assert_eq!(
        metrics.pods["billing-a"].rates,
        Err(UnknownReason::QueryFailed)
    );
    assert_eq!(metrics.rates(DETECTION), Err(UnknownReason::QueryFailed));
    assert!(metrics.rates(minutes(5)).is_ok());

    // A planned query nobody answered counts as failed, not as "no data".
    let mut answers = billing_answers();
    answers.retain(|(kind, _)| *kind != QueryKind::Certificates);
    let metrics = split(answers).service(&selector("invoicing", "billing"));
    assert_eq!(
        metrics.certificate_expires_at,
        Err(UnknownReason::QueryFailed)
    );
}

#[test]
fn an_unreachable_prometheus_leaves_every_value_unreachable() {
    let unreachable = UnknownReason::PrometheusUnreachable;
    let fleet = FleetMetrics::unknown(&small_query(), &MetricProfile::default(), unreachable);
    let metrics = fleet.service(&selector("invoicing", "billing"));
    assert_eq!(metrics.rates(DETECTION), Err(unreachable));
    assert_eq!(metrics.rates(minutes(5)), Err(unreachable));
    assert_eq!(metrics.latency_seconds, Err(unreachable));
    assert_eq!(metrics.db_pool_utilization, Err(unreachable));
    assert_eq!(metrics.certificate_expires_at, Err(unreachable));
    assert!(fleet.services().is_empty());
}

#[test]
fn series_without_a_pod_label_count_for_the_service_but_are_no_pod() {
    let answers = replace(
        billing_answers(),
        QueryKind::PodRates,
        Ok(vec![
            series(
                &[
                    ("namespace", "invoicing"),
                    ("service", "billing"),
                    (promql::CLASS_LABEL, "5xx"),
                ],
                2.0,
            ),
            pod_rate("billing", "billing-a", "az1", "2xx", 8.0),
        ]),
    );
    let answers = replace(
        answers,
        QueryKind::Freshness,
        Ok(vec![
            series(&[("namespace", "invoicing"), ("service", "billing")], NOW),
            fresh("billing", "billing-a", 1.0),
        ]),
    );
    let metrics = split(answers).service(&selector("invoicing", "billing"));
    assert_eq!(
        metrics.rates(DETECTION),
        Ok(RequestRates {
            total: 10.0,
            server_errors: 2.0,
            client_errors: 0.0
        })
    );
    assert!(!metrics.pods.contains_key(""));
}

#[test]
fn certificate_expiry_is_matched_by_namespace_and_certificate_name() {
    let answers = replace(
        billing_answers(),
        QueryKind::Certificates,
        Ok(vec![
            series(&[("namespace", "other"), ("name", "billing-tls")], 1.0),
            series(&[("namespace", "invoicing"), ("name", "custom-cert")], 2.0),
        ]),
    );
    let fleet = split(answers);
    let mut custom = selector("invoicing", "billing");
    custom.certificate = Some("custom-cert".to_owned());
    assert_eq!(fleet.service(&custom).certificate_expires_at, Ok(2.0));
    assert_eq!(
        fleet
            .service(&selector("invoicing", "billing"))
            .certificate_expires_at,
        Err(UnknownReason::NoData)
    );
    custom.certificate = None;
    assert_eq!(
        fleet.service(&custom).certificate_expires_at,
        Err(UnknownReason::NoData)
    );
}

#[test]
fn the_service_selector_follows_the_spec() {
    let plain = ServiceSelector::for_service("invoicing", "billing-api", &spec(json!({})));
    assert_eq!(plain.key, key("invoicing", "billing-api"));
    assert_eq!(plain.quantile.as_deref(), Some("0.99"));
    assert_eq!(plain.certificate, None);

    let labelled = spec(json!({
        "signals": {"serviceLabel": "billing", "certificateExpiry": {"warnBefore": "14d"}},
        "slos": {"latency": {"percentile": "99.9"}}
    }));
    let selector = ServiceSelector::for_service("invoicing", "billing-api", &labelled);
    assert_eq!(selector.key, key("invoicing", "billing"));
    assert_eq!(selector.quantile.as_deref(), Some("0.999"));
    assert_eq!(selector.certificate.as_deref(), Some("billing"));
}

#[test]
fn recorded_answers_parse_and_bad_bodies_fail() {
    let scalar =
        r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"0.25"]}}"#;
    assert_eq!(
        parse_query_response(scalar).map(|series| series[0].value),
        Ok(0.25)
    );
    let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"NaN"]}]}}"#;
    assert!(parse_query_response(nan).unwrap()[0].value.is_nan());
    let infinity = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"+Inf"]}]}}"#;
    assert_eq!(
        parse_query_response(infinity).unwrap()[0].value,
        f64::INFINITY
    );
    for body in [
        r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,2]}]}}"#,
        "<html>502 Bad Gateway</html>",
        "",
    ] {
        assert_eq!(
            parse_query_response(body),
            Err(UnknownReason::QueryFailed),
            "{body}"
        );
    }
}

fn custom_spec(queries: Value) -> InvoiceServiceSpec {
    spec(json!({
        "signals": {"queries": queries, "minRequestRate": "2"},
        "slos": {"availability": {"burnRateWindows": [
            {"long": "1h", "short": "5m", "factor": "14.4", "severity": "Page"}
        ]}}
    }))
}

#[test]
fn custom_queries_get_their_placeholders_filled_per_window() {
    let query = ServiceQuery::for_service(
        "invoicing",
        "billing",
        &custom_spec(json!({
            "errorRatio": "my_errors[$window] / my_requests[$window]",
            "requestRate": "my_requests[$window]",
            "latency": "my_latency{quantile=\"$quantile\"}"
        })),
        DETECTION,
        STALE_AFTER,
    );
    let plan: Vec<(CustomKind, String)> = query
        .plan_custom()
        .into_iter()
        .map(|planned| (planned.kind, planned.promql))
        .collect();
    assert!(plan.contains(&(
        CustomKind::ErrorRatio(minutes(5)),
        "my_errors[5m] / my_requests[5m]".to_owned()
    )));
    assert!(plan.contains(&(
        CustomKind::RequestRate(days(30)),
        "my_requests[30d]".to_owned()
    )));
    assert!(plan.contains(&(
        CustomKind::Latency,
        "my_latency{quantile=\"0.99\"}".to_owned()
    )));
    // Windows 1m (detection), 5m, 1h, 30d: ratio and rate each; plus latency.
    assert_eq!(plan.len(), 4 * 2 + 1);
    // The profile still runs for what custom queries leave out, restricted to the service.
    assert_eq!(query.profile.only, Some(key("invoicing", "billing")));
    assert!(query.profile.windows.is_empty());
    assert!(query.profile.quantiles.is_empty());
    assert_eq!(query.url, None);
}

#[test]
fn a_custom_error_ratio_is_synthesised_into_request_rates() {
    let with_rate = ServiceQuery::for_service(
        "invoicing",
        "billing",
        &custom_spec(json!({"errorRatio": "ratio[$window]", "requestRate": "rate[$window]"})),
        DETECTION,
        STALE_AFTER,
    );
    let one = |value: f64| Ok(vec![series(&[], value)]);
    let base = ServiceMetrics::unknown(UnknownReason::NoData);
    let outcomes = vec![
        (CustomKind::ErrorRatio(minutes(5)), one(0.1)),
        (CustomKind::RequestRate(minutes(5)), one(40.0)),
        // No traffic: 0/0 is NaN, and below minRequestRate that is low traffic, not NaN.
        (CustomKind::ErrorRatio(DETECTION), one(f64::NAN)),
        (CustomKind::RequestRate(DETECTION), one(0.0)),
        (CustomKind::ErrorRatio(hours(1)), one(0.2)),
        (
            CustomKind::RequestRate(hours(1)),
            Err(UnknownReason::QueryFailed),
        ),
        (
            CustomKind::ErrorRatio(days(30)),
            Ok(vec![series(&[("a", "1")], 0.1), series(&[("a", "2")], 0.2)]),
        ),
        (CustomKind::RequestRate(days(30)), one(40.0)),
    ];
    let metrics = merge_custom(base.clone(), &with_rate, outcomes);
    let five_minutes = metrics.rates(minutes(5)).unwrap();
    assert_close(five_minutes.total, 40.0);
    assert_close(five_minutes.error_ratio(2.0).unwrap(), 0.1);
    assert_eq!(
        metrics.rates(DETECTION).unwrap().error_ratio(2.0),
        Err(UnknownReason::LowTraffic)
    );
    assert_eq!(metrics.rates(hours(1)), Err(UnknownReason::QueryFailed));
    assert_eq!(
        metrics.rates(days(30)),
        Err(UnknownReason::QueryFailed),
        "two series are not one service"
    );

    let ratio_only = ServiceQuery::for_service(
        "invoicing",
        "billing",
        &custom_spec(json!({"errorRatio": "ratio[$window]"})),
        DETECTION,
        STALE_AFTER,
    );
    let outcomes = vec![(CustomKind::ErrorRatio(minutes(5)), one(0.3))];
    let metrics = merge_custom(base, &ratio_only, outcomes);
    let rates = metrics.rates(minutes(5)).unwrap();
    assert_close(rates.total, 2.0);
    assert_close(rates.error_ratio(2.0).unwrap(), 0.3);
    assert_eq!(
        metrics.rates(hours(1)),
        Err(UnknownReason::QueryFailed),
        "a planned custom query without an answer failed"
    );
}

#[test]
fn a_service_with_its_own_prometheus_runs_the_restricted_profile() {
    let query = ServiceQuery::for_service(
        "invoicing",
        "billing",
        &spec(json!({"signals": {"prometheus": {"url": "http://prometheus.billing:9090"}}})),
        DETECTION,
        STALE_AFTER,
    );
    assert_eq!(query.url.as_deref(), Some("http://prometheus.billing:9090"));
    assert!(query.plan_custom().is_empty());
    assert_eq!(
        query.profile.windows.len(),
        9,
        "8 SLO windows and detection"
    );
    let plan = query.profile.plan(&MetricProfile::default());
    assert_eq!(plan.len(), 14);
    for planned in plan {
        assert!(
            planned
                .promql
                .contains(r#"{namespace="invoicing",service="billing"}"#)
                || planned.promql.contains(r#"{namespace="invoicing"}"#),
            "{}",
            planned.promql
        );
    }
}

#[tokio::test]
async fn the_recorded_source_feeds_the_engine_through_the_trait() {
    let profile = MetricProfile::default();
    let query = small_query();
    let mut recorded = Recorded::new(profile.clone());
    let answers = billing_answers();
    for planned in query.plan(&profile) {
        let outcome = answers
            .iter()
            .find(|(kind, _)| *kind == planned.kind)
            .map(|(_, outcome)| outcome.clone())
            .unwrap();
        recorded.answer(planned.promql, outcome);
    }
    let metrics = recorded
        .fleet(&query)
        .await
        .service(&selector("invoicing", "billing"));
    assert_eq!(metrics.latency_seconds, Ok(0.18));
    assert_eq!(metrics.db_pool_utilization, Ok(0.5));
    assert_eq!(recorded.queries_issued(), 7);

    let custom = ServiceQuery::for_service(
        "invoicing",
        "billing",
        &custom_spec(json!({"dbPoolUtilization": "pool_usage"})),
        DETECTION,
        STALE_AFTER,
    );
    recorded.answer("pool_usage", Ok(vec![series(&[], 0.97)]));
    let metrics = recorded.service(&custom).await;
    assert_eq!(metrics.db_pool_utilization, Ok(0.97));
    // Unanswered profile queries are empty answers: no data.
    assert_eq!(metrics.latency_seconds, Err(UnknownReason::NoData));
}

#[tokio::test]
async fn the_bearer_token_goes_only_to_the_operator_wide_prometheus() {
    let operator_prometheus = PrometheusStub::empty();
    let service_prometheus = PrometheusStub::empty();
    let service_url = service_prometheus.url();
    let source = Prometheus::new(
        operator_prometheus.url(),
        MetricProfile::default(),
        Limits::default(),
    )
    .unwrap()
    .with_bearer_token("s3cret")
    .unwrap();
    source.fleet(&small_query()).await;
    let own = spec(json!({"signals": {"prometheus": {"url": service_url}}}));
    let query = ServiceQuery::for_service("shop", "own", &own, minutes(1), minutes(2));
    source.service(&query).await;
    let operator_seen = operator_prometheus.authorizations();
    let service_seen = service_prometheus.authorizations();
    assert!(!operator_seen.is_empty() && !service_seen.is_empty());
    assert!(
        operator_seen
            .iter()
            .all(|header| header.as_deref() == Some("bearer s3cret")),
        "{operator_seen:?}"
    );
    assert!(service_seen.iter().all(Option::is_none), "{service_seen:?}");
}

#[tokio::test]
async fn headers_and_a_rotating_token_file_go_only_to_the_operator_wide_prometheus() {
    let operator_prometheus = PrometheusStub::empty();
    let service_prometheus = PrometheusStub::empty();
    let directory = std::env::temp_dir().join(format!("invoiceops-token-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let token_file = directory.join("token");
    std::fs::write(&token_file, "first\n").unwrap();
    let connection = Connection {
        headers: vec![("X-Scope-OrgID".to_owned(), "billing".to_owned())],
        token_file: Some(token_file.clone()),
        ..Connection::default()
    };
    let source = Prometheus::connect(
        operator_prometheus.url(),
        &connection,
        MetricProfile::default(),
        Limits::default(),
    )
    .unwrap();
    source.fleet(&small_query()).await;
    // The token rotates between two evaluations.
    std::fs::write(directory.join("next"), "second-token\n").unwrap();
    std::fs::rename(directory.join("next"), &token_file).unwrap();
    source.fleet(&small_query()).await;
    let own = spec(json!({"signals": {"prometheus": {"url": service_prometheus.url()}}}));
    let query = ServiceQuery::for_service("shop", "own", &own, minutes(1), minutes(2));
    source.service(&query).await;
    std::fs::remove_dir_all(&directory).unwrap();

    let header = |request: &crate::fixtures::PromRequest, name: &str| {
        request
            .headers
            .iter()
            .find(|(seen, _)| seen == name)
            .map(|(_, value)| value.clone())
    };
    let requests = operator_prometheus.requests();
    let per_fleet = small_query().plan(&MetricProfile::default()).len();
    assert!(requests.len() >= 2 * per_fleet, "{}", requests.len());
    let tokens: Vec<Option<String>> = requests
        .iter()
        .map(|request| header(request, "authorization"))
        .collect();
    let first = Some("Bearer first".to_owned());
    let second = Some("Bearer second-token".to_owned());
    assert!(
        tokens[..per_fleet].iter().all(|token| *token == first),
        "{tokens:?}"
    );
    assert!(
        tokens[per_fleet..].iter().all(|token| *token == second),
        "{tokens:?}"
    );
    assert!(
        requests
            .iter()
            .all(|request| header(request, "x-scope-orgid").as_deref() == Some("billing"))
    );
    let service_requests = service_prometheus.requests();
    assert!(!service_requests.is_empty());
    for request in service_requests {
        assert_eq!(header(&request, "authorization"), None);
        assert_eq!(header(&request, "x-scope-orgid"), None);
    }
}

#[test]
fn a_token_that_is_not_a_header_value_is_refused() {
    let source = Prometheus::new(
        "http://127.0.0.1:1",
        MetricProfile::default(),
        Limits::default(),
    )
    .unwrap();
    assert!(matches!(
        source.with_bearer_token("a\nb"),
        Err(Error::InvalidToken)
    ));
}

#[test]
fn a_fleet_service_queried_on_its_own_gets_the_profile_restricted_to_it() {
    // The per-service query mode: a service that the fleet batch would measure.
    let fleet_service = spec(json!({}));
    assert!(uses_fleet_queries(&fleet_service));
    let query = ServiceQuery::for_service(
        "invoicing",
        "billing",
        &fleet_service,
        DETECTION,
        STALE_AFTER,
    );
    assert_eq!(query.url, None, "the operator-wide Prometheus");
    assert!(query.plan_custom().is_empty());
    assert_eq!(query.profile.only, Some(key("invoicing", "billing")));
    let plan = query.profile.plan(&MetricProfile::default());
    let fleet = FleetQuery::for_services([&fleet_service], DETECTION, STALE_AFTER);
    assert_eq!(
        plan.len(),
        fleet.planned_queries(),
        "one query per SLI and window, like the fleet's"
    );
    for planned in &plan {
        assert!(
            planned
                .promql
                .contains(r#"{namespace="invoicing",service="billing"}"#)
                || planned.promql.contains(r#"{namespace="invoicing"}"#),
            "{}",
            planned.promql
        );
    }
    let service_rates = plan
        .iter()
        .filter(|planned| matches!(planned.kind, QueryKind::ServiceRates(_)))
        .count();
    assert_eq!(
        service_rates, 8,
        "every SLO window but the detection window"
    );
}

/// A fleet query over 5m, 1h, 6h and 30d, answered with `total` requests per second (all 2xx)
/// for `billing` in every asked window, and `failing` windows failed.
fn evaluate_windows(
    earlier: Option<&FleetMetrics>,
    now: std::time::Instant,
    total: f64,
    failing: &[Duration],
) -> (FleetQuery, FleetMetrics) {
    let mut query = FleetQuery::new(DETECTION, STALE_AFTER);
    query.windows = [minutes(5), hours(1), hours(6), days(30)].into();
    let query = query.reusing(earlier, now);
    let profile = MetricProfile::default();
    let outcomes: Vec<(QueryKind, QueryOutcome)> = query
        .plan(&profile)
        .into_iter()
        .map(|planned| {
            let outcome = match planned.kind {
                QueryKind::ServiceRates(window) if failing.contains(&window) => {
                    Err(UnknownReason::PrometheusUnreachable)
                }
                QueryKind::ServiceRates(_) => Ok(vec![service_rate("billing", "2xx", total)]),
                _ => Ok(Vec::new()),
            };
            (planned.kind, outcome)
        })
        .collect();
    let mut metrics = FleetMetrics::from_outcomes(&query, &profile, outcomes);
    metrics.carry_over(earlier, &query, now);
    (query, metrics)
}

/// `billing`'s total request rate over `window`, or why it is unknown.
fn total_over(metrics: &FleetMetrics, window: Duration) -> Result<f64, UnknownReason> {
    metrics.service(&selector("invoicing", "billing")).windows[&window].map(|rates| rates.total)
}

#[test]
fn reuse_periods_spare_only_the_windows_longer_than_an_hour() {
    assert_eq!(reuse_period(minutes(5)), Duration::ZERO);
    assert_eq!(reuse_period(hours(1)), Duration::ZERO);
    assert_eq!(reuse_period(hours(2)), minutes(2));
    assert_eq!(reuse_period(hours(6)), minutes(6));
    assert_eq!(reuse_period(days(30)), hours(12));
}

#[test]
fn long_windows_are_answered_from_the_earlier_evaluation_until_their_reuse_period_passes() {
    let start = std::time::Instant::now();
    let (first, earlier) = evaluate_windows(None, start, 10.0, &[]);
    assert!(first.reused.is_empty(), "nothing to reuse at the start");
    assert_eq!(first.planned_queries(), 8);

    // One interval later only the short windows are asked; the long ones keep the first answer.
    let later = start + Duration::from_secs(15);
    let (second, metrics) = evaluate_windows(Some(&earlier), later, 20.0, &[]);
    assert_eq!(second.reused, [hours(6), days(30)].into());
    assert_eq!(second.planned_queries(), 6);
    let asked: Vec<_> = second
        .plan(&MetricProfile::default())
        .into_iter()
        .filter_map(|planned| match planned.kind {
            QueryKind::ServiceRates(window) => Some(window),
            _ => None,
        })
        .collect();
    assert_eq!(asked, [minutes(5), hours(1)]);
    assert_close(total_over(&metrics, minutes(5)).unwrap(), 20.0);
    assert_close(total_over(&metrics, hours(1)).unwrap(), 20.0);
    assert_close(total_over(&metrics, hours(6)).unwrap(), 10.0);
    assert_close(total_over(&metrics, days(30)).unwrap(), 10.0);
    assert_eq!(
        metrics.answer_age(hours(6), later),
        Some(Duration::from_secs(15)),
        "a reused answer keeps the time it was asked"
    );

    // Past six minutes the 6h window is asked again; the 30d one waits for twelve hours.
    let past = start + minutes(6) + Duration::from_secs(1);
    let (third, metrics) = evaluate_windows(Some(&metrics), past, 30.0, &[]);
    assert_eq!(third.reused, [days(30)].into());
    assert_close(total_over(&metrics, hours(6)).unwrap(), 30.0);
    assert_close(total_over(&metrics, days(30)).unwrap(), 10.0);
    assert_eq!(metrics.answer_age(hours(6), past), Some(Duration::ZERO));
}

#[test]
fn a_failed_long_window_keeps_its_answer_for_twice_its_period_and_a_short_one_never() {
    let start = std::time::Instant::now();
    let (_, earlier) = evaluate_windows(None, start, 10.0, &[]);

    // Seven minutes on, the 6h window is due and fails: its 7-minute-old answer still serves
    // (under twice its 6-minute period); the failed 1h window is unknown at once.
    let later = start + minutes(7);
    let (query, metrics) = evaluate_windows(Some(&earlier), later, 20.0, &[hours(1), hours(6)]);
    assert!(!query.reused.contains(&hours(6)));
    assert_close(total_over(&metrics, hours(6)).unwrap(), 10.0);
    assert_eq!(
        total_over(&metrics, hours(1)),
        Err(UnknownReason::PrometheusUnreachable)
    );
    assert_close(total_over(&metrics, minutes(5)).unwrap(), 20.0);

    // At thirteen minutes the answer is too old to stand in for a failed query.
    let (_, metrics) = evaluate_windows(Some(&metrics), start + minutes(13), 30.0, &[hours(6)]);
    assert_eq!(
        total_over(&metrics, hours(6)),
        Err(UnknownReason::PrometheusUnreachable)
    );
}

#[test]
fn answers_are_never_reused_without_being_stamped_by_carry_over() {
    let metrics = split(billing_answers());
    assert_eq!(
        metrics.answer_age(minutes(5), std::time::Instant::now()),
        None
    );
    let mut query = small_query();
    query.windows.insert(hours(6));
    assert!(
        query
            .reusing(Some(&metrics), std::time::Instant::now())
            .reused
            .is_empty()
    );
}

#[test]
fn failed_queries_count_failures_but_not_missing_series_or_reused_windows() {
    let start = std::time::Instant::now();
    let (_, earlier) = evaluate_windows(None, start, 10.0, &[]);
    assert_eq!(earlier.failed_queries(), 0);
    let (_, reusing) = evaluate_windows(Some(&earlier), start + minutes(1), 10.0, &[]);
    assert_eq!(reusing.failed_queries(), 0, "reused windows were answered");
    let (_, failing) = evaluate_windows(
        Some(&earlier),
        start + minutes(7),
        10.0,
        &[hours(1), hours(6)],
    );
    assert_eq!(
        failing.failed_queries(),
        1,
        "the 6h window falls back on its earlier answer, the 1h window is missing"
    );
    let no_data = split(replace(
        billing_answers(),
        QueryKind::Certificates,
        Err(UnknownReason::NoData),
    ));
    assert_eq!(no_data.failed_queries(), 0);
    let refused = split(replace(
        billing_answers(),
        QueryKind::PodRates,
        Err(UnknownReason::QueryFailed),
    ));
    assert_eq!(refused.failed_queries(), 1);
}

/// What the live source makes of one kind of answer: `billing`'s 5-minute rates.
async fn five_minute_rates_from(url: &str) -> Result<RequestRates, UnknownReason> {
    let source = Prometheus::new(url, MetricProfile::default(), Limits::default()).unwrap();
    let fleet = source.fleet(&small_query()).await;
    fleet.service(&selector("invoicing", "billing")).windows[&minutes(5)]
}

#[tokio::test]
async fn live_answers_are_read_into_series_and_bad_ones_are_told_apart() {
    let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"namespace":"invoicing","service":"billing","invoiceops_class":"2xx"},"value":[1700000000.5,"7"]},
        {"metric":{"namespace":"invoicing","service":"billing","invoiceops_class":"5xx"},"value":[1700000000.5,"1"]}]}}"#;
    let stub = PrometheusStub::always(PromAnswer::new("200 OK", "application/json", vector));
    let rates = five_minute_rates_from(stub.url()).await.unwrap();
    assert_close(rates.total, 8.0);
    assert_close(rates.server_errors, 1.0);

    for (status, content_type, body, expected) in [
        (
            "502 Bad Gateway",
            "text/html",
            "<html>502 Bad Gateway</html>",
            UnknownReason::PrometheusUnreachable,
        ),
        (
            "503 Service Unavailable",
            "text/plain",
            "no healthy upstream",
            UnknownReason::PrometheusUnreachable,
        ),
        ("200 OK", "text/plain", "hello", UnknownReason::QueryFailed),
        (
            "400 Bad Request",
            "application/json",
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
            UnknownReason::QueryFailed,
        ),
        (
            "200 OK",
            "application/json",
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,2]}]}}"#,
            UnknownReason::QueryFailed,
        ),
        (
            "200 OK",
            "application/json",
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            UnknownReason::QueryFailed,
        ),
        (
            "200 OK",
            "application/json",
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"valu"#,
            UnknownReason::QueryFailed,
        ),
    ] {
        let stub = PrometheusStub::always(PromAnswer::new(status, content_type, body));
        assert_eq!(
            five_minute_rates_from(stub.url()).await,
            Err(expected),
            "{status} {content_type} {body}"
        );
    }
}

#[test]
fn the_query_statistics_give_the_samples_prometheus_loaded() {
    let with = read_answer_with_stats(
        br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2"]}],"stats":{"timings":{"evalTotalTime":0.1},"samples":{"totalQueryableSamples":172800,"peakSamples":6}}}}"#,
    )
    .unwrap();
    assert_eq!((with.series.len(), with.samples), (1, Some(172_800)));
    // A Prometheus older than 2.35 (or a proxy in front of it) answers without statistics.
    let without = read_answer_with_stats(
        br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#,
    )
    .unwrap();
    assert_eq!((without.series.len(), without.samples), (1, None));
}

#[test]
fn read_answer_says_why_an_answer_is_unusable() {
    let refused =
        read_answer(br#"{"status":"error","errorType":"timeout","error":"query timed out"}"#);
    assert!(
        matches!(&refused, Err(AnswerError::Refused { error_type, .. }) if error_type == "timeout"),
        "{refused:?}"
    );
    let matrix = read_answer(br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#);
    assert!(matches!(matrix, Err(AnswerError::ResultType(kind)) if kind == "matrix"));
    assert!(matches!(
        read_answer(b"<html>"),
        Err(AnswerError::Malformed(_))
    ));
    let escaped = read_answer(
        br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a\"b"},"value":[1,"NaN"]}]}}"#,
    )
    .unwrap();
    assert_eq!(escaped[0].labels["pod"], "a\"b");
    assert!(escaped[0].value.is_nan());
}
