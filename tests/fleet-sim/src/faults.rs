//! Faults the simulator injects, as posted to `POST /faults` or listed in a scenario file.
//! No IO.

use serde::{Deserialize, Serialize};

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// One pod leaks connections: its 5xx ratio climbs (`ratio`, default 0.6). Sticks to the
    /// pod name, so a replacement pod is healthy.
    PodErrors,
    /// A bad config on every pod of the service: 5xx (`ratio`, default 0.5), replacements
    /// included.
    ServiceErrors,
    /// Sale day: the service's request rate times `factor` (default 2).
    Surge,
    /// The primary struggles: writers want `factor` of the pool (default 215/200).
    DbPool,
    /// The zone `zone` lost its network: its pods answer 5xx while they get traffic.
    ZoneDown,
    /// A firewall answers 403 (`ratio`, default 0.5).
    ClientErrors,
}

/// One injected fault. `namespace` is required; `service`, `pod` and `zone` narrow it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Namespace of the affected InvoiceService.
    pub namespace: String,
    /// The InvoiceService; all services of the namespace when absent.
    #[serde(default)]
    pub service: Option<String>,
    /// What goes wrong.
    pub kind: FaultKind,
    /// The pod (`pod-errors`).
    #[serde(default)]
    pub pod: Option<String>,
    /// The zone (`zone-down`).
    #[serde(default)]
    pub zone: Option<String>,
    /// Share of requests failing (`pod-errors`, `service-errors`, `client-errors`).
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Multiplier (`surge`, `db-pool`).
    #[serde(default)]
    pub factor: Option<f64>,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        formatter.write_str(&text)
    }
}

/// One step of a scenario file (a JSON array of steps): after `after_seconds` from start,
/// inject `fault`, or clear all faults when `fault` is absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioStep {
    /// Seconds after the simulator started.
    pub after_seconds: f64,
    /// The fault to inject; `None` clears every fault.
    #[serde(default)]
    pub fault: Option<Fault>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_the_documented_json() {
        let cases = [
            (
                r#"{"namespace":"n","service":"s","kind":"pod-errors","pod":"p"}"#,
                FaultKind::PodErrors,
            ),
            (
                r#"{"namespace":"n","kind":"surge","factor":3}"#,
                FaultKind::Surge,
            ),
            (
                r#"{"namespace":"n","kind":"zone-down","zone":"az2"}"#,
                FaultKind::ZoneDown,
            ),
            (r#"{"namespace":"n","kind":"db-pool"}"#, FaultKind::DbPool),
            (
                r#"{"namespace":"n","kind":"client-errors","ratio":0.4}"#,
                FaultKind::ClientErrors,
            ),
            (
                r#"{"namespace":"n","kind":"service-errors"}"#,
                FaultKind::ServiceErrors,
            ),
        ];
        for (json, kind) in cases {
            let fault: Fault = serde_json::from_str(json).expect(json);
            assert_eq!(fault.kind, kind);
        }
        assert!(serde_json::from_str::<Fault>(r#"{"namespace":"n","kind":"meteor"}"#).is_err());
    }

    #[test]
    fn scenario_steps_inject_or_clear() {
        let steps: Vec<ScenarioStep> = serde_json::from_str(
            r#"[{"after_seconds": 5, "fault": {"namespace": "n", "kind": "surge"}},
                {"after_seconds": 60}]"#,
        )
        .expect("valid scenario");
        assert_eq!(steps.len(), 2);
        assert_eq!(
            steps[0].fault.as_ref().map(|fault| fault.kind),
            Some(FaultKind::Surge)
        );
        assert!(steps[1].fault.is_none());
    }
}
