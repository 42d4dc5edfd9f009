//! Reconcile: the driver of the pipeline for one InvoiceService. Each step is one call, marked
//! `(client)` where it talks to the API server or Prometheus and `(no client)` where it is pure
//! or reads the caches only:
//!
//! ```text
//! finalizer (client) -> validate, pre-flight (client: report) -> measure (client in the
//! per-service query mode) -> observe (no client) -> evaluate (no client) -> storm gate (no
//! client) -> adopt foreign changes (no client) -> decide (no client) -> act (client) ->
//! record, report (no client) -> status and Events (client)
//! ```

use std::{collections::BTreeMap, sync::Arc};

use jiff::Timestamp;
use kube::{
    ResourceExt,
    runtime::{controller::Action, reflector::ObjectRef},
};
use tracing::{Instrument, debug, info_span, warn};

use super::{
    Context, Error, FAIL_BACK_ANNOTATION, PAUSED_ANNOTATION, finalize, fleet,
    observe::{autoscaler_floors, observe},
    preflight, remediate,
    write::{foreign_change_event, patch_status, publish},
};
use crate::{
    api::{
        InvoiceService, InvoiceServiceSpec, InvoiceServiceStatus, RemediationMode, condition_types,
        validate,
    },
    engine::{self, Decision, DecisionInput},
    evaluate::{Evaluation, evaluate},
    foreign::{self, ForeignChange},
    report,
    signals::{Observation, UnknownReason},
    storm::in_trouble,
};

/// Reconciles one InvoiceService.
pub async fn reconcile(
    service: Arc<InvoiceService>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let span = info_span!("reconcile", namespace = %service.namespace().unwrap_or_default(), name = %service.name_any());
    let key = ObjectRef::from_obj(service.as_ref());
    // After a failed reconcile, the fleet tick and every watch event would run the same
    // failing reconcile again at once: wait out the backoff instead.
    if let Some(wait) = context.memory.backing_off(&key) {
        debug!(parent: &span, wait_ms = wait.as_millis(), "backing off after failed reconciles");
        context.fleet_cycle_reconciled(&key);
        return Ok(Action::requeue(wait));
    }
    let result = reconcile_inner(service, Arc::clone(&context))
        .instrument(span)
        .await;
    if result.is_ok() {
        context.memory.succeeded(&key);
    }
    context.fleet_cycle_reconciled(&key);
    result
}

async fn reconcile_inner(
    service: Arc<InvoiceService>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile_timer();
    // Only the leader observes and writes: followers keep their caches warm and wait.
    if !context.leads() {
        return Ok(requeue(&service.spec));
    }
    // Deleted: undo what the operator changed, then let the object go (client).
    if service.metadata.deletion_timestamp.is_some() {
        return finalize::finalize(&context, &service).await;
    }
    // Not yet holding the finalizer: take it before anything could need undoing (client).
    finalize::ensure_finalizer(&context, &service).await?;
    let now = Timestamp::now();
    let previous = context.freshest_status(&service);
    // A spec that is invalid, or that the cluster refutes (a missing Deployment or zone, a
    // Deployment an older InvoiceService claims), is reported and never acted on (client).
    if let Some(action) = refuse(&context, &service, &previous, now).await? {
        return Ok(action);
    }
    // Measure (client only in the per-service query mode) and observe (no client).
    let Some((metrics, failed_in_a_row)) = fleet::measure(&context, &service).await else {
        // Deciding (and reporting) on no measurements at all would flip every service to
        // untrusted signals on each restart or leader change; the first fleet tick, a moment
        // away, reconciles everyone.
        debug!("waiting for the first fleet evaluation");
        return Ok(requeue(&service.spec));
    };
    let mut observation = observe(&context.caches, &service, metrics, now);
    autoscaler_floors(
        &context.caches,
        &service,
        previous.scaled_out.as_ref(),
        &mut observation.deployments,
    );
    // Evaluate (no client).
    let spec = effective_spec(&context, &service);
    let evaluation = evaluate(&spec, &observation, context.settings.detection_window);
    if hold_through_query_blip(&evaluation.untrusted, &previous, failed_in_a_row) {
        debug!(
            unknown = evaluation.untrusted.len(),
            "fleet queries failed once; keeping the status until the next evaluation"
        );
        return Ok(requeue(&service.spec));
    }
    let storm = context.track_health(&service, &evaluation, &previous);
    // Adopt what someone else changed (no client), decide (no client), act (client).
    let adoption = Adoption::of(&spec, &previous, &observation, now);
    let status = adoption.status(&previous);
    let decision = decide(
        &spec,
        &service,
        &evaluation,
        status,
        &observation,
        storm,
        now,
    );
    let acted = remediate::carry_out(
        &context,
        &service,
        &decision,
        status,
        &observation.deployments,
        now,
    )
    .await?;
    // Record and report (no client), then write what changed (client).
    let step = Step {
        spec: &spec,
        observed: &previous,
        status,
        observation: &observation,
        evaluation: &evaluation,
        decision: &decision,
        storm,
        now,
    };
    report_and_write(&context, &service, step, acted, &adoption.changes).await?;
    Ok(requeue(&spec))
}

/// The validation and pre-flight refusals: `Some` when the service must not be acted on.
async fn refuse(
    context: &Context,
    service: &InvoiceService,
    previous: &InvoiceServiceStatus,
    now: Timestamp,
) -> Result<Option<Action>, Error> {
    if let Some(action) = refuse_invalid(context, service, previous, now).await? {
        return Ok(Some(action));
    }
    let generation = service.metadata.generation;
    preflight::refuse(context, service, previous, generation, now).await
}

/// Reports an invalid spec (status and a Warning Event, once); permanent until the spec
/// changes. `None` for a valid spec.
async fn refuse_invalid(
    context: &Context,
    service: &InvoiceService,
    previous: &InvoiceServiceStatus,
    now: Timestamp,
) -> Result<Option<Action>, Error> {
    let problems = validate(&service.spec);
    if problems.is_empty() {
        return Ok(None);
    }
    let generation = service.metadata.generation;
    let (status, event) = report::report_invalid(previous, &problems, generation, now);
    if status != *previous {
        patch_status(context, service, &status).await?;
    }
    if let Some(event) = event {
        warn!(problems = %event.note, "invalid spec");
        publish(context, service, &event).await;
    }
    Ok(Some(Action::await_change()))
}

/// The spec as acted on: DryRun everywhere under `--force-dry-run`.
fn effective_spec(context: &Context, service: &InvoiceService) -> InvoiceServiceSpec {
    let mut spec = service.spec.clone();
    if context.settings.force_dry_run {
        spec.remediation.mode = RemediationMode::DryRun;
    }
    spec
}

impl Context {
    /// Feeds the service's health to the storm gate and the detection clock; true while the
    /// gate is closed.
    fn track_health(
        &self,
        service: &InvoiceService,
        evaluation: &Evaluation,
        previous: &InvoiceServiceStatus,
    ) -> bool {
        let key = ObjectRef::from_obj(service);
        let unhealthy =
            evaluation.slo_met_now() == Some(false) || evaluation.unhealthy_pods().next().is_some();
        let storm = self.storm_observe(key.clone(), in_trouble(evaluation, previous));
        self.memory.unhealthy(&key, unhealthy);
        storm
    }
}

/// Changes someone else made to what the operator manages (a person's `kubectl scale`
/// mid-surge), adopted into the status the decision is made on, never reverted.
struct Adoption {
    changes: Vec<ForeignChange>,
    /// The status with the changes adopted; `None` when there are none (the usual case: the
    /// status as read is used, not a copy).
    adopted: Option<InvoiceServiceStatus>,
}

impl Adoption {
    fn of(
        spec: &InvoiceServiceSpec,
        previous: &InvoiceServiceStatus,
        observation: &Observation,
        now: Timestamp,
    ) -> Self {
        let changes = foreign::detect(
            spec,
            previous,
            &observation.deployments,
            observation.mode_value.as_deref(),
            observation.mode_set_by.as_ref(),
            now,
        );
        let adopted = (!changes.is_empty()).then(|| {
            let mut adopted = previous.clone();
            foreign::adopt(&mut adopted, &changes, now);
            adopted
        });
        Self { changes, adopted }
    }

    fn status<'a>(&'a self, previous: &'a InvoiceServiceStatus) -> &'a InvoiceServiceStatus {
        self.adopted.as_ref().unwrap_or(previous)
    }
}

fn decide(
    spec: &InvoiceServiceSpec,
    service: &InvoiceService,
    evaluation: &Evaluation,
    status: &InvoiceServiceStatus,
    observation: &Observation,
    storm: bool,
    now: Timestamp,
) -> Decision {
    engine::decide(&DecisionInput {
        spec,
        evaluation,
        status,
        deployments: &observation.deployments,
        now,
        paused_by_annotation: annotation_true(service, PAUSED_ANNOTATION),
        storm,
        manual_fail_back: annotation_true(service, FAIL_BACK_ANNOTATION),
    })
}

/// What the reconcile has worked out by the time it reports.
struct Step<'a> {
    spec: &'a InvoiceServiceSpec,
    /// The status as read: the reference for "write only on a change".
    observed: &'a InvoiceServiceStatus,
    /// The status decided on (with foreign changes adopted).
    status: &'a InvoiceServiceStatus,
    observation: &'a Observation,
    evaluation: &'a Evaluation,
    decision: &'a Decision,
    storm: bool,
    now: Timestamp,
}

/// Records the decision and its outcome, reports them, and writes the status (when it changed)
/// and the Events.
async fn report_and_write(
    context: &Context,
    service: &InvoiceService,
    step: Step<'_>,
    acted: remediate::Acted,
    foreign_changes: &[ForeignChange],
) -> Result<(), Error> {
    remediate::publish_burn_rates(context, service, step.evaluation);
    let deployments = &step.observation.deployments;
    let mut recorded = engine::record(
        step.status,
        step.decision,
        deployments,
        step.now,
        acted.applied,
    );
    if let Some((by, reason)) = &acted.refusal {
        engine::note_refusal(&mut recorded, by, reason);
    }
    // An action just taken waits for its verdict: the service counts as in trouble from now
    // on, before the next reconcile of another service consults the gate.
    context.storm_observe(
        ObjectRef::from_obj(service),
        in_trouble(step.evaluation, &recorded),
    );
    let paused = step.spec.remediation.paused || annotation_true(service, PAUSED_ANNOTATION);
    let (status, events) = report::report(report::ReportInput {
        spec: step.spec,
        generation: service.metadata.generation,
        previous: step.status,
        recorded,
        evaluation: step.evaluation,
        decision: step.decision,
        applied: acted.applied,
        refusal: acted.refusal.map(|(_, reason)| reason),
        paused,
        storm: step.storm,
        now: step.now,
    });
    remediate::publish_state(context, service, step.spec, &status, paused);
    remediate::count_incidents(context, step.status, &status);
    // Quiet steady state: write only when something a user would see changed.
    if status != *step.observed {
        patch_status(context, service, &status).await?;
    }
    for change in foreign_changes {
        publish(context, service, &foreign_change_event(service, change)).await;
    }
    for event in &events {
        publish(context, service, event).await;
    }
    Ok(())
}

/// Whether a reconcile should neither decide nor write because of one failed round of fleet
/// queries: the latest fleet evaluation is the first in a row with failed queries, the
/// service's signals were trusted until now, and every unknown signal is unknown only because
/// a query failed or Prometheus did not answer. Reporting that blip would cost every service
/// in the fleet two status writes and an Event (untrusted, then trusted again), and at fleet
/// scale a slow Prometheus turns that into thousands of writes per interval, which slow it
/// further. Nothing acts on the unknown signals either way; if the queries fail again the
/// next interval, `SignalsTrusted=False` is reported as usual.
pub(super) fn hold_through_query_blip(
    untrusted: &BTreeMap<&'static str, UnknownReason>,
    previous: &InvoiceServiceStatus,
    failed_in_a_row: u32,
) -> bool {
    failed_in_a_row == 1
        && !untrusted.is_empty()
        && untrusted.values().all(|reason| {
            matches!(
                reason,
                UnknownReason::PrometheusUnreachable | UnknownReason::QueryFailed
            )
        })
        && previous.conditions.iter().any(|condition| {
            condition.type_ == condition_types::SIGNALS_TRUSTED && condition.status == "True"
        })
}

pub(super) fn requeue(spec: &InvoiceServiceSpec) -> Action {
    Action::requeue(spec.signals.interval.get())
}

/// Whether the annotation `key` of `service` is `"true"` (the paused and fail-back switches).
pub fn annotation_true(service: &InvoiceService, key: &str) -> bool {
    service
        .annotations()
        .get(key)
        .is_some_and(|value| value == "true")
}

/// After a failed reconcile: counted, logged, and retried after a backoff that grows while
/// the failures last.
pub(super) fn error_policy(
    service: Arc<InvoiceService>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    warn!(
        name = %service.name_any(),
        error = error as &dyn std::error::Error,
        "reconcile failed"
    );
    context
        .metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            error: error.metric_label(),
        })
        .inc();
    Action::requeue(
        context
            .memory
            .failed(&ObjectRef::from_obj(service.as_ref())),
    )
}
