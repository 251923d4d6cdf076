//! `cargo xtask linux`: fetch and build the built-in Linux guest, show it, boot it natively.

use std::process::ExitCode;

use anyhow::Result;
use microvisor_plan::HumanSize;

use crate::linux::{self, DEFAULT_CMDLINE};
use crate::workspace::Workspace;

/// Fetch Debian's arm64 cloud kernel and busybox (apt, cached in target/guests/), build the
/// initramfs, print the files; with --boot, boot them on QEMU without the microvisor.
#[derive(clap::Args)]
pub struct Args {
    /// Boot the guest on QEMU `virt` (GICv3) without the microvisor (Ctrl-A x exits).
    #[arg(long)]
    pub boot: bool,
    /// CPUs of the native boot.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// RAM of the native boot, in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory: u64,
    /// Appended to the kernel command line, e.g. "microvisor.heartbeat=500 microvisor.load=1".
    #[arg(long, default_value = "")]
    pub append: String,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let ws = Workspace::locate()?;
    let guest = linux::guest(&ws, false)?;
    let package = |i: usize| {
        guest
            .packages
            .get(i)
            .map(|(name, version)| format!("{name} {version}"))
            .unwrap_or_default()
    };
    println!(
        "kernel     {}  {} ({})",
        ws.display(&guest.kernel_file),
        HumanSize(guest.kernel.len() as u64),
        package(0)
    );
    println!(
        "initramfs  {}  {} (busybox from {}, /init from xtask/src/linux/init.sh)",
        ws.display(&guest.initramfs_file),
        HumanSize(guest.initramfs.len() as u64),
        package(1)
    );
    println!("release    {}", guest.release);
    println!("cmdline    {DEFAULT_CMDLINE}");
    let mut cmd = linux::native_qemu_command(&guest, args.cpus, args.memory, &args.append);
    if !args.boot {
        println!("boot it without the microvisor (Ctrl-A x exits QEMU), or use --boot:");
        println!("  {}", shell_words(&cmd));
        return Ok(ExitCode::SUCCESS);
    }
    crate::setup::ensure_qemu()?;
    eprintln!("{}", shell_words(&cmd));
    eprintln!("(Ctrl-A x exits QEMU)");
    let status = cmd.status()?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The command as a shell would need it typed: arguments with other characters than
/// `[A-Za-z0-9_./,:=+@%-]` in single quotes.
pub fn shell_words(cmd: &std::process::Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| {
            let arg = arg.to_string_lossy();
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./,:=+@%-".contains(c));
            if plain {
                arg.into_owned()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_what_needs_it() {
        let mut cmd = std::process::Command::new("qemu-system-aarch64");
        cmd.args(["-m", "512M", "-append", "console=ttyAMA0 a=1", "it's", ""]);
        assert_eq!(
            shell_words(&cmd),
            r"qemu-system-aarch64 -m 512M -append 'console=ttyAMA0 a=1' 'it'\''s' ''"
        );
    }
}
