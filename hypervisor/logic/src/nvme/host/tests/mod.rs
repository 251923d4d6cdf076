//! Tests of the physical controller's driver against a fake controller at register level and a
//! fake configuration space. The fake decodes what the driver writes with the bit positions of
//! the specification written out here (not with the driver's field definitions), executes the
//! admin commands the driver sends, and records every misuse it sees as a violation: a
//! doorbell rung before the queue entries were published, a completion body read before the
//! read that found its phase tag was ordered, a bad register value, a bad queue or address.

mod bring_up;
mod errors;
mod queues;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::inventory::{PciWindow, PcieHost, Region};
use crate::nvme::spec::{CompletionEntry, SubmissionEntry};
use crate::pci::{Bdf, ConfigSpace};

// ---------------------------------------------------------------------------------------------
// Numbers of the specification, written out for the fake.

/// CAP (Base 1.4 §3.1.1): MQES 15:0, TO 31:24, DSTRD 35:32, CSS 44:37, MPSMIN 51:48.
pub fn cap(mqes: u64, to: u64, dstrd: u64, css: u64, mpsmin: u64) -> u64 {
    mqes | to << 24 | dstrd << 32 | css << 37 | mpsmin << 48
}

/// QEMU's CAP: MQES 2047, CQR, TO 15, DSTRD 0, NVM command set, MPSMIN 4 KiB.
pub const QEMU_CAP: u64 = 0x0040_0820_0f01_07ff;

/// Status fields (SCT << 8 | SC, DNR in bit 14).
pub const INVALID_OPCODE: u16 = 0x4001;
pub const INVALID_FIELD: u16 = 0x4002;
pub const INVALID_QUEUE_ID: u16 = 0x4101;
pub const INVALID_QUEUE_SIZE: u16 = 0x4102;
pub const COMPLETION_QUEUE_INVALID: u16 = 0x4100;
pub const INVALID_QUEUE_DELETION: u16 = 0x410c;
pub const ABORTED_SQ_DELETION: u16 = 0x0008;

/// The fake's doorbell registers (queues up to 0x1000 / (2 * stride) - 1); the MSI-X table
/// and anything else written in BAR0 lie above.
const DOORBELLS: core::ops::Range<u64> = 0x1000..0x2000;

/// Completions in a flood.
const FLOOD: usize = 100_000;

/// Where the test's device memory lives, and how much there is by default.
pub const RAM_BASE: u64 = 0x8_0000_0000;
pub const RAM_PAGES: u64 = 512;
/// What memory holds before the allocator hands it out.
const GARBAGE: u8 = 0xa5;

/// Where the NVMe function sits, and the window its BARs go to.
pub const NVME: Bdf = Bdf::new(0, 2, 0);
pub const MEM32_PCI: u64 = 0x1000_0000;
pub const MEM32_CPU: u64 = 0x1000_0000;
pub const MEM32_SIZE: u64 = 0x2eff_0000;

pub fn host() -> PcieHost {
    PcieHost {
        ecam: Region::new(0x40_1000_0000, 0x1000_0000),
        bus_start: 0,
        bus_end: 0xff,
        mem32: Some(PciWindow {
            pci: MEM32_PCI,
            cpu: MEM32_CPU,
            size: MEM32_SIZE,
        }),
        mem64: None,
        iommu_map: None,
        msi_map: None,
    }
}

// ---------------------------------------------------------------------------------------------
// The fake controller.

/// How the fake controller behaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub cap: u64,
    /// Left enabled (and ready) by the firmware.
    pub starts_enabled: bool,
    /// CSTS.RDY becomes 1 this long after CC.EN is set (None: never).
    pub ready_after_ms: Option<u64>,
    /// CSTS.RDY becomes 0 this long after CC.EN is cleared (None: never).
    pub disabled_after_ms: Option<u64>,
    /// CSTS.CFS is set.
    pub fatal: bool,
    /// Every register reads all ones (the function stopped answering).
    pub gone: bool,
    /// Identify Controller and Identify Namespace 1 data.
    pub identify_controller: Vec<u8>,
    pub identify_namespace: Vec<u8>,
    /// Number of Queues answer (0-based SQ and CQ counts); None: what was asked, at most 64.
    pub grant: Option<(u16, u16)>,
    /// Opcodes that complete with this status field instead of running.
    pub fail: BTreeMap<u8, u16>,
    /// Opcodes that never complete.
    pub ignore: BTreeSet<u8>,
    /// Opcodes whose completion follows one for another command identifier.
    pub stale_before: BTreeSet<u8>,
    /// Opcodes answered only by an endless stream of completions for other identifiers.
    pub flood: BTreeSet<u8>,
    /// Time from a doorbell to the completions of the commands it announced.
    pub latency_ms: u64,
}

pub const SERIAL: &str = "PHYS-0001";
pub const MODEL: &str = "Fake NVMe Controller";
pub const FIRMWARE: &str = "1.0";
pub const BLOCKS: u64 = 0x20_0000;

/// Identify Controller data (Base 1.4 Figure 247, offsets written out).
pub fn identify_controller() -> Vec<u8> {
    let mut d = vec![0u8; 4096];
    let mut put = |at: usize, bytes: &[u8]| d[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &0x1b36u16.to_le_bytes());
    put(2, &0x1af4u16.to_le_bytes());
    put(4, format!("{SERIAL:<20}").as_bytes());
    put(24, format!("{MODEL:<40}").as_bytes());
    put(64, format!("{FIRMWARE:<8}").as_bytes());
    put(77, &[7]);
    put(520, &0x005fu16.to_le_bytes());
    put(525, &[1]);
    d
}

/// Identify Namespace data: BLOCKS blocks; LBA formats 0 (512 B) and 1 (4 KiB), format
/// `in_use` selected; format `in_use` has `metadata` bytes of metadata and 2^`shift` bytes.
pub fn identify_namespace(in_use: u8, shift: u8, metadata: u16) -> Vec<u8> {
    let mut d = vec![0u8; 4096];
    d[0..8].copy_from_slice(&BLOCKS.to_le_bytes());
    d[8..16].copy_from_slice(&BLOCKS.to_le_bytes());
    d[25] = 1;
    d[26] = in_use;
    d[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
    d[132..136].copy_from_slice(&(12u32 << 16).to_le_bytes());
    let at = 128 + 4 * usize::from(in_use);
    d[at..at + 4].copy_from_slice(&(u32::from(shift) << 16 | u32::from(metadata)).to_le_bytes());
    d
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            cap: QEMU_CAP,
            starts_enabled: true,
            ready_after_ms: Some(20),
            disabled_after_ms: Some(10),
            fatal: false,
            gone: false,
            identify_controller: identify_controller(),
            identify_namespace: identify_namespace(1, 12, 0),
            grant: None,
            fail: BTreeMap::new(),
            ignore: BTreeSet::new(),
            stale_before: BTreeSet::new(),
            flood: BTreeSet::new(),
            latency_ms: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeSq {
    pub base: u64,
    pub size: u16,
    pub head: u16,
    pub tail: u16,
    pub cq: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeCq {
    pub base: u64,
    pub size: u16,
    /// Where the device writes next, and the phase tag it writes.
    pub tail: u16,
    pub phase: bool,
    /// What the host last wrote to the head doorbell.
    pub head: u16,
    pub vector: u16,
    pub interrupts: bool,
}

/// A completion waiting for its time (and for room in its queue).
#[derive(Clone, Copy, Debug)]
struct Pending {
    due: u64,
    cq: u16,
    entry: CompletionEntry,
}

/// The fake controller's state.
#[derive(Debug, Default)]
pub struct Device {
    pub cc: u32,
    /// The function's Bus Master Enable, as its configuration space has it.
    pub bus_master: bool,
    enabled_at: u64,
    disabled_at: u64,
    pub aqa: u32,
    pub asq: u64,
    pub acq: u64,
    pub intms: u32,
    /// BAR0 dwords written outside the registers and doorbells (the MSI-X table).
    pub bar: BTreeMap<u64, u32>,
    pub sqs: BTreeMap<u16, FakeSq>,
    pub cqs: BTreeMap<u16, FakeCq>,
    pending: VecDeque<Pending>,
    /// I/O queues granted by Number of Queues (0-based SQ and CQ counts).
    pub granted: Option<(u16, u16)>,
    /// Every admin command executed, and every I/O command.
    pub admin_log: Vec<SubmissionEntry>,
    pub io_log: Vec<(u16, SubmissionEntry)>,
    /// Completions posted for a command identifier nobody waited for.
    pub stale_posted: usize,
    /// Every register write (offset, value), in order.
    pub register_writes: Vec<(u64, u64)>,
}

/// Everything the test's machine holds: time, device memory, the fake controller.
pub struct World {
    pub now_ms: u64,
    pub behaviour: Behaviour,
    pub device: Device,
    pub ram: Vec<u8>,
    /// Pages handed out, and the most there may be.
    pub pages_used: u64,
    pub page_limit: u64,
    /// Submission queue writes not yet published.
    unpublished: bool,
    /// A phase tag was read and not yet ordered before the reads after it.
    awaiting_acquire: bool,
    pub violations: Vec<String>,
}

pub type Shared = Rc<RefCell<World>>;

impl World {
    pub fn new(behaviour: Behaviour) -> Shared {
        let mut device = Device::default();
        if behaviour.starts_enabled {
            device.cc = 1;
        }
        Rc::new(RefCell::new(World {
            now_ms: 1000,
            behaviour,
            device,
            ram: vec![GARBAGE; (RAM_PAGES * 4096) as usize],
            pages_used: 0,
            page_limit: RAM_PAGES,
            unpublished: false,
            awaiting_acquire: false,
            violations: Vec::new(),
        }))
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// The RAM bytes the device reads or writes at bus address `address`, or a violation
    /// (outside device memory, or with the function's bus mastering off).
    fn dma_range(
        &mut self,
        address: u64,
        len: usize,
        what: &str,
    ) -> Option<core::ops::Range<usize>> {
        if !self.device.bus_master {
            self.violation(format!("{what}: DMA with bus mastering off"));
        }
        self.ram_range(address, len, what)
    }

    /// The RAM bytes at bus address `address`, or a violation.
    fn ram_range(
        &mut self,
        address: u64,
        len: usize,
        what: &str,
    ) -> Option<core::ops::Range<usize>> {
        let end = address.checked_add(len as u64);
        let inside =
            address >= RAM_BASE && end.is_some_and(|end| end <= RAM_BASE + self.ram.len() as u64);
        if !inside {
            self.violation(format!(
                "{what}: {address:#x}+{len:#x} outside device memory"
            ));
            return None;
        }
        let at = (address - RAM_BASE) as usize;
        Some(at..at + len)
    }

    fn ready(&self) -> bool {
        let b = &self.behaviour;
        if self.device.cc & 1 != 0 {
            if self.behaviour.starts_enabled && self.device.enabled_at == 0 {
                return true;
            }
            b.ready_after_ms
                .is_some_and(|after| self.now_ms >= self.device.enabled_at + after)
        } else {
            // Never enabled since reset: not ready.
            if self.device.disabled_at == 0 {
                return false;
            }
            b.disabled_after_ms
                .is_none_or(|after| self.now_ms < self.device.disabled_at + after)
        }
    }

    fn stride(&self) -> u64 {
        4 << ((self.behaviour.cap >> 32) & 0xf)
    }

    fn read_register(&mut self, offset: u64, width: u64) -> u64 {
        let d = &self.device;
        let value = match offset {
            0x00 => self.behaviour.cap,
            0x04 if width == 4 => self.behaviour.cap >> 32,
            0x08 => 0x0001_0400,
            0x0c | 0x10 => u64::from(d.intms),
            0x14 => u64::from(d.cc),
            0x1c => u64::from(self.ready()) | u64::from(self.behaviour.fatal) << 1,
            0x24 => u64::from(d.aqa),
            0x28 => d.asq,
            0x30 => d.acq,
            o if DOORBELLS.contains(&o) => 0,
            o => u64::from(d.bar.get(&o).copied().unwrap_or(0)),
        };
        let value = if self.behaviour.gone { u64::MAX } else { value };
        if width == 4 {
            value & 0xffff_ffff
        } else {
            value
        }
    }

    fn write_register(&mut self, offset: u64, width: u64, value: u64) {
        self.device.register_writes.push((offset, value));
        match offset {
            0x0c if width == 4 => self.device.intms |= value as u32,
            0x10 if width == 4 => self.device.intms &= !(value as u32),
            0x14 if width == 4 => self.write_cc(value as u32),
            0x24 if width == 4 => self.device.aqa = value as u32,
            0x28 if width == 8 => self.device.asq = value,
            0x30 if width == 8 => self.device.acq = value,
            o if DOORBELLS.contains(&o) => self.doorbell(o, value as u32),
            o if width == 4 && o >= DOORBELLS.end => {
                self.device.bar.insert(o, value as u32);
            }
            o => self.violation(format!(
                "{width}-byte write of {value:#x} to register {o:#x}"
            )),
        }
    }

    fn write_cc(&mut self, cc: u32) {
        let was = self.device.cc & 1 != 0;
        let now = cc & 1 != 0;
        let was_ready = self.ready();
        self.device.cc = cc;
        if was && !now {
            // Controller reset: every queue is gone (Base 1.4 §7.3.2).
            self.device.disabled_at = self.now_ms;
            self.device.sqs.clear();
            self.device.cqs.clear();
            self.device.pending.clear();
        }
        if !was && now {
            if was_ready {
                self.violation("CC.EN set while CSTS.RDY was still 1".into());
            }
            self.device.enabled_at = self.now_ms;
            // CSS 6:4, MPS 10:7, AMS 13:11, IOSQES 19:16, IOCQES 23:20.
            let fields = (
                (cc >> 4) & 7,
                (cc >> 7) & 0xf,
                (cc >> 11) & 7,
                (cc >> 16) & 0xf,
                (cc >> 20) & 0xf,
            );
            if fields != (0, 0, 0, 6, 4) {
                self.violation(format!(
                    "CC {cc:#x}: not NVM, 4 KiB, round robin, 64/16-byte entries"
                ));
            }
            let aqa = self.device.aqa;
            let (sq_size, cq_size) = ((aqa & 0xfff) as u16 + 1, ((aqa >> 16) & 0xfff) as u16 + 1);
            if sq_size < 2 || cq_size < 2 {
                self.violation(format!("AQA {aqa:#x}"));
            }
            let (asq, acq) = (self.device.asq, self.device.acq);
            for (base, bytes, what) in [
                (asq, u64::from(sq_size) * 64, "ASQ"),
                (acq, u64::from(cq_size) * 16, "ACQ"),
            ] {
                if !base.is_multiple_of(4096) {
                    self.violation(format!("{what} {base:#x} not page aligned"));
                }
                self.ram_range(base, bytes as usize, what);
            }
            self.device.sqs.insert(
                0,
                FakeSq {
                    base: asq,
                    size: sq_size,
                    head: 0,
                    tail: 0,
                    cq: 0,
                },
            );
            self.device.cqs.insert(
                0,
                FakeCq {
                    base: acq,
                    size: cq_size,
                    tail: 0,
                    phase: true,
                    head: 0,
                    vector: 0,
                    interrupts: true,
                },
            );
        }
    }

    fn doorbell(&mut self, offset: u64, value: u32) {
        let stride = self.stride();
        let index = (offset - 0x1000) / stride;
        if !(offset - 0x1000).is_multiple_of(stride) {
            self.violation(format!(
                "doorbell write at {offset:#x} between doorbells (stride {stride})"
            ));
            return;
        }
        let queue = (index / 2) as u16;
        if self.device.cc & 1 == 0 || !self.ready() {
            self.violation(format!(
                "doorbell {offset:#x} written while the controller is not ready"
            ));
            return;
        }
        if index.is_multiple_of(2) {
            self.submission_doorbell(queue, value)
        } else {
            let Some(cq) = self.device.cqs.get_mut(&queue) else {
                self.violation(format!(
                    "CQ head doorbell of queue {queue}, which does not exist"
                ));
                return;
            };
            if value >= u32::from(cq.size) {
                self.violation(format!("CQ {queue} head {value} beyond its size"));
                return;
            }
            cq.head = value as u16;
            self.post_due();
        }
    }

    fn submission_doorbell(&mut self, queue: u16, tail: u32) {
        if self.unpublished {
            self.violation(format!(
                "SQ {queue} doorbell rung before its entries were published"
            ));
        }
        let Some(sq) = self.device.sqs.get_mut(&queue) else {
            self.violation(format!(
                "SQ tail doorbell of queue {queue}, which does not exist"
            ));
            return;
        };
        if tail >= u32::from(sq.size) {
            self.violation(format!("SQ {queue} tail {tail} beyond its size"));
            return;
        }
        sq.tail = tail as u16;
        while let Some(sq) = self.device.sqs.get(&queue).copied()
            && sq.head != sq.tail
        {
            let at = sq.base + u64::from(sq.head) * 64;
            let Some(range) = self.dma_range(at, 64, "submission entry") else {
                return;
            };
            let command = SubmissionEntry::read_from_bytes(&self.ram[range]).unwrap();
            let head = (sq.head + 1) % sq.size;
            self.device.sqs.get_mut(&queue).unwrap().head = head;
            let answer = if queue == 0 {
                self.device.admin_log.push(command);
                self.run_admin(&command)
            } else {
                self.device.io_log.push((queue, command));
                Some((0, 0))
            };
            let Some((status, dw0)) = answer else {
                continue;
            };
            let due = self.now_ms + self.behaviour.latency_ms;
            let cid = command.command_id.get();
            let entry = |cid: u16, status: u16| CompletionEntry {
                dw0: dw0.into(),
                dw1: 0.into(),
                sq_head: head.into(),
                sq_id: queue.into(),
                command_id: cid.into(),
                status: (status << 1).into(),
            };
            if queue == 0 && self.behaviour.flood.contains(&command.opcode) {
                for n in 1..=FLOOD {
                    self.device.stale_posted += 1;
                    let stale = entry(cid.wrapping_add(n as u16), 0);
                    self.device.pending.push_back(Pending {
                        due,
                        cq: sq.cq,
                        entry: stale,
                    });
                }
                continue;
            }
            if queue == 0 && self.behaviour.stale_before.contains(&command.opcode) {
                self.device.stale_posted += 1;
                let stale = entry(cid.wrapping_sub(0x100), INVALID_FIELD);
                self.device.pending.push_back(Pending {
                    due,
                    cq: sq.cq,
                    entry: stale,
                });
            }
            self.device.pending.push_back(Pending {
                due,
                cq: sq.cq,
                entry: entry(cid, status),
            });
        }
        self.post_due();
    }

    /// Runs an admin command: Some((status, dw0)), or None if it never completes.
    fn run_admin(&mut self, c: &SubmissionEntry) -> Option<(u16, u32)> {
        if self.behaviour.ignore.contains(&c.opcode) {
            return None;
        }
        if let Some(&status) = self.behaviour.fail.get(&c.opcode) {
            return Some((status, 0));
        }
        if c.flags != 0 || c.metadata.get() != 0 || c.prp2.get() != 0 {
            self.violation(format!("admin command with flags, metadata or PRP2: {c:?}"));
        }
        let (cdw10, cdw11) = (c.cdw10.get(), c.cdw11.get());
        Some(match c.opcode {
            0x06 => {
                let data = match (cdw10 & 0xff, c.nsid.get()) {
                    (1, 0) => self.behaviour.identify_controller.clone(),
                    (0, 1) => self.behaviour.identify_namespace.clone(),
                    _ => return Some((INVALID_FIELD, 0)),
                };
                let prp1 = c.prp1.get();
                if !prp1.is_multiple_of(4096) {
                    self.violation(format!("Identify buffer {prp1:#x} not page aligned"));
                }
                let range = self.dma_range(prp1, 4096, "Identify buffer")?;
                self.ram[range].copy_from_slice(&data);
                (0, 0)
            }
            0x09 if cdw10 & 0xff == 0x07 => {
                let asked = ((cdw11 & 0xffff) as u16, (cdw11 >> 16) as u16);
                let granted = self
                    .behaviour
                    .grant
                    .unwrap_or((asked.0.min(63), asked.1.min(63)));
                self.device.granted = Some(granted);
                (0, u32::from(granted.1) << 16 | u32::from(granted.0))
            }
            0x05 => self.create_cq(c),
            0x01 => self.create_sq(c),
            0x00 => self.delete_sq(cdw10 as u16),
            0x04 => self.delete_cq(cdw10 as u16),
            _ => (INVALID_OPCODE, 0),
        })
    }

    fn check_queue(
        &mut self,
        c: &SubmissionEntry,
        granted: Option<u16>,
    ) -> Result<(u16, u16), u16> {
        let (qid, size) = ((c.cdw10.get() & 0xffff) as u16, (c.cdw10.get() >> 16) + 1);
        if qid == 0 || granted.is_none_or(|g| qid > g + 1) {
            return Err(INVALID_QUEUE_ID);
        }
        if size < 2 || size > (self.behaviour.cap & 0xffff) as u32 + 1 {
            return Err(INVALID_QUEUE_SIZE);
        }
        let prp1 = c.prp1.get();
        if !prp1.is_multiple_of(4096) {
            self.violation(format!("queue {qid} at {prp1:#x} not page aligned"));
        }
        Ok((qid, size as u16))
    }

    fn create_cq(&mut self, c: &SubmissionEntry) -> (u16, u32) {
        let granted = self.device.granted.map(|g| g.1);
        let (qid, size) = match self.check_queue(c, granted) {
            Ok(q) => q,
            Err(status) => return (status, 0),
        };
        let cdw11 = c.cdw11.get();
        if cdw11 & 1 == 0 {
            self.violation(format!("CQ {qid} not physically contiguous"));
        }
        if self.device.cqs.contains_key(&qid) {
            return (INVALID_QUEUE_ID, 0);
        }
        if self
            .ram_range(c.prp1.get(), usize::from(size) * 16, "completion queue")
            .is_none()
        {
            return (INVALID_FIELD, 0);
        }
        let cq = FakeCq {
            base: c.prp1.get(),
            size,
            tail: 0,
            phase: true,
            head: 0,
            vector: (cdw11 >> 16) as u16,
            interrupts: cdw11 & 2 != 0,
        };
        self.device.cqs.insert(qid, cq);
        (0, 0)
    }

    fn create_sq(&mut self, c: &SubmissionEntry) -> (u16, u32) {
        let granted = self.device.granted.map(|g| g.0);
        let (qid, size) = match self.check_queue(c, granted) {
            Ok(q) => q,
            Err(status) => return (status, 0),
        };
        let cdw11 = c.cdw11.get();
        if cdw11 & 1 == 0 {
            self.violation(format!("SQ {qid} not physically contiguous"));
        }
        let cq = (cdw11 >> 16) as u16;
        if cq == 0 || !self.device.cqs.contains_key(&cq) {
            return (COMPLETION_QUEUE_INVALID, 0);
        }
        if self.device.sqs.contains_key(&qid) {
            return (INVALID_QUEUE_ID, 0);
        }
        if self
            .ram_range(c.prp1.get(), usize::from(size) * 64, "submission queue")
            .is_none()
        {
            return (INVALID_FIELD, 0);
        }
        self.device.sqs.insert(
            qid,
            FakeSq {
                base: c.prp1.get(),
                size,
                head: 0,
                tail: 0,
                cq,
            },
        );
        (0, 0)
    }

    /// Delete I/O SQ: the commands it still has in the device complete at once as aborted
    /// (Command Aborted due to SQ Deletion), posted before the deletion's own completion.
    fn delete_sq(&mut self, qid: u16) -> (u16, u32) {
        let Some(sq) = self.device.sqs.get(&qid).copied().filter(|_| qid != 0) else {
            return (INVALID_QUEUE_ID, 0);
        };
        let (mine, others): (Vec<Pending>, Vec<Pending>) = self
            .device
            .pending
            .drain(..)
            .partition(|p| p.cq == sq.cq && p.entry.sq_id.get() == qid);
        self.device.pending = others.into();
        for mut p in mine {
            p.entry.status = (ABORTED_SQ_DELETION << 1).into();
            if !self.post_now(p) {
                self.violation(format!("CQ {} full while SQ {qid} was deleted", p.cq));
            }
        }
        self.device.sqs.remove(&qid);
        (0, 0)
    }

    /// Delete I/O CQ: refused while an SQ still posts to it.
    fn delete_cq(&mut self, qid: u16) -> (u16, u32) {
        if qid == 0 || !self.device.cqs.contains_key(&qid) {
            return (INVALID_QUEUE_ID, 0);
        }
        if self.device.sqs.values().any(|sq| sq.cq == qid) {
            return (INVALID_QUEUE_DELETION, 0);
        }
        self.device.cqs.remove(&qid);
        (0, 0)
    }

    /// Writes `p`'s entry into its queue now, if it exists and has room.
    fn post_now(&mut self, p: Pending) -> bool {
        let Some(cq) = self.device.cqs.get(&p.cq).copied() else {
            return false;
        };
        if (cq.tail + 1) % cq.size == cq.head {
            return false;
        }
        let mut entry = p.entry;
        entry.status = (entry.status.get() | u16::from(cq.phase)).into();
        let at = cq.base + u64::from(cq.tail) * 16;
        if let Some(range) = self.dma_range(at, 16, "completion entry") {
            self.ram[range].copy_from_slice(entry.as_bytes());
        }
        let cq = self.device.cqs.get_mut(&p.cq).unwrap();
        cq.tail = (cq.tail + 1) % cq.size;
        if cq.tail == 0 {
            cq.phase = !cq.phase;
        }
        true
    }

    /// Posts the completions whose time has come, in order, while their queues have room.
    fn post_due(&mut self) {
        while let Some(next) = self.device.pending.front().copied() {
            if next.due > self.now_ms {
                return;
            }
            if !self.device.cqs.contains_key(&next.cq) {
                self.device.pending.pop_front();
                continue;
            }
            if !self.post_now(next) {
                return;
            }
            self.device.pending.pop_front();
        }
    }

    /// Moves time on by `ms`; the device does what has become due.
    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        self.post_due();
    }
}

/// BAR0 of the fake controller.
pub struct FakeBar(pub Shared);

impl Registers for FakeBar {
    fn read32(&self, offset: u64) -> u32 {
        self.0.borrow_mut().read_register(offset, 4) as u32
    }
    fn read64(&self, offset: u64) -> u64 {
        self.0.borrow_mut().read_register(offset, 8)
    }
    fn write32(&self, offset: u64, value: u32) {
        self.0.borrow_mut().write_register(offset, 4, value.into())
    }
    fn write64(&self, offset: u64, value: u64) {
        self.0.borrow_mut().write_register(offset, 8, value)
    }
}

/// The test clock: each pause of a polling loop is a millisecond.
pub struct TestClock(pub Shared);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.borrow().now_ms
    }
    fn pause(&self) {
        self.0.borrow_mut().advance(1);
    }
}

/// The test's device memory: pages of `World::ram`, handed out in order.
pub struct TestMemory(pub Shared);

pub struct Written {
    world: Shared,
    base: u64,
    size: u64,
}

impl TestMemory {
    fn take(&mut self, bytes: u64) -> Option<Written> {
        let mut world = self.0.borrow_mut();
        let pages = bytes.div_ceil(4096).max(1);
        if world.pages_used + pages > world.page_limit {
            return None;
        }
        let at = (world.pages_used * 4096) as usize;
        world.ram[at..at + (pages * 4096) as usize].fill(0);
        world.pages_used += pages;
        Some(Written {
            world: self.0.clone(),
            base: RAM_BASE + at as u64,
            size: pages * 4096,
        })
    }
}

pub struct Sq(pub Written);
pub struct Cq(pub Written);

impl DmaAllocator for TestMemory {
    type CpuWritten = Sq;
    type DeviceWritten = Cq;
    fn cpu_written(&mut self, bytes: u64) -> Option<Sq> {
        self.take(bytes).map(Sq)
    }
    fn device_written(&mut self, bytes: u64) -> Option<Cq> {
        self.take(bytes).map(Cq)
    }
}

impl Written {
    fn range(&self, offset: u64, len: usize) -> Option<core::ops::Range<usize>> {
        let end = offset.checked_add(len as u64)?;
        (end <= self.size).then(|| {
            let at = (self.base - RAM_BASE + offset) as usize;
            at..at + len
        })
    }
}

impl CpuWritten for Sq {
    fn address(&self) -> u64 {
        self.0.base
    }
    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let mut world = self.0.world.borrow_mut();
        match self.0.range(offset, bytes.len()) {
            Some(range) => {
                world.ram[range].copy_from_slice(bytes);
                world.unpublished = true;
            }
            None => world.violation(format!("SQ write at {offset:#x} beyond the queue")),
        }
    }
    fn publish(&self) {
        self.0.world.borrow_mut().unpublished = false;
    }
}

impl DeviceWritten for Cq {
    fn address(&self) -> u64 {
        self.0.base
    }
    fn read_u32(&self, offset: u64) -> Option<u32> {
        let range = self.0.range(offset, 4)?;
        let mut world = self.0.world.borrow_mut();
        world.awaiting_acquire = true;
        Some(u32::from_le_bytes(world.ram[range].try_into().unwrap()))
    }
    fn read(&self, offset: u64, buffer: &mut [u8]) -> Option<()> {
        let range = self.0.range(offset, buffer.len())?;
        let mut world = self.0.world.borrow_mut();
        if world.awaiting_acquire {
            world.violation(format!(
                "read at {offset:#x} not ordered after the phase tag"
            ));
        }
        buffer.copy_from_slice(&world.ram[range]);
        Some(())
    }
    fn acquire(&self) {
        self.0.world.borrow_mut().awaiting_acquire = false;
    }
    fn zero(&self, bytes: u64) {
        let mut world = self.0.world.borrow_mut();
        match self.0.range(0, bytes as usize) {
            Some(range) => world.ram[range].fill(0),
            None => world.violation(format!("CQ zeroed beyond the queue ({bytes:#x})")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fake configuration space.

/// Configuration space with a host bridge at 00:00.0 and, unless removed, an NVMe controller
/// at [`NVME`]: a 64-bit BAR0 and an MSI-X capability behind a PCIe capability.
pub struct FakeConfig {
    pub regs: BTreeMap<(Bdf, u16), u32>,
    /// Implemented BAR dwords: writable bits and read-only (type) bits.
    bars: BTreeMap<(Bdf, u16), (u32, u32)>,
    /// Writes to the NVMe function's MSI-X capability, in order.
    pub msix_writes: Vec<u32>,
    /// The controller's world, told of the function's Bus Master Enable.
    pub world: Option<Shared>,
}

pub const MSIX_CAP: u16 = 0x50;
pub const MSIX_VECTORS: u16 = 65;
pub const MSIX_TABLE: u64 = 0x2000;
pub const BAR0_SIZE: u64 = 0x4000;

impl FakeConfig {
    pub fn new() -> FakeConfig {
        let mut f = FakeConfig {
            regs: BTreeMap::new(),
            bars: BTreeMap::new(),
            msix_writes: Vec::new(),
            world: None,
        };
        let bridge = Bdf::new(0, 0, 0);
        f.regs.insert((bridge, 0x00), 0x0008_1b36);
        f.regs.insert((bridge, 0x08), 0x0600_0000);
        f.regs.insert((NVME, 0x00), 0x0010_1b36);
        // STATUS: capabilities list; COMMAND: as the firmware left it (I/O space on).
        f.regs.insert((NVME, 0x04), 1 << 20 | 1);
        f.regs.insert((NVME, 0x08), 0x0108_0202);
        f.regs.insert((NVME, 0x34), 0x80);
        f.regs.insert((NVME, 0x80), u32::from(MSIX_CAP) << 8 | 0x10);
        f.set_bar0(BAR0_SIZE, true);
        f.set_msix(MSIX_VECTORS, 0, MSIX_TABLE);
        f
    }

    /// BAR0 of `size` bytes, 64-bit or 32-bit.
    pub fn set_bar0(&mut self, size: u64, is_64bit: bool) {
        let mask = !(size - 1);
        let kind = if is_64bit { 0b100 } else { 0 };
        self.regs.insert((NVME, 0x10), kind);
        self.bars.insert((NVME, 0x10), (mask as u32 & !0xf, kind));
        if is_64bit {
            self.regs.insert((NVME, 0x14), 0);
            self.bars.insert((NVME, 0x14), ((mask >> 32) as u32, 0));
        } else {
            self.regs.remove(&(NVME, 0x14));
            self.bars.remove(&(NVME, 0x14));
        }
    }

    /// The MSI-X capability: `vectors` vectors, table in BAR `bir` at `offset`.
    pub fn set_msix(&mut self, vectors: u16, bir: u32, offset: u64) {
        self.regs
            .insert((NVME, MSIX_CAP), u32::from(vectors - 1) << 16 | 0x11);
        self.regs.insert((NVME, MSIX_CAP + 4), offset as u32 | bir);
        self.regs.insert((NVME, MSIX_CAP + 8), 0x3000);
    }

    /// Takes the MSI-X capability out of the list.
    pub fn remove_msix(&mut self) {
        self.regs.insert((NVME, 0x80), 0x10);
    }

    pub fn msix_control(&self) -> u32 {
        self.regs[&(NVME, MSIX_CAP)]
    }

    pub fn command(&self) -> u32 {
        self.regs[&(NVME, 0x04)] & 0xffff
    }

    /// BAR0 as programmed (PCI bus address).
    pub fn bar0(&self) -> u64 {
        u64::from(self.regs[&(NVME, 0x10)] & !0xf)
            | u64::from(self.regs.get(&(NVME, 0x14)).copied().unwrap_or(0)) << 32
    }
}

impl ConfigSpace for FakeConfig {
    fn read(&mut self, f: Bdf, offset: u16) -> u32 {
        let none = if offset == 0 { u32::MAX } else { 0 };
        self.regs.get(&(f, offset)).copied().unwrap_or(none)
    }

    fn write(&mut self, f: Bdf, offset: u16, value: u32) {
        let value = match offset {
            // Size bits read back as zero; type bits are read-only.
            0x10..0x28 => self
                .bars
                .get(&(f, offset))
                .map_or(0, |&(writable, fixed)| value & writable | fixed),
            // Capability ID, next pointer and table size are read-only.
            o if f == NVME && o == MSIX_CAP => {
                self.msix_writes.push(value);
                value & 0xc000_0000 | self.read(f, o) & 0x3fff_ffff
            }
            0x04 => value & 0xffff | self.read(f, offset) & 0xffff_0000,
            _ => value,
        };
        if let (true, 0x04, Some(world)) = (f == NVME, offset, &self.world) {
            let mut world = world.borrow_mut();
            let on = value & crate::pci::header::BUS_MASTER != 0;
            if on && !world.device.bus_master && world.device.cc & 1 != 0 {
                world.violation(
                    "bus mastering turned on while the controller ran from before its reset".into(),
                );
            }
            world.device.bus_master = on;
        }
        self.regs.insert((f, offset), value);
    }
}

/// The host bridge in the tests: the fake configuration space and grants of the fake BAR0.
pub struct Bridge {
    pub config: FakeConfig,
    pub world: Shared,
    /// Regions granted.
    pub mapped: Vec<Region>,
    /// Refuse every grant.
    pub refuse: bool,
}

impl HostBridge for Bridge {
    type Registers = FakeBar;
    fn config(&mut self) -> &mut dyn ConfigSpace {
        &mut self.config
    }
    fn map(&mut self, bar: Region) -> Option<FakeBar> {
        if self.refuse {
            return None;
        }
        self.mapped.push(bar);
        Some(FakeBar(self.world.clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// A test node.

pub type Controller = PhysicalController<FakeBar, TestMemory, TestClock>;

/// What slices need by default: 4 pairs of 64 entries.
pub const NEEDS: QueueNeeds = QueueNeeds {
    pairs: 4,
    entries: 64,
};

/// A node with the fake controller: its world, bridge and memory.
pub struct Node {
    pub world: Shared,
    pub bridge: Bridge,
    pub memory: TestMemory,
    pub host: PcieHost,
}

impl Node {
    pub fn new(behaviour: Behaviour) -> Node {
        let world = World::new(behaviour);
        Node {
            bridge: Bridge {
                config: FakeConfig {
                    world: Some(world.clone()),
                    ..FakeConfig::new()
                },
                world: world.clone(),
                mapped: Vec::new(),
                refuse: false,
            },
            memory: TestMemory(world.clone()),
            host: host(),
            world,
        }
    }

    pub fn bring_up(&mut self, needs: QueueNeeds) -> Result<Controller, NvmeError> {
        Controller::bring_up(
            &mut self.bridge,
            &self.host,
            &mut crate::pci::BarWindows::new(&self.host),
            &mut self.memory,
            TestClock(self.world.clone()),
            needs,
        )
    }

    pub fn now(&self) -> u64 {
        self.world.borrow().now_ms
    }

    pub fn violations(&self) -> Vec<String> {
        self.world.borrow().violations.clone()
    }

    /// The admin commands the device ran, as (opcode, CDW10, CDW11).
    pub fn admin_commands(&self) -> Vec<(u8, u32, u32)> {
        self.world
            .borrow()
            .device
            .admin_log
            .iter()
            .map(|c| (c.opcode, c.cdw10.get(), c.cdw11.get()))
            .collect()
    }
}

/// The controller brought up on a default node, and the node.
pub fn up() -> (Node, Controller) {
    let mut node = Node::new(Behaviour::default());
    let controller = node.bring_up(NEEDS).expect("bring-up");
    assert_eq!(node.violations(), Vec::<String>::new());
    (node, controller)
}
