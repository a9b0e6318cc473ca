//! `vfpool policy check FILE.wasm...`: everything a running agent does before it accepts a module —
//! size limit, compile, type-check the exports, `validate-settings`, a `select` dry run and a
//! `prefer` exercise on an inventory — then prints what the module produced. Exit 0 only if every
//! file would be accepted. A module that exports one role is checked together with the embedded
//! default for the other, as the agent would run it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use vfpool_policy::{
    FileProblem, Limits, Outcome, Policy, PolicyEngine, PolicyInventory, Pool, Settings, defaults,
    exercise_allocator, read_regular_file, skipped_policy_name,
};
use vfpool_sysfs::SysfsRoot;

use crate::cli::{DEFAULT_CONFIG_FILE, PolicyCheckArgs};
use crate::exit::{CmdResult, Code, Failure, WithCode};
use crate::output::{Output, complain};

pub fn run(args: &PolicyCheckArgs) -> CmdResult {
    let inventory = inventory(args)?;
    let config = match &args.config_file {
        None => {
            // A module can accept empty settings and refuse the node's real config: "ACCEPTED"
            // must not read as "with the agent's config".
            complain!(
                "policy check: no --config-file (VFPOOL_CONFIG_FILE): checked with empty settings; a running agent validates a module with its config file ({DEFAULT_CONFIG_FILE} by default): pass that file to check against it"
            );
            String::new()
        }
        // Read as the agent reads it: an empty or unreadable config is refused the same way.
        Some(path) => vfpool_policy::read_config_file(path)
            .map_err(anyhow::Error::msg)
            .code(Code::BadInput)?,
    };
    let settings = Settings {
        config,
        default_resource_prefix: args.resource_prefix.clone(),
    };
    let engine = PolicyEngine::with_compiler(Limits::default(), None, args.compile.compiler())
        .code(Code::Failure)?;
    let default_selector = Policy::compile_embedded(
        &engine,
        defaults::UPSTREAM_SELECTOR_NAME,
        defaults::UPSTREAM_SELECTOR,
    )
    .code(Code::Failure)?;
    let default_allocator = Policy::compile_embedded(
        &engine,
        defaults::PACKED_ALLOCATOR_NAME,
        defaults::PACKED_ALLOCATOR,
    )
    .code(Code::Failure)?;

    let mut out = Output::stdout();
    let mut refused = Vec::new();
    for file in &args.files {
        match check(
            file,
            &engine,
            &settings,
            &inventory,
            &default_selector,
            &default_allocator,
        ) {
            Ok(report) => out.print(&report)?,
            Err(reason) => {
                out.print(&format!("{}: REFUSED: {reason}\n", file.display()))?;
                refused.push(file.display().to_string());
            }
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: Code::BadInput,
            error: anyhow::anyhow!(
                "{} of {} modules would be refused: {}",
                refused.len(),
                args.files.len(),
                refused.join(", ")
            ),
        })
    }
}

fn inventory(args: &PolicyCheckArgs) -> Result<PolicyInventory, Failure> {
    let (inventory, facts) = match &args.fixture {
        Some(name) => {
            let fixture = vfpool_sysfs::sim::Fixture::load(name).code(Code::BadInput)?;
            let dir = tempfile::tempdir()
                .context("cannot create a temporary directory for the simulated node")
                .code(Code::Failure)?;
            vfpool_sysfs::sim::write_tree(&fixture, dir.path()).code(Code::Failure)?;
            let inventory =
                vfpool_sysfs::discover(&SysfsRoot::new(dir.path())).code(Code::Failure)?;
            (inventory, vfpool_policy::HostFacts::default())
        }
        None => {
            let root = &args.sysfs.sysfs_root;
            let inventory = vfpool_sysfs::discover(&SysfsRoot::new(root))
                .map_err(super::discover::discovery_failure)?;
            let facts = crate::facts::FactsGatherer::for_sysfs_root(root).gather(&inventory);
            (inventory, facts)
        }
    };
    Ok(PolicyInventory::new(&inventory, &facts))
}

fn check(
    file: &Path,
    engine: &PolicyEngine,
    settings: &Settings,
    inventory: &PolicyInventory,
    default_selector: &Policy,
    default_allocator: &Policy,
) -> Result<String, String> {
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    // The agent would never load it under this name, so "accepted" would mislead.
    if skipped_policy_name(&name).is_some() {
        return Err(format!(
            "a running agent skips {name:?}: it loads only files named NAME.wasm that do not start with '.'; install it under such a name (written elsewhere, renamed into place)"
        ));
    }
    // Read as the agent reads its policy directory: bounded, and without blocking, so that a FIFO
    // (or a device) under a module's name is refused instead of hanging the check.
    let max = engine.limits().max_module_bytes;
    let bytes = read_regular_file(file, max as u64).map_err(|problem| match problem {
        FileProblem::NotRegular => {
            "not a regular file (a FIFO, directory, socket or device); a running agent ignores it"
                .to_string()
        }
        FileProblem::TooLarge(len) => format!("{len} bytes, more than the {max}-byte limit"),
        FileProblem::Io(e) => format!("cannot read: {e}"),
    })?;
    let policy =
        Policy::compile(engine, &name, &bytes).map_err(|e| vfpool_policy::error_chain(&e))?;
    let roles = policy.roles();
    let selector = if roles.selector {
        &policy
    } else {
        default_selector
    };
    let allocator = if roles.allocator {
        &policy
    } else {
        default_allocator
    };
    let mut logged = Vec::new();
    let ran = run_calls(
        &policy,
        selector,
        allocator,
        settings,
        inventory,
        &mut logged,
    );
    let log_text = log_lines(&logged);
    // A refusal shows what the policies logged before it too: a warning about the settings may
    // be what explains it.
    let (pools, preference) = ran.map_err(|reason| {
        if log_text.is_empty() {
            reason
        } else {
            format!("{reason}\n{}", log_text.trim_end())
        }
    })?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: ACCEPTED: {} exports {}{}{} (compiled in {:.1?}{})",
        file.display(),
        policy.id(),
        if roles.selector { "selector" } else { "" },
        if roles.selector && roles.allocator {
            " + "
        } else {
            ""
        },
        if roles.allocator { "allocator" } else { "" },
        policy.compile_time(),
        // What an author can do about a slow `select`: see the policy guide.
        if policy.takes_arguments_in_one_allocation() {
            "; arguments passed in one allocation"
        } else {
            ""
        },
    );
    if roles.selector {
        let _ = writeln!(out, "  pools ({}):", pools.len());
        out.push_str(&pool_lines(&pools));
    }
    out.push_str(&log_text);
    if roles.allocator {
        match preference {
            Some(ids) => {
                let _ = writeln!(out, "  sample preference: {}", ids.join(" "));
            }
            None => {
                let _ = writeln!(out, "  sample preference: (no devices to choose from)");
            }
        }
    }
    Ok(out)
}

/// What a running agent does before it accepts a module (`vfpool_policy::exercise`), step by
/// step, keeping what each call logged in `logged`: the check is where a policy's author looks,
/// whatever the log level. The module's own lines go under the call's name, the embedded
/// partner's (warnings about the config, say) under its name too.
fn run_calls(
    policy: &Policy,
    selector: &Policy,
    allocator: &Policy,
    settings: &Settings,
    inventory: &PolicyInventory,
    logged: &mut Vec<(String, Outcome<()>)>,
) -> Result<(Vec<Pool>, Option<Vec<String>>), String> {
    let both = std::ptr::eq(selector, allocator);
    let label = |p: &Policy, role: &str, call: &str| match (std::ptr::eq(p, policy), both) {
        (true, true) => format!("{role} {call}"),
        (true, false) => call.to_string(),
        (false, _) => format!("{} {call}", p.id().name),
    };
    // A failed call's lines (logged before it failed) are kept too, with the reason.
    let mut kept =
        |label: String, result: Result<Outcome<()>, vfpool_policy::PolicyCallError>| match result {
            Ok(outcome) => {
                logged.push((label, outcome));
                Ok(())
            }
            Err(e) => {
                let reason = vfpool_policy::error_chain(&e);
                logged.push((label, lines_only(e.logs)));
                Err(reason)
            }
        };
    kept(
        label(selector, "selector", "validate-settings"),
        selector.validate_selector_settings(settings),
    )?;
    kept(
        label(allocator, "allocator", "validate-settings"),
        allocator.validate_allocator_settings(settings),
    )?;
    let mut pools = Vec::new();
    kept(
        label(selector, "selector", "select"),
        selector.select(settings, inventory).map(|selected| {
            pools = selected.value.clone();
            without_value(selected)
        }),
    )?;
    let mut preference = None;
    kept(
        label(allocator, "allocator", "prefer"),
        exercise_allocator(allocator, settings, inventory, &pools).map(|outcome| match outcome {
            Some(outcome) => {
                preference = Some(outcome.value.clone());
                without_value(outcome)
            }
            None => lines_only(Vec::new()),
        }),
    )?;
    Ok((pools, preference))
}

/// The lines of `logged` as the check prints them; empty when nothing was logged.
fn log_lines(logged: &[(String, Outcome<()>)]) -> String {
    let mut out = String::new();
    let lines: usize = logged.iter().map(|(_, o)| o.logs.len()).sum();
    if lines == 0 {
        return out;
    }
    let plural = if lines == 1 { "" } else { "s" };
    let _ = writeln!(out, "  policy log ({lines} line{plural}):");
    for (call, outcome) in logged {
        for line in &outcome.logs {
            let _ = writeln!(out, "    {call}: {}: {}", line.level, line.message);
        }
        if outcome.logs_dropped > 0 {
            let _ = writeln!(
                out,
                "    {call}: {} more lines dropped (the host keeps a bounded number per call)",
                outcome.logs_dropped
            );
        }
    }
    out
}

/// Log lines as an outcome without a value.
fn lines_only(logs: Vec<vfpool_policy::LogLine>) -> Outcome<()> {
    Outcome {
        value: (),
        logs,
        logs_dropped: 0,
    }
}

/// An outcome's log lines, without its value.
fn without_value<T>(outcome: Outcome<T>) -> Outcome<()> {
    Outcome {
        value: (),
        logs: outcome.logs,
        logs_dropped: outcome.logs_dropped,
    }
}

fn pool_lines(pools: &[Pool]) -> String {
    let mut out = String::new();
    for pool in pools {
        let ids: Vec<&str> = pool.devices.iter().map(|d| d.id.as_str()).collect();
        let _ = writeln!(
            out,
            "    {} ({}, {} devices): {}",
            pool.resource_name,
            pool.device_type,
            ids.len(),
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(" ")
            }
        );
    }
    out
}
