//! Logging: one JSON object per line in cluster, or human-readable lines on a terminal,
//! filtered by `RUST_LOG` (default `info`). Installs the process-wide tracing subscriber,
//! which writes to standard output: IO, once, at start-up.

use tracing_subscriber::{EnvFilter, prelude::*};

use crate::cli::LogFormat;

/// Installs the subscriber for `format`. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    // The message and fields at the top level of each line, where log
                    // pipelines look for `message`, not under `fields`.
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).init(),
    }
}

/// Warns when `FAILPOINTS` is set: the crash-safety tests' kill hook
/// (`act::KILLED_BY_FAIL_POINT`) is configured by it, and only a build with the `failpoints`
/// feature has it.
pub fn warn_about_fail_points() {
    if std::env::var_os("FAILPOINTS").is_some() {
        if cfg!(feature = "failpoints") {
            tracing::warn!("fail points configured by FAILPOINTS: for tests only");
        } else {
            tracing::warn!("FAILPOINTS is ignored: built without the failpoints feature");
        }
    }
}
