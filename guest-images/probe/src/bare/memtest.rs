//! The memory test, run by every online CPU on its share of the plan
//! (`microvisor_probe::memplan`): phase 1 writes the address-dependent
//! pattern with unrolled 64-bit stores, all CPUs meet at a barrier, phase 2
//! reads everything back. The barrier makes aliasing between shares of
//! different CPUs visible too.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use microvisor_probe::MAX_CPUS;
use microvisor_probe::memplan::{PATTERN_MULTIPLIER, Range, TestPlan, pattern};

use super::{entry, timer};

/// Who tests what.
pub struct Assignment {
    /// Ranges and seed.
    pub plan: TestPlan,
    /// Number of participating CPUs.
    pub participants: usize,
    /// Share number of each vCPU index, if it participates.
    pub share_of: [Option<u8>; MAX_CPUS],
}

static ASSIGNMENT: spin::Once<Assignment> = spin::Once::new();
static WRITTEN: AtomicUsize = AtomicUsize::new(0);
static VERIFIED: AtomicUsize = AtomicUsize::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static FIRST_BAD: AtomicU64 = AtomicU64::new(u64::MAX);

/// Result of the whole test.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Bytes in the plan.
    pub bytes: u64,
    /// CPUs that took part.
    pub participants: usize,
    /// Counter ticks from publishing the plan to the last CPU finishing.
    pub ticks: u64,
    /// Words that read back wrong.
    pub errors: u64,
    /// Lowest wrong address, if any.
    pub first_bad: Option<u64>,
    /// Some CPU did not finish before the deadline.
    pub timed_out: bool,
    /// A CPU took an exception (it printed `PROBE EXCEPTION`), so the test
    /// was abandoned.
    pub exception: bool,
}

/// Why waiting stopped early.
enum Abandoned {
    Deadline,
    Exception,
}

/// Waits until `done()`, the deadline (if any) or an exception on any CPU.
fn wait(done: impl Fn() -> bool, deadline: Option<u64>) -> Result<(), Abandoned> {
    while !done() {
        if entry::exception_taken() {
            return Err(Abandoned::Exception);
        }
        if deadline.is_some_and(|d| timer::now() >= d) {
            return Err(Abandoned::Deadline);
        }
        timer::pause();
    }
    Ok(())
}

/// Runs the test: publishes `assignment`, does the boot CPU's share
/// (`boot_share`) and waits for everyone until `timeout_ms` has passed.
pub fn run(assignment: Assignment, boot_share: u8, timeout_ms: u64) -> Outcome {
    let start = timer::now();
    let deadline = start + timer::ticks_from_ms(timeout_ms);
    let assignment = ASSIGNMENT.call_once(|| assignment);
    aarch64_cpu::asm::sev();
    let n = assignment.participants;
    let result = run_share(assignment, boot_share, Some(deadline))
        .and_then(|()| wait(|| VERIFIED.load(Ordering::Acquire) >= n, Some(deadline)));
    let first_bad = FIRST_BAD.load(Ordering::Acquire);
    Outcome {
        bytes: assignment.plan.total_bytes(),
        participants: n,
        ticks: timer::now() - start,
        errors: ERRORS.load(Ordering::Acquire),
        first_bad: (first_bad != u64::MAX).then_some(first_bad),
        timed_out: matches!(result, Err(Abandoned::Deadline)),
        exception: matches!(result, Err(Abandoned::Exception)),
    }
}

/// A secondary CPU's part: wait for the plan, test the share if it has one.
pub fn participate(index: usize) {
    let assignment = loop {
        if let Some(a) = ASSIGNMENT.get() {
            break a;
        }
        timer::pause();
    };
    if let Some(share) = assignment.share_of.get(index).copied().flatten() {
        // Abandoned only if another CPU faulted; nothing more to do then.
        let _ = run_share(assignment, share, None);
    }
}

/// Both phases of one share; stops at the barrier on the deadline or when
/// some CPU took an exception.
fn run_share(assignment: &Assignment, share: u8, deadline: Option<u64>) -> Result<(), Abandoned> {
    let (plan, n) = (&assignment.plan, assignment.participants);
    for range in plan.share(usize::from(share), n) {
        // SAFETY: the plan only holds DT memory minus the probe's footprint
        // (image, bss, stacks, page table), mapped Normal by mmu::build; no
        // Rust object lives there, shares are disjoint, and the device tree
        // was copied out before the test started.
        unsafe { fill(range, plan.seed) };
    }
    WRITTEN.fetch_add(1, Ordering::AcqRel);
    wait(|| WRITTEN.load(Ordering::Acquire) >= n, deadline)?;
    let (mut errors, mut first_bad) = (0, u64::MAX);
    for range in plan.share(usize::from(share), n) {
        // SAFETY: as for `fill` above.
        let (e, f) = unsafe { verify(range, plan.seed) };
        errors += e;
        first_bad = first_bad.min(f);
    }
    ERRORS.fetch_add(errors, Ordering::AcqRel);
    FIRST_BAD.fetch_min(first_bad, Ordering::AcqRel);
    VERIFIED.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// Pattern difference between consecutive words.
const STEP: u64 = 8u64.wrapping_mul(PATTERN_MULTIPLIER);
/// Pattern difference `k` words apart, for k in 0..=8.
const STEPS: [u64; 9] = {
    let mut steps = [0; 9];
    let mut k = 0;
    while k < 9 {
        steps[k] = STEP.wrapping_mul(k as u64);
        k += 1;
    }
    steps
};

/// Writes the pattern over `range`, eight words per iteration.
///
/// # Safety
/// `range` must be 64-byte aligned, mapped, writable memory that no Rust
/// object uses and no other CPU writes concurrently.
unsafe fn fill(range: Range, seed: u64) {
    let mut p = range.start as *mut u64;
    let end = range.end as *mut u64;
    let mut v = pattern(range.start, seed);
    while p < end {
        // SAFETY: p..p+8 lies in `range` (64-byte aligned bounds), which the
        // caller guarantees is ours to write; volatile keeps every store.
        unsafe {
            p.write_volatile(v);
            p.add(1).write_volatile(v.wrapping_add(STEPS[1]));
            p.add(2).write_volatile(v.wrapping_add(STEPS[2]));
            p.add(3).write_volatile(v.wrapping_add(STEPS[3]));
            p.add(4).write_volatile(v.wrapping_add(STEPS[4]));
            p.add(5).write_volatile(v.wrapping_add(STEPS[5]));
            p.add(6).write_volatile(v.wrapping_add(STEPS[6]));
            p.add(7).write_volatile(v.wrapping_add(STEPS[7]));
            p = p.add(8);
        }
        v = v.wrapping_add(STEPS[8]);
    }
}

/// Reads `range` back; returns the number of wrong words and the lowest
/// wrong address (`u64::MAX` if none).
///
/// # Safety
/// As for [`fill`], but only reads.
unsafe fn verify(range: Range, seed: u64) -> (u64, u64) {
    let mut p = range.start as *const u64;
    let end = range.end as *const u64;
    let mut v = pattern(range.start, seed);
    let (mut errors, mut first_bad) = (0, u64::MAX);
    while p < end {
        // SAFETY: p..p+8 lies in `range`, which the caller guarantees is
        // mapped memory; volatile keeps every load.
        let diff = unsafe {
            (p.read_volatile() ^ v)
                | (p.add(1).read_volatile() ^ v.wrapping_add(STEPS[1]))
                | (p.add(2).read_volatile() ^ v.wrapping_add(STEPS[2]))
                | (p.add(3).read_volatile() ^ v.wrapping_add(STEPS[3]))
                | (p.add(4).read_volatile() ^ v.wrapping_add(STEPS[4]))
                | (p.add(5).read_volatile() ^ v.wrapping_add(STEPS[5]))
                | (p.add(6).read_volatile() ^ v.wrapping_add(STEPS[6]))
                | (p.add(7).read_volatile() ^ v.wrapping_add(STEPS[7]))
        };
        if diff != 0 {
            for i in 0..8u64 {
                // SAFETY: as above, one word of the same block.
                let word = unsafe { p.add(i as usize).read_volatile() };
                if word != v.wrapping_add(STEPS[i as usize]) {
                    errors += 1;
                    first_bad = first_bad.min(p as u64 + 8 * i);
                }
            }
        }
        // SAFETY: stays within or one past the end of `range`.
        p = unsafe { p.add(8) };
        v = v.wrapping_add(STEPS[8]);
    }
    (errors, first_bad)
}
