//! Where things are: the workspace root, cargo's target directory, and how to run cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The workspace this xtask belongs to.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The directory holding the root `Cargo.toml`.
    pub root: PathBuf,
    /// Cargo's target directory (`target/` unless `CARGO_TARGET_DIR` or config says otherwise).
    pub target_dir: PathBuf,
}

#[derive(Deserialize)]
struct Metadata {
    workspace_root: PathBuf,
    target_directory: PathBuf,
}

impl Workspace {
    /// Finds the workspace with `cargo metadata` (run from this crate's workspace).
    pub fn locate() -> Result<Self> {
        let output = cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(source_root())
            .output()
            .context("running `cargo metadata`")?;
        if !output.status.success() {
            bail!(
                "`cargo metadata` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let meta: Metadata =
            serde_json::from_slice(&output.stdout).context("parsing `cargo metadata` output")?;
        Ok(Self {
            root: meta.workspace_root,
            target_dir: meta.target_directory,
        })
    }

    /// `qemu/` (node profiles and their default plans).
    pub fn qemu_dir(&self) -> PathBuf {
        self.root.join("qemu")
    }

    /// A path relative to the workspace root, for messages (absolute if outside it).
    pub fn display<'a>(&self, path: &'a Path) -> std::path::Display<'a> {
        path.strip_prefix(&self.root).unwrap_or(path).display()
    }
}

/// The workspace root as seen when this crate was compiled (`xtask/..`).
pub fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A `cargo` command: the cargo that runs us (`$CARGO`) if any, else `cargo` from `PATH`.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(program)
}

/// Runs a command to completion, failing with its rendering when it does not exit 0.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", render(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", render(cmd));
    }
    Ok(())
}

/// A shell-like rendering of a command, for messages.
pub fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}
