//! Writing PromQL: label-value escaping, range durations, quantiles and the fleet queries of
//! the metric profile. Everything that puts text into a query goes through here, so there is
//! one place to get escaping right. No IO.

use std::{fmt::Write as _, time::Duration};

use super::{profile::MetricProfile, rules};
use crate::signals::ServiceKey;

/// Synthetic label carrying the status class (`2xx`, `4xx`, `5xx`) derived from the status
/// code, so one query returns total, 4xx and 5xx rates at once. Prefixed to stay clear of
/// labels an app might export.
pub const CLASS_LABEL: &str = "invoiceops_class";

/// Synthetic label telling the two database-pool gauges apart in one combined query.
pub const POOL_GAUGE_LABEL: &str = "invoiceops_pool_gauge";

/// [`POOL_GAUGE_LABEL`] value of the connections-in-use series.
pub const POOL_ACTIVE: &str = "active";

/// [`POOL_GAUGE_LABEL`] value of the pool-size series.
pub const POOL_MAX: &str = "max";

/// [`CLASS_LABEL`] value of the series that marks a service whose recorded series do not yet
/// cover the window; its value is the oldest recorded sample's time.
pub const UNCOVERED_CLASS: &str = "uncovered";

/// The histogram bucket label. Fixed by `histogram_quantile`, so not part of the profile.
pub const BUCKET_LABEL: &str = "le";

/// Escapes a label value for a double-quoted PromQL string literal.
///
/// Backslashes, double quotes and control characters (newlines included) are escaped, so a
/// value can never end the literal early: `a"} or vector(1) #` stays one harmless string.
pub fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len() + 2);
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            control if control.is_control() => {
                // PromQL follows Go's escapes; `\u` takes exactly four hex digits, and every
                // control character fits (they are all below U+00A0).
                let _ = write!(escaped, "\\u{:04x}", u32::from(control));
            }
            other => escaped.push(other),
        }
    }
    escaped
}

/// A series selector: `metric{label="value",...}`, values escaped.
pub fn selector(metric: &str, matchers: &[(&str, &str)]) -> String {
    if matchers.is_empty() {
        return metric.to_owned();
    }
    let matchers: Vec<String> = matchers
        .iter()
        .map(|(label, value)| format!("{label}=\"{}\"", escape_label_value(value)))
        .collect();
    format!("{metric}{{{}}}", matchers.join(","))
}

/// A range duration in PromQL syntax, in the largest unit that divides it exactly
/// (`30d`, `6h`, `5m`, `90s`, `1500ms`). The same length always gives the same text.
pub fn range(duration: Duration) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs();
    match seconds {
        0 => "0s".to_owned(),
        _ if seconds.is_multiple_of(DAY) => format!("{}d", seconds / DAY),
        _ if seconds.is_multiple_of(HOUR) => format!("{}h", seconds / HOUR),
        _ if seconds.is_multiple_of(MINUTE) => format!("{}m", seconds / MINUTE),
        _ => format!("{seconds}s"),
    }
}

/// The `histogram_quantile` argument for a percentile written as a decimal string:
/// `"99"` → `"0.99"`, `"99.9"` → `"0.999"`, `"50"` → `"0.5"`.
///
/// Done on the text so that "99.9" never becomes 0.9990000000000001. `None` when the text is
/// not a plain decimal or the percentile is not below 100.
pub fn quantile_from_percentile(percentile: &str) -> Option<String> {
    let (whole, fraction) = percentile.split_once('.').unwrap_or((percentile, ""));
    let digits_only = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    if whole.len() > 2 {
        return None;
    }
    // Shift the decimal point two places left: "9" + "9.9" → "0." + "09" + "99"...
    let quantile_fraction = format!("{whole:0>2}{fraction}");
    let quantile_fraction = quantile_fraction.trim_end_matches('0');
    if quantile_fraction.is_empty() {
        return None;
    }
    Some(format!("0.{quantile_fraction}"))
}

/// Builds the PromQL of the metric profile, optionally restricted to one service.
#[derive(Debug)]
pub struct QueryWriter<'a> {
    profile: &'a MetricProfile,
    only: Option<&'a ServiceKey>,
}

impl<'a> QueryWriter<'a> {
    /// Queries over the whole fleet, or over `only` that service.
    pub fn new(profile: &'a MetricProfile, only: Option<&'a ServiceKey>) -> Self {
        Self { profile, only }
    }

    fn service_selector(&self, metric: &str) -> String {
        match self.only {
            Some(key) => selector(
                metric,
                &[
                    (&self.profile.namespace_label, &key.namespace),
                    (&self.profile.service_label, &key.service),
                ],
            ),
            None => selector(metric, &[]),
        }
    }

    /// `label_replace(rate(requests[window]), CLASS, "${1}xx", code, "([0-9])..")`: the
    /// request rate with the status class as a label.
    fn classified_rate(&self, window: Duration) -> String {
        let profile = self.profile;
        format!(
            "label_replace(rate({}[{}]), \"{CLASS_LABEL}\", \"${{1}}xx\", \"{}\", \"([0-9])..\")",
            self.service_selector(&profile.requests_total),
            range(window),
            profile.code_label,
        )
    }

    /// Request rates by pod and status class over the detection window.
    pub fn pod_rates(&self, window: Duration) -> String {
        let profile = self.profile;
        format!(
            "sum by ({}, {}, {}, {}, {CLASS_LABEL}) ({})",
            profile.namespace_label,
            profile.service_label,
            profile.pod_label,
            profile.zone_label,
            self.classified_rate(window),
        )
    }

    /// Request rates by service and status class over `window`.
    pub fn service_rates(&self, window: Duration) -> String {
        let profile = self.profile;
        format!(
            "sum by ({}, {}, {CLASS_LABEL}) ({})",
            profile.namespace_label,
            profile.service_label,
            self.classified_rate(window),
        )
    }

    /// Request rates by service and status class over `window`, read from the recorded series:
    /// the 5-minute rate itself for 5 minutes; for a longer window under a day that is a
    /// multiple of 5 minutes, the mean of the 5-minute rates that tile it (one per 5 minutes,
    /// the newest included, so the answer is as fresh as the recorded rate; one sample per
    /// series per 5 minutes of the window instead of one per rule interval); any other window
    /// under a day averages every 5-minute rate in it; a day or more averages the hourly rates
    /// (no raw sample is read). Only services whose recorded series cover the window get rates; each service
    /// that is not covered yet comes back as one series of class [`UNCOVERED_CLASS`] instead,
    /// so that it is told apart from a service with no traffic.
    pub fn recorded_service_rates(&self, window: Duration) -> String {
        let profile = self.profile;
        let by = format!("{}, {}", profile.namespace_label, profile.service_label);
        let span = range(window);
        // The services the recorded series cover over the whole window, and the others.
        let (rates, coverage) = if window < rules::HOURLY_FROM {
            // Covered: the 5-minute rate already existed (up to 10 minutes after) the window's
            // start — one sample per series, read at that offset.
            let short = self.service_selector(rules::RATE_5M);
            let rates = if window <= rules::SHORT_WINDOW {
                short.clone()
            } else if window
                .as_secs()
                .is_multiple_of(rules::SHORT_WINDOW.as_secs())
            {
                // Tiles: the 5-minute rates at the 5-minute steps of the window before the
                // newest, plus the newest itself, averaged — about one sample per series per
                // 5 minutes instead of every recorded one, and as fresh as the newest.
                let earlier = format!(
                    "{short}[{}:{}]",
                    range(window - rules::SHORT_WINDOW),
                    range(rules::SHORT_WINDOW)
                );
                format!("(sum_over_time({earlier}) + {short}) / (count_over_time({earlier}) + 1)")
            } else {
                format!("avg_over_time({short}[{span}])")
            };
            let since = window.saturating_sub(Duration::from_secs(600));
            let coverage = (!since.is_zero()).then(|| {
                let then = format!("count by ({by}) ({short} offset {})", range(since));
                (
                    then.clone(),
                    format!("count by ({by}) ({short}) unless on ({by}) {then}"),
                )
            });
            (rates, coverage)
        } else {
            // One hourly sample per whole hour: counting them is cheap; the current and the
            // first hour may be missing.
            let source = self.service_selector(rules::RATE_1H);
            let hours = window.as_secs() / rules::HOURLY_INTERVAL.as_secs();
            let needed = hours.saturating_sub(2).max(1);
            let count = format!("max by ({by}) (count_over_time({source}[{span}]))");
            (
                format!("avg_over_time({source}[{span}])"),
                Some((
                    format!("{count} >= {needed}"),
                    format!("{count} < {needed}"),
                )),
            )
        };
        let summed = format!("sum by ({by}, {CLASS_LABEL}) ({rates})");
        match coverage {
            None => summed,
            Some((covered, uncovered)) => format!(
                "({summed} and on ({by}) ({covered})) \
                 or label_replace({uncovered}, \"{CLASS_LABEL}\", \"{UNCOVERED_CLASS}\", \"\", \"\")"
            ),
        }
    }

    fn latency(&self, quantile: &str, window: Duration, by: &[&str]) -> String {
        format!(
            "histogram_quantile({quantile}, sum by ({}, {BUCKET_LABEL}) (rate({}[{}])))",
            by.join(", "),
            self.service_selector(&self.profile.request_duration_bucket),
            range(window),
        )
    }

    /// The `quantile` latency by service over `window`.
    pub fn service_latency(&self, quantile: &str, window: Duration) -> String {
        let profile = self.profile;
        self.latency(
            quantile,
            window,
            &[&profile.namespace_label, &profile.service_label],
        )
    }

    /// The `quantile` latency by pod over `window`.
    pub fn pod_latency(&self, quantile: &str, window: Duration) -> String {
        let profile = self.profile;
        self.latency(
            quantile,
            window,
            &[
                &profile.namespace_label,
                &profile.service_label,
                &profile.pod_label,
                &profile.zone_label,
            ],
        )
    }

    /// Both pool gauges by pod in one answer, told apart by [`POOL_GAUGE_LABEL`].
    pub fn db_pool(&self) -> String {
        let profile = self.profile;
        let by = format!(
            "{}, {}, {}",
            profile.namespace_label, profile.service_label, profile.pod_label
        );
        let gauge = |metric: &str, kind: &str| {
            format!(
                "label_replace(sum by ({by}) ({}), \"{POOL_GAUGE_LABEL}\", \"{kind}\", \"\", \"\")",
                self.service_selector(metric),
            )
        };
        format!(
            "{} or {}",
            gauge(&profile.db_pool_active, POOL_ACTIVE),
            gauge(&profile.db_pool_max, POOL_MAX),
        )
    }

    /// Certificate expiry by certificate. The earliest expiry wins when several series describe
    /// the same certificate (e.g. two cert-manager replicas).
    pub fn certificates(&self) -> String {
        let profile = self.profile;
        let metric = match self.only {
            Some(key) => selector(
                &profile.certificate_expiry,
                &[(&profile.certificate_namespace_label, &key.namespace)],
            ),
            None => selector(&profile.certificate_expiry, &[]),
        };
        format!(
            "min by ({}, {}) ({metric})",
            profile.certificate_namespace_label, profile.certificate_name_label,
        )
    }

    /// The newest sample time per pod, over the request counter and the pool gauge (a pod that
    /// has not served a request yet has no counter series, but does report its pool).
    pub fn freshness(&self) -> String {
        let profile = self.profile;
        format!(
            "max by ({}, {}, {}) (timestamp({}) or timestamp({}))",
            profile.namespace_label,
            profile.service_label,
            profile.pod_label,
            self.service_selector(&profile.requests_total),
            self.service_selector(&profile.db_pool_active),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_hostile_label_values_inside_the_string_literal() {
        let cases = [
            ("billing-api", "billing-api"),
            (r#"a"} or vector(1) #"#, r#"a\"} or vector(1) #"#),
            (r"back\slash", r"back\\slash"),
            (r#"\"} or vector(1)"#, r#"\\\"} or vector(1)"#),
            ("line\nbreak", r"line\nbreak"),
            ("carriage\rreturn\ttab", r"carriage\rreturn\ttab"),
            ("bell\u{7}", r"bell\u0007"),
            ("zone-é", "zone-é"),
            ("", ""),
        ];
        for (value, expected) in cases {
            assert_eq!(escape_label_value(value), expected, "{value:?}");
        }
    }

    #[test]
    fn an_escaped_value_never_closes_its_literal() {
        // Walk the escaped text as the PromQL lexer does: an unescaped quote or a raw newline
        // would end the literal (or the query) early.
        let hostile = [
            r#"a"} or vector(1) #"#,
            "x\"\n} or on() vector(1)",
            "\\\\\"",
            "\\",
            "\"\"\"",
        ];
        for value in hostile {
            let escaped = escape_label_value(value);
            let mut characters = escaped.chars();
            while let Some(character) = characters.next() {
                match character {
                    '\\' => {
                        assert!(
                            characters.next().is_some(),
                            "dangling escape in {escaped:?}"
                        )
                    }
                    '"' | '\n' | '\r' => panic!("{value:?} escaped to {escaped:?} leaks"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn selectors_escape_every_value() {
        assert_eq!(selector("up", &[]), "up");
        assert_eq!(
            selector("up", &[("namespace", "ns"), ("service", "a\"b")]),
            r#"up{namespace="ns",service="a\"b"}"#
        );
    }

    #[test]
    fn ranges_use_the_largest_exact_unit() {
        let cases = [
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(6 * 3_600), "6h"),
            (Duration::from_secs(90 * 60), "90m"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(1_500), "1500ms"),
            (Duration::ZERO, "0s"),
        ];
        for (duration, expected) in cases {
            assert_eq!(range(duration), expected, "{duration:?}");
        }
    }

    #[test]
    fn percentiles_become_exact_quantiles() {
        let cases = [
            ("99", Some("0.99")),
            ("99.9", Some("0.999")),
            ("99.95", Some("0.9995")),
            ("50", Some("0.5")),
            ("5", Some("0.05")),
            ("0.1", Some("0.001")),
            ("099", Some("0.99")),
            ("99.90", Some("0.999")),
            ("0", None),
            ("100", None),
            ("", None),
            ("9x", None),
            ("-1", None),
        ];
        for (percentile, expected) in cases {
            assert_eq!(
                quantile_from_percentile(percentile).as_deref(),
                expected,
                "{percentile:?}"
            );
        }
    }

    #[test]
    fn restricted_queries_carry_escaped_matchers_and_fleet_queries_none() {
        let profile = MetricProfile::default();
        let key = ServiceKey {
            namespace: "invoicing".to_owned(),
            service: r#"a"} or vector(1) #"#.to_owned(),
        };
        let fleet = QueryWriter::new(&profile, None).service_rates(Duration::from_secs(300));
        assert_eq!(
            fleet,
            r#"sum by (namespace, service, invoiceops_class) (label_replace(rate(invoice_http_requests_total[5m]), "invoiceops_class", "${1}xx", "code", "([0-9]).."))"#
        );
        let restricted =
            QueryWriter::new(&profile, Some(&key)).service_rates(Duration::from_secs(300));
        assert!(
            restricted.contains(
                r#"invoice_http_requests_total{namespace="invoicing",service="a\"} or vector(1) #"}[5m]"#
            ),
            "{restricted}"
        );
    }
}
