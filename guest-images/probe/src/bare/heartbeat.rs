//! After the report: the 64 KiB canary, `HEARTBEAT <n> ok|CORRUPT` lines
//! every `heartbeat=<ms>` of virtual counter time (with `nvme-check=1` the
//! NVMe canary is re-read too and the line ends in ` nvme-ok`,
//! ` nvme-CORRUPT lba=<x>` or ` nvme-ERROR <error>`), and the
//! `reset-after=<n>` / `off-after=<n>` PSCI actions. With `flood=1`, `FLOOD <n>` lines as
//! fast as the console takes them instead (the console fairness test).

use core::sync::atomic::{AtomicU64, Ordering};

use microvisor_probe::cmdline::Options;
use microvisor_probe::dt::Conduit;
use microvisor_probe::memplan::pattern;

use microvisor_probe::text::Text;

use super::console::println;
use super::{bench, entry, nvme_io, psci, timer};

/// Words in the canary (64 KiB).
const CANARY_WORDS: usize = 64 * 1024 / 8;
/// Mixed into the boot seed for the canary pattern.
const CANARY_SALT: u64 = 0xC0FF_EE00_CA4A_2100;

#[repr(C, align(4096))]
struct Canary([AtomicU64; CANARY_WORDS]);

/// The canary region, inside the probe's footprint (so attacks on "own RAM"
/// never land in it, and the memory test does not overwrite it), at
/// `microvisor_probe::CANARY_IPA` (`link.ld`).
#[unsafe(link_section = ".canary")]
static CANARY: Canary = Canary([const { AtomicU64::new(0) }; CANARY_WORDS]);

/// Address of the canary region.
pub fn canary_address() -> u64 {
    CANARY.0.as_ptr() as u64
}

fn canary_word(index: usize, seed: u64) -> u64 {
    pattern(canary_address() + 8 * index as u64, seed ^ CANARY_SALT)
}

/// Writes the canary pattern.
pub fn fill_canary(seed: u64) {
    for (i, word) in CANARY.0.iter().enumerate() {
        word.store(canary_word(i, seed), Ordering::Relaxed);
    }
}

/// Whether the canary still holds its pattern.
pub fn canary_intact(seed: u64) -> bool {
    CANARY
        .0
        .iter()
        .enumerate()
        .all(|(i, word)| word.load(Ordering::Relaxed) == canary_word(i, seed))
}

/// Prints heartbeats forever (or sleeps forever with `heartbeat=0`).
/// `HEARTBEAT <n> ok` needs the RAM canary intact and, with `nvme-check=1`,
/// the NVMe canary (pattern of `slice_seed`) too.
pub fn run(options: &Options, conduit: Conduit, seed: u64, slice_seed: u64) -> ! {
    if options.flood {
        flood();
    }
    if options.heartbeat_ms == 0 {
        entry::park();
    }
    let period = timer::ticks_from_ms(options.heartbeat_ms).max(1);
    let mut next = timer::now() + period;
    let mut n: u64 = 1;
    loop {
        timer::sleep_until(next);
        let mut nvme = Text::<160>::new();
        let nvme_ok = !options.nvme_check || nvme_io::canary_check(slice_seed, &mut nvme);
        let state = if canary_intact(seed) && nvme_ok {
            "ok"
        } else {
            "CORRUPT"
        };
        println!("HEARTBEAT {n} {state}{}", nvme.as_str().unwrap_or(""));
        if options.reset_after == Some(n) {
            if options.reset_timer_pending {
                bench::leave_timer_interrupt_in_flight();
            }
            action("system-reset", conduit, psci::SYSTEM_RESET);
        }
        if options.off_after == Some(n) {
            action("system-off", conduit, psci::SYSTEM_OFF);
        }
        if options.cpu_off_after == Some(n) {
            action("cpu-off", conduit, psci::CPU_OFF);
        }
        next += period;
        let now = timer::now();
        if next <= now {
            // Fell behind (the host was busy): skip beats, never burst.
            next = now + period;
        }
        n += 1;
    }
}

/// Prints `FLOOD <n>` lines, each padded to 72 characters, without pause, forever.
fn flood() -> ! {
    let mut n: u64 = 1;
    loop {
        println!("FLOOD {n:<10} ..........................................................");
        n += 1;
    }
}

/// `PROBE ACTION <name>`, the PSCI call, and what it returned if it did.
fn action(name: &str, conduit: Conduit, function: u64) {
    println!("PROBE ACTION {name}");
    let ret = psci::call(conduit, function, 0, 0, 0);
    println!("PROBE ACTION {name} returned {ret}");
}
