//! The example invoice app as a real process, scraped by the real Prometheus: proves the
//! metric contract between an app and the operator (the operator's own Prometheus source reads
//! the app's requests, errors, latency, pool and zone), and that the app honours the
//! read-only mode the operator switches.

use std::{path::PathBuf, time::Duration};

use invoice_operator::{
    prometheus::{FleetQuery, Limits, MetricProfile, MetricsSource, Prometheus, ServiceSelector},
    signals::ServiceKey,
};
use invoice_operator_e2e::{eventually, free_port, random_suffix, workspace_binary};
use prometheus_http_query::reqwest;

/// The app process and its scrape target, removed when dropped.
struct App {
    child: std::process::Child,
    target: PathBuf,
    url: String,
}

impl Drop for App {
    fn drop(&mut self) {
        invoice_operator_e2e::stop(&mut self.child, Some(&self.target));
    }
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the end-to-end tests with `make test`"))
}

fn start_app(namespace: &str, mode_file: &std::path::Path) -> App {
    let port = free_port();
    let child = std::process::Command::new(workspace_binary("invoice-app"))
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("POD_NAMESPACE", namespace)
        .env("SERVICE", "invoice-app")
        .env("POD_NAME", "invoice-app-0")
        .env("ZONE", "az1")
        .env("MODE_FILE", mode_file)
        .env("DB_POOL_MAX", "20")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("failed to start invoice-app");
    // Written then renamed, so Prometheus never reads half a file.
    let targets = PathBuf::from(env("PROMETHEUS_TARGETS_DIR"));
    let target = targets.join(format!("{namespace}.json"));
    let partial = targets.join(format!(".{namespace}.tmp"));
    std::fs::write(
        &partial,
        format!(r#"[{{"targets":["127.0.0.1:{port}"],"labels":{{"job":"{namespace}"}}}}]"#),
    )
    .expect("write the scrape target");
    std::fs::rename(&partial, &target).expect("publish the scrape target");
    App {
        child,
        target,
        url: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test]
async fn the_operator_reads_the_example_apps_metrics_and_the_app_honours_read_only() {
    let namespace = format!("app-{}", random_suffix());
    let mode_file = std::env::temp_dir().join(format!("{namespace}-mode"));
    std::fs::write(&mode_file, "read-write").unwrap();
    let app = start_app(&namespace, &mode_file);
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(20), "the app to answer", || {
        let http = http.clone();
        let url = format!("{}/healthz", app.url);
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;

    // Traffic for long enough that Prometheus (5 s scrapes) sees rates over the window.
    let started = std::time::Instant::now();
    let mut created = 0;
    while started.elapsed() < Duration::from_secs(25) {
        let response = http
            .post(format!("{}/invoices", app.url))
            .json(&serde_json::json!({"customer": "ACME GmbH", "amount_cents": 129_900}))
            .send()
            .await
            .expect("create an invoice");
        assert_eq!(response.status(), 201);
        created += 1;
        let found = http
            .get(format!("{}/invoices/{created}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(found.status(), 200);
        let missing = http
            .get(format!("{}/invoices/999999", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The operator's own source reads the app's series, batched like the whole fleet.
    let prometheus = Prometheus::new(
        &env("PROMETHEUS_URL"),
        MetricProfile::default(),
        Limits::default(),
    )
    .expect("prometheus client");
    let detection = Duration::from_secs(30);
    let mut query = FleetQuery::new(detection, Duration::from_secs(120));
    query.quantiles.insert("0.99".to_owned());
    let selector = ServiceSelector {
        key: ServiceKey {
            namespace: namespace.clone(),
            service: "invoice-app".to_owned(),
        },
        quantile: Some("0.99".to_owned()),
        certificate: None,
    };
    let metrics = eventually(
        Duration::from_secs(30),
        "the app's series in Prometheus",
        || {
            let (prometheus, query, selector) = (&prometheus, &query, &selector);
            async move {
                let metrics = prometheus.fleet(query).await.service(selector);
                let rates = metrics.rates(detection).ok()?;
                (rates.total > 0.0 && metrics.pods.contains_key("invoice-app-0")).then_some(metrics)
            }
        },
    )
    .await;
    let rates = metrics.rates(detection).expect("detection-window rates");
    // One create, one get and one missing invoice per round: a third of requests are 404.
    let client_share = rates.client_errors / rates.total;
    assert!(
        (0.2..0.45).contains(&client_share),
        "4xx share {client_share}: {rates:?}"
    );
    assert_eq!(rates.server_errors, 0.0, "{rates:?}");
    let pod = &metrics.pods["invoice-app-0"];
    assert_eq!(pod.zone.as_deref(), Some("az1"));
    let latency = metrics.latency_seconds.expect("p99 latency");
    assert!(latency > 0.0 && latency < 1.0, "p99 {latency}");
    let pool = metrics.db_pool_utilization.expect("pool utilisation");
    assert!((0.0..=1.0).contains(&pool), "pool {pool}");
    println!(
        "invoice-app seen by the operator: {:.2} req/s, 4xx share {client_share:.2}, p99 {latency:.3}s, pool {pool:.2}",
        rates.total
    );

    // Read-only: writes refused without a 5xx, reads go on; back to read-write.
    std::fs::write(&mode_file, "read-only").unwrap();
    let refused = http
        .post(format!("{}/invoices", app.url))
        .json(&serde_json::json!({"customer": "ACME GmbH", "amount_cents": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 423);
    let listed = http
        .get(format!("{}/invoices", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let invoices: Vec<serde_json::Value> = listed.json().await.unwrap();
    assert_eq!(invoices.len(), created);
    std::fs::write(&mode_file, "read-write").unwrap();
    let accepted = http
        .post(format!("{}/invoices", app.url))
        .json(&serde_json::json!({"customer": "ACME GmbH", "amount_cents": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 201);
    let _ = std::fs::remove_file(&mode_file);
}

#[tokio::test]
async fn the_example_app_manifests_deploy_one_deployment_per_zone() {
    use invoice_operator_e2e::{TestNamespace, apply_yaml, client};
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::{Api, ResourceExt, api::ListParams};

    let client = client().await;
    let namespace = TestNamespace::create(&client, "e2e-app-manifests").await;
    let manifests = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/invoice-app/deploy/billing-api.yaml"),
    )
    .expect("the example manifests");
    for document in manifests.split("\n---\n") {
        apply_yaml(&client, &namespace.name, document).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace.name);
    let nodes: Api<Node> = Api::all(client.clone());
    let placement = eventually(
        Duration::from_secs(90),
        "9 ready pods in their zones",
        || {
            let (pods, nodes) = (pods.clone(), nodes.clone());
            async move {
                let list = pods.list(&ListParams::default()).await.ok()?;
                let mut placement = Vec::new();
                for pod in &list.items {
                    let ready = pod
                        .status
                        .as_ref()?
                        .conditions
                        .as_ref()?
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    if !ready {
                        return None;
                    }
                    let node = nodes
                        .get(pod.spec.as_ref()?.node_name.as_deref()?)
                        .await
                        .ok()?;
                    let zone = node.labels().get("topology.kubernetes.io/zone")?.clone();
                    placement.push((pod.labels().get("zone")?.clone(), zone));
                }
                (placement.len() == 9).then_some(placement)
            }
        },
    )
    .await;
    println!("pods by zone label and node zone: {placement:?}");
    for (wanted, actual) in &placement {
        assert_eq!(wanted, actual, "a pod ran outside its zone: {placement:?}");
    }
    namespace.delete().await;
}
