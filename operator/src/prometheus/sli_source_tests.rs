//! Long windows from the recorded series (`--sli-source`): what is asked, and how a service the
//! recorded series do not cover yet is told apart from one with no traffic.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::*;
use crate::signals::{ServiceKey, UnknownReason};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn query(source: SliSource) -> FleetQuery {
    let mut query =
        FleetQuery::new(Duration::from_secs(60), Duration::from_secs(120)).reading(source);
    query
        .windows
        .extend([Duration::from_secs(300), HOUR, 6 * HOUR, 30 * DAY]);
    query
}

fn series(service: &str, class: &str, value: f64) -> Series {
    Series {
        labels: HashMap::from([
            ("namespace".to_owned(), "invoicing".to_owned()),
            ("service".to_owned(), service.to_owned()),
            (promql::CLASS_LABEL.to_owned(), class.to_owned()),
        ]),
        timestamp: 1.0e9,
        value,
    }
}

fn selector(service: &str) -> ServiceSelector {
    ServiceSelector {
        key: ServiceKey {
            namespace: "invoicing".to_owned(),
            service: service.to_owned(),
        },
        quantile: None,
        certificate: None,
    }
}

fn fleet_now(source: &Recorded, query: &FleetQuery) -> FleetMetrics {
    futures::executor::block_on(source.fleet(query))
}

fn kinds(plan: &[PlannedQuery<QueryKind>]) -> Vec<QueryKind> {
    plan.iter().map(|planned| planned.kind.clone()).collect()
}

#[test]
fn recorded_mode_reads_every_service_window_from_the_recorded_series() {
    let profile = MetricProfile::default();
    let plan = query(SliSource::Recorded).plan(&profile);
    let promql = |window: Duration| {
        plan.iter()
            .find(|planned| planned.kind == QueryKind::ServiceRates(window))
            .map(|planned| planned.promql.clone())
            .unwrap()
    };
    // Five minutes is the recorded rate itself, longer windows average the 5-minute rates
    // that tile them, a day or more averages the hourly one.
    let five = promql(Duration::from_secs(300));
    assert!(five.contains("(invoiceops:requests:rate5m)"), "{five}");
    assert!(
        !five.contains("avg_over_time(invoiceops:requests:rate5m"),
        "{five}"
    );
    assert!(promql(HOUR).contains("sum_over_time(invoiceops:requests:rate5m[55m:5m])"));
    assert!(promql(6 * HOUR).contains("sum_over_time(invoiceops:requests:rate5m[355m:5m])"));
    assert!(promql(30 * DAY).contains("avg_over_time(invoiceops:requests:rate1h[30d])"));
    for window in [Duration::from_secs(300), HOUR, 6 * HOUR, 30 * DAY] {
        assert!(
            !promql(window).contains("invoice_http_requests_total"),
            "{window:?}"
        );
    }
    // The per-pod detection window stays raw: it is a minute, shorter than any recorded rate.
    let pods = plan
        .iter()
        .find(|planned| planned.kind == QueryKind::PodRates)
        .unwrap();
    assert!(
        pods.promql
            .contains("rate(invoice_http_requests_total[1m])"),
        "{}",
        pods.promql
    );
    assert_eq!(plan.len(), query(SliSource::Raw).plan(&profile).len());
}

#[test]
fn the_recorded_query_for_thirty_days_marks_services_not_yet_covered() {
    // Coverage of an hourly window is a count of its hours (718 of 720: the first and the
    // current one may be missing), never a 30-day subquery.
    let profile = MetricProfile::default();
    let writer = promql::QueryWriter::new(&profile, None);
    assert_eq!(
        writer.recorded_service_rates(30 * DAY),
        "(sum by (namespace, service, invoiceops_class) \
         (avg_over_time(invoiceops:requests:rate1h[30d])) and on (namespace, service) \
         (max by (namespace, service) (count_over_time(invoiceops:requests:rate1h[30d])) >= 718)) \
         or label_replace(max by (namespace, service) \
         (count_over_time(invoiceops:requests:rate1h[30d])) < 718, \
         \"invoiceops_class\", \"uncovered\", \"\", \"\")"
    );
}

#[test]
fn the_recorded_query_for_an_hour_reads_twelve_tiles_and_marks_the_uncovered() {
    // The hour is tiled by twelve 5-minute rates, the newest included (so it is as fresh as
    // the recorded rate); coverage is the 5-minute rate present 50 minutes ago (one more
    // sample per series), never a subquery over the whole window.
    let profile = MetricProfile::default();
    let writer = promql::QueryWriter::new(&profile, None);
    let tiles = "invoiceops:requests:rate5m[55m:5m]";
    assert_eq!(
        writer.recorded_service_rates(HOUR),
        format!(
            "(sum by (namespace, service, invoiceops_class) \
             ((sum_over_time({tiles}) + invoiceops:requests:rate5m) \
             / (count_over_time({tiles}) + 1)) \
             and on (namespace, service) \
             (count by (namespace, service) (invoiceops:requests:rate5m offset 50m))) \
             or label_replace(count by (namespace, service) (invoiceops:requests:rate5m) \
             unless on (namespace, service) \
             count by (namespace, service) (invoiceops:requests:rate5m offset 50m), \
             \"invoiceops_class\", \"uncovered\", \"\", \"\")"
        )
    );
    // A window that 5-minute tiles do not fit: every 5-minute rate in it averaged.
    let own = writer.recorded_service_rates(Duration::from_secs(47 * 60));
    assert!(
        own.starts_with(
            "(sum by (namespace, service, invoiceops_class) \
             (avg_over_time(invoiceops:requests:rate5m[47m])) and on (namespace, service) \
             (count by (namespace, service) (invoiceops:requests:rate5m offset 37m)))"
        ),
        "{own}"
    );
    // Five minutes: the recorded rate itself, covered as soon as it exists.
    assert_eq!(
        writer.recorded_service_rates(Duration::from_secs(300)),
        "sum by (namespace, service, invoiceops_class) (invoiceops:requests:rate5m)"
    );
}

#[test]
fn auto_mode_asks_raw_beside_recorded_until_every_service_is_covered() {
    let profile = MetricProfile::default();
    let now = Instant::now();
    let first = query(SliSource::Auto).reusing(None, now);
    let fallbacks = [
        QueryKind::RawFallbackRates(6 * HOUR),
        QueryKind::RawFallbackRates(30 * DAY),
    ];
    let plan = kinds(&first.plan(&profile));
    for fallback in &fallbacks {
        assert!(plan.contains(fallback), "{plan:?}");
    }
    assert_eq!(first.planned_queries(), plan.len());

    // 6 h covered for every service, 30 d not yet for one: raw is asked again for 30 d only.
    let mut answers = Recorded::new(profile.clone());
    let promql = |kind: &QueryKind| {
        first
            .plan(&profile)
            .into_iter()
            .find(|planned| &planned.kind == kind)
            .unwrap()
            .promql
    };
    answers.answer(
        promql(&QueryKind::ServiceRates(6 * HOUR)),
        Ok(vec![series("a", "2xx", 9.0), series("b", "2xx", 3.0)]),
    );
    answers.answer(
        promql(&QueryKind::ServiceRates(30 * DAY)),
        Ok(vec![
            series("a", "2xx", 9.0),
            series("b", promql::UNCOVERED_CLASS, 1.0e9),
        ]),
    );
    let earlier = fleet_now(&answers, &first);
    assert!(earlier.fully_recorded(6 * HOUR));
    assert!(!earlier.fully_recorded(30 * DAY));
    let mut second = query(SliSource::Auto);
    second.windows.clear();
    second.windows.extend([6 * HOUR, 30 * DAY]);
    let second = second.reusing(Some(&earlier), now);
    assert_eq!(second.raw_fallback, [30 * DAY].into());
}

#[test]
fn an_uncovered_service_takes_the_raw_rates_or_is_not_yet_recorded() {
    let profile = MetricProfile::default();
    let plan_of = |source| {
        let query = query(source).reusing(None, Instant::now());
        let plan = query.plan(&profile);
        (query, plan)
    };
    let (recorded_query, plan) = plan_of(SliSource::Auto);
    let text = |kind: QueryKind| {
        plan.iter()
            .find(|planned| planned.kind == kind)
            .unwrap()
            .promql
            .clone()
    };
    let recorded = Ok(vec![
        series("covered", "2xx", 95.0),
        series("covered", "5xx", 5.0),
        series("new", promql::UNCOVERED_CLASS, 1.0e9),
        series("late", promql::UNCOVERED_CLASS, 1.0e9),
    ]);
    let raw = Ok(vec![series("new", "2xx", 8.0), series("new", "5xx", 2.0)]);
    let mut answers = Recorded::new(profile.clone());
    answers
        .answer(text(QueryKind::ServiceRates(30 * DAY)), recorded.clone())
        .answer(text(QueryKind::RawFallbackRates(30 * DAY)), raw);
    let fleet = fleet_now(&answers, &recorded_query);
    let rates = |service: &str| fleet.service(&selector(service)).rates(30 * DAY);
    assert_eq!(rates("covered").unwrap().server_errors, 5.0);
    assert_eq!(rates("covered").unwrap().total, 100.0);
    assert_eq!(rates("new").unwrap().server_errors, 2.0, "raw stands in");
    assert_eq!(rates("late"), Err(UnknownReason::WindowNotYetRecorded));
    assert_eq!(rates("silent"), Err(UnknownReason::NoData));

    // The raw query refused (Prometheus' sample limit): not a failed round of queries.
    let mut refused = Recorded::new(profile.clone());
    refused
        .answer(text(QueryKind::ServiceRates(30 * DAY)), recorded)
        .answer(
            text(QueryKind::RawFallbackRates(30 * DAY)),
            Err(UnknownReason::QueryFailed),
        );
    let fleet = fleet_now(&refused, &recorded_query);
    assert_eq!(
        fleet.service(&selector("new")).rates(30 * DAY),
        Err(UnknownReason::WindowNotYetRecorded)
    );
    assert_eq!(fleet.failed_queries(), 0);

    // Recorded only: no raw query, the uncovered service is not yet recorded.
    let (query, plan) = plan_of(SliSource::Recorded);
    assert!(!kinds(&plan).contains(&QueryKind::RawFallbackRates(30 * DAY)));
    let mut only_recorded = Recorded::new(profile);
    only_recorded.answer(
        text(QueryKind::ServiceRates(30 * DAY)),
        Ok(vec![series("new", promql::UNCOVERED_CLASS, 1.0e9)]),
    );
    let fleet = fleet_now(&only_recorded, &query);
    assert_eq!(
        fleet.service(&selector("new")).rates(30 * DAY),
        Err(UnknownReason::WindowNotYetRecorded)
    );
}
