//! Prometheus source: batched fleet-wide queries of the operator-wide metric profile and
//! per-service custom PromQL, split in memory into [`ServiceMetrics`]. The [`Prometheus`]
//! source does IO (HTTP to Prometheus); planning ([`FleetQuery`], [`ServiceQuery`]), splitting
//! ([`FleetMetrics`]) and the [`Recorded`] source are pure.
//!
//! # Queries per evaluation interval
//!
//! Every service that uses the operator-wide Prometheus and the [`MetricProfile`] is measured
//! by the same fleet queries, grouped by `namespace`/`service` (and `pod`/`zone`) and split by
//! label in memory. One interval issues, for the whole fleet:
//!
//! | query | count | PromQL (default profile; `class` is `invoiceops_class`) |
//! |---|---|---|
//! | per-pod rates by status class, detection window | 1 | `sum by (namespace, service, pod, zone, class) (label_replace(rate(invoice_http_requests_total[1m]), "class", "${1}xx", "code", "([0-9]).."))` |
//! | freshness (newest sample per pod) | 1 | `max by (namespace, service, pod) (timestamp(invoice_http_requests_total) or timestamp(invoice_db_pool_active))` |
//! | database pool, both gauges per pod | 1 | `label_replace(sum by (namespace, service, pod) (invoice_db_pool_active), "invoiceops_pool_gauge", "active", "", "") or label_replace(sum by (namespace, service, pod) (invoice_db_pool_max), "invoiceops_pool_gauge", "max", "", "")` |
//! | certificate expiry | 1 | `min by (namespace, name) (certmanager_certificate_expiration_timestamp_seconds)` |
//! | service latency | 1 per distinct quantile | `histogram_quantile(0.99, sum by (namespace, service, le) (rate(invoice_http_request_duration_seconds_bucket[1m])))` |
//! | pod latency | 1 per distinct quantile | `histogram_quantile(0.99, sum by (namespace, service, pod, zone, le) (rate(invoice_http_request_duration_seconds_bucket[1m])))` |
//! | service rates by status class | 1 per distinct window | `sum by (namespace, service, class) (label_replace(rate(invoice_http_requests_total[5m]), "class", "${1}xx", "code", "([0-9]).."))` |
//!
//! That is `4 + windows + 2 × quantiles` ([`FleetQuery::planned_queries`]), where `windows` are
//! the distinct burn-rate and SLO windows in the fleet (the detection window excluded: the
//! service's detection-window rates are the sum of its pods') and `quantiles` the distinct
//! latency percentiles. Both come from the specs' values, not their number: 1, 100 or 2,000
//! services with the workbook's burn-rate windows, a 30-day SLO and p99 cost the same
//! `4 + 8 + 2 = 14` queries (measured against a real Prometheus by the `prometheus` e2e test:
//! 14 for 1, 100 and 1,000 services). The answers grow with the fleet (one series per pod or service and
//! class), the round trips do not. Counting the status classes with `label_replace` gives
//! total, 4xx and 5xx in one answer instead of three queries.
//!
//! Windows longer than an hour are not asked every interval: the controller reuses the
//! previous answer for a sixtieth of the window ([`reuse_period`]: 2 min for 2 h, 6 min for
//! 6 h, 12 h for 30 d), within about 1.7 % of a fresh one, and falls back on it for up to twice
//! that when the query fails. They are the expensive queries (a rate touches every sample in
//! its window of every series), so with the workbook's windows most intervals ask
//! `4 + 3 + 2 = 9` queries (5m, 30m, 1h) and the long ones come round on their own periods.
//! Answers are split into their per-service form as each arrives, so only the answers in
//! flight are held as raw series.
//!
//! Services naming their own Prometheus (`signals.prometheus`) or custom PromQL
//! (`signals.queries`) are not batched: each costs its own [`ServiceQuery`] (the profile's
//! queries restricted to the service with escaped label matchers, plus its custom queries).
//! The per-service query mode ([`QueryMode::PerService`](crate::controller::QueryMode), only
//! for comparison benchmarks) measures every service that way: one query per service per SLI
//! and window.
//!
//! # Unknown, not wrong
//!
//! Every value is a [`Measured`](crate::signals::Measured): `PrometheusUnreachable` when the
//! query could not be sent or timed out, `QueryFailed` when Prometheus refused it or answered
//! garbage, `NoData` when the service or pod has no series, `NotANumber` for NaN and
//! infinities, `Stale` for pods whose newest sample is older than
//! [`FleetQuery::stale_after`]. A request rate of zero is a measurement (`Ok`), not an unknown:
//! the engine decides `LowTraffic` from `signals.minRequestRate`.
//!
//! # Limits
//!
//! A connect timeout, a per-query deadline (also sent to Prometheus as its evaluation
//! timeout) and a bound on queries in flight across all callers ([`Limits`]); once Prometheus
//! refuses a connection or lets a query time out, the rest of the batch is given up, so an
//! evaluation against a dead or hung Prometheus takes about one timeout. [`Prometheus::queries_issued`]
//! and [`Prometheus::query_failures`] count queries, and a [`QueryObserver`] hears about each
//! one with its latency.

pub mod alerts;
mod client;
pub mod connection;
mod fleet;
mod profile;
pub mod promql;
mod query;
mod recorded;
pub mod rules;

pub use client::{
    DEFAULT_CONCURRENCY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_QUERY_TIMEOUT, Limits, Prometheus,
    QueryObserver,
};
pub use connection::Connection;
pub use fleet::{
    AnswerError, FleetMetrics, QueryOutcome, Series, merge_custom, parse_query_response,
    read_answer, read_answer_with_stats,
};
pub use profile::MetricProfile;
pub use query::{
    ALWAYS_ASKED_UP_TO, CustomKind, FleetQuery, PlannedQuery, QueryKind, ServiceQuery,
    ServiceSelector, SliSource, latency_quantile, reuse_period, slo_windows, uses_fleet_queries,
};
pub use recorded::Recorded;

use futures::future::BoxFuture;

use crate::signals::ServiceMetrics;

/// Where measurements come from: Prometheus in production, a [`Recorded`] answer set in
/// tests. The controller holds it as a trait object (`Arc<dyn MetricsSource>`), so its tests
/// feed recorded signals through the same path as production.
pub trait MetricsSource: Send + Sync {
    /// Measures the whole fleet with the batched profile queries; read each service out with
    /// [`FleetMetrics::service`].
    fn fleet<'a>(&'a self, query: &'a FleetQuery) -> BoxFuture<'a, FleetMetrics>;

    /// Measures one service with its own Prometheus and/or custom PromQL.
    fn service<'a>(&'a self, query: &'a ServiceQuery) -> BoxFuture<'a, ServiceMetrics>;
}

/// Why a Prometheus source could not be set up. Failures of single queries are not errors:
/// they become unknown measurements.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client could not be built (e.g. no TLS backend).
    #[error("failed to build the http client for prometheus")]
    BuildHttpClient(#[source] prometheus_http_query::reqwest::Error),
    /// The bearer token cannot be sent in an HTTP header (e.g. it holds a newline).
    #[error("failed to use the prometheus bearer token: it is not a valid header value")]
    InvalidToken,
    /// A file of the connection (CA bundle, client certificate or key, token) is unreadable.
    #[error("failed to read {}", path.display())]
    ReadFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A CA bundle or client certificate/key is not valid PEM.
    #[error("{} is not a valid PEM certificate bundle or certificate and key", path.display())]
    Certificate {
        /// The file.
        path: std::path::PathBuf,
        /// What the TLS library said.
        #[source]
        source: prometheus_http_query::reqwest::Error,
    },
    /// The CA bundle holds no certificate.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: std::path::PathBuf,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error(
        "a prometheus client certificate needs both --prometheus-client-cert-file and --prometheus-client-key-file"
    )]
    HalfAClientIdentity,
    /// An extra header whose name or value HTTP cannot carry.
    #[error("the prometheus header {name:?} is not a valid HTTP header name and value")]
    InvalidHeader {
        /// Its name as given.
        name: String,
    },
    /// `Authorization` given as an extra header: the token flags own it.
    #[error(
        "the prometheus header Authorization is set with --prometheus-token-file, not as an extra header"
    )]
    AuthorizationHeader,
    /// The token file is empty.
    #[error("the prometheus token file {} is empty", path.display())]
    EmptyToken {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The Prometheus URL is not a URL.
    #[error("failed to parse the prometheus url {url:?}")]
    ParseUrl {
        /// The URL as given.
        url: String,
        /// What was wrong with it.
        #[source]
        source: prometheus_http_query::Error,
    },
}

#[cfg(test)]
mod sli_source_tests;
#[cfg(test)]
mod tests;
