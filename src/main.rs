//! The `sluice` binary: parse the command line, run the subcommand, map the
//! outcome to SPEC's exit codes (0 ok, 1 invalid input, 2 runtime failure,
//! 3 `explain` denied).

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    sluice::telemetry::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(sluice::command::dispatch(cli.command));
    ExitCode::from(code)
}
