//! Building the target artifacts: the EL2 hypervisor (`microvisor-boot`, softfloat, PIE) and
//! the bare-metal probe guest (`microvisor-probe`), and the Linux guest's tools
//! (`microvisor-iobench`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::progress::Step;
use crate::workspace::{Workspace, cargo, render};

/// Target of the hypervisor: no FP/SIMD, since cores never switch context.
pub const HYPERVISOR_TARGET: &str = "aarch64-unknown-none-softfloat";
/// Target of bare-metal guests.
pub const GUEST_TARGET: &str = "aarch64-unknown-none";
/// Target of the tools put into the Linux guest's initramfs (static musl binaries).
pub const LINUX_TOOLS_TARGET: &str = "aarch64-unknown-linux-musl";

/// The built ELF files.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// `target/aarch64-unknown-none-softfloat/release/microvisor` (PIE, linked at 0).
    pub hypervisor: PathBuf,
    /// `target/aarch64-unknown-none/release/probe` (linked at 0x4000_0000).
    pub probe: PathBuf,
}

/// Builds the hypervisor and the probe in release mode.
pub fn build_all(ws: &Workspace, quiet: bool) -> Result<Artifacts> {
    build_for(ws, true, quiet)
}

/// Builds the hypervisor, and the probe only if `with_probe` (a plan that does not use it
/// should not wait for it, nor fail on it).
pub fn build_for(ws: &Workspace, with_probe: bool, quiet: bool) -> Result<Artifacts> {
    let hypervisor = build_one(
        ws,
        "microvisor-boot",
        "microvisor",
        HYPERVISOR_TARGET,
        quiet,
    )?;
    let probe = if with_probe {
        build_one(ws, "microvisor-probe", "probe", GUEST_TARGET, quiet)?
    } else {
        ws.target_dir
            .join(GUEST_TARGET)
            .join("release")
            .join("probe")
    };
    Ok(Artifacts { hypervisor, probe })
}

/// `cargo build -p <package> --release --target <target>`; returns the binary's path.
pub(crate) fn build_one(
    ws: &Workspace,
    package: &str,
    bin: &str,
    target: &str,
    quiet: bool,
) -> Result<PathBuf> {
    let step = Step::start(format!("building {package} for {target}"), quiet);
    let mut cmd = cargo();
    cmd.args(["build", "--release", "-p", package, "--target", target])
        .current_dir(&ws.root);
    run_captured(&mut cmd)?;
    let path = ws.target_dir.join(target).join("release").join(bin);
    if !path.is_file() {
        bail!(
            "{} succeeded but {} is missing",
            render(&cmd),
            path.display()
        );
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    step.finish(&format!("{} ({size} bytes)", ws.display(&path)));
    Ok(path)
}

/// Runs a command with its output captured; on failure the error carries its stderr.
fn run_captured(cmd: &mut Command) -> Result<std::process::Output> {
    let output = cmd
        .output()
        .with_context(|| format!("starting {}", render(cmd)))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{} failed ({}):\n{}",
            render(cmd),
            output.status,
            stderr.trim_end()
        );
    }
    Ok(output)
}
