//! The example invoice app for real, on the real node `real-1`: its image built here from
//! `examples/invoice-app/Dockerfile` (buildah, tests/image/build.sh), three pods of it as real
//! processes in containers, scraped by the cluster's real Prometheus at their pod addresses,
//! and the operator healing real faults in those processes:
//!
//! 1. **A connection leak**: one process is told to hold its whole database pool
//!    (`PUT /debug/held-connections`, the app's fault switch, on with `DEBUG_FAULTS`); its
//!    writes time out with 503, the operator evicts that pod (RestartPod, through the
//!    PodDisruptionBudget) and the Deployment starts a new process with a fresh pool.
//! 2. **A struggling database**: every process holds most of its pool; the operator enters
//!    read-only mode by writing the mode ConfigMap, kubelet updates the mounted file, and the
//!    running processes (not restarted) answer writes with 423 while reads go on; when the
//!    pools drain, the operator leaves read-only mode and writes succeed again.
//!
//! The operator runs on the host (the chart on the real node is `chart_real_node`); pods are
//! reached on the CNI bridge the harness created (10.244.100.0/24), nothing else.
//! Needs a cluster started with the real node (`CLUSTER_REAL_NODE=1`, the default), root and
//! `cargo build --workspace` (make test). With `CLUSTER_REAL_NODE=0` it says loudly that it
//! did not run.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use invoice_operator::api::{ActionKind, InvoiceService};
use invoice_operator_e2e::{
    OperatorProcess, ScrapeTarget, TestNamespace, apply_yaml, client, eventually, exchange,
    install_crd, is_ready,
    real_node::{self, local_image},
    service_events, workspace_binary,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{Api, Client, ResourceExt, api::ListParams};

const TEST: &str = "app_real_node";
const APP_REPOSITORY: &str = "localhost/invoiceops/invoice-app";
const NAME: &str = "billing-api";
const REPLICAS: usize = 3;
const POOL: u32 = 20;
/// Real containers on a shared 2-core machine: start, probes, grace periods.
const POD_TIMEOUT: Duration = Duration::from_secs(180);
/// One remediation step: a few scrapes (5 s) move the rates, an evaluation (5 s) acts.
const STEP_TIMEOUT: Duration = Duration::from_secs(150);
/// kubelet refreshes a mounted ConfigMap on its pod sync (every 10 s here, plus its cache).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(120);

fn say(line: &str) {
    real_node::say(TEST, line);
}

/// The mode ConfigMap, the PodDisruptionBudget and the Deployment: as
/// examples/invoice-app/deploy/billing-api.yaml, one zone, on the real node, with the fault
/// switch on.
fn manifests(image: &str) -> Vec<String> {
    let taint = real_node::TAINT;
    vec![
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {NAME}-mode}}\ndata: {{mode: read-write}}\n"
        ),
        format!(
            r#"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: {NAME}}}
spec:
  maxUnavailable: 1
  selector: {{matchLabels: {{app: {NAME}}}}}
"#
        ),
        format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {NAME}, labels: {{app: {NAME}}}}}
spec:
  replicas: {REPLICAS}
  selector: {{matchLabels: {{app: {NAME}}}}}
  template:
    metadata: {{labels: {{app: {NAME}}}}}
    spec:
      nodeSelector: {{type: real}}
      tolerations:
      - {{key: "{taint}", operator: Equal, value: "true", effect: NoSchedule}}
      terminationGracePeriodSeconds: 5
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {{type: RuntimeDefault}}
      containers:
      - name: app
        image: "{image}"
        imagePullPolicy: Never
        ports:
        - {{name: http, containerPort: 8080}}
        env:
        - {{name: LISTEN, value: "0.0.0.0:8080"}}
        - {{name: SERVICE, value: {NAME}}}
        - {{name: ZONE, value: az1}}
        - {{name: MODE_FILE, value: /etc/{NAME}/mode}}
        - {{name: DB_POOL_MAX, value: "{POOL}"}}
        - {{name: DEBUG_FAULTS, value: "true"}}
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        - name: POD_NAMESPACE
          valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
        readinessProbe:
          httpGet: {{path: /healthz, port: http}}
          periodSeconds: 2
        resources:
          requests: {{cpu: 10m, memory: 16Mi}}
          limits: {{memory: 64Mi}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        volumeMounts:
        - {{name: mode, mountPath: /etc/{NAME}, readOnly: true}}
      volumes:
      - name: mode
        configMap: {{name: {NAME}-mode}}
"#
        ),
    ]
}

/// The InvoiceService: RestartPod for a pod whose 5xx ratio passes 20 %, read-only mode above
/// 80 % of the database pool for 10 s, left below 50 % for 10 s.
const INVOICE_SERVICE: &str = r#"
apiVersion: invoiceops.dev/v1alpha1
kind: InvoiceService
metadata: {name: billing-api}
spec:
  workload: {deployment: billing-api}
  signals: {interval: 5s, minRequestRate: "0.1"}
  slos:
    availability: {objective: "90", window: 1h, burnRateWindows: [{long: 1m, short: 30s, factor: "3", severity: Page}]}
  remediation:
    mode: Enforce
    cooldown: 10s
    verifyWindow: 30s
    ladder: [RestartPod, ReadOnly]
    restartPod: {errorRatioAbove: "0.2"}
    readOnly:
      enterWhen: {dbPoolUtilizationAbove: "0.8", for: 10s}
      exitWhen: {dbPoolUtilizationBelow: "0.5", for: 10s}
      switch:
        configMap: {name: billing-api-mode, key: mode, readOnly: read-only, readWrite: read-write}
"#;

/// One HTTP/1.1 request to a pod with short timeouts: the status, or `None` when the pod does
/// not answer (gone, or not started yet).
fn request(address: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let socket: SocketAddr = address.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    exchange(&mut stream, address, method, path, body)
        .ok()
        .filter(|(status, _)| *status != 0)
}

fn write_invoice(address: &str) -> Option<u16> {
    request(
        address,
        "POST",
        "/invoices",
        r#"{"customer":"acme","amount_cents":1200}"#,
    )
    .map(|(status, _)| status)
}

fn hold(address: &str, connections: u32) {
    let answer = request(
        address,
        "PUT",
        "/debug/held-connections",
        &connections.to_string(),
    );
    assert_eq!(
        answer.as_ref().map(|(status, _)| *status),
        Some(200),
        "PUT /debug/held-connections {connections} to {address}: {answer:?}"
    );
}

/// A gauge of the app's /metrics (one series per process).
fn gauge(address: &str, name: &str) -> Option<f64> {
    let (_, text) = request(address, "GET", "/metrics", "")?;
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Client traffic: every 250 ms one write and one read to each pod the test last saw Ready,
/// each on its own short-lived thread (a pod whose pool leaked answers after 1 s). Stops when
/// dropped.
struct Traffic {
    pods: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start() -> Self {
        let pods = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pods, stop) = (Arc::clone(&pods), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let addresses = pods.lock().expect("traffic lock").clone();
                    for address in addresses {
                        std::thread::spawn(move || {
                            let _ = write_invoice(&address);
                            let _ = request(&address, "GET", "/invoices/1", "");
                        });
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        Self {
            pods,
            stop,
            thread: Some(thread),
        }
    }

    fn send_to(&self, addresses: Vec<String>) {
        *self.pods.lock().expect("traffic lock") = addresses;
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The app's Ready pods on the real node: name → `ip:8080`.
async fn ready_pods(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("app={NAME}")))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
        .into_iter()
        .filter(is_ready)
        .filter_map(|pod| {
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            Some((pod.name_any(), format!("{ip}:8080")))
        })
        .collect()
}

/// Waits for `REPLICAS` Ready pods, none of `not`; points Prometheus (a file_sd target per
/// pod address) and the traffic at them.
async fn settle(
    client: &Client,
    namespace: &str,
    not: &[&str],
    traffic: &Traffic,
    target: &mut Option<ScrapeTarget>,
) -> BTreeMap<String, String> {
    let pods = eventually(POD_TIMEOUT, "the app's pods Ready", || async {
        let pods = ready_pods(client, namespace).await;
        (pods.len() == REPLICAS && not.iter().all(|gone| !pods.contains_key(*gone))).then_some(pods)
    })
    .await;
    let addresses: Vec<String> = pods.values().cloned().collect();
    // The old target goes first: it is the same file, which its drop removes.
    *target = None;
    *target = Some(ScrapeTarget::register_all(&addresses, namespace));
    traffic.send_to(addresses);
    pods
}

async fn status(
    services: &Api<InvoiceService>,
) -> Option<invoice_operator::api::InvoiceServiceStatus> {
    services.get(NAME).await.ok()?.status
}

fn condition(status: &invoice_operator::api::InvoiceServiceStatus, type_: &str) -> Option<String> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
        .map(|condition| condition.status.clone())
}

#[tokio::test]
async fn the_operator_heals_the_real_app_and_switches_it_read_only_through_its_mounted_config_map()
{
    let Some(_node) = real_node::real_node(
        TEST,
        "the invoice app on the real node (real processes healed, read-only mode via the mounted ConfigMap)",
    ) else {
        return;
    };
    let started = Instant::now();
    let image = local_image(
        TEST,
        "examples/invoice-app/Dockerfile",
        &workspace_binary("invoice-app"),
        APP_REPOSITORY,
        &["invoice-app ", "--version"],
    );
    let client = client().await;
    install_crd(&client).await;
    let namespace = TestNamespace::create(&client, "e2e-app-real").await;
    let ns = namespace.name.clone();
    for manifest in manifests(&image) {
        apply_yaml(&client, &ns, &manifest).await;
    }
    let traffic = Traffic::start();
    let mut target = None;
    let pods = settle(&client, &ns, &[], &traffic, &mut target).await;
    say(&format!(
        "{REPLICAS} app pods Ready on the real node after {:.1?}",
        started.elapsed()
    ));
    for address in pods.values() {
        assert_eq!(write_invoice(address), Some(201), "a write to {address}");
    }

    let prometheus =
        std::env::var("PROMETHEUS_URL").expect("PROMETHEUS_URL is set (source .cluster/env)");
    let operator = OperatorProcess::start(
        &ns,
        &format!("{ns}-operator"),
        &[
            "--leader-election=false",
            &format!("--prometheus-url={prometheus}"),
            "--detection-window=30s",
        ],
    );
    apply_yaml(&client, &ns, INVOICE_SERVICE).await;
    let services: Api<InvoiceService> = Api::namespaced(client.clone(), &ns);
    eventually(
        Duration::from_secs(240),
        "SignalsTrusted=True (Prometheus scrapes the pods)",
        || async {
            let status = status(&services).await?;
            (condition(&status, "SignalsTrusted").as_deref() == Some("True")).then_some(())
        },
    )
    .await;
    let before = status(&services).await.expect("status");
    assert!(
        before.history.is_empty(),
        "acted before any fault: {:?}\n{}",
        before.history,
        operator.log()
    );

    // 1. A connection leak in one process: its writes fail; the pod is evicted and a new
    //    process with a fresh pool takes its place.
    let (victim, victim_address) = pods.iter().next().expect("a pod");
    let (victim, victim_address) = (victim.clone(), victim_address.clone());
    hold(&victim_address, POOL);
    assert_eq!(
        write_invoice(&victim_address),
        Some(503),
        "a write to the leaking process"
    );
    let leak_started = Instant::now();
    let taken = eventually(STEP_TIMEOUT, "RestartPod of the leaking pod", || async {
        status(&services)
            .await?
            .history
            .into_iter()
            .find(|action| action.action == ActionKind::RestartPod)
    })
    .await;
    assert_eq!(
        taken.target,
        format!("pod/{victim}"),
        "the operator restarted another pod than the leaking one\n{}",
        operator.log()
    );
    let healed = settle(&client, &ns, &[&victim], &traffic, &mut target).await;
    let newcomer = healed
        .keys()
        .find(|name| !pods.contains_key(*name))
        .expect("a new pod")
        .clone();
    let newcomer_address = healed[&newcomer].clone();
    assert_eq!(
        gauge(&newcomer_address, "invoice_db_pool_active"),
        Some(0.0),
        "the new process starts with a free pool"
    );
    assert_eq!(write_invoice(&newcomer_address), Some(201));
    say(&format!(
        "leak in {victim}: evicted, {newcomer} serving after {:.1?}",
        leak_started.elapsed()
    ));
    let events = service_events(&client, &ns, Some(NAME), "PodRestarted")
        .await
        .expect("events");
    assert!(
        events
            .iter()
            .any(|event| event.note.as_deref().unwrap_or_default().contains(&victim)),
        "{events:?}"
    );

    // 2. The database struggles: every process holds 17 of its 20 connections (85 %). The
    //    operator enters read-only mode through the ConfigMap; the mounted file changes under
    //    the running processes, which refuse writes (423) and serve reads, without a restart.
    let restarts = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|status| status.container_statuses.as_ref())
            .map_or(0, |statuses| {
                statuses.iter().map(|s| s.restart_count).sum::<i32>()
            })
    };
    for address in healed.values() {
        hold(address, POOL * 85 / 100);
    }
    let struggle_started = Instant::now();
    eventually(STEP_TIMEOUT, "read-only mode in status", || async {
        status(&services).await?.read_only.map(|_| ())
    })
    .await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mode = config_maps
        .get(&format!("{NAME}-mode"))
        .await
        .expect("the mode ConfigMap");
    assert_eq!(
        mode.data
            .as_ref()
            .and_then(|data| data.get("mode"))
            .map(String::as_str),
        Some("read-only")
    );
    let entered = struggle_started.elapsed();
    eventually(
        MOUNT_TIMEOUT,
        "every process refusing writes (423)",
        || async {
            healed
                .values()
                .all(|address| write_invoice(address) == Some(423))
                .then_some(())
        },
    )
    .await;
    say(&format!(
        "pools at 85 %: read-only in status after {entered:.1?}, every process answering 423 \
         after {:.1?}",
        struggle_started.elapsed()
    ));
    for address in healed.values() {
        let read = request(address, "GET", "/invoices", "").map(|(status, _)| status);
        assert_eq!(read, Some(200), "a read from {address} in read-only mode");
    }
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for name in healed.keys() {
        let pod = pod_api.get(name).await.expect("the pod still runs");
        assert_eq!(restarts(&pod), 0, "{name} was restarted to change mode");
    }

    // The database recovers: the pools drain, the operator leaves read-only mode, writes work.
    for address in healed.values() {
        hold(address, 0);
    }
    let recover_started = Instant::now();
    eventually(STEP_TIMEOUT, "read-only mode left", || async {
        let status = status(&services).await?;
        (status.read_only.is_none()
            && status
                .history
                .iter()
                .any(|action| action.action == ActionKind::ExitReadOnly))
        .then_some(())
    })
    .await;
    eventually(
        MOUNT_TIMEOUT,
        "every process accepting writes (201)",
        || async {
            healed
                .values()
                .all(|address| write_invoice(address) == Some(201))
                .then_some(())
        },
    )
    .await;
    say(&format!(
        "pools drained: writes accepted again after {:.1?}",
        recover_started.elapsed()
    ));
    let now = ready_pods(&client, &ns).await;
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        healed.keys().collect::<Vec<_>>(),
        "pods changed during the read-only round trip"
    );
    let actions: Vec<ActionKind> = status(&services)
        .await
        .expect("status")
        .history
        .iter()
        .map(|action| action.action)
        .collect();
    drop(traffic);
    drop(target);
    drop(operator);
    namespace.delete().await;
    say(&format!(
        "actions {actions:?}; the app on the real node: {:.1?} in all",
        started.elapsed()
    ));
}
