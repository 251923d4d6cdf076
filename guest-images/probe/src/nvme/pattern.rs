//! What the probe writes to its namespace and where: a pattern that depends
//! on the byte offset in the namespace and on a per-slice seed (from the
//! slice name), so a block written by another slice, or landing at another
//! LBA, reads back wrong; and the block ranges the data test, the canary and
//! `nvme-fill` use.

use crate::memplan::PATTERN_MULTIPLIER;

/// Salt mixed into the slice seed for the canary-independent per-boot test
/// pattern (the data test writes seed ^ boot salt first, then restores the
/// resting pattern).
pub const BOOT_SALT_MIX: u64 = 0x5EED_0FB0_0700_0001;

/// The per-slice seed: FNV-1a 64 of the slice name, spread by the SplitMix64
/// finalizer. The same name gives the same seed in every boot (the pattern
/// must survive reboots), different names give different seeds.
pub fn slice_seed(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// SplitMix64 finalizer.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 8-byte word at namespace byte `offset` (a multiple of 8) for `seed`:
/// `seed + offset * PATTERN_MULTIPLIER`, a bijection of the offset.
pub fn word(seed: u64, offset: u64) -> u64 {
    seed.wrapping_add(offset.wrapping_mul(PATTERN_MULTIPLIER))
}

/// Fills `words` with the pattern of the namespace bytes from `lba` on.
pub fn fill(words: &mut [u64], seed: u64, lba: u64, lba_bytes: u32) {
    let base = lba.wrapping_mul(u64::from(lba_bytes));
    for (i, w) in words.iter_mut().enumerate() {
        *w = word(seed, base.wrapping_add(8 * i as u64));
    }
}

/// The first LBA whose words in `words` (read from `lba` on) differ from the
/// pattern, or None if all match.
pub fn first_mismatch(
    words: impl IntoIterator<Item = u64>,
    seed: u64,
    lba: u64,
    lba_bytes: u32,
) -> Option<u64> {
    let base = lba.wrapping_mul(u64::from(lba_bytes));
    let words_per_block = u64::from(lba_bytes / 8).max(1);
    words
        .into_iter()
        .enumerate()
        .find(|&(i, w)| w != word(seed, base.wrapping_add(8 * i as u64)))
        .map(|(i, _)| lba + i as u64 / words_per_block)
}

/// A run of logical blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// First LBA.
    pub lba: u64,
    /// Block count (at least 1).
    pub count: u64,
}

impl Blocks {
    /// One past the last LBA.
    pub fn end(&self) -> u64 {
        self.lba + self.count
    }
}

/// The data test's three ranges of up to `blocks` each: the first, the
/// middle and the last blocks of a namespace of `ns_blocks` (they may
/// overlap on a tiny namespace).
pub fn test_ranges(ns_blocks: u64, blocks: u64) -> [(&'static str, Blocks); 3] {
    let count = blocks.clamp(1, ns_blocks.max(1));
    let last = ns_blocks.saturating_sub(count);
    [
        ("first", Blocks { lba: 0, count }),
        (
            "middle",
            Blocks {
                lba: last / 2,
                count,
            },
        ),
        ("last", Blocks { lba: last, count }),
    ]
}

/// The canary ranges `nvme-check` re-reads: the first and the last
/// `blocks` of the namespace, where a neighbour's stray write would land
/// first if windows were mapped wrongly.
pub fn canary_ranges(ns_blocks: u64, blocks: u64) -> [Blocks; 2] {
    let count = blocks.clamp(1, ns_blocks.max(1));
    [
        Blocks { lba: 0, count },
        Blocks {
            lba: ns_blocks.saturating_sub(count),
            count,
        },
    ]
}

/// Splits `[lba, lba + count)` into transfers of at most `max` blocks.
pub fn chunks(range: Blocks, max: u64) -> impl Iterator<Item = Blocks> {
    let max = max.max(1);
    let mut next = range.lba;
    core::iter::from_fn(move || {
        (next < range.end()).then(|| {
            let count = max.min(range.end() - next);
            let chunk = Blocks { lba: next, count };
            next += count;
            chunk
        })
    })
}

/// Blocks in `mib` MiB, capped at the namespace.
pub fn mib_blocks(mib: u64, lba_bytes: u32, ns_blocks: u64) -> u64 {
    (mib.saturating_mul(1 << 20) / u64::from(lba_bytes.max(1))).min(ns_blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_per_name_and_are_stable() {
        assert_eq!(slice_seed(b"web-0"), slice_seed(b"web-0"));
        assert_ne!(slice_seed(b"web-0"), slice_seed(b"web-1"));
        assert_ne!(slice_seed(b""), slice_seed(b"native"));
        // Pinned: a persisted pattern must read back after an upgrade too.
        assert_eq!(slice_seed(b"native"), 0x2cc6_0db5_126e_47a5);
    }

    #[test]
    fn fill_and_check_round_trip() {
        let mut words = vec![0u64; 3 * 64];
        fill(&mut words, 7, 10, 512);
        assert_eq!(first_mismatch(words.iter().copied(), 7, 10, 512), None);
        assert_eq!(words[64], word(7, 11 * 512));
        // Wrong seed (another slice): the first block is reported.
        assert_eq!(first_mismatch(words.iter().copied(), 8, 10, 512), Some(10));
        // Wrong place (data of LBA 10 read as LBA 11).
        assert_eq!(first_mismatch(words.iter().copied(), 7, 11, 512), Some(11));
        // One corrupted word in the third block.
        words[2 * 64 + 5] ^= 1;
        assert_eq!(first_mismatch(words.iter().copied(), 7, 10, 512), Some(12));
    }

    #[test]
    fn words_are_unique_per_offset() {
        let a: Vec<u64> = (0..1000).map(|i| word(1, 8 * i)).collect();
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn ranges_first_middle_last() {
        let r = test_ranges(1000, 64);
        assert_eq!(r[0], ("first", Blocks { lba: 0, count: 64 }));
        assert_eq!(
            r[1],
            (
                "middle",
                Blocks {
                    lba: 468,
                    count: 64
                }
            )
        );
        assert_eq!(
            r[2],
            (
                "last",
                Blocks {
                    lba: 936,
                    count: 64
                }
            )
        );
        assert_eq!(r[2].1.end(), 1000);
        // A namespace smaller than a range: everything is one range.
        let tiny = test_ranges(10, 64);
        assert!(tiny.iter().all(|(_, b)| *b == Blocks { lba: 0, count: 10 }));
    }

    #[test]
    fn canaries_at_both_ends() {
        assert_eq!(
            canary_ranges(100, 8),
            [Blocks { lba: 0, count: 8 }, Blocks { lba: 92, count: 8 }]
        );
    }

    #[test]
    fn chunking() {
        let c: Vec<_> = chunks(Blocks { lba: 5, count: 10 }, 4).collect();
        assert_eq!(
            c,
            [
                Blocks { lba: 5, count: 4 },
                Blocks { lba: 9, count: 4 },
                Blocks { lba: 13, count: 2 }
            ]
        );
        assert_eq!(chunks(Blocks { lba: 0, count: 0 }, 4).count(), 0);
        assert_eq!(mib_blocks(2, 512, 1 << 30), 4096);
        assert_eq!(mib_blocks(2, 4096, 100), 100);
    }
}
