//! Size classes of the hypervisor heap's cache of small blocks (`boot/src/heap.rs`): a freed
//! block of up to [`LARGEST`] bytes is kept on a free list of its class and handed out again
//! for the next allocation of that class, so the first-fit heap behind the cache sees only
//! large blocks and the few small ones a class has not had back yet. Without the cache every
//! small allocation walked a list of holes that grew with each slice the boot built.

/// Block sizes of the classes, smallest first; a block of a class is aligned to [`ALIGN`].
pub const SIZES: [usize; 6] = [16, 32, 64, 128, 256, 512];
/// Largest block a class holds.
pub const LARGEST: usize = SIZES[SIZES.len() - 1];
/// Alignment of every block of a class (and the largest alignment a class serves).
pub const ALIGN: usize = 16;

/// The class an allocation of `size` bytes aligned to `align` comes from, or `None` for the
/// heap behind the cache (larger or more strictly aligned blocks). The same layout always
/// gets the same answer, so a block goes back to where it came from.
pub fn class(size: usize, align: usize) -> Option<usize> {
    if align > ALIGN {
        return None;
    }
    SIZES.iter().position(|&class| size <= class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_size_gets_the_smallest_class_that_holds_it() {
        assert_eq!(class(1, 1), Some(0));
        assert_eq!(class(16, 8), Some(0));
        assert_eq!(class(17, 8), Some(1));
        assert_eq!(class(64, 16), Some(2));
        assert_eq!(class(65, 4), Some(3));
        assert_eq!(class(LARGEST, 16), Some(SIZES.len() - 1));
        for size in 1..=LARGEST {
            let c = class(size, 8).unwrap();
            assert!(SIZES[c] >= size && (c == 0 || SIZES[c - 1] < size));
        }
    }

    #[test]
    fn large_or_strictly_aligned_blocks_go_to_the_heap() {
        assert_eq!(class(LARGEST + 1, 8), None);
        assert_eq!(class(4096, 4096), None);
        assert_eq!(class(16, 32), None);
        assert!(SIZES.iter().all(|s| s % ALIGN == 0 && s.is_power_of_two()));
    }
}
