//! The slice's PCIe host bridge: its ECAM (bus 0) and its memory window, in which the
//! function's BAR is decoded where the guest placed it. Today the one function is the slice's
//! virtual NVMe controller (`crate::nvme::slice_disk`).

use alloc::sync::Arc;

use microvisor_logic::guest_dt::{DeviceNode, PcieHostNode, map};

use super::{Context, MmioDevice};
use crate::nvme::slice_disk::{Signals, SliceDisk};

/// How long a stopping slice waits for its NVMe commands in flight.
const DRAIN_TIMEOUT_MS: u64 = 5000;

/// The host bridge with its NVMe function.
pub struct PciHost {
    node: PcieHostNode,
    disk: Arc<SliceDisk>,
}

impl PciHost {
    pub fn new(disk: Arc<SliceDisk>) -> Self {
        Self {
            node: PcieHostNode,
            disk,
        }
    }
}

impl MmioDevice for PciHost {
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
        let mut signals = Signals::default();
        let value = match region {
            PcieHostNode::ECAM => Some(
                self.disk
                    .config_access(ctx.ram, offset, width, write, &mut signals),
            ),
            _ => self.disk.bar_access(
                ctx.ram,
                map::PCI_MMIO + offset,
                width,
                write,
                &mut signals,
            ),
        };
        ctx.gic.raise_spis(signals.spis());
        value
    }

    /// `event` is a hardware queue whose completions arrived.
    fn physical_interrupt(&self, ctx: &Context<'_>, event: u32) {
        let mut signals = Signals::default();
        if let Ok(queue) = u16::try_from(event) {
            self.disk.completions(ctx.ram, queue, &mut signals);
        }
        ctx.gic.raise_spis(signals.spis());
    }

    fn quiesce(&self, ctx: &Context<'_>) -> Result<(), &'static str> {
        // The device may still be writing the slice's RAM for commands it had in flight: wait
        // for them before anything reuses that RAM.
        self.disk
            .reset_and_drain(ctx.ram, DRAIN_TIMEOUT_MS)
            .then_some(())
            .ok_or("its NVMe commands did not drain")
    }
}
