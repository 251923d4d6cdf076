//! The swept attacks: one attack per system register encoding and direction (`sysreg-*`), per
//! access kind and place that must end in a synchronous external abort (`abort-*`) and per
//! SMCCC function ID that must be refused (`call-*`), with their verdicts, plus the tally
//! behind the `ATTACKS` summary line. The tables are the documentation of what is attacked;
//! `bare::sweep` only executes them.
//!
//! What the hypervisor must do (DESIGN.md §4 "Faults", docs/threat-model.md): a trapped system
//! register it does not emulate gives the guest an Undefined Instruction exception (ESR_EL1.EC
//! 0x00); an access to an IPA nothing backs gives a synchronous external abort (EC 0x25 data /
//! 0x21 instruction from EL1, FSC 0x10, FAR_EL1 = the faulting address); the EL1 physical timer
//! is the slice's own. Registers of EL2 and EL3 are UNDEFINED at EL1 by the architecture
//! (Arm ARM D1.4 and the register descriptions of D24); a slice reaching one would own the node.

use core::fmt;

use crate::fault::Fault;
use crate::psci::NOT_SUPPORTED;
use crate::verdict::{Outcome, Verdict};

/// ESR_ELx.EC of an exception.
pub fn exception_class(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

/// ESR_ELx.EC 0x00: Unknown reason, the class of an Undefined Instruction exception.
pub const EC_UNKNOWN: u64 = 0x00;
/// Instruction abort from a lower exception level (EL0).
pub const EC_IABT_LOWER: u64 = 0x20;
/// Instruction abort taken without a change of exception level.
pub const EC_IABT_SAME: u64 = 0x21;
/// Data abort from a lower exception level (EL0).
pub const EC_DABT_LOWER: u64 = 0x24;
/// Data abort taken without a change of exception level.
pub const EC_DABT_SAME: u64 = 0x25;
/// DFSC/IFSC: synchronous external abort, not on a translation table walk.
pub const FSC_EXTERNAL: u64 = 0x10;

/// A system register encoding `S<op0>_<op1>_C<n>_C<m>_<op2>` (Arm ARM C5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// op0 (2 or 3).
    pub op0: u8,
    /// op1.
    pub op1: u8,
    /// CRn.
    pub crn: u8,
    /// CRm.
    pub crm: u8,
    /// op2.
    pub op2: u8,
}

impl Encoding {
    /// The 32-bit instruction word `MRS x<rt>, <this>` (`read`) or `MSR <this>, x<rt>` (Arm ARM
    /// C6.2.249/C6.2.251: `1101 0101 00 L 1 o0 op1 CRn CRm op2 Rt`, o0 = op0 - 2).
    pub fn instruction(self, read: bool, rt: u8) -> u32 {
        0xd510_0000
            | u32::from(read) << 21
            | u32::from(self.op0 & 1) << 19
            | u32::from(self.op1 & 7) << 16
            | u32::from(self.crn & 15) << 12
            | u32::from(self.crm & 15) << 8
            | u32::from(self.op2 & 7) << 5
            | u32::from(rt & 31)
    }
}

/// `S3_0_C15_C0_0`.
impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "S{}_{}_C{}_C{}_{}",
            self.op0, self.op1, self.crn, self.crm, self.op2
        )
    }
}

/// What a system register access must give to be contained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysregExpect {
    /// Undefined Instruction (EC 0x00): EL2/EL3 registers, trapped registers the hypervisor does
    /// not emulate (IMPLEMENTATION DEFINED space, RAS error records, debug ROM, trace, SPE).
    Undefined,
    /// Emulated (the access completes) or Undefined Instruction: the SGI generators, ACTLR_EL1.
    EmulatedOrUndefined,
    /// The slice's own register: the access must complete (the EL1 physical timer).
    Owned,
}

/// One swept system register: a read attack and a write attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysregCase {
    /// `sysreg-<reg>-read`, `sysreg-<reg>-write`.
    pub names: [&'static str; 2],
    /// The encoding.
    pub encoding: Encoding,
    /// What each access must give.
    pub expect: SysregExpect,
    /// The value the write attack writes.
    pub write_value: u64,
}

impl SysregCase {
    /// The attack name of the read (`write` false) or the write.
    pub fn name(&self, write: bool) -> &'static str {
        self.names[usize::from(write)]
    }
}

macro_rules! sysregs {
    ($($reg:literal = ($op0:literal, $op1:literal, $crn:literal, $crm:literal, $op2:literal) $expect:ident $value:literal;)*) => {
        /// Every swept system register, in sweep order (each gives two attacks).
        pub const SYSREGS: &[SysregCase] = &[$(
            SysregCase {
                names: [concat!("sysreg-", $reg, "-read"), concat!("sysreg-", $reg, "-write")],
                encoding: Encoding { op0: $op0, op1: $op1, crn: $crn, crm: $crm, op2: $op2 },
                expect: SysregExpect::$expect,
                write_value: $value,
            },
        )*];
    };
}

sysregs! {
    // HCR_EL2.TIDCP: the IMPLEMENTATION DEFINED encodings (op0 = 3, CRn = 11 or 15).
    "impdef-s3-0-c15-c0-0" = (3, 0, 15, 0, 0) Undefined 0;
    "impdef-s3-0-c15-c15-7" = (3, 0, 15, 15, 7) Undefined 0;
    "impdef-s3-1-c15-c2-0" = (3, 1, 15, 2, 0) Undefined 0;
    "impdef-s3-1-c15-c2-1" = (3, 1, 15, 2, 1) Undefined 0;
    "impdef-s3-0-c11-c0-0" = (3, 0, 11, 0, 0) Undefined 0;
    "impdef-s3-3-c11-c15-7" = (3, 3, 11, 15, 7) Undefined 0;
    "impdef-s3-3-c15-c0-0" = (3, 3, 15, 0, 0) Undefined 0;
    "impdef-s3-7-c11-c0-0" = (3, 7, 11, 0, 0) Undefined 0;
    // HCR_EL2.TACR.
    "actlr-el1" = (3, 0, 1, 0, 1) EmulatedOrUndefined 0;
    // The EL1 physical timer: the slice's own (CTL written with IMASK set, timer disabled).
    "cntp-tval-el0" = (3, 3, 14, 2, 0) Owned 0;
    "cntp-ctl-el0" = (3, 3, 14, 2, 1) Owned 2;
    "cntp-cval-el0" = (3, 3, 14, 2, 2) Owned 0;
    // The secure physical timer: UNDEFINED in Non-secure EL1.
    "cntps-tval-el1" = (3, 7, 14, 2, 0) Undefined 0;
    "cntps-ctl-el1" = (3, 7, 14, 2, 1) Undefined 0;
    "cntps-cval-el1" = (3, 7, 14, 2, 2) Undefined 0;
    // The hypervisor's timers and counter controls.
    "cnthp-ctl-el2" = (3, 4, 14, 2, 1) Undefined 0;
    "cnthp-cval-el2" = (3, 4, 14, 2, 2) Undefined 0;
    "cnthv-ctl-el2" = (3, 4, 14, 3, 1) Undefined 0;
    "cnthctl-el2" = (3, 4, 14, 1, 0) Undefined 0;
    "cntvoff-el2" = (3, 4, 14, 0, 3) Undefined 0;
    // The hypervisor's own control registers.
    "hcr-el2" = (3, 4, 1, 1, 0) Undefined 0;
    "vttbr-el2" = (3, 4, 2, 1, 0) Undefined 0;
    "vbar-el2" = (3, 4, 12, 0, 0) Undefined 0;
    "esr-el2" = (3, 4, 5, 2, 0) Undefined 0;
    "elr-el2" = (3, 4, 4, 0, 1) Undefined 0;
    "mdcr-el2" = (3, 4, 1, 1, 1) Undefined 0;
    "vmpidr-el2" = (3, 4, 0, 0, 5) Undefined 0;
    "scr-el3" = (3, 6, 1, 1, 0) Undefined 0;
    // The GIC: the SGI generators (trapped by HCR_EL2.IMO/FMO) and the EL2 interface.
    "icc-sgi1r-el1" = (3, 0, 12, 11, 5) EmulatedOrUndefined 0;
    "icc-asgi1r-el1" = (3, 0, 12, 11, 6) EmulatedOrUndefined 0;
    "icc-sgi0r-el1" = (3, 0, 12, 11, 7) EmulatedOrUndefined 0;
    "ich-hcr-el2" = (3, 4, 12, 11, 0) Undefined 0;
    "ich-vmcr-el2" = (3, 4, 12, 11, 7) Undefined 0;
    "ich-lr0-el2" = (3, 4, 12, 12, 0) Undefined 0;
    "icc-sre-el2" = (3, 4, 12, 9, 5) Undefined 0;
    // MDCR_EL2: the debug ROM address (TDRA), the trace filter (TTRF), the profiling buffer and
    // controls (E2PB, TPMS), the trace buffer (E2TB); CPTR_EL2.TTA: the trace unit.
    "mdrar-el1" = (2, 0, 1, 0, 0) Undefined 0;
    "trfcr-el1" = (3, 0, 1, 2, 1) Undefined 0;
    "pmscr-el1" = (3, 0, 9, 9, 0) Undefined 0;
    "pmblimitr-el1" = (3, 0, 9, 10, 0) Undefined 0;
    "pmbptr-el1" = (3, 0, 9, 10, 1) Undefined 0;
    "trblimitr-el1" = (3, 0, 9, 11, 0) Undefined 0;
    "trcprgctlr" = (2, 1, 0, 1, 0) Undefined 0;
    // HCR_EL2.TERR: the RAS error records.
    "erridr-el1" = (3, 0, 5, 3, 0) Undefined 0;
    "errselr-el1" = (3, 0, 5, 3, 1) Undefined 0;
    "erxstatus-el1" = (3, 0, 5, 4, 2) Undefined 0;
    "erxaddr-el1" = (3, 0, 5, 4, 3) Undefined 0;
}

/// How one system register attack ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysregOutcome {
    /// The register.
    pub case: SysregCase,
    /// MSR (else MRS).
    pub write: bool,
    /// The value read (0 for a write), or the exception the access took.
    pub result: Result<u64, Fault>,
}

impl Outcome for SysregOutcome {
    fn verdict(&self) -> Verdict {
        let undefined = matches!(self.result, Err(Fault::Exception { esr, .. }) if exception_class(esr) == EC_UNKNOWN);
        match (self.case.expect, self.result) {
            (_, Err(Fault::Unaddressable)) => Verdict::Unverified,
            (SysregExpect::Undefined, _) => Verdict::of(undefined),
            (SysregExpect::EmulatedOrUndefined, r) => Verdict::of(undefined || r.is_ok()),
            (SysregExpect::Owned, r) => Verdict::of(r.is_ok()),
        }
    }
}

/// `mrs S3_0_C15_C0_0 undefined esr=0x2000000`, `msr S3_3_C14_C2_1 completed`,
/// `mrs S3_3_C14_C2_0 returned 0x..`, `mrs ... fault <class> esr=..`.
impl fmt::Display for SysregOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.write { "msr" } else { "mrs" };
        write!(f, "{op} {} ", self.case.encoding)?;
        match self.result {
            Ok(_) if self.write => f.write_str("completed"),
            Ok(value) => write!(f, "returned {value:#x}"),
            Err(Fault::Exception { esr, .. }) if exception_class(esr) == EC_UNKNOWN => {
                write!(f, "undefined esr={esr:#x}")
            }
            Err(fault) => write!(f, "{fault}"),
        }
    }
}

/// The access an abort attack makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessOp {
    /// LDRB.
    Ld8,
    /// LDRH.
    Ld16,
    /// LDR (W).
    Ld32,
    /// LDR (X).
    Ld64,
    /// STRB.
    St8,
    /// STRH.
    St16,
    /// STR (W).
    St32,
    /// STR (X).
    St64,
    /// LDP of two X registers (no instruction syndrome).
    Ldp,
    /// STP of two X registers (no instruction syndrome).
    Stp,
    /// LDAR (load-acquire).
    Ldar,
    /// STLR (store-release).
    Stlr,
    /// LDXR (load exclusive, no instruction syndrome).
    Ldxr,
    /// STXR without a preceding LDXR to the address.
    Stxr,
    /// An instruction fetch (BLR to the address).
    Fetch,
}

impl AccessOp {
    /// The mnemonic printed in the attack's lines.
    pub fn mnemonic(self) -> &'static str {
        match self {
            AccessOp::Ld8 => "ldrb",
            AccessOp::Ld16 => "ldrh",
            AccessOp::Ld32 => "ldr32",
            AccessOp::Ld64 => "ldr64",
            AccessOp::St8 => "strb",
            AccessOp::St16 => "strh",
            AccessOp::St32 => "str32",
            AccessOp::St64 => "str64",
            AccessOp::Ldp => "ldp",
            AccessOp::Stp => "stp",
            AccessOp::Ldar => "ldar",
            AccessOp::Stlr => "stlr",
            AccessOp::Ldxr => "ldxr",
            AccessOp::Stxr => "stxr",
            AccessOp::Fetch => "fetch",
        }
    }

    /// Bytes the access covers (FAR may name any of them).
    pub fn bytes(self) -> u64 {
        match self {
            AccessOp::Ld8 | AccessOp::St8 => 1,
            AccessOp::Ld16 | AccessOp::St16 => 2,
            AccessOp::Ld32 | AccessOp::St32 | AccessOp::Fetch => 4,
            AccessOp::Ldp | AccessOp::Stp => 16,
            _ => 8,
        }
    }
}

/// Where an abort attack aims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The first IPA past the slice's RAM (mapped Normal by the probe when in a RAM GiB).
    PastRam,
    /// [`DEVICE_HOLE`]: inside the device area, between the UART and the next device.
    DeviceHole,
    /// The slice's own UART (an emulated device), for accesses without a syndrome.
    OwnUart,
}

/// An IPA in the device area that neither QEMU `virt` nor a slice backs: past the UART's page
/// (0x0900_0000, 4 KiB), below the RTC (0x0901_0000).
pub const DEVICE_HOLE: u64 = 0x0900_8000;

/// What an abort attack must end in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortExpect {
    /// A synchronous external abort (EC 0x25/0x21 from EL1, FSC 0x10, FAR in the access).
    External,
    /// An external abort or an emulated answer (a device the slice owns, accessed without a
    /// syndrome).
    ExternalOrEmulated,
    /// An external abort, or the store-exclusive failing (status 1, nothing stored): STXR
    /// without a reservation may fail before making the access (Arm ARM B2.9.5).
    ExternalOrNotStored,
}

/// One abort attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortCase {
    /// The attack name.
    pub name: &'static str,
    /// The access.
    pub op: AccessOp,
    /// Where.
    pub place: Place,
    /// With the stage-1 MMU off (data accesses are then Device-nGnRnE).
    pub mmu_off: bool,
    /// What it must give.
    pub expect: AbortExpect,
}

macro_rules! aborts {
    ($($name:literal = $op:ident $place:ident $mmu_off:literal $expect:ident;)*) => {
        /// Every abort attack, in sweep order.
        pub const ABORTS: &[AbortCase] = &[$(
            AbortCase {
                name: $name,
                op: AccessOp::$op,
                place: Place::$place,
                mmu_off: $mmu_off,
                expect: AbortExpect::$expect,
            },
        )*];
    };
}

aborts! {
    "abort-ldrb-past-ram" = Ld8 PastRam false External;
    "abort-ldrh-past-ram" = Ld16 PastRam false External;
    "abort-ldr32-past-ram" = Ld32 PastRam false External;
    "abort-ldr64-past-ram" = Ld64 PastRam false External;
    "abort-strb-past-ram" = St8 PastRam false External;
    "abort-strh-past-ram" = St16 PastRam false External;
    "abort-str32-past-ram" = St32 PastRam false External;
    "abort-str64-past-ram" = St64 PastRam false External;
    "abort-ldp-past-ram" = Ldp PastRam false External;
    "abort-stp-past-ram" = Stp PastRam false External;
    "abort-ldar-past-ram" = Ldar PastRam false External;
    "abort-stlr-past-ram" = Stlr PastRam false External;
    "abort-fetch-past-ram" = Fetch PastRam false External;
    "abort-ldrb-hole" = Ld8 DeviceHole false External;
    "abort-ldrh-hole" = Ld16 DeviceHole false External;
    "abort-ldr32-hole" = Ld32 DeviceHole false External;
    "abort-ldr64-hole" = Ld64 DeviceHole false External;
    "abort-strb-hole" = St8 DeviceHole false External;
    "abort-strh-hole" = St16 DeviceHole false External;
    "abort-str32-hole" = St32 DeviceHole false External;
    "abort-str64-hole" = St64 DeviceHole false External;
    "abort-ldp-hole" = Ldp DeviceHole false External;
    "abort-stp-hole" = Stp DeviceHole false External;
    "abort-ldxr-hole" = Ldxr DeviceHole false External;
    "abort-stxr-hole" = Stxr DeviceHole false ExternalOrNotStored;
    "abort-ldp-own-uart" = Ldp OwnUart false ExternalOrEmulated;
    "abort-ldxr-own-uart" = Ldxr OwnUart false ExternalOrEmulated;
    "abort-ldr64-past-ram-mmu-off" = Ld64 PastRam true External;
    "abort-str64-past-ram-mmu-off" = St64 PastRam true External;
    "abort-ldr32-hole-mmu-off" = Ld32 DeviceHole true External;
    "abort-str32-hole-mmu-off" = St32 DeviceHole true External;
    "abort-fetch-past-ram-mmu-off" = Fetch PastRam true External;
}

/// How one abort attack ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortOutcome {
    /// The attack.
    pub case: AbortCase,
    /// The address accessed.
    pub addr: u64,
    /// The value loaded (a store: 0; STXR: its status), or the exception.
    pub result: Result<u64, Fault>,
}

/// Whether `result` is the synchronous external abort an access of `bytes` at `addr` taken at
/// EL1 must give: EC 0x25 (0x21 for an instruction fetch), FSC 0x10, FAR inside the access.
pub fn external_abort(result: Result<u64, Fault>, addr: u64, bytes: u64, fetch: bool) -> bool {
    let Err(Fault::Exception { esr, far }) = result else {
        return false;
    };
    let class = if fetch { EC_IABT_SAME } else { EC_DABT_SAME };
    exception_class(esr) == class
        && esr & 0x3f == FSC_EXTERNAL
        && far >= addr
        && far < addr.saturating_add(bytes)
}

impl AbortOutcome {
    /// Whether the exception is the external abort the access must take.
    pub fn is_external_abort(&self) -> bool {
        external_abort(
            self.result,
            self.addr,
            self.case.op.bytes(),
            self.case.op == AccessOp::Fetch,
        )
    }
}

impl Outcome for AbortOutcome {
    fn verdict(&self) -> Verdict {
        if self.result == Err(Fault::Unaddressable) {
            return Verdict::Unverified;
        }
        let external = self.is_external_abort();
        Verdict::of(match self.case.expect {
            AbortExpect::External => external,
            AbortExpect::ExternalOrEmulated => external || self.result.is_ok(),
            AbortExpect::ExternalOrNotStored => external || self.result == Ok(1),
        })
    }
}

/// `ldr64 0x44000000 external-abort esr=0x96000010 far=0x44000000`,
/// `... fault <class> esr=.. far=..` (another exception), `... returned 0x..`, `... completed`,
/// `stxr 0x.. status=1`, `... unaddressable`; `mmu-off` after the address when it was off.
impl fmt::Display for AbortOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:#x} ", self.case.op.mnemonic(), self.addr)?;
        if self.case.mmu_off {
            f.write_str("mmu-off ")?;
        }
        let store = matches!(
            self.case.op,
            AccessOp::St8
                | AccessOp::St16
                | AccessOp::St32
                | AccessOp::St64
                | AccessOp::Stp
                | AccessOp::Stlr
        );
        match self.result {
            Err(Fault::Exception { esr, far }) if self.is_external_abort() => {
                write!(f, "external-abort esr={esr:#x} far={far:#x}")
            }
            Err(fault) => write!(f, "{fault}"),
            Ok(status) if self.case.op == AccessOp::Stxr => write!(f, "status={status}"),
            Ok(_) if store => f.write_str("completed"),
            Ok(value) => write!(f, "returned {value:#x}"),
        }
    }
}

/// The conduit of a swept call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallConduit {
    /// `hvc #0`.
    Hvc,
    /// `smc #0` (trapped by HCR_EL2.TSC).
    Smc,
}

/// An argument of a swept call that depends on the slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallArg {
    /// This value.
    Value(u64),
    /// The first affinity (Aff1 = 1) no vCPU of the slice has.
    ForeignAffinity,
    /// The calling vCPU's own affinity.
    OwnAffinity,
    /// The first IPA past the slice's RAM.
    PastRam,
    /// The probe's parking loop (an entry point that does nothing).
    Entry,
}

/// One swept SMCCC call: it must be refused (a negative return code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallCase {
    /// The attack name.
    pub name: &'static str,
    /// HVC or SMC.
    pub conduit: CallConduit,
    /// The function ID (x0).
    pub function: u64,
    /// x1, x2.
    pub args: [CallArg; 2],
}

macro_rules! calls {
    ($($name:literal = $conduit:ident $function:literal [$a1:expr, $a2:expr];)*) => {
        /// Every swept call, in sweep order.
        pub const CALLS: &[CallCase] = &[$(
            CallCase {
                name: $name,
                conduit: CallConduit::$conduit,
                function: $function,
                args: [$a1, $a2],
            },
        )*];
    };
}

use CallArg::{Entry, ForeignAffinity, OwnAffinity, PastRam, Value};

calls! {
    // PSCI 1.1 functions a slice's PSCI does not implement or must refuse (PSCI §5).
    "call-psci-migrate" = Hvc 0xC400_0005 [ForeignAffinity, Value(0)];
    "call-psci-cpu-freeze" = Hvc 0x8400_000B [Value(0), Value(0)];
    "call-psci-node-hw-state" = Hvc 0xC400_000D [ForeignAffinity, Value(0)];
    "call-psci-set-suspend-mode" = Hvc 0x8400_000F [Value(1), Value(0)];
    "call-psci-stat-residency" = Hvc 0xC400_0010 [ForeignAffinity, Value(0)];
    "call-psci-stat-count" = Hvc 0xC400_0011 [ForeignAffinity, Value(0)];
    "call-psci-mem-protect" = Hvc 0x8400_0013 [Value(1), Value(0)];
    "call-psci-mem-protect-range" = Hvc 0xC400_0014 [PastRam, Value(0x1000)];
    "call-psci-cpu-on32-foreign" = Hvc 0x8400_0003 [ForeignAffinity, Entry];
    "call-psci-cpu-on-self" = Hvc 0xC400_0003 [OwnAffinity, Entry];
    "call-psci-features-sip" = Hvc 0x8400_000A [Value(0xC200_0000), Value(0)];
    // SYSTEM_OFF with the fast-call bit clear (a yielding call): not SYSTEM_OFF.
    "call-psci-off-yielding" = Hvc 0x0400_0008 [Value(0), Value(0)];
    // Owning entities nothing in a slice answers (SMCCC §6).
    "call-smccc-arch-unknown" = Hvc 0x8000_00FF [Value(0), Value(0)];
    "call-sip-32" = Hvc 0x8200_0000 [Value(0), Value(0)];
    "call-sip-64" = Hvc 0xC200_0000 [Value(0), Value(0)];
    "call-oem-32" = Hvc 0x8300_0000 [Value(0), Value(0)];
    "call-std-hyp" = Hvc 0x8500_0000 [Value(0), Value(0)];
    "call-vendor-hyp-32" = Hvc 0x8600_0000 [Value(0), Value(0)];
    "call-vendor-hyp-last" = Hvc 0xC600_FFFF [Value(0), Value(0)];
    "call-trusted-app" = Hvc 0xB000_0000 [Value(0), Value(0)];
    "call-trusted-os" = Hvc 0xBF00_0000 [Value(0), Value(0)];
    // The same through SMC: the firmware must never see a slice's call.
    "call-smc-sip-64" = Smc 0xC200_0000 [Value(0), Value(0)];
    "call-smc-oem-32" = Smc 0x8300_0000 [Value(0), Value(0)];
    "call-smc-trusted-os" = Smc 0xBF00_0000 [Value(0), Value(0)];
    "call-smc-psci-mem-protect" = Smc 0x8400_0013 [Value(1), Value(0)];
}

/// How one swept call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSweepOutcome {
    /// The call.
    pub case: CallCase,
    /// x1, x2 as passed.
    pub args: [u64; 2],
    /// x0 on return, or the exception the call took (UNDEFINED where no EL2/EL3 answers the
    /// conduit, e.g. SMC natively without firmware).
    pub ret: Result<i64, Fault>,
    /// The probe runs in a slice (its device tree names one): then every SMC must come back
    /// NOT_SUPPORTED, the hypervisor's answer. An SMC that reached the firmware (no
    /// HCR_EL2.TSC) would be UNDEFINED or answered otherwise there.
    pub in_slice: bool,
}

impl Outcome for CallSweepOutcome {
    fn verdict(&self) -> Verdict {
        if self.in_slice && self.case.conduit == CallConduit::Smc {
            return Verdict::of(self.ret == Ok(crate::psci::NOT_SUPPORTED));
        }
        Verdict::of(match self.ret {
            Ok(ret) => ret < 0,
            Err(Fault::Exception { esr, .. }) => exception_class(esr) == EC_UNKNOWN,
            Err(Fault::Unaddressable) => false,
        })
    }
}

/// `hvc 0xc4000005(0x100,0x0) returned -1 NOT_SUPPORTED`, `smc ... undefined esr=0x2000000`.
impl fmt::Display for CallSweepOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conduit = match self.case.conduit {
            CallConduit::Hvc => "hvc",
            CallConduit::Smc => "smc",
        };
        write!(
            f,
            "{conduit} {:#x}({:#x},{:#x}) ",
            self.case.function, self.args[0], self.args[1]
        )?;
        match self.ret {
            Ok(ret) => write!(f, "returned {ret} {}", crate::psci::status_name(ret)),
            Err(Fault::Exception { esr, .. }) if exception_class(esr) == EC_UNKNOWN => {
                write!(f, "undefined esr={esr:#x}")
            }
            Err(fault) => write!(f, "{fault}"),
        }
    }
}

/// Whether `ret` is SMCCC NOT_SUPPORTED (for the docs' examples).
pub fn not_supported(ret: i64) -> bool {
    ret == NOT_SUPPORTED
}

/// The verdicts of one run's attacks: the `ATTACKS` summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Attacks concluded.
    pub run: u32,
    /// Of them, contained.
    pub contained: u32,
    /// NOT-CONTAINED (breaches).
    pub not_contained: u32,
    /// NOT-CONTAINED unverified (not attempted).
    pub unverified: u32,
}

impl Tally {
    /// Counts one verdict.
    pub fn record(&mut self, verdict: Verdict) {
        self.run += 1;
        match verdict {
            Verdict::Contained => self.contained += 1,
            Verdict::NotContained => self.not_contained += 1,
            Verdict::Unverified => self.unverified += 1,
        }
    }
}

/// `ATTACKS <run> contained <n> not-contained <n> unverified <n>`.
impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ATTACKS {} contained {} not-contained {} unverified {}",
            self.run, self.contained, self.not_contained, self.unverified
        )
    }
}

/// What an EL0 attack does at EL0 (the probe drops there for one instruction and comes back
/// with SVC or the exception).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum El0Op {
    /// LDR x of the first IPA past RAM (through an EL0 alias of RAM's GiB).
    Ldr64PastRam,
    /// STR x there.
    Str64PastRam,
    /// Executing there (ERET to it).
    FetchPastRam,
    /// MRS of the IMPLEMENTATION DEFINED S3_0_C15_C0_0.
    MrsImpdef,
    /// `hvc #0` (UNDEFINED at EL0).
    Hvc,
    /// `smc #0` (UNDEFINED at EL0).
    Smc,
    /// MSR ICC_SGI1R_EL1 (an EL1 register).
    MsrSgi1r,
}

/// One EL0 attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct El0Case {
    /// The attack name.
    pub name: &'static str,
    /// What it does.
    pub op: El0Op,
}

/// Every EL0 attack, in sweep order.
pub const EL0: &[El0Case] = &[
    El0Case {
        name: "el0-ldr64-past-ram",
        op: El0Op::Ldr64PastRam,
    },
    El0Case {
        name: "el0-str64-past-ram",
        op: El0Op::Str64PastRam,
    },
    El0Case {
        name: "el0-fetch-past-ram",
        op: El0Op::FetchPastRam,
    },
    El0Case {
        name: "el0-mrs-impdef",
        op: El0Op::MrsImpdef,
    },
    El0Case {
        name: "el0-hvc",
        op: El0Op::Hvc,
    },
    El0Case {
        name: "el0-smc",
        op: El0Op::Smc,
    },
    El0Case {
        name: "el0-msr-icc-sgi1r",
        op: El0Op::MsrSgi1r,
    },
];

impl El0Op {
    /// The words of the attempting and outcome lines.
    pub fn mnemonic(self) -> &'static str {
        match self {
            El0Op::Ldr64PastRam => "ldr64",
            El0Op::Str64PastRam => "str64",
            El0Op::FetchPastRam => "fetch",
            El0Op::MrsImpdef => "mrs S3_0_C15_C0_0",
            El0Op::Hvc => "hvc #0",
            El0Op::Smc => "smc #0",
            El0Op::MsrSgi1r => "msr icc_sgi1r_el1",
        }
    }

    /// Whether it accesses memory (at the EL0 address of the outcome).
    pub fn is_access(self) -> bool {
        matches!(
            self,
            El0Op::Ldr64PastRam | El0Op::Str64PastRam | El0Op::FetchPastRam
        )
    }
}

/// How one EL0 attack ended: what came back to EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct El0Outcome {
    /// The attack.
    pub case: El0Case,
    /// The EL0 virtual address accessed (0 for the instructions that access nothing).
    pub va: u64,
    /// The IPA behind it.
    pub ipa: u64,
    /// x0 after the EL0 code finished with SVC, or the exception it took.
    pub result: Result<u64, Fault>,
}

impl Outcome for El0Outcome {
    fn verdict(&self) -> Verdict {
        let Err(fault) = self.result else {
            return Verdict::NotContained;
        };
        let Fault::Exception { esr, far } = fault else {
            return Verdict::Unverified;
        };
        let class = exception_class(esr);
        Verdict::of(match self.case.op {
            El0Op::Ldr64PastRam | El0Op::Str64PastRam => {
                class == EC_DABT_LOWER && esr & 0x3f == FSC_EXTERNAL && far & !7 == self.va
            }
            El0Op::FetchPastRam => {
                class == EC_IABT_LOWER && esr & 0x3f == FSC_EXTERNAL && far == self.va
            }
            _ => class == EC_UNKNOWN,
        })
    }
}

/// `ldr64 el0 0x6004000000 ipa=0x44000000 external-abort-lower esr=0x92000010 far=0x..`,
/// `hvc #0 el0 undefined esr=0x2000000`, `... returned 0x..`, `... fault <class> esr=..`.
impl fmt::Display for El0Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} el0 ", self.case.op.mnemonic())?;
        if self.case.op.is_access() {
            write!(f, "{:#x} ipa={:#x} ", self.va, self.ipa)?;
        }
        match self.result {
            Ok(value) => write!(f, "returned {value:#x}"),
            Err(Fault::Exception { esr, far })
                if self.case.op.is_access() && self.verdict() == Verdict::Contained =>
            {
                write!(f, "external-abort-lower esr={esr:#x} far={far:#x}")
            }
            Err(Fault::Exception { esr, .. }) if exception_class(esr) == EC_UNKNOWN => {
                write!(f, "undefined esr={esr:#x}")
            }
            Err(Fault::Unaddressable) => f.write_str("no-el0-alias"),
            Err(fault) => write!(f, "{fault}"),
        }
    }
}

/// The GIC frame a `gic-*` sweep attack touches (the slice's own: its distributor, its boot
/// vCPU's redistributor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicFrame {
    /// GICD.
    Distributor,
    /// The redistributor's RD_base.
    Redistributor,
    /// The redistributor's SGI_base (RD_base + 64 KiB).
    Sgi,
}

impl GicFrame {
    /// `gicd`, `gicr`, `gicr-sgi`.
    pub fn label(self) -> &'static str {
        match self {
            GicFrame::Distributor => "gicd",
            GicFrame::Redistributor => "gicr",
            GicFrame::Sgi => "gicr-sgi",
        }
    }
}

/// One `gic-*` attack: an optional write, then a read whose `mask` bits must be clear (RES0, a
/// write ignored, a foreign SPI not pending), unless an access takes an external abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicMmioCase {
    /// The attack name.
    pub name: &'static str,
    /// The frame.
    pub frame: GicFrame,
    /// The write (offset, value), if any.
    pub write: Option<(u64, u64)>,
    /// The offset read afterwards.
    pub read: u64,
    /// 8 for a 64-bit register (both accesses), else 4.
    pub width: u8,
    /// The bits of the read that must be clear.
    pub mask: u64,
}

/// The SPI the `gic-setspi-*` attacks try to pend (SPI 28: no device of a slice signals it).
pub const FOREIGN_SPI: u64 = 60;

macro_rules! gic_mmio {
    ($($name:literal = $frame:ident $write:expr, read $read:literal width $width:literal mask $mask:expr;)*) => {
        /// Every GIC MMIO attack, in sweep order.
        pub const GIC_MMIO: &[GicMmioCase] = &[$(
            GicMmioCase {
                name: $name,
                frame: GicFrame::$frame,
                write: $write,
                read: $read,
                width: $width,
                mask: $mask,
            },
        )*];
    };
}

const ALL: u64 = u64::MAX;

gic_mmio! {
    // Reserved and IMPLEMENTATION DEFINED distributor offsets (GICv3 §12.9, Table 12-25): RES0.
    "gicd-reserved-0x14" = Distributor None, read 0x14 width 4 mask ALL;
    "gicd-impdef-0x20" = Distributor None, read 0x20 width 4 mask ALL;
    "gicd-impdef-0x3c" = Distributor None, read 0x3c width 4 mask ALL;
    "gicd-reserved-0x44" = Distributor None, read 0x44 width 4 mask ALL;
    "gicd-reserved-0x5c" = Distributor None, read 0x5c width 4 mask ALL;
    "gicd-reserved-0x7c" = Distributor None, read 0x7c width 4 mask ALL;
    // GICv2's SGI registers, RES0 with affinity routing.
    "gicd-sgir" = Distributor None, read 0xf00 width 4 mask ALL;
    "gicd-cpendsgir" = Distributor None, read 0xf10 width 4 mask ALL;
    "gicd-spendsgir" = Distributor None, read 0xf20 width 4 mask ALL;
    "gicd-reserved-0xffc0" = Distributor None, read 0xffc0 width 4 mask ALL;
    // Just past the distributor's 64 KiB frame.
    "gicd-past-frame" = Distributor None, read 0x10000 width 4 mask ALL;
    // Writes that must be ignored.
    "gicd-reserved-0x14-write" = Distributor Some((0x14, 0xffff_ffff)), read 0x14 width 4 mask ALL;
    "gicd-impdef-0x3c-write" = Distributor Some((0x3c, 0xffff_ffff)), read 0x3c width 4 mask ALL;
    "gicd-sgir-write" = Distributor Some((0xf00, 0x00ff_000d)), read 0xf00 width 4 mask ALL;
    // A foreign SPI pended through the message-based SPI registers: GICD_ISPENDR1 must not show
    // it (bit 28 = INTID 60). The secure one exists only for Secure accesses.
    "gicd-setspi-foreign" = Distributor Some((0x40, FOREIGN_SPI)), read 0x204 width 4 mask 1 << (FOREIGN_SPI - 32);
    "gicd-setspi-sr-foreign" = Distributor Some((0x50, FOREIGN_SPI)), read 0x204 width 4 mask 1 << (FOREIGN_SPI - 32);
    // Redistributor RD_base reserved and IMPLEMENTATION DEFINED offsets.
    "gicr-impdef-0x20" = Redistributor None, read 0x20 width 4 mask ALL;
    "gicr-impdef-0x3c" = Redistributor None, read 0x3c width 4 mask ALL;
    "gicr-reserved-0x58" = Redistributor None, read 0x58 width 4 mask ALL;
    "gicr-reserved-0xc8" = Redistributor None, read 0xc8 width 4 mask ALL;
    "gicr-reserved-0xffc0" = Redistributor None, read 0xffc0 width 4 mask ALL;
    // LPI tables aimed at memory outside the slice (0x8000_0000): the address must not stick
    // (a redistributor that took it would read and write there).
    "gicr-propbaser-outside" = Redistributor Some((0x70, 0x8000_0000 | 0xf)), read 0x70 width 8 mask 0x000f_ffff_ffff_f000;
    "gicr-pendbaser-outside" = Redistributor Some((0x78, 0x8000_0000)), read 0x78 width 8 mask 0x000f_ffff_ffff_0000;
    // SGI_base: reserved, and the Secure-only group modifier and access control: RAZ.
    "gicr-sgi-reserved-0x84" = Sgi None, read 0x84 width 4 mask ALL;
    "gicr-sgi-igrpmodr0" = Sgi Some((0xd00, 0xffff_ffff)), read 0xd00 width 4 mask ALL;
    "gicr-sgi-nsacr" = Sgi Some((0xe00, 0xffff_ffff)), read 0xe00 width 4 mask ALL;
}

/// How one `gic-*` attack ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicMmioOutcome {
    /// The attack.
    pub case: GicMmioCase,
    /// The write's result (None: no write).
    pub written: Option<Result<(), Fault>>,
    /// The read's result (not made if the write faulted).
    pub read: Result<u64, Fault>,
}

impl Outcome for GicMmioOutcome {
    fn verdict(&self) -> Verdict {
        if let Some(Err(fault)) = self.written {
            return Verdict::of(fault.is_external_abort());
        }
        match self.read {
            Ok(value) => Verdict::of(value & self.case.mask == 0),
            Err(Fault::Unaddressable) => Verdict::Unverified,
            Err(fault) => Verdict::of(fault.is_external_abort()),
        }
    }
}

/// `[write32 gicd+0x40=0x3c ok|<fault>; ]read32 gicd+0x204 = 0x0 mask=0x10000000` or
/// `read32 gicd+0x10000 fault data-abort esr=.. far=..`.
impl fmt::Display for GicMmioOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frame = self.case.frame.label();
        let bits = u32::from(self.case.width) * 8;
        if let (Some((offset, value)), Some(written)) = (self.case.write, self.written) {
            write!(f, "write{bits} {frame}+{offset:#x}={value:#x} ")?;
            match written {
                Ok(()) => f.write_str("ok; ")?,
                Err(fault) => return write!(f, "{fault}"),
            }
        }
        write!(f, "read{bits} {frame}+{:#x} ", self.case.read)?;
        match self.read {
            Ok(value) => write!(f, "= {value:#x} mask={:#x}", self.case.mask),
            Err(fault) => write!(f, "{fault}"),
        }
    }
}

/// One `pci-*` attack: a configuration access to a function the slice does not own, on its own
/// host bridge's ECAM (an optional write, then a read), which must read as no function (all
/// ones) or take an external abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciCase {
    /// The attack name.
    pub name: &'static str,
    /// Bus, as an offset from the bridge's first bus.
    pub bus_offset: u8,
    /// Device.
    pub device: u8,
    /// Function.
    pub function: u8,
    /// The write (register, value), if any.
    pub write: Option<(u16, u32)>,
    /// The register read afterwards.
    pub read: u16,
}

/// Every `pci-*` attack (group `pci`; needs a PCI host bridge in the device tree). Under the
/// microvisor a slice's bridge has its one function at 00:00.0 and bus 0 only; natively QEMU's
/// has the host bridge at 00:00.0 and the NVMe at 00:01.0: none of these exists in either.
pub const PCI_SWEEP: &[PciCase] = &[
    PciCase {
        name: "pci-00-00-7",
        bus_offset: 0,
        device: 0,
        function: 7,
        write: None,
        read: 0,
    },
    PciCase {
        name: "pci-00-02-0",
        bus_offset: 0,
        device: 2,
        function: 0,
        write: None,
        read: 0,
    },
    PciCase {
        name: "pci-00-03-0",
        bus_offset: 0,
        device: 3,
        function: 0,
        write: None,
        read: 0,
    },
    PciCase {
        name: "pci-00-08-0",
        bus_offset: 0,
        device: 8,
        function: 0,
        write: None,
        read: 0,
    },
    PciCase {
        name: "pci-00-10-0",
        bus_offset: 0,
        device: 16,
        function: 0,
        write: None,
        read: 0,
    },
    PciCase {
        name: "pci-00-1f-7",
        bus_offset: 0,
        device: 31,
        function: 7,
        write: None,
        read: 0,
    },
    PciCase {
        name: "pci-01-00-0",
        bus_offset: 1,
        device: 0,
        function: 0,
        write: None,
        read: 0,
    },
    PciCase {
        name: "pci-00-02-0-command",
        bus_offset: 0,
        device: 2,
        function: 0,
        write: Some((4, 6)),
        read: 4,
    },
    PciCase {
        name: "pci-00-02-0-bar0",
        bus_offset: 0,
        device: 2,
        function: 0,
        write: Some((0x10, 0x8000_0000)),
        read: 0x10,
    },
    PciCase {
        name: "pci-00-00-7-command",
        bus_offset: 0,
        device: 0,
        function: 7,
        write: Some((4, 6)),
        read: 4,
    },
];

/// How one `pci-*` attack ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciOutcome {
    /// The attack.
    pub case: PciCase,
    /// The bus it went to.
    pub bus: u8,
    /// The write's result (None: no write).
    pub written: Option<Result<(), Fault>>,
    /// The read's result (not made if the write faulted).
    pub read: Result<u32, Fault>,
}

impl Outcome for PciOutcome {
    fn verdict(&self) -> Verdict {
        if let Some(Err(fault)) = self.written {
            return Verdict::of(fault.is_external_abort());
        }
        match self.read {
            Ok(value) => Verdict::of(value == u32::MAX),
            Err(Fault::Unaddressable) => Verdict::Unverified,
            Err(fault) => Verdict::of(fault.is_external_abort()),
        }
    }
}

/// `[write 01:00.0+0x4=0x6 ok; ]read 01:00.0+0x0 = 0xffffffff`, `... fault ...`,
/// `no-pci-host` when the tree has no usable bridge.
impl fmt::Display for PciOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.read == Err(Fault::Unaddressable) && self.written.is_none() {
            return f.write_str("no-pci-host");
        }
        let bdf = format_args!(
            "{:02x}:{:02x}.{}",
            self.bus, self.case.device, self.case.function
        );
        if let (Some((reg, value)), Some(written)) = (self.case.write, self.written) {
            write!(f, "write {bdf}+{reg:#x}={value:#x} ")?;
            match written {
                Ok(()) => f.write_str("ok; ")?,
                Err(fault) => return write!(f, "{fault}"),
            }
        }
        let bdf = format_args!(
            "{:02x}:{:02x}.{}",
            self.bus, self.case.device, self.case.function
        );
        write!(f, "read {bdf}+{:#x} ", self.case.read)?;
        match self.read {
            Ok(value) => write!(f, "= {value:#x}"),
            Err(fault) => write!(f, "{fault}"),
        }
    }
}

/// How a timing attack (`race-*`) ended: this vCPU's accesses while another vCPU raced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaceOutcome {
    /// The racing vCPU, None if the slice has no vCPU to spare.
    pub racer: Option<usize>,
    /// Rounds this vCPU made.
    pub rounds: u32,
    /// Rounds the racer made meanwhile.
    pub racer_rounds: u64,
    /// Of this vCPU's rounds, those that gave the contained answer.
    pub expected: u32,
    /// The racer's rounds that gave anything else.
    pub racer_other: u64,
    /// The first answer of this vCPU that was not the contained one.
    pub first_other: Option<Result<u64, Fault>>,
}

impl Outcome for RaceOutcome {
    fn verdict(&self) -> Verdict {
        if self.racer.is_none() || self.racer_rounds == 0 {
            // Nothing raced: nothing was proven.
            return Verdict::Unverified;
        }
        Verdict::of(self.expected == self.rounds && self.racer_other == 0)
    }
}

/// `racer=<vcpu> rounds=<n> racer-rounds=<n> expected=<n> racer-other=<n>[ first-other=...]`,
/// or `no-spare-vcpu` / `racer-idle` when nothing raced.
impl fmt::Display for RaceOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(racer) = self.racer else {
            return f.write_str("no-spare-vcpu");
        };
        if self.racer_rounds == 0 {
            write!(f, "racer-idle racer={racer} ")?;
        }
        write!(
            f,
            "racer={racer} rounds={} racer-rounds={} expected={} racer-other={}",
            self.rounds, self.racer_rounds, self.expected, self.racer_other
        )?;
        match self.first_other {
            Some(Ok(value)) => write!(f, " first-other=returned({value:#x})"),
            Some(Err(fault)) => write!(f, " first-other=({fault})"),
            None => Ok(()),
        }
    }
}

/// `cntp-own`: the EL1 physical timer is the slice's: a CVAL written reads back and the timer,
/// enabled (masked) with CVAL in the past, shows ISTATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerOutcome {
    /// The CVAL written.
    pub cval: u64,
    /// CVAL read back, or the fault of the first access that failed.
    pub cval_read: Result<u64, Fault>,
    /// CNTP_CTL_EL0 after enabling with IMASK and CVAL = 0, or the fault.
    pub ctl_fired: Result<u64, Fault>,
}

/// CNTP_CTL_EL0.ISTATUS.
pub const CNTP_ISTATUS: u64 = 1 << 2;

impl Outcome for TimerOutcome {
    fn verdict(&self) -> Verdict {
        Verdict::of(
            self.cval_read == Ok(self.cval)
                && matches!(self.ctl_fired, Ok(ctl) if ctl & CNTP_ISTATUS != 0),
        )
    }
}

/// `cval=<written> read=<value|fault> ctl-after-fire=<value|fault>`.
impl fmt::Display for TimerOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cval={:#x} read=", self.cval)?;
        match self.cval_read {
            Ok(v) => write!(f, "{v:#x}")?,
            Err(fault) => write!(f, "({fault})")?,
        }
        f.write_str(" ctl-after-fire=")?;
        match self.ctl_fired {
            Ok(v) => write!(f, "{v:#x}"),
            Err(fault) => write!(f, "({fault})"),
        }
    }
}

/// The encodings the bare side needs by name.
pub mod encodings {
    use super::Encoding;
    /// CNTP_TVAL_EL0.
    pub const CNTP_TVAL: Encoding = Encoding {
        op0: 3,
        op1: 3,
        crn: 14,
        crm: 2,
        op2: 0,
    };
    /// CNTP_CTL_EL0.
    pub const CNTP_CTL: Encoding = Encoding {
        op0: 3,
        op1: 3,
        crn: 14,
        crm: 2,
        op2: 1,
    };
    /// CNTP_CVAL_EL0.
    pub const CNTP_CVAL: Encoding = Encoding {
        op0: 3,
        op1: 3,
        crn: 14,
        crm: 2,
        op2: 2,
    };
    /// An IMPLEMENTATION DEFINED register (S3_0_C15_C0_0).
    pub const IMPDEF: Encoding = Encoding {
        op0: 3,
        op1: 0,
        crn: 15,
        crm: 0,
        op2: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Line;

    fn line(outcome: &impl Outcome) -> String {
        Line(outcome).to_string()
    }

    #[test]
    fn instruction_words_match_the_assembler() {
        // `mrs x0, S3_0_C15_C0_0` and `msr S3_0_C15_C0_0, x0` as GNU as encodes them.
        let impdef = SYSREGS[0].encoding;
        assert_eq!(impdef.instruction(true, 0), 0xd538_f000);
        assert_eq!(impdef.instruction(false, 0), 0xd518_f000);
        // `mrs x1, cntp_ctl_el0` = 0xd53be221; `msr icc_sgi1r_el1, x0` = 0xd518cba0;
        // `mrs x0, mdrar_el1` = 0xd5301000.
        let find = |name: &str| {
            SYSREGS
                .iter()
                .find(|c| c.names[0] == name)
                .unwrap()
                .encoding
        };
        assert_eq!(
            find("sysreg-cntp-ctl-el0-read").instruction(true, 1),
            0xd53b_e221
        );
        assert_eq!(
            find("sysreg-icc-sgi1r-el1-read").instruction(false, 0),
            0xd518_cba0
        );
        assert_eq!(
            find("sysreg-mdrar-el1-read").instruction(true, 0),
            0xd530_1000
        );
        assert_eq!(impdef.to_string(), "S3_0_C15_C0_0");
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut names: Vec<&str> = SYSREGS.iter().flat_map(|c| c.names).collect();
        names.extend(ABORTS.iter().map(|c| c.name));
        names.extend(CALLS.iter().map(|c| c.name));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "duplicate attack names");
        assert!(names.iter().all(|n| n.len() < 48 && !n.contains(',')));
        assert!(count >= 100, "the sweeps alone give {count} attacks");
    }

    const UNDEF: Fault = Fault::Exception {
        esr: 0x200_0000,
        far: 0,
    };

    #[test]
    fn sysreg_verdicts() {
        let impdef = SYSREGS[0];
        let outcome = |case, write, result| SysregOutcome {
            case,
            write,
            result,
        };
        assert_eq!(
            line(&outcome(impdef, false, Err(UNDEF))),
            "contained mrs S3_0_C15_C0_0 undefined esr=0x2000000"
        );
        assert_eq!(
            line(&outcome(impdef, false, Ok(7))),
            "NOT-CONTAINED mrs S3_0_C15_C0_0 returned 0x7"
        );
        assert_eq!(
            line(&outcome(impdef, true, Ok(0))),
            "NOT-CONTAINED msr S3_0_C15_C0_0 completed"
        );
        let abort = Fault::Exception {
            esr: 0x9600_0010,
            far: 0x10,
        };
        assert_eq!(
            line(&outcome(impdef, true, Err(abort))),
            "NOT-CONTAINED msr S3_0_C15_C0_0 fault data-abort esr=0x96000010 far=0x10"
        );
        let timer = SYSREGS
            .iter()
            .find(|c| c.expect == SysregExpect::Owned)
            .unwrap();
        assert_eq!(outcome(*timer, true, Ok(0)).verdict(), Verdict::Contained);
        assert_eq!(
            outcome(*timer, false, Err(UNDEF)).verdict(),
            Verdict::NotContained
        );
        let sgi = SYSREGS
            .iter()
            .find(|c| c.expect == SysregExpect::EmulatedOrUndefined)
            .unwrap();
        assert_eq!(outcome(*sgi, true, Ok(0)).verdict(), Verdict::Contained);
        assert_eq!(
            outcome(*sgi, false, Err(UNDEF)).verdict(),
            Verdict::Contained
        );
        assert_eq!(
            outcome(*sgi, false, Err(abort)).verdict(),
            Verdict::NotContained
        );
        assert_eq!(
            outcome(impdef, false, Err(Fault::Unaddressable)).verdict(),
            Verdict::Unverified
        );
    }

    #[test]
    fn abort_verdicts_need_class_fsc_and_far() {
        let ld = ABORTS[3];
        assert_eq!(ld.name, "abort-ldr64-past-ram");
        let at = 0x4400_0000;
        let outcome = |case, result| AbortOutcome {
            case,
            addr: at,
            result,
        };
        let sea = |esr, far| Err(Fault::Exception { esr, far });
        assert_eq!(
            line(&outcome(ld, sea(0x9600_0010, at))),
            "contained ldr64 0x44000000 external-abort esr=0x96000010 far=0x44000000"
        );
        // A translation fault, another FAR, a lower-EL class: not the architected answer.
        assert_eq!(
            outcome(ld, sea(0x9600_0007, at)).verdict(),
            Verdict::NotContained
        );
        assert_eq!(
            outcome(ld, sea(0x9600_0010, at + 8)).verdict(),
            Verdict::NotContained
        );
        assert_eq!(
            outcome(ld, sea(0x9200_0010, at)).verdict(),
            Verdict::NotContained
        );
        assert_eq!(
            line(&outcome(ld, Ok(5))),
            "NOT-CONTAINED ldr64 0x44000000 returned 0x5"
        );
        let ldp = ABORTS
            .iter()
            .find(|c| c.name == "abort-ldp-past-ram")
            .unwrap();
        assert_eq!(
            outcome(*ldp, sea(0x9600_0010, at + 8)).verdict(),
            Verdict::Contained
        );
        let fetch = ABORTS
            .iter()
            .find(|c| c.name == "abort-fetch-past-ram-mmu-off")
            .unwrap();
        assert_eq!(
            line(&outcome(*fetch, sea(0x8600_0010, at))),
            "contained fetch 0x44000000 mmu-off external-abort esr=0x86000010 far=0x44000000"
        );
        assert_eq!(
            outcome(*fetch, sea(0x9600_0010, at)).verdict(),
            Verdict::NotContained
        );
        let st = ABORTS
            .iter()
            .find(|c| c.name == "abort-str32-hole")
            .unwrap();
        assert_eq!(
            line(&outcome(*st, Ok(0))),
            "NOT-CONTAINED str32 0x44000000 completed"
        );
        let stxr = ABORTS.iter().find(|c| c.op == AccessOp::Stxr).unwrap();
        assert_eq!(
            line(&outcome(*stxr, Ok(1))),
            "contained stxr 0x44000000 status=1"
        );
        assert_eq!(outcome(*stxr, Ok(0)).verdict(), Verdict::NotContained);
        let uart = ABORTS.iter().find(|c| c.place == Place::OwnUart).unwrap();
        assert_eq!(outcome(*uart, Ok(0x90)).verdict(), Verdict::Contained);
        assert_eq!(
            outcome(*uart, sea(0x9600_0010, at)).verdict(),
            Verdict::Contained
        );
        assert_eq!(outcome(*uart, Err(UNDEF)).verdict(), Verdict::NotContained);
        assert_eq!(
            line(&outcome(ld, Err(Fault::Unaddressable))),
            "NOT-CONTAINED unverified ldr64 0x44000000 unaddressable"
        );
    }

    #[test]
    fn calls_must_be_refused() {
        let outcome = CallSweepOutcome {
            case: CALLS[0],
            args: [0x100, 0],
            ret: Ok(-1),
            in_slice: false,
        };
        assert_eq!(
            line(&outcome),
            "contained hvc 0xc4000005(0x100,0x0) returned -1 NOT_SUPPORTED"
        );
        assert_eq!(
            CallSweepOutcome {
                ret: Ok(-4),
                ..outcome
            }
            .verdict(),
            Verdict::Contained
        );
        assert_eq!(
            CallSweepOutcome {
                ret: Ok(0),
                ..outcome
            }
            .verdict(),
            Verdict::NotContained
        );
        let undefined = CallSweepOutcome {
            ret: Err(UNDEF),
            ..outcome
        };
        assert_eq!(
            line(&undefined),
            "contained hvc 0xc4000005(0x100,0x0) undefined esr=0x2000000"
        );
        let abort = Fault::Exception {
            esr: 0x9600_0010,
            far: 0,
        };
        assert_eq!(
            CallSweepOutcome {
                ret: Err(abort),
                ..outcome
            }
            .verdict(),
            Verdict::NotContained
        );
        assert!(not_supported(-1));
    }

    #[test]
    fn in_a_slice_every_smc_is_the_hypervisors_not_supported() {
        let smc = *CALLS
            .iter()
            .find(|c| c.conduit == CallConduit::Smc)
            .unwrap();
        let outcome = |ret, in_slice| CallSweepOutcome {
            case: smc,
            args: [0, 0],
            ret,
            in_slice,
        };
        assert_eq!(outcome(Ok(-1), true).verdict(), Verdict::Contained);
        // What the firmware would answer (no TSC): UNDEFINED, or another refusal.
        assert_eq!(outcome(Err(UNDEF), true).verdict(), Verdict::NotContained);
        assert_eq!(outcome(Ok(-2), true).verdict(), Verdict::NotContained);
        // Natively the firmware's answers are the reference.
        assert_eq!(outcome(Err(UNDEF), false).verdict(), Verdict::Contained);
        // HVC calls in a slice keep the general rule (PSCI answers other refusals).
        let hvc = CallSweepOutcome {
            case: CALLS[0],
            args: [0, 0],
            ret: Ok(-4),
            in_slice: true,
        };
        assert_eq!(hvc.verdict(), Verdict::Contained);
    }

    #[test]
    fn tally_line() {
        let mut tally = Tally::default();
        assert_eq!(
            tally.to_string(),
            "ATTACKS 0 contained 0 not-contained 0 unverified 0"
        );
        for v in [
            Verdict::Contained,
            Verdict::Contained,
            Verdict::NotContained,
            Verdict::Unverified,
        ] {
            tally.record(v);
        }
        assert_eq!(
            tally.to_string(),
            "ATTACKS 4 contained 2 not-contained 1 unverified 1"
        );
    }

    #[test]
    fn race_verdicts() {
        let race = RaceOutcome {
            racer: Some(1),
            rounds: 100,
            racer_rounds: 40,
            expected: 100,
            racer_other: 0,
            first_other: None,
        };
        assert_eq!(
            line(&race),
            "contained racer=1 rounds=100 racer-rounds=40 expected=100 racer-other=0"
        );
        let bad = RaceOutcome {
            expected: 99,
            first_other: Some(Ok(3)),
            ..race
        };
        assert_eq!(
            line(&bad),
            "NOT-CONTAINED racer=1 rounds=100 racer-rounds=40 expected=99 racer-other=0 first-other=returned(0x3)"
        );
        assert_eq!(
            RaceOutcome {
                racer_other: 1,
                ..race
            }
            .verdict(),
            Verdict::NotContained
        );
        assert_eq!(
            line(&RaceOutcome {
                racer: None,
                ..race
            }),
            "NOT-CONTAINED unverified no-spare-vcpu"
        );
        assert_eq!(
            RaceOutcome {
                racer_rounds: 0,
                ..race
            }
            .verdict(),
            Verdict::Unverified
        );
    }

    #[test]
    fn timer_verdicts() {
        let own = TimerOutcome {
            cval: 0x1234,
            cval_read: Ok(0x1234),
            ctl_fired: Ok(0b111),
        };
        assert_eq!(
            line(&own),
            "contained cval=0x1234 read=0x1234 ctl-after-fire=0x7"
        );
        assert_eq!(
            TimerOutcome {
                ctl_fired: Ok(0b011),
                ..own
            }
            .verdict(),
            Verdict::NotContained
        );
        assert_eq!(
            line(&TimerOutcome {
                cval_read: Err(UNDEF),
                ..own
            }),
            "NOT-CONTAINED cval=0x1234 read=(fault unknown esr=0x2000000) ctl-after-fire=0x7"
        );
        assert_eq!(
            encodings::CNTP_CTL,
            SYSREGS
                .iter()
                .find(|c| c.names[0] == "sysreg-cntp-ctl-el0-read")
                .unwrap()
                .encoding
        );
    }

    #[test]
    fn el0_verdicts() {
        let va = 0x60_0400_0000;
        let outcome = |op: usize, result| El0Outcome {
            case: EL0[op],
            va,
            ipa: 0x4400_0000,
            result,
        };
        let sea = |esr, far| Err(Fault::Exception { esr, far });
        assert_eq!(
            line(&outcome(0, sea(0x9200_0010, va))),
            "contained ldr64 el0 0x6004000000 ipa=0x44000000 external-abort-lower esr=0x92000010 far=0x6004000000"
        );
        // Taken as if from EL1, or another FSC: not what hardware gives.
        assert_eq!(
            outcome(0, sea(0x9600_0010, va)).verdict(),
            Verdict::NotContained
        );
        assert_eq!(
            outcome(1, sea(0x9200_0050, va)).verdict(),
            Verdict::Contained
        );
        assert_eq!(
            outcome(1, sea(0x9200_0007, va)).verdict(),
            Verdict::NotContained
        );
        assert_eq!(
            outcome(2, sea(0x8200_0010, va)).verdict(),
            Verdict::Contained
        );
        assert_eq!(
            outcome(2, sea(0x8600_0010, va)).verdict(),
            Verdict::NotContained
        );
        assert_eq!(
            line(&outcome(4, Err(UNDEF))),
            "contained hvc #0 el0 undefined esr=0x2000000"
        );
        assert_eq!(
            line(&outcome(3, Ok(0))),
            "NOT-CONTAINED mrs S3_0_C15_C0_0 el0 returned 0x0"
        );
        assert_eq!(
            line(&outcome(0, Err(Fault::Unaddressable))),
            "NOT-CONTAINED unverified ldr64 el0 0x6004000000 ipa=0x44000000 no-el0-alias"
        );
    }

    #[test]
    fn gic_mmio_verdicts() {
        let find = |name: &str| *GIC_MMIO.iter().find(|c| c.name == name).unwrap();
        let reserved = GicMmioOutcome {
            case: find("gicd-reserved-0x14"),
            written: None,
            read: Ok(0),
        };
        assert_eq!(
            line(&reserved),
            "contained read32 gicd+0x14 = 0x0 mask=0xffffffffffffffff"
        );
        assert_eq!(
            GicMmioOutcome {
                read: Ok(1),
                ..reserved
            }
            .verdict(),
            Verdict::NotContained
        );
        let sea = Fault::Exception {
            esr: 0x9600_0010,
            far: 0x801_0000,
        };
        assert_eq!(
            GicMmioOutcome {
                read: Err(sea),
                ..reserved
            }
            .verdict(),
            Verdict::Contained
        );
        assert_eq!(
            GicMmioOutcome {
                read: Err(UNDEF),
                ..reserved
            }
            .verdict(),
            Verdict::NotContained
        );
        let setspi = GicMmioOutcome {
            case: find("gicd-setspi-foreign"),
            written: Some(Ok(())),
            read: Ok(0x8000_0000),
        };
        assert_eq!(
            line(&setspi),
            "contained write32 gicd+0x40=0x3c ok; read32 gicd+0x204 = 0x80000000 mask=0x10000000"
        );
        assert_eq!(
            GicMmioOutcome {
                read: Ok(0x1000_0000),
                ..setspi
            }
            .verdict(),
            Verdict::NotContained
        );
        let refused = GicMmioOutcome {
            written: Some(Err(sea)),
            ..setspi
        };
        assert_eq!(
            line(&refused),
            "contained write32 gicd+0x40=0x3c fault data-abort esr=0x96000010 far=0x8010000"
        );
        let prop = GicMmioOutcome {
            case: find("gicr-propbaser-outside"),
            written: Some(Ok(())),
            read: Ok(0x8000_000f),
        };
        assert_eq!(prop.verdict(), Verdict::NotContained);
        assert_eq!(
            GicMmioOutcome {
                read: Ok(0xf),
                ..prop
            }
            .verdict(),
            Verdict::Contained
        );
        assert!(GIC_MMIO.iter().all(|c| c.name.starts_with("gic")));
    }

    #[test]
    fn pci_verdicts() {
        let outcome = PciOutcome {
            case: PCI_SWEEP[7],
            bus: 0,
            written: Some(Ok(())),
            read: Ok(u32::MAX),
        };
        assert_eq!(
            line(&outcome),
            "contained write 00:02.0+0x4=0x6 ok; read 00:02.0+0x4 = 0xffffffff"
        );
        assert_eq!(
            PciOutcome {
                read: Ok(0x6),
                ..outcome
            }
            .verdict(),
            Verdict::NotContained
        );
        let sea = Fault::Exception {
            esr: 0x9600_0050,
            far: 0x100_0000,
        };
        assert_eq!(
            PciOutcome {
                written: Some(Err(sea)),
                ..outcome
            }
            .verdict(),
            Verdict::Contained
        );
        let none = PciOutcome {
            case: PCI_SWEEP[0],
            bus: 0,
            written: None,
            read: Err(Fault::Unaddressable),
        };
        assert_eq!(line(&none), "NOT-CONTAINED unverified no-pci-host");
        assert_eq!(
            line(&PciOutcome {
                read: Ok(0x1234_5678),
                ..none
            }),
            "NOT-CONTAINED read 00:00.7+0x0 = 0x12345678"
        );
    }
}
