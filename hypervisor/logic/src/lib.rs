//! Pure logic of the microvisor: everything that can be decided without touching hardware,
//! tested on the host. The architecture layer feeds it decoded inputs and applies its answers.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod bits;
pub mod bus;
pub mod console;
pub mod control;
pub mod dtb;
pub mod el2;
pub mod exits;
pub mod guest_dt;
pub mod heap;
pub mod inject;
pub mod inventory;
pub mod memory_map;
pub mod msix;
pub mod nvme;
pub mod pages;
pub mod pagetable;
pub mod passthrough;
pub mod pci;
pub mod pl011;
pub mod pl061;
pub mod psci;
pub mod ratelimit;
pub mod simd;
pub mod smmu;
pub mod stacks;
#[cfg(test)]
mod testing;
pub mod trap;
pub mod vgic;
pub mod vits;
pub mod vpci;
