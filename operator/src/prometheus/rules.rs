//! Recording rules for the metric profile: one fleet-wide rule group whose size does not
//! depend on the number of services, so that long SLO windows are read from recorded series
//! instead of raw samples. Printed by `invoice-operator rules` and rendered by the chart as a
//! PrometheusRule (from a generated copy in `charts/invoice-operator/files/`). No IO.
//!
//! # Series
//!
//! Group [`SLI_GROUP`], every evaluation interval (default [`DEFAULT_INTERVAL`]):
//!
//! | series | labels | what |
//! |---|---|---|
//! | [`RATE_5M`] | namespace, service, `invoiceops_class` | request rate by status class over 5 m (the operator's own fleet query) |
//! | `slo:sli_error:ratio_rate<W>` for W in 5m 30m 1h 2h 6h 1d 3d | namespace, service, `sloth_*` | 5xx share of the requests over W |
//!
//! Group [`HOURLY_GROUP`], every hour (fixed: each sample covers one whole hour, so hours tile
//! a long window without overlap):
//!
//! | series | labels | what |
//! |---|---|---|
//! | [`RATE_1H`] | namespace, service, `invoiceops_class` | the mean of [`RATE_5M`] over the last hour |
//! | `slo:sli_error:ratio_rate30d` | namespace, service, `sloth_*` | 5xx share over 30 d, from [`RATE_1H`] |
//!
//! The error ratios carry Sloth's names and labels (`sloth_service`, `sloth_slo`,
//! `sloth_window`, `sloth_id`) so dashboards built for Sloth keep working. Windows up to 6 h
//! average [`RATE_5M`] (for 30 m and 1 h that is the mean of 5 m rates, a close approximation
//! of the rate over the window); 1 d and longer average [`RATE_1H`], so no rule reads more
//! than an hour of raw samples. A service's own window that is not in [`WINDOWS`] needs no
//! rule of its own: any window is answered from [`RATE_5M`] (under a day) or [`RATE_1H`].

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use super::{
    profile::MetricProfile,
    promql::{CLASS_LABEL, QueryWriter, range},
};

/// The fleet-wide group evaluated at the chosen interval.
pub const SLI_GROUP: &str = "invoiceops-sli";

/// The group evaluated once an hour.
pub const HOURLY_GROUP: &str = "invoiceops-sli-hourly";

/// Request rate by namespace, service and status class over 5 minutes.
pub const RATE_5M: &str = "invoiceops:requests:rate5m";

/// The hourly mean of [`RATE_5M`], evaluated once an hour.
pub const RATE_1H: &str = "invoiceops:requests:rate1h";

/// Prefix of Sloth's error-ratio series; the window follows (`slo:sli_error:ratio_rate5m`).
pub const SLOTH_ERROR_RATIO_PREFIX: &str = "slo:sli_error:ratio_rate";

/// The `sloth_slo` label value of the error ratios.
pub const SLOTH_SLO: &str = "availability";

/// Evaluation interval of [`SLI_GROUP`] when none is given (the chart's default too).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Evaluation interval of [`HOURLY_GROUP`].
pub const HOURLY_INTERVAL: Duration = Duration::from_secs(3600);

/// The windows the rules record error ratios for: Sloth's and the workbook's burn-rate
/// windows plus a 30-day SLO window.
pub const WINDOWS: [Duration; 8] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(3600),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(86_400),
    Duration::from_secs(3 * 86_400),
    Duration::from_secs(30 * 86_400),
];

/// From this length on, windows are averaged over [`RATE_1H`] instead of [`RATE_5M`].
pub const HOURLY_FROM: Duration = Duration::from_secs(86_400);

/// Windows from this length on are recorded in [`HOURLY_GROUP`] (their rules read hundreds of
/// samples per series, too many for every interval).
const HOURLY_GROUP_FROM: Duration = Duration::from_secs(7 * 86_400);

/// The window of [`RATE_5M`]: the shortest window read from the recorded series.
pub const SHORT_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The longest evaluation interval of [`SLI_GROUP`]: beyond it consecutive [`RATE_5M`]
/// samples would leave gaps between their windows.
pub const MAX_INTERVAL: Duration = SHORT_WINDOW;

/// A Prometheus rules file (`promtool check rules` format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleFile {
    /// The rule groups, evaluated independently.
    pub groups: Vec<RuleGroup>,
}

/// A group of rules evaluated in order at one interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleGroup {
    /// Group name, unique in the file.
    pub name: String,
    /// Evaluation interval in Prometheus duration syntax.
    pub interval: String,
    /// The recording rules, in evaluation order.
    pub rules: Vec<RecordingRule>,
}

/// One recording rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordingRule {
    /// Name of the recorded series.
    pub record: String,
    /// The PromQL evaluated.
    pub expr: String,
    /// Labels added to every recorded sample.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Why an evaluation interval was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    /// Zero, or a fraction of a second.
    #[error("the rule evaluation interval must be at least 1s")]
    TooShort,
    /// Longer than the window of the recorded rate.
    #[error("the rule evaluation interval must be at most 5m (the window of {RATE_5M})")]
    TooLong,
}

/// Checks that `interval` can evaluate [`SLI_GROUP`]: at least a second, at most
/// [`MAX_INTERVAL`].
pub fn check_interval(interval: Duration) -> Result<(), IntervalError> {
    if interval < Duration::from_secs(1) {
        Err(IntervalError::TooShort)
    } else if interval > MAX_INTERVAL {
        Err(IntervalError::TooLong)
    } else {
        Ok(())
    }
}

/// The Sloth error-ratio series of `window` (`slo:sli_error:ratio_rate30d`).
pub fn error_ratio_series(window: Duration) -> String {
    format!("{SLOTH_ERROR_RATIO_PREFIX}{}", range(window))
}

/// The recording rules of `profile`, [`SLI_GROUP`] evaluated every `interval`.
pub fn rule_file(profile: &MetricProfile, interval: Duration) -> RuleFile {
    let short = WINDOWS.iter().filter(|w| **w < HOURLY_GROUP_FROM);
    let long = WINDOWS.iter().filter(|w| **w >= HOURLY_GROUP_FROM);
    let mut sli = vec![RecordingRule::plain(
        RATE_5M,
        QueryWriter::new(profile, None).service_rates(SHORT_WINDOW),
    )];
    sli.extend(short.map(|window| error_ratio(profile, *window)));
    let mut hourly = vec![RecordingRule::plain(
        RATE_1H,
        format!("avg_over_time({RATE_5M}[{}])", range(HOURLY_INTERVAL)),
    )];
    hourly.extend(long.map(|window| error_ratio(profile, *window)));
    RuleFile {
        groups: vec![
            RuleGroup::new(SLI_GROUP, interval, sli),
            RuleGroup::new(HOURLY_GROUP, HOURLY_INTERVAL, hourly),
        ],
    }
}

impl RuleFile {
    /// The rules file as YAML, with a comment saying where it comes from.
    pub fn to_yaml(&self) -> String {
        let body = serde_yaml::to_string(self).expect("a rules file serialises");
        format!(
            "# Recording rules of invoice-operator for its metric profile, printed by \
             `invoice-operator rules`.\n{body}"
        )
    }
}

impl RuleGroup {
    fn new(name: &str, interval: Duration, rules: Vec<RecordingRule>) -> Self {
        Self {
            name: name.to_owned(),
            interval: range(interval),
            rules,
        }
    }
}

impl RecordingRule {
    fn plain(record: &str, expr: String) -> Self {
        Self {
            record: record.to_owned(),
            expr,
            labels: BTreeMap::new(),
        }
    }
}

/// `slo:sli_error:ratio_rate<W>`: the 5xx share of the requests over `window` per service,
/// 0 (not absent) for a service without errors, with Sloth's labels.
fn error_ratio(profile: &MetricProfile, window: Duration) -> RecordingRule {
    let by = format!("{}, {}", profile.namespace_label, profile.service_label);
    let source = if window < HOURLY_FROM {
        RATE_5M
    } else {
        RATE_1H
    };
    let over = |selector: String| {
        if window <= SHORT_WINDOW {
            selector
        } else {
            format!("avg_over_time({selector}[{}])", range(window))
        }
    };
    let errors = over(format!("{source}{{{CLASS_LABEL}=\"5xx\"}}"));
    let total = format!("sum by ({by}) ({})", over(source.to_owned()));
    let ratio = format!("(sum by ({by}) ({errors}) or 0 * {total}) / {total}");
    let service = &profile.service_label;
    let expr = format!(
        "label_replace(label_replace({ratio}, \"sloth_service\", \"$1\", \"{service}\", \"(.*)\"), \
         \"sloth_id\", \"$1-{SLOTH_SLO}\", \"{service}\", \"(.*)\")"
    );
    RecordingRule {
        record: error_ratio_series(window),
        expr,
        labels: BTreeMap::from([
            ("sloth_slo".to_owned(), SLOTH_SLO.to_owned()),
            ("sloth_window".to_owned(), range(window)),
        ]),
    }
}

#[cfg(test)]
pub(super) mod tests;
