//! The BARs of an assigned function as the slice sees them (PCI Local Bus 3.0 §6.2.5.1):
//! registers the guest sizes and programs, and where each one may be mapped.

use alloc::vec::Vec;

use crate::inventory::Region;
use crate::pci::PlacedBar;

/// Stage-2 granule: BAR pages are mapped, or trapped, 4 KiB at a time.
pub const PAGE_SIZE: u64 = 0x1000;

/// Guest pages of a mapped BAR that reach the physical BAR directly (one stage-2 mapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectRange {
    /// First guest-physical address (page aligned).
    pub guest: u64,
    /// First host-physical address (page aligned).
    pub physical: u64,
    /// Bytes (whole pages).
    pub size: u64,
}

/// A BAR the guest placed where it may be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarMapping {
    /// BAR register index (0-5; a 64-bit BAR also uses the next one).
    pub bar: u8,
    /// Where the guest put it (its size as the guest sees it: at least a page).
    pub guest: Region,
    /// The physical BAR (its real size).
    pub physical: Region,
    /// Pages to map straight into stage 2: every page but the trapped ones.
    pub direct: Vec<DirectRange>,
    /// Guest pages left unmapped, whose accesses trap to `AssignedFunction::bar_read` and
    /// `bar_write`: the pages holding the MSI-X table or PBA or a virtio function's driver
    /// feature registers (`virtio::AccessPlatformAck`), or the whole BAR when the
    /// physical BAR is smaller than a page (its page may hold another function's registers).
    pub trapped: Vec<Region>,
}

/// One BAR of the function: the physical placement and the guest's register.
#[derive(Clone, Debug)]
pub(super) struct VirtualBar {
    pub index: u8,
    pub is_64bit: bool,
    pub prefetchable: bool,
    /// Size the guest sees: the physical size, at least one page, so that no two BARs of
    /// the slice ever share a page.
    pub size: u64,
    pub physical: Region,
    /// Address bits as the guest last wrote them (aligned to `size`).
    pub address: u64,
    /// Page offsets inside the BAR that are trapped (sorted).
    trapped_pages: Vec<u64>,
    /// The whole BAR is trapped (its physical placement is not page-granular).
    fully_trapped: bool,
    /// Where the BAR is mapped now.
    pub mapped: Option<u64>,
}

impl VirtualBar {
    /// The guest's view of `placed`, with the byte ranges in `trapped` (offsets inside the
    /// BAR: MSI-X table, PBA, a virtio function's driver feature registers) trapped page by
    /// page.
    pub fn new(placed: &PlacedBar, trapped: &[(u64, u64)]) -> VirtualBar {
        let size = placed.bar.size.max(PAGE_SIZE);
        let fully_trapped =
            placed.bar.size < PAGE_SIZE || !placed.cpu.base.is_multiple_of(PAGE_SIZE);
        let mut trapped_pages = Vec::new();
        for &(start, bytes) in trapped {
            if bytes == 0 {
                continue;
            }
            let first = start / PAGE_SIZE;
            let last = start.saturating_add(bytes - 1) / PAGE_SIZE;
            for page in first..=last.min(size / PAGE_SIZE - 1) {
                trapped_pages.push(page * PAGE_SIZE);
            }
        }
        microvisor_plan::sort::sort(&mut trapped_pages);
        trapped_pages.dedup();
        VirtualBar {
            index: placed.bar.index,
            is_64bit: placed.bar.is_64bit,
            prefetchable: placed.bar.prefetchable,
            size,
            physical: placed.cpu,
            address: 0,
            trapped_pages,
            fully_trapped,
            mapped: None,
        }
    }

    /// The low dword of the register: address bits and the read-only type bits.
    pub fn read_low(&self) -> u32 {
        let flags =
            if self.is_64bit { 0b100 } else { 0 } | if self.prefetchable { 0b1000 } else { 0 };
        (self.address as u32 & !0xf) | flags
    }

    /// The high dword of a 64-bit BAR.
    pub fn read_high(&self) -> u32 {
        (self.address >> 32) as u32
    }

    /// Writes the low dword: bits below the size read back as zero, which is how sizing
    /// (write all-ones, read the mask) works.
    pub fn write_low(&mut self, value: u32) {
        self.address = (self.address & !0xffff_ffff | u64::from(value & !0xf)) & !(self.size - 1);
    }

    /// Writes the high dword of a 64-bit BAR.
    pub fn write_high(&mut self, value: u32) {
        self.address = (self.address & 0xffff_ffff | u64::from(value) << 32) & !(self.size - 1);
    }

    /// The guest range the register describes (saturating at the top of the address space).
    pub fn region(&self) -> Region {
        Region::new(self.address, self.size)
    }

    /// The mapping of this BAR at guest address `base`.
    pub fn mapping(&self, base: u64) -> BarMapping {
        let mut direct = Vec::new();
        let mut trapped = Vec::new();
        if self.fully_trapped {
            trapped.push(Region::new(base, self.size));
        } else {
            let mut start = 0;
            for &page in self
                .trapped_pages
                .iter()
                .chain(core::iter::once(&self.size))
            {
                if page > start {
                    direct.push(DirectRange {
                        guest: base + start,
                        physical: self.physical.base + start,
                        size: page - start,
                    });
                }
                if page < self.size {
                    match trapped.last_mut() {
                        Some(last) if last.end() == base + page => last.size += PAGE_SIZE,
                        _ => trapped.push(Region::new(base + page, PAGE_SIZE)),
                    }
                }
                start = page + PAGE_SIZE;
            }
        }
        BarMapping {
            bar: self.index,
            guest: Region::new(base, self.size),
            physical: self.physical,
            direct,
            trapped,
        }
    }
}
