//! One vCPU: pinned to one physical core for its whole life, with its PSCI power state and its
//! exit counters.

use core::sync::atomic::{AtomicU64, Ordering};

use microvisor_logic::bus::MAX_REGIONS;
use microvisor_logic::exits::ExitCause;
use spin::Mutex;

/// Power state of one vCPU (PSCI's view: ON, OFF, ON_PENDING).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    Off,
    /// CPU_ON accepted; the vCPU's core has not picked it up yet.
    OnPending {
        entry: u64,
        context: u64,
    },
    On,
}

/// Exits of one vCPU: by cause, and for MMIO by the slice's bus counter slot. Only the
/// vCPU's own core counts (on its exit path), so a count is a plain load and store; other
/// cores read them, and reset them only while the vCPU is parked.
pub struct ExitCounters {
    causes: [AtomicU64; ExitCause::COUNT],
    mmio: [AtomicU64; MAX_REGIONS],
}

impl ExitCounters {
    const fn new() -> Self {
        Self {
            causes: [const { AtomicU64::new(0) }; ExitCause::COUNT],
            mmio: [const { AtomicU64::new(0) }; MAX_REGIONS],
        }
    }

    /// Counts one exit of `cause` (on the vCPU's own core).
    pub fn count(&self, cause: ExitCause) {
        increment(&self.causes[cause.index()]);
    }

    /// Counts one emulated MMIO access in bus counter slot `slot` (on the vCPU's own core).
    pub fn count_mmio(&self, slot: usize) {
        if let Some(counter) = self.mmio.get(slot) {
            increment(counter);
        }
    }

    /// Exits of `cause` so far.
    pub fn cause(&self, cause: ExitCause) -> u64 {
        self.causes[cause.index()].load(Ordering::Relaxed)
    }

    /// MMIO exits in bus counter slot `slot` so far.
    pub fn mmio(&self, slot: usize) -> u64 {
        self.mmio.get(slot).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Back to zero (a new run of the slice starts).
    pub fn reset(&self) {
        self.causes
            .iter()
            .chain(&self.mmio)
            .for_each(|c| c.store(0, Ordering::Relaxed));
    }

    /// Every exit so far.
    pub fn total(&self) -> u64 {
        let sum = |counters: &[AtomicU64]| -> u64 {
            counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
        };
        sum(&self.causes) + sum(&self.mmio)
    }
}

/// Adds one to a counter only the calling core writes: no read-modify-write loop needed.
fn increment(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// One vCPU of a slice.
pub struct Vcpu {
    /// Index inside the slice (its virtual MPIDR Aff0).
    pub index: usize,
    /// Physical core index (position in the firmware DT).
    pub core: usize,
    /// Physical MPIDR affinity of that core (for hypervisor SGIs).
    pub mpidr: u64,
    power: Mutex<Power>,
    pub exits: ExitCounters,
}

impl Vcpu {
    pub fn new(index: usize, core: usize, mpidr: u64) -> Self {
        Self {
            index,
            core,
            mpidr,
            power: Mutex::new(Power::Off),
            exits: ExitCounters::new(),
        }
    }

    pub fn power(&self) -> Power {
        *self.power.lock()
    }

    /// PSCI CPU_ON: OFF becomes ON_PENDING with this entry; otherwise the state it is in.
    pub fn request_on(&self, entry: u64, context: u64) -> Result<(), Power> {
        let mut power = self.power.lock();
        match *power {
            Power::Off => {
                *power = Power::OnPending { entry, context };
                Ok(())
            }
            other => Err(other),
        }
    }

    /// The vCPU's own core takes a pending power-on: ON, and where to enter.
    pub fn take_pending_on(&self) -> Option<(u64, u64)> {
        let mut power = self.power.lock();
        match *power {
            Power::OnPending { entry, context } => {
                *power = Power::On;
                Some((entry, context))
            }
            _ => None,
        }
    }

    /// Powers the vCPU off (its own core parks next).
    pub fn set_off(&self) {
        *self.power.lock() = Power::Off;
    }

    /// Cancels a pending power-on; true if the vCPU is still ON (running on its core).
    pub fn cancel_pending(&self) -> bool {
        let mut power = self.power.lock();
        if let Power::OnPending { .. } = *power {
            *power = Power::Off;
        }
        *power == Power::On
    }
}
