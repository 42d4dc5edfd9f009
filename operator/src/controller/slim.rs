//! What the reflector caches keep: each watched object is stripped of the fields the
//! operator never reads before it enters its store, so 12,000 pods cost a fraction of their
//! full size in memory. No IO.
//!
//! What is read from the caches, and therefore kept (see `observe` and the watch mappers in
//! the controller): every object's name, namespace, labels, uid and resource version; a pod's
//! owner references, deletion timestamp, `spec.nodeName`, phase, conditions and container
//! statuses; a Deployment's `spec.replicas`, selector and status; a Node's labels and
//! status conditions; a ConfigMap's `data`. Remediation (`act`) reads what it changes from the
//! API server, never from a cache.
//!
//! Stripped: `metadata.managedFields` of every kind; annotations of pods, Deployments,
//! Nodes and ConfigMaps (only InvoiceService annotations are read; `kubectl apply`'s
//! last-applied-configuration alone doubles a Deployment or ConfigMap); a pod's spec apart
//! from its node and its status apart from phase, conditions and container statuses; a
//! Deployment's pod template; a Node's `status.images`; a ConfigMap's `binaryData`; an
//! InvoiceService's managed fields and last-applied annotation (its other annotations and
//! its status are read).

use crate::api::InvoiceService;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Node, Pod, PodSpec, PodStatus},
};
/// Keeps what `observe` and the pod watch mapper read: metadata but annotations and managed
/// fields, `spec.nodeName`, and phase, conditions and container statuses.
pub(super) fn pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = &mut pod.spec {
        *spec = PodSpec {
            node_name: spec.node_name.take(),
            ..PodSpec::default()
        };
    }
    if let Some(status) = &mut pod.status {
        *status = PodStatus {
            phase: status.phase.take(),
            conditions: status.conditions.take(),
            container_statuses: status.container_statuses.take(),
            ..PodStatus::default()
        };
    }
}

/// Keeps replicas, selector, strategy and status; drops the pod template (the largest part),
/// annotations and managed fields. Steering the affinity reads the template from the API.
pub(super) fn deployment(deployment: &mut Deployment) {
    deployment.metadata.managed_fields = None;
    deployment.metadata.annotations = None;
    deployment.spec.template = Default::default();
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

/// Keeps `data` (the read-only mode switch); drops `binaryData`, annotations and managed
/// fields.
pub(super) fn config_map(config_map: &mut ConfigMap) {
    config_map.metadata.managed_fields = None;
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
