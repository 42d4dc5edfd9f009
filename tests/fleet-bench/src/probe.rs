//! What the benchmark reads while the operator runs: the operator and simulator processes,
//! `/proc/<pid>` (RSS, CPU time), the operator's `/metrics`, its JSON log (one line per fleet
//! cycle) and Prometheus' own CPU counter.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use invoice_operator_e2e::{free_port, http_request};

/// A benchmark child process (operator or simulator), killed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// Loopback address of its HTTP server.
    pub address: String,
    /// Its stdout and stderr.
    pub log_path: PathBuf,
    target_file: Option<PathBuf>,
}

impl Process {
    /// Starts `binary` with `args`; `{address}` in an argument is replaced by a free loopback
    /// address.
    pub fn start(
        binary: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_path: PathBuf,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(binary)
            .args(args.iter().map(|arg| arg.replace("{address}", &address)))
            .envs(env.iter().copied())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let target_file = (binary.file_name().and_then(|name| name.to_str()) == Some("fleet-sim"))
            .then(|| std::env::var_os("PROMETHEUS_TARGETS_DIR"))
            .flatten()
            .map(|directory| PathBuf::from(directory).join(format!("fleet-sim-{port}.json")));
        Ok(Self {
            child,
            address,
            log_path,
            target_file,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `path` until it answers 200, or fails after `timeout` (or when the process died).
    pub fn wait_http_ok(&mut self, path: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status}; see {}",
                    self.address,
                    self.log_path.display()
                );
            }
            if http_request(&self.address, "GET", path, "").0 == 200 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{}{path} not OK after {timeout:?}", self.address);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        invoice_operator_e2e::stop(&mut self.child, self.target_file.as_deref());
    }
}

/// A binary next to this one (the benchmark is built in the same profile as the operator).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let binary = me.with_file_name(name);
    if !binary.exists() {
        bail!(
            "{} is missing: build it in the same profile (`make bench` does)",
            binary.display()
        );
    }
    Ok(binary)
}

/// RSS and CPU time of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub peak_rss_kib: u64,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
pub fn proc_stats(pid: u32, ticks_per_second: f64) -> anyhow::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // `after_name` starts at field 3 (state), so field N is at index N - 3.
    let cpu_ticks = ticks(14 - 3) + ticks(15 - 3);
    Ok(ProcStats {
        rss_kib: field("VmRSS:"),
        peak_rss_kib: field("VmHWM:"),
        cpu_seconds: cpu_ticks / ticks_per_second,
    })
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Sums every sample of `name` (all label sets) in a Prometheus/OpenMetrics text exposition.
pub fn sum_metric(text: &str, name: &str, label_filter: Option<&str>) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| label_filter.is_none_or(|filter| line.contains(filter)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The operator's counters the benchmark compares before and after a window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Prometheus queries sent.
    pub queries: f64,
    /// Prometheus queries that failed.
    pub query_errors: f64,
    /// Samples Prometheus loaded for the queries.
    pub samples: f64,
    /// Of those, for the services' SLO and burn-rate windows (`service_rates`, and the raw
    /// fallback of `auto`): what the SLI source changes.
    pub slo_samples: f64,
    /// Kubernetes reads (GET without watch: get and list).
    pub reads: f64,
    /// Watch requests started.
    pub watches: f64,
    /// Kubernetes writes (POST, PUT, PATCH, DELETE).
    pub writes: f64,
    /// Fleet cycles that overran the interval.
    pub overruns: f64,
    /// Reconciles that failed.
    pub reconcile_errors: f64,
}

impl Counters {
    /// Parses the operator's `/metrics`.
    pub fn parse(text: &str) -> Self {
        let requests = "invoiceops_kubernetes_requests_total";
        let all_requests = sum_metric(text, requests, None);
        let gets = sum_metric(text, requests, Some("method=\"GET\""));
        let watches = sum_metric(text, requests, Some("watch=\"true\""));
        Self {
            queries: sum_metric(text, "invoiceops_prometheus_queries_total", None),
            query_errors: sum_metric(text, "invoiceops_prometheus_query_errors_total", None),
            samples: sum_metric(text, "invoiceops_prometheus_query_samples_total", None),
            slo_samples: sum_metric(
                text,
                "invoiceops_prometheus_query_samples_total",
                Some("kind=\"service_rates\""),
            ) + sum_metric(
                text,
                "invoiceops_prometheus_query_samples_total",
                Some("kind=\"raw_fallback_rates\""),
            ),
            reads: gets - watches,
            watches,
            writes: all_requests - gets,
            overruns: sum_metric(text, "invoiceops_fleet_cycle_overruns_total", None),
            reconcile_errors: sum_metric(text, "invoiceops_reconcile_errors_total", None),
        }
    }

    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            queries: self.queries - earlier.queries,
            query_errors: self.query_errors - earlier.query_errors,
            samples: self.samples - earlier.samples,
            slo_samples: self.slo_samples - earlier.slo_samples,
            reads: self.reads - earlier.reads,
            watches: self.watches - earlier.watches,
            writes: self.writes - earlier.writes,
            overruns: self.overruns - earlier.overruns,
            reconcile_errors: self.reconcile_errors - earlier.reconcile_errors,
        }
    }
}

/// Scrapes the operator's counters.
pub fn counters(operator: &Process) -> anyhow::Result<Counters> {
    let (status, body) = http_request(&operator.address, "GET", "/metrics", "");
    if status != 200 {
        bail!("operator /metrics answered {status}");
    }
    Ok(Counters::parse(&body))
}

/// `host:port` of a loopback `http://host:port/` URL, for [`http_request`].
pub fn http_address(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

/// One of Prometheus' own metrics, from its `/metrics`.
fn prometheus_metric(prometheus_url: &str, name: &str) -> anyhow::Result<f64> {
    let (status, body) = http_request(http_address(prometheus_url), "GET", "/metrics", "");
    if status != 200 {
        bail!("prometheus /metrics answered {status}");
    }
    Ok(sum_metric(&body, name, None))
}

/// Prometheus' own CPU seconds (`process_cpu_seconds_total`).
pub fn prometheus_cpu_seconds(prometheus_url: &str) -> anyhow::Result<f64> {
    prometheus_metric(prometheus_url, "process_cpu_seconds_total")
}

/// Prometheus' resident memory, MiB (`process_resident_memory_bytes`).
pub fn prometheus_rss_mib(prometheus_url: &str) -> anyhow::Result<f64> {
    Ok(prometheus_metric(prometheus_url, "process_resident_memory_bytes")? / 1024.0 / 1024.0)
}

/// One completed fleet cycle, from the operator's `fleet cycle complete` log line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cycle {
    /// Services in the cycle.
    pub services: u64,
    /// Tick to the last reconcile, milliseconds.
    pub cycle_ms: f64,
    /// The batched Prometheus part, milliseconds.
    pub query_ms: f64,
}

/// Every fleet cycle logged in `log` (JSON lines).
pub fn cycles(log: &str) -> Vec<Cycle> {
    log.lines()
        .filter(|line| line.contains("fleet cycle complete"))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|entry| {
            // The operator writes the fields at the top level of each line.
            let fields = &entry;
            Some(Cycle {
                services: fields.get("services")?.as_u64()?,
                cycle_ms: fields.get("cycle_ms")?.as_f64()?,
                query_ms: fields.get("query_ms")?.as_f64()?,
            })
        })
        .collect()
}

/// The `q` quantile (0..=1) of `values` by the nearest-rank method; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // Nearest rank: ceil(q * n), 1-based.
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_split_reads_watches_and_writes() {
        let text = r#"# TYPE invoiceops_kubernetes_requests counter
invoiceops_kubernetes_requests_total{method="GET",watch="false"} 7
invoiceops_kubernetes_requests_total{method="GET",watch="true"} 5
invoiceops_kubernetes_requests_total{method="PATCH",watch="false"} 3
invoiceops_kubernetes_requests_total{method="POST",watch="false"} 2
invoiceops_prometheus_queries_total{kind="pod_rates"} 14
invoiceops_prometheus_queries_total{kind="service_rates"} 28
invoiceops_fleet_cycle_overruns_total 1
# EOF
"#;
        let counters = Counters::parse(text);
        assert_eq!(counters.reads, 7.0);
        assert_eq!(counters.watches, 5.0);
        assert_eq!(counters.writes, 5.0);
        assert_eq!(counters.queries, 42.0);
        assert_eq!(counters.overruns, 1.0);
        assert_eq!(counters.query_errors, 0.0);
    }

    #[test]
    fn a_metric_name_prefix_is_not_a_match() {
        let text = "process_cpu_seconds_total 12.5\nprocess_cpu_seconds_total_extra 99\n";
        assert_eq!(sum_metric(text, "process_cpu_seconds_total", None), 12.5);
    }

    #[test]
    fn cycles_come_from_json_log_lines() {
        let log = r#"{"timestamp":"t","level":"INFO","message":"fleet cycle complete","services":2000,"cycle_ms":812,"query_ms":650,"target":"invoice_operator::controller"}
{"timestamp":"t","level":"INFO","message":"remediating"}
not json at all, fleet cycle complete
"#;
        assert_eq!(
            cycles(log),
            [Cycle {
                services: 2000,
                cycle_ms: 812.0,
                query_ms: 650.0
            }]
        );
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(50.0));
        assert_eq!(quantile(&values, 0.99), Some(99.0));
        assert_eq!(quantile(&[3.0], 0.99), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn proc_stats_reads_this_process() {
        let stats = proc_stats(std::process::id(), ticks_per_second()).expect("/proc is there");
        assert!(stats.rss_kib > 0);
        assert!(stats.peak_rss_kib >= stats.rss_kib);
    }
}
