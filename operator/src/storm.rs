//! The fleet-wide storm gate: when too many InvoiceServices are in trouble at once, the cause
//! is probably shared (a database, the network, a bad config pushed everywhere) and restarting
//! or scaling every service would only add load — so every action freezes. Pure: the
//! controller tells it which services are in trouble and when; nothing here does IO or reads
//! the clock.
//!
//! Three properties make it hold where a naive share check flaps:
//!
//! - **One census before anyone acts.** At each fleet tick the controller counts every
//!   service measured by the batched queries ([`StormGate::census`]) before it reconciles any
//!   of them. Counting services as their reconciles run let the first half of a shared outage
//!   act before the share was reached.
//! - **Acting is not recovering.** A service whose last action waits for its verdict counts
//!   as in trouble ([`in_trouble`]): right after a rollout its new pods have no samples yet,
//!   and counting that silence as health halved the share and let the other half roll.
//! - **Hysteresis.** The gate closes as soon as the share is over the threshold, from the
//!   census or from any single reconcile, but opens only at a census, after the share has
//!   stayed at or below the threshold for the hold period: it cannot open and close on
//!   alternate intervals.

use std::{collections::HashMap, hash::Hash, time::Duration};

use crate::{
    api::{ActionOutcome, InvoiceServiceStatus},
    evaluate::Evaluation,
};

/// When the gate closes and how long it stays closed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StormSettings {
    /// Share of services in trouble above which every action freezes.
    pub share: f64,
    /// At least this many services in trouble before the gate can close, so that a small
    /// fleet with one bad service does not freeze itself.
    pub min_services: usize,
    /// How long the share must stay at or below the threshold before the gate opens again.
    pub hold: Duration,
}

/// Whether a service counts towards the storm: its SLO is breached, a pod of it is unhealthy,
/// or its last action still waits for its verdict (acting is not recovering).
pub fn in_trouble(evaluation: &Evaluation, status: &InvoiceServiceStatus) -> bool {
    evaluation.slo_met_now() == Some(false)
        || evaluation.unhealthy_pods().next().is_some()
        || status
            .last_action
            .as_ref()
            .is_some_and(|action| action.outcome == ActionOutcome::Pending)
}

/// The gate's state over the fleet. `K` names a service; `T` is the controller's clock (an
/// `Instant`, or a number in tests).
#[derive(Debug)]
pub struct StormGate<K, T> {
    /// Per service: in trouble at its latest evaluation.
    in_trouble: HashMap<K, bool>,
    /// Closed, and since when the share has been at or below the threshold (if it has).
    closed: Option<Option<T>>,
}

impl<K, T> Default for StormGate<K, T> {
    fn default() -> Self {
        Self {
            in_trouble: HashMap::new(),
            closed: None,
        }
    }
}

/// The gate's verdict and the numbers behind it, for status and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StormVerdict {
    /// Every action is frozen.
    pub closed: bool,
    /// Services in trouble.
    pub in_trouble: usize,
    /// Services counted.
    pub services: usize,
}

impl<K, T> StormGate<K, T>
where
    K: Eq + Hash,
    T: Copy + PartialOrd + std::ops::Sub<Output = Duration>,
{
    /// The census of a fleet tick: records each counted service, then closes the gate if the
    /// share is over the threshold, or opens it if the share has stayed at or below it for the
    /// hold period. Services not in `services` keep their last entry (they are measured by
    /// their own reconcile).
    pub fn census(
        &mut self,
        services: impl IntoIterator<Item = (K, bool)>,
        now: T,
        settings: &StormSettings,
    ) -> StormVerdict {
        self.in_trouble.extend(services);
        if self.exceeded(settings) {
            self.closed = Some(None);
        } else if let Some(calm_since) = &mut self.closed {
            let since = *calm_since.get_or_insert(now);
            if now - since >= settings.hold {
                self.closed = None;
            }
        }
        self.verdict()
    }

    /// One service's latest evaluation, from its reconcile: may close the gate at once, never
    /// opens it (only a census does, after the hold period).
    pub fn observe(&mut self, service: K, in_trouble: bool, settings: &StormSettings) -> bool {
        self.in_trouble.insert(service, in_trouble);
        if self.exceeded(settings) {
            self.closed = Some(None);
        }
        self.closed.is_some()
    }

    /// Forgets services for which `keep` is false (deleted, or no longer counted).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.in_trouble.retain(|service, _| keep(service));
    }

    /// The verdict now.
    pub fn verdict(&self) -> StormVerdict {
        StormVerdict {
            closed: self.closed.is_some(),
            in_trouble: self.in_trouble_count(),
            services: self.in_trouble.len(),
        }
    }

    fn in_trouble_count(&self) -> usize {
        self.in_trouble.values().filter(|trouble| **trouble).count()
    }

    fn exceeded(&self, settings: &StormSettings) -> bool {
        let total = self.in_trouble.len();
        let in_trouble = self.in_trouble_count();
        total > 0
            && in_trouble >= settings.min_services
            && in_trouble as f64 / total as f64 > settings.share
    }
}

#[cfg(test)]
mod tests;
