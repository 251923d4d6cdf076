//! The emulated PL061 GPIO controller (`logic::pl061`): any sequence of guest reads and writes
//! at any offset, interleaved with the hypervisor driving input lines (the power key).
//!
//! Invariants (PL061 TRM DDI 0190B §3.3), checked after every step against a mirror of the
//! guest-written registers and of the input levels:
//! - every register is 8 bits: no read has bits above bit 7; reads at an offset that is not a
//!   multiple of 4, or that the TRM does not name, read 0;
//! - GPIODIR/IS/IBE/IEV/IE/AFSEL read back what the guest last wrote (low byte);
//! - GPIODATA at offset o reads the line levels (outputs: what the guest drove; inputs: what
//!   the outside drives) masked by address bits [9:2], and a write changes only those lines;
//! - level-sensitive lines show in GPIORIS exactly when their level matches GPIOIEV;
//!   GPIOMIS = GPIORIS & GPIOIE; the interrupt line is asserted exactly when GPIOMIS != 0;
//! - a GPIOIC write clears the edge bits it names; lines past 7 are ignored;
//! - the ID registers read the PL061's PeriphID/PCellID.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use microvisor_logic::pl061::VirtualPl061;

#[derive(Arbitrary, Debug)]
enum Op {
    Read(u16),
    Write(u16, u32),
    /// A named register (offset 0x400 + 4 * n), to reach them often.
    WriteRegister(u8, u8),
    Input(u8, bool),
}

const ID: [u32; 8] = [0x61, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

#[derive(Default)]
struct Mirror {
    data: u8,
    inputs: u8,
    /// DIR, IS, IBE, IEV, IE at 0x400..0x410, then AFSEL at 0x420.
    regs: [u8; 5],
    afsel: u8,
}

impl Mirror {
    fn levels(&self) -> u8 {
        let dir = self.regs[0];
        (self.data & dir) | (self.inputs & !dir)
    }
}

fn check_read(gpio: &VirtualPl061, m: &Mirror, offset: u64) {
    let value = gpio.read(offset);
    assert!(
        value < 0x100,
        "{offset:#x} read {value:#x}: wider than 8 bits"
    );
    if !offset.is_multiple_of(4) {
        assert_eq!(value, 0, "unaligned {offset:#x}");
        return;
    }
    let (sense, event, enable) = (m.regs[1], m.regs[3], m.regs[4]);
    let ris = gpio.read(0x414) as u8;
    let level_active = !(m.levels() ^ event) & sense;
    assert_eq!(ris & sense, level_active, "level-sensitive GPIORIS");
    match offset {
        o if o < 0x400 => assert_eq!(value as u8, m.levels() & (o >> 2) as u8, "GPIODATA"),
        0x400..=0x410 => assert_eq!(value as u8, m.regs[((offset - 0x400) / 4) as usize]),
        0x418 => assert_eq!(value as u8, ris & enable, "GPIOMIS"),
        0x420 => assert_eq!(value as u8, m.afsel),
        0x414 => {}
        o if (0xfe0..0x1000).contains(&o) => assert_eq!(value, ID[((o - 0xfe0) / 4) as usize]),
        _ => assert_eq!(value, 0, "unnamed {offset:#x}"),
    }
    assert_eq!(gpio.interrupt_pending(), ris & enable != 0);
}

fn write(gpio: &mut VirtualPl061, m: &mut Mirror, offset: u64, value: u32) {
    gpio.write(offset, value);
    if !offset.is_multiple_of(4) {
        return;
    }
    let byte = value as u8;
    match offset {
        o if o < 0x400 => {
            let mask = (o >> 2) as u8;
            m.data = (m.data & !mask) | (byte & mask);
        }
        0x400..=0x410 => m.regs[((offset - 0x400) / 4) as usize] = byte,
        0x41c => {
            let edges = gpio.read(0x414) as u8 & !m.regs[1];
            assert_eq!(edges & byte, 0, "GPIOIC left edges {edges:#x} set");
        }
        0x420 => m.afsel = byte,
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut gpio = VirtualPl061::new();
    let mut m = Mirror::default();
    while let Ok(op) = Op::arbitrary(&mut u) {
        match op {
            Op::Read(offset) => check_read(&gpio, &m, u64::from(offset)),
            Op::Write(offset, value) => write(&mut gpio, &mut m, u64::from(offset), value),
            Op::WriteRegister(n, value) => {
                let offset = 0x400 + 4 * u64::from(n % 9);
                write(&mut gpio, &mut m, offset, u32::from(value));
            }
            Op::Input(line, high) => {
                gpio.set_input(line, high);
                if line < 8 {
                    if high {
                        m.inputs |= 1 << line;
                    } else {
                        m.inputs &= !(1 << line);
                    }
                }
            }
        }
        for offset in [0x3fc, 0x414, 0x418] {
            check_read(&gpio, &m, offset);
        }
        if u.is_empty() {
            break;
        }
    }
});
