//! The physical configuration space of an assigned function, read once at assignment, and the
//! capability list the slice is shown (PCI Local Bus 3.0 §6.7, PCIe Base 4.0 §7.5.3).

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::pci::{Bdf, ConfigSpace};

/// Bytes of a PCIe function's configuration space (with the extended space).
pub const CONFIG_SIZE: u16 = 0x1000;
/// First byte past the conventional (PCI-compatible) configuration space.
pub const CONVENTIONAL_SIZE: u16 = 0x100;
/// First byte a capability may start at (after the type-0 header).
const FIRST_CAPABILITY: u16 = 0x40;
/// A bound against looping lists: at most 48 capabilities fit in 192 bytes.
const MAX_CAPABILITIES: usize = 48;

/// Capability IDs (PCI Code and ID Assignment Specification §2).
pub mod id {
    /// PCI Power Management Interface.
    pub const POWER_MANAGEMENT: u8 = 0x01;
    /// MSI: hidden (only MSI-X is offered).
    pub const MSI: u8 = 0x05;
    /// Vendor specific (virtio keeps its structure locations in these).
    pub const VENDOR_SPECIFIC: u8 = 0x09;
    /// PCI Express.
    pub const PCI_EXPRESS: u8 = 0x10;
    /// MSI-X.
    pub const MSI_X: u8 = 0x11;
}

/// The 4 KiB of a function's configuration space as read at assignment.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigSnapshot {
    words: Box<[u32; CONFIG_SIZE as usize / 4]>,
}

impl core::fmt::Debug for ConfigSnapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ConfigSnapshot({:08x})", self.words[0])
    }
}

impl ConfigSnapshot {
    /// A snapshot from dwords starting at offset 0 (missing dwords read 0, extra ones are
    /// ignored).
    pub fn from_words(words: &[u32]) -> ConfigSnapshot {
        let mut all = Box::new([0u32; CONFIG_SIZE as usize / 4]);
        for (slot, word) in all.iter_mut().zip(words) {
            *slot = *word;
        }
        ConfigSnapshot { words: all }
    }

    /// Reads the whole 4 KiB of `bdf`'s configuration space through `config`. Take it after
    /// the function's BARs are placed and before anyone else has touched it.
    pub fn capture(config: &mut dyn ConfigSpace, bdf: Bdf) -> ConfigSnapshot {
        let mut all = Box::new([0u32; CONFIG_SIZE as usize / 4]);
        for (i, slot) in all.iter_mut().enumerate() {
            *slot = config.read(bdf, (i * 4) as u16);
        }
        ConfigSnapshot { words: all }
    }

    /// The dword holding byte `offset` (0 past the end).
    pub fn dword(&self, offset: u16) -> u32 {
        self.words
            .get(usize::from(offset / 4))
            .copied()
            .unwrap_or(0)
    }

    /// The byte at `offset` (0 past the end).
    pub fn byte(&self, offset: u16) -> u8 {
        (self.dword(offset) >> (8 * (offset % 4))) as u8
    }

    /// The little-endian 16-bit value at `offset`.
    pub fn word(&self, offset: u16) -> u16 {
        u16::from(self.byte(offset)) | u16::from(self.byte(offset.wrapping_add(1))) << 8
    }

    /// Vendor ID.
    pub fn vendor(&self) -> u16 {
        self.word(0)
    }

    /// Header Type without the multi-function bit.
    pub fn header_type(&self) -> u8 {
        self.byte(0x0e) & 0x7f
    }
}

/// A capability the slice sees, at its physical offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisibleCapability {
    /// Offset in configuration space (dword aligned, 0x40-0xfc).
    pub offset: u16,
    /// Capability ID.
    pub id: u8,
    /// Bytes it covers (clamped to the conventional space).
    pub length: u16,
    /// The next visible capability (0: the last).
    pub next: u8,
}

impl VisibleCapability {
    /// Whether byte `offset` belongs to it.
    pub fn contains(&self, offset: u16) -> bool {
        offset >= self.offset && offset - self.offset < self.length
    }
}

/// The capabilities of a function that the slice is shown, in list order, and where the
/// ones the emulation needs sit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Power management, PCI Express, MSI-X and vendor-specific capabilities, relinked.
    pub visible: Vec<VisibleCapability>,
    /// Offset of the MSI-X capability.
    pub msix: Option<u16>,
    /// Offset of the PCI Express capability.
    pub express: Option<u16>,
}

impl Capabilities {
    /// Walks the snapshot's capability list (bounded, loops and pointers into the header end
    /// it) and keeps the first power management, PCI Express and MSI-X capability and every
    /// vendor-specific one. Everything else (MSI, hot-plug, bridge and unknown capabilities)
    /// is left out of the list the slice walks.
    pub fn find(snapshot: &ConfigSnapshot) -> Capabilities {
        let mut found = Capabilities {
            visible: Vec::new(),
            msix: None,
            express: None,
        };
        // Status: Capabilities List.
        if snapshot.word(0x06) & 1 << 4 == 0 {
            return found;
        }
        let mut pointer = u16::from(snapshot.byte(0x34) & 0xfc);
        let mut seen = Vec::new();
        let mut power_management = false;
        for _ in 0..MAX_CAPABILITIES {
            if pointer < FIRST_CAPABILITY || seen.contains(&pointer) {
                break;
            }
            seen.push(pointer);
            let id = snapshot.byte(pointer);
            let wanted = match id {
                id::POWER_MANAGEMENT => !power_management,
                id::PCI_EXPRESS => found.express.is_none(),
                id::MSI_X => found.msix.is_none(),
                id::VENDOR_SPECIFIC => true,
                _ => false,
            };
            let length = match id {
                id::POWER_MANAGEMENT => 8,
                // PCI Express capability structure version 1 ends after Link Status,
                // version 2 after Slot Status 2 (PCIe Base 4.0 §7.5.3).
                id::PCI_EXPRESS if snapshot.byte(pointer + 2) & 0xf < 2 => 0x24,
                id::PCI_EXPRESS => 0x3c,
                id::MSI_X => 12,
                // Vendor specific: byte 2 is its length (at least the 3-byte header).
                _ => u16::from(snapshot.byte(pointer + 2)).max(3),
            }
            .min(CONVENTIONAL_SIZE - pointer);
            // A capability that overlaps one already kept is left out: each byte the slice
            // reads must belong to one capability, or the list it walks would follow raw
            // pointers into hidden ones (a malformed device; found by the `vpci` fuzz target).
            let clashes = found
                .visible
                .iter()
                .any(|c| pointer < c.offset + c.length && c.offset < pointer + length);
            if wanted && !clashes {
                match id {
                    id::POWER_MANAGEMENT => power_management = true,
                    id::PCI_EXPRESS => found.express = Some(pointer),
                    id::MSI_X => found.msix = Some(pointer),
                    _ => {}
                }
                found.visible.push(VisibleCapability {
                    offset: pointer,
                    id,
                    length,
                    next: 0,
                });
            }
            pointer = u16::from(snapshot.byte(pointer + 1) & 0xfc);
        }
        let offsets: Vec<u16> = found.visible.iter().map(|c| c.offset).collect();
        for (cap, next) in found.visible.iter_mut().zip(offsets.iter().skip(1)) {
            cap.next = *next as u8;
        }
        found
    }

    /// The first visible capability (0 if none).
    pub fn first(&self) -> u8 {
        self.visible.first().map_or(0, |c| c.offset as u8)
    }

    /// The visible capability byte `offset` belongs to.
    pub fn at(&self, offset: u16) -> Option<&VisibleCapability> {
        self.visible.iter().find(|c| c.contains(offset))
    }
}
