//! Leader election: replicas take part in a coordination.k8s.io Lease and only the holder
//! acts; the others keep their caches warm to take over. Does IO (the Lease, through the
//! Kubernetes client). Leadership is published as a `watch` channel the controller reads, and
//! as the `invoiceops_leader` gauge and a log line on every change.

use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;
use tokio::sync::watch;
use tracing::info;

use crate::metrics::Metrics;

/// The lease is held this long without renewal before another replica may take over; the
/// leader stops acting as soon as a renewal fails, well within it.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// Renewal happens this long before the lease would expire (clock skew between nodes).
pub const LEASE_GRACE_SECONDS: u64 = 5;

// Renewal must happen before expiry.
const _: () = assert!(LEASE_GRACE_SECONDS < LEASE_DURATION_SECONDS);

/// The Lease a replica takes part in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Name of the Lease.
    pub name: String,
    /// Its namespace (the operator's own).
    pub namespace: String,
    /// This replica's identity in it.
    pub identity: String,
}

/// Joins the election for `lease` — or, without one, leads for good — and publishes every
/// change of leadership to `metrics` and the log. True on the channel while this replica
/// holds the Lease.
pub async fn leadership(
    client: &Client,
    lease: Option<Lease>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<watch::Receiver<bool>> {
    let leader = match lease {
        Some(lease) => {
            let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &lease.name)
                .with_namespace(&lease.namespace)
                .with_identity(&lease.identity)
                .with_duration(LEASE_DURATION_SECONDS)
                .with_grace(LEASE_GRACE_SECONDS)
                .build()
                .await
                .context("failed to set up leader election")?;
            let (receiver, _task) = manager.watch().await;
            receiver
        }
        None => watch::channel(true).1,
    };
    let mut published = leader.clone();
    tokio::spawn(async move {
        loop {
            let is_leader = *published.borrow_and_update();
            metrics.leader.set(i64::from(is_leader));
            info!(leader = is_leader, "leadership");
            if published.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(leader)
}
