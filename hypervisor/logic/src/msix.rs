//! MSI-X table and Pending Bit Array emulation (PCI Local Bus 3.0 §6.8.2, PCIe Base 4.0
//! §6.1.4.5 and §7.7.2), shared by every function a slice sees: the virtual NVMe controller
//! (`crate::nvme`) and physical functions assigned to the slice (`crate::passthrough`).
//!
//! The table holds what the guest programmed; the MSI-X capability's two switches (MSI-X
//! Enable, Function Mask) live in configuration space, which the caller emulates and reports
//! with [`MsixTable::set_control`]. Masking is done here, in software: a vector signalled
//! while masked (by its own Mask Bit or the Function Mask) sets its pending bit instead, and
//! the message is sent once when the vector is unmasked; a pending bit clears only when its
//! message is sent. Nothing is sent or remembered while MSI-X is disabled.

use alloc::vec;
use alloc::vec::Vec;

/// Most vectors one function can have (Table Size is 11 bits, 0-based).
pub const MAX_VECTORS: u16 = 2048;
/// Bytes of one table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Vector Control: Mask Bit (the other 31 bits are reserved).
const VECTOR_MASKED: u32 = 1;

/// One MSI-X message to deliver: the guest programmed `address` and `data` into an unmasked
/// vector. With the GICv3 MBI, `address` should be GICD_SETSPI_NSR and `data` an SPI the
/// slice owns; the caller checks that before it injects anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    /// The vector's number in the MSI-X table.
    pub vector: u16,
    /// Message Address (upper and lower dwords).
    pub address: u64,
    /// Message Data.
    pub data: u32,
}

/// What became of one signalled vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The vector is unmasked: this message goes out.
    Sent(MsiMessage),
    /// The vector (or the whole function) is masked: its pending bit is now set.
    Pending,
    /// MSI-X is disabled or the vector does not exist: nothing is sent or remembered.
    Dropped,
}

/// One table entry as the guest wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixEntry {
    /// Message Address (bits 1:0 always zero).
    pub address: u64,
    /// Message Data.
    pub data: u32,
    /// Vector Control's Mask Bit.
    pub masked: bool,
}

impl MsixEntry {
    /// Reset state: everything zero but the mask bit (PCI Local Bus 3.0 §6.8.2.9).
    const RESET: MsixEntry = MsixEntry {
        address: 0,
        data: 0,
        masked: true,
    };
}

/// The MSI-X state of one function: table, pending bits and the capability's two switches.
#[derive(Clone, Debug)]
pub struct MsixTable {
    entries: Vec<MsixEntry>,
    /// Pending bit per vector (bit n of word n / 64), laid out as the PBA is.
    pending: Vec<u64>,
    enabled: bool,
    function_mask: bool,
}

impl MsixTable {
    /// A table of `vectors` entries (clamped to 1..=[`MAX_VECTORS`]) in their reset state,
    /// MSI-X disabled.
    pub fn new(vectors: u16) -> MsixTable {
        let vectors = usize::from(vectors.clamp(1, MAX_VECTORS));
        MsixTable {
            entries: vec![MsixEntry::RESET; vectors],
            pending: vec![0; vectors.div_ceil(64)],
            enabled: false,
            function_mask: false,
        }
    }

    /// Vectors in the table.
    pub fn vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Bytes of the table.
    pub fn table_bytes(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// Bytes of the Pending Bit Array (whole qwords, §6.8.2.5).
    pub fn pba_bytes(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// Back to the reset state (function level reset, §6.8.2.9).
    pub fn reset(&mut self) {
        self.entries.fill(MsixEntry::RESET);
        self.pending.fill(0);
        self.enabled = false;
        self.function_mask = false;
    }

    /// MSI-X Enable.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Function Mask.
    pub fn function_masked(&self) -> bool {
        self.function_mask
    }

    /// Entry `vector`, if it exists.
    pub fn entry(&self, vector: u16) -> Option<MsixEntry> {
        self.entries.get(usize::from(vector)).copied()
    }

    /// Vector `vector`'s pending bit.
    pub fn pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pending
            .get(v / 64)
            .is_some_and(|w| w & 1 << (v % 64) != 0)
    }

    /// The message vector `vector` sends now: MSI-X enabled, the vector and the function
    /// unmasked (else `None`).
    pub fn unmasked_message(&self, vector: u16) -> Option<MsiMessage> {
        (self.enabled && !self.masked(vector))
            .then(|| self.message(vector))
            .flatten()
    }

    /// Masked by its own mask bit or by the function mask (a missing vector is masked).
    pub fn masked(&self, vector: u16) -> bool {
        self.function_mask || self.entry(vector).is_none_or(|e| e.masked)
    }

    fn message(&self, vector: u16) -> Option<MsiMessage> {
        self.entry(vector).map(|e| MsiMessage {
            vector,
            address: e.address,
            data: e.data,
        })
    }

    fn set_pending(&mut self, vector: u16, pending: bool) {
        let v = usize::from(vector);
        if let Some(word) = self.pending.get_mut(v / 64) {
            if pending {
                *word |= 1 << (v % 64);
            } else {
                *word &= !(1 << (v % 64));
            }
        }
    }

    /// The function signals `vector`: sent if unmasked, pending if masked, dropped while MSI-X
    /// is disabled or for a vector past the table (§6.8.2.9, PCIe Base 4.0 §6.1.4.5).
    pub fn signal(&mut self, vector: u16) -> Signal {
        if !self.enabled || usize::from(vector) >= self.entries.len() {
            return Signal::Dropped;
        }
        if self.masked(vector) {
            self.set_pending(vector, true);
            return Signal::Pending;
        }
        self.message(vector).map_or(Signal::Dropped, Signal::Sent)
    }

    /// Signals the vectors in `vectors` (bit n = vector n): unmasked ones go to `send`,
    /// masked ones become pending.
    pub fn fire(&mut self, vectors: u128, send: &mut impl FnMut(MsiMessage)) {
        for vector in crate::bits::members(vectors) {
            if let Signal::Sent(message) = self.signal(vector as u16) {
                send(message);
            }
        }
    }

    /// Sends and clears the pending bits of vectors that are no longer masked.
    fn release(&mut self, send: &mut impl FnMut(MsiMessage)) {
        if !self.enabled || self.function_mask {
            return;
        }
        for word in 0..self.pending.len() {
            let mut bits = self.pending[word];
            while bits != 0 {
                let vector = (word * 64) as u16 + bits.trailing_zeros() as u16;
                bits &= bits - 1;
                if !self.masked(vector) {
                    self.set_pending(vector, false);
                    if let Some(message) = self.message(vector) {
                        send(message);
                    }
                }
            }
        }
    }

    /// The capability's MSI-X Enable and Function Mask bits changed. Unmasking sends what is
    /// pending.
    pub fn set_control(
        &mut self,
        enabled: bool,
        function_mask: bool,
        send: &mut impl FnMut(MsiMessage),
    ) {
        self.enabled = enabled;
        self.function_mask = function_mask;
        self.release(send);
    }

    /// Reads the dword at `offset` inside the table (entries past the last read as zero).
    pub fn read_table(&self, offset: u64) -> u32 {
        let Some(entry) = usize::try_from(offset / ENTRY_SIZE)
            .ok()
            .and_then(|i| self.entries.get(i))
        else {
            return 0;
        };
        match offset % ENTRY_SIZE / 4 {
            0 => entry.address as u32,
            1 => (entry.address >> 32) as u32,
            2 => entry.data,
            _ => u32::from(entry.masked),
        }
    }

    /// Writes the dword at `offset` inside the table; unmasking a pending vector sends it.
    /// Returns the vector whose entry was written (None past the table).
    pub fn write_table(
        &mut self,
        offset: u64,
        value: u32,
        send: &mut impl FnMut(MsiMessage),
    ) -> Option<u16> {
        let index = usize::try_from(offset / ENTRY_SIZE).ok()?;
        let entry = self.entries.get_mut(index)?;
        match offset % ENTRY_SIZE / 4 {
            0 => entry.address = entry.address & !0xffff_ffff | u64::from(value & !0b11),
            1 => entry.address = entry.address & 0xffff_ffff | u64::from(value) << 32,
            2 => entry.data = value,
            _ => {
                entry.masked = value & VECTOR_MASKED != 0;
                self.release(send);
            }
        }
        Some(index as u16)
    }

    /// Reads the dword at `offset` inside the Pending Bit Array (zero past its end). The PBA
    /// is read-only: writes to it are for the caller to ignore.
    pub fn read_pba(&self, offset: u64) -> u32 {
        let Some(word) = usize::try_from(offset / 8)
            .ok()
            .and_then(|i| self.pending.get(i))
        else {
            return 0;
        };
        (word >> (32 * (offset / 4 % 2))) as u32
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
        assert_eq!(t.write_table(3 * 16 + 8, 5, &mut |_| {}), None);
        assert_eq!(t.write_table(28, 0xffff_fffe, &mut |_| {}), Some(1));
        assert_eq!(t.read_table(28), 0, "reserved vector control bits");
        t.write_table(16, 0x1003, &mut |_| {});
        assert_eq!(t.read_table(16), 0x1000, "address dword aligned");
        assert_eq!(t.read_table(u64::MAX - 3), 0);
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
        assert_eq!(t.signal(0), Signal::Dropped);
        assert_eq!(t.read_pba(0), 0);
    }

    #[test]
    fn masked_vector_becomes_pending_and_fires_once_on_unmask() {
        let mut t = enabled(2);
        program(&mut t, 1, 41, true);
        assert_eq!(t.signal(1), Signal::Pending);
        assert_eq!(t.signal(1), Signal::Pending, "coalesced");
        assert_eq!(t.read_pba(0), 0b10);
        assert!(t.pending(1));
        let mut sent = vec![];
        t.write_table(16 + 12, 0, &mut |m| sent.push(m));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].data, 41);
        assert_eq!(t.read_pba(0), 0, "pending bit cleared once sent");
        assert_eq!(t.signal(7), Signal::Dropped, "no such vector");
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
        assert_eq!(t.pba_bytes(), 16);
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

    #[test]
    fn the_largest_table() {
        let mut t = MsixTable::new(u16::MAX);
        assert_eq!(t.vectors(), MAX_VECTORS);
        assert_eq!((t.table_bytes(), t.pba_bytes()), (0x8000, 0x100));
        t.set_control(true, true, &mut |_| {});
        assert_eq!(t.signal(2047), Signal::Pending);
        assert_eq!(t.read_pba(0xfc), 1 << 31);
        assert_eq!(MsixTable::new(0).vectors(), 1);
    }
}
