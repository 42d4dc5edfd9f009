//! The invoice-operator process: parses the flags (`invoice-operator rules` only prints the
//! recording or alerting rules), sets up logging, the clients, leader election and the `/metrics`,
//! `/healthz` and `/readyz` server, then runs the controller
//! until SIGTERM or Ctrl-C. Each part lives in the library (`cli`, `logging`, `startup`,
//! `leader`, `server`, `liveness`, `controller`); this file only wires them. Does IO.

use std::sync::{Arc, atomic::AtomicBool};

use clap::Parser as _;
use kube::runtime::events::Reporter;
use tracing::info;

use invoice_operator::{
    cli::{Cli, Command},
    controller, leader,
    liveness::Heartbeat,
    logging,
    metrics::Metrics,
    server::{self, ServerState},
    startup,
};

/// jemalloc instead of glibc's malloc: every evaluation parses a burst of Prometheus answers
/// (tens of thousands of small label maps at fleet scale), and glibc's per-thread arenas keep
/// each burst's peak resident; jemalloc hands freed pages back after its decay time.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Rules(args)) = &cli.command {
        print!("{}", cli.rules_text(args));
        return Ok(());
    }
    logging::init(cli.log_format);
    // The crash-safety tests' kill hook, configured by FAILPOINTS (`failpoints` feature only).
    #[cfg(feature = "failpoints")]
    let _fail_points = fail::FailScenario::setup();
    logging::warn_about_fail_points();

    let metrics = Arc::new(Metrics::default());
    let client = startup::kubernetes(&metrics).await?;
    let prometheus = startup::prometheus(&cli, &metrics)?;
    let identity = cli.identity();
    let leader = leader::leadership(&client, cli.lease(), Arc::clone(&metrics)).await?;

    let ready = Arc::new(AtomicBool::new(false));
    let heartbeat = Heartbeat::default();
    let server = tokio::spawn(server::serve(
        cli.metrics_address,
        ServerState {
            metrics: Arc::clone(&metrics),
            ready: Arc::clone(&ready),
            heartbeat: heartbeat.clone(),
        },
    ));

    let settings = cli.settings();
    info!(
        prometheus = %cli.prometheus_url,
        identity = %identity,
        interval = ?settings.evaluation_interval,
        query_mode = ?settings.query_mode,
        sli_source = ?settings.sli_source,
        "starting invoice-operator"
    );
    let runtime = controller::Runtime {
        client,
        prometheus: Arc::new(prometheus),
        metrics,
        settings,
        reporter: Reporter {
            controller: "invoice-operator".to_owned(),
            instance: Some(identity),
        },
        leader,
        ready,
    };
    tokio::select! {
        () = heartbeat.keep(controller::run(runtime, shutdown())) => Ok(()),
        result = server => Err(server::stopped(result)),
    }
}

/// Resolves on Ctrl-C on a terminal or SIGTERM from the kubelet.
async fn shutdown() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    info!("shutting down");
}
