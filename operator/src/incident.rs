//! Incidents: every outage as one episode, measured against the recovery objective. Pure: the
//! report step hands it what one reconcile saw ([`Reading`]) and what the ladder could still
//! do ([`Prospects`]); it answers the next `status.incidents` and what changed ([`Change`]).
//! Nothing here does IO or reads the clock.
//!
//! The state machine, with its memory in status so a restarted operator or a new leader
//! continues the open incident:
//!
//! - **Open.** No incident is open and something is wrong: a symptom the engine acts on (or
//!   an SLO breach, which always comes with one), or a 4xx spike no action fixes. The fault is
//!   dated back to when it first showed in the signals (`startedAt`: a pod unready, a zone or
//!   the database pool over its threshold before the `for` that makes it a symptom); the RTO
//!   counts from there.
//! - **Merge.** While it is open, a second symptom joins the same incident, and every action
//!   taken, proposed (DryRun) or blocked is recorded with its outcome as `history` later says
//!   it. A symptom during the settle period belongs to the same incident.
//! - **Recover.** The service is healthy — SLOs met now, no unhealthy pod, no symptom, not in
//!   read-only mode (writes refused is not recovered) — since `recoveredAt`.
//! - **Close.** Healthy for `slos.recovery.settleFor` (5m by default): the incident moves to
//!   `recent` with its time to recover and whether the RTO was met, and one Event says so.
//! - **At risk.** While it is open and not recovered, with an RTO: when no rung of the ladder
//!   can still be taken and judged before the RTO passes (every rung tried, none in the ladder,
//!   or the next one judged too late), or when `atRiskAfter` of the RTO has passed,
//!   `RecoveryObjectiveAtRisk` is raised, once per incident, before the RTO is missed.
//!
//! Unknown health neither opens, recovers nor closes an incident: the settle period needs
//! health seen, as the verdict on an action does.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{
        ActionKind, ActionOutcome, ActionRecord, AtRisk, INCIDENT_ACTIONS_LIMIT, Incident,
        IncidentAction, IncidentSymptom, IncidentsStatus, InvoiceServiceSpec, InvoiceServiceStatus,
        RECENT_INCIDENTS_LIMIT, RemediationMode, Rung,
    },
    engine::{Attention, Decision, Outcome, symptom_rungs, timers},
    evaluate::{Evaluation, PodProblem},
};

/// The reason of `NeedsAttention` (and of the Warning Event) when an open incident is about
/// to miss its RTO.
pub const RECOVERY_OBJECTIVE_AT_RISK: &str = "RecoveryObjectiveAtRisk";

/// What one reconcile saw, as far as incidents care.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading<'a> {
    /// What is wrong now, most specific first; empty when nothing is.
    pub symptoms: Vec<IncidentSymptom>,
    /// Known healthy now: SLOs met, no unhealthy pod, no symptom, not held in read-only mode.
    pub healthy: bool,
    /// When the fault first showed in the signals, if earlier than now.
    pub fault_since: Option<Timestamp>,
    /// The action taken (or proposed) in this reconcile.
    pub action: Option<(ActionKind, RemediationMode)>,
    /// The action a gate blocked in this reconcile, and the gate.
    pub blocked: Option<(ActionKind, &'static str)>,
    /// `NeedsAttention` reasons the engine raises now.
    pub attention: Vec<&'static str>,
    /// `status.history` after this reconcile: the outcomes of the incident's actions.
    pub history: &'a [ActionRecord],
}

/// What the ladder can still do for the symptom, for "no rung left that can finish in time".
#[derive(Clone, Debug, PartialEq)]
pub struct Prospects {
    /// The symptom the ladder works on; `None` when the trouble has no rung at all (a 4xx
    /// spike).
    pub symptom: Option<IncidentSymptom>,
    /// Rungs addressing it that were not tried yet in this incident.
    pub untried: Vec<Rung>,
    /// When the verdict on the pending action is due, if one is pending.
    pub pending_due: Option<Timestamp>,
    /// The earliest the next rung may be taken (after the cooldown and the pending verdict).
    pub next_at: Timestamp,
    /// How long a rung takes to be judged: the verify window in effect.
    pub verify_for: Duration,
}

/// The recovery policy: the settle period and, when the spec sets one, the RTO.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Healthy this long closes an incident.
    pub settle_for: Duration,
    /// The RTO, if any.
    pub objective: Option<Objective>,
}

/// A recovery time objective.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    /// The RTO.
    pub rto: Duration,
    /// As the spec writes it, e.g. "15m".
    pub text: String,
    /// Share of the RTO after which an unrecovered incident is at risk whatever the ladder can do.
    pub at_risk_after: f64,
}

impl Policy {
    /// The policy of `spec` (`slos.recovery`).
    pub fn of(spec: &InvoiceServiceSpec) -> Self {
        Self {
            settle_for: spec.slos.settle_for(),
            objective: spec.slos.recovery.as_ref().map(|recovery| Objective {
                rto: recovery.rto.get(),
                text: recovery.rto.to_string(),
                at_risk_after: recovery.at_risk_after.get(),
            }),
        }
    }
}

/// What changed in this reconcile, for Events and metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// An incident opened.
    Opened(Incident),
    /// The open incident was found at risk of missing its RTO.
    AtRisk(Incident),
    /// An incident closed (the record as kept in `recent`).
    Closed(Incident),
}

/// The next `status.incidents` and what changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tracked {
    /// `status.incidents` after this reconcile.
    pub status: Option<IncidentsStatus>,
    /// What changed.
    pub changes: Vec<Change>,
}

/// Folds one reconcile into the incident record.
pub fn track(
    previous: Option<&IncidentsStatus>,
    reading: &Reading<'_>,
    prospects: &Prospects,
    policy: &Policy,
    now: Timestamp,
) -> Tracked {
    // Whole seconds, as status keeps times: what is written reads back the same, so messages
    // made from it do not change (and cause writes) after a round trip.
    let now = whole_second(now);
    let mut status = previous.cloned().unwrap_or_default();
    let mut changes = Vec::new();
    let trouble = !reading.symptoms.is_empty();
    if status.open.is_none() && trouble {
        status.opened += 1;
        let started = reading
            .fault_since
            .map(whole_second)
            .filter(|since| *since < now)
            .unwrap_or(now);
        let incident = Incident {
            number: status.opened,
            started_at: Time(started),
            opened_at: Time(now),
            time_to_detect: human(between(started, now)),
            symptoms: Vec::new(),
            actions: Vec::new(),
            omitted_actions: 0,
            first_action_at: None,
            time_to_first_action: None,
            needs_attention: Vec::new(),
            rto: None,
            at_risk: None,
            recovered_at: None,
            closed_at: None,
            time_to_recover: None,
            rto_met: None,
            summary: None,
        };
        status.open = Some(incident);
    }
    let Some(mut incident) = status.open.take() else {
        return finish(previous, status, changes);
    };
    let opened_now =
        previous.and_then(|p| p.open.as_ref()).map(|i| i.number) != Some(incident.number);
    merge(&mut incident, reading, policy, now);
    if trouble {
        incident.recovered_at = None;
    } else if reading.healthy {
        let since = incident.recovered_at.get_or_insert(Time(now)).0;
        if between(since, now) >= policy.settle_for {
            let closed = close(incident, policy, now);
            status.closed += 1;
            match closed.rto_met {
                Some(true) => status.rto_met += 1,
                Some(false) => status.rto_missed += 1,
                None => {}
            }
            status.recent.insert(0, closed.clone());
            status.recent.truncate(RECENT_INCIDENTS_LIMIT);
            changes.push(Change::Closed(closed));
            return finish(previous, status, changes);
        }
    }
    if opened_now {
        changes.push(Change::Opened(incident.clone()));
    }
    if let Some(at_risk) = at_risk(&incident, trouble, prospects, policy, now) {
        incident.at_risk = Some(at_risk);
        if !incident
            .needs_attention
            .iter()
            .any(|reason| reason == RECOVERY_OBJECTIVE_AT_RISK)
        {
            incident
                .needs_attention
                .push(RECOVERY_OBJECTIVE_AT_RISK.to_owned());
        }
        changes.push(Change::AtRisk(incident.clone()));
    }
    status.open = Some(incident);
    finish(previous, status, changes)
}

/// `status.incidents`: unset until the first incident, so a service that never had one has
/// no such field.
fn finish(
    previous: Option<&IncidentsStatus>,
    status: IncidentsStatus,
    changes: Vec<Change>,
) -> Tracked {
    let status = (previous.is_some() || status != IncidentsStatus::default()).then_some(status);
    Tracked { status, changes }
}

/// Adds what this reconcile saw to the open incident: new symptoms, the action or block,
/// outcomes from the history, attention reasons, the RTO in force.
fn merge(incident: &mut Incident, reading: &Reading<'_>, policy: &Policy, now: Timestamp) {
    for symptom in &reading.symptoms {
        if !incident.symptoms.contains(symptom) {
            incident.symptoms.push(*symptom);
        }
    }
    for reason in &reading.attention {
        if !incident.needs_attention.iter().any(|r| r == reason) {
            incident.needs_attention.push((*reason).to_owned());
        }
    }
    incident.rto = policy.objective.as_ref().map(|o| o.text.clone());
    if let Some((action, mode)) = reading.action {
        if incident.first_action_at.is_none() {
            incident.first_action_at = Some(Time(now));
            incident.time_to_first_action = Some(human(between(incident.opened_at.0, now)));
        }
        push_action(
            incident,
            IncidentAction {
                action,
                at: Time(now),
                mode,
                outcome: Some(match mode {
                    RemediationMode::DryRun => ActionOutcome::NotTaken,
                    RemediationMode::Enforce => ActionOutcome::Pending,
                }),
                blocked_by: None,
            },
        );
    }
    if let Some((action, gate)) = reading.blocked {
        // A gate blocking the same action again since the last action taken (every interval
        // through a cooldown, or alternating with another gate) is one entry, not one per
        // interval: the record, and the status, stay still while nothing new happens.
        let since_taken = incident
            .actions
            .iter()
            .rposition(|a| a.blocked_by.is_none())
            .map_or(0, |index| index + 1);
        let again = incident.actions[since_taken..]
            .iter()
            .any(|a| a.action == action && a.blocked_by.as_deref() == Some(gate));
        if !again {
            push_action(
                incident,
                IncidentAction {
                    action,
                    at: Time(now),
                    mode: RemediationMode::Enforce,
                    outcome: None,
                    blocked_by: Some(gate.to_owned()),
                },
            );
        }
    }
    // Outcomes as the history has them now (verdicts come an interval or more later).
    for entry in incident
        .actions
        .iter_mut()
        .filter(|a| a.blocked_by.is_none())
    {
        if let Some(record) = reading.history.iter().find(|record| {
            record.action == entry.action && record.at.0.as_second() == entry.at.0.as_second()
        }) {
            entry.outcome = Some(record.outcome);
        }
    }
}

fn push_action(incident: &mut Incident, action: IncidentAction) {
    if incident.actions.len() < INCIDENT_ACTIONS_LIMIT {
        incident.actions.push(action);
    } else {
        incident.omitted_actions = incident.omitted_actions.saturating_add(1);
    }
}

/// The incident closed now: its times, the RTO verdict and the one-line summary.
fn close(mut incident: Incident, policy: &Policy, now: Timestamp) -> Incident {
    let recovered = incident.recovered_at.as_ref().map_or(now, |t| t.0);
    let to_recover = between(incident.started_at.0, recovered);
    incident.closed_at = Some(Time(now));
    incident.time_to_recover = Some(human(to_recover));
    incident.rto_met = policy.objective.as_ref().map(|o| to_recover <= o.rto);
    incident.summary = Some(summary(&incident, policy, to_recover));
    incident
}

/// "recovered in 4m12s after RestartPod, RolloutRestart; RTO 15m met", with the times to
/// detect and to act, and whether a human was needed.
pub fn summary(incident: &Incident, policy: &Policy, to_recover: Duration) -> String {
    let symptoms: Vec<&str> = incident.symptoms.iter().map(|s| s.as_str()).collect();
    let mut taken: Vec<&str> = Vec::new();
    let mut proposed: Vec<&str> = Vec::new();
    for action in &incident.actions {
        let list = match (action.mode, &action.blocked_by, action.outcome) {
            (_, Some(_), _) | (_, _, Some(ActionOutcome::Refused)) => continue,
            (RemediationMode::DryRun, _, _) => &mut proposed,
            (RemediationMode::Enforce, _, _) => &mut taken,
        };
        if !list.contains(&action.action.as_str()) {
            list.push(action.action.as_str());
        }
    }
    let mut text = format!(
        "incident {} ({}) recovered in {}",
        incident.number,
        symptoms.join(", "),
        human(to_recover)
    );
    match (taken.is_empty(), proposed.is_empty()) {
        (true, true) => text.push_str(" without action"),
        (false, _) => text.push_str(&format!(" after {}", taken.join(", "))),
        (true, false) => text.push_str(&format!(
            " without action (DryRun: would have taken {})",
            proposed.join(", ")
        )),
    }
    text.push_str(&format!("; detected in {}", incident.time_to_detect));
    if let Some(first) = &incident.time_to_first_action {
        text.push_str(&format!(", first action after {first}"));
    }
    if !incident.needs_attention.is_empty() {
        text.push_str(&format!(
            "; a human was needed ({})",
            incident.needs_attention.join(", ")
        ));
    }
    if let Some(objective) = &policy.objective {
        if to_recover <= objective.rto {
            text.push_str(&format!("; RTO {} met", objective.text));
        } else {
            text.push_str(&format!(
                "; RTO {} missed by {}",
                objective.text,
                human(to_recover - objective.rto)
            ));
        }
    }
    text
}

/// `RecoveryObjectiveAtRisk` for the open incident, when it is raised now: not before, not
/// once recovered, and only with an RTO. The ladder is asked only while something is wrong
/// (`trouble`): a service whose symptom is gone but is not recovered yet — read-only until
/// the database pool has stayed low for `exitWhen.for`, or its signals unknown — waits for
/// a reversal or for evidence, not for a rung, and is at risk only once the share of the RTO
/// has passed.
fn at_risk(
    incident: &Incident,
    trouble: bool,
    prospects: &Prospects,
    policy: &Policy,
    now: Timestamp,
) -> Option<AtRisk> {
    let objective = policy.objective.as_ref()?;
    if incident.at_risk.is_some() || incident.recovered_at.is_some() {
        return None;
    }
    let started = incident.started_at.0;
    let deadline = whole_second(later(started, objective.rto));
    let share_at = later(started, objective.rto.mul_f64(objective.at_risk_after));
    let reason = if now >= share_at {
        format!(
            "{:.0}% of the RTO has passed without recovery",
            objective.at_risk_after * 100.0
        )
    } else if trouble {
        no_rung_in_time(prospects, deadline)?
    } else {
        return None;
    };
    Some(AtRisk {
        since: Time(now),
        deadline: Time(deadline),
        reason,
    })
}

/// Why no rung can finish before `deadline`; `None` when one can (the pending action's
/// verdict, or the next untried rung taken and judged in time).
fn no_rung_in_time(prospects: &Prospects, deadline: Timestamp) -> Option<String> {
    if prospects.pending_due.is_some_and(|due| due <= deadline) {
        return None;
    }
    let Some(symptom) = prospects.symptom else {
        return Some("no rung of the ladder addresses it: a human must fix it".to_owned());
    };
    let Some(next) = prospects.untried.first() else {
        return Some(format!(
            "the ladder has no rung left for {}: every rung addressing it was tried or none is in the ladder",
            symptom.as_str()
        ));
    };
    let judged = whole_second(later(prospects.next_at, prospects.verify_for));
    (judged > deadline).then(|| {
        format!(
            "the ladder has no rung left for {} that can finish in time: {} would be judged at {}",
            symptom.as_str(),
            next.as_str(),
            judged
        )
    })
}

/// The incident opened and the incident closed between `previous` and `next` (by their
/// counts), for the metrics.
pub fn counted<'a>(
    previous: Option<&IncidentsStatus>,
    next: Option<&'a IncidentsStatus>,
) -> (Option<&'a Incident>, Option<&'a Incident>) {
    let Some(next) = next else {
        return (None, None);
    };
    let (opened, closed) = previous.map_or((0, 0), |p| (p.opened, p.closed));
    (
        (next.opened > opened)
            .then_some(next.open.as_ref())
            .flatten(),
        (next.closed > closed)
            .then_some(next.recent.first())
            .flatten(),
    )
}

/// Time to recover of a closed incident: from the fault to the start of the health that
/// closed it.
pub fn time_to_recover(incident: &Incident) -> Option<Duration> {
    let recovered = incident.recovered_at.as_ref()?;
    Some(between(incident.started_at.0, recovered.0))
}

/// `time` without its fraction of a second.
fn whole_second(time: Timestamp) -> Timestamp {
    Timestamp::from_second(time.as_second()).unwrap_or(time)
}

/// `then` plus `duration`.
fn later(then: Timestamp, duration: Duration) -> Timestamp {
    SignedDuration::try_from(duration)
        .ok()
        .and_then(|duration| then.checked_add(duration).ok())
        .unwrap_or(Timestamp::MAX)
}

/// From `then` to `now`, zero when `then` is later.
fn between(then: Timestamp, now: Timestamp) -> Duration {
    let seconds = (now - then).total(jiff::Unit::Second).unwrap_or(0.0);
    Duration::from_secs_f64(seconds.max(0.0))
}

/// A duration as people write it, to the second: "4m12s", "15m", "1h0m5s", "0s".
pub fn human(duration: Duration) -> String {
    let total = duration.as_secs_f64().round() as u64;
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    match (hours, minutes, seconds) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// Reads a reconcile for incidents: the symptoms, health and fault time from the evaluation
/// and the decision, the action and block from the decision, what the ladder can still do from
/// the status `engine::record` made.
pub fn read<'a>(
    spec: &InvoiceServiceSpec,
    evaluation: &Evaluation,
    decision: &Decision,
    recorded: &'a InvoiceServiceStatus,
    now: Timestamp,
) -> (Reading<'a>, Prospects) {
    let unhealthy_pods = evaluation.unhealthy_pods().next().is_some();
    let mut symptoms: Vec<IncidentSymptom> = decision.symptom.into_iter().collect();
    // A breach the decision named no symptom for (an action being resumed from status).
    let mut also = |symptom: IncidentSymptom, holds: bool| {
        if holds && !symptoms.contains(&symptom) && decision.symptom.is_none() {
            symptoms.push(symptom);
        }
    };
    also(IncidentSymptom::BadPods, unhealthy_pods);
    also(IncidentSymptom::ServiceErrors, evaluation.fast_burn);
    also(
        IncidentSymptom::Latency,
        evaluation.latency_breach == Some(true),
    );
    let mut attention = Vec::new();
    for item in &decision.attention {
        let reason = match item {
            Attention::LadderExhausted => "LadderExhausted",
            Attention::ClientErrorSpike { .. } => {
                if !symptoms.contains(&IncidentSymptom::ClientErrorSpike) {
                    symptoms.push(IncidentSymptom::ClientErrorSpike);
                }
                "ClientErrorSpike"
            }
            Attention::CertificateExpiring { .. } => "CertificateExpiring",
        };
        attention.push(reason);
    }
    let healthy = symptoms.is_empty()
        && evaluation.slo_met_now() == Some(true)
        && !unhealthy_pods
        && recorded.read_only.is_none();
    let (action, blocked) = match &decision.outcome {
        Outcome::Act { action, dry_run } => (
            Some((
                action.kind(),
                if *dry_run {
                    RemediationMode::DryRun
                } else {
                    RemediationMode::Enforce
                },
            )),
            None,
        ),
        Outcome::Blocked(blocked) => (None, Some((blocked.kind, blocked.gate.as_str()))),
        Outcome::Idle | Outcome::Waiting(_) => (None, None),
    };
    // The symptom the ladder works on: the decision's, or (an action being resumed) the
    // first one a rung addresses.
    let worked_on = decision.symptom.or_else(|| {
        symptoms
            .iter()
            .copied()
            .find(|symptom| !symptom_rungs(*symptom).is_empty())
    });
    let prospects = prospects(spec, evaluation, worked_on, recorded, now);
    let reading = Reading {
        symptoms,
        healthy,
        fault_since: fault_since(evaluation, recorded, now),
        action,
        blocked,
        attention,
        history: &recorded.history,
    };
    (reading, prospects)
}

/// When the fault first showed: the earliest running timer of a zone or the database pool
/// over its threshold, or the longest-unready pod.
fn fault_since(
    evaluation: &Evaluation,
    recorded: &InvoiceServiceStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    let timers = recorded
        .held_since
        .iter()
        .filter(|(key, _)| {
            key.as_str() == timers::DATABASE_POOL_HIGH
                || (key.starts_with("Zone/") && key.ends_with("/Unhealthy"))
        })
        .map(|(_, since)| since.0);
    let unready = evaluation
        .unhealthy_pods()
        .filter_map(|pod| match pod.problem {
            Some(PodProblem::Unready { for_ }) => SignedDuration::try_from(for_)
                .ok()
                .and_then(|for_| now.checked_sub(for_).ok()),
            _ => None,
        });
    timers.chain(unready).min()
}

/// What the ladder can still do for `symptom`.
fn prospects(
    spec: &InvoiceServiceSpec,
    evaluation: &Evaluation,
    symptom: Option<IncidentSymptom>,
    recorded: &InvoiceServiceStatus,
    now: Timestamp,
) -> Prospects {
    let remediation = &spec.remediation;
    let verify_for = remediation
        .verify_window
        .get()
        .max(evaluation.detection_window);
    let addressing: Vec<Rung> = symptom
        .map(|symptom| {
            spec.effective_ladder()
                .into_iter()
                .filter(|rung| symptom_rungs(symptom).contains(rung))
                .collect()
        })
        .unwrap_or_default();
    let ladder = recorded.ladder.as_ref();
    let untried = match ladder {
        Some(ladder) if ladder.exhausted => Vec::new(),
        Some(ladder) => match ladder
            .rung
            .and_then(|r| addressing.iter().position(|a| *a == r))
        {
            Some(position) => addressing[position + 1..].to_vec(),
            None => addressing,
        },
        None => addressing,
    };
    let pending_due = recorded
        .last_action
        .as_ref()
        .filter(|last| last.outcome == ActionOutcome::Pending)
        .map(|last| later(last.at.0, verify_for));
    let after_cooldown = recorded
        .last_action
        .as_ref()
        .map(|last| later(last.at.0, remediation.cooldown.get()));
    let next_at = [Some(now), pending_due, after_cooldown]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
    Prospects {
        symptom,
        untried,
        pending_due,
        next_at,
        verify_for,
    }
}

#[cfg(test)]
mod tests;
