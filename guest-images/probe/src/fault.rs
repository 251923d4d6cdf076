//! Faults of guarded accesses (a synchronous exception turned into an error return by
//! `bare::guarded`) and the names of exception classes (ESR_ELx.EC, Arm ARM D24.2.40).
//! Whether a fault means "the hypervisor refused" or "the probe could not even try" is decided
//! here, so the attacks' verdicts can be tested on the host.

use core::fmt;

/// Short name of ESR_ELx.EC (Arm ARM D24.2.40).
pub fn exception_class_name(esr: u64) -> &'static str {
    match (esr >> 26) & 0x3f {
        0x00 => "unknown",
        0x01 => "wfx",
        0x07 => "fp-simd-trap",
        0x0e => "illegal-state",
        0x15 => "svc",
        0x16 => "hvc",
        0x17 => "smc",
        0x18 => "sysreg",
        0x19 => "sve-trap",
        0x20 => "instruction-abort-lower",
        0x21 => "instruction-abort",
        0x22 => "pc-alignment",
        0x24 => "data-abort-lower",
        0x25 => "data-abort",
        0x26 => "sp-alignment",
        0x2c => "fp-exception",
        0x2f => "serror",
        0x3c => "brk",
        _ => "other",
    }
}

/// Whether ESR_ELx.EC is an instruction or data abort (FAR is then valid).
pub fn is_abort(esr: u64) -> bool {
    matches!((esr >> 26) & 0x3f, 0x20 | 0x21 | 0x24 | 0x25)
}

/// Why a guarded access did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// It was made and took a synchronous exception: whoever owns the address refused it.
    Exception {
        /// ESR_EL1.
        esr: u64,
        /// FAR_EL1 (UNKNOWN unless the exception is an abort).
        far: u64,
    },
    /// The address is beyond what the probe's tables can map: no access was made.
    Unaddressable,
}

impl Fault {
    /// Whether the access was made and refused (an exception), as opposed to never made.
    pub fn was_attempted(&self) -> bool {
        matches!(self, Fault::Exception { .. })
    }

    /// Whether it was a synchronous external abort, not on a table walk (an instruction or
    /// data abort with FSC 0b010000): what hardware gives for an address nothing decodes.
    pub fn is_external_abort(&self) -> bool {
        match *self {
            Fault::Exception { esr, .. } => is_abort(esr) && esr & 0x3f == FSC_EXTERNAL_ABORT,
            Fault::Unaddressable => false,
        }
    }

    /// Whether it was an Undefined Instruction exception (EC 0x00).
    pub fn is_undefined(&self) -> bool {
        matches!(*self, Fault::Exception { esr, .. } if (esr >> 26) & 0x3f == 0)
    }
}

/// ESR_ELx.ISS.{D,I}FSC of a synchronous external abort not on a translation table walk.
pub const FSC_EXTERNAL_ABORT: u64 = 0x10;

/// `fault <class> esr=0x..[ far=0x..]` (FAR for aborts only) or `unaddressable`.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::Exception { esr, far } => {
                write!(f, "fault {} esr={esr:#x}", exception_class_name(esr))?;
                if is_abort(esr) {
                    write!(f, " far={far:#x}")?;
                }
                Ok(())
            }
            Fault::Unaddressable => f.write_str("unaddressable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_print_their_class_and_far_only_for_aborts() {
        let abort = Fault::Exception {
            esr: 0x9600_0010,
            far: 0x812_0008,
        };
        assert_eq!(
            abort.to_string(),
            "fault data-abort esr=0x96000010 far=0x8120008"
        );
        let undef = Fault::Exception {
            esr: 0x200_0000,
            far: 0xdead,
        };
        assert_eq!(undef.to_string(), "fault unknown esr=0x2000000");
        assert_eq!(Fault::Unaddressable.to_string(), "unaddressable");
        assert_eq!(exception_class_name(0x18 << 26), "sysreg");
        assert_eq!(exception_class_name(0x3f << 26), "other");
    }

    #[test]
    fn external_aborts_and_undefined_instructions_are_told_apart() {
        let fault = |esr| Fault::Exception { esr, far: 0 };
        assert!(
            fault(0x9600_0010).is_external_abort(),
            "data abort, same EL"
        );
        assert!(
            fault(0x9200_0050).is_external_abort(),
            "data abort, EL0, write"
        );
        assert!(fault(0x8600_0010).is_external_abort(), "instruction abort");
        assert!(!fault(0x9600_0007).is_external_abort(), "translation fault");
        assert!(
            !fault(0x9600_0014).is_external_abort(),
            "abort on a table walk"
        );
        assert!(!fault(0x0200_0000).is_external_abort());
        assert!(fault(0x0200_0000).is_undefined());
        assert!(!fault(0x9600_0010).is_undefined());
        assert!(!Fault::Unaddressable.is_external_abort());
    }

    #[test]
    fn only_an_exception_means_the_access_was_made() {
        assert!(Fault::Exception { esr: 0, far: 0 }.was_attempted());
        assert!(!Fault::Unaddressable.was_attempted());
    }
}
