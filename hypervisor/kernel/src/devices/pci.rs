//! The slice's PCIe host bridge: its ECAM (bus 0) and its memory window, in which the
//! functions' BARs are decoded where the guest placed them. Device 0 is the slice's virtual
//! NVMe controller (`crate::nvme::slice_disk`) when it has an NVMe share; its assigned
//! physical functions (`super::assigned`) follow from device 1, one device each.

use alloc::sync::Arc;
use alloc::vec::Vec;

use microvisor_logic::guest_dt::{DeviceNode, PcieHostNode, map};
use microvisor_logic::inventory::Region;

use super::assigned::AssignedDevice;
use super::{Context, MmioDevice};
use crate::nvme::slice_disk::{Signals, SliceDisk};

/// How long a stopping slice waits for its NVMe commands in flight.
const DRAIN_TIMEOUT_MS: u64 = 5000;

/// Physical interrupt events of assigned function `i`'s vector `v` are `(i + 1) << 16 | v`;
/// smaller events are the NVMe share's hardware queues.
pub const fn assigned_event(function: usize, vector: u16) -> u32 {
    ((function as u32 + 1) << 16) | vector as u32
}

// The NVMe function is in slot 0 of the slice's bus.
const _: () = assert!(PciHost::NVME_DEVICE_ID == PciHost::device_id(0));

/// The host bridge with its functions.
pub struct PciHost {
    node: PcieHostNode,
    disk: Option<Arc<SliceDisk>>,
    assigned: Vec<AssignedDevice>,
}

impl PciHost {
    /// The NVMe function's ITS DeviceID: its requester ID, 00:00.0.
    pub const NVME_DEVICE_ID: u32 = crate::nvme::FUNCTION_DEVICE_ID;

    /// The ITS DeviceID of the function in slot `slot` of the slice's bus: its requester ID,
    /// 00:slot.0.
    pub const fn device_id(slot: u8) -> u32 {
        (slot as u32) << 3
    }

    /// A host bridge whose MSIs go to the GIC's MBI SPIs, or with `its` to the vITS.
    pub fn new(disk: Option<Arc<SliceDisk>>, assigned: Vec<AssignedDevice>, its: bool) -> Self {
        Self {
            node: PcieHostNode { its },
            disk,
            assigned,
        }
    }

    /// The assigned functions, in slot order.
    pub fn assigned(&self) -> &[AssignedDevice] {
        &self.assigned
    }

    /// A configuration access at `offset` in the ECAM (bus 0).
    fn config(
        &self,
        ctx: &Context<'_>,
        offset: u64,
        width: u8,
        write: Option<u64>,
        signals: &mut Signals,
    ) -> u64 {
        let devfn = (offset >> 12) & 0xff;
        if offset >> 20 == 0 {
            if let Some(disk) = self.disk.as_ref().filter(|_| devfn == 0) {
                let value = disk.config_access(
                    (ctx.ram, ctx.stage2),
                    ctx.gic,
                    offset,
                    width,
                    write,
                    signals,
                );
                if write.is_some() {
                    self.keep_bars_apart(ctx);
                }
                return value;
            }
            if let Some(function) = self
                .assigned
                .iter()
                .find(|f| u64::from(f.slot) << 3 == devfn)
            {
                let value = function.config_access(ctx, (offset & 0xfff) as u16, width, write);
                if write.is_some() {
                    self.keep_bars_apart(ctx);
                }
                return value;
            }
        }
        // Nothing there: reads are all-ones, writes vanish.
        u64::MAX
    }

    /// After a configuration write (a BAR moved, decoding switched): each assigned function
    /// learns what the slice's other functions decode, so that none of its BARs is mapped
    /// over another's (the emulated NVMe function's BAR0 included, which a mapping would
    /// hide). Two BARs that overlap are both left unmapped; their accesses trap.
    fn keep_bars_apart(&self, ctx: &Context<'_>) {
        if self.assigned.is_empty() {
            return;
        }
        let nvme = self.disk.as_ref().and_then(|disk| disk.bar0_region());
        let decoded: Vec<Vec<Region>> = self.assigned.iter().map(|f| f.decoded_regions()).collect();
        for (i, function) in self.assigned.iter().enumerate() {
            let reserved: Vec<Region> = nvme
                .into_iter()
                .chain(
                    decoded
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .flat_map(|(_, regions)| regions.iter().copied()),
                )
                .collect();
            function.set_reserved(ctx, &reserved);
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
            PcieHostNode::ECAM => Some(self.config(ctx, offset, width, write, &mut signals)),
            _ => {
                let ipa = map::PCI_MMIO + offset;
                let disk = self.disk.as_ref().and_then(|disk| {
                    disk.bar_access(
                        (ctx.ram, ctx.stage2),
                        ctx.gic,
                        ipa,
                        width,
                        write,
                        &mut signals,
                    )
                });
                let claimed = disk.or_else(|| {
                    self.assigned
                        .iter()
                        .find_map(|f| f.window_access(ctx, ipa, width, write))
                });
                // Nothing decodes the address: as on a real host bridge (a master abort),
                // reads return all-ones and writes vanish (a guest moving BARs around sees
                // what hardware would show it).
                Some(claimed.unwrap_or(u64::MAX))
            }
        };
        ctx.gic.raise_spis(signals.spis());
        ctx.gic
            .its_messages(Self::NVME_DEVICE_ID, signals.its_events());
        value
    }

    /// `event` is a hardware queue whose completions arrived, or an assigned function's
    /// vector ([`assigned_event`]).
    fn physical_interrupt(&self, ctx: &Context<'_>, event: u32) {
        match (event >> 16) as usize {
            0 => {
                let mut signals = Signals::default();
                if let Some(disk) = &self.disk {
                    disk.completions((ctx.ram, ctx.stage2), ctx.gic, event as u16, &mut signals);
                }
                ctx.gic.raise_spis(signals.spis());
                ctx.gic
                    .its_messages(Self::NVME_DEVICE_ID, signals.its_events());
            }
            function => {
                if let Some(f) = self.assigned.get(function - 1) {
                    f.interrupt(ctx, event as u16);
                }
            }
        }
    }

    fn quiesce(&self, ctx: &Context<'_>) -> Result<(), &'static str> {
        // Assigned functions are reset (their DMA stops); the NVMe controller may still be
        // writing the slice's RAM for commands it had in flight: wait for them before
        // anything reuses that RAM. Every function is quiesced even after a failure.
        let mut result = Ok(());
        for function in &self.assigned {
            result = result.and(function.quiesce(ctx));
        }
        if let Some(disk) = &self.disk {
            let drained = disk.reset_and_drain((ctx.ram, ctx.stage2), ctx.gic, DRAIN_TIMEOUT_MS);
            result = result.and(
                drained
                    .then_some(())
                    .ok_or_else(|| undrained(disk, "its NVMe commands did not drain")),
            );
        }
        result
    }

    /// An assigned function that did not come back from the last run's reset is reset again
    /// (the start is refused while it still does not answer). A run that ended with NVMe
    /// commands still in the hardware (the drain timed out, the slice stayed stopped) must
    /// not have its RAM reloaded under them: wait again, and refuse the start if they are
    /// still there. Until 2026-12-04 the next start scrubbed
    /// and loaded the RAM while the old run's reads could still land in it (found in
    /// review).
    fn drained(&self, ctx: &Context<'_>) -> Result<(), &'static str> {
        for function in &self.assigned {
            function.drained(ctx)?;
        }
        match &self.disk {
            Some(disk) if !disk.is_quiescent() => {
                disk.reset_and_drain((ctx.ram, ctx.stage2), ctx.gic, DRAIN_TIMEOUT_MS);
                disk.is_quiescent().then_some(()).ok_or_else(|| {
                    undrained(
                        disk,
                        "NVMe commands of an earlier run or erase are still in the controller",
                    )
                })
            }
            _ => Ok(()),
        }
    }
}

/// Why `disk`'s commands stay in the controller: what its status register says when that
/// explains it (a dead controller was only ever "did not drain"; found in review), else
/// `otherwise`.
fn undrained(disk: &SliceDisk, otherwise: &'static str) -> &'static str {
    disk.physical.health().trouble().unwrap_or(otherwise)
}
