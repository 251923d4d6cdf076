//! Cache maintenance by virtual address (Arm ARM D7.5.9). The hypervisor's VA equals PA.

use aarch64_cpu::asm::barrier;

fn cache_type() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    ctr
}

/// Smallest data cache line size of this core, from CTR_EL0.DminLine.
fn data_line_size() -> u64 {
    4 << ((cache_type() >> 16) & 0xf)
}

/// CTR_EL0.IDC: no data cache clean to the point of unification is needed for instruction
/// fetch to see data.
const CTR_IDC: u64 = 1 << 28;
/// CTR_EL0.DIC: no instruction cache invalidation is needed for instruction fetch to see data.
const CTR_DIC: u64 = 1 << 29;

fn for_each_line(base: u64, size: u64, mut op: impl FnMut(u64)) {
    let line = data_line_size();
    let mut address = base & !(line - 1);
    let end = base.saturating_add(size);
    while address < end {
        op(address);
        address += line;
    }
}

/// Cleans `[base, base + size)` to the point of coherency, so that an observer with caches
/// off (a guest with its MMU off, a secondary core before its MMU is on) sees the data.
pub fn clean_to_poc(base: u64, size: u64) {
    for_each_line(base, size, |address| {
        // SAFETY: DC CVAC only writes back dirty lines; it never changes memory contents as
        // seen by the program. The address is mapped (identity map of RAM).
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) address, options(nostack)) };
    });
    barrier::dsb(barrier::SY);
}

/// Writes back and discards any cached copy of `[base, base + size)`: later loads read
/// memory, and nothing written through the cache is lost.
pub fn clean_invalidate(base: u64, size: u64) {
    for_each_line(base, size, |address| {
        // SAFETY: DC CIVAC writes back dirty lines before discarding them, so memory as the
        // program sees it does not change. The address is mapped (identity map of RAM).
        unsafe { core::arch::asm!("dc civac, {}", in(reg) address, options(nostack)) };
    });
    barrier::dsb(barrier::SY);
}

/// Discards any cached copy of `[base, base + size)` without writing it back.
///
/// # Safety
/// Dirty data in the range is lost: the caller must own the range and must not need any
/// value written to it through the cache.
pub unsafe fn invalidate(base: u64, size: u64) {
    for_each_line(base, size, |address| {
        // SAFETY: the caller guarantees that losing dirty lines in the range is intended.
        unsafe { core::arch::asm!("dc ivac, {}", in(reg) address, options(nostack)) };
    });
    barrier::dsb(barrier::SY);
}

/// Makes code written to memory visible to instruction fetch on all cores: clean the range to
/// the point of coherency, then invalidate all instruction caches in the inner shareable domain.
pub fn sync_instructions(base: u64, size: u64) {
    clean_to_poc(base, size);
    // SAFETY: invalidating instruction caches is always safe; it only costs refetches.
    unsafe { core::arch::asm!("ic ialluis", options(nostack)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}

/// Makes code written to memory visible to instruction fetch on all cores that reach the
/// memory through the caches only (a guest's RAM under FEAT_S2FWB, even with its MMU off):
/// the point of unification is enough, and the core may say that not even that is needed
/// (CTR_EL0.IDC: no data cache clean; CTR_EL0.DIC: no instruction cache invalidation).
pub fn sync_instructions_cached(base: u64, size: u64) {
    let ctr = cache_type();
    if ctr & CTR_IDC == 0 {
        for_each_line(base, size, |address| {
            // SAFETY: DC CVAU only writes back dirty lines to the point of unification; it
            // never changes memory as the program sees it. The address is mapped.
            unsafe { core::arch::asm!("dc cvau, {}", in(reg) address, options(nostack)) };
        });
    }
    barrier::dsb(barrier::ISH);
    if ctr & CTR_DIC == 0 {
        // SAFETY: invalidating instruction caches is always safe; it only costs refetches.
        unsafe { core::arch::asm!("ic ialluis", options(nostack)) };
        barrier::dsb(barrier::ISH);
    }
    barrier::isb(barrier::SY);
}
