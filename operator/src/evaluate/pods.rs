//! Pod health: each pod judged against `restartPod`, and the few pods a fast burn's 5xx
//! concentrate on.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{PodHealth, PodProblem};
use crate::{
    api::InvoiceServiceSpec,
    signals::{Measured, Observation, UnknownReason},
};

/// The health of every observed pod, each judged on its own.
pub(super) fn evaluate_pods(
    spec: &InvoiceServiceSpec,
    observation: &Observation,
    min_rate: f64,
) -> Vec<PodHealth> {
    let policy = &spec.remediation.restart_pod;
    let error_threshold = policy.error_ratio_above.get();
    observation
        .pods
        .iter()
        .map(|pod| {
            let unready_for = pod.unready_since.filter(|_| !pod.ready).map(|since| {
                let seconds = (observation.at - since)
                    .total(jiff::Unit::Second)
                    .unwrap_or(0.0);
                Duration::from_secs_f64(seconds.max(0.0))
            });
            let pod_error_ratio = observation
                .metrics
                .pods
                .get(&pod.name)
                .ok_or(UnknownReason::NoData)
                .and_then(|metrics| metrics.rates)
                .and_then(|rates| rates.error_ratio(min_rate));
            let problem = if policy.crash_loop && pod.crash_loop {
                Some(PodProblem::CrashLoop {
                    restarts: pod.restart_count,
                })
            } else if let Some(for_) = unready_for.filter(|for_| *for_ >= policy.unready_for.get())
            {
                Some(PodProblem::Unready { for_ })
            } else {
                match pod_error_ratio {
                    Ok(ratio) if ratio > error_threshold => Some(PodProblem::Errors { ratio }),
                    _ => None,
                }
            };
            PodHealth {
                name: pod.name.clone(),
                deployment: pod.deployment.clone(),
                zone: pod.zone.clone(),
                problem,
                terminating: pod.terminating,
            }
        })
        .collect()
}

/// The share of a burning service's 5xx that a few pods must account for to be blamed: a
/// fast burn that one leaking pod causes is that pod's problem, to be restarted alone, not a
/// reason to roll the whole service. Four in five is well above what chance gives one pod of
/// a healthy fleet, and still catches a pod whose own ratio is only ramping up.
pub const CONCENTRATED_ERROR_SHARE: f64 = 0.8;

/// Marks the pods that cause most of a fast burn's 5xx as having errors, when they are few
/// (at most `max_unhealthy_pods`, and never half the pods or more).
pub(super) fn blame_concentrated_errors(
    pods: &mut [PodHealth],
    observation: &Observation,
    max_unhealthy_pods: usize,
    min_rate: f64,
) {
    let mut by_errors: Vec<(&str, f64, Measured<f64>)> = observation
        .metrics
        .pods
        .iter()
        .filter_map(|(name, metrics)| {
            let rates = metrics.rates.ok()?;
            Some((
                name.as_str(),
                rates.server_errors,
                rates.error_ratio(min_rate),
            ))
        })
        .collect();
    let total: f64 = by_errors.iter().map(|(_, errors, _)| errors).sum();
    if total <= 0.0 || by_errors.len() < 2 {
        return;
    }
    by_errors.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut blamed = Vec::new();
    let mut covered = 0.0;
    for (name, errors, ratio) in &by_errors {
        if covered >= CONCENTRATED_ERROR_SHARE * total {
            break;
        }
        covered += errors;
        blamed.push((*name, *ratio));
    }
    if blamed.len() > max_unhealthy_pods || blamed.len() * 2 >= by_errors.len() {
        return;
    }
    for (name, ratio) in blamed {
        if let Some(pod) = pods.iter_mut().find(|pod| pod.name == name)
            && pod.problem.is_none()
            && let Ok(ratio) = ratio
        {
            pod.problem = Some(PodProblem::Errors { ratio });
        }
    }
}

/// How many unhealthy pods are still "a few bad pods": a count, or a percentage of all pods
/// rounded down, but at least one so a single bad pod can always be restarted.
pub fn unhealthy_pod_limit(limit: &IntOrString, pods: usize) -> usize {
    let limit = match limit {
        IntOrString::Int(count) => usize::try_from(*count).unwrap_or(0),
        IntOrString::String(text) => {
            let percent: usize = text.trim_end_matches('%').parse().unwrap_or(0);
            pods * percent / 100
        }
    };
    limit.max(1)
}
