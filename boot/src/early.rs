//! Failure reports before the kernel's console exists: from reading x0 to `output::init`,
//! every failure, panic or exception of the boot core prints one `[hv] error: ...` line on the
//! early console and stops the node.
//!
//! The early console is the PL011 the firmware device tree names (its `stdout-path`, else its
//! first PL011) once boot has read that much, and [`PLATFORM_CONSOLE`] before that or when the
//! tree names none. It is written without locks, with the MMU off or on. After the line the
//! node powers off through PSCI `SYSTEM_OFF` when the tree named a conduit; otherwise (no
//! tree, or a tree without a readable `/psci`) the boot core stops in a WFI loop with
//! interrupts masked and every other core still held off by the firmware: the documented halt
//! state.
//!
//! The state here is three words written by the boot core alone with plain stores (relaxed
//! atomic loads and stores compile to single `ldr`/`str`, never to exclusives, which Device
//! memory with the MMU off does not support).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use microvisor_arch::uart::EarlyUart;
use microvisor_arch::{cpu, exceptions, firmware};
use microvisor_logic::inventory::Conduit;

/// The console UART when the firmware device tree names none (or is not read yet): the PL011
/// of QEMU's `virt` machine, the platform the microvisor targets. A port to other hardware
/// sets its own.
pub const PLATFORM_CONSOLE: u64 = 0x0900_0000;

/// Base of the early console's PL011.
static CONSOLE: AtomicU64 = AtomicU64::new(PLATFORM_CONSOLE);
/// The PSCI conduit to power off with: 0 none known, 1 SMC, 2 HVC.
static POWER_OFF: AtomicU8 = AtomicU8::new(0);
/// Set once the kernel's console has the UART: panics then go to the kernel's report.
static KERNEL_CONSOLE: AtomicBool = AtomicBool::new(false);
/// Set by the first early exception: a fault while reporting one stops at once.
static FAULTED: AtomicBool = AtomicBool::new(false);
/// Where the image runs, so exception reports give code addresses as image offsets (what
/// `objdump` of the ELF shows: it is linked at 0).
static IMAGE_BASE: AtomicU64 = AtomicU64::new(0);

/// Records where the image runs (the first thing boot does).
pub fn image_at(base: u64) {
    IMAGE_BASE.store(base, Ordering::Relaxed);
}

/// Uses the PL011 at `base` (from the firmware device tree) from now on.
pub fn use_console(base: u64) {
    CONSOLE.store(base, Ordering::Relaxed);
}

/// Powers off through `conduit` after a report from now on.
pub fn power_off_with(conduit: Conduit) {
    let code = match conduit {
        Conduit::Smc => 1,
        Conduit::Hvc => 2,
    };
    POWER_OFF.store(code, Ordering::Relaxed);
}

/// The kernel's console has the UART (called right after `output::init`).
pub fn kernel_console_ready() {
    KERNEL_CONSOLE.store(true, Ordering::Relaxed);
}

/// Whether panics go to the kernel's console.
pub fn kernel_console_is_ready() -> bool {
    KERNEL_CONSOLE.load(Ordering::Relaxed)
}

fn console() -> EarlyUart {
    // SAFETY: the base is the PL011 the firmware device tree names or the platform's; with the
    // MMU off it is reached directly, with it on `identity_map` mapped it as Device memory (it
    // is the inventory's UART by then). Only the boot core runs while the early console is in
    // use, so at worst it interleaves with a kernel console line it interrupted.
    unsafe { EarlyUart::new(CONSOLE.load(Ordering::Relaxed)) }
}

/// Prints `[hv] error: <args>` and `[hv] halted: no slice was started` on the early console,
/// then powers the node off, or halts the boot core when no PSCI conduit is known.
pub fn fail(args: fmt::Arguments<'_>) -> ! {
    let mut out = console();
    let _ = writeln!(out, "[hv] error: {args}");
    let conduit = match POWER_OFF.load(Ordering::Relaxed) {
        1 => Some(Conduit::Smc),
        2 => Some(Conduit::Hvc),
        _ => None,
    };
    if conduit.is_none() {
        let _ = writeln!(
            out,
            "[hv] no PSCI conduit known to power off with: the boot core stops here"
        );
    }
    let _ = writeln!(out, "[hv] halted: no slice was started");
    match conduit {
        Some(conduit) => firmware::system_off(conduit),
        None => cpu::halt(),
    }
}

/// Entered from the early vector table (`entry.S`) with the vector's index, on a fresh boot
/// stack: any exception the boot core takes before the kernel installs its vectors.
#[unsafe(no_mangle)]
extern "C" fn early_exception(kind: u64) -> ! {
    if FAULTED.load(Ordering::Relaxed) {
        cpu::halt()
    }
    FAULTED.store(true, Ordering::Relaxed);
    let fault = exceptions::current_fault(kind);
    let offset = fault.elr.wrapping_sub(IMAGE_BASE.load(Ordering::Relaxed));
    fail(format_args!(
        "exception during boot: {} ESR_EL2 {:#x} ELR_EL2 {:#x} (image + {offset:#x}) FAR_EL2 {:#x}",
        fault.kind, fault.esr, fault.elr, fault.far
    ))
}
