//! Foreign changes: what is believed, what is left alone, and what adopting one does.

use std::collections::BTreeMap;

use jiff::{Timestamp, ToSpan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::{FailoverState, InvoiceService, ReadOnlyState, ScaledOutState};

fn spec() -> InvoiceServiceSpec {
    let text = include_str!("../../../examples/billing-api-three-zones.yaml");
    let mut spec = serde_yaml::from_str::<InvoiceService>(text).unwrap().spec;
    spec.signals.interval = "15s".parse().unwrap();
    spec
}

fn start() -> Timestamp {
    "2026-12-02T10:00:00Z".parse().unwrap()
}

fn deployment(zone: &str, replicas: i32, manager: &str) -> DeploymentState {
    DeploymentState {
        name: format!("billing-api-{zone}"),
        zone: Some(zone.to_owned()),
        replicas,
        ready_replicas: replicas,
        exists: true,
        replicas_manager: Some(manager.to_owned()),
    }
}

/// Scaled out 3 -> 5 in az1 at `start()`.
fn scaled_out() -> InvoiceServiceStatus {
    InvoiceServiceStatus {
        scaled_out: Some(ScaledOutState {
            baseline: BTreeMap::from([("billing-api-az1".to_owned(), 3)]),
            since: Time(start()),
            written: BTreeMap::from([("billing-api-az1".to_owned(), 5)]),
            written_at: Some(Time(start())),
            request_rate: None,
        }),
        ..InvoiceServiceStatus::default()
    }
}

#[test]
fn a_person_scaling_a_scaled_out_deployment_is_adopted_not_reverted() {
    let status = scaled_out();
    let now = start() + 1.minutes();
    let changes = detect(
        &spec(),
        &status,
        &[deployment("az1", 6, "kubectl")],
        None,
        now,
    );
    assert_eq!(
        changes,
        [ForeignChange::Replicas {
            deployment: "billing-api-az1".to_owned(),
            ours: 5,
            now: 6,
            manager: Some("kubectl".to_owned()),
        }]
    );
    let mut adopted = status;
    adopt(&mut adopted, &changes, now);
    // Its only Deployment left the baseline: nothing is left to scale in.
    assert_eq!(adopted.scaled_out, None);
    assert!(describe(&changes[0], None).contains("scaled to 6 by kubectl"));
}

#[test]
fn our_own_count_an_autoscaler_and_a_lagging_cache_are_not_foreign() {
    let status = scaled_out();
    let later = start() + 1.minutes();
    for (why, replicas, manager) in [
        ("at the count the operator set", 5, "kubectl"),
        (
            "set by the operator (the cache shows our own write)",
            7,
            FIELD_MANAGER,
        ),
        (
            "an autoscaler above the floor the operator raised",
            8,
            AUTOSCALER_MANAGER,
        ),
    ] {
        let deployments = [deployment("az1", replicas, manager)];
        assert!(
            detect(&spec(), &status, &deployments, None, later).is_empty(),
            "{why}"
        );
    }
    // Right after the write the cache may still show the count from before it.
    let soon = start() + 5.seconds();
    assert!(
        detect(
            &spec(),
            &status,
            &[deployment("az1", 3, "e2e-test")],
            None,
            soon
        )
        .is_empty()
    );
}

#[test]
fn switching_read_only_off_by_hand_is_adopted_and_read_only_is_not_entered_again() {
    let status = InvoiceServiceStatus {
        read_only: Some(ReadOnlyState {
            since: Time(start()),
        }),
        ..InvoiceServiceStatus::default()
    };
    let now = start() + 1.minutes();
    assert!(detect(&spec(), &status, &[], Some("read-only"), now).is_empty());
    let changes = detect(&spec(), &status, &[], Some("read-write"), now);
    assert_eq!(
        changes,
        [ForeignChange::ModeSwitched {
            value: "read-write".to_owned()
        }]
    );
    let mut adopted = status;
    adopt(&mut adopted, &changes, now);
    assert_eq!(adopted.read_only, None);
    assert!(adopted.held_since.contains_key(hands_off::READ_ONLY));
    assert!(describe(&changes[0], Some("kubectl-edit")).contains("by kubectl-edit"));
}

#[test]
fn a_drained_zone_scaled_up_by_hand_is_no_longer_held() {
    let status = InvoiceServiceStatus {
        failover: Some(FailoverState {
            zone: "az2".to_owned(),
            since: Time(start()),
            replicas_before: BTreeMap::from([
                ("billing-api-az1".to_owned(), 3),
                ("billing-api-az2".to_owned(), 3),
                ("billing-api-az3".to_owned(), 3),
            ]),
            canary: None,
            waiting: None,
        }),
        ..InvoiceServiceStatus::default()
    };
    let now = start() + 1.minutes();
    let drained = [
        deployment("az1", 5, FIELD_MANAGER),
        deployment("az2", 0, FIELD_MANAGER),
        deployment("az3", 5, FIELD_MANAGER),
    ];
    assert!(detect(&spec(), &status, &drained, None, now).is_empty());
    let restored = [
        deployment("az1", 5, FIELD_MANAGER),
        deployment("az2", 2, "kubectl"),
        deployment("az3", 5, FIELD_MANAGER),
    ];
    let changes = detect(&spec(), &status, &restored, None, now);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let mut adopted = status;
    adopt(&mut adopted, &changes, now);
    assert_eq!(adopted.failover, None);
    assert!(adopted.held_since.contains_key(&hands_off::zone("az2")));
}
