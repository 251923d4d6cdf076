//! The node's physical PL011 (Arm PrimeCell UART TRM §3.3): polled transmit and receive, and
//! the early console boot uses before the kernel's console exists.

use core::cell::Cell;
use core::time::Duration;

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields![u32,
    FR [
        RXFE OFFSET(4) NUMBITS(1) [],
        TXFF OFFSET(5) NUMBITS(1) [],
        TXFE OFFSET(7) NUMBITS(1) []
    ],
    CR [
        UARTEN OFFSET(0) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        RXE OFFSET(9) NUMBITS(1) []
    ]
];

register_structs! {
    Pl011Registers {
        (0x000 => dr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved1),
        (0x030 => cr: ReadWrite<u32, CR::Register>),
        (0x034 => _ifls: ReadWrite<u32>),
        (0x038 => imsc: ReadWrite<u32>),
        (0x03c => _ris: ReadOnly<u32>),
        (0x040 => _mis: ReadOnly<u32>),
        (0x044 => icr: ReadWrite<u32>),
        (0x048 => _reserved2),
        (0x1000 => @END),
    }
}

/// How long one byte may wait for room in the transmit FIFO. A working UART frees a slot
/// within one character time (87 us at 115200 baud); an emulator's may lag behind a busy host
/// for some milliseconds. A FIFO full for longer is taken as stuck (flow control never
/// released, nobody reading): the byte is dropped.
const TX_WAIT: Duration = Duration::from_millis(100);

/// The physical console UART.
pub struct PhysicalUart {
    registers: &'static Pl011Registers,
    /// The transmit FIFO stayed full for [`TX_WAIT`]: bytes that find it full are dropped
    /// without waiting until it has drained completely.
    stuck: Cell<bool>,
    /// Bytes dropped because the transmit FIFO was stuck.
    dropped: Cell<u64>,
}

// SAFETY: the UART is MMIO reached by volatile accesses; whoever owns the `PhysicalUart` may
// use it from any core (the kernel keeps it behind a lock).
unsafe impl Send for PhysicalUart {}

impl PhysicalUart {
    /// # Safety
    /// `base` must be a PL011's register block, mapped as Device memory (or the MMU off), and
    /// only this object may drive it.
    pub unsafe fn new(base: u64) -> Self {
        // SAFETY: guaranteed by the caller.
        let registers = unsafe { &*(base as *const Pl011Registers) };
        // Keep the firmware's line settings; make sure transmit and receive are on.
        registers
            .cr
            .modify(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
        Self {
            registers,
            stuck: Cell::new(false),
            dropped: Cell::new(0),
        }
    }

    /// Sends one byte, waiting at most [`TX_WAIT`] while the transmit FIFO is full; after
    /// that, and while the FIFO has not drained since, bytes that find it full are dropped
    /// at once, so a UART that never drains costs one wait, not one per byte.
    pub fn write_byte(&self, byte: u8) {
        let fr = &self.registers.fr;
        if self.stuck.get() && fr.is_set(FR::TXFE) {
            self.stuck.set(false);
        }
        let room = if self.stuck.get() {
            !fr.is_set(FR::TXFF)
        } else {
            crate::cpu::wait_until(TX_WAIT, || !fr.is_set(FR::TXFF))
        };
        if room {
            self.registers.dr.set(u32::from(byte));
        } else {
            self.stuck.set(true);
            self.dropped.set(self.dropped.get().saturating_add(1));
        }
    }

    /// Bytes dropped so far because the transmit FIFO stayed full.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped.get()
    }

    /// Raises the UART's interrupt when bytes arrive (receive and receive-timeout).
    pub fn enable_receive_interrupt(&self) {
        const RXIM: u32 = 1 << 4;
        const RTIM: u32 = 1 << 6;
        self.registers.imsc.set(RXIM | RTIM);
    }

    /// Clears the receive interrupts. Call it before draining the FIFO, never after: QEMU's
    /// PL011 raises RX only when the FIFO count reaches the trigger level, so clearing it
    /// after a byte slipped in between the last read and the clear leaves the interrupt low
    /// for good with bytes waiting.
    pub fn clear_receive_interrupt(&self) {
        self.registers.icr.set((1 << 4) | (1 << 6));
    }

    /// A received byte, if one is waiting.
    pub fn read_byte(&self) -> Option<u8> {
        (!self.registers.fr.is_set(FR::RXFE)).then(|| self.registers.dr.get() as u8)
    }
}

/// Polls of a full transmit FIFO before the early console drops a byte (far longer than a
/// working UART needs to drain one).
const EARLY_TX_POLLS: u32 = 1_000_000;

/// The console before the kernel's exists: a PL011 written directly, with no lock and no
/// state, so it works with the MMU off (every access Device memory, no exclusives) and from a
/// panic or exception handler. Every wait is bounded: a UART that never drains loses bytes
/// instead of hanging the core. Lines end in `\r\n`.
pub struct EarlyUart {
    registers: &'static Pl011Registers,
}

impl EarlyUart {
    /// Turns the UART's transmitter on (keeping the firmware's line settings).
    ///
    /// # Safety
    /// `base` must be a PL011's register block, mapped as Device memory (or the MMU off), and
    /// nothing else may be driving it at the same time except another `EarlyUart` (bytes may
    /// then interleave, nothing worse).
    pub unsafe fn new(base: u64) -> Self {
        // SAFETY: guaranteed by the caller.
        let registers = unsafe { &*(base as *const Pl011Registers) };
        registers.cr.modify(CR::UARTEN::SET + CR::TXE::SET);
        Self { registers }
    }

    /// Sends one byte, or drops it if the transmit FIFO stays full.
    pub fn write_byte(&self, byte: u8) {
        for _ in 0..EARLY_TX_POLLS {
            if !self.registers.fr.is_set(FR::TXFF) {
                self.registers.dr.set(u32::from(byte));
                return;
            }
            core::hint::spin_loop();
        }
    }
}

impl core::fmt::Write for EarlyUart {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}
