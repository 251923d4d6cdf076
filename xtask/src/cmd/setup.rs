//! `cargo xtask setup`: the installation checks alone.

use std::process::ExitCode;

use anyhow::Result;

/// Check (and where possible install) the Rust targets, QEMU >= 10 and U-Boot.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    let tools = crate::setup::ensure()?;
    println!("rust targets: {}", crate::setup::TARGETS.join(", "));
    println!("qemu: {}", tools.qemu_version);
    println!("u-boot: {}", tools.uboot.display());
    Ok(ExitCode::SUCCESS)
}
