//! The vocabulary of a decision: what `decide` reads ([`DecisionInput`]) and what it answers
//! ([`Decision`]: one [`Outcome`] with the judgement that goes with it).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{
        ActionKind, ActionOutcome, Evidence, IncidentSymptom, InvoiceServiceSpec,
        InvoiceServiceStatus, LadderStatus, Rung,
    },
    evaluate::Evaluation,
    signals::DeploymentState,
};

/// Why a candidate action was not taken. Every blocked decision names exactly one gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gate {
    /// `spec.remediation.paused` or the paused annotation.
    Paused,
    /// Too many InvoiceServices unhealthy at once: the cause is probably shared.
    StormGate,
    /// Argo Rollouts is changing one of the service's Rollouts (an update under way, or
    /// paused): its own steps and analysis are in charge until the update ends or aborts.
    RolloutInProgress,
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
            Self::RolloutInProgress => "RolloutInProgress",
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

/// An action together with what it touches: each kind of action carries exactly the target
/// it acts on, so an action can never name a target it cannot act on.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Evict these pods.
    RestartPod {
        /// The pods, worst first.
        pods: Vec<String>,
    },
    /// Roll these Deployments.
    RolloutRestart {
        /// The Deployments.
        deployments: Vec<String>,
    },
    /// Raise the replicas of Deployments.
    ScaleOut {
        /// New replica count per Deployment.
        replicas: BTreeMap<String, i32>,
    },
    /// Lower the replicas of Deployments back towards their baseline.
    ScaleIn {
        /// New replica count per Deployment.
        replicas: BTreeMap<String, i32>,
    },
    /// Switch the app to read-only mode.
    EnterReadOnly,
    /// Switch the app back to read-write mode.
    ExitReadOnly,
    /// Move a zone's capacity to the other zones.
    ZoneFailover {
        /// The failed zone.
        zone: String,
        /// Replicas per Deployment after the move; empty for a single Deployment, which is
        /// steered by node affinity instead.
        replicas: BTreeMap<String, i32>,
        /// Only the fail-back canary is taken back (its Deployment to 0): the failover holds.
        canary: bool,
    },
    /// Give a failed-over zone its capacity back.
    ZoneFailBack {
        /// The zone.
        zone: String,
        /// Replicas per Deployment after the move; empty for a single Deployment, which is
        /// steered by node affinity instead.
        replicas: BTreeMap<String, i32>,
        /// Only a canary replica is restored, to be judged before the rest.
        canary: bool,
    },
}

impl Step {
    /// The kind of action, for status, metrics and Events.
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::RestartPod { .. } => ActionKind::RestartPod,
            Self::RolloutRestart { .. } => ActionKind::RolloutRestart,
            Self::ScaleOut { .. } => ActionKind::ScaleOut,
            Self::ScaleIn { .. } => ActionKind::ScaleIn,
            Self::EnterReadOnly => ActionKind::EnterReadOnly,
            Self::ExitReadOnly => ActionKind::ExitReadOnly,
            Self::ZoneFailover { .. } => ActionKind::ZoneFailover,
            Self::ZoneFailBack { .. } => ActionKind::ZoneFailBack,
        }
    }

    /// The replica counts the step sets, if it sets any (empty for a zone move that steers a
    /// single Deployment).
    pub fn replicas(&self) -> Option<&BTreeMap<String, i32>> {
        match self {
            Self::ScaleOut { replicas }
            | Self::ScaleIn { replicas }
            | Self::ZoneFailover { replicas, .. }
            | Self::ZoneFailBack { replicas, .. } => Some(replicas),
            Self::RestartPod { .. }
            | Self::RolloutRestart { .. }
            | Self::EnterReadOnly
            | Self::ExitReadOnly => None,
        }
    }

    /// A short description of the touched objects, e.g. `pod/a,pod/b`.
    pub fn describe(&self) -> String {
        match self {
            Self::RestartPod { pods } => describe_objects("pod", pods.iter()),
            Self::RolloutRestart { deployments } => {
                describe_objects("deployment", deployments.iter())
            }
            Self::ScaleOut { replicas } | Self::ScaleIn { replicas } => {
                describe_objects("deployment", replicas.keys())
            }
            Self::EnterReadOnly | Self::ExitReadOnly => "mode-switch".to_owned(),
            Self::ZoneFailover { zone, .. } | Self::ZoneFailBack { zone, .. } => {
                format!("zone/{zone}")
            }
        }
    }

    /// A fail-back canary started or withdrawn, rather than a whole zone moved.
    pub fn is_canary(&self) -> bool {
        matches!(
            self,
            Self::ZoneFailover { canary: true, .. } | Self::ZoneFailBack { canary: true, .. }
        )
    }
}

/// `kind/name` of each object, comma-separated.
pub(super) fn describe_objects<'a>(kind: &str, names: impl Iterator<Item = &'a String>) -> String {
    names
        .map(|name| format!("{kind}/{name}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// An action the decision chose.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedAction {
    /// What to do, and to what.
    pub step: Step,
    /// The ladder rung it belongs to; `None` for reversals.
    pub rung: Option<Rung>,
    /// Why, in one sentence.
    pub reason: String,
    /// The numbers behind it.
    pub evidence: Evidence,
    /// The signal the action should improve and its value now (for verification).
    pub signal: Option<(String, f64)>,
}

impl PlannedAction {
    /// A reversal (no rung, no signal to verify) of `step`.
    pub fn reversal(step: Step, reason: String, evidence: Evidence) -> Self {
        Self {
            step,
            rung: None,
            reason,
            evidence,
            signal: None,
        }
    }

    /// The kind of action, for status, metrics and Events.
    pub fn kind(&self) -> ActionKind {
        self.step.kind()
    }
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

/// What a decision comes to: one action, one gate that stopped it, a reason to wait, or
/// nothing at all.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Outcome {
    /// Nothing to do and nothing stopped.
    #[default]
    Idle,
    /// The action to take (Enforce), or to report as "would" (`dry_run`, DryRun).
    Act {
        /// The action.
        action: PlannedAction,
        /// True in DryRun: report the action, do nothing.
        dry_run: bool,
    },
    /// The candidate a gate stopped.
    Blocked(Blocked),
    /// Why nothing happened although something is wrong (e.g. verifying the last action).
    Waiting(String),
}

/// The outcome of one decision, with the judgement that goes with it whatever the outcome.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Decision {
    /// What was decided.
    pub outcome: Outcome,
    /// Verdict on the pending last action, when it is due now.
    pub verdict: Option<ActionOutcome>,
    /// The ladder after this decision.
    pub ladder: Option<LadderStatus>,
    /// Timers after this decision (`status.heldSince`).
    pub held_since: BTreeMap<String, Time>,
    /// Things for a human.
    pub attention: Vec<Attention>,
    /// A new peak of the request rate while scaled out for load (`status.scaledOut.requestRate`).
    pub load_peak: Option<String>,
    /// Why the failed-over zone is not failed back yet (`status.failover.waiting`).
    pub fail_back_waiting: Option<String>,
    /// The symptom decided on, if any (for the incident record).
    pub symptom: Option<IncidentSymptom>,
}

impl Decision {
    /// The action decided (to take, or in DryRun to report), if any.
    pub fn action(&self) -> Option<&PlannedAction> {
        match &self.outcome {
            Outcome::Act { action, .. } => Some(action),
            _ => None,
        }
    }

    /// The candidate a gate stopped, if any.
    pub fn blocked(&self) -> Option<&Blocked> {
        match &self.outcome {
            Outcome::Blocked(blocked) => Some(blocked),
            _ => None,
        }
    }

    /// Why nothing happened, when the decision is to wait.
    pub fn waiting(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Waiting(why) => Some(why),
            _ => None,
        }
    }
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

impl DecisionInput<'_> {
    /// Replicas per existing Deployment.
    pub(super) fn current_replicas(&self) -> BTreeMap<String, i32> {
        self.deployments
            .iter()
            .filter(|deployment| deployment.exists)
            .map(|deployment| (deployment.name.clone(), deployment.replicas))
            .collect()
    }

    /// The zone failed over now, if any.
    pub(super) fn failed_zone(&self) -> Option<&str> {
        self.status
            .failover
            .as_ref()
            .map(|state| state.zone.as_str())
    }
}
