//! Zone health: a zone's 5xx ratio and replicas, and which zones error as a whole, so their
//! pods' errors are left to zone failover rather than to pod restarts.

use super::{PodHealth, PodProblem, ZoneHealth, pods};
use crate::{
    api::InvoiceServiceSpec,
    signals::{Measured, Observation, RequestRates, UnknownReason},
};

/// The health of the service's pods and zones.
pub(super) struct Workload {
    pub(super) pods: Vec<PodHealth>,
    pub(super) max_unhealthy_pods: usize,
    pub(super) zones: Vec<ZoneHealth>,
}

/// Judges the pods and zones; under a fast burn, the few pods its errors concentrate on are
/// blamed, and pods erroring in a zone that errors as a whole are not.
pub(super) fn evaluate_workload(
    spec: &InvoiceServiceSpec,
    observation: &Observation,
    fast_burn: bool,
    min_rate: f64,
) -> Workload {
    let mut pods = pods::evaluate_pods(spec, observation, min_rate);
    let max_unhealthy_pods =
        pods::unhealthy_pod_limit(&spec.remediation.max_unhealthy_pods, pods.len());
    let mut zones = evaluate_zones(spec, observation, min_rate);
    if fast_burn {
        pods::blame_concentrated_errors(&mut pods, observation, max_unhealthy_pods, min_rate);
    }
    leave_zone_wide_errors_to_failover(&mut pods, &mut zones);
    Workload {
        pods,
        max_unhealthy_pods,
        zones,
    }
}

/// A pod's errors are its own only while its zone is fine: when the zone errors as a whole
/// (over its threshold, or most of its pods erroring while the ratio climbs), restarting
/// its pods one by one is not the answer — zone failover is, once `for` has passed.
fn leave_zone_wide_errors_to_failover(pods: &mut [PodHealth], zones: &mut [ZoneHealth]) {
    let zone_wide: Vec<String> = zones
        .iter()
        .filter(|zone| {
            let in_zone = pods
                .iter()
                .filter(|pod| pod.zone.as_deref() == Some(&zone.name));
            let (total, erroring) = in_zone.fold((0, 0), |(total, erroring), pod| {
                let errors = matches!(pod.problem, Some(PodProblem::Errors { .. }));
                (total + 1, erroring + usize::from(errors))
            });
            zone.unhealthy == Some(true) || (total >= 2 && erroring * 2 > total)
        })
        .map(|zone| zone.name.clone())
        .collect();
    for zone in zones {
        zone.errors_zone_wide = zone_wide.contains(&zone.name);
    }
    for pod in pods {
        let zone_wide = pod
            .zone
            .as_ref()
            .is_some_and(|zone| zone_wide.contains(zone));
        if zone_wide && matches!(pod.problem, Some(PodProblem::Errors { .. })) {
            pod.problem = None;
        }
    }
}

fn evaluate_zones(
    spec: &InvoiceServiceSpec,
    observation: &Observation,
    min_rate: f64,
) -> Vec<ZoneHealth> {
    let threshold = spec
        .remediation
        .zone_failover
        .unhealthy_when
        .zone_error_ratio_above
        .get();
    spec.workload
        .zone_names()
        .into_iter()
        .map(|zone| {
            let error_ratio = zone_error_ratio(observation, zone, min_rate);
            let (replicas, ready_replicas) = zone_replicas(observation, zone);
            let not_ready_nodes = observation.not_ready_nodes.get(zone).copied().unwrap_or(0);
            let unhealthy = match error_ratio {
                Ok(ratio) => Some(ratio > threshold),
                Err(_) => None,
            };
            ZoneHealth {
                name: zone.to_owned(),
                error_ratio,
                unhealthy,
                errors_zone_wide: false,
                not_ready_nodes,
                replicas,
                ready_replicas,
            }
        })
        .collect()
}

/// The zone's 5xx ratio from its measured pods. Rates over one window are additive: the
/// zone's rate is the sum of its pods'.
fn zone_error_ratio(observation: &Observation, zone: &str, min_rate: f64) -> Measured<f64> {
    let mut rates = RequestRates::default();
    let mut measured_pods = 0;
    for (pod_name, pod) in &observation.metrics.pods {
        let pod_zone = pod.zone.clone().or_else(|| {
            observation
                .pods
                .iter()
                .find(|state| &state.name == pod_name)
                .and_then(|state| state.zone.clone())
        });
        if pod_zone.as_deref() == Some(zone)
            && let Ok(pod_rates) = pod.rates
        {
            rates.add(&pod_rates);
            measured_pods += 1;
        }
    }
    if measured_pods == 0 {
        Err(UnknownReason::NoData)
    } else {
        rates.error_ratio(min_rate)
    }
}

/// Desired and ready replicas in the zone: of its Deployments when they are per zone,
/// otherwise of its pods.
fn zone_replicas(observation: &Observation, zone: &str) -> (i32, i32) {
    let in_zone = |name: &str| {
        observation
            .deployments
            .iter()
            .filter(|deployment| deployment.zone.as_deref() == Some(zone))
            .any(|deployment| deployment.name == name)
    };
    let zonal = observation.deployments.iter().any(|d| d.zone.is_some());
    if zonal {
        observation
            .deployments
            .iter()
            .filter(|deployment| in_zone(&deployment.name))
            .fold((0, 0), |(replicas, ready), deployment| {
                (
                    replicas + deployment.replicas,
                    ready + deployment.ready_replicas,
                )
            })
    } else {
        let pods = observation
            .pods
            .iter()
            .filter(|pod| pod.zone.as_deref() == Some(zone));
        pods.fold((0, 0), |(replicas, ready), pod| {
            (replicas + 1, ready + i32::from(pod.ready))
        })
    }
}
