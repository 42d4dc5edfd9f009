//! Alerting rules on the operator's own metrics: what a platform team pages or files a ticket
//! on. Printed by `invoice-operator rules --alerts` and rendered by the chart as a
//! PrometheusRule (from a generated copy in `charts/invoice-operator/files/`). Each alert has
//! a `summary`, a `description` naming the service (or gate, or query kind) from its labels,
//! a `severity` label and a `runbook_url` into `docs/runbook.md`, whose section of the same
//! name says what it means, how to look and what to do. No IO.
//!
//! # Alerts
//!
//! Group [`ALERT_GROUP`], evaluated at Prometheus' global interval; every selector is limited
//! to the operator's scrape job ([`AlertSettings::operator_job`]), so a wrong job name shows
//! as [`OPERATOR_DOWN`] rather than as silence.
//!
//! | alert | severity | fires when |
//! |---|---|---|
//! | [`NEEDS_ATTENTION`] | warning | a service's `NeedsAttention` condition is True for 5 m |
//! | [`LADDER_EXHAUSTED`] | critical | every rung of a service's ladder was tried and it did not recover |
//! | [`SIGNALS_UNTRUSTED`] | warning | a service's `SignalsTrusted` is False for N evaluation intervals |
//! | [`BURN_BLOCKED`] | critical | a gate blocks decisions while some service burns at page level (1 h and 5 m above [`PAGE_BURN_RATE`]) |
//! | [`OPERATOR_DOWN`] | critical | no replica of the operator's job is up, or the job is not scraped at all |
//! | [`NO_LEADER`] | critical | replicas run but none holds the leader lease |
//! | [`CYCLE_OVERRUNS`] | warning | fleet ticks keep coming while the previous cycle is pending |
//! | [`QUERIES_FAILING`] | warning | more than a tenth of a kind of Prometheus query fails |
//!
//! `invoiceops_decisions_blocked_total` has no service label (its labels stay bounded by the
//! gates), so [`BURN_BLOCKED`] fires once per gate, not per service; its description says how
//! to find the burning services.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use super::promql::range;

/// The group of every alert.
pub const ALERT_GROUP: &str = "invoiceops-alerts";

/// A service's `NeedsAttention` condition is True.
pub const NEEDS_ATTENTION: &str = "InvoiceServiceNeedsAttention";
/// A service's remediation ladder is exhausted.
pub const LADDER_EXHAUSTED: &str = "InvoiceServiceLadderExhausted";
/// A service's signals are untrusted for longer than N evaluation intervals.
pub const SIGNALS_UNTRUSTED: &str = "InvoiceServiceSignalsUntrusted";
/// A gate blocks remediation while a service burns its error budget at page level.
pub const BURN_BLOCKED: &str = "InvoiceServiceBudgetBurnBlocked";
/// The operator's scrape job has no replica up.
pub const OPERATOR_DOWN: &str = "InvoiceOperatorDown";
/// No replica holds the leader lease.
pub const NO_LEADER: &str = "InvoiceOperatorNoLeader";
/// Fleet cycles overrun the evaluation interval.
pub const CYCLE_OVERRUNS: &str = "InvoiceOperatorFleetCycleOverruns";
/// Prometheus queries of the operator fail.
pub const QUERIES_FAILING: &str = "InvoiceOperatorPrometheusQueriesFailing";

/// Where the runbook lives when no base URL is given: its path in the repository, to be
/// replaced by the address your copy of the docs is served at.
pub const DEFAULT_RUNBOOK_URL: &str = "docs/runbook.md";

/// The operator's scrape job when none is given (a plain `scrape_configs` job name; the chart
/// uses its metrics Service's name, `<fullname>-metrics`, the job its ServiceMonitor gives).
pub const DEFAULT_OPERATOR_JOB: &str = "invoice-operator";

/// Evaluation intervals a service's signals may stay untrusted before [`SIGNALS_UNTRUSTED`]
/// fires (5 m at the default 15 s interval).
pub const DEFAULT_UNTRUSTED_INTERVALS: u32 = 20;

/// The page-level burn rate of the SRE workbook: 2 % of a 30-day budget in one hour.
pub const PAGE_BURN_RATE: &str = "14.4";

/// How far back [`BURN_BLOCKED`] looks for blocked decisions.
const BLOCKED_LOOKBACK: &str = "10m";

/// The share of a query kind's queries failing above which [`QUERIES_FAILING`] fires.
const FAILING_QUERY_SHARE: &str = "0.1";

/// What the alerting rules depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertSettings {
    /// Base URL of `docs/runbook.md`; each alert links to its section (`<base>#<anchor>`).
    pub runbook_url: String,
    /// The `job` label of the operator's own series.
    pub operator_job: String,
    /// How long a service's signals stay untrusted before [`SIGNALS_UNTRUSTED`] fires.
    pub untrusted_for: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            runbook_url: DEFAULT_RUNBOOK_URL.to_owned(),
            operator_job: DEFAULT_OPERATOR_JOB.to_owned(),
            untrusted_for: Duration::from_secs(15) * DEFAULT_UNTRUSTED_INTERVALS,
        }
    }
}

/// A Prometheus rules file of alerting rules (`promtool check rules` format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertFile {
    /// The rule groups.
    pub groups: Vec<AlertGroup>,
}

/// A group of alerting rules, evaluated at Prometheus' global interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertGroup {
    /// Group name, unique in the file.
    pub name: String,
    /// The alerts.
    pub rules: Vec<AlertingRule>,
}

/// One alerting rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertingRule {
    /// The alert's name (also its runbook section).
    pub alert: String,
    /// The PromQL whose every result is an alert.
    pub expr: String,
    /// How long a result must stay before the alert fires.
    #[serde(rename = "for")]
    pub for_duration: String,
    /// `severity`: `critical` (page) or `warning` (ticket).
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description` and `runbook_url`.
    pub annotations: BTreeMap<String, String>,
}

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Page someone.
    Critical,
    /// File a ticket.
    Warning,
}

impl Severity {
    /// The `severity` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
        }
    }
}

/// The anchor of an alert's section in `docs/runbook.md` (a heading named after the alert).
pub fn runbook_anchor(alert: &str) -> String {
    alert.to_lowercase()
}

/// The alerting rules for `settings`.
pub fn alert_file(settings: &AlertSettings) -> AlertFile {
    let job = Job(&settings.operator_job);
    let mut rules = service_alerts(job, settings.untrusted_for);
    rules.extend(operator_alerts(job));
    for rule in &mut rules {
        let url = format!("{}#{}", settings.runbook_url, runbook_anchor(&rule.alert));
        rule.annotations.insert("runbook_url".to_owned(), url);
    }
    AlertFile {
        groups: vec![AlertGroup {
            name: ALERT_GROUP.to_owned(),
            rules,
        }],
    }
}

impl AlertFile {
    /// The rules file as YAML, with a comment saying where it comes from.
    pub fn to_yaml(&self) -> String {
        let body = serde_yaml::to_string(self).expect("a rules file serialises");
        format!(
            "# Alerting rules of invoice-operator, printed by `invoice-operator rules --alerts`.\n\
             {body}"
        )
    }
}

/// The operator's scrape job, which every selector names.
#[derive(Clone, Copy)]
struct Job<'a>(&'a str);

impl Job<'_> {
    /// `metric{job="<job>", <matchers>}`.
    fn select(self, metric: &str, matchers: &str) -> String {
        let job = self.0;
        if matchers.is_empty() {
            format!("{metric}{{job=\"{job}\"}}")
        } else {
            format!("{metric}{{job=\"{job}\", {matchers}}}")
        }
    }
}

/// What an alert is made of before its runbook link.
struct Alert<'a> {
    name: &'a str,
    expr: String,
    for_duration: &'a str,
    severity: Severity,
    summary: &'a str,
    description: &'a str,
}

impl From<Alert<'_>> for AlertingRule {
    fn from(alert: Alert<'_>) -> Self {
        Self {
            alert: alert.name.to_owned(),
            expr: alert.expr,
            for_duration: alert.for_duration.to_owned(),
            labels: BTreeMap::from([("severity".to_owned(), alert.severity.as_str().to_owned())]),
            annotations: BTreeMap::from([
                ("summary".to_owned(), alert.summary.to_owned()),
                ("description".to_owned(), alert.description.to_owned()),
            ]),
        }
    }
}

/// Alerts about one InvoiceService each.
fn service_alerts(job: Job<'_>, untrusted_for: Duration) -> Vec<AlertingRule> {
    let untrusted_for = range(untrusted_for);
    [
        Alert {
            name: NEEDS_ATTENTION,
            expr: format!("{} == 1", job.select("invoiceops_service_needs_attention", "")),
            for_duration: "5m",
            severity: Severity::Warning,
            summary: "InvoiceService {{ $labels.namespace }}/{{ $labels.service }} needs attention",
            description: "The operator set NeedsAttention=True on InvoiceService \
                {{ $labels.namespace }}/{{ $labels.service }}: it cannot or may not heal it on its \
                own. `kubectl describe invsvc -n {{ $labels.namespace }} {{ $labels.service }}` \
                says why.",
        },
        Alert {
            name: LADDER_EXHAUSTED,
            expr: format!("{} == 1", job.select("invoiceops_service_ladder_exhausted", "")),
            for_duration: "1m",
            severity: Severity::Critical,
            summary: "InvoiceService {{ $labels.namespace }}/{{ $labels.service }} exhausted its \
                remediation ladder",
            description: "Every rung of the remediation ladder of InvoiceService \
                {{ $labels.namespace }}/{{ $labels.service }} was tried and the service did not \
                recover; the operator takes no further action in this incident.",
        },
        Alert {
            name: SIGNALS_UNTRUSTED,
            expr: format!("{} == 0", job.select("invoiceops_service_signals_trusted", "")),
            for_duration: &untrusted_for,
            severity: Severity::Warning,
            summary: "InvoiceService {{ $labels.namespace }}/{{ $labels.service }} has untrusted \
                signals",
            description: "Some signal of InvoiceService {{ $labels.namespace }}/{{ $labels.service }} \
                is unknown (SignalsTrusted=False), so the operator does not act on it. The \
                condition's message names the signal and why.",
        },
        Alert {
            name: BURN_BLOCKED,
            expr: burn_blocked_expr(job),
            for_duration: "2m",
            severity: Severity::Critical,
            summary: "Gate {{ $labels.gate }} blocks remediation while an error budget burns at \
                page level",
            description: "The {{ $labels.gate }} gate blocked {{ $value | humanize }} remediation \
                decisions in the last 10 minutes while at least one InvoiceService burns its error \
                budget over 14.4 times the sustainable rate (1h and 5m windows). Blocked decisions \
                are counted per gate, not per service: find the burning services with \
                invoiceops_slo_burn_rate{window=\"1h\"} > 14.4.",
        },
    ]
    .into_iter()
    .map(AlertingRule::from)
    .collect()
}

/// Blocked decisions per gate over [`BLOCKED_LOOKBACK`], while some service's burn rate is
/// above [`PAGE_BURN_RATE`] over both the 1 h and the 5 m window.
fn burn_blocked_expr(job: Job<'_>) -> String {
    let blocked = job.select("invoiceops_decisions_blocked_total", "");
    let burn =
        |window: &str| job.select("invoiceops_slo_burn_rate", &format!("window=\"{window}\""));
    format!(
        "sum by (gate) (increase({blocked}[{BLOCKED_LOOKBACK}])) > 0 and on () \
         count({long} > {PAGE_BURN_RATE} and on (namespace, service) {short} > {PAGE_BURN_RATE}) > 0",
        long = burn("1h"),
        short = burn("5m"),
    )
}

/// Alerts about the operator itself.
fn operator_alerts(job: Job<'_>) -> Vec<AlertingRule> {
    let up = job.select("up", "");
    let errors = job.select("invoiceops_prometheus_query_errors_total", "");
    let queries = job.select("invoiceops_prometheus_queries_total", "");
    [
        Alert {
            name: OPERATOR_DOWN,
            expr: format!("sum by (job) ({up}) == 0 or absent({up})"),
            for_duration: "5m",
            severity: Severity::Critical,
            summary: "invoice-operator is down",
            description: "No replica of the scrape job {{ $labels.job }} is up, or Prometheus \
                scrapes no such job: nothing heals the InvoiceServices.",
        },
        Alert {
            name: NO_LEADER,
            expr: format!("max({}) == 0", job.select("invoiceops_leader", "")),
            for_duration: "5m",
            severity: Severity::Critical,
            summary: "invoice-operator has no leader",
            description: "Replicas of invoice-operator run but none holds the leader lease, so \
                none evaluates or heals the InvoiceServices.",
        },
        Alert {
            name: CYCLE_OVERRUNS,
            expr: format!(
                "sum(increase({}[15m])) > 0",
                job.select("invoiceops_fleet_cycle_overruns_total", "")
            ),
            for_duration: "15m",
            severity: Severity::Warning,
            summary: "invoice-operator's fleet cycles overrun the evaluation interval",
            description: "{{ $value | humanize }} fleet ticks in the last 15 minutes came while \
                the previous cycle was still pending: services are evaluated less often than \
                the evaluation interval says.",
        },
        Alert {
            name: QUERIES_FAILING,
            expr: format!(
                "sum by (kind, reason) (rate({errors}[5m])) / on (kind) group_left \
                 sum by (kind) (rate({queries}[5m])) > {FAILING_QUERY_SHARE}"
            ),
            for_duration: "10m",
            severity: Severity::Warning,
            summary: "invoice-operator's {{ $labels.kind }} queries to Prometheus fail",
            description: "{{ $value | humanizePercentage }} of the operator's {{ $labels.kind }} \
                queries failed over the last 5 minutes with {{ $labels.reason }}; the signals \
                they feed are unknown and never acted on.",
        },
    ]
    .into_iter()
    .map(AlertingRule::from)
    .collect()
}

#[cfg(test)]
mod dashboard_tests;
#[cfg(test)]
mod tests;
