//! What the kernel tells a virtual controller about its slice: RAM, namespace share, hardware
//! queue pairs, identity strings and limits, checked once when the controller is made.

use alloc::string::String;

use super::memory::GuestRam;
use super::spec::{NSID_ALL, PAGE_MASK};

/// Most I/O queue pairs one slice may have (MSI-X vectors = queues + 1 <= 128); the plan
/// refuses more (`nvme.queues`).
pub const MAX_IO_QUEUES: u16 = microvisor_plan::model::MAX_NVME_QUEUES as u16;
/// Largest hardware queue depth accepted (entries per hardware SQ).
pub const MAX_QUEUE_DEPTH: u16 = 4096;
/// Largest MDTS advertised: 2^7 pages = 512 KiB, so a PRP list fits one DMA page.
pub const MAX_MDTS: u8 = 7;

/// The slice's share of a physical namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceShare {
    /// Physical namespace the share lies on; guest NSID 1 is rewritten to it.
    pub physical_nsid: u32,
    /// First physical LBA of the share; guest LBA 0 maps there.
    pub first_block: u64,
    /// Logical blocks in the share: the slice's namespace size.
    pub blocks: u64,
    /// log2 of the logical block size (the physical namespace's LBA format, e.g. 9 or 12).
    pub block_shift: u8,
}

/// The slice's hardware I/O queue pairs: `count` consecutive queue IDs from `first`, each
/// with `depth` entries. Guest I/O queue *n* is bound to hardware queue `first + n - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardwareQueues {
    /// Physical queue ID of the first pair.
    pub first: u16,
    /// Number of pairs (the slice's `[slice.nvme] queues`).
    pub count: u16,
    /// Entries of each hardware SQ; the slice may have `depth - 1` commands in each at once.
    pub depth: u16,
}

/// The IDs that name the slice's namespace (Base 1.4 §5.15.2.1, Figure 249).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceIds {
    /// IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// RFC 4122 UUID.
    pub uuid: [u8; 16],
}

impl NamespaceIds {
    /// IDs derived from the controller's serial number (stable across restarts). The EUI-64
    /// carries a locally administered prefix, the UUID is a version 8 (custom) UUID.
    pub fn from_serial(serial: &str) -> NamespaceIds {
        let a = fnv1a(serial.as_bytes(), 0x6e76_6d65_5f65_7569);
        let b = fnv1a(serial.as_bytes(), 0x6e76_6d65_5f75_7569);
        let mut eui64 = a.to_be_bytes();
        eui64[0] = (eui64[0] & !0b11) | 0b10;
        let mut uuid = [0u8; 16];
        uuid[..8].copy_from_slice(&b.to_be_bytes());
        uuid[8..].copy_from_slice(&fnv1a(&b.to_be_bytes(), a).to_be_bytes());
        uuid[6] = (uuid[6] & 0x0f) | 0x80;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        NamespaceIds { eui64, uuid }
    }
}

/// FNV-1a over `bytes`, starting from `seed` mixed into the offset basis.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Everything a virtual controller is made from.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The slice's RAM: every queue, PRP and data buffer must lie inside it.
    pub ram: GuestRam,
    /// The slice's blocks on the physical controller.
    pub namespace: NamespaceShare,
    /// The slice's hardware I/O queue pairs.
    pub queues: HardwareQueues,
    /// Serial Number: printable ASCII, at most 20 bytes.
    pub serial: String,
    /// Model Number: printable ASCII, at most 40 bytes ("microvisor NVMe slice").
    pub model: String,
    /// Firmware Revision: printable ASCII, at most 8 bytes.
    pub firmware_revision: String,
    /// NVM Subsystem NQN, at most 223 bytes; `None` derives one from the namespace UUID.
    pub subsystem_nqn: Option<String>,
    /// Namespace IDs; `None` derives them from the serial number.
    pub namespace_ids: Option<NamespaceIds>,
    /// Controller ID reported in Identify Controller.
    pub controller_id: u16,
    /// PCI Vendor ID and Subsystem Vendor ID (the same values as the function's config space).
    pub pci_vendor_id: u16,
    /// The physical controller's MDTS (0 = no limit); the slice gets min(this, 7).
    pub physical_mdts: u8,
    /// The physical controller has a volatile write cache (Identify Controller VWC bit 0).
    pub volatile_write_cache: bool,
    /// The kernel can move a hardware queue pair's CQ into the slice's RAM
    /// ([`super::NvmeBackend::place_cq`]), so that guest I/O queues that allow it become
    /// *direct* (docs/decisions/0005-nvme-completions-without-exits.md).
    pub direct_queues: bool,
}

/// The model number a slice sees unless the plan gives another.
pub const DEFAULT_MODEL: &str = "microvisor NVMe slice";

/// Why a configuration cannot make a controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The slice's RAM is empty or not 4 KiB aligned (base or size).
    RamAlignment,
    /// The slice's RAM wraps the address space (IPA or PA).
    RamOverflow,
    /// No hardware queue pairs, or more than [`MAX_IO_QUEUES`].
    QueueCount,
    /// Hardware queue IDs start at 0 (the admin queue) or run past 65535.
    QueueIds,
    /// Queue depth below 2 or above [`MAX_QUEUE_DEPTH`].
    QueueDepth,
    /// The namespace share has no blocks.
    EmptyNamespace,
    /// The share's last block does not fit in 64 bits.
    NamespaceOverflow,
    /// The physical NSID is 0 or the broadcast value.
    PhysicalNsid,
    /// The block size is below 512 bytes or above 64 KiB.
    BlockSize,
    /// The serial number is longer than 20 bytes or not printable ASCII.
    Serial,
    /// The model number is longer than 40 bytes or not printable ASCII.
    Model,
    /// The firmware revision is longer than 8 bytes or not printable ASCII.
    FirmwareRevision,
    /// The subsystem NQN is longer than 223 bytes or not printable ASCII.
    SubsystemNqn,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConfigError::RamAlignment => "slice RAM is empty or not 4 KiB aligned",
            ConfigError::RamOverflow => "slice RAM wraps the address space",
            ConfigError::QueueCount => "hardware queue count is 0 or above 127",
            ConfigError::QueueIds => "hardware queue IDs include 0 or pass 65535",
            ConfigError::QueueDepth => "hardware queue depth is below 2 or above 4096",
            ConfigError::EmptyNamespace => "namespace share has no blocks",
            ConfigError::NamespaceOverflow => "namespace share ends past LBA 2^64",
            ConfigError::PhysicalNsid => "physical NSID is 0 or FFFFFFFFh",
            ConfigError::BlockSize => "block size is not 512 B to 64 KiB",
            ConfigError::Serial => "serial number is not printable ASCII of at most 20 bytes",
            ConfigError::Model => "model number is not printable ASCII of at most 40 bytes",
            ConfigError::FirmwareRevision => {
                "firmware revision is not printable ASCII of at most 8 bytes"
            }
            ConfigError::SubsystemNqn => {
                "subsystem NQN is not printable ASCII of at most 223 bytes"
            }
        })
    }
}

fn printable(s: &str, max: usize) -> bool {
    s.len() <= max && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl ControllerConfig {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ram = &self.ram;
        if ram.size == 0 || (ram.ipa_base.0 | ram.pa_base.0 | ram.size) & PAGE_MASK != 0 {
            return Err(ConfigError::RamAlignment);
        }
        if ram.ipa_base.0.checked_add(ram.size).is_none()
            || ram.pa_base.0.checked_add(ram.size).is_none()
        {
            return Err(ConfigError::RamOverflow);
        }
        let q = &self.queues;
        if q.count == 0 || q.count > MAX_IO_QUEUES {
            return Err(ConfigError::QueueCount);
        }
        if q.first == 0 || q.first.checked_add(q.count - 1).is_none() {
            return Err(ConfigError::QueueIds);
        }
        if !(2..=MAX_QUEUE_DEPTH).contains(&q.depth) {
            return Err(ConfigError::QueueDepth);
        }
        let ns = &self.namespace;
        if ns.blocks == 0 {
            return Err(ConfigError::EmptyNamespace);
        }
        if ns.first_block.checked_add(ns.blocks).is_none() {
            return Err(ConfigError::NamespaceOverflow);
        }
        if ns.physical_nsid == 0 || ns.physical_nsid == NSID_ALL {
            return Err(ConfigError::PhysicalNsid);
        }
        if !(9..=16).contains(&ns.block_shift) {
            return Err(ConfigError::BlockSize);
        }
        if !printable(&self.serial, 20) {
            return Err(ConfigError::Serial);
        }
        if !printable(&self.model, 40) {
            return Err(ConfigError::Model);
        }
        if !printable(&self.firmware_revision, 8) {
            return Err(ConfigError::FirmwareRevision);
        }
        if let Some(nqn) = &self.subsystem_nqn
            && !printable(nqn, 223)
        {
            return Err(ConfigError::SubsystemNqn);
        }
        Ok(())
    }

    /// The MDTS the slice sees: the physical one, at most [`MAX_MDTS`].
    pub fn mdts(&self) -> u8 {
        match self.physical_mdts {
            0 => MAX_MDTS,
            m => m.min(MAX_MDTS),
        }
    }

    /// Largest data transfer of one command, in bytes.
    pub fn max_transfer(&self) -> u64 {
        super::spec::PAGE_SIZE << self.mdts()
    }

    /// MSI-X vectors of the function: one for the admin queue plus one per I/O queue.
    pub fn msix_vectors(&self) -> u16 {
        self.queues.count + 1
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nvme::memory::{Ipa, Pa};
    use alloc::string::ToString;

    pub(crate) fn sample() -> ControllerConfig {
        ControllerConfig {
            ram: GuestRam {
                ipa_base: Ipa(0x4000_0000),
                size: 0x40_0000,
                pa_base: Pa(0x8_0000_0000),
            },
            namespace: NamespaceShare {
                physical_nsid: 1,
                first_block: 0x1000,
                blocks: 0x800,
                block_shift: 9,
            },
            queues: HardwareQueues {
                first: 3,
                count: 2,
                depth: 8,
            },
            serial: "SLICE-web-0".to_string(),
            model: DEFAULT_MODEL.to_string(),
            firmware_revision: "0.1".to_string(),
            subsystem_nqn: None,
            namespace_ids: None,
            controller_id: 1,
            pci_vendor_id: 0x1b36,
            physical_mdts: 0,
            volatile_write_cache: true,
            direct_queues: false,
        }
    }

    #[test]
    fn sample_is_valid() {
        assert_eq!(sample().validate(), Ok(()));
    }

    #[test]
    fn each_error() {
        type Change = fn(&mut ControllerConfig);
        let cases: [(Change, ConfigError); 17] = [
            (|c| c.ram.size = 0, ConfigError::RamAlignment),
            (
                |c| c.ram.ipa_base = Ipa(0x4000_0800),
                ConfigError::RamAlignment,
            ),
            (
                |c| c.ram.pa_base = Pa(0x8_0000_0010),
                ConfigError::RamAlignment,
            ),
            (|c| c.ram.pa_base = Pa(!0xfff), ConfigError::RamOverflow),
            (|c| c.queues.count = 0, ConfigError::QueueCount),
            (|c| c.queues.count = 128, ConfigError::QueueCount),
            (|c| c.queues.first = 0, ConfigError::QueueIds),
            (|c| c.queues.first = 0xffff, ConfigError::QueueIds),
            (|c| c.queues.depth = 1, ConfigError::QueueDepth),
            (|c| c.namespace.blocks = 0, ConfigError::EmptyNamespace),
            (
                |c| c.namespace.first_block = u64::MAX,
                ConfigError::NamespaceOverflow,
            ),
            (
                |c| c.namespace.physical_nsid = NSID_ALL,
                ConfigError::PhysicalNsid,
            ),
            (|c| c.namespace.block_shift = 8, ConfigError::BlockSize),
            (|c| c.serial = "x".repeat(21), ConfigError::Serial),
            (|c| c.model = "m\u{e9}".to_string(), ConfigError::Model),
            (
                |c| c.firmware_revision = "123456789".to_string(),
                ConfigError::FirmwareRevision,
            ),
            (
                |c| c.subsystem_nqn = Some("\n".to_string()),
                ConfigError::SubsystemNqn,
            ),
        ];
        for (change, error) in cases {
            let mut config = sample();
            change(&mut config);
            assert_eq!(config.validate(), Err(error), "{error}");
        }
    }

    #[test]
    fn mdts_is_capped_at_512_kib() {
        let mut config = sample();
        assert_eq!((config.mdts(), config.max_transfer()), (7, 512 * 1024));
        config.physical_mdts = 5;
        assert_eq!((config.mdts(), config.max_transfer()), (5, 128 * 1024));
        config.physical_mdts = 9;
        assert_eq!(config.mdts(), 7);
    }

    #[test]
    fn namespace_ids_are_stable_and_distinct() {
        let a = NamespaceIds::from_serial("a");
        assert_eq!(a, NamespaceIds::from_serial("a"));
        assert_ne!(a, NamespaceIds::from_serial("b"));
        assert_eq!(a.eui64[0] & 0b11, 0b10, "locally administered");
        assert_eq!(a.uuid[6] >> 4, 8, "UUID version 8");
        assert_eq!(a.uuid[8] >> 6, 0b10, "RFC 4122 variant");
    }
}
