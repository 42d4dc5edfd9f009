//! The undo plan from status: what is reversed, in which order, and what is left alone.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::{FailoverState, InvoiceService, ReadOnlyState, ScaledOutState};

fn spec() -> InvoiceServiceSpec {
    let text = include_str!("../../../examples/billing-api-three-zones.yaml");
    serde_yaml::from_str::<InvoiceService>(text).unwrap().spec
}

fn deployments(replicas: [i32; 3]) -> Vec<DeploymentState> {
    ["az1", "az2", "az3"]
        .iter()
        .zip(replicas)
        .map(|(zone, replicas)| DeploymentState {
            name: format!("billing-api-{zone}"),
            zone: Some((*zone).to_owned()),
            replicas,
            ready_replicas: replicas,
            exists: true,
            replicas_manager: None,
            replicas_set_at: None,
            update: None,
            excluded_zones: Default::default(),
            affinity_set_by: None,
            autoscaler: None,
        })
        .collect()
}

fn per_zone(replicas: [i32; 3]) -> BTreeMap<String, i32> {
    deployments(replicas)
        .into_iter()
        .map(|deployment| (deployment.name, deployment.replicas))
        .collect()
}

fn at() -> Time {
    Time(Timestamp::UNIX_EPOCH)
}

#[test]
fn nothing_changed_means_nothing_to_undo() {
    assert!(
        undo_plan(
            &spec(),
            &InvoiceServiceStatus::default(),
            &deployments([3, 3, 3])
        )
        .is_empty()
    );
}

#[test]
fn read_only_comes_back_first_then_the_zone_then_the_scale_out() {
    // Scaled out 3 -> 5 per zone, then az2 failed over: 8/0/8 now.
    let status = InvoiceServiceStatus {
        read_only: Some(ReadOnlyState { since: at() }),
        failover: Some(FailoverState {
            zone: "az2".to_owned(),
            since: at(),
            replicas_before: per_zone([5, 5, 5]),
            canary: None,
            waiting: None,
        }),
        scaled_out: Some(ScaledOutState {
            baseline: per_zone([3, 3, 3]),
            since: at(),
            written: BTreeMap::new(),
            written_at: None,
            request_rate: None,
        }),
        ..InvoiceServiceStatus::default()
    };
    let plan = undo_plan(&spec(), &status, &deployments([8, 0, 8]));
    let kinds: Vec<ActionKind> = plan.iter().map(PlannedAction::kind).collect();
    assert_eq!(
        kinds,
        [
            ActionKind::ExitReadOnly,
            ActionKind::ZoneFailBack,
            ActionKind::ScaleIn
        ]
    );
    assert_eq!(plan[0].step, Step::ExitReadOnly);
    assert_eq!(
        plan[1].step,
        Step::ZoneFailBack {
            zone: "az2".to_owned(),
            replicas: per_zone([5, 5, 5]),
            canary: false,
        }
    );
    // After the fail-back every zone is at 5: each goes back to its baseline of 3.
    assert_eq!(
        plan[2].step,
        Step::ScaleIn {
            replicas: per_zone([3, 3, 3])
        }
    );
    assert!(plan.iter().all(|action| action.rung.is_none()));
}

#[test]
fn a_deployment_already_at_or_below_its_baseline_is_left_alone() {
    let status = InvoiceServiceStatus {
        scaled_out: Some(ScaledOutState {
            baseline: per_zone([3, 3, 3]),
            since: at(),
            written: BTreeMap::new(),
            written_at: None,
            request_rate: None,
        }),
        ..InvoiceServiceStatus::default()
    };
    let plan = undo_plan(&spec(), &status, &deployments([5, 3, 2]));
    assert_eq!(plan.len(), 1);
    assert_eq!(
        plan[0].step,
        Step::ScaleIn {
            replicas: BTreeMap::from([("billing-api-az1".to_owned(), 3)])
        }
    );
}

#[test]
fn a_vanished_deployment_is_not_scaled() {
    let status = InvoiceServiceStatus {
        scaled_out: Some(ScaledOutState {
            baseline: per_zone([3, 3, 3]),
            since: at(),
            written: BTreeMap::new(),
            written_at: None,
            request_rate: None,
        }),
        ..InvoiceServiceStatus::default()
    };
    let mut present = deployments([5, 5, 5]);
    present[0].exists = false;
    let plan = undo_plan(&spec(), &status, &present);
    let Step::ScaleIn { replicas: targets } = &plan[0].step else {
        panic!("a scale-in: {plan:?}");
    };
    assert!(!targets.contains_key("billing-api-az1"));
    assert_eq!(targets.len(), 2);
}

/// Killed between the writes of a failover (az1 already 3, az2 and az3 not yet touched), then
/// deleted before any restart: the half-done failover is rolled back to its recorded baseline.
#[test]
fn an_interrupted_failover_is_rolled_back_to_its_baseline() {
    let status = InvoiceServiceStatus {
        in_flight: Some(crate::api::InFlightAction {
            action: ActionKind::ZoneFailover,
            rung: Some(crate::api::Rung::ZoneFailover),
            zone: Some("az2".to_owned()),
            replicas: per_zone([3, 0, 3]),
            baseline: per_zone([2, 2, 2]),
            reason: "zone az2 5xx ratio 0.9".to_owned(),
            evidence: Default::default(),
            started_at: at(),
            canary: false,
        }),
        ..InvoiceServiceStatus::default()
    };
    let plan = undo_plan(&spec(), &status, &deployments([3, 2, 2]));
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!(plan[0].kind(), ActionKind::ZoneFailBack);
    assert_eq!(
        plan[0].step,
        Step::ZoneFailBack {
            zone: "az2".to_owned(),
            replicas: per_zone([2, 2, 2]),
            canary: false,
        }
    );
}

#[test]
fn a_fail_back_canary_in_flight_or_running_is_undone_by_the_failovers_fail_back() {
    // az2 failed over from 3/3/3 to 5/0/5, its canary taken back half-way (1 replica left).
    let status = InvoiceServiceStatus {
        failover: Some(FailoverState {
            zone: "az2".to_owned(),
            since: at(),
            replicas_before: per_zone([3, 3, 3]),
            canary: Some(crate::api::CanaryState {
                since: at(),
                replicas: BTreeMap::from([("billing-api-az2".to_owned(), 1)]),
            }),
            waiting: None,
        }),
        in_flight: Some(crate::api::InFlightAction {
            action: ActionKind::ZoneFailover,
            rung: None,
            zone: Some("az2".to_owned()),
            canary: true,
            replicas: BTreeMap::from([("billing-api-az2".to_owned(), 0)]),
            baseline: per_zone([5, 1, 5]),
            reason: "canary taken back".to_owned(),
            evidence: BTreeMap::new(),
            started_at: at(),
        }),
        ..InvoiceServiceStatus::default()
    };
    let plan = undo_plan(&spec(), &status, &deployments([5, 1, 5]));
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!(
        plan[0].step,
        Step::ZoneFailBack {
            zone: "az2".to_owned(),
            replicas: per_zone([3, 3, 3]),
            canary: false,
        }
    );
}
