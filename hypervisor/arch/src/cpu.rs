//! This core: identity, waiting, the system counter, halting.

use aarch64_cpu::asm;
use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0, MPIDR_EL1, TPIDR_EL2};
use tock_registers::interfaces::{Readable, Writeable};

use microvisor_logic::inventory::MPIDR_AFFINITY_MASK;

/// Affinity fields of this core's MPIDR_EL1.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & MPIDR_AFFINITY_MASK
}

/// Records this core's physical index (position in the firmware DT) for [`core_index`].
pub fn set_core_index(index: usize) {
    TPIDR_EL2.set(index as u64);
}

/// This core's physical index, as recorded by [`set_core_index`].
pub fn core_index() -> usize {
    TPIDR_EL2.get() as usize
}

/// Waits until an interrupt is pending (even a masked one; hypervisor code runs with IRQs
/// masked and polls the GIC afterwards).
pub fn wait_for_interrupt() {
    asm::wfi();
}

/// Sends an event to all cores (wakes WFE).
pub fn send_event() {
    asm::sev();
}

/// Ticks of the system counter.
pub fn counter() -> u64 {
    CNTPCT_EL0.get()
}

/// Frequency of the system counter in Hz.
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// Stops this core for good (interrupts masked, so it never leaves).
pub fn halt() -> ! {
    loop {
        asm::wfi();
    }
}

/// Hint for spin-wait loops.
pub fn spin_hint() {
    core::hint::spin_loop();
}
