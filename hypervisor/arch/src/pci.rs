//! The physical PCIe host bridge: configuration space through ECAM (PCIe Base 4.0 §7.2.2) and
//! grants of device register ranges inside its memory windows. `boot/` creates the one
//! [`PciHost`] after mapping ECAM and the windows as Device memory; the kernel then reaches
//! device registers only through [`Mmio`] grants, which never overlap.

use alloc::vec::Vec;
use microvisor_logic::inventory::{PcieHost, Region};
use microvisor_logic::pci::{Bdf, ConfigSpace};

/// The node's ECAM window.
struct Ecam {
    base: u64,
    size: u64,
    bus_start: u8,
}

impl Ecam {
    fn address(&self, function: Bdf, offset: u16) -> Option<u64> {
        let within = function.ecam_offset(self.bus_start) + u64::from(offset & 0xffc);
        (within + 4 <= self.size).then_some(self.base + within)
    }
}

impl ConfigSpace for Ecam {
    fn read(&mut self, function: Bdf, offset: u16) -> u32 {
        match self.address(function, offset) {
            // SAFETY: the address is an aligned dword inside the ECAM window, which
            // `PciHost::new`'s caller guarantees is mapped Device memory owned by us.
            Some(address) => unsafe { core::ptr::read_volatile(address as *const u32) },
            None => u32::MAX,
        }
    }

    fn write(&mut self, function: Bdf, offset: u16, value: u32) {
        if let Some(address) = self.address(function, offset) {
            // SAFETY: as in `read`.
            unsafe { core::ptr::write_volatile(address as *mut u32, value) };
        }
    }
}

/// Exclusive access to one function's configuration space (its 4 KiB of ECAM), for the
/// code that owns the function at run time (e.g. a slice's assigned function). It reads and
/// writes only that function: any other [`Bdf`] reads all-ones and writes nothing.
#[derive(Debug)]
pub struct FunctionConfig {
    bdf: Bdf,
    base: u64,
}

impl FunctionConfig {
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }
}

impl ConfigSpace for FunctionConfig {
    fn read(&mut self, function: Bdf, offset: u16) -> u32 {
        if function != self.bdf || offset >= 4096 {
            return u32::MAX;
        }
        // SAFETY: an aligned dword of this function's ECAM page, mapped Device memory that
        // `PciHost::function` granted to this value alone.
        unsafe { core::ptr::read_volatile((self.base + u64::from(offset & 0xffc)) as *const u32) }
    }

    fn write(&mut self, function: Bdf, offset: u16, value: u32) {
        if function != self.bdf || offset >= 4096 {
            return;
        }
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::write_volatile((self.base + u64::from(offset & 0xffc)) as *mut u32, value)
        }
    }
}

/// Why a register range was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// Not inside a memory window of the host bridge.
    OutsideWindows,
    /// Overlaps an earlier grant.
    AlreadyGranted,
}

/// The host bridge: its configuration space and its memory windows (CPU addresses).
pub struct PciHost {
    ecam: Ecam,
    windows: Vec<Region>,
    granted: Vec<Region>,
}

impl PciHost {
    /// # Safety
    /// ECAM and every memory window of `host` must be identity mapped as Device memory, and
    /// nothing but this object may access them.
    pub unsafe fn new(host: &PcieHost) -> Self {
        let windows = [host.mem32, host.mem64]
            .into_iter()
            .flatten()
            .map(|w| Region::new(w.cpu, w.size))
            .collect();
        Self {
            ecam: Ecam {
                base: host.ecam.base,
                size: host.ecam.size,
                bus_start: host.bus_start,
            },
            windows,
            granted: Vec::new(),
        }
    }

    /// Configuration space accessor.
    pub fn config(&mut self) -> &mut dyn ConfigSpace {
        &mut self.ecam
    }

    /// Grants exclusive access to `bdf`'s configuration space. The host's own accessor
    /// ([`PciHost::config`]) serves boot only: once a function is granted, boot code leaves it
    /// to its grant.
    pub fn function(&mut self, bdf: Bdf) -> Result<FunctionConfig, GrantError> {
        let base = self
            .ecam
            .address(bdf, 0)
            .ok_or(GrantError::OutsideWindows)?;
        let page = Region::new(base, 4096);
        if self.granted.iter().any(|g| g.overlaps(&page)) {
            return Err(GrantError::AlreadyGranted);
        }
        self.granted.push(page);
        Ok(FunctionConfig { bdf, base })
    }

    /// Grants exclusive access to device registers at CPU addresses `region` (a BAR the
    /// kernel placed in a window).
    pub fn grant(&mut self, region: Region) -> Result<Mmio, GrantError> {
        let inside = self.windows.iter().any(|w| {
            region.base >= w.base
                && region
                    .base
                    .checked_add(region.size)
                    .is_some_and(|end| end <= w.end())
        });
        if !inside || region.size == 0 {
            return Err(GrantError::OutsideWindows);
        }
        if self.granted.iter().any(|g| g.overlaps(&region)) {
            return Err(GrantError::AlreadyGranted);
        }
        self.granted.push(region);
        Ok(Mmio { region })
    }
}

/// Exclusive access to a range of device registers.
#[derive(Debug)]
pub struct Mmio {
    region: Region,
}

impl Mmio {
    pub fn region(&self) -> Region {
        self.region
    }

    fn address(&self, offset: u64, width: u64) -> Option<u64> {
        (offset.is_multiple_of(width) && offset.checked_add(width)? <= self.region.size)
            .then_some(self.region.base + offset)
    }

    /// A read of `width` bytes (1, 2, 4 or 8, naturally aligned) at `offset`; all-ones
    /// outside the grant or for a bad width.
    pub fn read(&self, offset: u64, width: u8) -> u64 {
        let Some(address) = self.address(offset, u64::from(width)) else {
            return u64::MAX;
        };
        // SAFETY: an aligned register of `width` bytes inside this grant of mapped Device
        // memory.
        unsafe {
            match width {
                1 => u64::from(core::ptr::read_volatile(address as *const u8)),
                2 => u64::from(core::ptr::read_volatile(address as *const u16)),
                4 => u64::from(core::ptr::read_volatile(address as *const u32)),
                8 => core::ptr::read_volatile(address as *const u64),
                _ => u64::MAX,
            }
        }
    }

    /// A write of `width` bytes (1, 2, 4 or 8, naturally aligned) at `offset`; ignored outside
    /// the grant or for a bad width.
    pub fn write(&self, offset: u64, width: u8, value: u64) {
        let Some(address) = self.address(offset, u64::from(width)) else {
            return;
        };
        // SAFETY: as in `read`.
        unsafe {
            match width {
                1 => core::ptr::write_volatile(address as *mut u8, value as u8),
                2 => core::ptr::write_volatile(address as *mut u16, value as u16),
                4 => core::ptr::write_volatile(address as *mut u32, value as u32),
                8 => core::ptr::write_volatile(address as *mut u64, value),
                _ => {}
            }
        }
    }

    pub fn read32(&self, offset: u64) -> u32 {
        match self.address(offset, 4) {
            // SAFETY: an aligned register inside this grant of mapped Device memory.
            Some(address) => unsafe { core::ptr::read_volatile(address as *const u32) },
            None => u32::MAX,
        }
    }

    pub fn write32(&self, offset: u64, value: u32) {
        if let Some(address) = self.address(offset, 4) {
            // SAFETY: as in `read32`.
            unsafe { core::ptr::write_volatile(address as *mut u32, value) };
        }
    }

    pub fn read64(&self, offset: u64) -> u64 {
        match self.address(offset, 8) {
            // SAFETY: as in `read32`.
            Some(address) => unsafe { core::ptr::read_volatile(address as *const u64) },
            None => u64::MAX,
        }
    }

    pub fn write64(&self, offset: u64, value: u64) {
        if let Some(address) = self.address(offset, 8) {
            // SAFETY: as in `read32`.
            unsafe { core::ptr::write_volatile(address as *mut u64, value) };
        }
    }
}

/// Device-visible memory barriers around DMA (Arm ARM B2.3.11).
pub mod barrier {
    /// Orders the CPU's stores to memory before a following MMIO write (e.g. queue entries
    /// before the doorbell).
    pub fn before_doorbell() {
        // SAFETY: a barrier has no memory effects of its own.
        unsafe { core::arch::asm!("dsb st", options(nostack)) };
    }

    /// Orders reads of memory the device wrote after reading a status that says it did.
    pub fn after_device_write() {
        // SAFETY: as above.
        unsafe { core::arch::asm!("dsb ld", options(nostack)) };
    }
}
