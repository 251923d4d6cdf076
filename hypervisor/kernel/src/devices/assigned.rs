//! A whole physical PCI function given to one slice (docs/architecture.md, "Assigned
//! functions"). What the slice sees (emulated configuration space, virtualized BARs and MSI-X)
//! is decided by `microvisor_logic::passthrough`; this module carries the decisions out on the
//! hardware: BAR pages mapped into or removed from the slice's stage 2, bus mastering, the
//! physical MSI-X entries (always aimed at the ITS through the SMMU, never where the guest
//! says), function-level resets, and the physical interrupts, which become the guest's MSIs
//! (on GICv4 nodes they never reach the hypervisor: the physical ITS delivers them as the
//! slice's vLPIs, see `crate::devices::its`).
//! The data path (the device's BAR pages and its DMA) involves no hypervisor code.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use microvisor_arch::cpu;
use microvisor_arch::pci::{FunctionConfig, Mmio};
use microvisor_logic::guest_dt::map;
use microvisor_logic::inventory::Region;
use microvisor_logic::passthrough::virtio::{self, NetRegisters};
use microvisor_logic::passthrough::{
    AssignedFunction, Assignment, BarRead, BarWrite, Capabilities, ConfigSnapshot, Effect,
    Interrupt, MsiTarget, Route,
};
use microvisor_logic::pci::reset::SavedFunction;
use microvisor_logic::pci::{self, Bdf, ConfigSpace, header};
use microvisor_logic::ratelimit::{LineBudget, Verdict};
use spin::Mutex;

use super::Context;
use crate::output;

/// The IOVA of the ITS's GITS_TRANSLATER page in an assigned function's device stage 2: the
/// last 64 KiB below guest RAM, where no slice device is (docs/architecture.md, "Assigned
/// functions").
pub const MSI_IOVA: u64 = 0x3fff_0000;
/// Offset of GITS_TRANSLATER in its 64 KiB frame's 4 KiB page (GICv3 §12.19.13: the frame
/// starts at ITS base + 0x1_0000, the register is at + 0x40).
const TRANSLATER_OFFSET: u64 = 0x40;
/// MSI-X table entry size and the Vector Control mask bit (PCIe Base 4.0 §7.7.2).
const MSIX_ENTRY: u64 = 16;
const VECTOR_MASKED: u32 = 1;

/// Where the function's MSI-X table is in its physical BARs.
#[derive(Clone, Copy, Debug)]
pub struct PhysicalMsix {
    /// Configuration-space offset of the MSI-X capability.
    pub capability: u16,
    /// Index into [`Physical::bars`] of the BAR holding the table, and the table's offset.
    pub bar: usize,
    pub offset: u64,
    pub vectors: u16,
}

/// The hardware side of an assigned function, fixed at boot.
pub struct Physical {
    pub bdf: Bdf,
    pub config: FunctionConfig,
    /// Each memory BAR: its register index, placement, and a grant of its registers.
    pub bars: Vec<(pci::PlacedBar, Mmio)>,
    /// What the hypervisor programmed (BARs, command, Device Control), put back after a
    /// reset.
    pub saved: SavedFunction,
    pub msix: Option<PhysicalMsix>,
    /// Budget of the function's `[hv]` lines a guest can cause (a BAR page that cannot be
    /// mapped is reported at every Memory Space toggle).
    pub lines: LineBudget,
}

impl Physical {
    fn command(&mut self, set: u32, clear: u32) {
        let bdf = self.bdf;
        // The upper half is Status, whose error bits clear on writing ones: write zeros there.
        let command = self.config.read(bdf, header::COMMAND) & 0xffff;
        self.config
            .write(bdf, header::COMMAND, (command | set) & !clear);
    }

    /// Bus mastering (DMA and MSI writes) on or off; memory decoding stays on (the slice
    /// reaches the BARs directly) and INTx off.
    fn bus_master(&mut self, on: bool) {
        let (set, clear) = if on {
            (header::BUS_MASTER, 0)
        } else {
            (0, header::BUS_MASTER)
        };
        self.command(set | header::MEMORY_SPACE | header::INTX_DISABLE, clear);
    }

    /// Programs MSI-X vector `vector`: aimed at the ITS through the SMMU, with EventID
    /// `event` and unmasked, or masked (None).
    fn program_vector(&self, vector: u16, event: Option<u32>) {
        let Some(msix) = self.msix else { return };
        if vector >= msix.vectors {
            return;
        }
        let Some((_, table)) = self.bars.get(msix.bar) else {
            return;
        };
        let entry = msix.offset + u64::from(vector) * MSIX_ENTRY;
        let address = MSI_IOVA + TRANSLATER_OFFSET;
        table.write32(entry + 12, VECTOR_MASKED);
        table.write32(entry, address as u32);
        table.write32(entry + 4, (address >> 32) as u32);
        table.write32(entry + 8, event.unwrap_or(u32::from(vector)));
        if event.is_some() {
            table.write32(entry + 12, 0);
        }
    }

    /// MSI-X enable and function mask (Message Control bits 15 and 14).
    fn msix_control(&mut self, enable: bool, function_mask: bool) {
        let Some(msix) = self.msix else { return };
        let bdf = self.bdf;
        let word = self.config.read(bdf, msix.capability);
        let control = (u32::from(enable) << 15 | u32::from(function_mask) << 14) << 16;
        self.config
            .write(bdf, msix.capability, (word & 0x3fff_ffff) | control);
    }

    /// Resets the function (FLR when it has one; otherwise only bus mastering and MSI-X go
    /// off) and programs it again as the hypervisor keeps it while assigned (see
    /// `microvisor_logic::passthrough`): BARs where they were placed, memory decoding on, INTx
    /// off, bus mastering off, MSI-X enabled with every vector masked. Returns false if the
    /// function did not come back from its reset.
    pub fn reset(&mut self) -> bool {
        self.bus_master(false);
        self.msix_control(false, true);
        let outcome = pci::flr(&mut self.config, &crate::pci::SystemCounter, self.bdf);
        if let Err(e) = outcome {
            output::hv(format_args!("assigned {}: reset: {e}", self.bdf));
        }
        self.saved.restore(&mut self.config, 0);
        self.bus_master(false);
        if let Some(msix) = self.msix {
            for vector in 0..msix.vectors {
                self.program_vector(vector, None);
            }
        }
        self.msix_control(true, false);
        outcome.is_ok()
    }

    /// The grant of the BAR with register index `index`.
    fn bar(&self, index: u8) -> Option<&Mmio> {
        self.bars
            .iter()
            .find(|(placed, _)| placed.bar.index == index)
            .map(|(_, mmio)| mmio)
    }

    /// The feature bits 0-63 a virtio function offers (virtio 1.1 §4.1.4.3), read through
    /// the common configuration where `registers` says (0 if its BAR is not granted). Needs
    /// memory decoding on (after [`Physical::reset`]); the slice's driver resets the device
    /// before it uses it.
    fn virtio_features(&self, registers: &NetRegisters) -> u64 {
        let Some(common) = self.bar(registers.common.bar) else {
            return 0;
        };
        let select = registers.common.at(virtio::common::DEVICE_FEATURE_SELECT);
        let feature = registers.common.at(virtio::common::DEVICE_FEATURE);
        let mut features = 0;
        for word in 0..2u32 {
            common.write32(select, word);
            features |= u64::from(common.read32(feature)) << (32 * word);
        }
        common.write32(select, 0);
        features
    }

    /// The MAC address a virtio-net function gives (virtio 1.1 §5.1.4), read from its BARs
    /// where `registers` says if `features` has VIRTIO_NET_F_MAC.
    fn virtio_mac(
        &self,
        registers: &NetRegisters,
        features: u64,
    ) -> Option<[u8; virtio::MAC_BYTES]> {
        let device = self.bar(registers.mac.bar)?;
        let mut mac = [0u8; virtio::MAC_BYTES];
        for (i, byte) in mac.iter_mut().enumerate() {
            *byte = device.read(registers.mac.at(i as u64), 1) as u8;
        }
        virtio::offered_mac(features as u32, mac)
    }

    /// The BAR grant covering CPU address `physical`, and the offset in it.
    fn bar_at(&self, physical: u64) -> Option<(&Mmio, u64)> {
        self.bars.iter().find_map(|(_, mmio)| {
            let region = mmio.region();
            region
                .contains(physical)
                .then(|| (mmio, physical - region.base))
        })
    }
}

/// A physical function assigned to a slice, on the slice's virtual bus.
pub struct AssignedDevice {
    /// The function's slot on the slice's bus (device number; function 0).
    pub slot: u8,
    pub bdf: Bdf,
    /// The LPI of MSI-X vector 0 (vector `v` is `first_lpi + v`; none when `direct`), and how
    /// many vectors.
    pub first_lpi: u32,
    pub vectors: u16,
    /// Its ITS DeviceID and SMMU StreamID.
    pub its_device: u32,
    pub stream: u32,
    /// Its MSIs are the slice's vLPIs, translated by the physical ITS as the slice's virtual
    /// ITS commands say (GICv4 direct injection); else the hypervisor's LPIs (`first_lpi`)
    /// become the slice's message-based SPIs.
    pub direct: bool,
    /// The MAC address of a virtio-net function that gives one (VIRTIO_NET_F_MAC), read at
    /// assignment; None for any other function.
    pub mac: Option<[u8; 6]>,
    /// Vendor ID (low half) and Device ID (high half), as config dword 0 reads.
    pub ids: u32,
    state: Mutex<(AssignedFunction, Physical)>,
    /// Its last reset failed (it did not come back): the next start resets it again first.
    lost: AtomicBool,
}

impl AssignedDevice {
    fn new(
        slot: u8,
        grant: &Grant<'_>,
        function: AssignedFunction,
        physical: Physical,
        mac: Option<[u8; 6]>,
    ) -> Self {
        Self {
            slot,
            bdf: physical.bdf,
            first_lpi: grant.first_lpi,
            its_device: grant.its_device,
            stream: grant.stream,
            direct: grant.direct,
            mac,
            ids: function.config_read(0, 4) as u32,
            vectors: physical.msix.map_or(0, |m| m.vectors),
            state: Mutex::new((function, physical)),
            lost: AtomicBool::new(false),
        }
    }

    /// The function's MAC address, when it is a virtio-net function that gives one
    /// ([`AssignedDevice::mac`]).
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac
    }

    /// A guest access to the function's configuration space.
    pub fn config_access(
        &self,
        ctx: &Context<'_>,
        offset: u16,
        width: u8,
        write: Option<u64>,
    ) -> u64 {
        let mut state = self.state.lock();
        let (function, physical) = &mut *state;
        match write {
            None => function.config_read(offset, width),
            Some(value) => {
                let effects = function.config_write(offset, width, value);
                apply(ctx, self.bdf, physical, effects);
                0
            }
        }
    }

    /// The guest ranges the function's BARs decode now.
    pub fn decoded_regions(&self) -> Vec<Region> {
        self.state.lock().0.decoded_regions()
    }

    /// Tells the function what the slice's other devices decode now: its BARs over any of
    /// it are not mapped (and unmapped if they were).
    pub fn set_reserved(&self, ctx: &Context<'_>, reserved: &[Region]) {
        let mut state = self.state.lock();
        let (function, physical) = &mut *state;
        let effects = function.set_reserved(reserved);
        apply(ctx, self.bdf, physical, effects);
    }

    /// A guest access at IPA `ipa` in the PCI window that trapped: inside one of this
    /// function's BARs (its MSI-X pages, a virtio function's common configuration page, or a
    /// BAR the guest placed where it cannot be mapped) or not this function's (None).
    pub fn window_access(
        &self,
        ctx: &Context<'_>,
        ipa: u64,
        width: u8,
        write: Option<u64>,
    ) -> Option<u64> {
        let mut state = self.state.lock();
        let (function, physical) = &mut *state;
        // A register in a trapped page that is not the MSI-X table or PBA: done on the
        // device as the guest asked (a virtio driver's feature acknowledgement possibly
        // completed, see `microvisor_logic::passthrough::virtio::AccessPlatformAck`).
        match write {
            None => match function.bar_read(ipa, width) {
                BarRead::Emulated(value) => Some(value),
                BarRead::Forward { physical: at } => {
                    let (mmio, offset) = physical.bar_at(at)?;
                    Some(mmio.read(offset, width))
                }
                BarRead::Pending {
                    physical: at,
                    held,
                    emulated,
                } => {
                    let (mmio, offset) = physical.bar_at(at)?;
                    Some(mmio.read(offset, width) & held | emulated)
                }
                BarRead::Unclaimed => None,
            },
            Some(value) => match function.bar_write(ipa, width, value) {
                BarWrite::Emulated(effects) => {
                    apply(ctx, self.bdf, physical, effects);
                    Some(0)
                }
                BarWrite::Forward {
                    physical: at,
                    value,
                } => {
                    let (mmio, offset) = physical.bar_at(at)?;
                    mmio.write(offset, width, value);
                    Some(0)
                }
                BarWrite::Unclaimed => None,
            },
        }
    }

    /// The function raised MSI-X vector `vector` (its LPI arrived).
    pub fn interrupt(&self, ctx: &Context<'_>, vector: u16) {
        let spi = match self.state.lock().0.interrupt(vector) {
            Interrupt::Deliver { spi } => spi,
            Interrupt::Pending | Interrupt::Dropped => return,
        };
        ctx.gic.raise_spis(&[spi]);
    }

    /// Stops the function touching anything (bus mastering off at once, e.g. after an SMMU
    /// fault): the slice's end resets it properly. Runs on the core that services the SMMU
    /// (which may run another slice), so it never waits: a function whose state is held is
    /// being reset (up to seconds of FLR) or configured, and the slice's end that follows the
    /// fault resets it anyway; meanwhile the SMMU keeps refusing what lies outside the
    /// slice. Until 2026-12-04 it waited for the lock, stalling that core for a whole FLR
    /// (found in review).
    pub fn stop_dma(&self) {
        if let Some(mut state) = self.state.try_lock() {
            state.1.bus_master(false);
        }
    }

    /// The slice's run ended: the function is reset (its DMA and MSIs stop, its state is
    /// gone), its BAR pages leave the slice's stage 2, and the guest's view returns to
    /// power-on.
    pub fn quiesce(&self, ctx: &Context<'_>) -> Result<(), &'static str> {
        let mut state = self.state.lock();
        let (function, physical) = &mut *state;
        let came_back = physical.reset();
        let effects = function.reset();
        apply(ctx, self.bdf, physical, effects);
        self.lost.store(!came_back, Ordering::Release);
        came_back.then_some(()).ok_or(NOT_BACK)
    }

    /// Before the slice's next start: a function whose last reset failed is reset again,
    /// and the start is refused while it still does not come back (its restored BARs and
    /// command register were written into a function that did not answer: it could come
    /// back later decoding nothing, or DMA from before its reset could still land; found in
    /// review).
    pub fn drained(&self, ctx: &Context<'_>) -> Result<(), &'static str> {
        if self.lost.load(Ordering::Acquire) {
            return self.quiesce(ctx);
        }
        Ok(())
    }
}

/// Why a slice with a function that did not come back from its reset stays stopped.
const NOT_BACK: &str = "an assigned function did not come back from its reset";

/// Carries out what the function's emulation decided.
fn apply(ctx: &Context<'_>, bdf: Bdf, physical: &mut Physical, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::BarMapped(mapping) => {
                for range in &mapping.direct {
                    if let Err(e) = ctx
                        .stage2
                        .map_device(range.guest, range.physical, range.size)
                        && let Verdict::Print { suppressed } = physical
                            .lines
                            .event(cpu::counter(), cpu::counter_frequency())
                    {
                        output::hv(format_args!(
                            "assigned {bdf}: BAR {} page {:#x} not mapped: {e:?}{}",
                            mapping.bar,
                            range.guest,
                            NotShown(suppressed)
                        ));
                    }
                }
            }
            Effect::BarUnmapped(mapping) => {
                for range in &mapping.direct {
                    let _ = ctx.stage2.unmap_device(range.guest, range.size);
                }
            }
            Effect::BusMaster(on) => physical.bus_master(on),
            // The hypervisor's own translation is EventID = vector; a vITS route names the
            // guest's EventID, which the physical ITS maps to the guest's vLPI.
            Effect::MsixRoute { vector, target } => physical.program_vector(
                vector,
                target.map(|route| match route {
                    Route::Spi(_) => u32::from(vector),
                    Route::Event(event) => event,
                }),
            ),
            Effect::Inject { spi, .. } => ctx.gic.raise_spis(&[spi]),
            Effect::FunctionLevelReset => {
                if !physical.reset() {
                    output::hv(format_args!(
                        "assigned {bdf}: did not come back from the reset its slice asked for"
                    ));
                }
            }
        }
    }
}

/// What boot hands [`assign`] for one function.
pub struct Grant<'a> {
    /// The node's host bridge, for the function's configuration and BAR grants.
    pub pci: &'a mut microvisor_arch::pci::PciHost,
    /// The function and its BARs as the hypervisor placed them.
    pub bdf: Bdf,
    pub bars: &'a [pci::PlacedBar],
    /// The LPI of its MSI-X vector 0 (one LPI per vector from there).
    pub first_lpi: u32,
    /// Its ITS DeviceID and SMMU StreamID.
    pub its_device: u32,
    pub stream: u32,
    /// Its slice has a virtual ITS and its MSIs are delivered directly (GICv4).
    pub direct: bool,
}

/// Why a function could not be given to its slice.
pub type AssignError = alloc::string::String;

/// GICD_SETSPI_NSR as the slice sees it: where its MSIs must be aimed.
const GUEST_DOORBELL: u64 = map::GICD + 0x40;

/// Takes `grant.bdf` for slot `slot` of a slice's virtual bus: its configuration space and
/// BARs become the slice's device's alone, its guest-visible state is built from what it
/// is, and it is reset (bus mastering off) before the slice can start. A virtio-net
/// function's features and MAC address are read then, through the BAR grants (the host
/// bridge's windows are identity mapped as Device memory at EL2, see
/// `microvisor_arch::pci::PciHost::new`).
pub fn assign(slot: u8, grant: Grant<'_>) -> Result<AssignedDevice, AssignError> {
    let bdf = grant.bdf;
    let fail = |what: &str| alloc::format!("{bdf}: {what}");
    let mut config = grant
        .pci
        .function(bdf)
        .map_err(|e| fail(&alloc::format!("configuration space: {e:?}")))?;
    let capability = pci::MsixCapability::find(&mut config, bdf);
    let mut bars = Vec::new();
    let mut msix = None;
    for placed in grant.bars {
        let mmio = grant
            .pci
            .grant(placed.cpu)
            .map_err(|e| fail(&alloc::format!("BAR {}: {e:?}", placed.bar.index)))?;
        if let Some(c) = capability.filter(|c| c.table_bar == placed.bar.index) {
            msix = Some(PhysicalMsix {
                capability: c.offset,
                bar: bars.len(),
                offset: c.table_offset,
                vectors: c.vectors,
            });
        }
        bars.push((*placed, mmio));
    }
    let snapshot = ConfigSnapshot::capture(&mut config, bdf);
    // The MSI-X capability the slice sees (the emulated list leaves out a capability that
    // overlaps another) must be the one whose table the hypervisor programs (the first in the
    // physical list): on a malformed device they could differ, and the table the hypervisor
    // programs would then sit in a page mapped straight into the slice (found in review).
    if Capabilities::find(&snapshot).msix != capability.map(|c| c.offset) {
        return Err(fail(
            "its capability list is malformed (the MSI-X capability a slice would see is not \
             the one the hypervisor programs)",
        ));
    }
    let net = NetRegisters::find(&snapshot, grant.bars);
    let saved = SavedFunction::save(&mut config, bdf);
    let mut physical = Physical {
        bdf,
        config,
        bars,
        saved,
        msix,
        lines: LineBudget::new(),
    };
    if !physical.reset() {
        return Err(fail("did not come back from its reset"));
    }
    let virtio_features = net.map_or(0, |registers| physical.virtio_features(&registers));
    let mac = net.and_then(|registers| physical.virtio_mac(&registers, virtio_features));
    let function = AssignedFunction::new(Assignment {
        bdf,
        snapshot,
        bars: grant.bars,
        windows: &[Region::new(map::PCI_MMIO, map::PCI_MMIO_SIZE)],
        msi: if grant.direct {
            MsiTarget::Its {
                doorbell: map::ITS_TRANSLATER,
                events: u32::from(msix.map_or(0, |m| m.vectors)),
            }
        } else {
            MsiTarget::Spis {
                doorbell: GUEST_DOORBELL,
                first_spi: map::MBI_FIRST,
                spi_count: map::MBI_COUNT,
            }
        },
        virtio_features,
    })
    .map_err(|e| fail(&alloc::format!("{e}")))?;
    Ok(AssignedDevice::new(slot, &grant, function, physical, mac))
}

/// ` (<n> more not shown)` after a rate-limited line, when lines were left out before it.
struct NotShown(u64);

impl core::fmt::Display for NotShown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more not shown)"),
        }
    }
}
