//! The node console's output side, a leaf every other module may use: the physical UART behind
//! one lock, taken for one whole line at a time, so lines never interleave. Hypervisor lines are
//! `[hv] <text>`, slice lines `[<slice>] <line>`, each ended by `\r\n`. The operator side
//! (input, focus, counters) is `crate::console`.
//!
//! Each slice assembles its lines under its own lock (`crate::devices::uart`); only the finished
//! line takes this one. It is a ticket lock, served in arrival order: a slice that floods its
//! console queues behind the others like any core, so another slice's line waits for at most
//! one line from each other core, never for the flood.

use core::fmt::{self, Write};

use microvisor_arch::uart::PhysicalUart;
use spin::mutex::TicketMutex;

static UART: TicketMutex<Option<PhysicalUart>> = TicketMutex::new(None);

/// Hands the console UART over (boot core, once).
pub fn init(uart: PhysicalUart) {
    *UART.lock() = Some(uart);
}

/// Runs `f` on the physical UART, if there is one (input handling reads it this way).
pub fn with_uart<R>(f: impl FnOnce(&PhysicalUart) -> R) -> Option<R> {
    UART.lock().as_ref().map(f)
}

struct Writer<'a>(&'a PhysicalUart);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
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
    ($($arg:tt)*) => { $crate::output::hv(format_args!($($arg)*)) };
}
