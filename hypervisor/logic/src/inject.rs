//! Synchronous exceptions the hypervisor delivers to a guest's EL1 where hardware without a
//! hypervisor would have raised them (DESIGN.md §4, "Faults"): a synchronous external abort
//! for an access to an address nothing answers, an Undefined Instruction exception for a
//! system register the slice does not have.
//!
//! Delivering one is what the PE itself does on exception entry to EL1 (Arm ARM D1.3.2,
//! "Exception entry", and the pseudocode `AArch64.TakeException`): ELR_EL1 gets the address of
//! the instruction, SPSR_EL1 the PSTATE it ran with, ESR_EL1 the syndrome (D24.2.40) and, for
//! an abort, FAR_EL1 the faulting virtual address; execution goes on at VBAR_EL1 plus the
//! offset of the vector for where the exception came from, in EL1h with D, A, I and F masked.
//! The architecture layer reads and writes those registers; this module decides their values.

/// The exception to deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestException {
    /// Synchronous external abort on a data access (ESR EC 0x24/0x25, DFSC 0b010000).
    DataAbort { write: bool },
    /// Synchronous external abort on an instruction fetch (EC 0x20/0x21, IFSC 0b010000).
    InstructionAbort,
    /// Undefined Instruction (EC 0x00, "unknown reason"), as for an unimplemented system
    /// register encoding.
    Undefined,
}

impl GuestException {
    /// Short name for console lines and counters.
    pub fn name(self) -> &'static str {
        match self {
            GuestException::DataAbort { .. } | GuestException::InstructionAbort => {
                "synchronous external abort"
            }
            GuestException::Undefined => "undefined instruction",
        }
    }
}

/// The guest state the delivery depends on, as it was when the guest trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trapped {
    /// Address of the instruction that trapped (ELR_EL2 for an abort or system register trap).
    pub pc: u64,
    /// PSTATE it ran with (SPSR_EL2).
    pub pstate: u64,
    /// ESR_EL2.IL: a 32-bit instruction (else a 16-bit T32 one).
    pub instruction_32bit: bool,
    /// VBAR_EL1.
    pub vbar: u64,
    /// SCTLR_EL1 (SPAN and DSSBS decide bits of the new PSTATE).
    pub sctlr: u64,
}

/// Features of the PE that decide which PSTATE bits exception entry sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryFeatures {
    /// FEAT_PAN (ID_AA64MMFR1_EL1.PAN != 0).
    pub pan: bool,
    /// FEAT_SSBS (ID_AA64PFR1_EL1.SSBS != 0).
    pub ssbs: bool,
    /// FEAT_MTE2 or later (ID_AA64PFR1_EL1.MTE >= 2): PSTATE.TCO exists.
    pub mte: bool,
}

impl EntryFeatures {
    /// From ID_AA64MMFR1_EL1 and ID_AA64PFR1_EL1.
    pub fn from_id_registers(aa64mmfr1: u64, aa64pfr1: u64) -> Self {
        let field = |value: u64, shift: u32| (value >> shift) & 0xf;
        EntryFeatures {
            pan: field(aa64mmfr1, 20) != 0,
            ssbs: field(aa64pfr1, 4) != 0,
            mte: field(aa64pfr1, 8) >= 2,
        }
    }
}

/// What the guest's registers become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1, for aborts (left alone otherwise: UNKNOWN architecturally).
    pub far: Option<u64>,
    /// ELR_EL1: the instruction that trapped.
    pub elr: u64,
    /// SPSR_EL1: the PSTATE it ran with.
    pub spsr: u64,
    /// Where the guest resumes: its vector.
    pub pc: u64,
    /// The PSTATE it resumes with.
    pub pstate: u64,
}

/// Why an exception cannot be delivered as hardware would: the slice's `on-fault` policy
/// decides then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undeliverable {
    /// The trap came from a mode the guest's EL1 cannot take an exception from (EL2/EL3
    /// encodings in SPSR_EL2 are impossible for a guest; kept for robustness).
    FromMode(u64),
    /// The instruction fetch that failed was of the guest's own exception vector: delivering
    /// the abort would fail the same way forever.
    VectorUnreachable { vbar: u64 },
}

impl core::fmt::Display for Undeliverable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Undeliverable::FromMode(mode) => {
                write!(f, "cannot be delivered from PSTATE mode {mode:#x}")
            }
            Undeliverable::VectorUnreachable { vbar } => write!(
                f,
                "the guest's exception vector (VBAR_EL1 {vbar:#x}) is itself outside its RAM"
            ),
        }
    }
}

/// ESR_ELx fields (Arm ARM D24.2.40).
mod esr {
    pub const EC_SHIFT: u32 = 26;
    pub const IL: u64 = 1 << 25;
    pub const EC_UNKNOWN: u64 = 0x00;
    pub const EC_IABT_LOWER: u64 = 0x20;
    pub const EC_IABT_SAME: u64 = 0x21;
    pub const EC_DABT_LOWER: u64 = 0x24;
    pub const EC_DABT_SAME: u64 = 0x25;
    /// ISS.WnR of a data abort.
    pub const WNR: u64 = 1 << 6;
    /// DFSC/IFSC 0b010000: synchronous external abort, not on a translation table walk.
    pub const FSC_EXTERNAL: u64 = 0x10;
}

/// PSTATE/SPSR_EL1 fields of AArch64 (Arm ARM C5.2.19).
mod spsr {
    /// M[4]: the exception came from AArch32.
    pub const AARCH32: u64 = 1 << 4;
    /// M[3:0] of EL0t, EL1t and EL1h.
    pub const MODE: u64 = 0xf;
    pub const EL0T: u64 = 0b0000;
    pub const EL1T: u64 = 0b0100;
    pub const EL1H: u64 = 0b0101;
    /// D, A, I, F.
    pub const DAIF: u64 = 0xf << 6;
    pub const SSBS: u64 = 1 << 12;
    pub const PAN: u64 = 1 << 22;
    pub const DIT: u64 = 1 << 24;
    /// AArch32's CPSR.DIT.
    pub const DIT_AARCH32: u64 = 1 << 21;
    pub const TCO: u64 = 1 << 25;
    pub const NZCV: u64 = 0xf << 28;
}

/// SCTLR_EL1 fields that exception entry reads.
mod sctlr {
    /// 0: PSTATE.PAN is set on exception entry to EL1.
    pub const SPAN: u64 = 1 << 23;
    /// The value PSTATE.SSBS takes on exception entry to EL1.
    pub const DSSBS: u64 = 1 << 44;
}

/// Vector offsets from VBAR_EL1 for a synchronous exception (Arm ARM D1.3.1, table D1-7).
const VECTOR_CURRENT_SP0: u64 = 0x000;
const VECTOR_CURRENT_SPX: u64 = 0x200;
const VECTOR_LOWER_AARCH64: u64 = 0x400;
const VECTOR_LOWER_AARCH32: u64 = 0x600;
/// Size of the whole vector table.
const VECTOR_TABLE_SIZE: u64 = 0x800;

/// The registers the guest's EL1 sees after `exception` is taken at `trapped`; `far` is the
/// faulting virtual address of an abort (FAR_EL2).
pub fn entry(
    exception: GuestException,
    trapped: Trapped,
    far: u64,
    features: EntryFeatures,
) -> Result<Entry, Undeliverable> {
    let mode = trapped.pstate & (spsr::AARCH32 | spsr::MODE);
    let (offset, from_el0) = match mode {
        m if m & spsr::AARCH32 != 0 => {
            // An AArch32 EL0 (User mode, M[3:0] = 0); a guest EL1 is always AArch64
            // (HCR_EL2.RW = 1), so any other AArch32 mode is impossible.
            if m & spsr::MODE != 0 {
                return Err(Undeliverable::FromMode(m));
            }
            (VECTOR_LOWER_AARCH32, true)
        }
        spsr::EL0T => (VECTOR_LOWER_AARCH64, true),
        spsr::EL1T => (VECTOR_CURRENT_SP0, false),
        spsr::EL1H => (VECTOR_CURRENT_SPX, false),
        other => return Err(Undeliverable::FromMode(other)),
    };
    // VBAR_EL1[10:0] are RES0.
    let vbar = trapped.vbar & !(VECTOR_TABLE_SIZE - 1);
    let vector = vbar.wrapping_add(offset);
    if exception == GuestException::InstructionAbort && far.wrapping_sub(vbar) < VECTOR_TABLE_SIZE {
        return Err(Undeliverable::VectorUnreachable { vbar });
    }

    let class = match (exception, from_el0) {
        (GuestException::Undefined, _) => esr::EC_UNKNOWN,
        (GuestException::DataAbort { .. }, true) => esr::EC_DABT_LOWER,
        (GuestException::DataAbort { .. }, false) => esr::EC_DABT_SAME,
        (GuestException::InstructionAbort, true) => esr::EC_IABT_LOWER,
        (GuestException::InstructionAbort, false) => esr::EC_IABT_SAME,
    };
    let iss = match exception {
        GuestException::Undefined => 0,
        GuestException::DataAbort { write } => esr::FSC_EXTERNAL | if write { esr::WNR } else { 0 },
        GuestException::InstructionAbort => esr::FSC_EXTERNAL,
    };
    // IL is 1 for aborts on 32-bit instructions and for EC 0x00 (Arm ARM D24.2.40: "IL is
    // RES1 for ... exceptions with EC 0x00"); an instruction abort's IL is RES1 too.
    let il = match exception {
        GuestException::DataAbort { .. } if !trapped.instruction_32bit => 0,
        _ => esr::IL,
    };
    let esr = class << esr::EC_SHIFT | il | iss;
    let far = match exception {
        GuestException::Undefined => None,
        _ => Some(far),
    };
    Ok(Entry {
        esr,
        far,
        elr: trapped.pc,
        spsr: trapped.pstate,
        pc: vector,
        pstate: entry_pstate(trapped, features),
    })
}

/// PSTATE on entry to EL1h (`AArch64.TakeException`): NZCV and DIT kept, D, A, I and F set,
/// SS, IL, BTYPE, UAO and ALLINT cleared, PAN set unless SCTLR_EL1.SPAN, SSBS from
/// SCTLR_EL1.DSSBS, TCO set (with MTE).
fn entry_pstate(trapped: Trapped, features: EntryFeatures) -> u64 {
    let old = trapped.pstate;
    let mut pstate = spsr::EL1H | spsr::DAIF | old & spsr::NZCV;
    let dit = if old & spsr::AARCH32 != 0 {
        old & spsr::DIT_AARCH32 != 0
    } else {
        old & spsr::DIT != 0
    };
    if dit {
        pstate |= spsr::DIT;
    }
    if features.pan && (trapped.sctlr & sctlr::SPAN == 0 || old & spsr::PAN != 0) {
        pstate |= spsr::PAN;
    }
    if features.ssbs && trapped.sctlr & sctlr::DSSBS != 0 {
        pstate |= spsr::SSBS;
    }
    if features.mte {
        pstate |= spsr::TCO;
    }
    pstate
}

#[cfg(test)]
mod tests {
    use super::*;

    const EL1H_MASKED: u64 = 0x3c5;
    const VBAR: u64 = 0xffff_8000_1001_0800;

    fn trapped(pstate: u64) -> Trapped {
        Trapped {
            pc: 0xffff_8000_1234_5678,
            pstate,
            instruction_32bit: true,
            vbar: VBAR,
            sctlr: sctlr::SPAN,
        }
    }

    #[test]
    fn a_load_at_el1h_is_a_same_level_data_abort_at_vbar_plus_0x200() {
        let e = entry(
            GuestException::DataAbort { write: false },
            trapped(0x6000_0005),
            0xdead_0000,
            EntryFeatures::default(),
        )
        .unwrap();
        assert_eq!(e.esr, 0x25 << 26 | 1 << 25 | 0x10);
        assert_eq!(e.far, Some(0xdead_0000));
        assert_eq!(e.elr, 0xffff_8000_1234_5678);
        assert_eq!(e.spsr, 0x6000_0005);
        assert_eq!(e.pc, VBAR + 0x200);
        assert_eq!(e.pstate, 0x6000_0000 | EL1H_MASKED, "NZCV kept, EL1h, DAIF");
    }

    #[test]
    fn a_store_from_el0_is_a_lower_level_data_abort_with_wnr_at_vbar_plus_0x400() {
        let e = entry(
            GuestException::DataAbort { write: true },
            trapped(0),
            0x1000,
            EntryFeatures::default(),
        )
        .unwrap();
        assert_eq!(e.esr, 0x24 << 26 | 1 << 25 | 1 << 6 | 0x10);
        assert_eq!(e.pc, VBAR + 0x400);
    }

    #[test]
    fn el1t_and_aarch32_el0_use_their_own_vectors() {
        let at = |pstate| {
            entry(
                GuestException::Undefined,
                trapped(pstate),
                0,
                EntryFeatures::default(),
            )
            .unwrap()
            .pc
        };
        assert_eq!(at(0b0100), VBAR);
        assert_eq!(at(0b1_0000), VBAR + 0x600);
    }

    #[test]
    fn undefined_has_class_zero_il_set_and_no_far() {
        let e = entry(
            GuestException::Undefined,
            trapped(0x3c5),
            0x55,
            EntryFeatures::default(),
        )
        .unwrap();
        assert_eq!(e.esr, 1 << 25);
        assert_eq!(e.far, None);
        assert_eq!(e.elr, trapped(0).pc, "the instruction itself, not skipped");
    }

    #[test]
    fn instruction_aborts_report_the_fetched_address() {
        let e = entry(
            GuestException::InstructionAbort,
            trapped(0x5),
            0x8000_0000,
            EntryFeatures::default(),
        )
        .unwrap();
        assert_eq!(e.esr, 0x21 << 26 | 1 << 25 | 0x10);
        assert_eq!(e.far, Some(0x8000_0000));
        let from_el0 = entry(
            GuestException::InstructionAbort,
            trapped(0),
            0x8000_0000,
            EntryFeatures::default(),
        )
        .unwrap();
        assert_eq!(from_el0.esr >> 26, 0x20);
    }

    #[test]
    fn a_16_bit_t32_load_has_il_clear() {
        let mut t = trapped(0b1_0000);
        t.instruction_32bit = false;
        let e = entry(
            GuestException::DataAbort { write: false },
            t,
            0,
            EntryFeatures::default(),
        )
        .unwrap();
        assert_eq!(e.esr & 1 << 25, 0);
        assert_eq!(e.esr >> 26, 0x24);
    }

    #[test]
    fn a_fetch_of_the_vector_itself_cannot_be_delivered() {
        for far in [VBAR, VBAR + 0x200, VBAR + 0x7fc] {
            assert_eq!(
                entry(
                    GuestException::InstructionAbort,
                    trapped(0x5),
                    far,
                    EntryFeatures::default()
                ),
                Err(Undeliverable::VectorUnreachable { vbar: VBAR })
            );
        }
        assert!(
            entry(
                GuestException::InstructionAbort,
                trapped(0x5),
                VBAR + 0x800,
                EntryFeatures::default()
            )
            .is_ok()
        );
        // A data abort near the vector is an ordinary one.
        assert!(
            entry(
                GuestException::DataAbort { write: false },
                trapped(0x5),
                VBAR,
                EntryFeatures::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn impossible_modes_are_refused() {
        for mode in [0b1000, 0b1001, 0b1101, 0b1_0011] {
            assert_eq!(
                entry(
                    GuestException::Undefined,
                    trapped(mode),
                    0,
                    EntryFeatures::default()
                ),
                Err(Undeliverable::FromMode(mode))
            );
        }
    }

    #[test]
    fn vbar_low_bits_are_ignored() {
        let mut t = trapped(0x5);
        t.vbar = VBAR | 0x7ff;
        let e = entry(GuestException::Undefined, t, 0, EntryFeatures::default()).unwrap();
        assert_eq!(e.pc, VBAR + 0x200);
    }

    #[test]
    fn pan_ssbs_tco_and_dit_follow_the_architecture() {
        let all = EntryFeatures {
            pan: true,
            ssbs: true,
            mte: true,
        };
        // SPAN = 0: PAN set on entry; DSSBS = 1: SSBS set; MTE: TCO set; DIT kept.
        let mut t = trapped(spsr::DIT | spsr::SSBS);
        t.sctlr = sctlr::DSSBS;
        let p = entry(GuestException::Undefined, t, 0, all).unwrap().pstate;
        assert_eq!(
            p,
            EL1H_MASKED | spsr::PAN | spsr::SSBS | spsr::TCO | spsr::DIT
        );
        // SPAN = 1 keeps PAN as it was; DSSBS = 0 clears SSBS.
        let mut t = trapped(spsr::SSBS);
        t.sctlr = sctlr::SPAN;
        assert_eq!(
            entry(GuestException::Undefined, t, 0, all).unwrap().pstate,
            EL1H_MASKED | spsr::TCO
        );
        let mut t = trapped(spsr::PAN);
        t.sctlr = sctlr::SPAN;
        assert_eq!(
            entry(GuestException::Undefined, t, 0, all).unwrap().pstate & spsr::PAN,
            spsr::PAN
        );
        // AArch32's DIT bit moves to AArch64's.
        let t = trapped(0b1_0000 | spsr::DIT_AARCH32);
        assert_eq!(
            entry(GuestException::Undefined, t, 0, EntryFeatures::default())
                .unwrap()
                .pstate,
            EL1H_MASKED | spsr::DIT
        );
        // Single step, IL, BTYPE and the interrupt masks' old values do not survive.
        let t = trapped(1 << 21 | 1 << 20 | 3 << 10 | 0x5);
        assert_eq!(
            entry(GuestException::Undefined, t, 0, EntryFeatures::default())
                .unwrap()
                .pstate,
            EL1H_MASKED
        );
    }

    #[test]
    fn features_come_from_the_id_registers() {
        assert_eq!(
            EntryFeatures::from_id_registers(3 << 20, 2 << 4 | 2 << 8),
            EntryFeatures {
                pan: true,
                ssbs: true,
                mte: true
            }
        );
        assert_eq!(
            EntryFeatures::from_id_registers(0, 1 << 8),
            EntryFeatures::default(),
            "MTE 1 (instructions only) has no TCO"
        );
    }
}
