//! The operator-wide metric profile: which metric and label names the batched fleet queries
//! read. One profile for the whole operator (later filled from command-line flags); services
//! whose metrics look different use custom PromQL instead. No IO.

/// Metric and label names of the operator-wide metric profile.
///
/// Every field is a plain name inserted verbatim into PromQL, so it must be a valid Prometheus
/// metric or label name (`[a-zA-Z_:][a-zA-Z0-9_:]*`); the defaults follow the invoice app and
/// cert-manager. Label *values* are never configured here: those come from the cluster and are
/// escaped wherever they reach a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricProfile {
    /// Counter of served HTTP requests, one series per status code.
    ///
    /// Default: `invoice_http_requests_total`.
    pub requests_total: String,
    /// Buckets of the HTTP request latency histogram, in seconds, carrying the same labels as
    /// [`requests_total`](Self::requests_total) plus `le`.
    ///
    /// Default: `invoice_http_request_duration_seconds_bucket`.
    pub request_duration_bucket: String,
    /// Gauge of database connections in use, per pod.
    ///
    /// Default: `invoice_db_pool_active`.
    pub db_pool_active: String,
    /// Gauge of the database connection pool size, per pod.
    ///
    /// Default: `invoice_db_pool_max`.
    pub db_pool_max: String,
    /// Gauge of the serving certificate's expiry time (Unix seconds).
    ///
    /// Default: `certmanager_certificate_expiration_timestamp_seconds` (cert-manager's).
    pub certificate_expiry: String,
    /// Label naming the Kubernetes namespace on the request, latency and pool metrics.
    ///
    /// Default: `namespace`.
    pub namespace_label: String,
    /// Label naming the service (an InvoiceService's `signals.serviceLabel`, or its name).
    ///
    /// Default: `service`.
    pub service_label: String,
    /// Label naming the pod.
    ///
    /// Default: `pod`.
    pub pod_label: String,
    /// Label naming the pod's availability zone.
    ///
    /// Default: `zone`.
    pub zone_label: String,
    /// Label holding the HTTP status code (`200`, `503`, ...) on the request counter.
    ///
    /// Default: `code`.
    pub code_label: String,
    /// Label naming the certificate's namespace on the expiry metric.
    ///
    /// Default: `namespace`.
    pub certificate_namespace_label: String,
    /// Label naming the cert-manager Certificate on the expiry metric.
    ///
    /// Default: `name`.
    pub certificate_name_label: String,
}

impl Default for MetricProfile {
    fn default() -> Self {
        Self {
            requests_total: "invoice_http_requests_total".to_owned(),
            request_duration_bucket: "invoice_http_request_duration_seconds_bucket".to_owned(),
            db_pool_active: "invoice_db_pool_active".to_owned(),
            db_pool_max: "invoice_db_pool_max".to_owned(),
            certificate_expiry: "certmanager_certificate_expiration_timestamp_seconds".to_owned(),
            namespace_label: "namespace".to_owned(),
            service_label: "service".to_owned(),
            pod_label: "pod".to_owned(),
            zone_label: "zone".to_owned(),
            code_label: "code".to_owned(),
            certificate_namespace_label: "namespace".to_owned(),
            certificate_name_label: "name".to_owned(),
        }
    }
}
