//! Random commands, doorbells, register writes and device behaviour against one controller.
//! After every step: the fake device saw no address or block outside the share, no hardware
//! queue overflowed, the controller's idea of what the device holds matches the device, and
//! CSTS.RDY is never clear while the device still holds one of the slice's commands.

use super::*;
use crate::testing::Rng;

/// An address a guest might put in a data pointer: mostly plausible, sometimes hostile.
fn address(rng: &mut Rng) -> u64 {
    let page = RAM_IPA + rng.below(RAM_SIZE / PAGE_SIZE) * PAGE_SIZE;
    match rng.below(10) {
        0..=5 => page,
        6 => page + rng.below(PAGE_SIZE / 4) * 4,
        7 => rng.pick(&[
            0,
            RAM_IPA - PAGE_SIZE,
            RAM_IPA + RAM_SIZE,
            RAM_IPA + RAM_SIZE - 8,
            RAM_PA,
            !7,
        ]),
        8 => page + rng.below(PAGE_SIZE),
        _ => rng.next(),
    }
}

fn lba(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => 0,
        1 => 0x800 - rng.below(64),
        2 => 0x800 + rng.below(4),
        3 => u64::MAX - rng.below(300),
        4 => rng.below(0x800),
        _ => rng.next(),
    }
}

fn random_sqe(rng: &mut Rng) -> SubmissionEntry {
    let mut raw = [0u8; 64];
    raw.iter_mut().for_each(|b| *b = rng.next() as u8);
    let mut c = SubmissionEntry::read_from_bytes(&raw).unwrap();
    if rng.percent(85) {
        c.opcode = rng.pick(&[0, 1, 2, 8, 9]);
    }
    if rng.percent(85) {
        c.flags = 0;
    }
    if rng.percent(90) {
        c.nsid = rng.pick(&[1, 1, 1, 1, 1, 1, 0, 2, 0xffff_ffff]).into();
    }
    if rng.percent(85) {
        c.metadata = 0.into();
    }
    c.prp1 = address(rng).into();
    c.prp2 = address(rng).into();
    let slba = lba(rng);
    c.cdw10 = (slba as u32).into();
    c.cdw11 = ((slba >> 32) as u32).into();
    if c.opcode == 9 && rng.percent(70) {
        c.cdw10 = (rng.below(256) as u32).into();
        c.cdw11 = 4.into();
    }
    if rng.percent(85) {
        let blocks = if rng.percent(50) {
            rng.below(16)
        } else {
            rng.below(1100)
        };
        let high = if rng.percent(80) {
            0
        } else {
            rng.next() as u32 & 0xffff_0000
        };
        c.cdw12 = (blocks as u32 | high).into();
    }
    c
}

/// Random bytes at a random place in guest RAM: PRP lists and DSM ranges that may point
/// anywhere, occasionally on top of queues.
fn scribble(s: &mut Slice, rng: &mut Rng) {
    let at = address(rng) & !7;
    if !(RAM_IPA..RAM_IPA + RAM_SIZE - 4096).contains(&at) {
        return;
    }
    if s.node.in_placed_cq(at, 64 * 8) {
        // A direct CQ is read-only in the slice's stage 2.
        return;
    }
    for i in 0..rng.below(64) {
        let value = if rng.percent(60) {
            address(rng)
        } else if rng.percent(50) {
            lba(rng)
        } else {
            rng.next()
        };
        s.node
            .ram_at(at + 8 * i, 8)
            .copy_from_slice(&value.to_le_bytes());
    }
}

/// The device executes a random part of what it holds, in random order, in one batch.
fn device_step(s: &mut Slice, rng: &mut Rng) {
    let queues = s.node.device.len();
    let index = rng.below(queues as u64) as usize;
    let queue = 3 + index as u16;
    if s.node.placed[index].is_some() {
        // A direct queue: the device writes the guest's CQ, in its own order, and interrupts.
        let before = s.node.violations.len();
        s.node.run_placed_shuffled(&mut s.ctrl, index, rng);
        assert_eq!(s.node.violations.len(), before);
        return;
    }
    let mut done = Vec::new();
    for _ in 0..rng.below(6) {
        let held = s.node.device[index].len();
        if held == 0 {
            break;
        }
        let cmd = s.node.device[index]
            .remove(rng.below(held as u64) as usize)
            .unwrap();
        let status = if rng.percent(90) {
            s.node.execute(queue, &cmd)
        } else {
            rng.next() as u16 & 0x7fff
        };
        done.push(hardware_completion(queue, cmd.command_id.get(), status));
    }
    let slot = rng.below(40) as u16;
    let held = s.node.device[index]
        .iter()
        .any(|c| c.command_id.get() == slot);
    let executed = done
        .iter()
        .any(|c: &CompletionEntry| c.command_id.get() == slot);
    if rng.percent(3) && !held && !executed {
        // A completion for a slot the device does not hold (a device or kernel bug).
        done.push(hardware_completion(queue, slot, 0));
    }
    if !done.is_empty() {
        let before = s.node.violations.len();
        s.ctrl.hardware_completions(&mut s.node, queue, done);
        assert_eq!(s.node.violations.len(), before);
    }
}

fn random_admin(s: &mut Slice, rng: &mut Rng) {
    let mut c = random_sqe(rng);
    c.opcode = rng.pick(&[
        0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x0c, 0x18, 0x80, 0xc1,
    ]);
    c.flags = if rng.percent(90) { 0 } else { c.flags };
    c.command_id = 0.into();
    if rng.percent(50) {
        c.cdw10 = (c.cdw10.get() & 0x0007_00ff).into();
    }
    if matches!(c.opcode, 0x01 | 0x05) && rng.percent(70) {
        // Plausible queue creation: small size, aligned memory.
        c.cdw10 = ((rng.below(8) as u32) << 16 | rng.below(4) as u32).into();
        c.cdw11 = ((rng.below(4) as u32) << 16 | rng.below(4) as u32).into();
        c.prp1 = (c.prp1.get() & !0xfff).into();
    }
    if matches!(c.opcode, 0x00 | 0x04) {
        c.cdw10 = (rng.below(4) as u32).into();
    }
    s.push(0, c);
    s.ring(0);
}

fn check(s: &Slice, step: usize, seed: u64) {
    assert!(
        s.node.violations.is_empty(),
        "seed {seed:#x} step {step}: {:#?}",
        s.node.violations
    );
    assert!(
        s.node.staged.iter().all(Vec::is_empty),
        "submitted without a ring"
    );
    assert_eq!(
        s.ctrl.hardware_in_flight(),
        s.node.outstanding(),
        "seed {seed:#x} step {step}: controller and device disagree"
    );
    if s.csts() & 1 == 0 {
        assert_eq!(
            s.node.outstanding(),
            0,
            "RDY clear with commands in the device"
        );
    }
}

/// What a driver does when it (re)loads: reset, wait for RDY = 0, enable, MSI-X, two I/O
/// queue pairs of random sizes.
fn setup(s: &mut Slice, rng: &mut Rng) {
    s.write(0x14, 0);
    s.node.run(&mut s.ctrl);
    assert_eq!(s.csts() & 1, 0, "RDY clears once the device is done");
    s.enable();
    s.enable_msix();
    s.sq[1..].fill(None);
    s.cq[1..].fill(None);
    let depth = s.ctrl.mmio_read(0, 2) as u16 + 1;
    for qid in 1..=2 {
        assert_eq!(
            s.create_cq(qid, depth.min(rng.pick(&[2, 4, 8])), qid),
            Status::SUCCESS
        );
        assert_eq!(s.create_sq(qid, depth, qid), Status::SUCCESS);
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed | 1);
    let mut config = config();
    config.queues.depth = rng.pick(&[2, 4, 8, 32]);
    config.direct_queues = rng.percent(50);
    let mut s = Slice::with(config);
    setup(&mut s, &mut rng);
    for step in 0..steps {
        if rng.percent(1) || (s.csts() & 1 == 0 && rng.percent(20)) {
            setup(&mut s, &mut rng);
        }
        match rng.below(100) {
            0..=39 => {
                let qid = rng.pick(&[1, 2]);
                if s.sq[usize::from(qid)].is_some() {
                    for _ in 0..=rng.below(3) {
                        s.push(qid, random_sqe(&mut rng));
                    }
                    s.ring(qid);
                }
            }
            40..=59 => device_step(&mut s, &mut rng),
            60..=69 => {
                let qid = rng.pick(&[0, 1, 2]);
                if s.cq[usize::from(qid)].is_some() {
                    s.drain(qid);
                }
            }
            70..=74 => scribble(&mut s, &mut rng),
            75..=79 => random_admin(&mut s, &mut rng),
            80..=86 => {
                // Any doorbell, any value.
                let span = if rng.percent(80) { 6 } else { 1024 };
                let offset = 0x1000 + 4 * rng.below(span);
                let value = if rng.percent(70) {
                    rng.below(40)
                } else {
                    rng.next()
                };
                s.ctrl.mmio_write(&mut s.node, offset, 4, value);
            }
            87..=89 => {
                // Any register, any width.
                let offset = rng.below(0x4100);
                let width = rng.pick(&[1, 2, 4, 8]);
                let value = rng.next();
                if offset != 0x14 || rng.percent(20) {
                    s.ctrl.mmio_write(&mut s.node, offset, width, value);
                }
                let _ = s.ctrl.mmio_read(rng.below(0x4100), width);
            }
            90 => {
                s.write(0x14, 0);
                if rng.percent(50) {
                    s.start();
                }
            }
            91 => {
                let (enabled, masked) = (rng.percent(80), rng.percent(20));
                s.ctrl.set_msix_control(&mut s.node, enabled, masked);
            }
            92 if rng.percent(20) => {
                // The kernel lost a hardware queue: its commands are gone from the device.
                let index = rng.below(s.node.device.len() as u64) as usize;
                s.node.device[index].clear();
                s.node.placed[index] = None;
                s.ctrl
                    .cancel_hardware_commands(&mut s.node, 3 + index as u16);
            }
            93 if rng.percent(10) => s.ctrl.function_level_reset(&mut s.node),
            94 => {
                s.write(0x14, s.read(0x14) | 1 << 14);
            }
            _ => {
                s.node.run(&mut s.ctrl);
            }
        }
        check(&s, step, seed);
    }
    // Whatever happened, the device can finish and the controller goes quiet (completions
    // free slots for commands still waiting in the guest's SQs, so this takes rounds).
    for _ in 0..1000 {
        if s.node.outstanding() == 0 {
            break;
        }
        s.node.run(&mut s.ctrl);
        for qid in 0..3 {
            // A direct CQ the guest does not consume holds the device's completions back.
            if s.cq[qid].is_some() {
                s.drain(qid as u16);
            }
        }
        check(&s, steps, seed);
    }
    std::eprintln!(
        "seed {seed:x}: submitted {} rings {} signals {} csts {:x} writes {} direct {}",
        s.node.submitted.len(),
        s.node.rings.len(),
        s.node.signals.len(),
        s.csts(),
        s.node.guest_writes,
        s.node.places.len()
    );
    assert!(s.ctrl.is_quiescent());
    s.assert_clean();
}

#[test]
fn random_guests_never_escape_their_share() {
    for seed in 0..300u64 {
        run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1000);
    }
}

#[test]
fn random_guest_long_run() {
    run(0x5eed, 20_000);
}

#[test]
fn random_guest_commands_that_pass_stay_inside() {
    // Straight through the validator path with plenty of valid commands: count how many
    // reached the device to make sure the fuzzing is not all refusals.
    let mut rng = Rng(42);
    let mut s = Slice::ready();
    for _ in 0..3000 {
        s.push(1, random_sqe(&mut rng));
        s.ring(1);
        s.node.run(&mut s.ctrl);
        s.drain(1);
        check(&s, 0, 42);
    }
    assert!(
        s.node.submitted.len() > 300,
        "only {} submitted",
        s.node.submitted.len()
    );
    s.assert_clean();
}
