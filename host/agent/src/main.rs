//! `vfpool`: the vfpool node agent and its command-line tools.
//!
//! This binary owns the command line (flags, their environment twins and defaults, exit codes) and
//! the presentation of results (tables for people, stable JSON for programs). The mechanics live in
//! the library crates: discovery and simulated nodes in `vfpool-sysfs`. It must not grow logic that
//! another binary or crate needs; such logic moves into a library crate.

mod cli;
mod cmd;
mod exit;
mod facts;
mod output;
mod telemetry;
#[cfg(test)]
mod test_logs;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();
    if let cli::Command::Policy(cli::PolicyCommand::CompileWorker(limits)) = &cli.command {
        return compile_worker(limits);
    }
    let default_level = match cli.command {
        cli::Command::Run(_) => "info",
        _ => "warn",
    };
    telemetry::init(cli.log_level.as_deref(), default_level, cli.log_format);
    if let Some(dir) = &cli.log_dir {
        tracing::info!(
            log_dir = %dir.display(),
            "--log-dir is ignored (accepted for the upstream plugin's DaemonSet arguments): vfpool logs to standard error"
        );
    }
    let log_format = cli.log_format;
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Each cause once, on one line; a JSON line too where the log is JSON (why `vfpool
            // run` exited must reach the log collector).
            let error = vfpool_policy::error_chain(failure.error.as_ref());
            match log_format {
                // Unless the log filter would swallow it (`--log-level off`): said anyway.
                telemetry::LogFormat::Json if tracing::enabled!(tracing::Level::ERROR) => {
                    tracing::error!(code = failure.code as u8, "vfpool: {error}")
                }
                _ => output::complain!("vfpool: {error}"),
            }
            ExitCode::from(failure.code as u8)
        }
    }
}

/// The child process policies are compiled in: nothing else runs in it (no logging: its standard
/// error is the reason the parent reports).
fn compile_worker(args: &cli::CompileWorkerArgs) -> ExitCode {
    let limits = vfpool_policy::CompileLimits::new(
        std::time::Duration::from_secs(args.cpu_seconds),
        args.memory_bytes,
    );
    match vfpool_policy::isolate::serve_worker(limits, args.parent_pid) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::complain!("{}", vfpool_policy::error_chain(&error));
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(u8::MAX))
        }
    }
}
