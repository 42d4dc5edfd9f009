//! The Kubernetes client the operator talks through: its request stack and retry policy.
//! Builds the stack; does no IO itself.
//!
//! kube's client retries 429, 503 and 504 on its own by default (up to 15 times, backing off
//! to minutes), below any layer added to it. Two things went wrong with that: an eviction
//! refused by a PodDisruptionBudget (429) was retried inside one reconcile for minutes, so
//! the operator's own refusal handling never ran and fleet cycles overran; and the request
//! counter, outside the retry layer, counted none of the retries. So the default retry is
//! off and the stack is, from the caller inwards:
//!
//! `retry (ours) -> buffer -> count every request -> kube's stack (auth, base URI, HTTP)`
//!
//! Our retry takes transient answers (429 from API priority and fairness, 503, 504) a few
//! times with a short backoff, and never retries an eviction's 429: that is a
//! PodDisruptionBudget's answer, for the operator to record, not to insist on.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::{
    Client,
    client::{Body, ClientBuilder, retry::RetryPolicy},
};
use tower::{BoxError, buffer::BufferLayer, retry::Policy, retry::RetryLayer};

use crate::metrics::Metrics;

/// Retries of one request after a transient answer. A reconcile waits for them, so they are
/// few and short: a longer outage is the next reconcile's (with its backoff) to meet.
const MAX_RETRIES: u32 = 3;
/// First backoff between retries; it doubles up to [`MAX_RETRY_DELAY`].
const MIN_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Longest backoff between two retries (a `Retry-After` from the API server may ask longer).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Requests waiting for the buffer's worker: more than the reconciles running at once ever
/// send together.
const BUFFER_CAPACITY: usize = 1024;

/// kube's retry of transient answers, except an eviction's 429.
#[derive(Clone)]
pub struct RetryTransient {
    inner: RetryPolicy,
}

impl std::fmt::Debug for RetryTransient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RetryTransient")
            .finish_non_exhaustive()
    }
}

impl Default for RetryTransient {
    fn default() -> Self {
        Self {
            inner: RetryPolicy::new(MIN_RETRY_DELAY, MAX_RETRY_DELAY, MAX_RETRIES, true)
                .expect("the retry delays are valid"),
        }
    }
}

/// Whether `request` asks to evict a pod (`POST .../pods/{name}/eviction`).
fn is_eviction<B>(request: &Request<B>) -> bool {
    request.uri().path().ends_with("/eviction")
}

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for RetryTransient {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        if is_eviction(request)
            && matches!(result, Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS)
        {
            return None;
        }
        self.inner.retry(request, result)
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        <RetryPolicy as Policy<Request<Body>, Response<Res>, BoxError>>::clone_request(
            &mut self.inner,
            request,
        )
    }
}

/// The operator's client for `config`: kube's default retry off, every request counted in
/// `metrics`, transient answers retried by [`RetryTransient`]. Needs a Tokio runtime (the
/// buffer's worker is spawned on it).
pub fn build(mut config: kube::Config, metrics: &Metrics) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&metrics.kubernetes_requests_layer())
        .with_layer(&BufferLayer::new(BUFFER_CAPACITY))
        .with_layer(&RetryLayer::new(RetryTransient::default()))
        .build())
}

#[cfg(test)]
mod tests;
