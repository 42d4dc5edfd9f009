//! The writes of an action that sets replicas, against a mocked API server: its intent is in
//! status before the first Deployment is scaled, and an intent found in status is completed
//! and recorded before anything new is decided.

use super::*;

const SCALE: &str = "/apis/apps/v1/namespaces/invoicing/deployments/invoice-api/scale?&fieldManager=invoice-operator";

/// `invoice-api` with ScaleOut as its only rung, and `status`.
fn scaling_service(status: Option<Value>) -> Value {
    let mut service = service_object(false);
    service["spec"]["remediation"]["ladder"] = json!(["ScaleOut"]);
    if let Some(status) = status {
        service["status"] = status;
    }
    service
}

/// A context whose caches hold the pods and the Deployment `invoice-api` at `replicas`.
fn scaling_context(client: Client, pods: &[Value], replicas: i32) -> Arc<Context> {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "invoice-api", "namespace": "invoicing"},
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": replicas}
    });
    let caches = caches_of(pods, &[deployment], &[], &[]);
    measured_nothing(Context::test(client, NO_PROMETHEUS, caches))
}

#[tokio::test]
async fn a_scale_out_is_written_down_in_status_before_the_first_deployment_is_scaled() {
    let (client, server) = api_server();
    // Every pod crash-looping: service-wide trouble, answered by ScaleOut.
    let pods = [
        pod_json("invoice-api-7d9f-aaaaa", true),
        pod_json("invoice-api-7d9f-bbbbb", true),
    ];
    let context = scaling_context(client, &pods, 2);
    let service: InvoiceService = serde_json::from_value(scaling_service(None)).unwrap();
    reconcile(Arc::new(service), context).await.unwrap();
    let sent = server.finish().await;
    let scaled = sent
        .iter()
        .position(|request| request.uri == SCALE)
        .unwrap_or_else(|| panic!("no scale: {sent:#?}"));
    let intent = sent
        .iter()
        .position(|request| request.uri == SERVICE_STATUS)
        .unwrap_or_else(|| panic!("no status write: {sent:#?}"));
    assert!(intent < scaled, "the intent comes first: {sent:#?}");
    let in_flight = &sent[intent].body["status"]["inFlight"];
    assert_eq!(in_flight["action"], "ScaleOut", "{sent:#?}");
    assert_eq!(in_flight["baseline"], json!({"invoice-api": 2}));
    assert!(sent[intent].body["status"]["lastAction"].is_null());
    let recorded = sent[scaled..]
        .iter()
        .find(|request| request.uri == SERVICE_STATUS)
        .unwrap_or_else(|| panic!("the action is recorded after the scale: {sent:#?}"));
    assert_eq!(recorded.body["status"]["lastAction"]["action"], "ScaleOut");
    assert!(
        recorded.body["status"]["inFlight"].is_null(),
        "{recorded:#?}"
    );
    assert_eq!(
        recorded.body["status"]["scaledOut"]["baseline"],
        json!({"invoice-api": 2})
    );
}

#[tokio::test]
async fn an_action_in_flight_is_completed_and_recorded_before_anything_new_is_decided() {
    let (client, server) = api_server();
    // Killed after the scale-out was written down: the cluster may or may not show it.
    let status = json!({
        "inFlight": {
            "action": "ScaleOut",
            "rung": "ScaleOut",
            "replicas": {"invoice-api": 4},
            "baseline": {"invoice-api": 2},
            "reason": "service-wide trouble",
            "startedAt": "2026-11-10T12:00:00Z"
        }
    });
    let pods = [
        pod_json("invoice-api-7d9f-aaaaa", false),
        pod_json("invoice-api-7d9f-bbbbb", false),
    ];
    let context = scaling_context(client, &pods, 3);
    let service: InvoiceService = serde_json::from_value(scaling_service(Some(status))).unwrap();
    reconcile(Arc::new(service), context).await.unwrap();
    let sent = server.finish().await;
    let writes: Vec<&Sent> = sent
        .iter()
        .filter(|request| request.method != Method::GET && request.uri != EVENTS)
        .collect();
    assert_eq!(writes.len(), 2, "one scale, one status write: {writes:#?}");
    assert_eq!(writes[0].uri, SCALE);
    assert_eq!(writes[0].body["spec"]["replicas"], 4);
    assert_eq!(writes[1].uri, SERVICE_STATUS);
    let status = &writes[1].body["status"];
    assert!(status["inFlight"].is_null(), "{status}");
    assert_eq!(
        status["history"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(status["lastAction"]["action"], "ScaleOut");
    assert!(
        status["lastAction"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("resumed")),
        "{status}"
    );
    // The baseline is the one from before the action, not the 3 the cache shows.
    assert_eq!(status["scaledOut"]["baseline"], json!({"invoice-api": 2}));
}
