//! The crash-safety of actions that set replicas: the intent is in status before the first
//! write, an interrupted action is completed from it (never decided again on a half-scaled
//! cluster), and the baseline it records is the one from before it started.

use super::*;
use crate::api::InFlightAction;

const AZ1: &str = "billing-api-az1";
const AZ2: &str = "billing-api-az2";
const AZ3: &str = "billing-api-az3";

fn set_dry_run(decision: &mut Decision, value: bool) {
    let Outcome::Act { dry_run, .. } = &mut decision.outcome else {
        unreachable!("an action was decided")
    };
    *dry_run = value;
}

fn replicas_in(world: &World) -> BTreeMap<String, i32> {
    world
        .deployments
        .iter()
        .map(|deployment| (deployment.name.clone(), deployment.replicas))
        .collect()
}

/// Zone az2 failing for long enough: the run, the world at 3/3/3 and the failover decision.
fn failover_due() -> (Run, World, Decision, Timestamp) {
    let mut world = World::healthy();
    world.zone_errors("az2", 0.6);
    let mut run = Run::new();
    run.step(&world, start());
    let now = start() + 121.seconds();
    let decision = run.decide(&world, now);
    assert_eq!(kind(&decision), Some(ActionKind::ZoneFailover));
    (run, world, decision, now)
}

/// The controller's path up to a kill after `writes` Deployments were scaled: the intent is
/// written, then the first `writes` targets in `act`'s order (healthy zones first). Returns
/// the status the restarted operator reads.
fn interrupted_failover(writes: usize) -> (Run, World, Timestamp) {
    let (mut run, mut world, decision, now) = failover_due();
    let intent = record_intent(&run.status, &decision, &world.deployments, now)
        .expect("a failover across zone Deployments is written down first");
    run.status = intent;
    let Some(PlannedAction {
        step: Step::ZoneFailover { replicas, .. },
        ..
    }) = decision.action()
    else {
        unreachable!("a zone failover targets a zone")
    };
    let order = [AZ1, AZ3, AZ2];
    for name in order.iter().take(writes) {
        world.set_replicas(&BTreeMap::from([((*name).to_owned(), replicas[*name])]));
    }
    (run, world, now)
}

/// `run` decides at `now` to take an action of `expected` and writes its intent; the operator
/// is killed after the one write `written` (a Deployment and its replicas). Returns the
/// restarted operator's decision 20 s later, and when that is.
fn killed_after_one_write(
    run: &mut Run,
    world: &mut World,
    now: Timestamp,
    expected: ActionKind,
    written: (&str, i32),
) -> (Decision, Timestamp) {
    let decision = run.decide(world, now);
    assert_eq!(kind(&decision), Some(expected));
    run.status = record_intent(&run.status, &decision, &world.deployments, now).unwrap();
    world.set_replicas(&BTreeMap::from([(written.0.to_owned(), written.1)]));
    let later = now + 20.seconds();
    (run.decide(world, later), later)
}

#[test]
fn the_intent_and_the_baseline_are_in_status_before_the_first_write() {
    let (run, world, decision, now) = failover_due();
    let intent = record_intent(&run.status, &decision, &world.deployments, now).unwrap();
    let in_flight = intent.in_flight.as_ref().expect("inFlight");
    assert_eq!(in_flight.action, ActionKind::ZoneFailover);
    assert_eq!(in_flight.zone.as_deref(), Some("az2"));
    assert_eq!(in_flight.replicas, zone_replicas(5, 0, 5));
    assert_eq!(in_flight.baseline, zone_replicas(3, 3, 3));
    assert_eq!(in_flight.started_at, Time(now));
    // Not yet taken: nothing in the history, no failover state.
    assert_eq!(intent.failover, None);
    assert!(intent.history.is_empty(), "{:?}", intent.history);
    // The ladder of the decision that started it is written with it.
    assert_eq!(intent.ladder, decision.ladder);
}

#[test]
fn an_uninterrupted_action_is_recorded_without_an_intent_left_behind() {
    let (run, world, decision, now) = failover_due();
    let intent = record_intent(&run.status, &decision, &world.deployments, now).unwrap();
    // The controller records on the status it read, and its final write drops the intent.
    let recorded = record(&run.status, &decision, &world.deployments, now, true);
    assert_eq!(recorded.in_flight, None);
    let completed = record(&intent, &decision, &world.deployments, now, true);
    assert_eq!(completed, recorded);
}

#[test]
fn an_interrupted_failover_is_completed_to_the_intended_replicas_after_a_restart() {
    for writes in 0..=2 {
        let (mut run, mut world, interrupted_at) = interrupted_failover(writes);
        let now = interrupted_at + 30.seconds();
        let decision = run.decide(&world, now);
        let action = planned(&decision);
        assert_eq!(
            action.kind(),
            ActionKind::ZoneFailover,
            "after {writes} write(s)"
        );
        assert_eq!(
            action.step,
            Step::ZoneFailover {
                zone: "az2".into(),
                replicas: zone_replicas(5, 0, 5),
                canary: false,
            },
            "after {writes} write(s): completed to the intended replicas, not planned again \
             from {:?}",
            replicas_in(&world)
        );
        assert!(action.reason.contains("resumed"), "{}", action.reason);
        apply(&mut world.deployments, &action);
        run.status = record(&run.status, &decision, &world.deployments, now, true);
        assert_eq!(replicas_in(&world), zone_replicas(5, 0, 5));
        assert_eq!(run.status.in_flight, None);
        assert_eq!(run.status.history.len(), 1, "{:?}", run.status.history);
        assert_eq!(
            run.status.last_action.as_ref().map(|last| last.action),
            Some(ActionKind::ZoneFailover)
        );
    }
}

#[test]
fn the_baseline_after_a_resumed_failover_is_the_one_before_it_started() {
    for writes in 0..=2 {
        let (mut run, world, interrupted_at) = interrupted_failover(writes);
        let now = interrupted_at + 30.seconds();
        let decision = run.decide(&world, now);
        // Recorded on the half-scaled Deployments, as the controller observes them.
        run.status = record(&run.status, &decision, &world.deployments, now, true);
        let failover = run.status.failover.as_ref().expect("failed over");
        assert_eq!(failover.zone, "az2");
        assert_eq!(
            failover.replicas_before,
            zone_replicas(3, 3, 3),
            "after {writes} write(s), the cluster showed {:?}",
            replicas_in(&world)
        );
    }
}

#[test]
fn fail_back_after_a_resumed_failover_restores_the_recorded_baseline() {
    let (mut run, mut world, interrupted_at) = interrupted_failover(2);
    let resumed_at = interrupted_at + 30.seconds();
    let decision = run.decide(&world, resumed_at);
    apply(&mut world.deployments, decision.action().unwrap());
    run.status = record(&run.status, &decision, &world.deployments, resumed_at, true);
    // The zone is repaired: no errors anywhere.
    let mut repaired = World::healthy();
    repaired.deployments = world.deployments.clone();
    let mut now = resumed_at + 10.seconds();
    let mut fail_back = None;
    for _ in 0..100 {
        now += 10.seconds();
        let decision = run.step(&repaired, now);
        if let Some(action) = decision.action().cloned() {
            // The canary first (one replica of az2), then the whole zone.
            apply(&mut repaired.deployments, &action);
            if !action.step.is_canary() {
                fail_back = Some(action);
                break;
            }
        }
    }
    let action = fail_back.expect("a fail-back");
    assert_eq!(action.kind(), ActionKind::ZoneFailBack);
    assert_eq!(
        action.step,
        Step::ZoneFailBack {
            zone: "az2".into(),
            replicas: zone_replicas(3, 3, 3),
            canary: false,
        }
    );
}

#[test]
fn an_interrupted_fail_back_is_completed_and_clears_the_failover() {
    let mut world = World::healthy();
    world.set_replicas(&zone_replicas(5, 0, 5));
    let mut run = Run::failed_over("az2", zone_replicas(3, 3, 3));
    run.step(&world, start());
    let canary_at = start() + 10.minutes() + 1.seconds();
    let ready_at = pass_canary(&mut run, &world, canary_at);
    let now = ready_at + 2.minutes() + 1.seconds();
    // Killed after the failed zone was restored, before the others were scaled in.
    let (decision, later) = killed_after_one_write(
        &mut run,
        &mut world,
        now,
        ActionKind::ZoneFailBack,
        (AZ2, 3),
    );
    let fail_back = Step::ZoneFailBack {
        zone: "az2".into(),
        replicas: zone_replicas(3, 3, 3),
        canary: false,
    };
    assert_planned(&decision, ActionKind::ZoneFailBack, fail_back);
    run.status = record(&run.status, &decision, &world.deployments, later, true);
    assert_eq!(run.status.failover, None);
    assert_eq!(run.status.in_flight, None);
}

#[test]
fn an_interrupted_scale_out_keeps_the_baseline_from_before_it() {
    let mut world = World::healthy();
    world.latency = Ok(2.0);
    let mut run = Run::new();
    // Killed after the first Deployment was scaled out.
    let (decision, later) = killed_after_one_write(
        &mut run,
        &mut world,
        start(),
        ActionKind::ScaleOut,
        (AZ1, 5),
    );
    let action = planned(&decision);
    assert_eq!(
        action.step,
        Step::ScaleOut {
            replicas: zone_replicas(5, 5, 5)
        }
    );
    run.status = record(&run.status, &decision, &world.deployments, later, true);
    assert_eq!(
        run.status.scaled_out.as_ref().map(|state| &state.baseline),
        Some(&zone_replicas(3, 3, 3))
    );
    assert_eq!(run.status.history.len(), 1);
}

#[test]
fn an_interrupted_action_waits_while_paused_or_in_dry_run() {
    let (mut run, world, interrupted_at) = interrupted_failover(1);
    let now = interrupted_at + 30.seconds();
    run.paused_by_annotation = true;
    let decision = run.decide(&world, now);
    assert_eq!(decision.action(), None);
    assert_eq!(gate_of(&decision), Some(Gate::Paused));
    let held = record(&run.status, &decision, &world.deployments, now, true);
    assert!(held.in_flight.is_some(), "the intent is kept");
    run.paused_by_annotation = false;
    run.spec.remediation.mode = RemediationMode::DryRun;
    let decision = run.decide(&world, now);
    assert_eq!(decision.action(), None);
    assert!(decision.waiting().is_some());
    let held = record(&run.status, &decision, &world.deployments, now, true);
    assert_eq!(held.in_flight, run.status.in_flight);
    assert!(held.history.is_empty());
    run.spec.remediation.mode = RemediationMode::Enforce;
    assert_eq!(
        kind(&run.decide(&world, now)),
        Some(ActionKind::ZoneFailover)
    );
}

/// An intent the operator never writes (an action that sets no replicas, or a zone action
/// without its zone: a hand-edited status) is not carried out as some other action.
#[test]
fn an_intent_of_an_action_that_sets_no_replicas_is_not_resumed() {
    let (mut run, world, interrupted_at) = interrupted_failover(1);
    let now = interrupted_at + 30.seconds();
    for (action, zone) in [
        (ActionKind::RestartPod, None),
        (ActionKind::ZoneFailover, None),
    ] {
        let intent = run.status.in_flight.as_mut().unwrap();
        intent.action = action;
        intent.zone = zone;
        let decision = run.decide(&world, now);
        assert_eq!(decision.action(), None);
        assert_eq!(gate_of(&decision), Some(Gate::UnresumableAction));
        let detail = &decision.blocked().unwrap().detail;
        assert!(detail.contains("status.inFlight"), "{detail}");
    }
}

#[test]
fn an_interrupted_action_whose_deployment_vanished_blocks_until_a_human_decides() {
    let (mut run, mut world, interrupted_at) = interrupted_failover(1);
    let az3 = world
        .deployments
        .iter_mut()
        .find(|deployment| deployment.name == AZ3)
        .unwrap();
    az3.exists = false;
    az3.replicas = 0;
    let now = interrupted_at + 30.seconds();
    let decision = run.decide(&world, now);
    assert_eq!(decision.action(), None);
    assert_eq!(gate_of(&decision), Some(Gate::UnresumableAction));
    let detail = &decision.blocked().unwrap().detail;
    assert!(
        detail.contains(AZ3) && detail.contains("status.inFlight"),
        "{detail}"
    );
    assert!(
        record(&run.status, &decision, &world.deployments, now, true)
            .in_flight
            .is_some()
    );
    // A human gives it up: the next decision starts from the cluster as it is.
    run.status.in_flight = None;
    assert_ne!(
        gate_of(&run.decide(&world, now)),
        Some(Gate::UnresumableAction)
    );
}

#[test]
fn actions_that_set_no_replicas_or_are_not_taken_write_no_intent() {
    let (mut run, world, decision) = restart_decided();
    assert_eq!(
        record_intent(&run.status, &decision, &world.deployments, start()),
        None
    );
    let (_, zone_world, mut failover, now) = failover_due();
    set_dry_run(&mut failover, true);
    assert_eq!(
        record_intent(&run.status, &failover, &zone_world.deployments, now),
        None
    );
    // The completion of an intent is not written down a second time.
    set_dry_run(&mut failover, false);
    run.status.in_flight = Some(InFlightAction {
        action: ActionKind::ZoneFailover,
        rung: Some(Rung::ZoneFailover),
        zone: Some("az2".into()),
        replicas: zone_replicas(5, 0, 5),
        baseline: zone_replicas(3, 3, 3),
        reason: "zone az2 down".into(),
        evidence: Evidence::new(),
        started_at: Time(now),
        canary: false,
    });
    assert_eq!(
        record_intent(&run.status, &failover, &zone_world.deployments, now),
        None
    );
}
