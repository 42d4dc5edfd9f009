//! The observed state of an `InvoiceService`. Status is the operator's memory: cooldowns, the
//! ladder position, read-only and failover state and the action budget are all derived from
//! it, so a restarted or newly elected operator resumes where the last one stopped. No IO.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::{ActionKind, Evidence, RemediationMode, Rung};

/// How many past actions `status.history` keeps. At least the largest action budget, so the
/// budget is counted from status alone.
pub const HISTORY_LIMIT: usize = 20;

/// How many closed incidents `status.incidents.recent` keeps.
pub const RECENT_INCIDENTS_LIMIT: usize = 5;

/// How many actions (taken, proposed or blocked) one incident record keeps; later ones are
/// counted in `omittedActions`.
pub const INCIDENT_ACTIONS_LIMIT: usize = 20;

/// Condition types set on every InvoiceService.
pub mod condition_types {
    /// The spec is valid and the operator manages the service.
    pub const READY: &str = "Ready";
    /// The signals decisions are based on are fresh and plausible.
    pub const SIGNALS_TRUSTED: &str = "SignalsTrusted";
    /// Every objective is met over its SLO window (availability at or above the objective;
    /// latency, which has no windowed figure, under its threshold now). Reason
    /// `BudgetBurning` while it is met but a burn-rate alert fires, `ObjectiveMissed` with the
    /// numbers when it is not.
    pub const SLO_MET: &str = "SLOMet";
    /// No safety rail currently blocks remediation.
    pub const REMEDIATION_ALLOWED: &str = "RemediationAllowed";
    /// The app is in read-only mode.
    pub const READ_ONLY: &str = "ReadOnly";
    /// A zone is failed over.
    pub const ZONE_FAILOVER: &str = "ZoneFailover";
    /// A human should look: ladder exhausted, a cause no action fixes (4xx spike,
    /// certificate expiry), or an open incident at risk of missing its RTO.
    pub const NEEDS_ATTENTION: &str = "NeedsAttention";
    /// Another controller (Argo CD, Flux) set a lever back right after the operator wrote it:
    /// the operator leaves that lever alone for an hour. The message names the manager.
    pub const CONTESTED: &str = "Contested";

    /// Every condition type, in the order they are reported.
    pub const ALL: [&str; 8] = [
        READY,
        SIGNALS_TRUSTED,
        SLO_MET,
        REMEDIATION_ALLOWED,
        READ_ONLY,
        ZONE_FAILOVER,
        NEEDS_ATTENTION,
        CONTESTED,
    ];
}

/// What the operator last observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceServiceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where the service stands, in one word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Ready, SignalsTrusted, SLOMet, RemediationAllowed, ReadOnly, ZoneFailover,
    /// NeedsAttention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,

    /// The SLOs as last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloStatus>,

    /// Health per zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".to_owned()]))]
    pub zones: Vec<ZoneStatus>,

    /// Where the escalation stands in the current incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ladder: Option<LadderStatus>,

    /// The last action taken (or, in DryRun, proposed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<ActionRecord>,

    /// The last actions, newest first, at most 20: the audit trail that outlives Events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub history: Vec<ActionRecord>,

    /// Replicas added by ScaleOut and not yet removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled_out: Option<ScaledOutState>,

    /// Set while the app is in read-only mode because of the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<ReadOnlyState>,

    /// Set while a zone is failed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverState>,

    /// An action that sets the replicas of Deployments, written before its first write and
    /// removed when the action is recorded: a restarted or newly elected operator completes it
    /// from here instead of deciding afresh on a half-scaled cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlightAction>,

    /// Since when each trigger or reversal condition with a `for` duration has held, e.g.
    /// `DatabasePoolHigh`, `Healthy`, `Zone/az2/Unhealthy`. Written only when a condition
    /// starts or stops holding, so a new leader resumes the same timers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held_since: BTreeMap<String, Time>,

    /// The open incident, the last closed ones and counts: every outage as one episode,
    /// measured against `slos.recovery.rto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incidents: Option<IncidentsStatus>,
}

/// Incidents: an incident opens when the service turns unhealthy (a symptom the engine acts
/// on, an SLO breach, a 4xx spike) and closes when it has been healthy for
/// `slos.recovery.settleFor`. Kept in status so that a restarted operator or a new leader
/// continues the open incident.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IncidentsStatus {
    /// The incident under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<Incident>,
    /// The last closed incidents, newest first, at most 5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub recent: Vec<Incident>,
    /// Incidents opened so far (the number of the latest).
    #[serde(default)]
    pub opened: u64,
    /// Incidents closed so far.
    #[serde(default)]
    pub closed: u64,
    /// Closed incidents recovered within the RTO.
    #[serde(default)]
    pub rto_met: u64,
    /// Closed incidents recovered after the RTO.
    #[serde(default)]
    pub rto_missed: u64,
}

/// One incident: from the first symptom to the service healthy for the settle period.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// Its number, counted per service from 1.
    pub number: u64,
    /// When the fault first showed in the signals (a pod unready, a zone or the database pool
    /// over its threshold, before the `for` that makes it a symptom); the opening time when
    /// nothing earlier showed. The RTO counts from here.
    pub started_at: Time,
    /// When the operator opened the incident: the first evaluation with a symptom.
    pub opened_at: Time,
    /// Time to detect: from `startedAt` to `openedAt`, e.g. "15s".
    pub time_to_detect: String,
    /// What was wrong, in the order first seen.
    #[schemars(length(max = 6))]
    pub symptoms: Vec<IncidentSymptom>,
    /// Every action taken, proposed (DryRun) or blocked during the incident, in order, at most
    /// 20; a gate blocking the same action again is recorded once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub actions: Vec<IncidentAction>,
    /// Actions beyond the 20 kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_actions: u32,
    /// When the first action was taken (or proposed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_action_at: Option<Time>,
    /// Time to first action: from `openedAt` to `firstActionAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_action: Option<String>,
    /// Why a human was needed (`NeedsAttention` reasons raised during the incident); empty
    /// when the operator handled it alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub needs_attention: Vec<String>,
    /// The RTO the incident is judged by, when `slos.recovery` sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<String>,
    /// When `RecoveryObjectiveAtRisk` was raised, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk: Option<AtRisk>,
    /// Since when the service has been healthy again; unset while it is not. The incident
    /// closes once this is `settleFor` old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<Time>,
    /// When the incident closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Time>,
    /// Time to recover: from `startedAt` to `recoveredAt`, once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_recover: Option<String>,
    /// Whether it recovered within the RTO, once closed (unset without an RTO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_met: Option<bool>,
    /// One line, as the Event said when it closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// `RecoveryObjectiveAtRisk`, raised once per incident.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AtRisk {
    /// When it was raised.
    pub since: Time,
    /// When the RTO passes.
    pub deadline: Time,
    /// Why, e.g. "every rung for BadPods was tried".
    pub reason: String,
}

/// What an incident was about: the engine's symptom, or a cause no action fixes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IncidentSymptom {
    /// A zone's 5xx ratio over its threshold while another zone is fine.
    ZoneDown,
    /// The database pool over the read-only threshold.
    DatabasePool,
    /// A few pods crash-looping, unready or failing.
    BadPods,
    /// A page-level burn rate, or many bad pods.
    ServiceErrors,
    /// The latency percentile over its threshold.
    Latency,
    /// Many requests failing with 4xx (a human is needed).
    ClientErrorSpike,
}

impl IncidentSymptom {
    /// Every symptom, for metric labels.
    pub const ALL: [Self; 6] = [
        Self::ZoneDown,
        Self::DatabasePool,
        Self::BadPods,
        Self::ServiceErrors,
        Self::Latency,
        Self::ClientErrorSpike,
    ];

    /// The symptom as status spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ZoneDown => "ZoneDown",
            Self::DatabasePool => "DatabasePool",
            Self::BadPods => "BadPods",
            Self::ServiceErrors => "ServiceErrors",
            Self::Latency => "Latency",
            Self::ClientErrorSpike => "ClientErrorSpike",
        }
    }
}

/// An action taken, proposed or blocked during an incident.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentAction {
    /// The action.
    pub action: ActionKind,
    /// When.
    pub at: Time,
    /// Enforce (taken) or DryRun (would have been taken).
    pub mode: RemediationMode,
    /// What came of it, as in `history` (unset when blocked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ActionOutcome>,
    /// The gate that blocked it, e.g. `Cooldown`, `StormGate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
}

/// Where the service stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The current signals meet the SLOs (no paging burn, latency under its threshold), no
    /// pod is unhealthy and nothing needs a human. Says nothing about the SLO window: the
    /// `SLOMet` condition does.
    Healthy,
    /// Something is wrong and no action is under way (blocked, or not warranted): an SLO at
    /// risk now, unhealthy pods, or a cause that needs a human (`NeedsAttention=True`).
    Degraded,
    /// An action was taken and is being verified.
    Remediating,
    /// The app is in read-only mode.
    ReadOnly,
    /// A zone is failed over.
    FailedOver,
    /// Remediation is paused by spec or annotation.
    Paused,
    /// Not enough trustworthy signal to say, or the spec is invalid.
    Unknown,
}

impl Phase {
    /// Every phase, in the order above.
    pub const ALL: [Self; 7] = [
        Self::Healthy,
        Self::Degraded,
        Self::Remediating,
        Self::ReadOnly,
        Self::FailedOver,
        Self::Paused,
        Self::Unknown,
    ];

    /// The phase as `status.phase` spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::Degraded => "Degraded",
            Self::Remediating => "Remediating",
            Self::ReadOnly => "ReadOnly",
            Self::FailedOver => "FailedOver",
            Self::Paused => "Paused",
            Self::Unknown => "Unknown",
        }
    }
}

/// The SLOs as last measured. Numbers are rounded strings so that noise does not cause
/// status writes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SloStatus {
    /// Availability in percent over the SLO window, e.g. "99.971".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
    /// Share of the error budget left, from 1 (untouched) to 0 (spent) or below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget_remaining: Option<String>,
    /// The same in percent, like the availability: from 100 (untouched) to 0 (spent) or below
    /// (overspent), e.g. "-7181.0". The `Budget` column of `kubectl get invsvc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget_remaining_percent: Option<String>,
    /// Burn rate per window (e.g. "5m": "0.4").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub burn_rates: BTreeMap<String, String>,
    /// The configured latency percentile in seconds, e.g. "0.183".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
}

/// Health of one zone.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneStatus {
    /// Zone name.
    pub name: String,
    /// Whether the zone is healthy; unset when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The zone's 5xx ratio, rounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<String>,
    /// Desired replicas in the zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready replicas in the zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
}

/// Where the escalation stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LadderStatus {
    /// The rung last taken in this incident; unset at rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rung: Option<Rung>,
    /// When that rung was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Every rung was tried and the service did not recover: no more actions until it
    /// recovers or the spec changes.
    #[serde(default)]
    pub exhausted: bool,
    /// The signal the incident is judged by, e.g. `unhealthyPods` or `latencySeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Its value when the last rung was taken; lower afterwards means the action helped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// One action, taken or (in DryRun) proposed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// What was done.
    pub action: ActionKind,
    /// The object acted on, e.g. `pod/billing-api-az1-7c9f-x2x`.
    pub target: String,
    /// Why, in one sentence.
    pub reason: String,
    /// The numbers behind the decision.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: Evidence,
    /// When.
    pub at: Time,
    /// Enforce (done) or DryRun (would have been done).
    pub mode: RemediationMode,
    /// Whether it helped, once verified.
    pub outcome: ActionOutcome,
}

/// What came of an action.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionOutcome {
    /// Taken; the verify window has not passed yet.
    Pending,
    /// The signal that caused it improved within the verify window.
    Helped,
    /// It did not; the ladder moved on.
    NoEffect,
    /// The API server refused it (e.g. a PodDisruptionBudget).
    Refused,
    /// Proposed in DryRun; nothing was done.
    NotTaken,
}

/// Replicas added by ScaleOut.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaledOutState {
    /// Replicas of each Deployment before the first ScaleOut; ScaleIn returns to these.
    pub baseline: BTreeMap<String, i32>,
    /// When the service was last seen unhealthy while scaled out.
    pub since: Time,
    /// The replicas the operator last set on each Deployment it scaled out. A Deployment
    /// found at another count was scaled by someone else: that count becomes its baseline
    /// instead of being scaled back in (see `operator/src/foreign.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub written: BTreeMap<String, i32>,
    /// When the operator last set them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_at: Option<Time>,
    /// Requests per second when a latency breach first scaled the service out: ScaleIn waits
    /// until the load is clearly below it (the load that caused the scale-out has gone), not
    /// only for `scaleInAfter` of health, which a surge answered by the scale-out also shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<String>,
}

/// An action in flight: what it sets, and the replicas before it. Everything the completion
/// records (history, failover and scale-out state, Events) is derived from this, never from
/// the Deployments a half-done action left behind.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InFlightAction {
    /// The action: ScaleOut, ScaleIn, ZoneFailover or ZoneFailBack.
    pub action: ActionKind,
    /// The ladder rung it belongs to; unset for reversals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rung: Option<Rung>,
    /// The zone failed over or back; unset for ScaleOut and ScaleIn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// A fail-back canary started (ZoneFailBack) or withdrawn (ZoneFailover), not a whole
    /// zone moved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
    /// The replicas each Deployment is set to. Setting a count again is harmless, so the
    /// completion sets all of them, whichever were already written.
    pub replicas: BTreeMap<String, i32>,
    /// Replicas of each of the service's Deployments before the first write: the failover's
    /// `replicasBefore` and the scale-out baseline.
    pub baseline: BTreeMap<String, i32>,
    /// Why, as the history will say.
    pub reason: String,
    /// The numbers behind the decision.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: Evidence,
    /// When the intent was written, before the first write of the action.
    pub started_at: Time,
}

/// Read-only mode entered by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadOnlyState {
    /// When read-only mode was entered.
    pub since: Time,
}

/// A zone failed over by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverState {
    /// The failed zone.
    pub zone: String,
    /// When it was failed over.
    pub since: Time,
    /// Replicas of each Deployment before the failover; fail-back restores them.
    pub replicas_before: BTreeMap<String, i32>,
    /// The canary of an automatic fail-back, while one runs in the zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryState>,
    /// Why the zone is not failed back yet (automatic fail-back): what evidence is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// A canary of a fail-back: one replica of the failed zone's Deployment restored, judged on
/// the zone's own error ratio before the rest of its replicas come back.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryState {
    /// When the canary was started.
    pub since: Time,
    /// The replicas the canary set, per Deployment of the zone.
    pub replicas: BTreeMap<String, i32>,
}
