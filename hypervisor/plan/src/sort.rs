//! Sorting for the hypervisor's short lists (RAM banks, bus regions, PCI BARs, list registers):
//! an insertion sort, stable, about a tenth of a kilobyte of code per element type instead of the
//! several kilobytes of `core`'s driftsort or ipnsort, of which the image carried a dozen copies
//! (docs/performance.md, "Image size"). Quadratic: only for lists of at most a few hundred items
//! (every caller's list is bounded by a fixed maximum or by the plan's limits), and linear on
//! a list already in order.

/// Sorts `items` in ascending order of `key`, keeping equal keys in their order (like
/// `slice::sort_by_key`; a valid result of `sort_unstable_by_key` too).
pub fn sort_by_key<T, K: Ord>(items: &mut [T], mut key: impl FnMut(&T) -> K) {
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 && key(&items[j - 1]) > key(&items[j]) {
            items.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Sorts `items` in ascending order, keeping equal items in their order (like `slice::sort`).
pub fn sort<T: Ord>(items: &mut [T]) {
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 && items[j - 1] > items[j] {
            items.swap(j - 1, j);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn sorts_like_the_standard_library_and_stays_stable() {
        let mut seed = 7u64;
        for len in 0..40 {
            let items: Vec<(u8, usize)> = (0..len)
                .map(|i| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    ((seed >> 60) as u8, i)
                })
                .collect();
            let mut ours = items.clone();
            sort_by_key(&mut ours, |&(k, _)| k);
            let mut std = items.clone();
            std.sort_by_key(|&(k, _)| k);
            assert_eq!(ours, std, "stable by key");
            let mut ours = items.clone();
            sort(&mut ours);
            let mut std = items;
            std.sort();
            assert_eq!(ours, std);
        }
    }
}
