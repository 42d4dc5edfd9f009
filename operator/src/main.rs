//! The invoice-operator process: flags, logging, the CRD check, leader election, the
//! `/metrics`, `/healthz` and `/readyz` server, and the controller.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use clap::{Parser, ValueEnum};
use kube::{Client, runtime::events::Reporter};
use tracing::{error, info};
use tracing_subscriber::{EnvFilter, prelude::*};

use invoice_operator::{
    api::Duration as ApiDuration,
    controller::{self, QueryMode, Settings},
    kube_client,
    metrics::{Metrics, QueryMetrics},
    prometheus::{Limits, MetricProfile, Prometheus},
    storm::StormSettings,
};

/// jemalloc instead of glibc's malloc: every evaluation parses a burst of Prometheus answers
/// (tens of thousands of small label maps at fleet scale), and glibc's per-thread arenas keep
/// each burst's peak resident; jemalloc hands freed pages back after its decay time.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The lease is held this long without renewal before another replica may take over; the
/// leader stops acting as soon as a renewal fails, well within it.
const LEASE_DURATION_SECONDS: u64 = 15;
/// Renewal happens this long before the lease would expire (clock skew between nodes).
const LEASE_GRACE_SECONDS: u64 = 5;

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// One JSON object per line (in cluster).
    Json,
    /// Human-readable lines (on a terminal).
    Text,
}

/// Keeps invoice services inside their SLOs: watches InvoiceServices and heals their
/// Deployments within safety rails.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Base URL of the operator-wide Prometheus.
    #[arg(
        long,
        env = "PROMETHEUS_URL",
        default_value = "http://prometheus-operated.monitoring:9090"
    )]
    prometheus_url: String,

    /// File holding a bearer token for the operator-wide Prometheus (e.g. a mounted Secret
    /// key). Never sent to a service's own Prometheus.
    #[arg(long, env = "PROMETHEUS_TOKEN_FILE")]
    prometheus_token_file: Option<std::path::PathBuf>,

    /// How often the batched fleet evaluation runs.
    #[arg(long, env = "EVALUATION_INTERVAL", default_value = "15s")]
    evaluation_interval: ApiDuration,

    /// Window of the per-pod and per-zone signals; at least four scrape intervals so a rate
    /// has enough samples.
    #[arg(long, env = "DETECTION_WINDOW", default_value = "1m")]
    detection_window: ApiDuration,

    /// Pod samples older than this are Stale.
    #[arg(long, env = "STALE_AFTER", default_value = "2m")]
    stale_after: ApiDuration,

    /// Share of InvoiceServices unhealthy at once above which all actions freeze.
    #[arg(long, env = "STORM_SHARE", default_value_t = 0.5)]
    storm_share: f64,

    /// Unhealthy services needed before the storm gate can close.
    #[arg(long, env = "STORM_MIN_SERVICES", default_value_t = 5)]
    storm_min_services: usize,

    /// How long the share of unhealthy services must stay at or below `--storm-share` before
    /// a closed storm gate opens again (hysteresis: a share hovering at the threshold keeps it
    /// closed rather than letting half the fleet act every other interval).
    #[arg(long, env = "STORM_HOLD", default_value = "2m")]
    storm_hold: ApiDuration,

    /// Force DryRun for every InvoiceService (a cluster-wide switch for a first rollout).
    #[arg(long, env = "FORCE_DRY_RUN")]
    force_dry_run: bool,

    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// Take part in leader election (one replica acts); disable for a single local process.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Name of the coordination.k8s.io Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "invoice-operator")]
    lease_name: String,

    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// This replica's identity in the Lease and in Events (the pod name in cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "127.0.0.1:8080")]
    metrics_address: SocketAddr,

    /// batched (default): one query per SLI and window for the whole fleet; per-service: one
    /// query per service per SLI and window, only for comparison benchmarks.
    #[arg(long, env = "QUERY_MODE", value_enum, default_value_t = QueryMode::Batched)]
    query_mode: QueryMode,

    /// Log format; filter with RUST_LOG (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,

    /// Metric name of the request counter (labels namespace, service, pod, zone, code).
    #[arg(long, env = "METRIC_REQUESTS")]
    metric_requests: Option<String>,

    /// Metric name of the request latency histogram buckets.
    #[arg(long, env = "METRIC_REQUEST_DURATION_BUCKET")]
    metric_request_duration_bucket: Option<String>,

    /// Metric name of the active database connections gauge.
    #[arg(long, env = "METRIC_DB_POOL_ACTIVE")]
    metric_db_pool_active: Option<String>,

    /// Metric name of the database pool size gauge.
    #[arg(long, env = "METRIC_DB_POOL_MAX")]
    metric_db_pool_max: Option<String>,

    /// Metric name of the certificate expiry timestamp (cert-manager's by default).
    #[arg(long, env = "METRIC_CERTIFICATE_EXPIRY")]
    metric_certificate_expiry: Option<String>,
}

impl Cli {
    fn profile(&self) -> MetricProfile {
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
        profile
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true),
            )
            .init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).init(),
    }
}

/// Exits with the install command when the InvoiceService API is not served.
async fn check_crd(client: &Client) -> anyhow::Result<()> {
    match client
        .list_api_group_resources("invoiceops.dev/v1alpha1")
        .await
    {
        Ok(resources)
            if resources
                .resources
                .iter()
                .any(|r| r.name == "invoiceservices") =>
        {
            Ok(())
        }
        Ok(_) | Err(kube::Error::Api(_)) => anyhow::bail!(
            "the InvoiceService CRD (invoiceservices.invoiceops.dev/v1alpha1) is not installed; \
             install it with `kubectl apply --server-side -f crds/invoiceservices.invoiceops.dev.yaml` \
             or `helm install invoice-operator charts/invoice-operator`"
        ),
        Err(error) => {
            Err(error).context("failed to ask the API server whether the CRD is installed")
        }
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn serve(address: SocketAddr, state: ServerState) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(state): State<ServerState>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    state.metrics.encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(state): State<ServerState>| async move {
                if state.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
                }
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("failed to listen on {address}"))?;
    axum::serve(listener, app)
        .await
        .context("metrics server failed")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The crash-safety tests' kill hook (`act::KILLED_BY_FAIL_POINT`), configured by
    // FAILPOINTS; compiled in only with the `failpoints` feature.
    #[cfg(feature = "failpoints")]
    let _fail_points = fail::FailScenario::setup();
    if std::env::var_os("FAILPOINTS").is_some() {
        if cfg!(feature = "failpoints") {
            tracing::warn!("fail points configured by FAILPOINTS: for tests only");
        } else {
            tracing::warn!("FAILPOINTS is ignored: built without the failpoints feature");
        }
    }

    let metrics = Arc::new(Metrics::default());
    // Every request the client sends (leader election's included) is counted.
    let config = kube::Config::infer()
        .await
        .context("failed to find a Kubernetes config (in cluster, or from KUBECONFIG)")?;
    let client =
        kube_client::build(config, &metrics).context("failed to build a Kubernetes client")?;
    check_crd(&client).await?;

    let mut prometheus = Prometheus::new(&cli.prometheus_url, cli.profile(), Limits::default())
        .context("failed to set up the Prometheus client")?
        .with_observer(Arc::new(QueryMetrics(Arc::clone(&metrics))));
    if let Some(path) = &cli.prometheus_token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        prometheus = prometheus.with_bearer_token(token.trim())?;
    }

    let identity = cli
        .identity
        .clone()
        .unwrap_or_else(|| format!("invoice-operator-{}", std::process::id()));
    let leader = if cli.leader_election {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &cli.lease_name)
            .with_namespace(&cli.lease_namespace)
            .with_identity(&identity)
            .with_duration(LEASE_DURATION_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .build()
            .await
            .context("failed to set up leader election")?;
        let (receiver, _task) = manager.watch().await;
        receiver
    } else {
        tokio::sync::watch::channel(true).1
    };
    {
        let metrics = Arc::clone(&metrics);
        let mut leader = leader.clone();
        tokio::spawn(async move {
            loop {
                let is_leader = *leader.borrow_and_update();
                metrics.leader.set(i64::from(is_leader));
                info!(leader = is_leader, "leadership");
                if leader.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(serve(
        cli.metrics_address,
        ServerState {
            metrics: Arc::clone(&metrics),
            ready: Arc::clone(&ready),
        },
    ));

    let settings = Settings {
        evaluation_interval: cli.evaluation_interval.get(),
        detection_window: cli.detection_window.get(),
        stale_after: cli.stale_after.get(),
        storm: StormSettings {
            share: cli.storm_share,
            min_services: cli.storm_min_services,
            hold: cli.storm_hold.get(),
        },
        force_dry_run: cli.force_dry_run,
        namespace: cli.namespace.clone(),
        query_mode: cli.query_mode,
    };
    info!(
        prometheus = %cli.prometheus_url,
        identity = %identity,
        interval = ?settings.evaluation_interval,
        query_mode = ?settings.query_mode,
        "starting invoice-operator"
    );
    let shutdown = async {
        // Ctrl-C on a terminal, SIGTERM from the kubelet.
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        info!("shutting down");
    };
    let controller = controller::run(
        controller::Runtime {
            client,
            prometheus,
            metrics,
            settings,
            reporter: Reporter {
                controller: "invoice-operator".to_owned(),
                instance: Some(identity),
            },
            leader,
            ready,
        },
        shutdown,
    );
    tokio::select! {
        () = controller => Ok(()),
        result = server => {
            let error = match result {
                Ok(Ok(())) => anyhow::anyhow!("metrics server stopped"),
                Ok(Err(error)) => error,
                Err(error) => anyhow::Error::new(error),
            };
            error!(error = %error, "metrics server failed");
            Err(error)
        }
    }
}

// Renewal must happen before expiry.
const _: () = assert!(LEASE_GRACE_SECONDS < LEASE_DURATION_SECONDS);
