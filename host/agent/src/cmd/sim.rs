//! `vfpool sim`: writes a simulated node.

use anyhow::Context;
use vfpool_sysfs::sim::{self, Fixture};

use crate::cli::SimArgs;
use crate::exit::{CmdResult, Code, WithCode};

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
        print!("{text}");
        return Ok(());
    }
    let Some(out) = &args.out else {
        return Err(anyhow::anyhow!("--out DIR is required")).code(Code::BadInput);
    };
    let fixture = Fixture::load(&args.fixture).code(Code::BadInput)?;
    let summary = sim::write_tree(&fixture, out).code(Code::BadInput)?;
    println!(
        "simulated node {:?} written to {}: {} physical functions, {} VFs, {} sub-functions",
        fixture.description,
        out.display(),
        summary.physical_functions,
        summary.virtual_functions,
        summary.sub_functions
    );
    println!("try: vfpool discover --sysfs-root {}", out.display());
    Ok(())
}
