//! The ITS attacks (`its-*`, issue 14 "Hostile vITS usage"), against the slice's own ITS as
//! `its` set it up for the NIC: bogus commands, tables outside RAM, other functions'
//! DeviceIDs, command-queue offset tricks and MAPD storms. Each checks what decision 0004
//! promises from the guest's side (commands skipped and the queue still advancing, a queue
//! outside RAM stalling, nothing delivered for what the slice does not own, every access
//! returning promptly) and that the NIC still takes its interrupts through the ITS afterwards.
//! The victims' heartbeats and the hypervisor's health are the test's to check. Outcomes and
//! verdicts: `microvisor_probe::its::AttackOutcome`.

use core::fmt::Write;
use core::sync::atomic::Ordering;

use aarch64_cpu::asm::barrier;
use microvisor_probe::cmdline::Attack;
use microvisor_probe::gic::{SELF_TEST_SGI, SgiRequest};
use microvisor_probe::its::{
    self, AttackOutcome, Command, ItsError, LPI_ID_BITS, gicr, gits, number,
};
use microvisor_probe::pci::Bdf;
use microvisor_probe::text::Text;

use super::attacks::{Context, conclude};
use super::console::println;
use super::its::{ITS, Its, SLOWEST_ACCESS_TICKS, page, write_command};
use super::net::{Doorbell, NIC, Nic, RX_VECTOR, TX_VECTOR};
use super::{gic, psci, smp, timer};

/// The LPI the attacks try to make pending through what they do not own (counted by the IRQ
/// handler, never mapped by the driver).
const PROBE_LPI_OFFSET: u32 = 40;
/// Commands of the MAPD storm.
const STORM_COMMANDS: u32 = 2048;

/// The NIC's mapping, to check and restore.
#[derive(Clone, Copy)]
struct Own {
    device: u32,
    events: u32,
    first_lpi: u32,
}

/// Runs one `its-*` attack.
pub fn run(attack: Attack, ctx: &Context<'_>) {
    let name = attack.name();
    let mut nic_guard = NIC.lock();
    let mut its_guard = ITS.lock();
    let unverified = |why: &'static str| {
        println!("ATTACK {name} attempting nothing");
        conclude(
            attack,
            &AttackOutcome {
                detail: Text::new(),
                held: false,
                nic_after: None,
                unverified: Some(why),
            },
        );
    };
    let (Some(nic), Some(its)) = (nic_guard.as_mut(), its_guard.as_mut()) else {
        unverified("no-its-nic");
        return;
    };
    let Doorbell::Its {
        device, first_lpi, ..
    } = nic.doorbell
    else {
        unverified("nic-not-on-its");
        return;
    };
    let own = Own {
        device,
        events: u32::from(nic.msix_vectors).min(gic::COUNTED_LPIS as u32 / 2),
        first_lpi,
    };
    let mut detail = Text::<200>::new();
    // Bogus commands and foreign devices must leave the NIC's own mappings working as they
    // are; the other attacks reprogram the ITS, which is then set up again first.
    let (held, restore) = match attack {
        Attack::ItsBogusCommands => (bogus_commands(its, own, &mut detail), false),
        Attack::ItsTablesOutside => (tables_outside(its, own, ctx, &mut detail), true),
        Attack::ItsForeignDevice => (foreign_device(its, nic, own, &mut detail), false),
        Attack::ItsQueueWrap => (queue_wrap(its, own, &mut detail), true),
        Attack::ItsMapdStorm => (mapd_storm(its, own, ctx, &mut detail), true),
        Attack::ItsDisabled => (disabled(its, nic, own, &mut detail), true),
        Attack::ItsRemoteLpis => {
            let Some(receiver) = ready_receiver(ctx) else {
                unverified("no-receiver");
                return;
            };
            (remote_lpis(its, nic, own, receiver, &mut detail), true)
        }
        Attack::ItsRemoteOff => {
            let Some(receiver) = ready_receiver(ctx) else {
                unverified("no-receiver");
                return;
            };
            (remote_off(its, receiver, ctx, &mut detail), true)
        }
        _ => return,
    };
    let mut held = held;
    if restore && let Err(e) = its.reset_to(own.device, own.events, own.first_lpi) {
        let _ = write!(detail, " restore={e}");
        held = false;
    }
    drop(its_guard);
    let nic_after = Some(nic.exchange().is_ok_and(|x| x.rx_irq.is_some()));
    conclude(
        attack,
        &AttackOutcome {
            detail,
            held,
            nic_after,
            unverified: None,
        },
    );
}

/// Enables the probe LPI's property byte and has the ITS reload every property (INVALL of
/// collection 0), so that anything mapping it could really deliver it.
fn arm_probe_lpi(its: &mut Its, probe: u32) -> Result<(), ItsError> {
    its.set_property(probe, true);
    its.run(&[its::invall(0)])
}

/// Waits up to 100 ms for LPI `lpi` to be taken more than `before` times.
fn lpi_arrives(lpi: u32, before: u32) -> bool {
    let deadline = timer::now() + timer::ticks_from_ms(100);
    loop {
        gic::take_pending_irqs();
        if gic::taken(lpi) > before {
            return true;
        }
        if timer::now() > deadline {
            return false;
        }
    }
}

/// `completed`, `stalled(at=..)` or the error, for a batch's end.
struct Batch(Result<(), ItsError>);

impl core::fmt::Display for Batch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Ok(()) => f.write_str("completed"),
            Err(e) => write!(f, "{e}"),
        }
    }
}

fn batch(result: Result<(), ItsError>) -> Batch {
    Batch(result)
}

/// Each command is one the vITS must refuse and skip: unknown numbers, a GICv4 command,
/// LPIs outside 8192..16383, events past the ITT and the function's vectors, devices never
/// mapped, a collection of a vCPU the slice lacks, ICIDs past the collection table, MOVI to
/// an unmapped collection, an ITT of 32 EventID bits, SYNC of a vCPU the slice lacks. The
/// batch must complete (CREADR reaches CWRITER, no stall) and the probe LPI stay quiet.
fn bogus_commands(its: &mut Its, own: Own, detail: &mut Text<200>) -> bool {
    let probe = own.first_lpi + PROBE_LPI_OFFSET;
    let d = own.device;
    let unmapped = 0xfe;
    let cmds: [Command; 14] = [
        [0, 0, 0, 0],
        [0xff | u64::from(d) << 32, u64::MAX, u64::MAX, u64::MAX],
        [u64::from(number::VMAPP), 0, u64::MAX, 0],
        its::mapti(d, 0, 100, 0),
        its::mapti(d, 1, u32::MAX, 0),
        its::mapti(d, 0x1_0000, probe, 0),
        its::mapti(d, own.events + 100, probe, 0),
        its::mapti(unmapped, 0, probe, 0),
        its::mapc(0, 99, true),
        its::mapc(0x7ff, its.target, true),
        its::movi(d, 0, 77),
        its::mapd(d, 31, its.page(page::SPARE), true),
        its::event_command(number::INT, unmapped, 0),
        its::sync(99),
    ];
    println!(
        "ATTACK its-bogus-commands attempting unknown,0xff,vmapp,lpi=100,lpi=0xffffffff,event=0x10000,event-past-vectors,device-unmapped,mapc-rd=99,icid=0x7ff,movi-unmapped,mapd-bits=32,int-unmapped,sync-rd=99 device={d:#x}"
    );
    let before = gic::taken(probe);
    let result = arm_probe_lpi(its, probe).and_then(|()| its.run(&cmds));
    timer::sleep_us(2000);
    gic::take_pending_irqs();
    let stray = gic::taken(probe) - before;
    let _ = write!(
        detail,
        "commands={} batch={} probe-lpi={stray}",
        cmds.len(),
        batch(result)
    );
    result.is_ok() && stray == 0
}

/// GICR_PROPBASER/PENDBASER rewritten with tables outside RAM while EnableLPIs is set (must
/// read back unchanged: ignored); the command queue outside RAM (`GITS_CBASER`, then a
/// CWRITER of one command: CREADR must not advance, Stalled expected); the device table
/// outside RAM, then an ITT outside RAM (MAPD + SYNC: refused and skipped, the batch
/// completes, and an INT of the function's spare event, moved to the probe LPI before, still
/// arrives after each: the MAPD changed nothing). Outside = the end of RAM and `target=`.
fn tables_outside(its: &mut Its, own: Own, ctx: &Context<'_>, detail: &mut Text<200>) -> bool {
    let end = ctx.platform.memory_end();
    let target = ctx
        .target
        .map(|t| t & !0xffff)
        .filter(|&t| !ctx.platform.in_memory(t));
    println!(
        "ATTACK its-tables-outside attempting propbaser,pendbaser,cbaser,baser0,itt at={end:#x} target={:#x}",
        target.unwrap_or(0)
    );
    let mut held = true;
    // 1. LPI tables while EnableLPIs = 1.
    for (reg, label, value) in [
        (gicr::PROPBASER, "propbaser", its::propbaser(end, 14)),
        (gicr::PENDBASER, "pendbaser", its::pendbaser(end)),
    ] {
        let addr = its.rd_base + reg;
        let before = gic::read64(addr, "gicr_lpi").unwrap_or(0);
        let written = gic::write64(addr, value, "gicr_lpi").is_ok();
        let after = gic::read64(addr, "gicr_lpi").unwrap_or(u64::MAX);
        let kept = after == before;
        held &= kept;
        let _ = write!(
            detail,
            "{label}={} ",
            if !written {
                "refused"
            } else if kept {
                "ignored"
            } else {
                "CHANGED"
            }
        );
    }
    // 2. The command queue outside RAM.
    for (i, at) in [Some(end), target].into_iter().flatten().enumerate() {
        let outcome = (|| -> Result<u64, ItsError> {
            its.disable()?;
            gic::write64(its.reg(gits::CBASER), its::cbaser(at, 1), "gits_cbaser")?;
            its.enable()?;
            its.write_cwriter(its::COMMAND_BYTES)?;
            timer::sleep_us(1000);
            its.creadr()
        })();
        let label = if i == 0 { "queue-end" } else { "queue-target" };
        match outcome {
            Ok(r) => {
                let ok = r & gits::OFFSET_MASK == 0;
                held &= ok;
                let state = if r & gits::CREADR_STALLED != 0 {
                    "stalled"
                } else if ok {
                    "idle"
                } else {
                    "ADVANCED"
                };
                let _ = write!(detail, "{label}={state} ");
            }
            Err(e) => {
                held = false;
                let _ = write!(detail, "{label}={e} ");
            }
        }
    }
    // Back to the own tables and queue (a CBASER write resets CREADR), with the own
    // function's spare event moved to the probe LPI. A refused MAPD leaves that translation
    // as it was (an INT of the event still arrives); an accepted one gives the device a new
    // ITT without it. "The batch completed" alone held either way (found in review).
    let probe = own.first_lpi + PROBE_LPI_OFFSET;
    let spare = own.events - 1;
    let survives = |its: &mut Its| {
        let before = gic::taken(probe);
        its.run(&[its::event_command(number::INT, own.device, spare)])
            .is_ok()
            && lpi_arrives(probe, before)
    };
    let armed = its
        .reset_to(own.device, own.events, own.first_lpi)
        .and_then(|()| arm_probe_lpi(its, probe))
        .and_then(|()| {
            its.run(&[
                its::event_command(number::DISCARD, own.device, spare),
                its::mapti(own.device, spare, probe, 0),
                its::event_command(number::INV, own.device, spare),
            ])
        });
    // The positive control: before any MAPD outside RAM, the INT arrives.
    let control = armed.is_ok() && survives(its);
    held &= control;
    let _ = match armed {
        Err(e) => write!(detail, "control={e} "),
        Ok(()) if control => write!(detail, "control=delivered "),
        Ok(()) => write!(detail, "control=NOT-DELIVERED "),
    };
    let devtable = (|| -> Result<(), ItsError> {
        its.disable()?;
        gic::write64(its.reg(gits::BASER), its::baser(end, 1), "gits_baser")?;
        its.enable()?;
        let itt = its.page(page::SPARE);
        its.run(&[its::mapd(own.device, 1, itt, true)])
    })();
    let kept = survives(its);
    held &= devtable.is_ok() && kept;
    let _ = write!(
        detail,
        "devtable={}+{} ",
        batch(devtable),
        if kept { "kept" } else { "LOST" }
    );
    let itt = (|| -> Result<(), ItsError> {
        its.disable()?;
        gic::write64(
            its.reg(gits::BASER),
            its::baser(its.page(page::DEVICES), 1),
            "gits_baser",
        )?;
        its.enable()?;
        let mut cmds = [its::mapd(own.device, 1, end, true); 2];
        if let Some(t) = target {
            cmds[1] = its::mapd(own.device, 1, t, true);
        }
        its.run(&cmds)
    })();
    let kept = survives(its);
    held &= itt.is_ok() && kept;
    let _ = write!(
        detail,
        "itt={}+{}",
        batch(itt),
        if kept { "kept" } else { "LOST" }
    );
    held
}

/// MAPD, MAPTI (to the probe LPI) and INT for every DeviceID of the slice's bus no function
/// answers at, and for DeviceIDs past Devbits (the physical IDs of functions behind root
/// ports: 0x100, 0x200, 0xffff), the probe LPI enabled; it must never be taken. Then the
/// positive control: its own function's spare event mapped to the probe LPI and raised with
/// INT must arrive (the LPI is deliverable, the ITS still works).
fn foreign_device(its: &mut Its, nic: &Nic, own: Own, detail: &mut Text<200>) -> bool {
    let probe = own.first_lpi + PROBE_LPI_OFFSET;
    let exists = |d: u32| {
        let bdf = Bdf {
            bus: 0,
            device: (d >> 3) as u8,
            function: (d & 7) as u8,
        };
        nic.ecam.read(bdf, 0).is_ok_and(|id| id & 0xffff != 0xffff)
    };
    let foreign = (0u32..256)
        .filter(|&d| !exists(d))
        .chain([0x100, 0x200, 0xffff])
        .filter(|&d| d != own.device);
    println!(
        "ATTACK its-foreign-device attempting mapd+mapti+int devices=every-absent-on-bus-0,0x100,0x200,0xffff lpi={probe} own={:#x}",
        own.device
    );
    let before = gic::taken(probe);
    let itt = its.page(page::SPARE);
    let mut count = 0;
    let mut result = arm_probe_lpi(its, probe);
    for d in foreign {
        count += 1;
        for c in [
            its::mapd(d, 1, itt, true),
            its::mapti(d, 0, probe, 0),
            its::event_command(number::INT, d, 0),
        ] {
            if let Err(e) = its.put(c) {
                result = Err(e);
            }
        }
    }
    if result.is_ok() {
        result = its.run(&[]);
    }
    timer::sleep_us(2000);
    gic::take_pending_irqs();
    let stray = gic::taken(probe) - before;
    // The positive control: its own function's last event (a vector the driver leaves
    // unused) moved to the probe LPI and raised with INT must arrive, then mapped back.
    let spare = own.events - 1;
    let control_before = gic::taken(probe);
    let own_int = its.run(&[
        its::event_command(number::DISCARD, own.device, spare),
        its::mapti(own.device, spare, probe, 0),
        its::event_command(number::INV, own.device, spare),
        its::event_command(number::INT, own.device, spare),
    ]);
    let own_seen = own_int.is_ok() && lpi_arrives(probe, control_before);
    let own_int = own_int.and_then(|()| {
        its.run(&[
            its::event_command(number::DISCARD, own.device, spare),
            its::mapti(own.device, spare, own.first_lpi + spare, 0),
            its::event_command(number::INV, own.device, spare),
        ])
    });
    let _ = write!(
        detail,
        "devices={count} batch={} probe-lpi={stray} int-own-to-probe-lpi={}",
        batch(result),
        if own_seen {
            "delivered"
        } else {
            "not-delivered"
        }
    );
    result.is_ok() && own_int.is_ok() && stray == 0 && own_seen
}

/// GITS_CWRITER past the queue's end (nothing may be processed), then a misaligned one (its
/// low bits ignored: one SYNC runs), GITS_CREADR written (read-only), a CWRITER a full lap
/// minus one command behind CREADR over a queue full of SYNCs (processed to the end and
/// wrapped, once: CREADR ends at CWRITER), and CWRITER.Retry with nothing stalled.
fn queue_wrap(its: &mut Its, _own: Own, detail: &mut Text<200>) -> bool {
    println!(
        "ATTACK its-queue-wrap attempting cwriter-past-end,misaligned,creadr-write,lap-behind,retry queue={:#x}+{:#x}",
        its.queue, its.queue_bytes
    );
    let mut held = true;
    let sync = its::sync(its.target);
    let offset = |r: Result<u64, ItsError>| r.map(|v| v & gits::OFFSET_MASK).unwrap_or(u64::MAX);
    // 1. Past the end: a command sits at the current offset, none may run.
    let start = its.cwriter;
    write_command(its.queue + start, sync);
    let past = its.queue_bytes + 2 * its::COMMAND_BYTES;
    let _ = its.write_cwriter(past);
    timer::sleep_us(1000);
    let r = offset(its.creadr());
    let ok = r == start;
    held &= ok;
    let _ = write!(
        detail,
        "past-end={} ",
        if ok { "ignored" } else { "PROCESSED" }
    );
    // 2. Misaligned: the one SYNC at `start` runs.
    its.cwriter = its::next_offset(start, its.queue_bytes);
    let _ = its.write_cwriter(its.cwriter | 0x1e);
    let r = its.wait();
    held &= r.is_ok();
    let _ = write!(detail, "misaligned={} ", batch(r));
    // 3. CREADR is read-only.
    let before = offset(its.creadr());
    let _ = gic::write64(its.reg(gits::CREADR), its::COMMAND_BYTES * 3, "gits_creadr");
    let after = offset(its.creadr());
    let ok = before == after;
    held &= ok;
    let _ = write!(
        detail,
        "creadr-write={} ",
        if ok { "ignored" } else { "CHANGED" }
    );
    // 4. A lap minus one: every slot a SYNC, CWRITER one command behind CREADR.
    let r0 = its.cwriter;
    let mut slot = 0;
    while slot < its.queue_bytes {
        write_command(its.queue + slot, sync);
        slot += its::COMMAND_BYTES;
    }
    its.cwriter = (r0 + its.queue_bytes - its::COMMAND_BYTES) % its.queue_bytes;
    let r = its.kick().and_then(|()| its.wait());
    held &= r.is_ok();
    let _ = write!(detail, "lap-behind={} ", batch(r));
    // 5. Retry with nothing stalled.
    let r = its
        .write_cwriter(its.cwriter | gits::CWRITER_RETRY)
        .and_then(|()| its.wait());
    held &= r.is_ok();
    let _ = write!(detail, "retry={}", batch(r));
    held
}

/// [`STORM_COMMANDS`] MAPDs of its own function back to back: remapped with the largest
/// ITT (2^16 events, at the start of its RAM), unmapped, remapped small, and MAPDs of an
/// absent DeviceID. Every GITS access must return promptly (the vITS does at most 64 commands
/// per access) and the storm must complete.
fn mapd_storm(its: &mut Its, own: Own, ctx: &Context<'_>, detail: &mut Text<200>) -> bool {
    let big_itt = ctx.platform.memory_base().next_multiple_of(256);
    let small_itt = its.page(page::SPARE);
    println!(
        "ATTACK its-mapd-storm attempting commands={STORM_COMMANDS} device={:#x} itt-bits=16@{big_itt:#x}",
        own.device
    );
    SLOWEST_ACCESS_TICKS.store(0, Ordering::Relaxed);
    let start = timer::now();
    let mut result = Ok(());
    for i in 0..STORM_COMMANDS {
        let c = match i % 4 {
            0 => its::mapd(own.device, 15, big_itt, true),
            1 => its::mapd(own.device, 0, small_itt, false),
            2 => its::mapd(own.device, 1, small_itt, true),
            _ => its::mapd(0xfe, 15, big_itt, true),
        };
        if let Err(e) = its.put(c) {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        result = its.run(&[]);
    }
    let ms = timer::us_from_ticks(timer::now().wrapping_sub(start)) / 1000;
    let slowest = timer::us_from_ticks(SLOWEST_ACCESS_TICKS.load(Ordering::Relaxed));
    let _ = write!(
        detail,
        "batch={} ms={ms} slowest-access-us={slowest}",
        batch(result)
    );
    result.is_ok()
}

/// The ITS turned off (GITS_CTLR.Enabled = 0, Quiescent awaited) while the NIC's events are
/// mapped, then an ARP exchange: a disabled ITS translates no message (GICv3 §12.19.1,
/// GITS_CTLR.Enabled), so neither the TX nor the RX LPI may arrive. The frame itself must
/// still go and come back (the ring is polled). The ITS is then turned on; the restore maps
/// the NIC again, and the exchange after the attack must bring its interrupts.
fn disabled(its: &mut Its, nic: &mut Nic, own: Own, detail: &mut Text<200>) -> bool {
    println!(
        "ATTACK its-disabled attempting gits-ctlr=0 exchange device={:#x}",
        own.device
    );
    let lpis = [TX_VECTOR, RX_VECTOR].map(|v| own.first_lpi + u32::from(v));
    let before = lpis.map(gic::taken);
    if let Err(e) = its.disable() {
        let _ = write!(detail, "disable={e}");
        return false;
    }
    let exchanged = nic.exchange().is_ok();
    // Whatever the exchange's own waits missed, a late one gets 100 ms more.
    let _ = lpi_arrives(lpis[0], before[0]);
    let taken: u32 = lpis
        .iter()
        .zip(before)
        .map(|(&lpi, was)| gic::taken(lpi) - was)
        .sum();
    let on = its.enable();
    let _ = write!(
        detail,
        "exchange={} lpis-while-disabled={taken} enable={}",
        if exchanged { "ok" } else { "failed" },
        batch(on)
    );
    exchanged && taken == 0 && on.is_ok()
}

/// The vCPU waiting for interrupts (`attacks::sgi_receiver`) once its interrupt set-up is
/// done: (index, affinity). None on a one-CPU slice, or when it did not come up within 2 s.
fn ready_receiver(ctx: &Context<'_>) -> Option<(usize, u64)> {
    let index = super::attacks::sgi_receiver(ctx.platform, ctx.boot_index)?;
    let deadline = timer::now() + timer::ticks_from_ms(2000);
    while gic::receiver_setup().is_none() && timer::now() < deadline {
        timer::pause();
    }
    match gic::receiver_setup() {
        Some(Ok(())) => Some((index, smp::seen(index)?)),
        _ => None,
    }
}

/// The LPIs of the receiver (another vCPU, asleep in WFI with IRQs unmasked) enabled from
/// this CPU: its redistributor's GICR_PROPBASER (the property table this CPU uses),
/// GICR_PENDBASER (a pending table of its own) and EnableLPIs written from here; collection
/// 1 mapped to it and the NIC's TX event moved there (MAPC, MOVI, SYNC). An ARP exchange must
/// make the receiver take the TX LPI (under the microvisor on a GICv4 node: its vPE made
/// resident on its own core, asked for from this one). The event goes back to collection 0.
fn remote_lpis(
    its: &mut Its,
    nic: &mut Nic,
    own: Own,
    (index, affinity): (usize, u64),
    detail: &mut Text<200>,
) -> bool {
    let event = u32::from(TX_VECTOR);
    let lpi = own.first_lpi + event;
    println!(
        "ATTACK its-remote-lpis attempting cpu={index} affinity={affinity:#x} propbaser,pendbaser,enable-lpis mapc=1 movi=event{event}"
    );
    let result = (|| -> Result<(u64, bool), ItsError> {
        let (frame, enabled) = enable_remote_lpis(its, affinity, its.page(page::PROPERTIES))?;
        let target = if its.typer.targets_addresses() {
            frame >> 16
        } else {
            (gic::read64(frame + microvisor_probe::gic::gicr::TYPER, "gicr_typer")? >> 8) & 0xffff
        };
        its.run(&[
            its::mapc(1, target, true),
            its::movi(own.device, event, 1),
            its::sync(target),
        ])?;
        Ok((target, enabled))
    })();
    let (target, enabled) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = write!(detail, "setup={e}");
            return false;
        }
    };
    let before = gic::taken(lpi);
    let exchanged = nic.exchange().is_ok();
    let deadline = timer::now() + timer::ticks_from_ms(100);
    while gic::taken(lpi) == before && timer::now() < deadline {
        timer::pause();
    }
    let taken = gic::taken(lpi) - before;
    let by = gic::lpi_taken_by(lpi);
    let back = its.run(&[its::movi(own.device, event, 0), its::sync(its.target)]);
    let _ = write!(
        detail,
        "enable-lpis={} target={target:#x} exchange={} tx-lpi={taken} taken-by={by:#x} back={}",
        if enabled { "set" } else { "clear" },
        if exchanged { "ok" } else { "failed" },
        batch(back)
    );
    enabled && taken > 0 && by == affinity && back.is_ok()
}

/// Enables the LPIs of the vCPU whose redistributor is at affinity `affinity` from this CPU:
/// its GICR_PROPBASER (`properties`), GICR_PENDBASER (the remote pending table) and
/// EnableLPIs. Returns the frame and whether EnableLPIs reads set.
fn enable_remote_lpis(its: &Its, affinity: u64, properties: u64) -> Result<(u64, bool), ItsError> {
    let frame = gic::Gic::from_platform().frame_of(affinity)?;
    gic::write64(
        frame + gicr::PROPBASER,
        its::propbaser(properties, LPI_ID_BITS),
        "gicr_propbaser",
    )?;
    gic::write64(
        frame + gicr::PENDBASER,
        its::pendbaser(its.page(page::REMOTE_PENDING)),
        "gicr_pendbaser",
    )?;
    barrier::dsb(barrier::SY);
    let ctlr = gic::read32(frame + gicr::CTLR, "gicr_ctlr")?;
    gic::write32(
        frame + gicr::CTLR,
        ctlr | gicr::CTLR_ENABLE_LPIS,
        "gicr_ctlr",
    )?;
    let enabled = gic::read32(frame + gicr::CTLR, "gicr_ctlr")? & gicr::CTLR_ENABLE_LPIS != 0;
    Ok((frame, enabled))
}

/// The receiver asked to turn itself off (an SGI; it calls PSCI CPU_OFF), AFFINITY_INFO
/// polled until it reads OFF (1 s at most); then its LPIs enabled from here with the
/// property table at the spare pages, where every LPI is disabled. Nothing of this may
/// outlive the run: a vPE made resident for the vCPU while it is off would keep that table
/// into the slice's next run, whose `its-remote-lpis` then finds the NIC's LPI disabled. This
/// run can only tell that the steps were done (`contained`).
fn remote_off(
    its: &mut Its,
    (index, affinity): (usize, u64),
    ctx: &Context<'_>,
    detail: &mut Text<200>,
) -> bool {
    let properties = its.page(page::SPARE);
    println!(
        "ATTACK its-remote-off attempting cpu={index} affinity={affinity:#x} cpu-off then propbaser={properties:#x},pendbaser,enable-lpis"
    );
    gic::request_receiver_off();
    let sent = gic::send_sgi(SgiRequest::to(affinity, SELF_TEST_SGI).value()).is_ok();
    let deadline = timer::now() + timer::ticks_from_ms(1000);
    let off = loop {
        if psci::affinity_info(ctx.conduit, affinity) == 1 {
            break true;
        }
        if timer::now() > deadline {
            break false;
        }
        timer::pause();
    };
    if !(sent && off) {
        let _ = write!(detail, "sgi-sent={sent} receiver-off=no");
        return false;
    }
    match enable_remote_lpis(its, affinity, properties) {
        Ok((_, enabled)) => {
            let _ = write!(
                detail,
                "receiver-off=yes enable-lpis={}",
                if enabled { "set" } else { "clear" }
            );
            enabled
        }
        Err(e) => {
            let _ = write!(detail, "receiver-off=yes setup={e}");
            false
        }
    }
}
