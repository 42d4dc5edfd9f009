//! The safety rails every action passes before it is taken: pause, storm, an Argo Rollouts
//! update under way, blackout, budget, cooldown, and the rails of the action itself
//! (maxUnavailable, the last healthy zone).

use std::time::Duration;

use jiff::Timestamp;

use super::{Blocked, DecisionInput, Gate, Outcome, PlannedAction, Step, duration_since};
use crate::api::{
    ActionKind, ActionOutcome, BlackoutWindow, InvoiceServiceSpec, InvoiceServiceStatus,
    RemediationMode,
};

/// Runs the safety rails over a candidate action: the action (in DryRun, to report), or the
/// gate that stopped it.
pub(super) fn gate(input: &DecisionInput<'_>, action: PlannedAction) -> Outcome {
    let kind = action.kind();
    let closed = frozen(input)
        .or_else(|| rollout_in_progress(input))
        .or_else(|| blacked_out(input, kind))
        .or_else(|| rate_limited(input))
        .or_else(|| action_specific_gate(input, &action));
    match closed {
        Some((gate, detail)) => Outcome::Blocked(Blocked { kind, gate, detail }),
        None => Outcome::Act {
            action,
            dry_run: input.spec.remediation.mode == RemediationMode::DryRun,
        },
    }
}

/// Paused, or frozen cluster-wide by the storm gate.
fn frozen(input: &DecisionInput<'_>) -> Option<(Gate, String)> {
    if input.spec.remediation.paused || input.paused_by_annotation {
        Some((Gate::Paused, "remediation is paused".to_owned()))
    } else if input.storm {
        Some((
            Gate::StormGate,
            "too many services are unhealthy at once; actions are frozen cluster-wide".to_owned(),
        ))
    } else {
        None
    }
}

/// One of the service's Argo Rollouts is updating or paused. Every action waits, reversals
/// too: a restart or a scale in the middle of a canary would fight Argo's own steps, and the
/// update's analysis is what judges the new revision. Argo's abort puts the stable revision
/// back, which ends the hold.
fn rollout_in_progress(input: &DecisionInput<'_>) -> Option<(Gate, String)> {
    let updating: Vec<String> = input
        .deployments
        .iter()
        .filter_map(|workload| {
            let update = workload.update.as_ref()?;
            Some(format!("Rollout {} {update}", workload.name))
        })
        .collect();
    (!updating.is_empty()).then(|| {
        (
            Gate::RolloutInProgress,
            format!(
                "{}; Argo Rollouts is in charge until the update completes or is aborted",
                updating.join("; ")
            ),
        )
    })
}

/// Inside a blackout window that does not allow `kind`.
fn blacked_out(input: &DecisionInput<'_>, kind: ActionKind) -> Option<(Gate, String)> {
    let window =
        active_blackout(input.spec, input.now).filter(|window| !window.allow.contains(&kind))?;
    Some((
        Gate::Blackout,
        format!(
            "inside blackout window {:?} (for {}), which does not allow {}",
            window.schedule,
            window.duration,
            kind.as_str()
        ),
    ))
}

/// The budget is spent, or the last action was too recent.
fn rate_limited(input: &DecisionInput<'_>) -> Option<(Gate, String)> {
    let remediation = &input.spec.remediation;
    let budget = &remediation.budget;
    let used = budget_used(input.status, input.now, budget.per.get());
    if used >= budget.max_actions as usize {
        return Some((
            Gate::Budget,
            format!(
                "{used} actions in the last {} (budget {})",
                budget.per, budget.max_actions
            ),
        ));
    }
    let since = input
        .status
        .last_action
        .as_ref()
        .map(|last| duration_since(input.now, &last.at))
        .filter(|since| *since < remediation.cooldown.get())?;
    Some((
        Gate::Cooldown,
        format!(
            "last action {}s ago, cooldown {}",
            since.as_secs(),
            remediation.cooldown
        ),
    ))
}

/// The rails of one kind of action: pods restarting at once, healthy zones left.
fn action_specific_gate(
    input: &DecisionInput<'_>,
    action: &PlannedAction,
) -> Option<(Gate, String)> {
    match &action.step {
        Step::RestartPod { pods } => {
            let in_flight = input
                .evaluation
                .pods
                .iter()
                .filter(|pod| pod.terminating)
                .count();
            let limit = input.spec.remediation.restart_pod.max_unavailable as usize;
            (in_flight + pods.len() > limit).then(|| {
                (
                    Gate::MaxUnavailable,
                    format!(
                        "{in_flight} pod(s) already restarting; restarting {} more would exceed maxUnavailable {limit}",
                        pods.len()
                    ),
                )
            })
        }
        Step::ZoneFailBack { canary: true, .. } => {
            // A canary that fails is taken back at once, whatever the budget: it must leave
            // room for that.
            let budget = &input.spec.remediation.budget;
            let used = budget_used(input.status, input.now, budget.per.get());
            (used + 2 > budget.max_actions as usize).then(|| {
                (
                    Gate::Budget,
                    format!(
                        "{used} actions in the last {} (budget {}): a canary needs room for its \
                         withdrawal too",
                        budget.per, budget.max_actions
                    ),
                )
            })
        }
        Step::ZoneFailover { zone, .. } => {
            let healthy_after = input
                .evaluation
                .zones
                .iter()
                .filter(|candidate| &candidate.name != zone && candidate.unhealthy == Some(false))
                .filter(|candidate| input.failed_zone() != Some(candidate.name.as_str()))
                .count();
            let minimum = input.spec.remediation.zone_failover.min_healthy_zones as usize;
            (healthy_after < minimum.max(1)).then(|| {
                (
                    Gate::LastHealthyZone,
                    format!(
                        "failing over {zone} would leave {healthy_after} healthy zone(s), minimum {}",
                        minimum.max(1)
                    ),
                )
            })
        }
        _ => None,
    }
}

/// Actions counted against the budget in the window ending now.
pub(super) fn budget_used(status: &InvoiceServiceStatus, now: Timestamp, per: Duration) -> usize {
    status
        .history
        .iter()
        .filter(|record| record.outcome != ActionOutcome::Refused)
        .filter(|record| duration_since(now, &record.at) < per)
        .count()
}

/// The blackout window open now, if any. Each schedule is read in its window's time zone (UTC
/// by default), so a window at 09:00 Europe/Berlin opens at 08:00 UTC in winter and 07:00 UTC
/// in summer; how long it has been open is counted in elapsed time.
pub fn active_blackout(spec: &InvoiceServiceSpec, now: Timestamp) -> Option<&BlackoutWindow> {
    // Whole seconds, as cron schedules are.
    let now = Timestamp::from_second(now.as_second()).ok()?;
    spec.remediation.blackout_windows.iter().find(|window| {
        let Ok(cron) = window.schedule.parse::<croner::Cron>() else {
            return false;
        };
        let Ok(zone) = window.zone() else {
            return false;
        };
        let Ok(opened) = cron.find_previous_occurrence(&now.to_zoned(zone), true) else {
            return false;
        };
        let open_for = now.as_second() - opened.timestamp().as_second();
        open_for >= 0 && open_for.unsigned_abs() < window.duration.get().as_secs()
    })
}
