//! Boot flow after `boot/` has the MMU and heap up (DESIGN §3): check the bundle, fit the plan
//! to the hardware, build every slice, start the cores, then start the slices. Any error
//! before the first slice starts prints one line and powers the node off: nothing starts
//! half-way.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use microvisor_arch::exceptions::{self, GuestFrame};
use microvisor_arch::{cpu, firmware, gic, smp, virt};
use microvisor_logic::inventory::{Conduit, Inventory, Region};
use microvisor_logic::memory_map::free_ram;
use microvisor_plan::bundle::Bundle;
use microvisor_plan::place::{self, Hardware, format_cores};
use microvisor_plan::size::HumanSize;

use crate::node::{self, Node};
use crate::slice::Slice;
use crate::{exits, hv};

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
    /// The hypervisor's working memory: early translation tables, then the heap.
    pub working_memory: Region,
    /// Bytes of early (stage-1) translation tables in use.
    pub stage1_bytes: u64,
    /// Bytes of heap used so far, when asked.
    pub heap_used: fn() -> usize,
    /// The PCIe host bridge, when the node has one.
    pub pci: Option<microvisor_arch::pci::PciHost>,
    /// The GIC's ITS, when the node has one.
    pub its: Option<microvisor_arch::its::ItsFrames>,
}

/// Cores that finished their EL2 setup.
static CORES_READY: AtomicUsize = AtomicUsize::new(0);

/// The boot core's path once `boot/` is done.
pub fn primary_main(info: BootInfo) -> ! {
    exceptions::set_handlers(exits::handlers());
    exceptions::install_vectors();
    banner(&info);
    let conduit = info.inventory.psci;
    match prepare(&info) {
        Ok(node) => run(node, &info),
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
    hv!(
        "microvisor {}: {} cores, {} RAM, GICv3 at {:#x}, PL011 at {:#x}, PSCI {:#x} via {conduit}",
        env!("CARGO_PKG_VERSION"),
        inv.cpus.len(),
        HumanSize(inv.ram_total()),
        inv.gic.distributor.base,
        inv.uart.registers.base,
        firmware::version(inv.psci),
    );
}

/// Everything that can fail, before anything starts.
fn prepare(info: &BootInfo) -> Result<Node, String> {
    let inv = &info.inventory;
    if inv.psci != Conduit::Smc {
        return Err(
            "the firmware's PSCI is not reachable by SMC from EL2 (device tree says hvc)".into(),
        );
    }
    gic::init_core().map_err(|e| format!("GIC: boot core: {e:?}"))?;
    let bundle = Bundle::parse(info.bundle).map_err(|e| format!("bundle: {e}"))?;
    for (index, entry) in bundle.images().iter().enumerate() {
        bundle.verify_image(index as u32).map_err(|e| {
            format!(
                "image {index} ({}) failed its SHA-256 check: {e}",
                entry.label
            )
        })?;
    }
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
    let bundle: &'static Bundle<'static> = alloc::boxed::Box::leak(alloc::boxed::Box::new(bundle));
    let slices = placement
        .slices
        .iter()
        .enumerate()
        .map(|(index, p)| Slice::new(index, bundle.plan(), p, inv, bundle))
        .collect::<Result<Vec<_>, _>>()?;
    for slice in &slices {
        slice.load()?;
    }
    Ok(Node::new(inv.psci, inv.cpus.len(), slices))
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
    }
    let stage2: usize = node.slices.iter().map(|s| s.memory.stage2_tables).sum();
    let working = info.working_memory.size;
    hv!(
        "footprint: {} (image {} at {:#x}, stage-1 tables {}, heap {} with {} used incl. stacks and {} stage-2 tables); bundle {}",
        HumanSize(info.hypervisor_size + working),
        HumanSize(info.hypervisor_size),
        info.image.base,
        HumanSize(info.stage1_bytes),
        HumanSize(working - info.stage1_bytes),
        HumanSize((info.heap_used)() as u64),
        stage2,
        HumanSize(info.bundle.len() as u64),
    );
}

fn run(node: Node, info: &BootInfo) -> ! {
    let conduit = node.conduit;
    let node = node::publish(node);
    let mut expected = 0;
    for core in node.used_cores().filter(|&c| c != info.boot_core) {
        let mpidr = info.inventory.cpus[core];
        if let Err(e) = smp::start_core(conduit, mpidr, core, secondary_main) {
            hv!("error: core {core} (MPIDR {mpidr:#x}) did not start: {e:?}");
            hv!("halted: no slice was started");
            firmware::system_off(conduit);
        }
        expected += 1;
    }
    let deadline = cpu::counter() + 5 * cpu::counter_frequency();
    while CORES_READY.load(Ordering::Acquire) < expected {
        if cpu::counter() > deadline {
            hv!(
                "error: only {} of {expected} cores came up",
                CORES_READY.load(Ordering::Acquire)
            );
            hv!("halted: no slice was started");
            firmware::system_off(conduit);
        }
        cpu::spin_hint();
    }
    partition_table(node, info);
    if let Some(intid) = info.inventory.uart.intid {
        crate::console::enable_input(intid);
    }
    for slice in &node.slices {
        match slice.start() {
            Ok(()) => hv!("slice {} started", slice.name),
            Err(e) => hv!("slice {} stopped: {e}", slice.name),
        }
    }
    match node.assigned(info.boot_core) {
        Some((slice, vcpu)) => {
            virt::configure_core(slice.memory.vttbr, vcpu.index);
            let frame = slice.wait_for_start(vcpu);
            exceptions::enter_guest(&frame)
        }
        None => idle(),
    }
}

/// A core with no vCPU: sleeps for good (serving only interrupts meant for the hypervisor).
fn idle() -> ! {
    loop {
        crate::irq::handle_pending(None);
        cpu::wait_for_interrupt();
    }
}

/// Where secondary cores arrive, MMU on, on their own stack.
extern "C" fn secondary_main(core: usize) -> ! {
    exceptions::install_vectors();
    if let Err(e) = gic::init_core() {
        crate::console::fatal(format_args!("core {core}: GIC redistributor: {e:?}"));
        cpu::halt();
    }
    let Some((slice, vcpu)) = node::get().and_then(|n| n.assigned(core)) else {
        CORES_READY.fetch_add(1, Ordering::Release);
        idle()
    };
    virt::configure_core(slice.memory.vttbr, vcpu.index);
    CORES_READY.fetch_add(1, Ordering::Release);
    let frame: GuestFrame = slice.wait_for_start(vcpu);
    exceptions::enter_guest(&frame)
}
