//! The load model of the simulated fleet: how a service's requests spread over its Ready pods,
//! how latency grows with load (a queueing model), how the database pool fills, and which
//! share of requests fails under the injected faults. Pure functions, no IO.

use std::collections::BTreeMap;

use crate::faults::{Fault, FaultKind};

/// Upper bounds of the latency histogram buckets, in seconds (the usual HTTP buckets).
pub const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Utilisation at which the queue is treated as saturated: beyond it M/M/1 latency goes to
/// infinity, so it is capped here and the excess load is shed as 5xx instead.
pub const SATURATION: f64 = 0.98;

/// Share of requests that write (create an invoice); the rest read (get, list).
pub const WRITE_SHARE: f64 = 0.2;

/// 5xx ratio of a pod that leaks connections (`pod-errors` without a ratio).
pub const DEFAULT_POD_ERROR_RATIO: f64 = 0.6;

/// 5xx ratio of every pod after a bad config (`service-errors` without a ratio).
pub const DEFAULT_SERVICE_ERROR_RATIO: f64 = 0.5;

/// 4xx ratio of a firewall answering 403 (`client-errors` without a ratio).
pub const DEFAULT_CLIENT_ERROR_RATIO: f64 = 0.5;

/// 5xx ratio of pods in a zone that lost its network (`zone-down`).
pub const ZONE_DOWN_ERROR_RATIO: f64 = 0.9;

/// Share of the pool wanted by writers when the primary struggles (`db-pool` without a
/// factor): the incident from the field, 215 connections wanted, 200 available.
pub const DEFAULT_DB_POOL_FACTOR: f64 = 215.0 / 200.0;

/// How the simulated service behaves when nothing is wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    /// Requests per second the whole service receives.
    pub request_rate: f64,
    /// Requests per second one pod serves before its queue saturates.
    pub pod_capacity: f64,
    /// Mean service time of one request on an idle pod, seconds.
    pub base_latency: f64,
    /// Connections in each pod's database pool.
    pub pool_size: f64,
    /// Seconds a read holds a database connection.
    pub read_hold: f64,
    /// Seconds a write holds a database connection.
    pub write_hold: f64,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            request_rate: 12.0,
            pod_capacity: 10.0,
            base_latency: 0.02,
            pool_size: 200.0,
            read_hold: 0.5,
            write_hold: 5.0,
        }
    }
}

/// One Ready pod as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Availability zone.
    pub zone: String,
}

/// What one pod does in one second: requests by status code, their latency distribution and
/// its database pool.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSecond {
    /// Requests per status code (`"200"`, `"202"`, `"403"`, `"503"`).
    pub requests: BTreeMap<&'static str, f64>,
    /// Mean latency of a request, seconds.
    pub mean_latency: f64,
    /// Connections in use.
    pub pool_active: f64,
    /// Pool size.
    pub pool_max: f64,
}

impl PodSecond {
    /// All requests of the second.
    pub fn total(&self) -> f64 {
        self.requests.values().sum()
    }
}

/// Mean sojourn time of an M/M/1 queue: `base / (1 - utilisation)`, capped at saturation.
pub fn mean_latency(base_latency: f64, utilisation: f64) -> f64 {
    base_latency / (1.0 - utilisation.clamp(0.0, SATURATION))
}

/// Share of requests shed (answered 5xx) because the pod is past saturation.
pub fn shed_ratio(utilisation: f64) -> f64 {
    if utilisation <= SATURATION {
        0.0
    } else {
        1.0 - SATURATION / utilisation
    }
}

/// Share of requests at or below `upper` seconds when latency is exponential with `mean`
/// (the sojourn time of M/M/1 is), i.e. the cumulative histogram bucket fraction.
pub fn bucket_fraction(mean: f64, upper: f64) -> f64 {
    if mean <= 0.0 {
        return 1.0;
    }
    1.0 - (-upper / mean).exp()
}

/// The `quantile` of exponential latency with `mean` (what a histogram of it should show).
pub fn latency_quantile(mean: f64, quantile: f64) -> f64 {
    -mean * (1.0 - quantile).ln()
}

/// Database pool demand of one pod as a share of its pool: reads and writes times how long
/// each holds a connection; a struggling primary (`db_pool_factor`) makes writers alone want
/// that share; read-only mode queues writes, so they hold nothing.
pub fn pool_demand(
    profile: &Profile,
    pod_rate: f64,
    db_pool_factor: Option<f64>,
    read_only: bool,
) -> f64 {
    let reads = pod_rate * (1.0 - WRITE_SHARE) * profile.read_hold / profile.pool_size;
    let writes = if read_only {
        0.0
    } else {
        match db_pool_factor {
            Some(factor) => factor,
            None => pod_rate * WRITE_SHARE * profile.write_hold / profile.pool_size,
        }
    };
    reads + writes
}

/// True when `fault` applies to `pod` of service `service` in `namespace`.
fn applies(fault: &Fault, namespace: &str, service: &str, pod: &PodView) -> bool {
    fault.namespace == namespace
        && fault
            .service
            .as_deref()
            .is_none_or(|wanted| wanted == service)
        && fault.pod.as_deref().is_none_or(|wanted| wanted == pod.name)
        && fault
            .zone
            .as_deref()
            .is_none_or(|wanted| wanted == pod.zone)
}

/// What each Ready pod of one service does in one second under `faults`.
///
/// The service's request rate (times any surge) spreads evenly over `pods`; a pod's
/// utilisation is its rate over its capacity. Error shares add up (capped at all requests):
/// shed load, pod, service and zone faults give 503; pool overflow fails writes with 503;
/// client faults give 403. In read-only mode writes are queued and answered 202.
pub fn service_second(
    profile: &Profile,
    namespace: &str,
    service: &str,
    pods: &[PodView],
    faults: &[Fault],
    read_only: bool,
) -> Vec<(PodView, PodSecond)> {
    if pods.is_empty() {
        return Vec::new();
    }
    let service_faults: Vec<&Fault> = faults
        .iter()
        .filter(|fault| {
            fault.namespace == namespace
                && fault
                    .service
                    .as_deref()
                    .is_none_or(|wanted| wanted == service)
        })
        .collect();
    let surge: f64 = service_faults
        .iter()
        .filter_map(|fault| match fault.kind {
            FaultKind::Surge => Some(fault.factor.unwrap_or(2.0)),
            _ => None,
        })
        .product();
    let pod_rate = profile.request_rate * surge / pods.len() as f64;
    let utilisation = pod_rate / profile.pod_capacity;
    pods.iter()
        .map(|pod| {
            let mine: Vec<&Fault> = service_faults
                .iter()
                .copied()
                .filter(|fault| applies(fault, namespace, service, pod))
                .collect();
            let ratio_of = |kind: FaultKind, default: f64| {
                mine.iter()
                    .filter(|fault| fault.kind == kind)
                    .map(|fault| fault.ratio.unwrap_or(default))
                    .fold(0.0_f64, f64::max)
            };
            let db_pool_factor = mine
                .iter()
                .filter(|fault| fault.kind == FaultKind::DbPool)
                .map(|fault| fault.factor.unwrap_or(DEFAULT_DB_POOL_FACTOR))
                .reduce(f64::max);
            let demand = pool_demand(profile, pod_rate, db_pool_factor, read_only);
            let pool_overflow = if demand > 1.0 {
                1.0 - 1.0 / demand
            } else {
                0.0
            };
            let write_failures = if read_only {
                0.0
            } else {
                WRITE_SHARE * pool_overflow
            };
            let server_errors = (shed_ratio(utilisation)
                + ratio_of(FaultKind::PodErrors, DEFAULT_POD_ERROR_RATIO)
                + ratio_of(FaultKind::ServiceErrors, DEFAULT_SERVICE_ERROR_RATIO)
                + ratio_of(FaultKind::ZoneDown, ZONE_DOWN_ERROR_RATIO)
                + write_failures)
                .min(1.0);
            let client_errors = ratio_of(FaultKind::ClientErrors, DEFAULT_CLIENT_ERROR_RATIO)
                .min(1.0 - server_errors);
            let ok = 1.0 - server_errors - client_errors;
            let (reads, writes) = (ok * (1.0 - WRITE_SHARE), ok * WRITE_SHARE);
            let mut requests = BTreeMap::new();
            if read_only {
                requests.insert("200", pod_rate * reads);
                requests.insert("202", pod_rate * writes);
            } else {
                requests.insert("200", pod_rate * ok);
            }
            requests.insert("403", pod_rate * client_errors);
            requests.insert("503", pod_rate * server_errors);
            // A saturated pool makes requests wait for a connection too.
            let pool_wait = if demand > 1.0 {
                profile.base_latency * 5.0
            } else {
                0.0
            };
            let second = PodSecond {
                requests,
                mean_latency: mean_latency(profile.base_latency, utilisation) + pool_wait,
                pool_active: demand.min(1.0) * profile.pool_size,
                pool_max: profile.pool_size,
            };
            (pod.clone(), second)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(count: usize) -> Vec<PodView> {
        (0..count)
            .map(|index| PodView {
                name: format!("api-{index}"),
                zone: format!("az{}", index % 3 + 1),
            })
            .collect()
    }

    fn fault(json: serde_json::Value) -> Fault {
        serde_json::from_value(json).expect("valid fault")
    }

    fn ratio(second: &PodSecond, code: &str) -> f64 {
        second.requests.get(code).copied().unwrap_or(0.0) / second.total()
    }

    #[test]
    fn latency_grows_as_utilisation_nears_capacity_and_is_capped() {
        let cases = [
            (0.0, 0.02),
            (0.5, 0.04),
            (0.8, 0.1),
            (0.98, 1.0),
            (3.0, 1.0),
        ];
        for (utilisation, expected) in cases {
            let latency = mean_latency(0.02, utilisation);
            assert!(
                (latency - expected).abs() < 1e-9,
                "{utilisation}: {latency}"
            );
        }
    }

    #[test]
    fn bucket_fractions_match_the_exponential_quantiles() {
        for mean in [0.01, 0.05, 0.3] {
            let p99 = latency_quantile(mean, 0.99);
            assert!((bucket_fraction(mean, p99) - 0.99).abs() < 1e-9);
        }
        assert_eq!(bucket_fraction(0.0, 0.1), 1.0);
    }

    #[test]
    fn shed_ratio_is_zero_until_saturation() {
        let cases = [(0.5, 0.0), (0.98, 0.0), (1.96, 0.5)];
        for (utilisation, expected) in cases {
            assert!(
                (shed_ratio(utilisation) - expected).abs() < 1e-9,
                "{utilisation}"
            );
        }
    }

    #[test]
    fn scaling_out_lowers_p99_under_a_surge() {
        let profile = Profile::default();
        let surge = [fault(
            serde_json::json!({"namespace": "ns", "kind": "surge", "factor": 2.0}),
        )];
        let p99 = |count: usize| {
            let seconds = service_second(&profile, "ns", "api", &pods(count), &surge, false);
            latency_quantile(seconds[0].1.mean_latency, 0.99)
        };
        assert!(p99(3) > 0.2, "{}", p99(3));
        assert!(p99(5) < 0.2, "{}", p99(5));
        let calm = service_second(&profile, "ns", "api", &pods(3), &[], false);
        assert!(latency_quantile(calm[0].1.mean_latency, 0.99) < 0.2);
    }

    #[test]
    fn faults_hit_what_they_name() {
        let profile = Profile::default();
        // (fault, pod index, expected 5xx ratio, expected 4xx ratio)
        let cases = [
            (
                serde_json::json!({"namespace": "ns", "kind": "pod-errors", "pod": "api-1"}),
                1,
                0.6,
                0.0,
            ),
            (
                serde_json::json!({"namespace": "ns", "kind": "pod-errors", "pod": "api-1"}),
                0,
                0.0,
                0.0,
            ),
            (
                serde_json::json!({"namespace": "ns", "kind": "service-errors", "service": "api"}),
                2,
                0.5,
                0.0,
            ),
            (
                serde_json::json!({"namespace": "ns", "kind": "service-errors", "service": "other"}),
                2,
                0.0,
                0.0,
            ),
            (
                serde_json::json!({"namespace": "other", "kind": "service-errors"}),
                0,
                0.0,
                0.0,
            ),
            (
                serde_json::json!({"namespace": "ns", "kind": "zone-down", "zone": "az2"}),
                1,
                0.9,
                0.0,
            ),
            (
                serde_json::json!({"namespace": "ns", "kind": "zone-down", "zone": "az2"}),
                0,
                0.0,
                0.0,
            ),
            (
                serde_json::json!({"namespace": "ns", "kind": "client-errors", "ratio": 0.4}),
                0,
                0.0,
                0.4,
            ),
        ];
        for (json, index, server, client) in cases {
            let faults = [fault(json.clone())];
            let seconds = service_second(&profile, "ns", "api", &pods(3), &faults, false);
            let second = &seconds[index].1;
            assert!(
                (ratio(second, "503") - server).abs() < 1e-9,
                "{json}: {second:?}"
            );
            assert!(
                (ratio(second, "403") - client).abs() < 1e-9,
                "{json}: {second:?}"
            );
        }
    }

    #[test]
    fn requests_spread_over_ready_pods() {
        let profile = Profile::default();
        for count in [1, 3, 6] {
            let seconds = service_second(&profile, "ns", "api", &pods(count), &[], false);
            let total: f64 = seconds.iter().map(|(_, second)| second.total()).sum();
            assert!((total - profile.request_rate).abs() < 1e-9);
            assert_eq!(seconds.len(), count);
        }
        assert!(service_second(&profile, "ns", "api", &[], &[], false).is_empty());
    }

    #[test]
    fn read_only_relieves_an_exhausted_pool_and_reads_continue() {
        let profile = Profile::default();
        let exhausted = [fault(
            serde_json::json!({"namespace": "ns", "kind": "db-pool"}),
        )];
        // (faults, read only, expected utilisation above, below)
        let cases: [(&[Fault], bool, f64, f64); 3] = [
            (&[], false, 0.0, 0.5),
            (&exhausted, false, 0.99, 1.01),
            (&exhausted, true, 0.0, 0.5),
        ];
        for (faults, read_only, above, below) in cases {
            let seconds = service_second(&profile, "ns", "api", &pods(3), faults, read_only);
            let second = &seconds[0].1;
            let utilisation = second.pool_active / second.pool_max;
            assert!(
                utilisation > above && utilisation < below,
                "{faults:?} {read_only}: {utilisation}"
            );
            if read_only {
                assert!(
                    ratio(second, "200") > 0.79 && ratio(second, "202") > 0.19,
                    "{second:?}"
                );
            }
        }
    }
}
