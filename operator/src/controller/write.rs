//! Report's IO: the status patch and the Events, the only writes besides the actions. The
//! status is written only when it changed (a quiet steady state costs no writes); what this
//! replica wrote is remembered until the cache has caught up with it.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        events::{Event, EventType},
        reflector::ObjectRef,
    },
};
use serde_json::json;
use tracing::{debug, warn};

use super::{Context, Error, memory::WrittenStatus};
use crate::{
    FIELD_MANAGER,
    api::{InvoiceService, InvoiceServiceStatus},
    foreign,
    report::{self, EventSpec, Related},
};

impl Context {
    /// The service's status as this replica knows it: the cached object's, or the one this
    /// replica wrote while the cache still lags behind it.
    pub(super) fn freshest_status(&self, service: &InvoiceService) -> InvoiceServiceStatus {
        self.memory.freshest_status(service)
    }
}

/// Writes the status (server-side apply, forced: the operator owns it) and remembers what the
/// API server returned until the cache catches up ([`Context::freshest_status`]).
pub(super) async fn patch_status(
    context: &Context,
    service: &InvoiceService,
    status: &InvoiceServiceStatus,
) -> Result<(), Error> {
    let api: Api<InvoiceService> = Api::namespaced(
        context.client.clone(),
        &service.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": InvoiceService::api_version(&()),
        "kind": InvoiceService::kind(&()),
        "status": status,
    });
    let patched = api
        .patch_status(
            &service.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            name: service.name_any(),
            source,
        })?;
    if let Some(resource_version) = patched
        .metadata
        .resource_version
        .as_deref()
        .and_then(|version| version.parse::<u64>().ok())
    {
        context.memory.wrote(
            &ObjectRef::from_obj(service),
            WrittenStatus {
                resource_version,
                status: patched.status.unwrap_or_else(|| status.clone()),
            },
        );
    }
    Ok(())
}

/// Publishes an Event on the InvoiceService, and on the object it touched (if any).
pub(super) async fn publish(context: &Context, service: &InvoiceService, event: &EventSpec) {
    let reference = service.object_ref(&());
    let secondary = event.related.as_ref().map(|related| {
        let (kind, api_version, name) = match related {
            Related::Pod(name) => ("Pod", "v1".to_owned(), name),
            // The workload's kind: a Deployment or an Argo Rollout.
            Related::Deployment(name) => {
                let kind = service.spec.workload.kind;
                let api_version = format!("{}/{}", kind.group(), kind.version());
                (kind.as_str(), api_version, name)
            }
            Related::ConfigMap(name) => ("ConfigMap", "v1".to_owned(), name),
        };
        ObjectReference {
            api_version: Some(api_version),
            kind: Some(kind.to_owned()),
            name: Some(name.clone()),
            namespace: service.namespace(),
            ..ObjectReference::default()
        }
    });
    let kube_event = Event {
        type_: if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason.to_owned(),
        note: Some(event.note.chars().take(1000).collect()),
        action: event.action.to_owned(),
        secondary: secondary.clone(),
    };
    if let Err(error) = context.recorder.publish(&kube_event, &reference).await {
        warn!(
            error = &error as &dyn std::error::Error,
            reason = event.reason,
            "failed to publish event"
        );
    }
    // The touched object gets the same Event, so `kubectl describe pod` tells the story too.
    if let Some(secondary) = secondary
        && let Err(error) = context.recorder.publish(&kube_event, &secondary).await
    {
        debug!(
            error = &error as &dyn std::error::Error,
            "failed to publish event on the touched object"
        );
    }
}

/// The Warning Event of a foreign change, on the InvoiceService and the changed object,
/// naming who made it (the caches carry who last wrote the replicas and the mode key).
pub(super) fn foreign_change_event(
    service: &InvoiceService,
    change: &foreign::ForeignChange,
) -> EventSpec {
    let related = match change {
        foreign::ForeignChange::ModeSwitched { .. } => service
            .spec
            .remediation
            .read_only
            .as_ref()
            .map(|policy| Related::ConfigMap(policy.switch.config_map.name.clone())),
        foreign::ForeignChange::Replicas { deployment, .. }
        | foreign::ForeignChange::AutoscalerFloor { deployment, .. }
        | foreign::ForeignChange::ZoneRestored { deployment, .. }
        | foreign::ForeignChange::ZoneReadmitted { deployment, .. } => {
            Some(Related::Deployment(deployment.clone()))
        }
    };
    let note = foreign::describe(change);
    let reason = if change.reverted_after().is_some() {
        warn!(change = %note, "another controller reverted the operator's write");
        report::reasons::TUG_OF_WAR
    } else {
        warn!(change = %note, "adopted a change made by someone else");
        report::reasons::EXTERNAL_CHANGE_ADOPTED
    };
    EventSpec {
        warning: true,
        reason,
        note,
        action: "Evaluate",
        related,
    }
}
