//! Shadow doorbells (Doorbell Buffer Config): the guest writes tails and heads to a page of
//! its RAM and rings only when the controller's EventIdx asks for it, the way Linux's
//! `nvme_dbbuf_update_and_check_event` does.

use super::*;

pub(super) const DOORBELLS: u64 = RAM_IPA + 0x30_0000;
pub(super) const EVENT_INDEXES: u64 = RAM_IPA + 0x30_1000;

/// Linux's `nvme_dbbuf_need_event`: ring if the update from `old` to `new` passed `event`.
pub(super) fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

pub(super) fn dbbc(s: &mut Slice, doorbells: u64, event_indexes: u64) -> Status {
    s.admin_status(SubmissionEntry {
        prp1: doorbells.into(),
        prp2: event_indexes.into(),
        ..cmd(op::DOORBELL_BUFFER_CONFIG)
    })
}

fn u32_at(s: &mut Slice, ipa: u64) -> u32 {
    u32::from_le_bytes(s.node.ram_at(ipa, 4).try_into().unwrap())
}

pub(super) fn event_index(s: &mut Slice, index: u64) -> u16 {
    u32_at(s, EVENT_INDEXES + 4 * index) as u16
}

impl Slice {
    /// Writes SQ `qid`'s tail to its shadow doorbell and rings only if EventIdx asks.
    pub(super) fn shadow_ring(&mut self, qid: u16, old: u16) -> bool {
        let tail = self.sq[usize::from(qid)].unwrap().tail;
        let at = DOORBELLS + 8 * u64::from(qid);
        self.node
            .ram_at(at, 4)
            .copy_from_slice(&u32::from(tail).to_le_bytes());
        let ring = need_event(event_index(self, 2 * u64::from(qid)), tail, old);
        if ring {
            self.ring(qid);
        }
        ring
    }

    /// Writes CQ `qid`'s head to its shadow doorbell; rings only if EventIdx asks.
    pub(super) fn shadow_ack(&mut self, qid: u16, old: u16) -> bool {
        let head = self.cq[usize::from(qid)].unwrap().head;
        let at = DOORBELLS + 8 * u64::from(qid) + 4;
        self.node
            .ram_at(at, 4)
            .copy_from_slice(&u32::from(head).to_le_bytes());
        let ring = need_event(event_index(self, 2 * u64::from(qid) + 1), head, old);
        if ring {
            self.ack(qid);
        }
        ring
    }
}

/// Shadow doorbells on, hardware queues of 16, then I/O SQ 1 of 16 entries posting to CQ 1
/// of `cq_size` entries.
fn with_shadows(cq_size: u16) -> Slice {
    let mut config = config();
    config.queues.depth = 16;
    let mut s = Slice::with(config);
    s.enable();
    s.enable_msix();
    assert_eq!(dbbc(&mut s, DOORBELLS, EVENT_INDEXES), Status::SUCCESS);
    assert_eq!(s.create_cq(1, cq_size, 1), Status::SUCCESS);
    assert_eq!(s.create_sq(1, 16, 1), Status::SUCCESS);
    s
}

/// I/O SQ 1 of 16 entries posting to CQ 1 of 4 (3 usable).
fn small_cq_with_shadows() -> Slice {
    with_shadows(4)
}

#[test]
fn identify_offers_it_and_bad_buffers_are_refused() {
    let mut s = Slice::ready();
    for (doorbells, event_indexes) in [
        (DOORBELLS + 8, EVENT_INDEXES),
        (DOORBELLS, EVENT_INDEXES + 0x800),
        (DOORBELLS, DOORBELLS),
        (RAM_IPA + RAM_SIZE, EVENT_INDEXES),
        (DOORBELLS, RAM_IPA + RAM_SIZE - 0x800),
        (DOORBELLS, 0),
        (!0xfff, EVENT_INDEXES),
    ] {
        assert_eq!(
            dbbc(&mut s, doorbells, event_indexes),
            Status::INVALID_FIELD,
            "{doorbells:#x} {event_indexes:#x}"
        );
    }
    assert!(s.ctrl.shadow.is_none());
    s.node.ram_at(EVENT_INDEXES, 4096).fill(0xee);
    assert_eq!(dbbc(&mut s, DOORBELLS, EVENT_INDEXES), Status::SUCCESS);
    // Existing queues: SQ EventIdx = its tail (0), CQ EventIdx just behind its head (0).
    for qid in 1..=2 {
        let size = s.cq[qid as usize].unwrap().size;
        assert_eq!(event_index(&mut s, 2 * qid), 0);
        assert_eq!(event_index(&mut s, 2 * qid + 1), size - 1);
    }
    assert_eq!(
        u32_at(&mut s, EVENT_INDEXES),
        0xeeee_eeee,
        "admin queue untouched"
    );
    s.assert_clean();
}

#[test]
fn completions_flow_without_cq_head_doorbells() {
    let mut s = Slice::ready();
    assert_eq!(dbbc(&mut s, DOORBELLS, EVENT_INDEXES), Status::SUCCESS);
    let mut cq_rings = 0;
    let mut sq_rings = 0;
    // Ten rounds over a 4-entry queue: the heads wrap several times.
    for round in 0..10u64 {
        let old = s.sq[1].unwrap().tail;
        let cid = s.push(1, rw(io_op::READ, round, 1, DATA, 0));
        sq_rings += usize::from(s.shadow_ring(1, old));
        s.node.run(&mut s.ctrl);
        let old = s.cq[1].unwrap().head;
        let cqe = s.pop(1).expect("completion posted");
        assert_eq!(
            (cqe.command_id.get(), status_of(&cqe)),
            (cid, Status::SUCCESS)
        );
        cq_rings += usize::from(s.shadow_ack(1, old));
    }
    assert_eq!(
        sq_rings, 10,
        "every new tail rings: nothing was outstanding when it was queued"
    );
    // The EventIdx stays behind the head, so even the wraps of the head to 0 (a move over
    // every u16 value above the old head, in the host's arithmetic) do not reach it.
    assert_eq!(cq_rings, 0, "CQ head rings");
    s.assert_clean();
}

#[test]
fn a_full_cq_asks_for_a_ring_and_the_shadow_head_makes_room() {
    let mut s = small_cq_with_shadows();
    assert_eq!(
        event_index(&mut s, 3),
        3,
        "set when the CQ is created: behind its head"
    );
    let cids: Vec<u16> = (0..7)
        .map(|i| s.push(1, rw(io_op::READ, i, 1, DATA, 0)))
        .collect();
    assert!(s.shadow_ring(1, 0));
    s.node.run(&mut s.ctrl);
    // Three fit; the controller now asks to hear about the next head move.
    assert_eq!(event_index(&mut s, 3), 0);
    let mut got = Vec::new();
    while got.len() < 7 {
        let old = s.cq[1].unwrap().head;
        let mut popped = 0;
        while let Some(c) = s.pop(1) {
            got.push(c.command_id.get());
            popped += 1;
        }
        assert!(popped > 0, "completions stalled after {got:?}");
        // Asked for, so the guest rings: the doorbell flushes what waited.
        assert!(s.shadow_ack(1, old) || got.len() == 7);
    }
    assert_eq!(got, cids, "every completion, in order, none overwritten");
    s.assert_clean();
}

#[test]
fn a_shadow_head_is_found_without_a_ring_when_the_cq_fills() {
    let mut s = small_cq_with_shadows();
    let mut got = Vec::new();
    for i in 0..3 {
        let old = s.sq[1].unwrap().tail;
        s.push(1, rw(io_op::READ, i, 1, DATA, 0));
        s.shadow_ring(1, old);
        s.node.run(&mut s.ctrl);
    }
    // The guest consumed all three and updated its shadow head; EventIdx said not to ring.
    while let Some(c) = s.pop(1) {
        got.push(c.command_id.get());
    }
    assert!(!s.shadow_ack(1, 0));
    // The CQ is full as far as the controller last heard; the next completion reads the
    // shadow head instead of waiting for a doorbell.
    let old = s.sq[1].unwrap().tail;
    let cid = s.push(1, rw(io_op::READ, 9, 1, DATA, 0));
    s.shadow_ring(1, old);
    s.node.run(&mut s.ctrl);
    assert_eq!(s.pop(1).map(|c| c.command_id.get()), Some(cid));
    assert_eq!(got.len(), 3);
    s.assert_clean();
}

#[test]
fn bogus_shadow_heads_are_ignored_and_a_reset_turns_shadows_off() {
    let mut s = small_cq_with_shadows();
    for i in 0..5 {
        s.push(1, rw(io_op::READ, i, 1, DATA, 0));
    }
    s.ring(1);
    s.node.run(&mut s.ctrl);
    let cq = s.cq[1].unwrap();
    let posted = s.node.ram_at(cq.base, 64).to_vec();
    // The CQ is full, so every head inside the queue is one the guest may write; heads
    // outside it free nothing.
    for head in [4u32, 5, 0xffff, 0xffff_ffff] {
        s.node
            .ram_at(DOORBELLS + 12, 4)
            .copy_from_slice(&head.to_le_bytes());
        s.node.run(&mut s.ctrl);
        let old = s.sq[1].unwrap().tail;
        s.push(1, rw(io_op::READ, 7, 1, DATA, 0));
        s.shadow_ring(1, old);
        s.node.run(&mut s.ctrl);
        assert_eq!(s.node.ram_at(cq.base, 64), &posted[..], "head {head:#x}");
    }
    // CC.EN = 0 and back: the shadow pages are forgotten, queues use their doorbells.
    s.write(0x14, 0);
    s.node.run(&mut s.ctrl);
    assert_eq!(s.csts() & 1, 0);
    s.enable();
    assert!(s.ctrl.shadow.is_none());
    s.node.ram_at(EVENT_INDEXES, 4096).fill(0xee);
    s.create_pair(1, 4);
    assert!(
        s.node
            .ram_at(EVENT_INDEXES, 4096)
            .iter()
            .all(|&b| b == 0xee),
        "no EventIdx written after the reset"
    );
    s.assert_clean();
}

/// I/O SQ 1 and CQ 1 of 16 entries.
fn deep_queues_with_shadows() -> Slice {
    with_shadows(16)
}

/// Queues a read on SQ 1 the way Linux does; returns its CID and whether it rang.
fn submit(s: &mut Slice, block: u64) -> (u16, bool) {
    let old = s.sq[1].unwrap().tail;
    let cid = s.push(1, rw(io_op::READ, block, 1, DATA, 0));
    (cid, s.shadow_ring(1, old))
}

#[test]
fn commands_queued_behind_commands_in_flight_need_no_ring() {
    let mut s = deep_queues_with_shadows();
    let (first, rang) = submit(&mut s, 0);
    assert!(rang, "nothing outstanding: the first tail rings");
    assert_eq!(
        event_index(&mut s, 2),
        0,
        "one in flight: no ring needed (EventIdx behind the fetch head, 1)"
    );
    let mut cids = vec![first];
    for block in 1..4 {
        let (cid, rang) = submit(&mut s, block);
        assert!(!rang, "command {block} queued behind one in flight rang");
        cids.push(cid);
    }
    assert_eq!(
        s.node.submitted.len(),
        1,
        "only the rung command reached the hardware"
    );
    // The first completion's exit finds the three in the shadow tail.
    s.node.run(&mut s.ctrl);
    assert_eq!(s.node.submitted.len(), 4);
    assert_eq!(event_index(&mut s, 2), 3, "behind the fetch head, 4");
    s.node.run(&mut s.ctrl);
    // Nothing outstanding any more: the next tail (4) must ring.
    assert_eq!(event_index(&mut s, 2), 4);
    let (cid, rang) = submit(&mut s, 9);
    assert!(rang);
    cids.push(cid);
    s.node.run(&mut s.ctrl);
    let got: Vec<u16> = s.drain(1).iter().map(|c| c.command_id.get()).collect();
    assert_eq!(got, cids, "every command completed once, in order");
    assert_eq!(
        s.node.rings.len(),
        3,
        "two rings of the guest's, one refill"
    );
    s.assert_clean();
}

#[test]
fn tails_queued_behind_commands_in_flight_need_no_ring_across_wraps() {
    let mut s = deep_queues_with_shadows();
    let (first, rang) = submit(&mut s, 0);
    assert!(rang);
    let (mut sent, mut got, mut rings) = (vec![first], Vec::new(), 0);
    // Always one command or more in flight while the next is queued; the 16-entry SQ and CQ
    // wrap six times.
    for block in 1..100 {
        let (cid, rang) = submit(&mut s, block);
        sent.push(cid);
        rings += usize::from(rang);
        s.node.run(&mut s.ctrl);
        let old = s.cq[1].unwrap().head;
        got.extend(s.pop(1).map(|c| c.command_id.get()));
        assert!(!s.shadow_ack(1, old), "CQ head rang at block {block}");
    }
    s.node.run(&mut s.ctrl);
    got.extend(s.drain(1).iter().map(|c| c.command_id.get()));
    assert_eq!(got, sent, "every command completed once, in order");
    assert_eq!(rings, 0, "SQ tails rang behind commands in flight");
    s.assert_clean();
}

#[test]
fn a_tail_written_while_the_controller_asks_for_rings_again_is_found() {
    let mut s = deep_queues_with_shadows();
    let (first, _) = submit(&mut s, 0);
    // The guest queues a second command and writes its shadow tail just after the
    // controller, finishing the first, stored EventIdx = 1 (so it did not see it and did not
    // ring): the controller's load after its barrier finds it.
    let second = s.push(1, rw(io_op::READ, 1, 1, DATA, 0));
    s.node.at_fence.push_back((DOORBELLS + 8, 2));
    s.node.run(&mut s.ctrl);
    assert_eq!(s.node.fences, 1);
    assert_eq!(
        s.node.submitted.len(),
        2,
        "the second command reached the hardware"
    );
    s.node.run(&mut s.ctrl);
    let got: Vec<u16> = s.drain(1).iter().map(|c| c.command_id.get()).collect();
    assert_eq!(got, [first, second]);
    s.assert_clean();
}

#[test]
fn a_shadow_tail_rewritten_at_every_look_gets_bounded_work() {
    let mut s = deep_queues_with_shadows();
    for block in 0..8 {
        s.push(1, rw(io_op::READ, block, 1, DATA, 0));
    }
    // Another vCPU flips the shadow tail at every barrier, between bogus and real values.
    for i in 0..1000u32 {
        let value = [0, 8, 0xffff, 3, 16, 0xffff_ffff][i as usize % 6];
        s.node.at_fence.push_back((DOORBELLS + 8, value));
    }
    s.ring(1);
    for _ in 0..20 {
        let fences = s.node.fences;
        s.node.run(&mut s.ctrl);
        assert!(
            s.node.fences - fences <= 4,
            "one call took {} looks",
            s.node.fences - fences
        );
        s.drain(1);
    }
    assert!(
        s.node.at_fence.len() > 900,
        "the flipping did not keep the controller busy"
    );
    // Bogus tails (past the queue) are never taken; the hardware saw only checked commands.
    s.assert_clean();
}

/// Doorbell Buffer Config while a CQ is full and a completion waits for room: the CQ's
/// EventIdx asks for the next head update, which the guest now publishes through the shadow
/// (found in review, 2026-12-04: put behind the head, the held completion stayed held).
#[test]
fn doorbell_buffer_config_keeps_a_cq_the_controller_waits_on_asking() {
    let mut config = config();
    config.queues.depth = 16;
    let mut s = Slice::with(config);
    s.enable();
    s.enable_msix();
    s.create_pair(1, 4);
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(s.push(1, rw(io_op::READ, i, 1, DATA, 0)));
    }
    s.ring(1);
    s.node.run(&mut s.ctrl);
    let mut got: Vec<u16> = Vec::new();
    // Handled (tags freed), head not yet written; a fourth command reuses a tag.
    for _ in 0..3 {
        got.push(s.pop(1).unwrap().command_id.get());
    }
    sent.push(s.push(1, rw(io_op::READ, 9, 1, DATA, 0)));
    s.ring(1);
    s.node.run(&mut s.ctrl);
    assert!(
        s.pop(1).is_none(),
        "held: the CQ is full as far as the controller knows"
    );
    assert_eq!(dbbc(&mut s, DOORBELLS, EVENT_INDEXES), Status::SUCCESS);
    assert_eq!(event_index(&mut s, 3), 0, "asks: EventIdx = the head");
    assert!(s.shadow_ack(1, 0), "the head update rings");
    s.node.run(&mut s.ctrl);
    got.extend(s.pop(1).map(|c| c.command_id.get()));
    assert_eq!(got, sent);
    s.assert_clean();
}

/// The barrier and second look after asking for a CQ head ring: the guest publishes a head
/// just after the controller's first look, having read EventIdx before the ask (so it does
/// not ring); the look after the barrier finds it and the held completion is posted.
#[test]
fn a_head_published_while_the_controller_asks_is_found() {
    let mut s = small_cq_with_shadows();
    let cids: Vec<u16> = (0..4)
        .map(|i| s.push(1, rw(io_op::READ, i, 1, DATA, 0)))
        .collect();
    assert!(s.shadow_ring(1, 0));
    s.node.at_fence.push_back((DOORBELLS + 12, 1));
    s.node.run(&mut s.ctrl);
    let got: Vec<u16> = std::iter::from_fn(|| s.pop(1))
        .map(|c| c.command_id.get())
        .collect();
    assert_eq!(got, cids, "the held completion was posted at once");
    s.assert_clean();
}
