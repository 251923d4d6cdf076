//! One slice's NVMe share at run time: the virtual PCI function and virtual controller it sees
//! (`microvisor_logic::vpci`, `microvisor_logic::nvme`), the hardware queue pairs reserved for
//! it, and the backend through which the controller reaches guest RAM, DMA pages, hardware
//! queues and the slice's virtual GIC.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use microvisor_arch::memory::{SharedMemory, full_barrier, store_barrier};
use microvisor_arch::{cpu, pci::barrier};
use microvisor_logic::guest_dt::map;
use microvisor_logic::inventory::Region;
use microvisor_logic::nvme::{
    CompletionEntry, ControllerConfig, DEFAULT_MODEL, DmaPage, GuestMemoryFault, GuestRam,
    HardwareQueues, Ipa, MsiMessage, NamespaceIds, NamespaceShare, NvmeBackend, Pa, Placed,
    SubmissionEntry, VirtualNvme,
};
use microvisor_logic::vpci::{self, VirtualFunction};
use microvisor_plan::DiskShare;
use microvisor_plan::layout::GUEST_RAM_BASE;
use spin::Mutex;

use super::erase::{
    EraseError, EraseErrorKind, EraseReport, HardwareEraseQueue, READ_SLOT_BYTES, READ_SLOTS,
    SLOT_PAGES_NEEDED, ticks_to_ms,
};
use super::physical::Physical;
use super::{HardwareQueue, QUEUE_ENTRIES};
use crate::stage2::CpuStage2;
use crate::vgic::{EventLink, SliceGic};
use microvisor_logic::nvme::erase::{self as wipe, DiskFacts, EraseFault, ErasePlan, Window};

/// GICD_SETSPI_NSR as the slice sees it: where its MSIs must be aimed.
const SETSPI: u64 = map::GICD + 0x40;

/// What the slice's NVMe function is doing, under one lock.
pub struct DiskState {
    pub function: VirtualFunction,
    pub controller: VirtualNvme,
    pub queues: Vec<HardwareQueue>,
    /// Commands an erase that timed out left in the slice's first hardware queue. Nothing
    /// counts their completions, so from then on the slice neither starts nor erases again
    /// until the node restarts: a late one could write a slot page the guest's PRP lists
    /// then fill to the disk, or pass for a new erase's command (found in review).
    pub erase_left_behind: u16,
}

/// A slice's NVMe share.
pub struct SliceDisk {
    /// The slice's name (for errors).
    pub name: String,
    pub share: DiskShare,
    pub physical: &'static Physical,
    /// The plan's `nvme.direct-queues`.
    pub direct_queues: bool,
    pub state: Mutex<DiskState>,
}

/// A hardware queue of the slice and the LPI of its completions.
#[derive(Clone, Copy, Debug)]
pub struct QueueInterrupt {
    pub id: u16,
    pub lpi: u32,
}

/// Virtual interrupts raised while the controller lock was held, delivered after.
#[derive(Default)]
pub struct Signals {
    spis: Vec<u32>,
    /// EventIDs sent to the vITS doorbell (slices on GICv4 nodes).
    its_events: Vec<u32>,
}

impl Signals {
    pub fn spis(&self) -> &[u32] {
        &self.spis
    }

    pub fn its_events(&self) -> &[u32] {
        &self.its_events
    }
}

/// The controller's window on the hypervisor: the slice's RAM, its hardware queues, the
/// physical controller's doorbells, and the MSIs it asks for.
struct Backend<'a> {
    /// The slice's name (for the lines it prints).
    name: &'a str,
    ram: &'a SharedMemory,
    stage2: &'a CpuStage2,
    queues: &'a mut [HardwareQueue],
    physical: &'static Physical,
    signals: &'a mut Signals,
    /// A page for a request the controller never makes (a queue or slot not the slice's):
    /// keeps that bug path harmless instead of panicking. Allocated only if ever needed.
    scratch: Option<alloc::boxed::Box<[u8; 4096]>>,
}

impl<'a> Backend<'a> {
    fn queue(&mut self, id: u16) -> Option<&mut HardwareQueue> {
        self.queues.iter_mut().find(|q| q.pair.id() == id)
    }

    fn offset(&self, ipa: Ipa, len: usize) -> Result<u64, GuestMemoryFault> {
        let offset = ipa.0.checked_sub(GUEST_RAM_BASE).ok_or(GuestMemoryFault)?;
        let end = offset.checked_add(len as u64).ok_or(GuestMemoryFault)?;
        (end <= self.ram.region().size)
            .then_some(offset)
            .ok_or(GuestMemoryFault)
    }
}

impl NvmeBackend for Backend<'_> {
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault> {
        let offset = self.offset(ipa, buf.len())?;
        self.ram.read(offset, buf).map_err(|_| GuestMemoryFault)
    }

    fn write_guest(&mut self, ipa: Ipa, data: &[u8]) -> Result<(), GuestMemoryFault> {
        let offset = self.offset(ipa, data.len())?;
        // A direct CQ's page is the controller's alone: nothing the guest asks for (a
        // completion of another queue placed over it, an admin command's data, an EventIdx)
        // may write there, else the guest could forge its completions (found in review).
        let last = ipa.0 + data.len().max(1) as u64 - 1;
        let touched = (ipa.0 & !0xfff..=last).step_by(0x1000);
        if touched
            .into_iter()
            .any(|page| self.stage2.protected(page, 0x1000).is_some())
        {
            return Err(GuestMemoryFault);
        }
        self.ram.write(offset, data).map_err(|_| GuestMemoryFault)?;
        store_barrier();
        Ok(())
    }

    fn fence(&mut self) {
        full_barrier();
    }

    fn dma_page(&mut self, queue: u16, slot: u16) -> DmaPage<'_> {
        let Backend {
            queues, scratch, ..
        } = self;
        let page = queues
            .iter_mut()
            .find(|q| q.pair.id() == queue)
            .and_then(|q| q.slots.page_mut(usize::from(slot)));
        match page {
            Some((address, bytes)) => DmaPage {
                address: Pa(address),
                bytes,
            },
            // The controller only names its own queues and slots below the depth; anything
            // else would be its bug. Address 0 is never given to the device for it.
            None => DmaPage {
                address: Pa(0),
                bytes: scratch.get_or_insert_with(|| alloc::boxed::Box::new([0; 4096])),
            },
        }
    }

    fn submit(&mut self, queue: u16, command: &SubmissionEntry) {
        if let Some(q) = self.queue(queue) {
            q.pair.push(command);
        }
    }

    fn ring(&mut self, queue: u16) {
        let physical = self.physical;
        if let Some(q) = self.queue(queue) {
            physical.ring_submission(&q.pair);
        }
    }

    fn place_cq(&mut self, queue: u16, at: Option<Pa>) -> Placed {
        let (physical, stage2, memory) = (self.physical, self.stage2, self.ram);
        let ram = memory.region();
        let Some(q) = self.queue(queue) else {
            return Placed::Stayed;
        };
        // The pair's MSI-X vector is its queue ID (`super::set_up_queues`).
        let vector = queue;
        let bytes = u64::from(q.pair.entries()) * 16;
        let Some(Pa(pa)) = at else {
            return match physical.recreate_queue_pair(&mut q.pair, vector, None) {
                Ok(()) => {
                    if let Some(ipa) = q.lent.take() {
                        // Cannot fail: the page is mapped as a page since it was lent.
                        let _ = stage2.protect_ram_page(ipa, bytes, false);
                    }
                    Placed::Moved
                }
                Err(error) => {
                    crate::hv!(
                        "nvme: hardware queue {queue} not taken back from its slice: {error}"
                    );
                    Placed::Lost
                }
            };
        };
        let inside = pa >= ram.base && pa + bytes <= ram.base + ram.size;
        // One page, page aligned: the model's rules, checked again here because
        // `protect_ram_page` protects the first page only.
        let one_page = pa.is_multiple_of(0x1000) && bytes <= 0x1000;
        if !inside || !one_page || q.lent.is_some() {
            return Placed::Stayed;
        }
        let ipa = GUEST_RAM_BASE + (pa - ram.base);
        // Read-only first, then zeroed (no stale phase tag passes for a completion): only
        // the controller writes the page from then on.
        if stage2.protect_ram_page(ipa, bytes, true).is_err() {
            return Placed::Stayed;
        }
        let _ = memory.zero(pa - ram.base, bytes);
        let placed = match physical.recreate_queue_pair(&mut q.pair, vector, Some(pa)) {
            Ok(()) => {
                q.lent = Some(ipa);
                crate::hv!(
                    "nvme: slice {} hardware queue {queue} completes into its CQ at {ipa:#x} (direct)",
                    self.name
                );
                return Placed::Moved;
            }
            Err(error) => {
                crate::hv!("nvme: hardware queue {queue} not moved to its slice's CQ: {error}");
                match physical.recreate_queue_pair(&mut q.pair, vector, None) {
                    Ok(()) => Placed::Stayed,
                    Err(error) => {
                        // Lost: nothing was in flight on it, and the model sends nothing
                        // more; the slice's stop cannot drain (reported then). The page is
                        // writable again below even if a timed-out Create I/O CQ left a
                        // hardware CQ there: the controller writes a CQ only for commands,
                        // and none ever go to this pair again.
                        crate::hv!("nvme: hardware queue {queue} lost: {error}");
                        Placed::Lost
                    }
                }
            }
        };
        let _ = stage2.protect_ram_page(ipa, bytes, false);
        placed
    }

    fn release_cq(&mut self, queue: u16, head: u16) {
        self.physical.release_completions(queue, head);
    }

    fn signal(&mut self, message: MsiMessage) {
        // Only an MSI aimed at the slice's own MBI SPIs becomes an interrupt; anything else
        // the guest programmed into its MSI-X table goes nowhere.
        let spi = message.data;
        let ours = (map::MBI_FIRST..map::MBI_FIRST + map::MBI_COUNT).contains(&spi);
        if message.address == SETSPI && ours {
            self.signals.spis.push(spi);
        } else if message.address == map::ITS_TRANSLATER {
            // A slice with a vITS translates it; without one it goes nowhere.
            self.signals.its_events.push(message.data);
        }
    }
}

impl SliceDisk {
    /// The share of slice `index` named `name` with RAM `ram` (physical); with
    /// `direct_queues`, its I/O queue pairs may become direct (decision 5).
    pub fn new(
        index: usize,
        name: &str,
        ram: Region,
        share: DiskShare,
        queues: Vec<HardwareQueue>,
        physical: &'static Physical,
        direct_queues: bool,
    ) -> Result<SliceDisk, String> {
        let info = &physical.info;
        let serial: String = format!("MVS{index:03}-{name}").chars().take(20).collect();
        let config = ControllerConfig {
            ram: GuestRam {
                ipa_base: Ipa(GUEST_RAM_BASE),
                size: ram.size,
                pa_base: Pa(ram.base),
            },
            namespace: NamespaceShare {
                physical_nsid: 1,
                first_block: share.first_block,
                blocks: share.blocks,
                block_shift: info.lba_shift,
            },
            queues: HardwareQueues {
                first: share.first_queue,
                count: share.queues,
                depth: QUEUE_ENTRIES,
            },
            namespace_ids: Some(NamespaceIds::from_serial(&serial)),
            serial,
            model: DEFAULT_MODEL.into(),
            firmware_revision: env!("CARGO_PKG_VERSION").into(),
            subsystem_nqn: Some(format!("nqn.2026-11.dev.microvisor:slice:{name}")),
            controller_id: index as u16 + 1,
            pci_vendor_id: vpci::VENDOR_ID,
            physical_mdts: info.mdts,
            volatile_write_cache: info.volatile_write_cache,
            direct_queues,
        };
        let controller = VirtualNvme::new(config).map_err(|e| format!("nvme: {e}"))?;
        let function = VirtualFunction::new(controller.msix_vectors());
        Ok(SliceDisk {
            name: name.into(),
            share,
            physical,
            direct_queues,
            state: Mutex::new(DiskState {
                function,
                controller,
                queues,
                erase_left_behind: 0,
            }),
        })
    }

    /// The controller's window on the hypervisor for one access: the slice's RAM and stage 2
    /// (`memory`), its hardware queues, the physical controller, and the interrupts raised.
    fn backend<'a>(
        &'a self,
        (ram, stage2): (&'a SharedMemory, &'a CpuStage2),
        queues: &'a mut [HardwareQueue],
        signals: &'a mut Signals,
    ) -> Backend<'a> {
        Backend {
            name: &self.name,
            ram,
            stage2,
            queues,
            physical: self.physical,
            signals,
            scratch: None,
        }
    }

    /// Where each direct queue's completions should go now (decision 5, step 3): straight
    /// to the guest event its CQ's MSI-X vector names on the vITS, while the model says the
    /// chain holds. Changes are applied to the slice's vGIC here, under the controller's
    /// lock: two vCPUs applying theirs after releasing it could apply them out of order and
    /// leave the hardware event on a guest event the model no longer names (found in
    /// review).
    fn relink(&self, gic: &SliceGic, state: &mut DiskState) {
        if !self.direct_queues {
            return;
        }
        let mut links = Vec::new();
        let routes: Vec<_> = state.controller.direct_routes().collect();
        for (index, (queue, message)) in routes.into_iter().enumerate() {
            let wanted = message
                .filter(|m| m.address == map::ITS_TRANSLATER)
                .map(|m| m.data);
            let Some(q) = state.queues.iter_mut().find(|q| q.pair.id() == queue) else {
                continue;
            };
            if q.linked != wanted {
                links.push(EventLink {
                    index,
                    physical_device: self.physical.its_device,
                    hardware: u32::from(queue),
                    lpi: q.lpi,
                    old: q.linked,
                    new: wanted,
                });
                q.linked = wanted;
            }
        }
        gic.relink(super::FUNCTION_DEVICE_ID, &links);
    }

    /// A guest access to its PCIe configuration space (ECAM offset `offset`).
    pub fn config_access(
        &self,
        memory: (&SharedMemory, &CpuStage2),
        gic: &SliceGic,
        offset: u64,
        width: u8,
        write: Option<u64>,
        signals: &mut Signals,
    ) -> u64 {
        // ECAM: bus 0 only; device/function in bits 19:12, register in bits 11:0.
        let devfn = ((offset >> 12) & 0xff) as u8;
        let register = (offset & 0xfff) as u16;
        let mut state = self.state.lock();
        let state = &mut *state;
        let word = state.function.config_read(devfn, register & !3);
        let Some(value) = write else {
            return vpci::extract(word, register, width);
        };
        let merged = vpci::merge(word, register, width, value);
        let before = (state.function.msix_enabled(), state.function.bar0());
        let reset = state.function.config_write(devfn, register & !3, merged);
        let mut backend = self.backend(memory, &mut state.queues, signals);
        if reset {
            state.controller.function_level_reset(&mut backend);
        }
        if (state.function.msix_enabled(), state.function.bar0()) != before || reset {
            let enabled = state.function.msix_enabled();
            state
                .controller
                .set_msix_control(&mut backend, enabled, !enabled);
        }
        self.relink(gic, state);
        0
    }

    /// Where the function's BAR0 decodes now, if it does.
    pub fn bar0_region(&self) -> Option<Region> {
        let base = self.state.lock().function.bar0()?;
        Some(Region::new(base, vpci::BAR0_SIZE))
    }

    /// A guest access to `ipa` if it falls in the function's BAR0 (else None).
    pub fn bar_access(
        &self,
        memory: (&SharedMemory, &CpuStage2),
        gic: &SliceGic,
        ipa: u64,
        width: u8,
        write: Option<u64>,
        signals: &mut Signals,
    ) -> Option<u64> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let base = state.function.bar0()?;
        let offset = ipa.checked_sub(base).filter(|&o| o < vpci::BAR0_SIZE)?;
        match write {
            None => Some(state.controller.mmio_read(offset, width)),
            Some(value) => {
                let mut backend = self.backend(memory, &mut state.queues, signals);
                state
                    .controller
                    .mmio_write(&mut backend, offset, width, value);
                self.relink(gic, state);
                Some(0)
            }
        }
    }

    /// The slice's hardware queues and the LPI each signals its completions with.
    pub fn queue_interrupts(&self) -> Vec<QueueInterrupt> {
        self.state
            .lock()
            .queues
            .iter()
            .map(|q| QueueInterrupt {
                id: q.pair.id(),
                lpi: q.lpi,
            })
            .collect()
    }

    /// The physical controller completed commands on hardware queue `queue`: hand them to the
    /// virtual controller and acknowledge them to the device.
    pub fn completions(
        &self,
        memory: (&SharedMemory, &CpuStage2),
        gic: &SliceGic,
        queue: u16,
        signals: &mut Signals,
    ) {
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut entries: Vec<CompletionEntry> = Vec::new();
        let Some(q) = state.queues.iter_mut().find(|q| q.pair.id() == queue) else {
            return;
        };
        if q.lent.is_some() {
            // The entries are in the slice's CQ: the model reads them there.
            let mut backend = self.backend(memory, &mut state.queues, signals);
            state.controller.direct_interrupt(&mut backend, queue);
            self.relink(gic, state);
            return;
        }
        while let Some(entry) = q.pair.pop() {
            entries.push(entry);
        }
        if entries.is_empty() {
            return;
        }
        self.physical.ring_completion(&q.pair);
        let mut backend = self.backend(memory, &mut state.queues, signals);
        let summary = state
            .controller
            .hardware_completions(&mut backend, queue, entries);
        // Commands fetched here may have made a pair direct.
        self.relink(gic, state);
        if summary.unexpected != 0 {
            crate::output::hv(format_args!(
                "nvme: {} unexpected completion(s) on hardware queue {queue}",
                summary.unexpected
            ));
        }
    }

    /// No command of the slice (its guest's, or an erase's) is in the hardware.
    pub fn is_quiescent(&self) -> bool {
        let state = self.state.lock();
        state.controller.is_quiescent() && state.erase_left_behind == 0
    }

    /// Resets the function and waits until none of the slice's commands is left in the
    /// hardware, so that its RAM can be reloaded. Polls the hardware queues itself (the
    /// slice's cores are parked). False if the device did not drain within `timeout_ms`.
    /// Direct queues' completions stop following guest events.
    pub fn reset_and_drain(
        &self,
        memory: (&SharedMemory, &CpuStage2),
        gic: &SliceGic,
        timeout_ms: u64,
    ) -> bool {
        let hz = cpu::counter_frequency().max(1);
        let start = cpu::counter();
        {
            let mut state = self.state.lock();
            let state = &mut *state;
            let mut signals = Signals::default();
            let mut backend = self.backend(memory, &mut state.queues, &mut signals);
            state.controller.restart(&mut backend);
            state.function = VirtualFunction::new(state.controller.msix_vectors());
            self.relink(gic, state);
        }
        loop {
            let ids: Vec<u16> = self
                .state
                .lock()
                .queues
                .iter()
                .map(|q| q.pair.id())
                .collect();
            let mut signals = Signals::default();
            for id in ids {
                self.completions(memory, gic, id, &mut signals);
            }
            if self.state.lock().controller.is_quiescent() {
                return true;
            }
            if cpu::counter().wrapping_sub(start) * 1000 / hz > timeout_ms {
                return false;
            }
            barrier::after_device_write();
            cpu::spin_hint();
        }
    }

    /// Erases the slice's whole share (docs/control.md, "Erase"): Write Zeroes over its window
    /// of namespace 1 (Writes of a zero page when the controller has no Write Zeroes, ONCS bit
    /// 3), a Flush if the controller has a volatile write cache, then every block read back
    /// and checked to be zero. Never touches a block outside the window.
    ///
    /// Preconditions (the caller's, i.e. the control interface's): the slice is stopped (its
    /// function was reset and drained by `quiesce`, its vCPUs are parked) and stays stopped
    /// until this returns; call it on one of the slice's own cores. A slice whose guest
    /// commands are still in the hardware (its stop's drain timed out) is refused
    /// ([`EraseErrorKind::GuestCommandsInFlight`]). It polls the slice's first
    /// hardware queue pair (at most 16 commands in flight, each bounded by 30 s) and takes
    /// every one of the slice's queues out of the mediated path meanwhile, so the queues'
    /// completion LPIs, wherever they are taken, find no queue to hand completions to (and
    /// [`Self::queue_interrupts`] is empty): the erase's completions (Command Identifiers
    /// from 0x8000, which the mediated path never uses) are only ever consumed here. The
    /// queues are put back as they were, with every erase command completed and consumed, so
    /// the slice's next start finds them as after any stop. On a timeout the erase's
    /// unfinished commands are left in the hardware queue (the error says how many); their
    /// late completions are then logged as unexpected by the mediated path, and the slice
    /// neither starts nor erases again until the node restarts
    /// ([`DiskState::erase_left_behind`]).
    pub fn erase(&self) -> Result<EraseReport, EraseError> {
        let start = cpu::counter();
        let fail = |kind| EraseError {
            slice: self.name.clone(),
            kind,
            first_block: self.share.first_block,
            ticks: cpu::counter().wrapping_sub(start),
        };
        let mut queues = {
            let mut state = self.state.lock();
            if state.queues.is_empty() {
                return Err(fail(EraseErrorKind::Busy));
            }
            if !state.controller.is_quiescent() {
                return Err(fail(EraseErrorKind::GuestCommandsInFlight));
            }
            if state.erase_left_behind > 0 {
                return Err(fail(EraseErrorKind::EraseCommandsInFlight));
            }
            core::mem::take(&mut state.queues)
        };
        let result = self.erase_on(&mut queues);
        {
            let mut state = self.state.lock();
            state.queues = queues;
            if let Err(EraseErrorKind::Fault(EraseFault::Timeout { in_flight, .. })) = result {
                state.erase_left_behind = in_flight;
            }
        }
        let outcome = result.map_err(fail)?;
        let ticks = cpu::counter().wrapping_sub(start);
        Ok(EraseReport {
            bytes: outcome.1.bytes,
            wipe: outcome.0,
            outcome: outcome.1,
            ticks,
            ms: ticks_to_ms(ticks),
        })
    }

    /// The erase itself, on `queues` (taken out of the mediated path).
    fn erase_on(
        &self,
        queues: &mut [HardwareQueue],
    ) -> Result<(wipe::Wipe, wipe::EraseOutcome), EraseErrorKind> {
        let info = &self.physical.info;
        let facts = DiskFacts {
            nsid: 1,
            oncs: info.oncs,
            mdts: info.mdts,
            volatile_write_cache: info.volatile_write_cache,
            block_shift: info.lba_shift,
        };
        let window = Window::new(self.share.first_block, self.share.blocks)
            .ok_or(EraseErrorKind::NoBuffer)?;
        let HardwareQueue {
            pair,
            slots,
            read_back,
            ..
        } = queues.first_mut().ok_or(EraseErrorKind::Busy)?;
        let read_back = read_back.as_ref().ok_or(EraseErrorKind::NoBuffer)?;
        if slots.pages() < SLOT_PAGES_NEEDED {
            return Err(EraseErrorKind::NoBuffer);
        }
        let plan = ErasePlan::new(facts, window, pair.entries(), READ_SLOTS, READ_SLOT_BYTES)
            .ok_or(EraseErrorKind::NoBuffer)?;
        let mut queue = HardwareEraseQueue {
            physical: self.physical,
            pair,
            slots,
            read_back,
        };
        wipe::erase(&mut queue, &plan)
            .map(|outcome| (plan.wipe, outcome))
            .map_err(EraseErrorKind::Fault)
    }
}
