//! The QEMU command line for booting an image on a node, interactively or captured by tests.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use microvisor_plan::PciAddress;

use crate::node::{Disk, GUEST_HTTP_PORT, GUEST_HTTPS_PORT, Mac, Network, Nic, Node};
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

/// Loopback ports of the host forwarded to ports [`GUEST_HTTP_PORT`] and
/// [`GUEST_HTTPS_PORT`] of a `network = "host"` NIC: `http://127.0.0.1:<port>/` reaches
/// whoever has that NIC (`https://127.0.0.1:<https_port>/` the manager's Redfish service).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostForward {
    /// The NIC's index in the node profile.
    pub nic: usize,
    /// Where the hypervisor finds the NIC: what `[[slice.device]]` gives a slice.
    pub address: PciAddress,
    pub mac: Mac,
    /// The port on 127.0.0.1 forwarded to port 80, chosen free at launch.
    pub port: u16,
    /// The port on 127.0.0.1 forwarded to port 443, chosen free at launch.
    pub https_port: u16,
}

impl HostForward {
    /// `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// `https://127.0.0.1:<https_port>/`.
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.https_port)
    }
}

/// A QEMU command ready to start and the loopback ports that reach its host NICs.
#[derive(Debug)]
pub struct Launch {
    pub command: Command,
    /// One per `network = "host"` NIC, in NIC order.
    pub forwards: Vec<HostForward>,
}

impl Boot<'_> {
    /// Creates the disk files and returns the command (not started). The forwarded ports are
    /// chosen but not returned: use [`Boot::launch`] to learn them.
    pub fn command(&self) -> Result<Command> {
        Ok(self.launch()?.command)
    }

    /// Creates the disk files, picks a free loopback port per host NIC and returns the command
    /// (not started) with the ports.
    pub fn launch(&self) -> Result<Launch> {
        let ports = free_loopback_ports(2 * host_nic_count(&self.node.nics))?;
        let (args, forwards) = self.args_with_ports(&ports)?;
        let mut command = Command::new(QEMU);
        command.args(args);
        if self.console == Console::Captured {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        Ok(Launch { command, forwards })
    }

    /// The arguments after `qemu-system-aarch64` (with freshly chosen forwarded ports).
    pub fn args(&self) -> Result<Vec<String>> {
        let ports = free_loopback_ports(2 * host_nic_count(&self.node.nics))?;
        Ok(self.args_with_ports(&ports)?.0)
    }

    /// The arguments, host NIC *k* forwarded from `ports[2k]` (HTTP) and `ports[2k + 1]`
    /// (HTTPS).
    fn args_with_ports(&self, ports: &[u16]) -> Result<(Vec<String>, Vec<HostForward>)> {
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
        let (nics, forwards) = nic_args(&node.nics, ports)?;
        args.extend(nics);
        Ok((args, forwards))
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

/// How many of `nics` are on the host network (each needs a forwarded port).
pub fn host_nic_count(nics: &[Nic]) -> usize {
    nics.iter().filter(|n| n.network == Network::Host).count()
}

/// `xtask/src/http_once.py` in this source tree, which QEMU's guestfwd runs: one HTTP answer
/// per connection (a guest's virtual media server, [`Nic::http`]). Run from where it lies,
/// in the developer's own tree: a copy at a fixed path under /tmp (as until 2026-12-04)
/// could be swapped by another local user between the check and QEMU's use (found in review).
fn http_server_script() -> Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http_once.py");
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: it serves the guests' virtual media",
        path.display()
    );
    Ok(path)
}

/// `count` distinct loopback ports that were free a moment ago: each is bound to
/// 127.0.0.1:0 (the kernel picks an unused port) while the others are, then all are released
/// for QEMU to bind. Parallel QEMUs so never get fixed ports that collide; another process
/// could still take one in between, and QEMU then fails to start naming the port.
pub fn free_loopback_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding a free loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// QEMU arguments for `nics` (docs/node-profiles.md, "Network cards"): per NIC *i* a PCIe
/// root port `rp<i>` at [`Node::root_port_address`] and behind it a modern virtio-net-pci
/// whose DMA goes through the IOMMU (`iommu_platform=on`) and that has no option ROM BAR
/// (`romfile=`), MAC [`Node::nic_mac`]. A `slices` NIC is a port of hub 0 (which has no user
/// network on it); a `host` NIC gets a user network of its own, restricted (nothing leaves
/// the machine), IPv4 only, with `127.0.0.1:ports[2k]` forwarded to its port 80 and
/// `127.0.0.1:ports[2k + 1]` to its port 443 (`k` counting host NICs), and the TFTP server of that network serving [`Nic::tftp`] if it has one.
pub fn nic_args(nics: &[Nic], ports: &[u16]) -> Result<(Vec<String>, Vec<HostForward>)> {
    anyhow::ensure!(
        ports.len() == 2 * host_nic_count(nics),
        "{} forwarded ports for {} host NICs",
        ports.len(),
        host_nic_count(nics)
    );
    let mut args = Vec::new();
    let mut forwards = Vec::new();
    let mut ports = ports.iter();
    for (i, nic) in nics.iter().enumerate() {
        let (Some(port_address), Some(address)) =
            (Node::root_port_address(i), Node::nic_address(i))
        else {
            anyhow::bail!("NIC #{}: no root port slot left for it", i + 1);
        };
        let mac = Node::nic_mac(i);
        let netdev = match nic.network {
            Network::Slices => format!("hubport,id=net{i},hubid=0"),
            Network::Host => {
                let port = *ports.next().context("two ports per host NIC")?;
                let https_port = *ports.next().context("two ports per host NIC")?;
                forwards.push(HostForward {
                    nic: i,
                    address,
                    mac,
                    port,
                    https_port,
                });
                let mut netdev = format!(
                    "user,id=net{i},restrict=on,ipv6=off,\
                     hostfwd=tcp:127.0.0.1:{port}-:{GUEST_HTTP_PORT},\
                     hostfwd=tcp:127.0.0.1:{https_port}-:{GUEST_HTTPS_PORT}"
                );
                if let Some(root) = &nic.tftp {
                    let root = root.to_str().with_context(|| {
                        format!("NIC #{}: TFTP root {} is not UTF-8", i + 1, root.display())
                    })?;
                    // QEMU's option syntax: a comma in a value is written twice.
                    netdev.push_str(&format!(",tftp={}", root.replace(',', ",,")));
                }
                if let Some(root) = &nic.http {
                    let server = http_server_script()?;
                    let command = format!("python3 {} {}", server.display(), root.display());
                    anyhow::ensure!(
                        !command.contains(','),
                        "NIC #{}: HTTP root {} has a comma (QEMU's guestfwd cannot run it)",
                        i + 1,
                        root.display()
                    );
                    netdev.push_str(&format!(
                        ",guestfwd=tcp:{}:80-cmd:{command}",
                        crate::node::HTTP_SERVER
                    ));
                }
                netdev
            }
        };
        args.extend([
            "-netdev".to_string(),
            netdev,
            "-device".to_string(),
            format!(
                "pcie-root-port,id=rp{i},bus=pcie.0,chassis={},addr={:02x}.{}",
                i + 1,
                port_address.device(),
                port_address.function()
            ),
            "-device".to_string(),
            format!(
                "virtio-net-pci,bus=rp{i},addr=00.0,netdev=net{i},mac={mac},\
                 iommu_platform=on,romfile="
            ),
        ]);
    }
    Ok((args, forwards))
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
    fn nics_sit_behind_root_ports_on_a_hub_or_their_own_restricted_user_network() {
        use crate::node::{Network, Nic};
        let nics = [
            Nic::on(Network::Slices),
            Nic::on(Network::Host),
            Nic::on(Network::Slices),
        ];
        assert!(nic_args(&nics, &[4321]).is_err(), "two ports per host NIC");
        let (args, forwards) = nic_args(&nics, &[4321, 4322]).unwrap();
        assert_eq!(
            args.join(" "),
            "-netdev hubport,id=net0,hubid=0 \
             -device pcie-root-port,id=rp0,bus=pcie.0,chassis=1,addr=10.0 \
             -device virtio-net-pci,bus=rp0,addr=00.0,netdev=net0,mac=52:54:00:6d:76:00,\
             iommu_platform=on,romfile= \
             -netdev user,id=net1,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:4321-:80,\
             hostfwd=tcp:127.0.0.1:4322-:443 \
             -device pcie-root-port,id=rp1,bus=pcie.0,chassis=2,addr=11.0 \
             -device virtio-net-pci,bus=rp1,addr=00.0,netdev=net1,mac=52:54:00:6d:76:01,\
             iommu_platform=on,romfile= \
             -netdev hubport,id=net2,hubid=0 \
             -device pcie-root-port,id=rp2,bus=pcie.0,chassis=3,addr=12.0 \
             -device virtio-net-pci,bus=rp2,addr=00.0,netdev=net2,mac=52:54:00:6d:76:02,\
             iommu_platform=on,romfile="
        );
        assert_eq!(
            forwards,
            [HostForward {
                nic: 1,
                address: PciAddress::new(2, 0, 0).unwrap(),
                mac: Node::nic_mac(1),
                port: 4321,
                https_port: 4322,
            }]
        );
        assert_eq!(forwards[0].url(), "http://127.0.0.1:4321/");
        assert_eq!(forwards[0].https_url(), "https://127.0.0.1:4322/");
    }

    #[test]
    fn a_host_nic_with_a_tftp_root_gets_slirps_tftp_server_and_stays_restricted() {
        use crate::node::{Network, Nic};
        let nics = [Nic {
            network: Network::Host,
            tftp: Some("/t/net,boot".into()),
            http: None,
        }];
        let (args, _) = nic_args(&nics, &[4321, 4322]).unwrap();
        assert_eq!(
            args[1],
            "user,id=net0,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:4321-:80,\
             hostfwd=tcp:127.0.0.1:4322-:443,tftp=/t/net,,boot"
        );
    }

    #[test]
    fn every_user_network_is_restricted_and_ports_are_free_and_distinct() {
        let ws_qemu = crate::workspace::source_root().join("qemu");
        let text = std::fs::read_to_string(ws_qemu.join("default.toml")).unwrap();
        let node = Node::from_toml("default", &text, &ws_qemu).unwrap();
        let mut b = boot(&node, Firmware::Direct, Console::Captured);
        b.disk_prefix =
            std::env::temp_dir().join(format!("xtask-qemu-nics-{}", std::process::id()));
        let launch = b.launch().unwrap();
        let args: Vec<String> = launch
            .command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let users: Vec<&String> = args.iter().filter(|a| a.starts_with("user,")).collect();
        assert_eq!(users.len(), host_nic_count(&node.nics));
        assert!(!users.is_empty(), "the default node has host NICs");
        for user in &users {
            assert!(user.contains(",restrict=on,ipv6=off,"), "{user}");
            assert!(user.contains("hostfwd=tcp:127.0.0.1:"), "{user}");
        }
        assert!(
            !args
                .iter()
                .any(|a| a.contains("hubport") && a.contains("netdev="))
        );
        let mut ports: Vec<u16> = launch
            .forwards
            .iter()
            .flat_map(|f| [f.port, f.https_port])
            .collect();
        assert_eq!(ports.len(), 2 * users.len());
        assert!(ports.iter().all(|&p| p != 0));
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 2 * users.len(), "distinct");
        for disk in 0..node.disks.len() {
            std::fs::remove_file(disk_file(&b.disk_prefix, disk)).unwrap();
        }
    }

    #[test]
    fn native_boot_has_no_virtualization() {
        let node = Node::inline("t", 2, 512 << 20);
        let mut b = boot(&node, Firmware::Direct, Console::Captured);
        b.virtualization = false;
        assert_eq!(b.args().unwrap()[1], "virt,gic-version=3");
    }
}
