//! Shared harness for the end-to-end tests: a client for the local control plane started by
//! `tests/cluster/cluster.sh` (via `make test`), throwaway namespaces, and CRD installation.
//! Everything here does IO against a real API server.

use std::{io::Write as _, time::Duration};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::wait::{await_condition, conditions},
};

use invoice_operator::{FIELD_MANAGER, api::InvoiceService};

pub mod argo;
pub mod keda;
pub mod real_node;

/// How long a test waits for the API server to settle something (CRD established,
/// namespace created). Generous: the control plane shares two cores with the test build.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for the local cluster. Panics with the fix when the cluster is not there:
/// these tests are meant to run through `make test`, which starts it.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the end-to-end tests with `make test` \
         (or `make cluster-up` and `source .cluster/env`)"
    );
    Client::try_default()
        .await
        .expect("failed to build a client from KUBECONFIG")
}

/// The local cluster's Kubernetes version (`k8s.io/kubernetes` in tests/cluster/tools/k8s/go.mod,
/// as env.sh reads it), for `helm template --kube-version`: without it a `go install`ed helm
/// renders for Kubernetes 1.20 (release builds set the default by ldflags), which the chart's
/// kubeVersion refuses.
pub fn cluster_kube_version() -> String {
    include_str!("../cluster/tools/k8s/go.mod")
        .lines()
        .find_map(|line| line.strip_prefix("require k8s.io/kubernetes "))
        .expect("k8s.io/kubernetes in tests/cluster/tools/k8s/go.mod")
        .trim()
        .to_owned()
}

/// Installs (or updates) the InvoiceService CRD from the code and waits until it is served.
pub async fn install_crd(client: &Client) {
    apply_crd(client, &InvoiceService::crd(), FIELD_MANAGER).await;
}

/// Applies `crd` (server-side, as `manager`; idempotent across tests) and waits until it is
/// served.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition, manager: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|error| panic!("failed to apply the CRD {name}: {error}"));
    tokio::time::timeout(
        SETTLE_TIMEOUT,
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .unwrap_or_else(|_| panic!("CRD {name} not established in time"))
    .expect("failed to watch the CRD");
}

/// A namespace of its own for one test, named after the test with a random suffix, deleted
/// by [`TestNamespace::delete`] — or, when the test panics (or returns) before that, on drop
/// (see the [`Drop`] impl), so a failed run leaves no namespace behind.
#[allow(missing_debug_implementations)] // kube::Client has no Debug
pub struct TestNamespace {
    /// The namespace name.
    pub name: String,
    client: Client,
    /// True once [`TestNamespace::delete`] has sent the deletion: nothing left for the drop.
    deleted: bool,
}

impl TestNamespace {
    /// Creates a namespace named `{prefix}-{8 random hex digits}`.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", random_suffix());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"invoiceops.dev/e2e": "true"}}
        }))
        .expect("namespace literal is valid");
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|error| panic!("failed to create namespace {name}: {error}"));
        Self {
            name,
            client: client.clone(),
            deleted: false,
        }
    }

    /// Deletes the namespace and everything in it. The operator a test ran is gone by then, so
    /// the deletion finalizer it put on the namespace's InvoiceServices is removed first (or
    /// the namespace would stay Terminating until the cluster stops).
    pub async fn delete(mut self) {
        release_and_delete(&self.client, &self.name).await;
        self.deleted = true;
    }
}

impl Drop for TestNamespace {
    /// A test that panics never reaches its `delete().await` (nor does one that returns
    /// early): the namespace is deleted here instead, with the same finalizer release. Drop
    /// cannot await, and the test's runtime is the thread being unwound or blocked here
    /// (kube's client needs it to make progress), so the deletion runs on a thread of its own,
    /// with its own runtime and client, and is waited for (at most [`SETTLE_TIMEOUT`]).
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let why = if std::thread::panicking() {
            "test panicked"
        } else {
            "test ended without deleting it"
        };
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| format!("no runtime: {error}"))?;
            runtime.block_on(async {
                let client = Client::try_default()
                    .await
                    .map_err(|error| format!("no client: {error}"))?;
                tokio::time::timeout(SETTLE_TIMEOUT, release_and_delete(&client, &name))
                    .await
                    .map_err(|_| format!("not deleted within {SETTLE_TIMEOUT:?}"))
            })
        });
        // Never panic here: a panic while unwinding aborts the test binary.
        match cleanup.join() {
            Ok(Ok(())) => eprintln!("{why}: deleted namespace {}", self.name),
            Ok(Err(error)) => eprintln!("{why}: failed to delete namespace {}: {error}", self.name),
            Err(_) => eprintln!("{why}: deleting namespace {} panicked too", self.name),
        }
    }
}

/// Releases the InvoiceServices' finalizers in `namespace`, then deletes it (in the
/// background; NotFound and other errors ignored: a test may already have removed it).
async fn release_and_delete(client: &Client, namespace: &str) {
    let services: Api<InvoiceService> = Api::namespaced(client.clone(), namespace);
    if let Ok(list) = services.list(&Default::default()).await {
        let release = serde_json::json!({"metadata": {"finalizers": null}});
        for service in list.items {
            let _ = services
                .patch(
                    &service.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&release),
                )
                .await;
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .delete(namespace, &DeleteParams::background())
        .await;
}

/// Eight random lowercase hex digits, for names no other test or run shares (namespaces, and
/// the label values of the series a test exports): std's `RandomState` is seeded from the
/// operating system's randomness (and differs per instance), and the clock and process id are
/// mixed in. Two tests started in the same millisecond (in one process or two) do not collide,
/// as they could with the clock alone.
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::random_suffix;

    #[test]
    fn suffixes_are_dns_label_safe_and_differ() {
        let suffixes: std::collections::HashSet<_> = (0..100).map(|_| random_suffix()).collect();
        assert_eq!(suffixes.len(), 100);
        for suffix in suffixes {
            assert_eq!(suffix.len(), 8, "{suffix}");
            assert!(
                suffix
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "{suffix}"
            );
        }
    }
}

/// A binary of the workspace built next to this test binary (`cargo build --workspace`
/// first; `make test` does), or in `E2E_BIN_DIR` when that is set (binaries copied aside, so
/// that another checkout building into the same target directory cannot swap them mid-run).
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = std::env::var_os("E2E_BIN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            test_binary
                .parent()
                .and_then(std::path::Path::parent)
                .expect("test binary lives in target/<profile>/deps")
                .to_owned()
        });
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --workspace` (make test does)",
        binary.display()
    );
    binary
}

/// The operator binary.
pub fn operator_binary() -> std::path::PathBuf {
    workspace_binary("invoice-operator")
}

/// A free loopback port for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// The operator running as a real process against the local cluster, watching one namespace.
/// Killed when dropped.
#[derive(Debug)]
pub struct OperatorProcess {
    child: std::process::Child,
    /// Address of its /metrics server.
    pub metrics_address: String,
    /// Where its log goes.
    pub log_path: std::path::PathBuf,
}

impl OperatorProcess {
    /// Starts the operator for `namespace` with extra flags (e.g. `--evaluation-interval=5s`).
    pub fn start(namespace: &str, identity: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            format!("--namespace={namespace}"),
            format!("--lease-namespace={namespace}"),
            "--evaluation-interval=5s".to_owned(),
        ];
        args.extend(extra.iter().map(|flag| (*flag).to_owned()));
        Self::start_with_env(identity, &args, &[])
    }

    /// The operator's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The exit status once the process has ended by itself (e.g. at a fail point); `None`
    /// while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process (as a crash would).
    pub fn kill(&mut self) {
        stop(&mut self.child, None);
    }

    /// The value of its metric `series` (labels included), if it exports it now.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = http_request(&self.metrics_address, "GET", "/metrics", "");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every half second until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Applies a YAML manifest (one object) in `namespace` by server-side apply.
pub async fn apply_yaml(client: &Client, namespace: &str, yaml: &str) {
    use kube::{
        api::DynamicObject,
        discovery::{ApiCapabilities, ApiResource, Discovery, Scope},
    };
    let object: DynamicObject = serde_yaml::from_str(yaml).expect("valid manifest");
    let types = object
        .types
        .clone()
        .expect("manifest has apiVersion and kind");
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery works");
    let (group, version) = types
        .api_version
        .split_once('/')
        .unwrap_or(("", types.api_version.as_str()));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
    let (resource, capabilities): (ApiResource, ApiCapabilities) =
        discovery.resolve_gvk(&gvk).expect("kind is served");
    let api: Api<DynamicObject> = if capabilities.scope == Scope::Namespaced {
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    api.patch(
        &object.name_any(),
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|error| panic!("failed to apply {}: {error}", object.name_any()));
}

impl OperatorProcess {
    /// Starts the operator with exactly `args` (plus its metrics address and text logs) and
    /// extra environment variables — e.g. `KUBECONFIG` pointing at another identity's
    /// kubeconfig, so a test runs the operator with the permissions a chart grants.
    pub fn start_with_env(identity: &str, args: &[String], env: &[(&str, &str)]) -> Self {
        let metrics_address = format!("127.0.0.1:{}", free_port());
        let log_path = std::env::temp_dir().join(format!("invoice-operator-{identity}.log"));
        let log = std::fs::File::create(&log_path).expect("operator log file");
        let child = std::process::Command::new(operator_binary())
            .args([
                format!("--identity={identity}"),
                format!("--metrics-address={metrics_address}"),
                "--log-format=text".to_owned(),
            ])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,invoice_operator=debug".into()),
            )
            .envs(env.iter().copied())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("failed to start the operator");
        Self {
            child,
            metrics_address,
            log_path,
        }
    }
}

/// The fleet simulator binary built next to this test binary (`cargo build --workspace` first).
pub fn fleet_sim_binary() -> std::path::PathBuf {
    let operator = operator_binary();
    let binary = operator.with_file_name("fleet-sim");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --workspace` (make test does)",
        binary.display()
    );
    binary
}

/// The fleet simulator (`tests/fleet-sim`) running as a real process for one namespace,
/// registered with the cluster's Prometheus. Killed, and its target file removed, when dropped.
#[derive(Debug)]
pub struct FleetSimProcess {
    child: std::process::Child,
    /// Address of its /metrics and fault API.
    pub address: String,
    /// Where its timeline goes.
    pub log_path: std::path::PathBuf,
    target_file: Option<std::path::PathBuf>,
}

impl FleetSimProcess {
    /// Starts the simulator for `namespace` with extra flags (e.g. `--request-rate=20`).
    pub fn start(namespace: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let log_path = std::env::temp_dir().join(format!("fleet-sim-{namespace}.log"));
        let log = std::fs::File::create(&log_path).expect("fleet-sim log file");
        let child = std::process::Command::new(fleet_sim_binary())
            .args([
                &format!("--namespace={namespace}"),
                &format!("--listen={address}"),
                &format!("--job=fleet-sim-{namespace}"),
            ])
            .args(extra)
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("failed to start fleet-sim");
        let target_file = std::env::var_os("PROMETHEUS_TARGETS_DIR").map(|directory| {
            std::path::PathBuf::from(directory).join(format!("fleet-sim-{port}.json"))
        });
        Self {
            child,
            address,
            log_path,
            target_file,
        }
    }

    /// The timeline so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Injects a fault (`{"namespace":..,"kind":..}`, see tests/fleet-sim/src/faults.rs).
    pub fn inject(&self, fault: &serde_json::Value) {
        let (status, body) = http_request(&self.address, "POST", "/faults", &fault.to_string());
        assert_eq!(status, 201, "fault refused: {body}");
    }

    /// Clears every fault.
    pub fn clear(&self) {
        let (status, body) = http_request(&self.address, "DELETE", "/faults", "");
        assert_eq!(status, 200, "clearing faults failed: {body}");
    }

    /// The metrics it serves now.
    pub fn metrics(&self) -> String {
        http_request(&self.address, "GET", "/metrics", "").1
    }
}

impl Drop for FleetSimProcess {
    fn drop(&mut self) {
        stop(&mut self.child, self.target_file.as_deref());
    }
}

/// A loopback `address` scraped by the cluster's Prometheus as `job` (a file_sd target file
/// in `PROMETHEUS_TARGETS_DIR`, picked up within 5 s); removed when dropped.
#[derive(Debug)]
pub struct ScrapeTarget {
    path: std::path::PathBuf,
}

impl ScrapeTarget {
    /// Registers `address` (`host:port`) under `job`.
    pub fn register(address: &str, job: &str) -> Self {
        Self::register_all(&[address.to_owned()], job)
    }

    /// Registers every one of `addresses` under `job` (one target file).
    pub fn register_all(addresses: &[String], job: &str) -> Self {
        let directory =
            std::path::PathBuf::from(std::env::var_os("PROMETHEUS_TARGETS_DIR").expect(
                "PROMETHEUS_TARGETS_DIR is not set: run the end-to-end tests with `make test` \
             (or `make cluster-up` and `source .cluster/env`)",
            ));
        let path = directory.join(format!("{job}.json"));
        let temporary = directory.join(format!("{job}.json.tmp"));
        let targets = serde_json::json!([{"targets": addresses, "labels": {"job": job}}]);
        // Written aside and renamed, so Prometheus never reads half a file.
        std::fs::write(&temporary, targets.to_string()).expect("failed to write the target file");
        std::fs::rename(&temporary, &path).expect("failed to move the target file in place");
        Self { path }
    }
}

impl Drop for ScrapeTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Kills `child`, reaps it, and removes the file it left behind (a scrape target), if any;
/// errors ignored (it may have ended already).
pub fn stop(child: &mut std::process::Child, leftover: Option<&std::path::Path>) {
    let _ = child.kill();
    let _ = child.wait();
    if let Some(path) = leftover {
        let _ = std::fs::remove_file(path);
    }
}

/// A minimal blocking HTTP/1.1 request to a loopback server: (status, body). Retries the
/// connection for a few seconds while the server starts.
pub fn http_request(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match std::net::TcpStream::connect(address) {
            Ok(stream) => break stream,
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cannot reach {address}: {error}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    exchange(&mut stream, address, method, path, body).expect("send the request, read the answer")
}

/// Sends one HTTP/1.1 request on `stream` (`Connection: close`) and reads the whole answer:
/// (status, body).
pub fn exchange(
    stream: &mut std::net::TcpStream,
    address: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// How long the shared helpers wait for pods to settle: generous, the control plane shares two
/// cores with the test build and the operators under test.
pub const PODS_TIMEOUT: Duration = Duration::from_secs(150);

/// True when the pod is Ready and not being deleted.
pub fn is_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let conditions = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_deref());
    pod.metadata.deletion_timestamp.is_none()
        && ready_in(conditions, |condition| {
            (&condition.type_, &condition.status)
        })
}

/// True when the node's `Ready` condition is `True`.
pub fn node_is_ready(node: &k8s_openapi::api::core::v1::Node) -> bool {
    let conditions = node
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_deref());
    ready_in(conditions, |condition| {
        (&condition.type_, &condition.status)
    })
}

/// True when one of `conditions`, read as `(type, status)` by `fields`, is `Ready`/`True`.
pub fn ready_in<C>(conditions: Option<&[C]>, fields: impl Fn(&C) -> (&str, &str)) -> bool {
    conditions.is_some_and(|conditions| {
        conditions
            .iter()
            .map(fields)
            .any(|(kind, status)| kind == "Ready" && status == "True")
    })
}

/// Waits until exactly `count` pods exist in `namespace` and all are Ready; their names, sorted.
pub async fn ready_pods(client: &Client, namespace: &str, count: usize) -> Vec<String> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    eventually(PODS_TIMEOUT, &format!("{count} ready pods"), || {
        let pods = pods.clone();
        async move {
            let all = pods
                .list(&kube::api::ListParams::default())
                .await
                .ok()?
                .items;
            let mut ready: Vec<String> = all
                .iter()
                .filter(|pod| is_ready(pod))
                .map(ResourceExt::name_any)
                .collect();
            ready.sort();
            (ready.len() == count && all.len() == count).then_some(ready)
        }
    })
    .await
}

/// True while the pod exists and is not being deleted.
pub async fn pod_exists(client: &Client, namespace: &str, name: &str) -> bool {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    matches!(pods.get_opt(name).await, Ok(Some(pod)) if pod.metadata.deletion_timestamp.is_none())
}

/// The Deployment the e2e tests heal: `invoice-api` with `replicas` pods on the kwok nodes.
/// Returns the names of its pods once exactly `replicas` are Ready.
pub async fn deploy_invoice_api(client: &Client, namespace: &str, replicas: usize) -> Vec<String> {
    apply_deployment(
        client,
        namespace,
        "invoice-api",
        replicas,
        "app: invoice-api",
        "",
    )
    .await;
    ready_pods(client, namespace, replicas).await
}

/// Applies the Deployment `name` of `replicas` pods of the `invoice-api:e2e` image, selected by
/// and labelled with `labels` (a YAML flow mapping body, e.g. `app: invoice-api`);
/// `pod_spec_extra` goes in front of the containers in the pod spec's flow mapping (e.g.
/// `nodeSelector: {topology.kubernetes.io/zone: az1}, `, or nothing).
pub async fn apply_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: usize,
    labels: &str,
    pod_spec_extra: &str,
) {
    apply_yaml(
        client,
        namespace,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{{labels}}}}}
  template:
    metadata: {{labels: {{{labels}}}}}
    spec: {{{pod_spec_extra}containers: [{{name: app, image: invoice-api:e2e}}]}}
"#
        ),
    )
    .await;
}

/// Applies the InvoiceService `name` with a 5 s signal interval and the given `workload`,
/// `slos` and `remediation` (each the body of a YAML flow mapping, e.g. `deployment: invoice-api`).
pub async fn apply_invoice_service(
    client: &Client,
    namespace: &str,
    name: &str,
    workload: &str,
    slos: &str,
    remediation: &str,
) {
    apply_yaml(
        client,
        namespace,
        &format!(
            r#"
apiVersion: invoiceops.dev/v1alpha1
kind: InvoiceService
metadata: {{name: {name}}}
spec:
  workload: {{{workload}}}
  signals: {{interval: 5s}}
  slos: {{{slos}}}
  remediation: {{{remediation}}}
"#
        ),
    )
    .await;
}

/// The SLO of the crash-loop tests: 99.9 % availability (their action comes from the pod's
/// state, not from the SLO).
pub const CRASH_LOOP_SLOS: &str = r#"availability: {objective: "99.9"}"#;

/// The label our kwok Stage (tests/cluster/stages/pod-crashloop.yaml) turns into a crash loop.
pub const CRASH_LABEL: &str = "pod-crashloop.stage.invoiceops.dev";

/// How long the operator may take to act on a crash loop: the stage needs 10-15 s to show
/// CrashLoopBackOff, then one reconcile (triggered by the pod watch).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(90);

/// Labels `pod` so that the kwok Stage makes it crash-loop.
pub async fn crash_loop(client: &Client, namespace: &str, pod: &str) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    pods.patch(
        pod,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {CRASH_LABEL: "true"}}})),
    )
    .await
    .expect("label the pod");
}

/// Makes `pod` crash-loop and waits at most [`ACTION_TIMEOUT`] for the operator to evict it.
pub async fn crash_and_wait_evicted(client: &Client, namespace: &str, pod: &str) {
    crash_loop(client, namespace, pod).await;
    wait_pod_gone(
        client,
        namespace,
        pod,
        ACTION_TIMEOUT,
        "the crash-looping pod to be evicted",
    )
    .await;
}

/// Applies the InvoiceService `invoice-api` of the crash-loop tests for the Deployment
/// `invoice-api`, with [`CRASH_LOOP_SLOS`] and `remediation` (a YAML flow mapping body).
pub async fn apply_crash_loop_service(client: &Client, namespace: &str, remediation: &str) {
    apply_invoice_service(
        client,
        namespace,
        "invoice-api",
        "deployment: invoice-api",
        CRASH_LOOP_SLOS,
        remediation,
    )
    .await;
}

/// Waits at most `timeout` for `pod` to be gone or being deleted (`what` names the wait); an
/// API error is no proof of either, the wait goes on.
pub async fn wait_pod_gone(
    client: &Client,
    namespace: &str,
    pod: &str,
    timeout: Duration,
    what: &str,
) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    eventually(timeout, what, || async {
        match pods.get_opt(pod).await {
            Ok(Some(pod)) if pod.metadata.deletion_timestamp.is_none() => None,
            Ok(_) => Some(()),
            Err(_) => None,
        }
    })
    .await;
}

/// The Events in `namespace` with `reason` regarding an InvoiceService (the one named `name`,
/// when given).
pub async fn service_events(
    client: &Client,
    namespace: &str,
    name: Option<&str>,
    reason: &str,
) -> kube::Result<Vec<k8s_openapi::api::events::v1::Event>> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&kube::api::ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some(reason))
        .filter(|event| {
            event.regarding.as_ref().is_some_and(|regarding| {
                regarding.kind.as_deref() == Some("InvoiceService")
                    && name.is_none_or(|name| regarding.name.as_deref() == Some(name))
            })
        })
        .collect())
}

/// Waits at most `timeout` for an Event with `reason` regarding an InvoiceService in
/// `namespace`; the first one found.
pub async fn wait_service_event(
    client: &Client,
    namespace: &str,
    reason: &str,
    timeout: Duration,
) -> k8s_openapi::api::events::v1::Event {
    eventually(timeout, &format!("a {reason} event"), || async {
        service_events(client, namespace, None, reason)
            .await
            .ok()?
            .into_iter()
            .next()
    })
    .await
}

/// A client, the CRD installed, and a namespace of its own named after `prefix`: the start of
/// most tests.
pub async fn crd_and_namespace(prefix: &str) -> (Client, TestNamespace) {
    let client = client().await;
    install_crd(&client).await;
    let namespace = TestNamespace::create(&client, prefix).await;
    (client, namespace)
}

/// A kubeconfig for `token` on the local cluster (server and CA from the admin kubeconfig).
pub fn kubeconfig_for_token(token: &str, path: &std::path::Path) {
    let admin = std::env::var("KUBECONFIG").expect("KUBECONFIG is set");
    let admin: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&admin).expect("read the admin kubeconfig"))
            .expect("the admin kubeconfig parses");
    let cluster = &admin["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().expect("server");
    let authority = cluster["certificate-authority-data"]
        .as_str()
        .expect("certificate-authority-data");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server, "certificate-authority-data": authority}}],
        "users": [{"name": "invoice-operator", "user": {"token": token.trim()}}],
        "contexts": [{"name": "invoice-operator", "context": {
            "cluster": "local", "user": "invoice-operator"}}],
        "current-context": "invoice-operator",
    });
    std::fs::write(path, serde_yaml::to_string(&config).expect("serialize")).expect("write");
}

/// A cluster tool: from `CLUSTER_BIN` when set (`.cluster/env`), else from `PATH`.
pub fn tool(name: &str) -> std::path::PathBuf {
    std::env::var_os("CLUSTER_BIN")
        .map(|dir| std::path::Path::new(&dir).join(name))
        .filter(|path| path.exists())
        .unwrap_or_else(|| std::path::PathBuf::from(name))
}

/// Turns OpenMetrics history files into TSDB blocks under `output` with `promtool tsdb
/// create-blocks-from openmetrics`, two processes at a time (one per core of the machines this
/// runs on), removing each file once converted; the first failure, with promtool's output.
pub fn blocks_from_openmetrics(
    files: &[std::path::PathBuf],
    output: &std::path::Path,
) -> Result<(), String> {
    for pair in files.chunks(2) {
        let mut children = Vec::new();
        for file in pair {
            let child = std::process::Command::new(tool("promtool"))
                .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
                .arg(file)
                .arg(output)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|error| {
                    format!("cannot run promtool (Debian's prometheus package ships it): {error}")
                })?;
            children.push((file, child));
        }
        for (file, child) in children {
            let result = child
                .wait_with_output()
                .map_err(|error| format!("wait for promtool: {error}"))?;
            if !result.status.success() {
                return Err(format!(
                    "promtool could not convert {}: {}",
                    file.display(),
                    String::from_utf8_lossy(&result.stderr)
                ));
            }
            std::fs::remove_file(file)
                .map_err(|error| format!("remove {}: {error}", file.display()))?;
        }
    }
    Ok(())
}

/// Moves every block under `output` into the Prometheus data directory `data`; how many.
pub fn move_blocks(output: &std::path::Path, data: &std::path::Path) -> std::io::Result<usize> {
    let mut moved = 0;
    for entry in std::fs::read_dir(output)? {
        let entry = entry?;
        std::fs::rename(entry.path(), data.join(entry.file_name()))?;
        moved += 1;
    }
    Ok(moved)
}

/// Runs a tool; returns (success, stdout, stderr).
pub fn run_tool(name: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = std::process::Command::new(tool(name))
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("failed to run {name}: {error}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let output = child.wait_with_output().expect("wait for the tool");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a tool that must succeed ([`run_tool`]), panicking with its output when it fails;
/// its stdout.
pub fn run_ok(name: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (success, stdout, stderr) = run_tool(name, args, stdin);
    assert!(
        success,
        "`{name} {}` failed:\n{stdout}\n{stderr}",
        args.join(" ")
    );
    stdout
}

fn kubectl_ok(args: &[&str]) {
    run_ok("kubectl", args, None);
}

/// Lets the Helm release `release` in `namespace` adopt the CRD `crd` that another release or
/// `kubectl apply` created (Helm refuses to take over objects without its ownership metadata —
/// the same step as a user who applied the CRD before installing the chart).
pub fn adopt_crd(crd: &str, release: &str, namespace: &str) {
    kubectl_ok(&[
        "label",
        "crd",
        crd,
        "app.kubernetes.io/managed-by=Helm",
        "--overwrite",
    ]);
    kubectl_ok(&[
        "annotate",
        "crd",
        crd,
        &format!("meta.helm.sh/release-name={release}"),
        &format!("meta.helm.sh/release-namespace={namespace}"),
        "--overwrite",
    ]);
}

/// Undoes [`adopt_crd`] after an uninstall (which keeps the CRD), so the CRD belongs to no
/// release and the next `helm install` on this cluster can take it over.
pub fn disown_crd(crd: &str) {
    kubectl_ok(&["label", "crd", crd, "app.kubernetes.io/managed-by-"]);
    kubectl_ok(&[
        "annotate",
        "crd",
        crd,
        "meta.helm.sh/release-name-",
        "meta.helm.sh/release-namespace-",
    ]);
}
