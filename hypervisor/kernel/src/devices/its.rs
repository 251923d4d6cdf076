//! The slice's virtual ITS frames on a GICv4 node (docs/decisions/0004-gicv4-virtual-its.md):
//! every access goes to the model (`microvisor_logic::vits`) inside the slice's vGIC state,
//! under its lock, with the slice's RAM as the memory the command queue and LPI tables are
//! read from. The physical GICv4.0 commands it asks for (assigned functions' vLPIs) are
//! issued on the node's ITS before the access returns.

use microvisor_arch::memory::SharedMemory;
use microvisor_logic::guest_dt::{DeviceNode, ItsNode};
use microvisor_logic::nvme::{GuestMemoryFault, Ipa};
use microvisor_logic::vgic::VcpuSet;
use microvisor_logic::vits::GuestMemory;
use microvisor_plan::layout::GUEST_RAM_BASE;

use super::{Context, MmioDevice};

/// The slice's RAM as the vITS reads it (the model has checked each extent lies inside it).
pub struct SliceRam<'a>(pub &'a SharedMemory);

impl GuestMemory for SliceRam<'_> {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault> {
        let offset = ipa.0.checked_sub(GUEST_RAM_BASE).ok_or(GuestMemoryFault)?;
        self.0.read(offset, buf).map_err(|_| GuestMemoryFault)
    }
}

/// The vITS's control and translation frames.
pub struct ItsFrames {
    node: ItsNode,
}

impl ItsFrames {
    pub fn new() -> Self {
        Self { node: ItsNode }
    }
}

impl MmioDevice for ItsFrames {
    fn node(&self) -> &dyn DeviceNode {
        &self.node
    }

    fn access(
        &self,
        ctx: &Context<'_>,
        _region: usize,
        offset: u64,
        width: u8,
        write: Option<u64>,
    ) -> Option<u64> {
        let memory = SliceRam(ctx.ram);
        let mut value = 0;
        ctx.gic.change(|gic| {
            let Some(its) = gic.its_mut() else {
                return VcpuSet::EMPTY;
            };
            let outcome = match write {
                Some(v) => its.write(offset, width, v, &memory),
                None => {
                    let (read, outcome) = its.read(offset, width, &memory);
                    value = read;
                    outcome
                }
            };
            // Assigned functions' translations reach the physical ITS before the access
            // returns (under the vGIC lock, so in the guest's command order): the guest's
            // SYNC completes only once the hardware has them.
            ctx.gic.issue(&outcome.host);
            gic.lpis_changed(outcome.kick)
        });
        Some(value)
    }
}
