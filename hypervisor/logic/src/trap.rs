//! Decoding a guest exit: ESR_EL2 (Arm ARM D24.2.43) plus FAR/HPFAR into one record that the
//! rest of the hypervisor dispatches on.

use aarch64_cpu::registers::ESR_EL2;
use tock_registers::{LocalRegisterCopy, register_bitfields};

register_bitfields![u64,
    /// ISS of a data abort (ESR_ELx.EC = 0x24/0x25), Arm ARM D24.2.43.
    DABT_ISS [
        /// Instruction syndrome valid: SAS/SSE/SRT/SF/AR describe the access.
        ISV OFFSET(24) NUMBITS(1) [],
        /// log2 of the access size in bytes.
        SAS OFFSET(22) NUMBITS(2) [],
        /// Sign-extend the loaded value.
        SSE OFFSET(21) NUMBITS(1) [],
        /// Transfer register.
        SRT OFFSET(16) NUMBITS(5) [],
        /// 64-bit register (else 32-bit, zero-extended).
        SF OFFSET(15) NUMBITS(1) [],
        /// Acquire/release semantics.
        AR OFFSET(14) NUMBITS(1) [],
        /// Fault on the stage-2 walk of a stage-1 table access.
        S1PTW OFFSET(7) NUMBITS(1) [],
        /// Write (else read).
        WNR OFFSET(6) NUMBITS(1) [],
        /// Data fault status code.
        DFSC OFFSET(0) NUMBITS(6) []
    ],
    /// ISS of a trapped MSR/MRS/system instruction (EC = 0x18), Arm ARM D24.2.43.
    SYSREG_ISS [
        OP0 OFFSET(20) NUMBITS(2) [],
        OP2 OFFSET(17) NUMBITS(3) [],
        OP1 OFFSET(14) NUMBITS(3) [],
        CRN OFFSET(10) NUMBITS(4) [],
        RT OFFSET(5) NUMBITS(5) [],
        CRM OFFSET(1) NUMBITS(4) [],
        /// 1 = read (MRS), 0 = write (MSR).
        READ OFFSET(0) NUMBITS(1) []
    ]
];

/// One decoded MMIO access from a guest, ready for an emulated device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// Intermediate physical address accessed.
    pub ipa: u64,
    /// Access size in bytes (1, 2, 4 or 8).
    pub width: u8,
    /// The guest general-purpose register (31 = XZR).
    pub register: u8,
    pub write: bool,
    /// Sign-extend a read into the register.
    pub sign_extend: bool,
    /// The register is 64-bit (else the result is zero-extended to 32 bits after extension).
    pub sixty_four: bool,
}

impl MmioAccess {
    /// The value a read of `raw` (zero-extended from `width`) leaves in the register.
    #[inline] // on an exit path: inlined even under the image's lower inline threshold
    pub fn read_result(&self, raw: u64) -> u64 {
        let bits = u32::from(self.width) * 8;
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let mut value = raw & mask;
        if self.sign_extend && bits < 64 && value & (1 << (bits - 1)) != 0 {
            value |= !mask;
        }
        if !self.sixty_four {
            value &= u64::from(u32::MAX);
        }
        value
    }

    /// The value a write stores: the low `width` bytes of the register (`register_value`).
    pub fn write_value(&self, register_value: u64) -> u64 {
        let bits = u32::from(self.width) * 8;
        if bits == 64 {
            register_value
        } else {
            register_value & ((1u64 << bits) - 1)
        }
    }
}

/// A trapped system register access (EC 0x18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
    pub register: u8,
    pub read: bool,
}

impl SysRegAccess {
    /// Whether this is a write (MSR) to the register `(op0, op1, CRn, CRm, op2)`.
    pub fn is_write_to(&self, (op0, op1, crn, crm, op2): SysRegEncoding) -> bool {
        !self.read
            && (self.op0, self.op1, self.crn, self.crm, self.op2) == (op0, op1, crn, crm, op2)
    }
}

impl core::fmt::Display for SysRegAccess {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let verb = if self.read { "read of" } else { "write to" };
        write!(
            f,
            "{verb} S{}_{}_C{}_C{}_{}",
            self.op0, self.op1, self.crn, self.crm, self.op2
        )
    }
}

/// Why a guest exited to EL2, as far as the hypervisor cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// HVC #imm from EL1 (AArch64). ELR already points after the instruction.
    Hypercall { immediate: u16 },
    /// SMC #imm trapped by HCR_EL2.TSC. ELR points at the instruction.
    SecureMonitorCall { immediate: u16 },
    /// A stage-2 data abort that names its access completely: candidate for MMIO emulation.
    Mmio(MmioAccess),
    /// A stage-2 data abort the hypervisor cannot emulate (no syndrome, stage-1 walk, ...).
    DataAbort {
        ipa: u64,
        write: bool,
        status: u8,
        page_walk: bool,
    },
    /// A stage-2 instruction abort (executing outside RAM).
    InstructionAbort { ipa: u64, status: u8 },
    /// A trapped MSR/MRS (e.g. an IMPLEMENTATION DEFINED register under HCR_EL2.TIDCP).
    SystemRegister(SysRegAccess),
    /// A trapped AArch32 coprocessor access (MCR/MRC/MCRR/MRRC to CP15 or CP14, LDC/STC):
    /// only an AArch32 EL0 can make one, e.g. to an IMPLEMENTATION DEFINED CP15 register.
    Coprocessor { class: u8 },
    /// Anything else, with its exception class.
    Other { class: u8 },
}

/// HPFAR_EL2.FIPA holds IPA[51:12] in bits [43:4].
fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar >> 4) & ((1 << 40) - 1)) << 12 | (far & 0xfff)
}

/// Exception classes the hypervisor tells apart (ESR_ELx.EC, Arm ARM D24.2.40).
pub mod class {
    use aarch64_cpu::registers::ESR_EL2::EC::Value;
    pub const HVC64: u8 = Value::HVC64 as u8;
    pub const SMC64: u8 = Value::SMC64 as u8;
    pub const DATA_ABORT_LOWER: u8 = Value::DataAbortLowerEL as u8;
    pub const INSTRUCTION_ABORT_LOWER: u8 = Value::InstrAbortLowerEL as u8;
    pub const MSR_MRS: u8 = Value::TrappedMsrMrs as u8;
}

/// The exception class of a syndrome (ESR_ELx.EC), one of [`class`]'s or another.
#[inline]
pub fn exception_class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

/// Decodes an exit from ESR_EL2, FAR_EL2 and HPFAR_EL2 (one match on the exception class:
/// this runs on every synchronous exit).
#[inline]
pub fn decode(esr: u64, far: u64, hpfar: u64) -> Exit {
    let syndrome = LocalRegisterCopy::<u64, ESR_EL2::Register>::new(esr);
    let iss = syndrome.read(ESR_EL2::ISS);
    let ec = syndrome.read(ESR_EL2::EC) as u8;
    match ec {
        class::HVC64 => Exit::Hypercall {
            immediate: iss as u16,
        },
        class::SMC64 => Exit::SecureMonitorCall {
            immediate: iss as u16,
        },
        class::DATA_ABORT_LOWER => data_abort(iss, fault_ipa(hpfar, far)),
        class::INSTRUCTION_ABORT_LOWER => Exit::InstructionAbort {
            ipa: fault_ipa(hpfar, far),
            status: (iss & 0x3f) as u8,
        },
        class::MSR_MRS => Exit::SystemRegister(system_register(iss)),
        _ if AARCH32_COPROCESSOR_CLASSES.contains(&ec) => Exit::Coprocessor { class: ec },
        _ => Exit::Other { class: ec },
    }
}

/// ESR_ELx.EC of trapped AArch32 coprocessor accesses: MCR/MRC CP15 (0x03), MCRR/MRRC CP15
/// (0x04), MCR/MRC CP14 (0x05), LDC/STC CP14 (0x06), MRRC CP14 (0x0C) (Arm ARM D24.2.40).
const AARCH32_COPROCESSOR_CLASSES: [u8; 5] = [0x03, 0x04, 0x05, 0x06, 0x0c];

/// A system register by its encoding `(op0, op1, CRn, CRm, op2)`.
pub type SysRegEncoding = (u8, u8, u8, u8, u8);

/// The ESR_EL2 bits of a trapped MSR (a write) to `register`, without its Rt: the class and the
/// ISS fields of `SYSREG_ISS` (Arm ARM D24.2.43).
const fn msr_syndrome((op0, op1, crn, crm, op2): SysRegEncoding) -> u64 {
    (class::MSR_MRS as u64) << 26
        | (op0 as u64) << 20
        | (op2 as u64) << 17
        | (op1 as u64) << 14
        | (crn as u64) << 10
        | (crm as u64) << 1
}

/// The bits [`msr_syndrome`] fixes: the class and the ISS but Rt (bits 9:5).
const MSR_SYNDROME_MASK: u64 = 0x3f << 26 | 0x3f_ffff & !(0x1f << 5);

/// The register Rt of a trapped MSR to `register` that `esr` describes, if it is one: one
/// compare for the exit path of the guest's IPIs (what [`decode`] would say as
/// `Exit::SystemRegister` with that encoding, `read: false`).
#[inline]
pub fn written_register(esr: u64, register: SysRegEncoding) -> Option<u8> {
    (esr & MSR_SYNDROME_MASK == msr_syndrome(register)).then_some(((esr >> 5) & 0x1f) as u8)
}

#[inline]
fn system_register(iss: u64) -> SysRegAccess {
    let s = LocalRegisterCopy::<u64, SYSREG_ISS::Register>::new(iss);
    SysRegAccess {
        op0: s.read(SYSREG_ISS::OP0) as u8,
        op1: s.read(SYSREG_ISS::OP1) as u8,
        crn: s.read(SYSREG_ISS::CRN) as u8,
        crm: s.read(SYSREG_ISS::CRM) as u8,
        op2: s.read(SYSREG_ISS::OP2) as u8,
        register: s.read(SYSREG_ISS::RT) as u8,
        read: s.is_set(SYSREG_ISS::READ),
    }
}

/// The emulated MMIO access a data abort from a lower EL describes, if it is one (what
/// [`decode`] would return as `Exit::Mmio`), for the exit path that sees most of them.
#[inline]
pub fn mmio_access(esr: u64, far: u64, hpfar: u64) -> Option<MmioAccess> {
    if exception_class(esr) != class::DATA_ABORT_LOWER {
        return None;
    }
    match data_abort(esr & 0x1ff_ffff, fault_ipa(hpfar, far)) {
        Exit::Mmio(access) => Some(access),
        _ => None,
    }
}

#[inline]
fn data_abort(iss: u64, ipa: u64) -> Exit {
    let s = LocalRegisterCopy::<u64, DABT_ISS::Register>::new(iss);
    let write = s.is_set(DABT_ISS::WNR);
    let page_walk = s.is_set(DABT_ISS::S1PTW);
    if !s.is_set(DABT_ISS::ISV) || page_walk {
        return Exit::DataAbort {
            ipa,
            write,
            status: s.read(DABT_ISS::DFSC) as u8,
            page_walk,
        };
    }
    Exit::Mmio(MmioAccess {
        ipa,
        width: 1 << s.read(DABT_ISS::SAS),
        register: s.read(DABT_ISS::SRT) as u8,
        write,
        sign_extend: s.is_set(DABT_ISS::SSE),
        sixty_four: s.is_set(DABT_ISS::SF),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_SHIFT: u64 = 26;
    const IL: u64 = 1 << 25;

    #[test]
    fn hvc_and_smc() {
        assert_eq!(
            decode(0x16 << EC_SHIFT | IL, 0, 0),
            Exit::Hypercall { immediate: 0 }
        );
        assert_eq!(
            decode(0x17 << EC_SHIFT | IL | 0x12, 0, 0),
            Exit::SecureMonitorCall { immediate: 0x12 }
        );
    }

    #[test]
    fn str_w1_to_uart_dr() {
        // STR W1, [X0] to 0x0900_0000: ISV, SAS=2 (4 bytes), SRT=1, WnR, DFSC translation L3.
        let iss = 1 << 24 | 2 << 22 | 1 << 16 | 1 << 6 | 0x07;
        let exit = decode(
            0x24 << EC_SHIFT | IL | iss,
            0x0900_0000,
            (0x0900_0000u64 >> 12) << 4,
        );
        let Exit::Mmio(access) = exit else {
            panic!("{exit:?}")
        };
        assert_eq!(access.ipa, 0x0900_0000);
        assert_eq!((access.width, access.register, access.write), (4, 1, true));
        assert_eq!(access.write_value(0xffff_ffff_1234_5678), 0x1234_5678);
    }

    /// The exit path's shortcuts agree with `decode`: the class, and the MMIO access of a
    /// data abort (none for one without a syndrome, a stage-1 walk or another class).
    #[test]
    fn shortcuts_agree_with_decode() {
        let hpfar = (0x0900_0000u64 >> 12) << 4;
        let with_syndrome = 1 << 24 | 2 << 22 | 3 << 16 | 0x07;
        // MSR ICC_SGI1R_EL1, X5 (op0 3, op1 0, CRn 12, CRm 11, op2 5, Rt 5, write).
        let sgi1r = 3 << 20 | 5 << 17 | 12 << 10 | 11 << 1 | 5 << 5;
        for esr in [
            0x24 << EC_SHIFT | IL | with_syndrome,
            0x24 << EC_SHIFT | IL | 0x07,
            0x24 << EC_SHIFT | IL | with_syndrome | 1 << 7,
            0x20 << EC_SHIFT | IL | with_syndrome,
            0x16 << EC_SHIFT | IL,
            0x18 << EC_SHIFT | IL | sgi1r,
            0x18 << EC_SHIFT | IL | sgi1r | 1,
        ] {
            let exit = decode(esr, 0x0900_0018, hpfar);
            let access = match exit {
                Exit::Mmio(access) => Some(access),
                _ => None,
            };
            assert_eq!(mmio_access(esr, 0x0900_0018, hpfar), access, "{esr:#x}");
            let register = match exit {
                Exit::SystemRegister(access) => Some(access),
                _ => None,
            };
            let sgi = (3, 0, 12, 11, 5);
            assert_eq!(
                written_register(esr, sgi),
                register.filter(|r| r.is_write_to(sgi)).map(|r| r.register),
                "{esr:#x}"
            );
            assert_eq!(u64::from(exception_class(esr)), esr >> EC_SHIFT);
        }
        assert_eq!(exception_class(0x16 << EC_SHIFT | IL), class::HVC64);
        assert_eq!(exception_class(0x24 << EC_SHIFT), class::DATA_ABORT_LOWER);
        let Exit::SystemRegister(access) = decode(0x18 << EC_SHIFT | IL | sgi1r, 0, 0) else {
            panic!("not a system register exit")
        };
        assert_eq!(
            (access.op0, access.op1, access.crn, access.crm, access.op2),
            (3, 0, 12, 11, 5)
        );
        assert_eq!((access.register, access.read), (5, false));
        // Another register, another Rt, a read: no match for SGI1R.
        let asgi1r = 3 << 20 | 6 << 17 | 12 << 10 | 11 << 1 | 30 << 5;
        assert_eq!(
            written_register(0x18 << EC_SHIFT | IL | asgi1r, (3, 0, 12, 11, 5)),
            None
        );
        assert_eq!(
            written_register(0x18 << EC_SHIFT | IL | asgi1r, (3, 0, 12, 11, 6)),
            Some(30)
        );
        assert_eq!(
            written_register(0x18 << EC_SHIFT | IL | sgi1r | 1, (3, 0, 12, 11, 5)),
            None
        );
    }

    #[test]
    fn hpfar_gives_page_and_far_gives_offset() {
        let hpfar = (0x1_2345_6000u64 >> 12) << 4;
        let iss = 1 << 24 | 3 << 22 | 5 << 16 | 1 << 15;
        let Exit::Mmio(a) = decode(0x24 << EC_SHIFT | iss, 0xffff_0000_0000_0abc, hpfar) else {
            panic!()
        };
        assert_eq!(a.ipa, 0x1_2345_6abc);
        assert_eq!(
            (a.width, a.register, a.write, a.sixty_four),
            (8, 5, false, true)
        );
    }

    #[test]
    fn sign_extended_byte_read() {
        let iss = 1 << 24 | 1 << 21 | 2 << 16;
        let Exit::Mmio(a) = decode(0x24 << EC_SHIFT | iss, 0x18, 0) else {
            panic!()
        };
        assert_eq!(a.width, 1);
        assert_eq!(
            a.read_result(0x80),
            0xffff_ff80,
            "LDRSB Wt: sign-extend to 32 bits"
        );
        let a64 = MmioAccess {
            sixty_four: true,
            ..a
        };
        assert_eq!(a64.read_result(0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(a64.read_result(0x7f), 0x7f);
    }

    #[test]
    fn abort_without_syndrome_is_not_mmio() {
        // LDP to an unmapped IPA: ISV = 0.
        let exit = decode(
            0x24 << EC_SHIFT | 0x06,
            0x8000_0010,
            (0x8000_0000u64 >> 12) << 4,
        );
        assert_eq!(
            exit,
            Exit::DataAbort {
                ipa: 0x8000_0010,
                write: false,
                status: 6,
                page_walk: false
            }
        );
    }

    #[test]
    fn stage1_walk_abort_is_not_mmio() {
        let iss = 1 << 24 | 1 << 7 | 0x07;
        assert!(matches!(
            decode(0x24 << EC_SHIFT | iss, 0, 0),
            Exit::DataAbort {
                page_walk: true,
                ..
            }
        ));
    }

    #[test]
    fn instruction_abort() {
        let exit = decode(0x20 << EC_SHIFT | 0x06, 0x10, (0x7000_0000u64 >> 12) << 4);
        assert_eq!(
            exit,
            Exit::InstructionAbort {
                ipa: 0x7000_0010,
                status: 6
            }
        );
    }

    #[test]
    fn implementation_defined_register_read() {
        // MRS X0, S3_0_C15_C0_0
        let iss = 3 << 20 | 15 << 10 | 1;
        let Exit::SystemRegister(r) = decode(0x18 << EC_SHIFT | IL | iss, 0, 0) else {
            panic!()
        };
        assert_eq!(
            (r.op0, r.op1, r.crn, r.crm, r.op2, r.register, r.read),
            (3, 0, 15, 0, 0, 0, true)
        );
        assert_eq!(alloc::format!("{r}"), "read of S3_0_C15_C0_0");
    }

    #[test]
    fn aarch32_coprocessor_traps() {
        for class in [0x03u64, 0x04, 0x05, 0x06, 0x0c] {
            assert_eq!(
                decode(class << EC_SHIFT | IL, 0, 0),
                Exit::Coprocessor { class: class as u8 }
            );
        }
        assert_eq!(decode(0x07 << EC_SHIFT, 0, 0), Exit::Other { class: 7 });
    }

    #[test]
    fn other_classes_pass_through() {
        assert_eq!(decode(0x01 << EC_SHIFT, 0, 0), Exit::Other { class: 1 });
        assert_eq!(decode(0x3f << EC_SHIFT, 0, 0), Exit::Other { class: 0x3f });
    }
}
