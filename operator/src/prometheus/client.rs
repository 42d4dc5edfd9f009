//! The live [`MetricsSource`]: sends the planned queries to Prometheus over HTTP, within a
//! connect timeout, a per-query deadline and a global bound on queries in flight, and counts
//! what it sends. Does IO.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt as _, future::BoxFuture, stream};
use prometheus_http_query::{Client, reqwest};
use tokio::sync::Semaphore;

use super::{
    Error, MetricsSource,
    connection::{Connection, Token, TokenFile, bearer},
    fleet::{
        AnswerError, Answered, FleetMetrics, QueryOutcome, merge_custom, read_answer_with_stats,
    },
    profile::MetricProfile,
    query::{FleetQuery, ServiceQuery},
};
use crate::signals::{ServiceMetrics, UnknownReason};

/// Connect timeout: Prometheus answers a TCP handshake in milliseconds in-cluster; two
/// seconds without one means it is down, and the evaluation should say so quickly.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Per-query deadline (also passed to Prometheus as the evaluation timeout): the whole fleet
/// is evaluated every 15 s, so no single query may take most of that.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Queries in flight at once, across all callers. Prometheus evaluates 20 queries at a time by
/// default (`--query.max-concurrency`); four leaves room for rules and dashboards.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Slack between the HTTP client's timeout and the outer deadline, so the client's own (more
/// precise) timeout error normally wins and the deadline only catches what it misses.
const DEADLINE_SLACK: Duration = Duration::from_millis(500);

/// Bounds on what the source may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// TCP connect timeout. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// Per-query timeout, connect to last byte. Default [`DEFAULT_QUERY_TIMEOUT`].
    pub query_timeout: Duration,
    /// Queries in flight at once, across all callers. Default [`DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Told about every query sent, e.g. to feed the operator's own metrics. Labels are bounded:
/// `kind` is a [`QueryKind::name`](super::QueryKind::name) or
/// [`CustomKind::name`](super::CustomKind::name).
pub trait QueryObserver: Send + Sync + fmt::Debug {
    /// One query finished: `Ok` when Prometheus answered with data (with the number of samples
    /// it loaded for it, when its answer says), otherwise why not.
    fn query_finished(
        &self,
        kind: &'static str,
        outcome: Result<Option<u64>, UnknownReason>,
        elapsed: Duration,
    );
}

/// Why one query failed; logged, then reduced to an [`UnknownReason`].
#[derive(Debug, thiserror::Error)]
enum QueryError {
    #[error("failed to send the query to prometheus")]
    Send(#[source] prometheus_http_query::Error),
    #[error("failed to get an answer within {0:?}")]
    Deadline(Duration),
    #[error("a proxy answered {0} for prometheus")]
    Unavailable(reqwest::StatusCode),
    #[error("prometheus answered {0} without a JSON body")]
    NotJson(reqwest::StatusCode),
    #[error("failed to read the answer")]
    Read(#[source] reqwest::Error),
    #[error("failed to use the answer")]
    Answer(#[source] AnswerError),
}

impl QueryError {
    /// A response that is not a Prometheus answer: a proxy in front of Prometheus answering
    /// 502–504 for it means the backend is not there; anything else is a failed query.
    fn not_json(status: reqwest::StatusCode) -> Self {
        if matches!(status.as_u16(), 502..=504) {
            Self::Unavailable(status)
        } else {
            Self::NotJson(status)
        }
    }

    fn reason(&self) -> UnknownReason {
        match self {
            Self::Send(_) | Self::Deadline(_) | Self::Unavailable(_) => {
                UnknownReason::PrometheusUnreachable
            }
            Self::Read(error) if error.is_timeout() => UnknownReason::PrometheusUnreachable,
            Self::Read(_) | Self::NotJson(_) | Self::Answer(_) => UnknownReason::QueryFailed,
        }
    }

    /// Whether Prometheus refused the connection or did not answer in time: the queries still
    /// waiting to be sent would most likely fail the same way, and only add to the wait.
    fn gives_up_on_prometheus(&self) -> bool {
        match self {
            Self::Deadline(_) => true,
            Self::Send(prometheus_http_query::Error::Client(client_error)) => client_error
                .inner()
                .is_some_and(|inner| inner.is_connect() || inner.is_timeout()),
            Self::Read(error) => error.is_timeout(),
            _ => false,
        }
    }
}

/// Where queries go: the client (its URL, TLS and default headers) and the bearer token, if
/// any, put on each request (so that a rotated token file is used from the next query on).
#[derive(Clone)]
struct Endpoint {
    client: Client,
    token: Option<Arc<Token>>,
}

impl Endpoint {
    /// A client with no token (a service's own Prometheus).
    fn plain(client: Client) -> Self {
        Self {
            client,
            token: None,
        }
    }
}

/// Sends one instant query and reads its answer. The library sends it (URL, parameters,
/// headers); the body is read here with [`read_answer_with_stats`], straight into series. The
/// query asks for Prometheus' statistics (`stats=all`) so that the samples it loads are counted
/// (`invoiceops_prometheus_query_samples_total`); a Prometheus that ignores the parameter
/// still answers.
async fn query_once(
    endpoint: &Endpoint,
    promql: &str,
    timeout_millis: i64,
) -> Result<Answered, QueryError> {
    let mut request = endpoint
        .client
        .query(promql)
        .timeout(timeout_millis)
        .stats();
    if let Some(token) = &endpoint.token {
        request = request.header(reqwest::header::AUTHORIZATION, token.header());
    }
    let response = request.get_raw().await.map_err(QueryError::Send)?;
    let status = response.status();
    let json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !json {
        return Err(QueryError::not_json(status));
    }
    let body = response.bytes().await.map_err(QueryError::Read)?;
    read_answer_with_stats(&body).map_err(QueryError::Answer)
}

#[derive(Debug, Default)]
struct Counters {
    issued: AtomicU64,
    failed: AtomicU64,
}

/// Prometheus over HTTP. Cheap to clone; clones share the connection pool, the concurrency
/// bound and the counters.
#[derive(Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    endpoint: Endpoint,
    profile: MetricProfile,
    limits: Limits,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
    observer: Option<Arc<dyn QueryObserver>>,
}

impl fmt::Debug for Prometheus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Prometheus")
            .field("url", &self.endpoint.client.base_url().as_str())
            .field("profile", &self.profile)
            .field("limits", &self.limits)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Prometheus {
    /// A source for the Prometheus at `url` (e.g. `http://prometheus.monitoring:9090`).
    pub fn new(url: &str, profile: MetricProfile, limits: Limits) -> Result<Self, Error> {
        Self::connect(url, &Connection::default(), profile, limits)
    }

    /// A source for the Prometheus at `url` reached through `connection` (CA bundle, client
    /// certificate, extra headers, token file). Only the operator-wide client uses it: a
    /// service's own `signals.prometheus.url` is chosen by whoever writes the InvoiceService
    /// and must never receive the operator's credentials, so it gets a plain client.
    pub fn connect(
        url: &str,
        connection: &Connection,
        profile: MetricProfile,
        limits: Limits,
    ) -> Result<Self, Error> {
        let timeouts = |builder: reqwest::ClientBuilder| {
            builder
                .connect_timeout(limits.connect_timeout)
                .timeout(limits.query_timeout)
        };
        let http = timeouts(reqwest::Client::builder())
            .build()
            .map_err(Error::BuildHttpClient)?;
        let operator_wide = if connection.is_plain() {
            http.clone()
        } else {
            connection.http_client(timeouts)?
        };
        let token = match &connection.token_file {
            Some(path) => Some(Arc::new(Token::File(TokenFile::open(path)?))),
            None => None,
        };
        let endpoint = Endpoint {
            client: client_for(&operator_wide, url)?,
            token,
        };
        Ok(Self {
            http,
            endpoint,
            profile,
            limits,
            permits: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            counters: Arc::default(),
            observer: None,
        })
    }

    /// Sends `token` as a bearer token to this Prometheus (not to a service's own).
    pub fn with_bearer_token(mut self, token: &str) -> Result<Self, Error> {
        self.endpoint.token = Some(Arc::new(Token::Fixed(bearer(token)?)));
        Ok(self)
    }

    /// Reports every query to `observer` as well.
    pub fn with_observer(mut self, observer: Arc<dyn QueryObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The metric profile the fleet queries read.
    pub fn profile(&self) -> &MetricProfile {
        &self.profile
    }

    /// Queries sent since the source was created (all clones together).
    pub fn queries_issued(&self) -> u64 {
        self.counters.issued.load(Ordering::Relaxed)
    }

    /// Queries sent that got no usable answer (unreachable, refused, malformed).
    pub fn query_failures(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Sends `queries` to `client`, at most [`Limits::concurrency`] at a time, and hands each
    /// outcome to `answered` with its index as it arrives, so an answer can be reduced before
    /// the next is read. Once Prometheus refuses a connection or lets a query time out, the
    /// queries not yet sent are given up: they are `PrometheusUnreachable` too. This bounds an
    /// evaluation against a dead or hung Prometheus to about one query timeout.
    async fn run(
        &self,
        endpoint: &Endpoint,
        queries: &[(&'static str, String)],
        gave_up: &AtomicBool,
        mut answered: impl FnMut(usize, QueryOutcome),
    ) {
        // The futures are built first and then polled as a stream: a closure returning a
        // borrowing future would trip the compiler's `Send` inference for the trait methods.
        let pending: Vec<_> = queries
            .iter()
            .enumerate()
            .map(|(index, (kind, promql))| async move {
                (index, self.execute(endpoint, kind, promql, gave_up).await)
            })
            .collect();
        let mut answers = stream::iter(pending).buffer_unordered(self.limits.concurrency.max(1));
        while let Some((index, outcome)) = answers.next().await {
            answered(index, outcome);
        }
    }

    /// [`run`](Self::run), the outcomes collected in the order of `queries`.
    async fn run_collected(
        &self,
        endpoint: &Endpoint,
        queries: &[(&'static str, String)],
        gave_up: &AtomicBool,
    ) -> Vec<QueryOutcome> {
        let mut outcomes = vec![Err(UnknownReason::QueryFailed); queries.len()];
        self.run(endpoint, queries, gave_up, |index, outcome| {
            outcomes[index] = outcome;
        })
        .await;
        outcomes
    }

    async fn execute(
        &self,
        endpoint: &Endpoint,
        kind: &'static str,
        promql: &str,
        gave_up: &AtomicBool,
    ) -> QueryOutcome {
        // The semaphore is never closed, so acquiring only fails in theory; run unbounded then
        // rather than fail the query.
        let _permit = self.permits.acquire().await.ok();
        if gave_up.load(Ordering::Relaxed) {
            return Err(UnknownReason::PrometheusUnreachable);
        }
        self.counters.issued.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let timeout_millis =
            i64::try_from(self.limits.query_timeout.as_millis()).unwrap_or(i64::MAX);
        let deadline = self.limits.query_timeout + DEADLINE_SLACK;
        let answer = match tokio::time::timeout(
            deadline,
            query_once(endpoint, promql, timeout_millis),
        )
        .await
        {
            Err(_elapsed) => Err(QueryError::Deadline(deadline)),
            Ok(answer) => answer,
        };
        let elapsed = started.elapsed();
        let outcome = answer.map_err(|error| {
            if error.gives_up_on_prometheus() {
                gave_up.store(true, Ordering::Relaxed);
            }
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            let reason = error.reason();
            tracing::debug!(
                kind,
                promql,
                %reason,
                error = %error_chain(&error),
                "prometheus query failed"
            );
            reason
        });
        if let Some(observer) = &self.observer {
            observer.query_finished(
                kind,
                outcome
                    .as_ref()
                    .map(|answered| answered.samples)
                    .map_err(|reason| *reason),
                elapsed,
            );
        }
        outcome.map(|answered| answered.series)
    }

    async fn fleet_with(
        &self,
        endpoint: &Endpoint,
        query: &FleetQuery,
        gave_up: &AtomicBool,
    ) -> FleetMetrics {
        let plan = query.plan(&self.profile);
        let requests: Vec<_> = plan
            .iter()
            .map(|planned| (planned.kind.name(), planned.promql.clone()))
            .collect();
        let mut metrics = FleetMetrics::awaiting(query);
        let mut failures = 0;
        self.run(endpoint, &requests, gave_up, |index, outcome| {
            failures += usize::from(outcome.is_err());
            metrics.absorb(&self.profile, plan[index].kind.clone(), outcome);
        })
        .await;
        if failures > 0 {
            tracing::warn!(
                failures,
                queries = requests.len(),
                url = endpoint.client.base_url().as_str(),
                "some prometheus queries failed"
            );
        }
        metrics
    }
}

/// An error with its causes, "outer: inner: innermost", for one log field (Prometheus' own
/// message is usually the innermost).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn client_for(http: &reqwest::Client, url: &str) -> Result<Client, Error> {
    Client::from(http.clone(), url).map_err(|source| Error::ParseUrl {
        url: url.to_owned(),
        source,
    })
}

impl Prometheus {
    async fn measure_fleet(&self, query: &FleetQuery) -> FleetMetrics {
        self.fleet_with(&self.endpoint, query, &AtomicBool::new(false))
            .await
    }

    async fn measure_service(&self, query: &ServiceQuery) -> ServiceMetrics {
        let endpoint = match &query.url {
            None => self.endpoint.clone(),
            Some(url) => match client_for(&self.http, url) {
                Ok(client) => Endpoint::plain(client),
                Err(error) => {
                    tracing::warn!(
                        error = %error_chain(&error),
                        "cannot query the service's prometheus"
                    );
                    let unreachable = UnknownReason::PrometheusUnreachable;
                    let metrics = FleetMetrics::unknown(&query.profile, &self.profile, unreachable);
                    return unreachable_custom(metrics.service(&query.selector), query);
                }
            },
        };
        let gave_up = AtomicBool::new(false);
        let plan = query.plan_custom();
        let requests: Vec<_> = plan
            .iter()
            .map(|planned| (planned.kind.name(), planned.promql.clone()))
            .collect();
        let (profile, custom) = futures::join!(
            self.fleet_with(&endpoint, &query.profile, &gave_up),
            self.run_collected(&endpoint, &requests, &gave_up),
        );
        let kinds = plan.into_iter().map(|planned| planned.kind);
        merge_custom(profile.service(&query.selector), query, kinds.zip(custom))
    }
}

impl MetricsSource for Prometheus {
    fn fleet<'a>(&'a self, query: &'a FleetQuery) -> BoxFuture<'a, FleetMetrics> {
        Box::pin(self.measure_fleet(query))
    }

    fn service<'a>(&'a self, query: &'a ServiceQuery) -> BoxFuture<'a, ServiceMetrics> {
        Box::pin(self.measure_service(query))
    }
}

/// Every custom measurement `PrometheusUnreachable` as well.
fn unreachable_custom(base: ServiceMetrics, query: &ServiceQuery) -> ServiceMetrics {
    let outcomes = query
        .plan_custom()
        .into_iter()
        .map(|planned| (planned.kind, Err(UnknownReason::PrometheusUnreachable)));
    merge_custom(base, query, outcomes)
}
