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
        replicas_set_at: None,
        update: None,
        excluded_zones: Default::default(),
        affinity_set_by: None,
        autoscaler: None,
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
            reverted_after: None,
        }]
    );
    let mut adopted = status;
    adopt(&mut adopted, &changes, now);
    // Its only Deployment left the baseline: nothing is left to scale in.
    assert_eq!(adopted.scaled_out, None);
    assert!(describe(&changes[0]).contains("scaled to 6 by kubectl"));
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
            detect(&spec(), &status, &deployments, None, None, later).is_empty(),
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
    let by_hand = FieldSetter {
        manager: Some("kubectl-edit".to_owned()),
        at: Some(start() + 50.seconds()),
    };
    assert!(detect(&spec(), &status, &[], Some("read-only"), None, now).is_empty());
    let changes = detect(
        &spec(),
        &status,
        &[],
        Some("read-write"),
        Some(&by_hand),
        now,
    );
    assert_eq!(
        changes,
        [ForeignChange::ModeSwitched {
            value: "read-write".to_owned(),
            manager: Some("kubectl-edit".to_owned()),
            reverted_after: None,
        }]
    );
    let mut adopted = status;
    adopt(&mut adopted, &changes, now);
    assert_eq!(adopted.read_only, None);
    assert!(adopted.held_since.contains_key(hands_off::READ_ONLY));
    assert!(describe(&changes[0]).contains("by kubectl-edit"));
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
    assert!(detect(&spec(), &status, &drained, None, None, now).is_empty());
    let restored = [
        deployment("az1", 5, FIELD_MANAGER),
        deployment("az2", 2, "kubectl"),
        deployment("az3", 5, FIELD_MANAGER),
    ];
    let changes = detect(&spec(), &status, &restored, None, None, now);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let mut adopted = status;
    adopt(&mut adopted, &changes, now);
    assert_eq!(adopted.failover, None);
    assert!(adopted.held_since.contains_key(&hands_off::zone("az2")));
}

#[test]
fn an_autoscaler_floor_set_back_under_a_scale_out_is_adopted_and_a_quick_revert_is_a_tug_of_war() {
    // ScaleOut raised the floor of az1's autoscaler from 2 (remembered on it) to 5.
    let status = scaled_out();
    let now = start() + 1.minutes();
    let with_floor = |floor: i32, manager: &str, after: jiff::Span| DeploymentState {
        autoscaler: Some(crate::signals::AutoscalerFloor {
            name: "billing-api-az1".to_owned(),
            min_replicas: floor,
            set_by: Some(FieldSetter {
                manager: Some(manager.to_owned()),
                at: Some(start() + after),
            }),
            before: Some(2),
        }),
        // The autoscaler moves the replicas: its manager is the controller manager's.
        ..deployment("az1", 4, AUTOSCALER_MANAGER)
    };
    // Our own floor, and the autoscaler scaling within it: nothing foreign.
    let ours = [with_floor(5, FIELD_MANAGER, 0.seconds())];
    assert!(detect(&spec(), &status, &ours, None, None, now).is_empty());
    // Argo CD put Git's floor (2) back a second after the operator's write.
    let reverted = [with_floor(2, "argocd-controller", 1.seconds())];
    let changes = detect(&spec(), &status, &reverted, None, None, now);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].reverted_after(), Some(Duration::from_secs(1)));
    assert_eq!(changes[0].lever(), contested::replicas("billing-api-az1"));
    let note = describe(&changes[0]);
    assert!(
        note.contains(
            "argocd-controller set the floor of horizontalpodautoscaler/billing-api-az1 back to 2"
        ),
        "{note}"
    );
    let mut adopted = status.clone();
    adopt(&mut adopted, &changes, now);
    assert_eq!(adopted.scaled_out, None, "the scale-out is no longer held");
    assert!(contested::holds(
        &adopted.held_since,
        &contested::replicas("billing-api-az1")
    ));
    // A person lowering the floor to 4 later: adopted, not a tug of war.
    let by_hand = [with_floor(4, "kubectl-edit", 40.seconds())];
    let changes = detect(&spec(), &status, &by_hand, None, None, now);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].reverted_after(), None);
    assert!(describe(&changes[0]).contains("was set to 4 by kubectl-edit"));
}

#[test]
fn a_single_deployment_s_zone_exclusion_removed_by_another_manager_is_adopted() {
    let mut spec = spec();
    spec.workload.deployments = None;
    spec.workload.deployment = Some("billing-api".to_owned());
    spec.workload.zones = Some(vec!["az1".into(), "az2".into(), "az3".into()]);
    let status = InvoiceServiceStatus {
        failover: Some(FailoverState {
            zone: "az2".to_owned(),
            since: Time(start()),
            replicas_before: BTreeMap::new(),
            canary: None,
            waiting: None,
        }),
        ..InvoiceServiceStatus::default()
    };
    let now = start() + 1.minutes();
    let spread = |excluded: &[&str], manager: &str, after: jiff::Span| DeploymentState {
        name: "billing-api".to_owned(),
        zone: None,
        excluded_zones: excluded.iter().map(|zone| (*zone).to_owned()).collect(),
        affinity_set_by: Some(FieldSetter {
            manager: Some(manager.to_owned()),
            at: Some(start() + after),
        }),
        ..deployment("az1", 9, FIELD_MANAGER)
    };
    // Still steered out of az2 (whoever wrote the affinity last): nothing to adopt.
    let held = [spread(&["az2"], "kustomize-controller", 2.seconds())];
    assert!(detect(&spec, &status, &held, None, None, now).is_empty());
    // The operator's own affinity without the exclusion: its fail-back, not a foreign change.
    let ours = [spread(&[], FIELD_MANAGER, 50.seconds())];
    assert!(detect(&spec, &status, &ours, None, None, now).is_empty());
    // Flux applied the template's affinity from Git 2 s after the failover: a tug of war.
    let reverted = [spread(&[], "kustomize-controller", 2.seconds())];
    let changes = detect(&spec, &status, &reverted, None, None, now);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].reverted_after(), Some(Duration::from_secs(2)));
    assert_eq!(changes[0].lever(), contested::zone("az2"));
    let note = describe(&changes[0]);
    assert!(
        note.contains("kustomize-controller set the node affinity of deployment/billing-api back"),
        "{note}"
    );
    let mut adopted = status.clone();
    adopt(&mut adopted, &changes, now);
    assert_eq!(adopted.failover, None);
    assert!(contested::holds(
        &adopted.held_since,
        &contested::zone("az2")
    ));
    // A person's edit a minute later: adopted, held until healthy, not a tug of war.
    let by_hand = [spread(&["az9"], "kubectl-edit", 55.seconds())];
    let changes = detect(&spec, &status, &by_hand, None, None, now);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].reverted_after(), None);
    assert!(describe(&changes[0]).contains("changed by kubectl-edit"));
    let mut adopted = status;
    adopt(&mut adopted, &changes, now);
    assert!(adopted.held_since.contains_key(&hands_off::zone("az2")));
}

/// A Deployment of zone az1 at `replicas`, last set by `manager` `after` the scale-out.
fn set_by(replicas: i32, manager: &str, after: jiff::Span) -> DeploymentState {
    DeploymentState {
        replicas_set_at: Some(start() + after),
        ..deployment("az1", replicas, manager)
    }
}

#[test]
fn a_controller_setting_the_count_back_within_an_interval_is_a_tug_of_war() {
    let status = scaled_out();
    let now = start() + 1.minutes();
    // Argo CD's self-heal put the 3 from Git back 2 s after the operator's 5.
    let changes = detect(
        &spec(),
        &status,
        &[set_by(3, "argocd-controller", 2.seconds())],
        None,
        None,
        now,
    );
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].reverted_after(), Some(Duration::from_secs(2)));
    assert_eq!(changes[0].manager(), Some("argocd-controller"));
    let mut adopted = status;
    adopt(&mut adopted, &changes, now);
    let key = contested::key(&contested::replicas("billing-api-az1"), "argocd-controller");
    assert_eq!(adopted.held_since.get(&key), Some(&Time(now)));
    assert!(contested::holds(
        &adopted.held_since,
        &contested::replicas("billing-api-az1")
    ));
    assert_eq!(
        contested::parse(&key),
        Some(("Replicas/billing-api-az1", "argocd-controller"))
    );
    let note = describe(&changes[0]);
    assert!(
        note.contains("argocd-controller set deployment/billing-api-az1 back to 3"),
        "{note}"
    );
    assert!(note.contains("tug of war"), "{note}");
    assert!(note.contains("ignoreDifferences"), "{note}");
}

#[test]
fn a_revert_in_the_second_of_the_write_counts_though_managed_fields_keep_whole_seconds() {
    let status = scaled_out();
    let now = start() + 1.minutes();
    // The operator wrote at 10:00:00.700 (status keeps the fraction until it round-trips),
    // Argo CD at 10:00:00.900, recorded as 10:00:00.
    let mut written = status.clone();
    if let Some(scaled) = &mut written.scaled_out {
        scaled.written_at = Some(Time(start() + 700.milliseconds()));
    }
    let changes = detect(
        &spec(),
        &written,
        &[set_by(3, "argocd-controller", 0.seconds())],
        None,
        None,
        now,
    );
    assert_eq!(changes[0].reverted_after(), Some(Duration::ZERO));
    // A change recorded two seconds before the write is not an answer to it.
    let changes = detect(
        &spec(),
        &status,
        &[set_by(3, "argocd-controller", (-2).seconds())],
        None,
        None,
        now,
    );
    assert_eq!(changes[0].reverted_after(), None);
}

#[test]
fn a_hand_edit_later_or_to_another_value_is_not_a_tug_of_war() {
    let status = scaled_out();
    let now = start() + 2.minutes();
    for (why, deployment) in [
        (
            "back to 3, but a minute later",
            set_by(3, "kubectl", 60.seconds()),
        ),
        (
            "within the interval, but to 6",
            set_by(6, "argocd-controller", 2.seconds()),
        ),
        (
            "no time in the managed fields",
            deployment("az1", 3, "kubectl"),
        ),
    ] {
        let changes = detect(&spec(), &status, &[deployment], None, None, now);
        assert_eq!(changes.len(), 1, "{why}: {changes:?}");
        assert_eq!(changes[0].reverted_after(), None, "{why}");
        let mut adopted = status.clone();
        adopt(&mut adopted, &changes, now);
        assert!(
            !adopted
                .held_since
                .keys()
                .any(|key| key.starts_with(contested::PREFIX)),
            "{why}"
        );
    }
}

#[test]
fn the_mode_key_and_a_drained_zone_set_back_at_once_are_tugs_of_war_too() {
    let read_only = InvoiceServiceStatus {
        read_only: Some(ReadOnlyState {
            since: Time(start()),
        }),
        ..InvoiceServiceStatus::default()
    };
    let flux = FieldSetter {
        manager: Some("kustomize-controller".to_owned()),
        at: Some(start() + 4.seconds()),
    };
    let now = start() + 1.minutes();
    let changes = detect(
        &spec(),
        &read_only,
        &[],
        Some("read-write"),
        Some(&flux),
        now,
    );
    assert_eq!(changes[0].reverted_after(), Some(Duration::from_secs(4)));
    let mut adopted = read_only;
    adopt(&mut adopted, &changes, now);
    assert!(contested::holds(&adopted.held_since, contested::READ_ONLY));

    let failed_over = InvoiceServiceStatus {
        failover: Some(FailoverState {
            zone: "az2".to_owned(),
            since: Time(start()),
            replicas_before: BTreeMap::from([("billing-api-az2".to_owned(), 3)]),
            canary: None,
            waiting: None,
        }),
        ..InvoiceServiceStatus::default()
    };
    let restored = DeploymentState {
        replicas_set_at: Some(start() + 3.seconds()),
        update: None,
        excluded_zones: Default::default(),
        affinity_set_by: None,
        autoscaler: None,
        ..deployment("az2", 3, "argocd-controller")
    };
    let changes = detect(&spec(), &failed_over, &[restored], None, None, now);
    assert_eq!(changes[0].reverted_after(), Some(Duration::from_secs(3)));
    assert_eq!(changes[0].lever(), contested::zone("az2"));
}

#[test]
fn a_contested_lever_is_released_after_its_hold() {
    let mut held = BTreeMap::from([
        (
            contested::key(contested::READ_ONLY, "argocd-controller"),
            Time(start()),
        ),
        (hands_off::READ_ONLY.to_owned(), Time(start())),
    ]);
    release_contested(&mut held, start() + 59.minutes());
    assert_eq!(held.len(), 2);
    release_contested(&mut held, start() + 60.minutes());
    assert_eq!(
        held.keys().collect::<Vec<_>>(),
        [hands_off::READ_ONLY],
        "only the contested key goes"
    );
}
