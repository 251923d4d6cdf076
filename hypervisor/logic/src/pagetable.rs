//! VMSAv8-64 translation tables with a 4 KiB granule (Arm ARM D8.3): one builder for the
//! hypervisor's own EL2 stage-1 identity map and for each slice's stage-2 (IPA -> PA) map.
//!
//! The builder only computes descriptors; where tables live is up to a [`TableStore`]: the
//! hypervisor keeps them in its own memory (physical address = address, identity mapped),
//! host tests keep them in a `Vec`.

use alloc::boxed::Box;
use alloc::vec::Vec;
use tock_registers::{LocalRegisterCopy, register_bitfields};

/// Bytes covered by one level-3 page.
pub const PAGE_SIZE: u64 = 4096;
/// Entries in one table.
pub const ENTRIES: usize = 512;
/// Bytes covered by a level-2 block.
pub const BLOCK_2M: u64 = 2 << 20;
/// Bytes covered by a level-1 block.
pub const BLOCK_1G: u64 = 1 << 30;

register_bitfields![u64,
    /// Table, block and page descriptors (Arm ARM D8.3.1, D8.3.2).
    DESC [
        VALID OFFSET(0) NUMBITS(1) [],
        /// 1 = table (levels 0-2) or page (level 3); 0 = block.
        TABLE_OR_PAGE OFFSET(1) NUMBITS(1) [],
        /// Stage 1: index into MAIR_EL2. Stage 2: bits [5:2] are MemAttr.
        ATTR_INDX OFFSET(2) NUMBITS(3) [],
        /// Stage 2 MemAttr[3:0] (Arm ARM D8, "Stage 2 memory type and Cacheability attributes
        /// when FEAT_S2FWB is disabled" and "... when FEAT_S2FWB is enabled"; QEMU's
        /// target/arm/ptw.c `combined_attrs_fwb` reads them the same way).
        S2_MEMATTR OFFSET(2) NUMBITS(4) [
            /// Device-nGnRE under either: MemAttr[3:2] = 0b00 (FWB = 0) or MemAttr[2] = 0
            /// (FWB = 1, MemAttr[3] RES0), MemAttr[1:0] = 0b01.
            DeviceNgNRE = 0b0001,
            /// FWB = 1: Normal Write-Back whatever stage 1 says (a stage-1 Device or
            /// Non-cacheable type included).
            ForcedWriteBack = 0b0110,
            /// FWB = 0: Outer and Inner Write-Back, combined with stage 1 (the stronger type
            /// wins, so stage 1 may still make it Non-cacheable or Device).
            NormalWriteBack = 0b1111
        ],
        /// Stage 1 AP[1] (RES1 in the EL2 regime) / stage 2 S2AP[0] (read).
        AP1_S2AP_READ OFFSET(6) NUMBITS(1) [],
        /// Stage 1 AP[2] (read-only) / stage 2 S2AP[1] (write).
        AP2_S2AP_WRITE OFFSET(7) NUMBITS(1) [],
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            InnerShareable = 0b11
        ],
        AF OFFSET(10) NUMBITS(1) [],
        /// Output address bits [47:12] (next table, block or page).
        ADDRESS OFFSET(12) NUMBITS(36) [],
        /// Execute never (stage 1 EL2 XN; stage 2 XN[1]).
        XN OFFSET(54) NUMBITS(1) []
    ]
];

type Descriptor = LocalRegisterCopy<u64, DESC::Register>;

/// MAIR_EL2 attribute index for normal write-back memory (see [`MAIR_EL2_VALUE`]).
pub const MAIR_NORMAL: u64 = 0;
/// MAIR_EL2 attribute index for Device-nGnRE memory.
pub const MAIR_DEVICE: u64 = 1;
/// MAIR_EL2 value matching the indexes above: Attr0 = 0xff (Normal WB RA WA), Attr1 = 0x04
/// (Device-nGnRE).
pub const MAIR_EL2_VALUE: u64 = 0xff | (0x04 << 8);

/// Number of input-address (IPA) bits of [`Regime::Stage2`]: T0SZ = 25.
pub const STAGE2_INPUT_BITS: u32 = 39;

/// Which translation regime the descriptors are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// The hypervisor's own EL2 stage-1 tables (48-bit VA, start at level 0).
    El2Stage1,
    /// Stage-2 tables (39-bit IPA, T0SZ = 25, start at level 1, VTCR_EL2.SL0 = 1), their
    /// memory types encoded for whoever walks them.
    Stage2(Stage2MemoryTypes),
}

/// How a stage-2 descriptor's MemAttr field is read, which depends on who walks the tables:
/// a core reads it as HCR_EL2.FWB says, an SMMU as its stream table entry's S2FWB says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage2MemoryTypes {
    /// FWB = 0: the stage-2 type is combined with stage 1's, the stronger
    /// winning. RAM is Normal Write-Back here, so the guest's stage 1 (or its MMU being off,
    /// which makes every access Device-nGnRnE) decides: it may reach RAM Non-cacheable.
    CombinedWithStage1,
    /// FWB = 1 (FEAT_S2FWB, Armv8.4): stage 2 decides. RAM is forced Normal
    /// Write-Back whatever stage 1 says, so the guest only ever reaches it through the
    /// caches; Device mappings stay Device.
    ForcedWriteBack,
}

impl Stage2MemoryTypes {
    /// The MemAttr of Normal memory (RAM) in this encoding.
    fn normal(self) -> tock_registers::fields::FieldValue<u64, DESC::Register> {
        match self {
            Stage2MemoryTypes::CombinedWithStage1 => DESC::S2_MEMATTR::NormalWriteBack,
            Stage2MemoryTypes::ForcedWriteBack => DESC::S2_MEMATTR::ForcedWriteBack,
        }
    }
}

impl Regime {
    fn start_level(self) -> usize {
        match self {
            Regime::El2Stage1 => 0,
            Regime::Stage2(_) => 1,
        }
    }

    /// Number of input-address bits the regime covers.
    pub const fn input_bits(self) -> u32 {
        match self {
            Regime::El2Stage1 => 48,
            Regime::Stage2(_) => STAGE2_INPUT_BITS,
        }
    }
}

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    /// Normal memory, inner/outer write-back, inner shareable.
    Normal,
    /// Device-nGnRE.
    Device,
}

/// Attributes of one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub memory: MemoryType,
    pub writable: bool,
    pub executable: bool,
}

impl Attributes {
    /// Read-write, executable normal memory (RAM).
    pub const RAM: Attributes = Attributes {
        memory: MemoryType::Normal,
        writable: true,
        executable: true,
    };
    /// Read-only, executable normal memory (the hypervisor's code).
    pub const CODE: Attributes = Attributes {
        memory: MemoryType::Normal,
        writable: false,
        executable: true,
    };
    /// Read-write, non-executable normal memory (data).
    pub const DATA: Attributes = Attributes {
        memory: MemoryType::Normal,
        writable: true,
        executable: false,
    };
    /// Read-only, non-executable normal memory (e.g. the erased flash firmware reads).
    pub const READ_ONLY: Attributes = Attributes {
        memory: MemoryType::Normal,
        writable: false,
        executable: false,
    };
    /// Device registers: read-write, never executable.
    pub const DEVICE: Attributes = Attributes {
        memory: MemoryType::Device,
        writable: true,
        executable: false,
    };
}

/// Why a mapping request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Address or size not a multiple of 4 KiB.
    Misaligned,
    /// The range is empty or wraps around.
    BadRange,
    /// The input range goes beyond what the regime translates.
    OutOfRange,
    /// Part of the range is already mapped.
    AlreadyMapped { address: u64 },
    /// The output address does not fit the descriptor (above 48 bits).
    OutputTooHigh,
    /// A block mapping straddles the edge of the range to unmap.
    PartialBlock { address: u64 },
    /// The table store has no memory left.
    OutOfTables,
    /// Nothing maps the address.
    NotMapped { address: u64 },
    /// A change would alter the memory type (which needs break-before-make).
    MemoryType { address: u64 },
}

/// What [`Translation::change_page`] did or leaves to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageChange {
    /// The page's descriptor was rewritten.
    Done,
    /// The page lies in a block, which the caller must replace with the tables built for it.
    Split(BlockSplit),
}

/// A block descriptor to be replaced, by break-before-make, with a table descriptor whose
/// tables map the same addresses (Arm ARM D8.16, "Translation table maintenance").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSplit {
    /// The table holding the block descriptor, and its slot.
    pub table: u64,
    pub slot: usize,
    /// The table descriptor that replaces it.
    pub descriptor: u64,
    /// Input addresses the block maps.
    pub input: u64,
    pub size: u64,
}

/// Where translation tables live.
pub trait TableStore {
    /// Allocates a zeroed table and returns its physical address (4 KiB aligned).
    fn allocate(&mut self) -> Option<u64>;
    /// The entries of the table at `address`, which this store allocated.
    fn entries(&mut self, address: u64) -> &mut [u64; ENTRIES];
}

/// A table in host memory, page aligned so that its address can be a descriptor's.
#[repr(C, align(4096))]
pub struct Table(pub [u64; ENTRIES]);

/// Tables on the heap: the hypervisor's stage-2 tables (identity-mapped, so address = physical
/// address) and the host tests' tables.
#[derive(Default)]
pub struct HeapTables {
    /// One table per box (a slice of one, allocated fallibly).
    tables: Vec<Box<[Table]>>,
}

impl HeapTables {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of tables allocated.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Address ranges of all tables (for cache maintenance and footprint reports).
    pub fn addresses(&self) -> impl Iterator<Item = u64> + '_ {
        self.tables.iter().map(|t| t[0].0.as_ptr() as u64)
    }
}

impl TableStore for HeapTables {
    /// `None` when the heap cannot provide a table (the mapping then fails with
    /// [`MapError::OutOfTables`], named by the caller, instead of the allocation failure
    /// halting the core; found in review, 2026-12-04).
    fn allocate(&mut self) -> Option<u64> {
        self.tables.try_reserve(1).ok()?;
        let mut one = Vec::new();
        one.try_reserve_exact(1).ok()?;
        one.push(Table([0; ENTRIES]));
        let table = one.into_boxed_slice();
        let address = table[0].0.as_ptr() as u64;
        self.tables.push(table);
        Some(address)
    }

    fn entries(&mut self, address: u64) -> &mut [u64; ENTRIES] {
        let table = self
            .tables
            .iter_mut()
            .find(|t| t[0].0.as_ptr() as u64 == address)
            .expect("descriptor points at a table this store did not allocate");
        &mut table[0].0
    }
}

/// One translation regime's tables.
pub struct Translation<S: TableStore> {
    regime: Regime,
    root: u64,
    store: S,
}

/// Bytes covered by one entry at `level` (4 KiB granule).
const fn entry_span(level: usize) -> u64 {
    PAGE_SIZE << (9 * (3 - level))
}

const fn index(address: u64, level: usize) -> usize {
    ((address / entry_span(level)) % ENTRIES as u64) as usize
}

const OUTPUT_LIMIT: u64 = 1 << 48;

impl<S: TableStore> Translation<S> {
    /// Creates empty tables (just the root) in `store`.
    pub fn new(regime: Regime, mut store: S) -> Result<Self, MapError> {
        let root = store.allocate().ok_or(MapError::OutOfTables)?;
        Ok(Self {
            regime,
            root,
            store,
        })
    }

    /// Physical address of the root table (TTBR0_EL2 / VTTBR_EL2.BADDR).
    pub fn root(&self) -> u64 {
        self.root
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Maps `[input, input + size)` to `[output, output + size)` with the largest blocks that
    /// alignment allows (1 GiB, 2 MiB, then 4 KiB pages).
    pub fn map(
        &mut self,
        input: u64,
        output: u64,
        size: u64,
        attributes: Attributes,
    ) -> Result<(), MapError> {
        if !input.is_multiple_of(PAGE_SIZE)
            || !output.is_multiple_of(PAGE_SIZE)
            || !size.is_multiple_of(PAGE_SIZE)
        {
            return Err(MapError::Misaligned);
        }
        let input_end = input
            .checked_add(size)
            .filter(|_| size > 0)
            .ok_or(MapError::BadRange)?;
        let output_end = output.checked_add(size).ok_or(MapError::BadRange)?;
        if input_end > 1u64 << self.regime.input_bits() {
            return Err(MapError::OutOfRange);
        }
        if output_end > OUTPUT_LIMIT {
            return Err(MapError::OutputTooHigh);
        }
        // Nothing is written unless the whole range is free.
        self.first_mapped(input, input_end)?;
        let mut offset = 0;
        while offset < size {
            let (va, pa, left) = (input + offset, output + offset, size - offset);
            let level = self.below_existing_tables(va, self.leaf_level(va, pa, left));
            // One walk for a run of leaves of the same size in the same table.
            let table = self.leaf_table(va, level)?;
            let span = entry_span(level);
            let first = index(va, level);
            let run = ((left / span) as usize).min(ENTRIES - first);
            // Leaves differ only in their output address (below OUTPUT_LIMIT, aligned to
            // `span`, so it is exactly the descriptor's address field).
            let template = leaf_descriptor(self.regime, 0, level, attributes);
            let slots = &mut self.store.entries(table)[first..first + run];
            // The run ends before the first slot in use: a table there is descended into by
            // the next pass, anything else is refused by it.
            let run = match slots
                .iter()
                .position(|&slot| Descriptor::new(slot).is_set(DESC::VALID))
            {
                Some(0) => return Err(MapError::AlreadyMapped { address: va }),
                Some(i) => i,
                None => run,
            };
            let slots = &mut slots[..run];
            for (i, slot) in slots.iter_mut().enumerate() {
                *slot = template | (pa + i as u64 * span);
            }
            offset += run as u64 * span;
        }
        Ok(())
    }

    /// The shallowest level whose block fits the alignment of both addresses and the size left.
    fn leaf_level(&self, va: u64, pa: u64, left: u64) -> usize {
        // Blocks exist at levels 1 and 2 with a 4 KiB granule; level 0 never holds a block.
        (self.regime.start_level().max(1)..3)
            .find(|&level| {
                let span = entry_span(level);
                va.is_multiple_of(span) && pa.is_multiple_of(span) && left >= span
            })
            .unwrap_or(3)
    }

    /// `AlreadyMapped` naming the first address of `[start, end)` that a block or page maps;
    /// tables with nothing in them under the range are no obstacle.
    fn first_mapped(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        self.first_mapped_in(self.root, self.regime.start_level(), start, end)
    }

    /// [`Self::first_mapped`] for the part of `[start, end)` under `table` (at `level`), which
    /// the range does not leave: one pass over its entries, descending into tables. (A walk
    /// from the root for every entry cost the boot about 110 K instructions.)
    fn first_mapped_in(
        &mut self,
        table: u64,
        level: usize,
        start: u64,
        end: u64,
    ) -> Result<(), MapError> {
        let span = entry_span(level);
        let mut va = start;
        while va < end {
            let entry = Descriptor::new(self.store.entries(table)[index(va, level)]);
            let next = (va & !(span - 1)).saturating_add(span).min(end);
            if entry.is_set(DESC::VALID) {
                if level == 3 || !entry.is_set(DESC::TABLE_OR_PAGE) {
                    return Err(MapError::AlreadyMapped { address: va });
                }
                let below = entry.read(DESC::ADDRESS) << 12;
                self.first_mapped_in(below, level + 1, va, next)?;
            }
            va = next;
        }
        Ok(())
    }

    /// `level`, or deeper where the walk for `va` already finds a table at `level` or below
    /// (tables are kept when mappings are removed): a block is never written over a table.
    /// Until 2026-12-04 such a block was refused, so a 2 MiB BAR could not be mapped where
    /// pages of an earlier one had been (found in review).
    fn below_existing_tables(&mut self, va: u64, mut level: usize) -> usize {
        let mut table = self.root;
        for at in self.regime.start_level()..3 {
            let entry = Descriptor::new(self.store.entries(table)[index(va, at)]);
            if !entry.is_set(DESC::VALID) || !entry.is_set(DESC::TABLE_OR_PAGE) {
                break;
            }
            if at >= level {
                level = at + 1;
            }
            table = entry.read(DESC::ADDRESS) << 12;
        }
        level
    }

    /// The table at level `leaf` that holds the entry for `va`, with the tables above it
    /// created as needed.
    fn leaf_table(&mut self, va: u64, leaf: usize) -> Result<u64, MapError> {
        let mut table = self.root;
        for level in self.regime.start_level()..leaf {
            let slot = index(va, level);
            let entry = Descriptor::new(self.store.entries(table)[slot]);
            table = if !entry.is_set(DESC::VALID) {
                let next = self.store.allocate().ok_or(MapError::OutOfTables)?;
                // The new table's zeroes are visible before the descriptor that links it: a
                // live table (a BAR mapped while the slice runs) is walked by other cores,
                // which must never read what the heap left there as valid entries (DMB;
                // hardware walks are coherent observers). Found in review, 2026-12-04.
                core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
                self.store.entries(table)[slot] = table_descriptor(next);
                next
            } else if entry.is_set(DESC::TABLE_OR_PAGE) {
                entry.read(DESC::ADDRESS) << 12
            } else {
                return Err(MapError::AlreadyMapped { address: va });
            };
        }
        Ok(table)
    }

    /// Removes every mapping inside `[input, input + size)`; addresses in it that are not mapped
    /// stay so. A block that reaches outside the range is refused ([`MapError::PartialBlock`],
    /// nothing changed). Tables are kept for later mappings. The caller invalidates the TLBs.
    pub fn unmap(&mut self, input: u64, size: u64) -> Result<(), MapError> {
        if !input.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned);
        }
        let end = input
            .checked_add(size)
            .filter(|_| size > 0)
            .ok_or(MapError::BadRange)?;
        if end > 1u64 << self.regime.input_bits() {
            return Err(MapError::OutOfRange);
        }
        // Check first, so that a refusal leaves every mapping as it was.
        let mut leaves = Vec::new();
        let mut at = input;
        while at < end {
            match self.leaf(at) {
                Some((table, slot, level)) => {
                    let span = entry_span(level);
                    let start = at - at % span;
                    if start < input || start + span > end {
                        return Err(MapError::PartialBlock { address: start });
                    }
                    leaves.push((table, slot));
                    at = start + span;
                }
                None => at += PAGE_SIZE,
            }
        }
        for (table, slot) in leaves {
            self.store.entries(table)[slot] = 0;
        }
        Ok(())
    }

    /// The table, slot and level of the valid leaf descriptor that maps `input`, if any.
    fn leaf(&mut self, input: u64) -> Option<(u64, usize, usize)> {
        let mut table = self.root;
        for level in self.regime.start_level()..=3 {
            let slot = index(input, level);
            let entry = Descriptor::new(self.store.entries(table)[slot]);
            if !entry.is_set(DESC::VALID) {
                return None;
            }
            if level == 3 || !entry.is_set(DESC::TABLE_OR_PAGE) {
                return Some((table, slot, level));
            }
            table = entry.read(DESC::ADDRESS) << 12;
        }
        None
    }

    /// Gives the page at `input` `attributes`, keeping its output address. A page
    /// descriptor is rewritten in place ([`PageChange::Done`]: an attribute change that keeps
    /// the output address and the memory type needs no break-before-make; the caller
    /// invalidates the TLBs). A page inside a block is left as it is: tables mapping the
    /// block's addresses with its attributes, but the page's new ones, are built (one, or
    /// two for a 1 GiB block), and the caller replaces the block with them by
    /// break-before-make ([`PageChange::Split`]). `NotMapped` if nothing maps `input`;
    /// `OutOfTables` leaves every mapping as it was.
    pub fn change_page(
        &mut self,
        input: u64,
        attributes: Attributes,
    ) -> Result<PageChange, MapError> {
        let page = input & !(PAGE_SIZE - 1);
        let (table, slot, level) = self
            .leaf(page)
            .ok_or(MapError::NotMapped { address: page })?;
        let old = Descriptor::new(self.store.entries(table)[slot]);
        let output = old.read(DESC::ADDRESS) << 12;
        let kept = decode_attributes(self.regime, old);
        if kept.memory != attributes.memory {
            return Err(MapError::MemoryType { address: page });
        }
        if level == 3 {
            self.store.entries(table)[slot] = leaf_descriptor(self.regime, output, 3, attributes);
            return Ok(PageChange::Done);
        }
        // Below the block: entries of the next level with the block's attributes, and
        // under the one holding the page (for a 1 GiB block, a 2 MiB block in turn) pages.
        let span = entry_span(level);
        let block_input = page - page % span;
        let mut below = self.store.allocate().ok_or(MapError::OutOfTables)?;
        let top = below;
        for next in level + 1..=3 {
            let next_span = entry_span(next);
            let holder = index(page, next);
            let deeper = if next < 3 {
                Some(self.store.allocate().ok_or(MapError::OutOfTables)?)
            } else {
                None
            };
            let base_input = page - page % entry_span(next - 1);
            let base_output = output + (base_input - block_input);
            let entries = self.store.entries(below);
            for (i, entry) in entries.iter_mut().enumerate() {
                *entry =
                    leaf_descriptor(self.regime, base_output + i as u64 * next_span, next, kept);
            }
            match deeper {
                Some(table) => {
                    self.store.entries(below)[holder] = table_descriptor(table);
                    below = table;
                }
                None => {
                    self.store.entries(below)[holder] = leaf_descriptor(
                        self.regime,
                        base_output + holder as u64 * next_span,
                        3,
                        attributes,
                    );
                }
            }
        }
        Ok(PageChange::Split(BlockSplit {
            table,
            slot,
            descriptor: table_descriptor(top),
            input: block_input,
            size: span,
        }))
    }

    /// The level (1 to 3) of the descriptor that maps `input`, if any.
    pub fn mapping_level(&mut self, input: u64) -> Option<usize> {
        self.leaf(input).map(|(_, _, level)| level)
    }

    /// Writes entry `slot` of `table` (a [`BlockSplit`]'s: 0 to break the block, then its
    /// descriptor once the TLBs no longer hold the block).
    pub fn write_entry(&mut self, table: u64, slot: usize, value: u64) {
        self.store.entries(table)[slot] = value;
    }

    /// Walks the tables for `input`: its output address and attributes, if mapped.
    pub fn translate(&mut self, input: u64) -> Option<(u64, Attributes)> {
        if input >= 1u64 << self.regime.input_bits() {
            return None;
        }
        let mut table = self.root;
        for level in self.regime.start_level()..=3 {
            let entry = Descriptor::new(self.store.entries(table)[index(input, level)]);
            if !entry.is_set(DESC::VALID) {
                return None;
            }
            let address = entry.read(DESC::ADDRESS) << 12;
            let leaf = level == 3 || !entry.is_set(DESC::TABLE_OR_PAGE);
            if leaf {
                let span = entry_span(level);
                return Some((
                    address + input % span,
                    decode_attributes(self.regime, entry),
                ));
            }
            table = address;
        }
        None
    }
}

fn table_descriptor(next: u64) -> u64 {
    let mut d = Descriptor::new(0);
    d.write(DESC::VALID::SET + DESC::TABLE_OR_PAGE::SET + DESC::ADDRESS.val(next >> 12));
    d.get()
}

fn leaf_descriptor(regime: Regime, output: u64, level: usize, attributes: Attributes) -> u64 {
    let mut d = Descriptor::new(0);
    let kind = if level == 3 {
        DESC::TABLE_OR_PAGE::SET
    } else {
        DESC::TABLE_OR_PAGE::CLEAR
    };
    d.write(DESC::VALID::SET + kind + DESC::AF::SET + DESC::ADDRESS.val(output >> 12));
    let shareability = match attributes.memory {
        MemoryType::Normal => DESC::SH::InnerShareable,
        MemoryType::Device => DESC::SH::NonShareable,
    };
    d.modify(shareability);
    match regime {
        Regime::El2Stage1 => {
            let index = match attributes.memory {
                MemoryType::Normal => MAIR_NORMAL,
                MemoryType::Device => MAIR_DEVICE,
            };
            // AP[1] is RES1 in the EL2 regime; AP[2] set means read-only.
            d.modify(DESC::ATTR_INDX.val(index) + DESC::AP1_S2AP_READ::SET);
            if !attributes.writable {
                d.modify(DESC::AP2_S2AP_WRITE::SET);
            }
        }
        Regime::Stage2(types) => {
            let memattr = match attributes.memory {
                MemoryType::Normal => types.normal(),
                MemoryType::Device => DESC::S2_MEMATTR::DeviceNgNRE,
            };
            d.modify(memattr + DESC::AP1_S2AP_READ::SET);
            if attributes.writable {
                d.modify(DESC::AP2_S2AP_WRITE::SET);
            }
        }
    }
    if !attributes.executable {
        d.modify(DESC::XN::SET);
    }
    d.get()
}

fn decode_attributes(regime: Regime, d: Descriptor) -> Attributes {
    let (memory, writable) = match regime {
        Regime::El2Stage1 => {
            let memory = if d.read(DESC::ATTR_INDX) == MAIR_NORMAL {
                MemoryType::Normal
            } else {
                MemoryType::Device
            };
            (memory, !d.is_set(DESC::AP2_S2AP_WRITE))
        }
        Regime::Stage2(types) => {
            let normal = d.matches_all(types.normal());
            let memory = if normal {
                MemoryType::Normal
            } else {
                MemoryType::Device
            };
            (memory, d.is_set(DESC::AP2_S2AP_WRITE))
        }
    };
    Attributes {
        memory,
        writable,
        executable: !d.is_set(DESC::XN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGE2: Regime = Regime::Stage2(Stage2MemoryTypes::CombinedWithStage1);

    fn stage2() -> Translation<HeapTables> {
        Translation::new(STAGE2, HeapTables::new()).unwrap()
    }

    #[test]
    fn maps_ram_with_largest_blocks() {
        let mut t = stage2();
        // 1 GiB + 2 MiB + 4 KiB at a 1 GiB-aligned IPA, PA 1 GiB aligned too.
        let size = BLOCK_1G + BLOCK_2M + PAGE_SIZE;
        t.map(0x4000_0000, 0x1_0000_0000, size, Attributes::RAM)
            .unwrap();
        // root L1 + one L2 (for the 2 MiB block and the L3 holder) + one L3.
        assert_eq!(t.store().len(), 3);
        assert_eq!(
            t.translate(0x4000_0000),
            Some((0x1_0000_0000, Attributes::RAM))
        );
        assert_eq!(
            t.translate(0x4000_0000 + BLOCK_1G + 5),
            Some((0x1_0000_0000 + BLOCK_1G + 5, Attributes::RAM))
        );
        let last = 0x4000_0000 + size - 1;
        assert_eq!(
            t.translate(last).map(|x| x.0),
            Some(0x1_0000_0000 + size - 1)
        );
        assert_eq!(t.translate(last + 1), None);
        assert_eq!(t.translate(0x3fff_ffff), None);
    }

    #[test]
    fn unaligned_output_falls_back_to_pages() {
        let mut t = stage2();
        t.map(0x4000_0000, 0x8000_1000, BLOCK_2M, Attributes::RAM)
            .unwrap();
        // L1 root, L2, L3.
        assert_eq!(t.store().len(), 3);
        assert_eq!(t.translate(0x401f_f123).map(|x| x.0), Some(0x8020_0123));
    }

    #[test]
    fn stage2_attributes_round_trip() {
        let mut t = stage2();
        t.map(0x0900_0000, 0x0900_0000, PAGE_SIZE, Attributes::DEVICE)
            .unwrap();
        let read_only = Attributes {
            memory: MemoryType::Normal,
            writable: false,
            executable: false,
        };
        t.map(0x5000_0000, 0x5000_0000, PAGE_SIZE, read_only)
            .unwrap();
        assert_eq!(
            t.translate(0x0900_0008),
            Some((0x0900_0008, Attributes::DEVICE))
        );
        assert_eq!(t.translate(0x5000_0000), Some((0x5000_0000, read_only)));
    }

    /// The level-2 block descriptor mapping IPA 1 GiB (L1 index 1 -> L2 index 0).
    fn stage2_block_at_1g(t: &mut Translation<HeapTables>) -> u64 {
        let root = t.root();
        let l2 = t.store.entries(root)[1] & 0x0000_ffff_ffff_f000;
        t.store.entries(l2)[0]
    }

    /// Bits [5:2] of a stage-2 descriptor.
    fn memattr(descriptor: u64) -> u64 {
        (descriptor >> 2) & 0b1111
    }

    #[test]
    fn stage2_memattr_without_forced_write_back() {
        let mut t = stage2();
        t.map(0x4000_0000, 0x8000_0000, BLOCK_2M, Attributes::RAM)
            .unwrap();
        let block = stage2_block_at_1g(&mut t);
        assert_eq!(memattr(block), 0b1111, "Normal, Outer and Inner Write-Back");
        assert_eq!((block >> 8) & 0b11, 0b11, "inner shareable");
        assert_eq!((block >> 6) & 0b11, 0b11, "S2AP read-write");
    }

    #[test]
    fn stage2_memattr_with_forced_write_back() {
        let regime = Regime::Stage2(Stage2MemoryTypes::ForcedWriteBack);
        let mut t = Translation::new(regime, HeapTables::new()).unwrap();
        t.map(0x4000_0000, 0x8000_0000, BLOCK_2M, Attributes::RAM)
            .unwrap();
        t.map(0x0900_0000, 0x0900_0000, PAGE_SIZE, Attributes::DEVICE)
            .unwrap();
        let block = stage2_block_at_1g(&mut t);
        assert_eq!(memattr(block), 0b0110, "forced Normal Write-Back");
        assert_eq!((block >> 8) & 0b11, 0b11, "inner shareable");
        assert_eq!(block & 0x0000_ffff_ffff_f000, 0x8000_0000);
        assert_eq!(
            t.translate(0x4000_0010),
            Some((0x8000_0010, Attributes::RAM))
        );
        // Device mappings keep MemAttr[2] = 0 (Device under FWB) and the same nGnRE type.
        let root = t.root();
        let l2 = t.store.entries(root)[0] & 0x0000_ffff_ffff_f000;
        let l3 = t.store.entries(l2)[0x0900_0000 >> 21] & 0x0000_ffff_ffff_f000;
        let page = t.store.entries(l3)[0];
        assert_eq!(memattr(page), 0b0001, "Device-nGnRE");
        assert_eq!(
            t.translate(0x0900_0000),
            Some((0x0900_0000, Attributes::DEVICE))
        );
    }

    #[test]
    fn device_memattr_is_the_same_under_either_encoding() {
        for types in [
            Stage2MemoryTypes::CombinedWithStage1,
            Stage2MemoryTypes::ForcedWriteBack,
        ] {
            let d = leaf_descriptor(Regime::Stage2(types), 0, 3, Attributes::DEVICE);
            assert_eq!(memattr(d), 0b0001, "{types:?}");
            assert_eq!((d >> 8) & 0b11, 0b00, "non-shareable");
        }
    }

    #[test]
    fn el2_stage1_descriptor_bits() {
        let mut t = Translation::new(Regime::El2Stage1, HeapTables::new()).unwrap();
        t.map(0x4000_0000, 0x4000_0000, BLOCK_2M, Attributes::DATA)
            .unwrap();
        assert_eq!(
            t.translate(0x4000_0010),
            Some((0x4000_0010, Attributes::DATA))
        );
        // Walk by hand: L0 -> L1 -> L2 block.
        let root = t.root();
        let l1 = t.store.entries(root)[0] & !0xfff & ((1 << 48) - 1);
        let l2 = t.store.entries(l1)[1] & !0xfff & ((1 << 48) - 1);
        let block = t.store.entries(l2)[0];
        assert_eq!(block & 0b11, 0b01, "block descriptor");
        assert_eq!(block & (1 << 10), 1 << 10, "access flag");
        assert_eq!(block & (1 << 6), 1 << 6, "AP[1] RES1 at EL2");
        assert_eq!(block & (1 << 7), 0, "writable");
        assert_eq!(block & (1 << 54), 1 << 54, "execute never");
        assert_eq!((block >> 8) & 0b11, 0b11, "inner shareable");
        assert_eq!(block & 0x0000_ffff_ffff_f000, 0x4000_0000);
        // The hypervisor's code: read-only (AP[2]) and executable (XN clear).
        let code = leaf_descriptor(Regime::El2Stage1, 0x4020_0000, 3, Attributes::CODE);
        assert_eq!(code & (1 << 7), 1 << 7, "read-only");
        assert_eq!(code & (1 << 54), 0, "executable");
        t.map(0x4020_0000, 0x4020_0000, PAGE_SIZE, Attributes::CODE)
            .unwrap();
        assert_eq!(
            t.translate(0x4020_0008),
            Some((0x4020_0008, Attributes::CODE))
        );
    }

    #[test]
    fn refuses_misaligned() {
        let mut t = stage2();
        assert_eq!(
            t.map(0x4000_0001, 0, PAGE_SIZE, Attributes::RAM),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            t.map(0x4000_0000, 0x10, PAGE_SIZE, Attributes::RAM),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            t.map(0x4000_0000, 0, 100, Attributes::RAM),
            Err(MapError::Misaligned)
        );
    }

    #[test]
    fn refuses_empty_or_wrapping_range() {
        let mut t = stage2();
        assert_eq!(
            t.map(0x4000_0000, 0, 0, Attributes::RAM),
            Err(MapError::BadRange)
        );
        assert_eq!(
            t.map(u64::MAX - 0xfff, 0, 0x2000, Attributes::RAM),
            Err(MapError::BadRange)
        );
    }

    #[test]
    fn refuses_input_beyond_regime() {
        let mut t = stage2();
        assert_eq!(
            t.map(1 << 39, 0, PAGE_SIZE, Attributes::RAM),
            Err(MapError::OutOfRange)
        );
        assert_eq!(t.translate(1 << 39), None);
    }

    #[test]
    fn refuses_output_above_48_bits() {
        let mut t = stage2();
        assert_eq!(
            t.map(0, 1 << 48, PAGE_SIZE, Attributes::RAM),
            Err(MapError::OutputTooHigh)
        );
    }

    #[test]
    fn refuses_overlap() {
        let mut t = stage2();
        t.map(0x4000_0000, 0x4000_0000, BLOCK_2M, Attributes::RAM)
            .unwrap();
        assert_eq!(
            t.map(0x4010_0000, 0x4010_0000, PAGE_SIZE, Attributes::RAM),
            Err(MapError::AlreadyMapped {
                address: 0x4010_0000
            })
        );
        t.map(0x4020_0000, 0x4020_0000, PAGE_SIZE, Attributes::RAM)
            .unwrap();
        assert_eq!(
            t.map(0x4020_0000, 0x4020_0000, PAGE_SIZE, Attributes::RAM),
            Err(MapError::AlreadyMapped {
                address: 0x4020_0000
            })
        );
    }

    /// A range that starts and ends inside 2 MiB blocks and crosses a 1 GiB boundary: pages,
    /// 2 MiB blocks, a 1 GiB block, 2 MiB blocks, pages, each byte where it belongs.
    #[test]
    fn pages_blocks_and_pages_across_tables() {
        let mut t = stage2();
        let (input, output) = (0x3fe0_3000, 0x1_3fe0_3000);
        let size = 0x4000_0000 + 0x20_0000 - 0x3000 + 0x40_5000;
        t.map(input, output, size, Attributes::RAM).unwrap();
        for probe in (0..size).step_by(0x1_3000).chain([size - 1]) {
            assert_eq!(
                t.translate(input + probe).map(|x| x.0),
                Some(output + probe),
                "{probe:#x}"
            );
        }
        assert_eq!(t.translate(input - 1), None);
        assert_eq!(t.translate(input + size), None);
        // Root, two L2 (one per 1 GiB that is not one block), two L3 (the page ends).
        assert_eq!(t.store().len(), 5);
    }

    /// A mapping that runs into an existing one stops at the first page already mapped and
    /// names it.
    #[test]
    fn overlap_in_the_middle_of_a_run_is_named() {
        let mut t = stage2();
        t.map(0x4000_5000, 0x4000_5000, PAGE_SIZE, Attributes::RAM)
            .unwrap();
        assert_eq!(
            t.map(0x4000_0000, 0x9000_0000, 8 * PAGE_SIZE, Attributes::RAM),
            Err(MapError::AlreadyMapped {
                address: 0x4000_5000
            })
        );
    }

    struct TinyStore(HeapTables, usize);
    impl TableStore for TinyStore {
        fn allocate(&mut self) -> Option<u64> {
            if self.0.len() >= self.1 {
                None
            } else {
                self.0.allocate()
            }
        }
        fn entries(&mut self, address: u64) -> &mut [u64; ENTRIES] {
            self.0.entries(address)
        }
    }

    #[test]
    fn reports_running_out_of_tables() {
        let mut t = Translation::new(STAGE2, TinyStore(HeapTables::new(), 2)).unwrap();
        assert_eq!(
            t.map(0x4000_0000, 0x4000_1000, PAGE_SIZE, Attributes::RAM),
            Err(MapError::OutOfTables)
        );
    }

    #[test]
    fn unmaps_pages_and_maps_them_elsewhere() {
        let mut t = stage2();
        // A 16 KiB device BAR at IPA 0x1000_4000, then moved by the guest to 0x1001_0000.
        t.map(0x1000_4000, 0x80_0000_4000, 0x4000, Attributes::DEVICE)
            .unwrap();
        t.unmap(0x1000_4000, 0x4000).unwrap();
        assert_eq!(t.translate(0x1000_4000), None);
        assert_eq!(t.translate(0x1000_7fff), None);
        t.map(0x1001_0000, 0x80_0000_4000, 0x4000, Attributes::DEVICE)
            .unwrap();
        assert_eq!(t.translate(0x1001_2000).map(|m| m.0), Some(0x80_0000_6000));
        // The old place can be mapped again: its tables were kept, its entries cleared.
        t.map(0x1000_4000, 0x80_0001_0000, PAGE_SIZE, Attributes::DEVICE)
            .unwrap();
    }

    #[test]
    fn a_block_goes_where_pages_were_through_the_tables_they_left() {
        // A BAR placed as pages, unmapped, then a 2 MiB BAR at the same address: the kept
        // level-3 table is used (found in review: the block was refused as AlreadyMapped).
        let mut t = stage2();
        t.map(0x1020_0000, 0x80_0000_0000, PAGE_SIZE, Attributes::DEVICE)
            .unwrap();
        t.unmap(0x1020_0000, PAGE_SIZE).unwrap();
        t.map(0x1020_0000, 0x80_0020_0000, BLOCK_2M, Attributes::DEVICE)
            .unwrap();
        for offset in [0, 0x1000, BLOCK_2M - PAGE_SIZE] {
            assert_eq!(
                t.translate(0x1020_0000 + offset),
                Some((0x80_0020_0000 + offset, Attributes::DEVICE))
            );
        }
        // A 1 GiB block over a GiB holding that table maps the rest with 2 MiB blocks and
        // the table's 2 MiB with pages, stopping at nothing.
        let mut t = stage2();
        t.map(0x4020_0000, 0x80_0000_0000, PAGE_SIZE, Attributes::RAM)
            .unwrap();
        t.unmap(0x4020_0000, PAGE_SIZE).unwrap();
        t.map(0x4000_0000, 0x1_0000_0000, 1 << 30, Attributes::RAM)
            .unwrap();
        for offset in [0, 0x20_0000, 0x20_1000, 0x3fff_f000] {
            assert_eq!(
                t.translate(0x4000_0000 + offset),
                Some((0x1_0000_0000 + offset, Attributes::RAM))
            );
        }
        // A page still in use is never mapped over, and nothing of the range is mapped.
        let mut t = stage2();
        t.map(0x1020_1000, 0x80_0000_0000, PAGE_SIZE, Attributes::DEVICE)
            .unwrap();
        assert_eq!(
            t.map(0x1020_0000, 0x80_0020_0000, BLOCK_2M, Attributes::DEVICE),
            Err(MapError::AlreadyMapped {
                address: 0x1020_1000
            })
        );
        assert_eq!(t.translate(0x1020_0000), None);
    }

    #[test]
    fn unmapping_ignores_holes_and_is_idempotent() {
        let mut t = stage2();
        t.map(0x1000_1000, 0x9000_1000, PAGE_SIZE, Attributes::DEVICE)
            .unwrap();
        t.unmap(0x1000_0000, 0x4000).unwrap();
        assert_eq!(t.translate(0x1000_1000), None);
        t.unmap(0x1000_0000, 0x4000).unwrap();
    }

    #[test]
    fn refuses_to_cut_a_block_and_changes_nothing() {
        let mut t = stage2();
        t.map(0x4000_0000, 0x8000_0000, BLOCK_2M, Attributes::RAM)
            .unwrap();
        t.map(0x4020_0000, 0x8020_0000, PAGE_SIZE, Attributes::RAM)
            .unwrap();
        // The range takes the lone page but only part of the 2 MiB block.
        assert_eq!(
            t.unmap(0x401f_f000, 0x2000),
            Err(MapError::PartialBlock {
                address: 0x4000_0000
            })
        );
        assert!(t.translate(0x4020_0000).is_some(), "nothing changed");
        t.unmap(0x4000_0000, BLOCK_2M + PAGE_SIZE).unwrap();
        assert_eq!(t.translate(0x4000_0000), None);
        assert_eq!(t.translate(0x4020_0000), None);
    }

    #[test]
    fn unmap_checks_its_arguments() {
        let mut t = stage2();
        assert_eq!(t.unmap(0x1000_0001, PAGE_SIZE), Err(MapError::Misaligned));
        assert_eq!(t.unmap(0x1000_0000, 0), Err(MapError::BadRange));
        assert_eq!(t.unmap(1 << 39, PAGE_SIZE), Err(MapError::OutOfRange));
    }

    /// Every page of `[input, input + size)` translates to `output + offset` with `RAM`
    /// attributes, except `page`, which has `READ_ONLY`'s.
    fn assert_one_read_only_page(
        t: &mut Translation<HeapTables>,
        input: u64,
        output: u64,
        size: u64,
        page: u64,
    ) {
        for offset in (0..size).step_by(PAGE_SIZE as usize) {
            let wanted = if input + offset == page {
                Attributes {
                    executable: true,
                    ..Attributes::READ_ONLY
                }
            } else {
                Attributes::RAM
            };
            assert_eq!(
                t.translate(input + offset + 8),
                Some((output + offset + 8, wanted)),
                "at {:#x}",
                input + offset
            );
        }
    }

    #[test]
    fn a_page_of_a_2m_block_changes_through_a_split() {
        let mut t = stage2();
        t.map(0x4000_0000, 0x8_0000_0000, 4 * BLOCK_2M, Attributes::RAM)
            .unwrap();
        let tables = t.store().len();
        let page = 0x4000_0000 + BLOCK_2M + 0x5000;
        let read_only = Attributes {
            executable: true,
            ..Attributes::READ_ONLY
        };
        let Ok(PageChange::Split(split)) = t.change_page(page + 0x10, read_only) else {
            panic!("a block must be split");
        };
        assert_eq!(
            (split.input, split.size),
            (0x4000_0000 + BLOCK_2M, BLOCK_2M)
        );
        assert_eq!(t.store().len(), tables + 1);
        // Nothing changed until the caller replaces the block.
        assert_eq!(
            t.translate(page),
            Some((0x8_0000_0000 + BLOCK_2M + 0x5000, Attributes::RAM))
        );
        t.write_entry(split.table, split.slot, 0);
        assert_eq!(t.translate(page), None, "broken");
        t.write_entry(split.table, split.slot, split.descriptor);
        assert_one_read_only_page(&mut t, 0x4000_0000, 0x8_0000_0000, 4 * BLOCK_2M, page);
        // Back: the page is one now, changed in place, no new table.
        assert_eq!(t.change_page(page, Attributes::RAM), Ok(PageChange::Done));
        assert_eq!(t.store().len(), tables + 1);
        assert_one_read_only_page(&mut t, 0x4000_0000, 0x8_0000_0000, 4 * BLOCK_2M, 0);
    }

    #[test]
    fn a_page_of_a_1g_block_changes_through_two_tables() {
        let mut t = stage2();
        t.map(BLOCK_1G, 0x40_0000_0000, BLOCK_1G, Attributes::RAM)
            .unwrap();
        let tables = t.store().len();
        let page = BLOCK_1G + 77 * BLOCK_2M + 0x3000;
        let read_only = Attributes {
            executable: true,
            ..Attributes::READ_ONLY
        };
        let Ok(PageChange::Split(split)) = t.change_page(page, read_only) else {
            panic!("a block must be split");
        };
        assert_eq!((split.input, split.size), (BLOCK_1G, BLOCK_1G));
        assert_eq!(t.store().len(), tables + 2);
        t.write_entry(split.table, split.slot, split.descriptor);
        // The 2 MiB around the page, page by page; the rest by samples of each block.
        let around = BLOCK_1G + 77 * BLOCK_2M;
        assert_one_read_only_page(
            &mut t,
            around,
            0x40_0000_0000 + 77 * BLOCK_2M,
            BLOCK_2M,
            page,
        );
        for block in [0u64, 1, 76, 78, 511] {
            let at = BLOCK_1G + block * BLOCK_2M + 0x1234;
            assert_eq!(
                t.translate(at),
                Some((0x40_0000_0000 + block * BLOCK_2M + 0x1234, Attributes::RAM))
            );
        }
        assert_eq!(t.translate(2 * BLOCK_1G), None);
    }

    #[test]
    fn page_changes_refused() {
        let mut t = stage2();
        t.map(0x4000_0000, 0x8_0000_0000, BLOCK_2M, Attributes::RAM)
            .unwrap();
        t.map(0x900_0000, 0x900_0000, PAGE_SIZE, Attributes::DEVICE)
            .unwrap();
        assert_eq!(
            t.change_page(0x5000_0000, Attributes::READ_ONLY),
            Err(MapError::NotMapped {
                address: 0x5000_0000
            })
        );
        assert_eq!(
            t.change_page(0x900_0000, Attributes::READ_ONLY),
            Err(MapError::MemoryType {
                address: 0x900_0000
            })
        );
        let tables = t.store().len();
        assert_eq!(
            t.change_page(0x4000_0000, Attributes::DEVICE),
            Err(MapError::MemoryType {
                address: 0x4000_0000
            })
        );
        assert_eq!(t.store().len(), tables, "no table for a refusal");
    }
}
