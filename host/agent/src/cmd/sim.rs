//! `vfpool sim`: writes a simulated node.

use anyhow::Context;
use vfpool_sysfs::sim::{self, Fixture};
use vfpool_sysfs::{DeviceKind, SysfsRoot};

use crate::cli::SimArgs;
use crate::exit::{CmdResult, Code, WithCode};
use crate::output::Output;

pub fn run(args: &SimArgs) -> CmdResult {
    if args.print {
        let text = sim::fixture_text(&args.fixture)
            .with_context(|| {
                format!(
                    "{:?} is not a shipped fixture; the shipped ones are {}",
                    args.fixture,
                    sim::FIXTURE_NAMES.join(", ")
                )
            })
            .code(Code::BadInput)?;
        return Output::stdout().print(text);
    }
    let Some(out) = &args.out else {
        return Err(anyhow::anyhow!("--out DIR is required")).code(Code::BadInput);
    };
    let fixture = Fixture::load(&args.fixture).code(Code::BadInput)?;
    sim::write_tree(&fixture, out).code(Code::BadInput)?;
    // Counted as `discover` sees the tree, not from the fixture: a fixture also holds PCI functions
    // that discovery ignores (dell-cx5's NVMe drive), and the summary must match what the
    // suggested `discover` then lists.
    let inventory = vfpool_sysfs::discover(&SysfsRoot::new(out)).code(Code::Failure)?;
    let count = |kind| inventory.devices.iter().filter(|d| d.kind == kind).count();
    Output::stdout().print(&format!(
        "simulated node {:?} written to {}: {}\ntry: vfpool discover --sysfs-root {}\n",
        fixture.description,
        out.display(),
        counts(
            count(DeviceKind::Pf),
            count(DeviceKind::Vf),
            count(DeviceKind::Aux)
        ),
        out.display()
    ))
}

/// "4 physical functions, 24 VFs, 0 sub-functions", each in the singular where it is one.
fn counts(physical_functions: usize, vfs: usize, sub_functions: usize) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{}, {}, {}",
        plural(
            physical_functions,
            "physical function",
            "physical functions"
        ),
        plural(vfs, "VF", "VFs"),
        plural(sub_functions, "sub-function", "sub-functions")
    )
}

#[cfg(test)]
mod tests {
    use super::counts;

    /// The summary said "1 physical functions".
    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(counts(1, 1, 1), "1 physical function, 1 VF, 1 sub-function");
        assert_eq!(
            counts(4, 24, 0),
            "4 physical functions, 24 VFs, 0 sub-functions"
        );
    }
}
