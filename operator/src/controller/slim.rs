//! What the reflector caches keep: each watched object is stripped of the fields the
//! operator never reads before it enters its store, so 12,000 pods cost a fraction of their
//! full size in memory. No IO.
//!
//! What is read from the caches, and therefore kept (see `observe` and the watch mappers in
//! the controller): every object's name, namespace, labels, uid and resource version; a pod's
//! owner references, deletion timestamp, `spec.nodeName`, conditions and container restarts
//! and waiting reasons; a Deployment's `spec.replicas` and ready replicas; a Node's labels and
//! status conditions; a ConfigMap's `data`. Remediation (`act`) reads what it changes from the
//! API server, never from a cache.
//!
//! Pods and Deployments are cached as their own small types ([`CachedPod`],
//! [`CachedDeployment`]) deserialised straight from the API's JSON: the rest of the object is
//! never held. The other kinds are k8s-openapi objects with parts stripped.
//!
//! Stripped: `metadata.managedFields` of every kind; annotations of pods, Deployments,
//! Nodes and ConfigMaps (only InvoiceService annotations are read; `kubectl apply`'s
//! last-applied-configuration alone doubles a Deployment or ConfigMap); a Node's
//! `status.images`; a ConfigMap's `binaryData`; an InvoiceService's managed fields and
//! last-applied annotation (its other annotations and its status are read).

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, Node, Pod},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::Resource;
use serde::Deserialize;

use crate::api::InvoiceService;

/// A pod as the operator caches it: its metadata and the few spec and status fields `observe`
/// and the pod watch mapper read, deserialised straight from the API server's JSON. A
/// k8s-openapi `Pod` is about 2.4 KB before any of its strings (every optional field of the
/// pod spec is inline); this is a tenth of that.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedPod {
    /// Name, namespace, labels, owner references, deletion timestamp.
    pub metadata: ObjectMeta,
    /// `spec.nodeName`.
    #[serde(default)]
    pub spec: CachedPodSpec,
    /// Conditions and container statuses.
    #[serde(default)]
    pub status: CachedPodStatus,
}

/// What the operator reads of a pod's spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodSpec {
    /// The node the pod runs on (its zone, when its Deployment has none).
    pub node_name: Option<String>,
}

/// What the operator reads of a pod's status.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    /// Pod conditions (`Ready`).
    #[serde(default)]
    pub conditions: Vec<CachedPodCondition>,
    /// One per container: restarts and whether it is waiting in `CrashLoopBackOff`.
    #[serde(default)]
    pub container_statuses: Vec<CachedContainerStatus>,
}

/// One pod condition.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodCondition {
    /// `Ready`, `PodScheduled`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the status last changed.
    pub last_transition_time: Option<Time>,
}

/// One container's status.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainerStatus {
    /// Restarts so far.
    #[serde(default)]
    pub restart_count: i32,
    /// The reason the container is waiting (`CrashLoopBackOff`), if it is.
    #[serde(default, deserialize_with = "waiting_reason", rename = "state")]
    pub waiting_reason: Option<String>,
}

/// `state.waiting.reason` of a container status.
fn waiting_reason<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct State {
        waiting: Option<Waiting>,
    }
    #[derive(Deserialize)]
    struct Waiting {
        reason: Option<String>,
    }
    let state: Option<State> = Option::deserialize(deserializer)?;
    Ok(state.and_then(|state| state.waiting?.reason))
}

/// A Deployment as the operator caches it: metadata, desired and ready replicas.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedDeployment {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// `spec.replicas`.
    #[serde(default)]
    pub spec: CachedDeploymentSpec,
    /// `status.readyReplicas`.
    #[serde(default)]
    pub status: CachedDeploymentStatus,
    /// Who last set `spec.replicas`, read from the managed fields before they are dropped
    /// (see [`deployment`]).
    #[serde(skip)]
    pub replicas_manager: Option<String>,
    /// When that manager set it.
    #[serde(skip)]
    pub replicas_set_at: Option<jiff::Timestamp>,
    /// The zones the pod template's required node affinity keeps pods out of, per node label:
    /// the values every required term excludes with `NotIn` (the operator's failover of a
    /// single Deployment adds one such requirement to every term). Read by [`deployment`].
    #[serde(skip)]
    pub excluded: BTreeMap<String, BTreeSet<String>>,
    /// Who last wrote the pod template's affinity, and when.
    #[serde(skip)]
    pub affinity_set_by: Option<crate::signals::FieldSetter>,
}

/// What the operator reads of a Deployment's spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedDeploymentSpec {
    /// Desired replicas.
    pub replicas: Option<i32>,
    /// The pod template, held only until [`deployment`] has read the zone exclusions out of
    /// it.
    #[serde(default)]
    template: Option<serde_json::Value>,
}

/// What the operator reads of a Deployment's status.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedDeploymentStatus {
    /// Ready replicas.
    pub ready_replicas: Option<i32>,
}

/// An Argo Rollout (argoproj.io/v1alpha1) as the operator caches it: what a Deployment gives
/// (desired and ready replicas, who set the replicas) and what tells whether Argo Rollouts is
/// changing the pods now ([`CachedRollout::update`]). Watched only where Argo Rollouts is
/// installed.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedRollout {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// `spec.replicas`, `spec.paused`.
    #[serde(default)]
    pub spec: CachedRolloutSpec,
    /// Ready replicas and the update's progress.
    #[serde(default)]
    pub status: CachedRolloutStatus,
    /// Who last set `spec.replicas` (see [`rollout`]).
    #[serde(skip)]
    pub replicas_manager: Option<String>,
    /// When that manager set it.
    #[serde(skip)]
    pub replicas_set_at: Option<jiff::Timestamp>,
}

/// What the operator reads of a Rollout's spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedRolloutSpec {
    /// Desired replicas.
    pub replicas: Option<i32>,
    /// Paused by a person (`kubectl argo rollouts pause`).
    #[serde(default)]
    pub paused: bool,
}

/// What the operator reads of a Rollout's status.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedRolloutStatus {
    /// Ready replicas.
    pub ready_replicas: Option<i32>,
    /// The pod-template hash of the revision being rolled out (the newest).
    pub current_pod_hash: Option<String>,
    /// The pod-template hash of the stable revision; the update is done when it equals
    /// `currentPodHash`.
    #[serde(rename = "stableRS")]
    pub stable_rs: Option<String>,
    /// Why the rollout is paused (a canary pause step, a blue-green promotion wait...).
    #[serde(default)]
    pub pause_conditions: Vec<CachedPauseCondition>,
    /// The update was aborted: the stable revision serves again, Argo waits for a new spec.
    #[serde(default)]
    pub abort: bool,
    /// Argo's summary phase (`Progressing`, `Paused`, `Healthy`, `Degraded`), for messages.
    pub phase: Option<String>,
    /// The canary step the update is at.
    pub current_step_index: Option<i32>,
}

/// One reason a Rollout is paused.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedPauseCondition {
    /// `CanaryPauseStep`, `BlueGreenPause`, `AnalysisRunInconclusive`, ...
    #[serde(default)]
    pub reason: String,
}

impl CachedRollout {
    /// Why Argo Rollouts is changing this Rollout's pods now, or `None` when it is not: paused
    /// by a person (`spec.paused`); paused by a step or a promotion wait (`pauseConditions`);
    /// or a new revision not yet stable (`currentPodHash` is not `stableRS`), unless the
    /// update was aborted (then the stable revision serves and nothing moves until the spec
    /// changes). A scale or a restart (`spec.restartAt`) is no update: neither makes a new
    /// revision.
    pub fn update(&self) -> Option<String> {
        let (spec, status) = (&self.spec, &self.status);
        let phase = status.phase.as_deref().unwrap_or("unknown");
        if spec.paused {
            return Some("is paused (spec.paused)".to_owned());
        }
        if status.abort {
            return None;
        }
        if !status.pause_conditions.is_empty() {
            let reasons: Vec<&str> = status
                .pause_conditions
                .iter()
                .map(|condition| condition.reason.as_str())
                .collect();
            return Some(format!("is paused ({}), phase {phase}", reasons.join(", ")));
        }
        let current = status.current_pod_hash.as_deref()?;
        (status.stable_rs.as_deref() != Some(current)).then(|| {
            let step = status
                .current_step_index
                .map(|index| format!(" at step {index}"))
                .unwrap_or_default();
            format!("is updating to revision {current}{step}, phase {phase}")
        })
    }
}

/// A HorizontalPodAutoscaler as the operator caches it: whose floor it is and who set the
/// floor, to tell a GitOps tool putting the floor back after a ScaleOut raised it. KEDA's own
/// autoscalers (owned by a ScaledObject) are kept too; [`CachedAutoscaler::keda`] says so.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedAutoscaler {
    /// Name, namespace, owner references.
    pub metadata: ObjectMeta,
    /// The scale target and the floor.
    #[serde(default)]
    pub spec: CachedAutoscalerSpec,
    /// Who last set `spec.minReplicas`, and when (see [`autoscaler`]).
    #[serde(skip)]
    pub floor_set_by: Option<crate::signals::FieldSetter>,
    /// The floor from before the operator's first ScaleOut
    /// ([`crate::act::FLOOR_BEFORE_ANNOTATION`]), if the operator remembered one.
    #[serde(skip)]
    pub floor_before: Option<i32>,
}

/// What the operator reads of an autoscaler's spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedAutoscalerSpec {
    /// The workload it scales.
    #[serde(default)]
    pub scale_target_ref: CachedScaleTarget,
    /// The floor (1 when unset).
    pub min_replicas: Option<i32>,
}

/// An autoscaler's `scaleTargetRef`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedScaleTarget {
    /// Kind, e.g. `Deployment` or `Rollout`.
    #[serde(default)]
    pub kind: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// API version, e.g. `apps/v1`.
    pub api_version: Option<String>,
}

impl CachedAutoscaler {
    /// KEDA's own autoscaler (`keda-hpa-*`, owned by a ScaledObject): its floor is the
    /// ScaledObject's, which the operator writes instead.
    pub fn keda(&self) -> bool {
        crate::act::keda::owns(
            self.metadata
                .owner_references
                .as_deref()
                .unwrap_or_default(),
        )
    }
}

/// Implements kube's `Resource` for a cached type with the API identity of `$full`, so it is
/// listed and watched at the same URLs.
macro_rules! cached_resource {
    ($cached:ty, $full:ty) => {
        impl Resource for $cached {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                <$full as Resource>::kind(&())
            }

            fn group(_: &()) -> Cow<'_, str> {
                <$full as Resource>::group(&())
            }

            fn version(_: &()) -> Cow<'_, str> {
                <$full as Resource>::version(&())
            }

            fn plural(_: &()) -> Cow<'_, str> {
                <$full as Resource>::plural(&())
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

cached_resource!(CachedPod, Pod);
cached_resource!(CachedDeployment, Deployment);
cached_resource!(CachedAutoscaler, HorizontalPodAutoscaler);

impl Resource for CachedRollout {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Rollout")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("argoproj.io")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1alpha1")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("rollouts")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Drops a pod's annotations and managed fields (its spec and status were never read in).
pub(super) fn pod(pod: &mut CachedPod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
}

/// Keeps who last set `spec.replicas` (the operator, an autoscaler, a person's `kubectl
/// scale`), then drops a Deployment's annotations and managed fields.
pub(super) fn deployment(deployment: &mut CachedDeployment) {
    let setter = replicas_setter(&deployment.metadata);
    deployment.replicas_manager = setter.as_ref().and_then(|setter| setter.manager.clone());
    deployment.replicas_set_at = setter.and_then(|setter| setter.at);
    if let Some(template) = deployment.spec.template.take() {
        deployment.excluded = excluded_by_node_affinity(&template);
    }
    deployment.affinity_set_by =
        field_setter(deployment.metadata.managed_fields.as_deref(), |fields| {
            fields
                .get("f:spec")?
                .get("f:template")?
                .get("f:spec")?
                .get("f:affinity")
        });
    deployment.metadata.managed_fields = None;
    deployment.metadata.annotations = None;
}

/// Keeps who last set an autoscaler's floor and the floor the operator remembered on it, then
/// drops its annotations and managed fields.
pub(super) fn autoscaler(autoscaler: &mut CachedAutoscaler) {
    autoscaler.floor_set_by =
        field_setter(autoscaler.metadata.managed_fields.as_deref(), |fields| {
            fields.get("f:spec")?.get("f:minReplicas")
        });
    autoscaler.floor_before = autoscaler
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(crate::act::FLOOR_BEFORE_ANNOTATION))
        .and_then(|value| value.parse().ok());
    autoscaler.metadata.managed_fields = None;
    autoscaler.metadata.annotations = None;
}

/// [`deployment`], for an Argo Rollout.
pub(super) fn rollout(rollout: &mut CachedRollout) {
    let setter = replicas_setter(&rollout.metadata);
    rollout.replicas_manager = setter.as_ref().and_then(|setter| setter.manager.clone());
    rollout.replicas_set_at = setter.and_then(|setter| setter.at);
    rollout.metadata.managed_fields = None;
    rollout.metadata.annotations = None;
}

/// Per node label, the values every required node selector term of the pod `template`
/// excludes with `NotIn`; empty without required terms.
fn excluded_by_node_affinity(template: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    let terms = template["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let not_in = |term: &serde_json::Value| {
        let mut excluded: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for expression in term["matchExpressions"].as_array().into_iter().flatten() {
            if expression["operator"] != "NotIn" {
                continue;
            }
            let Some(key) = expression["key"].as_str() else {
                continue;
            };
            let values = expression["values"].as_array().into_iter().flatten();
            excluded
                .entry(key.to_owned())
                .or_default()
                .extend(values.filter_map(|value| value.as_str().map(str::to_owned)));
        }
        excluded
    };
    let mut terms = terms.iter().map(not_in);
    let Some(mut common) = terms.next() else {
        return BTreeMap::new();
    };
    for term in terms {
        common.retain(|key, values| {
            let other = term.get(key);
            values.retain(|value| other.is_some_and(|other| other.contains(value)));
            !values.is_empty()
        });
    }
    common
}

/// Who last set `spec.replicas`, from the managed fields.
fn replicas_setter(metadata: &ObjectMeta) -> Option<crate::signals::FieldSetter> {
    field_setter(metadata.managed_fields.as_deref(), |fields| {
        fields.get("f:spec")?.get("f:replicas")
    })
}

/// Who last wrote the field `find` locates in an entry's `fieldsV1`, and when: the newest
/// entry holding it (e.g. `f:spec.f:replicas`: an apply and an update may share it).
pub fn field_setter(
    managed_fields: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry]>,
    find: impl Fn(&serde_json::Value) -> Option<&serde_json::Value>,
) -> Option<crate::signals::FieldSetter> {
    managed_fields?
        .iter()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| find(&fields.0).is_some())
        })
        .max_by_key(|entry| entry.time.as_ref().map(|time| time.0))
        .map(|entry| crate::signals::FieldSetter {
            manager: entry.manager.clone(),
            at: entry.time.as_ref().map(|time| time.0),
        })
}

/// Keeps labels (zones) and status conditions (readiness); drops the image list,
/// annotations and managed fields.
pub(super) fn node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    if let Some(status) = &mut node.status {
        status.images = None;
    }
}

/// Keeps `data` (the read-only mode switch) and who wrote which key when (the managed-fields
/// entries that hold `data` keys, reduced to those: a few per ConfigMap); drops `binaryData`,
/// annotations and the rest of the managed fields.
pub(super) fn config_map(config_map: &mut ConfigMap) {
    config_map.metadata.managed_fields = config_map
        .metadata
        .managed_fields
        .take()
        .map(|entries| {
            entries
                .into_iter()
                .filter_map(|mut entry| {
                    let data = entry.fields_v1.as_ref()?.0.get("f:data")?.clone();
                    entry.fields_v1 =
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
                            serde_json::json!({ "f:data": data }),
                        ));
                    entry.api_version = None;
                    entry.fields_type = None;
                    entry.subresource = None;
                    Some(entry)
                })
                .collect::<Vec<_>>()
        })
        .filter(|entries| !entries.is_empty());
    config_map.metadata.annotations = None;
    config_map.binary_data = None;
}

/// Keeps everything the operator reads of an InvoiceService (spec, status, annotations) and
/// drops managed fields and `kubectl apply`'s copy of the last applied object.
pub(super) fn invoice_service(service: &mut InvoiceService) {
    service.metadata.managed_fields = None;
    if let Some(annotations) = &mut service.metadata.annotations {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}
