//! Calls into the node firmware's PSCI (Arm DEN0022), through the conduit the firmware DT
//! names. The hypervisor is the only caller: guests never reach the firmware.

use microvisor_logic::inventory::Conduit;
use microvisor_logic::psci::function;

/// Issues an SMCCC call with up to three arguments and returns x0.
fn call(conduit: Conduit, function: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    let mut x0 = u64::from(function);
    // SAFETY: an SMCCC call to firmware; per SMCCC 1.0 x0-x17 may be clobbered, which the
    // clobber list states. The firmware does not touch hypervisor memory.
    unsafe {
        match conduit {
            Conduit::Smc => core::arch::asm!(
                "smc #0",
                inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _, options(nostack)
            ),
            Conduit::Hvc => core::arch::asm!(
                "hvc #0",
                inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _, options(nostack)
            ),
        }
    }
    x0 as i64
}

/// PSCI_VERSION of the firmware.
pub fn version(conduit: Conduit) -> u32 {
    call(conduit, function::PSCI_VERSION, 0, 0, 0) as u32
}

/// CPU_ON: starts core `mpidr` at EL2 at physical address `entry` with x0 = `context`.
pub fn cpu_on(conduit: Conduit, mpidr: u64, entry: u64, context: u64) -> i64 {
    call(conduit, function::CPU_ON_64, mpidr, entry, context)
}

/// SYSTEM_OFF: powers the node off.
pub fn system_off(conduit: Conduit) -> ! {
    call(conduit, function::SYSTEM_OFF, 0, 0, 0);
    crate::cpu::halt()
}
