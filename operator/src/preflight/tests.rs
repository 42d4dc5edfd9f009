//! Pre-flight judgements on plain facts, and how a refusal is reported.

use serde_json::{Value, json};

use super::*;
use crate::{
    api::{InvoiceServiceStatus, Phase, condition_types},
    report::report_refused,
};

fn spec(workload: Value, remediation: Value) -> InvoiceServiceSpec {
    serde_json::from_value(json!({
        "workload": workload,
        "slos": {"availability": {"objective": "99.9"}},
        "remediation": remediation,
    }))
    .unwrap()
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp::from_second(1_750_000_000 + seconds).unwrap())
}

fn service<'a>(name: &'a str, created: Option<Timestamp>) -> Claim<'a> {
    Claim {
        name,
        created,
        deployments: Vec::new(),
    }
}

fn set<'a>(values: &[&'a str]) -> Option<BTreeSet<&'a str>> {
    Some(values.iter().copied().collect())
}

/// A cluster with three zones and the given Deployments, claimed by nobody else.
fn cluster<'a>(deployments: &[&'a str]) -> ClusterFacts<'a> {
    ClusterFacts {
        existing_deployments: set(deployments),
        node_zones: set(&["az1", "az2", "az3"]),
        others: Vec::new(),
        kind_not_served: false,
    }
}

fn three_zones() -> InvoiceServiceSpec {
    spec(
        json!({"deployments": [
            {"name": "billing-api-az1", "zone": "az1"},
            {"name": "billing-api-az2", "zone": "az2"},
            {"name": "billing-api-az3", "zone": "az3"},
        ]}),
        json!({}),
    )
}

fn fields(refusal: &Refusal) -> Vec<&str> {
    refusal
        .problems
        .iter()
        .map(|problem| problem.field.as_str())
        .collect()
}

#[test]
fn a_service_whose_deployments_and_zones_exist_and_that_nobody_else_claims_is_not_refused() {
    let facts = cluster(&["billing-api-az1", "billing-api-az2", "billing-api-az3"]);
    assert_eq!(
        check(&service("billing-api", at(0)), &three_zones(), &facts),
        None
    );
}

#[test]
fn a_missing_deployment_is_workload_not_found_naming_its_field() {
    let facts = cluster(&["billing-api-az1", "billing-api-az3"]);
    let refusal = check(&service("billing-api", at(0)), &three_zones(), &facts).unwrap();
    assert_eq!(refusal.reason, "WorkloadNotFound");
    assert_eq!(fields(&refusal), ["spec.workload.deployments[1].name"]);
    assert!(
        refusal.problems[0].message.contains("\"billing-api-az2\""),
        "{refusal:?}"
    );
}

#[test]
fn a_missing_rollout_or_argo_rollouts_not_installed_is_workload_not_found_naming_the_kind() {
    let mut spec = three_zones();
    spec.workload.kind = crate::api::WorkloadKind::Rollout;
    let facts = cluster(&["billing-api-az1", "billing-api-az3"]);
    let refusal = check(&service("billing-api", at(0)), &spec, &facts).unwrap();
    assert_eq!(refusal.reason, "WorkloadNotFound");
    assert_eq!(
        refusal.problems[0].message,
        "Rollout \"billing-api-az2\" does not exist in the namespace"
    );
    // Without Argo Rollouts every Rollout is missing, and the message says why.
    let facts = ClusterFacts {
        kind_not_served: true,
        ..cluster(&[])
    };
    let refusal = check(&service("billing-api", at(0)), &spec, &facts).unwrap();
    assert_eq!(refusal.reason, "WorkloadNotFound");
    assert_eq!(refusal.problems.len(), 3);
    assert!(
        refusal.problems[0]
            .message
            .contains("the API server does not serve rollouts.argoproj.io (install Argo Rollouts"),
        "{refusal:?}"
    );
}

#[test]
fn zones_no_node_carries_are_zone_not_found_for_a_single_deployment() {
    // The spec: accepted, Ready=True, and then it could never fail over.
    let spec = spec(
        json!({"deployment": "invoice-api", "zones": ["az8", "az9"]}),
        json!({"ladder": ["ZoneFailover"]}),
    );
    let refusal = check(
        &service("invoice-api", at(0)),
        &spec,
        &cluster(&["invoice-api"]),
    )
    .unwrap();
    assert_eq!(refusal.reason, "ZoneNotFound");
    assert_eq!(
        fields(&refusal),
        ["spec.workload.zones[0]", "spec.workload.zones[1]"]
    );
    let message = refusal.problems[0].to_string();
    assert!(
        message.contains("no node carries topology.kubernetes.io/zone=az8")
            && message.contains("az1, az2, az3"),
        "{message}"
    );
}

#[test]
fn the_zone_of_a_zonal_deployment_no_node_carries_is_zone_not_found() {
    let mut spec = three_zones();
    spec.workload.deployments.as_mut().unwrap()[2].zone = "az7".into();
    let facts = cluster(&["billing-api-az1", "billing-api-az2", "billing-api-az3"]);
    let refusal = check(&service("billing-api", at(0)), &spec, &facts).unwrap();
    assert_eq!(refusal.reason, "ZoneNotFound");
    assert_eq!(fields(&refusal), ["spec.workload.deployments[2].zone"]);
}

#[test]
fn zones_are_read_from_the_zone_label_the_spec_names() {
    let spec = spec(
        json!({"deployment": "invoice-api", "zones": ["rack-a", "rack-b"], "zoneLabel": "example.com/rack"}),
        json!({}),
    );
    let facts = ClusterFacts {
        node_zones: set(&["rack-a"]),
        ..cluster(&["invoice-api"])
    };
    let refusal = check(&service("invoice-api", at(0)), &spec, &facts).unwrap();
    assert_eq!(fields(&refusal), ["spec.workload.zones[1]"]);
    assert!(
        refusal.problems[0]
            .message
            .contains("example.com/rack=rack-b"),
        "{refusal:?}"
    );
}

#[test]
fn nothing_is_judged_on_caches_that_cannot_tell_yet() {
    let spec = spec(
        json!({"deployment": "invoice-api", "zones": ["az8", "az9"]}),
        json!({}),
    );
    assert_eq!(
        check(
            &service("invoice-api", at(0)),
            &spec,
            &ClusterFacts::default()
        ),
        None
    );
}

#[test]
fn the_younger_of_two_services_claiming_one_deployment_is_refused_naming_the_older() {
    let spec = spec(json!({"deployment": "invoice-api"}), json!({}));
    let first = Claim {
        deployments: vec!["invoice-api"],
        ..service("invoice-api", at(0))
    };
    let second = Claim {
        deployments: vec!["invoice-api"],
        ..service("invoice-api-copy", at(30))
    };
    let facts_of_second = ClusterFacts {
        others: vec![first.clone()],
        ..cluster(&["invoice-api"])
    };
    let refusal = check(&second, &spec, &facts_of_second).unwrap();
    assert_eq!(refusal.reason, "Conflict");
    assert_eq!(fields(&refusal), ["spec.workload.deployment"]);
    assert!(
        refusal.problems[0]
            .message
            .contains("already managed by InvoiceService \"invoice-api\""),
        "{refusal:?}"
    );
    // The first claim stands: the older service is not refused.
    let facts_of_first = ClusterFacts {
        others: vec![second],
        ..cluster(&["invoice-api"])
    };
    assert_eq!(check(&first, &spec, &facts_of_first), None);
}

#[test]
fn the_oldest_claim_is_named_when_several_services_came_first() {
    let spec = spec(json!({"deployment": "invoice-api"}), json!({}));
    let claimant = |name, created| Claim {
        deployments: vec!["invoice-api"],
        ..service(name, created)
    };
    let facts = ClusterFacts {
        others: vec![claimant("middle", at(10)), claimant("oldest", at(5))],
        ..cluster(&["invoice-api"])
    };
    let refusal = check(&service("youngest", at(20)), &spec, &facts).unwrap();
    assert!(
        refusal.problems[0].message.contains("\"oldest\""),
        "{refusal:?}"
    );
}

#[test]
fn services_created_in_the_same_second_are_ordered_by_name() {
    let spec = spec(json!({"deployment": "invoice-api"}), json!({}));
    let claimant = |name| Claim {
        deployments: vec!["invoice-api"],
        ..service(name, at(0))
    };
    let facts_with = |other| ClusterFacts {
        others: vec![other],
        ..cluster(&["invoice-api"])
    };
    assert_eq!(
        check(&claimant("a"), &spec, &facts_with(claimant("b"))),
        None
    );
    let refusal = check(&claimant("b"), &spec, &facts_with(claimant("a"))).unwrap();
    assert_eq!(refusal.reason, "Conflict");
}

#[test]
fn services_sharing_no_deployment_do_not_conflict() {
    let facts = ClusterFacts {
        others: vec![Claim {
            deployments: vec!["billing-api-az4", "invoice-api"],
            ..service("older", at(-60))
        }],
        ..cluster(&["billing-api-az1", "billing-api-az2", "billing-api-az3"])
    };
    assert_eq!(
        check(&service("billing-api", at(0)), &three_zones(), &facts),
        None
    );
}

#[test]
fn a_conflict_outranks_the_other_problems_and_every_problem_is_listed() {
    let mut spec = three_zones();
    spec.workload.deployments.as_mut().unwrap()[0].zone = "az9".into();
    let facts = ClusterFacts {
        existing_deployments: set(&["billing-api-az1", "billing-api-az2"]),
        others: vec![Claim {
            deployments: vec!["billing-api-az2"],
            ..service("older", at(-60))
        }],
        ..cluster(&[])
    };
    let refusal = check(&service("billing-api", at(0)), &spec, &facts).unwrap();
    assert_eq!(refusal.reason, "Conflict");
    assert_eq!(
        fields(&refusal),
        [
            "spec.workload.deployments[1].name",
            "spec.workload.deployments[2].name",
            "spec.workload.deployments[0].zone",
        ]
    );
}

#[test]
fn a_refusal_is_reported_not_ready_with_one_warning_event_until_it_changes() {
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    let spec = spec(json!({"deployment": "invoice-api"}), json!({}));
    let facts = ClusterFacts {
        others: vec![Claim {
            deployments: vec!["invoice-api"],
            ..service("first", at(-60))
        }],
        ..cluster(&["invoice-api"])
    };
    let refusal = check(&service("second", at(0)), &spec, &facts).unwrap();

    let (status, event) = report_refused(&InvoiceServiceStatus::default(), &refusal, Some(1), now);
    let ready = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == condition_types::READY)
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Conflict")
    );
    assert!(
        ready.message.starts_with("spec.workload.deployment: ")
            && ready.message.contains("\"first\""),
        "{}",
        ready.message
    );
    assert_eq!(status.phase, Some(Phase::Unknown));
    let event = event.expect("a Warning Event on the transition");
    assert!(event.warning);
    assert_eq!(event.reason, "Conflict");
    assert!(event.note.contains("\"first\""), "{}", event.note);

    // The next interval finds the same conflict: no write, no second Event.
    let later = Timestamp::from_second(1_750_000_015).unwrap();
    let (again, event) = report_refused(&status, &refusal, Some(1), later);
    assert_eq!(again, status);
    assert_eq!(event, None);

    // Another reason is news.
    let missing = check(
        &service("second", at(0)),
        &spec,
        &ClusterFacts {
            existing_deployments: set(&[]),
            ..ClusterFacts::default()
        },
    )
    .unwrap();
    let (_, event) = report_refused(&status, &missing, Some(1), later);
    assert_eq!(event.map(|event| event.reason), Some("WorkloadNotFound"));
}
