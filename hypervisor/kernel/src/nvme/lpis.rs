//! LPIs and the ITS (GICv3 spec chapters 5-6): the shared LPI configuration table, one pending
//! table per core, and the ITS commands that turn a device's MSI writes into an LPI on a
//! chosen core. Owned by the node; set up at boot before the cores start.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use microvisor_arch::gic::{self, LPI_BASE};
use microvisor_arch::its::{Its, ItsError, ItsFrames};
use microvisor_arch::memory::SharedMemory;
use microvisor_logic::inventory::MAX_CPUS;
use microvisor_logic::vits::HostCommand;

use crate::vgic::DirectInjection;
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

/// vINTID bits of the virtual LPIs a vPE can have (the same range as the physical LPIs).
const VLPI_ID_BITS: u8 = 14;
/// The EventID the direct-injection check at boot maps (on a DeviceID no function has).
const CHECK_EVENT: u32 = 0;
/// The vINTID it maps that event to.
const CHECK_VINTID: u32 = LPI_BASE + 7;

/// Pages of device memory [`Lpis::new`] takes on a node with `cores` cores (in use or not),
/// and with a GICv4 ITS (`virtual_lpis`) what direct injection takes.
pub const fn pages(cores: u64, devices: u64, device_table: u64, virtual_lpis: bool) -> u64 {
    // Configuration table, ITS command queue, collection table, the device table
    // (`device_table` bytes), one ITT per device (the NVMe controller, assigned functions), and
    // one pending table per core (64 KiB aligned; the gaps hold other pages).
    let physical = 2 + 2 + device_table.div_ceil(4096) + devices + cores * 16;
    // The vPE table, the boot check's ITT, and one virtual pending table per core (64 KiB
    // aligned).
    let gicv4 = if virtual_lpis { 1 + 1 + cores * 16 } else { 0 };
    physical + gicv4
}

/// The node's LPI tables and ITS.
pub struct Lpis {
    properties: SharedMemory,
    /// Per physical core, its pending table (cores that run nothing have none).
    pending: Vec<Option<SharedMemory>>,
    /// The ITS, with the interrupt translation tables it owns (one per mapped DeviceID).
    its: Mutex<(Its, Vec<(u32, SharedMemory)>)>,
    /// How the ITS names each core's redistributor, filled in by each core as it comes up.
    targets: [AtomicU64; MAX_CPUS],
    /// The next LPI [`Lpis::allocate`] hands out.
    next: AtomicU32,
    /// On a GICv4 ITS: per physical core, the virtual pending table of its vPE (whose ID is
    /// the core's index: one vCPU per core, for good), and the ITT of
    /// [`Lpis::check_direct_injection`].
    virtual_pending: Vec<Option<SharedMemory>>,
    check_itt: Option<SharedMemory>,
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
        let mut virtual_pending = Vec::new();
        let (vpes, check_itt) = if frames.virtual_lpis() {
            let vpes = memory.allocate(4096, 4096)?.into_shared();
            let itt = memory.allocate(4096, 256)?;
            virtual_pending.resize_with(count, || None);
            for &core in cores {
                virtual_pending[core] = Some(
                    memory
                        .allocate((1 << VLPI_ID_BITS) / 8, 0x1_0000)?
                        .into_shared(),
                );
            }
            (Some(vpes), Some(itt.into_shared()))
        } else {
            (None, None)
        };
        let queue = memory.allocate(4096, 4096)?;
        let its = Its::new(frames, devices, collections, vpes, queue).map_err(|e| {
            NvmeError::Unsupported(match e {
                ItsError::TableAttributes => {
                    "an ITS without 4 KiB table pages or shareable (coherent) tables"
                }
                ItsError::CommandTimeout => "an ITS that did not become quiescent",
                _ => "ITS",
            })
        })?;
        Ok(Lpis {
            properties: properties.into_shared(),
            pending,
            its: Mutex::new((its, Vec::new())),
            targets: [const { AtomicU64::new(NO_TARGET) }; MAX_CPUS],
            next: AtomicU32::new(LPI_BASE + FIRST_ALLOCATED),
            virtual_pending,
            check_itt,
        })
    }

    /// Turns LPIs on for the calling core `core` and records how the ITS names it. Called by
    /// every core during its bring-up, after its GIC redistributor is awake.
    pub fn enable_on_this_core(&self, core: usize) -> Result<(), NvmeError> {
        let Some(Some(pending)) = self.pending.get(core) else {
            return Ok(());
        };
        gic::enable_lpis(self.properties.region().base, LPI_ID_BITS, pending).map_err(|e| {
            NvmeError::Unsupported(match e {
                gic::GicError::LpisAlreadyEnabled => {
                    "LPIs already enabled on the redistributor before the hypervisor"
                }
                gic::GicError::NotCoherent => "a redistributor that is not cache coherent",
                _ => "redistributor without LPIs",
            })
        })?;
        let by_address = self.its.lock().0.targets_by_address();
        let target = gic::redistributor_target(by_address)
            .ok_or(NvmeError::Unsupported("no redistributor for this core"))?;
        self.targets[core % MAX_CPUS].store(target, Ordering::Release);
        Ok(())
    }

    /// Whether the ITS can map events to virtual LPIs (a GICv4 ITS): assigned functions'
    /// interrupts can then reach their slices with no exit.
    pub fn virtual_lpis(&self) -> bool {
        self.check_itt.is_some()
    }

    fn target(&self, core: usize) -> Result<u64, &'static str> {
        let target = self.targets[core % MAX_CPUS].load(Ordering::Acquire);
        if target == NO_TARGET {
            return Err("no redistributor target for this core");
        }
        Ok(target)
    }

    /// On a GICv4 ITS, checks once that the ITS injects virtual LPIs the way the hypervisor
    /// drives it: a DeviceID no function has (the device table's last) gets one event mapped
    /// (VMAPTI) to a vINTID of `core`'s vPE, which is mapped (VMAPP) to `core`'s
    /// redistributor and not resident; an INT and a VSYNC later its bit must be set in the
    /// vPE's virtual pending table. Everything is unmapped again. `Ok(false)`: the ITS is not
    /// a GICv4 one.
    pub fn check_direct_injection(&self, core: usize) -> Result<bool, &'static str> {
        let (Some(itt), Some(vpt)) = (&self.check_itt, self.virtual_pending_table(core)) else {
            return Ok(false);
        };
        let target = self.target(core)?;
        let vpe = core as u16;
        let (its, _) = &mut *self.its.lock();
        let device = u32::try_from(its.device_ids() - 1).map_err(|_| "device table")?;
        vpt.zero(0, vpt.region().size).map_err(|_| "VPT")?;
        let failed = |_| "an ITS command failed";
        its.map_vpe(vpe, target, Some((vpt, VLPI_ID_BITS)))
            .map_err(failed)?;
        its.map_device(device, itt, 1).map_err(failed)?;
        its.map_virtual_event(device, CHECK_EVENT, vpe, CHECK_VINTID)
            .map_err(failed)?;
        its.interrupt(device, CHECK_EVENT).map_err(failed)?;
        its.sync_vpe(vpe).map_err(failed)?;
        let mut byte = [0u8];
        vpt.read(u64::from(CHECK_VINTID / 8), &mut byte)
            .map_err(|_| "VPT")?;
        let pending = byte[0] & (1 << (CHECK_VINTID % 8)) != 0;
        its.discard(device, CHECK_EVENT).map_err(failed)?;
        its.unmap_device(device).map_err(failed)?;
        its.map_vpe(vpe, target, None).map_err(failed)?;
        its.sync(target).map_err(failed)?;
        vpt.zero(0, vpt.region().size).map_err(|_| "VPT")?;
        if pending {
            Ok(true)
        } else {
            Err("the virtual LPI did not reach its vPE's pending table")
        }
    }

    /// Maps the vPE of `core` (vPE ID = core index) to that core's redistributor with the
    /// core's virtual pending table, for good: its vCPU never moves. It becomes resident when
    /// its guest enables LPIs (`microvisor_arch::gic::make_vpe_resident`).
    pub fn map_vpe(&self, core: usize) -> Result<(), &'static str> {
        let vpt = self
            .virtual_pending_table(core)
            .ok_or("no virtual pending table for this core")?;
        let target = self.target(core)?;
        let (its, _) = &mut *self.its.lock();
        its.map_vpe(core as u16, target, Some((vpt, VLPI_ID_BITS)))
            .and_then(|()| its.sync(target))
            .map_err(|_| "VMAPP failed")
    }
}

impl DirectInjection for Lpis {
    /// Stops at the first command that fails (or names a vCPU the slice does not have) and
    /// says why.
    fn issue(
        &self,
        commands: &[HostCommand],
        core_of: &dyn Fn(usize) -> Option<usize>,
    ) -> Result<(), &'static str> {
        if commands.is_empty() {
            return Ok(());
        }
        let vpe = |vcpu: usize| core_of(vcpu).map(|c| c as u16).ok_or("no such vCPU");
        let (its, _) = &mut *self.its.lock();
        for &command in commands {
            let done = match command {
                HostCommand::Vmapti {
                    device,
                    event,
                    vintid,
                    vcpu,
                } => its.map_virtual_event(device, event, vpe(vcpu)?, vintid),
                HostCommand::Vmovi {
                    device,
                    event,
                    vcpu,
                } => its.move_virtual_event(device, event, vpe(vcpu)?),
                HostCommand::Discard { device, event } => its.discard(device, event),
                HostCommand::Inv { device, event } => its.invalidate(device, event),
                HostCommand::Int { device, event } => its.interrupt(device, event),
                HostCommand::Clear { device, event } => its.clear(device, event),
                HostCommand::Restore {
                    device,
                    event,
                    lpi,
                    vcpu,
                } => {
                    let core = core_of(vcpu).ok_or("no such vCPU")?;
                    let target = self.target(core)?;
                    let collection = core as u16;
                    its.map_collection(collection, target)
                        .and_then(|()| its.map_event(device, event, lpi, collection))
                }
                HostCommand::Vinvall { vcpu } => its.invalidate_vpe(vpe(vcpu)?),
                HostCommand::Vsync { vcpu } => its.sync_vpe(vpe(vcpu)?),
            };
            done.map_err(|e| match e {
                ItsError::CommandTimeout => "the ITS did not take a command",
                ItsError::CommandStalled => "the ITS stalled on a command",
                ItsError::Failed => "the ITS failed earlier and takes no more commands",
                _ => "an ITS command could not be queued",
            })?;
        }
        Ok(())
    }

    fn virtual_pending_table(&self, core: usize) -> Option<&SharedMemory> {
        self.virtual_pending.get(core)?.as_ref()
    }
}

impl Lpis {
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

    /// Maps PCI device `device` (its ITS DeviceID) in the ITS for `events` EventIDs.
    pub fn map_device(
        &self,
        memory: &mut DeviceMemory,
        device: u32,
        events: u16,
    ) -> Result<(), NvmeError> {
        let (its, itts) = &mut *self.its.lock();
        // Two functions with one DeviceID (a firmware `msi-map-mask` can fold them) would
        // share translations: one's MSIs could raise the other's interrupts, perhaps another
        // slice's (found in review).
        if itts.iter().any(|(mapped, _)| *mapped == device) {
            return Err(NvmeError::Unsupported(
                "ITS DeviceID already another function's",
            ));
        }
        let bits = (u32::from(events.max(2)) - 1).ilog2() as u8 + 1;
        let itt = memory
            .allocate(its.itt_entry_size() << bits, 256)?
            .into_shared();
        its.map_device(device, &itt, bits)
            .map_err(|_| NvmeError::Unsupported("ITS MAPD"))?;
        itts.push((device, itt));
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
