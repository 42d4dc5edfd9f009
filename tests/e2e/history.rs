//! The recorded SLIs proven on 31 days of real history (issue 15): a Prometheus of the test's
//! own, filled by `promtool tsdb create-blocks-from openmetrics` with a small fleet whose error
//! ratios are known, and the operator's recording rules (`invoice-operator rules`) backfilled
//! over that history with `promtool tsdb create-blocks-from rules`. Then:
//!
//! - the raw 30-day query the operator plans in `--sli-source=raw` is refused by the sample
//!   limit, and that window is unknown for every service;
//! - the recorded path answers: rates, availability, error budget and the 1 d / 3 d burn rates
//!   of every service match the ground truth of the generated counters;
//! - a service that appeared 10 days ago (its recorded series hold 10 days) is
//!   `WindowNotYetRecorded` over 30 days, recorded or auto, and measured over 3 days.
//!
//! Needs `prometheus` and `promtool` (Debian's prometheus package, as the local cluster);
//! no cluster. Does IO: temp files, child processes, loopback HTTP.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use invoice_operator::{
    api::InvoiceServiceSpec,
    evaluate::{Evaluation, evaluate},
    prometheus::{
        FleetMetrics, FleetQuery, Limits, MetricProfile, MetricsSource, Prometheus, QueryKind,
        ServiceSelector, SliSource,
    },
    signals::{Observation, RequestRates, UnknownReason},
};
use invoice_operator_e2e::{
    blocks_from_openmetrics, free_port, http_request, move_blocks, random_suffix, stop, tool,
    workspace_binary,
};
use serde_json::json;

const MINUTE: u64 = 60;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;

/// Days of raw history: a 30-day window plus a day, so that the hourly recorded series cover
/// the whole window however the hours fall.
const HISTORY_DAYS: u64 = 31;

/// One sample per series per minute.
const SCRAPE_INTERVAL: u64 = MINUTE;

/// The Prometheus sample limit of the test (`--query.max-samples`; 50,000,000 by default).
/// Prometheus counts the samples a query holds in memory at once; a `rate(...[30d])` loads one
/// series' whole window at a time, 30 d / 60 s = 43,200 samples (measured: peak 43,211), so
/// any limit below that refuses the raw 30-day query however few series there are. The
/// recorded 30-day query holds 720 hourly samples per series plus its coverage subquery
/// (measured: peak about 5,500 for this fleet), and the rule backfill's range queries (2-hour
/// steps of the rules) stay far below too. 20,000 sits in between with room on both sides:
/// it stands for a production Prometheus whose fleet is large enough that the default limit
/// bites (see issue 15: 300 series at a 15 s scrape already exceed 50 M).
const MAX_SAMPLES: u64 = 20_000;

/// Relative tolerance on every ratio and rate compared with the ground truth. The recorded
/// path averages whole hours of 5-minute rates over the window, so its window edges may miss
/// up to an hour at either end (2 of 720 hours, 0.3 %) and the rate extrapolation at each
/// 5-minute step adds noise that averages out; 1 % leaves room for both.
const TOLERANCE: f64 = 0.01;

/// The operator's per-query timeout in this test (10 s by default). The recorded queries read
/// the ~750 uncompacted 2-hour blocks the two backfill passes leave (Prometheus compacts them
/// over the following minutes, competing for the same two cores); a generous timeout keeps a
/// loaded machine from turning a slow answer into `PrometheusUnreachable`. The test is about
/// the answers; the cost is the benchmark's business.
const QUERY_TIMEOUT: Duration = Duration::from_secs(90);

/// The SLO window and the long windows of the ticket burn-rate alerts.
const SLO_WINDOW: Duration = Duration::from_secs(30 * DAY);
const ONE_DAY: Duration = Duration::from_secs(DAY);
const THREE_DAYS: Duration = Duration::from_secs(3 * DAY);

/// The availability objective of every service: 99 %, an error budget of 1 % of requests.
const OBJECTIVE_PERCENT: f64 = 99.0;

/// The namespace label of the generated series.
const NAMESPACE: &str = "history";

/// One service of the generated fleet: two pods, a daily traffic cycle, and a 5xx ratio that
/// is constant or changes once.
struct FleetService {
    name: &'static str,
    /// Requests per second of pod a (pod b serves 60 % of that), before the daily cycle.
    base_rate: f64,
    /// The 5xx ratio before `change_days_ago` (and always, without a change).
    ratio: f64,
    /// When the 5xx ratio changed, in days before the end, and to what.
    change: Option<(u64, f64)>,
    /// Days of history: the service appeared this many days before the end.
    days: u64,
}

/// The fleet: 0.1 %, 1 % and a 5 % ratio that dropped to 1 % 12 days ago, plus a service
/// added 10 days ago.
const FLEET: [FleetService; 4] = [
    FleetService {
        name: "ledger",
        base_rate: 10.0,
        ratio: 0.001,
        change: None,
        days: HISTORY_DAYS,
    },
    FleetService {
        name: "billing",
        base_rate: 6.0,
        ratio: 0.01,
        change: None,
        days: HISTORY_DAYS,
    },
    FleetService {
        name: "payments",
        base_rate: 4.0,
        ratio: 0.05,
        change: Some((12, 0.01)),
        days: HISTORY_DAYS,
    },
    FleetService {
        name: "newcomer",
        base_rate: 5.0,
        ratio: 0.02,
        change: None,
        days: 10,
    },
];

/// The service whose history is shorter than the SLO window.
const NEWCOMER: &str = "newcomer";

impl FleetService {
    /// The 5xx ratio at `age` seconds before the end.
    fn ratio_at(&self, age: u64) -> f64 {
        match self.change {
            Some((days, after)) if age < days * DAY => after,
            _ => self.ratio,
        }
    }

    /// Requests per second of one pod at `time` (Unix seconds): the base rate on a daily
    /// cycle between 50 % and 150 %.
    fn pod_rate(&self, pod: usize, time: u64) -> f64 {
        let share = if pod == 0 { 1.0 } else { 0.6 };
        let phase = (time % DAY) as f64 / DAY as f64 * std::f64::consts::TAU;
        self.base_rate * share * (1.0 + 0.5 * phase.sin())
    }
}

/// The counters of one service summed over its pods, one entry per minute from the start
/// of the history: what every window's ground truth is read from.
#[derive(Default)]
struct Cumulative {
    total: Vec<f64>,
    errors: Vec<f64>,
}

/// What was generated: where the history starts and each service's cumulative counters.
struct History {
    start: u64,
    truth: Vec<(&'static str, Cumulative)>,
}

impl History {
    /// The true request rates of `service` over the `window` that ends where the history
    /// ends: increase of the counters divided by the window.
    fn truth(&self, service: &str, window: Duration) -> RequestRates {
        let (_, counts) = self
            .truth
            .iter()
            .find(|(name, _)| *name == service)
            .expect("a generated service");
        let last = counts.total.len() - 1;
        let first = last - (window.as_secs() / SCRAPE_INTERVAL) as usize;
        let seconds = window.as_secs_f64();
        RequestRates {
            total: (counts.total[last] - counts.total[first]) / seconds,
            server_errors: (counts.errors[last] - counts.errors[first]) / seconds,
            client_errors: 0.0,
        }
    }
}

/// One request counter of the generated fleet (a service, pod and status code) and its value
/// so far.
struct Counter {
    service: &'static FleetService,
    pod: usize,
    code: &'static str,
    value: f64,
}

impl Counter {
    /// Every counter of [`FLEET`]: two pods, codes 200 and 500.
    fn fleet() -> Vec<Self> {
        let mut counters = Vec::new();
        for service in &FLEET {
            for pod in 0..2 {
                for code in ["200", "500"] {
                    counters.push(Self {
                        service,
                        pod,
                        code,
                        value: 0.0,
                    });
                }
            }
        }
        counters
    }

    /// Appends the samples from `from` until `until` (Unix seconds) to `text`, growing the
    /// counter every minute by the requests of that minute with this status code. Nothing
    /// before the service appeared (`end` minus its days).
    fn write(&mut self, text: &mut String, from: u64, until: u64, end: u64) {
        let service = self.service;
        let labels = format!(
            "namespace=\"{NAMESPACE}\",service=\"{name}\",pod=\"{name}-{pod}\",\
             zone=\"az{zone}\",code=\"{code}\"",
            name = service.name,
            pod = self.pod,
            zone = self.pod + 1,
            code = self.code,
        );
        let appeared = end - service.days * DAY;
        for time in (from.max(appeared)..until).step_by(SCRAPE_INTERVAL as usize) {
            let _ = writeln!(
                text,
                "invoice_http_requests_total{{{labels}}} {:.4} {time}",
                self.value
            );
            let ratio = service.ratio_at(end - time);
            let share = if self.code == "500" {
                ratio
            } else {
                1.0 - ratio
            };
            self.value += service.pod_rate(self.pod, time) * share * SCRAPE_INTERVAL as f64;
        }
    }
}

/// Writes the fleet's history, one OpenMetrics file per day (promtool reads its whole input
/// once per 2-hour block it writes, so one 70 MB file would take minutes), and returns the
/// files with the ground truth. Counters start at 0 when a service appears.
fn generate(directory: &Path, end: u64) -> (History, Vec<PathBuf>) {
    let start = end - HISTORY_DAYS * DAY;
    let mut counters = Counter::fleet();
    let mut files = Vec::new();
    let mut day_start = start;
    while day_start <= end {
        // Files end on midnight UTC, a boundary of promtool's 2-hour blocks.
        let day_end = ((day_start / DAY + 1) * DAY).min(end + 1);
        let mut text = String::from("# TYPE invoice_http_requests counter\n");
        for counter in &mut counters {
            counter.write(&mut text, day_start, day_end, end);
        }
        text.push_str("# EOF\n");
        let path = directory.join(format!("history-{day_start}.om"));
        std::fs::write(&path, text).expect("write the history file");
        files.push(path);
        day_start = day_end;
    }
    let mut truth: Vec<(&'static str, Cumulative)> = FLEET
        .iter()
        .map(|service| (service.name, Cumulative::default()))
        .collect();
    record_truth(&mut truth, start, end);
    (History { start, truth }, files)
}

/// Fills each service's cumulative counters (both pods, minute by minute) the way
/// [`generate`] grows them.
fn record_truth(truth: &mut [(&'static str, Cumulative)], start: u64, end: u64) {
    for ((_, counts), service) in truth.iter_mut().zip(&FLEET) {
        let appeared = end - service.days * DAY;
        let (mut total, mut errors) = (0.0, 0.0);
        for time in (start..=end).step_by(SCRAPE_INTERVAL as usize) {
            counts.total.push(total);
            counts.errors.push(errors);
            if time < appeared {
                continue;
            }
            let ratio = service.ratio_at(end - time);
            for pod in 0..2 {
                let requests = service.pod_rate(pod, time) * SCRAPE_INTERVAL as f64;
                total += requests;
                errors += requests * ratio;
            }
        }
    }
}

/// A scratch directory of the test, removed when dropped (also when the test panics).
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create() -> Self {
        let path = std::env::temp_dir().join(format!("e2e-history-{}", random_suffix()));
        std::fs::create_dir_all(&path).expect("create the scratch directory");
        Self { path }
    }

    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs `promtool` with `args`; panics with its output when it fails.
fn promtool(args: &[&str]) {
    let output = Command::new(tool("promtool"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run promtool (Debian's prometheus package ships it)");
    assert!(
        output.status.success(),
        "promtool {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The test's own Prometheus on a free loopback port over `data`, without scrape targets,
/// with the sample limit [`MAX_SAMPLES`]. Killed when dropped.
struct TestPrometheus {
    child: Child,
    url: String,
}

impl TestPrometheus {
    /// Starts it and waits until it is ready (every block loaded).
    fn start(scratch: &Scratch) -> Self {
        let config = scratch.join("prometheus.yml");
        std::fs::write(&config, "global: {}\n").expect("write the Prometheus config");
        let address = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(scratch.join("prometheus.log")).expect("a log file");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={address}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.join("data").display()
            ))
            .arg("--storage.tsdb.retention.time=60d")
            .arg(format!("--query.max-samples={MAX_SAMPLES}"))
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("start prometheus (Debian's prometheus package)");
        let mut prometheus = Self {
            child,
            url: format!("http://{address}"),
        };
        prometheus.wait_ready(&address, scratch);
        prometheus
    }

    fn wait_ready(&mut self, address: &str, scratch: &Scratch) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "prometheus exited ({status}): {}",
                    std::fs::read_to_string(scratch.join("prometheus.log")).unwrap_or_default()
                );
            }
            if http_request(address, "GET", "/-/ready", "").0 == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        stop(&mut self.child, None);
    }
}

/// The operator's recording rules (`invoice-operator rules`), one file per group, each with
/// only the rules the operator reads (`invoiceops:requests:*`): the Sloth-compatible ratios
/// are for dashboards and would only lengthen the backfill.
fn rule_files(scratch: &Scratch) -> (PathBuf, PathBuf) {
    let output = Command::new(workspace_binary("invoice-operator"))
        .args(["rules", "--interval", "30s"])
        .output()
        .expect("run invoice-operator rules");
    assert!(
        output.status.success(),
        "invoice-operator rules failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rules: serde_yaml::Value =
        serde_yaml::from_slice(&output.stdout).expect("the rules are YAML");
    let group = |name: &str| -> PathBuf {
        let mut group = rules["groups"]
            .as_sequence()
            .expect("groups")
            .iter()
            .find(|group| group["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no rule group {name}"))
            .clone();
        let kept: Vec<serde_yaml::Value> = group["rules"]
            .as_sequence()
            .expect("rules")
            .iter()
            .filter(|rule| {
                rule["record"]
                    .as_str()
                    .is_some_and(|record| record.starts_with("invoiceops:requests:"))
            })
            .cloned()
            .collect();
        assert!(
            !kept.is_empty(),
            "group {name} records no invoiceops:requests:* series"
        );
        group["rules"] = serde_yaml::Value::Sequence(kept);
        let path = scratch.join(&format!("{name}.yaml"));
        let file = serde_yaml::to_string(&json!({ "groups": [group] })).expect("serialize");
        std::fs::write(&path, file).expect("write the rule file");
        path
    };
    (group("invoiceops-sli"), group("invoiceops-sli-hourly"))
}

/// Backfills the rules of `rule_file` from `start` to `end` (Unix seconds) against
/// `prometheus` and moves the blocks into its data directory; the caller restarts it.
fn backfill(
    scratch: &Scratch,
    prometheus: &TestPrometheus,
    rule_file: &Path,
    start: u64,
    end: u64,
) {
    let output = scratch.join("rule-blocks");
    std::fs::create_dir_all(&output).expect("create the rule block directory");
    promtool(&[
        "tsdb",
        "create-blocks-from",
        "rules",
        "--quiet",
        &format!("--url={}", prometheus.url),
        &format!("--start={start}"),
        &format!("--end={end}"),
        &format!("--output-dir={}", output.display()),
        &rule_file.display().to_string(),
    ]);
    let moved = move_blocks(&output, &scratch.join("data")).expect("move the blocks");
    assert!(
        moved > 0,
        "promtool wrote no blocks for {}",
        rule_file.display()
    );
}

/// Builds the history and the recorded series, and returns the Prometheus serving both.
///
/// The hourly rule reads the 5-minute recorded series, and promtool evaluates rules against a
/// running Prometheus, so the rules are backfilled in two passes (promtool's documented
/// limitation: rules that depend on other rules of the same backfill see no data): the
/// 5-minute group, its blocks moved in and Prometheus restarted, then the hourly group.
fn prepare(scratch: &Scratch) -> (History, TestPrometheus) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let started = Instant::now();
    let step = |what: &str| eprintln!("{what} after {:.1?}", started.elapsed());
    let end = now / MINUTE * MINUTE;
    let (history, files) = generate(&scratch.path, end);
    step("history generated");
    blocks_from_openmetrics(&files, &scratch.join("data"))
        .unwrap_or_else(|error| panic!("{error}"));
    step("history blocks written");
    let (five_minutes, hourly) = rule_files(scratch);
    let prometheus = TestPrometheus::start(scratch);
    // Each group from the first time its window is full of data.
    backfill(
        scratch,
        &prometheus,
        &five_minutes,
        history.start + 5 * MINUTE,
        end,
    );
    drop(prometheus);
    step("5-minute rates backfilled");
    let prometheus = TestPrometheus::start(scratch);
    // From a 2-hour block boundary: promtool (2.42) stops the whole backfill when a group's
    // first evaluation in its first block falls after that block's end, which an hourly group
    // started late in a block can do (its evaluation offset hashes the file's path, random
    // here). From a boundary the first evaluation is always within the block.
    let hourly_start = (history.start + HOUR).div_ceil(2 * HOUR) * (2 * HOUR);
    backfill(scratch, &prometheus, &hourly, hourly_start, end);
    drop(prometheus);
    step("hourly rates backfilled");
    (history, TestPrometheus::start(scratch))
}

/// The spec of every generated service: 99 % over 30 days, the workbook's burn-rate windows.
fn spec() -> InvoiceServiceSpec {
    serde_json::from_value(json!({
        "workload": {"deployment": "api"},
        "slos": {"availability": {"objective": OBJECTIVE_PERCENT.to_string(), "window": "30d"}}
    }))
    .expect("test spec is valid")
}

fn selector(service: &str) -> ServiceSelector {
    ServiceSelector::for_service(NAMESPACE, service, &spec())
}

/// The operator's fleet query for the generated services, reading long windows from `source`.
fn fleet_query(source: SliSource) -> FleetQuery {
    let specs: Vec<InvoiceServiceSpec> = FLEET.iter().map(|_| spec()).collect();
    FleetQuery::for_services(&specs, Duration::from_secs(60), Duration::from_secs(120))
        .reading(source)
        .reusing(None, Instant::now())
}

/// The operator's evaluation of `service` from `fleet`, as the controller makes it.
fn evaluation(fleet: &FleetMetrics, service: &str) -> Evaluation {
    let observation = Observation {
        at: Default::default(),
        metrics: fleet.service(&selector(service)),
        pods: Vec::new(),
        deployments: Vec::new(),
        not_ready_nodes: Default::default(),
        mode_value: None,
        mode_set_by: None,
    };
    evaluate(&spec(), &observation, Duration::from_secs(60))
}

fn assert_relative(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= TOLERANCE * expected.abs(),
        "{what}: measured {actual}, ground truth {expected} (tolerance {} %)",
        TOLERANCE * 100.0
    );
}

/// Rates over `window` match the ground truth: total and 5xx rate, and their ratio.
fn assert_rates(fleet: &FleetMetrics, history: &History, service: &str, window: Duration) {
    let truth = history.truth(service, window);
    let measured = fleet
        .service(&selector(service))
        .rates(window)
        .unwrap_or_else(|reason| panic!("{service} over {window:?} is unknown: {reason}"));
    let what = |quantity: &str| format!("{service} {quantity} over {window:?}");
    assert_relative(measured.total, truth.total, &what("request rate"));
    assert_relative(
        measured.server_errors,
        truth.server_errors,
        &what("5xx rate"),
    );
    assert_relative(
        measured.server_errors / measured.total,
        truth.server_errors / truth.total,
        &what("5xx ratio"),
    );
}

/// Availability, error budget and the ticket burn rates (long windows 1 d and 3 d) of the
/// operator's evaluation match the ground truth.
fn assert_slo(fleet: &FleetMetrics, history: &History, service: &str) {
    let evaluation = evaluation(fleet, service);
    let ratio = |window| {
        let truth = history.truth(service, window);
        truth.server_errors / truth.total
    };
    let budget = 1.0 - OBJECTIVE_PERCENT / 100.0;
    let slo_ratio = ratio(SLO_WINDOW);
    let availability = evaluation
        .availability
        .unwrap_or_else(|reason| panic!("{service}: availability unknown: {reason}"));
    // 1 % of the ratio, in percentage points: the tolerance of the ratio carried over.
    let points = TOLERANCE * slo_ratio * 100.0;
    assert!(
        (availability - (1.0 - slo_ratio) * 100.0).abs() <= points,
        "{service}: availability {availability} %, ground truth {} % ± {points}",
        (1.0 - slo_ratio) * 100.0
    );
    let remaining = evaluation
        .error_budget_remaining
        .unwrap_or_else(|reason| panic!("{service}: error budget unknown: {reason}"));
    let expected = 1.0 - slo_ratio / budget;
    let slack = TOLERANCE * slo_ratio / budget;
    assert!(
        (remaining - expected).abs() <= slack,
        "{service}: error budget remaining {remaining}, ground truth {expected} ± {slack}"
    );
    for long in [ONE_DAY, THREE_DAYS] {
        let burn = evaluation
            .burn_rates
            .iter()
            .find(|burn| burn.long == long)
            .expect("the workbook's ticket windows");
        let rate = burn
            .long_rate
            .unwrap_or_else(|reason| panic!("{service}: burn rate over {long:?}: {reason}"));
        assert_relative(
            rate,
            ratio(long) / budget,
            &format!("{service} burn rate over {long:?}"),
        );
    }
}

/// The raw 30-day query, as the operator plans it in `--sli-source=raw`.
fn raw_slo_window_promql() -> String {
    fleet_query(SliSource::Raw)
        .plan(&MetricProfile::default())
        .into_iter()
        .find(|planned| planned.kind == QueryKind::ServiceRates(SLO_WINDOW))
        .expect("the SLO window is planned")
        .promql
}

#[tokio::test]
async fn thirty_days_of_history_are_answered_from_the_recorded_series() {
    let started = Instant::now();
    let scratch = Scratch::create();
    let (history, prometheus) = prepare(&scratch);
    eprintln!(
        "history, blocks and rule backfill ready in {:?}",
        started.elapsed()
    );
    let limits = Limits {
        query_timeout: QUERY_TIMEOUT,
        ..Limits::default()
    };
    let source = Prometheus::new(&prometheus.url, MetricProfile::default(), limits)
        .expect("the url is valid");
    let covered = FLEET
        .iter()
        .map(|service| service.name)
        .filter(|name| *name != NEWCOMER);

    // (a) Raw: Prometheus refuses the 30-day window for exceeding its sample limit; the
    // operator reads that as unknown (QueryFailed) for every service. Shorter raw windows
    // still answer, and match the ground truth.
    let promql = raw_slo_window_promql();
    let client = prometheus_http_query::Client::try_from(prometheus.url.as_str()).expect("url");
    let refusal = client
        .query(promql.as_str())
        .get()
        .await
        .expect_err("the raw 30-day query exceeds the sample limit");
    assert!(
        refusal
            .to_string()
            .contains("query processing would load too many samples into memory"),
        "refused for another reason: {refusal}"
    );
    let asked = Instant::now();
    let raw = source.fleet(&fleet_query(SliSource::Raw)).await;
    eprintln!("raw fleet query answered in {:?}", asked.elapsed());
    for service in FLEET.iter().map(|service| service.name) {
        let metrics = raw.service(&selector(service));
        assert_eq!(
            metrics.rates(SLO_WINDOW),
            Err(UnknownReason::QueryFailed),
            "{service}"
        );
        assert_rates(&raw, &history, service, THREE_DAYS);
    }

    // (b) Recorded: every window of the services with 31 days of history answers and matches
    // the ground truth, and so do availability, error budget and the ticket burn rates.
    let asked = Instant::now();
    let recorded = source.fleet(&fleet_query(SliSource::Recorded)).await;
    eprintln!("recorded fleet query answered in {:?}", asked.elapsed());
    for service in covered.clone() {
        for window in [SLO_WINDOW, THREE_DAYS, ONE_DAY] {
            assert_rates(&recorded, &history, service, window);
        }
        assert_slo(&recorded, &history, service);
        // The burn-rate windows under a day come from the 5-minute rates too (the hour
        // averages 5-minute rates, so it reaches 5 minutes further back: its total rate is
        // held to 5 % on the daily traffic cycle, the 5xx share to the usual tolerance).
        for window in [Duration::from_secs(3600), Duration::from_secs(6 * 3600)] {
            let truth = history.truth(service, window);
            let measured = recorded
                .service(&selector(service))
                .rates(window)
                .unwrap_or_else(|reason| panic!("{service} over {window:?}: {reason}"));
            assert!(
                (measured.total - truth.total).abs() <= 0.05 * truth.total,
                "{service} over {window:?}: total {} against {}",
                measured.total,
                truth.total
            );
            assert_relative(
                measured.server_errors / measured.total,
                truth.server_errors / truth.total,
                &format!("{service} 5xx ratio over {window:?}"),
            );
        }
    }

    // (c) The service added 10 days ago: its recorded series do not cover 30 days, so that
    // window is not yet measurable (not a number, not NoData), while 3 days is measured.
    let newcomer = recorded.service(&selector(NEWCOMER));
    assert_eq!(
        newcomer.rates(SLO_WINDOW),
        Err(UnknownReason::WindowNotYetRecorded)
    );
    assert_eq!(
        evaluation(&recorded, NEWCOMER).availability,
        Err(UnknownReason::WindowNotYetRecorded)
    );
    assert_rates(&recorded, &history, NEWCOMER, THREE_DAYS);

    // Auto: the covered services read the recorded series; the newcomer's raw fallback is
    // refused by the sample limit too, so it stays WindowNotYetRecorded. Only the SLO window
    // is asked: the recorded 30-day query is the costly one (see QUERY_TIMEOUT).
    let mut auto_query = FleetQuery::new(Duration::from_secs(60), Duration::from_secs(120));
    auto_query.windows.insert(SLO_WINDOW);
    let auto_query = auto_query
        .reading(SliSource::Auto)
        .reusing(None, Instant::now());
    assert!(auto_query.raw_fallback.contains(&SLO_WINDOW));
    let asked = Instant::now();
    let auto = source.fleet(&auto_query).await;
    eprintln!("auto fleet query answered in {:?}", asked.elapsed());
    for service in covered {
        assert_rates(&auto, &history, service, SLO_WINDOW);
    }
    assert_eq!(
        auto.service(&selector(NEWCOMER)).rates(SLO_WINDOW),
        Err(UnknownReason::WindowNotYetRecorded)
    );
    eprintln!("done in {:?}", started.elapsed());
}
