//! One module per subcommand; each turns parsed arguments into output and an exit code.

mod demo;
mod discover;
mod policy_check;
mod pools;
mod run;
mod sim;

pub use run::{parse_compile_cpu, parse_duration, parse_grace};

use crate::cli::{Command, PolicyCommand};
use crate::exit::CmdResult;

/// Runs a parsed subcommand.
pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Discover(args) => discover::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Pools(args) => pools::run(&args),
        Command::Policy(PolicyCommand::Check(args)) => policy_check::run(&args),
        // Served by `main` before anything else starts in the process.
        Command::Policy(PolicyCommand::CompileWorker(_)) => Ok(()),
        Command::Demo(args) => demo::run(&args),
    }
}
