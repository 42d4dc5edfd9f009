//! The CPU cost of one evaluation interval for a whole fleet, without IO: splitting the batched
//! Prometheus answers (`FleetMetrics::from_outcomes`), then for every service reading its
//! measurements out and running evaluate, decide, record and report. Prints numbers; asserts
//! nothing. This is the in-process part of the fleet benchmark (docs/architecture.md,
//! "Performance targets": 2,000 services over 12,000 pods within one 15 s interval); the end-to-end run on the local cluster (API server,
//! Prometheus, RSS) is separate.
//!
//! `cargo bench -p invoice-operator --bench fleet_evaluation` (or `make bench-engine`).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use invoice_operator::{
    api::{InvoiceService, InvoiceServiceSpec, InvoiceServiceStatus},
    engine::{self, DecisionInput},
    evaluate::evaluate,
    prometheus::{
        FleetMetrics, FleetQuery, MetricProfile, QueryKind, QueryOutcome, Series, ServiceSelector,
        promql,
    },
    report::{self, ReportInput},
    signals::{DeploymentState, Observation, PodState},
};
use jiff::Timestamp;

const ZONES: [&str; 3] = ["az1", "az2", "az3"];
/// Pods per zone: 2,000 services × 3 zones × 2 pods = 12,000 pods at the top size.
const PODS_PER_ZONE: usize = 2;
const DETECTION: Duration = Duration::from_secs(60);

fn spec() -> InvoiceServiceSpec {
    let text = include_str!("../../examples/billing-api-three-zones.yaml");
    serde_yaml::from_str::<InvoiceService>(text)
        .expect("the example parses")
        .spec
}

fn series(labels: &[(&str, String)], value: f64, now: f64) -> Series {
    Series {
        labels: labels
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect::<HashMap<_, _>>(),
        timestamp: now,
        value,
    }
}

/// Plausible answers to every planned query for `services` healthy services.
fn answers(query: &FleetQuery, services: usize, now: f64) -> Vec<(QueryKind, QueryOutcome)> {
    let profile = MetricProfile::default();
    let mut outcomes = Vec::new();
    for planned in query.plan(&profile) {
        let mut result = Vec::new();
        for index in 0..services {
            let service = format!("service-{index}");
            let base = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
                let mut labels = vec![
                    ("namespace", "invoicing".to_owned()),
                    ("service", service.clone()),
                ];
                labels.extend_from_slice(extra);
                labels
            };
            let pods = ZONES.iter().flat_map(|zone| {
                (0..PODS_PER_ZONE).map(move |pod| (format!("{zone}-{pod}"), (*zone).to_owned()))
            });
            match &planned.kind {
                QueryKind::PodRates => {
                    for (pod, zone) in pods {
                        for (class, value) in [("2xx", 2.0), ("4xx", 0.05), ("5xx", 0.001)] {
                            result.push(series(
                                &base(&[
                                    ("pod", format!("{service}-{pod}")),
                                    ("zone", zone.clone()),
                                    (promql::CLASS_LABEL, class.to_owned()),
                                ]),
                                value,
                                now,
                            ));
                        }
                    }
                }
                QueryKind::Freshness => {
                    for (pod, _) in pods {
                        result.push(series(
                            &base(&[("pod", format!("{service}-{pod}"))]),
                            now - 5.0,
                            now,
                        ));
                    }
                }
                QueryKind::DbPool => {
                    for (pod, _) in pods {
                        for (gauge, value) in
                            [(promql::POOL_ACTIVE, 40.0), (promql::POOL_MAX, 200.0)]
                        {
                            result.push(series(
                                &base(&[
                                    ("pod", format!("{service}-{pod}")),
                                    (promql::POOL_GAUGE_LABEL, gauge.to_owned()),
                                ]),
                                value,
                                now,
                            ));
                        }
                    }
                }
                QueryKind::ServiceRates(_) | QueryKind::RawFallbackRates(_) => {
                    for (class, value) in [("2xx", 12.0), ("4xx", 0.3), ("5xx", 0.006)] {
                        result.push(series(
                            &base(&[(promql::CLASS_LABEL, class.to_owned())]),
                            value,
                            now,
                        ));
                    }
                }
                QueryKind::ServiceLatency(_) => result.push(series(&base(&[]), 0.12, now)),
                QueryKind::PodLatency(_) => {
                    for (pod, zone) in pods {
                        result.push(series(
                            &base(&[("pod", format!("{service}-{pod}")), ("zone", zone)]),
                            0.12,
                            now,
                        ));
                    }
                }
                QueryKind::Certificates => {}
            }
        }
        outcomes.push((planned.kind, Ok(result)));
    }
    outcomes
}

fn observation(
    index: usize,
    metrics: invoice_operator::signals::ServiceMetrics,
    now: Timestamp,
) -> Observation {
    let service = format!("service-{index}");
    let mut pods = Vec::new();
    let mut deployments = Vec::new();
    for zone in ZONES {
        let deployment = format!("billing-api-{zone}");
        deployments.push(DeploymentState {
            name: deployment.clone(),
            zone: Some(zone.to_owned()),
            replicas: PODS_PER_ZONE as i32,
            ready_replicas: PODS_PER_ZONE as i32,
            exists: true,
            replicas_manager: None,
            replicas_set_at: None,
            update: None,
            excluded_zones: Default::default(),
            affinity_set_by: None,
            autoscaler: None,
        });
        for pod in 0..PODS_PER_ZONE {
            pods.push(PodState {
                name: format!("{service}-{zone}-{pod}"),
                deployment: deployment.clone(),
                zone: Some(zone.to_owned()),
                ready: true,
                unready_since: None,
                restart_count: 0,
                crash_loop: false,
                terminating: false,
            });
        }
    }
    Observation {
        at: now,
        metrics,
        pods,
        deployments,
        not_ready_nodes: BTreeMap::new(),
        mode_value: None,
        mode_set_by: None,
    }
}

fn percentile(sorted: &[Duration], share: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * share).round() as usize]
}

fn main() {
    let spec = spec();
    println!("fleet evaluation without IO (evaluate + decide + record + report per service)");
    println!(
        "{:>8} {:>8} {:>9} {:>12} {:>12} {:>14} {:>14}",
        "services", "pods", "series", "split", "services", "per svc p50", "per svc p99"
    );
    for services in [100, 500, 2_000] {
        let query = FleetQuery::for_services(
            std::iter::repeat_n(&spec, services),
            DETECTION,
            Duration::from_secs(120),
        );
        let now = Timestamp::now();
        let outcomes = answers(&query, services, now.as_second() as f64);
        let series_count: usize = outcomes
            .iter()
            .map(|(_, outcome)| outcome.as_ref().map_or(0, Vec::len))
            .sum();
        let started = Instant::now();
        let fleet = FleetMetrics::from_outcomes(&query, &MetricProfile::default(), outcomes);
        let split = started.elapsed();

        let status = InvoiceServiceStatus::default();
        let mut per_service = Vec::with_capacity(services);
        let all = Instant::now();
        for index in 0..services {
            let one = Instant::now();
            let selector =
                ServiceSelector::for_service("invoicing", &format!("service-{index}"), &spec);
            let observation = observation(index, fleet.service(&selector), now);
            let evaluation = evaluate(&spec, &observation, DETECTION);
            let decision = engine::decide(&DecisionInput {
                spec: &spec,
                evaluation: &evaluation,
                status: &status,
                deployments: &observation.deployments,
                now,
                paused_by_annotation: false,
                storm: false,
                manual_fail_back: false,
            });
            let recorded = engine::record(&status, &decision, &observation.deployments, now, true);
            let (next, _events) = report::report(ReportInput {
                spec: &spec,
                generation: Some(1),
                previous: &status,
                recorded,
                evaluation: &evaluation,
                decision: &decision,
                applied: true,
                refusal: None,
                paused: false,
                storm: false,
                now,
            });
            std::hint::black_box(next);
            per_service.push(one.elapsed());
        }
        let total = all.elapsed();
        per_service.sort();
        println!(
            "{services:>8} {:>8} {series_count:>9} {:>10.1}ms {:>10.1}ms {:>12.1}µs {:>12.1}µs",
            services * ZONES.len() * PODS_PER_ZONE,
            split.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            percentile(&per_service, 0.5).as_secs_f64() * 1e6,
            percentile(&per_service, 0.99).as_secs_f64() * 1e6,
        );
    }
}
