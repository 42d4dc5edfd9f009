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
}

/// The object an Event is about, besides the InvoiceService.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Related {
    /// A pod of the service.
    Pod(String),
    /// A Deployment of the service.
    Deployment(String),
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
    match evaluation.slo_met() {
        Some(true) => set(
            condition_types::SLO_MET,
            "True",
            if evaluation.slow_burn {
                "SlowBurn"
            } else {
                "WithinObjectives"
            },
            if evaluation.slow_burn {
                "objectives met, but a ticket-level burn rate fires".to_owned()
            } else {
                "availability and latency within their objectives".to_owned()
            },
        ),
        Some(false) if evaluation.fast_burn => set(
            condition_types::SLO_MET,
            "False",
            "FastBurn",
            "the error budget burns at a paging rate".to_owned(),
        ),
        Some(false) => set(
            condition_types::SLO_MET,
            "False",
            "LatencyAboveThreshold",
            format!(
                "the p{} latency is above {}",
                spec.slos
                    .latency
                    .as_ref()
                    .map(|latency| latency.percentile.to_string())
                    .unwrap_or_default(),
                spec.slos
                    .latency
                    .as_ref()
                    .map(|latency| latency.threshold.to_string())
                    .unwrap_or_default()
            ),
        ),
        None => set(
            condition_types::SLO_MET,
            "Unknown",
            "InsufficientData",
            "not enough trusted signal to judge the objectives".to_owned(),
        ),
    }
    match (&decision.blocked, paused, storm) {
        (_, true, _) => set(
            condition_types::REMEDIATION_ALLOWED,
            "False",
            Gate::Paused.as_str(),
            "remediation is paused".to_owned(),
        ),
        (_, _, true) => set(
            condition_types::REMEDIATION_ALLOWED,
            "False",
            Gate::StormGate.as_str(),
            "too many InvoiceServices are unhealthy at once: the cause is probably shared \
             (Prometheus, network, the cluster); actions are frozen cluster-wide until it passes"
                .to_owned(),
        ),
        (Some(blocked), _, _) => set(
            condition_types::REMEDIATION_ALLOWED,
            "False",
            blocked.gate.as_str(),
            format!("{} blocked: {}", blocked.kind.as_str(), blocked.detail),
        ),
        (None, false, false) => set(
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
        match evaluation.slo_met() {
            Some(true) if evaluation.unhealthy_pods().next().is_none() => Phase::Healthy,
            Some(_) => Phase::Degraded,
            None if evaluation.unhealthy_pods().next().is_some() => Phase::Degraded,
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
