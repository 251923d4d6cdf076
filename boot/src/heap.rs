//! The hypervisor's heap: linked_list_allocator's first-fit heap behind a cache of freed small
//! blocks, one free list per size class (`microvisor_logic::heap`). A small allocation pops
//! its class's list (or takes a block of the class size from the heap when the list is
//! empty); freeing it pushes it back. The first-fit heap, whose allocations and frees walk its
//! list of holes, sees only large blocks and each small block once.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use linked_list_allocator::LockedHeap;
use microvisor_logic::heap::{self, ALIGN, SIZES};
use spin::Mutex;

/// Freed small blocks: for each class, the address of the first (0: none); each free block's
/// first word holds the address of the next.
struct Cache {
    lists: [usize; SIZES.len()],
    /// Bytes on the lists.
    bytes: usize,
}

pub struct Heap {
    blocks: LockedHeap,
    cache: Mutex<Cache>,
}

impl Heap {
    pub const fn empty() -> Heap {
        Heap {
            blocks: LockedHeap::empty(),
            cache: Mutex::new(Cache {
                lists: [0; SIZES.len()],
                bytes: 0,
            }),
        }
    }

    /// Gives the heap `[base, base + size)`.
    ///
    /// # Safety
    /// The range must be RAM used for nothing else, mapped Normal memory; called once, before
    /// any allocation.
    pub unsafe fn init(&self, base: u64, size: u64) {
        // SAFETY: guaranteed by the caller.
        unsafe { self.blocks.lock().init(base as *mut u8, size as usize) };
    }

    /// Bytes in use: what the first-fit heap handed out less the free blocks in the cache.
    pub fn used(&self) -> usize {
        let cached = self.cache.lock().bytes;
        self.blocks.lock().used().saturating_sub(cached)
    }
}

// SAFETY: blocks of a class are always allocated from the first-fit heap with the layout
// (class size, ALIGN), which holds every layout `heap::class` puts in that class, and a freed
// block goes back to the list of the class its layout gives (the same one it was allocated
// for), so it is handed out again only for layouts it holds. A block on a list is owned by
// the list alone: the caller of `dealloc` gave it up. Every list operation is under the
// cache's lock; the first-fit heap has its own.
unsafe impl GlobalAlloc for Heap {
    // Not inlined: every allocation and drop in the hypervisor would carry a copy.
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = heap::class(layout.size(), layout.align()) else {
            // SAFETY: the caller's contract for `layout`.
            return unsafe { self.blocks.alloc(layout) };
        };
        {
            let mut cache = self.cache.lock();
            let head = cache.lists[class];
            if head != 0 {
                // SAFETY: `head` is a free block of this class on the list (see above): at
                // least 16 bytes, aligned, holding the next block's address in its first word.
                cache.lists[class] = unsafe { ptr::read(head as *const usize) };
                cache.bytes -= SIZES[class];
                return head as *mut u8;
            }
        }
        // SAFETY: SIZES[class] is not zero and ALIGN a power of two.
        let block = unsafe { Layout::from_size_align_unchecked(SIZES[class], ALIGN) };
        // SAFETY: a valid, non-zero-sized layout.
        unsafe { self.blocks.alloc(block) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, address: *mut u8, layout: Layout) {
        let Some(class) = heap::class(layout.size(), layout.align()) else {
            // SAFETY: the caller's contract: `address` came from `alloc` with `layout`, which
            // for this layout is the first-fit heap's.
            return unsafe { self.blocks.dealloc(address, layout) };
        };
        let mut cache = self.cache.lock();
        // SAFETY: the block (of this class: at least 16 bytes, ALIGN aligned) is given up by
        // the caller; its first word now holds the list's link.
        unsafe { ptr::write(address as *mut usize, cache.lists[class]) };
        cache.lists[class] = address as usize;
        cache.bytes += SIZES[class];
    }
}
