//! A physical PCI function assigned to a slice, as the slice sees it (docs/architecture.md,
//! "Assigned functions: what the slice sees"; PCI Local Bus 3.0 §6, PCIe Base 4.0 §7).
//!
//! The kernel owns the physical function: it placed its BARs, reads its configuration space
//! once ([`ConfigSnapshot`]) and builds an [`AssignedFunction`]. From then on every guest
//! access to the function's configuration space and every access that traps inside one of
//! its BARs goes through this value, which answers and returns [`Effect`]s for the kernel to
//! apply (stage-2 mappings, bus mastering, physical MSI-X entries, function level reset).
//! Nothing here touches the device.
//!
//! What the slice sees in configuration space:
//! - **Header**: the real Vendor/Device ID, Revision, Class Code and Subsystem IDs. BARs are
//!   virtual registers the guest sizes and programs (all-ones reads back the size mask with
//!   the real type and prefetchable bits; a 64-bit BAR is a register pair); a BAR smaller
//!   than a page is shown as one page. Command keeps only Memory Space, Bus Master and
//!   Interrupt Disable: Memory Space decides whether the BARs are mapped, Bus Master is
//!   passed to the device ([`Effect::BusMaster`]); I/O Space reads 0 (no I/O BARs are
//!   offered), SERR# and Parity Error Response are ignored. Physically INTx stays disabled,
//!   I/O decoding off and memory decoding on while the function is assigned. Status shows
//!   only Capabilities List. The Expansion ROM BAR, Interrupt Line and Interrupt Pin read 0
//!   (no ROM, no INTx), the header type never has the multi-function bit.
//! - **Capabilities**, relinked in their physical order at their physical offsets: MSI-X
//!   (virtualized: Enable and Function Mask are the guest's, the table and PBA are emulated),
//!   PCI Express (read-only, except Initiate Function Level Reset, which becomes
//!   [`Effect::FunctionLevelReset`] when the function advertises FLR), Power Management
//!   (read-only: the function stays in D0) and vendor-specific capabilities (read-only: virtio
//!   keeps the location of its structures in them). Everything else is hidden: MSI (only
//!   MSI-X is offered, so every interrupt goes through the emulated table) and any capability
//!   the hypervisor does not know.
//! - **Extended configuration space** (0x100-0xfff) reads as an empty list (all zero, PCIe
//!   Base 4.0 §7.6.3): SR-IOV (could create functions with their own requester IDs), ATS and
//!   PRI (the device would translate addresses itself and bypass the SMMU's stage 2), PASID,
//!   Resizable BAR (would change BAR sizes under the hypervisor's placement), ACS, AER, and
//!   vendor-specific extended capabilities (unknown side effects) are never shown.
//!
//! Configuration accesses must be 1, 2 or 4 bytes, naturally aligned: anything else reads
//! all-ones and writes nothing; offsets past 4 KiB read 0 and ignore writes.
//!
//! BARs: when Memory Space is on and a BAR lies wholly inside one of the slice's PCI memory
//! windows without overlapping another BAR of the function or a range another device of the
//! slice decodes ([`AssignedFunction::set_reserved`]), it is mapped ([`Effect::BarMapped`]):
//! every page straight into stage 2 except the pages holding the MSI-X table and PBA, which
//! stay unmapped so that accesses there trap to [`AssignedFunction::bar_read`] and
//! [`AssignedFunction::bar_write`]. Other offsets of those pages are forwarded to the device
//! ([`BarRead::Forward`]). A modern virtio-net function that offers VIRTIO_F_ACCESS_PLATFORM
//! also has the page holding its `driver_feature_select` and `driver_feature` registers
//! trapped: accesses there are forwarded too, and writes of `driver_feature` acknowledge the
//! feature on the driver's behalf ([`virtio::AccessPlatformAck`]; the other virtio pages,
//! notifications included, stay direct). A BAR placed anywhere else (over RAM, outside the windows, over
//! another BAR) is simply not mapped: over RAM the guest keeps seeing its RAM; inside a window
//! the host bridge answers the range like a real one answers an address nobody claims (reads
//! all-ones, writes dropped, [`BarRead::Unclaimed`]); elsewhere the access is an unhandled
//! exit and the slice's fault policy applies.
//!
//! MSI-X: the guest's table is emulated ([`crate::msix::MsixTable`]). An entry aimed at the
//! slice's MSI target ([`MsiTarget`]) is routed ([`Effect::MsixRoute`]); any other entry is
//! never programmed physically. Guest writes to the PBA are ignored.
//! - **Message-based SPIs** (GICv3 nodes): an entry whose address is the slice's doorbell and
//!   whose data is an SPI the slice owns routes to that SPI ([`Route::Spi`]): the kernel
//!   programs the physical entry with its own ITS translation and unmasks it. Masking is
//!   virtual: a routed vector stays unmasked physically, so an interrupt for a vector the
//!   guest masked reaches the hypervisor ([`AssignedFunction::interrupt`]) and sets the
//!   guest's pending bit, and unmasking delivers it once ([`Effect::Inject`]).
//! - **The slice's virtual ITS** (GICv4 nodes, direct injection): an entry whose address is
//!   the vITS doorbell and whose data is an EventID below the function's vector count routes
//!   to that EventID ([`Route::Event`]): the kernel programs the physical entry with the ITS
//!   address and that EventID, which the physical ITS translates into the vLPI the guest's
//!   own vITS commands mapped. The hypervisor never sees these interrupts, so masking is
//!   physical: the route exists only while the entry is unmasked, MSI-X is enabled and the
//!   function is not masked (the device keeps a masked vector's message pending itself, and
//!   the guest's PBA reads the device's bit for it: [`BarRead::Pending`]).
//!
//! The physical state the kernel keeps while the function is assigned: BARs where the
//! hypervisor placed them, Memory Space on, I/O Space off, INTx disabled, Bus Master as the
//! last [`Effect::BusMaster`] said (off at assignment), MSI-X Enable on and Function Mask off,
//! every entry masked unless [`Effect::MsixRoute`] routed it. Configuration reads are
//! answered from the snapshot and the virtual registers alone: the device is never read on
//! the guest's behalf (a read can have side effects, e.g. virtio's PCI configuration access
//! window).

mod bars;
mod snapshot;
pub mod virtio;

#[cfg(test)]
mod tests;

use alloc::vec::Vec;

use crate::inventory::Region;
use crate::msix::{MsiMessage, MsixTable, Signal};
use crate::pci::{Bdf, PlacedBar};

use bars::VirtualBar;
pub use bars::{BarMapping, DirectRange, PAGE_SIZE};
pub use snapshot::{CONFIG_SIZE, Capabilities, ConfigSnapshot, VisibleCapability, id};
use virtio::{AccessPlatformAck, NetRegisters};

/// Command register bits the guest may set (Memory Space, Bus Master, Interrupt Disable).
const COMMAND_WRITABLE: u16 = 0x0406;
const COMMAND_MEMORY: u16 = 1 << 1;
const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Status: Capabilities List.
const STATUS_CAPABILITIES: u16 = 1 << 4;
/// MSI-X Message Control: Enable and Function Mask (PCIe Base 4.0 §7.7.2.2).
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// PCI Express capability: Device Capabilities and Device Control (PCIe Base 4.0 §7.5.3.3-4).
const DEVICE_CAPABILITIES: u16 = 4;
const DEVICE_CONTROL: u16 = 8;
const FLR_CAPABLE: u32 = 1 << 28;
const INITIATE_FLR: u32 = 1 << 15;

/// Where the slice's MSIs must aim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiTarget {
    /// The GICv3 distributor's SETSPI_NSR register as the slice sees it, with data = one of the
    /// slice's message-based SPIs.
    Spis {
        /// Guest-physical address of the doorbell (GICD_SETSPI_NSR).
        doorbell: u64,
        /// First SPI (INTID) the slice's devices may signal.
        first_spi: u32,
        /// SPIs from `first_spi` on.
        spi_count: u32,
    },
    /// The slice's virtual ITS (GICv4 nodes): its GITS_TRANSLATER, with data = an EventID
    /// below `events`, delivered by the physical ITS as the vLPI the guest mapped it to.
    Its {
        /// Guest-physical address of the vITS's GITS_TRANSLATER.
        doorbell: u64,
        /// EventIDs the function may use (its MSI-X vector count).
        events: u32,
    },
}

impl MsiTarget {
    /// The SPI a message with `address` and `data` raises, if it is one of the slice's
    /// message-based SPIs.
    pub fn spi(&self, address: u64, data: u32) -> Option<u32> {
        match *self {
            MsiTarget::Spis {
                doorbell,
                first_spi,
                spi_count,
            } => {
                let ours = data.checked_sub(first_spi).is_some_and(|i| i < spi_count);
                (address == doorbell && ours).then_some(data)
            }
            MsiTarget::Its { .. } => None,
        }
    }

    /// Where a message with `address` and `data` goes, if it reaches the slice's interrupt
    /// controller.
    pub fn route(&self, address: u64, data: u32) -> Option<Route> {
        match *self {
            MsiTarget::Spis { .. } => self.spi(address, data).map(Route::Spi),
            MsiTarget::Its { doorbell, events } => {
                (address == doorbell && data < events).then_some(Route::Event(data))
            }
        }
    }

    /// Whether it is well formed: SPIs inside 32..1020, a 4-byte aligned doorbell.
    fn is_valid(&self) -> bool {
        match *self {
            MsiTarget::Spis {
                doorbell,
                first_spi,
                spi_count,
            } => {
                spi_count > 0
                    && first_spi >= 32
                    && first_spi
                        .checked_add(spi_count)
                        .is_some_and(|end| end <= 1020)
                    && doorbell.is_multiple_of(4)
            }
            MsiTarget::Its { doorbell, .. } => doorbell.is_multiple_of(4),
        }
    }
}

/// Where a routed MSI-X vector's messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The slice's message-based SPI: the hypervisor takes the physical interrupt and
    /// injects it.
    Spi(u32),
    /// This EventID of the function, which the physical ITS delivers as a vLPI (no exit).
    Event(u32),
}

/// Everything an assigned function is made from.
#[derive(Clone, Debug)]
pub struct Assignment<'a> {
    /// The function on the node.
    pub bdf: Bdf,
    /// Its configuration space, read once after its BARs were placed.
    pub snapshot: ConfigSnapshot,
    /// Its memory BARs where the hypervisor placed them (`pci::place_bars`).
    pub bars: &'a [PlacedBar],
    /// The slice's PCI memory windows (guest-physical): the only places BARs are mapped.
    pub windows: &'a [Region],
    /// Where the slice's MSIs go.
    pub msi: MsiTarget,
    /// The feature bits a virtio function offers (`device_feature` words 0 and 1, read at
    /// assignment); 0 for any other function.
    pub virtio_features: u64,
}

/// Why a function cannot be assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignError {
    /// Vendor ID 0xffff or 0: nothing answers at the function's address.
    NoFunction,
    /// Not a type-0 header (bridges are not assigned).
    NotAnEndpoint { header_type: u8 },
    /// No MSI-X capability: the slice could get no interrupts (INTx and MSI are not offered).
    NoMsix,
    /// The MSI-X table or PBA is in a BAR that was not placed, or runs past its end.
    MsixOutsideBar { bir: u8 },
    /// A placed BAR is malformed: register index past 5, size not a power of two of at least
    /// 16 bytes, a 32-bit BAR of 4 GiB or more, a CPU range of another size or wrapping, or
    /// two BARs on one register.
    BadBar { index: u8 },
    /// The slice has no PCI memory window.
    NoWindow,
    /// A window is empty, not page aligned or wraps.
    BadWindow { base: u64 },
    /// The MSI target has no SPIs, SPIs outside 32-1019, or a doorbell not 4-byte aligned.
    BadMsiTarget,
}

impl core::fmt::Display for AssignError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoFunction => write!(f, "no function answers there"),
            Self::NotAnEndpoint { header_type } => {
                write!(f, "header type {header_type:#x} is not an endpoint")
            }
            Self::NoMsix => write!(f, "the function has no MSI-X capability"),
            Self::MsixOutsideBar { bir } => {
                write!(f, "its MSI-X table or PBA lies outside BAR {bir}")
            }
            Self::BadBar { index } => write!(f, "BAR {index} is malformed"),
            Self::NoWindow => write!(f, "the slice has no PCI memory window"),
            Self::BadWindow { base } => {
                write!(
                    f,
                    "PCI memory window at {base:#x} is empty, unaligned or wraps"
                )
            }
            Self::BadMsiTarget => write!(f, "the slice's MSI target is malformed"),
        }
    }
}

/// Something the kernel must do for the slice's view of the function to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Map the mapping's direct ranges into the slice's stage 2 and route accesses to its
    /// trapped ranges to `bar_read`/`bar_write`.
    BarMapped(BarMapping),
    /// Remove a mapping made by an earlier `BarMapped` (the same value), TLBs included.
    BarUnmapped(BarMapping),
    /// Set the physical Command register's Bus Master Enable (memory decoding stays on,
    /// I/O decoding off, INTx disabled).
    BusMaster(bool),
    /// MSI-X vector `vector` is routed or not (`None`: mask the physical entry). A
    /// [`Route::Spi`]: program the physical entry with the hypervisor's own ITS translation
    /// and unmask it (masking by the guest is not a reason for `None`: it is done
    /// virtually). A [`Route::Event`]: program it with that EventID at the ITS and unmask it.
    MsixRoute { vector: u16, target: Option<Route> },
    /// Raise SPI `spi` in the slice's vGIC: vector `vector` was pending and the guest
    /// unmasked it.
    Inject { vector: u16, spi: u32 },
    /// The guest initiated a function level reset: perform it on the device (after the
    /// effects before it), then restore the hypervisor's placement of its BARs, memory
    /// decoding on, INTx disabled, bus mastering off, MSI-X enabled with every entry masked.
    FunctionLevelReset,
}

/// The answer to a guest read that trapped inside the function's BARs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarRead {
    /// The value read (MSI-X table, PBA, padding past a small BAR, or all-ones for a
    /// misaligned or odd-width access).
    Emulated(u64),
    /// Read the same width at this host-physical address and return it.
    Forward { physical: u64 },
    /// A PBA read on the vITS path: read the same width at `physical` (the device's own PBA)
    /// and return `(value & held) | emulated`. `held` are the bits of the vectors the guest
    /// masked: their physical entries are masked too, so the device keeps their messages
    /// pending itself (PCIe Base §6.1.4.5) and sends them when the route comes back.
    Pending {
        physical: u64,
        held: u64,
        emulated: u64,
    },
    /// No mapped BAR of the function holds the address.
    Unclaimed,
}

/// The answer to a guest write that trapped inside the function's BARs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BarWrite {
    /// Handled here (possibly ignored); the effects to apply.
    Emulated(Vec<Effect>),
    /// Write the same width at this host-physical address: `value` is the guest's, except
    /// for the feature acknowledged on its behalf ([`virtio::AccessPlatformAck`]).
    Forward { physical: u64, value: u64 },
    /// No mapped BAR of the function holds the address.
    Unclaimed,
}

/// What to do with a physical interrupt of one of the function's vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// Raise this SPI in the slice's vGIC.
    Deliver { spi: u32 },
    /// The guest masked the vector: its pending bit is set, delivery waits for the unmask.
    Pending,
    /// MSI-X is disabled, the vector does not exist, or its entry aims elsewhere.
    Dropped,
}

/// Where the MSI-X table and PBA are: BAR (index into the function's BARs) and offset.
#[derive(Clone, Copy, Debug)]
struct MsixLayout {
    capability: u16,
    table_bar: usize,
    table_offset: u64,
    pba_bar: usize,
    pba_offset: u64,
}

/// A physical function as one slice sees it.
#[derive(Clone, Debug)]
pub struct AssignedFunction {
    bdf: Bdf,
    snapshot: ConfigSnapshot,
    capabilities: Capabilities,
    bars: Vec<VirtualBar>,
    windows: Vec<Region>,
    /// Guest ranges other devices of the slice decode.
    reserved: Vec<Region>,
    msi: MsiTarget,
    msix: MsixTable,
    layout: MsixLayout,
    /// The route last reported per vector.
    routes: Vec<Option<Route>>,
    command: u16,
    cache_line_size: u8,
    flr_capable: bool,
    /// VIRTIO_F_ACCESS_PLATFORM acknowledged on the driver's behalf, for a virtio-net
    /// function that offers it.
    ack: Option<AccessPlatformAck>,
}

/// Whether a configuration access of `width` bytes at `offset` is one the function answers.
fn config_access_ok(offset: u16, width: u8) -> bool {
    matches!(width, 1 | 2 | 4) && offset.is_multiple_of(u16::from(width))
}

/// Whether a BAR access of `width` bytes at `offset` is one that can be forwarded.
fn mmio_access_ok(offset: u64, width: u8) -> bool {
    matches!(width, 1 | 2 | 4 | 8) && offset.is_multiple_of(u64::from(width))
}

/// The value of a read nobody answers: `width` bytes of ones.
fn all_ones(width: u8) -> u64 {
    match width {
        0 => 0,
        1..=7 => (1u64 << (8 * u32::from(width))) - 1,
        _ => u64::MAX,
    }
}

/// Merges a `width`-byte write at byte `offset` into the dword `old` (access inside it).
fn merge(old: u32, offset: u64, width: u8, value: u64) -> u32 {
    let shift = 8 * (offset % 4) as u32;
    let mask = (all_ones(width.min(4)) as u32)
        .checked_shl(shift)
        .unwrap_or(0);
    (old & !mask) | ((value as u32).checked_shl(shift).unwrap_or(0) & mask)
}

/// Extracts a `width`-byte read at byte `offset` from the dword `word`.
fn extract(word: u32, offset: u64, width: u8) -> u64 {
    u64::from(word.checked_shr(8 * (offset % 4) as u32).unwrap_or(0)) & all_ones(width.min(4))
}

impl AssignedFunction {
    /// The slice's view of the function, in its power-on state (decoding off, BARs at 0,
    /// MSI-X disabled).
    pub fn new(assignment: Assignment<'_>) -> Result<AssignedFunction, AssignError> {
        let Assignment {
            bdf,
            snapshot,
            bars,
            windows,
            msi,
            virtio_features,
        } = assignment;
        if !msi.is_valid() {
            return Err(AssignError::BadMsiTarget);
        }
        if matches!(snapshot.vendor(), 0 | 0xffff) {
            return Err(AssignError::NoFunction);
        }
        if snapshot.header_type() != 0 {
            return Err(AssignError::NotAnEndpoint {
                header_type: snapshot.header_type(),
            });
        }
        if windows.is_empty() {
            return Err(AssignError::NoWindow);
        }
        for w in windows {
            let aligned = (w.base | w.size).is_multiple_of(PAGE_SIZE);
            if w.size == 0 || !aligned || w.base.checked_add(w.size).is_none() {
                return Err(AssignError::BadWindow { base: w.base });
            }
        }
        check_bars(bars)?;
        let capabilities = Capabilities::find(&snapshot);
        let capability = capabilities.msix.ok_or(AssignError::NoMsix)?;
        let vectors = (snapshot.word(capability + 2) & 0x7ff) + 1;
        let msix = MsixTable::new(vectors);
        let (table_bar, table_offset) =
            locate(bars, snapshot.dword(capability + 4), msix.table_bytes())?;
        let (pba_bar, pba_offset) = locate(bars, snapshot.dword(capability + 8), msix.pba_bytes())?;
        let ack = NetRegisters::find(&snapshot, bars)
            .filter(|_| virtio_features & virtio::F_ACCESS_PLATFORM != 0)
            .map(|registers| AccessPlatformAck::new(registers.common));
        let virtual_bars = bars
            .iter()
            .enumerate()
            .map(|(i, placed)| {
                let mut trapped = Vec::new();
                if i == table_bar {
                    trapped.push((table_offset, msix.table_bytes()));
                }
                if i == pba_bar {
                    trapped.push((pba_offset, msix.pba_bytes()));
                }
                if let Some((bar, offset, bytes)) = ack.as_ref().map(AccessPlatformAck::trapped)
                    && bar == placed.bar.index
                {
                    trapped.push((offset, bytes));
                }
                VirtualBar::new(placed, &trapped)
            })
            .collect();
        let flr_capable = capabilities
            .express
            .is_some_and(|e| snapshot.dword(e + DEVICE_CAPABILITIES) & FLR_CAPABLE != 0);
        Ok(AssignedFunction {
            bdf,
            snapshot,
            capabilities,
            bars: virtual_bars,
            windows: windows.to_vec(),
            reserved: Vec::new(),
            msi,
            routes: alloc::vec![None; usize::from(msix.vectors())],
            msix,
            layout: MsixLayout {
                capability,
                table_bar,
                table_offset,
                pba_bar,
                pba_offset,
            },
            command: 0,
            cache_line_size: 0,
            flr_capable,
            ack,
        })
    }

    /// The function on the node.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// MSI-X vectors of the function.
    pub fn msix_vectors(&self) -> u16 {
        self.msix.vectors()
    }

    /// Bus Master Enable as the guest set it.
    pub fn bus_master(&self) -> bool {
        self.command & COMMAND_BUS_MASTER != 0
    }

    /// The route last reported for `vector` (None for a vector that does not exist).
    pub fn route(&self, vector: u16) -> Option<Route> {
        self.routes.get(usize::from(vector)).copied().flatten()
    }

    /// The BARs mapped now.
    pub fn mappings(&self) -> Vec<BarMapping> {
        self.bars
            .iter()
            .filter_map(|b| b.mapped.map(|base| b.mapping(base)))
            .collect()
    }

    // ---- configuration space -----------------------------------------------------------

    /// Reads `width` bytes at `offset` of the function's configuration space.
    pub fn config_read(&self, offset: u16, width: u8) -> u64 {
        if offset >= CONFIG_SIZE {
            return 0;
        }
        if !config_access_ok(offset, width) {
            return all_ones(width);
        }
        extract(self.read_dword(offset & !3), u64::from(offset), width)
    }

    /// Writes `width` bytes of `value` at `offset` of the function's configuration space.
    pub fn config_write(&mut self, offset: u16, width: u8, value: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if offset >= CONFIG_SIZE || !config_access_ok(offset, width) {
            return effects;
        }
        let dword = offset & !3;
        let value = merge(self.read_dword(dword), u64::from(offset), width, value);
        self.write_dword(dword, value, &mut effects);
        effects
    }

    fn read_dword(&self, offset: u16) -> u32 {
        match offset {
            0x00 | 0x08 | 0x2c => self.snapshot.dword(offset),
            0x04 => {
                let status = if self.capabilities.visible.is_empty() {
                    0
                } else {
                    STATUS_CAPABILITIES
                };
                u32::from(status) << 16 | u32::from(self.command)
            }
            0x0c => u32::from(self.snapshot.header_type()) << 16 | u32::from(self.cache_line_size),
            0x10..=0x24 => self.read_bar_register(((offset - 0x10) / 4) as u8),
            0x34 => u32::from(self.capabilities.first()),
            0x40..=0xfc => (0..4).fold(0, |word, byte| {
                word | u32::from(self.capability_byte(offset + byte)) << (8 * byte)
            }),
            _ => 0,
        }
    }

    fn read_bar_register(&self, slot: u8) -> u32 {
        for bar in &self.bars {
            if bar.index == slot {
                return bar.read_low();
            }
            if bar.is_64bit && bar.index + 1 == slot {
                return bar.read_high();
            }
        }
        0
    }

    fn capability_byte(&self, offset: u16) -> u8 {
        let Some(cap) = self.capabilities.at(offset) else {
            return 0;
        };
        let byte = self.snapshot.byte(offset);
        match (cap.id, offset - cap.offset) {
            (_, 1) => cap.next,
            // Message Control's upper byte: Table Size bits 10:8, Function Mask, Enable.
            (id::MSI_X, 3) => {
                byte & 0x07
                    | if self.msix.function_masked() { 0x40 } else { 0 }
                    | if self.msix.enabled() { 0x80 } else { 0 }
            }
            // Device Control's upper byte: Initiate FLR always reads 0.
            (id::PCI_EXPRESS, o) if o == DEVICE_CONTROL + 1 => byte & 0x7f,
            _ => byte,
        }
    }

    fn write_dword(&mut self, offset: u16, value: u32, effects: &mut Vec<Effect>) {
        match offset {
            0x04 => self.set_command(value as u16 & COMMAND_WRITABLE, effects),
            0x0c => self.cache_line_size = value as u8,
            0x10..=0x24 => {
                let slot = ((offset - 0x10) / 4) as u8;
                for bar in &mut self.bars {
                    if bar.index == slot {
                        bar.write_low(value);
                    } else if bar.is_64bit && bar.index + 1 == slot {
                        bar.write_high(value);
                    }
                }
                self.sync_bars(effects);
            }
            o if o == self.layout.capability => {
                let control = (value >> 16) as u16;
                let mut sent = Vec::new();
                self.msix.set_control(
                    control & MSIX_ENABLE != 0,
                    control & MSIX_FUNCTION_MASK != 0,
                    &mut |m| sent.push(m),
                );
                self.sync_routes(0..self.msix.vectors(), effects);
                self.inject(&sent, effects);
            }
            o if self.capabilities.express.map(|e| e + DEVICE_CONTROL) == Some(o)
                && value & INITIATE_FLR != 0
                && self.flr_capable =>
            {
                effects.extend(self.reset());
                effects.push(Effect::FunctionLevelReset);
            }
            _ => {}
        }
    }

    fn set_command(&mut self, command: u16, effects: &mut Vec<Effect>) {
        let old = core::mem::replace(&mut self.command, command);
        if (old ^ command) & COMMAND_BUS_MASTER != 0 {
            effects.push(Effect::BusMaster(self.bus_master()));
        }
        if (old ^ command) & COMMAND_MEMORY != 0 {
            self.sync_bars(effects);
        }
    }

    // ---- BAR placement -----------------------------------------------------------------

    /// Guest ranges other devices of the slice decode now (the virtual NVMe function's BAR,
    /// other assigned functions' BARs): a BAR of this function over one of them is not
    /// mapped. The kernel calls this whenever they change.
    pub fn set_reserved(&mut self, reserved: &[Region]) -> Vec<Effect> {
        self.reserved = reserved.to_vec();
        let mut effects = Vec::new();
        self.sync_bars(&mut effects);
        effects
    }

    /// The guest ranges this function's BARs decode now (memory decoding on; whether or not
    /// they could be mapped): what the slice's other devices must keep clear of
    /// ([`AssignedFunction::set_reserved`]).
    pub fn decoded_regions(&self) -> Vec<Region> {
        if self.command & COMMAND_MEMORY == 0 {
            return Vec::new();
        }
        self.bars
            .iter()
            .filter(|bar| bar.address != 0)
            .map(|bar| bar.region())
            .collect()
    }

    /// Where BAR `i` may be mapped now, if anywhere.
    fn placement(&self, i: usize) -> Option<u64> {
        if self.command & COMMAND_MEMORY == 0 {
            return None;
        }
        let bar = &self.bars[i];
        let end = bar.address.checked_add(bar.size)?;
        let inside = self
            .windows
            .iter()
            .any(|w| bar.address >= w.base && end <= w.end());
        let region = bar.region();
        let clashes = self
            .bars
            .iter()
            .enumerate()
            .any(|(j, other)| j != i && other.region().overlaps(&region))
            || self.reserved.iter().any(|r| r.overlaps(&region));
        (inside && !clashes).then_some(bar.address)
    }

    /// Brings the mappings in line with the registers: every stale mapping is removed before
    /// any new one is made.
    fn sync_bars(&mut self, effects: &mut Vec<Effect>) {
        let wanted: Vec<Option<u64>> = (0..self.bars.len()).map(|i| self.placement(i)).collect();
        for (bar, want) in self.bars.iter_mut().zip(&wanted) {
            if let Some(base) = bar.mapped
                && bar.mapped != *want
            {
                effects.push(Effect::BarUnmapped(bar.mapping(base)));
                bar.mapped = None;
            }
        }
        for (bar, want) in self.bars.iter_mut().zip(&wanted) {
            if let Some(base) = *want
                && bar.mapped.is_none()
            {
                bar.mapped = Some(base);
                effects.push(Effect::BarMapped(bar.mapping(base)));
            }
        }
    }

    // ---- trapped BAR accesses ----------------------------------------------------------

    /// The mapped BAR holding guest address `guest` and the offset inside it.
    fn decode(&self, guest: u64) -> Option<(usize, u64)> {
        self.bars.iter().enumerate().find_map(|(i, bar)| {
            let base = bar.mapped?;
            let offset = guest.checked_sub(base).filter(|&o| o < bar.size)?;
            Some((i, offset))
        })
    }

    /// Which emulated structure `width` bytes at `offset` of BAR `bar` touch: Some(Ok(table
    /// offset)) / Some(Err(PBA offset)) when wholly inside one, None when outside both.
    fn emulated_at(&self, bar: usize, offset: u64, width: u8) -> Option<Result<u64, u64>> {
        let l = &self.layout;
        let inside = |start: u64, bytes: u64| {
            offset
                .checked_sub(start)
                .filter(|o| o.saturating_add(u64::from(width)) <= bytes)
        };
        if bar == l.table_bar
            && let Some(o) = inside(l.table_offset, self.msix.table_bytes())
        {
            return Some(Ok(o));
        }
        if bar == l.pba_bar
            && let Some(o) = inside(l.pba_offset, self.msix.pba_bytes())
        {
            return Some(Err(o));
        }
        None
    }

    fn read_table(&self, offset: u64, width: u8) -> u64 {
        match width {
            8 => {
                u64::from(self.msix.read_table(offset))
                    | u64::from(self.msix.read_table(offset + 4)) << 32
            }
            _ => extract(self.msix.read_table(offset & !3), offset, width),
        }
    }

    fn read_pba(&self, offset: u64, width: u8) -> u64 {
        match width {
            8 => {
                u64::from(self.msix.read_pba(offset))
                    | u64::from(self.msix.read_pba(offset + 4)) << 32
            }
            _ => extract(self.msix.read_pba(offset & !3), offset, width),
        }
    }

    /// The guest's read of `width` bytes at offset `pba` of its PBA (`offset` in BAR `bar`):
    /// the emulated bits, and on the vITS path the device's own bits of the vectors it holds
    /// pending ([`BarRead::Pending`]).
    fn pba_read(&self, bar: usize, offset: u64, pba: u64, width: u8) -> BarRead {
        let emulated = self.read_pba(pba, width);
        match (
            self.held_pending(pba, width),
            self.forward(bar, offset, width),
        ) {
            (0, _) | (_, None) => BarRead::Emulated(emulated),
            (held, Some(physical)) => BarRead::Pending {
                physical,
                held,
                emulated,
            },
        }
    }

    /// The bits of a `width`-byte PBA read at offset `pba` (bit n: vector 8 * `pba` + n)
    /// whose pending state the device holds: on the vITS path, with MSI-X enabled, every
    /// vector the guest masked (its own Mask bit or the Function Mask). Elsewhere none: the
    /// hypervisor takes a masked vector's interrupt and keeps its bit.
    fn held_pending(&self, pba: u64, width: u8) -> u64 {
        if !matches!(self.msi, MsiTarget::Its { .. }) || !self.msix.enabled() {
            return 0;
        }
        let first = pba.saturating_mul(8);
        (0..u64::from(width) * 8)
            .filter(|&n| {
                u16::try_from(first + n)
                    .is_ok_and(|v| v < self.msix.vectors() && self.msix.masked(v))
            })
            .fold(0, |bits, n| bits | 1 << n)
    }

    /// A guest read of `width` bytes at `guest` that trapped inside one of the BARs.
    /// Accesses must be 1, 2, 4 or 8 bytes, naturally aligned (anything else reads
    /// all-ones); the bytes a small BAR was padded with read 0.
    pub fn bar_read(&self, guest: u64, width: u8) -> BarRead {
        let Some((i, offset)) = self.decode(guest) else {
            return BarRead::Unclaimed;
        };
        if !mmio_access_ok(offset, width) {
            return BarRead::Emulated(all_ones(width));
        }
        match self.emulated_at(i, offset, width) {
            Some(Ok(table)) => BarRead::Emulated(self.read_table(table, width)),
            Some(Err(pba)) => self.pba_read(i, offset, pba, width),
            None => self
                .forward(i, offset, width)
                .map_or(BarRead::Emulated(0), |physical| BarRead::Forward {
                    physical,
                }),
        }
    }

    /// A guest write of `width` bytes of `value` at `guest` that trapped inside one of the
    /// BARs. Misaligned or odd-width writes, writes to the PBA and to padding are ignored.
    pub fn bar_write(&mut self, guest: u64, width: u8, value: u64) -> BarWrite {
        let Some((i, offset)) = self.decode(guest) else {
            return BarWrite::Unclaimed;
        };
        let mut effects = Vec::new();
        if !mmio_access_ok(offset, width) {
            return BarWrite::Emulated(effects);
        }
        match self.emulated_at(i, offset, width) {
            Some(Ok(table)) => {
                match width {
                    8 => {
                        self.write_table(table, value as u32, &mut effects);
                        self.write_table(table + 4, (value >> 32) as u32, &mut effects);
                    }
                    _ => {
                        let old = self.msix.read_table(table & !3);
                        self.write_table(table & !3, merge(old, table, width, value), &mut effects);
                    }
                }
                BarWrite::Emulated(effects)
            }
            Some(Err(_)) => BarWrite::Emulated(effects),
            None => match self.forward(i, offset, width) {
                Some(physical) => {
                    let index = self.bars[i].index;
                    let value = match &mut self.ack {
                        Some(ack) => ack.write(index, offset, width, value),
                        None => value,
                    };
                    BarWrite::Forward { physical, value }
                }
                None => BarWrite::Emulated(effects),
            },
        }
    }

    /// The host-physical address of `width` bytes at `offset` of BAR `i`, if the physical BAR
    /// holds them.
    fn forward(&self, i: usize, offset: u64, width: u8) -> Option<u64> {
        let physical = self.bars[i].physical;
        (offset.checked_add(u64::from(width))? <= physical.size).then(|| physical.base + offset)
    }

    fn write_table(&mut self, offset: u64, value: u32, effects: &mut Vec<Effect>) {
        let mut sent = Vec::new();
        if let Some(vector) = self.msix.write_table(offset, value, &mut |m| sent.push(m)) {
            self.sync_routes(vector..vector + 1, effects);
        }
        self.inject(&sent, effects);
    }

    // ---- interrupts ----------------------------------------------------------------------

    /// The route vector `vector` should have now (an EventID only while the vector is
    /// unmasked: its masking is physical).
    fn wanted_route(&self, vector: u16) -> Option<Route> {
        if !self.msix.enabled() {
            return None;
        }
        let entry = self.msix.entry(vector)?;
        match self.msi.route(entry.address, entry.data)? {
            Route::Event(_) if self.msix.masked(vector) => None,
            route => Some(route),
        }
    }

    fn sync_routes(&mut self, vectors: core::ops::Range<u16>, effects: &mut Vec<Effect>) {
        for vector in vectors {
            let target = self.wanted_route(vector);
            if let Some(route) = self.routes.get_mut(usize::from(vector))
                && *route != target
            {
                *route = target;
                effects.push(Effect::MsixRoute { vector, target });
            }
        }
    }

    fn inject(&self, sent: &[MsiMessage], effects: &mut Vec<Effect>) {
        for m in sent {
            if let Some(spi) = self.msi.spi(m.address, m.data) {
                effects.push(Effect::Inject {
                    vector: m.vector,
                    spi,
                });
            }
        }
    }

    /// The device signalled vector `vector` (the physical interrupt of a routed vector
    /// arrived): deliver, hold as pending while the guest masks it (PCI Local Bus 3.0 §6.8.2.9), or drop.
    pub fn interrupt(&mut self, vector: u16) -> Interrupt {
        match self.msix.signal(vector) {
            Signal::Sent(m) => self
                .msi
                .spi(m.address, m.data)
                .map_or(Interrupt::Dropped, |spi| Interrupt::Deliver { spi }),
            Signal::Pending => Interrupt::Pending,
            Signal::Dropped => Interrupt::Dropped,
        }
    }

    // ---- reset -------------------------------------------------------------------------

    /// Back to the power-on state the guest sees (slice start, stop, restart, and function
    /// level reset): BARs unmapped and at 0, decoding and bus mastering off, MSI-X disabled
    /// with every entry masked and nothing pending. Always reports bus mastering off.
    pub fn reset(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        for bar in &mut self.bars {
            if let Some(base) = bar.mapped.take() {
                effects.push(Effect::BarUnmapped(bar.mapping(base)));
            }
            bar.address = 0;
        }
        effects.push(Effect::BusMaster(false));
        self.command = 0;
        self.cache_line_size = 0;
        self.msix.reset();
        self.sync_routes(0..self.msix.vectors(), &mut effects);
        if let Some(ack) = &mut self.ack {
            ack.reset();
        }
        effects
    }
}

/// Checks the placed BARs (see [`AssignError::BadBar`]).
fn check_bars(bars: &[PlacedBar]) -> Result<(), AssignError> {
    let mut used = 0u8;
    for placed in bars {
        let bar = &placed.bar;
        let bad = AssignError::BadBar { index: bar.index };
        let slots: u8 = if bar.is_64bit { 0b11 } else { 0b1 };
        let last = if bar.is_64bit { 4 } else { 5 };
        if bar.index > last
            || !bar.size.is_power_of_two()
            || bar.size < 16
            || (!bar.is_64bit && bar.size > u64::from(u32::MAX))
            || placed.cpu.size != bar.size
            || placed.cpu.base.checked_add(bar.size).is_none()
            || used & slots << bar.index != 0
        {
            return Err(bad);
        }
        used |= slots << bar.index;
    }
    Ok(())
}

/// The BAR (index into `bars`) and offset an MSI-X Table/PBA Offset register names, checked
/// to hold `bytes` bytes.
fn locate(bars: &[PlacedBar], register: u32, bytes: u64) -> Result<(usize, u64), AssignError> {
    let bir = (register & 7) as u8;
    let offset = u64::from(register & !7);
    let outside = AssignError::MsixOutsideBar { bir };
    let i = bars
        .iter()
        .position(|b| b.bar.index == bir)
        .ok_or(outside)?;
    let end = offset.checked_add(bytes).ok_or(outside)?;
    if end > bars[i].bar.size {
        return Err(outside);
    }
    Ok((i, offset))
}
