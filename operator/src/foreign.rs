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
//! - **An autoscaler's floor after a ScaleOut** raised it: the HorizontalPodAutoscaler's
//!   `minReplicas` below what the operator set, last set by another field manager. The
//!   Deployment leaves the scale-out's baseline, as with replicas set by hand.
//! - **A single Deployment's zone exclusion**: the failover's `NotIn` requirement gone from
//!   the pod template's node affinity, written by someone else (a GitOps tool applying the
//!   template's affinity from Git replaces the whole, atomic list of terms). Adopted the same
//!   way as a drained zone brought back.
//!
//! **A tug of war** is the same mechanism meeting a controller: a change that puts the lever
//! back at the value the operator's write replaced, written (by the managed fields' time)
//! within one evaluation interval of that write — Argo CD's self-heal, Flux, a script that
//! enforces the old value. It is adopted like any foreign change, and the lever is left alone
//! for [`CONTESTED_FOR`] whatever the health ([`contested`] keys of `status.heldSince`, shown
//! by the `Contested` condition naming the other manager), instead of being written again at
//! the next chance and reverted again. A person's change a minute later, or to another value,
//! is a hand edit: held until the service is healthy.
//!
//! A change is only believed once the operator's own write is at least one evaluation
//! interval old: right after it, the caches may still show the value from before it. (The
//! operator's own affinity patches are guarded by a `test` of the value they were computed
//! from, so a concurrent edit fails them instead of being overwritten.)

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    FIELD_MANAGER,
    api::{InvoiceServiceSpec, InvoiceServiceStatus},
    signals::{DeploymentState, FieldSetter},
};

/// How long a lever lost in a tug of war is left alone (then tried once more: the other side
/// may have been reconfigured).
pub const CONTESTED_FOR: Duration = Duration::from_secs(3600);

/// Keys of `status.heldSince` for levers another controller keeps reverting:
/// `Contested/<lever> by <manager>`.
pub mod contested {
    /// Prefix of every such key.
    pub const PREFIX: &str = "Contested/";
    /// The read-only mode key.
    pub const READ_ONLY: &str = "ReadOnly";

    /// A zone's failover.
    pub fn zone(zone: &str) -> String {
        format!("Zone/{zone}")
    }

    /// A Deployment's replicas.
    pub fn replicas(deployment: &str) -> String {
        format!("Replicas/{deployment}")
    }

    /// The key for `lever` contested by `manager`.
    pub fn key(lever: &str, manager: &str) -> String {
        format!("{PREFIX}{lever} by {manager}")
    }

    /// The lever and the manager of a key, if it is one.
    pub fn parse(key: &str) -> Option<(&str, &str)> {
        key.strip_prefix(PREFIX)?.split_once(" by ")
    }

    /// `lever` is contested by someone in `held`.
    pub fn holds<V>(held: &std::collections::BTreeMap<String, V>, lever: &str) -> bool {
        held.keys()
            .filter_map(|key| parse(key))
            .any(|(held_lever, _)| held_lever == lever)
    }
}

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
        /// Set back to the count before the operator's write, this long after it (a tug of war).
        reverted_after: Option<Duration>,
    },
    /// The mode key no longer says read-only.
    ModeSwitched {
        /// The value now.
        value: String,
        /// Who set it, if known.
        manager: Option<String>,
        /// Set back to the read-write value this long after the operator's switch (a tug of
        /// war).
        reverted_after: Option<Duration>,
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
        /// Set back to its count before the failover this long after it (a tug of war).
        reverted_after: Option<Duration>,
    },
    /// The floor of the autoscaler of a scaled-out Deployment is below what the operator set.
    AutoscalerFloor {
        /// The Deployment.
        deployment: String,
        /// Its HorizontalPodAutoscaler.
        autoscaler: String,
        /// The floor the operator set.
        ours: i32,
        /// The floor now.
        now: i32,
        /// Who set it, if known.
        manager: Option<String>,
        /// Set back to the floor before the operator's write this long after it (a tug of war).
        reverted_after: Option<Duration>,
    },
    /// The single Deployment's pod template no longer keeps pods out of the failed-over zone.
    ZoneReadmitted {
        /// The zone.
        zone: String,
        /// The Deployment.
        deployment: String,
        /// Who last wrote the template's affinity, if known.
        manager: Option<String>,
        /// Written this long after the failover (a tug of war).
        reverted_after: Option<Duration>,
    },
}

impl ForeignChange {
    /// How soon after the operator's write this change undid it, when it is a tug of war.
    pub fn reverted_after(&self) -> Option<Duration> {
        match self {
            Self::Replicas { reverted_after, .. }
            | Self::ModeSwitched { reverted_after, .. }
            | Self::ZoneRestored { reverted_after, .. }
            | Self::AutoscalerFloor { reverted_after, .. }
            | Self::ZoneReadmitted { reverted_after, .. } => *reverted_after,
        }
    }

    /// Who made the change, if known.
    pub fn manager(&self) -> Option<&str> {
        match self {
            Self::Replicas { manager, .. }
            | Self::ModeSwitched { manager, .. }
            | Self::ZoneRestored { manager, .. }
            | Self::AutoscalerFloor { manager, .. }
            | Self::ZoneReadmitted { manager, .. } => manager.as_deref(),
        }
    }

    /// The lever the change took, as [`contested`] names it.
    pub fn lever(&self) -> String {
        match self {
            Self::Replicas { deployment, .. } | Self::AutoscalerFloor { deployment, .. } => {
                contested::replicas(deployment)
            }
            Self::ModeSwitched { .. } => contested::READ_ONLY.to_owned(),
            Self::ZoneRestored { zone, .. } | Self::ZoneReadmitted { zone, .. } => {
                contested::zone(zone)
            }
        }
    }
}

/// A tug of war: the value the operator's write replaced is back (`restored`), written by
/// another manager at `set_at`, within one `interval` of the operator's write at `written`.
fn reverted(
    restored: bool,
    set_at: Option<Timestamp>,
    written: Timestamp,
    interval: Duration,
) -> Option<Duration> {
    if !restored {
        return None;
    }
    let after = (set_at? - written).total(jiff::Unit::Second).ok()?;
    // Managed-fields times have whole seconds: a revert in the second of the write can read
    // as up to a second before it.
    (after > -1.0 && after <= interval.as_secs_f64())
        .then(|| Duration::from_secs_f64(after.max(0.0)))
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
    mode_set_by: Option<&FieldSetter>,
    now: Timestamp,
) -> Vec<ForeignChange> {
    let interval = spec.signals.interval.get();
    let settled = |written: &Time| older_than(written, now, interval);
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
            let written = scaled
                .written_at
                .as_ref()
                .map_or(scaled.since.0, |time| time.0);
            // With an autoscaler the operator raised its floor: a lower floor set by someone
            // else undoes the ScaleOut (the autoscaler then moves the replicas, as expected).
            if let Some(autoscaler) = &deployment.autoscaler
                && autoscaler.min_replicas < *ours
            {
                let setter = autoscaler.set_by.as_ref();
                let manager = setter.and_then(|setter| setter.manager.clone());
                if foreign_manager(manager.as_deref()) {
                    let before = autoscaler
                        .before
                        .or_else(|| scaled.baseline.get(name).copied());
                    changes.push(ForeignChange::AutoscalerFloor {
                        deployment: name.clone(),
                        autoscaler: autoscaler.name.clone(),
                        ours: *ours,
                        now: autoscaler.min_replicas,
                        reverted_after: reverted(
                            before == Some(autoscaler.min_replicas),
                            setter.and_then(|setter| setter.at),
                            written,
                            interval,
                        ),
                        manager,
                    });
                }
                continue;
            }
            if deployment.replicas != *ours
                && foreign_manager(deployment.replicas_manager.as_deref())
            {
                changes.push(ForeignChange::Replicas {
                    deployment: name.clone(),
                    ours: *ours,
                    now: deployment.replicas,
                    manager: deployment.replicas_manager.clone(),
                    reverted_after: reverted(
                        scaled.baseline.get(name) == Some(&deployment.replicas),
                        deployment.replicas_set_at,
                        written,
                        interval,
                    ),
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
            manager: mode_set_by.and_then(|setter| setter.manager.clone()),
            reverted_after: reverted(
                value == policy.switch.config_map.read_write,
                mode_set_by.and_then(|setter| setter.at),
                read_only.since.0,
                interval,
            ),
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
                    reverted_after: reverted(
                        failover.replicas_before.get(&deployment.name)
                            == Some(&deployment.replicas),
                        deployment.replicas_set_at,
                        failover.since.0,
                        interval,
                    ),
                });
            }
        }
        if let Some(name) = &spec.workload.deployment
            && let Some(deployment) = deployments
                .iter()
                .find(|deployment| deployment.exists && &deployment.name == name)
            && !deployment.excluded_zones.contains(&failover.zone)
        {
            let setter = deployment.affinity_set_by.as_ref();
            let manager = setter.and_then(|setter| setter.manager.clone());
            if foreign_manager(manager.as_deref()) {
                changes.push(ForeignChange::ZoneReadmitted {
                    zone: failover.zone.clone(),
                    deployment: name.clone(),
                    reverted_after: reverted(
                        true,
                        setter.and_then(|setter| setter.at),
                        failover.since.0,
                        interval,
                    ),
                    manager,
                });
            }
        }
    }
    changes
}

/// Adopts `changes` into the status the decision is made on: an adopted Deployment leaves the
/// scale-out's baseline, a switched mode or a restored zone is no longer held, and the lever
/// is left alone (`status.heldSince`, [`hands_off`]) until the service is healthy again — or,
/// after a tug of war, for [`CONTESTED_FOR`] ([`contested`]).
pub fn adopt(status: &mut InvoiceServiceStatus, changes: &[ForeignChange], now: Timestamp) {
    for change in changes {
        if change.reverted_after().is_some() {
            let manager = change.manager().unwrap_or("another field manager");
            status
                .held_since
                .insert(contested::key(&change.lever(), manager), Time(now));
        }
        match change {
            ForeignChange::Replicas { deployment, .. }
            | ForeignChange::AutoscalerFloor { deployment, .. } => {
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
            ForeignChange::ZoneRestored { zone, .. }
            | ForeignChange::ZoneReadmitted { zone, .. } => {
                status.failover = None;
                status.held_since.insert(hands_off::zone(zone), Time(now));
            }
        }
    }
}

/// Drops the [`contested`] holds older than [`CONTESTED_FOR`].
pub fn release_contested(held: &mut std::collections::BTreeMap<String, Time>, now: Timestamp) {
    held.retain(|key, since| {
        !key.starts_with(contested::PREFIX) || !older_than(since, now, CONTESTED_FOR)
    });
}

/// One sentence for the Warning Event of a change, naming who made it.
pub fn describe(change: &ForeignChange) -> String {
    let by = |manager: Option<&str>| manager.unwrap_or("another field manager").to_owned();
    if let Some(after) = change.reverted_after() {
        let what = match change {
            ForeignChange::Replicas {
                deployment,
                ours,
                now,
                ..
            } => format!(
                "set deployment/{deployment} back to {now} replicas (the operator had set {ours})"
            ),
            ForeignChange::AutoscalerFloor {
                deployment,
                autoscaler,
                ours,
                now,
                ..
            } => format!(
                "set the floor of horizontalpodautoscaler/{autoscaler} back to {now} (the \
                 operator had raised it to {ours} for deployment/{deployment})"
            ),
            ForeignChange::ModeSwitched { value, .. } => {
                format!(
                    "set the mode key back to {value:?} (the operator had switched it to read-only)"
                )
            }
            ForeignChange::ZoneRestored {
                zone,
                deployment,
                now,
                ..
            } => format!(
                "set deployment/{deployment} in the failed-over zone {zone} back to {now} replicas"
            ),
            ForeignChange::ZoneReadmitted {
                zone, deployment, ..
            } => format!(
                "set the node affinity of deployment/{deployment} back to one that admits the \
                 failed-over zone {zone}"
            ),
        };
        return format!(
            "{} {what} {:.1}s after the operator's write: a tug of war. Adopted; the operator \
             leaves {} alone for {}m (condition Contested). Let the operator own the field \
             (Argo CD: ignoreDifferences with managedFieldsManagers [invoice-operator]; Flux: \
             kustomize.toolkit.fluxcd.io/ssa: IfNotPresent, or drop the field from Git)",
            by(change.manager()),
            after.as_secs_f64(),
            change.lever(),
            CONTESTED_FOR.as_secs() / 60
        );
    }
    match change {
        ForeignChange::Replicas {
            deployment,
            ours,
            now,
            manager,
            ..
        } => format!(
            "deployment/{deployment} was scaled to {now} by {} (the operator had set {ours}): \
             adopted; the operator will not scale it back in",
            by(manager.as_deref())
        ),
        ForeignChange::AutoscalerFloor {
            deployment,
            autoscaler,
            ours,
            now,
            manager,
            ..
        } => format!(
            "the floor of horizontalpodautoscaler/{autoscaler} was set to {now} by {} (the \
             operator had raised it to {ours}): adopted; the operator will not scale \
             deployment/{deployment} back in",
            by(manager.as_deref())
        ),
        ForeignChange::ModeSwitched { value, manager, .. } => format!(
            "the mode key was set to {value:?} by {} while the operator held read-only mode: \
             adopted; the operator will not enter read-only mode again until the service is healthy",
            by(manager.as_deref())
        ),
        ForeignChange::ZoneRestored {
            zone,
            deployment,
            now,
            manager,
            ..
        } => format!(
            "deployment/{deployment} in the failed-over zone {zone} was scaled to {now} by {}: \
             adopted; the operator no longer holds the failover and will not fail {zone} over \
             again until the service is healthy",
            by(manager.as_deref())
        ),
        ForeignChange::ZoneReadmitted {
            zone,
            deployment,
            manager,
            ..
        } => format!(
            "the node affinity of deployment/{deployment} was changed by {} and no longer \
             keeps pods out of the failed-over zone {zone}: adopted; the operator no longer \
             holds the failover and will not fail {zone} over again until the service is healthy",
            by(manager.as_deref())
        ),
    }
}

#[cfg(test)]
mod tests;
