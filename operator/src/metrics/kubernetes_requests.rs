//! Counting the requests the Kubernetes client sends, as a tower layer on its service stack.

use std::task::{Context, Poll};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

/// Labels of `invoiceops_kubernetes_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubernetesRequestLabels {
    /// The HTTP method: `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, or `OTHER`.
    pub method: &'static str,
    /// `true` for a watch (`watch=true` or `watch=1` in the query), otherwise `false`.
    pub watch: &'static str,
}

impl KubernetesRequestLabels {
    /// The labels of one request to the API server.
    pub fn of<B>(request: &http::Request<B>) -> Self {
        let method = match request.method().as_str() {
            "GET" => "GET",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            _ => "OTHER",
        };
        let watch = request.uri().query().is_some_and(|query| {
            query
                .split('&')
                .any(|pair| pair == "watch=true" || pair == "watch=1")
        });
        Self {
            method,
            watch: if watch { "true" } else { "false" },
        }
    }
}

/// Wraps a service in [`CountKubernetesRequests`] (for `kube::client::ClientBuilder::with_layer`).
#[derive(Clone, Debug)]
pub struct CountKubernetesRequestsLayer {
    pub(super) requests: Family<KubernetesRequestLabels, Counter>,
}

impl<S> tower::Layer<S> for CountKubernetesRequestsLayer {
    type Service = CountKubernetesRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountKubernetesRequests {
            inner,
            requests: self.requests.clone(),
        }
    }
}

/// Counts each request by [`KubernetesRequestLabels`] as it is sent, then passes it on
/// unchanged. Requests are counted whether or not they succeed.
#[derive(Clone, Debug)]
pub struct CountKubernetesRequests<S> {
    inner: S,
    requests: Family<KubernetesRequestLabels, Counter>,
}

impl<S, B> tower::Service<http::Request<B>> for CountKubernetesRequests<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.requests
            .get_or_create(&KubernetesRequestLabels::of(&request))
            .inc();
        self.inner.call(request)
    }
}
