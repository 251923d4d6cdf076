//! The microvisor kernel: boot flow, slices, and guest exit handling, as safe code over the
//! architecture layer (`microvisor-arch`) and the pure logic (`microvisor-logic`).
#![no_std]

extern crate alloc;

pub mod console;
mod exits;
mod irq;
mod node;
mod nvme;
mod psci;
mod slice;
mod start;

pub use start::{BootInfo, primary_main};

/// Reports a Rust panic in the hypervisor (a bug, never a guest's doing) and stops this core.
pub fn panic_report(info: &core::panic::PanicInfo<'_>) -> ! {
    console::fatal(format_args!(
        "panic on core {}: {info}",
        microvisor_arch::cpu::core_index()
    ));
    microvisor_arch::cpu::halt()
}
