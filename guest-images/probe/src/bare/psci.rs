//! PSCI calls (Arm DEN 0022, PSCI 1.1 §5) through the SMC Calling
//! Convention (Arm DEN 0028, SMC64/HVC64: arguments in x0-x3, result in x0,
//! x0-x17 may be clobbered).

use microvisor_probe::dt::Conduit;

pub use microvisor_probe::psci::{
    AFFINITY_INFO, CPU_OFF, CPU_ON, PSCI_VERSION, SYSTEM_OFF, SYSTEM_RESET, status_name,
};

/// `hvc #0` with function `fid` and three arguments; returns x0.
pub fn hvc(fid: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: u64;
    // SAFETY: an SMCCC call through HVC. Per SMCCC the callee may clobber
    // x0-x17 (all declared) and preserves the stack and all other
    // registers; the call itself accesses no memory of ours, except where a
    // PSCI function is defined to (none used here).
    unsafe {
        core::arch::asm!(
            "hvc #0",
            inout("x0") fid => ret,
            inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    ret as i64
}

/// `smc #0` with function `fid` and three arguments; returns x0.
pub fn smc(fid: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: u64;
    // SAFETY: as for `hvc`, with SMC as the conduit.
    unsafe {
        core::arch::asm!(
            "smc #0",
            inout("x0") fid => ret,
            inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    ret as i64
}

/// A call through the device tree's conduit.
pub fn call(conduit: Conduit, fid: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    match conduit {
        Conduit::Hvc => hvc(fid, a1, a2, a3),
        Conduit::Smc => smc(fid, a1, a2, a3),
    }
}

/// CPU_ON: start the CPU with affinity `target` at `entry` with x0 = `context`.
pub fn cpu_on(conduit: Conduit, target: u64, entry: u64, context: u64) -> i64 {
    call(conduit, CPU_ON, target, entry, context)
}

/// CPU_OFF: the calling CPU stops (returns only on failure).
pub fn cpu_off(conduit: Conduit) -> i64 {
    call(conduit, CPU_OFF, 0, 0, 0)
}

/// AFFINITY_INFO at affinity level 0: 0 = ON, 1 = OFF, 2 = ON_PENDING.
pub fn affinity_info(conduit: Conduit, target: u64) -> i64 {
    call(conduit, AFFINITY_INFO, target, 0, 0)
}

/// PSCI_VERSION as (major, minor), or None if the call fails.
pub fn version(conduit: Conduit) -> Option<(u16, u16)> {
    let v = call(conduit, PSCI_VERSION, 0, 0, 0);
    (v >= 0).then_some(((v >> 16) as u16, v as u16))
}
