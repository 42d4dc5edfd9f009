//! Decide: given the spec, the evaluation, the status (the operator's memory) and the clock,
//! choose at most one action or reversal, with its reason and evidence — or none, with the
//! gate that blocked it. Also [`record`], which folds a decision into the next status, and
//! [`record_intent`], the status written before an action that sets replicas (see [`resume`]).
//! Pure: the same inputs always give the same decision; nothing here does IO or reads the
//! clock.
//!
//! The steps of a decision, each in its own module: the facts and the symptom (`facts`),
//! the verdict on the last action (`verdict`), the ladder and the action of each rung
//! (`ladder`), the reversals once the incident is over (`reversal`), and the safety rails
//! every action passes (`gate`); recording a decision in status is `record`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

mod canary;
mod decision;
mod facts;
mod gate;
mod ladder;
mod record;
pub mod resume;
mod reversal;
mod verdict;

pub use decision::{
    Attention, Blocked, Decision, DecisionInput, Gate, Outcome, PlannedAction, Step,
};
pub use facts::symptom_rungs;
pub use gate::active_blackout;
pub use ladder::REQUEST_RATE_EVIDENCE;
pub use record::{note_refusal, record, record_intent, refusal_evidence};

use facts::Facts;
use verdict::Verification;

/// Keys of `status.heldSince`.
pub mod timers {
    /// Database pool above the read-only enter threshold.
    pub const DATABASE_POOL_HIGH: &str = "DatabasePoolHigh";
    /// Database pool below the read-only exit threshold.
    pub const DATABASE_POOL_LOW: &str = "DatabasePoolLow";
    /// Every SLO met, no unhealthy pod.
    pub const HEALTHY: &str = "Healthy";

    /// A zone's error ratio above the failover threshold.
    pub fn zone_unhealthy(zone: &str) -> String {
        format!("Zone/{zone}/Unhealthy")
    }

    /// A failed-over zone looks healthy again (nodes Ready, no errors seen).
    pub fn zone_healthy(zone: &str) -> String {
        format!("Zone/{zone}/Healthy")
    }

    /// The fail-back canary of a failed-over zone is Ready.
    pub fn zone_canary_ready(zone: &str) -> String {
        format!("Zone/{zone}/CanaryReady")
    }
}

/// Decides what to do now. An action interrupted before it was recorded (`status.inFlight`)
/// comes first: it is completed (or held, see [`resume`]) before anything new is decided.
pub fn decide(input: &DecisionInput<'_>) -> Decision {
    if let Some(intent) = &input.status.in_flight {
        return resume::resume(input, intent);
    }
    let mut held_since = input.status.held_since.clone();
    // Levers lost in a tug of war are tried again once their hold is over.
    crate::foreign::release_contested(&mut held_since, input.now);
    let facts = Facts::observe(input, &mut held_since);
    let symptom = facts.symptom(input.evaluation);
    let verification = Verification::of(input, symptom.as_ref(), facts.healthy);
    let mut decision = Decision {
        outcome: Outcome::Idle,
        verdict: verification.verdict,
        ladder: input.status.ladder.clone(),
        held_since,
        attention: facts::attention(input),
        load_peak: reversal::load_peak(input.status, input.evaluation),
        fail_back_waiting: None,
        symptom: symptom.as_ref().map(facts::Symptom::kind),
    };
    decision.fail_back_waiting = canary::waiting(input, &decision.held_since);
    // A canary that fails (or runs while anything is wrong) is taken back before anything
    // else is decided: it may be the cause, and the ladder must not act on it.
    if let Some(outcome) = canary::withdrawal(input, &facts, symptom.is_some()) {
        decision.outcome = outcome;
        return decision;
    }
    let Some(symptom) = symptom else {
        reversal::recover(input, &facts, &mut decision);
        return decision;
    };
    let waiting = facts
        .waiting(input, &symptom)
        .or_else(|| verification.waiting(input.spec));
    if let Some(why) = waiting {
        decision.outcome = Outcome::Waiting(why);
        return decision;
    }
    ladder::climb(input, &symptom, verification.improved, &mut decision);
    decision
}

/// How long from `then` to `now` (zero if `then` is in the future).
fn duration_since(now: Timestamp, then: &Time) -> Duration {
    let seconds = (now - then.0).total(jiff::Unit::Second).unwrap_or(0.0);
    Duration::from_secs_f64(seconds.max(0.0))
}

#[cfg(test)]
mod tests;
