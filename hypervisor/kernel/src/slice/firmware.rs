//! What firmware in a slice (`kernel = "firmware"`, Debian's U-Boot for QEMU `virt`) expects of
//! a `virt` machine beyond its device tree (DESIGN.md §9).
//!
//! A slice's tree names no flash, and U-Boot probes none from it, but Debian's `qemu_arm64`
//! build keeps its environment in the second flash bank (`CONFIG_ENV_IS_IN_FLASH`, 256 KiB at
//! 0x0400_0000) and checks that environment's CRC, memory-mapped, before it reads any device.
//! There the slice sees erased flash: one hypervisor page of 0xff bytes mapped read-only at
//! every page of the environment. The CRC fails, so U-Boot takes its built-in environment, as
//! on a `virt` machine with an empty flash; a store there (`saveenv`) is an external abort.

use alloc::boxed::Box;
use microvisor_arch::cache;
use microvisor_logic::pagetable::{ENTRIES, MapError, Table};
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

/// Maps erased flash over U-Boot's environment in `stage2`.
pub fn map_erased_flash(stage2: &CpuStage2) -> Result<(), MapError> {
    let (ipa, size) = ENVIRONMENT_FLASH;
    stage2.map_repeated_read_only(ipa, erased_page(), size)
}
