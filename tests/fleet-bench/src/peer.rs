//! The peer comparison at the largest size: what our recording rules cost Prometheus, alone,
//! and then what Sloth's rules for the same availability SLOs cost beside them (Sloth's loaded
//! in turn, so both are measured on the same Prometheus, the same data and the same fleet).
//! No operator runs meanwhile.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

use crate::{
    Cli,
    fleet::Layout,
    log, probe,
    results::Peer,
    rules::{self, PEER_PREFIX},
};

/// Every series our rules record (none of them carries a peer's `sloth_service`).
const OUR_SERIES: &str = "{__name__=~\"invoiceops:.+|slo:.+\", sloth_service!~\"peer-.+\"}";

/// Sloth's binary: `sloth` in the cluster binaries' folder (`make bench` builds it there).
fn sloth_binary() -> anyhow::Result<PathBuf> {
    let folder = std::env::var_os("CLUSTER_BIN").context("CLUSTER_BIN is not set")?;
    let binary = PathBuf::from(folder).join("sloth");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: `make bench` builds it (go install github.com/slok/sloth/cmd/sloth@v0.16.0)",
        binary.display()
    );
    Ok(binary)
}

/// Prometheus' CPU (cores) and RSS (MiB) over `window`.
async fn prometheus_over(prometheus_url: &str, window: Duration) -> anyhow::Result<(f64, f64)> {
    let before = probe::prometheus_cpu_seconds(prometheus_url)?;
    tokio::time::sleep(window).await;
    let after = probe::prometheus_cpu_seconds(prometheus_url)?;
    Ok((
        (after - before) / window.as_secs_f64(),
        probe::prometheus_rss_mib(prometheus_url)?,
    ))
}

/// Measures our rules alone, then Sloth's beside them, over `--peer-window` each.
pub async fn compare(
    cli: &Cli,
    prometheus_url: &str,
    layout: Layout,
    services: usize,
) -> anyhow::Result<Peer> {
    let window = Duration::from_secs(cli.peer_window);
    let seconds = cli.peer_window;
    rules::unload(prometheus_url, rules::SLOTH)?;
    log(&format!(
        "peer: our recording rules alone for {seconds} s ({services} services)"
    ));
    let (prometheus_cpu_ours, prometheus_rss_ours) =
        prometheus_over(prometheus_url, window).await?;
    let ours = rules::cost(prometheus_url, rules::OURS, seconds, OUR_SERIES);

    let sloth = sloth_binary()?;
    let specs = rules::sloth_specs(layout, services);
    let scratch = cli.logs.clone();
    let text =
        tokio::task::spawn_blocking(move || rules::sloth_rules(&sloth, &specs, &scratch)).await??;
    rules::load(prometheus_url, rules::SLOTH, &text)?;
    log(&format!(
        "peer: Sloth's rules for the same {services} SLOs loaded ({} KiB); first evaluations, then {seconds} s",
        text.len() / 1024
    ));
    // Two evaluations of every group before the window starts.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (prometheus_cpu_both, prometheus_rss_both) =
        prometheus_over(prometheus_url, window).await?;
    let peer_series = format!("{{sloth_service=~\"{PEER_PREFIX}.+\"}}");
    let sloth_cost = rules::cost(prometheus_url, rules::SLOTH, seconds, &peer_series);
    let ours_beside_sloth = rules::cost(prometheus_url, rules::OURS, seconds, OUR_SERIES);
    rules::unload(prometheus_url, rules::SLOTH)?;
    let peer = Peer {
        services,
        window_seconds: seconds as f64,
        ours,
        sloth: sloth_cost,
        ours_beside_sloth,
        prometheus_cpu_ours,
        prometheus_cpu_both,
        prometheus_rss_ours,
        prometheus_rss_both,
    };
    log(&format!(
        "peer: ours {:.4} s/s over {} rules and {} series; Sloth {:.4} s/s over {} rules and {} series",
        peer.ours.evaluation_seconds_per_second,
        peer.ours.rules,
        peer.ours.series,
        peer.sloth.evaluation_seconds_per_second,
        peer.sloth.rules,
        peer.sloth.series
    ));
    Ok(peer)
}
