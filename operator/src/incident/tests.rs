//! The incident state machine: opening, merging, recording actions, settling and closing, the
//! RTO at risk, and resuming from status after a restart.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    Change, Objective, Policy, Prospects, RECOVERY_OBJECTIVE_AT_RISK, Reading, Tracked, counted,
    human, time_to_recover, track,
};
use crate::api::{
    ActionKind, ActionOutcome, ActionRecord, IncidentSymptom, IncidentsStatus,
    InvoiceServiceStatus, RemediationMode, Rung,
};

fn start() -> Timestamp {
    "2026-03-02T10:00:00Z".parse().unwrap()
}

fn at(seconds: i64) -> Timestamp {
    start() + jiff::SignedDuration::from_secs(seconds)
}

fn policy(rto: Option<&str>) -> Policy {
    Policy {
        settle_for: Duration::from_secs(60),
        objective: rto.map(|text| Objective {
            rto: text.parse::<crate::api::Duration>().unwrap().get(),
            text: text.to_owned(),
            at_risk_after: 0.75,
        }),
    }
}

/// Prospects with a rung left that is judged long before any RTO.
fn hopeful(now: Timestamp) -> Prospects {
    Prospects {
        symptom: Some(IncidentSymptom::BadPods),
        untried: vec![Rung::RestartPod, Rung::RolloutRestart],
        pending_due: None,
        next_at: now,
        verify_for: Duration::from_secs(30),
    }
}

fn sick(symptom: IncidentSymptom) -> Reading<'static> {
    Reading {
        symptoms: vec![symptom],
        ..Reading::default()
    }
}

fn well() -> Reading<'static> {
    Reading {
        healthy: true,
        ..Reading::default()
    }
}

/// One reconcile at `seconds` after the start, from `status`.
fn step(
    status: &Option<IncidentsStatus>,
    reading: &Reading<'_>,
    policy: &Policy,
    seconds: i64,
) -> Tracked {
    track(
        status.as_ref(),
        reading,
        &hopeful(at(seconds)),
        policy,
        at(seconds),
    )
}

fn open(tracked: &Tracked) -> &crate::api::Incident {
    tracked
        .status
        .as_ref()
        .and_then(|status| status.open.as_ref())
        .expect("an open incident")
}

#[test]
fn nothing_wrong_records_nothing() {
    let tracked = step(&None, &well(), &policy(None), 0);
    assert_eq!(tracked, Tracked::default());
    let unknown = step(&None, &Reading::default(), &policy(None), 0);
    assert_eq!(unknown, Tracked::default());
}

#[test]
fn a_symptom_opens_an_incident_dated_from_when_the_fault_showed() {
    let reading = Reading {
        fault_since: Some(at(-20)),
        ..sick(IncidentSymptom::BadPods)
    };
    let tracked = step(&None, &reading, &policy(Some("15m")), 0);
    let incident = open(&tracked);
    assert_eq!(incident.number, 1);
    assert_eq!(incident.started_at, Time(at(-20)));
    assert_eq!(incident.opened_at, Time(at(0)));
    assert_eq!(incident.time_to_detect, "20s");
    assert_eq!(incident.symptoms, [IncidentSymptom::BadPods]);
    assert_eq!(incident.rto.as_deref(), Some("15m"));
    assert!(incident.at_risk.is_none());
    assert_eq!(tracked.status.as_ref().unwrap().opened, 1);
    assert!(matches!(&tracked.changes[..], [Change::Opened(i)] if i.number == 1));
}

#[test]
fn a_second_symptom_merges_into_the_open_incident() {
    let policy = policy(None);
    let first = step(&None, &sick(IncidentSymptom::BadPods), &policy, 0);
    let second = step(
        &first.status,
        &sick(IncidentSymptom::ServiceErrors),
        &policy,
        15,
    );
    let incident = open(&second);
    assert_eq!(incident.number, 1);
    assert_eq!(
        incident.symptoms,
        [IncidentSymptom::BadPods, IncidentSymptom::ServiceErrors]
    );
    assert_eq!(incident.opened_at, Time(at(0)));
    assert_eq!(second.status.as_ref().unwrap().opened, 1);
    assert!(second.changes.is_empty(), "{:?}", second.changes);
    // The same symptom again adds nothing.
    let third = step(&second.status, &sick(IncidentSymptom::BadPods), &policy, 30);
    assert_eq!(third.status, second.status);
}

#[test]
fn actions_and_blocks_are_recorded_once_with_the_outcome_history_gives_them() {
    let policy = policy(None);
    let first = step(&None, &sick(IncidentSymptom::BadPods), &policy, 0);
    let taken = Reading {
        action: Some((ActionKind::RestartPod, RemediationMode::Enforce)),
        ..sick(IncidentSymptom::BadPods)
    };
    let second = step(&first.status, &taken, &policy, 10);
    let blocked = Reading {
        blocked: Some((ActionKind::RolloutRestart, "Cooldown")),
        ..sick(IncidentSymptom::BadPods)
    };
    let third = step(&second.status, &blocked, &policy, 15);
    let fourth = step(&third.status, &blocked, &policy, 20);
    assert_eq!(fourth.status, third.status, "a repeated block is one entry");
    let other_gate = Reading {
        blocked: Some((ActionKind::RolloutRestart, "MaxUnavailable")),
        ..sick(IncidentSymptom::BadPods)
    };
    let other = step(&fourth.status, &other_gate, &policy, 25);
    let alternating = step(&other.status, &blocked, &policy, 30);
    assert_eq!(
        alternating.status, other.status,
        "gates taking turns are one entry each"
    );
    let history = [ActionRecord {
        action: ActionKind::RestartPod,
        target: "pod/a".to_owned(),
        reason: "unready".to_owned(),
        evidence: Default::default(),
        at: Time(at(10)),
        mode: RemediationMode::Enforce,
        outcome: ActionOutcome::Helped,
    }];
    let judged = Reading {
        history: &history,
        ..well()
    };
    let fifth = step(&alternating.status, &judged, &policy, 45);
    let incident = open(&fifth);
    let actions: Vec<_> = incident
        .actions
        .iter()
        .map(|a| (a.action, a.outcome, a.blocked_by.as_deref()))
        .collect();
    assert_eq!(
        actions,
        [
            (ActionKind::RestartPod, Some(ActionOutcome::Helped), None),
            (ActionKind::RolloutRestart, None, Some("Cooldown")),
            (ActionKind::RolloutRestart, None, Some("MaxUnavailable")),
        ]
    );
    assert_eq!(incident.first_action_at, Some(Time(at(10))));
    assert_eq!(incident.time_to_first_action.as_deref(), Some("10s"));
    assert_eq!(incident.recovered_at, Some(Time(at(45))));
}

#[test]
fn the_incident_closes_after_the_settle_period_with_one_summary() {
    let policy = policy(Some("15m"));
    let reading = Reading {
        fault_since: Some(at(-30)),
        ..sick(IncidentSymptom::BadPods)
    };
    let opened = step(&None, &reading, &policy, 0);
    let taken = Reading {
        action: Some((ActionKind::RestartPod, RemediationMode::Enforce)),
        ..sick(IncidentSymptom::BadPods)
    };
    let acted = step(&opened.status, &taken, &policy, 5);
    let escalated = Reading {
        action: Some((ActionKind::RolloutRestart, RemediationMode::Enforce)),
        ..sick(IncidentSymptom::BadPods)
    };
    let acted = step(&acted.status, &escalated, &policy, 60);
    let recovering = step(&acted.status, &well(), &policy, 222);
    assert!(open(&recovering).recovered_at.is_some());
    let settling = step(&recovering.status, &well(), &policy, 281);
    assert!(
        open(&settling).closed_at.is_none(),
        "closed before settleFor"
    );
    let closed = step(&settling.status, &well(), &policy, 282);
    let status = closed.status.as_ref().unwrap();
    assert!(status.open.is_none());
    assert_eq!((status.opened, status.closed), (1, 1));
    assert_eq!((status.rto_met, status.rto_missed), (1, 0));
    let incident = &status.recent[0];
    assert_eq!(incident.closed_at, Some(Time(at(282))));
    assert_eq!(incident.time_to_recover.as_deref(), Some("4m12s"));
    assert_eq!(incident.rto_met, Some(true));
    assert_eq!(
        incident.summary.as_deref(),
        Some(
            "incident 1 (BadPods) recovered in 4m12s after RestartPod, RolloutRestart; \
             detected in 30s, first action after 5s; RTO 15m met"
        )
    );
    assert!(matches!(&closed.changes[..], [Change::Closed(i)] if i == incident));
    // Healthy afterwards: nothing more is written.
    let later = step(&closed.status, &well(), &policy, 300);
    assert_eq!(later.status, closed.status);
    assert!(later.changes.is_empty());
}

#[test]
fn a_symptom_during_the_settle_period_belongs_to_the_same_incident() {
    let policy = policy(None);
    let opened = step(&None, &sick(IncidentSymptom::Latency), &policy, 0);
    let recovering = step(&opened.status, &well(), &policy, 30);
    let relapse = step(
        &recovering.status,
        &sick(IncidentSymptom::ServiceErrors),
        &policy,
        60,
    );
    let incident = open(&relapse);
    assert_eq!(incident.number, 1);
    assert!(
        incident.recovered_at.is_none(),
        "the settle period restarts"
    );
    assert_eq!(
        incident.symptoms,
        [IncidentSymptom::Latency, IncidentSymptom::ServiceErrors]
    );
    // Healthy from 75 s: not closed at 120 s (settleFor 60 s from 30 s would have been).
    let again = step(&relapse.status, &well(), &policy, 75);
    let not_yet = step(&again.status, &well(), &policy, 120);
    assert!(not_yet.status.as_ref().unwrap().open.is_some());
    let closed = step(&not_yet.status, &well(), &policy, 135);
    let status = closed.status.unwrap();
    assert_eq!((status.opened, status.closed), (1, 1));
    assert_eq!(status.recent[0].time_to_recover.as_deref(), Some("1m15s"));
}

#[test]
fn unknown_health_neither_recovers_nor_closes() {
    let policy = policy(None);
    let opened = step(&None, &sick(IncidentSymptom::BadPods), &policy, 0);
    let unknown = step(&opened.status, &Reading::default(), &policy, 600);
    assert_eq!(unknown.status, opened.status);
    let recovering = step(&unknown.status, &well(), &policy, 615);
    let unknown = step(&recovering.status, &Reading::default(), &policy, 700);
    assert_eq!(unknown.status, recovering.status, "no close on unknown");
    let closed = step(&unknown.status, &well(), &policy, 705);
    assert_eq!(closed.status.unwrap().closed, 1);
}

/// The operator restarts (or another replica takes the lease) while an incident is open: the
/// next reconcile reads the status the last one wrote, through JSON as the API server keeps
/// it, and the incident goes on as if nothing had happened.
#[test]
fn a_restarted_operator_resumes_the_open_incident_from_status() {
    let policy = policy(Some("10m"));
    let taken = Reading {
        action: Some((ActionKind::RestartPod, RemediationMode::Enforce)),
        ..sick(IncidentSymptom::BadPods)
    };
    let script: [(i64, Reading<'static>); 5] = [
        (0, sick(IncidentSymptom::BadPods)),
        (15, taken),
        (30, sick(IncidentSymptom::ServiceErrors)),
        (90, well()),
        (150, well()),
    ];
    let run = |restart_after: Option<usize>| {
        let mut status: Option<IncidentsStatus> = None;
        let mut changes = Vec::new();
        for (index, (seconds, reading)) in script.iter().enumerate() {
            let tracked = step(&status, reading, &policy, *seconds);
            status = tracked.status;
            changes.extend(tracked.changes);
            if restart_after == Some(index) {
                let written = InvoiceServiceStatus {
                    incidents: status.clone(),
                    ..InvoiceServiceStatus::default()
                };
                let json = serde_json::to_string(&written).unwrap();
                let read: InvoiceServiceStatus = serde_json::from_str(&json).unwrap();
                status = read.incidents;
            }
        }
        (status, changes)
    };
    let (uninterrupted, changes) = run(None);
    for restart_after in 0..script.len() - 1 {
        let (resumed, resumed_changes) = run(Some(restart_after));
        assert_eq!(resumed, uninterrupted, "restart after step {restart_after}");
        assert_eq!(
            resumed_changes, changes,
            "restart after step {restart_after}"
        );
    }
    let status = uninterrupted.unwrap();
    assert_eq!((status.opened, status.closed), (1, 1));
    assert_eq!(
        status.recent[0].symptoms,
        [IncidentSymptom::BadPods, IncidentSymptom::ServiceErrors]
    );
}

#[test]
fn an_exhausted_ladder_puts_the_rto_at_risk_at_once_and_says_so_once() {
    let policy = policy(Some("15m"));
    let opened = step(&None, &sick(IncidentSymptom::ServiceErrors), &policy, 0);
    let exhausted = Prospects {
        symptom: Some(IncidentSymptom::ServiceErrors),
        untried: Vec::new(),
        pending_due: None,
        next_at: at(120),
        verify_for: Duration::from_secs(180),
    };
    let reading = Reading {
        attention: vec!["LadderExhausted"],
        ..sick(IncidentSymptom::ServiceErrors)
    };
    let tracked = track(
        opened.status.as_ref(),
        &reading,
        &exhausted,
        &policy,
        at(120),
    );
    let incident = open(&tracked);
    let at_risk = incident.at_risk.as_ref().expect("at risk");
    assert_eq!(at_risk.since, Time(at(120)));
    assert_eq!(at_risk.deadline, Time(at(900)));
    assert!(
        at_risk.reason.contains("no rung left for ServiceErrors"),
        "{}",
        at_risk.reason
    );
    assert_eq!(
        incident.needs_attention,
        ["LadderExhausted", RECOVERY_OBJECTIVE_AT_RISK]
    );
    assert!(matches!(&tracked.changes[..], [Change::AtRisk(_)]));
    let again = track(
        tracked.status.as_ref(),
        &reading,
        &exhausted,
        &policy,
        at(135),
    );
    assert_eq!(again.status, tracked.status);
    assert!(again.changes.is_empty());
}

#[test]
fn the_rto_is_at_risk_when_the_next_rung_would_be_judged_too_late() {
    let policy = policy(Some("5m"));
    let opened = step(&None, &sick(IncidentSymptom::BadPods), &policy, 0);
    // RestartPod was taken at 60 s and is judged at 240 s; RolloutRestart could be taken then
    // and judged at 420 s, after the RTO (300 s).
    let pending = Prospects {
        symptom: Some(IncidentSymptom::BadPods),
        untried: vec![Rung::RolloutRestart],
        pending_due: Some(at(240)),
        next_at: at(240),
        verify_for: Duration::from_secs(180),
    };
    let in_time = track(
        opened.status.as_ref(),
        &sick(IncidentSymptom::BadPods),
        &pending,
        &policy,
        at(60),
    );
    assert!(
        open(&in_time).at_risk.is_none(),
        "the pending action is judged in time"
    );
    // It had no effect (judged at 240 s): nothing left can finish by 300 s.
    let judged = Prospects {
        pending_due: None,
        ..pending
    };
    let late = track(
        in_time.status.as_ref(),
        &sick(IncidentSymptom::BadPods),
        &judged,
        &policy,
        at(200),
    );
    let at_risk = open(&late).at_risk.clone().expect("at risk");
    assert_eq!(at_risk.deadline, Time(at(300)));
    assert!(
        at_risk.reason.contains("RolloutRestart would be judged at"),
        "{}",
        at_risk.reason
    );
    assert!(at_risk.since < at_risk.deadline, "raised before the RTO");
}

#[test]
fn the_rto_is_at_risk_after_its_share_has_passed_even_with_rungs_left() {
    let policy = policy(Some("10m"));
    let opened = step(&None, &sick(IncidentSymptom::Latency), &policy, 0);
    let before = step(
        &opened.status,
        &sick(IncidentSymptom::Latency),
        &policy,
        449,
    );
    assert!(open(&before).at_risk.is_none());
    let after = step(
        &before.status,
        &sick(IncidentSymptom::Latency),
        &policy,
        450,
    );
    let at_risk = open(&after).at_risk.clone().expect("at risk at 75 %");
    assert_eq!(at_risk.reason, "75% of the RTO has passed without recovery");
}

#[test]
fn without_an_rto_or_once_recovered_nothing_is_at_risk() {
    let nothing_left = Prospects {
        symptom: None,
        untried: Vec::new(),
        pending_due: None,
        next_at: at(0),
        verify_for: Duration::from_secs(60),
    };
    let no_rto = track(
        None,
        &sick(IncidentSymptom::ClientErrorSpike),
        &nothing_left,
        &policy(None),
        at(0),
    );
    assert!(open(&no_rto).at_risk.is_none());
    // A 4xx spike has no rung: with an RTO it is at risk at once.
    let policy = policy(Some("15m"));
    let spike = track(
        None,
        &sick(IncidentSymptom::ClientErrorSpike),
        &nothing_left,
        &policy,
        at(0),
    );
    assert!(open(&spike).at_risk.is_some());
    // Recovered (settling) before the share passed: never raised.
    let opened = step(&None, &sick(IncidentSymptom::Latency), &policy, 0);
    let recovering = step(&opened.status, &well(), &policy, 60);
    let settling = track(
        recovering.status.as_ref(),
        &well(),
        &nothing_left,
        &Policy {
            settle_for: Duration::from_secs(3600),
            ..policy
        },
        at(800),
    );
    assert!(open(&settling).at_risk.is_none());
}

#[test]
fn a_missed_rto_is_counted_and_said() {
    let policy = policy(Some("1m"));
    let opened = step(&None, &sick(IncidentSymptom::ZoneDown), &policy, 0);
    let recovering = step(&opened.status, &well(), &policy, 150);
    let closed = step(&recovering.status, &well(), &policy, 210);
    let status = closed.status.as_ref().unwrap();
    assert_eq!((status.rto_met, status.rto_missed), (0, 1));
    let incident = &status.recent[0];
    assert_eq!(incident.rto_met, Some(false));
    assert_eq!(
        incident.summary.as_deref(),
        Some(
            "incident 1 (ZoneDown) recovered in 2m30s without action; detected in 0s; RTO 1m missed by 1m30s"
        )
    );
}

#[test]
fn dry_run_incidents_record_what_would_have_been_done() {
    let policy = policy(None);
    let proposed = Reading {
        action: Some((ActionKind::RestartPod, RemediationMode::DryRun)),
        ..sick(IncidentSymptom::BadPods)
    };
    let opened = step(&None, &proposed, &policy, 0);
    let incident = open(&opened);
    assert_eq!(incident.actions[0].mode, RemediationMode::DryRun);
    assert_eq!(incident.actions[0].outcome, Some(ActionOutcome::NotTaken));
    let recovering = step(&opened.status, &well(), &policy, 30);
    let closed = step(&recovering.status, &well(), &policy, 90);
    assert_eq!(
        closed.status.unwrap().recent[0].summary.as_deref(),
        Some(
            "incident 1 (BadPods) recovered in 30s without action (DryRun: would have taken \
             RestartPod); detected in 0s, first action after 0s"
        )
    );
}

#[test]
fn recent_keeps_the_last_five_and_the_counts_keep_everything() {
    let policy = policy(None);
    let mut status = None;
    for incident in 0..7 {
        let base = incident * 1000;
        for (offset, reading) in [
            (0, sick(IncidentSymptom::BadPods)),
            (10, well()),
            (70, well()),
        ] {
            status = step(&status, &reading, &policy, base + offset).status;
        }
    }
    let status = status.unwrap();
    assert_eq!((status.opened, status.closed), (7, 7));
    let numbers: Vec<u64> = status.recent.iter().map(|i| i.number).collect();
    assert_eq!(numbers, [7, 6, 5, 4, 3]);
}

#[test]
fn durations_read_as_people_write_them() {
    let cases = [
        (0, "0s"),
        (45, "45s"),
        (60, "1m"),
        (252, "4m12s"),
        (900, "15m"),
        (3600, "1h"),
        (3605, "1h0m5s"),
    ];
    for (seconds, text) in cases {
        assert_eq!(human(Duration::from_secs(seconds)), text);
    }
}

#[test]
fn the_counts_say_which_incident_opened_and_which_closed_for_the_metrics() {
    let policy = policy(Some("15m"));
    let opened = step(&None, &sick(IncidentSymptom::BadPods), &policy, 0);
    let (new, done) = counted(None, opened.status.as_ref());
    assert_eq!(new.map(|i| i.number), Some(1));
    assert!(done.is_none());
    let same = step(&opened.status, &sick(IncidentSymptom::BadPods), &policy, 15);
    assert_eq!(
        counted(opened.status.as_ref(), same.status.as_ref()),
        (None, None)
    );
    let recovering = step(&same.status, &well(), &policy, 30);
    let closed = step(&recovering.status, &well(), &policy, 90);
    let (new, done) = counted(recovering.status.as_ref(), closed.status.as_ref());
    assert!(new.is_none());
    let done = done.expect("closed");
    assert_eq!(done.number, 1);
    assert_eq!(time_to_recover(done), Some(Duration::from_secs(30)));
    assert_eq!(done.rto_met, Some(true));
}

/// Read-only mode holds after the database pool dropped: no symptom, not recovered. The
/// operator waits for `exitWhen`, not for a rung, so only the share of the RTO puts it at
/// risk.
#[test]
fn a_mitigation_waiting_for_its_reversal_is_at_risk_only_by_the_share_of_the_rto() {
    let policy = policy(Some("10m"));
    let opened = step(&None, &sick(IncidentSymptom::DatabasePool), &policy, 0);
    let nothing_left = Prospects {
        symptom: None,
        untried: Vec::new(),
        pending_due: None,
        next_at: at(300),
        verify_for: Duration::from_secs(180),
    };
    let read_only = Reading::default();
    let waiting = track(
        opened.status.as_ref(),
        &read_only,
        &nothing_left,
        &policy,
        at(300),
    );
    assert!(open(&waiting).at_risk.is_none());
    let late = track(
        waiting.status.as_ref(),
        &read_only,
        &nothing_left,
        &policy,
        at(450),
    );
    assert!(open(&late).at_risk.is_some());
}
