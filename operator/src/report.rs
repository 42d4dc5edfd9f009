//! Report: what users see. Builds the next status (phase, conditions, rounded SLO numbers,
//! zones) and the Events to emit, from the decision and the previous status. Conditions keep
//! their `lastTransitionTime` unless their status changes, numbers are rounded, and Events are
//! only produced on user-visible transitions — so a healthy fleet causes no writes. Pure.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::{
    api::{
        ActionKind, InvoiceServiceSpec, InvoiceServiceStatus, Phase, Rung, SloStatus, SpecProblem,
        ZoneStatus, condition_types,
    },
    engine::{Attention, Decision, Gate, Target},
    evaluate::Evaluation,
    prometheus::promql::range as window_name,
};

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
    /// The InvoiceService was deleted under `--force-dry-run`: what the operator changed stays.
    pub const UNDO_SKIPPED: &str = "UndoSkipped";
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

/// The object an Event is about, besides the InvoiceService.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Related {
    /// A pod of the service.
    Pod(String),
    /// A Deployment of the service.
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

fn round(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// Builds the next status and the Events for a reconcile that evaluated a valid spec.
pub fn report(input: ReportInput<'_>) -> (InvoiceServiceStatus, Vec<EventSpec>) {
    let ReportInput {
        spec,
        generation,
        previous,
        recorded,
        evaluation,
        decision,
        applied,
        refusal,
        paused,
        storm,
        now,
    } = input;
    let mut next = recorded;
    next.observed_generation = generation;
    let mut events = Vec::new();

    // SLO numbers, rounded so that noise does not cause writes.
    let slo = SloStatus {
        availability: evaluation.availability.ok().map(|value| round(value, 3)),
        error_budget_remaining: evaluation
            .error_budget_remaining
            .ok()
            .map(|value| round(value, 2)),
        burn_rates: burn_rates(evaluation)
            .into_iter()
            .map(|(window, rate)| (window, round(rate, 1)))
            .collect(),
        latency: evaluation.latency_seconds.ok().map(|value| round(value, 2)),
    };
    next.slo = (slo != SloStatus::default()).then_some(slo);
    next.zones = evaluation
        .zones
        .iter()
        .map(|zone| ZoneStatus {
            name: zone.name.clone(),
            healthy: zone.unhealthy.map(|unhealthy| !unhealthy),
            error_ratio: zone.error_ratio.ok().map(|value| round(value, 2)),
            replicas: Some(zone.replicas),
            ready_replicas: Some(zone.ready_replicas),
        })
        .collect();

    // Conditions.
    let mut conditions = previous.conditions.clone();
    let mut set = |type_: &str, status: &str, reason: &str, message: String| {
        set_condition(
            &mut conditions,
            &previous.conditions,
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation: generation,
                last_transition_time: Time(now),
            },
        );
    };
    set(
        condition_types::READY,
        "True",
        "Reconciled",
        "the spec is valid and the operator manages the service".to_owned(),
    );
    match evaluation.untrusted.iter().next() {
        None => set(
            condition_types::SIGNALS_TRUSTED,
            "True",
            "AllSignalsKnown",
            "every signal has a fresh value".to_owned(),
        ),
        Some((_, reason)) => {
            let unknown: Vec<String> = evaluation
                .untrusted
                .iter()
                .map(|(signal, reason)| format!("{signal}: {reason}"))
                .collect();
            set(
                condition_types::SIGNALS_TRUSTED,
                "False",
                reason.as_str(),
                format!(
                    "unknown signals never trigger actions ({})",
                    unknown.join(", ")
                ),
            );
        }
    }
    // SLOMet is the objective over its window, which is what an SLO is: a service that burnt
    // its budget an hour ago misses its objective while it serves well again, and a burn that
    // has just started has not missed it yet. A firing burn-rate alert is said separately
    // (reason BudgetBurning) so that "met" never hides a budget going fast. Messages carry only
    // numbers `status.slo` already shows at the same rounding, so they cause no extra writes.
    let (status, reason, message) = slo_met_condition(spec, evaluation);
    set(condition_types::SLO_MET, status, reason, message);
    // A refusal by the API server (a PodDisruptionBudget) is named from the moment it happens
    // through the cooldown that follows it, rather than as a plain Cooldown.
    let refused = refused_recently(&next, decision);
    match (&decision.blocked, paused, storm, refused) {
        (_, true, _, _) => set(
            condition_types::REMEDIATION_ALLOWED,
            "False",
            Gate::Paused.as_str(),
            "remediation is paused".to_owned(),
        ),
        (_, _, true, _) => set(
            condition_types::REMEDIATION_ALLOWED,
            "False",
            Gate::StormGate.as_str(),
            "too many InvoiceServices are unhealthy at once: the cause is probably shared \
             (Prometheus, network, the cluster); actions are frozen cluster-wide until it passes"
                .to_owned(),
        ),
        (_, _, _, Some((refused_by, message))) => set(
            condition_types::REMEDIATION_ALLOWED,
            "False",
            refused_by,
            message,
        ),
        (Some(blocked), _, _, None) => set(
            condition_types::REMEDIATION_ALLOWED,
            "False",
            blocked.gate.as_str(),
            format!("{} blocked: {}", blocked.kind.as_str(), blocked.detail),
        ),
        (None, false, false, None) => set(
            condition_types::REMEDIATION_ALLOWED,
            "True",
            "NoGateClosed",
            "the operator may act".to_owned(),
        ),
    }
    match &next.read_only {
        Some(_) => set(
            condition_types::READ_ONLY,
            "True",
            "EnteredByOperator",
            "the app serves reads only while its database recovers".to_owned(),
        ),
        None => set(
            condition_types::READ_ONLY,
            "False",
            "ReadWrite",
            "the app serves reads and writes".to_owned(),
        ),
    }
    match &next.failover {
        Some(failover) => set(
            condition_types::ZONE_FAILOVER,
            "True",
            "ZoneFailedOver",
            format!(
                "zone {} is drained; its capacity runs in the other zones",
                failover.zone
            ),
        ),
        None => set(
            condition_types::ZONE_FAILOVER,
            "False",
            "AllZonesServing",
            "no zone is failed over".to_owned(),
        ),
    }
    match decision.attention.first() {
        None => set(
            condition_types::NEEDS_ATTENTION,
            "False",
            "NothingToDo",
            "nothing needs a human".to_owned(),
        ),
        Some(attention) => {
            let (reason, message) = attention_condition(attention);
            set(
                condition_types::NEEDS_ATTENTION,
                "True",
                reason,
                message.to_owned(),
            );
        }
    }
    conditions.sort_by_key(|condition| {
        condition_types::ALL
            .iter()
            .position(|type_| *type_ == condition.type_)
            .unwrap_or(usize::MAX)
    });
    next.conditions = conditions;

    // Phase.
    let remediating = next
        .last_action
        .as_ref()
        .is_some_and(|action| action.outcome == crate::api::ActionOutcome::Pending);
    next.phase = Some(if paused {
        Phase::Paused
    } else if next.failover.is_some() {
        Phase::FailedOver
    } else if next.read_only.is_some() {
        Phase::ReadOnly
    } else if remediating {
        Phase::Remediating
    } else {
        // The phase is the service now (current burn, latency and pods), not its SLO window:
        // SLOMet says whether the objective over the window is met, so a service that has
        // recovered reads Healthy while its window still carries the outage. It never reads
        // Healthy while NeedsAttention=True, though: a cause the operator will not fix (a 4xx
        // spike, an expiring certificate, an exhausted ladder) is something wrong with no
        // action under way, which is what Degraded says — even when the other signals are
        // unknown, since the attention itself is known.
        let needs_human = !decision.attention.is_empty();
        let unhealthy_pods = evaluation.unhealthy_pods().next().is_some();
        match evaluation.slo_met_now() {
            Some(true) if !unhealthy_pods && !needs_human => Phase::Healthy,
            Some(_) => Phase::Degraded,
            None if unhealthy_pods || needs_human => Phase::Degraded,
            None => Phase::Unknown,
        }
    });

    // Events.
    if let Some(action) = &decision.action {
        events.push(action_event(
            action,
            decision.dry_run,
            applied,
            refusal.as_deref(),
        ));
    }
    if storm
        && decision.blocked.is_none()
        && turned(
            previous,
            &next,
            condition_types::REMEDIATION_ALLOWED,
            "False",
            Gate::StormGate.as_str(),
        )
    {
        events.push(EventSpec {
            warning: true,
            reason: reasons::REMEDIATION_BLOCKED,
            note: "actions frozen by StormGate: too many InvoiceServices are unhealthy at once"
                .to_owned(),
            action: "Evaluate",
            related: None,
        });
    }
    if let Some(blocked) = &decision.blocked
        && blocked.gate != Gate::LadderExhausted
        && turned(
            previous,
            &next,
            condition_types::REMEDIATION_ALLOWED,
            "False",
            blocked.gate.as_str(),
        )
    {
        events.push(EventSpec {
            warning: true,
            reason: reasons::REMEDIATION_BLOCKED,
            note: format!(
                "{} blocked by {}: {}",
                blocked.kind.as_str(),
                blocked.gate.as_str(),
                blocked.detail
            ),
            action: blocked.kind.as_str(),
            related: None,
        });
    }
    if let Some((_, reason)) = evaluation.untrusted.iter().next()
        && turned(
            previous,
            &next,
            condition_types::SIGNALS_TRUSTED,
            "False",
            reason.as_str(),
        )
    {
        let message = condition(&next, condition_types::SIGNALS_TRUSTED)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        events.push(EventSpec {
            warning: true,
            reason: reasons::SIGNALS_UNTRUSTED,
            note: format!("signals untrusted, no action will be taken on them: {message}"),
            action: "Evaluate",
            related: None,
        });
    }
    for attention in &decision.attention {
        let (reason, _) = attention_condition(attention);
        let new = condition(previous, condition_types::NEEDS_ATTENTION)
            .is_none_or(|c| c.status != "True" || c.reason != reason);
        if new {
            events.push(EventSpec {
                warning: true,
                reason,
                note: attention_note(attention, spec),
                action: "Evaluate",
                related: None,
            });
        }
    }
    (next, events)
}

/// The refusal to report in `RemediationAllowed`: the last action was refused by the API
/// server, and this reconcile either recorded it or is waiting out the cooldown after it.
/// Returns the condition reason (who refused) and message.
fn refused_recently<'a>(
    next: &'a InvoiceServiceStatus,
    decision: &Decision,
) -> Option<(&'a str, String)> {
    use crate::engine::refusal_evidence::{MESSAGE, REFUSED_BY};
    let last = next
        .last_action
        .as_ref()
        .filter(|last| last.outcome == crate::api::ActionOutcome::Refused)?;
    let just_refused = decision.action.is_some();
    let cooling_down = decision
        .blocked
        .as_ref()
        .is_some_and(|blocked| blocked.gate == Gate::Cooldown);
    if !just_refused && !cooling_down {
        return None;
    }
    let refused_by = last
        .evidence
        .get(REFUSED_BY)
        .map_or("Refused", String::as_str);
    let message = last.evidence.get(MESSAGE).map_or("", String::as_str);
    Some((
        refused_by,
        format!(
            "{} {} refused by the API server: {message}; the ladder moves past it after the cooldown",
            last.action.as_str(),
            last.target
        ),
    ))
}

/// Status, reason and message of the `SLOMet` condition: the objectives over the SLO window
/// (see [`Evaluation::slo_met_over_window`]), and whether a burn-rate alert fires.
fn slo_met_condition(
    spec: &InvoiceServiceSpec,
    evaluation: &Evaluation,
) -> (&'static str, &'static str, String) {
    let availability = &spec.slos.availability;
    let window = &availability.window;
    let burning = budget_burning(evaluation);
    let with_burning = |message: String| match &burning {
        Some(burning) => format!("{message}; {burning}"),
        None => message,
    };
    match evaluation.slo_met_over_window() {
        Some(true) => match &burning {
            Some(burning) => (
                "True",
                slo_met_reasons::BUDGET_BURNING,
                format!("objectives met over {window}, but {burning}"),
            ),
            None => (
                "True",
                slo_met_reasons::WITHIN_OBJECTIVES,
                format!(
                    "availability over {window} at or above {}%{}",
                    availability.objective,
                    spec.slos
                        .latency
                        .as_ref()
                        .map(|latency| format!(
                            ", p{} latency under {}",
                            latency.percentile, latency.threshold
                        ))
                        .unwrap_or_default()
                ),
            ),
        },
        Some(false) => {
            let mut missed = Vec::new();
            if let (Ok(measured), Ok(remaining)) =
                (evaluation.availability, evaluation.error_budget_remaining)
                && remaining < 0.0
            {
                missed.push(format!(
                    "availability {measured:.2}% over {window}, objective {}%; error budget \
                     remaining {remaining:.2} (1 untouched, 0 spent)",
                    availability.objective
                ));
            }
            if let (Some(latency), Some(true), Ok(seconds)) = (
                &spec.slos.latency,
                evaluation.latency_breach,
                evaluation.latency_seconds,
            ) {
                missed.push(format!(
                    "p{} latency {seconds:.2}s now, threshold {}",
                    latency.percentile, latency.threshold
                ));
            }
            (
                "False",
                slo_met_reasons::OBJECTIVE_MISSED,
                with_burning(missed.join("; ")),
            )
        }
        None => {
            let unknown: Vec<String> = [
                ("availability", evaluation.error_budget_remaining.err()),
                (
                    "latency",
                    evaluation
                        .latency_slo
                        .then_some(evaluation.latency_seconds.err())
                        .flatten(),
                ),
            ]
            .into_iter()
            .filter_map(|(figure, reason)| Some(format!("{figure}: {}", reason?)))
            .collect();
            (
                "Unknown",
                slo_met_reasons::INSUFFICIENT_DATA,
                with_burning(format!(
                    "not enough trusted signal to judge the objectives over {window} ({})",
                    unknown.join(", ")
                )),
            )
        }
    }
}

/// "the error budget is burning: ..." naming every firing burn-rate alert, or `None`. Names
/// the windows and thresholds, not the rates, so the message is steady while an alert fires.
fn budget_burning(evaluation: &Evaluation) -> Option<String> {
    let firing: Vec<String> = evaluation
        .firing_burn_rates()
        .map(|burn| {
            format!(
                "the {:?} alert over {} and {} fires (both above {}x the budget rate)",
                burn.severity,
                window_name(burn.long),
                window_name(burn.short),
                burn.factor
            )
        })
        .collect();
    (!firing.is_empty()).then(|| format!("the error budget is burning: {}", firing.join(", ")))
}

fn attention_condition(attention: &Attention) -> (&'static str, &'static str) {
    match attention {
        Attention::LadderExhausted => (
            reasons::LADDER_EXHAUSTED,
            "every remediation rung was tried and the service did not recover",
        ),
        Attention::ClientErrorSpike { .. } => (
            reasons::CLIENT_ERROR_SPIKE,
            "many requests fail with 4xx: a dependency outside the service (firewall rule, credentials); no restart fixes it",
        ),
        Attention::CertificateExpiring { .. } => (
            reasons::CERTIFICATE_EXPIRING,
            "the serving certificate expires soon",
        ),
    }
}

fn attention_note(attention: &Attention, spec: &InvoiceServiceSpec) -> String {
    match attention {
        Attention::LadderExhausted => format!(
            "every rung of the ladder ({}) was tried without recovery; no more actions until the service recovers or the spec changes",
            spec.effective_ladder()
                .into_iter()
                .map(Rung::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Attention::ClientErrorSpike { ratio } => format!(
            "4xx ratio {ratio:.3} is above {}: probably a dependency (firewall rule returning 403, expired credentials); not restarting anything",
            crate::evaluate::CLIENT_ERROR_SPIKE_RATIO
        ),
        Attention::CertificateExpiring { seconds_left } => format!(
            "the serving certificate expires in {:.1} days (warning {} before)",
            seconds_left / 86_400.0,
            spec.signals
                .certificate_expiry
                .as_ref()
                .map(|expiry| expiry.warn_before.to_string())
                .unwrap_or_default()
        ),
    }
}

fn action_event(
    action: &crate::engine::PlannedAction,
    dry_run: bool,
    applied: bool,
    refusal: Option<&str>,
) -> EventSpec {
    let related = match &action.target {
        Target::Pods(pods) => pods.first().cloned().map(Related::Pod),
        Target::Deployments(names) => names.first().cloned().map(Related::Deployment),
        Target::Replicas(replicas) => replicas.keys().next().cloned().map(Related::Deployment),
        _ => None,
    };
    let evidence: Vec<String> = action
        .evidence
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let what = format!("{} {}", action.kind.as_str(), action.target.describe());
    let why = format!("{} [{}]", action.reason, evidence.join(" "));
    if dry_run {
        return EventSpec {
            warning: false,
            reason: reasons::WOULD_REMEDIATE,
            note: format!("DryRun, nothing done: would {what}: {why}"),
            action: action.kind.as_str(),
            related,
        };
    }
    if !applied {
        return EventSpec {
            warning: true,
            reason: reasons::REMEDIATION_REFUSED,
            note: format!(
                "{what} refused by the API server: {}; {why}",
                refusal.unwrap_or("no reason given")
            ),
            action: action.kind.as_str(),
            related,
        };
    }
    let reason = match action.kind {
        ActionKind::RestartPod => reasons::POD_RESTARTED,
        ActionKind::RolloutRestart => reasons::ROLLOUT_RESTARTED,
        ActionKind::ScaleOut => reasons::SCALED_OUT,
        ActionKind::ScaleIn => reasons::SCALED_IN,
        ActionKind::EnterReadOnly => reasons::READ_ONLY_ENTERED,
        ActionKind::ExitReadOnly => reasons::READ_ONLY_EXITED,
        ActionKind::ZoneFailover => reasons::ZONE_FAILED_OVER,
        ActionKind::ZoneFailBack => reasons::ZONE_FAILED_BACK,
    };
    let detail = match &action.target {
        Target::Replicas(replicas) | Target::Zone { replicas, .. } if !replicas.is_empty() => {
            let counts: Vec<String> = replicas
                .iter()
                .map(|(name, count)| format!("{name}={count}"))
                .collect();
            format!(" (replicas {})", counts.join(", "))
        }
        _ => String::new(),
    };
    EventSpec {
        warning: false,
        reason,
        note: format!("{what}{detail}: {why}"),
        action: action.kind.as_str(),
        related,
    }
}

/// The Event of a reversal carried out because the InvoiceService was deleted: the same
/// reason as the reversal (`ReadOnlyExited`, `ZoneFailedBack`, `ScaledIn`), its note saying why.
pub fn undo_event(action: &crate::engine::PlannedAction) -> EventSpec {
    action_event(action, false, true, None)
}

/// Status and Event for an invalid spec: `Ready=False`, reason `InvalidSpec`, every problem
/// listed; nothing else changes and nothing is acted on.
pub fn report_invalid(
    previous: &InvoiceServiceStatus,
    problems: &[SpecProblem],
    generation: Option<i64>,
    now: Timestamp,
) -> (InvoiceServiceStatus, Option<EventSpec>) {
    report_not_ready(previous, reasons::INVALID_SPEC, problems, generation, now)
}

/// Status and Event for a valid spec the cluster refutes (see [`crate::preflight`]):
/// `Ready=False` with the refusal's reason, every problem listed; nothing else changes and
/// nothing is acted on.
pub fn report_refused(
    previous: &InvoiceServiceStatus,
    refusal: &crate::preflight::Refusal,
    generation: Option<i64>,
    now: Timestamp,
) -> (InvoiceServiceStatus, Option<EventSpec>) {
    report_not_ready(previous, refusal.reason, &refusal.problems, generation, now)
}

/// `Ready=False` with `reason` and the problems as its message, phase Unknown. The Warning
/// Event comes only when the reason or the message changes, so a service that stays refused
/// interval after interval writes nothing and emits nothing.
fn report_not_ready(
    previous: &InvoiceServiceStatus,
    reason: &'static str,
    problems: &[SpecProblem],
    generation: Option<i64>,
    now: Timestamp,
) -> (InvoiceServiceStatus, Option<EventSpec>) {
    let message = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut next = previous.clone();
    next.observed_generation = generation;
    next.phase = Some(Phase::Unknown);
    set_condition(
        &mut next.conditions,
        &previous.conditions,
        Condition {
            type_: condition_types::READY.to_owned(),
            status: "False".to_owned(),
            reason: reason.to_owned(),
            message: message.clone(),
            observed_generation: generation,
            last_transition_time: Time(now),
        },
    );
    let changed = condition(previous, condition_types::READY)
        .is_none_or(|c| c.status != "False" || c.reason != reason || c.message != message);
    let why = match reason {
        reasons::INVALID_SPEC => "not acting on an invalid spec",
        reasons::CONFLICT => "not acting on a Deployment another InvoiceService manages",
        reasons::WORKLOAD_NOT_FOUND => "not acting: a Deployment of the spec does not exist",
        reasons::ZONE_NOT_FOUND => "not acting: a zone of the spec is carried by no node",
        _ => "not acting",
    };
    let event = changed.then(|| EventSpec {
        warning: true,
        reason,
        note: format!("{why}: {message}"),
        action: "Validate",
        related: None,
    });
    (next, event)
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
