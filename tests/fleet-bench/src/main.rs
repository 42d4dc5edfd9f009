//! `make bench`: one operator against thousands of InvoiceServices on the local kwok cluster.
//!
//! For each fleet size (growing: services are added, never recreated) and each query mode
//! (`batched`, then the naive `per-service` for comparison) it starts a release build of the
//! operator at a 15 s interval, waits until the first statuses are written, measures a
//! steady-state window (fleet cycle time, Prometheus queries, API reads and writes, RSS, CPU),
//! then injects a leaking pod into a sample of services and times fault → action. Results go
//! to a JSON file, BENCHMARKS.md (between its generated markers) and a PNG plot.

mod fleet;
mod history;
mod peer;
mod probe;
mod report;
mod results;
mod rules;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt as _;
use invoice_operator::api::InvoiceService;
use invoice_operator_e2e::http_request;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt as _, watcher},
};

use crate::{
    fleet::Layout,
    probe::Process,
    results::{Environment, Results, Run},
};

/// Command line of the benchmark.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Fleet sizes (InvoiceServices), ascending; services are added between sizes.
    #[arg(long, value_delimiter = ',', default_value = "100,500,2000")]
    sizes: Vec<usize>,
    /// Modes to run at each size: `batched` (fleet-wide queries over raw counters, the
    /// default `--sli-source raw`), `recorded` (fleet-wide queries reading the recording
    /// rules' series, `--sli-source recorded`), `per-service` (one query per service per SLI
    /// and window, the way per-object tools work).
    #[arg(long, value_delimiter = ',', default_value = "batched,recorded")]
    modes: Vec<String>,
    /// Steady-state runs per mode and size (a fresh operator each), for the spread.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Largest fleet the per-service (naive) mode runs at. At 2,000 services it sends about
    /// 23,400 queries per interval and no fleet cycle completes within one.
    #[arg(long, default_value_t = 500)]
    per_service_up_to: usize,
    /// Namespaces the services are spread over.
    #[arg(long, default_value_t = 20)]
    namespaces: usize,
    /// Replicas of each of a service's three per-zone Deployments.
    #[arg(long, default_value_t = 2)]
    replicas_per_zone: i32,
    /// The operator's evaluation interval, seconds.
    #[arg(long, default_value_t = 15)]
    interval: u64,
    /// Evaluation intervals in each steady-state window.
    #[arg(long, default_value_t = 6)]
    steady_intervals: u32,
    /// Services that get a leaking pod, once per mode and size after its steady-state runs.
    #[arg(long, default_value_t = 10)]
    faults: usize,
    /// Longest wait for the faults to be acted on, seconds.
    #[arg(long, default_value_t = 240)]
    fault_timeout: u64,
    /// Skip backfilling 31 days of recorded history (the recorded mode then reports its
    /// long windows as not yet recorded).
    #[arg(long)]
    no_history: bool,
    /// Skip the Sloth peer (its rules for the same SLOs, at the largest size).
    #[arg(long)]
    no_peer: bool,
    /// Seconds each rule-cost window of the peer comparison lasts.
    #[arg(long, default_value_t = 180)]
    peer_window: u64,
    /// Raw results.
    #[arg(long, default_value = "docs/bench/fleet.json")]
    json: PathBuf,
    /// The report; only the part between its generated markers is replaced.
    #[arg(long, default_value = "BENCHMARKS.md")]
    markdown: PathBuf,
    /// The plot.
    #[arg(long, default_value = "docs/bench/fleet.png")]
    plot: PathBuf,
    /// Where process logs go.
    #[arg(long, default_value = "target/fleet-bench")]
    logs: PathBuf,
    /// Rebuild the report and plot from `--json` without running anything.
    #[arg(long)]
    report_only: bool,
    /// Leave the benchmark namespaces, nodes and rule files in the cluster afterwards.
    #[arg(long)]
    keep: bool,
}

/// Requests per second each simulated service receives.
const REQUEST_RATE: f64 = 100.0;

/// Prometheus' scrape interval in tests/cluster/cluster.sh.
const SCRAPE_SECONDS: f64 = 5.0;

/// The operator's arguments for a benchmark mode.
fn mode_args(mode: &str) -> anyhow::Result<[&'static str; 2]> {
    Ok(match mode {
        "batched" => ["--query-mode=batched", "--sli-source=raw"],
        "recorded" => ["--query-mode=batched", "--sli-source=recorded"],
        "per-service" => ["--query-mode=per-service", "--sli-source=raw"],
        other => bail!("unknown mode {other}: batched, recorded or per-service"),
    })
}

fn log(line: &str) {
    eprintln!(
        "[fleet-bench {}] {line}",
        jiff::Timestamp::now().strftime("%H:%M:%S")
    );
}

fn env_var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run through `make bench` (it starts the local cluster)")
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.report_only {
        let text = std::fs::read_to_string(&cli.json)
            .with_context(|| format!("cannot read {}", cli.json.display()))?;
        let results: Results = serde_json::from_str(&text)?;
        return report::write(&results, &cli.markdown, &cli.plot);
    }
    for mode in &cli.modes {
        mode_args(mode)?;
    }
    let started = Instant::now();
    let prometheus_url = env_var("PROMETHEUS_URL")?;
    let client = Client::try_default()
        .await
        .context("cannot build a client from KUBECONFIG")?;
    std::fs::create_dir_all(&cli.logs)?;
    let layout = Layout {
        namespaces: cli.namespaces,
        replicas_per_zone: cli.replicas_per_zone,
    };
    let mut results = Results {
        environment: environment(&cli, &client, &prometheus_url, layout).await?,
        runs: Vec::new(),
        peer: None,
    };
    invoice_operator_e2e::install_crd(&client).await;
    // The recording rules run from the start, so the recorded series of every service exist
    // from the moment its pods are scraped.
    let operator = probe::sibling_binary("invoice-operator")?;
    rules::load(&prometheus_url, rules::OURS, &rules::ours(&operator)?)?;

    let simulator = Process::start(
        &probe::sibling_binary("fleet-sim")?,
        &[
            "--listen={address}".to_owned(),
            "--job=fleet-bench".to_owned(),
            // Enough traffic that the longest short burn-rate window (6 h) passes the default
            // minRequestRate (0.5/s) within minutes of data: Prometheus' rate() divides by the
            // whole range, and a young fleet has only minutes of it.
            format!("--request-rate={REQUEST_RATE}"),
            "--pod-capacity=50".to_owned(),
        ],
        &[],
        cli.logs.join("fleet-sim.log"),
    )?;
    let outcome = run_sizes(
        &cli,
        &client,
        &prometheus_url,
        layout,
        &simulator,
        &mut results,
    )
    .await;
    results.environment.minutes = started.elapsed().as_secs_f64() / 60.0;
    if !results.runs.is_empty() {
        if let Some(parent) = cli.json.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&cli.json, serde_json::to_string_pretty(&results)?)?;
        report::write(&results, &cli.markdown, &cli.plot)?;
        log(&format!(
            "wrote {}, {} and {}",
            cli.json.display(),
            cli.markdown.display(),
            cli.plot.display()
        ));
    }
    drop(simulator);
    if !cli.keep {
        fleet::clean_up(&client).await?;
        rules::unload(&prometheus_url, rules::SLOTH)?;
        rules::unload(&prometheus_url, rules::OURS)?;
    }
    outcome
}

async fn run_sizes(
    cli: &Cli,
    client: &Client,
    prometheus_url: &str,
    layout: Layout,
    simulator: &Process,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut created = 0;
    let largest = cli.sizes.iter().copied().max().unwrap_or(0);
    for &size in &cli.sizes {
        let pods = size * layout.pods_per_service();
        let nodes = fleet::ensure_nodes(client, pods).await?;
        log(&format!(
            "{size} services: creating {} (over {nodes} benchmark nodes)",
            size.saturating_sub(created)
        ));
        let creating = Instant::now();
        fleet::create_services(client, layout, created, size).await?;
        log(&format!(
            "created in {:.0} s; waiting for {pods} pods",
            creating.elapsed().as_secs_f64()
        ));
        let waited = fleet::wait_pods_ready(client, pods, Duration::from_secs(1_800)).await?;
        log(&format!("pods Ready after {:.0} s", waited.as_secs_f64()));
        wait_scraped(prometheus_url, pods).await?;
        if !cli.no_history && size > created {
            backfill(cli, prometheus_url, layout, created, size).await?;
        }
        created = created.max(size);
        let modes: Vec<&String> = cli
            .modes
            .iter()
            .filter(|mode| {
                let runs = *mode != "per-service" || size <= cli.per_service_up_to;
                if !runs {
                    log(&format!(
                        "{size} services, per-service: skipped (--per-service-up-to {})",
                        cli.per_service_up_to
                    ));
                }
                runs
            })
            .collect();
        // Every steady-state run at this size before any fault, so no run sees victims of
        // this size's faults; modes alternate so a drift over time hits them alike.
        for repeat in 1..=cli.runs.max(1) {
            for mode in &modes {
                let run =
                    steady_run(cli, client, prometheus_url, layout, size, mode, repeat).await?;
                log(&report::summary(&run));
                results.runs.push(run);
            }
        }
        for (index, mode) in modes.iter().enumerate() {
            let reactions = fault_run(
                cli,
                client,
                prometheus_url,
                layout,
                simulator,
                size,
                mode,
                index,
            )
            .await?;
            if let Some(run) = results
                .runs
                .iter_mut()
                .rev()
                .find(|run| run.services == size && &run.mode == *mode)
            {
                run.faults = cli.faults.min(size);
                run.fault_to_action_seconds = reactions.injection_to_action;
                run.visible_to_action_seconds = reactions.visible_to_action;
                run.actions = reactions.actions;
                log(&report::summary(run));
            }
        }
        if size == largest && !cli.no_peer {
            results.peer = Some(peer::compare(cli, prometheus_url, layout, size).await?);
        }
    }
    Ok(())
}

/// Backfills 31 days of recorded history for the services `from..to` and waits until
/// Prometheus has loaded it.
async fn backfill(
    cli: &Cli,
    prometheus_url: &str,
    layout: Layout,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    let data = PathBuf::from(env_var("PROMETHEUS_DATA_DIR")?);
    let end = jiff::Timestamp::now().as_second().try_into()?;
    let scratch = cli.logs.clone();
    let (blocks, seconds) = tokio::task::spawn_blocking(move || {
        history::backfill(layout, from, to, end, REQUEST_RATE, &data, &scratch)
    })
    .await??;
    log(&format!(
        "backfilled 31 days of recorded history of {} services: {blocks} blocks in {seconds:.0} s",
        to - from
    ));
    let (_, last) = layout.service(to - 1);
    let loaded = format!(
        "count_over_time(invoiceops:requests:rate1h{{service=\"{last}\",invoiceops_class=\"5xx\"}}[31d])"
    );
    let deadline = Instant::now() + history::LOAD_TIMEOUT;
    loop {
        let hours = instant_query(prometheus_url, &loaded, "")
            .first()
            .map_or(0.0, |(_, value)| *value);
        if hours >= 30.0 * 24.0 {
            log(&format!(
                "Prometheus holds {hours} hourly samples of {last}"
            ));
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "Prometheus did not load the backfilled blocks: {hours} hourly samples of {last}"
            );
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Waits until Prometheus has request series of `pods` pods (the simulator serves them and
/// was scraped), plus a minute so the detection window's rates are full.
async fn wait_scraped(prometheus_url: &str, pods: usize) -> anyhow::Result<()> {
    // Only the benchmark's namespaces: a cluster that ran the e2e tests keeps other
    // namespaces' series for hours.
    let scraped = "count(count by (pod) (invoice_http_requests_total{namespace=~\"bench-.*\"}))";
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let seen = instant_query(prometheus_url, scraped, "")
            .first()
            .map_or(0.0, |(_, value)| *value);
        if seen >= pods as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("Prometheus has series of {seen} pods, not {pods}, after 10 minutes");
        }
        log(&format!("Prometheus has series of {seen} of {pods} pods"));
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    // Every service's rate over its longest short burn window (6 h by default) must pass
    // minRequestRate (0.5/s) with a margin; until then its signals are rightly untrusted and
    // the first statuses would change mid-measurement.
    let slowest = "min(sum by (namespace, service) (rate(invoice_http_requests_total{namespace=~\"bench-.*\"}[6h])))";
    loop {
        let rate = instant_query(prometheus_url, slowest, "")
            .first()
            .map_or(0.0, |(_, value)| *value);
        if rate >= 0.6 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the quietest service's 6 h request rate is {rate}/s, not 0.6/s, after 10 minutes"
            );
        }
        log(&format!(
            "the quietest service's 6 h request rate is {rate:.2}/s; waiting for 0.6/s"
        ));
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    Ok(())
}

/// A started operator past its warm-up (the first statuses written).
struct Warm {
    operator: Process,
    log_path: PathBuf,
    ready_seconds: f64,
    warmup_seconds: f64,
    warmup_writes: f64,
}

/// Starts the operator in `mode` and waits until an interval passes without API writes.
async fn start_warm(
    cli: &Cli,
    prometheus_url: &str,
    log_path: PathBuf,
    mode: &str,
) -> anyhow::Result<Warm> {
    let interval = Duration::from_secs(cli.interval);
    let starting = Instant::now();
    let mut args = vec![
        format!("--prometheus-url={prometheus_url}"),
        format!("--evaluation-interval={}s", cli.interval),
        "--leader-election=false".to_owned(),
        "--metrics-address={address}".to_owned(),
        "--log-format=json".to_owned(),
    ];
    args.extend(mode_args(mode)?.map(str::to_owned));
    let mut operator = Process::start(
        &probe::sibling_binary("invoice-operator")?,
        &args,
        &[("RUST_LOG", "info")],
        log_path.clone(),
    )?;
    operator.wait_http_ok("/readyz", Duration::from_secs(600))?;
    let ready_seconds = starting.elapsed().as_secs_f64();
    let warming = Instant::now();
    let first = probe::counters(&operator)?;
    let mut previous = first;
    loop {
        tokio::time::sleep(interval).await;
        if !operator.alive() {
            bail!("the operator died; see {}", log_path.display());
        }
        let now = probe::counters(&operator)?;
        let logged = probe::cycles(&std::fs::read_to_string(&log_path)?).len();
        let quiet = logged >= 2 && now.writes == previous.writes;
        previous = now;
        if quiet {
            break;
        }
        if warming.elapsed() > Duration::from_secs(300) {
            log("warm-up still writes after 5 minutes; measuring anyway");
            break;
        }
    }
    Ok(Warm {
        operator,
        log_path,
        ready_seconds,
        warmup_seconds: warming.elapsed().as_secs_f64(),
        warmup_writes: previous.writes - first.writes,
    })
}

/// One steady-state run: a fresh operator in `mode`, warmed up, then a window of
/// `--steady-intervals` intervals with no fault.
async fn steady_run(
    cli: &Cli,
    client: &Client,
    prometheus_url: &str,
    layout: Layout,
    size: usize,
    mode: &str,
    repeat: usize,
) -> anyhow::Result<Run> {
    let interval = Duration::from_secs(cli.interval);
    let ticks = probe::ticks_per_second();
    log(&format!(
        "{size} services, {mode}, run {repeat}: starting the operator"
    ));
    let log_path = cli
        .logs
        .join(format!("operator-{size}-{mode}-{repeat}.log"));
    let warm = start_warm(cli, prometheus_url, log_path, mode).await?;
    let (operator, log_path) = (&warm.operator, &warm.log_path);
    let pid = operator.pid();
    log(&format!(
        "warm after {:.0} s ({} writes); steady state for {} intervals",
        warm.warmup_seconds, warm.warmup_writes, cli.steady_intervals
    ));

    let window_started = Instant::now();
    let cycles_before = probe::cycles(&std::fs::read_to_string(log_path)?).len();
    let stats_before = probe::proc_stats(pid, ticks)?;
    let prometheus_before = probe::prometheus_cpu_seconds(prometheus_url)?;
    let counters_before = probe::counters(operator)?;
    let minimum = interval * cli.steady_intervals;
    loop {
        tokio::time::sleep(interval).await;
        let completed = probe::cycles(&std::fs::read_to_string(log_path)?).len() - cycles_before;
        let elapsed = window_started.elapsed();
        // A slow mode gets up to four times as long to complete a few cycles.
        if (elapsed >= minimum && completed >= 3) || elapsed >= minimum * 4 {
            break;
        }
    }
    let window = window_started.elapsed().as_secs_f64();
    let counters = probe::counters(operator)?.since(&counters_before);
    let stats_after = probe::proc_stats(pid, ticks)?;
    let prometheus_after = probe::prometheus_cpu_seconds(prometheus_url)?;
    let cycles: Vec<_> = probe::cycles(&std::fs::read_to_string(log_path)?)
        .into_iter()
        .skip(cycles_before)
        .collect();
    let intervals = window / interval.as_secs_f64();
    let answers = fleet::slo_answers(client, history::expected_availability()).await?;
    let raw_series = instant_query(
        prometheus_url,
        "count(invoice_http_requests_total{namespace=~\"bench-.*\"})",
        "",
    )
    .first()
    .map_or(0.0, |(_, value)| *value);
    Ok(Run {
        mode: mode.to_owned(),
        repeat,
        services: size,
        pods: size * layout.pods_per_service(),
        ready_seconds: warm.ready_seconds,
        warmup_seconds: warm.warmup_seconds,
        warmup_writes: warm.warmup_writes,
        window_seconds: window,
        intervals,
        cycle_ms: cycles.iter().map(|cycle| cycle.cycle_ms).collect(),
        query_ms: cycles.iter().map(|cycle| cycle.query_ms).collect(),
        overruns: counters.overruns,
        queries_per_interval: counters.queries / intervals,
        samples_per_interval: counters.samples / intervals,
        slo_samples_per_interval: counters.slo_samples / intervals,
        query_errors: counters.query_errors,
        reads_per_interval: counters.reads / intervals,
        watches_per_interval: counters.watches / intervals,
        writes_per_interval: counters.writes / intervals,
        reconcile_errors: counters.reconcile_errors,
        rss_mib: stats_after.rss_kib as f64 / 1024.0,
        peak_rss_mib: stats_after.peak_rss_kib as f64 / 1024.0,
        cpu_cores: (stats_after.cpu_seconds - stats_before.cpu_seconds) / window,
        prometheus_cpu_cores: (prometheus_after - prometheus_before) / window,
        prometheus_rss_mib: probe::prometheus_rss_mib(prometheus_url)?,
        raw_series,
        slo_answers: answers,
        ..Run::default()
    })
}

/// Faults in `mode`: a fresh operator, warmed up, then a leaking pod in a sample of services
/// (a different sample per mode), timed until each service's status records the action.
#[allow(clippy::too_many_arguments)]
async fn fault_run(
    cli: &Cli,
    client: &Client,
    prometheus_url: &str,
    layout: Layout,
    simulator: &Process,
    size: usize,
    mode: &str,
    mode_index: usize,
) -> anyhow::Result<Reactions> {
    log(&format!("{size} services, {mode}: faults"));
    let log_path = cli.logs.join(format!("operator-{size}-{mode}-faults.log"));
    let warm = start_warm(cli, prometheus_url, log_path, mode).await?;
    let sample = fault_sample(size, cli.faults, mode_index, cli.modes.len(), layout);
    let reactions = time_faults(
        client,
        simulator,
        prometheus_url,
        &sample,
        Duration::from_secs(cli.fault_timeout),
    )
    .await?;
    drop(warm);
    Ok(reactions)
}

/// `count` services spread evenly over the fleet, offset per mode so each mode gets fresh ones.
fn fault_sample(
    size: usize,
    count: usize,
    mode_index: usize,
    modes: usize,
    layout: Layout,
) -> Vec<(String, String)> {
    let count = count.min(size);
    if count == 0 {
        return Vec::new();
    }
    let stride = size / count;
    let offset = stride * mode_index / modes.max(1);
    (0..count)
        .map(|n| layout.service((n * stride + offset) % size))
        .collect()
}

/// What the faults showed: for each fault acted on in time, seconds from injection to the
/// status recording the action, and from the moment Prometheus showed the pod over the
/// threshold to the action; and the actions.
#[derive(Debug, Default)]
struct Reactions {
    injection_to_action: Vec<f64>,
    visible_to_action: Vec<f64>,
    actions: Vec<String>,
}

/// The pod error ratio over the operator's 1-minute detection window that the benchmark
/// services restart a pod above (`restartPod.errorRatioAbove`).
const POD_ERROR_THRESHOLD: f64 = 0.2;

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// An instant query's vector as (label value, value) pairs.
pub(crate) fn instant_query(prometheus_url: &str, promql: &str, label: &str) -> Vec<(String, f64)> {
    let path = format!("/api/v1/query?query={}", encode(promql));
    let (status, body) = http_request(probe::http_address(prometheus_url), "GET", &path, "");
    if status != 200 {
        return Vec::new();
    }
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| {
            let name = series["metric"][label]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let value = series["value"][1].as_str()?.parse().ok()?;
            Some((name, value))
        })
        .collect()
}

/// Injects a leaking pod into each sampled service and times the operator's reaction.
async fn time_faults(
    client: &Client,
    simulator: &Process,
    prometheus_url: &str,
    sample: &[(String, String)],
    timeout: Duration,
) -> anyhow::Result<Reactions> {
    if sample.is_empty() {
        return Ok(Reactions::default());
    }
    // The last action of each sampled service before the fault.
    let mut before = HashMap::new();
    for (namespace, name) in sample {
        let api: Api<InvoiceService> = Api::namespaced(client.clone(), namespace);
        let service = api.get(name).await?;
        let last = service
            .status
            .and_then(|status| status.last_action)
            .map(|action| serde_json::to_string(&action).unwrap_or_default());
        before.insert((namespace.clone(), name.clone()), last);
    }
    type Seen = HashMap<(String, String), (Instant, String)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (synced_sender, synced) = tokio::sync::oneshot::channel();
    let watch = {
        let seen = Arc::clone(&seen);
        let api: Api<InvoiceService> = Api::all(client.clone());
        let config = watcher::Config::default().labels(&format!("{}=true", fleet::BENCH_LABEL));
        let mut synced_sender = Some(synced_sender);
        let before = before.clone();
        tokio::spawn(async move {
            let stream = watcher(api, config).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let service = match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(sender) = synced_sender.take() {
                            let _ = sender.send(());
                        }
                        continue;
                    }
                    Ok(watcher::Event::Apply(service) | watcher::Event::InitApply(service)) => {
                        service
                    }
                    _ => continue,
                };
                let key = (service.namespace().unwrap_or_default(), service.name_any());
                let Some(previous) = before.get(&key) else {
                    continue;
                };
                let Some(action) = service.status.and_then(|status| status.last_action) else {
                    continue;
                };
                let now = serde_json::to_string(&action).unwrap_or_default();
                if previous.as_ref() != Some(&now) {
                    seen.lock()
                        .expect("seen lock")
                        .entry(key)
                        .or_insert((Instant::now(), action.action.as_str().to_owned()));
                }
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(120), synced)
        .await
        .context("the InvoiceService watch did not sync in 2 minutes")?
        .ok();
    let mut injected = HashMap::new();
    let mut victims = HashMap::new();
    for (namespace, name) in sample {
        let pod = fleet::victim_pod(client, namespace, name).await?;
        victims.insert(pod.clone(), (namespace.clone(), name.clone()));
        let fault = serde_json::json!({
            "namespace": namespace, "service": name, "kind": "pod-errors", "pod": pod, "ratio": 1.0,
        });
        let (status, body) =
            http_request(&simulator.address, "POST", "/faults", &fault.to_string());
        if status != 201 {
            bail!("fleet-sim refused the fault: {status} {body}");
        }
        injected.insert((namespace.clone(), name.clone()), Instant::now());
    }
    log(&format!("injected {} leaking pods", sample.len()));
    // When Prometheus first shows each victim over the threshold, polled every second.
    let pods = victims.keys().cloned().collect::<Vec<_>>().join("|");
    let promql = format!(
        "sum by (pod) (rate(invoice_http_requests_total{{pod=~\"{pods}\",code=~\"5..\"}}[1m])) \
         / sum by (pod) (rate(invoice_http_requests_total{{pod=~\"{pods}\"}}[1m])) > {POD_ERROR_THRESHOLD}"
    );
    let mut visible: HashMap<(String, String), Instant> = HashMap::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && seen.lock().expect("seen lock").len() < sample.len() {
        let (url, query) = (prometheus_url.to_owned(), promql.clone());
        let over = tokio::task::spawn_blocking(move || instant_query(&url, &query, "pod")).await?;
        let now = Instant::now();
        for (pod, _) in over {
            if let Some(key) = victims.get(&pod) {
                visible.entry(key.clone()).or_insert(now);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    watch.abort();
    let (status, body) = http_request(&simulator.address, "DELETE", "/faults", "");
    if status != 200 {
        bail!("fleet-sim did not clear the faults: {status} {body}");
    }
    let seen = seen.lock().expect("seen lock");
    let mut reactions = Reactions::default();
    for (key, at) in &injected {
        if let Some((acted, action)) = seen.get(key) {
            reactions
                .injection_to_action
                .push(acted.duration_since(*at).as_secs_f64());
            // The poll is once a second, so an action in the same second counts as 0.
            if let Some(shown) = visible.get(key) {
                reactions
                    .visible_to_action
                    .push(acted.saturating_duration_since(*shown).as_secs_f64());
            }
            reactions.actions.push(action.clone());
        }
    }
    log(&format!(
        "{} of {} faults acted on",
        reactions.injection_to_action.len(),
        sample.len()
    ));
    Ok(reactions)
}

async fn environment(
    cli: &Cli,
    client: &Client,
    prometheus_url: &str,
    layout: Layout,
) -> anyhow::Result<Environment> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let output = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|text| text.trim().to_owned())
            .unwrap_or_default()
    };
    let version = client.apiserver_version().await?;
    let (_, body) = http_request(
        probe::http_address(prometheus_url),
        "GET",
        "/api/v1/status/buildinfo",
        "",
    );
    let prometheus = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|answer| answer["data"]["version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let cluster_binaries = std::env::var("CLUSTER_BIN")
        .ok()
        .and_then(|path| {
            PathBuf::from(path)
                .file_name()
                .map(|name| name.to_string_lossy().trim_start_matches("bin-").to_owned())
        })
        .unwrap_or_default();
    let commit = output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    Ok(Environment {
        started: jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        minutes: 0.0,
        cpu,
        cpus,
        memory_gib,
        kernel: output("uname", &["-sr"]),
        operator: format!(
            "{} (commit {commit}{}, release build)",
            env!("CARGO_PKG_VERSION"),
            if dirty { ", uncommitted changes" } else { "" }
        ),
        kubernetes: version.git_version,
        prometheus,
        cluster_binaries,
        command: std::env::args()
            .skip(1)
            .fold("fleet-bench".to_owned(), |line, arg| {
                format!("{line} {arg}")
            }),
        interval_seconds: cli.interval as f64,
        scrape_seconds: SCRAPE_SECONDS,
        namespaces: cli.namespaces,
        pods_per_service: layout.pods_per_service(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_samples_are_spread_and_differ_per_mode() {
        let layout = Layout {
            namespaces: 20,
            replicas_per_zone: 2,
        };
        let batched = fault_sample(100, 10, 0, 2, layout);
        let naive = fault_sample(100, 10, 1, 2, layout);
        assert_eq!(batched.len(), 10);
        assert_eq!(batched[0], ("bench-00".to_owned(), "inv-0000".to_owned()));
        assert_eq!(batched[1].1, "inv-0010");
        assert_eq!(naive[0].1, "inv-0005");
        assert!(batched.iter().all(|service| !naive.contains(service)));
        assert_eq!(fault_sample(3, 10, 0, 2, layout).len(), 3);
        assert!(fault_sample(0, 10, 0, 2, layout).is_empty());
    }
}
