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

/// After any failure the same compiled policy still serves (fresh store per call).
fn still_serves(policy: &Policy) {
    let pools = policy
        .select(&settings("behave"), &test_inventory())
        .expect("next call succeeds")
        .value;
    assert_eq!(pools[0].resource_name, "example.com/probe");
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
        CallError::Trap { stderr, .. } => {
            assert!(
                stderr.contains("probe policy panics on purpose"),
                "{stderr}"
            )
        }
        other => panic!("expected a trap, got {other}"),
    }
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
        CallError::Trap { message, stderr } => {
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

/// Stdout is discarded, so a policy that prints a lot still works (it used to trap at 64 KiB).
#[test]
fn printing_to_stdout_never_stops_a_policy() {
    let outcome = probe()
        .select(&settings("probe:print-flood"), &test_inventory())
        .expect("printing is not a failure");
    assert!(!outcome.value.is_empty());
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
            what: ModuleKind::Component,
            ..
        }
    ));
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

/// A component that needs more memory than a call may have is refused when it is loaded, and the
/// message says the sandbox's limits may be why (the instance pool cannot hold it).
#[test]
fn a_component_beyond_the_memory_cap_is_refused_when_loaded() {
    let engine = vfpool_policy::PolicyEngine::new(vfpool_policy::Limits {
        memory_bytes: 64 << 10,
        ..Default::default()
    })
    .unwrap();
    let error = Policy::compile(&engine, "big.wasm", defaults::UPSTREAM_SELECTOR).unwrap_err();
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
    assert!(text.contains("beyond the sandbox's limits"), "{text}");
    assert!(text.contains("memory"), "{text}");
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
