//! The function's MSI-X table and Pending Bit Array, which live in BAR0 (PCI Local Bus 3.0
//! §6.8.2, PCIe Base 4.0 §7.7.2). The MSI-X capability itself (enable, function mask) is in
//! configuration space, which the kernel emulates and reports here.

use alloc::vec;
use alloc::vec::Vec;

use super::backend::MsiMessage;

/// BAR0 offset of the MSI-X table (Table BIR 0).
pub const MSIX_TABLE_OFFSET: u64 = 0x2000;
/// BAR0 offset of the Pending Bit Array (PBA BIR 0).
pub const MSIX_PBA_OFFSET: u64 = 0x3000;
/// Bytes of one table entry.
const ENTRY_SIZE: u64 = 16;
/// Vector Control: Mask Bit.
const VECTOR_MASKED: u32 = 1;

#[derive(Clone, Copy, Debug)]
struct Entry {
    address: u64,
    data: u32,
    control: u32,
}

impl Entry {
    /// Reset state: everything zero but the mask bit (PCI Local Bus 3.0 §6.8.2.9).
    const RESET: Entry = Entry {
        address: 0,
        data: 0,
        control: VECTOR_MASKED,
    };
}

/// The MSI-X state of one function: table, pending bits and the capability's two switches.
#[derive(Clone, Debug)]
pub(crate) struct MsixTable {
    entries: Vec<Entry>,
    /// Pending bit per vector: it fired while masked.
    pending: u128,
    enabled: bool,
    function_mask: bool,
}

impl MsixTable {
    /// A table of `vectors` (at most 128) entries in their reset state, MSI-X disabled.
    pub fn new(vectors: u16) -> MsixTable {
        MsixTable {
            entries: vec![Entry::RESET; usize::from(vectors).min(128)],
            pending: 0,
            enabled: false,
            function_mask: false,
        }
    }

    /// Back to the reset state (function level reset).
    pub fn reset(&mut self) {
        self.entries.fill(Entry::RESET);
        self.pending = 0;
        self.enabled = false;
        self.function_mask = false;
    }

    fn masked(&self, vector: usize) -> bool {
        self.function_mask || self.entries[vector].control & VECTOR_MASKED != 0
    }

    fn message(&self, vector: usize) -> MsiMessage {
        let e = &self.entries[vector];
        MsiMessage {
            vector: vector as u16,
            address: e.address,
            data: e.data,
        }
    }

    /// Signals the vectors in `vectors` (bit n = vector n): unmasked ones go to `signal`,
    /// masked ones become pending. Nothing is sent or remembered while MSI-X is disabled.
    pub fn fire(&mut self, vectors: u128, signal: &mut impl FnMut(MsiMessage)) {
        if !self.enabled {
            return;
        }
        for vector in crate::bits::members(vectors).filter(|&v| v < self.entries.len()) {
            if self.masked(vector) {
                self.pending |= 1 << vector;
            } else {
                signal(self.message(vector));
            }
        }
    }

    /// Sends and clears the pending bits of vectors that are no longer masked.
    fn release(&mut self, signal: &mut impl FnMut(MsiMessage)) {
        if !self.enabled || self.function_mask || self.pending == 0 {
            return;
        }
        for vector in 0..self.entries.len() {
            if self.pending & 1 << vector != 0 && !self.masked(vector) {
                self.pending &= !(1 << vector);
                signal(self.message(vector));
            }
        }
    }

    /// The capability's MSI-X Enable and Function Mask bits changed.
    pub fn set_control(
        &mut self,
        enabled: bool,
        function_mask: bool,
        signal: &mut impl FnMut(MsiMessage),
    ) {
        self.enabled = enabled;
        self.function_mask = function_mask;
        self.release(signal);
    }

    /// Reads the dword at `offset` inside the table (entries past the last read as zero).
    pub fn read_table(&self, offset: u64) -> u32 {
        let Some(entry) = self.entries.get((offset / ENTRY_SIZE) as usize) else {
            return 0;
        };
        match offset % ENTRY_SIZE / 4 {
            0 => entry.address as u32,
            1 => (entry.address >> 32) as u32,
            2 => entry.data,
            _ => entry.control,
        }
    }

    /// Writes the dword at `offset` inside the table; unmasking a pending vector sends it.
    pub fn write_table(&mut self, offset: u64, value: u32, signal: &mut impl FnMut(MsiMessage)) {
        let Some(entry) = self.entries.get_mut((offset / ENTRY_SIZE) as usize) else {
            return;
        };
        match offset % ENTRY_SIZE / 4 {
            0 => entry.address = entry.address & !0xffff_ffff | u64::from(value & !0b11),
            1 => entry.address = entry.address & 0xffff_ffff | u64::from(value) << 32,
            2 => entry.data = value,
            _ => {
                entry.control = value & VECTOR_MASKED;
                self.release(signal);
            }
        }
    }

    /// Reads the dword at `offset` inside the Pending Bit Array.
    pub fn read_pba(&self, offset: u64) -> u32 {
        match offset / 4 {
            word @ 0..4 => (self.pending >> (32 * word)) as u32,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(table: &mut MsixTable, vectors: u128) -> Vec<MsiMessage> {
        let mut sent = vec![];
        table.fire(vectors, &mut |m| sent.push(m));
        sent
    }

    fn program(table: &mut MsixTable, vector: u64, data: u32, masked: bool) {
        let mut none = |_| panic!("nothing pending");
        let base = vector * 16;
        table.write_table(base, 0x0800_0040, &mut none);
        table.write_table(base + 4, 0, &mut none);
        table.write_table(base + 8, data, &mut none);
        table.write_table(base + 12, u32::from(masked), &mut none);
    }

    fn enabled(vectors: u16) -> MsixTable {
        let mut t = MsixTable::new(vectors);
        t.set_control(true, false, &mut |_| {});
        t
    }

    #[test]
    fn entries_start_masked_and_read_back() {
        let mut t = MsixTable::new(3);
        assert_eq!(t.read_table(12), 1, "vector control masked at reset");
        program(&mut t, 1, 40, false);
        assert_eq!(t.read_table(16), 0x0800_0040);
        assert_eq!(t.read_table(20), 0);
        assert_eq!(t.read_table(24), 40);
        assert_eq!(t.read_table(28), 0);
        assert_eq!(t.read_table(3 * 16), 0, "past the last entry");
        t.write_table(3 * 16 + 8, 5, &mut |_| {});
        t.write_table(28, 0xffff_fffe, &mut |_| {});
        assert_eq!(t.read_table(28), 0, "reserved vector control bits");
        t.write_table(16, 0x1003, &mut |_| {});
        assert_eq!(t.read_table(16), 0x1000, "address dword aligned");
    }

    #[test]
    fn unmasked_vectors_are_signalled() {
        let mut t = enabled(3);
        program(&mut t, 0, 40, false);
        program(&mut t, 2, 42, false);
        let sent = collect(&mut t, 0b101);
        assert_eq!(
            sent,
            [
                MsiMessage {
                    vector: 0,
                    address: 0x0800_0040,
                    data: 40
                },
                MsiMessage {
                    vector: 2,
                    address: 0x0800_0040,
                    data: 42
                }
            ]
        );
        assert_eq!(t.read_pba(0), 0);
    }

    #[test]
    fn disabled_msix_sends_nothing() {
        let mut t = MsixTable::new(2);
        program(&mut t, 0, 40, false);
        assert!(collect(&mut t, 1).is_empty());
        assert_eq!(t.read_pba(0), 0);
    }

    #[test]
    fn masked_vector_becomes_pending_and_fires_on_unmask() {
        let mut t = enabled(2);
        program(&mut t, 1, 41, true);
        assert!(collect(&mut t, 0b10).is_empty());
        assert_eq!(t.read_pba(0), 0b10);
        let mut sent = vec![];
        t.write_table(16 + 12, 0, &mut |m| sent.push(m));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].data, 41);
        assert_eq!(t.read_pba(0), 0, "pending bit cleared once sent");
    }

    #[test]
    fn function_mask_holds_everything() {
        let mut t = enabled(2);
        program(&mut t, 0, 40, false);
        t.set_control(true, true, &mut |_| panic!("masked"));
        assert!(collect(&mut t, 1).is_empty());
        assert_eq!(t.read_pba(0), 1);
        let mut sent = vec![];
        t.set_control(true, false, &mut |m| sent.push(m));
        assert_eq!(sent.len(), 1);
        assert_eq!(t.read_pba(0), 0);
    }

    #[test]
    fn pba_words_and_reset() {
        let mut t = enabled(100);
        t.set_control(true, true, &mut |_| {});
        collect(&mut t, 1 << 99 | 1 << 33);
        assert_eq!(t.read_pba(4), 1 << 1);
        assert_eq!(t.read_pba(12), 1 << 3);
        assert_eq!(t.read_pba(16), 0);
        t.reset();
        assert_eq!(t.read_pba(12), 0);
        assert_eq!(t.read_table(12), 1);
        program(&mut t, 0, 40, false);
        assert!(collect(&mut t, 1).is_empty(), "disabled after reset");
    }
}
