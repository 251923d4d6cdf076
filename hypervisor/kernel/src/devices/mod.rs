//! A slice's emulated devices and the MMIO bus that dispatches to them. Each device is one
//! [`MmioDevice`]: its description ([`DeviceNode`]) gives the ranges it decodes (the bus), the
//! SPIs it raises (the vGIC) and its device-tree node; adding a device is adding it to the
//! list a slice is built with.

pub mod assigned;
pub mod control;
pub mod gic;
pub mod gpio;
pub mod its;
pub mod pci;
pub mod uart;

use alloc::sync::Arc;
use alloc::vec::Vec;

use microvisor_arch::memory::SharedMemory;
use microvisor_logic::bus::{BusError, BusRegion, MmioBus};
use microvisor_logic::guest_dt::DeviceNode;

use crate::stage2::CpuStage2;
use crate::vcpu::ExitCounters;
use crate::vgic::SliceGic;

/// What a device may reach while it handles an access: the slice's vGIC (to raise
/// interrupts), its RAM (for DMA-like devices) and its stage 2 (to map assigned functions'
/// BAR pages).
pub struct Context<'a> {
    pub gic: &'a SliceGic,
    pub ram: &'a SharedMemory,
    pub stage2: &'a CpuStage2,
}

/// An emulated device of a slice. Every method may run on any of the slice's cores (or, for
/// physical interrupts, on any core of the node) concurrently: devices lock their own state.
pub trait MmioDevice: Send + Sync {
    /// What the device is in the slice's machine.
    fn node(&self) -> &dyn DeviceNode;

    /// A guest access at `offset` into the device's region `region` (an index into
    /// `node().regions()`): the value read (ignored for a write), or None if nothing answers
    /// there (the access is then outside the slice's devices).
    fn access(
        &self,
        ctx: &Context<'_>,
        region: usize,
        offset: u64,
        width: u8,
        write: Option<u64>,
    ) -> Option<u64>;

    /// A physical interrupt the device owns arrived (`event` as registered with it).
    fn physical_interrupt(&self, _ctx: &Context<'_>, _event: u32) {}

    /// The slice's run ended: stop everything that could still touch its RAM and flush what
    /// is buffered. Err names what could not be stopped (the slice then stays stopped).
    fn quiesce(&self, _ctx: &Context<'_>) -> Result<(), &'static str> {
        Ok(())
    }

    /// Before the slice's RAM is scrubbed and loaded for a run: Err names what an earlier run
    /// of the device may still write there (after waiting a bounded time for it), and the
    /// RAM must not be reused then.
    fn drained(&self, _ctx: &Context<'_>) -> Result<(), &'static str> {
        Ok(())
    }

    /// The slice starts again: back to the power-on state.
    fn reset(&self) {}
}

/// A slice's devices and its bus.
pub struct Devices {
    list: Vec<Arc<dyn MmioDevice>>,
    bus: MmioBus,
}

impl Devices {
    pub fn new(list: Vec<Arc<dyn MmioDevice>>) -> Result<Self, BusError> {
        let regions: Vec<Vec<BusRegion>> = list.iter().map(|d| d.node().regions()).collect();
        let bus = MmioBus::new(&regions)?;
        Ok(Self { list, bus })
    }

    /// The device descriptions, in order (for the device tree).
    pub fn nodes(&self) -> Vec<&dyn DeviceNode> {
        self.list.iter().map(|d| d.node()).collect()
    }

    /// The INTIDs of every SPI the devices raise.
    pub fn spis(&self) -> Vec<u32> {
        self.list.iter().flat_map(|d| d.node().spis()).collect()
    }

    /// Names of the MMIO exit counters, by slot.
    pub fn counters(&self) -> &[&'static str] {
        self.bus.counters()
    }

    /// A guest access to `ipa`: counted and dispatched. None if no device answers there.
    #[inline] // on an exit path: inlined even under the image's lower inline threshold
    pub fn access(
        &self,
        ctx: &Context<'_>,
        exits: &ExitCounters,
        ipa: u64,
        width: u8,
        write: Option<u64>,
    ) -> Option<u64> {
        let route = self.bus.route(ipa)?;
        let value = self.list[route.device].access(ctx, route.region, route.offset, width, write);
        if value.is_some() {
            exits.count_mmio(route.counter);
        }
        value
    }

    /// Device `device`'s physical interrupt `event`.
    pub fn physical_interrupt(&self, ctx: &Context<'_>, device: usize, event: u32) {
        if let Some(d) = self.list.get(device) {
            d.physical_interrupt(ctx, event);
        }
    }

    /// Quiesces every device (all of them, even after a failure); the first failure, if any.
    pub fn quiesce(&self, ctx: &Context<'_>) -> Result<(), &'static str> {
        let mut result = Ok(());
        for device in &self.list {
            let quiet = device.quiesce(ctx);
            result = result.and(quiet);
        }
        result
    }

    /// Whether every device is done with the slice's RAM ([`MmioDevice::drained`]).
    pub fn drained(&self, ctx: &Context<'_>) -> Result<(), &'static str> {
        self.list.iter().try_for_each(|device| device.drained(ctx))
    }

    /// Resets every device.
    pub fn reset(&self) {
        self.list.iter().for_each(|d| d.reset());
    }
}
