//! Spec validation done by the operator. The API server already refuses what the schema and
//! CEL rules can say; this checks those rules again (a cluster may run an older CRD) plus what
//! only the operator can judge: cron syntax, time zones, PromQL, window arithmetic, URLs. An
//! invalid spec is marked `Ready=False` with reason `InvalidSpec` and is never acted on. Pure,
//! no IO.

use std::{collections::BTreeSet, fmt, str::FromStr, time::Duration as StdDuration};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use promql_parser::parser::value::ValueType;

use super::spec::{
    InvoiceServiceSpec, ReadOnlyPolicy, RecoverySlo, RemediationMode, Rung, WorkloadKind,
};

/// The shortest evaluation interval: Prometheus scrapes every 5-30 s, so evaluating faster
/// only re-reads the same samples.
pub const MIN_INTERVAL: StdDuration = StdDuration::from_secs(5);

/// The longest a blackout window may stay open: a month-end run, not a permanent freeze.
pub const MAX_BLACKOUT: StdDuration = StdDuration::from_secs(31 * 24 * 3600);

/// One thing wrong with a spec, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// JSON path of the field, e.g. `spec.remediation.scale.minReplicas`.
    pub field: String,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.field, self.message)
    }
}

/// Collects problems while walking the spec.
#[derive(Default)]
struct Problems(Vec<SpecProblem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecProblem {
            field: field.into(),
            message: message.into(),
        });
    }

    fn check(&mut self, ok: bool, field: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.add(field, message());
        }
    }
}

/// Every problem of the spec, in field order; empty when it is valid.
pub fn validate(spec: &InvoiceServiceSpec) -> Vec<SpecProblem> {
    let mut problems = Problems::default();
    validate_workload(spec, &mut problems);
    validate_signals(spec, &mut problems);
    validate_slos(spec, &mut problems);
    validate_remediation(spec, &mut problems);
    problems.0
}

fn validate_workload(spec: &InvoiceServiceSpec, problems: &mut Problems) {
    let workload = &spec.workload;
    match (&workload.deployments, &workload.deployment) {
        (Some(_), Some(_)) | (None, None) => problems.add(
            "spec.workload",
            "set exactly one of deployments (one per zone) and deployment (one spread over zones)",
        ),
        _ => {}
    }
    if let Some(deployments) = &workload.deployments {
        problems.check(!deployments.is_empty(), "spec.workload.deployments", || {
            "must name at least one deployment".to_owned()
        });
        report_duplicates(
            deployments.iter().map(|d| d.zone.as_str()),
            "spec.workload.deployments",
            "zone",
            problems,
        );
        report_duplicates(
            deployments.iter().map(|d| d.name.as_str()),
            "spec.workload.deployments",
            "deployment name",
            problems,
        );
    }
    if let Some(zones) = &workload.zones {
        problems.check(workload.deployment.is_some(), "spec.workload.zones", || {
            "only for a single deployment; per-zone deployments name their zone".to_owned()
        });
        problems.check(
            workload.kind != WorkloadKind::Rollout,
            "spec.workload.zones",
            || {
                "failover by node affinity is for a single Deployment: a Rollout's pod-template \
                 change goes through its own rollout steps; use one Rollout per zone"
                    .to_owned()
            },
        );
        report_duplicates(
            zones.iter().map(String::as_str),
            "spec.workload.zones",
            "zone",
            problems,
        );
    }
}

fn report_duplicates<'a>(
    values: impl Iterator<Item = &'a str>,
    field: &str,
    what: &str,
    problems: &mut Problems,
) {
    let mut seen = BTreeSet::new();
    for value in values {
        if !seen.insert(value) {
            problems.add(field, format!("{what} {value:?} appears more than once"));
        }
    }
}

fn validate_signals(spec: &InvoiceServiceSpec, problems: &mut Problems) {
    let signals = &spec.signals;
    problems.check(
        signals.interval.get() >= MIN_INTERVAL,
        "spec.signals.interval",
        || format!("{} is shorter than the minimum of 5s", signals.interval),
    );
    if let Some(prometheus) = &signals.prometheus
        && let Err(message) = check_prometheus_url(&prometheus.url)
    {
        problems.add("spec.signals.prometheus.url", message);
    }
    if let Some(queries) = &signals.queries {
        let named = [
            ("errorRatio", &queries.error_ratio),
            ("requestRate", &queries.request_rate),
            ("latency", &queries.latency),
            ("dbPoolUtilization", &queries.db_pool_utilization),
        ];
        for (name, query) in named {
            if let Some(query) = query {
                let field = format!("spec.signals.queries.{name}");
                if query.trim().is_empty() {
                    problems.add(field, "must not be blank");
                } else if let Err(message) = check_custom_promql(query) {
                    problems.add(field, message);
                }
            }
        }
    }
    if let Some(expiry) = &signals.certificate_expiry {
        problems.check(
            !expiry.warn_before.get().is_zero(),
            "spec.signals.certificateExpiry.warnBefore",
            || "must be longer than 0s".to_owned(),
        );
    }
}

fn validate_slos(spec: &InvoiceServiceSpec, problems: &mut Problems) {
    let availability = &spec.slos.availability;
    check_percentage(
        availability.objective.get(),
        &availability.objective,
        "spec.slos.availability.objective",
        " (percent)",
        problems,
    );
    let window = availability.window.get();
    problems.check(!window.is_zero(), "spec.slos.availability.window", || {
        "must be longer than 0s".to_owned()
    });
    for (index, burn) in availability.burn_rate_windows.iter().enumerate() {
        let field = format!("spec.slos.availability.burnRateWindows[{index}]");
        problems.check(burn.factor.get() > 0.0, &format!("{field}.factor"), || {
            format!("{} must be greater than 0", burn.factor)
        });
        problems.check(
            !burn.short.get().is_zero() && burn.short.get() < burn.long.get(),
            &format!("{field}.short"),
            || {
                format!(
                    "{} must be shorter than the long window {}",
                    burn.short, burn.long
                )
            },
        );
        problems.check(burn.long.get() <= window, &format!("{field}.long"), || {
            format!(
                "{} must not exceed the SLO window {}",
                burn.long, availability.window
            )
        });
    }
    if let Some(latency) = &spec.slos.latency {
        problems.check(
            !latency.threshold.get().is_zero(),
            "spec.slos.latency.threshold",
            || "must be longer than 0s".to_owned(),
        );
        check_percentage(
            latency.percentile.get(),
            &latency.percentile,
            "spec.slos.latency.percentile",
            "",
            problems,
        );
    }
    if let Some(recovery) = &spec.slos.recovery {
        validate_recovery(spec, recovery, problems);
    }
}

/// The recovery objectives: an RTO and a settle period the evaluation interval can resolve,
/// the at-risk share a share.
fn validate_recovery(spec: &InvoiceServiceSpec, recovery: &RecoverySlo, problems: &mut Problems) {
    let interval = &spec.signals.interval;
    problems.check(
        recovery.rto.get() >= interval.get(),
        "spec.slos.recovery.rto",
        || {
            format!(
                "{} is shorter than signals.interval {interval}: no incident could be recovered in time",
                recovery.rto
            )
        },
    );
    problems.check(
        recovery.settle_for.get() >= interval.get(),
        "spec.slos.recovery.settleFor",
        || {
            format!(
                "{} is shorter than signals.interval {interval}: health could not be seen to settle",
                recovery.settle_for
            )
        },
    );
    let share = recovery.at_risk_after.get();
    problems.check(
        share > 0.0 && share <= 1.0,
        "spec.slos.recovery.atRiskAfter",
        || {
            format!(
                "{} must be greater than 0 and at most 1 (a share of the RTO)",
                recovery.at_risk_after
            )
        },
    );
    if let Some(rpo) = &recovery.rpo {
        problems.check(!rpo.get().is_zero(), "spec.slos.recovery.rpo", || {
            "must be longer than 0s".to_owned()
        });
    }
}

fn validate_remediation(spec: &InvoiceServiceSpec, problems: &mut Problems) {
    validate_budget(spec, problems);
    validate_verify_window(spec, problems);
    validate_max_unhealthy_pods(&spec.remediation.max_unhealthy_pods, problems);
    if let Some(ladder) = &spec.remediation.ladder {
        validate_ladder(spec, ladder, problems);
    }
    validate_restart_pod(spec, problems);
    validate_scale(spec, problems);
    if let Some(read_only) = &spec.remediation.read_only {
        validate_read_only(read_only, problems);
    }
    validate_zone_failover(spec, problems);
    validate_blackout_windows(spec, problems);
}

fn validate_budget(spec: &InvoiceServiceSpec, problems: &mut Problems) {
    let remediation = &spec.remediation;
    problems.check(
        remediation.budget.max_actions > 0 || remediation.mode == RemediationMode::DryRun,
        "spec.remediation.budget.maxActions",
        || {
            "0 allows no action at all; with mode Enforce it must be at least 1 (use mode \
             DryRun, or paused, to keep the operator from acting)"
                .to_owned()
        },
    );
    if remediation.budget.max_actions > 0 {
        problems.check(
            !remediation.budget.per.get().is_zero(),
            "spec.remediation.budget.per",
            || "must be longer than 0s".to_owned(),
        );
    }
}

fn validate_verify_window(spec: &InvoiceServiceSpec, problems: &mut Problems) {
    let remediation = &spec.remediation;
    problems.check(
        remediation.verify_window.get() >= spec.signals.interval.get(),
        "spec.remediation.verifyWindow",
        || {
            format!(
                "{} is shorter than signals.interval {}: an action could never be verified",
                remediation.verify_window, spec.signals.interval
            )
        },
    );
}

fn validate_ladder(spec: &InvoiceServiceSpec, ladder: &[Rung], problems: &mut Problems) {
    problems.check(!ladder.is_empty(), "spec.remediation.ladder", || {
        "must name at least one rung (omit it for the default ladder)".to_owned()
    });
    report_duplicates(
        ladder.iter().map(|rung| rung.as_str()),
        "spec.remediation.ladder",
        "rung",
        problems,
    );
    if ladder.contains(&Rung::ZoneFailover) {
        let zones = spec.workload.zone_names().len();
        problems.check(zones >= 2, "spec.remediation.ladder", || {
            format!("ZoneFailover needs at least two zones in spec.workload, found {zones}")
        });
    }
    if ladder.contains(&Rung::ReadOnly) {
        problems.check(
            spec.remediation.read_only.is_some(),
            "spec.remediation.ladder",
            || "ReadOnly needs spec.remediation.readOnly (how to switch the app)".to_owned(),
        );
    }
}

fn validate_restart_pod(spec: &InvoiceServiceSpec, problems: &mut Problems) {
    let restart = &spec.remediation.restart_pod;
    check_ratio(
        restart.error_ratio_above.get(),
        "spec.remediation.restartPod.errorRatioAbove",
        problems,
    );
    problems.check(
        restart.max_unavailable >= 1,
        "spec.remediation.restartPod.maxUnavailable",
        || "must be at least 1".to_owned(),
    );
}

fn validate_scale(spec: &InvoiceServiceSpec, problems: &mut Problems) {
    let scale = &spec.remediation.scale;
    problems.check(
        scale.min_replicas >= 1,
        "spec.remediation.scale.minReplicas",
        || "must be at least 1".to_owned(),
    );
    problems.check(
        scale.min_replicas <= scale.max_replicas,
        "spec.remediation.scale.minReplicas",
        || {
            format!(
                "{} must not exceed maxReplicas {}",
                scale.min_replicas, scale.max_replicas
            )
        },
    );
    problems.check(scale.step >= 1, "spec.remediation.scale.step", || {
        "must be at least 1".to_owned()
    });
}

fn validate_read_only(read_only: &ReadOnlyPolicy, problems: &mut Problems) {
    let enter = read_only.enter_when.db_pool_utilization_above.get();
    let exit = read_only.exit_when.db_pool_utilization_below.get();
    check_ratio(
        enter,
        "spec.remediation.readOnly.enterWhen.dbPoolUtilizationAbove",
        problems,
    );
    check_ratio(
        exit,
        "spec.remediation.readOnly.exitWhen.dbPoolUtilizationBelow",
        problems,
    );
    problems.check(
        exit < enter,
        "spec.remediation.readOnly.exitWhen.dbPoolUtilizationBelow",
        || format!("{exit} must be lower than enterWhen.dbPoolUtilizationAbove {enter}"),
    );
}

fn validate_zone_failover(spec: &InvoiceServiceSpec, problems: &mut Problems) {
    let failover = &spec.remediation.zone_failover;
    check_ratio(
        failover.unhealthy_when.zone_error_ratio_above.get(),
        "spec.remediation.zoneFailover.unhealthyWhen.zoneErrorRatioAbove",
        problems,
    );
    let canary_for = &failover.fail_back.canary_for;
    problems.check(
        canary_for.get() >= spec.signals.interval.get(),
        "spec.remediation.zoneFailover.failBack.canaryFor",
        || {
            format!(
                "{canary_for} is shorter than signals.interval {}: a canary could never be judged",
                spec.signals.interval
            )
        },
    );
    if spec.effective_ladder().contains(&Rung::ZoneFailover) {
        let zones = spec.workload.zone_names().len();
        let min_healthy = failover.min_healthy_zones as usize;
        problems.check(
            min_healthy < zones,
            "spec.remediation.zoneFailover.minHealthyZones",
            || format!("{min_healthy} leaves no zone that could fail over among {zones} zones"),
        );
    }
}

fn validate_blackout_windows(spec: &InvoiceServiceSpec, problems: &mut Problems) {
    for (index, window) in spec.remediation.blackout_windows.iter().enumerate() {
        let field = format!("spec.remediation.blackoutWindows[{index}]");
        if let Err(error) = croner::Cron::from_str(&window.schedule) {
            problems.add(
                format!("{field}.schedule"),
                format!(
                    "{:?} is not a five-field cron expression: {}",
                    window.schedule,
                    error.to_string().trim_end_matches('.').to_lowercase()
                ),
            );
        }
        if let (Some(name), Err(error)) = (&window.time_zone, window.zone()) {
            problems.add(
                format!("{field}.timeZone"),
                format!(
                    "{name:?} is not a time zone of the IANA database (such as \"Europe/Berlin\"): {}",
                    error.to_string().trim_end_matches('.')
                ),
            );
        }
        let duration = window.duration.get();
        problems.check(
            !duration.is_zero() && duration <= MAX_BLACKOUT,
            &format!("{field}.duration"),
            || format!("{} must be longer than 0s and at most 31d", window.duration),
        );
    }
}

fn validate_max_unhealthy_pods(value: &IntOrString, problems: &mut Problems) {
    let field = "spec.remediation.maxUnhealthyPods";
    match value {
        IntOrString::Int(count) => problems.check(*count >= 0, field, || {
            format!("{count} must not be negative")
        }),
        IntOrString::String(text) => {
            let percent = text
                .strip_suffix('%')
                .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u32>().ok());
            problems.check(percent.is_some_and(|p| p <= 100), field, || {
                format!("{text:?} must be a count or a percentage between 0% and 100%")
            });
        }
    }
}

/// What the operator puts in for the placeholders of a custom query before parsing it: any
/// window and quantile it may fill in parse alike, so one of each stands for all.
const PLACEHOLDER_SAMPLES: [(&str, &str); 2] = [("$window", "5m"), ("$quantile", "0.99")];

/// A custom query, its placeholders filled in as the operator fills them, parses as PromQL and
/// yields what the operator can read: an instant vector or a scalar.
fn check_custom_promql(template: &str) -> Result<(), String> {
    let filled = PLACEHOLDER_SAMPLES
        .iter()
        .fold(template.to_owned(), |text, (placeholder, sample)| {
            text.replace(placeholder, sample)
        });
    let expression = promql_parser::parser::parse(&filled).map_err(|error| {
        format!(
            "{template:?} is not valid PromQL: {}",
            error.trim().trim_end_matches('.')
        )
    })?;
    match expression.value_type() {
        ValueType::Vector | ValueType::Scalar => Ok(()),
        other => Err(format!(
            "{template:?} yields a {other}, not an instant vector or a scalar (wrap a range \
             in a function such as rate())"
        )),
    }
}

/// A Prometheus base URL: absolute, `http` or `https`, with a host.
fn check_prometheus_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|error| format!("{text:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{text:?} has scheme {:?}; only http and https are supported",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} names no host"));
    }
    Ok(())
}

fn check_ratio(value: f64, field: &str, problems: &mut Problems) {
    problems.check((0.0..=1.0).contains(&value), field, || {
        format!("{value} must be between 0 and 1")
    });
}

/// `value` (written `shown` in the spec) lies strictly between 0 and 100; `unit` follows the
/// bounds in the message.
fn check_percentage(
    value: f64,
    shown: &dyn fmt::Display,
    field: &str,
    unit: &str,
    problems: &mut Problems,
) {
    problems.check(value > 0.0 && value < 100.0, field, || {
        format!("{shown} must be greater than 0 and less than 100{unit}")
    });
}
