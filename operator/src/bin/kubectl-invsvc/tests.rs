use invoice_operator::api::InvoiceService;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use serde_json::json;

use crate::render;

fn now() -> Timestamp {
    "2026-12-02T10:00:00Z".parse().unwrap()
}

/// A service in `namespace`/`name` with `status` (as the operator writes it) and `extra`
/// merged into its spec's remediation.
fn service(
    name: &str,
    remediation: serde_json::Value,
    status: serde_json::Value,
) -> InvoiceService {
    serde_json::from_value(json!({
        "apiVersion": "invoiceops.dev/v1alpha1",
        "kind": "InvoiceService",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": format!("uid-{name}"),
            "creationTimestamp": "2026-11-30T10:00:00Z",
        },
        "spec": {
            "workload": {"deployments": [{"name": format!("{name}-az1"), "zone": "az1"}]},
            "slos": {
                "availability": {"objective": "99.9", "window": "30d"},
                "latency": {"threshold": "200ms", "percentile": "99"},
            },
            "remediation": remediation,
        },
        "status": status,
    }))
    .expect("a valid InvoiceService")
}

fn restarted() -> serde_json::Value {
    json!({
        "action": "RestartPod",
        "target": "pod/billing-az1-x2x",
        "reason": "pod 5xx ratio 0.61 over 0.2 for 1m",
        "evidence": {"errorRatio": "0.61", "threshold": "0.2"},
        "at": "2026-12-02T09:57:00Z",
        "mode": "Enforce",
        "outcome": "Helped",
    })
}

fn degraded_status() -> serde_json::Value {
    json!({
        "phase": "FailedOver",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Managed", "message": "ok",
             "lastTransitionTime": "2026-12-01T10:00:00Z"},
            {"type": "RemediationAllowed", "status": "False", "reason": "StormGate",
             "message": "12 of 40 services in trouble (30 %): a shared cause", "lastTransitionTime": "2026-12-02T09:58:00Z"},
            {"type": "NeedsAttention", "status": "True", "reason": "LadderExhausted",
             "message": "every rung was tried", "lastTransitionTime": "2026-12-02T09:59:00Z"},
        ],
        "slo": {"availability": "99.71", "errorBudgetRemaining": "-1.9", "errorBudgetRemainingPercent": "-190.0", "burnRates": {"5m": "14.2", "1h": "6.1"}, "latency": "0.183"},
        "zones": [
            {"name": "az1", "healthy": true, "errorRatio": "0.001", "replicas": 4, "readyReplicas": 4},
            {"name": "az2", "healthy": false, "errorRatio": "0.9", "replicas": 0, "readyReplicas": 0},
        ],
        "ladder": {"rung": "ZoneFailover", "since": "2026-12-02T09:50:00Z", "exhausted": true,
                   "signal": "errorRatio", "value": "0.9"},
        "lastAction": restarted(),
        "history": [restarted(), {
            "action": "ZoneFailover", "target": "zone/az2", "reason": "az2 5xx 0.9",
            "at": "2026-12-02T09:50:00Z", "mode": "Enforce", "outcome": "NoEffect",
        }],
        "failover": {"zone": "az2", "since": "2026-12-02T09:50:00Z", "replicasBefore": {"billing-az2": 2},
                     "canary": {"since": "2026-12-02T09:58:00Z", "replicas": {"billing-az2": 1}}},
        "heldSince": {"Zone/az2/Healthy": "2026-12-02T09:59:30Z"},
    })
}

#[test]
fn the_table_shows_phase_mode_slo_and_the_last_action() {
    let mut paused = service("paused", json!({}), json!({"phase": "Paused"}));
    paused
        .metadata
        .annotations
        .get_or_insert_default()
        .insert("invoiceops.dev/paused".to_owned(), "true".to_owned());
    let services = [
        service("billing", json!({}), degraded_status()),
        service("dry", json!({"mode": "DryRun"}), json!({})),
        paused,
    ];
    let text = render::table(&services, true, now());
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE   NAME      PHASE"),
        "{text}"
    );
    assert!(
        lines[1].contains(
            "shop        billing   FailedOver   Enforce   99.71%         -190.0%   exhausted"
        ) && lines[1].contains("exhausted")
            && lines[1].contains("RestartPod (3m ago)")
            && lines[1].ends_with("2d"),
        "{text}"
    );
    assert!(lines[2].contains("dry       -            DryRun"), "{text}");
    assert!(lines[3].contains("Paused       Paused"), "{text}");
}

#[test]
fn the_tree_shows_slo_conditions_ladder_zones_failover_and_actions() {
    let text = render::tree(&service("billing", json!({}), degraded_status()), now());
    for expected in [
        "shop/billing: FailedOver (Enforce)",
        "SLO: availability 99.71% (objective 99.9% over 30d), error budget left -190.0%",
        "latency p99: 0.183s (threshold 200ms)",
        "burn rates: 1h 6.1 · 5m 14.2",
        "RemediationAllowed=False StormGate: 12 of 40 services in trouble",
        "ladder: ZoneFailover for 10m, judged by errorRatio (was 0.9), EXHAUSTED",
        "zones: az1 healthy (4/4 ready, 5xx 0.001) · az2 UNHEALTHY (0/0 ready, 5xx 0.9)",
        "failed over from az2 for 10m, fail-back canary running for 2m",
        "├─ 3m ago RestartPod pod/billing-az1-x2x (Enforce, Helped): pod 5xx ratio 0.61",
        "└─ 10m ago ZoneFailover zone/az2 (Enforce, NoEffect)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let bare = render::tree(&service("new", json!({}), json!({})), now());
    assert!(
        bare.contains("availability unknown") && bare.contains("└─ none"),
        "{bare}"
    );
}

fn event(reason: &str, message: &str, at: &str, count: i32) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("billing.{reason}"), "namespace": "shop"},
        "involvedObject": {"kind": "InvoiceService", "name": "billing", "namespace": "shop"},
        "reason": reason,
        "message": message,
        "lastTimestamp": at,
        "count": count,
    }))
    .unwrap()
}

#[test]
fn the_history_merges_status_and_events_newest_first_without_doubles() {
    let service = service("billing", json!({}), degraded_status());
    let events = [
        // The Event of the restart already in status: shown once.
        event(
            "PodRestarted",
            "evicted pod/billing-az1-x2x",
            "2026-12-02T09:57:02Z",
            1,
        ),
        event(
            "RemediationBlocked",
            "storm gate closed",
            "2026-12-02T09:58:00Z",
            3,
        ),
        event("SpecAccepted", "managed", "2026-11-30T10:00:05Z", 1),
    ];
    let entries = render::history(&service, &events);
    let summary: Vec<(&str, &str)> = entries
        .iter()
        .map(|entry| (entry.source, entry.what.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("event", "RemediationBlocked"),
            ("status", "RestartPod"),
            ("status", "ZoneFailover"),
            ("event", "SpecAccepted"),
        ]
    );
    assert_eq!(entries[0].detail, "storm gate closed (×3)");
    let text = render::history_text(&entries);
    assert!(text.starts_with("TIME"), "{text}");
    assert!(text.contains("status   RestartPod"), "{text}");
}

#[test]
fn explain_names_symptoms_gates_timers_and_evidence() {
    let explanation = render::explain(
        &service("billing", json!({"mode": "DryRun"}), degraded_status()),
        now(),
    );
    assert_eq!(explanation.phase, "FailedOver");
    assert_eq!(
        explanation.symptoms,
        ["NeedsAttention=True LadderExhausted: every rung was tried"]
    );
    assert_eq!(
        explanation.gates,
        [
            "RemediationAllowed=False StormGate: 12 of 40 services in trouble (30 %): a shared cause",
            "DryRun: actions are proposed, not taken",
            "the ladder is exhausted: every rung was tried",
        ]
    );
    assert_eq!(explanation.waiting_for, ["Zone/az2/Healthy for 30s"]);
    assert_eq!(
        explanation.evidence,
        ["errorRatio = 0.61", "threshold = 0.2"]
    );
    let healthy = render::explain(
        &service("ok", json!({}), json!({"phase": "Healthy"})),
        now(),
    );
    let text = render::explanation_text(&service("ok", json!({}), json!({})), &healthy);
    assert!(
        text.contains("Symptoms:\n  none") && text.contains("Gates:\n  none"),
        "{text}"
    );
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["gates"].as_array().unwrap().len(), 3);
}
