//! Test fixtures shared by the controller, act, kube_client and prometheus tests:
//! - [`ApiServer`]: one mocked Kubernetes API server (tower-test), strict (a list of expected
//!   exchanges, in order, and nothing else) or recording (answers from a closure), recording
//!   every request either way;
//! - [`PrometheusStub`]: one loopback Prometheus serving canned answers per query and
//!   recording each query;
//! - [`Context::test`]: the controller's context over a mocked client and a stub Prometheus.
//!
//! Nothing here sleeps: a test that must know nothing more will be sent drops its clients and
//! awaits [`ApiServer::finish`], which returns once the mocked server saw its last client go.

mod api_server;
mod prometheus_stub;
mod tests;

use std::{sync::Arc, time::Duration};

use kube::{
    Client,
    runtime::{events::Reporter, reflector, watcher},
};
use tokio::sync::watch;

pub(crate) use self::{
    api_server::{ApiServer, Exchange, Reply, Sent},
    prometheus_stub::{PromAnswer, PromRequest, PrometheusStub},
};
use crate::{
    controller::{CachedPod, Caches, Context, QueryMode, Settings},
    metrics::Metrics,
    prometheus::{Limits, MetricProfile, MetricsSource, Prometheus},
    storm::StormSettings,
};

/// A Prometheus address nothing listens on: every query fails as unreachable.
pub(crate) const NO_PROMETHEUS: &str = "http://127.0.0.1:1";

impl Caches {
    /// Caches holding `pods` and nothing else.
    pub(crate) fn with_pods(pods: impl IntoIterator<Item = CachedPod>) -> Self {
        let (pod_store, mut pod_writer) = reflector::store();
        for pod in pods {
            pod_writer.apply_watcher_event(&watcher::Event::Apply(pod));
        }
        Self {
            pods: pod_store,
            deployments: reflector::store().0,
            rollouts: reflector::store().0,
            rollouts_not_served: Arc::default(),
            autoscalers: reflector::store().0,
            nodes: reflector::store().0,
            config_maps: reflector::store().0,
        }
    }
}

impl Context {
    /// The context of the leader replica `test` over `client` (a mocked API server), the
    /// operator-wide Prometheus at `prometheus` (a [`PrometheusStub`]'s URL or
    /// [`NO_PROMETHEUS`]) and `caches`: 15 s evaluations, a 60 s detection window, samples
    /// stale after 120 s, a storm gate at half of at least 5 services held 60 s, batched
    /// queries. No fleet evaluation has run yet.
    pub(crate) fn test(client: Client, prometheus: &str, caches: Caches) -> Self {
        let prometheus =
            Prometheus::new(prometheus, MetricProfile::default(), Limits::default()).unwrap();
        Self::test_measured_by(client, Arc::new(prometheus), caches)
    }

    /// [`Context::test`] with measurements from `source` (e.g. a
    /// [`Recorded`](crate::prometheus::Recorded) answer set) instead of a Prometheus.
    pub(crate) fn test_measured_by(
        client: Client,
        source: Arc<dyn MetricsSource>,
        caches: Caches,
    ) -> Self {
        Self::new(
            client,
            Reporter {
                controller: "invoice-operator".into(),
                instance: Some("test".into()),
            },
            Arc::new(Metrics::default()),
            source,
            Settings {
                evaluation_interval: Duration::from_secs(15),
                detection_window: Duration::from_secs(60),
                stale_after: Duration::from_secs(120),
                storm: StormSettings {
                    share: 0.5,
                    min_services: 5,
                    hold: Duration::from_secs(60),
                },
                force_dry_run: false,
                namespace: None,
                query_mode: QueryMode::Batched,
                sli_source: crate::prometheus::SliSource::Raw,
            },
            watch::channel(true).1,
            caches,
        )
    }
}
