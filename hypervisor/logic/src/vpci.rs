//! The PCI side of a slice's virtual NVMe controller: function 00:00.0 on the slice's own
//! emulated ECAM (PCI Local Bus 3.0 §6, PCIe Base 4.0 §7.5, §7.7.2 MSI-X). It has one 64-bit
//! memory BAR (the controller's registers, doorbells, MSI-X table and PBA), an MSI-X
//! capability and a PCI Express capability (root-complex integrated endpoint). Everything the
//! guest writes that is not a BAR, the command register, the MSI-X control bits or Initiate
//! FLR (which resets the function) is ignored.

/// Vendor and device ID the function reports. Linux's `nvme` driver binds by class code; no
/// quirk table entry matches this pair.
pub const VENDOR_ID: u16 = 0x1b36;
pub const DEVICE_ID: u16 = 0x00f0;
/// Size of BAR0: registers (0x0), doorbells (0x1000), MSI-X table (0x2000), PBA (0x3000).
pub const BAR0_SIZE: u64 = 0x4000;
/// Where the MSI-X table and PBA sit in BAR0.
pub const MSIX_TABLE: u64 = 0x2000;
pub const MSIX_PBA: u64 = 0x3000;
/// Bytes of ECAM the slice's host bridge has (bus 0 only).
pub const ECAM_SIZE: u64 = 1 << 20;

const MSIX_CAP: u16 = 0x40;
const PCIE_CAP: u16 = 0x60;
const COMMAND_WRITABLE: u16 = 0x0406; // memory space, bus master, INTx disable
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// The function's configuration state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualFunction {
    vectors: u16,
    command: u16,
    /// BAR0 as programmed (address bits only).
    bar0: u64,
    msix_control: u16,
}

impl VirtualFunction {
    /// A function in its reset state with `vectors` MSI-X vectors (1..=2048).
    pub fn new(vectors: u16) -> Self {
        Self {
            vectors: vectors.clamp(1, 2048),
            command: 0,
            bar0: 0,
            msix_control: 0,
        }
    }

    /// Reads the configuration dword at `offset` of function `devfn` (only 0 exists).
    pub fn config_read(&self, devfn: u8, offset: u16) -> u32 {
        if devfn != 0 {
            return u32::MAX;
        }
        match offset & !3 {
            0x00 => u32::from(DEVICE_ID) << 16 | u32::from(VENDOR_ID),
            // Status: capabilities list.
            0x04 => 1 << 20 | u32::from(self.command),
            // Class: mass storage, NVM, NVM Express; revision 1.
            0x08 => 0x0108_0201,
            0x0c => 0,
            0x10 => (self.bar0 as u32) | 0b100,
            0x14 => (self.bar0 >> 32) as u32,
            0x2c => u32::from(DEVICE_ID) << 16 | u32::from(VENDOR_ID),
            0x34 => u32::from(MSIX_CAP),
            // MSI-X: ID, next, message control (table size N-1).
            o if o == MSIX_CAP => {
                u32::from(self.msix_control | (self.vectors - 1)) << 16
                    | u32::from(PCIE_CAP) << 8
                    | 0x11
            }
            o if o == MSIX_CAP + 4 => MSIX_TABLE as u32,
            o if o == MSIX_CAP + 8 => MSIX_PBA as u32,
            // PCI Express capability v2, root complex integrated endpoint.
            o if o == PCIE_CAP => 0x0092 << 16 | 0x10,
            // Device capabilities: 128-byte payload, function level reset.
            o if o == PCIE_CAP + 4 => 1 << 28,
            _ => 0,
        }
    }

    /// Writes `value` (a whole dword; sub-dword writes are merged by the caller with
    /// [`merge`]) at `offset` of function `devfn`. Returns true if the function asked for a
    /// function level reset.
    pub fn config_write(&mut self, devfn: u8, offset: u16, value: u32) -> bool {
        if devfn != 0 {
            return false;
        }
        match offset & !3 {
            0x04 => self.command = value as u16 & COMMAND_WRITABLE,
            0x10 => {
                self.bar0 =
                    (self.bar0 & !0xffff_ffff) | u64::from(value) & !(BAR0_SIZE - 1) & 0xffff_ffff
            }
            0x14 => self.bar0 = (self.bar0 & 0xffff_ffff) | u64::from(value) << 32,
            o if o == MSIX_CAP => {
                self.msix_control = (value >> 16) as u16 & (MSIX_ENABLE | MSIX_FUNCTION_MASK)
            }
            // Device control: Initiate Function Level Reset (bit 15).
            o if o == PCIE_CAP + 8 && value & (1 << 15) != 0 => {
                *self = VirtualFunction::new(self.vectors);
                return true;
            }
            _ => {}
        }
        false
    }

    /// Where BAR0 is decoded: its guest-physical base, when memory decoding is on and the BAR
    /// holds an address (not the all-ones sizing pattern).
    pub fn bar0(&self) -> Option<u64> {
        let sizing = self.bar0 == !(BAR0_SIZE - 1);
        (self.command & 0b10 != 0 && self.bar0 != 0 && !sizing).then_some(self.bar0)
    }

    /// MSI-X enabled and not function-masked.
    pub fn msix_enabled(&self) -> bool {
        self.msix_control & (MSIX_ENABLE | MSIX_FUNCTION_MASK) == MSIX_ENABLE
    }

    /// Bus mastering on (the device may do DMA and send MSIs).
    pub fn bus_master(&self) -> bool {
        self.command & 0b100 != 0
    }
}

/// Merges a `width`-byte write at byte `offset` into the dword `old`.
pub fn merge(old: u32, offset: u16, width: u8, value: u64) -> u32 {
    let shift = 8 * u32::from(offset & 3);
    let mask = match width {
        1 => 0xffu32,
        2 => 0xffff,
        _ => u32::MAX,
    }
    .checked_shl(shift)
    .unwrap_or(0);
    (old & !mask) | ((value as u32) << shift & mask)
}

/// Extracts a `width`-byte read at byte `offset` from the dword `word`.
pub fn extract(word: u32, offset: u16, width: u8) -> u64 {
    let shift = 8 * u32::from(offset & 3);
    let value = word.checked_shr(shift).unwrap_or(0);
    u64::from(match width {
        1 => value & 0xff,
        2 => value & 0xffff,
        _ => value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_as_an_nvme_controller() {
        let f = VirtualFunction::new(4);
        assert_eq!(f.config_read(0, 0), 0x00f0_1b36);
        assert_eq!(f.config_read(0, 8) >> 8, 0x01_08_02);
        assert_eq!(f.config_read(1, 0), u32::MAX, "no other function");
        assert_eq!(f.config_read(8, 0), u32::MAX, "no other device");
        let msix = f.config_read(0, 0x40);
        assert_eq!(msix & 0xff, 0x11);
        assert_eq!((msix >> 16) & 0x7ff, 3, "table size N-1");
        assert_eq!(f.config_read(0, 0x44), 0x2000);
        assert_eq!(f.config_read(0, 0x60) & 0xff, 0x10);
    }

    #[test]
    fn bar_sizing_and_placement() {
        let mut f = VirtualFunction::new(4);
        f.config_write(0, 0x10, u32::MAX);
        f.config_write(0, 0x14, u32::MAX);
        assert_eq!(f.config_read(0, 0x10), 0xffff_c004, "16 KiB, 64-bit");
        assert_eq!(f.config_read(0, 0x14), u32::MAX);
        assert_eq!(f.bar0(), None, "decoding off");
        f.config_write(0, 0x10, 0x1000_0000);
        f.config_write(0, 0x14, 0);
        f.config_write(0, 0x04, 0x0006);
        assert_eq!(f.bar0(), Some(0x1000_0000));
        assert!(f.bus_master());
        f.config_write(0, 0x10, 0x1000_1234);
        assert_eq!(
            f.bar0(),
            Some(0x1000_0000),
            "low bits of a 16 KiB BAR are read-only"
        );
    }

    #[test]
    fn msix_enable_and_mask() {
        let mut f = VirtualFunction::new(2);
        assert!(!f.msix_enabled());
        f.config_write(0, 0x40, (MSIX_ENABLE as u32) << 16);
        assert!(f.msix_enabled());
        f.config_write(0, 0x40, ((MSIX_ENABLE | MSIX_FUNCTION_MASK) as u32) << 16);
        assert!(!f.msix_enabled());
    }

    #[test]
    fn function_level_reset() {
        let mut f = VirtualFunction::new(2);
        f.config_write(0, 0x04, 6);
        f.config_write(0, 0x10, 0x1000_0000);
        assert!(f.config_write(0, 0x68, 1 << 15));
        assert_eq!(f.bar0(), None);
        assert_eq!(f, VirtualFunction::new(2));
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let mut f = VirtualFunction::new(2);
        f.config_write(0, 0, 0);
        f.config_write(0, 8, 0);
        f.config_write(0, 0x44, 0);
        assert_eq!(f, VirtualFunction::new(2));
    }

    #[test]
    fn sub_dword_access() {
        assert_eq!(merge(0x1122_3344, 2, 1, 0xaa), 0x11aa_3344);
        assert_eq!(merge(0x1122_3344, 0, 2, 0xbbcc), 0x1122_bbcc);
        assert_eq!(extract(0x1122_3344, 1, 1), 0x33);
        assert_eq!(extract(0x1122_3344, 2, 2), 0x1122);
    }
}
