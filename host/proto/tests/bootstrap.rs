//! Regenerates the kubelet API bindings from `proto/` into a temporary directory and fails if they
//! differ from the files checked in under `src/gen/` (the linkerd bootstrap-test pattern). The
//! generator is pure Rust (protox parses the protos, tonic-prost-build writes the code), so neither
//! this test nor the build needs `protoc`.
//!
//! After changing a `.proto` file, run with `VFPOOL_PROTO_BLESS=1` to rewrite `src/gen/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

const PROTOS: &[&str] = &[
    "deviceplugin/v1beta1/api.proto",
    "pluginregistration/v1/api.proto",
    "podresources/v1/api.proto",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn generate(out_dir: &Path) -> anyhow::Result<()> {
    let proto_dir = repo_root().join("proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_dir.join(p)).collect();
    let fds = protox::compile(&files, [&proto_dir]).context("parsing the protos")?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_fds(fds)
        .context("generating Rust code")?;
    Ok(())
}

#[test]
fn generated_code_is_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path()).unwrap();
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gen");
    let bless = std::env::var_os("VFPOOL_PROTO_BLESS").is_some();

    let mut generated: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    generated.sort();
    assert_eq!(
        generated,
        ["pluginregistration.rs", "v1.rs", "v1beta1.rs"],
        "the protos now generate a different set of files; update src/lib.rs and this test"
    );

    let mut stale = Vec::new();
    for name in &generated {
        let fresh = fs::read_to_string(tmp.path().join(name)).unwrap();
        let path = checked_in.join(name);
        let current = fs::read_to_string(&path).unwrap_or_default();
        if fresh != current {
            if bless {
                fs::write(&path, &fresh).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated code is out of date with proto/: {stale:?}; rerun with VFPOOL_PROTO_BLESS=1 and commit src/gen"
    );
}
