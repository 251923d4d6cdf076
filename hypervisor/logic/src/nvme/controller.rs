//! The virtual NVMe controller of one slice: BAR0 registers (Base 1.4 §3.1), doorbells
//! (§3.1.24-25), the guest's admin and I/O queues (§4.1), their binding to the slice's
//! hardware queue pairs, completion delivery with back-pressure and phase tags (§4.6),
//! controller reset and shutdown (§7.3, §7.6.2), and interrupts through the MSI-X table.
//!
//! Every command the guest puts in an I/O SQ takes one *slot* of the hardware queue its SQ is
//! bound to (depth - 1 slots per queue) from the moment it is fetched until its completion is
//! written into the guest's CQ. The slot number is the hardware Command Identifier, so a
//! hardware completion maps straight back to (guest SQ, guest CID). When no slot is free the
//! guest's SQ head simply stops moving; when the guest's CQ is full, completions wait in their
//! slots (never overwriting an entry the guest has not consumed).

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use tock_registers::LocalRegisterCopy;
use zerocopy::{FromBytes, IntoBytes};

use crate::bits::members;

use super::admin::{AER_SLOTS, AdminOutcome, Features, SmartCounters};
use super::backend::{MsiMessage, NvmeBackend};
use super::config::{ConfigError, ControllerConfig, HardwareQueues};
use super::identify::Identity;
use super::io::{self, CommandMemory, IoRules, Transfer};
use super::memory::{GuestMemoryFault, Ipa, Pa};
use super::msix::{MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, MsixTable};
use super::spec::{
    AQA, AsyncEvent, CAP, CC, CQE_SIZE, CSTS, CompletionEntry, PAGE_MASK, PAGE_SIZE, SQE_SIZE,
    Status, SubmissionEntry, VERSION_1_4, reg,
};

/// Bytes of BAR0: registers, doorbells, MSI-X table, PBA (4 KiB each).
pub const BAR0_SIZE: u64 = 0x4000;
/// CAP.TO: the guest waits up to 30 s (60 x 500 ms) for CSTS.RDY to change, which covers
/// commands still draining from the hardware after a reset.
const READY_TIMEOUT: u64 = 60;
/// CC bits a host may write.
const CC_WRITABLE: u32 = 0x00ff_fff1;
/// AQA bits a host may write.
const AQA_WRITABLE: u32 = 0x0fff_0fff;

/// What the controller is doing, as CSTS shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// CC.EN = 0 and nothing in flight: RDY = 0.
    Disabled,
    /// Enabled and processing commands: RDY = 1.
    Ready,
    /// CC.EN went to 0 with commands still in the hardware: RDY stays 1 until they drain.
    Resetting,
    /// CC.EN = 1 with settings the controller cannot use: CFS = 1, RDY = 0.
    Failed,
}

/// CSTS.SHST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    Normal,
    Occurring,
    Complete,
}

/// A slot of a hardware queue.
#[derive(Clone, Copy, Debug)]
pub(super) enum Slot {
    Free,
    /// A guest command the device owns. `prps`: its hardware PRP Entry 1 and 2 when the
    /// device writes memory for it (a Read), else zero.
    InFlight {
        sq: u16,
        cid: u16,
        transfer: Transfer,
        prps: (u64, u64),
    },
    /// A guest command that has completed (in hardware or by validation) and waits for room
    /// in the guest's CQ; `next` chains the CQ's waiting completions in order.
    Done {
        sq: u16,
        cid: u16,
        status: Status,
        dw0: u32,
        next: Option<SlotRef>,
    },
    /// A command the device still owns whose guest queues are gone (reset): its completion
    /// is dropped.
    Draining,
    /// The hypervisor's own Flush, sent when the guest announces a shutdown.
    Internal,
}

/// A slot: hardware queue index (0-based in the slice's list) and slot number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlotRef {
    pub queue: u16,
    pub slot: u16,
}

/// One of the slice's hardware queue pairs, as far as slots go.
#[derive(Clone, Debug)]
pub(super) struct HardwareQueue {
    pub qid: u16,
    pub slots: Vec<Slot>,
    /// Free slot numbers (a stack, allocated once).
    pub free: Vec<u16>,
    /// The guest CQ its CQ is placed in, while direct ([`super::direct`]).
    pub direct: Option<u16>,
    /// Its guest SQ was created and may become direct at its first fetch.
    pub wants_direct: bool,
    /// It could not be moved back from a guest CQ: the controller may still write there, so
    /// nothing is submitted to it and the slice is never quiescent until the kernel cancels
    /// its commands ([`VirtualNvme::cancel_hardware_commands`]).
    pub lost: bool,
}

/// A guest submission queue (ID 0 is the admin queue).
#[derive(Clone, Copy, Debug)]
pub(super) struct SubmissionQueue {
    pub base: Ipa,
    pub size: u16,
    pub head: u16,
    pub tail: u16,
    pub cq: u16,
    /// Fetched commands whose completion is not yet in the guest's CQ.
    pub outstanding: u16,
    /// Being deleted by the admin command with this CID, once `outstanding` reaches zero.
    pub deleting: Option<u16>,
    /// Its shadow EventIdx tells the guest not to ring, and is this value: commands of this
    /// SQ are outstanding, and the exit that completes them reads the shadow tail
    /// ([`ShadowDoorbells`]).
    pub quiet: Option<u16>,
}

/// A guest completion queue (ID 0 is the admin queue).
#[derive(Clone, Copy, Debug)]
pub(super) struct CompletionQueue {
    pub base: Ipa,
    pub size: u16,
    pub head: u16,
    pub tail: u16,
    pub phase: bool,
    pub vector: u16,
    pub interrupts: bool,
    /// SQs that post here.
    pub sqs: u16,
    /// First and last completion waiting for room.
    pub held: Option<(SlotRef, SlotRef)>,
    /// The guest SQ whose hardware queue writes this CQ itself, while direct
    /// ([`super::direct`]): `tail` and `phase` then follow the entries harvested.
    pub direct: Option<u16>,
    /// The head EventIdx last written for this CQ (shadow doorbells, see
    /// [`ShadowDoorbells`]): just behind a head seen, or a head seen when asking for a ring.
    pub event: u16,
}

impl CompletionQueue {
    pub fn new(base: Ipa, size: u16, vector: u16, interrupts: bool) -> Self {
        CompletionQueue {
            base,
            size,
            head: 0,
            tail: 0,
            phase: true,
            vector,
            interrupts,
            sqs: 0,
            held: None,
            direct: None,
            event: size - 1,
        }
    }

    pub fn used(&self) -> u16 {
        (self.tail + self.size - self.head) % self.size
    }

    pub fn full(&self) -> bool {
        self.used() == self.size - 1
    }

    /// The entry just behind the head: where a head EventIdx waits for no head update
    /// ([`ShadowDoorbells`]).
    pub fn behind_head(&self) -> u16 {
        (self.head + self.size - 1) % self.size
    }

    /// One more entry was written at the tail.
    pub fn advance_tail(&mut self) {
        self.tail += 1;
        if self.tail == self.size {
            self.tail = 0;
            self.phase = !self.phase;
        }
    }

    /// Takes `head` from the guest if it is a head it may write: inside the queue and only
    /// past entries the controller has posted.
    fn move_head(&mut self, head: u32) -> bool {
        let size = u32::from(self.size);
        if head >= size || (head + size - u32::from(self.head)) % size > u32::from(self.used()) {
            return false;
        }
        self.head = head as u16;
        true
    }
}

/// An admin completion waiting for room in the admin CQ.
#[derive(Clone, Copy, Debug)]
pub(super) struct AdminCompletion {
    pub cid: u16,
    pub status: Status,
    pub dw0: u32,
}

/// Error events for Asynchronous Event Requests (Base 1.4 §5.2).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Events {
    /// An event waiting for an Asynchronous Event Request.
    pub pending: Option<AsyncEvent>,
    /// An error event was reported and the host has not read the Error Information log.
    pub masked: bool,
}

/// What one call left to do before returning: flush CQs, fetch SQs, ring hardware queues,
/// signal vectors. Bit n of each set names queue/vector n.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Work {
    /// Guest CQs to post waiting completions to (bit 0: the admin queue, which also means
    /// fetching admin commands).
    pub flush: u128,
    /// Guest I/O SQs to fetch from.
    pub refetch: u128,
    /// Guest I/O SQs whose shadow tail to read and whose EventIdx to set before returning.
    settle: u128,
    /// Hardware queues (by index) to ring.
    ring: u128,
    /// MSI-X vectors to signal.
    pub vectors: u128,
}

/// Shadow doorbells (Doorbell Buffer Config, Base 1.4 §5.8): two pages of the slice's RAM,
/// indexed like the doorbell registers (SQ y tail at 2y, CQ y head at 2y + 1, 4 bytes each).
/// The guest writes its new tails and heads to `doorbells` and rings the real doorbell only
/// when the EventIdx the controller keeps in `event_indexes` asks for it. Used for I/O queues.
///
/// The host rings when its update from `old` to `new` passes the EventIdx, by the test
/// `(new - idx - 1) < (new - old)` (mod 2^16). A tail or head that wraps from the last entry
/// to 0 passes every value above `old` in that arithmetic, so no fixed EventIdx keeps a guest
/// from ringing (0x8000, used before, rang once per pass over the queue). The EventIdx that
/// asks for no ring is therefore the entry just behind the position the guest cannot pass:
///
/// - SQ tails: while an SQ has commands outstanding, an exit is bound to come for it (their
///   completion interrupt, or the CQ head ring a full CQ asked for), and that exit reads the
///   shadow tail and fetches what the guest queued meanwhile; so the guest is told not to
///   ring: EventIdx is the entry behind the controller's fetch head, which a tail cannot pass
///   without overflowing the SQ, and it follows the fetch head at each look. Once none are
///   outstanding, its next tail must ring (EventIdx = the tail), and the shadow tail is read
///   once more after that store (with a full barrier, as the guest has between its shadow
///   write and its EventIdx read), so a tail written before the guest could see the new
///   EventIdx is not missed. A batch submitted while earlier commands are in flight then
///   costs no doorbell exit (`VirtualNvme::settle_sq`).
/// - CQ heads: the controller asks for none: it reads the shadow head whenever it needs room
///   in a CQ, and asks for a ring (EventIdx = the head seen, then a barrier and another
///   look) only while something waits for room: completions on the mediated path, commands
///   on a direct queue. Otherwise EventIdx is the entry behind the last head seen, which the
///   guest's head passes only by consuming an entry posted there. Before an entry is posted
///   there, the controller reads the shadow head and moves the EventIdx behind it
///   ([`VirtualNvme::room_from_shadow`]); before a direct queue's command is committed whose
///   completion would land there, it moves it behind the head its exit read
///   ([`VirtualNvme::direct_room`]). That happens about once per pass, with no exit, and
///   removes the CQ head doorbell exit of every completion batch.
#[derive(Clone, Copy, Debug)]
pub(super) struct ShadowDoorbells {
    pub doorbells: Ipa,
    pub event_indexes: Ipa,
}

/// What a batch of hardware completions amounted to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompletionSummary {
    /// Completions of guest commands (posted to the guest's CQ, or waiting for room there).
    pub completed: usize,
    /// Completions of commands from before a reset or of the hypervisor's own flush: dropped.
    pub dropped: usize,
    /// Completions naming a slot that has no command in the hardware: ignored. A non-zero
    /// count is a physical controller or kernel bug worth reporting.
    pub unexpected: usize,
}

/// Rounds of shadow-tail reading one call makes before it only sets EventIdx
/// ([`VirtualNvme::settle_sq`]): a guest that behaves needs two.
const SETTLE_ROUNDS: u32 = 4;

/// The virtual NVMe controller of one slice.
#[derive(Debug)]
pub struct VirtualNvme {
    pub(super) config: ControllerConfig,
    pub(super) identity: Identity,
    cc: LocalRegisterCopy<u32, CC::Register>,
    aqa: u32,
    asq: u64,
    acq: u64,
    interrupt_mask: u32,
    state: State,
    shutdown: Shutdown,
    /// A shutdown needs the hypervisor's Flush sent (it waits for a free slot).
    shutdown_flush: bool,
    pub(super) sqs: Vec<Option<SubmissionQueue>>,
    pub(super) cqs: Vec<Option<CompletionQueue>>,
    pub(super) hw: Vec<HardwareQueue>,
    /// Commands the device owns (in flight, draining, internal).
    pub(super) in_flight: usize,
    pub(super) admin_pending: VecDeque<AdminCompletion>,
    /// CIDs of outstanding Asynchronous Event Requests.
    pub(super) aers: heapless::Deque<u16, AER_SLOTS>,
    pub(super) events: Events,
    pub(super) features: Features,
    /// I/O queues granted by Number of Queues (1-based counts).
    pub(super) granted_sqs: u16,
    pub(super) granted_cqs: u16,
    pub(super) smart: SmartCounters,
    pub(super) msix: MsixTable,
    /// Set by Doorbell Buffer Config, cleared by a controller reset.
    pub(super) shadow: Option<ShadowDoorbells>,
    /// The page (IPA) of each direct CQ ([`super::direct`]).
    pub(super) direct_pages: Vec<u64>,
    /// Pairs that may still become direct in this run: each move costs physical admin
    /// commands under the node's admin lock, so a guest creating and deleting queues in a
    /// loop gets a few, then mediated queues (found in review).
    pub(super) direct_moves: u32,
}

/// Moves to direct a run allows: four per hardware queue pair (Linux makes each direct once
/// per controller reset).
fn direct_moves(config: &ControllerConfig) -> u32 {
    4 * u32::from(config.queues.count)
}

/// The validator's view of one slot: guest RAM through the backend, the slot's DMA page,
/// and the pages of the direct CQs, where no data may go.
struct SlotMemory<'a, B: NvmeBackend> {
    env: &'a mut B,
    queue: u16,
    slot: u16,
    direct_pages: &'a [u64],
}

impl<B: NvmeBackend> CommandMemory for SlotMemory<'_, B> {
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault> {
        self.env.read_guest(ipa, buf)
    }
    fn dma_address(&mut self) -> Pa {
        self.env.dma_page(self.queue, self.slot).address
    }
    fn write_dma(&mut self, offset: usize, data: &[u8]) {
        let page = self.env.dma_page(self.queue, self.slot);
        if let Some(dst) = page.bytes.get_mut(offset..offset + data.len()) {
            dst.copy_from_slice(data);
        }
    }
    fn data_allowed(&self, ipa: Ipa, len: u64) -> bool {
        let (first, last) = (ipa.0 & !PAGE_MASK, (ipa.0 + len.max(1) - 1) & !PAGE_MASK);
        !self
            .direct_pages
            .iter()
            .any(|&page| (first..=last).contains(&page))
    }
}

impl VirtualNvme {
    /// A controller in its power-on state (disabled, MSI-X disabled, all vectors masked).
    pub fn new(config: ControllerConfig) -> Result<VirtualNvme, ConfigError> {
        config.validate()?;
        let HardwareQueues {
            first,
            count,
            depth,
        } = config.queues;
        let slots = depth - 1;
        let hw = (0..count)
            .map(|i| HardwareQueue {
                qid: first + i,
                slots: vec![Slot::Free; usize::from(slots)],
                free: (0..slots).rev().collect(),
                direct: None,
                wants_direct: false,
                lost: false,
            })
            .collect();
        let queues = usize::from(count) + 1;
        Ok(VirtualNvme {
            identity: Identity::new(&config),
            features: Features::new(config.volatile_write_cache),
            msix: MsixTable::new(config.msix_vectors()),
            cc: LocalRegisterCopy::new(0),
            aqa: 0,
            asq: 0,
            acq: 0,
            interrupt_mask: 0,
            state: State::Disabled,
            shutdown: Shutdown::Normal,
            shutdown_flush: false,
            sqs: vec![None; queues],
            cqs: vec![None; queues],
            hw,
            in_flight: 0,
            admin_pending: VecDeque::new(),
            aers: heapless::Deque::new(),
            events: Events::default(),
            granted_sqs: count,
            granted_cqs: count,
            smart: SmartCounters::default(),
            shadow: None,
            direct_pages: Vec::new(),
            direct_moves: direct_moves(&config),
            config,
        })
    }

    /// MSI-X vectors of the function (the capability's Table Size is this minus one); the
    /// table is at BAR0 + [`MSIX_TABLE_OFFSET`], the PBA at BAR0 + [`MSIX_PBA_OFFSET`].
    pub fn msix_vectors(&self) -> u16 {
        self.config.msix_vectors()
    }

    /// Commands of this slice the physical controller still owns. A slice's RAM must not be
    /// reused or reloaded (slice restart) until this is zero: the device may still write it.
    pub fn hardware_in_flight(&self) -> usize {
        self.in_flight
    }

    /// No command of the slice is in the hardware: every slot can be reused.
    pub fn is_quiescent(&self) -> bool {
        self.in_flight == 0 && !self.hw.iter().any(|hw| hw.lost)
    }

    /// CC.SHN was written (and no reset since).
    pub(super) fn shutting_down(&self) -> bool {
        self.shutdown != Shutdown::Normal
    }

    pub(super) fn cc_register(&self) -> LocalRegisterCopy<u32, CC::Register> {
        self.cc
    }

    fn cap(&self) -> u64 {
        let mut cap = LocalRegisterCopy::<u64, CAP::Register>::new(0);
        cap.modify(
            CAP::MQES.val(u64::from(self.config.queues.depth - 1))
                + CAP::CQR::SET
                + CAP::TO.val(READY_TIMEOUT)
                + CAP::DSTRD.val(0)
                + CAP::CSS.val(1)
                + CAP::MPSMIN.val(0)
                + CAP::MPSMAX.val(0),
        );
        cap.get()
    }

    fn csts(&self) -> u32 {
        let mut csts = LocalRegisterCopy::<u32, CSTS::Register>::new(0);
        if matches!(self.state, State::Ready | State::Resetting) {
            csts.modify(CSTS::RDY::SET);
        }
        if self.state == State::Failed {
            csts.modify(CSTS::CFS::SET);
        }
        csts.modify(match self.shutdown {
            Shutdown::Normal => CSTS::SHST::Normal,
            Shutdown::Occurring => CSTS::SHST::Occurring,
            Shutdown::Complete => CSTS::SHST::Complete,
        });
        csts.get()
    }

    // ---- BAR0 accesses ---------------------------------------------------------------------

    /// Reads `width` (1, 2, 4 or 8) bytes at `offset` in BAR0. Unaligned accesses, doorbells
    /// and undefined offsets read as zero.
    pub fn mmio_read(&self, offset: u64, width: u8) -> u64 {
        match width {
            8 if offset.is_multiple_of(8) => {
                u64::from(self.read32(offset)) | u64::from(self.read32(offset + 4)) << 32
            }
            4 if offset.is_multiple_of(4) => u64::from(self.read32(offset)),
            1 | 2 if offset.is_multiple_of(u64::from(width)) => {
                let dword = self.read32(offset & !3) >> ((offset & 3) * 8);
                u64::from(dword) & ((1 << (u32::from(width) * 8)) - 1)
            }
            _ => 0,
        }
    }

    fn read32(&self, offset: u64) -> u32 {
        match offset {
            o if o < reg::DOORBELLS => self.read_register(o),
            o if o < MSIX_TABLE_OFFSET => 0,
            o if o < MSIX_PBA_OFFSET => self.msix.read_table(o - MSIX_TABLE_OFFSET),
            o if o < BAR0_SIZE => self.msix.read_pba(o - MSIX_PBA_OFFSET),
            _ => 0,
        }
    }

    fn read_register(&self, offset: u64) -> u32 {
        match offset {
            reg::CAP => self.cap() as u32,
            o if o == reg::CAP + 4 => (self.cap() >> 32) as u32,
            reg::VS => VERSION_1_4,
            reg::INTMS | reg::INTMC => self.interrupt_mask,
            reg::CC => self.cc.get(),
            reg::CSTS => self.csts(),
            reg::AQA => self.aqa,
            reg::ASQ => self.asq as u32,
            o if o == reg::ASQ + 4 => (self.asq >> 32) as u32,
            reg::ACQ => self.acq as u32,
            o if o == reg::ACQ + 4 => (self.acq >> 32) as u32,
            _ => 0,
        }
    }

    /// Writes `width` bytes of `value` at `offset` in BAR0: registers, doorbells (which fetch,
    /// check and submit commands, ringing each hardware queue once), the MSI-X table.
    /// Accesses that are not 4 or 8 bytes wide and aligned are ignored (Base 1.4 §3.1:
    /// registers are accessed in their native width), as are writes to read-only registers.
    pub fn mmio_write(&mut self, env: &mut impl NvmeBackend, offset: u64, width: u8, value: u64) {
        let mut work = Work::default();
        match width {
            8 if offset.is_multiple_of(8) => {
                self.write32(env, offset, value as u32, &mut work);
                self.write32(env, offset + 4, (value >> 32) as u32, &mut work);
            }
            4 if offset.is_multiple_of(4) => self.write32(env, offset, value as u32, &mut work),
            _ => {}
        }
        self.finish(env, work);
    }

    fn write32(&mut self, env: &mut impl NvmeBackend, offset: u64, value: u32, work: &mut Work) {
        match offset {
            reg::INTMS => self.interrupt_mask |= value,
            reg::INTMC => self.interrupt_mask &= !value,
            reg::CC => self.write_cc(env, value, work),
            reg::AQA => self.aqa = value & AQA_WRITABLE,
            reg::ASQ => self.asq = self.asq & !0xffff_ffff | u64::from(value) & !PAGE_MASK,
            o if o == reg::ASQ + 4 => self.asq = self.asq & 0xffff_ffff | u64::from(value) << 32,
            reg::ACQ => self.acq = self.acq & !0xffff_ffff | u64::from(value) & !PAGE_MASK,
            o if o == reg::ACQ + 4 => self.acq = self.acq & 0xffff_ffff | u64::from(value) << 32,
            o if (reg::DOORBELLS..MSIX_TABLE_OFFSET).contains(&o) => {
                self.doorbell(env, (o - reg::DOORBELLS) / 4, value, work)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.msix
                    .write_table(o - MSIX_TABLE_OFFSET, value, &mut |m| env.signal(m));
            }
            _ => {}
        }
    }

    /// The MSI-X capability's Enable and Function Mask bits, as the guest last wrote them in
    /// configuration space. Unmasking sends pending vectors.
    pub fn set_msix_control(
        &mut self,
        env: &mut impl NvmeBackend,
        enabled: bool,
        function_mask: bool,
    ) {
        self.msix
            .set_control(enabled, function_mask, &mut |m: MsiMessage| env.signal(m));
    }

    // ---- enable, reset, shutdown -----------------------------------------------------------

    fn write_cc(&mut self, env: &mut impl NvmeBackend, value: u32, work: &mut Work) {
        let old = self.cc;
        let mut new = LocalRegisterCopy::<u32, CC::Register>::new(value & CC_WRITABLE);
        if old.is_set(CC::EN) && new.is_set(CC::EN) {
            // CSS, MPS and AMS may only change while disabled (Base 1.4 §3.1.5).
            new.modify(
                CC::CSS.val(old.read(CC::CSS))
                    + CC::MPS.val(old.read(CC::MPS))
                    + CC::AMS.val(old.read(CC::AMS)),
            );
        }
        self.cc = new;
        if old.is_set(CC::EN) && !new.is_set(CC::EN) {
            self.controller_reset(env);
        } else if !old.is_set(CC::EN) && new.is_set(CC::EN) {
            self.try_enable();
        }
        if new.read(CC::SHN) != 0 && old.read(CC::SHN) == 0 {
            // The hypervisor flushes the slice's namespace once the slice's commands have
            // drained, so what the guest wrote survives a power loss of the node. Its Flush
            // and what is left in flight complete through the hypervisor, and no queue
            // becomes direct until the next reset (the Flush's completion would land in it).
            self.end_all_direct(env, work);
            self.hw.iter_mut().for_each(|hw| hw.wants_direct = false);
            self.shutdown = Shutdown::Occurring;
            self.shutdown_flush = self.state == State::Ready && self.config.volatile_write_cache;
        }
    }

    /// CC.EN = 1: checks the configuration and the admin queue, then becomes ready.
    fn try_enable(&mut self) {
        if self.state != State::Disabled || !self.cc.is_set(CC::EN) {
            return;
        }
        let cc = self.cc;
        let entry_sizes_ok =
            matches!(cc.read(CC::IOSQES), 0 | 6) && matches!(cc.read(CC::IOCQES), 0 | 4);
        let aqa = LocalRegisterCopy::<u32, AQA::Register>::new(self.aqa);
        let sq_size = aqa.read(AQA::ASQS) as u16 + 1;
        let cq_size = aqa.read(AQA::ACQS) as u16 + 1;
        let ram = &self.config.ram;
        let usable = cc.read(CC::CSS) == 0
            && cc.read(CC::MPS) == 0
            && cc.read(CC::AMS) == 0
            && entry_sizes_ok
            && sq_size >= 2
            && cq_size >= 2
            && ram.contains(Ipa(self.asq), u64::from(sq_size) * SQE_SIZE)
            && ram.contains(Ipa(self.acq), u64::from(cq_size) * CQE_SIZE);
        if !usable {
            self.state = State::Failed;
            return;
        }
        self.sqs[0] = Some(SubmissionQueue {
            base: Ipa(self.asq),
            size: sq_size,
            head: 0,
            tail: 0,
            cq: 0,
            outstanding: 0,
            deleting: None,
            quiet: None,
        });
        let mut admin_cq = CompletionQueue::new(Ipa(self.acq), cq_size, 0, true);
        admin_cq.sqs = 1;
        self.cqs[0] = Some(admin_cq);
        self.state = State::Ready;
        self.shutdown = Shutdown::Normal;
    }

    /// Controller reset (CC.EN 1 -> 0, Base 1.4 §7.3.2): every guest queue is deleted,
    /// outstanding Asynchronous Event Requests are dropped, commands in the hardware are left
    /// to drain (their completions are dropped) and CSTS.RDY stays 1 until they have. Direct
    /// queues go back to the hypervisor's memory first, which ends their commands.
    fn controller_reset(&mut self, env: &mut impl NvmeBackend) {
        self.end_all_direct(env, &mut Work::default());
        for hw in &mut self.hw {
            hw.wants_direct = false;
            for (n, slot) in hw.slots.iter_mut().enumerate() {
                match slot {
                    Slot::InFlight { .. } | Slot::Internal => *slot = Slot::Draining,
                    Slot::Done { .. } => {
                        *slot = Slot::Free;
                        hw.free.push(n as u16);
                    }
                    Slot::Free | Slot::Draining => {}
                }
            }
        }
        self.sqs.fill(None);
        self.cqs.fill(None);
        self.admin_pending.clear();
        self.aers.clear();
        self.events = Events::default();
        self.features = Features::new(self.config.volatile_write_cache);
        self.granted_sqs = self.config.queues.count;
        self.granted_cqs = self.config.queues.count;
        self.shutdown = Shutdown::Normal;
        self.shutdown_flush = false;
        self.shadow = None;
        self.state = if self.in_flight > 0 {
            State::Resetting
        } else {
            State::Disabled
        };
    }

    /// A function level reset (or the slice being restarted): a controller reset that also
    /// returns the registers and the MSI-X table to their power-on values. Commands in the
    /// hardware still drain; see [`VirtualNvme::is_quiescent`].
    pub fn function_level_reset(&mut self, env: &mut impl NvmeBackend) {
        self.controller_reset(env);
        self.cc.set(0);
        self.aqa = 0;
        self.asq = 0;
        self.acq = 0;
        self.interrupt_mask = 0;
        self.msix.reset();
    }

    /// The slice's run ended (the next may be a new tenant's): a function level reset, and the
    /// SMART / Health counters start again from zero. They counted the last run's I/O, which
    /// the next tenant must not learn (found in review).
    pub fn restart(&mut self, env: &mut impl NvmeBackend) {
        self.function_level_reset(env);
        self.direct_moves = direct_moves(&self.config);
        self.smart = SmartCounters::default();
    }

    /// Whatever waited for the hardware to drain: a reset ends (and a pending enable
    /// starts), a shutdown sends its Flush or completes.
    fn after_drain(&mut self, env: &mut impl NvmeBackend, work: &mut Work) {
        if self.in_flight != 0 {
            return;
        }
        if self.state == State::Resetting {
            self.state = State::Disabled;
            self.try_enable();
        }
        if self.shutdown == Shutdown::Occurring {
            if self.shutdown_flush && self.state == State::Ready {
                self.send_shutdown_flush(env, work);
            } else {
                self.shutdown_flush = false;
                self.shutdown = Shutdown::Complete;
            }
        }
    }

    /// Sends the shutdown Flush on the first hardware queue once it has a free slot (slots
    /// may all hold completions waiting for room in a full guest CQ).
    fn send_shutdown_flush(&mut self, env: &mut impl NvmeBackend, work: &mut Work) {
        let hw = &mut self.hw[0];
        if hw.lost {
            // Nothing goes to a pair that may still write a guest CQ.
            self.shutdown_flush = false;
            self.shutdown = Shutdown::Complete;
            return;
        }
        let Some(slot) = hw.free.pop() else {
            return;
        };
        hw.slots[usize::from(slot)] = Slot::Internal;
        let flush = SubmissionEntry {
            opcode: super::spec::io::FLUSH,
            command_id: slot.into(),
            nsid: self.config.namespace.physical_nsid.into(),
            ..SubmissionEntry::default()
        };
        env.submit(hw.qid, &flush);
        work.ring |= 1;
        self.in_flight += 1;
        self.shutdown_flush = false;
    }

    // ---- doorbells ---------------------------------------------------------------------------

    /// A write to doorbell register `index` (SQ y tail = 2y, CQ y head = 2y + 1).
    fn doorbell(&mut self, env: &mut impl NvmeBackend, index: u64, value: u32, work: &mut Work) {
        if self.state != State::Ready {
            return;
        }
        let qid = (index / 2) as usize;
        if index.is_multiple_of(2) {
            let Some(sq) = self.sqs.get_mut(qid).and_then(Option::as_mut) else {
                return self.raise_event(AsyncEvent::InvalidDoorbellRegister, work);
            };
            if sq.deleting.is_some() {
                return;
            }
            if value >= u32::from(sq.size) {
                return self.raise_event(AsyncEvent::InvalidDoorbellValue, work);
            }
            sq.tail = value as u16;
            if qid == 0 {
                work.flush |= 1;
            } else {
                self.fetch_io(env, qid, work);
            }
        } else {
            if !matches!(self.cqs.get(qid), Some(Some(_))) {
                return self.raise_event(AsyncEvent::InvalidDoorbellRegister, work);
            }
            // A direct CQ's head may pass entries the controller wrote since the last look.
            self.harvest(env, qid, work);
            let Some(cq) = self.cqs[qid].as_mut() else {
                return;
            };
            if !cq.move_head(value) {
                return self.raise_event(AsyncEvent::InvalidDoorbellValue, work);
            }
            if let Some(sq) = self.release_direct_head(env, qid) {
                // Room in a direct CQ is room for the SQ's next commands.
                work.refetch |= 1 << sq;
            }
            work.flush |= 1 << qid;
        }
    }

    /// Fetches, checks and submits the commands between I/O SQ `qid`'s head and tail, as long
    /// as its hardware queue has free slots.
    fn fetch_io(&mut self, env: &mut impl NvmeBackend, qid: usize, work: &mut Work) {
        let queue = qid - 1;
        work.settle |= 1 << qid;
        if self.hw[queue].wants_direct && self.sqs[qid].is_some_and(|sq| sq.head != sq.tail) {
            self.start_direct(env, qid);
        }
        if self.hw[queue].lost {
            return;
        }
        let direct = self.hw[queue].direct.map(usize::from);
        if let Some(cq) = direct {
            self.sync_direct_cq(env, cq, work);
        }
        // Heads at which this call asked the guest to ring its CQ head (direct queues).
        let (mut asks, mut asked_at) = (0, None);
        loop {
            let Some(sq) = self.sqs[qid].as_ref() else {
                return;
            };
            if sq.head == sq.tail || sq.deleting.is_some() {
                return;
            }
            if let Some(cq) = direct
                && !self.direct_room(env, queue, cq)
            {
                // Commands wait for room in the CQ: ask for the guest's next head update to
                // ring (no completion exit is bound to come), then look at the shadow head
                // again. Again whenever a look found the head moved: the guest may have moved
                // it before it saw the ask, and a command committed on the asked entry moves
                // the EventIdx behind the head (`direct_room`), undoing it. A head moves only
                // over entries the controller wrote, at most the CQ's size plus what this
                // call commits, which bounds the asks of a guest that keeps moving it.
                let (head, size) = self.cqs[cq].map_or((0, 0), |c| (c.head, c.size));
                let bound = 2 * usize::from(size) + 2;
                if self.shadow.is_some() && asked_at != Some(head) && asks < bound {
                    asks += 1;
                    asked_at = Some(head);
                    self.set_cq_event(env, cq, head);
                    env.fence();
                    self.sync_direct_cq(env, cq, work);
                    continue;
                }
                return;
            }
            let Some(sq) = self.sqs[qid].as_mut() else {
                return;
            };
            let hw = &mut self.hw[queue];
            let Some(slot) = hw.free.pop() else {
                return;
            };
            let mut raw = [0u8; SQE_SIZE as usize];
            let at = Ipa(sq.base.0 + u64::from(sq.head) * SQE_SIZE);
            if env.read_guest(at, &mut raw).is_err() {
                hw.free.push(slot);
                return;
            }
            let guest = SubmissionEntry::read_from_bytes(&raw).unwrap_or_default();
            let cid = guest.command_id.get();
            if direct.is_some() && self.cid_in_flight(queue, cid) {
                // Waits for its namesake's completion (see `super::direct`).
                self.hw[queue].free.push(slot);
                return;
            }
            let Some(sq) = self.sqs[qid].as_mut() else {
                return;
            };
            sq.head = (sq.head + 1) % sq.size;
            sq.outstanding += 1;
            let cq = sq.cq;
            let hw_qid = self.hw[queue].qid;
            let mut memory = SlotMemory {
                env: &mut *env,
                queue: hw_qid,
                slot,
                direct_pages: &self.direct_pages,
            };
            let rules = self.io_rules();
            let checked = io::translate(&guest, &rules, &mut memory);
            // A direct queue's controller writes the guest's CQ, so it completes refused
            // commands too (`super::direct`).
            let checked = match (checked, direct) {
                (Err(_), Some(_)) => Ok(io::Translated {
                    command: super::direct::refused_command(cid),
                    transfer: Transfer::None,
                }),
                (checked, _) => checked,
            };
            match checked {
                Ok(translated) => {
                    let mut command = translated.command;
                    command.command_id = if direct.is_some() { cid } else { slot }.into();
                    let prps = match translated.transfer {
                        Transfer::Read { .. } => (command.prp1.get(), command.prp2.get()),
                        _ => (0, 0),
                    };
                    self.hw[queue].slots[usize::from(slot)] = Slot::InFlight {
                        sq: qid as u16,
                        cid,
                        transfer: translated.transfer,
                        prps,
                    };
                    self.in_flight += 1;
                    env.submit(hw_qid, &command);
                    work.ring |= 1 << queue;
                }
                Err(status) => {
                    let at = SlotRef {
                        queue: queue as u16,
                        slot,
                    };
                    self.hold(at, qid as u16, cid, status, 0, cq);
                    self.flush_cq(env, usize::from(cq), work);
                }
            }
        }
    }

    fn io_rules(&self) -> IoRules {
        IoRules {
            ram: self.config.ram,
            namespace: self.config.namespace,
            max_transfer: self.config.max_transfer(),
            force_unit_access: self.config.volatile_write_cache && !self.features.write_cache,
        }
    }

    // ---- completions -----------------------------------------------------------------------

    /// Marks `at` done and appends it to CQ `cq`'s waiting completions.
    pub(super) fn hold(
        &mut self,
        at: SlotRef,
        sq: u16,
        cid: u16,
        status: Status,
        dw0: u32,
        cq: u16,
    ) {
        let hw = &mut self.hw[usize::from(at.queue)];
        let Some(cq) = self.cqs[usize::from(cq)].as_mut().filter(|_| cq != 0) else {
            // Cannot happen (an I/O CQ outlives its SQs): free the slot rather than leak it.
            hw.slots[usize::from(at.slot)] = Slot::Free;
            hw.free.push(at.slot);
            return;
        };
        hw.slots[usize::from(at.slot)] = Slot::Done {
            sq,
            cid,
            status,
            dw0,
            next: None,
        };
        cq.held = match cq.held {
            None => Some((at, at)),
            Some((first, last)) => {
                if let Slot::Done { next, .. } =
                    &mut self.hw[usize::from(last.queue)].slots[usize::from(last.slot)]
                {
                    *next = Some(at);
                }
                Some((first, at))
            }
        };
    }

    /// Frees slot `at` (it holds nothing the device or the guest still needs).
    pub(super) fn free_slot(&mut self, at: SlotRef) {
        let hw = &mut self.hw[usize::from(at.queue)];
        hw.slots[usize::from(at.slot)] = Slot::Free;
        hw.free.push(at.slot);
    }

    /// Writes one entry at the CQ's tail with the current phase tag (the dword holding the
    /// phase tag last) and advances the tail.
    fn post(env: &mut impl NvmeBackend, cq: &mut CompletionQueue, mut entry: CompletionEntry) {
        let status = entry.status.get() & !1 | u16::from(cq.phase);
        entry.status = status.into();
        let at = Ipa(cq.base.0 + u64::from(cq.tail) * CQE_SIZE);
        let bytes = entry.as_bytes();
        // The queue lies inside the slice's RAM (checked at creation); a backend failure can
        // only drop the entry.
        let _ = env.write_guest(at, &bytes[..12]);
        let _ = env.write_guest(Ipa(at.0 + 12), &bytes[12..]);
        cq.advance_tail();
    }

    /// Posts I/O CQ `qid`'s waiting completions while it has room; `qid` 0 is the admin CQ,
    /// whose flush also fetches admin commands.
    fn flush_cq(&mut self, env: &mut impl NvmeBackend, qid: usize, work: &mut Work) {
        if qid == 0 {
            return self.run_admin(env, work);
        }
        loop {
            let Some(cq) = self.cqs.get(qid).and_then(Option::as_ref) else {
                return;
            };
            let Some((first, last)) = cq.held else {
                return;
            };
            let at_event = self.shadow.is_some() && cq.tail == cq.event;
            if (cq.full() || at_event) && !self.room_from_shadow(env, qid) {
                return;
            }
            let queue = usize::from(first.queue);
            let Slot::Done {
                sq,
                cid,
                status,
                dw0,
                next,
            } = self.hw[queue].slots[usize::from(first.slot)]
            else {
                // Cannot happen: only done slots are chained.
                if let Some(cq) = self.cqs[qid].as_mut() {
                    cq.held = None;
                }
                return;
            };
            let sq_head = self.sqs[usize::from(sq)].map_or(0, |s| s.head);
            let entry = CompletionEntry {
                dw0: dw0.into(),
                sq_head: sq_head.into(),
                sq_id: sq.into(),
                command_id: cid.into(),
                status: (status.raw() << 1).into(),
                ..CompletionEntry::default()
            };
            let cq = self.cqs[qid].as_mut().expect("checked above");
            Self::post(env, cq, entry);
            cq.held = next.map(|n| (n, last));
            if cq.interrupts {
                work.vectors |= 1 << cq.vector;
            }
            self.hw[queue].slots[usize::from(first.slot)] = Slot::Free;
            self.hw[queue].free.push(first.slot);
            work.refetch |= 1 << (queue + 1);
            self.command_done(sq, work);
        }
    }

    /// CQ `qid` is full, or its next entry is where its EventIdx sits: looks for room the
    /// guest made in its shadow head. Finding none, asks for a ring at the next head update
    /// (EventIdx = the head seen), then looks again after a barrier, since the guest may have
    /// moved its head before it saw the new EventIdx. Finding room, puts the EventIdx behind
    /// the head ([`ShadowDoorbells`]).
    fn room_from_shadow(&mut self, env: &mut impl NvmeBackend, qid: usize) -> bool {
        if self.shadow.is_none() {
            return false;
        }
        self.read_shadow_head(env, qid);
        if let Some(cq) = self.cqs[qid].filter(CompletionQueue::full) {
            self.set_cq_event(env, qid, cq.head);
            env.fence();
            self.read_shadow_head(env, qid);
        }
        let room = self.cqs[qid].is_some_and(|cq| !cq.full());
        if room {
            self.event_behind_head(env, qid);
        }
        room
    }

    /// Sets I/O CQ `qid`'s head EventIdx to `value` (when shadow doorbells are on).
    pub(super) fn set_cq_event(&mut self, env: &mut impl NvmeBackend, qid: usize, value: u16) {
        if let Some(cq) = self.cqs[qid].as_mut() {
            cq.event = value;
        }
        self.write_event_index(env, 2 * qid + 1, value);
    }

    /// Puts I/O CQ `qid`'s head EventIdx just behind its head, where no head update of the
    /// guest's reaches before an entry is posted there ([`ShadowDoorbells`]). This undoes an
    /// ask for a ring; callers do it where there is room, and whoever then finds none asks
    /// again. No barrier: a guest that reads the old value rings at worst once for nothing.
    pub(super) fn event_behind_head(&mut self, env: &mut impl NvmeBackend, qid: usize) {
        if let Some(cq) = self.cqs[qid].filter(|cq| cq.event != cq.behind_head()) {
            self.set_cq_event(env, qid, cq.behind_head());
        }
    }

    /// Takes I/O CQ `qid`'s head from the shadow doorbell, if it is one the guest may write
    /// (anything else is ignored: the guest only delays its own completions).
    pub(super) fn read_shadow_head(&mut self, env: &mut impl NvmeBackend, qid: usize) {
        let Some(at) = self.shadow_entry(|s| s.doorbells, 2 * qid + 1) else {
            return;
        };
        let mut raw = [0u8; 4];
        if env.read_guest(at, &mut raw).is_ok()
            && let Some(cq) = self.cqs[qid].as_mut()
        {
            cq.move_head(u32::from_le_bytes(raw));
        }
    }

    /// Brings I/O SQ `qid` in line with its shadow doorbell (see [`ShadowDoorbells`]): with
    /// `read`, takes a tail the guest wrote there without ringing (and fetches from it);
    /// then sets the EventIdx for the guest's next tail: out of reach while commands are
    /// outstanding, the tail itself when none are, followed by one more look at the shadow.
    fn settle_sq(&mut self, env: &mut impl NvmeBackend, qid: usize, read: bool, work: &mut Work) {
        let Some(sq) = self.sqs.get(qid).copied().flatten() else {
            return;
        };
        if sq.deleting.is_some() {
            return;
        }
        if read && self.take_shadow_tail(env, qid) {
            // Fetching settles this SQ again, in the next round.
            return self.fetch_io(env, qid, work);
        }
        // No completion exit picks up a direct queue's tail: every tail must ring.
        let direct = self.hw[qid - 1].direct.is_some();
        if sq.outstanding > 0 && !direct {
            // Just behind the fetch head: the guest's tail cannot pass it without overflowing
            // its SQ, even after a wrap to 0 ([`ShadowDoorbells`]).
            let behind = (sq.head + sq.size - 1) % sq.size;
            if sq.quiet != Some(behind) {
                self.write_event_index(env, 2 * qid, behind);
                self.set_quiet(qid, Some(behind));
            }
            return;
        }
        self.write_event_index(env, 2 * qid, sq.tail);
        self.set_quiet(qid, None);
        if read {
            env.fence();
            if self.take_shadow_tail(env, qid) {
                self.fetch_io(env, qid, work);
            }
        }
    }

    fn set_quiet(&mut self, qid: usize, quiet: Option<u16>) {
        if let Some(sq) = self.sqs[qid].as_mut() {
            sq.quiet = quiet;
        }
    }

    /// Reads I/O SQ `qid`'s shadow tail; a valid one (inside the queue) that differs from the
    /// tail the controller knows becomes its tail. Anything else is ignored: a guest that
    /// writes a bogus shadow tail only delays its own commands.
    fn take_shadow_tail(&mut self, env: &mut impl NvmeBackend, qid: usize) -> bool {
        let Some(at) = self.shadow_entry(|s| s.doorbells, 2 * qid) else {
            return false;
        };
        let mut raw = [0u8; 4];
        if env.read_guest(at, &mut raw).is_err() {
            return false;
        }
        let value = u32::from_le_bytes(raw);
        match self.sqs[qid].as_mut() {
            Some(sq) if value < u32::from(sq.size) && value != u32::from(sq.tail) => {
                sq.tail = value as u16;
                true
            }
            _ => false,
        }
    }

    /// Writes EventIdx `index` (doorbell numbering) when shadow doorbells are on.
    pub(super) fn write_event_index(&self, env: &mut impl NvmeBackend, index: usize, value: u16) {
        if let Some(at) = self.shadow_entry(|s| s.event_indexes, index) {
            // The page lies inside the slice's RAM (checked by Doorbell Buffer Config).
            let _ = env.write_guest(at, &u32::from(value).to_le_bytes());
        }
    }

    /// Where entry `index` of one of the shadow pages is.
    fn shadow_entry(&self, page: impl Fn(&ShadowDoorbells) -> Ipa, index: usize) -> Option<Ipa> {
        let shadow = self.shadow.as_ref()?;
        let offset = 4 * index as u64;
        (offset < PAGE_SIZE).then(|| Ipa(page(shadow).0 + offset))
    }

    /// A command of guest SQ `sq` has its completion in the guest's CQ.
    pub(super) fn command_done(&mut self, sq: u16, work: &mut Work) {
        let Some(queue) = self.sqs[usize::from(sq)].as_mut() else {
            return;
        };
        queue.outstanding -= 1;
        if sq != 0 {
            work.settle |= 1 << sq;
        }
        if queue.outstanding == 0
            && let Some(cid) = queue.deleting
        {
            self.finish_sq_deletion(sq, cid, work);
        }
    }

    /// Removes a deleted SQ once its last command has completed, and completes the Delete.
    pub(super) fn finish_sq_deletion(&mut self, sq: u16, cid: u16, work: &mut Work) {
        if let Some(queue) = self.sqs[usize::from(sq)].take()
            && let Some(cq) = self.cqs[usize::from(queue.cq)].as_mut()
        {
            cq.sqs -= 1;
        }
        self.complete_admin(cid, Status::SUCCESS, 0, work);
    }

    /// Queues an admin completion; it is posted when the admin CQ has room.
    pub(super) fn complete_admin(&mut self, cid: u16, status: Status, dw0: u32, work: &mut Work) {
        self.admin_pending
            .push_back(AdminCompletion { cid, status, dw0 });
        work.flush |= 1;
    }

    /// Posts waiting admin completions, then fetches and executes admin commands while the
    /// admin CQ has room for their completions.
    fn run_admin(&mut self, env: &mut impl NvmeBackend, work: &mut Work) {
        loop {
            let Some(cq) = self.cqs[0].as_mut() else {
                return;
            };
            if let Some(done) = self.admin_pending.front().copied() {
                if cq.full() {
                    return;
                }
                let sq_head = self.sqs[0].map_or(0, |s| s.head);
                let entry = CompletionEntry {
                    dw0: done.dw0.into(),
                    sq_head: sq_head.into(),
                    sq_id: 0.into(),
                    command_id: done.cid.into(),
                    status: (done.status.raw() << 1).into(),
                    ..CompletionEntry::default()
                };
                Self::post(env, cq, entry);
                self.admin_pending.pop_front();
                work.vectors |= 1;
                continue;
            }
            if cq.full() {
                return;
            }
            let Some(sq) = self.sqs[0].as_mut() else {
                return;
            };
            if sq.head == sq.tail {
                return;
            }
            let mut raw = [0u8; SQE_SIZE as usize];
            let at = Ipa(sq.base.0 + u64::from(sq.head) * SQE_SIZE);
            if env.read_guest(at, &mut raw).is_err() {
                return;
            }
            sq.head = (sq.head + 1) % sq.size;
            let command = SubmissionEntry::read_from_bytes(&raw).unwrap_or_default();
            let cid = command.command_id.get();
            match self.admin_command(env, &command, work) {
                AdminOutcome::Complete { status, dw0 } => {
                    self.complete_admin(cid, status, dw0, work)
                }
                AdminOutcome::Held => {}
            }
            if self.state != State::Ready {
                return;
            }
        }
    }

    /// Reports an asynchronous event (or keeps it for the next Asynchronous Event Request).
    /// Error events are masked from the first report until the host reads the Error
    /// Information log (Base 1.4 §5.2).
    pub(super) fn raise_event(&mut self, event: AsyncEvent, work: &mut Work) {
        if self.events.masked || self.events.pending.is_some() {
            return;
        }
        self.events.pending = Some(event);
        self.deliver_events(work);
    }

    /// Completes an outstanding Asynchronous Event Request with the pending event.
    pub(super) fn deliver_events(&mut self, work: &mut Work) {
        let Some(event) = self.events.pending else {
            return;
        };
        let Some(cid) = self.aers.pop_front() else {
            return;
        };
        self.events.pending = None;
        self.events.masked = true;
        self.complete_admin(cid, Status::SUCCESS, event.dw0(), work);
    }

    /// The physical controller completed commands on hardware queue `queue` (its physical
    /// queue ID): their guest completions are posted (or wait for room in the guest's CQ),
    /// completions of commands from before a reset are dropped, more guest commands are
    /// submitted if slots freed up (one ring per hardware queue), and the MSI-X vectors of
    /// the guest CQs that got entries are signalled once each.
    pub fn hardware_completions(
        &mut self,
        env: &mut impl NvmeBackend,
        queue: u16,
        entries: impl IntoIterator<Item = CompletionEntry>,
    ) -> CompletionSummary {
        let mut summary = CompletionSummary::default();
        let Some(index) = self
            .hardware_queue_index(queue)
            .filter(|&i| self.hw[i].direct.is_none())
        else {
            // Not the slice's, or its CQ is the guest's: the kernel cannot have read these.
            summary.unexpected = entries.into_iter().count();
            return summary;
        };
        let mut work = Work::default();
        for entry in entries {
            let slot = entry.command_id.get();
            match self.hw[index].slots.get(usize::from(slot)).copied() {
                Some(Slot::InFlight {
                    sq, cid, transfer, ..
                }) => {
                    let status = entry.status();
                    self.smart.count(transfer, status);
                    self.in_flight -= 1;
                    let cq = self.sqs[usize::from(sq)].map_or(0, |s| s.cq);
                    let at = SlotRef {
                        queue: index as u16,
                        slot,
                    };
                    self.hold(at, sq, cid, status, entry.dw0.get(), cq);
                    work.flush |= 1 << cq;
                    summary.completed += 1;
                }
                Some(Slot::Draining | Slot::Internal) => {
                    self.hw[index].slots[usize::from(slot)] = Slot::Free;
                    self.hw[index].free.push(slot);
                    self.in_flight -= 1;
                    work.refetch |= 1 << (index + 1);
                    summary.dropped += 1;
                }
                _ => summary.unexpected += 1,
            }
        }
        self.finish(env, work);
        summary
    }

    /// The kernel gave up on the commands it had on hardware queue `queue` (the physical
    /// controller was reset or the queue deleted): the guest's commands complete with Command
    /// Abort Requested (retryable), drained ones are forgotten.
    pub fn cancel_hardware_commands(&mut self, env: &mut impl NvmeBackend, queue: u16) {
        let Some(index) = self.hardware_queue_index(queue) else {
            return;
        };
        let mut work = Work::default();
        // A direct pair is gone with the rest: what the controller wrote into the guest's CQ
        // before counts, the rest is aborted.
        self.end_direct(env, index, false, &mut work);
        self.hw[index].lost = false;
        for slot in 0..self.hw[index].slots.len() {
            match self.hw[index].slots[slot] {
                Slot::InFlight { sq, cid, .. } => {
                    self.in_flight -= 1;
                    let cq = self.sqs[usize::from(sq)].map_or(0, |s| s.cq);
                    let at = SlotRef {
                        queue: index as u16,
                        slot: slot as u16,
                    };
                    self.hold(at, sq, cid, Status::ABORT_REQUESTED, 0, cq);
                    work.flush |= 1 << cq;
                }
                Slot::Draining | Slot::Internal => {
                    self.hw[index].slots[slot] = Slot::Free;
                    self.hw[index].free.push(slot as u16);
                    self.in_flight -= 1;
                    work.refetch |= 1 << (index + 1);
                }
                Slot::Free | Slot::Done { .. } => {}
            }
        }
        self.finish(env, work);
    }

    pub(super) fn hardware_queue_index(&self, queue: u16) -> Option<usize> {
        let index = usize::from(queue.checked_sub(self.config.queues.first)?);
        (index < self.hw.len()).then_some(index)
    }

    /// Does what `work` asks until nothing is left: post completions, fetch commands that
    /// now have slots, settle the SQs' shadow doorbells, then ring each hardware queue once
    /// and signal each vector once.
    pub(super) fn finish(&mut self, env: &mut impl NvmeBackend, mut work: Work) {
        let mut round = 0;
        loop {
            // Posting frees slots (more to fetch); fetching may complete refused commands
            // (more to post). Both only consume guest entries, so this ends.
            loop {
                if let Some(qid) = members(work.flush).next() {
                    work.flush &= !(1 << qid);
                    self.flush_cq(env, qid, &mut work);
                } else if let Some(qid) = members(work.refetch).next() {
                    work.refetch &= !(1 << qid);
                    if qid > 0 && qid < self.sqs.len() {
                        self.fetch_io(env, qid, &mut work);
                    }
                } else {
                    break;
                }
            }
            let settle = core::mem::take(&mut work.settle);
            if settle == 0 || self.shadow.is_none() {
                break;
            }
            // A new shadow tail found means more fetching, and another round. A guest that
            // keeps rewriting its shadow tail as it is read gets a bounded number of rounds;
            // the last one only sets EventIdx (and may miss a tail written meanwhile, which
            // delays only that guest's commands until it rings).
            round += 1;
            let read = round <= SETTLE_ROUNDS;
            for qid in members(settle) {
                self.settle_sq(env, qid, read, &mut work);
            }
        }
        self.after_drain(env, &mut work);
        for queue in members(work.ring) {
            env.ring(self.hw[queue].qid);
        }
        if work.vectors != 0 {
            self.msix.fire(work.vectors, &mut |m| env.signal(m));
        }
    }
}
