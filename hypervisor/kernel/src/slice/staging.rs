//! The staging pool (docs/control.md, "Staging"): node RAM, reserved by the manager's
//! `staging`, where the images the manager stages live until a slice boots them. Only the
//! hypervisor reads or writes it.

use microvisor_arch::memory::SharedMemory;
use microvisor_arch::simd;
use microvisor_logic::control::{PoolAllocator, Refusal, Status};
use microvisor_plan::sha256::{self, Sha256};
use spin::Mutex;

/// An image in the staging pool: where, how long, its SHA-256. Not `Clone`: it is given back
/// to the pool exactly once ([`StagingPool::free`]).
#[derive(Debug)]
pub struct PoolImage {
    pub offset: u64,
    pub len: u64,
    pub sha256: [u8; 32],
}

/// Node RAM for staged images: only the hypervisor reads or writes it.
pub struct StagingPool {
    pub memory: SharedMemory,
    pub(crate) allocator: Mutex<PoolAllocator>,
}

impl StagingPool {
    pub fn new(memory: SharedMemory) -> Self {
        let size = memory.region().size;
        Self {
            memory,
            allocator: Mutex::new(PoolAllocator::new(size)),
        }
    }

    pub fn allocate(&self, len: u64) -> Result<u64, Refusal> {
        let mut allocator = self.allocator.lock();
        allocator.allocate(len).ok_or_else(|| {
            Refusal::new(
                Status::NoSpace,
                format_args!(
                    "staging pool: no room for {len} bytes ({} of {} bytes in use, largest free block {})",
                    allocator.used(),
                    allocator.size(),
                    allocator.largest_free()
                ),
            )
        })
    }

    pub fn free(&self, image: PoolImage) {
        self.allocator.lock().free(image.offset);
    }

    pub fn free_at(&self, offset: u64) {
        self.allocator.lock().free(offset);
    }

    /// SHA-256 of `len` bytes at `offset` (with the CPU's SHA-256 instructions where the
    /// core has them).
    pub fn sha256(&self, offset: u64, len: u64) -> Option<[u8; 32]> {
        let compress = simd::sha256_compression().unwrap_or(sha256::software);
        let mut hasher = Sha256::new(compress);
        let mut buffer = alloc::vec![0u8; (64 << 10).min(len as usize).max(1)];
        let mut done = 0;
        while done < len {
            let piece = (len - done).min(buffer.len() as u64) as usize;
            self.memory.read(offset + done, &mut buffer[..piece]).ok()?;
            hasher.update(&buffer[..piece]);
            done += piece as u64;
        }
        Some(hasher.finish())
    }
}
