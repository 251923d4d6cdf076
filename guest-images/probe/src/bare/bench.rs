//! The benchmarks of `bench=` (see `microvisor_probe::bench`): each prints one
//! `BENCH <name> <value> <unit> [key=value ...]` line. Counts come from the
//! generic virtual counter: under `-icount shift=0` it advances by one per
//! instruction executed at any EL, so the hypervisor's instructions are
//! included. Run them on a one-CPU machine: QEMU derives the counter from the
//! node-wide instruction count. The PMU's INST_RETIRED (counter 0, asked to
//! count at EL1 and, with PMEVTYPER.NSH, at EL2) is printed as `pmu=`:
//! natively it includes the probe's own EL2 stub, in a slice only the guest's
//! instructions, because the microvisor prohibits counting at EL2
//! (MDCR_EL2.HPMD, `microvisor_logic::el2`).

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use aarch64_cpu::registers::{
    CNTP_CTL_EL0, CNTP_CVAL_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, Readable, Writeable,
};
use microvisor_probe::bench::{
    self, Bench, CALL_ITERATIONS, IPI_ITERATIONS, Line, NIC_IRQ_ITERATIONS, PerOp,
    TIMER_DELAY_TICKS, TIMER_ITERATIONS,
};
use microvisor_probe::cmdline::Options;
use microvisor_probe::dt::Platform;
use microvisor_probe::gic::{SELF_TEST_SGI, SgiRequest};
use microvisor_probe::memplan::Range;
use microvisor_probe::verdict::{TimerCheck, TimerResult};

use super::console::println;
use super::{attacks, gic, net, psci, smp, timer};

/// The microvisor's null hypercall (SMC64 vendor hypervisor range).
const MICROVISOR_NULL: u64 = 0xC600_0001;
/// The microvisor's exit-counter hypercall; x1 = selector.
const MICROVISOR_EXITS: u64 = 0xC600_0002;
/// `MICROVISOR_EXITS` selector: all causes summed.
const EXITS_TOTAL: u64 = 0xffff;
/// PL011 flag register offset.
const UARTFR: u64 = 0x18;
/// INTID of the EL1 virtual timer (PPI 11).
const VIRTUAL_TIMER_INTID: u8 = 27;
/// INTID of the EL1 physical timer (PPI 14).
const PHYSICAL_TIMER_INTID: u8 = 30;
/// PMU event INST_RETIRED (Arm ARM D13.11).
const INST_RETIRED: u64 = 0x08;
/// PMEVTYPER<n>_EL0.NSH: count at EL2 as well.
const PMEVTYPER_NSH: u64 = 1 << 27;

/// Counter value at the first instruction of the IRQ vector (entry.rs writes it).
#[unsafe(no_mangle)]
pub static PROBE_IRQ_ENTRY_TICKS: AtomicU64 = AtomicU64::new(0);
/// Set by the IRQ handler when the awaited timer interrupt arrived.
static TIMER_FIRED: AtomicBool = AtomicBool::new(false);
/// The INTID of the timer whose interrupt is awaited (0: none).
static TIMER_ARMED: AtomicU8 = AtomicU8::new(0);

/// One of the two EL1 timers a guest has (Arm ARM D12.8).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timer {
    Virtual,
    Physical,
}

impl Timer {
    fn intid(self) -> u8 {
        match self {
            Timer::Virtual => VIRTUAL_TIMER_INTID,
            Timer::Physical => PHYSICAL_TIMER_INTID,
        }
    }

    fn of(intid: u8) -> Option<Timer> {
        [Timer::Virtual, Timer::Physical]
            .into_iter()
            .find(|t| t.intid() == intid)
    }

    /// Fires at `cval` with its interrupt unmasked. Both timers compare against the same
    /// count here: the microvisor and QEMU leave CNTVOFF_EL2 at 0.
    fn arm(self, cval: u64) {
        match self {
            Timer::Virtual => {
                CNTV_CVAL_EL0.set(cval);
                CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
            }
            Timer::Physical => {
                CNTP_CVAL_EL0.set(cval);
                CNTP_CTL_EL0.write(CNTP_CTL_EL0::ENABLE::SET + CNTP_CTL_EL0::IMASK::CLEAR);
            }
        }
    }

    fn stop(self) {
        match self {
            Timer::Virtual => CNTV_CTL_EL0.set(0),
            Timer::Physical => CNTP_CTL_EL0.set(0),
        }
    }
}

/// Starts PMU counter 0 on INST_RETIRED at EL1 and EL2 (not EL0, nothing
/// runs there; EL2 only where the hypervisor allows it).
fn pmu_start() {
    // SAFETY: PMU system registers only configure and enable counting; they
    // access no memory. EL1 may write them unless MDCR_EL2.TPM/TPMCR trap
    // them (neither QEMU's reset value nor the microvisor sets those).
    unsafe {
        core::arch::asm!(
            "msr pmevtyper0_el0, {ty}",
            "msr pmcntenset_el0, {one}",
            "mrs {t}, pmcr_el0",
            "orr {t}, {t}, #1",                 /* E: enable */
            "msr pmcr_el0, {t}",
            "isb",
            ty = in(reg) INST_RETIRED | PMEVTYPER_NSH,
            one = in(reg) 1u64,
            t = out(reg) _,
            options(nomem, nostack),
        );
    }
}

/// PMU counter 0.
fn pmu_read() -> u64 {
    let value: u64;
    // SAFETY: reading a PMU counter has no side effects.
    unsafe {
        core::arch::asm!("isb", "mrs {}, pmevcntr0_el0", out(reg) value, options(nomem, nostack));
    }
    value
}

/// Counter ticks and PMU instructions.
#[derive(Clone, Copy)]
struct Stamp {
    ticks: u64,
    insn: u64,
}

fn stamp() -> Stamp {
    Stamp {
        insn: pmu_read(),
        ticks: timer::now(),
    }
}

/// The slice's total exits, or `None` without the microvisor (the probe's
/// own EL2 stub answers NOT_SUPPORTED).
fn exits_total() -> Option<u64> {
    let ret = psci::hvc(MICROVISOR_EXITS, EXITS_TOTAL, 0, 0);
    (ret != -1).then_some(ret as u64)
}

/// Measures `f`: instructions at every EL (counter ticks), PMU instructions
/// (see the module doc), and the exits it caused (minus the reading
/// hypercall).
fn measure(f: impl FnOnce()) -> (u64, u64, Option<u64>) {
    let exits_before = exits_total();
    let start = stamp();
    f();
    let end = stamp();
    let exits_after = exits_total();
    let pmu = end.insn.wrapping_sub(start.insn);
    let ticks = end.ticks.wrapping_sub(start.ticks);
    let exits = match (exits_before, exits_after) {
        // The second reading counts its own exit.
        (Some(a), Some(b)) => Some(b.saturating_sub(a).saturating_sub(1)),
        _ => None,
    };
    (ticks, pmu, exits)
}

fn print_line(name: &str, value: &dyn core::fmt::Display, unit: &str, extra: &[(&str, u64)]) {
    println!(
        "{}",
        Line {
            name,
            value,
            unit,
            extra
        }
    );
}

/// `n` null hypercalls in a loop of four instructions.
fn null_hvc_loop(n: u64) {
    // SAFETY: SMCCC calls through HVC: x0-x17 may be clobbered (all declared
    // through the C ABI clobbers); the null call touches no memory.
    unsafe {
        core::arch::asm!(
            "1: mov x0, {fid}",
            "hvc #0",
            "subs x20, x20, #1",
            "b.ne 1b",
            fid = in(reg) MICROVISOR_NULL,
            inout("x20") n => _,
            clobber_abi("C"),
            options(nostack),
        );
    }
}

/// `n` 32-bit reads of the UART flag register in a loop of three instructions.
fn mmio_read_loop(n: u64, address: u64) {
    // SAFETY: reading UARTFR has no side effect on the PL011 (emulated or
    // real); the address is the DT's UART, mapped as Device memory by mmu.rs.
    unsafe {
        core::arch::asm!(
            "1: ldr {v:w}, [{a}]",
            "subs {n}, {n}, #1",
            "b.ne 1b",
            a = in(reg) address,
            n = inout(reg) n => _,
            v = out(reg) _,
            options(nostack, readonly),
        );
    }
}

/// How long `wait_for_timer` waits past the deadline for the interrupt (1 s of counter).
const TIMER_GRACE_TICKS: u64 = 1_000_000_000;

/// Programs `timer` for `cval`, unmasks IRQs and spins until the
/// handler saw its interrupt, or until `TIMER_GRACE_TICKS` after `cval`.
/// Returns whether the interrupt came.
fn wait_for_timer(timer: Timer, cval: u64) -> bool {
    TIMER_FIRED.store(false, Ordering::Release);
    TIMER_ARMED.store(timer.intid(), Ordering::Release);
    timer.arm(cval);
    let flag = TIMER_FIRED.as_ptr() as u64;
    let deadline = cval.saturating_add(TIMER_GRACE_TICKS);
    // SAFETY: IRQs are unmasked only inside this loop, which keeps no value
    // in registers the handler may clobber (C ABI clobbers declared) and
    // reads a flag the handler sets; they are masked again before leaving.
    unsafe {
        core::arch::asm!(
            "isb",
            "msr daifclr, #2",
            "1: ldrb w20, [{flag}]",
            "cbnz w20, 2f",
            "mrs x21, cntvct_el0",
            "cmp x21, {deadline}",
            "b.lo 1b",
            "2: msr daifset, #2",
            flag = in(reg) flag,
            deadline = in(reg) deadline,
            out("x20") _,
            out("x21") _,
            clobber_abi("C"),
        );
    }
    timer.stop();
    TIMER_ARMED.store(0, Ordering::Release);
    TIMER_FIRED.load(Ordering::Acquire)
}

/// Makes the virtual timer's interrupt fire while IRQs stay masked, so that the hypervisor
/// injects it (hardware-linked, the physical interrupt left active until the guest finishes
/// it) and the guest never takes it; then returns with the timer still firing. A SYSTEM_RESET
/// made now must not leave the core's timer interrupt stuck: the next run's `timer-irq`
/// benchmark (or any guest using timer interrupts) proves it was not.
pub fn leave_timer_interrupt_in_flight() {
    let gic = gic::Gic::from_platform();
    if let Err(e) = gic
        .enable_distributor()
        .map(|_| ())
        .and_then(|()| gic::prepare_receiver(&gic, VIRTUAL_TIMER_INTID))
    {
        println!("PROBE WARN timer-pending gic {e}");
        return;
    }
    CNTV_CVAL_EL0.set(timer::now());
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
    while !CNTV_CTL_EL0.is_set(CNTV_CTL_EL0::ISTATUS) {
        core::hint::spin_loop();
    }
    // The physical interrupt reaches EL2 at once; give the injection a moment anyway.
    timer::sleep_us(1000);
    println!(
        "PROBE timer-pending fired={}",
        u8::from(CNTV_CTL_EL0.is_set(CNTV_CTL_EL0::ISTATUS))
    );
}

/// From the IRQ handler, before the end of interrupt: the awaited timer
/// interrupt stops its timer and is marked seen. Returns whether it was one.
pub fn on_irq(intid: u64) -> bool {
    let armed = TIMER_ARMED.load(Ordering::Acquire);
    if armed == 0 || intid != u64::from(armed) {
        return false;
    }
    if let Some(timer) = Timer::of(armed) {
        timer.stop();
    }
    TIMER_ARMED.store(0, Ordering::Release);
    TIMER_FIRED.store(true, Ordering::Release);
    true
}

/// The `timers` check: each EL1 timer, armed 1 ms ahead, delivers its own interrupt
/// (virtual INTID 27, physical INTID 30). Err: the GIC could not be set up.
pub fn timer_check() -> Result<TimerCheck, gic::GicError> {
    let gic = gic::Gic::from_platform();
    gic.enable_distributor()?;
    let result = |timer: Timer| -> Result<TimerResult, gic::GicError> {
        gic::prepare_receiver(&gic, timer.intid())?;
        let cval = timer::now() + timer::ticks_from_ms(1);
        Ok(if wait_for_timer(timer, cval) {
            TimerResult::Fired {
                intid: timer.intid(),
            }
        } else {
            TimerResult::NoInterrupt
        })
    };
    Ok(TimerCheck {
        virtual_timer: result(Timer::Virtual)?,
        physical_timer: result(Timer::Physical)?,
    })
}

/// Virtual timer deadline to the IRQ vector's counter read, `TIMER_ITERATIONS` times.
fn timer_irq() {
    let gic = gic::Gic::from_platform();
    if let Err(e) = gic
        .enable_distributor()
        .map(|_| ())
        .and_then(|()| gic::prepare_receiver(&gic, VIRTUAL_TIMER_INTID))
    {
        println!("BENCH timer-irq FAILED gic {e}");
        return;
    }
    let exits_before = exits_total();
    let mut total = 0u64;
    let mut worst = 0u64;
    let mut best = u64::MAX;
    for _ in 0..TIMER_ITERATIONS {
        let cval = timer::now() + TIMER_DELAY_TICKS;
        if !wait_for_timer(Timer::Virtual, cval) {
            println!("BENCH timer-irq FAILED no-interrupt");
            return;
        }
        let latency = PROBE_IRQ_ENTRY_TICKS
            .load(Ordering::Acquire)
            .wrapping_sub(cval);
        total += latency;
        worst = worst.max(latency);
        best = best.min(latency);
    }
    let mut extra = [
        ("n", TIMER_ITERATIONS),
        ("min", best),
        ("max", worst),
        ("exits", 0),
    ];
    let shown = match (exits_before, exits_total()) {
        (Some(a), Some(b)) => {
            extra[3].1 = b.saturating_sub(a).saturating_sub(1);
            4
        }
        _ => 3,
    };
    print_line(
        "timer-irq",
        &PerOp::new(total, TIMER_ITERATIONS),
        "insn",
        &extra[..shown],
    );
}

/// SGI the `ipi` receiver answers with.
const PONG_SGI: u8 = 6;
/// How long one round trip may take before the benchmark gives up (1 s of counter).
const IPI_TIMEOUT_TICKS: u64 = 1_000_000_000;

/// Waits, IRQs masked between looks, until the boot CPU has taken more than `before`
/// answers; false after `deadline`. WFI wakes for a pending IRQ even while it is masked;
/// the IRQ is then taken by unmasking for a moment.
fn wait_for_pong(before: u32, deadline: u64) -> bool {
    loop {
        if gic::sgis_taken(PONG_SGI).0 != before {
            return true;
        }
        if timer::now() > deadline {
            return false;
        }
        timer::wait_for_interrupt(deadline);
        gic::take_pending_irqs();
    }
}

/// `IPI_ITERATIONS` round trips: an SGI to the receiver (the vCPU after the boot CPU, which
/// waits in WFI), which answers with an SGI to the boot CPU (also waiting in WFI) from its
/// IRQ handler. The counter counts every instruction of both CPUs (and of the hypervisor on
/// their cores) while one of them works, so the value is the instructions per round trip.
fn ipi(platform: &Platform, boot_index: usize) {
    let Some(receiver) = attacks::sgi_receiver(platform, boot_index) else {
        println!("BENCH ipi FAILED one-cpu");
        return;
    };
    let Some(target) = smp::seen(receiver) else {
        println!("BENCH ipi FAILED receiver-offline");
        return;
    };
    let deadline = timer::now() + timer::ticks_from_ms(2000);
    let setup = loop {
        match gic::receiver_setup() {
            Some(setup) => break setup,
            None if timer::now() > deadline => {
                println!("BENCH ipi FAILED receiver-setup-timeout");
                return;
            }
            None => timer::pause(),
        }
    };
    let gic = gic::Gic::from_platform();
    if let Err(e) = setup
        .and_then(|()| gic.enable_distributor().map(|_| ()))
        .and_then(|()| gic::prepare_receiver(&gic, PONG_SGI))
    {
        println!("BENCH ipi FAILED gic {e}");
        return;
    }
    gic::set_echo(SgiRequest::to(smp::own_affinity(), PONG_SGI).value());
    let ping = SgiRequest::to(target, SELF_TEST_SGI).value();
    let round_trip = || {
        let before = gic::sgis_taken(PONG_SGI).0;
        gic::send_sgi(ping).is_ok() && wait_for_pong(before, timer::now() + IPI_TIMEOUT_TICKS)
    };
    // One round trip first: both CPUs' paths warm, the receiver surely asleep.
    if !round_trip() {
        gic::set_echo(0);
        println!("BENCH ipi FAILED no-answer");
        return;
    }
    let exits_before = exits_total();
    let start = timer::now();
    let mut answered = true;
    for _ in 0..IPI_ITERATIONS {
        answered &= round_trip();
    }
    let ticks = timer::now().wrapping_sub(start);
    let exits_after = exits_total();
    gic::set_echo(0);
    if !answered {
        println!("BENCH ipi FAILED no-answer");
        return;
    }
    let mut extra = [("n", IPI_ITERATIONS), ("exits", 0)];
    let shown = match (exits_before, exits_after) {
        (Some(a), Some(b)) => {
            extra[1].1 = b.saturating_sub(a).saturating_sub(1);
            2
        }
        _ => 1,
    };
    print_line(
        "ipi",
        &PerOp::new(ticks, IPI_ITERATIONS),
        "insn",
        &extra[..shown],
    );
}

/// The `nic-irq` benchmark: [`NIC_IRQ_ITERATIONS`] ARP exchanges over the NIC set up at
/// boot, each waiting for its RX interrupt (`Nic::irq_exchange`: no trapped register on the
/// way). `BENCH nic-irq <exits per interrupt> exits n=<exchanges> irqs=<RX+TX interrupts>
/// exits=<slice exits in the loop> us=<mean round trip>`; natively without the exits.
fn nic_irq() {
    let mut guard = net::NIC.lock();
    let Some(nic) = guard.as_mut() else {
        println!("BENCH nic-irq FAILED no-nic");
        return;
    };
    if let net::Doorbell::Ram { .. } = nic.doorbell {
        println!(
            "BENCH nic-irq FAILED no-interrupts doorbell={}",
            nic.doorbell
        );
        return;
    }
    // One exchange first: the path warm, a stale reply drained.
    if !matches!(nic.irq_exchange(net::FRAME_TIMEOUT_MS), Ok(true)) {
        println!("BENCH nic-irq FAILED no-reply");
        return;
    }
    let irqs = |nic: &net::Nic| nic.irq_count(net::RX_VECTOR) + nic.irq_count(net::TX_VECTOR);
    let irqs_before = irqs(nic);
    let exits_before = exits_total();
    let start = timer::now();
    let mut replies = 0;
    for _ in 0..NIC_IRQ_ITERATIONS {
        match nic.irq_exchange(net::FRAME_TIMEOUT_MS) {
            Ok(true) => replies += 1,
            Ok(false) => {}
            Err(e) => {
                println!("BENCH nic-irq FAILED {e}");
                return;
            }
        }
    }
    let ticks = timer::now().wrapping_sub(start);
    let exits_after = exits_total();
    // The TX interrupt of the last exchange may still be on its way.
    timer::sleep_us(1000);
    let taken = u64::from(irqs(nic).saturating_sub(irqs_before));
    if replies != NIC_IRQ_ITERATIONS || taken == 0 {
        println!("BENCH nic-irq FAILED replies={replies} irqs={taken}");
        return;
    }
    let us = timer::us_from_ticks(ticks) / NIC_IRQ_ITERATIONS;
    match (exits_before, exits_after) {
        (Some(a), Some(b)) => {
            let exits = b.saturating_sub(a).saturating_sub(1);
            print_line(
                "nic-irq",
                &PerOp::new(exits, taken),
                "exits",
                &[
                    ("n", NIC_IRQ_ITERATIONS),
                    ("irqs", taken),
                    ("exits", exits),
                    ("us", us),
                ],
            );
        }
        _ => print_line(
            "nic-irq",
            &PerOp::new(0, taken),
            "exits",
            &[("n", NIC_IRQ_ITERATIONS), ("irqs", taken), ("us", us)],
        ),
    }
}

/// The workload over the RAM after the footprint (2 MiB aligned).
fn workload(platform: &Platform, image: Range, mib: u64) {
    let Some(ram) = platform
        .memory()
        .iter()
        .find(|r| r.base <= image.start && image.end <= r.base + r.size)
    else {
        println!("BENCH workload FAILED no-ram");
        return;
    };
    let start = image.end.next_multiple_of(2 << 20);
    let free = (ram.base + ram.size).saturating_sub(start);
    let words = bench::workload_words(free.min(mib << 20));
    if words == 0 {
        println!("BENCH workload FAILED no-free-ram");
        return;
    }
    // SAFETY: [start, start + 8 * words) lies in the RAM range the DT gave
    // (identity-mapped Normal memory by mmu.rs), after the probe's
    // footprint; the device tree was copied out at boot, the memory test did
    // not run, and no other CPU touches this memory.
    let buf = unsafe { core::slice::from_raw_parts_mut(start as *mut u64, words as usize) };
    let mut checksum = 0;
    let (insn, pmu, exits) = measure(|| checksum = bench::workload(buf));
    let extra = [
        ("mib", (words * 8) >> 20),
        ("checksum", checksum),
        ("pmu", pmu),
        ("exits", exits.unwrap_or(0)),
    ];
    let shown = if exits.is_some() { 4 } else { 3 };
    print_line("workload", &insn, "insn", &extra[..shown]);
}

/// Runs the benchmarks of `options` in order.
pub fn run(
    options: &Options,
    platform: &Platform,
    image: Range,
    entry_ticks: u64,
    boot_index: usize,
) {
    if options.benches().is_empty() {
        return;
    }
    pmu_start();
    for &b in options.benches() {
        match b {
            Bench::Boot => print_line("boot-entry", &entry_ticks, "ticks", &[]),
            Bench::NullHvc => {
                let (insn, pmu, exits) = measure(|| null_hvc_loop(CALL_ITERATIONS));
                call_line("null-hvc", insn, pmu, exits);
            }
            Bench::MmioRead => {
                let uart = platform.uart_base + UARTFR;
                let (insn, pmu, exits) = measure(|| mmio_read_loop(CALL_ITERATIONS, uart));
                call_line("mmio-read", insn, pmu, exits);
            }
            Bench::TimerIrq => timer_irq(),
            Bench::Ipi => ipi(platform, boot_index),
            Bench::Workload => workload(platform, image, options.workload_mib),
            Bench::NicIrq => nic_irq(),
        }
    }
    println!("BENCH done");
}

fn call_line(name: &str, insn: u64, pmu: u64, exits: Option<u64>) {
    let extra = [
        ("n", CALL_ITERATIONS),
        ("pmu", pmu),
        ("exits", exits.unwrap_or(0)),
    ];
    let shown = if exits.is_some() { 3 } else { 2 };
    print_line(
        name,
        &PerOp::new(insn, CALL_ITERATIONS),
        "insn",
        &extra[..shown],
    );
}
