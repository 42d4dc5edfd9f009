//! Prometheus source: batched fleet-wide queries of the operator-wide metric profile and
//! per-service custom PromQL. Does IO (HTTP to Prometheus).
