//! Enable, reset with commands in flight, shutdown, function level reset.

use super::*;

const RDY: u32 = 1;
const CFS: u32 = 2;
const SHST_OCCURRING: u32 = 1 << 2;
const SHST_COMPLETE: u32 = 2 << 2;

fn in_flight(s: &mut Slice, n: u64) {
    for i in 0..n {
        s.push(1, rw(io_op::WRITE, i, 1, DATA, 0));
    }
    s.ring(1);
    assert_eq!(s.ctrl.hardware_in_flight(), n as usize);
}

#[test]
fn reset_with_commands_in_flight_drains_before_rdy_clears() {
    let mut s = Slice::ready();
    in_flight(&mut s, 3);
    let aer = s.push(0, cmd(op::ASYNC_EVENT_REQUEST));
    s.ring(0);
    s.write(0x14, 0);
    assert_eq!(
        s.csts() & RDY,
        RDY,
        "RDY stays set while the hardware holds commands"
    );
    assert!(!s.ctrl.is_quiescent());
    let writes = s.node.guest_writes;
    let cq_before = s.node.ram_at(s.cq[1].unwrap().base, 64).to_vec();
    let summary = s.node.run(&mut s.ctrl);
    assert_eq!((summary.completed, summary.dropped), (0, 3));
    assert_eq!(
        s.node.guest_writes, writes,
        "nothing written into the guest after reset"
    );
    assert_eq!(s.node.ram_at(s.cq[1].unwrap().base, 64), &cq_before[..]);
    assert!(
        s.drain(0).iter().all(|c| c.command_id.get() != aer),
        "AER dropped"
    );
    assert_eq!(s.csts() & RDY, 0);
    assert!(s.ctrl.is_quiescent());
    s.assert_clean();
}

#[test]
fn reset_when_idle_clears_rdy_at_once() {
    let mut s = Slice::ready();
    s.write(0x14, 0);
    assert_eq!(s.csts(), 0);
    // The queues are gone: their doorbells do nothing, even after a new enable.
    s.enable();
    s.push(1, rw(io_op::READ, 0, 1, DATA, 0));
    s.ring(1);
    assert!(s.node.submitted.is_empty());
    assert_eq!(s.create_cq(1, 4, 1), Status::SUCCESS, "IDs free again");
}

#[test]
fn reset_with_completions_waiting_for_cq_room() {
    let mut config = config();
    config.queues.depth = 16;
    let mut s = Slice::with(config);
    s.enable();
    s.enable_msix();
    assert_eq!(s.create_cq(1, 2, 1), Status::SUCCESS); // one usable entry
    assert_eq!(s.create_sq(1, 8, 1), Status::SUCCESS);
    in_flight(&mut s, 4);
    s.node.run(&mut s.ctrl);
    assert!(
        s.ctrl.is_quiescent(),
        "device done; three completions wait for room"
    );
    s.write(0x14, 0);
    assert_eq!(s.csts() & RDY, 0);
    let writes = s.node.guest_writes;
    s.enable();
    s.create_pair(1, 8);
    assert_eq!(
        s.node.guest_writes,
        writes + 4,
        "only the two create completions"
    );
    // All 15 slots are free again.
    for i in 0..7 {
        s.push(1, rw(io_op::READ, i, 1, DATA, 0));
    }
    s.ring(1);
    assert_eq!(s.ctrl.hardware_in_flight(), 7);
}

#[test]
fn enable_while_draining_waits_for_the_drain() {
    let mut s = Slice::ready();
    in_flight(&mut s, 3);
    s.write(0x14, 0);
    s.write(0x14, 0x0046_0001);
    assert_eq!(s.csts() & RDY, RDY);
    s.node.run(&mut s.ctrl);
    assert_eq!(s.csts() & RDY, RDY, "ready again once drained");
    // A fresh admin queue pair (the driver zeroed its CQ before enabling).
    s.enable();
    assert_eq!(s.admin_status(cmd(op::KEEP_ALIVE)), Status::SUCCESS);
}

#[test]
fn drained_slots_are_not_reused_until_the_device_returns_them() {
    let mut config = config();
    config.queues.depth = 4; // 3 slots
    let mut s = Slice::with(config);
    s.enable();
    s.enable_msix();
    s.create_pair(1, 4);
    in_flight(&mut s, 3);
    let old: Vec<SubmissionEntry> = s.node.device[0].drain(..).collect();
    s.write(0x14, 0);
    // The device completes the old commands later, one by one; RDY clears with the last.
    for (i, c) in old.iter().enumerate() {
        assert_eq!(s.csts() & RDY, RDY, "{i} of 3 back");
        let summary = s.ctrl.hardware_completions(
            &mut s.node,
            3,
            [hardware_completion(3, c.command_id.get(), 0)],
        );
        assert_eq!(summary.dropped, 1);
    }
    assert_eq!(s.csts() & RDY, 0);
    s.enable();
    s.create_pair(1, 4);
    in_flight(&mut s, 3);
}

#[test]
fn bad_configurations_set_fatal_status() {
    let cases: [(u32, u64); 5] = [
        (0x0046_0011, ADMIN_SQ),           // CSS 1
        (0x0046_0081, ADMIN_SQ),           // MPS 1 (8 KiB)
        (0x0046_0801, ADMIN_SQ),           // AMS 1
        (0x0047_0001, ADMIN_SQ),           // IOSQES 7
        (0x0046_0001, RAM_IPA + RAM_SIZE), // admin SQ outside RAM
    ];
    for (cc, asq) in cases {
        let mut s = Slice::with(config());
        s.write(0x24, 15 << 16 | 15);
        s.write(0x28, asq as u32);
        s.write(0x2c, (asq >> 32) as u32);
        s.write(0x30, ADMIN_CQ as u32);
        s.write(0x14, cc);
        assert_eq!(s.csts() & (RDY | CFS), CFS, "CC {cc:#x} ASQ {asq:#x}");
        s.write(0x14, 0);
        assert_eq!(s.csts(), 0, "reset clears CFS");
    }
    let mut s = Slice::with(config());
    s.write(0x24, 0); // one-entry admin queues
    s.write(0x28, ADMIN_SQ as u32);
    s.write(0x30, ADMIN_CQ as u32);
    s.write(0x14, 0x0046_0001);
    assert_eq!(s.csts() & CFS, CFS);
}

#[test]
fn cc_fields_locked_while_enabled() {
    let mut s = Slice::ready();
    s.write(0x14, 0x0046_0001 | 1 << 4 | 1 << 7);
    assert_eq!(s.read(0x14), 0x0046_0001);
    assert_eq!(s.csts() & (RDY | CFS), RDY);
}

#[test]
fn shutdown_flushes_the_share_once_idle() {
    let mut s = Slice::ready();
    in_flight(&mut s, 2);
    s.write(0x14, 0x0046_4001);
    assert_eq!(s.csts() & 0b1100, SHST_OCCURRING);
    let before = s.node.submitted.len();
    s.node.run(&mut s.ctrl);
    // The guest's writes are done: the hypervisor sends its own Flush.
    assert_eq!(s.node.submitted.len(), before + 1);
    let flush = s.node.submitted.last().unwrap().1;
    assert_eq!((flush.opcode, flush.nsid.get()), (io_op::FLUSH, 7));
    assert_eq!(s.csts() & 0b1100, SHST_OCCURRING);
    let writes = s.node.guest_writes;
    let summary = s.node.run(&mut s.ctrl);
    assert_eq!(
        summary.dropped, 1,
        "the flush's completion is the hypervisor's"
    );
    assert_eq!(s.node.guest_writes, writes);
    assert_eq!(s.csts() & 0b1100, SHST_COMPLETE);
    assert_eq!(s.drain(1).len(), 2, "the guest's writes completed normally");
    // Reset and enable again: shutdown status back to normal.
    s.write(0x14, 0);
    s.enable();
    assert_eq!(s.csts(), RDY);
}

#[test]
fn shutdown_without_a_write_cache_completes_at_once() {
    let mut config = config();
    config.volatile_write_cache = false;
    let mut s = Slice::with(config);
    s.enable();
    s.write(0x14, 0x0046_8001);
    assert_eq!(s.csts() & 0b1100, SHST_COMPLETE);
    assert!(s.node.submitted.is_empty());
}

#[test]
fn function_level_reset_restores_power_on_state() {
    let mut s = Slice::ready();
    in_flight(&mut s, 1);
    s.ctrl.function_level_reset(&mut s.node);
    assert_eq!(s.read(0x14), 0);
    assert_eq!(s.read(0x24), 0);
    assert_eq!(s.ctrl.mmio_read(0x28, 8), 0);
    assert_eq!(s.read(0x200c), 1, "vectors masked");
    assert_eq!(s.read(0x2008), 0);
    assert_eq!(s.csts() & RDY, RDY, "still draining");
    s.node.run(&mut s.ctrl);
    assert_eq!(s.csts(), 0);
    assert!(s.node.signals.is_empty(), "MSI-X disabled by the reset");
}

#[test]
fn bogus_doorbells_never_reach_the_hardware() {
    let mut s = Slice::ready();
    let aer = s.push(0, cmd(op::ASYNC_EVENT_REQUEST));
    s.ring(0);
    // Tail beyond the queue size.
    s.write(doorbell_sq(1), 4);
    s.write(doorbell_sq(1), 0xffff_ffff);
    // Queues that do not exist, the doorbell page's far end.
    s.write(doorbell_sq(3), 1);
    s.write(0x1ffc, 1);
    s.ctrl.mmio_write(&mut s.node, 0x1ff8, 8, u64::MAX);
    // CQ head beyond what was posted, or beyond the size.
    s.write(doorbell_cq(1), 2);
    s.write(doorbell_cq(1), 0xffff_ffff);
    s.write(doorbell_cq(0), 0x8000_0000);
    assert!(s.node.submitted.is_empty());
    let c = s.drain(0);
    assert_eq!(c.len(), 1, "reported once");
    assert_eq!(c[0].command_id.get(), aer);
    assert_eq!(c[0].dw0.get(), 0x01_01_00);
    // The queues still work.
    s.push(1, rw(io_op::READ, 0, 1, DATA, 0));
    s.ring(1);
    s.node.run(&mut s.ctrl);
    assert_eq!(s.drain(1).len(), 1);
    // Doorbells while disabled are ignored.
    s.write(0x14, 0);
    s.write(doorbell_sq(1), 1);
    s.write(doorbell_sq(0), 1);
    assert_eq!(s.node.submitted.len(), 1);
    s.assert_clean();
}

#[test]
fn cq_head_beyond_the_posted_entries_is_refused() {
    let mut s = Slice::ready();
    let aer = s.push(0, cmd(op::ASYNC_EVENT_REQUEST));
    s.ring(0);
    // Nothing posted in CQ 1 yet: a head of 2 would "consume" entries that do not exist.
    s.write(doorbell_cq(1), 2);
    let c = s.drain(0);
    assert_eq!((c[0].command_id.get(), c[0].dw0.get()), (aer, 0x01_01_00));
    // The head did not move: all three usable entries still take completions.
    for i in 0..3 {
        s.push(1, rw(io_op::READ, i, 1, DATA, 0));
    }
    s.ring(1);
    s.node.run(&mut s.ctrl);
    assert_eq!(s.drain(1).len(), 3);
}
