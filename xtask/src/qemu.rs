//! The QEMU command line for booting an image on a node, interactively or captured by tests.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::node::{Disk, Node};
use crate::setup::{QEMU, UBOOT_BIN};

/// How the image reaches EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's built-in loader: `-kernel IMAGE` (placed at 0x4020_0000).
    Direct,
    /// Debian's U-Boot as `-bios`; it fetches `-kernel IMAGE` over fw_cfg and runs `booti`.
    UBoot,
}

/// Where the serial console goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    /// `-nographic`: the serial port and QEMU's monitor multiplexed on this terminal
    /// (`Ctrl-A x` exits).
    Interactive,
    /// Serial on piped stdout, stdin null, no monitor, no reboot (tests).
    Captured,
}

/// Everything that decides a QEMU invocation.
#[derive(Clone, Debug)]
pub struct Boot<'a> {
    pub node: &'a Node,
    pub image: &'a Path,
    pub firmware: Firmware,
    /// EL2 available (`virtualization=on`); off only to boot a guest natively.
    pub virtualization: bool,
    pub console: Console,
    /// Prefix of the node's NVMe disk files (`<prefix>-nvme<i>.raw`): one per concurrent run,
    /// since QEMU locks them.
    pub disk_prefix: PathBuf,
    /// `-append`: only a guest booted natively reads it (the microvisor takes its plan's).
    pub kernel_cmdline: Option<String>,
    /// `-dtb`: the device tree QEMU hands over instead of its own, as a loader or firmware
    /// would (QEMU still replaces its memory nodes, adds to `/chosen` and rewrites `/psci`).
    pub dtb: Option<&'a Path>,
}

impl Boot<'_> {
    /// Creates the disk files and returns the command (not started).
    pub fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(QEMU);
        cmd.args(self.args()?);
        if self.console == Console::Captured {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        Ok(cmd)
    }

    /// The arguments after `qemu-system-aarch64`.
    pub fn args(&self) -> Result<Vec<String>> {
        let node = self.node;
        let mut machine = String::from("virt");
        if self.virtualization {
            machine.push_str(",virtualization=on");
        }
        machine.push_str(&format!(",gic-version={}", node.gic_version));
        if let Some(crate::node::Iommu::Smmuv3) = node.iommu {
            machine.push_str(",iommu=smmuv3");
        }
        let mut args: Vec<String> = vec![
            "-M".into(),
            machine,
            "-cpu".into(),
            "max".into(),
            "-smp".into(),
            node.cores.to_string(),
            "-m".into(),
            format!("{}M", node.memory >> 20),
            // No default NIC: QEMU would add a virtio-net at 00:01.0 on an unrestricted user
            // network. The node's PCI functions are exactly those of `Node::pci_functions`.
            "-nic".into(),
            "none".into(),
        ];
        match self.console {
            Console::Interactive => args.push("-nographic".into()),
            Console::Captured => args.extend(
                [
                    "-display",
                    "none",
                    "-monitor",
                    "none",
                    "-serial",
                    "stdio",
                    "-no-reboot",
                ]
                .map(String::from),
            ),
        }
        if self.firmware == Firmware::UBoot {
            args.extend(["-bios".into(), UBOOT_BIN.into()]);
        }
        if let Some(dtb) = self.dtb {
            args.extend(["-dtb".into(), dtb.display().to_string()]);
        }
        args.extend(["-kernel".into(), self.image.display().to_string()]);
        if let Some(cmdline) = &self.kernel_cmdline {
            args.extend(["-append".into(), cmdline.clone()]);
        }
        args.extend(disk_args(&self.disk_prefix, &node.disks)?);
        Ok(args)
    }

    /// Writes QEMU's own device tree for this boot's machine to `out` (`-M ...,dumpdtb=`):
    /// the tree a `-kernel` boot gets, with the same machine options, cores and memory. QEMU
    /// exits once it is written.
    pub fn dump_dtb(&self, out: &Path) -> Result<()> {
        let mut args = Boot {
            dtb: None,
            ..self.clone()
        }
        .args()?;
        let machine = args
            .iter_mut()
            .skip_while(|a| *a != "-M")
            .nth(1)
            .context("no -M in the QEMU arguments")?;
        machine.push_str(&format!(",dumpdtb={}", out.display()));
        let mut cmd = Command::new(QEMU);
        cmd.args(&args).stdin(Stdio::null());
        let output = cmd
            .output()
            .with_context(|| format!("starting {}", crate::workspace::render(&cmd)))?;
        anyhow::ensure!(
            output.status.success() && out.is_file(),
            "{} did not write {} ({}): {}",
            crate::workspace::render(&cmd),
            out.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }
}

/// QEMU arguments attaching `disks` as NVMe controllers on `pcie.0` at the addresses
/// [`Node::disk_address`] gives them, backed by sparse files `<prefix>-nvme<i>.raw` (created or
/// resized here).
pub fn disk_args(prefix: &Path, disks: &[Disk]) -> Result<Vec<String>> {
    let mut args = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        let address = Node::disk_address(i)
            .with_context(|| format!("NVMe disk #{}: no pcie.0 slot left for it", i + 1))?;
        let file = disk_file(prefix, i);
        ensure_sparse_file(&file, disk.size)?;
        args.push("-drive".into());
        args.push(format!(
            "file={},if=none,id=nvm{i},format=raw",
            file.display()
        ));
        args.push("-device".into());
        args.push(format!(
            "nvme,serial=microvisor-{i},drive=nvm{i},bus=pcie.0,addr={:02x}.{}",
            address.device(),
            address.function()
        ));
    }
    Ok(args)
}

/// Disk file `index` of a node booted with `prefix`: `<prefix>-nvme<index>.raw`.
pub fn disk_file(prefix: &Path, index: usize) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!("-nvme{index}.raw"));
    PathBuf::from(name)
}

/// Creates (or resizes) a sparse file of `size` bytes.
fn ensure_sparse_file(path: &Path, size: u64) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("creating disk {}", path.display()))?;
    if file.metadata()?.len() != size {
        file.set_len(size)
            .with_context(|| format!("sizing disk {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot<'a>(node: &'a Node, firmware: Firmware, console: Console) -> Boot<'a> {
        Boot {
            node,
            image: Path::new("/tmp/x.img"),
            firmware,
            virtualization: true,
            console,
            disk_prefix: std::env::temp_dir().join("xtask-qemu-test"),
            kernel_cmdline: None,
            dtb: None,
        }
    }

    #[test]
    fn direct_boot_for_tests() {
        let node = Node::inline("t", 4, 1 << 30);
        let args = boot(&node, Firmware::Direct, Console::Captured)
            .args()
            .unwrap();
        let line = args.join(" ");
        assert!(
            line.starts_with("-M virt,virtualization=on,gic-version=3 -cpu max -smp 4 -m 1024M"),
            "{line}"
        );
        assert!(line.contains("-serial stdio -no-reboot"), "{line}");
        assert!(line.contains(" -nic none "), "{line}");
        assert!(line.ends_with("-kernel /tmp/x.img"), "{line}");
        assert!(!line.contains("-bios"), "{line}");
    }

    #[test]
    fn a_node_with_an_smmu_asks_virt_for_one() {
        let mut node = Node::inline("t", 2, 1 << 30);
        node.iommu = Some(crate::node::Iommu::Smmuv3);
        let args = boot(&node, Firmware::Direct, Console::Captured)
            .args()
            .unwrap();
        assert_eq!(args[1], "virt,virtualization=on,gic-version=3,iommu=smmuv3");
    }

    #[test]
    fn uboot_boot_interactive_with_a_disk() {
        let mut node = Node::inline("t", 8, 4 << 30);
        node.disks.push(crate::node::Disk { size: 1 << 20 });
        let b = boot(&node, Firmware::UBoot, Console::Interactive);
        let line = b.args().unwrap().join(" ");
        assert!(line.contains("-nographic"), "{line}");
        assert!(
            line.contains(&format!("-bios {UBOOT_BIN} -kernel /tmp/x.img")),
            "{line}"
        );
        assert!(
            line.contains("-device nvme,serial=microvisor-0,drive=nvm0,bus=pcie.0,addr=02.0"),
            "{line}"
        );
        let disk = disk_file(&b.disk_prefix, 0);
        assert_eq!(std::fs::metadata(&disk).unwrap().len(), 1 << 20);
        std::fs::remove_file(disk).unwrap();
    }

    #[test]
    fn a_loader_supplied_device_tree() {
        let node = Node::inline("t", 2, 512 << 20);
        let mut b = boot(&node, Firmware::Direct, Console::Captured);
        b.dtb = Some(Path::new("/tmp/virt.dtb"));
        let line = b.args().unwrap().join(" ");
        assert!(
            line.ends_with("-dtb /tmp/virt.dtb -kernel /tmp/x.img"),
            "{line}"
        );
    }

    #[test]
    fn native_boot_has_no_virtualization() {
        let node = Node::inline("t", 2, 512 << 20);
        let mut b = boot(&node, Firmware::Direct, Console::Captured);
        b.virtualization = false;
        assert_eq!(b.args().unwrap()[1], "virt,gic-version=3");
    }
}
