//! Decide: given the spec, the evaluation, the status (the operator's memory) and the clock,
//! choose at most one action or reversal, with its reason and evidence — or none, with the
//! gate that blocked it. Also [`record`], which folds a decision into the next status, and
//! [`record_intent`], the status written before an action that sets replicas (see [`resume`]).
//! Pure: the same inputs always give the same decision; nothing here does IO or reads the
//! clock.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{
        ActionKind, ActionOutcome, ActionRecord, Evidence, FailBackMode, FailoverState,
        HISTORY_LIMIT, InFlightAction, InvoiceServiceSpec, InvoiceServiceStatus, LadderStatus,
        ReadOnlyState, RemediationMode, Rung, ScaledOutState,
    },
    evaluate::{Evaluation, PodProblem},
    signals::DeploymentState,
};

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
}

/// Why a candidate action was not taken. Every blocked decision names exactly one gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gate {
    /// `spec.remediation.paused` or the paused annotation.
    Paused,
    /// Too many InvoiceServices unhealthy at once: the cause is probably shared.
    StormGate,
    /// Inside a blackout window that does not allow this action.
    Blackout,
    /// The action budget for the window is spent.
    Budget,
    /// Too soon after the last action.
    Cooldown,
    /// Restarting more pods would exceed `restartPod.maxUnavailable`.
    MaxUnavailable,
    /// The rung that would help is not in the ladder.
    NotInLadder,
    /// Every rung was tried.
    LadderExhausted,
    /// Failing the zone over would leave fewer than `minHealthyZones` healthy zones.
    LastHealthyZone,
    /// An interrupted action (`status.inFlight`) cannot be completed: a Deployment it sets is
    /// gone. Nothing else is decided until a human restores it or removes the intent.
    UnresumableAction,
}

impl Gate {
    /// The gate's name, as used in events, conditions and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paused => "Paused",
            Self::StormGate => "StormGate",
            Self::Blackout => "Blackout",
            Self::Budget => "Budget",
            Self::Cooldown => "Cooldown",
            Self::MaxUnavailable => "MaxUnavailable",
            Self::NotInLadder => "NotInLadder",
            Self::LadderExhausted => "LadderExhausted",
            Self::LastHealthyZone => "LastHealthyZone",
            Self::UnresumableAction => "UnresumableAction",
        }
    }
}

/// What an action touches.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Pods to evict.
    Pods(Vec<String>),
    /// Deployments to restart.
    Deployments(Vec<String>),
    /// New replica counts per Deployment (scale out or in).
    Replicas(BTreeMap<String, i32>),
    /// The mode switch: `true` for read-only.
    ReadOnly(bool),
    /// A zone to fail over or back, with the replica counts per Deployment to set (empty for
    /// a single Deployment, which is steered by node affinity instead).
    Zone {
        /// The zone.
        zone: String,
        /// Replicas per Deployment after the move.
        replicas: BTreeMap<String, i32>,
    },
}

impl Target {
    /// A short description of the touched objects, e.g. `pod/a,pod/b`.
    pub fn describe(&self) -> String {
        let join = |kind: &str, names: &mut dyn Iterator<Item = &String>| {
            names
                .map(|name| format!("{kind}/{name}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Self::Pods(pods) => join("pod", &mut pods.iter()),
            Self::Deployments(names) => join("deployment", &mut names.iter()),
            Self::Replicas(replicas) => join("deployment", &mut replicas.keys()),
            Self::ReadOnly(_) => "mode-switch".to_owned(),
            Self::Zone { zone, .. } => format!("zone/{zone}"),
        }
    }
}

/// An action the decision chose.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedAction {
    /// What kind.
    pub kind: ActionKind,
    /// The ladder rung it belongs to; `None` for reversals.
    pub rung: Option<Rung>,
    /// What it touches.
    pub target: Target,
    /// Why, in one sentence.
    pub reason: String,
    /// The numbers behind it.
    pub evidence: Evidence,
    /// The signal the action should improve and its value now (for verification).
    pub signal: Option<(String, f64)>,
}

/// A candidate action stopped by a gate.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    /// The action that would have been taken.
    pub kind: ActionKind,
    /// The gate that stopped it.
    pub gate: Gate,
    /// Why, with numbers.
    pub detail: String,
}

/// Something a human should look at; no action fixes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Attention {
    /// Every rung was tried and the service did not recover.
    LadderExhausted,
    /// Many requests fail with 4xx: usually a dependency (firewall, credentials).
    ClientErrorSpike {
        /// The 4xx ratio.
        ratio: f64,
    },
    /// The serving certificate expires soon (or has expired).
    CertificateExpiring {
        /// Seconds left; negative when expired.
        seconds_left: f64,
    },
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Decision {
    /// The action to take (Enforce) or to report as "would" (DryRun).
    pub action: Option<PlannedAction>,
    /// True in DryRun: report the action, do nothing.
    pub dry_run: bool,
    /// The candidate a gate stopped, if any.
    pub blocked: Option<Blocked>,
    /// Verdict on the pending last action, when it is due now.
    pub verdict: Option<ActionOutcome>,
    /// The ladder after this decision.
    pub ladder: Option<LadderStatus>,
    /// Timers after this decision (`status.heldSince`).
    pub held_since: BTreeMap<String, Time>,
    /// Things for a human.
    pub attention: Vec<Attention>,
    /// Why nothing happened, when nothing did and nothing was blocked (e.g. verifying).
    pub waiting: Option<String>,
    /// A new peak of the request rate while scaled out for load (`status.scaledOut.requestRate`).
    pub load_peak: Option<String>,
}

/// Everything `decide` looks at.
#[derive(Clone, Copy, Debug)]
pub struct DecisionInput<'a> {
    /// The validated spec.
    pub spec: &'a InvoiceServiceSpec,
    /// Health verdicts.
    pub evaluation: &'a Evaluation,
    /// The operator's memory.
    pub status: &'a InvoiceServiceStatus,
    /// The service's Deployments as the API server reports them.
    pub deployments: &'a [DeploymentState],
    /// Now.
    pub now: Timestamp,
    /// Paused by the annotation (the spec flag is read from `spec`).
    pub paused_by_annotation: bool,
    /// The global storm gate is closed.
    pub storm: bool,
    /// A human asked for fail-back (annotation), for `failBack.mode: Manual`.
    pub manual_fail_back: bool,
}

/// What is wrong, most specific cause first.
#[derive(Clone, Debug, PartialEq)]
enum Symptom {
    ZoneDown { zone: String, ratio: f64 },
    DatabasePool { utilization: f64 },
    BadPods { pods: Vec<String>, count: usize },
    ServiceErrors { burn: f64 },
    Latency { seconds: f64 },
}

impl Symptom {
    /// The rungs that address this symptom.
    fn rungs(&self) -> &'static [Rung] {
        match self {
            Self::ZoneDown { .. } => &[Rung::ZoneFailover],
            Self::DatabasePool { .. } => &[Rung::ReadOnly],
            Self::BadPods { .. } => &[Rung::RestartPod, Rung::RolloutRestart],
            Self::ServiceErrors { .. } => &[Rung::RolloutRestart, Rung::ScaleOut],
            Self::Latency { .. } => &[Rung::ScaleOut],
        }
    }

    /// The signal judged for verification and its value.
    fn signal(&self) -> (&'static str, f64) {
        match self {
            Self::ZoneDown { ratio, .. } => ("zoneErrorRatio", *ratio),
            Self::DatabasePool { utilization } => ("dbPoolUtilization", *utilization),
            Self::BadPods { count, .. } => ("unhealthyPods", *count as f64),
            Self::ServiceErrors { burn } => ("burnRate", *burn),
            Self::Latency { seconds } => ("latencySeconds", *seconds),
        }
    }
}

fn duration_since(now: Timestamp, then: &Time) -> Duration {
    let seconds = (now - then.0).total(jiff::Unit::Second).unwrap_or(0.0);
    Duration::from_secs_f64(seconds.max(0.0))
}

/// Keeps a timer running while `holds`, removes it otherwise; returns how long it has held.
fn hold(
    timers: &mut BTreeMap<String, Time>,
    key: &str,
    holds: bool,
    now: Timestamp,
) -> Option<Duration> {
    if holds {
        let since = timers.entry(key.to_owned()).or_insert_with(|| Time(now));
        Some(duration_since(now, since))
    } else {
        timers.remove(key);
        None
    }
}

/// Decides what to do now. An action interrupted before it was recorded (`status.inFlight`)
/// comes first: it is completed (or held, see [`resume`]) before anything new is decided.
pub fn decide(input: &DecisionInput<'_>) -> Decision {
    if let Some(intent) = &input.status.in_flight {
        return resume::resume(input, intent);
    }
    let DecisionInput {
        spec,
        evaluation,
        status,
        now,
        ..
    } = *input;
    let remediation = &spec.remediation;
    let mut decision = Decision {
        dry_run: remediation.mode == RemediationMode::DryRun,
        held_since: status.held_since.clone(),
        ladder: status.ladder.clone(),
        ..Decision::default()
    };
    decision.load_peak = load_peak(status, evaluation);
    let timers = &mut decision.held_since;

    // Facts with `for` durations.
    let database_high = remediation.read_only.as_ref().is_some_and(|policy| {
        let held = hold(
            timers,
            timers::DATABASE_POOL_HIGH,
            evaluation
                .db_pool_utilization
                .is_ok_and(|value| value > policy.enter_when.db_pool_utilization_above.get()),
            now,
        );
        held.is_some_and(|held| held >= policy.enter_when.for_.get())
    });
    let database_low = remediation.read_only.as_ref().is_some_and(|policy| {
        let held = hold(
            timers,
            timers::DATABASE_POOL_LOW,
            evaluation
                .db_pool_utilization
                .is_ok_and(|value| value < policy.exit_when.db_pool_utilization_below.get()),
            now,
        );
        held.is_some_and(|held| held >= policy.exit_when.for_.get())
    });
    let unhealthy_pods: Vec<_> = evaluation.unhealthy_pods().collect();
    let healthy = evaluation.slo_met_now() == Some(true) && unhealthy_pods.is_empty();
    let healthy_for = hold(timers, timers::HEALTHY, healthy, now);
    let failover = &remediation.zone_failover;
    // A zone outage is one zone failing while another is known to be fine; every zone failing
    // at once is the service's own problem.
    let healthy_zone_exists = |except: &str| {
        evaluation.zones.iter().any(|zone| {
            zone.name != except
                && zone.unhealthy == Some(false)
                && !zone.errors_zone_wide
                && status
                    .failover
                    .as_ref()
                    .is_none_or(|state| state.zone != zone.name)
        })
    };
    let mut zone_down = None;
    for zone in &evaluation.zones {
        let unhealthy = zone.unhealthy == Some(true)
            && healthy_zone_exists(&zone.name)
            && status
                .failover
                .as_ref()
                .is_none_or(|state| state.zone != zone.name);
        let held = hold(timers, &timers::zone_unhealthy(&zone.name), unhealthy, now);
        if zone_down.is_none()
            && held.is_some_and(|held| held >= failover.unhealthy_when.for_.get())
        {
            zone_down = Some(Symptom::ZoneDown {
                zone: zone.name.clone(),
                ratio: zone.error_ratio.unwrap_or(0.0),
            });
        }
    }
    let failed_zone_healthy_for = status.failover.as_ref().and_then(|state| {
        let zone = evaluation.zones.iter().find(|zone| zone.name == state.zone);
        // A drained zone serves no traffic, so its own error ratio is usually unknown: it
        // counts as healthy when its nodes are Ready, it shows no errors, and Prometheus is
        // answering for the service (an outage is no evidence of recovery).
        let looks_healthy = evaluation.error_ratio.is_ok()
            && zone.is_some_and(|zone| zone.not_ready_nodes == 0 && zone.unhealthy != Some(true));
        hold(
            timers,
            &timers::zone_healthy(&state.zone),
            looks_healthy,
            now,
        )
    });

    // Causes no action fixes.
    if let Ok(ratio) = evaluation.client_error_ratio
        && ratio > crate::evaluate::CLIENT_ERROR_SPIKE_RATIO
    {
        decision
            .attention
            .push(Attention::ClientErrorSpike { ratio });
    }
    if let (Some(expiry), Ok(seconds_left)) = (
        &spec.signals.certificate_expiry,
        evaluation.certificate_expires_in,
    ) && seconds_left < expiry.warn_before.get().as_secs_f64()
    {
        decision
            .attention
            .push(Attention::CertificateExpiring { seconds_left });
    }

    // The database pool is over the read-only threshold but not yet for long enough: the
    // latency and errors it causes are its own, and scaling out would only add connections.
    let database_pending = !database_high
        && remediation.read_only.as_ref().is_some_and(|policy| {
            evaluation
                .db_pool_utilization
                .is_ok_and(|value| value > policy.enter_when.db_pool_utilization_above.get())
        });

    // The symptom, most specific first. Unknown values never produce one.
    let symptom = zone_down
        .or_else(|| {
            database_high.then(|| Symptom::DatabasePool {
                utilization: evaluation.db_pool_utilization.unwrap_or(0.0),
            })
        })
        .or_else(|| {
            let count = unhealthy_pods.len();
            (count > 0 && count <= evaluation.max_unhealthy_pods).then(|| Symptom::BadPods {
                pods: rank_pods(&unhealthy_pods),
                count,
            })
        })
        .or_else(|| {
            let many_bad_pods = unhealthy_pods.len() > evaluation.max_unhealthy_pods;
            (evaluation.fast_burn || many_bad_pods).then(|| Symptom::ServiceErrors {
                burn: fastest_burn(evaluation),
            })
        })
        .or_else(|| {
            (evaluation.latency_breach == Some(true)).then(|| Symptom::Latency {
                seconds: evaluation.latency_seconds.unwrap_or(0.0),
            })
        });

    // Verdict on the last action.
    let pending = status
        .last_action
        .as_ref()
        .filter(|action| action.outcome == ActionOutcome::Pending);
    // An action is judged on signals measured after it: never before one detection window
    // has passed, whatever `verifyWindow` says. A shorter verify window would compare a rate
    // still made mostly of samples from before the action (a scale-out "not helping" while
    // the 1-minute latency still fills with the surge it answered).
    let verify_for = remediation
        .verify_window
        .get()
        .max(evaluation.detection_window);
    let in_verify_window =
        pending.is_some_and(|action| duration_since(now, &action.at) < verify_for);
    let improved = improved(status.ladder.as_ref(), symptom.as_ref());
    // Not even recovery is judged within one detection window of the action: the rates that
    // say "healthy" then are mostly samples from before it (a shared outage that ended on its
    // own made a RolloutRestart look helpful 10 s after it).
    let measured_after = pending
        .is_some_and(|action| duration_since(now, &action.at) >= evaluation.detection_window);
    if pending.is_some() {
        // Recovery must be seen, not assumed: right after a rollout the new pods have no
        // samples yet, and silence is not health.
        if symptom.is_none() && healthy && measured_after {
            decision.verdict = Some(ActionOutcome::Helped);
        } else if !in_verify_window {
            decision.verdict = Some(if improved {
                ActionOutcome::Helped
            } else {
                ActionOutcome::NoEffect
            });
        }
    }

    let Some(symptom) = symptom else {
        // Known healthy: the incident is over. Unknown: keep the ladder where it stands, so
        // a problem that shows again escalates instead of starting over.
        if healthy {
            decision.ladder = None;
            // The incident is over: levers a person took over are the operator's again, once
            // what they answer has passed too (the pool below the read-only threshold, the
            // zone no longer failing).
            let zone_fine = |key: &str| {
                evaluation
                    .zones
                    .iter()
                    .filter(|zone| key == crate::foreign::hands_off::zone(&zone.name))
                    .all(|zone| zone.unhealthy != Some(true))
            };
            decision.held_since.retain(|key, _| {
                if key == crate::foreign::hands_off::READ_ONLY {
                    database_pending
                } else if key.starts_with(crate::foreign::hands_off::PREFIX) {
                    !zone_fine(key)
                } else {
                    true
                }
            });
        }
        let reversal = plan_reversal(input, healthy_for, database_low, failed_zone_healthy_for);
        if let Some(action) = reversal {
            gate(input, &mut decision, action);
        }
        return decision;
    };

    if database_pending
        && matches!(
            symptom,
            Symptom::ServiceErrors { .. } | Symptom::Latency { .. }
        )
    {
        decision.waiting = Some(
            "the database pool is above the read-only threshold: waiting for it to hold before acting"
                .to_owned(),
        );
        return decision;
    }
    // Likewise a zone erroring as a whole, while ZoneFailover can still answer it: rolling
    // every Deployment would not fix a zone's network.
    let zone_pending = status.failover.is_none()
        && spec.effective_ladder().contains(&Rung::ZoneFailover)
        && evaluation
            .zones
            .iter()
            .any(|zone| zone.errors_zone_wide && healthy_zone_exists(&zone.name));
    if zone_pending
        && matches!(
            symptom,
            Symptom::ServiceErrors { .. } | Symptom::Latency { .. }
        )
    {
        decision.waiting = Some(format!(
            "a zone errors as a whole: waiting {} for it to count as failed",
            remediation.zone_failover.unhealthy_when.for_
        ));
        return decision;
    }

    if in_verify_window {
        let verifying = if remediation.verify_window.get() >= verify_for {
            remediation.verify_window.to_string()
        } else {
            format!("{}s (one detection window)", verify_for.as_secs())
        };
        decision.waiting = Some(format!(
            "verifying the last action for {verifying} before the next"
        ));
        return decision;
    }

    // Walk the ladder.
    let ladder = spec.effective_ladder();
    let addressing: Vec<Rung> = ladder
        .iter()
        .copied()
        .filter(|rung| symptom.rungs().contains(rung))
        .collect();
    let (signal, value) = symptom.signal();
    let previous = status
        .ladder
        .as_ref()
        .filter(|ladder| ladder.signal.as_deref() == Some(signal));
    if previous.is_some_and(|ladder| ladder.exhausted) {
        decision.attention.push(Attention::LadderExhausted);
        decision.blocked = Some(Blocked {
            kind: rung_action(*addressing.last().unwrap_or(&Rung::RolloutRestart)),
            gate: Gate::LadderExhausted,
            detail: format!("every rung was tried and {signal} is still {value:.3}"),
        });
        return decision;
    }
    let current = previous.and_then(|ladder| ladder.rung);
    let refused = |rung: Rung| {
        status.last_action.as_ref().is_some_and(|last| {
            last.outcome == ActionOutcome::Refused && last.action == rung_action(rung)
        })
    };
    let repeatable = |rung: Rung| {
        improved && matches!(rung, Rung::RestartPod | Rung::ScaleOut) && !refused(rung)
    };
    let start = match current {
        Some(rung) if repeatable(rung) => addressing.iter().position(|r| *r == rung),
        Some(rung) => addressing.iter().position(|r| *r == rung).map(|i| i + 1),
        None => Some(0),
    }
    .unwrap_or(0);
    let mut chosen = None;
    for rung in addressing.iter().skip(start) {
        if let Some(action) = plan_rung(input, *rung, &symptom) {
            chosen = Some(action);
            break;
        }
    }
    let Some(action) = chosen else {
        if addressing.is_empty() {
            decision.blocked = Some(Blocked {
                kind: rung_action(symptom.rungs()[0]),
                gate: Gate::NotInLadder,
                detail: format!(
                    "{} would address {signal} {value:.3} but is not in the ladder",
                    symptom.rungs()[0].as_str()
                ),
            });
            return decision;
        }
        decision.attention.push(Attention::LadderExhausted);
        decision.ladder = Some(LadderStatus {
            exhausted: true,
            signal: Some(signal.to_owned()),
            value: Some(format!("{value:.3}")),
            ..status.ladder.clone().unwrap_or(LadderStatus {
                rung: None,
                since: Some(Time(now)),
                exhausted: true,
                signal: None,
                value: None,
            })
        });
        decision.blocked = Some(Blocked {
            kind: rung_action(*addressing.last().expect("addressing is not empty")),
            gate: Gate::LadderExhausted,
            detail: format!("every rung for {signal} was tried and it is still {value:.3}"),
        });
        return decision;
    };
    gate(input, &mut decision, action);
    if let Some(action) = &decision.action {
        decision.ladder = Some(LadderStatus {
            rung: action.rung,
            since: Some(Time(now)),
            exhausted: false,
            signal: Some(signal.to_owned()),
            value: Some(format!("{value:.3}")),
        });
    }
    decision
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

fn fastest_burn(evaluation: &Evaluation) -> f64 {
    evaluation
        .burn_rates
        .iter()
        .filter_map(|burn| burn.short_rate.ok())
        .fold(0.0, f64::max)
}

/// Unhealthy pods, worst first: crash loops, then unready, then errors; by name within.
fn rank_pods(pods: &[&crate::evaluate::PodHealth]) -> Vec<String> {
    let rank = |pod: &crate::evaluate::PodHealth| match pod.problem {
        Some(PodProblem::CrashLoop { .. }) => 0,
        Some(PodProblem::Unready { .. }) => 1,
        _ => 2,
    };
    let mut ranked: Vec<_> = pods.to_vec();
    ranked.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.name.cmp(&b.name)));
    ranked.into_iter().map(|pod| pod.name.clone()).collect()
}

fn rung_action(rung: Rung) -> ActionKind {
    match rung {
        Rung::RestartPod => ActionKind::RestartPod,
        Rung::RolloutRestart => ActionKind::RolloutRestart,
        Rung::ScaleOut => ActionKind::ScaleOut,
        Rung::ReadOnly => ActionKind::EnterReadOnly,
        Rung::ZoneFailover => ActionKind::ZoneFailover,
    }
}

fn current_replicas(input: &DecisionInput<'_>) -> BTreeMap<String, i32> {
    input
        .deployments
        .iter()
        .filter(|deployment| deployment.exists)
        .map(|deployment| (deployment.name.clone(), deployment.replicas))
        .collect()
}

/// Plans the action of one rung for the symptom, or `None` when the rung cannot help now
/// (nothing to scale, no switch, no healthy zone to move to).
fn plan_rung(input: &DecisionInput<'_>, rung: Rung, symptom: &Symptom) -> Option<PlannedAction> {
    let spec = input.spec;
    let evaluation = input.evaluation;
    let (signal, value) = symptom.signal();
    let mut evidence = Evidence::new();
    evidence.insert(signal.to_owned(), format!("{value:.3}"));
    if let Ok(ratio) = evaluation.error_ratio {
        evidence.insert("errorRatio".to_owned(), format!("{ratio:.4}"));
    }
    if let Ok(latency) = evaluation.latency_seconds {
        evidence.insert("latencySeconds".to_owned(), format!("{latency:.3}"));
    }
    // A scale-out for load remembers the load, so that ScaleIn waits for it to go.
    if let (Rung::ScaleOut, Symptom::Latency { .. }, Ok(rate)) =
        (rung, symptom, evaluation.request_rate)
    {
        evidence.insert(REQUEST_RATE_EVIDENCE.to_owned(), format!("{rate:.3}"));
    }
    let planned = |kind, target, reason: String| PlannedAction {
        kind,
        rung: Some(rung),
        target,
        reason,
        evidence: evidence.clone(),
        signal: Some((signal.to_owned(), value)),
    };
    match rung {
        Rung::RestartPod => {
            let Symptom::BadPods { pods, .. } = symptom else {
                return None;
            };
            let limit = spec.remediation.restart_pod.max_unavailable as usize;
            let chosen: Vec<String> = pods.iter().take(limit).cloned().collect();
            let problems: Vec<String> = chosen
                .iter()
                .filter_map(|name| {
                    let pod = evaluation.pods.iter().find(|pod| &pod.name == name)?;
                    Some(format!("{name}: {}", pod.problem.as_ref()?.describe()))
                })
                .collect();
            Some(planned(
                ActionKind::RestartPod,
                Target::Pods(chosen),
                format!(
                    "{} of {} pods unhealthy ({})",
                    pods.len(),
                    evaluation.pods.len(),
                    problems.join("; ")
                ),
            ))
        }
        Rung::RolloutRestart => {
            let deployments: Vec<String> = current_replicas(input)
                .into_iter()
                .filter(|(_, replicas)| *replicas > 0)
                .map(|(name, _)| name)
                .collect();
            (!deployments.is_empty()).then(|| {
                planned(
                    ActionKind::RolloutRestart,
                    Target::Deployments(deployments),
                    format!("service-wide trouble: {signal} {value:.3}"),
                )
            })
        }
        Rung::ScaleOut => {
            let scale = &spec.remediation.scale;
            let failed_zone = input
                .status
                .failover
                .as_ref()
                .map(|state| state.zone.as_str());
            let mut targets = BTreeMap::new();
            for deployment in input.deployments.iter().filter(|d| d.exists) {
                if deployment.zone.is_some() && deployment.zone.as_deref() == failed_zone {
                    continue;
                }
                let wanted = (deployment.replicas + scale.step).min(scale.max_replicas);
                if wanted > deployment.replicas {
                    targets.insert(deployment.name.clone(), wanted);
                }
            }
            (!targets.is_empty()).then(|| {
                planned(
                    ActionKind::ScaleOut,
                    Target::Replicas(targets),
                    format!(
                        "{signal} {value:.3} over objective; adding {} replica(s) per deployment, at most {}",
                        scale.step, scale.max_replicas
                    ),
                )
            })
        }
        Rung::ReadOnly => {
            let policy = spec.remediation.read_only.as_ref()?;
            // Someone switched read-only mode off during this incident: not entered again.
            let hands_off = input
                .status
                .held_since
                .contains_key(crate::foreign::hands_off::READ_ONLY);
            (input.status.read_only.is_none() && !hands_off).then(|| {
                planned(
                    ActionKind::EnterReadOnly,
                    Target::ReadOnly(true),
                    format!(
                        "database pool {value:.3} above {} for {}",
                        policy.enter_when.db_pool_utilization_above, policy.enter_when.for_
                    ),
                )
            })
        }
        Rung::ZoneFailover => {
            let Symptom::ZoneDown { zone, ratio } = symptom else {
                return None;
            };
            // One zone failed over at a time; a second failing zone is for a human; and a
            // zone someone brought back during this incident is not failed over again.
            if input.status.failover.is_some()
                || input
                    .status
                    .held_since
                    .contains_key(&crate::foreign::hands_off::zone(zone))
            {
                return None;
            }
            Some(planned(
                ActionKind::ZoneFailover,
                Target::Zone {
                    zone: zone.clone(),
                    replicas: failover_replicas(input, zone),
                },
                format!(
                    "zone {zone} 5xx ratio {ratio:.3} above {} for {} while other zones are healthy",
                    spec.remediation
                        .zone_failover
                        .unhealthy_when
                        .zone_error_ratio_above,
                    spec.remediation.zone_failover.unhealthy_when.for_
                ),
            ))
        }
    }
}

/// Evidence key of a ScaleOut that answered a latency breach: the service's request rate then.
pub const REQUEST_RATE_EVIDENCE: &str = "requestRate";

/// ScaleIn waits until the request rate is below this share of the rate at which the latency
/// breach first scaled the service out: at that rate the baseline replicas were too few, and
/// a rate just under it would breach again after the scale-in.
const SCALE_IN_LOAD_SHARE: f64 = 0.9;

/// A new peak of the load while scaled out for it: the rate at the first ScaleOut, measured
/// over a window that still held samples from before the surge, understates it (and a rate
/// after the surge could then never be "clearly below"). Raised in steps of a tenth, so a
/// rising rate does not rewrite the status every interval.
fn load_peak(status: &InvoiceServiceStatus, evaluation: &Evaluation) -> Option<String> {
    let peak = status
        .scaled_out
        .as_ref()?
        .request_rate
        .as_deref()?
        .parse::<f64>()
        .ok()?;
    let rate = evaluation.request_rate.ok()?;
    (rate > peak * 1.1).then(|| format!("{rate:.3}"))
}

/// Whether the load that scaled the service out has gone: unknown while the rate is, and
/// always for a scale-out that answered errors rather than load (no rate recorded).
fn load_has_gone(scaled: &ScaledOutState, evaluation: &Evaluation) -> bool {
    let Some(at_scale_out) = scaled
        .request_rate
        .as_deref()
        .and_then(|rate| rate.parse::<f64>().ok())
    else {
        return true;
    };
    evaluation
        .request_rate
        .is_ok_and(|rate| rate < at_scale_out * SCALE_IN_LOAD_SHARE)
}

/// Replica counts after failing `zone` over: its Deployment to 0, its replicas spread over the
/// healthy zones (rounded up), each capped at `maxReplicas`. Empty for a single Deployment.
fn failover_replicas(input: &DecisionInput<'_>, zone: &str) -> BTreeMap<String, i32> {
    let zonal: Vec<&DeploymentState> = input
        .deployments
        .iter()
        .filter(|deployment| deployment.exists && deployment.zone.is_some())
        .collect();
    let Some(failed) = zonal.iter().find(|d| d.zone.as_deref() == Some(zone)) else {
        return BTreeMap::new();
    };
    let healthy: Vec<&&DeploymentState> = zonal
        .iter()
        .filter(|deployment| {
            deployment.zone.as_deref() != Some(zone)
                && input.evaluation.zones.iter().any(|z| {
                    Some(z.name.as_str()) == deployment.zone.as_deref() && z.unhealthy != Some(true)
                })
        })
        .collect();
    let mut targets = BTreeMap::from([(failed.name.clone(), 0)]);
    if healthy.is_empty() {
        return targets;
    }
    let share = (failed.replicas + healthy.len() as i32 - 1) / healthy.len() as i32;
    let max = input.spec.remediation.scale.max_replicas;
    for deployment in healthy {
        targets.insert(
            deployment.name.clone(),
            (deployment.replicas + share)
                .min(max)
                .max(deployment.replicas),
        );
    }
    targets
}

/// The reversal due now, if any: leave read-only, fail back, scale in (in that order).
fn plan_reversal(
    input: &DecisionInput<'_>,
    healthy_for: Option<Duration>,
    database_low: bool,
    failed_zone_healthy_for: Option<Duration>,
) -> Option<PlannedAction> {
    let spec = input.spec;
    let status = input.status;
    let reversal = |kind, target, reason: String, evidence: Evidence| PlannedAction {
        kind,
        rung: None,
        target,
        reason,
        evidence,
        signal: None,
    };
    if status.read_only.is_some() && database_low {
        let policy = spec.remediation.read_only.as_ref()?;
        let utilization = input.evaluation.db_pool_utilization.unwrap_or(0.0);
        return Some(reversal(
            ActionKind::ExitReadOnly,
            Target::ReadOnly(false),
            format!(
                "database pool {utilization:.3} below {} for {}",
                policy.exit_when.db_pool_utilization_below, policy.exit_when.for_
            ),
            Evidence::from([("dbPoolUtilization".to_owned(), format!("{utilization:.3}"))]),
        ));
    }
    if let Some(state) = &status.failover {
        let fail_back = &spec.remediation.zone_failover.fail_back;
        let due = match fail_back.mode {
            FailBackMode::Automatic => {
                failed_zone_healthy_for.is_some_and(|held| held >= fail_back.after.get())
            }
            FailBackMode::Manual => input.manual_fail_back,
        };
        if due {
            return Some(reversal(
                ActionKind::ZoneFailBack,
                Target::Zone {
                    zone: state.zone.clone(),
                    replicas: state.replicas_before.clone(),
                },
                match fail_back.mode {
                    FailBackMode::Automatic => format!(
                        "zone {} healthy for {}; restoring its replicas",
                        state.zone, fail_back.after
                    ),
                    FailBackMode::Manual => {
                        format!("fail-back of zone {} requested by annotation", state.zone)
                    }
                },
                Evidence::new(),
            ));
        }
    }
    if let Some(scaled) = &status.scaled_out {
        let scale = &spec.remediation.scale;
        if healthy_for.is_some_and(|held| held >= scale.scale_in_after.get())
            && load_has_gone(scaled, input.evaluation)
        {
            let current = current_replicas(input);
            let failed_zone_deployments: Vec<&String> = status
                .failover
                .iter()
                .flat_map(|state| state.replicas_before.keys())
                .collect();
            let targets: BTreeMap<String, i32> = scaled
                .baseline
                .iter()
                .filter(|(name, _)| !failed_zone_deployments.contains(name))
                .filter_map(|(name, baseline)| {
                    let now = *current.get(name)?;
                    let target = (*baseline).max(scale.min_replicas).min(now);
                    (target < now).then(|| (name.clone(), target))
                })
                .collect();
            if !targets.is_empty() {
                return Some(reversal(
                    ActionKind::ScaleIn,
                    Target::Replicas(targets),
                    format!(
                        "healthy for {}; back to the baseline replicas",
                        scale.scale_in_after
                    ),
                    Evidence::new(),
                ));
            }
        }
    }
    None
}

/// Runs the safety rails over a candidate action; sets `decision.action` or `.blocked`.
fn gate(input: &DecisionInput<'_>, decision: &mut Decision, action: PlannedAction) {
    let spec = input.spec;
    let remediation = &spec.remediation;
    let block = |gate, detail: String| Blocked {
        kind: action.kind,
        gate,
        detail,
    };
    let blocked = if remediation.paused || input.paused_by_annotation {
        Some(block(Gate::Paused, "remediation is paused".to_owned()))
    } else if input.storm {
        Some(block(
            Gate::StormGate,
            "too many services are unhealthy at once; actions are frozen cluster-wide".to_owned(),
        ))
    } else if let Some(window) =
        active_blackout(spec, input.now).filter(|window| !window.allow.contains(&action.kind))
    {
        Some(block(
            Gate::Blackout,
            format!(
                "inside blackout window {:?} (for {}), which does not allow {}",
                window.schedule,
                window.duration,
                action.kind.as_str()
            ),
        ))
    } else if let Some(used) = Some(budget_used(
        input.status,
        input.now,
        remediation.budget.per.get(),
    ))
    .filter(|used| *used >= remediation.budget.max_actions as usize)
    {
        Some(block(
            Gate::Budget,
            format!(
                "{used} actions in the last {} (budget {})",
                remediation.budget.per, remediation.budget.max_actions
            ),
        ))
    } else if let Some(since) = input
        .status
        .last_action
        .as_ref()
        .map(|last| duration_since(input.now, &last.at))
        .filter(|since| *since < remediation.cooldown.get())
    {
        Some(block(
            Gate::Cooldown,
            format!(
                "last action {}s ago, cooldown {}",
                since.as_secs(),
                remediation.cooldown
            ),
        ))
    } else {
        action_specific_gate(input, &action).map(|(gate, detail)| block(gate, detail))
    };
    match blocked {
        Some(blocked) => decision.blocked = Some(blocked),
        None => decision.action = Some(action),
    }
}

fn action_specific_gate(
    input: &DecisionInput<'_>,
    action: &PlannedAction,
) -> Option<(Gate, String)> {
    match (&action.kind, &action.target) {
        (ActionKind::RestartPod, Target::Pods(pods)) => {
            let in_flight = input
                .evaluation
                .pods
                .iter()
                .filter(|pod| pod.terminating)
                .count();
            let limit = input.spec.remediation.restart_pod.max_unavailable as usize;
            (in_flight + pods.len() > limit).then(|| {
                (
                    Gate::MaxUnavailable,
                    format!(
                        "{in_flight} pod(s) already restarting; restarting {} more would exceed maxUnavailable {limit}",
                        pods.len()
                    ),
                )
            })
        }
        (ActionKind::ZoneFailover, Target::Zone { zone, .. }) => {
            let healthy_after = input
                .evaluation
                .zones
                .iter()
                .filter(|candidate| &candidate.name != zone && candidate.unhealthy == Some(false))
                .filter(|candidate| {
                    input
                        .status
                        .failover
                        .as_ref()
                        .is_none_or(|state| state.zone != candidate.name)
                })
                .count();
            let minimum = input.spec.remediation.zone_failover.min_healthy_zones as usize;
            (healthy_after < minimum.max(1)).then(|| {
                (
                    Gate::LastHealthyZone,
                    format!(
                        "failing over {zone} would leave {healthy_after} healthy zone(s), minimum {}",
                        minimum.max(1)
                    ),
                )
            })
        }
        _ => None,
    }
}

/// Actions counted against the budget in the window ending now.
fn budget_used(status: &InvoiceServiceStatus, now: Timestamp, per: Duration) -> usize {
    status
        .history
        .iter()
        .filter(|record| record.outcome != ActionOutcome::Refused)
        .filter(|record| duration_since(now, &record.at) < per)
        .count()
}

/// The blackout window open now, if any (schedules are UTC).
pub fn active_blackout(
    spec: &InvoiceServiceSpec,
    now: Timestamp,
) -> Option<&crate::api::BlackoutWindow> {
    let now_utc = chrono::DateTime::from_timestamp(now.as_second(), 0)?;
    spec.remediation.blackout_windows.iter().find(|window| {
        let Ok(cron) = window.schedule.parse::<croner::Cron>() else {
            return false;
        };
        let Ok(opened) = cron.find_previous_occurrence(&now_utc, true) else {
            return false;
        };
        let open_for = now_utc.signed_duration_since(opened);
        open_for.num_seconds() >= 0
            && (open_for.num_seconds() as u64) < window.duration.get().as_secs()
    })
}

/// Evidence keys of a refused action's record: who refused (`PodDisruptionBudget`, ...) and
/// the API server's message, so that history and `RemediationAllowed` keep naming the refusal
/// through the cooldown.
pub mod refusal_evidence {
    /// Who refused, a fixed PascalCase name.
    pub const REFUSED_BY: &str = "refusedBy";
    /// The API server's explanation.
    pub const MESSAGE: &str = "refusal";
}

/// Notes the API server's refusal on the action [`record`] just recorded as `Refused`.
pub fn note_refusal(status: &mut InvoiceServiceStatus, refused_by: &str, message: &str) {
    let records = status
        .last_action
        .iter_mut()
        .chain(status.history.first_mut())
        .filter(|record| record.outcome == ActionOutcome::Refused);
    for record in records {
        record.evidence.insert(
            refusal_evidence::REFUSED_BY.to_owned(),
            refused_by.to_owned(),
        );
        record
            .evidence
            .insert(refusal_evidence::MESSAGE.to_owned(), message.to_owned());
    }
}

/// Folds a decision into the next status: verdict, ladder, timers, and — when an action was
/// taken — history, last action and the reversal memory. `applied` is false when the API
/// server refused the action (e.g. a PodDisruptionBudget), which is recorded as `Refused`.
///
/// An action completed from `status.inFlight` is recorded like any other, with two
/// differences: the intent is removed, and the replicas before the action are the intent's
/// baseline, not `deployments` (which an interrupted run may have left half-scaled).
pub fn record(
    status: &InvoiceServiceStatus,
    decision: &Decision,
    deployments: &[DeploymentState],
    now: Timestamp,
    applied: bool,
) -> InvoiceServiceStatus {
    let mut next = fold_judgement(status, decision);
    let Some(action) = &decision.action else {
        return next;
    };
    let mode = if decision.dry_run {
        RemediationMode::DryRun
    } else {
        RemediationMode::Enforce
    };
    let outcome = match (decision.dry_run, applied, action.rung) {
        (true, _, _) => ActionOutcome::NotTaken,
        (false, false, _) => ActionOutcome::Refused,
        (false, true, Some(_)) => ActionOutcome::Pending,
        (false, true, None) => ActionOutcome::Helped,
    };
    let record = ActionRecord {
        action: action.kind,
        target: action.target.describe(),
        reason: action.reason.clone(),
        evidence: action.evidence.clone(),
        at: Time(now),
        mode,
        outcome,
    };
    next.last_action = Some(record.clone());
    next.history.insert(0, record);
    next.history.truncate(HISTORY_LIMIT);
    // Taken or refused, the action is over: nothing is left to resume.
    let intent = if decision.dry_run {
        None
    } else {
        next.in_flight.take()
    };
    if outcome == ActionOutcome::Refused {
        // The ladder moves past the refused rung: retrying it would meet the same
        // PodDisruptionBudget; the next rung (which the budget may allow: a rolling restart is
        // paced by the Deployment, not by evictions) is tried after the cooldown.
        next.ladder = decision.ladder.clone();
        return next;
    }
    if decision.dry_run {
        return next;
    }
    let replicas_before = match intent {
        Some(intent) => intent.baseline,
        None => replicas_of(deployments),
    };
    match (&action.kind, &action.target) {
        (ActionKind::ScaleOut, target) => {
            // The baseline is the replica count before the first ScaleOut of the incident.
            let scaled = next.scaled_out.get_or_insert(ScaledOutState {
                baseline: replicas_before,
                since: Time(now),
                written: BTreeMap::new(),
                written_at: None,
                request_rate: action.evidence.get(REQUEST_RATE_EVIDENCE).cloned(),
            });
            if let Target::Replicas(replicas) = target {
                scaled.written.extend(replicas.clone());
                scaled.written_at = Some(Time(now));
            }
        }
        (ActionKind::ScaleIn, _) => next.scaled_out = None,
        (ActionKind::EnterReadOnly, _) => next.read_only = Some(ReadOnlyState { since: Time(now) }),
        (ActionKind::ExitReadOnly, _) => next.read_only = None,
        (ActionKind::ZoneFailover, Target::Zone { zone, .. }) => {
            next.failover = Some(FailoverState {
                zone: zone.clone(),
                since: Time(now),
                replicas_before,
            });
        }
        (ActionKind::ZoneFailBack, _) => next.failover = None,
        _ => {}
    }
    next
}

/// The part of [`record`] that does not depend on the action being carried out: timers,
/// ladder, and the verdict on the previous action.
fn fold_judgement(status: &InvoiceServiceStatus, decision: &Decision) -> InvoiceServiceStatus {
    let mut next = status.clone();
    next.held_since = decision.held_since.clone();
    if let (Some(peak), Some(scaled)) = (&decision.load_peak, next.scaled_out.as_mut()) {
        scaled.request_rate = Some(peak.clone());
    }
    next.ladder = decision.ladder.clone();
    if let Some(outcome) = decision.verdict {
        if let Some(last) = next.last_action.as_mut() {
            last.outcome = outcome;
        }
        if let Some(first) = next.history.first_mut()
            && first.outcome == ActionOutcome::Pending
        {
            first.outcome = outcome;
        }
    }
    next
}

/// Replicas per Deployment as observed (0 for one that does not exist).
fn replicas_of(deployments: &[DeploymentState]) -> BTreeMap<String, i32> {
    deployments
        .iter()
        .map(|deployment| (deployment.name.clone(), deployment.replicas))
        .collect()
}

/// The status to write before carrying out the decided action, when that action sets the
/// replicas of Deployments (ScaleOut, ScaleIn, or a zone failover or fail-back across
/// per-zone Deployments): the decision's timers, ladder and verdict, and `inFlight` with the
/// targets and the replicas now as the baseline. `None` for every other action, in DryRun,
/// and when the action is itself the completion of an intent already in status.
///
/// Writing it before the first Deployment is touched is what makes the action resumable: if
/// the operator dies between two writes, the next reconcile (here or on a new leader) finds
/// the intent and completes it with the original baseline, instead of deciding again on a
/// half-scaled cluster and taking its replicas for the baseline.
pub fn record_intent(
    status: &InvoiceServiceStatus,
    decision: &Decision,
    deployments: &[DeploymentState],
    now: Timestamp,
) -> Option<InvoiceServiceStatus> {
    if decision.dry_run || status.in_flight.is_some() {
        return None;
    }
    let action = decision.action.as_ref()?;
    let (zone, replicas) = match (&action.kind, &action.target) {
        (ActionKind::ScaleOut | ActionKind::ScaleIn, Target::Replicas(replicas)) => {
            (None, replicas)
        }
        (ActionKind::ZoneFailover | ActionKind::ZoneFailBack, Target::Zone { zone, replicas })
            if !replicas.is_empty() =>
        {
            (Some(zone.clone()), replicas)
        }
        _ => return None,
    };
    let mut next = fold_judgement(status, decision);
    next.in_flight = Some(InFlightAction {
        action: action.kind,
        rung: action.rung,
        zone,
        replicas: replicas.clone(),
        baseline: replicas_of(deployments),
        reason: action.reason.clone(),
        evidence: action.evidence.clone(),
        started_at: Time(now),
    });
    Some(next)
}

pub mod resume;

#[cfg(test)]
mod tests;
