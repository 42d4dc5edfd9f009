//! `kubectl invsvc` (the plugin binary `kubectl-invsvc`) against the local cluster and a real
//! operator: found by kubectl as a plugin, it shows a service the operator healed as a tree,
//! its audit trail (status history and Events merged), why the last decision was what it
//! was, follows changes with `--watch`, and pauses, resumes and refuses a fail-back of a
//! service that is not failed over. Does IO.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Output, Stdio},
    time::Duration,
};

use invoice_operator::api::{InvoiceService, Phase};
use invoice_operator_e2e::{
    OperatorProcess, apply_crash_loop_service, crash_and_wait_evicted, crd_and_namespace,
    deploy_invoice_api, eventually, ready_pods, workspace_binary,
};
use kube::{Api, ResourceExt as _};

/// Runs the plugin in `namespace` with `args`.
fn plugin(namespace: &str, args: &[&str]) -> Output {
    Command::new(workspace_binary("kubectl-invsvc"))
        .args(["-n", namespace])
        .args(args)
        .output()
        .expect("run kubectl-invsvc")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "kubectl-invsvc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_plugin_shows_explains_and_switches_a_healed_service() {
    let (client, namespace) = crd_and_namespace("e2e-plugin").await;
    let ns = namespace.name.clone();
    deploy_invoice_api(&client, &ns, 3).await;
    apply_crash_loop_service(
        &client,
        &ns,
        "cooldown: 30s, verifyWindow: 1m, ladder: [RestartPod]",
    )
    .await;
    let operator = OperatorProcess::start(&ns, &format!("{ns}-a"), &["--leader-election=false"]);
    let services: Api<InvoiceService> = Api::namespaced(client.clone(), &ns);
    let victim = ready_pods(&client, &ns, 3).await[0].clone();
    crash_and_wait_evicted(&client, &ns, &victim).await;
    eventually(Duration::from_secs(60), "the restart in status", || async {
        let service = services.get("invoice-api").await.ok()?;
        (!service.status?.history.is_empty()).then_some(())
    })
    .await;

    // kubectl finds the plugin on PATH and passes the arguments through.
    let bin_dir = workspace_binary("kubectl-invsvc")
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let table = Command::new("kubectl")
        .args(["invsvc", "get", "-n", &ns])
        .env("PATH", &path)
        .output()
        .expect("run kubectl (CLUSTER_BIN is on PATH under make test)");
    let table = stdout(&table);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("invoice-api") && table.contains("RestartPod ("),
        "{table}"
    );

    let tree = stdout(&plugin(&ns, &["get", "invoice-api"]));
    assert!(tree.starts_with(&format!("{ns}/invoice-api: ")), "{tree}");
    assert!(
        tree.contains(&format!("RestartPod pod/{victim} (Enforce")),
        "{tree}\n{}",
        operator.log()
    );
    let json: InvoiceService =
        serde_json::from_str(&stdout(&plugin(&ns, &["get", "invoice-api", "-o", "json"])))
            .expect("-o json is the InvoiceService");
    assert_eq!(json.name_any(), "invoice-api");

    // The audit trail: the restart from status, and the operator's Events, newest first.
    let history: serde_json::Value = serde_json::from_str(&stdout(&plugin(
        &ns,
        &["history", "invoice-api", "-o", "json"],
    )))
    .expect("history -o json");
    let entries = history.as_array().expect("a list");
    assert!(
        entries
            .iter()
            .any(|entry| entry["source"] == "status" && entry["what"] == "RestartPod"),
        "{history:#}"
    );
    assert!(
        entries.iter().any(|entry| entry["source"] == "event"),
        "{history:#}"
    );
    let times: Vec<&str> = entries
        .iter()
        .map(|entry| entry["at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] >= pair[1]), "{times:?}");

    let explanation: serde_json::Value = serde_json::from_str(&stdout(&plugin(
        &ns,
        &["explain", "invoice-api", "-o", "json"],
    )))
    .expect("explain -o json");
    assert!(
        explanation["lastAction"]
            .as_str()
            .is_some_and(|action| action.contains(&format!("RestartPod pod/{victim}"))),
        "{explanation:#}"
    );
    assert!(
        !explanation["evidence"].as_array().unwrap().is_empty(),
        "{explanation:#}"
    );

    // Not failed over: a fail-back is refused with the reason, and nothing is annotated.
    let refused = plugin(&ns, &["fail-back", "invoice-api"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not failed over"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // --watch prints the service again when it changes: pause it and see the phase follow.
    let mut watch = Command::new(workspace_binary("kubectl-invsvc"))
        .args(["-n", &ns, "get", "invoice-api", "--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the watch");
    let lines = BufReader::new(watch.stdout.take().expect("stdout"));
    let reader = std::thread::spawn(move || {
        lines
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains(": Paused (Paused)"))
    });
    stdout(&plugin(&ns, &["pause", "invoice-api"]));
    let paused = services.get("invoice-api").await.expect("service");
    assert_eq!(
        paused
            .annotations()
            .get("invoiceops.dev/paused")
            .map(String::as_str),
        Some("true")
    );
    eventually(Duration::from_secs(30), "the Paused phase", || async {
        let service = services.get("invoice-api").await.ok()?;
        (service.status?.phase == Some(Phase::Paused)).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "the watch to print Paused",
        || async { reader.is_finished().then_some(()) },
    )
    .await;
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(reader.join().expect("reader").is_some());

    stdout(&plugin(&ns, &["resume", "invoice-api"]));
    let resumed = services.get("invoice-api").await.expect("service");
    assert!(!resumed.annotations().contains_key("invoiceops.dev/paused"));
    drop(operator);
    namespace.delete().await;
}
