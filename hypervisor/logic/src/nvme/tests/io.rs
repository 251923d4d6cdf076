//! The I/O path end to end: doorbells, validation, submission, completion delivery.

use super::*;

fn fill(slice: &mut Slice, ipa: u64, len: usize, seed: u8) {
    for (i, b) in slice.node.ram_at(ipa, len).iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8).wrapping_mul(31);
    }
}

fn put_u64(slice: &mut Slice, ipa: u64, value: u64) {
    slice
        .node
        .ram_at(ipa, 8)
        .copy_from_slice(&value.to_le_bytes());
}

#[test]
fn write_then_read_back_lands_in_the_share() {
    let mut s = Slice::ready();
    fill(&mut s, DATA, 4096, 7);
    let cid = s.push(1, rw(io_op::WRITE, 5, 8, DATA, 0));
    s.ring(1);
    assert_eq!(s.node.rings, [3], "hardware queue 3 rung once");
    assert_eq!(s.node.run(&mut s.ctrl).completed, 1);
    let done = s.drain(1);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].command_id.get(), cid);
    assert_eq!(done[0].sq_id.get(), 1);
    assert_eq!(done[0].sq_head.get(), 1);
    assert!(status_of(&done[0]).is_success());
    let disk_at = ((FIRST_BLOCK + 5) * BLOCK) as usize;
    assert_eq!(
        &s.node.disk[disk_at..disk_at + 4096],
        &s.node.ram[0x10_0000..0x10_1000]
    );
    // Read it back into another buffer, starting 0xe00 into a page: PRP2 is the next page.
    let buf = DATA + 0x2_0000;
    s.push(1, rw(io_op::READ, 4, 9, buf + 0xe00, buf + 0x1000));
    s.ring(1);
    s.node.run(&mut s.ctrl);
    assert!(status_of(&s.drain(1)[0]).is_success());
    let back = s.node.ram_at(buf + 0x1000, 4096).to_vec();
    assert_eq!(&back[..], &s.node.ram[0x10_0000..0x10_1000]);
    s.assert_clean();
}

#[test]
fn one_ring_per_doorbell_write() {
    let mut s = Slice::ready();
    for i in 0..3 {
        s.push(2, rw(io_op::READ, i, 1, DATA + i * 0x1000, 0));
    }
    s.ring(2);
    assert_eq!(s.node.rings, [4]);
    assert_eq!(s.node.outstanding(), 3);
    assert_eq!(s.ctrl.hardware_in_flight(), 3);
    let slots: Vec<u16> = s
        .node
        .submitted
        .iter()
        .map(|(_, c)| c.command_id.get())
        .collect();
    assert_eq!(slots, [0, 1, 2], "hypervisor-chosen CIDs");
    s.node.run(&mut s.ctrl);
    let done = s.drain(2);
    assert_eq!(done.len(), 3);
    assert_eq!(s.node.signals.len(), 1, "one interrupt for the batch");
    assert_eq!(s.node.signals[0].data, 64 + 2);
    assert!(s.ctrl.is_quiescent());
    s.assert_clean();
}

#[test]
fn prp_list_modified_after_the_doorbell() {
    let mut s = Slice::ready();
    let list = DATA + 0x8000;
    let pages = [DATA + 0x1_0000, DATA + 0x1_1000, DATA + 0x1_2000];
    for (i, p) in pages.iter().enumerate() {
        put_u64(&mut s, list + 8 * i as u64, *p);
    }
    fill(&mut s, DATA, 0x1000, 1);
    for p in pages {
        fill(&mut s, p, 0x1000, p as u8);
    }
    s.push(1, rw(io_op::WRITE, 0, 32, DATA, list));
    s.ring(1);
    // The guest (or another of its vCPUs) rewrites its list to point at the hypervisor and
    // another slice before the device gets to it.
    put_u64(&mut s, list, 0x4000);
    put_u64(&mut s, list + 8, 0x9_0000_0000);
    put_u64(&mut s, list + 16, RAM_PA);
    s.node.run(&mut s.ctrl);
    assert!(status_of(&s.drain(1)[0]).is_success());
    s.assert_clean();
    let disk_at = (FIRST_BLOCK * BLOCK) as usize;
    for (i, p) in pages.iter().enumerate() {
        let at = disk_at + 0x1000 * (i + 1);
        let page = s.node.ram_at(*p, 0x1000).to_vec();
        assert_eq!(
            &s.node.disk[at..at + 0x1000],
            &page[..],
            "page {i} from the copy"
        );
    }
}

#[test]
fn refused_commands_complete_in_the_guest_cq_and_never_reach_the_device() {
    let mut s = Slice::ready();
    let outside = [
        (
            rw(io_op::READ, 0, 1, 0x3000_0000, 0),
            Status::DATA_TRANSFER_ERROR,
        ),
        (rw(io_op::READ, 0x800, 1, DATA, 0), Status::LBA_OUT_OF_RANGE),
        (
            SubmissionEntry {
                nsid: 2.into(),
                ..rw(io_op::READ, 0, 1, DATA, 0)
            },
            Status::INVALID_NAMESPACE,
        ),
        (
            SubmissionEntry {
                opcode: io_op::COMPARE,
                ..rw(io_op::READ, 0, 1, DATA, 0)
            },
            Status::INVALID_OPCODE,
        ),
        (
            SubmissionEntry {
                flags: 0x40,
                ..rw(io_op::READ, 0, 1, DATA, 0)
            },
            Status::INVALID_FIELD,
        ),
    ];
    for (i, (command, status)) in outside.iter().enumerate() {
        let cid = s.push(1, *command);
        s.ring(1);
        let done = s.drain(1);
        assert_eq!(done.len(), 1, "completed without the device");
        assert_eq!(done[0].command_id.get(), cid);
        assert_eq!(done[0].sq_id.get(), 1);
        assert_eq!(done[0].sq_head.get(), (i as u16 + 1) % 4);
        assert_eq!(status_of(&done[0]), *status);
    }
    assert!(s.node.submitted.is_empty());
    assert!(s.node.rings.is_empty());
    assert_eq!(s.node.signals.len(), 5);
    assert!(s.ctrl.is_quiescent());
    s.assert_clean();
}

#[test]
fn every_refused_io_opcode() {
    let mut s = Slice::ready();
    for opcode in (0..=255u8).filter(|o| ![0, 1, 2, 8, 9].contains(o)) {
        s.push(
            1,
            SubmissionEntry {
                opcode,
                ..rw(io_op::READ, 0, 1, DATA, 0)
            },
        );
        s.ring(1);
        let done = s.drain(1);
        assert_eq!(status_of(&done[0]), Status::INVALID_OPCODE, "{opcode:#x}");
    }
    assert!(s.node.submitted.is_empty());
}

#[test]
fn no_free_slot_stops_fetching_until_one_frees() {
    let mut config = config();
    config.queues.depth = 4; // 3 slots
    let mut s = Slice::with(config);
    s.enable();
    s.enable_msix();
    s.create_pair(1, 4);
    for i in 0..3 {
        s.push(1, rw(io_op::READ, i, 1, DATA + i * 0x1000, 0));
    }
    s.ring(1);
    assert_eq!(s.node.submitted.len(), 3);
    // The guest's SQ is empty again (head 3): it queues two more, which find no slot.
    s.push(1, rw(io_op::READ, 3, 1, DATA, 0));
    s.push(1, rw(io_op::READ, 4, 1, DATA, 0));
    s.ring(1);
    assert_eq!(s.node.submitted.len(), 3, "no slot: not fetched");
    // The device completes the first three; the CQ (3 usable entries) takes them, slots free
    // up and the waiting two are fetched and submitted with one more ring.
    s.node.run(&mut s.ctrl);
    assert_eq!(s.node.submitted.len(), 5);
    assert_eq!(s.node.rings, [3, 3]);
    let done = s.drain(1);
    assert_eq!(done.len(), 3);
    assert_eq!(
        done[2].sq_head.get(),
        3,
        "posted before the waiting two were fetched"
    );
    s.node.run(&mut s.ctrl);
    let done = s.drain(1);
    assert_eq!(done.len(), 2);
    assert_eq!(done[1].sq_head.get(), 1);
    s.assert_clean();
}

#[test]
fn full_guest_cq_holds_completions_back() {
    let mut config = config();
    config.queues.depth = 16;
    let mut s = Slice::with(config);
    s.enable();
    s.enable_msix();
    assert_eq!(s.create_cq(1, 4, 1), Status::SUCCESS); // 3 usable entries
    assert_eq!(s.create_sq(1, 16, 1), Status::SUCCESS);
    let mut cids = Vec::new();
    for i in 0..7 {
        cids.push(s.push(1, rw(io_op::READ, i, 1, DATA, 0)));
    }
    s.ring(1);
    let summary = s.node.run(&mut s.ctrl);
    assert_eq!(summary.completed, 7);
    // Only three fit; the fourth slot of the ring stays untouched (phase still 0).
    let cq = s.cq[1].unwrap();
    let untouched = s.node.ram_at(cq.base + 3 * 16, 16).to_vec();
    assert!(untouched.iter().all(|&b| b == 0));
    assert_eq!(
        s.ctrl.hardware_in_flight(),
        0,
        "the device is done with all seven"
    );
    let first = [s.pop(1).unwrap(), s.pop(1).unwrap(), s.pop(1).unwrap()];
    assert!(s.pop(1).is_none());
    // Consuming without telling the controller changes nothing.
    let writes = s.node.guest_writes;
    s.node.run(&mut s.ctrl);
    assert_eq!(s.node.guest_writes, writes);
    s.ack(1);
    let mut rest = s.drain(1);
    rest.extend(s.drain(1));
    rest.extend(s.drain(1));
    let order: Vec<u16> = first
        .iter()
        .chain(&rest)
        .map(|c| c.command_id.get())
        .collect();
    assert_eq!(order, cids, "every completion, in order, none overwritten");
    s.assert_clean();
}

#[test]
fn phase_tag_wraps() {
    let mut s = Slice::ready();
    let mut phases = Vec::new();
    for i in 0..10u64 {
        s.push(1, rw(io_op::READ, i, 1, DATA, 0));
        s.ring(1);
        s.node.run(&mut s.ctrl);
        let c = s.drain(1);
        assert_eq!(c.len(), 1, "completion {i}");
        phases.push(c[0].phase());
    }
    // A 4-entry CQ: phase 1 for the first pass, 0 for the second, ...
    assert_eq!(
        phases,
        [
            true, true, true, true, false, false, false, false, true, true
        ]
    );
}

#[test]
fn sq_and_doorbell_wrap_around() {
    let mut s = Slice::ready();
    for round in 0..5u64 {
        for i in 0..3 {
            s.push(2, rw(io_op::WRITE, round * 3 + i, 1, DATA, 0));
        }
        s.ring(2);
        s.node.run(&mut s.ctrl);
        assert_eq!(s.drain(2).len(), 3, "round {round}");
    }
    assert_eq!(s.node.submitted.len(), 15);
    s.assert_clean();
}

#[test]
fn masked_vector_is_pending_until_unmasked() {
    let mut s = Slice::ready();
    s.write(0x2000 + 16 + 12, 1); // mask vector 1
    s.push(1, rw(io_op::READ, 0, 1, DATA, 0));
    s.ring(1);
    s.node.run(&mut s.ctrl);
    assert!(s.node.signals.is_empty());
    assert_eq!(s.read(0x3000), 0b10, "PBA");
    s.write(0x2000 + 16 + 12, 0);
    assert_eq!(s.node.signals.len(), 1);
    assert_eq!(s.node.signals[0].vector, 1);
    assert_eq!(s.node.signals[0].address, MSI_ADDRESS);
    assert_eq!(s.read(0x3000), 0);
}

#[test]
fn polled_queue_sends_no_interrupt() {
    let mut s = Slice::with(config());
    s.enable();
    s.enable_msix();
    let base = IO_QUEUES + 0x2_0000 + 0x4_0000;
    let status = s.admin_status(SubmissionEntry {
        prp1: base.into(),
        cdw10: (3 << 16 | 1).into(),
        cdw11: 1.into(), // PC, no IEN
        ..cmd(op::CREATE_IO_CQ)
    });
    assert_eq!(status, Status::SUCCESS);
    s.cq[1] = Some(GuestCq {
        base,
        size: 4,
        head: 0,
        phase: true,
    });
    assert_eq!(s.create_sq(1, 4, 1), Status::SUCCESS);
    s.node.signals.clear();
    s.push(1, rw(io_op::READ, 0, 1, DATA, 0));
    s.ring(1);
    s.node.run(&mut s.ctrl);
    assert_eq!(s.drain(1).len(), 1);
    assert!(s.node.signals.is_empty());
}

#[test]
fn dataset_management_ranges_go_through_the_dma_page() {
    let mut s = Slice::ready();
    let disk_at = |lba: u64| ((FIRST_BLOCK + lba) * BLOCK) as usize;
    s.node.disk[disk_at(10)..disk_at(12)].fill(0xaa);
    let ranges = DATA + 0x3000;
    let r = DsmRange {
        attributes: 0.into(),
        length: 2.into(),
        slba: 10.into(),
    };
    s.node.ram_at(ranges, 16).copy_from_slice(r.as_bytes());
    s.push(
        1,
        SubmissionEntry {
            opcode: io_op::DATASET_MANAGEMENT,
            nsid: 1.into(),
            prp1: ranges.into(),
            cdw11: 4.into(),
            ..SubmissionEntry::default()
        },
    );
    s.ring(1);
    // Changing the ranges after the doorbell reaches nothing.
    let evil = DsmRange {
        attributes: 0.into(),
        length: 0x1000.into(),
        slba: 0.into(),
    };
    s.node.ram_at(ranges, 16).copy_from_slice(evil.as_bytes());
    s.node.run(&mut s.ctrl);
    assert!(status_of(&s.drain(1)[0]).is_success());
    assert!(
        s.node.disk[disk_at(10)..disk_at(12)]
            .iter()
            .all(|&b| b == 0)
    );
    s.assert_clean();
}

#[test]
fn write_zeroes_and_flush() {
    let mut s = Slice::ready();
    let at = ((FIRST_BLOCK + 0x7ff) * BLOCK) as usize;
    s.node.disk[at..at + 512].fill(0x11);
    s.push(
        1,
        SubmissionEntry {
            cdw12: 0.into(),
            ..rw(io_op::WRITE_ZEROES, 0x7ff, 1, 0, 0)
        },
    );
    s.push(
        1,
        SubmissionEntry {
            opcode: io_op::FLUSH,
            nsid: 0xffff_ffff.into(),
            ..SubmissionEntry::default()
        },
    );
    s.ring(1);
    s.node.run(&mut s.ctrl);
    let done = s.drain(1);
    assert!(done.iter().all(|c| status_of(c).is_success()));
    assert!(s.node.disk[at..at + 512].iter().all(|&b| b == 0));
    assert_eq!(
        s.node.submitted[1].1.nsid.get(),
        7,
        "broadcast flush on the physical NSID"
    );
    s.assert_clean();
}

#[test]
fn write_cache_disabled_by_the_guest_forces_fua() {
    let mut s = Slice::ready();
    let off = s.admin_status(SubmissionEntry {
        cdw10: 0x06.into(),
        cdw11: 0.into(),
        ..cmd(op::SET_FEATURES)
    });
    assert_eq!(off, Status::SUCCESS);
    s.push(1, rw(io_op::WRITE, 0, 1, DATA, 0));
    s.ring(1);
    assert_ne!(s.node.submitted[0].1.cdw12.get() & 1 << 30, 0);
}

#[test]
fn delete_sq_waits_for_its_commands() {
    let mut s = Slice::ready();
    let cid = s.push(1, rw(io_op::READ, 0, 1, DATA, 0));
    s.ring(1);
    let delete = s.push(
        0,
        SubmissionEntry {
            cdw10: 1.into(),
            ..cmd(op::DELETE_IO_SQ)
        },
    );
    s.ring(0);
    assert!(
        s.pop(0).is_none(),
        "delete waits for the read in the device"
    );
    // Deleting the CQ meanwhile is refused: the SQ still exists.
    assert_eq!(s.delete_cq(1), Status::INVALID_QUEUE_DELETION);
    s.node.run(&mut s.ctrl);
    let io = s.drain(1);
    assert_eq!(io[0].command_id.get(), cid);
    let done = s.drain(0);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].command_id.get(), delete);
    assert_eq!(status_of(&done[0]), Status::SUCCESS);
    assert_eq!(s.delete_cq(1), Status::SUCCESS);
    // The deleted queue's doorbell does nothing.
    s.write(doorbell_sq(1), 1);
    assert_eq!(s.node.submitted.len(), 1);
}

#[test]
fn unexpected_hardware_completions_are_ignored() {
    let mut s = Slice::ready();
    let writes = s.node.guest_writes;
    let summary = s.ctrl.hardware_completions(
        &mut s.node,
        3,
        [hardware_completion(3, 0, 0), hardware_completion(3, 500, 0)],
    );
    assert_eq!(summary.unexpected, 2);
    let summary = s
        .ctrl
        .hardware_completions(&mut s.node, 9, [hardware_completion(9, 0, 0)]);
    assert_eq!(summary.unexpected, 1, "not one of the slice's queues");
    assert_eq!(s.node.guest_writes, writes);
}

#[test]
fn hardware_errors_reach_the_guest_and_are_counted() {
    let mut s = Slice::ready();
    s.push(1, rw(io_op::READ, 0, 1, DATA, 0));
    s.ring(1);
    let slot = s.node.device[0].pop_front().unwrap().command_id.get();
    // Unrecovered Read Error (media, SCT 2, SC 81h) with CRD and More set by the device.
    let raw = 1 << 14 | 1 << 13 | 1 << 11 | 2 << 8 | 0x81;
    s.ctrl
        .hardware_completions(&mut s.node, 3, [hardware_completion(3, slot, raw)]);
    let c = s.drain(1);
    let status = status_of(&c[0]);
    assert_eq!((status.code_type(), status.code()), (2, 0x81));
    assert!(status.do_not_retry());
    assert_eq!(status.raw() & (0b111 << 11), 0, "CRD and More cleared");
}

#[test]
fn cancelled_hardware_commands_complete_as_aborted() {
    let mut s = Slice::ready();
    s.push(1, rw(io_op::READ, 0, 1, DATA, 0));
    s.push(1, rw(io_op::READ, 1, 1, DATA, 0));
    s.ring(1);
    s.ctrl.cancel_hardware_commands(&mut s.node, 3);
    assert!(s.ctrl.is_quiescent());
    let done = s.drain(1);
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|c| status_of(c) == Status::ABORT_REQUESTED));
    // The device's late completions for those slots are then unexpected, and harmless.
    assert_eq!(s.node.run(&mut s.ctrl).unexpected, 2);
    assert!(s.drain(1).is_empty());
}

#[test]
fn shared_cq_takes_completions_of_two_sqs() {
    let mut s = Slice::with(config());
    s.enable();
    s.enable_msix();
    assert_eq!(s.create_cq(1, 8, 1), Status::SUCCESS);
    assert_eq!(s.create_sq(1, 4, 1), Status::SUCCESS);
    assert_eq!(s.create_sq(2, 4, 1), Status::SUCCESS);
    s.push(1, rw(io_op::READ, 0, 1, DATA, 0));
    s.push(2, rw(io_op::READ, 1, 1, DATA, 0));
    s.ring(1);
    s.ring(2);
    assert_eq!(s.node.rings, [3, 4], "each SQ on its own hardware queue");
    s.node.run(&mut s.ctrl);
    let done = s.drain(1);
    let sqs: Vec<u16> = done.iter().map(|c| c.sq_id.get()).collect();
    assert_eq!(sqs, [1, 2]);
    assert_eq!(s.delete_cq(1), Status::INVALID_QUEUE_DELETION);
}
