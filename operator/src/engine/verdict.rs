//! The verdict on the last action: whether it helped, judged only on signals measured after
//! it, and whether the next action must wait while it is being verified.

use std::time::Duration;

use super::{DecisionInput, duration_since, facts::Symptom};
use crate::api::{ActionOutcome, InvoiceServiceSpec, LadderStatus};

/// Where the verification of the last action stands.
pub(super) struct Verification {
    /// The verdict on the pending last action, when it is due now.
    pub verdict: Option<ActionOutcome>,
    /// The incident's signal is lower than when the last rung was taken.
    pub improved: bool,
    /// The pending last action is still inside its verify window.
    in_verify_window: bool,
    /// The verify window in effect: `verifyWindow`, at least one detection window.
    verify_for: Duration,
}

impl Verification {
    /// Judges the pending last action on `symptom` (none: nothing is wrong, or nothing known).
    pub fn of(input: &DecisionInput<'_>, symptom: Option<&Symptom>, healthy: bool) -> Self {
        let evaluation = input.evaluation;
        let pending = input
            .status
            .last_action
            .as_ref()
            .filter(|action| action.outcome == ActionOutcome::Pending);
        let since = pending.map(|action| duration_since(input.now, &action.at));
        // An action is judged on signals measured after it: never before one detection window
        // has passed, whatever `verifyWindow` says. A shorter verify window would compare a rate
        // still made mostly of samples from before the action (a scale-out "not helping" while
        // the 1-minute latency still fills with the surge it answered).
        let verify_for = input
            .spec
            .remediation
            .verify_window
            .get()
            .max(evaluation.detection_window);
        let in_verify_window = since.is_some_and(|since| since < verify_for);
        let improved = improved(input.status.ladder.as_ref(), symptom);
        // Not even recovery is judged within one detection window of the action: the rates that
        // say "healthy" then are mostly samples from before it (a shared outage that ended on its
        // own made a RolloutRestart look helpful 10 s after it).
        let measured_after = since.is_some_and(|since| since >= evaluation.detection_window);
        // Recovery must be seen, not assumed: right after a rollout the new pods have no
        // samples yet, and silence is not health.
        let verdict = if pending.is_none() {
            None
        } else if symptom.is_none() && healthy && measured_after {
            Some(ActionOutcome::Helped)
        } else if !in_verify_window {
            Some(if improved {
                ActionOutcome::Helped
            } else {
                ActionOutcome::NoEffect
            })
        } else {
            None
        };
        Self {
            verdict,
            improved,
            in_verify_window,
            verify_for,
        }
    }

    /// Why the next action waits: the last one is still being verified.
    pub fn waiting(&self, spec: &InvoiceServiceSpec) -> Option<String> {
        if !self.in_verify_window {
            return None;
        }
        let verify_window = &spec.remediation.verify_window;
        let verifying = if verify_window.get() >= self.verify_for {
            verify_window.to_string()
        } else {
            format!("{}s (one detection window)", self.verify_for.as_secs())
        };
        Some(format!(
            "verifying the last action for {verifying} before the next"
        ))
    }
}

/// Whether the incident's signal is lower than when the last rung was taken.
fn improved(ladder: Option<&LadderStatus>, symptom: Option<&Symptom>) -> bool {
    let (Some(ladder), Some(symptom)) = (ladder, symptom) else {
        return symptom.is_none();
    };
    let (signal, value) = symptom.signal();
    if ladder.signal.as_deref() != Some(signal) {
        return false;
    }
    ladder
        .value
        .as_deref()
        .and_then(|before| before.parse::<f64>().ok())
        .is_some_and(|before| value < before)
}
