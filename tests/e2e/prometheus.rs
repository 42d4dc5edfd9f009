//! Contract tests of the Prometheus source against the real Prometheus of the local cluster.
//!
//! A tiny exporter on 127.0.0.1 serves invoice metrics for a few fake services and pods under a
//! namespace of its own; a file_sd target file makes the cluster's Prometheus scrape it (every
//! 5 s). The tests then check that real answers split into the signals the engine expects, and
//! that failures (empty, NaN, refused PromQL, unreachable or hung Prometheus) become unknowns
//! without panics. Needs `PROMETHEUS_URL` and `PROMETHEUS_TARGETS_DIR`, set by `make test`
//! (`tests/cluster/with-cluster.sh`). Does IO.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use invoice_operator::{
    api::InvoiceServiceSpec,
    prometheus::{
        FleetQuery, Limits, MetricProfile, MetricsSource, Prometheus, QueryObserver, ServiceQuery,
        ServiceSelector,
    },
    signals::{RequestRates, ServiceMetrics, UnknownReason},
};
use invoice_operator_e2e::{ScrapeTarget, random_suffix};
use serde_json::{Value, json};

/// The detection window. Rates need two samples inside it; at a 5 s scrape interval one
/// minute holds twelve.
const DETECTION: Duration = Duration::from_secs(60);

/// Samples older than this are stale.
const STALE_AFTER: Duration = Duration::from_secs(120);

/// How long to wait for Prometheus to pick up the target (file_sd refresh 5 s) and scrape it
/// twice (every 5 s), with room for a loaded machine.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(60);

/// Services served in bulk next to the hand-made ones, to show that many services are split out
/// of the same handful of queries.
const BULK_SERVICES: usize = 100;

fn prometheus_url() -> String {
    std::env::var("PROMETHEUS_URL").expect(
        "PROMETHEUS_URL is not set: run the end-to-end tests with `make test` \
         (or `make cluster-up` and `source .cluster/env`)",
    )
}

fn targets_dir() -> PathBuf {
    std::env::var_os("PROMETHEUS_TARGETS_DIR")
        .expect(
            "PROMETHEUS_TARGETS_DIR is not set: run the end-to-end tests with `make test` \
             (or `make cluster-up` and `source .cluster/env`)",
        )
        .into()
}

/// Adds up the samples Prometheus reports loading for each answered query.
#[derive(Debug, Default)]
struct SampleCounter(AtomicU64);

impl SampleCounter {
    fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl QueryObserver for SampleCounter {
    fn query_finished(
        &self,
        _kind: &'static str,
        outcome: Result<Option<u64>, UnknownReason>,
        _elapsed: Duration,
    ) {
        if let Ok(Some(samples)) = outcome {
            self.0.fetch_add(samples, Ordering::Relaxed);
        }
    }
}

fn prometheus(url: &str, limits: Limits) -> Prometheus {
    Prometheus::new(url, MetricProfile::default(), limits).expect("the url is valid")
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
        "signals": {"certificateExpiry": {"certificate": "billing-tls"}},
        "slos": {
            "availability": {"objective": "99.95"},
            "latency": {"threshold": "200ms", "percentile": "99"}
        }
    });
    merge(&mut base, extra);
    serde_json::from_value(base).expect("test spec is valid")
}

/// One request counter series: requests per second for one status code.
struct Requests {
    service: String,
    pod: &'static str,
    zone: &'static str,
    code: &'static str,
    per_second: f64,
}

/// What the exporter serves under `namespace`: counters grow linearly with time, so every
/// `rate()` over the same window of the same target sees the same extrapolation and the
/// ratios are exact.
fn exposition(namespace: &str, elapsed_seconds: f64) -> String {
    let mut requests = vec![
        Requests {
            service: "billing".to_owned(),
            pod: "billing-a",
            zone: "az1",
            code: "200",
            per_second: 10.0,
        },
        Requests {
            service: "billing".to_owned(),
            pod: "billing-a",
            zone: "az1",
            code: "500",
            per_second: 1.0,
        },
        Requests {
            service: "billing".to_owned(),
            pod: "billing-a",
            zone: "az1",
            code: "404",
            per_second: 0.5,
        },
        Requests {
            service: "billing".to_owned(),
            pod: "billing-b",
            zone: "az2",
            code: "200",
            per_second: 8.0,
        },
        // No traffic at all: rates are zero, latency 0/0.
        Requests {
            service: "idle".to_owned(),
            pod: "idle-a",
            zone: "az3",
            code: "200",
            per_second: 0.0,
        },
    ];
    requests.extend((0..BULK_SERVICES).map(|index| Requests {
        service: format!("bulk-{index:03}"),
        pod: "bulk-a",
        zone: "az1",
        code: "200",
        per_second: 1.0 + index as f64,
    }));

    let mut text = String::new();
    let number = |value: f64| {
        if value.is_nan() {
            "NaN".to_owned()
        } else {
            format!("{value}")
        }
    };
    let mut line = |metric: &str, labels: &[(&str, &str)], value: f64| {
        let labels: Vec<String> = labels
            .iter()
            .map(|(name, value)| format!("{name}=\"{value}\""))
            .collect();
        let _ = writeln!(text, "{metric}{{{}}} {}", labels.join(","), number(value));
    };
    for series in &requests {
        line(
            "invoice_http_requests_total",
            &[
                ("namespace", namespace),
                ("service", &series.service),
                ("pod", series.pod),
                ("zone", series.zone),
                ("code", series.code),
            ],
            series.per_second * elapsed_seconds,
        );
    }
    // Latency of billing's pods: half under 0.1 s, 90 % under 0.2 s, all under 0.4 s, so p99
    // lies 90 % of the way through the 0.2-0.4 s bucket: 0.38 s. idle's buckets never move.
    for (service, pod, zone, per_second) in [
        ("billing", "billing-a", "az1", 10.0),
        ("billing", "billing-b", "az2", 10.0),
        ("idle", "idle-a", "az3", 0.0),
    ] {
        for (le, share) in [("0.1", 0.5), ("0.2", 0.9), ("0.4", 1.0), ("+Inf", 1.0)] {
            line(
                "invoice_http_request_duration_seconds_bucket",
                &[
                    ("namespace", namespace),
                    ("service", service),
                    ("pod", pod),
                    ("zone", zone),
                    ("le", le),
                ],
                per_second * share * elapsed_seconds,
            );
        }
    }
    for (service, pod, active, max) in [
        ("billing", "billing-a", 8.0, 10.0),
        ("billing", "billing-b", 2.0, 10.0),
        ("idle", "idle-a", f64::NAN, 10.0),
    ] {
        let labels = [("namespace", namespace), ("service", service), ("pod", pod)];
        line("invoice_db_pool_active", &labels, active);
        line("invoice_db_pool_max", &labels, max);
    }
    line(
        "certmanager_certificate_expiration_timestamp_seconds",
        &[("namespace", namespace), ("name", "billing-tls")],
        1.9e9,
    );
    text
}

/// Serves one scrape on `stream` and closes it.
fn respond(mut stream: TcpStream, body: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Starts the exporter on a thread of its own (it lives as long as the test process) and
/// returns its port.
fn start_exporter(namespace: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("failed to bind the exporter");
    let port = listener.local_addr().expect("bound socket").port();
    let started = Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let body = exposition(&namespace, started.elapsed().as_secs_f64());
            // A scrape cut short is Prometheus' problem to report, not a reason to stop.
            let _ = respond(stream, &body);
        }
    });
    port
}

fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} is not {expected} ± {tolerance}"
    );
}

fn service_rates(metrics: &ServiceMetrics, window: Duration) -> RequestRates {
    metrics
        .rates(window)
        .unwrap_or_else(|reason| panic!("no rates over {window:?}: {reason}"))
}

/// Waits until every pod of `billing` has rates (two scrapes in) and `idle` shows up.
async fn wait_for_scrapes(source: &Prometheus, query: &FleetQuery, namespace: &str) {
    let billing = ServiceSelector::for_service(namespace, "billing", &spec(json!({})));
    let idle = ServiceSelector::for_service(namespace, "idle", &spec(json!({})));
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    loop {
        let fleet = source.fleet(query).await;
        let billing = fleet.service(&billing);
        let idle = fleet.service(&idle);
        let billing_ready = billing.pods.len() == 2
            && billing.pods.values().all(|pod| {
                pod.rates.is_ok_and(|rates| rates.total > 0.0) && pod.latency_seconds.is_ok()
            })
            && billing.rates(Duration::from_secs(300)).is_ok();
        if billing_ready && idle.pods.contains_key("idle-a") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the test exporter twice within {SCRAPE_TIMEOUT:?}; \
             is {} read by Prometheus' file_sd? billing: {billing:?}",
            targets_dir().display()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn real_prometheus_answers_split_into_service_pod_and_zone_signals() {
    let suffix = random_suffix();
    let namespace = format!("e2e-prom-{suffix}");
    let port = start_exporter(namespace.clone());
    let _target = ScrapeTarget::register(
        &format!("127.0.0.1:{port}"),
        &format!("e2e-prometheus-{suffix}"),
    );
    let samples = Arc::new(SampleCounter::default());
    let source = prometheus(&prometheus_url(), Limits::default()).with_observer(samples.clone());
    let bulk_specs: Vec<InvoiceServiceSpec> = (0..BULK_SERVICES).map(|_| spec(json!({}))).collect();
    let query = FleetQuery::for_services(&bulk_specs, DETECTION, STALE_AFTER);
    wait_for_scrapes(&source, &query, &namespace).await;

    let issued_before = source.queries_issued();
    let samples_before = samples.total();
    let fleet = source.fleet(&query).await;
    assert_eq!(
        source.queries_issued() - issued_before,
        query.planned_queries() as u64,
        "one evaluation issues exactly the planned queries"
    );
    // Prometheus says how many samples it loaded (query statistics): at least the pod rates'
    // two samples of each of the exporter's request series.
    assert!(
        samples.total() - samples_before >= 2 * 5,
        "samples loaded: {}",
        samples.total() - samples_before
    );

    // billing: pod a 10/s 200, 1/s 500, 0.5/s 404 in az1; pod b 8/s 200 in az2.
    let billing = fleet.service(&ServiceSelector::for_service(
        &namespace,
        "billing",
        &spec(json!({})),
    ));
    let pod_a = &billing.pods["billing-a"];
    assert_eq!(pod_a.zone.as_deref(), Some("az1"));
    assert_eq!(billing.pods["billing-b"].zone.as_deref(), Some("az2"));
    let rates_a = pod_a.rates.expect("pod a has rates");
    assert_close(
        rates_a.error_ratio(0.0).unwrap(),
        1.0 / 11.5,
        1e-6,
        "pod a 5xx ratio",
    );
    assert_close(
        rates_a.client_error_ratio(0.0).unwrap(),
        0.5 / 11.5,
        1e-6,
        "pod a 4xx ratio",
    );
    let rates_b = billing.pods["billing-b"].rates.expect("pod b has rates");
    assert_eq!(rates_b.server_errors, 0.0);
    assert_close(
        rates_b.total / rates_a.total,
        8.0 / 11.5,
        1e-6,
        "pod b to pod a traffic",
    );
    for window in billing.windows.keys() {
        assert_close(
            service_rates(&billing, *window).error_ratio(0.0).unwrap(),
            1.0 / 19.5,
            1e-6,
            &format!("service 5xx ratio over {window:?}"),
        );
    }
    assert_eq!(
        billing.windows.len(),
        9,
        "detection window and 8 SLO windows"
    );
    assert_close(
        billing.latency_seconds.expect("service p99"),
        0.38,
        1e-6,
        "service p99",
    );
    assert_close(
        pod_a.latency_seconds.expect("pod p99"),
        0.38,
        1e-6,
        "pod a p99",
    );
    assert_close(
        billing.db_pool_utilization.expect("service pool"),
        0.5,
        1e-9,
        "service pool",
    );
    assert_close(
        pod_a.db_pool_utilization.expect("pod pool"),
        0.8,
        1e-9,
        "pod a pool",
    );
    assert_eq!(billing.certificate_expires_at, Ok(1.9e9));

    // idle: no traffic is zero (the engine says LowTraffic), its p99 is 0/0 and its pool NaN.
    let idle_spec = spec(json!({"signals": {"certificateExpiry": {"certificate": "idle-tls"}}}));
    let idle = fleet.service(&ServiceSelector::for_service(
        &namespace, "idle", &idle_spec,
    ));
    let idle_rates = service_rates(&idle, DETECTION);
    assert_eq!(idle_rates, RequestRates::default());
    assert_eq!(idle_rates.error_ratio(0.5), Err(UnknownReason::LowTraffic));
    assert_eq!(idle.latency_seconds, Err(UnknownReason::NotANumber));
    assert_eq!(
        idle.pods["idle-a"].latency_seconds,
        Err(UnknownReason::NotANumber)
    );
    assert_eq!(
        idle.pods["idle-a"].db_pool_utilization,
        Err(UnknownReason::NotANumber)
    );
    assert_eq!(idle.db_pool_utilization, Err(UnknownReason::NotANumber));
    assert_eq!(idle.certificate_expires_at, Err(UnknownReason::NoData));

    // A service nobody exports: no data anywhere, no panic.
    let ghost = fleet.service(&ServiceSelector::for_service(
        &namespace,
        "ghost",
        &spec(json!({})),
    ));
    assert!(
        ghost
            .windows
            .values()
            .all(|rates| *rates == Err(UnknownReason::NoData))
    );
    assert_eq!(ghost.latency_seconds, Err(UnknownReason::NoData));
    assert_eq!(ghost.db_pool_utilization, Err(UnknownReason::NoData));
    assert!(ghost.pods.is_empty());

    // The 100 bulk services came out of the same queries, each with its own traffic.
    for index in 0..BULK_SERVICES {
        let bulk = fleet.service(&ServiceSelector::for_service(
            &namespace,
            &format!("bulk-{index:03}"),
            &spec(json!({})),
        ));
        let rates = service_rates(&bulk, DETECTION);
        assert_close(
            rates.total / rates_b.total,
            (1.0 + index as f64) / 8.0,
            1e-6,
            &format!("bulk-{index:03} traffic"),
        );
        assert_eq!(bulk.pods["bulk-a"].zone.as_deref(), Some("az1"));
    }

    // The per-service path reads the same series through escaped label matchers.
    let restricted = ServiceQuery::for_service(
        &namespace,
        "billing",
        &spec(json!({"signals": {"prometheus": {"url": prometheus_url()}}})),
        DETECTION,
        STALE_AFTER,
    );
    let billing_alone = source.service(&restricted).await;
    assert_close(
        service_rates(&billing_alone, DETECTION)
            .error_ratio(0.0)
            .unwrap(),
        1.0 / 19.5,
        1e-6,
        "per-service 5xx ratio",
    );
    assert_eq!(billing_alone.pods.len(), 2);
    let hostile = ServiceQuery::for_service(
        &namespace,
        r#"billing"} or vector(1) #"#,
        &spec(json!({"signals": {"prometheus": {"url": prometheus_url()}}})),
        DETECTION,
        STALE_AFTER,
    );
    let hostile = source.service(&hostile).await;
    assert_eq!(hostile.rates(DETECTION), Err(UnknownReason::NoData));
    assert_eq!(hostile.latency_seconds, Err(UnknownReason::NoData));
}

#[tokio::test]
async fn refused_custom_promql_is_query_failed_without_panic() {
    let source = prometheus(&prometheus_url(), Limits::default());
    let namespace = format!("e2e-prom-{}", random_suffix());
    let broken = spec(json!({
        "signals": {
            // The service's own Prometheus, named explicitly: the per-service path.
            "prometheus": {"url": prometheus_url()},
            "queries": {
                "errorRatio": "sum(rate(invoice_http_requests_total[$window]",
                "latency": "histogram_quantile($quantile, ) )",
                "dbPoolUtilization": "vector(0.42)"
            }
        }
    }));
    let query = ServiceQuery::for_service(&namespace, "billing", &broken, DETECTION, STALE_AFTER);
    let failures_before = source.query_failures();
    let metrics = source.service(&query).await;
    assert_eq!(metrics.windows.len(), 9);
    assert!(
        metrics
            .windows
            .values()
            .all(|rates| *rates == Err(UnknownReason::QueryFailed)),
        "{:?}",
        metrics.windows
    );
    assert_eq!(metrics.latency_seconds, Err(UnknownReason::QueryFailed));
    assert_eq!(metrics.db_pool_utilization, Ok(0.42), "valid custom PromQL");
    assert!(source.query_failures() - failures_before >= 10);
}

#[tokio::test]
async fn an_unreachable_prometheus_is_reported_quickly() {
    let limits = Limits::default();
    let source = prometheus("http://127.0.0.1:1", limits);
    let specs = [spec(json!({}))];
    let query = FleetQuery::for_services(&specs, DETECTION, STALE_AFTER);
    let started = Instant::now();
    let fleet = source.fleet(&query).await;
    let elapsed = started.elapsed();
    let metrics = fleet.service(&ServiceSelector::for_service(
        "invoicing",
        "billing",
        &specs[0],
    ));
    let unreachable = Err(UnknownReason::PrometheusUnreachable);
    assert_eq!(metrics.windows.len(), 9);
    assert!(metrics.windows.values().all(|rates| *rates == unreachable));
    assert_eq!(
        metrics.latency_seconds,
        Err(UnknownReason::PrometheusUnreachable)
    );
    assert_eq!(
        metrics.db_pool_utilization,
        Err(UnknownReason::PrometheusUnreachable)
    );
    assert_eq!(
        metrics.certificate_expires_at,
        Err(UnknownReason::PrometheusUnreachable)
    );
    assert!(
        elapsed < limits.connect_timeout,
        "a refused connection took {elapsed:?}"
    );
    // The first refusal gives up on the rest of the batch.
    assert!(source.queries_issued() <= limits.concurrency as u64);

    // A service naming an unreachable Prometheus of its own, while the default one is fine.
    let default_source = prometheus(&prometheus_url(), limits);
    let own = spec(json!({"signals": {"prometheus": {"url": "http://127.0.0.1:1"}}}));
    let query = ServiceQuery::for_service("invoicing", "billing", &own, DETECTION, STALE_AFTER);
    let metrics = default_source.service(&query).await;
    assert!(metrics.windows.values().all(|rates| *rates == unreachable));
    assert_eq!(
        metrics.latency_seconds,
        Err(UnknownReason::PrometheusUnreachable)
    );
}

#[tokio::test]
async fn a_hung_prometheus_is_unreachable_within_the_query_timeout() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("failed to bind");
    let port = listener.local_addr().expect("bound socket").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let limits = Limits {
        query_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let source = prometheus(&format!("http://127.0.0.1:{port}"), limits);
    let specs = [spec(json!({}))];
    let query = FleetQuery::for_services(&specs, DETECTION, STALE_AFTER);
    let started = Instant::now();
    let fleet = source.fleet(&query).await;
    let elapsed = started.elapsed();
    let metrics = fleet.service(&ServiceSelector::for_service(
        "invoicing",
        "billing",
        &specs[0],
    ));
    assert!(
        metrics
            .windows
            .values()
            .all(|rates| *rates == Err(UnknownReason::PrometheusUnreachable))
    );
    assert_eq!(
        metrics.latency_seconds,
        Err(UnknownReason::PrometheusUnreachable)
    );
    // One round of timeouts, not one per query: 14 queries × 1 s would be 14 s.
    assert!(
        elapsed < Duration::from_secs(4),
        "a hung Prometheus held the evaluation for {elapsed:?}"
    );
}

#[tokio::test]
async fn the_query_count_is_the_same_for_one_hundred_and_a_thousand_services() {
    let source = prometheus(&prometheus_url(), Limits::default());
    let mut counts = Vec::new();
    for services in [1, 100, 1_000] {
        let specs: Vec<InvoiceServiceSpec> = (0..services).map(|_| spec(json!({}))).collect();
        let query = FleetQuery::for_services(&specs, DETECTION, STALE_AFTER);
        let before = source.queries_issued();
        let _ = source.fleet(&query).await;
        let issued = source.queries_issued() - before;
        eprintln!("{services} services: {issued} queries per evaluation");
        counts.push(issued);
    }
    assert_eq!(counts, [14, 14, 14]);
}
