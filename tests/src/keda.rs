//! KEDA for the tests of Deployments it scales: its real `ScaledObject` CRD, taken from KEDA's
//! Go module at [`VERSION`] (`go mod download`, cached by Go; nothing of KEDA is committed),
//! and [`Keda`], a stand-in for KEDA's operator doing what KEDA documents for a ScaledObject
//! (KEDA's controller is not built here: its module pulls every cloud SDK its scalers use):
//!
//! - it owns the HorizontalPodAutoscaler `keda-hpa-<name>` (controller reference) and keeps it
//!   at the ScaledObject's `minReplicaCount` (default 1) / `maxReplicaCount` (default 100),
//!   rewriting any other change to it on its next reconcile;
//! - a Deployment at 0 replicas is brought up to `minReplicaCount` when that is above 0;
//! - `autoscaling.keda.sh/paused-replicas: "N"` scales the Deployment to N, removes the
//!   autoscaler and leaves the Deployment alone until the annotation goes.

use std::time::Duration;

use k8s_openapi::{
    api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::json;

use invoice_operator::act::keda::{PAUSED_REPLICAS, resource};

/// The KEDA release whose CRD is installed.
pub const VERSION: &str = "v2.21.0";
/// The stand-in's field manager.
pub const MANAGER: &str = "keda-operator";

/// The ScaledObject CRD of KEDA [`VERSION`], from its Go module.
fn scaled_object_crd() -> CustomResourceDefinition {
    let module = format!("github.com/kedacore/keda/v2@{VERSION}");
    let output = std::process::Command::new("go")
        .args(["mod", "download", "-json", &module])
        .current_dir(std::env::temp_dir())
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("run `go mod download` (Go is needed for KEDA's CRD)");
    assert!(
        output.status.success(),
        "go mod download {module} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let info: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("go mod download -json output");
    let dir = info["Dir"].as_str().expect("the module's folder");
    let path = format!("{dir}/config/crd/bases/keda.sh_scaledobjects.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_yaml::from_str(&text).expect("KEDA's ScaledObject CRD")
}

/// Installs KEDA's ScaledObject CRD and waits until it is served.
pub async fn install_crd(client: &Client) {
    crate::apply_crd(client, &scaled_object_crd(), "invoice-operator-e2e").await;
}

/// The ScaledObject API of `namespace`.
pub fn scaled_objects(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &resource())
}

/// A ScaledObject `name` for the Deployment `target` (a cron trigger, which needs nothing
/// outside the cluster).
pub fn scaled_object(name: &str, target: &str, min: i32, max: i32) -> String {
    format!(
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: {name}}}
spec:
  scaleTargetRef: {{name: {target}}}
  minReplicaCount: {min}
  maxReplicaCount: {max}
  triggers:
  - type: cron
    metadata: {{timezone: Etc/UTC, start: "0 8 * * *", end: "0 18 * * *", desiredReplicas: "{max}"}}
"#
    )
}

/// The stand-in for KEDA's operator in one namespace, reconciling every second until dropped.
#[derive(Debug)]
pub struct Keda {
    task: tokio::task::JoinHandle<()>,
}

impl Keda {
    /// Starts reconciling the ScaledObjects of `namespace`.
    pub fn start(client: &Client, namespace: &str) -> Self {
        let (client, namespace) = (client.clone(), namespace.to_owned());
        let task = tokio::spawn(async move {
            loop {
                if let Err(error) = reconcile(&client, &namespace).await {
                    eprintln!("keda stand-in: {error}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Self { task }
    }
}

impl Drop for Keda {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reconcile(client: &Client, namespace: &str) -> kube::Result<()> {
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let apply = PatchParams::apply(MANAGER).force();
    for object in scaled_objects(client, namespace)
        .list(&ListParams::default())
        .await?
    {
        let name = object.name_any();
        let spec = &object.data["spec"];
        let Some(target) = spec["scaleTargetRef"]["name"].as_str() else {
            continue;
        };
        let hpa = format!("keda-hpa-{name}");
        let current = deployments
            .get_opt(target)
            .await?
            .and_then(|deployment| deployment.spec.replicas)
            .unwrap_or(0);
        let scale_to = |replicas: i32| {
            let deployments = deployments.clone();
            async move {
                deployments
                    .patch_scale(
                        target,
                        &PatchParams {
                            field_manager: Some(MANAGER.to_owned()),
                            ..PatchParams::default()
                        },
                        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
                    )
                    .await
                    .map(|_| ())
            }
        };
        if let Some(paused) = object
            .annotations()
            .get(PAUSED_REPLICAS)
            .and_then(|value| value.parse::<i32>().ok())
        {
            if autoscalers.get_opt(&hpa).await?.is_some() {
                autoscalers.delete(&hpa, &Default::default()).await?;
            }
            if current != paused {
                scale_to(paused).await?;
            }
            continue;
        }
        let min = spec["minReplicaCount"].as_i64().unwrap_or(1);
        let max = spec["maxReplicaCount"].as_i64().unwrap_or(100);
        let uid = object.metadata.uid.clone().unwrap_or_default();
        let autoscaler = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": hpa, "namespace": namespace, "ownerReferences": [{
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": name,
                "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": min, "maxReplicas": max,
                     "metrics": [{"type": "External", "external": {
                         "metric": {"name": format!("s0-cron-{name}")},
                         "target": {"type": "AverageValue", "averageValue": "1"}}}]}
        });
        autoscalers
            .patch(&hpa, &apply, &Patch::Apply(&autoscaler))
            .await?;
        if current == 0 && min > 0 {
            scale_to(i32::try_from(min).unwrap_or(1)).await?;
        }
    }
    Ok(())
}
