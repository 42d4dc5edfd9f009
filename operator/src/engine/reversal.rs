//! After the incident: the reversals of what the operator changed (leave read-only, fail
//! back, scale in), each once what it answered has passed, and the levers a person took over
//! handed back.

use std::{collections::BTreeMap, time::Duration};

use super::{Decision, DecisionInput, PlannedAction, Step, canary, facts::Facts, gate::gate};
use crate::{
    api::{Evidence, FailBackMode, FailoverState, InvoiceServiceStatus, ScaledOutState},
    evaluate::Evaluation,
    foreign::hands_off,
};

/// ScaleIn waits until the request rate is below this share of the rate at which the latency
/// breach first scaled the service out: at that rate the baseline replicas were too few, and
/// a rate just under it would breach again after the scale-in.
const SCALE_IN_LOAD_SHARE: f64 = 0.9;

/// Nothing is wrong (or nothing is known): closes the incident when the service is known
/// healthy, and takes the reversal due now, if any (gated).
pub(super) fn recover(input: &DecisionInput<'_>, facts: &Facts, decision: &mut Decision) {
    // Known healthy: the incident is over. Unknown: keep the ladder where it stands, so a
    // problem that shows again escalates instead of starting over.
    if facts.healthy {
        decision.ladder = None;
        hand_back_levers(input, facts.database_pending, decision);
    }
    if let Some(action) = plan_reversal(input, facts) {
        decision.outcome = gate(input, action);
    }
}

/// The incident is over: levers a person took over are the operator's again, once what they
/// answer has passed too (the pool below the read-only threshold, the zone no longer failing).
fn hand_back_levers(input: &DecisionInput<'_>, database_pending: bool, decision: &mut Decision) {
    let zone_fine = |key: &str| {
        input
            .evaluation
            .zones
            .iter()
            .filter(|zone| key == hands_off::zone(&zone.name))
            .all(|zone| zone.unhealthy != Some(true))
    };
    decision.held_since.retain(|key, _| {
        if key == hands_off::READ_ONLY {
            database_pending
        } else if key.starts_with(hands_off::PREFIX) {
            !zone_fine(key)
        } else {
            true
        }
    });
}

/// The reversal due now, if any: leave read-only, fail back, scale in (in that order).
fn plan_reversal(input: &DecisionInput<'_>, facts: &Facts) -> Option<PlannedAction> {
    exit_read_only(input, facts.database_low)
        .or_else(|| fail_back(input, facts))
        .or_else(|| scale_in(input, facts.healthy_for))
}

/// Back to read-write once the database pool has been low for long enough.
fn exit_read_only(input: &DecisionInput<'_>, database_low: bool) -> Option<PlannedAction> {
    if input.status.read_only.is_none() || !database_low {
        return None;
    }
    let policy = input.spec.remediation.read_only.as_ref()?;
    let utilization = input.evaluation.db_pool_utilization.unwrap_or(0.0);
    Some(PlannedAction::reversal(
        Step::ExitReadOnly,
        format!(
            "database pool {utilization:.3} below {} for {}",
            policy.exit_when.db_pool_utilization_below, policy.exit_when.for_
        ),
        Evidence::from([("dbPoolUtilization".to_owned(), format!("{utilization:.3}"))]),
    ))
}

/// The failed-over zone gets its replicas back. Automatic: once it has looked healthy for
/// `failBack.after`, a canary replica first (see [`super::canary`]) and the rest once the
/// canary passed — or all at once for a single steered Deployment, which has no canary.
/// Manual: all at once when a human asks.
fn fail_back(input: &DecisionInput<'_>, facts: &Facts) -> Option<PlannedAction> {
    let state = input.status.failover.as_ref()?;
    let fail_back = &input.spec.remediation.zone_failover.fail_back;
    if fail_back.mode == FailBackMode::Manual {
        return input.manual_fail_back.then(|| {
            whole_zone(
                state,
                format!("fail-back of zone {} requested by annotation", state.zone),
            )
        });
    }
    if state.canary.is_some() {
        return canary::passed(input, facts);
    }
    let due = facts
        .failed_zone_healthy_for
        .is_some_and(|held| held >= fail_back.after.get());
    if !due {
        return None;
    }
    canary::start(input, state).or_else(|| {
        Some(whole_zone(
            state,
            format!(
                "zone {} healthy for {}; restoring its replicas",
                state.zone, fail_back.after
            ),
        ))
    })
}

/// The whole zone's replicas back at once.
fn whole_zone(state: &FailoverState, reason: String) -> PlannedAction {
    PlannedAction::reversal(
        Step::ZoneFailBack {
            zone: state.zone.clone(),
            replicas: state.replicas_before.clone(),
            canary: false,
        },
        reason,
        Evidence::new(),
    )
}

/// Back to the baseline replicas (never below `minReplicas`, never up), once healthy for
/// `scaleInAfter` and the load that scaled out has gone. A failed-over zone's Deployments are
/// left to the fail-back.
fn scale_in(input: &DecisionInput<'_>, healthy_for: Option<Duration>) -> Option<PlannedAction> {
    let scaled = input.status.scaled_out.as_ref()?;
    let scale = &input.spec.remediation.scale;
    let due = healthy_for.is_some_and(|held| held >= scale.scale_in_after.get())
        && load_has_gone(scaled, input.evaluation);
    if !due {
        return None;
    }
    let current = input.current_replicas();
    let failed_zone_deployments: Vec<&String> = input
        .status
        .failover
        .iter()
        .flat_map(|state| state.replicas_before.keys())
        .collect();
    let targets: BTreeMap<String, i32> = scaled
        .baseline
        .iter()
        .filter(|(name, _)| !failed_zone_deployments.contains(name))
        .filter_map(|(name, baseline)| {
            let now = *current.get(name)?;
            let target = (*baseline).max(scale.min_replicas).min(now);
            (target < now).then(|| (name.clone(), target))
        })
        .collect();
    (!targets.is_empty()).then(|| {
        PlannedAction::reversal(
            Step::ScaleIn { replicas: targets },
            format!(
                "healthy for {}; back to the baseline replicas",
                scale.scale_in_after
            ),
            Evidence::new(),
        )
    })
}

/// A new peak of the load while scaled out for it: the rate at the first ScaleOut, measured
/// over a window that still held samples from before the surge, understates it (and a rate
/// after the surge could then never be "clearly below"). Raised in steps of a tenth, so a
/// rising rate does not rewrite the status every interval.
pub(super) fn load_peak(status: &InvoiceServiceStatus, evaluation: &Evaluation) -> Option<String> {
    let peak = status
        .scaled_out
        .as_ref()?
        .request_rate
        .as_deref()?
        .parse::<f64>()
        .ok()?;
    let rate = evaluation.request_rate.ok()?;
    (rate > peak * 1.1).then(|| format!("{rate:.3}"))
}

/// Whether the load that scaled the service out has gone: unknown while the rate is, and
/// always for a scale-out that answered errors rather than load (no rate recorded).
fn load_has_gone(scaled: &ScaledOutState, evaluation: &Evaluation) -> bool {
    let Some(at_scale_out) = scaled
        .request_rate
        .as_deref()
        .and_then(|rate| rate.parse::<f64>().ok())
    else {
        return true;
    };
    evaluation
        .request_rate
        .is_ok_and(|rate| rate < at_scale_out * SCALE_IN_LOAD_SHARE)
}
