//! A first-fit allocator of 4 KiB pages over one region, with power-of-two alignment: the
//! hypervisor's device memory (ITS tables, LPI tables, NVMe queues and DMA pages). Nothing is
//! ever freed: everything allocated lives as long as the node runs.

use alloc::vec;
use alloc::vec::Vec;

const PAGE: u64 = 4096;

/// Pages of one region, handed out once.
#[derive(Clone, Debug)]
pub struct PageAllocator {
    base: u64,
    used: Vec<bool>,
}

impl PageAllocator {
    /// Manages `[base, base + pages * 4 KiB)`; `base` must be page aligned.
    pub fn new(base: u64, pages: usize) -> Self {
        Self {
            base,
            used: vec![false; pages],
        }
    }

    /// Address of `count` contiguous free pages whose start is aligned to `align` bytes (a
    /// power of two, at least 4 KiB), marked used.
    pub fn allocate(&mut self, count: usize, align: u64) -> Option<u64> {
        if count == 0 || !align.is_power_of_two() {
            return None;
        }
        let align = align.max(PAGE);
        let mut page = 0;
        while page + count <= self.used.len() {
            let address = self.base + page as u64 * PAGE;
            if !address.is_multiple_of(align) {
                page = ((address.div_ceil(align) * align - self.base) / PAGE) as usize;
                continue;
            }
            match self.used[page..page + count].iter().position(|&u| u) {
                Some(busy) => page += busy + 1,
                None => {
                    self.used[page..page + count]
                        .iter_mut()
                        .for_each(|u| *u = true);
                    return Some(address);
                }
            }
        }
        None
    }

    /// Pages in use.
    pub fn used(&self) -> usize {
        self.used.iter().filter(|&&u| u).count()
    }

    /// Pages managed.
    pub fn pages(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_small_pages_into_alignment_gaps() {
        let mut pages = PageAllocator::new(0x4000_0000, 64);
        assert_eq!(pages.allocate(1, 0x1_0000), Some(0x4000_0000));
        assert_eq!(pages.allocate(1, 0x1_0000), Some(0x4001_0000));
        assert_eq!(
            pages.allocate(2, PAGE),
            Some(0x4000_1000),
            "fills the gap after the first"
        );
        assert_eq!(
            pages.allocate(14, PAGE),
            Some(0x4001_1000),
            "the 13 free pages left in the first 64 KiB are too few"
        );
        assert_eq!(pages.used(), 18);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut pages = PageAllocator::new(0x1000, 4);
        assert_eq!(pages.allocate(5, PAGE), None);
        assert_eq!(pages.allocate(0, PAGE), None);
        assert_eq!(pages.allocate(1, 3), None, "alignment not a power of two");
        assert_eq!(
            pages.allocate(1, 0x1_0000),
            None,
            "no 64 KiB boundary inside"
        );
        assert_eq!(pages.allocate(4, PAGE), Some(0x1000));
        assert_eq!(pages.allocate(1, PAGE), None);
    }
}
