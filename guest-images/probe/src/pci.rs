//! PCI configuration space as the probe's NVMe driver uses it (PCI Local Bus
//! 3.0 §6, PCIe Base 4.0 §7.2.2 ECAM): where a function's registers are in
//! the ECAM region, what a BAR sizing read-back means, and placing BARs in a
//! host bridge's memory window.

use core::fmt;

use crate::dt::PciWindow;

/// Offsets in a type-0 configuration header (always accessed as dwords).
pub mod config {
    /// Vendor ID (15:0), device ID (31:16).
    pub const ID: u16 = 0x00;
    /// Command (15:0), status (31:16).
    pub const COMMAND: u16 = 0x04;
    /// Revision (7:0), class code (31:8).
    pub const CLASS_REVISION: u16 = 0x08;
    /// Cache line, latency timer, header type (23:16), BIST.
    pub const HEADER: u16 = 0x0c;
    /// BAR 0; BAR n is at `BAR0 + 4 * n`.
    pub const BAR0: u16 = 0x10;
    /// BARs of a type-0 header.
    pub const BARS: usize = 6;
    /// Capabilities pointer (7:0) of type-0 and type-1 headers.
    pub const CAP_POINTER: u16 = 0x34;
    /// Start of PCIe extended configuration space.
    pub const EXTENDED: u16 = 0x100;
    /// End of a function's configuration space (ECAM: 4 KiB).
    pub const END: u16 = 0x1000;
}

/// Offsets in a type-1 (bridge) header (PCI-to-PCI Bridge 1.2 §3.2).
pub mod bridge {
    /// Primary (7:0), secondary (15:8), subordinate (23:16) bus numbers.
    pub const BUSES: u16 = 0x18;
    /// Memory base (15:0) and limit (31:16): address bits 31:20.
    pub const MEMORY: u16 = 0x20;
    /// Prefetchable memory base (15:0) and limit (31:16).
    pub const PREFETCH: u16 = 0x24;
    /// Upper 32 bits of the prefetchable base.
    pub const PREFETCH_BASE_UPPER: u16 = 0x28;
    /// Upper 32 bits of the prefetchable limit.
    pub const PREFETCH_LIMIT_UPPER: u16 = 0x2c;
    /// BARs of a type-1 header.
    pub const BARS: usize = 2;
    /// Bridge windows are 1 MiB granular.
    pub const WINDOW_GRANULE: u64 = 1 << 20;
}

/// The bus-number dword of a bridge: primary, secondary, subordinate (latency timer kept).
pub fn bridge_buses(old: u32, primary: u8, secondary: u8, subordinate: u8) -> u32 {
    (old & 0xff00_0000)
        | u32::from(primary)
        | (u32::from(secondary) << 8)
        | (u32::from(subordinate) << 16)
}

/// The memory base/limit dword forwarding `[base, base + size)` (1 MiB aligned, below 4 GiB);
/// an empty window (base above limit) for `size == 0`.
pub fn bridge_memory_window(base: u64, size: u64) -> u32 {
    if size == 0 {
        return 0x0000_fff0;
    }
    let last = base + size - 1;
    (((base >> 16) as u32) & 0xfff0) | (((last >> 16) as u32 & 0xfff0) << 16)
}

/// The prefetchable base/limit dword that disables the prefetchable window.
pub const BRIDGE_PREFETCH_OFF: u32 = 0x0000_fff0;

/// Class code of a PCI-to-PCI bridge (bridge, PCI-to-PCI, any interface).
pub fn is_pci_bridge_class(class: u32) -> bool {
    class >> 8 == 0x06_04
}

/// Command register: memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: bus master (the function may do DMA and send MSIs).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: legacy INTx disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// Class code of an NVM Express I/O controller (mass storage, NVM, NVMe).
pub const CLASS_NVME: u32 = 0x01_08_02;

/// A function's bus, device and function numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    /// Bus.
    pub bus: u8,
    /// Device (0..32).
    pub device: u8,
    /// Function (0..8).
    pub function: u8,
}

impl Bdf {
    /// The requester ID: bus in 15:8, device in 7:3, function in 2:0.
    pub fn requester_id(self) -> u32 {
        u32::from(self.bus) << 8 | u32::from(self.device & 0x1f) << 3 | u32::from(self.function & 7)
    }

    /// Offset of configuration register `reg` in an ECAM region whose first
    /// bus is `bus_start`: bus in 27:20, device in 19:15, function in 14:12.
    pub fn ecam_offset(self, bus_start: u8, reg: u16) -> u64 {
        (u64::from(self.bus - bus_start) << 20)
            | (u64::from(self.device & 31) << 15)
            | (u64::from(self.function & 7) << 12)
            | u64::from(reg & 0xffc)
    }
}

/// `bb:dd.f`, as lspci writes it.
impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Whether an ID dword says a function is there (vendor 0xffff: nothing).
pub fn function_present(id: u32) -> bool {
    id & 0xffff != 0xffff && id & 0xffff != 0
}

/// Header type dword: whether function 0 has functions 1..7 (bit 23).
pub fn multifunction(header: u32) -> bool {
    header & (1 << 23) != 0
}

/// Header type dword: the layout (0 = endpoint, 1 = bridge).
pub fn header_layout(header: u32) -> u8 {
    ((header >> 16) & 0x7f) as u8
}

/// What kind of BAR it is (bits 2:0 of the low dword).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O space; the probe never assigns these (no I/O window).
    Io,
    /// 32-bit memory.
    Mem32,
    /// 64-bit memory: this BAR and the next form one address.
    Mem64,
}

/// One BAR after sizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Its kind.
    pub kind: BarKind,
    /// Prefetchable (bit 3).
    pub prefetchable: bool,
    /// Size in bytes (a power of two), 0 if the BAR is not implemented.
    pub size: u64,
}

impl Bar {
    /// Decodes what a BAR reads back after all-ones were written to it:
    /// `low` and, for a 64-bit BAR, `high` (the next BAR's read-back).
    pub fn from_sizing(low: u32, high: u32) -> Bar {
        if low & 1 == 1 {
            let mask = u64::from(low & !0x3) | 0xffff_0000;
            return Bar {
                kind: BarKind::Io,
                prefetchable: false,
                size: size_from_mask(mask, 32),
            };
        }
        let kind = match (low >> 1) & 3 {
            0b10 => BarKind::Mem64,
            _ => BarKind::Mem32,
        };
        let mask = match kind {
            BarKind::Mem64 => (u64::from(high) << 32) | u64::from(low & !0xf),
            _ => u64::from(low & !0xf),
        };
        let bits = if kind == BarKind::Mem64 { 64 } else { 32 };
        Bar {
            kind,
            prefetchable: low & (1 << 3) != 0,
            size: size_from_mask(mask, bits),
        }
    }

    /// Whether the BAR decodes anything.
    pub fn implemented(&self) -> bool {
        self.size != 0
    }
}

/// Size from the address bits a BAR keeps writable: the lowest set bit.
fn size_from_mask(mask: u64, bits: u32) -> u64 {
    let mask = if bits == 32 { mask & 0xffff_ffff } else { mask };
    if mask == 0 {
        0
    } else {
        1 << mask.trailing_zeros()
    }
}

/// Hands out naturally aligned pieces of a host bridge memory window.
#[derive(Clone, Copy, Debug)]
pub struct WindowAllocator {
    window: PciWindow,
    /// Next free offset in the window.
    next: u64,
}

/// A placed BAR: the PCI address to program and the CPU address to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The bus address written to the BAR.
    pub pci: u64,
    /// The guest-physical address the CPU uses.
    pub cpu: u64,
}

impl WindowAllocator {
    /// An allocator over all of `window`.
    pub fn new(window: PciWindow) -> Self {
        Self { window, next: 0 }
    }

    /// `size` bytes (a power of two) aligned to `size` in PCI address
    /// space; None if the window is full. A 32-bit BAR must end below
    /// 4 GiB in PCI space.
    pub fn place(&mut self, size: u64, below_4g: bool) -> Option<Placement> {
        if size == 0 || !size.is_power_of_two() {
            return None;
        }
        let pci = self
            .window
            .pci
            .checked_add(self.next)?
            .checked_next_multiple_of(size)?;
        let offset = pci - self.window.pci;
        let end = offset.checked_add(size)?;
        if end > self.window.size || (below_4g && pci.checked_add(size)? > 1 << 32) {
            return None;
        }
        self.next = end;
        Some(Placement {
            pci,
            cpu: self.window.cpu + offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecam_offsets() {
        let f = Bdf {
            bus: 0,
            device: 2,
            function: 0,
        };
        assert_eq!(f.ecam_offset(0, config::BAR0), 0x1_0010);
        let g = Bdf {
            bus: 3,
            device: 31,
            function: 7,
        };
        assert_eq!(g.ecam_offset(1, 0x3e), 0x20_0000 | 0xf_8000 | 0x7000 | 0x3c);
        assert_eq!(format!("{g}"), "03:1f.7");
    }

    #[test]
    fn bridge_registers() {
        assert_eq!(bridge_buses(0x1200_0000, 0, 1, 0xff), 0x12ff_0100);
        // [0x1010_0000, 0x1020_0000): base 0x101, limit 0x101.
        assert_eq!(bridge_memory_window(0x1010_0000, 1 << 20), 0x1010_1010);
        assert_eq!(bridge_memory_window(0x1000_0000, 2 << 20), 0x1010_1000);
        assert_eq!(bridge_memory_window(0, 0), 0x0000_fff0);
        assert!(is_pci_bridge_class(0x06_04_00));
        assert!(!is_pci_bridge_class(0x02_00_00));
    }

    #[test]
    fn presence_and_header() {
        assert!(!function_present(0xffff_ffff));
        assert!(function_present(0x0010_1b36));
        assert!(multifunction(0x0080_0000));
        assert_eq!(header_layout(0x0081_0000), 1);
    }

    #[test]
    fn sixty_four_bit_bar_of_16k() {
        // The microvisor's BAR0: 64-bit, non-prefetchable, 16 KiB.
        let bar = Bar::from_sizing(0xffff_c004, 0xffff_ffff);
        assert_eq!(
            bar,
            Bar {
                kind: BarKind::Mem64,
                prefetchable: false,
                size: 0x4000
            }
        );
        assert!(bar.implemented());
    }

    #[test]
    fn thirty_two_bit_prefetchable_and_io_and_absent() {
        assert_eq!(
            Bar::from_sizing(0xfff0_0008, 0),
            Bar {
                kind: BarKind::Mem32,
                prefetchable: true,
                size: 1 << 20
            }
        );
        assert_eq!(Bar::from_sizing(0xffff_ffe1, 0).kind, BarKind::Io);
        assert_eq!(Bar::from_sizing(0xffff_ffe1, 0).size, 32);
        assert!(!Bar::from_sizing(0, 0).implemented());
        // A 64-bit BAR larger than 4 GiB: the size comes from the high dword.
        assert_eq!(Bar::from_sizing(0x0000_000c, 0xffff_fffe).size, 1 << 33);
    }

    #[test]
    fn placement_is_aligned_and_bounded() {
        let window = PciWindow {
            cpu: 0x1000_0000,
            pci: 0x1000_0000,
            size: 0x10_0000,
            prefetchable: false,
        };
        let mut a = WindowAllocator::new(window);
        assert_eq!(
            a.place(0x1000, true),
            Some(Placement {
                pci: 0x1000_0000,
                cpu: 0x1000_0000
            })
        );
        // Natural alignment: a 16 KiB BAR skips to the next 16 KiB.
        assert_eq!(a.place(0x4000, true).unwrap().pci, 0x1000_4000);
        assert_eq!(a.place(0x8_0000, true).unwrap().pci, 0x1008_0000);
        assert_eq!(a.place(0x8_0000, true), None, "window full");
        assert_eq!(a.place(0x3000, true), None, "not a power of two");
    }

    #[test]
    fn placement_translates_pci_to_cpu() {
        let window = PciWindow {
            cpu: 0x80_0000_0000,
            pci: 0x4000_0000,
            size: 0x4000_0000,
            prefetchable: false,
        };
        let mut a = WindowAllocator::new(window);
        assert_eq!(
            a.place(0x4000, true),
            Some(Placement {
                pci: 0x4000_0000,
                cpu: 0x80_0000_0000
            })
        );
        let high = PciWindow {
            cpu: 0x1_0000_0000,
            pci: 0xffff_0000,
            size: 0x2_0000,
            prefetchable: false,
        };
        let mut b = WindowAllocator::new(high);
        assert_eq!(b.place(0x1_0000, true).unwrap().pci, 0xffff_0000);
        assert_eq!(b.place(0x1_0000, true), None, "would cross 4 GiB");
        assert_eq!(b.place(0x1_0000, false).unwrap().pci, 0x1_0000_0000);
    }

    #[test]
    fn requester_ids() {
        let b = |bus, device, function| Bdf {
            bus,
            device,
            function,
        };
        assert_eq!(b(0, 0, 0).requester_id(), 0);
        assert_eq!(b(0, 1, 0).requester_id(), 8);
        assert_eq!(b(1, 0, 0).requester_id(), 0x100);
        assert_eq!(b(2, 3, 4).requester_id(), 0x21c);
    }
}
