//! Queue indexes and phase tags over many passes through the queues, completions for other
//! commands, and the ordering the driver owes the device.

use super::*;

#[test]
fn admin_completion_queue_phase_wraps_over_several_laps() {
    // 3 commands at bring-up and 2 per pair: 3 + 2 * 60 = 123 commands, almost four passes
    // through the 32-entry admin queues.
    let mut node = Node::new(Behaviour {
        grant: Some((63, 63)),
        ..Behaviour::default()
    });
    let mut controller = node.bring_up(NEEDS).unwrap();
    for id in 1..=60 {
        let pair = controller
            .create_queue_pair(&mut node.memory, id, 2, id, 0x0808_0040, u32::from(id))
            .unwrap();
        assert_eq!(pair.id(), id);
    }
    let world = node.world.borrow();
    assert_eq!(world.device.admin_log.len(), 123);
    assert_eq!(world.device.cqs.len(), 61);
    assert_eq!(world.device.sqs.len(), 61);
    // Every command identifier is fresh: 0, 1, 2, ...
    let cids: Vec<u16> = world
        .device
        .admin_log
        .iter()
        .map(|c| c.command_id.get())
        .collect();
    assert!(
        cids.iter()
            .enumerate()
            .all(|(i, &cid)| usize::from(cid) == i)
    );
    // The host consumed every completion: the admin CQ head is where the device wrote last.
    let cq = world.device.cqs[&0];
    assert_eq!(cq.head, cq.tail);
    assert_eq!(cq.tail, 123 % 32);
    assert!(world.violations.is_empty(), "{:?}", world.violations);
}

#[test]
fn io_completion_queue_phase_wraps_over_several_laps() {
    let (mut node, mut controller) = up();
    let mut pair = controller
        .create_queue_pair(&mut node.memory, 1, 4, 1, 0, 0)
        .unwrap();
    // Batches of 1 to 3 commands (at most entries - 1 in flight), 40 in all: ten passes.
    let mut next_cid = 0u16;
    let mut seen = Vec::new();
    let mut batches = (1..=3).cycle();
    while next_cid < 40 {
        for _ in 0..batches.next().unwrap() {
            pair.push(&SubmissionEntry {
                opcode: 0x02,
                command_id: next_cid.into(),
                ..SubmissionEntry::default()
            });
            next_cid += 1;
        }
        controller.ring_submission(&pair);
        assert!(pair.pop().is_none(), "nothing before the device answers");
        node.world.borrow_mut().advance(1);
        while let Some(done) = pair.pop() {
            assert!(done.status().is_success());
            assert_eq!(done.sq_id.get(), 1);
            seen.push(done.command_id.get());
        }
        controller.ring_completion(&pair);
        assert!(
            pair.pop().is_none(),
            "old entries are not taken for new ones"
        );
    }
    assert_eq!(seen, (0..next_cid).collect::<Vec<_>>());
    let world = node.world.borrow();
    assert_eq!(world.device.io_log.len(), usize::from(next_cid));
    assert!(world.violations.is_empty(), "{:?}", world.violations);
}

#[test]
fn a_completion_for_another_command_is_skipped() {
    // Every Identify and every queue creation is preceded by a completion (with an error
    // status) for a command identifier the driver is not waiting for.
    let mut node = Node::new(Behaviour {
        stale_before: [0x06, 0x05, 0x01].into(),
        ..Behaviour::default()
    });
    let mut controller = node.bring_up(NEEDS).unwrap();
    controller
        .create_queue_pair(&mut node.memory, 1, 64, 1, 0, 0)
        .unwrap();
    assert_eq!(controller.info.lba_shift, 12);
    let world = node.world.borrow();
    assert_eq!(world.device.stale_posted, 4);
    let cq = world.device.cqs[&0];
    assert_eq!(cq.head, 5 + 4, "stale completions consumed too");
    assert!(world.violations.is_empty(), "{:?}", world.violations);
}

#[test]
fn a_flood_of_other_completions_ends_at_the_timeout() {
    let mut node = Node::new(Behaviour {
        cap: cap(2047, 2, 0, 1, 0),
        flood: [0x09].into(),
        ..Behaviour::default()
    });
    let start = node.now();
    assert_eq!(
        node.bring_up(NEEDS).err(),
        Some(NvmeError::Timeout { opcode: 0x09 })
    );
    assert!(node.now() - start < 1100, "gave up after 1 s");
    let left = node.world.borrow().device.pending.len();
    assert!(
        FLOOD - left > 500,
        "it consumed them meanwhile ({left} left)"
    );
}

#[test]
fn doorbells_are_rung_only_after_the_entries_are_published() {
    // The fake's checks can fail: a doorbell without publishing, and a completion read
    // without ordering, are both reported.
    let (node, controller) = up();
    let mut memory = TestMemory(node.world.clone());
    let mut sq = memory.cpu_written(64).unwrap();
    sq.write(0, &[0; 64]);
    FakeBar(node.world.clone()).write32(0x1000, 0);
    let cq = memory.device_written(64).unwrap();
    let _ = cq.read_u32(12);
    let _ = cq.read(0, &mut [0; 16]);
    let violations = node.violations();
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations[0].contains("before its entries were published"));
    assert!(violations[1].contains("not ordered after the phase tag"));
    drop(controller);
}

/// Decision 5 moves a hardware queue pair at run time: deleted (what is in flight comes back
/// aborted, before the deletion completes) and created again with memory the caller chose.
#[test]
fn a_deleted_pair_writes_nothing_more_and_can_be_created_elsewhere() {
    let (mut node, mut controller) = up();
    let mut pair = controller
        .create_queue_pair(&mut node.memory, 1, 8, 1, 0, 0)
        .unwrap();
    for cid in 0..3u16 {
        pair.push(&SubmissionEntry {
            opcode: 0x02,
            command_id: cid.into(),
            ..SubmissionEntry::default()
        });
    }
    controller.ring_submission(&pair);
    assert!(pair.pop().is_none(), "the reads take a while");
    controller.delete_queue_pair(1).unwrap();
    // The three reads were answered before the Delete I/O SQ completed, aborted.
    let mut aborted = Vec::new();
    while let Some(done) = pair.pop() {
        assert_eq!(done.status.get() >> 1, ABORTED_SQ_DELETION);
        aborted.push(done.command_id.get());
    }
    assert_eq!(aborted, [0, 1, 2]);
    let log = node.admin_commands();
    assert_eq!(log[log.len() - 2..], [(0x00, 1, 0), (0x04, 1, 0)]);
    {
        let mut world = node.world.borrow_mut();
        assert!(!world.device.sqs.contains_key(&1) && !world.device.cqs.contains_key(&1));
        // Nothing is written for the pair afterwards, however long it takes.
        let before = world.ram.clone();
        world.advance(100);
        assert!(world.ram == before, "the device wrote after the deletion");
    }
    // Created again in other memory: the same ID works as before.
    let mut moved = QueuePair::new(1, 8, &mut node.memory).unwrap();
    controller
        .create_io_queues(1, 8, 1, moved.cq_address(), moved.sq_address())
        .unwrap();
    moved.push(&SubmissionEntry {
        opcode: 0x02,
        command_id: 7.into(),
        ..SubmissionEntry::default()
    });
    controller.ring_submission(&moved);
    node.world.borrow_mut().advance(1);
    let done = moved.pop().expect("a completion in the new queue");
    assert!(done.status().is_success());
    assert_eq!(done.command_id.get(), 7);
    assert_eq!(node.violations(), Vec::<String>::new());
}

#[test]
fn queue_deletion_and_creation_failures_are_reported_and_leave_nothing_half_made() {
    let (mut node, controller) = up();
    // Nothing to delete.
    assert!(matches!(
        controller.delete_queue_pair(3),
        Err(NvmeError::Command { opcode: 0x00, status }) if status == INVALID_QUEUE_ID
    ));
    // An SQ the controller refuses (outside its memory): the CQ created first is deleted.
    let cq = QueuePair::new(2, 4, &mut node.memory).unwrap().cq_address();
    assert!(matches!(
        controller.create_io_queues(2, 4, 2, cq, 0xdead_0000_0000),
        Err(NvmeError::Command { opcode: 0x01, .. })
    ));
    assert_eq!(node.admin_commands().last().map(|c| c.0), Some(0x04));
    let world = node.world.borrow();
    assert!(!world.device.cqs.contains_key(&2));
    assert!(!world.device.sqs.contains_key(&2));
    drop(world);
    // Sizes and vectors the controller cannot have are refused before any command.
    let commands = node.world.borrow().device.admin_log.len();
    assert!(controller.create_io_queues(2, 1, 2, cq, cq).is_err());
    assert!(controller.create_io_queues(2, 4, 4096, cq, cq).is_err());
    assert_eq!(node.world.borrow().device.admin_log.len(), commands);
}

/// Decision 5's move, whole: a pair's CQ lent to other memory (a slice's CQ) and taken back.
/// The controller writes the lent CQ, its head is released through the doorbell, and back in
/// its own memory the pair starts over: no entry of its earlier life (at odd positions and
/// phases after some passes) passes for a new one.
#[test]
fn a_pair_lends_its_completion_queue_and_takes_it_back() {
    let (mut node, mut controller) = up();
    let mut pair = controller
        .create_queue_pair(&mut node.memory, 1, 4, 1, 0, 0)
        .unwrap();
    let read = |cid: u16| SubmissionEntry {
        opcode: 0x02,
        command_id: cid.into(),
        ..SubmissionEntry::default()
    };
    // Five commands, one at a time: the CQ's phase is 0 from entry 1 on when it is lent.
    for cid in 0..5u16 {
        pair.push(&read(cid));
        controller.ring_submission(&pair);
        node.world.borrow_mut().advance(1);
        assert_eq!(pair.pop().unwrap().command_id.get(), cid);
        controller.ring_completion(&pair);
    }
    let lent = QueuePair::new(9, 4, &mut node.memory).unwrap().cq_address();
    controller
        .recreate_queue_pair(&mut pair, 1, Some(lent))
        .unwrap();
    assert_eq!(node.world.borrow().device.cqs[&1].base, lent);
    for cid in [10u16, 11] {
        pair.push(&read(cid));
    }
    controller.ring_submission(&pair);
    node.world.borrow_mut().advance(1);
    assert!(
        pair.pop().is_none(),
        "the entries are where the CQ was lent"
    );
    let at = |n: u64| (lent - RAM_BASE + 16 * n) as usize;
    {
        let world = node.world.borrow();
        for (n, cid) in [(0u64, 10u16), (1, 11)] {
            let entry = CompletionEntry::read_from_bytes(&world.ram[at(n)..at(n) + 16]).unwrap();
            assert_eq!((entry.command_id.get(), entry.phase()), (cid, true));
            assert_eq!(entry.sq_head.get(), n as u16 + 1, "the SQ starts over at 0");
        }
    }
    controller.release_completions(1, 2);
    assert_eq!(node.world.borrow().device.cqs[&1].head, 2);
    controller.recreate_queue_pair(&mut pair, 1, None).unwrap();
    assert_eq!(
        node.world.borrow().device.cqs[&1].base,
        pair.cq_address(),
        "back in its own memory"
    );
    assert!(pair.pop().is_none(), "nothing of the earlier passes is new");
    pair.push(&read(20));
    controller.ring_submission(&pair);
    node.world.borrow_mut().advance(1);
    assert_eq!(pair.pop().unwrap().command_id.get(), 20);
    assert!(pair.pop().is_none());
    assert_eq!(node.violations(), Vec::<String>::new());
}

/// A pair whose move failed half-way (the new CQ refused: nothing of the pair exists) can
/// still be created again in its own memory.
#[test]
fn a_pair_that_failed_to_move_can_be_created_again() {
    let (mut node, mut controller) = up();
    let mut pair = controller
        .create_queue_pair(&mut node.memory, 1, 4, 1, 0, 0)
        .unwrap();
    assert!(matches!(
        controller.recreate_queue_pair(&mut pair, 1, Some(0xdead_0000_0000)),
        Err(NvmeError::Command { opcode: 0x05, .. })
    ));
    assert!(!node.world.borrow().device.cqs.contains_key(&1));
    controller.recreate_queue_pair(&mut pair, 1, None).unwrap();
    pair.push(&SubmissionEntry {
        opcode: 0x02,
        command_id: 3.into(),
        ..SubmissionEntry::default()
    });
    controller.ring_submission(&pair);
    node.world.borrow_mut().advance(1);
    assert_eq!(pair.pop().unwrap().command_id.get(), 3);
    // The refused CQ (memory the fake controller cannot reach) is the only complaint.
    assert_eq!(node.violations().len(), 1);
}
