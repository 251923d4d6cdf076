//! Identify data structures (NVMe Base 1.4 §5.15.2): the fields of the
//! controller and namespace structures the driver uses.

use crate::text::Text;

/// Size of an Identify data structure.
pub const IDENTIFY_BYTES: usize = 4096;

/// From Identify Controller (CNS 01h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerInfo {
    /// PCI Vendor ID.
    pub vendor: u16,
    /// Serial Number (trailing spaces removed).
    pub serial: Text<20>,
    /// Model Number (trailing spaces removed).
    pub model: Text<40>,
    /// Firmware Revision (trailing spaces removed).
    pub firmware: Text<8>,
    /// Maximum Data Transfer Size: 2^MDTS minimum pages; 0 = no limit.
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: u16,
    /// Version (VER), 0 if not reported.
    pub version: u32,
    /// Optional Admin Command Support.
    pub oacs: u16,
    /// Number of Namespaces.
    pub namespaces: u32,
    /// Fused Operation Support.
    pub fuses: u16,
    /// SGL Support.
    pub sgls: u32,
    /// Volatile Write Cache present.
    pub volatile_write_cache: bool,
}

fn le16(data: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([data[at], data[at + 1]])
}

fn le32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

fn le64(data: &[u8], at: usize) -> u64 {
    u64::from(le32(data, at)) | (u64::from(le32(data, at + 4)) << 32)
}

/// An ASCII field without its space (or NUL) padding.
fn ascii<const N: usize>(field: &[u8]) -> Text<N> {
    let end = field
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    Text::from_bytes(&field[..end])
}

impl ControllerInfo {
    /// Reads the fields from a 4 KiB Identify Controller structure.
    pub fn parse(data: &[u8; IDENTIFY_BYTES]) -> Self {
        Self {
            vendor: le16(data, 0),
            serial: ascii(&data[4..24]),
            model: ascii(&data[24..64]),
            firmware: ascii(&data[64..72]),
            mdts: data[77],
            cntlid: le16(data, 78),
            version: le32(data, 80),
            oacs: le16(data, 256),
            namespaces: le32(data, 516),
            fuses: le16(data, 522),
            sgls: le32(data, 536),
            volatile_write_cache: data[525] & 1 != 0,
        }
    }

    /// Largest transfer in bytes for a minimum page size of `min_page`
    /// bytes, capped at `cap` (MDTS 0 means no limit).
    pub fn max_transfer(&self, min_page: u64, cap: u64) -> u64 {
        if self.mdts == 0 || self.mdts >= 32 {
            cap
        } else {
            (min_page << self.mdts).min(cap)
        }
    }
}

/// From Identify Namespace (CNS 00h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace Size in logical blocks.
    pub blocks: u64,
    /// Namespace Capacity in logical blocks.
    pub capacity: u64,
    /// Bytes per logical block of the format in use.
    pub lba_bytes: u32,
    /// Metadata bytes per block of the format in use.
    pub metadata_bytes: u16,
    /// Index of the LBA format in use (FLBAS bits 3:0).
    pub format: u8,
}

/// Why an Identify Namespace structure is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceError {
    /// NSZE = 0: the namespace is not active.
    Inactive,
    /// The LBA format in use is not between 512 bytes and 64 KiB.
    LbaSize(u8),
}

impl NamespaceInfo {
    /// Reads the fields from a 4 KiB Identify Namespace structure.
    pub fn parse(data: &[u8; IDENTIFY_BYTES]) -> Result<Self, NamespaceError> {
        let blocks = le64(data, 0);
        if blocks == 0 {
            return Err(NamespaceError::Inactive);
        }
        let format = data[26] & 0xf;
        let lbaf = le32(data, 128 + 4 * usize::from(format));
        let lbads = (lbaf >> 16) as u8;
        if !(9..=16).contains(&lbads) {
            return Err(NamespaceError::LbaSize(lbads));
        }
        Ok(Self {
            blocks,
            capacity: le64(data, 8),
            lba_bytes: 1 << lbads,
            metadata_bytes: lbaf as u16,
            format,
        })
    }

    /// Namespace size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.lba_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller_page() -> [u8; IDENTIFY_BYTES] {
        let mut d = [0u8; IDENTIFY_BYTES];
        d[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        d[4..24].copy_from_slice(b"slice-web-0         ");
        d[24..64].copy_from_slice(b"microvisor NVMe slice                   ");
        d[64..72].copy_from_slice(b"1.0     ");
        d[77] = 7;
        d[78..80].copy_from_slice(&3u16.to_le_bytes());
        d[80..84].copy_from_slice(&0x0001_0400u32.to_le_bytes());
        d[256..258].copy_from_slice(&0x000au16.to_le_bytes());
        d[516..520].copy_from_slice(&1u32.to_le_bytes());
        d[522..524].copy_from_slice(&1u16.to_le_bytes());
        d[525] = 1;
        d[536..540].copy_from_slice(&0x0010_0001u32.to_le_bytes());
        d
    }

    #[test]
    fn controller_fields() {
        let c = ControllerInfo::parse(&controller_page());
        assert_eq!(c.vendor, 0x1b36);
        assert_eq!(c.serial.as_str(), Some("slice-web-0"));
        assert_eq!(c.model.as_str(), Some("microvisor NVMe slice"));
        assert_eq!(c.firmware.as_str(), Some("1.0"));
        assert_eq!((c.mdts, c.cntlid, c.version), (7, 3, 0x0001_0400));
        assert_eq!(
            (c.oacs, c.namespaces, c.fuses, c.sgls),
            (0xa, 1, 1, 0x0010_0001)
        );
        assert!(c.volatile_write_cache);
        assert_eq!(c.max_transfer(4096, 1 << 30), 512 << 10);
        assert_eq!(c.max_transfer(4096, 256 << 10), 256 << 10);
        let unlimited = ControllerInfo { mdts: 0, ..c };
        assert_eq!(unlimited.max_transfer(4096, 1 << 20), 1 << 20);
    }

    #[test]
    fn all_spaces_is_empty() {
        let mut d = controller_page();
        d[24..64].fill(b' ');
        assert_eq!(ControllerInfo::parse(&d).model.as_bytes(), b"");
    }

    fn namespace_page(blocks: u64, flbas: u8, lbads: u8) -> [u8; IDENTIFY_BYTES] {
        let mut d = [0u8; IDENTIFY_BYTES];
        d[0..8].copy_from_slice(&blocks.to_le_bytes());
        d[8..16].copy_from_slice(&blocks.to_le_bytes());
        d[25] = 1; // two formats
        d[26] = flbas;
        d[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
        d[132..136].copy_from_slice(&((u32::from(lbads) << 16) | 8).to_le_bytes());
        d
    }

    #[test]
    fn namespace_fields() {
        let n = NamespaceInfo::parse(&namespace_page(0x2_0000, 0, 12)).unwrap();
        assert_eq!(
            (n.blocks, n.lba_bytes, n.metadata_bytes, n.format),
            (0x2_0000, 512, 0, 0)
        );
        assert_eq!(n.bytes(), 64 << 20);
        // FLBAS selects format 1: 4 KiB blocks with 8 bytes of metadata.
        let m = NamespaceInfo::parse(&namespace_page(16, 0x11, 12)).unwrap();
        assert_eq!((m.lba_bytes, m.metadata_bytes, m.format), (4096, 8, 1));
    }

    #[test]
    fn unusable_namespaces() {
        assert_eq!(
            NamespaceInfo::parse(&namespace_page(0, 0, 12)),
            Err(NamespaceError::Inactive)
        );
        assert_eq!(
            NamespaceInfo::parse(&namespace_page(8, 1, 20)),
            Err(NamespaceError::LbaSize(20))
        );
    }
}
