//! Direct I/O queues (docs/decisions/0005-nvme-completions-without-exits.md): a guest I/O CQ
//! the physical controller writes itself, so that a completion needs nothing from the
//! hypervisor.
//!
//! A guest I/O queue pair becomes direct at its first command when the kernel offers it
//! ([`super::ControllerConfig::direct_queues`]), the SQ and its CQ both have the hardware
//! queue's depth, the CQ is new (no entry posted yet), fits in one page and the SQ is the only
//! one using it, the run has moves left, the hardware pair was never lost (a move whose
//! restore failed: the controller may still write where its CQ was), no Read in flight may
//! still write the CQ's page, and the kernel could move the hardware pair's CQ to the guest's
//! CQ ([`super::NvmeBackend::place_cq`]). Then, unlike the mediated path:
//!
//! - the hardware command carries the guest's Command Identifier, so the controller's
//!   completion is already the one the guest reads (SQ ID and SQ Head in it are the hardware
//!   queue's: the SQ Head matches the guest's, as both queues start at entry 0 and every
//!   fetched guest entry becomes one hardware entry; the SQ ID does not);
//! - a command's slot is found by its Command Identifier and freed when its completion is
//!   *harvested*: read from the guest's CQ, after the entries the hypervisor has seen (phase
//!   tags), on the exits the slice takes anyway (an SQ tail or CQ head doorbell, the pair's
//!   interrupt while it is taken by the hypervisor). A command whose Command Identifier is
//!   still in flight on the queue waits in the guest's SQ until that one is harvested, so the
//!   controller never holds two with one identifier from a guest that keeps the rules;
//! - a command the validator refuses cannot be completed by the hypervisor in a CQ the
//!   controller writes: it becomes a Flush of namespace 0, which the controller itself
//!   completes, in order, with Invalid Namespace or Format (and no data moved);
//! - the guest's CQ head (doorbell or shadow doorbell) is checked against what was harvested
//!   and forwarded to the controller's CQ head doorbell, and no command is submitted unless
//!   the CQ has room for its completion by that head;
//! - the shadow SQ EventIdx always asks for the next tail: no completion exit is bound to
//!   come and pick up a tail written without a ring.
//!
//! Nothing but the controller writes the guest's CQ while it is direct, so every entry
//! harvested is one the controller wrote: its page is read-only in the slice's stage 2, the
//! kernel writes nothing there for the guest, and no data of a command may go there (the
//! validator's `CommandMemory::data_allowed`, and a page a Read in flight may still write
//! stays mediated); one direct CQ per page, and none on a slice with assigned functions
//! (the plan refuses it: their DMA is not checked). That is what keeps the hardware SQ from overflowing: a slot freed by
//! a forged entry would let the hypervisor submit more commands than the hardware SQ holds,
//! writing over entries the controller has not fetched yet, possibly while it fetches one; a
//! torn entry (one command's PRPs with another's block count or LBA) would then pass no
//! check. The guest's head (doorbell or shadow) is checked against what was harvested.
//!
//! The pair moves back to the hypervisor's memory ([`super::NvmeBackend::place_cq`] with
//! `None`) on Delete I/O SQ, a second SQ on the CQ, a controller reset or shutdown, a function
//! level reset, and the end of the slice's run. Commands that were in flight then complete
//! with Command Abort Requested unless the controller wrote their completion first.

use zerocopy::FromBytes;

use super::backend::{MsiMessage, NvmeBackend, Placed};
use super::controller::{Slot, SlotRef, VirtualNvme, Work};
use super::io::Transfer;
use super::memory::Ipa;
use super::spec::{CQE_SIZE, CompletionEntry, PAGE_MASK, PAGE_SIZE, Status, SubmissionEntry, io};

/// The hardware command standing for a guest command the validator refused, on a direct
/// queue: a Flush of namespace 0 (never a valid namespace), which the controller completes
/// with Invalid Namespace or Format under the guest's Command Identifier.
pub(super) fn refused_command(cid: u16) -> SubmissionEntry {
    SubmissionEntry {
        opcode: io::FLUSH,
        command_id: cid.into(),
        ..SubmissionEntry::default()
    }
}

impl VirtualNvme {
    /// Guest I/O SQ `qid` was just created: if its CQ is direct and now shared, that CQ goes
    /// back to the mediated path; if the pair may be direct, it becomes so at its first
    /// fetch ([`Self::start_direct`]). Not now: a driver may still write its new CQ (Linux
    /// zeroes it right after creating the pair, with DC ZVA, a store the hypervisor could
    /// not complete for it on a read-only page).
    pub(super) fn bind_direct(&mut self, env: &mut impl NvmeBackend, qid: usize, work: &mut Work) {
        let Some(sq) = self.sqs.get(qid).copied().flatten() else {
            return;
        };
        let Some(cq) = self.cqs.get(usize::from(sq.cq)).copied().flatten() else {
            return;
        };
        if let Some(other) = cq.direct {
            // A second SQ posts to this CQ through the hypervisor: one writer per CQ.
            return self.end_direct(env, usize::from(other) - 1, true, work);
        }
        self.hw[qid - 1].wants_direct = self.config.direct_queues;
    }

    /// Guest I/O SQ `qid` has its first command to fetch: makes the pair direct if it may be
    /// (see the module's conditions), moving the hardware CQ into the guest's.
    pub(super) fn start_direct(&mut self, env: &mut impl NvmeBackend, qid: usize) {
        let index = qid - 1;
        if !core::mem::take(&mut self.hw[index].wants_direct) {
            return;
        }
        let Some(sq) = self.sqs.get(qid).copied().flatten() else {
            return;
        };
        let Some(cq) = self.cqs.get(usize::from(sq.cq)).copied().flatten() else {
            return;
        };
        let depth = self.config.queues.depth;
        let hw = &self.hw[index];
        let eligible = self.config.direct_queues
            && cq.sqs == 1
            && sq.size == depth
            && cq.size == depth
            && (cq.head, cq.tail, cq.phase) == (0, 0, true)
            && cq.held.is_none()
            && cq.direct.is_none()
            && u64::from(cq.size) * CQE_SIZE <= PAGE_SIZE
            && !self.shutting_down()
            && self.direct_moves > 0
            && !hw.lost
            && (sq.head, sq.outstanding) == (0, 0)
            && hw.free.len() == hw.slots.len();
        if !eligible {
            return;
        }
        // A Read fetched before the page became off limits to data may still land in it
        // (found in review): such a page stays mediated.
        let page = self.config.ram.translate(cq.base, PAGE_SIZE).map(|pa| pa.0);
        if page.is_none_or(|page| self.reads_into(env, page)) {
            return;
        }
        let Some(at) = self
            .config
            .ram
            .translate(cq.base, u64::from(cq.size) * CQE_SIZE)
        else {
            return;
        };
        // The backend zeroes the CQ once it is read-only: whatever it held (a driver zeroes
        // it, a hostile one need not) must not pass for entries of the first pass.
        self.direct_moves -= 1;
        match env.place_cq(hw.qid, Some(at)) {
            Placed::Moved => {
                self.direct_pages.push(cq.base.0 & !PAGE_MASK);
                self.hw[index].direct = Some(sq.cq);
                if let Some(cq) = self.cqs[usize::from(sq.cq)].as_mut() {
                    cq.direct = Some(qid as u16);
                }
            }
            Placed::Stayed => {}
            // Nothing was in flight on it; nothing may go to it now (until 2026-12-04 the
            // pair stayed in use, found in review).
            Placed::Lost => self.hw[index].lost = true,
        }
    }

    /// Moves hardware queue `index` (direct) back to the hypervisor's memory (with `place`;
    /// without, the kernel already lost the pair: the physical controller was reset), reads
    /// what the controller wrote into the guest's CQ until then, and ends every command it
    /// did not complete: with Command Abort Requested through the mediated path while the
    /// guest's queues exist, silently otherwise. If the pair could not be moved, the commands
    /// stay in the hardware (draining) until the kernel cancels them.
    pub(super) fn end_direct(
        &mut self,
        env: &mut impl NvmeBackend,
        index: usize,
        place: bool,
        work: &mut Work,
    ) {
        let Some(cq_id) = self.hw[index].direct else {
            return;
        };
        let moved = !place || env.place_cq(self.hw[index].qid, None) == Placed::Moved;
        self.hw[index].lost |= !moved;
        self.harvest(env, usize::from(cq_id), work);
        self.hw[index].direct = None;
        if let Some(cq) = self.cqs[usize::from(cq_id)].as_mut() {
            cq.direct = None;
            let page = cq.base.0 & !PAGE_MASK;
            if let Some(at) = self.direct_pages.iter().position(|&p| p == page) {
                self.direct_pages.swap_remove(at);
            }
        }
        for slot in 0..self.hw[index].slots.len() {
            let Slot::InFlight { sq, cid, .. } = self.hw[index].slots[slot] else {
                continue;
            };
            if !moved {
                self.hw[index].slots[slot] = Slot::Draining;
                continue;
            }
            self.in_flight -= 1;
            let at = SlotRef {
                queue: index as u16,
                slot: slot as u16,
            };
            match self.sqs[usize::from(sq)] {
                Some(guest) => {
                    self.hold(at, sq, cid, Status::ABORT_REQUESTED, 0, guest.cq);
                    work.flush |= 1 << guest.cq;
                }
                None => self.free_slot(at),
            }
        }
        work.refetch |= 1 << (index + 1);
    }

    /// Ends every direct queue (a reset, a shutdown, the end of the run).
    pub(super) fn end_all_direct(&mut self, env: &mut impl NvmeBackend, work: &mut Work) {
        for index in 0..self.hw.len() {
            self.end_direct(env, index, true, work);
        }
    }

    /// Reads the entries the controller wrote into direct CQ `cq_id` since the last one seen,
    /// and frees the slot of each one's Command Identifier. Stops at the first entry whose
    /// phase tag is not the current one, or when the CQ would hold more than it can (what
    /// lies beyond is the guest's writing, not the controller's). Returns the entries read.
    pub(super) fn harvest(
        &mut self,
        env: &mut impl NvmeBackend,
        cq_id: usize,
        work: &mut Work,
    ) -> usize {
        let Some(Some(sq_id)) = self.cqs.get(cq_id).copied().flatten().map(|cq| cq.direct) else {
            return 0;
        };
        let index = usize::from(sq_id) - 1;
        let mut found = 0;
        while let Some(cq) = self.cqs[cq_id].as_mut() {
            if cq.full() {
                break;
            }
            // The status dword holds the phase tag, the status and the Command Identifier:
            // read once to see the phase, and again after a barrier (as a driver reads the
            // rest of an entry after its phase tag) for the values.
            let at = Ipa(cq.base.0 + u64::from(cq.tail) * CQE_SIZE + 12);
            let Some(dw3) = read_dword(env, at).filter(|&d| phase(d) == cq.phase) else {
                break;
            };
            env.fence();
            let dw3 = read_dword(env, at).unwrap_or(dw3);
            cq.advance_tail();
            found += 1;
            let mut raw = [0u8; CQE_SIZE as usize];
            raw[12..].copy_from_slice(&dw3.to_le_bytes());
            let entry = CompletionEntry::read_from_bytes(&raw).unwrap_or_default();
            let cid = entry.command_id.get();
            let hw = &self.hw[index];
            let slot = hw
                .slots
                .iter()
                .position(|s| matches!(s, Slot::InFlight { cid: c, .. } if *c == cid));
            // An identifier with no command in flight is the guest's own writing: nothing
            // to free.
            if let Some(slot) = slot
                && let Slot::InFlight { sq, transfer, .. } = hw.slots[slot]
            {
                self.smart.count(transfer, entry.status());
                self.in_flight -= 1;
                self.free_slot(SlotRef {
                    queue: index as u16,
                    slot: slot as u16,
                });
                work.refetch |= 1 << (index + 1);
                self.command_done(sq, work);
            }
        }
        found
    }

    /// Takes direct CQ `cq_id`'s head from its shadow doorbell (when the guest uses one) and
    /// forwards a new head to the controller. Harvests first, since the guest may have
    /// consumed entries not yet seen here, and again after, since a full CQ stops a harvest.
    pub(super) fn sync_direct_cq(
        &mut self,
        env: &mut impl NvmeBackend,
        cq_id: usize,
        work: &mut Work,
    ) {
        self.harvest(env, cq_id, work);
        if self.shadow.is_some() {
            let before = self.cqs[cq_id].map(|cq| cq.head);
            self.read_shadow_head(env, cq_id);
            if self.cqs[cq_id].map(|cq| cq.head) != before {
                self.release_direct_head(env, cq_id);
                self.harvest(env, cq_id, work);
            }
        }
    }

    /// Forwards direct CQ `cq_id`'s head to the controller; returns the SQ whose queue it
    /// is (None if the CQ is not direct).
    pub(super) fn release_direct_head(
        &mut self,
        env: &mut impl NvmeBackend,
        cq_id: usize,
    ) -> Option<u16> {
        let cq = self.cqs[cq_id]?;
        let sq = cq.direct?;
        env.release_cq(self.hw[usize::from(sq) - 1].qid, cq.head);
        Some(sq)
    }

    /// Direct queue `index` can take one more command: a free slot, and room in the guest's
    /// CQ for its completion besides every completion still in flight or not yet consumed.
    /// With shadow doorbells, a completion due where the CQ's EventIdx sits first moves the
    /// EventIdx behind the head the last exit read (the guest would ring on consuming it);
    /// that undoes an ask, which `fetch_io` makes again if commands wait for room later.
    pub(super) fn direct_room(
        &mut self,
        env: &mut impl NvmeBackend,
        index: usize,
        cq_id: usize,
    ) -> bool {
        let hw = &self.hw[index];
        let busy = hw.slots.len() - hw.free.len();
        let Some(cq) = self.cqs[cq_id] else {
            return false;
        };
        if hw.free.is_empty() || usize::from(cq.used()) + busy >= usize::from(cq.size) - 1 {
            return false;
        }
        let next = (usize::from(cq.tail) + busy) % usize::from(cq.size);
        if self.shadow.is_some() && next == usize::from(cq.event) {
            self.event_behind_head(env, cq_id);
        }
        true
    }

    /// Whether a Read in flight on any hardware queue may write the host physical page
    /// `page`: its PRP Entry 1, Entry 2, or an entry of its PRP list in the slot's DMA page.
    fn reads_into(&self, env: &mut impl NvmeBackend, page: u64) -> bool {
        let on_page = |pa: u64| pa & !(PAGE_SIZE - 1) == page;
        for hw in &self.hw {
            for (slot, state) in hw.slots.iter().enumerate() {
                let Slot::InFlight {
                    transfer: Transfer::Read { bytes },
                    prps: (prp1, prp2),
                    ..
                } = *state
                else {
                    continue;
                };
                let first = bytes.min(PAGE_SIZE - (prp1 & PAGE_MASK));
                let pages = (bytes - first).div_ceil(PAGE_SIZE);
                if on_page(prp1) || (pages == 1 && on_page(prp2)) {
                    return true;
                }
                if pages > 1 {
                    let list = env.dma_page(hw.qid, slot as u16);
                    let touched = list
                        .bytes
                        .chunks_exact(8)
                        .take(pages as usize)
                        .any(|e| on_page(u64::from_le_bytes(e.try_into().unwrap_or_default())));
                    if touched {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Whether a command with Command Identifier `cid` is in flight on queue `index`.
    pub(super) fn cid_in_flight(&self, index: usize, cid: u16) -> bool {
        self.hw[index]
            .slots
            .iter()
            .any(|s| matches!(s, Slot::InFlight { cid: c, .. } if *c == cid))
    }

    /// Hardware queue `queue`'s interrupt reached the hypervisor while its CQ is the guest's
    /// (nothing routes it to the guest directly): the entries are harvested, more commands
    /// fetched if that freed slots, and the guest's CQ vector signalled. Returns the entries
    /// harvested; a queue that is not direct is left alone (0).
    pub fn direct_interrupt(&mut self, env: &mut impl NvmeBackend, queue: u16) -> usize {
        let Some(index) = self.hardware_queue_index(queue) else {
            return 0;
        };
        let Some(cq_id) = self.hw[index].direct else {
            return 0;
        };
        let mut work = Work::default();
        let found = self.harvest(env, usize::from(cq_id), &mut work);
        if let Some(cq) = self.cqs[usize::from(cq_id)]
            && cq.interrupts
        {
            work.vectors |= 1 << cq.vector;
        }
        self.finish(env, work);
        found
    }
}

impl VirtualNvme {
    /// Each hardware queue (physical queue ID) with the MSI-X message its completions stand
    /// for when they may reach the guest without the hypervisor: while the queue is direct,
    /// its guest CQ has interrupts enabled, and MSI-X is enabled with the CQ's vector
    /// unmasked (decision 5, step 3: the kernel links the hardware event to the guest's
    /// translation of that message). `None` otherwise: the interrupt must come to the
    /// hypervisor ([`Self::direct_interrupt`]), which signals the vector or sets its pending
    /// bit.
    pub fn direct_routes(&self) -> impl Iterator<Item = (u16, Option<MsiMessage>)> + '_ {
        self.hw.iter().map(|hw| {
            let cq = hw
                .direct
                .and_then(|cq| self.cqs.get(usize::from(cq)).copied().flatten());
            let message = cq
                .filter(|cq| cq.interrupts)
                .and_then(|cq| self.msix.unmasked_message(cq.vector));
            (hw.qid, message)
        })
    }
}

fn read_dword(env: &mut impl NvmeBackend, at: Ipa) -> Option<u32> {
    let mut raw = [0u8; 4];
    env.read_guest(at, &mut raw).ok()?;
    Some(u32::from_le_bytes(raw))
}

/// The phase tag of a completion's status dword (bit 16).
fn phase(dw3: u32) -> bool {
    dw3 & 1 << 16 != 0
}
