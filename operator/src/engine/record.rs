//! Recording: folds a decision into the next status ([`record`]), writes the intent of an
//! action that sets replicas before it is carried out ([`record_intent`]), and notes the API
//! server's refusal ([`note_refusal`]).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Decision, Outcome, PlannedAction, REQUEST_RATE_EVIDENCE, Step, timers};
use crate::{
    api::{
        ActionOutcome, ActionRecord, CanaryState, FailoverState, HISTORY_LIMIT, InFlightAction,
        InvoiceServiceStatus, ReadOnlyState, RemediationMode, ScaledOutState,
    },
    signals::DeploymentState,
};

/// Evidence keys of a refused action's record: who refused (`PodDisruptionBudget`, ...) and
/// the API server's message, so that history and `RemediationAllowed` keep naming the refusal
/// through the cooldown.
pub mod refusal_evidence {
    /// Who refused, a fixed PascalCase name.
    pub const REFUSED_BY: &str = "refusedBy";
    /// The API server's explanation.
    pub const MESSAGE: &str = "refusal";
}

/// Notes the API server's refusal on the action [`record`] just recorded as `Refused`.
pub fn note_refusal(status: &mut InvoiceServiceStatus, refused_by: &str, message: &str) {
    let records = status
        .last_action
        .iter_mut()
        .chain(status.history.first_mut())
        .filter(|record| record.outcome == ActionOutcome::Refused);
    for record in records {
        record.evidence.insert(
            refusal_evidence::REFUSED_BY.to_owned(),
            refused_by.to_owned(),
        );
        record
            .evidence
            .insert(refusal_evidence::MESSAGE.to_owned(), message.to_owned());
    }
}

/// Folds a decision into the next status: verdict, ladder, timers, and — when an action was
/// taken — history, last action and the reversal memory. `applied` is false when the API
/// server refused the action (e.g. a PodDisruptionBudget), which is recorded as `Refused`.
///
/// An action completed from `status.inFlight` is recorded like any other, with two
/// differences: the intent is removed, and the replicas before the action are the intent's
/// baseline, not `deployments` (which an interrupted run may have left half-scaled).
pub fn record(
    status: &InvoiceServiceStatus,
    decision: &Decision,
    deployments: &[DeploymentState],
    now: Timestamp,
    applied: bool,
) -> InvoiceServiceStatus {
    let mut next = fold_judgement(status, decision);
    let Outcome::Act { action, dry_run } = &decision.outcome else {
        return next;
    };
    let outcome = match (*dry_run, applied, action.rung) {
        (true, _, _) => ActionOutcome::NotTaken,
        (false, false, _) => ActionOutcome::Refused,
        (false, true, Some(_)) => ActionOutcome::Pending,
        (false, true, None) => ActionOutcome::Helped,
    };
    add_to_history(&mut next, action_record(action, *dry_run, outcome, now));
    if *dry_run {
        return next;
    }
    // Taken or refused, the action is over: nothing is left to resume.
    let intent = next.in_flight.take();
    if outcome == ActionOutcome::Refused {
        // The ladder moves past the refused rung: retrying it would meet the same
        // PodDisruptionBudget; the next rung (which the budget may allow: a rolling restart is
        // paced by the Deployment, not by evictions) is tried after the cooldown.
        return next;
    }
    let replicas_before = match intent {
        Some(intent) => intent.baseline,
        None => replicas_of(deployments),
    };
    remember(&mut next, action, replicas_before, now);
    next
}

/// The history entry of `action`.
fn action_record(
    action: &PlannedAction,
    dry_run: bool,
    outcome: ActionOutcome,
    now: Timestamp,
) -> ActionRecord {
    ActionRecord {
        action: action.kind(),
        target: action.step.describe(),
        reason: action.reason.clone(),
        evidence: action.evidence.clone(),
        at: Time(now),
        mode: if dry_run {
            RemediationMode::DryRun
        } else {
            RemediationMode::Enforce
        },
        outcome,
    }
}

/// Makes `record` the last action and the newest history entry.
fn add_to_history(next: &mut InvoiceServiceStatus, record: ActionRecord) {
    next.last_action = Some(record.clone());
    next.history.insert(0, record);
    next.history.truncate(HISTORY_LIMIT);
}

/// The memory a taken action leaves for its reversal: the scale-out baseline, read-only
/// mode, the failed-over zone and its replicas before — or its removal, for a reversal.
fn remember(
    next: &mut InvoiceServiceStatus,
    action: &PlannedAction,
    replicas_before: BTreeMap<String, i32>,
    now: Timestamp,
) {
    match &action.step {
        Step::ScaleOut { replicas } => {
            // The baseline is the replica count before the first ScaleOut of the incident.
            let scaled = next.scaled_out.get_or_insert(ScaledOutState {
                baseline: replicas_before,
                since: Time(now),
                written: BTreeMap::new(),
                written_at: None,
                request_rate: action.evidence.get(REQUEST_RATE_EVIDENCE).cloned(),
            });
            scaled.written.extend(replicas.clone());
            scaled.written_at = Some(Time(now));
        }
        Step::ScaleIn { .. } => next.scaled_out = None,
        Step::EnterReadOnly => next.read_only = Some(ReadOnlyState { since: Time(now) }),
        Step::ExitReadOnly => next.read_only = None,
        Step::ZoneFailover {
            zone, canary: true, ..
        } => {
            // The canary failed: the failover holds, and the zone must look healthy for
            // `failBack.after` again before the next one.
            if let Some(failover) = next.failover.as_mut() {
                failover.canary = None;
                failover.waiting = None;
            }
            forget_zone_timers(next, zone);
        }
        Step::ZoneFailover { zone, .. } => {
            next.failover = Some(FailoverState {
                zone: zone.clone(),
                since: Time(now),
                replicas_before,
                canary: None,
                waiting: None,
            });
            forget_zone_timers(next, zone);
        }
        Step::ZoneFailBack {
            replicas,
            canary: true,
            ..
        } => {
            if let Some(failover) = next.failover.as_mut() {
                failover.canary = Some(CanaryState {
                    since: Time(now),
                    replicas: replicas.clone(),
                });
                // What the canary waits for is said from the next decision on.
                failover.waiting = None;
            }
        }
        Step::ZoneFailBack { zone, .. } => {
            next.failover = None;
            forget_zone_timers(next, zone);
        }
        Step::RestartPod { .. } | Step::RolloutRestart { .. } => {}
    }
}

/// Stops the fail-back timers of `zone`: each failover, and each canary, starts them over.
fn forget_zone_timers(next: &mut InvoiceServiceStatus, zone: &str) {
    next.held_since.remove(&timers::zone_healthy(zone));
    next.held_since.remove(&timers::zone_canary_ready(zone));
}

/// The part of [`record`] that does not depend on the action being carried out: timers,
/// ladder, and the verdict on the previous action.
fn fold_judgement(status: &InvoiceServiceStatus, decision: &Decision) -> InvoiceServiceStatus {
    let mut next = status.clone();
    next.held_since = decision.held_since.clone();
    if let (Some(peak), Some(scaled)) = (&decision.load_peak, next.scaled_out.as_mut()) {
        scaled.request_rate = Some(peak.clone());
    }
    next.ladder = decision.ladder.clone();
    if let Some(failover) = next.failover.as_mut() {
        failover.waiting = decision.fail_back_waiting.clone();
    }
    if let Some(outcome) = decision.verdict {
        if let Some(last) = next.last_action.as_mut() {
            last.outcome = outcome;
        }
        if let Some(first) = next.history.first_mut()
            && first.outcome == ActionOutcome::Pending
        {
            first.outcome = outcome;
        }
    }
    next
}

/// Replicas per Deployment as observed (0 for one that does not exist).
fn replicas_of(deployments: &[DeploymentState]) -> BTreeMap<String, i32> {
    deployments
        .iter()
        .map(|deployment| (deployment.name.clone(), deployment.replicas))
        .collect()
}

/// The status to write before carrying out the decided action, when that action sets the
/// replicas of Deployments (ScaleOut, ScaleIn, or a zone failover or fail-back across
/// per-zone Deployments): the decision's timers, ladder and verdict, and `inFlight` with the
/// targets and the replicas now as the baseline. `None` for every other action, in DryRun,
/// and when the action is itself the completion of an intent already in status.
///
/// Writing it before the first Deployment is touched is what makes the action resumable: if
/// the operator dies between two writes, the next reconcile (here or on a new leader) finds
/// the intent and completes it with the original baseline, instead of deciding again on a
/// half-scaled cluster and taking its replicas for the baseline.
pub fn record_intent(
    status: &InvoiceServiceStatus,
    decision: &Decision,
    deployments: &[DeploymentState],
    now: Timestamp,
) -> Option<InvoiceServiceStatus> {
    let Outcome::Act {
        action,
        dry_run: false,
    } = &decision.outcome
    else {
        return None;
    };
    if status.in_flight.is_some() {
        return None;
    }
    let (zone, replicas) = match &action.step {
        Step::ScaleOut { replicas } | Step::ScaleIn { replicas } => (None, replicas),
        Step::ZoneFailover { zone, replicas, .. } | Step::ZoneFailBack { zone, replicas, .. }
            if !replicas.is_empty() =>
        {
            (Some(zone.clone()), replicas)
        }
        _ => return None,
    };
    let mut next = fold_judgement(status, decision);
    next.in_flight = Some(InFlightAction {
        action: action.kind(),
        rung: action.rung,
        zone,
        canary: action.step.is_canary(),
        replicas: replicas.clone(),
        baseline: replicas_of(deployments),
        reason: action.reason.clone(),
        evidence: action.evidence.clone(),
        started_at: Time(now),
    });
    Some(next)
}
