//! The status and Event of a spec the operator does not act on: invalid, or refuted by the
//! cluster (pre-flight).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{EventSpec, condition, reasons, set_condition};
use crate::api::{InvoiceServiceStatus, Phase, SpecProblem, condition_types};

/// Status and Event for an invalid spec: `Ready=False`, reason `InvalidSpec`, every problem
/// listed; nothing else changes and nothing is acted on.
pub fn report_invalid(
    previous: &InvoiceServiceStatus,
    problems: &[SpecProblem],
    generation: Option<i64>,
    now: Timestamp,
) -> (InvoiceServiceStatus, Option<EventSpec>) {
    report_not_ready(previous, reasons::INVALID_SPEC, problems, generation, now)
}

/// Status and Event for a valid spec the cluster refutes (see [`crate::preflight`]):
/// `Ready=False` with the refusal's reason, every problem listed; nothing else changes and
/// nothing is acted on.
pub fn report_refused(
    previous: &InvoiceServiceStatus,
    refusal: &crate::preflight::Refusal,
    generation: Option<i64>,
    now: Timestamp,
) -> (InvoiceServiceStatus, Option<EventSpec>) {
    report_not_ready(previous, refusal.reason, &refusal.problems, generation, now)
}

/// `Ready=False` with `reason` and the problems as its message, phase Unknown. The Warning
/// Event comes only when the reason or the message changes, so a service that stays refused
/// interval after interval writes nothing and emits nothing.
fn report_not_ready(
    previous: &InvoiceServiceStatus,
    reason: &'static str,
    problems: &[SpecProblem],
    generation: Option<i64>,
    now: Timestamp,
) -> (InvoiceServiceStatus, Option<EventSpec>) {
    let message = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut next = previous.clone();
    next.observed_generation = generation;
    next.phase = Some(Phase::Unknown);
    set_condition(
        &mut next.conditions,
        &previous.conditions,
        Condition {
            type_: condition_types::READY.to_owned(),
            status: "False".to_owned(),
            reason: reason.to_owned(),
            message: message.clone(),
            observed_generation: generation,
            last_transition_time: Time(now),
        },
    );
    let changed = condition(previous, condition_types::READY)
        .is_none_or(|c| c.status != "False" || c.reason != reason || c.message != message);
    let why = match reason {
        reasons::INVALID_SPEC => "not acting on an invalid spec",
        reasons::CONFLICT => "not acting on a Deployment another InvoiceService manages",
        reasons::WORKLOAD_NOT_FOUND => "not acting: a Deployment of the spec does not exist",
        reasons::ZONE_NOT_FOUND => "not acting: a zone of the spec is carried by no node",
        _ => "not acting",
    };
    let event = changed.then(|| EventSpec {
        warning: true,
        reason,
        note: format!("{why}: {message}"),
        action: "Validate",
        related: None,
    });
    (next, event)
}
