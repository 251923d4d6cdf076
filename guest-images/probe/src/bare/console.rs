//! Console output on a PL011 UART (PrimeCell UART PL011 TRM, DDI 0183 §3):
//! polled transmit only (wait while FR.TXFF, write DR), whole lines under a
//! spin lock, `\n` line ends (the microvisor line-buffers on `\n` and drops
//! `\r`). A line is always written completely before the lock is released,
//! so no partial line is ever left pending.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

use microvisor_probe::dt::DEFAULT_UART_BASE;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    /// Flag register (UARTFR).
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
    ]
}

register_structs! {
    /// The PL011 registers the probe uses.
    Pl011Registers {
        (0x000 => dr: ReadWrite<u32>),
        (0x004 => _reserved),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => @END),
    }
}

/// Base address of the console PL011.
static UART_BASE: AtomicUsize = AtomicUsize::new(DEFAULT_UART_BASE as usize);

/// Serializes lines between CPUs.
static LINE_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Attempts at the line lock before an exception or panic report writes
/// without it (the lock holder may be the faulting code itself).
const FORCED_LOCK_ATTEMPTS: usize = 1_000_000;

/// Uses the PL011 at `base` from now on. It must be mapped as Device memory
/// (it is: [0, 1 GiB) is, and the MMU-off default is Device too).
pub fn set_uart(base: u64) {
    UART_BASE.store(base as usize, Ordering::Relaxed);
}

/// Falls back to the QEMU `virt` UART.
pub fn use_default_uart() {
    set_uart(DEFAULT_UART_BASE);
}

fn uart() -> &'static Pl011Registers {
    let base = UART_BASE.load(Ordering::Relaxed);
    // SAFETY: `base` is the console PL011 named by the device tree (or the
    // `virt` default); it is identity-mapped as Device memory, which only
    // the console module accesses, and Pl011Registers covers only registers
    // a PL011 has. A wrong address from the tree faults into the exception
    // handler, which then falls back to the default UART.
    unsafe { &*(base as *const Pl011Registers) }
}

/// Writes one byte, waiting for room in the transmit FIFO.
fn put_byte(byte: u8) {
    let regs = uart();
    while regs.fr.is_set(FR::TXFF) {
        core::hint::spin_loop();
    }
    regs.dr.set(u32::from(byte));
}

/// Writes the body of a line; embedded line breaks become spaces so one
/// call is always exactly one console line.
struct LineBody;

impl Write for LineBody {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            put_byte(if byte == b'\n' || byte == b'\r' {
                b' '
            } else {
                byte
            });
        }
        Ok(())
    }
}

fn write_line(args: fmt::Arguments<'_>) {
    let _ = LineBody.write_fmt(args);
    put_byte(b'\n');
}

/// Prints one line. Needs the MMU on (the lock uses exclusives).
pub fn line(args: fmt::Arguments<'_>) {
    let _guard = LINE_LOCK.lock();
    write_line(args);
}

/// Prints one line from an exception or panic: takes the lock if it can,
/// and writes anyway if the lock stays taken.
pub fn line_forced(args: fmt::Arguments<'_>) {
    for _ in 0..FORCED_LOCK_ATTEMPTS {
        if let Some(_guard) = LINE_LOCK.try_lock() {
            write_line(args);
            return;
        }
        core::hint::spin_loop();
    }
    write_line(args);
}

/// `println!`-style output of one console line.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::bare::console::line(format_args!($($arg)*))
    };
}
pub(crate) use println;
