//! LPIs and the ITS (GICv3 spec chapters 5-6): the shared LPI configuration table, one pending
//! table per core, and the ITS commands that turn a device's MSI writes into an LPI on a
//! chosen core. Owned by the node; set up at boot before the cores start.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use microvisor_arch::gic::{self, LPI_BASE};
use microvisor_arch::its::{Its, ItsFrames};
use microvisor_arch::memory::SharedMemory;
use microvisor_logic::inventory::MAX_CPUS;
use spin::Mutex;

use super::physical::{DeviceMemory, NvmeError};

/// LPI INTID bits: INTIDs below 16384, i.e. LPIs 8192..16383.
const LPI_ID_BITS: u8 = 14;
/// Priority and enable bit of every LPI the hypervisor maps (LPI configuration table byte).
const LPI_CONFIG: u8 = 0xa0 | 1;
/// LPIs below `LPI_BASE + FIRST_ALLOCATED` are the NVMe hardware queues' (LPI_BASE + queue
/// ID); [`Lpis::allocate`] hands out the ones above, for assigned functions' MSI-X vectors.
const FIRST_ALLOCATED: u32 = 4096;
/// "No target yet" in [`Lpis::targets`].
const NO_TARGET: u64 = u64::MAX;

/// Pages of device memory [`Lpis::new`] takes on a node with `cores` cores (in use or not).
pub const fn pages(cores: u64, devices: u64, device_table: u64) -> u64 {
    // Configuration table, ITS command queue, collection table, the device table
    // (`device_table` bytes), one ITT per device (the NVMe controller, assigned functions), and
    // one pending table per core (64 KiB aligned; the gaps hold other pages).
    2 + 2 + device_table.div_ceil(4096) + devices + cores * 16
}

/// The node's LPI tables and ITS.
pub struct Lpis {
    properties: SharedMemory,
    /// Per physical core, its pending table (cores that run nothing have none).
    pending: Vec<Option<SharedMemory>>,
    /// The ITS, with the interrupt translation tables it owns (one per mapped device).
    its: Mutex<(Its, Vec<SharedMemory>)>,
    /// How the ITS names each core's redistributor, filled in by each core as it comes up.
    targets: [AtomicU64; MAX_CPUS],
    /// The next LPI [`Lpis::allocate`] hands out.
    next: AtomicU32,
}

impl Lpis {
    /// Prepares LPIs for `cores` (physical indexes): the configuration table and one pending
    /// table per core, and brings the ITS up.
    /// `device_table` bytes of ITS device table ([`ItsFrames::device_table_bytes`] for every
    /// DeviceID the node's functions may have).
    pub fn new(
        memory: &mut DeviceMemory,
        frames: ItsFrames,
        cores: &[usize],
        device_table: u64,
    ) -> Result<Lpis, NvmeError> {
        let properties = memory.allocate((1 << LPI_ID_BITS) - u64::from(LPI_BASE), 4096)?;
        let count = cores.iter().max().map_or(0, |&c| c + 1);
        let mut pending = Vec::with_capacity(count);
        pending.resize_with(count, || None);
        for &core in cores {
            pending[core] = Some(
                memory
                    .allocate((1 << LPI_ID_BITS) / 8, 0x1_0000)?
                    .into_shared(),
            );
        }
        let devices = memory.allocate(device_table, 4096)?.into_shared();
        let collections = memory.allocate(4096, 4096)?.into_shared();
        let queue = memory.allocate(4096, 4096)?;
        let its = Its::new(frames, devices, collections, queue)
            .map_err(|_| NvmeError::Unsupported("ITS"))?;
        Ok(Lpis {
            properties: properties.into_shared(),
            pending,
            its: Mutex::new((its, Vec::new())),
            targets: [const { AtomicU64::new(NO_TARGET) }; MAX_CPUS],
            next: AtomicU32::new(LPI_BASE + FIRST_ALLOCATED),
        })
    }

    /// Turns LPIs on for the calling core `core` and records how the ITS names it. Called by
    /// every core during its bring-up, after its GIC redistributor is awake.
    pub fn enable_on_this_core(&self, core: usize) -> Result<(), NvmeError> {
        let Some(Some(pending)) = self.pending.get(core) else {
            return Ok(());
        };
        gic::enable_lpis(self.properties.region().base, LPI_ID_BITS, pending)
            .map_err(|_| NvmeError::Unsupported("redistributor without LPIs"))?;
        let by_address = self.its.lock().0.targets_by_address();
        let target = gic::redistributor_target(by_address)
            .ok_or(NvmeError::Unsupported("no redistributor for this core"))?;
        self.targets[core % MAX_CPUS].store(target, Ordering::Release);
        Ok(())
    }

    /// `count` consecutive LPIs nobody uses yet (their first), or None when the INTID space is
    /// exhausted.
    pub fn allocate(&self, count: u16) -> Option<u32> {
        let first = self.next.fetch_add(u32::from(count), Ordering::Relaxed);
        let end = first.checked_add(u32::from(count))?;
        (end <= 1 << LPI_ID_BITS).then_some(first)
    }

    /// Physical address devices write MSIs to.
    pub fn msi_address(&self) -> u64 {
        self.its.lock().0.translater()
    }

    /// Maps PCI device `device` (its requester ID) in the ITS for `events` EventIDs.
    pub fn map_device(
        &self,
        memory: &mut DeviceMemory,
        device: u32,
        events: u16,
    ) -> Result<(), NvmeError> {
        let (its, itts) = &mut *self.its.lock();
        let bits = (u32::from(events.max(2)) - 1).ilog2() as u8 + 1;
        let itt = memory
            .allocate(its.itt_entry_size() << bits, 256)?
            .into_shared();
        its.map_device(device, &itt, bits)
            .map_err(|_| NvmeError::Unsupported("ITS MAPD"))?;
        itts.push(itt);
        Ok(())
    }

    /// Routes EventID `event` of PCI device `device` to LPI `lpi` on physical core `core`.
    pub fn route(&self, device: u32, event: u32, lpi: u32, core: usize) -> Result<(), NvmeError> {
        let target = self.targets[core % MAX_CPUS].load(Ordering::Acquire);
        if target == NO_TARGET {
            return Err(NvmeError::Unsupported("core without LPIs"));
        }
        let index = u64::from(
            lpi.checked_sub(LPI_BASE)
                .ok_or(NvmeError::Unsupported("LPI"))?,
        );
        let (its, _) = &mut *self.its.lock();
        self.properties
            .write(index, &[LPI_CONFIG])
            .map_err(|_| NvmeError::Unsupported("LPI"))?;
        let error = |_| NvmeError::Unsupported("ITS command");
        let collection = core as u16;
        its.map_collection(collection, target).map_err(error)?;
        its.map_event(device, event, lpi, collection)
            .map_err(error)?;
        its.invalidate_all(collection).map_err(error)?;
        its.sync(target).map_err(error)
    }
}
