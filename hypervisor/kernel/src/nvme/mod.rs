//! NVMe queue slicing (DESIGN §5): the hypervisor owns the node's NVMe controller; each slice
//! with `[slice.nvme]` gets its own window of namespace 1 and dedicated hardware I/O queue
//! pairs, whose completions arrive as LPIs through the ITS on the slice's cores.

pub mod physical;
pub mod slice_disk;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use microvisor_arch::gic::{self, LPI_BASE};
use microvisor_arch::its::{Its, ItsFrames};
use microvisor_arch::memory::PhysRegion;
use microvisor_logic::inventory::MAX_CPUS;
use spin::{Mutex, Once};

use physical::{DeviceMemory, NvmeError};

/// Entries per hardware I/O queue (each slot has one DMA page for a PRP list copy).
pub const QUEUE_ENTRIES: u16 = 64;
/// LPI INTID bits: INTIDs below 16384, i.e. LPIs 8192..16383.
const LPI_ID_BITS: u8 = 14;
/// Priority and enable bit of every LPI the hypervisor maps (LPI configuration table byte).
const LPI_CONFIG: u8 = 0xa0 | 1;

/// Pages of device memory the NVMe service needs for `queues` hardware queue pairs on a node
/// with `cores` cores.
pub fn device_memory_pages(queues: u64, cores: u64) -> u64 {
    // ITS: command queue, device and collection tables, one ITT; LPI configuration table.
    let its = 4 + 2;
    // One pending table per core (64 KiB aligned; the gaps hold other pages).
    let pending = cores * 16;
    // Admin queues and an Identify buffer.
    let admin = 3;
    // Per queue pair: SQ, CQ and one DMA page per slot.
    let per_queue = 2 + u64::from(QUEUE_ENTRIES);
    its + pending + admin + queues * per_queue
}

/// LPI tables shared by all cores (configuration) and per core (pending).
struct LpiTables {
    properties: PhysRegion,
    pending: Vec<Option<PhysRegion>>,
}

static LPI_TABLES: Once<LpiTables> = Once::new();
/// How the ITS names each core's redistributor (filled in by each core as it comes up).
static CORE_TARGETS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
static ITS: Once<Mutex<Its>> = Once::new();

/// Prepares LPIs for `cores` (physical indexes): the configuration table and one pending table
/// per core, and brings the ITS up. Call once at boot, before those cores start.
pub fn prepare_lpis(
    memory: &mut DeviceMemory,
    frames: ItsFrames,
    cores: &[usize],
) -> Result<(), NvmeError> {
    let properties = memory.allocate((1 << LPI_ID_BITS) - u64::from(LPI_BASE), 4096)?;
    let count = cores.iter().max().map_or(0, |&c| c + 1);
    let mut pending = Vec::with_capacity(count);
    pending.resize_with(count, || None);
    for &core in cores {
        pending[core] = Some(memory.allocate((1 << LPI_ID_BITS) / 8, 0x1_0000)?);
    }
    let devices = memory.allocate(4096, 4096)?;
    let collections = memory.allocate(4096, 4096)?;
    let queue = memory.allocate(4096, 4096)?;
    let its =
        Its::new(frames, devices, collections, queue).map_err(|_| NvmeError::Unsupported("ITS"))?;
    ITS.call_once(|| Mutex::new(its));
    LPI_TABLES.call_once(|| LpiTables {
        properties,
        pending,
    });
    Ok(())
}

/// Turns LPIs on for the calling core and records how the ITS names it. Called by every core
/// during its bring-up, after its GIC redistributor is awake.
pub fn enable_lpis_on_this_core(core: usize) {
    let (Some(tables), Some(its)) = (LPI_TABLES.get(), ITS.get()) else {
        return;
    };
    let Some(Some(pending)) = tables.pending.get(core) else {
        return;
    };
    if gic::enable_lpis(tables.properties.region().base, LPI_ID_BITS, pending).is_err() {
        return;
    }
    let by_address = its.lock().targets_by_address();
    if let Some(target) = gic::redistributor_target(by_address) {
        CORE_TARGETS[core % MAX_CPUS].store(target, Ordering::Release);
    }
}

/// Routes EventID `event` of PCI device `device` to LPI `lpi` on physical core `core`.
pub fn route_event(device: u32, event: u32, lpi: u32, core: usize) -> Result<(), NvmeError> {
    let (Some(tables), Some(its)) = (LPI_TABLES.get(), ITS.get()) else {
        return Err(NvmeError::Unsupported("no ITS"));
    };
    let target = CORE_TARGETS[core % MAX_CPUS].load(Ordering::Acquire);
    if target == u64::MAX {
        return Err(NvmeError::Unsupported("core without LPIs"));
    }
    let index = u64::from(
        lpi.checked_sub(LPI_BASE)
            .ok_or(NvmeError::Unsupported("LPI"))?,
    );
    tables
        .properties
        .write(index, &[LPI_CONFIG])
        .map_err(|_| NvmeError::Unsupported("LPI"))?;
    let mut its = its.lock();
    let error = |_| NvmeError::Unsupported("ITS command");
    let collection = core as u16;
    its.map_collection(collection, target).map_err(error)?;
    its.map_event(device, event, lpi, collection)
        .map_err(error)?;
    its.invalidate_all(collection).map_err(error)?;
    its.sync(target).map_err(error)
}

/// Maps PCI device `device` (its requester ID) in the ITS for `events` EventIDs.
pub fn map_device(memory: &mut DeviceMemory, device: u32, events: u16) -> Result<(), NvmeError> {
    let its = ITS.get().ok_or(NvmeError::Unsupported("no ITS"))?;
    let mut its = its.lock();
    let bits = (u32::from(events.max(2)) - 1).ilog2() as u8 + 1;
    let itt = memory.allocate(its.itt_entry_size() << bits, 256)?;
    its.map_device(device, &itt, bits)
        .map_err(|_| NvmeError::Unsupported("ITS MAPD"))
}

/// A hardware queue's completion LPI arrived: the slice that owns the queue takes its
/// completions (on whichever core the LPI came, parked or not).
pub fn interrupt(lpi: u32) {
    let Some(queue) = lpi
        .checked_sub(LPI_BASE)
        .and_then(|q| u16::try_from(q).ok())
    else {
        return;
    };
    if let Some(node) = crate::node::get() {
        for slice in &node.slices {
            if slice.nvme_completions(queue) {
                return;
            }
        }
    }
}

/// Physical address devices write MSIs to.
pub fn msi_address() -> Option<u64> {
    ITS.get().map(|its| its.lock().translater())
}

/// Why slices cannot get their NVMe shares.
#[derive(Debug)]
pub enum DiskError {
    /// The plan does not fit the controller (too big, too many queues): nothing starts.
    Plan(microvisor_plan::PlanError),
    /// The controller (or the ITS) is not usable: slices boot without NVMe.
    Controller(NvmeError),
}

impl From<NvmeError> for DiskError {
    fn from(error: NvmeError) -> Self {
        DiskError::Controller(error)
    }
}

/// The node's NVMe controller once the slices' shares are set up.
pub struct NodeDisk {
    pub physical: &'static physical::Physical,
    pub memory: DeviceMemory,
    /// Per slice (plan order): its window and queue IDs.
    pub shares: Vec<Option<microvisor_plan::DiskShare>>,
}

/// One hardware I/O queue pair of a slice, with a DMA page per slot and the LPI it signals.
pub struct HardwareQueue {
    pub pair: physical::QueuePair,
    /// `QUEUE_ENTRIES - 1` pages: slot `n`'s PRP list or DSM range copy.
    pub slots: microvisor_arch::memory::DmaPages,
    pub lpi: u32,
}

/// Brings the controller up for `plan`: finds and resets it, identifies namespace 1, places
/// every slice's window and queues (errors name the slice and field), creates the hardware
/// queue pairs and points their MSI-X vectors at the ITS. `memory` must already hold the LPI
/// and ITS tables (`prepare_lpis`).
pub fn bring_up<I>(
    pci: &mut microvisor_arch::pci::PciHost,
    host: &microvisor_logic::inventory::PcieHost,
    mut memory: DeviceMemory,
    plan: &microvisor_plan::PlanOf<I>,
) -> Result<(NodeDisk, Vec<Vec<HardwareQueue>>), DiskError> {
    let wanted: u32 = plan
        .slices
        .iter()
        .filter_map(|s| s.nvme.as_ref())
        .map(|n| n.queues)
        .sum();
    let wanted = wanted.min(u32::from(u16::MAX)) as u16;
    let mut controller = physical::Physical::bring_up(pci, host, &mut memory, wanted)?;
    if controller.info.max_queue_entries < u32::from(QUEUE_ENTRIES) {
        return Err(DiskError::Controller(NvmeError::Unsupported(
            "queues shorter than 64 entries (CAP.MQES)",
        )));
    }
    let info = &controller.info;
    let shares =
        microvisor_plan::place::place_disk(plan, info.blocks, info.lba_shift, info.io_queues)
            .map_err(DiskError::Plan)?;
    let address = msi_address().ok_or(NvmeError::Unsupported("no ITS for MSIs"))?;
    let device = u32::from(controller.bdf.requester_id());
    let highest = shares
        .iter()
        .flatten()
        .map(|s| s.first_queue + s.queues)
        .max()
        .unwrap_or(1);
    map_device(&mut memory, device, highest)?;
    let mut queues = Vec::with_capacity(shares.len());
    for share in &shares {
        let mut mine = Vec::new();
        for id in share
            .iter()
            .flat_map(|s| s.first_queue..s.first_queue + s.queues)
        {
            let pair = controller.create_queue_pair(
                &mut memory,
                id,
                QUEUE_ENTRIES,
                id,
                address,
                u32::from(id),
            )?;
            let slots = memory.allocate(u64::from(QUEUE_ENTRIES - 1) * 4096, 4096)?;
            let slots = microvisor_arch::memory::DmaPages::new(slots)
                .ok_or(NvmeError::OutOfDeviceMemory)?;
            mine.push(HardwareQueue {
                pair,
                slots,
                lpi: LPI_BASE + u32::from(id),
            });
        }
        queues.push(mine);
    }
    let physical: &'static physical::Physical =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(controller));
    Ok((
        NodeDisk {
            physical,
            memory,
            shares,
        },
        queues,
    ))
}
