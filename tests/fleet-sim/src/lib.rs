//! fleet-sim: a simulated invoice fleet for the end-to-end tests and the demo. It watches the
//! pods of InvoiceService workloads and serves per-pod invoice metrics, in the operator's
//! default metric profile, that react to what the operator does: more Ready pods lower
//! latency, read-only mode relieves the database pool, a replaced pod comes back healthy
//! unless the fault is service-wide, a drained zone stops erroring.
//!
//! `model` and `fleet` are pure; `cluster` watches the API server; the binary serves HTTP.

pub mod cluster;
pub mod faults;
pub mod fleet;
pub mod model;
