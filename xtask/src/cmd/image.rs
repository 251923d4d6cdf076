//! `cargo xtask image`: one bootable file from a plan.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::image::ImageOptions;
use crate::workspace::Workspace;

/// Write a bootable image: the hypervisor followed by the bundle (plan + guest images).
#[derive(clap::Args)]
pub struct Args {
    /// Plan file (TOML); relative image paths in it are relative to its directory.
    #[arg(long)]
    pub plan: PathBuf,
    /// Output file.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Set the header's "anywhere" flag (bit 3): U-Boot `booti` then runs it in place.
    #[arg(long)]
    pub anywhere: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    // Check the plan before building anything: plan errors come back in a moment.
    let text = std::fs::read_to_string(&args.plan)
        .map_err(|e| anyhow::anyhow!("plan {}: cannot read it: {e}", args.plan.display()))?;
    let plan = microvisor_plan::Plan::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("plan {}: {e}", args.plan.display()))?;
    crate::setup::ensure_rust_targets()?;
    let ws = Workspace::locate()?;
    let uses_probe = plan.slices.iter().any(|s| {
        s.kernel == microvisor_plan::ImageSource::BuiltIn(microvisor_plan::BuiltIn::Probe)
    });
    let artifacts = crate::build::build_for(&ws, uses_probe, false)?;
    let summary = crate::image::write_image(
        &artifacts,
        &ImageOptions {
            plan: &args.plan,
            out: &args.out,
            anywhere: args.anywhere,
        },
    )?;
    print!("{summary}");
    Ok(ExitCode::SUCCESS)
}
