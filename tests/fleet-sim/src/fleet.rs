//! The simulated fleet's memory: cumulative counters and histograms per pod, advanced from
//! cluster snapshots, rendered in the Prometheus text format; and the timeline of what
//! changed between two snapshots. Pure, no IO.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    faults::Fault,
    model::{BUCKETS, PodView, Profile, bucket_fraction, service_second},
};

/// One InvoiceService as seen in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceView {
    /// Namespace.
    pub namespace: String,
    /// InvoiceService name (the `service` label).
    pub name: String,
    /// Ready pods serving it, by name.
    pub pods: Vec<PodView>,
    /// All its pods, Ready or not (for the timeline).
    pub all_pods: Vec<String>,
    /// The mode ConfigMap says read-only.
    pub read_only: bool,
}

/// Series key: namespace, service, pod, zone.
type PodKey = (String, String, String, String);

#[derive(Clone, Debug, Default)]
struct PodSeries {
    requests: BTreeMap<&'static str, f64>,
    buckets: [f64; BUCKETS.len()],
    count: f64,
    sum: f64,
    pool_active: f64,
    pool_max: f64,
}

/// Cumulative metrics of every pod currently serving.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    series: BTreeMap<PodKey, PodSeries>,
}

impl Fleet {
    /// Advances every Ready pod by `seconds` of traffic; pods no longer Ready lose their series
    /// (as a restarted process would).
    pub fn advance(
        &mut self,
        profile: &Profile,
        services: &[ServiceView],
        faults: &[Fault],
        seconds: f64,
    ) {
        let mut alive = BTreeMap::new();
        for service in services {
            let pods = service_second(
                profile,
                &service.namespace,
                &service.name,
                &service.pods,
                faults,
                service.read_only,
            );
            for (pod, second) in pods {
                let key = (
                    service.namespace.clone(),
                    service.name.clone(),
                    pod.name,
                    pod.zone,
                );
                let mut series = self.series.remove(&key).unwrap_or_default();
                for (code, rate) in &second.requests {
                    *series.requests.entry(code).or_default() += rate * seconds;
                }
                let served = second.total() * seconds;
                for (bucket, upper) in series.buckets.iter_mut().zip(BUCKETS) {
                    *bucket += served * bucket_fraction(second.mean_latency, upper);
                }
                series.count += served;
                series.sum += served * second.mean_latency;
                series.pool_active = second.pool_active;
                series.pool_max = second.pool_max;
                alive.insert(key, series);
            }
        }
        self.series = alive;
    }

    /// The metrics in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let labels = |(namespace, service, pod, zone): &PodKey| {
            format!("namespace=\"{namespace}\",service=\"{service}\",pod=\"{pod}\",zone=\"{zone}\"")
        };
        out.push_str("# HELP invoice_http_requests_total Served HTTP requests.\n");
        out.push_str("# TYPE invoice_http_requests_total counter\n");
        for (key, series) in &self.series {
            for (code, value) in &series.requests {
                let _ = writeln!(
                    out,
                    "invoice_http_requests_total{{{},code=\"{code}\"}} {value}",
                    labels(key)
                );
            }
        }
        out.push_str("# HELP invoice_http_request_duration_seconds Request latency.\n");
        out.push_str("# TYPE invoice_http_request_duration_seconds histogram\n");
        for (key, series) in &self.series {
            let labels = labels(key);
            for (value, upper) in series.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "invoice_http_request_duration_seconds_bucket{{{labels},le=\"{upper}\"}} {value}"
                );
            }
            let _ = writeln!(
                out,
                "invoice_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                series.count
            );
            let _ = writeln!(
                out,
                "invoice_http_request_duration_seconds_sum{{{labels}}} {}",
                series.sum
            );
            let _ = writeln!(
                out,
                "invoice_http_request_duration_seconds_count{{{labels}}} {}",
                series.count
            );
        }
        for (name, help, pick) in [
            (
                "invoice_db_pool_active",
                "Database connections in use.",
                (|s: &PodSeries| s.pool_active) as fn(&PodSeries) -> f64,
            ),
            (
                "invoice_db_pool_max",
                "Database pool size.",
                |s: &PodSeries| s.pool_max,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for ((namespace, service, pod, _), series) in &self.series {
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{namespace}\",service=\"{service}\",pod=\"{pod}\"}} {}",
                    pick(series)
                );
            }
        }
        out
    }
}

/// What changed between two snapshots, one line per change, for the timeline.
pub fn changes(before: &[ServiceView], after: &[ServiceView]) -> Vec<String> {
    let mut lines = Vec::new();
    let find = |views: &[ServiceView], namespace: &str, name: &str| {
        views
            .iter()
            .find(|view| view.namespace == namespace && view.name == name)
            .cloned()
    };
    for service in after {
        let id = format!("{}/{}", service.namespace, service.name);
        let Some(old) = find(before, &service.namespace, &service.name) else {
            lines.push(format!(
                "{id}: seen, {} ready pods, read-only={}",
                service.pods.len(),
                service.read_only
            ));
            continue;
        };
        for pod in old
            .all_pods
            .iter()
            .filter(|pod| !service.all_pods.contains(pod))
        {
            lines.push(format!("{id}: pod {pod} gone"));
        }
        for pod in service
            .all_pods
            .iter()
            .filter(|pod| !old.all_pods.contains(pod))
        {
            lines.push(format!("{id}: pod {pod} created"));
        }
        if old.pods.len() != service.pods.len() {
            let zones = zone_counts(&service.pods);
            lines.push(format!(
                "{id}: ready pods {} -> {} {zones:?}",
                old.pods.len(),
                service.pods.len()
            ));
        }
        if old.read_only != service.read_only {
            let mode = if service.read_only {
                "read-only"
            } else {
                "read-write"
            };
            lines.push(format!("{id}: mode switched to {mode}"));
        }
    }
    for service in before {
        if find(after, &service.namespace, &service.name).is_none() {
            lines.push(format!("{}/{}: gone", service.namespace, service.name));
        }
    }
    lines
}

fn zone_counts(pods: &[PodView]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for pod in pods {
        *counts.entry(pod.zone.clone()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(pods: &[&str], read_only: bool) -> ServiceView {
        ServiceView {
            namespace: "ns".into(),
            name: "api".into(),
            pods: pods
                .iter()
                .map(|name| PodView {
                    name: (*name).into(),
                    zone: "az1".into(),
                })
                .collect(),
            all_pods: pods.iter().map(|name| (*name).to_string()).collect(),
            read_only,
        }
    }

    #[test]
    fn counters_only_grow_and_gone_pods_lose_their_series() {
        let profile = Profile::default();
        let mut fleet = Fleet::default();
        fleet.advance(&profile, &[view(&["a", "b"], false)], &[], 1.0);
        let first = fleet.render();
        assert!(first.contains("pod=\"a\""), "{first}");
        fleet.advance(&profile, &[view(&["b"], false)], &[], 1.0);
        let second = fleet.render();
        assert!(!second.contains("pod=\"a\""), "{second}");
        // One pod past its capacity (12 req/s over 10) sheds the excess as 503.
        assert!(second.contains("code=\"503\"} 2.2"), "{second}");
        assert!(second.contains("le=\"+Inf\"} 18"), "{second}");
        assert!(
            second.contains("invoice_db_pool_max{namespace=\"ns\",service=\"api\",pod=\"b\"} 200"),
            "{second}"
        );
    }

    #[test]
    fn timeline_reports_pods_replicas_and_mode() {
        let cases = [
            (
                view(&["a", "b"], false),
                view(&["b", "c"], false),
                vec!["ns/api: pod a gone", "ns/api: pod c created"],
            ),
            (
                view(&["a"], false),
                view(&["a", "b"], false),
                vec![
                    "ns/api: pod b created",
                    "ns/api: ready pods 1 -> 2 {\"az1\": 2}",
                ],
            ),
            (
                view(&["a"], false),
                view(&["a"], true),
                vec!["ns/api: mode switched to read-only"],
            ),
            (view(&["a"], true), view(&["a"], true), vec![]),
        ];
        for (before, after, expected) in cases {
            assert_eq!(changes(&[before], &[after]), expected);
        }
    }
}
