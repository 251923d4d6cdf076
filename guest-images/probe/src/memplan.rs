//! Memory-test planning: which bytes to test (the DT memory minus the probe's
//! own footprint), how to split them between CPUs, and the address-dependent
//! pattern.
//!
//! The pattern is `seed + address * PATTERN_MULTIPLIER` (wrapping). The
//! multiplier is odd, so the map is a bijection: two different addresses never
//! get the same value, and if two addresses alias one physical location, the
//! later write shows up as a mismatch at the other. The per-boot seed makes
//! stale contents from an earlier boot fail too.

use crate::MAX_MEMORY_REGIONS;
use crate::dt::MemoryRegion;

/// Ranges are trimmed inwards to this alignment (one unrolled loop step).
pub const BLOCK_BYTES: u64 = 64;
/// CPU shares start on this alignment.
pub const SHARE_ALIGN: u64 = 4096;
/// Odd multiplier of the pattern (2^64 / golden ratio).
pub const PATTERN_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
/// Most ranges a plan can hold: every region, each split once by an exclusion.
pub const MAX_RANGES: usize = 2 * MAX_MEMORY_REGIONS;

/// The value the memory test stores at `addr`.
pub fn pattern(addr: u64, seed: u64) -> u64 {
    seed.wrapping_add(addr.wrapping_mul(PATTERN_MULTIPLIER))
}

/// A half-open byte range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `addr` lies in the range.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end
    }
}

/// The ranges to test and the seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestPlan {
    ranges: [Range; MAX_RANGES],
    count: usize,
    /// Per-boot seed of the pattern.
    pub seed: u64,
}

impl TestPlan {
    /// Plans a test of `regions` minus `exclude` (the probe's image, stacks
    /// and tables). Ranges are trimmed inwards to [`BLOCK_BYTES`]. Pieces that
    /// do not fit in [`MAX_RANGES`] are dropped (and so not tested).
    pub fn new(regions: &[MemoryRegion], exclude: &[Range], seed: u64) -> TestPlan {
        let mut plan = TestPlan {
            ranges: [Range::default(); MAX_RANGES],
            count: 0,
            seed,
        };
        let mut merged = [MemoryRegion::default(); MAX_MEMORY_REGIONS];
        let n = merge(regions, &mut merged);
        for region in &merged[..n] {
            let mut pieces = [Range::default(); MAX_RANGES];
            let mut n = 1;
            pieces[0] = Range {
                start: region.base,
                end: region.end(),
            };
            for cut in exclude {
                let mut next = [Range::default(); MAX_RANGES];
                let mut m = 0;
                for piece in &pieces[..n] {
                    for part in subtract(*piece, *cut) {
                        if !part.is_empty() && m < MAX_RANGES {
                            next[m] = part;
                            m += 1;
                        }
                    }
                }
                pieces = next;
                n = m;
            }
            for piece in &pieces[..n] {
                let trimmed = Range {
                    start: piece.start.next_multiple_of(BLOCK_BYTES),
                    end: piece.end / BLOCK_BYTES * BLOCK_BYTES,
                };
                if trimmed.start < trimmed.end && plan.count < MAX_RANGES {
                    plan.ranges[plan.count] = trimmed;
                    plan.count += 1;
                }
            }
        }
        plan
    }

    /// The ranges to test, in region order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges[..self.count]
    }

    /// Bytes the plan tests.
    pub fn total_bytes(&self) -> u64 {
        self.ranges().iter().map(Range::len).sum()
    }

    /// The pieces participant `k` of `n` tests: the `k`-th of `n` equal,
    /// [`SHARE_ALIGN`]ed slices of the ranges laid end to end. Shares are
    /// disjoint and together cover every range exactly.
    pub fn share(&self, k: usize, n: usize) -> impl Iterator<Item = Range> + '_ {
        let total = self.total_bytes();
        let n = n.max(1) as u64;
        let per = total.div_ceil(n).next_multiple_of(SHARE_ALIGN);
        let lo = (k as u64).saturating_mul(per).min(total);
        let hi = lo.saturating_add(per).min(total);
        let mut offset = 0u64;
        self.ranges().iter().filter_map(move |r| {
            let (first, last) = (offset, offset + r.len());
            offset = last;
            let (from, to) = (lo.max(first), hi.min(last));
            (from < to).then(|| Range {
                start: r.start + (from - first),
                end: r.start + (to - first),
            })
        })
    }
}

/// Sorts `regions` into `out` and merges overlapping or adjacent ones, so no
/// byte is tested twice (by two CPUs at once). Returns the count used.
fn merge(regions: &[MemoryRegion], out: &mut [MemoryRegion; MAX_MEMORY_REGIONS]) -> usize {
    let mut n = 0;
    for region in regions.iter().take(MAX_MEMORY_REGIONS) {
        out[n] = *region;
        n += 1;
    }
    out[..n].sort_unstable_by_key(|r| r.base);
    let mut kept = 0;
    for i in 0..n {
        let r = out[i];
        if kept > 0 && r.base <= out[kept - 1].end() {
            let end = out[kept - 1].end().max(r.end());
            out[kept - 1].size = end - out[kept - 1].base;
        } else {
            out[kept] = r;
            kept += 1;
        }
    }
    kept
}

/// `range` minus `cut`: up to two pieces (empty ones included).
fn subtract(range: Range, cut: Range) -> [Range; 2] {
    if cut.end <= range.start || cut.start >= range.end || cut.is_empty() {
        return [range, Range::default()];
    }
    [
        Range {
            start: range.start,
            end: cut.start.max(range.start),
        },
        Range {
            start: cut.end.min(range.end),
            end: range.end,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn region(base: u64, size: u64) -> MemoryRegion {
        MemoryRegion { base, size }
    }

    #[test]
    fn image_is_cut_out_of_ram() {
        let image = Range {
            start: 0x4000_0000,
            end: 0x4000_0000 + 3 * MIB,
        };
        let plan = TestPlan::new(&[region(0x4000_0000, 256 * MIB)], &[image], 1);
        assert_eq!(
            plan.ranges(),
            &[Range {
                start: image.end,
                end: 0x5000_0000
            }]
        );
        assert_eq!(plan.total_bytes(), 253 * MIB);
    }

    #[test]
    fn exclusion_in_the_middle_splits_a_region() {
        let cut = Range {
            start: 0x4100_0000,
            end: 0x4200_0000,
        };
        let plan = TestPlan::new(&[region(0x4000_0000, 64 * MIB)], &[cut], 0);
        assert_eq!(
            plan.ranges(),
            &[
                Range {
                    start: 0x4000_0000,
                    end: 0x4100_0000
                },
                Range {
                    start: 0x4200_0000,
                    end: 0x4400_0000
                },
            ]
        );
    }

    #[test]
    fn overlapping_and_adjacent_regions_are_tested_once() {
        let regions = [
            region(0x4000_0000, 512 * MIB),
            region(0x1_0000_0000, MIB),
            region(0x4000_0000, 256 * MIB),
            region(0x6000_0000, MIB),
        ];
        let plan = TestPlan::new(&regions, &[], 0);
        assert_eq!(
            plan.ranges(),
            &[
                Range {
                    start: 0x4000_0000,
                    end: 0x6010_0000
                },
                Range {
                    start: 0x1_0000_0000,
                    end: 0x1_0010_0000
                },
            ]
        );
    }

    #[test]
    fn ranges_are_trimmed_to_blocks() {
        let plan = TestPlan::new(&[region(0x4000_0008, 0x1000)], &[], 0);
        assert_eq!(
            plan.ranges(),
            &[Range {
                start: 0x4000_0040,
                end: 0x4000_1000
            }]
        );
    }

    #[test]
    fn region_entirely_excluded_is_dropped() {
        let cut = Range {
            start: 0,
            end: u64::MAX,
        };
        assert_eq!(
            TestPlan::new(&[region(0x4000_0000, MIB)], &[cut], 0).total_bytes(),
            0
        );
    }

    #[test]
    fn shares_cover_everything_exactly_once() {
        let cut = Range {
            start: 0x4000_0000,
            end: 0x4013_7000,
        };
        let regions = [
            region(0x4000_0000, 256 * MIB),
            region(0x1_0000_0000, 3 * MIB + 4096),
        ];
        let plan = TestPlan::new(&regions, &[cut], 0);
        for n in [1, 2, 3, 4, 7, 64] {
            let mut pieces: Vec<Range> = (0..n).flat_map(|k| plan.share(k, n)).collect();
            pieces.sort_by_key(|r| r.start);
            let covered: u64 = pieces.iter().map(Range::len).sum();
            assert_eq!(covered, plan.total_bytes(), "n={n}");
            for w in pieces.windows(2) {
                assert!(w[0].end <= w[1].start, "overlap n={n}");
            }
            for p in &pieces {
                assert!(
                    plan.ranges()
                        .iter()
                        .any(|r| r.start <= p.start && p.end <= r.end)
                );
                assert_eq!(p.start % BLOCK_BYTES, 0);
                assert_eq!(p.end % BLOCK_BYTES, 0);
            }
        }
    }

    #[test]
    fn share_beyond_the_data_is_empty() {
        let plan = TestPlan::new(&[region(0x4000_0000, 8192)], &[], 0);
        assert_eq!(plan.share(1, 4).count(), 1);
        assert_eq!(plan.share(2, 4).count(), 0);
        assert_eq!(plan.share(3, 4).count(), 0);
    }

    #[test]
    fn pattern_differs_between_addresses_and_seeds() {
        let words: Vec<u64> = (0..4096u64)
            .map(|i| pattern(0x4000_0000 + 8 * i, 7))
            .collect();
        let mut sorted = words.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), words.len());
        assert_ne!(pattern(0x4000_0000, 1), pattern(0x4000_0000, 2));
        // An alias one page away stores a different value.
        assert_ne!(pattern(0x4000_0000, 7), pattern(0x4000_1000, 7));
    }

    #[test]
    fn pattern_steps_by_a_constant() {
        let step = 8u64.wrapping_mul(PATTERN_MULTIPLIER);
        assert_eq!(
            pattern(0x4000_0008, 3),
            pattern(0x4000_0000, 3).wrapping_add(step)
        );
    }
}
