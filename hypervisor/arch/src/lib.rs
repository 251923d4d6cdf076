//! The aarch64 architecture layer of the microvisor: every register access, assembly
//! routine and raw memory access the hypervisor performs lives here, behind safe functions.
//! Everything above this crate is safe Rust.
#![no_std]

extern crate alloc;

pub mod cache;
pub mod cpu;
pub mod exceptions;
pub mod firmware;
pub mod gic;
pub mod its;
pub mod memory;
pub mod mmu;
pub mod pci;
pub mod regs;
pub mod simd;
pub mod smmu;
pub mod smp;
pub mod uart;
pub mod vgic;
pub mod virt;
