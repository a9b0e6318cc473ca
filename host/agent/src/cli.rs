//! The command line. Every flag has an environment twin (`VFPOOL_<FLAG>`; `VFPOOL_<COMMAND>_<FLAG>`
//! for a flag that only one command has and that would mean something else elsewhere, such as
//! `VFPOOL_SIM_FIXTURE`), a flag on the command line beats its
//! twin, and defaults are the upstream device plugin's where it has one.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// `--resource-prefix`: a prefix kubelet accepts for an extended resource, checked when the
/// command starts; an empty one means the default, `intel.com`, as upstream's entrypoint reads it.
/// Accepted as given, a bad prefix only showed once the agent ran, as a refused config serving no
/// pools until the flag was fixed (or every resource named its own `resourcePrefix`).
fn resource_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Ok("intel.com".to_string());
    }
    if text.contains('/') {
        return Err(
            "give the prefix alone, without '/' or a resource name, such as intel.com".to_string(),
        );
    }
    match vfpool_policy::validate::resource_name(&format!("{text}/x")) {
        Ok(()) => Ok(text.to_string()),
        Err(vfpool_policy::validate::ResultError::BadResourceName { reason, .. }) => Err(reason),
        Err(other) => Err(other.to_string()),
    }
}

/// Parses the process's command line, exiting as clap does (code 2) on a usage error.
pub fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    if let Some(message) = conflict(&matches) {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Checked here, on the value that won, rather than by a value parser: clap parses a global
    // flag's environment twin at every level the flag was not given at, so an invalid `VFPOOL_LOG_LEVEL`
    // was refused even with a valid `--log-level` on the command line.
    // The fallback filter, `RUST_LOG`, gets the same check: `RUST_LOG=warning` silenced every
    // line, the agent's errors included.
    let level = match cli.log_level.take() {
        Some(level) => Some((level, crate::telemetry::FROM_FLAG)),
        None => std::env::var("RUST_LOG")
            .ok()
            .filter(|l| !l.trim().is_empty())
            .map(|level| (level, crate::telemetry::FROM_RUST_LOG)),
    };
    if let Some((level, origin)) = level {
        match crate::telemetry::directives(&level, origin) {
            Ok(directives) => cli.log_level = Some(directives),
            Err(e) => Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, e)
                .exit(),
        }
    }
    if let Command::Policy(PolicyCommand::Check(check)) = &mut cli.command
        && fixture_yields_to_sysfs_root(&matches)
    {
        check.fixture = None;
    }
    cli
}

/// Whether `policy check`'s fixture came from its environment twin and `--sysfs-root` from the
/// command line, where the flag beats the environment, as everywhere.
fn fixture_yields_to_sysfs_root(matches: &ArgMatches) -> bool {
    matches
        .subcommand_matches("policy")
        .and_then(|policy| policy.subcommand_matches("check"))
        .is_some_and(|check| {
            check.value_source("fixture") == Some(ValueSource::EnvVariable)
                && check.value_source("sysfs_root") == Some(ValueSource::CommandLine)
        })
}

/// Boolean flags with an environment twin take what is written in one (`VFPOOL_JSON=1`, `yes`,
/// `off`; any case), and an empty value is false, as an unset one: clap's default parser for a flag
/// takes only `true` and `false`. Anything else is refused, as a typo.
#[derive(Clone, Default)]
pub struct EnvBool(clap::builder::BoolishValueParser);

impl clap::builder::TypedValueParser for EnvBool {
    type Value = bool;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<bool, clap::Error> {
        if value.is_empty() {
            return Ok(false);
        }
        self.0.parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        self.0.possible_values()
    }
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
    /// DaemonSet passes it (`--log-level=10`), and means info (`debug` or `trace` give more).
    // Turned into filter directives by [`parse`], refusing typos (which would silence every log
    // line).
    #[arg(long, global = true, env = "VFPOOL_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// How log lines are written to standard error: `text` for people, or `json` (one object per
    /// line: timestamp, level, target, message and the line's fields) for log collectors.
    #[arg(
        long,
        global = true,
        env = "VFPOOL_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value_t = crate::telemetry::LogFormat::Text
    )]
    pub log_format: crate::telemetry::LogFormat,

    /// Accepted so that the upstream plugin's DaemonSet arguments (`--log-dir=sriovdp`) keep
    /// working, and ignored: vfpool logs to standard error, which the container runtime keeps.
    #[arg(long, global = true, env = "VFPOOL_LOG_DIR", value_name = "DIR")]
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
    /// Show the pools the active policies make of this node as the agent would serve them (a dry
    /// run; nothing is served): sorted by resource name, with the health and NUMA node kubelet
    /// would be told (none for a pool with `excludeTopology`).
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
    #[arg(long, env = "VFPOOL_DEMO_KEEP", value_parser = EnvBool::default())]
    pub keep: bool,
}

/// `vfpool policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load, type-check and exercise policy modules; exit 0 only if a running agent would accept
    /// every one of them.
    Check(PolicyCheckArgs),
    /// Compile one module read from standard input to standard output, under the limits given:
    /// the child process the other commands compile policies in (see `vfpool_policy::isolate`).
    #[command(hide = true)]
    CompileWorker(CompileWorkerArgs),
}

/// `vfpool policy compile-worker` (internal).
#[derive(Debug, clap::Args)]
pub struct CompileWorkerArgs {
    /// CPU time limit, in seconds.
    #[arg(long)]
    pub cpu_seconds: u64,
    /// Memory limit, in bytes.
    #[arg(long)]
    pub memory_bytes: u64,
    /// The process that started this one (it exits if that one is gone).
    #[arg(long)]
    pub parent_pid: u32,
}

/// The limits on compiling a module from the policy directory, which happens in a child process
/// so that a module built to make the compiler run for minutes or take gigabytes cannot stall or
/// sink the agent.
#[derive(Debug, clap::Args)]
pub struct PolicyCompileArgs {
    /// CPU time compiling one policy module may take (e.g. 60s, 2m); a module that needs more is
    /// refused until its file changes. The example Python and JavaScript policies take about 11s.
    #[arg(long, env = "VFPOOL_POLICY_COMPILE_CPU", default_value = "60s", value_parser = crate::cmd::parse_compile_cpu)]
    pub policy_compile_cpu: std::time::Duration,
    /// Memory compiling one policy module may take, in MiB; a module that needs more is refused
    /// until its file changes. The example Python policy takes about 370 MiB.
    #[arg(
        long,
        env = "VFPOOL_POLICY_COMPILE_MEMORY_MIB",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u64).range(64..=1 << 20)
    )]
    pub policy_compile_memory_mib: u64,
}

impl PolicyCompileArgs {
    /// The agent's compiler: its own executable (`/proc/self/exe`, which still names it after
    /// an upgrade replaced the file) with the hidden `policy compile-worker` subcommand.
    #[allow(unsafe_code)]
    pub fn compiler(&self) -> vfpool_policy::Compiler {
        let limits = vfpool_policy::CompileLimits::new(
            self.policy_compile_cpu,
            self.policy_compile_memory_mib << 20,
        );
        // SAFETY: the program is this executable, whose `policy compile-worker` is
        // `vfpool_policy::isolate::serve_worker` of the same build (see `main`).
        let child = unsafe {
            vfpool_policy::ChildCompiler::new(
                PathBuf::from("/proc/self/exe"),
                vec!["policy".into(), "compile-worker".into()],
                limits,
            )
        };
        vfpool_policy::Compiler::Child(child)
    }
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
        default_value = DEFAULT_CONFIG_FILE
    )]
    pub config_file: PathBuf,
    /// Prefix for resources that do not name one.
    #[arg(long, env = "VFPOOL_RESOURCE_PREFIX", default_value = "intel.com", value_parser = resource_prefix)]
    pub resource_prefix: String,
    /// Directory of policy modules (*.wasm); missing or empty: the embedded defaults.
    #[arg(
        long,
        env = "VFPOOL_POLICY_DIR",
        default_value = "/etc/vfpool/policies"
    )]
    pub policy_dir: PathBuf,
    /// Print JSON (`{"pools":[...]}`, every device of every pool) instead of a table (the first
    /// few device ids of each pool).
    #[arg(long, env = "VFPOOL_JSON", value_parser = EnvBool::default())]
    pub json: bool,
    #[command(flatten)]
    pub compile: PolicyCompileArgs,
}

/// The upstream device plugin's config file, where `run` and `pools` read it by default.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/pcidp/config.json";

/// `vfpool policy check`.
#[derive(Debug, clap::Args)]
pub struct PolicyCheckArgs {
    /// The modules to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The config file to validate and exercise the modules with (default: empty settings, said on
    /// standard error: the agent itself reads /etc/pcidp/config.json).
    #[arg(long, env = "VFPOOL_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// Prefix for resources that do not name one.
    #[arg(long, env = "VFPOOL_RESOURCE_PREFIX", default_value = "intel.com", value_parser = resource_prefix)]
    pub resource_prefix: String,
    #[command(flatten)]
    pub sysfs: SysfsArgs,
    /// Exercise the modules on a simulated node (a shipped fixture name or a fixture file) instead
    /// of --sysfs-root.
    // Not a clap `conflicts_with`: clap counts `VFPOOL_SYSFS_ROOT` (set in the agent's pod) as
    // given, which would refuse `--fixture` exactly where operators run `policy check`. Only both
    // flags on the command line conflict ([`parse`]), and the command line beats the environment.
    #[arg(long, env = "VFPOOL_POLICY_CHECK_FIXTURE")]
    pub fixture: Option<String>,
    #[command(flatten)]
    pub compile: PolicyCompileArgs,
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
    #[arg(long, env = "VFPOOL_JSON", value_parser = EnvBool::default())]
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
    #[arg(long, env = "VFPOOL_SIM_PRINT", value_parser = EnvBool::default())]
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
        default_value = DEFAULT_CONFIG_FILE
    )]
    pub config_file: PathBuf,
    /// Prefix for resources that do not name one.
    #[arg(long, env = "VFPOOL_RESOURCE_PREFIX", default_value = "intel.com", value_parser = resource_prefix)]
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
    #[command(flatten)]
    pub compile: PolicyCompileArgs,
    /// How often to rediscover devices and health (e.g. 30s, 500ms, 2m).
    #[arg(long, env = "VFPOOL_RESCAN_INTERVAL", default_value = "30s", value_parser = crate::cmd::parse_duration)]
    pub rescan_interval: std::time::Duration,
    /// After kubelet restarts, how long devices its pods held stay held whatever its PodResources
    /// API says (a restarted kubelet answers before it knows its pods again): a device a pod
    /// released meanwhile moves to another pool this much later. 0 believes PodResources at once.
    #[arg(long, env = "VFPOOL_KUBELET_RESTART_GRACE", default_value = "60s", value_parser = crate::cmd::parse_grace)]
    pub kubelet_restart_grace: std::time::Duration,
    /// Accepted so that the upstream plugin's arguments with CDI on (`--use-cdi`, which NVIDIA's
    /// network operator adds) keep working, and said at start: vfpool hands devices out as device
    /// nodes in the Allocate answer, which every container runtime takes, not as CDI devices.
    #[arg(
        long,
        env = "VFPOOL_USE_CDI",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        value_parser = EnvBool::default()
    )]
    pub use_cdi: bool,
}

#[cfg(test)]
mod tests {
    use clap::{ArgAction, CommandFactory as _};

    use super::Cli;

    /// Every argument of every command an operator runs, with the command's name. Hidden
    /// commands (`policy compile-worker`) are the agent talking to its own child process, with
    /// a cleared environment: not flags of anyone's.
    fn arguments() -> Vec<(String, clap::Arg)> {
        fn walk(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
            for arg in command.get_arguments() {
                out.push((path.to_string(), arg.clone()));
            }
            for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
                walk(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut out = Vec::new();
        walk(&command, "vfpool", &mut out);
        out
    }

    /// DESIGN.md: every flag has an environment twin. `--log-dir`, `policy check --fixture`,
    /// `sim --print` and `demo --keep` had none.
    #[test]
    fn every_flag_has_an_environment_twin() {
        let missing: Vec<String> = arguments()
            .into_iter()
            .filter(|(_, arg)| {
                arg.get_long().is_some()
                    && !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
                    && arg.get_env().is_none()
            })
            .map(|(command, arg)| format!("{command} --{}", arg.get_id()))
            .collect();
        assert!(
            missing.is_empty(),
            "flags without a VFPOOL_ twin: {missing:?}"
        );
    }

    /// `VFPOOL_JSON=1` used to be refused (clap's flags take only `true` and `false`).
    #[test]
    fn boolean_twins_take_the_usual_spellings_and_empty_is_false() {
        let mut flags = 0;
        for (name, arg) in arguments() {
            if !matches!(arg.get_action(), ArgAction::SetTrue) || arg.get_env().is_none() {
                continue;
            }
            flags += 1;
            let id = arg.get_id().to_string();
            let long = arg.get_long().unwrap_or(&id).to_owned();
            // The flag's own value parser, given the value as the environment would give it.
            let probe = clap::Command::new("probe").arg(arg.action(ArgAction::Set).num_args(1));
            let parse = |value: &str| {
                probe
                    .clone()
                    .try_get_matches_from(["probe", &format!("--{long}={value}")])
                    .map(|m| m.get_one::<bool>(&id).copied())
            };
            for (value, expected) in [
                ("1", true),
                ("true", true),
                ("yes", true),
                ("on", true),
                ("TRUE", true),
                ("0", false),
                ("false", false),
                ("no", false),
                ("off", false),
                ("", false),
            ] {
                assert_eq!(
                    parse(value).ok().flatten(),
                    Some(expected),
                    "{name} --{id} {value:?}"
                );
            }
            assert!(parse("jsn").is_err(), "{name} --{id}");
        }
        // --json twice, sim --print, demo --keep, run --use-cdi.
        assert_eq!(flags, 5);
    }

    /// The upstream plugin's `--use-cdi`, as Go's flag package takes it (bare, `=true`,
    /// `=false`), used to stop the agent at start (an unknown argument).
    #[test]
    fn run_takes_the_upstream_use_cdi_flag() {
        use clap::Parser as _;
        for (args, expected) in [
            (&["vfpool", "run"][..], false),
            (&["vfpool", "run", "--use-cdi"][..], true),
            (&["vfpool", "run", "--use-cdi=true"][..], true),
            (&["vfpool", "run", "--use-cdi=false"][..], false),
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let super::Command::Run(run) = cli.command else {
                panic!("{args:?}: not run");
            };
            assert_eq!(run.use_cdi, expected, "{args:?}");
        }
    }
}
