//! Isolation attacks (`attack=a,b,c`). Each prints
//! `ATTACK <name> attempting <detail>` before acting and, if execution
//! continues, one `ATTACK <name> contained <detail>`,
//! `ATTACK <name> NOT-CONTAINED <detail>` or, when it could not be attempted,
//! `ATTACK <name> NOT-CONTAINED unverified <why>` (verdicts: see
//! `microvisor_probe::verdict`). The loads and stores are guarded: the
//! synchronous external abort the microvisor delivers for an address the slice
//! does not have (as hardware does for one nothing decodes) comes back as the
//! outcome `contained <op> <addr> fault data-abort esr=.. far=..`; under
//! `on-fault = "stop"` the slice is stopped instead (`[hv] slice <name>
//! stopped: ...`) and no outcome line follows.
//! The GIC attacks are in `gic_attacks`, the NVMe ones in `nvme_attacks`, the network ones in
//! `net_attacks`, the ITS ones in `its_attacks`.

use microvisor_probe::cmdline::{Attack, Options};
use microvisor_probe::dt::{Conduit, Platform};
use microvisor_probe::gic::first_unused;
use microvisor_probe::memplan::{Range, pattern};
use microvisor_probe::sweep::Tally;
use microvisor_probe::verdict::{AccessOutcome, CallOutcome, CpuOnOutcome, Line, Outcome, Verdict};

use super::console::println;
use super::guarded::{self, Fault};
use super::{entry, gic_attacks, nvme_attacks, psci, sweep};

/// Default `mmio` target: the `virt` PL031 RTC, never given to a slice.
pub const DEFAULT_MMIO_TARGET: u64 = 0x0901_0000;
/// An unassigned SMCCC function id (Arm DEN 0028: SiP service range, fast
/// call, SMC64, function 0).
pub const UNKNOWN_HVC_FUNCTION: u64 = 0xC600_0000;
/// The manager's control interface (docs/control.md): register page and data window.
const CONTROL_REGISTERS: u64 = 0x0a00_0000;
const CONTROL_WINDOW: u64 = 0x0a20_0000;
/// Its request header magic (`MVRQ`).
const CONTROL_REQUEST_MAGIC: u32 = 0x5152_564d;
/// Salt of the pattern an in-RAM attack writes.
const ATTACK_SALT: u64 = 0xA77A_C4ED_0000_0001;

/// What the attacks need to know.
pub struct Context<'a> {
    /// The device tree's view.
    pub platform: &'a Platform,
    /// The probe's own footprint.
    pub image: Range,
    /// The memory-test seed.
    pub seed: u64,
    /// `target=` from the command line.
    pub target: Option<u64>,
    /// PSCI conduit.
    pub conduit: Conduit,
    /// vCPU index of the boot CPU (the one running the attacks).
    pub boot_index: usize,
}

/// The vCPU that receives the `sgi-self-test` SGI and the `its-remote-lpis` LPI, waiting for
/// interrupts: the first one that is not the boot CPU; None on a one-CPU machine (the boot
/// CPU sends to itself).
pub fn sgi_receiver(platform: &Platform, boot_index: usize) -> Option<usize> {
    (0..platform.cpus().len()).find(|&i| i != boot_index)
}

/// Whether an attack asked for needs [`sgi_receiver`] waiting for interrupts.
pub fn wants_receiver(options: &Options) -> bool {
    options.attacks().iter().any(|a| {
        matches!(
            a,
            Attack::SgiSelfTest | Attack::ItsRemoteLpis | Attack::ItsRemoteOff
        )
    })
}

/// The vCPU that flips PRP list entries during `nvme-prp-flip`: the last
/// one that is neither the boot CPU nor the interrupt receiver.
pub fn flipper(platform: &Platform, boot_index: usize, options: &Options) -> Option<usize> {
    let receiver = wants_receiver(options)
        .then(|| sgi_receiver(platform, boot_index))
        .flatten();
    (0..platform.cpus().len())
        .rev()
        .find(|&i| i != boot_index && Some(i) != receiver)
}

/// The verdicts of this run's attacks (functional checks left out).
static TALLY: spin::Mutex<Tally> = spin::Mutex::new(Tally {
    run: 0,
    contained: 0,
    not_contained: 0,
    unverified: 0,
});

/// Counts one attack's verdict for the `ATTACKS` line.
pub fn tally(attack: Attack, verdict: Verdict) {
    if !attack.is_check() {
        TALLY.lock().record(verdict);
    }
}

/// Runs `attacks` in order, then prints the `ATTACKS` summary line.
pub fn run(attacks: &[Attack], ctx: &Context<'_>) {
    for &attack in attacks {
        run_one(attack, ctx);
    }
    if !attacks.is_empty() {
        let tally = *TALLY.lock();
        println!("{tally}");
    }
}

/// Prints `ATTACK <name> <verdict> <detail>` for `outcome`.
pub fn conclude(attack: Attack, outcome: &impl Outcome) {
    tally(attack, outcome.verdict());
    println!("ATTACK {} {}", attack.name(), Line(outcome));
}

fn run_one(attack: Attack, ctx: &Context<'_>) {
    let name = attack.name();
    match attack {
        Attack::ReadPastRam => {
            let addr = ctx.platform.memory_end();
            println!("ATTACK {name} attempting read64 {addr:#x}");
            conclude(attack, &load64(addr));
        }
        Attack::WritePastRam => {
            let addr = ctx.platform.memory_end();
            let value = pattern(addr, ctx.seed ^ ATTACK_SALT);
            println!("ATTACK {name} attempting write64 {addr:#x}");
            conclude(attack, &store(addr, value));
        }
        Attack::ReadAddr | Attack::WriteAddr => address_attack(attack, ctx),
        Attack::Mmio => {
            let addr = ctx.target.unwrap_or(DEFAULT_MMIO_TARGET) & !3;
            println!("ATTACK {name} attempting read32 {addr:#x}");
            conclude(attack, &load32(addr));
        }
        Attack::Timers => {
            println!("ATTACK {name} attempting cntv+cntp 1ms");
            match super::bench::timer_check() {
                Ok(check) => conclude(attack, &check),
                Err(e) => println!("ATTACK {name} NOT-CONTAINED unverified gic {e}"),
            }
        }
        Attack::ControlCall => {
            // Where the manager's control interface is (docs/control.md): a request for the
            // status of slice "manager", then EXECUTE. Under the microvisor the first access
            // is one to an address nothing in this slice backs.
            let header = CONTROL_WINDOW;
            println!("ATTACK {name} attempting write64 {header:#x} (control request header)");
            let request = u64::from(CONTROL_REQUEST_MAGIC) | 2 << 32;
            let written = store(header, request);
            if !matches!(written, AccessOutcome::Written { .. }) {
                conclude(attack, &written);
                return;
            }
            let execute = CONTROL_REGISTERS + 0x18;
            println!("ATTACK {name} attempting read64 {execute:#x} (control EXECUTE)");
            conclude(attack, &load64(execute));
        }
        Attack::CpuOnOutside => cpu_on_outside(ctx),
        Attack::HvcUnknown => {
            let fid = UNKNOWN_HVC_FUNCTION;
            println!("ATTACK {name} attempting hvc {fid:#x}");
            let ret = psci::hvc(fid, 0, 0, 0);
            let outcome = CallOutcome {
                conduit: "hvc",
                function: fid,
                ret,
            };
            conclude(attack, &outcome);
        }
        Attack::SmcSystemOff => {
            let fid = psci::SYSTEM_OFF;
            println!("ATTACK {name} attempting smc {fid:#x}");
            let ret = psci::smc(fid, 0, 0, 0);
            let outcome = CallOutcome {
                conduit: "smc",
                function: fid,
                ret,
            };
            conclude(attack, &outcome);
        }
        Attack::UndefSysreg => {
            println!("ATTACK {name} attempting mrs S3_0_C15_C0_0");
            let result = guarded::read_impdef_sysreg();
            // Undefined Instruction is what a core without the register gives.
            tally(
                attack,
                Verdict::of(matches!(result, Err(f) if f.is_undefined())),
            );
            match result {
                Ok(value) => {
                    println!("ATTACK {name} NOT-CONTAINED mrs S3_0_C15_C0_0 returned {value:#x}")
                }
                Err(fault) if fault.is_undefined() => {
                    println!("ATTACK {name} contained mrs S3_0_C15_C0_0 {fault}")
                }
                Err(fault) => println!("ATTACK {name} NOT-CONTAINED mrs S3_0_C15_C0_0 {fault}"),
            }
        }
        Attack::SgiOutside => gic_attacks::sgi_outside(ctx),
        Attack::SgiSelfTest => gic_attacks::sgi_self_test(ctx),
        Attack::SpiForeign => gic_attacks::spi_foreign(ctx),
        Attack::GicrForeign => gic_attacks::gicr_foreign(ctx),
        Attack::GicrOwn => gic_attacks::gicr_own(ctx),
        Attack::NvmePrpOutside
        | Attack::NvmePrpToctou
        | Attack::NvmePrpFlip
        | Attack::NvmeLbaOutside
        | Attack::NvmeNsid
        | Attack::NvmeAdminRefused
        | Attack::NvmeSglFused
        | Attack::NvmeDoorbell
        | Attack::NvmeQueueOutside
        | Attack::NvmeResetInflight
        | Attack::NvmeCqWrite
        | Attack::RaceNvmeDoorbell => nvme_attacks::run(attack, ctx),
        Attack::NetDescOutside
        | Attack::NetMsixForeign
        | Attack::NetPbaWrite
        | Attack::NetBarMove
        | Attack::NetBusMaster
        | Attack::NetHiddenCaps
        | Attack::NetMsixPending
        | Attack::NetResetDma => super::net_attacks::run(attack, ctx),
        Attack::ItsBogusCommands
        | Attack::ItsTablesOutside
        | Attack::ItsForeignDevice
        | Attack::ItsQueueWrap
        | Attack::ItsMapdStorm
        | Attack::ItsDisabled
        | Attack::ItsRemoteLpis
        | Attack::ItsRemoteOff => super::its_attacks::run(attack, ctx),
        Attack::CntpOwn => sweep::cntp_own(),
        Attack::RaceInsnFlip
        | Attack::RaceInsnKind
        | Attack::RaceAborts
        | Attack::RaceGicd
        | Attack::RaceSgiStorm => sweep::run_race(attack, ctx),
        Attack::Sysreg { case, write } => sweep::sysreg(attack, usize::from(case), write),
        Attack::Abort(case) => sweep::abort(attack, usize::from(case), ctx),
        Attack::Call(case) => sweep::call(attack, usize::from(case), ctx),
        Attack::El0(case) => sweep::el0(attack, usize::from(case), ctx),
        Attack::GicMmio(case) => sweep::gic_mmio(attack, usize::from(case)),
        Attack::Pci(case) => sweep::pci(attack, usize::from(case), ctx),
    }
}

/// The outcome of a guarded access `op` at `addr` outside the slice: what completed, the
/// exception it took, or that it could not be made.
fn outcome(op: &'static str, addr: u64, result: Result<AccessOutcome, Fault>) -> AccessOutcome {
    match result {
        Ok(done) => done,
        Err(Fault::Unaddressable) => AccessOutcome::Unaddressable { addr },
        Err(fault) => AccessOutcome::Refused { op, addr, fault },
    }
}

/// `read64` of `addr` outside the slice: a value coming back is a breach, the abort hardware
/// gives for an address nothing decodes is contained.
fn load64(addr: u64) -> AccessOutcome {
    let addr = addr & !7;
    // SAFETY: `addr` is outside every Rust object of the probe (callers exclude its image).
    let read = unsafe { guarded::read64(addr) };
    outcome(
        "read64",
        addr,
        read.map(|value| AccessOutcome::Read {
            op: "read64",
            addr,
            value,
        }),
    )
}

/// `read32` of `addr` outside the slice, as [`load64`].
fn load32(addr: u64) -> AccessOutcome {
    let addr = addr & !3;
    // SAFETY: as in `load64`.
    let read = unsafe { guarded::read32(addr) };
    outcome(
        "read32",
        addr,
        read.map(|value| AccessOutcome::Read {
            op: "read32",
            addr,
            value: u64::from(value),
        }),
    )
}

/// `write64` of `value` at `addr` outside the slice.
fn store(addr: u64, value: u64) -> AccessOutcome {
    let addr = addr & !7;
    // SAFETY: as in `load64`: no Rust object changes under the compiler's feet.
    let written = unsafe { guarded::write64(addr, value) };
    outcome(
        "write64",
        addr,
        written.map(|()| AccessOutcome::Written { addr }),
    )
}

/// `read-addr` / `write-addr` at `target=`: inside the own image it is
/// not attempted, inside own RAM it writes and reads back a pattern,
/// elsewhere it really accesses the address.
fn address_attack(attack: Attack, ctx: &Context<'_>) {
    let name = attack.name();
    let (op, write) = match attack {
        Attack::WriteAddr => ("write64", true),
        _ => ("read64", false),
    };
    let Some(target) = ctx.target else {
        println!("ATTACK {name} attempting {op} no-target");
        return conclude(attack, &AccessOutcome::NoTarget);
    };
    let addr = target & !7;
    println!("ATTACK {name} attempting {op} {addr:#x}");
    let outcome = if ctx.image.contains(addr) {
        AccessOutcome::OwnImage { addr }
    } else if ctx.platform.in_memory(addr) {
        let value = pattern(addr, ctx.seed ^ ATTACK_SALT);
        // SAFETY: own RAM outside the probe's image (checked above): no Rust object.
        let back = unsafe { guarded::write64(addr, value).and_then(|()| guarded::read64(addr)) };
        match back {
            Ok(read) if read == value => AccessOutcome::LandedInOwnRam { addr },
            Ok(read) => AccessOutcome::OwnRamReadback {
                addr,
                wrote: value,
                read,
            },
            Err(fault) => outcome(op, addr, Err(fault)),
        }
    } else if write {
        store(addr, pattern(addr, ctx.seed ^ ATTACK_SALT))
    } else {
        load64(addr)
    };
    conclude(attack, &outcome);
}

/// CPU_ON and AFFINITY_INFO for two affinities the tree does not list: the
/// CPU count as Aff0, and Aff1 = 1. Contained if all four calls return
/// INVALID_PARAMETERS.
fn cpu_on_outside(ctx: &Context<'_>) {
    let name = Attack::CpuOnOutside.name();
    let cpus = ctx.platform.cpus();
    let targets = [
        first_unused(cpus, cpus.len() as u64, 1),
        first_unused(cpus, 0x100, 0x100),
    ];
    println!(
        "ATTACK {name} attempting cpu_on+affinity_info {:#x},{:#x}",
        targets[0], targets[1]
    );
    let mut results = [0i64; 4];
    for (i, &target) in targets.iter().enumerate() {
        results[2 * i] = psci::cpu_on(ctx.conduit, target, entry::park_address(), 0);
        results[2 * i + 1] = psci::affinity_info(ctx.conduit, target);
    }
    conclude(Attack::CpuOnOutside, &CpuOnOutcome { targets, results });
}
