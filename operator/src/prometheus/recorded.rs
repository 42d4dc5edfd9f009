//! A [`MetricsSource`] answering from recorded query results, so the engine and its tests can be
//! fed known signals without a Prometheus. No IO.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

use futures::future::BoxFuture;

use super::{
    MetricsSource,
    fleet::{FleetMetrics, QueryOutcome, merge_custom},
    profile::MetricProfile,
    query::{FleetQuery, PlannedQuery, ServiceQuery},
};
use crate::signals::ServiceMetrics;

/// Answers queries by their exact PromQL text; a query nobody recorded gets an empty answer
/// (so its signals are `NoData`). The per-service Prometheus URL is ignored: every answer
/// comes from the same recording.
#[derive(Debug, Default)]
pub struct Recorded {
    profile: MetricProfile,
    answers: HashMap<String, QueryOutcome>,
    asked: AtomicU64,
}

impl Recorded {
    /// An empty recording for queries written with `profile`.
    pub fn new(profile: MetricProfile) -> Self {
        Self {
            profile,
            answers: HashMap::new(),
            asked: AtomicU64::new(0),
        }
    }

    /// Records the answer to `promql` (see [`FleetQuery::plan`] and
    /// [`ServiceQuery::plan_custom`] for the texts).
    pub fn answer(&mut self, promql: impl Into<String>, outcome: QueryOutcome) -> &mut Self {
        self.answers.insert(promql.into(), outcome);
        self
    }

    /// Queries answered so far, as [`Prometheus::queries_issued`](super::Prometheus::queries_issued) counts them.
    pub fn queries_issued(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }

    fn outcomes<Kind>(&self, plan: Vec<PlannedQuery<Kind>>) -> Vec<(Kind, QueryOutcome)> {
        self.asked.fetch_add(plan.len() as u64, Ordering::Relaxed);
        plan.into_iter()
            .map(|planned| {
                let outcome = self
                    .answers
                    .get(&planned.promql)
                    .cloned()
                    .unwrap_or(Ok(Vec::new()));
                (planned.kind, outcome)
            })
            .collect()
    }
}

impl Recorded {
    fn measure_fleet(&self, query: &FleetQuery) -> FleetMetrics {
        let outcomes = self.outcomes(query.plan(&self.profile));
        FleetMetrics::from_outcomes(query, &self.profile, outcomes)
    }
}

impl MetricsSource for Recorded {
    fn fleet<'a>(&'a self, query: &'a FleetQuery) -> BoxFuture<'a, FleetMetrics> {
        Box::pin(std::future::ready(self.measure_fleet(query)))
    }

    fn service<'a>(&'a self, query: &'a ServiceQuery) -> BoxFuture<'a, ServiceMetrics> {
        let profile = self.measure_fleet(&query.profile);
        let custom = self.outcomes(query.plan_custom());
        Box::pin(std::future::ready(merge_custom(
            profile.service(&query.selector),
            query,
            custom,
        )))
    }
}
