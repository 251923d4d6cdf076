//! The hypervisor's driver for the node's physical NVMe controller (NVMe Base 1.4): PCI set-up,
//! controller reset and enable (§3.5.1, §7.6.1), a polled admin queue, Identify, Set Features
//! (Number of Queues), and creation of the hardware I/O queue pairs the slices get. The
//! controller is never handed to a slice: slices only ever see their own virtual controllers.

use alloc::string::String;
use alloc::vec::Vec;

use microvisor_arch::cpu;
use microvisor_arch::memory::{PhysRegion, RegionPool, SharedMemory};
use microvisor_arch::nvme::{NvmeController, set_msix_entry};
use microvisor_arch::pci::{PciHost, barrier};
use microvisor_logic::inventory::{PcieHost, Region};
use microvisor_logic::pages::PageAllocator;
use microvisor_logic::pci::{
    Bdf, CLASS_NVME, MemoryBar, WindowAllocator, capability, find_capability, header, scan_bus,
    set_bar, size_bar,
};

/// Entries of the admin queues.
const ADMIN_ENTRIES: u16 = 32;
/// Bytes per submission and completion queue entry.
pub const SQE_SIZE: u64 = 64;
pub const CQE_SIZE: u64 = 16;
const PAGE: u64 = 4096;

/// Why the controller (or one command to it) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NvmeError {
    /// No NVMe function on the host bridge.
    NoController,
    /// The function's BARs could not be placed or granted.
    Bars(&'static str),
    /// The device memory for queues and tables ran out.
    OutOfDeviceMemory,
    /// The controller did not reach the wanted CSTS.RDY within CAP.TO.
    NotReady { ready: bool, waited_ms: u64 },
    /// The controller reported a fatal status (CSTS.CFS).
    Fatal,
    /// An admin command did not complete within the timeout.
    Timeout { opcode: u8 },
    /// An admin command completed with an error status.
    Command { opcode: u8, status: u16 },
    /// The controller lacks something the hypervisor needs.
    Unsupported(&'static str),
}

impl core::fmt::Display for NvmeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoController => f.write_str("no NVMe controller on the PCIe host bridge"),
            Self::Bars(why) => write!(f, "cannot place its BARs: {why}"),
            Self::OutOfDeviceMemory => f.write_str("out of device memory for queues"),
            Self::NotReady { ready, waited_ms } => {
                write!(
                    f,
                    "controller did not become {} within {waited_ms} ms",
                    if *ready { "ready" } else { "disabled" }
                )
            }
            Self::Fatal => f.write_str("controller fatal status (CSTS.CFS)"),
            Self::Timeout { opcode } => write!(f, "admin command {opcode:#04x} timed out"),
            Self::Command { opcode, status } => write!(
                f,
                "admin command {opcode:#04x} failed with status {status:#x}"
            ),
            Self::Unsupported(what) => write!(f, "unsupported controller: {what}"),
        }
    }
}

/// The hypervisor's device memory: one claimed RAM region handed out in zeroed, page-aligned
/// pieces for queues, ITS and LPI tables and DMA buffers. `PageAllocator` decides where each
/// piece goes; the pool splits the claimed region, so pieces never overlap.
pub struct DeviceMemory {
    region: Region,
    pool: RegionPool,
    pages: PageAllocator,
}

impl DeviceMemory {
    pub fn new(claimed: PhysRegion) -> Self {
        let region = claimed.region();
        Self {
            pages: PageAllocator::new(region.base, (region.size / PAGE) as usize),
            pool: RegionPool::new(claimed),
            region,
        }
    }

    /// `bytes` (rounded up to pages) of zeroed device memory aligned to `align`.
    pub fn allocate(&mut self, bytes: u64, align: u64) -> Result<PhysRegion, NvmeError> {
        let pages = bytes.div_ceil(PAGE).max(1);
        let base = self
            .pages
            .allocate(pages as usize, align)
            .ok_or(NvmeError::OutOfDeviceMemory)?;
        let mut piece = self
            .pool
            .take(Region::new(base, pages * PAGE))
            .ok_or(NvmeError::OutOfDeviceMemory)?;
        piece
            .zero(0, pages * PAGE)
            .map_err(|_| NvmeError::OutOfDeviceMemory)?;
        Ok(piece)
    }

    /// The whole region (for the footprint report).
    pub fn region(&self) -> Region {
        self.region
    }

    /// Bytes handed out so far.
    pub fn used(&self) -> u64 {
        self.pages.used() as u64 * PAGE
    }
}

/// What Identify Controller and Identify Namespace said.
#[derive(Clone, Debug)]
pub struct ControllerInfo {
    pub subsystem_vendor: u16,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// Maximum data transfer size as a power of two of 4 KiB pages (0 = no limit).
    pub mdts: u8,
    pub volatile_write_cache: bool,
    /// Optional NVM command support (ONCS).
    pub oncs: u16,
    /// Largest queue the controller accepts (CAP.MQES + 1).
    pub max_queue_entries: u32,
    /// I/O queue pairs the controller granted (Set Features, Number of Queues).
    pub io_queues: u16,
    /// Namespace 1: block count and log2 of the block size.
    pub blocks: u64,
    pub lba_shift: u8,
}

/// A 64-byte submission queue entry as 16 dwords.
pub type Command = [u32; 16];
/// A completion: DW0, SQ head, status (without the phase bit), CID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub result: u32,
    pub sq_head: u16,
    pub status: u16,
    pub cid: u16,
}

/// One submission/completion queue pair in device memory, with its indexes.
pub struct QueuePair {
    pub id: u16,
    pub entries: u16,
    /// Written by the CPU, read by the device.
    sq: PhysRegion,
    /// Written by the device.
    cq: SharedMemory,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
}

impl QueuePair {
    fn new(id: u16, entries: u16, memory: &mut DeviceMemory) -> Result<Self, NvmeError> {
        let sq = memory.allocate(u64::from(entries) * SQE_SIZE, PAGE)?;
        let cq = memory
            .allocate(u64::from(entries) * CQE_SIZE, PAGE)?
            .into_shared();
        Ok(Self {
            id,
            entries,
            sq,
            cq,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
        })
    }

    pub fn sq_address(&self) -> u64 {
        self.sq.region().base
    }

    pub fn cq_address(&self) -> u64 {
        self.cq.region().base
    }

    /// Writes a 64-byte command at the tail (the caller rings with [`QueuePair::tail`]). The
    /// caller keeps fewer than `entries - 1` commands in flight.
    pub fn push_bytes(&mut self, command: &[u8; SQE_SIZE as usize]) {
        let _ = self.sq.write(u64::from(self.sq_tail) * SQE_SIZE, command);
        self.sq_tail = (self.sq_tail + 1) % self.entries;
    }

    /// Writes a command given as 16 dwords.
    fn push(&mut self, command: &Command) {
        let mut bytes = [0u8; SQE_SIZE as usize];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(command) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        self.push_bytes(&bytes);
    }

    /// The submission queue tail to write to the doorbell.
    pub fn tail(&self) -> u16 {
        self.sq_tail
    }

    /// The next 16-byte completion entry if the controller posted one (its phase tag
    /// matches), advancing the head. The caller writes the head doorbell after a batch.
    pub fn pop_bytes(&mut self) -> Option<[u8; CQE_SIZE as usize]> {
        let offset = u64::from(self.cq_head) * CQE_SIZE;
        let dw3 = self.cq.read_u32(offset + 12).ok()?;
        if (dw3 >> 16) & 1 != u32::from(self.phase) {
            return None;
        }
        barrier::after_device_write();
        let mut bytes = [0u8; CQE_SIZE as usize];
        self.cq.read(offset, &mut bytes).ok()?;
        self.cq_head = (self.cq_head + 1) % self.entries;
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
        Some(bytes)
    }

    /// The next completion, parsed.
    fn pop(&mut self) -> Option<Completion> {
        let bytes = self.pop_bytes()?;
        let word = |i: usize| {
            u32::from_le_bytes([
                bytes[4 * i],
                bytes[4 * i + 1],
                bytes[4 * i + 2],
                bytes[4 * i + 3],
            ])
        };
        let (dw2, dw3) = (word(2), word(3));
        Some(Completion {
            result: word(0),
            sq_head: dw2 as u16,
            status: (dw3 >> 17) as u16,
            cid: dw3 as u16,
        })
    }

    pub fn cq_head(&self) -> u16 {
        self.cq_head
    }
}

/// The physical controller, once up.
pub struct Physical {
    pub bdf: Bdf,
    pub controller: NvmeController,
    pub info: ControllerInfo,
    admin: QueuePair,
    /// MSI-X table offset inside BAR0 and its size.
    msix_table: u64,
    msix_vectors: u16,
    next_cid: u16,
    timeout_ms: u64,
}

/// Bus master, memory decoding, no INTx; BARs placed in the host bridge's windows.
fn configure_function(
    pci: &mut PciHost,
    host: &PcieHost,
    bdf: Bdf,
) -> Result<Vec<(MemoryBar, Region)>, NvmeError> {
    let mut windows: Vec<(WindowAllocator, u64, u64)> = [host.mem32, host.mem64]
        .into_iter()
        .flatten()
        .map(|w| (WindowAllocator::new(w.pci, w.size), w.pci, w.cpu))
        .collect();
    let config = pci.config();
    let command = config.read(bdf, header::COMMAND);
    config.write(
        bdf,
        header::COMMAND,
        command & !(header::MEMORY_SPACE | header::BUS_MASTER) & 0xffff,
    );
    let mut bars = Vec::new();
    let mut index = 0;
    while index < 6 {
        let Some(bar) = size_bar(config, bdf, index) else {
            index += 1;
            continue;
        };
        let (window, pci_base, cpu_base) = windows
            .iter_mut()
            .find_map(|(w, pci_base, cpu_base)| {
                w.allocate(bar.size).map(|a| (a, *pci_base, *cpu_base))
            })
            .ok_or(NvmeError::Bars("no room in the host bridge windows"))?;
        set_bar(config, bdf, &bar, window);
        bars.push((bar, Region::new(cpu_base + (window - pci_base), bar.size)));
        index += if bar.is_64bit { 2 } else { 1 };
    }
    config.write(
        bdf,
        header::COMMAND,
        (command | header::MEMORY_SPACE | header::BUS_MASTER | header::INTX_DISABLE) & 0xffff,
    );
    Ok(bars)
}

impl Physical {
    /// Finds the NVMe controller, resets and enables it, and identifies it and namespace 1.
    /// `io_queues` is how many I/O queue pairs the slices need.
    pub fn bring_up(
        pci: &mut PciHost,
        host: &PcieHost,
        memory: &mut DeviceMemory,
        io_queues: u16,
    ) -> Result<Physical, NvmeError> {
        let function = scan_bus(pci.config(), host.bus_start)
            .into_iter()
            .find(|f| f.class == CLASS_NVME)
            .ok_or(NvmeError::NoController)?;
        let bdf = function.bdf;
        let bars = configure_function(pci, host, bdf)?;
        let (_, bar0) = bars
            .iter()
            .find(|(b, _)| b.index == 0)
            .ok_or(NvmeError::Bars("no BAR0"))?;

        let msix = find_capability(pci.config(), bdf, capability::MSI_X)
            .ok_or(NvmeError::Unsupported("no MSI-X"))?;
        let control = pci.config().read(bdf, msix);
        let msix_vectors = (((control >> 16) & 0x7ff) + 1) as u16;
        let table = pci.config().read(bdf, msix + 4);
        if table & 0b111 != 0 {
            return Err(NvmeError::Unsupported("MSI-X table outside BAR0"));
        }
        let msix_table = u64::from(table & !0b111);
        // Enable MSI-X with the function masked until the entries are programmed.
        pci.config().write(bdf, msix, control | 1 << 31 | 1 << 30);

        let grant = pci
            .grant(*bar0)
            .map_err(|_| NvmeError::Bars("BAR0 not grantable"))?;
        let controller = NvmeController::new(grant);
        controller.mask_pin_interrupts();
        let cap = controller.capabilities();
        let timeout_ms = ((cap >> 24) & 0xff).max(1) * 500;
        if (cap >> 37) & 1 == 0 {
            return Err(NvmeError::Unsupported("no NVM command set"));
        }
        if (cap >> 48) & 0xf != 0 {
            return Err(NvmeError::Unsupported(
                "4 KiB pages not supported (CAP.MPSMIN)",
            ));
        }
        let mut physical = Physical {
            bdf,
            controller,
            info: ControllerInfo {
                subsystem_vendor: 0,
                serial: String::new(),
                model: String::new(),
                firmware: String::new(),
                mdts: 0,
                volatile_write_cache: false,
                oncs: 0,
                max_queue_entries: (cap & 0xffff) as u32 + 1,
                io_queues: 0,
                blocks: 0,
                lba_shift: 9,
            },
            admin: QueuePair::new(0, ADMIN_ENTRIES, memory)?,
            msix_table,
            msix_vectors,
            next_cid: 0,
            timeout_ms,
        };
        physical.reset_and_enable()?;
        // Release the function mask: entries stay masked (vector control) until programmed.
        pci.config()
            .write(bdf, msix, (control | 1 << 31) & !(1 << 30));
        physical.identify(memory)?;
        physical.info.io_queues = physical.set_queue_count(io_queues)?;
        Ok(physical)
    }

    fn wait_ready(&self, ready: bool) -> Result<(), NvmeError> {
        let hz = cpu::counter_frequency().max(1);
        let start = cpu::counter();
        loop {
            let status = self.controller.status();
            if status & 0b10 != 0 {
                return Err(NvmeError::Fatal);
            }
            if (status & 1 != 0) == ready {
                return Ok(());
            }
            let waited_ms = cpu::counter().wrapping_sub(start) * 1000 / hz;
            if waited_ms > self.timeout_ms {
                return Err(NvmeError::NotReady { ready, waited_ms });
            }
            cpu::spin_hint();
        }
    }

    fn reset_and_enable(&mut self) -> Result<(), NvmeError> {
        if self.controller.configuration() & 1 != 0 {
            self.controller.set_configuration(0);
        }
        self.wait_ready(false)?;
        self.controller.set_admin_queues(
            u32::from(ADMIN_ENTRIES),
            u32::from(ADMIN_ENTRIES),
            self.admin.sq_address(),
            self.admin.cq_address(),
        );
        // EN, CSS = NVM, MPS = 4 KiB, round robin, IOSQES = 6 (64 B), IOCQES = 4 (16 B).
        self.controller.set_configuration(1 | 6 << 16 | 4 << 20);
        self.wait_ready(true)
    }

    /// Runs one admin command to completion (polled) and returns its completion.
    pub fn admin(&mut self, mut command: Command) -> Result<Completion, NvmeError> {
        let opcode = command[0] as u8;
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        command[0] = (command[0] & 0xffff) | u32::from(cid) << 16;
        self.admin.push(&command);
        self.controller
            .ring_submission(0, u32::from(self.admin.tail()));
        let hz = cpu::counter_frequency().max(1);
        let start = cpu::counter();
        loop {
            if let Some(done) = self.admin.pop() {
                self.controller
                    .ring_completion(0, u32::from(self.admin.cq_head()));
                if done.cid != cid {
                    continue;
                }
                if done.status & 0x7ff != 0 {
                    return Err(NvmeError::Command {
                        opcode,
                        status: done.status,
                    });
                }
                return Ok(done);
            }
            if cpu::counter().wrapping_sub(start) * 1000 / hz > self.timeout_ms {
                return Err(NvmeError::Timeout { opcode });
            }
            cpu::spin_hint();
        }
    }

    fn identify(&mut self, memory: &mut DeviceMemory) -> Result<(), NvmeError> {
        let buffer = memory.allocate(PAGE, PAGE)?.into_shared();
        let address = buffer.region().base;
        let mut command = [0u32; 16];
        command[0] = 0x06;
        command[6] = address as u32;
        command[7] = (address >> 32) as u32;
        command[10] = 1; // CNS 1: controller
        self.admin(command)?;
        let mut data = [0u8; 4096];
        buffer
            .read(0, &mut data)
            .map_err(|_| NvmeError::OutOfDeviceMemory)?;
        let text = |range: core::ops::Range<usize>| {
            String::from(core::str::from_utf8(&data[range]).unwrap_or("").trim_end())
        };
        self.info.subsystem_vendor = u16::from_le_bytes([data[2], data[3]]);
        self.info.serial = text(4..24);
        self.info.model = text(24..64);
        self.info.firmware = text(64..72);
        self.info.mdts = data[77];
        self.info.oncs = u16::from_le_bytes([data[520], data[521]]);
        self.info.volatile_write_cache = data[525] & 1 != 0;

        command[1] = 1; // NSID 1
        command[10] = 0; // CNS 0: namespace
        self.admin(command)?;
        buffer
            .read(0, &mut data)
            .map_err(|_| NvmeError::OutOfDeviceMemory)?;
        self.info.blocks = u64::from_le_bytes(data[0..8].try_into().unwrap_or([0; 8]));
        let format = usize::from(data[26] & 0xf);
        let lbaf = 128 + 4 * format;
        self.info.lba_shift = data[lbaf + 2];
        if u16::from_le_bytes([data[lbaf], data[lbaf + 1]]) != 0 {
            return Err(NvmeError::Unsupported("namespace 1 uses metadata"));
        }
        if !(9..=12).contains(&self.info.lba_shift) {
            return Err(NvmeError::Unsupported("namespace 1 block size"));
        }
        Ok(())
    }

    /// Set Features, Number of Queues: asks for `wanted` I/O queue pairs, returns the granted.
    fn set_queue_count(&mut self, wanted: u16) -> Result<u16, NvmeError> {
        let wanted = u32::from(wanted.max(1) - 1);
        let mut command = [0u32; 16];
        command[0] = 0x09;
        command[10] = 0x07;
        command[11] = wanted << 16 | wanted;
        let done = self.admin(command)?;
        let granted = (done.result & 0xffff).min(done.result >> 16) + 1;
        Ok(granted as u16)
    }

    /// Creates hardware I/O queue pair `id` with `entries` entries, interrupting through MSI-X
    /// `vector`, whose message is (`msi_address`, `msi_data`).
    pub fn create_queue_pair(
        &mut self,
        memory: &mut DeviceMemory,
        id: u16,
        entries: u16,
        vector: u16,
        msi_address: u64,
        msi_data: u32,
    ) -> Result<QueuePair, NvmeError> {
        if vector >= self.msix_vectors {
            return Err(NvmeError::Unsupported("not enough MSI-X vectors"));
        }
        set_msix_entry(
            self.controller.bar(),
            self.msix_table,
            vector,
            msi_address,
            msi_data,
        );
        let pair = QueuePair::new(id, entries, memory)?;
        let size = u32::from(entries - 1) << 16 | u32::from(id);
        let mut command = [0u32; 16];
        command[0] = 0x05; // Create I/O Completion Queue
        command[6] = pair.cq_address() as u32;
        command[7] = (pair.cq_address() >> 32) as u32;
        command[10] = size;
        command[11] = u32::from(vector) << 16 | 0b11; // IEN, PC
        self.admin(command)?;
        command[0] = 0x01; // Create I/O Submission Queue
        command[6] = pair.sq_address() as u32;
        command[7] = (pair.sq_address() >> 32) as u32;
        command[11] = u32::from(id) << 16 | 0b1; // CQID, PC
        self.admin(command)?;
        Ok(pair)
    }
}
