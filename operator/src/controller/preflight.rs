//! The pre-flight step of a reconcile: gathers from the caches the facts [`crate::preflight`]
//! judges (the service's Deployments that exist, the zones nodes carry, the other services'
//! claims), and reports a refusal. Reads only in-memory caches; writes status and an Event
//! when the refusal changes. Does IO.

use std::collections::BTreeSet;

use futures::FutureExt;
use kube::{
    Resource, ResourceExt,
    runtime::{controller::Action, reflector::Store},
};
use tracing::warn;

use super::{
    Caches, Context, Error,
    reconcile::requeue,
    write::{patch_status, publish},
};
use crate::{
    api::{InvoiceService, InvoiceServiceStatus, WorkloadKind},
    preflight::{self, Claim, ClusterFacts, Refusal},
    report,
};

/// Refuses a valid service the cluster refutes: reports `Ready=False` with the reason (and a
/// Warning Event when it changes) and returns the action that ends the reconcile before
/// anything is decided or acted on. `None`: nothing refuted, go on.
///
/// A refusal is requeued, not left to wait for a change of the service: what refutes it is
/// elsewhere (a Deployment created, the older claimant deleted, a node joining a zone).
pub(super) async fn refuse(
    context: &Context,
    service: &InvoiceService,
    previous: &InvoiceServiceStatus,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Result<Option<Action>, Error> {
    let Some(refusal) = judge(&context.caches, context.services.get(), service) else {
        return Ok(None);
    };
    let (status, event) = report::report_refused(previous, &refusal, generation, now);
    if status != *previous {
        patch_status(context, service, &status).await?;
    }
    if let Some(event) = event {
        warn!(reason = refusal.reason, problems = %event.note, "refusing to act");
        publish(context, service, &event).await;
    }
    Ok(Some(requeue(&service.spec)))
}

/// What the caches refute about `service`. `services` is `None` where the controller runs
/// without the InvoiceService store (unit tests): no claim is judged then.
pub(super) fn judge(
    caches: &Caches,
    services: Option<&Store<InvoiceService>>,
    service: &InvoiceService,
) -> Option<Refusal> {
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let spec = &service.spec;
    let wanted = spec.workload.deployment_names();

    let kind = spec.workload.kind;
    let kind_synced = match kind {
        WorkloadKind::Deployment => synced(&caches.deployments),
        WorkloadKind::Rollout => synced(&caches.rollouts),
    };
    let existing_deployments = kind_synced.then(|| {
        wanted
            .iter()
            .copied()
            .filter(|name| caches.workload(kind, namespace, name).is_some())
            .collect::<BTreeSet<&str>>()
    });
    let kind_not_served = kind == WorkloadKind::Rollout
        && caches
            .rollouts_not_served
            .load(std::sync::atomic::Ordering::Relaxed);

    let nodes = caches.nodes.state();
    let node_zones = (synced(&caches.nodes) && !nodes.is_empty()).then(|| {
        nodes
            .iter()
            .filter_map(|node| node.labels().get(&spec.workload.zone_label))
            .map(String::as_str)
            .collect::<BTreeSet<&str>>()
    });

    let others = services.map(Store::state).unwrap_or_default();
    let facts = ClusterFacts {
        existing_deployments,
        kind_not_served,
        node_zones,
        others: others
            .iter()
            // Borrowed compares: this runs for every service of the fleet on every reconcile.
            .filter(|other| other.metadata.namespace.as_deref() == Some(namespace))
            .filter(|other| other.metadata.name != service.metadata.name)
            .map(|other| claim(other))
            .collect(),
    };
    preflight::check(&claim(service), spec, &facts)
}

fn claim(service: &InvoiceService) -> Claim<'_> {
    Claim {
        name: service.metadata.name.as_deref().unwrap_or_default(),
        created: service
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|time| time.0),
        deployments: service.spec.workload.deployment_names(),
    }
}

/// Whether the store has had its first full list. Polled once, without waiting: a
/// reconcile never blocks on a cache. (Polling takes over the store's single waker slot; the
/// `/readyz` task polls afresh every second and does not mind.)
fn synced<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|ready| ready.is_ok())
}

#[cfg(test)]
mod tests;
