//! Virtual PCI configuration space: the slice's emulated NVMe function (`logic::vpci`) and a
//! physical function assigned to the slice (`logic::passthrough`, on top of `logic::pci` and
//! `logic::msix`), built from a configuration snapshot the fuzzer may corrupt, then driven by
//! any sequence of configuration reads and writes (any offset, width, alignment), BAR
//! accesses, physical interrupts, reserved ranges and resets.
//!
//! Invariants (PCI Local Bus 3.0 §6, PCIe Base 4.0 §7, docs/architecture.md "Assigned
//! functions: what the slice sees"):
//! - vpci: a function other than 00.0 (one the slice does not own) reads all-ones and
//!   ignores writes; every read is a dword; `extract` fits the access width and `merge`
//!   changes only the bytes written;
//! - assigned: a configuration read past 4 KiB reads 0; a misaligned or odd-width one reads
//!   all-ones of its width; every other read fits its width; the extended space reads 0; the
//!   header type never has the multi-function bit; Status shows only the capabilities list;
//!   the capability list reachable from 0x34 ends, and shows only PM, vendor-specific, PCI
//!   Express and MSI-X (never MSI or anything unknown);
//! - every `BarMapped` puts the BAR inside one of the slice's windows, clear of its reserved
//!   ranges, its direct pages inside its guest range and inside the physical BAR; every
//!   forwarded BAR access lands inside a placed physical BAR; emulated BAR reads fit their
//!   width;
//! - virtio: a forwarded write reaches the device with the guest's value, except at most bit
//!   1 of one byte set on its behalf (VIRTIO_F_ACCESS_PLATFORM), and only for a function
//!   that offers the feature; with its capabilities untouched, that byte is `driver_feature`
//!   and the page holding it is never mapped directly;
//! - every MSI-X route, injection and delivered interrupt names one of the slice's SPIs;
//!   a function level reset is asked for only when the snapshot advertises FLR.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use microvisor_fuzz::{fits, width, width_mask};
use microvisor_logic::inventory::Region;
use microvisor_logic::passthrough::{
    AssignedFunction, Assignment, BarRead, BarWrite, ConfigSnapshot, Effect, Interrupt, MsiTarget,
    Route,
};
use microvisor_logic::pci::{Bdf, MemoryBar, PlacedBar};
use microvisor_logic::vpci::{self, VirtualFunction};

const WINDOWS: [Region; 2] = [
    Region::new(0x1000_0000, 0x100_0000),
    Region::new(0x80_0000_0000, 0x4000_0000),
];
const FIRST_SPI: u32 = 64;
const SPI_COUNT: u32 = 32;
const MSI: MsiTarget = MsiTarget::Spis {
    doorbell: 0x0800_0040,
    first_spi: FIRST_SPI,
    spi_count: SPI_COUNT,
};
const BAR1_PHYSICAL: u64 = 0x80_1000_1000;
const BAR4_PHYSICAL: u64 = 0x80_0000_4000;

/// Where the virtio common configuration is: offset 0 of BAR4, `driver_feature` at 0xc.
const DRIVER_FEATURE: u64 = BAR4_PHYSICAL + 0x0c;
/// VIRTIO_F_ACCESS_PLATFORM.
const ACCESS_PLATFORM: u64 = 1 << 33;

/// A virtio-net function with a 32-bit BAR1 (MSI-X table at 0, PBA at 0x800) and a 64-bit
/// prefetchable BAR4; capabilities PM (0x40) -> MSI (0x50, hidden) -> MSI-X (0x60) -> PCI
/// Express with FLR (0x70, 0x3c bytes) -> unknown (0x90, hidden) -> virtio common
/// configuration (0xb0: BAR4 + 0) -> virtio device configuration (0xc0: BAR4 + 0x800); SR-IOV
/// in the extended space.
fn snapshot(bar1_size: u64, vectors: u16) -> Vec<u32> {
    let mut w = vec![0u32; 1024];
    let mut set = |offset: usize, value: u32| w[offset / 4] = value;
    set(0x00, 0x1041_1af4);
    set(0x04, 0x0010_0007);
    set(0x08, 0x0200_0001);
    set(0x0c, 0x0080_0010);
    set(0x14, BAR1_PHYSICAL as u32);
    set(0x20, BAR4_PHYSICAL as u32 | 0xc);
    set(0x24, (BAR4_PHYSICAL >> 32) as u32);
    set(0x34, 0x40);
    set(0x3c, 0x0000_010b);
    set(0x40, 0x0003_5001);
    set(0x44, 0x0000_0008);
    set(0x50, 0x0080_6005);
    set(0x60, u32::from((vectors.max(1) - 1) & 0x7ff) << 16 | 0x7011);
    set(0x64, 0x0000_0001);
    set(0x68, 0x0000_0001 | (bar1_size as u32 / 2).max(0x10) & !7);
    set(0x70, 0x0002_9010);
    set(0x74, 0x1000_8000);
    set(0x78, 0x0000_2810);
    set(0x90, 0x0006_b013);
    set(0xb0, 0x0110_c009);
    set(0xb4, 4);
    set(0xb8, 0);
    set(0xbc, 0x38);
    set(0xc0, 0x0410_0009);
    set(0xc4, 4);
    set(0xc8, 0x800);
    set(0xcc, 0x100);
    set(0x100, 0x1401_0010);
    w
}

#[derive(Arbitrary, Debug)]
struct Setup {
    /// (dword index, value) written over the snapshot.
    patches: Vec<(u16, u32)>,
    bar1: u8,
    bar4: u8,
    vectors: u8,
    nvme_vectors: u16,
    /// The features the function offers (ACCESS_PLATFORM is bit 33).
    virtio_features: u64,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read(u16, u8),
    Write(u16, u8, u64),
    /// A BAR register write with a plausible address (in a window or not).
    PlaceBar(u8, bool, u32),
    Command(u16),
    BarRead(u8, u16, u8),
    BarWrite(u8, u16, u8, u64),
    /// A driver writing feature word `word % 3` through BAR4's common configuration.
    Features(u8, u32),
    Interrupt(u16),
    Reserve(Vec<(u32, u16)>),
    Reset,
    NvmeRead(u8, u16),
    NvmeWrite(u8, u16, u32),
    Merge(u32, u16, u8, u64),
}

struct World {
    f: AssignedFunction,
    bars: Vec<PlacedBar>,
    reserved: Vec<Region>,
    flr: bool,
    nvme: VirtualFunction,
    /// The function offers ACCESS_PLATFORM.
    offers_access_platform: bool,
    /// Its virtio capabilities are as [`snapshot`] wrote them: the acknowledged byte is
    /// `driver_feature` and its page traps.
    virtio_intact: bool,
}

fn inside(outer: Region, base: u64, size: u64) -> bool {
    base >= outer.base
        && base
            .checked_add(size)
            .is_some_and(|e| e <= outer.base + outer.size)
}

fn overlaps(a: Region, b: Region) -> bool {
    a.base < b.base.saturating_add(b.size) && b.base < a.base.saturating_add(a.size)
}

fn spi_ok(spi: u32) -> bool {
    (FIRST_SPI..FIRST_SPI + SPI_COUNT).contains(&spi)
}

fn effects(w: &World, effects: &[Effect]) {
    for e in effects {
        match e {
            Effect::BarMapped(m) => {
                assert!(
                    WINDOWS
                        .iter()
                        .any(|win| inside(*win, m.guest.base, m.guest.size)),
                    "BAR {} mapped at {:#x}+{:#x}, outside the windows",
                    m.bar,
                    m.guest.base,
                    m.guest.size
                );
                for r in &w.reserved {
                    assert!(!overlaps(*r, m.guest), "BAR mapped over reserved {r:?}");
                }
                let placed = w
                    .bars
                    .iter()
                    .find(|b| b.bar.index == m.bar)
                    .expect("unknown BAR");
                assert_eq!(m.physical, placed.cpu);
                for d in &m.direct {
                    assert!(
                        inside(m.guest, d.guest, d.size),
                        "direct range outside the BAR"
                    );
                    assert!(
                        inside(placed.cpu, d.physical, d.size),
                        "direct range outside the device"
                    );
                    assert_eq!(d.physical - placed.cpu.base, d.guest - m.guest.base);
                }
                for t in &m.trapped {
                    assert!(inside(m.guest, t.base, t.size));
                }
                if w.offers_access_platform && w.virtio_intact {
                    let page = DRIVER_FEATURE & !0xfff;
                    for d in &m.direct {
                        assert!(
                            !inside(Region::new(d.physical, d.size), page, 0x1000),
                            "the driver feature page is mapped directly"
                        );
                    }
                }
            }
            Effect::MsixRoute {
                target: Some(Route::Spi(spi)), ..
            }
            | Effect::Inject { spi, .. } => {
                assert!(spi_ok(*spi), "SPI {spi} is not the slice's");
            }
            Effect::FunctionLevelReset => assert!(w.flr, "FLR without FLR capability"),
            _ => {}
        }
    }
}

fn capability_list(f: &AssignedFunction) {
    let mut at = f.config_read(0x34, 1) as u16;
    for _ in 0..48 {
        if at == 0 {
            return;
        }
        assert!((0x40..0x100).contains(&at), "capability pointer {at:#x}");
        let id = f.config_read(at & !3, 1) as u8;
        assert!(
            matches!(id, 0x01 | 0x09 | 0x10 | 0x11),
            "capability {id:#x} shown at {at:#x}"
        );
        at = f.config_read((at & !3) + 1, 1) as u16;
    }
    panic!("capability list does not end");
}

fn guest_address(w: &World, bar: u8, offset: u16) -> u64 {
    // Where the guest put the BAR (from its registers), plus an offset around it.
    let index = [1u16, 4][usize::from(bar) % 2];
    let low = w.f.config_read(0x10 + 4 * index, 4) & !0xf;
    let high = if index == 4 {
        w.f.config_read(0x24, 4)
    } else {
        0
    };
    (high << 32 | low)
        .wrapping_add(u64::from(offset))
        .wrapping_sub(0x100)
}

fn bar_write(w: &mut World, guest: u64, wd: u8, value: u64) {
    match w.f.bar_write(guest, wd, value) {
        BarWrite::Emulated(out) => effects(w, &out),
        BarWrite::Forward {
            physical,
            value: forwarded,
        } => {
            assert!(
                w.bars
                    .iter()
                    .any(|b| inside(b.cpu, physical, u64::from(wd))),
                "forwarded to {physical:#x}, outside the function's BARs"
            );
            let added = forwarded ^ value;
            if added != 0 {
                assert!(
                    w.offers_access_platform
                        && added.is_power_of_two()
                        && added.trailing_zeros() % 8 == 1
                        && forwarded & added != 0,
                    "{value:#x} written to {physical:#x} forwarded as {forwarded:#x}"
                );
                let byte = physical + u64::from(added.trailing_zeros() / 8);
                assert!(
                    !w.virtio_intact || byte == DRIVER_FEATURE,
                    "feature bit set at {byte:#x}"
                );
            }
        }
        BarWrite::Unclaimed => {}
    }
}

fn step(w: &mut World, op: Op) {
    match op {
        Op::Read(offset, sel) => {
            let offset = offset % 0x1100;
            let wd = width(sel).min(4);
            let wd = if sel & 0x80 != 0 { sel % 9 } else { wd };
            let value = w.f.config_read(offset, wd);
            if offset >= 0x1000 {
                assert_eq!(value, 0);
            } else if !matches!(wd, 1 | 2 | 4) || offset % u16::from(wd) != 0 {
                assert_eq!(value, width_mask(wd), "bad access must read all-ones");
            } else {
                assert!(fits(value, wd), "{offset:#x}/{wd} read {value:#x}");
                if offset >= 0x100 {
                    assert_eq!(value, 0, "extended space at {offset:#x}");
                }
            }
        }
        Op::Write(offset, sel, value) => {
            let offset = offset % 0x1100;
            let out = w.f.config_write(offset, width(sel).min(4), value);
            effects(w, &out);
        }
        Op::PlaceBar(slot, in_window, address) => {
            let (register, base) = match slot % 3 {
                0 => (0x14, WINDOWS[0].base),
                1 => (0x20, WINDOWS[1].base),
                _ => (0x24, 0),
            };
            let value = if in_window {
                base + u64::from(address % 0x40_0000)
            } else {
                u64::from(address)
            };
            let out = w.f.config_write(register, 4, value & 0xffff_ffff);
            effects(w, &out);
            if slot % 3 == 1 {
                let out = w.f.config_write(0x24, 4, value >> 32);
                effects(w, &out);
            }
        }
        Op::Command(value) => {
            let out = w.f.config_write(0x04, 2, u64::from(value));
            effects(w, &out);
        }
        Op::BarRead(bar, offset, sel) => {
            let guest = guest_address(w, bar, offset);
            let wd = width(sel);
            let forwarded = |physical: u64| {
                assert!(
                    w.bars
                        .iter()
                        .any(|b| inside(b.cpu, physical, u64::from(wd))),
                    "forwarded to {physical:#x}, outside the function's BARs"
                )
            };
            match w.f.bar_read(guest, wd) {
                BarRead::Emulated(v) => assert!(fits(v, wd), "BAR read {v:#x} of width {wd}"),
                BarRead::Forward { physical } => forwarded(physical),
                BarRead::Pending {
                    physical,
                    held,
                    emulated,
                } => {
                    forwarded(physical);
                    assert!(fits(held | emulated, wd), "PBA bits past width {wd}");
                }
                BarRead::Unclaimed => {}
            }
        }
        Op::BarWrite(bar, offset, sel, value) => {
            let guest = guest_address(w, bar, offset);
            bar_write(w, guest, width(sel), value);
        }
        Op::Features(word, features) => {
            // A driver negotiating: select a word, write it (BAR4's common configuration).
            let base = guest_address(w, 1, 0x100);
            bar_write(w, base + 0x08, 4, u64::from(word % 3));
            bar_write(w, base + 0x0c, 4, u64::from(features));
        }
        Op::Interrupt(vector) => {
            if let Interrupt::Deliver { spi } = w.f.interrupt(vector % 80) {
                assert!(spi_ok(spi), "interrupt delivered to SPI {spi}");
            }
        }
        Op::Reserve(ranges) => {
            w.reserved = ranges
                .iter()
                .take(4)
                .map(|&(at, pages)| {
                    Region::new(
                        WINDOWS[0].base + u64::from(at % 0x100_0000),
                        u64::from(pages) * 0x1000,
                    )
                })
                .collect();
            let out = w.f.set_reserved(&w.reserved);
            effects(w, &out);
            for m in w.f.mappings() {
                effects(w, &[Effect::BarMapped(m)]);
            }
        }
        Op::Reset => {
            let out = w.f.reset();
            effects(w, &out);
        }
        Op::NvmeRead(devfn, offset) => {
            let value = w.nvme.config_read(devfn, offset);
            if devfn != 0 {
                assert_eq!(
                    value,
                    u32::MAX,
                    "function {devfn:#x} the slice does not own"
                );
            }
        }
        Op::NvmeWrite(devfn, offset, value) => {
            let before = w.nvme.clone();
            let flr = w.nvme.config_write(devfn, offset, value);
            if devfn != 0 {
                assert!(!flr);
                assert_eq!(w.nvme, before, "write to a function the slice does not own");
            }
            if let Some(bar) = w.nvme.bar0() {
                assert_eq!(bar % vpci::BAR0_SIZE, 0, "BAR0 at {bar:#x}");
            }
        }
        Op::Merge(old, offset, sel, value) => {
            let wd = width(sel).min(4);
            let offset = offset & !(u16::from(wd) - 1);
            let merged = vpci::merge(old, offset, wd, value);
            let shift = 8 * u32::from(offset & 3);
            let mask = (width_mask(wd) as u32).checked_shl(shift).unwrap_or(0);
            assert_eq!(merged & !mask, old & !mask, "merge changed other bytes");
            assert!(fits(vpci::extract(merged, offset, wd), wd));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("{setup:?}");
    }
    let bar1_size = [0x1000u64, 0x80, 0x2000, 0x800][usize::from(setup.bar1) % 4];
    let bar4_size = [0x4000u64, 0x10_0000, 0x1000][usize::from(setup.bar4) % 3];
    let mut words = snapshot(bar1_size, u16::from(setup.vectors % 65));
    for &(index, value) in setup.patches.iter().take(8) {
        words[usize::from(index) % 1024] = value;
    }
    let flr = words.get(0x74 / 4).is_some_and(|w| w & 1 << 28 != 0);
    let bars = vec![
        PlacedBar {
            bar: MemoryBar {
                index: 1,
                size: bar1_size,
                is_64bit: false,
                prefetchable: false,
            },
            pci: BAR1_PHYSICAL,
            cpu: Region::new(BAR1_PHYSICAL, bar1_size),
        },
        PlacedBar {
            bar: MemoryBar {
                index: 4,
                size: bar4_size,
                is_64bit: true,
                prefetchable: true,
            },
            pci: BAR4_PHYSICAL,
            cpu: Region::new(BAR4_PHYSICAL, bar4_size),
        },
    ];
    let Ok(f) = AssignedFunction::new(Assignment {
        bdf: Bdf::new(1, 0, 0),
        snapshot: ConfigSnapshot::from_words(&words),
        bars: &bars,
        windows: &WINDOWS,
        msi: MSI,
        virtio_features: setup.virtio_features,
    }) else {
        return;
    };
    // With patches the FLR bit may have moved with the capability: only trust an untouched
    // PCI Express capability.
    let patched_express = setup.patches.iter().take(8).any(|&(i, _)| {
        let i = usize::from(i) % 1024;
        i == 0x34 / 4 || (0x40 / 4..0x100 / 4).contains(&i)
    });
    let virtio_intact = !setup.patches.iter().take(8).any(|&(i, _)| {
        let i = usize::from(i) % 1024;
        i <= 0x34 / 4 || (0x40 / 4..0x100 / 4).contains(&i)
    });
    let mut w = World {
        f,
        bars,
        reserved: Vec::new(),
        flr: flr || patched_express,
        nvme: VirtualFunction::new(setup.nvme_vectors),
        offers_access_platform: setup.virtio_features & ACCESS_PLATFORM != 0,
        virtio_intact,
    };
    assert_eq!(
        w.f.config_read(0x0e, 1) & 0x80,
        0,
        "multi-function bit shown"
    );
    assert_eq!(w.f.config_read(0x06, 2), 0x0010, "status");
    capability_list(&w.f);
    let mut steps = 0;
    while let Ok(op) = Op::arbitrary(&mut u) {
        step(&mut w, op);
        steps += 1;
        if u.is_empty() || steps > 256 {
            break;
        }
    }
    capability_list(&w.f);
    assert_eq!(w.f.config_read(0x06, 2), 0x0010, "status");
});
