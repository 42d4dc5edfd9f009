//! The fail-back canary: a drained zone serves no traffic, so "no errors while drained" is no
//! evidence that it recovered. Once the zone has looked healthy (nodes Ready, Prometheus
//! answering) for `failBack.after`, an automatic fail-back first restores one replica of the
//! zone's Deployment, and judges it on the zone's own error ratio once it is Ready and has
//! served for `failBack.canaryFor`:
//!
//! - at or below `unhealthyWhen.zoneErrorRatioAbove`: the whole zone is failed back;
//! - above it (as soon as it shows, the window need not pass), not Ready within `canaryFor`,
//!   NotReady nodes in the zone again, no error ratio measured within twice `canaryFor`, or
//!   anything wrong with the service while it runs: the canary is taken back to 0, the
//!   failover holds, and the zone's healthy timer starts over.
//!
//! A single Deployment steered out of the zone by node affinity has no canary: its replicas
//! are placed by the scheduler, and allowing the zone again lets the rolling update spread
//! all of them, so it is failed back whole, as before. Manual fail-back has none either: a
//! human asked for it.

use std::collections::BTreeMap;

use super::{Blocked, DecisionInput, Gate, Outcome, PlannedAction, Step, facts::Facts, timers};
use crate::{
    api::{CanaryState, Evidence, FailBackMode, FailoverState, RemediationMode},
    evaluate::ZoneHealth,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The canary of an automatic fail-back of `state`'s zone: one replica of each of its
/// Deployments. `None` when there is none to start: a single steered Deployment, or a zone
/// whose Deployments ran no replica before the failover.
pub(super) fn start(input: &DecisionInput<'_>, state: &FailoverState) -> Option<PlannedAction> {
    let replicas: BTreeMap<String, i32> = input
        .spec
        .workload
        .deployments
        .iter()
        .flatten()
        .filter(|deployment| deployment.zone == state.zone)
        .filter_map(|deployment| {
            let before = *state.replicas_before.get(&deployment.name)?;
            (before > 0).then(|| (deployment.name.clone(), before.min(1)))
        })
        .collect();
    if replicas.is_empty() {
        return None;
    }
    let fail_back = &input.spec.remediation.zone_failover.fail_back;
    Some(PlannedAction::reversal(
        Step::ZoneFailBack {
            zone: state.zone.clone(),
            replicas,
            canary: true,
        },
        format!(
            "zone {} looked healthy for {}; one replica is restored as a canary, judged on the \
             zone's error ratio after {} Ready",
            state.zone, fail_back.after, fail_back.canary_for
        ),
        Evidence::new(),
    ))
}

/// The whole zone's fail-back once its canary has served well for `canaryFor`.
pub(super) fn passed(input: &DecisionInput<'_>, facts: &Facts) -> Option<PlannedAction> {
    let (state, _) = running(input)?;
    let Judgement::Passed { ratio } = judge(input, facts)? else {
        return None;
    };
    let policy = &input.spec.remediation.zone_failover;
    Some(PlannedAction::reversal(
        Step::ZoneFailBack {
            zone: state.zone.clone(),
            replicas: state.replicas_before.clone(),
            canary: false,
        },
        format!(
            "canary in zone {} served {} Ready with error ratio {ratio:.3} (at most {}); \
             restoring its replicas",
            state.zone, policy.fail_back.canary_for, policy.unhealthy_when.zone_error_ratio_above
        ),
        Evidence::from([("zoneErrorRatio".to_owned(), format!("{ratio:.3}"))]),
    ))
}

/// Takes a failing canary back (its Deployments to 0), or one running while the service has
/// a symptom. Only a pause stops it: it undoes the operator's own experiment.
pub(super) fn withdrawal(
    input: &DecisionInput<'_>,
    facts: &Facts,
    symptom: bool,
) -> Option<Outcome> {
    let (state, canary) = running(input)?;
    let (why, evidence) = match judge(input, facts) {
        Some(Judgement::Failed { why, evidence }) => (why, evidence),
        _ if symptom => (
            "the service is not healthy while it runs".to_owned(),
            Evidence::new(),
        ),
        _ => return None,
    };
    let action = PlannedAction::reversal(
        Step::ZoneFailover {
            zone: state.zone.clone(),
            replicas: canary
                .replicas
                .keys()
                .map(|name| (name.clone(), 0))
                .collect(),
            canary: true,
        },
        format!(
            "canary in zone {} taken back: {why}; the failover holds, and a new canary is \
             tried once the zone has looked healthy for {} again",
            state.zone, input.spec.remediation.zone_failover.fail_back.after
        ),
        evidence,
    );
    let remediation = &input.spec.remediation;
    Some(if remediation.paused || input.paused_by_annotation {
        Outcome::Blocked(Blocked {
            kind: action.kind(),
            gate: Gate::Paused,
            detail: "remediation is paused".to_owned(),
        })
    } else {
        Outcome::Act {
            action,
            dry_run: remediation.mode == RemediationMode::DryRun,
        }
    })
}

/// Why the failed-over zone is not failed back yet, in words that stay the same from one
/// reconcile to the next (times, not countdowns), so that status is not rewritten every
/// interval. `None` without a failover.
pub(super) fn waiting(
    input: &DecisionInput<'_>,
    held_since: &BTreeMap<String, Time>,
) -> Option<String> {
    let state = input.status.failover.as_ref()?;
    let fail_back = &input.spec.remediation.zone_failover.fail_back;
    if fail_back.mode == FailBackMode::Manual {
        return Some(
            "failBack.mode is Manual: the zone is failed back when the InvoiceService is \
             annotated invoiceops.dev/fail-back=true"
                .to_owned(),
        );
    }
    if let Some((_, canary)) = running(input) {
        return Some(canary_waiting(input, held_since, canary));
    }
    let zone = &state.zone;
    let Some(since) = started(held_since, &timers::zone_healthy(zone)) else {
        return Some(format!(
            "zone {zone} does not look healthy ({}): no canary is tried",
            unhealthy_because(input, zone_health(input, zone))
        ));
    };
    let next = if start(input, state).is_some() {
        "a canary replica is tried"
    } else {
        "its replicas come back (a single Deployment has no canary)"
    };
    Some(format!(
        "zone {zone} looks healthy since {}: {next} at {}",
        at(since),
        at(since + fail_back.after.get())
    ))
}

/// The verdict on a running canary, if one is due now.
enum Judgement {
    /// It served well for `canaryFor`.
    Passed { ratio: f64 },
    /// It failed, and is taken back.
    Failed { why: String, evidence: Evidence },
}

/// The failover and its canary, while one runs (Automatic fail-back).
fn running<'a>(input: &DecisionInput<'a>) -> Option<(&'a FailoverState, &'a CanaryState)> {
    let state = input.status.failover.as_ref()?;
    let canary = state.canary.as_ref()?;
    Some((state, canary))
}

/// Judges the running canary: `None` while it is still being watched (or none runs).
fn judge(input: &DecisionInput<'_>, facts: &Facts) -> Option<Judgement> {
    let (state, canary) = running(input)?;
    let zone = zone_health(input, &state.zone);
    let policy = &input.spec.remediation.zone_failover;
    let canary_for = policy.fail_back.canary_for.get();
    let threshold = policy.unhealthy_when.zone_error_ratio_above.get();
    let failed = |why: String, evidence: Evidence| Some(Judgement::Failed { why, evidence });
    if let Some(zone) = zone.filter(|zone| zone.not_ready_nodes > 0) {
        return failed(
            format!("{} NotReady node(s) in the zone", zone.not_ready_nodes),
            Evidence::new(),
        );
    }
    let Some(ready_for) = facts.canary_ready_for else {
        let started = super::duration_since(input.now, &canary.since);
        return (started >= canary_for).then(|| Judgement::Failed {
            why: format!("not Ready within canaryFor {}", policy.fail_back.canary_for),
            evidence: Evidence::new(),
        });
    };
    match zone.map(|zone| zone.error_ratio) {
        Some(Ok(ratio)) if ratio > threshold => failed(
            format!(
                "the zone's error ratio {ratio:.3} is above {}",
                policy.unhealthy_when.zone_error_ratio_above
            ),
            Evidence::from([("zoneErrorRatio".to_owned(), format!("{ratio:.3}"))]),
        ),
        Some(Ok(ratio)) => (ready_for >= canary_for).then_some(Judgement::Passed { ratio }),
        unknown => (ready_for >= canary_for * 2).then(|| Judgement::Failed {
            why: format!(
                "no error ratio of the zone measured within twice canaryFor {} ({})",
                policy.fail_back.canary_for,
                unknown.map_or_else(|| "zone unknown".to_owned(), |r| format!("{r:?}"))
            ),
            evidence: Evidence::new(),
        }),
    }
}

/// What the running canary waits for.
fn canary_waiting(
    input: &DecisionInput<'_>,
    held_since: &BTreeMap<String, Time>,
    canary: &CanaryState,
) -> String {
    let policy = &input.spec.remediation.zone_failover;
    let zone = input.failed_zone().unwrap_or_default();
    let canary_for = policy.fail_back.canary_for.get();
    let replicas: i32 = canary.replicas.values().sum();
    let running = format!(
        "canary of {replicas} replica(s) in zone {zone} since {}",
        at(canary.since.0)
    );
    let Some(ready) = started(held_since, &timers::zone_canary_ready(zone)) else {
        return format!(
            "{running}: waiting for it to be Ready (taken back if it is not by {})",
            at(canary.since.0 + canary_for)
        );
    };
    match zone_health(input, zone).map(|zone| zone.error_ratio) {
        Some(Ok(_)) => format!(
            "{running}, Ready since {}: judged on the zone's error ratio at {}",
            at(ready),
            at(ready + canary_for)
        ),
        _ => format!(
            "{running}, Ready since {}: no error ratio of the zone measured yet (taken back if \
             none is by {})",
            at(ready),
            at(ready + canary_for * 2)
        ),
    }
}

fn zone_health<'a>(input: &DecisionInput<'a>, zone: &str) -> Option<&'a ZoneHealth> {
    input.evaluation.zones.iter().find(|z| z.name == zone)
}

/// Why a failed-over zone does not look healthy.
fn unhealthy_because(input: &DecisionInput<'_>, zone: Option<&ZoneHealth>) -> String {
    match zone {
        None => "no health known for it".to_owned(),
        Some(zone) if zone.not_ready_nodes > 0 => {
            format!("{} NotReady node(s)", zone.not_ready_nodes)
        }
        Some(zone) if zone.unhealthy == Some(true) => "its pods fail requests".to_owned(),
        Some(_) if input.evaluation.error_ratio.is_err() => {
            "Prometheus does not answer for the service".to_owned()
        }
        Some(_) => "its health is unknown".to_owned(),
    }
}

/// RFC 3339 at whole seconds, as in Events.
fn at(time: Timestamp) -> String {
    Timestamp::from_second(time.as_second())
        .unwrap_or(time)
        .to_string()
}

/// When the timer `key` started, if it runs.
fn started(held_since: &BTreeMap<String, Time>, key: &str) -> Option<Timestamp> {
    held_since.get(key).map(|time| time.0)
}
