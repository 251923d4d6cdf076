//! `cargo xtask soak`: the long soak of docs/soak.md, the ignored `soak_cycles_from_xtask`
//! scenario of `tests/tests/soak.rs` with its cycle count; it prints the soak's report.

use std::process::ExitCode;

use anyhow::Result;

use crate::workspace::{Workspace, cargo, render};

/// Environment variable the soak scenario reads its cycle count from.
pub const CYCLES_VAR: &str = "MICROVISOR_SOAK_CYCLES";
/// Environment variable that, when set, makes the soak run on a GICv4.0 node with the cycling
/// slice owning a NIC (direct injection).
pub const GICV4_VAR: &str = "MICROVISOR_SOAK_GICV4";

/// Restart one slice N times by PSCI SYSTEM_RESET while two others keep their heartbeats and
/// NVMe canary; fail if the hypervisor's heap grew or a victim stopped (docs/soak.md).
#[derive(clap::Args)]
pub struct Args {
    /// Restart cycles of the cycling slice.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub cycles: u64,
    /// Soak a GICv4.0 node instead, the cycling slice owning a NIC whose MSIs are its vLPIs
    /// (each run maps them through its virtual ITS, each restart discards them).
    #[arg(long)]
    pub gicv4: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    crate::setup::ensure()?;
    let ws = Workspace::locate()?;
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "microvisor-tests",
        "--test",
        "soak",
        "--",
        "--ignored",
        "--exact",
        "soak_cycles_from_xtask",
        "--nocapture",
    ])
    .env(CYCLES_VAR, args.cycles.to_string())
    .current_dir(&ws.root);
    let (node, log) = if args.gicv4 {
        cmd.env(GICV4_VAR, "1");
        ("GICv4.0 node", "soak_gicv4.log")
    } else {
        ("GICv3 node", "soak.log")
    };
    println!("== soak, {} cycles, {node}: {}", args.cycles, render(&cmd));
    let status = cmd.status()?;
    println!(
        "serial log: {}",
        ws.display(&ws.target_dir.join("test-logs").join(log))
    );
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
