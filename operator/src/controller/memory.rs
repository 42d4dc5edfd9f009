//! What the controller remembers about each service between reconciles, in one map under one
//! lock: when the service was first seen unhealthy, the status this replica last wrote (until
//! the cache catches up with it) and its failed reconciles. Everything else lives in the
//! object's status, so a restart or a new leader loses only these conveniences. A service's
//! entry goes when nothing is left in it, and at every fleet tick for deleted services. The
//! storm gate keeps its census of the fleet itself (see `crate::storm`). No IO.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::runtime::reflector::ObjectRef;

use crate::api::{InvoiceService, InvoiceServiceStatus};

/// The first wait after a failed reconcile; it doubles with each failure in a row.
pub(super) const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between reconciles of a service that keeps failing.
pub(super) const LONGEST_RETRY: Duration = Duration::from_secs(300);

type Key = ObjectRef<InvoiceService>;

/// A status as the API server returned it from our patch.
#[derive(Clone, Debug)]
pub(super) struct WrittenStatus {
    pub resource_version: u64,
    pub status: InvoiceServiceStatus,
}

/// Failed reconciles in a row of one service, and when it may be tried again.
#[derive(Clone, Copy, Debug)]
struct Failures {
    in_a_row: u32,
    retry_at: Instant,
}

/// One service's entry.
#[derive(Clone, Debug, Default)]
struct ServiceMemory {
    /// When the service was first seen unhealthy in the current incident.
    detected: Option<Instant>,
    /// The status this replica last wrote.
    written: Option<WrittenStatus>,
    /// Failed reconciles, while they last.
    failures: Option<Failures>,
}

impl ServiceMemory {
    fn is_empty(&self) -> bool {
        self.detected.is_none() && self.written.is_none() && self.failures.is_none()
    }
}

/// Every service's entry.
#[derive(Debug, Default)]
pub(super) struct Memory {
    services: Mutex<HashMap<Key, ServiceMemory>>,
}

impl Memory {
    /// Runs `change` on the service's entry (a fresh one when it has none) and drops the entry
    /// once it is empty.
    fn with<R>(&self, key: &Key, change: impl FnOnce(&mut ServiceMemory) -> R) -> R {
        let mut services = self.services.lock().expect("memory lock is never poisoned");
        let entry = services.entry(key.clone()).or_default();
        let result = change(entry);
        if entry.is_empty() {
            services.remove(key);
        }
        result
    }

    /// The service's status as this replica knows it: the cached object's, unless the cache
    /// still lags behind a status this replica wrote. A reconcile triggered by a watch event
    /// (the pod it just evicted going away) can run before the watch delivers that status
    /// patch; deciding on the stale status would ignore the action just taken (its cooldown,
    /// its verify window) and act twice. Resource versions are compared as numbers, as the
    /// API server's etcd revisions are; if one is not a number the cache wins.
    pub fn freshest_status(&self, service: &InvoiceService) -> InvoiceServiceStatus {
        let cached = service.status.clone().unwrap_or_default();
        let cached_version = service
            .metadata
            .resource_version
            .as_deref()
            .and_then(|version| version.parse::<u64>().ok());
        self.with(&ObjectRef::from_obj(service), |memory| {
            match (&memory.written, cached_version) {
                (None, _) => cached,
                (Some(ours), Some(version)) if version < ours.resource_version => {
                    ours.status.clone()
                }
                (Some(_), _) => {
                    memory.written = None;
                    cached
                }
            }
        })
    }

    /// Remembers the status the API server returned from our patch.
    pub fn wrote(&self, key: &Key, written: WrittenStatus) {
        self.with(key, |memory| memory.written = Some(written));
    }

    /// Notes whether the service is unhealthy now; returns since when it has been, in the
    /// current incident.
    pub fn unhealthy(&self, key: &Key, unhealthy: bool) -> Option<Instant> {
        self.with(key, |memory| {
            if unhealthy {
                Some(*memory.detected.get_or_insert_with(Instant::now))
            } else {
                memory.detected = None;
                None
            }
        })
    }

    /// When the service was first seen unhealthy in the current incident.
    pub fn detected(&self, key: &Key) -> Option<Instant> {
        self.with(key, |memory| memory.detected)
    }

    /// Records a failed reconcile; returns how long to wait before the next.
    pub fn failed(&self, key: &Key) -> Duration {
        self.with(key, |memory| {
            let failures = memory.failures.get_or_insert(Failures {
                in_a_row: 0,
                retry_at: Instant::now(),
            });
            failures.in_a_row = failures.in_a_row.saturating_add(1);
            let wait = FIRST_RETRY
                .saturating_mul(2u32.saturating_pow(failures.in_a_row - 1))
                .min(LONGEST_RETRY);
            failures.retry_at = Instant::now() + wait;
            wait
        })
    }

    /// A reconcile succeeded: any backoff ends.
    pub fn succeeded(&self, key: &Key) {
        self.with(key, |memory| memory.failures = None);
    }

    /// How long the service still waits after failed reconciles, if it does.
    pub fn backing_off(&self, key: &Key) -> Option<Duration> {
        let retry_at = self.with(key, |memory| memory.failures.map(|f| f.retry_at))?;
        retry_at
            .checked_duration_since(Instant::now())
            .filter(|wait| !wait.is_zero())
    }

    /// Keeps only the services for which `present` holds.
    pub fn retain(&self, present: impl Fn(&Key) -> bool) {
        self.services
            .lock()
            .expect("memory lock is never poisoned")
            .retain(|key, _| present(key));
    }

    /// The resource version of the status remembered as written for the service, if any.
    #[cfg(test)]
    pub fn written(&self, key: &Key) -> Option<u64> {
        self.with(key, |memory| {
            memory.written.as_ref().map(|w| w.resource_version)
        })
    }

    /// The services remembered, in no particular order.
    #[cfg(test)]
    pub fn services(&self) -> Vec<Key> {
        let services = self.services.lock().expect("memory lock is never poisoned");
        services.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        ObjectRef::new(name).within("invoicing")
    }

    #[test]
    fn an_entry_goes_once_nothing_is_left_in_it() {
        let memory = Memory::default();
        let service = key("invoice-api");
        assert!(memory.unhealthy(&service, true).is_some());
        memory.failed(&service);
        memory.unhealthy(&service, false);
        assert_eq!(memory.services(), std::slice::from_ref(&service));
        memory.succeeded(&service);
        assert!(memory.services().is_empty());
        assert_eq!(memory.detected(&service), None);
    }

    #[test]
    fn detection_keeps_the_first_time_of_an_incident() {
        let memory = Memory::default();
        let service = key("invoice-api");
        let first = memory.unhealthy(&service, true).unwrap();
        assert_eq!(memory.unhealthy(&service, true), Some(first));
        assert_eq!(memory.detected(&service), Some(first));
    }
}
