//! The virtual ITS of one slice on a GICv4 node (GICv3 spec chapter 5, §12.19; design in
//! docs/decisions/0004-gicv4-virtual-its.md): the GITS registers as the guest sees them, its
//! command queue read from guest memory and executed under containment rules, the
//! translations of the slice's own devices, and each vCPU's LPI state (the guest
//! redistributor's GICR_CTLR.EnableLPIs, GICR_PROPBASER and GICR_PENDBASER, §12.11).
//!
//! What comes out: "LPI *n* is pending on vCPU *k*" for the vGIC's list registers
//! ([`VirtualIts::highest_pending`], [`VirtualIts::take`]), the vCPUs to kick, and for
//! assigned functions the physical GICv4.0 commands that would make the hardware deliver
//! the same vLPIs directly ([`HostCommand`]).
//!
//! Nothing here touches memory the guest gave the ITS for its tables: translations are kept
//! in hypervisor memory, bounded by each device's event limit. Guest memory is read only for
//! the command queue and the LPI property and pending tables, always after checking the
//! extent lies inside the slice's RAM.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

pub mod command;
mod lpi;
mod registers;
#[cfg(test)]
mod tests;

pub use command::{COMMAND_SIZE, Command};
pub use lpi::{LPI_BASE, LPI_ID_BITS, LPIS};
pub use registers::{FRAME_SIZE, TRANSLATER, gits};

use crate::nvme::{GuestMemoryFault, GuestRam, Ipa};
use crate::vgic::VcpuSet;
use lpi::Redistributor;

/// EventID bits the ITS supports (GITS_TYPER.ID_bits + 1).
pub const EVENT_ID_BITS: u32 = 16;
/// DeviceID bits (GITS_TYPER.Devbits + 1): the slice's one PCI bus.
pub const DEVICE_ID_BITS: u32 = 8;
/// Collection ID bits (GITS_TYPER.CIDbits + 1, with CIL = 1).
pub const COLLECTION_ID_BITS: u32 = 8;
/// Bytes of one ITT entry the guest must provide for (GITS_TYPER.ITT_entry_size + 1).
pub const ITT_ENTRY_SIZE: u64 = 8;
/// Most events the hypervisor keeps for one device, whatever the guest declares.
pub const MAX_EVENTS: u32 = 2048;
/// Work units one trapped access may spend on the command queue: one per command, plus one
/// per 64 translation entries a command walks.
pub const WORK_PER_ACCESS: u32 = 64;
/// Translation entries one work unit covers.
const ENTRIES_PER_UNIT: usize = 64;

/// Reads the slice's RAM. The model has checked that the extent lies inside the slice's RAM
/// before it asks; an implementation may still refuse.
pub trait GuestMemory {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault>;
}

/// Who delivers a device's interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A device the hypervisor emulates (the virtual NVMe): it signals through
    /// [`VirtualIts::translate`], and the vLPI goes through the list registers.
    Emulated,
    /// An assigned function with this physical ITS DeviceID: its translations become
    /// physical GICv4.0 commands ([`HostCommand`]).
    Assigned { physical_device: u32 },
    /// A device the hypervisor emulates whose events may each be *linked* to an event of the
    /// physical device `physical_device` ([`VirtualIts::link`]; decision 5: an NVMe share
    /// whose controller writes a guest CQ itself). A linked event goes to the guest directly
    /// (VMAPTI of the hardware event to the guest's vLPI) while the guest has it translated,
    /// its collection mapped and the ITS on; otherwise the hardware event goes to the
    /// hypervisor's own LPI (its [`Home`]), and the device signals through
    /// [`VirtualIts::translate`] like an emulated one.
    Shared { physical_device: u32 },
}

/// Where a linked hardware event goes while it does not go to the guest: the hypervisor's
/// LPI for it and the vCPU whose core takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Home {
    pub lpi: u32,
    pub vcpu: usize,
}

/// A guest event of a shared device linked to a hardware event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    /// The guest's EventID.
    event: u32,
    /// The physical device's EventID.
    hardware: u32,
    home: Home,
    /// Where the hardware event is mapped now: the guest's (vCPU, vLPI), or `None` for home.
    direct: Option<(usize, u32)>,
}

/// A PCI function the slice owns, as its vITS knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSlot {
    /// The guest's DeviceID (its requester ID on the slice's PCI bus).
    pub id: u32,
    /// Events the hypervisor keeps for it (its MSI-X vector count, capped at [`MAX_EVENTS`]).
    pub events: u32,
    pub backing: Backing,
}

/// Why a command, a register write or a device's message did nothing. Counted per slice;
/// none of them stops the slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VitsError {
    /// A command number this ITS does not implement (the GICv4 ones included).
    UnknownCommand(u8),
    /// The DeviceID is not a function the slice owns (or is past Devbits).
    NoSuchDevice,
    /// The DeviceID lies outside the device table the guest declared (GITS_BASER0 not
    /// valid, too small, or not inside its RAM).
    DeviceTable,
    /// The ICID lies outside the collections (past CIDbits, or outside the collection table
    /// the guest declared in GITS_BASER1, or that table is not valid or not inside its RAM).
    CollectionTable,
    /// MAPD with more EventID bits than GITS_TYPER.ID_bits allows.
    IttTooLarge,
    /// MAPD with an ITT not wholly inside the slice's RAM.
    IttOutsideRam,
    /// The device has no ITT (no MAPD with V = 1).
    DeviceUnmapped,
    /// The EventID is not below the ITT size the guest declared.
    EventOutOfRange,
    /// The EventID is past what the hypervisor keeps for the device.
    EventBeyondLimit,
    /// The event has no translation.
    NoTranslation,
    /// The INTID is not an LPI this GIC implements (8192..16383).
    InvalidLpi,
    /// The collection is not mapped.
    CollectionUnmapped,
    /// RDbase names no vCPU of the slice.
    NoSuchVcpu,
    /// The target vCPU has not enabled LPIs (a device message is dropped).
    LpisDisabled,
    /// The ITS is disabled (GITS_CTLR.Enabled = 0): a device message is dropped.
    Disabled,
    /// A link asked for on a device that is not shared.
    NotShared,
    /// A link asked for a guest event or a hardware event that is linked to another.
    LinkBusy,
    /// GITS_CWRITER was written with an offset at or past the end of the queue.
    WriterOutsideQueue,
    /// The command queue is not inside the slice's RAM, or could not be read: the ITS stalls.
    QueueUnreadable,
}

/// A GICv4.0 command the hypervisor issues on the physical ITS for an assigned function
/// (device and event IDs physical, vCPUs by index: the kernel knows their vPE IDs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostCommand {
    /// VMAPTI: the event becomes `vintid` on `vcpu`'s vPE, no doorbell.
    Vmapti {
        device: u32,
        event: u32,
        vintid: u32,
        vcpu: usize,
    },
    /// VMOVI: the event's vLPI moves to `vcpu`'s vPE.
    Vmovi {
        device: u32,
        event: u32,
        vcpu: usize,
    },
    Discard {
        device: u32,
        event: u32,
    },
    Inv {
        device: u32,
        event: u32,
    },
    Int {
        device: u32,
        event: u32,
    },
    Clear {
        device: u32,
        event: u32,
    },
    /// MAPTI of the event back to the hypervisor's LPI `lpi`, taken on `vcpu`'s core (a
    /// linked event of a shared device going home; it was DISCARDed just before).
    Restore {
        device: u32,
        event: u32,
        lpi: u32,
        vcpu: usize,
    },
    /// VINVALL of `vcpu`'s vPE.
    Vinvall {
        vcpu: usize,
    },
    /// VSYNC of `vcpu`'s vPE.
    Vsync {
        vcpu: usize,
    },
}

/// What one access did besides its register value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// vCPUs with LPIs newly pending (or whose LPI state changed): re-sync their list
    /// registers.
    pub kick: VcpuSet,
    /// Physical commands to issue, in order (assigned functions only).
    pub host: Vec<HostCommand>,
    /// A vCPU that enabled its LPIs on a slice with assigned functions: make its vPE
    /// resident on its core with this property table.
    pub resident: Option<Residency>,
}

/// What the physical redistributor of a vCPU's core needs to deliver its vLPIs directly
/// (GICR_VPROPBASER; GICR_VPENDBASER points at the hypervisor's own virtual pending table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Residency {
    pub vcpu: usize,
    /// Host physical address of the guest's LPI property table (checked to lie wholly inside
    /// the slice's RAM for `id_bits`).
    pub properties: crate::nvme::Pa,
    /// INTID bits the table covers (GICR_VPROPBASER.IDbits + 1).
    pub id_bits: u32,
}

/// One event's translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Translation {
    lpi: u32,
    icid: u16,
}

/// A device the slice owns and what its guest mapped.
#[derive(Clone, Debug)]
struct Device {
    slot: DeviceSlot,
    /// After MAPD V=1: the declared EventID bits and the kept entries
    /// (min(2^bits, limit) of them).
    itt: Option<(u32, Box<[Option<Translation>]>)>,
    /// A shared device's linked events (at most one per guest event and per hardware event).
    links: Vec<Link>,
}

/// The virtual ITS of one slice, and its vCPUs' LPI state.
#[derive(Clone, Debug)]
pub struct VirtualIts {
    ram: GuestRam,
    enabled: bool,
    cbaser: u64,
    /// GITS_CWRITER and GITS_CREADR offsets (bits 19:5).
    cwriter: u64,
    creadr: u64,
    stalled: bool,
    /// GITS_BASER0 (devices) and GITS_BASER1 (collections) as the guest wrote them.
    baser: [u64; 2],
    devices: Vec<Device>,
    /// ICID -> vCPU (u16: at most 512 vCPUs; 1 KiB for all 256 ICIDs).
    collections: Box<[Option<u16>]>,
    redistributors: Vec<Redistributor>,
    /// Cached property byte of every LPI (bit 0 enable, bits 7:2 priority).
    properties: Box<[u8]>,
    errors: u64,
    last_error: Option<VitsError>,
}

impl VirtualIts {
    /// A vITS in its reset state for a slice with `vcpus` vCPUs, RAM `ram` and the PCI
    /// functions `devices` (duplicate IDs: the first wins; events capped at
    /// [`MAX_EVENTS`]).
    pub fn new(vcpus: usize, ram: GuestRam, devices: &[DeviceSlot]) -> Self {
        let mut kept: Vec<Device> = Vec::new();
        for slot in devices {
            if slot.id < 1 << DEVICE_ID_BITS && !kept.iter().any(|d| d.slot.id == slot.id) {
                kept.push(Device {
                    slot: DeviceSlot {
                        events: slot.events.min(MAX_EVENTS),
                        ..*slot
                    },
                    itt: None,
                    links: Vec::new(),
                });
            }
        }
        Self {
            ram,
            enabled: false,
            cbaser: 0,
            cwriter: 0,
            creadr: 0,
            stalled: false,
            baser: [registers::BASER0_RESET, registers::BASER1_RESET],
            devices: kept,
            collections: vec![None; 1 << COLLECTION_ID_BITS].into_boxed_slice(),
            redistributors: (0..vcpus).map(|_| Redistributor::new()).collect(),
            properties: vec![0; LPIS].into_boxed_slice(),
            errors: 0,
            last_error: None,
        }
    }

    /// Back to power-on (slice restart): the returned commands undo every physical
    /// translation of assigned functions and send every linked hardware event home; the
    /// links are dropped.
    pub fn reset(&mut self) -> Vec<HostCommand> {
        let mut host = Vec::new();
        for device in &mut self.devices {
            Self::unmap_device(device, &mut self.redistributors, &mut host);
        }
        if !self.enabled {
            // A disabled ITS has nothing mapped on the physical one (`direct_translations`).
            host.clear();
        }
        // Every linked hardware event home; the new state below has no links.
        self.sync_links(&mut host);
        if !host.is_empty() {
            Self::sync_every_vpe(self.redistributors.len(), &mut host);
        }
        let slots: Vec<DeviceSlot> = self.devices.iter().map(|d| d.slot).collect();
        *self = VirtualIts::new(self.redistributors.len(), self.ram, &slots);
        host
    }

    /// Errors counted since reset, and the last one.
    pub fn errors(&self) -> (u64, Option<VitsError>) {
        (self.errors, self.last_error)
    }

    /// GITS_CREADR and GITS_CWRITER offsets, without running anything (diagnostics).
    pub fn queue_position(&self) -> (u64, u64) {
        (self.creadr, self.cwriter)
    }

    /// Translation entries the vITS holds for the slice's devices: never more than the sum
    /// of their event limits.
    pub fn entries_kept(&self) -> usize {
        self.devices
            .iter()
            .map(|d| d.itt.as_ref().map_or(0, |(_, entries)| entries.len()))
            .sum()
    }

    fn error(&mut self, error: VitsError) {
        self.errors += 1;
        self.last_error = Some(error);
    }

    /// A device the slice owns signals `event` (an emulated device's MSI to the vITS
    /// doorbell): the translated LPI becomes pending on its collection's vCPU. Returns the
    /// vCPU to kick.
    pub fn translate(&mut self, device: u32, event: u32) -> Result<VcpuSet, VitsError> {
        let result = self.translate_inner(device, event);
        if let Err(error) = result {
            self.error(error);
        }
        result
    }

    fn translate_inner(&mut self, device: u32, event: u32) -> Result<VcpuSet, VitsError> {
        if !self.enabled {
            return Err(VitsError::Disabled);
        }
        let (_, t) = self.translation(device, event)?;
        self.make_pending(t)
    }

    /// The vCPU an ICID targets.
    fn collection(&self, icid: u16) -> Result<usize, VitsError> {
        self.collections
            .get(usize::from(icid))
            .copied()
            .flatten()
            .map(usize::from)
            .ok_or(VitsError::CollectionUnmapped)
    }

    fn make_pending(&mut self, t: Translation) -> Result<VcpuSet, VitsError> {
        let vcpu = self.collection(t.icid)?;
        let rd = &mut self.redistributors[vcpu];
        if !rd.enabled {
            return Err(VitsError::LpisDisabled);
        }
        rd.pending.set(t.lpi, true);
        Ok(VcpuSet::EMPTY.with(vcpu))
    }

    /// Index of the owned device `id`.
    fn device_index(&self, id: u32) -> Result<usize, VitsError> {
        self.devices
            .iter()
            .position(|d| d.slot.id == id)
            .ok_or(VitsError::NoSuchDevice)
    }

    /// `device`'s index and its translations, once `event` is below the ITT size the guest
    /// declared for it (the hypervisor may keep fewer: check the length).
    fn declared_event(
        &self,
        device: u32,
        event: u32,
    ) -> Result<(usize, &[Option<Translation>]), VitsError> {
        let index = self.device_index(device)?;
        let (bits, entries) = self.devices[index]
            .itt
            .as_ref()
            .ok_or(VitsError::DeviceUnmapped)?;
        if u64::from(event) >= 1u64 << bits {
            return Err(VitsError::EventOutOfRange);
        }
        Ok((index, entries))
    }

    /// The translation of (`device`, `event`) and the device's index.
    fn translation(&self, device: u32, event: u32) -> Result<(usize, Translation), VitsError> {
        let (index, entries) = self.declared_event(device, event)?;
        let t = entries
            .get(event as usize)
            .copied()
            .flatten()
            .ok_or(VitsError::NoTranslation)?;
        Ok((index, t))
    }

    /// The most urgent pending, enabled LPI of `vcpu` (lowest priority value, then lowest
    /// INTID) with its priority, for the list registers.
    pub fn highest_pending(&self, vcpu: usize) -> Option<(u32, u8)> {
        self.highest_pending_except(vcpu, |_| false)
    }

    /// Whether an LPI may wait for `vcpu`: its LPIs are enabled and one is pending. The
    /// list-register pass asks this on every exit before it looks for the most urgent one.
    #[inline]
    pub fn has_pending(&self, vcpu: usize) -> bool {
        self.redistributors
            .get(vcpu)
            .is_some_and(|rd| rd.enabled && !rd.pending.is_empty())
    }

    /// As [`VirtualIts::highest_pending`], passing over the LPIs `skip` names (those already
    /// in a list register: one INTID never goes into two).
    pub fn highest_pending_except(
        &self,
        vcpu: usize,
        skip: impl Fn(u32) -> bool,
    ) -> Option<(u32, u8)> {
        let rd = self.redistributors.get(vcpu)?;
        if !rd.enabled {
            return None;
        }
        let mut best: Option<(u32, u8)> = None;
        for lpi in rd.pending.iter() {
            let property = self.properties[(lpi - LPI_BASE) as usize];
            if property & 1 == 0 || skip(lpi) {
                continue;
            }
            let priority = property & 0xfc;
            if best.is_none_or(|(_, p)| priority < p) {
                best = Some((lpi, priority));
            }
        }
        best
    }

    /// `lpi` was loaded into one of `vcpu`'s list registers: it is no longer pending here.
    /// Returns whether it was.
    pub fn take(&mut self, vcpu: usize, lpi: u32) -> bool {
        self.redistributors
            .get_mut(vcpu)
            .is_some_and(|rd| rd.pending.take(lpi))
    }

    /// Whether `lpi` is pending on `vcpu`.
    pub fn is_pending(&self, vcpu: usize, lpi: u32) -> bool {
        self.redistributors
            .get(vcpu)
            .is_some_and(|rd| rd.pending.get(lpi))
    }

    /// Links event `event` of the shared device `device` to event `hardware.0` of its
    /// physical device, whose home is `hardware.1` (or unlinks it: `None`). The hardware
    /// event must be mapped home on the physical ITS when it is linked, and is again when
    /// this returns after an unlink. Returns the physical commands that make the hardware
    /// event follow the guest's translation.
    pub fn link(
        &mut self,
        device: u32,
        event: u32,
        hardware: Option<(u32, Home)>,
    ) -> Result<Vec<HostCommand>, VitsError> {
        let index = self.device_index(device)?;
        let entry = &mut self.devices[index];
        let Backing::Shared { physical_device } = entry.slot.backing else {
            return Err(VitsError::NotShared);
        };
        if event >= entry.slot.events {
            return Err(VitsError::EventBeyondLimit);
        }
        let mut host = Vec::new();
        let at = entry.links.iter().position(|l| l.event == event);
        match (hardware, at) {
            (None, None) => {}
            (None, Some(at)) => {
                let link = entry.links.remove(at);
                if link.direct.is_some() {
                    Self::send_home(physical_device, &link, &mut host);
                }
            }
            (Some((hw, home)), at) => {
                if entry
                    .links
                    .iter()
                    .any(|l| (l.hardware == hw) != (l.event == event))
                {
                    return Err(VitsError::LinkBusy);
                }
                match at {
                    Some(at) => entry.links[at].home = home,
                    None => entry.links.push(Link {
                        event,
                        hardware: hw,
                        home,
                        direct: None,
                    }),
                }
            }
        }
        self.sync_links(&mut host);
        Ok(host)
    }

    /// Stops hardware event `hardware` of the shared device `device` following whatever
    /// guest event it follows (nothing if none): mapped home again on the physical ITS. By
    /// the hardware event, not the guest's: a link the vITS refused (another hardware event
    /// already follows that guest event) must not undo that other one (found in review).
    pub fn unlink_hardware(
        &mut self,
        device: u32,
        hardware: u32,
    ) -> Result<Vec<HostCommand>, VitsError> {
        let index = self.device_index(device)?;
        let entry = &mut self.devices[index];
        let Backing::Shared { physical_device } = entry.slot.backing else {
            return Err(VitsError::NotShared);
        };
        let mut host = Vec::new();
        if let Some(at) = entry.links.iter().position(|l| l.hardware == hardware) {
            let link = entry.links.remove(at);
            if link.direct.is_some() {
                Self::send_home(physical_device, &link, &mut host);
            }
        }
        Ok(host)
    }

    /// Where the guest's translation of (`index`, `event`) delivers now, if it may go to
    /// the guest directly: (vCPU, vLPI).
    fn link_target(&self, index: usize, event: u32) -> Option<(usize, u32)> {
        if !self.enabled {
            return None;
        }
        let (_, entries) = self.devices[index].itt.as_ref()?;
        let t = entries.get(event as usize).copied().flatten()?;
        Some((self.collection(t.icid).ok()?, t.lpi))
    }

    /// Makes every linked hardware event follow the guest's state: mapped to its vLPI on its
    /// collection's vCPU while it has one, home otherwise. Run after anything that may change
    /// a translation, a collection or the ITS's enable.
    pub(super) fn sync_links(&mut self, host: &mut Vec<HostCommand>) {
        for index in 0..self.devices.len() {
            let Backing::Shared { physical_device } = self.devices[index].slot.backing else {
                continue;
            };
            for at in 0..self.devices[index].links.len() {
                let link = self.devices[index].links[at];
                let wanted = self.link_target(index, link.event);
                if wanted == link.direct {
                    continue;
                }
                let (device, event) = (physical_device, link.hardware);
                match (link.direct, wanted) {
                    (Some((_, old)), Some((vcpu, lpi))) if old == lpi => {
                        host.push(HostCommand::Vmovi {
                            device,
                            event,
                            vcpu,
                        });
                    }
                    (_, Some((vcpu, lpi))) => {
                        host.push(HostCommand::Discard { device, event });
                        host.push(HostCommand::Vmapti {
                            device,
                            event,
                            vintid: lpi,
                            vcpu,
                        });
                    }
                    (_, None) => Self::send_home(device, &link, host),
                }
                self.devices[index].links[at].direct = wanted;
            }
        }
    }

    fn send_home(device: u32, link: &Link, host: &mut Vec<HostCommand>) {
        host.push(HostCommand::Discard {
            device,
            event: link.hardware,
        });
        host.push(HostCommand::Restore {
            device,
            event: link.hardware,
            lpi: link.home.lpi,
            vcpu: link.home.vcpu,
        });
    }

    /// The hardware event of (`index`, `event`) while it goes to the guest directly.
    fn direct_event(&self, index: usize, event: u32) -> Option<(u32, u32)> {
        let Backing::Shared { physical_device } = self.devices[index].slot.backing else {
            return None;
        };
        self.devices[index]
            .links
            .iter()
            .find(|l| l.event == event && l.direct.is_some())
            .map(|l| (physical_device, l.hardware))
    }

    /// Drops every translation of `device` (MAPD, reset), clearing their pending state;
    /// physical DISCARDs for an assigned function. Returns the entries walked.
    fn unmap_device(
        device: &mut Device,
        redistributors: &mut [Redistributor],
        host: &mut Vec<HostCommand>,
    ) -> usize {
        let Some((_, entries)) = device.itt.take() else {
            return 0;
        };
        for (event, t) in entries.iter().enumerate() {
            let Some(t) = t else { continue };
            // Pending state is per redistributor; the collection may have moved since, so
            // clear it everywhere (at most 128 bit clears).
            redistributors.iter_mut().for_each(|rd| {
                rd.pending.set(t.lpi, false);
            });
            if let Backing::Assigned { physical_device } = device.slot.backing {
                host.push(HostCommand::Discard {
                    device: physical_device,
                    event: event as u32,
                });
            }
        }
        entries.len()
    }
}
