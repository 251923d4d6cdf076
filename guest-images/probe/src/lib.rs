//! Pure logic of the probe guest: device-tree reading, command-line options,
//! JSON output, memory-test planning, GICv3 values for the interrupt
//! attacks, PCI configuration and the NVMe driver's commands, PRPs,
//! statuses, disk patterns and attack plans, and every attack's verdict
//! (`verdict`, `gic_attacks`, `nvme::attacks`, `sweep`). No hardware access and no
//! `unsafe`;
//! tested on the host with `cargo test -p microvisor-probe --lib`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod cmdline;
pub mod dt;
pub mod fault;
pub mod gic;
pub mod gic_attacks;
pub mod its;
pub mod json;
pub mod memplan;
pub mod nvme;
pub mod pci;
pub mod psci;
pub mod secret;
pub mod sweep;
pub mod text;
pub mod verdict;
pub mod virtio;

/// Most CPUs the probe brings up (per-CPU stacks and state are sized for it).
pub const MAX_CPUS: usize = 64;

/// Most `/memory` ranges the probe keeps.
pub const MAX_MEMORY_REGIONS: usize = 8;

/// The kernel string the probe reports: `probe <crate version>`.
pub const KERNEL_NAME: &str = concat!("probe ", env!("CARGO_PKG_VERSION"));
