//! The network attacks (`net-*`, issue 10 "Bad input") on the virtio-net function set up by
//! `net`: descriptors outside the slice's RAM, MSI-X entries aimed at other doorbells, PBA
//! writes, BAR moves, bus mastering cleared under load, extended configuration space, and a
//! slice reset with DMA in flight. Outcomes and verdicts are in
//! `microvisor_probe::virtio::attacks`.

use core::fmt::Write;

use microvisor_probe::cmdline::Attack;
use microvisor_probe::pci::{COMMAND_BUS_MASTER, config};
use microvisor_probe::psci as psci_ids;
use microvisor_probe::text::Text;
use microvisor_probe::verdict::{Outcome, Verdict};
use microvisor_probe::virtio::attacks::{
    BarCase, BarMoveOutcome, BusMasterOutcome, Delivery, DescOutsideOutcome, DmaCase,
    HiddenCapsOutcome, MAX_CAPS, MAX_MSI_CASES, MsiEffect, MsixOutcome, PbaOutcome, PendingOutcome,
};
use microvisor_probe::virtio::{
    GICD_SETSPI_NSR, PHYSICAL_ITS_TRANSLATER, RX_QUEUE, TX_QUEUE, status,
};

use super::attacks::{Context, conclude};
use super::console::println;
use super::guarded::Fault;
use super::net::{
    self, BUFFER_BYTES, MAILBOX_DATA, NIC, NetError, Nic, RX_BUFFERS, TX_BUFFERS, TX_VECTOR, bar,
};
use super::{gic, nvme, psci, timer};

/// Runs one `net-*` attack.
pub fn run(attack: Attack, ctx: &Context<'_>) {
    let name = attack.name();
    let mut guard = NIC.lock();
    let Some(nic) = guard.as_mut() else {
        println!("ATTACK {name} attempting nothing");
        super::attacks::tally(attack, Verdict::Unverified);
        println!("ATTACK {name} {} no-virtio-net", Verdict::Unverified);
        return;
    };
    match attack {
        Attack::NetDescOutside => desc_outside(nic, ctx),
        Attack::NetMsixForeign => msix_foreign(nic, ctx),
        Attack::NetPbaWrite => pba_write(nic),
        Attack::NetBarMove => bar_move(nic, ctx),
        Attack::NetBusMaster => bus_master(nic),
        Attack::NetHiddenCaps => hidden_caps(nic),
        Attack::NetMsixPending => msix_pending(nic),
        Attack::NetResetDma => reset_dma(nic, ctx),
        _ => {}
    }
}

fn nic_ready() -> bool {
    net::PASSED.get().copied().unwrap_or(false)
}

/// `target=` (page aligned) if it lies outside RAM and the image, and the first IPA past RAM.
fn outside(ctx: &Context<'_>) -> [Option<u64>; 2] {
    let end = ctx.platform.memory_end();
    let target = ctx
        .target
        .map(|t| t & !0xfff)
        .filter(|&t| !ctx.platform.in_memory(t) && !ctx.image.contains(t) && t != end);
    // `target=` (another slice's RAM) first: under a fault policy that ends the run, the first
    // refused transfer is the only one made, and it must be the one at the victim.
    match target {
        Some(t) => [Some(t), Some(end)],
        None => [Some(end), None],
    }
}

fn needs_reset(nic: &Nic) -> Option<u8> {
    nic.status()
        .ok()
        .filter(|s| s & status::DEVICE_NEEDS_RESET != 0)
}

/// Polls queue `q` for a used element for up to `ms`.
fn poll_used(nic: &mut Nic, q: u16, ms: u64) -> Option<(u32, u32)> {
    let deadline = timer::now() + timer::ticks_from_ms(ms);
    loop {
        if let Some(e) = nic.next_used(q) {
            return Some(e);
        }
        if timer::now() > deadline || needs_reset(nic).is_some() {
            return None;
        }
        timer::sleep_us(100);
    }
}

fn tx_outside(nic: &mut Nic, at: u64) -> DmaCase {
    if nic.start(RX_BUFFERS).is_err() {
        return DmaCase::NotSent("restart");
    }
    let frame = nic.arp_request();
    let part = nic.fill_tx(0, &frame);
    nic.queue_tx_chain(0, &[part, (at, 64)]);
    if nic.notify_queue(TX_QUEUE).is_err() {
        return DmaCase::NotSent("notify");
    }
    let used = poll_used(nic, TX_QUEUE, 1000);
    let replied = used.is_some() && nic.wait_reply(500).is_ok();
    match (used, replied, needs_reset(nic)) {
        (_, true, _) => DmaCase::Replied,
        (Some((_, len)), false, _) => DmaCase::Completed { len },
        (None, _, Some(s)) => DmaCase::NeedsReset(s),
        (None, _, None) => DmaCase::NoCompletion,
    }
}

fn rx_outside(nic: &mut Nic, at: u64) -> DmaCase {
    if nic.start(0).is_err() {
        return DmaCase::NotSent("restart");
    }
    if nic.post_rx(0, at, BUFFER_BYTES as u32).is_err() || nic.notify_queue(RX_QUEUE).is_err() {
        return DmaCase::NotSent("post-rx");
    }
    if nic.send_arp().is_err() {
        return DmaCase::NotSent("tx");
    }
    match (poll_used(nic, RX_QUEUE, 1000), needs_reset(nic)) {
        (Some((_, len)), _) => DmaCase::Completed { len },
        (None, Some(s)) => DmaCase::NeedsReset(s),
        (None, None) => DmaCase::NoCompletion,
    }
}

/// The TX descriptor table outside, the rings in RAM: one head published and notified. A used
/// element means the device fetched a descriptor from there.
fn ring_outside(nic: &mut Nic, at: u64) -> DmaCase {
    if nic.start_with(RX_BUFFERS, Some(at)).is_err() {
        return match needs_reset(nic) {
            Some(s) => DmaCase::NeedsReset(s),
            None => DmaCase::NotSent("restart"),
        };
    }
    nic.publish_head(TX_QUEUE, 0);
    if nic.notify_queue(TX_QUEUE).is_err() {
        return DmaCase::NotSent("notify");
    }
    match (poll_used(nic, TX_QUEUE, 1000), needs_reset(nic)) {
        (Some((_, len)), _) => DmaCase::Completed { len },
        (None, Some(s)) => DmaCase::NeedsReset(s),
        (None, None) => DmaCase::NoCompletion,
    }
}

fn recover(nic: &mut Nic) -> bool {
    nic.start(RX_BUFFERS).is_ok() && nic.exchange().is_ok()
}

fn desc_outside(nic: &mut Nic, ctx: &Context<'_>) {
    let targets = outside(ctx);
    let mut line = Text::<160>::new();
    for t in targets.iter().flatten() {
        let _ = write!(line, " at={t:#x}");
    }
    println!(
        "ATTACK net-desc-outside attempting tx-chain+rx-buffer+tx-desc-table{}",
        line.as_str().unwrap_or("")
    );
    let mut outcome = DescOutsideOutcome {
        nic_ready: nic_ready(),
        cases: [None; 2],
        recovered: None,
    };
    for (slot, t) in targets.iter().enumerate() {
        if let Some(at) = *t {
            let tx = tx_outside(nic, at);
            let rx = rx_outside(nic, at);
            let ring = ring_outside(nic, at);
            outcome.cases[slot] = Some((at, tx, rx, ring));
        }
    }
    if outcome.verdict() == Verdict::NotContained {
        // A completion is no proof by itself: a device may complete a transfer its IOMMU
        // refused (QEMU's do: refused reads return zeros, refused writes vanish). The
        // hypervisor's answer to the fault record is to end the slice's run; only a slice
        // still running long after that would have come is a breach.
        println!(
            "ATTACK net-desc-outside completed-outside waiting {FAULT_POLICY_WAIT_MS} ms for the fault policy"
        );
        timer::sleep_us(FAULT_POLICY_WAIT_MS * 1000);
    }
    outcome.recovered = Some(recover(nic));
    conclude(Attack::NetDescOutside, &outcome);
}

/// How long `net-desc-outside` waits, after a case completed with a buffer outside its RAM,
/// for the hypervisor to end the slice's run before it calls the completion a breach. The
/// SMMU's fault interrupt is serviced within milliseconds; under TCG on a loaded host, within
/// a few hundred.
const FAULT_POLICY_WAIT_MS: u64 = 10_000;

/// Whether SPI `intid` reads pending in the distributor.
fn spi_pending(ctx: &Context<'_>, intid: u32) -> bool {
    let g = gic::Gic::from_platform();
    let _ = ctx;
    let word = g.gicd(microvisor_probe::gic::gicd::ISPENDR + u64::from(intid / 32) * 4);
    gic::read32(word, "gicd_ispendr").is_ok_and(|v| v & (1 << (intid % 32)) != 0)
}

fn delivery(nic: &mut Nic) -> Delivery {
    match nic.exchange() {
        Ok(x) => x.tx_irq.map_or(Delivery::NotDelivered, Delivery::Delivered),
        Err(_) => Delivery::NotSent("exchange"),
    }
}

fn msix_foreign(nic: &mut Nic, ctx: &Context<'_>) {
    let gicd = ctx.platform.gic.map(|g| g.distributor);
    let uart = ctx.platform.uart_intid.unwrap_or(33);
    let beyond = ctx.platform.mbi.map_or(96, |(first, count)| first + count);
    let (_, _, own_ram) = nic.spare_pages();
    let mut cases: [Option<(&'static str, u64, u32, MsiEffect)>; MAX_MSI_CASES] = [None; 6];
    let mut n = 0;
    let mut add = |label, addr, data| {
        cases[n] = Some((label, addr, data, MsiEffect::NotSent("pending")));
        n += 1;
    };
    add("its", PHYSICAL_ITS_TRANSLATER, 0);
    if let Some(d) = gicd {
        add("spi-uart", d + GICD_SETSPI_NSR, uart);
        add("spi-beyond", d + GICD_SETSPI_NSR, beyond);
    }
    add(
        "outside",
        outside(ctx)[1].unwrap_or(ctx.platform.memory_end()),
        MAILBOX_DATA | 0x99,
    );
    add("own-ram", own_ram, MAILBOX_DATA | 0x77);
    let mut line = Text::<400>::new();
    for (label, addr, data, _) in cases.iter().flatten() {
        let _ = write!(line, " {label}@{addr:#x}={data:#x}");
    }
    println!(
        "ATTACK net-msix-foreign attempting vector={TX_VECTOR}{} doorbell={}",
        line.as_str().unwrap_or(""),
        nic.doorbell
    );
    let baseline = delivery(nic);
    for case in cases.iter_mut().flatten() {
        let (label, addr, data, _) = *case;
        if nic.in_dma_word(addr) {
            net::dma_write32(addr, 0);
        }
        nic.clear_irq(TX_VECTOR);
        let before = nic.irq_count(TX_VECTOR);
        if nic.write_msix_entry(TX_VECTOR, addr, data, false).is_err() {
            case.3 = MsiEffect::NotSent("entry-write");
            continue;
        }
        if nic.send_arp().is_err() {
            case.3 = MsiEffect::NotSent("tx");
            continue;
        }
        let _ = nic.wait_reply(500);
        timer::sleep_us(20_000);
        let landed = match label {
            "spi-uart" | "spi-beyond" => spi_pending(ctx, data),
            _ if nic.in_dma_word(addr) => net::dma_read32(addr) == data,
            _ => false,
        };
        case.3 = if landed {
            MsiEffect::Landed
        } else if nic.irq_count(TX_VECTOR) > before {
            MsiEffect::OwnDoorbell
        } else {
            MsiEffect::NoneSeen
        };
    }
    let restored = match nic.program_msix() {
        Ok(()) => delivery(nic),
        Err(_) => Delivery::NotSent("restore"),
    };
    conclude(
        Attack::NetMsixForeign,
        &MsixOutcome {
            baseline,
            cases,
            restored,
        },
    );
}

/// The TX vector's Mask bit set, one ARP request sent (its TX completion is the vector's
/// event), its Pending Bit read; the Mask bit cleared, up to 100 ms for the interrupt, the bit
/// read again.
fn msix_pending(nic: &mut Nic) {
    let word = nic.msix_pba + 4 * u64::from(TX_VECTOR / 32);
    let bit = 1u32 << (TX_VECTOR % 32);
    println!(
        "ATTACK net-msix-pending attempting vector={TX_VECTOR} pba={word:#x} doorbell={}",
        nic.doorbell
    );
    let pending = || {
        bar::r32(word, "pba")
            .map(|w| w & bit != 0)
            .map_err(|_| PendingOutcome::Unverified("pba-read"))
    };
    let outcome = (|| {
        nic.clear_irq(TX_VECTOR);
        let before = nic.irq_count(TX_VECTOR);
        nic.set_vector_masked(TX_VECTOR, true)
            .map_err(|_| PendingOutcome::Unverified("mask"))?;
        nic.send_arp()
            .map_err(|_| PendingOutcome::Unverified("tx"))?;
        let _ = nic.wait_reply(500);
        timer::sleep_us(20_000);
        let while_masked = nic.irq_count(TX_VECTOR) - before;
        let pba_masked = pending()?;
        nic.set_vector_masked(TX_VECTOR, false)
            .map_err(|_| PendingOutcome::Unverified("unmask"))?;
        let deadline = timer::now() + timer::ticks_from_ms(100);
        while nic.irq_count(TX_VECTOR) == before + while_masked && timer::now() < deadline {
            timer::pause();
        }
        let delivered = nic.irq_count(TX_VECTOR) > before + while_masked;
        Ok(PendingOutcome::Done {
            while_masked,
            pba_masked,
            delivered,
            pba_after: pending()?,
        })
    })()
    .unwrap_or_else(|e| e);
    conclude(Attack::NetMsixPending, &outcome);
}

fn pba_write(nic: &mut Nic) {
    let addr = nic.msix_pba;
    println!("ATTACK net-pba-write attempting write32 {addr:#x}=0xffffffff,0x0");
    let outcome = (|| {
        let before = bar::r32(addr, "pba").map_err(|_| PbaOutcome::Unverified("pba-read"))?;
        let refused = |e: NetError| match e {
            NetError::Mmio {
                fault: Fault::Exception { esr, .. },
                ..
            } => PbaOutcome::Refused { addr, esr },
            _ => PbaOutcome::Unverified("pba-unaddressable"),
        };
        bar::w32(addr, u32::MAX, "pba").map_err(refused)?;
        let after_ones = bar::r32(addr, "pba").map_err(|_| PbaOutcome::Unverified("pba-read"))?;
        bar::w32(addr, 0, "pba").map_err(refused)?;
        let after_zero = bar::r32(addr, "pba").map_err(|_| PbaOutcome::Unverified("pba-read"))?;
        Ok(PbaOutcome::Done {
            addr,
            before,
            after_ones,
            after_zero,
        })
    })()
    .unwrap_or_else(|e| e);
    conclude(Attack::NetPbaWrite, &outcome);
}

/// Writes BAR `index` (64-bit if `is64`) of the NIC; false if a write faulted.
fn write_bar(nic: &Nic, index: usize, is64: bool, pci: u64) -> bool {
    let reg = config::BAR0 + 4 * index as u16;
    let low = nic.ecam.read(nic.bdf, reg).map(|v| v & 0xf).unwrap_or(0);
    let ok = nic
        .ecam
        .write(nic.bdf, reg, (pci as u32 & !0xf) | low)
        .is_ok();
    ok && (!is64 || nic.ecam.write(nic.bdf, reg + 4, (pci >> 32) as u32).is_ok())
}

fn bar_move(nic: &mut Nic, ctx: &Context<'_>) {
    let Some((index, own)) = nic.bars.iter().enumerate().find_map(|(i, b)| {
        b.filter(|b| b.cpu <= nic.common && nic.common < b.cpu + b.size)
            .map(|b| (i, b))
    }) else {
        println!("ATTACK net-bar-move attempting nothing");
        super::attacks::tally(Attack::NetBarMove, Verdict::Unverified);
        println!("ATTACK net-bar-move {} no-common-bar", Verdict::Unverified);
        return;
    };
    let (_, canary, _) = nic.spare_pages();
    let pattern = 0xC0DE_0000 | (ctx.seed as u32 & 0xffff);
    net::dma_write32(canary, pattern);
    // The other function's BAR: the NVMe controller's BAR0 if there is one, else the NIC's
    // own MSI-X BAR.
    let window = ctx.platform.pci.and_then(|h| h.mem32);
    let to_pci = |cpu: u64| window.map_or(cpu, |w| cpu - w.cpu + w.pci);
    let nvme_bar = nvme::CONTROLLER.lock().as_ref().map(|c| c.bar);
    let (label, other_cpu, other_size) = match (nvme_bar, nic.bars[1]) {
        (Some(b), _) => ("nvme-bar0", Some(b), NVME_BAR0_BYTES),
        (None, Some(b)) => ("own-bar1", Some(b.cpu), b.size),
        (None, None) => ("none", None, 0),
    };
    // The first dword of every page the two BARs would share: a moved BAR that took over
    // any page of the other shows there (its first page may be one the hypervisor traps
    // and routes to the right device whatever overlaps it).
    let pages = (other_size.min(own.size) / 4096).clamp(1, MAX_SHARED_PAGES as u64) as usize;
    let read_pages = |cpu: u64| -> Result<[u32; MAX_SHARED_PAGES], ()> {
        let mut words = [0u32; MAX_SHARED_PAGES];
        for (p, word) in words.iter_mut().enumerate().take(pages) {
            *word = bar::r32(cpu + p as u64 * 4096, "other-bar").map_err(|_| ())?;
        }
        Ok(words)
    };
    let other_pci = other_cpu.map(to_pci).unwrap_or(0);
    println!(
        "ATTACK net-bar-move attempting bar{index}={:#x}->{canary:#x}(own-ram),{other_pci:#x}({label})",
        own.pci
    );
    // Over own RAM.
    let over_ram = if write_bar(nic, index, own.is64, canary) {
        let now = net::dma_read32(canary);
        if now == pattern {
            BarCase::Intact
        } else {
            BarCase::Changed {
                before: u64::from(pattern),
                after: u64::from(now),
            }
        }
    } else {
        BarCase::Refused
    };
    write_bar(nic, index, own.is64, own.pci);
    // Over the other BAR.
    let over_bar = match other_cpu {
        None => BarCase::NotSent("no-other-bar"),
        Some(cpu) => {
            // SAFETY of the reads: both are BAR addresses in the host bridge window (guarded).
            match read_pages(cpu) {
                Err(()) => BarCase::NotSent("other-bar-read"),
                Ok(before) => {
                    if write_bar(nic, index, own.is64, other_pci) {
                        let read = read_pages(cpu);
                        write_bar(nic, index, own.is64, own.pci);
                        let after = read.unwrap_or(before.map(|b| !b));
                        let mut differs = before.iter().zip(&after).filter(|(b, a)| b != a);
                        let first = differs.clone().next();
                        match first {
                            None => BarCase::Intact,
                            // Neither BAR decodes the overlap (a master abort): the moved BAR
                            // took nothing over.
                            Some(_) if differs.all(|(_, &a)| a == u32::MAX) => BarCase::Unclaimed,
                            Some((&before, &after)) => BarCase::Changed {
                                before: u64::from(before),
                                after: u64::from(after),
                            },
                        }
                    } else {
                        write_bar(nic, index, own.is64, own.pci);
                        BarCase::Refused
                    }
                }
            }
        }
    };
    let nic_after = Some(nic.exchange().is_ok() || recover(nic));
    conclude(
        Attack::NetBarMove,
        &BarMoveOutcome {
            over_ram: (canary, over_ram),
            over_bar: (label, other_pci, over_bar),
            nic_after,
        },
    );
}

/// Bytes of the NVMe controller's BAR0 the probe looks at (registers, doorbells, MSI-X table
/// and PBA of the microvisor's controller; QEMU's has them in its first 16 KiB too).
const NVME_BAR0_BYTES: u64 = 0x4000;
/// Pages of the other BAR `net-bar-move` compares.
const MAX_SHARED_PAGES: usize = 4;

fn bus_master(nic: &mut Nic) {
    const FRAMES: u16 = 8;
    println!("ATTACK net-bus-master attempting frames={FRAMES} command-bus-master=off,on");
    let mut outcome = BusMasterOutcome {
        queued: 0,
        done_while_off: 0,
        status_after: 0,
        command_fault: None,
        recovered: None,
        unverified: None,
    };
    if !nic_ready() {
        outcome.unverified = Some("nic-not-ready");
        conclude(Attack::NetBusMaster, &outcome);
        return;
    }
    let Ok(command) = nic.ecam.read(nic.bdf, config::COMMAND) else {
        outcome.unverified = Some("command-read");
        conclude(Attack::NetBusMaster, &outcome);
        return;
    };
    let frame = nic.arp_request();
    for k in 0..FRAMES {
        let part = nic.fill_tx(k, &frame);
        let first = nic.tx.avail_idx;
        nic.queue_tx_chain(first, &[part]);
    }
    outcome.queued = FRAMES;
    let _ = nic.notify_queue(TX_QUEUE);
    let off = (command & 0xffff) & !u32::from(COMMAND_BUS_MASTER);
    if let Err(super::pci::PciError::Config {
        fault: Fault::Exception { esr, .. },
        ..
    }) = nic.ecam.write(nic.bdf, config::COMMAND, off)
    {
        outcome.command_fault = Some(esr);
    }
    let _ = nic.notify_queue(TX_QUEUE);
    let deadline = timer::now() + timer::ticks_from_ms(20);
    while timer::now() < deadline {
        if nic.next_used(TX_QUEUE).is_some() {
            outcome.done_while_off += 1;
        } else {
            timer::sleep_us(100);
        }
    }
    let _ = nic.ecam.write(nic.bdf, config::COMMAND, command & 0xffff);
    let _ = nic.notify_queue(TX_QUEUE);
    timer::sleep_us(100_000);
    while nic.next_used(TX_QUEUE).is_some() {}
    outcome.status_after = nic.status().unwrap_or(0xff);
    let ok = nic.status_after_ok() && nic.exchange().is_ok();
    outcome.recovered = Some(ok || recover(nic));
    conclude(Attack::NetBusMaster, &outcome);
}

fn hidden_caps(nic: &mut Nic) {
    const WRITES: [u16; 4] = [0x100, 0x104, 0x108, 0x10c];
    println!(
        "ATTACK net-hidden-caps attempting read 0x100-0xfff write32 0x100-0x10c=0xffffffff,0x0"
    );
    let mut outcome = HiddenCapsOutcome {
        caps: [0; MAX_CAPS],
        cap_count: 0,
        ext_before: (0, None),
        writes: 0,
        write_faults: 0,
        ext_after: (0, None),
        unverified: None,
    };
    let (ecam, bdf) = (nic.ecam, nic.bdf);
    let mut ptr = ecam
        .read(bdf, config::CAP_POINTER)
        .map_or(0, |v| (v & 0xfc) as u16);
    let mut guard = 0;
    while ptr >= 0x40 && guard < 48 {
        guard += 1;
        let Ok(dw) = ecam.read(bdf, ptr) else { break };
        if outcome.cap_count < MAX_CAPS {
            outcome.caps[outcome.cap_count] = dw as u8;
            outcome.cap_count += 1;
        }
        ptr = ((dw >> 8) & 0xfc) as u16;
    }
    let scan = || -> Option<(u32, Option<(u16, u32)>)> {
        let mut count = 0;
        let mut first = None;
        let mut reg = config::EXTENDED;
        while reg < config::END {
            let v = ecam.read(bdf, reg).ok()?;
            if v != 0 {
                count += 1;
                first.get_or_insert((reg, v));
            }
            reg += 4;
        }
        Some((count, first))
    };
    let Some(before) = scan() else {
        outcome.unverified = Some("ext-read-fault");
        conclude(Attack::NetHiddenCaps, &outcome);
        return;
    };
    outcome.ext_before = before;
    for value in [u32::MAX, 0] {
        for reg in WRITES {
            outcome.writes += 1;
            if ecam.write(bdf, reg, value).is_err() {
                outcome.write_faults += 1;
            }
            if value == u32::MAX && ecam.read(bdf, reg).is_ok_and(|v| v != 0) {
                // A write that stuck counts even if the zero write undoes it.
                outcome.ext_after.0 += 1;
                outcome.ext_after.1.get_or_insert((reg, u32::MAX));
            }
        }
    }
    match scan() {
        Some((n, first)) => {
            outcome.ext_after.0 += n;
            if outcome.ext_after.1.is_none() {
                outcome.ext_after.1 = first;
            }
        }
        None => outcome.unverified = Some("ext-reread-fault"),
    }
    conclude(Attack::NetHiddenCaps, &outcome);
}

fn reset_dma(nic: &mut Nic, ctx: &Context<'_>) {
    const LOOP_MS: u64 = 50;
    println!(
        "ATTACK net-reset-dma attempting tx-loop frames={TX_BUFFERS} rx-posted={RX_BUFFERS} ms={LOOP_MS} then system-reset"
    );
    if !nic_ready() {
        super::attacks::tally(Attack::NetResetDma, Verdict::Unverified);
        println!("ATTACK net-reset-dma {} nic-not-ready", Verdict::Unverified);
        return;
    }
    let frame = nic.arp_request();
    let deadline = timer::now() + timer::ticks_from_ms(LOOP_MS);
    let mut sent: u32 = 0;
    while timer::now() < deadline {
        while nic.next_used(TX_QUEUE).is_some() {}
        let in_flight = nic.tx.avail_idx.wrapping_sub(nic.tx.used_seen);
        if in_flight < TX_BUFFERS.min(nic.tx.layout.size) {
            let part = nic.fill_tx(sent as u16, &frame);
            let first = nic.tx.avail_idx;
            nic.queue_tx_chain(first, &[part]);
            let _ = nic.notify_queue(TX_QUEUE);
            sent += 1;
        }
    }
    // Frames still queued: the reset lands mid-transfer.
    let frame_count = nic.tx.avail_idx.wrapping_sub(nic.tx.used_seen);
    println!("NET RESET-DMA sent={sent} in-flight={frame_count}");
    println!("PROBE ACTION system-reset");
    let ret = psci::call(ctx.conduit, psci_ids::SYSTEM_RESET, 0, 0, 0);
    println!("PROBE ACTION system-reset returned {ret}");
    super::attacks::tally(Attack::NetResetDma, Verdict::Unverified);
    println!(
        "ATTACK net-reset-dma {} reset-returned({ret})",
        Verdict::Unverified
    );
}

impl Nic {
    /// Whether an address is a word of the NIC's own DMA area.
    pub fn in_dma_word(&self, addr: u64) -> bool {
        net::in_dma(addr) && net::in_dma(addr + 3)
    }

    /// Whether the device status shows neither NEEDS_RESET nor FAILED.
    pub fn status_after_ok(&self) -> bool {
        self.status()
            .is_ok_and(|s| s & (status::DEVICE_NEEDS_RESET | status::FAILED) == 0)
    }
}
