//! Time from the generic timer's virtual counter (CNTVCT_EL0 at CNTFRQ_EL0
//! Hz, Arm ARM D12) and sleeping until a deadline: WFIT (FEAT_WFxT, a WFI
//! with a CNTVCT_EL0 deadline) when ID_AA64ISAR2_EL1.WFxT says it exists,
//! otherwise WFE with the virtual-counter event stream waking it about every
//! 66 µs at 1 GHz (on QEMU's TCG, WFE does not sleep, so that is polling).

use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTKCTL_EL1, CNTVCT_EL0, ReadWriteable, Readable};

/// Counter frequency assumed if CNTFRQ_EL0 reads 0 (firmware did not set it).
const FALLBACK_FREQUENCY: u64 = 1_000_000_000;

static WFIT: AtomicBool = AtomicBool::new(false);

/// Reads ID_AA64ISAR2_EL1 (not in aarch64-cpu 11.2).
fn id_aa64isar2_el1() -> u64 {
    let value: u64;
    // SAFETY: reading an ID register has no side effects; it is defined at
    // EL1 on every Armv8 CPU (RAZ before Armv8.7).
    unsafe {
        core::arch::asm!("mrs {}, ID_AA64ISAR2_EL1", out(reg) value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Whether the CPU implements WFIT/WFET (ID_AA64ISAR2_EL1.WFxT, bits [3:0]).
pub fn wfxt_implemented() -> bool {
    id_aa64isar2_el1() & 0xf != 0
}

/// Chooses how this CPU sleeps; call once per CPU before [`sleep_until`].
/// The WFIT decision is shared (all CPUs of a slice are alike); the event
/// stream is per CPU.
pub fn init_cpu() {
    WFIT.store(wfxt_implemented(), Ordering::Relaxed);
    // Event stream from CNTVCT bit 15 (every 2^16 ticks: 65.5 µs at 1 GHz)
    // wakes WFE when WFIT is missing.
    CNTKCTL_EL1.modify(
        CNTKCTL_EL1::EVNTEN::Enable + CNTKCTL_EL1::EVNTI.val(15) + CNTKCTL_EL1::EVNTDIR::ZeroToOne,
    );
}

/// Whether [`sleep_until`] uses WFIT.
pub fn uses_wfit() -> bool {
    WFIT.load(Ordering::Relaxed)
}

/// Counter ticks now.
pub fn now() -> u64 {
    CNTVCT_EL0.get()
}

/// Counter ticks per second.
pub fn frequency() -> u64 {
    match CNTFRQ_EL0.get() & 0xffff_ffff {
        0 => FALLBACK_FREQUENCY,
        f => f,
    }
}

/// Ticks in `ms` milliseconds.
pub fn ticks_from_ms(ms: u64) -> u64 {
    (u128::from(ms) * u128::from(frequency()) / 1000).min(u128::from(u64::MAX)) as u64
}

/// Milliseconds in `ticks`.
pub fn ms_from_ticks(ticks: u64) -> u64 {
    (u128::from(ticks) * 1000 / u128::from(frequency())) as u64
}

/// Microseconds in `ticks`.
pub fn us_from_ticks(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000 / u128::from(frequency())) as u64
}

/// WFIT: waits for an event or until CNTVCT_EL0 >= `deadline`.
fn wfit(deadline: u64) {
    // SAFETY: WFIT only suspends execution until an interrupt, an event or
    // the deadline; it accesses no memory. Only used when ID_AA64ISAR2_EL1
    // says FEAT_WFxT is implemented.
    unsafe {
        core::arch::asm!(".arch_extension wfxt", "wfit {}", in(reg) deadline, options(nomem, nostack, preserves_flags));
    }
}

/// Sleeps until the counter reaches `deadline`.
pub fn sleep_until(deadline: u64) {
    while now() < deadline {
        if uses_wfit() {
            wfit(deadline);
        } else {
            aarch64_cpu::asm::wfe();
        }
    }
}

/// Waits for an interrupt (one that is pending wakes the CPU even while masked), or until
/// `deadline` where WFIT exists: a wait that is never answered cannot stop the clock of a
/// machine whose CPUs all sleep.
pub fn wait_for_interrupt(deadline: u64) {
    if uses_wfit() {
        wfit(deadline);
    } else {
        aarch64_cpu::asm::wfi();
    }
}

/// Sleeps about `us` microseconds.
pub fn sleep_us(us: u64) {
    sleep_until(now().saturating_add(
        u64::try_from(u128::from(us) * u128::from(frequency()) / 1_000_000).unwrap_or(u64::MAX),
    ));
}

/// A short pause inside a wait loop (50 µs), so waiting CPUs leave the host
/// CPU to the ones doing the work.
pub fn pause() {
    sleep_us(50);
}
