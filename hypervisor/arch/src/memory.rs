//! Physical memory the hypervisor hands out: RAM ranges are claimed once, by one owner, and
//! accessed only through the [`PhysRegion`] that the claim returns. This is what lets the rest
//! of the hypervisor write slice memory (images, device trees) without `unsafe`.

use heapless::Vec;
use microvisor_logic::inventory::{MAX_RAM_BANKS, Region};
use spin::{Mutex, Once};

use crate::cache;

/// Most claims at once (hypervisor image, its working memory, one per slice).
const MAX_CLAIMS: usize = 300;

static RAM: Once<Vec<Region, MAX_RAM_BANKS>> = Once::new();
static CLAIMS: Mutex<Vec<Region, MAX_CLAIMS>> = Mutex::new(Vec::new());

/// Why a claim was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// The RAM banks are not registered yet.
    NoRam,
    /// The range is not entirely inside one RAM bank.
    NotRam,
    /// The range overlaps an earlier claim.
    Overlaps(Region),
    /// Too many claims.
    Full,
}

/// Registers the node's RAM banks (once).
///
/// # Safety
/// Every bank must be RAM that is identity mapped as Normal memory in the hypervisor's
/// stage-1 map, and no code may access it except through claims from now on (apart from the
/// hypervisor's own image, stacks and heap, which `boot/` claims first).
pub unsafe fn register_ram(banks: &[Region]) {
    RAM.call_once(|| banks.iter().copied().collect());
}

/// Claims `region` for exclusive use.
pub fn claim(region: Region) -> Result<PhysRegion, ClaimError> {
    let ram = RAM.get().ok_or(ClaimError::NoRam)?;
    if region.size == 0
        || !ram.iter().any(|bank| {
            region.base >= bank.base
                && region
                    .base
                    .checked_add(region.size)
                    .is_some_and(|end| end <= bank.end())
        })
    {
        return Err(ClaimError::NotRam);
    }
    let mut claims = CLAIMS.lock();
    if let Some(other) = claims.iter().find(|c| c.overlaps(&region)) {
        return Err(ClaimError::Overlaps(*other));
    }
    claims.push(region).map_err(|_| ClaimError::Full)?;
    Ok(PhysRegion { region })
}

/// An access beyond the end of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

/// Exclusively claimed physical RAM.
#[derive(Debug)]
pub struct PhysRegion {
    region: Region,
}

impl PhysRegion {
    pub fn region(&self) -> Region {
        self.region
    }

    fn checked(&self, offset: u64, len: usize) -> Result<u64, OutOfRange> {
        let end = offset.checked_add(len as u64).ok_or(OutOfRange)?;
        if end > self.region.size {
            return Err(OutOfRange);
        }
        Ok(self.region.base + offset)
    }

    /// A view of `[offset, offset + size)` of this region, for the kernel to hand parts of
    /// one claim to different users (queues, tables). The kernel's allocator keeps the views
    /// it hands out disjoint; overlapping views would still only copy bytes, never alias Rust
    /// references.
    pub fn carve(&self, offset: u64, size: u64) -> Result<PhysRegion, OutOfRange> {
        let base = self.checked(offset, usize::try_from(size).map_err(|_| OutOfRange)?)?;
        Ok(PhysRegion {
            region: Region::new(base, size),
        })
    }

    /// Copies `bytes` to `offset` in the region.
    pub fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), OutOfRange> {
        let address = self.checked(offset, bytes.len())?;
        // SAFETY: the destination lies inside this claimed region (checked above), which no
        // Rust reference aliases; it is identity mapped RAM (`register_ram`).
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), address as *mut u8, bytes.len()) };
        Ok(())
    }

    /// Fills `len` bytes at `offset` with zeros.
    pub fn zero(&self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        let address = self.checked(offset, usize::try_from(len).map_err(|_| OutOfRange)?)?;
        // SAFETY: as in `write`.
        unsafe { core::ptr::write_bytes(address as *mut u8, 0, len as usize) };
        Ok(())
    }

    /// Reads `buffer.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, buffer: &mut [u8]) -> Result<(), OutOfRange> {
        let address = self.checked(offset, buffer.len())?;
        // SAFETY: as in `write`; the source may change under us if a guest runs on it, which
        // only affects the bytes read, never memory safety (plain bytes have no invalid values).
        unsafe {
            core::ptr::copy_nonoverlapping(address as *const u8, buffer.as_mut_ptr(), buffer.len())
        };
        Ok(())
    }

    /// Reads the little-endian `u32` at `offset` with a single volatile access (memory a device
    /// or a guest may write at any time).
    pub fn read_u32_volatile(&self, offset: u64) -> Result<u32, OutOfRange> {
        let address = self.checked(offset, 4)?;
        if address % 4 != 0 {
            return Err(OutOfRange);
        }
        // SAFETY: an aligned dword inside this claimed region (checked above).
        Ok(unsafe { core::ptr::read_volatile(address as *const u32) })
    }

    /// Writes a `u32` at `offset` with a single volatile access.
    pub fn write_u32_volatile(&self, offset: u64, value: u32) -> Result<(), OutOfRange> {
        let address = self.checked(offset, 4)?;
        if address % 4 != 0 {
            return Err(OutOfRange);
        }
        // SAFETY: as in `read_u32_volatile`.
        unsafe { core::ptr::write_volatile(address as *mut u32, value) };
        Ok(())
    }

    /// Makes what the hypervisor wrote visible to a guest that starts with its MMU and caches
    /// off, including as instructions.
    pub fn sync_for_guest(&self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        let address = self.checked(offset, usize::try_from(len).map_err(|_| OutOfRange)?)?;
        cache::sync_instructions(address, len);
        Ok(())
    }
}

/// Pages the CPU fills and devices only read (PRP list and range copies for NVMe commands):
/// unlike guest RAM or completion queues, nothing but the owner of this value ever writes
/// them, so they can be handed out as ordinary mutable byte arrays.
#[derive(Debug)]
pub struct DmaPages {
    region: PhysRegion,
}

impl DmaPages {
    /// Takes `region` (page aligned, whole pages) for CPU-written, device-read pages.
    pub fn new(region: PhysRegion) -> Option<Self> {
        let r = region.region();
        (r.base.is_multiple_of(4096) && r.size.is_multiple_of(4096)).then_some(Self { region })
    }

    /// Page `index`: its physical address and contents.
    pub fn page_mut(&mut self, index: usize) -> Option<(u64, &mut [u8; 4096])> {
        let offset = (index as u64).checked_mul(4096)?;
        let address = self.region.checked(offset, 4096).ok()?;
        // SAFETY: a whole page inside this claimed region; `&mut self` makes the returned
        // reference unique among CPU accesses, and by this type's contract devices only read
        // these pages (a device read never conflicts with Rust's aliasing rules).
        Some((address, unsafe { &mut *(address as *mut [u8; 4096]) }))
    }
}

/// Orders the CPU's earlier stores before its later ones as other cores see them (e.g. a
/// completion entry's fields before its phase tag).
pub fn store_barrier() {
    // SAFETY: a barrier has no memory effects of its own.
    unsafe { core::arch::asm!("dmb ishst", options(nostack)) };
}

/// A hypervisor-owned byte range that lives for the rest of the run (its image and bundle).
///
/// # Safety
/// `[base, base + size)` must be mapped, must never be written again, and must be claimed
/// (or otherwise never handed out) so that nobody writes it.
pub unsafe fn static_bytes(base: u64, size: usize) -> &'static [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(base as *const u8, size) }
}
