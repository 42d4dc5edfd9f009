//! Tests of the status the report builds: `SLOMet` judged over the SLO window with a burning
//! budget said separately, and a phase that does not contradict the conditions.

use std::{collections::BTreeMap, time::Duration};

use jiff::{Timestamp, ToSpan};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::{
    api::{BurnSeverity, InvoiceService, condition_types},
    engine::Attention,
    evaluate::BurnRate,
    signals::UnknownReason,
};

fn spec() -> InvoiceServiceSpec {
    let text = include_str!("../../../examples/billing-api-three-zones.yaml");
    let service: InvoiceService = serde_yaml::from_str(text).unwrap();
    service.spec
}

fn start() -> Timestamp {
    "2026-11-10T12:00:00Z".parse().unwrap()
}

/// A service serving well now and over its 30-day window: every burn rate low, availability
/// 99.99 % against 99.95 %, p99 50 ms against 200 ms.
fn healthy() -> Evaluation {
    let burn_rates = spec()
        .slos
        .availability
        .burn_rate_windows
        .iter()
        .map(|window| BurnRate {
            long: window.long.get(),
            short: window.short.get(),
            long_rate: Ok(0.2),
            short_rate: Ok(0.2),
            factor: window.factor.get(),
            severity: window.severity,
            firing: false,
        })
        .collect();
    Evaluation {
        burn_rates,
        fast_burn: false,
        slow_burn: false,
        availability: Ok(99.99),
        error_budget_remaining: Ok(0.8),
        error_ratio: Ok(0.0001),
        request_rate: Ok(20.0),
        latency_seconds: Ok(0.05),
        latency_slo: true,
        latency_breach: Some(false),
        pods: Vec::new(),
        max_unhealthy_pods: 1,
        zones: Vec::new(),
        db_pool_utilization: Ok(0.3),
        client_error_ratio: Ok(0.01),
        certificate_expires_in: Err(UnknownReason::NoData),
        untrusted: BTreeMap::new(),
        detection_window: Duration::from_secs(60),
    }
}

/// `evaluation` with the first burn-rate alert of `severity` firing.
fn burning(mut evaluation: Evaluation, severity: BurnSeverity) -> Evaluation {
    let burn = evaluation
        .burn_rates
        .iter_mut()
        .find(|burn| burn.severity == severity)
        .unwrap();
    burn.long_rate = Ok(burn.factor * 2.0);
    burn.short_rate = Ok(burn.factor * 2.0);
    burn.firing = true;
    evaluation.fast_burn = severity == BurnSeverity::Page;
    evaluation.slow_burn = severity == BurnSeverity::Ticket;
    evaluation
}

/// The demo's aftermath: the service serves well again, but its 30-day window carries the
/// outage — availability 96.36 %, the error budget overspent 72 times.
fn recovered_after_an_outage() -> Evaluation {
    Evaluation {
        availability: Ok(96.36),
        error_budget_remaining: Ok(-71.81),
        ..healthy()
    }
}

fn report_with(
    evaluation: &Evaluation,
    decision: &Decision,
    previous: &InvoiceServiceStatus,
    now: Timestamp,
) -> InvoiceServiceStatus {
    let spec = spec();
    let (status, _) = report(ReportInput {
        spec: &spec,
        generation: Some(1),
        previous,
        recorded: previous.clone(),
        evaluation,
        decision,
        applied: true,
        refusal: None,
        paused: false,
        storm: false,
        now,
    });
    status
}

fn status_of(evaluation: &Evaluation) -> InvoiceServiceStatus {
    report_with(
        evaluation,
        &Decision::default(),
        &InvoiceServiceStatus::default(),
        start(),
    )
}

/// (status, reason, message) of condition `type_`.
fn condition_of(status: &InvoiceServiceStatus, type_: &str) -> (String, String, String) {
    let found = condition(status, type_).unwrap_or_else(|| panic!("no {type_} in {status:?}"));
    (
        found.status.clone(),
        found.reason.clone(),
        found.message.clone(),
    )
}

#[test]
fn the_budget_is_shown_in_percent_beside_the_availability() {
    let slo = status_of(&recovered_after_an_outage()).slo.expect("slo");
    assert_eq!(slo.availability.as_deref(), Some("96.360"));
    assert_eq!(
        slo.error_budget_remaining_percent.as_deref(),
        Some("-7181.0")
    );
    // The ratio stays, for whoever reads it.
    assert_eq!(slo.error_budget_remaining.as_deref(), Some("-71.81"));
}

#[test]
fn slo_met_follows_the_slo_window_not_the_current_burn() {
    // Recovered now, missed over the window: not met, with the numbers.
    let (status, reason, message) = condition_of(
        &status_of(&recovered_after_an_outage()),
        condition_types::SLO_MET,
    );
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", slo_met_reasons::OBJECTIVE_MISSED)
    );
    assert!(
        message.contains("availability 96.36% over 30d, objective 99.95%"),
        "{message}"
    );
    assert!(
        message.contains("error budget remaining -71.81"),
        "{message}"
    );

    // A paging burn that has just started: the window still meets the objective.
    let (status, reason, message) = condition_of(
        &status_of(&burning(healthy(), BurnSeverity::Page)),
        condition_types::SLO_MET,
    );
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", slo_met_reasons::BUDGET_BURNING)
    );
    assert!(
        message.contains("the Page alert over 1h and 5m fires"),
        "{message}"
    );
}

#[test]
fn a_ticket_burn_is_said_while_the_objective_is_met() {
    let (status, reason, message) = condition_of(
        &status_of(&burning(healthy(), BurnSeverity::Ticket)),
        condition_types::SLO_MET,
    );
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", slo_met_reasons::BUDGET_BURNING)
    );
    assert!(
        message.contains("the Ticket alert over 1d and 2h fires"),
        "{message}"
    );
}

#[test]
fn a_missed_objective_that_still_burns_says_both() {
    let (status, reason, message) = condition_of(
        &status_of(&burning(recovered_after_an_outage(), BurnSeverity::Page)),
        condition_types::SLO_MET,
    );
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", slo_met_reasons::OBJECTIVE_MISSED)
    );
    assert!(message.contains("objective 99.95%"), "{message}");
    assert!(
        message.contains("the error budget is burning: the Page alert over 1h and 5m"),
        "{message}"
    );
}

#[test]
fn slo_met_is_within_objectives_when_the_window_meets_them_and_nothing_burns() {
    let (status, reason, _) = condition_of(&status_of(&healthy()), condition_types::SLO_MET);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", slo_met_reasons::WITHIN_OBJECTIVES)
    );
}

#[test]
fn latency_above_its_threshold_misses_the_objective_on_its_current_value() {
    let evaluation = Evaluation {
        latency_seconds: Ok(0.45),
        latency_breach: Some(true),
        ..healthy()
    };
    let (status, reason, message) = condition_of(&status_of(&evaluation), condition_types::SLO_MET);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", slo_met_reasons::OBJECTIVE_MISSED)
    );
    assert!(
        message.contains("p99 latency 0.45s now, threshold 200ms"),
        "{message}"
    );
}

#[test]
fn slo_met_is_unknown_while_the_window_is_unknown_even_if_the_burn_rates_are_known() {
    let evaluation = Evaluation {
        availability: Err(UnknownReason::QueryFailed),
        error_budget_remaining: Err(UnknownReason::QueryFailed),
        ..healthy()
    };
    let (status, reason, message) = condition_of(&status_of(&evaluation), condition_types::SLO_MET);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("Unknown", slo_met_reasons::INSUFFICIENT_DATA)
    );
    assert!(message.contains("availability: QueryFailed"), "{message}");
}

#[test]
fn slo_met_keeps_its_last_transition_time_while_its_status_holds() {
    let met = status_of(&healthy());
    let later = start() + 5.minutes();
    // Still True, now because the budget burns: the transition time stays.
    let burning_now = report_with(
        &burning(healthy(), BurnSeverity::Page),
        &Decision::default(),
        &met,
        later,
    );
    let transition = |status: &InvoiceServiceStatus| {
        condition(status, condition_types::SLO_MET)
            .unwrap()
            .last_transition_time
            .clone()
    };
    assert_eq!(transition(&burning_now), Time(start()));
    // Turned False: it moves.
    let even_later = later + 5.minutes();
    let missed = report_with(
        &recovered_after_an_outage(),
        &Decision::default(),
        &burning_now,
        even_later,
    );
    assert_eq!(transition(&missed), Time(even_later));
}

#[test]
fn phase_is_not_healthy_while_a_human_is_needed() {
    let decision = Decision {
        attention: vec![Attention::ClientErrorSpike { ratio: 0.5 }],
        ..Decision::default()
    };
    let status = report_with(
        &healthy(),
        &decision,
        &InvoiceServiceStatus::default(),
        start(),
    );
    assert_eq!(
        condition_of(&status, condition_types::NEEDS_ATTENTION).0,
        "True"
    );
    assert_eq!(status.phase, Some(Phase::Degraded));

    // The attention is known even when the SLO signals are not.
    let unknown = Evaluation {
        burn_rates: Vec::new(),
        latency_breach: None,
        latency_seconds: Err(UnknownReason::PrometheusUnreachable),
        ..healthy()
    };
    let status = report_with(
        &unknown,
        &decision,
        &InvoiceServiceStatus::default(),
        start(),
    );
    assert_eq!(status.phase, Some(Phase::Degraded));
}

#[test]
fn the_phase_follows_the_current_signals_while_slo_met_follows_the_window() {
    // Recovered now: Healthy, while SLOMet says the window is missed.
    let status = status_of(&recovered_after_an_outage());
    assert_eq!(status.phase, Some(Phase::Healthy));
    assert_eq!(condition_of(&status, condition_types::SLO_MET).0, "False");
    // Burning at a paging rate now: Degraded, while the window is still met.
    let status = status_of(&burning(healthy(), BurnSeverity::Page));
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(condition_of(&status, condition_types::SLO_MET).0, "True");
}

/// Status and Events of one reconcile from `previous`.
fn report_full(
    evaluation: &Evaluation,
    decision: &Decision,
    previous: &InvoiceServiceStatus,
    now: Timestamp,
) -> (InvoiceServiceStatus, Vec<EventSpec>) {
    let spec = spec();
    report(ReportInput {
        spec: &spec,
        generation: Some(1),
        previous,
        recorded: previous.clone(),
        evaluation,
        decision,
        applied: true,
        refusal: None,
        paused: false,
        storm: false,
        now,
    })
}

fn reasons_of(events: &[EventSpec]) -> Vec<&'static str> {
    events.iter().map(|event| event.reason).collect()
}

#[test]
fn an_incident_no_rung_can_fix_is_at_risk_of_its_rto_at_once_and_says_so_once() {
    // A 4xx spike: no rung addresses it, and the example's RTO is 15m.
    let decision = Decision {
        attention: vec![Attention::ClientErrorSpike { ratio: 0.5 }],
        ..Decision::default()
    };
    let (status, events) = report_full(
        &healthy(),
        &decision,
        &InvoiceServiceStatus::default(),
        start(),
    );
    let (value, reason, message) = condition_of(&status, condition_types::NEEDS_ATTENTION);
    assert_eq!(
        (value.as_str(), reason.as_str()),
        ("True", reasons::RECOVERY_OBJECTIVE_AT_RISK)
    );
    assert!(
        message.starts_with("incident 1 may miss its RTO 15m (it passes at 2026-11-10T12:15:00Z)"),
        "{message}"
    );
    assert!(message.ends_with("; also ClientErrorSpike"), "{message}");
    assert_eq!(
        reasons_of(&events),
        [
            reasons::CLIENT_ERROR_SPIKE,
            reasons::RECOVERY_OBJECTIVE_AT_RISK
        ]
    );
    assert!(events.iter().all(|event| event.warning));
    assert_eq!(status.phase, Some(Phase::Degraded));
    // The next interval, the same: no Event again, and nothing to write.
    let (again, events) = report_full(&healthy(), &decision, &status, start() + 15.seconds());
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(again, status);
}

#[test]
fn an_incident_closes_with_one_event_that_sums_it_up() {
    let decision = Decision {
        symptom: Some(crate::api::IncidentSymptom::ServiceErrors),
        ..Decision::default()
    };
    let burning = burning(healthy(), BurnSeverity::Page);
    let (open, events) = report_full(
        &burning,
        &decision,
        &InvoiceServiceStatus::default(),
        start(),
    );
    assert!(events.is_empty(), "opening has no Event: {events:?}");
    let incidents = open.incidents.as_ref().unwrap();
    assert_eq!(incidents.open.as_ref().unwrap().symptoms.len(), 1);
    let (recovering, _) = report_full(
        &healthy(),
        &Decision::default(),
        &open,
        start() + 1.minute(),
    );
    let (settling, events) = report_full(
        &healthy(),
        &Decision::default(),
        &recovering,
        start() + 5.minutes(),
    );
    assert!(events.is_empty(), "{events:?}");
    assert!(settling.incidents.as_ref().unwrap().open.is_some());
    let (closed, events) = report_full(
        &healthy(),
        &Decision::default(),
        &settling,
        start() + 6.minutes(),
    );
    assert_eq!(reasons_of(&events), [reasons::INCIDENT_CLOSED]);
    assert!(!events[0].warning);
    assert_eq!(
        events[0].note,
        "incident 1 (ServiceErrors) recovered in 1m without action; detected in 0s; RTO 15m met"
    );
    let incidents = closed.incidents.unwrap();
    assert!(incidents.open.is_none());
    assert_eq!((incidents.closed, incidents.rto_met), (1, 1));
}
