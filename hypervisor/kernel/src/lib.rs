//! The microvisor kernel: boot flow, slices, and guest exit handling, as safe code over the
//! architecture layer (`microvisor-arch`) and the pure logic (`microvisor-logic`).
//!
//! Modules form a tree, leaves first: `output` (the console sink), `stage2` (a slice's CPU
//! stage 2), `vcpu`, `vgic` (a slice's virtual GIC at run time), `pci` (the node's PCIe
//! hierarchy: buses, BARs and bridge windows at boot, function reset), `nvme` (the node's NVMe
//! controller and LPIs), `smmu` (the node's SMMUv3), `devices` (a slice's emulated devices,
//! assigned functions and MMIO bus), `slice`, `control` (the manager's control interface),
//! `psci`, `console` (operator input), `node`, `irq`, `run` (each core's run loop), `exits`,
//! `start`.
#![no_std]

extern crate alloc;

pub mod output;

mod console;
mod control;
mod devices;
mod exits;
mod irq;
mod node;
mod nvme;
mod pci;
mod psci;
mod run;
mod slice;
mod smmu;
mod stage2;
mod start;
mod vcpu;
mod vgic;

pub use start::{BootInfo, primary_main};

/// Reports a Rust panic in the hypervisor (a bug, never a guest's doing) and stops this core.
pub fn panic_report(info: &core::panic::PanicInfo<'_>) -> ! {
    output::fatal(format_args!(
        "panic on core {}: {info}",
        microvisor_arch::cpu::core_index()
    ));
    microvisor_arch::cpu::halt()
}
