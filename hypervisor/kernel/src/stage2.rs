//! The stage-2 translation a slice's cores walk (docs/architecture.md, "Memory ownership"):
//! its RAM, plus the directly mapped pages of its assigned functions' BARs while the guest
//! decodes them. (Its assigned functions' DMA goes through another one, `crate::smmu::
//! DeviceStage2`, which also maps the ITS page their MSIs need.)

use microvisor_arch::virt;
use microvisor_logic::pagetable::{Attributes, HeapTables, MapError, Regime, Translation};
use spin::Mutex;

const PAGE: u64 = 4096;

/// The stage 2 the slice's cores walk.
pub struct CpuStage2 {
    tables: Mutex<Translation<HeapTables>>,
    /// VTTBR_EL2 value: root | VMID << 48.
    vttbr: u64,
}

impl CpuStage2 {
    /// RAM at `ram_ipa` backed by physical `ram` (`size` bytes), tagged `vmid`, its memory
    /// types encoded as the node's cores read them (`virt::stage2_memory_types`: RAM forced
    /// write-back when the CPU can).
    pub fn new(vmid: u16, ram_ipa: u64, ram: u64, size: u64) -> Result<Self, MapError> {
        let regime = Regime::Stage2(virt::stage2_memory_types());
        let mut tables = Translation::new(regime, HeapTables::new())?;
        tables.map(ram_ipa, ram, size, Attributes::RAM)?;
        let vttbr = tables.root() | u64::from(vmid) << 48;
        Ok(Self {
            tables: Mutex::new(tables),
            vttbr,
        })
    }

    /// VTTBR_EL2 value for the slice's cores.
    pub fn vttbr(&self) -> u64 {
        self.vttbr
    }

    /// Tables in use (for the footprint report).
    pub fn tables(&self) -> usize {
        self.tables.lock().store().len()
    }

    /// Maps device registers at physical `physical` to IPA `ipa` (`size` bytes, whole pages)
    /// for the guest to reach without exits.
    pub fn map_device(&self, ipa: u64, physical: u64, size: u64) -> Result<(), MapError> {
        self.tables
            .lock()
            .map(ipa, physical, size, Attributes::DEVICE)
    }

    /// Maps `[physical, physical + size)` read-only (no execute) at `ipa` (whole pages): a
    /// store there is a stage-2 permission fault.
    pub fn map_read_only(&self, ipa: u64, physical: u64, size: u64) -> Result<(), MapError> {
        self.tables
            .lock()
            .map(ipa, physical, size, Attributes::READ_ONLY)
    }

    /// Maps the page at physical `physical` read-only (no execute) at every page of
    /// `[ipa, ipa + size)`: a store there is a stage-2 permission fault.
    pub fn map_repeated_read_only(
        &self,
        ipa: u64,
        physical: u64,
        size: u64,
    ) -> Result<(), MapError> {
        let mut tables = self.tables.lock();
        (0..size / PAGE).try_for_each(|page| {
            tables.map(ipa + page * PAGE, physical, PAGE, Attributes::READ_ONLY)
        })
    }

    /// Removes what [`CpuStage2::map_device`] mapped in `[ipa, ipa + size)` and discards the
    /// translations every core may hold for it. Call it on a core of this slice (its VMID is
    /// the current one) or while none of its vCPUs runs (each core discards its guest
    /// translations before it enters the guest).
    pub fn unmap_device(&self, ipa: u64, size: u64) -> Result<(), MapError> {
        self.tables.lock().unmap(ipa, size)?;
        virt::invalidate_guest_ipas(ipa, size);
        Ok(())
    }
}
