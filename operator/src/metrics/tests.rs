use super::*;

#[test]
fn encoded_metrics_carry_the_invoiceops_prefix_and_bounded_labels() {
    let metrics = Arc::new(Metrics::default());
    metrics
        .remediations
        .get_or_create(&RemediationLabels {
            action: "RestartPod",
            result: "applied",
            mode: "Enforce",
        })
        .inc();
    metrics
        .blocked
        .get_or_create(&GateLabels { gate: "Cooldown" })
        .inc();
    drop(metrics.reconcile_timer());
    let text = metrics.encode();
    assert!(
        text.contains(
            "invoiceops_remediations_total{action=\"RestartPod\",result=\"applied\",mode=\"Enforce\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("invoiceops_decisions_blocked_total{gate=\"Cooldown\"} 1"));
    assert!(text.contains("invoiceops_reconcile_duration_seconds_count 1"));
}

#[test]
fn kubernetes_requests_are_labelled_by_method_and_watch() {
    let labels = |method: &str, uri: &str| {
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap();
        let labels = KubernetesRequestLabels::of(&request);
        (labels.method, labels.watch)
    };
    assert_eq!(labels("GET", "/api/v1/pods?"), ("GET", "false"));
    assert_eq!(
        labels("GET", "/api/v1/pods?&watch=true&resourceVersion=1"),
        ("GET", "true")
    );
    assert_eq!(labels("GET", "/api/v1/pods?watch=1"), ("GET", "true"));
    assert_eq!(labels("GET", "/api/v1/pods?watch=false"), ("GET", "false"));
    assert_eq!(
        labels("GET", "/api/v1/namespaces/watch=true/pods"),
        ("GET", "false"),
        "only the query string counts"
    );
    assert_eq!(labels("POST", "/api/v1/pods"), ("POST", "false"));
    assert_eq!(labels("PUT", "/x"), ("PUT", "false"));
    assert_eq!(labels("PATCH", "/x?fieldManager=a"), ("PATCH", "false"));
    assert_eq!(labels("DELETE", "/x"), ("DELETE", "false"));
    assert_eq!(labels("HEAD", "/x"), ("OTHER", "false"));
}

/// The layer on a real kube client: every request it sends is counted, watches apart.
#[tokio::test]
async fn the_client_layer_counts_every_kubernetes_request() {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{
        Api,
        api::{DeleteParams, ListParams, Patch, PatchParams, WatchParams},
        client::{Body, ClientBuilder},
    };

    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    tokio::spawn(async move {
        while let Some((_request, respond)) = handle.next_request().await {
            respond.send_response(
                http::Response::builder()
                    .status(200)
                    .body(Body::from(b"{}".to_vec()))
                    .unwrap(),
            );
        }
    });
    let metrics = Metrics::default();
    let client = ClientBuilder::new(service, "default")
        .with_layer(&metrics.kubernetes_requests_layer())
        .build();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    // The answers do not parse as ConfigMaps; only the requests matter.
    let _ = api.get("a").await;
    let _ = api.list(&ListParams::default()).await;
    let _ = api
        .patch(
            "a",
            &PatchParams::apply("test"),
            &Patch::Apply(serde_json::json!({})),
        )
        .await;
    let _ = api.delete("a", &DeleteParams::default()).await;
    if let Ok(stream) = api.watch(&WatchParams::default(), "0").await {
        let _ = stream.boxed().next().await;
    }
    let text = metrics.encode();
    for (method, watch, count) in [
        ("GET", "false", 2),
        ("PATCH", "false", 1),
        ("DELETE", "false", 1),
        ("GET", "true", 1),
    ] {
        let line = format!(
            "invoiceops_kubernetes_requests_total{{method=\"{method}\",watch=\"{watch}\"}} {count}"
        );
        assert!(text.contains(&line), "{line} in\n{text}");
    }
}

fn set_burn_rate(metrics: &Metrics, namespace: &str, service: &str, window: &str, rate: f64) {
    metrics
        .burn_rates
        .get_or_create(&BurnRateLabels {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            window: window.to_owned(),
        })
        .set(rate);
}

fn burn_rate_line(namespace: &str, service: &str, window: &str, rate: &str) -> String {
    format!(
        "invoiceops_slo_burn_rate{{namespace=\"{namespace}\",service=\"{service}\",window=\"{window}\"}} {rate}"
    )
}

#[test]
fn forgetting_a_service_removes_its_burn_rates_and_keeps_the_others() {
    let metrics = Metrics::default();
    for window in ["5m", "1h"] {
        set_burn_rate(&metrics, "billing", "invoices", window, 2.0);
        set_burn_rate(&metrics, "billing", "receipts", window, 3.0);
        set_burn_rate(&metrics, "shop", "invoices", window, 4.0);
    }
    let before = metrics.encode();
    assert!(
        before.contains(&burn_rate_line("billing", "invoices", "5m", "2.0")),
        "{before}"
    );

    metrics.forget_service("billing", "invoices");
    let text = metrics.encode();
    for window in ["5m", "1h"] {
        assert!(
            !text.contains(&burn_rate_line("billing", "invoices", window, "2.0")),
            "{text}"
        );
        assert!(
            text.contains(&burn_rate_line("billing", "receipts", window, "3.0")),
            "{text}"
        );
        assert!(
            text.contains(&burn_rate_line("shop", "invoices", window, "4.0")),
            "the same name in another namespace is another service: {text}"
        );
    }
    assert!(
        !text.contains("service=\"invoices\",window=\"5m\"} 2"),
        "{text}"
    );
}

#[test]
fn forgetting_all_services_removes_every_burn_rate() {
    let metrics = Metrics::default();
    set_burn_rate(&metrics, "billing", "invoices", "5m", 2.0);
    set_burn_rate(&metrics, "shop", "orders", "1h", 4.0);
    metrics.leader.set(1);

    metrics.forget_all_services();
    let text = metrics.encode();
    assert!(!text.contains("invoiceops_slo_burn_rate{"), "{text}");
    assert!(
        text.contains("invoiceops_leader 1"),
        "fleet-wide metrics stay: {text}"
    );
}

#[test]
fn a_forgotten_service_reports_again_once_evaluated_again() {
    let metrics = Metrics::default();
    let forget: [&dyn Fn(&Metrics); 2] = [
        &|metrics| metrics.forget_service("billing", "invoices"),
        &|metrics| metrics.forget_all_services(),
    ];
    for forget in forget {
        set_burn_rate(&metrics, "billing", "invoices", "5m", 2.0);
        forget(&metrics);
        set_burn_rate(&metrics, "billing", "invoices", "5m", 1.5);
        let text = metrics.encode();
        assert!(
            text.contains(&burn_rate_line("billing", "invoices", "5m", "1.5")),
            "{text}"
        );
    }
}

#[test]
fn the_build_info_names_the_version() {
    let exported = Metrics::default().encode();
    assert!(
        exported.contains(&format!(
            "invoiceops_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{exported}"
    );
}

fn state(phase: &'static str, budget: Option<f64>) -> crate::metrics::ServiceState {
    crate::metrics::ServiceState {
        phase,
        mode: "DryRun",
        needs_attention: true,
        signals_trusted: false,
        error_budget_remaining: budget,
        availability: Some(0.9995),
        ladder_rung: 2,
        ladder_exhausted: false,
        incident_open: true,
    }
}

#[test]
fn service_state_is_one_hot_per_phase_and_mode_and_absent_when_unknown() {
    let metrics = Metrics::default();
    metrics
        .service_state
        .set("billing", "invoices", &state("Remediating", Some(0.25)));
    let exported = metrics.encode();
    let series = |name: &str, labels: &str| {
        format!("invoiceops_{name}{{namespace=\"billing\",service=\"invoices\"{labels}}}")
    };
    for phase in crate::metrics::PHASES {
        let on = if phase == "Remediating" { 1 } else { 0 };
        let line = format!(
            "{} {on}",
            series("service_phase", &format!(",value=\"{phase}\""))
        );
        assert!(exported.contains(&line), "{line}\n{exported}");
    }
    for (line, what) in [
        (
            format!("{} 1", series("service_mode", ",value=\"DryRun\"")),
            "mode",
        ),
        (
            format!("{} 0", series("service_mode", ",value=\"Enforce\"")),
            "mode",
        ),
        (
            format!("{} 1", series("service_needs_attention", "")),
            "attention",
        ),
        (
            format!("{} 0", series("service_signals_trusted", "")),
            "trusted",
        ),
        (
            format!(
                "{} 0.25",
                series("service_error_budget_remaining_ratio", "")
            ),
            "budget",
        ),
        (
            format!("{} 0.9995", series("service_availability_ratio", "")),
            "availability",
        ),
        (format!("{} 2", series("service_ladder_rung", "")), "rung"),
    ] {
        assert!(exported.contains(&line), "{what}: {line}\n{exported}");
    }

    // The budget no longer known: its series goes rather than keeping the last value.
    metrics
        .service_state
        .set("billing", "invoices", &state("Healthy", None));
    let exported = metrics.encode();
    assert!(
        !exported.contains("service_error_budget_remaining_ratio{"),
        "{exported}"
    );
    assert!(exported.contains(&format!(
        "{} 1",
        series("service_phase", ",value=\"Healthy\"")
    )));

    metrics.forget_service("billing", "invoices");
    let exported = metrics.encode();
    assert!(!exported.contains("service=\"invoices\""), "{exported}");
}

#[test]
fn the_samples_of_answered_queries_are_counted_by_kind() {
    use crate::prometheus::QueryObserver as _;
    let metrics = Arc::new(Metrics::default());
    let observer = QueryMetrics(Arc::clone(&metrics));
    let second = Duration::from_secs(1);
    observer.query_finished("sli", Ok(Some(1_200)), second);
    observer.query_finished("sli", Ok(Some(800)), second);
    observer.query_finished("sli", Ok(None), second);
    observer.query_finished("sli", Err(UnknownReason::QueryFailed), second);
    let text = metrics.encode();
    assert!(
        text.contains("invoiceops_prometheus_query_samples_total{kind=\"sli\"} 2000"),
        "{text}"
    );
    assert!(text.contains("invoiceops_prometheus_queries_total{kind=\"sli\"} 4"));
}
