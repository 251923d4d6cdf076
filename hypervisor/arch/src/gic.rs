//! The physical GICv3 (Arm IHI 0069 "GICv3 and GICv4 architecture specification"): the
//! distributor (§12.9), each core's redistributor (§12.10-12.11) and CPU interface (§12.2).
//! The hypervisor keeps all physical interrupts in Group 1 and uses one SGI of its own to
//! interrupt other cores.

use core::fmt;
use core::time::Duration;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::ICC_SRE_EL2;
use spin::Once;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

use microvisor_logic::inventory::Gic as GicInventory;

use crate::regs::{
    ICC_BPR1_EL1, ICC_CTLR_EL1, ICC_DIR_EL1, ICC_EOIR1_EL1, ICC_IAR1_EL1, ICC_IGRPEN1_EL1,
    ICC_PMR_EL1, ICC_SGI1R_EL1, SGI1R,
};

/// The SGI the hypervisor sends to interrupt another core.
pub const HYPERVISOR_SGI: u32 = 8;
/// SGI that asks a core to make its vCPU's vPE resident (GICv4 direct injection): rare, so
/// kept apart from [`HYPERVISOR_SGI`], whose handling is on the IPI path.
pub const RESIDENCY_SGI: u32 = 9;
/// The GIC maintenance interrupt (PPI 9, INTID 25), for list register management.
pub const MAINTENANCE_PPI: u32 = 25;
/// The EL1 virtual timer (PPI 11, INTID 27): a guest's timer, injected with the HW bit.
pub const VIRTUAL_TIMER_PPI: u32 = 27;
/// The EL1 physical timer (PPI 14, INTID 30): a guest's other timer, injected the same way.
pub const PHYSICAL_TIMER_PPI: u32 = 30;
/// INTIDs 1020-1023 are special (1023 = no pending interrupt); LPIs start at 8192.
const SPECIAL_INTIDS: core::ops::RangeInclusive<u32> = 1020..=1023;
/// Priority given to every interrupt the hypervisor enables.
const DEFAULT_PRIORITY: u8 = 0xa0;
/// How long a register write may take to take effect (RWP) or a redistributor to wake up;
/// the hardware needs microseconds, so this only catches a GIC that does not answer.
const GIC_TIMEOUT: Duration = Duration::from_millis(100);

register_bitfields![u32,
    GICD_CTLR [
        ENABLE_GRP0 OFFSET(0) NUMBITS(1) [],
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) [],
        ARE OFFSET(4) NUMBITS(1) [],
        RWP OFFSET(31) NUMBITS(1) []
    ],
    GICR_WAKER [
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) [],
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) []
    ],
    GICR_CTLR [
        ENABLE_LPIS OFFSET(0) NUMBITS(1) [],
        RWP OFFSET(3) NUMBITS(1) []
    ]
];

register_bitfields![u64,
    GICR_TYPER [
        VLPIS OFFSET(1) NUMBITS(1) [],
        LAST OFFSET(4) NUMBITS(1) [],
        RVPEID OFFSET(7) NUMBITS(1) [],
        AFFINITY OFFSET(32) NUMBITS(32) []
    ]
];

register_structs! {
    /// GICD register map (§12.9, Table 12-25).
    DistributorRegisters {
        (0x0000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => typer: ReadOnly<u32>),
        (0x0008 => _reserved0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => icenabler: [ReadWrite<u32>; 32]),
        (0x0200 => _reserved1),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 1024]),
        (0x0800 => _reserved2),
        (0x0c00 => icfgr: [ReadWrite<u32>; 64]),
        (0x0d00 => _reserved4),
        (0x6100 => irouter: [ReadWrite<u64>; 988]),
        (0x7fe0 => _reserved3),
        (0x10000 => @END),
    }
}

register_structs! {
    /// GICR RD_base frame (§12.10, Table 12-27).
    RedistributorRegisters {
        (0x0000 => ctlr: ReadWrite<u32, GICR_CTLR::Register>),
        (0x0004 => _iidr: ReadOnly<u32>),
        (0x0008 => typer: ReadOnly<u64, GICR_TYPER::Register>),
        (0x0010 => _statusr: ReadWrite<u32>),
        (0x0014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => _reserved0),
        (0x0070 => propbaser: ReadWrite<u64>),
        (0x0078 => pendbaser: ReadWrite<u64>),
        (0x0080 => _reserved1),
        (0x10000 => @END),
    }
}

register_structs! {
    /// GICR SGI_base frame (§12.11, Table 12-29).
    SgiRegisters {
        (0x0000 => _reserved0),
        (0x0080 => igroupr0: ReadWrite<u32>),
        (0x0084 => _reserved1),
        (0x0100 => isenabler0: ReadWrite<u32>),
        (0x0104 => _reserved2),
        (0x0180 => icenabler0: ReadWrite<u32>),
        (0x0184 => _reserved3),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 32]),
        (0x0420 => _reserved4),
        (0x10000 => @END),
    }
}

struct Gic {
    distributor: &'static DistributorRegisters,
    redistributors_base: u64,
    redistributors_end: u64,
}

// SAFETY: the register blocks are MMIO reached with volatile accesses, and the GIC is built to
// be driven from every core at once; the distributor's shared registers are written only
// through functions of this module: per-INTID registers (set/clear-enable, -pending,
// -active, IROUTER), which the hardware keeps atomic, and GICD_ICFGR, whose read-modify-write
// in `set_trigger` covers 16 INTIDs and is correct only because it runs at boot on the boot
// core alone.
unsafe impl Sync for Gic {}
// SAFETY: as above.
unsafe impl Send for Gic {}

static GIC: Once<Gic> = Once::new();

/// Why the GIC could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicError {
    /// `init` has not run.
    NotInitialised,
    /// No redistributor frame has this core's affinity.
    NoRedistributor,
    /// The redistributor does not support LPIs, or the tables given do not fit.
    NoLpis,
    /// The register bit `what` did not reach its expected value within [`GIC_TIMEOUT`].
    Timeout { what: &'static str },
    /// LPIs were already enabled on this redistributor (by the firmware or an earlier
    /// loader): its tables cannot be changed any more.
    LpisAlreadyEnabled,
    /// The redistributor took its LPI tables as non-shareable: it would need cache
    /// maintenance for them, which the hypervisor does not do.
    NotCoherent,
}

impl fmt::Display for GicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GicError::NotInitialised => f.write_str("the distributor was not initialised"),
            GicError::NoRedistributor => {
                f.write_str("no redistributor frame has this core's affinity")
            }
            GicError::NoLpis => f.write_str("the redistributor cannot take these LPI tables"),
            GicError::Timeout { what } => write!(
                f,
                "timed out after {} ms waiting for {what}",
                GIC_TIMEOUT.as_millis()
            ),
            GicError::LpisAlreadyEnabled => f.write_str(
                "LPIs were already enabled on this core's redistributor (its tables cannot change)",
            ),
            GicError::NotCoherent => f.write_str(
                "the redistributor reads its LPI tables without cache coherency (not supported)",
            ),
        }
    }
}

/// Brings up the distributor (boot core, once): affinity routing on, every SPI disabled and in
/// Group 1, Group 1 enabled.
///
/// # Safety
/// The regions in `gic` must be the node's GICv3 registers, identity mapped as Device memory,
/// and nothing else may drive the distributor.
pub unsafe fn init(gic: &GicInventory) -> Result<(), GicError> {
    // SAFETY: the caller guarantees the distributor registers are mapped at this address.
    let distributor = unsafe { &*(gic.distributor.base as *const DistributorRegisters) };
    let written = || wait_for("GICD_CTLR.RWP", || !distributor.ctlr.is_set(GICD_CTLR::RWP));
    distributor.ctlr.set(0);
    written()?;
    let lines = ((distributor.typer.get() & 0x1f) as usize + 1) * 32;
    for word in 1..(lines / 32).min(32) {
        distributor.icenabler[word].set(u32::MAX);
        distributor.igroupr[word].set(u32::MAX);
    }
    for intid in 32..lines.min(1020) {
        distributor.ipriorityr[intid].set(DEFAULT_PRIORITY);
    }
    distributor.ctlr.write(GICD_CTLR::ARE::SET);
    written()?;
    distributor
        .ctlr
        .write(GICD_CTLR::ARE::SET + GICD_CTLR::ENABLE_GRP1::SET);
    written()?;
    GIC.call_once(|| Gic {
        distributor,
        redistributors_base: gic.redistributors.base,
        redistributors_end: gic.redistributors.end(),
    });
    Ok(())
}

/// The GIC architecture version the node's redistributors implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// GICv3: LPIs, no virtual LPIs.
    V3,
    /// GICv4.0: virtual LPIs (GICR_TYPER.VLPIS), directly injected by the ITS into resident
    /// vPEs.
    V4_0,
    /// GICv4.1: also vPE IDs in the redistributors (GICR_TYPER.RVPEID) and virtual SGIs.
    V4_1,
}

impl Version {
    /// The name the boot banner gives it.
    pub fn name(self) -> &'static str {
        match self {
            Version::V3 => "GICv3",
            Version::V4_0 => "GICv4.0",
            Version::V4_1 => "GICv4.1",
        }
    }
}

/// The version the first redistributor reports (a GIC's redistributors all implement the
/// same one), once [`init`] has run.
pub fn version() -> Option<Version> {
    let gic = GIC.get()?;
    // SAFETY: `init` was given the redistributor region, mapped as Device memory; its first
    // frame starts with an RD_base register block.
    let rd = unsafe { &*(gic.redistributors_base as *const RedistributorRegisters) };
    let typer = rd.typer.extract();
    Some(
        match (
            typer.is_set(GICR_TYPER::VLPIS),
            typer.is_set(GICR_TYPER::RVPEID),
        ) {
            (false, _) => Version::V3,
            (true, false) => Version::V4_0,
            (true, true) => Version::V4_1,
        },
    )
}

/// Waits (at most [`GIC_TIMEOUT`]) until `done`; `what` names the register bit waited for.
fn wait_for(what: &'static str, done: impl FnMut() -> bool) -> Result<(), GicError> {
    if crate::cpu::wait_until(GIC_TIMEOUT, done) {
        Ok(())
    } else {
        Err(GicError::Timeout { what })
    }
}

/// Whether the hypervisor drives direct injection on this GIC: a GICv4.0 (GICR_TYPER.VLPIS
/// without RVPEID). GICv4.1 lays out GICR_VPROPBASER/VPENDBASER and VMAPP differently and is
/// driven like a GICv3 (every device interrupt through EL2) until it is supported; until
/// 2026-12-04 it was driven as a GICv4.0, which would make every vPE resident with its groups
/// off (found in review; QEMU models GICv4.0 only). False before [`init`].
pub fn virtual_lpis() -> bool {
    version() == Some(Version::V4_0)
}

/// This core's redistributor frames (RD_base, SGI_base).
fn own_redistributor(
    gic: &Gic,
) -> Option<(&'static RedistributorRegisters, &'static SgiRegisters)> {
    let affinity = crate::cpu::mpidr();
    // GICR_TYPER.Affinity is Aff3.Aff2.Aff1.Aff0.
    let wanted = ((affinity >> 32) & 0xff) << 24 | (affinity & 0xff_ffff);
    let mut frame = gic.redistributors_base;
    while frame < gic.redistributors_end {
        // SAFETY: `frame` lies in the redistributor region `init` was given, mapped as
        // Device memory; each frame starts with an RD_base register block.
        let rd = unsafe { &*(frame as *const RedistributorRegisters) };
        let typer = rd.typer.extract();
        if typer.read(GICR_TYPER::AFFINITY) == wanted {
            // SAFETY: the SGI_base frame follows RD_base by 64 KiB in the same region.
            let sgi = unsafe { &*((frame + 0x1_0000) as *const SgiRegisters) };
            return Some((rd, sgi));
        }
        if typer.is_set(GICR_TYPER::LAST) {
            break;
        }
        // GICv4 redistributors have two more frames (VLPI_base, reserved).
        frame += if typer.is_set(GICR_TYPER::VLPIS) {
            0x4_0000
        } else {
            0x2_0000
        };
    }
    None
}

/// Brings up this core's redistributor and CPU interface: awake, SGIs/PPIs in Group 1 and
/// disabled except the hypervisor SGI, system-register interface on, Group 1 enabled.
pub fn init_core() -> Result<(), GicError> {
    let gic = GIC.get().ok_or(GicError::NotInitialised)?;
    let (rd, sgi) = own_redistributor(gic).ok_or(GicError::NoRedistributor)?;
    rd.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
    wait_for("GICR_WAKER.ChildrenAsleep", || {
        !rd.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP)
    })?;
    sgi.icenabler0.set(u32::MAX);
    wait_for("GICR_CTLR.RWP", || !rd.ctlr.is_set(GICR_CTLR::RWP))?;
    sgi.igroupr0.set(u32::MAX);
    for priority in sgi.ipriorityr.iter() {
        priority.set(DEFAULT_PRIORITY);
    }
    sgi.isenabler0.set(
        1 << HYPERVISOR_SGI
            | 1 << RESIDENCY_SGI
            | 1 << MAINTENANCE_PPI
            | 1 << VIRTUAL_TIMER_PPI
            | 1 << PHYSICAL_TIMER_PPI,
    );

    ICC_SRE_EL2.write(
        ICC_SRE_EL2::SRE::SET
            + ICC_SRE_EL2::DFB::SET
            + ICC_SRE_EL2::DIB::SET
            + ICC_SRE_EL2::ENABLE::SET,
    );
    barrier::isb(barrier::SY);
    ICC_PMR_EL1.set(0xff);
    ICC_BPR1_EL1.set(0);
    // EOImode 1: EOIR only drops the running priority; deactivation is separate (ICC_DIR_EL1),
    // or done by the guest for interrupts injected with the HW bit.
    ICC_CTLR_EL1.set(ICC_CTLR_EL1.get() | 1 << 1);
    ICC_IGRPEN1_EL1.set(1);
    barrier::isb(barrier::SY);
    Ok(())
}

/// First LPI INTID.
pub const LPI_BASE: u32 = 8192;
/// Memory attributes of LPI tables in GICR_(V)PROPBASER and GICR_(V)PENDBASER: inner
/// write-back read/write-allocate, inner shareable.
const CACHEABLE_WB: u64 = 0b111 << 7;
const INNER_SHAREABLE: u64 = 0b01 << 10;

/// How an ITS names this core's redistributor: its physical address if `by_address`, else its
/// processor number (GICR_TYPER.Processor_Number).
pub fn redistributor_target(by_address: bool) -> Option<u64> {
    let gic = GIC.get()?;
    let (rd, _) = own_redistributor(gic)?;
    Some(if by_address {
        rd as *const RedistributorRegisters as u64
    } else {
        (rd.typer.get() >> 8) & 0xffff
    })
}

/// Turns LPIs on for this core: LPI configuration in the table at physical address
/// `properties` (one byte per LPI from INTID 8192, shared by all cores) covering INTIDs below
/// `1 << id_bits`, pending state in `pending` (this core's own, 64 KiB aligned, zeroed).
pub fn enable_lpis(
    properties: u64,
    id_bits: u8,
    pending: &crate::memory::SharedMemory,
) -> Result<(), GicError> {
    let gic = GIC.get().ok_or(GicError::NotInitialised)?;
    let (rd, _) = own_redistributor(gic).ok_or(GicError::NoRedistributor)?;
    if rd.typer.get() & 1 == 0 {
        return Err(GicError::NoLpis);
    }
    // Rewriting the table registers with EnableLPIs set is UNPREDICTABLE (GICv3 §12.11).
    if rd.ctlr.is_set(GICR_CTLR::ENABLE_LPIS) {
        return Err(GicError::LpisAlreadyEnabled);
    }
    let pending_region = pending.region();
    if !pending_region.base.is_multiple_of(0x1_0000) || pending_region.size < (1u64 << id_bits) / 8
    {
        return Err(GicError::NoLpis);
    }
    pending
        .zero(0, pending_region.size)
        .map_err(|_| GicError::NoLpis)?;
    rd.propbaser
        .set(properties | CACHEABLE_WB | INNER_SHAREABLE | u64::from(id_bits - 1));
    rd.pendbaser
        .set(1 << 62 | pending_region.base | CACHEABLE_WB | INNER_SHAREABLE);
    // Shareability is RO-capable: a redistributor that reads its tables non-coherently
    // reports Non-shareable back (§12.11.23), and would miss what the hypervisor writes
    // through its caches (the property table's enables).
    let shareability = |value: u64| (value >> 10) & 0b11;
    if shareability(rd.propbaser.get()) == 0 || shareability(rd.pendbaser.get()) == 0 {
        return Err(GicError::NotCoherent);
    }
    barrier::dsb(barrier::SY);
    rd.ctlr.modify(GICR_CTLR::ENABLE_LPIS::SET);
    barrier::dsb(barrier::SY);
    Ok(())
}

/// GICR_VPROPBASER and GICR_VPENDBASER, in the VLPI_base frame (RD_base + 128 KiB) of a
/// GICv4 redistributor (§9.11).
const VLPI_FRAME: u64 = 0x2_0000;
const VPROPBASER: u64 = 0x70;
const VPENDBASER: u64 = 0x78;
const VPENDBASER_VALID: u64 = 1 << 63;
const VPENDBASER_PENDING_LAST: u64 = 1 << 61;
const VPENDBASER_DIRTY: u64 = 1 << 60;

/// This core's GICR_VPROPBASER and GICR_VPENDBASER (GICv4 redistributors only).
fn own_vlpi_registers() -> Result<(&'static ReadWrite<u64>, &'static ReadWrite<u64>), GicError> {
    let gic = GIC.get().ok_or(GicError::NotInitialised)?;
    let (rd, _) = own_redistributor(gic).ok_or(GicError::NoRedistributor)?;
    if !rd.typer.is_set(GICR_TYPER::VLPIS) {
        return Err(GicError::NoLpis);
    }
    let frame = rd as *const RedistributorRegisters as u64 + VLPI_FRAME;
    // SAFETY: a redistributor with VLPIS has its VLPI_base frame 128 KiB after RD_base, in
    // the same region `init` was given, mapped as Device memory; these two 64-bit registers
    // are this core's alone (only its own vPE is ever made resident here).
    unsafe {
        Ok((
            &*((frame + VPROPBASER) as *const ReadWrite<u64>),
            &*((frame + VPENDBASER) as *const ReadWrite<u64>),
        ))
    }
}

/// Empties a vPE's virtual pending table (every vLPI not pending), for a vPE that is not
/// resident and that no translation names any more: at the start of its slice's run.
pub fn clear_virtual_pending_table(pending: &crate::memory::SharedMemory) -> Result<(), GicError> {
    pending
        .zero(0, pending.region().size)
        .map_err(|_| GicError::NoLpis)?;
    barrier::dsb(barrier::SY);
    Ok(())
}

/// Makes a vPE resident on this core's redistributor (GICv4.0 §9.11): its vLPIs' property
/// table at physical address `properties` covering INTIDs below `1 << id_bits`, their pending
/// state in `pending` (the vPE's virtual pending table, 64 KiB aligned, emptied when the run
/// began: [`clear_virtual_pending_table`]). vLPIs that became pending while the vPE was not
/// resident are in it and are delivered (PendingLast = 1); from then on the ITS delivers the
/// vPE's vLPIs straight to this core's virtual CPU interface. The caller makes sure no vPE is
/// resident here already.
pub fn make_vpe_resident(
    properties: u64,
    id_bits: u8,
    pending: &crate::memory::SharedMemory,
) -> Result<(), GicError> {
    let (vpropbaser, vpendbaser) = own_vlpi_registers()?;
    let table = pending.region();
    if !table.base.is_multiple_of(0x1_0000)
        || !(14..=16).contains(&id_bits)
        || table.size < (1u64 << id_bits) / 8
        || !properties.is_multiple_of(4096)
    {
        return Err(GicError::NoLpis);
    }
    vpropbaser.set(properties | CACHEABLE_WB | INNER_SHAREABLE | u64::from(id_bits - 1));
    vpendbaser.set(
        VPENDBASER_VALID | VPENDBASER_PENDING_LAST | table.base | CACHEABLE_WB | INNER_SHAREABLE,
    );
    barrier::dsb(barrier::SY);
    Ok(())
}

/// Makes this core's resident vPE (if any) non-resident, waiting until the redistributor has
/// written its pending state back (GICR_VPENDBASER.Dirty clear).
pub fn make_vpe_non_resident() -> Result<(), GicError> {
    let (_, vpendbaser) = own_vlpi_registers()?;
    let value = vpendbaser.get();
    if value & VPENDBASER_VALID == 0 {
        return Ok(());
    }
    vpendbaser.set(value & !(VPENDBASER_VALID | VPENDBASER_PENDING_LAST));
    wait_for("GICR_VPENDBASER.Dirty", || {
        vpendbaser.get() & VPENDBASER_DIRTY == 0
    })
}

/// Sends the hypervisor SGI to the core with affinity `mpidr`.
pub fn send_hypervisor_sgi(mpidr: u64) {
    send_sgi(mpidr, HYPERVISOR_SGI);
}

/// Sends [`RESIDENCY_SGI`] to the core with affinity `mpidr`.
pub fn send_residency_sgi(mpidr: u64) {
    send_sgi(mpidr, RESIDENCY_SGI);
}

#[inline(always)]
fn send_sgi(mpidr: u64, intid: u32) {
    let aff0 = mpidr & 0xff;
    let value = SGI1R::TARGET_LIST.val(1 << (aff0 & 0xf))
        + SGI1R::RS.val(aff0 >> 4)
        + SGI1R::AFF1.val((mpidr >> 8) & 0xff)
        + SGI1R::AFF2.val((mpidr >> 16) & 0xff)
        + SGI1R::AFF3.val((mpidr >> 32) & 0xff)
        + SGI1R::INTID.val(u64::from(intid));
    // Make every store before this (the request the SGI announces) visible first.
    barrier::dsb(barrier::ISHST);
    ICC_SGI1R_EL1.set(value.value);
    barrier::isb(barrier::SY);
}

/// Acknowledges the highest-priority pending interrupt, if any.
pub fn acknowledge() -> Option<u32> {
    let intid = (ICC_IAR1_EL1.get() & 0xff_ffff) as u32;
    (!SPECIAL_INTIDS.contains(&intid)).then_some(intid)
}

/// Drops the running priority of an acknowledged interrupt (EOImode 1: it stays active).
pub fn end_of_interrupt(intid: u32) {
    ICC_EOIR1_EL1.set(u64::from(intid));
}

/// Deactivates an interrupt whose priority was dropped.
pub fn deactivate(intid: u32) {
    ICC_DIR_EL1.set(u64::from(intid));
}

/// Ends and deactivates an acknowledged interrupt the hypervisor handled itself.
pub fn complete(intid: u32) {
    end_of_interrupt(intid);
    deactivate(intid);
}

/// Makes SPI `intid` edge-triggered (`edge`) or level-sensitive (GICD_ICFGR<n>, §12.9.9).
/// Call it while the SPI is disabled, before [`route_spi`]: a device that pulses its line
/// (the SMMU's wired interrupts on QEMU) loses interrupts on a level-sensitive SPI. Only at
/// boot, on the boot core: the read-modify-write covers 16 INTIDs and takes no lock.
pub fn set_trigger(intid: u32, edge: bool) {
    let Some(gic) = GIC.get() else { return };
    if intid < 32 {
        return;
    }
    let Some(register) = gic.distributor.icfgr.get(intid as usize / 16) else {
        return;
    };
    let bit = 1 << ((intid % 16) * 2 + 1);
    let value = register.get();
    register.set(if edge { value | bit } else { value & !bit });
}

/// Routes SPI `intid` to the core with affinity `mpidr` and enables it.
pub fn route_spi(intid: u32, mpidr: u64) {
    let Some(gic) = GIC.get() else { return };
    let Some(index) = (intid as usize)
        .checked_sub(32)
        .filter(|&i| i < gic.distributor.irouter.len())
    else {
        return;
    };
    // IROUTER: Aff3 in bits 39:32, Aff2.Aff1.Aff0 in bits 23:0 (the MPIDR layout).
    gic.distributor.irouter[index].set(mpidr & 0xff_00ff_ffff);
    gic.distributor.isenabler[intid as usize / 32].set(1 << (intid % 32));
}
