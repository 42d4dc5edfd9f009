//! Walking the ladder: the rung to try for the symptom, after the ones already tried, and
//! the action each rung plans.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    Attention, Blocked, Decision, DecisionInput, Gate, Outcome, PlannedAction, Step,
    facts::Symptom, gate::gate,
};
use crate::{
    api::{ActionKind, ActionOutcome, Evidence, InvoiceServiceStatus, LadderStatus, Rung},
    foreign::contested,
    signals::DeploymentState,
};

/// Evidence key of a ScaleOut that answered a latency breach: the service's request rate then.
pub const REQUEST_RATE_EVIDENCE: &str = "requestRate";

/// Takes the next rung for `symptom` (gated), or says why there is none. `improved`: the
/// signal is lower than when the current rung was taken, so a repeatable rung is repeated.
pub(super) fn climb(
    input: &DecisionInput<'_>,
    symptom: &Symptom,
    improved: bool,
    decision: &mut Decision,
) {
    let status = input.status;
    let addressing: Vec<Rung> = input
        .spec
        .effective_ladder()
        .into_iter()
        .filter(|rung| symptom.rungs().contains(rung))
        .collect();
    let (signal, value) = symptom.signal();
    let previous = status
        .ladder
        .as_ref()
        .filter(|ladder| ladder.signal.as_deref() == Some(signal));
    if previous.is_some_and(|ladder| ladder.exhausted) {
        decision.attention.push(Attention::LadderExhausted);
        decision.outcome = Outcome::Blocked(Blocked {
            kind: rung_action(*addressing.last().unwrap_or(&Rung::RolloutRestart)),
            gate: Gate::LadderExhausted,
            detail: format!("every rung was tried and {signal} is still {value:.3}"),
        });
        return;
    }
    let current = previous.and_then(|ladder| ladder.rung);
    let start = first_untried(status, &addressing, current, improved);
    let chosen = addressing
        .iter()
        .skip(start)
        .find_map(|rung| plan_rung(input, *rung, symptom));
    let Some(action) = chosen else {
        no_rung_left(input, symptom, &addressing, decision);
        return;
    };
    decision.outcome = gate(input, action);
    if let Outcome::Act { action, .. } = &decision.outcome {
        decision.ladder = Some(LadderStatus {
            rung: action.rung,
            since: Some(Time(input.now)),
            exhausted: false,
            signal: Some(signal.to_owned()),
            value: Some(format!("{value:.3}")),
        });
    }
}

/// The index in `addressing` of the first rung to try: the current rung again when it is
/// repeatable and helped, otherwise the one after it.
fn first_untried(
    status: &InvoiceServiceStatus,
    addressing: &[Rung],
    current: Option<Rung>,
    improved: bool,
) -> usize {
    let refused = |rung: Rung| {
        status.last_action.as_ref().is_some_and(|last| {
            last.outcome == ActionOutcome::Refused && last.action == rung_action(rung)
        })
    };
    let repeatable = |rung: Rung| {
        improved && matches!(rung, Rung::RestartPod | Rung::ScaleOut) && !refused(rung)
    };
    match current {
        Some(rung) if repeatable(rung) => addressing.iter().position(|r| *r == rung),
        Some(rung) => addressing.iter().position(|r| *r == rung).map(|i| i + 1),
        None => Some(0),
    }
    .unwrap_or(0)
}

/// No rung can act: none addressing the symptom is in the ladder, or every one was tried.
fn no_rung_left(
    input: &DecisionInput<'_>,
    symptom: &Symptom,
    addressing: &[Rung],
    decision: &mut Decision,
) {
    let (signal, value) = symptom.signal();
    let Some(last) = addressing.last() else {
        decision.outcome = Outcome::Blocked(Blocked {
            kind: rung_action(symptom.rungs()[0]),
            gate: Gate::NotInLadder,
            detail: format!(
                "{} would address {signal} {value:.3} but is not in the ladder",
                symptom.rungs()[0].as_str()
            ),
        });
        return;
    };
    decision.attention.push(Attention::LadderExhausted);
    decision.ladder = Some(LadderStatus {
        exhausted: true,
        signal: Some(signal.to_owned()),
        value: Some(format!("{value:.3}")),
        ..input.status.ladder.clone().unwrap_or(LadderStatus {
            rung: None,
            since: Some(Time(input.now)),
            exhausted: true,
            signal: None,
            value: None,
        })
    });
    decision.outcome = Outcome::Blocked(Blocked {
        kind: rung_action(*last),
        gate: Gate::LadderExhausted,
        detail: format!("every rung for {signal} was tried and it is still {value:.3}"),
    });
}

/// The action a rung takes.
pub(super) fn rung_action(rung: Rung) -> ActionKind {
    match rung {
        Rung::RestartPod => ActionKind::RestartPod,
        Rung::RolloutRestart => ActionKind::RolloutRestart,
        Rung::ScaleOut => ActionKind::ScaleOut,
        Rung::ReadOnly => ActionKind::EnterReadOnly,
        Rung::ZoneFailover => ActionKind::ZoneFailover,
    }
}

/// Plans the action of one rung for the symptom, or `None` when the rung cannot help now
/// (nothing to scale, no switch, no healthy zone to move to).
fn plan_rung(input: &DecisionInput<'_>, rung: Rung, symptom: &Symptom) -> Option<PlannedAction> {
    let (signal, value) = symptom.signal();
    let (step, reason) = match rung {
        Rung::RestartPod => restart_pods(input, symptom)?,
        Rung::RolloutRestart => rollout_restart(input, signal, value)?,
        Rung::ScaleOut => scale_out(input, signal, value)?,
        Rung::ReadOnly => enter_read_only(input, value)?,
        Rung::ZoneFailover => zone_failover(input, symptom)?,
    };
    Some(PlannedAction {
        step,
        rung: Some(rung),
        reason,
        evidence: evidence(input, rung, symptom),
        signal: Some((signal.to_owned(), value)),
    })
}

/// The numbers behind a rung's action.
fn evidence(input: &DecisionInput<'_>, rung: Rung, symptom: &Symptom) -> Evidence {
    let evaluation = input.evaluation;
    let (signal, value) = symptom.signal();
    let mut evidence = Evidence::new();
    evidence.insert(signal.to_owned(), format!("{value:.3}"));
    if let Ok(ratio) = evaluation.error_ratio {
        evidence.insert("errorRatio".to_owned(), format!("{ratio:.4}"));
    }
    if let Ok(latency) = evaluation.latency_seconds {
        evidence.insert("latencySeconds".to_owned(), format!("{latency:.3}"));
    }
    // A scale-out for load remembers the load, so that ScaleIn waits for it to go.
    if let (Rung::ScaleOut, Symptom::Latency { .. }, Ok(rate)) =
        (rung, symptom, evaluation.request_rate)
    {
        evidence.insert(REQUEST_RATE_EVIDENCE.to_owned(), format!("{rate:.3}"));
    }
    evidence
}

/// Evicts the worst unhealthy pods, at most `restartPod.maxUnavailable`.
fn restart_pods(input: &DecisionInput<'_>, symptom: &Symptom) -> Option<(Step, String)> {
    let Symptom::BadPods { pods, .. } = symptom else {
        return None;
    };
    let evaluation = input.evaluation;
    let limit = input.spec.remediation.restart_pod.max_unavailable as usize;
    let chosen: Vec<String> = pods.iter().take(limit).cloned().collect();
    let problems: Vec<String> = chosen
        .iter()
        .filter_map(|name| {
            let pod = evaluation.pods.iter().find(|pod| &pod.name == name)?;
            Some(format!("{name}: {}", pod.problem.as_ref()?.describe()))
        })
        .collect();
    let reason = format!(
        "{} of {} pods unhealthy ({})",
        pods.len(),
        evaluation.pods.len(),
        problems.join("; ")
    );
    Some((Step::RestartPod { pods: chosen }, reason))
}

/// Rolls every Deployment that has replicas.
fn rollout_restart(input: &DecisionInput<'_>, signal: &str, value: f64) -> Option<(Step, String)> {
    let deployments: Vec<String> = input
        .current_replicas()
        .into_iter()
        .filter(|(_, replicas)| *replicas > 0)
        .map(|(name, _)| name)
        .collect();
    (!deployments.is_empty()).then(|| {
        (
            Step::RolloutRestart { deployments },
            format!("service-wide trouble: {signal} {value:.3}"),
        )
    })
}

/// Adds `scale.step` replicas to every Deployment below `maxReplicas`, except in a failed-over
/// zone.
fn scale_out(input: &DecisionInput<'_>, signal: &str, value: f64) -> Option<(Step, String)> {
    let scale = &input.spec.remediation.scale;
    let failed_zone = input.failed_zone();
    let mut targets = BTreeMap::new();
    for deployment in input.deployments.iter().filter(|d| d.exists) {
        if deployment.zone.is_some() && deployment.zone.as_deref() == failed_zone {
            continue;
        }
        // Another controller keeps its replicas where it wants them (a tug of war).
        if contested::holds(
            &input.status.held_since,
            &contested::replicas(&deployment.name),
        ) {
            continue;
        }
        let wanted = (deployment.replicas + scale.step).min(scale.max_replicas);
        if wanted > deployment.replicas {
            targets.insert(deployment.name.clone(), wanted);
        }
    }
    (!targets.is_empty()).then(|| {
        (
            Step::ScaleOut { replicas: targets },
            format!(
                "{signal} {value:.3} over objective; adding {} replica(s) per deployment, at most {}",
                scale.step, scale.max_replicas
            ),
        )
    })
}

/// Switches to read-only mode, unless it is on or someone switched it off in this incident.
fn enter_read_only(input: &DecisionInput<'_>, value: f64) -> Option<(Step, String)> {
    let policy = input.spec.remediation.read_only.as_ref()?;
    // Someone switched read-only mode off during this incident: not entered again.
    let hands_off = input
        .status
        .held_since
        .contains_key(crate::foreign::hands_off::READ_ONLY)
        || contested::holds(&input.status.held_since, contested::READ_ONLY);
    (input.status.read_only.is_none() && !hands_off).then(|| {
        (
            Step::EnterReadOnly,
            format!(
                "database pool {value:.3} above {} for {}",
                policy.enter_when.db_pool_utilization_above, policy.enter_when.for_
            ),
        )
    })
}

/// Fails the down zone over to the others.
fn zone_failover(input: &DecisionInput<'_>, symptom: &Symptom) -> Option<(Step, String)> {
    let Symptom::ZoneDown { zone, ratio } = symptom else {
        return None;
    };
    // One zone failed over at a time; a second failing zone is for a human; and a zone
    // someone brought back during this incident is not failed over again.
    if input.status.failover.is_some()
        || input
            .status
            .held_since
            .contains_key(&crate::foreign::hands_off::zone(zone))
        || contested::holds(&input.status.held_since, &contested::zone(zone))
    {
        return None;
    }
    let unhealthy_when = &input.spec.remediation.zone_failover.unhealthy_when;
    Some((
        Step::ZoneFailover {
            zone: zone.clone(),
            replicas: failover_replicas(input, zone),
            canary: false,
        },
        format!(
            "zone {zone} 5xx ratio {ratio:.3} above {} for {} while other zones are healthy",
            unhealthy_when.zone_error_ratio_above, unhealthy_when.for_
        ),
    ))
}

/// Replica counts after failing `zone` over: its Deployment to 0, its replicas spread over the
/// healthy zones (rounded up), each capped at `maxReplicas`. Empty for a single Deployment.
fn failover_replicas(input: &DecisionInput<'_>, zone: &str) -> BTreeMap<String, i32> {
    let zonal: Vec<&DeploymentState> = input
        .deployments
        .iter()
        .filter(|deployment| deployment.exists && deployment.zone.is_some())
        .collect();
    let Some(failed) = zonal.iter().find(|d| d.zone.as_deref() == Some(zone)) else {
        return BTreeMap::new();
    };
    let healthy: Vec<&&DeploymentState> = zonal
        .iter()
        .filter(|deployment| {
            deployment.zone.as_deref() != Some(zone)
                && input.evaluation.zones.iter().any(|z| {
                    Some(z.name.as_str()) == deployment.zone.as_deref() && z.unhealthy != Some(true)
                })
        })
        .collect();
    let mut targets = BTreeMap::from([(failed.name.clone(), 0)]);
    if healthy.is_empty() {
        return targets;
    }
    let share = (failed.replicas + healthy.len() as i32 - 1) / healthy.len() as i32;
    let max = input.spec.remediation.scale.max_replicas;
    for deployment in healthy {
        targets.insert(
            deployment.name.clone(),
            (deployment.replicas + share)
                .min(max)
                .max(deployment.replicas),
        );
    }
    targets
}
