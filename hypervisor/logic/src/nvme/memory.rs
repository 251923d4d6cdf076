//! Addresses as the slice and the device see them, the slice's RAM window, and the short data
//! pointers (at most two pages: PRP Entry 1 and a page in PRP Entry 2, Base 1.4 §4.3) that
//! admin commands and Dataset Management use.

use super::spec::{PAGE_MASK, PAGE_SIZE, Status};

/// An intermediate physical address: what the slice believes is physical.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipa(pub u64);

/// A host physical address: what the NVMe device is given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pa(pub u64);

impl Ipa {
    /// The address `bytes` further on, if it does not overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<Ipa> {
        match self.0.checked_add(bytes) {
            Some(a) => Some(Ipa(a)),
            None => None,
        }
    }

    /// Offset inside its memory page.
    pub const fn page_offset(self) -> u64 {
        self.0 & PAGE_MASK
    }
}

/// The slice's RAM: `size` bytes at IPA `ipa_base`, backed by host physical memory at
/// `pa_base` (one contiguous block, docs/architecture.md, "Slices").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRam {
    /// First IPA of the slice's RAM (0x4000_0000 on every slice).
    pub ipa_base: Ipa,
    /// Bytes of RAM.
    pub size: u64,
    /// Host physical address of the first byte.
    pub pa_base: Pa,
}

impl GuestRam {
    /// Whether `len` bytes at `ipa` all lie inside the slice's RAM (overflow-safe).
    pub fn contains(&self, ipa: Ipa, len: u64) -> bool {
        self.translate(ipa, len).is_some()
    }

    /// The host physical address of `ipa`, if `len` bytes from there lie inside the slice's
    /// RAM.
    pub fn translate(&self, ipa: Ipa, len: u64) -> Option<Pa> {
        let offset = ipa.0.checked_sub(self.ipa_base.0)?;
        let end = offset.checked_add(len)?;
        if end > self.size {
            return None;
        }
        self.pa_base.0.checked_add(offset).map(Pa)
    }
}

/// The kernel could not access the slice's RAM where asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMemoryFault;

/// Up to two pieces of guest memory that make one short transfer, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShortTransfer {
    pub pieces: [(Ipa, usize); 2],
}

impl ShortTransfer {
    /// The pieces that hold bytes.
    pub fn pieces(&self) -> impl Iterator<Item = (Ipa, usize)> + '_ {
        self.pieces.iter().copied().filter(|&(_, len)| len > 0)
    }
}

/// Checks the data pointer of a transfer of `len` (at most one page) bytes: PRP Entry 1 may
/// start anywhere dword aligned; if the data crosses into a second page, PRP Entry 2 is that
/// page. Every byte must lie inside the slice's RAM.
pub(crate) fn short_transfer(
    ram: &GuestRam,
    prp1: u64,
    prp2: u64,
    len: usize,
) -> Result<ShortTransfer, Status> {
    debug_assert!(len as u64 <= PAGE_SIZE);
    if prp1 & 0b11 != 0 {
        return Err(Status::PRP_OFFSET_INVALID);
    }
    let first = (len as u64).min(PAGE_SIZE - (prp1 & PAGE_MASK));
    let rest = len as u64 - first;
    if !ram.contains(Ipa(prp1), first) {
        return Err(Status::DATA_TRANSFER_ERROR);
    }
    if rest > 0 {
        if prp2 & PAGE_MASK != 0 {
            return Err(Status::PRP_OFFSET_INVALID);
        }
        if !ram.contains(Ipa(prp2), rest) {
            return Err(Status::DATA_TRANSFER_ERROR);
        }
    }
    Ok(ShortTransfer {
        pieces: [(Ipa(prp1), first as usize), (Ipa(prp2), rest as usize)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: GuestRam = GuestRam {
        ipa_base: Ipa(0x4000_0000),
        size: 0x10_0000,
        pa_base: Pa(0x8_0000_0000),
    };

    #[test]
    fn translate_inside_and_at_the_edges() {
        assert_eq!(RAM.translate(Ipa(0x4000_0000), 1), Some(Pa(0x8_0000_0000)));
        assert_eq!(
            RAM.translate(Ipa(0x400f_f000), 0x1000),
            Some(Pa(0x8_000f_f000))
        );
        assert_eq!(RAM.translate(Ipa(0x400f_f001), 0x1000), None, "one past");
        assert_eq!(RAM.translate(Ipa(0x3fff_ffff), 1), None, "below");
        assert_eq!(RAM.translate(Ipa(0x4010_0000), 1), None, "above");
        assert_eq!(RAM.translate(Ipa(0x4000_0000), u64::MAX), None, "overflow");
        assert_eq!(RAM.translate(Ipa(u64::MAX), 2), None, "overflow");
    }

    #[test]
    fn short_transfer_in_one_page() {
        let t = short_transfer(&RAM, 0x4000_1000, 0xdead_beef, 4096).unwrap();
        assert_eq!(t.pieces().collect::<Vec<_>>(), [(Ipa(0x4000_1000), 4096)]);
    }

    #[test]
    fn short_transfer_across_two_pages() {
        let t = short_transfer(&RAM, 0x4000_1f00, 0x4000_5000, 512).unwrap();
        assert_eq!(
            t.pieces().collect::<Vec<_>>(),
            [(Ipa(0x4000_1f00), 256), (Ipa(0x4000_5000), 256)]
        );
    }

    #[test]
    fn short_transfer_refusals() {
        assert_eq!(
            short_transfer(&RAM, 0x4000_1002, 0, 16),
            Err(Status::PRP_OFFSET_INVALID)
        );
        assert_eq!(
            short_transfer(&RAM, 0x4000_1f00, 0x4000_5008, 512),
            Err(Status::PRP_OFFSET_INVALID)
        );
        assert_eq!(
            short_transfer(&RAM, 0x1000, 0, 16),
            Err(Status::DATA_TRANSFER_ERROR)
        );
        assert_eq!(
            short_transfer(&RAM, 0x4000_1f00, 0x4010_0000, 512),
            Err(Status::DATA_TRANSFER_ERROR)
        );
        assert_eq!(
            short_transfer(&RAM, 0x400f_ff00, 0, 512),
            Err(Status::DATA_TRANSFER_ERROR),
            "first page is the last one, PRP2 zero"
        );
    }
}
