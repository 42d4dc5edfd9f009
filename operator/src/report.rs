//! Report: what users see. Builds the next status (phase, conditions, rounded SLO numbers,
//! zones) and the Events to emit, from the decision and the previous status. Conditions keep
//! their `lastTransitionTime` unless their status changes, numbers are rounded, and Events are
//! only produced on user-visible transitions — so a healthy fleet causes no writes. Pure.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::{
    api::{InvoiceServiceSpec, InvoiceServiceStatus, Phase, SloStatus, ZoneStatus},
    engine::Decision,
    evaluate::Evaluation,
    incident,
    prometheus::promql::range as window_name,
};

mod conditions;
mod events;
mod not_ready;

pub use events::{action_reason, undo_event};
pub use not_ready::{report_invalid, report_refused};

/// Reasons of the Events the operator emits (PascalCase, as `kubectl describe` shows them).
pub mod reasons {
    /// A pod was evicted.
    pub const POD_RESTARTED: &str = "PodRestarted";
    /// A Deployment was rolled.
    pub const ROLLOUT_RESTARTED: &str = "RolloutRestarted";
    /// Replicas were added.
    pub const SCALED_OUT: &str = "ScaledOut";
    /// Added replicas were removed.
    pub const SCALED_IN: &str = "ScaledIn";
    /// The app was switched to read-only mode.
    pub const READ_ONLY_ENTERED: &str = "ReadOnlyEntered";
    /// The app was switched back to read-write mode.
    pub const READ_ONLY_EXITED: &str = "ReadOnlyExited";
    /// A zone was failed over.
    pub const ZONE_FAILED_OVER: &str = "ZoneFailedOver";
    /// A zone was restored.
    pub const ZONE_FAILED_BACK: &str = "ZoneFailedBack";
    /// One replica of a failed-over zone was restored as a canary of its fail-back.
    pub const ZONE_CANARY_STARTED: &str = "ZoneCanaryStarted";
    /// The fail-back canary failed and was taken back; the zone stays failed over (Warning).
    pub const ZONE_CANARY_WITHDRAWN: &str = "ZoneCanaryWithdrawn";
    /// A gate blocked an action.
    pub const REMEDIATION_BLOCKED: &str = "RemediationBlocked";
    /// DryRun: the action that would have been taken.
    pub const WOULD_REMEDIATE: &str = "WouldRemediate";
    /// Signals became untrusted.
    pub const SIGNALS_UNTRUSTED: &str = "SignalsUntrusted";
    /// Every rung was tried.
    pub const LADDER_EXHAUSTED: &str = "LadderExhausted";
    /// The serving certificate expires soon.
    pub const CERTIFICATE_EXPIRING: &str = "CertificateExpiring";
    /// Many requests fail with 4xx: a dependency outside the service.
    pub const CLIENT_ERROR_SPIKE: &str = "ClientErrorSpike";
    /// The spec is invalid.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A Deployment the spec names does not exist (pre-flight).
    pub const WORKLOAD_NOT_FOUND: &str = "WorkloadNotFound";
    /// A zone the spec names is carried by no node (pre-flight).
    pub const ZONE_NOT_FOUND: &str = "ZoneNotFound";
    /// An older InvoiceService already manages one of the spec's Deployments (pre-flight).
    pub const CONFLICT: &str = "Conflict";
    /// The API server refused an action (e.g. a PodDisruptionBudget).
    pub const REMEDIATION_REFUSED: &str = "RemediationRefused";
    /// Someone else changed what the operator manages; the change was adopted, not reverted.
    pub const EXTERNAL_CHANGE_ADOPTED: &str = "ExternalChangeAdopted";
    /// Another controller set a lever back within an interval of the operator's write (Argo
    /// CD self-heal, Flux): adopted, and the lever left alone for an hour.
    pub const TUG_OF_WAR: &str = "TugOfWar";
    /// The InvoiceService was deleted under `--force-dry-run`: what the operator changed stays.
    pub const UNDO_SKIPPED: &str = "UndoSkipped";
    /// An incident closed: the service has been healthy for the settle period. The note is
    /// the incident's summary (Warning when it missed its RTO).
    pub const INCIDENT_CLOSED: &str = "IncidentClosed";
    /// The open incident is about to miss its RTO (Warning).
    pub const RECOVERY_OBJECTIVE_AT_RISK: &str = crate::incident::RECOVERY_OBJECTIVE_AT_RISK;
}

/// Reasons of the `SLOMet` condition (PascalCase, as `kubectl describe` shows them).
pub mod slo_met_reasons {
    /// True: every objective is met over its SLO window and no burn-rate alert fires.
    pub const WITHIN_OBJECTIVES: &str = "WithinObjectives";
    /// True: every objective is still met over its SLO window, but a burn-rate alert (Page or
    /// Ticket) fires; the message names it.
    pub const BUDGET_BURNING: &str = "BudgetBurning";
    /// False: an objective is missed over its window (availability below the objective, the
    /// error budget overspent) or the latency is above its threshold; the message has the
    /// numbers, and any firing burn-rate alert.
    pub const OBJECTIVE_MISSED: &str = "ObjectiveMissed";
    /// Unknown: a figure needed to judge is unknown, and no known figure misses.
    pub const INSUFFICIENT_DATA: &str = "InsufficientData";
}

/// Reasons of the other conditions (PascalCase, as `kubectl describe` shows them). Besides
/// these, a condition's reason can be a gate (`RemediationAllowed=False`, [`Gate::as_str`]),
/// who refused the last action (`RemediationAllowed=False`, [`crate::act::refused_by`]), an
/// unknown signal's reason (`SignalsTrusted=False`), or an Event reason from [`reasons`]
/// (`NeedsAttention=True`: `LadderExhausted`, ...; `Ready=False`: `InvalidSpec`, ...).
///
/// [`Gate::as_str`]: crate::engine::Gate::as_str
pub mod condition_reasons {
    /// `Contested=False`: no other controller reverts the operator's writes.
    pub const NOT_CONTESTED: &str = "NotContested";
    /// `Contested=True`: another field manager set a lever back right after the operator's
    /// write; the message names it.
    pub const REVERTED_BY_ANOTHER_MANAGER: &str = "RevertedByAnotherManager";
    /// `Ready=True`: the spec is valid and the operator manages the service.
    pub const RECONCILED: &str = "Reconciled";
    /// `SignalsTrusted=True`: every signal has a fresh value.
    pub const ALL_SIGNALS_KNOWN: &str = "AllSignalsKnown";
    /// `RemediationAllowed=True`: no gate is closed.
    pub const NO_GATE_CLOSED: &str = "NoGateClosed";
    /// `RemediationAllowed=False`: the API server refused the last action, and who refused
    /// was not recorded.
    pub const REFUSED: &str = "Refused";
    /// `ReadOnly=True`: the operator switched the app to read-only mode.
    pub const ENTERED_BY_OPERATOR: &str = "EnteredByOperator";
    /// `ReadOnly=False`: the app serves reads and writes.
    pub const READ_WRITE: &str = "ReadWrite";
    /// `ZoneFailover=True`: a zone is drained.
    pub const ZONE_FAILED_OVER: &str = "ZoneFailedOver";
    /// `ZoneFailover=False`: every zone serves.
    pub const ALL_ZONES_SERVING: &str = "AllZonesServing";
    /// `NeedsAttention=False`: nothing needs a human.
    pub const NOTHING_TO_DO: &str = "NothingToDo";
}

/// The object an Event is about, besides the InvoiceService.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Related {
    /// A pod of the service.
    Pod(String),
    /// A Deployment of the service (an Argo Rollout, when that is the workload's kind).
    Deployment(String),
    /// The read-only mode ConfigMap.
    ConfigMap(String),
}

/// An Event to publish on the InvoiceService.
#[derive(Clone, Debug, PartialEq)]
pub struct EventSpec {
    /// Warning (something for a human) or Normal.
    pub warning: bool,
    /// PascalCase reason from [`reasons`].
    pub reason: &'static str,
    /// What, why and the numbers.
    pub note: String,
    /// The action in PascalCase (`RestartPod`, `Evaluate`, ...).
    pub action: &'static str,
    /// The touched object, also referenced by the Event.
    pub related: Option<Related>,
}

/// Everything the report step looks at.
#[derive(Debug)]
pub struct ReportInput<'a> {
    /// The spec.
    pub spec: &'a InvoiceServiceSpec,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Status before this reconcile.
    pub previous: &'a InvoiceServiceStatus,
    /// Status after `engine::record`.
    pub recorded: InvoiceServiceStatus,
    /// Health verdicts.
    pub evaluation: &'a Evaluation,
    /// The decision.
    pub decision: &'a Decision,
    /// Whether the decided action was carried out (false: refused by the API server).
    pub applied: bool,
    /// The API server's refusal, when not applied.
    pub refusal: Option<String>,
    /// Paused by spec or annotation.
    pub paused: bool,
    /// The global storm gate is closed.
    pub storm: bool,
    /// Now.
    pub now: Timestamp,
}

/// Sets a condition, keeping the previous `lastTransitionTime` when its status did not
/// change (`condition.last_transition_time` is the time to use when it did).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    previous: &[Condition],
    condition: Condition,
) {
    let last_transition_time = previous
        .iter()
        .find(|old| old.type_ == condition.type_ && old.status == condition.status)
        .map(|old| old.last_transition_time.clone())
        .unwrap_or(condition.last_transition_time.clone());
    conditions.retain(|old| old.type_ != condition.type_);
    conditions.push(Condition {
        last_transition_time,
        ..condition
    });
}

/// The condition `type_` of `status`.
fn condition<'a>(status: &'a InvoiceServiceStatus, type_: &str) -> Option<&'a Condition> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
}

/// True when `type_` turns to `status` with `reason` in this reconcile.
fn turned(
    previous: &InvoiceServiceStatus,
    next: &InvoiceServiceStatus,
    type_: &str,
    status: &str,
    reason: &str,
) -> bool {
    let was = condition(previous, type_).map(|c| (c.status.as_str(), c.reason.as_str()));
    let is = condition(next, type_).map(|c| (c.status.as_str(), c.reason.as_str()));
    is == Some((status, reason)) && was != is
}

/// `value` with `decimals` decimals.
fn round(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// Builds the next status and the Events for a reconcile that evaluated a valid spec.
pub fn report(mut input: ReportInput<'_>) -> (InvoiceServiceStatus, Vec<EventSpec>) {
    let mut next = std::mem::take(&mut input.recorded);
    next.observed_generation = input.generation;
    // SLO numbers, rounded so that noise does not cause writes.
    let slo = slo_numbers(input.evaluation);
    next.slo = (slo != SloStatus::default()).then_some(slo);
    next.zones = zones(input.evaluation);
    let changes = {
        let (reading, prospects) = incident::read(
            input.spec,
            input.evaluation,
            input.decision,
            &next,
            input.now,
        );
        let tracked = incident::track(
            input.previous.incidents.as_ref(),
            &reading,
            &prospects,
            &incident::Policy::of(input.spec),
            input.now,
        );
        next.incidents = tracked.status;
        tracked.changes
    };
    next.conditions = conditions::conditions(&input, &next);
    next.phase = Some(phase(&input, &next));
    let mut events = events::events(&input, &next);
    events.extend(changes.iter().filter_map(events::incident_event));
    (next, events)
}

/// The SLO numbers of `status.slo`, rounded.
fn slo_numbers(evaluation: &Evaluation) -> SloStatus {
    SloStatus {
        availability: evaluation.availability.ok().map(|value| round(value, 3)),
        error_budget_remaining: evaluation
            .error_budget_remaining
            .ok()
            .map(|value| round(value, 2)),
        error_budget_remaining_percent: evaluation
            .error_budget_remaining
            .ok()
            .map(|value| round(value * 100.0, 1)),
        burn_rates: burn_rates(evaluation)
            .into_iter()
            .map(|(window, rate)| (window, round(rate, 1)))
            .collect(),
        latency: evaluation.latency_seconds.ok().map(|value| round(value, 2)),
    }
}

/// `status.zones`, numbers rounded.
fn zones(evaluation: &Evaluation) -> Vec<ZoneStatus> {
    evaluation
        .zones
        .iter()
        .map(|zone| ZoneStatus {
            name: zone.name.clone(),
            healthy: zone.unhealthy.map(|unhealthy| !unhealthy),
            error_ratio: zone.error_ratio.ok().map(|value| round(value, 2)),
            replicas: Some(zone.replicas),
            ready_replicas: Some(zone.ready_replicas),
        })
        .collect()
}

/// The phase: what the operator holds the service in, or else how it does now.
fn phase(input: &ReportInput<'_>, next: &InvoiceServiceStatus) -> Phase {
    let evaluation = input.evaluation;
    let remediating = next
        .last_action
        .as_ref()
        .is_some_and(|action| action.outcome == crate::api::ActionOutcome::Pending);
    if input.paused {
        return Phase::Paused;
    }
    if next.failover.is_some() {
        return Phase::FailedOver;
    }
    if next.read_only.is_some() {
        return Phase::ReadOnly;
    }
    if remediating {
        return Phase::Remediating;
    }
    // The phase is the service now (current burn, latency and pods), not its SLO window:
    // SLOMet says whether the objective over the window is met, so a service that has
    // recovered reads Healthy while its window still carries the outage. It never reads
    // Healthy while NeedsAttention=True, though: a cause the operator will not fix (a 4xx
    // spike, an expiring certificate, an exhausted ladder) is something wrong with no
    // action under way, which is what Degraded says — even when the other signals are
    // unknown, since the attention itself is known.
    let needs_human = !input.decision.attention.is_empty();
    let unhealthy_pods = evaluation.unhealthy_pods().next().is_some();
    match evaluation.slo_met_now() {
        Some(true) if !unhealthy_pods && !needs_human => Phase::Healthy,
        Some(_) => Phase::Degraded,
        None if unhealthy_pods || needs_human => Phase::Degraded,
        None => Phase::Unknown,
    }
}

/// Burn rates by window name, for metrics.
pub fn burn_rates(evaluation: &Evaluation) -> BTreeMap<String, f64> {
    evaluation
        .burn_rates
        .iter()
        .flat_map(|burn| [(burn.short, burn.short_rate), (burn.long, burn.long_rate)])
        .filter_map(|(window, rate)| Some((window_name(window), rate.ok()?)))
        .collect()
}

#[cfg(test)]
mod tests;
