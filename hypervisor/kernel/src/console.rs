//! The node console: the physical UART, shared by the hypervisor (`[hv] ` lines) and every
//! slice (`[<slice>] ` lines). One lock, so lines never interleave.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use microvisor_arch::gic;
use microvisor_arch::uart::PhysicalUart;
use microvisor_logic::console::{Input, InputDecoder};
use microvisor_logic::exits::ExitCause;
use spin::Mutex;

use crate::node;

static UART: Mutex<Option<PhysicalUart>> = Mutex::new(None);
/// The physical UART's interrupt (INTID), once input is enabled; 0 = none.
static INPUT_INTID: AtomicU32 = AtomicU32::new(0);
/// Index of the slice that receives console input.
static FOCUS: AtomicUsize = AtomicUsize::new(0);
static DECODER: Mutex<InputDecoder> = Mutex::new(InputDecoder::new());

/// Hands the console UART to the console (boot core, once).
pub fn init(uart: PhysicalUart) {
    *UART.lock() = Some(uart);
}

/// Starts delivering node console input to slice 0, through the UART's interrupt `intid`.
pub fn enable_input(intid: u32) {
    if let Some(uart) = UART.lock().as_ref() {
        uart.enable_receive_interrupt();
    }
    INPUT_INTID.store(intid, Ordering::Relaxed);
    focus(0);
}

/// The physical UART's interrupt, if console input is on.
pub fn input_intid() -> Option<u32> {
    Some(INPUT_INTID.load(Ordering::Relaxed)).filter(|&i| i != 0)
}

/// Gives console input to slice `index`: its interrupt goes to that slice's first core.
fn focus(index: usize) {
    let Some(node) = node::get() else { return };
    let Some(slice) = node.slices.get(index) else {
        return;
    };
    FOCUS.store(index, Ordering::Relaxed);
    if let Some(intid) = input_intid() {
        gic::route_spi(intid, slice.vcpus[0].mpidr);
    }
    hv(format_args!(
        "console input goes to slice {} ({}); Ctrl-A then 1-{} switches, Ctrl-A c prints exit counters",
        slice.name,
        index + 1,
        node.slices.len().min(9)
    ));
}

/// Reads everything the UART received and acts on it (called from its interrupt). The
/// interrupt is cleared first: a byte arriving after the FIFO was found empty raises it again.
pub fn receive_input() {
    if let Some(uart) = UART.lock().as_ref() {
        uart.clear_receive_interrupt();
    }
    loop {
        let byte = {
            let guard = UART.lock();
            let Some(byte) = guard.as_ref().and_then(PhysicalUart::read_byte) else {
                return;
            };
            byte
        };
        let input = DECODER.lock().feed(byte);
        match input {
            Some(Input::Byte(byte)) => {
                if let Some(slice) =
                    node::get().and_then(|n| n.slices.get(FOCUS.load(Ordering::Relaxed)))
                {
                    slice.console_input(byte);
                }
            }
            Some(Input::Focus(index)) => focus(index),
            Some(Input::Counters) => print_exit_counters(),
            Some(Input::Help) => hv(format_args!(
                "console: Ctrl-A 1-9 focus slice, Ctrl-A c exit counters, Ctrl-A Ctrl-A sends Ctrl-A \
                 (under QEMU -nographic type Ctrl-A twice before each of these)"
            )),
            None => {}
        }
    }
}

/// Prints every slice's exit counters: totals by cause since its run started.
pub fn print_exit_counters() {
    let Some(node) = node::get() else { return };
    for slice in &node.slices {
        print_slice_exit_counters(slice);
    }
}

/// Prints one slice's exit counters (also when its run ends, so `cargo xtask bench` reads
/// final, deterministic totals).
pub fn print_slice_exit_counters(slice: &crate::slice::Slice) {
    let hz = microvisor_arch::cpu::counter_frequency().max(1);
    let mut totals = [0u64; ExitCause::COUNT];
    let mut injected = 0;
    for vcpu in &slice.vcpus {
        for (total, count) in totals.iter_mut().zip(vcpu.exit_counts()) {
            *total += count;
        }
        injected += vcpu.injected();
    }
    let ticks = slice.uptime_ticks();
    let all: u64 = totals.iter().sum();
    let mut line = alloc::string::String::new();
    for (cause, count) in ExitCause::ALL.iter().zip(totals) {
        if count != 0 {
            let _ = write!(line, " {}={count}", cause.name());
        }
    }
    hv(format_args!(
        "exits {}: {all} in {}.{:03} s ({} per s){line}; injected {injected}",
        slice.name,
        ticks / hz,
        ticks % hz * 1000 / hz,
        all.saturating_mul(hz) / ticks.max(1),
    ));
}

struct Writer<'a>(&'a PhysicalUart);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.0.write_byte(b));
        Ok(())
    }
}

impl Writer<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&b| self.0.write_byte(b));
    }

    /// Ends a line; `\r\n` so that an interactive terminal in raw mode shows it well.
    fn end_line(&mut self) {
        self.bytes(b"\r\n");
    }
}

/// Prints one hypervisor line: `[hv] <text>`.
pub fn hv(args: fmt::Arguments<'_>) {
    if let Some(uart) = UART.lock().as_ref() {
        let mut w = Writer(uart);
        let _ = w.write_str("[hv] ");
        let _ = w.write_fmt(args);
        w.end_line();
    }
}

/// Prints one line a slice produced: `[<slice>] <line>`.
pub fn slice_line(slice: &str, line: &[u8]) {
    if let Some(uart) = UART.lock().as_ref() {
        let mut w = Writer(uart);
        w.bytes(b"[");
        w.bytes(slice.as_bytes());
        w.bytes(b"] ");
        w.bytes(line);
        w.end_line();
    }
}

/// Prints a fatal report even if another core holds the console lock (it may be the core
/// that faulted): waits a bounded time for the lock, then gives up silently.
pub fn fatal(args: fmt::Arguments<'_>) {
    for _ in 0..10_000_000 {
        if let Some(guard) = UART.try_lock() {
            if let Some(uart) = guard.as_ref() {
                let mut w = Writer(uart);
                let _ = w.write_str("[hv] FATAL ");
                let _ = w.write_fmt(args);
                w.end_line();
            }
            return;
        }
        core::hint::spin_loop();
    }
}

/// `hv!("...", args)` prints a `[hv]` line.
#[macro_export]
macro_rules! hv {
    ($($arg:tt)*) => { $crate::console::hv(format_args!($($arg)*)) };
}
