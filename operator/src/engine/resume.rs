//! Resume: completes an action that was interrupted between its writes. Pure.
//!
//! An action that sets the replicas of Deployments takes one write per Deployment (a zone
//! failover scales the healthy zones up, then drains the failed one). The controller writes
//! the intent, `status.inFlight`, before the first of them ([`super::record_intent`]); when
//! the operator is killed or loses its lease half-way, the intent is still in status and the
//! next reconcile — of a restarted operator or a new leader — finds it before deciding
//! anything new:
//!
//! - **Complete** it: the same action with the same targets, carried out again from the first
//!   write. Setting a Deployment to a replica count it already has changes nothing, so the
//!   writes that happened before the interruption are simply repeated. It is then recorded as
//!   any action is (history, Event, failover or scale-out state), with the intent's baseline
//!   as the replicas before it, and the intent removed. The cooldown, budget, blackout and
//!   storm gates are not asked again: they let this action start, and leaving it half done
//!   (a zone with the failed replicas *and* their copies, or half the fail-back) is worse
//!   than finishing it.
//! - **Hold** it while remediation is paused (a human asked for no writes; blocked by the
//!   Paused gate) or the service is in DryRun (reported as waiting): the intent stays and is
//!   completed once the operator may act again.
//! - **Stop** when it cannot be completed: a Deployment it sets no longer exists. Rolling the
//!   others back would be a new multi-step action planned on a cluster somebody is changing
//!   by hand, so the operator blocks with the `UnresumableAction` gate (a Warning Event and
//!   `RemediationAllowed=False` naming the missing Deployments) and decides nothing else
//!   until the Deployment is back (the action is then completed) or a human removes
//!   `status.inFlight` (the next decision starts from the cluster as it is).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Blocked, Decision, DecisionInput, Gate, PlannedAction, Target};
use crate::api::{ActionKind, InFlightAction, RemediationMode};

/// The decision for a service with an action in flight: its completion, or why it waits.
pub(super) fn resume(input: &DecisionInput<'_>, intent: &InFlightAction) -> Decision {
    let status = input.status;
    let remediation = &input.spec.remediation;
    let mut decision = Decision {
        dry_run: remediation.mode == RemediationMode::DryRun,
        // The intent was written with the timers and ladder of the decision that started it.
        held_since: status.held_since.clone(),
        ladder: status.ladder.clone(),
        ..Decision::default()
    };
    let interrupted = format!(
        "{} of {} was interrupted before it was recorded",
        intent.action.as_str(),
        target(intent).describe()
    );
    if remediation.paused || input.paused_by_annotation {
        decision.blocked = Some(Blocked {
            kind: intent.action,
            gate: Gate::Paused,
            detail: format!(
                "remediation is paused; {interrupted} and is completed once it is resumed"
            ),
        });
        return decision;
    }
    if decision.dry_run {
        decision.waiting = Some(format!(
            "DryRun: {interrupted} and is completed once the service is back in Enforce"
        ));
        return decision;
    }
    let missing: Vec<&str> = intent
        .replicas
        .keys()
        .filter(|name| {
            !input
                .deployments
                .iter()
                .any(|deployment| &deployment.name == *name && deployment.exists)
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        decision.blocked = Some(Blocked {
            kind: intent.action,
            gate: Gate::UnresumableAction,
            detail: format!(
                "{interrupted}, and deployment(s) {} it sets no longer exist: restore them to \
                 complete it, or remove status.inFlight to give it up (replicas before it: {})",
                missing.join(", "),
                describe_replicas(intent)
            ),
        });
        return decision;
    }
    decision.action = Some(PlannedAction {
        kind: intent.action,
        rung: intent.rung,
        target: target(intent),
        reason: format!(
            "{} (resumed: started at {} and interrupted before it was recorded)",
            intent.reason,
            started_at(&intent.started_at)
        ),
        evidence: intent.evidence.clone(),
        signal: None,
    });
    decision
}

/// The target the intent sets, as the engine planned it.
fn target(intent: &InFlightAction) -> Target {
    match (&intent.action, &intent.zone) {
        (ActionKind::ZoneFailover | ActionKind::ZoneFailBack, Some(zone)) => Target::Zone {
            zone: zone.clone(),
            replicas: intent.replicas.clone(),
        },
        _ => Target::Replicas(intent.replicas.clone()),
    }
}

fn describe_replicas(intent: &InFlightAction) -> String {
    intent
        .baseline
        .iter()
        .map(|(name, replicas)| format!("{name}={replicas}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// RFC 3339 at whole seconds, as in Events.
fn started_at(time: &Time) -> String {
    jiff::Timestamp::from_second(time.0.as_second())
        .unwrap_or(time.0)
        .to_string()
}
