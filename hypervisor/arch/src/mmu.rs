//! The hypervisor's own EL2 stage-1 translation (Arm ARM D8): an identity map built by
//! `microvisor_logic::pagetable` before the MMU is on, then switched on with caches.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, MAIR_EL2, SCTLR_EL2, TCR_EL2, TTBR0_EL2};
use microvisor_logic::pagetable::{ENTRIES, MAIR_EL2_VALUE, PAGE_SIZE, TableStore};
use spin::Once;
use tock_registers::interfaces::{Readable, Writeable};

/// The values every core loads to share the boot core's stage-1 map.
#[derive(Clone, Copy, Debug)]
pub struct MmuConfig {
    pub mair: u64,
    pub tcr: u64,
    pub ttbr0: u64,
    pub sctlr: u64,
}

static CONFIG: Once<MmuConfig> = Once::new();

/// The configuration the boot core enabled, once it has.
pub fn config() -> Option<MmuConfig> {
    CONFIG.get().copied()
}

/// Physical address size this core supports, capped at 48 bits (TCR/VTCR PS encoding).
pub fn physical_address_size() -> u64 {
    ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101)
}

fn tcr_value() -> u64 {
    TCR_EL2::T0SZ.val(16).value
        | TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable.value
        | TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable.value
        | TCR_EL2::SH0::Inner.value
        | TCR_EL2::TG0::KiB_4.value
        | TCR_EL2::PS.val(physical_address_size()).value
        // Bits 31 and 23 are RES1 in the non-VHE TCR_EL2.
        | (1 << 31)
        | (1 << 23)
}

/// SCTLR_EL2 with the MMU, caches, stack alignment check and WXN on (non-VHE RES1 bits
/// included).
fn sctlr_value() -> u64 {
    const RES1: u64 = (1 << 4)
        | (1 << 5)
        | (1 << 11)
        | (1 << 16)
        | (1 << 18)
        | (1 << 22)
        | (1 << 23)
        | (1 << 28)
        | (1 << 29);
    RES1 | SCTLR_EL2::M::Enable.value
        | SCTLR_EL2::C::Cacheable.value
        | SCTLR_EL2::I::Cacheable.value
        | SCTLR_EL2::SA::Enable.value
        // Writable means never executable, whatever a descriptor says.
        | SCTLR_EL2::WXN::Enable.value
}

/// Turns on the EL2 MMU with `root` as TTBR0_EL2, on the boot core.
///
/// # Safety
/// `root` must be a complete identity map of everything this core touches from now on (its
/// code, stack, data, the tables themselves and the devices it uses), with caches for those
/// tables coherent (invalidated if they were written with the MMU off).
pub unsafe fn enable(root: u64) {
    let config = MmuConfig {
        mair: MAIR_EL2_VALUE,
        tcr: tcr_value(),
        ttbr0: root,
        sctlr: sctlr_value(),
    };
    MAIR_EL2.set(config.mair);
    TCR_EL2.set(config.tcr);
    TTBR0_EL2.set(config.ttbr0);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating the EL2 TLB has no memory effects.
    unsafe { core::arch::asm!("tlbi alle2", "dsb nsh", "isb", options(nostack)) };
    SCTLR_EL2.set(config.sctlr);
    barrier::isb(barrier::SY);
    CONFIG.call_once(|| config);
}

/// Translation tables carved out of a reserved, identity-mapped physical range (used at boot,
/// before there is a heap).
pub struct RawTablePool {
    base: u64,
    tables: usize,
    used: usize,
}

impl RawTablePool {
    /// # Safety
    /// `[base, base + tables * 4 KiB)` must be RAM owned by the caller alone for as long as the
    /// tables are in use, 4 KiB aligned, and accessible at its physical address (MMU off or
    /// identity mapped).
    pub unsafe fn new(base: u64, tables: usize) -> Self {
        Self {
            base,
            tables,
            used: 0,
        }
    }

    /// Bytes the pool covers.
    pub fn size(&self) -> u64 {
        self.tables as u64 * PAGE_SIZE
    }

    /// Tables handed out so far.
    pub fn used(&self) -> usize {
        self.used
    }
}

impl TableStore for RawTablePool {
    fn allocate(&mut self) -> Option<u64> {
        if self.used == self.tables {
            return None;
        }
        let address = self.base + self.used as u64 * PAGE_SIZE;
        self.used += 1;
        *self.entries(address) = [0; ENTRIES];
        Some(address)
    }

    fn entries(&mut self, address: u64) -> &mut [u64; ENTRIES] {
        assert!(
            address >= self.base
                && address < self.base + self.used as u64 * PAGE_SIZE
                && address.is_multiple_of(PAGE_SIZE)
        );
        // SAFETY: `address` is a 4 KiB-aligned table inside the pool, which `new`'s caller
        // gave to this pool alone; `&mut self` makes this the only reference handed out.
        unsafe { &mut *(address as *mut [u64; ENTRIES]) }
    }
}
