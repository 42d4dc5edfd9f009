//! The benchmark fleet in the cluster: extra kwok nodes, namespaces, three Deployments per
//! InvoiceService (one per zone) and the InvoiceServices themselves. All IO.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use invoice_operator::api::InvoiceService;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Node, Pod},
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::results::SloAnswers;

/// The zones of the local cluster (tests/cluster/cluster.sh).
pub const ZONES: [&str; 3] = ["az1", "az2", "az3"];
/// Label on every benchmark object, so it can be listed and cleaned up.
pub const BENCH_LABEL: &str = "invoiceops.dev/bench";
/// Pods a kwok node of the local cluster accepts.
const PODS_PER_NODE: usize = 250;
/// Field manager of everything the benchmark applies.
const MANAGER: &str = "fleet-bench";
/// Parallel requests while creating the fleet.
const CREATE_CONCURRENCY: usize = 16;

/// How the fleet is laid out.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Namespaces the services are spread over (round robin).
    pub namespaces: usize,
    /// Replicas of each per-zone Deployment.
    pub replicas_per_zone: i32,
}

impl Layout {
    /// Pods of one InvoiceService.
    pub fn pods_per_service(&self) -> usize {
        ZONES.len() * usize::try_from(self.replicas_per_zone).unwrap_or(0)
    }

    /// Namespace and name of the `index`th service.
    pub fn service(&self, index: usize) -> (String, String) {
        (
            format!("bench-{:02}", index % self.namespaces.max(1)),
            format!("inv-{index:04}"),
        )
    }
}

async fn apply<K>(api: &Api<K>, name: &str, object: serde_json::Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("failed to apply {name}"))?;
    Ok(())
}

/// Adds kwok nodes (`kwok-bench-<zone>-<n>`) until the cluster can hold `pods` more pods, and
/// waits until kwok reports them Ready.
pub async fn ensure_nodes(client: &Client, pods: usize) -> anyhow::Result<usize> {
    let per_zone = pods.div_ceil(PODS_PER_NODE * ZONES.len()) + 1;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut names = Vec::new();
    for zone in ZONES {
        for n in 1..=per_zone {
            let name = format!("kwok-bench-{zone}-{n}");
            let node = json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "topology.kubernetes.io/zone": zone,
                        "topology.kubernetes.io/region": "local",
                        "type": "kwok",
                        BENCH_LABEL: "true",
                    },
                },
                "status": {
                    "allocatable": {"cpu": "64", "memory": "512Gi", "pods": PODS_PER_NODE.to_string()},
                    "capacity": {"cpu": "64", "memory": "512Gi", "pods": PODS_PER_NODE.to_string()},
                    "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
                },
            });
            apply(&nodes, &name, node).await?;
            names.push(name);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = nodes
            .list(&ListParams::default().labels(&format!("{BENCH_LABEL}=true")))
            .await?;
        let ready = listed
            .items
            .iter()
            .filter(|node| invoice_operator_e2e::node_is_ready(node))
            .count();
        if ready >= names.len() {
            return Ok(names.len());
        }
        if Instant::now() > deadline {
            bail!(
                "only {ready} of {} benchmark nodes became Ready",
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn deployment(namespace: &str, service: &str, zone: &str, replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": format!("{service}-{zone}"),
            "namespace": namespace,
            "labels": {BENCH_LABEL: "true"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": service, "zone": zone}},
            "template": {
                "metadata": {"labels": {"app": service, "zone": zone, BENCH_LABEL: "true"}},
                "spec": {
                    "nodeSelector": {"topology.kubernetes.io/zone": zone},
                    "containers": [{"name": "app", "image": "invoice-api:bench"}],
                },
            },
        },
    })
}

/// A production-shaped InvoiceService: the operator-wide metric profile (so it is batched),
/// the default multi-window burn rates over a 30-day SLO, a latency SLO, and the default
/// ladder. Only the pod error threshold is spelled out, because the faults rely on it.
pub fn invoice_service(namespace: &str, service: &str) -> serde_json::Value {
    let deployments: Vec<_> = ZONES
        .iter()
        .map(|zone| json!({"name": format!("{service}-{zone}"), "zone": zone}))
        .collect();
    json!({
        "apiVersion": "invoiceops.dev/v1alpha1",
        "kind": "InvoiceService",
        "metadata": {"name": service, "namespace": namespace, "labels": {BENCH_LABEL: "true"}},
        "spec": {
            "workload": {"deployments": deployments},
            "signals": {"interval": "15s"},
            "slos": {
                "availability": {"objective": "99.9", "window": "30d"},
                "latency": {"threshold": "200ms", "percentile": "99"},
            },
            "remediation": {"restartPod": {"errorRatioAbove": "0.2"}},
        },
    })
}

/// The burn-rate windows of the default multi-window alerts, each shown in status.
pub const BURN_WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// What the benchmark services' statuses show of their SLOs.
pub async fn slo_answers(
    client: &Client,
    expected_availability: f64,
) -> anyhow::Result<SloAnswers> {
    let api: Api<InvoiceService> = Api::all(client.clone());
    let services = api
        .list(&ListParams::default().labels(&format!("{BENCH_LABEL}=true")))
        .await?;
    let mut answers = SloAnswers::default();
    for service in services {
        answers.services += 1;
        let Some(status) = service.status else {
            continue;
        };
        let text = serde_json::to_string(&status)?;
        if text.contains("WindowNotYetRecorded") {
            answers.not_yet_recorded += 1;
        }
        let slo = status.slo.unwrap_or_default();
        let windows = BURN_WINDOWS
            .iter()
            .all(|window| slo.burn_rates.contains_key(*window));
        if windows && slo.availability.is_some() && slo.error_budget_remaining.is_some() {
            answers.answered += 1;
        }
        let availability = slo.availability.and_then(|text| text.parse::<f64>().ok());
        if availability.is_some_and(|value| (value - expected_availability).abs() <= 0.001) {
            answers.matching_history += 1;
        }
    }
    Ok(answers)
}

/// Creates the services `from..to` (with their namespaces and Deployments), server-side
/// applied so a rerun is harmless.
pub async fn create_services(
    client: &Client,
    layout: Layout,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for index in 0..layout.namespaces.min(to) {
        let (namespace, _) = layout.service(index);
        apply(
            &namespaces,
            &namespace,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": {BENCH_LABEL: "true"}}}),
        )
        .await?;
    }
    stream::iter(from..to)
        .map(|index| async move {
            let (namespace, service) = layout.service(index);
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
            for zone in ZONES {
                let name = format!("{service}-{zone}");
                apply(
                    &deployments,
                    &name,
                    deployment(&namespace, &service, zone, layout.replicas_per_zone),
                )
                .await?;
            }
            let services: Api<InvoiceService> = Api::namespaced(client.clone(), &namespace);
            apply(&services, &service, invoice_service(&namespace, &service)).await
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// Benchmark pods that are Ready, listed in pages.
pub async fn ready_pods(client: &Client) -> anyhow::Result<usize> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut params = ListParams::default()
        .labels(&format!("{BENCH_LABEL}=true"))
        .limit(2_000);
    let mut ready = 0;
    loop {
        let page = pods.list(&params).await?;
        ready += page
            .items
            .iter()
            .filter(|pod| invoice_operator_e2e::is_ready(pod))
            .count();
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(ready),
        }
    }
}

/// Waits until `expected` benchmark pods are Ready.
pub async fn wait_pods_ready(
    client: &Client,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let ready = ready_pods(client).await?;
        if ready >= expected {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("only {ready} of {expected} pods Ready after {timeout:?}");
        }
        eprintln!("  {ready}/{expected} pods Ready");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// A Ready pod of the service's first zone (the fault's victim).
pub async fn victim_pod(client: &Client, namespace: &str, service: &str) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("app={service},zone={}", ZONES[0])))
        .await?;
    listed
        .items
        .iter()
        .filter(|pod| invoice_operator_e2e::is_ready(pod))
        .find_map(|pod| pod.metadata.name.clone())
        .with_context(|| format!("{namespace}/{service} has no Ready pod in {}", ZONES[0]))
}

/// Deletes the benchmark namespaces and nodes without waiting for the namespace controller.
pub async fn clean_up(client: &Client) -> anyhow::Result<()> {
    let selector = ListParams::default().labels(&format!("{BENCH_LABEL}=true"));
    // Namespaces have no collection DELETE (405): one by one.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for namespace in namespaces.list_metadata(&selector).await? {
        // The operator has stopped: release its deletion finalizer, or the namespace would
        // stay Terminating for good.
        let services: Api<InvoiceService> = Api::namespaced(client.clone(), &namespace.name_any());
        let release = json!({"metadata": {"finalizers": null}});
        for service in services.list_metadata(&ListParams::default()).await? {
            services
                .patch(
                    &service.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&release),
                )
                .await?;
        }
        namespaces
            .delete(&namespace.name_any(), &Default::default())
            .await?;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .delete_collection(&Default::default(), &selector)
        .await?;
    Ok(())
}
