//! What firmware in a slice (`kernel = "firmware"`, Debian's U-Boot for QEMU `virt`) expects of
//! a `virt` machine beyond its device tree (DESIGN.md §9).
//!
//! A slice's tree names no flash, and U-Boot probes none from it, but Debian's `qemu_arm64`
//! build keeps its environment in the second flash bank (`CONFIG_ENV_IS_IN_FLASH`, 256 KiB at
//! 0x0400_0000) and checks that environment's CRC, memory-mapped, before it reads any device.
//! There the slice sees erased flash: one hypervisor page of 0xff bytes mapped read-only at
//! every page of the environment. The CRC fails, so U-Boot takes its built-in environment, as
//! on a `virt` machine with an empty flash; a store there (`saveenv`) is an external abort.
//! A slice whose plan gives variables (`[slice.firmware] env`) has pages of its own first,
//! holding its environment (U-Boot's built-in one with the plan's variables merged in by
//! xtask) with the CRC of the whole ([`microvisor_plan::firmware_env`]), so U-Boot imports it.

use alloc::boxed::Box;
use alloc::string::String;
use microvisor_arch::cache;
use microvisor_logic::pagetable::{ENTRIES, MapError, Table};
use microvisor_plan::firmware_env::{self, PAGE_SIZE};
use spin::Once;

use crate::stage2::CpuStage2;

/// U-Boot's environment in flash: IPA and size.
pub const ENVIRONMENT_FLASH: (u64, u64) = (0x0400_0000, 0x4_0000);

/// The erased-flash page, shared read-only by every firmware slice (it holds nothing but
/// 0xff, so sharing it tells no slice anything).
static ERASED: Once<u64> = Once::new();

fn erased_page() -> u64 {
    *ERASED.call_once(|| {
        let page: &'static Table = Box::leak(Box::new(Table([u64::MAX; ENTRIES])));
        let address = page.0.as_ptr() as u64;
        // A guest may read it with its caches off: the 0xff bytes must be in memory.
        cache::clean_to_poc(address, 4096);
        address
    })
}

/// Maps U-Boot's environment flash in `stage2`: erased, or holding `env` (which the plan's
/// validation accepted) in its first page.
pub fn map_environment(stage2: &CpuStage2, env: &[(String, String)]) -> Result<(), MapError> {
    let (ipa, size) = ENVIRONMENT_FLASH;
    if env.is_empty() {
        return stage2.map_repeated_read_only(ipa, erased_page(), size);
    }
    let bytes = firmware_env::pages(env);
    for (n, chunk) in bytes.chunks_exact(PAGE_SIZE).enumerate() {
        let mut page = Box::new(Table([0; ENTRIES]));
        for (word, bytes) in page.0.iter_mut().zip(chunk.chunks_exact(8)) {
            *word = u64::from_le_bytes(bytes.try_into().expect("8-byte chunks"));
        }
        // Never freed: the slice keeps its environment for as long as the node runs.
        let page: &'static Table = Box::leak(page);
        let address = page.0.as_ptr() as u64;
        cache::clean_to_poc(address, PAGE_SIZE as u64);
        stage2.map_repeated_read_only(ipa + (n * PAGE_SIZE) as u64, address, PAGE_SIZE as u64)?;
    }
    let written = bytes.len() as u64;
    stage2.map_repeated_read_only(ipa + written, erased_page(), size - written)
}
