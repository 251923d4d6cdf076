//! The LPI side of each guest redistributor (GICv3 spec §6.1, §12.11: GICR_CTLR.EnableLPIs,
//! GICR_PROPBASER, GICR_PENDBASER): which LPIs are pending on each vCPU, and the property
//! table reads that give every LPI its enable bit and priority.

use alloc::boxed::Box;

use super::{GuestMemory, Outcome, Residency, VirtualIts};
use crate::nvme::Ipa;
use crate::vgic::VcpuSet;

/// First LPI INTID.
pub const LPI_BASE: u32 = 8192;
/// INTID bits of the guest's GIC when it has a vITS (GICD_TYPER.IDbits + 1): LPIs
/// 8192..16383, whatever the guest writes into GICR_PROPBASER.IDbits.
pub const LPI_ID_BITS: u32 = 14;
/// Number of LPIs.
pub const LPIS: usize = (1 << LPI_ID_BITS) - LPI_BASE as usize;

/// Redistributor register offsets in RD_base (§12.11) that the vITS owns.
pub mod gicr {
    pub const CTLR: u64 = 0x0000;
    pub const PROPBASER: u64 = 0x0070;
    pub const PENDBASER: u64 = 0x0078;
    /// GICR_CTLR.EnableLPIs.
    pub const CTLR_ENABLE_LPIS: u64 = 1;
    /// Writable PROPBASER bits: IDbits, InnerCache, Shareability, PA 51:12, OuterCache.
    pub const PROPBASER_MASK: u64 = 0x1f | 0x7 << 7 | 0x3 << 10 | 0x000f_ffff_ffff_f000 | 0x7 << 56;
    /// Writable PENDBASER bits: InnerCache, Shareability, PA 51:16, OuterCache (PTZ is
    /// write-only).
    pub const PENDBASER_MASK: u64 = 0x7 << 7 | 0x3 << 10 | 0x000f_ffff_ffff_0000 | 0x7 << 56;
    pub const PENDBASER_PTZ: u64 = 1 << 62;
}

/// A set of LPIs (bit n = INTID 8192 + n), with a summary word per 64 words so a pass over
/// a vCPU with nothing pending costs two loads.
#[derive(Clone, Debug)]
pub(super) struct LpiSet {
    words: Box<[u64; LPIS / 64]>,
    summary: [u64; LPIS / 64 / 64],
}

impl LpiSet {
    fn new() -> Self {
        Self {
            words: Box::new([0; LPIS / 64]),
            summary: [0; LPIS / 64 / 64],
        }
    }

    fn index(lpi: u32) -> Option<usize> {
        let n = lpi.checked_sub(LPI_BASE)? as usize;
        (n < LPIS).then_some(n)
    }

    pub(super) fn set(&mut self, lpi: u32, pending: bool) {
        let Some(n) = Self::index(lpi) else { return };
        let (word, bit) = (n / 64, n % 64);
        if pending {
            self.words[word] |= 1 << bit;
            self.summary[word / 64] |= 1 << (word % 64);
        } else {
            self.words[word] &= !(1 << bit);
            if self.words[word] == 0 {
                self.summary[word / 64] &= !(1 << (word % 64));
            }
        }
    }

    pub(super) fn get(&self, lpi: u32) -> bool {
        Self::index(lpi).is_some_and(|n| self.words[n / 64] & 1 << (n % 64) != 0)
    }

    /// Whether no LPI is a member (two words to look at: the list-register pass asks on
    /// every exit).
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.summary.iter().all(|&word| word == 0)
    }

    /// Clears `lpi`; returns whether it was set.
    pub(super) fn take(&mut self, lpi: u32) -> bool {
        let was = self.get(lpi);
        self.set(lpi, false);
        was
    }

    /// The members, lowest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.summary
            .iter()
            .enumerate()
            .flat_map(move |(s, &summary)| {
                Bits(summary).flat_map(move |w| {
                    let word = s * 64 + w as usize;
                    Bits(self.words[word]).map(move |b| LPI_BASE + (word * 64) as u32 + b)
                })
            })
    }

    /// Moves every member into `other`.
    fn drain_into(&mut self, other: &mut LpiSet) {
        for (word, bits) in self.words.iter_mut().enumerate() {
            if *bits != 0 {
                other.words[word] |= *bits;
                other.summary[word / 64] |= 1 << (word % 64);
                *bits = 0;
            }
        }
        self.summary = [0; LPIS / 64 / 64];
    }

    fn load(&mut self, bytes: &[u8; LPIS / 8]) {
        for (word, chunk) in bytes.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            let value = u64::from_le_bytes(b);
            if value != 0 {
                self.words[word] |= value;
                self.summary[word / 64] |= 1 << (word % 64);
            }
        }
    }
}

/// The set bits of a word, lowest first.
struct Bits(u64);

impl Iterator for Bits {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// One vCPU's redistributor, LPI side.
#[derive(Clone, Debug)]
pub(super) struct Redistributor {
    /// GICR_CTLR.EnableLPIs (stays set until the vCPU is reset).
    pub(super) enabled: bool,
    pub(super) propbaser: u64,
    pub(super) pendbaser: u64,
    /// The property table lies inside the slice's RAM (checked when LPIs were enabled).
    pub(super) properties_usable: bool,
    pub(super) pending: LpiSet,
}

impl Redistributor {
    pub(super) fn new() -> Self {
        Self {
            enabled: false,
            propbaser: 0,
            pendbaser: 0,
            properties_usable: false,
            pending: LpiSet::new(),
        }
    }

    /// INTID bits the property table covers: the guest's PROPBASER.IDbits + 1, at most
    /// [`LPI_ID_BITS`].
    fn property_bits(&self) -> u32 {
        ((self.propbaser & 0x1f) as u32 + 1).min(LPI_ID_BITS)
    }

    /// The property table's first byte (INTID 8192) and the LPIs it covers.
    fn property_table(&self) -> (Ipa, usize) {
        let lpis = (1usize << self.property_bits()).saturating_sub(LPI_BASE as usize);
        (Ipa(self.propbaser & 0x000f_ffff_ffff_f000), lpis)
    }
}

impl VirtualIts {
    /// Whether the redistributor register at `offset` (RD_base) is the vITS's to emulate.
    pub fn owns_redistributor_register(offset: u64) -> bool {
        matches!(offset, gicr::CTLR | gicr::PROPBASER | gicr::PENDBASER)
            || matches!(offset, 0x74 | 0x7c)
    }

    /// Reads an LPI register of `vcpu`'s redistributor (32- or 64-bit; others read 0).
    pub fn redistributor_read(&self, vcpu: usize, offset: u64, width: u8) -> u64 {
        let Some(rd) = self.redistributors.get(vcpu) else {
            return 0;
        };
        let (register, shift) = (offset & !7, (offset & 4) * 8);
        let value = match register {
            gicr::CTLR if offset == gicr::CTLR => return u64::from(rd.enabled),
            gicr::PROPBASER => rd.propbaser,
            gicr::PENDBASER => rd.pendbaser,
            _ => return 0,
        };
        if width == 8 {
            value
        } else {
            (value >> shift) & 0xffff_ffff
        }
    }

    /// Writes an LPI register of `vcpu`'s redistributor. Setting EnableLPIs checks the
    /// tables, loads the property table into the cache and the guest's preset pending bits.
    pub fn redistributor_write(
        &mut self,
        vcpu: usize,
        offset: u64,
        width: u8,
        value: u64,
        memory: &impl GuestMemory,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let ram = self.ram;
        let Some(rd) = self.redistributors.get_mut(vcpu) else {
            return outcome;
        };
        let merge = |old: u64| -> u64 {
            match (width, offset & 4) {
                (8, _) => value,
                (_, 0) => old & !0xffff_ffff | value & 0xffff_ffff,
                _ => old & 0xffff_ffff | value << 32,
            }
        };
        match offset & !7 {
            gicr::CTLR if offset == gicr::CTLR => {
                if value & gicr::CTLR_ENABLE_LPIS == 0 || rd.enabled {
                    return outcome;
                }
                rd.enabled = true;
                let (table, lpis) = rd.property_table();
                rd.properties_usable = lpis > 0 && ram.contains(table, lpis as u64);
                if rd.pendbaser & gicr::PENDBASER_PTZ == 0 {
                    let mut bytes = [0u8; LPIS / 8];
                    let at = Ipa(rd.pendbaser & 0x000f_ffff_ffff_0000).checked_add(1024);
                    if let Some(at) = at.filter(|&at| ram.contains(at, bytes.len() as u64))
                        && memory.read(at, &mut bytes).is_ok()
                    {
                        rd.pending.load(&bytes);
                    }
                }
                rd.pendbaser &= !gicr::PENDBASER_PTZ;
                let bits = rd.property_bits();
                let properties = rd
                    .properties_usable
                    .then(|| ram.translate(table, lpis as u64))
                    .flatten();
                self.reload_properties(vcpu, memory);
                outcome.kick = VcpuSet::EMPTY.with(vcpu);
                if let Some(properties) = properties.filter(|_| self.has_assigned()) {
                    outcome.resident = Some(Residency {
                        vcpu,
                        properties,
                        id_bits: bits,
                    });
                }
            }
            gicr::PROPBASER if !rd.enabled => {
                rd.propbaser = merge(rd.propbaser) & gicr::PROPBASER_MASK;
            }
            gicr::PENDBASER if !rd.enabled => {
                rd.pendbaser = merge(rd.pendbaser) & (gicr::PENDBASER_MASK | gicr::PENDBASER_PTZ);
            }
            _ => {}
        }
        outcome
    }

    /// Reloads the property byte of `lpi` from `vcpu`'s property table (INV); an LPI the
    /// table does not cover, or a table outside RAM, reads as disabled.
    pub(super) fn reload_property(&mut self, vcpu: usize, lpi: u32, memory: &impl GuestMemory) {
        let Some(n) = LpiSet::index(lpi) else { return };
        let byte = self
            .redistributors
            .get(vcpu)
            .and_then(|rd| {
                let (table, lpis) = rd.property_table();
                (rd.properties_usable && n < lpis).then_some(table)
            })
            .and_then(|table| table.checked_add(n as u64))
            .and_then(|at| {
                let mut byte = [0u8];
                memory.read(at, &mut byte).ok().map(|()| byte[0])
            })
            .unwrap_or(0);
        self.properties[n] = byte;
    }

    /// Reloads every property byte from `vcpu`'s property table (INVALL, EnableLPIs): one
    /// read of at most 8 KiB.
    pub(super) fn reload_properties(&mut self, vcpu: usize, memory: &impl GuestMemory) {
        let Some(rd) = self.redistributors.get(vcpu) else {
            return;
        };
        let (table, lpis) = rd.property_table();
        let usable = rd.properties_usable;
        self.properties.fill(0);
        if usable && memory.read(table, &mut self.properties[..lpis]).is_err() {
            self.properties.fill(0);
        }
    }

    /// MOVALL: every LPI pending on `from` becomes pending on `to`.
    pub(super) fn move_all(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        let mut moved = core::mem::replace(&mut self.redistributors[from].pending, LpiSet::new());
        moved.drain_into(&mut self.redistributors[to].pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    #[test]
    fn lpi_sets_iterate_in_order_and_ignore_non_lpis() {
        let mut set = LpiSet::new();
        for lpi in [16383, 8192, 9000, 8191, 16384, 0, u32::MAX] {
            set.set(lpi, true);
        }
        assert_eq!(
            set.iter().collect::<alloc::vec::Vec<_>>(),
            [8192, 9000, 16383]
        );
        assert!(set.take(9000) && !set.take(9000) && !set.get(9000));
        let mut other = LpiSet::new();
        set.drain_into(&mut other);
        assert_eq!(set.iter().count(), 0);
        assert_eq!(other.iter().collect::<alloc::vec::Vec<_>>(), [8192, 16383]);
    }

    #[test]
    fn lpi_sets_agree_with_a_plain_model() {
        let mut rng = Rng(0x5e7);
        let mut set = LpiSet::new();
        let mut model = alloc::vec![false; LPIS];
        for _ in 0..20_000 {
            let lpi = LPI_BASE + rng.below(LPIS as u64) as u32;
            let on = rng.percent(50);
            set.set(lpi, on);
            model[(lpi - LPI_BASE) as usize] = on;
        }
        let expected: alloc::vec::Vec<u32> = (0..LPIS)
            .filter(|&n| model[n])
            .map(|n| LPI_BASE + n as u32)
            .collect();
        assert_eq!(set.iter().collect::<alloc::vec::Vec<_>>(), expected);
    }
}
