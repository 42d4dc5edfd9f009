//! The Helm chart for real, on the real node `real-1` (kubelet + containerd + runc): the
//! operator image is built here from the debug binary the e2e build made (buildah, from the
//! shipped Dockerfile, `tests/image/build.sh`), run once standalone with runc as non-root on a
//! read-only root (`tests/image/check.sh`), imported into the node's containerd, and the chart
//! installed with it (nodeSelector `type=real`, toleration of the node's taint, the restricted
//! Pod Security Standard enforced on the release namespace). Then: both replicas start as
//! containers (uid 65532, read-only root) and pass their probes; one holds the Lease; the
//! operator talks to the API server with its in-cluster configuration (the ServiceAccount
//! token kubelet mounts — the image has no kubeconfig) and heals a crash-looping pod on the kwok
//! nodes; deleting the leader pod hands the Lease to the other replica within the lease
//! duration and the action is not repeated; `helm upgrade` with a changed value rolls both pods;
//! `helm uninstall` removes them and keeps the CRD and the InvoiceService.
//!
//! Pods on the real node reach the API server and Prometheus through the harness' forwarders
//! on the bridge's address (tests/cluster/real-node.sh, "The API server for pods"):
//! `KUBERNETES_SERVICE_HOST`/`_PORT` come from the chart's `extraEnv`.
//!
//! Needs a cluster started with the real node (`CLUSTER_REAL_NODE=1`, the default), root
//! (buildah, runc, the node's pod logs and /proc), and `cargo build --workspace` (make test).
//! With `CLUSTER_REAL_NODE=0` the test says loudly that it did not run.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use invoice_operator::api::{ActionKind, InvoiceService};
use invoice_operator_e2e::{
    TestNamespace, adopt_crd, apply_crash_loop_service, client, crash_and_wait_evicted,
    deploy_invoice_api, disown_crd, eventually, install_crd, is_ready, operator_binary,
    real_node::{self, RealNode, ok},
    run_tool, service_events,
};
use k8s_openapi::{
    api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams},
};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/invoice-operator");
const CRD_NAME: &str = "invoiceservices.invoiceops.dev";
/// The release name; it contains the chart name, so the objects are called `invoice-operator`
/// (the Deployment, the ServiceAccount, the Lease).
const RELEASE: &str = "invoice-operator";
/// The name the locally built image gets (its tag is derived from the binary).
const IMAGE_REPOSITORY: &str = "localhost/invoiceops/invoice-operator";
const REAL_NODE: &str = real_node::NAME;
const REAL_NODE_TAINT: &str = real_node::TAINT;
/// `helm install/upgrade --wait`: real containers on a shared 2-core machine.
const HELM_TIMEOUT: &str = "180s";
/// Time for pods on the real node to start or go (containers, probes, grace periods).
const POD_TIMEOUT: Duration = Duration::from_secs(180);
/// The operator's lease duration (invoice_operator::leader::LEASE_DURATION_SECONDS).
const LEASE_DURATION: Duration =
    Duration::from_secs(invoice_operator::leader::LEASE_DURATION_SECONDS);

/// What the hand-over may take beyond the lease duration: kube-lease-manager's random wait of
/// up to 1 s before taking an expired Lease, and this test's 0.5 s polling.
const HAND_OVER_SLACK: Duration = Duration::from_millis(2000);

fn say(line: &str) {
    real_node::say("chart_real_node", line);
}

/// The operator image of the binary this run built.
fn build_and_import_image() -> String {
    let version = format!("invoice-operator {}", env!("CARGO_PKG_VERSION"));
    real_node::local_image(
        "chart_real_node",
        "Dockerfile",
        &operator_binary(),
        IMAGE_REPOSITORY,
        &[&version, "--version"],
    )
}

/// The chart's values for the real node: the local image (never pulled), the node selected
/// and its taint tolerated, the API server and Prometheus through the bridge's forwarders,
/// `work` watched, 5 s evaluations.
fn values(node: &RealNode, image: &str, work: &str) -> String {
    let (repository, tag) = image.rsplit_once(':').expect("image has a tag");
    format!(
        r#"
image: {{repository: "{repository}", tag: "{tag}", pullPolicy: Never}}
nodeSelector: {{type: real}}
tolerations:
  - {{key: "{REAL_NODE_TAINT}", operator: Equal, value: "true", effect: NoSchedule}}
watchNamespace: "{work}"
prometheus: {{url: "{prometheus}"}}
evaluation: {{interval: 5s}}
extraEnv:
  - {{name: KUBERNETES_SERVICE_HOST, value: "{host}"}}
  - {{name: KUBERNETES_SERVICE_PORT, value: "{port}"}}
"#,
        prometheus = node.prometheus_url,
        host = node.api_host,
        port = node.api_port,
    )
}

fn enforce_restricted(namespace: &str) {
    ok(
        "kubectl",
        &[
            "label",
            "namespace",
            namespace,
            "pod-security.kubernetes.io/enforce=restricted",
            "--overwrite",
        ],
    );
}

/// The real node cordoned (no new pods scheduled there) until dropped — also when the test
/// fails, so later tests find the node schedulable.
struct Cordoned;

impl Cordoned {
    fn new() -> Self {
        ok("kubectl", &["cordon", REAL_NODE]);
        Self
    }
}

impl Drop for Cordoned {
    fn drop(&mut self) {
        let (uncordoned, _, stderr) = run_tool("kubectl", &["uncordon", REAL_NODE], None);
        if !uncordoned {
            eprintln!("kubectl uncordon {REAL_NODE} failed: {stderr}");
        }
    }
}

/// The operator's pods in `namespace`, not being deleted.
async fn operator_pods(client: &Client, namespace: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .expect("list the operator's pods")
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Waits until exactly two operator pods exist, both Ready, none of `not` (names); their names.
async fn two_ready_pods(client: &Client, namespace: &str, not: &[String]) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    eventually(POD_TIMEOUT, "two ready operator pods", || {
        let pods = pods.clone();
        async move {
            let all = pods
                .list(
                    &ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")),
                )
                .await
                .ok()?
                .items;
            let mut names: Vec<String> = all.iter().map(ResourceExt::name_any).collect();
            names.sort();
            (all.len() == 2
                && all.iter().all(is_ready)
                && names.iter().all(|name| !not.contains(name)))
            .then_some(names)
        }
    })
    .await
}

/// The Lease's holder, if any.
async fn lease_holder(client: &Client, namespace: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(RELEASE)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|holder| !holder.is_empty())
}

/// What kubelet logged of `pod`'s operator container (the CRI log files under the node's pod
/// log folder; `kubectl logs` would need the API server to reach kubelet on the node's
/// address, and kubelet listens on loopback).
fn pod_log(node: &RealNode, namespace: &str, pod: &str) -> String {
    let prefix = format!("{namespace}_{pod}_");
    let mut text = String::new();
    for entry in std::fs::read_dir(&node.pod_logs)
        .into_iter()
        .flatten()
        .flatten()
    {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(entry.path().join("operator"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|file| file.path())
            .collect();
        files.sort();
        for file in files {
            text.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
    }
    text
}

/// The operator's JSON log records in a CRI log (`<time> <stream> <tag> <record>` per line).
fn records(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| line.splitn(4, ' ').nth(3))
        .filter_map(|record| serde_json::from_str(record).ok())
        .collect()
}

fn message(record: &serde_json::Value) -> &str {
    record["message"].as_str().unwrap_or_default()
}

/// The process of the operator container of the pod with `uid`, found on this host through
/// its cgroup (kubelet's cgroupfs driver names the pod's folder `pod<uid>`): its `Uid:` line
/// and whether its root mount is read-only.
fn container_process(pod_uid: &str) -> Option<(String, bool)> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = entry.path();
        let Ok(cgroup) = std::fs::read_to_string(path.join("cgroup")) else {
            continue;
        };
        if !cgroup.contains(&format!("pod{pod_uid}")) {
            continue;
        }
        let exe = std::fs::read_link(path.join("exe")).unwrap_or_default();
        if !exe.to_string_lossy().ends_with("/invoice-operator") {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).ok()?;
        let uid = status
            .lines()
            .find(|line| line.starts_with("Uid:"))?
            .to_owned();
        let mounts = std::fs::read_to_string(path.join("mountinfo")).ok()?;
        let root_read_only = mounts
            .lines()
            .rfind(|line| line.split(' ').nth(4) == Some("/"))
            .and_then(|line| line.split(' ').nth(5))
            .is_some_and(|options| options.split(',').any(|option| option == "ro"));
        return Some((uid, root_read_only));
    }
    None
}

/// Both operator pods run on the real node from `image`, as uid 65532 on a read-only root,
/// Ready (readiness probe) without restarts (liveness probe), with the ServiceAccount token
/// mounted and no kubeconfig anywhere.
async fn assert_pods_run_for_real(client: &Client, namespace: &str, image: &str) {
    let pods = operator_pods(client, namespace).await;
    assert_eq!(pods.len(), 2, "{pods:?}");
    for pod in &pods {
        let name = pod.name_any();
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(REAL_NODE), "{name}");
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some(image), "{name}");
        let env = container.env.as_deref().unwrap_or_default();
        assert!(
            env.iter().all(|variable| variable.name != "KUBECONFIG"),
            "{name} has a KUBECONFIG"
        );
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        assert!(
            mounts
                .iter()
                .any(|mount| mount.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount"),
            "{name}: no ServiceAccount token mounted: {mounts:?}"
        );
        let status = pod.status.as_ref().expect("status");
        let container_status = &status.container_statuses.as_deref().expect("statuses")[0];
        assert!(container_status.ready, "{name} not ready");
        assert_eq!(container_status.restart_count, 0, "{name} restarted");
        assert!(
            container_status.image.contains(IMAGE_REPOSITORY),
            "{name} runs {}",
            container_status.image
        );
        let uid = pod.metadata.uid.as_deref().expect("uid");
        let (uid_line, read_only) = container_process(uid)
            .unwrap_or_else(|| panic!("no invoice-operator process in pod {name}'s cgroup"));
        assert!(
            uid_line.split_whitespace().skip(1).all(|id| id == "65532"),
            "{name}: {uid_line}"
        );
        assert!(read_only, "{name}: the root file system is writable");
    }
}

#[tokio::test]
async fn chart_runs_on_the_real_node_heals_hands_over_upgrades_and_uninstalls() {
    let Some(node) = real_node::real_node(
        "chart_real_node",
        "the Helm chart on the real node (pods, image, probes, in-cluster config, leader hand-over)",
    ) else {
        return;
    };
    let started = Instant::now();
    let image = build_and_import_image();
    let client = client().await;
    install_crd(&client).await;
    let release = TestNamespace::create(&client, "e2e-chart-real").await;
    let workloads = TestNamespace::create(&client, "e2e-chart-real-work").await;
    let (ns, work) = (release.name.clone(), workloads.name.clone());
    enforce_restricted(&ns);
    adopt_crd(CRD_NAME, RELEASE, &ns);
    let values_path = std::env::temp_dir().join(format!("invoice-operator-{ns}-values.yaml"));
    std::fs::write(&values_path, values(&node, &image, &work)).expect("write values");
    let values_path = values_path.to_str().expect("utf-8 path").to_owned();

    // Install: two real containers, Ready, one of them holding the Lease.
    let install_started = Instant::now();
    ok(
        "helm",
        &[
            "install",
            RELEASE,
            CHART,
            "--namespace",
            &ns,
            "-f",
            &values_path,
            "--wait",
            "--timeout",
            HELM_TIMEOUT,
        ],
    );
    let first_pods = two_ready_pods(&client, &ns, &[]).await;
    say(&format!(
        "helm install: 2 pods Ready in {:.1?}",
        install_started.elapsed()
    ));
    assert_pods_run_for_real(&client, &ns, &image).await;
    let leader = eventually(Duration::from_secs(60), "a Lease holder", || {
        lease_holder(&client, &ns)
    })
    .await;
    assert!(first_pods.contains(&leader), "{leader} of {first_pods:?}");
    let follower = first_pods
        .iter()
        .find(|pod| **pod != leader)
        .expect("two pods")
        .clone();

    // Heal: a crash-looping pod on the kwok nodes is evicted by the leader, through the
    // in-cluster configuration.
    let pods_before = deploy_invoice_api(&client, &work, 3).await;
    apply_crash_loop_service(
        &client,
        &work,
        "mode: Enforce, cooldown: 5m, verifyWindow: 1m, ladder: [RestartPod]",
    )
    .await;
    let victim = pods_before[0].clone();
    crash_and_wait_evicted(&client, &work, &victim).await;
    let services: Api<InvoiceService> = Api::namespaced(client.clone(), &work);
    let taken = eventually(Duration::from_secs(30), "the action in status", || {
        let services = services.clone();
        async move { services.get("invoice-api").await.ok()?.status?.last_action }
    })
    .await;
    assert_eq!(taken.action, ActionKind::RestartPod);
    assert_eq!(taken.target, format!("pod/{victim}"));
    let restarted = eventually(Duration::from_secs(30), "a PodRestarted event", || async {
        let events = service_events(&client, &work, Some("invoice-api"), "PodRestarted")
            .await
            .ok()?;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(
        restarted[0].reporting_instance.as_deref(),
        Some(leader.as_str()),
        "the event was not reported by the leader pod"
    );
    let leader_log = pod_log(&node, &ns, &leader);
    let leader_records = records(&leader_log);
    assert!(
        leader_records
            .iter()
            .any(|record| message(record) == "remediating"),
        "the leader's log:\n{leader_log}"
    );
    assert!(
        !leader_log.to_lowercase().contains("forbidden"),
        "{leader_log}"
    );

    // Hand-over: the leader pod goes; the follower holds the Lease within the lease duration
    // and does not take the action again. The node is cordoned meanwhile, so the pod the
    // Deployment creates in the leader's place waits (else it could race the follower for the
    // expired Lease, and win).
    let cordoned = Cordoned::new();
    let deleted = Instant::now();
    Api::<Pod>::namespaced(client.clone(), &ns)
        .delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leader pod");
    let new_leader = eventually(
        LEASE_DURATION + Duration::from_secs(30),
        "another Lease holder",
        || async {
            lease_holder(&client, &ns)
                .await
                .filter(|holder| *holder != leader)
        },
    )
    .await;
    let hand_over = deleted.elapsed();
    drop(cordoned);
    say(&format!(
        "leader {leader} deleted: {new_leader} holds the Lease after {hand_over:.1?}"
    ));
    assert_eq!(
        new_leader, follower,
        "the Lease went to a new pod, not the follower"
    );
    // The follower sleeps until the Lease it saw expires (at most the lease duration after
    // the leader's last renewal, which came before the deletion), then takes it; the lease
    // library waits up to 1 s more against collisions, and this test polls every 0.5 s.
    assert!(
        hand_over <= LEASE_DURATION + HAND_OVER_SLACK,
        "the hand-over took {hand_over:?}, longer than the lease ({LEASE_DURATION:?}) + \
         {HAND_OVER_SLACK:?}"
    );
    // The new leader runs a few evaluations of the healed service...
    eventually(
        Duration::from_secs(60),
        "three fleet cycles of the new leader",
        || async {
            let records = records(&pod_log(&node, &ns, &follower));
            let became = records.iter().position(|record| {
                message(record) == "leadership" && record["leader"] == serde_json::json!(true)
            })?;
            (records[became..]
                .iter()
                .filter(|record| message(record) == "fleet cycle complete")
                .count()
                >= 3)
                .then_some(())
        },
    )
    .await;
    // ...and repeats nothing: the same single action in status, one event, no eviction.
    let status = services
        .get("invoice-api")
        .await
        .expect("the service")
        .status
        .expect("status");
    assert_eq!(status.history.len(), 1, "{:?}", status.history);
    assert_eq!(status.last_action.expect("action").at, taken.at);
    let restarted = service_events(&client, &work, Some("invoice-api"), "PodRestarted")
        .await
        .expect("events");
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert!(restarted[0].series.is_none(), "{restarted:?}");
    let follower_log = pod_log(&node, &ns, &follower);
    assert!(
        !records(&follower_log)
            .iter()
            .any(|record| message(record) == "remediating"),
        "the new leader acted again:\n{follower_log}"
    );
    let work_pods: Vec<String> = Api::<Pod>::namespaced(client.clone(), &work)
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    for untouched in &pods_before[1..] {
        assert!(
            work_pods.contains(untouched),
            "{untouched} went: {work_pods:?}"
        );
    }
    // The Deployment replaced the deleted pod on the real node.
    let second_pods = two_ready_pods(&client, &ns, std::slice::from_ref(&leader)).await;

    // helm upgrade with a changed value rolls both pods.
    let upgrade_started = Instant::now();
    ok(
        "helm",
        &[
            "upgrade",
            RELEASE,
            CHART,
            "--namespace",
            &ns,
            "--reuse-values",
            "--set",
            "logLevel=debug",
            "--wait",
            "--timeout",
            HELM_TIMEOUT,
        ],
    );
    let rolled = two_ready_pods(&client, &ns, &second_pods).await;
    say(&format!(
        "helm upgrade: {second_pods:?} -> {rolled:?} in {:.1?}",
        upgrade_started.elapsed()
    ));
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get(RELEASE)
        .await
        .expect("the Deployment");
    let rust_log = deployment.spec.template.spec.expect("pod spec").containers[0]
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|variable| variable.name == "RUST_LOG")
        .and_then(|variable| variable.value.clone());
    assert_eq!(rust_log.as_deref(), Some("debug"));
    assert_pods_run_for_real(&client, &ns, &image).await;
    eventually(
        Duration::from_secs(60),
        "a rolled pod holding the Lease",
        || async {
            lease_holder(&client, &ns)
                .await
                .filter(|holder| rolled.contains(holder))
        },
    )
    .await;

    // helm uninstall: the pods go, the CRD and the InvoiceService stay.
    let uninstalled = ok(
        "helm",
        &["uninstall", RELEASE, "--namespace", &ns, "--wait"],
    );
    assert!(
        uninstalled.contains("kept due to the resource policy"),
        "{uninstalled}"
    );
    eventually(POD_TIMEOUT, "the operator's pods gone", || async {
        let left = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt(RELEASE)
            .await
            .expect("get")
            .is_none(),
        "the Deployment survived uninstall"
    );
    Api::<CustomResourceDefinition>::all(client.clone())
        .get(CRD_NAME)
        .await
        .expect("the CRD survives uninstall");
    services
        .get("invoice-api")
        .await
        .expect("the InvoiceService survives uninstall");
    disown_crd(CRD_NAME);
    let _ = std::fs::remove_file(Path::new(&values_path));
    workloads.delete().await;
    release.delete().await;
    say(&format!(
        "the chart on the real node: {:.1?} in all",
        started.elapsed()
    ));
}
