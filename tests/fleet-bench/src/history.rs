//! A month of recorded history for the benchmark fleet: the series of the operator's recording
//! rules (`invoiceops:requests:rate1h` for 31 days, `invoiceops:requests:rate5m` for the last
//! 7 hours) written as OpenMetrics, turned into TSDB blocks by `promtool tsdb
//! create-blocks-from openmetrics` and moved into the running Prometheus' data directory, which
//! loads them within a minute. Raw counters are not backfilled: a month of them for 12,000 pods
//! is billions of samples (the point of the recording rules), so the raw mode runs on the
//! minutes of raw history the fleet has.
//!
//! The history is steady: each service took [`REQUEST_RATE`](crate::REQUEST_RATE) requests per
//! second, [`CLIENT_ERROR_RATIO`] of them 4xx and, in the hourly rates, [`SERVER_ERROR_RATIO`]
//! 5xx, so every service's 30-day availability is known: 99.98 %. The 5-minute rates of the
//! last hours carry no 5xx, like the live fleet: the short burn-rate windows read 0 and stay
//! there, and the long ones (1 d, 3 d, from the hourly rates) move by a share of an hour per
//! hour, so the steady state is not disturbed by status writes of decaying burn rates.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use invoice_operator_e2e::{blocks_from_openmetrics, move_blocks};

use crate::fleet::Layout;

/// Share of the backfilled requests answered 5xx.
pub const SERVER_ERROR_RATIO: f64 = 0.0002;
/// Share of the backfilled requests answered 4xx.
pub const CLIENT_ERROR_RATIO: f64 = 0.01;
/// Days of hourly rates written.
const DAYS: u64 = 31;
/// Hours of 5-minute rates written (the short windows reach back 6 h).
const SHORT_HOURS: u64 = 7;
/// Step of the backfilled 5-minute rates, seconds.
const SHORT_STEP: u64 = 60;
const DAY: u64 = 86_400;
const HOUR: u64 = 3_600;

/// The availability, in percent, every backfilled service has over its 30-day window.
pub fn expected_availability() -> f64 {
    (1.0 - SERVER_ERROR_RATIO) * 100.0
}

/// Writes the recorded series of the services `from..to` up to `end` (Unix seconds), one file
/// per UTC day (promtool reads its whole input once per 2-hour block, so small files are
/// faster), into `directory`.
fn write_files(
    layout: Layout,
    from: usize,
    to: usize,
    end: u64,
    request_rate: f64,
    directory: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let series = |server_errors: f64| -> Vec<(String, f64)> {
        let classes = [
            ("2xx", 1.0 - server_errors - CLIENT_ERROR_RATIO),
            ("4xx", CLIENT_ERROR_RATIO),
            ("5xx", server_errors),
        ];
        (from..to)
            .flat_map(|index| {
                let (namespace, service) = layout.service(index);
                classes.map(|(class, share)| {
                    (
                        format!(
                            "{{namespace=\"{namespace}\",service=\"{service}\",invoiceops_class=\"{class}\"}}"
                        ),
                        request_rate * share,
                    )
                })
            })
            .collect()
    };
    let (hourly_series, short_series) = (series(SERVER_ERROR_RATIO), series(0.0));
    let start = end - DAYS * DAY;
    let short_from = end - SHORT_HOURS * HOUR;
    let mut files = Vec::new();
    let mut day_start = start - start % DAY;
    while day_start < end {
        let day_end = (day_start + DAY).min(end);
        let mut text = String::new();
        let hourly: Vec<u64> = (day_start.div_ceil(HOUR) * HOUR..day_end)
            .step_by(HOUR as usize)
            .filter(|time| *time >= start)
            .collect();
        let short: Vec<u64> = (day_start.max(short_from).div_ceil(SHORT_STEP) * SHORT_STEP
            ..day_end)
            .step_by(SHORT_STEP as usize)
            .collect();
        for (name, times, labels) in [
            ("invoiceops:requests:rate1h", &hourly, &hourly_series),
            ("invoiceops:requests:rate5m", &short, &short_series),
        ] {
            if times.is_empty() {
                continue;
            }
            let _ = writeln!(text, "# TYPE {name} gauge");
            for (series, value) in labels {
                for time in times.iter() {
                    let _ = writeln!(text, "{name}{series} {value} {time}");
                }
            }
        }
        if !text.is_empty() {
            text.push_str("# EOF\n");
            let path = directory.join(format!("history-{day_start}.om"));
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            files.push(path);
        }
        day_start += DAY;
    }
    Ok(files)
}

/// Backfills the recorded history of the services `from..to`, ending at `end` (Unix seconds),
/// into the Prometheus whose data directory is `data`. Returns the blocks moved in and the
/// seconds it took.
pub fn backfill(
    layout: Layout,
    from: usize,
    to: usize,
    end: u64,
    request_rate: f64,
    data: &Path,
    scratch: &Path,
) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let directory = scratch.join(format!("history-{from}-{to}"));
    let blocks = directory.join("blocks");
    std::fs::create_dir_all(&blocks)?;
    let files = write_files(layout, from, to, end, request_rate, &directory)?;
    blocks_from_openmetrics(&files, &blocks).map_err(anyhow::Error::msg)?;
    let moved = move_blocks(&blocks, data)
        .with_context(|| format!("cannot move the blocks into {}", data.display()))?;
    std::fs::remove_dir_all(&directory)?;
    Ok((moved, started.elapsed().as_secs_f64()))
}

/// How long Prometheus may take to load moved blocks (it looks every minute).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(180);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_a_month_of_hourly_and_hours_of_short_rates_per_class() {
        let directory =
            std::env::temp_dir().join(format!("fleet-bench-history-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let layout = Layout {
            namespaces: 2,
            replicas_per_zone: 2,
        };
        let end = 40 * DAY + 7 * HOUR + 30;
        let files = write_files(layout, 0, 2, end, 100.0, &directory).unwrap();
        let text: String = files
            .iter()
            .map(|file| std::fs::read_to_string(file).unwrap())
            .collect();
        std::fs::remove_dir_all(&directory).unwrap();
        let count = |needle: &str| text.lines().filter(|line| line.contains(needle)).count();
        // 31 days of hours per service and class (the first hour is the window's start).
        let hourly = "invoiceops:requests:rate1h{namespace=\"bench-01\",service=\"inv-0001\",invoiceops_class=\"5xx\"}";
        assert_eq!(count(hourly), 31 * 24);
        let short = "invoiceops:requests:rate5m{namespace=\"bench-00\",service=\"inv-0000\",invoiceops_class=\"2xx\"}";
        assert_eq!(count(short), 7 * 60);
        assert!(text.contains(&format!("{hourly} {} ", 100.0 * SERVER_ERROR_RATIO)));
        // No 5xx in the last hours.
        assert!(text.contains("invoiceops:requests:rate5m{namespace=\"bench-00\",service=\"inv-0000\",invoiceops_class=\"5xx\"} 0 "));
        // Nothing at or after the end, every file closed.
        assert!(text.lines().all(|line| {
            line.starts_with('#') || line.rsplit(' ').next().unwrap().parse::<u64>().unwrap() < end
        }));
        assert_eq!(count("# EOF"), files.len());
    }
}
