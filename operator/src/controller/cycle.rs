//! Fleet cycles, for measuring the operator at fleet scale: one cycle starts at a fleet tick
//! and ends once every InvoiceService in the store at that tick has finished a reconcile
//! (successful or not) and the tick's reconciles have been triggered. No IO: the controller
//! feeds it the tick, the end of the fleet query and each finished reconcile, and logs and
//! records what it returns.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use kube::runtime::reflector::ObjectRef;

use crate::api::InvoiceService;

/// A cycle that completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Completed {
    /// Services in the store at the tick.
    pub services: usize,
    /// From the tick to the last of those services' reconciles.
    pub cycle: Duration,
    /// The fleet evaluation's part of it (the batched Prometheus queries).
    pub query: Duration,
}

/// The cycle in flight.
#[derive(Debug)]
struct Cycle {
    started: Instant,
    services: usize,
    pending: HashSet<ObjectRef<InvoiceService>>,
    /// Set once the fleet evaluation finished and the reconciles were triggered.
    query: Option<Duration>,
}

impl Cycle {
    /// The completion, once nothing is pending and the reconciles were triggered. A cycle
    /// over an empty store completes without a result: there is nothing to measure.
    fn completion(&self, now: Instant) -> Option<Completed> {
        let query = self.query?;
        (self.pending.is_empty() && self.services > 0).then(|| Completed {
            services: self.services,
            cycle: now.saturating_duration_since(self.started),
            query,
        })
    }

    fn done(&self) -> bool {
        self.query.is_some() && self.pending.is_empty()
    }
}

/// The fleet cycle in flight, if any.
#[derive(Debug, Default)]
pub(super) struct FleetCycles {
    current: Option<Cycle>,
}

impl FleetCycles {
    /// Starts a cycle at a fleet tick over `services`, the store's content. Returns how many
    /// services the previous cycle was still waiting for when it had not completed (an
    /// overrun); that cycle is abandoned.
    pub fn start(
        &mut self,
        started: Instant,
        services: impl IntoIterator<Item = ObjectRef<InvoiceService>>,
    ) -> Option<usize> {
        let overran = self
            .current
            .take()
            .filter(|cycle| !cycle.done())
            .map(|cycle| cycle.pending.len());
        let pending: HashSet<_> = services.into_iter().collect();
        self.current = Some(Cycle {
            started,
            services: pending.len(),
            pending,
            query: None,
        });
        overran
    }

    /// The fleet evaluation of the current cycle took `query` and the reconciles were
    /// triggered. Services no longer `present` (deleted since the tick) are not waited for.
    /// Completes the cycle when every service has already been reconciled.
    pub fn dispatched(
        &mut self,
        query: Duration,
        now: Instant,
        present: impl Fn(&ObjectRef<InvoiceService>) -> bool,
    ) -> Option<Completed> {
        let cycle = self.current.as_mut()?;
        cycle.query = Some(query);
        cycle.pending.retain(|service| present(service));
        self.finish_if_done(now)
    }

    /// A reconcile of `service` finished. Completes the cycle when it was the last one.
    pub fn reconciled(
        &mut self,
        service: &ObjectRef<InvoiceService>,
        now: Instant,
    ) -> Option<Completed> {
        let cycle = self.current.as_mut()?;
        if !cycle.pending.remove(service) {
            return None;
        }
        self.finish_if_done(now)
    }

    /// Services the current cycle still waits for.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.current.as_ref().map_or(0, |cycle| cycle.pending.len())
    }

    fn finish_if_done(&mut self, now: Instant) -> Option<Completed> {
        let cycle = self.current.as_ref()?;
        if !cycle.done() {
            return None;
        }
        let completed = cycle.completion(now);
        self.current = None;
        completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> ObjectRef<InvoiceService> {
        ObjectRef::new(name).within("invoicing")
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_cycle_completes_with_the_last_reconcile_of_the_services_at_the_tick() {
        let tick = Instant::now();
        let mut cycles = FleetCycles::default();
        assert_eq!(cycles.start(tick, [service("a"), service("b")]), None);
        assert_eq!(cycles.dispatched(300 * MS, tick + 300 * MS, |_| true), None);
        assert_eq!(cycles.pending(), 2);
        assert_eq!(cycles.reconciled(&service("a"), tick + 400 * MS), None);
        assert_eq!(
            cycles.reconciled(&service("other"), tick + 450 * MS),
            None,
            "a service that was not in the store at the tick does not count"
        );
        assert_eq!(
            cycles.reconciled(&service("b"), tick + 500 * MS),
            Some(Completed {
                services: 2,
                cycle: 500 * MS,
                query: 300 * MS,
            })
        );
        assert_eq!(cycles.pending(), 0);
        assert_eq!(
            cycles.reconciled(&service("b"), tick + 600 * MS),
            None,
            "a cycle completes once"
        );
    }

    #[test]
    fn a_cycle_whose_services_reconciled_during_the_query_completes_when_dispatched() {
        let tick = Instant::now();
        let mut cycles = FleetCycles::default();
        cycles.start(tick, [service("a")]);
        // A watch event reconciled the service while the fleet query was running.
        assert_eq!(cycles.reconciled(&service("a"), tick + 100 * MS), None);
        assert_eq!(
            cycles.dispatched(200 * MS, tick + 200 * MS, |_| true),
            Some(Completed {
                services: 1,
                cycle: 200 * MS,
                query: 200 * MS,
            })
        );
    }

    #[test]
    fn a_tick_before_the_previous_cycle_completed_is_an_overrun() {
        let tick = Instant::now();
        let mut cycles = FleetCycles::default();
        cycles.start(tick, [service("a"), service("b"), service("c")]);
        cycles.dispatched(MS, tick + MS, |_| true);
        cycles.reconciled(&service("a"), tick + 2 * MS);
        assert_eq!(
            cycles.start(tick + 15_000 * MS, [service("a"), service("b")]),
            Some(2)
        );
        assert_eq!(
            cycles.pending(),
            2,
            "the new cycle waits for its own services"
        );
        cycles.dispatched(MS, tick + 15_001 * MS, |_| true);
        cycles.reconciled(&service("a"), tick + 15_002 * MS);
        let completed = cycles.reconciled(&service("b"), tick + 15_003 * MS);
        assert_eq!(completed.map(|c| c.cycle), Some(3 * MS));
        assert_eq!(cycles.start(tick + 30_000 * MS, [service("a")]), None);
    }

    #[test]
    fn a_service_deleted_before_its_reconcile_is_not_waited_for() {
        let tick = Instant::now();
        let mut cycles = FleetCycles::default();
        cycles.start(tick, [service("a"), service("gone")]);
        assert_eq!(
            cycles.dispatched(MS, tick + MS, |key| key.name != "gone"),
            None
        );
        assert_eq!(cycles.pending(), 1);
        let completed = cycles.reconciled(&service("a"), tick + 2 * MS);
        assert_eq!(completed.map(|c| c.services), Some(2));
    }

    #[test]
    fn an_empty_store_completes_without_a_measurement_and_no_overrun() {
        let tick = Instant::now();
        let mut cycles = FleetCycles::default();
        assert_eq!(cycles.start(tick, []), None);
        assert_eq!(cycles.dispatched(MS, tick + MS, |_| true), None);
        assert_eq!(cycles.pending(), 0);
        assert_eq!(cycles.start(tick + 15_000 * MS, []), None);
    }
}
