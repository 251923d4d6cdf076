//! Host tests: a modern virtio-net-pci function as QEMU shows it behind a root port (PM,
//! PCIe with FLR, MSI-X with the table in BAR1 and four vendor-specific virtio capabilities),
//! plus capabilities that must stay hidden (MSI, an unknown one, SR-IOV and ATS in the
//! extended space).

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::pci::MemoryBar;
use crate::testing::Rng;

const WINDOW: Region = Region::new(0x1000_0000, 0x100_0000);
const HIGH_WINDOW: Region = Region::new(0x80_0000_0000, 0x4000_0000);
const RAM: u64 = 0x4000_0000;
const DOORBELL: u64 = 0x0800_0040;
const MSI: MsiTarget = MsiTarget::Spis {
    doorbell: DOORBELL,
    first_spi: 64,
    spi_count: 32,
};
/// Where the hypervisor placed BAR1 (MSI-X) and BAR4 (virtio structures) on the node.
const BAR1_PHYSICAL: u64 = 0x80_1000_1000;
const BAR4_PHYSICAL: u64 = 0x80_0000_4000;

const CAP_PM: u16 = 0x40;
const CAP_VIRTIO_COMMON: u16 = 0x50;
const CAP_VIRTIO_ISR: u16 = 0x60;
const CAP_VIRTIO_DEVICE: u16 = 0x70;
const CAP_VIRTIO_NOTIFY: u16 = 0x84;
const CAP_MSIX: u16 = 0x98;
const CAP_EXPRESS: u16 = 0xa4;
const CAP_MSI: u16 = 0xe0;
const CAP_UNKNOWN: u16 = 0xf0;
/// Features QEMU's virtio-net-pci offers with `iommu_platform=on` (a few of them): CSUM,
/// MAC, VERSION_1 and ACCESS_PLATFORM.
pub(super) const QEMU_FEATURES: u64 = 1 | 1 << 5 | 1 << 32 | 1 << 33;

pub(super) fn virtio_net_words() -> Vec<u32> {
    let mut w = vec![0u32; 1024];
    let mut set = |offset: u16, value: u32| w[usize::from(offset / 4)] = value;
    set(0x00, 0x1041_1af4);
    set(0x04, 0x0010_0000 | 0x0007);
    set(0x08, 0x0200_0001);
    // Multi-function bit set on the node: the slice must not see it.
    set(0x0c, 0x0080_0010);
    set(0x14, 0x1000_1000);
    set(0x20, 0x0000_400c);
    set(0x24, 0x80);
    set(0x2c, 0x1100_1af4);
    set(0x30, 0xfffc_0000);
    set(0x34, u32::from(CAP_MSIX));
    set(0x3c, 0x0000_010b);
    // MSI-X: 4 vectors, table BAR1 + 0, PBA BAR1 + 0x800.
    set(
        CAP_MSIX,
        0x0003_0000 | u32::from(CAP_VIRTIO_NOTIFY) << 8 | 0x11,
    );
    set(CAP_MSIX + 4, 0x0000_0001);
    set(CAP_MSIX + 8, 0x0000_0801);
    // Virtio vendor-specific capabilities: len, cfg_type, bar, offset, length.
    let virtio = |next: u16, len: u32, cfg_type: u32| {
        len << 16 | u32::from(next) << 8 | 0x09 | cfg_type << 24
    };
    set(CAP_VIRTIO_NOTIFY, virtio(CAP_VIRTIO_DEVICE, 0x14, 2));
    set(CAP_VIRTIO_NOTIFY + 4, 4);
    set(CAP_VIRTIO_NOTIFY + 8, 0x3000);
    set(CAP_VIRTIO_NOTIFY + 12, 0x1000);
    set(CAP_VIRTIO_NOTIFY + 16, 4);
    set(CAP_VIRTIO_DEVICE, virtio(CAP_VIRTIO_ISR, 0x10, 4));
    set(CAP_VIRTIO_DEVICE + 4, 4);
    set(CAP_VIRTIO_DEVICE + 8, 0x2000);
    set(CAP_VIRTIO_DEVICE + 12, 0x1000);
    set(CAP_VIRTIO_ISR, virtio(CAP_VIRTIO_COMMON, 0x10, 3));
    set(CAP_VIRTIO_ISR + 4, 4);
    set(CAP_VIRTIO_ISR + 8, 0x1000);
    set(CAP_VIRTIO_COMMON, virtio(CAP_PM, 0x10, 1));
    set(CAP_VIRTIO_COMMON + 4, 4);
    set(CAP_VIRTIO_COMMON + 12, 0x1000);
    // Power management v3, D0.
    set(CAP_PM, 0x0003_0000 | u32::from(CAP_MSI) << 8 | 0x01);
    set(CAP_PM + 4, 0x0000_0008);
    // MSI (64-bit), hidden.
    set(CAP_MSI, 0x0080_0000 | u32::from(CAP_EXPRESS) << 8 | 0x05);
    // PCI Express v2 endpoint: Device Capabilities with FLR, Device Control.
    set(
        CAP_EXPRESS,
        0x0002_0000 | u32::from(CAP_UNKNOWN) << 8 | 0x10,
    );
    set(CAP_EXPRESS + 4, 0x1000_8000);
    set(CAP_EXPRESS + 8, 0x0000_2810);
    set(CAP_EXPRESS + 0x0c, 0x0000_3c11);
    // An unknown capability (Advanced Features), hidden.
    set(CAP_UNKNOWN, 0x0006_0013);
    // Extended space: SR-IOV at 0x100 -> ATS at 0x140.
    set(0x100, 0x1401_0010);
    set(0x104, 0x0000_0001);
    set(0x140, 0x0001_000f);
    w
}

pub(super) fn placed() -> Vec<PlacedBar> {
    vec![
        PlacedBar {
            bar: MemoryBar {
                index: 1,
                size: 0x1000,
                is_64bit: false,
                prefetchable: false,
            },
            pci: BAR1_PHYSICAL,
            cpu: Region::new(BAR1_PHYSICAL, 0x1000),
        },
        PlacedBar {
            bar: MemoryBar {
                index: 4,
                size: 0x4000,
                is_64bit: true,
                prefetchable: true,
            },
            pci: BAR4_PHYSICAL,
            cpu: Region::new(BAR4_PHYSICAL, 0x4000),
        },
    ]
}

fn assign_with(words: &[u32], bars: &[PlacedBar]) -> Result<AssignedFunction, AssignError> {
    assign_offering(words, bars, QEMU_FEATURES)
}

fn assign_offering(
    words: &[u32],
    bars: &[PlacedBar],
    virtio_features: u64,
) -> Result<AssignedFunction, AssignError> {
    AssignedFunction::new(Assignment {
        bdf: Bdf::new(1, 0, 0),
        snapshot: ConfigSnapshot::from_words(words),
        bars,
        windows: &[WINDOW, HIGH_WINDOW],
        msi: MSI,
        virtio_features,
    })
}

fn nic() -> AssignedFunction {
    assign_with(&virtio_net_words(), &placed()).unwrap()
}

fn read32(f: &AssignedFunction, offset: u16) -> u32 {
    f.config_read(offset, 4) as u32
}

/// Places BAR1 at `bar1`, BAR4 at `bar4` and turns memory decoding on.
fn placed_nic(bar1: u64, bar4: u64) -> (AssignedFunction, Vec<Effect>) {
    let mut f = nic();
    f.config_write(0x14, 4, bar1);
    f.config_write(0x20, 4, bar4 & 0xffff_ffff);
    f.config_write(0x24, 4, bar4 >> 32);
    let effects = f.config_write(0x04, 2, 0x0002);
    (f, effects)
}

fn mapped(effects: &[Effect]) -> Vec<(u8, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::BarMapped(m) => Some((m.bar, m.guest.base)),
            _ => None,
        })
        .collect()
}

fn unmapped(effects: &[Effect]) -> Vec<(u8, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::BarUnmapped(m) => Some((m.bar, m.guest.base)),
            _ => None,
        })
        .collect()
}

// ---- header ---------------------------------------------------------------------------------

#[test]
fn the_slice_sees_the_real_identity() {
    let f = nic();
    assert_eq!(read32(&f, 0x00), 0x1041_1af4);
    assert_eq!(f.config_read(0x02, 2), 0x1041);
    assert_eq!(read32(&f, 0x08), 0x0200_0001, "class and revision");
    assert_eq!(read32(&f, 0x2c), 0x1100_1af4, "subsystem");
    assert_eq!(f.config_read(0x0e, 1), 0, "type 0, not multi-function");
    assert_eq!(
        f.config_read(0x06, 2),
        0x0010,
        "status: capabilities list only"
    );
    assert_eq!(f.config_read(0x04, 2), 0, "decoding off at assignment");
    assert_eq!(read32(&f, 0x30), 0, "no expansion ROM");
    assert_eq!(read32(&f, 0x3c), 0, "no interrupt line or pin");
    assert_eq!(f.bdf(), Bdf::new(1, 0, 0));
    assert_eq!(f.msix_vectors(), 4);
}

#[test]
fn header_registers_the_guest_cannot_change() {
    let mut f = nic();
    for offset in [0x00, 0x08, 0x2c, 0x30, 0x34, 0x38, 0x3c, 0x28] {
        let before = read32(&f, offset);
        assert!(f.config_write(offset, 4, 0xffff_ffff).is_empty());
        assert_eq!(read32(&f, offset), before, "offset {offset:#x}");
    }
    // Status bits are write-one-to-clear on hardware; here nothing changes.
    f.config_write(0x06, 2, 0xffff);
    assert_eq!(f.config_read(0x06, 2), 0x0010);
    // Cache Line Size is a plain register.
    f.config_write(0x0c, 1, 0x10);
    assert_eq!(f.config_read(0x0c, 1), 0x10);
}

#[test]
fn command_is_filtered() {
    let mut f = nic();
    let effects = f.config_write(0x04, 2, 0xffff);
    assert_eq!(
        f.config_read(0x04, 2),
        0x0406,
        "memory, bus master, INTx disable"
    );
    assert_eq!(effects[0], Effect::BusMaster(true));
    assert!(f.bus_master());
    assert!(
        mapped(&effects).is_empty(),
        "BARs at 0 are outside the window"
    );
    // Writing the same bits again changes nothing.
    assert!(f.config_write(0x04, 2, 0x0406).is_empty());
    // I/O space, SERR#, parity: ignored, no effect.
    assert!(f.config_write(0x04, 2, 0x0406 | 0x0141).is_empty());
    assert_eq!(f.config_write(0x04, 2, 0x0002), [Effect::BusMaster(false)]);
    // A byte write to the upper half of Command leaves the lower half alone.
    assert!(f.config_write(0x05, 1, 0x00).is_empty());
    assert_eq!(f.config_read(0x04, 2), 0x0002);
}

// ---- BARs -----------------------------------------------------------------------------------

#[test]
fn bar_sizing() {
    let mut f = nic();
    for slot in 0..6u16 {
        f.config_write(0x10 + 4 * slot, 4, 0xffff_ffff);
    }
    f.config_write(0x30, 4, 0xffff_ffff);
    assert_eq!(read32(&f, 0x10), 0, "BAR0 not implemented");
    assert_eq!(read32(&f, 0x14), 0xffff_f000, "BAR1: 4 KiB, 32-bit");
    assert_eq!(read32(&f, 0x18), 0);
    assert_eq!(read32(&f, 0x1c), 0);
    assert_eq!(
        read32(&f, 0x20),
        0xffff_c00c,
        "BAR4: 16 KiB, 64-bit, prefetchable"
    );
    assert_eq!(read32(&f, 0x24), 0xffff_ffff);
    assert_eq!(read32(&f, 0x30), 0, "no ROM");
    // Low bits below the size are not kept.
    f.config_write(0x14, 4, 0x1000_0fff);
    assert_eq!(read32(&f, 0x14), 0x1000_0000);
    f.config_write(0x20, 4, 0x1000_7fff);
    assert_eq!(read32(&f, 0x20), 0x1000_400c);
    // Sub-dword writes merge.
    f.config_write(0x17, 1, 0x12);
    assert_eq!(read32(&f, 0x14), 0x1200_0000);
    f.config_write(0x22, 2, 0x1034);
    assert_eq!(read32(&f, 0x20), 0x1034_400c);
}

#[test]
fn bars_inside_the_window_are_mapped_except_the_msix_and_driver_feature_pages() {
    let (f, effects) = placed_nic(0x1000_0000, 0x1000_4000);
    assert_eq!(
        effects,
        [
            Effect::BarMapped(BarMapping {
                bar: 1,
                guest: Region::new(0x1000_0000, 0x1000),
                physical: Region::new(BAR1_PHYSICAL, 0x1000),
                direct: vec![],
                trapped: vec![Region::new(0x1000_0000, 0x1000)],
            }),
            Effect::BarMapped(BarMapping {
                bar: 4,
                guest: Region::new(0x1000_4000, 0x4000),
                physical: Region::new(BAR4_PHYSICAL, 0x4000),
                // The common configuration page traps (driver_feature at 0xc); the ISR,
                // device configuration and notification pages are direct.
                direct: vec![DirectRange {
                    guest: 0x1000_5000,
                    physical: BAR4_PHYSICAL + 0x1000,
                    size: 0x3000
                }],
                trapped: vec![Region::new(0x1000_4000, 0x1000)],
            }),
        ]
    );
    assert_eq!(f.mappings().len(), 2);
}

#[test]
fn a_function_that_does_not_offer_access_platform_has_its_virtio_pages_direct() {
    let mut f =
        assign_offering(&virtio_net_words(), &placed(), QEMU_FEATURES & !(1 << 33)).unwrap();
    f.config_write(0x20, 4, 0x1000_4000);
    let effects = f.config_write(0x04, 2, 0x0002);
    let bar4 = effects.iter().find_map(|e| match e {
        Effect::BarMapped(m) if m.bar == 4 => Some(m.clone()),
        _ => None,
    });
    let bar4 = bar4.unwrap();
    assert_eq!(bar4.trapped, []);
    assert_eq!(bar4.direct.len(), 1);
    assert_eq!(bar4.direct[0].size, 0x4000);
    // Neither does a function that is not virtio-net, whatever it offers.
    let mut words = virtio_net_words();
    words[0] = 0x1042_1af4;
    let mut f = assign_with(&words, &placed()).unwrap();
    f.config_write(0x20, 4, 0x1000_4000);
    let effects = f.config_write(0x04, 2, 0x0002);
    assert!(effects.iter().all(|e| match e {
        Effect::BarMapped(m) => m.bar != 4 || m.trapped.is_empty(),
        _ => true,
    }));
}

/// Writes at `offset` of BAR4 (placed at 0x1000_4000) and returns the value forwarded.
fn forwarded(f: &mut AssignedFunction, offset: u64, width: u8, value: u64) -> u64 {
    match f.bar_write(0x1000_4000 + offset, width, value) {
        BarWrite::Forward { physical, value } => {
            assert_eq!(physical, BAR4_PHYSICAL + offset);
            value
        }
        other => panic!("BAR4 + {offset:#x}: {other:?}"),
    }
}

#[test]
fn driver_features_word_1_gets_access_platform_acknowledged() {
    let (mut f, _) = placed_nic(0x1000_0000, 0x1000_4000);
    // U-Boot 2023.01: word 0, then word 1 with VERSION_1 only.
    assert_eq!(forwarded(&mut f, 0x08, 4, 0), 0);
    assert_eq!(
        forwarded(&mut f, 0x0c, 4, 0x0001_0020),
        0x0001_0020,
        "word 0 unchanged"
    );
    assert_eq!(forwarded(&mut f, 0x08, 4, 1), 1);
    assert_eq!(forwarded(&mut f, 0x0c, 4, 0x1), 0x3, "word 1: bit 33 added");
    // Linux acknowledges it itself: nothing changes.
    assert_eq!(forwarded(&mut f, 0x0c, 4, 0x3), 0x3);
    // Reads of the trapped page reach the device; other registers pass unchanged.
    assert_eq!(
        f.bar_read(0x1000_4004, 4),
        BarRead::Forward {
            physical: BAR4_PHYSICAL + 4
        }
    );
    for (offset, width, value) in [(0x00, 4, 1), (0x14, 1, 0), (0x16, 2, 0xffff), (0x0e, 2, 0)] {
        assert_eq!(
            forwarded(&mut f, offset, width, value),
            value,
            "{offset:#x}"
        );
    }
    // Select 2 and up: unchanged.
    assert_eq!(forwarded(&mut f, 0x08, 4, 2), 2);
    assert_eq!(forwarded(&mut f, 0x0c, 4, 0), 0);
}

#[test]
fn narrow_and_wide_writes_acknowledge_like_the_device_splits_them() {
    let (mut f, _) = placed_nic(0x1000_0000, 0x1000_4000);
    // One byte of the select, then its upper half: 0x0000_0001, then 0x0001_0001.
    assert_eq!(forwarded(&mut f, 0x08, 1, 1), 1);
    assert_eq!(forwarded(&mut f, 0x0c, 1, 0), 2, "the feature's low byte");
    assert_eq!(forwarded(&mut f, 0x0d, 1, 0), 0, "another byte: unchanged");
    assert_eq!(forwarded(&mut f, 0x0e, 2, 0), 0);
    assert_eq!(forwarded(&mut f, 0x0a, 2, 1), 1);
    assert_eq!(forwarded(&mut f, 0x0c, 4, 0), 0, "select is 0x10001 now");
    // An 8-byte write selects word 1 and writes it: bit 1 of the upper dword.
    assert_eq!(forwarded(&mut f, 0x08, 8, 1), 1 | 2 << 32);
    // An 8-byte write of device_feature_select and device_feature leaves it alone.
    assert_eq!(forwarded(&mut f, 0x00, 8, 0), 0);
    // ... and one of select 0 and a feature word: unchanged.
    assert_eq!(forwarded(&mut f, 0x08, 8, 0x0000_0001_0000_0000), 1 << 32);
}

#[test]
fn a_reset_forgets_the_select() {
    let (mut f, _) = placed_nic(0x1000_0000, 0x1000_4000);
    forwarded(&mut f, 0x08, 4, 1);
    f.reset();
    f.config_write(0x20, 4, 0x1000_4000);
    f.config_write(0x04, 2, 0x0002);
    assert_eq!(
        forwarded(&mut f, 0x0c, 4, 0),
        0,
        "select reads 0 after a reset"
    );
}

#[test]
fn a_64bit_bar_in_the_high_window() {
    let (f, effects) = placed_nic(0x1000_0000, 0x80_0001_0000);
    assert_eq!(mapped(&effects), [(1, 0x1000_0000), (4, 0x80_0001_0000)]);
    assert_eq!(read32(&f, 0x24), 0x80);
}

#[test]
fn decoding_off_unmaps_and_on_maps_again() {
    let (mut f, _) = placed_nic(0x1000_0000, 0x1000_4000);
    let off = f.config_write(0x04, 2, 0);
    assert_eq!(unmapped(&off), [(1, 0x1000_0000), (4, 0x1000_4000)]);
    assert!(f.mappings().is_empty());
    let on = f.config_write(0x04, 2, 2);
    assert_eq!(mapped(&on), [(1, 0x1000_0000), (4, 0x1000_4000)]);
}

#[test]
fn moving_a_bar_unmaps_it_first() {
    let (mut f, _) = placed_nic(0x1000_0000, 0x1000_4000);
    let effects = f.config_write(0x20, 4, 0x1001_0000);
    assert_eq!(unmapped(&effects), [(4, 0x1000_4000)]);
    assert_eq!(mapped(&effects), [(4, 0x1001_0000)]);
    assert!(matches!(effects[0], Effect::BarUnmapped(_)));
}

#[test]
fn overlapping_bars_are_not_mapped() {
    let (mut f, _) = placed_nic(0x1000_0000, 0x1000_4000);
    // BAR4 over BAR1: neither is mapped while they overlap.
    let effects = f.config_write(0x20, 4, 0x1000_0000);
    assert_eq!(unmapped(&effects), [(1, 0x1000_0000), (4, 0x1000_4000)]);
    assert!(mapped(&effects).is_empty());
    // Moved apart again: both come back.
    let effects = f.config_write(0x20, 4, 0x1000_8000);
    assert_eq!(mapped(&effects), [(1, 0x1000_0000), (4, 0x1000_8000)]);
}

#[test]
fn bars_outside_the_window_or_over_ram_are_not_mapped() {
    let window_end = WINDOW.end();
    for (bar4, why) in [
        (RAM, "over RAM"),
        (0x0800_0000, "over the GIC"),
        (window_end, "just past the window"),
        (window_end - 0x4000, "the window's last 16 KiB"),
        (0xffff_ffff_ffff_c000, "the sizing pattern"),
        (HIGH_WINDOW.end() - 0x4000, "the high window's end"),
        (HIGH_WINDOW.end(), "past the high window"),
    ] {
        let (f, effects) = placed_nic(0x1000_0000, bar4);
        let inside = [WINDOW, HIGH_WINDOW]
            .iter()
            .any(|w| bar4 >= w.base && bar4.checked_add(0x4000).is_some_and(|e| e <= w.end()));
        let expected: Vec<(u8, u64)> = if inside {
            vec![(1, 0x1000_0000), (4, bar4)]
        } else {
            vec![(1, 0x1000_0000)]
        };
        assert_eq!(mapped(&effects), expected, "{why}");
        assert_eq!(f.mappings().len(), expected.len(), "{why}");
    }
}

#[test]
fn the_low_half_of_a_64bit_bar_alone_does_not_move_it_out_of_its_window() {
    let (mut f, _) = placed_nic(0x1000_0000, 0x80_0001_0000);
    // The guest rewrites the high half first: for a moment the BAR points elsewhere.
    let effects = f.config_write(0x24, 4, 0);
    assert_eq!(unmapped(&effects), [(4, 0x80_0001_0000)]);
    let effects = f.config_write(0x20, 4, 0x1000_4000);
    assert_eq!(mapped(&effects), [(4, 0x1000_4000)]);
}

#[test]
fn bars_over_other_devices_of_the_slice_are_not_mapped() {
    let (mut f, _) = placed_nic(0x1000_0000, 0x1000_4000);
    let nvme = Region::new(0x1000_4000, 0x4000);
    let effects = f.set_reserved(&[nvme]);
    assert_eq!(unmapped(&effects), [(4, 0x1000_4000)]);
    assert!(mapped(&effects).is_empty());
    let effects = f.set_reserved(&[]);
    assert_eq!(mapped(&effects), [(4, 0x1000_4000)]);
}

#[test]
fn a_bar_smaller_than_a_page_is_one_trapped_page() {
    let mut bars = placed();
    bars.push(PlacedBar {
        bar: MemoryBar {
            index: 0,
            size: 0x100,
            is_64bit: false,
            prefetchable: false,
        },
        pci: 0x80_1000_2100,
        cpu: Region::new(0x80_1000_2100, 0x100),
    });
    let mut f = assign_with(&virtio_net_words(), &bars).unwrap();
    f.config_write(0x10, 4, 0xffff_ffff);
    assert_eq!(read32(&f, 0x10), 0xffff_f000, "shown as 4 KiB");
    f.config_write(0x10, 4, 0x1002_0000);
    let effects = f.config_write(0x04, 2, 2);
    let Some(Effect::BarMapped(m)) = effects
        .iter()
        .find(|e| matches!(e, Effect::BarMapped(m) if m.bar == 0))
    else {
        panic!("BAR0 mapped: {effects:?}");
    };
    assert!(m.direct.is_empty());
    assert_eq!(m.trapped, [Region::new(0x1002_0000, 0x1000)]);
    assert_eq!(
        f.bar_read(0x1002_00fc, 4),
        BarRead::Forward {
            physical: 0x80_1000_21fc
        }
    );
    assert_eq!(f.bar_read(0x1002_0100, 4), BarRead::Emulated(0), "padding");
    assert_eq!(f.bar_write(0x1002_0100, 4, 1), BarWrite::Emulated(vec![]));
}

#[test]
fn msix_pages_in_a_large_bar_split_the_direct_ranges() {
    // The table at 0x2000 (4 vectors) and the PBA at 0x3800 in a 64 KiB BAR.
    let mut words = virtio_net_words();
    words[usize::from(CAP_MSIX + 4) / 4] = 0x2000 | 4;
    words[usize::from(CAP_MSIX + 8) / 4] = 0x3800 | 4;
    let mut bars = placed();
    bars[1].bar.size = 0x1_0000;
    bars[1].cpu = Region::new(0x80_0001_0000, 0x1_0000);
    // A function that does not offer ACCESS_PLATFORM: only the MSI-X pages trap.
    let mut f = assign_offering(&words, &bars, 0).unwrap();
    f.config_write(0x20, 4, 0x1001_0000);
    let effects = f.config_write(0x04, 2, 2);
    let m = effects
        .iter()
        .find_map(|e| match e {
            Effect::BarMapped(m) if m.bar == 4 => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        m.direct,
        [
            DirectRange {
                guest: 0x1001_0000,
                physical: 0x80_0001_0000,
                size: 0x2000
            },
            DirectRange {
                guest: 0x1001_4000,
                physical: 0x80_0001_4000,
                size: 0xc000
            },
        ]
    );
    assert_eq!(m.trapped, [Region::new(0x1001_2000, 0x2000)]);
}

// ---- capabilities ---------------------------------------------------------------------------

fn walk(f: &AssignedFunction) -> Vec<(u16, u8)> {
    let mut list = Vec::new();
    let mut pointer = f.config_read(0x34, 1) as u16;
    while pointer != 0 && list.len() < 64 {
        list.push((pointer, f.config_read(pointer, 1) as u8));
        pointer = f.config_read(pointer + 1, 1) as u16;
    }
    list
}

#[test]
fn the_capability_list_is_rebuilt() {
    let f = nic();
    assert_eq!(
        walk(&f),
        [
            (CAP_MSIX, id::MSI_X),
            (CAP_VIRTIO_NOTIFY, id::VENDOR_SPECIFIC),
            (CAP_VIRTIO_DEVICE, id::VENDOR_SPECIFIC),
            (CAP_VIRTIO_ISR, id::VENDOR_SPECIFIC),
            (CAP_VIRTIO_COMMON, id::VENDOR_SPECIFIC),
            (CAP_PM, id::POWER_MANAGEMENT),
            (CAP_EXPRESS, id::PCI_EXPRESS),
        ]
    );
    for hidden in [CAP_MSI, CAP_UNKNOWN] {
        assert_eq!(read32(&f, hidden), 0, "capability at {hidden:#x} hidden");
        assert_eq!(read32(&f, hidden + 4), 0);
    }
}

#[test]
fn vendor_specific_capabilities_are_visible_and_read_only() {
    let mut f = nic();
    let words = virtio_net_words();
    for cap in [
        CAP_VIRTIO_NOTIFY,
        CAP_VIRTIO_DEVICE,
        CAP_VIRTIO_ISR,
        CAP_VIRTIO_COMMON,
    ] {
        let len = (words[usize::from(cap / 4)] >> 16) as u16 & 0xff;
        for offset in (cap + 4..cap + len).step_by(4) {
            assert_eq!(read32(&f, offset), words[usize::from(offset / 4)]);
            assert!(f.config_write(offset, 4, 0xdead_beef).is_empty());
            assert_eq!(read32(&f, offset), words[usize::from(offset / 4)]);
        }
        // ID and length real, next pointer relinked.
        assert_eq!(f.config_read(cap, 1), 0x09);
        assert_eq!(f.config_read(cap + 2, 1), u64::from(len));
    }
    assert_eq!(
        f.config_read(CAP_VIRTIO_NOTIFY + 16, 4),
        4,
        "notify multiplier"
    );
}

#[test]
fn express_and_power_management_are_read_only() {
    let mut f = nic();
    let words = virtio_net_words();
    let before: Vec<u32> = (CAP_EXPRESS..CAP_EXPRESS + 0x3c)
        .step_by(4)
        .map(|o| read32(&f, o))
        .collect();
    assert_eq!(before[1], 0x1000_8000, "Device Capabilities with FLR");
    assert_eq!(before[2], 0x0000_2810, "Device Control");
    for offset in (CAP_EXPRESS + 0x0c..CAP_EXPRESS + 0x3c).step_by(4) {
        assert!(f.config_write(offset, 4, 0xffff_ffff).is_empty());
    }
    // Device Control without Initiate FLR: ignored.
    assert!(f.config_write(CAP_EXPRESS + 8, 2, 0x7fff).is_empty());
    let after: Vec<u32> = (CAP_EXPRESS..CAP_EXPRESS + 0x3c)
        .step_by(4)
        .map(|o| read32(&f, o))
        .collect();
    assert_eq!(before, after);
    // Power management: no D3hot.
    assert!(f.config_write(CAP_PM + 4, 2, 3).is_empty());
    assert_eq!(read32(&f, CAP_PM + 4), words[usize::from(CAP_PM + 4) / 4]);
}

#[test]
fn extended_space_is_an_empty_list() {
    let mut f = nic();
    for offset in [0x100, 0x104, 0x140, 0x800, 0xffc] {
        assert_eq!(read32(&f, offset), 0, "{offset:#x}");
        assert!(f.config_write(offset, 4, 0xffff_ffff).is_empty());
        assert_eq!(read32(&f, offset), 0);
    }
}

#[test]
fn msix_capability_is_virtual() {
    let mut f = nic();
    assert_eq!(
        read32(&f, CAP_MSIX),
        0x0003_0000 | u32::from(CAP_VIRTIO_NOTIFY) << 8 | 0x11
    );
    assert_eq!(read32(&f, CAP_MSIX + 4), 1, "table: BAR1 + 0");
    assert_eq!(read32(&f, CAP_MSIX + 8), 0x801, "PBA: BAR1 + 0x800");
    // Enable + Function Mask; Table Size is read-only.
    f.config_write(CAP_MSIX + 2, 2, 0xc7ff);
    assert_eq!(f.config_read(CAP_MSIX + 2, 2), 0xc003);
    assert!(f.config_write(CAP_MSIX + 4, 4, 0x2000).is_empty());
    assert_eq!(read32(&f, CAP_MSIX + 4), 1);
    f.config_write(CAP_MSIX + 3, 1, 0);
    assert_eq!(f.config_read(CAP_MSIX + 2, 2), 0x0003);
}

// ---- hostile accesses -----------------------------------------------------------------------

#[test]
fn odd_widths_and_offsets() {
    let mut f = nic();
    assert_eq!(f.config_read(0x01, 2), 0xffff, "misaligned");
    assert_eq!(f.config_read(0x02, 4), 0xffff_ffff, "misaligned");
    assert_eq!(f.config_read(0x00, 3), 0xff_ffff, "3 bytes");
    assert_eq!(f.config_read(0x00, 8), u64::MAX, "8 bytes");
    assert_eq!(f.config_read(0x00, 0), 0);
    assert_eq!(f.config_read(0x00, 255), u64::MAX);
    assert_eq!(f.config_read(0x1000, 4), 0, "past the function");
    assert_eq!(f.config_read(0xffff, 1), 0);
    assert_eq!(f.config_read(0x01, 1), 0x1a);
    for (offset, width) in [
        (0x04, 8),
        (0x04, 3),
        (0x05, 2),
        (0x06, 4),
        (0x04, 0),
        (0xfffe, 2),
    ] {
        assert!(f.config_write(offset, width, u64::MAX).is_empty());
    }
    assert_eq!(f.config_read(0x04, 2), 0, "command unchanged");
}

// ---- trapped BAR accesses -------------------------------------------------------------------

#[test]
fn trapped_accesses_outside_the_table_are_forwarded() {
    let (mut f, _) = placed_nic(0x1000_0000, 0x1000_4000);
    assert_eq!(
        f.bar_read(0x1000_0100, 4),
        BarRead::Forward {
            physical: BAR1_PHYSICAL + 0x100
        }
    );
    assert_eq!(
        f.bar_write(0x1000_0ff8, 8, 5),
        BarWrite::Forward {
            physical: BAR1_PHYSICAL + 0xff8,
            value: 5
        }
    );
    // A page of BAR4 that trapped (a race with its mapping) still reaches the device.
    assert_eq!(
        f.bar_read(0x1000_5000, 1),
        BarRead::Forward {
            physical: BAR4_PHYSICAL + 0x1000
        }
    );
    assert_eq!(
        f.bar_read(0x1000_0101, 4),
        BarRead::Emulated(0xffff_ffff),
        "misaligned"
    );
    assert_eq!(
        f.bar_read(0x1000_0100, 3),
        BarRead::Emulated(0xff_ffff),
        "3 bytes"
    );
    assert_eq!(f.bar_read(0x1000_0100, 16), BarRead::Emulated(u64::MAX));
    assert_eq!(f.bar_write(0x1000_0102, 4, 0), BarWrite::Emulated(vec![]));
    assert_eq!(
        f.bar_read(0x1000_1000, 4),
        BarRead::Unclaimed,
        "between the BARs"
    );
    assert_eq!(f.bar_read(u64::MAX, 1), BarRead::Unclaimed);
    f.config_write(0x04, 2, 0);
    assert_eq!(
        f.bar_read(0x1000_0100, 4),
        BarRead::Unclaimed,
        "decoding off"
    );
    assert_eq!(f.bar_write(0x1000_0000, 4, 0), BarWrite::Unclaimed);
}

// ---- MSI-X ----------------------------------------------------------------------------------

const TABLE: u64 = 0x1000_0000;
const PBA: u64 = 0x1000_0800;

/// A placed NIC with MSI-X enabled.
fn msix_nic() -> AssignedFunction {
    let (mut f, _) = placed_nic(TABLE, 0x1000_4000);
    f.config_write(0x04, 2, 0x0006);
    let effects = f.config_write(CAP_MSIX + 2, 2, 0x8000);
    assert!(effects.is_empty(), "no vector programmed yet: {effects:?}");
    f
}

fn emulated(write: BarWrite) -> Vec<Effect> {
    match write {
        BarWrite::Emulated(effects) => effects,
        other => panic!("not emulated: {other:?}"),
    }
}

/// Programs entry `vector` with `address` and `data`, unmasked.
fn program(f: &mut AssignedFunction, vector: u64, address: u64, data: u32) -> Vec<Effect> {
    let entry = TABLE + 16 * vector;
    let mut effects = emulated(f.bar_write(entry, 8, address));
    effects.extend(emulated(f.bar_write(entry + 8, 4, u64::from(data))));
    effects.extend(emulated(f.bar_write(entry + 12, 4, 0)));
    effects
}

#[test]
fn an_entry_aimed_at_the_doorbell_is_routed_and_delivers() {
    let mut f = msix_nic();
    let effects = program(&mut f, 1, DOORBELL, 70);
    assert_eq!(
        effects,
        [Effect::MsixRoute {
            vector: 1,
            target: Some(Route::Spi(70))
        }]
    );
    assert_eq!(f.route(1), Some(Route::Spi(70)));
    assert_eq!(f.interrupt(1), Interrupt::Deliver { spi: 70 });
    assert_eq!(f.bar_read(TABLE + 16, 8), BarRead::Emulated(DOORBELL));
    assert_eq!(f.bar_read(TABLE + 24, 8), BarRead::Emulated(70));
    assert_eq!(f.bar_read(TABLE + 24, 1), BarRead::Emulated(70));
    assert_eq!(f.bar_read(TABLE + 28, 4), BarRead::Emulated(0), "unmasked");
    assert_eq!(
        f.bar_read(TABLE + 12, 4),
        BarRead::Emulated(1),
        "vector 0 masked"
    );
    // Retargeting the SPI reports the new route.
    let effects = emulated(f.bar_write(TABLE + 24, 4, 71));
    assert_eq!(
        effects,
        [Effect::MsixRoute {
            vector: 1,
            target: Some(Route::Spi(71))
        }]
    );
    // Disabling MSI-X takes the route away.
    let effects = f.config_write(CAP_MSIX + 2, 2, 0);
    assert_eq!(
        effects,
        [Effect::MsixRoute {
            vector: 1,
            target: None
        }]
    );
    assert_eq!(f.interrupt(1), Interrupt::Dropped);
}

/// The vITS doorbell of a slice on a GICv4 node, and the vector count it allows.
const ITS_DOORBELL: u64 = 0x0809_0040;
const ITS: MsiTarget = MsiTarget::Its {
    doorbell: ITS_DOORBELL,
    events: 4,
};

fn its_nic() -> AssignedFunction {
    let mut f = AssignedFunction::new(Assignment {
        bdf: Bdf::new(1, 0, 0),
        snapshot: ConfigSnapshot::from_words(&virtio_net_words()),
        bars: &placed(),
        windows: &[WINDOW, HIGH_WINDOW],
        msi: ITS,
        virtio_features: QEMU_FEATURES,
    })
    .unwrap();
    f.config_write(0x14, 4, TABLE);
    f.config_write(0x04, 2, 0x0006);
    assert!(f.config_write(CAP_MSIX + 2, 2, 0x8000).is_empty());
    f
}

#[test]
fn entries_aimed_at_the_virtual_its_route_events_while_unmasked() {
    let mut f = its_nic();
    let route = |vector, event: Option<u32>| Effect::MsixRoute {
        vector,
        target: event.map(Route::Event),
    };
    assert_eq!(program(&mut f, 1, ITS_DOORBELL, 3), [route(1, Some(3))]);
    assert_eq!(f.route(1), Some(Route::Event(3)));
    // Masking is physical: the guest's mask takes the route away, unmasking brings it back,
    // and nothing is ever held or injected by the hypervisor.
    assert_eq!(
        emulated(f.bar_write(TABLE + 16 + 12, 4, 1)),
        [route(1, None)]
    );
    assert_eq!(f.interrupt(1), Interrupt::Pending, "a stray physical LPI");
    assert_eq!(
        emulated(f.bar_write(TABLE + 16 + 12, 4, 0)),
        [route(1, Some(3))],
        "no Inject: the device keeps its own pending message"
    );
    // Function mask and MSI-X enable hold every vector.
    assert_eq!(f.config_write(CAP_MSIX + 2, 2, 0xc000), [route(1, None)]);
    assert_eq!(f.config_write(CAP_MSIX + 2, 2, 0x8000), [route(1, Some(3))]);
    assert_eq!(f.config_write(CAP_MSIX + 2, 2, 0), [route(1, None)]);
    assert_eq!(f.config_write(CAP_MSIX + 2, 2, 0x8000), [route(1, Some(3))]);
    // An EventID past the function's vectors, another address, or the GICv3 doorbell with
    // an SPI: never programmed.
    assert_eq!(program(&mut f, 2, ITS_DOORBELL, 4), []);
    assert_eq!(program(&mut f, 2, ITS_DOORBELL + 4, 0), []);
    assert_eq!(program(&mut f, 2, DOORBELL, 70), []);
    assert_eq!(f.route(2), None);
    // Retargeting a routed vector's EventID reports the new one.
    assert_eq!(
        emulated(f.bar_write(TABLE + 16 + 8, 4, 0)),
        [route(1, Some(0))]
    );
    let reset = f.reset();
    assert!(reset.contains(&route(1, None)), "{reset:?}");
}

#[test]
fn the_pba_of_a_virtual_its_function_shows_what_the_device_holds() {
    let mut f = its_nic();
    program(&mut f, 1, ITS_DOORBELL, 3);
    let pending = |held, emulated| BarRead::Pending {
        physical: BAR1_PHYSICAL + 0x800,
        held,
        emulated,
    };
    // Vectors 0, 2 and 3 are masked since reset: their physical entries are masked, so the
    // device keeps their messages; vector 1 is routed, nothing of it is pending anywhere.
    assert_eq!(f.bar_read(PBA, 4), pending(0b1101, 0));
    assert_eq!(f.bar_read(PBA, 8), pending(0b1101, 0));
    assert_eq!(
        f.bar_read(PBA, 1),
        pending(0b1101, 0),
        "past vector 3: none"
    );
    // The guest masks vector 1: the device holds it too; a stray physical LPI the hypervisor
    // took for it shows as well.
    emulated(f.bar_write(TABLE + 16 + 12, 4, 1));
    assert_eq!(f.bar_read(PBA, 4), pending(0b1111, 0));
    assert_eq!(f.interrupt(1), Interrupt::Pending);
    assert_eq!(f.bar_read(PBA, 4), pending(0b1111, 0b10));
    // Beyond the PBA's vectors (its padding dword) nothing is the device's.
    assert_eq!(f.bar_read(PBA + 4, 4), BarRead::Emulated(0));
    // MSI-X disabled: no vector is signalled, nothing read from the device.
    f.config_write(CAP_MSIX + 2, 2, 0);
    assert_eq!(f.bar_read(PBA, 4), BarRead::Emulated(0b10));
    // The Function Mask holds every vector.
    f.config_write(CAP_MSIX + 2, 2, 0xc000);
    program(&mut f, 1, ITS_DOORBELL, 3);
    assert_eq!(f.bar_read(PBA, 4), pending(0b1111, 0b10));
}

#[test]
fn masked_vectors_are_pending_and_deliver_once_on_unmask() {
    let mut f = msix_nic();
    program(&mut f, 2, DOORBELL, 66);
    // Mask the vector: the route stays (masking is virtual).
    assert!(emulated(f.bar_write(TABLE + 32 + 12, 4, 1)).is_empty());
    assert_eq!(f.route(2), Some(Route::Spi(66)));
    assert_eq!(f.interrupt(2), Interrupt::Pending);
    assert_eq!(f.interrupt(2), Interrupt::Pending);
    assert_eq!(f.bar_read(PBA, 8), BarRead::Emulated(0b100));
    assert_eq!(f.bar_read(PBA, 1), BarRead::Emulated(0b100));
    // The PBA is read-only.
    assert!(emulated(f.bar_write(PBA, 8, 0)).is_empty());
    assert_eq!(f.bar_read(PBA, 4), BarRead::Emulated(0b100));
    let effects = emulated(f.bar_write(TABLE + 32 + 12, 4, 0));
    assert_eq!(effects, [Effect::Inject { vector: 2, spi: 66 }]);
    assert_eq!(f.bar_read(PBA, 4), BarRead::Emulated(0));
    assert!(
        emulated(f.bar_write(TABLE + 32 + 12, 4, 0)).is_empty(),
        "once"
    );
}

#[test]
fn function_mask_holds_every_vector() {
    let mut f = msix_nic();
    program(&mut f, 0, DOORBELL, 64);
    program(&mut f, 3, DOORBELL, 95);
    assert!(f.config_write(CAP_MSIX + 3, 1, 0xc0).is_empty());
    assert_eq!(f.interrupt(0), Interrupt::Pending);
    assert_eq!(f.interrupt(3), Interrupt::Pending);
    assert_eq!(f.bar_read(PBA, 4), BarRead::Emulated(0b1001));
    let effects = f.config_write(CAP_MSIX + 3, 1, 0x80);
    assert_eq!(
        effects,
        [
            Effect::Inject { vector: 0, spi: 64 },
            Effect::Inject { vector: 3, spi: 95 }
        ]
    );
}

#[test]
fn entries_aimed_elsewhere_are_never_routed() {
    for (address, data, what) in [
        (DOORBELL + 4, 64, "another GICD register"),
        (0x0808_0040, 64, "the physical ITS translater"),
        (0x0800_0048, 64, "GICD_CLRSPI_NSR"),
        (DOORBELL, 63, "an SPI below the slice's"),
        (DOORBELL, 96, "an SPI above the slice's"),
        (DOORBELL, 33, "the UART's SPI"),
        (DOORBELL, 64 | 1 << 16, "extra data bits"),
        (DOORBELL | 1 << 32, 64, "upper address bits"),
        (RAM, 64, "the slice's RAM"),
    ] {
        let mut f = msix_nic();
        let effects = program(&mut f, 1, address, data);
        assert!(
            effects.iter().all(|e| !matches!(
                e,
                Effect::MsixRoute {
                    target: Some(_),
                    ..
                }
            )),
            "{what}: {effects:?}"
        );
        assert_eq!(f.route(1), None, "{what}");
        assert_eq!(f.interrupt(1), Interrupt::Dropped, "{what}");
        // Masked and pending, then unmasked: nothing is injected.
        f.bar_write(TABLE + 16 + 12, 4, 1);
        assert_eq!(f.interrupt(1), Interrupt::Pending);
        assert_eq!(emulated(f.bar_write(TABLE + 16 + 12, 4, 0)), [], "{what}");
    }
    // An entry that was routed and is then aimed elsewhere loses its route.
    let mut f = msix_nic();
    program(&mut f, 1, DOORBELL, 64);
    let effects = emulated(f.bar_write(TABLE + 16, 4, 0x0808_0040));
    assert_eq!(
        effects,
        [Effect::MsixRoute {
            vector: 1,
            target: None
        }]
    );
}

#[test]
fn vectors_past_the_table_and_disabled_msix() {
    let mut f = msix_nic();
    assert_eq!(f.interrupt(4), Interrupt::Dropped);
    assert_eq!(f.interrupt(u16::MAX), Interrupt::Dropped);
    assert_eq!(f.route(4), None);
    // Entries past the table's four are not in the table: the PBA follows at 0x800 and the
    // bytes between are the device's.
    assert_eq!(
        f.bar_read(TABLE + 64, 4),
        BarRead::Forward {
            physical: BAR1_PHYSICAL + 64
        }
    );
    // Programmed while MSI-X is disabled: routed when it is enabled.
    f.config_write(CAP_MSIX + 2, 2, 0);
    assert!(program(&mut f, 0, DOORBELL, 64).is_empty());
    assert_eq!(
        f.interrupt(0),
        Interrupt::Dropped,
        "disabled: not even pending"
    );
    assert_eq!(f.bar_read(PBA, 4), BarRead::Emulated(0));
    let effects = f.config_write(CAP_MSIX + 2, 2, 0x8000);
    assert_eq!(
        effects,
        [Effect::MsixRoute {
            vector: 0,
            target: Some(Route::Spi(64))
        }]
    );
}

#[test]
fn sub_dword_table_writes_merge() {
    let mut f = msix_nic();
    program(&mut f, 0, DOORBELL, 64);
    let effects = emulated(f.bar_write(TABLE + 8, 1, 65));
    assert_eq!(
        effects,
        [Effect::MsixRoute {
            vector: 0,
            target: Some(Route::Spi(65))
        }]
    );
    assert_eq!(f.bar_read(TABLE + 8, 4), BarRead::Emulated(65));
    assert_eq!(f.bar_read(TABLE, 2), BarRead::Emulated(DOORBELL & 0xffff));
}

// ---- reset ----------------------------------------------------------------------------------

#[test]
fn reset_returns_to_power_on() {
    let mut f = msix_nic();
    program(&mut f, 0, DOORBELL, 64);
    f.config_write(0x0c, 1, 0x10);
    let effects = f.reset();
    assert_eq!(unmapped(&effects), [(1, 0x1000_0000), (4, 0x1000_4000)]);
    assert!(effects.contains(&Effect::BusMaster(false)));
    assert!(effects.contains(&Effect::MsixRoute {
        vector: 0,
        target: None
    }));
    assert_eq!(f.config_read(0x04, 2), 0);
    assert_eq!(read32(&f, 0x14), 0);
    assert_eq!(read32(&f, 0x0c), 0);
    assert_eq!(f.config_read(CAP_MSIX + 2, 2), 3);
    assert!(f.mappings().is_empty());
    // A second reset still reports bus mastering off and nothing else.
    assert_eq!(f.reset(), [Effect::BusMaster(false)]);
}

#[test]
fn function_level_reset() {
    let mut f = msix_nic();
    program(&mut f, 0, DOORBELL, 64);
    let effects = f.config_write(CAP_EXPRESS + 9, 1, 0x80);
    assert_eq!(effects.last(), Some(&Effect::FunctionLevelReset));
    assert_eq!(unmapped(&effects).len(), 2);
    assert!(effects.contains(&Effect::BusMaster(false)));
    assert_eq!(f.route(0), None);
    assert_eq!(
        f.config_read(CAP_EXPRESS + 8, 2),
        0x2810,
        "Initiate FLR reads 0"
    );
    // Without FLR in Device Capabilities the bit does nothing.
    let mut words = virtio_net_words();
    words[usize::from(CAP_EXPRESS + 4) / 4] &= !(1 << 28);
    let mut f = assign_with(&words, &placed()).unwrap();
    assert!(f.config_write(CAP_EXPRESS + 8, 2, 0x8000).is_empty());
}

// ---- assignment errors ----------------------------------------------------------------------

#[test]
fn each_assignment_error() {
    type Change = fn(&mut Vec<u32>, &mut Vec<PlacedBar>);
    let cases: [(Change, AssignError); 12] = [
        (|w, _| w[0] = u32::MAX, AssignError::NoFunction),
        (|w, _| w[0] = 0, AssignError::NoFunction),
        (
            |w, _| w[3] = 0x0001_0000,
            AssignError::NotAnEndpoint { header_type: 1 },
        ),
        (|w, _| w[1] = 0, AssignError::NoMsix),
        (
            |w, _| w[usize::from(CAP_MSIX + 4) / 4] = 2,
            AssignError::MsixOutsideBar { bir: 2 },
        ),
        (
            |w, _| w[usize::from(CAP_MSIX + 4) / 4] = 0xfc8 | 1,
            AssignError::MsixOutsideBar { bir: 1 },
        ),
        (
            |w, _| w[usize::from(CAP_MSIX + 4) / 4] = 5,
            AssignError::MsixOutsideBar { bir: 5 },
        ),
        (|_, b| b[0].bar.index = 6, AssignError::BadBar { index: 6 }),
        (|_, b| b[1].bar.index = 5, AssignError::BadBar { index: 5 }),
        (
            |_, b| b[1].bar.size = 0x3000,
            AssignError::BadBar { index: 4 },
        ),
        (
            |_, b| b[0].cpu.size = 0x2000,
            AssignError::BadBar { index: 1 },
        ),
        (
            |_, b| b[0].bar.index = 5 - 1,
            AssignError::BadBar { index: 4 },
        ),
    ];
    for (change, error) in cases {
        let mut words = virtio_net_words();
        let mut bars = placed();
        change(&mut words, &mut bars);
        assert_eq!(assign_with(&words, &bars).err(), Some(error), "{error}");
    }
    let assign = |windows: &[Region], msi: MsiTarget| {
        AssignedFunction::new(Assignment {
            bdf: Bdf::new(1, 0, 0),
            snapshot: ConfigSnapshot::from_words(&virtio_net_words()),
            bars: &placed(),
            windows,
            msi,
            virtio_features: QEMU_FEATURES,
        })
        .err()
    };
    assert_eq!(assign(&[], MSI), Some(AssignError::NoWindow));
    for bad in [
        Region::new(0x1000_0000, 0),
        Region::new(0x1000_0800, 0x1000),
        Region::new(0x1000_0000, 0x1800),
        Region::new(!0xfff, 0x2000),
    ] {
        assert_eq!(
            assign(&[WINDOW, bad], MSI),
            Some(AssignError::BadWindow { base: bad.base })
        );
    }
    let spis = |doorbell: u64, first_spi: u32, spi_count: u32| MsiTarget::Spis {
        doorbell,
        first_spi,
        spi_count,
    };
    for bad in [
        spis(DOORBELL, 64, 0),
        spis(DOORBELL, 16, 32),
        spis(DOORBELL, 1000, 21),
        spis(DOORBELL, u32::MAX, 32),
        spis(DOORBELL + 2, 64, 32),
        MsiTarget::Its {
            doorbell: DOORBELL + 2,
            events: 4,
        },
    ] {
        assert_eq!(assign(&[WINDOW], bad), Some(AssignError::BadMsiTarget));
    }
    let mut bars = placed();
    bars[0].cpu.base = u64::MAX - 0x800;
    assert_eq!(
        assign_with(&virtio_net_words(), &bars).err(),
        Some(AssignError::BadBar { index: 1 }),
        "wrapping CPU range"
    );
    let mut bars = placed();
    bars[1].bar.is_64bit = false;
    bars[1].bar.size = 1 << 32;
    bars[1].cpu.size = 1 << 32;
    assert_eq!(
        assign_with(&virtio_net_words(), &bars).err(),
        Some(AssignError::BadBar { index: 4 }),
        "32-bit BAR of 4 GiB"
    );
}

// ---- snapshot and capability walking --------------------------------------------------------

#[test]
fn snapshot_capture_reads_every_dword() {
    struct Words(Vec<u32>, usize);
    impl crate::pci::ConfigSpace for Words {
        fn read(&mut self, _: Bdf, offset: u16) -> u32 {
            self.1 += 1;
            self.0[usize::from(offset / 4)]
        }
        fn write(&mut self, _: Bdf, _: u16, _: u32) {
            panic!("a snapshot never writes");
        }
    }
    let mut config = Words(virtio_net_words(), 0);
    let snapshot = ConfigSnapshot::capture(&mut config, Bdf::new(1, 0, 0));
    assert_eq!(config.1, 1024);
    assert_eq!(snapshot, ConfigSnapshot::from_words(&virtio_net_words()));
    assert_eq!(snapshot.word(0x02), 0x1041);
    assert_eq!(snapshot.dword(0x1000), 0);
}

#[test]
fn malformed_capability_lists_end() {
    let mut words = virtio_net_words();
    // PCIe -> MSI-X: a loop through the whole list.
    words[usize::from(CAP_EXPRESS / 4)] = 0x0002_0000 | u32::from(CAP_MSIX) << 8 | 0x10;
    let caps = Capabilities::find(&ConfigSnapshot::from_words(&words));
    assert_eq!(caps.visible.len(), 7);
    assert_eq!(caps.visible.last().map(|c| c.next), Some(0));
    // A pointer into the header ends the list.
    words[usize::from(CAP_MSIX / 4)] = 0x0003_0000 | 0x10 << 8 | 0x11;
    let caps = Capabilities::find(&ConfigSnapshot::from_words(&words));
    assert_eq!(caps.visible.len(), 1);
    // A vendor capability claiming 255 bytes near the end is cut at 0x100.
    words[0x34 / 4] = 0xf8;
    words[0xf8 / 4] = 0x00ff_0009;
    let caps = Capabilities::find(&ConfigSnapshot::from_words(&words));
    assert_eq!(caps.visible[0].length, 8);
    assert_eq!(caps.msix, None);
}

/// Found by the `vpci` fuzz target: a PCI Express capability (0x24 bytes) whose range covers
/// the next capability's header. Both were kept, so reads of the second one's bytes were
/// answered as bytes of the first: its next pointer came raw from the snapshot and led the
/// guest into a hidden capability, which read as ID 0. Now the overlapping one is left out.
#[test]
fn overlapping_capabilities_are_not_both_shown() {
    let mut words = virtio_net_words();
    words[0x34 / 4] = u32::from(CAP_EXPRESS);
    // PCIe v1 (0x24 bytes from 0xa4) -> MSI-X moved to 0xb0, inside it -> PM.
    words[usize::from(CAP_EXPRESS / 4)] = 0x0001_0000 | 0xb0 << 8 | 0x10;
    words[0xb0 / 4] = 0x0003_0000 | u32::from(CAP_PM) << 8 | 0x11;
    words[0xb4 / 4] = 0x0000_0001;
    words[0xb8 / 4] = 0x0000_0801;
    let caps = Capabilities::find(&ConfigSnapshot::from_words(&words));
    assert_eq!(caps.express, Some(CAP_EXPRESS));
    assert_eq!(caps.msix, None, "MSI-X overlaps the PCI Express capability");
    let offsets: Vec<u16> = caps.visible.iter().map(|c| c.offset).collect();
    assert!(!offsets.contains(&0xb0));
    for pair in caps.visible.windows(2) {
        assert_eq!(u16::from(pair[0].next), pair[1].offset);
    }
}

// ---- randomized -----------------------------------------------------------------------------

/// The slice's stage 2 as the effects build it: every mapping made and not yet removed.
#[derive(Default)]
struct Stage2 {
    mappings: BTreeMap<u8, BarMapping>,
}

impl Stage2 {
    fn apply(&mut self, effects: &[Effect], windows: &[Region]) {
        for effect in effects {
            match effect {
                Effect::BarMapped(m) => {
                    let inside = windows
                        .iter()
                        .any(|w| m.guest.base >= w.base && m.guest.end() <= w.end());
                    assert!(inside, "mapped outside the windows: {m:?}");
                    for other in self.mappings.values() {
                        assert!(!other.guest.overlaps(&m.guest), "{other:?} and {m:?}");
                    }
                    let mut covered = 0;
                    for d in &m.direct {
                        assert!(m.guest.contains(d.guest) && d.guest + d.size <= m.guest.end());
                        assert!(
                            m.physical.contains(d.physical)
                                && d.physical + d.size <= m.physical.end()
                        );
                        assert_eq!(d.guest - m.guest.base, d.physical - m.physical.base);
                        assert_eq!((d.guest | d.physical | d.size) % PAGE_SIZE, 0);
                        covered += d.size;
                    }
                    for t in &m.trapped {
                        assert!(m.guest.contains(t.base) && t.end() <= m.guest.end());
                        assert!(
                            m.direct
                                .iter()
                                .all(|d| !t.overlaps(&Region::new(d.guest, d.size)))
                        );
                        covered += t.size;
                    }
                    assert_eq!(covered, m.guest.size, "every page mapped or trapped");
                    if m.bar == 1 {
                        assert!(m.direct.is_empty(), "the MSI-X page is never mapped");
                    }
                    assert!(
                        self.mappings.insert(m.bar, m.clone()).is_none(),
                        "mapped twice"
                    );
                }
                Effect::BarUnmapped(m) => {
                    assert_eq!(self.mappings.remove(&m.bar).as_ref(), Some(m));
                }
                Effect::MsixRoute {
                    target: Some(Route::Spi(spi)),
                    ..
                }
                | Effect::Inject { spi, .. } => assert!((64..96).contains(spi)),
                _ => {}
            }
        }
    }
}

#[test]
fn random_accesses_never_map_outside_the_windows() {
    let windows = [WINDOW, HIGH_WINDOW];
    let msix_physical = [
        Region::new(BAR1_PHYSICAL, 64),
        Region::new(BAR1_PHYSICAL + 0x800, 8),
    ];
    let check_forward = |physical: u64, width: u8| {
        let access = Region::new(physical, u64::from(width));
        let inside = placed()
            .iter()
            .any(|b| physical >= b.cpu.base && access.end() <= b.cpu.end());
        assert!(inside, "forwarded outside the BARs: {physical:#x}");
        assert!(
            msix_physical.iter().all(|r| !r.overlaps(&access)),
            "forwarded into the physical MSI-X table or PBA: {physical:#x}"
        );
    };
    let (mut maps, mut routes, mut delivered, mut injected, mut forwarded) = (0, 0, 0, 0, 0);
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut f = nic();
        let mut stage2 = Stage2::default();
        for _ in 0..400 {
            let value = match rng.below(10) {
                0 => u64::MAX,
                1 => 0,
                2 => (WINDOW.base + rng.below(WINDOW.size + 0x10_0000)) & !0xfff,
                3 => HIGH_WINDOW.base >> 32,
                4 => rng.pick(&[0x0002, 0x0006, 0x0406, 0x8000, 0xc000, 0x8000_0000]),
                5 => RAM + rng.below(0x1000_0000),
                6 => DOORBELL,
                7 => 60 + rng.below(40),
                8 => rng.below(2),
                _ => rng.next(),
            };
            let width = rng.pick(&[1u8, 2, 4, 4, 4, 8, 3, 0]);
            let bar1 = f
                .mappings()
                .iter()
                .find(|m| m.bar == 1)
                .map_or(WINDOW.base, |m| m.guest.base);
            let effects = match rng.below(14) {
                // Hostile configuration writes anywhere.
                0 | 1 => {
                    let offset = match rng.below(4) {
                        0 => rng.pick(&[0x04, 0x10, 0x14, 0x20, 0x24, 0x30, 0x0c]),
                        1 => rng.pick(&[CAP_MSIX, CAP_MSIX + 2, CAP_EXPRESS + 8, CAP_EXPRESS + 10]),
                        2 => rng.below(0x40) as u16,
                        _ => rng.below(0x1100) as u16,
                    };
                    f.config_write(offset, width, value)
                }
                // A driver placing a BAR somewhere (often inside the window).
                2 | 3 => {
                    let page = match rng.below(4) {
                        0 | 1 => WINDOW.base + (rng.below(0x40) << 12),
                        2 => HIGH_WINDOW.base + (rng.below(0x40) << 12),
                        _ => RAM + (rng.below(0x40) << 12),
                    };
                    if rng.percent(50) {
                        f.config_write(0x14, 4, page)
                    } else {
                        let mut e = f.config_write(0x20, 4, page & 0xffff_ffff);
                        e.extend(f.config_write(0x24, 4, page >> 32));
                        e
                    }
                }
                4 => f.config_write(0x04, 2, rng.pick(&[0x0002, 0x0006, 0x0406, 0, 0x0004])),
                5 => f.config_write(
                    CAP_MSIX + 2,
                    2,
                    rng.pick(&[0x8000, 0xc000, 0, 0x4000, 0x8000]),
                ),
                // A driver programming the MSI-X table.
                6 | 7 => {
                    let entry = bar1 + 16 * rng.below(5);
                    let result = match rng.below(4) {
                        0 => f.bar_write(
                            entry,
                            8,
                            rng.pick(&[DOORBELL, DOORBELL, DOORBELL + 4, RAM]),
                        ),
                        1 => f.bar_write(entry + 8, 4, 60 + rng.below(40)),
                        2 => f.bar_write(entry + 12, 4, rng.below(2)),
                        _ => f.bar_write(bar1 + 0x800, width, value),
                    };
                    match result {
                        BarWrite::Emulated(effects) => effects,
                        _ => vec![],
                    }
                }
                // Hostile BAR accesses.
                8 | 9 => {
                    let base = f.mappings().first().map_or(WINDOW.base, |m| m.guest.base);
                    let address = base
                        + match rng.below(3) {
                            0 => rng.below(0x48),
                            1 => 0x7f8 + rng.below(0x10),
                            _ => rng.below(0x5000),
                        };
                    if let BarRead::Forward { physical } = f.bar_read(address, width) {
                        check_forward(physical, width);
                    }
                    match f.bar_write(address, width, value) {
                        BarWrite::Emulated(effects) => effects,
                        BarWrite::Forward {
                            physical,
                            value: forwarded_value,
                        } => {
                            check_forward(physical, width);
                            // At most bit 1 of one byte is set on the guest's behalf.
                            let added = forwarded_value ^ value;
                            assert!(
                                added == 0
                                    || (added.is_power_of_two()
                                        && added.trailing_zeros() % 8 == 1
                                        && forwarded_value & added != 0),
                                "{value:#x} forwarded as {forwarded_value:#x}"
                            );
                            forwarded += 1;
                            vec![]
                        }
                        BarWrite::Unclaimed => vec![],
                    }
                }
                10 | 11 => {
                    if let Interrupt::Deliver { spi } = f.interrupt(rng.below(6) as u16) {
                        assert!((64..96).contains(&spi));
                        delivered += 1;
                    }
                    vec![]
                }
                12 => {
                    let reserved = Region::new(WINDOW.base + (rng.below(0x40) << 12), 0x4000);
                    f.set_reserved(&[reserved])
                }
                _ => {
                    if rng.percent(10) {
                        f.reset()
                    } else {
                        let _ = f.config_read(rng.below(0x1100) as u16, width);
                        vec![]
                    }
                }
            };
            for e in &effects {
                match e {
                    Effect::BarMapped(_) => maps += 1,
                    Effect::MsixRoute {
                        target: Some(_), ..
                    } => routes += 1,
                    Effect::Inject { .. } => injected += 1,
                    _ => {}
                }
            }
            stage2.apply(&effects, &windows);
            assert_eq!(
                stage2.mappings.values().cloned().collect::<Vec<_>>(),
                f.mappings(),
                "seed {seed}"
            );
            for vector in 0..4 {
                if let Some(Route::Spi(spi)) = f.route(vector) {
                    assert!((64..96).contains(&spi));
                }
            }
        }
        stage2.apply(&f.reset(), &windows);
        assert!(stage2.mappings.is_empty(), "reset unmaps everything");
    }
    // The walk reaches the interesting states.
    assert!(
        maps > 1000 && routes > 50 && delivered > 0 && injected > 0 && forwarded > 100,
        "maps {maps} routes {routes} delivered {delivered} injected {injected} forwarded {forwarded}"
    );
}

/// The kernel refuses to assign a function whose emulated MSI-X capability (the slice's view)
/// is not the one `pci::find_capability` finds and the hypervisor programs. They agree for a
/// sane device and differ for a list where the first MSI-X overlaps a vendor capability and a
/// second one follows (found in review).
#[test]
fn the_msix_capability_the_slice_sees_is_the_one_programmed_unless_the_list_is_malformed() {
    struct Words(Vec<u32>);
    impl crate::pci::ConfigSpace for Words {
        fn read(&mut self, _f: Bdf, offset: u16) -> u32 {
            self.0[usize::from(offset / 4)]
        }
        fn write(&mut self, _f: Bdf, _offset: u16, _value: u32) {}
    }
    let programmed = |w: &[u32]| {
        crate::pci::find_capability(&mut Words(w.to_vec()), Bdf::new(1, 0, 0), id::MSI_X)
    };
    let sane = virtio_net_words();
    let seen = Capabilities::find(&ConfigSnapshot::from_words(&sane)).msix;
    assert_eq!(seen, Some(CAP_MSIX));
    assert_eq!(seen, programmed(&sane));
    // 0x34 -> a vendor capability at 0x84 whose length (0x20) covers 0x84..0xa4 -> MSI-X at
    // 0x98, inside it -> a second MSI-X at 0xb8 -> end.
    let mut w = virtio_net_words();
    w[0x34 / 4] = u32::from(CAP_VIRTIO_NOTIFY);
    w[usize::from(CAP_VIRTIO_NOTIFY / 4)] = 0x0220_0000 | u32::from(CAP_MSIX) << 8 | 0x09;
    w[usize::from(CAP_MSIX / 4)] = 0x0003_0000 | 0xb8 << 8 | 0x11;
    w[0xb8 / 4] = 0x0003_0000 | 0x11;
    w[0xbc / 4] = 0x3000 | 4;
    w[0xc0 / 4] = 0x3800 | 4;
    let seen = Capabilities::find(&ConfigSnapshot::from_words(&w)).msix;
    assert_eq!(seen, Some(0xb8));
    assert_eq!(programmed(&w), Some(CAP_MSIX));
}
