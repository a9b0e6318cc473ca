//! `vfpool discover`: what the agent sees on this node.

use std::fmt::Write as _;

use serde::Serialize;
use vfpool_sysfs::{Device, DiscoveryError, SysfsRoot};

use crate::cli::DiscoverArgs;
use crate::exit::{CmdResult, Code, WithCode};
use crate::output::Output;

/// The JSON document `discover --json` prints: `{"devices":[...]}`, sorted by id.
#[derive(Serialize)]
struct DiscoverJson<'a> {
    devices: &'a [Device],
}

/// A discovery that could not run, as a command's failure: exit 2 when the `--sysfs-root` given
/// is wrong, 1 when the machine is (out of descriptors or memory).
pub(crate) fn discovery_failure(error: DiscoveryError) -> crate::exit::Failure {
    crate::exit::Failure {
        code: discovery_code(&error),
        error: error.into(),
    }
}

/// The exit code of a discovery that could not run (see [`discovery_failure`]).
pub(crate) fn discovery_code(error: &DiscoveryError) -> Code {
    match error {
        DiscoveryError::RootUnreadable { .. } | DiscoveryError::NoPciBus { .. } => Code::BadInput,
        _ => Code::Failure,
    }
}

pub fn run(args: &DiscoverArgs) -> CmdResult {
    let root = SysfsRoot::new(&args.sysfs.sysfs_root);
    let inventory = vfpool_sysfs::discover(&root).map_err(discovery_failure)?;
    let text = if args.json {
        let json = serde_json::to_string_pretty(&DiscoverJson {
            devices: &inventory.devices,
        })
        .code(Code::Failure)?;
        json + "\n"
    } else {
        table(&inventory.devices)
    };
    Output::stdout().print(&text)
}

/// A table for people: one line per device, `-` where the kernel says nothing.
fn table(devices: &[Device]) -> String {
    let header = [
        "ID",
        "KIND",
        "VENDOR:DEVICE",
        "DRIVER",
        "NUMA",
        "PF",
        "VF",
        "NETDEV",
        "LINK",
        "RDMA",
    ];
    let rows: Vec<[String; 10]> = devices
        .iter()
        .map(|d| {
            let opt = |v: Option<&str>| v.unwrap_or("-").to_owned();
            let num = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
            let vf = match (d.vf_index, d.sf_num) {
                (Some(i), _) => i.to_string(),
                (None, Some(sf)) => format!("sf{sf}"),
                (None, None) => "-".to_owned(),
            };
            let rdma = if d.rdma_devices.is_empty() {
                "-".to_owned()
            } else {
                d.rdma_devices.join(",")
            };
            [
                d.id.clone(),
                d.kind.as_str().to_owned(),
                format!(
                    "{}:{}",
                    d.vendor.as_deref().unwrap_or("????"),
                    d.device.as_deref().unwrap_or("????")
                ),
                opt(d.driver.as_deref()),
                num(d.numa_node),
                opt(d.pf_name.as_deref().or(d.pf_id.as_deref())),
                vf,
                opt(d.netdev.as_deref()),
                opt(d.link_type.as_deref()),
                rdma,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(widths) {
            let _ = write!(text, "{cell:<w$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    if devices.is_empty() {
        out.push_str("(no network or accelerator devices found)\n");
    }
    out
}
