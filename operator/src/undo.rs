//! Undo: the reversals that hand a workload back as it was before the operator touched it,
//! for when its InvoiceService is deleted. Pure: plans from the status (the operator's memory
//! of what it changed) and the Deployments as they are now; the controller carries the plan
//! out with the same `act` as any other action.
//!
//! What the operator changes and keeps in status — and so what is undone, in this order:
//!
//! 1. read-only mode (`status.readOnly`): the mode key back to the spec's read-write value, first,
//!    because every invoice write is refused until then;
//! 2. a failover or scale-out interrupted between its writes (`status.inFlight`, the operator
//!    killed mid-way): its Deployments back to the replicas from before it;
//! 3. a zone failover (`status.failover`): the replicas from before it (per-zone Deployments),
//!    or the zone exclusion removed from the single Deployment's node affinity; a fail-back
//!    canary running in the zone (`status.failover.canary`) is part of it;
//! 4. a scale-out (`status.scaledOut`): each Deployment back to its baseline, never raised (a
//!    Deployment already at or below it is left alone), through its autoscaler if one drives it.
//!
//! Evictions and rollout restarts leave nothing behind to undo.

use std::collections::BTreeMap;

use crate::{
    api::{ActionKind, Evidence, InFlightAction, InvoiceServiceSpec, InvoiceServiceStatus},
    engine::{PlannedAction, Step},
    signals::DeploymentState,
};

/// The reversals that undo what `status` says the operator changed, in the order to carry
/// them out. Empty when nothing is left to undo.
pub fn undo_plan(
    spec: &InvoiceServiceSpec,
    status: &InvoiceServiceStatus,
    deployments: &[DeploymentState],
) -> Vec<PlannedAction> {
    let mut plan = Vec::new();
    if status.read_only.is_some() && spec.remediation.read_only.is_some() {
        plan.push(reversal(
            Step::ExitReadOnly,
            "the InvoiceService is being deleted: back to read-write mode".to_owned(),
        ));
    }
    // A reversal in flight needs nothing of its own: its state (failover, scale-out) is only
    // cleared once it completes, so the steps below finish it.
    // A canary's intent (started or taken back) needs nothing either: the failover it
    // belongs to is still in status, and its fail-back restores every replica.
    let interrupted = status.in_flight.as_ref().filter(|intent| {
        !intent.canary
            && matches!(
                intent.action,
                ActionKind::ZoneFailover | ActionKind::ScaleOut
            )
    });
    let rolled_back = interrupted.map(rolled_back).unwrap_or_default();
    if let Some(intent) = interrupted
        && !rolled_back.is_empty()
    {
        plan.push(roll_back(intent, rolled_back.clone()));
    }
    if let Some(failover) = &status.failover {
        plan.push(reversal(
            Step::ZoneFailBack {
                zone: failover.zone.clone(),
                replicas: failover.replicas_before.clone(),
                canary: false,
            },
            format!(
                "the InvoiceService is being deleted: zone {} gets its replicas back",
                failover.zone
            ),
        ));
    }
    plan.extend(scale_in(status, deployments, &rolled_back));
    plan
}

fn reversal(step: Step, reason: String) -> PlannedAction {
    PlannedAction::reversal(step, reason, Evidence::new())
}

/// The replicas from before an interrupted failover or scale-out, of the Deployments it sets.
fn rolled_back(intent: &InFlightAction) -> BTreeMap<String, i32> {
    intent
        .baseline
        .iter()
        .filter(|(name, _)| intent.replicas.contains_key(*name))
        .map(|(name, replicas)| (name.clone(), *replicas))
        .collect()
}

/// Rolls an interrupted failover (back to its zone) or scale-out back to `replicas`.
fn roll_back(intent: &InFlightAction, replicas: BTreeMap<String, i32>) -> PlannedAction {
    let reason = format!(
        "the InvoiceService is being deleted: the interrupted {} is rolled back",
        intent.action.as_str()
    );
    match &intent.zone {
        Some(zone) if intent.action == ActionKind::ZoneFailover => reversal(
            Step::ZoneFailBack {
                zone: zone.clone(),
                replicas,
                canary: false,
            },
            reason,
        ),
        _ => reversal(Step::ScaleIn { replicas }, reason),
    }
}

/// Each scaled-out Deployment back to its baseline, never raised. `rolled_back`: the
/// replicas the interrupted action is rolled back to.
fn scale_in(
    status: &InvoiceServiceStatus,
    deployments: &[DeploymentState],
    rolled_back: &BTreeMap<String, i32>,
) -> Option<PlannedAction> {
    let scaled = status.scaled_out.as_ref()?;
    // The replicas once the fail-back above is done: a scale-out before the failover is
    // inside its `replicasBefore`, and is undone after it.
    let mut after: BTreeMap<&str, i32> = deployments
        .iter()
        .filter(|deployment| deployment.exists)
        .map(|deployment| (deployment.name.as_str(), deployment.replicas))
        .collect();
    let restored = status
        .failover
        .iter()
        .flat_map(|state| &state.replicas_before)
        .chain(rolled_back);
    for (name, replicas) in restored {
        if let Some(now) = after.get_mut(name.as_str()) {
            *now = *replicas;
        }
    }
    let targets: BTreeMap<String, i32> = scaled
        .baseline
        .iter()
        .filter(|(name, baseline)| {
            after
                .get(name.as_str())
                .is_some_and(|replicas| **baseline < *replicas)
        })
        .map(|(name, baseline)| (name.clone(), *baseline))
        .collect();
    (!targets.is_empty()).then(|| {
        reversal(
            Step::ScaleIn { replicas: targets },
            "the InvoiceService is being deleted: back to the baseline replicas".to_owned(),
        )
    })
}

/// What a reversal leaves as it was, in one sentence for the Event that says the undo was
/// skipped (`--force-dry-run` changes nothing, not even on deletion).
pub fn describe(plan: &[PlannedAction]) -> String {
    plan.iter()
        .map(|action| format!("{} {}", action.kind().as_str(), action.step.describe()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
