//! invoice-app: a small invoice HTTP service, the example of what invoice-operator heals.
//! It creates, gets and lists invoices, exposes the metrics of the operator's default metric
//! profile on `/metrics`, and honours the read-only mode the operator switches: while the
//! mode file (the mounted mode ConfigMap key) says read-only, writes answer 423 Locked and
//! reads go on. (Not 503: a deliberate read-only mode must not count against the
//! availability SLO the operator defends, or entering it would look like a new outage.)
//! Invoices live in memory; the "database pool" is a semaphore of `--db-pool-max`
//! connections that each write holds for `--write-duration`.
//!
//! With `--debug-faults` (tests and demos only) `PUT /debug/held-connections` with a number
//! as the body makes the process hold that many pool connections until told otherwise: the
//! whole pool is a connection leak (writes time out with 503, only a new process recovers),
//! most of it a database that struggles (the pool runs hot, writes still succeed), 0 lets
//! them go.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{Path, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use clap::Parser;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Command line; every flag also reads an environment variable so the same binary runs in a
/// pod (downward API) and on a laptop.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A small invoice service with the metrics invoice-operator reads"
)]
struct Cli {
    /// Address to serve the API and /metrics on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// File holding the mode (the mounted mode ConfigMap key); read-write when missing.
    #[arg(long, env = "MODE_FILE")]
    mode_file: Option<PathBuf>,
    /// The mode value that means read-only.
    #[arg(long, env = "READ_ONLY_VALUE", default_value = "read-only")]
    read_only_value: String,
    /// `namespace` label of the metrics.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// `service` label: the InvoiceService's name.
    #[arg(long, env = "SERVICE", default_value = "invoice-app")]
    service: String,
    /// `pod` label.
    #[arg(long, env = "POD_NAME", default_value = "invoice-app-local")]
    pod: String,
    /// `zone` label.
    #[arg(long, env = "ZONE", default_value = "local")]
    zone: String,
    /// Database connections available to this pod.
    #[arg(long, env = "DB_POOL_MAX", default_value_t = 20)]
    db_pool_max: u32,
    /// How long a write holds a database connection.
    #[arg(long, env = "WRITE_DURATION_MS", default_value_t = 5)]
    write_duration_ms: u64,
    /// Serve the fault switch `PUT /debug/held-connections` (tests and demos; never in
    /// production).
    #[arg(long, env = "DEBUG_FAULTS", default_value_t = false)]
    debug_faults: bool,
}

/// An invoice.
#[derive(Clone, Debug, Serialize)]
struct Invoice {
    id: u64,
    customer: String,
    amount_cents: u64,
}

/// A new invoice as posted.
#[derive(Debug, Deserialize)]
struct NewInvoice {
    customer: String,
    amount_cents: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    namespace: String,
    service: String,
    pod: String,
    zone: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    service: String,
    pod: String,
    zone: String,
}

struct AppState {
    invoices: Mutex<BTreeMap<u64, Invoice>>,
    pool: Semaphore,
    pool_max: u32,
    /// Connections held by the fault switch (never given back by a write).
    held: tokio::sync::Mutex<u32>,
    write_duration: Duration,
    mode_file: Option<PathBuf>,
    read_only_value: String,
    labels: PodLabels,
    requests: Family<RequestLabels, Counter>,
    latency: Family<PodLabels, Histogram>,
    pool_active: Family<PodLabels, Gauge>,
    registry: Registry,
}

type Shared = Arc<AppState>;

impl AppState {
    fn read_only(&self) -> bool {
        self.mode_file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .is_some_and(|mode| mode.trim() == self.read_only_value)
    }

    fn refresh_pool_gauges(&self) {
        let active = self.pool_max as usize - self.pool.available_permits();
        self.pool_active
            .get_or_create(&self.labels)
            .set(active as i64);
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({"error": message}))).into_response()
}

async fn create_invoice(State(state): State<Shared>, Json(new): Json<NewInvoice>) -> Response {
    if state.read_only() {
        return error(
            StatusCode::LOCKED,
            "read-only mode: writes are paused while the database recovers; reads still work",
        );
    }
    // A write holds a database connection; none free within a second is a timeout.
    let Ok(Ok(permit)) = tokio::time::timeout(Duration::from_secs(1), state.pool.acquire()).await
    else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "database pool exhausted");
    };
    state.refresh_pool_gauges();
    tokio::time::sleep(state.write_duration).await;
    let invoice = {
        let mut invoices = state.invoices.lock().expect("invoice store lock");
        let id = invoices.keys().next_back().map_or(1, |last| last + 1);
        let invoice = Invoice {
            id,
            customer: new.customer,
            amount_cents: new.amount_cents,
        };
        invoices.insert(id, invoice.clone());
        invoice
    };
    drop(permit);
    state.refresh_pool_gauges();
    (StatusCode::CREATED, Json(invoice)).into_response()
}

/// `PUT /debug/held-connections`: holds exactly the number of pool connections in the body
/// (at most the pool), taking them as writes give them back; answers the number held.
async fn hold_connections(State(state): State<Shared>, body: String) -> Response {
    let Ok(wanted) = body.trim().parse::<u32>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be a number of connections",
        );
    };
    let wanted = wanted.min(state.pool_max);
    let mut held = state.held.lock().await;
    if wanted > *held {
        // Taken from the pool for good (`forget`): a leak, until given back below.
        let more = wanted - *held;
        match tokio::time::timeout(Duration::from_secs(5), state.pool.acquire_many(more)).await {
            Ok(Ok(permits)) => permits.forget(),
            _ => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "could not take the connections within 5 s",
                );
            }
        }
    } else {
        state.pool.add_permits((*held - wanted) as usize);
    }
    *held = wanted;
    state.refresh_pool_gauges();
    tracing::warn!(held = wanted, "debug: holding database connections");
    (StatusCode::OK, wanted.to_string()).into_response()
}

async fn get_invoice(State(state): State<Shared>, Path(id): Path<u64>) -> Response {
    let invoices = state.invoices.lock().expect("invoice store lock");
    match invoices.get(&id) {
        Some(invoice) => Json(invoice.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such invoice"),
    }
}

async fn list_invoices(State(state): State<Shared>) -> Json<Vec<Invoice>> {
    let invoices = state.invoices.lock().expect("invoice store lock");
    Json(invoices.values().cloned().collect())
}

async fn metrics(State(state): State<Shared>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to encode metrics",
        );
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Counts and times every API request (not /metrics or /healthz) by status code.
async fn measure(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .requests
        .get_or_create(&RequestLabels {
            namespace: state.labels.namespace.clone(),
            service: state.labels.service.clone(),
            pod: state.labels.pod.clone(),
            zone: state.labels.zone.clone(),
            code: response.status().as_u16().to_string(),
        })
        .inc();
    state
        .latency
        .get_or_create(&state.labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

fn app(cli: &Cli) -> Router {
    let mut registry = Registry::default();
    let requests = Family::<RequestLabels, Counter>::default();
    let latency = Family::<PodLabels, Histogram>::new_with_constructor(|| {
        Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5])
    });
    let pool_active = Family::<PodLabels, Gauge>::default();
    let pool_size = Family::<PodLabels, Gauge>::default();
    registry.register(
        "invoice_http_requests",
        "HTTP requests by status code",
        requests.clone(),
    );
    registry.register(
        "invoice_http_request_duration_seconds",
        "HTTP request latency",
        latency.clone(),
    );
    registry.register(
        "invoice_db_pool_active",
        "Database connections in use",
        pool_active.clone(),
    );
    registry.register(
        "invoice_db_pool_max",
        "Database connection pool size",
        pool_size.clone(),
    );
    let labels = PodLabels {
        namespace: cli.namespace.clone(),
        service: cli.service.clone(),
        pod: cli.pod.clone(),
        zone: cli.zone.clone(),
    };
    pool_size
        .get_or_create(&labels)
        .set(i64::from(cli.db_pool_max));
    pool_active.get_or_create(&labels).set(0);
    let state = Arc::new(AppState {
        invoices: Mutex::new(BTreeMap::new()),
        pool: Semaphore::new(cli.db_pool_max as usize),
        pool_max: cli.db_pool_max,
        held: tokio::sync::Mutex::new(0),
        write_duration: Duration::from_millis(cli.write_duration_ms),
        mode_file: cli.mode_file.clone(),
        read_only_value: cli.read_only_value.clone(),
        labels,
        requests,
        latency,
        pool_active,
        registry,
    });
    let api = Router::new()
        .route("/invoices", get(list_invoices).post(create_invoice))
        .route("/invoices/{id}", get(get_invoice))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), measure));
    let mut router = Router::new()
        .merge(api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }));
    if cli.debug_faults {
        router = router.route("/debug/held-connections", put(hold_connections));
    }
    router.with_state(state)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let cli = Cli::parse();
    let router = app(&cli);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("failed to listen on {}", cli.listen))?;
    tracing::info!(address = %cli.listen, service = %cli.service, pod = %cli.pod, "serving invoices");
    axum::serve(listener, router).await.context("server failed")
}
