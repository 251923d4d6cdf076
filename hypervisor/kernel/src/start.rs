//! Boot flow after `boot/` has the MMU and heap up (docs/architecture.md, "Boot"): check the
//! bundle, fit the plan to the hardware, build every slice, start the cores, then start the
//! slices. Any error before the first slice starts prints one line and powers the node off:
//! nothing starts half-way.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

use microvisor_arch::exceptions;
use microvisor_arch::memory::{self, SharedMemory};
use microvisor_arch::{cpu, firmware, gic, simd, smp, virt};
use microvisor_logic::control::WINDOW_SIZE;
use microvisor_logic::inventory::{Conduit, Inventory, Region};
use microvisor_logic::memory_map::{free_ram, place_working_memory};
use microvisor_logic::passthrough::virtio::MacAddress;
use microvisor_logic::pci::Bdf;
use microvisor_logic::pci::windows::PlacementProblem;
use microvisor_logic::stacks::StackLayout;
use microvisor_plan::bundle::Bundle;
use microvisor_plan::image::{
    DATA_EXECUTION_TEST, NVME_CONFINEMENT_TEST, STACK_OVERFLOW_TEST, UNOWNED_DMA_TEST,
};
use microvisor_plan::place::{self, Hardware, format_cores};
use microvisor_plan::sha256;
use microvisor_plan::size::HumanSize;
use microvisor_plan::{GUEST_RAM_BASE, NodePci, PciAddress, PciFunction};

use crate::console::OperatorConsole;
use crate::control::{Control, Footprint};
use crate::devices::assigned::{self, AssignedDevice, Grant, MSI_IOVA};
use crate::node::Node;
use crate::nvme::lpis::Lpis;
use crate::nvme::physical::{DeviceMemory, NvmeError};
use crate::nvme::{self, DiskError, HardwareQueue, NodeDisk};
use crate::pci::{self, Hierarchy};
use crate::slice::{DiskGrant, Grants, Slice, StagingPool};
use crate::smmu::{DeviceStage2, NodeSmmu};
use crate::vgic::DirectInjection;
use crate::{exits, hv, run as core_run};

/// What `boot/` hands over.
pub struct BootInfo {
    pub inventory: Inventory,
    /// Physical index of the boot core.
    pub boot_core: usize,
    /// The loaded image: hypervisor followed by the bundle.
    pub image: Region,
    /// Bytes of the image that are the hypervisor itself (the bundle follows).
    pub hypervisor_size: u64,
    pub bundle: &'static [u8],
    /// The hypervisor's working memory: early translation tables, every core's stacks, then
    /// the heap.
    pub working_memory: Region,
    /// Bytes of early (stage-1) translation tables in use.
    pub stage1_bytes: u64,
    /// Every core's stacks, their guard pages unmapped.
    pub stacks: StackLayout,
    /// The unmapped guard page below the boot stack.
    pub boot_guard: Region,
    /// The image header's reserved u64 @40: [`STACK_OVERFLOW_TEST`] in the guard page test's
    /// image.
    pub test_mark: [u8; 8],
    /// Bytes of heap used so far, when asked.
    pub heap_used: fn() -> usize,
    /// The PCIe host bridge, when the node has one.
    pub pci: Option<microvisor_arch::pci::PciHost>,
    /// The GIC's ITS, when the node has one.
    pub its: Option<microvisor_arch::its::ItsFrames>,
    /// The SMMUv3 in front of the PCIe bus, when the node has one.
    pub smmu: Option<microvisor_arch::smmu::SmmuFrames>,
    /// Counter readings at the boot's stages so far (`boot/` records its own: entry, device
    /// tree read, MMU on); printed once every slice is handed to its core (`[hv] boot
    /// stages:`, docs/performance.md).
    pub stages: Vec<(&'static str, u64)>,
}

/// Records in `stages` that stage `name` ends now.
fn stage(stages: &mut Vec<(&'static str, u64)>, name: &'static str) {
    stages.push((name, cpu::counter()));
}

/// Cores that finished their EL2 setup.
static CORES_READY: AtomicUsize = AtomicUsize::new(0);

/// The boot core's path once `boot/` is done.
pub fn primary_main(mut info: BootInfo) -> ! {
    exceptions::set_handlers(exits::handlers());
    exceptions::install_vectors();
    banner(&info);
    let conduit = info.inventory.psci;
    match prepare(&mut info) {
        Ok(node) => run(node, &mut info),
        Err(message) => {
            hv!("error: {message}");
            hv!("halted: no slice was started");
            firmware::system_off(conduit)
        }
    }
}

fn banner(info: &BootInfo) {
    let inv = &info.inventory;
    let conduit = match inv.psci {
        Conduit::Smc => "smc",
        Conduit::Hvc => "hvc",
    };
    // Decided here, on the boot core, before any stage-2 table is built.
    let forced_write_back = if virt::guest_ram_always_cacheable() {
        ", stage 2 forces write-back"
    } else {
        ""
    };
    hv!(
        "microvisor {}: {} cores, {} RAM, {} at {:#x}, PL011 at {:#x}, PSCI {:#x} via {conduit}{forced_write_back}",
        env!("CARGO_PKG_VERSION"),
        inv.cpus.len(),
        HumanSize(inv.ram_total()),
        gic::version().unwrap_or(gic::Version::V3).name(),
        inv.gic.distributor.base,
        inv.uart.registers.base,
        firmware::version(inv.psci),
    );
}

/// Everything that can fail, before anything starts.
fn prepare(info: &mut BootInfo) -> Result<Node, String> {
    let inv = &info.inventory;
    if inv.psci != Conduit::Smc {
        return Err(
            "the firmware's PSCI is not reachable by SMC from EL2 (device tree says hvc)".into(),
        );
    }
    gic::init_core().map_err(|e| format!("GIC: boot core: {e}"))?;
    let bundle = Bundle::parse(info.bundle).map_err(|e| format!("bundle: {e}"))?;
    let (compress, how) = match simd::sha256_compression() {
        Some(compress) => (compress, "the CPU's SHA-256 instructions"),
        None => (sha256::software as sha256::Compress, "software"),
    };
    for (index, entry) in bundle.images().iter().enumerate() {
        bundle
            .verify_image_with(index as u32, compress)
            .map_err(|e| {
                format!(
                    "image {index} ({}) failed its SHA-256 check: {e}",
                    entry.label
                )
            })?;
    }
    stage(&mut info.stages, "bundle");
    let bytes: u64 = bundle.images().iter().map(|e| e.len).sum();
    hv!(
        "bundle: {} images ({}) verified with {how}",
        bundle.images().len(),
        HumanSize(bytes)
    );
    let plan = bundle.plan();
    let mut taken: Vec<Region> = inv.reserved.iter().copied().collect();
    taken.push(info.image);
    taken.push(info.working_memory);
    let hardware = Hardware {
        cores: inv.cpus.len() as u32,
        free_ram: free_ram(&inv.ram, &taken),
        ram_total: inv.ram_total(),
    };
    let placement =
        place::place(plan, &hardware).map_err(|e| format!("plan does not fit this node: {e}"))?;
    // The whole PCIe hierarchy, before any function is used: bus numbers, every BAR and
    // bridge window; endpoints stay with decoding and bus mastering off until an owner
    // turns them on. Then the SMMU, for the buses just numbered, before any DMA.
    let mut hierarchy = match (info.pci.as_mut(), info.inventory.pcie) {
        (Some(pci), Some(host)) => Some(pci::discover(pci, &host)),
        _ => None,
    };
    let smmu = setup_smmu(info, &placement, hierarchy.as_ref())?;
    // The functions the plan gives slices, checked against the node as found (the same
    // rules as at build time: it exists, is no bridge, is not the NVMe controller the
    // hypervisor divides, is given once, and the node has an SMMU that translates).
    let root_bus = info.inventory.pcie.map(|host| host.bus_start);
    let node_pci = node_pci(hierarchy.as_ref(), root_bus, smmu.is_some(), plan);
    let given = microvisor_plan::place_devices(plan, &node_pci)
        .map_err(|e| format!("plan does not fit this node: {e}"))?;
    let mut disks: Vec<Option<DiskGrant>> = plan.slices.iter().map(|_| None).collect();
    let mut lpis = None;
    let mut nvme_memory = None;
    if plan.slices.iter().any(|s| s.nvme.is_some()) {
        let nvme = setup_nvme(
            info,
            &placement,
            plan,
            hierarchy.as_mut(),
            smmu.as_ref(),
            &mut lpis,
            &mut nvme_memory,
        );
        match nvme {
            Ok((node_disk, queues)) => {
                for ((disk, share), queues) in disks.iter_mut().zip(&node_disk.shares).zip(queues) {
                    *disk = share.map(|share| DiskGrant {
                        share,
                        queues,
                        physical: node_disk.physical,
                    });
                }
                nvme_report(&node_disk);
            }
            Err(DiskError::Plan(e)) => return Err(format!("plan does not fit this node: {e}")),
            Err(DiskError::Controller(e)) => hv!("nvme: {e}; slices get no NVMe"),
        }
    }
    let mut assigned: Vec<Vec<AssignedDevice>> = plan.slices.iter().map(|_| Vec::new()).collect();
    if given.iter().any(|g| !g.is_empty()) {
        let (Some(hierarchy), Some(smmu)) = (hierarchy.as_ref(), smmu.as_ref()) else {
            return Err("devices: the node has no PCIe hierarchy or SMMU".into());
        };
        let avoid = device_memory_avoid(info, &placement, Some(smmu), nvme_memory);
        assigned = setup_assigned(
            info, &placement, plan, &given, hierarchy, smmu, &mut lpis, &avoid,
        )?;
    }
    if info.test_mark == UNOWNED_DMA_TEST {
        unowned_dma_test(
            info,
            &placement,
            hierarchy.as_mut(),
            smmu.as_ref(),
            nvme_memory,
        );
    }
    let inv = &info.inventory;
    let lpis = lpis.map(Arc::new);
    let direct = lpis
        .clone()
        .filter(|lpis| lpis.virtual_lpis())
        .map(|lpis| lpis as Arc<dyn DirectInjection>);
    let manager = plan.manager();
    let bundle: &'static Bundle<'static> = alloc::boxed::Box::leak(alloc::boxed::Box::new(bundle));
    let staging = setup_staging(&placement)?;
    let slices = placement
        .slices
        .iter()
        .zip(disks)
        .zip(assigned)
        .enumerate()
        .map(|(index, ((p, disk), assigned))| {
            let grants = Grants {
                disk,
                assigned,
                pool: staging.as_ref().map(|(_, pool)| pool.clone()),
                window: staging
                    .as_ref()
                    .filter(|_| manager == Some(index))
                    .map(|(window, _)| window.region()),
                direct: direct.clone(),
            };
            Slice::new(index, bundle.plan(), p, inv, bundle, grants)
        })
        .collect::<Result<Vec<_>, _>>()?;
    stage(&mut info.stages, "slices");
    let control = match (staging, manager) {
        (Some((window, pool)), Some(manager)) => {
            Some(Control::new(manager, window, pool, slices.len()))
        }
        _ => None,
    };
    let console = OperatorConsole::new(inv.uart.intid);
    Ok(Node::new(
        inv.psci,
        inv.cpus.len(),
        slices,
        console,
        lpis,
        smmu,
        control,
        Footprint {
            bytes: info.hypervisor_size + info.working_memory.size,
            heap_bytes: info.working_memory.size - info.stage1_bytes - info.stacks.region().size,
            heap_used: info.heap_used,
        },
    ))
}

/// The manager's staging region (docs/control.md): its first 2 MiB is the data window the
/// manager maps, the rest the pool staged images live in.
fn setup_staging(
    placement: &place::Placement,
) -> Result<Option<(SharedMemory, Arc<StagingPool>)>, String> {
    let Some(range) = placement.staging else {
        return Ok(None);
    };
    let region = memory::claim(Region::new(range.base, range.size))
        .map_err(|e| format!("staging pool: cannot claim {range:x?}: {e:?}"))?;
    let (window, pool) = region
        .split_at(WINDOW_SIZE)
        .map_err(|_| String::from("staging pool: smaller than the control window"))?;
    let window = window.into_shared();
    window
        .zero(0, WINDOW_SIZE)
        .and_then(|()| window.sync_for_uncached(0, WINDOW_SIZE))
        .map_err(|_| String::from("staging pool: window"))?;
    hv!(
        "staging: {} at {:#x} for the manager's control window and staged images",
        HumanSize(range.size),
        range.base
    );
    Ok(Some((
        window,
        Arc::new(StagingPool::new(pool.into_shared())),
    )))
}

/// The node's PCI functions as the plan's device rules see them.
fn node_pci(
    hierarchy: Option<&Hierarchy>,
    root_bus: Option<u8>,
    smmu: bool,
    plan: &microvisor_plan::CompiledPlan,
) -> NodePci {
    let address = |bdf: Bdf| PciAddress::new(bdf.bus, bdf.device, bdf.function);
    let functions: Vec<PciFunction> = hierarchy
        .iter()
        .flat_map(|h| &h.topology.functions)
        .filter_map(|f| {
            Some(PciFunction {
                address: address(f.function.bdf)?,
                class: f.function.class,
                vendor: f.function.vendor,
                device: f.function.device,
            })
        })
        .collect();
    // The controller `nvme::bring_up` takes, when a slice has a share: the first NVMe
    // function on the host bridge's own bus, by the same rule (until 2026-12-04 this took the
    // first in the whole hierarchy, depth first, so an NVMe behind a root port could be
    // protected while the one the hypervisor divides was given to a slice; found in review).
    let hypervisor_nvme = plan
        .slices
        .iter()
        .any(|s| s.nvme.is_some())
        .then(|| {
            functions
                .iter()
                .filter(|f| {
                    Some(f.address.bus()) == root_bus
                        && f.class == microvisor_logic::pci::CLASS_NVME
                })
                .min_by_key(|f| (f.address.device(), f.address.function()))
                .map(|f| f.address)
        })
        .flatten();
    let isolation_groups = hierarchy
        .iter()
        .flat_map(|h| &h.isolation_groups)
        .map(|group| group.iter().filter_map(|&bdf| address(bdf)).collect())
        .collect();
    NodePci {
        functions,
        smmu,
        hypervisor_nvme,
        isolation_groups,
    }
}

/// Gives every slice the functions `given` names (docs/architecture.md, "Assigned
/// functions"): LPIs and an ITS mapping for each MSI-X vector, a device stage 2 (the slice's
/// RAM and the ITS page) in the SMMU under the slice's VMID, and the function reset with bus
/// mastering off. Device memory for the ITS tables comes from RAM outside `avoid`.
#[allow(clippy::too_many_arguments)]
fn setup_assigned(
    info: &mut BootInfo,
    placement: &place::Placement,
    plan: &microvisor_plan::CompiledPlan,
    given: &[Vec<PciAddress>],
    hierarchy: &Hierarchy,
    smmu: &NodeSmmu,
    lpis: &mut Option<Lpis>,
    avoid: &[Region],
) -> Result<Vec<Vec<AssignedDevice>>, String> {
    let host = info.inventory.pcie.ok_or("devices: no PCIe host bridge")?;
    let count = given.iter().map(Vec::len).sum::<usize>() as u64;
    let cores = node_cores(info, placement);
    let (table, virtual_lpis) = match (&lpis, info.its.as_ref()) {
        (None, Some(frames)) => (
            frames
                .device_table_bytes(its_device_ids(&host, hierarchy))
                .ok_or("devices: no ITS device table")?,
            frames.virtual_lpis(),
        ),
        _ => (0, false),
    };
    let pages = if lpis.is_some() {
        count
    } else {
        nvme::lpis::pages(cores.len() as u64, count, table, virtual_lpis)
    };
    let region = place_working_memory(&info.inventory.ram, avoid, 0, pages * 4096, 0x1_0000)
        .ok_or("devices: no RAM left for their interrupt tables")?;
    let claimed = memory::claim(region).map_err(|_| "devices: interrupt tables")?;
    let mut device_memory = DeviceMemory::new(claimed);
    if lpis.is_none() {
        let frames = info.its.take().ok_or(
            "devices: no GIC ITS for their MSIs (or its bring-up for NVMe failed: see above)",
        )?;
        let made = Lpis::new(&mut device_memory, frames, &cores, table);
        *lpis = Some(made.map_err(|e| format!("devices: {e}"))?);
    }
    let Some(lpis) = lpis.as_ref() else {
        return Err("devices: no LPIs".into());
    };
    let its = info
        .inventory
        .gic
        .its
        .ok_or("devices: no GIC ITS for their MSIs")?;
    let pci = info.pci.as_mut().ok_or("devices: no PCIe host bridge")?;
    // On a GICv4 node the functions' MSIs become their slices' vLPIs (decision 4).
    let direct = lpis.virtual_lpis() && gic::virtual_lpis();
    let mut all = Vec::new();
    for (index, (functions, slice)) in given.iter().zip(&placement.slices).enumerate() {
        let name = &plan.slices[index].name;
        let mut mine = Vec::new();
        for (i, address) in functions.iter().enumerate() {
            let fail = |what: String| format!("slice \"{name}\": device {address}: {what}");
            let bdf = Bdf::new(address.bus(), address.device(), address.function());
            let rid = bdf.requester_id();
            let stream = info
                .inventory
                .stream_id(rid)
                .ok_or_else(|| fail("the SMMU does not translate its requester ID".into()))?;
            let its_device = host
                .its_device_id(rid)
                .ok_or_else(|| fail("no ITS DeviceID for its requester ID".into()))?;
            let bars = hierarchy
                .placement
                .bars(bdf)
                .ok_or_else(|| fail("its BARs were not placed".into()))?;
            // A BAR left unplaced would still decode wherever it points once the function's
            // memory decoding is on (found in review): such a function is not assigned.
            if let Some(problem) = hierarchy.placement.problems.iter().find(|p| {
                matches!(p, PlacementProblem::NoRoomForBar(b, _) | PlacementProblem::MalformedBar(b, _) if *b == bdf)
            }) {
                return Err(fail(format!("{problem}")));
            }
            let vectors = microvisor_logic::pci::MsixCapability::find(pci.config(), bdf)
                .ok_or_else(|| fail("it has no MSI-X capability".into()))?
                .vectors;
            let first_lpi = if direct {
                0
            } else {
                lpis.allocate(vectors)
                    .ok_or_else(|| fail("no LPIs left for its vectors".into()))?
            };
            lpis.map_device(&mut device_memory, its_device, vectors)
                .map_err(|e| fail(format!("ITS: {e}")))?;
            let mut stage2 = DeviceStage2::new().map_err(|e| fail(format!("stage 2: {e:?}")))?;
            stage2
                .map_ram(GUEST_RAM_BASE, Region::new(slice.ram.base, slice.ram.size))
                .and_then(|()| stage2.map_msi_page(MSI_IOVA, its))
                .map_err(|e| fail(format!("stage 2: {e:?}")))?;
            // Two functions with one StreamID (a firmware `iommu-map-mask` can fold them)
            // would share one device stage 2: the second attach would silently move the first
            // function's DMA into this slice's RAM (found in review).
            if smmu.is_attached(stream) {
                return Err(fail(format!(
                    "its SMMU StreamID {stream:#x} is already another function's"
                )));
            }
            let vmid = (index + 1) as u16;
            smmu.attach(stream, vmid, stage2)
                .map_err(|e| fail(format!("SMMU: {e}")))?;
            let grant = Grant {
                pci,
                bdf,
                bars,
                first_lpi,
                its_device,
                stream,
                direct,
            };
            let device = assigned::assign((i + 1) as u8, grant).map_err(fail)?;
            let mac = device
                .mac
                .map(|m| format!(", mac {}", MacAddress(m)))
                .unwrap_or_default();
            hv!(
                "assigned: slice {name} {bdf} as 00:{:02x}.0, {vectors} MSI-X vectors, stream {stream:#x}{mac}",
                i + 1
            );
            mine.push(device);
        }
        all.push(mine);
    }
    Ok(all)
}

/// How many ITS DeviceIDs the device table must cover: those of every requester ID on the
/// buses the enumeration numbered.
fn its_device_ids(host: &microvisor_logic::inventory::PcieHost, hierarchy: &Hierarchy) -> u32 {
    let last = u16::from(hierarchy.highest_bus()) << 8 | 0xff;
    host.its_device_id(last)
        .map_or(1 << 16, |id| id.saturating_add(1))
}

/// The cores that take LPIs: every slice's and the boot core.
fn node_cores(info: &BootInfo, placement: &place::Placement) -> Vec<usize> {
    let mut cores: Vec<usize> = placement
        .slices
        .iter()
        .flat_map(|s| s.cores.iter().map(|&c| c as usize))
        .collect();
    cores.push(info.boot_core);
    cores
}

/// RAM the hypervisor's own tables must not take: firmware reservations, its image and
/// working memory, every slice's RAM (rounded as it is claimed).
fn taken_ram(info: &BootInfo, placement: &place::Placement) -> Vec<Region> {
    let mut avoid: Vec<Region> = info.inventory.reserved.iter().copied().collect();
    avoid.extend([info.image, info.working_memory]);
    avoid.extend(placement.staging.map(|s| Region::new(s.base, s.size)));
    avoid.extend(
        placement
            .slices
            .iter()
            .map(|s| Region::new(s.ram.base, s.ram.size.next_multiple_of(2 << 20))),
    );
    avoid
}

/// RAM that more device memory must not take: [`taken_ram`], the SMMU's tables and queues,
/// the NVMe controller's device memory.
fn device_memory_avoid(
    info: &BootInfo,
    placement: &place::Placement,
    smmu: Option<&NodeSmmu>,
    nvme_memory: Option<Region>,
) -> Vec<Region> {
    let mut avoid = taken_ram(info, placement);
    avoid.extend(smmu.map(|s| s.memory));
    avoid.extend(nvme_memory);
    avoid
}

/// The SMMUv3 in front of the PCIe bus, up before any function may do DMA (docs/architecture.md,
/// "SMMUv3"), with a stream table for the buses the kernel numbers.
fn setup_smmu(
    info: &mut BootInfo,
    placement: &place::Placement,
    hierarchy: Option<&Hierarchy>,
) -> Result<Option<NodeSmmu>, String> {
    let Some(frames) = info.smmu.take() else {
        return Ok(None);
    };
    let highest_bus = hierarchy.map_or(0, |h| h.highest_bus());
    let avoid = taken_ram(info, placement);
    NodeSmmu::bring_up(frames, &info.inventory, highest_bus, &avoid)
}

/// The unowned-stream test image (`microvisor_plan::image::UNOWNED_DMA_TEST`): the second
/// NVMe controller on the root bus, which nobody owns, is brought up as the hypervisor's own
/// is. Its stream's entry aborts every transaction, so it cannot even fetch its admin queue:
/// the bring-up must fail (with the stream in bypass it comes up).
fn unowned_dma_test(
    info: &mut BootInfo,
    placement: &place::Placement,
    hierarchy: Option<&mut Hierarchy>,
    smmu: Option<&NodeSmmu>,
    nvme_memory: Option<Region>,
) {
    let (Some(hierarchy), Some(host)) = (hierarchy, info.inventory.pcie) else {
        return hv!("test image: no PCIe hierarchy");
    };
    let avoid = device_memory_avoid(info, placement, smmu, nvme_memory);
    let claimed = place_working_memory(&info.inventory.ram, &avoid, 0, 0x1_0000, 0x1_0000)
        .and_then(|region| memory::claim(region).ok());
    let (Some(pci), Some(claimed)) = (info.pci.as_mut(), claimed) else {
        return hv!("test image: no PCIe host or no RAM left");
    };
    let Some(bdf) = microvisor_logic::pci::scan_bus(pci.config(), host.bus_start)
        .into_iter()
        .filter(|f| f.class == microvisor_logic::pci::CLASS_NVME)
        .nth(1)
        .map(|f| f.bdf)
    else {
        return hv!("test image: no second NVMe controller on the root bus");
    };
    let mut memory = DeviceMemory::new(claimed);
    let needs = microvisor_logic::nvme::host::QueueNeeds {
        pairs: 1,
        entries: 2,
    };
    let result =
        nvme::physical::bring_up_at(pci, bdf, &host, &mut hierarchy.windows, &mut memory, needs);
    match result {
        Ok(_) => hv!("test image: unowned nvme {bdf} came up: its DMA reached memory"),
        Err(e) => hv!("test image: unowned nvme {bdf} did not come up: {e}"),
    }
}

/// Device memory, ITS and LPI tables, then the controller and every slice's share of it.
/// The LPIs and the device memory's region are handed out as soon as they exist: a
/// controller that fails after them leaves them to the assigned functions (a dead disk took
/// the ITS with it, and every slice with a device the node's boot; found in review).
fn setup_nvme(
    info: &mut BootInfo,
    placement: &place::Placement,
    plan: &microvisor_plan::CompiledPlan,
    hierarchy: Option<&mut Hierarchy>,
    smmu: Option<&NodeSmmu>,
    lpis: &mut Option<Lpis>,
    memory_region: &mut Option<Region>,
) -> Result<(NodeDisk, Vec<Vec<HardwareQueue>>), DiskError> {
    let unusable = |why| DiskError::Controller(NvmeError::Unsupported(why));
    let mut avoid = device_memory_avoid(info, placement, smmu, None);
    let cores = node_cores(info, placement);
    let host = info.inventory.pcie.ok_or(unusable("no PCIe host bridge"))?;
    let hierarchy = hierarchy.ok_or(unusable("no PCIe host bridge"))?;
    let pci = info.pci.as_mut().ok_or(unusable("no PCIe host bridge"))?;
    let frames = info.its.as_ref().ok_or(unusable("no GIC ITS for MSIs"))?;
    let queues: u64 = plan
        .slices
        .iter()
        .filter_map(|s| s.nvme.as_ref())
        .map(|n| u64::from(n.queues))
        .sum();
    let table = frames
        .device_table_bytes(its_device_ids(&host, hierarchy))
        .ok_or(unusable("no ITS device table"))?;
    let disks = plan.slices.iter().filter(|s| s.nvme.is_some()).count() as u64;
    let bytes = nvme::device_memory_pages(
        queues,
        disks,
        cores.len() as u64,
        table,
        frames.virtual_lpis(),
    ) * 4096;
    let region = place_working_memory(&info.inventory.ram, &avoid, 0, bytes, 0x1_0000)
        .ok_or(unusable("no RAM left for NVMe queues and tables"))?;
    let claimed = memory::claim(region).map_err(|_| unusable("device memory"))?;
    *memory_region = Some(region);
    if let Some(smmu) = smmu {
        // The controller's DMA goes through the SMMU before it is enabled: to its device
        // memory, the slices' RAM its transfers land in, and the ITS page of its MSIs.
        let found = microvisor_logic::pci::scan_bus(pci.config(), host.bus_start)
            .into_iter()
            .find(|f| f.class == microvisor_logic::pci::CLASS_NVME);
        if let Some(stream) = found.and_then(|f| info.inventory.stream_id(f.bdf.requester_id())) {
            let mut reach = alloc::vec![region];
            reach.extend(
                placement
                    .slices
                    .iter()
                    .map(|s| Region::new(s.ram.base, s.ram.size)),
            );
            if let Err(e) = smmu.confine(stream, &reach, info.inventory.gic.its) {
                hv!("{e}");
                return Err(unusable("the SMMU did not take the controller's stream"));
            }
            hv!(
                "smmu: stream {stream:#x} (nvme {}): the hypervisor's controller, confined to its device memory and the slices' RAM",
                found
                    .map(|f| f.bdf)
                    .unwrap_or(microvisor_logic::pci::Bdf::new(0, 0, 0))
            );
        }
    }
    // The confinement test image: one page of RAM nobody has, for the controller to be aimed
    // at (`nvme::bring_up`).
    let confinement_test = (info.test_mark == NVME_CONFINEMENT_TEST)
        .then(|| {
            avoid.push(region);
            place_working_memory(&info.inventory.ram, &avoid, 0, 4096, 4096)
        })
        .flatten()
        .and_then(|page| memory::claim(page).ok())
        .map(|page| page.into_shared());
    let mut device_memory = DeviceMemory::new(claimed);
    let frames = info.its.take().ok_or(unusable("no GIC ITS for MSIs"))?;
    let lpis = lpis.insert(Lpis::new(&mut device_memory, frames, &cores, table)?);
    let tested = confinement_test.is_some();
    // The controller's BARs were placed with the rest of the hierarchy: it keeps them.
    let disk = nvme::bring_up(
        pci,
        &host,
        &mut hierarchy.windows,
        device_memory,
        plan,
        lpis,
        confinement_test,
    );
    if tested && let Some(smmu) = smmu {
        // The test's fault record, now: the SMMU's interrupt is not taken yet at this point
        // of the boot (and its pending state is cleared before it is).
        struct Booting;
        impl crate::smmu::SmmuEvents for Booting {}
        smmu.service(&Booting);
    }
    disk
}

fn nvme_report(disk: &NodeDisk) {
    let physical = disk.physical;
    let info = &physical.info;
    let block = 1u64 << info.lba_shift;
    hv!(
        "nvme {}: {} (serial {}), namespace 1: {} blocks of {} ({}), {} I/O queue pairs, device memory {} of {}",
        physical.bdf,
        info.model,
        info.serial,
        info.blocks,
        block,
        HumanSize(info.blocks * block),
        info.io_queues,
        HumanSize(disk.memory.used()),
        HumanSize(disk.memory.region().size),
    );
}

fn partition_table(node: &Node, info: &BootInfo) {
    for slice in &node.slices {
        let ram = slice.ram();
        let cores: Vec<u32> = slice.vcpus.iter().map(|v| v.core as u32).collect();
        hv!(
            "partition: slice {} cores {} ram {:#x}-{:#x} ({}) kernel {}",
            slice.name,
            format_cores(&cores),
            ram.base,
            ram.end(),
            HumanSize(ram.size),
            slice.kernel_label,
        );
        if let Some(disk) = &slice.disk {
            let share = disk.share;
            let block = 1u64 << disk.physical.info.lba_shift;
            hv!(
                "partition: slice {} nvme blocks {}-{} ({}) hardware queues {}-{}{}",
                slice.name,
                share.first_block,
                share.first_block + share.blocks - 1,
                HumanSize(share.blocks * block),
                share.first_queue,
                share.first_queue + share.queues - 1,
                if disk.direct_queues { " (direct)" } else { "" },
            );
        }
    }
    let stage2: usize = node.slices.iter().map(|s| s.memory.stage2.tables()).sum();
    let working = info.working_memory.size;
    let stacks = info.stacks.region();
    hv!(
        "footprint: {} (image {} at {:#x}, stage-1 tables {}, stacks {} for {} cores at {:#x}-{:#x} with unmapped guard pages, heap {} with {} used incl. {} stage-2 tables); bundle {}",
        HumanSize(info.hypervisor_size + working),
        HumanSize(info.hypervisor_size),
        info.image.base,
        HumanSize(info.stage1_bytes),
        HumanSize(stacks.size),
        info.stacks.cores(),
        stacks.base,
        stacks.end(),
        HumanSize(working - info.stage1_bytes - stacks.size),
        HumanSize((info.heap_used)() as u64),
        stage2,
        HumanSize(info.bundle.len() as u64),
    );
}

fn run(node: Node, info: &mut BootInfo) -> ! {
    let conduit = node.conduit;
    let halt = |what: core::fmt::Arguments<'_>| -> ! {
        hv!("error: {what}");
        hv!("halted: no slice was started");
        firmware::system_off(conduit)
    };
    let node = core_run::publish(node);
    let mut expected = 0;
    for core in node.used_cores().filter(|&c| c != info.boot_core) {
        let mpidr = info.inventory.cpus[core];
        if let Err(e) = smp::start_core(conduit, mpidr, core, secondary_main) {
            halt(format_args!(
                "core {core} (MPIDR {mpidr:#x}) did not start: {e:?}"
            ));
        }
        expected += 1;
    }
    // Each core says so with SEV; the boot core sleeps in WFE meanwhile.
    if !cpu::wait_for_event_until(Duration::from_secs(5), || {
        CORES_READY.load(Ordering::Acquire) >= expected
    }) {
        halt(format_args!(
            "only {} of {expected} cores came up",
            CORES_READY.load(Ordering::Acquire)
        ));
    }
    stage(&mut info.stages, "cores");
    if let Some(smmu) = &node.smmu {
        smmu.route_interrupts(info.inventory.cpus[info.boot_core]);
    }
    if let Some(lpis) = &node.lpis {
        if let Err(e) = lpis.enable_on_this_core(info.boot_core) {
            halt(format_args!("core {}: LPIs: {e}", info.boot_core));
        }
        let checked = lpis.check_direct_injection(info.boot_core);
        match checked {
            Ok(true) => hv!("gic: GICv4.0 ITS maps events to virtual LPIs (checked at boot)"),
            Ok(false) => {}
            Err(e) => hv!("gic: GICv4.0 direct injection check failed: {e}"),
        }
        for slice in node.slices.iter().filter(|s| s.direct_injection()) {
            if let Err(e) = checked {
                halt(format_args!(
                    "slice {}: its devices' interrupts need GICv4.0 direct injection, which failed its check: {e}",
                    slice.name
                ));
            }
            for vcpu in &slice.vcpus {
                if let Err(e) = lpis.map_vpe(vcpu.core) {
                    halt(format_args!(
                        "slice {}: vPE of core {}: {e}",
                        slice.name, vcpu.core
                    ));
                }
            }
        }
        for slice in &node.slices {
            if let Err(e) = route_disk_interrupts(lpis, slice) {
                halt(format_args!("slice {}: nvme interrupts: {e}", slice.name));
            }
            if let Err(e) = route_assigned_interrupts(lpis, slice) {
                halt(format_args!("slice {}: device interrupts: {e}", slice.name));
            }
        }
    }
    partition_table(node, info);
    node.console.start(&node.slices);
    // Every slice's vCPU 0 core scrubs its RAM, loads its images and starts it, all slices
    // in parallel; the last to finish prints the release line (`run::core_loop`). Handed
    // out first, then woken, so no core starts before every slice is handed out.
    for slice in &node.slices {
        slice.hand_first_start();
    }
    let handed = cpu::counter();
    info.stages.push(("handed", handed));
    node.boot.handed(handed);
    for slice in node
        .slices
        .iter()
        .filter(|s| s.vcpus[0].core != info.boot_core)
    {
        slice.wake_job_core();
    }
    let mut line = String::new();
    for (name, at) in &info.stages {
        let _ = write!(line, " {name}={at}");
    }
    hv!("boot stages (counter at the end of each):{line}");
    if let Some((slice, vcpu)) = node.assigned(info.boot_core) {
        virt::configure_core(slice.memory.stage2.vttbr(), vcpu.index);
    }
    core_run::watch_boot_guard(info.boot_guard);
    if info.test_mark == STACK_OVERFLOW_TEST {
        // Every slice started first (the boot core starts its own here), then the overflow.
        if let Some((slice, _)) = node.assigned(info.boot_core) {
            core_run::run_job(node, slice);
        }
        // The release line first: the core that finished the last start prints it after the
        // count reaches zero, so waiting for the count alone raced with it.
        let _ = cpu::wait_for_event_until(Duration::from_secs(5), || node.boot.reported());
        hv!(
            "test image: core {} overflows its hypervisor stack on purpose",
            info.boot_core
        );
        exceptions::run_on_fresh_stack(overflow_on_purpose)
    }
    if info.test_mark == DATA_EXECUTION_TEST {
        // Every slice started first, then a call into a heap page (W^X must stop it).
        if let Some((slice, _)) = node.assigned(info.boot_core) {
            core_run::run_job(node, slice);
        }
        let _ = cpu::wait_for_event_until(Duration::from_secs(5), || node.boot.reported());
        let mut words = alloc::boxed::Box::new([0u32; 16]);
        hv!(
            "test image: core {} calls into its heap on purpose",
            info.boot_core
        );
        cpu::call_data_for_test(&mut words);
        hv!("test image: a heap page was executed");
        cpu::halt()
    }
    exceptions::run_on_fresh_stack(core_run::core_loop)
}

/// The guard page test (`tests/tests/robustness.rs`): recurses on this core's hypervisor stack
/// until it runs into the guard page, which must stop the node with a clear report.
extern "C" fn overflow_on_purpose() -> ! {
    /// One 512-byte frame per call, kept live across the next call.
    #[inline(never)]
    fn descend(depth: u64) -> u64 {
        let frame = core::hint::black_box([depth; 64]);
        if core::hint::black_box(depth) == u64::MAX {
            return frame[0];
        }
        descend(depth + 1).wrapping_add(frame[63])
    }
    let depth = descend(0);
    hv!("test image: the stack never overflowed ({depth})");
    cpu::halt()
}

/// Routes each hardware queue's completion interrupt to the core of the vCPU that will most
/// likely handle it (queue i to vCPU i mod n, as Linux spreads queues over CPUs).
fn route_disk_interrupts(lpis: &Lpis, slice: &Slice) -> Result<(), NvmeError> {
    let Some(disk) = &slice.disk else {
        return Ok(());
    };
    let device = disk.physical.its_device;
    for (i, queue) in disk.queue_interrupts().iter().enumerate() {
        let core = slice.vcpus[i % slice.vcpus.len()].core;
        lpis.route(device, u32::from(queue.id), queue.lpi, core)?;
    }
    Ok(())
}

/// Routes each assigned function's vector `v` to the core of the slice's vCPU `v mod n`
/// (functions whose MSIs are vLPIs are routed by their slice's own vITS commands instead).
fn route_assigned_interrupts(lpis: &Lpis, slice: &Slice) -> Result<(), NvmeError> {
    let Some(pci) = &slice.pci else {
        return Ok(());
    };
    for function in pci.assigned().iter().filter(|f| !f.direct) {
        for vector in 0..function.vectors {
            let core = slice.vcpus[usize::from(vector) % slice.vcpus.len()].core;
            lpis.route(
                function.its_device,
                u32::from(vector),
                function.first_lpi + u32::from(vector),
                core,
            )?;
        }
    }
    Ok(())
}

/// Where secondary cores arrive, MMU on, on their own stack.
extern "C" fn secondary_main(core: usize) -> ! {
    exceptions::install_vectors();
    if let Err(e) = gic::init_core() {
        crate::output::fatal(format_args!("core {core}: GIC redistributor: {e}"));
        cpu::halt();
    }
    let node = core_run::node();
    if let Some(lpis) = &node.lpis
        && let Err(e) = lpis.enable_on_this_core(core)
    {
        crate::output::fatal(format_args!("core {core}: LPIs: {e}"));
        cpu::halt();
    }
    if let Some((slice, vcpu)) = node.assigned(core) {
        virt::configure_core(slice.memory.stage2.vttbr(), vcpu.index);
    }
    CORES_READY.fetch_add(1, Ordering::Release);
    cpu::send_event();
    core_run::core_loop()
}
