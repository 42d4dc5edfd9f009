//! The InvoiceService CRD on a real API server: it installs, every example is accepted, and
//! each CEL rule refuses a manifest that breaks it with a message naming the field.

use invoice_operator::api::InvoiceService;
use invoice_operator_e2e::crd_and_namespace;
use kube::{
    Api,
    api::{DynamicObject, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

fn examples() -> Vec<(String, Value)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).expect("examples/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable example");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).expect("valid YAML");
            if value["kind"] == "InvoiceService" {
                found.push((path.display().to_string(), value));
            }
        }
    }
    assert!(found.len() >= 2, "expected the examples, found {found:?}");
    found
}

fn full_example() -> Value {
    examples()
        .into_iter()
        .find(|(path, _)| path.ends_with("billing-api-three-zones.yaml"))
        .expect("three-zone example")
        .1
}

/// The API for raw InvoiceService objects, so that invalid ones can be sent at all.
fn raw_api(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("invoiceops.dev", "v1alpha1", "InvoiceService"),
        "invoiceservices",
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

async fn create(api: &Api<DynamicObject>, mut manifest: Value, name: &str) -> Result<(), String> {
    manifest["metadata"] = json!({"name": name});
    let object: DynamicObject = serde_json::from_value(manifest).expect("manifest is an object");
    api.create(&PostParams::default(), &object)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}

#[tokio::test]
async fn crd_installs_and_accepts_every_example() {
    let (client, namespace) = crd_and_namespace("crd-examples").await;
    let api = raw_api(&client, &namespace.name);
    for (index, (path, manifest)) in examples().into_iter().enumerate() {
        let name = format!("example-{index}");
        let created = create(&api, manifest, &name).await;
        assert!(created.is_ok(), "{path} was refused: {created:?}");
        // The stored object carries the server-side defaults and reads back as our type.
        let typed: Api<InvoiceService> = Api::namespaced(client.clone(), &namespace.name);
        let stored = typed.get(&name).await.expect("stored example reads back");
        assert_eq!(
            invoice_operator::api::validate(&stored.spec),
            Vec::new(),
            "{path}"
        );
    }
    let typed: Api<InvoiceService> = Api::namespaced(client.clone(), &namespace.name);
    let minimal = typed.get("example-1").await.expect("example-1 exists");
    assert_eq!(
        minimal.spec.remediation.budget.max_actions, 6,
        "defaults applied by the server"
    );
    namespace.delete().await;
}

/// One CEL or schema rule: how to break the full example, and what the refusal must name.
struct Case {
    rule: &'static str,
    break_manifest: fn(&mut Value),
    field: &'static str,
}

#[tokio::test]
async fn each_rule_refuses_a_breaking_manifest_and_names_the_field() {
    let cases = [
        Case {
            rule: "minReplicas <= maxReplicas",
            break_manifest: |m| m["spec"]["remediation"]["scale"]["minReplicas"] = json!(20),
            field: "spec.remediation.scale.minReplicas",
        },
        Case {
            rule: "objective below 100",
            break_manifest: |m| m["spec"]["slos"]["availability"]["objective"] = json!("100"),
            field: "spec.slos.availability.objective",
        },
        Case {
            rule: "objective above 0",
            break_manifest: |m| m["spec"]["slos"]["availability"]["objective"] = json!("0.0"),
            field: "spec.slos.availability.objective",
        },
        Case {
            rule: "at-risk share at most 1",
            break_manifest: |m| m["spec"]["slos"]["recovery"]["atRiskAfter"] = json!("1.5"),
            field: "spec.slos.recovery.atRiskAfter",
        },
        Case {
            rule: "RTO is a duration",
            break_manifest: |m| m["spec"]["slos"]["recovery"]["rto"] = json!("soon"),
            field: "spec.slos.recovery.rto",
        },
        Case {
            rule: "objective is a decimal",
            break_manifest: |m| m["spec"]["slos"]["availability"]["objective"] = json!("high"),
            field: "spec.slos.availability.objective",
        },
        Case {
            rule: "unique zone names",
            break_manifest: |m| m["spec"]["workload"]["deployments"][1]["zone"] = json!("az1"),
            field: "spec.workload.deployments",
        },
        Case {
            rule: "unique deployment names",
            break_manifest: |m| {
                m["spec"]["workload"]["deployments"][1]["name"] = json!("billing-api-az1")
            },
            field: "spec.workload.deployments",
        },
        Case {
            rule: "unique zones for a single deployment",
            break_manifest: |m| {
                m["spec"]["workload"] =
                    json!({"deployment": "billing-api", "zones": ["az1", "az2", "az1"]})
            },
            field: "spec.workload.zones",
        },
        Case {
            rule: "no failover by node affinity for a Rollout",
            break_manifest: |m| {
                m["spec"]["workload"] =
                    json!({"kind": "Rollout", "deployment": "billing-api", "zones": ["az1", "az2"]})
            },
            field: "spec.workload.zones",
        },
        Case {
            rule: "workload kind from the known set",
            break_manifest: |m| m["spec"]["workload"]["kind"] = json!("StatefulSet"),
            field: "spec.workload.kind",
        },
        Case {
            rule: "exactly one workload form",
            break_manifest: |m| m["spec"]["workload"]["deployment"] = json!("billing-api"),
            field: "spec.workload",
        },
        Case {
            rule: "ladder rung from the known set",
            break_manifest: |m| {
                m["spec"]["remediation"]["ladder"] = json!(["RestartPod", "RebootCluster"])
            },
            field: "spec.remediation.ladder",
        },
        Case {
            rule: "ladder without duplicates",
            break_manifest: |m| {
                m["spec"]["remediation"]["ladder"] = json!(["RestartPod", "ScaleOut", "RestartPod"])
            },
            field: "spec.remediation.ladder",
        },
        Case {
            rule: "failover only with two zones",
            break_manifest: |m| {
                m["spec"]["workload"]["deployments"] =
                    json!([{"name": "billing-api", "zone": "az1"}])
            },
            field: "spec.remediation.ladder",
        },
        Case {
            rule: "read-only rung needs a switch",
            break_manifest: |m| {
                m["spec"]["remediation"]
                    .as_object_mut()
                    .expect("remediation object")
                    .remove("readOnly");
            },
            field: "spec.remediation.ladder",
        },
        Case {
            rule: "well-formed duration",
            break_manifest: |m| m["spec"]["remediation"]["cooldown"] = json!("2 minutes"),
            field: "spec.remediation.cooldown",
        },
        Case {
            rule: "well-formed window duration",
            break_manifest: |m| m["spec"]["slos"]["availability"]["window"] = json!("1.5d"),
            field: "spec.slos.availability.window",
        },
        Case {
            rule: "ratio at most 1",
            break_manifest: |m| {
                m["spec"]["remediation"]["restartPod"]["errorRatioAbove"] = json!("1.5")
            },
            field: "spec.remediation.restartPod.errorRatioAbove",
        },
        Case {
            rule: "read-only hysteresis",
            break_manifest: |m| {
                m["spec"]["remediation"]["readOnly"]["exitWhen"]["dbPoolUtilizationBelow"] =
                    json!("0.99")
            },
            field: "spec.remediation.readOnly.exitWhen.dbPoolUtilizationBelow",
        },
        Case {
            rule: "maxUnhealthyPods percentage",
            break_manifest: |m| m["spec"]["remediation"]["maxUnhealthyPods"] = json!("140%"),
            field: "spec.remediation.maxUnhealthyPods",
        },
        Case {
            rule: "budget bounded by history",
            break_manifest: |m| m["spec"]["remediation"]["budget"]["maxActions"] = json!(50),
            field: "spec.remediation.budget.maxActions",
        },
        Case {
            rule: "Enforce needs an action budget of at least 1",
            break_manifest: |m| m["spec"]["remediation"]["budget"]["maxActions"] = json!(0),
            field: "spec.remediation.budget.maxActions",
        },
        Case {
            rule: "Enforce, by default, needs an action budget of at least 1",
            break_manifest: |m| {
                let remediation = m["spec"]["remediation"]
                    .as_object_mut()
                    .expect("remediation");
                remediation.remove("mode");
                remediation["budget"] = json!({"maxActions": 0});
            },
            field: "spec.remediation.budget.maxActions",
        },
        Case {
            rule: "blackout schedule has five fields",
            break_manifest: |m| {
                m["spec"]["remediation"]["blackoutWindows"][0]["schedule"] = json!("0 18 L *")
            },
            field: "spec.remediation.blackoutWindows[0].schedule",
        },
    ];

    let (client, namespace) = crd_and_namespace("crd-rules").await;
    let api = raw_api(&client, &namespace.name);
    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let mut manifest = full_example();
        (case.break_manifest)(&mut manifest);
        match create(&api, manifest, &format!("rule-{index}")).await {
            Ok(()) => failures.push(format!("{}: accepted", case.rule)),
            Err(message) if !message.contains(case.field) => failures.push(format!(
                "{}: message does not name {}: {message}",
                case.rule, case.field
            )),
            Err(message) => println!("refused as expected ({}): {message}", case.rule),
        }
    }
    namespace.delete().await;
    assert!(
        failures.is_empty(),
        "rules not enforced as expected:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn an_action_budget_of_zero_is_accepted_in_dry_run() {
    let (client, namespace) = crd_and_namespace("crd-budget").await;
    let api = raw_api(&client, &namespace.name);
    let mut manifest = full_example();
    manifest["spec"]["remediation"]["mode"] = json!("DryRun");
    manifest["spec"]["remediation"]["budget"]["maxActions"] = json!(0);
    let created = create(&api, manifest, "dry-run-no-budget").await;
    namespace.delete().await;
    assert!(
        created.is_ok(),
        "DryRun with maxActions 0 was refused: {created:?}"
    );
}
