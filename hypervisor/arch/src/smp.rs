//! Starting secondary cores through the firmware's PSCI CPU_ON and giving every core its own
//! hypervisor stack.

use alloc::boxed::Box;
use alloc::vec;
use core::sync::atomic::{AtomicU64, Ordering};

use microvisor_logic::inventory::{Conduit, MAX_CPUS};

use crate::{cache, firmware, mmu};

/// Bytes of hypervisor stack per core.
pub const STACK_SIZE: usize = 32 * 1024;

/// Top of each core's hypervisor stack, by physical core index.
static STACK_TOPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Top of this core's hypervisor stack.
pub fn stack_top() -> u64 {
    STACK_TOPS[crate::cpu::core_index() % MAX_CPUS].load(Ordering::Relaxed)
}

/// Records the stack the boot core runs on (set up by `boot/`).
pub fn set_boot_stack(core: usize, top: u64) {
    STACK_TOPS[core % MAX_CPUS].store(top, Ordering::Relaxed);
}

/// What a starting core reads, with its MMU still off, to turn it on and reach Rust.
/// Field offsets are used by `secondary_entry` below.
#[repr(C)]
struct CoreStart {
    mair: u64,
    tcr: u64,
    ttbr0: u64,
    sctlr: u64,
    stack_top: u64,
    core_index: u64,
    entry: u64,
}

/// Why a core could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// The MMU configuration is not known yet (the boot core has not enabled its MMU).
    NoMmu,
    /// The firmware refused CPU_ON with this PSCI status.
    Firmware(i64),
}

/// Starts the core with affinity `mpidr` (physical index `core`) at EL2: it turns on the
/// same stage-1 map as the boot core, switches to a fresh stack and calls `entry(core)`.
pub fn start_core(
    conduit: Conduit,
    mpidr: u64,
    core: usize,
    entry: extern "C" fn(usize) -> !,
) -> Result<(), StartError> {
    let mmu = mmu::config().ok_or(StartError::NoMmu)?;
    let stack: &'static mut [u128] = vec![0u128; STACK_SIZE / 16].leak();
    let stack_top = stack.as_ptr_range().end as u64;
    STACK_TOPS[core % MAX_CPUS].store(stack_top, Ordering::Relaxed);
    let start = Box::leak(Box::new(CoreStart {
        mair: mmu.mair,
        tcr: mmu.tcr,
        ttbr0: mmu.ttbr0,
        sctlr: mmu.sctlr,
        stack_top,
        core_index: core as u64,
        entry: entry as usize as u64,
    }));
    let address = start as *const CoreStart as u64;
    // The new core reads the record with its caches off.
    cache::clean_to_poc(address, core::mem::size_of::<CoreStart>() as u64);
    unsafe extern "C" {
        static secondary_entry: u8;
    }
    let entry_point = core::ptr::addr_of!(secondary_entry) as u64;
    match firmware::cpu_on(conduit, mpidr, entry_point, address) {
        0 => Ok(()),
        status => Err(StartError::Firmware(status)),
    }
}

core::arch::global_asm!(
    r#"
    .section .text.secondary, "ax"
    .global secondary_entry
    .balign 4
// x0 = &CoreStart, MMU and caches off, at EL2.
secondary_entry:
    ldp x1, x2, [x0, #0]
    msr mair_el2, x1
    msr tcr_el2, x2
    ldr x1, [x0, #16]
    msr ttbr0_el2, x1
    isb
    tlbi alle2
    dsb nsh
    isb
    ldr x1, [x0, #24]
    msr sctlr_el2, x1
    isb
    ldp x1, x2, [x0, #32]
    mov sp, x1
    msr tpidr_el2, x2
    ldr x3, [x0, #48]
    mov x0, x2
    mov x29, xzr
    mov x30, xzr
    br x3
"#
);
