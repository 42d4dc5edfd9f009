//! Reading one service out of the fleet's split answers.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use super::{ByPod, ByService, ClassRates, FleetMetrics, PodRow, PoolGauges};
use crate::{
    prometheus::query::ServiceSelector,
    signals::{
        Measured, PodMetrics, RequestRates, ServiceKey, ServiceMetrics, UnknownReason, measured,
    },
};

/// The per-pod answers of one service, each with its own failure reason.
struct PodAnswers<'a> {
    rates: Measured<&'a ByPod<ClassRates>>,
    latency: Measured<&'a ByPod<f64>>,
    pools: Measured<&'a ByPod<PoolGauges>>,
}

impl FleetMetrics {
    /// What was measured for one service. Fields the service has no series for are `NoData`;
    /// fields whose query failed carry that query's reason; NaN and infinities are
    /// `NotANumber`; pods with old samples are `Stale`. The detection-window rates are the sum
    /// of the fresh pods' rates, the pool utilisation is the fresh pods' sum of active over
    /// sum of max.
    pub fn service(&self, selector: &ServiceSelector) -> ServiceMetrics {
        let key = &selector.key;
        let answers = PodAnswers {
            rates: lookup(&self.pod_rates, key),
            latency: match &selector.quantile {
                Some(quantile) => self
                    .pod_latency
                    .get(quantile)
                    .map_or(Err(UnknownReason::NoData), |answer| lookup(answer, key)),
                None => Err(UnknownReason::NoData),
            },
            pools: lookup(&self.db_pool, key),
        };
        ServiceMetrics {
            windows: self.windows(key, &answers.rates),
            latency_seconds: self.latency_seconds(selector),
            db_pool_utilization: self.db_pool_utilization(key, &answers.pools),
            certificate_expires_at: self.certificate_expires_at(selector),
            pods: self.pods(key, &answers),
        }
    }

    /// The rates over every window: the detection window's summed over the fresh pods, the
    /// service-level windows' as Prometheus summed them.
    fn windows(
        &self,
        key: &ServiceKey,
        pod_rates: &Measured<&ByPod<ClassRates>>,
    ) -> BTreeMap<Duration, Measured<RequestRates>> {
        let mut windows = BTreeMap::new();
        let detection_rates = self.sum_fresh(
            key,
            pod_rates,
            |rates| rates.measured(),
            |sum, rates| sum.add(&rates),
        );
        windows.insert(self.detection_window, detection_rates);
        for window in &self.service_windows {
            let rates = match self.service_rates.get(window) {
                Some(answer) => answer.of(key),
                None => Err(UnknownReason::NoData),
            };
            windows.insert(*window, rates);
        }
        windows
    }

    fn latency_seconds(&self, selector: &ServiceSelector) -> Measured<f64> {
        match &selector.quantile {
            Some(quantile) => match self.service_latency.get(quantile) {
                Some(answer) => {
                    lookup(answer, &selector.key).and_then(|latency| measured(*latency))
                }
                None => Err(UnknownReason::NoData),
            },
            None => Err(UnknownReason::NoData),
        }
    }

    /// The fresh pods' active connections over their pools' maximum.
    fn db_pool_utilization(
        &self,
        key: &ServiceKey,
        pools: &Measured<&ByPod<PoolGauges>>,
    ) -> Measured<f64> {
        self.sum_fresh(
            key,
            pools,
            |pool| match (pool.active, pool.max) {
                (Some(active), Some(max)) => Ok((measured(active)?, measured(max)?)),
                _ => Err(UnknownReason::NoData),
            },
            |sum, (active, max)| {
                sum.0 += active;
                sum.1 += max;
            },
        )
        .and_then(|(active, max)| measured(active / max))
    }

    fn certificate_expires_at(&self, selector: &ServiceSelector) -> Measured<f64> {
        match &selector.certificate {
            Some(name) => match &self.certificates {
                Ok(certificates) => certificates
                    .get(&(selector.key.namespace.clone(), name.clone()))
                    .map_or(Err(UnknownReason::NoData), |expiry| measured(*expiry)),
                Err(reason) => Err(*reason),
            },
            None => Err(UnknownReason::NoData),
        }
    }

    /// Every pod in any per-pod answer, its values unknown (`Stale`) unless fresh.
    fn pods(&self, key: &ServiceKey, answers: &PodAnswers<'_>) -> BTreeMap<String, PodMetrics> {
        let mut pod_names = BTreeSet::new();
        pod_names.extend(names(&answers.rates));
        pod_names.extend(names(&answers.latency));
        pod_names.extend(names(&answers.pools));
        // The empty name gathers series without a pod label: part of sums, not a pod.
        pod_names.remove(&String::new());
        pod_names
            .into_iter()
            .map(|name| (name.clone(), self.pod(key, name, answers)))
            .collect()
    }

    fn pod(&self, key: &ServiceKey, name: &str, answers: &PodAnswers<'_>) -> PodMetrics {
        let row_rates = pod_row(&answers.rates, name);
        let row_latency = pod_row(&answers.latency, name);
        let row_pool = pod_row(&answers.pools, name);
        let zone = row_rates
            .ok()
            .and_then(|row| row.zone.clone())
            .or_else(|| row_latency.ok().and_then(|row| row.zone.clone()));
        let freshness = self.pod_freshness(key, name);
        let fresh = |value: Measured<f64>| value.and_then(|v| freshness.map(|()| v));
        let rates = row_rates
            .and_then(|row| row.value.measured())
            .and_then(|rates| freshness.map(|()| rates));
        PodMetrics {
            zone,
            rates,
            latency_seconds: fresh(row_latency.and_then(|row| measured(row.value))),
            db_pool_utilization: fresh(row_pool.and_then(|row| pool_utilization(&row.value))),
        }
    }

    /// Whether a pod's values can be trusted now: its newest sample is recent enough.
    /// A pod missing from a successful freshness answer has no current sample at all (its
    /// series ended), so it is stale too; a failed freshness answer leaves every pod unknown.
    fn pod_freshness(&self, key: &ServiceKey, pod: &str) -> Measured<()> {
        let ages = self.freshness.as_ref().map_err(|reason| *reason)?;
        match ages.get(key).and_then(|pods| pods.get(pod)) {
            Some(age) if *age <= self.stale_after.as_secs_f64() => Ok(()),
            _ => Err(UnknownReason::Stale),
        }
    }

    /// Sums a per-pod value over the service's fresh pods. With no pod contributing, the
    /// reason of the first pod (or `NoData` without pods) explains why.
    fn sum_fresh<T, S: Default>(
        &self,
        key: &ServiceKey,
        rows: &Measured<&ByPod<T>>,
        value: impl Fn(&T) -> Measured<S>,
        add: impl Fn(&mut S, S),
    ) -> Measured<S> {
        let rows = rows.as_ref().map_err(|reason| *reason)?;
        let mut sum = None;
        let mut first_reason = None;
        for (name, row) in *rows {
            match self
                .pod_freshness(key, name)
                .and_then(|()| value(&row.value))
            {
                Ok(value) => add(sum.get_or_insert_with(S::default), value),
                Err(reason) => {
                    first_reason.get_or_insert(reason);
                }
            }
        }
        sum.ok_or(first_reason.unwrap_or(UnknownReason::NoData))
    }
}

/// The per-pod rows of `key` in a split answer; `NoData` when the service has none.
fn lookup<'a, T>(answer: &'a Measured<ByService<T>>, key: &ServiceKey) -> Measured<&'a T> {
    match answer {
        Ok(by_service) => by_service.get(key).ok_or(UnknownReason::NoData),
        Err(reason) => Err(*reason),
    }
}

fn names<'a, T>(rows: &Measured<&'a ByPod<T>>) -> impl Iterator<Item = &'a String> {
    rows.iter().flat_map(|rows| rows.keys())
}

fn pod_row<'a, T>(rows: &Measured<&'a ByPod<T>>, name: &str) -> Measured<&'a PodRow<T>> {
    match rows {
        Ok(rows) => rows.get(name).ok_or(UnknownReason::NoData),
        Err(reason) => Err(*reason),
    }
}

fn pool_utilization(pool: &PoolGauges) -> Measured<f64> {
    match (pool.active, pool.max) {
        (Some(active), Some(max)) => measured(measured(active)? / measured(max)?),
        _ => Err(UnknownReason::NoData),
    }
}
