//! The fail-back canary: a drained zone is failed back only on evidence — one replica first,
//! judged on the zone's own error ratio — and a canary that fails is taken back while the
//! failover holds.

use super::*;

const AZ2: &str = "billing-api-az2";

fn before() -> BTreeMap<String, i32> {
    BTreeMap::from([
        ("billing-api-az1".to_owned(), 3),
        (AZ2.to_owned(), 3),
        ("billing-api-az3".to_owned(), 3),
    ])
}

/// az2 failed over at `start()` (5/0/5), its pods gone; the zone looks healthy from then on.
fn failed_over() -> (Run, World) {
    let mut run = Run::new();
    run.status.failover = Some(FailoverState {
        zone: "az2".into(),
        since: Time(start()),
        replicas_before: before(),
        canary: None,
        waiting: None,
    });
    let mut world = World::healthy();
    for deployment in &mut world.deployments {
        let drained = deployment.name == AZ2;
        deployment.replicas = if drained { 0 } else { 5 };
        deployment.ready_replicas = deployment.replicas;
    }
    world.pods.retain(|pod| pod.zone.as_deref() != Some("az2"));
    world.pod_rates.retain(|name, _| !name.contains("az2"));
    (run, world)
}

/// The canary of az2 is scaled up: one replica, `ready` of them Ready.
fn canary_scaled(world: &mut World, ready: i32) {
    let deployment = world
        .deployments
        .iter_mut()
        .find(|d| d.name == AZ2)
        .unwrap();
    deployment.replicas = 1;
    deployment.ready_replicas = ready;
}

/// The canary of az2 is running at `at`: its pod exists, Ready, answering with `ratio` 5xx.
fn canary_serves(world: &mut World, ratio: f64) {
    canary_scaled(world, 1);
    let pod = format!("{AZ2}-canary");
    world.pods.push(PodState {
        name: pod.clone(),
        deployment: AZ2.into(),
        zone: Some("az2".into()),
        ready: true,
        unready_since: None,
        restart_count: 0,
        crash_loop: false,
        terminating: false,
    });
    world.pod_rates.insert(pod, Ok(rates(10.0, 10.0 * ratio)));
}

/// Why the failover still holds, as its status says.
fn failover_waiting(run: &Run) -> String {
    run.status
        .failover
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap()
}

/// `decision` takes the canary back, saying `why`.
fn assert_withdrawn(decision: &Decision, why: &str) {
    let action = decision.action().expect("the canary taken back");
    assert_eq!(action.step, withdrawal_step());
    assert!(action.reason.contains(why), "{}", action.reason);
}

fn canary_step() -> Step {
    Step::ZoneFailBack {
        zone: "az2".into(),
        replicas: BTreeMap::from([(AZ2.to_owned(), 1)]),
        canary: true,
    }
}

fn withdrawal_step() -> Step {
    Step::ZoneFailover {
        zone: "az2".into(),
        replicas: BTreeMap::from([(AZ2.to_owned(), 0)]),
        canary: true,
    }
}

/// Starts the canary: the zone has looked healthy for `failBack.after` (10m).
fn canary_started(run: &mut Run, world: &World) -> Timestamp {
    run.step(world, start() + 1.minutes());
    let now = start() + 11.minutes() + 1.seconds();
    let decision = run.step(world, now);
    assert_eq!(decision.action().map(|a| &a.step), Some(&canary_step()));
    now
}

#[test]
fn a_zone_healthy_for_fail_back_after_gets_one_canary_replica_not_all_of_them() {
    let (mut run, world) = failed_over();
    let waiting = run.decide(&world, start() + 1.minutes());
    assert_eq!(waiting.action(), None);
    let now = canary_started(&mut run, &world);
    let failover = run.status.failover.as_ref().expect("the failover holds");
    let canary = failover.canary.as_ref().expect("the canary is in status");
    assert_eq!(canary.since, Time(now));
    assert_eq!(canary.replicas, BTreeMap::from([(AZ2.to_owned(), 1)]));
    assert_eq!(failover.replicas_before, before());
    run.step(&world, now + 15.seconds());
    let failover = run.status.failover.as_ref().unwrap();
    assert!(
        failover
            .waiting
            .as_deref()
            .is_some_and(|why| why.contains("waiting for it to be Ready")),
        "{failover:?}"
    );
}

#[test]
fn a_canary_serving_without_errors_for_canary_for_fails_the_whole_zone_back() {
    let (mut run, mut world) = failed_over();
    let started = canary_started(&mut run, &world);
    canary_serves(&mut world, 0.0);
    let ready = started + 15.seconds();
    assert_eq!(
        kind(&run.step(&world, ready)),
        None,
        "Ready, not yet judged"
    );
    let waiting = failover_waiting(&run);
    assert!(
        waiting.contains("judged on the zone's error ratio"),
        "{waiting}"
    );
    assert_eq!(kind(&run.step(&world, ready + 1.minutes())), None);
    let decision = run.step(&world, ready + 2.minutes() + 1.seconds());
    let action = decision.action().expect("the whole fail-back");
    assert_eq!(
        action.step,
        Step::ZoneFailBack {
            zone: "az2".into(),
            replicas: before(),
            canary: false,
        }
    );
    assert_eq!(run.status.failover, None);
    assert!(
        !run.status
            .held_since
            .keys()
            .any(|key| key.starts_with("Zone/az2/"))
    );
}

#[test]
fn a_canary_that_fails_requests_is_taken_back_and_the_failover_holds() {
    let (mut run, mut world) = failed_over();
    let started = canary_started(&mut run, &world);
    canary_serves(&mut world, 0.9);
    let now = started + 15.seconds();
    assert_withdrawn(&run.step(&world, now), "error ratio 0.900");
    let failover = run.status.failover.as_ref().expect("the failover holds");
    assert_eq!(failover.canary, None);
    assert_eq!(failover.replicas_before, before(), "the baseline is kept");
    assert_eq!(run.status.history[0].action, ActionKind::ZoneFailover);
    assert!(!run.status.held_since.contains_key("Zone/az2/Healthy"));
    // Drained again: no new canary before the zone has looked healthy for 10m again.
    let (_, drained) = failed_over();
    assert_eq!(kind(&run.step(&drained, now + 1.minutes())), None);
    assert_eq!(kind(&run.step(&drained, now + 10.minutes())), None);
    assert_eq!(
        run.step(&drained, now + 11.minutes() + 1.seconds())
            .action()
            .map(|a| a.step.clone()),
        Some(canary_step())
    );
}

#[test]
fn a_canary_never_ready_is_taken_back_after_canary_for() {
    let (mut run, mut world) = failed_over();
    let started = canary_started(&mut run, &world);
    canary_scaled(&mut world, 0);
    assert_eq!(kind(&run.step(&world, started + 1.minutes())), None);
    let decision = run.step(&world, started + 2.minutes() + 1.seconds());
    assert_withdrawn(&decision, "not Ready within canaryFor 2m");
    assert!(run.status.failover.is_some());
}

#[test]
fn a_canary_without_a_measured_error_ratio_is_not_failed_back_and_is_taken_back_in_time() {
    let (mut run, mut world) = failed_over();
    let started = canary_started(&mut run, &world);
    // Ready, but its requests are not measured (no series yet).
    canary_scaled(&mut world, 1);
    let ready = started + 15.seconds();
    run.step(&world, ready);
    for minutes in [1, 2, 3] {
        let decision = run.step(&world, ready + minutes.minutes() + 1.seconds());
        assert_eq!(
            decision.action(),
            None,
            "no evidence, no fail-back: {decision:?}"
        );
    }
    let waiting = failover_waiting(&run);
    assert!(
        waiting.contains("no error ratio of the zone measured yet"),
        "{waiting}"
    );
    let decision = run.step(&world, ready + 4.minutes() + 1.seconds());
    assert_eq!(decision.action().map(|a| &a.step), Some(&withdrawal_step()));
}

#[test]
fn without_evidence_of_health_the_failover_holds_and_says_why() {
    let (mut run, mut world) = failed_over();
    world.not_ready_nodes.insert("az2".into(), 2);
    for minutes in [1, 11, 30] {
        let decision = run.step(&world, start() + minutes.minutes());
        assert_eq!(decision.action(), None);
    }
    let waiting = failover_waiting(&run);
    assert!(waiting.contains("2 NotReady node(s)"), "{waiting}");
    world.not_ready_nodes.clear();
    world.prometheus_down();
    let decision = run.step(&world, start() + 60.minutes());
    assert_eq!(decision.action(), None);
    let waiting = failover_waiting(&run);
    assert!(waiting.contains("Prometheus"), "{waiting}");
}

#[test]
fn a_canary_running_while_the_service_burns_is_taken_back_before_the_ladder_acts() {
    let (mut run, mut world) = failed_over();
    let started = canary_started(&mut run, &world);
    canary_serves(&mut world, 0.0);
    world.window_error_ratio = Ok(0.3);
    let decision = run.step(&world, started + 30.seconds());
    assert_eq!(decision.action().map(|a| &a.step), Some(&withdrawal_step()));
}

#[test]
fn a_broken_zone_is_never_failed_back_and_its_canaries_are_far_apart() {
    let (mut run, drained) = failed_over();
    let mut broken = drained.clone();
    canary_serves(&mut broken, 0.9);
    let mut now = start();
    let mut canaries = Vec::new();
    while now < start() + 2.hours() {
        now += 15.seconds();
        let canary_runs = run.status.failover.as_ref().unwrap().canary.is_some();
        let world = if canary_runs { &broken } else { &drained };
        if let Some(action) = run.step(world, now).action() {
            assert!(action.step.is_canary(), "{action:?}");
            if matches!(action.step, Step::ZoneFailBack { .. }) {
                canaries.push(now);
            }
        }
        assert!(
            run.status.failover.is_some(),
            "failed back into a broken zone"
        );
    }
    assert!(!canaries.is_empty());
    for pair in canaries.windows(2) {
        assert!((pair[1] - pair[0]).get_seconds() >= 600, "{canaries:?}");
    }
}

#[test]
fn an_interrupted_canary_withdrawal_is_completed_and_keeps_the_failover() {
    let (mut run, mut world) = failed_over();
    let started = canary_started(&mut run, &world);
    canary_serves(&mut world, 0.9);
    let now = started + 15.seconds();
    let decision = run.decide(&world, now);
    run.status = record_intent(&run.status, &decision, &world.deployments, now).unwrap();
    assert!(run.status.in_flight.as_ref().unwrap().canary);
    // Restarted before anything was written or recorded.
    let later = now + 20.seconds();
    let decision = run.step(&world, later);
    assert_eq!(decision.action().map(|a| &a.step), Some(&withdrawal_step()));
    let failover = run.status.failover.as_ref().expect("the failover holds");
    assert_eq!(failover.replicas_before, before());
    assert_eq!(failover.canary, None);
    assert_eq!(run.status.in_flight, None);
}

#[test]
fn a_canary_needs_budget_for_its_withdrawal() {
    let (mut run, world) = failed_over();
    run.spec.remediation.budget.max_actions = 1;
    run.step(&world, start() + 1.minutes());
    let decision = run.decide(&world, start() + 11.minutes() + 1.seconds());
    assert_eq!(gate_of(&decision), Some(Gate::Budget), "{decision:?}");
}
