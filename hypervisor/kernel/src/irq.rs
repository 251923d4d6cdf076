//! Physical interrupts taken at EL2 (HCR_EL2.IMO): the hypervisor's own SGI, the GIC
//! maintenance interrupt and the guests' two EL1 timers on every core; everything else goes to
//! its owner in the node's table (node console input, a slice device's interrupts, the
//! SMMU's event and global error interrupts).

use microvisor_arch::gic::{
    self, HYPERVISOR_SGI, MAINTENANCE_PPI, PHYSICAL_TIMER_PPI, RESIDENCY_SGI, VIRTUAL_TIMER_PPI,
};
use microvisor_logic::exits::ExitCause;

use crate::node::{IrqOwner, Node};
use crate::slice::Slice;
use crate::vcpu::Vcpu;

/// What [`handle_pending`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Handled {
    /// Cause of the first interrupt, for the exit counters.
    pub first: Option<ExitCause>,
    /// The maintenance interrupt was taken and left active: its condition lasts until the list
    /// registers are synced, so the caller deactivates it after that (see [`finish_maintenance`]).
    pub maintenance: bool,
}

/// Most interrupts [`handle_pending`] takes in one call. Whatever is still pending stays
/// pending and is taken right after the caller returns to the guest (or to its run loop),
/// which checks the slice's attention flag first: a device raising interrupts faster than
/// they are handled (an assigned function the guest set up so) cannot keep the core at EL2
/// and its run from being stopped. Until 2026-12-04 the loop ran until nothing was pending
/// (found in review).
const MOST_PER_CALL: usize = 64;

/// Acknowledges and handles the pending physical interrupts, at most [`MOST_PER_CALL`].
/// `running` is the vCPU this core is running, if it is running one (its timer interrupts
/// are injected into it).
#[inline] // on an exit path: inlined even under the image's lower inline threshold
pub fn handle_pending(node: &Node, running: Option<(&Slice, &Vcpu)>) -> Handled {
    let mut handled = Handled::default();
    for _ in 0..MOST_PER_CALL {
        let Some(intid) = gic::acknowledge() else {
            break;
        };
        // The guest's timers and the kicks (IPIs between its vCPUs) are most of the
        // interrupts a running core takes: handled here, everything else out of line.
        let cause = match (intid, running) {
            (VIRTUAL_TIMER_PPI | PHYSICAL_TIMER_PPI, Some((slice, vcpu))) => {
                // Priority drop only: the guest's EOI of the virtual interrupt deactivates the
                // physical one through the list register's HW bit.
                gic::end_of_interrupt(intid);
                slice.gic.raise_own_hardware(vcpu.index, intid);
                ExitCause::Timer
            }
            (HYPERVISOR_SGI, _) => {
                // What it announces is in the vCPU's changed flag: the exit path's sync.
                gic::complete(intid);
                ExitCause::Kick
            }
            _ => other(node, running, intid, &mut handled),
        };
        handled.first.get_or_insert(cause);
    }
    handled
}

/// Every interrupt but a running vCPU's timer.
#[inline(never)]
fn other(
    node: &Node,
    running: Option<(&Slice, &Vcpu)>,
    intid: u32,
    handled: &mut Handled,
) -> ExitCause {
    match intid {
        MAINTENANCE_PPI => {
            if running.is_some() {
                gic::end_of_interrupt(intid);
                handled.maintenance = true;
            } else {
                gic::complete(intid);
            }
            ExitCause::Maintenance
        }
        VIRTUAL_TIMER_PPI | PHYSICAL_TIMER_PPI => {
            // No vCPU runs here (it stopped since): nothing to deliver it to.
            gic::complete(intid);
            ExitCause::Timer
        }
        RESIDENCY_SGI => {
            gic::complete(intid);
            // Only for the vCPU running here (this is its exit). A parked one (off, or powered
            // on and not yet entered) keeps the request for its start (`run::core_loop` takes
            // it): a vPE made resident on a parked core would outlive the slice's run, since
            // nothing stops a vCPU that is off, and the next run (perhaps a new tenant's)
            // would keep that vPE with this run's property table.
            if let Some((slice, vcpu)) = running {
                slice.gic.take_residency(vcpu.index);
            }
            ExitCause::Kick
        }
        _ => owned(node, intid),
    }
}

/// An interrupt with an owner in the node's table (or none: completed and counted).
fn owned(node: &Node, intid: u32) -> ExitCause {
    match node.owner(intid) {
        Some(IrqOwner::ConsoleInput) => {
            node.console.receive(&node.slices);
            gic::complete(intid);
            ExitCause::ConsoleInput
        }
        Some(IrqOwner::Device {
            slice,
            device,
            event,
        }) => {
            // LPIs have no active state: the priority drop ends them.
            if intid >= gic::LPI_BASE {
                gic::end_of_interrupt(intid);
            } else {
                gic::complete(intid);
            }
            if let Some(slice) = node.slices.get(slice) {
                slice
                    .devices
                    .physical_interrupt(&slice.context(), device, event);
            }
            ExitCause::DeviceInterrupt
        }
        Some(IrqOwner::Smmu) => {
            if let Some(smmu) = &node.smmu {
                smmu.service(node);
            }
            gic::complete(intid);
            ExitCause::OtherInterrupt
        }
        None => {
            gic::complete(intid);
            ExitCause::OtherInterrupt
        }
    }
}

/// Deactivates the maintenance interrupt once the list registers no longer assert it.
pub fn finish_maintenance(handled: Handled) {
    if handled.maintenance {
        gic::deactivate(MAINTENANCE_PPI);
    }
}
