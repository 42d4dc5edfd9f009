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

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    Blocked, Decision, DecisionInput, Gate, Outcome, PlannedAction, Step,
    decision::describe_objects,
};
use crate::api::{ActionKind, InFlightAction, RemediationMode};

/// The decision for a service with an action in flight: its completion, or why it waits.
pub(super) fn resume(input: &DecisionInput<'_>, intent: &InFlightAction) -> Decision {
    let status = input.status;
    Decision {
        outcome: outcome(input, intent),
        // The intent was written with the timers and ladder of the decision that started it.
        held_since: status.held_since.clone(),
        ladder: status.ladder.clone(),
        ..Decision::default()
    }
}

/// Completes the intent, or holds it (paused, DryRun), or stops (unresumable).
fn outcome(input: &DecisionInput<'_>, intent: &InFlightAction) -> Outcome {
    let remediation = &input.spec.remediation;
    let step = step(intent);
    let described = step.as_ref().map_or_else(
        || describe_objects("deployment", intent.replicas.keys()),
        Step::describe,
    );
    let interrupted = format!(
        "{} of {described} was interrupted before it was recorded",
        intent.action.as_str(),
    );
    let blocked = |gate, detail| {
        Outcome::Blocked(Blocked {
            kind: intent.action,
            gate,
            detail,
        })
    };
    if remediation.paused || input.paused_by_annotation {
        return blocked(
            Gate::Paused,
            format!("remediation is paused; {interrupted} and is completed once it is resumed"),
        );
    }
    if remediation.mode == RemediationMode::DryRun {
        return Outcome::Waiting(format!(
            "DryRun: {interrupted} and is completed once the service is back in Enforce"
        ));
    }
    let Some(step) = step else {
        return blocked(
            Gate::UnresumableAction,
            format!(
                "{interrupted}, and {} is not an action that sets replicas: remove \
                 status.inFlight to give it up",
                intent.action.as_str()
            ),
        );
    };
    let missing = missing_deployments(input, intent);
    if !missing.is_empty() {
        return blocked(
            Gate::UnresumableAction,
            format!(
                "{interrupted}, and deployment(s) {} it sets no longer exist: restore them to \
                 complete it, or remove status.inFlight to give it up (replicas before it: {})",
                missing.join(", "),
                describe_replicas(&intent.baseline)
            ),
        );
    }
    Outcome::Act {
        action: PlannedAction {
            step,
            rung: intent.rung,
            reason: format!(
                "{} (resumed: started at {} and interrupted before it was recorded)",
                intent.reason,
                started_at(&intent.started_at)
            ),
            evidence: intent.evidence.clone(),
            signal: None,
        },
        dry_run: false,
    }
}

/// The step the intent sets, as the engine planned it; `None` for an intent of an action
/// that sets no replicas (the operator never writes one).
fn step(intent: &InFlightAction) -> Option<Step> {
    let replicas = intent.replicas.clone();
    let canary = intent.canary;
    match (intent.action, &intent.zone) {
        (ActionKind::ScaleOut, _) => Some(Step::ScaleOut { replicas }),
        (ActionKind::ScaleIn, _) => Some(Step::ScaleIn { replicas }),
        (ActionKind::ZoneFailover, Some(zone)) => Some(Step::ZoneFailover {
            zone: zone.clone(),
            replicas,
            canary,
        }),
        (ActionKind::ZoneFailBack, Some(zone)) => Some(Step::ZoneFailBack {
            zone: zone.clone(),
            replicas,
            canary,
        }),
        _ => None,
    }
}

/// The Deployments the intent sets that no longer exist.
fn missing_deployments<'a>(input: &DecisionInput<'_>, intent: &'a InFlightAction) -> Vec<&'a str> {
    intent
        .replicas
        .keys()
        .filter(|name| {
            !input
                .deployments
                .iter()
                .any(|deployment| &deployment.name == *name && deployment.exists)
        })
        .map(String::as_str)
        .collect()
}

fn describe_replicas(replicas: &BTreeMap<String, i32>) -> String {
    replicas
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
