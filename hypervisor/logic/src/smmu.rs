//! The SMMUv3 as pure values (Arm IHI 0070, "SMMU architecture version 3"): what its ID
//! registers say and whether the hypervisor can use it (§6.3.1-§6.3.6), the register values it
//! is programmed with (§6.3.9-§6.3.33), stream table entries (§5.2), commands (§4), event
//! records (§7.3), global errors (§7.5) and queue pointers with their wrap bit (§3.5). The
//! driver in the architecture layer writes these to the hardware.
//!
//! The hypervisor uses stage 2 only: a stream either aborts, bypasses (the hypervisor's own
//! devices), or translates through a stage-2 table in the CPU's stage-2 format
//! ([`Regime::Stage2`]: 4 KiB granule, 39-bit input, walks from level 1). Its memory types
//! are always read as [`Stage2MemoryTypes::CombinedWithStage1`]: stream table entries leave
//! STE.S2FWB at 0, and the SMMU does not look at the cores' HCR_EL2.FWB.
//!
//! [`Regime::Stage2`]: crate::pagetable::Regime::Stage2
//! [`Stage2MemoryTypes::CombinedWithStage1`]: crate::pagetable::Stage2MemoryTypes

use core::fmt;

use tock_registers::{LocalRegisterCopy, register_bitfields};

/// Bytes of one stream table entry (§5.2).
pub const STE_BYTES: u64 = 64;
/// Bytes of one command (§4.1).
pub const COMMAND_BYTES: u64 = 16;
/// Bytes of one event record (§7.1).
pub const EVENT_BYTES: u64 = 32;
/// Entries of the command queue the hypervisor asks for: one 4 KiB page.
pub const COMMAND_QUEUE_LOG2: u8 = 8;
/// Entries of the event queue the hypervisor asks for: one 4 KiB page.
pub const EVENT_QUEUE_LOG2: u8 = 7;
const PAGE: u64 = 4096;

/// Register offsets in the SMMU's two 64 KiB pages (§6.2, Table 6-1 and 6-2).
pub mod offset {
    pub const IDR0: usize = 0x00;
    pub const IDR1: usize = 0x04;
    pub const IDR5: usize = 0x14;
    pub const CR0: usize = 0x20;
    pub const CR0ACK: usize = 0x24;
    pub const CR1: usize = 0x28;
    pub const CR2: usize = 0x2c;
    pub const GBPA: usize = 0x44;
    pub const IRQ_CTRL: usize = 0x50;
    pub const IRQ_CTRLACK: usize = 0x54;
    pub const GERROR: usize = 0x60;
    pub const GERRORN: usize = 0x64;
    pub const STRTAB_BASE: usize = 0x80;
    pub const STRTAB_BASE_CFG: usize = 0x88;
    pub const CMDQ_BASE: usize = 0x90;
    pub const CMDQ_PROD: usize = 0x98;
    pub const CMDQ_CONS: usize = 0x9c;
    pub const EVENTQ_BASE: usize = 0xa0;
    /// In page 1.
    pub const EVENTQ_PROD: usize = 0x1_00a8;
    /// In page 1.
    pub const EVENTQ_CONS: usize = 0x1_00ac;
}

register_bitfields![u32,
    /// SMMU_IDR0 (§6.3.1).
    pub IDR0 [
        S2P OFFSET(0) NUMBITS(1) [],
        S1P OFFSET(1) NUMBITS(1) [],
        /// Translation table formats: 0b10 AArch64, 0b11 both.
        TTF OFFSET(2) NUMBITS(2) [],
        COHACC OFFSET(4) NUMBITS(1) [],
        HYP OFFSET(9) NUMBITS(1) [],
        MSI OFFSET(13) NUMBITS(1) [],
        VMID16 OFFSET(18) NUMBITS(1) [],
        /// 0b00 mixed, 0b10 little, 0b11 big endian.
        TTENDIAN OFFSET(21) NUMBITS(2) [],
        ST_LEVEL OFFSET(27) NUMBITS(2) []
    ],
    /// SMMU_IDR1 (§6.3.2).
    pub IDR1 [
        SIDSIZE OFFSET(0) NUMBITS(6) [],
        EVENTQS OFFSET(16) NUMBITS(5) [],
        CMDQS OFFSET(21) NUMBITS(5) [],
        REL OFFSET(28) NUMBITS(1) [],
        QUEUES_PRESET OFFSET(29) NUMBITS(1) [],
        TABLES_PRESET OFFSET(30) NUMBITS(1) []
    ],
    /// SMMU_IDR5 (§6.3.6).
    pub IDR5 [
        OAS OFFSET(0) NUMBITS(3) [],
        GRAN4K OFFSET(4) NUMBITS(1) [],
        GRAN16K OFFSET(5) NUMBITS(1) [],
        GRAN64K OFFSET(6) NUMBITS(1) []
    ],
    /// SMMU_CR0 and SMMU_CR0ACK (§6.3.9).
    pub CR0 [
        SMMUEN OFFSET(0) NUMBITS(1) [],
        PRIQEN OFFSET(1) NUMBITS(1) [],
        EVENTQEN OFFSET(2) NUMBITS(1) [],
        CMDQEN OFFSET(3) NUMBITS(1) []
    ],
    /// SMMU_CR1 (§6.3.11): cacheability and shareability of table and queue accesses.
    pub CR1 [
        QUEUE_IC OFFSET(0) NUMBITS(2) [WriteBack = 1],
        QUEUE_OC OFFSET(2) NUMBITS(2) [WriteBack = 1],
        QUEUE_SH OFFSET(4) NUMBITS(2) [InnerShareable = 3],
        TABLE_IC OFFSET(6) NUMBITS(2) [WriteBack = 1],
        TABLE_OC OFFSET(8) NUMBITS(2) [WriteBack = 1],
        TABLE_SH OFFSET(10) NUMBITS(2) [InnerShareable = 3]
    ],
    /// SMMU_CR2 (§6.3.12).
    pub CR2 [
        E2H OFFSET(0) NUMBITS(1) [],
        RECINVSID OFFSET(1) NUMBITS(1) [],
        PTM OFFSET(2) NUMBITS(1) []
    ],
    /// SMMU_GBPA (§6.3.14): what happens to transactions while the SMMU is disabled.
    pub GBPA [
        ABORT OFFSET(20) NUMBITS(1) [],
        UPDATE OFFSET(31) NUMBITS(1) []
    ],
    /// SMMU_IRQ_CTRL and SMMU_IRQ_CTRLACK (§6.3.16).
    pub IRQ_CTRL [
        GERROR_IRQEN OFFSET(0) NUMBITS(1) [],
        PRIQ_IRQEN OFFSET(1) NUMBITS(1) [],
        EVENTQ_IRQEN OFFSET(2) NUMBITS(1) []
    ],
    /// SMMU_GERROR and SMMU_GERRORN (§6.3.18): an error is active while the bits differ.
    pub GERROR [
        CMDQ_ERR OFFSET(0) NUMBITS(1) [],
        EVENTQ_ABT_ERR OFFSET(2) NUMBITS(1) [],
        PRIQ_ABT_ERR OFFSET(3) NUMBITS(1) [],
        MSI_CMDQ_ABT_ERR OFFSET(4) NUMBITS(1) [],
        MSI_EVENTQ_ABT_ERR OFFSET(5) NUMBITS(1) [],
        MSI_PRIQ_ABT_ERR OFFSET(6) NUMBITS(1) [],
        MSI_GERROR_ABT_ERR OFFSET(7) NUMBITS(1) [],
        SFM_ERR OFFSET(8) NUMBITS(1) []
    ],
    /// SMMU_STRTAB_BASE_CFG (§6.3.24).
    pub STRTAB_BASE_CFG [
        LOG2SIZE OFFSET(0) NUMBITS(6) [],
        SPLIT OFFSET(6) NUMBITS(5) [],
        FMT OFFSET(16) NUMBITS(2) [Linear = 0, TwoLevel = 1]
    ],
    /// SMMU_CMDQ_CONS (§6.3.27): the read index and the error of a stopped queue.
    pub CMDQ_CONS [
        RD OFFSET(0) NUMBITS(20) [],
        ERR OFFSET(24) NUMBITS(7) []
    ],
    /// SMMU_EVENTQ_PROD (§6.3.30) and SMMU_EVENTQ_CONS (§6.3.31).
    pub EVENTQ_POINTER [
        INDEX OFFSET(0) NUMBITS(20) [],
        /// OVFLG in PROD (toggled on overflow), OVACKFLG in CONS (copied to acknowledge).
        OVERFLOW OFFSET(31) NUMBITS(1) []
    ]
];

/// Bits of an address field in a base register or STE: [51:4] at most.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_fff0;
/// STRTAB_BASE.RA, CMDQ_BASE.RA, EVENTQ_BASE.WA: allocation hints.
const ALLOCATE_HINT: u64 = 1 << 62;

/// Output address sizes by IDR5.OAS / STE.S2PS / VTCR_EL2.PS encoding (§6.3.6).
fn address_bits(encoding: u8) -> Option<u8> {
    match encoding {
        0 => Some(32),
        1 => Some(36),
        2 => Some(40),
        3 => Some(42),
        4 => Some(44),
        5 => Some(48),
        6 => Some(52),
        _ => None,
    }
}

/// What the ID registers say the SMMU can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub stage1: bool,
    pub stage2: bool,
    /// Walks AArch64 translation tables.
    pub aarch64_tables: bool,
    /// Its table and queue accesses are IO-coherent (IDR0.COHACC).
    pub coherent: bool,
    /// Knows EL2 translation regimes (IDR0.HYP): only then are TLBI_EL2_* legal.
    pub hyp: bool,
    pub vmid16: bool,
    /// Little-endian translation tables are walked (IDR0.TTENDIAN mixed or little).
    pub little_endian_tables: bool,
    /// Two-level stream tables are supported (linear ones always are).
    pub two_level_stream_table: bool,
    /// StreamID bits (IDR1.SIDSIZE).
    pub stream_id_bits: u8,
    /// log2 of the most command and event queue entries.
    pub command_queue_log2: u8,
    pub event_queue_log2: u8,
    /// Table or queue base addresses fixed by the implementation (IDR1.TABLES_PRESET,
    /// QUEUES_PRESET), or relative to something (IDR1.REL).
    pub preset: bool,
    /// IDR5.OAS, encoded.
    pub output_size: u8,
    pub granule_4k: bool,
}

/// Why the hypervisor cannot use this SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// No stage-2 translation (IDR0.S2P).
    NoStage2,
    /// It cannot walk AArch64 tables (IDR0.TTF).
    NoAArch64Tables,
    /// No 4 KiB translation granule (IDR5.GRAN4K).
    No4KGranule,
    /// It walks big-endian tables only (IDR0.TTENDIAN).
    BigEndianTables,
    /// Its table and queue accesses do not snoop the CPU caches (IDR0.COHACC), and the
    /// hypervisor does no cache maintenance for it.
    NotCoherent,
    /// The implementation fixes table or queue addresses (IDR1.TABLES_PRESET/QUEUES_PRESET/REL).
    PresetTables,
    /// An unknown output address size encoding (IDR5.OAS).
    UnknownOutputSize,
    /// The output address size (bits) cannot reach the node's RAM.
    OutputTooSmall { bits: u8 },
    /// The streams the node has need more StreamID bits than the SMMU has.
    TooManyStreams { wanted_bits: u8, bits: u8 },
    /// The queues cannot hold even one entry (IDR1.CMDQS/EVENTQS = 0 is not allowed).
    NoQueues,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStage2 => f.write_str("no stage-2 translation (IDR0.S2P = 0)"),
            Self::NoAArch64Tables => f.write_str("cannot walk AArch64 tables (IDR0.TTF)"),
            Self::No4KGranule => f.write_str("no 4 KiB granule (IDR5.GRAN4K = 0)"),
            Self::BigEndianTables => f.write_str("walks big-endian tables only (IDR0.TTENDIAN)"),
            Self::NotCoherent => f.write_str("not IO-coherent (IDR0.COHACC = 0)"),
            Self::PresetTables => {
                f.write_str("table or queue addresses are fixed by the implementation (IDR1)")
            }
            Self::UnknownOutputSize => f.write_str("unknown output address size (IDR5.OAS)"),
            Self::OutputTooSmall { bits } => {
                write!(f, "its {bits}-bit output addresses cannot reach all RAM")
            }
            Self::TooManyStreams { wanted_bits, bits } => write!(
                f,
                "the node's streams need {wanted_bits} StreamID bits, the SMMU has {bits}"
            ),
            Self::NoQueues => f.write_str("zero-sized command or event queue (IDR1)"),
        }
    }
}

impl Features {
    /// Decodes SMMU_IDR0, IDR1 and IDR5.
    pub fn decode(idr0: u32, idr1: u32, idr5: u32) -> Features {
        let idr0 = LocalRegisterCopy::<u32, IDR0::Register>::new(idr0);
        let idr1 = LocalRegisterCopy::<u32, IDR1::Register>::new(idr1);
        let idr5 = LocalRegisterCopy::<u32, IDR5::Register>::new(idr5);
        Features {
            stage1: idr0.is_set(IDR0::S1P),
            stage2: idr0.is_set(IDR0::S2P),
            aarch64_tables: idr0.read(IDR0::TTF) & 0b10 != 0,
            coherent: idr0.is_set(IDR0::COHACC),
            hyp: idr0.is_set(IDR0::HYP),
            vmid16: idr0.is_set(IDR0::VMID16),
            little_endian_tables: matches!(idr0.read(IDR0::TTENDIAN), 0b00 | 0b10),
            two_level_stream_table: idr0.read(IDR0::ST_LEVEL) == 0b01,
            stream_id_bits: idr1.read(IDR1::SIDSIZE) as u8,
            command_queue_log2: idr1.read(IDR1::CMDQS) as u8,
            event_queue_log2: idr1.read(IDR1::EVENTQS) as u8,
            preset: idr1.is_set(IDR1::TABLES_PRESET)
                || idr1.is_set(IDR1::QUEUES_PRESET)
                || idr1.is_set(IDR1::REL),
            output_size: idr5.read(IDR5::OAS) as u8,
            granule_4k: idr5.is_set(IDR5::GRAN4K),
        }
    }

    /// Output address bits (IDR5.OAS), if the encoding is known.
    pub fn output_bits(&self) -> Option<u8> {
        address_bits(self.output_size)
    }

    /// Whether the hypervisor can use this SMMU for a node whose highest physical address
    /// (RAM or the ITS) is below `address_limit`: stage 2 over AArch64 little-endian tables
    /// with 4 KiB pages, coherent, tables and queues where the hypervisor puts them.
    pub fn check(&self, address_limit: u64) -> Result<(), Unsupported> {
        if !self.stage2 {
            return Err(Unsupported::NoStage2);
        }
        if !self.aarch64_tables {
            return Err(Unsupported::NoAArch64Tables);
        }
        if !self.granule_4k {
            return Err(Unsupported::No4KGranule);
        }
        if !self.little_endian_tables {
            return Err(Unsupported::BigEndianTables);
        }
        if !self.coherent {
            return Err(Unsupported::NotCoherent);
        }
        if self.preset {
            return Err(Unsupported::PresetTables);
        }
        if self.command_queue_log2 == 0 || self.event_queue_log2 == 0 {
            return Err(Unsupported::NoQueues);
        }
        let bits = self.output_bits().ok_or(Unsupported::UnknownOutputSize)?;
        if bits < 64 && address_limit > 1u64 << bits {
            return Err(Unsupported::OutputTooSmall { bits });
        }
        Ok(())
    }

    /// The most VMIDs a stream table entry can name.
    pub fn vmid_limit(&self) -> u32 {
        if self.vmid16 { 1 << 16 } else { 1 << 8 }
    }

    /// log2 of the command queue entries to use.
    pub fn command_queue_log2(&self) -> u8 {
        COMMAND_QUEUE_LOG2.min(self.command_queue_log2)
    }

    /// log2 of the event queue entries to use.
    pub fn event_queue_log2(&self) -> u8 {
        EVENT_QUEUE_LOG2.min(self.event_queue_log2)
    }
}

/// A linear stream table's size: `1 << log2` entries, StreamIDs `0..entries` (§3.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTableSize {
    log2: u8,
}

impl StreamTableSize {
    /// The smallest linear table that covers StreamIDs `0..=highest` on this SMMU.
    pub fn covering(highest: u32, features: &Features) -> Result<Self, Unsupported> {
        let log2 = (u32::BITS - highest.leading_zeros()) as u8;
        if log2 > features.stream_id_bits {
            return Err(Unsupported::TooManyStreams {
                wanted_bits: log2,
                bits: features.stream_id_bits,
            });
        }
        Ok(Self { log2 })
    }

    pub fn log2(&self) -> u8 {
        self.log2
    }

    pub fn entries(&self) -> u64 {
        1 << self.log2
    }

    pub fn bytes(&self) -> u64 {
        self.entries() * STE_BYTES
    }

    /// Whether `stream` has an entry.
    pub fn covers(&self, stream: u32) -> bool {
        u64::from(stream) < self.entries()
    }

    /// Byte offset of `stream`'s entry.
    pub fn offset(&self, stream: u32) -> Option<u64> {
        self.covers(stream).then_some(u64::from(stream) * STE_BYTES)
    }
}

/// Where the stream table and the two queues go in the memory the hypervisor gives the SMMU:
/// the table first (aligned to its size, which is what a linear table's base needs), then a
/// page for commands, then a page for events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    pub stream_table: StreamTableSize,
    /// Offset and bytes of each part.
    pub table: (u64, u64),
    pub command_queue: (u64, u64),
    pub event_queue: (u64, u64),
    /// Total bytes, and the alignment of the whole.
    pub bytes: u64,
    pub align: u64,
}

impl MemoryLayout {
    pub fn new(stream_table: StreamTableSize, features: &Features) -> MemoryLayout {
        let table_bytes = stream_table.bytes().next_multiple_of(PAGE);
        let command = (1u64 << features.command_queue_log2()) * COMMAND_BYTES;
        let event = (1u64 << features.event_queue_log2()) * EVENT_BYTES;
        let command_at = table_bytes;
        let event_at = command_at + command.next_multiple_of(PAGE);
        MemoryLayout {
            stream_table,
            table: (0, table_bytes),
            command_queue: (command_at, command),
            event_queue: (event_at, event),
            bytes: event_at + event.next_multiple_of(PAGE),
            align: table_bytes.next_power_of_two(),
        }
    }
}

/// SMMU_STRTAB_BASE for a linear table at `base` (read-allocate hint on).
pub fn stream_table_base(base: u64) -> u64 {
    ALLOCATE_HINT | (base & ADDRESS_MASK & !0x3f)
}

/// SMMU_STRTAB_BASE_CFG for a linear table of `size`.
pub fn stream_table_config(size: StreamTableSize) -> u32 {
    (STRTAB_BASE_CFG::FMT::Linear + STRTAB_BASE_CFG::LOG2SIZE.val(u32::from(size.log2()))).value
}

/// SMMU_CMDQ_BASE or SMMU_EVENTQ_BASE for a queue of `1 << log2` entries at `base`.
pub fn queue_base(base: u64, log2: u8) -> u64 {
    ALLOCATE_HINT | (base & ADDRESS_MASK & !0x1f) | u64::from(log2 & 0x1f)
}

/// SMMU_CR1: tables and queues in write-back, inner-shareable memory (how the hypervisor maps
/// RAM).
pub fn cr1() -> u32 {
    (CR1::QUEUE_IC::WriteBack
        + CR1::QUEUE_OC::WriteBack
        + CR1::QUEUE_SH::InnerShareable
        + CR1::TABLE_IC::WriteBack
        + CR1::TABLE_OC::WriteBack
        + CR1::TABLE_SH::InnerShareable)
        .value
}

/// SMMU_CR2: record C_BAD_STREAMID events, ignore broadcast TLB maintenance (the hypervisor
/// invalidates the SMMU's TLBs by command), EL2 regime without E2H.
pub fn cr2() -> u32 {
    (CR2::RECINVSID::SET + CR2::PTM::SET).value
}

/// SMMU_GBPA write that makes every transaction abort while the SMMU is disabled.
pub fn gbpa_abort() -> u32 {
    (GBPA::UPDATE::SET + GBPA::ABORT::SET).value
}

/// Whether a GBPA update finished (UPDATE reads 0).
pub fn gbpa_updated(gbpa: u32) -> bool {
    gbpa & GBPA::UPDATE::SET.value == 0
}

/// SMMU_IRQ_CTRL: global errors and events interrupt; no PRI queue.
pub fn irq_ctrl() -> u32 {
    (IRQ_CTRL::GERROR_IRQEN::SET + IRQ_CTRL::EVENTQ_IRQEN::SET).value
}

/// The SMMU_CR0 values of the bring-up, in order: command queue on, event queue too, then
/// translation (each acknowledged in CR0ACK before the next).
pub mod cr0 {
    use super::CR0;

    pub fn command_queue() -> u32 {
        CR0::CMDQEN::SET.value
    }

    pub fn queues() -> u32 {
        (CR0::CMDQEN::SET + CR0::EVENTQEN::SET).value
    }

    pub fn enabled() -> u32 {
        (CR0::CMDQEN::SET + CR0::EVENTQEN::SET + CR0::SMMUEN::SET).value
    }
}

/// The stage-2 format every translating stream uses: the CPU's stage 2 (`Regime::Stage2`,
/// VTCR_EL2 as `microvisor_arch::virt::configure_core` sets it: T0SZ = 25, SL0 = 1 (start at
/// level 1), IRGN0 = ORGN0 = write-back read/write-allocate, SH0 = inner shareable, TG0 = 4 KiB).
mod stage2 {
    pub const T0SZ: u64 = 64 - crate::pagetable::STAGE2_INPUT_BITS as u64;
    pub const SL0_LEVEL1: u64 = 1;
    pub const WRITE_BACK: u64 = 0b01;
    pub const INNER_SHAREABLE: u64 = 0b11;
    pub const GRANULE_4K: u64 = 0b00;
}

/// Why a stage-2 stream table entry cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// The VMID does not fit the SMMU's VMID size.
    VmidTooLarge,
    /// The table root is not 4 KiB aligned or beyond the output address size.
    BadRoot,
    /// The CPU's PA size encoding is unknown.
    BadPhysicalSize,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VmidTooLarge => f.write_str("VMID too large for the SMMU"),
            Self::BadRoot => f.write_str("stage-2 root misaligned or out of the SMMU's reach"),
            Self::BadPhysicalSize => f.write_str("unknown physical address size"),
        }
    }
}

/// A stream table entry (§5.2): eight little-endian doublewords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTableEntry(pub [u64; 8]);

/// STE.Config values (§5.2, Table 5-1), shifted into place with V = 1.
const STE_VALID: u64 = 1;
const CONFIG_ABORT: u64 = 0b000 << 1;
const CONFIG_BYPASS: u64 = 0b100 << 1;
const CONFIG_STAGE2: u64 = 0b110 << 1;
/// STE.SHCFG (doubleword 1, bits 45:44) = 0b01: use the incoming shareability.
const SHCFG_INCOMING: u64 = 0b01 << 44;

impl StreamTableEntry {
    /// Every transaction of the stream aborts (no event is recorded).
    pub const ABORT: StreamTableEntry =
        StreamTableEntry([STE_VALID | CONFIG_ABORT, 0, 0, 0, 0, 0, 0, 0]);

    /// Transactions pass untranslated, with their own attributes.
    pub const BYPASS: StreamTableEntry =
        StreamTableEntry([STE_VALID | CONFIG_BYPASS, SHCFG_INCOMING, 0, 0, 0, 0, 0, 0]);

    /// Stage-2-only translation for VM `vmid` through the table at `root`, in the CPU's
    /// stage-2 format, with `cpu_physical_size` the CPU's VTCR_EL2.PS encoding (capped to the
    /// SMMU's OAS). Faults are recorded (S2R = 1), never stalled.
    pub fn stage2(
        vmid: u16,
        root: u64,
        cpu_physical_size: u8,
        features: &Features,
    ) -> Result<StreamTableEntry, EntryError> {
        if u32::from(vmid) >= features.vmid_limit() {
            return Err(EntryError::VmidTooLarge);
        }
        let ps = cpu_physical_size.min(features.output_size);
        let bits = address_bits(ps).ok_or(EntryError::BadPhysicalSize)?;
        if !root.is_multiple_of(PAGE) || (bits < 64 && root >> bits != 0) {
            return Err(EntryError::BadRoot);
        }
        use stage2::*;
        let vtcr = T0SZ
            | SL0_LEVEL1 << 6
            | WRITE_BACK << 8
            | WRITE_BACK << 10
            | INNER_SHAREABLE << 12
            | GRANULE_4K << 14
            | u64::from(ps) << 16;
        const S2AA64: u64 = 1 << 51;
        const S2R: u64 = 1 << 58;
        Ok(StreamTableEntry([
            STE_VALID | CONFIG_STAGE2,
            SHCFG_INCOMING,
            u64::from(vmid) | vtcr << 32 | S2AA64 | S2R,
            root & ADDRESS_MASK,
            0,
            0,
            0,
            0,
        ]))
    }

    /// The entry as the SMMU reads it from memory.
    pub fn to_bytes(&self) -> [u8; STE_BYTES as usize] {
        let mut bytes = [0; STE_BYTES as usize];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }
}

/// A command the hypervisor issues (§4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// CMD_CFGI_STE: forget the cached entry of one stream (Leaf = 1: no 2-level table).
    ConfigInvalidateStream(u32),
    /// CMD_CFGI_ALL: forget every cached entry (CFGI_STE_RANGE with Range = 31).
    ConfigInvalidateAll,
    /// CMD_TLBI_S12_VMALL: forget every translation of one VMID.
    InvalidateVmid(u16),
    /// CMD_TLBI_NSNH_ALL: forget every non-secure, non-hypervisor translation.
    InvalidateAllGuests,
    /// CMD_TLBI_EL2_ALL: forget every EL2 translation (legal only with IDR0.HYP).
    InvalidateEl2,
    /// CMD_SYNC: completes once every earlier command has taken effect (no interrupt, no MSI:
    /// the hypervisor polls the consumer index).
    Sync,
}

impl Command {
    /// The opcode (§4.1, Table 4-1).
    pub fn opcode(&self) -> u8 {
        match self {
            Self::ConfigInvalidateStream(_) => 0x03,
            Self::ConfigInvalidateAll => 0x04,
            Self::InvalidateVmid(_) => 0x28,
            Self::InvalidateAllGuests => 0x30,
            Self::InvalidateEl2 => 0x20,
            Self::Sync => 0x46,
        }
    }

    /// The two doublewords.
    pub fn encode(&self) -> [u64; 2] {
        let op = u64::from(self.opcode());
        match *self {
            Self::ConfigInvalidateStream(stream) => [op | u64::from(stream) << 32, 1],
            Self::ConfigInvalidateAll => [op, 31],
            Self::InvalidateVmid(vmid) => [op | u64::from(vmid) << 32, 0],
            Self::InvalidateAllGuests | Self::InvalidateEl2 | Self::Sync => [op, 0],
        }
    }

    /// The command as the SMMU reads it from the queue.
    pub fn to_bytes(&self) -> [u8; COMMAND_BYTES as usize] {
        let [low, high] = self.encode();
        let mut bytes = [0; COMMAND_BYTES as usize];
        bytes[..8].copy_from_slice(&low.to_le_bytes());
        bytes[8..].copy_from_slice(&high.to_le_bytes());
        bytes
    }
}

/// Why the command queue stopped (SMMU_CMDQ_CONS.ERR, §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// CERROR_ILL: an unknown or illegal command.
    Illegal,
    /// CERROR_ABT: an abort reading the command.
    Abort,
    /// CERROR_ATC_INV_SYNC: an ATS invalidation did not complete.
    AtcInvalidationSync,
    /// An implementation-defined or reserved code.
    Other(u8),
}

impl CommandError {
    /// The error of a CMDQ_CONS value (`None` for CERROR_NONE).
    pub fn from_consumer(cons: u32) -> Option<CommandError> {
        let code = LocalRegisterCopy::<u32, CMDQ_CONS::Register>::new(cons).read(CMDQ_CONS::ERR);
        match code {
            0 => None,
            1 => Some(Self::Illegal),
            2 => Some(Self::Abort),
            3 => Some(Self::AtcInvalidationSync),
            other => Some(Self::Other(other as u8)),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Illegal => f.write_str("illegal command"),
            Self::Abort => f.write_str("abort reading the command queue"),
            Self::AtcInvalidationSync => f.write_str("ATC invalidation timed out"),
            Self::Other(code) => write!(f, "command error {code:#x}"),
        }
    }
}

/// The global errors that are active: the bits where SMMU_GERROR and SMMU_GERRORN differ
/// (§7.5). Acknowledged by writing GERRORN = GERROR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalErrors(pub u32);

/// Names of GERROR bits, by bit.
const GLOBAL_ERROR_NAMES: [(u32, &str); 8] = [
    (0, "command queue error"),
    (2, "event queue full or unwritable, records lost"),
    (3, "PRI queue write aborted"),
    (4, "command-sync MSI aborted"),
    (5, "event queue MSI aborted"),
    (6, "PRI queue MSI aborted"),
    (7, "global error MSI aborted"),
    (8, "service failure mode"),
];

impl GlobalErrors {
    pub fn active(gerror: u32, gerrorn: u32) -> GlobalErrors {
        GlobalErrors(gerror ^ gerrorn)
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The command queue stopped on an error (see [`CommandError`]).
    pub fn command_queue(&self) -> bool {
        self.0 & GERROR::CMDQ_ERR::SET.value != 0
    }

    /// The event queue could not be written: events were lost.
    pub fn event_queue_aborted(&self) -> bool {
        self.0 & GERROR::EVENTQ_ABT_ERR::SET.value != 0
    }
}

impl fmt::Display for GlobalErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        let mut known = 0;
        for (bit, name) in GLOBAL_ERROR_NAMES {
            if self.0 & (1 << bit) != 0 {
                known |= 1 << bit;
                if !first {
                    f.write_str(", ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let rest = self.0 & !known;
        if rest != 0 {
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "GERROR bits {rest:#x}")?;
        }
        Ok(())
    }
}

/// A producer or consumer index of a queue of `1 << log2` entries (§3.5): the entry index in
/// the low `log2` bits and a wrap bit above it, which tells a full queue from an empty one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueIndex {
    log2: u8,
    /// Wrap bit and index, nothing else.
    value: u32,
}

impl QueueIndex {
    /// Index 0, wrap 0, of a queue of `1 << log2` entries (`log2` at most 19, §6.3.26).
    pub fn new(log2: u8) -> QueueIndex {
        QueueIndex {
            log2: log2.min(19),
            value: 0,
        }
    }

    /// The index in a PROD or CONS register value (other bits, such as ERR or the overflow
    /// flag, ignored).
    pub fn from_register(log2: u8, register: u32) -> QueueIndex {
        let q = QueueIndex::new(log2);
        QueueIndex {
            value: register & q.wrap_and_index_mask(),
            ..q
        }
    }

    fn wrap_and_index_mask(&self) -> u32 {
        (2u32 << self.log2) - 1
    }

    /// Entries the queue holds.
    pub fn capacity(&self) -> u32 {
        1 << self.log2
    }

    /// Entry number (0..capacity).
    pub fn index(&self) -> u32 {
        self.value & (self.capacity() - 1)
    }

    pub fn wrap(&self) -> bool {
        self.value & self.capacity() != 0
    }

    /// The value to write to the PROD/CONS register.
    pub fn register(&self) -> u32 {
        self.value
    }

    /// The next entry (the wrap bit flips when the index goes back to 0).
    pub fn next(&self) -> QueueIndex {
        QueueIndex {
            value: self.value.wrapping_add(1) & self.wrap_and_index_mask(),
            ..*self
        }
    }

    /// Entries between `consumer` and this producer index.
    pub fn used_since(&self, consumer: QueueIndex) -> u32 {
        self.value.wrapping_sub(consumer.value) & self.wrap_and_index_mask()
    }

    /// Whether a queue with this producer and `consumer` is empty.
    pub fn is_empty(&self, consumer: QueueIndex) -> bool {
        self.value == consumer.value
    }

    /// Whether a queue with this producer and `consumer` is full (same index, other wrap).
    pub fn is_full(&self, consumer: QueueIndex) -> bool {
        self.value ^ consumer.value == self.capacity()
    }
}

/// Event record types (§7.3, Table 7-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    UnsupportedUpstreamTransaction,
    BadStreamId,
    StreamEntryFetchAbort,
    BadStreamEntry,
    BadAtsRequest,
    StreamDisabled,
    TranslationForbidden,
    BadSubstreamId,
    ContextFetchAbort,
    BadContext,
    WalkAbort,
    Translation,
    AddressSize,
    AccessFlag,
    Permission,
    TlbConflict,
    ConfigurationConflict,
    PageRequest,
    Other(u8),
}

impl EventKind {
    pub fn from_code(code: u8) -> EventKind {
        match code {
            0x01 => Self::UnsupportedUpstreamTransaction,
            0x02 => Self::BadStreamId,
            0x03 => Self::StreamEntryFetchAbort,
            0x04 => Self::BadStreamEntry,
            0x05 => Self::BadAtsRequest,
            0x06 => Self::StreamDisabled,
            0x07 => Self::TranslationForbidden,
            0x08 => Self::BadSubstreamId,
            0x09 => Self::ContextFetchAbort,
            0x0a => Self::BadContext,
            0x0b => Self::WalkAbort,
            0x10 => Self::Translation,
            0x11 => Self::AddressSize,
            0x12 => Self::AccessFlag,
            0x13 => Self::Permission,
            0x20 => Self::TlbConflict,
            0x21 => Self::ConfigurationConflict,
            0x24 => Self::PageRequest,
            other => Self::Other(other),
        }
    }

    /// Whether the record carries an input address, an access direction and a stage
    /// (the translation fault family, §7.3.12-§7.3.16).
    fn is_fault_with_address(&self) -> bool {
        matches!(
            self,
            Self::WalkAbort
                | Self::Translation
                | Self::AddressSize
                | Self::AccessFlag
                | Self::Permission
                | Self::UnsupportedUpstreamTransaction
                | Self::TranslationForbidden
        )
    }

    /// What an operator reads.
    fn describe(&self) -> &'static str {
        match self {
            Self::UnsupportedUpstreamTransaction => "unsupported transaction",
            Self::BadStreamId => "stream ID outside the stream table",
            Self::StreamEntryFetchAbort => "abort fetching the stream table entry",
            Self::BadStreamEntry => "invalid stream table entry",
            Self::BadAtsRequest => "bad ATS translation request",
            Self::StreamDisabled => "stream disabled",
            Self::TranslationForbidden => "untranslated transaction forbidden",
            Self::BadSubstreamId => "bad substream ID",
            Self::ContextFetchAbort => "abort fetching the context descriptor",
            Self::BadContext => "invalid context descriptor",
            Self::WalkAbort => "external abort walking the translation tables",
            Self::Translation => "translation fault",
            Self::AddressSize => "address size fault",
            Self::AccessFlag => "access flag fault",
            Self::Permission => "permission fault",
            Self::TlbConflict => "TLB conflict",
            Self::ConfigurationConflict => "configuration cache conflict",
            Self::PageRequest => "page request",
            Self::Other(_) => "event",
        }
    }
}

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One event record (§7.3), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The raw type code.
    pub code: u8,
    pub stream: u32,
    /// The substream, when the record says one was given (SSV).
    pub substream: Option<u32>,
    /// The device's (input) address, for the fault family.
    pub address: Option<u64>,
    pub access: Option<Access>,
    /// The fault arose in stage 2 (the S2 bit).
    pub stage2: bool,
    /// For a walk abort or an entry fetch abort: the physical address that failed.
    pub fetch_address: Option<u64>,
}

impl Event {
    /// Decodes a record's four doublewords.
    pub fn decode(words: [u64; 4]) -> Event {
        let code = words[0] as u8;
        let kind = EventKind::from_code(code);
        let ssv = words[0] & (1 << 11) != 0;
        let with_address = kind.is_fault_with_address();
        let fetch_address = match kind {
            EventKind::WalkAbort => Some(words[3] & 0x000f_ffff_ffff_fff8),
            EventKind::StreamEntryFetchAbort => Some(words[3] & 0x000f_ffff_ffff_fff8),
            _ => None,
        };
        Event {
            kind,
            code,
            stream: (words[0] >> 32) as u32,
            substream: ssv.then_some(((words[0] >> 12) & 0xf_ffff) as u32),
            address: with_address.then_some(words[2]),
            access: with_address.then_some(if words[1] & (1 << 35) != 0 {
                Access::Read
            } else {
                Access::Write
            }),
            stage2: with_address && words[1] & (1 << 39) != 0,
            fetch_address,
        }
    }

    /// Decodes a record as it lies in memory (32 little-endian bytes).
    pub fn from_bytes(bytes: &[u8; EVENT_BYTES as usize]) -> Event {
        let mut words = [0u64; 4];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(chunk);
            *word = u64::from_le_bytes(raw);
        }
        Event::decode(words)
    }
}

/// `translation fault at IOVA 0x1000 (write)`, `invalid stream table entry`, ...
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.describe())?;
        if let EventKind::Other(code) = self.kind {
            write!(f, " type {code:#04x}")?;
        }
        if let Some(address) = self.address {
            write!(f, " at IOVA {address:#x}")?;
        }
        if let Some(access) = self.access {
            f.write_str(match access {
                Access::Read => " (read)",
                Access::Write => " (write)",
            })?;
        }
        if let Some(fetch) = self.fetch_address {
            write!(f, ", table address {fetch:#x}")?;
        }
        if let Some(substream) = self.substream {
            write!(f, ", substream {substream:#x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
