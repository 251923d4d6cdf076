//! The node's SMMUv3 (docs/architecture.md, "SMMUv3"): brought up at boot, before any PCI
//! function may do DMA, with every stream aborting; the hypervisor's own NVMe controller
//! confined to the memory it is given; event records and global errors reported when the
//! SMMU's wired interrupts fire. Slices' devices are attached with [`NodeSmmu::attach`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use microvisor_plan::sorted_map::SortedMap;

use microvisor_arch::gic;
use microvisor_arch::memory;
use microvisor_arch::smmu::{Smmu, SmmuError, SmmuFrames};
use microvisor_logic::inventory::{Inventory, Region, WiredInterrupt};
use microvisor_logic::memory_map::place_working_memory;
use microvisor_logic::pagetable::{
    Attributes, HeapTables, MapError, Regime, Stage2MemoryTypes, Translation,
};
use microvisor_logic::pci::Bdf;
use microvisor_logic::smmu::{Event, MemoryLayout, StreamTableSize, Unsupported};
use microvisor_plan::size::HumanSize;
use spin::Mutex;

use crate::output;

/// The VMID of the stage 2 that confines the hypervisor's own NVMe controller (slices use
/// their index + 1, as on the CPUs).
pub const HYPERVISOR_VMID: u16 = 0;

/// Offset of the ITS page devices write their MSIs to (GITS_TRANSLATER's 64 KiB frame).
const ITS_TRANSLATER_PAGE: u64 = 0x1_0000;
const PAGE: u64 = 4096;
/// Event records handed to the hook per interrupt.
const MAX_REPORTED: usize = 4;

/// Whose a stream is: the slice and the PCI function assigned to it.
#[derive(Clone, Copy, Debug)]
pub struct StreamOwner<'a> {
    pub slice: &'a str,
    pub device: Bdf,
}

/// Who hears about SMMU event records. The node implements it. Wiring assigned functions is
/// [`SmmuEvents::stream_owner`] (then records read `[hv] smmu: slice <name> device <bdf>:
/// <event>`); applying the slice's `on-fault` policy is an override of
/// [`SmmuEvents::smmu_event`].
pub trait SmmuEvents {
    /// The slice and function `stream` belongs to (default: none known).
    fn stream_owner(&self, _stream: u32) -> Option<StreamOwner<'_>> {
        None
    }

    /// One event record (`event.stream` says whose); the default prints it.
    fn smmu_event(&self, event: &Event) {
        report(event, self.stream_owner(event.stream));
    }
}

/// Prints an event record: `[hv] smmu: slice web device 0000:01:00.0: translation fault at
/// IOVA 0x1000 (write)`, or `[hv] smmu: stream 0x100: ...` when nobody owns the stream.
pub fn report(event: &Event, owner: Option<StreamOwner<'_>>) {
    match owner {
        Some(o) => output::hv(format_args!(
            "smmu: slice {} device {}: {event}",
            o.slice, o.device
        )),
        None => output::hv(format_args!("smmu: stream {:#x}: {event}", event.stream)),
    }
}

/// The node's SMMU once translating.
pub struct NodeSmmu {
    smmu: Mutex<Smmu>,
    /// The memory the stream table and queues live in (other device memory must avoid it).
    pub memory: Region,
    /// Its event queue and global error interrupts, when the firmware DT names them.
    pub eventq: Option<WiredInterrupt>,
    pub gerror: Option<WiredInterrupt>,
    /// The device stage 2 of each attached stream (and its VMID), kept alive while the SMMU
    /// may walk it.
    attached: Mutex<SortedMap<u32, (u16, DeviceStage2)>>,
}

/// A stage 2 for devices only, never loaded on a CPU (so what it maps for a device, such as
/// the ITS page its MSIs go to, gives no CPU access): RAM windows and an MSI page, in the CPU's
/// stage-2 format (`Regime::Stage2`, the format stream table entries name), its memory types
/// combined with the incoming transaction's as the SMMU reads them with STE.S2FWB = 0
/// (`Stage2MemoryTypes::CombinedWithStage1`, whatever the cores' HCR_EL2.FWB).
pub struct DeviceStage2 {
    tables: Translation<HeapTables>,
}

impl DeviceStage2 {
    pub fn new() -> Result<DeviceStage2, MapError> {
        Ok(DeviceStage2 {
            tables: Translation::new(
                Regime::Stage2(Stage2MemoryTypes::CombinedWithStage1),
                HeapTables::new(),
            )?,
        })
    }

    /// Device addresses `[ipa, ipa + ram.size)` reach physical RAM `ram` (read-write; page
    /// aligned).
    pub fn map_ram(&mut self, ipa: u64, ram: Region) -> Result<(), MapError> {
        self.tables.map(ipa, ram.base, ram.size, Attributes::DATA)
    }

    /// Device address `ipa` (a page) reaches the ITS translater page of the ITS at `its`, the
    /// page MSI writes go to.
    pub fn map_msi_page(&mut self, ipa: u64, its: Region) -> Result<(), MapError> {
        self.tables.map(
            ipa,
            its.base + ITS_TRANSLATER_PAGE,
            PAGE,
            Attributes::DEVICE,
        )
    }

    /// Physical address of the level-1 table (STE.S2TTB).
    pub fn root(&self) -> u64 {
        self.tables.root()
    }

    /// An identity map of `regions` (rounded out to pages) and the ITS translater page.
    fn identity(regions: &[Region], its: Option<Region>) -> Result<DeviceStage2, MapError> {
        let mut stage2 = DeviceStage2::new()?;
        for region in regions {
            let base = region.base & !(PAGE - 1);
            let size = (region.end() - base).next_multiple_of(PAGE);
            stage2.map_ram(base, Region::new(base, size))?;
        }
        if let Some(its) = its {
            stage2.map_msi_page(its.base + ITS_TRANSLATER_PAGE, its)?;
        }
        Ok(stage2)
    }
}

impl NodeSmmu {
    /// Brings the SMMU described by `inventory` up, with a stream table that covers every
    /// StreamID of requester IDs on buses up to `highest_bus` (not 2^16 entries), in RAM that
    /// avoids `avoid`. `Ok(None)`: the SMMU cannot be used (printed), and it was left as the
    /// firmware left it.
    pub fn bring_up(
        frames: SmmuFrames,
        inventory: &Inventory,
        highest_bus: u8,
        avoid: &[Region],
    ) -> Result<Option<NodeSmmu>, String> {
        let base = frames.base();
        let fail = |e: SmmuError| format!("smmu at {base:#x}: {e}");
        let features = frames.features();
        let last_rid = (u16::from(highest_bus) << 8) | 0xff;
        let highest_stream = (0..=last_rid)
            .filter_map(|rid| inventory.stream_id(rid))
            .max()
            .unwrap_or(0);
        let limit = inventory
            .ram
            .iter()
            .map(Region::end)
            .chain(inventory.gic.its.map(|its| its.end()))
            .max()
            .unwrap_or(0);
        let unusable = |why: Unsupported| {
            output::hv(format_args!(
                "smmu at {base:#x}: {why}; not used, no PCI function can be assigned"
            ));
            Ok(None)
        };
        if let Err(why) = features.check(limit) {
            return unusable(why);
        }
        let table = match StreamTableSize::covering(highest_stream, &features) {
            Ok(table) => table,
            Err(why) => return unusable(why),
        };
        let layout = MemoryLayout::new(table, &features);
        let region = place_working_memory(&inventory.ram, avoid, 0, layout.bytes, layout.align)
            .ok_or_else(|| format!("smmu at {base:#x}: no RAM left for its stream table"))?;
        let claimed = memory::claim(region)
            .map_err(|e| format!("smmu at {base:#x}: claiming {region:x?}: {e:?}"))?;
        let smmu = Smmu::bring_up(frames, &layout, claimed, limit).map_err(fail)?;
        let f = smmu.features();
        let interrupts = inventory.smmu.map(|s| s.interrupts).unwrap_or_default();
        output::hv(format_args!(
            "smmu: SMMUv3 at {base:#x}: stage 2, {}-bit VMIDs, {}-bit StreamIDs, {}-bit output, {}; \
             linear stream table of {} entries ({}) for streams 0x0-{:#x}, every stream aborts; \
             interrupts eventq {} gerror {}",
            if f.vmid16 { 16 } else { 8 },
            f.stream_id_bits,
            f.output_bits().unwrap_or(0),
            if f.coherent {
                "coherent"
            } else {
                "not coherent"
            },
            table.entries(),
            HumanSize(table.bytes()),
            table.entries() - 1,
            intid_text(interrupts.eventq),
            intid_text(interrupts.gerror),
        ));
        Ok(Some(NodeSmmu {
            smmu: Mutex::new(smmu),
            memory: region,
            eventq: interrupts.eventq,
            gerror: interrupts.gerror,
            attached: Mutex::new(SortedMap::new()),
        }))
    }

    /// Confines `stream` (the hypervisor's own NVMe controller) to `regions` (its device
    /// memory and the slices' RAM its transfers land in) plus the ITS page its MSIs go to, all
    /// identity-mapped in a stage 2 with VMID [`HYPERVISOR_VMID`]. If those tables cannot be
    /// built, the stream bypasses instead (printed): the hypervisor checks every PRP it gives
    /// that controller against the slice's window, so bypass costs defence in depth, not
    /// isolation.
    pub fn confine(
        &self,
        stream: u32,
        regions: &[Region],
        its: Option<Region>,
    ) -> Result<(), String> {
        let fail = |e: SmmuError| format!("smmu: stream {stream:#x}: {e}");
        match DeviceStage2::identity(regions, its) {
            Ok(stage2) => self.attach(stream, HYPERVISOR_VMID, stage2).map_err(fail),
            Err(why) => {
                output::hv(format_args!(
                    "smmu: stream {stream:#x}: cannot confine it ({why:?}); it bypasses the SMMU"
                ));
                self.smmu.lock().bypass(stream).map_err(fail)
            }
        }
    }

    /// Translates `stream` through `stage2` with `vmid` (a slice's index + 1 for its assigned
    /// functions), keeping the tables alive while the entry names them. A stream attached
    /// before is switched over (never half-written) and its old tables freed after its VMID's
    /// cached translations are.
    pub fn attach(&self, stream: u32, vmid: u16, stage2: DeviceStage2) -> Result<(), SmmuError> {
        let mut smmu = self.smmu.lock();
        if let Err(e) = smmu.attach(stream, vmid, stage2.root()) {
            // The entry may name these tables already (the SMMU did not confirm after its
            // valid word was stored): the stream is made to abort again if the SMMU takes
            // that, and the tables are never freed either way (until 2026-12-04 they went
            // back to the heap under a live entry; found in review).
            let _ = smmu.detach(stream);
            core::mem::forget(stage2);
            return Err(e);
        }
        let old = self.attached.lock().insert(stream, (vmid, stage2));
        match old {
            Some((old_vmid, tables)) => retire(&mut smmu, old_vmid, tables),
            None => Ok(()),
        }
    }

    /// Whether `stream` translates through tables attached here.
    pub fn is_attached(&self, stream: u32) -> bool {
        self.attached.lock().get(&stream).is_some()
    }

    /// Makes the SMMU's interrupts edge- or level-triggered as the DT says and routes them to
    /// the core with affinity `mpidr`.
    pub fn route_interrupts(&self, mpidr: u64) {
        for interrupt in [self.eventq, self.gerror].into_iter().flatten() {
            gic::set_trigger(interrupt.intid, interrupt.edge);
            gic::route_spi(interrupt.intid, mpidr);
        }
    }

    /// The INTIDs the node routes to [`NodeSmmu::service`].
    pub fn intids(&self) -> impl Iterator<Item = u32> + use<> {
        [self.eventq, self.gerror]
            .into_iter()
            .flatten()
            .map(|i| i.intid)
    }

    /// Handles either interrupt: reports global errors, then hands every pending event record
    /// to `events` (with the SMMU unlocked, so a fault policy may detach streams).
    pub fn service(&self, events: &impl SmmuEvents) {
        let (errors, drained, records) = {
            let mut smmu = self.smmu.lock();
            let errors = smmu.take_global_errors();
            let mut records = Vec::new();
            let drained = smmu.drain_events(&mut |event| records.push(event));
            (errors, drained, records)
        };
        if !errors.is_empty() {
            output::hv(format_args!("smmu: global error: {errors}"));
        }
        if drained.overflowed {
            output::hv(format_args!(
                "smmu: the event queue overflowed, records were lost"
            ));
        }
        // A device faulting on every beat of a transfer writes hundreds of records: the first
        // few say what happened (and let a policy act), the rest are counted.
        for event in records.iter().take(MAX_REPORTED) {
            events.smmu_event(event);
        }
        if records.len() > MAX_REPORTED {
            output::hv(format_args!(
                "smmu: {} more event records not shown",
                records.len() - MAX_REPORTED
            ));
        }
    }
}

/// Frees tables no stream table entry names any more, once the SMMU's cached translations of
/// their VMID are gone; if that invalidation fails they are leaked rather than freed under a
/// walk that might still use them.
fn retire(smmu: &mut Smmu, vmid: u16, tables: DeviceStage2) -> Result<(), SmmuError> {
    match smmu.invalidate_vmid(vmid) {
        Ok(()) => Ok(()),
        Err(e) => {
            core::mem::forget(tables);
            Err(e)
        }
    }
}

fn intid_text(interrupt: Option<WiredInterrupt>) -> String {
    interrupt.map_or_else(|| String::from("none"), |i| format!("{}", i.intid))
}
