//! Physical memory the hypervisor hands out. RAM ranges are claimed once, by one owner, and
//! reached only through the handle the claim returns. Three kinds of handle, so that the kind
//! of access matches who else may touch the bytes:
//!
//! - [`PhysRegion`]: memory only the hypervisor's CPU side uses (and devices only read, like a
//!   command queue before its doorbell). Plain copies; writing needs `&mut`, so Rust's borrow
//!   rules keep every write exclusive. Not `Clone`: a region is split ([`PhysRegion::split_at`],
//!   [`RegionPool`]) into smaller owned regions, never viewed twice.
//! - [`SharedMemory`]: memory someone outside Rust's model writes at any time: a guest (a
//!   slice's RAM) or a device (a completion queue, an LPI pending table). Every access is
//!   volatile (the way rust-vmm's `vm-memory` reaches guest memory), so the compiler never
//!   assumes the bytes hold still, and no Rust reference to them ever exists.
//! - [`DmaPages`]: pages the CPU fills and devices only read, handed out as `&mut [u8; 4096]`
//!   one page at a time through `&mut self`.
//!
//! Since every handle comes from one claim or from splitting one, two handles never cover the
//! same byte: that is what lets the rest of the hypervisor use them without `unsafe`.

use alloc::vec::Vec;

use microvisor_logic::inventory::{MAX_RAM_BANKS, Region};
use spin::{Mutex, Once};

use crate::cache;

/// Most claims at once (hypervisor image, its working memory, one per slice, device memory).
const MAX_CLAIMS: usize = 300;

static RAM: Once<heapless::Vec<Region, MAX_RAM_BANKS>> = Once::new();
static CLAIMS: Mutex<heapless::Vec<Region, MAX_CLAIMS>> = Mutex::new(heapless::Vec::new());

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

/// Claims `region` for exclusive use. Claims never overlap, so the region returned is the only
/// handle to its bytes.
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

/// An access beyond the end of a region (or a misaligned one where alignment is required).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

/// Start address of `[offset, offset + len)` inside `region`, if it lies inside.
fn address_in(region: Region, offset: u64, len: u64) -> Result<u64, OutOfRange> {
    let end = offset.checked_add(len).ok_or(OutOfRange)?;
    if end > region.size {
        return Err(OutOfRange);
    }
    Ok(region.base + offset)
}

/// Exclusively owned physical RAM that only the hypervisor's CPU side writes.
#[derive(Debug)]
pub struct PhysRegion {
    region: Region,
}

impl PhysRegion {
    pub fn region(&self) -> Region {
        self.region
    }

    /// Splits the region in two at `offset` (both parts non-empty); the original is consumed,
    /// so the two halves are the only handles to their bytes.
    pub fn split_at(self, offset: u64) -> Result<(PhysRegion, PhysRegion), PhysRegion> {
        if offset == 0 || offset >= self.region.size {
            return Err(self);
        }
        let Region { base, size } = self.region;
        Ok((
            PhysRegion {
                region: Region::new(base, offset),
            },
            PhysRegion {
                region: Region::new(base + offset, size - offset),
            },
        ))
    }

    /// Copies `bytes` to `offset` in the region.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), OutOfRange> {
        let address = address_in(self.region, offset, bytes.len() as u64)?;
        // SAFETY: the destination lies inside this region (checked above), which no other
        // handle covers (claims and splits never overlap) and no Rust reference aliases
        // (`DmaPages` would have consumed the region); `&mut self` excludes concurrent access
        // through this handle. It is identity-mapped RAM (`register_ram`).
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), address as *mut u8, bytes.len()) };
        Ok(())
    }

    /// Fills `len` bytes at `offset` with zeros.
    pub fn zero(&mut self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        let address = address_in(self.region, offset, len)?;
        // SAFETY: as in `write`.
        unsafe { core::ptr::write_bytes(address as *mut u8, 0, len as usize) };
        Ok(())
    }

    /// Writes the little-endian doubleword `value` at `offset` (8-byte aligned) with a single
    /// store, which a device reading the memory sees whole or not at all (a stream table
    /// entry's valid word).
    pub fn write_u64(&mut self, offset: u64, value: u64) -> Result<(), OutOfRange> {
        let address = address_in(self.region, offset, 8)?;
        if !address.is_multiple_of(8) {
            return Err(OutOfRange);
        }
        // SAFETY: an aligned doubleword inside this region (checked above), exclusively ours
        // as in `write`; one volatile store, so it is not split or merged.
        unsafe { core::ptr::write_volatile(address as *mut u64, value.to_le()) };
        Ok(())
    }

    /// Reads `buffer.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, buffer: &mut [u8]) -> Result<(), OutOfRange> {
        let address = address_in(self.region, offset, buffer.len() as u64)?;
        // SAFETY: inside this region (checked above); writes need `&mut self`, so none runs
        // while this shared borrow lives, and nothing outside Rust writes this kind of memory.
        unsafe {
            core::ptr::copy_nonoverlapping(address as *const u8, buffer.as_mut_ptr(), buffer.len())
        };
        Ok(())
    }

    /// Hands the region to someone outside Rust's model (a guest, a device that writes it):
    /// from now on it is accessed with volatile operations only.
    pub fn into_shared(self) -> SharedMemory {
        SharedMemory {
            region: self.region,
        }
    }
}

/// Claimed memory that a guest or a device may write at any time. Every access is volatile and
/// copies bytes; no reference into it is ever created.
#[derive(Debug)]
pub struct SharedMemory {
    region: Region,
}

/// Bytes [`copy_blocks`] moves per iteration.
const BLOCK: usize = 64;

/// Copies `blocks` blocks of [`BLOCK`] bytes from `src` to `dst` with one assembly loop of
/// paired 8-byte loads and stores: each byte is read once and written once, as opaque to the
/// compiler as volatile accesses (the bulk of image loads and PRP-list copies).
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `blocks * BLOCK` bytes, the ranges
/// must not overlap, and both must be Normal memory (unaligned pairs are allowed there).
unsafe fn copy_blocks(dst: u64, src: u64, blocks: usize) {
    if blocks == 0 {
        return;
    }
    // SAFETY: guaranteed by the caller; the loop touches exactly those bytes.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldp {a}, {b}, [{src}], #16",
            "stp {a}, {b}, [{dst}], #16",
            "ldp {a}, {b}, [{src}], #16",
            "stp {a}, {b}, [{dst}], #16",
            "ldp {a}, {b}, [{src}], #16",
            "stp {a}, {b}, [{dst}], #16",
            "ldp {a}, {b}, [{src}], #16",
            "stp {a}, {b}, [{dst}], #16",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            src = inout(reg) src => _,
            dst = inout(reg) dst => _,
            n = inout(reg) blocks => _,
            a = out(reg) _,
            b = out(reg) _,
            options(nostack),
        )
    }
}

/// Copies smaller than this go through [`copy_blocks`] alone: the vector registers' save and
/// restore would cost more than they save.
const VECTOR_COPY_MIN: usize = 16 << 10;

/// [`copy_blocks`], with SVE for the bulk of a large copy (`crate::simd::copy_with_sve`).
///
/// # Safety
/// As [`copy_blocks`].
unsafe fn copy_bulk(dst: u64, src: u64, blocks: usize) {
    let len = blocks * BLOCK;
    let covered = if len >= VECTOR_COPY_MIN {
        // SAFETY: the caller's guarantee, for exactly these bytes.
        unsafe { crate::simd::copy_with_sve(dst, src, len as u64) }.unwrap_or(0)
    } else {
        0
    };
    // The vector length is a multiple of 128 bits, so what is left is whole blocks.
    // SAFETY: the caller's guarantee, for the bytes the vectors did not cover.
    unsafe {
        copy_blocks(
            dst + covered,
            src + covered,
            blocks - covered as usize / BLOCK,
        )
    }
}

/// Reads `blocks` blocks of [`BLOCK`] bytes at `dst` and writes zeros over each one that is
/// not all zero; returns how many were written.
///
/// # Safety
/// As [`zero_blocks`].
unsafe fn scrub_blocks(dst: u64, blocks: usize) -> usize {
    let mut written: usize = 0;
    if blocks == 0 {
        return 0;
    }
    // SAFETY: guaranteed by the caller; the loop reads and writes exactly those bytes.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldp {a}, {b}, [{dst}]",
            "ldp {c}, {d}, [{dst}, #16]",
            "orr {a}, {a}, {b}",
            "orr {c}, {c}, {d}",
            "ldp {b}, {d}, [{dst}, #32]",
            "orr {a}, {a}, {c}",
            "orr {a}, {a}, {b}",
            "ldp {b}, {c}, [{dst}, #48]",
            "orr {a}, {a}, {d}",
            "orr {b}, {b}, {c}",
            "orr {a}, {a}, {b}",
            "cbz {a}, 3f",
            "stp xzr, xzr, [{dst}]",
            "stp xzr, xzr, [{dst}, #16]",
            "stp xzr, xzr, [{dst}, #32]",
            "stp xzr, xzr, [{dst}, #48]",
            "add {w}, {w}, #1",
            "3:",
            "add {dst}, {dst}, #64",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            dst = inout(reg) dst => _,
            n = inout(reg) blocks => _,
            w = inout(reg) written,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            d = out(reg) _,
            options(nostack),
        )
    }
    written
}

/// Writes zeros to `blocks` blocks of [`BLOCK`] bytes at `dst` with paired stores of the zero
/// register.
///
/// # Safety
/// `dst` must be 16-byte aligned and valid for writes of `blocks * BLOCK` bytes of Normal
/// memory that no Rust reference covers.
unsafe fn zero_blocks(dst: u64, blocks: usize) {
    if blocks == 0 {
        return;
    }
    // SAFETY: guaranteed by the caller; the loop touches exactly those bytes.
    unsafe {
        core::arch::asm!(
            "2:",
            "stp xzr, xzr, [{dst}], #16",
            "stp xzr, xzr, [{dst}], #16",
            "stp xzr, xzr, [{dst}], #16",
            "stp xzr, xzr, [{dst}], #16",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            dst = inout(reg) dst => _,
            n = inout(reg) blocks => _,
            options(nostack),
        )
    }
}

/// Volatile stores of `bytes` to `dst`: single bytes up to an 8-byte boundary, then aligned
/// 8-byte stores, then the remaining bytes.
///
/// # Safety
/// `dst` must be valid for `bytes.len()` bytes of writes and must not overlap `bytes`.
unsafe fn store_volatile(dst: u64, bytes: &[u8]) {
    let head = ((dst.next_multiple_of(8) - dst) as usize).min(bytes.len());
    let (first, rest) = bytes.split_at(head);
    let (blocks, rest) = rest.split_at(rest.len() / BLOCK * BLOCK);
    let words = rest.chunks_exact(8);
    let tail = words.remainder();
    let mut at = dst;
    for &b in first {
        // SAFETY: inside `[dst, dst + bytes.len())`, valid by the caller's guarantee.
        unsafe { core::ptr::write_volatile(at as *mut u8, b) };
        at += 1;
    }
    // SAFETY: `blocks` lies in `bytes` and `[at, at + blocks.len())` inside the destination;
    // `at` is a multiple of 8 here.
    unsafe { copy_bulk(at, blocks.as_ptr() as u64, blocks.len() / BLOCK) };
    at += blocks.len() as u64;
    for word in words {
        let value = u64::from_ne_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        // SAFETY: as above, and `at` is a multiple of 8 after the head.
        unsafe { core::ptr::write_volatile(at as *mut u64, value) };
        at += 8;
    }
    for &b in tail {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(at as *mut u8, b) };
        at += 1;
    }
}

/// Volatile loads from `src` into `buffer`, each source byte read once, in the same pieces as
/// [`store_volatile`].
///
/// # Safety
/// `src` must be valid for `buffer.len()` bytes of reads and must not overlap `buffer`.
unsafe fn load_volatile(buffer: &mut [u8], src: u64) {
    let head = ((src.next_multiple_of(8) - src) as usize).min(buffer.len());
    let (first, rest) = buffer.split_at_mut(head);
    let bulk = rest.len() / BLOCK * BLOCK;
    let (blocks, rest) = rest.split_at_mut(bulk);
    let mut words = rest.chunks_exact_mut(8);
    let mut at = src;
    for b in first {
        // SAFETY: inside `[src, src + buffer.len())`, valid by the caller's guarantee.
        *b = unsafe { core::ptr::read_volatile(at as *const u8) };
        at += 1;
    }
    // SAFETY: `[at, at + bulk)` lies in the source, `blocks` in `buffer`; `at` is a multiple
    // of 8 here.
    unsafe { copy_bulk(blocks.as_mut_ptr() as u64, at, bulk / BLOCK) };
    at += bulk as u64;
    for word in &mut words {
        // SAFETY: as above, and `at` is a multiple of 8 after the head.
        let value = unsafe { core::ptr::read_volatile(at as *const u64) };
        word.copy_from_slice(&value.to_ne_bytes());
        at += 8;
    }
    for b in words.into_remainder() {
        // SAFETY: as above.
        *b = unsafe { core::ptr::read_volatile(at as *const u8) };
        at += 1;
    }
}

impl SharedMemory {
    pub fn region(&self) -> Region {
        self.region
    }

    /// Copies `bytes` to `offset` with volatile stores.
    pub fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), OutOfRange> {
        let address = address_in(self.region, offset, bytes.len() as u64)?;
        // SAFETY: the destination lies inside this claimed region (checked above), which no
        // Rust reference ever covers, so nothing Rust assumes about references is broken.
        // Volatile stores race with the guest, a device, and other cores' volatile accesses
        // to the same region (a hostile guest can make two cores' device emulations write one
        // page at once): each access is a plain load or store of at most 8 bytes, so the
        // worst outcome is torn data in the guest's own memory. `bytes` cannot overlap it.
        unsafe { store_volatile(address, bytes) };
        Ok(())
    }

    /// Reads `buffer.len()` bytes at `offset` with volatile loads (each byte once).
    pub fn read(&self, offset: u64, buffer: &mut [u8]) -> Result<(), OutOfRange> {
        let address = address_in(self.region, offset, buffer.len() as u64)?;
        // SAFETY: as in `write`, with the roles of the two ranges exchanged.
        unsafe { load_volatile(buffer, address) };
        Ok(())
    }

    /// Fills `len` bytes at `offset` with zeros: whole 64-byte blocks with paired stores of
    /// the zero register, the edges with volatile stores. (Plain stores, not `DC ZVA`: under
    /// QEMU's TCG each `DC ZVA` is a helper call, several times slower per byte.)
    pub fn zero(&self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        const ZEROS: [u8; 256] = [0; 256];
        let start = address_in(self.region, offset, len)?;
        let end = start + len;
        let from = start.next_multiple_of(BLOCK as u64).min(end);
        let to = (end / BLOCK as u64 * BLOCK as u64).max(from);
        // SAFETY: `[from, to)` is whole 64-byte blocks inside this claimed region (between
        // `start` and `end`, checked above), written only outside Rust's view.
        unsafe { zero_blocks(from, ((to - from) / BLOCK as u64) as usize) };
        for (edge_start, edge_end) in [(start, from), (to, end)] {
            let mut at = edge_start;
            while at < edge_end {
                let piece = (edge_end - at).min(ZEROS.len() as u64);
                self.write(at - self.region.base, &ZEROS[..piece as usize])?;
                at += piece;
            }
        }
        Ok(())
    }

    /// Reads the little-endian `u32` at `offset` (4-byte aligned) with one access.
    pub fn read_u32(&self, offset: u64) -> Result<u32, OutOfRange> {
        let address = address_in(self.region, offset, 4)?;
        if !address.is_multiple_of(4) {
            return Err(OutOfRange);
        }
        // SAFETY: an aligned dword inside this region (checked above), accessed volatile.
        Ok(u32::from_le(unsafe {
            core::ptr::read_volatile(address as *const u32)
        }))
    }

    /// Writes a little-endian `u32` at `offset` (4-byte aligned) with one access.
    pub fn write_u32(&self, offset: u64, value: u32) -> Result<(), OutOfRange> {
        let address = address_in(self.region, offset, 4)?;
        if !address.is_multiple_of(4) {
            return Err(OutOfRange);
        }
        // SAFETY: as in `read_u32`.
        unsafe { core::ptr::write_volatile(address as *mut u32, value.to_le()) };
        Ok(())
    }

    /// Zeroes `len` bytes at `offset` (both multiples of 64) that are not zero already: the
    /// memory is read, and written only where it holds something (with SVE in groups of
    /// eight vectors, `crate::simd::scrub_with_sve`; otherwise, and for what is left, in
    /// 64-byte blocks). Memory that nobody wrote is never written (under QEMU it then stays
    /// unallocated on the host). Returns the number of 64-byte blocks written.
    pub fn scrub(&self, offset: u64, len: u64) -> Result<u64, OutOfRange> {
        let start = address_in(self.region, offset, len)?;
        if !start.is_multiple_of(BLOCK as u64) || !len.is_multiple_of(BLOCK as u64) {
            return Err(OutOfRange);
        }
        // SAFETY: `[start, start + len)` is inside this claimed region, read and written only
        // outside Rust's view.
        let (covered, written) =
            unsafe { crate::simd::scrub_with_sve(start, len) }.unwrap_or((0, 0));
        // The vector length is a multiple of 128 bits, so what is left is whole blocks.
        let rest = len - covered;
        // SAFETY: `[start + covered, start + len)` is whole 64-byte blocks inside this claimed
        // region, read and written only outside Rust's view.
        let more = unsafe { scrub_blocks(start + covered, rest as usize / BLOCK) } as u64;
        Ok(written + more)
    }

    /// Copies `len` bytes from `source` at `from` to `offset` of this region, in 64 KiB
    /// pieces through a buffer on the heap (two distinct regions never overlap: each was
    /// claimed once).
    pub fn copy_from(
        &self,
        offset: u64,
        source: &SharedMemory,
        from: u64,
        len: u64,
    ) -> Result<(), OutOfRange> {
        address_in(self.region, offset, len)?;
        address_in(source.region, from, len)?;
        let mut buffer = alloc::vec![0u8; (64 << 10).min(len as usize)];
        let mut done = 0;
        while done < len {
            let piece = (len - done).min(buffer.len() as u64) as usize;
            source.read(from + done, &mut buffer[..piece])?;
            self.write(offset + done, &buffer[..piece])?;
            done += piece as u64;
        }
        Ok(())
    }

    /// Before reading what an agent wrote with caches off (a guest's Device or Non-cacheable
    /// mapping): writes back and discards the hypervisor's cached copies of the range, so the
    /// next loads see memory.
    pub fn sync_from_uncached(&self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        let address = address_in(self.region, offset, len)?;
        cache::clean_invalidate(address, len);
        Ok(())
    }

    /// After writing what an agent reads with caches off: writes the range back to memory.
    pub fn sync_for_uncached(&self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        let address = address_in(self.region, offset, len)?;
        cache::clean_to_poc(address, len);
        Ok(())
    }

    /// Makes what the hypervisor wrote visible to a guest that starts with its MMU and caches
    /// off, including as instructions. Under FEAT_S2FWB the guest reaches its RAM through
    /// the caches whatever its MMU does (`virt::guest_ram_always_cacheable`), so only the
    /// point of unification matters, and often nothing (CTR_EL0.IDC, DIC): a Linux image
    /// and initramfs of 40 MB are otherwise 650 000 lines to clean to the point of
    /// coherency at every start.
    pub fn sync_for_guest(&self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        let address = address_in(self.region, offset, len)?;
        if crate::virt::guest_ram_always_cacheable() {
            cache::sync_instructions_cached(address, len);
        } else {
            cache::sync_instructions(address, len);
        }
        Ok(())
    }
}

/// Pages the CPU fills and devices only read (PRP list and range copies for NVMe commands):
/// unlike guest RAM or completion queues, nothing but the owner of this value ever writes
/// them, so they can be handed out as ordinary mutable byte arrays.
#[derive(Debug)]
pub struct DmaPages {
    region: Region,
}

impl DmaPages {
    /// Takes `region` (page aligned, whole pages) for CPU-written, device-read pages; gives it
    /// back if it is not made of whole pages.
    pub fn new(region: PhysRegion) -> Result<Self, PhysRegion> {
        let r = region.region;
        if r.base.is_multiple_of(4096) && r.size.is_multiple_of(4096) {
            Ok(Self { region: r })
        } else {
            Err(region)
        }
    }

    /// Pages held.
    pub fn pages(&self) -> usize {
        (self.region.size / 4096) as usize
    }

    /// Page `index`: its physical address and contents.
    pub fn page_mut(&mut self, index: usize) -> Option<(u64, &mut [u8; 4096])> {
        let offset = (index as u64).checked_mul(4096)?;
        let address = address_in(self.region, offset, 4096).ok()?;
        // SAFETY: a whole page inside this region, which this value owns alone (it consumed
        // the only `PhysRegion` for it); `&mut self` makes the returned reference unique among
        // CPU accesses, and by this type's contract devices only read these pages.
        Some((address, unsafe { &mut *(address as *mut [u8; 4096]) }))
    }
}

/// Owned free memory, handed out in pieces by address: taking a piece splits the chunk that
/// holds it, so pieces never overlap (the pool is the hypervisor's device-memory allocator's
/// backing store; where to take from is decided by `microvisor_logic::pages`).
#[derive(Debug, Default)]
pub struct RegionPool {
    chunks: Vec<PhysRegion>,
}

impl RegionPool {
    /// A pool owning `region`.
    pub fn new(region: PhysRegion) -> Self {
        Self {
            chunks: alloc::vec![region],
        }
    }

    /// The piece `wanted`, if it lies wholly inside one free chunk.
    pub fn take(&mut self, wanted: Region) -> Option<PhysRegion> {
        let end = wanted.base.checked_add(wanted.size)?;
        let index = self.chunks.iter().position(|c| {
            let r = c.region;
            wanted.size > 0 && r.base <= wanted.base && end <= r.end()
        })?;
        let chunk = self.chunks.swap_remove(index);
        let before = wanted.base - chunk.region.base;
        let rest = match chunk.split_at(before) {
            Ok((head, rest)) => {
                self.chunks.push(head);
                rest
            }
            Err(whole) => whole,
        };
        match rest.split_at(wanted.size) {
            Ok((piece, tail)) => {
                self.chunks.push(tail);
                Some(piece)
            }
            Err(piece) => Some(piece),
        }
    }
}

/// Orders the CPU's earlier stores before its later ones as other cores see them (e.g. a
/// completion entry's fields before its phase tag).
pub fn store_barrier() {
    // SAFETY: a barrier has no memory effects of its own.
    unsafe { core::arch::asm!("dmb ishst", options(nostack)) };
}

/// Orders the CPU's earlier loads and stores before its later ones as other cores see them
/// (e.g. a store that tells a guest whether to ring before a load of what it wrote).
pub fn full_barrier() {
    // SAFETY: a barrier has no memory effects of its own.
    unsafe { core::arch::asm!("dmb ish", options(nostack)) };
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
