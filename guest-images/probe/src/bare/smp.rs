//! Secondary CPUs: PSCI CPU_ON for every CPU of the device tree except the
//! boot CPU, the MPIDR affinity each CPU reads from its own MPIDR_EL1, and
//! the secondaries' life: record, memory-test share, then `wfi` forever
//! (the `sgi-self-test` receiver takes SGIs in that `wfi`; the
//! `nvme-prp-toctou` flipper first serves its flipping jobs).

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::registers::{MPIDR_EL1, Readable};
use microvisor_probe::MAX_CPUS;
use microvisor_probe::dt::{Conduit, Platform};
use microvisor_probe::gic::SELF_TEST_SGI;

use super::{entry, gic, memtest, nvme_attacks, psci, timer};

/// How long the boot CPU waits for the secondaries to come online.
pub const ONLINE_TIMEOUT_MS: u64 = 2000;

/// MPIDR_EL1 affinity fields Aff3 (39:32) and Aff2..Aff0 (23:0); without
/// RES1 bit 31, U (30) and MT (24).
pub const AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// Set in [`SEEN`] once a CPU has recorded itself.
const ONLINE: u64 = 1 << 63;

/// Per vCPU index: `ONLINE | affinity` once that CPU ran.
static SEEN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The affinity of an MPIDR value.
pub fn affinity(mpidr: u64) -> u64 {
    mpidr & AFFINITY_MASK
}

/// The calling CPU's affinity.
pub fn own_affinity() -> u64 {
    affinity(MPIDR_EL1.get())
}

/// Records the calling CPU as vCPU `index`.
pub fn mark_online(index: usize) {
    if let Some(slot) = SEEN.get(index) {
        slot.store(ONLINE | own_affinity(), Ordering::Release);
        aarch64_cpu::asm::sev();
    }
}

/// The affinity vCPU `index` read from its MPIDR_EL1, if it came online.
pub fn seen(index: usize) -> Option<u64> {
    let value = SEEN.get(index)?.load(Ordering::Acquire);
    (value & ONLINE != 0).then_some(value & !ONLINE)
}

/// How starting one CPU went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The boot CPU itself.
    Boot,
    /// No PSCI conduit in the device tree, so no CPU_ON.
    NoPsci,
    /// CPU_ON returned this (0 = SUCCESS).
    CpuOn(i64),
}

/// Starts every CPU in `platform` except `boot_index` and waits up to
/// [`ONLINE_TIMEOUT_MS`] for the started ones to record themselves.
pub fn bring_up(platform: &Platform, boot_index: usize) -> [Start; MAX_CPUS] {
    let mut starts = [Start::NoPsci; MAX_CPUS];
    let entry = entry::secondary_entry_address();
    for (index, &mpidr) in platform.cpus().iter().enumerate() {
        starts[index] = if index == boot_index {
            Start::Boot
        } else if let Some(conduit) = platform.psci {
            Start::CpuOn(psci::cpu_on(conduit, mpidr, entry, index as u64))
        } else {
            Start::NoPsci
        };
    }
    let deadline = timer::now() + timer::ticks_from_ms(ONLINE_TIMEOUT_MS);
    let pending = |starts: &[Start; MAX_CPUS]| {
        (0..platform.cpus().len()).any(|i| starts[i] == Start::CpuOn(0) && seen(i).is_none())
    };
    while pending(&starts) && timer::now() < deadline && !entry::exception_taken() {
        timer::pause();
    }
    starts
}

/// PSCI conduit for calls that do not depend on the tree having one:
/// the tree's, else HVC (what the microvisor provides).
pub fn conduit(platform: &Platform) -> Conduit {
    platform.psci.unwrap_or(Conduit::Hvc)
}

/// Rust entry of a secondary CPU (from `probe_secondary_entry`, MMU on,
/// own stack): record, test memory, then sleep, or serve SGIs if this is
/// the `sgi-self-test` receiver.
pub extern "C" fn secondary_main(index: usize) -> ! {
    timer::init_cpu();
    mark_online(index);
    memtest::participate(index);
    gic::serve_if_receiver(index, SELF_TEST_SGI);
    nvme_attacks::serve_if_flipper(index);
    super::sweep::serve_if_racer(index);
    entry::park()
}
