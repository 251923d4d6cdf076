//! The slice's GICv3 distributor and redistributors as MMIO: every access goes to the
//! emulated state (`microvisor_logic::vgic`) under the slice's vGIC lock. On a slice whose
//! vITS has assigned functions, a vCPU enabling its LPIs asks its core to make its vPE
//! resident (GICv4 direct injection).

use microvisor_logic::guest_dt::{DeviceNode, GicNode};
use microvisor_logic::vgic::{REDISTRIBUTOR_SIZE, VcpuSet};
use microvisor_logic::vits::VirtualIts;

use super::its::SliceRam;
use super::{Context, MmioDevice};

/// The vGIC's register frames.
pub struct GicRegisters {
    node: GicNode,
}

impl GicRegisters {
    pub fn new(node: GicNode) -> Self {
        Self { node }
    }
}

impl MmioDevice for GicRegisters {
    fn node(&self) -> &dyn DeviceNode {
        &self.node
    }

    fn access(
        &self,
        ctx: &Context<'_>,
        region: usize,
        offset: u64,
        width: u8,
        write: Option<u64>,
    ) -> Option<u64> {
        let mut value = 0;
        let mut resident = None;
        let vcpu = (offset / REDISTRIBUTOR_SIZE) as usize;
        let frame_offset = offset % REDISTRIBUTOR_SIZE;
        ctx.gic.change(|gic| match (region, write) {
            (GicNode::DISTRIBUTOR, Some(v)) => gic.distributor_write(offset, width, v),
            (GicNode::DISTRIBUTOR, None) => {
                value = gic.distributor_read(offset, width);
                VcpuSet::EMPTY
            }
            // LPI registers of a slice with a vITS: enabling LPIs reads its tables.
            (_, Some(v))
                if gic.has_its() && VirtualIts::owns_redistributor_register(frame_offset) =>
            {
                let kick = gic.its_mut().map_or(VcpuSet::EMPTY, |its| {
                    let outcome =
                        its.redistributor_write(vcpu, frame_offset, width, v, &SliceRam(ctx.ram));
                    resident = outcome.resident;
                    outcome.kick
                });
                gic.lpis_changed(kick)
            }
            (_, Some(v)) => gic.redistributor_write(vcpu, frame_offset, width, v),
            (_, None) => {
                value = gic.redistributor_read(vcpu, frame_offset, width);
                VcpuSet::EMPTY
            }
        });
        if let Some(residency) = resident {
            ctx.gic.request_residency(residency);
        }
        Some(value)
    }
}
