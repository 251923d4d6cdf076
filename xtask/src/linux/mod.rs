//! The built-in `kernel = "linux"` guest: Debian's arm64 cloud kernel and `busybox-static`,
//! fetched with apt into `<target>/guests/debian/`, and a generated busybox initramfs whose
//! `/init` (`linux/init.sh`) reports what Linux sees.
//!
//! `debian` fetches and caches the packages with apt, `userspace` assembles the initramfs
//! (on `crate::initramfs`'s cpio writer), `init_tests` runs `/init` on the host against fake
//! `/proc` and `/sys` trees.
//!
//! Cache layout (under cargo's target directory):
//! ```text
//! guests/debian/debs/<package>_<version>_arm64.deb   packages as apt-get download names them
//! guests/debian/<package>_<version>_arm64/           dpkg-deb -x, pruned to what is used:
//!                       boot/vmlinuz-<release>       the kernel (and its config, System.map)
//!                       bin/busybox                  busybox
//! guests/linux/initramfs.cpio.gz                     the tenants' generated initramfs,
//!                                                    with iobench and powerkey
//!                                                    (guest-images/, built here)
//! guests/linux/manager-initramfs.cpio.gz             the manager's: that plus microvisorctl,
//!                                                    microvisor-redfish and the probe image
//! guests/debian/selected                             the pair last used (offline fallback)
//! guests/debian/tmp/w-<pid>/                         one run's downloads and extractions
//! ```
//! A package version is fetched and extracted once; later builds only ask apt which versions
//! are current (local, no network). When apt cannot resolve or download, the pair in
//! `selected` is used, with a note.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::workspace::Workspace;

mod debian;
#[cfg(test)]
mod init_tests;
mod userspace;

pub use debian::{
    BUSYBOX_PACKAGE, DEB_ARCH, DebFile, Fetched, KERNEL_META_PACKAGE, NET_MODULES, SUITE_ENV,
    fetch, fetch_extracted, net_modules, parse_depends, parse_print_uris,
};
pub use userspace::{
    Flavour, GROUP, INIT_SCRIPT, INITTAB, MODULES_DIR, ManagerTools, Module, PASSWD, PROBE_IMAGE,
    Tools, UDHCPC_SCRIPT, initramfs, module_path,
};

/// Kernel command line of the built-in Linux guest; the plan's `cmdline` is appended.
///
/// `loglevel=4` keeps errors and the first few `earlycon` lines but drops the ~250 info lines
/// of a full boot log: natively under TCG, `PROBE PASS` comes after ~3.9 s instead of 5-7 s,
/// and in a slice every console byte is a trapped write. Append `loglevel=8` for everything.
pub const DEFAULT_CMDLINE: &str = "console=ttyAMA0 earlycon=pl011,0x9000000 loglevel=4 panic=-1";

/// The built-in Linux guest, ready for the bundle.
#[derive(Clone, Debug)]
pub struct LinuxGuest {
    /// The kernel `Image` (Debian's `vmlinuz` is an uncompressed arm64 Image).
    pub kernel: Vec<u8>,
    /// The generated initramfs of tenants (gzipped newc cpio).
    pub initramfs: Vec<u8>,
    /// The manager's: the tenants' with `microvisorctl`, the Redfish service and the probe.
    pub manager_initramfs: Vec<u8>,
    /// Kernel release (`uname -r`), e.g. `6.1.0-56-cloud-arm64`.
    pub release: String,
    /// Where the kernel is in the cache.
    pub kernel_file: PathBuf,
    /// Where the initramfs was written.
    pub initramfs_file: PathBuf,
    /// Where the manager's was written.
    pub manager_initramfs_file: PathBuf,
    /// Packages used, as (name, version).
    pub packages: Vec<(String, String)>,
    /// Set when apt could not be used and cached packages were taken instead.
    pub note: Option<String>,
}

/// The Linux guest for `ws`: fetched or taken from the cache, initramfs generated. Done once
/// per process and target directory; concurrent callers wait for the first.
pub fn guest(ws: &Workspace, quiet: bool) -> Result<Arc<LinuxGuest>> {
    static GUESTS: Mutex<Vec<(PathBuf, Arc<LinuxGuest>)>> = Mutex::new(Vec::new());
    let mut guests = GUESTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, guest)) = guests.iter().find(|(dir, _)| *dir == ws.target_dir) {
        return Ok(guest.clone());
    }
    let guest = Arc::new(build(ws, quiet)?);
    guests.push((ws.target_dir.clone(), guest.clone()));
    Ok(guest)
}

/// Fetches (or reuses) the packages under `guests/debian`, builds the guest tools and writes
/// `guests/linux/initramfs.cpio.gz`.
fn build(ws: &Workspace, quiet: bool) -> Result<LinuxGuest> {
    let guests = &ws.target_dir.join("guests");
    let fetched = fetch(&guests.join("debian"), quiet)?;
    if let Some(note) = &fetched.note {
        eprintln!("linux: {note}");
    }
    let raw = std::fs::read(&fetched.kernel)
        .with_context(|| format!("reading {}", fetched.kernel.display()))?;
    let kernel = crate::guest::unpack_kernel(raw)
        .with_context(|| format!("unpacking {}", fetched.kernel.display()))?;
    let busybox = std::fs::read(&fetched.busybox)
        .with_context(|| format!("reading {}", fetched.busybox.display()))?;
    crate::setup::ensure_cross_cc()?;
    let tool = |package: &str, bin: &str| -> Result<Vec<u8>> {
        let path =
            crate::build::build_one(ws, package, bin, crate::build::LINUX_TOOLS_TARGET, quiet)?;
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let probe = crate::build::build_one(
        ws,
        "microvisor-probe",
        "probe",
        crate::build::GUEST_TARGET,
        quiet,
    )?;
    let tools = Tools {
        iobench: tool("microvisor-iobench", "iobench")?,
        powerkey: tool("microvisor-control", "powerkey")?,
        manager: ManagerTools {
            microvisorctl: tool("microvisor-control", "microvisorctl")?,
            redfish: tool("microvisor-redfish", "microvisor-redfish")?,
            probe: crate::guest::probe_image(&probe)?,
        },
    };
    let modules = fetched
        .modules
        .iter()
        .map(|path| read_module(path))
        .collect::<Result<Vec<_>>>()?;
    let build = |flavour| {
        initramfs(&busybox, &tools, &modules, flavour)
            .with_context(|| format!("building the {flavour:?} initramfs"))
    };
    let initramfs = build(Flavour::Tenant)?;
    let initramfs_file = guests.join("linux").join("initramfs.cpio.gz");
    write_if_changed(&initramfs_file, &initramfs)?;
    let manager_initramfs = build(Flavour::Manager)?;
    let manager_initramfs_file = guests.join("linux").join("manager-initramfs.cpio.gz");
    write_if_changed(&manager_initramfs_file, &manager_initramfs)?;
    let release = fetched
        .kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    Ok(LinuxGuest {
        kernel,
        initramfs,
        manager_initramfs,
        release,
        kernel_file: fetched.kernel,
        initramfs_file,
        manager_initramfs_file,
        packages: fetched
            .debs
            .iter()
            .map(|d| (d.package().to_string(), d.version()))
            .collect(),
        note: fetched.note,
    })
}

/// A module file of the kernel package, uncompressed (`.ko.xz`, as newer Debian kernels ship
/// them, through the host's `xz -dc`: busybox `insmod` takes plain ELF).
fn read_module(path: &Path) -> Result<Module> {
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("a module file name")?;
    let (name, bytes) = if let Some(name) = file.strip_suffix(".ko.xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .with_context(|| format!("running xz -dc {}", path.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "xz -dc {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        (name, out.stdout)
    } else {
        let name = file.strip_suffix(".ko").context("a .ko file")?;
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        (name, bytes)
    };
    Ok(Module {
        name: name.to_string(),
        bytes,
    })
}

/// Writes `bytes` to `path` (through a temporary file and a rename) unless it holds them.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let dir = path.parent().context("a file in a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The QEMU command that boots the guest without the microvisor (QEMU `virt`, GICv3, no
/// NIC), console on stdio; `append` follows [`DEFAULT_CMDLINE`].
pub fn native_qemu_command(
    guest: &LinuxGuest,
    cpus: u32,
    memory_mib: u64,
    append: &str,
) -> Command {
    native(guest, "virt,gic-version=3", cpus, memory_mib, append)
}

/// [`native_qemu_command`] with the NICs `nics` laid out as on a node (`[[nic]]`, see
/// `crate::qemu::nic_args`: root ports, hub 0 for `slices`, a restricted user network with a
/// forwarded loopback port for each `host` NIC, chosen free now) and, if `smmu`, QEMU's SMMUv3
/// in front of the PCIe bus as on the default node. The same guest and NICs a slice gets,
/// without the microvisor: the native side of the network tests and comparisons.
pub fn native_qemu_launch(
    guest: &LinuxGuest,
    cpus: u32,
    memory_mib: u64,
    append: &str,
    nics: &[crate::node::Nic],
    smmu: bool,
) -> Result<crate::qemu::Launch> {
    let machine = if smmu {
        "virt,gic-version=3,iommu=smmuv3"
    } else {
        "virt,gic-version=3"
    };
    let mut command = native(guest, machine, cpus, memory_mib, append);
    let ports = crate::qemu::free_loopback_ports(2 * crate::qemu::host_nic_count(nics))?;
    let (args, forwards) = crate::qemu::nic_args(nics, &ports)?;
    command.args(args);
    Ok(crate::qemu::Launch { command, forwards })
}

fn native(guest: &LinuxGuest, machine: &str, cpus: u32, memory_mib: u64, append: &str) -> Command {
    let mut cmd = Command::new(crate::setup::QEMU);
    cmd.args(["-M", machine, "-cpu", "max"])
        .args(["-smp", &cpus.to_string(), "-m", &format!("{memory_mib}M")])
        // No default NIC (QEMU's would be on an unrestricted user network).
        .args(["-nic", "none"])
        .arg("-nographic")
        .arg("-kernel")
        .arg(&guest.kernel_file)
        .arg("-initrd")
        .arg(&guest.initramfs_file)
        .arg("-append")
        .arg(crate::image::full_cmdline(DEFAULT_CMDLINE, append));
    cmd
}

/// A fresh directory for one test, under the system's temporary directory.
#[cfg(test)]
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-linux-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
