//! PCI configuration space (PCI Local Bus 3.0 §6, PCIe Base 4.0 §7): finding functions on a
//! bus, sizing and placing their BARs, walking capabilities. The hypervisor owns the physical
//! PCIe hierarchy; the accessor that actually reads ECAM lives in the architecture layer.
//! [`topology`] numbers and lists the whole hierarchy, [`windows`] places every BAR and
//! bridge window, [`reset`] resets a function (FLR).

pub mod isolation;
pub mod reset;
pub mod topology;
pub mod windows;

pub use reset::flr;

#[cfg(test)]
mod hierarchy_tests;

use alloc::vec::Vec;

use tock_registers::{LocalRegisterCopy, register_bitfields};

use crate::inventory::{PcieHost, Region};

/// Bus/device/function of a PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    pub const fn new(bus: u8, device: u8, function: u8) -> Self {
        Self {
            bus,
            device,
            function,
        }
    }

    /// Requester ID (also the ITS DeviceID on QEMU virt, whose `msi-map` is the identity).
    pub const fn requester_id(self) -> u16 {
        (self.bus as u16) << 8 | (self.device as u16) << 3 | self.function as u16
    }

    /// Byte offset of this function's configuration space inside ECAM.
    pub const fn ecam_offset(self, bus_start: u8) -> u64 {
        ((self.bus.wrapping_sub(bus_start) as u64) << 20)
            | (self.device as u64) << 15
            | (self.function as u64) << 12
    }
}

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "0000:{:02x}:{:02x}.{}",
            self.bus, self.device, self.function
        )
    }
}

/// Standard configuration header offsets (type 0).
pub mod header {
    pub const VENDOR_DEVICE: u16 = 0x00;
    pub const COMMAND: u16 = 0x04;
    pub const CLASS_REVISION: u16 = 0x08;
    pub const HEADER_TYPE: u16 = 0x0c;
    pub const BAR0: u16 = 0x10;
    pub const CAPABILITIES: u16 = 0x34;
    /// COMMAND bits.
    pub const IO_SPACE: u32 = 1 << 0;
    pub const MEMORY_SPACE: u32 = 1 << 1;
    pub const BUS_MASTER: u32 = 1 << 2;
    pub const INTX_DISABLE: u32 = 1 << 10;
    /// STATUS (upper half of COMMAND's dword): capabilities list present.
    pub const STATUS_CAPABILITIES: u32 = 1 << (16 + 4);
}

/// Capability IDs.
pub mod capability {
    pub const MSI_X: u8 = 0x11;
    pub const PCI_EXPRESS: u8 = 0x10;
}

/// The MSI-X capability (PCI Local Bus 3.0 §6.8.2): offsets inside it and inside its table.
pub mod msix {
    /// Table Offset/Table BIR, from the capability's start.
    pub const TABLE: u16 = 4;
    /// Bytes of one table entry.
    pub const ENTRY_SIZE: u64 = 16;
    /// Message Address (low dword) in an entry.
    pub const ENTRY_ADDRESS_LOW: u64 = 0;
    /// Message Upper Address in an entry.
    pub const ENTRY_ADDRESS_HIGH: u64 = 4;
    /// Message Data in an entry.
    pub const ENTRY_DATA: u64 = 8;
    /// Vector Control in an entry (bit 0: masked).
    pub const ENTRY_VECTOR_CONTROL: u64 = 12;
}

register_bitfields![u32,
    /// The MSI-X capability's first dword: its header and Message Control (PCI Local Bus 3.0
    /// §6.8.2.1-3).
    pub MSIX_CONTROL [
        /// Capability ID (0x11).
        ID OFFSET(0) NUMBITS(8) [],
        /// Next capability pointer.
        NEXT OFFSET(8) NUMBITS(8) [],
        /// Table Size, 0-based.
        TABLE_SIZE OFFSET(16) NUMBITS(11) [],
        /// Function Mask: every vector masked, whatever its own mask bit says.
        FUNCTION_MASK OFFSET(30) NUMBITS(1) [],
        /// MSI-X Enable.
        ENABLE OFFSET(31) NUMBITS(1) []
    ],
    /// Table Offset/Table BIR (PCI Local Bus 3.0 §6.8.2.4).
    pub MSIX_TABLE [
        /// The BAR the table lives in.
        BIR OFFSET(0) NUMBITS(3) [],
        /// Offset inside that BAR, in 8-byte units.
        OFFSET OFFSET(3) NUMBITS(29) []
    ]
];

/// What a function's MSI-X capability says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCapability {
    /// Offset of the capability in configuration space.
    pub offset: u16,
    /// Vectors in the table.
    pub vectors: u16,
    /// The BAR holding the table.
    pub table_bar: u8,
    /// Offset of the table inside that BAR.
    pub table_offset: u64,
}

impl MsixCapability {
    /// The function's MSI-X capability, if it has one.
    pub fn find(config: &mut dyn ConfigSpace, bdf: Bdf) -> Option<MsixCapability> {
        let offset = find_capability(config, bdf, capability::MSI_X)?;
        let control =
            LocalRegisterCopy::<u32, MSIX_CONTROL::Register>::new(config.read(bdf, offset));
        let table = LocalRegisterCopy::<u32, MSIX_TABLE::Register>::new(
            config.read(bdf, offset + msix::TABLE),
        );
        Some(MsixCapability {
            offset,
            vectors: control.read(MSIX_CONTROL::TABLE_SIZE) as u16 + 1,
            table_bar: table.read(MSIX_TABLE::BIR) as u8,
            table_offset: u64::from(table.read(MSIX_TABLE::OFFSET)) * 8,
        })
    }

    /// Bytes of the table.
    pub fn table_size(&self) -> u64 {
        u64::from(self.vectors) * msix::ENTRY_SIZE
    }

    /// Sets MSI-X Enable and Function Mask as given (the rest of Message Control is kept).
    pub fn set_control(
        &self,
        config: &mut dyn ConfigSpace,
        bdf: Bdf,
        enable: bool,
        function_mask: bool,
    ) {
        let mut control =
            LocalRegisterCopy::<u32, MSIX_CONTROL::Register>::new(config.read(bdf, self.offset));
        control.modify(
            MSIX_CONTROL::ENABLE.val(u32::from(enable))
                + MSIX_CONTROL::FUNCTION_MASK.val(u32::from(function_mask)),
        );
        config.write(bdf, self.offset, control.get());
    }
}

/// Class code of an NVM Express controller (mass storage / NVM / NVMe).
pub const CLASS_NVME: u32 = 0x01_08_02;

/// Access to configuration space (ECAM on the node, or a fake in tests).
pub trait ConfigSpace {
    fn read(&mut self, function: Bdf, offset: u16) -> u32;
    fn write(&mut self, function: Bdf, offset: u16, value: u32);
}

/// A function found on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// Base class, subclass, programming interface.
    pub class: u32,
}

/// Every function on `bus` (devices 0-31, functions 0-7 of multi-function devices).
pub fn scan_bus(config: &mut dyn ConfigSpace, bus: u8) -> Vec<Function> {
    let mut found = Vec::new();
    for device in 0..32 {
        for function in 0..8 {
            let bdf = Bdf::new(bus, device, function);
            let ids = config.read(bdf, header::VENDOR_DEVICE);
            if ids & 0xffff == 0xffff {
                if function == 0 {
                    break;
                }
                continue;
            }
            found.push(Function {
                bdf,
                vendor: ids as u16,
                device: (ids >> 16) as u16,
                class: config.read(bdf, header::CLASS_REVISION) >> 8,
            });
            let multifunction = config.read(bdf, header::HEADER_TYPE) & (1 << 23) != 0;
            if function == 0 && !multifunction {
                break;
            }
        }
    }
    found
}

/// A memory BAR as found by sizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBar {
    /// BAR index (0-5); a 64-bit BAR also uses `index + 1`.
    pub index: u8,
    pub size: u64,
    pub is_64bit: bool,
    pub prefetchable: bool,
}

/// Sizes memory BAR `index` of a type-0 function (writes all-ones, reads the mask back,
/// restores the old value). None for an unimplemented or I/O BAR.
pub fn size_bar(config: &mut dyn ConfigSpace, bdf: Bdf, index: u8) -> Option<MemoryBar> {
    let offset = header::BAR0 + 4 * u16::from(index);
    let original = config.read(bdf, offset);
    if original & 1 != 0 {
        return None;
    }
    let is_64bit = (original >> 1) & 0b11 == 0b10;
    config.write(bdf, offset, u32::MAX);
    let low = config.read(bdf, offset) & !0xf;
    config.write(bdf, offset, original);
    let mut mask = u64::from(low) | 0xffff_ffff_0000_0000;
    if is_64bit {
        let original_high = config.read(bdf, offset + 4);
        config.write(bdf, offset + 4, u32::MAX);
        let high = config.read(bdf, offset + 4);
        config.write(bdf, offset + 4, original_high);
        mask = u64::from(high) << 32 | u64::from(low);
    }
    if low == 0 && (!is_64bit || mask == 0) {
        return None;
    }
    Some(MemoryBar {
        index,
        size: (!mask).wrapping_add(1),
        is_64bit,
        prefetchable: original & (1 << 3) != 0,
    })
}

/// Programs memory BAR `bar` with PCI bus address `address`.
pub fn set_bar(config: &mut dyn ConfigSpace, bdf: Bdf, bar: &MemoryBar, address: u64) {
    let offset = header::BAR0 + 4 * u16::from(bar.index);
    let flags = config.read(bdf, offset) & 0xf;
    config.write(bdf, offset, (address as u32 & !0xf) | flags);
    if bar.is_64bit {
        config.write(bdf, offset + 4, (address >> 32) as u32);
    }
}

/// Offset of capability `id` in the function's capability list.
pub fn find_capability(config: &mut dyn ConfigSpace, bdf: Bdf, id: u8) -> Option<u16> {
    if config.read(bdf, header::COMMAND) & header::STATUS_CAPABILITIES == 0 {
        return None;
    }
    let mut offset = (config.read(bdf, header::CAPABILITIES) & 0xfc) as u16;
    // At most 48 capabilities fit in 256 bytes: a bound against malformed (looping) lists.
    for _ in 0..48 {
        if offset < 0x40 {
            return None;
        }
        let header = config.read(bdf, offset);
        if header as u8 == id {
            return Some(offset);
        }
        offset = ((header >> 8) & 0xfc) as u16;
    }
    None
}

/// Hands out aligned ranges of a memory window (no freeing).
#[derive(Clone, Copy, Debug)]
pub struct WindowAllocator {
    next: u64,
    end: u64,
}

impl WindowAllocator {
    pub fn new(base: u64, size: u64) -> Self {
        Self {
            next: base,
            end: base.saturating_add(size),
        }
    }

    /// A naturally aligned range of `size` bytes (a power of two, as BAR sizes are).
    pub fn allocate(&mut self, size: u64) -> Option<u64> {
        if !size.is_power_of_two() {
            return None;
        }
        self.allocate_aligned(size, size)
    }

    /// A range of `size` bytes (not zero) starting at a multiple of `align` (a power of two).
    pub fn allocate_aligned(&mut self, size: u64, align: u64) -> Option<u64> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let base = self.next.checked_add(align - 1)? & !(align - 1);
        let end = base.checked_add(size)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some(base)
    }
}

/// A memory BAR placed in one of the host bridge's windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedBar {
    pub bar: MemoryBar,
    /// Its PCI bus address (what the BAR holds).
    pub pci: u64,
    /// Where the CPU reaches it (the window's CPU side).
    pub cpu: Region,
}

/// A BAR of the function did not fit in the host bridge's memory windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoomForBar(pub MemoryBar);

/// The host bridge's memory windows while BARs are handed out: every function placed through
/// the same value gets BARs that never overlap (one per node, kept from the first function
/// placed to the last).
#[derive(Clone, Debug)]
pub struct BarWindows {
    /// Each window's allocator, with its PCI and CPU base addresses.
    windows: Vec<(WindowAllocator, u64, u64)>,
    /// Functions placed so far, with their BARs.
    placed: Vec<(Bdf, Vec<PlacedBar>)>,
}

impl BarWindows {
    /// The windows of `host` (32-bit first), all free.
    pub fn new(host: &PcieHost) -> Self {
        Self {
            windows: [host.mem32, host.mem64]
                .into_iter()
                .flatten()
                .map(|w| (WindowAllocator::new(w.pci, w.size), w.pci, w.cpu))
                .collect(),
            placed: Vec::new(),
        }
    }

    /// Room for `bar` (a 32-bit BAR only below 4 GiB): its PCI address and its CPU address.
    fn place(&mut self, bar: &MemoryBar) -> Option<(u64, u64)> {
        self.windows
            .iter_mut()
            .find_map(|(window, pci_base, cpu_base)| {
                let mut trial = *window;
                let address = trial.allocate(bar.size)?;
                if !bar.is_64bit && address.checked_add(bar.size)? > 1 << 32 {
                    return None;
                }
                *window = trial;
                Some((address, *cpu_base + (address - *pci_base)))
            })
    }
}

/// Turns off Enable No Snoop in `bdf`'s Device Control, when it has a PCIe capability. A
/// No Snoop read bypasses the CPUs' caches: where a slice's RAM was just scrubbed (zeros
/// still dirty in the cache, which with FEAT_S2FWB is never cleaned to memory), such a read
/// by the slice's NIC or by the NVMe controller on its behalf would fetch what the last
/// tenant left in memory, and send it or write it to the new tenant's disk (found in review,
/// 2026-12-04). Every device the hypervisor sets up keeps its DMA coherent.
pub fn disable_no_snoop(config: &mut dyn ConfigSpace, bdf: Bdf) {
    if let Some(express) = find_capability(config, bdf, capability::PCI_EXPRESS) {
        let offset = express + reset::express::DEVICE_CONTROL_STATUS;
        // The upper half is Device Status, whose bits are cleared by writing ones: write zeros.
        let control = config.read(bdf, offset) & 0xffff;
        config.write(
            bdf,
            offset,
            control & !(reset::express::ENABLE_NO_SNOOP | reset::express::INITIATE_FLR),
        );
    }
}

/// Places every memory BAR of type-0 function `bdf` in `windows`, with memory decoding and
/// bus mastering off while it happens (and left off), and No Snoop disabled
/// ([`disable_no_snoop`]). Returns the BARs with their CPU addresses. A function `windows`
/// already placed (e.g. by [`windows::place_hierarchy`]) keeps its addresses: its BARs are
/// written again with them.
pub fn place_bars(
    config: &mut dyn ConfigSpace,
    windows: &mut BarWindows,
    bdf: Bdf,
) -> Result<Vec<PlacedBar>, NoRoomForBar> {
    // COMMAND's upper half is STATUS, whose bits are cleared by writing ones: write zeros.
    let command = config.read(bdf, header::COMMAND) & 0xffff;
    config.write(
        bdf,
        header::COMMAND,
        command & !(header::MEMORY_SPACE | header::BUS_MASTER),
    );
    disable_no_snoop(config, bdf);
    if let Some(bars) = windows.placed(bdf).map(<[PlacedBar]>::to_vec) {
        for placed in &bars {
            set_bar(config, bdf, &placed.bar, placed.pci);
        }
        return Ok(bars);
    }
    let mut bars = Vec::new();
    let mut index = 0;
    while index < 6 {
        let Some(bar) = size_bar(config, bdf, index) else {
            index += 1;
            continue;
        };
        let (address, cpu) = windows.place(&bar).ok_or(NoRoomForBar(bar))?;
        set_bar(config, bdf, &bar, address);
        bars.push(PlacedBar {
            bar,
            pci: address,
            cpu: Region::new(cpu, bar.size),
        });
        index += if bar.is_64bit { 2 } else { 1 };
    }
    windows.placed.push((bdf, bars.clone()));
    Ok(bars)
}

/// Sets up a type-0 function for the hypervisor's own use: its BARs placed in `windows`
/// ([`place_bars`]), then memory decoding and bus mastering on with INTx disabled. On an error
/// the function is left with decoding off.
pub fn configure_function(
    config: &mut dyn ConfigSpace,
    windows: &mut BarWindows,
    bdf: Bdf,
) -> Result<Vec<PlacedBar>, NoRoomForBar> {
    let bars = place_bars(config, windows, bdf)?;
    let command = config.read(bdf, header::COMMAND) & 0xffff;
    config.write(
        bdf,
        header::COMMAND,
        command | header::MEMORY_SPACE | header::BUS_MASTER | header::INTX_DISABLE,
    );
    Ok(bars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    /// A config space with one host bridge at 00:00.0 and one NVMe controller at 00:02.0
    /// (16 KiB 64-bit BAR0, an MSI-X capability at 0x40 after a PCIe capability at 0x80).
    #[derive(Default)]
    struct Fake {
        regs: BTreeMap<(Bdf, u16), u32>,
        bar_sizes: BTreeMap<(Bdf, u16), u32>,
    }

    impl Fake {
        fn node() -> Self {
            let mut f = Fake::default();
            let bridge = Bdf::new(0, 0, 0);
            f.regs.insert((bridge, 0), 0x0008_1b36);
            f.regs.insert((bridge, 8), 0x0600_0000);
            let nvme = Bdf::new(0, 2, 0);
            f.regs.insert((nvme, 0), 0x0010_1b36);
            f.regs.insert((nvme, 4), header::STATUS_CAPABILITIES);
            f.regs.insert((nvme, 8), 0x0108_0202);
            f.regs.insert((nvme, 0x10), 0b100);
            f.regs.insert((nvme, 0x34), 0x80);
            f.regs.insert((nvme, 0x80), 0x0000_4010);
            f.regs.insert((nvme, 0x40), 0x0000_0011);
            f.bar_sizes.insert((nvme, 0x10), !(0x4000 - 1));
            f.bar_sizes.insert((nvme, 0x14), u32::MAX);
            f
        }
    }

    impl ConfigSpace for Fake {
        fn read(&mut self, f: Bdf, offset: u16) -> u32 {
            self.regs
                .get(&(f, offset))
                .copied()
                .unwrap_or(if offset == 0 { u32::MAX } else { 0 })
        }
        fn write(&mut self, f: Bdf, offset: u16, value: u32) {
            let is_bar = (0x10..0x28).contains(&offset);
            let value = match self.bar_sizes.get(&(f, offset)) {
                Some(mask) if value == u32::MAX => *mask | (self.read(f, offset) & 0xf),
                // Unimplemented BARs are hardwired to zero.
                None if is_bar => 0,
                _ => value,
            };
            self.regs.insert((f, offset), value);
        }
    }

    #[test]
    fn finds_the_functions_of_a_bus() {
        let mut fake = Fake::node();
        let found = scan_bus(&mut fake, 0);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[1],
            Function {
                bdf: Bdf::new(0, 2, 0),
                vendor: 0x1b36,
                device: 0x0010,
                class: CLASS_NVME
            }
        );
    }

    #[test]
    fn sizes_and_places_a_64bit_bar() {
        let mut fake = Fake::node();
        let nvme = Bdf::new(0, 2, 0);
        let bar = size_bar(&mut fake, nvme, 0).unwrap();
        assert_eq!(
            bar,
            MemoryBar {
                index: 0,
                size: 0x4000,
                is_64bit: true,
                prefetchable: false
            }
        );
        assert_eq!(fake.read(nvme, 0x10), 0b100, "original restored");
        set_bar(&mut fake, nvme, &bar, 0x80_0000_4000);
        assert_eq!(fake.read(nvme, 0x10), 0x4004);
        assert_eq!(fake.read(nvme, 0x14), 0x80);
        assert_eq!(size_bar(&mut fake, nvme, 2), None, "unimplemented BAR");
    }

    #[test]
    fn walks_capabilities_and_stops_on_loops() {
        let mut fake = Fake::node();
        let nvme = Bdf::new(0, 2, 0);
        assert_eq!(
            find_capability(&mut fake, nvme, capability::MSI_X),
            Some(0x40)
        );
        assert_eq!(
            find_capability(&mut fake, nvme, capability::PCI_EXPRESS),
            Some(0x80)
        );
        assert_eq!(find_capability(&mut fake, nvme, 0x05), None);
        fake.regs.insert((nvme, 0x40), 0x0000_8099);
        assert_eq!(
            find_capability(&mut fake, nvme, 0x05),
            None,
            "0x40 -> 0x80 -> 0x40 ... ends"
        );
        assert_eq!(
            find_capability(&mut fake, Bdf::new(0, 0, 0), capability::MSI_X),
            None,
            "no list"
        );
    }

    fn window(pci: u64, cpu: u64, size: u64) -> Option<crate::inventory::PciWindow> {
        Some(crate::inventory::PciWindow { pci, cpu, size })
    }

    fn host(mem32: u64, mem64: u64) -> PcieHost {
        PcieHost {
            ecam: Region::new(0x40_1000_0000, 0x1000_0000),
            bus_start: 0,
            bus_end: 0xff,
            mem32: window(0x1000_0000, mem32, 0x1000_0000),
            mem64: window(0x80_0000_0000, mem64, 0x80_0000_0000),
            iommu_map: None,
            msi_map: None,
        }
    }

    #[test]
    fn configures_a_function_in_the_first_window_with_room() {
        let mut fake = Fake::node();
        let nvme = Bdf::new(0, 2, 0);
        fake.regs.insert((nvme, 4), header::STATUS_CAPABILITIES | 1);
        let bars = configure_function(
            &mut fake,
            &mut BarWindows::new(&host(0x3_1000_0000, 0x80_0000_0000)),
            nvme,
        );
        assert_eq!(
            bars,
            Ok(alloc::vec![PlacedBar {
                bar: size_bar(&mut fake, nvme, 0).unwrap(),
                pci: 0x1000_0000,
                cpu: Region::new(0x3_1000_0000, 0x4000),
            }])
        );
        assert_eq!(fake.read(nvme, 0x10), 0x1000_0004, "bus address");
        let command = fake.read(nvme, header::COMMAND);
        assert_eq!(
            command & 0xffff,
            1 | header::MEMORY_SPACE | header::BUS_MASTER | header::INTX_DISABLE
        );
    }

    #[test]
    fn a_bar_that_fits_no_window_is_refused() {
        let mut fake = Fake::node();
        let nvme = Bdf::new(0, 2, 0);
        let mut small = host(0x1000_0000, 0x80_0000_0000);
        small.mem32 = window(0x1000_0000, 0x1000_0000, 0x2000);
        small.mem64 = None;
        let bar = size_bar(&mut fake, nvme, 0).unwrap();
        assert_eq!(
            configure_function(&mut fake, &mut BarWindows::new(&small), nvme),
            Err(NoRoomForBar(bar))
        );
        assert_eq!(fake.read(nvme, header::COMMAND) & 0b110, 0, "decoding off");
        // A 32-bit BAR never goes above 4 GiB.
        fake.regs.insert((nvme, 0x10), 0);
        fake.bar_sizes.remove(&(nvme, 0x14));
        let mut high = host(0, 0x80_0000_0000);
        high.mem32 = None;
        let bar = size_bar(&mut fake, nvme, 0).unwrap();
        assert_eq!(
            configure_function(&mut fake, &mut BarWindows::new(&high), nvme),
            Err(NoRoomForBar(bar))
        );
    }

    #[test]
    fn reads_and_switches_msix() {
        let mut fake = Fake::node();
        let nvme = Bdf::new(0, 2, 0);
        fake.regs.insert((nvme, 0x40), 0x0040_0011);
        fake.regs.insert((nvme, 0x44), 0x2000 | 2);
        let msix = MsixCapability::find(&mut fake, nvme).unwrap();
        assert_eq!(
            msix,
            MsixCapability {
                offset: 0x40,
                vectors: 65,
                table_bar: 2,
                table_offset: 0x2000
            }
        );
        assert_eq!(msix.table_size(), 65 * 16);
        msix.set_control(&mut fake, nvme, true, true);
        assert_eq!(fake.read(nvme, 0x40), 0xc040_0011);
        msix.set_control(&mut fake, nvme, true, false);
        assert_eq!(fake.read(nvme, 0x40), 0x8040_0011);
        assert_eq!(MsixCapability::find(&mut fake, Bdf::new(0, 0, 0)), None);
    }

    #[test]
    fn window_allocation_is_aligned_and_bounded() {
        let mut window = WindowAllocator::new(0x1000_1000, 0x10_0000);
        assert_eq!(window.allocate(0x4000), Some(0x1000_4000));
        assert_eq!(window.allocate(0x1000), Some(0x1000_8000));
        assert_eq!(window.allocate(0x3000), None, "not a power of two");
        assert_eq!(window.allocate(0x10_0000), None, "does not fit");
    }

    #[test]
    fn addresses() {
        let bdf = Bdf::new(1, 2, 3);
        assert_eq!(bdf.requester_id(), 0x0113);
        assert_eq!(bdf.ecam_offset(0), 0x11_3000);
        assert_eq!(alloc::format!("{bdf}"), "0000:01:02.3");
    }
}
