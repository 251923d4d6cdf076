//! The kernel side of a slice's virtual NVMe controller, for the `nvme` fuzz target: the
//! slice's RAM, the hypervisor's DMA pages, and a model of the physical controller that
//! checks every command the validator lets through against the slice's share, the way a
//! device would execute it. Any escape panics with what escaped.
//!
//! With direct queues (decision 5) the model is also the controller writing a guest's CQ
//! itself: a pair placed in the slice's RAM gets its completions there, with the guest's
//! Command Identifiers, and the page is read-only to the guest (its writes there are
//! dropped, as by the stage 2) and off limits to everything but the device: a hypervisor
//! write, or a Read's data landing in it (checked when the device executes the Read, so one
//! fetched before the page was placed counts too), panics.

use std::collections::VecDeque;

use microvisor_logic::guest_dt::map;
use zerocopy::IntoBytes;

use microvisor_logic::nvme::{
    CompletionEntry, ControllerConfig, DMA_PAGE_SIZE, DmaPage, GuestMemoryFault, GuestRam,
    HardwareQueues, Ipa, MsiMessage, NamespaceShare, NvmeBackend, Pa, Placed, SubmissionEntry,
    VirtualNvme,
};

pub const RAM_IPA: u64 = 0x4000_0000;
pub const RAM_SIZE: u64 = 0x4_0000;
pub const RAM_PA: u64 = 0x8_0000_0000;
pub const DMA_BASE: u64 = 0xd_0000_0000;
pub const PAGE: u64 = 4096;
pub const FIRST_QUEUE: u16 = 3;
pub const QUEUES: u16 = 2;
pub const PHYSICAL_NSID: u32 = 7;
pub const FIRST_BLOCK: u64 = 0x100;
pub const BLOCKS: u64 = 0x800;

/// The controller configuration the target uses, with hardware queues of `depth`, and pairs
/// that may become direct with `direct`.
pub fn config(depth: u16, write_cache: bool, direct: bool) -> ControllerConfig {
    ControllerConfig {
        ram: GuestRam {
            ipa_base: Ipa(RAM_IPA),
            size: RAM_SIZE,
            pa_base: Pa(RAM_PA),
        },
        namespace: NamespaceShare {
            physical_nsid: PHYSICAL_NSID,
            first_block: FIRST_BLOCK,
            blocks: BLOCKS,
            block_shift: 9,
        },
        queues: HardwareQueues {
            first: FIRST_QUEUE,
            count: QUEUES,
            depth,
        },
        serial: "FUZZ-0".into(),
        model: microvisor_logic::nvme::DEFAULT_MODEL.into(),
        firmware_revision: "0.1".into(),
        subsystem_nqn: None,
        namespace_ids: None,
        controller_id: 1,
        pci_vendor_id: 0x1b36,
        physical_mdts: 0,
        volatile_write_cache: write_cache,
        direct_queues: direct,
    }
}

/// A hardware pair's CQ while it is placed in the slice's RAM.
#[derive(Clone, Copy, Debug)]
pub struct PlacedCq {
    pub pa: u64,
    pub tail: u16,
    pub phase: bool,
    pub head: u16,
    pub sq_head: u16,
}

/// Slice RAM, DMA pages and the physical controller's queues.
pub struct Node {
    pub ram: Vec<u8>,
    pub dma: Vec<[u8; DMA_PAGE_SIZE]>,
    pub staged: Vec<Vec<SubmissionEntry>>,
    pub device: Vec<VecDeque<SubmissionEntry>>,
    pub signals: usize,
    /// Commands the device was given.
    pub submitted: usize,
    /// Slots per hardware queue (depth - 1).
    pub slots: u16,
    pub vectors: u16,
    pub max_transfer: u64,
    pub depth: u16,
    /// Per hardware queue: its CQ, while placed in the slice's RAM.
    pub placed: Vec<Option<PlacedCq>>,
    /// What `place_cq` answers for a move to a guest CQ when not `Moved` (a refusal, or a
    /// pair lost on the way), steered by the fuzzer.
    pub failing_place: Option<Placed>,
    /// Hardware queues lost on their way to a guest CQ: the kernel resets the controller
    /// and cancels them.
    pub lost: Vec<u16>,
    /// Moves to a guest CQ.
    pub places: usize,
}

impl Node {
    pub fn new(config: &ControllerConfig) -> Node {
        let queues = usize::from(config.queues.count);
        let slots = config.queues.depth - 1;
        Node {
            ram: vec![0; config.ram.size as usize],
            dma: vec![[0xdd; DMA_PAGE_SIZE]; queues * usize::from(slots)],
            staged: vec![Vec::new(); queues],
            device: vec![VecDeque::new(); queues],
            signals: 0,
            submitted: 0,
            slots,
            vectors: config.msix_vectors(),
            max_transfer: config.max_transfer(),
            depth: config.queues.depth,
            placed: vec![None; queues],
            failing_place: None,
            lost: Vec::new(),
            places: 0,
        }
    }

    /// Whether `[ipa, ipa + len)` touches the page of a CQ placed in the slice's RAM.
    pub fn in_placed_cq(&self, ipa: u64, len: u64) -> bool {
        let Some(pa) = ipa.checked_sub(RAM_IPA).and_then(|o| o.checked_add(RAM_PA)) else {
            return false;
        };
        let last = pa.saturating_add(len.max(1) - 1) / PAGE;
        self.placed
            .iter()
            .flatten()
            .any(|cq| (pa / PAGE..=last).contains(&(cq.pa / PAGE)))
    }

    /// The guest RAM a store of the guest's at `ipa` may change: none where it touches a
    /// placed CQ's page (read-only in the slice's stage 2: the store is dropped).
    pub fn guest_ram_at(&mut self, ipa: u64, len: usize) -> Option<&mut [u8]> {
        if self.in_placed_cq(ipa, len as u64) {
            return None;
        }
        self.ram_at(ipa, len)
    }

    fn index(&self, queue: u16) -> usize {
        assert!(
            (FIRST_QUEUE..FIRST_QUEUE + QUEUES).contains(&queue),
            "hardware queue {queue} is not the slice's ({FIRST_QUEUE}..{})",
            FIRST_QUEUE + QUEUES
        );
        usize::from(queue - FIRST_QUEUE)
    }

    fn page_index(&self, queue: u16, slot: u16) -> usize {
        assert!(
            slot < self.slots,
            "slot {slot} of {} on queue {queue}",
            self.slots
        );
        self.index(queue) * usize::from(self.slots) + usize::from(slot)
    }

    pub fn dma_address(&self, queue: u16, slot: u16) -> u64 {
        DMA_BASE + self.page_index(queue, slot) as u64 * PAGE
    }

    pub fn outstanding(&self) -> usize {
        self.device.iter().map(VecDeque::len).sum::<usize>()
            + self.staged.iter().map(Vec::len).sum::<usize>()
    }

    /// The guest RAM at `ipa`, or None (the fuzz target's guest writes only inside).
    pub fn ram_at(&mut self, ipa: u64, len: usize) -> Option<&mut [u8]> {
        let at = usize::try_from(ipa.checked_sub(RAM_IPA)?).ok()?;
        self.ram.get_mut(at..at.checked_add(len)?)
    }

    fn check_ram_pa(pa: u64, len: u64, what: &str) {
        let inside = pa >= RAM_PA && pa.checked_add(len).is_some_and(|e| e <= RAM_PA + RAM_SIZE);
        assert!(
            inside,
            "{what}: PA {pa:#x}+{len:#x} outside the slice's RAM"
        );
    }

    fn check_blocks(slba: u64, blocks: u64, what: &str) {
        let inside = slba >= FIRST_BLOCK
            && slba
                .checked_add(blocks)
                .is_some_and(|e| e <= FIRST_BLOCK + BLOCKS);
        assert!(
            inside,
            "{what}: blocks {slba:#x}+{blocks:#x} outside the share"
        );
    }

    /// Every check a device executing `cmd` from hardware queue `queue` would make visible.
    fn check_command(&self, queue: u16, cmd: &SubmissionEntry) {
        assert_eq!(
            cmd.flags, 0,
            "fused or SGL command reached the device: {cmd:?}"
        );
        assert_eq!(cmd.metadata.get(), 0, "metadata pointer reached the device");
        let direct = self.placed[self.index(queue)].is_some();
        if direct && cmd.opcode == 0x00 && cmd.nsid.get() == 0 {
            // How a direct queue's refusals reach the device: a Flush the device answers
            // with Invalid Namespace.
            return;
        }
        assert_eq!(cmd.nsid.get(), PHYSICAL_NSID, "NSID {:#x}", cmd.nsid.get());
        let slba = u64::from(cmd.cdw11.get()) << 32 | u64::from(cmd.cdw10.get());
        let blocks = u64::from(cmd.cdw12.get() & 0xffff) + 1;
        match cmd.opcode {
            0x00 => {}
            0x01 | 0x02 => {
                Self::check_blocks(slba, blocks, "read/write");
                let len = blocks * 512;
                assert!(
                    len <= self.max_transfer,
                    "transfer of {len} bytes past MDTS"
                );
                let prp1 = cmd.prp1.get();
                let first = len.min(PAGE - (prp1 & (PAGE - 1)));
                Self::check_ram_pa(prp1, first, "PRP1");
                let rest = len - first;
                let pages = rest.div_ceil(PAGE);
                let prp2 = cmd.prp2.get();
                if pages == 1 {
                    Self::check_ram_pa(prp2, rest, "PRP2");
                } else if pages > 1 {
                    let page = self.list_page(queue, cmd, prp2);
                    assert!(pages <= 512, "PRP list longer than a page");
                    let page = &self.dma[page];
                    for i in 0..pages as usize {
                        let entry = u64::from_le_bytes(page[i * 8..i * 8 + 8].try_into().unwrap());
                        Self::check_ram_pa(
                            entry,
                            PAGE.min(rest - i as u64 * PAGE),
                            "PRP list entry",
                        );
                    }
                }
            }
            0x08 => {
                assert_eq!(
                    (cmd.prp1.get(), cmd.prp2.get()),
                    (0, 0),
                    "Write Zeroes with PRPs"
                );
                Self::check_blocks(slba, blocks, "write zeroes");
            }
            0x09 => {
                let page = &self.dma[self.list_page(queue, cmd, cmd.prp1.get())];
                for i in 0..=(cmd.cdw10.get() & 0xff) as usize {
                    let r = &page[i * 16..i * 16 + 16];
                    let length = u64::from(u32::from_le_bytes(r[4..8].try_into().unwrap()));
                    let start = u64::from_le_bytes(r[8..16].try_into().unwrap());
                    Self::check_blocks(start, length.max(1), "DSM range");
                }
            }
            other => panic!("opcode {other:#x} reached the device"),
        }
    }

    /// The DMA page (index in `dma`) a command's PRP list or DSM ranges at `at` must be: its
    /// slot's, named by the Command Identifier on a mediated queue; on a placed one (which
    /// carries the guest's identifiers) any of the queue's slots.
    fn list_page(&self, queue: u16, cmd: &SubmissionEntry, at: u64) -> usize {
        if self.placed[self.index(queue)].is_some() {
            let first = self.dma_address(queue, 0);
            let offset = at.checked_sub(first).unwrap_or(u64::MAX);
            let slot = offset / PAGE;
            assert!(
                offset.is_multiple_of(PAGE) && slot < u64::from(self.slots),
                "list at {at:#x}, not one of direct queue {queue}'s DMA pages"
            );
            return self.page_index(queue, slot as u16);
        }
        let slot = cmd.command_id.get();
        assert_eq!(
            at,
            self.dma_address(queue, slot),
            "list not in the slot's DMA page"
        );
        self.page_index(queue, slot)
    }

    /// The hypervisor DMA page a command's PRP list or DSM ranges are in, if any.
    fn dma_page_of(cmd: &SubmissionEntry) -> Option<u64> {
        let at = match cmd.opcode {
            0x09 => cmd.prp1.get(),
            0x01 | 0x02 => {
                let len = (u64::from(cmd.cdw12.get() & 0xffff) + 1) * 512;
                let first = len.min(PAGE - (cmd.prp1.get() & (PAGE - 1)));
                if (len - first).div_ceil(PAGE) <= 1 {
                    return None;
                }
                cmd.prp2.get()
            }
            _ => return None,
        };
        (at >= DMA_BASE).then_some(at & !(PAGE - 1))
    }

    /// The data pieces (PA, bytes) a Read writes, as the device walks its PRPs: none may be
    /// in a placed CQ's page.
    fn check_read_lands(&self, queue: u16, cmd: &SubmissionEntry) {
        if cmd.opcode != 0x02 {
            return;
        }
        let blocks = u64::from(cmd.cdw12.get() & 0xffff) + 1;
        let len = blocks * 512;
        let prp1 = cmd.prp1.get();
        let first = len.min(PAGE - (prp1 & (PAGE - 1)));
        let mut pieces = vec![prp1];
        let rest = len - first;
        let pages = rest.div_ceil(PAGE);
        if pages == 1 {
            pieces.push(cmd.prp2.get());
        } else if pages > 1 {
            let page = &self.dma[self.list_page(queue, cmd, cmd.prp2.get())];
            for i in 0..pages as usize {
                pieces.push(u64::from_le_bytes(
                    page[i * 8..i * 8 + 8].try_into().unwrap(),
                ));
            }
        }
        for pa in pieces {
            let hit = self
                .placed
                .iter()
                .flatten()
                .any(|cq| cq.pa / PAGE == pa / PAGE);
            assert!(
                !hit,
                "a Read's data lands in a direct CQ's page at {pa:#x}: {cmd:?}"
            );
        }
    }

    /// The device finishes up to `count` commands of `queue` (in the order `pick` chooses)
    /// with `status`, and reports them in one batch.
    pub fn complete(
        &mut self,
        ctrl: &mut VirtualNvme,
        index: usize,
        count: usize,
        pick: u8,
        status: u16,
    ) {
        let queue = FIRST_QUEUE + index as u16;
        if self.placed[index].is_some() {
            return self.complete_placed(ctrl, index, count, pick, status);
        }
        let mut done = Vec::new();
        for i in 0..count {
            let held = self.device[index].len();
            if held == 0 {
                break;
            }
            let at = (usize::from(pick) + i) % held;
            let cmd = self.device[index].remove(at).unwrap();
            done.push(CompletionEntry {
                sq_id: queue.into(),
                command_id: cmd.command_id,
                status: (status << 1 | 1).into(),
                ..CompletionEntry::default()
            });
        }
        if !done.is_empty() {
            let summary = ctrl.hardware_completions(self, queue, done.iter().copied());
            assert_eq!(
                summary.unexpected, 0,
                "completions of commands the device held"
            );
            assert_eq!(summary.completed + summary.dropped, done.len());
        }
    }

    /// [`Self::complete`] for a pair placed in the slice's RAM: the device writes each
    /// completion into the guest's CQ while it has room, then interrupts: the hypervisor
    /// (GICv3, or no vITS link), or the guest alone (a linked route).
    fn complete_placed(
        &mut self,
        ctrl: &mut VirtualNvme,
        index: usize,
        count: usize,
        pick: u8,
        status: u16,
    ) {
        let queue = FIRST_QUEUE + index as u16;
        let depth = self.depth;
        let mut wrote = false;
        for i in 0..count {
            let held = self.device[index].len();
            let Some(cq) = self.placed[index] else {
                break;
            };
            if held == 0 || (cq.tail + 1) % depth == cq.head {
                break;
            }
            let cmd = self.device[index]
                .remove((usize::from(pick) + i) % held)
                .unwrap();
            self.check_read_lands(queue, &cmd);
            let sq_head = (cq.sq_head + 1) % depth;
            let entry = CompletionEntry {
                sq_id: queue.into(),
                sq_head: sq_head.into(),
                command_id: cmd.command_id,
                status: (status << 1 | u16::from(cq.phase)).into(),
                ..CompletionEntry::default()
            };
            let at = (cq.pa + u64::from(cq.tail) * 16 - RAM_PA) as usize;
            self.ram[at..at + 16].copy_from_slice(entry.as_bytes());
            let tail = (cq.tail + 1) % depth;
            self.placed[index] = Some(PlacedCq {
                tail,
                phase: cq.phase ^ (tail == 0),
                sq_head,
                ..cq
            });
            wrote = true;
        }
        // Linked to the guest's translation (GICv4: a route to the vITS doorbell, as the
        // kernel's `SliceDisk::relink` links), the interrupt goes to the guest: the
        // hypervisor harvests at the guest's next doorbell instead.
        let linked = ctrl.direct_routes().any(|(q, route)| {
            q == queue && route.is_some_and(|m| m.address == map::ITS_TRANSLATER)
        });
        if wrote && !linked {
            ctrl.direct_interrupt(self, queue);
        }
    }
}

impl NvmeBackend for Node {
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault> {
        let len = buf.len();
        let Some(ram) = self.ram_at(ipa.0, len) else {
            panic!("guest read outside RAM at {:#x}+{len:#x}", ipa.0);
        };
        buf.copy_from_slice(ram);
        Ok(())
    }

    fn write_guest(&mut self, ipa: Ipa, data: &[u8]) -> Result<(), GuestMemoryFault> {
        assert!(
            !self.in_placed_cq(ipa.0, data.len() as u64),
            "the hypervisor wrote into a direct CQ's page at {:#x}+{:#x}",
            ipa.0,
            data.len()
        );
        let Some(ram) = self.ram_at(ipa.0, data.len()) else {
            panic!("guest write outside RAM at {:#x}+{:#x}", ipa.0, data.len());
        };
        ram.copy_from_slice(data);
        Ok(())
    }

    fn fence(&mut self) {}

    fn dma_page(&mut self, queue: u16, slot: u16) -> DmaPage<'_> {
        let index = self.page_index(queue, slot);
        DmaPage {
            address: Pa(DMA_BASE + index as u64 * PAGE),
            bytes: &mut self.dma[index],
        }
    }

    fn submit(&mut self, queue: u16, command: &SubmissionEntry) {
        let index = self.index(queue);
        let held = self.device[index].len() + self.staged[index].len();
        assert!(
            held < usize::from(self.slots),
            "hardware SQ {queue} overflows"
        );
        let slot = command.command_id.get();
        let busy = self.device[index]
            .iter()
            .chain(&self.staged[index])
            .any(|c| c.command_id.get() == slot);
        assert!(!busy, "slot {slot} of queue {queue} given out twice");
        assert!(!self.lost.contains(&queue), "command for lost queue {queue}");
        // On a direct queue the identifier is the guest's: check the DMA page itself (a
        // slot freed early would hand its page to a second command while the device may
        // still read the first one's list from it).
        if let Some(page) = Self::dma_page_of(command) {
            let shared = self.device[index]
                .iter()
                .chain(&self.staged[index])
                .any(|c| Self::dma_page_of(c) == Some(page));
            assert!(!shared, "DMA page {page:#x} given to a second command of queue {queue}");
        }
        if let Some(cq) = self.placed[index] {
            // Room for every completion the device may still post.
            let used = (cq.tail + self.depth - cq.head) % self.depth;
            assert!(
                usize::from(used) + held < usize::from(self.depth - 1),
                "hardware CQ {queue} may overflow"
            );
        }
        self.check_command(queue, command);
        self.staged[index].push(*command);
        self.submitted += 1;
    }

    fn ring(&mut self, queue: u16) {
        let index = self.index(queue);
        assert!(!self.lost.contains(&queue), "ring of lost queue {queue}");
        assert!(
            !self.staged[index].is_empty(),
            "ring of queue {queue} with nothing new"
        );
        let staged = std::mem::take(&mut self.staged[index]);
        self.device[index].extend(staged);
    }

    fn signal(&mut self, message: MsiMessage) {
        assert!(
            message.vector < self.vectors,
            "MSI of vector {}",
            message.vector
        );
        self.signals += 1;
    }

    fn place_cq(&mut self, queue: u16, at: Option<Pa>) -> Placed {
        let index = self.index(queue);
        let held = self.device[index].len() + self.staged[index].len();
        let Some(Pa(pa)) = at else {
            assert!(
                self.placed[index].is_some(),
                "queue {queue} moved back but not placed"
            );
            // Deleting the pair: the device drops what it held (as QEMU does); the
            // controller ends those commands itself.
            self.device[index].clear();
            self.staged[index].clear();
            self.placed[index] = None;
            return Placed::Moved;
        };
        assert!(!self.lost.contains(&queue), "lost queue {queue} moved again");
        let bytes = u64::from(self.depth) * 16;
        Self::check_ram_pa(pa, bytes, "direct CQ");
        assert!(pa.is_multiple_of(PAGE), "direct CQ at {pa:#x}, not page aligned");
        assert!(self.placed[index].is_none(), "queue {queue} placed twice");
        assert_eq!(held, 0, "queue {queue} moved with commands in it");
        if self
            .placed
            .iter()
            .flatten()
            .any(|cq| cq.pa / PAGE == pa / PAGE)
        {
            // One direct CQ per page, as the kernel's read-only pages.
            return Placed::Stayed;
        }
        if let Some(outcome) = self.failing_place {
            if outcome == Placed::Lost {
                self.lost.push(queue);
            }
            return outcome;
        }
        let at = (pa - RAM_PA) as usize;
        self.ram[at..at + bytes as usize].fill(0);
        self.placed[index] = Some(PlacedCq {
            pa,
            tail: 0,
            phase: true,
            head: 0,
            sq_head: 0,
        });
        self.places += 1;
        Placed::Moved
    }

    fn release_cq(&mut self, queue: u16, head: u16) {
        assert!(!self.lost.contains(&queue), "CQ head of lost queue {queue}");
        let index = self.index(queue);
        let depth = self.depth;
        let Some(cq) = self.placed[index].as_mut() else {
            panic!("CQ head of queue {queue} released while not placed");
        };
        let used = (cq.tail + depth - cq.head) % depth;
        let moved = (head + depth - cq.head) % depth;
        assert!(
            head < depth && moved <= used,
            "CQ head {head} of queue {queue} past its tail {}",
            cq.tail
        );
        cq.head = head;
    }
}
