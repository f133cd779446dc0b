//! Metrics: every series of SPEC "Metrics", registered on one registry that
//! the admin listener renders. No label holds a destination host: hosts are
//! unbounded, and belong in the access log.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// One agent's hot series, resolved once per policy: requests pass no
/// label lookup (and take no registry lock) to count themselves.
#[derive(Debug)]
pub struct AgentSeries {
    /// `sluice_requests_total{agent,decision="allow",reason="none"}`
    pub allowed: IntCounter,
    /// `sluice_bytes_total{agent,direction="up"}`
    pub up: IntCounter,
    /// `sluice_bytes_total{agent,direction="down"}`
    pub down: IntCounter,
    /// `sluice_tunnels_active{agent}`
    pub tunnels: IntGauge,
}

/// The agent label when no agent could be determined.
pub const NO_AGENT: &str = "-";

/// All of sluice's metrics. Built once per process; shared by reference.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `sluice_requests_total{agent,decision,reason}`
    pub requests: IntCounterVec,
    /// `sluice_tunnels_active{agent}`
    pub tunnels_active: IntGaugeVec,
    /// `sluice_bytes_total{agent,direction}`
    pub bytes: IntCounterVec,
    /// `sluice_upstream_connect_seconds`
    pub upstream_connect: Histogram,
    /// `sluice_dns_lookup_seconds`
    pub dns_lookup: Histogram,
    /// `sluice_dns_errors_total{kind}`
    pub dns_errors: IntCounterVec,
    /// `sluice_config_reloads_total{result}`
    pub reloads: IntCounterVec,
    /// `sluice_config_last_reload_success_timestamp_seconds`
    pub last_reload_success: Gauge,
    /// `sluice_connections_active`: client connections open now.
    pub connections_active: IntGauge,
    /// `sluice_log_backpressure_total`: access-log lines that had to wait
    /// because the writer fell behind (none is ever dropped).
    pub log_backpressure: IntCounter,
    /// `sluice_tls_handshake_failures_total{kind}` on the TLS listener.
    pub tls_handshake_failures: IntCounterVec,
}

impl Metrics {
    /// Registers every series on a fresh registry. Fails only on a
    /// programming error (a duplicate or malformed name).
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let latency = || {
            // 0.5 ms .. ~16 s: loopback connects and cached lookups land in
            // the first buckets, timeouts in the last.
            prometheus::exponential_buckets(0.0005, 2.0, 16)
        };
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "sluice_requests_total",
                    "Requests and tunnels by agent, decision and reason.",
                ),
                &["agent", "decision", "reason"],
            )?,
            tunnels_active: IntGaugeVec::new(
                Opts::new("sluice_tunnels_active", "CONNECT tunnels open now."),
                &["agent"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "sluice_bytes_total",
                    "Bytes relayed, up (to the destination) and down.",
                ),
                &["agent", "direction"],
            )?,
            upstream_connect: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_upstream_connect_seconds",
                    "Time to connect to the destination.",
                )
                .buckets(latency()?),
            )?,
            dns_lookup: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_dns_lookup_seconds",
                    "Time to resolve a destination name.",
                )
                .buckets(latency()?),
            )?,
            dns_errors: IntCounterVec::new(
                Opts::new("sluice_dns_errors_total", "Failed lookups by kind."),
                &["kind"],
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "sluice_config_reloads_total",
                    "Configuration reloads by result.",
                ),
                &["result"],
            )?,
            last_reload_success: Gauge::new(
                "sluice_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load.",
            )?,
            connections_active: IntGauge::new(
                "sluice_connections_active",
                "Client connections open now.",
            )?,
            log_backpressure: IntCounter::new(
                "sluice_log_backpressure_total",
                "Access-log lines that waited for the writer to catch up.",
            )?,
            tls_handshake_failures: IntCounterVec::new(
                Opts::new(
                    "sluice_tls_handshake_failures_total",
                    "Failed TLS handshakes on the TLS listener.",
                ),
                &["kind"],
            )?,
            registry,
        };
        let build_info = IntGaugeVec::new(
            Opts::new(
                "sluice_build_info",
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let r = &m.registry;
        r.register(Box::new(m.requests.clone()))?;
        r.register(Box::new(m.tunnels_active.clone()))?;
        r.register(Box::new(m.bytes.clone()))?;
        r.register(Box::new(m.upstream_connect.clone()))?;
        r.register(Box::new(m.dns_lookup.clone()))?;
        r.register(Box::new(m.dns_errors.clone()))?;
        r.register(Box::new(m.reloads.clone()))?;
        r.register(Box::new(m.last_reload_success.clone()))?;
        r.register(Box::new(m.connections_active.clone()))?;
        r.register(Box::new(m.log_backpressure.clone()))?;
        r.register(Box::new(m.tls_handshake_failures.clone()))?;
        r.register(Box::new(build_info))?;
        // Series that should read 0 rather than be absent before the first event.
        for result in ["success", "error"] {
            m.reloads.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// Resolves `agent`'s hot series.
    pub fn agent_series(&self, agent: &str) -> AgentSeries {
        AgentSeries {
            allowed: self.requests.with_label_values(&[agent, "allow", "none"]),
            up: self.bytes.with_label_values(&[agent, "up"]),
            down: self.bytes.with_label_values(&[agent, "down"]),
            tunnels: self.tunnels_active.with_label_values(&[agent]),
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics; an error
        // would surface as a truncated page, never a crash.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!("metrics encoding failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
