//! Starting secondary cores through the firmware's PSCI CPU_ON, and every core's hypervisor
//! stacks: its stack above an unmapped guard page and its emergency stack
//! (`microvisor_logic::stacks`), in a range boot sets aside and leaves the guard pages out of
//! the EL2 map.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

use microvisor_logic::inventory::{Conduit, MAX_CPUS};
use microvisor_logic::stacks::{CoreStacks, StackLayout};
use spin::Once;

use crate::{cache, exceptions, firmware, mmu};

/// Top of each core's hypervisor stack, by physical core index.
static STACK_TOPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Where every core's stacks are.
static LAYOUT: Once<StackLayout> = Once::new();

/// Top of this core's hypervisor stack.
pub fn stack_top() -> u64 {
    STACK_TOPS[crate::cpu::core_index() % MAX_CPUS].load(Ordering::Relaxed)
}

/// Gives every core its stacks (boot core, once, before any other core starts). The boot core
/// moves to its own the first time it empties its stack ([`crate::exceptions::run_on_fresh_stack`]
/// or entering a guest); until then it runs on the boot stack of `boot/`.
///
/// # Safety
/// `layout`'s range must be RAM used for nothing else, its stacks and emergency stacks mapped
/// as Normal memory and its guard pages unmapped in the EL2 map every core uses.
pub unsafe fn use_stacks(layout: StackLayout) {
    let layout = LAYOUT.call_once(|| layout);
    for (core, top) in STACK_TOPS.iter().enumerate().take(layout.cores()) {
        if let Some(stacks) = layout.core(core) {
            top.store(stacks.stack.end(), Ordering::Relaxed);
            exceptions::set_emergency_stack(core, stacks.emergency.end());
        }
    }
}

/// Core `core`'s stacks, once boot has laid them out.
pub fn stacks(core: usize) -> Option<CoreStacks> {
    LAYOUT.get()?.core(core)
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
    /// Boot laid out no stack for this core.
    NoStack,
    /// The firmware refused CPU_ON with this PSCI status.
    Firmware(i64),
}

/// Starts the core with affinity `mpidr` (physical index `core`) at EL2: it turns on the
/// same stage-1 map as the boot core, switches to its own stack and calls `entry(core)`.
pub fn start_core(
    conduit: Conduit,
    mpidr: u64,
    core: usize,
    entry: extern "C" fn(usize) -> !,
) -> Result<(), StartError> {
    let mmu = mmu::config().ok_or(StartError::NoMmu)?;
    let stack_top = stacks(core).ok_or(StartError::NoStack)?.stack.end();
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
