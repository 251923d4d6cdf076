//! NVMe queue slicing (docs/architecture.md, "NVMe queue slicing"): the hypervisor owns the node's NVMe controller; each slice
//! with `[slice.nvme]` gets its own window of namespace 1 and dedicated hardware I/O queue
//! pairs, whose completions arrive as LPIs through the ITS on the slice's cores.

pub mod erase;
pub mod lpis;
pub mod physical;
pub mod slice_disk;

use alloc::vec::Vec;

use microvisor_arch::gic::LPI_BASE;
use microvisor_arch::memory::{DmaPages, SharedMemory};
use microvisor_arch::pci::barrier;
use microvisor_logic::nvme::host::QueueNeeds;

use lpis::Lpis;
use physical::{DeviceMemory, NvmeError};

/// Entries per hardware I/O queue (each slot has one DMA page for a PRP list copy).
pub const QUEUE_ENTRIES: u16 = 64;

/// The slice's NVMe function's ITS DeviceID: its requester ID on the slice's bus, 00:00.0
/// (`devices::pci::PciHost::device_id(0)`).
pub const FUNCTION_DEVICE_ID: u32 = 0;

/// Pages of device memory the NVMe service needs for `queues` hardware queue pairs of `disks`
/// slices on a node with `cores` cores (and a GICv4 ITS: `virtual_lpis`).
pub fn device_memory_pages(
    queues: u64,
    disks: u64,
    cores: u64,
    device_table: u64,
    virtual_lpis: bool,
) -> u64 {
    // Admin queues and an Identify buffer.
    let admin = 3;
    // Per queue pair: SQ, CQ and one DMA page per slot.
    let per_queue = 2 + u64::from(QUEUE_ENTRIES);
    // Per slice: the erase's read-back buffer.
    let per_disk = erase::READ_BUFFER_BYTES / 4096;
    lpis::pages(cores, 1, device_table, virtual_lpis)
        + admin
        + queues * per_queue
        + disks * per_disk
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
    pub shares: Shares,
}

/// One hardware I/O queue pair of a slice, with a DMA page per slot and the LPI it signals.
pub struct HardwareQueue {
    pub pair: physical::QueuePair,
    /// `QUEUE_ENTRIES - 1` pages: slot `n`'s PRP list or DSM range copy (while the slice is
    /// stopped and being erased: the erase's PRP lists and zero page, see [`erase`]).
    pub slots: DmaPages,
    pub lpi: u32,
    /// The slice's first queue only: device-written memory the erase reads blocks back into
    /// ([`erase::READ_BUFFER_BYTES`]).
    pub read_back: Option<SharedMemory>,
    /// While the pair's CQ is lent to the slice (a direct queue, decision 5): the guest CQ's
    /// IPA, whose page is read-only to the slice meanwhile.
    pub lent: Option<u64>,
    /// The guest's vITS event its completions follow while direct (decision 5, step 3).
    pub linked: Option<u32>,
}

/// Brings the controller up for `plan`: finds and resets it, identifies namespace 1, places
/// every slice's window and queues (errors name the slice and field), creates the hardware
/// queue pairs and points their MSI-X vectors at the ITS.
pub fn bring_up<I>(
    pci: &mut microvisor_arch::pci::PciHost,
    host: &microvisor_logic::inventory::PcieHost,
    windows: &mut microvisor_logic::pci::BarWindows,
    mut memory: DeviceMemory,
    plan: &microvisor_plan::PlanOf<I>,
    lpis: &Lpis,
    confinement_test: Option<SharedMemory>,
) -> Result<(NodeDisk, Vec<Vec<HardwareQueue>>), DiskError> {
    let wanted: u32 = plan
        .slices
        .iter()
        .filter_map(|s| s.nvme.as_ref())
        .map(|n| n.queues)
        .sum();
    let wanted = wanted.min(u32::from(u16::MAX)) as u16;
    let needs = QueueNeeds {
        pairs: wanted,
        entries: QUEUE_ENTRIES,
    };
    let mut controller = physical::bring_up(pci, host, windows, &mut memory, needs)?;
    if let Some(page) = confinement_test {
        dma_outside(&mut controller, &page);
    }
    match set_up_queues(&mut controller, memory, plan, lpis) {
        Ok((memory, shares, queues)) => {
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
        Err(error) => {
            controller.shut_down(pci.config());
            Err(error)
        }
    }
}

/// The confinement test image (`microvisor_plan::image::NVME_CONFINEMENT_TEST`): the
/// controller is asked to write an Identify into `page`, RAM outside its SMMU confinement.
/// The SMMU must refuse the write (its fault record is reported as for any stream) and the
/// page keep what was written before.
fn dma_outside(controller: &mut physical::Physical, page: &SharedMemory) {
    const PATTERN: [u8; 64] = [0x5a; 64];
    let base = page.region().base;
    for offset in (0..4096).step_by(PATTERN.len()) {
        let _ = page.write(offset, &PATTERN);
    }
    let outcome = controller.identify_into(base);
    barrier::after_device_write();
    let kept = (0..4096).step_by(PATTERN.len()).all(|offset| {
        let mut chunk = [0u8; PATTERN.len()];
        page.read(offset, &mut chunk).is_ok() && chunk == PATTERN
    });
    let outcome = match outcome {
        Ok(()) => alloc::string::String::from("completed"),
        Err(e) => alloc::format!("{e}"),
    };
    crate::hv!(
        "test image: nvme identify into {base:#x} (outside its confinement): {outcome}, page {}",
        if kept { "unchanged" } else { "CHANGED" }
    );
}

type Shares = Vec<Option<microvisor_plan::DiskShare>>;

/// Places every slice's share on the controller that came up, maps its MSIs in the ITS and
/// creates the hardware queue pairs.
fn set_up_queues<I>(
    controller: &mut physical::Physical,
    mut memory: DeviceMemory,
    plan: &microvisor_plan::PlanOf<I>,
    lpis: &Lpis,
) -> Result<(DeviceMemory, Shares, Vec<Vec<HardwareQueue>>), DiskError> {
    let info = &controller.info;
    let shares =
        microvisor_plan::place::place_disk(plan, info.blocks, info.lba_shift, info.io_queues)
            .map_err(DiskError::Plan)?;
    let address = lpis.msi_address();
    let device = controller.its_device;
    let highest = shares
        .iter()
        .flatten()
        .map(|s| s.first_queue + s.queues)
        .max()
        .unwrap_or(1);
    lpis.map_device(&mut memory, device, highest)?;
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
            let slots = DmaPages::new(slots).map_err(|_| NvmeError::OutOfDeviceMemory)?;
            let read_back = if mine.is_empty() {
                Some(
                    memory
                        .allocate(erase::READ_BUFFER_BYTES, 4096)?
                        .into_shared(),
                )
            } else {
                None
            };
            mine.push(HardwareQueue {
                pair,
                slots,
                lpi: LPI_BASE + u32::from(id),
                read_back,
                lent: None,
                linked: None,
            });
        }
        queues.push(mine);
    }
    Ok((memory, shares, queues))
}
