//! One service-level window's answer: request rates by service and status class, recorded or
//! raw, with the raw fallback for services the recorded series do not cover yet. Pure.

use std::{collections::HashMap, sync::Arc, time::Instant};

use super::{ByService, Labels, Series};
use crate::{
    prometheus::promql::{CLASS_LABEL, UNCOVERED_CLASS},
    signals::{Measured, RequestRates, ServiceKey, UnknownReason, measured},
};

/// Raw rates split by status class, before NaN checks (NaN survives the sums).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ClassRates {
    pub(super) total: f64,
    pub(super) server_errors: f64,
    pub(super) client_errors: f64,
    /// The recorded series do not cover the window yet (a recorded answer's marker series).
    pub(super) uncovered: bool,
}

impl ClassRates {
    pub(super) fn add(&mut self, series: &Series) {
        match series.labels.get(CLASS_LABEL).map(String::as_str) {
            Some(UNCOVERED_CLASS) => {
                self.uncovered = true;
                return;
            }
            Some("5xx") => self.server_errors += series.value,
            Some("4xx") => self.client_errors += series.value,
            _ => {}
        }
        self.total += series.value;
    }

    pub(super) fn measured(self) -> Measured<RequestRates> {
        if self.uncovered {
            return Err(UnknownReason::WindowNotYetRecorded);
        }
        Ok(RequestRates {
            total: measured(self.total)?,
            server_errors: measured(self.server_errors)?,
            client_errors: measured(self.client_errors)?,
        })
    }
}

/// The answer over one service-level window, shared between evaluations while it is reused.
#[derive(Clone, Debug)]
pub(super) struct WindowAnswer {
    pub(super) rates: Measured<Arc<ByService<ClassRates>>>,
    /// The raw rates asked beside recorded ones ([`SliSource::Auto`](super::SliSource)), for
    /// the services the recorded series do not cover; `None` when not asked or refused.
    pub(super) fallback: Option<Arc<ByService<ClassRates>>>,
    /// When Prometheus gave it, once [`FleetMetrics::carry_over`] has stamped it.
    pub(super) asked_at: Option<Instant>,
}

impl WindowAnswer {
    pub(super) fn failed(reason: UnknownReason) -> Self {
        Self {
            rates: Err(reason),
            fallback: None,
            asked_at: None,
        }
    }

    /// One service's rates: the recorded (or raw) answer's, else the raw fallback's for a
    /// service the recorded series do not cover (or that they lack, or when they failed).
    pub(super) fn of(&self, key: &ServiceKey) -> Measured<RequestRates> {
        let fallback = self.fallback.as_ref().and_then(|raw| raw.get(key)).copied();
        match &self.rates {
            Ok(by_service) => match by_service.get(key) {
                Some(rates) if !rates.uncovered => rates.measured(),
                Some(rates) => fallback.unwrap_or(*rates).measured(),
                None => fallback.ok_or(UnknownReason::NoData)?.measured(),
            },
            Err(reason) => fallback.ok_or(*reason)?.measured(),
        }
    }
}

/// Sums series by service (and status class).
pub(super) fn by_service(labels: &Labels<'_>, series: &[Series]) -> ByService<ClassRates> {
    let mut rates: ByService<ClassRates> = HashMap::new();
    for sample in series {
        if let Some(key) = labels.key(sample) {
            rates.entry(key).or_default().add(sample);
        }
    }
    rates
}
