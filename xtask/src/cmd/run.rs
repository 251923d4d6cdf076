//! `cargo xtask run`: set up, build, make the image and boot it interactively.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

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

pub fn run(args: Args) -> Result<ExitCode> {
    crate::setup::ensure()?;
    let ws = Workspace::locate()?;
    let node = Node::load(&ws, &args.node)?;
    let plan = match args.plan {
        Some(plan) => plan,
        None => node.default_plan()?.to_path_buf(),
    };
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
    super::qemu::boot_interactive(&ws, &node, &out, args.uboot, None)
}
