//! What a slice's core traps to EL2 and what its guest keeps: HCR_EL2, CPTR_EL2, CNTHCTL_EL2,
//! MDCR_EL2, ZCR_EL2 and SMCR_EL2 (Arm ARM, register descriptions of chapter D24), and the
//! SCTLR_EL1 a vCPU starts from, computed from the CPU's ID registers. docs/threat-model.md's
//! trap rows rest on these values; the architecture layer (`microvisor_arch::virt`) reads the
//! ID registers and writes what this module returns, nothing else.
//!
//! The hypervisor runs non-VHE (HCR_EL2.E2H = 0), so CPTR_EL2 and CNTHCTL_EL2 have their
//! E2H = 0 layouts. Each decision is written next to its field in [`TrapConfiguration::for_cpu`].
//! A field of a feature the CPU lacks is RES0 (or RES1) and is written as such, never set
//! "just in case".

use aarch64_cpu::registers::{
    HCR_EL2, ID_AA64DFR0_EL1, ID_AA64ISAR1_EL1, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1, MDCR_EL2,
};
use tock_registers::{LocalRegisterCopy, register_bitfields};

use crate::pagetable::Stage2MemoryTypes;

// Registers and fields that aarch64-cpu 11.2 does not define (its CPTR_EL2 has only TAM, its
// CNTHCTL_EL2 only EL1PCEN/EL1PCTEN, its SCTLR_EL1 lacks the RES1-in-v8.0 bits).
register_bitfields![u64,
    /// CPTR_EL2 with HCR_EL2.E2H = 0.
    pub CPTR_EL2 [
        /// Trap EL1 accesses to CPACR_EL1.
        TCPAC OFFSET(31) NUMBITS(1) [],
        /// Trap Activity Monitor registers (FEAT_AMU).
        TAM OFFSET(30) NUMBITS(1) [],
        /// Trap trace unit System registers.
        TTA OFFSET(20) NUMBITS(1) [],
        /// Trap SME (FEAT_SME; RES1 without it).
        TSM OFFSET(12) NUMBITS(1) [],
        /// Trap FP/Advanced SIMD.
        TFP OFFSET(10) NUMBITS(1) [],
        /// Trap SVE (FEAT_SVE; RES1 without it).
        TZ OFFSET(8) NUMBITS(1) [],
        /// RES1 bits [13], [9], [7:0].
        RES1_13 OFFSET(13) NUMBITS(1) [],
        RES1_9 OFFSET(9) NUMBITS(1) [],
        RES1_7_0 OFFSET(0) NUMBITS(8) []
    ],
    /// CNTHCTL_EL2 with HCR_EL2.E2H = 0.
    pub CNTHCTL_EL2 [
        /// FEAT_RME: mask the virtual/physical timer interrupts.
        CNTPMASK OFFSET(19) NUMBITS(1) [],
        CNTVMASK OFFSET(18) NUMBITS(1) [],
        /// FEAT_ECV: event stream at a finer scale.
        EVNTIS OFFSET(17) NUMBITS(1) [],
        /// FEAT_ECV: trap EL1 reads of CNTVCT/CNTPCT while the matching timer is enabled...
        EL1NVVCT OFFSET(16) NUMBITS(1) [],
        EL1NVPCT OFFSET(15) NUMBITS(1) [],
        /// FEAT_ECV: trap EL1 reads of the virtual counter / accesses to the virtual timer.
        EL1TVCT OFFSET(14) NUMBITS(1) [],
        EL1TVT OFFSET(13) NUMBITS(1) [],
        /// FEAT_ECV: apply CNTPOFF_EL2 to EL1's physical counter.
        ECV OFFSET(12) NUMBITS(1) [],
        /// Event stream from the counter.
        EVNTI OFFSET(4) NUMBITS(4) [],
        EVNTDIR OFFSET(3) NUMBITS(1) [],
        EVNTEN OFFSET(2) NUMBITS(1) [],
        /// 0: EL1/EL0 accesses to the EL1 physical timer (CNTP_CTL/CVAL/TVAL_EL0) trap.
        EL1PCEN OFFSET(1) NUMBITS(1) [],
        /// 0: EL1/EL0 reads of the physical counter (CNTPCT_EL0) trap.
        EL1PCTEN OFFSET(0) NUMBITS(1) []
    ],
    /// ZCR_EL2.
    pub ZCR_EL2 [
        /// Largest SVE vector length for EL1/EL0: (LEN + 1) x 128 bits, capped by the CPU.
        LEN OFFSET(0) NUMBITS(4) []
    ],
    /// SMCR_EL2.
    pub SMCR_EL2 [
        /// Full A64 instruction set in Streaming SVE mode at EL1/EL0 (FEAT_SME_FA64).
        FA64 OFFSET(31) NUMBITS(1) [],
        /// ZT0 accessible at EL1/EL0 (FEAT_SME2); 0 traps.
        EZT0 OFFSET(30) NUMBITS(1) [],
        /// Largest streaming vector length: (LEN + 1) x 128 bits, capped by the CPU.
        LEN OFFSET(0) NUMBITS(4) []
    ],
    /// SCTLR_EL1: the fields a vCPU's reset value sets or clears.
    pub SCTLR_EL1 [
        /// RES1 without FEAT_LSMAOC: load/store multiple atomicity and ordering as in v8.0.
        LSMAOE OFFSET(29) NUMBITS(1) [],
        /// RES1 without FEAT_LSMAOC: no trap of load/store multiple to Device memory.
        NTLSMD OFFSET(28) NUMBITS(1) [],
        /// Big-endian at EL1.
        EE OFFSET(25) NUMBITS(1) [],
        /// Big-endian at EL0.
        E0E OFFSET(24) NUMBITS(1) [],
        /// RES1 without FEAT_PAN: PSTATE.PAN unchanged on exception entry.
        SPAN OFFSET(23) NUMBITS(1) [],
        /// RES1 without FEAT_ExS: exception entry is context synchronizing.
        EIS OFFSET(22) NUMBITS(1) [],
        /// RES1 without FEAT_CSV2: EL0 access to SCXTNUM_EL0 disabled.
        TSCXT OFFSET(20) NUMBITS(1) [],
        /// Write permission implies XN.
        WXN OFFSET(19) NUMBITS(1) [],
        /// Instruction cache enable.
        I OFFSET(12) NUMBITS(1) [],
        /// RES1 without FEAT_ExS: exception return is context synchronizing.
        EOS OFFSET(11) NUMBITS(1) [],
        /// Stack alignment checks.
        SA0 OFFSET(4) NUMBITS(1) [],
        SA OFFSET(3) NUMBITS(1) [],
        /// Data cache enable.
        C OFFSET(2) NUMBITS(1) [],
        /// Alignment checks.
        A OFFSET(1) NUMBITS(1) [],
        /// Stage-1 MMU enable.
        M OFFSET(0) NUMBITS(1) []
    ],
    /// ID_AA64PFR0_EL1: the fields read here.
    pub ID_AA64PFR0_EL1 [
        /// FEAT_SVE.
        SVE OFFSET(32) NUMBITS(4) [],
        /// FEAT_RAS (error records).
        RAS OFFSET(28) NUMBITS(4) []
    ],
    /// ID_AA64PFR1_EL1: the fields read here.
    pub ID_AA64PFR1_EL1 [
        /// FEAT_SME.
        SME OFFSET(24) NUMBITS(4) []
    ],
    /// ID_AA64SMFR0_EL1: the fields read here.
    pub ID_AA64SMFR0_EL1 [
        /// FEAT_SME_FA64.
        FA64 OFFSET(63) NUMBITS(1) [],
        /// 0: SME, 1: SME2, 2: SME2.1.
        SMEVER OFFSET(56) NUMBITS(4) []
    ],
    /// ID_AA64ISAR2_EL1: the fields read here.
    pub ID_AA64ISAR2_EL1 [
        /// FEAT_PAuth with the QARMA3 algorithm: address authentication.
        APA3 OFFSET(12) NUMBITS(4) [],
        /// Generic authentication with QARMA3.
        GPA3 OFFSET(8) NUMBITS(4) []
    ],
    /// PMCR_EL0: the field read here.
    pub PMCR_EL0 [
        /// Number of event counters implemented (as read at EL2).
        N OFFSET(11) NUMBITS(5) []
    ]
];

/// ID_AA64DFR0_EL1.PMUVer values.
mod pmu_version {
    /// FEAT_PMUv3p1: MDCR_EL2.HPMD.
    pub const V3P1: u8 = 0b0100;
    /// FEAT_PMUv3p5: MDCR_EL2.HCCD.
    pub const V3P5: u8 = 0b0110;
    /// A PMU that is not PMUv3.
    pub const IMPLEMENTATION_DEFINED: u8 = 0b1111;
}

/// Largest vector length field: 2048 bits, more than any CPU implements (the CPU caps it).
const MAX_VECTOR_LEN: u64 = 0xf;

/// The raw ID registers the trap configuration depends on, as read on the core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdRegisters {
    pub aa64pfr0: u64,
    pub aa64pfr1: u64,
    pub aa64dfr0: u64,
    pub aa64smfr0: u64,
    pub aa64mmfr1: u64,
    pub aa64mmfr2: u64,
    pub aa64isar1: u64,
    pub aa64isar2: u64,
}

/// The core's performance monitors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pmu {
    /// No PMU, or an IMPLEMENTATION DEFINED one (its registers are IMPDEF encodings, which
    /// HCR_EL2.TIDCP traps).
    None,
    /// PMUv3: `version` is ID_AA64DFR0_EL1.PMUVer, `counters` PMCR_EL0.N.
    V3 { version: u8, counters: u8 },
}

/// The CPU features that change what EL2 writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFeatures {
    /// FEAT_SVE.
    pub sve: bool,
    /// FEAT_SME.
    pub sme: bool,
    /// FEAT_SME_FA64.
    pub sme_fa64: bool,
    /// FEAT_SME2 (the ZT0 register).
    pub sme2: bool,
    pub pmu: Pmu,
    /// FEAT_SPE: statistical profiling, which writes samples to a memory buffer.
    pub spe: bool,
    /// System-register interface to a trace unit (ETM/ETE).
    pub trace_registers: bool,
    /// FEAT_TRBE: trace written to a memory buffer.
    pub trace_buffer: bool,
    /// FEAT_TRF: self-hosted trace filter controls (TRFCR_EL1).
    pub trace_filter: bool,
    /// FEAT_RAS: error record registers.
    pub ras: bool,
    /// FEAT_S2FWB (ID_AA64MMFR2_EL1.FWB, bits [43:40], = 1): HCR_EL2.FWB exists, and with it
    /// stage 2 can force RAM to Normal Write-Back whatever the guest's stage 1 says.
    pub s2fwb: bool,
    /// FEAT_PAuth, any algorithm, address or generic: the five key registers exist (the
    /// guest owns them, HCR_EL2.APK = 1, so a vCPU's reset clears them).
    pub pointer_auth: bool,
    /// Breakpoints and watchpoints implemented (ID_AA64DFR0_EL1.BRPs + 1, WRPs + 1): the
    /// guest owns their registers (MDCR_EL2.TDA = 0), so a vCPU's reset clears them.
    pub breakpoints: u8,
    pub watchpoints: u8,
    /// FEAT_LOR: the LORegion registers, the guest's (HCR_EL2.TLOR = 0), cleared likewise.
    pub lor: bool,
}

impl IdRegisters {
    /// The features these registers describe. `read_pmcr` reads PMCR_EL0; it is called only
    /// when the CPU has a PMUv3 (the register is UNDEFINED otherwise).
    pub fn features(&self, read_pmcr: impl FnOnce() -> u64) -> CpuFeatures {
        let pfr0 = LocalRegisterCopy::<u64, ID_AA64PFR0_EL1::Register>::new(self.aa64pfr0);
        let pfr1 = LocalRegisterCopy::<u64, ID_AA64PFR1_EL1::Register>::new(self.aa64pfr1);
        let dfr0 = LocalRegisterCopy::<u64, ID_AA64DFR0_EL1::Register>::new(self.aa64dfr0);
        let smfr0 = LocalRegisterCopy::<u64, ID_AA64SMFR0_EL1::Register>::new(self.aa64smfr0);
        let mmfr2 = LocalRegisterCopy::<u64, ID_AA64MMFR2_EL1::Register>::new(self.aa64mmfr2);
        let mmfr1 = LocalRegisterCopy::<u64, ID_AA64MMFR1_EL1::Register>::new(self.aa64mmfr1);
        let isar1 = LocalRegisterCopy::<u64, ID_AA64ISAR1_EL1::Register>::new(self.aa64isar1);
        let isar2 = LocalRegisterCopy::<u64, ID_AA64ISAR2_EL1::Register>::new(self.aa64isar2);
        let sme = pfr1.read(ID_AA64PFR1_EL1::SME) != 0;
        let pmu = match dfr0.read(ID_AA64DFR0_EL1::PMUVer) as u8 {
            0 | pmu_version::IMPLEMENTATION_DEFINED => Pmu::None,
            version => {
                let pmcr = LocalRegisterCopy::<u64, PMCR_EL0::Register>::new(read_pmcr());
                Pmu::V3 {
                    version,
                    counters: pmcr.read(PMCR_EL0::N) as u8,
                }
            }
        };
        CpuFeatures {
            sve: pfr0.read(ID_AA64PFR0_EL1::SVE) != 0,
            sme,
            sme_fa64: sme && smfr0.is_set(ID_AA64SMFR0_EL1::FA64),
            sme2: sme && smfr0.read(ID_AA64SMFR0_EL1::SMEVER) >= 1,
            pmu,
            spe: dfr0.read(ID_AA64DFR0_EL1::PMSVer) != 0,
            trace_registers: dfr0.read(ID_AA64DFR0_EL1::TraceVer) != 0,
            trace_buffer: dfr0.read(ID_AA64DFR0_EL1::TraceBuffer) != 0,
            trace_filter: dfr0.read(ID_AA64DFR0_EL1::TraceFilt) != 0,
            ras: pfr0.read(ID_AA64PFR0_EL1::RAS) != 0,
            s2fwb: mmfr2.read(ID_AA64MMFR2_EL1::FWB) != 0,
            pointer_auth: isar1.read(ID_AA64ISAR1_EL1::APA) != 0
                || isar1.read(ID_AA64ISAR1_EL1::API) != 0
                || isar1.read(ID_AA64ISAR1_EL1::GPA) != 0
                || isar1.read(ID_AA64ISAR1_EL1::GPI) != 0
                || isar2.read(ID_AA64ISAR2_EL1::APA3) != 0
                || isar2.read(ID_AA64ISAR2_EL1::GPA3) != 0,
            breakpoints: dfr0.read(ID_AA64DFR0_EL1::BRPs) as u8 + 1,
            watchpoints: dfr0.read(ID_AA64DFR0_EL1::WRPs) as u8 + 1,
            lor: mmfr1.read(ID_AA64MMFR1_EL1::LO) != 0,
        }
    }
}

impl CpuFeatures {
    /// How stage-2 tables for these cores encode memory types: forced write-back when the
    /// CPU has FEAT_S2FWB, which [`TrapConfiguration::for_cpu`] then turns on (HCR_EL2.FWB).
    /// Tables built for one encoding mean something else under the other, so a node decides
    /// this once, before it builds any stage-2 table, and every core runs with it.
    pub fn stage2_memory_types(&self) -> Stage2MemoryTypes {
        if self.s2fwb {
            Stage2MemoryTypes::ForcedWriteBack
        } else {
            Stage2MemoryTypes::CombinedWithStage1
        }
    }
}

/// The EL2 controls of a core that runs a vCPU.
#[derive(Clone, Copy, Debug)]
pub struct TrapConfiguration {
    pub hcr: LocalRegisterCopy<u64, HCR_EL2::Register>,
    pub cptr: LocalRegisterCopy<u64, CPTR_EL2::Register>,
    pub cnthctl: LocalRegisterCopy<u64, CNTHCTL_EL2::Register>,
    pub mdcr: LocalRegisterCopy<u64, MDCR_EL2::Register>,
    /// ZCR_EL2, when the CPU has SVE (written after CPTR_EL2, which traps it otherwise).
    pub zcr: Option<LocalRegisterCopy<u64, ZCR_EL2::Register>>,
    /// SMCR_EL2, when the CPU has SME (written after CPTR_EL2, likewise).
    pub smcr: Option<LocalRegisterCopy<u64, SMCR_EL2::Register>>,
}

impl TrapConfiguration {
    /// The configuration for a core with `cpu`'s features.
    pub fn for_cpu(cpu: &CpuFeatures) -> TrapConfiguration {
        TrapConfiguration {
            hcr: hcr(cpu),
            cptr: cptr(cpu),
            cnthctl: cnthctl(),
            mdcr: mdcr(cpu),
            zcr: cpu
                .sve
                .then(|| LocalRegisterCopy::new(ZCR_EL2::LEN.val(MAX_VECTOR_LEN).value)),
            smcr: cpu.sme.then(|| {
                let mut smcr = LocalRegisterCopy::new(0);
                smcr.write(SMCR_EL2::LEN.val(MAX_VECTOR_LEN));
                if cpu.sme_fa64 {
                    smcr.modify(SMCR_EL2::FA64::SET);
                }
                if cpu.sme2 {
                    smcr.modify(SMCR_EL2::EZT0::SET);
                }
                smcr
            }),
        }
    }
}

/// HCR_EL2. Everything not named stays 0: the hypervisor runs non-VHE (E2H = 0, TGE = 0),
/// without nested virtualization (NV* = 0, so every EL2 register, the EL2 timers' included,
/// is UNDEFINED at EL1), and leaves alone what is the guest's own on a core nobody else
/// uses: WFI/WFE (TWI/TWE = 0), its stage-1 tables and TLBs (TVM/TRVM/TTLB = 0), cache
/// maintenance (TPC/TPU = 0; set/way operations (TSW = 0) act on caches shared with other
/// slices only as cache pressure, since with VM = 1 an invalidate is upgraded to clean and
/// invalidate and no other slice's data is lost), and the real ID registers (TID* = 0).
fn hcr(cpu: &CpuFeatures) -> LocalRegisterCopy<u64, HCR_EL2::Register> {
    let mut hcr = LocalRegisterCopy::new(0);
    hcr.write(
        // EL1 is AArch64.
        HCR_EL2::RW::EL1IsAarch64
            // Stage 2 translation on: the slice's tables are all the memory it can reach.
            + HCR_EL2::VM::Enable
            // Set/way invalidation cleans first (stage 2 is on, so it would anyway).
            + HCR_EL2::SWIO::SET
            // Physical IRQ, FIQ and SError are taken to EL2 while the guest runs; the guest
            // sees only what the vGIC injects.
            + HCR_EL2::IMO::EnableVirtualIRQ
            + HCR_EL2::FMO::EnableVirtualFIQ
            + HCR_EL2::AMO::SET
            // SMC from EL1 traps to EL2: the firmware is reached only through the hypervisor.
            + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
            // IMPLEMENTATION DEFINED registers trap: the IMPDEF encodings (TIDCP) and
            // ACTLR_EL1 (TACR), whose effects the hypervisor cannot judge.
            + HCR_EL2::TIDCP::SET
            + HCR_EL2::TACR::SET
            // Pointer authentication is the guest's: its instructions and key registers do not
            // trap (1 = not trapped), and the keys live in the core's EL1 state only.
            + HCR_EL2::API::DisableTrapPointerAuthInstToEl2
            + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2,
    );
    if cpu.s2fwb {
        // Forced write-back: stage 2 alone decides the memory type (the stage-2 tables encode
        // RAM as `pagetable::Stage2MemoryTypes::ForcedWriteBack`), so a guest reaches its RAM
        // only through the caches, whatever its stage 1 or its MMU being off says, and never
        // reads memory below the hypervisor's dirty cache lines.
        hcr.modify(HCR_EL2::FWB::Enabled);
    }
    if cpu.ras {
        // Error records (ERR*/ERX* registers) may describe nodes shared by every core (caches,
        // interconnect): reading or clearing them is not a slice's business, so they trap.
        hcr.modify(HCR_EL2::TERR::SET);
    }
    hcr
}

/// CPTR_EL2 (E2H = 0 layout).
fn cptr(cpu: &CpuFeatures) -> LocalRegisterCopy<u64, CPTR_EL2::Register> {
    let mut cptr = LocalRegisterCopy::new(0);
    cptr.write(
        CPTR_EL2::RES1_13::SET
            + CPTR_EL2::RES1_9::SET
            + CPTR_EL2::RES1_7_0.val(0xff)
            // FP/SIMD, SVE and SME are not trapped: the core runs one vCPU and the hypervisor
            // (built soft-float) never uses them, so no FP context is ever switched.
            + CPTR_EL2::TFP::CLEAR
            // CPACR_EL1 is the guest's own FP enable.
            + CPTR_EL2::TCPAC::CLEAR
            // Activity monitors are not trapped: Linux reads them for frequency invariance
            // and would stop if they trapped. They count on this core only, so they show the
            // guest the cost of its own exits (docs/threat-model.md, known gaps).
            + CPTR_EL2::TAM::CLEAR,
    );
    // TZ and TSM are RES1 without SVE/SME; with them, 0 leaves them to the guest.
    if !cpu.sve {
        cptr.modify(CPTR_EL2::TZ::SET);
    }
    if !cpu.sme {
        cptr.modify(CPTR_EL2::TSM::SET);
    }
    if cpu.trace_registers {
        // Trace unit registers trap: a trace unit could be told to trace EL2 or to write
        // through an external sink; no slice is given trace.
        cptr.modify(CPTR_EL2::TTA::SET);
    }
    cptr
}

/// CNTHCTL_EL2 (E2H = 0 layout): the guest reads the physical counter (EL1PCTEN = 1) and owns
/// both EL1 timers, virtual and physical (EL1PCEN = 1; DESIGN.md §4, "Timers"), with no
/// FEAT_ECV trap or offset (EL1TVT, EL1TVCT, ECV = 0). The hypervisor's own timer is the EL2
/// physical timer, which EL1 cannot reach (its registers are UNDEFINED below EL2). No event
/// stream.
fn cnthctl() -> LocalRegisterCopy<u64, CNTHCTL_EL2::Register> {
    let mut cnthctl = LocalRegisterCopy::new(0);
    cnthctl.write(CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::SET);
    cnthctl
}

/// MDCR_EL2: debug, performance monitors, profiling and trace.
fn mdcr(cpu: &CpuFeatures) -> LocalRegisterCopy<u64, MDCR_EL2::Register> {
    let mut mdcr = LocalRegisterCopy::new(0);
    mdcr.write(
        // Debug exceptions go to the guest (TDE = 0, with HCR_EL2.TGE = 0): the debug target
        // is EL1, so breakpoints, watchpoints and single step the guest programs are never
        // generated while the core runs at EL2 (Arm ARM, "The debug exception model": none
        // is generated at an EL above the debug target). A guest debugging itself on its own
        // core is harmless.
        MDCR_EL2::TDE::RouteToEL1
            // The debug registers (TDA = 0) and the OS lock / power-down registers
            // (TDOSA = 0) are per-core and the guest's: Linux programs both at boot.
            + MDCR_EL2::TDA::CLEAR
            + MDCR_EL2::TDOSA::CLEAR
            // The debug ROM address (MDRAR_EL1) is a physical address of the node that no
            // guest needs (Linux never reads it): it traps.
            + MDCR_EL2::TDRA::SET
            // The debug communications channel talks to an external debugger (someone with
            // physical access, trusted like the firmware); Linux may probe it.
            + MDCR_EL2::TDCC::CLEAR,
    );
    if let Pmu::V3 { version, counters } = cpu.pmu {
        mdcr.modify(
            // Every event counter belongs to EL1 (HPMN = PMCR_EL0.N) and the guest programs
            // them without traps (TPM, TPMCR = 0): a guest may profile itself on its own
            // core (the benchmark probe counts its instructions). None is kept for EL2
            // (HPME = 0: the hypervisor counts nothing). Linux writes PMUSERENR_EL0 at boot
            // whenever a PMUv3 exists, so trapping PMU accesses would stop it.
            MDCR_EL2::HPMN.val(u64::from(counters))
                + MDCR_EL2::TPM::CLEAR
                + MDCR_EL2::TPMCR::CLEAR
                + MDCR_EL2::HPME::CLEAR
                // Multithreaded PMU events of a sibling hardware thread (another slice's core,
                // possibly) stay invisible (MTPME = 0: PMEVTYPER.MT counts as 0).
                + MDCR_EL2::MTPME::CLEAR,
        );
        if version >= pmu_version::V3P1 {
            // No event counter counts at EL2, whatever PMEVTYPER.NSH says: the guest cannot
            // count the hypervisor's instructions or events.
            mdcr.modify(MDCR_EL2::HPMD::SET);
        }
        if version >= pmu_version::V3P5 {
            // Nor does the cycle counter (without PMUv3p5 it stops at EL2 only if the guest
            // sets PMCR_EL0.DP; cycles at EL2 tell no more than the system counter, which
            // every guest reads).
            mdcr.modify(MDCR_EL2::HCCD::SET);
        }
    }
    if cpu.spe {
        // Statistical profiling writes samples to a memory buffer: the buffer is EL2's
        // (E2PB = 0b00, its registers trap from EL1) and the sampling controls trap (TPMS),
        // so no guest can make the profiler write outside its RAM.
        mdcr.modify(MDCR_EL2::E2PB::OwnedByEL2OrEL1 + MDCR_EL2::TPMS::SET);
    }
    if cpu.trace_buffer {
        // Likewise the trace buffer: owned by EL2, its registers trap from EL1.
        mdcr.modify(MDCR_EL2::E2TB::EL1OrEL2OwnerTrapToEL2);
    }
    if cpu.trace_filter {
        // The self-hosted trace filter (TRFCR_EL1) traps.
        mdcr.modify(MDCR_EL2::TTRF::SET);
    }
    mdcr
}

/// SCTLR_EL1 a vCPU starts from (its state at reset): stage-1 MMU, caches,
/// alignment checks off, little-endian, the RES1-in-v8.0 bits set (their v8.0 behaviour).
pub fn el1_reset_sctlr() -> LocalRegisterCopy<u64, SCTLR_EL1::Register> {
    let mut sctlr = LocalRegisterCopy::new(0);
    sctlr.write(
        SCTLR_EL1::LSMAOE::SET
            + SCTLR_EL1::NTLSMD::SET
            + SCTLR_EL1::SPAN::SET
            + SCTLR_EL1::EIS::SET
            + SCTLR_EL1::TSCXT::SET
            + SCTLR_EL1::EOS::SET
            + SCTLR_EL1::M::CLEAR
            + SCTLR_EL1::C::CLEAR
            + SCTLR_EL1::I::CLEAR
            + SCTLR_EL1::A::CLEAR
            + SCTLR_EL1::EE::CLEAR
            + SCTLR_EL1::E0E::CLEAR,
    );
    sctlr
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core with none of the optional features and no PMU.
    const BARE: CpuFeatures = CpuFeatures {
        sve: false,
        sme: false,
        sme_fa64: false,
        sme2: false,
        pmu: Pmu::None,
        spe: false,
        trace_registers: false,
        trace_buffer: false,
        trace_filter: false,
        ras: false,
        s2fwb: false,
        pointer_auth: false,
        breakpoints: 2,
        watchpoints: 2,
        lor: false,
    };

    /// Everything this module looks at, PMUv3p5 with 6 counters.
    const FULL: CpuFeatures = CpuFeatures {
        sve: true,
        sme: true,
        sme_fa64: true,
        sme2: true,
        pmu: Pmu::V3 {
            version: pmu_version::V3P5,
            counters: 6,
        },
        spe: true,
        trace_registers: true,
        trace_buffer: true,
        trace_filter: true,
        ras: true,
        s2fwb: true,
        pointer_auth: true,
        breakpoints: 16,
        watchpoints: 16,
        lor: true,
    };

    /// Every combination of the boolean features, each PMU kind.
    fn all_cpus() -> impl Iterator<Item = CpuFeatures> {
        let pmus = [
            Pmu::None,
            Pmu::V3 {
                version: 1,
                counters: 6,
            },
            Pmu::V3 {
                version: pmu_version::V3P1,
                counters: 4,
            },
            Pmu::V3 {
                version: pmu_version::V3P5,
                counters: 31,
            },
        ];
        (0u32..1 << 10).flat_map(move |bits| {
            let bit = move |n: u32| bits & (1 << n) != 0;
            pmus.into_iter().map(move |pmu| CpuFeatures {
                sve: bit(0),
                sme: bit(1),
                sme_fa64: bit(1) && bit(2),
                sme2: bit(1) && bit(3),
                pmu,
                spe: bit(4),
                trace_registers: bit(5),
                trace_buffer: bit(6),
                trace_filter: bit(7),
                ras: bit(8),
                s2fwb: bit(9),
                // Neither changes the trap configuration.
                pointer_auth: true,
                breakpoints: 6,
                watchpoints: 4,
                lor: true,
            })
        })
    }

    #[test]
    fn smc_from_el1_traps_to_el2() {
        for cpu in all_cpus() {
            let hcr = TrapConfiguration::for_cpu(&cpu).hcr;
            assert!(hcr.matches_all(HCR_EL2::TSC::EnableTrapEl1SmcToEl2));
        }
    }

    #[test]
    fn stage_2_translation_is_on_for_an_aarch64_el1() {
        for cpu in all_cpus() {
            let hcr = TrapConfiguration::for_cpu(&cpu).hcr;
            assert!(hcr.matches_all(HCR_EL2::VM::Enable + HCR_EL2::RW::EL1IsAarch64));
        }
    }

    #[test]
    fn physical_irq_fiq_and_serror_are_taken_to_el2() {
        for cpu in all_cpus() {
            let hcr = TrapConfiguration::for_cpu(&cpu).hcr;
            assert!(hcr.is_set(HCR_EL2::IMO), "IRQ");
            assert!(hcr.is_set(HCR_EL2::FMO), "FIQ");
            assert!(hcr.is_set(HCR_EL2::AMO), "SError");
        }
    }

    #[test]
    fn implementation_defined_registers_trap() {
        for cpu in all_cpus() {
            let hcr = TrapConfiguration::for_cpu(&cpu).hcr;
            assert!(hcr.is_set(HCR_EL2::TIDCP), "IMPDEF encodings");
            assert!(hcr.is_set(HCR_EL2::TACR), "ACTLR_EL1");
        }
    }

    #[test]
    fn el1_cannot_reach_el2_registers_or_the_el2_timer() {
        // Non-VHE without nested virtualization: EL2 registers (CNTHP_*, CNTHV_* included)
        // are UNDEFINED at EL1, and the E2H = 0 layouts used below apply.
        for cpu in all_cpus() {
            let hcr = TrapConfiguration::for_cpu(&cpu).hcr;
            for (name, field) in [
                ("E2H", HCR_EL2::E2H),
                ("TGE", HCR_EL2::TGE),
                ("NV", HCR_EL2::NV),
                ("NV1", HCR_EL2::NV1),
                ("NV2", HCR_EL2::NV2),
            ] {
                assert!(!hcr.is_set(field), "{name}");
            }
        }
    }

    #[test]
    fn stage_2_forces_write_back_exactly_when_the_cpu_can() {
        for cpu in all_cpus() {
            let hcr = TrapConfiguration::for_cpu(&cpu).hcr;
            assert_eq!(hcr.is_set(HCR_EL2::FWB), cpu.s2fwb);
            // The tables' encoding and HCR_EL2.FWB always agree.
            assert_eq!(
                hcr.is_set(HCR_EL2::FWB),
                cpu.stage2_memory_types() == Stage2MemoryTypes::ForcedWriteBack
            );
        }
        // HCR_EL2.FWB is bit 46.
        assert_eq!(
            TrapConfiguration::for_cpu(&FULL).hcr.get() & 1 << 46,
            1 << 46
        );
        assert_eq!(TrapConfiguration::for_cpu(&BARE).hcr.get() & 1 << 46, 0);
    }

    #[test]
    fn forced_write_back_is_read_from_id_aa64mmfr2_bits_43_to_40() {
        let features = |aa64mmfr2| {
            IdRegisters {
                aa64mmfr2,
                ..IdRegisters::default()
            }
            .features(|| 0)
        };
        assert!(!features(0).s2fwb);
        assert!(features(1 << 40).s2fwb);
        // Neighbouring fields (TTL [51:48], IDS [39:36]) say nothing about it.
        assert!(!features(0xf << 48 | 0xf << 36).s2fwb);
    }

    #[test]
    fn shared_error_records_trap_when_the_cpu_has_them() {
        assert!(TrapConfiguration::for_cpu(&FULL).hcr.is_set(HCR_EL2::TERR));
        assert!(!TrapConfiguration::for_cpu(&BARE).hcr.is_set(HCR_EL2::TERR));
    }

    #[test]
    fn the_guest_keeps_its_own_core_wfi_pointer_authentication_and_id_registers() {
        for cpu in all_cpus() {
            let hcr = TrapConfiguration::for_cpu(&cpu).hcr;
            for (name, field) in [
                ("TWI", HCR_EL2::TWI),
                ("TWE", HCR_EL2::TWE),
                ("TVM", HCR_EL2::TVM),
                ("TRVM", HCR_EL2::TRVM),
                ("TID3", HCR_EL2::TID3),
            ] {
                assert!(!hcr.is_set(field), "{name}");
            }
            assert!(hcr.matches_all(
                HCR_EL2::API::DisableTrapPointerAuthInstToEl2
                    + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2
            ));
        }
    }

    #[test]
    fn fp_sve_and_sme_are_not_trapped_because_no_context_is_ever_switched() {
        for cpu in all_cpus() {
            let traps = TrapConfiguration::for_cpu(&cpu);
            assert!(!traps.cptr.is_set(CPTR_EL2::TFP));
            assert!(!traps.cptr.is_set(CPTR_EL2::TCPAC));
            // TZ/TSM are RES1 when the feature is absent, clear (not trapped) when present.
            assert_eq!(traps.cptr.is_set(CPTR_EL2::TZ), !cpu.sve);
            assert_eq!(traps.cptr.is_set(CPTR_EL2::TSM), !cpu.sme);
            assert_eq!(traps.zcr.is_some(), cpu.sve);
            assert_eq!(traps.smcr.is_some(), cpu.sme);
        }
    }

    #[test]
    fn the_guest_gets_the_largest_vector_lengths_and_the_whole_of_sme() {
        let traps = TrapConfiguration::for_cpu(&FULL);
        assert_eq!(traps.zcr.unwrap().read(ZCR_EL2::LEN), 0xf);
        let smcr = traps.smcr.unwrap();
        assert_eq!(smcr.read(SMCR_EL2::LEN), 0xf);
        assert!(smcr.is_set(SMCR_EL2::FA64), "streaming mode is full A64");
        assert!(smcr.is_set(SMCR_EL2::EZT0), "ZT0 is not trapped");
        let sme_only = CpuFeatures {
            sme_fa64: false,
            sme2: false,
            ..FULL
        };
        let smcr = TrapConfiguration::for_cpu(&sme_only).smcr.unwrap();
        assert!(
            !smcr.is_set(SMCR_EL2::FA64) && !smcr.is_set(SMCR_EL2::EZT0),
            "RES0"
        );
    }

    #[test]
    fn cptr_res1_bits_are_set_whatever_the_cpu() {
        for cpu in all_cpus() {
            let cptr = TrapConfiguration::for_cpu(&cpu).cptr;
            assert!(cptr.matches_all(
                CPTR_EL2::RES1_13::SET + CPTR_EL2::RES1_9::SET + CPTR_EL2::RES1_7_0.val(0xff)
            ));
        }
    }

    #[test]
    fn trace_cannot_be_reached_from_el1() {
        let traps = TrapConfiguration::for_cpu(&FULL);
        assert!(
            traps.cptr.is_set(CPTR_EL2::TTA),
            "trace unit registers trap"
        );
        assert!(traps.mdcr.is_set(MDCR_EL2::TTRF), "trace filter traps");
        assert!(
            traps
                .mdcr
                .matches_all(MDCR_EL2::E2TB::EL1OrEL2OwnerTrapToEL2),
            "the trace buffer is EL2's and its registers trap"
        );
        let bare = TrapConfiguration::for_cpu(&BARE);
        assert!(
            !bare.cptr.is_set(CPTR_EL2::TTA) && !bare.mdcr.is_set(MDCR_EL2::TTRF),
            "RES0"
        );
    }

    #[test]
    fn statistical_profiling_cannot_be_pointed_at_memory_outside_the_slice() {
        let mdcr = TrapConfiguration::for_cpu(&FULL).mdcr;
        assert!(
            mdcr.matches_all(MDCR_EL2::E2PB::OwnedByEL2OrEL1),
            "buffer is EL2's"
        );
        assert!(mdcr.is_set(MDCR_EL2::TPMS), "sampling controls trap");
        assert!(
            !TrapConfiguration::for_cpu(&BARE)
                .mdcr
                .is_set(MDCR_EL2::TPMS),
            "RES0"
        );
    }

    #[test]
    fn both_el1_timers_and_the_counters_belong_to_the_guest() {
        for cpu in all_cpus() {
            let cnthctl = TrapConfiguration::for_cpu(&cpu).cnthctl;
            assert!(
                cnthctl.is_set(CNTHCTL_EL2::EL1PCEN),
                "EL1 physical timer the guest's own"
            );
            assert!(
                cnthctl.is_set(CNTHCTL_EL2::EL1PCTEN),
                "physical counter readable"
            );
            for (name, field) in [
                ("EL1TVT", CNTHCTL_EL2::EL1TVT),
                ("EL1TVCT", CNTHCTL_EL2::EL1TVCT),
                ("ECV", CNTHCTL_EL2::ECV),
                ("EVNTEN", CNTHCTL_EL2::EVNTEN),
            ] {
                assert!(!cnthctl.is_set(field), "{name}");
            }
        }
    }

    #[test]
    fn no_pmu_counter_counts_at_el2() {
        let mdcr = TrapConfiguration::for_cpu(&FULL).mdcr;
        assert!(
            mdcr.is_set(MDCR_EL2::HPMD),
            "event counters prohibited at EL2"
        );
        assert!(
            mdcr.is_set(MDCR_EL2::HCCD),
            "cycle counter prohibited at EL2"
        );
        assert!(
            !mdcr.is_set(MDCR_EL2::HPME),
            "no counter reserved for EL2 runs"
        );
        assert!(
            !mdcr.is_set(MDCR_EL2::MTPME),
            "no counting of sibling threads"
        );
        let v3p1 = CpuFeatures {
            pmu: Pmu::V3 {
                version: pmu_version::V3P1,
                counters: 6,
            },
            ..FULL
        };
        let mdcr = TrapConfiguration::for_cpu(&v3p1).mdcr;
        assert!(mdcr.is_set(MDCR_EL2::HPMD));
        assert!(!mdcr.is_set(MDCR_EL2::HCCD), "RES0 before PMUv3p5");
    }

    #[test]
    fn the_guest_owns_every_event_counter_of_its_core() {
        for counters in [0, 1, 6, 31] {
            let cpu = CpuFeatures {
                pmu: Pmu::V3 {
                    version: pmu_version::V3P5,
                    counters,
                },
                ..BARE
            };
            let mdcr = TrapConfiguration::for_cpu(&cpu).mdcr;
            assert_eq!(mdcr.read(MDCR_EL2::HPMN), u64::from(counters));
            assert!(!mdcr.is_set(MDCR_EL2::TPM) && !mdcr.is_set(MDCR_EL2::TPMCR));
        }
    }

    #[test]
    fn without_a_pmuv3_no_pmu_field_is_written() {
        let mdcr = TrapConfiguration::for_cpu(&BARE).mdcr;
        for (name, field) in [
            ("HPMN", MDCR_EL2::HPMN),
            ("HPMD", MDCR_EL2::HPMD),
            ("HCCD", MDCR_EL2::HCCD),
            ("HPME", MDCR_EL2::HPME),
        ] {
            assert_eq!(mdcr.read(field), 0, "{name}");
        }
    }

    #[test]
    fn debug_stays_with_the_guest_and_never_targets_el2() {
        for cpu in all_cpus() {
            let mdcr = TrapConfiguration::for_cpu(&cpu).mdcr;
            assert!(
                mdcr.matches_all(MDCR_EL2::TDE::RouteToEL1),
                "debug target is EL1"
            );
            assert!(
                !mdcr.is_set(MDCR_EL2::TDA),
                "debug registers are the guest's"
            );
            assert!(!mdcr.is_set(MDCR_EL2::TDOSA), "OS lock is the guest's");
            assert!(mdcr.is_set(MDCR_EL2::TDRA), "the debug ROM address traps");
        }
    }

    #[test]
    fn a_bare_cpu_gets_exactly_the_architected_minimum() {
        // The values the tree wrote before this module, plus TACR and MDCR_EL2 (not written
        // before: it kept whatever the firmware left).
        let traps = TrapConfiguration::for_cpu(&BARE);
        assert_eq!(traps.hcr.get(), 0x0000_0300_8038_003b);
        assert_eq!(traps.cptr.get(), 0x33ff);
        assert_eq!(traps.cnthctl.get(), 0x3, "EL1PCTEN and EL1PCEN");
        assert_eq!(traps.mdcr.get(), 0x800);
        assert!(traps.zcr.is_none() && traps.smcr.is_none());
    }

    #[test]
    fn qemu_max_as_the_tests_run_it() {
        // ID registers and PMCR_EL0 read at EL2 under QEMU 10.0.2 `-cpu max`.
        let ids = IdRegisters {
            aa64pfr0: 0x1301_0011_2111_0222,
            aa64pfr1: 0x0000_0010_0100_0121,
            aa64dfr0: 0x1000_0000_1030_560a,
            aa64smfr0: 0x80f1_00fd_0000_0000,
            aa64mmfr2: 0x1221_0111_1201_1011,
            // Only the pointer-authentication fields, as QEMU's `-cpu max` sets them (QARMA5:
            // APA = 5, FEAT_FPACCOMBINE, and GPA = 1).
            aa64isar1: 5 << 4 | 1 << 24,
            aa64isar2: 0,
            // Only LO (FEAT_LOR), which QEMU's `-cpu max` has.
            aa64mmfr1: 1 << 16,
        };
        let features = ids.features(|| 0x4101_3000);
        assert_eq!(
            features,
            CpuFeatures {
                sve: true,
                sme: true,
                sme_fa64: true,
                sme2: false,
                pmu: Pmu::V3 {
                    version: pmu_version::V3P5,
                    counters: 6
                },
                spe: false,
                trace_registers: false,
                trace_buffer: false,
                trace_filter: false,
                ras: true,
                s2fwb: true,
                pointer_auth: true,
                breakpoints: 6,
                watchpoints: 4,
                lor: true,
            }
        );
        let traps = TrapConfiguration::for_cpu(&features);
        assert_eq!(
            traps.hcr.get(),
            0x0000_4310_8038_003b,
            "TERR and FWB on top of the minimum"
        );
        assert_eq!(traps.cptr.get(), 0x22ff, "TZ and TSM clear");
        // QEMU resets MDCR_EL2 to 0x6 (HPMN = 6 and nothing else).
        assert_eq!(
            traps.mdcr.get(),
            0x6 | 1 << 11 | 1 << 17 | 1 << 23,
            "HPMN 6, TDRA, HPMD, HCCD"
        );
    }

    #[test]
    fn pmcr_is_read_only_for_a_pmuv3() {
        for pmuver in [0, pmu_version::IMPLEMENTATION_DEFINED] {
            let ids = IdRegisters {
                aa64dfr0: u64::from(pmuver) << 8,
                ..IdRegisters::default()
            };
            let features = ids.features(|| panic!("PMCR_EL0 read without a PMUv3"));
            assert_eq!(features.pmu, Pmu::None);
        }
        let ids = IdRegisters {
            aa64dfr0: 1 << 8,
            ..IdRegisters::default()
        };
        assert_eq!(
            ids.features(|| 3 << 11).pmu,
            Pmu::V3 {
                version: 1,
                counters: 3
            }
        );
    }

    #[test]
    fn pointer_authentication_is_any_algorithm_address_or_generic() {
        let features = |aa64isar1, aa64isar2| {
            IdRegisters {
                aa64isar1,
                aa64isar2,
                ..IdRegisters::default()
            }
            .features(|| 0)
            .pointer_auth
        };
        assert!(!features(0, 0));
        // APA, API, GPA, GPI in ID_AA64ISAR1_EL1; APA3, GPA3 in ID_AA64ISAR2_EL1.
        for shift in [4, 8, 24, 28] {
            assert!(features(1 << shift, 0), "ISAR1 bit {shift}");
        }
        for shift in [8, 12] {
            assert!(features(0, 1 << shift), "ISAR2 bit {shift}");
        }
        // Neighbours (DPB [3:0], JSCVT [15:12], FCMA [19:16]; ISAR2 RPRES [7:4]) are not it.
        assert!(!features(0xf | 0xff << 12, 0xf << 4));
    }

    #[test]
    fn breakpoint_and_watchpoint_counts_are_the_fields_plus_one() {
        let features = IdRegisters {
            aa64dfr0: 0xf << 12 | 0x1 << 20,
            ..IdRegisters::default()
        }
        .features(|| 0);
        assert_eq!((features.breakpoints, features.watchpoints), (16, 2));
    }

    #[test]
    fn sme_subfeatures_need_sme() {
        let ids = IdRegisters {
            aa64smfr0: u64::MAX,
            ..IdRegisters::default()
        };
        let features = ids.features(|| 0);
        assert!(!features.sme && !features.sme_fa64 && !features.sme2);
    }

    #[test]
    fn a_vcpu_starts_with_mmu_caches_and_alignment_checks_off_little_endian() {
        let sctlr = el1_reset_sctlr();
        for (name, field) in [
            ("M", SCTLR_EL1::M),
            ("C", SCTLR_EL1::C),
            ("I", SCTLR_EL1::I),
            ("A", SCTLR_EL1::A),
            ("EE", SCTLR_EL1::EE),
            ("E0E", SCTLR_EL1::E0E),
        ] {
            assert!(!sctlr.is_set(field), "{name}");
        }
        // Bits 29, 28, 23, 22, 20, 11: RES1 in Armv8.0, their legacy behaviour later.
        assert_eq!(sctlr.get(), 0x30d0_0800);
    }
}
