//! EL2 controls for running a guest on this core (Arm ARM D24.2): the trap configuration
//! (`microvisor_logic::el2`, computed from this core's ID registers), stage 2 (VTCR/VTTBR),
//! the virtual CPU identity, and the EL1 state a vCPU starts from.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    AFSR0_EL1, AFSR1_EL1, AMAIR_EL1, CNTHCTL_EL2, CNTKCTL_EL1, CNTP_CTL_EL0, CNTP_CVAL_EL0,
    CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTVOFF_EL2, CONTEXTIDR_EL1, CPACR_EL1, CPTR_EL2, ELR_EL1,
    ESR_EL1, FAR_EL1, HCR_EL2, ID_AA64DFR0_EL1, ID_AA64MMFR2_EL1, ID_AA64PFR0_EL1, ID_AA64PFR1_EL1,
    MAIR_EL1, MDCR_EL2, MDSCR_EL1, MIDR_EL1, PAR_EL1, SCTLR_EL1, SP_EL0, SP_EL1, SPSR_EL1, TCR_EL1,
    TPIDR_EL0, TPIDR_EL1, TPIDRRO_EL0, TTBR0_EL1, TTBR1_EL1, VBAR_EL1, VMPIDR_EL2, VTCR_EL2,
    VTTBR_EL2,
};
use core::sync::atomic::{AtomicU8, Ordering};
use tock_registers::interfaces::{Readable, Writeable};

use microvisor_logic::el2::{self, CpuFeatures, IdRegisters, TrapConfiguration};
use microvisor_logic::pagetable::Stage2MemoryTypes;

use crate::regs::{ID_AA64SMFR0_EL1, PMCR_EL0, SMCR_EL2, VPIDR_EL2, ZCR_EL2};

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
/// exception and translation registers, debug exceptions off (MDSCR_EL1), and the vector
/// state (`simd::clear_guest_vector_state`: FP/SIMD, SVE, SME). Until 2026-12-04 only
/// SCTLR_EL1 and the timers were reset, so a new tenant could read what the last one left
/// there, e.g. key material in the vector registers (found in review).
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
    crate::simd::clear_guest_vector_state();
    barrier::isb(barrier::SY);
    invalidate_guest_tlb();
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

/// Discards every core's stage-2 translations of the IPAs `[ipa, ipa + size)` for the current
/// VMID, and every stage-1 translation of that VMID (which may have been built on them; Arm ARM
/// D8.17, "TLB maintenance for stage 2"). The stage-2 tables must already be changed.
pub fn invalidate_guest_ipas(ipa: u64, size: u64) {
    let pages = size.div_ceil(4096);
    // SAFETY: TLB maintenance has no effect on memory contents.
    unsafe { core::arch::asm!("dsb ishst", options(nostack)) };
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
