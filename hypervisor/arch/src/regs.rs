//! System registers that `aarch64-cpu` does not define, in the same tock-registers style
//! (`Readable`/`Writeable` on a unit struct). Encodings from the Arm ARM, chapter D24 and the
//! GICv3 architecture specification, chapter 12.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;

/// Defines a 64-bit system register accessed by its `S<op0>_<op1>_C<n>_C<m>_<op2>` name.
macro_rules! system_register {
    ($(#[$doc:meta])* $name:ident, $encoding:literal, $fields:ty, read) => {
        $(#[$doc])*
        pub struct $name;
        impl Readable for $name {
            type T = u64;
            type R = $fields;
            #[inline]
            fn get(&self) -> u64 {
                let value;
                // SAFETY: reading this system register has no side effect on memory; the
                // hypervisor runs at EL2 where the register is accessible.
                unsafe { core::arch::asm!(concat!("mrs {}, ", $encoding), out(reg) value, options(nomem, nostack)) };
                value
            }
        }
    };
    ($(#[$doc:meta])* $name:ident, $encoding:literal, $fields:ty, write) => {
        $(#[$doc])*
        pub struct $name;
        impl Writeable for $name {
            type T = u64;
            type R = $fields;
            #[inline]
            fn set(&self, value: u64) {
                // SAFETY: writing this register changes only interrupt/CPU-interface or
                // virtualization state that the caller manages; it does not touch memory.
                unsafe { core::arch::asm!(concat!("msr ", $encoding, ", {}"), in(reg) value, options(nomem, nostack)) };
            }
        }
    };
    ($(#[$doc:meta])* $name:ident, $encoding:literal, $fields:ty, read_write) => {
        system_register!($(#[$doc])* $name, $encoding, $fields, read);
        impl Writeable for $name {
            type T = u64;
            type R = $fields;
            #[inline]
            fn set(&self, value: u64) {
                // SAFETY: as above: no memory is touched; the caller owns this core's state.
                unsafe { core::arch::asm!(concat!("msr ", $encoding, ", {}"), in(reg) value, options(nomem, nostack)) };
            }
        }
    };
}

register_bitfields![u64,
    /// ICC_SGI1R_EL1 (GICv3 §12.2.23).
    pub SGI1R [
        TARGET_LIST OFFSET(0) NUMBITS(16) [],
        AFF1 OFFSET(16) NUMBITS(8) [],
        INTID OFFSET(24) NUMBITS(4) [],
        AFF2 OFFSET(32) NUMBITS(8) [],
        /// Interrupt routing mode: 1 = all PEs but self.
        IRM OFFSET(40) NUMBITS(1) [],
        /// Range selector: TARGET_LIST covers Aff0 = RS * 16 .. RS * 16 + 15.
        RS OFFSET(44) NUMBITS(4) [],
        AFF3 OFFSET(48) NUMBITS(8) []
    ],
    /// Registers used as plain 64-bit values.
    pub RAW [
        VALUE OFFSET(0) NUMBITS(64) []
    ]
];

system_register!(
    /// Generate a Group 1 SGI (GICv3 §12.2.23).
    IccSgi1rEl1, "S3_0_C12_C11_5", SGI1R::Register, write);
system_register!(
    /// Acknowledge the highest-priority pending Group 1 interrupt (GICv3 §12.2.14).
    IccIar1El1, "S3_0_C12_C12_0", RAW::Register, read);
system_register!(
    /// End of interrupt, Group 1 (GICv3 §12.2.10).
    IccEoir1El1, "S3_0_C12_C12_1", RAW::Register, write);
system_register!(
    /// Deactivate interrupt (GICv3 §12.2.7), used with EOImode = 1.
    IccDirEl1, "S3_0_C12_C11_1", RAW::Register, write);
system_register!(
    /// CPU interface control (GICv3 §12.2.6): EOImode is bit 1.
    IccCtlrEl1, "S3_0_C12_C12_4", RAW::Register, read_write);
system_register!(
    /// Priority mask (GICv3 §12.2.19).
    IccPmrEl1, "S3_0_C4_C6_0", RAW::Register, read_write);
system_register!(
    /// Binary point, Group 1 (GICv3 §12.2.5).
    IccBpr1El1, "S3_0_C12_C12_3", RAW::Register, write);
system_register!(
    /// Group 1 interrupt enable (GICv3 §12.2.13).
    IccIgrpen1El1, "S3_0_C12_C12_7", RAW::Register, write);
system_register!(
    /// End of interrupt status (GICv3 §12.4.4): bit n set when list register n holds a
    /// deactivated interrupt that asks for an EOI maintenance interrupt.
    IchEisrEl2, "S3_4_C12_C11_3", RAW::Register, read);
system_register!(
    /// Empty list register status (GICv3 §12.4.5): bit n set when list register n holds no
    /// valid interrupt.
    IchElrsrEl2, "S3_4_C12_C11_5", RAW::Register, read);
system_register!(
    /// Virtualization processor ID: what MIDR_EL1 reads return at EL1 (Arm ARM D24.2.187).
    VpidrEl2, "S3_4_C0_C0_0", RAW::Register, write);
system_register!(
    /// SVE control at EL2: maximum vector length for lower ELs (Arm ARM D24.2.209).
    ZcrEl2, "S3_4_C1_C2_0", RAW::Register, write);
system_register!(
    /// SME control at EL2: maximum streaming vector length, FA64, ZT0 (Arm ARM D24.2.172).
    SmcrEl2, "S3_4_C1_C2_6", RAW::Register, write);
system_register!(
    /// AArch64 instruction set attribute register 2 (Arm ARM D24.2.81).
    IdAa64isar2El1, "S3_0_C0_C6_2", RAW::Register, read);
system_register!(
    /// SME feature ID register 0 (Arm ARM D24.2.86); reads as zero without SME (ID space).
    IdAa64smfr0El1, "S3_0_C0_C4_5", RAW::Register, read);
system_register!(
    /// Performance monitors control (Arm ARM D24.5.7); UNDEFINED without a PMUv3. At EL2,
    /// PMCR_EL0.N is the number of counters implemented.
    PmcrEl0, "S3_3_C9_C12_0", RAW::Register, read);

pub static ICC_SGI1R_EL1: IccSgi1rEl1 = IccSgi1rEl1;
pub static ICC_IAR1_EL1: IccIar1El1 = IccIar1El1;
pub static ICC_EOIR1_EL1: IccEoir1El1 = IccEoir1El1;
pub static ICC_DIR_EL1: IccDirEl1 = IccDirEl1;
pub static ICC_CTLR_EL1: IccCtlrEl1 = IccCtlrEl1;
pub static ICC_PMR_EL1: IccPmrEl1 = IccPmrEl1;
pub static ICC_BPR1_EL1: IccBpr1El1 = IccBpr1El1;
pub static ICC_IGRPEN1_EL1: IccIgrpen1El1 = IccIgrpen1El1;
pub static ICH_EISR_EL2: IchEisrEl2 = IchEisrEl2;
pub static ICH_ELRSR_EL2: IchElrsrEl2 = IchElrsrEl2;
pub static VPIDR_EL2: VpidrEl2 = VpidrEl2;
pub static ZCR_EL2: ZcrEl2 = ZcrEl2;
pub static SMCR_EL2: SmcrEl2 = SmcrEl2;
pub static ID_AA64ISAR2_EL1: IdAa64isar2El1 = IdAa64isar2El1;
pub static ID_AA64SMFR0_EL1: IdAa64smfr0El1 = IdAa64smfr0El1;
pub static PMCR_EL0: PmcrEl0 = PmcrEl0;
