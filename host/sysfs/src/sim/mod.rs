//! Simulated nodes: kernel-shaped sysfs trees written from fixture files.
//!
//! The layout follows the kernel's: functions live under `devices/pci<dom>:<bus>/<root port>/<bdf>`
//! and are linked from `bus/pci/devices`; `driver` links point into `bus/pci/drivers/<name>`, VFs and
//! PFs are tied with `physfn`/`virtfnN`, netdevs are linked from `class/net`, IOMMU groups live under
//! `kernel/iommu_groups`, sub-functions under the PF and `bus/auxiliary/devices`. Every link is
//! relative, so a tree can be moved or copied.

mod fixture;
mod writer;

use std::io;
use std::path::PathBuf;

pub use fixture::{Fixture, FunctionSpec, LinkType, RdmaNaming, SfSpec, VdpaKind, VfSpec};
pub use writer::{Summary, write_tree};

/// The fixtures shipped with vfpool, by name.
pub const FIXTURE_NAMES: &[&str] = &[
    "dell-cx5",
    "intel-x710",
    "switchdev-sf",
    "accelerator",
    "demo",
    "large",
];

/// The TOML text of a shipped fixture.
pub fn fixture_text(name: &str) -> Option<&'static str> {
    Some(match name {
        "dell-cx5" => include_str!("../../fixtures/dell-cx5.toml"),
        "intel-x710" => include_str!("../../fixtures/intel-x710.toml"),
        "switchdev-sf" => include_str!("../../fixtures/switchdev-sf.toml"),
        "accelerator" => include_str!("../../fixtures/accelerator.toml"),
        "demo" => include_str!("../../fixtures/demo.toml"),
        "large" => include_str!("../../fixtures/large.toml"),
        _ => return None,
    })
}

/// Why a simulated node could not be described or written.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The fixture is neither a shipped name nor a readable file.
    #[error("{name:?} is neither a shipped fixture ({known}) nor a readable file: {source}")]
    FixtureUnreadable {
        /// What was asked for.
        name: String,
        /// The shipped fixture names.
        known: String,
        /// Why the file could not be read.
        #[source]
        source: io::Error,
    },
    /// The fixture names a file that cannot be a fixture: not a regular file (a FIFO or a device
    /// would block or never end), too large, or not UTF-8 text.
    #[error(
        "{name:?} is not a shipped fixture ({known}), and as a file it {problem}; pass a fixture name or a TOML file"
    )]
    FixtureNotText {
        /// What was asked for.
        name: String,
        /// The shipped fixture names.
        known: String,
        /// What is wrong with the file.
        problem: String,
    },
    /// The fixture is not valid TOML or has unknown or mistyped keys.
    #[error("fixture {origin}: {source}")]
    Parse {
        /// The fixture's name or path.
        origin: String,
        /// The parser's report, with the line and the key.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The fixture parses but describes an impossible node.
    #[error("fixture {origin}: {field}: {message}")]
    Invalid {
        /// The fixture's name or path.
        origin: String,
        /// The offending key (`function[2].vfs.count`).
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The output directory exists and is not empty; the simulator never writes over files.
    #[error("{0} is not empty: choose a new or empty directory for the simulated node")]
    OutputNotEmpty(PathBuf),
    /// A name in the fixture (netdev, driver, RDMA device, ...) contains `..` or is empty, so the
    /// path built from it would leave the output directory (or name it).
    #[error(
        "the fixture names {path:?} inside the simulated node, which would leave the output directory: names must not be empty or contain '..'"
    )]
    UnsafeName {
        /// The path, relative to the output directory, that the name produced.
        path: String,
    },
    /// Writing the tree failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file, directory or link being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}
