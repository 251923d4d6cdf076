//! The node once booted: its slices, which vCPU each physical core runs, who owns each
//! physical interrupt, the operator console and the LPI machinery.

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use microvisor_plan::sorted_map::SortedMap;

use microvisor_logic::inventory::Conduit;
use microvisor_logic::smmu::Event;

use crate::console::OperatorConsole;
use crate::control::{Control, Footprint};
use crate::devices::assigned::AssignedDevice;
use crate::devices::control::Service;
use crate::devices::pci::assigned_event;
use crate::nvme::lpis::Lpis;
use crate::slice::Ending;
use crate::slice::Slice;
use crate::smmu::{NodeSmmu, SmmuEvents, StreamOwner, report};
use crate::vcpu::Vcpu;

/// Who handles a physical interrupt (besides the ones every core handles itself: the
/// hypervisor SGI, the GIC maintenance interrupt and the virtual timer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqOwner {
    /// The physical UART received node console input.
    ConsoleInput,
    /// A device of a slice: `event` is what the device registered (e.g. a hardware queue).
    Device {
        slice: usize,
        device: usize,
        event: u32,
    },
    /// The SMMU's event queue or global error interrupt.
    Smmu,
}

pub struct Node {
    pub conduit: Conduit,
    pub slices: Vec<Slice>,
    /// For each physical core: (slice index, vCPU index) it runs, if any.
    assignment: Vec<Option<(usize, usize)>>,
    pub console: OperatorConsole,
    /// LPIs and the ITS, when some slice has NVMe.
    pub lpis: Option<Arc<Lpis>>,
    /// The SMMUv3, when the node has one the hypervisor uses.
    pub smmu: Option<NodeSmmu>,
    /// The manager's control interface, when the plan has a manager.
    pub control: Option<Control>,
    /// The hypervisor's own memory, for the manager's `NODE` request.
    pub footprint: Footprint,
    /// The slices' first starts, until every one is done.
    pub boot: BootRelease,
    owners: SortedMap<u32, IrqOwner>,
}

/// The node's boot until every slice has been started once (docs/performance.md, `boot-N`):
/// the boot core hands each slice to its vCPU 0 core, which scrubs and loads it and powers
/// vCPU 0 on, all slices in parallel; whichever core finishes the last one reports.
pub struct BootRelease {
    /// First starts not finished yet.
    left: AtomicUsize,
    /// Counter when the boot core had handed every slice to its core.
    handed_at: AtomicU64,
    /// Counter ticks of the slowest first start on its core (scrub, load, vCPU 0 on).
    slowest: AtomicU64,
    /// The release line has been printed.
    reported: AtomicBool,
}

/// What the core that finished the last first start reports.
#[derive(Clone, Copy, Debug)]
pub struct Released {
    pub handed_at: u64,
    pub slowest: u64,
}

impl BootRelease {
    fn new(slices: usize) -> BootRelease {
        BootRelease {
            left: AtomicUsize::new(slices),
            handed_at: AtomicU64::new(0),
            slowest: AtomicU64::new(0),
            reported: AtomicBool::new(false),
        }
    }

    /// The core that finished the last first start has printed the release line.
    pub fn report_printed(&self) {
        self.reported.store(true, Ordering::Release);
    }

    /// Whether the release line has been printed (every first start finished before it).
    pub fn reported(&self) -> bool {
        self.reported.load(Ordering::Acquire)
    }

    /// The boot core has handed every slice to its core, at counter `at`.
    pub fn handed(&self, at: u64) {
        self.handed_at.store(at, Ordering::Release);
    }

    /// A slice's first start finished (started or not) after `ticks` on its core; the one
    /// that finishes the last gets the figures to report.
    pub fn started(&self, ticks: u64) -> Option<Released> {
        self.slowest.fetch_max(ticks, Ordering::AcqRel);
        (self.left.fetch_sub(1, Ordering::AcqRel) == 1).then(|| Released {
            handed_at: self.handed_at.load(Ordering::Acquire),
            slowest: self.slowest.load(Ordering::Acquire),
        })
    }
}

/// SMMU event records name the slice and function the stream belongs to; a record of an
/// assigned function stops its DMA at once and ends its slice's run as a fault (the slice's
/// `on-fault` policy then stops or restarts it, resetting the function).
impl SmmuEvents for Node {
    fn stream_owner(&self, stream: u32) -> Option<StreamOwner<'_>> {
        let (slice, function) = self.stream_function(stream)?;
        Some(StreamOwner {
            slice: &slice.name,
            device: function.bdf,
        })
    }

    fn smmu_event(&self, event: &Event) {
        report(event, self.stream_owner(event.stream));
        if let Some((slice, function)) = self.stream_function(event.stream) {
            function.stop_dma();
            slice.request_end(Ending::Fault(format!(
                "device {}: SMMU: {event}",
                function.bdf
            )));
        }
    }
}

/// The manager's requests act on the node's slices.
impl Service for Node {
    fn execute(&self) -> u64 {
        match &self.control {
            Some(control) => control.execute(&self.slices, self.footprint),
            None => microvisor_logic::control::Status::UnknownOp as u64,
        }
    }
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conduit: Conduit,
        cores: usize,
        slices: Vec<Slice>,
        console: OperatorConsole,
        lpis: Option<Arc<Lpis>>,
        smmu: Option<NodeSmmu>,
        control: Option<Control>,
        footprint: Footprint,
    ) -> Node {
        let mut assignment = alloc::vec![None; cores];
        for slice in &slices {
            for vcpu in &slice.vcpus {
                assignment[vcpu.core] = Some((slice.index, vcpu.index));
            }
        }
        let mut owners = SortedMap::new();
        if let Some(intid) = console.intid() {
            owners.insert(intid, IrqOwner::ConsoleInput);
        }
        for slice in &slices {
            if let (Some(pci), Some(device)) = (&slice.pci, slice.pci_device) {
                // A function whose MSIs are vLPIs has no LPIs of the hypervisor's.
                let routed = pci.assigned().iter().enumerate().filter(|(_, f)| !f.direct);
                for (i, function) in routed {
                    for vector in 0..function.vectors {
                        owners.insert(
                            function.first_lpi + u32::from(vector),
                            IrqOwner::Device {
                                slice: slice.index,
                                device,
                                event: assigned_event(i, vector),
                            },
                        );
                    }
                }
            }
            if let (Some(disk), Some(device)) = (&slice.disk, slice.pci_device) {
                for queue in disk.queue_interrupts() {
                    owners.insert(
                        queue.lpi,
                        IrqOwner::Device {
                            slice: slice.index,
                            device,
                            event: u32::from(queue.id),
                        },
                    );
                }
            }
        }
        for intid in smmu.iter().flat_map(NodeSmmu::intids) {
            owners.insert(intid, IrqOwner::Smmu);
        }
        Node {
            conduit,
            boot: BootRelease::new(slices.len()),
            slices,
            assignment,
            console,
            lpis,
            smmu,
            control,
            footprint,
            owners,
        }
    }

    /// The slice and vCPU that physical core `core` runs.
    pub fn assigned(&self, core: usize) -> Option<(&Slice, &Vcpu)> {
        let (s, v) = (*self.assignment.get(core)?)?;
        let slice = &self.slices[s];
        Some((slice, &slice.vcpus[v]))
    }

    /// Number of physical cores the node has.
    pub fn cores(&self) -> usize {
        self.assignment.len()
    }

    /// Physical cores that run a vCPU.
    pub fn used_cores(&self) -> impl Iterator<Item = usize> + '_ {
        self.assignment
            .iter()
            .enumerate()
            .filter_map(|(core, a)| a.map(|_| core))
    }

    /// The slice and assigned function whose SMMU stream is `stream`.
    fn stream_function(&self, stream: u32) -> Option<(&Slice, &AssignedDevice)> {
        self.slices.iter().find_map(|slice| {
            let function = slice
                .pci
                .as_ref()?
                .assigned()
                .iter()
                .find(|f| f.stream == stream)?;
            Some((slice, function))
        })
    }

    /// Who handles physical interrupt `intid`.
    pub fn owner(&self, intid: u32) -> Option<IrqOwner> {
        self.owners.get(&intid).copied()
    }
}
