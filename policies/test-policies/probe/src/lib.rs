//! A test policy (selector and allocator) for the host's fault and hot-swap tests. Never shipped.
//!
//! With settings text `probe:<mode>` every call misbehaves as `<mode>` says (`loop`, `alloc`,
//! `trap`, `exit`, `error`, `error-flood`, `settings-flood`, `panic-flood`, `print-flood`,
//! `print-then-trap`, `huge-result`,
//! `bloated-result`, `unknown-device`, `duplicate-device`, `bad-name`, `log-flood`, `wrong-size`,
//! `foreign-id`). With any other text it behaves: `select` puts every VF into one pool
//! `example.com/probe`, `prefer` returns the must-include ids and then the first available ones.
//! `validate-warning` logs a warning in `validate-settings` and then selects a device the inventory
//! does not have (a refusal the host tries again on a new inventory).
//! `echo` is not a fault: `select` pools every device, each with its whole record as it arrived
//! (`{:?}`) in its additional info under `record`, and `prefer` logs each candidate (`{:?}`), so
//! the host can check its lowering.
#![allow(unsafe_code)] // wit-bindgen's generated export shims
#![allow(missing_docs)] // wit-bindgen's generated items in a test-only crate

// The bump allocator, as the default policies have: it declares `vfpool:arena-arguments`, so the
// host's one-allocation lowering can be checked against wasmtime's through this probe.
bump_alloc::global_allocator!();

wit_bindgen::generate!({
    path: "../../../wit",
    world: "policy",
});

use exports::vfpool::policy::{allocator, selector};
use vfpool::policy::log::{Level, log};
use vfpool::policy::types::{
    AllocationRequest, DeviceKind, DeviceType, Inventory, PolicyError, Pool, PoolDevice, Settings,
};

struct Probe;

fn mode(settings: &Settings) -> &str {
    settings.config.strip_prefix("probe:").unwrap_or("").trim()
}

/// The faults shared by every call; `Ok(())` means "behave".
fn misbehave(mode: &str) -> Result<(), PolicyError> {
    match mode {
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        // A sleep blocks in the host, where the epoch deadline is not checked.
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Ok(())
        }
        "sleep-loop" => loop {
            std::thread::sleep(std::time::Duration::from_millis(10));
        },
        "trap" => panic!("probe policy panics on purpose"),
        "exit" => {
            eprintln!("probe policy gives up on purpose");
            std::process::exit(3)
        }
        "error" => Err(PolicyError::Internal(
            "probe policy fails on purpose".to_string(),
        )),
        // Guest text meant to flood the agent's log and forge lines in it.
        "error-flood" => Err(PolicyError::Internal(forged_lines())),
        "settings-flood" => Err(PolicyError::InvalidSettings(
            vfpool::policy::types::SettingsProblem {
                field: forged_lines(),
                message: forged_lines(),
            },
        )),
        "panic-flood" => panic!("{}", forged_lines()),
        "log-flood" => {
            // One buffer for every line: the bump allocator never frees, and 10,000 fresh lines
            // of 10 KB would run into the memory cap before the host's log limit is tested.
            let xs = "x".repeat(10_000);
            let mut line = String::with_capacity(xs.len() + 16);
            for i in 0..10_000 {
                line.clear();
                line.push_str("line ");
                line.push_str(&i.to_string());
                line.push(' ');
                line.push_str(&xs);
                log(Level::Info, &line);
            }
            Ok(())
        }
        "print-flood" => {
            // Debugging prints left in, a line per device on a big node: 1 MiB to stdout and as
            // much to stderr.
            for i in 0..1_000 {
                println!("line {i} {}", "x".repeat(1_000));
                eprintln!("line {i} {}", "y".repeat(1_000));
            }
            eprintln!("probe wrote to stdout and stderr");
            Ok(())
        }
        "print-then-trap" => {
            for i in 0..1_000 {
                eprintln!("line {i} {}", "y".repeat(1_000));
            }
            panic!("probe policy panics after much output")
        }
        _ => Ok(()),
    }
}

/// 1 MiB of text whose lines look like the agent's own log lines.
fn forged_lines() -> String {
    "probe\n2030-01-01T00:00:00Z ERROR vfpool_agent: forged line\r\n".repeat(1 << 14)
}

fn member(id: &str) -> PoolDevice {
    PoolDevice {
        id: id.to_string(),
        rdma: false,
        vhost_net: false,
        vdpa_type: None,
        additional_info: None,
    }
}

fn pool(name: &str, ids: Vec<PoolDevice>) -> Pool {
    Pool {
        resource_name: name.to_string(),
        device_type: DeviceType::NetDevice,
        exclude_topology: false,
        devices: ids,
    }
}

impl selector::Guest for Probe {
    fn validate_settings(settings: Settings) -> Result<(), PolicyError> {
        if mode(&settings) == "validate-warning" {
            log(Level::Warn, "probe validation warning");
        }
        misbehave(mode(&settings))
    }

    fn select(settings: Settings, inventory: Inventory) -> Result<Vec<Pool>, PolicyError> {
        let mode = mode(&settings);
        misbehave(mode)?;
        log(
            Level::Info,
            &format!("probe selecting from {} devices", inventory.devices.len()),
        );
        let vfs: Vec<PoolDevice> = inventory
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Vf)
            .map(|d| member(&d.id))
            .collect();
        Ok(match mode {
            "huge-result" => (0..200_000)
                .map(|i| pool(&format!("example.com/p{i}"), Vec::new()))
                .collect(),
            // 24 MiB in one string: far under the memory cap, over what the host accepts back.
            "bloated-result" => {
                let mut device = member("0000:ff:1f.7");
                device.additional_info = Some(vec![("blob".to_string(), "x".repeat(24 << 20))]);
                vec![pool("example.com/probe", vec![device])]
            }
            "unknown-device" | "validate-warning" => {
                vec![pool("example.com/probe", vec![member("0000:ff:1f.7")])]
            }
            "duplicate-device" => {
                let first = vfs.first().cloned().into_iter().collect::<Vec<_>>();
                vec![
                    pool("example.com/a", first.clone()),
                    pool("example.com/b", first),
                ]
            }
            "bad-name" => vec![pool("Example.com/probe pool", vfs)],
            "echo" => {
                let echo = |aux: bool| {
                    inventory
                        .devices
                        .iter()
                        .filter(|d| (d.kind == DeviceKind::Aux) == aux)
                        .map(|d| PoolDevice {
                            additional_info: Some(vec![("record".to_string(), format!("{d:?}"))]),
                            ..member(&d.id)
                        })
                        .collect()
                };
                let mut aux = pool("example.com/echo-aux", echo(true));
                aux.device_type = DeviceType::AuxNetDevice;
                vec![pool("example.com/echo", echo(false)), aux]
            }
            _ => vec![pool("example.com/probe", vfs)],
        })
    }
}

impl allocator::Guest for Probe {
    fn validate_settings(settings: Settings) -> Result<(), PolicyError> {
        misbehave(mode(&settings))
    }

    fn prefer(settings: Settings, request: AllocationRequest) -> Result<Vec<String>, PolicyError> {
        let mode = mode(&settings);
        misbehave(mode)?;
        if mode == "echo" {
            // Each candidate as it arrived, a log line each, so the host can check its lowering.
            for candidate in &request.available {
                log(Level::Info, &format!("{candidate:?}"));
            }
        }
        let mut answer = request.must_include.clone();
        for device in &request.available {
            if answer.len() >= request.size as usize {
                break;
            }
            if !answer.contains(&device.id) {
                answer.push(device.id.clone());
            }
        }
        if mode == "wrong-size" {
            answer.pop();
        }
        if mode == "foreign-id"
            && let Some(first) = answer.first_mut()
        {
            *first = forged_lines();
        }
        Ok(answer)
    }
}

export!(Probe);
