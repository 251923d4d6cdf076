//! Physical interrupts taken at EL2 (HCR_EL2.IMO): the hypervisor's own SGI, the GIC
//! maintenance interrupt, the guests' virtual timer, and node console input.

use microvisor_arch::gic::{self, HYPERVISOR_SGI, MAINTENANCE_PPI, VIRTUAL_TIMER_PPI};
use microvisor_logic::exits::ExitCause;

use crate::console;
use crate::slice::{Slice, Vcpu};

/// What [`handle_pending`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Handled {
    /// Cause of the first interrupt, for the exit counters.
    pub first: Option<ExitCause>,
    /// The maintenance interrupt was taken and left active: its condition lasts until the list
    /// registers are synced, so the caller deactivates it after that (see [`finish_maintenance`]).
    pub maintenance: bool,
}

/// Acknowledges and handles every pending physical interrupt. `running` is the vCPU this core
/// is running, if it is running one (its timer interrupts are injected into it).
pub fn handle_pending(running: Option<(&Slice, &Vcpu)>) -> Handled {
    let mut handled = Handled::default();
    while let Some(intid) = gic::acknowledge() {
        let cause = match intid {
            HYPERVISOR_SGI => {
                gic::complete(intid);
                ExitCause::Kick
            }
            MAINTENANCE_PPI => {
                if running.is_some() {
                    gic::end_of_interrupt(intid);
                    handled.maintenance = true;
                } else {
                    gic::complete(intid);
                }
                ExitCause::Maintenance
            }
            VIRTUAL_TIMER_PPI => match running {
                Some((slice, vcpu)) => {
                    // Priority drop only: the guest's EOI of the virtual interrupt deactivates
                    // the physical one through the list register's HW bit.
                    gic::end_of_interrupt(intid);
                    slice.with_gic(|g| g.raise_hardware(vcpu.index, intid, intid));
                    ExitCause::Timer
                }
                None => {
                    gic::complete(intid);
                    ExitCause::Timer
                }
            },
            intid if intid >= gic::LPI_BASE => {
                gic::end_of_interrupt(intid);
                crate::nvme::interrupt(intid);
                ExitCause::NvmeInterrupt
            }
            intid if Some(intid) == console::input_intid() => {
                console::receive_input();
                gic::complete(intid);
                ExitCause::ConsoleInput
            }
            _ => {
                gic::complete(intid);
                ExitCause::OtherInterrupt
            }
        };
        handled.first.get_or_insert(cause);
    }
    handled
}

/// Deactivates the maintenance interrupt once the list registers no longer assert it.
pub fn finish_maintenance(handled: Handled) {
    if handled.maintenance {
        gic::deactivate(MAINTENANCE_PPI);
    }
}
