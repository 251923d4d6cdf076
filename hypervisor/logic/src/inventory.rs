//! The node's hardware as the firmware device tree describes it (Devicetree Specification
//! v0.4; Linux bindings for `arm,gic-v3`, `arm,pl011`, `arm,psci`, `arm,armv8-timer`,
//! `pci-host-ecam-generic`, `arm,smmu-v3`, and `pci/pci-iommu.txt` / `pci/pci-msi.txt` for a
//! host bridge's `iommu-map` and `msi-map`), read with [`crate::dtb`]: without allocating, so that boot can
//! read it with the MMU still off, and without panicking on any input.

use heapless::Vec;

use crate::dtb::{Cells, DtbError, Node, Tree};

/// Most cores the hypervisor manages.
pub const MAX_CPUS: usize = 256;
/// Most separate RAM banks.
pub const MAX_RAM_BANKS: usize = 16;
/// Most reserved ranges (`/memreserve/` entries plus `/reserved-memory` children).
pub const MAX_RESERVED: usize = 16;

/// A physical address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub size: u64,
}

impl Region {
    pub const fn new(base: u64, size: u64) -> Self {
        Self { base, size }
    }

    /// First address after the region (saturating: a region never wraps).
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    pub const fn contains(&self, address: u64) -> bool {
        address >= self.base && address < self.end()
    }

    pub const fn overlaps(&self, other: &Region) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

/// How the firmware's PSCI is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Smc,
    Hvc,
}

/// The GICv3 (DT `arm,gic-v3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gic {
    pub distributor: Region,
    /// The first redistributor region (one 128 KiB frame pair per core on GICv3).
    pub redistributors: Region,
    /// The ITS, when present (`arm,gic-v3-its` child).
    pub its: Option<Region>,
}

/// The console UART (a PL011).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    pub registers: Region,
    /// Interrupt ID (SPI 1 on QEMU virt is INTID 33).
    pub intid: Option<u32>,
}

/// A PCIe host bridge (DT `pci-host-ecam-generic`, Linux binding
/// `pci/host-generic-pci.yaml` and the PCI bus binding's `ranges` encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcieHost {
    /// Configuration space, 1 MiB per bus from `bus_start`.
    pub ecam: Region,
    /// First bus number (`bus-range`).
    pub bus_start: u8,
    /// Last bus number (`bus-range`; 255 without one). Only buses that also have their 1 MiB
    /// inside `ecam` are reachable: see [`PcieHost::buses`].
    pub bus_end: u8,
    /// The 32-bit memory window: (PCI address, CPU address, size).
    pub mem32: Option<PciWindow>,
    /// The 64-bit memory window.
    pub mem64: Option<PciWindow>,
    /// Requester ID -> SMMU StreamID (`iommu-map`), when the bridge's functions sit behind an
    /// IOMMU.
    pub iommu_map: Option<IdMap>,
    /// Requester ID -> ITS DeviceID (`msi-map`); without one the DeviceID is the requester ID.
    pub msi_map: Option<IdMap>,
}

impl PcieHost {
    /// The ITS DeviceID of requester `rid`: through `msi-map` when there is one (`None` when
    /// the map leaves it out), else the requester ID itself.
    pub fn its_device_id(&self, rid: u16) -> Option<u32> {
        match &self.msi_map {
            Some(map) => map.map(rid).map(|m| m.id),
            None => Some(u32::from(rid)),
        }
    }
}

/// Most entries of an `iommu-map` or `msi-map` the inventory keeps.
pub const MAX_ID_MAP_ENTRIES: usize = 8;

/// One `(rid-base, phandle, out-base, length)` entry of an `iommu-map` / `msi-map`: requester
/// IDs `[rid_base, rid_base + length)` become IDs `[out_base, out_base + length)` of the node
/// `target` (a phandle).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdMapEntry {
    pub rid_base: u32,
    pub target: u32,
    pub out_base: u32,
    pub length: u32,
}

/// Where one requester ID goes: the target node's phandle and the ID there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMapping {
    pub target: u32,
    pub id: u32,
}

/// A PCI host bridge's `iommu-map` or `msi-map` with its `*-map-mask` (Linux bindings
/// `pci/pci-iommu.txt`, `pci/pci-msi.txt`). Only one-cell specifiers (`#iommu-cells` /
/// `#msi-cells` = 1, as for SMMUv3 and the GICv3 ITS) are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMap {
    entries: [IdMapEntry; MAX_ID_MAP_ENTRIES],
    len: usize,
    /// Applied to a requester ID before the lookup (default all ones).
    pub mask: u32,
}

impl IdMap {
    /// A map of `entries` (at most [`MAX_ID_MAP_ENTRIES`]) with `mask`.
    pub fn new(entries: &[IdMapEntry], mask: u32) -> Option<IdMap> {
        let mut map = IdMap {
            entries: [IdMapEntry::default(); MAX_ID_MAP_ENTRIES],
            len: entries.len(),
            mask,
        };
        map.entries
            .get_mut(..entries.len())?
            .copy_from_slice(entries);
        Some(map)
    }

    pub fn entries(&self) -> &[IdMapEntry] {
        &self.entries[..self.len]
    }

    /// Where requester `rid` goes: the first entry covering `rid & mask` (as Linux's
    /// `of_map_id` reads it), or `None` when no entry does.
    pub fn map(&self, rid: u16) -> Option<IdMapping> {
        let masked = u32::from(rid) & self.mask;
        self.entries().iter().find_map(|e| {
            let offset = masked.checked_sub(e.rid_base)?;
            (offset < e.length).then_some(())?;
            Some(IdMapping {
                target: e.target,
                id: e.out_base.checked_add(offset)?,
            })
        })
    }
}

/// A wired (SPI or PPI) interrupt of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WiredInterrupt {
    pub intid: u32,
    /// Edge-triggered (flags 1 or 2 of the GIC binding), else level-sensitive.
    pub edge: bool,
}

/// The SMMUv3's wired interrupts, by `interrupt-names` (binding `iommu/arm,smmu-v3.yaml`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmmuInterrupts {
    pub eventq: Option<WiredInterrupt>,
    pub gerror: Option<WiredInterrupt>,
    pub priq: Option<WiredInterrupt>,
    pub cmdq_sync: Option<WiredInterrupt>,
}

/// An SMMUv3 (DT `arm,smmu-v3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Smmu {
    /// The register frames (two 64 KiB pages).
    pub registers: Region,
    pub interrupts: SmmuInterrupts,
    /// Its `phandle`, which a host bridge's `iommu-map` names.
    pub phandle: Option<u32>,
    /// `dma-coherent`: its table and queue accesses snoop the CPU caches.
    pub coherent: bool,
}

impl PcieHost {
    /// The buses the hypervisor can reach: those of `bus-range` whose 1 MiB of configuration
    /// space lies inside `ecam` (PCIe Base 4.0 §7.2.2: bus `n` at `(n - bus_start) << 20`).
    /// None when ECAM is smaller than one bus.
    pub fn buses(&self) -> Option<core::ops::RangeInclusive<u8>> {
        let in_ecam = self.ecam.size >> 20;
        if in_ecam == 0 {
            return None;
        }
        let last_in_ecam = u64::from(self.bus_start) + (in_ecam - 1);
        let end = u64::from(self.bus_end).min(last_in_ecam) as u8;
        Some(self.bus_start..=end)
    }
}

/// One memory window of a host bridge: PCI bus addresses `[pci, pci + size)` appear at CPU
/// addresses `[cpu, cpu + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindow {
    pub pci: u64,
    pub cpu: u64,
    pub size: u64,
}

/// What the firmware DT says the node has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    /// MPIDR affinity value of each core (its `/cpus/cpu@*` `reg`), in DT order: the
    /// physical core index used by plans is the position in this list.
    pub cpus: Vec<u64, MAX_CPUS>,
    /// RAM banks, sorted by address.
    pub ram: Vec<Region, MAX_RAM_BANKS>,
    /// Memory the firmware keeps for itself (`/memreserve/`, `/reserved-memory`).
    pub reserved: Vec<Region, MAX_RESERVED>,
    pub gic: Gic,
    pub uart: Uart,
    pub psci: Conduit,
    pub pcie: Option<PcieHost>,
    /// The first available SMMUv3, if any.
    pub smmu: Option<Smmu>,
}

/// Why the firmware device tree cannot be used. Printed after `firmware device tree: `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventoryError {
    /// The blob is not a well-formed flattened device tree.
    Malformed(DtbError),
    /// No `/cpus/cpu@*` node with a `reg`.
    NoCpus,
    /// More cores than [`MAX_CPUS`].
    TooManyCpus,
    /// No `device_type = "memory"` node with a non-empty `reg`.
    NoMemory,
    /// More RAM banks or reserved ranges than the fixed tables hold.
    TooManyRegions,
    /// No `arm,gic-v3` interrupt controller with distributor and redistributor regions.
    NoGicV3,
    /// No PL011 UART to use as the console.
    NoUart,
    /// No `/psci` node with `method = "smc"` or `"hvc"`.
    NoPsci,
    /// A property the hypervisor needs cannot be decoded: cell sizes it does not support
    /// (addresses and sizes of more than two cells) or a length that is not whole entries.
    /// Names the node and property.
    Unreadable(&'static str),
}

impl core::fmt::Display for InventoryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed: {e}"),
            Self::NoCpus => f.write_str("no /cpus/cpu@* node with a reg"),
            Self::TooManyCpus => write!(f, "more than {MAX_CPUS} cpus"),
            Self::NoMemory => {
                f.write_str("no memory node (device_type \"memory\") with a non-empty reg")
            }
            Self::TooManyRegions => write!(
                f,
                "more than {MAX_RAM_BANKS} RAM banks or {MAX_RESERVED} reserved ranges"
            ),
            Self::NoGicV3 => f.write_str(
                "no GICv3 (an arm,gic-v3 node with distributor and redistributor regions)",
            ),
            Self::NoUart => f.write_str("no PL011 UART (arm,pl011) for the console"),
            Self::NoPsci => f.write_str("no /psci node with method \"smc\" or \"hvc\""),
            Self::Unreadable(what) => write!(
                f,
                "cannot read {what} (more than 2 address or size cells, or not whole entries)"
            ),
        }
    }
}

impl Inventory {
    /// Reads the inventory from a flattened device tree. Never inlined: boot calls it on its
    /// 32 KiB boot stack, which must not keep the reader's temporaries for the rest of the boot.
    #[inline(never)]
    pub fn from_dtb(dtb: &[u8]) -> Result<Self, InventoryError> {
        let tree = Tree::new(dtb).map_err(InventoryError::Malformed)?;
        let landmarks = Landmarks::find(&tree);
        Ok(Self {
            cpus: cpus(&landmarks)?,
            ram: ram(&tree)?,
            reserved: reserved(&tree, &landmarks)?,
            gic: gic(&landmarks)?,
            uart: uart(&tree, &landmarks)?,
            psci: psci(&landmarks)?,
            pcie: pcie(&landmarks)?,
            smmu: smmu(&landmarks)?,
        })
    }

    /// The SMMU StreamID of requester `rid` on the host bridge: its `iommu-map` entry, when
    /// that entry names this node's SMMU. `None`: the function is not behind the SMMU.
    pub fn stream_id(&self, rid: u16) -> Option<u32> {
        let smmu = self.smmu.as_ref()?;
        let mapping = self.pcie.as_ref()?.iommu_map.as_ref()?.map(rid)?;
        (Some(mapping.target) == smmu.phandle).then_some(mapping.id)
    }

    /// Total bytes of RAM (saturating: a tree may claim banks that add up past 2^64).
    pub fn ram_total(&self) -> u64 {
        self.ram
            .iter()
            .fold(0u64, |total, r| total.saturating_add(r.size))
    }

    /// Physical core index of the core with this MPIDR (affinity fields only).
    pub fn core_index(&self, mpidr: u64) -> Option<usize> {
        let affinity = mpidr & MPIDR_AFFINITY_MASK;
        self.cpus.iter().position(|&c| c == affinity)
    }
}

/// What boot can still use to report a failure when the inventory cannot be read: the
/// console UART and the PSCI conduit, each when the tree is well formed and names it readably.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Salvage {
    pub uart: Option<Region>,
    pub psci: Option<Conduit>,
}

impl Salvage {
    /// Reads what it can of `dtb`; never fails.
    pub fn from_dtb(dtb: &[u8]) -> Salvage {
        let Ok(tree) = Tree::new(dtb) else {
            return Salvage {
                uart: None,
                psci: None,
            };
        };
        let landmarks = Landmarks::find(&tree);
        Salvage {
            uart: uart(&tree, &landmarks).ok().map(|u| u.registers),
            psci: psci(&landmarks).ok(),
        }
    }
}

/// Aff3 (bits 39:32) and Aff2..Aff0 (bits 23:0) of MPIDR_EL1.
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// A number of `cells` big-endian 32-bit cells at the start of `bytes` (0 cells read as 0).
fn read_cells(bytes: &[u8], cells: u32) -> Option<u64> {
    match cells {
        0 => Some(0),
        1 => Some(u64::from(u32::from_be_bytes(
            bytes.get(..4)?.try_into().ok()?,
        ))),
        2 => Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?)),
        _ => None,
    }
}

/// The `reg` entries of `node` (none without a `reg`), or [`InventoryError::Unreadable`]
/// naming `what` when the parent's cell sizes are unsupported or the value is not whole
/// entries.
fn regions<'a>(
    node: &Node<'a>,
    what: &'static str,
) -> Result<impl Iterator<Item = Region> + 'a, InventoryError> {
    let Cells { address, size } = node.parent_cells();
    let value = node.property("reg").unwrap_or_default();
    let entry = (address as usize + size as usize) * 4;
    if !(1..=2).contains(&address) || !(1..=2).contains(&size) || !value.len().is_multiple_of(entry)
    {
        return Err(InventoryError::Unreadable(what));
    }
    let offset = address as usize * 4;
    Ok(value.chunks_exact(entry).filter_map(move |raw| {
        Some(Region::new(
            read_cells(raw, address)?,
            read_cells(raw.get(offset..)?, size)?,
        ))
    }))
}

/// The first `reg` entry of `node`.
fn first_region(node: &Node<'_>, what: &'static str) -> Result<Option<Region>, InventoryError> {
    Ok(regions(node, what)?.next())
}

/// A child of the root found by name as [`Tree::find`] finds it: the child with exactly that
/// name, else the first whose name without its unit address is that name.
#[derive(Clone, Copy, Default)]
struct ByName<'a> {
    exact: Option<Node<'a>>,
    first: Option<Node<'a>>,
}

impl<'a> ByName<'a> {
    fn offer(&mut self, node: Node<'a>, wanted: &[u8]) {
        let name = node.name();
        if name == wanted {
            self.exact = self.exact.or(Some(node));
        } else if name.split(|&b| b == b'@').next() == Some(wanted) {
            self.first = self.first.or(Some(node));
        }
    }

    fn node(&self) -> Option<Node<'a>> {
        self.exact.or(self.first)
    }
}

/// The nodes the inventory starts from, found in one walk of the tree rather than one walk
/// per lookup: the root's children `/cpus`, `/reserved-memory`, `/chosen` and `/psci` (as
/// [`Tree::find`] finds them), and the first available node compatible with each device the
/// hypervisor drives (as [`find_compatible`] finds it).
#[derive(Clone, Copy, Default)]
struct Landmarks<'a> {
    cpus: ByName<'a>,
    reserved_memory: ByName<'a>,
    chosen: ByName<'a>,
    psci: ByName<'a>,
    gic: Option<Node<'a>>,
    pl011: Option<Node<'a>>,
    pcie: Option<Node<'a>>,
    smmu: Option<Node<'a>>,
}

impl<'a> Landmarks<'a> {
    fn find(tree: &Tree<'a>) -> Landmarks<'a> {
        let mut found = Landmarks::default();
        let root = tree.root();
        for node in tree.nodes() {
            if node.is_child_of(&root) {
                found.cpus.offer(node, b"cpus");
                found.reserved_memory.offer(node, b"reserved-memory");
                found.chosen.offer(node, b"chosen");
                found.psci.offer(node, b"psci");
            }
            let Some(compatible) = node.property("compatible") else {
                continue;
            };
            let lists = |wanted: &str| {
                compatible
                    .split(|&b| b == 0)
                    .any(|c| c == wanted.as_bytes())
            };
            for (slot, wanted) in [
                (&mut found.gic, "arm,gic-v3"),
                (&mut found.pl011, "arm,pl011"),
                (&mut found.pcie, "pci-host-ecam-generic"),
                (&mut found.smmu, "arm,smmu-v3"),
            ] {
                if slot.is_none() && lists(wanted) && node.is_available() {
                    *slot = Some(node);
                }
            }
        }
        found
    }
}

fn cpus(landmarks: &Landmarks<'_>) -> Result<Vec<u64, MAX_CPUS>, InventoryError> {
    let parent = landmarks.cpus.node().ok_or(InventoryError::NoCpus)?;
    let address_cells = parent.cells().address;
    let mut list = Vec::new();
    for node in parent.children() {
        let is_cpu = node.string("device_type") == Some(b"cpu") || node.name().starts_with(b"cpu@");
        if !is_cpu {
            continue;
        }
        let Some(reg) = node.property("reg") else {
            continue;
        };
        let mpidr = (1..=2)
            .contains(&address_cells)
            .then(|| read_cells(reg, address_cells))
            .flatten()
            .ok_or(InventoryError::Unreadable("the reg of a /cpus/cpu node"))?;
        list.push(mpidr & MPIDR_AFFINITY_MASK)
            .map_err(|_| InventoryError::TooManyCpus)?;
    }
    if list.is_empty() {
        return Err(InventoryError::NoCpus);
    }
    Ok(list)
}

/// RAM: the root's children with `device_type = "memory"` that are available (as Linux reads
/// them).
fn ram(tree: &Tree<'_>) -> Result<Vec<Region, MAX_RAM_BANKS>, InventoryError> {
    let mut banks: Vec<Region, MAX_RAM_BANKS> = Vec::new();
    for node in tree.root().children() {
        if node.string("device_type") != Some(b"memory") || !node.is_available() {
            continue;
        }
        for region in regions(&node, "the reg of a memory node")?.filter(|r| r.size > 0) {
            banks
                .push(region)
                .map_err(|_| InventoryError::TooManyRegions)?;
        }
    }
    if banks.is_empty() {
        return Err(InventoryError::NoMemory);
    }
    microvisor_plan::sort::sort_by_key(&mut banks, |r| r.base);
    Ok(banks)
}

fn reserved(
    tree: &Tree<'_>,
    landmarks: &Landmarks<'_>,
) -> Result<Vec<Region, MAX_RESERVED>, InventoryError> {
    let mut list: Vec<Region, MAX_RESERVED> = Vec::new();
    for (address, size) in tree.reservations() {
        list.push(Region::new(address, size))
            .map_err(|_| InventoryError::TooManyRegions)?;
    }
    if let Some(node) = landmarks.reserved_memory.node() {
        for child in node.children() {
            for region in regions(&child, "the reg of a /reserved-memory node")? {
                list.push(region)
                    .map_err(|_| InventoryError::TooManyRegions)?;
            }
        }
    }
    Ok(list)
}

/// The first available node compatible with `wanted`, anywhere in the tree.
#[cfg(test)]
fn find_compatible<'a>(tree: &Tree<'a>, wanted: &str) -> Option<Node<'a>> {
    tree.nodes()
        .find(|n| n.is_compatible(wanted) && n.is_available())
}

fn gic(landmarks: &Landmarks<'_>) -> Result<Gic, InventoryError> {
    let node = landmarks.gic.ok_or(InventoryError::NoGicV3)?;
    let mut reg = regions(&node, "the reg of the arm,gic-v3 node")?;
    let distributor = reg.next().ok_or(InventoryError::NoGicV3)?;
    let redistributors = reg.next().ok_or(InventoryError::NoGicV3)?;
    let its = match node
        .children()
        .find(|c| c.is_compatible("arm,gic-v3-its") && c.is_available())
    {
        Some(its) => first_region(&its, "the reg of the arm,gic-v3-its node")?,
        None => None,
    };
    Ok(Gic {
        distributor,
        redistributors,
        its,
    })
}

/// The console: the PL011 `/chosen/stdout-path` names (a path or an alias, options after `:`
/// ignored), else the first available PL011.
fn uart(tree: &Tree<'_>, landmarks: &Landmarks<'_>) -> Result<Uart, InventoryError> {
    let chosen = landmarks.chosen.node();
    let from_stdout = chosen
        .and_then(|c| {
            c.string("stdout-path")
                .or_else(|| c.string("linux,stdout-path"))
        })
        .and_then(|path| path.split(|&b| b == b':').next())
        .and_then(|path| tree.find(path))
        .filter(|n| n.is_compatible("arm,pl011"));
    let node = from_stdout
        .or(landmarks.pl011)
        .ok_or(InventoryError::NoUart)?;
    let registers =
        first_region(&node, "the reg of the arm,pl011 node")?.ok_or(InventoryError::NoUart)?;
    let intid = node.property("interrupts").and_then(spi_intid);
    Ok(Uart { registers, intid })
}

/// The INTID of the first interrupt in a 3-cell GIC `interrupts` property.
fn spi_intid(value: &[u8]) -> Option<u32> {
    let kind = read_cells(value, 1)?;
    let number = read_cells(value.get(4..)?, 1)? as u32;
    match kind {
        0 => number.checked_add(32),
        1 => number.checked_add(16),
        _ => None,
    }
}

fn psci(landmarks: &Landmarks<'_>) -> Result<Conduit, InventoryError> {
    let node = landmarks.psci.node().ok_or(InventoryError::NoPsci)?;
    match node.string("method") {
        Some(b"smc") => Ok(Conduit::Smc),
        Some(b"hvc") => Ok(Conduit::Hvc),
        _ => Err(InventoryError::NoPsci),
    }
}

/// The first available generic ECAM host bridge, if any. Its `ranges` entries are a 3-cell
/// PCI address (phys.hi with the space code, phys.mid, phys.lo), a parent address and a size
/// in the bridge's own `#size-cells`.
fn pcie(landmarks: &Landmarks<'_>) -> Result<Option<PcieHost>, InventoryError> {
    let Some(node) = landmarks.pcie else {
        return Ok(None);
    };
    let Some(ecam) = first_region(&node, "the reg of the pci-host-ecam-generic node")? else {
        return Ok(None);
    };
    let (bus_start, bus_end) = match node.property("bus-range") {
        None => (0, u8::MAX),
        Some(value) => {
            let bus =
                |at: usize| read_cells(value.get(at..)?, 1).and_then(|b| u8::try_from(b).ok());
            match (bus(0), bus(4)) {
                (Some(start), Some(end)) if start <= end && value.len() == 8 => (start, end),
                _ => {
                    return Err(InventoryError::Unreadable(
                        "the bus-range of the pci-host-ecam-generic node",
                    ));
                }
            }
        }
    };
    let unreadable = InventoryError::Unreadable("the ranges of the pci-host-ecam-generic node");
    let (own, parent) = (node.cells(), node.parent_cells().address);
    if own.address != 3 || !(1..=2).contains(&parent) || !(1..=2).contains(&own.size) {
        return Err(unreadable);
    }
    let entry = (3 + parent as usize + own.size as usize) * 4;
    let ranges = node.property("ranges").unwrap_or_default();
    if !ranges.len().is_multiple_of(entry) {
        return Err(unreadable);
    }
    let (mut mem32, mut mem64) = (None, None);
    for raw in ranges.chunks_exact(entry) {
        let window = || {
            Some(PciWindow {
                pci: read_cells(raw.get(4..)?, 2)?,
                cpu: read_cells(raw.get(12..)?, parent)?,
                size: read_cells(raw.get(12 + parent as usize * 4..)?, own.size)?,
            })
        };
        let space = read_cells(raw, 1).map_or(0, |flags| (flags >> 24) & 0b11);
        match space {
            0b10 => mem32 = mem32.or(window()),
            0b11 => mem64 = mem64.or(window()),
            _ => {}
        }
    }
    Ok(Some(PcieHost {
        ecam,
        bus_start,
        bus_end,
        mem32,
        mem64,
        iommu_map: id_map(
            &node,
            "iommu-map",
            "the iommu-map of the pci-host-ecam-generic node",
        )?,
        msi_map: id_map(
            &node,
            "msi-map",
            "the msi-map of the pci-host-ecam-generic node",
        )?,
    }))
}

/// A host bridge's `name` (`iommu-map` or `msi-map`) with its `name-mask`: `None` without
/// the property, [`InventoryError::Unreadable`] naming `what` when it is not whole 4-cell
/// entries, has more than [`MAX_ID_MAP_ENTRIES`], or has an entry whose range wraps.
fn id_map(
    node: &Node<'_>,
    name: &'static str,
    what: &'static str,
) -> Result<Option<IdMap>, InventoryError> {
    let Some(value) = node.property(name) else {
        return Ok(None);
    };
    let unreadable = InventoryError::Unreadable(what);
    if value.is_empty() || !value.len().is_multiple_of(16) || value.len() / 16 > MAX_ID_MAP_ENTRIES
    {
        return Err(unreadable);
    }
    let mut entries: Vec<IdMapEntry, MAX_ID_MAP_ENTRIES> = Vec::new();
    for raw in value.chunks_exact(16) {
        let cell = |i: usize| read_cells(raw.get(i * 4..)?, 1).map(|c| c as u32);
        let (Some(rid_base), Some(target), Some(out_base), Some(length)) =
            (cell(0), cell(1), cell(2), cell(3))
        else {
            return Err(unreadable);
        };
        if rid_base.checked_add(length).is_none() || out_base.checked_add(length).is_none() {
            return Err(unreadable);
        }
        entries
            .push(IdMapEntry {
                rid_base,
                target,
                out_base,
                length,
            })
            .map_err(|_| unreadable)?;
    }
    let mask = match name {
        "iommu-map" => node.property("iommu-map-mask"),
        _ => node.property("msi-map-mask"),
    };
    let mask = match mask {
        None => u32::MAX,
        Some(value) if value.len() == 4 => read_cells(value, 1).ok_or(unreadable)? as u32,
        Some(_) => return Err(unreadable),
    };
    IdMap::new(&entries, mask).map(Some).ok_or(unreadable)
}

/// The first available SMMUv3, if any: its first `reg` entry, its interrupts by name, its
/// phandle and whether it is `dma-coherent`. A node without `reg` is ignored.
fn smmu(landmarks: &Landmarks<'_>) -> Result<Option<Smmu>, InventoryError> {
    let Some(node) = landmarks.smmu else {
        return Ok(None);
    };
    let Some(registers) = first_region(&node, "the reg of the arm,smmu-v3 node")? else {
        return Ok(None);
    };
    let unreadable = InventoryError::Unreadable("the interrupts of the arm,smmu-v3 node");
    let mut interrupts = SmmuInterrupts::default();
    if let Some(value) = node.property("interrupts") {
        if !value.len().is_multiple_of(12) {
            return Err(unreadable);
        }
        let names = node.property("interrupt-names").unwrap_or_default();
        let names = names.split(|&b| b == 0);
        for (raw, name) in value.chunks_exact(12).zip(names) {
            let Some(interrupt) = gic_interrupt(raw) else {
                continue;
            };
            let slot = match name {
                b"eventq" => &mut interrupts.eventq,
                b"gerror" => &mut interrupts.gerror,
                b"priq" => &mut interrupts.priq,
                b"cmdq-sync" => &mut interrupts.cmdq_sync,
                _ => continue,
            };
            slot.get_or_insert(interrupt);
        }
    }
    let phandle = node
        .property("phandle")
        .filter(|v| v.len() == 4)
        .and_then(|v| read_cells(v, 1))
        .map(|p| p as u32);
    Ok(Some(Smmu {
        registers,
        interrupts,
        phandle,
        coherent: node.property("dma-coherent").is_some(),
    }))
}

/// One 3-cell GIC interrupt specifier (type, number, flags): its INTID and trigger.
fn gic_interrupt(raw: &[u8]) -> Option<WiredInterrupt> {
    let intid = spi_intid(raw)?;
    let flags = read_cells(raw.get(8..)?, 1)?;
    Some(WiredInterrupt {
        intid,
        edge: flags & 0b11 != 0,
    })
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dtb::writer::DtbWriter;
    use alloc::string::String;
    use alloc::vec::Vec as AllocVec;

    /// QEMU 10.0.2's own tree (`-M virt,virtualization=on,gic-version=3,dumpdtb=...`,
    /// `-smp 8 -m 4096M`), packed (see `testdata/README.md`).
    pub const QEMU_VIRT: &[u8] = include_bytes!("../testdata/qemu-virt.dtb");
    /// The same tree as QEMU hands it to the image with `-dtb`: its memory node replaced, the
    /// old one left as FDT_NOP tokens.
    pub const QEMU_VIRT_HANDOVER: &[u8] = include_bytes!("../testdata/qemu-virt-dtb-handover.dtb");
    /// QEMU 10.0.2's tree with `iommu=smmuv3` (same machine otherwise).
    pub const QEMU_VIRT_SMMUV3: &[u8] = include_bytes!("../testdata/qemu-virt-smmuv3.dtb");

    /// A device tree shaped like QEMU virt's (virtualization=on, gic-version=3), with knobs to
    /// leave parts out or make them odd.
    #[derive(Clone, Debug)]
    pub struct VirtTree {
        pub cpus: u32,
        /// `/cpus` `#address-cells` (QEMU: 1).
        pub cpu_address_cells: u32,
        /// RAM banks, each its own memory node.
        pub ram: AllocVec<(u64, u64)>,
        /// `/memreserve/` entries.
        pub reservations: AllocVec<(u64, u64)>,
        /// `/psci` `method`; `None` leaves the node out.
        pub psci: Option<&'static str>,
        pub gic: bool,
        pub uart: bool,
        /// The root's `#size-cells` (QEMU: 2).
        pub root_size_cells: u32,
        /// An SMMUv3 node and the host bridge's `iommu-map` naming it.
        pub smmu: bool,
        /// The host bridge's `iommu-map` cells (when `smmu`) and `msi-map` cells, raw.
        pub iommu_map: AllocVec<u32>,
        pub msi_map: Option<AllocVec<u32>>,
    }

    impl VirtTree {
        pub fn new(cpus: u32, ram: u64) -> Self {
            VirtTree {
                cpus,
                cpu_address_cells: 1,
                ram: alloc::vec![(0x4000_0000, ram)],
                reservations: alloc::vec![(0x4800_0000, 0x1000)],
                psci: Some("smc"),
                gic: true,
                uart: true,
                root_size_cells: 2,
                smmu: false,
                iommu_map: alloc::vec![0, SMMU_PHANDLE, 0, 0x10000],
                msi_map: None,
            }
        }

        pub fn build(&self) -> AllocVec<u8> {
            let mut w = DtbWriter::with_reservations(&self.reservations);
            let root = w.begin_node("").unwrap();
            w.property_u32("#address-cells", 2).unwrap();
            w.property_u32("#size-cells", self.root_size_cells).unwrap();
            let chosen = w.begin_node("chosen").unwrap();
            w.property_string("stdout-path", "/pl011@9000000").unwrap();
            w.end_node(chosen).unwrap();
            for &(base, size) in &self.ram {
                let mem = w.begin_node(&alloc::format!("memory@{base:x}")).unwrap();
                w.property_string("device_type", "memory").unwrap();
                w.property_array_u64("reg", &[base, size]).unwrap();
                w.end_node(mem).unwrap();
            }
            let c = w.begin_node("cpus").unwrap();
            w.property_u32("#address-cells", self.cpu_address_cells)
                .unwrap();
            w.property_u32("#size-cells", 0).unwrap();
            for i in 0..self.cpus {
                let n = w.begin_node(&alloc::format!("cpu@{i}")).unwrap();
                w.property_string("device_type", "cpu").unwrap();
                w.property_u32("reg", i).unwrap();
                w.end_node(n).unwrap();
            }
            w.end_node(c).unwrap();
            if let Some(method) = self.psci {
                let p = w.begin_node("psci").unwrap();
                w.property_string("method", method).unwrap();
                w.end_node(p).unwrap();
            }
            if self.gic {
                let g = w.begin_node("intc@8000000").unwrap();
                w.property_string("compatible", "arm,gic-v3").unwrap();
                w.property_u32("#address-cells", 2).unwrap();
                w.property_u32("#size-cells", 2).unwrap();
                w.property_array_u64("reg", &[0x800_0000, 0x1_0000, 0x80a_0000, 0xf6_0000])
                    .unwrap();
                let its = w.begin_node("its@8080000").unwrap();
                w.property_string("compatible", "arm,gic-v3-its").unwrap();
                w.property_array_u64("reg", &[0x808_0000, 0x2_0000])
                    .unwrap();
                w.end_node(its).unwrap();
                w.end_node(g).unwrap();
            }
            if self.uart {
                let u = w.begin_node("pl011@9000000").unwrap();
                w.property_strings("compatible", &["arm,pl011", "arm,primecell"])
                    .unwrap();
                w.property_array_u64("reg", &[0x900_0000, 0x1000]).unwrap();
                w.property_array_u32("interrupts", &[0, 1, 4]).unwrap();
                w.end_node(u).unwrap();
            }
            let pci = w.begin_node("pcie@10000000").unwrap();
            w.property_string("compatible", "pci-host-ecam-generic")
                .unwrap();
            w.property_u32("#address-cells", 3).unwrap();
            w.property_u32("#size-cells", 2).unwrap();
            w.property_array_u64("reg", &[0x40_1000_0000, 0x1000_0000])
                .unwrap();
            // QEMU virt's ranges: I/O, 32-bit memory, 64-bit memory.
            w.property_array_u32(
                "ranges",
                &[
                    0x0100_0000,
                    0,
                    0,
                    0,
                    0x3eff_0000,
                    0,
                    0x1_0000, //
                    0x0200_0000,
                    0,
                    0x1000_0000,
                    0,
                    0x1000_0000,
                    0,
                    0x2eff_0000, //
                    0x0300_0000,
                    0x80,
                    0,
                    0x80,
                    0,
                    0x80,
                    0,
                ],
            )
            .unwrap();
            w.property_array_u32("bus-range", &[0, 0xff]).unwrap();
            if self.smmu {
                w.property_array_u32("iommu-map", &self.iommu_map).unwrap();
            }
            if let Some(map) = &self.msi_map {
                w.property_array_u32("msi-map", map).unwrap();
            }
            w.end_node(pci).unwrap();
            if self.smmu {
                let s = w.begin_node("smmuv3@9050000").unwrap();
                w.property_string("compatible", "arm,smmu-v3").unwrap();
                w.property_array_u64("reg", &[0x905_0000, 0x2_0000])
                    .unwrap();
                w.property_array_u32(
                    "interrupts",
                    &[0, 0x4a, 1, 0, 0x4b, 1, 0, 0x4c, 1, 0, 0x4d, 1],
                )
                .unwrap();
                w.property_strings(
                    "interrupt-names",
                    &["eventq", "priq", "cmdq-sync", "gerror"],
                )
                .unwrap();
                w.property_null("dma-coherent").unwrap();
                w.property_u32("#iommu-cells", 1).unwrap();
                w.property_u32("phandle", SMMU_PHANDLE).unwrap();
                w.end_node(s).unwrap();
            }
            w.end_node(root).unwrap();
            w.finish().unwrap()
        }
    }

    /// The SMMU's phandle in generated trees (QEMU's own).
    pub const SMMU_PHANDLE: u32 = 0x800b;

    /// A QEMU-virt-shaped tree with `cpus` cores and `ram` bytes of RAM at 0x4000_0000.
    pub fn virt_dtb(cpus: u32, ram: u64) -> AllocVec<u8> {
        VirtTree::new(cpus, ram).build()
    }

    fn virt_with(change: impl FnOnce(&mut VirtTree)) -> AllocVec<u8> {
        let mut tree = VirtTree::new(1, 1 << 30);
        change(&mut tree);
        tree.build()
    }

    #[test]
    fn reachable_buses_are_in_bus_range_and_in_ecam() {
        let mut host = expected_pcie();
        assert_eq!(host.buses(), Some(0..=255));
        host.ecam.size = 16 << 20;
        assert_eq!(host.buses(), Some(0..=15), "ECAM holds 16 buses");
        host.bus_start = 2;
        host.bus_end = 5;
        assert_eq!(host.buses(), Some(2..=5));
        host.bus_start = 250;
        host.bus_end = 255;
        host.ecam.size = 256 << 20;
        assert_eq!(host.buses(), Some(250..=255));
        host.ecam.size = 0x8_0000;
        assert_eq!(host.buses(), None, "less than one bus");
    }

    fn expected_pcie() -> PcieHost {
        PcieHost {
            ecam: Region::new(0x40_1000_0000, 0x1000_0000),
            bus_start: 0,
            bus_end: 0xff,
            mem32: Some(PciWindow {
                pci: 0x1000_0000,
                cpu: 0x1000_0000,
                size: 0x2eff_0000,
            }),
            mem64: Some(PciWindow {
                pci: 0x80_0000_0000,
                cpu: 0x80_0000_0000,
                size: 0x80_0000_0000,
            }),
            iommu_map: None,
            msi_map: None,
        }
    }

    #[test]
    fn reads_a_virt_node() {
        let inv = Inventory::from_dtb(&virt_dtb(8, 4 << 30)).unwrap();
        assert_eq!(inv.cpus.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(inv.ram.as_slice(), &[Region::new(0x4000_0000, 4 << 30)]);
        assert_eq!(inv.ram_total(), 4 << 30);
        assert_eq!(inv.reserved.as_slice(), &[Region::new(0x4800_0000, 0x1000)]);
        assert_eq!(inv.gic.distributor, Region::new(0x800_0000, 0x1_0000));
        assert_eq!(inv.gic.redistributors, Region::new(0x80a_0000, 0xf6_0000));
        assert_eq!(inv.gic.its, Some(Region::new(0x808_0000, 0x2_0000)));
        assert_eq!(
            inv.uart,
            Uart {
                registers: Region::new(0x900_0000, 0x1000),
                intid: Some(33)
            }
        );
        assert_eq!(inv.psci, Conduit::Smc);
        assert_eq!(inv.pcie, Some(expected_pcie()));
        assert_eq!(inv.core_index(0x8000_0003), Some(3));
        assert_eq!(inv.core_index(0x8000_0100), None);
    }

    /// What QEMU virt with `-smp 8 -m 4096M` has, whichever way its tree arrives.
    fn assert_qemu_virt_8_cores_4_gib(inv: &Inventory) {
        assert_eq!(inv.cpus.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(inv.ram.as_slice(), &[Region::new(0x4000_0000, 4 << 30)]);
        assert!(inv.reserved.is_empty());
        assert_eq!(inv.gic.distributor, Region::new(0x800_0000, 0x1_0000));
        assert_eq!(inv.gic.redistributors, Region::new(0x80a_0000, 0xf6_0000));
        assert_eq!(inv.gic.its, Some(Region::new(0x808_0000, 0x2_0000)));
        assert_eq!(
            inv.uart,
            Uart {
                registers: Region::new(0x900_0000, 0x1000),
                intid: Some(33)
            }
        );
        assert_eq!(inv.psci, Conduit::Smc);
        let pcie = inv.pcie.unwrap();
        assert_eq!(
            PcieHost {
                msi_map: None,
                ..pcie
            },
            expected_pcie()
        );
        assert_eq!(
            pcie.msi_map.unwrap().entries(),
            &[IdMapEntry {
                rid_base: 0,
                target: 0x800a,
                out_base: 0,
                length: 0x10000
            }]
        );
        assert_eq!(pcie.its_device_id(0x0100), Some(0x100));
        assert_eq!(inv.smmu, None);
        assert_eq!(inv.stream_id(0x10), None);
    }

    #[test]
    fn reads_qemus_own_tree() {
        assert_qemu_virt_8_cores_4_gib(&Inventory::from_dtb(QEMU_VIRT).unwrap());
    }

    #[test]
    fn reads_the_tree_qemu_hands_over_with_dtb_nops_and_all() {
        // The regression behind "silent death with -dtb": QEMU replaces the memory node of a
        // loaded tree and leaves the old one as FDT_NOP tokens, which the `fdt` crate walked
        // into and lost /cpus.
        let structure = &QEMU_VIRT_HANDOVER[0x40..];
        assert!(
            structure
                .chunks_exact(4)
                .filter(|w| *w == [0, 0, 0, 4])
                .count()
                > 50,
            "the fixture has lost its NOPs"
        );
        let handed_over = Inventory::from_dtb(QEMU_VIRT_HANDOVER).unwrap();
        assert_qemu_virt_8_cores_4_gib(&handed_over);
        assert_eq!(handed_over, Inventory::from_dtb(QEMU_VIRT).unwrap());
    }

    #[test]
    fn reads_qemus_tree_with_an_smmuv3() {
        let inv = Inventory::from_dtb(QEMU_VIRT_SMMUV3).unwrap();
        let smmu = inv.smmu.unwrap();
        assert_eq!(smmu.registers, Region::new(0x905_0000, 0x2_0000));
        assert_eq!(smmu.phandle, Some(0x800b));
        assert!(smmu.coherent);
        let edge = |spi: u32| {
            Some(WiredInterrupt {
                intid: 32 + spi,
                edge: true,
            })
        };
        assert_eq!(
            smmu.interrupts,
            SmmuInterrupts {
                eventq: edge(0x4a),
                priq: edge(0x4b),
                cmdq_sync: edge(0x4c),
                gerror: edge(0x4d),
            }
        );
        let pcie = inv.pcie.unwrap();
        assert_eq!(
            pcie.iommu_map.unwrap().entries(),
            &[IdMapEntry {
                rid_base: 0,
                target: 0x800b,
                out_base: 0,
                length: 0x10000
            }]
        );
        // StreamID = ITS DeviceID = requester ID (platform facts).
        for (bdf, id) in [
            ((0, 1, 0), 0x8),
            ((1, 0, 0), 0x100),
            ((0xff, 31, 7), 0xffff),
        ] {
            let rid = crate::pci::Bdf::new(bdf.0, bdf.1, bdf.2).requester_id();
            assert_eq!(inv.stream_id(rid), Some(id));
            assert_eq!(pcie.its_device_id(rid), Some(id));
        }
    }

    #[test]
    fn id_maps_in_their_general_form() {
        // Two ranges, one offset, one naming another IOMMU, with a mask.
        let dtb = virt_with(|t| {
            t.smmu = true;
            t.iommu_map = alloc::vec![
                0x0000,
                SMMU_PHANDLE,
                0x1000,
                0x100, //
                0x0100,
                0x1234,
                0,
                0x100, //
                0x0200,
                SMMU_PHANDLE,
                0x8000,
                0x200,
            ];
            t.msi_map = Some(alloc::vec![0x0100, 0x800a, 0x40, 0x10]);
        });
        let inv = Inventory::from_dtb(&dtb).unwrap();
        assert_eq!(inv.stream_id(0x0008), Some(0x1008));
        assert_eq!(inv.stream_id(0x00ff), Some(0x10ff));
        assert_eq!(inv.stream_id(0x0108), None, "another IOMMU's range");
        assert_eq!(inv.stream_id(0x0200), Some(0x8000));
        assert_eq!(inv.stream_id(0x03ff), Some(0x81ff));
        assert_eq!(inv.stream_id(0x0400), None, "past every range");
        let pcie = inv.pcie.unwrap();
        assert_eq!(pcie.its_device_id(0x0105), Some(0x45));
        assert_eq!(pcie.its_device_id(0x0110), None);
        assert_eq!(pcie.its_device_id(0x0000), None);
        let mut masked = pcie.iommu_map.unwrap();
        masked.mask = 0xff;
        assert_eq!(masked.map(0x0308).map(|m| m.id), Some(0x1008));
    }

    #[test]
    fn malformed_id_maps_are_refused_by_name() {
        let iommu = InventoryError::Unreadable("the iommu-map of the pci-host-ecam-generic node");
        for cells in [
            alloc::vec![],
            alloc::vec![0, SMMU_PHANDLE, 0],
            alloc::vec![0, SMMU_PHANDLE, 0, 0x10000, 1],
            alloc::vec![0xffff_0000, SMMU_PHANDLE, 0, 0x10_0000],
            alloc::vec![0, SMMU_PHANDLE, 0xffff_ffff, 2],
            (0..MAX_ID_MAP_ENTRIES as u32 + 1)
                .flat_map(|i| [i, SMMU_PHANDLE, i, 1])
                .collect(),
        ] {
            let dtb = virt_with(|t| {
                t.smmu = true;
                t.iommu_map = cells.clone();
            });
            assert_eq!(Inventory::from_dtb(&dtb), Err(iommu), "{cells:x?}");
        }
        let dtb = virt_with(|t| t.msi_map = Some(alloc::vec![0, 1]));
        assert_eq!(
            Inventory::from_dtb(&dtb),
            Err(InventoryError::Unreadable(
                "the msi-map of the pci-host-ecam-generic node"
            ))
        );
    }

    #[test]
    fn an_smmu_without_names_or_phandle_maps_nothing() {
        let mut w = DtbWriter::new();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        let s = w.begin_node("smmu@1000").unwrap();
        w.property_string("compatible", "arm,smmu-v3").unwrap();
        w.property_array_u32("reg", &[0x1000, 0x2_0000]).unwrap();
        w.property_array_u32("interrupts", &[0, 5, 4, 0, 6, 4])
            .unwrap();
        w.property_strings("interrupt-names", &["gerror"]).unwrap();
        w.end_node(s).unwrap();
        w.end_node(root).unwrap();
        let dtb = w.finish().unwrap();
        let tree = Tree::new(&dtb).unwrap();
        let smmu = smmu(&Landmarks::find(&tree)).unwrap().unwrap();
        assert_eq!(smmu.registers, Region::new(0x1000, 0x2_0000));
        assert_eq!(smmu.phandle, None);
        assert!(!smmu.coherent);
        assert_eq!(
            smmu.interrupts,
            SmmuInterrupts {
                gerror: Some(WiredInterrupt {
                    intid: 37,
                    edge: false
                }),
                ..SmmuInterrupts::default()
            }
        );
    }

    #[test]
    fn hvc_conduit() {
        let inv = Inventory::from_dtb(&virt_with(|t| t.psci = Some("hvc"))).unwrap();
        assert_eq!(inv.psci, Conduit::Hvc);
    }

    #[test]
    fn ram_banks_are_sorted_and_empty_ones_dropped() {
        let dtb = virt_with(|t| {
            t.ram = alloc::vec![
                (0x1_0000_0000, 1 << 30),
                (0x4000_0000, 1 << 30),
                (0x9000_0000, 0)
            ]
        });
        let inv = Inventory::from_dtb(&dtb).unwrap();
        assert_eq!(
            inv.ram.as_slice(),
            &[
                Region::new(0x4000_0000, 1 << 30),
                Region::new(0x1_0000_0000, 1 << 30)
            ]
        );
    }

    /// Found by an invariant of the `inventory` fuzz target (`ram_total` is the saturating sum
    /// of the banks): banks adding up past 2^64 overflowed the sum (a panic with overflow
    /// checks, a wrapped total for the boot banner and the placement messages without).
    #[test]
    fn ram_total_saturates() {
        let dtb = virt_with(|t| {
            t.ram = alloc::vec![
                (0x4000_0000, 1 << 30),
                (1 << 62, 1 << 63),
                (1 << 63, 1 << 63)
            ]
        });
        let inv = Inventory::from_dtb(&dtb).unwrap();
        assert_eq!(inv.ram.len(), 3);
        assert_eq!(inv.ram_total(), u64::MAX);
    }

    #[test]
    fn two_cell_cpu_addresses() {
        let inv = Inventory::from_dtb(&virt_with(|t| {
            t.cpus = 2;
            t.cpu_address_cells = 2
        }));
        // vm-fdt writes each cpu's reg as one cell: a 2-cell parent makes it unreadable.
        assert_eq!(
            inv,
            Err(InventoryError::Unreadable("the reg of a /cpus/cpu node"))
        );
    }

    // One test per InventoryError variant.

    #[test]
    fn malformed_tree() {
        assert_eq!(
            Inventory::from_dtb(&[0u8; 64]),
            Err(InventoryError::Malformed(DtbError::BadMagic))
        );
        assert_eq!(
            Inventory::from_dtb(&[]),
            Err(InventoryError::Malformed(DtbError::Truncated))
        );
    }

    #[test]
    fn no_cpus() {
        assert_eq!(
            Inventory::from_dtb(&virt_dtb(0, 1 << 30)),
            Err(InventoryError::NoCpus)
        );
    }

    #[test]
    fn too_many_cpus() {
        assert_eq!(
            Inventory::from_dtb(&virt_dtb(257, 1 << 30)),
            Err(InventoryError::TooManyCpus)
        );
    }

    #[test]
    fn no_memory() {
        assert_eq!(
            Inventory::from_dtb(&virt_dtb(1, 0)),
            Err(InventoryError::NoMemory)
        );
    }

    #[test]
    fn too_many_regions() {
        let banks = (0..MAX_RAM_BANKS as u64 + 1)
            .map(|i| (0x4000_0000 + (i << 30), 1 << 30))
            .collect();
        assert_eq!(
            Inventory::from_dtb(&virt_with(|t| t.ram = banks)),
            Err(InventoryError::TooManyRegions)
        );
        let reservations = (0..MAX_RESERVED as u64 + 1)
            .map(|i| (0x4800_0000 + (i << 12), 0x1000))
            .collect();
        assert_eq!(
            Inventory::from_dtb(&virt_with(|t| t.reservations = reservations)),
            Err(InventoryError::TooManyRegions)
        );
    }

    #[test]
    fn no_gic_v3() {
        assert_eq!(
            Inventory::from_dtb(&virt_with(|t| t.gic = false)),
            Err(InventoryError::NoGicV3)
        );
    }

    #[test]
    fn no_uart() {
        assert_eq!(
            Inventory::from_dtb(&virt_with(|t| t.uart = false)),
            Err(InventoryError::NoUart)
        );
    }

    #[test]
    fn no_psci() {
        assert_eq!(
            Inventory::from_dtb(&virt_with(|t| t.psci = Some("none"))),
            Err(InventoryError::NoPsci)
        );
        assert_eq!(
            Inventory::from_dtb(&virt_with(|t| t.psci = None)),
            Err(InventoryError::NoPsci)
        );
    }

    #[test]
    fn unreadable() {
        assert_eq!(
            Inventory::from_dtb(&virt_with(|t| t.root_size_cells = 3)),
            Err(InventoryError::Unreadable("the reg of a memory node"))
        );
    }

    #[test]
    fn every_error_names_its_reason() {
        let errors = [
            InventoryError::Malformed(DtbError::BadMagic),
            InventoryError::NoCpus,
            InventoryError::TooManyCpus,
            InventoryError::NoMemory,
            InventoryError::TooManyRegions,
            InventoryError::NoGicV3,
            InventoryError::NoUart,
            InventoryError::NoPsci,
            InventoryError::Unreadable("the reg of a memory node"),
        ];
        let texts: AllocVec<String> = errors.iter().map(|e| alloc::format!("{e}")).collect();
        assert_eq!(texts[0], "malformed: bad magic (not 0xd00dfeed)");
        assert!(texts[8].starts_with("cannot read the reg of a memory node"));
        for (i, text) in texts.iter().enumerate() {
            assert!(!text.is_empty());
            assert!(texts[..i].iter().all(|other| other != text), "{text}");
        }
    }

    #[test]
    fn salvage_finds_console_and_conduit_of_an_unusable_tree() {
        let dtb = virt_with(|t| t.gic = false);
        assert!(Inventory::from_dtb(&dtb).is_err());
        assert_eq!(
            Salvage::from_dtb(&dtb),
            Salvage {
                uart: Some(Region::new(0x900_0000, 0x1000)),
                psci: Some(Conduit::Smc)
            }
        );
        let dtb = virt_with(|t| t.psci = None);
        assert_eq!(Salvage::from_dtb(&dtb).psci, None);
        assert_eq!(
            Salvage::from_dtb(&[0xd0, 0x0d, 0xfe, 0xed]),
            Salvage {
                uart: None,
                psci: None
            }
        );
    }

    #[test]
    fn stdout_path_may_be_an_alias_with_options() {
        // A second PL011 first in the tree; stdout-path names the other one through an alias.
        let mut w = DtbWriter::new();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        for base in [0x1000u32, 0x2000] {
            let u = w.begin_node(&alloc::format!("serial@{base:x}")).unwrap();
            w.property_string("compatible", "arm,pl011").unwrap();
            w.property_array_u32("reg", &[base, 0x1000]).unwrap();
            w.end_node(u).unwrap();
        }
        let aliases = w.begin_node("aliases").unwrap();
        w.property_string("serial0", "/serial@2000").unwrap();
        w.end_node(aliases).unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        w.property_string("stdout-path", "serial0:115200n8")
            .unwrap();
        w.end_node(chosen).unwrap();
        w.end_node(root).unwrap();
        let dtb = w.finish().unwrap();
        let tree = Tree::new(&dtb).unwrap();
        assert_eq!(
            uart(&tree, &Landmarks::find(&tree)).unwrap().registers,
            Region::new(0x2000, 0x1000)
        );
    }

    /// The one walk finds what a lookup per node finds: by name as [`Tree::find`] (an exact
    /// name before an earlier one with a unit address), by compatible as [`find_compatible`]
    /// (available nodes only, the first in blob order).
    #[test]
    fn landmarks_are_what_each_lookup_finds() {
        let mut w = DtbWriter::new();
        let root = w.begin_node("").unwrap();
        for name in ["psci@1", "psci", "chosen@0", "cpus@2"] {
            let n = w.begin_node(name).unwrap();
            w.end_node(n).unwrap();
        }
        for (name, status) in [("a", "disabled"), ("b", "okay"), ("c", "okay")] {
            let n = w.begin_node(name).unwrap();
            w.property_strings("compatible", &["vendor,x", "arm,smmu-v3"])
                .unwrap();
            w.property_string("status", status).unwrap();
            let inner = w.begin_node("gic").unwrap();
            w.property_string("compatible", "arm,gic-v3").unwrap();
            w.end_node(inner).unwrap();
            w.end_node(n).unwrap();
        }
        w.end_node(root).unwrap();
        let made = w.finish().unwrap();
        let virt = virt_dtb(4, 1 << 30);
        for dtb in [QEMU_VIRT, QEMU_VIRT_HANDOVER, &virt, &made] {
            let tree = Tree::new(dtb).unwrap();
            let found = Landmarks::find(&tree);
            fn name<'a>(n: Option<Node<'a>>) -> Option<(&'a [u8], Option<&'a [u8]>)> {
                n.map(|n| (n.name(), n.property("reg")))
            }
            for (by_name, path) in [
                (found.cpus, &b"/cpus"[..]),
                (found.reserved_memory, b"/reserved-memory"),
                (found.chosen, b"/chosen"),
                (found.psci, b"/psci"),
            ] {
                assert_eq!(name(by_name.node()), name(tree.find(path)), "{path:?}");
            }
            for (first, wanted) in [
                (found.gic, "arm,gic-v3"),
                (found.pl011, "arm,pl011"),
                (found.pcie, "pci-host-ecam-generic"),
                (found.smmu, "arm,smmu-v3"),
            ] {
                assert_eq!(
                    name(first),
                    name(find_compatible(&tree, wanted)),
                    "{wanted}"
                );
            }
        }
        let tree = Tree::new(&made).unwrap();
        let found = Landmarks::find(&tree);
        assert_eq!(found.psci.node().map(|n| n.name()), Some(&b"psci"[..]));
        assert_eq!(
            found.chosen.node().map(|n| n.name()),
            Some(&b"chosen@0"[..])
        );
        assert_eq!(found.smmu.map(|n| n.name()), Some(&b"b"[..]));
        assert_eq!(found.gic.map(|n| n.name()), Some(&b"gic"[..]));
    }

    #[test]
    fn disabled_devices_are_ignored() {
        let mut w = DtbWriter::new();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        for (base, status) in [(0x1000u32, "disabled"), (0x2000, "okay")] {
            let u = w.begin_node(&alloc::format!("serial@{base:x}")).unwrap();
            w.property_string("compatible", "arm,pl011").unwrap();
            w.property_string("status", status).unwrap();
            w.property_array_u32("reg", &[base, 0x1000]).unwrap();
            w.end_node(u).unwrap();
        }
        w.end_node(root).unwrap();
        let dtb = w.finish().unwrap();
        let tree = Tree::new(&dtb).unwrap();
        assert_eq!(
            uart(&tree, &Landmarks::find(&tree)).unwrap().registers,
            Region::new(0x2000, 0x1000)
        );
    }

    #[test]
    fn region_arithmetic() {
        let r = Region::new(0x1000, 0x1000);
        assert!(r.contains(0x1fff) && !r.contains(0x2000));
        assert!(r.overlaps(&Region::new(0x1800, 0x10)) && !r.overlaps(&Region::new(0x2000, 0x10)));
        assert_eq!(Region::new(u64::MAX - 1, 10).end(), u64::MAX);
    }
}
