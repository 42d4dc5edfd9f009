//! The deletion finalizer: an InvoiceService the operator manages carries
//! [`FINALIZER`], so deleting it waits until the operator has undone what it changed —
//! read-only mode back to read-write, a failed-over zone's replicas back, a scale-out back to
//! the baseline (see [`crate::undo`]) — each reported as an Event on the touched object, and
//! then lets it go. The finalizer is on the object, so the undo survives an operator restart
//! or a leader change between the delete and the clean-up. Does IO.
//!
//! With `--force-dry-run` the operator changes nothing, not even on deletion: the clean-up
//! only says in a Warning Event what stays, then removes the finalizer.

use json_patch::{
    AddOperation, Patch as JsonPatch, PatchOperation, RemoveOperation, TestOperation,
    jsonptr::PointerBuf,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::{Context, Error, observe::observe, remediate, write::publish};
use crate::{
    FIELD_MANAGER,
    act::{ActOutcome, act},
    api::InvoiceService,
    engine::{PlannedAction, Step},
    report::{self, EventSpec, Related},
    signals::{ServiceMetrics, UnknownReason},
    undo::{describe, undo_plan},
};

/// The finalizer that holds a deleted InvoiceService until its changes are undone.
pub const FINALIZER: &str = "invoiceops.dev/undo-remediation";

/// Whether the service carries [`FINALIZER`].
fn has_finalizer(service: &InvoiceService) -> bool {
    service.finalizers().iter().any(|name| name == FINALIZER)
}

fn api(context: &Context, service: &InvoiceService) -> Api<InvoiceService> {
    Api::namespaced(
        context.client.clone(),
        &service.namespace().unwrap_or_default(),
    )
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

/// Takes [`FINALIZER`] unless the service already carries it.
pub(super) async fn ensure_finalizer(
    context: &Context,
    service: &InvoiceService,
) -> Result<(), Error> {
    if has_finalizer(service) {
        return Ok(());
    }
    take_finalizer(context, service).await
}

/// Adds [`FINALIZER`] (see [`add_finalizer`]). Without the permission to patch
/// InvoiceServices the operator goes on without it — deleting a service then leaves what the
/// operator changed in place, as the startup permission review and one Warning log say —
/// rather than failing every reconcile.
async fn take_finalizer(context: &Context, service: &InvoiceService) -> Result<(), Error> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    match add_finalizer(context, service).await {
        Err(Error::PatchFinalizers {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 403 => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                warn!(
                    message = %status.message,
                    "no permission to patch InvoiceServices: going on without the deletion \
                     finalizer, so deleting one leaves what the operator changed in place"
                );
            }
            Ok(())
        }
        // The `test` op failed: the finalizers changed since the cached object — most often
        // our own add, which the cache has not caught up with. The next reconcile reads the
        // list afresh.
        Err(Error::PatchFinalizers {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 422 => {
            debug!("finalizers changed since the cached object; taking the finalizer later");
            Ok(())
        }
        other => other,
    }
}

/// Adds [`FINALIZER`], guarded by a `test` of the list it was computed from, so that a
/// concurrent change of the finalizers (another controller's) fails the patch instead of being
/// overwritten; the reconcile is then retried.
pub(super) async fn add_finalizer(
    context: &Context,
    service: &InvoiceService,
) -> Result<(), Error> {
    let operations = match &service.metadata.finalizers {
        None => vec![
            PatchOperation::Test(TestOperation {
                path: pointer(&["metadata", "finalizers"]),
                value: Value::Null,
            }),
            PatchOperation::Add(AddOperation {
                path: pointer(&["metadata", "finalizers"]),
                value: Value::from(vec![FINALIZER]),
            }),
        ],
        Some(existing) => vec![
            PatchOperation::Test(TestOperation {
                path: pointer(&["metadata", "finalizers"]),
                value: Value::from(existing.clone()),
            }),
            PatchOperation::Add(AddOperation {
                path: pointer(&["metadata", "finalizers", "-"]),
                value: Value::from(FINALIZER),
            }),
        ],
    };
    patch_finalizers(context, service, operations).await
}

async fn remove_finalizer(context: &Context, service: &InvoiceService) -> Result<(), Error> {
    let Some(index) = service
        .finalizers()
        .iter()
        .position(|name| name == FINALIZER)
    else {
        return Ok(());
    };
    let at = index.to_string();
    let operations = vec![
        PatchOperation::Test(TestOperation {
            path: pointer(&["metadata", "finalizers", &at]),
            value: Value::from(FINALIZER),
        }),
        PatchOperation::Remove(RemoveOperation {
            path: pointer(&["metadata", "finalizers", &at]),
        }),
    ];
    patch_finalizers(context, service, operations).await
}

async fn patch_finalizers(
    context: &Context,
    service: &InvoiceService,
    operations: Vec<PatchOperation>,
) -> Result<(), Error> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match api(context, service)
        .patch(
            &service.name_any(),
            &params,
            &Patch::<()>::Json(JsonPatch(operations)),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone already (another replica finished the clean-up): nothing to hold.
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::PatchFinalizers {
            name: service.name_any(),
            source,
        }),
    }
}

/// The object an undo touches, for its Event: the mode ConfigMap, the failed-over zone's
/// Deployment (or the single Deployment steered out of it), the first scaled Deployment.
fn touched(service: &InvoiceService, action: &PlannedAction) -> Option<Related> {
    let spec = &service.spec;
    match &action.step {
        Step::EnterReadOnly | Step::ExitReadOnly => spec
            .remediation
            .read_only
            .as_ref()
            .map(|policy| Related::ConfigMap(policy.switch.config_map.name.clone())),
        Step::ZoneFailover { zone, .. } | Step::ZoneFailBack { zone, .. } => spec
            .workload
            .deployments
            .iter()
            .flatten()
            .find(|deployment| &deployment.zone == zone)
            .map(|deployment| deployment.name.clone())
            .or_else(|| spec.workload.deployment.clone())
            .map(Related::Deployment),
        Step::ScaleOut { replicas } | Step::ScaleIn { replicas } => {
            replicas.keys().next().cloned().map(Related::Deployment)
        }
        Step::RestartPod { .. } | Step::RolloutRestart { .. } => None,
    }
}

/// Undoes what the operator changed for the deleted `service`, then removes the finalizer.
/// A step that fails leaves the finalizer in place and the reconcile is retried (every step
/// is idempotent); a workload that is gone has nothing left to undo.
pub(super) async fn finalize(context: &Context, service: &InvoiceService) -> Result<Action, Error> {
    if !has_finalizer(service) {
        return Ok(Action::await_change());
    }
    let now = jiff::Timestamp::now();
    let status = context.freshest_status(service);
    let observation = observe(
        &context.caches,
        service,
        ServiceMetrics::unknown(UnknownReason::NoData),
        now,
    );
    let plan = undo_plan(&service.spec, &status, &observation.deployments);
    if !plan.is_empty() && context.settings.force_dry_run {
        let left = describe(&plan);
        warn!(left = %left, "deleted under --force-dry-run: nothing undone");
        publish(
            context,
            service,
            &EventSpec {
                warning: true,
                reason: report::reasons::UNDO_SKIPPED,
                note: format!(
                    "deleted while the operator runs with --force-dry-run, so nothing is undone; \
                     still in place: {left}"
                ),
                action: "Undo",
                related: None,
            },
        )
        .await;
    } else {
        for action in &plan {
            undo(context, service, action, now).await?;
        }
    }
    remove_finalizer(context, service).await?;
    info!(undone = plan.len(), "deleted; finalizer removed");
    Ok(Action::await_change())
}

async fn undo(
    context: &Context,
    service: &InvoiceService,
    action: &PlannedAction,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let label = action.kind().as_str();
    info!(action = label, target = %action.step.describe(), "undoing on deletion");
    match act(&context.client, service, action, now).await {
        Ok(ActOutcome::Applied) => {}
        Ok(ActOutcome::Refused {
            by: crate::act::refused_by::NOT_FOUND,
            ..
        }) => {
            info!(action = label, "nothing to undo: the object is gone");
            return Ok(());
        }
        Ok(ActOutcome::Refused { reason, .. }) => {
            // The reversals write /scale, a ConfigMap key and an affinity: nothing a budget
            // refuses. A missing permission (or any other refusal) keeps the finalizer: the
            // Warning says which, and the README how to let the object go by hand.
            warn!(action = label, %reason, "undo refused by the api server");
            return Err(Error::Undo {
                name: service.name_any(),
                action: label,
                reason,
            });
        }
        Err(source) => {
            return Err(Error::Act {
                name: service.name_any(),
                source,
            });
        }
    }
    remediate::count(context, label, "undone", "Enforce");
    let mut event = report::undo_event(action);
    event.related = touched(service, action);
    publish(context, service, &event).await;
    Ok(())
}
