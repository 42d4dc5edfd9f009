//! Laying a service's custom query answers over its profile measurements.

use std::collections::BTreeMap;

use super::QueryOutcome;
use crate::{
    prometheus::query::{CustomKind, ServiceQuery},
    signals::{Measured, RequestRates, ServiceMetrics, UnknownReason, measured},
};

/// A custom query's single value: no series is `NoData`, more than one `QueryFailed` (the
/// query does not describe one service), NaN `NotANumber`.
fn single_value(outcome: &QueryOutcome) -> Measured<f64> {
    match outcome.as_ref().map_err(|reason| *reason)?.as_slice() {
        [] => Err(UnknownReason::NoData),
        [series] => measured(series.value),
        _ => Err(UnknownReason::QueryFailed),
    }
}

/// Lays a service's custom query answers over its profile measurements (`base`, from the
/// restricted profile query).
///
/// A custom `errorRatio` has no request counts, but [`ServiceMetrics::windows`] holds
/// [`RequestRates`]; each window is synthesised as `total` = the custom `requestRate` (or,
/// without one, `max(1, minRequestRate)` so the ratio passes the traffic gate as is),
/// `server_errors` = ratio × total, `client_errors` = 0. A NaN ratio at a request rate below
/// `minRequestRate` (0/0 with no traffic) becomes zero errors, so the engine reports
/// `LowTraffic` rather than `NotANumber`.
pub fn merge_custom(
    mut base: ServiceMetrics,
    query: &ServiceQuery,
    outcomes: impl IntoIterator<Item = (CustomKind, QueryOutcome)>,
) -> ServiceMetrics {
    let outcomes: BTreeMap<CustomKind, QueryOutcome> = outcomes.into_iter().collect();
    let answer = |kind: &CustomKind| {
        outcomes
            .get(kind)
            .map_or(Err(UnknownReason::QueryFailed), single_value)
    };
    if query.custom.error_ratio.is_some() {
        for window in &query.windows {
            let ratio = answer(&CustomKind::ErrorRatio(*window));
            let total = match query.custom.request_rate {
                Some(_) => answer(&CustomKind::RequestRate(*window)),
                None => Ok(query.min_request_rate.max(1.0)),
            };
            let rates = match (ratio, total) {
                (Err(reason), _) | (_, Err(reason)) => Err(reason),
                (Ok(ratio), Ok(total)) => Ok(RequestRates {
                    total,
                    server_errors: ratio * total,
                    client_errors: 0.0,
                }),
            };
            let rates = match (rates, total) {
                (Err(UnknownReason::NotANumber), Ok(total)) if total < query.min_request_rate => {
                    Ok(RequestRates {
                        total,
                        ..RequestRates::default()
                    })
                }
                (rates, _) => rates,
            };
            base.windows.insert(*window, rates);
        }
    }
    if query.custom.latency.is_some() {
        base.latency_seconds = match query.selector.quantile {
            Some(_) => answer(&CustomKind::Latency),
            None => Err(UnknownReason::NoData),
        };
    }
    if query.custom.db_pool_utilization.is_some() {
        base.db_pool_utilization = answer(&CustomKind::DbPoolUtilization);
    }
    base
}
