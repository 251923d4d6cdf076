//! `cargo xtask qemu`: boot a given image on a node, interactively.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, ensure};

use crate::node::Node;
use crate::qemu::{Boot, Console, Firmware};
use crate::workspace::{Workspace, render};

/// Boot an image file on a QEMU node with the serial console on this terminal (Ctrl-A x exits).
#[derive(clap::Args)]
pub struct Args {
    /// Image file written by `cargo xtask image`.
    #[arg(long)]
    pub image: PathBuf,
    /// Node profile: a name in qemu/ (e.g. `default`, `small`) or a path to a profile file.
    #[arg(long, default_value = "default")]
    pub node: String,
    /// Boot through Debian's U-Boot (`-bios u-boot.bin`, then `booti`) instead of `-kernel`.
    #[arg(long)]
    pub uboot: bool,
    /// Hand this device tree to the image (`-dtb`) instead of QEMU's own, as firmware would.
    /// `qemu-system-aarch64 -M virt,virtualization=on,gic-version=3,dumpdtb=virt.dtb -cpu max
    /// -smp N -m M` writes QEMU's own tree for a start.
    #[arg(long)]
    pub dtb: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    crate::setup::ensure_qemu()?;
    let ws = Workspace::locate()?;
    ensure!(
        args.image.is_file(),
        "image {} not found",
        args.image.display()
    );
    let node = Node::load(&ws, &args.node)?;
    if let Some(dtb) = &args.dtb {
        ensure!(dtb.is_file(), "device tree {} not found", dtb.display());
    }
    boot_interactive(
        &ws,
        &node,
        &args.image,
        args.uboot,
        args.dtb.as_deref(),
        None,
    )
}

/// Boots `image` on `node` with QEMU attached to this terminal; returns QEMU's exit status.
/// Before it starts, prints how to reach the node's NICs: per slice of `plan` (its NICs, static
/// addresses and host URLs) when the plan is known, else per host NIC.
pub fn boot_interactive(
    ws: &Workspace,
    node: &Node,
    image: &Path,
    uboot: bool,
    dtb: Option<&Path>,
    plan: Option<&microvisor_plan::Plan>,
) -> Result<ExitCode> {
    let boot = Boot {
        node,
        image,
        firmware: if uboot {
            Firmware::UBoot
        } else {
            Firmware::Direct
        },
        virtualization: true,
        console: Console::Interactive,
        disk_prefix: ws.target_dir.join("qemu").join(&node.name),
        kernel_cmdline: None,
        dtb,
    };
    // The disk first (its first run downloads and builds for minutes), then the launch that
    // picks the forwarded ports, so that nothing else takes them meanwhile.
    if let (Some(plan), Some(disk)) = (plan, node.disks.first()) {
        // The disk files exist from here on (the launch would create them).
        crate::qemu::disk_args(&boot.disk_prefix, &node.disks)?;
        for line in install_for_firmware(ws, plan, &boot.disk_prefix, disk.size)? {
            eprintln!("{line}");
        }
    }
    let launch = boot.launch()?;
    let mut cmd = launch.command;
    eprintln!("node {}: {}", node.name, node.description);
    eprintln!("{}", render(&cmd));
    match plan {
        Some(plan) => {
            for slice in crate::network::slice_networks(plan, node, &launch.forwards)? {
                eprintln!("{slice}");
            }
            if let Some(manager) = plan.manager() {
                eprintln!("{}", manager_hint(&plan.slices[manager].name, manager));
            }
            if let Some(url) = crate::network::redfish_url(plan, node, &launch.forwards)? {
                eprintln!(
                    "Redfish: {url} (self-signed certificate; user admin, password in the \
                     manager's \"REDFISH ready\" console line unless the plan gives one; \
                     docs/redfish.md)"
                );
            }
        }
        None => {
            for forward in &launch.forwards {
                eprintln!(
                    "host NIC {} ({}): {} reaches its port {}",
                    forward.address,
                    forward.mac,
                    forward.url(),
                    crate::node::GUEST_HTTP_PORT
                );
            }
        }
    }
    eprintln!("(Ctrl-A x exits QEMU, Ctrl-A h for help)");
    let status = cmd.status()?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Installs Debian on the blank shares of the plan's firmware slices in the node's first disk
/// ([`crate::disk_image::install_on_blank_shares`]); one line each.
fn install_for_firmware(
    ws: &Workspace,
    plan: &microvisor_plan::Plan,
    disk_prefix: &Path,
    disk_size: u64,
) -> Result<Vec<crate::disk_image::ShareInstall>> {
    let firmware = microvisor_plan::ImageSource::BuiltIn(microvisor_plan::BuiltIn::Firmware);
    if !plan
        .slices
        .iter()
        .any(|s| s.kernel == firmware && s.nvme.is_some())
    {
        return Ok(Vec::new());
    }
    let guest = crate::linux::guest(ws, true)?;
    crate::disk_image::install_on_blank_shares(
        &guest,
        plan,
        &crate::qemu::disk_file(disk_prefix, 0),
        disk_size,
        &ws.target_dir.join("tmp").join("firmware-install"),
    )
}

/// How to reach the manager slice (plan index `index`) under `cargo xtask run`.
pub fn manager_hint(name: &str, index: usize) -> String {
    let focus = if index < 9 {
        format!("Ctrl-A Ctrl-A {} gives it the keyboard", index + 1)
    } else {
        "the console can focus slices 1-9 only".to_string()
    };
    format!("slice {name} is the manager: {focus}; its shell has microvisorctl (docs/control.md)")
}

#[cfg(test)]
mod manager_tests {
    #[test]
    fn the_hint_names_the_focus_keys() {
        assert_eq!(
            super::manager_hint("manager", 3),
            "slice manager is the manager: Ctrl-A Ctrl-A 4 gives it the keyboard; its shell has microvisorctl (docs/control.md)"
        );
    }
}
