//! The command line. The flags of the commands that touch a node have environment twins
//! (`VFPOOL_<FLAG>`, `VFPOOL_LOG` for `--log-level`), and defaults are the upstream device
//! plugin's where it has one.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Parses the process's command line, exiting as clap does (code 2) on a usage error.
pub fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    if let Some(message) = conflict(&matches) {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The conflicts clap cannot see: `policy check --fixture` with `--sysfs-root` on the command
/// line. The environment twin `VFPOOL_SYSFS_ROOT` is a node-wide default, which an explicit
/// `--fixture` overrides.
fn conflict(matches: &ArgMatches) -> Option<String> {
    let check = matches
        .subcommand_matches("policy")?
        .subcommand_matches("check")?;
    let explicit = |id: &str| check.value_source(id) == Some(ValueSource::CommandLine);
    (explicit("fixture") && explicit("sysfs_root")).then(|| {
        "the argument '--fixture <FIXTURE>' cannot be used with '--sysfs-root <SYSFS_ROOT>'"
            .to_string()
    })
}

/// vfpool: SR-IOV devices as Kubernetes resources, with WebAssembly policies.
#[derive(Debug, Parser)]
#[command(name = "vfpool", version, about, long_about = None)]
pub struct Cli {
    /// Log filter, e.g. `info` or `vfpool=debug` (default: info for `run`, warn for the other
    /// commands; `RUST_LOG` also works). A number is the upstream plugin's glog verbosity, as its
    /// DaemonSet passes it (`--log-level=10`): 0–2 info, 3–9 vfpool at debug, 10 and up at trace.
    // Parsed into filter directives, refusing typos (which would silence every log line).
    #[arg(long, global = true, env = "VFPOOL_LOG", value_parser = crate::telemetry::directives)]
    pub log_level: Option<String>,

    /// Accepted so that the upstream plugin's DaemonSet arguments (`--log-dir=sriovdp`) keep
    /// working, and ignored: vfpool logs to standard error, which the container runtime keeps.
    #[arg(long, global = true, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

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
    /// Run the node agent: serve the pools to kubelet as device plugins and keep them current.
    Run(RunArgs),
    /// Show the pools the active policies make of this node (a dry run; nothing is served).
    Pools(PoolsArgs),
    /// Work with policy modules.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show the whole chain on a temporary simulated node: discovery, the agent registering with a
    /// kubelet simulator, a pod's allocation, the CNI plugin (as root), a policy hot swap.
    Demo(DemoArgs),
}

/// `vfpool demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Leave the agent and the kubelet simulator running at the end, and print how to poke at
    /// them; Ctrl-C cleans up.
    #[arg(long)]
    pub keep: bool,
}

/// `vfpool policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load, type-check and exercise policy modules; exit 0 only if a running agent would accept
    /// every one of them.
    Check(PolicyCheckArgs),
}

/// `vfpool pools`.
#[derive(Debug, clap::Args)]
pub struct PoolsArgs {
    #[command(flatten)]
    pub sysfs: SysfsArgs,
    /// The upstream device plugin's config file (`{"resourceList":[...]}`).
    #[arg(
        long,
        env = "VFPOOL_CONFIG_FILE",
        default_value = "/etc/pcidp/config.json"
    )]
    pub config_file: PathBuf,
    /// Prefix for resources that do not name one.
    #[arg(long, env = "VFPOOL_RESOURCE_PREFIX", default_value = "intel.com")]
    pub resource_prefix: String,
    /// Directory of policy modules (*.wasm); missing or empty: the embedded defaults.
    #[arg(
        long,
        env = "VFPOOL_POLICY_DIR",
        default_value = "/etc/vfpool/policies"
    )]
    pub policy_dir: PathBuf,
    /// Print JSON (`{"pools":[...]}`) instead of a table.
    #[arg(long, env = "VFPOOL_JSON")]
    pub json: bool,
}

/// `vfpool policy check`.
#[derive(Debug, clap::Args)]
pub struct PolicyCheckArgs {
    /// The modules to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The config file to validate and exercise the modules with (default: empty settings).
    #[arg(long, env = "VFPOOL_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// Prefix for resources that do not name one.
    #[arg(long, env = "VFPOOL_RESOURCE_PREFIX", default_value = "intel.com")]
    pub resource_prefix: String,
    #[command(flatten)]
    pub sysfs: SysfsArgs,
    /// Exercise the modules on a simulated node (a shipped fixture name or a fixture file) instead
    /// of --sysfs-root.
    // Not a clap `conflicts_with`: clap counts `VFPOOL_SYSFS_ROOT` (set in the agent's pod) as
    // given, which would refuse `--fixture` exactly where operators run `policy check`. Only both
    // flags on the command line conflict ([`parse`]).
    #[arg(long)]
    pub fixture: Option<String>,
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

/// `vfpool run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub sysfs: SysfsArgs,
    /// The upstream device plugin's config file (`{"resourceList":[...]}`); watched for changes.
    #[arg(
        long,
        env = "VFPOOL_CONFIG_FILE",
        default_value = "/etc/pcidp/config.json"
    )]
    pub config_file: PathBuf,
    /// Prefix for resources that do not name one.
    #[arg(long, env = "VFPOOL_RESOURCE_PREFIX", default_value = "intel.com")]
    pub resource_prefix: String,
    /// kubelet's directory (device-plugins/, plugins_registry/, pod-resources/).
    #[arg(long, env = "VFPOOL_KUBELET_DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// Where Allocate writes the device-info files Multus and the CNI plugin read.
    #[arg(
        long,
        env = "VFPOOL_DEVINFO_DIR",
        default_value = "/var/run/k8s.cni.cncf.io/devinfo/dp"
    )]
    pub devinfo_dir: PathBuf,
    /// Directory of policy modules (*.wasm); missing or empty: the embedded defaults. Watched.
    #[arg(
        long,
        env = "VFPOOL_POLICY_DIR",
        default_value = "/etc/vfpool/policies"
    )]
    pub policy_dir: PathBuf,
    /// Keep compiled policy modules in this directory (created 0700; must be owned by the agent's
    /// user), so a restart or hot swap of a large Python or JavaScript policy loads in
    /// milliseconds instead of compiling for seconds. Unset: compile every time.
    #[arg(long, env = "VFPOOL_POLICY_CACHE_DIR")]
    pub policy_cache_dir: Option<PathBuf>,
    /// How often to rediscover devices and health (e.g. 30s, 500ms, 2m).
    #[arg(long, env = "VFPOOL_RESCAN_INTERVAL", default_value = "30s", value_parser = crate::cmd::parse_duration)]
    pub rescan_interval: std::time::Duration,
}
