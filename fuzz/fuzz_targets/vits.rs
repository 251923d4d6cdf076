//! The virtual ITS (`logic::vits`): a slice with 1-8 vCPUs and up to four PCI functions
//! (emulated or assigned, any event limit) whose guest writes any GITS register, any LPI
//! redistributor register, scribbles commands (structured or raw bytes) anywhere in a small
//! RAM, signals device messages, takes pending LPIs into list registers, and resets.
//!
//! Invariants (IHI 0069H chapter 5, docs/decisions/0004-gicv4-virtual-its.md):
//! - every vCPU set names only the slice's vCPUs;
//! - one access runs at most `WORK_PER_ACCESS` commands (CREADR advances by at most that many
//!   slots) and CREADR stays inside the queue;
//! - the vITS never keeps more translation entries than the sum of its devices' limits;
//! - every physical command names an assigned function's own physical DeviceID, an event below
//!   its limit, a vCPU of the slice, and (VMAPTI) an LPI INTID;
//! - the most urgent pending LPI of a vCPU is an LPI, and taking it clears it;
//! - guest memory is read only inside the slice's RAM (the fake RAM refuses and counts reads
//!   outside it: there must be none);
//! - shared devices (the NVMe share's direct queues, decision 5): the hypervisor links and
//!   unlinks their hardware events (0-7) to guest events while the guest does anything;
//!   physical commands name their physical DeviceID and a hardware event only;
//! - the physical ITS is never given a command it would reject: a mapping (VMAPTI, the
//!   hypervisor's own LPI back) only over nothing, DISCARD only of a mapping, VMOVI, INV, INT
//!   and CLEAR only on an event mapped to a vLPI (a shared device's hardware events start
//!   mapped home).
#![no_main]

use std::cell::Cell;
use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use microvisor_fuzz::width;
use microvisor_logic::nvme::{GuestMemoryFault, GuestRam, Ipa, Pa};
use microvisor_logic::vits::{
    Backing, Command, DeviceSlot, GuestMemory, HostCommand, Home, LPI_BASE, LPI_ID_BITS,
    MAX_EVENTS, Outcome, VirtualIts, WORK_PER_ACCESS, gits,
};

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 0x4_0000;
const RAM_PA: u64 = 0x1_0000_0000;

struct Ram {
    bytes: Vec<u8>,
    outside: Cell<u32>,
}

impl GuestMemory for Ram {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault> {
        let start = ipa.0.checked_sub(RAM_BASE).map(|s| s as usize);
        match start.and_then(|s| self.bytes.get(s..s.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => {
                self.outside.set(self.outside.get() + 1);
                Err(GuestMemoryFault)
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Slot {
    id: u8,
    events: u16,
    assigned: bool,
    /// Not assigned: shared (the NVMe share with direct queues) rather than emulated.
    shared: bool,
    physical: u16,
}

#[derive(Arbitrary, Debug)]
struct Setup {
    vcpus: u8,
    slots: Vec<Slot>,
}

/// A guest address: mostly inside the small RAM, sometimes anywhere.
#[derive(Arbitrary, Debug)]
enum Address {
    Inside(u32),
    Raw(u64),
}

impl Address {
    fn get(&self) -> u64 {
        match *self {
            Address::Inside(o) => RAM_BASE + u64::from(o) % (RAM_SIZE + 0x1000),
            Address::Raw(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Structured {
    Mapd(u8, u8, Address, bool),
    Mapc(u16, u64, bool),
    Mapti(u8, u32, u16, u16),
    Movi(u8, u32, u16),
    Discard(u8, u32),
    Int(u8, u32),
    Clear(u8, u32),
    Inv(u8, u32),
    Invall(u16),
    Movall(u64, u64),
    Sync(u64),
}

impl Structured {
    fn command(&self) -> Command {
        let d = u32::from;
        match *self {
            Structured::Mapd(device, size, ref itt, valid) => Command::Mapd {
                device: d(device),
                size: size % 32,
                itt: itt.get(),
                valid,
            },
            Structured::Mapc(icid, rdbase, valid) => Command::Mapc {
                icid,
                rdbase: rdbase % 16,
                valid,
            },
            Structured::Mapti(device, event, lpi, icid) => Command::Mapti {
                device: d(device),
                event: event % 4096,
                lpi: LPI_BASE - 2 + u32::from(lpi) % 8200,
                icid: icid % 16,
            },
            Structured::Movi(device, event, icid) => Command::Movi {
                device: d(device),
                event: event % 4096,
                icid: icid % 16,
            },
            Structured::Discard(device, event) => Command::Discard {
                device: d(device),
                event: event % 4096,
            },
            Structured::Int(device, event) => Command::Int {
                device: d(device),
                event: event % 4096,
            },
            Structured::Clear(device, event) => Command::Clear {
                device: d(device),
                event: event % 4096,
            },
            Structured::Inv(device, event) => Command::Inv {
                device: d(device),
                event: event % 4096,
            },
            Structured::Invall(icid) => Command::Invall { icid: icid % 16 },
            Structured::Movall(from, to) => Command::Movall {
                from: from % 16,
                to: to % 16,
            },
            Structured::Sync(rd) => Command::Sync { rdbase: rd % 16 },
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read(u16, u8),
    Write(u16, u8, u64),
    /// Register block (CTLR, CBASER, CWRITER, CREADR, BASER0, BASER1) and a value.
    Named(u8, u64),
    RedistRead(u8, u8, u8),
    RedistWrite(u8, u8, u8, u64),
    /// A command at the queue slot the guest is about to publish, then CWRITER.
    Queue(Structured),
    QueueRaw([u8; 32]),
    Poke(Address, [u8; 8]),
    Translate(u8, u32),
    Take(u8),
    Reset,
    /// The hypervisor makes hardware event `hw` of the shared device (guest DeviceID) follow
    /// guest event `event`, or stops guest event `event` following any (`None`).
    Link(u8, u32, Option<u8>),
    /// The hypervisor stops hardware event `hw` following any guest event.
    UnlinkHardware(u8, u8),
    /// What Linux does at boot: tables, the queue, LPIs on every vCPU, a collection per
    /// vCPU, and events 0-7 of every device mapped (so that links can go direct).
    Boot,
}

/// What a step must leave home (see `step`).
enum Kind {
    Unlink(u32, u32),
    Reset,
    Other,
}

/// Hardware events a shared device has (the NVMe share's queues).
const HARDWARE_EVENTS: u32 = 8;

const NAMED: [u64; 6] = [
    gits::CTLR,
    gits::CBASER,
    gits::CWRITER,
    gits::CREADR,
    gits::BASER,
    gits::BASER + 8,
];
const REDIST: [u64; 5] = [0x0, 0x70, 0x74, 0x78, 0x7c];

struct Slice {
    its: VirtualIts,
    ram: Ram,
    vcpus: usize,
    slots: Vec<DeviceSlot>,
    writer: u64,
    /// The physical ITS's translations of the slice's devices: `true` for a vLPI, `false`
    /// for the hypervisor's own LPI.
    physical: BTreeMap<(u32, u32), bool>,
}

impl Slice {
    /// Applies `host` to the physical ITS model, checking each command is one it accepts.
    fn apply(&mut self, host: &[HostCommand]) {
        for h in host {
            match *h {
                HostCommand::Vmapti { device, event, .. } => {
                    let old = self.physical.insert((device, event), true);
                    assert!(old.is_none(), "{h:?} over a mapping");
                }
                HostCommand::Restore { device, event, .. } => {
                    let old = self.physical.insert((device, event), false);
                    assert!(old.is_none(), "{h:?} over a mapping");
                }
                HostCommand::Discard { device, event } => {
                    let old = self.physical.remove(&(device, event));
                    assert!(old.is_some(), "{h:?} of nothing");
                }
                HostCommand::Vmovi { device, event, .. }
                | HostCommand::Inv { device, event }
                | HostCommand::Int { device, event }
                | HostCommand::Clear { device, event } => {
                    let mapped = self.physical.get(&(device, event));
                    assert_eq!(mapped, Some(&true), "{h:?} on no vLPI");
                }
                HostCommand::Vinvall { .. } | HostCommand::Vsync { .. } => {}
            }
        }
    }

    fn check(&self, outcome: &Outcome) {
        for v in outcome.kick.iter() {
            assert!(v < self.vcpus, "kick of vCPU {v} of {}", self.vcpus);
        }
        for h in &outcome.host {
            let (device, event, vcpu) = match *h {
                HostCommand::Vmapti {
                    device,
                    event,
                    vintid,
                    vcpu,
                } => {
                    assert!((LPI_BASE..1 << LPI_ID_BITS).contains(&vintid), "{h:?}");
                    (Some(device), Some(event), Some(vcpu))
                }
                HostCommand::Vmovi {
                    device,
                    event,
                    vcpu,
                }
                | HostCommand::Restore {
                    device,
                    event,
                    vcpu,
                    ..
                } => (Some(device), Some(event), Some(vcpu)),
                HostCommand::Discard { device, event }
                | HostCommand::Inv { device, event }
                | HostCommand::Int { device, event }
                | HostCommand::Clear { device, event } => (Some(device), Some(event), None),
                HostCommand::Vinvall { vcpu } | HostCommand::Vsync { vcpu } => {
                    (None, None, Some(vcpu))
                }
            };
            if let Some(device) = device {
                let event = event.unwrap();
                let ours = self.slots.iter().any(|s| match s.backing {
                    Backing::Assigned { physical_device } => {
                        physical_device == device && event < s.events.min(MAX_EVENTS)
                    }
                    Backing::Shared { physical_device } => {
                        physical_device == device && event < HARDWARE_EVENTS
                    }
                    Backing::Emulated => false,
                });
                assert!(ours, "{h:?} names no assigned function's or shared device's event");
            }
            if let Some(vcpu) = vcpu {
                assert!(vcpu < self.vcpus, "{h:?}");
            }
        }
        if let Some(r) = outcome.resident {
            // The redistributor reads 2^id_bits - 8192 property bytes from there: all of
            // them must be the slice's RAM, and only with an assigned function behind it.
            let bytes = (1u64 << r.id_bits) - u64::from(LPI_BASE);
            assert!(r.vcpu < self.vcpus && r.id_bits <= LPI_ID_BITS, "{r:?}");
            assert!(
                r.properties.0 >= RAM_PA && r.properties.0 + bytes <= RAM_PA + RAM_SIZE,
                "{r:?} outside the slice's RAM"
            );
            assert!(
                self.slots
                    .iter()
                    .any(|s| !matches!(s.backing, Backing::Emulated)),
                "{r:?} without an assigned function or shared device"
            );
        }
        let limit: usize = self
            .slots
            .iter()
            .map(|s| s.events.min(MAX_EVENTS) as usize)
            .sum();
        assert!(self.its.entries_kept() <= limit);
        assert_eq!(self.ram.outside.get(), 0, "read outside the slice's RAM");
    }
}

fn step(s: &mut Slice, op: Op) {
    let before = s.its.queue_position().0;
    let cbaser = s.its.read(gits::CBASER, 8, &s.ram).0;
    // A CBASER write (even of the same value) and a reset put CREADR back to 0.
    let rewinds = match op {
        Op::Write(offset, ..) => u64::from(offset) & !7 == gits::CBASER,
        Op::Named(block, _) => {
            block & 0x80 == 0 && NAMED[usize::from(block) % NAMED.len()] == gits::CBASER
        }
        // Many accesses in one step (and CBASER written).
        Op::Reset | Op::Boot => true,
        _ => false,
    };
    let op_kind = match op {
        Op::UnlinkHardware(device, hw) => {
            Kind::Unlink(u32::from(device % 32), u32::from(hw) % HARDWARE_EVENTS)
        }
        Op::Reset => Kind::Reset,
        _ => Kind::Other,
    };
    let outcome = match op {
        Op::Read(offset, w) => s.its.read(u64::from(offset), width(w), &s.ram).1,
        Op::Write(offset, w, value) => s.its.write(u64::from(offset), width(w), value, &s.ram),
        Op::Named(block, value) => {
            let offset = NAMED[usize::from(block) % NAMED.len()];
            if block & 0x80 != 0 {
                s.its.read(offset, 8, &s.ram).1
            } else {
                s.its.write(offset, 8, value, &s.ram)
            }
        }
        Op::RedistRead(v, offset, w) => {
            let value = s.its.redistributor_read(
                usize::from(v % 10),
                REDIST[usize::from(offset) % REDIST.len()],
                width(w),
            );
            if usize::from(v % 10) >= s.vcpus {
                assert_eq!(value, 0);
            }
            Outcome::default()
        }
        Op::RedistWrite(v, offset, w, value) => s.its.redistributor_write(
            usize::from(v % 10),
            REDIST[usize::from(offset) % REDIST.len()],
            width(w),
            value,
            &s.ram,
        ),
        Op::Queue(command) => publish(s, command.command().encode()),
        Op::QueueRaw(raw) => publish(s, raw),
        Op::Poke(address, bytes) => {
            let at = address.get().wrapping_sub(RAM_BASE) as usize;
            if let Some(dst) = s.ram.bytes.get_mut(at..at.saturating_add(8)) {
                dst.copy_from_slice(&bytes);
            }
            Outcome::default()
        }
        Op::Translate(device, event) => Outcome {
            kick: s
                .its
                .translate(u32::from(device), event % 4096)
                .unwrap_or_default(),
            ..Outcome::default()
        },
        Op::Take(v) => {
            let vcpu = usize::from(v % 10);
            if let Some((lpi, _)) = s.its.highest_pending(vcpu) {
                assert!((LPI_BASE..1 << LPI_ID_BITS).contains(&lpi));
                assert!(s.its.take(vcpu, lpi) && !s.its.is_pending(vcpu, lpi));
            }
            Outcome::default()
        }
        Op::Reset => Outcome {
            host: s.its.reset(),
            ..Outcome::default()
        },
        Op::Link(device, event, hw) => {
            let hardware = hw.map(|hw| {
                let hw = u32::from(hw) % HARDWARE_EVENTS;
                let home = Home {
                    lpi: LPI_BASE + hw,
                    vcpu: hw as usize % s.vcpus,
                };
                (hw, home)
            });
            Outcome {
                host: s
                    .its
                    .link(u32::from(device % 32), event % 4096, hardware)
                    .unwrap_or_default(),
                ..Outcome::default()
            }
        }
        Op::Boot => boot(s),
        Op::UnlinkHardware(device, hw) => Outcome {
            host: s
                .its
                .unlink_hardware(u32::from(device % 32), u32::from(hw) % HARDWARE_EVENTS)
                .unwrap_or_default(),
            ..Outcome::default()
        },
    };
    s.check(&outcome);
    s.apply(&outcome.host);
    // A hardware event no longer linked is home: its interrupts reach the hypervisor.
    let home = |s: &Slice, device: u32, hw: u32| {
        let Some(&DeviceSlot {
            backing: Backing::Shared { physical_device },
            ..
        }) = s.slots.iter().find(|d| d.id == device)
        else {
            return;
        };
        let state = s.physical.get(&(physical_device, hw));
        assert_eq!(state, Some(&false), "hardware event {hw} not home after its unlink");
    };
    match op_kind {
        Kind::Unlink(device, hw) => home(s, device, hw),
        Kind::Reset => {
            for device in s.slots.iter().map(|d| d.id).collect::<Vec<_>>() {
                for hw in 0..HARDWARE_EVENTS {
                    home(s, device, hw);
                }
            }
        }
        Kind::Other => {}
    }
    // CREADR moves by at most one batch.
    let after = s.its.queue_position().0;
    if !rewinds && s.its.read(gits::CBASER, 8, &s.ram).0 == cbaser && cbaser >> 63 != 0 {
        let size = ((cbaser & 0xff) + 1) * 0x1000;
        assert!(after < size, "CREADR {after:#x} outside a {size:#x} queue");
        assert!(
            (after + size - before % size) % size <= 32 * u64::from(WORK_PER_ACCESS),
            "CREADR moved {before:#x} -> {after:#x}"
        );
    }
}

/// [`Op::Boot`]: the guest's tables and queue in its RAM, LPIs 8192-8199 enabled; each
/// access's outcome is checked and applied as it comes.
fn boot(s: &mut Slice) -> Outcome {
    const TABLES: u64 = RAM_BASE + 0x1000;
    const QUEUE: u64 = RAM_BASE + 0x3000;
    const ITTS: u64 = RAM_BASE + 0x8000;
    const PROPERTIES: u64 = RAM_BASE + 0x1_0000;
    const PENDING: u64 = RAM_BASE + 0x2_0000;
    let gather = |s: &mut Slice, outcome: Outcome| {
        s.check(&outcome);
        s.apply(&outcome.host);
    };
    let o = s.its.write(gits::CTLR, 8, 0, &s.ram);
    gather(s, o);
    let o = s.its.write(gits::BASER, 8, TABLES | gits::VALID, &s.ram);
    gather(s, o);
    let o = s.its.write(gits::BASER + 8, 8, (TABLES + 0x1000) | gits::VALID, &s.ram);
    gather(s, o);
    let o = s.its.write(gits::CBASER, 8, QUEUE | gits::VALID, &s.ram);
    gather(s, o);
    s.writer = 0;
    let o = s.its.write(gits::CWRITER, 8, 0, &s.ram);
    gather(s, o);
    let o = s.its.write(gits::CTLR, 8, gits::CTLR_ENABLED, &s.ram);
    gather(s, o);
    let properties = (PROPERTIES - RAM_BASE) as usize;
    s.ram.bytes[properties..properties + 8].fill(0xa0 | 1);
    for v in 0..s.vcpus {
        let writes = [
            (0x70, PROPERTIES | 13),
            (0x78, PENDING + 0x2000 * v as u64),
            (0x0, 1),
        ];
        for (offset, value) in writes {
            let o = s.its.redistributor_write(v, offset, 8, value, &s.ram);
            gather(s, o);
        }
        for command in [
            Command::Mapc {
                icid: v as u16,
                rdbase: v as u64,
                valid: true,
            },
            Command::Sync { rdbase: v as u64 },
        ] {
            let o = publish(s, command.encode());
            gather(s, o);
        }
    }
    let devices: Vec<(u32, u32)> = s.slots.iter().map(|d| (d.id, d.events)).collect();
    for (index, (device, events)) in devices.into_iter().enumerate() {
        let mut commands = vec![Command::Mapd {
            device,
            size: 3,
            itt: ITTS + 0x1000 * index as u64,
            valid: true,
        }];
        for event in 0..events.min(HARDWARE_EVENTS) {
            commands.push(Command::Mapti {
                device,
                event,
                lpi: LPI_BASE + event,
                icid: (event as usize % s.vcpus) as u16,
            });
        }
        for command in commands {
            let o = publish(s, command.encode());
            gather(s, o);
        }
    }
    Outcome::default()
}

/// Writes `raw` at the guest's next queue slot (wherever CBASER points, if inside RAM) and
/// publishes it with CWRITER.
fn publish(s: &mut Slice, raw: [u8; 32]) -> Outcome {
    let cbaser = s.its.read(gits::CBASER, 8, &s.ram).0;
    let base = cbaser & 0x000f_ffff_ffff_f000;
    let size = ((cbaser & 0xff) + 1) * 0x1000;
    s.writer %= size;
    let at = base.wrapping_add(s.writer).wrapping_sub(RAM_BASE) as usize;
    if let Some(dst) = s.ram.bytes.get_mut(at..at.saturating_add(32)) {
        dst.copy_from_slice(&raw);
    }
    s.writer = (s.writer + 32) % size;
    s.its.write(gits::CWRITER, 8, s.writer, &s.ram)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let vcpus = usize::from(setup.vcpus % 8) + 1;
    let slots: Vec<DeviceSlot> = setup
        .slots
        .iter()
        .take(4)
        .map(|s| DeviceSlot {
            id: u32::from(s.id % 32),
            events: u32::from(s.events) % 4100,
            backing: if s.assigned {
                Backing::Assigned {
                    physical_device: u32::from(s.physical),
                }
            } else if s.shared {
                Backing::Shared {
                    physical_device: u32::from(s.physical),
                }
            } else {
                Backing::Emulated
            },
        })
        .collect();
    // Physical DeviceIDs are the node's functions': one slot each.
    let mut slots = slots;
    let mut physical_ids = Vec::new();
    slots.retain(|s| match s.backing {
        Backing::Assigned { physical_device } | Backing::Shared { physical_device } => {
            let fresh = !physical_ids.contains(&physical_device);
            physical_ids.push(physical_device);
            fresh
        }
        Backing::Emulated => true,
    });
    // The vITS keeps the first slot of each guest DeviceID: so does the checker.
    let mut kept: Vec<DeviceSlot> = Vec::new();
    for slot in &slots {
        if !kept.iter().any(|k| k.id == slot.id) {
            kept.push(*slot);
        }
    }
    let ram = GuestRam {
        ipa_base: Ipa(RAM_BASE),
        size: RAM_SIZE,
        pa_base: Pa(RAM_PA),
    };
    let mut s = Slice {
        its: VirtualIts::new(vcpus, ram, &slots),
        ram: Ram {
            bytes: vec![0; RAM_SIZE as usize],
            outside: Cell::new(0),
        },
        vcpus,
        // A shared device's hardware events are mapped to the hypervisor's LPIs at boot.
        physical: kept
            .iter()
            .filter_map(|k| match k.backing {
                Backing::Shared { physical_device } => Some(physical_device),
                _ => None,
            })
            .flat_map(|d| (0..HARDWARE_EVENTS).map(move |e| ((d, e), false)))
            .collect(),
        slots: kept,
        writer: 0,
    };
    let mut steps = 0;
    while let Ok(op) = Op::arbitrary(&mut u) {
        step(&mut s, op);
        steps += 1;
        if u.is_empty() || steps > 512 {
            break;
        }
    }
});
