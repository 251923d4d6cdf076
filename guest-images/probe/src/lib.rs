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

/// Guest-physical address of the heartbeat canary (64 KiB, `bare::heartbeat`), fixed by
/// `link.ld` so that scenarios can aim another slice's attacks exactly at it: a write that
/// got through turns the victim's next heartbeat `CORRUPT`.
pub const CANARY_IPA: u64 = 0x4008_0000;

/// The kernel string the probe reports: `probe <crate version>`.
pub const KERNEL_NAME: &str = concat!("probe ", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    #[test]
    fn the_linker_script_places_the_canary_where_the_scenarios_aim() {
        let script = include_str!("../link.ld");
        let placement = format!(".canary {:#x} (NOLOAD)", super::CANARY_IPA);
        assert!(script.contains(&placement), "link.ld has no `{placement}`");
    }
}
