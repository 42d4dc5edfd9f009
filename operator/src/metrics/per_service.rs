//! A metric family labelled by InvoiceService that can drop one service's series. A
//! prometheus-client [`Family`] cannot list its label sets, so this one keeps them.

use std::{
    collections::HashSet,
    hash::Hash,
    ops::Deref,
    sync::{Mutex, MutexGuard, PoisonError},
};

use prometheus_client::metrics::family::Family;

/// Label sets that name the InvoiceService their series belongs to.
pub trait ServiceLabels {
    /// The namespace and name of the InvoiceService the series belongs to.
    fn service(&self) -> (&str, &str);
}

/// A [`Family`] whose series each belong to one InvoiceService, with the label sets it
/// created, so [`forget_service`](Self::forget_service) can remove a service's series.
#[derive(Debug)]
pub struct PerServiceFamily<L, M> {
    family: Family<L, M>,
    label_sets: Mutex<HashSet<L>>,
}

impl<L: Clone + Hash + Eq, M: Default> Default for PerServiceFamily<L, M> {
    fn default() -> Self {
        Self {
            family: Family::default(),
            label_sets: Mutex::default(),
        }
    }
}

impl<L, M> PerServiceFamily<L, M>
where
    L: Clone + Hash + Eq + ServiceLabels,
    M: Default,
{
    /// The series of `labels`, created on first use, as [`Family::get_or_create`].
    pub fn get_or_create(&self, labels: &L) -> impl Deref<Target = M> + '_ {
        // The label set is recorded and its series created under one lock, so a concurrent
        // `forget_service` never leaves a series it does not know about.
        let mut label_sets = self.label_sets();
        if !label_sets.contains(labels) {
            label_sets.insert(labels.clone());
        }
        let metric = self.family.get_or_create(labels);
        drop(label_sets);
        metric
    }

    /// Removes the series of `labels`, if there is one.
    pub fn remove(&self, labels: &L) {
        let mut label_sets = self.label_sets();
        if label_sets.remove(labels) {
            self.family.remove(labels);
        }
    }

    /// Removes every series of the InvoiceService `namespace`/`service`.
    pub fn forget_service(&self, namespace: &str, service: &str) {
        self.retain_services(|other| other != (namespace, service));
    }

    /// Keeps the series of the InvoiceServices `(namespace, name)` for which `keep` holds and
    /// removes the others.
    pub fn retain_services(&self, keep: impl Fn((&str, &str)) -> bool) {
        self.label_sets().retain(|labels| {
            let kept = keep(labels.service());
            if !kept {
                self.family.remove(labels);
            }
            kept
        });
    }

    /// Removes every series.
    pub fn forget_all(&self) {
        let mut label_sets = self.label_sets();
        self.family.clear();
        label_sets.clear();
    }

    /// The family to register: it shares its series with this one.
    pub(super) fn family(&self) -> Family<L, M> {
        self.family.clone()
    }

    fn label_sets(&self) -> MutexGuard<'_, HashSet<L>> {
        self.label_sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
