//! Per-service state series in kube-state-metrics style: what `kubectl get invsvc` shows, as
//! gauges a platform team can alert and chart on. Labels are bounded: the service's namespace
//! and name, plus one label with a fixed set of values (phase, mode). A service's series are
//! removed with its other per-service series (deleted service, lost lease).

use std::sync::atomic::AtomicU64;

use prometheus_client::{encoding::EncodeLabelSet, metrics::gauge::Gauge, registry::Registry};

use super::per_service::{PerServiceFamily, ServiceLabels};
use crate::api::Phase;

/// The phases, in the order `status.phase` documents them.
pub const PHASES: [&str; 7] = {
    let mut names = [""; 7];
    let mut index = 0;
    while index < Phase::ALL.len() {
        names[index] = Phase::ALL[index].as_str();
        index += 1;
    }
    names
};

/// How the operator treats a service: acting, proposing only, or paused.
pub const MODES: [&str; 3] = ["Enforce", "DryRun", "Paused"];

/// One InvoiceService.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The InvoiceService's namespace.
    pub namespace: String,
    /// The InvoiceService's name.
    pub service: String,
}

/// One InvoiceService and one value of a fixed set (a phase, a mode).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateValueLabels {
    /// The InvoiceService's namespace.
    pub namespace: String,
    /// The InvoiceService's name.
    pub service: String,
    /// The phase or mode.
    pub value: &'static str,
}

impl ServiceLabels for StateLabels {
    fn service(&self) -> (&str, &str) {
        (&self.namespace, &self.service)
    }
}

impl ServiceLabels for StateValueLabels {
    fn service(&self) -> (&str, &str) {
        (&self.namespace, &self.service)
    }
}

/// What is exported about one service, read from its status.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceState {
    /// `status.phase`, one of [`PHASES`].
    pub phase: &'static str,
    /// One of [`MODES`].
    pub mode: &'static str,
    /// `NeedsAttention=True`.
    pub needs_attention: bool,
    /// `SignalsTrusted=True`.
    pub signals_trusted: bool,
    /// The error budget left over the SLO window (1 = untouched), when known.
    pub error_budget_remaining: Option<f64>,
    /// Availability over the SLO window (0..1), when known.
    pub availability: Option<f64>,
    /// The ladder rung taken in the current incident (1-based), 0 at rest.
    pub ladder_rung: i64,
    /// Every rung was tried and the service did not recover.
    pub ladder_exhausted: bool,
    /// An incident is open (`status.incidents.open`).
    pub incident_open: bool,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The state families.
#[derive(Debug, Default)]
pub struct ServiceStateMetrics {
    phase: PerServiceFamily<StateValueLabels, Gauge>,
    mode: PerServiceFamily<StateValueLabels, Gauge>,
    needs_attention: PerServiceFamily<StateLabels, Gauge>,
    signals_trusted: PerServiceFamily<StateLabels, Gauge>,
    error_budget_remaining: PerServiceFamily<StateLabels, FloatGauge>,
    availability: PerServiceFamily<StateLabels, FloatGauge>,
    ladder_rung: PerServiceFamily<StateLabels, Gauge>,
    ladder_exhausted: PerServiceFamily<StateLabels, Gauge>,
    incident_open: PerServiceFamily<StateLabels, Gauge>,
}

impl ServiceStateMetrics {
    /// Sets every state series of `namespace`/`service`; a figure that is not known has no
    /// series (rather than a made-up value).
    pub fn set(&self, namespace: &str, service: &str, state: &ServiceState) {
        let labels = StateLabels {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
        };
        let one_of = |family: &PerServiceFamily<StateValueLabels, Gauge>,
                      values: &[&'static str],
                      now: &str| {
            for value in values {
                let labels = StateValueLabels {
                    namespace: namespace.to_owned(),
                    service: service.to_owned(),
                    value,
                };
                family.get_or_create(&labels).set(i64::from(*value == now));
            }
        };
        one_of(&self.phase, &PHASES, state.phase);
        one_of(&self.mode, &MODES, state.mode);
        let flag = |family: &PerServiceFamily<StateLabels, Gauge>, on: bool| {
            family.get_or_create(&labels).set(i64::from(on));
        };
        flag(&self.needs_attention, state.needs_attention);
        flag(&self.signals_trusted, state.signals_trusted);
        flag(&self.ladder_exhausted, state.ladder_exhausted);
        flag(&self.incident_open, state.incident_open);
        self.ladder_rung
            .get_or_create(&labels)
            .set(state.ladder_rung);
        for (family, value) in [
            (&self.error_budget_remaining, state.error_budget_remaining),
            (&self.availability, state.availability),
        ] {
            match value {
                Some(value) => {
                    family.get_or_create(&labels).set(value);
                }
                None => family.remove(&labels),
            }
        }
    }

    /// Keeps the series of the services for which `keep` holds.
    pub fn retain_services(&self, keep: impl Fn((&str, &str)) -> bool + Copy) {
        self.phase.retain_services(keep);
        self.mode.retain_services(keep);
        self.needs_attention.retain_services(keep);
        self.signals_trusted.retain_services(keep);
        self.error_budget_remaining.retain_services(keep);
        self.availability.retain_services(keep);
        self.ladder_rung.retain_services(keep);
        self.ladder_exhausted.retain_services(keep);
        self.incident_open.retain_services(keep);
    }

    /// Registers the families (prefix `service_`).
    pub(super) fn register(&self, registry: &mut Registry) {
        for (family, name, help) in [
            (
                &self.phase,
                "service_phase",
                "1 for the InvoiceService's current phase (status.phase), 0 for the others",
            ),
            (
                &self.mode,
                "service_mode",
                "1 for how the operator treats the InvoiceService (Enforce, DryRun, Paused)",
            ),
        ] {
            registry.register(name, help, family.family());
        }
        for (family, name, help) in [
            (
                &self.needs_attention,
                "service_needs_attention",
                "1 while the InvoiceService's NeedsAttention condition is True",
            ),
            (
                &self.signals_trusted,
                "service_signals_trusted",
                "1 while every signal of the InvoiceService is known (SignalsTrusted=True)",
            ),
            (
                &self.ladder_rung,
                "service_ladder_rung",
                "The ladder rung taken in the current incident (1 = the first), 0 at rest",
            ),
            (
                &self.ladder_exhausted,
                "service_ladder_exhausted",
                "1 while every rung was tried and the InvoiceService did not recover",
            ),
            (
                &self.incident_open,
                "service_incident_open",
                "1 while the InvoiceService has an open incident (status.incidents.open)",
            ),
        ] {
            registry.register(name, help, family.family());
        }
        for (family, name, help) in [
            (
                &self.error_budget_remaining,
                "service_error_budget_remaining_ratio",
                "Error budget left over the SLO window (1 = untouched, below 0 = overspent)",
            ),
            (
                &self.availability,
                "service_availability_ratio",
                "Availability over the SLO window",
            ),
        ] {
            registry.register(name, help, family.family());
        }
    }
}
