//! A small polled NVMe driver (NVMe Base 1.4): finds the controller on the
//! DT's PCIe host bridge, assigns its BARs, resets and enables it with an
//! admin queue in the probe's RAM, identifies the controller and namespace
//! 1, asks for one I/O queue pair per vCPU and creates as many as granted.
//! Completions are polled (no interrupts: MSI-X stays disabled, INTx off,
//! queues created with IEN = 0); every wait has a deadline.
//!
//! DMA memory is a fixed stretch of the probe's RAM right after its
//! footprint (after the memory test, nothing else uses it): queues, an
//! Identify page, two data buffers of the largest transfer, PRP list pages
//! and spare pages for the attacks. All accesses to it and to BAR0 are here,
//! volatile, with barriers around doorbells; cache maintenance is added when
//! the host bridge is not `dma-coherent`.
//!
//! Command building, PRP layout and status decoding are in
//! `microvisor_probe::nvme` (host-tested).

use core::fmt;

use aarch64_cpu::asm::barrier;
use microvisor_probe::MAX_CPUS;
use microvisor_probe::dt::Platform;
use microvisor_probe::memplan::Range;
use microvisor_probe::nvme::identify::{
    ControllerInfo, IDENTIFY_BYTES, NamespaceError, NamespaceInfo,
};
use microvisor_probe::nvme::prp::{MAX_LIST_PAGES, Prp, PrpError};
use microvisor_probe::nvme::{
    self, CC_ENABLE, CNS_CONTROLLER, CNS_NAMESPACE, CQE_BYTES, CSTS_FATAL, CSTS_READY, Cap,
    Command, Completion, PAGE_SIZE, SQE_BYTES, Status, reg,
};
use microvisor_probe::pci::Bdf;

use super::guarded::{self, Fault};
use super::pci::{Ecam, PciError};
use super::timer;

/// Admin queue entries (capped by CAP.MQES).
pub const ADMIN_ENTRIES: u16 = 32;
/// I/O queue entries (capped by CAP.MQES): one 4 KiB page of SQEs.
pub const IO_ENTRIES: u16 = 64;
/// Most I/O queue pairs (one per vCPU).
pub const MAX_IO_QUEUES: usize = MAX_CPUS;
/// Largest transfer the driver issues (further capped by MDTS).
pub const MAX_TRANSFER: u64 = 256 << 10;
/// Deadline of an admin command.
pub const ADMIN_TIMEOUT_MS: u64 = 5000;
/// Deadline of an I/O command.
pub const IO_TIMEOUT_MS: u64 = 10_000;
/// Commands in flight per queue the driver tracks.
const MAX_OUTSTANDING: usize = 8;
/// PRP list pages.
const LIST_PAGES: u64 = MAX_LIST_PAGES as u64;
/// Spare pages for the attacks (admin buffers, decoys).
pub const SPARE_PAGES: u64 = 8;
/// Where the DMA area starts: the footprint end rounded up to this.
const DMA_ALIGN: u64 = 64 << 10;
/// Namespace the driver uses.
pub const NSID: u32 = 1;

/// Why the controller is not usable, or a command did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NvmeError {
    /// PCI enumeration or BAR assignment failed.
    Pci(PciError),
    /// The tree has a host bridge node whose `reg` is unusable.
    BadBridgeNode,
    /// A BAR0 access faulted.
    Mmio {
        /// Register offset.
        offset: u64,
        /// The fault.
        fault: Fault,
    },
    /// CSTS.RDY did not reach `want` within CAP.TO.
    Ready {
        /// The awaited RDY value.
        want: bool,
        /// CSTS when giving up.
        csts: u32,
        /// How long it waited.
        ms: u64,
    },
    /// CSTS.CFS is set.
    Fatal {
        /// CSTS.
        csts: u32,
    },
    /// A command got no completion in time.
    Timeout {
        /// Queue ID.
        qid: u16,
        /// Opcode.
        opcode: u8,
        /// Deadline.
        ms: u64,
    },
    /// A command the driver needs failed.
    Failed {
        /// What it was.
        what: &'static str,
        /// Its status.
        status: Status,
    },
    /// CAP.MPSMIN is above 4 KiB.
    PageSize(u32),
    /// CAP.CSS lacks the NVM command set.
    NoNvmCommandSet,
    /// Namespace 1 is unusable.
    Namespace(NamespaceError),
    /// RAM after the footprint is too small for the queues and buffers.
    NoDmaMemory,
    /// The submission queue (or the driver's tracking) is full.
    QueueFull(u16),
    /// The queue does not exist.
    NoQueue(u16),
    /// No I/O queue could be created (none granted).
    NoIoQueues,
    /// A transfer could not be described with PRPs.
    Prp(PrpError),
}

/// One token (no spaces): it ends up in `"nvme": "<error>"` and in
/// `PROBE FAIL nvme-<error>`.
impl fmt::Display for NvmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NvmeError::Pci(e) => write!(f, "{e}"),
            NvmeError::BadBridgeNode => f.write_str("dt-bad-pci-host"),
            NvmeError::Mmio { offset, fault } => match fault {
                Fault::Exception { esr, .. } => {
                    write!(f, "bar0-fault(offset={offset:#x},esr={esr:#x})")
                }
                Fault::Unaddressable => write!(f, "bar0-unaddressable(offset={offset:#x})"),
            },
            NvmeError::Ready { want, csts, ms } => {
                let what = if want { "not-ready" } else { "still-ready" };
                write!(f, "{what}(csts={csts:#x},waited={ms}ms)")
            }
            NvmeError::Fatal { csts } => write!(f, "controller-fatal(csts={csts:#x})"),
            NvmeError::Timeout { qid, opcode, ms } => {
                write!(f, "timeout(qid={qid},opcode={opcode:#04x},{ms}ms)")
            }
            NvmeError::Failed { what, status } => write!(f, "{what}:{status}"),
            NvmeError::PageSize(mps) => write!(f, "page-size(mpsmin={mps})"),
            NvmeError::NoNvmCommandSet => f.write_str("no-nvm-command-set"),
            NvmeError::Namespace(NamespaceError::Inactive) => f.write_str("namespace1-inactive"),
            NvmeError::Namespace(NamespaceError::LbaSize(lbads)) => {
                write!(f, "namespace1-lba-size(lbads={lbads})")
            }
            NvmeError::NoDmaMemory => f.write_str("no-dma-memory"),
            NvmeError::QueueFull(qid) => write!(f, "queue-full(qid={qid})"),
            NvmeError::NoQueue(qid) => write!(f, "no-queue(qid={qid})"),
            NvmeError::NoIoQueues => f.write_str("no-io-queues"),
            NvmeError::Prp(e) => write!(f, "prp-{e:?}"),
        }
    }
}

impl From<PciError> for NvmeError {
    fn from(e: PciError) -> Self {
        NvmeError::Pci(e)
    }
}

impl From<PrpError> for NvmeError {
    fn from(e: PrpError) -> Self {
        NvmeError::Prp(e)
    }
}

/// Where the driver's DMA memory is.
#[derive(Clone, Copy, Debug)]
pub struct DmaLayout {
    /// The whole area.
    pub range: Range,
    /// Admin SQ and CQ pages.
    pub admin_sq: u64,
    /// See `admin_sq`.
    pub admin_cq: u64,
    /// I/O queue pages: SQ of queue i at `io + 2 * (i - 1) * PAGE`, its CQ
    /// one page later.
    pub io: u64,
    /// The Identify page.
    pub identify: u64,
    /// Data buffer of `MAX_TRANSFER` plus one page (for offset transfers).
    pub data: u64,
    /// A second one (read-back, decoy).
    pub data2: u64,
    /// PRP list pages.
    pub lists: u64,
    /// Spare pages.
    pub spare: u64,
}

impl DmaLayout {
    /// Lays the area out after the footprint, in the memory range holding
    /// it, for `queues` I/O queue pairs.
    fn new(platform: &Platform, image: Range, queues: usize) -> Option<Self> {
        let base = image.end.checked_next_multiple_of(DMA_ALIGN)?;
        let buffer = MAX_TRANSFER + PAGE_SIZE;
        let pages = 2 + 2 * queues as u64 + 1 + LIST_PAGES + SPARE_PAGES;
        let end = base + pages * PAGE_SIZE + 2 * buffer;
        let region = platform.memory().iter().find(|r| r.contains(image.start))?;
        if end > region.end() {
            return None;
        }
        let page = |n: u64| base + n * PAGE_SIZE;
        let identify = page(2 + 2 * queues as u64);
        let data = identify + PAGE_SIZE;
        let data2 = data + buffer;
        let lists = data2 + buffer;
        Some(Self {
            range: Range { start: base, end },
            admin_sq: page(0),
            admin_cq: page(1),
            io: page(2),
            identify,
            data,
            data2,
            lists,
            spare: lists + LIST_PAGES * PAGE_SIZE,
        })
    }

    fn io_sq(&self, qid: u16) -> u64 {
        self.io + 2 * u64::from(qid - 1) * PAGE_SIZE
    }

    fn io_cq(&self, qid: u16) -> u64 {
        self.io_sq(qid) + PAGE_SIZE
    }
}

/// The DMA area, once laid out (the accessors below check against it).
static DMA: spin::Once<Range> = spin::Once::new();

/// End of the NVMe DMA area, once laid out (the NIC's area goes after it).
pub fn dma_end() -> Option<u64> {
    DMA.get().map(|r| r.end)
}

/// Panics unless `[addr, addr + len)` lies in the DMA area: the accessors
/// must never touch a Rust object.
fn check_dma(addr: u64, len: u64) {
    let ok = DMA
        .get()
        .is_some_and(|r| addr >= r.start && addr.saturating_add(len) <= r.end);
    assert!(ok, "DMA access outside the DMA area: {addr:#x}+{len:#x}");
}

/// Reads a dword of DMA memory.
pub fn dma_read32(addr: u64) -> u32 {
    check_dma(addr, 4);
    // SAFETY: the address is in the DMA area (checked): RAM of the probe's
    // own, outside its image, that no Rust object occupies; the device may
    // write it concurrently, hence volatile.
    unsafe { (addr as *const u32).read_volatile() }
}

/// Writes a dword of DMA memory.
pub fn dma_write32(addr: u64, value: u32) {
    check_dma(addr, 4);
    // SAFETY: as in `dma_read32`.
    unsafe { (addr as *mut u32).write_volatile(value) }
}

/// Writes a qword of DMA memory.
pub fn dma_write64(addr: u64, value: u64) {
    check_dma(addr, 8);
    // SAFETY: as in `dma_read32`.
    unsafe { (addr as *mut u64).write_volatile(value) }
}

/// Writes `words` qwords from `addr` with `f(index)`.
pub fn dma_fill(addr: u64, words: u64, f: impl Fn(u64) -> u64) {
    check_dma(addr, words * 8);
    for i in 0..words {
        // SAFETY: in the DMA area (the whole run was checked above).
        unsafe { ((addr + 8 * i) as *mut u64).write_volatile(f(i)) }
    }
}

/// Reads `words` qwords from `addr`.
pub fn dma_words(addr: u64, words: u64) -> impl Iterator<Item = u64> {
    check_dma(addr, words * 8);
    // SAFETY: in the DMA area (the whole run was checked above).
    (0..words).map(move |i| unsafe { ((addr + 8 * i) as *const u64).read_volatile() })
}

/// Smallest data cache line (CTR_EL0.DminLine).
fn dcache_line() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects and is allowed at EL1.
    unsafe {
        core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags))
    };
    4 << ((ctr >> 16) & 0xf)
}

/// Cleans (and with `invalidate` also invalidates) `[addr, addr + len)`
/// to PoC, for a device that does not snoop the caches.
fn dcache_maintain(addr: u64, len: u64, invalidate: bool) {
    check_dma(addr, len);
    let line = dcache_line();
    let mut a = addr & !(line - 1);
    while a < addr + len {
        if invalidate {
            // SAFETY: DC CIVAC writes back and drops lines of the DMA area;
            // no data is lost (dirty lines are written first).
            unsafe {
                core::arch::asm!("dc civac, {}", in(reg) a, options(nostack, preserves_flags))
            };
        } else {
            // SAFETY: DC CVAC only writes dirty lines back.
            unsafe {
                core::arch::asm!("dc cvac, {}", in(reg) a, options(nostack, preserves_flags))
            };
        }
        a += line;
    }
    barrier::dsb(barrier::SY);
}

/// One queue pair as the driver tracks it (index = queue ID; 0 = admin).
#[derive(Clone, Copy, Debug)]
struct Queue {
    entries: u16,
    sq: u64,
    cq: u64,
    tail: u16,
    sq_head: u16,
    cq_head: u16,
    phase: bool,
    next_cid: u16,
    outstanding: [Option<u16>; MAX_OUTSTANDING],
    done: [Option<Completion>; MAX_OUTSTANDING],
}

impl Queue {
    const NONE: Queue = Queue {
        entries: 0,
        sq: 0,
        cq: 0,
        tail: 0,
        sq_head: 0,
        cq_head: 0,
        phase: true,
        next_cid: 0,
        outstanding: [None; MAX_OUTSTANDING],
        done: [None; MAX_OUTSTANDING],
    };

    /// A fresh queue at `sq`/`cq`; command IDs continue from `next_cid`
    /// (so a completion of a command from before a reset is recognizable).
    fn fresh(entries: u16, sq: u64, cq: u64, next_cid: u16) -> Queue {
        Queue {
            entries,
            sq,
            cq,
            next_cid,
            ..Queue::NONE
        }
    }

    fn take_done(&mut self, cid: u16) -> Option<Completion> {
        let slot = self
            .done
            .iter()
            .position(|d| d.is_some_and(|c| c.cid == cid))?;
        self.done[slot].take()
    }

    fn forget(&mut self, cid: u16) {
        for o in &mut self.outstanding {
            if *o == Some(cid) {
                *o = None;
            }
        }
    }
}

/// What was found and set up.
pub struct Controller {
    /// PCI location.
    pub bdf: Bdf,
    /// BAR0 (CPU address) and its size.
    pub bar: u64,
    /// See `bar`.
    pub bar_size: u64,
    /// CAP.
    pub cap: Cap,
    /// VS.
    pub version: u32,
    /// Identify Controller.
    pub info: ControllerInfo,
    /// Identify Namespace 1.
    pub ns: NamespaceInfo,
    /// I/O queue pairs asked for (one per vCPU).
    pub wanted: u16,
    /// I/O queue pairs granted (min of SQs and CQs allocated).
    pub granted: u16,
    /// I/O queue pairs created: queue IDs 1..=io_count.
    pub io_count: u16,
    /// Entries of the admin queues.
    pub admin_entries: u16,
    /// Entries of each I/O queue.
    pub io_entries: u16,
    /// Largest transfer in bytes (MDTS, capped at `MAX_TRANSFER`).
    pub max_transfer: u64,
    /// Whether DMA is cache coherent (no maintenance needed).
    pub coherent: bool,
    /// DMA memory.
    pub dma: DmaLayout,
    /// Completions whose command ID was not outstanding.
    pub stray: u32,
    /// The last of those.
    pub last_stray: Option<Completion>,
    queues: [Queue; MAX_IO_QUEUES + 1],
}

/// How probing went.
pub enum Probe {
    /// `nvme=0`.
    Disabled,
    /// No host bridge, or no NVMe function on it.
    Absent,
    /// The controller works; it is in [`CONTROLLER`].
    Ready,
    /// It failed; the function's location if it was found.
    Failed(NvmeError, Option<Bdf>),
}

/// Finds and starts the controller, asking for `vcpus` I/O queue pairs; a
/// working one is left in [`CONTROLLER`].
pub fn probe(platform: &Platform, image: Range, vcpus: usize) -> Probe {
    let Some(host) = platform.pci else {
        return if platform.pci_node {
            Probe::Failed(NvmeError::BadBridgeNode, None)
        } else {
            Probe::Absent
        };
    };
    let ecam = match Ecam::new(host) {
        Ok(e) => e,
        Err(e) => return Probe::Failed(e.into(), None),
    };
    let bdf = match ecam.find_nvme() {
        Ok(Some(bdf)) => bdf,
        Ok(None) => return Probe::Absent,
        Err(e) => return Probe::Failed(e.into(), None),
    };
    let fail = |e: NvmeError| Probe::Failed(e, Some(bdf));
    let (bar, bar_size) = match ecam.enable(bdf) {
        Ok(b) => b,
        Err(e) => return fail(e.into()),
    };
    let wanted = vcpus.clamp(1, MAX_IO_QUEUES);
    let Some(dma) = DmaLayout::new(platform, image, wanted) else {
        return fail(NvmeError::NoDmaMemory);
    };
    DMA.call_once(|| dma.range);
    // Built in place: the controller is large.
    let mut guard = CONTROLLER.lock();
    let c = guard.insert(Controller {
        bdf,
        bar,
        bar_size,
        cap: Cap(0),
        version: 0,
        info: ControllerInfo::parse(&[0; IDENTIFY_BYTES]),
        ns: NamespaceInfo {
            blocks: 0,
            capacity: 0,
            lba_bytes: 512,
            metadata_bytes: 0,
            format: 0,
        },
        wanted: wanted as u16,
        granted: 0,
        io_count: 0,
        admin_entries: 0,
        io_entries: 0,
        max_transfer: MAX_TRANSFER,
        coherent: host.dma_coherent,
        dma,
        stray: 0,
        last_stray: None,
        queues: [Queue::NONE; MAX_IO_QUEUES + 1],
    });
    match c.start() {
        Ok(()) => Probe::Ready,
        Err(e) => {
            *guard = None;
            fail(e)
        }
    }
}

/// Prints `NVME INFO ...` about the started controller: what the
/// SLICE-REPORT does not carry (it must stay below the microvisor's
/// 1024-byte console lines).
pub fn print_info() {
    let guard = CONTROLLER.lock();
    let Some(c) = guard.as_ref() else {
        return;
    };
    super::console::println!(
        "NVME INFO pci={} bar0={:#x} version={}.{} granted={} queues={} entries={} \
         max-transfer={} blocks={} lba-bytes={} lba-format={} metadata={} vwc={} coherent={} \
         serial={} firmware={} model={}",
        c.bdf,
        c.bar,
        c.version >> 16,
        (c.version >> 8) & 0xff,
        c.granted,
        c.io_count,
        c.io_entries,
        c.max_transfer,
        c.ns.blocks,
        c.ns.lba_bytes,
        c.ns.format,
        c.ns.metadata_bytes,
        u8::from(c.info.volatile_write_cache),
        u8::from(c.coherent),
        microvisor_probe::json::Escaped(c.info.serial.as_bytes()),
        microvisor_probe::json::Escaped(c.info.firmware.as_bytes()),
        microvisor_probe::json::Escaped(c.info.model.as_bytes()),
    );
}

/// The controller, once started (the boot CPU's attacks and heartbeats use
/// it).
pub static CONTROLLER: spin::Mutex<Option<Controller>> = spin::Mutex::new(None);

impl Controller {
    fn mmio(&self, offset: u64) -> Result<u64, NvmeError> {
        if offset + 4 > self.bar_size {
            return Err(NvmeError::Mmio {
                offset,
                fault: Fault::Unaddressable,
            });
        }
        Ok(self.bar + offset)
    }

    /// Reads the BAR0 dword at `offset`.
    pub fn read32(&self, offset: u64) -> Result<u32, NvmeError> {
        let addr = self.mmio(offset)?;
        // SAFETY: BAR0 was placed in the host bridge's memory window, device
        // memory outside RAM and the image: it aliases no Rust object. A
        // fault returns as an error.
        unsafe { guarded::read32(addr) }.map_err(|fault| NvmeError::Mmio { offset, fault })
    }

    /// Writes the BAR0 dword at `offset`.
    pub fn write32(&self, offset: u64, value: u32) -> Result<(), NvmeError> {
        let addr = self.mmio(offset)?;
        // SAFETY: as in `read32`.
        unsafe { guarded::write32(addr, value) }.map_err(|fault| NvmeError::Mmio { offset, fault })
    }

    /// Reads a 64-bit register as two dwords, low first (as Linux does).
    fn read64(&self, offset: u64) -> Result<u64, NvmeError> {
        let low = self.read32(offset)?;
        let high = self.read32(offset + 4)?;
        Ok(u64::from(low) | (u64::from(high) << 32))
    }

    /// Writes a 64-bit register as two dwords, low first.
    fn write64(&self, offset: u64, value: u64) -> Result<(), NvmeError> {
        self.write32(offset, value as u32)?;
        self.write32(offset + 4, (value >> 32) as u32)
    }

    /// Writes a doorbell (SQ tail, or CQ head if `completion`) of any queue
    /// ID with any value: the attacks' raw access.
    pub fn doorbell(&self, qid: u16, completion: bool, value: u32) -> Result<(), NvmeError> {
        let offset = nvme::doorbell_offset(qid, completion, self.cap.doorbell_stride());
        self.write32(offset, value)
    }

    /// Reads, reset-enables and identifies the controller, then creates the
    /// I/O queues.
    fn start(&mut self) -> Result<(), NvmeError> {
        self.cap = Cap(self.read64(reg::CAP)?);
        self.version = self.read32(reg::VS)?;
        if !self.cap.nvm_command_set() {
            return Err(NvmeError::NoNvmCommandSet);
        }
        if self.cap.mps_min() > 0 {
            return Err(NvmeError::PageSize(self.cap.mps_min()));
        }
        let max = self.cap.max_entries().min(u32::from(u16::MAX)) as u16;
        self.admin_entries = ADMIN_ENTRIES.min(max);
        self.io_entries = IO_ENTRIES.min(max);
        self.enable_admin()?;
        let page = self.dma.identify;
        self.exec_ok(
            0,
            Command::identify(CNS_CONTROLLER, 0, page),
            "identify-controller",
        )?;
        self.info = ControllerInfo::parse(&self.identify_page());
        self.exec_ok(
            0,
            Command::identify(CNS_NAMESPACE, NSID, page),
            "identify-namespace",
        )?;
        self.ns = NamespaceInfo::parse(&self.identify_page()).map_err(NvmeError::Namespace)?;
        self.max_transfer = self.info.max_transfer(PAGE_SIZE, MAX_TRANSFER);
        self.create_io_queues()
    }

    fn identify_page(&self) -> [u8; IDENTIFY_BYTES] {
        self.invalidate(self.dma.identify, PAGE_SIZE);
        let mut page = [0u8; IDENTIFY_BYTES];
        for (i, word) in dma_words(self.dma.identify, PAGE_SIZE / 8).enumerate() {
            page[8 * i..8 * i + 8].copy_from_slice(&word.to_le_bytes());
        }
        page
    }

    /// Disables the controller (CC.EN = 0) and waits for CSTS.RDY = 0.
    /// The controller drops all queues; the driver forgets them too.
    pub fn disable(&mut self) -> Result<(), NvmeError> {
        let cc = self.read32(reg::CC)?;
        let csts = self.read32(reg::CSTS)?;
        if cc & 1 != 0 || csts & CSTS_READY != 0 {
            self.write32(reg::CC, cc & !1)?;
            self.wait_ready(false)?;
        }
        for q in &mut self.queues {
            let next_cid = q.next_cid;
            *q = Queue {
                next_cid,
                ..Queue::NONE
            };
        }
        self.io_count = 0;
        Ok(())
    }

    /// Only clears CC.EN (the reset-inflight attack waits itself).
    pub fn clear_enable(&self) -> Result<(), NvmeError> {
        let cc = self.read32(reg::CC)?;
        self.write32(reg::CC, cc & !1)
    }

    /// Waits for CSTS.RDY = `ready` for up to CAP.TO.
    pub fn wait_ready(&self, ready: bool) -> Result<(), NvmeError> {
        let ms = self.cap.timeout_ms();
        let deadline = timer::now() + timer::ticks_from_ms(ms);
        loop {
            let csts = self.read32(reg::CSTS)?;
            if ready && csts & CSTS_FATAL != 0 {
                return Err(NvmeError::Fatal { csts });
            }
            if (csts & CSTS_READY != 0) == ready {
                return Ok(());
            }
            if timer::now() >= deadline {
                return Err(NvmeError::Ready {
                    want: ready,
                    csts,
                    ms,
                });
            }
            timer::sleep_us(100);
        }
    }

    /// Resets the controller and enables it with a fresh admin queue.
    pub fn enable_admin(&mut self) -> Result<(), NvmeError> {
        self.disable()?;
        let (sq, cq, n) = (self.dma.admin_sq, self.dma.admin_cq, self.admin_entries);
        dma_fill(sq, PAGE_SIZE / 8, |_| 0);
        dma_fill(cq, PAGE_SIZE / 8, |_| 0);
        self.clean(sq, PAGE_SIZE);
        self.clean(cq, PAGE_SIZE);
        self.queues[0] = Queue::fresh(n, sq, cq, self.queues[0].next_cid);
        self.write32(reg::AQA, nvme::aqa(n, n))?;
        self.write64(reg::ASQ, sq)?;
        self.write64(reg::ACQ, cq)?;
        barrier::dsb(barrier::SY);
        self.write32(reg::CC, CC_ENABLE)?;
        self.wait_ready(true)
    }

    /// Set Features Number of Queues (one pair per vCPU), then creates
    /// pairs 1..=min(wanted, granted).
    pub fn create_io_queues(&mut self) -> Result<(), NvmeError> {
        let cmd = Command::set_number_of_queues(self.wanted, self.wanted);
        let done = self.exec_ok(0, cmd, "set-features-queues")?;
        let (sq, cq) = nvme::granted_queues(done.dw0);
        self.granted = sq.min(cq).min(u32::from(u16::MAX)) as u16;
        let count = self.wanted.min(self.granted);
        if count == 0 {
            return Err(NvmeError::NoIoQueues);
        }
        for qid in 1..=count {
            self.create_io_pair(qid)?;
            self.io_count = qid;
        }
        Ok(())
    }

    /// Creates I/O CQ and SQ `qid` in their DMA pages.
    pub fn create_io_pair(&mut self, qid: u16) -> Result<(), NvmeError> {
        let (sq, cq, n) = (self.dma.io_sq(qid), self.dma.io_cq(qid), self.io_entries);
        dma_fill(cq, PAGE_SIZE / 8, |_| 0);
        self.clean(cq, PAGE_SIZE);
        let contiguous = true;
        let create_cq = Command::create_cq(qid, u32::from(n), cq, contiguous);
        self.exec_ok(0, create_cq, "create-io-cq")?;
        let q = &mut self.queues[usize::from(qid)];
        *q = Queue::fresh(n, sq, cq, q.next_cid);
        let create_sq = Command::create_sq(qid, u32::from(n), sq, qid, contiguous);
        if let Err(e) = self.exec_ok(0, create_sq, "create-io-sq") {
            self.queues[usize::from(qid)].entries = 0;
            return Err(e);
        }
        Ok(())
    }

    /// Deletes I/O SQ and CQ `qid`.
    pub fn delete_io_pair(&mut self, qid: u16) -> Result<(), NvmeError> {
        self.exec_ok(0, Command::delete_sq(qid), "delete-io-sq")?;
        self.exec_ok(0, Command::delete_cq(qid), "delete-io-cq")?;
        self.queues[usize::from(qid)].entries = 0;
        Ok(())
    }

    /// The DMA pages of I/O queue pair `qid` (SQ, CQ), created or not.
    pub fn io_pages(&self, qid: u16) -> (u64, u64) {
        (self.dma.io_sq(qid), self.dma.io_cq(qid))
    }

    fn queue(&mut self, qid: u16) -> Result<&mut Queue, NvmeError> {
        match self.queues.get_mut(usize::from(qid)) {
            Some(q) if q.entries != 0 => Ok(q),
            _ => Err(NvmeError::NoQueue(qid)),
        }
    }

    /// Where queue `qid`'s CQ takes its next completion (the entry's
    /// address and the phase tag it will carry), and the first byte past
    /// its last entry.
    pub fn cq_next(&mut self, qid: u16) -> Result<(u64, bool, u64), NvmeError> {
        let q = self.queue(qid)?;
        let next = q.cq + u64::from(q.cq_head) * CQE_BYTES;
        Ok((next, q.phase, q.cq + u64::from(q.entries) * CQE_BYTES))
    }

    /// The current SQ tail and CQ head of queue `qid` (the values its
    /// doorbells should hold).
    pub fn doorbell_values(&mut self, qid: u16) -> Result<(u16, u16), NvmeError> {
        let q = self.queue(qid)?;
        Ok((q.tail, q.cq_head))
    }

    /// Writes `cmd` (with a fresh command ID) into the next SQ slot of
    /// `qid` without ringing the doorbell. Returns the CID and the slot's
    /// address.
    pub fn place(&mut self, qid: u16, mut cmd: Command) -> Result<(u16, u64), NvmeError> {
        let coherent = self.coherent;
        let q = self.queue(qid)?;
        let next = (q.tail + 1) % q.entries;
        let free = q.outstanding.iter().position(Option::is_none);
        let Some(free) = free.filter(|_| next != q.sq_head) else {
            return Err(NvmeError::QueueFull(qid));
        };
        let cid = q.next_cid;
        q.next_cid = match q.next_cid.wrapping_add(1) {
            0xffff => 0,
            n => n,
        };
        cmd.set_cid(cid);
        let slot = q.sq + u64::from(q.tail) * SQE_BYTES;
        for (i, &dw) in cmd.dw.iter().enumerate() {
            dma_write32(slot + 4 * i as u64, dw);
        }
        q.tail = next;
        q.outstanding[free] = Some(cid);
        if !coherent {
            dcache_maintain(slot, SQE_BYTES, false);
        }
        Ok((cid, slot))
    }

    /// Rings `qid`'s SQ doorbell with the current tail.
    pub fn ring(&mut self, qid: u16) -> Result<(), NvmeError> {
        let tail = self.queue(qid)?.tail;
        // The SQE (and PRP lists, data) must reach memory before the
        // device sees the doorbell.
        barrier::dsb(barrier::SY);
        self.doorbell(qid, false, u32::from(tail))
    }

    /// Places and rings.
    pub fn submit(&mut self, qid: u16, cmd: Command) -> Result<u16, NvmeError> {
        let (cid, _) = self.place(qid, cmd)?;
        self.ring(qid)?;
        Ok(cid)
    }

    /// Consumes the completions `qid`'s CQ holds.
    fn poll(&mut self, qid: u16) -> Result<(), NvmeError> {
        let coherent = self.coherent;
        let mut stray = None;
        let mut strays = 0;
        let q = self.queue(qid)?;
        let mut consumed = false;
        loop {
            let entry = q.cq + u64::from(q.cq_head) * CQE_BYTES;
            if !coherent {
                dcache_maintain(entry, CQE_BYTES, true);
            }
            let dw3 = dma_read32(entry + 12);
            if Completion::phase_of(dw3) != q.phase {
                break;
            }
            // The rest of the entry only after its phase tag.
            barrier::dmb(barrier::SY);
            let c = Completion::from_dwords([
                dma_read32(entry),
                dma_read32(entry + 4),
                dma_read32(entry + 8),
                dw3,
            ]);
            q.cq_head += 1;
            if q.cq_head == q.entries {
                q.cq_head = 0;
                q.phase = !q.phase;
            }
            // Each of this driver's CQs serves one SQ, so the SQ ID is not needed to know
            // whose head this is (the specification asks for it only for shared CQs); the
            // microvisor's direct queues carry the hardware queue's SQ ID (decision 5).
            if c.sq_head < q.entries {
                q.sq_head = c.sq_head;
            }
            consumed = true;
            match q.outstanding.iter().position(|&o| o == Some(c.cid)) {
                Some(slot) => {
                    q.outstanding[slot] = None;
                    match q.done.iter().position(Option::is_none) {
                        Some(free) => q.done[free] = Some(c),
                        None => q.done[0] = Some(c),
                    }
                }
                None => {
                    strays += 1;
                    stray = Some(c);
                }
            }
        }
        let head = q.cq_head;
        if consumed {
            self.doorbell(qid, true, u32::from(head))?;
        }
        if strays > 0 {
            self.stray += strays;
            self.last_stray = stray;
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` for command `cid` on `qid`. On a timeout
    /// the command is forgotten (a late completion counts as stray).
    pub fn wait(
        &mut self,
        qid: u16,
        cid: u16,
        opcode: u8,
        timeout_ms: u64,
    ) -> Result<Completion, NvmeError> {
        let deadline = timer::now() + timer::ticks_from_ms(timeout_ms);
        let mut spins = 0u32;
        loop {
            self.poll(qid)?;
            if let Some(c) = self.queue(qid)?.take_done(cid) {
                return Ok(c);
            }
            if timer::now() >= deadline {
                self.queue(qid)?.forget(cid);
                let csts = self.read32(reg::CSTS)?;
                if csts & CSTS_FATAL != 0 {
                    return Err(NvmeError::Fatal { csts });
                }
                return Err(NvmeError::Timeout {
                    qid,
                    opcode,
                    ms: timeout_ms,
                });
            }
            spins += 1;
            if spins < 256 {
                core::hint::spin_loop();
            } else {
                timer::sleep_us(20);
            }
        }
    }

    /// Polls `qid` once more and returns how many stray completions have
    /// been seen in all.
    pub fn drain(&mut self, qid: u16) -> Result<u32, NvmeError> {
        self.poll(qid)?;
        Ok(self.stray)
    }

    /// Submits `cmd` on `qid` and waits for its completion (any status).
    pub fn exec(
        &mut self,
        qid: u16,
        cmd: Command,
        timeout_ms: u64,
    ) -> Result<Completion, NvmeError> {
        let cid = self.submit(qid, cmd)?;
        self.wait(qid, cid, cmd.opcode(), timeout_ms)
    }

    /// Like `exec` with the default deadline; an error status is an error.
    pub fn exec_ok(
        &mut self,
        qid: u16,
        cmd: Command,
        what: &'static str,
    ) -> Result<Completion, NvmeError> {
        let timeout = if qid == 0 {
            ADMIN_TIMEOUT_MS
        } else {
            IO_TIMEOUT_MS
        };
        let c = self.exec(qid, cmd, timeout)?;
        if c.status.is_success() {
            Ok(c)
        } else {
            Err(NvmeError::Failed {
                what,
                status: c.status,
            })
        }
    }

    /// Lays out the PRPs of `bytes` at `data` with lists starting at
    /// `list` (further list pages follow it page by page), writes the list
    /// entries and returns the PRPs.
    pub fn prepare_prps(&self, data: u64, bytes: u64, list: u64) -> Result<Prp, NvmeError> {
        let first = list - list % PAGE_SIZE;
        let lists = [
            list,
            first + PAGE_SIZE,
            first + 2 * PAGE_SIZE,
            first + 3 * PAGE_SIZE,
        ];
        let prp = Prp::new(data, bytes, &lists)?;
        for entry in prp.entries() {
            dma_write64(entry.addr, entry.value);
        }
        for &l in prp.lists() {
            self.clean(l, PAGE_SIZE - l % PAGE_SIZE);
        }
        Ok(prp)
    }

    /// Read or Write (`cmd` without data pointer) of `bytes` at `data`
    /// with lists at `list`; waits. Any status is returned.
    pub fn transfer_at(
        &mut self,
        qid: u16,
        cmd: Command,
        data: u64,
        bytes: u64,
        list: u64,
    ) -> Result<Completion, NvmeError> {
        let prp = self.prepare_prps(data, bytes, list)?;
        let write = cmd.opcode() == nvme::io::WRITE;
        if write {
            self.clean(data, bytes);
        }
        let timeout = IO_TIMEOUT_MS + bytes / (1 << 20) * 1000;
        let c = self.exec(qid, cmd.prp(prp.prp1, prp.prp2), timeout)?;
        if !write {
            self.invalidate(data, bytes);
        }
        Ok(c)
    }

    /// Read (or Write if `write`) of `blocks` from `lba` of namespace 1 to
    /// (from) `data`, lists in the list pages; any status is returned.
    pub fn transfer(
        &mut self,
        qid: u16,
        write: bool,
        lba: u64,
        blocks: u32,
        data: u64,
    ) -> Result<Completion, NvmeError> {
        let opcode = if write {
            nvme::io::WRITE
        } else {
            nvme::io::READ
        };
        let bytes = u64::from(blocks) * u64::from(self.ns.lba_bytes);
        let list = self.dma.lists;
        self.transfer_at(
            qid,
            Command::rw(opcode, NSID, lba, blocks),
            data,
            bytes,
            list,
        )
    }

    /// `transfer` that turns an error status into an error.
    pub fn transfer_ok(
        &mut self,
        qid: u16,
        write: bool,
        lba: u64,
        blocks: u32,
        data: u64,
    ) -> Result<(), NvmeError> {
        let c = self.transfer(qid, write, lba, blocks, data)?;
        if c.status.is_success() {
            Ok(())
        } else {
            let what = if write { "write" } else { "read" };
            Err(NvmeError::Failed {
                what,
                status: c.status,
            })
        }
    }

    /// Flush of namespace 1 on `qid`.
    pub fn flush(&mut self, qid: u16) -> Result<(), NvmeError> {
        self.exec_ok(qid, Command::flush(NSID), "flush").map(drop)
    }

    /// Blocks in the largest transfer.
    pub fn max_blocks(&self) -> u64 {
        (self.max_transfer / u64::from(self.ns.lba_bytes)).max(1)
    }

    /// Cleans `[addr, addr + len)` to PoC if DMA is not coherent.
    pub fn clean(&self, addr: u64, len: u64) {
        if !self.coherent {
            dcache_maintain(addr, len, false);
        }
    }

    /// Cleans and invalidates `[addr, addr + len)` if DMA is not coherent
    /// (before reading what the device wrote).
    pub fn invalidate(&self, addr: u64, len: u64) {
        if !self.coherent {
            dcache_maintain(addr, len, true);
        }
    }
}
