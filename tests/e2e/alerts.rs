//! Every alert of `invoice-operator rules --alerts` (the chart's alerting PrometheusRule)
//! fires on the real Prometheus of the local cluster, scraping a real operator process driven
//! into each state: a paused service burning its budget at page level, a service whose ladder
//! is exhausted, an operator whose Prometheus hangs (queries failing, cycles overrunning,
//! signals untrusted), one that cannot get the leader Lease, and no operator at all. The
//! rules are loaded as printed, except their `for:` durations, set to 0s so that each alert
//! fires at the first evaluation that sees its condition (their expressions are what is under
//! test; `promtool test rules` in the unit tests covers the `for:` timing). Needs the local
//! cluster (`make test`). Does IO.

use std::{
    collections::{BTreeSet, HashMap},
    net::TcpListener,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use invoice_operator_e2e::{
    FleetSimProcess, OperatorProcess, ScrapeTarget, TestNamespace, apply_deployment,
    apply_invoice_service, apply_yaml, crd_and_namespace, deploy_invoice_api, eventually,
    http_request, operator_binary, random_suffix, ready_pods,
};
use prometheus_http_query::response::Data;
use serde_json::{Value, json};

/// Longest wait for one alert: the state has to show in the operator's metrics (a few
/// evaluations, cooldowns and verify windows for the ladder), then one scrape and one rule
/// evaluation (5 s each in the local cluster).
const ALERT_TIMEOUT: Duration = Duration::from_secs(240);

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .unwrap_or_else(|| panic!("{name} is not set: run the e2e tests with `make test`"))
        .into()
}

fn prometheus_address() -> String {
    std::env::var("PROMETHEUS_URL")
        .expect("PROMETHEUS_URL is set (make test)")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// The alerting rules for the operator scraped as `job`, loaded into the cluster's
/// Prometheus; removed (and Prometheus reloaded) when dropped.
struct AlertRules {
    path: PathBuf,
}

impl AlertRules {
    async fn load(job: &str) -> Self {
        let output = Command::new(operator_binary())
            .args(["rules", "--alerts", "--operator-job", job])
            .output()
            .expect("run invoice-operator rules --alerts");
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout).expect("UTF-8");
        let fired_at_once: String = text
            .lines()
            .map(|line| match line.trim_start().strip_prefix("for: ") {
                Some(_) => format!("{}for: 0s", &line[..line.len() - line.trim_start().len()]),
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(fired_at_once.contains("for: 0s"), "{fired_at_once}");
        let path = env_path("PROMETHEUS_RULES_DIR").join(format!("{job}.yml"));
        std::fs::write(&path, fired_at_once).expect("write the rule file");
        reload();
        let rules = Self { path };
        eventually(
            Duration::from_secs(30),
            "the alert rules loaded",
            || async {
                let (_, body) =
                    http_request(&prometheus_address(), "GET", "/api/v1/rules?type=alert", "");
                body.contains(&format!("/{job}.yml")).then_some(())
            },
        )
        .await;
        rules
    }
}

impl Drop for AlertRules {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        reload();
    }
}

fn reload() {
    let (status, body) = http_request(&prometheus_address(), "POST", "/-/reload", "");
    assert_eq!(status, 200, "reload refused: {body}");
}

fn prometheus_client() -> prometheus_http_query::Client {
    prometheus_http_query::Client::try_from(format!("http://{}", prometheus_address()).as_str())
        .expect("a Prometheus client")
}

/// Waits until `alert` fires with every label in `labels` (Prometheus' `ALERTS` series);
/// its labels then.
async fn firing(alert: &str, labels: &[(&str, &str)]) -> HashMap<String, String> {
    let started = Instant::now();
    let client = prometheus_client();
    let mut selector = format!("ALERTS{{alertname=\"{alert}\", alertstate=\"firing\"");
    for (key, value) in labels {
        selector.push_str(&format!(", {key}=\"{value}\""));
    }
    selector.push('}');
    let found = eventually(ALERT_TIMEOUT, &format!("{alert} firing"), || async {
        let answer = client.query(selector.as_str()).get().await.ok()?;
        let vector = answer.data().as_vector()?;
        vector.first().map(|sample| sample.metric().clone())
    })
    .await;
    println!(
        "{alert} firing after {:.0} s: {found:?}",
        started.elapsed().as_secs_f64()
    );
    found
}

/// Every query of the Grafana dashboard (panels and annotations), its variables set to
/// `job`, `namespace` and `service`: (where, PromQL).
fn dashboard_queries(job: &str, namespace: &str, service: &str) -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/invoice-operator/files/dashboard.json"
    );
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push((
                    format!("panel {:?}", panel["title"].as_str().unwrap_or("")),
                    expr.to_owned(),
                ));
            }
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            queries.push((
                format!("annotation {:?}", annotation["name"].as_str().unwrap_or("")),
                expr.to_owned(),
            ));
        }
    }
    queries
        .into_iter()
        .map(|(place, expr)| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$job", job)
                .replace("$namespace", namespace)
                .replace("$service", service);
            assert!(!expr.contains('$'), "{place}: a variable is left in {expr}");
            (place, expr)
        })
        .collect()
}

/// The dashboard queries that returned data now, added to `answered`.
async fn run_dashboard(queries: &[(String, String)], answered: &mut BTreeSet<String>) {
    let client = prometheus_client();
    for (_, expr) in queries {
        let data = client.query(expr.as_str()).get().await;
        let has_data = data.as_ref().is_ok_and(|answer| match answer.data() {
            Data::Vector(vector) => !vector.is_empty(),
            Data::Matrix(matrix) => !matrix.is_empty(),
            Data::Scalar(_) => true,
        });
        if has_data {
            answered.insert(expr.clone());
        }
    }
}

fn operator(namespace: &str, job: &str, identity: &str, extra: &[&str]) -> OperatorProcess {
    let mut flags = vec!["--detection-window=30s".to_owned()];
    flags.extend(extra.iter().map(|flag| (*flag).to_owned()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    OperatorProcess::start(namespace, &format!("{job}-{identity}"), &flags)
}

#[tokio::test]
async fn every_alert_fires_on_the_real_prometheus_scraping_the_operator() {
    let (client, namespace): (_, TestNamespace) = crd_and_namespace("e2e-alerts").await;
    let ns = namespace.name.clone();
    let job = format!("e2e-alerts-{}", random_suffix());
    let _rules = AlertRules::load(&job).await;
    let prometheus = format!("--prometheus-url=http://{}", prometheus_address());

    // Two services on the fleet simulator: `invoice-api` paused, with the workbook's page
    // windows; `billing` with a one-rung ladder that cannot fix a service-wide burn.
    deploy_invoice_api(&client, &ns, 3).await;
    apply_deployment(&client, &ns, "billing", 2, "app: billing", "").await;
    ready_pods(&client, &ns, 5).await;
    apply_invoice_service(
        &client,
        &ns,
        "invoice-api",
        "deployment: invoice-api",
        r#"availability: {objective: "99.9", window: 1h, burnRateWindows: [{long: 1h, short: 5m, factor: "14.4", severity: Page}]}"#,
        "paused: true",
    )
    .await;
    apply_invoice_service(
        &client,
        &ns,
        "billing",
        "deployment: billing",
        r#"availability: {objective: "90", window: 1h, burnRateWindows: [{long: 1m, short: 30s, factor: "3", severity: Page}]}"#,
        "cooldown: 10s, verifyWindow: 20s, ladder: [RolloutRestart]",
    )
    .await;
    // 60 requests/s per service: a rate over the hour-long SLO window divides by the whole
    // hour, so a fresh namespace passes the minimum request rate (0.5/s) after 30 s, not
    // after the 150 s the simulator's default 12/s would need.
    let sim = FleetSimProcess::start(&ns, &["--request-rate=60"]);

    // 1. A healthy Prometheus: the service alerts.
    let first = operator(&ns, &job, "a", &["--leader-election=false", &prometheus]);
    let target = ScrapeTarget::register(&first.metrics_address, &job);
    for service in ["invoice-api", "billing"] {
        sim.inject(
            &json!({"namespace": ns, "service": service, "kind": "service-errors", "ratio": 0.5}),
        );
    }
    let burning = firing("InvoiceServiceBudgetBurnBlocked", &[("gate", "Paused")]).await;
    assert_eq!(burning["severity"], "critical", "{burning:?}");
    firing(
        "InvoiceServiceLadderExhausted",
        &[("namespace", &ns), ("service", "billing")],
    )
    .await;
    firing(
        "InvoiceServiceNeedsAttention",
        &[("namespace", &ns), ("service", "billing")],
    )
    .await;
    // The dashboard, on an operator that acted and was blocked (billing, the service the
    // single-service rows show, climbed its ladder).
    let queries = dashboard_queries(&job, &ns, "billing");
    let mut answered = BTreeSet::new();
    run_dashboard(&queries, &mut answered).await;
    drop(target);
    drop(first);

    // 2. A Prometheus that accepts connections and never answers: queries time out (10 s)
    // at a 5 s interval, so cycles overrun, queries fail and the signals turn untrusted.
    let hung = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let hung_url = format!(
        "--prometheus-url=http://{}",
        hung.local_addr().expect("address")
    );
    let second = operator(&ns, &job, "b", &["--leader-election=false", &hung_url]);
    let target = ScrapeTarget::register(&second.metrics_address, &job);
    firing("InvoiceOperatorPrometheusQueriesFailing", &[]).await;
    firing("InvoiceOperatorFleetCycleOverruns", &[]).await;
    firing(
        "InvoiceServiceSignalsUntrusted",
        &[("namespace", &ns), ("service", "invoice-api")],
    )
    .await;
    // And on one whose queries fail.
    run_dashboard(&queries, &mut answered).await;
    drop(target);
    drop(second);
    drop(hung);

    // 3. Someone else holds the Lease: the operator runs, but never leads.
    let lease = format!("{job}-lease");
    apply_yaml(
        &client,
        &ns,
        &format!(
            r#"
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {{name: {lease}}}
spec:
  holderIdentity: someone-else
  leaseDurationSeconds: 3600
  acquireTime: "{now}"
  renewTime: "{now}"
"#,
            now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        ),
    )
    .await;
    let follower = operator(
        &ns,
        &job,
        "c",
        &[
            "--leader-election=true",
            &format!("--lease-name={lease}"),
            &prometheus,
        ],
    );
    let target = ScrapeTarget::register(&follower.metrics_address, &job);
    firing("InvoiceOperatorNoLeader", &[]).await;

    // 4. No operator answers its scrapes.
    drop(follower);
    let down = firing("InvoiceOperatorDown", &[("job", &job)]).await;
    assert_eq!(down["severity"], "critical", "{down:?}");
    drop(target);
    drop(sim);

    // Every dashboard query returned data in one of the two states, except those that need
    // a failure this test does not cause: a missing permission, a failed reconcile.
    let never_here = [
        "invoiceops_permission_missing",
        "invoiceops_reconcile_errors_total",
    ];
    let silent: Vec<&(String, String)> = queries
        .iter()
        .filter(|(_, expr)| !answered.contains(expr))
        .filter(|(_, expr)| !never_here.iter().any(|metric| expr.contains(metric)))
        .collect();
    assert!(
        silent.is_empty(),
        "dashboard queries without data: {silent:#?}"
    );
    println!(
        "dashboard: {} of {} queries returned data",
        answered.len(),
        queries.len()
    );
    namespace.delete().await;
}
