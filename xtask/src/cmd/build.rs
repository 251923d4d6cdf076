//! `cargo xtask build`: the hypervisor and the probe guest.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::flat;
use crate::workspace::Workspace;

/// Build the hypervisor (softfloat, PIE) and the probe guest; print the artifacts.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    crate::setup::ensure_rust_targets()?;
    let ws = Workspace::locate()?;
    let artifacts = crate::build::build_all(&ws, false)?;
    let hv_elf = std::fs::read(&artifacts.hypervisor)
        .with_context(|| format!("reading {}", artifacts.hypervisor.display()))?;
    let hv_flat = flat::hypervisor_flat(&hv_elf)?;
    let probe_elf = std::fs::read(&artifacts.probe)
        .with_context(|| format!("reading {}", artifacts.probe.display()))?;
    let probe_flat = flat::elf_to_flat(&probe_elf)?;
    println!(
        "hypervisor  {}  ELF {} bytes, flat image {} bytes",
        ws.display(&artifacts.hypervisor),
        hv_elf.len(),
        hv_flat.len()
    );
    println!(
        "probe       {}  ELF {} bytes, flat image {} bytes at {:#x}",
        ws.display(&artifacts.probe),
        probe_elf.len(),
        probe_flat.bytes.len(),
        probe_flat.base
    );
    Ok(ExitCode::SUCCESS)
}
