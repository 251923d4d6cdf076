//! Where a virtio-net function keeps its MAC address (Virtio 1.1 §4.1.4 "Virtio Structure PCI
//! Capabilities", §5.1.4 "Network device: Device configuration layout"): found from the
//! configuration space read at assignment, so the hypervisor can report which NIC a slice
//! owns. Only the modern (virtio 1.x) network function is recognised: vendor 0x1af4,
//! device 0x1041.
//!
//! Its vendor-specific capabilities name, by `cfg_type`, a BAR and a range in it; the common
//! configuration (type 1) holds `device_feature_select` (offset 0), `device_feature`
//! (offset 4), `driver_feature_select` (offset 8) and `driver_feature` (offset 0xc), the
//! device configuration (type 4) starts with the 6-byte `mac`, valid when the device offers
//! VIRTIO_NET_F_MAC (feature bit 5). Everything read here comes from the device
//! and is checked: a capability shorter than its 16-byte structure, a reserved BAR number
//! (6, 7), a BAR that was not placed or a range past its end is skipped, and the first usable
//! structure of each type is taken (the order of preference the device suggests). Loops and
//! pointers into the header end the capability walk ([`Capabilities::find`]).
//!
//! [`AccessPlatformAck`]: the hypervisor acknowledges VIRTIO_F_ACCESS_PLATFORM (feature bit
//! 33) on the driver's behalf, for drivers that drop it (U-Boot 2023.01), by editing the
//! guest's `driver_feature` writes on their way to the device (Virtio 1.1 §6, "Reserved
//! Feature Bits": a device that offers it refuses FEATURES_OK without it).

use crate::pci::PlacedBar;

use super::snapshot::{Capabilities, ConfigSnapshot, id};

/// PCI vendor ID of virtio devices.
pub const VENDOR: u16 = 0x1af4;
/// PCI device ID of a modern (virtio 1.x) network device: 0x1040 + device type 1.
pub const NET_DEVICE: u16 = 0x1041;
/// `cfg_type` of the common configuration structure.
const COMMON_CFG: u8 = 1;
/// `cfg_type` of the device-specific configuration structure.
const DEVICE_CFG: u8 = 4;
/// Bytes of `struct virtio_pci_cap` (cap_vndr .. length).
const CAPABILITY_BYTES: u16 = 16;
/// Highest BAR number a capability may name; 6 and 7 are reserved.
const LAST_BAR: u8 = 5;

/// Offsets in the common configuration structure (Virtio 1.1 §4.1.4.3).
pub mod common {
    /// le32: which 32 feature bits `DEVICE_FEATURE` shows.
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    /// le32, read-only: the device's feature bits `32 * select` to `32 * select + 31`.
    pub const DEVICE_FEATURE: u64 = 0x04;
    /// le32: which 32 feature bits a write of `DRIVER_FEATURE` acknowledges.
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    /// le32: the driver's feature bits `32 * select` to `32 * select + 31`.
    pub const DRIVER_FEATURE: u64 = 0x0c;
    /// Bytes the four need.
    pub const NEEDED: u64 = 0x10;
}

/// VIRTIO_F_ACCESS_PLATFORM (feature bit 33, Virtio 1.1 §6): the device's DMA goes through
/// the platform's IOMMU, which the driver must accept for the device to work.
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Offset of `mac` in the network device's configuration, and its size.
const MAC_OFFSET: u64 = 0;
pub const MAC_BYTES: usize = 6;
/// VIRTIO_NET_F_MAC: the device has a given MAC address (feature bit 5, in feature word 0).
const NET_F_MAC: u32 = 1 << 5;

/// A range of one of the function's BARs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRange {
    /// The BAR's register index (0-5), as in [`PlacedBar::bar`].
    pub bar: u8,
    /// Offset inside the BAR.
    pub offset: u64,
    /// Bytes.
    pub length: u64,
}

impl BarRange {
    /// The BAR offset of byte `at` of the range.
    pub fn at(&self, at: u64) -> u64 {
        self.offset + at
    }
}

/// Where to read a virtio-net function's features and MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRegisters {
    /// The common configuration (at least [`common::NEEDED`] bytes).
    pub common: BarRange,
    /// The `mac` field of the device configuration ([`MAC_BYTES`] bytes).
    pub mac: BarRange,
}

impl NetRegisters {
    /// The registers of the function `snapshot` was read from, with its BARs placed as
    /// `bars`; None if it is not a modern virtio-net function or does not say usably where
    /// its common or device configuration is.
    pub fn find(snapshot: &ConfigSnapshot, bars: &[PlacedBar]) -> Option<NetRegisters> {
        if snapshot.vendor() != VENDOR || snapshot.word(0x02) != NET_DEVICE {
            return None;
        }
        let capabilities = Capabilities::find(snapshot);
        let structure = |cfg_type: u8, needed: u64| {
            capabilities
                .visible
                .iter()
                .filter(|c| c.id == id::VENDOR_SPECIFIC && c.length >= CAPABILITY_BYTES)
                .filter(|c| snapshot.byte(c.offset + 3) == cfg_type)
                .find_map(|c| usable_range(snapshot, c.offset, needed, bars))
        };
        Some(NetRegisters {
            common: structure(COMMON_CFG, common::NEEDED)?,
            mac: structure(DEVICE_CFG, MAC_OFFSET + MAC_BYTES as u64)?,
        })
    }
}

/// The range the capability at `offset` names, if its BAR is a placed one that holds it and
/// it has at least `needed` bytes.
fn usable_range(
    snapshot: &ConfigSnapshot,
    offset: u16,
    needed: u64,
    bars: &[PlacedBar],
) -> Option<BarRange> {
    let bar = snapshot.byte(offset + 4);
    if bar > LAST_BAR {
        return None;
    }
    let start = u64::from(snapshot.dword(offset + 8));
    let length = u64::from(snapshot.dword(offset + 12));
    let size = bars.iter().find(|b| b.bar.index == bar)?.bar.size;
    let end = start.checked_add(length)?;
    (length >= needed && end <= size).then_some(BarRange {
        bar,
        offset: start,
        length,
    })
}

/// The MAC address a virtio-net device gives, from its feature word 0 (`device_feature` with
/// `device_feature_select` = 0) and the first bytes of its device configuration: None unless
/// it offers VIRTIO_NET_F_MAC.
pub fn offered_mac(features_0_31: u32, mac: [u8; MAC_BYTES]) -> Option<[u8; MAC_BYTES]> {
    (features_0_31 & NET_F_MAC != 0).then_some(mac)
}

/// The hypervisor's part in a virtio function's feature negotiation: every guest write to
/// `driver_feature` made while `driver_feature_select` is 1 gets bit 1 (feature 33,
/// [`F_ACCESS_PLATFORM`]) set before it reaches the device. Built only for a function that
/// offers the feature; the bytes holding the two registers ([`AccessPlatformAck::trapped`])
/// must then trap, so that every write to them passes through [`AccessPlatformAck::write`].
///
/// Sound because the feature only tells the driver that the device's DMA is translated: a
/// slice's assigned function is behind the SMMU's stage 2 whatever its driver acknowledges
/// (the device works on IPAs, which stage 2 turns into the slice's RAM and nothing else),
/// and on hardware a NIC's DMA always is. Everything else is forwarded unchanged.
///
/// `driver_feature_select` is shadowed from the guest's writes (all of which trap), so the
/// device is never read on the guest's behalf; it reads 0 after a reset of the function. A
/// write of any width is taken byte by byte in address order, the way the device splits a
/// wide access: a write covering both registers first selects, then writes the features.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPlatformAck {
    /// The common configuration structure.
    common: BarRange,
    /// `driver_feature_select` as the guest last wrote it.
    select: u32,
}

impl AccessPlatformAck {
    /// The acknowledgement for a function whose common configuration is `common` (at least
    /// [`common::NEEDED`] bytes, as [`NetRegisters::find`] checks).
    pub fn new(common: BarRange) -> AccessPlatformAck {
        AccessPlatformAck { common, select: 0 }
    }

    /// The BAR (register index), offset and length of the bytes whose writes must trap:
    /// `driver_feature_select` and `driver_feature`.
    pub fn trapped(&self) -> (u8, u64, u64) {
        (
            self.common.bar,
            self.common.at(common::DRIVER_FEATURE_SELECT),
            common::NEEDED - common::DRIVER_FEATURE_SELECT,
        )
    }

    /// `driver_feature_select` as the guest last wrote it.
    pub fn select(&self) -> u32 {
        self.select
    }

    /// A guest write of `width` bytes (at most 8) of `value` at `offset` of BAR `bar`, on its
    /// way to the device: the value to write there instead.
    pub fn write(&mut self, bar: u8, offset: u64, width: u8, value: u64) -> u64 {
        if bar != self.common.bar {
            return value;
        }
        let select_at = self.common.at(common::DRIVER_FEATURE_SELECT);
        let feature_at = self.common.at(common::DRIVER_FEATURE);
        let mut value = value;
        for byte in 0..u64::from(width.min(8)) {
            let shift = 8 * byte as u32;
            let Some(at) = offset.checked_add(byte) else {
                break;
            };
            if let Some(i) = at.checked_sub(select_at).filter(|&i| i < 4) {
                let lane = 8 * i as u32;
                let written = (value >> shift) as u8;
                self.select = self.select & !(0xff << lane) | u32::from(written) << lane;
            } else if at == feature_at && self.select == 1 {
                // Bit 33 is bit 1 of the low byte of feature word 1.
                value |= (F_ACCESS_PLATFORM >> 32) << shift;
            }
        }
        value
    }

    /// The function was reset: `driver_feature_select` reads 0 again.
    pub fn reset(&mut self) {
        self.select = 0;
    }
}

/// A MAC address shown the usual way: `52:54:00:6d:76:00`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddress(pub [u8; MAC_BYTES]);

impl core::fmt::Display for MacAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;
    use alloc::vec::Vec;

    use super::*;
    use crate::passthrough::tests::{placed, virtio_net_words};

    /// Offsets of the fixture's capabilities (passthrough/tests.rs).
    const CAP_VIRTIO_COMMON: u16 = 0x50;
    const CAP_VIRTIO_DEVICE: u16 = 0x70;

    fn find(words: &[u32]) -> Option<NetRegisters> {
        NetRegisters::find(&ConfigSnapshot::from_words(words), &placed())
    }

    fn set(words: &mut [u32], offset: u16, value: u32) {
        words[usize::from(offset / 4)] = value;
    }

    fn set_byte(words: &mut [u32], offset: u16, value: u8) {
        let word = &mut words[usize::from(offset / 4)];
        let shift = 8 * u32::from(offset % 4);
        *word = (*word & !(0xff << shift)) | u32::from(value) << shift;
    }

    #[test]
    fn finds_qemus_virtio_net_structures() {
        assert_eq!(
            find(&virtio_net_words()),
            Some(NetRegisters {
                common: BarRange {
                    bar: 4,
                    offset: 0,
                    length: 0x1000
                },
                mac: BarRange {
                    bar: 4,
                    offset: 0x2000,
                    length: 0x1000
                },
            })
        );
    }

    #[test]
    fn other_functions_are_not_virtio_net() {
        let mut words = virtio_net_words();
        set(&mut words, 0, 0x1042_1af4); // virtio-blk
        assert_eq!(find(&words), None);
        set(&mut words, 0, 0x1000_1af4); // transitional (legacy) virtio-net
        assert_eq!(find(&words), None);
        set(&mut words, 0, 0x0010_8086);
        assert_eq!(find(&words), None);
    }

    #[test]
    fn a_missing_structure_means_no_registers() {
        let mut words = virtio_net_words();
        set_byte(&mut words, CAP_VIRTIO_DEVICE + 3, 9);
        assert_eq!(find(&words), None, "no device configuration");
        let mut words = virtio_net_words();
        set_byte(&mut words, CAP_VIRTIO_COMMON + 3, 9);
        assert_eq!(find(&words), None, "no common configuration");
        let mut words = virtio_net_words();
        set(&mut words, 0x04, 0x0007); // Status without Capabilities List
        assert_eq!(find(&words), None);
    }

    #[test]
    fn hostile_capabilities_are_skipped() {
        // Reserved BAR number.
        let mut words = virtio_net_words();
        set_byte(&mut words, CAP_VIRTIO_DEVICE + 4, 6);
        assert_eq!(find(&words), None);
        // A BAR that was not placed (BAR5 is BAR4's upper half).
        set_byte(&mut words, CAP_VIRTIO_DEVICE + 4, 5);
        assert_eq!(find(&words), None);
        // A range past the BAR's end, and one whose end wraps in 32 bits.
        let mut words = virtio_net_words();
        set(&mut words, CAP_VIRTIO_DEVICE + 8, 0x3ffc);
        set(&mut words, CAP_VIRTIO_DEVICE + 12, 6);
        assert_eq!(find(&words), None);
        set(&mut words, CAP_VIRTIO_DEVICE + 8, 0xffff_fff0);
        set(&mut words, CAP_VIRTIO_DEVICE + 12, 0x20);
        assert_eq!(find(&words), None);
        // Too short for a MAC, or for the feature registers.
        let mut words = virtio_net_words();
        set(&mut words, CAP_VIRTIO_DEVICE + 12, 5);
        assert_eq!(find(&words), None);
        let mut words = virtio_net_words();
        set(&mut words, CAP_VIRTIO_COMMON + 12, 4);
        assert_eq!(find(&words), None);
        // A capability shorter than its structure (cap_len < 16).
        let mut words = virtio_net_words();
        set_byte(&mut words, CAP_VIRTIO_DEVICE + 2, 12);
        assert_eq!(find(&words), None);
    }

    #[test]
    fn the_first_usable_structure_of_a_type_wins() {
        // The device-configuration capability names a bad BAR; the ISR one is turned into a
        // second, usable device configuration further down the list.
        let mut words = virtio_net_words();
        set_byte(&mut words, CAP_VIRTIO_DEVICE + 4, 7);
        let isr = 0x60;
        set_byte(&mut words, isr + 3, 4);
        set(&mut words, isr + 12, 0x100);
        let found = find(&words).unwrap();
        assert_eq!(
            found.mac,
            BarRange {
                bar: 4,
                offset: 0x1000,
                length: 0x100
            }
        );
    }

    #[test]
    fn capability_loops_and_wild_pointers_end_the_walk() {
        // The list loops back to its first capability before reaching the common one.
        let mut words = virtio_net_words();
        set_byte(&mut words, CAP_VIRTIO_DEVICE + 1, 0x98);
        assert_eq!(find(&words), None);
        // A pointer into the header.
        let mut words = virtio_net_words();
        set_byte(&mut words, CAP_VIRTIO_DEVICE + 1, 0x10);
        assert_eq!(find(&words), None);
        // A vendor capability at the very end of the conventional space: its structure would
        // run past 0x100, so it is skipped.
        let mut words = virtio_net_words();
        set_byte(&mut words, 0x34, 0xfc);
        set(&mut words, 0xfc, 0x0410_0009);
        assert_eq!(find(&words), None);
        // Every byte set: nothing usable, no panic.
        assert_eq!(find(&[u32::MAX; 1024]), None);
    }

    #[test]
    fn random_configuration_spaces_never_panic() {
        let mut rng = crate::testing::Rng(0x006d_6163);
        for _ in 0..2000 {
            let mut words = virtio_net_words();
            for _ in 0..8 {
                let i = 16 + rng.below(48) as usize;
                words[i] = rng.next() as u32;
            }
            if let Some(found) = find(&words) {
                for range in [found.common, found.mac] {
                    let bar = placed().into_iter().find(|b| b.bar.index == range.bar);
                    assert!(range.offset + range.length <= bar.unwrap().bar.size);
                }
            }
        }
    }

    #[test]
    fn access_platform_is_acknowledged_only_in_driver_feature_word_1() {
        // A common configuration at 0x100 of BAR 2.
        let mut ack = AccessPlatformAck::new(BarRange {
            bar: 2,
            offset: 0x100,
            length: 0x38,
        });
        assert_eq!(ack.trapped(), (2, 0x108, 8));
        assert_eq!(ack.write(2, 0x10c, 4, 0), 0, "select 0");
        assert_eq!(ack.write(2, 0x108, 4, 1), 1);
        assert_eq!(ack.select(), 1);
        assert_eq!(ack.write(2, 0x10c, 4, 1), 3);
        assert_eq!(ack.write(2, 0x0c, 4, 1), 1, "outside the structure");
        assert_eq!(ack.write(4, 0x10c, 4, 1), 1, "another BAR");
        assert_eq!(
            ack.write(2, 0x104, 8, 0),
            0,
            "device_feature and the select"
        );
        assert_eq!(ack.select(), 0);
        // Offsets near the end of the address space do not wrap.
        assert_eq!(ack.write(2, u64::MAX - 1, 8, 7), 7);
        ack.write(2, 0x108, 4, 1);
        ack.reset();
        assert_eq!(ack.select(), 0);
    }

    #[test]
    fn the_mac_counts_only_when_offered() {
        let mac = [0x52, 0x54, 0x00, 0x6d, 0x76, 0x00];
        assert_eq!(offered_mac(1 << 5, mac), Some(mac));
        assert_eq!(offered_mac(0xffff_ffdf, mac), None);
        assert_eq!(format!("{}", MacAddress(mac)), "52:54:00:6d:76:00");
        let all: Vec<u8> = (0..6).map(|i| 0xa0 + i).collect();
        assert_eq!(
            format!("{}", MacAddress(all.try_into().unwrap())),
            "a0:a1:a2:a3:a4:a5"
        );
    }
}
