//! Argo Rollouts for the tests of `workload.kind: Rollout`: its real controller and CRDs, from
//! its Go module at the version `tests/cluster/argo-rollouts.sh` pins (the script builds the
//! controller with the go tool once and prints where it and the CRDs are; `make test` runs it
//! before the end-to-end tests; nothing of Argo Rollouts is committed).
//!
//! The controller serves its health and metrics on 0.0.0.0 with no flag to change that, so it
//! runs in a network namespace of its own (`unshare --net`, as root): inside, a socat on
//! 127.0.0.1 at the API server's port forwards through a unix socket to a socat on the host,
//! which connects to the API server, so the kubeconfig works unchanged. It watches only the
//! test's namespace (`--namespaced`).

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, api::DynamicObject};

/// The CRDs the controller's informers need, from the module's `manifests/crds`.
const CRDS: [&str; 5] = [
    "rollout",
    "analysis-run",
    "analysis-template",
    "cluster-analysis-template",
    "experiment",
];

/// Where the controller and the CRDs are (built on first use).
fn locate() -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/argo-rollouts.sh");
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|error| panic!("{}: {error}", script.display()));
    assert!(output.status.success(), "{} failed", script.display());
    let text = String::from_utf8(output.stdout).expect("paths");
    let mut lines = text.lines().map(PathBuf::from);
    let binary = lines.next().expect("the controller's path");
    let crds = lines.next().expect("the CRD folder");
    (binary, crds)
}

/// Installs Argo Rollouts' CRDs (server-side apply: idempotent across tests) and waits until
/// they are served.
pub async fn install_crds(client: &Client, folder: &Path) {
    for name in CRDS {
        let path = folder.join(format!("{name}-crd.yaml"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&text).expect("an Argo Rollouts CRD");
        crate::apply_crd(client, &crd, "invoice-operator-e2e").await;
    }
}

/// The Rollout API of `namespace`.
pub fn rollouts(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &invoice_operator::api::WorkloadKind::Rollout.api_resource(),
    )
}

/// Argo Rollouts' controller for one namespace, in its own network namespace; killed (with
/// its forwarders) when dropped.
#[derive(Debug)]
pub struct ArgoRollouts {
    controller: Child,
    bridge: Child,
    socket_dir: PathBuf,
    /// Where its log goes.
    pub log_path: PathBuf,
}

impl ArgoRollouts {
    /// Installs the CRDs and starts the controller for `namespace`.
    pub async fn start(client: &Client, namespace: &str) -> Self {
        let (binary, crds) = locate();
        install_crds(client, &crds).await;
        let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG (source .cluster/env)");
        let server = std::fs::read_to_string(&kubeconfig)
            .expect("kubeconfig")
            .lines()
            .find_map(|line| line.trim().strip_prefix("server: ").map(str::to_owned))
            .expect("the kubeconfig's server");
        let port = server
            .rsplit(':')
            .next()
            .and_then(|port| port.trim_end_matches('/').parse::<u16>().ok())
            .expect("the API server's port");
        let socket_dir = std::env::temp_dir().join(format!("argo-rollouts-{namespace}"));
        let _ = std::fs::remove_dir_all(&socket_dir);
        std::fs::create_dir_all(&socket_dir).expect("socket folder");
        let socket = socket_dir.join("api.sock");
        let bridge = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .process_group(0)
            .spawn()
            .expect("socat (Debian's package; tests/cluster/build.sh installs it)");
        for _ in 0..50 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(socket.exists(), "the API bridge's socket never appeared");
        let log_path = std::env::temp_dir().join(format!("argo-rollouts-{namespace}.log"));
        let log = std::fs::File::create(&log_path).expect("controller log");
        let inside = format!(
            "ip link set lo up && (socat TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr \
             UNIX-CONNECT:{socket} &) && exec {binary} --kubeconfig {kubeconfig} --namespaced \
             --namespace {namespace} --leader-elect=false",
            socket = socket.display(),
            binary = binary.display(),
        );
        let controller = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", &inside])
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("unshare (util-linux; needs root)");
        Self {
            controller,
            bridge,
            socket_dir,
            log_path,
        }
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ArgoRollouts {
    fn drop(&mut self) {
        // Each runs in a process group of its own: the group takes the forwarders too.
        for child in [&mut self.controller, &mut self.bridge] {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.socket_dir);
    }
}

/// A Rollout `name` of `replicas` pods of the `invoice-api:e2e` image labelled `app: name`, with
/// a canary that sends a third of the pods to a new revision, then pauses until promoted or
/// aborted.
pub fn rollout(name: &str, replicas: usize) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: app, image: invoice-api:e2e}}]}}
  strategy:
    canary:
      steps: [{{setWeight: 34}}, {{pause: {{}}}}]
"#
    )
}
