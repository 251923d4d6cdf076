//! EL1 stage-1 identity map (Arm ARM D8, VMSAv8-64): 4 KiB granule, 39-bit
//! VA (T0SZ = 25) so the walk starts at level 1, and one level-1 table of
//! 1 GiB block descriptors shared by all CPUs: [0, 1 GiB) Device-nGnRE
//! (UART and the other `virt` MMIO), every GiB that holds DT memory Normal
//! write-back inner-shareable, everything else invalid. Attacks may add
//! Device blocks for their targets later (invalid -> valid needs no
//! break-before-make); a target at or above 512 GiB switches the boot CPU
//! to a 48-bit VA with a level-0 table over the same level-1 table.

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    ID_AA64MMFR0_EL1, MAIR_EL1, Readable, SCTLR_EL1, TCR_EL1, TTBR0_EL1, Writeable,
};
use microvisor_probe::dt::MemoryRegion;
use microvisor_probe::memplan::Range;

use super::entry::SCTLR_EL1_RES1;

/// Bytes mapped by one level-1 block.
pub const BLOCK_SIZE: u64 = 1 << 30;
/// Entries in the level-1 table; with T0SZ = 25 they cover 512 GiB.
const ENTRIES: usize = 512;
/// Size of the virtual (= physical) address space mapped: 2^39.
pub const ADDRESS_SPACE: u64 = BLOCK_SIZE * ENTRIES as u64;
const T0SZ: u64 = 64 - 39;

/// MAIR_EL1 index of Device-nGnRE.
const ATTR_DEVICE: u64 = 0;
/// MAIR_EL1 index of Normal write-back read/write-allocate.
const ATTR_NORMAL: u64 = 1;

// Block descriptor fields (Arm ARM D8.3.1, stage 1).
const DESC_BLOCK: u64 = 0b01;
const DESC_ATTR_INDX_SHIFT: u64 = 2;
const DESC_SH_INNER: u64 = 0b11 << 8;
const DESC_AF: u64 = 1 << 10;
const DESC_PXN: u64 = 1 << 53;
/// AP[1]: EL0 may access (with AP[2] = 0: read/write at EL1 and EL0).
const DESC_AP_EL0: u64 = 1 << 6;
/// Level-1 index of the EL0 alias (VA 448 GiB), which nothing else maps.
const EL0_ALIAS_INDEX: usize = 448;
const DESC_UXN: u64 = 1 << 54;

/// What a block maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Device-nGnRE, never executable.
    Device,
    /// Normal write-back cacheable, inner shareable, executable at EL1.
    Normal,
}

#[repr(C, align(4096))]
struct TranslationTable([AtomicU64; ENTRIES]);

/// The level-1 table (in .bss, inside the probe's footprint).
static L1_TABLE: TranslationTable = TranslationTable([const { AtomicU64::new(0) }; ENTRIES]);

/// Register values the secondary entry code loads before touching memory
/// through the MMU; the boot CPU fills them and cleans them to PoC.
#[repr(C)]
pub struct SecondaryMmu {
    mair: AtomicU64,
    tcr: AtomicU64,
    ttbr0: AtomicU64,
    sctlr: AtomicU64,
}

/// Read by `probe_secondary_entry` (entry.rs) with the MMU off.
pub static SECONDARY_MMU: SecondaryMmu = SecondaryMmu {
    mair: AtomicU64::new(0),
    tcr: AtomicU64::new(0),
    ttbr0: AtomicU64::new(0),
    sctlr: AtomicU64::new(0),
};

fn descriptor(index: usize, kind: BlockKind) -> u64 {
    let base = index as u64 * BLOCK_SIZE;
    let attrs = match kind {
        BlockKind::Device => (ATTR_DEVICE << DESC_ATTR_INDX_SHIFT) | DESC_PXN | DESC_UXN,
        BlockKind::Normal => (ATTR_NORMAL << DESC_ATTR_INDX_SHIFT) | DESC_SH_INNER | DESC_UXN,
    };
    base | attrs | DESC_AF | DESC_BLOCK
}

/// Fills the table for the boot CPU, which still runs with the MMU off:
/// block 0 Device, the blocks of `memory` and of `image` Normal. Returns
/// false if some memory lies beyond the 512 GiB the table covers, or in
/// block 0 (kept Device for the UART); such memory is not mapped.
pub fn build(memory: &[MemoryRegion], image: Range) -> bool {
    let mut all_mapped = true;
    L1_TABLE.0[0].store(descriptor(0, BlockKind::Device), Ordering::Relaxed);
    let image_region = MemoryRegion {
        base: image.start,
        size: image.len(),
    };
    for region in memory.iter().chain(core::iter::once(&image_region)) {
        let first = region.base / BLOCK_SIZE;
        let last = (region.end() - 1) / BLOCK_SIZE;
        for block in first..=last {
            match usize::try_from(block) {
                Ok(index @ 1..ENTRIES) => {
                    L1_TABLE.0[index].store(descriptor(index, BlockKind::Normal), Ordering::Relaxed)
                }
                _ => all_mapped = false,
            }
        }
    }
    all_mapped
}

/// Maps the GiB holding `pa` a second time, at VA 448 GiB, for EL0: Normal, read/write at EL1
/// and EL0, executable at EL0 only. Returns the alias of `pa`, or None if `pa` is outside the
/// table or the alias slot already maps another GiB.
pub fn el0_alias(pa: u64) -> Option<u64> {
    let block = pa / BLOCK_SIZE;
    if block == 0 || block >= ENTRIES as u64 {
        return None;
    }
    let desc = (block * BLOCK_SIZE)
        | (ATTR_NORMAL << DESC_ATTR_INDX_SHIFT)
        | DESC_SH_INNER
        | DESC_AP_EL0
        | DESC_PXN
        | DESC_AF
        | DESC_BLOCK;
    let slot = &L1_TABLE.0[EL0_ALIAS_INDEX];
    match slot.load(Ordering::Relaxed) {
        0 => {
            slot.store(desc, Ordering::Relaxed);
            // Invalid -> valid: no TLB entry to invalidate (see map_for_access).
            barrier::dsb(barrier::ISHST);
            barrier::isb(barrier::SY);
        }
        current if current == desc => {}
        _ => return None,
    }
    Some(EL0_ALIAS_INDEX as u64 * BLOCK_SIZE + pa % BLOCK_SIZE)
}

/// Whether `addr` is mapped at all.
pub fn is_mapped(addr: u64) -> bool {
    addr < ADDRESS_SPACE
        && L1_TABLE.0[(addr / BLOCK_SIZE) as usize].load(Ordering::Relaxed) & 1 != 0
}

/// Makes sure `addr` is mapped, adding a Device block if its GiB is
/// unmapped (so an attack's access reaches stage 2 instead of faulting in
/// our own stage 1). Targets from 512 GiB up to 2^48 switch the calling CPU
/// to 48-bit VAs (see [`map_high`]). Returns false if `addr` cannot be
/// mapped (2^48 and above would need FEAT_LPA2).
pub fn map_for_access(addr: u64) -> bool {
    if addr >= HIGH_ADDRESS_SPACE {
        return false;
    }
    if addr >= ADDRESS_SPACE {
        map_high(addr);
        return true;
    }
    if !is_mapped(addr) {
        let index = (addr / BLOCK_SIZE) as usize;
        L1_TABLE.0[index].store(descriptor(index, BlockKind::Device), Ordering::Relaxed);
        // The walker must see the new entry before the access; an invalid
        // entry is never cached in a TLB, so no invalidation is needed.
        barrier::dsb(barrier::ISHST);
        barrier::isb(barrier::SY);
    }
    true
}

/// VA space with a level-0 table (T0SZ = 16).
const HIGH_ADDRESS_SPACE: u64 = 1 << 48;
/// Table descriptor (Arm ARM D8.3.1): next-level table address | 0b11.
const DESC_TABLE: u64 = 0b11;

/// Level-0 table for 48-bit VAs: entry 0 is the level-1 table above, one
/// other entry may point to [`HIGH_L1_TABLE`].
static L0_TABLE: TranslationTable = TranslationTable([const { AtomicU64::new(0) }; ENTRIES]);
/// Level-1 table for the one 512 GiB region above the first that attacks use.
static HIGH_L1_TABLE: TranslationTable = TranslationTable([const { AtomicU64::new(0) }; ENTRIES]);

/// Maps the GiB of `addr` (512 GiB <= addr < 2^48) as Device for the calling
/// CPU (only the boot CPU runs attacks; the secondaries keep 39-bit VAs).
fn map_high(addr: u64) {
    let l0_index = (addr >> 39) as usize;
    let l1_index = ((addr >> 30) & 511) as usize;
    let high_table = HIGH_L1_TABLE.0.as_ptr() as u64;
    let current = L0_TABLE.0[l0_index].load(Ordering::Relaxed);
    if current != high_table | DESC_TABLE {
        // The high table serves one region at a time: unhook it from the
        // old region (break), empty it, hook it to the new one.
        for entry in L0_TABLE.0.iter().skip(1) {
            if entry.load(Ordering::Relaxed) == high_table | DESC_TABLE {
                entry.store(0, Ordering::Relaxed);
            }
        }
        for entry in &HIGH_L1_TABLE.0 {
            entry.store(0, Ordering::Relaxed);
        }
        L0_TABLE.0[l0_index].store(high_table | DESC_TABLE, Ordering::Relaxed);
    }
    let block = (addr & !(BLOCK_SIZE - 1))
        | (ATTR_DEVICE << DESC_ATTR_INDX_SHIFT)
        | DESC_PXN
        | DESC_UXN
        | DESC_AF
        | DESC_BLOCK;
    HIGH_L1_TABLE.0[l1_index].store(block, Ordering::Relaxed);
    L0_TABLE.0[0].store(L1_TABLE.0.as_ptr() as u64 | DESC_TABLE, Ordering::Relaxed);
    barrier::dsb(barrier::ISHST);

    let tcr = (tcr_value() & !0x3f) | (64 - 48);
    let ttbr0 = L0_TABLE.0.as_ptr() as u64;
    // SAFETY: switches this CPU from the 39-bit level-1 walk to the 48-bit
    // level-0 walk. Both identity-map the code, data and stack the same way
    // (L0[0] is the level-1 table), but a mix of old and new TCR/TTBR0 would
    // not, so the switch happens with the MMU off, in registers only: no
    // memory access occurs while caches are bypassed, and the TLBs are
    // invalidated (also dropping any entry of an unhooked region) before the
    // MMU is back on.
    unsafe {
        core::arch::asm!(
            "mrs {sctlr}, sctlr_el1",
            "bic {off}, {sctlr}, #1",
            "msr sctlr_el1, {off}",
            "isb",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr0}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "msr sctlr_el1, {sctlr}",
            "isb",
            sctlr = out(reg) _,
            off = out(reg) _,
            tcr = in(reg) tcr,
            ttbr0 = in(reg) ttbr0,
            options(nostack, preserves_flags),
        );
    }
}

fn mair_value() -> u64 {
    (MAIR_EL1::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
        + MAIR_EL1::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
        + MAIR_EL1::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc)
        .value
}

fn tcr_value() -> u64 {
    // Output size: what the CPU supports, at most 48 bits (52-bit output
    // with 4 KiB pages needs FEAT_LPA2 descriptors).
    let ips = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101);
    (TCR_EL1::T0SZ.val(T0SZ)
        + TCR_EL1::TG0::KiB_4
        + TCR_EL1::SH0::Inner
        + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
        + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
        + TCR_EL1::EPD1::DisableTTBR1Walks
        + TCR_EL1::TG1::KiB_4
        + TCR_EL1::IPS.val(ips))
    .value
}

fn sctlr_value() -> u64 {
    (SCTLR_EL1::M::Enable
        + SCTLR_EL1::C::Cacheable
        + SCTLR_EL1::I::Cacheable
        + SCTLR_EL1::SA::Enable)
        .value
        | SCTLR_EL1_RES1
}

/// Smallest data cache line (CTR_EL0.DminLine).
fn dcache_line() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects and is allowed at EL1.
    unsafe {
        core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags))
    };
    4 << ((ctr >> 16) & 0xf)
}

/// Invalidates `range` from the data caches to PoC (stale lines from before
/// we wrote it with the MMU off).
fn invalidate_dcache(range: Range) {
    let line = dcache_line();
    let mut addr = range.start & !(line - 1);
    while addr < range.end {
        // SAFETY: DC IVAC drops cache lines of our own footprint, whose
        // memory contents are current (written with the MMU off, so not
        // through the caches); it cannot make any data wrong.
        unsafe { core::arch::asm!("dc ivac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    barrier::dsb(barrier::SY);
}

/// Cleans `range` to PoC, for readers with the MMU off.
fn clean_dcache(range: Range) {
    let line = dcache_line();
    let mut addr = range.start & !(line - 1);
    while addr < range.end {
        // SAFETY: DC CVAC writes dirty lines back to memory; no data changes.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    barrier::dsb(barrier::SY);
}

/// Turns on the MMU and caches of the boot CPU with the table built by
/// [`build`], and publishes the register values for the secondary CPUs.
/// `footprint` (image, bss, stacks, table) is invalidated from the caches
/// first, since everything in it was written with the MMU off.
pub fn enable_boot_cpu(footprint: Range) {
    let (mair, tcr, sctlr) = (mair_value(), tcr_value(), sctlr_value());
    let ttbr0 = L1_TABLE.0.as_ptr() as u64;
    invalidate_dcache(footprint);
    MAIR_EL1.set(mair);
    TCR_EL1.set(tcr);
    TTBR0_EL1.set(ttbr0);
    barrier::isb(barrier::SY);
    // SAFETY: TLBI VMALLE1 only discards TLB entries of this CPU; nothing
    // was translated yet with these tables.
    unsafe { core::arch::asm!("tlbi vmalle1", options(nostack, preserves_flags)) };
    barrier::dsb(barrier::NSH);
    barrier::isb(barrier::SY);
    // The identity map keeps the PC, stack and data at the same addresses.
    SCTLR_EL1.set(sctlr);
    barrier::isb(barrier::SY);
    // SAFETY: IC IALLU discards instruction cache lines; code is unchanged.
    unsafe { core::arch::asm!("ic iallu", options(nostack, preserves_flags)) };
    barrier::dsb(barrier::NSH);
    barrier::isb(barrier::SY);

    SECONDARY_MMU.mair.store(mair, Ordering::Relaxed);
    SECONDARY_MMU.tcr.store(tcr, Ordering::Relaxed);
    SECONDARY_MMU.ttbr0.store(ttbr0, Ordering::Relaxed);
    SECONDARY_MMU.sctlr.store(sctlr, Ordering::Relaxed);
    let start = &SECONDARY_MMU as *const SecondaryMmu as u64;
    clean_dcache(Range {
        start,
        end: start + core::mem::size_of::<SecondaryMmu>() as u64,
    });
}
