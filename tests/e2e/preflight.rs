//! Pre-flight on the local cluster: a service that could never act (a Deployment that does not
//! exist, zones no node carries) and the second of two services claiming one Deployment are
//! reported `Ready=False` with the reason and the field named, with a Warning Event, are never
//! acted on, and become Ready once the cluster or the spec agrees.

use std::time::{Duration, Instant};

use invoice_operator::api::InvoiceService;
use invoice_operator_e2e::{
    CRASH_LOOP_SLOS, OperatorProcess, apply_deployment, apply_invoice_service,
    crash_and_wait_evicted, crd_and_namespace, deploy_invoice_api, eventually, ready_pods,
    service_events,
};
use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client, ResourceExt, api::DeleteParams};

/// How long the operator may take to report a refusal: its caches sync, then one reconcile.
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// Applies the InvoiceService `name` for `workload` (the body of a YAML flow mapping), in
/// Enforce mode with `ladder`.
async fn create_service(
    client: &Client,
    namespace: &str,
    name: &str,
    workload: &str,
    ladder: &str,
) {
    apply_invoice_service(
        client,
        namespace,
        name,
        workload,
        CRASH_LOOP_SLOS,
        &format!("mode: Enforce, cooldown: 30s, verifyWindow: 1m, ladder: {ladder}"),
    )
    .await;
}

async fn service(client: &Client, namespace: &str, name: &str) -> InvoiceService {
    let api: Api<InvoiceService> = Api::namespaced(client.clone(), namespace);
    api.get(name).await.expect("the InvoiceService exists")
}

/// The `Ready` condition's (status, reason, message), once there is one.
async fn ready(client: &Client, namespace: &str, name: &str) -> Option<(String, String, String)> {
    let status = service(client, namespace, name).await.status?;
    status
        .conditions
        .into_iter()
        .find(|condition| condition.type_ == "Ready")
        .map(|condition| (condition.status, condition.reason, condition.message))
}

/// Waits until `Ready` has `status` and `reason`; returns its message.
async fn wait_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &str,
    reason: &str,
) -> String {
    eventually(
        REPORT_TIMEOUT,
        &format!("{name} to be Ready={status}/{reason}"),
        || async move {
            let (is, because, message) = ready(client, namespace, name).await?;
            (is == status && because == reason).then_some(message)
        },
    )
    .await
}

/// Events with `reason` regarding the InvoiceService `name`.
async fn events(client: &Client, namespace: &str, name: &str, reason: &str) -> Vec<Event> {
    service_events(client, namespace, Some(name), reason)
        .await
        .expect("list events")
}

/// Waits for a Warning Event with `reason` regarding `name`; returns its note.
async fn wait_warning(client: &Client, namespace: &str, name: &str, reason: &str) -> String {
    let found = eventually(
        Duration::from_secs(30),
        &format!("a {reason} Event on {name}"),
        || async move {
            events(client, namespace, name, reason)
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(found.type_.as_deref(), Some("Warning"), "{found:?}");
    found.note.unwrap_or_default()
}

#[tokio::test]
async fn services_that_could_never_act_are_not_ready_with_the_reason_and_field_named() {
    let (client, namespace) = crd_and_namespace("e2e-preflight").await;
    let ns = namespace.name.clone();
    deploy_invoice_api(&client, &ns, 1).await;
    // The spec: one Deployment, zones no node carries, only ZoneFailover to do.
    create_service(
        &client,
        &ns,
        "far-zones",
        "deployment: invoice-api, zones: [az8, az9]",
        "[ZoneFailover]",
    )
    .await;
    create_service(
        &client,
        &ns,
        "ghost",
        "deployment: invoice-ghost",
        "[RestartPod]",
    )
    .await;
    let started = Instant::now();
    let operator = OperatorProcess::start(&ns, &format!("{ns}-a"), &["--leader-election=false"]);

    let message = wait_ready(&client, &ns, "far-zones", "False", "ZoneNotFound").await;
    assert!(
        message.contains("spec.workload.zones[0]: no node carries topology.kubernetes.io/zone=az8")
            && message.contains("spec.workload.zones[1]"),
        "{message}"
    );
    let note = wait_warning(&client, &ns, "far-zones", "ZoneNotFound").await;
    assert!(note.contains("az8"), "{note}");
    let message = wait_ready(&client, &ns, "ghost", "False", "WorkloadNotFound").await;
    assert!(
        message.contains("spec.workload.deployment: Deployment \"invoice-ghost\" does not exist"),
        "{message}"
    );
    wait_warning(&client, &ns, "ghost", "WorkloadNotFound").await;
    let reported = started.elapsed();

    // Refused interval after interval: no status rewrite, no second Event.
    let versions = (
        service(&client, &ns, "far-zones").await.resource_version(),
        service(&client, &ns, "ghost").await.resource_version(),
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        (
            service(&client, &ns, "far-zones").await.resource_version(),
            service(&client, &ns, "ghost").await.resource_version(),
        ),
        versions,
        "a refused service's status was rewritten"
    );
    assert_eq!(
        events(&client, &ns, "far-zones", "ZoneNotFound")
            .await
            .len(),
        1
    );
    assert_eq!(
        events(&client, &ns, "ghost", "WorkloadNotFound")
            .await
            .len(),
        1
    );

    // The cluster and the spec come to agree: both become Ready.
    let fixed = Instant::now();
    apply_deployment(&client, &ns, "invoice-ghost", 1, "app: invoice-ghost", "").await;
    create_service(
        &client,
        &ns,
        "far-zones",
        "deployment: invoice-api, zones: [az1, az2]",
        "[ZoneFailover]",
    )
    .await;
    wait_ready(&client, &ns, "ghost", "True", "Reconciled").await;
    wait_ready(&client, &ns, "far-zones", "True", "Reconciled").await;
    println!(
        "refusals reported {:.1}s after the operator started; Ready {:.1}s after the fixes",
        reported.as_secs_f64(),
        fixed.elapsed().as_secs_f64()
    );
    drop(operator);
    namespace.delete().await;
}

#[tokio::test]
async fn the_second_service_claiming_a_deployment_is_refused_and_never_acts() {
    let (client, namespace) = crd_and_namespace("e2e-conflict").await;
    let ns = namespace.name.clone();
    let pods = deploy_invoice_api(&client, &ns, 3).await;
    let operator = OperatorProcess::start(&ns, &format!("{ns}-a"), &["--leader-election=false"]);
    let workload = "deployment: invoice-api";
    create_service(&client, &ns, "first", workload, "[RestartPod]").await;
    wait_ready(&client, &ns, "first", "True", "Reconciled").await;
    create_service(&client, &ns, "second", workload, "[RestartPod]").await;

    let message = wait_ready(&client, &ns, "second", "False", "Conflict").await;
    assert!(
        message.starts_with("spec.workload.deployment: Deployment \"invoice-api\"")
            && message.contains("InvoiceService \"first\""),
        "{message}"
    );
    let note = wait_warning(&client, &ns, "second", "Conflict").await;
    assert!(note.contains("\"first\""), "{note}");
    let (status, reason, _) = ready(&client, &ns, "first")
        .await
        .expect("first is reported");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Reconciled"));

    // A crash loop both services would answer: only the first acts, once.
    crash_and_wait_evicted(&client, &ns, &pods[0]).await;
    ready_pods(&client, &ns, 3).await;
    // Both services had every chance to act during a few more intervals.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(events(&client, &ns, "first", "PodRestarted").await.len(), 1);
    assert!(
        events(&client, &ns, "second", "PodRestarted")
            .await
            .is_empty()
    );
    let second = service(&client, &ns, "second")
        .await
        .status
        .expect("status");
    assert_eq!(second.last_action, None);
    assert!(second.history.is_empty(), "{:?}", second.history);
    assert_eq!(
        events(&client, &ns, "second", "Conflict").await.len(),
        1,
        "one Warning Event per transition"
    );

    // The first claim goes away: the second service takes over the Deployment.
    let released = Instant::now();
    let services: Api<InvoiceService> = Api::namespaced(client.clone(), &ns);
    services
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete the first service");
    wait_ready(&client, &ns, "second", "True", "Reconciled").await;
    println!(
        "second service Ready {:.1}s after the first was deleted",
        released.elapsed().as_secs_f64()
    );
    assert!(
        operator.log().contains("refusing to act"),
        "{}",
        operator.log()
    );
    drop(operator);
    namespace.delete().await;
}
