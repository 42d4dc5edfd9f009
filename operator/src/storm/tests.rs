//! The storm gate's census, hysteresis and trouble rule, and a property test over a simulated
//! fleet: however faults are shared and whatever order services are reconciled in, no more
//! than the allowed share of the fleet acts in one interval.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

use super::*;
use crate::{
    api::{ActionKind, ActionRecord, InvoiceService, RemediationMode},
    evaluate::evaluate,
    signals::{Observation, PodState, ServiceMetrics, UnknownReason},
};

const SETTINGS: StormSettings = StormSettings {
    share: 0.5,
    min_services: 5,
    hold: Duration::from_secs(30),
};

fn census(gate: &mut StormGate<usize, Instant>, trouble: &[bool], at: Instant) -> StormVerdict {
    gate.census(trouble.iter().copied().enumerate(), at, &SETTINGS)
}

#[test]
fn the_gate_closes_when_more_than_the_share_is_in_trouble_and_at_least_the_minimum() {
    let start = Instant::now();
    let mut gate = StormGate::default();
    // 6 of 10: over half and at least five.
    let verdict = census(&mut gate, &in_trouble_of(6, 10), start);
    assert_eq!(
        verdict,
        StormVerdict {
            closed: true,
            in_trouble: 6,
            services: 10
        }
    );
    // 4 of 6 is over half but below the minimum of five: a small fleet does not freeze.
    let mut small = StormGate::default();
    assert!(!census(&mut small, &[true, true, true, true, false, false], start).closed);
    // Exactly half is not over the share.
    let mut half = StormGate::default();
    assert!(!census(&mut half, &in_trouble_of(5, 10), start).closed);
}

#[test]
fn the_gate_opens_only_after_the_share_stayed_below_the_threshold_for_the_hold_period() {
    let start = Instant::now();
    let at = |seconds: u64| start + Duration::from_secs(seconds);
    let storm = in_trouble_of(8, 10);
    let calm = [false; 10];
    let mut gate = StormGate::default();
    assert!(census(&mut gate, &storm, at(0)).closed);
    // Below the share for less than the hold period: still closed.
    assert!(census(&mut gate, &calm, at(5)).closed);
    assert!(census(&mut gate, &calm, at(30)).closed);
    // The share rises again: the calm period starts over.
    assert!(census(&mut gate, &storm, at(34)).closed);
    assert!(census(&mut gate, &calm, at(40)).closed);
    assert!(census(&mut gate, &calm, at(65)).closed);
    // 30 s of calm since 40 s.
    assert!(!census(&mut gate, &calm, at(70)).closed);
}

#[test]
fn a_share_alternating_around_the_threshold_keeps_the_gate_closed() {
    let start = Instant::now();
    let storm = in_trouble_of(6, 10);
    let calm = in_trouble_of(4, 10);
    let mut gate = StormGate::default();
    for interval in 0..20u64 {
        let trouble = if interval % 2 == 0 { &storm } else { &calm };
        let verdict = census(
            &mut gate,
            trouble,
            start + Duration::from_secs(5 * interval),
        );
        assert!(verdict.closed, "opened at interval {interval}");
    }
}

#[test]
fn a_single_reconcile_can_close_the_gate_but_never_open_it() {
    let start = Instant::now();
    let mut gate: StormGate<usize, Instant> = StormGate::default();
    census(&mut gate, &[false; 10], start);
    for service in 0..5 {
        assert!(
            !gate.observe(service, true, &SETTINGS),
            "closed at {service}"
        );
    }
    // The sixth of ten closes it, before that service acts.
    assert!(gate.observe(5, true, &SETTINGS));
    for service in 0..10 {
        assert!(
            gate.observe(service, false, &SETTINGS),
            "opened by a reconcile"
        );
    }
}

#[test]
fn forgotten_services_no_longer_count() {
    let start = Instant::now();
    let mut gate = StormGate::default();
    census(&mut gate, &[true; 10], start);
    gate.retain(|service| *service >= 8);
    assert_eq!(gate.verdict().in_trouble, 2);
    assert_eq!(gate.verdict().services, 2);
}

fn evaluation_of(pods: Vec<PodState>) -> crate::evaluate::Evaluation {
    let service: InvoiceService =
        serde_yaml::from_str(include_str!("../../../examples/minimal.yaml")).unwrap();
    let observation = Observation {
        at: Timestamp::UNIX_EPOCH,
        metrics: ServiceMetrics::unknown(UnknownReason::NoData),
        pods,
        deployments: Vec::new(),
        not_ready_nodes: Default::default(),
        mode_value: None,
        mode_set_by: None,
    };
    evaluate(&service.spec, &observation, Duration::from_secs(60))
}

#[test]
fn a_service_whose_last_action_awaits_its_verdict_is_in_trouble_even_when_its_signals_are_silent() {
    // Right after a rollout the new pods have no samples: nothing is known, nothing is bad.
    let silent = evaluation_of(Vec::new());
    assert!(!in_trouble(&silent, &InvoiceServiceStatus::default()));
    let record = |outcome| ActionRecord {
        action: ActionKind::RolloutRestart,
        target: "deployment/invoice-api".to_owned(),
        reason: "service-wide trouble".to_owned(),
        evidence: Default::default(),
        at: Time(Timestamp::UNIX_EPOCH),
        mode: RemediationMode::Enforce,
        outcome,
    };
    let acted = InvoiceServiceStatus {
        last_action: Some(record(ActionOutcome::Pending)),
        ..InvoiceServiceStatus::default()
    };
    assert!(in_trouble(&silent, &acted));
    let judged = InvoiceServiceStatus {
        last_action: Some(record(ActionOutcome::Helped)),
        ..InvoiceServiceStatus::default()
    };
    assert!(!in_trouble(&silent, &judged));
}

#[test]
fn a_crash_looping_pod_puts_its_service_in_trouble() {
    let pod = PodState {
        name: "invoice-api-1".to_owned(),
        deployment: "invoice-api".to_owned(),
        zone: None,
        ready: false,
        unready_since: None,
        restart_count: 5,
        crash_loop: true,
        terminating: false,
    };
    assert!(in_trouble(
        &evaluation_of(vec![pod]),
        &InvoiceServiceStatus::default()
    ));
}

/// One interval of the simulated fleet: which services get a fault before the census, and
/// which only after it (a pod event between ticks), and the order of the reconciles.
#[derive(Clone, Debug)]
struct Interval {
    faulty: Vec<bool>,
    late: Vec<bool>,
    order: Vec<usize>,
}

fn fleet_run() -> impl Strategy<Value = (usize, Vec<Interval>)> {
    (5usize..40).prop_flat_map(|services| {
        let interval = (
            // A shared cause hits a random share of the fleet, or only independent faults.
            prop_oneof![Just(0.05), Just(0.3), Just(0.6), Just(1.0)],
            prop::collection::vec(0.0f64..1.0, services),
            prop::collection::vec(0.0f64..1.0, services),
            Just((0..services).collect::<Vec<_>>()).prop_shuffle(),
        )
            .prop_map(|(share, draws, late_draws, order)| Interval {
                faulty: draws.iter().map(|draw| *draw < share).collect(),
                late: late_draws.iter().map(|draw| *draw < 0.1).collect(),
                order,
            });
        (Just(services), prop::collection::vec(interval, 1..30))
    })
}

proptest! {
    /// A service acts when it has a fault, its last action has been judged, and the gate is
    /// open when it is reconciled; an action stays pending for two intervals. Faults come
    /// before the census or between it and the service's reconcile, in any order.
    #[test]
    fn no_more_than_the_allowed_share_of_the_fleet_acts_in_one_interval(
        (services, intervals) in fleet_run()
    ) {
        let allowed = ((SETTINGS.share * services as f64).floor() as usize)
            .max(SETTINGS.min_services - 1);
        let start = Instant::now();
        let mut gate: StormGate<usize, Instant> = StormGate::default();
        let mut pending_until = vec![0usize; services];
        for (index, interval) in intervals.iter().enumerate() {
            let now = start + Duration::from_secs(5 * index as u64);
            gate.census(
                (0..services).map(|service| {
                    (service, interval.faulty[service] || pending_until[service] > index)
                }),
                now,
                &SETTINGS,
            );
            let mut acted = 0;
            for &service in &interval.order {
                let fault = interval.faulty[service] || interval.late[service];
                let pending = pending_until[service] > index;
                let closed = gate.observe(service, fault || pending, &SETTINGS);
                if fault && !pending && !closed {
                    acted += 1;
                    pending_until[service] = index + 3;
                    gate.observe(service, true, &SETTINGS);
                }
            }
            prop_assert!(
                acted <= allowed,
                "{acted} of {services} services acted in interval {index} (allowed {allowed})"
            );
        }
    }
}

/// A fleet of `services` whose first `in_trouble` are in trouble.
fn in_trouble_of(in_trouble: usize, services: usize) -> Vec<bool> {
    (0..services).map(|index| index < in_trouble).collect()
}
