//! One submission/completion queue pair of the physical controller (Base 1.4 §4.1): the
//! submission queue tail the hypervisor advances, the completion queue head it consumes, and
//! the phase tag that tells a new completion from an old one (§4.6, "Phase Tag": it is
//! inverted by the controller on each pass through the completion queue).

use zerocopy::{FromBytes, IntoBytes};

use super::{CpuWritten, DeviceWritten, DmaAllocator, NvmeError};
use crate::nvme::spec::{CQE_SIZE, CompletionEntry, SQE_SIZE, SubmissionEntry};

/// Offset of DW3 (command identifier, phase tag and status) in a completion entry.
const CQE_DW3: u64 = 12;
/// The phase tag's bit in DW3.
const PHASE_IN_DW3: u32 = 1 << 16;

/// A queue pair with queue ID `id`: its submission queue in CPU-written memory `S`, its
/// completion queue in device-written memory `C`.
#[derive(Debug)]
pub struct QueuePair<S, C> {
    id: u16,
    entries: u16,
    sq: S,
    cq: C,
    sq_tail: u16,
    cq_head: u16,
    /// The phase tag a new entry at `cq_head` carries.
    phase: bool,
}

impl<S: CpuWritten, C: DeviceWritten> QueuePair<S, C> {
    /// A pair of `entries` (at least 2) entries in fresh memory from `memory`.
    pub(crate) fn new<M>(id: u16, entries: u16, memory: &mut M) -> Result<Self, NvmeError>
    where
        M: DmaAllocator<CpuWritten = S, DeviceWritten = C>,
    {
        if entries < 2 {
            return Err(NvmeError::Unsupported("a queue of fewer than 2 entries"));
        }
        let sq = memory
            .cpu_written(u64::from(entries) * SQE_SIZE)
            .ok_or(NvmeError::OutOfDeviceMemory)?;
        let cq = memory
            .device_written(u64::from(entries) * CQE_SIZE)
            .ok_or(NvmeError::OutOfDeviceMemory)?;
        Ok(Self {
            id,
            entries,
            sq,
            cq,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
        })
    }

    /// The queue ID of both queues.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Entries of each queue.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Bus address of the submission queue.
    pub fn sq_address(&self) -> u64 {
        self.sq.address()
    }

    /// Bus address of the completion queue.
    pub fn cq_address(&self) -> u64 {
        self.cq.address()
    }

    /// Writes `command` at the tail (the doorbell is rung separately, after a batch). The
    /// caller keeps at most `entries - 1` commands in flight, so the queue never overflows.
    pub fn push(&mut self, command: &SubmissionEntry) {
        self.sq
            .write(u64::from(self.sq_tail) * SQE_SIZE, command.as_bytes());
        self.sq_tail = (self.sq_tail + 1) % self.entries;
    }

    /// The submission queue tail, for its doorbell.
    pub fn tail(&self) -> u16 {
        self.sq_tail
    }

    /// The next completion if the controller posted one (its phase tag is the current phase),
    /// advancing the head. The caller writes the head doorbell after a batch.
    pub fn pop(&mut self) -> Option<CompletionEntry> {
        let offset = u64::from(self.cq_head) * CQE_SIZE;
        let dw3 = self.cq.read_u32(offset + CQE_DW3)?;
        if (dw3 & PHASE_IN_DW3 != 0) != self.phase {
            return None;
        }
        self.cq.acquire();
        let mut bytes = [0u8; CQE_SIZE as usize];
        self.cq.read(offset, &mut bytes)?;
        self.cq_head = (self.cq_head + 1) % self.entries;
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
        CompletionEntry::read_from_bytes(&bytes).ok()
    }

    /// The completion queue head, for its doorbell.
    pub fn cq_head(&self) -> u16 {
        self.cq_head
    }

    /// Starts both queues over at entry 0 with an empty (zeroed) completion queue, as the
    /// controller has them once the pair was deleted and created again.
    pub(crate) fn restart(&mut self) {
        self.cq.zero(u64::from(self.entries) * CQE_SIZE);
        self.sq_tail = 0;
        self.cq_head = 0;
        self.phase = true;
    }

    /// Orders the submission queue's entries before the doorbell write that follows.
    pub(crate) fn publish(&self) {
        self.sq.publish();
    }
}
