//! `cargo xtask run`: set up, build, make the image and boot it interactively.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use microvisor_plan::{Plan, place_devices};

use crate::image::ImageOptions;
use crate::node::Node;
use crate::workspace::Workspace;

/// Build everything and boot a node interactively (serial on this terminal; Ctrl-A x exits).
#[derive(clap::Args)]
pub struct Args {
    /// Node profile: a name in qemu/ or a path to a profile file.
    #[arg(long, default_value = "default")]
    pub node: String,
    /// Plan to boot (default: the node's default plan).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Boot through Debian's U-Boot instead of QEMU's `-kernel` loader.
    #[arg(long)]
    pub uboot: bool,
    /// Set the image header's "anywhere" flag (U-Boot then runs it in place at 0x4040_0000).
    #[arg(long)]
    pub anywhere: bool,
}

/// Refuses, before anything is built or booted, a plan whose `[[slice.device]]` requests the
/// node cannot serve, with the line the hypervisor would print at boot; returns the plan.
pub fn check_devices(plan: &Path, node: &Node) -> Result<Plan> {
    let text = std::fs::read_to_string(plan)
        .map_err(|e| anyhow!("plan {}: cannot read it: {e}", plan.display()))?;
    let parsed = Plan::from_toml(&text).map_err(|e| anyhow!("plan {}: {e}", plan.display()))?;
    place_devices(&parsed, &node.pci_functions())
        .map_err(|e| anyhow!("plan {}: {e}", plan.display()))?;
    Ok(parsed)
}

pub fn run(args: Args) -> Result<ExitCode> {
    crate::setup::ensure()?;
    let ws = Workspace::locate()?;
    let node = Node::load(&ws, &args.node)?;
    let plan = match args.plan {
        Some(plan) => plan,
        None => node.default_plan()?.to_path_buf(),
    };
    let parsed = check_devices(&plan, &node)?;
    let artifacts = crate::build::build_all(&ws, false)?;
    let out = ws
        .target_dir
        .join("images")
        .join(format!("{}.img", node.name));
    let summary = crate::image::write_image(
        &artifacts,
        &ImageOptions {
            plan: &plan,
            out: &out,
            anywhere: args.anywhere,
        },
    )?;
    eprint!("{summary}");
    super::qemu::boot_interactive(&ws, &node, &out, args.uboot, None, Some(&parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_checked_before_anything_is_built() {
        let dir = std::env::temp_dir().join(format!("xtask-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = dir.join("plan.toml");
        let slice =
            "[[slice]]\nname = \"web\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"probe\"\n";
        std::fs::write(
            &plan,
            format!("{slice}[[slice.device]]\npci = \"00:03.0\"\n"),
        )
        .unwrap();
        let node = Node::inline("n", 2, 512 << 20);
        assert_eq!(
            check_devices(&plan, &node).unwrap_err().to_string(),
            format!(
                "plan {}: slice \"web\": device 00:03.0: the node has no SMMUv3, its DMA could \
                 not be confined",
                plan.display()
            )
        );
        std::fs::write(&plan, slice).unwrap();
        assert!(check_devices(&plan, &node).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
