//! QEMU node profiles (`qemu/<name>.toml`): the machine a plan is booted on.
//!
//! ```toml
//! description = "dense ARM server"
//! cores = 8
//! memory = "4GiB"
//! gic-version = 3
//! plan = "default-plan.toml"   # relative to the profile's directory
//! iommu = "smmuv3"             # optional: QEMU virt's SMMUv3 in front of the PCIe bus
//! [[disk]]
//! size = "8GiB"                # an NVMe disk (used from issue 3 on)
//! [[nic]]
//! network = "slices"           # a virtio-net NIC on the slice-to-slice hub
//! [[nic]]
//! network = "host"             # a virtio-net NIC on its own restricted QEMU user network,
//!                              # its port 80 forwarded from a free 127.0.0.1 port
//! tftp = "netboot"             # optional, host NICs only: the directory that network's
//!                              # TFTP server serves (network boot), relative to the profile
//! http = "media"               # optional, host NICs only: the directory served at
//!                              # http://10.0.2.100/ on that network (virtual media)
//! ```
//!
//! NIC *i* (in profile order) sits alone behind PCIe root port *i*, so it is a PCIe endpoint
//! with Function Level Reset: root port *i* at `00:(0x10+i).0`, the NIC at `(i+1):00.0` (the
//! bus the hypervisor gives that root port, numbering bridges depth-first), MAC
//! `52:54:00:6d:76:<i>`. Why two networks: a QEMU hub that carries slice-to-slice traffic and
//! a user network (slirp) breaks TCP between the slices (docs/node-profiles.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use microvisor_plan::{NodePci, PciAddress, PciFunction};
use serde::Deserialize;

use crate::workspace::Workspace;

/// QEMU `virt` places RAM here.
pub const RAM_BASE: u64 = 0x4000_0000;
/// RAM the hypervisor is assumed to keep for itself when previewing placement (`xtask plan`).
pub const HYPERVISOR_RESERVE: u64 = 64 << 20;
/// Most NVMe disks a profile may have (each takes a slot of `pcie.0`).
pub const MAX_DISKS: usize = 8;

/// QEMU virt's PCIe host bridge (GPEX) at 00:00.0: 1b36:0008, class 06 00 00.
const HOST_BRIDGE: PciFunction = PciFunction {
    address: PciAddress::from_routing_id(0),
    class: 0x06_00_00,
    vendor: 0x1b36,
    device: 0x0008,
};
/// QEMU's NVMe controller (`-device nvme`): 1b36:0010, class 01 08 02.
const NVME_IDS: (u32, u16, u16) = (0x01_08_02, 0x1b36, 0x0010);
/// Most NICs a profile may have: one root port each, in `pcie.0` slots 0x10-0x1f.
pub const MAX_NICS: usize = 16;
/// The `pcie.0` slot of root port 0 (root port *i* is at `FIRST_ROOT_PORT_SLOT + i`), well
/// after the disks' slots.
const FIRST_ROOT_PORT_SLOT: u8 = 0x10;
/// QEMU's PCIe root port (`-device pcie-root-port`): 1b36:000c, class 06 04 00.
const ROOT_PORT_IDS: (u32, u16, u16) = (0x06_04_00, 0x1b36, 0x000c);
/// A modern (virtio 1.0) virtio-net function: 1af4:1041, class 02 00 00.
const VIRTIO_NET_IDS: (u32, u16, u16) = (0x02_00_00, 0x1af4, 0x1041);
/// The first five bytes of every NIC's MAC: QEMU's locally administered 52:54:00 and "mv".
const MAC_PREFIX: [u8; 5] = [0x52, 0x54, 0x00, 0x6d, 0x76];
/// The port of a slice that a `network = "host"` NIC's forwarded loopback port reaches
/// (the Linux guest's `microvisor.httpd=1` serves it).
pub const GUEST_HTTP_PORT: u16 = 80;
/// The port of a host NIC the Redfish service's HTTPS listens on (forwarded like
/// [`GUEST_HTTP_PORT`]).
pub const GUEST_HTTPS_PORT: u16 = 443;

/// The `pcie.0` slot of NVMe disk 0 (disk *i* is at slot `FIRST_DISK_SLOT + i`). Slot 1 stays
/// free: it is where QEMU would put its default NIC, which xtask turns off (`-nic none`).
const FIRST_DISK_SLOT: u8 = 2;

/// A node: the QEMU machine a plan is booted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Profile name (file stem), or a test's own label.
    pub name: String,
    pub description: String,
    /// Number of cores (`-smp`).
    pub cores: u32,
    /// RAM in bytes (`-m`), a multiple of 1 MiB.
    pub memory: u64,
    /// GIC version (`gic-version=`): 3, or 4 (GICv4.0; QEMU needs `virtualization=on`,
    /// which every node has).
    pub gic_version: u32,
    /// The node's default plan, if it names one.
    pub plan: Option<PathBuf>,
    /// NVMe disks attached to the node.
    pub disks: Vec<Disk>,
    /// The IOMMU in front of the node's PCIe bus, if any.
    pub iommu: Option<Iommu>,
    /// Network cards, in profile order (NIC *i* is behind root port *i*).
    pub nics: Vec<Nic>,
}

/// One virtio-net NIC of the node (`[[nic]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    /// What its cable is plugged into.
    pub network: Network,
    /// For a `host` NIC: the directory its user network's TFTP server serves, read-only
    /// (QEMU's `tftp=`), from which a firmware slice given the NIC boots over the network
    /// (docs/firmware.md). None: no TFTP server.
    pub tftp: Option<PathBuf>,
    /// For a `host` NIC: the directory served read-only over HTTP at
    /// `http://`[`HTTP_SERVER`]`/` on its user network (QEMU's `guestfwd`, each connection
    /// answered by `xtask/src/http_once.py`), where the manager's Redfish service fetches
    /// virtual media from. None: nothing there.
    pub http: Option<PathBuf>,
}

/// Where a host NIC's [`Nic::http`] directory is served on its user network.
pub const HTTP_SERVER: &str = "10.0.2.100";

impl Nic {
    /// A NIC on `network`, without a TFTP or HTTP server.
    pub fn on(network: Network) -> Nic {
        Nic {
            network,
            tftp: None,
            http: None,
        }
    }
}

/// The QEMU network a NIC is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The node's slice-to-slice hub (`-netdev hubport,hubid=0`): every `slices` NIC and
    /// nothing else, in particular no user network. Addresses are static (the plan's
    /// `microvisor.ip=`); nothing on it leaves QEMU.
    Slices,
    /// A QEMU user network of its own (`-netdev user,restrict=on,ipv6=off`): DHCP gives the
    /// NIC 10.0.2.15, nothing leaves the machine, and a free loopback port of the host,
    /// chosen at launch, is forwarded to the NIC's port [`GUEST_HTTP_PORT`].
    Host,
}

impl Network {
    /// `slices` or `host`, as written in the profile.
    pub fn name(self) -> &'static str {
        match self {
            Network::Slices => "slices",
            Network::Host => "host",
        }
    }
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    /// `52:54:00:6d:76:00`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An IOMMU QEMU `virt` can put in front of its PCIe bus (`-M virt,iommu=...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Iommu {
    /// An Arm SMMUv3 (`iommu=smmuv3`): StreamID = the requester ID.
    Smmuv3,
}

/// One NVMe disk (a sparse raw file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Capacity in bytes.
    pub size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ProfileFile {
    description: String,
    cores: u32,
    memory: SizeValue,
    #[serde(default = "default_gic_version")]
    gic_version: u32,
    plan: Option<PathBuf>,
    #[serde(default)]
    disk: Vec<DiskFile>,
    iommu: Option<Iommu>,
    #[serde(default)]
    nic: Vec<NicFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskFile {
    size: SizeValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NicFile {
    network: Network,
    tftp: Option<PathBuf>,
    http: Option<PathBuf>,
}

/// A size as written in TOML: a number of bytes or a string with a suffix.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn bytes(&self, what: &str) -> Result<u64> {
        match self {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => {
                microvisor_plan::size::parse_size(t).map_err(|e| anyhow::anyhow!("{what}: {e}"))
            }
        }
    }
}

fn default_gic_version() -> u32 {
    3
}

impl Node {
    /// Parses a profile; `dir` resolves its relative `plan` path.
    pub fn from_toml(name: &str, text: &str, dir: &Path) -> Result<Self> {
        let file: ProfileFile =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        let node = Node {
            name: name.to_string(),
            description: file.description,
            cores: file.cores,
            memory: file.memory.bytes("memory")?,
            gic_version: file.gic_version,
            plan: file.plan.map(|p| dir.join(p)),
            disks: file
                .disk
                .iter()
                .map(|d| {
                    Ok(Disk {
                        size: d.size.bytes("disk size")?,
                    })
                })
                .collect::<Result<_>>()?,
            iommu: file.iommu,
            nics: file
                .nic
                .iter()
                .map(|n| Nic {
                    network: n.network,
                    tftp: n.tftp.as_ref().map(|t| dir.join(t)),
                    http: n.http.as_ref().map(|t| dir.join(t)),
                })
                .collect(),
        };
        node.validate()?;
        Ok(node)
    }

    /// A node described inline (tests): no default plan, no disks.
    pub fn inline(name: &str, cores: u32, memory: u64) -> Self {
        Node {
            name: name.to_string(),
            description: format!("{cores} cores, {} MiB", memory >> 20),
            cores,
            memory,
            gic_version: 3,
            plan: None,
            disks: Vec::new(),
            iommu: None,
            nics: Vec::new(),
        }
    }

    /// Loads `qemu/<name>.toml`, or the profile file `name` if it is a path to one.
    pub fn load(ws: &Workspace, name: &str) -> Result<Self> {
        let path = if name.ends_with(".toml") || name.contains('/') {
            PathBuf::from(name)
        } else {
            ws.qemu_dir().join(format!("{name}.toml"))
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("node profile {}: cannot read it", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        let dir = path.parent().unwrap_or(Path::new("."));
        Node::from_toml(&stem, &text, dir)
            .with_context(|| format!("node profile {}", path.display()))
    }

    /// The node's default plan, or an error saying it has none.
    pub fn default_plan(&self) -> Result<&Path> {
        self.plan
            .as_deref()
            .with_context(|| format!("node {} names no default plan: pass --plan", self.name))
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            (1..=512).contains(&self.cores),
            "cores: {} is not in 1..=512",
            self.cores
        );
        ensure!(
            self.memory >= 128 << 20 && self.memory.is_multiple_of(1 << 20),
            "memory: {} bytes is not a whole number of MiB >= 128 MiB",
            self.memory
        );
        if !matches!(self.gic_version, 3 | 4) {
            bail!(
                "gic-version: {} is not supported (3, or 4 for GICv4.0)",
                self.gic_version
            );
        }
        ensure!(
            self.disks.len() <= MAX_DISKS,
            "disk: {} disks, at most {MAX_DISKS} are supported",
            self.disks.len()
        );
        for (i, d) in self.disks.iter().enumerate() {
            ensure!(
                d.size > 0 && d.size.is_multiple_of(512),
                "disk #{}: size {} is not a positive multiple of 512",
                i + 1,
                d.size
            );
        }
        ensure!(
            self.nics.len() <= MAX_NICS,
            "nic: {} NICs, at most {MAX_NICS} are supported (one PCIe root port each)",
            self.nics.len()
        );
        for (i, nic) in self.nics.iter().enumerate() {
            ensure!(
                nic.tftp.is_none() || nic.network == Network::Host,
                "nic #{}: tftp needs network = \"host\" (the slices network has no TFTP server)",
                i + 1
            );
            ensure!(
                nic.http.is_none() || nic.network == Network::Host,
                "nic #{}: http needs network = \"host\" (the slices network has no HTTP server)",
                i + 1
            );
        }
        Ok(())
    }

    /// Where QEMU puts NVMe disk `index` (`-device nvme,addr=`): 00:02.0 for the first, then
    /// the next slots; `None` past the last slot of the bus.
    pub fn disk_address(index: usize) -> Option<PciAddress> {
        let slot = FIRST_DISK_SLOT.checked_add(u8::try_from(index).ok()?)?;
        PciAddress::new(0, slot, 0)
    }

    /// Where QEMU puts the PCIe root port of NIC `index` (`-device pcie-root-port,addr=`):
    /// 00:10.0 for the first, then the next slots; `None` past [`MAX_NICS`].
    pub fn root_port_address(index: usize) -> Option<PciAddress> {
        if index >= MAX_NICS {
            return None;
        }
        PciAddress::new(0, FIRST_ROOT_PORT_SLOT + u8::try_from(index).ok()?, 0)
    }

    /// Where the hypervisor finds NIC `index`: device 0 of the bus below its root port. The
    /// hypervisor numbers buses depth-first in slot order and the root ports are the node's
    /// only bridges, so root port *i* leads to bus *i + 1*.
    pub fn nic_address(index: usize) -> Option<PciAddress> {
        if index >= MAX_NICS {
            return None;
        }
        PciAddress::new(u8::try_from(index + 1).ok()?, 0, 0)
    }

    /// NIC `index`'s MAC: `52:54:00:6d:76:<index>`, the same at every boot.
    pub fn nic_mac(index: usize) -> Mac {
        let [a, b, c, d, e] = MAC_PREFIX;
        Mac([a, b, c, d, e, index as u8])
    }

    /// The NIC at PCI address `address`, with its index, if there is one.
    pub fn nic_at(&self, address: PciAddress) -> Option<(usize, Nic)> {
        (0..self.nics.len())
            .find(|&i| Node::nic_address(i) == Some(address))
            .map(|i| (i, self.nics[i].clone()))
    }

    /// The PCI functions the hypervisor finds on this node, as `place_devices` takes them: the
    /// host bridge, the NVMe disks at [`Node::disk_address`] (the first one is the controller
    /// the hypervisor divides into `[slice.nvme]` shares: it takes the first NVMe function it
    /// finds), and whether an SMMUv3 guards them. This is the one place that knows which
    /// address QEMU gives which device; `qemu.rs` asks it. Then, per NIC, its root port at
    /// [`Node::root_port_address`] and the NIC at [`Node::nic_address`].
    pub fn pci_functions(&self) -> NodePci {
        let (class, vendor, device) = NVME_IDS;
        let disks = (0..self.disks.len()).filter_map(Node::disk_address);
        let mut functions = vec![HOST_BRIDGE];
        functions.extend(disks.clone().map(|address| PciFunction {
            address,
            class,
            vendor,
            device,
        }));
        for index in 0..self.nics.len() {
            let (Some(port), Some(nic)) =
                (Node::root_port_address(index), Node::nic_address(index))
            else {
                continue;
            };
            for (address, (class, vendor, device)) in [(port, ROOT_PORT_IDS), (nic, VIRTIO_NET_IDS)]
            {
                functions.push(PciFunction {
                    address,
                    class,
                    vendor,
                    device,
                });
            }
        }
        NodePci {
            functions,
            smmu: self.iommu == Some(Iommu::Smmuv3),
            hypervisor_nvme: disks.clone().next(),
            // QEMU's root ports implement ACS (the hypervisor turns it on) and every disk is
            // a single-function device of its own: each function is alone.
            isolation_groups: Vec::new(),
        }
    }

    /// The hardware a plan sees on this node, assuming the hypervisor keeps the first
    /// [`HYPERVISOR_RESERVE`] bytes of RAM (its real footprint is printed at boot).
    pub fn hardware(&self) -> microvisor_plan::Hardware {
        microvisor_plan::Hardware {
            cores: self.cores,
            free_ram: vec![microvisor_plan::RamRange {
                base: RAM_BASE + HYPERVISOR_RESERVE,
                size: self.memory.saturating_sub(HYPERVISOR_RESERVE),
            }],
            ram_total: self.memory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENSE: &str = r#"
description = "dense ARM server"
cores = 8
memory = "4GiB"
gic-version = 3
plan = "default-plan.toml"
[[disk]]
size = "8GiB"
"#;

    #[test]
    fn parses_a_profile() {
        let node = Node::from_toml("default", DENSE, Path::new("/q")).unwrap();
        assert_eq!(node.cores, 8);
        assert_eq!(node.memory, 4 << 30);
        assert_eq!(node.gic_version, 3);
        assert_eq!(
            node.plan.as_deref(),
            Some(Path::new("/q/default-plan.toml"))
        );
        assert_eq!(node.disks, vec![Disk { size: 8 << 30 }]);
        assert_eq!(node.iommu, None);
    }

    #[test]
    fn reads_the_iommu_and_refuses_unknown_ones() {
        let text = DENSE.replace("gic-version = 3", "gic-version = 3\niommu = \"smmuv3\"");
        let node = Node::from_toml("x", &text, Path::new(".")).unwrap();
        assert_eq!(node.iommu, Some(Iommu::Smmuv3));
        let other = DENSE.replace("gic-version = 3", "gic-version = 3\niommu = \"vt-d\"");
        assert!(Node::from_toml("x", &other, Path::new(".")).is_err());
    }

    fn function(address: &str, class: u32, vendor: u16, device: u16) -> PciFunction {
        PciFunction {
            address: PciAddress::parse(address).unwrap(),
            class,
            vendor,
            device,
        }
    }

    #[test]
    fn a_host_nic_may_name_a_tftp_root_relative_to_the_profile() {
        let text = format!(
            "{DENSE}[[nic]]\nnetwork = \"host\"\ntftp = \"netboot\"\n[[nic]]\nnetwork = \"host\"\n"
        );
        let node = Node::from_toml("n", &text, Path::new("/q")).unwrap();
        assert_eq!(node.nics[0].tftp.as_deref(), Some(Path::new("/q/netboot")));
        assert_eq!(node.nics[1].tftp, None);
        let text = format!("{DENSE}[[nic]]\nnetwork = \"slices\"\ntftp = \"netboot\"\n");
        let err = Node::from_toml("n", &text, Path::new("/q")).unwrap_err();
        assert!(
            format!("{err}").contains("nic #1: tftp needs network = \"host\""),
            "{err}"
        );
    }

    #[test]
    fn pci_functions_of_the_default_node() {
        let ws_qemu = crate::workspace::source_root().join("qemu");
        let text = std::fs::read_to_string(ws_qemu.join("default.toml")).unwrap();
        let node = Node::from_toml("default", &text, &ws_qemu).unwrap();
        assert_eq!(node.iommu, Some(Iommu::Smmuv3));
        let networks: Vec<Network> = node.nics.iter().map(|n| n.network).collect();
        assert_eq!(
            networks,
            [
                Network::Slices,
                Network::Host,
                Network::Slices,
                Network::Host,
                Network::Host
            ]
        );
        let root_port = |a| function(a, 0x06_04_00, 0x1b36, 0x000c);
        let nic = |a| function(a, 0x02_00_00, 0x1af4, 0x1041);
        assert_eq!(
            node.pci_functions(),
            NodePci {
                functions: vec![
                    function("00:00.0", 0x06_00_00, 0x1b36, 0x0008),
                    function("00:02.0", 0x01_08_02, 0x1b36, 0x0010),
                    root_port("00:10.0"),
                    nic("01:00.0"),
                    root_port("00:11.0"),
                    nic("02:00.0"),
                    root_port("00:12.0"),
                    nic("03:00.0"),
                    root_port("00:13.0"),
                    nic("04:00.0"),
                    root_port("00:14.0"),
                    nic("05:00.0"),
                ],
                smmu: true,
                hypervisor_nvme: Some(PciAddress::parse("00:02.0").unwrap()),
                isolation_groups: Vec::new(),
            }
        );
        let at = |a| node.nic_at(PciAddress::parse(a).unwrap());
        assert_eq!(
            at("02:00.0").map(|(i, n)| (i, n.network)),
            Some((1, Network::Host))
        );
        assert_eq!(at("00:10.0"), None, "a root port is no NIC");
        assert_eq!(at("06:00.0"), None);
    }

    #[test]
    fn nics_get_root_ports_buses_and_stable_macs() {
        assert_eq!(Node::root_port_address(0), PciAddress::new(0, 0x10, 0));
        assert_eq!(Node::root_port_address(15), PciAddress::new(0, 0x1f, 0));
        assert_eq!(Node::root_port_address(16), None);
        assert_eq!(Node::nic_address(0), PciAddress::new(1, 0, 0));
        assert_eq!(Node::nic_address(15), PciAddress::new(16, 0, 0));
        assert_eq!(Node::nic_address(16), None);
        assert_eq!(Node::nic_mac(0).to_string(), "52:54:00:6d:76:00");
        assert_eq!(Node::nic_mac(11).to_string(), "52:54:00:6d:76:0b");
        let last_disk = Node::disk_address(MAX_DISKS - 1).unwrap();
        assert!(last_disk.device() < Node::root_port_address(0).unwrap().device());
        let text = DENSE.to_string() + &"[[nic]]\nnetwork = \"host\"\n".repeat(MAX_NICS + 1);
        let err = Node::from_toml("x", &text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("17 NICs, at most 16"), "{err}");
        let bad = DENSE.to_string() + "[[nic]]\nnetwork = \"internet\"\n";
        assert!(Node::from_toml("x", &bad, Path::new(".")).is_err());
    }

    #[test]
    fn pci_functions_of_a_node_with_disks_and_an_smmu() {
        let text = DENSE.replace("gic-version = 3", "gic-version = 3\niommu = \"smmuv3\"")
            + "[[disk]]\nsize = \"1GiB\"\n[[disk]]\nsize = \"1GiB\"\n";
        let node = Node::from_toml("x", &text, Path::new(".")).unwrap();
        let pci = node.pci_functions();
        assert!(pci.smmu);
        assert_eq!(pci.hypervisor_nvme, PciAddress::new(0, 2, 0));
        let addresses: Vec<String> = pci
            .functions
            .iter()
            .map(|f| f.address.to_string())
            .collect();
        assert_eq!(addresses, ["00:00.0", "00:02.0", "00:03.0", "00:04.0"]);
        let small = Node::inline("s", 2, 512 << 20).pci_functions();
        assert_eq!(
            small.functions,
            [function("00:00.0", 0x06_00_00, 0x1b36, 0x0008)]
        );
        assert_eq!((small.smmu, small.hypervisor_nvme), (false, None));
    }

    #[test]
    fn disk_addresses_stop_at_the_last_slot() {
        assert_eq!(Node::disk_address(0), PciAddress::new(0, 2, 0));
        assert_eq!(Node::disk_address(29), PciAddress::new(0, 31, 0));
        assert_eq!(Node::disk_address(30), None);
        assert_eq!(Node::disk_address(usize::MAX), None);
    }

    #[test]
    fn rejects_more_disks_than_supported() {
        let text = DENSE.to_string() + &"[[disk]]\nsize = 4096\n".repeat(MAX_DISKS);
        let err = Node::from_toml("x", &text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("9 disks, at most 8"), "{err}");
    }

    #[test]
    fn rejects_unknown_fields() {
        let text = format!("{DENSE}\nsockets = 2\n");
        let err = Node::from_toml("x", &text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sockets"), "{err}");
    }

    #[test]
    fn rejects_memory_that_is_not_whole_mib() {
        let text = DENSE.replace("\"4GiB\"", "1000000000");
        let err = Node::from_toml("x", &text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory"), "{err}");
    }

    #[test]
    fn rejects_zero_cores_and_other_gic_versions() {
        let zero = DENSE.replace("cores = 8", "cores = 0");
        assert!(Node::from_toml("x", &zero, Path::new(".")).is_err());
        let v2 = DENSE.replace("gic-version = 3", "gic-version = 2");
        assert!(Node::from_toml("x", &v2, Path::new(".")).is_err());
        let v4 = DENSE.replace("gic-version = 3", "gic-version = 4");
        assert_eq!(
            Node::from_toml("x", &v4, Path::new("."))
                .unwrap()
                .gic_version,
            4
        );
    }

    #[test]
    fn profiles_in_the_repository_parse() {
        let dir = crate::workspace::source_root().join("qemu");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            if path.extension().is_some_and(|e| e == "toml") && !text.contains("[[slice]]") {
                let node = Node::from_toml("x", &text, &dir)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                let plan = node.plan.expect("every profile names a default plan");
                assert!(
                    plan.is_file(),
                    "{} names missing {}",
                    path.display(),
                    plan.display()
                );
                seen += 1;
            }
        }
        assert!(
            seen >= 2,
            "expected at least the default and small profiles"
        );
    }
}
