//! `cargo xtask bench`: the deterministic benchmarks (instruction counts under QEMU icount).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::workspace::Workspace;

/// Measure the microvisor against the probe booted natively, in instructions (QEMU
/// `-icount shift=0`): image size, boot cost, hypercall, MMIO and interrupt round trips, a
/// workload, Linux exit rates. Writes target/bench/results.json.
#[derive(clap::Args)]
pub struct Args {
    /// Show the change from an older results.json.
    #[arg(long, value_name = "OLD.json")]
    pub compare: Option<PathBuf>,
    /// Write docs/bench.svg (boot cost against slice count, native/slice ratios).
    #[arg(long)]
    pub plot: bool,
    /// Skip the Linux exit-rate runs.
    #[arg(long)]
    pub no_linux: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    crate::setup::ensure()?;
    let ws = Workspace::locate()?;
    let artifacts = crate::build::build_all(&ws, false)?;
    let results = crate::bench::run(
        &ws,
        &artifacts,
        &crate::bench::Plan {
            skip_linux: args.no_linux,
        },
    )?;
    let text = crate::bench::report(&ws, &results, args.compare.as_deref(), args.plot)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
