//! The GIC attacks (`sgi-outside`, `spi-foreign`, `gicr-foreign`) and the
//! functional checks beside them (`sgi-self-test`, `gicr-own`). Lines as in
//! `attacks`: `ATTACK <name> attempting <detail>`, then the verdict with a
//! detail; for the functional checks `contained` means the check passed.
//! The values come from `microvisor_probe::gic`, the outcomes and verdicts
//! from `microvisor_probe::gic_attacks`; every GIC access here is guarded,
//! so a missing register is reported instead of parking the CPU.

use microvisor_probe::MAX_CPUS;
use microvisor_probe::cmdline::Attack;
use microvisor_probe::dt::{MAX_DEVICE_SPIS, Platform};
use microvisor_probe::gic::{
    ATTACK_SGI, BIT_WORDS, DEFAULT_UART_INTID, FOREIGN_PRIORITY, IntidSet, RedistributorType,
    SELF_TEST_SGI, SgiPlan, SgiRequest, SgiTarget, first_unused, gicd, gicr, irouter_value,
    outside_sgi_plan,
};
use microvisor_probe::gic_attacks::{
    GicrForeign, GicrOwn, SelfTest, SgiOutside, SpiForeign, SpiReadback, SpiStep, gicr_own_outcome,
};

use super::attacks::{Context, conclude, sgi_receiver};
use super::console::println;
use super::gic::{self, Gic, GicError};
use super::{smp, timer};

/// How long `sgi-self-test` waits for the receiver's setup.
const RECEIVER_TIMEOUT_MS: u64 = 2000;
/// How long `sgi-self-test` waits for the SGI to be taken.
const DELIVERY_TIMEOUT_MS: u64 = 1000;

/// The slice's vCPU affinities; the boot CPU's own without a usable tree.
fn slice_cpus<'a>(platform: &'a Platform, own: &'a [u64; 1]) -> &'a [u64] {
    match platform.cpus() {
        [] => own,
        cpus => cpus,
    }
}

/// `sgi-outside`: ICC_SGI1R_EL1 writes aimed at PEs the slice does not have
/// (see `outside_sgi_plan`). The slice must survive them: an SGI for a PE
/// that does not exist is dropped.
pub fn sgi_outside(ctx: &Context<'_>) {
    let name = Attack::SgiOutside.name();
    let own = [smp::own_affinity()];
    let cpus = slice_cpus(ctx.platform, &own);
    let plan = outside_sgi_plan(cpus, ATTACK_SGI);
    println!("ATTACK {name} attempting sgi1r intid={ATTACK_SGI} {plan}");
    conclude(Attack::SgiOutside, &send_outside(&plan, cpus));
}

/// How long `sgi-outside` gives a misdirected SGI to show before it looks.
const MISDELIVERY_WAIT_MS: u64 = 2;

/// Makes the writes of `plan`, stopping at the first that does not complete. Before the
/// all-but-self broadcast (which does reach the slice's other vCPUs), none of the writes
/// aimed outside may have made the SGI pending at, or taken by, any vCPU of `cpus`.
fn send_outside(plan: &SgiPlan, cpus: &[u64]) -> SgiOutside {
    if let Err(e) = gic::enable_system_registers() {
        return SgiOutside::NoSgi(e);
    }
    let rss = gic::range_selector_supported();
    // Nothing of an earlier pass (its broadcast) may still be pending.
    let gic = Gic::from_platform();
    for &affinity in cpus {
        if let Ok(frame) = gic.frame_of(affinity) {
            let _ = gic::write32(frame + gicr::ICPENDR0, 1 << ATTACK_SGI, "gicr_icpendr0");
        }
    }
    let (taken_before, _) = gic::sgis_taken(ATTACK_SGI);
    let mut checked = false;
    for request in plan.writes() {
        if request.target == SgiTarget::AllButSelf && !checked {
            checked = true;
            if let Some(vcpu) = misdelivered(cpus, taken_before) {
                return SgiOutside::Misdelivered { vcpu };
            }
        }
        if let Err(error) = gic::send_sgi(request.value()) {
            return SgiOutside::WriteFailed {
                value: request.value(),
                error,
            };
        }
    }
    SgiOutside::Dropped {
        writes: plan.writes().len(),
        rss,
    }
}

/// The first vCPU of `cpus` at which [`ATTACK_SGI`] is pending (GICR_ISPENDR0), or any if
/// one was taken since `taken_before`.
fn misdelivered(cpus: &[u64], taken_before: u32) -> Option<usize> {
    timer::sleep_us(MISDELIVERY_WAIT_MS * 1000);
    let gic = Gic::from_platform();
    let pending = cpus.iter().position(|&affinity| {
        gic.frame_of(affinity)
            .and_then(|frame| gic::read32(frame + gicr::ISPENDR0, "gicr_ispendr0"))
            .is_ok_and(|bits| bits & (1 << ATTACK_SGI) != 0)
    });
    let (taken_now, by) = gic::sgis_taken(ATTACK_SGI);
    pending.or_else(|| {
        (taken_now != taken_before).then(|| cpus.iter().position(|&a| a == by).unwrap_or(0))
    })
}

/// `sgi-self-test`: one SGI to another vCPU of the slice (the receiver set
/// up at bring-up, see `gic::serve_if_receiver`), or to the boot CPU itself
/// on a one-CPU machine; it must be taken by that vCPU.
pub fn sgi_self_test(ctx: &Context<'_>) {
    let name = Attack::SgiSelfTest.name();
    let receiver = sgi_receiver(ctx.platform, ctx.boot_index);
    let target = receiver.map_or_else(smp::own_affinity, |i| ctx.platform.cpus()[i]);
    let request = SgiRequest::to(target, SELF_TEST_SGI);
    println!(
        "ATTACK {name} attempting sgi1r {:#x} to={target:#x} intid={SELF_TEST_SGI}",
        request.value()
    );
    conclude(
        Attack::SgiSelfTest,
        &self_test(ctx, receiver, target, request),
    );
}

/// Waits for the receiver's set-up (or sets itself up on a one-CPU machine), enables the
/// distributor, sends the SGI and waits for it to be taken.
fn self_test(
    ctx: &Context<'_>,
    receiver: Option<usize>,
    target: u64,
    request: SgiRequest,
) -> SelfTest {
    let gic = Gic::from_platform();
    let setup = match receiver {
        None => Some(gic::prepare_receiver(&gic, SELF_TEST_SGI)),
        Some(_) => {
            let deadline = timer::now() + timer::ticks_from_ms(RECEIVER_TIMEOUT_MS);
            while gic::receiver_setup().is_none() && timer::now() < deadline {
                timer::pause();
            }
            gic::receiver_setup()
        }
    };
    match setup {
        None => {
            let vcpu = receiver.unwrap_or(ctx.boot_index);
            return SelfTest::ReceiverNotReady { vcpu };
        }
        Some(Err(e)) => return SelfTest::ReceiverFailed(e),
        Some(Ok(())) => {}
    }
    if let Err(e) = gic::enable_system_registers() {
        return SelfTest::SenderFailed(e);
    }
    if let Err(e) = gic.enable_distributor() {
        return SelfTest::DistributorFailed(e);
    }

    let (before, _) = gic::sgis_taken(SELF_TEST_SGI);
    let start = timer::now();
    if let Err(e) = gic::send_sgi(request.value()) {
        return SelfTest::SendFailed(e);
    }
    let deadline = start + timer::ticks_from_ms(DELIVERY_TIMEOUT_MS);
    loop {
        if receiver.is_none() {
            gic::take_pending_irqs();
        }
        let (count, by) = gic::sgis_taken(SELF_TEST_SGI);
        if count > before {
            let us = timer::us_from_ticks(timer::now() - start);
            return if by == target {
                SelfTest::Delivered {
                    to: target,
                    intid: SELF_TEST_SGI,
                    count: count - before,
                    us,
                }
            } else {
                SelfTest::WrongCpu {
                    to: target,
                    on: by,
                    intid: SELF_TEST_SGI,
                }
            };
        }
        if timer::now() > deadline {
            return SelfTest::NotDelivered {
                to: target,
                intid: SELF_TEST_SGI,
                waited_ms: DELIVERY_TIMEOUT_MS,
                other_irqs: gic::other_irqs(),
            };
        }
        timer::pause();
    }
}

/// `spi-foreign`: through the distributor, enable, set pending and give a
/// priority to SPIs the slice does not own, route its own UART SPI to PEs
/// it does not have, read everything back, then undo what stuck.
pub fn spi_foreign(ctx: &Context<'_>) {
    let name = Attack::SpiForeign.name();
    let own = [smp::own_affinity()];
    let cpus = slice_cpus(ctx.platform, &own);
    let gic = Gic::from_platform();
    let own_spi = ctx
        .platform
        .uart_intid
        .filter(|&i| i >= 32)
        .unwrap_or(DEFAULT_UART_INTID);
    // Every SPI a device of the slice's tree signals is the slice's own (the UART's, the GPIO
    // controller's), so only the others are attacked.
    let mut own_spis = [own_spi; 1 + MAX_DEVICE_SPIS];
    for (slot, &intid) in own_spis[1..].iter_mut().zip(ctx.platform.device_spis()) {
        *slot = intid;
    }
    let attacked = IntidSet::foreign_spis(&own_spis);
    let routes = [
        irouter_value(first_unused(cpus, cpus.len() as u64, 1)),
        irouter_value(first_unused(cpus, 0x100, 0x100)),
    ];
    println!(
        "ATTACK {name} attempting isenabler+ispendr+ipriorityr spis={attacked} irouter{own_spi}={:#x},{:#x} gicd={:#x}",
        routes[0], routes[1], gic.layout.distributor
    );
    let result = read_spi_state(&gic, &attacked, own_spi)
        .map_err(|e| (SpiStep::Baseline, e))
        .and_then(|before| write_and_read_back(&gic, &attacked, own_spi, routes, &before));
    let outcome = match &result {
        Ok(readback) => SpiForeign::Readback {
            readback,
            attacked: &attacked,
            cpus,
        },
        Err((step, e)) => SpiForeign::Unverified(*step, *e),
    };
    conclude(Attack::SpiForeign, &outcome);
}

/// Distributor state `spi-foreign` changes, to put back what a real GIC
/// accepts.
struct SpiState {
    typer: u32,
    enabled: [u32; BIT_WORDS],
    pending: [u32; BIT_WORDS],
    priority: [u32; 8 * BIT_WORDS],
    route: u64,
}

fn read_spi_state(gic: &Gic, attacked: &IntidSet, spi: u32) -> Result<SpiState, GicError> {
    let reg32 = |base: u64, word: usize| gic.gicd(base + 4 * word as u64);
    let mut state = SpiState {
        typer: gic::read32(gic.gicd(gicd::TYPER), "gicd_typer")?,
        enabled: [0; BIT_WORDS],
        pending: [0; BIT_WORDS],
        priority: [0; 8 * BIT_WORDS],
        route: gic::read64(gic.gicd(gicd::IROUTER + 8 * u64::from(spi)), "gicd_irouter")?,
    };
    for (w, _) in attacked.words() {
        state.enabled[w] = gic::read32(reg32(gicd::ISENABLER, w), "gicd_isenabler")?;
        state.pending[w] = gic::read32(reg32(gicd::ISPENDR, w), "gicd_ispendr")?;
    }
    for k in attacked.byte_words() {
        state.priority[k] = gic::read32(reg32(gicd::IPRIORITYR, k), "gicd_ipriorityr")?;
    }
    Ok(state)
}

/// One attack write: refused (it faulted) is counted and the attack goes on; not made at all
/// stops it.
fn attack_write(
    result: Result<(), GicError>,
    refused: &mut u32,
) -> Result<(), (SpiStep, GicError)> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.refused() => {
            *refused += 1;
            Ok(())
        }
        Err(e) => Err((SpiStep::Write, e)),
    }
}

fn write_and_read_back(
    gic: &Gic,
    attacked: &IntidSet,
    spi: u32,
    routes: [u64; 2],
    before: &SpiState,
) -> Result<SpiReadback, (SpiStep, GicError)> {
    let reg32 = |base: u64, word: usize| gic.gicd(base + 4 * word as u64);
    let irouter = gic.gicd(gicd::IROUTER + 8 * u64::from(spi));
    let read32 =
        |addr: u64, register| gic::read32(addr, register).map_err(|e| (SpiStep::Readback, e));
    let mut refused = 0;

    // The attack.
    for (w, bits) in attacked.words() {
        attack_write(
            gic::write32(reg32(gicd::ISENABLER, w), bits, "gicd_isenabler"),
            &mut refused,
        )?;
        attack_write(
            gic::write32(reg32(gicd::ISPENDR, w), bits, "gicd_ispendr"),
            &mut refused,
        )?;
    }
    let foreign_priority = u32::from_ne_bytes([FOREIGN_PRIORITY; 4]);
    for k in attacked.byte_words() {
        let mask = attacked.byte_mask(k);
        let value = (before.priority[k] & !mask) | (foreign_priority & mask);
        attack_write(
            gic::write32(reg32(gicd::IPRIORITYR, k), value, "gicd_ipriorityr"),
            &mut refused,
        )?;
    }
    let mut routes_back = [(0u64, 0u64); 2];
    for (slot, &value) in routes_back.iter_mut().zip(&routes) {
        attack_write(gic::write64(irouter, value, "gicd_irouter"), &mut refused)?;
        let back = gic::read64(irouter, "gicd_irouter").map_err(|e| (SpiStep::Readback, e))?;
        *slot = (value, back);
    }

    // What stuck.
    let mut readback = SpiReadback {
        typer: before.typer,
        enabled: IntidSet::new(),
        pending: IntidSet::new(),
        prioritized: IntidSet::new(),
        routed_spi: spi,
        routes: routes_back,
        refused_writes: refused,
    };
    for (w, bits) in attacked.words() {
        let enabled = read32(reg32(gicd::ISENABLER, w), "gicd_isenabler")?;
        readback.enabled.set_word(w, enabled & bits);
        let pending = read32(reg32(gicd::ISPENDR, w), "gicd_ispendr")?;
        readback.pending.set_word(w, pending & bits);
    }
    let mut priority_after = [0u32; 8 * BIT_WORDS];
    for k in attacked.byte_words() {
        let value = read32(reg32(gicd::IPRIORITYR, k), "gicd_ipriorityr")?;
        priority_after[k] = value;
        for byte in 0..4u32 {
            let intid = 4 * k as u32 + byte;
            if attacked.contains(intid) && (value >> (8 * byte)) & 0xff != 0 {
                readback.prioritized.insert(intid);
            }
        }
    }
    undo(gic, attacked, &readback, &priority_after, before);
    Ok(readback)
}

/// Puts back what stuck (natively; under the microvisor nothing does). Best effort: the
/// verdict is already known from the read-back, and anything that stuck is in it.
fn undo(
    gic: &Gic,
    attacked: &IntidSet,
    readback: &SpiReadback,
    priority_after: &[u32; 8 * BIT_WORDS],
    before: &SpiState,
) {
    let reg32 = |base: u64, word: usize| gic.gicd(base + 4 * word as u64);
    let irouter = gic.gicd(gicd::IROUTER + 8 * u64::from(readback.routed_spi));
    let mut failed = None;
    let mut put_back = |result: Result<(), GicError>| {
        if let Err(e) = result {
            failed.get_or_insert(e);
        }
    };
    for (w, _) in attacked.words() {
        let enabled = readback.enabled.word(w) & !before.enabled[w];
        if enabled != 0 {
            put_back(gic::write32(
                reg32(gicd::ICENABLER, w),
                enabled,
                "gicd_icenabler",
            ));
        }
        let pending = readback.pending.word(w) & !before.pending[w];
        if pending != 0 {
            put_back(gic::write32(
                reg32(gicd::ICPENDR, w),
                pending,
                "gicd_icpendr",
            ));
        }
    }
    for k in attacked.byte_words() {
        if priority_after[k] != before.priority[k] {
            put_back(gic::write32(
                reg32(gicd::IPRIORITYR, k),
                before.priority[k],
                "gicd_ipriorityr",
            ));
        }
    }
    put_back(gic::write64(irouter, before.route, "gicd_irouter"));
    if let Some(e) = failed {
        println!("PROBE WARN attack spi-foreign could not undo its writes: {e}");
    }
}

/// `gicr-foreign`: GICR_TYPER of the redistributor frame right after the
/// slice's last vCPU. Under the microvisor that frame is outside the
/// slice's devices: the read takes a synchronous external abort (or, under
/// `on-fault = "stop"`, the slice stops); a value read back is NOT-CONTAINED.
/// Where that frame is depends on the stride frame 0's GICR_TYPER gives.
pub fn gicr_foreign(ctx: &Context<'_>) {
    let name = Attack::GicrForeign.name();
    let own = [smp::own_affinity()];
    let vcpus = slice_cpus(ctx.platform, &own).len() as u64;
    let gic = Gic::from_platform();
    let base = gic.gicr_base();
    let stride = gic::read64(base + gicr::TYPER, "gicr_typer")
        .map(|typer| RedistributorType(typer).frame_stride());
    let addr = base + vcpus * stride.unwrap_or(gicr::STRIDE_V3) + gicr::TYPER;
    println!("ATTACK {name} attempting read64 {addr:#x}");
    let outcome = match stride {
        Err(e) => GicrForeign::NoStride(e),
        Ok(_) => match gic::read64(addr, "gicr_typer") {
            Ok(value) => GicrForeign::Read { addr, value },
            Err(e) => GicrForeign::Failed(e),
        },
    };
    conclude(Attack::GicrForeign, &outcome);
}

/// `gicr-own`: GICR_TYPER of each of the slice's redistributor frames: frame
/// i names vCPU i's affinity and only the last frame has Last.
pub fn gicr_own(ctx: &Context<'_>) {
    let name = Attack::GicrOwn.name();
    let own = [smp::own_affinity()];
    let cpus = slice_cpus(ctx.platform, &own);
    let gic = Gic::from_platform();
    let (base, stride) = (gic.gicr_base(), gic.gicr_stride());
    println!(
        "ATTACK {name} attempting read64 gicr_typer frames={} base={base:#x} stride={stride:#x}",
        cpus.len()
    );
    let mut typers = [0u64; MAX_CPUS];
    for (frame, typer) in typers.iter_mut().enumerate().take(cpus.len()) {
        match gic::read64(base + frame as u64 * stride + gicr::TYPER, "gicr_typer") {
            Ok(v) => *typer = v,
            Err(error) => {
                return conclude(Attack::GicrOwn, &GicrOwn::FrameFailed { frame, error });
            }
        }
    }
    conclude(
        Attack::GicrOwn,
        &gicr_own_outcome(&typers[..cpus.len()], cpus),
    );
}
