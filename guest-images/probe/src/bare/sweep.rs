//! The swept attacks (`sysreg-*`, `abort-*`, `call-*`), `cntp-own` and the timing attacks
//! (`race-*`) with their racing vCPU. What each must give, and its verdict, is in
//! `microvisor_probe::sweep`; here they are only executed.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use microvisor_probe::cmdline::{Attack, Options};
use microvisor_probe::dt::Platform;
use microvisor_probe::fault::Fault;
use microvisor_probe::gic::first_unused;
use microvisor_probe::pci::Bdf;
use microvisor_probe::sweep::{
    ABORTS, AbortOutcome, AccessOp, CALLS, CallArg, CallConduit, CallSweepOutcome, DEVICE_HOLE,
    EC_UNKNOWN, EL0, El0Op, El0Outcome, Encoding, GIC_MMIO, GicFrame, GicMmioOutcome, PCI_SWEEP,
    PciOutcome, Place, RaceOutcome, SYSREGS, SysregOutcome, TimerOutcome, encodings,
    exception_class, external_abort,
};

use super::attacks::{Context, conclude};
use super::console::println;
use super::guarded::{self, El0Code, MmuOff, Special};
use super::{gic, mmu, smp, timer};

/// `sysreg-*`: one MRS or MSR of a swept encoding.
pub fn sysreg(attack: Attack, case: usize, write: bool) {
    let Some(&reg) = SYSREGS.get(case) else {
        return;
    };
    let op = if write { "msr" } else { "mrs" };
    println!(
        "ATTACK {} attempting {op} {}{}",
        attack.name(),
        reg.encoding,
        if write { " x0" } else { "" }
    );
    let result = access(reg.encoding, write, reg.write_value);
    conclude(
        attack,
        &SysregOutcome {
            case: reg,
            write,
            result,
        },
    );
}

/// One MRS (`write` false; returns the value) or MSR of `value` through the patched slot.
fn access(encoding: Encoding, write: bool, value: u64) -> Result<u64, Fault> {
    guarded::patch(encoding.instruction(!write, 0));
    let result = guarded::run_patched(value);
    if write { result.map(|_| 0) } else { result }
}

/// `abort-*`: one access that nothing backs (or, for the own UART, without a syndrome).
pub fn abort(attack: Attack, case: usize, ctx: &Context<'_>) {
    let Some(&case) = ABORTS.get(case) else {
        return;
    };
    let addr = match case.place {
        Place::PastRam => ctx.platform.memory_end(),
        Place::DeviceHole => DEVICE_HOLE,
        Place::OwnUart if case.op == AccessOp::Ldp => ctx.platform.uart_base + 0x20,
        Place::OwnUart => ctx.platform.uart_base + 0x18,
    };
    let addr = addr & !(case.op.bytes().min(8) - 1);
    println!(
        "ATTACK {} attempting {} {addr:#x}{}",
        attack.name(),
        case.op.mnemonic(),
        if case.mmu_off { " mmu-off" } else { "" }
    );
    let value = 0x5a5a_5a5a_5a5a_5a5a;
    // A fetch with the MMU on needs the target in a GiB the probe maps Normal (a RAM GiB): a
    // Device block is never executable, and that stage-1 fault would prove nothing.
    if case.op == AccessOp::Fetch && !case.mmu_off && !mmu::is_mapped(addr) {
        return conclude(
            attack,
            &AbortOutcome {
                case,
                addr,
                result: Err(Fault::Unaddressable),
            },
        );
    }
    // SAFETY: every target lies outside the probe's image and RAM (past RAM, a device hole, or
    // UART registers that reading does not disturb); a fetch aims where nothing backs memory.
    let result = unsafe {
        if case.mmu_off {
            let access = match case.op {
                AccessOp::Ld64 => MmuOff::Read64,
                AccessOp::St64 => MmuOff::Write64,
                AccessOp::Ld32 => MmuOff::Read32,
                AccessOp::St32 => MmuOff::Write32,
                _ => MmuOff::Fetch,
            };
            guarded::mmu_off(access, addr, value)
        } else {
            match case.op {
                AccessOp::Ld8 => guarded::read8(addr).map(u64::from),
                AccessOp::Ld16 => guarded::read16(addr).map(u64::from),
                AccessOp::Ld32 => guarded::read32(addr).map(u64::from),
                AccessOp::Ld64 => guarded::read64(addr),
                AccessOp::St8 => guarded::write8(addr, value as u8).map(|()| 0),
                AccessOp::St16 => guarded::write16(addr, value as u16).map(|()| 0),
                AccessOp::St32 => guarded::write32(addr, value as u32).map(|()| 0),
                AccessOp::St64 => guarded::write64(addr, value).map(|()| 0),
                AccessOp::Ldp => guarded::special(Special::Ldp, addr, 0),
                AccessOp::Stp => guarded::special(Special::Stp, addr, value),
                AccessOp::Ldar => guarded::special(Special::Ldar, addr, 0),
                AccessOp::Stlr => guarded::special(Special::Stlr, addr, value),
                AccessOp::Ldxr => guarded::special(Special::Ldxr, addr, 0),
                AccessOp::Stxr => guarded::special(Special::Stxr, addr, value),
                AccessOp::Fetch => guarded::special(Special::Fetch, addr, 0),
            }
        }
    };
    conclude(attack, &AbortOutcome { case, addr, result });
}

/// `call-*`: one SMCCC call that must be refused.
pub fn call(attack: Attack, case: usize, ctx: &Context<'_>) {
    let Some(&case) = CALLS.get(case) else {
        return;
    };
    let cpus = ctx.platform.cpus();
    let args = case.args.map(|arg| match arg {
        CallArg::Value(v) => v,
        CallArg::ForeignAffinity => first_unused(cpus, 0x100, 0x100),
        CallArg::OwnAffinity => smp::own_affinity(),
        CallArg::PastRam => ctx.platform.memory_end(),
        CallArg::Entry => super::entry::park_address(),
    });
    let conduit = match case.conduit {
        CallConduit::Hvc => "hvc",
        CallConduit::Smc => "smc",
    };
    println!(
        "ATTACK {} attempting {conduit} {:#x}({:#x},{:#x})",
        attack.name(),
        case.function,
        args[0],
        args[1]
    );
    let smc = case.conduit == CallConduit::Smc;
    let ret = guarded::smccc(smc, case.function, args[0], args[1], 0);
    let in_slice = ctx.platform.slice_named;
    conclude(
        attack,
        &CallSweepOutcome {
            case,
            args,
            ret,
            in_slice,
        },
    );
}

/// `el0-*`: one instruction at EL0 (through an EL0 alias of the GiB holding the probe and the
/// first address past RAM).
pub fn el0(attack: Attack, case: usize, ctx: &Context<'_>) {
    let Some(&case) = EL0.get(case) else {
        return;
    };
    let past = ctx.platform.memory_end();
    let code = match case.op {
        El0Op::Ldr64PastRam | El0Op::FetchPastRam => El0Code::Ldr,
        El0Op::Str64PastRam => El0Code::Str,
        El0Op::MrsImpdef => El0Code::Mrs,
        El0Op::Hvc => El0Code::Hvc,
        El0Op::Smc => El0Code::Smc,
        El0Op::MsrSgi1r => El0Code::Sgi,
    };
    let code = guarded::el0_code(code);
    let same_gib = code / mmu::BLOCK_SIZE == past / mmu::BLOCK_SIZE;
    let aliases = mmu::el0_alias(code)
        .zip(mmu::el0_alias(past))
        .filter(|_| same_gib);
    let va = aliases.map_or(0, |(_, past_va)| past_va);
    if case.op.is_access() {
        println!(
            "ATTACK {} attempting {} el0 {va:#x} ipa={past:#x}",
            attack.name(),
            case.op.mnemonic()
        );
    } else {
        println!(
            "ATTACK {} attempting {} el0",
            attack.name(),
            case.op.mnemonic()
        );
    }
    let result = match aliases {
        None => Err(Fault::Unaddressable),
        // SAFETY: the EL0 code is the probe's own and ends with SVC; the only address it
        // accesses (or runs, for the fetch) is the alias of the first IPA past RAM, where no
        // Rust object lives.
        Some((code_va, past_va)) => unsafe {
            match case.op {
                El0Op::FetchPastRam => guarded::el0(past_va, 0, 0),
                El0Op::Ldr64PastRam | El0Op::Str64PastRam => guarded::el0(code_va, past_va, 0x5a5a),
                _ => guarded::el0(code_va, 0, 0),
            }
        },
    };
    conclude(
        attack,
        &El0Outcome {
            case,
            va: if case.op.is_access() { va } else { 0 },
            ipa: past,
            result,
        },
    );
}

/// `gicd-*`, `gicr-*`: a reserved or forbidden register of the slice's own GIC frames.
pub fn gic_mmio(attack: Attack, case: usize) {
    let Some(&case) = GIC_MMIO.get(case) else {
        return;
    };
    let gic = gic::Gic::from_platform();
    let base = match case.frame {
        GicFrame::Distributor => Some(gic.gicd(0)),
        GicFrame::Redistributor => gic.frame_of(smp::own_affinity()).ok(),
        GicFrame::Sgi => gic
            .frame_of(smp::own_affinity())
            .ok()
            .map(|rd| rd + 0x1_0000),
    };
    let bits = u32::from(case.width) * 8;
    match case.write {
        Some((offset, value)) => println!(
            "ATTACK {} attempting write{bits} {}+{offset:#x}={value:#x} read{bits} {}+{:#x}",
            attack.name(),
            case.frame.label(),
            case.frame.label(),
            case.read
        ),
        None => println!(
            "ATTACK {} attempting read{bits} {}+{:#x}",
            attack.name(),
            case.frame.label(),
            case.read
        ),
    }
    let Some(base) = base else {
        let outcome = GicMmioOutcome {
            case,
            written: None,
            read: Err(Fault::Unaddressable),
        };
        return conclude(attack, &outcome);
    };
    let wide = case.width == 8;
    // SAFETY: GIC registers of the slice's own frames (or just past the distributor's): no Rust
    // object lives there.
    let written = case.write.map(|(offset, value)| unsafe {
        if wide {
            guarded::write64(base + offset, value)
        } else {
            guarded::write32(base + offset, value as u32)
        }
    });
    let read = match written {
        Some(Err(fault)) => Err(fault),
        // SAFETY: as above.
        _ => unsafe {
            if wide {
                guarded::read64(base + case.read)
            } else {
                guarded::read32(base + case.read).map(u64::from)
            }
        },
    };
    // Natively the writes stick: undo them (the LPI table addresses, a pended SPI).
    // SAFETY: as above.
    unsafe {
        match case.write {
            Some((offset @ (0x70 | 0x78), _)) if case.frame == GicFrame::Redistributor => {
                let _ = guarded::write64(base + offset, 0);
            }
            Some((0x40 | 0x50, spi)) if case.frame == GicFrame::Distributor => {
                let _ = guarded::write32(base + 0x280 + 4 * (spi / 32), 1 << (spi % 32));
            }
            _ => {}
        }
    }
    conclude(
        attack,
        &GicMmioOutcome {
            case,
            written,
            read,
        },
    );
}

/// `pci-*`: a configuration access to a function the slice does not own.
pub fn pci(attack: Attack, case: usize, ctx: &Context<'_>) {
    let Some(&case) = PCI_SWEEP.get(case) else {
        return;
    };
    let ecam = ctx
        .platform
        .pci
        .map(|host| (host.bus_start, super::pci::Ecam::new(host)));
    let bus = ecam.map_or(0, |(start, _)| start.wrapping_add(case.bus_offset));
    let bdf = Bdf {
        bus,
        device: case.device,
        function: case.function,
    };
    match case.write {
        Some((reg, value)) => println!(
            "ATTACK {} attempting write {bus:02x}:{:02x}.{}+{reg:#x}={value:#x} read +{:#x}",
            attack.name(),
            case.device,
            case.function,
            case.read
        ),
        None => println!(
            "ATTACK {} attempting read {bus:02x}:{:02x}.{}+{:#x}",
            attack.name(),
            case.device,
            case.function,
            case.read
        ),
    }
    let fault = |e: super::pci::PciError| match e {
        super::pci::PciError::Config { fault, .. } => fault,
        _ => Fault::Unaddressable,
    };
    let (written, read) = match ecam {
        Some((_, Ok(ecam))) => {
            let written = case
                .write
                .map(|(reg, value)| ecam.write(bdf, reg, value).map_err(fault));
            let read = match written {
                Some(Err(f)) => Err(f),
                _ => ecam.read(bdf, case.read).map_err(fault),
            };
            (written, read)
        }
        _ => (None, Err(Fault::Unaddressable)),
    };
    conclude(
        attack,
        &PciOutcome {
            case,
            bus,
            written,
            read,
        },
    );
}

/// `cntp-own`: CNTP_CVAL_EL0 reads back what was written; enabled (IMASK set) with CVAL in the
/// past the timer shows ISTATUS; left disabled.
pub fn cntp_own() {
    let attack = Attack::CntpOwn;
    let cval = timer::now().wrapping_add(1 << 40);
    println!(
        "ATTACK {} attempting cntp_cval={cval:#x} then ctl=enable|imask cval=0",
        attack.name()
    );
    let cval_read = access(encodings::CNTP_CTL, true, 2)
        .and_then(|_| access(encodings::CNTP_CVAL, true, cval))
        .and_then(|_| access(encodings::CNTP_CVAL, false, 0));
    let ctl_fired = access(encodings::CNTP_CVAL, true, 0)
        .and_then(|_| access(encodings::CNTP_CTL, true, 3))
        .and_then(|_| access(encodings::CNTP_CTL, false, 0));
    let _ = access(encodings::CNTP_CTL, true, 2);
    conclude(
        attack,
        &TimerOutcome {
            cval,
            cval_read,
            ctl_fired,
        },
    );
}

// ---- The racing vCPU --------------------------------------------------------------------

const NO_RACER: usize = usize::MAX;
static RACER: AtomicUsize = AtomicUsize::new(NO_RACER);

const RACE_IDLE: u64 = 0;
const RACE_INSN_FLIP: u64 = 1;
const RACE_ABORTS: u64 = 2;
const RACE_SGI_STORM: u64 = 3;
const RACE_GICD: u64 = 4;
const RACE_DOORBELLS: u64 = 5;
const RACE_INSN_KIND: u64 = 6;
/// `ldr x0, [x0]`.
const LDR_X0_X0: u32 = 0xf940_0000;
const RACE_DONE: u64 = u64::MAX;
static RACE_KIND: AtomicU64 = AtomicU64::new(RACE_IDLE);
/// Whether the racer is inside a race.
static RACE_BUSY: AtomicBool = AtomicBool::new(false);
static RACE_ROUNDS: AtomicU64 = AtomicU64::new(0);
static RACE_OTHER: AtomicU64 = AtomicU64::new(0);
/// The address or value the race works on.
static RACE_ARG: AtomicU64 = AtomicU64::new(0);
static RACE_ARG2: AtomicU64 = AtomicU64::new(0);

/// Rounds the attacking vCPU makes in a race.
const ROUNDS: u32 = 2000;
/// How long to wait for the racer to start or stop.
const RACER_TIMEOUT_MS: u64 = 1000;
/// The SGI the storm broadcasts (never enabled, so it only pends).
const STORM_SGI: u64 = 14;

/// Whether `attack` needs the racing vCPU.
pub fn needs_racer(attack: Attack) -> bool {
    matches!(
        attack,
        Attack::RaceInsnFlip
            | Attack::RaceInsnKind
            | Attack::RaceAborts
            | Attack::RaceGicd
            | Attack::RaceSgiStorm
            | Attack::RaceNvmeDoorbell
    )
}

/// `race-nvme-doorbell`: the racer writes the SQ tail and CQ head doorbells at `doorbells`
/// (of queues that do not exist) while this vCPU makes `rounds` rounds of `round` (a checked
/// read on a queue that does exist), each expected to give `Ok(0)`.
pub fn race_doorbells(
    doorbells: [u64; 2],
    round: impl FnMut(u32) -> Result<u64, Fault>,
) -> RaceOutcome {
    race_rounds(
        RACE_DOORBELLS,
        doorbells[0],
        doorbells[1],
        DOORBELL_ROUNDS,
        round,
        |r| *r == Ok(0),
    )
}

/// Checked NVMe reads the attacking vCPU makes in `race-nvme-doorbell`.
const DOORBELL_ROUNDS: u32 = 64;

/// The racing vCPU: the first one that is neither the boot CPU, the interrupt receiver
/// nor the `nvme-prp-flip` flipper.
pub fn racer(platform: &Platform, boot_index: usize, options: &Options) -> Option<usize> {
    let receiver = super::attacks::wants_receiver(options)
        .then(|| super::attacks::sgi_receiver(platform, boot_index))
        .flatten();
    let flipper = options
        .attacks()
        .contains(&Attack::NvmePrpFlip)
        .then(|| super::attacks::flipper(platform, boot_index, options))
        .flatten();
    (0..platform.cpus().len())
        .find(|&i| i != boot_index && Some(i) != receiver && Some(i) != flipper)
}

/// Makes secondary vCPU `index` the racer once its memory test is done.
pub fn arm_racer(index: usize) {
    RACER.store(index, Ordering::Release);
}

/// Lets the racer park for good (after the attacks).
pub fn release_racer() {
    RACE_KIND.store(RACE_DONE, Ordering::Release);
}

/// Secondary vCPU `index`: serves races until released, if it is the racer.
pub fn serve_if_racer(index: usize) {
    if RACER.load(Ordering::Acquire) != index {
        return;
    }
    let _ = gic::enable_system_registers();
    loop {
        let kind = RACE_KIND.load(Ordering::Acquire);
        match kind {
            RACE_DONE => return,
            RACE_IDLE => {
                timer::sleep_us(500);
                continue;
            }
            _ => {}
        }
        RACE_BUSY.store(true, Ordering::Release);
        let arg = RACE_ARG.load(Ordering::Relaxed);
        let arg2 = RACE_ARG2.load(Ordering::Relaxed);
        let read = encodings::IMPDEF.instruction(true, 0);
        let write = encodings::IMPDEF.instruction(false, 0);
        while RACE_KIND.load(Ordering::Acquire) == kind {
            let good = match kind {
                RACE_INSN_FLIP => {
                    guarded::patch(write);
                    guarded::patch(read);
                    true
                }
                RACE_INSN_KIND => {
                    guarded::patch(LDR_X0_X0);
                    guarded::patch(read);
                    true
                }
                // SAFETY: past the slice's RAM: no Rust object there.
                RACE_ABORTS => external_abort(unsafe { guarded::read64(arg) }, arg, 8, false),
                RACE_SGI_STORM => guarded::write_icc_sgi1r_el1(1 << 40 | STORM_SGI << 24).is_ok(),
                RACE_GICD => {
                    // SAFETY: distributor registers, no Rust object.
                    unsafe {
                        let _ = guarded::write32(arg + 0x200 + 4, arg2 as u32); // ISPENDR1
                        let _ = guarded::write32(arg + 0x100 + 4, arg2 as u32); // ISENABLER1
                        matches!(guarded::read32(arg + 0x200 + 4), Ok(v) if u64::from(v) & arg2 == 0)
                    }
                }
                RACE_DOORBELLS => {
                    // SAFETY: two doorbells in the controller's BAR0 (device memory).
                    unsafe {
                        guarded::write32(arg, 0x7f).is_ok() && guarded::write32(arg2, 0x7f).is_ok()
                    }
                }
                _ => true,
            };
            if !good {
                RACE_OTHER.fetch_add(1, Ordering::Relaxed);
            }
            RACE_ROUNDS.fetch_add(1, Ordering::AcqRel);
        }
        RACE_BUSY.store(false, Ordering::Release);
    }
}

/// Runs `kind` on the racer while this vCPU makes [`ROUNDS`] rounds of `round`, each expected
/// to give what `expected` accepts.
fn race(
    kind: u64,
    arg: u64,
    arg2: u64,
    round: impl FnMut(u32) -> Result<u64, Fault>,
    expected: impl Fn(&Result<u64, Fault>) -> bool,
) -> RaceOutcome {
    race_rounds(kind, arg, arg2, ROUNDS, round, expected)
}

/// [`race`] with `rounds` rounds.
fn race_rounds(
    kind: u64,
    arg: u64,
    arg2: u64,
    rounds: u32,
    mut round: impl FnMut(u32) -> Result<u64, Fault>,
    expected: impl Fn(&Result<u64, Fault>) -> bool,
) -> RaceOutcome {
    let racer = RACER.load(Ordering::Acquire);
    let mut outcome = RaceOutcome {
        racer: (racer != NO_RACER && smp::seen(racer).is_some()).then_some(racer),
        rounds: 0,
        racer_rounds: 0,
        expected: 0,
        racer_other: 0,
        first_other: None,
    };
    if outcome.racer.is_none() {
        return outcome;
    }
    RACE_ROUNDS.store(0, Ordering::Relaxed);
    RACE_OTHER.store(0, Ordering::Relaxed);
    RACE_ARG.store(arg, Ordering::Relaxed);
    RACE_ARG2.store(arg2, Ordering::Relaxed);
    RACE_KIND.store(kind, Ordering::Release);
    let deadline = timer::now() + timer::ticks_from_ms(RACER_TIMEOUT_MS);
    while RACE_ROUNDS.load(Ordering::Acquire) == 0 && timer::now() < deadline {
        core::hint::spin_loop();
    }
    for i in 0..rounds {
        let result = round(i);
        outcome.rounds += 1;
        if expected(&result) {
            outcome.expected += 1;
        } else if outcome.first_other.is_none() {
            outcome.first_other = Some(result);
        }
    }
    RACE_KIND.store(RACE_IDLE, Ordering::Release);
    let deadline = timer::now() + timer::ticks_from_ms(RACER_TIMEOUT_MS);
    while RACE_BUSY.load(Ordering::Acquire) && timer::now() < deadline {
        core::hint::spin_loop();
    }
    outcome.racer_rounds = RACE_ROUNDS.load(Ordering::Acquire);
    outcome.racer_other = RACE_OTHER.load(Ordering::Acquire);
    outcome
}

fn undefined(result: &Result<u64, Fault>) -> bool {
    matches!(result, Err(Fault::Exception { esr, .. }) if exception_class(*esr) == EC_UNKNOWN)
}

/// The `race-*` attacks.
pub fn run_race(attack: Attack, ctx: &Context<'_>) {
    let name = attack.name();
    let past = ctx.platform.memory_end();
    let outcome = match attack {
        Attack::RaceInsnFlip => {
            println!(
                "ATTACK {name} attempting mrs/msr {} rounds={ROUNDS} while another vCPU rewrites the instruction",
                encodings::IMPDEF
            );
            guarded::patch(encodings::IMPDEF.instruction(true, 0));
            race(RACE_INSN_FLIP, 0, 0, |_| guarded::run_patched(0), undefined)
        }
        Attack::RaceInsnKind => {
            println!(
                "ATTACK {name} attempting ldr x0,[x0={past:#x}] / mrs {} rounds={ROUNDS} while another vCPU swaps them",
                encodings::IMPDEF
            );
            guarded::patch(LDR_X0_X0);
            // Whichever instruction ran, its own architected exception: the external abort of
            // the load (FAR = the address) or Undefined Instruction; never the other's syndrome
            // with the wrong FAR, never a value.
            race(
                RACE_INSN_KIND,
                0,
                0,
                |_| guarded::run_patched(past),
                |r| undefined(r) || external_abort(*r, past, 8, false),
            )
        }
        Attack::RaceAborts => {
            println!("ATTACK {name} attempting ldr64/str64 {past:#x} rounds={ROUNDS} on two vCPUs");
            race(
                RACE_ABORTS,
                past,
                0,
                |i| {
                    // SAFETY: past the slice's RAM: no Rust object there.
                    unsafe {
                        if i % 2 == 0 {
                            guarded::read64(past)
                        } else {
                            guarded::write64(past, u64::from(i)).map(|()| 0)
                        }
                    }
                },
                |r| external_abort(*r, past, 8, false),
            )
        }
        Attack::RaceSgiStorm => {
            println!(
                "ATTACK {name} attempting mrs {} rounds={ROUNDS} while another vCPU broadcasts SGI {STORM_SGI}",
                encodings::IMPDEF
            );
            guarded::patch(encodings::IMPDEF.instruction(true, 0));
            race(RACE_SGI_STORM, 0, 0, |_| guarded::run_patched(0), undefined)
        }
        Attack::RaceGicd => {
            let gicd = gic::Gic::from_platform().gicd(0);
            // INTIDs 34..=63 minus every SPI a device of the slice's tree signals (the UART's,
            // default 33, the GPIO controller's): the same foreign SPIs as `spi-foreign`.
            let uart = ctx.platform.uart_intid.unwrap_or(33);
            let mut mask: u64 = 0xffff_fffc;
            for &own in core::iter::once(&uart).chain(ctx.platform.device_spis()) {
                if (32..64).contains(&own) {
                    mask &= !(1 << (own - 32));
                }
            }
            println!(
                "ATTACK {name} attempting gicd={gicd:#x} isenabler1/ispendr1={mask:#x} rounds={ROUNDS} on two vCPUs"
            );
            let outcome = race(
                RACE_GICD,
                gicd,
                mask,
                |_| {
                    // SAFETY: distributor registers, no Rust object.
                    unsafe {
                        guarded::write32(gicd + 0x100 + 4, mask as u32)?;
                        let enabled = guarded::read32(gicd + 0x100 + 4)?;
                        let pending = guarded::read32(gicd + 0x200 + 4)?;
                        Ok(u64::from(enabled | pending) & mask)
                    }
                },
                |r| *r == Ok(0),
            );
            // Natively the bits stick: clear them again (ICENABLER1, ICPENDR1).
            // SAFETY: as above.
            unsafe {
                let _ = guarded::write32(gicd + 0x180 + 4, mask as u32);
                let _ = guarded::write32(gicd + 0x280 + 4, mask as u32);
            }
            outcome
        }
        _ => return,
    };
    conclude(attack, &outcome);
}
