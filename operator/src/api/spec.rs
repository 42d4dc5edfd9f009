//! The desired state of an `InvoiceService`: what is healed, how health is measured, the SLOs
//! and the remediation policy. Every doc comment here becomes `kubectl explain` text, and the
//! CEL rules become API-server validation. No IO.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
// `Rule` and `ListMerge` in the `x_kube` attributes are resolved by the KubeSchema derive.
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    quantity::{Decimal, Duration},
    status::InvoiceServiceStatus,
};

/// The largest number of Deployments (zones) one InvoiceService may name. Real fleets run
/// 2-6 zones; the bound keeps the API server's CEL cost estimate for uniqueness rules low.
pub const MAX_ZONES: u32 = 16;

/// The largest action budget. The audit history keeps at least this many entries, so the
/// budget can be counted from status alone after an operator restart.
pub const MAX_ACTIONS_PER_WINDOW: u32 = 20;

/// An invoice service kept inside its SLOs by invoice-operator: which Deployments are healed,
/// which signals are watched, the availability and latency objectives, and the remediation
/// policy (which actions are allowed, in which order, within which safety rails).
// Each `printcolumn(...)` repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "invoiceops.dev",
    version = "v1alpha1",
    kind = "InvoiceService",
    plural = "invoiceservices",
    shortname = "invsvc",
    category = "invoiceops",
    namespaced,
    status = "InvoiceServiceStatus",
    derive = "PartialEq",
    doc = "An invoice service kept inside its SLOs by invoice-operator.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the service stands: Healthy, Degraded, Remediating, ReadOnly, FailedOver, Paused or Unknown"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the spec is valid and the operator is managing the service"
    ),
    printcolumn(
        name = "Availability",
        type_ = "string",
        json_path = ".status.slo.availability",
        description = "Measured availability (percent) over the SLO window"
    ),
    printcolumn(
        name = "Budget",
        type_ = "string",
        json_path = ".status.slo.errorBudgetRemainingPercent",
        description = "Error budget left in percent, like Availability (100 = untouched, 0 = spent, below 0 = overspent)"
    ),
    printcolumn(
        name = "Last Action",
        type_ = "string",
        json_path = ".status.lastAction.action",
        description = "The last remediation taken or proposed"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".status.lastAction.mode",
        description = "Whether that action was taken (Enforce) or only proposed (DryRun)"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1,
        description = "Why the service is or is not Ready"
    ),
    printcolumn(
        name = "Incident",
        type_ = "date",
        json_path = ".status.incidents.open.openedAt",
        priority = 1,
        description = "Age of the open incident, if any (status.incidents.open)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.remediation) || !has(self.remediation.ladder) || !self.remediation.ladder.exists(r, r == 'ZoneFailover') || (has(self.workload.deployments) ? size(self.workload.deployments) >= 2 : (has(self.workload.zones) && size(self.workload.zones) >= 2))"
).message("remediation.ladder: ZoneFailover needs at least two zones in workload (per-zone deployments, or zones for a single deployment)").field_path(".remediation.ladder"))]
#[serde(rename_all = "camelCase")]
pub struct InvoiceServiceSpec {
    /// The Deployments that are healed: one per availability zone, or a single Deployment
    /// spread over zones.
    pub workload: Workload,

    /// Where health comes from and how often it is evaluated.
    #[serde(default)]
    pub signals: Signals,

    /// The service level objectives the operator defends.
    pub slos: Slos,

    /// What the operator may do about an SLO at risk, in which order, and within which
    /// safety rails.
    #[serde(default)]
    pub remediation: Remediation,
}

/// The Deployments that make up the service. Set exactly one of `deployments` (one
/// Deployment per zone, the zonal-isolation layout) or `deployment` (one Deployment whose pods
/// spread over zones).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.deployments) != has(self.deployment)").message("set exactly one of workload.deployments (one per zone) and workload.deployment (one spread over zones)"))]
#[x_kube(validation = Rule::new("!has(self.zones) || has(self.deployment)").message("workload.zones is only for a single workload.deployment; per-zone deployments name their zone").field_path(".zones"))]
#[x_kube(validation = Rule::new("!has(self.zones) || !has(self.kind) || self.kind != 'Rollout'").message("workload.zones (failover by node affinity) is for a single Deployment: a Rollout's pod-template change goes through its own rollout steps; use one Rollout per zone (workload.deployments)").field_path(".zones"))]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// What `deployments`/`deployment` name: `Deployment` (apps/v1, the default) or `Rollout`
    /// (Argo Rollouts, argoproj.io/v1alpha1). A Rollout is restarted through its
    /// `spec.restartAt` and scaled through its scale subresource, and no action is taken while
    /// one of the service's Rollouts is updating or paused.
    #[serde(default, skip_serializing_if = "WorkloadKind::is_default")]
    pub kind: WorkloadKind,

    /// One Deployment per availability zone. Zone names and Deployment names must be unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_ZONES))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(e, e.zone == d.zone))").message("workload.deployments: zone names must be unique"))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(e, e.name == d.name))").message("workload.deployments: deployment names must be unique"))]
    pub deployments: Option<Vec<ZonalDeployment>>,

    /// A single Deployment whose pods spread over zones (by topology spread or affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub deployment: Option<String>,

    /// The zones a single `deployment` spreads over. Needed for zone failover, which then
    /// adds a node-affinity term excluding the failed zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_ZONES), inner(length(min = 1, max = 63)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(z, self.exists_one(y, y == z))").message("workload.zones: zone names must be unique"))]
    pub zones: Option<Vec<ZoneName>>,

    /// The node label that names a node's zone.
    #[serde(default = "default_zone_label")]
    #[schemars(length(min = 1, max = 317))]
    pub zone_label: String,
}

/// The kind of object a workload names.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum WorkloadKind {
    /// An apps/v1 Deployment.
    #[default]
    Deployment,
    /// An Argo Rollouts `Rollout` (argoproj.io/v1alpha1).
    Rollout,
}

impl WorkloadKind {
    /// The kind's name, as in `kind:` and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::Rollout => "Rollout",
        }
    }

    /// The API group (`apps` or `argoproj.io`).
    pub fn group(self) -> &'static str {
        match self {
            Self::Deployment => "apps",
            Self::Rollout => "argoproj.io",
        }
    }

    /// The API version within the group.
    pub fn version(self) -> &'static str {
        match self {
            Self::Deployment => "v1",
            Self::Rollout => "v1alpha1",
        }
    }

    /// The resource's plural name (`deployments`, `rollouts`).
    pub fn plural(self) -> &'static str {
        match self {
            Self::Deployment => "deployments",
            Self::Rollout => "rollouts",
        }
    }

    /// The resource, for dynamic API calls.
    pub fn api_resource(self) -> kube::core::ApiResource {
        kube::core::ApiResource {
            group: self.group().to_owned(),
            version: self.version().to_owned(),
            api_version: format!("{}/{}", self.group(), self.version()),
            kind: self.as_str().to_owned(),
            plural: self.plural().to_owned(),
        }
    }

    fn is_default(&self) -> bool {
        *self == Self::Deployment
    }
}

impl std::fmt::Display for WorkloadKind {
    /// Lower case, for messages: "deployment", "rollout".
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Deployment => "deployment",
            Self::Rollout => "rollout",
        })
    }
}

/// A zone name such as "az1" or "eu-west-1a".
pub type ZoneName = String;

fn default_zone_label() -> String {
    "topology.kubernetes.io/zone".to_owned()
}

/// A Deployment that runs the service in one zone.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZonalDeployment {
    /// Name of the Deployment, in the InvoiceService's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The zone its pods run in, as the `zone` label of the service's metrics names it.
    #[schemars(length(min = 1, max = 63))]
    pub zone: ZoneName,
}

/// Where health comes from and how often it is evaluated.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Signals {
    /// How often Prometheus signals are evaluated. Pod-status signals (unready, crash loop)
    /// are seen as soon as the API server reports them.
    #[serde(default = "default_interval")]
    pub interval: Duration,

    /// A Prometheus to query for this service only. When unset, the operator-wide Prometheus
    /// (and its credentials) is used, and the service's SLIs are evaluated in the fleet-wide
    /// batched queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,

    /// The value of the `service` label in the service's metrics. Defaults to the
    /// InvoiceService's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_label: Option<String>,

    /// Custom PromQL for this service, replacing the operator-wide metric profile. Evaluated
    /// per service (not batched), so use it for services whose metrics differ. The operator
    /// fills in `$window` (a range such as `5m`) and `$quantile` (such as `0.99`) and parses
    /// each query when it validates the spec: one that is not PromQL, or yields a range vector,
    /// makes the spec invalid (`InvalidSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<CustomQueries>,

    /// Request rate (requests per second) below which ratios are "insufficient data"
    /// (Unknown) rather than failures: three errors out of five requests is not an outage.
    #[serde(default = "default_min_request_rate")]
    pub min_request_rate: Decimal,

    /// Warn before the serving certificate expires. Read from a metric (cert-manager's
    /// `certmanager_certificate_expiration_timestamp_seconds` by default); the operator never
    /// reads Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expiry: Option<CertificateExpiry>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            prometheus: None,
            service_label: None,
            queries: None,
            min_request_rate: default_min_request_rate(),
            certificate_expiry: None,
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_static("15s")
}

fn default_min_request_rate() -> Decimal {
    Decimal::from_static("0.5")
}

/// A Prometheus server reachable from the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`: an
    /// absolute `http` or `https` URL with a host.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
}

/// Custom PromQL expressions. Each must return one instant-vector sample for the service.
/// The placeholders `$window` (a range such as `5m`) and, in `latency`, `$quantile` (such as
/// `0.99`) are filled in by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CustomQueries {
    /// Share of failed requests over `$window`, between 0 and 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub error_ratio: Option<String>,
    /// Requests per second over `$window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub request_rate: Option<String>,
    /// The `$quantile` latency in seconds over `$window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub latency: Option<String>,
    /// Database connection pool utilisation, between 0 and 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub db_pool_utilization: Option<String>,
}

/// When to warn about the serving certificate.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateExpiry {
    /// Raise `CertificateExpiring` this long before the certificate expires.
    #[serde(default = "default_warn_before")]
    pub warn_before: Duration,
    /// Name of the cert-manager Certificate (the `name` label of its expiry metric).
    /// Defaults to the service label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub certificate: Option<String>,
}

fn default_warn_before() -> Duration {
    Duration::from_static("30d")
}

/// The service level objectives.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Slos {
    /// Availability: the share of requests that must succeed (not 5xx) over the window.
    pub availability: AvailabilitySlo,
    /// Latency: the chosen percentile of request latency must stay under the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySlo>,
    /// Recovery objectives: how soon an incident must be over (RTO), and how long incidents
    /// take to settle. Incidents are recorded in `status.incidents` whether this is set or
    /// not; without it they are not judged against an RTO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySlo>,
}

/// The recovery objectives of an incident: one episode from a symptom (or an SLO breach) to
/// the service healthy again for `settleFor`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySlo {
    /// Recovery time objective: an incident must be recovered (healthy again) within this
    /// long of the fault showing in the signals, e.g. "15m". While an incident is open, the
    /// operator raises `NeedsAttention` with reason `RecoveryObjectiveAtRisk` before it passes:
    /// when the ladder has no rung left that can be taken and judged in time, or when
    /// `atRiskAfter` of it has passed.
    pub rto: Duration,
    /// Recovery point objective: the writes that may be lost, e.g. "5m". Documentation only,
    /// the operator measures nothing against it: read-only mode is what protects it, since
    /// writes are refused (the app answers 423), not lost, while the database is unsafe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<Duration>,
    /// Share of the RTO (0-1, exclusive of 0) after which an open incident that has not
    /// recovered is reported `RecoveryObjectiveAtRisk` whatever the ladder could still do.
    #[serde(default = "default_at_risk_after")]
    #[x_kube(validation = Rule::new("double(self) > 0.0 && double(self) <= 1.0").message("slos.recovery.atRiskAfter must be greater than 0 and at most 1 (a share of the RTO)"))]
    pub at_risk_after: Decimal,
    /// An incident closes once the service has been healthy this long; a symptom within it
    /// belongs to the same incident.
    #[serde(default = "default_settle_for")]
    pub settle_for: Duration,
}

/// How long a service must stay healthy before its incident closes, when `slos.recovery`
/// does not say.
pub const DEFAULT_SETTLE_FOR: &str = "5m";

fn default_at_risk_after() -> Decimal {
    Decimal::from_static("0.75")
}

fn default_settle_for() -> Duration {
    Duration::from_static(DEFAULT_SETTLE_FOR)
}

impl Slos {
    /// How long a service must stay healthy before its incident closes.
    pub fn settle_for(&self) -> std::time::Duration {
        self.recovery.as_ref().map_or_else(
            || default_settle_for().get(),
            |recovery| recovery.settle_for.get(),
        )
    }
}

/// An availability SLO, evaluated with multi-window, multi-burn-rate alerts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AvailabilitySlo {
    /// Target in percent, greater than 0 and less than 100, e.g. "99.95".
    #[x_kube(validation = Rule::new("double(self) > 0.0 && double(self) < 100.0").message("slos.availability.objective must be greater than 0 and less than 100 (percent)"))]
    pub objective: Decimal,

    /// The SLO window the error budget is counted over.
    #[serde(default = "default_slo_window")]
    pub window: Duration,

    /// Burn-rate alert windows. A `Page` alert fires when both its long and short window burn
    /// faster than `factor` and may act; a `Ticket` alert only reports. Defaults to the Google
    /// SRE workbook: page 14.4x over 1h/5m and 6x over 6h/30m, ticket 3x over 1d/2h and 1x
    /// over 3d/6h.
    #[serde(default = "default_burn_rate_windows")]
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(w, double(w.factor) > 0.0)").message("slos.availability.burnRateWindows: factor must be greater than 0"))]
    pub burn_rate_windows: Vec<BurnRateWindow>,
}

fn default_slo_window() -> Duration {
    Duration::from_static("30d")
}

/// One multi-window burn-rate alert.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BurnRateWindow {
    /// The long window, e.g. "1h": the burn must be sustained.
    pub long: Duration,
    /// The short window, e.g. "5m": the burn must still be going on.
    pub short: Duration,
    /// Burn rate: multiples of the rate that spends the budget exactly over the SLO window,
    /// e.g. "14.4".
    pub factor: Decimal,
    /// `Page` may trigger remediation; `Ticket` is only reported.
    pub severity: BurnSeverity,
}

/// How urgent a burn-rate alert is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BurnSeverity {
    /// Fast burn: the budget is gone in hours or days. May trigger remediation.
    Page,
    /// Slow burn: worth a look, not an action.
    Ticket,
}

/// The workbook's four alerts (Google SRE workbook, "Alerting on SLOs", table 5-8).
pub fn default_burn_rate_windows() -> Vec<BurnRateWindow> {
    let window = |long, short, factor, severity| BurnRateWindow {
        long: Duration::from_static(long),
        short: Duration::from_static(short),
        factor: Decimal::from_static(factor),
        severity,
    };
    vec![
        window("1h", "5m", "14.4", BurnSeverity::Page),
        window("6h", "30m", "6", BurnSeverity::Page),
        window("1d", "2h", "3", BurnSeverity::Ticket),
        window("3d", "6h", "1", BurnSeverity::Ticket),
    ]
}

/// A latency SLO.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencySlo {
    /// Latency the percentile must stay under, e.g. "200ms".
    pub threshold: Duration,
    /// The percentile, greater than 0 and less than 100, e.g. "99" or "99.9".
    #[serde(default = "default_percentile")]
    #[x_kube(validation = Rule::new("double(self) > 0.0 && double(self) < 100.0").message("slos.latency.percentile must be greater than 0 and less than 100"))]
    pub percentile: Decimal,
}

fn default_percentile() -> Decimal {
    Decimal::from_static("99")
}

/// What the operator may do about an SLO at risk.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.ladder) || !self.ladder.exists(r, r == 'ReadOnly') || has(self.readOnly)").message("remediation.ladder: ReadOnly needs remediation.readOnly (how to switch the app)").field_path(".ladder"))]
// A budget of 0 in Enforce mode can never act, and said so only in RemediationAllowed. The
// server applies the defaults (mode Enforce, maxActions 6) before the rule runs; `has` keeps
// it safe where they are missing. DryRun with 0 stays allowed: it never acts anyway.
#[x_kube(validation = Rule::new("!has(self.budget) || !has(self.budget.maxActions) || self.budget.maxActions > 0 || (has(self.mode) && self.mode == 'DryRun')").message("remediation.budget.maxActions: 0 allows no action at all; with mode Enforce it must be at least 1 (use mode DryRun, or paused, to keep the operator from acting)").field_path(".budget.maxActions"))]
#[serde(rename_all = "camelCase")]
pub struct Remediation {
    /// `Enforce` acts; `DryRun` decides and reports what it would have done
    /// (`WouldRemediate` events) without touching anything.
    #[serde(default)]
    pub mode: RemediationMode,

    /// Stop acting on this service (signals and status keep being reported). The annotation
    /// `invoiceops.dev/paused: "true"` does the same without editing the spec.
    #[serde(default)]
    pub paused: bool,

    /// The most actions (of any kind, reversals included) in a sliding window.
    #[serde(default)]
    pub budget: ActionBudget,

    /// Quiet time after each action before the next decision that acts.
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,

    /// How long an action has to improve the signal that caused it. If it did not, the next
    /// rung of the ladder is tried. Never shorter in effect than the operator's detection
    /// window (1m by default): the signal must be measured after the action.
    #[serde(default = "default_verify_window")]
    pub verify_window: Duration,

    /// Above this many unhealthy pods (a count, or a percentage of all pods such as "40%"),
    /// restarting pods one by one is not the answer: the decision escalates instead.
    #[serde(default = "default_max_unhealthy_pods")]
    #[x_kube(validation = Rule::new("type(self) == string ? self.matches('^(100|[1-9]?[0-9])%$') : self >= 0").message("remediation.maxUnhealthyPods must be a count or a percentage between 0% and 100%"))]
    pub max_unhealthy_pods: IntOrString,

    /// The escalation ladder, tried in order when an action did not help within
    /// `verifyWindow`. Each rung at most once, from RestartPod, RolloutRestart, ScaleOut,
    /// ReadOnly, ZoneFailover. When unset: all five, except ReadOnly without `readOnly` and
    /// ZoneFailover with fewer than two zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(s, s == r))").message("remediation.ladder: each rung may appear only once"))]
    pub ladder: Option<Vec<Rung>>,

    /// When a single pod is restarted (evicted, so PodDisruptionBudgets are respected).
    #[serde(default)]
    pub restart_pod: RestartPodPolicy,

    /// Scaling out under load, and back in after it passes.
    #[serde(default)]
    pub scale: ScalePolicy,

    /// Read-only mode for a struggling database. Without it, the ReadOnly rung is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<ReadOnlyPolicy>,

    /// Moving capacity out of a failing zone, and back.
    #[serde(default)]
    pub zone_failover: ZoneFailoverPolicy,

    /// Times when only the listed actions are allowed, e.g. month-end invoice runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub blackout_windows: Vec<BlackoutWindow>,
}

impl Default for Remediation {
    fn default() -> Self {
        Self {
            mode: RemediationMode::default(),
            paused: false,
            budget: ActionBudget::default(),
            cooldown: default_cooldown(),
            verify_window: default_verify_window(),
            max_unhealthy_pods: default_max_unhealthy_pods(),
            ladder: None,
            restart_pod: RestartPodPolicy::default(),
            scale: ScalePolicy::default(),
            read_only: None,
            zone_failover: ZoneFailoverPolicy::default(),
            blackout_windows: Vec::new(),
        }
    }
}

fn default_cooldown() -> Duration {
    Duration::from_static("2m")
}

fn default_verify_window() -> Duration {
    Duration::from_static("3m")
}

fn default_max_unhealthy_pods() -> IntOrString {
    IntOrString::String("40%".to_owned())
}

/// Whether decisions are carried out.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RemediationMode {
    /// Carry out decisions.
    #[default]
    Enforce,
    /// Decide and report ("would have"), act on nothing.
    DryRun,
}

/// A rung of the escalation ladder.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum Rung {
    /// Evict the unhealthy pod(s), at most `restartPod.maxUnavailable` at a time.
    RestartPod,
    /// Rolling restart of the Deployment(s), as `kubectl rollout restart` does.
    RolloutRestart,
    /// Add replicas, within `scale` bounds.
    ScaleOut,
    /// Switch the app to read-only mode through its mode ConfigMap.
    ReadOnly,
    /// Move capacity out of a failing zone.
    ZoneFailover,
}

impl Rung {
    /// The rung's name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RestartPod => "RestartPod",
            Self::RolloutRestart => "RolloutRestart",
            Self::ScaleOut => "ScaleOut",
            Self::ReadOnly => "ReadOnly",
            Self::ZoneFailover => "ZoneFailover",
        }
    }

    /// Every rung, in the default order.
    pub const ALL: [Rung; 5] = [
        Rung::RestartPod,
        Rung::RolloutRestart,
        Rung::ScaleOut,
        Rung::ReadOnly,
        Rung::ZoneFailover,
    ];
}

/// An action or reversal the operator can take; used in blackout allow-lists and in status.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum ActionKind {
    /// Evict one pod.
    RestartPod,
    /// Rolling restart of a Deployment.
    RolloutRestart,
    /// Add replicas.
    ScaleOut,
    /// Remove the replicas added by ScaleOut (reversal).
    ScaleIn,
    /// Switch the app to read-only mode.
    EnterReadOnly,
    /// Switch the app back to read-write mode (reversal).
    ExitReadOnly,
    /// Move capacity out of a failing zone.
    ZoneFailover,
    /// Restore the failed-over zone (reversal).
    ZoneFailBack,
}

impl ActionKind {
    /// The action's name, as used in status, events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RestartPod => "RestartPod",
            Self::RolloutRestart => "RolloutRestart",
            Self::ScaleOut => "ScaleOut",
            Self::ScaleIn => "ScaleIn",
            Self::EnterReadOnly => "EnterReadOnly",
            Self::ExitReadOnly => "ExitReadOnly",
            Self::ZoneFailover => "ZoneFailover",
            Self::ZoneFailBack => "ZoneFailBack",
        }
    }
}

/// The most actions in a sliding window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActionBudget {
    /// Actions allowed per window (at most 20, the length of the kept history; at least 1
    /// with mode Enforce).
    #[serde(default = "default_max_actions")]
    #[schemars(range(min = 0, max = MAX_ACTIONS_PER_WINDOW))]
    pub max_actions: u32,
    /// The sliding window.
    #[serde(default = "default_budget_window")]
    pub per: Duration,
}

impl Default for ActionBudget {
    fn default() -> Self {
        Self {
            max_actions: default_max_actions(),
            per: default_budget_window(),
        }
    }
}

fn default_max_actions() -> u32 {
    6
}

fn default_budget_window() -> Duration {
    Duration::from_static("1h")
}

/// When a single pod is restarted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestartPodPolicy {
    /// A pod unready this long is restarted.
    #[serde(default = "default_unready_for")]
    pub unready_for: Duration,
    /// Restart pods in CrashLoopBackOff.
    #[serde(default = "default_true")]
    pub crash_loop: bool,
    /// A pod whose 5xx ratio is above this (0-1) while the others are fine is restarted.
    #[serde(default = "default_pod_error_ratio")]
    #[x_kube(validation = Rule::new("double(self) <= 1.0").message("remediation.restartPod.errorRatioAbove must be between 0 and 1"))]
    pub error_ratio_above: Decimal,
    /// Pods restarted at once, at most.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 100))]
    pub max_unavailable: u32,
}

impl Default for RestartPodPolicy {
    fn default() -> Self {
        Self {
            unready_for: default_unready_for(),
            crash_loop: true,
            error_ratio_above: default_pod_error_ratio(),
            max_unavailable: 1,
        }
    }
}

fn default_unready_for() -> Duration {
    Duration::from_static("2m")
}

fn default_true() -> bool {
    true
}

fn default_one() -> u32 {
    1
}

fn default_pod_error_ratio() -> Decimal {
    Decimal::from_static("0.2")
}

/// Replica bounds and steps, per Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("remediation.scale.minReplicas must not exceed remediation.scale.maxReplicas").field_path(".minReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct ScalePolicy {
    /// Never fewer replicas per Deployment (a failed-over zone excepted).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 10_000))]
    pub min_replicas: i32,
    /// Never more replicas per Deployment.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_replicas: i32,
    /// Replicas added per Deployment by one ScaleOut.
    #[serde(default = "default_step")]
    #[schemars(range(min = 1, max = 1_000))]
    pub step: i32,
    /// Healthy this long after a ScaleOut, the added replicas are removed again.
    #[serde(default = "default_scale_in_after")]
    pub scale_in_after: Duration,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        Self {
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            step: default_step(),
            scale_in_after: default_scale_in_after(),
        }
    }
}

fn default_min_replicas() -> i32 {
    2
}

fn default_max_replicas() -> i32 {
    10
}

fn default_step() -> i32 {
    1
}

fn default_scale_in_after() -> Duration {
    Duration::from_static("10m")
}

/// Read-only mode: the app keeps serving reads while its database recovers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("double(self.exitWhen.dbPoolUtilizationBelow) < double(self.enterWhen.dbPoolUtilizationAbove)").message("remediation.readOnly.exitWhen.dbPoolUtilizationBelow must be lower than enterWhen.dbPoolUtilizationAbove (hysteresis)").field_path(".exitWhen.dbPoolUtilizationBelow"))]
#[serde(rename_all = "camelCase")]
pub struct ReadOnlyPolicy {
    /// Enter read-only mode when the pool stays this full this long.
    #[serde(default)]
    pub enter_when: ReadOnlyEnter,
    /// Leave read-only mode when the pool stays this empty this long.
    #[serde(default)]
    pub exit_when: ReadOnlyExit,
    /// How the app is told.
    pub switch: ModeSwitch,
}

/// The condition to enter read-only mode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadOnlyEnter {
    /// Database pool utilisation (0-1) above which the database is struggling.
    #[serde(default = "default_enter_utilization")]
    #[x_kube(validation = Rule::new("double(self) <= 1.0").message("remediation.readOnly.enterWhen.dbPoolUtilizationAbove must be between 0 and 1"))]
    pub db_pool_utilization_above: Decimal,
    /// For how long.
    #[serde(default = "default_enter_for", rename = "for")]
    pub for_: Duration,
}

impl Default for ReadOnlyEnter {
    fn default() -> Self {
        Self {
            db_pool_utilization_above: default_enter_utilization(),
            for_: default_enter_for(),
        }
    }
}

fn default_enter_utilization() -> Decimal {
    Decimal::from_static("0.95")
}

fn default_enter_for() -> Duration {
    Duration::from_static("1m")
}

/// The condition to leave read-only mode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadOnlyExit {
    /// Database pool utilisation (0-1) below which the database has recovered.
    #[serde(default = "default_exit_utilization")]
    #[x_kube(validation = Rule::new("double(self) <= 1.0").message("remediation.readOnly.exitWhen.dbPoolUtilizationBelow must be between 0 and 1"))]
    pub db_pool_utilization_below: Decimal,
    /// For how long.
    #[serde(default = "default_exit_for", rename = "for")]
    pub for_: Duration,
}

impl Default for ReadOnlyExit {
    fn default() -> Self {
        Self {
            db_pool_utilization_below: default_exit_utilization(),
            for_: default_exit_for(),
        }
    }
}

fn default_exit_utilization() -> Decimal {
    Decimal::from_static("0.70")
}

fn default_exit_for() -> Duration {
    Duration::from_static("5m")
}

/// How the app learns it is in read-only mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModeSwitch {
    /// A key of a ConfigMap the app watches. The operator writes only that key.
    pub config_map: ConfigMapSwitch,
}

/// A ConfigMap key holding the app's mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSwitch {
    /// Name of the ConfigMap, in the InvoiceService's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the mode.
    #[serde(default = "default_mode_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// The value meaning read-only.
    #[serde(default = "default_read_only_value")]
    #[schemars(length(min = 1, max = 253))]
    pub read_only: String,
    /// The value meaning read-write.
    #[serde(default = "default_read_write_value")]
    #[schemars(length(min = 1, max = 253))]
    pub read_write: String,
}

fn default_mode_key() -> String {
    "mode".to_owned()
}

fn default_read_only_value() -> String {
    "read-only".to_owned()
}

fn default_read_write_value() -> String {
    "read-write".to_owned()
}

/// Zone failover and fail-back.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneFailoverPolicy {
    /// When a zone counts as failed (while other zones are healthy).
    #[serde(default)]
    pub unhealthy_when: ZoneUnhealthy,
    /// Zones that must stay healthy and serving; the last healthy zone is never failed over.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = MAX_ZONES))]
    pub min_healthy_zones: u32,
    /// How and when the failed zone is restored.
    #[serde(default)]
    pub fail_back: FailBack,
}

impl Default for ZoneFailoverPolicy {
    fn default() -> Self {
        Self {
            unhealthy_when: ZoneUnhealthy::default(),
            min_healthy_zones: 1,
            fail_back: FailBack::default(),
        }
    }
}

/// When a zone counts as failed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneUnhealthy {
    /// The zone's 5xx ratio (0-1) above which it is failing.
    #[serde(default = "default_zone_error_ratio")]
    #[x_kube(validation = Rule::new("double(self) <= 1.0").message("remediation.zoneFailover.unhealthyWhen.zoneErrorRatioAbove must be between 0 and 1"))]
    pub zone_error_ratio_above: Decimal,
    /// For how long.
    #[serde(default = "default_zone_for", rename = "for")]
    pub for_: Duration,
}

impl Default for ZoneUnhealthy {
    fn default() -> Self {
        Self {
            zone_error_ratio_above: default_zone_error_ratio(),
            for_: default_zone_for(),
        }
    }
}

fn default_zone_error_ratio() -> Decimal {
    Decimal::from_static("0.3")
}

fn default_zone_for() -> Duration {
    Duration::from_static("2m")
}

/// How a failed-over zone is restored.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailBack {
    /// `Automatic`: after the zone is healthy for `after`. `Manual`: only when a human
    /// removes the failover (annotation `invoiceops.dev/fail-back: "true"`).
    #[serde(default)]
    pub mode: FailBackMode,
    /// How long the zone must look healthy (nodes Ready, Prometheus answering) before an
    /// automatic fail-back starts with a canary replica.
    #[serde(default = "default_fail_back_after")]
    pub after: Duration,
    /// How long the canary replica must serve, Ready, before it is judged on the zone's own
    /// error ratio; it must also be Ready within this long of being started. Per-zone
    /// Deployments only (Automatic mode).
    #[serde(default = "default_canary_for")]
    pub canary_for: Duration,
}

impl Default for FailBack {
    fn default() -> Self {
        Self {
            mode: FailBackMode::default(),
            after: default_fail_back_after(),
            canary_for: default_canary_for(),
        }
    }
}

fn default_fail_back_after() -> Duration {
    Duration::from_static("10m")
}

fn default_canary_for() -> Duration {
    Duration::from_static("2m")
}

/// Who restores a failed-over zone.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailBackMode {
    /// The operator, once the zone has been healthy long enough.
    #[default]
    Automatic,
    /// A human.
    Manual,
}

/// A recurring window in which only the listed actions are allowed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlackoutWindow {
    /// When the window opens: a five-field cron expression (minute hour day-of-month month
    /// day-of-week) read in `timeZone`, `L` allowed for the last day of the month, e.g.
    /// "0 18 L * *".
    #[schemars(length(min = 9, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^\\\\S+\\\\s+\\\\S+\\\\s+\\\\S+\\\\s+\\\\S+\\\\s+\\\\S+$')").message("remediation.blackoutWindows.schedule must have five cron fields"))]
    pub schedule: String,
    /// The time zone `schedule` is read in, as CronJob's `timeZone`: an IANA name such as
    /// "Europe/Berlin" (daylight saving time followed). Defaults to UTC. An unknown name makes
    /// the spec invalid (`InvalidSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// How long the window stays open.
    pub duration: Duration,
    /// Actions still allowed inside the window (none when empty).
    #[serde(default)]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allow: Vec<ActionKind>,
}

impl BlackoutWindow {
    /// The zone `schedule` is read in: `timeZone`, or UTC when unset. Looked up in the time
    /// zone database compiled into the operator, so every replica and every machine reads a
    /// name alike; an unknown name is an error.
    pub fn zone(&self) -> Result<jiff::tz::TimeZone, jiff::Error> {
        static DATABASE: std::sync::LazyLock<jiff::tz::TimeZoneDatabase> =
            std::sync::LazyLock::new(jiff::tz::TimeZoneDatabase::bundled);
        match &self.time_zone {
            None => Ok(jiff::tz::TimeZone::UTC),
            Some(name) => DATABASE.get(name),
        }
    }
}

/// Extra evidence attached to decisions and actions (signal name to value), kept sorted.
pub type Evidence = BTreeMap<String, String>;

impl InvoiceServiceSpec {
    /// The ladder in force: the configured one, or the default ladder minus the rungs the
    /// spec cannot support (ReadOnly without a switch, ZoneFailover with fewer than two zones).
    pub fn effective_ladder(&self) -> Vec<Rung> {
        if let Some(ladder) = &self.remediation.ladder {
            return ladder.clone();
        }
        Rung::ALL
            .into_iter()
            .filter(|rung| match rung {
                Rung::ReadOnly => self.remediation.read_only.is_some(),
                Rung::ZoneFailover => self.workload.zone_names().len() >= 2,
                _ => true,
            })
            .collect()
    }
}

impl Workload {
    /// The zones the workload runs in, in declaration order.
    pub fn zone_names(&self) -> Vec<&str> {
        match (&self.deployments, &self.zones) {
            (Some(deployments), _) => deployments.iter().map(|d| d.zone.as_str()).collect(),
            (None, Some(zones)) => zones.iter().map(String::as_str).collect(),
            (None, None) => Vec::new(),
        }
    }

    /// The Deployments that make up the service, in declaration order.
    pub fn deployment_names(&self) -> Vec<&str> {
        match (&self.deployments, &self.deployment) {
            (Some(deployments), _) => deployments.iter().map(|d| d.name.as_str()).collect(),
            (None, Some(name)) => vec![name.as_str()],
            (None, None) => Vec::new(),
        }
    }
}
