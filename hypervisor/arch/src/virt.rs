//! EL2 controls for running a guest on this core (Arm ARM D24.2): HCR_EL2, stage-2
//! (VTCR/VTTBR), the virtual CPU identity, and the EL1 state a vCPU starts from.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    CNTHCTL_EL2, CNTV_CTL_EL0, CNTVOFF_EL2, CPTR_EL2, HCR_EL2, ID_AA64PFR0_EL1, MIDR_EL1,
    SCTLR_EL1, VMPIDR_EL2, VTCR_EL2, VTTBR_EL2,
};
use tock_registers::interfaces::{Readable, Writeable};

use crate::regs::{SMCR_EL2, VPIDR_EL2, ZCR_EL2};

/// Stage-2 input size: 39-bit IPA (T0SZ = 25), walks start at level 1. Must match
/// `microvisor_logic::pagetable::Regime::Stage2`.
const STAGE2_T0SZ: u64 = 25;

/// ID_AA64PFR1_EL1.SME (bits [27:24]).
fn has_sme() -> bool {
    let pfr1: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { core::arch::asm!("mrs {}, id_aa64pfr1_el1", out(reg) pfr1, options(nomem, nostack)) };
    (pfr1 >> 24) & 0xf != 0
}

fn has_sve() -> bool {
    ID_AA64PFR0_EL1.read(ID_AA64PFR0_EL1::SVE) != 0
}

/// Configures this core for guests of one slice: traps as DESIGN §4 says, stage 2 on with the
/// slice's tables (`vttbr` = root | VMID << 48), and `vcpu` as the guest-visible Aff0.
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

    // FP/SIMD, SVE and SME stay with the guest: no context is ever switched on this core.
    // Non-VHE CPTR_EL2: bits 13, 12 (TSM, or RES1 without SME), 9, 8 (TZ, or RES1 without
    // SVE) and 7:0 are RES1; TFP (10) = 0.
    // ZCR_EL2/SMCR_EL2 accesses trap while CPTR_EL2 traps SVE/SME (U-Boot leaves it so), so
    // CPTR_EL2 goes first.
    let (sve, sme) = (has_sve(), has_sme());
    let mut cptr = 0x33ff;
    if sve {
        cptr &= !(1 << 8);
    }
    if sme {
        cptr &= !(1 << 12);
    }
    CPTR_EL2.set(cptr);
    barrier::isb(barrier::SY);
    if sve {
        ZCR_EL2.set(0xf);
    }
    if sme {
        SMCR_EL2.set(0xf);
    }

    // The guest reads both counters and owns the EL1 virtual timer; the EL1 physical timer
    // traps (EL1PCEN = 0): it is not part of a slice. The virtual counter has no offset.
    CNTVOFF_EL2.set(0);
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::CLEAR);

    HCR_EL2.write(
        HCR_EL2::RW::EL1IsAarch64
            + HCR_EL2::VM::Enable
            + HCR_EL2::SWIO::SET
            + HCR_EL2::FMO::EnableVirtualFIQ
            + HCR_EL2::IMO::EnableVirtualIRQ
            + HCR_EL2::AMO::SET
            + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
            + HCR_EL2::TIDCP::SET
            + HCR_EL2::API::SET
            + HCR_EL2::APK::SET,
    );
    barrier::isb(barrier::SY);
    invalidate_guest_tlb();
}

/// Resets the EL1 state a vCPU starts from (MMU and caches off, timer off).
pub fn reset_el1() {
    // SCTLR_EL1 RES1 bits (29, 28, 23, 22, 20, 11): MMU, caches and alignment checks off.
    SCTLR_EL1.set(0x30d0_0800);
    CNTV_CTL_EL0.set(0);
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
