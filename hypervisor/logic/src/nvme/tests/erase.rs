//! The erase of a slice's window (`nvme::erase`) against a fake disk: the extents cover
//! exactly the window, no command touches a block outside it, completions out of order and
//! stray ones, every failure and every timeout bounded.

use core::cell::Cell;

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use crate::nvme::erase::*;
use crate::nvme::spec::{CompletionEntry, SubmissionEntry, io as io_op};

const SHIFT: u8 = 9;
const BLOCK: usize = 1 << SHIFT;
/// Fake bus addresses: the zero page, the read slots' pages, the PRP lists.
const ZERO_PAGE: u64 = 0x10_0000;
const ZERO_LIST: u64 = 0x20_0000;
const READ_BASE: u64 = 0x100_0000;
const READ_LISTS: u64 = 0x200_0000;
const SLOT_BYTES: u64 = 16 * 1024;

fn facts(oncs: u16, mdts: u8, vwc: bool) -> DiskFacts {
    DiskFacts {
        nsid: 1,
        oncs,
        mdts,
        volatile_write_cache: vwc,
        block_shift: SHIFT,
    }
}

/// A namespace of `blocks` blocks filled with 0xa5, and a queue that runs its commands.
struct FakeDisk {
    data: Vec<u8>,
    window: Window,
    submitted: VecDeque<SubmissionEntry>,
    /// Doorbell rung: these may complete.
    ready: VecDeque<SubmissionEntry>,
    completions: VecDeque<CompletionEntry>,
    read_slots: Vec<Vec<u8>>,
    /// Every command the disk ran, in order.
    log: Vec<SubmissionEntry>,
    /// Blocks written or read outside the window, or bad pointers: must stay empty.
    violations: Vec<&'static str>,
    now: Cell<u64>,
    max_in_flight: usize,
    // Behaviours.
    /// Complete each rung batch in reverse order.
    reverse: bool,
    /// This opcode fails with this status.
    fail: Option<(u8, u16)>,
    /// Commands with this opcode never complete.
    hang: Option<u8>,
    /// This block ignores every write (a bad sector that keeps its data).
    sticky: Option<u64>,
    /// Completions for commands that are not the erase's, posted before the first one.
    strays: u16,
    /// Post a stray completion on every poll, forever (a broken controller).
    stray_storm: bool,
    flushes: usize,
}

impl FakeDisk {
    fn new(blocks: u64, window: Window) -> Self {
        FakeDisk {
            data: vec![0xa5; blocks as usize * BLOCK],
            window,
            submitted: VecDeque::new(),
            ready: VecDeque::new(),
            completions: VecDeque::new(),
            read_slots: vec![vec![0xee; SLOT_BYTES as usize]; 64],
            log: Vec::new(),
            violations: Vec::new(),
            now: Cell::new(0),
            max_in_flight: 0,
            reverse: false,
            fail: None,
            hang: None,
            sticky: None,
            strays: 0,
            stray_storm: false,
            flushes: 0,
        }
    }

    fn range(&mut self, command: &SubmissionEntry) -> Option<(u64, u64)> {
        let lba = u64::from(command.cdw11.get()) << 32 | u64::from(command.cdw10.get());
        let blocks = u64::from(command.cdw12.get() & 0xffff) + 1;
        let end = lba + blocks;
        if lba < self.window.first_block() || end > self.window.end() {
            self.violations.push("a command outside the window");
            return None;
        }
        Some((lba, blocks))
    }

    fn run(&mut self, command: SubmissionEntry) -> Option<CompletionEntry> {
        self.log.push(command);
        if self.hang == Some(command.opcode) {
            return None;
        }
        let mut status = 0u16;
        match command.opcode {
            io_op::FLUSH => self.flushes += 1,
            io_op::WRITE_ZEROES | io_op::WRITE => {
                if command.opcode == io_op::WRITE {
                    let ok = command.prp1.get() == ZERO_PAGE
                        && matches!(command.prp2.get(), 0 | ZERO_PAGE | ZERO_LIST);
                    if !ok {
                        self.violations.push("a write not from the zero page");
                    }
                }
                if let Some((lba, blocks)) = self.range(&command) {
                    for b in lba..lba + blocks {
                        if Some(b) != self.sticky {
                            let at = b as usize * BLOCK;
                            self.data[at..at + BLOCK].fill(0);
                        }
                    }
                }
            }
            io_op::READ => {
                let slot = ((command.prp1.get() - READ_BASE) / SLOT_BYTES) as usize;
                if command.prp1.get() != READ_BASE + slot as u64 * SLOT_BYTES {
                    self.violations.push("a read not at a slot");
                }
                if let Some((lba, blocks)) = self.range(&command) {
                    let bytes = blocks as usize * BLOCK;
                    if bytes as u64 > SLOT_BYTES {
                        self.violations.push("a read larger than its slot");
                    } else {
                        let at = lba as usize * BLOCK;
                        self.read_slots[slot][..bytes].copy_from_slice(&self.data[at..at + bytes]);
                    }
                }
            }
            _ => self.violations.push("an unexpected opcode"),
        }
        if let Some((opcode, error)) = self.fail
            && opcode == command.opcode
        {
            status = error << 1;
        }
        Some(CompletionEntry {
            command_id: command.command_id,
            status: status.into(),
            ..CompletionEntry::default()
        })
    }
}

impl EraseQueue for FakeDisk {
    fn push(&mut self, command: &SubmissionEntry) {
        self.submitted.push_back(*command);
        let in_flight = self.submitted.len() + self.ready.len() + self.completions.len();
        self.max_in_flight = self.max_in_flight.max(in_flight);
    }

    fn ring(&mut self) {
        let mut batch: Vec<SubmissionEntry> = self.submitted.drain(..).collect();
        if self.reverse {
            batch.reverse();
        }
        self.ready.extend(batch);
    }

    fn pop(&mut self) -> Option<CompletionEntry> {
        if self.stray_storm {
            // Time moves on while the controller floods the queue.
            self.now.set(self.now.get() + 1);
            return Some(CompletionEntry::default());
        }
        if self.strays > 0 {
            self.strays -= 1;
            return Some(CompletionEntry {
                command_id: self.strays.into(),
                ..CompletionEntry::default()
            });
        }
        if let Some(command) = self.ready.pop_front()
            && let Some(done) = self.run(command)
        {
            self.completions.push_back(done);
        }
        self.completions.pop_front()
    }

    fn read_pointers(&mut self, slot: u16, bytes: u64) -> Option<(u64, u64)> {
        if bytes > SLOT_BYTES {
            return None;
        }
        let base = READ_BASE + u64::from(slot) * SLOT_BYTES;
        let prps = Prps::for_pages(bytes, READ_LISTS + u64::from(slot) * PAGE, |i| {
            base + i * PAGE
        });
        Some((prps.prp1, prps.prp2))
    }

    fn zero_pointers(&mut self, bytes: u64) -> Option<(u64, u64)> {
        let prps = Prps::for_pages(bytes, ZERO_LIST, |_| ZERO_PAGE);
        Some((prps.prp1, prps.prp2))
    }

    fn first_nonzero(&self, slot: u16, bytes: u64) -> Result<Option<u64>, Unreadable> {
        let data = self.read_slots.get(usize::from(slot)).ok_or(Unreadable)?;
        Ok(data[..bytes as usize]
            .iter()
            .position(|&b| b != 0)
            .map(|p| p as u64))
    }

    fn now_ms(&self) -> u64 {
        self.now.get()
    }

    fn pause(&self) {
        self.now.set(self.now.get() + 1);
    }
}

/// A window of `blocks` blocks from `first` on a namespace with 100 blocks on either side.
fn disk(first: u64, blocks: u64) -> FakeDisk {
    let window = Window::new(first, blocks).unwrap();
    FakeDisk::new(first + blocks + 100, window)
}

fn plan_for(disk: &FakeDisk, facts: DiskFacts) -> ErasePlan {
    ErasePlan::new(facts, disk.window, 64, 4, SLOT_BYTES).unwrap()
}

fn outside_untouched(disk: &FakeDisk) {
    let first = disk.window.first_block() as usize * BLOCK;
    let end = disk.window.end() as usize * BLOCK;
    assert!(
        disk.data[..first].iter().all(|&b| b == 0xa5),
        "before the window"
    );
    assert!(
        disk.data[end..].iter().all(|&b| b == 0xa5),
        "after the window"
    );
    assert!(disk.violations.is_empty(), "{:?}", disk.violations);
}

#[test]
fn extents_cover_exactly_the_window() {
    for (first, blocks, max) in [
        (0, 1, 1),
        (100, 0, 8),
        (2048, 65536, 65536),
        (2048, 65537, 65536),
        (7, 1000, 3),
        (u64::MAX - 10, 10, 4),
        (1 << 40, 3 << 17, 0),
        (5, 200_000, 100_000),
    ] {
        let window = Window::new(first, blocks).unwrap();
        let mut next = first;
        for extent in window.extents(max) {
            assert_eq!(extent.lba, next, "consecutive, ascending");
            assert!(extent.blocks >= 1 && extent.blocks <= MAX_BLOCKS_PER_COMMAND);
            assert!(extent.blocks <= max.max(1));
            assert!(extent.lba >= first && extent.lba + u64::from(extent.blocks) <= first + blocks);
            assert_eq!(extent.nlb(), extent.blocks - 1);
            next += u64::from(extent.blocks);
        }
        assert_eq!(next, first + blocks, "the union is the window");
    }
}

#[test]
fn a_window_past_the_last_lba_is_refused() {
    assert_eq!(Window::new(u64::MAX, 1), None);
    assert!(Window::new(u64::MAX, 0).is_some());
}

#[test]
fn plans_follow_oncs_and_mdts() {
    let window = Window::new(0, 1 << 20).unwrap();
    let plan = ErasePlan::new(facts(1 << 3, 0, false), window, 64, 4, SLOT_BYTES).unwrap();
    assert_eq!(plan.wipe, Wipe::WriteZeroes);
    assert_eq!(plan.wipe_blocks, 65536);
    assert_eq!(plan.read_blocks, 32, "16 KiB slots of 512-byte blocks");
    assert_eq!(plan.wipe_depth, MAX_IN_FLIGHT);
    assert_eq!(plan.read_depth, 4);
    // MDTS = 1 (8 KiB) limits reads and zero writes, not Write Zeroes.
    let plan = ErasePlan::new(facts(0, 1, false), window, 64, 4, SLOT_BYTES).unwrap();
    assert_eq!(plan.wipe, Wipe::ZeroWrites);
    assert_eq!(plan.wipe_blocks, 16);
    assert_eq!(plan.read_blocks, 16);
    // A two-entry queue has room for one command.
    let plan = ErasePlan::new(facts(8, 0, false), window, 2, 4, SLOT_BYTES).unwrap();
    assert_eq!((plan.wipe_depth, plan.read_depth), (1, 1));
    // Zero writes without MDTS: 256 pages of 512-byte blocks.
    let plan = ErasePlan::new(facts(0, 0, false), window, 64, 4, SLOT_BYTES).unwrap();
    assert_eq!(plan.wipe_blocks, 2048);
    assert_eq!(plan.bytes(), 512 << 20);
}

#[test]
fn plans_need_room() {
    let window = Window::new(0, 8).unwrap();
    assert!(ErasePlan::new(facts(8, 0, false), window, 1, 4, SLOT_BYTES).is_none());
    assert!(ErasePlan::new(facts(8, 0, false), window, 64, 0, SLOT_BYTES).is_none());
    assert!(ErasePlan::new(facts(8, 0, false), window, 64, 4, 256).is_none());
}

#[test]
fn prp_lists_name_every_page_after_the_first() {
    let p = Prps::for_pages(512, 0x9000, |i| 0x1000 * (i + 1));
    assert_eq!((p.prp1, p.prp2, p.list.len()), (0x1000, 0, 0));
    let p = Prps::for_pages(8192, 0x9000, |i| 0x1000 * (i + 1));
    assert_eq!((p.prp1, p.prp2, p.list.len()), (0x1000, 0x2000, 0));
    let p = Prps::for_pages(4 * 4096 + 1, 0x9000, |i| 0x1000 * (i + 1));
    assert_eq!((p.prp1, p.prp2), (0x1000, 0x9000));
    assert_eq!(p.list, vec![0x2000, 0x3000, 0x4000, 0x5000]);
}

#[test]
fn write_zeroes_wipes_the_window_and_nothing_else() {
    let mut d = disk(2048, 200_000);
    d.reverse = true;
    let plan = plan_for(&d, facts(1 << 3, 0, false));
    let outcome = erase(&mut d, &plan).unwrap();
    outside_untouched(&d);
    let (first, end) = (2048 * BLOCK, (2048 + 200_000) * BLOCK);
    assert!(d.data[first..end].iter().all(|&b| b == 0));
    assert_eq!(outcome.bytes, 200_000 * 512);
    assert_eq!(
        outcome.wipe_commands, 4,
        "200000 blocks in 65536-block commands"
    );
    assert_eq!(outcome.read_commands, 200_000u64.div_ceil(32));
    assert_eq!(outcome.flush_commands, 0);
    assert_eq!(outcome.commands(), 4 + 6250);
    assert!(d.max_in_flight > 1 && d.max_in_flight <= usize::from(MAX_IN_FLIGHT));
    // Every command ID is the erase's, never a slot number of the mediated path.
    assert!(d.log.iter().all(|c| c.command_id.get() >= ERASE_CID_BASE));
    let zeroes: Vec<_> = d
        .log
        .iter()
        .filter(|c| c.opcode == io_op::WRITE_ZEROES)
        .collect();
    assert_eq!(zeroes.len(), 4);
    assert!(d.log.iter().all(|c| c.nsid.get() == 1));
}

#[test]
fn without_write_zeroes_it_writes_the_zero_page() {
    let mut d = disk(100, 5000);
    let plan = plan_for(&d, facts(1 << 2, 2, false));
    let outcome = erase(&mut d, &plan).unwrap();
    outside_untouched(&d);
    assert!(d.log.iter().all(|c| c.opcode != io_op::WRITE_ZEROES));
    // MDTS 2: 16 KiB, 32 blocks per Write.
    assert_eq!(outcome.wipe_commands, 5000u64.div_ceil(32));
    assert!(d.data[100 * BLOCK..5100 * BLOCK].iter().all(|&b| b == 0));
}

#[test]
fn a_volatile_write_cache_is_flushed_before_the_reads() {
    let mut d = disk(0, 300);
    let plan = plan_for(&d, facts(8, 0, true));
    let outcome = erase(&mut d, &plan).unwrap();
    assert_eq!((outcome.flush_commands, d.flushes), (1, 1));
    let flush = d.log.iter().position(|c| c.opcode == io_op::FLUSH).unwrap();
    assert!(
        d.log[..flush]
            .iter()
            .all(|c| c.opcode == io_op::WRITE_ZEROES)
    );
    assert!(d.log[flush + 1..].iter().all(|c| c.opcode == io_op::READ));
}

#[test]
fn an_empty_window_issues_nothing() {
    let mut d = disk(10, 0);
    let outcome = run(&mut d, facts(8, 0, false)).unwrap();
    assert_eq!(outcome.commands(), 0);
    assert!(d.log.is_empty());
}

#[test]
fn a_block_that_keeps_its_data_is_named() {
    let mut d = disk(64, 10_000);
    d.sticky = Some(64 + 7777);
    d.reverse = true;
    let fault = run(&mut d, facts(8, 0, false)).unwrap_err();
    assert_eq!(fault, EraseFault::NotZero { lba: 64 + 7777 });
    assert!(!fault.is_io_error());
    // Reads stopped soon after; the queue holds nothing of the erase's.
    assert!(d.ready.is_empty() && d.completions.is_empty());
    assert!(d.log.len() < 300);
}

#[test]
fn a_failed_command_is_an_io_error_and_the_queue_is_drained() {
    for opcode in [io_op::WRITE_ZEROES, io_op::READ] {
        let mut d = disk(0, 1 << 20);
        d.fail = Some((opcode, 0x281));
        let fault = run(&mut d, facts(8, 0, false)).unwrap_err();
        assert_eq!(
            fault,
            EraseFault::Command {
                opcode,
                lba: 0,
                status: 0x281
            }
        );
        assert!(fault.is_io_error());
        assert!(d.ready.is_empty() && d.completions.is_empty() && d.submitted.is_empty());
    }
}

#[test]
fn a_command_that_never_completes_times_out() {
    for opcode in [io_op::WRITE_ZEROES, io_op::FLUSH, io_op::READ] {
        let mut d = disk(0, 4096);
        d.hang = Some(opcode);
        let fault = run(&mut d, facts(8, 0, true)).unwrap_err();
        let EraseFault::Timeout {
            opcode: o,
            in_flight,
            ..
        } = fault
        else {
            panic!("{fault:?}");
        };
        assert_eq!(o, opcode);
        assert!(in_flight >= 1);
        assert!(fault.is_io_error());
        // Bounded: one timeout, not one per command.
        assert!(d.now.get() <= COMMAND_TIMEOUT_MS + 1);
    }
}

#[test]
fn stray_completions_are_counted_and_ignored() {
    let mut d = disk(0, 1000);
    d.strays = 3;
    let outcome = run(&mut d, facts(8, 0, false)).unwrap();
    assert_eq!(outcome.strays, 3);
    assert!(d.data[..1000 * BLOCK].iter().all(|&b| b == 0));
}

#[test]
fn a_storm_of_stray_completions_still_times_out() {
    let mut d = disk(0, 4096);
    d.stray_storm = true;
    let fault = run(&mut d, facts(8, 0, false)).unwrap_err();
    assert!(matches!(
        fault,
        EraseFault::Timeout {
            opcode: io_op::WRITE_ZEROES,
            lba: 0,
            ..
        }
    ));
}

#[test]
fn faults_say_what_failed() {
    use alloc::string::ToString;
    let text = EraseFault::NotZero { lba: 42 }.to_string();
    assert_eq!(text, "block 42 is not zero after the wipe");
    let text = EraseFault::Command {
        opcode: io_op::WRITE_ZEROES,
        lba: 7,
        status: 0x2,
    }
    .to_string();
    assert_eq!(text, "Write Zeroes at block 7 failed with status 0x2");
    let text = EraseFault::Timeout {
        opcode: io_op::READ,
        lba: 9,
        in_flight: 3,
    }
    .to_string();
    assert!(text.starts_with("Read at block 9 did not complete"));
    assert!(EraseFault::Buffer.to_string().contains("buffer"));
}

/// Erases `d`'s window with the plan for `facts`.
fn run(d: &mut FakeDisk, facts: DiskFacts) -> Result<EraseOutcome, EraseFault> {
    let plan = plan_for(d, facts);
    erase(d, &plan)
}
