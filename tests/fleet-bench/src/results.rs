//! What one benchmark run measured, kept as JSON next to BENCHMARKS.md so the report and
//! the plot can be rebuilt without rerunning. No IO.

use serde::{Deserialize, Serialize};

use crate::{probe::quantile, rules::RuleCost};

/// Measurements of one fleet size in one query mode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Run {
    /// `batched`, `recorded` or `per-service`.
    pub mode: String,
    /// Which steady-state run of this mode and size (1, 2, 3, ...).
    #[serde(default)]
    pub repeat: usize,
    /// InvoiceServices.
    pub services: usize,
    /// Their pods.
    pub pods: usize,
    /// Seconds from the operator's start until it was ready (caches synced).
    pub ready_seconds: f64,
    /// Seconds of warm-up until an interval passed without API writes (first statuses).
    pub warmup_seconds: f64,
    /// API writes during the warm-up.
    pub warmup_writes: f64,
    /// Length of the steady-state window, seconds.
    pub window_seconds: f64,
    /// Evaluation intervals in the window.
    pub intervals: f64,
    /// Whole fleet cycles (tick to last reconcile) completed in the window, milliseconds.
    pub cycle_ms: Vec<f64>,
    /// The batched Prometheus part of each of those cycles, milliseconds.
    pub query_ms: Vec<f64>,
    /// Cycles that overran the interval in the window.
    pub overruns: f64,
    /// Prometheus queries per interval.
    pub queries_per_interval: f64,
    /// Samples Prometheus loaded for the operator's queries per interval (its query
    /// statistics, `invoiceops_prometheus_query_samples_total`).
    #[serde(default)]
    pub samples_per_interval: f64,
    /// Of those, for the SLO and burn-rate windows (query kind `service_rates`).
    #[serde(default)]
    pub slo_samples_per_interval: f64,
    /// Failed Prometheus queries in the window.
    pub query_errors: f64,
    /// API reads (get, list) per interval.
    pub reads_per_interval: f64,
    /// Watches started per interval.
    pub watches_per_interval: f64,
    /// API writes per interval.
    pub writes_per_interval: f64,
    /// Reconciles that failed in the window.
    pub reconcile_errors: f64,
    /// Operator RSS at the end of the window, MiB.
    pub rss_mib: f64,
    /// Operator peak RSS over its life, MiB.
    pub peak_rss_mib: f64,
    /// Mean operator CPU over the window, cores.
    pub cpu_cores: f64,
    /// Mean Prometheus CPU over the window, cores.
    pub prometheus_cpu_cores: f64,
    /// Prometheus RSS at the end of the window, MiB.
    #[serde(default)]
    pub prometheus_rss_mib: f64,
    /// Raw request series (`invoice_http_requests_total`) in Prometheus.
    #[serde(default)]
    pub raw_series: f64,
    /// What the services' statuses showed of their SLOs at the end of the window.
    #[serde(default)]
    pub slo_answers: SloAnswers,
    /// Faults injected (measured once per mode and size, after all its steady-state runs,
    /// with a fresh operator, and kept with the mode's last run).
    pub faults: usize,
    /// Seconds from each injection to the operator's recorded action, for faults acted on.
    pub fault_to_action_seconds: Vec<f64>,
    /// Seconds from Prometheus first showing the pod over the threshold (polled every second)
    /// to the recorded action: the operator's own part.
    #[serde(default)]
    pub visible_to_action_seconds: Vec<f64>,
    /// Actions taken for the faults, e.g. `RestartPod`.
    pub actions: Vec<String>,
}

impl Run {
    /// The `q` quantile of the fleet cycle time, seconds.
    pub fn cycle_seconds(&self, q: f64) -> Option<f64> {
        quantile(&self.cycle_ms, q).map(|ms| ms / 1000.0)
    }

    /// The `q` quantile of injection-to-action, seconds.
    pub fn reaction_seconds(&self, q: f64) -> Option<f64> {
        quantile(&self.fault_to_action_seconds, q)
    }

    /// The `q` quantile of visible-in-Prometheus-to-action, seconds.
    pub fn detection_seconds(&self, q: f64) -> Option<f64> {
        quantile(&self.visible_to_action_seconds, q)
    }
}

/// The services' SLOs as their statuses showed them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SloAnswers {
    /// Services looked at.
    pub services: usize,
    /// Services whose status had the availability, the error budget and a burn rate for
    /// every window of the default burn-rate alerts (5m, 30m, 1h, 2h, 6h, 1d, 3d).
    pub answered: usize,
    /// Services with a window reported as not yet recorded.
    pub not_yet_recorded: usize,
    /// Services whose availability was the backfilled history's within 0.001 points.
    pub matching_history: usize,
}

/// Rule evaluation cost of the operator's recording rules and of Sloth's for the same SLOs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Peer {
    /// SLOs (services) the rules cover.
    pub services: usize,
    /// Length of each window, seconds.
    pub window_seconds: f64,
    /// Our rules, measured while they were the only rules loaded.
    pub ours: RuleCost,
    /// Sloth's, measured while both were loaded.
    pub sloth: RuleCost,
    /// Our rules in the window with Sloth's loaded too.
    pub ours_beside_sloth: RuleCost,
    /// Prometheus' mean CPU (cores) with our rules only, and with both.
    pub prometheus_cpu_ours: f64,
    /// With Sloth's rules loaded too.
    pub prometheus_cpu_both: f64,
    /// Prometheus RSS (MiB) at the end of each window.
    pub prometheus_rss_ours: f64,
    /// With Sloth's rules loaded too.
    pub prometheus_rss_both: f64,
}

/// Where and how the benchmark ran.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Environment {
    /// UTC time the run started.
    pub started: String,
    /// Minutes the whole run took.
    pub minutes: f64,
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// `uname -sr`.
    pub kernel: String,
    /// invoice-operator version and commit.
    pub operator: String,
    /// kube-apiserver's `/version`.
    pub kubernetes: String,
    /// Prometheus' build version.
    pub prometheus: String,
    /// The cluster binaries' cache key (Kubernetes, etcd, kwok, helm versions).
    pub cluster_binaries: String,
    /// The command line.
    pub command: String,
    /// Evaluation interval, seconds.
    pub interval_seconds: f64,
    /// Prometheus scrape interval, seconds.
    pub scrape_seconds: f64,
    /// Namespaces the services were spread over.
    pub namespaces: usize,
    /// Pods per service.
    pub pods_per_service: usize,
}

/// A whole benchmark run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    /// Where and how.
    pub environment: Environment,
    /// One entry per size, mode and steady-state run, in the order they ran.
    pub runs: Vec<Run>,
    /// The Sloth comparison at the largest size.
    #[serde(default)]
    pub peer: Option<Peer>,
}
