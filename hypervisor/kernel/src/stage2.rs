//! The stage-2 translation a slice's cores walk (docs/architecture.md, "Memory ownership"):
//! its RAM, plus the directly mapped pages of its assigned functions' BARs while the guest
//! decodes them. (Its assigned functions' DMA goes through another one, `crate::smmu::
//! DeviceStage2`, which also maps the ITS page their MSIs need.)

use core::sync::atomic::{AtomicBool, Ordering};
use microvisor_arch::virt;
use microvisor_logic::pagetable::{
    Attributes, HeapTables, MapError, PageChange, Regime, Translation,
};
use spin::Mutex;

const PAGE: u64 = 4096;

/// Most tables splitting RAM blocks may take per slice (for read-only pages inside them,
/// [`CpuStage2::protect_ram_page`]): a guest that keeps placing its direct NVMe CQs in new
/// blocks runs out of them, not the hypervisor's heap.
const SPLIT_TABLES: usize = 32;

/// The stage 2 the slice's cores walk.
pub struct CpuStage2 {
    tables: Mutex<Translation<HeapTables>>,
    /// Tables splits took so far, and the RAM ranges made read-only ([`Self::read_only`]).
    splits: Mutex<Splits>,
    /// Whether any page is read-only now: [`Self::protected`] answers the common case
    /// (every write the NVMe model makes to guest RAM asks) without the lock.
    any_read_only: AtomicBool,
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
            splits: Mutex::new(Splits::default()),
            any_read_only: AtomicBool::new(false),
            vttbr,
        })
    }

    /// Makes the RAM page holding `[ipa, ipa + len)` read-only for the slice's cores
    /// (`read_only`), the range being bytes the guest may not write ([`Self::protected`]),
    /// or writable again. One range per page: a page already read-only is refused
    /// (`AlreadyMapped`), so two direct CQs never share one. A page inside a block splits
    /// the block (break-before-make: the slice's other cores may take a stage-2 fault on the
    /// block's addresses meanwhile, which the abort handler retries) and stays a page
    /// afterwards. Call it on a core of this slice (its VMID current) or while none of its
    /// vCPUs runs.
    pub fn protect_ram_page(&self, ipa: u64, len: u64, read_only: bool) -> Result<(), MapError> {
        let page = ipa & !(PAGE - 1);
        let mut splits = self.splits.lock();
        let held = splits
            .read_only
            .iter()
            .position(|&(at, _)| at & !(PAGE - 1) == page);
        match (read_only, held) {
            (true, Some(_)) => return Err(MapError::AlreadyMapped { address: page }),
            (false, None) => return Ok(()),
            _ => {}
        }
        let attributes = Attributes {
            writable: !read_only,
            ..Attributes::RAM
        };
        let mut tables = self.tables.lock();
        let before = tables.store().len();
        let level = tables
            .mapping_level(page)
            .ok_or(MapError::NotMapped { address: page })?;
        // Tables a split of a 2 MiB or 1 GiB block takes.
        let needed = 3 - level;
        if splits.tables + needed > SPLIT_TABLES {
            return Err(MapError::OutOfTables);
        }
        let changed = tables.change_page(page, attributes);
        // Counted even when the change failed half-way (the heap ran out).
        splits.tables += tables.store().len() - before;
        if let PageChange::Split(split) = changed? {
            tables.write_entry(split.table, split.slot, 0);
            virt::invalidate_guest_ipas(split.input, split.size);
            tables.write_entry(split.table, split.slot, split.descriptor);
        }
        drop(tables);
        virt::invalidate_guest_ipas(page, PAGE);
        // The range is given up only once the page is writable (a store racing this is
        // retried, not taken for a store into a protected range).
        match held {
            Some(at) => {
                splits.read_only.swap_remove(at);
            }
            None => splits.read_only.push((ipa, len)),
        }
        self.any_read_only
            .store(!splits.read_only.is_empty(), Ordering::Release);
        Ok(())
    }

    /// For a store of `len` bytes at `ipa` in a page [`Self::protect_ram_page`] made
    /// read-only: whether it touches a protected range (`Some(true)`) or only other bytes of
    /// the page. `None` for a page that is not read-only.
    pub fn protected(&self, ipa: u64, len: u64) -> Option<bool> {
        if !self.any_read_only.load(Ordering::Acquire) {
            return None;
        }
        let page = ipa & !(PAGE - 1);
        let splits = self.splits.lock();
        let mut ranges = splits
            .read_only
            .iter()
            .filter(|&&(at, _)| at & !(PAGE - 1) == page)
            .peekable();
        ranges.peek()?;
        Some(ranges.any(|&(at, n)| ipa < at + n && at < ipa + len))
    }

    /// Whether the slice's cores can now make an access (a store, with `write`) at `ipa`
    /// without a stage-2 fault: a fault there was transient (a block being split).
    pub fn allows(&self, ipa: u64, write: bool) -> bool {
        self.tables
            .lock()
            .translate(ipa)
            .is_some_and(|(_, attributes)| attributes.writable || !write)
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

/// What splitting RAM blocks took, and the pages made read-only.
#[derive(Default)]
struct Splits {
    tables: usize,
    /// Each read-only page's protected bytes: start IPA and length.
    read_only: alloc::vec::Vec<(u64, u64)>,
}
