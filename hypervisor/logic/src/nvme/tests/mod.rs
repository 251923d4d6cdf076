//! Scenario tests: a small guest driver on one side of a [`VirtualNvme`], a fake physical
//! controller on the other. The fake device executes what it is given against a fake disk and
//! records every access outside the slice's share (RAM or blocks) as a violation, and every
//! PRP list or DSM range list it is pointed at that is not the slot's DMA page.

mod admin;
mod direct;
mod erase;
mod fuzz;
mod io;
mod reset;
mod shadow;

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use zerocopy::{FromBytes, IntoBytes};

use super::config::tests::sample;
use super::*;
use crate::nvme::spec::{CompletionEntry, DsmRange, PAGE_SIZE, admin as op, io as io_op};

pub const RAM_IPA: u64 = 0x4000_0000;
pub const RAM_SIZE: u64 = 0x80_0000;
pub const RAM_PA: u64 = 0x8_0000_0000;
pub const DMA_BASE: u64 = 0xd_0000_0000;
pub const BLOCK: u64 = 512;
/// The share's first physical block.
pub const FIRST_BLOCK: u64 = 0x100;
/// Physical disk: the share (0x800 blocks) with 0x100 foreign blocks either side.
pub const DISK_BLOCKS: u64 = FIRST_BLOCK + 0x800 + 0x100;
/// What the disk holds outside the share; it must never change.
pub const FOREIGN: u8 = 0x5a;

pub const ADMIN_SQ: u64 = RAM_IPA;
pub const ADMIN_CQ: u64 = RAM_IPA + 0x1000;
/// Guest I/O SQ n at IO_QUEUES + n * 0x4_0000, its CQ 0x2_0000 after it.
pub const IO_QUEUES: u64 = RAM_IPA + 0x40_0000;
/// Data buffers start here.
pub const DATA: u64 = RAM_IPA + 0x10_0000;
/// MSI address the guest programs (GICD_SETSPI_NSR).
pub const MSI_ADDRESS: u64 = 0x0800_0040;

pub fn config() -> ControllerConfig {
    let mut c = sample();
    c.ram = GuestRam {
        ipa_base: Ipa(RAM_IPA),
        size: RAM_SIZE,
        pa_base: Pa(RAM_PA),
    };
    c.namespace.physical_nsid = 7;
    c.namespace.first_block = FIRST_BLOCK;
    c
}

/// The kernel side in a test: guest RAM, DMA pages, the physical controller and its disk.
pub struct Node {
    pub ram: Vec<u8>,
    pub dma: Vec<[u8; 4096]>,
    pub disk: Vec<u8>,
    /// Commands put in each hardware SQ and not yet made visible by a ring.
    pub staged: Vec<Vec<SubmissionEntry>>,
    /// Commands the device has been told about (rung) and not yet executed.
    pub device: Vec<VecDeque<SubmissionEntry>>,
    /// Every command ever submitted, with its queue.
    pub submitted: Vec<(u16, SubmissionEntry)>,
    pub rings: Vec<u16>,
    pub signals: Vec<MsiMessage>,
    pub violations: Vec<String>,
    first_queue: u16,
    slots: usize,
    share: NamespaceShare,
    /// Guest memory writes, for "nothing written after reset" checks.
    pub guest_writes: usize,
    /// Full barriers the controller asked for.
    pub fences: usize,
    /// What another vCPU of the guest writes at each fence (a u32 at an IPA, one per fence):
    /// a store that lands between the controller's EventIdx store and its next load.
    pub at_fence: VecDeque<(u64, u32)>,
    /// Per hardware queue: its CQ, while placed in the slice's RAM (`place_cq`).
    pub placed: Vec<Option<PlacedCq>>,
    /// Every `place_cq` call: queue, where.
    pub places: Vec<(u16, Option<u64>)>,
    /// `place_cq` fails (the pair stays where it was).
    pub refuse_place: bool,
    /// `place_cq` answers `Lost` (the pair deleted and not created again).
    pub lose_place: bool,
    /// When a placed pair moves back, the device posts an abort for each command it still
    /// holds (QEMU drops them instead: both are allowed).
    pub post_aborts: bool,
    depth: u16,
}

/// A hardware CQ the device writes in the slice's RAM.
#[derive(Clone, Copy, Debug)]
pub struct PlacedCq {
    pub pa: u64,
    pub tail: u16,
    pub phase: bool,
    /// The head the hypervisor released (`release_cq`).
    pub head: u16,
    /// How far the device fetched the pair's SQ.
    pub sq_head: u16,
}

/// Status of a Flush of namespace 0: Invalid Namespace or Format, Do Not Retry.
pub const INVALID_NAMESPACE: u16 = 0x400b;
/// Status of a command aborted by its SQ's deletion.
pub const ABORTED_SQ_DELETION: u16 = 0x0008;

impl Node {
    pub fn new(config: &ControllerConfig) -> Node {
        let queues = usize::from(config.queues.count);
        let slots = usize::from(config.queues.depth - 1);
        let ns = config.namespace;
        let mut disk = vec![FOREIGN; (DISK_BLOCKS * BLOCK) as usize];
        let share =
            (ns.first_block * BLOCK) as usize..((ns.first_block + ns.blocks) * BLOCK) as usize;
        disk[share].fill(0);
        Node {
            ram: vec![0; config.ram.size as usize],
            dma: vec![[0xdd; 4096]; queues * slots],
            disk,
            staged: vec![Vec::new(); queues],
            device: vec![VecDeque::new(); queues],
            submitted: Vec::new(),
            rings: Vec::new(),
            signals: Vec::new(),
            violations: Vec::new(),
            first_queue: config.queues.first,
            slots,
            share: ns,
            guest_writes: 0,
            fences: 0,
            at_fence: VecDeque::new(),
            placed: vec![None; queues],
            places: Vec::new(),
            refuse_place: false,
            lose_place: false,
            post_aborts: true,
            depth: config.queues.depth,
        }
    }

    /// Writes a completion into placed CQ `index` (false if it is full).
    fn post_placed(&mut self, index: usize, cid: u16, status: u16) -> bool {
        let Some(cq) = self.placed[index] else {
            return false;
        };
        if (cq.tail + 1) % self.depth == cq.head {
            return false;
        }
        let entry = CompletionEntry {
            sq_id: (self.first_queue + index as u16).into(),
            sq_head: cq.sq_head.into(),
            command_id: cid.into(),
            status: (status << 1 | u16::from(cq.phase)).into(),
            ..CompletionEntry::default()
        };
        let at = (cq.pa + u64::from(cq.tail) * 16 - RAM_PA) as usize;
        self.ram[at..at + 16].copy_from_slice(entry.as_bytes());
        let cq = self.placed[index].as_mut().unwrap();
        cq.tail = (cq.tail + 1) % self.depth;
        if cq.tail == 0 {
            cq.phase = !cq.phase;
        }
        true
    }

    /// Whether `[ipa, ipa + len)` touches the page of a CQ placed in the slice's RAM
    /// (read-only to the guest there, and to what the hypervisor writes for it).
    pub fn in_placed_cq(&self, ipa: u64, len: u64) -> bool {
        let pa = ipa - RAM_IPA + RAM_PA;
        let (first, last) = (pa / PAGE_SIZE, (pa + len.max(1) - 1) / PAGE_SIZE);
        self.placed
            .iter()
            .flatten()
            .any(|cq| (first..=last).contains(&(cq.pa / PAGE_SIZE)))
    }

    fn index(&self, queue: u16) -> usize {
        usize::from(queue - self.first_queue)
    }

    pub fn dma_address(&self, queue: u16, slot: u16) -> u64 {
        DMA_BASE + ((self.index(queue) * self.slots + usize::from(slot)) as u64) * PAGE_SIZE
    }

    pub fn ram_at(&mut self, ipa: u64, len: usize) -> &mut [u8] {
        let at = (ipa - RAM_IPA) as usize;
        &mut self.ram[at..at + len]
    }

    /// The slice RAM bytes at host physical `pa`, or a violation.
    fn device_ram(&mut self, pa: u64, len: u64, what: &str) -> Option<&mut [u8]> {
        let inside = pa >= RAM_PA
            && pa
                .checked_add(len)
                .is_some_and(|end| end <= RAM_PA + RAM_SIZE);
        if !inside {
            self.violations.push(format!(
                "{what}: PA {pa:#x}+{len:#x} outside the slice's RAM"
            ));
            return None;
        }
        let at = (pa - RAM_PA) as usize;
        Some(&mut self.ram[at..at + len as usize])
    }

    fn check_blocks(&mut self, slba: u64, blocks: u64, what: &str) -> bool {
        let ns = self.share;
        let inside = slba >= ns.first_block
            && slba
                .checked_add(blocks)
                .is_some_and(|end| end <= ns.first_block + ns.blocks);
        if !inside {
            self.violations.push(format!(
                "{what}: blocks {slba:#x}+{blocks:#x} outside the share"
            ));
        }
        inside
    }

    /// The data pages of a transfer as the device would walk them, checking that a PRP list
    /// is the slot's DMA page.
    fn data_pages(
        &mut self,
        queue: u16,
        cmd: &SubmissionEntry,
        len: u64,
    ) -> Option<Vec<(u64, u64)>> {
        let prp1 = cmd.prp1.get();
        let first = len.min(PAGE_SIZE - (prp1 & (PAGE_SIZE - 1)));
        let mut pieces = vec![(prp1, first)];
        let mut rest = len - first;
        let pages = rest.div_ceil(PAGE_SIZE);
        let prp2 = cmd.prp2.get();
        if pages == 1 {
            pieces.push((prp2, rest));
        } else if pages > 1 {
            let Some(page) = self.list_page(queue, cmd, prp2) else {
                self.violations
                    .push(format!("PRP list at {prp2:#x}, not the slot's DMA page"));
                return None;
            };
            if pages > 512 {
                self.violations.push("PRP list longer than a page".into());
                return None;
            }
            let page = self.dma[page];
            for i in 0..pages as usize {
                let entry = u64::from_le_bytes(page[i * 8..i * 8 + 8].try_into().unwrap());
                let n = rest.min(PAGE_SIZE);
                pieces.push((entry, n));
                rest -= n;
            }
        }
        Some(pieces)
    }

    /// The DMA page (index in `dma`) a command's PRP list or DSM ranges at `at` must be: its
    /// slot's, named by the Command Identifier on a mediated queue; on a placed one (which
    /// carries the guest's identifiers) any of the queue's slots.
    fn list_page(&self, queue: u16, cmd: &SubmissionEntry, at: u64) -> Option<usize> {
        let first = self.index(queue) * self.slots;
        if self.placed[self.index(queue)].is_some() {
            let offset = at.checked_sub(self.dma_address(queue, 0))?;
            let slot = (offset / PAGE_SIZE) as usize;
            return (offset.is_multiple_of(PAGE_SIZE) && slot < self.slots).then_some(first + slot);
        }
        let slot = usize::from(cmd.command_id.get());
        (at == self.dma_address(queue, cmd.command_id.get())).then_some(first + slot)
    }

    /// Executes one command the way a controller would, returning its status.
    fn execute(&mut self, queue: u16, cmd: &SubmissionEntry) -> u16 {
        const SUCCESS: u16 = 0;
        const INVALID: u16 = 0x4002;
        if cmd.flags != 0 || cmd.metadata.get() != 0 {
            self.violations.push(format!("flags/metadata in {cmd:?}"));
            return INVALID;
        }
        let placed = self.placed[self.index(queue)].is_some();
        if placed && cmd.opcode == io_op::FLUSH && cmd.nsid.get() == 0 {
            // How a direct queue's refusals reach the device.
            return INVALID_NAMESPACE;
        }
        if cmd.nsid.get() != self.share.physical_nsid {
            self.violations.push(format!("NSID {:#x}", cmd.nsid.get()));
            return INVALID;
        }
        let slba = u64::from(cmd.cdw11.get()) << 32 | u64::from(cmd.cdw10.get());
        let blocks = u64::from(cmd.cdw12.get() & 0xffff) + 1;
        match cmd.opcode {
            io_op::FLUSH => SUCCESS,
            io_op::READ | io_op::WRITE => {
                if !self.check_blocks(slba, blocks, "read/write") {
                    return INVALID;
                }
                let Some(pieces) = self.data_pages(queue, cmd, blocks * BLOCK) else {
                    return INVALID;
                };
                let mut disk_at = (slba * BLOCK) as usize;
                for (pa, len) in pieces {
                    let write = cmd.opcode == io_op::WRITE;
                    let disk_range = disk_at..disk_at + len as usize;
                    let mut buf = vec![0u8; len as usize];
                    if !write {
                        buf.copy_from_slice(&self.disk[disk_range.clone()]);
                    }
                    let Some(ram) = self.device_ram(pa, len, "data page") else {
                        return INVALID;
                    };
                    if write {
                        buf.copy_from_slice(ram);
                    } else {
                        ram.copy_from_slice(&buf);
                    }
                    if write {
                        self.disk[disk_range].copy_from_slice(&buf);
                    }
                    disk_at += len as usize;
                }
                SUCCESS
            }
            io_op::WRITE_ZEROES => {
                if cmd.prp1.get() != 0 || cmd.prp2.get() != 0 {
                    self.violations.push("Write Zeroes with PRPs".into());
                }
                if !self.check_blocks(slba, blocks, "write zeroes") {
                    return INVALID;
                }
                let at = (slba * BLOCK) as usize;
                self.disk[at..at + (blocks * BLOCK) as usize].fill(0);
                SUCCESS
            }
            io_op::DATASET_MANAGEMENT => {
                let Some(page) = self.list_page(queue, cmd, cmd.prp1.get()) else {
                    self.violations
                        .push("DSM ranges not in the slot's DMA page".into());
                    return INVALID;
                };
                let page = self.dma[page];
                for i in 0..=(cmd.cdw10.get() & 0xff) as usize {
                    let r = DsmRange::read_from_bytes(&page[i * 16..i * 16 + 16]).unwrap();
                    let blocks = u64::from(r.length.get()).max(1);
                    if !self.check_blocks(r.slba.get(), blocks, "DSM range") {
                        return INVALID;
                    }
                    if cmd.cdw11.get() & 4 != 0 && r.length.get() > 0 {
                        let at = (r.slba.get() * BLOCK) as usize;
                        self.disk[at..at + (u64::from(r.length.get()) * BLOCK) as usize].fill(0);
                    }
                }
                SUCCESS
            }
            other => {
                self.violations
                    .push(format!("opcode {other:#x} reached the device"));
                INVALID
            }
        }
    }

    /// The device executes everything it was told about on every queue and reports the
    /// completions to the controller, queue by queue, in batches.
    pub fn run(&mut self, ctrl: &mut VirtualNvme) -> CompletionSummary {
        let mut total = CompletionSummary::default();
        for index in 0..self.device.len() {
            let queue = self.first_queue + index as u16;
            if self.placed[index].is_some() {
                total.completed += self.run_placed(ctrl, index);
                continue;
            }
            let mut done = Vec::new();
            while let Some(cmd) = self.device[index].pop_front() {
                let status = self.execute(queue, &cmd);
                done.push(hardware_completion(queue, cmd.command_id.get(), status));
            }
            if !done.is_empty() {
                let s = ctrl.hardware_completions(self, queue, done);
                total.completed += s.completed;
                total.dropped += s.dropped;
                total.unexpected += s.unexpected;
            }
        }
        total
    }

    /// The device executes, in order, the commands of placed queue `index` its CQ has room
    /// for, writes their completions into the slice's RAM and interrupts (taken by the
    /// hypervisor). Returns the completions the controller harvested.
    pub fn run_placed(&mut self, ctrl: &mut VirtualNvme, index: usize) -> usize {
        if self.run_placed_silently(index) {
            ctrl.direct_interrupt(self, self.first_queue + index as u16)
        } else {
            0
        }
    }

    /// Like [`Self::run_placed`], but the interrupt goes straight to the guest (a linked
    /// GICv4 route): no exit, nothing harvested. Returns whether a completion was written.
    pub fn run_placed_silently(&mut self, index: usize) -> bool {
        let queue = self.first_queue + index as u16;
        let mut wrote = false;
        while let Some(cq) = self.placed[index] {
            // A full CQ stalls the queue (the device holds its completions).
            if (cq.tail + 1) % self.depth == cq.head {
                break;
            }
            let Some(cmd) = self.device[index].pop_front() else {
                break;
            };
            if let Some(cq) = self.placed[index].as_mut() {
                cq.sq_head = (cq.sq_head + 1) % self.depth;
            }
            let status = self.execute(queue, &cmd);
            wrote |= self.post_placed(index, cmd.command_id.get(), status);
        }
        wrote
    }

    /// Like [`Self::run_placed`], but for a random part of what the device holds, in random
    /// order, sometimes with a random status.
    pub fn run_placed_shuffled(
        &mut self,
        ctrl: &mut VirtualNvme,
        index: usize,
        rng: &mut crate::testing::Rng,
    ) {
        let queue = self.first_queue + index as u16;
        let mut wrote = false;
        for _ in 0..rng.below(6) {
            let held = self.device[index].len();
            let Some(cq) = self.placed[index].filter(|cq| (cq.tail + 1) % self.depth != cq.head)
            else {
                break;
            };
            if held == 0 {
                break;
            }
            let cmd = self.device[index]
                .remove(rng.below(held as u64) as usize)
                .unwrap();
            if let Some(cq) = self.placed[index].as_mut() {
                cq.sq_head = (cq.sq_head + 1) % self.depth;
            }
            let _ = cq;
            let status = if rng.percent(90) {
                self.execute(queue, &cmd)
            } else {
                rng.next() as u16 & 0x7fff
            };
            wrote |= self.post_placed(index, cmd.command_id.get(), status);
        }
        if wrote {
            ctrl.direct_interrupt(self, queue);
        }
    }

    /// Commands waiting in the device (rung, not executed).
    pub fn outstanding(&self) -> usize {
        self.device.iter().map(VecDeque::len).sum()
    }
}

pub fn hardware_completion(queue: u16, slot: u16, status: u16) -> CompletionEntry {
    CompletionEntry {
        sq_id: queue.into(),
        command_id: slot.into(),
        // Phase set, as the device would on its first pass; the controller ignores it.
        status: (status << 1 | 1).into(),
        ..CompletionEntry::default()
    }
}

impl NvmeBackend for Node {
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault> {
        let inside = ipa.0 >= RAM_IPA
            && ipa
                .0
                .checked_add(buf.len() as u64)
                .is_some_and(|e| e <= RAM_IPA + RAM_SIZE);
        if !inside {
            self.violations
                .push(format!("guest read outside RAM at {:#x}", ipa.0));
            return Err(GuestMemoryFault);
        }
        buf.copy_from_slice(self.ram_at(ipa.0, buf.len()));
        Ok(())
    }

    fn write_guest(&mut self, ipa: Ipa, data: &[u8]) -> Result<(), GuestMemoryFault> {
        let inside = ipa.0 >= RAM_IPA
            && ipa
                .0
                .checked_add(data.len() as u64)
                .is_some_and(|e| e <= RAM_IPA + RAM_SIZE);
        if !inside {
            self.violations
                .push(format!("guest write outside RAM at {:#x}", ipa.0));
            return Err(GuestMemoryFault);
        }
        if self.in_placed_cq(ipa.0, data.len() as u64) {
            // The kernel refuses writes into a direct CQ's page, as the controller's alone.
            return Err(GuestMemoryFault);
        }
        self.ram_at(ipa.0, data.len()).copy_from_slice(data);
        self.guest_writes += 1;
        Ok(())
    }

    fn fence(&mut self) {
        self.fences += 1;
        if let Some((ipa, value)) = self.at_fence.pop_front() {
            self.ram_at(ipa, 4).copy_from_slice(&value.to_le_bytes());
        }
    }

    fn dma_page(&mut self, queue: u16, slot: u16) -> DmaPage<'_> {
        let address = Pa(self.dma_address(queue, slot));
        let index = self.index(queue) * self.slots + usize::from(slot);
        DmaPage {
            address,
            bytes: &mut self.dma[index],
        }
    }

    fn submit(&mut self, queue: u16, command: &SubmissionEntry) {
        let index = self.index(queue);
        let in_device = self.device[index].len() + self.staged[index].len();
        if in_device >= self.slots {
            self.violations
                .push(format!("hardware SQ {queue} overflows"));
        }
        let cid = command.command_id.get();
        let twice = self.device[index]
            .iter()
            .chain(&self.staged[index])
            .any(|c| c.command_id.get() == cid);
        if twice {
            self.violations
                .push(format!("CID {cid:#x} twice in hardware queue {queue}"));
        }
        if let Some(cq) = self.placed[index] {
            // Room for every completion the device may still post.
            let used = (cq.tail + self.depth - cq.head) % self.depth;
            if usize::from(used) + in_device + 1 > usize::from(self.depth - 1) {
                self.violations
                    .push(format!("hardware CQ {queue} may overflow"));
            }
        }
        self.staged[index].push(*command);
        self.submitted.push((queue, *command));
    }

    fn ring(&mut self, queue: u16) {
        let index = self.index(queue);
        if self.staged[index].is_empty() {
            self.violations
                .push(format!("ring of queue {queue} with nothing new"));
        }
        let staged = core::mem::take(&mut self.staged[index]);
        self.device[index].extend(staged);
        self.rings.push(queue);
    }

    fn signal(&mut self, message: MsiMessage) {
        self.signals.push(message);
    }

    fn place_cq(&mut self, queue: u16, at: Option<Pa>) -> Placed {
        let index = self.index(queue);
        self.places.push((queue, at.map(|a| a.0)));
        if self.lose_place {
            return Placed::Lost;
        }
        if self.refuse_place {
            return if at.is_some() {
                Placed::Stayed
            } else {
                Placed::Lost
            };
        }
        match at {
            Some(Pa(pa)) => {
                let bytes = u64::from(self.depth) * 16;
                let inside = pa >= RAM_PA && pa + bytes <= RAM_PA + RAM_SIZE;
                if !inside || !pa.is_multiple_of(PAGE_SIZE) || self.placed[index].is_some() {
                    self.violations
                        .push(format!("CQ of queue {queue} placed at {pa:#x}"));
                }
                if self.device[index].len() + self.staged[index].len() != 0 {
                    self.violations
                        .push(format!("queue {queue} moved with commands in it"));
                }
                if self
                    .placed
                    .iter()
                    .flatten()
                    .any(|cq| cq.pa / PAGE_SIZE == pa / PAGE_SIZE)
                {
                    // One direct CQ per page, as the kernel's read-only pages.
                    return Placed::Stayed;
                }
                self.placed[index] = Some(PlacedCq {
                    pa,
                    tail: 0,
                    phase: true,
                    head: 0,
                    sq_head: 0,
                });
                let at = (pa - RAM_PA) as usize;
                self.ram[at..at + bytes as usize].fill(0);
            }
            None => {
                if self.placed[index].is_none() {
                    self.violations
                        .push(format!("queue {queue} moved back but not placed"));
                }
                let held: Vec<_> = self.device[index]
                    .drain(..)
                    .chain(self.staged[index].drain(..))
                    .collect();
                if self.post_aborts {
                    for cmd in held {
                        self.post_placed(index, cmd.command_id.get(), ABORTED_SQ_DELETION);
                    }
                }
                self.placed[index] = None;
            }
        }
        Placed::Moved
    }

    fn release_cq(&mut self, queue: u16, head: u16) {
        let index = self.index(queue);
        let depth = self.depth;
        let Some(cq) = self.placed[index].as_mut() else {
            self.violations.push(format!(
                "CQ head of queue {queue} released while not placed"
            ));
            return;
        };
        // Valid: inside the queue, and not past the entries the device wrote.
        let used = (cq.tail + depth - cq.head) % depth;
        let moved = (head + depth - cq.head) % depth;
        if head >= depth || moved > used {
            self.violations.push(format!(
                "CQ head {head} of queue {queue} past its tail {}",
                cq.tail
            ));
            return;
        }
        cq.head = head;
    }
}

#[derive(Clone, Copy, Debug)]
pub struct GuestSq {
    pub base: u64,
    pub size: u16,
    pub tail: u16,
}

#[derive(Clone, Copy, Debug)]
pub struct GuestCq {
    pub base: u64,
    pub size: u16,
    pub head: u16,
    pub phase: bool,
}

/// A slice: its controller, the node around it, and a minimal guest driver.
pub struct Slice {
    pub ctrl: VirtualNvme,
    pub node: Node,
    pub sq: Vec<Option<GuestSq>>,
    pub cq: Vec<Option<GuestCq>>,
    next_cid: u16,
}

pub fn doorbell_sq(qid: u16) -> u64 {
    0x1000 + 8 * u64::from(qid)
}

pub fn doorbell_cq(qid: u16) -> u64 {
    0x1004 + 8 * u64::from(qid)
}

pub fn cmd(opcode: u8) -> SubmissionEntry {
    SubmissionEntry {
        opcode,
        ..SubmissionEntry::default()
    }
}

pub fn status_of(cqe: &CompletionEntry) -> Status {
    cqe.status()
}

impl Slice {
    pub fn with(config: ControllerConfig) -> Slice {
        let node = Node::new(&config);
        let queues = usize::from(config.queues.count) + 1;
        Slice {
            ctrl: VirtualNvme::new(config).unwrap(),
            node,
            sq: vec![None; queues],
            cq: vec![None; queues],
            next_cid: 0x100,
        }
    }

    /// Enabled, MSI-X on with every vector unmasked, I/O queue pairs 1..=2 of 4 entries.
    pub fn ready() -> Slice {
        let mut s = Slice::with(config());
        s.enable();
        s.enable_msix();
        s.create_pair(1, 4);
        s.create_pair(2, 4);
        s.node.signals.clear();
        s
    }

    pub fn write(&mut self, offset: u64, value: u32) {
        self.ctrl
            .mmio_write(&mut self.node, offset, 4, u64::from(value));
    }

    pub fn read(&self, offset: u64) -> u32 {
        self.ctrl.mmio_read(offset, 4) as u32
    }

    pub fn csts(&self) -> u32 {
        self.read(0x1c)
    }

    pub fn enable(&mut self) {
        self.start();
        assert_eq!(self.csts() & 1, 1, "ready");
    }

    /// The driver's enable sequence, without insisting on the outcome.
    pub fn start(&mut self) {
        self.node.ram_at(ADMIN_CQ, 16 * 16).fill(0);
        self.write(0x24, 15 << 16 | 15);
        self.write(0x28, ADMIN_SQ as u32);
        self.write(0x2c, 0);
        self.write(0x30, ADMIN_CQ as u32);
        self.write(0x34, 0);
        self.write(0x14, 0x0046_0001);
        self.fresh_admin_queues();
    }

    /// The driver's view of empty admin queues, as after an enable.
    pub fn fresh_admin_queues(&mut self) {
        self.sq[0] = Some(GuestSq {
            base: ADMIN_SQ,
            size: 16,
            tail: 0,
        });
        self.cq[0] = Some(GuestCq {
            base: ADMIN_CQ,
            size: 16,
            head: 0,
            phase: true,
        });
    }

    pub fn enable_msix(&mut self) {
        for v in 0..u64::from(self.ctrl.msix_vectors()) {
            self.write(0x2000 + 16 * v, MSI_ADDRESS as u32);
            self.write(0x2004 + 16 * v, 0);
            self.write(0x2008 + 16 * v, 64 + v as u32);
            self.write(0x200c + 16 * v, 0);
        }
        self.ctrl.set_msix_control(&mut self.node, true, false);
    }

    /// Puts `cmd` at the tail of guest SQ `qid` (with a fresh CID unless it has one) without
    /// ringing; returns its CID.
    pub fn push(&mut self, qid: u16, mut cmd: SubmissionEntry) -> u16 {
        if cmd.command_id.get() == 0 {
            cmd.command_id = self.next_cid.into();
            self.next_cid = self.next_cid.wrapping_add(1).max(0x100);
        }
        let sq = self.sq[usize::from(qid)].as_mut().expect("SQ exists");
        let at = sq.base + u64::from(sq.tail) * 64;
        sq.tail = (sq.tail + 1) % sq.size;
        self.node.ram_at(at, 64).copy_from_slice(cmd.as_bytes());
        cmd.command_id.get()
    }

    pub fn ring(&mut self, qid: u16) {
        let tail = self.sq[usize::from(qid)].unwrap().tail;
        self.write(doorbell_sq(qid), u32::from(tail));
    }

    /// The next completion in guest CQ `qid`, if the controller posted one (phase check);
    /// moves the guest's head but does not write the head doorbell.
    pub fn pop(&mut self, qid: u16) -> Option<CompletionEntry> {
        let cq = self.cq[usize::from(qid)].expect("CQ exists");
        let at = cq.base + u64::from(cq.head) * 16;
        let cqe = CompletionEntry::read_from_bytes(self.node.ram_at(at, 16)).unwrap();
        if cqe.phase() != cq.phase {
            return None;
        }
        let cq = self.cq[usize::from(qid)].as_mut().unwrap();
        cq.head += 1;
        if cq.head == cq.size {
            cq.head = 0;
            cq.phase = !cq.phase;
        }
        Some(cqe)
    }

    /// Writes guest CQ `qid`'s head doorbell.
    pub fn ack(&mut self, qid: u16) {
        let head = self.cq[usize::from(qid)].unwrap().head;
        self.write(doorbell_cq(qid), u32::from(head));
    }

    /// Every completion now in CQ `qid`, acknowledged.
    pub fn drain(&mut self, qid: u16) -> Vec<CompletionEntry> {
        let mut out = Vec::new();
        while let Some(c) = self.pop(qid) {
            out.push(c);
        }
        if !out.is_empty() {
            self.ack(qid);
        }
        out
    }

    /// Runs one admin command to completion.
    pub fn admin(&mut self, cmd: SubmissionEntry) -> CompletionEntry {
        let cid = self.push(0, cmd);
        self.ring(0);
        let cqe = self.pop(0).expect("admin completion");
        self.ack(0);
        assert_eq!(cqe.command_id.get(), cid);
        assert_eq!(cqe.sq_id.get(), 0);
        cqe
    }

    pub fn admin_status(&mut self, cmd: SubmissionEntry) -> Status {
        status_of(&self.admin(cmd))
    }

    pub fn create_cq(&mut self, qid: u16, size: u16, vector: u16) -> Status {
        let base = IO_QUEUES + u64::from(qid) * 0x4_0000 + 0x2_0000;
        self.node.ram_at(base, usize::from(size) * 16).fill(0);
        let status = self.admin_status(SubmissionEntry {
            prp1: base.into(),
            cdw10: (u32::from(size - 1) << 16 | u32::from(qid)).into(),
            cdw11: (u32::from(vector) << 16 | 0b11).into(),
            ..cmd(op::CREATE_IO_CQ)
        });
        if status.is_success() {
            self.cq[usize::from(qid)] = Some(GuestCq {
                base,
                size,
                head: 0,
                phase: true,
            });
        }
        status
    }

    pub fn create_sq(&mut self, qid: u16, size: u16, cq: u16) -> Status {
        let base = IO_QUEUES + u64::from(qid) * 0x4_0000;
        let status = self.admin_status(SubmissionEntry {
            prp1: base.into(),
            cdw10: (u32::from(size - 1) << 16 | u32::from(qid)).into(),
            cdw11: (u32::from(cq) << 16 | 1).into(),
            ..cmd(op::CREATE_IO_SQ)
        });
        if status.is_success() {
            self.sq[usize::from(qid)] = Some(GuestSq {
                base,
                size,
                tail: 0,
            });
        }
        status
    }

    pub fn create_pair(&mut self, qid: u16, size: u16) {
        assert_eq!(self.create_cq(qid, size, qid), Status::SUCCESS);
        assert_eq!(self.create_sq(qid, size, qid), Status::SUCCESS);
    }

    pub fn delete_sq(&mut self, qid: u16) -> CompletionEntry {
        self.admin(SubmissionEntry {
            cdw10: u32::from(qid).into(),
            ..cmd(op::DELETE_IO_SQ)
        })
    }

    pub fn delete_cq(&mut self, qid: u16) -> Status {
        self.admin_status(SubmissionEntry {
            cdw10: u32::from(qid).into(),
            ..cmd(op::DELETE_IO_CQ)
        })
    }

    pub fn assert_clean(&self) {
        assert!(
            self.node.violations.is_empty(),
            "{:#?}",
            self.node.violations
        );
        let ns = self.node.share;
        let (start, end) = (
            (ns.first_block * BLOCK) as usize,
            ((ns.first_block + ns.blocks) * BLOCK) as usize,
        );
        let disk = &self.node.disk;
        assert!(
            disk[..start] == vec![FOREIGN; start][..],
            "disk before the share changed"
        );
        assert!(
            disk[end..] == vec![FOREIGN; disk.len() - end][..],
            "disk after the share changed"
        );
    }
}

/// A Read or Write of `blocks` blocks at guest `slba` with the given PRPs.
pub fn rw(opcode: u8, slba: u64, blocks: u32, prp1: u64, prp2: u64) -> SubmissionEntry {
    SubmissionEntry {
        opcode,
        nsid: 1.into(),
        prp1: prp1.into(),
        prp2: prp2.into(),
        cdw10: (slba as u32).into(),
        cdw11: ((slba >> 32) as u32).into(),
        cdw12: (blocks - 1).into(),
        ..SubmissionEntry::default()
    }
}
