//! The Events of a reconcile: the action taken (or that would be), and the Warnings on
//! user-visible transitions — a gate closing, signals becoming untrusted, something for a
//! human.

use super::{
    EventSpec, Related, ReportInput, condition, conditions::attention_condition, reasons, turned,
};
use crate::{
    api::{ActionKind, InvoiceServiceSpec, InvoiceServiceStatus, Rung, condition_types},
    engine::{Attention, Gate, Outcome, PlannedAction, Step},
    incident::Change,
};

/// The Events for the reconcile that made `next`, in the order to publish them.
pub(super) fn events(input: &ReportInput<'_>, next: &InvoiceServiceStatus) -> Vec<EventSpec> {
    let mut events = Vec::new();
    if let Outcome::Act { action, dry_run } = &input.decision.outcome {
        events.push(action_event(
            action,
            *dry_run,
            input.applied,
            input.refusal.as_deref(),
        ));
    }
    events.extend(storm_event(input, next));
    events.extend(blocked_event(input, next));
    events.extend(untrusted_event(input, next));
    events.extend(attention_events(input));
    events
}

/// The storm gate has just closed (and no other gate blocks an action).
fn storm_event(input: &ReportInput<'_>, next: &InvoiceServiceStatus) -> Option<EventSpec> {
    let closed = input.storm
        && input.decision.blocked().is_none()
        && turned(
            input.previous,
            next,
            condition_types::REMEDIATION_ALLOWED,
            "False",
            Gate::StormGate.as_str(),
        );
    closed.then(|| EventSpec {
        warning: true,
        reason: reasons::REMEDIATION_BLOCKED,
        note: "actions frozen by StormGate: too many InvoiceServices are unhealthy at once"
            .to_owned(),
        action: "Evaluate",
        related: None,
    })
}

/// A gate has just blocked an action (an exhausted ladder says so through `NeedsAttention`).
fn blocked_event(input: &ReportInput<'_>, next: &InvoiceServiceStatus) -> Option<EventSpec> {
    let blocked = input.decision.blocked().filter(|blocked| {
        blocked.gate != Gate::LadderExhausted
            && turned(
                input.previous,
                next,
                condition_types::REMEDIATION_ALLOWED,
                "False",
                blocked.gate.as_str(),
            )
    })?;
    Some(EventSpec {
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
    })
}

/// Signals have just become untrusted.
fn untrusted_event(input: &ReportInput<'_>, next: &InvoiceServiceStatus) -> Option<EventSpec> {
    let (_, reason) = input.evaluation.untrusted.iter().next()?;
    if !turned(
        input.previous,
        next,
        condition_types::SIGNALS_TRUSTED,
        "False",
        reason.as_str(),
    ) {
        return None;
    }
    let message = condition(next, condition_types::SIGNALS_TRUSTED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    Some(EventSpec {
        warning: true,
        reason: reasons::SIGNALS_UNTRUSTED,
        note: format!("signals untrusted, no action will be taken on them: {message}"),
        action: "Evaluate",
        related: None,
    })
}

/// A Warning for each thing for a human that `NeedsAttention` did not already say (as its
/// reason, or — while an incident at risk of missing its RTO takes the reason — as one of the
/// open incident's).
fn attention_events(input: &ReportInput<'_>) -> Vec<EventSpec> {
    let mut events = Vec::new();
    let said_in_incident = |reason: &str| {
        input
            .previous
            .incidents
            .as_ref()
            .and_then(|incidents| incidents.open.as_ref())
            .is_some_and(|open| open.needs_attention.iter().any(|r| r == reason))
    };
    for attention in &input.decision.attention {
        let (reason, _) = attention_condition(attention);
        let new = condition(input.previous, condition_types::NEEDS_ATTENTION)
            .is_none_or(|c| c.status != "True" || c.reason != reason)
            && !said_in_incident(reason);
        if new {
            events.push(EventSpec {
                warning: true,
                reason,
                note: attention_note(attention, input.spec),
                action: "Evaluate",
                related: None,
            });
        }
    }
    events
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

/// The Event of an action: taken, refused by the API server, or (DryRun) what would be done.
fn action_event(
    action: &PlannedAction,
    dry_run: bool,
    applied: bool,
    refusal: Option<&str>,
) -> EventSpec {
    let related = related(&action.step);
    let evidence: Vec<String> = action
        .evidence
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let kind = action.kind();
    let what = format!("{} {}", kind.as_str(), action.step.describe());
    let why = format!("{} [{}]", action.reason, evidence.join(" "));
    if dry_run {
        return EventSpec {
            warning: false,
            reason: reasons::WOULD_REMEDIATE,
            note: format!("DryRun, nothing done: would {what}: {why}"),
            action: kind.as_str(),
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
            action: kind.as_str(),
            related,
        };
    }
    let detail = match action.step.replicas() {
        Some(replicas) if !replicas.is_empty() => {
            let counts: Vec<String> = replicas
                .iter()
                .map(|(name, count)| format!("{name}={count}"))
                .collect();
            format!(" (replicas {})", counts.join(", "))
        }
        _ => String::new(),
    };
    EventSpec {
        warning: matches!(action.step, Step::ZoneFailover { canary: true, .. }),
        reason: taken_reason(&action.step),
        note: format!("{what}{detail}: {why}"),
        action: kind.as_str(),
        related,
    }
}

/// The object the Event of `step` references: the first pod or Deployment it touches.
fn related(step: &Step) -> Option<Related> {
    match step {
        Step::RestartPod { pods } => pods.first().cloned().map(Related::Pod),
        Step::RolloutRestart { deployments } => {
            deployments.first().cloned().map(Related::Deployment)
        }
        Step::ScaleOut { replicas } | Step::ScaleIn { replicas } => {
            replicas.keys().next().cloned().map(Related::Deployment)
        }
        _ => None,
    }
}

/// The Event reason of an action carried out.
fn taken_reason(step: &Step) -> &'static str {
    match step {
        Step::ZoneFailBack { canary: true, .. } => return reasons::ZONE_CANARY_STARTED,
        Step::ZoneFailover { canary: true, .. } => return reasons::ZONE_CANARY_WITHDRAWN,
        _ => {}
    }
    action_reason(step.kind())
}

/// The Event reason of an action of `kind` carried out (a zone's fail-back canary is
/// `ZoneCanaryStarted` and its withdrawal `ZoneCanaryWithdrawn` instead).
pub fn action_reason(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::RestartPod => reasons::POD_RESTARTED,
        ActionKind::RolloutRestart => reasons::ROLLOUT_RESTARTED,
        ActionKind::ScaleOut => reasons::SCALED_OUT,
        ActionKind::ScaleIn => reasons::SCALED_IN,
        ActionKind::EnterReadOnly => reasons::READ_ONLY_ENTERED,
        ActionKind::ExitReadOnly => reasons::READ_ONLY_EXITED,
        ActionKind::ZoneFailover => reasons::ZONE_FAILED_OVER,
        ActionKind::ZoneFailBack => reasons::ZONE_FAILED_BACK,
    }
}

/// The Event of a reversal carried out because the InvoiceService was deleted: the same
/// reason as the reversal (`ReadOnlyExited`, `ZoneFailedBack`, `ScaledIn`), its note saying why.
pub fn undo_event(action: &PlannedAction) -> EventSpec {
    action_event(action, false, true, None)
}

/// The Event of an incident's change: its summary when it closes (Warning when it missed its
/// RTO), a Warning when it is found at risk of missing its RTO. An incident opening has no
/// Event of its own: the symptom's action or Warning says it.
pub(super) fn incident_event(change: &Change) -> Option<EventSpec> {
    match change {
        Change::Opened(_) => None,
        Change::AtRisk(incident) => {
            let at_risk = incident.at_risk.as_ref()?;
            let symptoms: Vec<&str> = incident.symptoms.iter().map(|s| s.as_str()).collect();
            Some(EventSpec {
                warning: true,
                reason: reasons::RECOVERY_OBJECTIVE_AT_RISK,
                note: format!(
                    "incident {} ({}) may miss its RTO {}, which passes at {}: {}",
                    incident.number,
                    symptoms.join(", "),
                    incident.rto.as_deref().unwrap_or_default(),
                    at_risk.deadline.0,
                    at_risk.reason
                ),
                action: "Evaluate",
                related: None,
            })
        }
        Change::Closed(incident) => Some(EventSpec {
            warning: incident.rto_met == Some(false),
            reason: reasons::INCIDENT_CLOSED,
            note: incident.summary.clone().unwrap_or_default(),
            action: "Evaluate",
            related: None,
        }),
    }
}
