//! Attack verdicts: the words after `ATTACK <name>` in an outcome line, and the outcomes of the
//! memory, MMIO and PSCI attacks with their details. One rule holds for every attack: an attack
//! the probe could not attempt (its own preparation failed, the address cannot be mapped, a
//! register it needs is missing) is `NOT-CONTAINED unverified <why>`, never `contained`. Only
//! the hypervisor refusing the attack (an error answer, an access that faulted, a write that
//! did not stick) is `contained`. The GIC attacks' outcomes are in `gic_attacks`, the NVMe
//! attacks' in `nvme::attacks`.

use core::fmt;

use crate::fault::Fault;
use crate::psci::{INVALID_PARAMETERS, NOT_SUPPORTED};

/// How an attack (or a functional check) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The hypervisor refused the attack; for a functional check: the check passed.
    Contained,
    /// The attack got through; for a functional check: the check failed.
    NotContained,
    /// The probe could not attempt the attack: nothing was proven, which is not a pass.
    Unverified,
}

impl Verdict {
    /// `Contained` if `contained`, else `NotContained`.
    pub fn of(contained: bool) -> Verdict {
        if contained {
            Verdict::Contained
        } else {
            Verdict::NotContained
        }
    }

    /// Whether the line counts as a pass.
    pub fn passed(self) -> bool {
        self == Verdict::Contained
    }
}

/// `contained`, `NOT-CONTAINED` or `NOT-CONTAINED unverified`.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Contained => "contained",
            Verdict::NotContained => "NOT-CONTAINED",
            Verdict::Unverified => "NOT-CONTAINED unverified",
        })
    }
}

/// An outcome that knows its verdict and prints its detail: the line is
/// `ATTACK <name> <verdict> <detail>`.
pub trait Outcome: fmt::Display {
    /// The verdict of this outcome.
    fn verdict(&self) -> Verdict;
}

/// The whole outcome part of the line: `<verdict> <detail>`.
pub struct Line<'a, O: Outcome>(pub &'a O);

impl<O: Outcome> fmt::Display for Line<'_, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.verdict(), self.0)
    }
}

/// How a plain load or store of the memory and MMIO attacks (`read-past-ram`,
/// `write-past-ram`, `read-addr`, `write-addr`, `mmio`) ended when execution continued. Under
/// the microvisor's default `on-fault = "exception"` an access nothing answers takes a
/// synchronous external abort, as on hardware ([`AccessOutcome::Refused`]); under
/// `on-fault = "stop"` the slice is stopped before any line is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessOutcome {
    /// A load outside the slice returned a value.
    Read {
        /// `read32` or `read64`.
        op: &'static str,
        /// Where.
        addr: u64,
        /// What it returned.
        value: u64,
    },
    /// A store outside the slice completed.
    Written {
        /// Where.
        addr: u64,
    },
    /// The access was made and took a synchronous exception.
    Refused {
        /// `read32`, `read64` or `write64`.
        op: &'static str,
        /// Where.
        addr: u64,
        /// The exception.
        fault: Fault,
    },
    /// The probe's tables cannot map the address: no access was made.
    Unaddressable {
        /// Where.
        addr: u64,
    },
    /// `read-addr`/`write-addr` without `target=`.
    NoTarget,
    /// The target lies in the probe's own image, which it must not overwrite.
    OwnImage {
        /// Where.
        addr: u64,
    },
    /// The target is an IPA of the slice's own RAM: the pattern written there read back.
    LandedInOwnRam {
        /// Where.
        addr: u64,
    },
    /// The target is an IPA of the slice's own RAM but the pattern did not read back.
    OwnRamReadback {
        /// Where.
        addr: u64,
        /// The pattern written.
        wrote: u64,
        /// What was read back.
        read: u64,
    },
}

impl Outcome for AccessOutcome {
    fn verdict(&self) -> Verdict {
        match self {
            AccessOutcome::Read { .. }
            | AccessOutcome::Written { .. }
            | AccessOutcome::OwnRamReadback { .. } => Verdict::NotContained,
            AccessOutcome::Unaddressable { .. }
            | AccessOutcome::NoTarget
            | AccessOutcome::OwnImage { .. } => Verdict::Unverified,
            AccessOutcome::LandedInOwnRam { .. } => Verdict::Contained,
            // Only the abort hardware gives for an address nothing decodes proves the
            // hypervisor answered; any other exception is the probe's own problem.
            AccessOutcome::Refused { fault, .. } => Verdict::of(fault.is_external_abort()),
        }
    }
}

/// `read64 0x.. returned 0x..`, `write64 0x.. completed`, `unaddressable 0x..`, `no-target`,
/// `own-image 0x..`, `landed-in-own-ram 0x..`, `own-ram-readback 0x.. wrote 0x.. read 0x..`.
impl fmt::Display for AccessOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AccessOutcome::Read { op, addr, value } => {
                write!(f, "{op} {addr:#x} returned {value:#x}")
            }
            AccessOutcome::Written { addr } => write!(f, "write64 {addr:#x} completed"),
            AccessOutcome::Refused { op, addr, fault } => write!(f, "{op} {addr:#x} {fault}"),
            AccessOutcome::Unaddressable { addr } => write!(f, "unaddressable {addr:#x}"),
            AccessOutcome::NoTarget => f.write_str("no-target"),
            AccessOutcome::OwnImage { addr } => write!(f, "own-image {addr:#x}"),
            AccessOutcome::LandedInOwnRam { addr } => write!(f, "landed-in-own-ram {addr:#x}"),
            AccessOutcome::OwnRamReadback { addr, wrote, read } => write!(
                f,
                "own-ram-readback {addr:#x} wrote {wrote:#x} read {read:#x}"
            ),
        }
    }
}

/// `hvc-unknown` and `smc-system-off`: one SMCCC call that must be answered NOT_SUPPORTED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// `hvc` or `smc`.
    pub conduit: &'static str,
    /// Function ID.
    pub function: u64,
    /// x0 on return.
    pub ret: i64,
}

impl Outcome for CallOutcome {
    fn verdict(&self) -> Verdict {
        Verdict::of(self.ret == NOT_SUPPORTED)
    }
}

/// `hvc 0x.. returned <x0>`.
impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:#x} returned {}",
            self.conduit, self.function, self.ret
        )
    }
}

/// `cpu-on-outside`: CPU_ON and AFFINITY_INFO for two affinities the slice does not have; each
/// of the four calls must return INVALID_PARAMETERS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOnOutcome {
    /// The two affinities.
    pub targets: [u64; 2],
    /// CPU_ON and AFFINITY_INFO of the first target, then of the second.
    pub results: [i64; 4],
}

impl Outcome for CpuOnOutcome {
    fn verdict(&self) -> Verdict {
        Verdict::of(self.results.iter().all(|&r| r == INVALID_PARAMETERS))
    }
}

/// `cpu_on(0x..)=<r> affinity_info(0x..)=<r> cpu_on(0x..)=<r> affinity_info(0x..)=<r>`.
impl fmt::Display for CpuOnOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b] = self.targets;
        let [r0, r1, r2, r3] = self.results;
        write!(
            f,
            "cpu_on({a:#x})={r0} affinity_info({a:#x})={r1} cpu_on({b:#x})={r2} affinity_info({b:#x})={r3}"
        )
    }
}

/// How one EL1 timer did in the `timers` check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerResult {
    /// Its interrupt arrived with this INTID.
    Fired {
        /// The INTID taken.
        intid: u8,
    },
    /// No interrupt within the grace time after the deadline.
    NoInterrupt,
}

/// `timers` (a functional check): the virtual and the physical EL1 timer each deliver their
/// own interrupt (INTID 27 and 30, the `arm,armv8-timer` PPIs 11 and 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerCheck {
    /// CNTV_*.
    pub virtual_timer: TimerResult,
    /// CNTP_*.
    pub physical_timer: TimerResult,
}

impl Outcome for TimerCheck {
    fn verdict(&self) -> Verdict {
        Verdict::of(
            self.virtual_timer == TimerResult::Fired { intid: 27 }
                && self.physical_timer == TimerResult::Fired { intid: 30 },
        )
    }
}

/// `virtual=irq27 physical=irq30`, `physical=no-interrupt`.
impl fmt::Display for TimerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = |f: &mut fmt::Formatter<'_>, name: &str, result: TimerResult| match result {
            TimerResult::Fired { intid } => write!(f, "{name}=irq{intid}"),
            TimerResult::NoInterrupt => write!(f, "{name}=no-interrupt"),
        };
        one(f, "virtual", self.virtual_timer)?;
        f.write_str(" ")?;
        one(f, "physical", self.physical_timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(outcome: &impl Outcome) -> String {
        Line(outcome).to_string()
    }

    #[test]
    fn verdict_words() {
        assert_eq!(Verdict::Contained.to_string(), "contained");
        assert_eq!(Verdict::NotContained.to_string(), "NOT-CONTAINED");
        assert_eq!(Verdict::Unverified.to_string(), "NOT-CONTAINED unverified");
        assert!(Verdict::Contained.passed());
        assert!(!Verdict::NotContained.passed());
        assert!(!Verdict::Unverified.passed());
        assert_eq!(Verdict::of(true), Verdict::Contained);
        assert_eq!(Verdict::of(false), Verdict::NotContained);
    }

    #[test]
    fn an_access_that_completed_outside_the_slice_is_a_breach() {
        let read = AccessOutcome::Read {
            op: "read64",
            addr: 0x4800_0000,
            value: 0x1234,
        };
        assert_eq!(
            line(&read),
            "NOT-CONTAINED read64 0x48000000 returned 0x1234"
        );
        let mmio = AccessOutcome::Read {
            op: "read32",
            addr: 0x901_0000,
            value: 0,
        };
        assert_eq!(line(&mmio), "NOT-CONTAINED read32 0x9010000 returned 0x0");
        assert_eq!(
            line(&AccessOutcome::Written { addr: 0x4800_0000 }),
            "NOT-CONTAINED write64 0x48000000 completed"
        );
        let wrong = AccessOutcome::OwnRamReadback {
            addr: 0x4020_0000,
            wrote: 1,
            read: 2,
        };
        assert_eq!(
            line(&wrong),
            "NOT-CONTAINED own-ram-readback 0x40200000 wrote 0x1 read 0x2"
        );
    }

    #[test]
    fn an_access_the_probe_could_not_make_is_unverified_not_contained() {
        assert_eq!(
            line(&AccessOutcome::Unaddressable { addr: 1 << 48 }),
            "NOT-CONTAINED unverified unaddressable 0x1000000000000"
        );
        assert_eq!(
            line(&AccessOutcome::NoTarget),
            "NOT-CONTAINED unverified no-target"
        );
        assert_eq!(
            line(&AccessOutcome::OwnImage { addr: 0x4000_1000 }),
            "NOT-CONTAINED unverified own-image 0x40001000"
        );
    }

    #[test]
    fn an_access_refused_with_an_external_abort_is_contained_any_other_fault_is_not() {
        let refused = AccessOutcome::Refused {
            op: "read64",
            addr: 0x4400_0000,
            fault: Fault::Exception {
                esr: 0x9600_0010,
                far: 0x4400_0000,
            },
        };
        assert_eq!(
            line(&refused),
            "contained read64 0x44000000 fault data-abort esr=0x96000010 far=0x44000000"
        );
        let translation = AccessOutcome::Refused {
            op: "read64",
            addr: 0x4400_0000,
            fault: Fault::Exception {
                esr: 0x9600_0007,
                far: 0x4400_0000,
            },
        };
        assert_eq!(translation.verdict(), Verdict::NotContained);
    }

    #[test]
    fn both_timers_must_deliver_their_own_interrupt() {
        let fired = |intid| TimerResult::Fired { intid };
        let both = TimerCheck {
            virtual_timer: fired(27),
            physical_timer: fired(30),
        };
        assert_eq!(line(&both), "contained virtual=irq27 physical=irq30");
        let missing = TimerCheck {
            physical_timer: TimerResult::NoInterrupt,
            ..both
        };
        assert_eq!(
            line(&missing),
            "NOT-CONTAINED virtual=irq27 physical=no-interrupt"
        );
        let crossed = TimerCheck {
            physical_timer: fired(27),
            ..both
        };
        assert_eq!(crossed.verdict(), Verdict::NotContained);
    }

    #[test]
    fn an_address_that_is_own_ram_is_contained() {
        assert_eq!(
            line(&AccessOutcome::LandedInOwnRam { addr: 0x4020_0000 }),
            "contained landed-in-own-ram 0x40200000"
        );
    }

    #[test]
    fn unknown_calls_must_be_answered_not_supported() {
        let answered = CallOutcome {
            conduit: "hvc",
            function: 0xc600_0000,
            ret: NOT_SUPPORTED,
        };
        assert_eq!(line(&answered), "contained hvc 0xc6000000 returned -1");
        let executed = CallOutcome { ret: 0, ..answered };
        assert_eq!(line(&executed), "NOT-CONTAINED hvc 0xc6000000 returned 0");
    }

    #[test]
    fn cpu_on_outside_needs_all_four_refused() {
        let refused = CpuOnOutcome {
            targets: [0x2, 0x100],
            results: [INVALID_PARAMETERS; 4],
        };
        assert_eq!(
            line(&refused),
            "contained cpu_on(0x2)=-2 affinity_info(0x2)=-2 cpu_on(0x100)=-2 affinity_info(0x100)=-2"
        );
        for i in 0..4 {
            let mut one = refused;
            one.results[i] = if i % 2 == 0 { 0 } else { 1 };
            assert_eq!(one.verdict(), Verdict::NotContained, "call {i}");
        }
    }
}
