//! Fault containment: every way a policy can misbehave is stopped, reported with the policy's name
//! and digest, and leaves the host able to serve the next call.

use std::time::{Duration, Instant};

use vfpool_policy::validate::ResultError;
use vfpool_policy::{CallError, LoadError, ModuleKind, Policy, PolicyFailure, defaults};

use super::common::*;

fn probe() -> Policy {
    Policy::compile(engine(), "probe.wasm", &component("probe")).expect("probe compiles")
}

fn select_error(mode: &str) -> vfpool_policy::PolicyCallError {
    probe()
        .select(&settings(&format!("probe:{mode}")), &test_inventory())
        .expect_err("the probe should fail")
}

/// The probe's `prefer` in `mode`, choosing `size` of the first VFs of the test node, failing.
fn prefer_error(policy: &Policy, mode: &str, size: u32) -> vfpool_policy::PolicyCallError {
    let ids: Vec<String> = vec!["0000:01:02.0".into(), "0000:01:02.1".into()];
    policy
        .prefer(
            &settings(&format!("probe:{mode}")),
            &test_inventory(),
            "intel.com/x",
            &ids,
            &[],
            size,
        )
        .expect_err("the probe should fail")
}

/// A caller that needs the answer sooner than the engine's `prefer` deadline (the device plugin,
/// after waiting for a permit) gets a call that stops then: a looping allocator is stopped at the
/// caller's 50 ms, not at the engine's 500 ms.
#[test]
fn a_prefer_within_a_shorter_time_stops_then() {
    let policy = probe();
    let ids: Vec<String> = vec!["0000:01:02.0".into(), "0000:01:02.1".into()];
    let error = policy
        .prefer_within(
            &settings("probe:loop"),
            &test_inventory(),
            "intel.com/x",
            &ids,
            &[],
            1,
            Duration::from_millis(50),
        )
        .expect_err("the probe loops");
    match error.error.as_ref() {
        CallError::Timeout(deadline) => assert_eq!(*deadline, Duration::from_millis(50)),
        other => panic!("expected the caller's deadline, got {other}"),
    }
    still_serves(&policy);
}

/// After any failure the same compiled policy still serves (fresh store per call).
fn still_serves(policy: &Policy) {
    let pools = policy
        .select(&settings("behave"), &test_inventory())
        .expect("next call succeeds")
        .value;
    assert_eq!(pools[0].resource_name, "example.com/probe");
}

/// A module that declares it takes its arguments in one allocation, and whose `cabi_realloc`
/// then answers with an address past the end of its memory: the call is refused with the reason,
/// nothing is written there, and the host keeps serving — whether the inventory is laid out for
/// the call or its kept image is copied.
#[test]
fn a_realloc_that_lies_is_contained() {
    let liar = Policy::compile(engine(), "lying_realloc.wasm", &component("lying_realloc"))
        .expect("the liar compiles");
    assert!(liar.takes_arguments_in_one_allocation());
    let inventory = test_inventory();
    let refused = |inventory| {
        let text = liar
            .select(&settings("behave"), inventory)
            .expect_err("the host refuses an allocation beyond the module's memory")
            .to_string();
        assert!(
            text.contains("lying_realloc.wasm") && text.contains("beyond end of memory"),
            "{text}"
        );
    };
    refused(&inventory);
    // The probe (which takes its arguments in one allocation too) leaves the inventory's image
    // kept; the liar is refused the same way from it.
    let probe = probe();
    probe
        .select(&settings("behave"), &inventory)
        .expect("the probe selects");
    refused(&inventory);
    still_serves(&probe);
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let policy = probe();
    let started = Instant::now();
    let error = policy
        .select(&settings("probe:loop"), &test_inventory())
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(*error.error, CallError::Timeout(_)), "{error}");
    assert!(
        elapsed < Duration::from_secs(5),
        "stopped after {elapsed:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("probe.wasm") && text.contains("sha256:"),
        "{text}"
    );
    assert!(text.contains("deadline"), "{text}");
    still_serves(&policy);
    // The allocator call has its own (shorter) deadline.
    let error = prefer_error(&policy, "loop", 1);
    assert!(matches!(*error.error, CallError::Timeout(_)), "{error}");
}

/// Sleeping cannot outlast the deadline: policy time is frozen, so a sleep returns at once (it used
/// to block the calling thread in the host, where the deadline is not checked, for as long as
/// the policy asked: an hour here), and a policy that sleeps in a loop spins into its deadline.
#[test]
fn sleeping_cannot_outlast_the_deadline() {
    let policy = probe();
    let started = Instant::now();
    let pools = policy
        .select(&settings("probe:sleep"), &test_inventory())
        .expect("a sleep returns at once")
        .value;
    assert_eq!(pools[0].resource_name, "example.com/probe");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(60), "slept {elapsed:?}");
    let started = Instant::now();
    let error = prefer_error(&policy, "sleep-loop", 1);
    assert!(matches!(*error.error, CallError::Timeout(_)), "{error}");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "stopped after {elapsed:?}"
    );
    still_serves(&policy);
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let policy = probe();
    let error = policy
        .select(&settings("probe:alloc"), &test_inventory())
        .unwrap_err();
    assert!(matches!(*error.error, CallError::MemoryCap(_)), "{error}");
    assert!(error.to_string().contains("memory cap"), "{error}");
    still_serves(&policy);
}

#[test]
fn a_trap_is_contained_and_carries_the_panic_message() {
    let error = select_error("trap");
    match error.error.as_ref() {
        CallError::Trap {
            stderr, stderr_cut, ..
        } => {
            assert!(
                stderr.contains("probe policy panics on purpose"),
                "{stderr}"
            );
            assert_eq!(*stderr_cut, None);
        }
        other => panic!("expected a trap, got {other}"),
    }
    // The panic message says what went wrong: it leads, before the trap and its backtrace of
    // runtime frames (it used to come after them, where a long backtrace buried it).
    let text = error.error.to_string();
    assert!(
        text.starts_with("trapped: ") && text.find("on purpose") < text.find("wasm trap"),
        "{text}"
    );
    still_serves(&probe());
}

#[test]
fn an_error_result_is_reported() {
    let error = select_error("error");
    assert!(
        matches!(error.error.as_ref(), CallError::Returned(PolicyFailure::Internal(m)) if m.contains("on purpose")),
        "{error}"
    );
    assert!(error.to_string().contains("probe policy fails on purpose"));
}

/// A result far larger than any node's pools is refused while wasmtime copies it out, before the
/// agent holds it (strings of a result may alias the same guest bytes, so the guest's memory cap
/// alone does not bound what the host would allocate). It used to be copied whole (24 MiB here)
/// and only then refused by the result checks.
#[test]
fn a_result_larger_than_the_host_accepts_is_refused_while_copying() {
    let policy = probe();
    let error = policy
        .select(&settings("probe:bloated-result"), &test_inventory())
        .unwrap_err();
    assert!(matches!(*error.error, CallError::Refused(_)), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("probe.wasm") && text.contains("too much data"),
        "{text}"
    );
    still_serves(&policy);
}

/// A policy that exits (`process::exit`, a Go `log.Fatal`) is reported with its status and what
/// it wrote to stderr (the reason), not as data the host refused.
#[test]
fn an_exit_is_reported_with_its_status_and_stderr() {
    let error = select_error("exit");
    match error.error.as_ref() {
        CallError::Trap {
            message, stderr, ..
        } => {
            // WASI 0.2's exit carries only success or failure: `exit(3)` arrives as 1.
            assert!(message.contains("exited with status 1"), "{message}");
            assert!(stderr.contains("gives up on purpose"), "{stderr}");
        }
        other => panic!("not reported as an exit: {other}"),
    }
}

#[test]
fn invalid_results_are_refused() {
    assert!(matches!(
        *select_error("huge-result").error,
        CallError::InvalidResult(ResultError::TooManyPools { .. })
    ));
    let error = select_error("unknown-device");
    assert!(
        matches!(
            *error.error,
            CallError::InvalidResult(ResultError::UnknownDevice { .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("0000:ff:1f.7"), "{error}");
    assert!(matches!(
        *select_error("duplicate-device").error,
        CallError::InvalidResult(ResultError::DeviceInTwoPools { .. })
    ));
    assert!(matches!(
        *select_error("bad-name").error,
        CallError::InvalidResult(ResultError::BadResourceName { .. })
    ));
    let error = prefer_error(&probe(), "wrong-size", 2);
    assert!(matches!(
        *error.error,
        CallError::InvalidResult(ResultError::WrongCount { got: 1, want: 2 })
    ));
}

#[test]
fn log_lines_are_bounded() {
    let outcome = probe()
        .select(&settings("probe:log-flood"), &test_inventory())
        .expect("logging is not a failure");
    let limits = engine().limits();
    assert_eq!(outcome.logs.len(), limits.max_log_lines);
    assert!(outcome.logs_dropped > 0);
    assert!(
        outcome
            .logs
            .iter()
            .all(|l| l.message.len() <= limits.max_log_line_bytes + 3)
    );
}

/// Stdout is discarded and stderr keeps its end, so a policy that prints a lot still works: it
/// used to trap at 64 KiB of stdout, then at 64 KiB of stderr (a line per device, fine on a small
/// node, failed on a big one).
#[test]
fn printing_never_stops_a_policy() {
    let outcome = probe()
        .select(&settings("probe:print-flood"), &test_inventory())
        .expect("printing is not a failure");
    assert!(!outcome.value.is_empty());
}

/// After much output, a panic's message is still what the trap reports: stderr keeps its end.
#[test]
fn a_panic_after_much_output_is_reported_with_its_message() {
    match select_error("print-then-trap").error.as_ref() {
        CallError::Trap {
            stderr, stderr_cut, ..
        } => {
            assert!(stderr.contains("panics after much output"), "{stderr}");
            assert_eq!(*stderr_cut, Some(64 << 10));
        }
        other => panic!("expected a trap, got {other}"),
    }
}

#[test]
fn bad_module_bytes_are_refused() {
    let truncated = &defaults::UPSTREAM_SELECTOR[..defaults::UPSTREAM_SELECTOR.len() / 2];
    let error = Policy::compile(engine(), "half.wasm", truncated).unwrap_err();
    assert!(matches!(error, LoadError::Compile { .. }), "{error}");
    assert!(error.to_string().contains("half.wasm"));
    assert!(matches!(
        error,
        LoadError::Compile {
            what: ModuleKind::Incomplete,
            ..
        }
    ));
    assert!(
        error
            .to_string()
            .contains("not a whole WebAssembly component")
    );
    // Whole but of another component encoding: refused as a component wasmtime refused, not
    // taken for a file cut off (which a running agent only ignores).
    let mut other_version = defaults::UPSTREAM_SELECTOR.to_vec();
    other_version[4] = 0x0c;
    let error = Policy::compile(engine(), "v.wasm", &other_version).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::Compile {
                what: ModuleKind::Component,
                ..
            }
        ),
        "{error}"
    );
    for (junk, kind) in [
        (&b"#!/bin/sh\necho hi\n"[..], ModuleKind::NotWasm),
        (b"", ModuleKind::NotWasm),
        (b"\0asm\x01\0\0\0", ModuleKind::CoreModule),
    ] {
        let error = Policy::compile(engine(), "junk.wasm", junk).unwrap_err();
        assert!(
            matches!(&error, LoadError::Compile { what, .. } if *what == kind),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("not a valid WebAssembly component")
        );
    }
}

/// A component that needs more memory than a call may have is refused when it is loaded, before
/// it is compiled (it was compiled first, then refused by the instance pool, and compiled again on
/// every retry), and the message names the module and both sizes.
#[test]
fn a_component_beyond_the_memory_cap_is_refused_when_loaded() {
    let engine = vfpool_policy::PolicyEngine::new(vfpool_policy::Limits {
        memory_bytes: 64 << 10,
        ..Default::default()
    })
    .unwrap();
    let error = Policy::compile(&engine, "big.wasm", defaults::UPSTREAM_SELECTOR).unwrap_err();
    assert!(
        matches!(error, LoadError::InitialMemory { limit, .. } if limit == 64 << 10),
        "{error}"
    );
    let text = format!("{:#}", anyhow::Error::from(error));
    assert!(
        text.contains("initial memory, more than the 65536 a call may use"),
        "{text}"
    );
}

#[test]
fn wrong_exports_are_refused() {
    let error = Policy::compile(engine(), "greeter.wasm", &component("wrong_exports")).unwrap_err();
    assert!(matches!(error, LoadError::NoPolicyExport { .. }), "{error}");
    assert!(error.to_string().contains("exports neither"), "{error}");
}

/// An interface exported with the wrong types is a broken policy, named as such. It used to count as
/// not exported: a module exporting a good selector and a mistyped allocator was served as a
/// selector alone, the default allocator silently standing in.
#[test]
fn an_interface_exported_with_the_wrong_types_is_refused_by_name() {
    let error =
        Policy::compile(engine(), "mistyped.wasm", &component("mistyped_allocator")).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::WrongExportType {
                interface: "vfpool:policy/allocator@0.1.0",
                ..
            }
        ),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("mistyped.wasm") && text.contains("rebuild it against wit/policy.wit"),
        "{text}"
    );
}

#[test]
fn roles_follow_exports() {
    let selector_only = selector().roles();
    assert!(selector_only.selector && !selector_only.allocator);
    let both = probe().roles();
    assert!(both.selector && both.allocator);
    let allocator = Policy::compile(engine(), "packed", defaults::PACKED_ALLOCATOR).unwrap();
    let error = allocator
        .select(&settings(""), &test_inventory())
        .unwrap_err();
    assert!(matches!(*error.error, CallError::NotExported(_)));
}

/// More simultaneous calls than instance slots queue for a slot instead of failing to instantiate
/// (which would read as a broken policy and, for a hot swap, refuse a good one).
#[test]
fn calls_beyond_the_instance_slots_wait_for_one() {
    let engine = vfpool_policy::PolicyEngine::new(vfpool_policy::Limits {
        concurrent_calls: 1,
        select_deadline: Duration::from_secs(60),
        ..Default::default()
    })
    .unwrap();
    let policy = Policy::compile(&engine, "probe.wasm", &component("probe")).unwrap();
    let inventory = test_inventory();
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..5)
                        .map(|_| policy.select(&settings("behave"), &inventory).map(|_| ()))
                        .collect::<Result<Vec<()>, _>>()
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap().expect("every call gets a slot");
        }
    });
}

#[test]
fn oversized_modules_are_refused_before_compiling() {
    let engine = vfpool_policy::PolicyEngine::new(vfpool_policy::Limits {
        max_module_bytes: 1000,
        ..Default::default()
    })
    .unwrap();
    let error = Policy::compile(&engine, "big.wasm", defaults::UPSTREAM_SELECTOR).unwrap_err();
    assert!(matches!(error, LoadError::TooLarge { .. }), "{error}");
}

/// What a policy says ends up in the agent's log on every rescan and GetPreferredAllocation: an
/// error built from the policy's text stays a few KiB and one line, whatever the policy returns
/// (here 1 MiB of text that imitates the agent's own log lines).
fn assert_log_safe(error: &vfpool_policy::PolicyCallError) {
    let text = error.to_string();
    assert!(text.len() < 4 << 10, "{} bytes", text.len());
    assert!(
        !text.contains(['\n', '\r']),
        "a line break from the guest: {}",
        &text[..text.len().min(500)]
    );
    assert!(text.contains('…'), "the cut is marked: {text}");
    assert!(text.contains("probe.wasm"), "{text}");
}

#[test]
fn a_policy_error_result_cannot_flood_or_forge_the_log() {
    let error = select_error("error-flood");
    assert!(
        matches!(error.error.as_ref(), CallError::Returned(PolicyFailure::Internal(m)) if m.starts_with("probe\\n")),
        "{error}"
    );
    assert_log_safe(&error);
    let error = select_error("settings-flood");
    let (field, message) = error.invalid_settings().expect("invalid settings");
    assert!(field.len() <= 1100 && message.len() <= 1100);
    assert_log_safe(&error);
}

#[test]
fn a_trap_cannot_flood_or_forge_the_log() {
    let error = select_error("panic-flood");
    match error.error.as_ref() {
        CallError::Trap {
            message,
            stderr,
            stderr_cut,
        } => {
            // The trap's reason survives the cut; the backtrace is bounded, on the same line.
            assert!(message.starts_with("wasm trap"), "{message}");
            assert!(stderr.contains("forged line"), "{stderr}");
            // A 1 MiB panic message overflows what the host keeps of stderr (its end), and the
            // message says so.
            assert_eq!(*stderr_cut, Some(64 << 10));
            assert!(
                error.error.to_string().contains("stderr cut"),
                "{}",
                error.error
            );
        }
        other => panic!("expected a trap, got {other}"),
    }
    assert_log_safe(&error);
}

#[test]
fn an_invalid_id_cannot_flood_or_forge_the_log() {
    let error = prefer_error(&probe(), "foreign-id", 2);
    assert!(
        matches!(
            *error.error,
            CallError::InvalidResult(ResultError::NotAvailable(_))
        ),
        "{error}"
    );
    assert_log_safe(&error);
}

/// LEB128 of `n`, as the WebAssembly binary format writes counts and sizes.
fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A section: its id, size and contents.
fn section(id: u8, contents: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(contents.len(), out);
    out.extend_from_slice(contents);
}

/// A component (hand-encoded: no WebAssembly text crate in the lock file) embedding one core
/// module that declares `globals` `i32` globals (16 bytes of runtime state each in wasmtime) and
/// instantiating it `instances` times: what it costs the host grows with what it declares, not
/// with any memory it uses.
fn many_globals_component(globals: usize, instances: usize) -> Vec<u8> {
    let mut global_section = Vec::new();
    leb(globals, &mut global_section);
    for _ in 0..globals {
        // i32, immutable, initialised by `i32.const 0; end`.
        global_section.extend_from_slice(&[0x7f, 0x00, 0x41, 0x00, 0x0b]);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(6, &global_section, &mut module);

    let mut instance_section = Vec::new();
    leb(instances, &mut instance_section);
    for _ in 0..instances {
        // Instantiate core module 0 with no arguments.
        instance_section.extend_from_slice(&[0x00, 0x00, 0x00]);
    }
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component);
    section(2, &instance_section, &mut component);
    component
}

/// A component whose instances need megabytes of host-side runtime state is refused when it is
/// loaded: a core module over the per-instance limit by the host's own estimate (in both
/// allocation modes, below), and with the instance pool many instances under it that add up, by
/// wasmtime's reason naming the size. The limits used to be 16 MiB for both.
#[test]
fn a_component_needing_too_much_instance_state_is_refused_when_loaded() {
    // A 3.2 MB core instance.
    let error =
        Policy::compile(engine(), "wide.wasm", &many_globals_component(200_000, 1)).unwrap_err();
    assert!(
        matches!(error, LoadError::InstanceState { module: 0, .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("wide.wasm") && text.contains("runtime state"),
        "{text}"
    );
    // 8 instances of 640 KB (5 MB in all).
    {
        let (name, globals, instances, reason) = (
            "many.wasm",
            40_000,
            8,
            "instance allocation for this component",
        );
        let bytes = many_globals_component(globals, instances);
        let error = Policy::compile(engine(), name, &bytes).unwrap_err();
        assert!(
            matches!(
                error,
                LoadError::Compile {
                    what: ModuleKind::Component,
                    ..
                }
            ),
            "{error}"
        );
        let text = format!("{:#}", anyhow::Error::from(error));
        assert!(text.contains(name), "{text}");
        assert!(text.contains("beyond the sandbox's limits"), "{text}");
        assert!(text.contains(reason), "{text}");
    }
    // A small one passes the check (and is refused only for exporting no policy).
    let error =
        Policy::compile(engine(), "small.wasm", &many_globals_component(10, 2)).unwrap_err();
    assert!(matches!(error, LoadError::NoPolicyExport { .. }), "{error}");
}

/// Without the instance pool (a node where reserving it was refused) wasmtime checks no instance
/// size: the host's estimate refuses the same module. It used to compile, and every call would
/// have allocated its 3.2 MB of state per instance.
#[test]
fn without_the_instance_pool_a_module_of_too_much_state_is_still_refused() {
    let engine = vfpool_policy::PolicyEngine::new(vfpool_policy::Limits {
        pool_instances: false,
        ..vfpool_policy::Limits::default()
    })
    .unwrap();
    let error =
        Policy::compile(&engine, "wide.wasm", &many_globals_component(200_000, 1)).unwrap_err();
    assert!(matches!(error, LoadError::InstanceState { .. }), "{error}");
    let error = Policy::compile(&engine, "small.wasm", &many_globals_component(10, 2)).unwrap_err();
    assert!(matches!(error, LoadError::NoPolicyExport { .. }), "{error}");
}

/// A failed call keeps what the policy logged before it failed (here an info line, then a result
/// naming a device the node does not have): it is often what explains the failure, and it was
/// dropped with the call's store.
#[test]
fn a_failed_call_keeps_what_was_logged_before_it_failed() {
    let error = select_error("validate-warning");
    assert!(
        matches!(*error.error, CallError::InvalidResult(_)),
        "{error}"
    );
    assert!(
        error
            .logs
            .iter()
            .any(|l| l.level == "info" && l.message.contains("probe selecting from")),
        "{:?}",
        error.logs
    );
}

/// A selector that pools the node's uplink (a PF carrying the default route) and PFs with VFs
/// enabled in a network pool: the host leaves them out and says so with the policy's own lines
/// (a warning naming each), and the rest of the result stands. It used to serve them.
#[test]
fn the_host_keeps_what_the_node_needs_out_of_a_network_pool() {
    let inventory = test_inventory();
    let outcome = probe()
        .select(&settings("probe:echo"), &inventory)
        .expect("the rest of the result stands");
    let echo = outcome
        .value
        .iter()
        .find(|p| p.resource_name == "example.com/echo")
        .expect("the echo pool");
    let ids: Vec<&str> = echo.devices.iter().map(|d| d.id.as_str()).collect();
    let node = test_node();
    // The uplink (eno1 carries the default route in the test facts) and the PFs with VFs.
    let needed: Vec<&str> = node
        .devices
        .iter()
        .filter(|d| {
            d.netdevs.iter().any(|n| n.name == "eno1")
                || (d.kind == vfpool_sysfs::DeviceKind::Pf
                    && d.sriov_num_vfs.is_some_and(|n| n > 0))
        })
        .map(|d| d.id.as_str())
        .collect();
    assert!(needed.contains(&"0000:04:00.0"), "{needed:?}");
    assert!(needed.len() >= 3, "{needed:?}");
    for id in &needed {
        assert!(!ids.contains(id), "{id} served: {ids:?}");
        assert!(
            outcome.logs.iter().any(|l| l.level == "warn"
                && l.message
                    .contains(&format!("keeps {id:?} out of pool \"example.com/echo\""))),
            "{id}: {:?}",
            outcome.logs
        );
    }
    let others = node
        .devices
        .iter()
        .filter(|d| d.kind != vfpool_sysfs::DeviceKind::Aux && !needed.contains(&d.id.as_str()))
        .count();
    assert_eq!(ids.len(), others);
}
