//! What firmware in a slice (`kernel = "firmware"`, Debian's U-Boot for QEMU `virt`) expects of
//! a `virt` machine beyond its device tree (DESIGN.md §9).
//!
//! A slice's tree names no flash, and U-Boot probes none from it, but Debian's `qemu_arm64`
//! build keeps its environment in the second flash bank (`CONFIG_ENV_IS_IN_FLASH`, 256 KiB at
//! 0x0400_0000) and checks that environment's CRC, memory-mapped, before it reads any device.
//! Each firmware slice has [`MAX_PAGES`] pages of its own at the start of that flash and one
//! hypervisor page of 0xff bytes at every page after them, all mapped read-only: a store there
//! (`saveenv`) is an external abort. Before each start, while the slice's vCPUs are off, its
//! pages are written with the environment that start asks for:
//! - erased (0xff), when the plan gives no variables: the CRC fails and U-Boot takes its
//!   built-in environment, as on a `virt` machine with an empty flash;
//! - the plan's environment (`[slice.firmware] env`: U-Boot's built-in one with the plan's
//!   variables merged in by xtask) with the CRC of the whole
//!   ([`microvisor_plan::firmware_env`]), so U-Boot imports it;
//! - for a start that boots from the network first (`BOOT` with the network flag), that
//!   environment (or the built-in one) with the network boot targets first in
//!   `boot_targets`, which xtask prepared; its pages are made the first time one is asked for.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use microvisor_arch::cache;
use microvisor_logic::pagetable::{ENTRIES, MapError, Table};
use microvisor_plan::firmware_env::{self, MAX_PAGES, PAGE_SIZE};
use spin::{Mutex, Once};

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

/// A firmware slice's environment flash.
pub struct EnvironmentFlash {
    /// Its own pages, mapped at the start of the flash; written only while its vCPUs are off.
    pages: Mutex<Vec<Table>>,
    /// The first pages of its plain starts' environment (empty: erased flash).
    plain: Vec<u8>,
    /// The variables of its network-first starts (empty: it has none).
    network_env: Vec<(String, String)>,
    network: Once<Vec<u8>>,
}

impl EnvironmentFlash {
    /// Maps the flash in `stage2`, for a slice whose plan gives `env` (which the plan's
    /// validation accepted, as `network_env`).
    pub fn new(
        stage2: &CpuStage2,
        env: &[(String, String)],
        network_env: &[(String, String)],
    ) -> Result<EnvironmentFlash, MapError> {
        let (ipa, size) = ENVIRONMENT_FLASH;
        let pages: Vec<Table> = (0..MAX_PAGES).map(|_| Table([u64::MAX; ENTRIES])).collect();
        let own = (MAX_PAGES * PAGE_SIZE) as u64;
        // The pages stay where they are for as long as the node runs: the Vec is never grown.
        stage2.map_read_only(ipa, pages.as_ptr() as u64, own)?;
        stage2.map_repeated_read_only(ipa + own, erased_page(), size - own)?;
        Ok(EnvironmentFlash {
            pages: Mutex::new(pages),
            plain: if env.is_empty() {
                Vec::new()
            } else {
                firmware_env::pages(env)
            },
            network_env: network_env.to_vec(),
            network: Once::new(),
        })
    }

    /// Whether the slice's firmware can boot from the network first.
    pub fn has_network_boot(&self) -> bool {
        !self.network_env.is_empty()
    }

    /// Writes the environment of the next start (network first or plain) into the pages.
    /// The slice's vCPUs are off.
    pub fn prepare(&self, network_first: bool) {
        let bytes: &[u8] = if network_first && self.has_network_boot() {
            self.network
                .call_once(|| firmware_env::pages(&self.network_env))
        } else {
            &self.plain
        };
        let mut pages = self.pages.lock();
        let words = pages.iter_mut().flat_map(|page| page.0.iter_mut());
        let mut chunks = bytes.chunks_exact(8);
        for word in words {
            *word = chunks.next().map_or(u64::MAX, |chunk| {
                u64::from_le_bytes(chunk.try_into().expect("8-byte chunks"))
            });
        }
        // A guest reads them with its caches off at first.
        cache::clean_to_poc(pages.as_ptr() as u64, (MAX_PAGES * PAGE_SIZE) as u64);
    }
}
