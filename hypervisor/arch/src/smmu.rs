//! The physical SMMUv3 (Arm IHI 0070): its register frames (§6), a linear stream table (§3.3),
//! the command queue (§4) and the event queue (§7), driven with the values of
//! `microvisor_logic::smmu`. Every stream aborts unless the kernel attaches it to a slice's
//! stage 2 or lets it bypass; every wait for the hardware is bounded.
//!
//! Memory: the kernel claims [`MemoryLayout::bytes`] and hands the region over. The stream
//! table and the command queue are written by the CPU and only read by the SMMU
//! ([`PhysRegion`]); the event queue is written by the SMMU ([`SharedMemory`], volatile reads).
//! The SMMU must be IO-coherent (checked), so no cache maintenance is needed.

use core::fmt;
use core::time::Duration;

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

use microvisor_logic::smmu::{
    self, CR0, Command, CommandError, EVENT_BYTES, EVENTQ_POINTER, EntryError, Event, Features,
    GlobalErrors, MemoryLayout, QueueIndex, STE_BYTES, StreamTableEntry, StreamTableSize,
    Unsupported,
};

use crate::memory::{PhysRegion, SharedMemory};
use crate::pci::barrier;

register_structs! {
    /// SMMU register pages 0 and 1 (IHI 0070 §6.2, Tables 6-1 and 6-2), the registers the
    /// hypervisor uses.
    SmmuRegisters {
        (0x0000 => idr0: ReadOnly<u32>),
        (0x0004 => idr1: ReadOnly<u32>),
        (0x0008 => _reserved0),
        (0x0014 => idr5: ReadOnly<u32>),
        (0x0018 => _reserved1),
        (0x0020 => cr0: ReadWrite<u32, CR0::Register>),
        (0x0024 => cr0ack: ReadOnly<u32, CR0::Register>),
        (0x0028 => cr1: ReadWrite<u32>),
        (0x002c => cr2: ReadWrite<u32>),
        (0x0030 => _reserved2),
        (0x0044 => gbpa: ReadWrite<u32>),
        (0x0048 => _reserved3),
        (0x0050 => irq_ctrl: ReadWrite<u32>),
        (0x0054 => irq_ctrlack: ReadOnly<u32>),
        (0x0058 => _reserved4),
        (0x0060 => gerror: ReadOnly<u32>),
        (0x0064 => gerrorn: ReadWrite<u32>),
        (0x0068 => _reserved5),
        (0x0080 => strtab_base: ReadWrite<u64>),
        (0x0088 => strtab_base_cfg: ReadWrite<u32>),
        (0x008c => _reserved6),
        (0x0090 => cmdq_base: ReadWrite<u64>),
        (0x0098 => cmdq_prod: ReadWrite<u32>),
        (0x009c => cmdq_cons: ReadWrite<u32>),
        (0x00a0 => eventq_base: ReadWrite<u64>),
        (0x00a8 => _reserved7),
        (0x100a8 => eventq_prod: ReadWrite<u32, EVENTQ_POINTER::Register>),
        (0x100ac => eventq_cons: ReadWrite<u32, EVENTQ_POINTER::Register>),
        (0x100b0 => _reserved8),
        (0x20000 => @END),
    }
}

// The offsets the logic crate documents are the ones declared here.
const _: () = {
    assert!(smmu::offset::EVENTQ_PROD == 0x1_00a8 && smmu::offset::CMDQ_CONS == 0x9c);
};

/// How long the SMMU may take to acknowledge a control register write or to consume the
/// commands up to a CMD_SYNC (microseconds on hardware; this only catches a dead SMMU).
const TIMEOUT: Duration = Duration::from_millis(100);

/// Why the SMMU could not be brought up or did not do what it was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmmuError {
    /// The SMMU lacks something the hypervisor needs.
    Unsupported(Unsupported),
    /// The memory handed over is smaller than the layout or misaligned.
    BadMemory,
    /// `what` did not happen within [`TIMEOUT`].
    Timeout { what: &'static str },
    /// The command queue stopped on an error (the failed command was replaced by a CMD_SYNC
    /// and the queue restarted).
    Command(CommandError),
    /// The StreamID is beyond the stream table.
    NoSuchStream(u32),
    /// The stage-2 stream table entry cannot be made.
    Entry(EntryError),
}

impl fmt::Display for SmmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported(why) => write!(f, "unusable: {why}"),
            Self::BadMemory => f.write_str("the memory for its tables is too small or misaligned"),
            Self::Timeout { what } => write!(
                f,
                "timed out after {} ms waiting for {what}",
                TIMEOUT.as_millis()
            ),
            Self::Command(e) => write!(f, "command queue: {e}"),
            Self::NoSuchStream(s) => write!(f, "stream {s:#x} is beyond the stream table"),
            Self::Entry(e) => write!(f, "stream table entry: {e}"),
        }
    }
}

/// The SMMU's register frames, as found in the firmware DT (created by `boot/`).
pub struct SmmuFrames {
    base: u64,
}

impl SmmuFrames {
    /// # Safety
    /// `base` must be the SMMU's two 64 KiB register pages, identity mapped as Device memory,
    /// and only the [`Smmu`] made from this value may drive them.
    pub unsafe fn new(base: u64) -> Self {
        Self { base }
    }

    fn registers(&self) -> &'static SmmuRegisters {
        // SAFETY: `new`'s caller guaranteed the frames are mapped and ours alone.
        unsafe { &*(self.base as *const SmmuRegisters) }
    }

    /// Physical address of the register frames.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// What the SMMU's ID registers say (needed to size its memory before [`Smmu::bring_up`]).
    pub fn features(&self) -> Features {
        let r = self.registers();
        Features::decode(r.idr0.get(), r.idr1.get(), r.idr5.get())
    }
}

/// What [`Smmu::drain_events`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Records handed to the callback.
    pub events: usize,
    /// The queue overflowed since the last drain: records were lost.
    pub overflowed: bool,
}

/// The node's SMMU, translating.
pub struct Smmu {
    registers: &'static SmmuRegisters,
    base: u64,
    features: Features,
    table_size: StreamTableSize,
    table: PhysRegion,
    commands: PhysRegion,
    command_log2: u8,
    produced: QueueIndex,
    events: SharedMemory,
    event_log2: u8,
    consumed: QueueIndex,
    /// The overflow flag last acknowledged (EVENTQ_CONS.OVACKFLG).
    overflow_acknowledged: bool,
    /// The CPU's VTCR_EL2.PS, which stage-2 entries copy.
    cpu_physical_size: u8,
}

// SAFETY: the registers are MMIO reached with volatile accesses; the kernel keeps the one
// `Smmu` behind a lock, so it is driven from one core at a time.
unsafe impl Send for Smmu {}

impl Smmu {
    /// Brings the SMMU up with every stream aborting: transactions abort while it is off
    /// (GBPA), a linear stream table of `layout.stream_table` entries all set to abort, the
    /// command and event queues where `layout` puts them in `memory` (claimed by the kernel,
    /// `layout.bytes` long, aligned to `layout.align`), every cache invalidated, global-error
    /// and event interrupts on, then translation on. `address_limit` is the end of the
    /// highest physical address a device may be given (RAM, the ITS).
    pub fn bring_up(
        frames: SmmuFrames,
        layout: &MemoryLayout,
        memory: PhysRegion,
        address_limit: u64,
    ) -> Result<Smmu, SmmuError> {
        let registers = frames.registers();
        let features = frames.features();
        features
            .check(address_limit)
            .map_err(SmmuError::Unsupported)?;
        let region = memory.region();
        if region.size < layout.bytes || !region.base.is_multiple_of(layout.align) {
            return Err(SmmuError::BadMemory);
        }
        let (mut table, rest) = memory
            .split_at(layout.command_queue.0)
            .map_err(|_| SmmuError::BadMemory)?;
        let (mut commands, events) = rest
            .split_at(layout.event_queue.0 - layout.command_queue.0)
            .map_err(|_| SmmuError::BadMemory)?;
        let events = events.into_shared();

        // Abort everything while the SMMU is (or goes) off.
        registers.gbpa.set(smmu::gbpa_abort());
        wait_for("SMMU_GBPA.Update to clear", || {
            smmu::gbpa_updated(registers.gbpa.get())
        })?;
        if registers.cr0.get() != 0 {
            registers.cr0.set(0);
            wait_for("SMMU_CR0ACK to clear (SMMU off)", || {
                registers.cr0ack.get() == 0
            })?;
        }
        registers.irq_ctrl.set(0);
        wait_for("SMMU_IRQ_CTRLACK to clear", || {
            registers.irq_ctrlack.get() == 0
        })?;
        registers.gerrorn.set(registers.gerror.get());
        registers.cr1.set(smmu::cr1());
        registers.cr2.set(smmu::cr2());

        // Every stream aborts.
        let abort = StreamTableEntry::ABORT.to_bytes();
        for stream in 0..layout.stream_table.entries() {
            table
                .write(stream * STE_BYTES, &abort)
                .map_err(|_| SmmuError::BadMemory)?;
        }
        registers
            .strtab_base
            .set(smmu::stream_table_base(table.region().base));
        registers
            .strtab_base_cfg
            .set(smmu::stream_table_config(layout.stream_table));

        let command_log2 = features.command_queue_log2();
        commands
            .zero(0, layout.command_queue.1)
            .map_err(|_| SmmuError::BadMemory)?;
        registers
            .cmdq_base
            .set(smmu::queue_base(commands.region().base, command_log2));
        registers.cmdq_prod.set(0);
        registers.cmdq_cons.set(0);
        barrier::before_doorbell();
        enable(registers, smmu::cr0::command_queue(), "SMMU_CR0ACK.CMDQEN")?;

        let event_log2 = features.event_queue_log2();
        events
            .zero(0, layout.event_queue.1)
            .map_err(|_| SmmuError::BadMemory)?;
        let mut smmu = Smmu {
            registers,
            base: frames.base,
            features,
            table_size: layout.stream_table,
            table,
            commands,
            command_log2,
            produced: QueueIndex::new(command_log2),
            events,
            event_log2,
            consumed: QueueIndex::new(event_log2),
            overflow_acknowledged: false,
            cpu_physical_size: crate::mmu::physical_address_size() as u8,
        };
        // Nothing cached from before (firmware, an earlier boot) survives.
        smmu.submit(&[Command::ConfigInvalidateAll, Command::InvalidateAllGuests])?;
        if features.hyp {
            smmu.submit(&[Command::InvalidateEl2])?;
        }

        registers
            .eventq_base
            .set(smmu::queue_base(smmu.events.region().base, event_log2));
        registers.eventq_prod.set(0);
        registers.eventq_cons.set(0);
        barrier::before_doorbell();
        enable(registers, smmu::cr0::queues(), "SMMU_CR0ACK.EVENTQEN")?;
        registers.irq_ctrl.set(smmu::irq_ctrl());
        wait_for("SMMU_IRQ_CTRLACK", || {
            registers.irq_ctrlack.get() == smmu::irq_ctrl()
        })?;
        enable(registers, smmu::cr0::enabled(), "SMMU_CR0ACK.SMMUEN")?;
        Ok(smmu)
    }

    /// Physical address of the register frames.
    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    pub fn stream_table(&self) -> StreamTableSize {
        self.table_size
    }

    /// Lets `stream`'s transactions through untranslated. Only for a device the hypervisor
    /// itself drives and whose every DMA address it chose or checked (the NVMe controller it
    /// slices: it validates each PRP it gives the controller); never for a slice's device.
    pub fn bypass(&mut self, stream: u32) -> Result<(), SmmuError> {
        self.set_entry(stream, StreamTableEntry::BYPASS)
    }

    /// Translates `stream`'s transactions through the stage-2 table whose level-1 root is at
    /// `stage2_root` (the CPU's format, see `microvisor_logic::smmu`), tagged with `vmid`.
    /// Faults are recorded in the event queue. After editing those tables, call
    /// [`Smmu::invalidate_vmid`].
    pub fn attach(&mut self, stream: u32, vmid: u16, stage2_root: u64) -> Result<(), SmmuError> {
        let entry =
            StreamTableEntry::stage2(vmid, stage2_root, self.cpu_physical_size, &self.features)
                .map_err(SmmuError::Entry)?;
        self.set_entry(stream, entry)
    }

    /// Makes `stream` abort again; once this returns, the SMMU no longer uses its old entry.
    pub fn detach(&mut self, stream: u32) -> Result<(), SmmuError> {
        self.set_entry(stream, StreamTableEntry::ABORT)
    }

    /// Discards every cached translation of `vmid` (after its stage-2 tables changed) and
    /// waits until that took effect.
    pub fn invalidate_vmid(&mut self, vmid: u16) -> Result<(), SmmuError> {
        self.submit(&[Command::InvalidateVmid(vmid)])
    }

    /// Replaces `stream`'s entry without the SMMU ever seeing half of it (§3.21.3): the
    /// stream aborts first (a single store of doubleword 0, then CFGI_STE + SYNC), then the
    /// other doublewords are written, then doubleword 0, then CFGI_STE + SYNC.
    fn set_entry(&mut self, stream: u32, entry: StreamTableEntry) -> Result<(), SmmuError> {
        let at = self
            .table_size
            .offset(stream)
            .ok_or(SmmuError::NoSuchStream(stream))?;
        let invalidate = [Command::ConfigInvalidateStream(stream)];
        let abort = StreamTableEntry::ABORT.0[0];
        if self.read_word(at) != abort {
            self.write_word(at, abort)?;
            self.submit(&invalidate)?;
        }
        for (i, word) in entry.0.iter().enumerate().skip(1) {
            self.write_word(at + 8 * i as u64, *word)?;
        }
        barrier::before_doorbell();
        self.write_word(at, entry.0[0])?;
        self.submit(&invalidate)
    }

    fn read_word(&self, offset: u64) -> u64 {
        let mut bytes = [0u8; 8];
        // Inside the table (the offset came from `StreamTableSize::offset`).
        let _ = self.table.read(offset, &mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn write_word(&mut self, offset: u64, word: u64) -> Result<(), SmmuError> {
        self.table
            .write_u64(offset, word)
            .map_err(|_| SmmuError::BadMemory)
    }

    /// Queues `commands` and a CMD_SYNC, and waits until the SMMU consumed them all.
    fn submit(&mut self, commands: &[Command]) -> Result<(), SmmuError> {
        let registers = self.registers;
        let log2 = self.command_log2;
        for command in commands.iter().chain(core::iter::once(&Command::Sync)) {
            let produced = self.produced;
            wait_for("a free SMMU command queue slot", || {
                !produced.is_full(QueueIndex::from_register(log2, registers.cmdq_cons.get()))
            })?;
            let at = u64::from(self.produced.index()) * smmu::COMMAND_BYTES;
            self.commands
                .write(at, &command.to_bytes())
                .map_err(|_| SmmuError::BadMemory)?;
            self.produced = self.produced.next();
            barrier::before_doorbell();
            registers.cmdq_prod.set(self.produced.register());
        }
        let produced = self.produced;
        let mut failed = None;
        let done = crate::cpu::wait_until(TIMEOUT, || {
            let cons = registers.cmdq_cons.get();
            if GlobalErrors::active(registers.gerror.get(), registers.gerrorn.get()).command_queue()
            {
                failed = CommandError::from_consumer(cons).or(Some(CommandError::Other(0)));
                return true;
            }
            QueueIndex::from_register(log2, cons) == produced
        });
        if let Some(error) = failed {
            self.restart_command_queue();
            return Err(SmmuError::Command(error));
        }
        if !done {
            return Err(SmmuError::Timeout {
                what: "the SMMU to consume its commands up to CMD_SYNC",
            });
        }
        Ok(())
    }

    /// After a command queue error (§7.1): the failed command, where CMDQ_CONS points, becomes
    /// a CMD_SYNC, and acknowledging GERROR.CMDQ_ERR lets the SMMU go on.
    fn restart_command_queue(&mut self) {
        let registers = self.registers;
        let cons = QueueIndex::from_register(self.command_log2, registers.cmdq_cons.get());
        let at = u64::from(cons.index()) * smmu::COMMAND_BYTES;
        let _ = self.commands.write(at, &Command::Sync.to_bytes());
        barrier::before_doorbell();
        let gerror = registers.gerror.get();
        let cmdq_err = smmu::GERROR::CMDQ_ERR::SET.value;
        let gerrorn = registers.gerrorn.get();
        registers
            .gerrorn
            .set((gerrorn & !cmdq_err) | (gerror & cmdq_err));
    }

    /// Hands every event record the SMMU wrote since the last call to `on_event` (at most one
    /// queue's worth), and frees their slots.
    pub fn drain_events(&mut self, on_event: &mut impl FnMut(Event)) -> Drained {
        let registers = self.registers;
        let mut drained = Drained::default();
        let prod = registers.eventq_prod.extract();
        let overflow = prod.is_set(EVENTQ_POINTER::OVERFLOW);
        if overflow != self.overflow_acknowledged {
            drained.overflowed = true;
            self.overflow_acknowledged = overflow;
        }
        let produced = QueueIndex::from_register(self.event_log2, prod.get());
        barrier::after_device_write();
        while !produced.is_empty(self.consumed)
            && drained.events < self.consumed.capacity() as usize
        {
            let mut record = [0u8; EVENT_BYTES as usize];
            let at = u64::from(self.consumed.index()) * EVENT_BYTES;
            if self.events.read(at, &mut record).is_err() {
                break;
            }
            on_event(Event::from_bytes(&record));
            self.consumed = self.consumed.next();
            drained.events += 1;
        }
        let acknowledged = if self.overflow_acknowledged {
            EVENTQ_POINTER::OVERFLOW::SET.value
        } else {
            0
        };
        registers
            .eventq_cons
            .set(self.consumed.register() | acknowledged);
        drained
    }

    /// The active global errors, acknowledged (a stopped command queue is restarted first).
    /// Empty when nothing is wrong.
    pub fn take_global_errors(&mut self) -> GlobalErrors {
        let registers = self.registers;
        let active = GlobalErrors::active(registers.gerror.get(), registers.gerrorn.get());
        if active.command_queue() {
            self.restart_command_queue();
        }
        registers.gerrorn.set(registers.gerror.get());
        active
    }
}

/// Writes CR0 and waits (at most [`TIMEOUT`]) for CR0ACK to match; `what` names the bit.
fn enable(registers: &SmmuRegisters, value: u32, what: &'static str) -> Result<(), SmmuError> {
    registers.cr0.set(value);
    wait_for(what, || registers.cr0ack.get() == value)
}

/// Waits (at most [`TIMEOUT`]) until `done`; `what` names what was waited for.
fn wait_for(what: &'static str, done: impl FnMut() -> bool) -> Result<(), SmmuError> {
    if crate::cpu::wait_until(TIMEOUT, done) {
        Ok(())
    } else {
        Err(SmmuError::Timeout { what })
    }
}
