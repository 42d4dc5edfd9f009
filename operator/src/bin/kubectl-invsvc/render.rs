//! What `kubectl invsvc` prints, from InvoiceServices and Events already read. No IO.

use std::fmt::Write as _;

use invoice_operator::{
    api::{ActionKind, ActionRecord, InvoiceService, InvoiceServiceStatus, condition_types},
    controller, report,
};
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Event, apimachinery::pkg::apis::meta::v1::Time};
use kube::ResourceExt as _;
use serde::Serialize;

/// How long ago `time` was, as kubectl prints ages (`45s`, `12m`, `3h`, `2d`).
pub fn age(time: Option<&Time>, now: Timestamp) -> String {
    let Some(time) = time else {
        return "-".to_owned();
    };
    let seconds = now.as_second().saturating_sub(time.0.as_second()).max(0);
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7_200 => format!("{}m", seconds / 60),
        7_200..172_800 => format!("{}h", seconds / 3_600),
        _ => format!("{}d", seconds / 86_400),
    }
}

fn phase(status: &InvoiceServiceStatus) -> &'static str {
    status.phase.map_or("-", |phase| phase.as_str())
}

fn condition<'a>(
    status: &'a InvoiceServiceStatus,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == kind)
}

/// `Enforce`, `DryRun`, or `Paused` when remediation is paused (spec or annotation).
fn mode(service: &InvoiceService) -> String {
    let paused = service.spec.remediation.paused
        || controller::annotation_true(service, controller::PAUSED_ANNOTATION);
    if paused {
        "Paused".to_owned()
    } else {
        format!("{:?}", service.spec.remediation.mode)
    }
}

fn ladder(status: &InvoiceServiceStatus) -> String {
    match &status.ladder {
        Some(ladder) if ladder.exhausted => "exhausted".to_owned(),
        Some(ladder) => ladder
            .rung
            .map_or_else(|| "-".to_owned(), |rung| rung.as_str().to_owned()),
        None => "-".to_owned(),
    }
}

fn action_line(record: &ActionRecord, now: Timestamp) -> String {
    format!(
        "{} ago {} {} ({:?}, {:?}): {}",
        age(Some(&record.at), now),
        record.action.as_str(),
        record.target,
        record.mode,
        record.outcome,
        record.reason
    )
}

/// The table `kubectl invsvc get` prints for many services.
pub fn table(services: &[InvoiceService], all_namespaces: bool, now: Timestamp) -> String {
    let mut rows = vec![{
        let mut header = vec![
            "NAME",
            "PHASE",
            "MODE",
            "AVAILABILITY",
            "BUDGET",
            "LADDER",
            "LAST ACTION",
            "AGE",
        ];
        if all_namespaces {
            header.insert(0, "NAMESPACE");
        }
        header.into_iter().map(str::to_owned).collect::<Vec<_>>()
    }];
    for service in services {
        let status = service.status.clone().unwrap_or_default();
        let slo = status.slo.clone().unwrap_or_default();
        let last = status.last_action.as_ref().map_or_else(
            || "-".to_owned(),
            |action| {
                format!(
                    "{} ({} ago)",
                    action.action.as_str(),
                    age(Some(&action.at), now)
                )
            },
        );
        let mut row = vec![
            service.name_any(),
            phase(&status).to_owned(),
            mode(service),
            slo.availability
                .map_or_else(|| "-".to_owned(), |value| format!("{value}%")),
            slo.error_budget_remaining_percent
                .map_or_else(|| "-".to_owned(), |value| format!("{value}%")),
            ladder(&status),
            last,
            age(service.metadata.creation_timestamp.as_ref(), now),
        ];
        if all_namespaces {
            row.insert(0, service.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    columns(&rows)
}

/// Left-aligned columns separated by three spaces, as kubectl prints them.
fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    out
}

/// One service as a tree: phase, SLO, conditions, ladder, zones, read-only and failover
/// state, the last actions.
pub fn tree(service: &InvoiceService, now: Timestamp) -> String {
    let status = service.status.clone().unwrap_or_default();
    let slos = &service.spec.slos;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}/{}: {} ({})",
        service.namespace().unwrap_or_default(),
        service.name_any(),
        phase(&status),
        mode(service)
    );
    let slo = status.slo.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "├─ SLO: availability {} (objective {}% over {}), error budget left {}",
        slo.availability
            .as_deref()
            .map_or_else(|| "unknown".to_owned(), |value| format!("{value}%")),
        slos.availability.objective,
        slos.availability.window,
        slo.error_budget_remaining_percent
            .as_deref()
            .map_or_else(|| "unknown".to_owned(), |value| format!("{value}%")),
    );
    if let Some(latency) = &slos.latency {
        let _ = writeln!(
            out,
            "│  ├─ latency p{}: {} (threshold {})",
            latency.percentile,
            slo.latency
                .as_deref()
                .map_or_else(|| "unknown".to_owned(), |value| format!("{value}s")),
            latency.threshold
        );
    }
    let burn: Vec<String> = slo
        .burn_rates
        .iter()
        .map(|(window, rate)| format!("{window} {rate}"))
        .collect();
    let _ = writeln!(
        out,
        "│  └─ burn rates: {}",
        if burn.is_empty() {
            "unknown".to_owned()
        } else {
            burn.join(" · ")
        }
    );
    let _ = writeln!(out, "├─ conditions:");
    for kind in condition_types::ALL {
        if let Some(condition) = condition(&status, kind) {
            let _ = writeln!(
                out,
                "│  ├─ {kind}={} {}: {}",
                condition.status, condition.reason, condition.message
            );
        }
    }
    let _ = writeln!(out, "├─ ladder: {}", ladder_detail(&status, now));
    if !status.zones.is_empty() {
        let zones: Vec<String> = status
            .zones
            .iter()
            .map(|zone| {
                format!(
                    "{} {} ({}/{} ready, 5xx {})",
                    zone.name,
                    match zone.healthy {
                        Some(true) => "healthy",
                        Some(false) => "UNHEALTHY",
                        None => "unknown",
                    },
                    zone.ready_replicas.unwrap_or(0),
                    zone.replicas.unwrap_or(0),
                    zone.error_ratio.as_deref().unwrap_or("-"),
                )
            })
            .collect();
        let _ = writeln!(out, "├─ zones: {}", zones.join(" · "));
    }
    if let Some(read_only) = &status.read_only {
        let _ = writeln!(out, "├─ read-only for {}", age(Some(&read_only.since), now));
    }
    if let Some(failover) = &status.failover {
        let _ = writeln!(
            out,
            "├─ failed over from {} for {}{}{}",
            failover.zone,
            age(Some(&failover.since), now),
            failover
                .canary
                .as_ref()
                .map_or_else(String::new, |canary| format!(
                    ", fail-back canary running for {}",
                    age(Some(&canary.since), now)
                )),
            failover
                .waiting
                .as_ref()
                .map_or_else(String::new, |waiting| format!(", waiting: {waiting}")),
        );
    }
    if let Some(incidents) = &status.incidents {
        if let Some(open) = &incidents.open {
            let symptoms: Vec<&str> = open.symptoms.iter().map(|s| s.as_str()).collect();
            let _ = writeln!(
                out,
                "├─ incident {} open for {} ({}){}{}",
                open.number,
                age(Some(&open.opened_at), now),
                symptoms.join(", "),
                open.rto
                    .as_deref()
                    .map_or_else(String::new, |rto| format!(", RTO {rto}")),
                open.at_risk
                    .as_ref()
                    .map_or_else(String::new, |at_risk| format!(
                        ", AT RISK: {}",
                        at_risk.reason
                    )),
            );
        }
        if let Some(summary) = incidents.recent.first().and_then(|i| i.summary.as_ref()) {
            let _ = writeln!(out, "├─ last incident: {summary}");
        }
    }
    let _ = writeln!(out, "└─ last actions:");
    if status.history.is_empty() {
        let _ = writeln!(out, "   └─ none");
    }
    for (index, record) in status.history.iter().take(5).enumerate() {
        let branch = if index + 1 == status.history.len().min(5) {
            "└─"
        } else {
            "├─"
        };
        let _ = writeln!(out, "   {branch} {}", action_line(record, now));
    }
    out
}

fn ladder_detail(status: &InvoiceServiceStatus, now: Timestamp) -> String {
    match &status.ladder {
        None => "at rest".to_owned(),
        Some(ladder) => {
            let mut text = ladder.rung.map_or_else(
                || "at rest".to_owned(),
                |rung| format!("{} for {}", rung.as_str(), age(ladder.since.as_ref(), now)),
            );
            if let (Some(signal), Some(value)) = (&ladder.signal, &ladder.value) {
                let _ = write!(text, ", judged by {signal} (was {value})");
            }
            if ladder.exhausted {
                text.push_str(", EXHAUSTED: no more actions until it recovers or the spec changes");
            }
            text
        }
    }
}

/// One entry of `kubectl invsvc history`: an action from status or an Event.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When (RFC 3339).
    pub at: String,
    /// `status` or `event`.
    pub source: &'static str,
    /// The action or the Event's reason.
    pub what: String,
    /// The rest: target, mode and outcome and reason, or the Event's message.
    pub detail: String,
}

/// The Event reasons that report an action of `kind` taken.
fn reports(kind: ActionKind, reason: &str) -> bool {
    reason == report::action_reason(kind)
        || (matches!(kind, ActionKind::ZoneFailover | ActionKind::ZoneFailBack)
            && [
                report::reasons::ZONE_CANARY_STARTED,
                report::reasons::ZONE_CANARY_WITHDRAWN,
            ]
            .contains(&reason))
}

/// The audit trail: status history and Events merged, newest first. An Event that reports
/// an action already in the history (its reason, within a few seconds) is shown once, from
/// the history.
pub fn history(service: &InvoiceService, events: &[Event]) -> Vec<HistoryEntry> {
    let status = service.status.clone().unwrap_or_default();
    let mut entries: Vec<(Timestamp, Option<ActionKind>, HistoryEntry)> = status
        .history
        .iter()
        .map(|record| {
            (
                record.at.0,
                Some(record.action),
                HistoryEntry {
                    at: record.at.0.to_string(),
                    source: "status",
                    what: record.action.as_str().to_owned(),
                    detail: format!(
                        "{} ({:?}, {:?}): {}",
                        record.target, record.mode, record.outcome, record.reason
                    ),
                },
            )
        })
        .collect();
    for event in events {
        let Some(at) = event_time(event) else {
            continue;
        };
        let reason = event.reason.clone().unwrap_or_default();
        let duplicate = entries.iter().any(|(time, kind, _)| {
            kind.is_some_and(|kind| reports(kind, &reason))
                && (time.as_second() - at.as_second()).abs() <= 5
        });
        if duplicate {
            continue;
        }
        entries.push((
            at,
            None,
            HistoryEntry {
                at: at.to_string(),
                source: "event",
                what: reason,
                detail: format!(
                    "{}{}",
                    event.message.clone().unwrap_or_default(),
                    match event.count {
                        Some(count) if count > 1 => format!(" (×{count})"),
                        _ => String::new(),
                    }
                ),
            },
        ));
    }
    entries.sort_by_key(|(time, _, _)| std::cmp::Reverse(*time));
    entries.into_iter().map(|(_, _, entry)| entry).collect()
}

fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .last_timestamp
        .as_ref()
        .map(|time| time.0)
        .or_else(|| event.event_time.as_ref().map(|time| time.0))
        .or_else(|| event.first_timestamp.as_ref().map(|time| time.0))
}

/// The history as lines.
pub fn history_text(entries: &[HistoryEntry]) -> String {
    let mut rows = vec![vec![
        "TIME".to_owned(),
        "FROM".to_owned(),
        "WHAT".to_owned(),
        "DETAIL".to_owned(),
    ]];
    rows.extend(entries.iter().map(|entry| {
        vec![
            entry.at.clone(),
            entry.source.to_owned(),
            entry.what.clone(),
            entry.detail.clone(),
        ]
    }));
    columns(&rows)
}

/// Why the last decision was what it was.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The phase.
    pub phase: String,
    /// What the operator sees wrong, from the conditions (empty when healthy).
    pub symptoms: Vec<String>,
    /// What holds remediation back: the RemediationAllowed condition when false, a paused or
    /// DryRun mode, an exhausted ladder.
    pub gates: Vec<String>,
    /// Conditions with a `for` duration that are being timed, and since when.
    pub waiting_for: Vec<String>,
    /// The last action (or proposal) and the numbers behind it.
    pub last_action: Option<String>,
    /// Its evidence.
    pub evidence: Vec<String>,
}

/// Builds the [`Explanation`] from the service's status.
pub fn explain(service: &InvoiceService, now: Timestamp) -> Explanation {
    let status = service.status.clone().unwrap_or_default();
    let mut explanation = Explanation {
        phase: phase(&status).to_owned(),
        ..Explanation::default()
    };
    let problem = |kind: &str, bad: &str| {
        condition(&status, kind)
            .filter(|condition| condition.status == bad)
            .map(|condition| format!("{kind}={bad} {}: {}", condition.reason, condition.message))
    };
    explanation.symptoms.extend(
        [
            problem(condition_types::READY, "False"),
            problem(condition_types::SIGNALS_TRUSTED, "False"),
            problem(condition_types::SLO_MET, "False"),
            problem(condition_types::NEEDS_ATTENTION, "True"),
        ]
        .into_iter()
        .flatten(),
    );
    if let Some(condition) = condition(&status, condition_types::SLO_MET)
        .filter(|condition| condition.status == "True" && condition.reason == "BudgetBurning")
    {
        explanation
            .symptoms
            .push(format!("SLOMet BudgetBurning: {}", condition.message));
    }
    explanation
        .gates
        .extend(problem(condition_types::REMEDIATION_ALLOWED, "False"));
    match mode(service).as_str() {
        "Paused" => explanation.gates.push(
            "remediation is paused (spec.remediation.paused or the paused annotation)".to_owned(),
        ),
        "DryRun" => explanation
            .gates
            .push("DryRun: actions are proposed, not taken".to_owned()),
        _ => {}
    }
    if status
        .ladder
        .as_ref()
        .is_some_and(|ladder| ladder.exhausted)
    {
        explanation
            .gates
            .push("the ladder is exhausted: every rung was tried".to_owned());
    }
    explanation.waiting_for = status
        .held_since
        .iter()
        .map(|(what, since)| format!("{what} for {}", age(Some(since), now)))
        .collect();
    if let Some(action) = &status.last_action {
        explanation.last_action = Some(action_line(action, now));
        explanation.evidence = action
            .evidence
            .iter()
            .map(|(key, value)| format!("{key} = {value}"))
            .collect();
    }
    explanation
}

/// The explanation as text.
pub fn explanation_text(service: &InvoiceService, explanation: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}/{} is {}",
        service.namespace().unwrap_or_default(),
        service.name_any(),
        explanation.phase
    );
    let section = |out: &mut String, title: &str, lines: &[String], empty: &str| {
        let _ = writeln!(out, "{title}:");
        if lines.is_empty() {
            let _ = writeln!(out, "  {empty}");
        }
        for line in lines {
            let _ = writeln!(out, "  - {line}");
        }
    };
    section(
        &mut out,
        "Symptoms",
        &explanation.symptoms,
        "none: signals trusted, SLOs met, nothing needs a human",
    );
    section(
        &mut out,
        "Gates",
        &explanation.gates,
        "none: remediation is allowed",
    );
    section(
        &mut out,
        "Timing",
        &explanation.waiting_for,
        "no condition being timed",
    );
    let _ = writeln!(
        out,
        "Last action: {}",
        explanation.last_action.as_deref().unwrap_or("none")
    );
    section(&mut out, "Evidence", &explanation.evidence, "-");
    out
}
