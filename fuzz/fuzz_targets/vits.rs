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
//!   outside it: there must be none).
#![no_main]

use std::cell::Cell;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use microvisor_fuzz::width;
use microvisor_logic::nvme::{GuestMemoryFault, GuestRam, Ipa, Pa};
use microvisor_logic::vits::{
    Backing, Command, DeviceSlot, GuestMemory, HostCommand, LPI_BASE, LPI_ID_BITS, MAX_EVENTS,
    Outcome, VirtualIts, WORK_PER_ACCESS, gits,
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
}

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
}

impl Slice {
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
                assert!(
                    self.slots.iter().any(|s| s.backing
                        == Backing::Assigned {
                            physical_device: device
                        }
                        && event < s.events.min(MAX_EVENTS)),
                    "{h:?} names no assigned function's event"
                );
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
                    .any(|s| matches!(s.backing, Backing::Assigned { .. })),
                "{r:?} without an assigned function"
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
        Op::Reset => true,
        _ => false,
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
    };
    s.check(&outcome);
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
            } else {
                Backing::Emulated
            },
        })
        .collect();
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
