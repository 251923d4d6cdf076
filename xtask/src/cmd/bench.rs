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
    /// Also run the network benchmark (two Linux slices with assigned virtio-net NICs against
    /// the same Linux natively; wall clock, several minutes). Runs with --no-linux too.
    #[arg(long)]
    pub net: bool,
    /// Run only the network benchmark.
    #[arg(long)]
    pub net_only: bool,
    /// Run only the NVMe benchmark (a Linux slice against the same Linux natively).
    #[arg(long, conflicts_with_all = ["net_only", "no_linux"])]
    pub nvme_only: bool,
    /// Run only the Linux rows (exit rates idle and busy, boot to the report).
    #[arg(long, conflicts_with_all = ["net_only", "nvme_only", "no_linux"])]
    pub linux_only: bool,
    /// Run only the gicv4 node's rows: exits per NIC interrupt and the hypercall, MMIO,
    /// timer and IPI round trips in a probe slice owning the node's NIC (GICv4.0 direct
    /// injection on), with the same runs on a GICv3 for comparison.
    #[arg(long, conflicts_with_all = ["net_only", "nvme_only", "linux_only"])]
    pub gicv4_only: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    crate::setup::ensure()?;
    let ws = Workspace::locate()?;
    // The old results are read before anything runs: a bad path fails at once, and
    // `--compare target/bench/results.json` compares with the last run, not with this one
    // (which overwrites that file; found in review).
    let compare = args
        .compare
        .as_deref()
        .map(crate::bench::read_results)
        .transpose()?;
    let artifacts = crate::build::build_all(&ws, false)?;
    let results = crate::bench::run(
        &ws,
        &artifacts,
        &crate::bench::Plan {
            skip_linux: args.no_linux,
            net: args.net,
            net_only: args.net_only,
            nvme_only: args.nvme_only,
            linux_only: args.linux_only,
            gicv4_only: args.gicv4_only,
        },
    )?;
    let text = crate::bench::report(&ws, &results, compare.as_ref(), args.plot)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
