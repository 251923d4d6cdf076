//! `cargo xtask fuzz`: build the fuzz targets and run them one after another (docs/fuzzing.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::fuzz::{self, Budget, FuzzDirs};
use crate::workspace::Workspace;

/// Fuzz the decoders that take guest or operator input (libFuzzer, nightly toolchain).
#[derive(clap::Args)]
pub struct Args {
    /// One target (trap, psci, pl011, pl061, vgic, vits, vpci, msix, nvme, control, plan,
    /// inventory); all of them when absent.
    pub target: Option<String>,
    /// Seconds each target runs (default 60 unless --runs is given).
    #[arg(long)]
    pub time: Option<u64>,
    /// Executions each target runs (e.g. 10000000); with --time, whichever ends first.
    #[arg(long)]
    pub runs: Option<u64>,
    /// Replay this input through TARGET (reproduces a crash) instead of fuzzing.
    #[arg(long, requires = "target")]
    pub reproduce: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let targets = fuzz::select(args.target.as_deref())?;
    fuzz::ensure_tools()?;
    let ws = Workspace::locate()?;
    let dirs = FuzzDirs::new(&ws);
    fuzz::build(&ws, &dirs)?;
    if let Some(input) = &args.reproduce {
        let ok = fuzz::reproduce(&dirs, targets[0], input)?;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let budget = Budget {
        seconds: args.time.or(args.runs.is_none().then_some(60)),
        runs: args.runs,
    };
    let crashed = fuzz::run_targets(&ws, &dirs, &targets, budget)?;
    if crashed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("fuzz: crashes in {}", crashed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
