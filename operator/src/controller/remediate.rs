//! Act, from the controller's side: carries out the engine's decision with the client
//! (`crate::act` does the API calls), writes an intent down first for actions that set
//! replicas, and counts every outcome in the metrics. IO: the action's API calls and the
//! intent's status write.

use jiff::Timestamp;
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use tracing::{debug, info, warn};

use super::{Context, Error, write::patch_status};
use crate::{
    act::{ActOutcome, act},
    api::{
        Incident, InvoiceService, InvoiceServiceSpec, InvoiceServiceStatus, Phase, RemediationMode,
        condition_types,
    },
    engine::{self, Decision, PlannedAction},
    evaluate::Evaluation,
    incident,
    metrics::{
        BurnRateLabels, GateLabels, RemediationLabels, RtoLabels, ServiceState, SymptomLabels,
    },
    report,
    signals::DeploymentState,
};

/// What became of the decision's action.
#[derive(Clone, Debug)]
pub(super) struct Acted {
    /// False when the API server refused the action (it is recorded as refused).
    pub applied: bool,
    /// Who refused it and why.
    pub refusal: Option<(&'static str, String)>,
}

impl Acted {
    const NOTHING_REFUSED: Self = Self {
        applied: true,
        refusal: None,
    };
}

/// Carries out the decision's action: reports it in DryRun, otherwise records the intent and
/// acts. An action that failed is an error and nothing is recorded: the same decision is made
/// again after the backoff.
pub(super) async fn carry_out(
    context: &Context,
    service: &InvoiceService,
    decision: &Decision,
    status: &InvoiceServiceStatus,
    deployments: &[DeploymentState],
    now: Timestamp,
) -> Result<Acted, Error> {
    let acted = match &decision.outcome {
        engine::Outcome::Act {
            action,
            dry_run: true,
        } => {
            let kind = action.kind().as_str();
            info!(action = kind, reason = %action.reason, "would remediate (DryRun)");
            count(context, kind, "would", "DryRun");
            Acted::NOTHING_REFUSED
        }
        engine::Outcome::Act {
            action,
            dry_run: false,
        } => {
            info!(action = action.kind().as_str(), target = %action.step.describe(), reason = %action.reason, "remediating");
            // An action that sets replicas is written down before its first write, so a
            // restart or a new leader completes it from status (engine::resume).
            if let Some(intent) = engine::record_intent(status, decision, deployments, now) {
                patch_status(context, service, &intent).await?;
            }
            act_and_count(context, service, action, now).await?
        }
        _ => Acted::NOTHING_REFUSED,
    };
    count_blocked(context, decision);
    Ok(acted)
}

async fn act_and_count(
    context: &Context,
    service: &InvoiceService,
    action: &PlannedAction,
    now: Timestamp,
) -> Result<Acted, Error> {
    let mode = "Enforce";
    let kind = action.kind().as_str();
    match act(&context.client, service, action, now).await {
        Ok(ActOutcome::Applied) => {
            count(context, kind, "applied", mode);
            if let Some(first_seen) = context.memory.detected(&ObjectRef::from_obj(service)) {
                context
                    .metrics
                    .detection_to_action
                    .observe(first_seen.elapsed().as_secs_f64());
            }
            Ok(Acted::NOTHING_REFUSED)
        }
        Ok(ActOutcome::Refused { by, reason }) => {
            warn!(action = kind, %reason, "action refused by the api server");
            count(context, kind, "refused", mode);
            Ok(Acted {
                applied: false,
                refusal: Some((by, reason)),
            })
        }
        Err(source) => {
            count(context, kind, "failed", mode);
            Err(Error::Act {
                name: service.name_any(),
                source,
            })
        }
    }
}

/// One more remediation of `action` with `result` in `mode`.
pub(super) fn count(
    context: &Context,
    action: &'static str,
    result: &'static str,
    mode: &'static str,
) {
    context
        .metrics
        .remediations
        .get_or_create(&RemediationLabels {
            action,
            result,
            mode,
        })
        .inc();
}

fn count_blocked(context: &Context, decision: &Decision) {
    if let Some(blocked) = decision.blocked() {
        context
            .metrics
            .blocked
            .get_or_create(&GateLabels {
                gate: blocked.gate.as_str(),
            })
            .inc();
        debug!(gate = blocked.gate.as_str(), detail = %blocked.detail, "action blocked");
    }
}

/// Publishes the service's burn rates per window.
pub(super) fn publish_burn_rates(
    context: &Context,
    service: &InvoiceService,
    evaluation: &Evaluation,
) {
    for (window, rate) in report::burn_rates(evaluation) {
        context
            .metrics
            .burn_rates
            .get_or_create(&BurnRateLabels {
                namespace: service.namespace().unwrap_or_default(),
                service: service.name_any(),
                window,
            })
            .set(rate);
    }
}

/// Publishes the service's state series from the status just reported (see
/// `metrics::ServiceState`).
pub(super) fn publish_state(
    context: &Context,
    service: &InvoiceService,
    spec: &InvoiceServiceSpec,
    status: &InvoiceServiceStatus,
    paused: bool,
) {
    let condition_true = |type_: &str| {
        status
            .conditions
            .iter()
            .any(|condition| condition.type_ == type_ && condition.status == "True")
    };
    let ratio = |percent: Option<&String>| {
        percent
            .and_then(|value| value.parse::<f64>().ok())
            .map(|value| value / 100.0)
    };
    let slo = status.slo.as_ref();
    let ladder = status.ladder.as_ref();
    let rung = ladder
        .and_then(|ladder| ladder.rung)
        .and_then(|rung| {
            let position = spec.effective_ladder().iter().position(|r| *r == rung)?;
            i64::try_from(position + 1).ok()
        })
        .unwrap_or(0);
    let mode = match (paused, &spec.remediation.mode) {
        (true, _) => "Paused",
        (false, RemediationMode::DryRun) => "DryRun",
        (false, RemediationMode::Enforce) => "Enforce",
    };
    let phase = status.phase.unwrap_or(Phase::Unknown).as_str();
    context.metrics.service_state.set(
        &service.namespace().unwrap_or_default(),
        &service.name_any(),
        &ServiceState {
            phase,
            mode,
            needs_attention: condition_true(condition_types::NEEDS_ATTENTION),
            signals_trusted: condition_true(condition_types::SIGNALS_TRUSTED),
            error_budget_remaining: ratio(slo.and_then(|slo| slo.error_budget_remaining.as_ref())),
            availability: ratio(slo.and_then(|slo| slo.availability.as_ref())),
            ladder_rung: rung,
            ladder_exhausted: ladder.is_some_and(|ladder| ladder.exhausted),
            incident_open: status
                .incidents
                .as_ref()
                .is_some_and(|incidents| incidents.open.is_some()),
        },
    );
}

/// Counts the incident opened or closed between `previous` and `next`: by symptom, the time
/// to recover, and the RTO verdict.
pub(super) fn count_incidents(
    context: &Context,
    previous: &InvoiceServiceStatus,
    next: &InvoiceServiceStatus,
) {
    let metrics = &context.metrics;
    let first_symptom = |incident: &Incident| {
        incident
            .symptoms
            .first()
            .map_or("Unknown", |symptom| symptom.as_str())
    };
    let (opened, closed) = incident::counted(previous.incidents.as_ref(), next.incidents.as_ref());
    if let Some(incident) = opened {
        metrics
            .incidents_opened
            .get_or_create(&SymptomLabels {
                symptom: first_symptom(incident),
            })
            .inc();
    }
    if let Some(incident) = closed {
        metrics
            .incidents_closed
            .get_or_create(&SymptomLabels {
                symptom: first_symptom(incident),
            })
            .inc();
        if let Some(recovered) = incident::time_to_recover(incident) {
            metrics.incident_recovery.observe(recovered.as_secs_f64());
        }
        if let Some(met) = incident.rto_met {
            metrics
                .incident_rto
                .get_or_create(&RtoLabels {
                    result: if met { "met" } else { "missed" },
                })
                .inc();
        }
    }
}
