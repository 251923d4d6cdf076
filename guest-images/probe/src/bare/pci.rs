//! PCI enumeration for the NVMe driver: dword configuration accesses through
//! the DT's ECAM (guarded: a fault is an error, not a parked CPU), a scan of
//! the first bus of the bus range for an NVMe function (class 01_08_02), and
//! BAR assignment in the host bridge's 32-bit memory window (no firmware
//! did it). Only the NVMe function is touched.

use core::fmt;

use microvisor_probe::dt::PciHost;
use microvisor_probe::pci::{
    self, Bar, BarKind, Bdf, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_MEMORY,
    WindowAllocator, config,
};

use super::guarded::{self, Fault};

/// Why the NVMe function could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// A configuration access faulted.
    Config {
        /// Register offset.
        reg: u16,
        /// The fault.
        fault: Fault,
    },
    /// The host bridge has no 32-bit memory window for the BARs.
    NoWindow,
    /// BAR `bar` of `size` bytes does not fit the window.
    NoRoom {
        /// BAR index.
        bar: usize,
        /// Its size.
        size: u64,
    },
    /// BAR 0 is not a memory BAR.
    NoBar0,
    /// The ECAM lies in RAM or in the image.
    EcamInRam(u64),
}

/// One token each (they end up in `"nvme"` and `PROBE FAIL`).
impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PciError::Config { reg, fault } => match fault {
                Fault::Exception { esr, .. } => {
                    write!(f, "pci-config-fault(reg={reg:#x},esr={esr:#x})")
                }
                Fault::Unaddressable => write!(f, "pci-config-unaddressable(reg={reg:#x})"),
            },
            PciError::NoWindow => f.write_str("pci-no-32bit-window"),
            PciError::NoRoom { bar, size } => {
                write!(f, "pci-bar-does-not-fit(bar={bar},size={size:#x})")
            }
            PciError::NoBar0 => f.write_str("pci-bar0-not-memory"),
            PciError::EcamInRam(addr) => write!(f, "pci-ecam-in-ram({addr:#x})"),
        }
    }
}

/// Configuration space of one host bridge.
#[derive(Clone, Copy, Debug)]
pub struct Ecam {
    host: PciHost,
}

impl Ecam {
    /// The bridge's ECAM; refused if it overlaps RAM or the image (the
    /// guarded accesses below must never touch a Rust object).
    pub fn new(host: PciHost) -> Result<Self, PciError> {
        let base = host.ecam.base;
        let end = host.ecam.end();
        let overlaps = super::PLATFORM
            .get()
            .is_some_and(|p| p.memory().iter().any(|m| m.base < end && base < m.end()));
        let image = super::footprint();
        if overlaps || (image.start < end && base < image.end) {
            return Err(PciError::EcamInRam(base));
        }
        Ok(Self { host })
    }

    fn address(&self, bdf: Bdf, reg: u16) -> u64 {
        self.host.ecam.base + bdf.ecam_offset(self.host.bus_start, reg)
    }

    /// Reads the configuration dword at `reg`.
    pub fn read(&self, bdf: Bdf, reg: u16) -> Result<u32, PciError> {
        // SAFETY: the address lies in the ECAM region (device memory outside
        // RAM and the image, checked in `new`), so it aliases no Rust
        // object; a fault returns as an error.
        unsafe { guarded::read32(self.address(bdf, reg)) }
            .map_err(|fault| PciError::Config { reg, fault })
    }

    /// Writes the configuration dword at `reg`.
    pub fn write(&self, bdf: Bdf, reg: u16, value: u32) -> Result<(), PciError> {
        // SAFETY: as in `read`.
        unsafe { guarded::write32(self.address(bdf, reg), value) }
            .map_err(|fault| PciError::Config { reg, fault })
    }

    /// The first NVMe function on the first bus of the bus range, if any.
    pub fn find_nvme(&self) -> Result<Option<Bdf>, PciError> {
        let bus = self.host.bus_start;
        for device in 0..32u8 {
            let f0 = Bdf {
                bus,
                device,
                function: 0,
            };
            if !pci::function_present(self.read(f0, config::ID)?) {
                continue;
            }
            let functions = if pci::multifunction(self.read(f0, config::HEADER)?) {
                8
            } else {
                1
            };
            for function in 0..functions {
                let bdf = Bdf {
                    bus,
                    device,
                    function,
                };
                if function > 0 && !pci::function_present(self.read(bdf, config::ID)?) {
                    continue;
                }
                let class = self.read(bdf, config::CLASS_REVISION)? >> 8;
                let layout = pci::header_layout(self.read(bdf, config::HEADER)?);
                if class == pci::CLASS_NVME && layout == 0 {
                    return Ok(Some(bdf));
                }
            }
        }
        Ok(None)
    }

    /// Sizes and assigns every memory BAR of `bdf` in the 32-bit window,
    /// then enables memory decoding and bus mastering (INTx off, MSI-X left
    /// as it is: disabled after reset). Returns BAR 0's CPU address and size.
    pub fn enable(&self, bdf: Bdf) -> Result<(u64, u64), PciError> {
        let window = self.host.mem32.ok_or(PciError::NoWindow)?;
        let mut allocator = WindowAllocator::new(window);
        let command = self.read(bdf, config::COMMAND)?;
        // Decoding off while the BARs hold sizing patterns.
        let decode = u32::from(COMMAND_MEMORY | 1);
        self.write(bdf, config::COMMAND, command & 0xffff & !decode)?;
        let mut bar0 = None;
        let mut index = 0;
        while index < config::BARS {
            let reg = config::BAR0 + 4 * index as u16;
            let original = self.read(bdf, reg)?;
            self.write(bdf, reg, u32::MAX)?;
            let low = self.read(bdf, reg)?;
            let is64 = original & 1 == 0 && (original >> 1) & 3 == 0b10 && index + 1 < config::BARS;
            let high = if is64 {
                let original_high = self.read(bdf, reg + 4)?;
                self.write(bdf, reg + 4, u32::MAX)?;
                let high = self.read(bdf, reg + 4)?;
                self.write(bdf, reg + 4, original_high)?;
                high
            } else {
                0
            };
            let bar = Bar::from_sizing(low, high);
            if bar.kind == BarKind::Io || !bar.implemented() {
                self.write(bdf, reg, original)?;
                if index == 0 {
                    return Err(PciError::NoBar0);
                }
                index += 1;
                continue;
            }
            let below_4g = bar.kind == BarKind::Mem32;
            let place = allocator
                .place(bar.size, below_4g)
                .ok_or(PciError::NoRoom {
                    bar: index,
                    size: bar.size,
                })?;
            self.write(bdf, reg, place.pci as u32)?;
            if bar.kind == BarKind::Mem64 {
                self.write(bdf, reg + 4, (place.pci >> 32) as u32)?;
            }
            if index == 0 {
                bar0 = Some((place.cpu, bar.size));
            }
            index += if bar.kind == BarKind::Mem64 { 2 } else { 1 };
        }
        let enable = COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
        self.write(
            bdf,
            config::COMMAND,
            (command & 0xffff & !1) | u32::from(enable),
        )?;
        bar0.ok_or(PciError::NoBar0)
    }
}
