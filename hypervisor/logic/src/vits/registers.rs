//! The GITS registers as the guest sees them (GICv3 spec §12.19, Table 12-30) and the
//! command queue they drive (§5.3: CBASER, CWRITER, CREADR), with each command executed under
//! the slice's containment rules.

use alloc::vec;
use alloc::vec::Vec;

use super::command::{COMMAND_SIZE, Command};
use super::lpi::LPI_ID_BITS;
use super::{
    Backing, COLLECTION_ID_BITS, DEVICE_ID_BITS, ENTRIES_PER_UNIT, EVENT_ID_BITS, GuestMemory,
    HostCommand, ITT_ENTRY_SIZE, LPI_BASE, Outcome, Translation, VirtualIts, VitsError,
    WORK_PER_ACCESS,
};
use crate::nvme::Ipa;
use crate::vgic::VcpuSet;

/// Bytes of the vITS's two frames (control, translation).
pub const FRAME_SIZE: u64 = 0x2_0000;
/// Offset of GITS_TRANSLATER (in the translation frame).
pub const TRANSLATER: u64 = 0x1_0040;

/// GITS register offsets and fields.
pub mod gits {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const CBASER: u64 = 0x0080;
    pub const CWRITER: u64 = 0x0088;
    pub const CREADR: u64 = 0x0090;
    pub const BASER: u64 = 0x0100;
    pub const PIDR2: u64 = 0xffe8;
    /// GITS_CTLR.Enabled and .Quiescent.
    pub const CTLR_ENABLED: u64 = 1;
    pub const CTLR_QUIESCENT: u64 = 1 << 31;
    /// GITS_CREADR.Stalled, GITS_CWRITER.Retry.
    pub const CREADR_STALLED: u64 = 1;
    pub const CWRITER_RETRY: u64 = 1;
    /// The Offset field of CWRITER and CREADR (bits 19:5).
    pub const OFFSET_MASK: u64 = 0xf_ffe0;
    /// Writable CBASER bits: Valid, InnerCache, OuterCache, PA 51:12, Shareability, Size.
    pub const CBASER_MASK: u64 =
        1 << 63 | 0x7 << 59 | 0x7 << 53 | 0x000f_ffff_ffff_f000 | 0x3 << 10 | 0xff;
    /// Writable BASER bits: Valid, InnerCache, OuterCache, PA 47:12, Shareability,
    /// Page_Size, Size (Indirect is RAZ/WI, Type and Entry_Size read-only).
    pub const BASER_MASK: u64 =
        1 << 63 | 0x7 << 59 | 0x7 << 53 | 0x0000_ffff_ffff_f000 | 0x3 << 10 | 0x3 << 8 | 0xff;
    pub const VALID: u64 = 1 << 63;
}

/// GITS_BASER0: a flat device table of 8-byte entries (Type 1).
pub(super) const BASER0_RESET: u64 = 1 << 56 | 7 << 48;
/// GITS_BASER1: a flat collection table of 8-byte entries (Type 4).
pub(super) const BASER1_RESET: u64 = 4 << 56 | 7 << 48;
/// Arm as implementer (GITS_IIDR), ArchRev 3 (GITS_PIDR2).
const IIDR_ARM: u64 = 0x43b;
const PIDR2_GICV3: u64 = 0x3b;

/// GITS_TYPER: physical LPIs, 8-byte ITT entries, 16 EventID bits, 8 DeviceID bits,
/// collections by processor number (PTA = 0), no hardware collections, CIL = 1 with 8
/// collection ID bits.
const TYPER: u64 = 1
    | (ITT_ENTRY_SIZE - 1) << 4
    | (EVENT_ID_BITS as u64 - 1) << 8
    | (DEVICE_ID_BITS as u64 - 1) << 13
    | (COLLECTION_ID_BITS as u64 - 1) << 32
    | 1 << 36;

/// The part of a 64-bit register a 32-bit access at `offset` sees (8-byte accesses see all).
fn view(value: u64, offset: u64, width: u8) -> u64 {
    if width == 8 {
        value
    } else {
        (value >> ((offset & 4) * 8)) & 0xffff_ffff
    }
}

/// `old` with the bytes a `width`-byte write of `value` at `offset` covers replaced.
fn merge(old: u64, offset: u64, width: u8, value: u64) -> u64 {
    match (width, offset & 4) {
        (8, _) => value,
        (_, 0) => old & !0xffff_ffff | value & 0xffff_ffff,
        _ => old & 0xffff_ffff | value << 32,
    }
}

/// The guest memory a GITS_BASER<n> value describes: (first byte, bytes), if valid.
fn table_extent(baser: u64) -> Option<(Ipa, u64)> {
    if baser & gits::VALID == 0 {
        return None;
    }
    let page: u64 = match (baser >> 8) & 3 {
        0 => 0x1000,
        1 => 0x4000,
        _ => 0x1_0000,
    };
    let address = if page == 0x1_0000 {
        (baser & 0x0000_ffff_ffff_0000) | ((baser >> 12) & 0xf) << 48
    } else {
        baser & 0x0000_ffff_ffff_f000
    };
    Some((Ipa(address), ((baser & 0xff) + 1) * page))
}

impl VirtualIts {
    /// Reads the vITS register at `offset` in its two frames. Reading GITS_CREADR first
    /// runs a bounded batch of queued commands (a guest waiting for a SYNC polls it).
    pub fn read(&mut self, offset: u64, width: u8, memory: &impl GuestMemory) -> (u64, Outcome) {
        let mut outcome = Outcome::default();
        let value = match offset {
            gits::CTLR => {
                u64::from(self.enabled)
                    | if self.enabled {
                        0
                    } else {
                        gits::CTLR_QUIESCENT
                    }
            }
            gits::IIDR => IIDR_ARM,
            o if o & !7 == gits::TYPER => view(TYPER, o, width),
            o if o & !7 == gits::CBASER => view(self.cbaser, o, width),
            o if o & !7 == gits::CWRITER => view(self.cwriter, o, width),
            o if o & !7 == gits::CREADR => {
                self.process(memory, &mut outcome);
                view(
                    self.creadr
                        | if self.stalled {
                            gits::CREADR_STALLED
                        } else {
                            0
                        },
                    o,
                    width,
                )
            }
            o if (gits::BASER..gits::BASER + 0x40).contains(&o) => {
                let n = ((o - gits::BASER) / 8) as usize;
                view(self.baser.get(n).copied().unwrap_or(0), o, width)
            }
            gits::PIDR2 => PIDR2_GICV3,
            _ => 0,
        };
        (value, outcome)
    }

    /// Writes the vITS register at `offset`. Enabling the ITS or writing GITS_CWRITER runs a
    /// bounded batch of queued commands. A CPU write to GITS_TRANSLATER does nothing: no
    /// DeviceID comes with it.
    pub fn write(
        &mut self,
        offset: u64,
        width: u8,
        value: u64,
        memory: &impl GuestMemory,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        match offset {
            gits::CTLR => {
                let enabled = value & gits::CTLR_ENABLED != 0;
                if enabled != self.enabled {
                    self.direct_translations(enabled, &mut outcome.host);
                }
                self.enabled = enabled;
                self.sync_links(&mut outcome.host);
                self.process(memory, &mut outcome);
            }
            o if o & !7 == gits::CBASER && !self.enabled => {
                self.cbaser = merge(self.cbaser, o, width, value) & gits::CBASER_MASK;
                self.creadr = 0;
                self.stalled = false;
            }
            o if o & !7 == gits::CWRITER => {
                let written = merge(self.cwriter, o, width, value);
                self.cwriter = written & gits::OFFSET_MASK;
                if written & gits::CWRITER_RETRY != 0 {
                    self.stalled = false;
                }
                if self.queue().is_some_and(|(_, size)| self.cwriter >= size) {
                    self.error(VitsError::WriterOutsideQueue);
                }
                self.process(memory, &mut outcome);
            }
            o if (gits::BASER..gits::BASER + 0x10).contains(&o) && !self.enabled => {
                let n = ((o - gits::BASER) / 8) as usize;
                let fixed = self.baser[n] & !gits::BASER_MASK & !(1 << 62);
                self.baser[n] = merge(self.baser[n], o, width, value) & gits::BASER_MASK | fixed;
            }
            _ => {}
        }
        outcome
    }

    /// The ITS turns on or off: the physical translations of assigned functions follow, so
    /// that a disabled ITS delivers nothing (as it drops an emulated device's messages).
    /// Off: every translation is DISCARDed on the physical ITS and kept here. On: each is
    /// mapped again (VMAPTI) to its collection's vCPU; one whose collection the guest
    /// unmapped meanwhile has no vCPU to go to and is dropped (interrupts mapped to an
    /// unmapped collection are UNPREDICTABLE in the architecture). Commands run only while
    /// the ITS is on, so while it is off nothing here changes but a reset.
    fn direct_translations(&mut self, on: bool, host: &mut Vec<HostCommand>) {
        let before = host.len();
        for device in &mut self.devices {
            let (Backing::Assigned { physical_device }, Some((_, entries))) =
                (device.slot.backing, device.itt.as_mut())
            else {
                continue;
            };
            for (event, entry) in entries.iter_mut().enumerate() {
                let Some(t) = *entry else { continue };
                let event = event as u32;
                if !on {
                    host.push(HostCommand::Discard {
                        device: physical_device,
                        event,
                    });
                    continue;
                }
                let vcpu = self.collections.get(usize::from(t.icid)).copied().flatten();
                match vcpu {
                    Some(vcpu) => host.push(HostCommand::Vmapti {
                        device: physical_device,
                        event,
                        vintid: t.lpi,
                        vcpu: usize::from(vcpu),
                    }),
                    None => *entry = None,
                }
            }
        }
        if !on && host.len() > before {
            Self::sync_every_vpe(self.redistributors.len(), host);
        }
    }

    /// A VSYNC of every vCPU's vPE after DISCARDs the hypervisor issued on its own (the ITS
    /// turned off, a reset): once they return, no redistributor delivers a discarded vLPI.
    pub(super) fn sync_every_vpe(vcpus: usize, host: &mut Vec<HostCommand>) {
        host.extend((0..vcpus).map(|vcpu| HostCommand::Vsync { vcpu }));
    }

    /// The command queue (first byte, bytes), when GITS_CBASER is valid.
    pub(super) fn queue(&self) -> Option<(Ipa, u64)> {
        (self.cbaser & gits::VALID != 0).then(|| {
            (
                Ipa(self.cbaser & 0x000f_ffff_ffff_f000),
                ((self.cbaser & 0xff) + 1) * 0x1000,
            )
        })
    }

    /// Runs queued commands until CREADR reaches CWRITER or the batch's work is spent.
    fn process(&mut self, memory: &impl GuestMemory, outcome: &mut Outcome) {
        if !self.enabled || self.stalled {
            return;
        }
        let Some((base, size)) = self.queue() else {
            return;
        };
        if self.cwriter >= size {
            return;
        }
        // Physical commands are work too, those this access issued already (turning the ITS
        // on or off) included: without that, a batch of MAPCs moving a collection back and
        // forth issued a VMOVI per translation each, thousands per access.
        let mut budget = WORK_PER_ACCESS.saturating_sub(outcome.host.len() as u32);
        while self.creadr != self.cwriter && budget > 0 {
            let issued = outcome.host.len();
            let mut raw = [0u8; COMMAND_SIZE];
            let readable = base
                .checked_add(self.creadr)
                .filter(|&at| self.ram.contains(at, COMMAND_SIZE as u64))
                .is_some_and(|at| memory.read(at, &mut raw).is_ok());
            if !readable {
                self.stalled = true;
                self.error(VitsError::QueueUnreadable);
                return;
            }
            let cost = match self.execute(Command::decode(&raw), memory, outcome) {
                Ok(cost) => cost,
                Err(error) => {
                    self.error(error);
                    1
                }
            };
            self.sync_links(&mut outcome.host);
            let cost = cost.saturating_add((outcome.host.len() - issued) as u32);
            budget = budget.saturating_sub(cost);
            self.creadr = (self.creadr + COMMAND_SIZE as u64) % size;
        }
    }

    /// Checks `device` against the device table the guest declared.
    fn check_device_table(&self, device: u32) -> Result<(), VitsError> {
        let (at, bytes) = table_extent(self.baser[0]).ok_or(VitsError::DeviceTable)?;
        if !self.ram.contains(at, bytes) || u64::from(device) >= bytes / 8 {
            return Err(VitsError::DeviceTable);
        }
        Ok(())
    }

    /// Checks `icid` against the collections and the collection table the guest declared.
    fn check_collection_table(&self, icid: u16) -> Result<(), VitsError> {
        let (at, bytes) = table_extent(self.baser[1]).ok_or(VitsError::CollectionTable)?;
        if u32::from(icid) >= 1 << COLLECTION_ID_BITS
            || !self.ram.contains(at, bytes)
            || u64::from(icid) >= bytes / 8
        {
            return Err(VitsError::CollectionTable);
        }
        Ok(())
    }

    /// The vCPU an RDbase names (PTA = 0: its processor number).
    fn vcpu(&self, rdbase: u64) -> Result<usize, VitsError> {
        usize::try_from(rdbase)
            .ok()
            .filter(|&v| v < self.redistributors.len())
            .ok_or(VitsError::NoSuchVcpu)
    }

    /// Whether one of the slice's devices is an assigned function or a shared device (its
    /// interrupts may be delivered directly by the physical ITS).
    pub fn has_assigned(&self) -> bool {
        self.devices.iter().any(|d| {
            matches!(
                d.slot.backing,
                Backing::Assigned { .. } | Backing::Shared { .. }
            )
        })
    }

    /// Executes one command; returns the work it cost. On an error nothing has changed.
    fn execute(
        &mut self,
        command: Command,
        memory: &impl GuestMemory,
        outcome: &mut Outcome,
    ) -> Result<u32, VitsError> {
        let mut walked = 0usize;
        match command {
            Command::Mapd {
                device,
                size,
                itt,
                valid,
            } => {
                let index = self.device_index(device)?;
                self.check_device_table(device)?;
                let bits = u32::from(size) + 1;
                if valid {
                    if bits > EVENT_ID_BITS {
                        return Err(VitsError::IttTooLarge);
                    }
                    if !self.ram.contains(Ipa(itt), (1u64 << bits) * ITT_ENTRY_SIZE) {
                        return Err(VitsError::IttOutsideRam);
                    }
                }
                let entry = &mut self.devices[index];
                walked += Self::unmap_device(entry, &mut self.redistributors, &mut outcome.host);
                if valid {
                    let kept = (1usize << bits).min(entry.slot.events as usize);
                    entry.itt = Some((bits, vec![None; kept].into_boxed_slice()));
                    walked += kept;
                }
            }
            Command::Mapc {
                icid,
                rdbase,
                valid,
            } => {
                self.check_collection_table(icid)?;
                let target = if valid {
                    Some(self.vcpu(rdbase)?)
                } else {
                    None
                };
                // vCPU indices fit u16: `vcpu` checked them against the slice's vCPUs.
                let stored = target.and_then(|v| u16::try_from(v).ok());
                let old = core::mem::replace(&mut self.collections[usize::from(icid)], stored);
                let old = old.map(usize::from);
                if let (Some(vcpu), true) = (target, old != target) {
                    // Assigned translations of this collection follow it in hardware.
                    for device in &self.devices {
                        let (Backing::Assigned { physical_device }, Some((_, entries))) =
                            (device.slot.backing, &device.itt)
                        else {
                            continue;
                        };
                        walked += entries.len();
                        for (event, t) in entries.iter().enumerate() {
                            if t.is_some_and(|t| t.icid == icid) {
                                outcome.host.push(HostCommand::Vmovi {
                                    device: physical_device,
                                    event: event as u32,
                                    vcpu,
                                });
                            }
                        }
                    }
                }
            }
            Command::Mapti {
                device,
                event,
                lpi,
                icid,
            } => {
                let (index, entries) = self.declared_event(device, event)?;
                if event as usize >= entries.len() {
                    return Err(VitsError::EventBeyondLimit);
                }
                if !(LPI_BASE..1 << LPI_ID_BITS).contains(&lpi) {
                    return Err(VitsError::InvalidLpi);
                }
                self.check_collection_table(icid)?;
                let target = self.collection(icid);
                let backing = self.devices[index].slot.backing;
                if let Backing::Assigned { physical_device } = backing {
                    let vcpu = target?;
                    let (_, entries) = self.devices[index]
                        .itt
                        .as_ref()
                        .ok_or(VitsError::DeviceUnmapped)?;
                    if entries[event as usize].is_some() {
                        outcome.host.push(HostCommand::Discard {
                            device: physical_device,
                            event,
                        });
                    }
                    outcome.host.push(HostCommand::Vmapti {
                        device: physical_device,
                        event,
                        vintid: lpi,
                        vcpu,
                    });
                }
                if let Some((_, entries)) = self.devices[index].itt.as_mut() {
                    entries[event as usize] = Some(Translation { lpi, icid });
                }
                if let Ok(vcpu) = target {
                    self.reload_property(vcpu, lpi, memory);
                }
            }
            Command::Movi {
                device,
                event,
                icid,
            } => {
                let (index, t) = self.translation(device, event)?;
                self.check_collection_table(icid)?;
                let to = self.collection(icid)?;
                if let Ok(from) = self.collection(t.icid)
                    && self.redistributors[from].pending.take(t.lpi)
                {
                    self.redistributors[to].pending.set(t.lpi, true);
                    outcome.kick = outcome.kick.with(to);
                }
                if let Backing::Assigned { physical_device } = self.devices[index].slot.backing {
                    outcome.host.push(HostCommand::Vmovi {
                        device: physical_device,
                        event,
                        vcpu: to,
                    });
                }
                self.set_translation(index, event, Some(Translation { icid, ..t }));
            }
            Command::Discard { device, event } => {
                let (index, t) = self.translation(device, event)?;
                if let Ok(vcpu) = self.collection(t.icid) {
                    self.redistributors[vcpu].pending.set(t.lpi, false);
                }
                if let Backing::Assigned { physical_device } = self.devices[index].slot.backing {
                    outcome.host.push(HostCommand::Discard {
                        device: physical_device,
                        event,
                    });
                }
                self.set_translation(index, event, None);
            }
            Command::Int { device, event } | Command::Clear { device, event } => {
                let (index, t) = self.translation(device, event)?;
                let set = matches!(command, Command::Int { .. });
                let backing = match self.direct_event(index, event) {
                    // A linked event going to the guest directly: its pending state is the
                    // hardware's.
                    Some((physical_device, hardware)) => {
                        outcome.host.push(if set {
                            HostCommand::Int {
                                device: physical_device,
                                event: hardware,
                            }
                        } else {
                            HostCommand::Clear {
                                device: physical_device,
                                event: hardware,
                            }
                        });
                        return Ok(1);
                    }
                    None => self.devices[index].slot.backing,
                };
                match backing {
                    Backing::Assigned { physical_device } => outcome.host.push(if set {
                        HostCommand::Int {
                            device: physical_device,
                            event,
                        }
                    } else {
                        HostCommand::Clear {
                            device: physical_device,
                            event,
                        }
                    }),
                    Backing::Emulated | Backing::Shared { .. } if set => {
                        let vcpus = self.make_pending(t)?;
                        outcome.kick = outcome.kick.union(vcpus);
                    }
                    Backing::Emulated | Backing::Shared { .. } => {
                        let vcpu = self.collection(t.icid)?;
                        self.redistributors[vcpu].pending.set(t.lpi, false);
                    }
                }
            }
            Command::Inv { device, event } => {
                let (index, t) = self.translation(device, event)?;
                let vcpu = self.collection(t.icid)?;
                self.reload_property(vcpu, t.lpi, memory);
                outcome.kick = outcome.kick.with(vcpu);
                if let Backing::Assigned { physical_device } = self.devices[index].slot.backing {
                    outcome.host.push(HostCommand::Inv {
                        device: physical_device,
                        event,
                    });
                }
                if let Some((physical_device, hardware)) = self.direct_event(index, event) {
                    outcome.host.push(HostCommand::Inv {
                        device: physical_device,
                        event: hardware,
                    });
                }
            }
            Command::Invall { icid } => {
                self.check_collection_table(icid)?;
                let vcpu = self.collection(icid)?;
                self.reload_properties(vcpu, memory);
                outcome.kick = outcome.kick.with(vcpu);
                if self.has_assigned() {
                    outcome.host.push(HostCommand::Vinvall { vcpu });
                }
                walked += super::LPIS / 64;
            }
            Command::Movall { from, to } => {
                let (from, to) = (self.vcpu(from)?, self.vcpu(to)?);
                self.move_all(from, to);
                outcome.kick = outcome.kick.with(to);
                walked += super::LPIS / 64;
            }
            Command::Sync { rdbase } => {
                let vcpu = self.vcpu(rdbase)?;
                if self.has_assigned() {
                    outcome.host.push(HostCommand::Vsync { vcpu });
                }
            }
            Command::Unknown(number) => return Err(VitsError::UnknownCommand(number)),
        }
        Ok(1 + (walked / ENTRIES_PER_UNIT) as u32)
    }

    fn set_translation(&mut self, index: usize, event: u32, t: Option<Translation>) {
        if let Some((_, entries)) = self.devices[index].itt.as_mut()
            && let Some(entry) = entries.get_mut(event as usize)
        {
            *entry = t;
        }
    }

    /// The vCPUs that have LPIs pending and enabled (for a caller that must kick them).
    pub fn vcpus_with_pending(&self) -> VcpuSet {
        (0..self.redistributors.len())
            .filter(|&v| self.highest_pending(v).is_some())
            .fold(VcpuSet::EMPTY, VcpuSet::with)
    }
}
