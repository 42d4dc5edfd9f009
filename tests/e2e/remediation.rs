//! The operator as a real process on the local cluster: it evicts a crash-looping pod, reports
//! what it did as Events and status, acts on nothing in DryRun, stays quiet while nothing
//! changes, acts once with two replicas, and resumes from status after a restart.

use std::time::{Duration, Instant};

use invoice_operator::api::{ActionKind, InvoiceService, InvoiceServiceStatus};
use invoice_operator_e2e::{
    ACTION_TIMEOUT, OperatorProcess, TestNamespace, apply_crash_loop_service,
    crash_and_wait_evicted, crash_loop as crash, crd_and_namespace, deploy_invoice_api, eventually,
    pod_exists, ready_pods, service_events, wait_service_event,
};
use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client, ResourceExt, api::ListParams};

async fn service(client: &Client, namespace: &str) -> InvoiceService {
    let api: Api<InvoiceService> = Api::namespaced(client.clone(), namespace);
    api.get("invoice-api")
        .await
        .expect("the InvoiceService exists")
}

/// Waits at most `timeout` (`what` names the wait) for the status to record an action; the
/// status then.
async fn wait_action(
    client: &Client,
    namespace: &str,
    what: &str,
    timeout: Duration,
) -> InvoiceServiceStatus {
    eventually(timeout, what, || async {
        let status = service(client, namespace).await.status?;
        status.last_action.is_some().then_some(status)
    })
    .await
}

/// Events with `reason` on the InvoiceService (the touched pod gets a copy of each).
async fn events_with_reason(client: &Client, namespace: &str, reason: &str) -> Vec<Event> {
    service_events(client, namespace, None, reason)
        .await
        .expect("list events")
}

/// True when an Event with `reason` regards the pod `pod` (`kubectl describe pod` shows it).
async fn pod_has_event(client: &Client, namespace: &str, pod: &str, reason: &str) -> bool {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .any(|event| {
            event.reason.as_deref() == Some(reason)
                && event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
        })
}

/// A namespace with the CRD installed, `invoice-api` running with `replicas` ready pods and
/// its InvoiceService in `mode`.
async fn setup(prefix: &str, replicas: usize, mode: &str) -> (Client, TestNamespace, String) {
    let (client, namespace) = crd_and_namespace(prefix).await;
    let ns = namespace.name.clone();
    deploy_invoice_api(&client, &ns, replicas).await;
    apply_crash_loop_service(
        &client,
        &ns,
        &format!("mode: {mode}, cooldown: 30s, verifyWindow: 1m, ladder: [RestartPod]"),
    )
    .await;
    (client, namespace, ns)
}

#[tokio::test]
async fn crash_looping_pod_is_evicted_replaced_and_reported() {
    let (client, namespace, ns) = setup("e2e-crashloop", 3, "Enforce").await;
    let operator = OperatorProcess::start(&ns, &format!("{ns}-a"), &["--leader-election=false"]);

    let pods = ready_pods(&client, &ns, 3).await;
    let victim = pods[0].clone();
    let fault = Instant::now();
    crash_and_wait_evicted(&client, &ns, &victim).await;
    let detection_to_eviction = fault.elapsed();
    // The ReplicaSet replaces it; the other two pods were not touched.
    let after = ready_pods(&client, &ns, 3).await;
    assert!(!after.contains(&victim), "{after:?}");
    for untouched in &pods[1..] {
        assert!(
            after.contains(untouched),
            "{untouched} was touched: {after:?}"
        );
    }
    let recovered = fault.elapsed();

    let status = wait_action(
        &client,
        &ns,
        "status to record the action",
        Duration::from_secs(30),
    )
    .await;
    let last = status.last_action.expect("last action");
    assert_eq!(last.action, ActionKind::RestartPod);
    assert_eq!(last.target, format!("pod/{victim}"));
    assert!(last.reason.contains("CrashLoopBackOff"), "{}", last.reason);
    assert_eq!(status.history.len(), 1, "{:?}", status.history);
    let restarted = wait_service_event(&client, &ns, "PodRestarted", Duration::from_secs(30)).await;
    assert!(
        pod_has_event(&client, &ns, &victim, "PodRestarted").await,
        "no PodRestarted event regarding the evicted pod"
    );
    let note = restarted.note.unwrap_or_default();
    assert!(
        note.contains(&victim) && note.contains("CrashLoopBackOff"),
        "{note}"
    );
    println!(
        "fault -> eviction {:.1}s, fault -> recovered {:.1}s",
        detection_to_eviction.as_secs_f64(),
        recovered.as_secs_f64()
    );
    assert!(operator.log().contains("remediating"), "{}", operator.log());
    drop(operator);
    namespace.delete().await;
}

#[tokio::test]
async fn dry_run_acts_on_nothing_and_emits_would_remediate() {
    let (client, namespace, ns) = setup("e2e-dryrun", 3, "DryRun").await;
    let operator = OperatorProcess::start(&ns, &format!("{ns}-a"), &["--leader-election=false"]);
    let pods = ready_pods(&client, &ns, 3).await;
    crash(&client, &ns, &pods[0]).await;

    let would = wait_service_event(&client, &ns, "WouldRemediate", ACTION_TIMEOUT).await;
    let note = would.note.unwrap_or_default();
    assert!(
        note.contains("DryRun, nothing done") && note.contains(&pods[0]),
        "{note}"
    );
    // Give an Enforce operator ample time to have acted: nothing may have been evicted.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        pod_exists(&client, &ns, &pods[0]).await,
        "DryRun evicted a pod"
    );
    assert!(
        events_with_reason(&client, &ns, "PodRestarted")
            .await
            .is_empty()
    );
    let status = service(&client, &ns).await.status.expect("status");
    assert_eq!(
        status.last_action.map(|action| action.outcome),
        Some(invoice_operator::api::ActionOutcome::NotTaken)
    );
    drop(operator);
    namespace.delete().await;
}

#[tokio::test]
async fn unchanged_service_status_is_not_rewritten_every_interval() {
    let (client, namespace, ns) = setup("e2e-quiet", 2, "Enforce").await;
    let operator = OperatorProcess::start(&ns, &format!("{ns}-a"), &["--leader-election=false"]);
    let first = eventually(Duration::from_secs(60), "a reported status", || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let service = service(&client, &ns).await;
            service
                .status
                .as_ref()
                .is_some_and(|status| !status.conditions.is_empty())
                .then_some(service)
        }
    })
    .await;
    // Let the first few evaluations settle, then watch four 5 s intervals go by.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let settled = service(&client, &ns).await.resource_version();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let later = service(&client, &ns).await;
    assert_eq!(
        later.resource_version(),
        settled,
        "status was rewritten although nothing changed: {:?} -> {:?}",
        first.status,
        later.status
    );
    drop(operator);
    namespace.delete().await;
}

#[tokio::test]
async fn two_operator_replicas_never_both_act() {
    let (client, namespace, ns) = setup("e2e-leader", 3, "Enforce").await;
    let first = OperatorProcess::start(&ns, &format!("{ns}-a"), &[]);
    let second = OperatorProcess::start(&ns, &format!("{ns}-b"), &[]);
    let pods = ready_pods(&client, &ns, 3).await;
    crash_and_wait_evicted(&client, &ns, &pods[0]).await;
    // Both replicas had every chance to act during a few more intervals.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let restarted = events_with_reason(&client, &ns, "PodRestarted").await;
    let acted: Vec<bool> = [&first, &second]
        .iter()
        .map(|operator| operator.log().contains("remediating"))
        .collect();
    assert_eq!(
        acted.iter().filter(|acted| **acted).count(),
        1,
        "exactly one replica acts: {acted:?}"
    );
    assert_eq!(restarted.len(), 1, "one eviction event: {restarted:?}");
    let status = service(&client, &ns).await.status.expect("status");
    assert_eq!(status.history.len(), 1, "{:?}", status.history);
    drop((first, second));
    namespace.delete().await;
}

#[tokio::test]
async fn restarted_operator_resumes_from_status_without_repeating_the_action() {
    let (client, namespace, ns) = setup("e2e-resume", 3, "Enforce").await;
    let mut operator =
        OperatorProcess::start(&ns, &format!("{ns}-a"), &["--leader-election=false"]);
    let pods = ready_pods(&client, &ns, 3).await;
    crash(&client, &ns, &pods[0]).await;
    let status = wait_action(&client, &ns, "the action in status", ACTION_TIMEOUT).await;
    // Killed mid-remediation: the action is taken, its verification still pending.
    operator.kill();
    let taken_at = status.last_action.as_ref().expect("action").at.clone();
    let replacement = OperatorProcess::start(&ns, &format!("{ns}-b"), &["--leader-election=false"]);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let status = service(&client, &ns).await.status.expect("status");
    assert_eq!(
        status.history.len(),
        1,
        "the action was repeated: {:?}",
        status.history
    );
    assert_eq!(status.last_action.expect("action").at, taken_at);
    assert_eq!(
        events_with_reason(&client, &ns, "PodRestarted").await.len(),
        1
    );
    drop(replacement);
    namespace.delete().await;
}

/// The operator runs with the chart's RBAC for one namespace minus `create` on
/// `pods/eviction`, and a pod crash-loops. The startup review reports the missing permission
/// (metric, and `/readyz` stays ready: it can still observe and report); the eviction is tried
/// once, its 403 recorded as refused (`RemediationAllowed=False/Forbidden` naming the
/// permission and the fix, a Warning `RemediationRefused`), and after the cooldown the ladder
/// moves on to RolloutRestart, which the role allows. Before, the eviction was retried about
/// once a second as a reconcile error, and only a log line said why.
#[tokio::test]
async fn a_missing_eviction_permission_is_refused_once_and_the_ladder_moves_on() {
    use invoice_operator_e2e::{
        cluster_kube_version, http_request, kubeconfig_for_token, run_tool,
    };
    use serde::Deserialize as _;

    let (client, namespace, ns) = setup("e2e-forbidden", 3, "Enforce").await;
    apply_crash_loop_service(
        &client,
        &ns,
        "mode: Enforce, cooldown: 20s, verifyWindow: 30s, ladder: [RestartPod, RolloutRestart]",
    )
    .await;
    // The chart's own RBAC for a release watching this namespace, without the eviction rule.
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/invoice-operator");
    let watch = format!("watchNamespace={ns}");
    let kube_version = cluster_kube_version();
    let (rendered, stdout, stderr) = run_tool(
        "helm",
        &[
            "template",
            "trimmed",
            chart,
            "--kube-version",
            &kube_version,
            "--namespace",
            &ns,
            "--set",
            &watch,
            // Only the operator's own roles: not the ones for people.
            "--set",
            "rbac.aggregateClusterRoles=false",
        ],
        None,
    );
    assert!(rendered, "helm template failed: {stderr}");
    let mut kept = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&stdout) {
        let mut object = serde_yaml::Value::deserialize(document).expect("rendered YAML");
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        if !matches!(
            kind.as_str(),
            "ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
        ) {
            continue;
        }
        if let Some(rules) = object["rules"].as_sequence_mut() {
            rules.retain(|rule| {
                !rule["resources"]
                    .as_sequence()
                    .is_some_and(|resources| resources.iter().any(|r| r == "pods/eviction"))
            });
        }
        kept.push(serde_yaml::to_string(&object).expect("serialize"));
    }
    let manifest = kept.join("---\n");
    assert!(!manifest.contains("pods/eviction"), "{manifest}");
    let (applied, _, stderr) = run_tool("kubectl", &["apply", "-f", "-"], Some(&manifest));
    assert!(applied, "kubectl apply failed: {stderr}");
    let (created, token, stderr) = run_tool(
        "kubectl",
        &[
            "create",
            "token",
            "trimmed-invoice-operator",
            "--namespace",
            &ns,
            "--duration=1h",
        ],
        None,
    );
    assert!(created, "kubectl create token failed: {stderr}");
    let kubeconfig = std::env::temp_dir().join(format!("invoice-operator-{ns}.kubeconfig"));
    kubeconfig_for_token(&token, &kubeconfig);
    let operator = OperatorProcess::start_with_env(
        &format!("{ns}-trimmed"),
        &[
            format!("--namespace={ns}"),
            "--leader-election=false".to_owned(),
            "--evaluation-interval=5s".to_owned(),
        ],
        &[("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path"))],
    );
    let metric = |series: &str| operator.metric(series);
    eventually(
        Duration::from_secs(60),
        "the missing permission reported",
        || async {
            (metric(r#"invoiceops_permission_missing{verb="create",resource="pods/eviction"}"#)
                == Some(1.0))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(r#"invoiceops_permission_missing{verb="patch",resource="deployments"}"#),
        Some(0.0)
    );
    // Ready once its caches have synced, with the permission still missing.
    eventually(Duration::from_secs(30), "/readyz to answer 200", || async {
        let (ready, _) = http_request(&operator.metrics_address, "GET", "/readyz", "");
        (ready == 200).then_some(())
    })
    .await;

    let victim = ready_pods(&client, &ns, 3).await[0].clone();
    crash(&client, &ns, &victim).await;
    let fault = Instant::now();
    let refused = wait_service_event(&client, &ns, "RemediationRefused", ACTION_TIMEOUT).await;
    let note = refused.note.unwrap_or_default();
    assert_eq!(refused.type_.as_deref(), Some("Warning"));
    assert!(
        note.contains("pods/eviction") && note.contains("rbac.create=true"),
        "{note}"
    );
    let status = service(&client, &ns).await.status.expect("status");
    let allowed = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == "RemediationAllowed")
        .expect("RemediationAllowed");
    assert_eq!(
        (allowed.status.as_str(), allowed.reason.as_str()),
        ("False", "Forbidden"),
        "{allowed:?}"
    );
    assert!(
        allowed.message.contains("trimmed-invoice-operator"),
        "{allowed:?}"
    );
    wait_service_event(&client, &ns, "RolloutRestarted", ACTION_TIMEOUT).await;
    let to_next_rung = fault.elapsed();
    assert_eq!(
        metric(
            r#"invoiceops_remediations_total{action="RestartPod",result="refused",mode="Enforce"}"#
        ),
        Some(1.0),
        "the forbidden eviction was tried again\n{}",
        operator.log()
    );
    let errors = operator.log().matches("reconcile failed").count();
    assert!(
        errors <= 2,
        "{errors} failed reconciles\n{}",
        operator.log()
    );
    println!(
        "missing permission: reported at start, eviction refused once, RolloutRestart {:.1}s \
         after the crash, {errors} failed reconciles",
        to_next_rung.as_secs_f64()
    );
    drop(operator);
    let _ = std::fs::remove_file(&kubeconfig);
    for (kind, name) in [
        ("clusterrole", format!("trimmed-invoice-operator-{ns}")),
        (
            "clusterrolebinding",
            format!("trimmed-invoice-operator-{ns}"),
        ),
    ] {
        let _ = run_tool(
            "kubectl",
            &["delete", kind, &name, "--ignore-not-found"],
            None,
        );
    }
    namespace.delete().await;
}
