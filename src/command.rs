//! The subcommands behind `main`: each returns SPEC's exit code and prints
//! its own errors as `sluice: error: …` with one `caused by:` line per
//! source.

use std::error::Error;
use std::time::SystemTime;

use crate::app;
use crate::cli::{Command, Format};
use crate::config::{Config, ConfigError};
use crate::explain::{self, Who};

/// Runs one subcommand to completion.
pub async fn dispatch(command: Command) -> u8 {
    match command {
        Command::Run { config } => run(&config).await,
        Command::Check { config } => check(&config),
        Command::Explain {
            config,
            agent,
            source,
            no_dns,
            format,
            dest,
        } => {
            let who = match (agent, source) {
                (Some(a), _) => Who::Agent(a),
                (None, Some(s)) => Who::Source(s),
                (None, None) => {
                    eprintln!("sluice: error: explain needs --agent NAME or --source IP");
                    return 1;
                }
            };
            explain(&config, &who, &dest, no_dns, format).await
        }
        Command::Review {
            config,
            since,
            baseline,
            format,
            logs,
        } => review(config.as_deref(), since.as_deref(), baseline, format, &logs),
    }
}

fn report(e: &dyn Error) {
    eprintln!("sluice: error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        eprintln!("  caused by: {s}");
        source = s.source();
    }
}

fn load(path: &std::path::Path) -> Result<Config, u8> {
    Config::load(path).map_err(|e| {
        report(&e);
        exit_code(&e)
    })
}

fn exit_code(e: &ConfigError) -> u8 {
    match e {
        ConfigError::Io { .. } => 2,
        ConfigError::Invalid(_) | ConfigError::Tls { .. } => 1,
    }
}

fn check(path: &std::path::Path) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // TLS files that exist are validated as `run` would; missing ones are
    // only warned about (they are often secrets mounted where `run` runs).
    let tls_warnings = match config.tls.as_ref().map(crate::proxy::tls::check) {
        Some(Ok(w)) => w,
        Some(Err(e)) => {
            report(&e);
            return exit_code(&e);
        }
        None => Vec::new(),
    };
    let (summary, warnings) = explain::summary(&config, SystemTime::now());
    print!("{summary}");
    for w in warnings.iter().chain(&tls_warnings) {
        eprintln!("sluice: warning: {w}");
    }
    0
}

async fn explain(
    path: &std::path::Path,
    who: &Who,
    dest: &str,
    no_dns: bool,
    format: Format,
) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match explain::explain(config, who, dest, no_dns).await {
        Ok(e) => {
            match format {
                Format::Text => print!("{}", e.to_text()),
                Format::Json => match serde_json::to_string_pretty(&e) {
                    Ok(j) => println!("{j}"),
                    Err(err) => {
                        report(&err);
                        return 2;
                    }
                },
            }
            if e.dns_error.is_some() {
                2
            } else {
                e.exit_code() as u8
            }
        }
        Err(err @ explain::ExplainError::Resolver(_)) => {
            report(&err);
            2
        }
        Err(err) => {
            report(&err);
            1
        }
    }
}

fn review(
    config: Option<&std::path::Path>,
    since: Option<&str>,
    baseline: Option<std::path::PathBuf>,
    format: crate::cli::ReviewFormat,
    logs: &[std::path::PathBuf],
) -> u8 {
    use crate::review;
    let since = match since.map(|s| (s, review::parse_since(s))) {
        None => None,
        Some((_, Some(t))) => Some(t),
        Some((s, None)) => {
            eprintln!("sluice: error: --since {s:?}: not a date (YYYY-MM-DD) or RFC 3339 time");
            return 1;
        }
    };
    let config = match config {
        None => None,
        Some(path) => match load(path) {
            Ok(c) => Some(review::ReviewConfig::from_config(&c)),
            Err(code) => return code,
        },
    };
    let opts = review::Options {
        since,
        baseline,
        format: match format {
            crate::cli::ReviewFormat::Markdown => review::Format::Markdown,
            crate::cli::ReviewFormat::Json => review::Format::Json,
        },
        config,
        now: SystemTime::now(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match review::run(&opts, logs, &mut out) {
        Ok(_) => match std::io::Write::flush(&mut out) {
            Ok(()) => 0,
            Err(e) => {
                report(&e);
                2
            }
        },
        Err(e) => {
            report(&e);
            e.exit_code()
        }
    }
}

async fn run(path: &std::path::Path) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Before anything is bound: a SIGTERM that arrives during start-up must
    // drain, not kill the process with its default action.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return 2;
        }
    };
    let running = match app::start(config, app::Options::default()).await {
        Ok(r) => r,
        Err(app::AppError::Tls(e)) => {
            report(&e);
            return exit_code(&e);
        }
        Err(e) => {
            report(&e);
            return 2;
        }
    };
    signals.next().await;
    tracing::info!("draining: no new connections; open ones may finish");
    // A second signal during the drain means "now": open connections are
    // cut, their log lines still written.
    let drain = running
        .shutdown(None, async {
            signals.next().await;
            tracing::warn!("second signal: cutting open connections now");
        })
        .await;
    match drain {
        app::Drain::Graceful => tracing::info!("drained gracefully"),
        app::Drain::Forced(n) => tracing::warn!("grace period over: {n} connection(s) cut"),
    }
    0
}

/// SIGTERM and SIGINT, either of which asks for a drain.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
