//! The GICv3 as the probe uses it (Arm IHI 0069H): guarded MMIO to the
//! distributor and redistributor frames (device-tree addresses, never RAM),
//! the CPU interface's system registers, the SGI receiver of
//! `sgi-self-test` (set up by the receiving CPU itself, then waiting in WFI
//! with IRQs unmasked), and the IRQ handler that counts SGIs.
//!
//! IRQs are unmasked only inside `asm!` blocks that either never return or
//! declare every register the C ABI lets a callee clobber (`clobber_abi`),
//! so the IRQ entry, which saves only the general-purpose scratch registers,
//! never corrupts FP/SIMD state the compiler keeps live.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use aarch64_cpu::registers::{ICC_CTLR_EL1, Readable};
use microvisor_probe::MAX_CPUS;
use microvisor_probe::dt::{DEFAULT_GIC, GicLayout};
use microvisor_probe::gic::{
    DEFAULT_PRIORITY, FIRST_SPECIAL_INTID, GICD_CTLR, GICR_WAKER, ICC_CTLR, ICC_SRE, RECEIVER_PMR,
    RedistributorType, SELF_TEST_SGI, gicd, gicr,
};
pub use microvisor_probe::gic_attacks::GicError;
use microvisor_probe::its::FIRST_LPI;
use tock_registers::LocalRegisterCopy;

use super::guarded;
use super::{smp, timer};

/// How long register-write-pending and wake-up polls may take.
const POLL_TIMEOUT_MS: u64 = 20;

/// The GIC frames from the device tree (the `virt` layout without one).
#[derive(Clone, Copy, Debug)]
pub struct Gic {
    /// Where the tree says the distributor and redistributors are.
    pub layout: GicLayout,
}

/// Refuses addresses in the probe's RAM or image, so the guarded accesses
/// below never touch a Rust object.
fn device_address(addr: u64) -> Result<u64, GicError> {
    let in_ram = super::PLATFORM.get().is_some_and(|p| p.in_memory(addr));
    if in_ram || super::footprint().contains(addr) {
        Err(GicError::InRam(addr))
    } else {
        Ok(addr)
    }
}

/// Guarded 32-bit read of a GIC register.
pub fn read32(addr: u64, register: &'static str) -> Result<u32, GicError> {
    let addr = device_address(addr)?;
    // SAFETY: `addr` is outside the probe's RAM and image (checked above),
    // so it holds no Rust object; a fault is returned, not taken.
    unsafe { guarded::read32(addr) }.map_err(|f| GicError::Access(register, f))
}

/// Guarded 64-bit read of a GIC register.
pub fn read64(addr: u64, register: &'static str) -> Result<u64, GicError> {
    let addr = device_address(addr)?;
    // SAFETY: as in `read32`.
    unsafe { guarded::read64(addr) }.map_err(|f| GicError::Access(register, f))
}

/// Guarded 32-bit write of a GIC register.
pub fn write32(addr: u64, value: u32, register: &'static str) -> Result<(), GicError> {
    let addr = device_address(addr)?;
    // SAFETY: as in `read32`: the store changes no Rust object.
    unsafe { guarded::write32(addr, value) }.map_err(|f| GicError::Access(register, f))
}

/// Guarded 64-bit write of a GIC register.
pub fn write64(addr: u64, value: u64, register: &'static str) -> Result<(), GicError> {
    let addr = device_address(addr)?;
    // SAFETY: as in `write32`.
    unsafe { guarded::write64(addr, value) }.map_err(|f| GicError::Access(register, f))
}

impl Gic {
    /// The tree's GICv3, or the `virt` default.
    pub fn from_platform() -> Gic {
        Gic {
            layout: super::PLATFORM
                .get()
                .and_then(|p| p.gic)
                .unwrap_or(DEFAULT_GIC),
        }
    }

    /// Address of distributor register `offset`.
    pub fn gicd(&self, offset: u64) -> u64 {
        self.layout.distributor + offset
    }

    /// Base of the first redistributor frame.
    pub fn gicr_base(&self) -> u64 {
        self.layout.redistributors.base
    }

    /// Frame stride, from frame 0's GICR_TYPER (128 KiB if unreadable).
    pub fn gicr_stride(&self) -> u64 {
        read64(self.gicr_base() + gicr::TYPER, "gicr_typer")
            .map_or(gicr::STRIDE_V3, |t| RedistributorType(t).frame_stride())
    }

    /// RD_base of the frame whose GICR_TYPER names `affinity`, walking from
    /// the first frame to the one marked Last.
    pub fn frame_of(&self, affinity: u64) -> Result<u64, GicError> {
        let mut frame = self.gicr_base();
        for _ in 0..MAX_CPUS {
            let typer = RedistributorType(read64(frame + gicr::TYPER, "gicr_typer")?);
            if typer.affinity() == affinity {
                return Ok(frame);
            }
            if typer.is_last() {
                break;
            }
            frame += typer.frame_stride();
        }
        Err(GicError::NoFrame(affinity))
    }

    /// Enables affinity routing and both interrupt groups in GICD_CTLR, as
    /// Linux does, and waits for RWP to clear. Returns the value read back.
    pub fn enable_distributor(&self) -> Result<u32, GicError> {
        let ctlr = read32(self.gicd(gicd::CTLR), "gicd_ctlr")?;
        let mut value = LocalRegisterCopy::<u32, GICD_CTLR::Register>::new(ctlr);
        value.modify(
            GICD_CTLR::ARE::SET
                + GICD_CTLR::EnableGrp0OrGrp1NS::SET
                + GICD_CTLR::EnableGrp1OrGrp1A::SET,
        );
        write32(self.gicd(gicd::CTLR), value.get(), "gicd_ctlr")?;
        let deadline = timer::now() + timer::ticks_from_ms(POLL_TIMEOUT_MS);
        loop {
            let now = LocalRegisterCopy::<u32, GICD_CTLR::Register>::new(read32(
                self.gicd(gicd::CTLR),
                "gicd_ctlr",
            )?);
            if !now.is_set(GICD_CTLR::RWP) {
                return Ok(now.get());
            }
            if timer::now() > deadline {
                return Err(GicError::Timeout("gicd_ctlr", now.get()));
            }
        }
    }
}

/// Turns on the GIC system-register interface of the calling CPU
/// (ICC_SRE_EL1.SRE, then ISB) and checks that it stuck.
pub fn enable_system_registers() -> Result<(), GicError> {
    let sre = guarded::read_icc_sre_el1().map_err(|f| GicError::Access("icc_sre_el1", f))?;
    let mut value = LocalRegisterCopy::<u64, ICC_SRE::Register>::new(sre);
    value.modify(ICC_SRE::SRE::SET);
    guarded::write_icc_sre_el1(value.get()).map_err(|f| GicError::Access("icc_sre_el1", f))?;
    let back = guarded::read_icc_sre_el1().map_err(|f| GicError::Access("icc_sre_el1", f))?;
    if LocalRegisterCopy::<u64, ICC_SRE::Register>::new(back).is_set(ICC_SRE::SRE) {
        Ok(())
    } else {
        Err(GicError::NoSystemRegisters(back))
    }
}

/// ICC_CTLR_EL1.RSS: SGIs can name Aff0 16..=255. Call after
/// [`enable_system_registers`] succeeded.
pub fn range_selector_supported() -> bool {
    LocalRegisterCopy::<u64, ICC_CTLR::Register>::new(ICC_CTLR_EL1.get()).is_set(ICC_CTLR::RSS)
}

/// Sends an SGI: one ICC_SGI1R_EL1 write.
pub fn send_sgi(sgi1r: u64) -> Result<(), GicError> {
    guarded::write_icc_sgi1r_el1(sgi1r).map_err(|f| GicError::Access("icc_sgi1r_el1", f))
}

/// Sets ICC_PMR_EL1 (priority mask). GIC system registers must be enabled.
fn write_icc_pmr_el1(value: u64) {
    // SAFETY: a CPU-interface register write; no memory is touched. Only
    // called after `enable_system_registers` succeeded on this CPU.
    unsafe {
        core::arch::asm!("msr icc_pmr_el1, {}", in(reg) value, options(nomem, nostack, preserves_flags))
    };
}

/// Sets ICC_IGRPEN1_EL1 (Group 1 enable), then ISB.
fn write_icc_igrpen1_el1(value: u64) {
    // SAFETY: as for `write_icc_pmr_el1`; the ISB makes the enable take
    // effect before the caller unmasks IRQs.
    unsafe {
        core::arch::asm!("msr icc_igrpen1_el1, {}", "isb", in(reg) value, options(nomem, nostack, preserves_flags))
    };
}

/// Acknowledges the highest-priority pending Group 1 interrupt.
fn read_icc_iar1_el1() -> u64 {
    let value: u64;
    // SAFETY: reading IAR1 acknowledges an interrupt (a CPU-interface state
    // change, no memory access); only done in the IRQ handler.
    unsafe {
        core::arch::asm!("mrs {}, icc_iar1_el1", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Ends (drops the priority of and deactivates) interrupt `intid`.
fn write_icc_eoir1_el1(intid: u64) {
    // SAFETY: completes the interrupt the handler acknowledged; no memory.
    unsafe {
        core::arch::asm!("msr icc_eoir1_el1, {}", in(reg) intid, options(nomem, nostack, preserves_flags))
    };
}

/// Clears GICR_WAKER.ProcessorSleep of the calling CPU's redistributor and
/// waits for ChildrenAsleep to clear; returns the frame's RD_base.
fn wake_redistributor(gic: &Gic) -> Result<u64, GicError> {
    let frame = gic.frame_of(smp::own_affinity())?;
    let waker = frame + gicr::WAKER;
    let value = read32(waker, "gicr_waker")?;
    let mut w = LocalRegisterCopy::<u32, GICR_WAKER::Register>::new(value);
    w.modify(GICR_WAKER::ProcessorSleep::CLEAR);
    write32(waker, w.get(), "gicr_waker")?;
    let deadline = timer::now() + timer::ticks_from_ms(POLL_TIMEOUT_MS);
    loop {
        let now = LocalRegisterCopy::<u32, GICR_WAKER::Register>::new(read32(waker, "gicr_waker")?);
        if !now.is_set(GICR_WAKER::ChildrenAsleep) {
            break;
        }
        if timer::now() > deadline {
            return Err(GicError::Timeout("gicr_waker", now.get()));
        }
    }
    Ok(frame)
}

/// Makes the calling CPU able to take SGI `intid` as an IRQ: system
/// registers on, its redistributor awake with the SGI in Group 1, enabled,
/// at [`DEFAULT_PRIORITY`], the priority mask open and Group 1 enabled.
/// IRQs stay masked in PSTATE.
pub fn prepare_receiver(gic: &Gic, intid: u8) -> Result<(), GicError> {
    enable_system_registers()?;
    let frame = wake_redistributor(gic)?;

    let bit = 1u32 << intid;
    let group = read32(frame + gicr::IGROUPR0, "gicr_igroupr0")?;
    write32(frame + gicr::IGROUPR0, group | bit, "gicr_igroupr0")?;
    let priority_word = frame + gicr::IPRIORITYR + u64::from(intid & !3);
    let shift = 8 * u32::from(intid & 3);
    let priorities = read32(priority_word, "gicr_ipriorityr")?;
    let priorities = (priorities & !(0xff << shift)) | (u32::from(DEFAULT_PRIORITY) << shift);
    write32(priority_word, priorities, "gicr_ipriorityr")?;
    write32(frame + gicr::ISENABLER0, bit, "gicr_isenabler0")?;

    write_icc_pmr_el1(RECEIVER_PMR);
    write_icc_igrpen1_el1(1);
    Ok(())
}

/// No receiver armed.
const NO_RECEIVER: usize = usize::MAX;
/// The vCPU index that serves `sgi-self-test` SGIs.
static RECEIVER: AtomicUsize = AtomicUsize::new(NO_RECEIVER);
/// What the receiver's setup gave, once it ran.
static RECEIVER_SETUP: spin::Once<Result<(), GicError>> = spin::Once::new();

/// ICC_SGI1R_EL1 value the receiver sends for each [`SELF_TEST_SGI`] it takes (0: none):
/// the answer of the `ipi` benchmark.
static ECHO: AtomicU64 = AtomicU64::new(0);

/// Set: the receiver turns itself off (PSCI CPU_OFF) at the next [`SELF_TEST_SGI`] it takes.
static OFF_REQUEST: AtomicBool = AtomicBool::new(false);

/// Makes the receiver call PSCI CPU_OFF at the next [`SELF_TEST_SGI`] it takes.
pub fn request_receiver_off() {
    OFF_REQUEST.store(true, Ordering::Release);
}

/// Makes the receiver answer every [`SELF_TEST_SGI`] it takes with the SGI `sgi1r` names
/// (0: stop answering).
pub fn set_echo(sgi1r: u64) {
    ECHO.store(sgi1r, Ordering::Release);
}

/// SGIs taken, per INTID.
static SGI_COUNT: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];
/// Affinity of the CPU that took the last SGI, per INTID.
static SGI_TAKEN_BY: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
/// Non-SGI interrupts taken.
static OTHER_IRQS: AtomicU32 = AtomicU32::new(0);
/// Interrupts taken per INTID below 1020 (SPIs and PPIs; the NIC's MSIs).
static INTID_COUNT: [AtomicU32; FIRST_SPECIAL_INTID as usize] =
    [const { AtomicU32::new(0) }; FIRST_SPECIAL_INTID as usize];

/// LPIs counted from INTID 8192 on (the NIC's, the `its-*` attacks').
pub const COUNTED_LPIS: usize = 64;
/// Interrupts taken per LPI, from [`FIRST_LPI`].
static LPI_COUNT: [AtomicU32; COUNTED_LPIS] = [const { AtomicU32::new(0) }; COUNTED_LPIS];
/// Affinity of the CPU that took each counted LPI last.
static LPI_TAKEN_BY: [AtomicU64; COUNTED_LPIS] = [const { AtomicU64::new(0) }; COUNTED_LPIS];

/// GICD_IGROUPR<n>: one group bit per INTID.
const GICD_IGROUPR: u64 = 0x0080;

/// Makes the calling CPU able to take SPI `intid` (the NIC's message-based
/// SPIs): distributor enabled (ARE, both groups), the SPI in Group 1, at
/// [`DEFAULT_PRIORITY`], routed to this CPU, enabled; system registers on,
/// priority mask open, Group 1 enabled. IRQs stay masked in PSTATE.
pub fn prepare_spi(gic: &Gic, intid: u32) -> Result<(), GicError> {
    enable_system_registers()?;
    wake_redistributor(gic)?;
    gic.enable_distributor()?;
    let word = u64::from(intid / 32) * 4;
    let bit = 1u32 << (intid % 32);
    let group = read32(gic.gicd(GICD_IGROUPR + word), "gicd_igroupr")?;
    write32(gic.gicd(GICD_IGROUPR + word), group | bit, "gicd_igroupr")?;
    let priority_word = gic.gicd(gicd::IPRIORITYR + u64::from(intid & !3));
    let shift = 8 * (intid & 3);
    let priorities = read32(priority_word, "gicd_ipriorityr")?;
    let priorities = (priorities & !(0xff << shift)) | (u32::from(DEFAULT_PRIORITY) << shift);
    write32(priority_word, priorities, "gicd_ipriorityr")?;
    write64(
        gic.gicd(gicd::IROUTER + 8 * u64::from(intid)),
        smp::own_affinity(),
        "gicd_irouter",
    )?;
    write32(gic.gicd(gicd::ISENABLER + word), bit, "gicd_isenabler")?;
    write_icc_pmr_el1(RECEIVER_PMR);
    write_icc_igrpen1_el1(1);
    Ok(())
}

/// Makes the calling CPU able to take LPIs: system registers on, its redistributor awake,
/// the distributor enabled (affinity routing), priority mask open, Group 1 enabled. IRQs stay
/// masked in PSTATE. Returns the redistributor's RD_base (for its LPI registers).
pub fn prepare_lpis(gic: &Gic) -> Result<u64, GicError> {
    enable_system_registers()?;
    let frame = wake_redistributor(gic)?;
    gic.enable_distributor()?;
    write_icc_pmr_el1(RECEIVER_PMR);
    write_icc_igrpen1_el1(1);
    Ok(frame)
}

/// Interrupts `intid` (below 1020, or one of the first [`COUNTED_LPIS`] LPIs) taken so far.
pub fn taken(intid: u32) -> u32 {
    let counter = match intid.checked_sub(FIRST_LPI) {
        Some(lpi) => LPI_COUNT.get(lpi as usize),
        None => INTID_COUNT.get(intid as usize),
    };
    counter.map_or(0, |c| c.load(Ordering::Acquire))
}

/// The affinity of the CPU that took LPI `intid` last (0 before any, or past the counted ones).
pub fn lpi_taken_by(intid: u32) -> u64 {
    intid
        .checked_sub(FIRST_LPI)
        .and_then(|lpi| LPI_TAKEN_BY.get(lpi as usize))
        .map_or(0, |by| by.load(Ordering::Acquire))
}

/// Makes secondary vCPU `index` the SGI receiver once its memory test is
/// done. Call before the secondaries start.
pub fn arm_receiver(index: usize) {
    RECEIVER.store(index, Ordering::Release);
}

/// The receiver's setup outcome, once it is known.
pub fn receiver_setup() -> Option<Result<(), GicError>> {
    RECEIVER_SETUP.get().copied()
}

/// SGIs `intid` taken so far, and by whom last.
pub fn sgis_taken(intid: u8) -> (u32, u64) {
    let i = usize::from(intid & 0xf);
    (
        SGI_COUNT[i].load(Ordering::Acquire),
        SGI_TAKEN_BY[i].load(Ordering::Acquire),
    )
}

/// Non-SGI interrupts taken so far.
pub fn other_irqs() -> u32 {
    OTHER_IRQS.load(Ordering::Relaxed)
}

/// From a secondary CPU's main after its memory test: if it is the armed
/// receiver, set up SGI reception and wait for SGIs forever; otherwise
/// return (and the caller parks).
pub fn serve_if_receiver(index: usize, intid: u8) {
    if RECEIVER.load(Ordering::Acquire) != index {
        return;
    }
    let setup = prepare_receiver(&Gic::from_platform(), intid);
    RECEIVER_SETUP.call_once(|| setup);
    if setup.is_ok() {
        wait_for_irqs();
    }
}

/// Unmasks IRQs and sleeps in WFI forever; [`irq`] counts what arrives.
fn wait_for_irqs() -> ! {
    // SAFETY: unmasks IRQs and never returns, so no register value of the
    // caller is live across an interrupt; the IRQ entry saves and restores
    // what the handler may clobber among the registers this loop uses. The
    // loop touches no memory.
    unsafe {
        core::arch::asm!(
            "msr daifclr, #2",
            "isb",
            "1: wfi",
            "b 1b",
            options(noreturn)
        )
    }
}

/// Lets the calling CPU take pending IRQs for a moment (unmask, ISB,
/// mask): [`irq`] runs for each one that is pending.
pub fn take_pending_irqs() {
    // SAFETY: a pending IRQ is taken after the ISB, runs `irq` through the
    // IRQ entry and returns here; every register the handler may clobber
    // (C ABI caller-saved, FP/SIMD included) is declared clobbered, and the
    // handler's memory effects are atomics (no `nomem`). PSTATE.I is masked
    // again on the way out, as it was on the way in.
    unsafe {
        core::arch::asm!(
            "msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            clobber_abi("C")
        )
    };
}

/// IRQ handler (from `probe_irq` in entry.rs): acknowledges the interrupt,
/// counts SGIs per INTID with the taking CPU, ends it.
pub extern "C" fn irq() {
    let intid = read_icc_iar1_el1() & 0xff_ffff;
    if let Some(lpi) = intid.checked_sub(u64::from(FIRST_LPI)) {
        // LPIs: counted, ended (no active state, the EOI drops the priority).
        OTHER_IRQS.fetch_add(1, Ordering::Relaxed);
        if let (Some(count), Some(by)) =
            (LPI_COUNT.get(lpi as usize), LPI_TAKEN_BY.get(lpi as usize))
        {
            by.store(smp::own_affinity(), Ordering::Release);
            count.fetch_add(1, Ordering::AcqRel);
        }
        write_icc_eoir1_el1(intid);
        return;
    }
    if intid >= u64::from(FIRST_SPECIAL_INTID) {
        return;
    }
    if super::bench::on_irq(intid) {
        write_icc_eoir1_el1(intid);
        return;
    }
    match SGI_COUNT.get(intid as usize) {
        Some(count) => {
            SGI_TAKEN_BY[intid as usize].store(smp::own_affinity(), Ordering::Release);
            count.fetch_add(1, Ordering::AcqRel);
            let echo = ECHO.load(Ordering::Acquire);
            if intid == u64::from(SELF_TEST_SGI) && echo != 0 {
                // An SGI that cannot be sent shows as a missing answer.
                let _ = send_sgi(echo);
            }
            if intid == u64::from(SELF_TEST_SGI) && OFF_REQUEST.swap(false, Ordering::AcqRel) {
                write_icc_eoir1_el1(intid);
                let conduit = super::PLATFORM
                    .get()
                    .map_or(microvisor_probe::dt::Conduit::Hvc, smp::conduit);
                // Returns only if the call failed: the SGI is over either way.
                let _ = super::psci::cpu_off(conduit);
                return;
            }
        }
        None => {
            OTHER_IRQS.fetch_add(1, Ordering::Relaxed);
            if let Some(count) = INTID_COUNT.get(intid as usize) {
                count.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
    write_icc_eoir1_el1(intid);
}
