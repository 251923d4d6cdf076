//! The node's hardware as the firmware device tree describes it (Devicetree Specification
//! v0.4; Linux bindings for `arm,gic-v3`, `arm,pl011`, `arm,psci`, `arm,armv8-timer`,
//! `pci-host-ecam-generic`). Parsed without allocating, so that boot can read it with the MMU
//! still off.

use fdt::Fdt;
use fdt::node::FdtNode;
use heapless::Vec;

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
    /// The 32-bit memory window: (PCI address, CPU address, size).
    pub mem32: Option<PciWindow>,
    /// The 64-bit memory window.
    pub mem64: Option<PciWindow>,
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
}

/// Why the firmware device tree cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventoryError {
    /// Not a flattened device tree (bad magic or truncated header).
    NotADeviceTree,
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
}

impl core::fmt::Display for InventoryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let text = match self {
            Self::NotADeviceTree => "x0 does not point at a flattened device tree",
            Self::NoCpus => "the device tree lists no cpus",
            Self::TooManyCpus => "the device tree lists more than 256 cpus",
            Self::NoMemory => "the device tree describes no memory",
            Self::TooManyRegions => "the device tree describes too many memory or reserved regions",
            Self::NoGicV3 => "the device tree has no GICv3 (arm,gic-v3)",
            Self::NoUart => "the device tree has no PL011 UART",
            Self::NoPsci => "the device tree has no /psci node with an smc or hvc method",
        };
        f.write_str(text)
    }
}

impl Inventory {
    /// Reads the inventory from a flattened device tree.
    pub fn from_dtb(dtb: &[u8]) -> Result<Self, InventoryError> {
        let fdt = Fdt::new(dtb).map_err(|_| InventoryError::NotADeviceTree)?;
        Ok(Self {
            cpus: cpus(&fdt)?,
            ram: ram(&fdt)?,
            reserved: reserved(&fdt)?,
            gic: gic(&fdt)?,
            uart: uart(&fdt)?,
            psci: psci(&fdt)?,
            pcie: pcie(&fdt),
        })
    }

    /// Total bytes of RAM.
    pub fn ram_total(&self) -> u64 {
        self.ram.iter().map(|r| r.size).sum()
    }

    /// Physical core index of the core with this MPIDR (affinity fields only).
    pub fn core_index(&self, mpidr: u64) -> Option<usize> {
        let affinity = mpidr & MPIDR_AFFINITY_MASK;
        self.cpus.iter().position(|&c| c == affinity)
    }
}

/// Aff3 (bits 39:32) and Aff2..Aff0 (bits 23:0) of MPIDR_EL1.
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// Total size of the flattened device tree at the start of `header` (its `totalsize`), read
/// from the first 8 bytes only.
pub fn dtb_total_size(header: &[u8; 8]) -> Option<usize> {
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    (magic == 0xd00d_feed)
        .then(|| u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize)
}

fn be_cells(bytes: &[u8], cells: usize) -> Option<u64> {
    match cells {
        1 => Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as u64),
        2 => Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?)),
        _ => None,
    }
}

/// The `reg` entries of `node` as regions (parent's #address-cells / #size-cells <= 2).
fn regions<'a>(node: FdtNode<'_, 'a>) -> impl Iterator<Item = Region> + 'a {
    node.raw_reg().into_iter().flatten().filter_map(|raw| {
        let base = be_cells(raw.address, raw.address.len() / 4)?;
        let size = be_cells(raw.size, raw.size.len() / 4)?;
        Some(Region::new(base, size))
    })
}

fn has_compatible(node: &FdtNode<'_, '_>, wanted: &str) -> bool {
    node.compatible()
        .is_some_and(|c| c.all().any(|s| s == wanted))
}

fn string_property<'a>(node: &FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    let value = node.property(name)?.value;
    let text = value.split(|&b| b == 0).next()?;
    core::str::from_utf8(text).ok()
}

fn cpus(fdt: &Fdt<'_>) -> Result<Vec<u64, MAX_CPUS>, InventoryError> {
    let parent = fdt.find_node("/cpus").ok_or(InventoryError::NoCpus)?;
    let address_cells = parent.cell_sizes().address_cells;
    let mut list = Vec::new();
    for node in parent.children() {
        let is_cpu =
            string_property(&node, "device_type") == Some("cpu") || node.name.starts_with("cpu@");
        if !is_cpu {
            continue;
        }
        let Some(reg) = node.property("reg") else {
            continue;
        };
        let mpidr = be_cells(reg.value, address_cells).ok_or(InventoryError::NoCpus)?;
        list.push(mpidr & MPIDR_AFFINITY_MASK)
            .map_err(|_| InventoryError::TooManyCpus)?;
    }
    if list.is_empty() {
        return Err(InventoryError::NoCpus);
    }
    Ok(list)
}

fn ram(fdt: &Fdt<'_>) -> Result<Vec<Region, MAX_RAM_BANKS>, InventoryError> {
    let mut banks: Vec<Region, MAX_RAM_BANKS> = Vec::new();
    for node in fdt.all_nodes() {
        if string_property(&node, "device_type") != Some("memory") {
            continue;
        }
        for region in regions(node).filter(|r| r.size > 0) {
            banks
                .push(region)
                .map_err(|_| InventoryError::TooManyRegions)?;
        }
    }
    if banks.is_empty() {
        return Err(InventoryError::NoMemory);
    }
    banks.sort_unstable_by_key(|r| r.base);
    Ok(banks)
}

fn reserved(fdt: &Fdt<'_>) -> Result<Vec<Region, MAX_RESERVED>, InventoryError> {
    let mut list: Vec<Region, MAX_RESERVED> = Vec::new();
    for entry in fdt.memory_reservations() {
        let region = Region::new(entry.address() as u64, entry.size() as u64);
        list.push(region)
            .map_err(|_| InventoryError::TooManyRegions)?;
    }
    if let Some(node) = fdt.find_node("/reserved-memory") {
        for child in node.children() {
            for region in regions(child) {
                list.push(region)
                    .map_err(|_| InventoryError::TooManyRegions)?;
            }
        }
    }
    Ok(list)
}

fn gic(fdt: &Fdt<'_>) -> Result<Gic, InventoryError> {
    let node = fdt
        .find_compatible(&["arm,gic-v3"])
        .ok_or(InventoryError::NoGicV3)?;
    let mut reg = regions(node);
    let distributor = reg.next().ok_or(InventoryError::NoGicV3)?;
    let redistributors = reg.next().ok_or(InventoryError::NoGicV3)?;
    let its = node
        .children()
        .find(|c| has_compatible(c, "arm,gic-v3-its"))
        .and_then(|c| regions(c).next());
    Ok(Gic {
        distributor,
        redistributors,
        its,
    })
}

fn uart(fdt: &Fdt<'_>) -> Result<Uart, InventoryError> {
    let from_stdout = fdt
        .find_node("/chosen")
        .and_then(|chosen| string_property(&chosen, "stdout-path"))
        .and_then(|path| fdt.find_node(path.split(':').next().unwrap_or(path)))
        .filter(|n| has_compatible(n, "arm,pl011"));
    let node = from_stdout
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))
        .ok_or(InventoryError::NoUart)?;
    let registers = regions(node).next().ok_or(InventoryError::NoUart)?;
    let intid = node.property("interrupts").and_then(|p| spi_intid(p.value));
    Ok(Uart { registers, intid })
}

/// The INTID of the first interrupt in a 3-cell GIC `interrupts` property.
fn spi_intid(value: &[u8]) -> Option<u32> {
    let kind = be_cells(value, 1)?;
    let number = be_cells(value.get(4..)?, 1)? as u32;
    match kind {
        0 => number.checked_add(32),
        1 => number.checked_add(16),
        _ => None,
    }
}

fn psci(fdt: &Fdt<'_>) -> Result<Conduit, InventoryError> {
    let node = fdt.find_node("/psci").ok_or(InventoryError::NoPsci)?;
    match string_property(&node, "method") {
        Some("smc") => Ok(Conduit::Smc),
        Some("hvc") => Ok(Conduit::Hvc),
        _ => Err(InventoryError::NoPsci),
    }
}

fn pcie(fdt: &Fdt<'_>) -> Option<PcieHost> {
    let node = fdt.find_compatible(&["pci-host-ecam-generic"])?;
    let bus_start = node
        .property("bus-range")
        .and_then(|p| be_cells(p.value, 1))
        .map_or(0, |b| b as u8);
    let (mut mem32, mut mem64) = (None, None);
    if let Some(ranges) = node.property("ranges") {
        // Child address: 3 cells (phys.hi with the space code, phys.mid, phys.lo); parent
        // address: the root's 2 cells; size: 2 cells.
        for entry in ranges.value.chunks_exact(28) {
            let flags = be_cells(entry, 1).unwrap_or(0);
            let window = PciWindow {
                pci: be_cells(&entry[4..], 2).unwrap_or(0),
                cpu: be_cells(&entry[12..], 2).unwrap_or(0),
                size: be_cells(&entry[20..], 2).unwrap_or(0),
            };
            match (flags >> 24) & 0b11 {
                0b10 => mem32 = mem32.or(Some(window)),
                0b11 => mem64 = mem64.or(Some(window)),
                _ => {}
            }
        }
    }
    Some(PcieHost {
        ecam: regions(node).next()?,
        bus_start,
        mem32,
        mem64,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec::Vec as AllocVec;
    use vm_fdt::FdtWriter;

    /// A device tree shaped like QEMU virt's (virtualization=on, gic-version=3).
    pub fn virt_dtb(cpus: u32, ram: u64) -> AllocVec<u8> {
        virt_dtb_with(cpus, ram, "smc", true)
    }

    pub fn virt_dtb_with(cpus: u32, ram: u64, method: &str, with_gic: bool) -> AllocVec<u8> {
        let mut w =
            FdtWriter::new_with_mem_reserv(&[
                vm_fdt::FdtReserveEntry::new(0x4800_0000, 0x1000).unwrap()
            ])
            .unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        w.property_string("stdout-path", "/pl011@9000000").unwrap();
        w.end_node(chosen).unwrap();
        let mem = w.begin_node("memory@40000000").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u64("reg", &[0x4000_0000, ram]).unwrap();
        w.end_node(mem).unwrap();
        let c = w.begin_node("cpus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 0).unwrap();
        for i in 0..cpus {
            let n = w.begin_node(&alloc::format!("cpu@{i}")).unwrap();
            w.property_string("device_type", "cpu").unwrap();
            w.property_u32("reg", i).unwrap();
            w.end_node(n).unwrap();
        }
        w.end_node(c).unwrap();
        let p = w.begin_node("psci").unwrap();
        w.property_string("method", method).unwrap();
        w.end_node(p).unwrap();
        if with_gic {
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
        let u = w.begin_node("pl011@9000000").unwrap();
        w.property_string_list(
            "compatible",
            alloc::vec!["arm,pl011".into(), "arm,primecell".into()],
        )
        .unwrap();
        w.property_array_u64("reg", &[0x900_0000, 0x1000]).unwrap();
        w.property_array_u32("interrupts", &[0, 1, 4]).unwrap();
        w.end_node(u).unwrap();
        let pci = w.begin_node("pcie@10000000").unwrap();
        w.property_string("compatible", "pci-host-ecam-generic")
            .unwrap();
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
        w.end_node(pci).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
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
        assert_eq!(
            inv.pcie,
            Some(PcieHost {
                ecam: Region::new(0x40_1000_0000, 0x1000_0000),
                bus_start: 0,
                mem32: Some(PciWindow {
                    pci: 0x1000_0000,
                    cpu: 0x1000_0000,
                    size: 0x2eff_0000
                }),
                mem64: Some(PciWindow {
                    pci: 0x80_0000_0000,
                    cpu: 0x80_0000_0000,
                    size: 0x80_0000_0000
                }),
            })
        );
        assert_eq!(inv.core_index(0x8000_0003), Some(3));
        assert_eq!(inv.core_index(0x8000_0100), None);
    }

    #[test]
    fn hvc_conduit() {
        let inv = Inventory::from_dtb(&virt_dtb_with(1, 1 << 30, "hvc", true)).unwrap();
        assert_eq!(inv.psci, Conduit::Hvc);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            Inventory::from_dtb(&[0u8; 64]),
            Err(InventoryError::NotADeviceTree)
        );
        assert_eq!(
            Inventory::from_dtb(&[]),
            Err(InventoryError::NotADeviceTree)
        );
    }

    #[test]
    fn rejects_missing_psci_method() {
        assert_eq!(
            Inventory::from_dtb(&virt_dtb_with(1, 1 << 30, "none", true)),
            Err(InventoryError::NoPsci)
        );
    }

    #[test]
    fn rejects_missing_gic() {
        assert_eq!(
            Inventory::from_dtb(&virt_dtb_with(1, 1 << 30, "smc", false)),
            Err(InventoryError::NoGicV3)
        );
    }

    #[test]
    fn rejects_missing_cpus() {
        assert_eq!(
            Inventory::from_dtb(&virt_dtb(0, 1 << 30)),
            Err(InventoryError::NoCpus)
        );
    }

    #[test]
    fn rejects_empty_memory() {
        assert_eq!(
            Inventory::from_dtb(&virt_dtb(1, 0)),
            Err(InventoryError::NoMemory)
        );
    }

    #[test]
    fn rejects_too_many_cpus() {
        assert_eq!(
            Inventory::from_dtb(&virt_dtb(257, 1 << 30)),
            Err(InventoryError::TooManyCpus)
        );
    }

    #[test]
    fn reads_total_size() {
        let dtb = virt_dtb(1, 1 << 30);
        let header: [u8; 8] = dtb[..8].try_into().unwrap();
        assert_eq!(dtb_total_size(&header), Some(dtb.len()));
        assert_eq!(dtb_total_size(&[0; 8]), None);
    }

    #[test]
    fn region_arithmetic() {
        let r = Region::new(0x1000, 0x1000);
        assert!(r.contains(0x1fff) && !r.contains(0x2000));
        assert!(r.overlaps(&Region::new(0x1800, 0x10)) && !r.overlaps(&Region::new(0x2000, 0x10)));
        assert_eq!(Region::new(u64::MAX - 1, 10).end(), u64::MAX);
    }
}
