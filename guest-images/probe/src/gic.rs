//! GICv3 values for the interrupt attacks (Arm IHI 0069H, "GIC Architecture
//! Specification, GICv3 and GICv4", chapter 12 "Programmers' model"):
//! distributor and redistributor register offsets, the fields of
//! ICC_SGI1R_EL1, GICD_TYPER, GICD_CTLR, GICD_IROUTER<n>, GICR_TYPER,
//! GICR_WAKER and ICC_SRE_EL1/ICC_CTLR_EL1, the SGI writes aimed outside a
//! slice and the SPI set of `spi-foreign` (their outcomes and verdicts are in
//! `gic_attacks`). No hardware access: `bare::gic` does that.
//!
//! Affinities are in the MPIDR_EL1 layout the device tree's CPU `reg` and
//! the probe's `mpidrs` use: Aff3 in bits 39:32, Aff2, Aff1, Aff0 in 23:0.

use core::fmt;
use core::ops::RangeInclusive;

use tock_registers::{LocalRegisterCopy, register_bitfields};

/// Distributor register offsets (GICD_*, IHI 0069H §12.8 register map).
pub mod gicd {
    /// Distributor Control Register.
    pub const CTLR: u64 = 0x0000;
    /// Interrupt Controller Type Register.
    pub const TYPER: u64 = 0x0004;
    /// Interrupt Set-Enable Registers, one bit per INTID.
    pub const ISENABLER: u64 = 0x0100;
    /// Interrupt Clear-Enable Registers, one bit per INTID.
    pub const ICENABLER: u64 = 0x0180;
    /// Interrupt Set-Pending Registers, one bit per INTID.
    pub const ISPENDR: u64 = 0x0200;
    /// Interrupt Clear-Pending Registers, one bit per INTID.
    pub const ICPENDR: u64 = 0x0280;
    /// Interrupt Priority Registers, one byte per INTID.
    pub const IPRIORITYR: u64 = 0x0400;
    /// Interrupt Routing Registers, 64 bits per SPI (INTIDs 32..=1019).
    pub const IROUTER: u64 = 0x6000;
    /// Size of the distributor's register frame.
    pub const FRAME_SIZE: u64 = 0x1_0000;
}

/// Redistributor register offsets (GICR_*, IHI 0069H §12.10 register map):
/// `RD_base` frame, then `SGI_base` 64 KiB above it.
pub mod gicr {
    /// Redistributor Type Register (64 bits), in RD_base.
    pub const TYPER: u64 = 0x0008;
    /// Redistributor Wake Register, in RD_base.
    pub const WAKER: u64 = 0x0014;
    /// Offset of the SGI_base frame from RD_base.
    pub const SGI_BASE: u64 = 0x1_0000;
    /// Interrupt Group Register 0 (SGIs and PPIs), in SGI_base.
    pub const IGROUPR0: u64 = SGI_BASE + 0x0080;
    /// Interrupt Set-Enable Register 0, in SGI_base.
    pub const ISENABLER0: u64 = SGI_BASE + 0x0100;
    /// GICR_ISPENDR0 / GICR_ICPENDR0: SGIs and PPIs pending, and clearing that.
    pub const ISPENDR0: u64 = SGI_BASE + 0x0200;
    pub const ICPENDR0: u64 = SGI_BASE + 0x0280;
    /// Interrupt Priority Registers of INTIDs 0..=31, in SGI_base.
    pub const IPRIORITYR: u64 = SGI_BASE + 0x0400;
    /// Frame stride of a GICv3 redistributor (RD_base + SGI_base).
    pub const STRIDE_V3: u64 = 0x2_0000;
    /// Frame stride with VLPI frames (GICv4: VLPI_base + reserved).
    pub const STRIDE_V4: u64 = 0x4_0000;
}

register_bitfields! {u64,
    /// ICC_SGI1R_EL1: generates a Group 1 SGI (IHI 0069H §12.2).
    pub ICC_SGI1R [
        /// PEs with Aff0 = RS * 16 + bit in the cluster Aff3.Aff2.Aff1.
        TargetList OFFSET(0) NUMBITS(16) [],
        Aff1 OFFSET(16) NUMBITS(8) [],
        INTID OFFSET(24) NUMBITS(4) [],
        Aff2 OFFSET(32) NUMBITS(8) [],
        /// 1: every PE except the writer ("all but self").
        IRM OFFSET(40) NUMBITS(1) [],
        /// Range selector: TargetList bit b means Aff0 = RS * 16 + b.
        RS OFFSET(44) NUMBITS(4) [],
        Aff3 OFFSET(48) NUMBITS(8) [],
    ],
    /// GICR_TYPER (IHI 0069H §12.11).
    pub GICR_TYPER [
        /// Physical LPIs supported.
        PLPIS OFFSET(0) NUMBITS(1) [],
        /// Virtual LPIs supported: the frame has VLPI pages (GICv4 stride).
        VLPIS OFFSET(1) NUMBITS(1) [],
        /// The last redistributor of its region.
        Last OFFSET(4) NUMBITS(1) [],
        Processor_Number OFFSET(8) NUMBITS(16) [],
        Aff0 OFFSET(32) NUMBITS(8) [],
        Aff1 OFFSET(40) NUMBITS(8) [],
        Aff2 OFFSET(48) NUMBITS(8) [],
        Aff3 OFFSET(56) NUMBITS(8) [],
    ],
    /// GICD_IROUTER<n> (IHI 0069H §12.9).
    pub GICD_IROUTER [
        Aff0 OFFSET(0) NUMBITS(8) [],
        Aff1 OFFSET(8) NUMBITS(8) [],
        Aff2 OFFSET(16) NUMBITS(8) [],
        /// 1: any participating PE ("1 of N"), the affinity is ignored.
        IRM OFFSET(31) NUMBITS(1) [],
        Aff3 OFFSET(32) NUMBITS(8) [],
    ],
    /// ICC_SRE_EL1 (IHI 0069H §12.2).
    pub ICC_SRE [
        /// System register interface enabled.
        SRE OFFSET(0) NUMBITS(1) [],
    ],
    /// ICC_CTLR_EL1 (IHI 0069H §12.2), the fields the probe reports.
    pub ICC_CTLR [
        /// Range Selector Support: SGIs can target Aff0 16..=255.
        RSS OFFSET(18) NUMBITS(1) [],
    ],
}

register_bitfields! {u32,
    /// GICD_TYPER (IHI 0069H §12.9).
    pub GICD_TYPER [
        /// SPIs: INTIDs up to 32 * (ITLinesNumber + 1) - 1.
        ITLinesNumber OFFSET(0) NUMBITS(5) [],
    ],
    /// GICD_CTLR (IHI 0069H §12.9). With one security state (DS = 1) bits 0
    /// and 1 enable Group 0 and Group 1 and bit 4 is ARE; seen from Non-secure
    /// with two states they are EnableGrp1, EnableGrp1A and ARE_NS. Linux
    /// sets all three either way, and so does the probe.
    pub GICD_CTLR [
        EnableGrp0OrGrp1NS OFFSET(0) NUMBITS(1) [],
        EnableGrp1OrGrp1A OFFSET(1) NUMBITS(1) [],
        ARE OFFSET(4) NUMBITS(1) [],
        /// Register write pending.
        RWP OFFSET(31) NUMBITS(1) [],
    ],
    /// GICR_WAKER (IHI 0069H §12.11).
    pub GICR_WAKER [
        /// 1: the PE is asleep, the redistributor forwards nothing to it.
        ProcessorSleep OFFSET(1) NUMBITS(1) [],
        /// 1: the interface to the PE is quiescent.
        ChildrenAsleep OFFSET(2) NUMBITS(1) [],
    ],
}

/// The SGI the `sgi-outside` writes carry.
pub const ATTACK_SGI: u8 = 13;
/// INTID of the console UART when the tree does not say (QEMU `virt` and
/// the microvisor: SPI 1).
pub const DEFAULT_UART_INTID: u32 = 33;
/// The SGI `sgi-self-test` sends within the slice.
pub const SELF_TEST_SGI: u8 = 5;
/// Priority the probe gives the interrupts it configures (Linux's default).
pub const DEFAULT_PRIORITY: u8 = 0xa0;
/// ICC_PMR_EL1 value the receiver uses: lets DEFAULT_PRIORITY through.
pub const RECEIVER_PMR: u64 = 0xf0;
/// Priority `spi-foreign` writes to SPIs it does not own.
pub const FOREIGN_PRIORITY: u8 = 0x80;
/// First INTID ICC_IAR1_EL1 returns for "no interrupt" (1020..=1023).
pub const FIRST_SPECIAL_INTID: u32 = 1020;

/// The affinity `aff3.aff2.aff1.aff0` in MPIDR layout.
pub fn affinity(aff3: u8, aff2: u8, aff1: u8, aff0: u8) -> u64 {
    (u64::from(aff3) << 32) | (u64::from(aff2) << 16) | (u64::from(aff1) << 8) | u64::from(aff0)
}

/// `[aff0, aff1, aff2, aff3]` of an MPIDR-layout affinity.
pub fn affinity_fields(mpidr: u64) -> [u8; 4] {
    [
        mpidr as u8,
        (mpidr >> 8) as u8,
        (mpidr >> 16) as u8,
        (mpidr >> 32) as u8,
    ]
}

/// The first affinity from `start` on, in steps of `step`, that is not one
/// of `cpus`.
pub fn first_unused(cpus: &[u64], start: u64, step: u64) -> u64 {
    let mut candidate = start;
    while cpus.contains(&candidate) {
        candidate += step;
    }
    candidate
}

/// Who an SGI is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgiTarget {
    /// The PEs `aff3.aff2.aff1.(rs * 16 + b)` for each bit b of `list`.
    List {
        /// Aff3 of the cluster.
        aff3: u8,
        /// Aff2 of the cluster.
        aff2: u8,
        /// Aff1 of the cluster.
        aff1: u8,
        /// Range selector (0..=15).
        rs: u8,
        /// Target list.
        list: u16,
    },
    /// Every PE but the writer (IRM = 1).
    AllButSelf,
}

/// One ICC_SGI1R_EL1 write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgiRequest {
    /// SGI INTID (0..=15).
    pub intid: u8,
    /// Its targets.
    pub target: SgiTarget,
}

impl SgiRequest {
    /// The SGI `intid` for the one PE `mpidr`.
    pub fn to(mpidr: u64, intid: u8) -> SgiRequest {
        let [aff0, aff1, aff2, aff3] = affinity_fields(mpidr);
        SgiRequest {
            intid,
            target: SgiTarget::List {
                aff3,
                aff2,
                aff1,
                rs: aff0 >> 4,
                list: 1 << (aff0 & 0xf),
            },
        }
    }

    /// The ICC_SGI1R_EL1 value.
    pub fn value(self) -> u64 {
        let mut reg = LocalRegisterCopy::<u64, ICC_SGI1R::Register>::new(0);
        reg.modify(ICC_SGI1R::INTID.val(u64::from(self.intid & 0xf)));
        match self.target {
            SgiTarget::List {
                aff3,
                aff2,
                aff1,
                rs,
                list,
            } => reg.modify(
                ICC_SGI1R::Aff3.val(u64::from(aff3))
                    + ICC_SGI1R::Aff2.val(u64::from(aff2))
                    + ICC_SGI1R::Aff1.val(u64::from(aff1))
                    + ICC_SGI1R::RS.val(u64::from(rs & 0xf))
                    + ICC_SGI1R::TargetList.val(u64::from(list)),
            ),
            SgiTarget::AllButSelf => reg.modify(ICC_SGI1R::IRM::SET),
        }
        reg.get()
    }

    /// Decodes an ICC_SGI1R_EL1 value.
    pub fn from_value(value: u64) -> SgiRequest {
        let reg = LocalRegisterCopy::<u64, ICC_SGI1R::Register>::new(value);
        let intid = reg.read(ICC_SGI1R::INTID) as u8;
        let target = if reg.is_set(ICC_SGI1R::IRM) {
            SgiTarget::AllButSelf
        } else {
            SgiTarget::List {
                aff3: reg.read(ICC_SGI1R::Aff3) as u8,
                aff2: reg.read(ICC_SGI1R::Aff2) as u8,
                aff1: reg.read(ICC_SGI1R::Aff1) as u8,
                rs: reg.read(ICC_SGI1R::RS) as u8,
                list: reg.read(ICC_SGI1R::TargetList) as u16,
            }
        };
        SgiRequest { intid, target }
    }

    /// The affinities a target-list request names (none for all-but-self).
    pub fn targets(self) -> impl Iterator<Item = u64> {
        let (cluster, rs, list) = match self.target {
            SgiTarget::List {
                aff3,
                aff2,
                aff1,
                rs,
                list,
            } => (affinity(aff3, aff2, aff1, 0), rs & 0xf, list),
            SgiTarget::AllButSelf => (0, 0, 0),
        };
        (0..16u8)
            .filter(move |b| list & (1 << b) != 0)
            .map(move |b| cluster | u64::from(rs * 16 + b))
    }
}

/// Most writes [`outside_sgi_plan`] makes.
pub const MAX_SGI_WRITES: usize = 8;

/// The ICC_SGI1R_EL1 writes of `sgi-outside`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgiPlan {
    writes: [SgiRequest; MAX_SGI_WRITES],
    count: usize,
}

impl SgiPlan {
    /// The writes, in order.
    pub fn writes(&self) -> &[SgiRequest] {
        &self.writes[..self.count]
    }

    fn push(&mut self, request: SgiRequest) {
        if self.count < MAX_SGI_WRITES {
            self.writes[self.count] = request;
            self.count += 1;
        }
    }
}

/// The register values, comma-separated hex.
impl fmt::Display for SgiPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, w) in self.writes().iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{:#x}", w.value())?;
        }
        Ok(())
    }
}

/// SGIs `intid` aimed at PEs that are not among `cpus` (the slice's vCPU
/// affinities): in cluster 0.0.0 the Aff0 values 0..=15 it does not have,
/// all of clusters 0.0.1, 0.1.0 and 1.0.0, Aff0 16..=31 (RS = 1) and
/// 240..=255 (RS = 15) of cluster 0.0.0, each without the slice's own
/// vCPUs; a write whose list would be empty is left out. Last, one
/// all-but-self broadcast (which must stay inside the slice).
pub fn outside_sgi_plan(cpus: &[u64], intid: u8) -> SgiPlan {
    let mut plan = SgiPlan {
        writes: [SgiRequest {
            intid,
            target: SgiTarget::AllButSelf,
        }; MAX_SGI_WRITES],
        count: 0,
    };
    let clusters: [(u8, u8, u8, u8); 6] = [
        (0, 0, 0, 0),
        (0, 0, 1, 0),
        (0, 1, 0, 0),
        (1, 0, 0, 0),
        (0, 0, 0, 1),
        (0, 0, 0, 15),
    ];
    for (aff3, aff2, aff1, rs) in clusters {
        let list = (0..16u8)
            .filter(|b| !cpus.contains(&affinity(aff3, aff2, aff1, rs * 16 + b)))
            .fold(0u16, |list, b| list | (1 << b));
        if list != 0 {
            plan.push(SgiRequest {
                intid,
                target: SgiTarget::List {
                    aff3,
                    aff2,
                    aff1,
                    rs,
                    list,
                },
            });
        }
    }
    plan.push(SgiRequest {
        intid,
        target: SgiTarget::AllButSelf,
    });
    plan
}

/// GICD_TYPER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DistributorType(pub u32);

impl DistributorType {
    /// Highest SPI INTID the distributor implements (at most 1019).
    pub fn max_spi(self) -> u32 {
        let lines = LocalRegisterCopy::<u32, GICD_TYPER::Register>::new(self.0)
            .read(GICD_TYPER::ITLinesNumber);
        (32 * (lines + 1) - 1).min(1019)
    }
}

/// GICR_TYPER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedistributorType(pub u64);

impl RedistributorType {
    fn reg(self) -> LocalRegisterCopy<u64, GICR_TYPER::Register> {
        LocalRegisterCopy::new(self.0)
    }

    /// The affinity of the PE this redistributor serves, in MPIDR layout.
    pub fn affinity(self) -> u64 {
        let r = self.reg();
        affinity(
            r.read(GICR_TYPER::Aff3) as u8,
            r.read(GICR_TYPER::Aff2) as u8,
            r.read(GICR_TYPER::Aff1) as u8,
            r.read(GICR_TYPER::Aff0) as u8,
        )
    }

    /// Whether this is the last frame of its region.
    pub fn is_last(self) -> bool {
        self.reg().is_set(GICR_TYPER::Last)
    }

    /// Distance to the next frame: 256 KiB with VLPI frames, else 128 KiB.
    pub fn frame_stride(self) -> u64 {
        if self.reg().is_set(GICR_TYPER::VLPIS) {
            gicr::STRIDE_V4
        } else {
            gicr::STRIDE_V3
        }
    }
}

/// Where a GICD_IROUTER value sends its SPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// IRM = 1: any participating PE.
    AnyPe,
    /// The PE with this affinity.
    Pe(u64),
}

/// The GICD_IROUTER value that routes to the PE `mpidr` (IRM = 0).
pub fn irouter_value(mpidr: u64) -> u64 {
    let [aff0, aff1, aff2, aff3] = affinity_fields(mpidr);
    let mut reg = LocalRegisterCopy::<u64, GICD_IROUTER::Register>::new(0);
    reg.modify(
        GICD_IROUTER::Aff3.val(u64::from(aff3))
            + GICD_IROUTER::Aff2.val(u64::from(aff2))
            + GICD_IROUTER::Aff1.val(u64::from(aff1))
            + GICD_IROUTER::Aff0.val(u64::from(aff0)),
    );
    reg.get()
}

/// Decodes a GICD_IROUTER value.
pub fn route(irouter: u64) -> Route {
    let reg = LocalRegisterCopy::<u64, GICD_IROUTER::Register>::new(irouter);
    if reg.is_set(GICD_IROUTER::IRM) {
        Route::AnyPe
    } else {
        Route::Pe(affinity(
            reg.read(GICD_IROUTER::Aff3) as u8,
            reg.read(GICD_IROUTER::Aff2) as u8,
            reg.read(GICD_IROUTER::Aff1) as u8,
            reg.read(GICD_IROUTER::Aff0) as u8,
        ))
    }
}

/// Whether a GICD_IROUTER value keeps its SPI inside the slice whose vCPU
/// affinities are `cpus` (IRM = 1 counts: the PEs are the slice's).
pub fn routes_inside(irouter: u64, cpus: &[u64]) -> bool {
    match route(irouter) {
        Route::AnyPe => true,
        Route::Pe(mpidr) => cpus.contains(&mpidr),
    }
}

/// Words of a one-bit-per-INTID register block (INTIDs 0..=1023).
pub const BIT_WORDS: usize = 32;

/// SPIs `spi-foreign` attacks besides the extra one: none is the UART's on
/// the microvisor (it owns INTID 33 only).
pub const FOREIGN_SPIS: RangeInclusive<u32> = 34..=95;
/// The last SPI INTID there can be, attacked too.
pub const LAST_SPI: u32 = 1019;

/// A set of INTIDs 0..=1023 as the words of a one-bit-per-INTID register
/// (GICD_ISENABLER<n> and friends: INTID i is bit i % 32 of word i / 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntidSet {
    words: [u32; BIT_WORDS],
}

impl IntidSet {
    /// The empty set.
    pub const fn new() -> IntidSet {
        IntidSet {
            words: [0; BIT_WORDS],
        }
    }

    /// The SPIs `spi-foreign` attacks: [`FOREIGN_SPIS`] and [`LAST_SPI`],
    /// without the slice's own INTIDs `own`.
    pub fn foreign_spis(own: &[u32]) -> IntidSet {
        let mut set = IntidSet::new();
        for intid in FOREIGN_SPIS.chain(core::iter::once(LAST_SPI)) {
            if !own.contains(&intid) {
                set.insert(intid);
            }
        }
        set
    }

    /// Adds `intid` (ignored above 1023).
    pub fn insert(&mut self, intid: u32) {
        if let Some(word) = self.words.get_mut(intid as usize / 32) {
            *word |= 1 << (intid % 32);
        }
    }

    /// Whether `intid` is in the set.
    pub fn contains(&self, intid: u32) -> bool {
        self.words
            .get(intid as usize / 32)
            .is_some_and(|w| w & (1 << (intid % 32)) != 0)
    }

    /// Number of INTIDs in the set.
    pub fn len(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Word `index` (the bits of INTIDs 32 * index ..).
    pub fn word(&self, index: usize) -> u32 {
        self.words.get(index).copied().unwrap_or(0)
    }

    /// Replaces word `index` (ignored beyond the last word).
    pub fn set_word(&mut self, index: usize, bits: u32) {
        if let Some(word) = self.words.get_mut(index) {
            *word = bits;
        }
    }

    /// `(index, bits)` of the non-empty words, in order.
    pub fn words(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.words
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, w)| w != 0)
    }

    /// The INTIDs, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..32 * BIT_WORDS as u32).filter(|&i| self.contains(i))
    }

    /// For a one-byte-per-INTID register (GICD_IPRIORITYR<n>): the mask of
    /// the set's bytes in 32-bit word `index` (INTIDs 4 * index ..= +3).
    pub fn byte_mask(&self, index: usize) -> u32 {
        (0..4u32)
            .filter(|b| self.contains(4 * index as u32 + b))
            .fold(0, |mask, b| mask | (0xff << (8 * b)))
    }

    /// The 32-bit words of a one-byte-per-INTID register that hold some of
    /// the set's INTIDs, in order.
    pub fn byte_words(&self) -> impl Iterator<Item = usize> + '_ {
        (0..8 * BIT_WORDS).filter(|&i| self.byte_mask(i) != 0)
    }
}

/// The INTIDs as comma-separated runs, e.g. `34-39,41-95,1019`.
impl fmt::Display for IntidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut run: Option<(u32, u32)> = None;
        let mut first = true;
        let mut emit = |f: &mut fmt::Formatter<'_>, (lo, hi): (u32, u32)| {
            let sep = if first { "" } else { "," };
            first = false;
            if lo == hi {
                write!(f, "{sep}{lo}")
            } else {
                write!(f, "{sep}{lo}-{hi}")
            }
        };
        for intid in self.iter() {
            run = match run {
                Some((lo, hi)) if hi + 1 == intid => Some((lo, intid)),
                Some(done) => {
                    emit(f, done)?;
                    Some((intid, intid))
                }
                None => Some((intid, intid)),
            };
        }
        match run {
            Some(done) => emit(f, done),
            None => f.write_str("none"),
        }
    }
}

impl Default for IntidSet {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgi1r_fields_are_where_the_spec_puts_them() {
        let r = SgiRequest {
            intid: 13,
            target: SgiTarget::List {
                aff3: 0x44,
                aff2: 0x33,
                aff1: 0x22,
                rs: 0x5,
                list: 0xbeef,
            },
        };
        assert_eq!(r.value(), 0x0044_5033_0d22_beef);
        assert_eq!(SgiRequest::from_value(r.value()), r);
        let all = SgiRequest {
            intid: 1,
            target: SgiTarget::AllButSelf,
        };
        assert_eq!(all.value(), (1 << 40) | (1 << 24));
        assert_eq!(SgiRequest::from_value(all.value()), all);
        assert_eq!(all.targets().count(), 0);
    }

    #[test]
    fn sgi_to_one_pe() {
        assert_eq!(SgiRequest::to(1, 5).value(), (5 << 24) | 0b10);
        let r = SgiRequest::to(affinity(1, 2, 3, 0x21), 7);
        assert_eq!(r.targets().collect::<Vec<_>>(), [affinity(1, 2, 3, 0x21)]);
        assert_eq!(
            r.value(),
            (1 << 48) | (2 << 44) | (2 << 32) | (7 << 24) | (3 << 16) | 0b10
        );
    }

    #[test]
    fn outside_plan_never_names_a_slice_cpu() {
        let cpus = [0, 1, 2, 3];
        let plan = outside_sgi_plan(&cpus, ATTACK_SGI);
        let w = plan.writes();
        assert_eq!(w.len(), 7);
        // Aff0 4..=15 of cluster 0.
        assert_eq!(w[0].value(), (13 << 24) | 0xfff0);
        assert_eq!(w[1].value(), (13 << 24) | (1 << 16) | 0xffff);
        assert_eq!(w[2].value(), (13 << 24) | (1 << 32) | 0xffff);
        assert_eq!(w[3].value(), (13 << 24) | (1 << 48) | 0xffff);
        assert_eq!(w[4].value(), (13 << 24) | (1 << 44) | 0xffff);
        assert_eq!(w[5].value(), (13 << 24) | (15 << 44) | 0xffff);
        assert_eq!(w[6].target, SgiTarget::AllButSelf);
        for r in w {
            assert_eq!(r.intid, ATTACK_SGI);
            assert!(r.targets().all(|t| !cpus.contains(&t)));
        }
        assert_eq!(
            plan.to_string(),
            "0xd00fff0,0xd01ffff,0x10d00ffff,0x100000d00ffff,0x10000d00ffff,0xf0000d00ffff,0x1000d000000"
        );
    }

    #[test]
    fn outside_plan_skips_full_clusters_and_spares_big_slices() {
        // 20 vCPUs: Aff0 0..=19. Cluster 0 RS 0 is all inside: no write;
        // RS 1 only has Aff0 20..=31 outside.
        let cpus: Vec<u64> = (0..20).collect();
        let plan = outside_sgi_plan(&cpus, 2);
        let lists: Vec<_> = plan.writes().iter().map(|w| w.target).collect();
        assert_eq!(lists.len(), 6);
        assert_eq!(
            lists[3],
            SgiTarget::List {
                aff3: 0,
                aff2: 0,
                aff1: 0,
                rs: 1,
                list: 0xfff0
            }
        );
        for r in plan.writes() {
            assert!(r.targets().all(|t| !cpus.contains(&t)));
        }
        // A vCPU with Aff1 = 1 is spared in cluster 0.0.1.
        let plan = outside_sgi_plan(&[0, 0x100], 0);
        assert_eq!(
            plan.writes()[1].target,
            SgiTarget::List {
                aff3: 0,
                aff2: 0,
                aff1: 1,
                rs: 0,
                list: 0xfffe
            }
        );
    }

    #[test]
    fn distributor_lines() {
        // QEMU virt: ITLinesNumber 8, 288 INTIDs.
        assert_eq!(DistributorType(0x0378_0008).max_spi(), 287);
        assert_eq!(DistributorType(0).max_spi(), 31);
        assert_eq!(DistributorType(1).max_spi(), 63);
        assert_eq!(DistributorType(31).max_spi(), 1019);
    }

    #[test]
    fn redistributor_typer() {
        // QEMU virt, -smp 2: frame 1 of 2.
        let t = RedistributorType(0x0000_0001_0000_0111);
        assert_eq!(t.affinity(), 1);
        assert!(t.is_last());
        assert_eq!(t.frame_stride(), 0x2_0000);
        let t = RedistributorType(0x0403_0201_0000_0002);
        assert_eq!(t.affinity(), affinity(4, 3, 2, 1));
        assert!(!t.is_last());
        assert_eq!(t.frame_stride(), 0x4_0000);
    }

    #[test]
    fn irouter_round_trip_and_containment() {
        let v = irouter_value(affinity(1, 2, 3, 4));
        assert_eq!(v, 0x01_0002_0304);
        assert_eq!(route(v), Route::Pe(affinity(1, 2, 3, 4)));
        assert_eq!(route(1 << 31 | 7), Route::AnyPe);
        let cpus = [0, 1];
        assert!(routes_inside(0, &cpus));
        assert!(routes_inside(1, &cpus));
        assert!(routes_inside(1 << 31, &cpus));
        assert!(!routes_inside(2, &cpus));
        assert!(!routes_inside(0x100, &cpus));
        assert_eq!(first_unused(&cpus, 2, 1), 2);
        assert_eq!(first_unused(&[0, 0x100], 0x100, 0x100), 0x200);
    }

    #[test]
    fn foreign_spis_leave_out_the_own_ones() {
        let set = IntidSet::foreign_spis(&[33, 40]);
        assert_eq!(set.len(), 62 - 1 + 1);
        assert!(!set.contains(33) && !set.contains(40) && !set.contains(32));
        assert!(set.contains(34) && set.contains(95) && set.contains(1019));
        assert!(!set.contains(96) && !set.contains(1018));
        let words: Vec<_> = set.words().collect();
        assert_eq!(words, [(1, 0xffff_fefc), (2, 0xffff_ffff), (31, 1 << 27)]);
        assert_eq!(set.byte_mask(8), 0xffff_0000); // INTIDs 32..=35
        assert_eq!(set.byte_mask(10), 0xffff_ff00); // INTIDs 40..=43
        assert_eq!(set.byte_mask(254), 0xff00_0000); // 1016..=1019
        assert_eq!(set.byte_words().count(), 16 + 1);
        assert_eq!(set.iter().next(), Some(34));
        assert_eq!(set.iter().last(), Some(1019));
        assert_eq!(set.to_string(), "34-39,41-95,1019");
        assert_eq!(IntidSet::foreign_spis(&[33]).to_string(), "34-95,1019");
        let mut s = IntidSet::new();
        assert_eq!(s.to_string(), "none");
        s.insert(5000);
        assert!(s.is_empty());
        s.set_word(1, 0b101);
        s.set_word(99, 1);
        assert_eq!(s.to_string(), "32,34");
    }
}
