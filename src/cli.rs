//! The command line (SPEC "Command line"): subcommands and their flags, and
//! nothing else — every behaviour lives in the configuration file.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// sluice: a DNS-aware egress gateway for AI agents.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: the proxy listener(s) and the admin listener.
    Run {
        /// Configuration file.
        #[arg(long, default_value = "config/sluice.toml")]
        config: PathBuf,
    },
    /// Validate a configuration and print a summary.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the decision for a destination and the rule that made it.
    Explain {
        #[arg(long)]
        config: PathBuf,
        /// The agent, by name.
        #[arg(long, conflicts_with = "source", required_unless_present = "source")]
        agent: Option<String>,
        /// The agent, by the source address it would connect from.
        #[arg(long)]
        source: Option<IpAddr>,
        /// Skip DNS resolution (rules only).
        #[arg(long)]
        no_dns: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// host:port, or a URL (http://host/path, https://host).
        dest: String,
    },
    /// Summarise access logs for the weekly review.
    Review {
        /// Configuration, to find allow rules that matched nothing.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only lines at or after this date (YYYY-MM-DD) or RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// An earlier review's JSON output: report destinations new since then.
        #[arg(long)]
        baseline: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ReviewFormat::Markdown)]
        format: ReviewFormat,
        /// Access logs, plain or gzip.
        #[arg(required = true)]
        logs: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReviewFormat {
    Markdown,
    Json,
}
