//! The operator's command line: every flag, the environment variable it also reads, its
//! default and help text, and what the controller, the Prometheus source and the Lease are
//! built from. The Helm chart and the README's flag table rely on these names and defaults.
//! No IO: clap reads the arguments and the environment in `main`; [`Cli`] only converts.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    api::Duration as ApiDuration,
    controller::{QueryMode, Settings},
    leader::Lease,
    prometheus::{Connection, MetricProfile, SliSource, alerts, connection, rules},
    storm::StormSettings,
};

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (in cluster).
    Json,
    /// Human-readable lines (on a terminal).
    Text,
}

/// Keeps invoice services inside their SLOs: watches InvoiceServices and heals their
/// Deployments within safety rails.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do instead of running the operator; none runs it.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Base URL of the operator-wide Prometheus.
    #[arg(
        long,
        env = "PROMETHEUS_URL",
        default_value = "http://prometheus-operated.monitoring:9090"
    )]
    pub prometheus_url: String,

    /// File holding a bearer token for the operator-wide Prometheus (e.g. a mounted Secret
    /// key). Never sent to a service's own Prometheus.
    #[arg(long, env = "PROMETHEUS_TOKEN_FILE")]
    pub prometheus_token_file: Option<std::path::PathBuf>,

    /// PEM bundle of the CAs that sign the operator-wide Prometheus' serving certificate
    /// (trusted beside the system roots), e.g. a mounted ConfigMap or Secret.
    #[arg(long, env = "PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<std::path::PathBuf>,

    /// PEM client certificate presented to the operator-wide Prometheus (mTLS); needs
    /// `--prometheus-client-key-file`.
    #[arg(
        long,
        env = "PROMETHEUS_CLIENT_CERT_FILE",
        requires = "prometheus_client_key_file"
    )]
    pub prometheus_client_cert_file: Option<std::path::PathBuf>,

    /// PEM private key of `--prometheus-client-cert-file`.
    #[arg(
        long,
        env = "PROMETHEUS_CLIENT_KEY_FILE",
        requires = "prometheus_client_cert_file"
    )]
    pub prometheus_client_key_file: Option<std::path::PathBuf>,

    /// Extra header sent to the operator-wide Prometheus, `NAME=VALUE`, repeatable (e.g.
    /// `X-Scope-OrgID=billing` for Mimir, Cortex or a multi-tenant Thanos); the environment
    /// variable takes them comma-separated.
    #[arg(long = "prometheus-header", env = "PROMETHEUS_HEADERS", value_delimiter = ',',
          value_parser = connection::parse_header)]
    pub prometheus_headers: Vec<(String, String)>,

    /// How often the batched fleet evaluation runs.
    #[arg(
        long,
        env = "EVALUATION_INTERVAL",
        default_value = "15s",
        global = true
    )]
    pub evaluation_interval: ApiDuration,

    /// Window of the per-pod and per-zone signals; at least four scrape intervals so a rate
    /// has enough samples.
    #[arg(long, env = "DETECTION_WINDOW", default_value = "1m")]
    pub detection_window: ApiDuration,

    /// Pod samples older than this are Stale.
    #[arg(long, env = "STALE_AFTER", default_value = "2m")]
    pub stale_after: ApiDuration,

    /// Share of InvoiceServices unhealthy at once above which all actions freeze.
    #[arg(long, env = "STORM_SHARE", default_value_t = 0.5)]
    pub storm_share: f64,

    /// Unhealthy services needed before the storm gate can close.
    #[arg(long, env = "STORM_MIN_SERVICES", default_value_t = 5)]
    pub storm_min_services: usize,

    /// How long the share of unhealthy services must stay at or below `--storm-share` before
    /// a closed storm gate opens again (hysteresis: a share hovering at the threshold keeps it
    /// closed rather than letting half the fleet act every other interval).
    #[arg(long, env = "STORM_HOLD", default_value = "2m")]
    pub storm_hold: ApiDuration,

    /// Force DryRun for every InvoiceService (a cluster-wide switch for a first rollout).
    #[arg(long, env = "FORCE_DRY_RUN")]
    pub force_dry_run: bool,

    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Take part in leader election (one replica acts); disable for a single local process.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the coordination.k8s.io Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "invoice-operator")]
    pub lease_name: String,

    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// This replica's identity in the Lease and in Events (the pod name in cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "127.0.0.1:8080")]
    pub metrics_address: SocketAddr,

    /// batched (default): one query per SLI and window for the whole fleet; per-service: one
    /// query per service per SLI and window, only for comparison benchmarks.
    #[arg(long, env = "QUERY_MODE", value_enum, default_value_t = QueryMode::Batched)]
    pub query_mode: QueryMode,

    /// Where the services' rates over their SLO and burn-rate windows (5m and longer) come
    /// from: raw (default: the raw counters),
    /// recorded (the series of `invoice-operator rules`; a window they do not cover yet is
    /// WindowNotYetRecorded), or auto (recorded where they cover the window, raw otherwise).
    #[arg(long, env = "SLI_SOURCE", value_enum, default_value_t = SliSource::Raw)]
    pub sli_source: SliSource,

    /// Log format; filter with RUST_LOG (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Metric name of the request counter (labels namespace, service, pod, zone, code).
    #[arg(long, env = "METRIC_REQUESTS", value_parser = metric_name, global = true)]
    pub metric_requests: Option<String>,

    /// Metric name of the request latency histogram buckets.
    #[arg(long, env = "METRIC_REQUEST_DURATION_BUCKET", value_parser = metric_name, global = true)]
    pub metric_request_duration_bucket: Option<String>,

    /// Metric name of the active database connections gauge.
    #[arg(long, env = "METRIC_DB_POOL_ACTIVE", value_parser = metric_name, global = true)]
    pub metric_db_pool_active: Option<String>,

    /// Metric name of the database pool size gauge.
    #[arg(long, env = "METRIC_DB_POOL_MAX", value_parser = metric_name, global = true)]
    pub metric_db_pool_max: Option<String>,

    /// Metric name of the certificate expiry timestamp (cert-manager's by default).
    #[arg(long, env = "METRIC_CERTIFICATE_EXPIRY", value_parser = metric_name, global = true)]
    pub metric_certificate_expiry: Option<String>,

    /// Label naming the Kubernetes namespace on the request, latency and pool metrics
    /// (default `namespace`).
    #[arg(long, env = "LABEL_NAMESPACE", value_parser = label_name, global = true)]
    pub label_namespace: Option<String>,

    /// Label naming the service on those metrics (default `service`).
    #[arg(long, env = "LABEL_SERVICE", value_parser = label_name, global = true)]
    pub label_service: Option<String>,

    /// Label naming the pod (default `pod`).
    #[arg(long, env = "LABEL_POD", value_parser = label_name, global = true)]
    pub label_pod: Option<String>,

    /// Label naming the pod's availability zone (default `zone`).
    #[arg(long, env = "LABEL_ZONE", value_parser = label_name, global = true)]
    pub label_zone: Option<String>,

    /// Label holding the HTTP status code on the request counter (default `code`).
    #[arg(long, env = "LABEL_CODE", value_parser = label_name, global = true)]
    pub label_code: Option<String>,
}

/// Subcommands of the operator binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the Prometheus recording rules of the metric profile (a rules file for
    /// `rule_files`, checked by `promtool check rules`), or with `--alerts` the alerting
    /// rules, and exit.
    Rules(RulesArgs),
}

/// Flags of `invoice-operator rules` (the `--metric-*` flags apply too).
#[derive(Debug, Args)]
pub struct RulesArgs {
    /// Evaluation interval of the `invoiceops-sli` group (1s to 5m); the hourly group always
    /// runs every hour.
    #[arg(long, default_value = "30s", value_parser = rule_interval)]
    pub interval: ApiDuration,

    /// Print the alerting rules on the operator's own metrics instead of the recording rules.
    #[arg(long)]
    pub alerts: bool,

    /// With `--alerts`: base URL of docs/runbook.md; each alert links to `<base>#<alert>`.
    #[arg(long, default_value = alerts::DEFAULT_RUNBOOK_URL, requires = "alerts")]
    pub runbook_url: String,

    /// With `--alerts`: the `job` label Prometheus gives the operator's own series.
    #[arg(long, default_value = alerts::DEFAULT_OPERATOR_JOB, requires = "alerts")]
    pub operator_job: String,

    /// With `--alerts`: evaluation intervals (`--evaluation-interval`) a service's signals may
    /// stay untrusted before InvoiceServiceSignalsUntrusted fires.
    #[arg(long, default_value_t = alerts::DEFAULT_UNTRUSTED_INTERVALS, requires = "alerts",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub untrusted_intervals: u32,
}

/// A rule evaluation interval: a duration [`rules::check_interval`] accepts.
fn rule_interval(value: &str) -> Result<ApiDuration, String> {
    let interval: ApiDuration = value.parse().map_err(|error| format!("{error}"))?;
    rules::check_interval(interval.get()).map_err(|error| error.to_string())?;
    Ok(interval)
}

/// A Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`), refused at start otherwise: a name
/// with a selector or a quote in it was accepted and then failed every query.
pub fn metric_name(value: &str) -> Result<String, String> {
    let mut characters = value.chars();
    let valid = characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && characters.all(|rest| rest.is_ascii_alphanumeric() || rest == '_' || rest == ':');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*): give the \
             bare name, without labels or a selector"
        ))
    }
}

/// A Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`), refused at
/// start otherwise.
pub fn label_name(value: &str) -> Result<String, String> {
    match metric_name(value) {
        Ok(name) if !name.contains(':') && !name.starts_with("__") => Ok(name),
        _ => Err(format!(
            "{value:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting \
             with __)"
        )),
    }
}

impl Cli {
    /// How the operator reaches its own Prometheus, from the `--prometheus-*` flags.
    pub fn prometheus_connection(&self) -> Connection {
        Connection {
            ca_file: self.prometheus_ca_file.clone(),
            client_certificate: self.prometheus_client_cert_file.clone(),
            client_key: self.prometheus_client_key_file.clone(),
            headers: self.prometheus_headers.clone(),
            token_file: self.prometheus_token_file.clone(),
        }
    }

    /// The metric names the batched fleet queries read: the defaults, overridden by flags.
    pub fn profile(&self) -> MetricProfile {
        let mut profile = MetricProfile::default();
        if let Some(name) = &self.metric_requests {
            profile.requests_total.clone_from(name);
        }
        if let Some(name) = &self.metric_request_duration_bucket {
            profile.request_duration_bucket.clone_from(name);
        }
        if let Some(name) = &self.metric_db_pool_active {
            profile.db_pool_active.clone_from(name);
        }
        if let Some(name) = &self.metric_db_pool_max {
            profile.db_pool_max.clone_from(name);
        }
        if let Some(name) = &self.metric_certificate_expiry {
            profile.certificate_expiry.clone_from(name);
        }
        let labels = [
            (&self.label_namespace, &mut profile.namespace_label),
            (&self.label_service, &mut profile.service_label),
            (&self.label_pod, &mut profile.pod_label),
            (&self.label_zone, &mut profile.zone_label),
            (&self.label_code, &mut profile.code_label),
        ];
        for (flag, label) in labels {
            if let Some(name) = flag {
                label.clone_from(name);
            }
        }
        profile
    }

    /// The rules file `invoice-operator rules` prints: the recording rules of the flags'
    /// metric profile.
    pub fn rules_file(&self, args: &RulesArgs) -> rules::RuleFile {
        rules::rule_file(&self.profile(), args.interval.get())
    }

    /// The alerting rules `invoice-operator rules --alerts` prints.
    pub fn alert_file(&self, args: &RulesArgs) -> alerts::AlertFile {
        alerts::alert_file(&alerts::AlertSettings {
            runbook_url: args.runbook_url.clone(),
            operator_job: args.operator_job.clone(),
            untrusted_for: self.evaluation_interval.get() * args.untrusted_intervals,
        })
    }

    /// What `invoice-operator rules` prints: the alerting rules with `--alerts`, the
    /// recording rules otherwise.
    pub fn rules_text(&self, args: &RulesArgs) -> String {
        if args.alerts {
            self.alert_file(args).to_yaml()
        } else {
            self.rules_file(args).to_yaml()
        }
    }

    /// The controller's settings.
    pub fn settings(&self) -> Settings {
        Settings {
            evaluation_interval: self.evaluation_interval.get(),
            detection_window: self.detection_window.get(),
            stale_after: self.stale_after.get(),
            storm: StormSettings {
                share: self.storm_share,
                min_services: self.storm_min_services,
                hold: self.storm_hold.get(),
            },
            force_dry_run: self.force_dry_run,
            namespace: self.namespace.clone(),
            query_mode: self.query_mode,
            sli_source: self.sli_source,
        }
    }

    /// This replica's identity in the Lease and in Events: `--identity`, or one made from the
    /// process id.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .unwrap_or_else(|| format!("invoice-operator-{}", std::process::id()))
    }

    /// The Lease to take part in, or `None` when leader election is off (the process always
    /// acts).
    pub fn lease(&self) -> Option<Lease> {
        self.leader_election.then(|| Lease {
            name: self.lease_name.clone(),
            namespace: self.lease_namespace.clone(),
            identity: self.identity(),
        })
    }
}

#[cfg(test)]
mod tests;
