//! Which RAM is left for slices once the hypervisor and the firmware have taken theirs.

use alloc::vec::Vec;
use microvisor_plan::RamRange;

use crate::inventory::Region;

/// The parts of `banks` not covered by any of `taken`, sorted by address.
pub fn free_ram(banks: &[Region], taken: &[Region]) -> Vec<RamRange> {
    let mut free: Vec<RamRange> = banks
        .iter()
        .filter(|b| b.size > 0)
        .map(|b| RamRange {
            base: b.base,
            size: b.size,
        })
        .collect();
    for hole in taken.iter().filter(|t| t.size > 0) {
        free = free
            .into_iter()
            .flat_map(|range| {
                let (start, end) = (range.base, range.end());
                let below = (start < hole.base.min(end)).then(|| RamRange {
                    base: start,
                    size: hole.base.min(end) - start,
                });
                let above_start = hole.end().max(start);
                let above = (above_start < end).then(|| RamRange {
                    base: above_start,
                    size: end - above_start,
                });
                below.into_iter().chain(above)
            })
            .collect();
    }
    microvisor_plan::sort::sort(&mut free);
    free
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: u64, size: u64) -> RamRange {
        RamRange { base, size }
    }

    #[test]
    fn removes_the_hypervisor_from_one_bank() {
        let banks = [Region::new(0x4000_0000, 0x1_0000_0000)];
        let taken = [Region::new(0x4020_0000, 0x40_0000)];
        assert_eq!(
            free_ram(&banks, &taken),
            [
                r(0x4000_0000, 0x20_0000),
                r(0x4060_0000, 0x1_0000_0000 - 0x60_0000)
            ]
        );
    }

    #[test]
    fn holes_at_the_edges_and_outside() {
        let banks = [Region::new(0x1000, 0x3000), Region::new(0x10000, 0x1000)];
        let taken = [
            Region::new(0x0, 0x2000),
            Region::new(0x3000, 0x8000),
            Region::new(0x20000, 0x1000),
        ];
        assert_eq!(
            free_ram(&banks, &taken),
            [r(0x2000, 0x1000), r(0x10000, 0x1000)]
        );
    }

    #[test]
    fn overlapping_and_empty_holes() {
        let banks = [Region::new(0, 0x10000)];
        let taken = [
            Region::new(0x1000, 0x2000),
            Region::new(0x2000, 0x2000),
            Region::new(0x8000, 0),
        ];
        assert_eq!(free_ram(&banks, &taken), [r(0, 0x1000), r(0x4000, 0xc000)]);
    }

    #[test]
    fn everything_taken() {
        assert!(free_ram(&[Region::new(0, 0x1000)], &[Region::new(0, 0x1000)]).is_empty());
    }
}

/// Where the hypervisor's working memory goes: the first `align`-aligned address at or after
/// `after` (or, failing that, anywhere) inside a RAM bank where `size` bytes avoid every
/// region in `avoid` (the image, the firmware DT, reserved memory).
pub fn place_working_memory(
    banks: &[Region],
    avoid: &[Region],
    after: u64,
    size: u64,
    align: u64,
) -> Option<Region> {
    let align_up = |x: u64| x.checked_add(align - 1).map(|v| v & !(align - 1));
    let fits = |bank: &Region, from: u64| -> Option<Region> {
        let mut base = align_up(from.max(bank.base))?;
        loop {
            let candidate = Region::new(base, size);
            if candidate.base.checked_add(size)? > bank.end() {
                return None;
            }
            match avoid.iter().find(|a| a.overlaps(&candidate)) {
                Some(blocker) => base = align_up(blocker.end())?,
                None => return Some(candidate),
            }
        }
    };
    banks
        .iter()
        .find_map(|bank| fits(bank, after))
        .or_else(|| banks.iter().find_map(|bank| fits(bank, bank.base)))
}

#[cfg(test)]
mod working_memory_tests {
    use super::*;

    const BANK: Region = Region::new(0x4000_0000, 0x4000_0000);

    #[test]
    fn right_after_the_image() {
        let image = Region::new(0x4020_0000, 0x3_2000);
        let placed = place_working_memory(&[BANK], &[image], image.end(), 0x20_0000, 0x1_0000);
        assert_eq!(placed, Some(Region::new(0x4024_0000, 0x20_0000)));
    }

    #[test]
    fn skips_the_device_tree() {
        let image = Region::new(0x4020_0000, 0x10_0000);
        let dtb = Region::new(0x4030_8000, 0x10_0000);
        let placed = place_working_memory(&[BANK], &[image, dtb], image.end(), 0x20_0000, 0x1_0000);
        assert_eq!(placed, Some(Region::new(0x4041_0000, 0x20_0000)));
    }

    #[test]
    fn wraps_to_low_memory_when_nothing_fits_above() {
        let image = Region::new(0x7fe0_0000, 0x20_0000);
        let placed = place_working_memory(&[BANK], &[image], image.end(), 0x20_0000, 0x1_0000);
        assert_eq!(placed, Some(Region::new(0x4000_0000, 0x20_0000)));
    }

    #[test]
    fn none_when_ram_is_full() {
        assert_eq!(
            place_working_memory(&[BANK], &[BANK], 0, 0x1000, 0x1000),
            None
        );
    }
}
