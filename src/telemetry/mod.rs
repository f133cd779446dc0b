//! Telemetry: the access log (one JSON line per request), the Prometheus
//! metrics, and the diagnostic log (tracing, to stderr).

pub mod access_log;
pub mod metrics;

/// Diagnostics go to stderr so that standard output can carry the access
/// log. `SLUICE_LOG` (e.g. `debug`, `sluice=trace`) overrides the level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
