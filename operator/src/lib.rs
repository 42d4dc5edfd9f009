//! invoice-operator: keeps invoice services inside their SLOs without a human in the loop.
//!
//! The crate follows the reconcile pipeline `observe → evaluate → decide → act → report`
//! (docs/architecture.md), IO steps marked:
//! - [`api`]: the `InvoiceService` custom resource and its validation (pure).
//! - [`preflight`]: what the cluster refutes about a valid spec — a missing Deployment or
//!   zone, a Deployment an older service claims (pure).
//! - [`signals`]: the measurements decisions are made from (pure data).
//! - [`prometheus`]: batched Prometheus queries filling the signals (IO).
//! - [`evaluate`]: SLO burn rates, pod and zone health from the signals (pure).
//! - [`foreign`]: changes someone else made to what the operator manages, adopted (pure).
//! - [`engine`]: the decision — one action or reversal, or the gate that blocked it (pure).
//! - [`act`]: carrying out a decision on the cluster (IO).
//! - [`undo`]: the reversals that hand a workload back when its InvoiceService is deleted (pure).
//! - [`incident`]: every outage as one episode, measured against its RTO (pure).
//! - [`report`]: the status and Events users see (pure).
//! - [`storm`]: the fleet-wide storm gate that freezes actions during shared outages (pure).
//! - [`kube_client`]: the Kubernetes client's request counting and retry policy.
//! - [`permissions`]: the operator's own RBAC, reviewed once at start (IO).
//! - [`controller`]: watches, caches, the fleet tick and the reconcile pipeline (IO).
//!
//! Around the pipeline, the process (`main.rs` wires these):
//! - [`cli`]: the flags and environment variables, and what they configure (pure).
//! - [`logging`]: the tracing subscriber (IO: installs it, writes stdout).
//! - [`startup`]: the Kubernetes client with the CRD check, the Prometheus client (IO).
//! - [`leader`]: leader election on a Lease (IO).
//! - [`liveness`]: the controller loop's heartbeat behind `/healthz` (pure, reads the clock).
//! - [`server`]: `/metrics`, `/healthz`, `/readyz` (IO).
//! - [`metrics`]: the operator's own metrics (pure; counts Kubernetes requests as a layer).

pub mod act;
pub mod api;
pub mod cli;
pub mod controller;
pub mod engine;
pub mod evaluate;
#[cfg(test)]
mod fixtures;
pub mod foreign;
pub mod incident;
pub mod kube_client;
pub mod leader;
pub mod liveness;
pub mod logging;
pub mod metrics;
pub mod permissions;
pub mod preflight;
pub mod prometheus;
pub mod report;
pub mod server;
pub mod signals;
pub mod startup;
pub mod storm;
pub mod undo;

/// The field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "invoice-operator";
