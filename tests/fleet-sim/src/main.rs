//! The fleet-sim binary: watches the cluster, advances the model every tick, serves
//! `/metrics` and the fault API, registers itself with Prometheus through a file_sd target
//! file, and prints a timeline of what it sees.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use clap::Parser;
use fleet_sim::{
    cluster,
    faults::{Fault, ScenarioStep},
    fleet::{Fleet, ServiceView, changes},
    model::Profile,
};

/// Command line of fleet-sim.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Watch only this namespace (all namespaces when absent).
    #[arg(long, env = "FLEET_SIM_NAMESPACE")]
    namespace: Option<String>,
    /// Address of `/metrics` and the fault API.
    #[arg(long, env = "FLEET_SIM_LISTEN", default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// Requests per second each service receives.
    #[arg(long, default_value_t = Profile::default().request_rate)]
    request_rate: f64,
    /// Requests per second one pod serves before its queue saturates.
    #[arg(long, default_value_t = Profile::default().pod_capacity)]
    pod_capacity: f64,
    /// Mean latency of a request on an idle pod, seconds.
    #[arg(long, default_value_t = Profile::default().base_latency)]
    base_latency: f64,
    /// Database connections per pod.
    #[arg(long, default_value_t = Profile::default().pool_size)]
    pool_size: f64,
    /// How often the counters advance, milliseconds. One second keeps rates smooth at a 5 s
    /// scrape interval.
    #[arg(long, default_value_t = 1000)]
    tick_millis: u64,
    /// Scenario file: a JSON array of `{"after_seconds": N, "fault": {...}}` (no fault: clear).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Directory of Prometheus file_sd target files; the simulator adds its own there and
    /// removes it on exit.
    #[arg(long, env = "PROMETHEUS_TARGETS_DIR")]
    targets_dir: Option<PathBuf>,
    /// `job` label of the scrape target.
    #[arg(long, default_value = "fleet-sim")]
    job: String,
}

struct Shared {
    fleet: Fleet,
    faults: Vec<Fault>,
    started: Instant,
}

type AppState = Arc<Mutex<Shared>>;

fn timeline(started: Instant, line: &str) {
    println!("[{:>7.1}s] {line}", started.elapsed().as_secs_f64());
}

async fn metrics(State(state): State<AppState>) -> String {
    state.lock().expect("state lock").fleet.render()
}

async fn list_faults(State(state): State<AppState>) -> String {
    let shared = state.lock().expect("state lock");
    serde_json::to_string(&shared.faults).unwrap_or_default()
}

async fn add_fault(State(state): State<AppState>, body: String) -> (StatusCode, String) {
    match serde_json::from_str::<Fault>(&body) {
        Ok(fault) => {
            let mut shared = state.lock().expect("state lock");
            timeline(shared.started, &format!("fault injected: {fault}"));
            shared.faults.push(fault);
            (StatusCode::CREATED, "injected\n".to_owned())
        }
        Err(error) => (StatusCode::BAD_REQUEST, format!("invalid fault: {error}\n")),
    }
}

async fn clear_faults(State(state): State<AppState>) -> String {
    let mut shared = state.lock().expect("state lock");
    timeline(
        shared.started,
        &format!("faults cleared ({})", shared.faults.len()),
    );
    shared.faults.clear();
    "cleared\n".to_owned()
}

/// Removes the target file when the simulator ends.
struct TargetFile(Option<PathBuf>);

impl Drop for TargetFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn register(cli: &Cli, address: SocketAddr) -> anyhow::Result<TargetFile> {
    let Some(directory) = &cli.targets_dir else {
        return Ok(TargetFile(None));
    };
    let name = format!("fleet-sim-{}", address.port());
    let path = directory.join(format!("{name}.json"));
    let temporary = directory.join(format!("{name}.json.tmp"));
    let targets =
        serde_json::json!([{"targets": [address.to_string()], "labels": {"job": cli.job}}]);
    std::fs::write(&temporary, targets.to_string()).context("failed to write the target file")?;
    // Renamed into place so Prometheus never reads half a file.
    std::fs::rename(&temporary, &path).context("failed to move the target file into place")?;
    Ok(TargetFile(Some(path)))
}

async fn run_scenario(state: AppState, steps: Vec<ScenarioStep>) {
    let started = state.lock().expect("state lock").started;
    for step in steps {
        let at = started + Duration::from_secs_f64(step.after_seconds.max(0.0));
        tokio::time::sleep_until(at.into()).await;
        let mut shared = state.lock().expect("state lock");
        match step.fault {
            Some(fault) => {
                timeline(started, &format!("fault injected (scenario): {fault}"));
                shared.faults.push(fault);
            }
            None => {
                timeline(started, "faults cleared (scenario)");
                shared.faults.clear();
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let profile = Profile {
        request_rate: cli.request_rate,
        pod_capacity: cli.pod_capacity,
        base_latency: cli.base_latency,
        pool_size: cli.pool_size,
        ..Profile::default()
    };
    let client = kube::Client::try_default()
        .await
        .context("failed to build a kube client")?;
    let stores = cluster::watch(&client, cli.namespace.as_deref());
    let state: AppState = Arc::new(Mutex::new(Shared {
        fleet: Fleet::default(),
        faults: Vec::new(),
        started: Instant::now(),
    }));
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("failed to listen on {}", cli.listen))?;
    let address = listener.local_addr()?;
    let _target = register(&cli, address)?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .with_state(state.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("server failed: {error}");
        }
    });
    if let Some(path) = &cli.scenario {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let steps: Vec<ScenarioStep> =
            serde_json::from_str(&text).context("invalid scenario file")?;
        tokio::spawn(run_scenario(state.clone(), steps));
    }
    timeline(
        state.lock().expect("state lock").started,
        &format!("serving /metrics on {address}"),
    );

    let tick = Duration::from_millis(cli.tick_millis.max(100));
    let mut interval = tokio::time::interval(tick);
    let mut previous: Vec<ServiceView> = Vec::new();
    let mut last = Instant::now();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = &mut shutdown => break,
        }
        let views = stores.snapshot();
        let now = Instant::now();
        let seconds = now.duration_since(last).as_secs_f64();
        last = now;
        let mut shared = state.lock().expect("state lock");
        for line in changes(&previous, &views) {
            timeline(shared.started, &line);
        }
        let faults = shared.faults.clone();
        shared.fleet.advance(&profile, &views, &faults, seconds);
        previous = views;
    }
    timeline(state.lock().expect("state lock").started, "stopping");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
