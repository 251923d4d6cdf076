//! First-run set-up checks: the Rust targets, QEMU >= 10 and Debian's U-Boot for QEMU (and,
//! for the tests that need it, the device tree compiler).
//! Fast when everything is present; installs what is missing when it can (root on Debian),
//! otherwise stops with one line saying exactly what to run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::workspace::run_checked;

/// Targets the workspace builds for: bare metal (hypervisor, probe) and static Linux tools.
pub const TARGETS: [&str; 3] = [
    "aarch64-unknown-none",
    "aarch64-unknown-none-softfloat",
    "aarch64-unknown-linux-musl",
];
/// Oldest QEMU release whose `virt` machine behaves as `docs/` and the tests assume.
pub const MIN_QEMU_MAJOR: u32 = 10;
/// The QEMU binary used for every boot.
pub const QEMU: &str = "qemu-system-aarch64";
/// Debian's `u-boot-qemu` build for `-M virt` on arm64.
pub const UBOOT_BIN: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// The device tree compiler (Debian's `device-tree-compiler`), used by the tests that hand the
/// image a recompiled firmware device tree.
pub const DTC: &str = "dtc";

const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
const BACKPORTS_ENTRY: &str = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

/// Tools found (or installed) by [`ensure`].
#[derive(Clone, Debug)]
pub struct Tools {
    /// `qemu-system-aarch64 --version`, first line.
    pub qemu_version: String,
    /// Path of U-Boot for the `--uboot` boot path.
    pub uboot: PathBuf,
}

/// Runs every check, installing what is missing when possible.
pub fn ensure() -> Result<Tools> {
    ensure_rust_targets()?;
    ensure_qemu()
}

/// Adds the bare-metal Rust targets when `rustup target list --installed` lacks them
/// (`RUSTUP_AUTO_INSTALL=0` means nothing installs them implicitly).
pub fn ensure_rust_targets() -> Result<()> {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(crate::workspace::source_root())
        .output()
        .context("running `rustup target list --installed` (is rustup installed?)")?;
    if !output.status.success() {
        bail!(
            "`rustup target list --installed` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let installed = String::from_utf8_lossy(&output.stdout);
    let missing = missing_targets(&installed);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: adding Rust targets {}", missing.join(" "));
    run_checked(
        Command::new("rustup")
            .args(["target", "add"])
            .args(&missing)
            .current_dir(crate::workspace::source_root()),
    )
}

/// The targets of [`TARGETS`] absent from `rustup target list --installed` output.
pub fn missing_targets(installed: &str) -> Vec<&'static str> {
    TARGETS
        .into_iter()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect()
}

/// Makes sure QEMU >= 10 and U-Boot are there.
pub fn ensure_qemu() -> Result<Tools> {
    let mut version = qemu_version();
    let uboot_present = Path::new(UBOOT_BIN).is_file();
    let qemu_ok = version
        .as_ref()
        .is_some_and(|v| qemu_major(v) >= Some(MIN_QEMU_MAJOR));
    if !qemu_ok || !uboot_present {
        install_qemu(!qemu_ok, !uboot_present)?;
        version = qemu_version();
    }
    let qemu_version = version.context("qemu-system-aarch64 still missing after installation")?;
    if qemu_major(&qemu_version) < Some(MIN_QEMU_MAJOR) {
        bail!(
            "{qemu_version} is too old after installation: QEMU {MIN_QEMU_MAJOR} or later is needed"
        );
    }
    if !Path::new(UBOOT_BIN).is_file() {
        bail!("{UBOOT_BIN} still missing after installing u-boot-qemu");
    }
    Ok(Tools {
        qemu_version,
        uboot: UBOOT_BIN.into(),
    })
}

/// First line of `qemu-system-aarch64 --version`, if it runs.
fn qemu_version() -> Option<String> {
    let output = Command::new(QEMU).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    output
        .status
        .success()
        .then(|| text.lines().next().unwrap_or_default().trim().to_string())
}

/// Major version from `QEMU emulator version 10.0.2 (Debian ...)`.
pub fn qemu_major(version_line: &str) -> Option<u32> {
    let rest = version_line.split("version").nth(1)?.trim_start();
    rest.split(['.', ' ']).next()?.parse().ok()
}

/// Installs QEMU from bookworm-backports and/or U-Boot, or explains in one line how to.
fn install_qemu(need_qemu: bool, need_uboot: bool) -> Result<()> {
    let bookworm = debian_codename().as_deref() == Some("bookworm");
    let mut steps: Vec<String> = Vec::new();
    if need_qemu && bookworm && !Path::new(BACKPORTS_SOURCES).exists() {
        steps.push(format!(
            "printf '{}' > {BACKPORTS_SOURCES}",
            BACKPORTS_ENTRY.replace('\n', "\\n")
        ));
    }
    steps.push("apt-get update".into());
    if need_qemu {
        steps.push(if bookworm {
            "apt-get install -y -t bookworm-backports qemu-system-arm".into()
        } else {
            "apt-get install -y qemu-system-arm".into()
        });
    }
    if need_uboot {
        steps.push("apt-get install -y u-boot-qemu".into());
    }
    let what = match (need_qemu, need_uboot) {
        (true, true) => format!("QEMU >= {MIN_QEMU_MAJOR} and U-Boot are missing"),
        (true, false) => format!("QEMU >= {MIN_QEMU_MAJOR} ({QEMU}) is missing"),
        _ => format!("U-Boot ({UBOOT_BIN}) is missing"),
    };
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "{what}: install QEMU {MIN_QEMU_MAJOR}+ with qemu-system-aarch64 and Debian's u-boot-qemu ({UBOOT_BIN})"
        );
    }
    if !running_as_root() {
        bail!("{what}: run `sudo sh -c \"{}\"`", steps.join(" && "));
    }
    eprintln!("setup: {what}; installing");
    if need_qemu && bookworm && !Path::new(BACKPORTS_SOURCES).exists() {
        std::fs::write(BACKPORTS_SOURCES, BACKPORTS_ENTRY)
            .with_context(|| format!("writing {BACKPORTS_SOURCES}"))?;
    }
    run_checked(Command::new("apt-get").arg("update"))?;
    if need_qemu {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y"]);
        if bookworm {
            cmd.args(["-t", "bookworm-backports"]);
        }
        run_checked(
            cmd.arg("qemu-system-arm")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if need_uboot {
        run_checked(
            Command::new("apt-get")
                .args(["install", "-y", "u-boot-qemu"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    Ok(())
}

/// Makes sure `dtc` runs: installs Debian's `device-tree-compiler` when running as root on
/// Debian, otherwise stops with one line saying what to run.
pub fn ensure_dtc() -> Result<()> {
    ensure_tool(
        DTC,
        "--version",
        "device-tree-compiler",
        "the device tree compiler",
    )
}

/// The C cross compiler for the Redfish service's TLS library (`ring` has C and assembly;
/// `.cargo/config.toml` names it for `aarch64-unknown-linux-musl`).
pub const CROSS_CC: &str = "aarch64-linux-gnu-gcc";

/// Makes sure [`CROSS_CC`] runs: installs Debian's `gcc-aarch64-linux-gnu` like [`ensure_dtc`].
pub fn ensure_cross_cc() -> Result<()> {
    ensure_tool(
        CROSS_CC,
        "--version",
        "gcc-aarch64-linux-gnu",
        "the aarch64 C cross compiler",
    )
}

/// Makes sure a C++ compiler runs (`c++`, as Debian's `g++` provides it): libFuzzer is built
/// from C++ sources for the fuzz step. Installs `g++` like [`ensure_dtc`].
pub fn ensure_cxx() -> Result<()> {
    let any = ["g++", "clang++"].iter().any(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if any {
        return Ok(());
    }
    ensure_tool("c++", "--version", "g++", "a C++ compiler, for libFuzzer")
}

/// Makes sure `tool arg` runs: installs Debian's `package` when running as root on Debian,
/// otherwise stops with one line saying what to run.
fn ensure_tool(tool: &str, arg: &str, package: &str, what: &str) -> Result<()> {
    let present = || {
        Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!("{tool} ({what}) is missing: install it");
    }
    if !running_as_root() {
        bail!("{tool} is missing: run `sudo apt-get install -y {package}`");
    }
    eprintln!("setup: {tool} is missing; installing {package}");
    let install = || {
        run_checked(
            Command::new("apt-get")
                .args(["install", "-y", package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        run_checked(Command::new("apt-get").arg("update"))?;
        install()?;
    }
    if !present() {
        bail!("{tool} still missing after installing {package}");
    }
    Ok(())
}

/// `VERSION_CODENAME` from `/etc/os-release`.
fn debian_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// Effective uid 0, read from `/proc/self/status` (no libc, no unsafe).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_major_version() {
        assert_eq!(
            qemu_major("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            Some(10)
        );
        assert_eq!(qemu_major("QEMU emulator version 7.2.15 (Debian)"), Some(7));
        assert_eq!(qemu_major("something else"), None);
    }

    #[test]
    fn finds_missing_targets() {
        let all = "aarch64-unknown-none\naarch64-unknown-none-softfloat\n\
                   aarch64-unknown-linux-musl\nx86_64-unknown-linux-gnu\n";
        assert!(missing_targets(all).is_empty());
        assert_eq!(
            missing_targets("aarch64-unknown-none\nx86_64-unknown-linux-gnu\n"),
            vec![
                "aarch64-unknown-none-softfloat",
                "aarch64-unknown-linux-musl"
            ]
        );
        assert_eq!(missing_targets(""), TARGETS.to_vec());
    }
}
