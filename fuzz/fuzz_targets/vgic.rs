//! The virtual GICv3 (`logic::vgic`): any sequence of distributor and redistributor accesses
//! (any offset, width and value, redistributors of vCPUs the slice has and does not have),
//! device lines, SGIs, hardware interrupts, list-register passes where the "guest" finishes
//! any entries, vCPU and GIC resets.
//!
//! Invariants (IHI 0069H §11.2, §12.9-12.11):
//! - every VcpuSet returned names only the slice's vCPUs;
//! - an SPI the slice does not own is invisible: its enable, pending, active and group bits,
//!   priority byte and router read 0, whatever was written;
//! - a router of an owned SPI names a vCPU of the slice (Aff0 < vcpus, Aff1-3 zero);
//! - a 4-byte read fits in 32 bits; a byte read of a priority register fits in 8 bits;
//!   GICD_CTLR always shows ARE and DS; redistributors of vCPUs the slice lacks read 0;
//! - a list-register pass loads only private INTIDs, owned SPIs or (with a vITS) LPIs, never
//!   the same INTID into two live list registers of one vCPU, touches only the registers it
//!   was given, and a HW entry's pINTID is one the hypervisor raised with `raise_hardware`
//!   (an LPI entry never has the HW bit).
//!
//! Half the slices have a virtual ITS (GICv4 nodes): its registers, LPI redistributor
//! registers and device messages are driven too, over a small RAM the fuzzer writes.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use microvisor_fuzz::{fits, width};
use microvisor_logic::nvme::{GuestMemoryFault, GuestRam, Ipa, Pa};
use microvisor_logic::vgic::{
    INTIDS, MAX_LIST_REGISTERS, REDISTRIBUTOR_SIZE, SPI_BASE, VcpuSet, VirtualGic,
};
use microvisor_logic::vits::{Backing, DeviceSlot, GuestMemory, LPI_BASE, LPI_ID_BITS, VirtualIts};

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 0x2_0000;

/// The slice's RAM as the vITS reads it.
struct Ram(Vec<u8>);

impl GuestMemory for Ram {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault> {
        let start = ipa.0.checked_sub(RAM_BASE).ok_or(GuestMemoryFault)? as usize;
        let src = self
            .0
            .get(start..start.checked_add(buf.len()).ok_or(GuestMemoryFault)?)
            .ok_or(GuestMemoryFault)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

const SGI_BASE: u64 = 0x1_0000;

#[derive(Arbitrary, Debug)]
struct Setup {
    vcpus: u8,
    /// Owned SPIs, as offsets from 32 (mod 96).
    owned: Vec<u8>,
    mbi: bool,
    its: bool,
}

/// A distributor offset: mostly inside a register block the GIC names.
#[derive(Arbitrary, Debug)]
enum Offset {
    Raw(u16),
    /// Block (CTLR, IGROUPR, ISENABLER..ICACTIVER, IPRIORITYR, ICFGR, IROUTER, SETSPI) + index.
    Named(u8, u16),
}

const BLOCKS: [u64; 14] = [
    0x0000, 0x0040, 0x0048, 0x0080, 0x0100, 0x0180, 0x0200, 0x0280, 0x0300, 0x0380, 0x0400, 0x0c00,
    0x6000, 0xffe8,
];

impl Offset {
    fn get(&self) -> u64 {
        match *self {
            Offset::Raw(o) => u64::from(o),
            Offset::Named(b, i) => BLOCKS[usize::from(b) % BLOCKS.len()] + u64::from(i % 0x400),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    DistRead(Offset, u8),
    DistWrite(Offset, u8, u64),
    RedistRead(u8, bool, Offset, u8),
    RedistWrite(u8, bool, Offset, u8, u64),
    Raise(u8, u8),
    RaiseHardware(u8, u8, u16),
    Level(u8, bool),
    Sgi(u8, u64),
    /// vCPU, number of list registers, and which live ones the guest finished (bit n).
    Sync(u8, u8, u16),
    ResetVcpu(u8),
    Reset,
    /// vITS register access (offset mostly among the named ones), width, value.
    Its(u16, u8, Option<u64>),
    /// LPI redistributor register write: vCPU, register (CTLR, PROPBASER, PENDBASER), value.
    LpiRegister(u8, u8, u64),
    /// The NVMe function's message with this EventID.
    Message(u16),
    /// Eight bytes of RAM at this offset (commands, tables).
    Poke(u32, u64),
    /// What Linux does (tables, queue, LPIs on, collections), then maps NVMe events 0..n to
    /// LPIs 8192.. with the given priority byte, spread over the vCPUs.
    LinuxSetup(u8, u8),
}

struct Slice {
    gic: VirtualGic,
    vcpus: usize,
    owned: u128,
    /// Each vCPU's list registers as the hardware holds them.
    lrs: Vec<[u64; MAX_LIST_REGISTERS]>,
    physical: Vec<u32>,
    its: bool,
    ram: Ram,
}

impl Slice {
    fn owns(&self, intid: u32) -> bool {
        (SPI_BASE..INTIDS).contains(&intid) && self.owned & 1 << (intid - SPI_BASE) != 0
    }

    fn targets(&self, set: VcpuSet) {
        for v in set.iter() {
            assert!(v < self.vcpus, "VcpuSet names vCPU {v} of {}", self.vcpus);
        }
    }

    fn vcpu(&self, v: u8, outside: bool) -> usize {
        if outside {
            usize::from(v)
        } else {
            usize::from(v) % self.vcpus
        }
    }
}

fn step(s: &mut Slice, op: Op) {
    match op {
        Op::DistRead(offset, w) => {
            let (offset, w) = (offset.get(), width(w));
            let value = s.gic.distributor_read(offset, w);
            if w == 4 {
                assert!(fits(value, 4), "GICD {offset:#x} read {value:#x}");
            }
            if w == 1 && (0x400..0x480).contains(&offset) {
                assert!(fits(value, 1));
            }
            if offset == 0 {
                assert_eq!(value & 0x50, 0x50, "ARE and DS read as one");
            }
        }
        Op::DistWrite(offset, w, value) => {
            let touched = s.gic.distributor_write(offset.get(), width(w), value);
            s.targets(touched);
        }
        Op::RedistRead(v, outside, offset, w) => {
            let vcpu = s.vcpu(v, outside);
            let offset = offset.get() + if v & 1 != 0 { SGI_BASE } else { 0 };
            let w = width(w);
            let value = s
                .gic
                .redistributor_read(vcpu, offset % REDISTRIBUTOR_SIZE, w);
            if vcpu >= s.vcpus {
                assert_eq!(value, 0, "redistributor of a vCPU the slice lacks");
            }
            if w == 4 {
                assert!(fits(value, 4));
            }
        }
        Op::RedistWrite(v, outside, offset, w, value) => {
            let vcpu = s.vcpu(v, outside);
            let offset = offset.get() + if v & 1 != 0 { SGI_BASE } else { 0 };
            let touched =
                s.gic
                    .redistributor_write(vcpu, offset % REDISTRIBUTOR_SIZE, width(w), value);
            s.targets(touched);
        }
        Op::Raise(v, intid) => {
            let touched = s.gic.raise(s.vcpu(v, v >= 0xf0), u32::from(intid));
            s.targets(touched);
        }
        Op::RaiseHardware(v, intid, physical) => {
            let physical = u32::from(physical) & 0x1fff;
            s.physical.push(physical);
            let touched = s
                .gic
                .raise_hardware(s.vcpu(v, false), u32::from(intid), physical);
            s.targets(touched);
        }
        Op::Level(intid, level) => {
            let touched = s.gic.set_level(u32::from(intid), level);
            s.targets(touched);
        }
        Op::Sgi(sender, value) => {
            let touched = s.gic.send_sgi(s.vcpu(sender, false), value);
            s.targets(touched);
        }
        Op::Sync(v, count, finished) => {
            let vcpu = s.vcpu(v, v >= 0xf0);
            let count = usize::from(count) % (MAX_LIST_REGISTERS + 1);
            let Some(lrs) = s.lrs.get_mut(vcpu) else {
                let mut spare = [0u64; 4];
                let update = s.gic.sync_list_registers(vcpu, &mut spare);
                assert_eq!(update.changed, 0);
                assert_eq!(spare, [0; 4]);
                return;
            };
            // The guest acknowledges and deactivates what `finished` names.
            for (n, lr) in lrs.iter_mut().enumerate().take(count) {
                if finished & 1 << n != 0 {
                    *lr &= !(0b11 << 62);
                }
            }
            let before = *lrs;
            let update = s.gic.sync_list_registers(vcpu, &mut lrs[..count]);
            assert_eq!(
                lrs[count..],
                before[count..],
                "registers past the count changed"
            );
            for n in 0..MAX_LIST_REGISTERS {
                if update.changed & 1 << n == 0 {
                    assert_eq!(lrs[n], before[n], "LR{n} changed without its bit");
                } else {
                    assert!(n < count, "LR{n} reported changed, only {count} exist");
                }
            }
            let lrs = s.lrs[vcpu];
            let mut seen = 0u128;
            let mut lpis: Vec<u32> = Vec::new();
            for lr in &lrs[..count] {
                if (lr >> 62) & 0b11 == 0 {
                    continue;
                }
                let intid = (lr & 0xffff_ffff) as u32;
                if intid >= LPI_BASE {
                    assert!(s.its, "LPI {intid} without a vITS");
                    assert!(intid < 1 << LPI_ID_BITS, "LR holds INTID {intid}");
                    assert_eq!(lr & 1 << 61, 0, "HW bit on LPI {intid}");
                    assert!(!lpis.contains(&intid), "LPI {intid} in two list registers");
                    lpis.push(intid);
                    continue;
                }
                assert!(intid < SPI_BASE || s.owns(intid), "LR holds INTID {intid}");
                assert!(
                    seen & 1 << intid == 0,
                    "INTID {intid} in two list registers"
                );
                seen |= 1 << intid;
                if lr & 1 << 61 != 0 {
                    let p = ((lr >> 32) & 0x1fff) as u32;
                    assert!(s.physical.contains(&p), "HW link to pINTID {p}");
                }
            }
        }
        Op::ResetVcpu(v) => {
            let vcpu = s.vcpu(v, v >= 0xf0);
            for p in s.gic.reset_vcpu(vcpu) {
                assert!(s.physical.contains(&p));
            }
            if let Some(lrs) = s.lrs.get_mut(vcpu) {
                *lrs = [0; MAX_LIST_REGISTERS];
            }
        }
        Op::Reset => {
            s.gic.reset();
            s.lrs.iter_mut().for_each(|l| *l = [0; MAX_LIST_REGISTERS]);
        }
        Op::Its(offset, w, value) => {
            const NAMED: [u64; 8] = [0x0, 0x8, 0x80, 0x88, 0x90, 0x100, 0x108, 0x1_0040];
            let offset = if offset & 0x8000 == 0 {
                NAMED[usize::from(offset) % NAMED.len()]
            } else {
                u64::from(offset & 0x7fff) * 4
            };
            let (width, ram) = (width(w), &s.ram);
            let Some(its) = s.gic.its_mut() else {
                return;
            };
            let outcome = match value {
                Some(v) => its.write(offset, width, v, ram),
                None => its.read(offset, width, ram).1,
            };
            let touched = s.gic.lpis_changed(outcome.kick);
            s.targets(touched);
        }
        Op::LpiRegister(v, register, value) => {
            let offset = [0x0u64, 0x70, 0x78][usize::from(register) % 3];
            let (vcpu, ram) = (s.vcpu(v, v >= 0xf0), &s.ram);
            let Some(its) = s.gic.its_mut() else {
                return;
            };
            let kick = its.redistributor_write(vcpu, offset, 8, value, ram).kick;
            let touched = s.gic.lpis_changed(kick);
            s.targets(touched);
        }
        Op::Message(event) => {
            let Some(its) = s.gic.its_mut() else {
                return;
            };
            let kick = its.translate(0, u32::from(event)).unwrap_or_default();
            let touched = s.gic.lpis_changed(kick);
            s.targets(touched);
        }
        Op::LinuxSetup(n, priority) => {
            use microvisor_logic::vits::Command;
            const QUEUE: u64 = RAM_BASE;
            const PROPERTIES: u64 = RAM_BASE + 0x1_0000;
            const TABLES: u64 = RAM_BASE + 0x2000;
            let vcpus = s.vcpus;
            s.ram.0[0x1_0000..0x1_2000].fill(priority | 1);
            let mut commands: Vec<Command> = (0..vcpus)
                .map(|v| Command::Mapc {
                    icid: v as u16,
                    rdbase: v as u64,
                    valid: true,
                })
                .collect();
            commands.push(Command::Mapd {
                device: 0,
                size: 6,
                itt: TABLES + 0x2000,
                valid: true,
            });
            for event in 0..u32::from(n % 64) {
                commands.push(Command::Mapti {
                    device: 0,
                    event,
                    lpi: LPI_BASE + event,
                    icid: (event as usize % vcpus) as u16,
                });
            }
            for (i, c) in commands.iter().enumerate() {
                s.ram.0[i * 32..i * 32 + 32].copy_from_slice(&c.encode());
            }
            let ram = &s.ram;
            let Some(its) = s.gic.its_mut() else {
                return;
            };
            its.write(0x0, 4, 0, ram);
            its.write(0x100, 8, TABLES | 1 << 63, ram);
            its.write(0x108, 8, (TABLES + 0x1000) | 1 << 63, ram);
            its.write(0x80, 8, QUEUE | 1 << 63, ram);
            its.write(0x88, 8, 0, ram);
            its.write(0x0, 4, 1, ram);
            for v in 0..vcpus {
                its.redistributor_write(v, 0x70, 8, PROPERTIES | 13, ram);
                its.redistributor_write(v, 0x0, 4, 1, ram);
            }
            let mut kick = VcpuSet::EMPTY;
            its.write(0x88, 8, (commands.len() * 32) as u64, ram);
            for _ in 0..4 {
                kick = kick.union(its.read(0x90, 8, ram).1.kick);
            }
            let touched = s.gic.lpis_changed(kick);
            s.targets(touched);
        }
        Op::Poke(offset, value) => {
            let at = (offset as usize) % (RAM_SIZE as usize - 8);
            s.ram.0[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// Every SPI the slice does not own reads as zero everywhere.
fn foreign_spis_invisible(s: &Slice) {
    for word in 1..(INTIDS / 32) {
        let foreign: u32 = (0..32)
            .filter(|b| !s.owns(word * 32 + b))
            .fold(0, |m, b| m | 1 << b);
        for block in [0x080u64, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380] {
            let value = s.gic.distributor_read(block + u64::from(word) * 4, 4) as u32;
            assert_eq!(
                value & foreign,
                0,
                "GICD {block:#x} word {word}: {value:#x}"
            );
        }
    }
    for intid in SPI_BASE..INTIDS {
        let priority = s.gic.distributor_read(0x400 + u64::from(intid), 1);
        let router = s.gic.distributor_read(0x6000 + 8 * u64::from(intid), 8);
        if s.owns(intid) {
            assert_eq!(router & 0xff_00ff_ff00, 0, "router of {intid} names Aff1-3");
            assert!(
                (router & 0xff) < s.vcpus as u64,
                "router of {intid}: {router:#x}"
            );
        } else {
            assert_eq!((priority, router), (0, 0), "foreign SPI {intid}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let vcpus = usize::from(setup.vcpus % 8) + 1;
    let owned_spis: Vec<u32> = setup
        .owned
        .iter()
        .map(|&o| SPI_BASE + u32::from(o) % 96)
        .collect();
    let owned = owned_spis
        .iter()
        .fold(0u128, |m, i| m | 1 << (i - SPI_BASE));
    let mut gic = VirtualGic::new(vcpus, &owned_spis);
    if setup.mbi {
        gic = gic.with_mbi();
    }
    if setup.its {
        let ram = GuestRam {
            ipa_base: Ipa(RAM_BASE),
            size: RAM_SIZE,
            pa_base: Pa(0x1_0000_0000),
        };
        let nvme = DeviceSlot {
            id: 0,
            events: 128,
            backing: Backing::Emulated,
        };
        gic = gic.with_its(VirtualIts::new(vcpus, ram, &[nvme]));
    }
    let mut s = Slice {
        gic,
        vcpus,
        owned,
        lrs: vec![[0; MAX_LIST_REGISTERS]; vcpus],
        physical: Vec::new(),
        its: setup.its,
        ram: Ram(vec![0; RAM_SIZE as usize]),
    };
    let mut steps = 0;
    while let Ok(op) = Op::arbitrary(&mut u) {
        step(&mut s, op);
        steps += 1;
        if u.is_empty() || steps > 512 {
            break;
        }
    }
    foreign_spis_invisible(&s);
});
