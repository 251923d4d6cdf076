//! Each core's life once the node is up: a core with a vCPU waits in its run loop until the
//! vCPU is powered on, enters the guest, and comes back to the loop on a fresh stack whenever
//! the vCPU stops (CPU_OFF, the end of the slice's run); a core without one idles. The node is
//! published here once, for the exception entry points to find.

use alloc::vec::Vec;
use microvisor_arch::exceptions::{self, GuestFrame};
use microvisor_arch::{cpu, smp, virt};
use microvisor_logic::inventory::Region;
use spin::Once;

use crate::irq;
use crate::node::Node;
use crate::output;
use crate::slice::{Attention, Ending, Slice};
use crate::vcpu::Vcpu;

static NODE: Once<Node> = Once::new();

/// What each physical core runs, by core index, looked up once at publication: the exit path
/// finds its slice and vCPU with one bounds-checked load.
static HERE: Once<Vec<Option<(&'static Slice, &'static Vcpu)>>> = Once::new();

/// Publishes the node (boot core, once, before any other core looks).
pub fn publish(node: Node) -> &'static Node {
    let node = NODE.call_once(|| node);
    HERE.call_once(|| (0..node.cores()).map(|core| node.assigned(core)).collect());
    if node.control.is_some() {
        crate::devices::control::serve(node);
    }
    node
}

/// The guard page below the boot stack (`boot/`), for the fatal report.
static BOOT_GUARD: Once<Region> = Once::new();

/// Records the boot stack's guard page (boot core, once).
pub fn watch_boot_guard(guard: Region) {
    BOOT_GUARD.call_once(|| guard);
}

/// The guard page of the stack `core` runs on that an EL2 exception with stack pointer `sp`
/// and fault address `far` ran into, if it is a stack overflow.
pub fn overflowed_guard(core: usize, sp: u64, far: Option<u64>) -> Option<Region> {
    let own = smp::stacks(core)
        .filter(|s| s.overflowed(sp, far))
        .map(|s| s.guard);
    let boot = BOOT_GUARD
        .get()
        .copied()
        .filter(|g| g.contains(sp) || far.is_some_and(|f| g.contains(f)));
    own.or(boot)
}

/// The node, once published (the fatal report powers it off through its conduit).
pub fn published() -> Option<&'static Node> {
    NODE.get()
}

/// The published node. Only entry points (exception handlers, a starting core) call this;
/// everything below them is handed what it needs.
#[inline] // on an exit path: inlined even under the image's lower inline threshold
pub fn node() -> &'static Node {
    match NODE.get() {
        Some(node) => node,
        None => {
            output::fatal(format_args!(
                "core {} entered the hypervisor before the node was published",
                cpu::core_index()
            ));
            cpu::halt()
        }
    }
}

/// The slice and vCPU the calling core runs, if any (and once the node is published).
pub fn here() -> Option<(&'static Slice, &'static Vcpu)> {
    *HERE.get()?.get(cpu::core_index())?
}

/// Stops `vcpu` (the calling core's, of `slice`) and returns to the run loop.
pub fn park(slice: &Slice, vcpu: &Vcpu) -> ! {
    slice.stop_vcpu_here(vcpu);
    back_to_loop()
}

/// Ends the slice's run from this core and goes back to the run loop. After a restart the
/// hypervisor's heap use is printed: `[hv] heap: <n> bytes in use, <t> stage-2 tables (slice
/// <s> run <r>)`, the same figures as the manager's `NODE` request and the footprint line, so
/// that `cargo xtask soak` sees any growth with the restarts (docs/soak.md).
pub fn end_run(slice: &Slice, vcpu: &Vcpu, ending: Ending) -> ! {
    if let Some(run) = slice.end(vcpu, ending) {
        let node = node();
        let tables: usize = node.slices.iter().map(|s| s.memory.stage2.tables()).sum();
        output::hv(format_args!(
            "heap: {} bytes in use, {tables} stage-2 tables (slice {} run {run})",
            (node.footprint.heap_used)(),
            slice.name
        ));
    }
    back_to_loop()
}

/// Returns to this core's run loop, abandoning its stack (the vCPU's power state is left as
/// it is: a restarted slice's vCPU 0 may already be ON_PENDING here).
pub fn back_to_loop() -> ! {
    exceptions::run_on_fresh_stack(core_loop)
}

/// A core's run loop, entered on an empty stack: wait until the core's vCPU is powered on,
/// then enter the guest (which returns here only through [`park`]). Cores without a vCPU
/// serve interrupts meant for the hypervisor and sleep.
pub extern "C" fn core_loop() -> ! {
    let node = node();
    let Some((slice, vcpu)) = node.assigned(cpu::core_index()) else {
        loop {
            irq::handle_pending(node, None);
            cpu::wait_for_interrupt();
        }
    };
    virt::reset_el1();
    slice.gic.quiesce(vcpu.index);
    loop {
        irq::handle_pending(node, None);
        if vcpu.index == 0 {
            run_job(node, slice);
        }
        // A run asked to end (the manager, a fault policy, a shutdown deadline) whose vCPUs
        // have all turned themselves off (PSCI CPU_OFF) has no exit left to take the
        // request: a parked core takes it (the request's SGI woke it). Before, such a slice
        // could never be stopped or handed on, and its devices ran on.
        if slice.needs_attention()
            && let Attention::End(ending) = slice.attention()
        {
            end_run(slice, vcpu, ending);
        }
        if let Some((entry, context)) = vcpu.take_pending_on() {
            // Whatever happened while parked (a timer interrupt of the last run) is dropped.
            virt::reset_el1();
            slice.gic.quiesce(vcpu.index);
            slice.gic.take_residency(vcpu.index);
            slice.gic.sync(vcpu.index);
            exceptions::enter_guest(&GuestFrame::entry(entry, context));
        }
        cpu::wait_for_interrupt();
    }
}

/// Runs the job posted for `slice` (the calling core is its vCPU 0's, the slice is stopped):
/// its first start at boot, or what the manager asked for (start, erase). The core that
/// finishes the last first start prints the boot's release line and sends an event.
pub fn run_job(node: &Node, slice: &Slice) {
    if let Some(ticks) = slice.run_job()
        && let Some(released) = node.boot.started(ticks)
    {
        // Boot cost for `cargo xtask bench`: under QEMU `-icount shift=0` the counter is the
        // number of instructions every core has executed since reset.
        output::hv(format_args!(
            "boot: {} slices released at counter {} (handed to their cores at {}, slowest start {} ticks)",
            node.slices.len(),
            cpu::counter(),
            released.handed_at,
            released.slowest,
        ));
        node.boot.report_printed();
        cpu::send_event();
    }
}
