//! The MSI-X table and PBA (`logic::msix`), shared by the virtual NVMe controller and assigned
//! functions: any table size, any sequence of table writes and reads at any offset, PBA reads,
//! Enable/Function Mask changes, vectors signalled (in range or not) and resets.
//!
//! Invariants (PCI Local Bus 3.0 §6.8.2, PCIe Base 4.0 §6.1.4.5), against a reference model
//! of entries, pending bits and the two switches:
//! - table reads return what the guest wrote (address bits 1:0 zero, Mask Bit alone in Vector
//!   Control); entries past the table read 0 and writes to them change nothing;
//! - a message goes out only for an existing, enabled, unmasked vector, with its entry's
//!   address and data, and exactly once per signal or per pending bit released;
//! - a signal while masked sets the pending bit instead; nothing is sent or remembered while
//!   MSI-X is disabled; unmasking (entry or function) sends and clears what is pending;
//! - the PBA reads the model's pending bits; a reset returns to every entry masked, nothing
//!   pending, disabled.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use microvisor_logic::msix::{MsiMessage, MsixTable, Signal};

#[derive(Arbitrary, Debug)]
enum Op {
    WriteTable(u16, u32),
    ReadTable(u16),
    ReadPba(u16),
    Control(bool, bool),
    Signal(u16),
    Fire(u128),
    Reset,
}

#[derive(Clone, Copy)]
struct Entry {
    address: u64,
    data: u32,
    masked: bool,
}

struct Model {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    enabled: bool,
    function_mask: bool,
}

impl Model {
    fn new(vectors: usize) -> Model {
        Model {
            entries: vec![
                Entry {
                    address: 0,
                    data: 0,
                    masked: true
                };
                vectors
            ],
            pending: vec![false; vectors],
            enabled: false,
            function_mask: false,
        }
    }

    fn masked(&self, v: usize) -> bool {
        self.function_mask || self.entries[v].masked
    }

    fn message(&self, v: usize) -> MsiMessage {
        MsiMessage {
            vector: v as u16,
            address: self.entries[v].address,
            data: self.entries[v].data,
        }
    }

    /// What unmasking releases, in vector order.
    fn release(&mut self) -> Vec<MsiMessage> {
        let mut out = Vec::new();
        if !self.enabled || self.function_mask {
            return out;
        }
        for v in 0..self.entries.len() {
            if self.pending[v] && !self.masked(v) {
                self.pending[v] = false;
                out.push(self.message(v));
            }
        }
        out
    }

    fn signal(&mut self, v: usize) -> Signal {
        if !self.enabled || v >= self.entries.len() {
            return Signal::Dropped;
        }
        if self.masked(v) {
            self.pending[v] = true;
            return Signal::Pending;
        }
        Signal::Sent(self.message(v))
    }
}

fn sort(mut m: Vec<MsiMessage>) -> Vec<MsiMessage> {
    m.sort_by_key(|m| m.vector);
    m
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(size) = u16::arbitrary(&mut u) else {
        return;
    };
    // Mostly small tables, sometimes the largest.
    let vectors = if size & 0x8000 != 0 {
        size & 0x7ff
    } else {
        size % 70
    };
    let mut table = MsixTable::new(vectors);
    let n = usize::from(vectors.clamp(1, 2048));
    assert_eq!(usize::from(table.vectors()), n);
    assert_eq!(table.table_bytes(), 16 * n as u64);
    let mut m = Model::new(n);
    while let Ok(op) = Op::arbitrary(&mut u) {
        let mut sent = Vec::new();
        let mut expected = Vec::new();
        match op {
            Op::WriteTable(offset, value) => {
                let offset = u64::from(offset) & !3;
                let index = (offset / 16) as usize;
                let written = table.write_table(offset, value, &mut |msg| sent.push(msg));
                if index < n {
                    assert_eq!(written, Some(index as u16));
                    let e = &mut m.entries[index];
                    match offset % 16 / 4 {
                        0 => e.address = e.address & !0xffff_ffff | u64::from(value & !3),
                        1 => e.address = e.address & 0xffff_ffff | u64::from(value) << 32,
                        2 => e.data = value,
                        _ => {
                            e.masked = value & 1 != 0;
                            expected = m.release();
                        }
                    }
                } else {
                    assert_eq!(written, None, "write past the table");
                }
            }
            Op::ReadTable(offset) => {
                let offset = u64::from(offset) & !3;
                let index = (offset / 16) as usize;
                let value = table.read_table(offset);
                let want = match m.entries.get(index) {
                    None => 0,
                    Some(e) => match offset % 16 / 4 {
                        0 => e.address as u32,
                        1 => (e.address >> 32) as u32,
                        2 => e.data,
                        _ => u32::from(e.masked),
                    },
                };
                assert_eq!(value, want, "table dword at {offset:#x}");
            }
            Op::ReadPba(offset) => {
                let offset = u64::from(offset) & !3;
                let value = table.read_pba(offset);
                let first = (offset / 4 * 32) as usize;
                let want = (0..32)
                    .filter(|b| m.pending.get(first + b).copied().unwrap_or(false))
                    .fold(0u32, |w, b| w | 1 << b);
                assert_eq!(value, want, "PBA dword at {offset:#x}");
            }
            Op::Control(enabled, mask) => {
                table.set_control(enabled, mask, &mut |msg| sent.push(msg));
                m.enabled = enabled;
                m.function_mask = mask;
                expected = m.release();
            }
            Op::Signal(vector) => {
                let vector = if vector & 0x8000 != 0 {
                    vector
                } else {
                    vector % 80
                };
                let got = table.signal(vector);
                assert_eq!(got, m.signal(usize::from(vector)), "signal {vector}");
            }
            Op::Fire(vectors) => {
                table.fire(vectors, &mut |msg| sent.push(msg));
                for v in 0..128 {
                    if vectors & 1 << v != 0
                        && let Signal::Sent(msg) = m.signal(v)
                    {
                        expected.push(msg);
                    }
                }
            }
            Op::Reset => {
                table.reset();
                m = Model::new(n);
            }
        }
        assert_eq!(sort(sent), sort(expected), "messages sent");
        assert_eq!(table.enabled(), m.enabled);
        assert_eq!(table.function_masked(), m.function_mask);
        for v in 0..n.min(130) {
            assert_eq!(table.pending(v as u16), m.pending[v], "pending bit {v}");
        }
        if u.is_empty() {
            break;
        }
    }
});
