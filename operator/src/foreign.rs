//! Foreign changes: someone other than the operator — a person's `kubectl scale`, another
//! controller — changed what the operator manages, in the middle of an incident. The operator
//! never reverts them: it adopts the change (a new baseline, a state it no longer holds),
//! keeps its hands off that lever until the service is healthy again, and says so in a
//! Warning Event naming who made the change. Pure: compares what the status says the operator
//! set with what the caches show now.
//!
//! What is compared:
//!
//! - **Replicas after a ScaleOut**: `status.scaledOut.written` against the Deployment's
//!   `spec.replicas`, when `spec.replicas` was last set by another field manager than the
//!   operator's or an autoscaler's (with a HorizontalPodAutoscaler the operator raises its
//!   floor, and the autoscaler moving the count above it is expected). The Deployment leaves the
//!   scale-out's baseline: it is never scaled back in.
//! - **The mode key** while the operator holds read-only mode: a value other than the
//!   spec's read-only value means someone switched the app back. The operator no longer holds
//!   read-only mode and does not enter it again until the service is healthy.
//! - **A drained zone**: the failed-over zone's Deployment scaled up again by someone else.
//!   The operator no longer holds the failover (no fail-back, which would overwrite the other
//!   zones) and does not fail that zone over again until the service is healthy.
//!
//! A change is only believed once the operator's own write is at least one evaluation
//! interval old: right after it, the caches may still show the value from before it.
//! (The single Deployment's zone exclusion needs no such check: the operator removes only its
//! own requirement, and its patches are guarded by a `test` of the value they were computed
//! from, so a concurrent edit fails them instead of being overwritten.)

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    FIELD_MANAGER,
    api::{InvoiceServiceSpec, InvoiceServiceStatus},
    signals::DeploymentState,
};

/// The field manager of the Kubernetes controllers, the HorizontalPodAutoscaler's included.
pub const AUTOSCALER_MANAGER: &str = "kube-controller-manager";

/// Keys of `status.heldSince` for levers the operator keeps its hands off until the service
/// is healthy again.
pub mod hands_off {
    /// Prefix of every such key.
    pub const PREFIX: &str = "HandsOff/";
    /// Read-only mode was switched off by someone else.
    pub const READ_ONLY: &str = "HandsOff/ReadOnly";

    /// The zone was brought back by someone else.
    pub fn zone(zone: &str) -> String {
        format!("HandsOff/Zone/{zone}")
    }
}

/// A change someone else made to what the operator manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForeignChange {
    /// A scaled-out Deployment is at another count than the operator set.
    Replicas {
        /// The Deployment.
        deployment: String,
        /// What the operator set.
        ours: i32,
        /// What it is now.
        now: i32,
        /// Who set it, if known.
        manager: Option<String>,
    },
    /// The mode key no longer says read-only.
    ModeSwitched {
        /// The value now.
        value: String,
    },
    /// The drained zone's Deployment runs replicas again.
    ZoneRestored {
        /// The zone.
        zone: String,
        /// Its Deployment.
        deployment: String,
        /// Its replicas now.
        now: i32,
        /// Who set them, if known.
        manager: Option<String>,
    },
}

fn older_than(then: &Time, now: Timestamp, age: Duration) -> bool {
    (now - then.0)
        .total(jiff::Unit::Second)
        .is_ok_and(|seconds| seconds >= age.as_secs_f64())
}

/// The manager is someone other than the operator and the autoscaler.
fn foreign_manager(manager: Option<&str>) -> bool {
    manager.is_none_or(|manager| manager != FIELD_MANAGER && manager != AUTOSCALER_MANAGER)
}

/// The foreign changes visible now.
pub fn detect(
    spec: &InvoiceServiceSpec,
    status: &InvoiceServiceStatus,
    deployments: &[DeploymentState],
    mode_value: Option<&str>,
    now: Timestamp,
) -> Vec<ForeignChange> {
    let settled = |written: &Time| older_than(written, now, spec.signals.interval.get());
    let mut changes = Vec::new();
    if let Some(scaled) = &status.scaled_out
        && scaled.written_at.as_ref().is_some_and(settled)
    {
        for (name, ours) in &scaled.written {
            let Some(deployment) = deployments
                .iter()
                .find(|deployment| deployment.exists && &deployment.name == name)
            else {
                continue;
            };
            if deployment.replicas != *ours
                && foreign_manager(deployment.replicas_manager.as_deref())
            {
                changes.push(ForeignChange::Replicas {
                    deployment: name.clone(),
                    ours: *ours,
                    now: deployment.replicas,
                    manager: deployment.replicas_manager.clone(),
                });
            }
        }
    }
    if let (Some(read_only), Some(policy), Some(value)) =
        (&status.read_only, &spec.remediation.read_only, mode_value)
        && settled(&read_only.since)
        && value != policy.switch.config_map.read_only
    {
        changes.push(ForeignChange::ModeSwitched {
            value: value.to_owned(),
        });
    }
    if let Some(failover) = &status.failover
        && settled(&failover.since)
    {
        let drained = spec
            .workload
            .deployments
            .iter()
            .flatten()
            .filter(|deployment| deployment.zone == failover.zone);
        for zonal in drained {
            let Some(deployment) = deployments
                .iter()
                .find(|deployment| deployment.exists && deployment.name == zonal.name)
            else {
                continue;
            };
            // The operator's own fail-back canary runs in the zone (see `engine::canary`).
            let canary = failover
                .canary
                .as_ref()
                .and_then(|canary| canary.replicas.get(&deployment.name))
                .copied()
                .unwrap_or(0);
            if deployment.replicas > canary
                && foreign_manager(deployment.replicas_manager.as_deref())
            {
                changes.push(ForeignChange::ZoneRestored {
                    zone: failover.zone.clone(),
                    deployment: deployment.name.clone(),
                    now: deployment.replicas,
                    manager: deployment.replicas_manager.clone(),
                });
            }
        }
    }
    changes
}

/// Adopts `changes` into the status the decision is made on: an adopted Deployment leaves the
/// scale-out's baseline, a switched mode or a restored zone is no longer held, and the lever
/// is left alone (`status.heldSince`, [`hands_off`]) until the service is healthy again.
pub fn adopt(status: &mut InvoiceServiceStatus, changes: &[ForeignChange], now: Timestamp) {
    for change in changes {
        match change {
            ForeignChange::Replicas { deployment, .. } => {
                if let Some(scaled) = &mut status.scaled_out {
                    scaled.baseline.remove(deployment);
                    scaled.written.remove(deployment);
                    if scaled.baseline.is_empty() {
                        status.scaled_out = None;
                    }
                }
            }
            ForeignChange::ModeSwitched { .. } => {
                status.read_only = None;
                status
                    .held_since
                    .insert(hands_off::READ_ONLY.to_owned(), Time(now));
            }
            ForeignChange::ZoneRestored { zone, .. } => {
                status.failover = None;
                status.held_since.insert(hands_off::zone(zone), Time(now));
            }
        }
    }
}

/// One sentence for the Warning Event of a change, naming who made it (`manager` for the mode
/// key, which the caches do not carry).
pub fn describe(change: &ForeignChange, mode_manager: Option<&str>) -> String {
    let by = |manager: Option<&str>| manager.unwrap_or("another field manager").to_owned();
    match change {
        ForeignChange::Replicas {
            deployment,
            ours,
            now,
            manager,
        } => format!(
            "deployment/{deployment} was scaled to {now} by {} (the operator had set {ours}): \
             adopted; the operator will not scale it back in",
            by(manager.as_deref())
        ),
        ForeignChange::ModeSwitched { value } => format!(
            "the mode key was set to {value:?} by {} while the operator held read-only mode: \
             adopted; the operator will not enter read-only mode again until the service is healthy",
            by(mode_manager)
        ),
        ForeignChange::ZoneRestored {
            zone,
            deployment,
            now,
            manager,
        } => format!(
            "deployment/{deployment} in the failed-over zone {zone} was scaled to {now} by {}: \
             adopted; the operator no longer holds the failover and will not fail {zone} over \
             again until the service is healthy",
            by(manager.as_deref())
        ),
    }
}

#[cfg(test)]
mod tests;
