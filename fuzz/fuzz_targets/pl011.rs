//! The emulated PL011 UART (`logic::pl011`): any sequence of guest reads and writes at any
//! offset and width, interleaved with bytes typed on the node console.
//!
//! Invariants (PL011 TRM r1p5 §3.3), checked after every step against a reference model
//! (a 32-byte FIFO, the TX interrupt latch and the mask register):
//! - UARTDR reads return the received bytes in order, exactly once, 0 when empty; `receive`
//!   refuses a byte exactly when 32 are waiting;
//! - UARTFR: TXFE always set, RXFE = FIFO empty, RXFF = FIFO full, BUSY/TXFF never set;
//! - UARTRIS = TX latch | (RX | RT while bytes wait); UARTMIS = UARTRIS & UARTIMSC, and the
//!   interrupt line is asserted exactly when UARTMIS != 0;
//! - a write transmits exactly when it hits UARTDR, and then its low byte;
//! - every register read fits its width in the TRM (IDs 8 bits, IBRD 16, FBRD 6, CR 16...);
//!   offsets the TRM does not name read 0.
#![no_main]

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use microvisor_logic::pl011::{RX_FIFO_DEPTH, VirtualPl011};

#[derive(Arbitrary, Debug)]
enum Op {
    Read(u16),
    Write(u16, u32),
    Receive(u8),
    /// An offset outside the 4 KiB page (the bus never sends one, but nothing may break).
    ReadFar(u64),
}

const RX: u32 = 1 << 4;
const TX: u32 = 1 << 5;
const RT: u32 = 1 << 6;

struct Model {
    fifo: VecDeque<u8>,
    tx: bool,
    imsc: u32,
}

impl Model {
    fn ris(&self) -> u32 {
        (if self.tx { TX } else { 0 }) | (if self.fifo.is_empty() { 0 } else { RX | RT })
    }
}

fn register_width_ok(offset: u64, value: u32) -> bool {
    let bits = match offset & !3 {
        0x000 => 8,
        0x020 | 0x02c => 8,
        0x024 | 0x030 => 16,
        0x028 | 0x034 => 6,
        0x038 | 0x03c | 0x040 => 11,
        0x048 => 3,
        0x018 => 9,
        o if o >= 0xfe0 => 8,
        _ => 0,
    };
    u64::from(value) >> bits == 0
}

fn step(uart: &mut VirtualPl011, model: &mut Model, op: Op) {
    match op {
        Op::Read(offset) => {
            let offset = u64::from(offset % 0x1000);
            let value = uart.read(offset);
            assert!(
                register_width_ok(offset, value),
                "{offset:#x} read {value:#x}"
            );
            match offset & !3 {
                0x000 => assert_eq!(value, u32::from(model.fifo.pop_front().unwrap_or(0))),
                0x018 => {
                    let expected = 1 << 7
                        | if model.fifo.is_empty() { 1 << 4 } else { 0 }
                        | if model.fifo.len() == RX_FIFO_DEPTH {
                            1 << 6
                        } else {
                            0
                        };
                    assert_eq!(value, expected, "UARTFR");
                }
                0x038 => assert_eq!(value, model.imsc),
                0x03c => assert_eq!(value, model.ris(), "UARTRIS"),
                0x040 => assert_eq!(value, model.ris() & model.imsc, "UARTMIS"),
                0x004 | 0x044 | 0x008..=0x014 | 0x01c | 0x04c..=0xfdc => {
                    assert_eq!(value, 0, "unnamed offset {offset:#x}")
                }
                _ => {}
            }
        }
        Op::ReadFar(offset) => {
            let _ = uart.read(offset);
            if offset & !3 == 0 {
                model.fifo.pop_front();
            }
        }
        Op::Write(offset, value) => {
            let offset = u64::from(offset % 0x1000);
            let sent = uart.write(offset, value);
            if offset & !3 == 0 {
                assert_eq!(sent, Some(value as u8));
                model.tx = true;
            } else {
                assert_eq!(sent, None);
            }
            match offset & !3 {
                0x038 => model.imsc = value & 0x7ff,
                0x044 if value & TX != 0 => model.tx = false,
                _ => {}
            }
        }
        Op::Receive(byte) => {
            let full = model.fifo.len() == RX_FIFO_DEPTH;
            assert_eq!(
                uart.receive(byte),
                !full,
                "receive with {} waiting",
                model.fifo.len()
            );
            if !full {
                model.fifo.push_back(byte);
            }
        }
    }
    assert_eq!(uart.interrupt_pending(), model.ris() & model.imsc != 0);
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut uart = VirtualPl011::new();
    let mut model = Model {
        fifo: VecDeque::new(),
        tx: false,
        imsc: 0,
    };
    while let Ok(op) = Op::arbitrary(&mut u) {
        step(&mut uart, &mut model, op);
        if u.is_empty() {
            break;
        }
    }
});
