//! This core's GICv3 virtual CPU interface control (GICv3 §12.4, ICH_*_EL2): list registers,
//! the hypervisor control register and the guest's saved interface state. Every function acts
//! on the calling core only.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};

/// List registers this core implements (ICH_VTR_EL2.ListRegs + 1).
pub fn list_register_count() -> usize {
    ICH_VTR_EL2.read(ICH_VTR_EL2::ListRegs) as usize + 1
}

/// Reads list register `n` (0 for one that does not exist).
#[inline] // on an exit path: inlined even under the image's lower inline threshold
pub fn read_list_register(n: usize) -> u64 {
    match n {
        0 => ICH_LR0_EL2.get(),
        1 => ICH_LR1_EL2.get(),
        2 => ICH_LR2_EL2.get(),
        3 => ICH_LR3_EL2.get(),
        4 => ICH_LR4_EL2.get(),
        5 => ICH_LR5_EL2.get(),
        6 => ICH_LR6_EL2.get(),
        7 => ICH_LR7_EL2.get(),
        8 => ICH_LR8_EL2.get(),
        9 => ICH_LR9_EL2.get(),
        10 => ICH_LR10_EL2.get(),
        11 => ICH_LR11_EL2.get(),
        12 => ICH_LR12_EL2.get(),
        13 => ICH_LR13_EL2.get(),
        14 => ICH_LR14_EL2.get(),
        15 => ICH_LR15_EL2.get(),
        _ => 0,
    }
}

/// Writes list register `n` (ignored for one that does not exist).
pub fn write_list_register(n: usize, value: u64) {
    match n {
        0 => ICH_LR0_EL2.set(value),
        1 => ICH_LR1_EL2.set(value),
        2 => ICH_LR2_EL2.set(value),
        3 => ICH_LR3_EL2.set(value),
        4 => ICH_LR4_EL2.set(value),
        5 => ICH_LR5_EL2.set(value),
        6 => ICH_LR6_EL2.set(value),
        7 => ICH_LR7_EL2.set(value),
        8 => ICH_LR8_EL2.set(value),
        9 => ICH_LR9_EL2.set(value),
        10 => ICH_LR10_EL2.set(value),
        11 => ICH_LR11_EL2.set(value),
        12 => ICH_LR12_EL2.set(value),
        13 => ICH_LR13_EL2.set(value),
        14 => ICH_LR14_EL2.set(value),
        15 => ICH_LR15_EL2.set(value),
        _ => {}
    }
}

/// List registers the guest has finished with since they were written: empty ones
/// (ICH_ELRSR_EL2) and deactivated ones waiting for their EOI maintenance (ICH_EISR_EL2).
/// Bit n stands for list register n.
pub fn finished_list_registers() -> u16 {
    (crate::regs::ICH_ELRSR_EL2.get() | crate::regs::ICH_EISR_EL2.get()) as u16
}

/// Turns the virtual CPU interface on, asking for a maintenance interrupt when the list
/// registers drain if `underflow` (interrupts are waiting for a free list register).
pub fn set_control(underflow: bool) {
    let mut value = ICH_HCR_EL2::En::SET.value;
    if underflow {
        value |= ICH_HCR_EL2::UIE::SET.value;
    }
    ICH_HCR_EL2.set(value);
}

/// Puts this core's virtual CPU interface in its reset state: no list register in use, no
/// active priority, the guest's interface disabled (ICH_VMCR_EL2 = 0). Every implemented
/// active-priorities register is cleared: 1 with 5 preemption bits, 2 with 6, 4 with 7
/// (ICH_VTR_EL2.PREbits + 1); until 2026-12-04 only the first, so on cores with more a last
/// run's active priorities could mask the next one's interrupts (found in review).
pub fn reset() {
    for n in 0..list_register_count() {
        write_list_register(n, 0);
    }
    ICH_AP1R0_EL2.set(0);
    ICH_AP0R0_EL2.set(0);
    let preemption_bits = ICH_VTR_EL2.read(ICH_VTR_EL2::PREbits) + 1;
    if preemption_bits >= 6 {
        ICH_AP1R1_EL2.set(0);
        ICH_AP0R1_EL2.set(0);
    }
    if preemption_bits >= 7 {
        ICH_AP1R2_EL2.set(0);
        ICH_AP0R2_EL2.set(0);
        ICH_AP1R3_EL2.set(0);
        ICH_AP0R3_EL2.set(0);
    }
    ICH_VMCR_EL2.set(0);
    set_control(false);
    barrier::isb(barrier::SY);
}
