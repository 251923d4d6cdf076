//! This core: identity, waiting, the system counter and bounded waits on it, halting.

use core::time::Duration;

use aarch64_cpu::asm;
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{CNTFRQ_EL0, CNTHCTL_EL2, CNTPCT_EL0, MPIDR_EL1, TPIDR_EL2};
use tock_registers::LocalRegisterCopy;
use tock_registers::interfaces::{Readable, Writeable};

use microvisor_logic::el2::CNTHCTL_EL2 as CNTHCTL;

use microvisor_logic::inventory::MPIDR_AFFINITY_MASK;

/// Affinity fields of this core's MPIDR_EL1.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & MPIDR_AFFINITY_MASK
}

/// Records this core's physical index (position in the firmware DT) for [`core_index`].
pub fn set_core_index(index: usize) {
    TPIDR_EL2.set(index as u64);
}

/// This core's physical index, as recorded by [`set_core_index`].
pub fn core_index() -> usize {
    TPIDR_EL2.get() as usize
}

/// Waits until an interrupt is pending (even a masked one; hypervisor code runs with IRQs
/// masked and polls the GIC afterwards).
pub fn wait_for_interrupt() {
    asm::wfi();
}

/// Sends an event to all cores (wakes WFE), after this core's earlier stores are visible to
/// them (DSB ISHST), so a core woken by it sees what changed.
pub fn send_event() {
    barrier::dsb(barrier::ISHST);
    asm::sev();
}

/// Ticks of the system counter.
pub fn counter() -> u64 {
    CNTPCT_EL0.get()
}

/// Frequency of the system counter in Hz.
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// A point in time on the system counter, for waits that must end.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: u64,
}

impl Deadline {
    /// `timeout` from now (saturating: a counter that would wrap never passes the deadline
    /// early).
    pub fn after(timeout: Duration) -> Deadline {
        let micros = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        let ticks = micros.saturating_mul(counter_frequency()) / 1_000_000;
        Deadline {
            at: counter().saturating_add(ticks),
        }
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        counter() >= self.at
    }
}

/// Polls `done` until it holds (true) or `timeout` has passed on the system counter (false).
/// The counter is read only if the first poll fails, so a wait that is usually over at once
/// (a UART with room in its FIFO) costs one poll. `done` is polled once more after the
/// deadline, so a poll that was slow (a preempted emulator, say) is not taken for a timeout.
#[must_use]
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    if done() {
        return true;
    }
    let deadline = Deadline::after(timeout);
    loop {
        core::hint::spin_loop();
        if done() {
            return true;
        }
        if deadline.passed() {
            return done();
        }
    }
}

/// Waits in WFE until `done` holds (true) or `timeout` has passed on the system counter
/// (false). Whoever makes `done` hold sends an event ([`send_event`]); meanwhile the core
/// sleeps instead of polling a line other cores write (under QEMU TCG, WFE hands the host
/// thread to the other vCPUs). For the wait the EL2 event stream is on (CNTHCTL_EL2.EVNTEN:
/// an event every 2^16 counter ticks), so the deadline is noticed even when no event comes;
/// CNTHCTL_EL2 is put back afterwards.
#[must_use]
pub fn wait_for_event_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    if done() {
        return true;
    }
    let saved = CNTHCTL_EL2.get();
    let mut stream = LocalRegisterCopy::<u64, CNTHCTL::Register>::new(saved);
    stream.modify(CNTHCTL::EVNTEN::SET + CNTHCTL::EVNTDIR::CLEAR + CNTHCTL::EVNTI.val(15));
    CNTHCTL_EL2.set(stream.get());
    barrier::isb(barrier::SY);
    let deadline = Deadline::after(timeout);
    let held = loop {
        asm::wfe();
        if done() {
            break true;
        }
        if deadline.passed() {
            break done();
        }
    };
    CNTHCTL_EL2.set(saved);
    barrier::isb(barrier::SY);
    held
}

/// Stops this core for good (interrupts masked, so it never leaves).
pub fn halt() -> ! {
    loop {
        asm::wfi();
    }
}

/// Hint for spin-wait loops.
pub fn spin_hint() {
    core::hint::spin_loop();
}

/// The W^X test image (`microvisor_plan::image::DATA_EXECUTION_TEST`): writes a `RET` into
/// `words` (ordinary data, e.g. on the heap), makes it visible to instruction fetch and calls
/// it. With the EL2 map's data never executable this is an instruction abort at EL2, a fatal
/// exception; it returns only if data could be run.
pub fn call_data_for_test(words: &mut [u32; 16]) {
    const RET: u32 = 0xd65f_03c0;
    words[0] = RET;
    let address = words.as_ptr() as usize;
    crate::cache::sync_instructions(address as u64, 4);
    // SAFETY: the word at `address` is a complete function (`RET`) that touches nothing, made
    // visible to instruction fetch above. If the page is not executable the call faults before
    // running anything.
    unsafe {
        let function: extern "C" fn() = core::mem::transmute::<usize, extern "C" fn()>(address);
        function();
    }
}
