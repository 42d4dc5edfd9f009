//! The conditions of the next status: each one's status, reason and message, from the
//! evaluation, the decision and the status `engine::record` made.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{ReportInput, condition_reasons, reasons, set_condition, slo_met_reasons, window_name};
use crate::{
    api::{AtRisk, Incident, InvoiceServiceSpec, InvoiceServiceStatus, condition_types},
    engine::{Attention, Decision, Gate},
    evaluate::Evaluation,
};

/// A condition's status, reason and message.
type Judged<'a> = (&'static str, &'a str, String);

/// Every condition, in the order of [`condition_types::ALL`], each keeping its previous
/// `lastTransitionTime` unless its status changes.
pub(super) fn conditions(input: &ReportInput<'_>, next: &InvoiceServiceStatus) -> Vec<Condition> {
    let previous = &input.previous.conditions;
    let mut conditions = previous.clone();
    let mut set = |type_: &str, (status, reason, message): Judged<'_>| {
        set_condition(
            &mut conditions,
            previous,
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation: input.generation,
                last_transition_time: Time(input.now),
            },
        );
    };
    set(
        condition_types::READY,
        (
            "True",
            condition_reasons::RECONCILED,
            "the spec is valid and the operator manages the service".to_owned(),
        ),
    );
    set(
        condition_types::SIGNALS_TRUSTED,
        signals_trusted(input.evaluation),
    );
    // SLOMet is the objective over its window, which is what an SLO is: a service that burnt
    // its budget an hour ago misses its objective while it serves well again, and a burn that
    // has just started has not missed it yet. A firing burn-rate alert is said separately
    // (reason BudgetBurning) so that "met" never hides a budget going fast. Messages carry only
    // numbers `status.slo` already shows at the same rounding, so they cause no extra writes.
    set(
        condition_types::SLO_MET,
        slo_met_condition(input.spec, input.evaluation),
    );
    set(
        condition_types::REMEDIATION_ALLOWED,
        remediation_allowed(input, next),
    );
    set(condition_types::READ_ONLY, read_only(next));
    set(condition_types::ZONE_FAILOVER, zone_failover(next));
    set(
        condition_types::NEEDS_ATTENTION,
        needs_attention(&input.decision.attention, at_risk(next)),
    );
    set(condition_types::CONTESTED, contested(next));
    conditions.sort_by_key(|condition| {
        condition_types::ALL
            .iter()
            .position(|type_| *type_ == condition.type_)
            .unwrap_or(usize::MAX)
    });
    conditions
}

/// `Contested`: True while a lever lost in a tug of war is left alone, naming who holds it.
fn contested(next: &InvoiceServiceStatus) -> Judged<'static> {
    let held: Vec<String> = next
        .held_since
        .iter()
        .filter_map(|(key, since)| {
            let (lever, manager) = crate::foreign::contested::parse(key)?;
            let until = since.0
                + jiff::SignedDuration::try_from(crate::foreign::CONTESTED_FOR).unwrap_or_default();
            Some(format!(
                "{manager} sets {lever} back when the operator writes it (left alone until {until})"
            ))
        })
        .collect();
    if held.is_empty() {
        (
            "False",
            condition_reasons::NOT_CONTESTED,
            "no other controller has reverted the operator's writes".to_owned(),
        )
    } else {
        (
            "True",
            condition_reasons::REVERTED_BY_ANOTHER_MANAGER,
            format!(
                "{}; let the operator own those fields (README: Beside autoscalers and GitOps)",
                held.join("; ")
            ),
        )
    }
}

/// `SignalsTrusted`: False with the first unknown signal's reason, every one listed.
fn signals_trusted(evaluation: &Evaluation) -> Judged<'_> {
    let Some((_, reason)) = evaluation.untrusted.iter().next() else {
        return (
            "True",
            condition_reasons::ALL_SIGNALS_KNOWN,
            "every signal has a fresh value".to_owned(),
        );
    };
    let unknown: Vec<String> = evaluation
        .untrusted
        .iter()
        .map(|(signal, reason)| format!("{signal}: {reason}"))
        .collect();
    (
        "False",
        reason.as_str(),
        format!(
            "unknown signals never trigger actions ({})",
            unknown.join(", ")
        ),
    )
}

/// `RemediationAllowed`: False with the gate that is closed (pause and storm first), or the
/// API server's refusal.
fn remediation_allowed<'a>(input: &ReportInput<'_>, next: &'a InvoiceServiceStatus) -> Judged<'a> {
    // A refusal by the API server (a PodDisruptionBudget) is named from the moment it happens
    // through the cooldown that follows it, rather than as a plain Cooldown.
    let refused = refused_recently(next, input.decision);
    match (input.decision.blocked(), input.paused, input.storm, refused) {
        (_, true, _, _) => (
            "False",
            Gate::Paused.as_str(),
            "remediation is paused".to_owned(),
        ),
        (_, _, true, _) => (
            "False",
            Gate::StormGate.as_str(),
            "too many InvoiceServices are unhealthy at once: the cause is probably shared \
             (Prometheus, network, the cluster); actions are frozen cluster-wide until it passes"
                .to_owned(),
        ),
        (_, _, _, Some((refused_by, message))) => ("False", refused_by, message),
        (Some(blocked), _, _, None) => (
            "False",
            blocked.gate.as_str(),
            format!("{} blocked: {}", blocked.kind.as_str(), blocked.detail),
        ),
        (None, false, false, None) => (
            "True",
            condition_reasons::NO_GATE_CLOSED,
            "the operator may act".to_owned(),
        ),
    }
}

/// The refusal to report in `RemediationAllowed`: the last action was refused by the API
/// server, and this reconcile either recorded it or is waiting out the cooldown after it.
/// Returns the condition reason (who refused) and message.
fn refused_recently<'a>(
    next: &'a InvoiceServiceStatus,
    decision: &Decision,
) -> Option<(&'a str, String)> {
    use crate::engine::refusal_evidence::{MESSAGE, REFUSED_BY};
    let last = next
        .last_action
        .as_ref()
        .filter(|last| last.outcome == crate::api::ActionOutcome::Refused)?;
    let just_refused = decision.action().is_some();
    let cooling_down = decision
        .blocked()
        .is_some_and(|blocked| blocked.gate == Gate::Cooldown);
    if !just_refused && !cooling_down {
        return None;
    }
    let refused_by = last
        .evidence
        .get(REFUSED_BY)
        .map_or(condition_reasons::REFUSED, String::as_str);
    let message = last.evidence.get(MESSAGE).map_or("", String::as_str);
    Some((
        refused_by,
        format!(
            "{} {} refused by the API server: {message}; the ladder moves past it after the cooldown",
            last.action.as_str(),
            last.target
        ),
    ))
}

/// `ReadOnly`: whether the operator holds the app in read-only mode.
fn read_only(next: &InvoiceServiceStatus) -> Judged<'static> {
    match &next.read_only {
        Some(_) => (
            "True",
            condition_reasons::ENTERED_BY_OPERATOR,
            "the app serves reads only while its database recovers".to_owned(),
        ),
        None => (
            "False",
            condition_reasons::READ_WRITE,
            "the app serves reads and writes".to_owned(),
        ),
    }
}

/// `ZoneFailover`: the zone drained, if any.
fn zone_failover(next: &InvoiceServiceStatus) -> Judged<'static> {
    match &next.failover {
        Some(failover) => (
            "True",
            condition_reasons::ZONE_FAILED_OVER,
            match (&failover.canary, &failover.waiting) {
                (None, None) => format!(
                    "zone {} is drained; its capacity runs in the other zones",
                    failover.zone
                ),
                (None, Some(waiting)) => format!(
                    "zone {} is drained; its capacity runs in the other zones; {waiting}",
                    failover.zone
                ),
                (Some(_), waiting) => format!(
                    "zone {} is failed over, a fail-back canary runs in it; {}",
                    failover.zone,
                    waiting.as_deref().unwrap_or("it is being judged")
                ),
            },
        ),
        None => (
            "False",
            condition_reasons::ALL_ZONES_SERVING,
            "no zone is failed over".to_owned(),
        ),
    }
}

/// The open incident while it is at risk of missing its RTO and not recovered.
pub(super) fn at_risk(next: &InvoiceServiceStatus) -> Option<(&Incident, &AtRisk)> {
    let open = next.incidents.as_ref()?.open.as_ref()?;
    let at_risk = open.at_risk.as_ref()?;
    open.recovered_at.is_none().then_some((open, at_risk))
}

/// `NeedsAttention`: an incident about to miss its RTO first (it has a deadline; the message
/// names the other causes), then the first thing for a human, if any.
fn needs_attention(
    attention: &[Attention],
    at_risk: Option<(&Incident, &AtRisk)>,
) -> Judged<'static> {
    if let Some((incident, at_risk)) = at_risk {
        let others: Vec<&str> = attention
            .iter()
            .map(|attention| attention_condition(attention).0)
            .collect();
        let mut message = format!(
            "incident {} may miss its RTO {} (it passes at {}): {}",
            incident.number,
            incident.rto.as_deref().unwrap_or_default(),
            at_risk.deadline.0,
            at_risk.reason
        );
        if !others.is_empty() {
            message.push_str(&format!("; also {}", others.join(", ")));
        }
        return ("True", reasons::RECOVERY_OBJECTIVE_AT_RISK, message);
    }
    match attention.first() {
        None => (
            "False",
            condition_reasons::NOTHING_TO_DO,
            "nothing needs a human".to_owned(),
        ),
        Some(attention) => {
            let (reason, message) = attention_condition(attention);
            ("True", reason, message.to_owned())
        }
    }
}

/// Reason and message of `NeedsAttention=True` for `attention`.
pub(super) fn attention_condition(attention: &Attention) -> (&'static str, &'static str) {
    match attention {
        Attention::LadderExhausted => (
            reasons::LADDER_EXHAUSTED,
            "every remediation rung was tried and the service did not recover",
        ),
        Attention::ClientErrorSpike { .. } => (
            reasons::CLIENT_ERROR_SPIKE,
            "many requests fail with 4xx: a dependency outside the service (firewall rule, credentials); no restart fixes it",
        ),
        Attention::CertificateExpiring { .. } => (
            reasons::CERTIFICATE_EXPIRING,
            "the serving certificate expires soon",
        ),
    }
}

/// Status, reason and message of the `SLOMet` condition: the objectives over the SLO window
/// (see [`Evaluation::slo_met_over_window`]), and whether a burn-rate alert fires.
fn slo_met_condition(spec: &InvoiceServiceSpec, evaluation: &Evaluation) -> Judged<'static> {
    let burning = budget_burning(evaluation);
    let with_burning = |message: String| match &burning {
        Some(burning) => format!("{message}; {burning}"),
        None => message,
    };
    match evaluation.slo_met_over_window() {
        Some(true) => objectives_met(spec, burning.as_deref()),
        Some(false) => (
            "False",
            slo_met_reasons::OBJECTIVE_MISSED,
            with_burning(objectives_missed(spec, evaluation)),
        ),
        None => (
            "Unknown",
            slo_met_reasons::INSUFFICIENT_DATA,
            with_burning(insufficient_data(spec, evaluation)),
        ),
    }
}

/// `SLOMet=True`: within the objectives, or met while the budget burns.
fn objectives_met(spec: &InvoiceServiceSpec, burning: Option<&str>) -> Judged<'static> {
    let availability = &spec.slos.availability;
    let window = &availability.window;
    match burning {
        Some(burning) => (
            "True",
            slo_met_reasons::BUDGET_BURNING,
            format!("objectives met over {window}, but {burning}"),
        ),
        None => (
            "True",
            slo_met_reasons::WITHIN_OBJECTIVES,
            format!(
                "availability over {window} at or above {}%{}",
                availability.objective,
                spec.slos
                    .latency
                    .as_ref()
                    .map(|latency| format!(
                        ", p{} latency under {}",
                        latency.percentile, latency.threshold
                    ))
                    .unwrap_or_default()
            ),
        ),
    }
}

/// The objectives missed over the window, with the numbers.
fn objectives_missed(spec: &InvoiceServiceSpec, evaluation: &Evaluation) -> String {
    let availability = &spec.slos.availability;
    let window = &availability.window;
    let mut missed = Vec::new();
    if let (Ok(measured), Ok(remaining)) =
        (evaluation.availability, evaluation.error_budget_remaining)
        && remaining < 0.0
    {
        missed.push(format!(
            "availability {measured:.2}% over {window}, objective {}%; error budget \
             remaining {remaining:.2} (1 untouched, 0 spent)",
            availability.objective
        ));
    }
    if let (Some(latency), Some(true), Ok(seconds)) = (
        &spec.slos.latency,
        evaluation.latency_breach,
        evaluation.latency_seconds,
    ) {
        missed.push(format!(
            "p{} latency {seconds:.2}s now, threshold {}",
            latency.percentile, latency.threshold
        ));
    }
    missed.join("; ")
}

/// The figures unknown for judging the objectives, and why.
fn insufficient_data(spec: &InvoiceServiceSpec, evaluation: &Evaluation) -> String {
    let unknown: Vec<String> = [
        ("availability", evaluation.error_budget_remaining.err()),
        (
            "latency",
            evaluation
                .latency_slo
                .then_some(evaluation.latency_seconds.err())
                .flatten(),
        ),
    ]
    .into_iter()
    .filter_map(|(figure, reason)| Some(format!("{figure}: {}", reason?)))
    .collect();
    format!(
        "not enough trusted signal to judge the objectives over {} ({})",
        spec.slos.availability.window,
        unknown.join(", ")
    )
}

/// "the error budget is burning: ..." naming every firing burn-rate alert, or `None`. Names
/// the windows and thresholds, not the rates, so the message is steady while an alert fires.
fn budget_burning(evaluation: &Evaluation) -> Option<String> {
    let firing: Vec<String> = evaluation
        .firing_burn_rates()
        .map(|burn| {
            format!(
                "the {:?} alert over {} and {} fires (both above {}x the budget rate)",
                burn.severity,
                window_name(burn.long),
                window_name(burn.short),
                burn.factor
            )
        })
        .collect();
    (!firing.is_empty()).then(|| format!("the error budget is burning: {}", firing.join(", ")))
}
