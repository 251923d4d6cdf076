//! What the hypervisor may use of a core's vector units for its own bulk work (the bundle's
//! SHA-256, the RAM scrub): the features from the ID registers, and the CPTR_EL2 value under
//! which EL2 may execute them (Arm ARM D24.2: CPTR_EL2 with HCR_EL2.E2H = 0; ID_AA64PFR0_EL1,
//! ID_AA64PFR1_EL1, ID_AA64ISAR0_EL1). The architecture layer (`microvisor_arch::simd`) reads
//! and writes the registers; the hypervisor is built soft-float, so the compiler never touches
//! these registers and every routine that does saves and restores what it uses (a guest's
//! registers may be live on the core).

use tock_registers::{LocalRegisterCopy, register_bitfields};

use crate::el2::CPTR_EL2;

register_bitfields![u64,
    /// ID_AA64PFR0_EL1: the fields read here.
    pub PFR0 [
        /// FEAT_SVE.
        SVE OFFSET(32) NUMBITS(4) [],
        /// Advanced SIMD: 0 or 1 implemented, 0xF not implemented.
        ADVSIMD OFFSET(20) NUMBITS(4) [],
        /// Floating point: 0 or 1 implemented, 0xF not implemented.
        FP OFFSET(16) NUMBITS(4) []
    ],
    /// ID_AA64PFR1_EL1: the field read here.
    pub PFR1 [
        /// FEAT_SME.
        SME OFFSET(24) NUMBITS(4) []
    ],
    /// ID_AA64ISAR0_EL1: the field read here.
    pub ISAR0 [
        /// 1: SHA256H, SHA256H2, SHA256SU0, SHA256SU1 (FEAT_SHA256); 2: also SHA-512.
        SHA2 OFFSET(12) NUMBITS(4) []
    ]
];

/// ID field value of an FP or Advanced SIMD unit that is not implemented.
const NOT_IMPLEMENTED: u64 = 0xf;

/// The vector features of a core that the hypervisor's own routines use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimdFeatures {
    /// FP and Advanced SIMD.
    pub advsimd: bool,
    /// The SHA-256 instructions (they are Advanced SIMD instructions).
    pub sha256: bool,
    /// FEAT_SVE.
    pub sve: bool,
    /// FEAT_SME: the core may be in Streaming SVE mode (PSTATE.SM, read through SVCR), where
    /// Advanced SIMD and some SVE instructions are illegal.
    pub sme: bool,
}

impl SimdFeatures {
    /// The features `ID_AA64PFR0_EL1`, `ID_AA64PFR1_EL1` and `ID_AA64ISAR0_EL1` describe.
    pub fn from_id_registers(pfr0: u64, pfr1: u64, isar0: u64) -> SimdFeatures {
        let pfr0 = LocalRegisterCopy::<u64, PFR0::Register>::new(pfr0);
        let pfr1 = LocalRegisterCopy::<u64, PFR1::Register>::new(pfr1);
        let isar0 = LocalRegisterCopy::<u64, ISAR0::Register>::new(isar0);
        let advsimd =
            pfr0.read(PFR0::ADVSIMD) != NOT_IMPLEMENTED && pfr0.read(PFR0::FP) != NOT_IMPLEMENTED;
        SimdFeatures {
            advsimd,
            sha256: advsimd && isar0.read(ISAR0::SHA2) >= 1,
            // SVE requires FP and Advanced SIMD.
            sve: advsimd && pfr0.read(PFR0::SVE) != 0,
            sme: pfr1.read(PFR1::SME) != 0,
        }
    }

    /// The CPTR_EL2 under which EL2 may execute Advanced SIMD instructions (and SVE ones if
    /// `sve`), starting from `current`: FP not trapped, SVE not trapped when asked for, SME
    /// not trapped when the core has it (SVCR must be readable to check the mode). A trap
    /// bit of a feature the core lacks is RES1 and stays as it is; nothing else changes.
    /// `None` when the core lacks what is asked for.
    pub fn cptr_for(&self, current: u64, sve: bool) -> Option<u64> {
        if !self.advsimd || (sve && !self.sve) {
            return None;
        }
        let mut cptr = LocalRegisterCopy::<u64, CPTR_EL2::Register>::new(current);
        cptr.modify(CPTR_EL2::TFP::CLEAR);
        if sve {
            cptr.modify(CPTR_EL2::TZ::CLEAR);
        }
        if self.sme {
            cptr.modify(CPTR_EL2::TSM::CLEAR);
        }
        Some(cptr.get())
    }
}

/// SVCR.SM: the core is in Streaming SVE mode.
pub const SVCR_SM: u64 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's `-cpu max`: SVE, SME, FP16 Advanced SIMD, SHA-512.
    const MAX_PFR0: u64 = 0x1201_1111_2011_1112 | 1 << 32;
    const MAX_PFR1: u64 = 2 << 24;
    const MAX_ISAR0: u64 = 0x0221_1111_1021_2120;
    /// Cortex-A57 without the crypto extension: no SVE, no SME, no SHA.
    const PLAIN_PFR0: u64 = 0x0000_0000_0000_2222;
    /// CPTR_EL2 as U-Boot leaves it (RES1 bits, TZ and TSM set, TFP clear).
    const UBOOT_CPTR: u64 = 0x33ff;

    #[test]
    fn qemu_max_has_everything() {
        let f = SimdFeatures::from_id_registers(MAX_PFR0, MAX_PFR1, MAX_ISAR0);
        assert_eq!(
            f,
            SimdFeatures {
                advsimd: true,
                sha256: true,
                sve: true,
                sme: true
            }
        );
    }

    #[test]
    fn a_core_without_extensions() {
        let f = SimdFeatures::from_id_registers(PLAIN_PFR0, 0, 0);
        assert!(f.advsimd);
        assert!(!f.sha256 && !f.sve && !f.sme);
        assert_eq!(f.cptr_for(UBOOT_CPTR, true), None, "no SVE to enable");
        assert_eq!(
            f.cptr_for(UBOOT_CPTR | 1 << 10, false),
            Some(UBOOT_CPTR),
            "only TFP cleared: TZ and TSM are RES1 without SVE and SME"
        );
    }

    #[test]
    fn no_advanced_simd_means_nothing() {
        let pfr0 = 0xf << 20 | 0xf << 16 | 1 << 32;
        let f = SimdFeatures::from_id_registers(pfr0, 0, MAX_ISAR0);
        assert_eq!(f, SimdFeatures::default());
        assert_eq!(f.cptr_for(0, false), None);
    }

    #[test]
    fn traps_opened_for_what_is_asked() {
        let f = SimdFeatures::from_id_registers(MAX_PFR0, MAX_PFR1, MAX_ISAR0);
        let trapped = UBOOT_CPTR | 1 << 10 | 1 << 31 | 1 << 20;
        // FP and SME (for SVCR) opened, SVE left trapped, the other bits kept.
        assert_eq!(
            f.cptr_for(trapped, false),
            Some(trapped & !(1 << 10) & !(1 << 12))
        );
        assert_eq!(
            f.cptr_for(trapped, true),
            Some(trapped & !(1 << 10) & !(1 << 12) & !(1 << 8))
        );
        // The trap configuration of a slice's core opens everything already.
        assert_eq!(f.cptr_for(0x20ff, true), Some(0x20ff));
    }
}
