//! The node's physical NVMe controller: the driver in `microvisor_logic::nvme::host` over the
//! architecture layer's register grants, claimed RAM and counter. Also the hypervisor's device
//! memory, from which the queues, the ITS and LPI tables and the DMA pages come.

use microvisor_arch::cpu;
use microvisor_arch::memory::{PhysRegion, RegionPool, SharedMemory};
use microvisor_arch::pci::{Mmio, PciHost, barrier};
use microvisor_logic::inventory::{PcieHost, Region};
use microvisor_logic::nvme::host::{
    self, Clock, CpuWritten, DeviceWritten, DmaAllocator, HostBridge, QueueNeeds, Registers,
};
use microvisor_logic::pages::PageAllocator;
use microvisor_logic::pci::BarWindows;
use microvisor_logic::pci::ConfigSpace;

pub use microvisor_logic::nvme::host::NvmeError;

/// The physical controller, once up.
pub type Physical = host::PhysicalController<Bar, DeviceMemory, Counter>;
/// One of its queue pairs.
pub type QueuePair = host::QueuePair<CpuPages, DevicePages>;

const PAGE: u64 = 4096;

/// Finds the controller behind `pci`, resets and enables it, and identifies it (see
/// [`host::PhysicalController::bring_up`]).
pub fn bring_up(
    pci: &mut PciHost,
    host: &PcieHost,
    windows: &mut BarWindows,
    memory: &mut DeviceMemory,
    needs: QueueNeeds,
) -> Result<Physical, NvmeError> {
    Physical::bring_up(&mut Bridge(pci), host, windows, memory, Counter, needs)
}

/// [`bring_up`] of the NVMe function at `bdf`.
pub fn bring_up_at(
    pci: &mut PciHost,
    bdf: microvisor_logic::pci::Bdf,
    host: &PcieHost,
    windows: &mut BarWindows,
    memory: &mut DeviceMemory,
    needs: QueueNeeds,
) -> Result<Physical, NvmeError> {
    Physical::bring_up_at(&mut Bridge(pci), bdf, host, windows, memory, Counter, needs)
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

impl DmaAllocator for DeviceMemory {
    type CpuWritten = CpuPages;
    type DeviceWritten = DevicePages;

    fn cpu_written(&mut self, bytes: u64) -> Option<CpuPages> {
        self.allocate(bytes, PAGE).ok().map(CpuPages)
    }

    fn device_written(&mut self, bytes: u64) -> Option<DevicePages> {
        self.allocate(bytes, PAGE)
            .ok()
            .map(|piece| DevicePages(piece.into_shared()))
    }
}

/// Device memory the CPU writes and the controller reads (a submission queue).
pub struct CpuPages(PhysRegion);

impl CpuWritten for CpuPages {
    fn address(&self) -> u64 {
        self.0.region().base
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        // The queue pair writes whole entries inside the queue it allocated.
        let _ = self.0.write(offset, bytes);
    }

    fn publish(&self) {
        barrier::before_doorbell();
    }
}

/// Device memory the controller writes (a completion queue, an Identify buffer).
pub struct DevicePages(SharedMemory);

impl DeviceWritten for DevicePages {
    fn address(&self) -> u64 {
        self.0.region().base
    }

    fn read_u32(&self, offset: u64) -> Option<u32> {
        self.0.read_u32(offset).ok()
    }

    fn read(&self, offset: u64, buffer: &mut [u8]) -> Option<()> {
        self.0.read(offset, buffer).ok()
    }

    fn acquire(&self) {
        barrier::after_device_write();
    }

    fn zero(&self, bytes: u64) {
        // Only ever asked inside the queue it allocated.
        let _ = self.0.zero(0, bytes);
    }
}

/// The controller's BAR0, granted by the host bridge.
pub struct Bar(Mmio);

impl Registers for Bar {
    fn read32(&self, offset: u64) -> u32 {
        self.0.read32(offset)
    }

    fn read64(&self, offset: u64) -> u64 {
        self.0.read64(offset)
    }

    fn write32(&self, offset: u64, value: u32) {
        self.0.write32(offset, value)
    }

    fn write64(&self, offset: u64, value: u64) {
        self.0.write64(offset, value)
    }
}

/// The generic timer's counter, in milliseconds.
pub struct Counter;

impl Clock for Counter {
    fn now_ms(&self) -> u64 {
        let hz = u128::from(cpu::counter_frequency().max(1));
        (u128::from(cpu::counter()) * 1000 / hz) as u64
    }

    fn pause(&self) {
        cpu::spin_hint();
    }
}

/// The host bridge as the driver sees it.
struct Bridge<'a>(&'a mut PciHost);

impl HostBridge for Bridge<'_> {
    type Registers = Bar;

    fn config(&mut self) -> &mut dyn ConfigSpace {
        self.0.config()
    }

    fn map(&mut self, bar: Region) -> Option<Bar> {
        self.0.grant(bar).ok().map(Bar)
    }
}
