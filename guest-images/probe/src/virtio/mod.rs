//! The modern virtio PCI transport and the network device as the probe's polled driver uses them
//! (OASIS virtio v1.2: §4.1.4 PCI capabilities, §4.1.4.3 common configuration, §2.1 device
//! status, §2.2 feature bits, §2.7 split virtqueues, §5.1 network device): capability
//! decoding, feature negotiation, the queue layout in one page, descriptor and ring encodings,
//! and the frames the driver sends (an ARP request) and expects (slirp's ARP reply).
//! The network attacks' outcomes and verdicts are in `attacks`.

pub mod attacks;

use core::fmt;

/// Vendor ID of virtio devices.
pub const VENDOR_VIRTIO: u16 = 0x1af4;
/// Device ID of a modern (virtio 1.x only) network device: 0x1040 + device type 1 (§4.1.2).
pub const DEVICE_NET_MODERN: u16 = 0x1041;
/// Device ID of a transitional network device (legacy and modern interfaces).
pub const DEVICE_NET_TRANSITIONAL: u16 = 0x1000;
/// Class code of an Ethernet controller (network, Ethernet, no programming interface).
pub const CLASS_ETHERNET: u32 = 0x02_00_00;

/// PCI capability IDs the driver looks at (PCI Local Bus 3.0 Appendix H).
pub mod cap_id {
    /// Power management.
    pub const PM: u8 = 0x01;
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// Vendor specific: the virtio structures (§4.1.4).
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const PCIE: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// `cfg_type` of a virtio PCI capability (§4.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CfgType {
    /// Common configuration.
    Common,
    /// Notifications.
    Notify,
    /// ISR status.
    Isr,
    /// Device-specific configuration.
    Device,
    /// PCI configuration access window.
    PciCfg,
    /// Anything else (shared memory, vendor data): ignored.
    Other(u8),
}

impl CfgType {
    /// From the byte at offset 3 of the capability.
    pub fn from_byte(b: u8) -> CfgType {
        match b {
            1 => CfgType::Common,
            2 => CfgType::Notify,
            3 => CfgType::Isr,
            4 => CfgType::Device,
            5 => CfgType::PciCfg,
            other => CfgType::Other(other),
        }
    }
}

/// One `struct virtio_pci_cap` (§4.1.4), from the capability's first four dwords (and the
/// fifth, `notify_off_multiplier`, for a notify capability).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioCap {
    /// What the structure is.
    pub cfg_type: CfgType,
    /// BAR index holding it (0..=5 valid).
    pub bar: u8,
    /// Offset within the BAR.
    pub offset: u32,
    /// Length of the structure.
    pub length: u32,
    /// For `Notify`: the queue notify offset multiplier.
    pub notify_multiplier: u32,
}

impl VirtioCap {
    /// Decodes dwords 0..=3 (`dw0` = ID, next, length, cfg_type; `dw1` = bar, id, padding;
    /// `dw2` = offset; `dw3` = length) and `dw4` (the multiplier, read only for Notify).
    pub fn parse(dw0: u32, dw1: u32, dw2: u32, dw3: u32, dw4: u32) -> VirtioCap {
        let cfg_type = CfgType::from_byte((dw0 >> 24) as u8);
        VirtioCap {
            cfg_type,
            bar: dw1 as u8,
            offset: dw2,
            length: dw3,
            notify_multiplier: if cfg_type == CfgType::Notify { dw4 } else { 0 },
        }
    }

    /// Whether the structure lies in a BAR of `bar_size` bytes (`min_len` needed).
    pub fn fits(&self, bar_size: u64, min_len: u32) -> bool {
        self.bar <= 5
            && self.length >= min_len
            && u64::from(self.offset) + u64::from(self.length) <= bar_size
    }
}

/// Common configuration offsets (`struct virtio_pci_common_cfg`, §4.1.4.3).
pub mod common {
    /// u32: which 32 feature bits `DEVICE_FEATURE` shows.
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    /// u32: the device's feature bits (read-only).
    pub const DEVICE_FEATURE: u64 = 0x04;
    /// u32: which 32 feature bits `DRIVER_FEATURE` takes.
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    /// u32: the driver's accepted feature bits.
    pub const DRIVER_FEATURE: u64 = 0x0c;
    /// u16: MSI-X vector for configuration changes.
    pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
    /// u16: number of queues.
    pub const NUM_QUEUES: u64 = 0x12;
    /// u8: device status.
    pub const DEVICE_STATUS: u64 = 0x14;
    /// u8: configuration generation.
    pub const CONFIG_GENERATION: u64 = 0x15;
    /// u16: which queue the fields below address.
    pub const QUEUE_SELECT: u64 = 0x16;
    /// u16: queue size (max on read, the driver's choice on write).
    pub const QUEUE_SIZE: u64 = 0x18;
    /// u16: MSI-X vector of the queue.
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    /// u16: 1 = enabled.
    pub const QUEUE_ENABLE: u64 = 0x1c;
    /// u16: the queue's notify offset (times the multiplier).
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    /// u64: descriptor table.
    pub const QUEUE_DESC: u64 = 0x20;
    /// u64: driver (available) ring.
    pub const QUEUE_DRIVER: u64 = 0x28;
    /// u64: device (used) ring.
    pub const QUEUE_DEVICE: u64 = 0x30;
    /// Length of the structure up to `QUEUE_DEVICE` included.
    pub const LEN: u32 = 0x38;
}

/// Device status bits (§2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The driver gave up.
    pub const FAILED: u8 = 0x80;
}

/// Feature bits (§5.1.3, §6).
pub mod feature {
    /// The device has a MAC address in its configuration.
    pub const MAC: u64 = 1 << 5;
    /// The device has a link status field.
    pub const STATUS: u64 = 1 << 16;
    /// Virtio 1.x interface.
    pub const VERSION_1: u64 = 1 << 32;
    /// The device's DMA goes through the platform's IOMMU (without it QEMU bypasses the SMMU).
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
}

/// Why the features on offer are not enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureError {
    /// VERSION_1 is not offered (a legacy-only device).
    NoVersion1,
    /// ACCESS_PLATFORM is not offered: the device's DMA would bypass the IOMMU.
    NoAccessPlatform,
}

impl fmt::Display for FeatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FeatureError::NoVersion1 => "no-version-1",
            FeatureError::NoAccessPlatform => "no-access-platform",
        })
    }
}

/// The features the driver accepts out of `offered`: VERSION_1 and ACCESS_PLATFORM required,
/// MAC and STATUS taken if offered, nothing else (no checksum offload, no mergeable buffers,
/// no control queue, one queue pair).
pub fn negotiate(offered: u64) -> Result<u64, FeatureError> {
    if offered & feature::VERSION_1 == 0 {
        return Err(FeatureError::NoVersion1);
    }
    if offered & feature::ACCESS_PLATFORM == 0 {
        return Err(FeatureError::NoAccessPlatform);
    }
    Ok(offered & (feature::VERSION_1 | feature::ACCESS_PLATFORM | feature::MAC | feature::STATUS))
}

/// "No MSI-X vector" (§4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xffff;

/// Network device configuration offsets (§5.1.4).
pub mod netcfg {
    /// 6 bytes: the MAC address (with feature MAC).
    pub const MAC: u64 = 0;
    /// u16: link status (with feature STATUS; bit 0 = link up).
    pub const STATUS: u64 = 6;
}

/// Receive queue index of the first queue pair (§5.1.2).
pub const RX_QUEUE: u16 = 0;
/// Transmit queue index of the first queue pair.
pub const TX_QUEUE: u16 = 1;

/// Bytes of `struct virtio_net_hdr` with VERSION_1 (num_buffers always present, §5.1.6).
pub const NET_HDR_BYTES: u64 = 12;

/// Descriptor flags (§2.7.5).
pub mod desc_flags {
    /// The chain continues at `next`.
    pub const NEXT: u16 = 1;
    /// The device writes this buffer.
    pub const WRITE: u16 = 2;
}

/// Where the parts of one split virtqueue of `size` entries lie in one 4 KiB page (§2.7):
/// descriptors at 0 (16 bytes each, 16-byte aligned), the available ring after them (2-byte
/// aligned), the used ring at the second half of the page (4-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    /// Entries.
    pub size: u16,
    /// Offset of the descriptor table.
    pub desc: u64,
    /// Offset of the available ring (flags, idx, ring[size], used_event).
    pub avail: u64,
    /// Offset of the used ring (flags, idx, ring[size] of {id u32, len u32}, avail_event).
    pub used: u64,
}

/// Largest queue the one-page layout holds.
pub const MAX_QUEUE_SIZE: u16 = 64;

impl QueueLayout {
    /// The layout for `size` entries (a power of two, at most [`MAX_QUEUE_SIZE`]).
    pub fn new(size: u16) -> Option<QueueLayout> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return None;
        }
        Some(QueueLayout {
            size,
            desc: 0,
            avail: 16 * u64::from(size),
            used: 0x800,
        })
    }

    /// Offset of descriptor `i`.
    pub fn desc_at(&self, i: u16) -> u64 {
        self.desc + 16 * u64::from(i % self.size)
    }

    /// Offset of the available ring's `idx`.
    pub fn avail_idx(&self) -> u64 {
        self.avail + 2
    }

    /// Offset of available ring slot for running index `idx`.
    pub fn avail_slot(&self, idx: u16) -> u64 {
        self.avail + 4 + 2 * u64::from(idx % self.size)
    }

    /// Offset of the used ring's `idx`.
    pub fn used_idx(&self) -> u64 {
        self.used + 2
    }

    /// Offset of the used element for running index `idx` (id at +0, len at +4).
    pub fn used_elem(&self, idx: u16) -> u64 {
        self.used + 4 + 8 * u64::from(idx % self.size)
    }
}

/// Queue size the driver picks out of the device's maximum.
pub fn queue_size(device_max: u16, wanted: u16) -> Option<u16> {
    if device_max == 0 {
        return None;
    }
    let mut size = wanted.min(MAX_QUEUE_SIZE);
    while size > device_max {
        size /= 2;
    }
    // A non-power-of-two maximum: the largest power of two below it.
    (size > 0 && size.is_power_of_two()).then_some(size)
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
}

/// `52:54:00:12:34:56`.
impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// An IPv4 address in network order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4(pub [u8; 4]);

/// `10.0.2.2`.
impl fmt::Display for Ipv4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// slirp's gateway address (QEMU user networking default 10.0.2.0/24).
pub const SLIRP_GATEWAY: Ipv4 = Ipv4([10, 0, 2, 2]);
/// The address the probe claims in its ARP request (slirp's first DHCP address).
pub const PROBE_IP: Ipv4 = Ipv4([10, 0, 2, 15]);

/// Bytes of an Ethernet frame carrying an ARP packet, without padding (14 + 28).
pub const ARP_FRAME_BYTES: usize = 42;
/// Minimum Ethernet frame without FCS: shorter frames are padded with zeros.
pub const MIN_FRAME_BYTES: usize = 60;

const ETHERTYPE_ARP: u16 = 0x0806;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// An Ethernet broadcast ARP request "who has `target`? tell `sender_ip`" (RFC 826), padded to
/// [`MIN_FRAME_BYTES`].
pub fn arp_request(sender: Mac, sender_ip: Ipv4, target: Ipv4) -> [u8; MIN_FRAME_BYTES] {
    let mut f = [0u8; MIN_FRAME_BYTES];
    f[0..6].copy_from_slice(&Mac::BROADCAST.0);
    f[6..12].copy_from_slice(&sender.0);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&sender.0);
    f[28..32].copy_from_slice(&sender_ip.0);
    // Target hardware address unknown: zeros.
    f[38..42].copy_from_slice(&target.0);
    f
}

/// An ARP reply found in a received frame: who answered, with which MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpReply {
    /// The answering host's MAC.
    pub mac: Mac,
    /// The address it answers for.
    pub ip: Ipv4,
}

/// The ARP reply for `asked` addressed to `own` in `frame` (Ethernet, no FCS), if it is one.
pub fn parse_arp_reply(frame: &[u8], own: Mac, asked: Ipv4) -> Option<ArpReply> {
    if frame.len() < ARP_FRAME_BYTES || frame[0..6] != own.0 {
        return None;
    }
    let be16 = |i: usize| u16::from_be_bytes([frame[i], frame[i + 1]]);
    if be16(12) != ETHERTYPE_ARP || be16(14) != 1 || be16(16) != 0x0800 || be16(20) != ARP_REPLY {
        return None;
    }
    let ip = Ipv4([frame[28], frame[29], frame[30], frame[31]]);
    if ip != asked {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[22..28]);
    Some(ArpReply { mac: Mac(mac), ip })
}

/// MSI-X capability fields (PCI Local Bus 3.0 §6.8.2).
pub mod msix {
    /// Message Control (upper half of the capability's first dword): table size - 1.
    pub const TABLE_SIZE_MASK: u16 = 0x7ff;
    /// Message Control: function mask.
    pub const FUNCTION_MASK: u16 = 1 << 14;
    /// Message Control: MSI-X enable.
    pub const ENABLE: u16 = 1 << 15;
    /// Bytes per table entry: address low, address high, data, vector control.
    pub const ENTRY_BYTES: u64 = 16;
    /// Vector control: masked.
    pub const VECTOR_MASKED: u32 = 1;

    /// The BAR index and offset of a Table Offset/BIR or PBA Offset/BIR dword.
    pub fn bir_offset(dword: u32) -> (u8, u32) {
        ((dword & 7) as u8, dword & !7)
    }
}

/// GICD_SETSPI_NSR: a 32-bit write of an SPI number there makes it pending (GICv3 §12.9.26);
/// a slice's MSI doorbell when its tree has `mbi-ranges`.
pub const GICD_SETSPI_NSR: u64 = 0x40;
/// QEMU `virt`'s physical ITS translater (GITS_TRANSLATER).
pub const PHYSICAL_ITS_TRANSLATER: u64 = 0x0809_0040;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_decode() {
        // QEMU's notify capability: ID 9, next 0x70, length 20, type 2; BAR 4; offset 0x3000,
        // length 0x1000, multiplier 4.
        let c = VirtioCap::parse(0x0214_7009, 4, 0x3000, 0x1000, 4);
        assert_eq!(c.cfg_type, CfgType::Notify);
        assert_eq!(
            (c.bar, c.offset, c.length, c.notify_multiplier),
            (4, 0x3000, 0x1000, 4)
        );
        assert!(c.fits(0x4000, 4));
        assert!(!c.fits(0x3800, 4));
        let common = VirtioCap::parse(0x0110_8409, 4, 0, 0x1000, 0xdead);
        assert_eq!(common.cfg_type, CfgType::Common);
        assert_eq!(
            common.notify_multiplier, 0,
            "only notify caps carry a multiplier"
        );
        assert_eq!(CfgType::from_byte(8), CfgType::Other(8));
        assert!(!VirtioCap::parse(0x0110_8409, 6, 0, 0x1000, 0).fits(1 << 20, 0x38));
    }

    #[test]
    fn features() {
        let qemu = 0x0000_0003_79bf_ffe7 | feature::MAC;
        let got = negotiate(qemu).unwrap();
        assert_eq!(
            got,
            feature::VERSION_1 | feature::ACCESS_PLATFORM | feature::MAC | feature::STATUS
        );
        assert_eq!(
            negotiate(qemu & !feature::ACCESS_PLATFORM),
            Err(FeatureError::NoAccessPlatform)
        );
        assert_eq!(negotiate(feature::MAC), Err(FeatureError::NoVersion1));
        assert_eq!(
            negotiate(feature::VERSION_1 | feature::ACCESS_PLATFORM),
            Ok(feature::VERSION_1 | feature::ACCESS_PLATFORM)
        );
    }

    #[test]
    fn queue_layout_fits_a_page() {
        let q = QueueLayout::new(64).unwrap();
        assert_eq!(q.avail, 0x400);
        assert!(
            q.avail_slot(63) + 2 + 2 <= q.used,
            "avail ring and used_event before used"
        );
        assert!(q.used_elem(63) + 8 + 2 <= 0x1000);
        assert_eq!(q.avail_slot(64), q.avail_slot(0));
        assert_eq!(q.used_elem(65), q.used_elem(1));
        assert_eq!(q.desc_at(3), 48);
        assert!(QueueLayout::new(128).is_none());
        assert!(QueueLayout::new(12).is_none());
        assert_eq!(queue_size(256, 16), Some(16));
        assert_eq!(queue_size(8, 16), Some(8));
        assert_eq!(queue_size(12, 16), Some(8));
        assert_eq!(queue_size(0, 16), None);
    }

    #[test]
    fn arp_round_trip() {
        let own = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let req = arp_request(own, PROBE_IP, SLIRP_GATEWAY);
        assert_eq!(&req[0..6], &[0xff; 6]);
        assert_eq!(&req[12..14], &[0x08, 0x06]);
        assert_eq!(&req[38..42], &[10, 0, 2, 2]);
        // A reply as slirp sends it.
        let gw = Mac([0x52, 0x55, 10, 0, 2, 2]);
        let mut reply = [0u8; 60];
        reply[0..6].copy_from_slice(&own.0);
        reply[6..12].copy_from_slice(&gw.0);
        reply[12..14].copy_from_slice(&[0x08, 0x06]);
        reply[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        reply[22..28].copy_from_slice(&gw.0);
        reply[28..32].copy_from_slice(&[10, 0, 2, 2]);
        reply[32..38].copy_from_slice(&own.0);
        reply[38..42].copy_from_slice(&PROBE_IP.0);
        let got = parse_arp_reply(&reply, own, SLIRP_GATEWAY).unwrap();
        assert_eq!(got.mac, gw);
        assert_eq!(format!("{}", got.mac), "52:55:0a:00:02:02");
        assert_eq!(format!("{}", got.ip), "10.0.2.2");
        // Our own request is not a reply; a reply for another address is not ours.
        assert_eq!(parse_arp_reply(&req, own, SLIRP_GATEWAY), None);
        assert_eq!(parse_arp_reply(&reply, own, PROBE_IP), None);
        assert_eq!(parse_arp_reply(&reply[..41], own, SLIRP_GATEWAY), None);
    }

    #[test]
    fn msix_bir() {
        assert_eq!(msix::bir_offset(0x0000_0001), (1, 0));
        assert_eq!(msix::bir_offset(0x0000_0801), (1, 0x800));
    }
}
