//! The command line. Every flag has an environment twin (`VFPOOL_<FLAG>`), and defaults are the
//! upstream device plugin's where it has one.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// vfpool: SR-IOV devices as Kubernetes resources, with WebAssembly policies.
#[derive(Debug, Parser)]
#[command(name = "vfpool", version, about, long_about = None)]
pub struct Cli {
    /// Log filter, e.g. `info` or `vfpool=debug` (default: warn; `RUST_LOG` also works).
    #[arg(long, global = true, env = "VFPOOL_LOG")]
    pub log_level: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every PCI function and auxiliary device vfpool sees, with the attributes policies get.
    Discover(DiscoverArgs),
    /// Write a simulated node's sysfs tree from a fixture (for trying vfpool without SR-IOV hardware).
    Sim(SimArgs),
}

/// The sysfs root flag shared by every command that reads devices.
#[derive(Debug, clap::Args)]
pub struct SysfsArgs {
    /// The directory that stands for /sys (a simulated node's tree, or /sys).
    #[arg(long, env = "VFPOOL_SYSFS_ROOT", default_value = "/sys")]
    pub sysfs_root: PathBuf,
}

/// `vfpool discover`.
#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {
    #[command(flatten)]
    pub sysfs: SysfsArgs,
    /// Print JSON (stable, camelCase, sorted by id) instead of a table.
    #[arg(long, env = "VFPOOL_JSON")]
    pub json: bool,
}

/// `vfpool sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Directory to write the tree into; it must be new or empty. Use it as --sysfs-root.
    #[arg(long, env = "VFPOOL_SIM_OUT", required_unless_present = "print")]
    pub out: Option<PathBuf>,
    /// A shipped fixture name (dell-cx5, intel-x710, switchdev-sf, accelerator, demo, large) or the
    /// path of a fixture file.
    #[arg(long, env = "VFPOOL_SIM_FIXTURE", default_value = "dell-cx5")]
    pub fixture: String,
    /// Print the shipped fixture's TOML instead of writing a tree (a starting point for your own).
    #[arg(long)]
    pub print: bool,
}
