//! Erasing a stopped slice's NVMe share (docs/control.md, "Erase"; issue 11, "Scrubbing"):
//! Write Zeroes (NVM Command Set 1.0 §3.2.3; Base 1.4 §6.16), or Writes from a page of zeros
//! when Identify Controller's ONCS bit 3 says the controller has no Write Zeroes, over the
//! slice's whole window of namespace 1; a Flush when the controller has a volatile write cache;
//! then every block of the window read back and checked to be zero.
//!
//! Everything here is pure: which LBAs each command covers ([`Window::extents`]: every
//! command inside the window, together exactly the window), the commands themselves, and the
//! loop that keeps several of them in flight on one hardware queue pair and polls its
//! completions with a timeout per command ([`erase`]). The kernel supplies the queue pair, the
//! DMA buffers and the clock through [`EraseQueue`].
//!
//! Command identifiers: the mediated path names a hardware slot by its Command Identifier,
//! `0..depth - 1` (see `controller.rs`); the erase uses [`ERASE_CID_BASE`] and up, which no
//! slot ever has, so a completion of either kind can never be taken for the other's.

use alloc::vec::Vec;

use super::config::MAX_QUEUE_DEPTH;
use super::spec::{CompletionEntry, Status, SubmissionEntry, io};

/// Command Identifiers of the erase's commands are `ERASE_CID_BASE + tag`.
pub const ERASE_CID_BASE: u16 = 0x8000;
const _: () = assert!(ERASE_CID_BASE >= MAX_QUEUE_DEPTH);

/// Most blocks one Read, Write or Write Zeroes covers: NLB is a 0-based 16-bit field (NVM
/// Command Set 1.0 §3.2.3, CDW12 bits 15:0).
pub const MAX_BLOCKS_PER_COMMAND: u32 = 1 << 16;

/// The memory page size the controller runs with (CC.MPS = 0; bring-up refuses a controller
/// whose CAP.MPSMIN is above 4 KiB), the unit of MDTS and of PRP entries.
pub const PAGE: u64 = 4096;

/// Most pages one Write of zeros covers: PRP1 and a list of as many entries, all naming the
/// same zero page (at most 512 entries fit one list page without chaining).
pub const MAX_ZERO_WRITE_PAGES: u64 = 256;

/// Commands in flight at once, at most (and never more than the queue holds).
pub const MAX_IN_FLIGHT: u16 = 16;

/// How long one command may take before the erase gives up.
pub const COMMAND_TIMEOUT_MS: u64 = 30_000;

/// A slice's window of the namespace: blocks `first_block .. first_block + blocks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    first_block: u64,
    blocks: u64,
}

impl Window {
    /// The window of `blocks` blocks from `first_block`; None if its end is past `u64::MAX`.
    pub fn new(first_block: u64, blocks: u64) -> Option<Window> {
        first_block.checked_add(blocks)?;
        Some(Window {
            first_block,
            blocks,
        })
    }

    /// Its first block.
    pub fn first_block(self) -> u64 {
        self.first_block
    }

    /// Its block count.
    pub fn blocks(self) -> u64 {
        self.blocks
    }

    /// The block after its last.
    pub fn end(self) -> u64 {
        self.first_block + self.blocks
    }

    /// The window cut into consecutive extents of `max_blocks` blocks (clamped to
    /// `1..=`[`MAX_BLOCKS_PER_COMMAND`]), the last one shorter: each lies inside the window,
    /// together they are exactly the window, in ascending order.
    pub fn extents(self, max_blocks: u32) -> Extents {
        Extents {
            next: self.first_block,
            end: self.end(),
            step: u64::from(max_blocks.clamp(1, MAX_BLOCKS_PER_COMMAND)),
        }
    }
}

/// Blocks `lba .. lba + blocks` (`blocks` in `1..=`[`MAX_BLOCKS_PER_COMMAND`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First block (namespace LBA).
    pub lba: u64,
    /// Block count.
    pub blocks: u32,
}

impl Extent {
    /// The 0-based Number of Logical Blocks field.
    pub fn nlb(self) -> u32 {
        self.blocks.saturating_sub(1)
    }
}

/// The iterator of [`Window::extents`].
#[derive(Clone, Debug)]
pub struct Extents {
    next: u64,
    end: u64,
    step: u64,
}

impl Iterator for Extents {
    type Item = Extent;

    fn next(&mut self) -> Option<Extent> {
        let left = self.end.checked_sub(self.next).filter(|&l| l > 0)?;
        let blocks = left.min(self.step);
        let extent = Extent {
            lba: self.next,
            blocks: blocks as u32,
        };
        self.next += blocks;
        Some(extent)
    }
}

/// How the window is wiped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wipe {
    /// Write Zeroes commands (ONCS bit 3).
    WriteZeroes,
    /// Writes whose data is a page of zeros (no Write Zeroes on this controller).
    ZeroWrites,
}

/// What the controller said about itself that the erase depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskFacts {
    /// Namespace ID of the shared namespace.
    pub nsid: u32,
    /// Identify Controller ONCS.
    pub oncs: u16,
    /// Identify Controller MDTS (power of two of [`PAGE`]s; 0 = no limit).
    pub mdts: u8,
    /// Identify Controller VWC bit 0.
    pub volatile_write_cache: bool,
    /// log2 of the block size.
    pub block_shift: u8,
}

impl DiskFacts {
    /// Write Zeroes is supported (ONCS bit 3).
    pub fn has_write_zeroes(self) -> bool {
        self.oncs & (1 << 3) != 0
    }

    /// Most bytes one data transfer may move (MDTS), or None when unlimited.
    pub fn max_transfer(self) -> Option<u64> {
        (self.mdts != 0).then(|| PAGE.checked_shl(u32::from(self.mdts)).unwrap_or(u64::MAX))
    }

    /// Blocks in `bytes`, within MDTS and [`MAX_BLOCKS_PER_COMMAND`], at least 1.
    fn blocks_per_transfer(self, bytes: u64) -> u32 {
        let bytes = self.max_transfer().map_or(bytes, |m| bytes.min(m));
        let blocks = (bytes >> self.block_shift).clamp(1, u64::from(MAX_BLOCKS_PER_COMMAND));
        blocks as u32
    }
}

/// How an erase of one window goes: commands, their sizes and how many run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErasePlan {
    /// The controller.
    pub facts: DiskFacts,
    /// The window wiped and read back.
    pub window: Window,
    /// How it is wiped.
    pub wipe: Wipe,
    /// Blocks per wipe command.
    pub wipe_blocks: u32,
    /// Wipe commands in flight at once.
    pub wipe_depth: u16,
    /// Blocks per Read.
    pub read_blocks: u32,
    /// Reads in flight at once: each has its own slot of the read buffer.
    pub read_depth: u16,
    /// Limit of each command, in milliseconds.
    pub timeout_ms: u64,
}

impl ErasePlan {
    /// The plan for `window` on a controller with `facts`, a hardware queue of
    /// `queue_entries` entries, and a read buffer of `read_slots` slots of `slot_bytes` each
    /// (page multiples). None if there is no room to work with (a queue of fewer than 2
    /// entries, no read slot, a slot smaller than a block).
    pub fn new(
        facts: DiskFacts,
        window: Window,
        queue_entries: u16,
        read_slots: u16,
        slot_bytes: u64,
    ) -> Option<ErasePlan> {
        let queue_room = queue_entries.checked_sub(1).filter(|&n| n > 0)?;
        if read_slots == 0 || slot_bytes < 1 << facts.block_shift {
            return None;
        }
        let wipe = if facts.has_write_zeroes() {
            Wipe::WriteZeroes
        } else {
            Wipe::ZeroWrites
        };
        let wipe_blocks = match wipe {
            // No data moves: MDTS does not apply (Base 1.4 §5.15.2.1, MDTS).
            Wipe::WriteZeroes => MAX_BLOCKS_PER_COMMAND,
            Wipe::ZeroWrites => facts.blocks_per_transfer(MAX_ZERO_WRITE_PAGES * PAGE),
        };
        let depth = queue_room.min(MAX_IN_FLIGHT);
        Some(ErasePlan {
            facts,
            window,
            wipe,
            wipe_blocks,
            wipe_depth: depth,
            read_blocks: facts.blocks_per_transfer(slot_bytes),
            read_depth: depth.min(read_slots),
            timeout_ms: COMMAND_TIMEOUT_MS,
        })
    }

    /// Bytes in the window.
    pub fn bytes(&self) -> u64 {
        self.window.blocks() << self.facts.block_shift
    }
}

/// Data pointers of one command (Base 1.4 §4.3, "Physical Region Page Entry and List"):
/// PRP1 names the first page; PRP2 is 0 for one page, the second page for two, else the
/// address of a PRP list whose entries [`Prps::list`] gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prps {
    /// PRP Entry 1.
    pub prp1: u64,
    /// PRP Entry 2 (filled in by the caller when `list` is not empty: the list's address).
    pub prp2: u64,
    /// The entries the PRP list must hold (empty when PRP2 is a data page or 0).
    pub list: Vec<u64>,
}

impl Prps {
    /// Pointers for `bytes` of page-aligned memory whose pages are at `page(0)`, `page(1)`,
    /// ...; the PRP list, if needed, is at `list_address` (its entries in [`Prps::list`]).
    pub fn for_pages(bytes: u64, list_address: u64, page: impl Fn(u64) -> u64) -> Prps {
        let pages = bytes.div_ceil(PAGE).max(1);
        match pages {
            1 => Prps {
                prp1: page(0),
                prp2: 0,
                list: Vec::new(),
            },
            2 => Prps {
                prp1: page(0),
                prp2: page(1),
                list: Vec::new(),
            },
            _ => Prps {
                prp1: page(0),
                prp2: list_address,
                list: (1..pages).map(page).collect(),
            },
        }
    }
}

/// One hardware queue pair and its buffers, as the erase uses them. The kernel's
/// implementation works on the slice's own hardware queue; the tests' is a fake disk.
pub trait EraseQueue {
    /// Writes `command` at the submission queue tail (the doorbell comes with
    /// [`EraseQueue::ring`]).
    fn push(&mut self, command: &SubmissionEntry);
    /// Rings the submission queue doorbell.
    fn ring(&mut self);
    /// The next completion, if one was posted; consumed (its head doorbell written).
    fn pop(&mut self) -> Option<CompletionEntry>;
    /// Data pointers for a Read of `bytes` into read slot `slot`; None if the slot cannot
    /// hold them (the kernel's bug, reported as [`EraseFault::Buffer`]).
    fn read_pointers(&mut self, slot: u16, bytes: u64) -> Option<(u64, u64)>;
    /// Data pointers for a Write of `bytes` of zeros.
    fn zero_pointers(&mut self, bytes: u64) -> Option<(u64, u64)>;
    /// The offset of the first non-zero byte among the first `bytes` of read slot `slot`
    /// (Ok(None): all zero).
    fn first_nonzero(&self, slot: u16, bytes: u64) -> Result<Option<u64>, Unreadable>;
    /// Milliseconds since a fixed point; never goes back.
    fn now_ms(&self) -> u64;
    /// Called on each idle turn of a polling loop.
    fn pause(&self);
}

/// A read slot that cannot be read (no such slot, or `bytes` larger than it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreadable;

/// Why an erase failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EraseFault {
    /// A command did not complete within the timeout; `in_flight` of the erase's commands
    /// (this one included) are still in the hardware queue.
    Timeout {
        /// Its opcode.
        opcode: u8,
        /// Its first block.
        lba: u64,
        /// Commands still in the queue.
        in_flight: u16,
    },
    /// The controller failed a command.
    Command {
        /// Its opcode.
        opcode: u8,
        /// Its first block.
        lba: u64,
        /// The completion's status field (Base 1.4 §4.6.1, without the phase tag).
        status: u16,
    },
    /// A block read back was not zero: the lowest such LBA found.
    NotZero {
        /// That block.
        lba: u64,
    },
    /// A read buffer slot or the zero page could not be set up or read.
    Buffer,
}

impl EraseFault {
    /// The controller failed (a command errored or never completed), as opposed to data found
    /// after a wipe that succeeded or a hypervisor bug.
    pub fn is_io_error(self) -> bool {
        matches!(
            self,
            EraseFault::Timeout { .. } | EraseFault::Command { .. }
        )
    }
}

impl core::fmt::Display for EraseFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = |opcode| match opcode {
            io::WRITE_ZEROES => "Write Zeroes",
            io::WRITE => "Write",
            io::READ => "Read",
            io::FLUSH => "Flush",
            _ => "command",
        };
        match *self {
            EraseFault::Timeout {
                opcode,
                lba,
                in_flight,
            } => write!(
                f,
                "{} at block {lba} did not complete ({in_flight} command(s) left in the queue)",
                name(opcode)
            ),
            EraseFault::Command {
                opcode,
                lba,
                status,
            } => write!(
                f,
                "{} at block {lba} failed with status {status:#x}",
                name(opcode)
            ),
            EraseFault::NotZero { lba } => write!(f, "block {lba} is not zero after the wipe"),
            EraseFault::Buffer => f.write_str("the erase's DMA buffer is unusable"),
        }
    }
}

/// What an erase did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EraseOutcome {
    /// Bytes wiped (and verified): the whole window.
    pub bytes: u64,
    /// Wipe commands (Write Zeroes or Write).
    pub wipe_commands: u64,
    /// Flush commands (0 or 1).
    pub flush_commands: u64,
    /// Read commands.
    pub read_commands: u64,
    /// Completions on the queue that were not the erase's (ignored).
    pub strays: u64,
}

impl EraseOutcome {
    /// Every command issued.
    pub fn commands(&self) -> u64 {
        self.wipe_commands + self.flush_commands + self.read_commands
    }
}

/// Wipes `plan.window` through `queue`, flushes if the controller caches writes, then reads
/// every block back and checks it is zero. Every wait is bounded by `plan.timeout_ms` per
/// command; on a failure the commands already in flight are waited for (as bounded) before it
/// is returned, so the queue holds none of the erase's commands afterwards unless the
/// failure is a [`EraseFault::Timeout`].
pub fn erase<Q: EraseQueue>(queue: &mut Q, plan: &ErasePlan) -> Result<EraseOutcome, EraseFault> {
    let mut outcome = EraseOutcome {
        bytes: plan.bytes(),
        ..EraseOutcome::default()
    };
    let nsid = plan.facts.nsid;
    let shift = plan.facts.block_shift;
    let wipe = plan.wipe;
    outcome.wipe_commands = pipeline(
        queue,
        plan.wipe_depth,
        plan.timeout_ms,
        plan.window.extents(plan.wipe_blocks),
        &mut outcome.strays,
        |q, extent, _tag| {
            let mut command = block_command(nsid, extent);
            command.cdw12 = extent.nlb().into();
            match wipe {
                Wipe::WriteZeroes => command.opcode = io::WRITE_ZEROES,
                Wipe::ZeroWrites => {
                    command.opcode = io::WRITE;
                    let (prp1, prp2) = q
                        .zero_pointers(u64::from(extent.blocks) << shift)
                        .ok_or(EraseFault::Buffer)?;
                    command.prp1 = prp1.into();
                    command.prp2 = prp2.into();
                }
            }
            Ok(command)
        },
        |_, _, _| Ok(()),
    )?;
    if plan.facts.volatile_write_cache {
        outcome.flush_commands = pipeline(
            queue,
            1,
            plan.timeout_ms,
            core::iter::once(Extent {
                lba: plan.window.first_block(),
                blocks: 1,
            }),
            &mut outcome.strays,
            |_, _, _| {
                Ok(SubmissionEntry {
                    opcode: io::FLUSH,
                    nsid: nsid.into(),
                    ..SubmissionEntry::default()
                })
            },
            |_, _, _| Ok(()),
        )?;
    }
    let mut lowest: Option<u64> = None;
    let read = pipeline(
        queue,
        plan.read_depth,
        plan.timeout_ms,
        plan.window.extents(plan.read_blocks),
        &mut outcome.strays,
        |q, extent, tag| {
            let mut command = block_command(nsid, extent);
            command.opcode = io::READ;
            command.cdw12 = extent.nlb().into();
            let (prp1, prp2) = q
                .read_pointers(tag, u64::from(extent.blocks) << shift)
                .ok_or(EraseFault::Buffer)?;
            command.prp1 = prp1.into();
            command.prp2 = prp2.into();
            Ok(command)
        },
        |q, extent, tag| {
            let found = q
                .first_nonzero(tag, u64::from(extent.blocks) << shift)
                .map_err(|Unreadable| EraseFault::Buffer)?;
            match found {
                None => Ok(()),
                Some(offset) => {
                    let lba = extent.lba + (offset >> shift);
                    let lba = lowest.map_or(lba, |l| l.min(lba));
                    lowest = Some(lba);
                    Err(EraseFault::NotZero { lba })
                }
            }
        },
    );
    match read {
        Ok(commands) => outcome.read_commands = commands,
        // Report the lowest non-zero block of every read that completed.
        Err(EraseFault::NotZero { .. }) => {
            return Err(EraseFault::NotZero {
                lba: lowest.unwrap_or(plan.window.first_block()),
            });
        }
        Err(fault) => return Err(fault),
    }
    Ok(outcome)
}

/// A command on `extent` of namespace `nsid` (SLBA in CDW10-11), the rest left to the caller.
fn block_command(nsid: u32, extent: Extent) -> SubmissionEntry {
    SubmissionEntry {
        nsid: nsid.into(),
        cdw10: (extent.lba as u32).into(),
        cdw11: ((extent.lba >> 32) as u32).into(),
        ..SubmissionEntry::default()
    }
}

/// A command in the hardware.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    extent: Extent,
    opcode: u8,
    since_ms: u64,
}

/// Runs one command per extent with at most `depth` in flight (tag `t` has Command Identifier
/// [`ERASE_CID_BASE`]` + t`): `build` makes the command for an extent and tag, `done` checks
/// a successful one. The first failure stops submissions; the commands in flight are waited
/// for (bounded) and the failure returned. Returns the number of commands.
#[allow(clippy::too_many_arguments)]
fn pipeline<Q: EraseQueue>(
    queue: &mut Q,
    depth: u16,
    timeout_ms: u64,
    mut extents: impl Iterator<Item = Extent>,
    strays: &mut u64,
    mut build: impl FnMut(&mut Q, Extent, u16) -> Result<SubmissionEntry, EraseFault>,
    mut done: impl FnMut(&mut Q, Extent, u16) -> Result<(), EraseFault>,
) -> Result<u64, EraseFault> {
    let mut slots: Vec<Option<InFlight>> = alloc::vec![None; usize::from(depth.max(1))];
    let mut commands = 0u64;
    let mut failure: Option<EraseFault> = None;
    loop {
        let mut pushed = false;
        while failure.is_none() {
            let Some(tag) = slots.iter().position(Option::is_none) else {
                break;
            };
            let Some(extent) = extents.next() else {
                break;
            };
            let tag16 = tag as u16;
            match build(queue, extent, tag16) {
                Ok(mut command) => {
                    command.command_id = (ERASE_CID_BASE + tag16).into();
                    queue.push(&command);
                    pushed = true;
                    commands += 1;
                    slots[tag] = Some(InFlight {
                        extent,
                        opcode: command.opcode,
                        since_ms: queue.now_ms(),
                    });
                }
                Err(fault) => failure = Some(fault),
            }
        }
        if pushed {
            queue.ring();
        }
        let in_flight = slots.iter().flatten().count() as u16;
        if in_flight == 0 {
            return failure.map_or(Ok(commands), Err);
        }
        let completion = queue.pop();
        let ours = completion.and_then(|c| {
            let cid = c.command_id.get();
            let tag = cid.checked_sub(ERASE_CID_BASE)?;
            let command = slots.get_mut(usize::from(tag))?.take()?;
            Some((c, tag, command))
        });
        let Some((completion, tag, command)) = ours else {
            // Nothing, or a completion that is not one of ours: the timeouts still run, so
            // a controller posting stray completions forever cannot hold the erase.
            if completion.is_some() {
                *strays += 1;
            }
            let now = queue.now_ms();
            let late = slots
                .iter()
                .flatten()
                .find(|c| now.saturating_sub(c.since_ms) > timeout_ms);
            if let Some(late) = late {
                return Err(EraseFault::Timeout {
                    opcode: late.opcode,
                    lba: late.extent.lba,
                    in_flight,
                });
            }
            if completion.is_none() {
                queue.pause();
            }
            continue;
        };
        let status = Status::from_hardware(completion.status.get());
        let result = if status.is_success() {
            done(queue, command.extent, tag)
        } else {
            Err(EraseFault::Command {
                opcode: command.opcode,
                lba: command.extent.lba,
                status: status.raw(),
            })
        };
        if let Err(fault) = result {
            failure.get_or_insert(fault);
        }
    }
}
