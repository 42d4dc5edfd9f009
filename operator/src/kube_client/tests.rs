//! The retry policy against a mocked API server: an eviction refused by a
//! PodDisruptionBudget is sent once and answered at once; a transient answer to anything else
//! is retried; the counter sees every request, retries included.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{Api, api::EvictParams};

use super::*;
use crate::fixtures::{ApiServer, Reply, Sent};

/// A client over a recording mocked API server that refuses every eviction with 429 and
/// answers the first `unavailable` other requests with 503, then 200; the server records
/// every request that reached it.
fn client(metrics: &Metrics, unavailable: usize) -> (Client, ApiServer) {
    let mut received = 0;
    let (service, server) = ApiServer::recording_service(move |sent: &Sent| {
        let index = received;
        received += 1;
        let request = Request::builder().uri(sent.uri.as_str()).body(()).unwrap();
        if is_eviction(&request) {
            Reply::new(
                429,
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                    "reason": "TooManyRequests", "code": 429,
                    "details": {"causes": [{"reason": "DisruptionBudget",
                        "message": "The disruption budget invoice-api needs 3 healthy pods and has 3 currently"}]}
                }),
            )
        } else if index < unavailable {
            Reply::new(
                503,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503}),
            )
        } else {
            Reply::new(
                200,
                serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mode"}}),
            )
        }
    });
    // The stack `build` puts over kube's, over the mock instead.
    let client = ClientBuilder::new(service, "invoicing")
        .with_layer(&metrics.kubernetes_requests_layer())
        .with_layer(&BufferLayer::new(BUFFER_CAPACITY))
        .with_layer(&RetryLayer::new(RetryTransient::default()))
        .build();
    (client, server)
}

fn counted(metrics: &Metrics, method: &str) -> u64 {
    let line =
        format!("invoiceops_kubernetes_requests_total{{method=\"{method}\",watch=\"false\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|text| text.strip_prefix(line.as_str()))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn an_eviction_refused_by_a_disruption_budget_is_sent_once_and_counted() {
    let metrics = Metrics::default();
    let (client, server) = client(&metrics, 0);
    let pods: Api<Pod> = Api::namespaced(client, "invoicing");
    let started = std::time::Instant::now();
    let answer = pods
        .evict("invoice-api-7d9f-aaaaa", &EvictParams::default())
        .await;
    match answer {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 429);
            assert!(status.message.contains("disruption budget"), "{status:?}");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert_eq!(server.count(), 1, "the eviction was retried");
    assert_eq!(counted(&metrics, "POST"), 1);
    assert!(
        started.elapsed() < MIN_RETRY_DELAY,
        "the refusal came back only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_transient_answer_is_retried_and_every_attempt_is_counted() {
    let metrics = Metrics::default();
    let (client, server) = client(&metrics, 2);
    let config_maps: Api<ConfigMap> = Api::namespaced(client, "invoicing");
    let config_map = config_maps
        .get("mode")
        .await
        .expect("answered on the third try");
    assert_eq!(config_map.metadata.name.as_deref(), Some("mode"));
    assert_eq!(server.count(), 3);
    assert_eq!(counted(&metrics, "GET"), 3);
}

#[tokio::test]
async fn retries_end_after_the_limit() {
    let metrics = Metrics::default();
    let (client, server) = client(&metrics, usize::MAX);
    let config_maps: Api<ConfigMap> = Api::namespaced(client, "invoicing");
    assert!(config_maps.get("mode").await.is_err());
    let sent = server.count();
    assert_eq!(sent, 1 + MAX_RETRIES as usize);
    assert_eq!(counted(&metrics, "GET"), sent as u64);
}
