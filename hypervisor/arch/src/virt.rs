//! EL2 controls for running a guest on this core (Arm ARM D24.2): the trap configuration
//! (`microvisor_logic::el2`, computed from this core's ID registers), stage 2 (VTCR/VTTBR),
//! the virtual CPU identity, and the EL1 state a vCPU starts from.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    AFSR0_EL1, AFSR1_EL1, AMAIR_EL1, CNTHCTL_EL2, CNTKCTL_EL1, CNTP_CTL_EL0, CNTP_CVAL_EL0,
    CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTVOFF_EL2, CONTEXTIDR_EL1, CPACR_EL1, CPTR_EL2, ELR_EL1,
    ESR_EL1, FAR_EL1, HCR_EL2, ID_AA64DFR0_EL1, ID_AA64ISAR1_EL1, ID_AA64MMFR1_EL1,
    ID_AA64MMFR2_EL1, ID_AA64PFR0_EL1, ID_AA64PFR1_EL1, MAIR_EL1, MDCR_EL2, MDSCR_EL1, MIDR_EL1,
    PAR_EL1, SCTLR_EL1, SP_EL0, SP_EL1, SPSR_EL1, TCR_EL1, TPIDR_EL0, TPIDR_EL1, TPIDRRO_EL0,
    TTBR0_EL1, TTBR1_EL1, VBAR_EL1, VMPIDR_EL2, VTCR_EL2, VTTBR_EL2,
};
use core::sync::atomic::{AtomicU8, Ordering};
use tock_registers::interfaces::{Readable, Writeable};

use microvisor_logic::el2::{self, CpuFeatures, IdRegisters, Pmu, TrapConfiguration};
use microvisor_logic::pagetable::Stage2MemoryTypes;

use crate::regs::{ID_AA64ISAR2_EL1, ID_AA64SMFR0_EL1, PMCR_EL0, SMCR_EL2, VPIDR_EL2, ZCR_EL2};

/// Stage-2 input size: 39-bit IPA (T0SZ = 25), walks start at level 1. Must match
/// `microvisor_logic::pagetable::Regime::Stage2`.
const STAGE2_T0SZ: u64 = 64 - microvisor_logic::pagetable::STAGE2_INPUT_BITS as u64;

/// The features of this core that decide its trap configuration.
fn cpu_features() -> CpuFeatures {
    IdRegisters {
        aa64pfr0: ID_AA64PFR0_EL1.get(),
        aa64pfr1: ID_AA64PFR1_EL1.get(),
        aa64dfr0: ID_AA64DFR0_EL1.get(),
        aa64smfr0: ID_AA64SMFR0_EL1.get(),
        aa64mmfr2: ID_AA64MMFR2_EL1.get(),
        aa64mmfr1: ID_AA64MMFR1_EL1.get(),
        aa64isar1: ID_AA64ISAR1_EL1.get(),
        aa64isar2: ID_AA64ISAR2_EL1.get(),
    }
    .features(|| PMCR_EL0.get())
}

/// The node's stage-2 memory-type encoding: [`UNDECIDED`], [`COMBINED`] or [`FORCED`].
static STAGE2_MEMORY_TYPES: AtomicU8 = AtomicU8::new(UNDECIDED);
const UNDECIDED: u8 = 0;
const COMBINED: u8 = 1;
const FORCED: u8 = 2;

/// How every stage-2 table a core walks encodes memory types, and so whether HCR_EL2.FWB is
/// set (`CpuFeatures::stage2_memory_types`). Decided once, from the ID registers of the core
/// that asks first (the boot core, before it builds any stage-2 table), and the same ever
/// after on every core: the cores of a node are all alike, and the tables and HCR_EL2 must
/// agree.
pub fn stage2_memory_types() -> Stage2MemoryTypes {
    let mut code = STAGE2_MEMORY_TYPES.load(Ordering::Acquire);
    if code == UNDECIDED {
        let mine = match cpu_features().stage2_memory_types() {
            Stage2MemoryTypes::CombinedWithStage1 => COMBINED,
            Stage2MemoryTypes::ForcedWriteBack => FORCED,
        };
        code = match STAGE2_MEMORY_TYPES.compare_exchange(
            UNDECIDED,
            mine,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => mine,
            Err(first) => first,
        };
    }
    if code == FORCED {
        Stage2MemoryTypes::ForcedWriteBack
    } else {
        Stage2MemoryTypes::CombinedWithStage1
    }
}

/// Whether a guest can reach its RAM only as Normal Write-Back memory, through the caches,
/// whatever its own stage 1 says (FEAT_S2FWB in use): then what the hypervisor wrote to a
/// slice's RAM through its cacheable mapping is what the guest reads, with no cleaning to the
/// point of coherency. Without it a guest may map its RAM Non-cacheable (or run with its MMU
/// off) and read memory below the hypervisor's dirty cache lines.
pub fn guest_ram_always_cacheable() -> bool {
    stage2_memory_types() == Stage2MemoryTypes::ForcedWriteBack
}

/// Configures this core for guests of one slice: the traps of `microvisor_logic::el2`,
/// stage 2 on with the slice's tables (`vttbr` = root | VMID << 48), and `vcpu` as the
/// guest-visible Aff0.
pub fn configure_core(vttbr: u64, vcpu: usize) {
    VTCR_EL2.write(
        VTCR_EL2::RES1::SET
            + VTCR_EL2::T0SZ.val(STAGE2_T0SZ)
            + VTCR_EL2::SL0::Granule4KBLevel1
            + VTCR_EL2::IRGN0::NormalWBRAWA
            + VTCR_EL2::ORGN0::NormalWBRAWA
            + VTCR_EL2::SH0::Inner
            + VTCR_EL2::TG0::Granule4KB
            + VTCR_EL2::PS.val(crate::mmu::physical_address_size()),
    );
    VTTBR_EL2.set(vttbr);
    VPIDR_EL2.set(MIDR_EL1.get());
    // MPIDR bit 31 is RES1; Aff0 = vCPU index, uniprocessor bit clear.
    VMPIDR_EL2.set((1 << 31) | vcpu as u64);

    let mut cpu = cpu_features();
    // HCR_EL2.FWB follows the node's choice, which its stage-2 tables were built for.
    cpu.s2fwb = guest_ram_always_cacheable();
    let traps = TrapConfiguration::for_cpu(&cpu);
    // ZCR_EL2/SMCR_EL2 accesses trap while CPTR_EL2 traps SVE/SME (U-Boot leaves it so), so
    // CPTR_EL2 goes first.
    CPTR_EL2.set(traps.cptr.get());
    barrier::isb(barrier::SY);
    if let Some(zcr) = traps.zcr {
        ZCR_EL2.set(zcr.get());
    }
    if let Some(smcr) = traps.smcr {
        SMCR_EL2.set(smcr.get());
    }
    // The virtual counter has no offset.
    CNTVOFF_EL2.set(0);
    CNTHCTL_EL2.set(traps.cnthctl.get());
    MDCR_EL2.set(traps.mdcr.get());
    HCR_EL2.set(traps.hcr.get());
    barrier::isb(barrier::SY);
    invalidate_guest_tlb();
}

/// Resets the EL1 state a vCPU starts from (`el2::el1_reset_sctlr`: MMU and caches off;
/// both EL1 timers off, their compare values cleared), and clears everything else an earlier
/// run (or tenant) left in this core's EL1 and EL0 registers: thread and stack pointers,
/// exception and translation registers, debug exceptions off (MDSCR_EL1), the vector state
/// (`simd::clear_guest_vector_state`: FP/SIMD, SVE, SME), and what [`clear_guest_owned`]
/// clears: pointer-authentication keys, breakpoints, watchpoints and the PMU. Until
/// 2026-12-04 only SCTLR_EL1 and the timers were reset, so a new tenant could read what the
/// last one left there, e.g. key material in the vector registers (found in review).
pub fn reset_el1() {
    SCTLR_EL1.set(el2::el1_reset_sctlr().get());
    CNTV_CTL_EL0.set(0);
    CNTP_CTL_EL0.set(0);
    CNTV_CVAL_EL0.set(0);
    CNTP_CVAL_EL0.set(0);
    TPIDR_EL0.set(0);
    TPIDRRO_EL0.set(0);
    TPIDR_EL1.set(0);
    SP_EL0.set(0);
    SP_EL1.set(0);
    ELR_EL1.set(0);
    SPSR_EL1.set(0);
    ESR_EL1.set(0);
    FAR_EL1.set(0);
    PAR_EL1.set(0);
    VBAR_EL1.set(0);
    TTBR0_EL1.set(0);
    TTBR1_EL1.set(0);
    TCR_EL1.set(0);
    MAIR_EL1.set(0);
    AMAIR_EL1.set(0);
    AFSR0_EL1.set(0);
    AFSR1_EL1.set(0);
    CONTEXTIDR_EL1.set(0);
    CPACR_EL1.set(0);
    CNTKCTL_EL1.set(0);
    MDSCR_EL1.set(0);
    clear_guest_owned(&cpu_features());
    crate::simd::clear_guest_vector_state();
    barrier::isb(barrier::SY);
    invalidate_guest_tlb();
}

/// Zeroes this core's registers that the trap configuration leaves to the guest and that
/// hold what a run chose, as far as `cpu` has them: the five pointer-authentication keys
/// (HCR_EL2.APK = 1), every breakpoint and watchpoint value and control register and the
/// debug communications interrupt enable (MDCR_EL2.TDA = 0), the claim tags, and the PMU
/// (HPMN = all counters): counters, event types and filters zeroed, counting, overflow
/// interrupts and EL0 access off; and the LORegion registers (HCR_EL2.TLOR = 0).
fn clear_guest_owned(cpu: &CpuFeatures) {
    if cpu.lor {
        // SAFETY: the core has FEAT_LOR; LORC_EL1 = 0 disables LORegions, and the other three
        // only describe one; no memory is touched.
        unsafe {
            core::arch::asm!(
                "msr S3_0_C10_C4_3, xzr", // LORC_EL1
                "msr S3_0_C10_C4_0, xzr", // LORSA_EL1
                "msr S3_0_C10_C4_1, xzr", // LOREA_EL1
                "msr S3_0_C10_C4_2, xzr", // LORN_EL1
                options(nomem, nostack)
            )
        };
    }
    if cpu.pointer_auth {
        // SAFETY: the core has FEAT_PAuth, so the key registers exist; writing them at EL2
        // changes only the keys EL1 signs with. (By encoding: the assembler knows their
        // names only with the `pauth` target feature.)
        unsafe {
            core::arch::asm!(
                "msr S3_0_C2_C1_0, xzr", // APIAKeyLo_EL1
                "msr S3_0_C2_C1_1, xzr", // APIAKeyHi_EL1
                "msr S3_0_C2_C1_2, xzr", // APIBKeyLo_EL1
                "msr S3_0_C2_C1_3, xzr", // APIBKeyHi_EL1
                "msr S3_0_C2_C2_0, xzr", // APDAKeyLo_EL1
                "msr S3_0_C2_C2_1, xzr", // APDAKeyHi_EL1
                "msr S3_0_C2_C2_2, xzr", // APDBKeyLo_EL1
                "msr S3_0_C2_C2_3, xzr", // APDBKeyHi_EL1
                "msr S3_0_C2_C3_0, xzr", // APGAKeyLo_EL1
                "msr S3_0_C2_C3_1, xzr", // APGAKeyHi_EL1
                options(nomem, nostack)
            )
        };
    }
    clear_debug_pairs(cpu.breakpoints, cpu.watchpoints);
    // SAFETY: MDCCINT_EL1 and DBGCLAIMCLR_EL1 are debug registers every Armv8-A core has;
    // writing them at EL2 changes only this core's debug state, no memory.
    unsafe {
        core::arch::asm!(
            "msr S2_0_C0_C2_0, xzr",  // MDCCINT_EL1
            "msr S2_0_C7_C9_6, {all}", // DBGCLAIMCLR_EL1
            all = in(reg) 0xffu64,
            options(nomem, nostack)
        )
    };
    if let Pmu::V3 { counters, .. } = cpu.pmu {
        for counter in 0..u64::from(counters) {
            // SAFETY: the core has a PMUv3 with `counters` event counters; selecting one and
            // writing its type and count changes only PMU state.
            unsafe {
                core::arch::asm!(
                    "msr S3_3_C9_C12_5, {n}", // PMSELR_EL0
                    "isb",
                    "msr S3_3_C9_C13_1, xzr", // PMXEVTYPER_EL0
                    "msr S3_3_C9_C13_2, xzr", // PMXEVCNTR_EL0
                    n = in(reg) counter,
                    options(nomem, nostack)
                )
            };
        }
        // SAFETY: as above, PMU registers of this core only. PMCR_EL0 = P | C: counting off,
        // every counter and the cycle counter reset.
        unsafe {
            core::arch::asm!(
                "msr S3_3_C9_C12_2, {all}", // PMCNTENCLR_EL0
                "msr S3_0_C9_C14_2, {all}", // PMINTENCLR_EL1
                "msr S3_3_C9_C12_3, {all}", // PMOVSCLR_EL0
                "msr S3_3_C9_C14_0, xzr",   // PMUSERENR_EL0
                "msr S3_3_C9_C12_5, xzr",   // PMSELR_EL0
                "msr S3_3_C14_C15_7, xzr",  // PMCCFILTR_EL0
                "msr S3_3_C9_C12_0, {pmcr}", // PMCR_EL0
                all = in(reg) u64::from(u32::MAX),
                pmcr = in(reg) 0b110u64,
                options(nomem, nostack)
            )
        };
    }
}

/// Zeroes DBGBVR<n>_EL1/DBGBCR<n>_EL1 for n below `breakpoints` and DBGWVR<n>_EL1/
/// DBGWCR<n>_EL1 for n below `watchpoints` (at most 16 each; the register number is part
/// of the instruction's encoding, CRm = n).
fn clear_debug_pairs(breakpoints: u8, watchpoints: u8) {
    macro_rules! clear {
        ($($n:literal)*) => {$(
            if $n < breakpoints {
                // SAFETY: breakpoint n is implemented (n < BRPs + 1); writing its registers
                // at EL2 changes only this core's debug state.
                unsafe {
                    core::arch::asm!(
                        concat!("msr S2_0_C0_C", $n, "_4, xzr"),
                        concat!("msr S2_0_C0_C", $n, "_5, xzr"),
                        options(nomem, nostack)
                    )
                };
            }
            if $n < watchpoints {
                // SAFETY: as above, for watchpoint n (n < WRPs + 1).
                unsafe {
                    core::arch::asm!(
                        concat!("msr S2_0_C0_C", $n, "_6, xzr"),
                        concat!("msr S2_0_C0_C", $n, "_7, xzr"),
                        options(nomem, nostack)
                    )
                };
            }
        )*};
    }
    clear!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
}

/// Discards this core's TLB entries for the current VMID (stage 1 and 2).
pub fn invalidate_guest_tlb() {
    // SAFETY: TLB maintenance has no effect on memory contents.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            options(nostack)
        )
    };
}

/// Most pages [`invalidate_guest_ipas`] invalidates one by one; above it, the whole VMID.
const MOST_PAGES_BY_IPA: u64 = 64;

/// Discards every core's stage-2 translations of the IPAs `[ipa, ipa + size)` for the current
/// VMID, and every stage-1 translation of that VMID (which may have been built on them; Arm ARM
/// D8.17, "TLB maintenance for stage 2"). The stage-2 tables must already be changed.
pub fn invalidate_guest_ipas(ipa: u64, size: u64) {
    let pages = size.div_ceil(4096);
    // SAFETY: TLB maintenance has no effect on memory contents.
    unsafe { core::arch::asm!("dsb ishst", options(nostack)) };
    if pages > MOST_PAGES_BY_IPA {
        // One broadcast for the whole VMID instead of thousands: a guest toggling a large
        // BAR's decoding in a loop would otherwise make every core of the node handle up to
        // 4096 invalidations per toggle (found in review).
        // SAFETY: as above.
        unsafe { core::arch::asm!("tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
        return;
    }
    for page in 0..pages {
        let operand = (ipa >> 12).wrapping_add(page) & ((1 << 36) - 1);
        // SAFETY: as above.
        unsafe { core::arch::asm!("tlbi ipas2e1is, {}", in(reg) operand, options(nostack)) };
    }
    // SAFETY: as above.
    unsafe {
        core::arch::asm!(
            "dsb ish",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            options(nostack)
        )
    };
}
