//! The health signals decisions are made from: what Prometheus measured (per pod, per
//! service, per SLO window) and what the API server says about pods and Deployments. These are
//! plain data, filled by the IO steps (`prometheus`, the controller's caches) and read by the
//! pure steps (`evaluate`, `engine`). No IO.
//!
//! Unknown is not Unhealthy: every measurement is either a number or an [`UnknownReason`],
//! and an unknown value never triggers an action.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Duration,
};

use jiff::Timestamp;

/// Why a measurement has no trustworthy value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnknownReason {
    /// Prometheus could not be reached (connection refused, timeout).
    PrometheusUnreachable,
    /// Prometheus answered with an error or a malformed body for this query.
    QueryFailed,
    /// The query returned no series for this service or pod.
    NoData,
    /// The series exists but its last sample is too old to describe now.
    Stale,
    /// The query returned NaN or an infinity (e.g. 0/0 when nothing was served).
    NotANumber,
    /// Too few requests for a ratio to mean anything (below `signals.minRequestRate`).
    LowTraffic,
    /// The recorded series (the operator's recording rules) do not yet cover the whole
    /// window, e.g. rules added yesterday under a 30-day window, and no raw answer could
    /// stand in (`--sli-source=recorded`, or the raw query was refused).
    WindowNotYetRecorded,
}

impl UnknownReason {
    /// The reason as used in conditions, events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PrometheusUnreachable => "PrometheusUnreachable",
            Self::QueryFailed => "QueryFailed",
            Self::NoData => "NoData",
            Self::Stale => "Stale",
            Self::NotANumber => "NotANumber",
            Self::LowTraffic => "LowTraffic",
            Self::WindowNotYetRecorded => "WindowNotYetRecorded",
        }
    }
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A measured value, or why there is none.
pub type Measured<T> = Result<T, UnknownReason>;

/// Turns a raw sample into a measurement: NaN and infinities are not numbers.
pub fn measured(sample: f64) -> Measured<f64> {
    if sample.is_finite() {
        Ok(sample)
    } else {
        Err(UnknownReason::NotANumber)
    }
}

/// Request rates over one window, in requests per second, split by HTTP status class.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RequestRates {
    /// All requests.
    pub total: f64,
    /// 5xx responses.
    pub server_errors: f64,
    /// 4xx responses.
    pub client_errors: f64,
}

impl RequestRates {
    /// The 5xx ratio, or `LowTraffic` below `min_request_rate` requests per second.
    pub fn error_ratio(&self, min_request_rate: f64) -> Measured<f64> {
        self.ratio(self.server_errors, min_request_rate)
    }

    /// The 4xx ratio, or `LowTraffic` below `min_request_rate` requests per second.
    pub fn client_error_ratio(&self, min_request_rate: f64) -> Measured<f64> {
        self.ratio(self.client_errors, min_request_rate)
    }

    fn ratio(&self, part: f64, min_request_rate: f64) -> Measured<f64> {
        let total = measured(self.total)?;
        let part = measured(part)?;
        if total <= 0.0 || total < min_request_rate {
            return Err(UnknownReason::LowTraffic);
        }
        Ok((part / total).clamp(0.0, 1.0))
    }

    /// Adds another set of rates (rates over the same window are additive).
    pub fn add(&mut self, other: &RequestRates) {
        self.total += other.total;
        self.server_errors += other.server_errors;
        self.client_errors += other.client_errors;
    }
}

/// Identifies a service in metrics: the `namespace` and `service` label values.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The `namespace` label.
    pub namespace: String,
    /// The `service` label.
    pub service: String,
}

/// What Prometheus measured for one pod, over the short (detection) window.
#[derive(Clone, Debug, PartialEq)]
pub struct PodMetrics {
    /// The `zone` label of the pod's series, if any.
    pub zone: Option<String>,
    /// Request rates by status class.
    pub rates: Measured<RequestRates>,
    /// The service's latency percentile, in seconds, for this pod alone.
    pub latency_seconds: Measured<f64>,
    /// Database pool utilisation (active / max) reported by this pod.
    pub db_pool_utilization: Measured<f64>,
}

/// What Prometheus measured for one service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceMetrics {
    /// Request rates per window (the detection window, every burn-rate window and the SLO
    /// window), keyed by window length.
    pub windows: BTreeMap<Duration, Measured<RequestRates>>,
    /// The configured latency percentile over the detection window, in seconds.
    pub latency_seconds: Measured<f64>,
    /// Database pool utilisation (sum of active / sum of max over the service's pods).
    pub db_pool_utilization: Measured<f64>,
    /// When the serving certificate expires (Unix seconds).
    pub certificate_expires_at: Measured<f64>,
    /// Per-pod measurements, keyed by pod name.
    pub pods: BTreeMap<String, PodMetrics>,
}

impl ServiceMetrics {
    /// A service Prometheus knows nothing about: every value unknown for `reason`.
    pub fn unknown(reason: UnknownReason) -> Self {
        Self {
            windows: BTreeMap::new(),
            latency_seconds: Err(reason),
            db_pool_utilization: Err(reason),
            certificate_expires_at: Err(reason),
            pods: BTreeMap::new(),
        }
    }

    /// Rates over `window`, `NoData` when that window was not measured.
    pub fn rates(&self, window: Duration) -> Measured<RequestRates> {
        self.windows
            .get(&window)
            .copied()
            .unwrap_or(Err(UnknownReason::NoData))
    }
}

/// What the API server says about one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodState {
    /// Pod name.
    pub name: String,
    /// The Deployment the pod belongs to.
    pub deployment: String,
    /// The zone of the pod's node (or of its Deployment, for per-zone Deployments).
    pub zone: Option<String>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// Since when the pod has been unready (the Ready condition's last transition).
    pub unready_since: Option<Timestamp>,
    /// Sum of container restart counts.
    pub restart_count: i32,
    /// A container is waiting in CrashLoopBackOff.
    pub crash_loop: bool,
    /// The pod is being deleted.
    pub terminating: bool,
}

/// What the API server says about one Deployment (or Argo Rollout: the workload's kind).
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentState {
    /// Deployment name.
    pub name: String,
    /// Its zone, for per-zone Deployments.
    pub zone: Option<String>,
    /// Desired replicas (`spec.replicas`).
    pub replicas: i32,
    /// Ready replicas (`status.readyReplicas`).
    pub ready_replicas: i32,
    /// Whether the Deployment exists at all.
    pub exists: bool,
    /// The field manager that last set `spec.replicas` (from its managed fields), if known.
    pub replicas_manager: Option<String>,
    /// When that manager last wrote it (its managed-fields entry's time), if known.
    pub replicas_set_at: Option<Timestamp>,
    /// For an Argo Rollout: why Argo Rollouts is changing its pods now (an update under way
    /// or paused), which holds every action; `None` for a Deployment or a settled Rollout.
    pub update: Option<String>,
    /// The zones its pod template's required node affinity keeps pods out of (by the
    /// service's zone label): where the failover of a single Deployment is seen to hold.
    pub excluded_zones: BTreeSet<String>,
    /// Who last wrote the pod template's affinity, and when.
    pub affinity_set_by: Option<FieldSetter>,
    /// The HorizontalPodAutoscaler that scales it (not KEDA's), if any.
    pub autoscaler: Option<AutoscalerFloor>,
}

/// The floor of the HorizontalPodAutoscaler that scales a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerFloor {
    /// The autoscaler's name.
    pub name: String,
    /// Its `minReplicas` (1 when unset).
    pub min_replicas: i32,
    /// Who last set `minReplicas`, and when.
    pub set_by: Option<FieldSetter>,
    /// The floor from before the operator's first ScaleOut, remembered on the autoscaler.
    pub before: Option<i32>,
}

/// Who last wrote a field, and when: the newest managed-fields entry that holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldSetter {
    /// The field manager.
    pub manager: Option<String>,
    /// When it wrote the field, if the entry says.
    pub at: Option<Timestamp>,
}

/// Nodes per zone that are NotReady, from the API server.
pub type NotReadyNodes = BTreeMap<String, u32>;

/// Everything observed about one service at one instant: the input of `evaluate`.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// When the observation was made.
    pub at: Timestamp,
    /// Prometheus measurements (or why there are none).
    pub metrics: ServiceMetrics,
    /// Pods of the service's Deployments.
    pub pods: Vec<PodState>,
    /// The service's Deployments.
    pub deployments: Vec<DeploymentState>,
    /// NotReady nodes per zone.
    pub not_ready_nodes: NotReadyNodes,
    /// The current value of the read-only mode key, if the switch is configured and the
    /// ConfigMap exists.
    pub mode_value: Option<String>,
    /// Who last wrote the mode key, and when.
    pub mode_set_by: Option<FieldSetter>,
}
