//! Erasing a stopped slice's NVMe share (docs/control.md, "Erase"): the slice's first hardware
//! queue pair and its buffers as `microvisor_logic::nvme::erase` drives them, and what an erase
//! reports. [`super::slice_disk::SliceDisk::erase`] is the entry point.
//!
//! Buffers: the PRP lists and the zero page live in the queue's slot pages (CPU-written,
//! device-read: the mediated path's slots are all free while the slice is stopped); blocks are
//! read back into the first queue's `read_back` memory (device-written, read with volatile
//! loads), [`READ_SLOTS`] reads at a time.

use alloc::string::String;
use core::fmt;

use microvisor_arch::cpu;
use microvisor_arch::memory::{DmaPages, SharedMemory};
use microvisor_logic::nvme::erase::{
    EraseFault, EraseOutcome, EraseQueue, PAGE, Prps, Unreadable, Wipe,
};
use microvisor_logic::nvme::{CompletionEntry, SubmissionEntry};

use super::physical::{Physical, QueuePair};

/// Reads in flight at once, each into its own slot of the read-back buffer.
pub const READ_SLOTS: u16 = 4;
/// Bytes per read slot (at most this per Read; MDTS may make it less).
pub const READ_SLOT_BYTES: u64 = 32 * 1024;
/// The read-back buffer of each slice with an NVMe share.
pub const READ_BUFFER_BYTES: u64 = READ_SLOTS as u64 * READ_SLOT_BYTES;

/// Slot pages used by the erase: read slot `n`'s PRP list is page `n`; then these two.
const ZERO_PAGE: usize = READ_SLOTS as usize;
const ZERO_LIST: usize = READ_SLOTS as usize + 1;
/// Pages the erase needs in the queue's slot pages.
pub const SLOT_PAGES_NEEDED: usize = ZERO_LIST + 1;

/// What an erase did (docs/control.md, status `last_erase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EraseReport {
    /// Bytes wiped and read back as zero: the whole share.
    pub bytes: u64,
    /// How it was wiped.
    pub wipe: Wipe,
    /// Commands issued, by kind, and completions ignored.
    pub outcome: EraseOutcome,
    /// Generic timer ticks from the call to its end.
    pub ticks: u64,
    /// The same in milliseconds.
    pub ms: u64,
}

/// Why an erase of slice `slice` failed (after `ticks` counter ticks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EraseError {
    /// The slice's name.
    pub slice: String,
    /// What went wrong.
    pub kind: EraseErrorKind,
    /// First block of the slice's window (to name blocks relative to the share).
    pub first_block: u64,
    /// Generic timer ticks spent.
    pub ticks: u64,
}

/// What went wrong in an erase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EraseErrorKind {
    /// Its hardware queues are in use by another erase.
    Busy,
    /// Commands of its guest are still in the hardware (the stop's drain timed out): erasing
    /// would consume their completions.
    GuestCommandsInFlight,
    /// An earlier erase timed out and left commands in the controller: nothing of the slice's
    /// share is used again until the node restarts.
    EraseCommandsInFlight,
    /// Its share has no read-back buffer or too few slot pages (a hypervisor bug).
    NoBuffer,
    /// The controller failed, or a block stayed non-zero (see [`EraseFault`]).
    Fault(EraseFault),
}

impl EraseError {
    /// The controller failed a command or did not complete it (control status `IO_ERROR`).
    pub fn is_io_error(&self) -> bool {
        matches!(self.kind, EraseErrorKind::Fault(f) if f.is_io_error())
    }
}

impl fmt::Display for EraseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slice \"{}\": erase: ", self.slice)?;
        match self.kind {
            EraseErrorKind::Busy => f.write_str("already erasing"),
            EraseErrorKind::GuestCommandsInFlight => {
                f.write_str("its own NVMe commands are still in the controller")
            }
            EraseErrorKind::EraseCommandsInFlight => f.write_str(
                "an earlier erase timed out with commands still in the controller (until the node restarts)",
            ),
            EraseErrorKind::NoBuffer => f.write_str("no erase buffer for its share"),
            EraseErrorKind::Fault(EraseFault::NotZero { lba }) => write!(
                f,
                "block {} of its share (namespace block {lba}) is not zero after the wipe",
                lba.saturating_sub(self.first_block)
            ),
            EraseErrorKind::Fault(fault) => write!(f, "{fault}"),
        }
    }
}

/// Milliseconds of the generic timer's counter.
pub fn ticks_to_ms(ticks: u64) -> u64 {
    let hz = u128::from(cpu::counter_frequency().max(1));
    (u128::from(ticks) * 1000 / hz) as u64
}

/// The slice's first hardware queue pair, its slot pages and its read-back buffer.
pub struct HardwareEraseQueue<'a> {
    pub physical: &'static Physical,
    pub pair: &'a mut QueuePair,
    pub slots: &'a mut DmaPages,
    pub read_back: &'a SharedMemory,
}

impl HardwareEraseQueue<'_> {
    /// Writes `entries` (little-endian PRP entries) at the start of slot page `page`; its
    /// address, or None if the page does not exist or the entries do not fit.
    fn write_list(&mut self, page: usize, entries: &[u64]) -> Option<u64> {
        let (address, bytes) = self.slots.page_mut(page)?;
        if entries.len() * 8 > bytes.len() {
            return None;
        }
        for (chunk, entry) in bytes.chunks_exact_mut(8).zip(entries) {
            chunk.copy_from_slice(&entry.to_le_bytes());
        }
        Some(address)
    }
}

impl EraseQueue for HardwareEraseQueue<'_> {
    fn push(&mut self, command: &SubmissionEntry) {
        self.pair.push(command);
    }

    fn ring(&mut self) {
        self.physical.ring_submission(self.pair);
    }

    fn pop(&mut self) -> Option<CompletionEntry> {
        let entry = self.pair.pop()?;
        self.physical.ring_completion(self.pair);
        Some(entry)
    }

    fn read_pointers(&mut self, slot: u16, bytes: u64) -> Option<(u64, u64)> {
        if slot >= READ_SLOTS || bytes > READ_SLOT_BYTES {
            return None;
        }
        let base = self.read_back.region().base + u64::from(slot) * READ_SLOT_BYTES;
        let prps = Prps::for_pages(bytes, 0, |i| base + i * PAGE);
        if prps.list.is_empty() {
            return Some((prps.prp1, prps.prp2));
        }
        let list = self.write_list(usize::from(slot), &prps.list)?;
        Some((prps.prp1, list))
    }

    fn zero_pointers(&mut self, bytes: u64) -> Option<(u64, u64)> {
        let (zero, page) = self.slots.page_mut(ZERO_PAGE)?;
        page.fill(0);
        let prps = Prps::for_pages(bytes, 0, |_| zero);
        if prps.list.is_empty() {
            return Some((prps.prp1, prps.prp2));
        }
        let list = self.write_list(ZERO_LIST, &prps.list)?;
        Some((prps.prp1, list))
    }

    fn first_nonzero(&self, slot: u16, bytes: u64) -> Result<Option<u64>, Unreadable> {
        if slot >= READ_SLOTS || bytes > READ_SLOT_BYTES {
            return Err(Unreadable);
        }
        let base = u64::from(slot) * READ_SLOT_BYTES;
        let mut chunk = [0u8; 512];
        let mut at = 0;
        while at < bytes {
            let len = (bytes - at).min(chunk.len() as u64) as usize;
            self.read_back
                .read(base + at, &mut chunk[..len])
                .map_err(|_| Unreadable)?;
            if let Some(p) = chunk[..len].iter().position(|&b| b != 0) {
                return Ok(Some(at + p as u64));
            }
            at += len as u64;
        }
        Ok(None)
    }

    fn now_ms(&self) -> u64 {
        ticks_to_ms(cpu::counter())
    }

    fn pause(&self) {
        cpu::spin_hint();
    }
}
