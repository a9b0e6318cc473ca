//! Builds the WebAssembly policies (`policies/`, its own cargo workspace) for `wasm32-wasip2` and
//! puts the components in `$OUT_DIR/wasm`, from where the crate embeds the defaults and the tests
//! load the test policies. Nothing is downloaded but crates; a fresh machine needs the target
//! (`make setup` runs `rustup target add wasm32-wasip2`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The components the crate and its tests use, by crate name.
const COMPONENTS: &[&str] = &[
    "upstream_selector",
    "packed_allocator",
    "spread_allocator",
    "probe",
    "wrong_exports",
    "mistyped_allocator",
    "lying_realloc",
    "rust_starter",
];

fn main() {
    if let Err(message) = run() {
        // A build script reports failure by exiting non-zero; the message is what the user sees.
        eprintln!("error: building the WebAssembly policies failed: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let repo = manifest_dir
        .parent()
        .and_then(Path::parent)
        .ok_or("host/policy has no grandparent directory")?
        .to_path_buf();
    let policies = repo.join("policies");
    let wit = repo.join("wit");
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let target_dir = out_dir.join("policies-target");

    watch(&wit)?;
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", policies.join(file).display());
    }
    for member in [
        "bump-alloc",
        "upstream-selector",
        "packed-allocator",
        "spread-allocator",
        "test-policies",
        "examples/rust-starter",
    ] {
        watch_sources(&policies.join(member))?;
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .current_dir(&policies)
        .args([
            "build",
            "--locked",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's settings are for the host, not for the policies: no clippy driver, no
    // host RUSTFLAGS, no outer target directory.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build --release --target wasm32-wasip2` in {} exited with {status}; if the target is missing run `make setup` (rustup target add wasm32-wasip2)",
            policies.display()
        ));
    }

    let built = target_dir.join("wasm32-wasip2").join("release");
    let wasm_dir = out_dir.join("wasm");
    fs::create_dir_all(&wasm_dir).map_err(|e| format!("{}: {e}", wasm_dir.display()))?;
    for name in COMPONENTS {
        let from = built.join(format!("{name}.wasm"));
        let to = wasm_dir.join(format!("{name}.wasm"));
        fs::copy(&from, &to).map_err(|e| format!("copying {}: {e}", from.display()))?;
    }
    println!(
        "cargo:rustc-env=VFPOOL_POLICY_WASM_DIR={}",
        wasm_dir.display()
    );
    Ok(())
}

/// Reruns the build when any file under `dir` changes (every file, so an edit deep inside counts).
fn watch(dir: &Path) -> Result<(), String> {
    println!("cargo:rerun-if-changed={}", dir.display());
    Ok(())
}

/// Watches a policy crate's sources and manifests, but not a `target/` folder someone created by
/// building there by hand.
fn watch_sources(dir: &Path) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() {
            watch_sources(&path)?;
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Ok(())
}
