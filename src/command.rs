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
        Command::Review { .. } => {
            eprintln!("sluice: error: review is not available in this build yet");
            2
        }
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

async fn run(path: &std::path::Path) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
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
    let signal = match shutdown_signal() {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return 2;
        }
    };
    let second = signal.await;
    tracing::info!("draining: no new connections; open ones may finish");
    // A second signal during the drain means "now".
    let drain = tokio::select! {
        d = running.shutdown(None) => d,
        () = second => {
            tracing::warn!("second signal: exiting at once");
            return 0;
        }
    };
    match drain {
        app::Drain::Graceful => tracing::info!("drained gracefully"),
        app::Drain::Forced(n) => tracing::warn!("grace period over: {n} connection(s) cut"),
    }
    0
}

/// Resolves on the first SIGTERM or SIGINT, yielding a future for the next.
fn shutdown_signal() -> std::io::Result<impl Future<Output = impl Future<Output = ()>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    })
}
