//! Table-driven tests of every gate, action and reversal, and property tests of the
//! engine's invariants over random signal sequences.

use std::{collections::BTreeMap, time::Duration};

use jiff::{Timestamp, ToSpan};
use proptest::prelude::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{gate::budget_used, *};
use crate::{
    api::{
        ActionKind, ActionOutcome, ActionRecord, Evidence, FailoverState, HISTORY_LIMIT,
        InvoiceService, InvoiceServiceSpec, InvoiceServiceStatus, ReadOnlyState, RemediationMode,
        Rung, ScaledOutState,
    },
    evaluate::evaluate,
    signals::{
        DeploymentState, Measured, Observation, PodMetrics, PodState, RequestRates, ServiceMetrics,
        UnknownReason,
    },
};

const DETECTION: Duration = Duration::from_secs(60);

fn spec() -> InvoiceServiceSpec {
    let text = include_str!("../../../examples/billing-api-three-zones.yaml");
    let service: InvoiceService = serde_yaml::from_str(text).unwrap();
    let mut spec = service.spec;
    // Tests pick their own blackout windows.
    spec.remediation.blackout_windows.clear();
    spec
}

fn start() -> Timestamp {
    "2026-11-10T12:00:00Z".parse().unwrap()
}

/// A simulated three-zone fleet: 3 pods per zone, metrics per pod.
#[derive(Clone, Debug)]
struct World {
    deployments: Vec<DeploymentState>,
    pods: Vec<PodState>,
    pod_rates: BTreeMap<String, Measured<RequestRates>>,
    latency: Measured<f64>,
    db_pool: Measured<f64>,
    /// Service 5xx ratio applied to every window (burn rates).
    window_error_ratio: Measured<f64>,
    certificate_expires_at: Measured<f64>,
    client_error_ratio: f64,
    not_ready_nodes: BTreeMap<String, u32>,
    /// Requests per second to the service (every window).
    request_rate: f64,
}

impl World {
    fn healthy() -> Self {
        let mut deployments = Vec::new();
        let mut pods = Vec::new();
        let mut pod_rates = BTreeMap::new();
        for zone in ["az1", "az2", "az3"] {
            let name = format!("billing-api-{zone}");
            deployments.push(DeploymentState {
                name: name.clone(),
                zone: Some(zone.into()),
                replicas: 3,
                ready_replicas: 3,
                exists: true,
                replicas_manager: None,
                replicas_set_at: None,
                update: None,
                excluded_zones: Default::default(),
                affinity_set_by: None,
                autoscaler: None,
            });
            for index in 0..3 {
                let pod = format!("{name}-{index}");
                pods.push(PodState {
                    name: pod.clone(),
                    deployment: name.clone(),
                    zone: Some(zone.into()),
                    ready: true,
                    unready_since: None,
                    restart_count: 0,
                    crash_loop: false,
                    terminating: false,
                });
                pod_rates.insert(pod, Ok(rates(10.0, 0.0)));
            }
        }
        Self {
            deployments,
            pods,
            pod_rates,
            latency: Ok(0.05),
            db_pool: Ok(0.3),
            window_error_ratio: Ok(0.0001),
            certificate_expires_at: Err(UnknownReason::NoData),
            client_error_ratio: 0.0,
            not_ready_nodes: BTreeMap::new(),
            request_rate: 90.0,
        }
    }

    fn observe(&self, at: Timestamp) -> Observation {
        let spec = spec();
        let mut windows = BTreeMap::new();
        let mut all_windows = vec![DETECTION, spec.slos.availability.window.get()];
        for window in &spec.slos.availability.burn_rate_windows {
            all_windows.push(window.long.get());
            all_windows.push(window.short.get());
        }
        for window in all_windows {
            let value = self.window_error_ratio.map(|ratio| RequestRates {
                total: self.request_rate,
                server_errors: self.request_rate * ratio,
                client_errors: self.request_rate * self.client_error_ratio,
            });
            windows.insert(window, value);
        }
        let pods = self
            .pod_rates
            .iter()
            .map(|(name, rates)| {
                let zone = self
                    .pods
                    .iter()
                    .find(|pod| &pod.name == name)
                    .and_then(|pod| pod.zone.clone());
                (
                    name.clone(),
                    PodMetrics {
                        zone,
                        rates: *rates,
                        latency_seconds: self.latency,
                        db_pool_utilization: self.db_pool,
                    },
                )
            })
            .collect();
        Observation {
            at,
            metrics: ServiceMetrics {
                windows,
                latency_seconds: self.latency,
                db_pool_utilization: self.db_pool,
                certificate_expires_at: self.certificate_expires_at,
                pods,
            },
            pods: self.pods.clone(),
            deployments: self.deployments.clone(),
            not_ready_nodes: self.not_ready_nodes.clone(),
            mode_value: None,
            mode_set_by: None,
        }
    }

    /// The world with every zone Deployment at `replicas`.
    fn scaled_to(replicas: i32) -> Self {
        let mut world = Self::healthy();
        for deployment in &mut world.deployments {
            deployment.replicas = replicas;
        }
        world
    }

    /// Sets the replicas of each Deployment named in `wanted`.
    fn set_replicas(&mut self, wanted: &BTreeMap<String, i32>) {
        for deployment in &mut self.deployments {
            if let Some(count) = wanted.get(&deployment.name) {
                deployment.replicas = *count;
            }
        }
    }

    /// Every pod measured at `pod_rates`.
    fn every_pod_at(&mut self, pod_rates: RequestRates) {
        for rates in self.pod_rates.values_mut() {
            *rates = Ok(pod_rates);
        }
    }

    fn pod_mut(&mut self, name: &str) -> &mut PodState {
        self.pods.iter_mut().find(|pod| pod.name == name).unwrap()
    }

    fn zone_errors(&mut self, zone: &str, ratio: f64) {
        for pod in self
            .pods
            .iter()
            .filter(|pod| pod.zone.as_deref() == Some(zone))
        {
            self.pod_rates
                .insert(pod.name.clone(), Ok(rates(10.0, 10.0 * ratio)));
        }
    }

    fn prometheus_down(&mut self) {
        let down = UnknownReason::PrometheusUnreachable;
        for rates in self.pod_rates.values_mut() {
            *rates = Err(down);
        }
        self.latency = Err(down);
        self.db_pool = Err(down);
        self.window_error_ratio = Err(down);
    }
}

fn rates(total: f64, server_errors: f64) -> RequestRates {
    RequestRates {
        total,
        server_errors,
        client_errors: 0.0,
    }
}

struct Run {
    spec: InvoiceServiceSpec,
    status: InvoiceServiceStatus,
    paused_by_annotation: bool,
    storm: bool,
    manual_fail_back: bool,
}

impl Run {
    fn new() -> Self {
        Self {
            spec: spec(),
            status: InvoiceServiceStatus::default(),
            paused_by_annotation: false,
            storm: false,
            manual_fail_back: false,
        }
    }

    /// A run whose status says zone `zone` was failed over at the start, from
    /// `replicas_before`.
    fn failed_over(zone: &str, replicas_before: BTreeMap<String, i32>) -> Self {
        let mut run = Self::new();
        run.status.failover = Some(FailoverState {
            zone: zone.into(),
            since: Time(start()),
            replicas_before,
            canary: None,
            waiting: None,
        });
        run
    }

    /// A run whose status says the service was scaled out at the start, from `baseline`.
    fn scaled_out_from(baseline: BTreeMap<String, i32>) -> Self {
        let mut run = Self::new();
        run.status.scaled_out = Some(ScaledOutState {
            baseline,
            since: Time(start()),
            written: BTreeMap::new(),
            written_at: None,
            request_rate: None,
        });
        run
    }

    /// A run whose status says read-only mode was entered at the start.
    fn in_read_only() -> Self {
        let mut run = Self::new();
        run.status.read_only = Some(ReadOnlyState {
            since: Time(start()),
        });
        run
    }

    fn decide(&self, world: &World, now: Timestamp) -> Decision {
        let observation = world.observe(now);
        let evaluation = evaluate(&self.spec, &observation, DETECTION);
        decide(&DecisionInput {
            spec: &self.spec,
            evaluation: &evaluation,
            status: &self.status,
            deployments: &observation.deployments,
            now,
            paused_by_annotation: self.paused_by_annotation,
            storm: self.storm,
            manual_fail_back: self.manual_fail_back,
        })
    }

    /// Decides on the crash-loop world at the start.
    fn decide_crash_loop(&self) -> Decision {
        self.decide(&crash_loop_world(), start())
    }

    /// Decides and records the decision as applied, like the controller does.
    fn step(&mut self, world: &World, now: Timestamp) -> Decision {
        let decision = self.decide(world, now);
        self.status = record(&self.status, &decision, &world.deployments, now, true);
        decision
    }
}

/// The three zone Deployments' replicas, az1, az2 and az3.
fn zone_replicas(az1: i32, az2: i32, az3: i32) -> BTreeMap<String, i32> {
    BTreeMap::from([
        ("billing-api-az1".to_owned(), az1),
        ("billing-api-az2".to_owned(), az2),
        ("billing-api-az3".to_owned(), az3),
    ])
}

fn planned(decision: &Decision) -> PlannedAction {
    decision.action().cloned().expect("an action")
}

/// Asserts that `decision` takes an action of `expected_kind` doing `expected_step`; returns
/// that action.
fn assert_planned(
    decision: &Decision,
    expected_kind: ActionKind,
    expected_step: Step,
) -> PlannedAction {
    let action = planned(decision);
    assert_eq!(action.kind(), expected_kind);
    assert_eq!(action.step, expected_step);
    action
}

fn restart_pod(name: &str) -> Step {
    Step::RestartPod {
        pods: vec![name.into()],
    }
}

/// Steps `run` through `world` at the start, asserting that nothing is done before the
/// condition has held for its `for` duration (`held`); then steps it `after` seconds later.
fn step_once_held(run: &mut Run, world: &World, held: &str, after: i64) -> Decision {
    assert_eq!(
        kind(&run.step(world, start())),
        None,
        "not yet held for {held}"
    );
    run.step(world, start() + after.seconds())
}

/// The kind of action a new run decides on `world` at the start.
fn first_kind(world: &World) -> Option<ActionKind> {
    kind(&Run::new().decide(world, start()))
}

fn kind(decision: &Decision) -> Option<ActionKind> {
    decision.action().map(|action| action.kind())
}

fn gate_of(decision: &Decision) -> Option<Gate> {
    decision.blocked().map(|blocked| blocked.gate)
}

#[test]
fn healthy_service_takes_no_action_and_blocks_nothing() {
    let decision = Run::new().decide(&World::healthy(), start());
    assert_eq!(decision.action(), None);
    assert_eq!(decision.blocked(), None);
    assert!(decision.attention.is_empty());
}

#[test]
fn crash_looping_pod_is_restarted_alone() {
    let mut world = World::healthy();
    let pod = world.pod_mut("billing-api-az2-1");
    pod.crash_loop = true;
    pod.ready = false;
    pod.restart_count = 7;
    let decision = Run::new().decide(&world, start());
    let restart = restart_pod("billing-api-az2-1");
    let action = assert_planned(&decision, ActionKind::RestartPod, restart);
    assert!(
        action.reason.contains("CrashLoopBackOff after 7 restarts"),
        "{}",
        action.reason
    );
}

#[test]
fn unready_pod_is_restarted_only_after_unready_for() {
    let mut world = World::healthy();
    let pod = world.pod_mut("billing-api-az1-0");
    pod.ready = false;
    pod.unready_since = Some(start());
    let run = Run::new();
    assert_eq!(kind(&run.decide(&world, start() + 60.seconds())), None);
    let unready_for_long_enough = run.decide(&world, start() + 121.seconds());
    assert_eq!(kind(&unready_for_long_enough), Some(ActionKind::RestartPod));
}

#[test]
fn pod_with_high_error_ratio_is_restarted_but_low_traffic_is_not_judged() {
    let mut world = World::healthy();
    world
        .pod_rates
        .insert("billing-api-az3-2".into(), Ok(rates(10.0, 5.0)));
    let decision = Run::new().decide(&world, start());
    assert_eq!(
        decision.action().map(|action| action.step.clone()),
        Some(restart_pod("billing-api-az3-2"))
    );
    // Two errors out of 0.2 req/s is below minRequestRate: not evidence.
    world
        .pod_rates
        .insert("billing-api-az3-2".into(), Ok(rates(0.2, 0.2)));
    assert_eq!(first_kind(&world), None);
}

#[test]
fn a_fast_burn_caused_by_one_pod_restarts_that_pod_not_the_service() {
    let mut world = World::healthy();
    world.window_error_ratio = Ok(0.01);
    // Its own ratio (0.1) is still under errorRatioAbove (0.2), but it causes all the 5xx.
    world
        .pod_rates
        .insert("billing-api-az2-1".into(), Ok(rates(10.0, 1.0)));
    let decision = Run::new().decide(&world, start());
    let restart = restart_pod("billing-api-az2-1");
    assert_planned(&decision, ActionKind::RestartPod, restart);
}

#[test]
fn a_fast_burn_spread_over_many_pods_rolls_the_service() {
    let mut world = World::healthy();
    world.window_error_ratio = Ok(0.01);
    world.every_pod_at(rates(10.0, 0.1));
    assert_eq!(first_kind(&world), Some(ActionKind::RolloutRestart));
}

#[test]
fn more_unhealthy_pods_than_max_unhealthy_pods_escalates_to_rollout_restart() {
    let mut world = World::healthy();
    // 40% of 9 pods is 3; four crash loops is service-wide.
    for name in [
        "billing-api-az1-0",
        "billing-api-az1-1",
        "billing-api-az2-0",
        "billing-api-az3-0",
    ] {
        world.pod_mut(name).crash_loop = true;
    }
    assert_eq!(first_kind(&world), Some(ActionKind::RolloutRestart));
}

#[test]
fn fast_burn_triggers_rollout_restart_and_slow_burn_only_reports() {
    let mut world = World::healthy();
    // 99.95% objective: budget ratio 0.0005; 14.4x burn needs > 0.0072 error ratio.
    world.window_error_ratio = Ok(0.01);
    let decision = Run::new().decide(&world, start());
    assert_eq!(kind(&decision), Some(ActionKind::RolloutRestart));
    assert_eq!(
        decision.action().unwrap().step,
        Step::RolloutRestart {
            deployments: vec![
                "billing-api-az1".into(),
                "billing-api-az2".into(),
                "billing-api-az3".into()
            ]
        }
    );
    // 2x burn: ticket only.
    world.window_error_ratio = Ok(0.001);
    let run = Run::new();
    let observation = world.observe(start());
    let evaluation = evaluate(&run.spec, &observation, DETECTION);
    assert!(evaluation.slow_burn && !evaluation.fast_burn);
    assert_eq!(kind(&run.decide(&world, start())), None);
}

#[test]
fn latency_breach_scales_out_step_by_step_within_max_replicas() {
    let mut world = World::healthy();
    world.latency = Ok(0.35);
    let mut run = Run::new();
    let mut now = start();
    let mut steps = Vec::new();
    for _ in 0..10 {
        let decision = run.step(&world, now);
        if let Some(PlannedAction {
            step: Step::ScaleOut { replicas } | Step::ScaleIn { replicas },
            ..
        }) = decision.action()
        {
            for (name, replicas) in replicas {
                world
                    .deployments
                    .iter_mut()
                    .find(|deployment| &deployment.name == name)
                    .unwrap()
                    .replicas = *replicas;
            }
            steps.push(replicas["billing-api-az1"]);
            // Each step helps a little, never enough.
            world.latency = world.latency.map(|latency| latency - 0.01);
        }
        now += 4.minutes();
    }
    assert_eq!(steps, vec![5, 7, 9, 11, 12], "step 2 up to maxReplicas 12");
    let decision = run.decide(&world, now);
    assert_eq!(gate_of(&decision), Some(Gate::LadderExhausted));
    assert!(decision.attention.contains(&Attention::LadderExhausted));
}

#[test]
fn database_pool_exhaustion_enters_read_only_after_its_for_duration() {
    let mut world = World::healthy();
    // 215 connections wanted, 200 available: the pool is pinned at 100%.
    world.db_pool = Ok(1.0);
    let mut run = Run::new();
    let decision = step_once_held(&mut run, &world, "1m", 61);
    assert_eq!(kind(&decision), Some(ActionKind::EnterReadOnly));
    assert!(run.status.read_only.is_some());
}

#[test]
fn read_only_is_left_after_exit_condition_holds() {
    let mut world = World::healthy();
    let mut run = Run::in_read_only();
    world.db_pool = Ok(0.5);
    assert_eq!(kind(&run.step(&world, start() + 10.minutes())), None);
    assert_eq!(kind(&run.step(&world, start() + 14.minutes())), None);
    let decision = run.step(&world, start() + 15.minutes() + 1.seconds());
    assert_eq!(kind(&decision), Some(ActionKind::ExitReadOnly));
    assert_eq!(run.status.read_only, None);
}

/// Someone switched read-only mode off during the incident (adopted by `foreign::adopt`):
/// the operator does not switch it on again, however full the pool, until the service is
/// healthy; then the lever is the operator's again.
#[test]
fn read_only_switched_off_by_a_person_is_not_entered_again_during_the_incident() {
    let mut run = Run::new();
    run.status.held_since.insert(
        crate::foreign::hands_off::READ_ONLY.to_owned(),
        Time(start()),
    );
    let mut world = World::healthy();
    world.db_pool = Ok(0.99);
    for minutes in [0, 2, 5] {
        let decision = run.step(&world, start() + minutes.minutes());
        assert_ne!(
            kind(&decision),
            Some(ActionKind::EnterReadOnly),
            "at {minutes} min"
        );
    }
    run.step(&World::healthy(), start() + 10.minutes());
    assert!(
        !run.status
            .held_since
            .contains_key(crate::foreign::hands_off::READ_ONLY),
        "healthy again: the hands-off mark is cleared"
    );
}

/// Argo CD set read-only mode back within an interval (a tug of war, `foreign::adopt`): the
/// operator leaves the switch alone for `CONTESTED_FOR`, healthy or not, then tries once more.
#[test]
fn a_contested_read_only_switch_is_left_alone_for_an_hour_whatever_the_health() {
    use crate::foreign::{CONTESTED_FOR, contested};
    let mut run = Run::new();
    let key = contested::key(contested::READ_ONLY, "argocd-controller");
    run.status.held_since.insert(key.clone(), Time(start()));
    let mut pool_full = World::healthy();
    pool_full.db_pool = Ok(0.99);
    for minutes in [0, 2, 5] {
        let decision = run.step(&pool_full, start() + minutes.minutes());
        assert_ne!(
            kind(&decision),
            Some(ActionKind::EnterReadOnly),
            "at {minutes} min"
        );
    }
    // Healthy for a while: unlike a person's hand edit, the hold stays.
    run.step(&World::healthy(), start() + 20.minutes());
    assert!(run.status.held_since.contains_key(&key));
    // After the hold the switch is tried again.
    let hold = i64::try_from(CONTESTED_FOR.as_secs()).unwrap();
    let later = start() + hold.seconds() + 1.seconds();
    assert_eq!(
        kind(&run.step(&pool_full, later)),
        None,
        "enterWhen.for starts"
    );
    assert!(!run.status.held_since.contains_key(&key));
    let decision = run.step(&pool_full, later + 61.seconds());
    assert_eq!(kind(&decision), Some(ActionKind::EnterReadOnly));
}

/// A Deployment whose replicas another controller keeps setting back is not scaled out; the
/// others of the service are.
#[test]
fn a_contested_deployment_is_left_out_of_a_scale_out() {
    use crate::foreign::contested;
    let mut world = World::healthy();
    world.latency = Ok(0.35);
    let mut run = Run::new();
    run.status.held_since.insert(
        contested::key(
            &contested::replicas("billing-api-az2"),
            "kustomize-controller",
        ),
        Time(start()),
    );
    let decision = run.decide(&world, start());
    let Some(PlannedAction {
        step: Step::ScaleOut { replicas },
        ..
    }) = decision.action()
    else {
        panic!("no scale-out: {decision:?}");
    };
    assert!(!replicas.contains_key("billing-api-az2"), "{replicas:?}");
    assert!(replicas.contains_key("billing-api-az1"), "{replicas:?}");
}

#[test]
fn read_only_is_kept_while_the_pool_stays_between_thresholds() {
    let mut world = World::healthy();
    let mut run = Run::in_read_only();
    world.db_pool = Ok(0.8); // below enter (0.95), above exit (0.70): hysteresis
    for minute in 0..20 {
        assert_eq!(kind(&run.step(&world, start() + minute.minutes())), None);
    }
}

#[test]
fn failing_zone_is_failed_over_and_its_replicas_moved() {
    let mut world = World::healthy();
    world.zone_errors("az2", 0.6);
    let mut run = Run::new();
    let decision = step_once_held(&mut run, &world, "2m", 121);
    let failover = Step::ZoneFailover {
        zone: "az2".into(),
        replicas: zone_replicas(5, 0, 5),
        canary: false,
    };
    assert_planned(&decision, ActionKind::ZoneFailover, failover);
    let failover = run.status.failover.as_ref().unwrap();
    assert_eq!(failover.replicas_before["billing-api-az2"], 3);
}

#[test]
fn a_zone_whose_errors_are_still_climbing_is_not_restarted_pod_by_pod() {
    let mut world = World::healthy();
    // Every az2 pod is above errorRatioAbove (0.2) but the zone is under its 0.3 threshold.
    world.zone_errors("az2", 0.25);
    let decision = Run::new().decide(&world, start());
    assert_eq!(decision.action(), None, "{decision:?}");
}

#[test]
fn a_zone_outage_burning_the_budget_waits_for_failover_instead_of_rolling_the_service() {
    let mut world = World::healthy();
    world.zone_errors("az2", 0.9);
    world.window_error_ratio = Ok(0.3);
    let mut run = Run::new();
    let decision = run.step(&world, start());
    assert_eq!(decision.action(), None, "{decision:?}");
    assert!(decision.waiting().is_some());
    assert_eq!(
        kind(&run.step(&world, start() + 121.seconds())),
        Some(ActionKind::ZoneFailover)
    );
}

#[test]
fn every_zone_failing_at_once_is_the_services_problem_not_a_zone_outage() {
    let mut world = World::healthy();
    for zone in ["az1", "az2", "az3"] {
        world.zone_errors(zone, 0.9);
    }
    world.window_error_ratio = Ok(0.9);
    assert_eq!(first_kind(&world), Some(ActionKind::RolloutRestart));
}

#[test]
fn a_saturated_database_pool_is_not_answered_by_scaling_out_while_it_settles() {
    let mut world = World::healthy();
    world.db_pool = Ok(1.0);
    world.latency = Ok(0.5);
    let mut run = Run::new();
    let decision = run.step(&world, start());
    assert_eq!(decision.action(), None);
    assert!(decision.waiting().is_some());
    // Once the pool has been full for enterWhen.for, read-only mode is the answer.
    let decision = run.step(&world, start() + 61.seconds());
    assert_eq!(kind(&decision), Some(ActionKind::EnterReadOnly));
}

#[test]
fn the_last_healthy_zone_is_never_failed_over() {
    let mut world = World::healthy();
    world.zone_errors("az2", 0.6);
    world.zone_errors("az3", 0.6);
    let mut run = Run::new();
    // az1 and az3 unknown/unhealthy: only az1 would be left, and minHealthyZones is 2.
    run.spec.remediation.zone_failover.min_healthy_zones = 2;
    run.step(&world, start());
    let decision = run.decide(&world, start() + 3.minutes());
    assert_eq!(gate_of(&decision), Some(Gate::LastHealthyZone));
    assert_eq!(decision.action(), None);
}

#[test]
fn failed_over_zone_fails_back_automatically_after_it_is_healthy_long_enough() {
    let world = World::healthy();
    let mut run = Run::failed_over("az2", zone_replicas(3, 3, 3));
    assert_eq!(kind(&run.step(&world, start() + 1.minutes())), None);
    let canary_at = start() + 11.minutes() + 1.seconds();
    let ready_at = pass_canary(&mut run, &world, canary_at);
    let decision = run.step(&world, ready_at + 2.minutes() + 1.seconds());
    let fail_back = Step::ZoneFailBack {
        zone: "az2".into(),
        replicas: zone_replicas(3, 3, 3),
        canary: false,
    };
    assert_planned(&decision, ActionKind::ZoneFailBack, fail_back);
    assert_eq!(run.status.failover, None);
}

/// Starts the fail-back canary of az2 due at `now` (one replica), and lets it be Ready (the
/// world's az2 Deployment has ready replicas and no errors); returns when its pod was seen
/// Ready. The whole fail-back is due `canaryFor` (2m) later.
fn pass_canary(run: &mut Run, world: &World, now: Timestamp) -> Timestamp {
    let decision = run.step(world, now);
    assert_eq!(
        decision.action().map(|action| action.step.clone()),
        Some(Step::ZoneFailBack {
            zone: "az2".into(),
            replicas: BTreeMap::from([("billing-api-az2".to_owned(), 1)]),
            canary: true,
        }),
        "{decision:?}"
    );
    let ready_at = now + 15.seconds();
    assert_eq!(
        kind(&run.step(world, ready_at)),
        None,
        "the canary is judged later"
    );
    ready_at
}

#[test]
fn manual_fail_back_waits_for_the_annotation() {
    let world = World::healthy();
    let mut run = Run::failed_over("az2", BTreeMap::new());
    run.spec.remediation.zone_failover.fail_back.mode = crate::api::FailBackMode::Manual;
    assert_eq!(kind(&run.decide(&world, start() + 60.minutes())), None);
    run.manual_fail_back = true;
    assert_eq!(
        kind(&run.decide(&world, start() + 60.minutes())),
        Some(ActionKind::ZoneFailBack)
    );
}

#[test]
fn scale_out_is_reversed_after_scale_in_after_of_health() {
    let world = World::scaled_to(7);
    let mut run = Run::scaled_out_from(zone_replicas(3, 3, 4));
    assert_eq!(kind(&run.step(&world, start())), None);
    assert_eq!(kind(&run.step(&world, start() + 9.minutes())), None);
    let decision = run.step(&world, start() + 10.minutes());
    let scale_in = Step::ScaleIn {
        replicas: zone_replicas(3, 3, 4),
    };
    assert_planned(&decision, ActionKind::ScaleIn, scale_in);
    assert_eq!(run.status.scaled_out, None);
}

/// A surge scaled the service out on latency at 90 req/s. The scale-out answered it, so the
/// service is healthy — but the surge still runs: no ScaleIn however long it stays healthy,
/// until the load is clearly below the rate that caused the scale-out.
#[test]
fn scale_in_waits_for_the_load_that_caused_the_scale_out_to_go() {
    let mut run = Run::new();
    let mut surge = World::healthy();
    surge.latency = Ok(0.5);
    let decision = run.step(&surge, start());
    assert_eq!(kind(&decision), Some(ActionKind::ScaleOut));
    assert_eq!(
        run.status
            .scaled_out
            .as_ref()
            .and_then(|scaled| scaled.request_rate.as_deref()),
        Some("90.000")
    );
    let mut answered = World::scaled_to(5);
    // The surge grows after the scale-out: its peak is what the load is compared with.
    answered.request_rate = 150.0;
    run.step(&answered, start() + 2.minutes());
    assert_eq!(
        run.status
            .scaled_out
            .as_ref()
            .and_then(|scaled| scaled.request_rate.as_deref()),
        Some("150.000")
    );
    // Healthy for far longer than scaleInAfter (10m), the surge easing but still heavy.
    answered.request_rate = 140.0;
    for minutes in [4, 15, 30] {
        let decision = run.step(&answered, start() + minutes.minutes());
        assert_eq!(kind(&decision), None, "at {minutes} min");
    }
    // The surge is over (back under 90 % of its peak, though above the rate that first
    // scaled the service out).
    answered.request_rate = 100.0;
    let decision = run.step(&answered, start() + 31.minutes());
    assert_eq!(kind(&decision), Some(ActionKind::ScaleIn));
}

#[test]
fn scale_in_never_goes_below_min_replicas() {
    let world = World::scaled_to(6);
    let mut run = Run::scaled_out_from(BTreeMap::from([("billing-api-az1".into(), 1)]));
    run.step(&world, start());
    let decision = run.decide(&world, start() + 11.minutes());
    assert_eq!(
        decision.action().map(|action| action.step.clone()),
        Some(Step::ScaleIn {
            replicas: BTreeMap::from([("billing-api-az1".into(), 3)])
        })
    );
}

fn crash_loop_world() -> World {
    let mut world = World::healthy();
    world.pod_mut("billing-api-az1-0").crash_loop = true;
    world
}

/// Steps `run` through the crash-loop world at the start, asserting that it restarts the pod;
/// returns that world.
fn restarted_crash_loop(run: &mut Run) -> World {
    let world = crash_loop_world();
    assert_eq!(
        kind(&run.step(&world, start())),
        Some(ActionKind::RestartPod)
    );
    world
}

/// A new run over the crash-loop world and its decision at the start, asserted to restart the
/// pod.
fn restart_decided() -> (Run, World, Decision) {
    let run = Run::new();
    let world = crash_loop_world();
    let decision = run.decide(&world, start());
    assert_eq!(kind(&decision), Some(ActionKind::RestartPod));
    (run, world, decision)
}

#[test]
fn cooldown_blocks_the_next_action() {
    let mut run = Run::new();
    restarted_crash_loop(&mut run);
    // The restart helped (a new pod), then another pod crashes a minute later.
    let mut world = World::healthy();
    world.pod_mut("billing-api-az3-1").crash_loop = true;
    run.status.last_action.as_mut().unwrap().outcome = ActionOutcome::Helped;
    run.status.ladder = None;
    let decision = run.decide(&world, start() + 1.minutes());
    assert_eq!(gate_of(&decision), Some(Gate::Cooldown));
    assert!(decision.blocked().unwrap().detail.contains("cooldown 2m"));
}

#[test]
fn budget_blocks_when_spent_and_refused_actions_do_not_count() {
    let mut run = Run::new();
    run.spec.remediation.budget.max_actions = 2;
    let record = |minutes_ago: i64, outcome| ActionRecord {
        action: ActionKind::RestartPod,
        target: "pod/x".into(),
        reason: "test".into(),
        evidence: Evidence::new(),
        at: Time(start() - minutes_ago.minutes()),
        mode: RemediationMode::Enforce,
        outcome,
    };
    run.status.history = vec![
        record(10, ActionOutcome::Helped),
        record(20, ActionOutcome::Refused),
        record(30, ActionOutcome::Helped),
    ];
    let decision = run.decide_crash_loop();
    assert_eq!(gate_of(&decision), Some(Gate::Budget));
    assert!(
        decision
            .blocked()
            .unwrap()
            .detail
            .contains("2 actions in the last 1h")
    );
    // An hour later the window has slid past them.
    run.status.history.truncate(1);
    assert_eq!(kind(&run.decide_crash_loop()), Some(ActionKind::RestartPod));
}

#[test]
fn blackout_window_blocks_all_but_allowed_actions() {
    let mut run = Run::new();
    run.spec.remediation.blackout_windows = vec![crate::api::BlackoutWindow {
        schedule: "0 12 * * *".into(),
        time_zone: None,
        duration: crate::api::Duration::from_static("8h"),
        allow: vec![ActionKind::ScaleOut],
    }];
    let decision = run.decide(&crash_loop_world(), start() + 30.minutes());
    assert_eq!(gate_of(&decision), Some(Gate::Blackout));
    let mut surge = World::healthy();
    surge.latency = Ok(0.4);
    assert_eq!(
        kind(&run.decide(&surge, start() + 30.minutes())),
        Some(ActionKind::ScaleOut)
    );
    // Outside the window (20:00 and later) restarts are allowed again.
    assert_eq!(
        kind(&run.decide(&crash_loop_world(), start() + 8.hours() + 1.minutes())),
        Some(ActionKind::RestartPod)
    );
}

#[test]
fn month_end_blackout_uses_the_last_day_of_the_month() {
    let mut service = spec();
    service.remediation.blackout_windows = vec![crate::api::BlackoutWindow {
        schedule: "0 18 L * *".into(),
        time_zone: None,
        duration: crate::api::Duration::from_static("8h"),
        allow: vec![],
    }];
    let at = |text: &str| text.parse::<Timestamp>().unwrap();
    assert!(active_blackout(&service, at("2026-11-30T19:00:00Z")).is_some());
    assert!(active_blackout(&service, at("2026-12-01T01:59:00Z")).is_some());
    assert!(active_blackout(&service, at("2026-12-01T02:00:00Z")).is_none());
    assert!(active_blackout(&service, at("2026-11-29T19:00:00Z")).is_none());
}

/// A spec whose only blackout window is `schedule` for `duration` in `time_zone`.
fn blackout_in(
    schedule: &str,
    time_zone: Option<&str>,
    duration: &'static str,
) -> InvoiceServiceSpec {
    let mut service = spec();
    service.remediation.blackout_windows = vec![crate::api::BlackoutWindow {
        schedule: schedule.into(),
        time_zone: time_zone.map(str::to_owned),
        duration: crate::api::Duration::from_static(duration),
        allow: vec![],
    }];
    service
}

fn open_at(service: &InvoiceServiceSpec, at: &str) -> bool {
    active_blackout(service, at.parse::<Timestamp>().unwrap()).is_some()
}

#[test]
fn blackout_window_follows_its_time_zone_through_daylight_saving_time() {
    // 09:00-10:00 in Berlin: 08:00-09:00 UTC in winter (CET, UTC+1), 07:00-08:00 UTC in summer
    // (CEST, UTC+2).
    let berlin = blackout_in("0 9 * * *", Some("Europe/Berlin"), "1h");
    assert!(
        open_at(&berlin, "2026-01-15T08:30:00Z"),
        "winter, 09:30 CET"
    );
    assert!(
        !open_at(&berlin, "2026-01-15T07:30:00Z"),
        "winter, 08:30 CET"
    );
    assert!(
        !open_at(&berlin, "2026-01-15T09:00:00Z"),
        "winter, 10:00 CET: closed"
    );
    assert!(
        open_at(&berlin, "2026-07-15T07:30:00Z"),
        "summer, 09:30 CEST"
    );
    assert!(
        !open_at(&berlin, "2026-07-15T08:30:00Z"),
        "summer, 10:30 CEST"
    );
    // The days the clocks change (29 March and 25 October 2026): the window still opens at
    // 09:00 local time.
    assert!(
        open_at(&berlin, "2026-03-29T07:00:00Z"),
        "09:00 CEST on the spring change"
    );
    assert!(!open_at(&berlin, "2026-03-29T08:00:00Z"));
    assert!(
        open_at(&berlin, "2026-10-25T08:00:00Z"),
        "09:00 CET on the autumn change"
    );
    assert!(!open_at(&berlin, "2026-10-25T07:30:00Z"));
}

#[test]
fn blackout_window_without_a_time_zone_is_read_in_utc() {
    let utc = blackout_in("0 9 * * *", None, "1h");
    assert!(open_at(&utc, "2026-07-15T09:30:00Z"));
    assert!(!open_at(&utc, "2026-07-15T07:30:00Z"));
    let explicit = blackout_in("0 9 * * *", Some("UTC"), "1h");
    assert!(open_at(&explicit, "2026-07-15T09:30:00Z"));
}

#[test]
fn blackout_window_open_over_a_clock_change_counts_elapsed_time() {
    // From 01:00 Berlin for 3 hours on the spring change: the clocks skip 02:00-03:00, so the
    // window closes at 05:00 CEST (03:00 UTC), three real hours later.
    let night = blackout_in("0 1 * * *", Some("Europe/Berlin"), "3h");
    assert!(open_at(&night, "2026-03-29T02:59:00Z"));
    assert!(!open_at(&night, "2026-03-29T03:00:00Z"));
}

#[test]
fn blackout_window_in_an_unknown_time_zone_is_never_open() {
    // validate() refuses such a spec first; the gate does not guess a zone either.
    let unknown = blackout_in("* * * * *", Some("Mars/Olympus_Mons"), "1h");
    assert!(!open_at(&unknown, "2026-07-15T09:30:00Z"));
}

#[test]
fn pause_by_spec_or_annotation_blocks_every_action() {
    let mut run = Run::new();
    run.spec.remediation.paused = true;
    assert_eq!(gate_of(&run.decide_crash_loop()), Some(Gate::Paused));
    run.spec.remediation.paused = false;
    run.paused_by_annotation = true;
    assert_eq!(gate_of(&run.decide_crash_loop()), Some(Gate::Paused));
}

#[test]
fn an_argo_rollout_updating_or_paused_holds_every_action_and_reversal_until_it_ends() {
    let mut run = Run::new();
    let mut world = crash_loop_world();
    world.deployments[1].update = Some("is paused (CanaryPauseStep), phase Paused".to_owned());
    let decision = run.decide(&world, start());
    assert_eq!(gate_of(&decision), Some(Gate::RolloutInProgress));
    assert_eq!(decision.action(), None);
    let detail = &decision.blocked().unwrap().detail;
    assert!(
        detail.contains("Rollout billing-api-az2 is paused (CanaryPauseStep)"),
        "{detail}"
    );
    // A reversal waits too: leaving read-only mode in the middle of a canary.
    let mut run_read_only = Run::in_read_only();
    let mut calm = World::healthy();
    calm.db_pool = Ok(0.5);
    calm.deployments[0].update = Some("is updating to revision 84c1, phase Progressing".into());
    run_read_only.step(&calm, start() + 10.minutes());
    let held = run_read_only.step(&calm, start() + 15.minutes() + 1.seconds());
    assert_eq!(gate_of(&held), Some(Gate::RolloutInProgress));
    assert!(run_read_only.status.read_only.is_some());
    // The update over (or aborted): the restart goes ahead.
    world.deployments[1].update = None;
    assert_eq!(
        kind(&run.step(&world, start())),
        Some(ActionKind::RestartPod)
    );
}

#[test]
fn storm_gate_freezes_actions() {
    let mut run = Run::new();
    run.storm = true;
    let decision = run.decide_crash_loop();
    assert_eq!(gate_of(&decision), Some(Gate::StormGate));
    assert_eq!(decision.action(), None);
}

#[test]
fn dry_run_reports_what_it_would_do_and_records_nothing_as_taken() {
    let mut run = Run::new();
    run.spec.remediation.mode = RemediationMode::DryRun;
    let mut world = World::healthy();
    world.db_pool = Ok(1.0);
    run.step(&world, start());
    let decision = run.step(&world, start() + 2.minutes());
    assert!(matches!(
        decision.outcome,
        Outcome::Act { dry_run: true, .. }
    ));
    assert_eq!(kind(&decision), Some(ActionKind::EnterReadOnly));
    assert_eq!(run.status.read_only, None, "nothing was switched");
    assert_eq!(
        run.status.last_action.as_ref().unwrap().outcome,
        ActionOutcome::NotTaken
    );
}

#[test]
fn max_unavailable_counts_pods_already_restarting() {
    let mut world = crash_loop_world();
    world.pod_mut("billing-api-az2-2").terminating = true;
    let decision = Run::new().decide(&world, start());
    assert_eq!(gate_of(&decision), Some(Gate::MaxUnavailable));
}

#[test]
fn a_rung_that_did_not_help_escalates_after_the_verify_window() {
    let mut run = Run::new();
    let world = restarted_crash_loop(&mut run);
    // The replacement crash-loops too: nothing improved.
    let decision = run.step(&world, start() + 1.minutes());
    assert_eq!(decision.action(), None);
    assert!(decision.waiting().is_some(), "verifying, not acting");
    let decision = run.step(&world, start() + 3.minutes() + 1.seconds());
    assert_eq!(decision.verdict, Some(ActionOutcome::NoEffect));
    assert_eq!(kind(&decision), Some(ActionKind::RolloutRestart));
    assert_eq!(run.status.history[1].outcome, ActionOutcome::NoEffect);
    // Still no better: the ladder for bad pods is exhausted.
    let decision = run.step(&world, start() + 7.minutes());
    assert_eq!(gate_of(&decision), Some(Gate::LadderExhausted));
    assert!(decision.attention.contains(&Attention::LadderExhausted));
    assert!(run.status.ladder.as_ref().unwrap().exhausted);
    // No more actions until it recovers.
    let decision = run.step(&world, start() + 30.minutes());
    assert_eq!(decision.action(), None);
    // Recovery resets the ladder.
    run.step(&World::healthy(), start() + 31.minutes());
    assert_eq!(run.status.ladder, None);
}

/// A PodDisruptionBudget refuses the eviction: recorded once as Refused with who refused,
/// not retried before the cooldown, and then the ladder moves on to the rung the budget
/// allows (a rolling restart is paced by the Deployment, not by evictions) instead of
/// evicting again every cooldown.
#[test]
fn a_refused_rung_is_not_retried_and_the_ladder_moves_on_after_the_cooldown() {
    let (mut run, world, decision) = restart_decided();
    run.status = record(&run.status, &decision, &world.deployments, start(), false);
    note_refusal(
        &mut run.status,
        crate::act::refused_by::POD_DISRUPTION_BUDGET,
        "The disruption budget billing-api needs 9 healthy pods and has 9 currently",
    );
    let refused = run.status.last_action.as_ref().unwrap();
    assert_eq!(refused.outcome, ActionOutcome::Refused);
    assert_eq!(
        refused
            .evidence
            .get(refusal_evidence::REFUSED_BY)
            .map(String::as_str),
        Some(crate::act::refused_by::POD_DISRUPTION_BUDGET)
    );
    assert_eq!(run.status.history[0], *refused);

    // Within the cooldown: nothing, and the refused eviction is not tried again.
    let decision = run.decide(&world, start() + 1.minutes());
    assert_eq!(gate_of(&decision), Some(Gate::Cooldown));
    // After it: the next rung, even though the pod's problem is unchanged.
    let decision = run.step(&world, start() + 2.minutes() + 1.seconds());
    assert_eq!(kind(&decision), Some(ActionKind::RolloutRestart));
    // Refusals do not spend the budget.
    assert_eq!(
        budget_used(
            &run.status,
            start() + 3.minutes(),
            Duration::from_secs(3600)
        ),
        1
    );
}

/// A refused RestartPod is not "repeatable" even if the signal happens to improve meanwhile:
/// evicting again would meet the same budget.
#[test]
fn a_refused_rung_is_not_repeated_when_the_signal_improves_by_itself() {
    let mut run = Run::new();
    let mut world = crash_loop_world();
    world.pod_mut("billing-api-az2-0").crash_loop = true;
    let decision = run.decide(&world, start());
    assert_eq!(kind(&decision), Some(ActionKind::RestartPod));
    run.status = record(&run.status, &decision, &world.deployments, start(), false);
    // One of the two crash-looping pods recovers on its own.
    let better = crash_loop_world();
    let decision = run.decide(&better, start() + 2.minutes() + 1.seconds());
    assert_eq!(kind(&decision), Some(ActionKind::RolloutRestart));
}

#[test]
fn unknown_signals_after_an_action_neither_judge_it_nor_reset_the_ladder() {
    let mut run = Run::new();
    let mut burning = World::healthy();
    burning.window_error_ratio = Ok(0.05);
    burning.every_pod_at(rates(10.0, 0.5));
    assert_eq!(
        kind(&run.step(&burning, start())),
        Some(ActionKind::RolloutRestart)
    );
    // The rollout's new pods have no samples yet.
    let mut blind = burning.clone();
    blind.prometheus_down();
    let decision = run.step(&blind, start() + 10.seconds());
    assert_eq!(decision.verdict, None);
    assert_eq!(
        run.status.ladder.as_ref().and_then(|ladder| ladder.rung),
        Some(Rung::RolloutRestart)
    );
    // The burn shows again after the verify window: the next rung, not the first again.
    let decision = run.step(&burning, start() + 3.minutes() + 1.seconds());
    assert_eq!(decision.verdict, Some(ActionOutcome::NoEffect));
    assert_eq!(kind(&decision), Some(ActionKind::ScaleOut));
}

/// Healthy signals 10 s after an action are mostly samples from before it: the action is not
/// judged `Helped` before one detection window has passed, and is once it has.
#[test]
fn recovery_is_not_credited_to_an_action_within_one_detection_window() {
    let mut run = Run::new();
    run.step(&crash_loop_world(), start());
    let decision = run.step(&World::healthy(), start() + 10.seconds());
    assert_eq!(decision.verdict, None);
    assert_eq!(
        run.status.last_action.as_ref().unwrap().outcome,
        ActionOutcome::Pending
    );
    let decision = run.step(
        &World::healthy(),
        start() + (DETECTION.as_secs() as i64).seconds(),
    );
    assert_eq!(decision.verdict, Some(ActionOutcome::Helped));
}

#[test]
fn an_action_that_helped_is_marked_helped() {
    let mut run = Run::new();
    run.step(&crash_loop_world(), start());
    let decision = run.step(&World::healthy(), start() + 1.minutes());
    assert_eq!(decision.verdict, Some(ActionOutcome::Helped));
    assert_eq!(
        run.status.last_action.as_ref().unwrap().outcome,
        ActionOutcome::Helped
    );
}

#[test]
fn prometheus_outage_causes_no_action_and_marks_signals_untrusted() {
    let mut world = World::healthy();
    world.prometheus_down();
    let run = Run::new();
    let observation = world.observe(start());
    let evaluation = evaluate(&run.spec, &observation, DETECTION);
    assert_eq!(
        evaluation.untrusted.get("errorRatio"),
        Some(&UnknownReason::PrometheusUnreachable)
    );
    assert_eq!(evaluation.slo_met_now(), None);
    let decision = run.decide(&world, start());
    assert_eq!(decision.action(), None);
    assert_eq!(decision.blocked(), None);
}

#[test]
fn pod_status_signals_still_act_while_prometheus_is_down() {
    let mut world = crash_loop_world();
    world.prometheus_down();
    assert_eq!(first_kind(&world), Some(ActionKind::RestartPod));
}

#[test]
fn client_error_spike_raises_attention_and_restarts_nothing() {
    let mut world = World::healthy();
    world.client_error_ratio = 0.6;
    let decision = Run::new().decide(&world, start());
    assert_eq!(decision.action(), None);
    assert!(matches!(
        decision.attention.as_slice(),
        [Attention::ClientErrorSpike { ratio }] if (*ratio - 0.6).abs() < 1e-9
    ));
}

#[test]
fn expiring_certificate_raises_attention() {
    let mut world = World::healthy();
    world.certificate_expires_at = Ok((start().as_second() + 5 * 86_400) as f64);
    let decision = Run::new().decide(&world, start());
    assert_eq!(decision.action(), None);
    assert!(matches!(
        decision.attention.as_slice(),
        [Attention::CertificateExpiring { seconds_left }] if *seconds_left == 432_000.0
    ));
}

#[test]
fn not_in_ladder_is_reported_as_a_gate() {
    let mut run = Run::new();
    run.spec.remediation.ladder = Some(vec![Rung::RestartPod]);
    let mut world = World::healthy();
    world.latency = Ok(0.5);
    assert_eq!(
        gate_of(&run.decide(&world, start())),
        Some(Gate::NotInLadder)
    );
}

#[test]
fn history_is_bounded() {
    let mut run = Run::new();
    run.spec.remediation.budget.max_actions = 20;
    let mut now = start();
    for _ in 0..40 {
        let decision = run.decide(&crash_loop_world(), now);
        run.status = record(&run.status, &decision, &[], now, false);
        // Each refusal moves the ladder on; start it over to keep refusing the first rung.
        run.status.ladder = None;
        now += 3.minutes();
    }
    assert_eq!(run.status.history.len(), HISTORY_LIMIT);
}

// ---------------------------------------------------------------------------------------
// Properties over random signal sequences.

/// One random step of the world: what goes wrong, and how much time passes.
#[derive(Clone, Debug)]
struct SignalStep {
    crash_loop: Option<usize>,
    latency: Option<f64>,
    db_pool: Option<f64>,
    error_ratio: Option<f64>,
    failing_zone: Option<usize>,
    prometheus_down: bool,
    seconds: i64,
}

fn step_strategy() -> impl Strategy<Value = SignalStep> {
    (
        proptest::option::of(0..9usize),
        proptest::option::of(0.0..1.0f64),
        proptest::option::of(0.0..1.0f64),
        proptest::option::of(0.0..0.2f64),
        proptest::option::of(0..3usize),
        proptest::bool::weighted(0.1),
        5..240i64,
    )
        .prop_map(|step| SignalStep {
            crash_loop: step.0,
            latency: step.1,
            db_pool: step.2,
            error_ratio: step.3,
            failing_zone: step.4,
            prometheus_down: step.5,
            seconds: step.6,
        })
}

fn world_for(step: &SignalStep, deployments: &[DeploymentState]) -> World {
    let mut world = World::healthy();
    world.deployments = deployments.to_vec();
    if let Some(index) = step.crash_loop {
        world.pods[index].crash_loop = true;
    }
    if let Some(latency) = step.latency {
        world.latency = Ok(latency);
    }
    if let Some(utilization) = step.db_pool {
        world.db_pool = Ok(utilization);
    }
    if let Some(ratio) = step.error_ratio {
        world.window_error_ratio = Ok(ratio);
    }
    if let Some(zone) = step.failing_zone {
        world.zone_errors(["az1", "az2", "az3"][zone], 0.8);
    }
    if step.prometheus_down {
        world.prometheus_down();
    }
    world
}

/// Applies an action's replica changes to the simulated Deployments.
fn apply(deployments: &mut [DeploymentState], action: &PlannedAction) {
    let Some(replicas) = action.step.replicas() else {
        return;
    };
    for (name, count) in replicas {
        if let Some(deployment) = deployments.iter_mut().find(|d| &d.name == name) {
            deployment.replicas = *count;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn engine_invariants_hold_over_random_signal_sequences(
        steps in proptest::collection::vec(step_strategy(), 1..60),
        max_actions in 1u32..8,
    ) {
        let mut run = Run::new();
        run.spec.remediation.budget.max_actions = max_actions;
        let scale = run.spec.remediation.scale.clone();
        let mut deployments = World::healthy().deployments;
        let mut now = start();
        let mut taken: Vec<Timestamp> = Vec::new();
        for step in &steps {
            now += step.seconds.seconds();
            let world = world_for(step, &deployments);
            let observation = world.observe(now);
            let evaluation = evaluate(&run.spec, &observation, DETECTION);
            let input = DecisionInput {
                spec: &run.spec,
                evaluation: &evaluation,
                status: &run.status,
                deployments: &deployments,
                now,
                paused_by_annotation: false,
                storm: false,
                manual_fail_back: false,
            };
            let decision = decide(&input);
            let observed = deployments.clone();
            // The same inputs always give the same decision.
            prop_assert_eq!(&decide(&input), &decision);
            if let Some(action) = decision.action() {
                taken.push(now);
                // Never more actions than the budget in any window.
                let per = run.spec.remediation.budget.per.get().as_secs() as i64;
                let in_window = taken
                    .iter()
                    .filter(|at| (now - **at).get_seconds() < per)
                    .count();
                prop_assert!(in_window <= max_actions as usize, "{} actions in window", in_window);
                if action.kind() == ActionKind::ZoneFailover {
                    let Step::ZoneFailover { zone, .. } = &action.step else { unreachable!() };
                    let healthy_others = evaluation
                        .zones
                        .iter()
                        .filter(|z| &z.name != zone && z.unhealthy == Some(false))
                        .count();
                    prop_assert!(healthy_others >= 1, "failed over the last healthy zone");
                }
                apply(&mut deployments, action);
            }
            // The status records what was observed before acting (baselines, replicas before).
            run.status = record(&run.status, &decision, &observed, now, true);
            let failed_zone = run.status.failover.as_ref().map(|f| f.zone.clone());
            for deployment in &deployments {
                prop_assert!(deployment.replicas <= scale.max_replicas, "{:?}", deployment);
                let failed = deployment.zone.is_some() && deployment.zone == failed_zone;
                if !failed {
                    prop_assert!(deployment.replicas >= scale.min_replicas, "{:?}", deployment);
                }
            }
        }
    }

    #[test]
    fn unknown_metrics_never_cause_an_action(
        steps in proptest::collection::vec(step_strategy(), 1..30),
    ) {
        // Whatever state earlier steps left in status, a step whose metrics are all unknown
        // and whose pods are all healthy acts on nothing.
        let mut run = Run::new();
        let mut deployments = World::healthy().deployments;
        let mut now = start();
        for step in &steps {
            now += step.seconds.seconds();
            let decision = run.decide(&world_for(step, &deployments), now);
            let observed = deployments.clone();
            if let Some(action) = decision.action() {
                apply(&mut deployments, action);
            }
            run.status = record(&run.status, &decision, &observed, now, true);
            let mut blind = World::healthy();
            blind.deployments = deployments.clone();
            blind.prometheus_down();
            let decision = run.decide(&blind, now + 1.seconds());
            prop_assert_eq!(decision.action(), None, "{:?}", decision);
        }
    }
}

/// A verify window shorter than the detection window would judge an action on a rate made
/// mostly of samples from before it (seen in the surge scenario: a scale-out "had no effect"
/// 20 s after it while the 30 s latency still filled with the surge). The verdict waits for
/// one detection window.
#[test]
fn an_action_is_not_judged_before_one_detection_window_has_passed() {
    let mut run = Run::new();
    run.spec.remediation.verify_window = crate::api::Duration::from_static("20s");
    let world = restarted_crash_loop(&mut run);
    let decision = run.step(&world, start() + 30.seconds());
    assert_eq!(
        decision.verdict, None,
        "past verifyWindow, inside DETECTION"
    );
    assert_eq!(decision.action(), None);
    assert!(
        decision
            .waiting()
            .is_some_and(|waiting| waiting.contains("60s (one detection window)")),
        "{:?}",
        decision.waiting()
    );
    let decision = run.step(&world, start() + 61.seconds());
    assert_eq!(decision.verdict, Some(ActionOutcome::NoEffect));
}

mod canary;
mod resume;
