//! What the probe needs from its device tree (Devicetree Spec v0.4): the
//! slice name and command line from `/chosen`, the console UART and its
//! interrupt, the CPUs' MPIDR affinities in `/cpus` order (the vCPU order),
//! the `/memory` ranges, the PSCI conduit, where the GICv3 is and the PCIe
//! host bridge (ECAM, bus range, 32-bit memory window). Everything is copied
//! out, because the memory test later overwrites the blob.
//!
//! The `fdt` crate (0.1.5) does the parsing, with two precautions:
//! - Its convenience accessors (`chosen()`, `cpus()`, `memory()`,
//!   `cell_sizes()`) panic on missing nodes or short properties, so this
//!   module reads raw properties instead.
//! - It mishandles `FDT_NOP` tokens between properties (it then misses nodes,
//!   or asserts), and trees edited by QEMU (`-dtb`) or U-Boot contain them.
//!   [`Platform::from_fdt`] therefore first checks the structure block token
//!   by token (Devicetree Spec v0.4 §5.4) and removes the NOPs in place.
//!
//! So a malformed tree is an error, never a panic.

use fdt::Fdt;
use fdt::node::FdtNode;

use crate::text::Text;
use crate::{MAX_CPUS, MAX_MEMORY_REGIONS};

/// Console UART when the tree names none (QEMU `virt` PL011).
pub const DEFAULT_UART_BASE: u64 = 0x0900_0000;
/// Slice name when `/chosen/microvisor,slice-name` is absent.
pub const DEFAULT_SLICE_NAME: &str = "native";
/// Property the microvisor puts in `/chosen` to name the slice.
pub const SLICE_NAME_PROPERTY: &str = "microvisor,slice-name";
/// Capacity for `/chosen/bootargs` (Linux arm64 COMMAND_LINE_SIZE).
pub const MAX_BOOTARGS: usize = 2048;
/// Capacity for the slice name.
pub const MAX_SLICE_NAME: usize = 64;
/// Device SPIs [`Platform::device_spis`] keeps.
pub const MAX_DEVICE_SPIS: usize = 64;
/// GICv3 when the tree has no `arm,gic-v3` node: QEMU `virt`'s (and the
/// microvisor's) distributor and redistributor region.
pub const DEFAULT_GIC: GicLayout = GicLayout {
    distributor: 0x0800_0000,
    redistributors: MemoryRegion {
        base: 0x080a_0000,
        size: 0xf6_0000,
    },
};

/// How PSCI calls reach the PSCI implementation (`/psci/method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `hvc #0`: the hypervisor.
    Hvc,
    /// `smc #0`: secure firmware.
    Smc,
}

impl Conduit {
    /// The DT spelling: `hvc` or `smc`.
    pub fn name(self) -> &'static str {
        match self {
            Conduit::Hvc => "hvc",
            Conduit::Smc => "smc",
        }
    }
}

/// One `/memory` range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub base: u64,
    /// Length in bytes (non-zero).
    pub size: u64,
}

impl MemoryRegion {
    /// One past the last byte (saturating at the top of the address space).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// Whether `addr` lies in the range.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr < self.end()
    }
}

/// Where the GICv3 is: the `reg` of the `arm,gic-v3` node (Linux binding
/// `interrupt-controller/arm,gic-v3.yaml`): the distributor, then the first
/// redistributor region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicLayout {
    /// GICD base.
    pub distributor: u64,
    /// The first redistributor region (frames of consecutive PEs).
    pub redistributors: MemoryRegion,
}

/// One memory window of a PCI host bridge (a `ranges` entry): CPU addresses
/// `[cpu, cpu + size)` reach PCI memory addresses `[pci, pci + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindow {
    /// First CPU (guest-physical) address.
    pub cpu: u64,
    /// The PCI bus address the CPU address `cpu` reaches.
    pub pci: u64,
    /// Length in bytes.
    pub size: u64,
    /// Whether the window is marked prefetchable.
    pub prefetchable: bool,
}

/// A `pci-host-ecam-generic` host bridge (Linux binding
/// `pci/host-generic-pci.yaml`, PCI bus binding IEEE 1275 §2.2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciHost {
    /// The ECAM region (`reg`, root cell sizes).
    pub ecam: MemoryRegion,
    /// First bus number (`bus-range`, default 0).
    pub bus_start: u8,
    /// Last bus number (`bus-range`, default 255), clipped to what the ECAM
    /// region covers (1 MiB per bus).
    pub bus_end: u8,
    /// The first 32-bit memory window (space code 0b10), non-prefetchable
    /// preferred.
    pub mem32: Option<PciWindow>,
    /// Whether the bridge is `dma-coherent`.
    pub dma_coherent: bool,
}

/// An ITS (`arm,gic-v3-its` child of the GIC node; Linux binding
/// `interrupt-controller/arm,gic-v3-its.yaml`) and how the host bridge's requester IDs
/// become its DeviceIDs (the bridge's `msi-map`, PCI binding `pci/pci-msi.txt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItsInfo {
    /// Base of its control frame (GITS_CTLR); GITS_TRANSLATER is at +0x1_0040.
    pub base: u64,
    /// The host bridge's `msi-map` entry aimed at this ITS, if there is one.
    pub msi_map: Option<MsiMap>,
}

/// One `msi-map` entry: requester IDs `[rid_base, rid_base + length)` become DeviceIDs from
/// `device_base` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMap {
    /// First requester ID.
    pub rid_base: u32,
    /// DeviceID of `rid_base`.
    pub device_base: u32,
    /// Requester IDs covered.
    pub length: u32,
}

impl MsiMap {
    /// The DeviceID of requester ID `rid`, if the entry covers it.
    pub fn device_id(&self, rid: u32) -> Option<u32> {
        let offset = rid.checked_sub(self.rid_base)?;
        (offset < self.length).then(|| self.device_base.checked_add(offset))?
    }
}

/// Why a device tree could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtError {
    /// Not a flattened device tree (bad magic, truncated, no root node).
    Header,
    /// No `/cpus/cpu@*` node.
    NoCpus,
    /// No non-empty `/memory` range.
    NoMemory,
    /// A `#address-cells`/`#size-cells` or `reg` property that cannot be
    /// read (short value, more than two cells, length not a whole entry);
    /// names the node kind.
    BadReg(&'static str),
    /// The structure block is malformed (unknown token, unbalanced nodes,
    /// property outside a node or after a child, data past the block).
    Structure,
}

impl core::fmt::Display for DtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DtError::Header => f.write_str("not-a-device-tree"),
            DtError::NoCpus => f.write_str("no-cpus"),
            DtError::NoMemory => f.write_str("no-memory"),
            DtError::BadReg(node) => write!(f, "bad-reg-{node}"),
            DtError::Structure => f.write_str("bad-structure"),
        }
    }
}

/// The machine as the device tree describes it.
#[derive(Clone, Debug)]
pub struct Platform {
    /// `/chosen/microvisor,slice-name`, or `native`.
    pub slice_name: Text<MAX_SLICE_NAME>,
    /// `/chosen/bootargs` (empty if absent).
    pub bootargs: Text<MAX_BOOTARGS>,
    /// Console PL011 base: `/chosen/stdout-path`, else the first `arm,pl011`.
    pub uart_base: u64,
    cpus: [u64; MAX_CPUS],
    cpu_count: usize,
    /// CPU nodes in the tree, including any beyond [`MAX_CPUS`].
    pub dt_cpu_count: usize,
    memory: [MemoryRegion; MAX_MEMORY_REGIONS],
    memory_count: usize,
    /// Memory ranges in the tree, including any beyond [`MAX_MEMORY_REGIONS`].
    pub dt_memory_count: usize,
    /// `/psci/method`, if there is a PSCI node with a known method.
    pub psci: Option<Conduit>,
    /// The GICv3 (`arm,gic-v3`), if the tree has one with a usable `reg`.
    pub gic: Option<GicLayout>,
    /// INTID of the console UART (its `interrupts`, GIC three-cell format).
    pub uart_intid: Option<u32>,
    /// INTIDs of the SPIs the tree's device nodes signal (each node's first interrupt, in tree
    /// order, at most [`MAX_DEVICE_SPIS`]): the SPIs the slice owns besides its MBI range.
    device_spis: [u32; MAX_DEVICE_SPIS],
    device_spi_count: usize,
    /// The GIC node's `mbi-ranges` (first SPI, count): message-based SPIs a device raises by
    /// writing the SPI number to GICD_SETSPI_NSR (the microvisor's slice MSI controller).
    pub mbi: Option<(u32, u32)>,
    /// The GIC's ITS, if the tree has one with a usable `reg`.
    pub its: Option<ItsInfo>,
    /// Whether `/chosen/microvisor,slice-name` named the slice.
    pub slice_named: bool,
    /// Whether the tree has a `pci-host-ecam-generic` node at all.
    pub pci_node: bool,
    /// That host bridge, if its `reg` could be read.
    pub pci: Option<PciHost>,
}

impl Platform {
    /// What the probe assumes without a usable device tree: console at the
    /// `virt` PL011, no CPUs or memory known, no PSCI.
    pub fn fallback() -> Platform {
        Platform {
            slice_name: Text::from_bytes(DEFAULT_SLICE_NAME.as_bytes()),
            bootargs: Text::new(),
            uart_base: DEFAULT_UART_BASE,
            cpus: [0; MAX_CPUS],
            cpu_count: 0,
            dt_cpu_count: 0,
            memory: [MemoryRegion::default(); MAX_MEMORY_REGIONS],
            memory_count: 0,
            dt_memory_count: 0,
            psci: None,
            gic: None,
            uart_intid: None,
            device_spis: [0; MAX_DEVICE_SPIS],
            device_spi_count: 0,
            mbi: None,
            its: None,
            slice_named: false,
            pci_node: false,
            pci: None,
        }
    }

    /// Reads a flattened device tree. The blob is checked and its NOP tokens
    /// are removed in place first (see the module docs).
    pub fn from_fdt(blob: &mut [u8]) -> Result<Platform, DtError> {
        compact(blob)?;
        let blob: &[u8] = blob;
        let fdt = Fdt::new(blob).map_err(|_| DtError::Header)?;
        let root = fdt.find_node("/").ok_or(DtError::Header)?;
        let mut p = Platform::fallback();

        if let Some(chosen) = fdt.find_node("/chosen") {
            if let Some(args) = string_property(chosen, "bootargs") {
                p.bootargs = Text::from_bytes(args);
            }
            if let Some(name) =
                string_property(chosen, SLICE_NAME_PROPERTY).filter(|n| !n.is_empty())
            {
                p.slice_name = Text::from_bytes(name);
                p.slice_named = true;
            }
        }
        let uart = console_uart(&fdt);
        p.uart_base = uart
            .and_then(|node| node.reg()?.next())
            .map_or(DEFAULT_UART_BASE, |region| {
                region.starting_address as usize as u64
            });
        p.uart_intid = uart.and_then(gic_intid);
        for intid in fdt.all_nodes().filter_map(gic_intid).filter(|&i| i >= 32) {
            if p.device_spi_count < MAX_DEVICE_SPIS && !p.device_spis().contains(&intid) {
                p.device_spis[p.device_spi_count] = intid;
                p.device_spi_count += 1;
            }
        }
        p.read_cpus(&fdt)?;
        p.read_memory(root)?;
        p.psci = fdt
            .find_node("/psci")
            .or_else(|| fdt.find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]))
            .and_then(|psci| string_property(psci, "method"))
            .and_then(|method| match method {
                b"hvc" => Some(Conduit::Hvc),
                b"smc" => Some(Conduit::Smc),
                _ => None,
            });
        p.gic = read_gic(&fdt, root);
        p.mbi = fdt
            .find_compatible(&["arm,gic-v3"])
            .and_then(|gic| gic.property("mbi-ranges"))
            .and_then(|ranges| {
                let (first, rest) = read_cells(ranges.value, 1)?;
                let (count, _) = read_cells(rest, 1)?;
                Some((u32::try_from(first).ok()?, u32::try_from(count).ok()?))
            })
            .filter(|&(first, count)| first >= 32 && count > 0);
        let pci_node = fdt.find_compatible(&["pci-host-ecam-generic"]);
        p.pci_node = pci_node.is_some();
        p.pci = pci_node.and_then(|node| read_pci_host(node, root));
        p.its = read_its(&fdt, root, pci_node);
        Ok(p)
    }

    /// INTIDs of the SPIs the tree's devices signal (see the field).
    pub fn device_spis(&self) -> &[u32] {
        &self.device_spis[..self.device_spi_count]
    }

    /// MPIDR affinity values of the CPUs, in tree order (at most [`MAX_CPUS`]).
    pub fn cpus(&self) -> &[u64] {
        &self.cpus[..self.cpu_count]
    }

    /// The memory ranges, in tree order (at most [`MAX_MEMORY_REGIONS`]).
    pub fn memory(&self) -> &[MemoryRegion] {
        &self.memory[..self.memory_count]
    }

    /// Sum of the memory range sizes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory()
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.size))
    }

    /// Base of the first memory range (0 if none).
    pub fn memory_base(&self) -> u64 {
        self.memory().first().map_or(0, |r| r.base)
    }

    /// One past the highest memory byte: the first IPA after RAM.
    pub fn memory_end(&self) -> u64 {
        self.memory()
            .iter()
            .map(MemoryRegion::end)
            .max()
            .unwrap_or(0)
    }

    /// Whether two memory ranges overlap (a malformed tree; the memory test
    /// still tests every byte once).
    pub fn memory_overlaps(&self) -> bool {
        let m = self.memory();
        (0..m.len())
            .any(|i| (i + 1..m.len()).any(|j| m[i].base < m[j].end() && m[j].base < m[i].end()))
    }

    /// Whether `addr` is in one of the memory ranges.
    pub fn in_memory(&self, addr: u64) -> bool {
        self.memory().iter().any(|r| r.contains(addr))
    }

    fn read_cpus(&mut self, fdt: &Fdt<'_>) -> Result<(), DtError> {
        let cpus = fdt.find_node("/cpus").ok_or(DtError::NoCpus)?;
        let address_cells = cells(cpus, "#address-cells", 2).ok_or(DtError::BadReg("cpus"))?;
        for cpu in cpus.children().filter(|c| is_cpu_node(*c)) {
            let reg = cpu.property("reg").ok_or(DtError::BadReg("cpu"))?.value;
            let (mpidr, _) = read_cells(reg, address_cells).ok_or(DtError::BadReg("cpu"))?;
            if self.cpu_count < MAX_CPUS {
                self.cpus[self.cpu_count] = mpidr;
                self.cpu_count += 1;
            }
            self.dt_cpu_count += 1;
        }
        if self.dt_cpu_count == 0 {
            return Err(DtError::NoCpus);
        }
        Ok(())
    }

    fn read_memory(&mut self, root: FdtNode<'_, '_>) -> Result<(), DtError> {
        let address_cells = cells(root, "#address-cells", 2).ok_or(DtError::BadReg("root"))?;
        let size_cells = cells(root, "#size-cells", 1).ok_or(DtError::BadReg("root"))?;
        let entry = 4 * (address_cells + size_cells);
        for node in root.children().filter(|n| is_memory_node(*n)) {
            let Some(reg) = node.property("reg").map(|p| p.value) else {
                continue;
            };
            if entry == 0 || reg.len() % entry != 0 {
                return Err(DtError::BadReg("memory"));
            }
            for chunk in reg.chunks(entry) {
                let (base, rest) =
                    read_cells(chunk, address_cells).ok_or(DtError::BadReg("memory"))?;
                let (size, _) = read_cells(rest, size_cells).ok_or(DtError::BadReg("memory"))?;
                if size == 0 {
                    continue;
                }
                if self.memory_count < MAX_MEMORY_REGIONS {
                    self.memory[self.memory_count] = MemoryRegion { base, size };
                    self.memory_count += 1;
                }
                self.dt_memory_count += 1;
            }
        }
        if self.memory_count == 0 {
            return Err(DtError::NoMemory);
        }
        Ok(())
    }
}

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Node nesting the check follows (the `fdt` crate itself allows 64).
const MAX_DEPTH: usize = 32;

fn be32(blob: &[u8], at: usize) -> Option<u32> {
    let bytes = blob.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Checks the header and the structure block of a flattened tree and
/// removes its `FDT_NOP` tokens in place, shrinking `size_dt_struct`.
pub fn compact(blob: &mut [u8]) -> Result<(), DtError> {
    let header = |field: usize| be32(blob, 4 * field).ok_or(DtError::Header);
    if header(0)? != FDT_MAGIC {
        return Err(DtError::Header);
    }
    let total = header(1)? as usize;
    let (off_struct, off_strings) = (header(2)? as usize, header(3)? as usize);
    let (version, size_strings, size_struct) =
        (header(5)?, header(8)? as usize, header(9)? as usize);
    let struct_end = off_struct.checked_add(size_struct).ok_or(DtError::Header)?;
    let strings_end = off_strings
        .checked_add(size_strings)
        .ok_or(DtError::Header)?;
    if version < 17 || total > blob.len() || struct_end > total || strings_end > total {
        return Err(DtError::Header);
    }

    let (mut read, mut write) = (off_struct, off_struct);
    let mut depth = 0usize;
    // Per depth: whether a child node has been seen (no properties after).
    let mut had_child = [false; MAX_DEPTH + 1];
    loop {
        let token = be32(blob, read)
            .filter(|_| read + 4 <= struct_end)
            .ok_or(DtError::Structure)?;
        let len = match token {
            FDT_NOP => {
                read += 4;
                continue;
            }
            FDT_BEGIN_NODE => {
                if depth == MAX_DEPTH || (depth == 0 && read != off_struct) {
                    return Err(DtError::Structure);
                }
                let name = blob.get(read + 4..struct_end).ok_or(DtError::Structure)?;
                let nul = name
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(DtError::Structure)?;
                had_child[depth] = true;
                depth += 1;
                had_child[depth] = false;
                4 + (nul + 1).next_multiple_of(4)
            }
            FDT_END_NODE => {
                depth = depth.checked_sub(1).ok_or(DtError::Structure)?;
                4
            }
            FDT_PROP => {
                let value_len = be32(blob, read + 4).ok_or(DtError::Structure)? as usize;
                let name_offset = be32(blob, read + 8).ok_or(DtError::Structure)? as usize;
                if depth == 0 || had_child[depth] || name_offset >= size_strings {
                    return Err(DtError::Structure);
                }
                12 + value_len.next_multiple_of(4)
            }
            FDT_END if depth == 0 && read != off_struct => 4,
            _ => return Err(DtError::Structure),
        };
        let next = read
            .checked_add(len)
            .filter(|&n| n <= struct_end)
            .ok_or(DtError::Structure)?;
        blob.copy_within(read..next, write);
        write += len;
        read = next;
        if token == FDT_END {
            break;
        }
    }
    let new_size = ((write - off_struct) as u32).to_be_bytes();
    blob[36..40].copy_from_slice(&new_size);
    Ok(())
}

/// The PL011 named by `/chosen/stdout-path` (path or alias, options after
/// `:` ignored), else the first `arm,pl011` node. Its `reg` is taken as it
/// is (no `ranges` translation; the `virt` UART sits at the root).
fn console_uart<'b, 'a>(fdt: &'b Fdt<'a>) -> Option<FdtNode<'b, 'a>> {
    let from_stdout = fdt
        .find_node("/chosen")
        .and_then(|chosen| string_property(chosen, "stdout-path"))
        .and_then(|path| path.split(|&b| b == b':').next())
        .and_then(|path| core::str::from_utf8(path).ok())
        .and_then(|path| fdt.find_node(path))
        .filter(|node| is_pl011(*node));
    from_stdout.or_else(|| fdt.find_compatible(&["arm,pl011"]))
}

/// The INTID of a node's first interrupt in the GIC's three-cell format
/// (type 0 = SPI n -> 32 + n, type 1 = PPI n -> 16 + n).
fn gic_intid(node: FdtNode<'_, '_>) -> Option<u32> {
    let cells = node.property("interrupts")?.value;
    let (kind, rest) = read_cells(cells, 1)?;
    let (number, _) = read_cells(rest, 1)?;
    let number = u32::try_from(number).ok()?;
    match kind {
        0 => number.checked_add(32).filter(|&i| i <= 1019),
        1 => number.checked_add(16).filter(|&i| i < 32),
        _ => None,
    }
}

/// The `arm,gic-v3` node's distributor and first redistributor region, with
/// the root's cell sizes (the `virt` GIC sits at the root).
fn read_gic(fdt: &Fdt<'_>, root: FdtNode<'_, '_>) -> Option<GicLayout> {
    let node = fdt.find_compatible(&["arm,gic-v3"])?;
    let address_cells = cells(root, "#address-cells", 2)?;
    let size_cells = cells(root, "#size-cells", 1)?;
    let reg = node.property("reg")?.value;
    let (distributor, rest) = read_cells(reg, address_cells)?;
    let (_, rest) = read_cells(rest, size_cells)?;
    let (base, rest) = read_cells(rest, address_cells)?;
    let (size, _) = read_cells(rest, size_cells)?;
    Some(GicLayout {
        distributor,
        redistributors: MemoryRegion { base, size },
    })
}

/// The first available `arm,gic-v3-its` child of the GIC node (its `reg` in the GIC node's
/// cells) and the host bridge's `msi-map` entry whose phandle names it.
fn read_its(fdt: &Fdt<'_>, root: FdtNode<'_, '_>, pci: Option<FdtNode<'_, '_>>) -> Option<ItsInfo> {
    let gic = fdt.find_compatible(&["arm,gic-v3"])?;
    let address_cells = cells(gic, "#address-cells", cells(root, "#address-cells", 2)?)?;
    let its = gic.children().find(|c| {
        c.compatible()
            .is_some_and(|cs| cs.all().any(|x| x == "arm,gic-v3-its"))
            && c.property("status")
                .is_none_or(|s| matches!(s.value, b"okay\0" | b"ok\0"))
    })?;
    let (base, _) = read_cells(its.property("reg")?.value, address_cells)?;
    let phandle = its
        .property("phandle")
        .and_then(|p| read_cells(p.value, 1))
        .map(|(v, _)| v);
    let msi_map = pci
        .and_then(|node| node.property("msi-map"))
        .and_then(|map| {
            map.value.chunks_exact(16).find_map(|entry| {
                let (rid_base, rest) = read_cells(entry, 1)?;
                let (target, rest) = read_cells(rest, 1)?;
                let (device_base, rest) = read_cells(rest, 1)?;
                let (length, _) = read_cells(rest, 1)?;
                (Some(target) == phandle).then_some(MsiMap {
                    rid_base: rid_base as u32,
                    device_base: device_base as u32,
                    length: length as u32,
                })
            })
        });
    Some(ItsInfo { base, msi_map })
}

/// The host bridge's ECAM, bus range and first 32-bit memory window. Its
/// `reg` uses the root's cells (the bridge sits at the root on `virt` and in
/// slices); `ranges` entries are 3 PCI address cells, the root's address
/// cells and the bridge's size cells.
fn read_pci_host(node: FdtNode<'_, '_>, root: FdtNode<'_, '_>) -> Option<PciHost> {
    let address_cells = cells(root, "#address-cells", 2)?;
    let size_cells = cells(root, "#size-cells", 1)?;
    let reg = node.property("reg")?.value;
    let (base, rest) = read_cells(reg, address_cells)?;
    let (size, _) = read_cells(rest, size_cells)?;
    if size < 1 << 20 {
        return None;
    }
    let (mut bus_start, mut bus_end) = (0u64, 255u64);
    if let Some(range) = node.property("bus-range") {
        let (first, rest) = read_cells(range.value, 1)?;
        let (last, _) = read_cells(rest, 1)?;
        (bus_start, bus_end) = (first, last);
    }
    let buses = (size >> 20).min(256);
    bus_end = bus_end.min(255).min(bus_start + buses - 1);
    if bus_start > bus_end {
        return None;
    }
    let child_size_cells = cells(node, "#size-cells", 2)?;
    let entry = 4 * (3 + address_cells + child_size_cells);
    let mut mem32: Option<PciWindow> = None;
    if let Some(ranges) = node.property("ranges").map(|p| p.value)
        && entry > 0
    {
        for chunk in ranges.chunks_exact(entry) {
            let (space, rest) = read_cells(chunk, 1)?;
            let (pci, rest) = read_cells(rest, 2)?;
            let (cpu, rest) = read_cells(rest, address_cells)?;
            let (window_size, _) = read_cells(rest, child_size_cells)?;
            let window = PciWindow {
                cpu,
                pci,
                size: window_size,
                prefetchable: space & (1 << 30) != 0,
            };
            // Space code (bits 25:24): 0b10 = 32-bit memory.
            if (space >> 24) & 3 != 0b10 || window_size == 0 {
                continue;
            }
            if mem32.is_none_or(|m| m.prefetchable && !window.prefetchable) {
                mem32 = Some(window);
            }
        }
    }
    Some(PciHost {
        ecam: MemoryRegion { base, size },
        bus_start: bus_start as u8,
        bus_end: bus_end as u8,
        mem32,
        dma_coherent: node.property("dma-coherent").is_some(),
    })
}

fn is_pl011(node: FdtNode<'_, '_>) -> bool {
    node.compatible()
        .is_some_and(|c| c.all().any(|s| s == "arm,pl011"))
}

fn is_cpu_node(node: FdtNode<'_, '_>) -> bool {
    node.name == "cpu"
        || node.name.starts_with("cpu@")
        || string_property(node, "device_type") == Some(b"cpu")
}

fn is_memory_node(node: FdtNode<'_, '_>) -> bool {
    node.name == "memory"
        || node.name.starts_with("memory@")
        || string_property(node, "device_type") == Some(b"memory")
}

/// A string property's bytes, up to the first NUL.
fn string_property<'a>(node: FdtNode<'_, 'a>, name: &str) -> Option<&'a [u8]> {
    let value = node.property(name)?.value;
    let len = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    Some(&value[..len])
}

/// A `#...-cells` property (0..=2), or `default` when absent.
fn cells(node: FdtNode<'_, '_>, name: &str, default: usize) -> Option<usize> {
    match node.property(name) {
        None => Some(default),
        Some(p) => {
            let (n, _) = read_cells(p.value, 1)?;
            (n <= 2).then_some(n as usize)
        }
    }
}

/// Reads `n` (0..=2) big-endian cells; returns the value and the rest.
fn read_cells(bytes: &[u8], n: usize) -> Option<(u64, &[u8])> {
    if n > 2 || bytes.len() < 4 * n {
        return None;
    }
    let (cells, rest) = bytes.split_at(4 * n);
    let value = cells.chunks_exact(4).fold(0u64, |v, c| {
        (v << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    });
    Some((value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `qemu-system-aarch64 -M virt,gic-version=3,dumpdtb=... -cpu max -smp 4
    /// -m 256M -append "heartbeat=500 attack=mmio"`, packed with dtc.
    const QEMU_VIRT_4CPU: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-4cpu-256m.dtb");
    /// QEMU's tree for `-dtb <a dtc-compiled virt tree> -append ...`, read
    /// back from guest memory: QEMU's edits left FDT_NOP tokens in it.
    const QEMU_EDITED: &[u8] = include_bytes!("../tests/fixtures/qemu-user-dtb-with-nops.dtb");
    /// Hand-written microvisor-style tree (`microvisor-slice.dts`): slice name,
    /// two-cell CPU reg with an Aff1 CPU, SMC conduit, two memory ranges,
    /// stdout-path through an alias with options.
    const SLICE: &[u8] = include_bytes!("../tests/fixtures/microvisor-slice.dtb");

    /// Parses a copy of a fixture.
    fn read(blob: &[u8]) -> Result<Platform, DtError> {
        Platform::from_fdt(&mut blob.to_vec())
    }

    /// Offset and size of the structure block.
    fn struct_block(blob: &[u8]) -> (usize, usize) {
        (
            be32(blob, 8).unwrap() as usize,
            be32(blob, 36).unwrap() as usize,
        )
    }

    /// Counts NOP tokens by walking the structure block.
    fn nops(blob: &[u8]) -> usize {
        let (mut at, _) = struct_block(blob);
        let mut count = 0;
        loop {
            match be32(blob, at).unwrap() {
                FDT_NOP => {
                    count += 1;
                    at += 4;
                }
                FDT_BEGIN_NODE => {
                    let nul = blob[at + 4..].iter().position(|&b| b == 0).unwrap();
                    at += 4 + (nul + 1).next_multiple_of(4);
                }
                FDT_END_NODE => at += 4,
                FDT_PROP => at += 12 + (be32(blob, at + 4).unwrap() as usize).next_multiple_of(4),
                _ => return count,
            }
        }
    }

    #[test]
    fn nops_are_removed_and_the_tree_still_parses() {
        let mut blob = QEMU_EDITED.to_vec();
        assert!(nops(&blob) > 0, "fixture should contain NOPs");
        let (_, before) = struct_block(&blob);
        compact(&mut blob).unwrap();
        assert_eq!(nops(&blob), 0);
        assert_eq!(struct_block(&blob).1, before - 4 * nops(QEMU_EDITED));
        let p = read(QEMU_EDITED).unwrap();
        assert_eq!(p.bootargs.as_str(), Some("heartbeat=100"));
        assert_eq!(p.slice_name.as_str(), Some("web-0"));
        assert_eq!(p.cpus(), &[0, 2, 1]);
        assert_eq!(
            p.memory(),
            &[MemoryRegion {
                base: 0x4000_0000,
                size: 128 << 20
            }]
        );
        assert_eq!(p.psci, Some(Conduit::Hvc));
        assert_eq!(p.uart_base, 0x0900_0000);
    }

    #[test]
    fn compact_leaves_a_nop_free_tree_unchanged() {
        let mut blob = QEMU_VIRT_4CPU.to_vec();
        compact(&mut blob).unwrap();
        assert_eq!(blob, QEMU_VIRT_4CPU);
    }

    #[test]
    fn its_and_msi_map_are_read() {
        // QEMU virt: the ITS under the GIC, msi-map covering every requester ID.
        let p = read(QEMU_VIRT_4CPU).unwrap();
        let its = p.its.unwrap();
        assert_eq!(its.base, 0x0808_0000);
        let map = its.msi_map.unwrap();
        assert_eq!(
            map,
            MsiMap {
                rid_base: 0,
                device_base: 0,
                length: 0x1_0000
            }
        );
        assert_eq!(map.device_id(0x0108), Some(0x0108));
        assert_eq!(map.device_id(0x1_0000), None);
        // The slice fixture has MBI and no ITS.
        assert_eq!(read(SLICE).unwrap().its, None);
        let offset = MsiMap {
            rid_base: 8,
            device_base: 0x100,
            length: 8,
        };
        assert_eq!(offset.device_id(7), None);
        assert_eq!(offset.device_id(9), Some(0x101));
        assert_eq!(offset.device_id(16), None);
    }

    #[test]
    fn truncated_structure_is_an_error() {
        let mut blob = QEMU_VIRT_4CPU.to_vec();
        let (off, size) = struct_block(&blob);
        // Claim a shorter structure block: the walk runs off its end.
        blob[36..40].copy_from_slice(&((size / 2) as u32).to_be_bytes());
        assert_eq!(compact(&mut blob), Err(DtError::Structure));
        // An unknown token right after the root's name.
        let mut blob = QEMU_VIRT_4CPU.to_vec();
        blob[off + 8..off + 12].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(compact(&mut blob), Err(DtError::Structure));
    }

    #[test]
    fn unbalanced_end_node_is_an_error() {
        let mut blob = QEMU_VIRT_4CPU.to_vec();
        let (off, _) = struct_block(&blob);
        // Root BEGIN_NODE "" is 8 bytes; then an END_NODE closes the root and
        // a second one has nothing to close.
        blob[off + 8..off + 12].copy_from_slice(&FDT_END_NODE.to_be_bytes());
        blob[off + 12..off + 16].copy_from_slice(&FDT_END_NODE.to_be_bytes());
        assert_eq!(compact(&mut blob), Err(DtError::Structure));
    }

    #[test]
    fn header_outside_the_blob_is_an_error() {
        let mut blob = QEMU_VIRT_4CPU.to_vec();
        blob.truncate(blob.len() - 1);
        assert_eq!(compact(&mut blob), Err(DtError::Header));
    }

    #[test]
    fn qemu_virt_tree() {
        let p = read(QEMU_VIRT_4CPU).unwrap();
        assert_eq!(p.slice_name.as_str(), Some("native"));
        // QEMU's GICv3 has an ITS, no message-based SPIs.
        assert_eq!(p.mbi, None);
        assert_eq!(p.bootargs.as_str(), Some("heartbeat=500 attack=mmio"));
        assert_eq!(p.uart_base, 0x0900_0000);
        assert_eq!(p.cpus(), &[0, 1, 2, 3]);
        assert_eq!(
            p.memory(),
            &[MemoryRegion {
                base: 0x4000_0000,
                size: 256 << 20
            }]
        );
        assert_eq!(p.memory_bytes(), 256 << 20);
        assert_eq!(p.memory_end(), 0x5000_0000);
        assert_eq!(p.psci, Some(Conduit::Hvc));
        assert_eq!(p.gic, Some(DEFAULT_GIC));
        assert_eq!(p.uart_intid, Some(33));
        // 32 virtio-mmio transports, then the PL061, PL031 and PL011.
        assert_eq!(p.device_spis().len(), 35);
        assert_eq!(p.device_spis()[32..], [39, 34, 33]);
        assert!(!p.slice_named && p.pci_node);
        assert_eq!(
            p.pci,
            Some(PciHost {
                ecam: MemoryRegion {
                    base: 0x40_1000_0000,
                    size: 0x1000_0000
                },
                bus_start: 0,
                bus_end: 255,
                mem32: Some(PciWindow {
                    cpu: 0x1000_0000,
                    pci: 0x1000_0000,
                    size: 0x2eff_0000,
                    prefetchable: false
                }),
                dma_coherent: true,
            })
        );
    }

    #[test]
    fn microvisor_slice_tree() {
        let p = read(SLICE).unwrap();
        assert_eq!(p.slice_name.as_str(), Some("web-0"));
        assert_eq!(p.bootargs.as_str(), Some("console=ttyAMA0 heartbeat=250"));
        assert_eq!(p.uart_base, 0x0900_0000);
        assert_eq!(p.cpus(), &[0x0, 0x1, 0x100, 0x1_0000_0000]);
        assert_eq!(p.device_spis(), [33]);
        assert_eq!(
            p.memory(),
            &[
                MemoryRegion {
                    base: 0x4000_0000,
                    size: 0x0400_0000
                },
                MemoryRegion {
                    base: 0x1_0000_0000,
                    size: 0x0010_0000
                },
            ]
        );
        assert_eq!(p.memory_base(), 0x4000_0000);
        assert_eq!(p.memory_bytes(), 0x0410_0000);
        assert_eq!(p.memory_end(), 0x1_0010_0000);
        assert!(p.in_memory(0x1_0000_0000) && !p.in_memory(0x4400_0000));
        assert!(!p.memory_overlaps());
        assert_eq!(p.psci, Some(Conduit::Smc));
        assert_eq!(p.mbi, Some((64, 32)));
        assert_eq!(
            p.gic,
            Some(GicLayout {
                distributor: 0x0800_0000,
                redistributors: MemoryRegion {
                    base: 0x080a_0000,
                    size: 4 * 0x2_0000
                }
            })
        );
        assert_eq!(p.uart_intid, Some(33));
        assert!(p.slice_named && p.pci_node);
        assert_eq!(
            p.pci,
            Some(PciHost {
                ecam: MemoryRegion {
                    base: 0x40_1000_0000,
                    size: 1 << 20
                },
                bus_start: 0,
                bus_end: 0,
                mem32: Some(PciWindow {
                    cpu: 0x1000_0000,
                    pci: 0x1000_0000,
                    size: 16 << 20,
                    prefetchable: false
                }),
                dma_coherent: true,
            })
        );
    }

    #[test]
    fn overlapping_memory_is_detected() {
        let mut p = Platform::fallback();
        p.memory[0] = MemoryRegion {
            base: 0x4000_0000,
            size: 0x2000_0000,
        };
        p.memory[1] = MemoryRegion {
            base: 0x4000_0000,
            size: 0x1000_0000,
        };
        p.memory_count = 2;
        assert!(p.memory_overlaps());
        p.memory[1].base = 0x6000_0000;
        assert!(!p.memory_overlaps());
    }

    #[test]
    fn garbage_is_a_header_error() {
        assert_eq!(read(&[0u8; 64]).unwrap_err(), DtError::Header);
        assert_eq!(read(&QEMU_VIRT_4CPU[..100]).unwrap_err(), DtError::Header);
    }

    #[test]
    fn missing_cpus_is_an_error() {
        let dtb = include_bytes!("../tests/fixtures/no-cpus.dtb");
        assert_eq!(read(dtb).unwrap_err(), DtError::NoCpus);
    }

    #[test]
    fn missing_memory_is_an_error() {
        let dtb = include_bytes!("../tests/fixtures/no-memory.dtb");
        assert_eq!(read(dtb).unwrap_err(), DtError::NoMemory);
    }

    #[test]
    fn short_memory_reg_is_an_error() {
        let dtb = include_bytes!("../tests/fixtures/bad-memory-reg.dtb");
        assert_eq!(read(dtb).unwrap_err(), DtError::BadReg("memory"));
    }

    #[test]
    fn minimal_tree_uses_defaults() {
        // One CPU, one memory range, no /chosen, no UART, no PSCI.
        let p = read(include_bytes!("../tests/fixtures/minimal.dtb")).unwrap();
        assert_eq!(p.slice_name.as_str(), Some("native"));
        assert_eq!(p.bootargs.as_bytes(), b"");
        assert_eq!(p.uart_base, DEFAULT_UART_BASE);
        assert_eq!(p.psci, None);
        assert_eq!((p.gic, p.uart_intid), (None, None));
        assert!(!p.pci_node && p.pci.is_none() && !p.slice_named);
        assert_eq!(p.cpus(), &[0]);
    }

    #[test]
    fn cells_are_read_big_endian() {
        assert_eq!(
            read_cells(&[0, 0, 0, 1, 0, 0, 0, 2, 9], 2),
            Some((0x1_0000_0002, &[9u8][..]))
        );
        assert_eq!(read_cells(&[0, 0, 1], 1), None);
        assert_eq!(read_cells(&[0; 12], 3), None);
        assert_eq!(read_cells(&[1, 2], 0), Some((0, &[1u8, 2][..])));
    }
}
