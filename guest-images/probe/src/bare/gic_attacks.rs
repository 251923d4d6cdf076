//! The GIC attacks (`sgi-outside`, `spi-foreign`, `gicr-foreign`) and the
//! functional checks beside them (`sgi-self-test`, `gicr-own`). Lines as in
//! `attacks`: `ATTACK <name> attempting <detail>`, then `contained` or
//! `NOT-CONTAINED` with a detail; for the functional checks `contained`
//! means the check passed. The values and verdicts come from
//! `microvisor_probe::gic`; every GIC access here is guarded, so a missing
//! register is reported instead of parking the CPU.

use core::fmt;

use microvisor_probe::MAX_CPUS;
use microvisor_probe::cmdline::Attack;
use microvisor_probe::dt::Platform;
use microvisor_probe::gic::{
    ATTACK_SGI, BIT_WORDS, DEFAULT_UART_INTID, FOREIGN_PRIORITY, IntidSet, RedistributorType,
    SELF_TEST_SGI, SgiRequest, SpiReadback, check_redistributors, first_unused, gicd, gicr,
    irouter_value, outside_sgi_plan,
};

use super::attacks::{Context, sgi_receiver};
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
    let plan = outside_sgi_plan(slice_cpus(ctx.platform, &own), ATTACK_SGI);
    println!("ATTACK {name} attempting sgi1r intid={ATTACK_SGI} {plan}");
    if let Err(e) = gic::enable_system_registers() {
        println!("ATTACK {name} contained no-sgi {e}");
        return;
    }
    let rss = u8::from(gic::range_selector_supported());
    for request in plan.writes() {
        if let Err(e) = gic::send_sgi(request.value()) {
            println!(
                "ATTACK {name} contained sgi1r-refused {:#x} {e}",
                request.value()
            );
            return;
        }
    }
    println!(
        "ATTACK {name} contained sgis-dropped writes={} rss={rss}",
        plan.writes().len()
    );
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
    let fail = |why: fmt::Arguments<'_>| {
        println!("ATTACK {name} NOT-CONTAINED sgi-within-slice {why}");
    };
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
            return fail(format_args!("receiver-not-ready vcpu={vcpu}"));
        }
        Some(Err(e)) => return fail(format_args!("receiver-failed {e}")),
        Some(Ok(())) => {}
    }
    if let Err(e) = gic::enable_system_registers() {
        return fail(format_args!("sender-failed {e}"));
    }
    if let Err(e) = gic.enable_distributor() {
        return fail(format_args!("distributor-failed {e}"));
    }

    let (before, _) = gic::sgis_taken(SELF_TEST_SGI);
    let start = timer::now();
    if let Err(e) = gic::send_sgi(request.value()) {
        return fail(format_args!("send-failed {e}"));
    }
    let deadline = start + timer::ticks_from_ms(DELIVERY_TIMEOUT_MS);
    loop {
        if receiver.is_none() {
            gic::take_pending_irqs();
        }
        let (count, by) = gic::sgis_taken(SELF_TEST_SGI);
        if count > before {
            let us = timer::us_from_ticks(timer::now() - start);
            if by == target {
                println!(
                    "ATTACK {name} contained sgi-within-slice delivered to={target:#x} intid={SELF_TEST_SGI} count={} us={us}",
                    count - before
                );
            } else {
                fail(format_args!(
                    "wrong-cpu to={target:#x} on={by:#x} intid={SELF_TEST_SGI}"
                ));
            }
            return;
        }
        if timer::now() > deadline {
            return fail(format_args!(
                "not-delivered to={target:#x} intid={SELF_TEST_SGI} waited-ms={DELIVERY_TIMEOUT_MS} other-irqs={}",
                gic::other_irqs()
            ));
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
    let attacked = IntidSet::foreign_spis(&[own_spi]);
    let routes = [
        irouter_value(first_unused(cpus, cpus.len() as u64, 1)),
        irouter_value(first_unused(cpus, 0x100, 0x100)),
    ];
    println!(
        "ATTACK {name} attempting isenabler+ispendr+ipriorityr spis={attacked} irouter{own_spi}={:#x},{:#x} gicd={:#x}",
        routes[0], routes[1], gic.layout.distributor
    );
    match attack_spis(&gic, &attacked, own_spi, routes) {
        Ok(readback) => {
            let verdict = if readback.contained(cpus) {
                "contained"
            } else {
                "NOT-CONTAINED"
            };
            println!("ATTACK {name} {verdict} {}", readback.detail(&attacked));
        }
        // Refused before the first write: nothing was enabled or routed.
        Err(SpiError::BeforeWrites(e)) => println!("ATTACK {name} contained {e}"),
        // Refused later: what earlier writes did is unknown.
        Err(SpiError::AfterWrites(e)) => println!("ATTACK {name} NOT-CONTAINED unverified {e}"),
    }
}

/// Where `spi-foreign` stopped on a refused access.
enum SpiError {
    /// While reading the registers before any write.
    BeforeWrites(GicError),
    /// After writes had started.
    AfterWrites(GicError),
}

/// The writes and read-backs of `spi-foreign`.
fn attack_spis(
    gic: &Gic,
    attacked: &IntidSet,
    spi: u32,
    routes: [u64; 2],
) -> Result<SpiReadback, SpiError> {
    let before = read_spi_state(gic, attacked, spi).map_err(SpiError::BeforeWrites)?;
    write_and_read_back(gic, attacked, spi, routes, &before).map_err(SpiError::AfterWrites)
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

fn write_and_read_back(
    gic: &Gic,
    attacked: &IntidSet,
    spi: u32,
    routes: [u64; 2],
    before: &SpiState,
) -> Result<SpiReadback, GicError> {
    let reg32 = |base: u64, word: usize| gic.gicd(base + 4 * word as u64);
    let irouter = gic.gicd(gicd::IROUTER + 8 * u64::from(spi));

    // The attack.
    for (w, bits) in attacked.words() {
        gic::write32(reg32(gicd::ISENABLER, w), bits, "gicd_isenabler")?;
        gic::write32(reg32(gicd::ISPENDR, w), bits, "gicd_ispendr")?;
    }
    let foreign_priority = u32::from_ne_bytes([FOREIGN_PRIORITY; 4]);
    for k in attacked.byte_words() {
        let mask = attacked.byte_mask(k);
        let value = (before.priority[k] & !mask) | (foreign_priority & mask);
        gic::write32(reg32(gicd::IPRIORITYR, k), value, "gicd_ipriorityr")?;
    }
    let mut routes_back = [(0u64, 0u64); 2];
    for (slot, &value) in routes_back.iter_mut().zip(&routes) {
        gic::write64(irouter, value, "gicd_irouter")?;
        *slot = (value, gic::read64(irouter, "gicd_irouter")?);
    }

    // What stuck.
    let mut readback = SpiReadback {
        typer: before.typer,
        enabled: IntidSet::new(),
        pending: IntidSet::new(),
        prioritized: IntidSet::new(),
        routed_spi: spi,
        routes: routes_back,
    };
    for (w, bits) in attacked.words() {
        let enabled = gic::read32(reg32(gicd::ISENABLER, w), "gicd_isenabler")?;
        readback.enabled.set_word(w, enabled & bits);
        let pending = gic::read32(reg32(gicd::ISPENDR, w), "gicd_ispendr")?;
        readback.pending.set_word(w, pending & bits);
    }
    let mut priority_after = [0u32; 8 * BIT_WORDS];
    for k in attacked.byte_words() {
        let value = gic::read32(reg32(gicd::IPRIORITYR, k), "gicd_ipriorityr")?;
        priority_after[k] = value;
        for byte in 0..4u32 {
            let intid = 4 * k as u32 + byte;
            if attacked.contains(intid) && (value >> (8 * byte)) & 0xff != 0 {
                readback.prioritized.insert(intid);
            }
        }
    }

    // Undo what stuck (natively; under the microvisor nothing does).
    for (w, _) in attacked.words() {
        let enabled = readback.enabled.word(w) & !before.enabled[w];
        if enabled != 0 {
            gic::write32(reg32(gicd::ICENABLER, w), enabled, "gicd_icenabler")?;
        }
        let pending = readback.pending.word(w) & !before.pending[w];
        if pending != 0 {
            gic::write32(reg32(gicd::ICPENDR, w), pending, "gicd_icpendr")?;
        }
    }
    for k in attacked.byte_words() {
        if priority_after[k] != before.priority[k] {
            gic::write32(
                reg32(gicd::IPRIORITYR, k),
                before.priority[k],
                "gicd_ipriorityr",
            )?;
        }
    }
    gic::write64(irouter, before.route, "gicd_irouter")?;
    Ok(readback)
}

/// `gicr-foreign`: GICR_TYPER of the redistributor frame right after the
/// slice's last vCPU. Under the microvisor that frame is outside the
/// slice's devices and the slice stops; a value read back is NOT-CONTAINED.
pub fn gicr_foreign(ctx: &Context<'_>) {
    let name = Attack::GicrForeign.name();
    let own = [smp::own_affinity()];
    let vcpus = slice_cpus(ctx.platform, &own).len() as u64;
    let gic = Gic::from_platform();
    let addr = gic.gicr_base() + vcpus * gic.gicr_stride() + gicr::TYPER;
    println!("ATTACK {name} attempting read64 {addr:#x}");
    match gic::read64(addr, "gicr_typer") {
        Ok(v) => println!("ATTACK {name} NOT-CONTAINED read64 {addr:#x} returned {v:#x}"),
        Err(e) => println!("ATTACK {name} contained {e}"),
    }
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
            Err(e) => {
                println!("ATTACK {name} NOT-CONTAINED frame={frame} {e}");
                return;
            }
        }
    }
    let typers = &typers[..cpus.len()];
    match check_redistributors(typers, cpus) {
        Ok(()) => {
            let last = typers
                .last()
                .map_or(0, |&t| RedistributorType(t).affinity());
            println!(
                "ATTACK {name} contained typer-ok frames={} last-affinity={last:#x}",
                cpus.len()
            );
        }
        Err(mismatch) => println!("ATTACK {name} NOT-CONTAINED {mismatch}"),
    }
}
