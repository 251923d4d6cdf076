//! The SMMUv3 values against the bit positions of IHI 0070 (and what QEMU 10's model reads).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::*;
use crate::testing::Rng;

/// SMMU_IDR0 of QEMU virt's SMMUv3 in nested mode: S2P, S1P, TTF AArch64, COHACC, ASID16,
/// VMID16, TTENDIAN little, STALL_MODEL 1, TERM_MODEL, ST_LEVEL 2-level.
const QEMU_IDR0: u32 =
    1 | 1 << 1 | 0b10 << 2 | 1 << 4 | 1 << 12 | 1 << 18 | 0b10 << 21 | 1 << 24 | 1 << 26 | 1 << 27;
/// SIDSIZE 16, EVENTQS 19, CMDQS 19.
const QEMU_IDR1: u32 = 16 | 19 << 16 | 19 << 21;
/// OAS 44 bits, 4K/16K/64K granules.
const QEMU_IDR5: u32 = 4 | 0b111 << 4;

fn qemu() -> Features {
    Features::decode(QEMU_IDR0, QEMU_IDR1, QEMU_IDR5)
}

/// Bits `high..=low` of `value`.
fn field(value: u64, high: u32, low: u32) -> u64 {
    (value >> low) & ((1u64 << (high - low + 1)) - 1)
}

#[test]
fn decodes_qemus_id_registers() {
    let f = qemu();
    assert!(f.stage1 && f.stage2 && f.aarch64_tables && f.coherent && f.vmid16);
    assert!(!f.hyp, "no TLBI_EL2_* on QEMU's model");
    assert!(f.little_endian_tables && f.two_level_stream_table && f.granule_4k);
    assert!(!f.preset);
    assert_eq!(f.stream_id_bits, 16);
    assert_eq!((f.command_queue_log2, f.event_queue_log2), (19, 19));
    assert_eq!(f.output_bits(), Some(44));
    assert_eq!(f.check(0x1_4000_0000), Ok(()));
    assert_eq!(f.vmid_limit(), 1 << 16);
    assert_eq!(f.command_queue_log2(), COMMAND_QUEUE_LOG2);
    assert_eq!(f.event_queue_log2(), EVENT_QUEUE_LOG2);
}

// One test per Unsupported variant.

fn without(idr0_clear: u32, idr1_set: u32, idr5: u32) -> Features {
    Features::decode(QEMU_IDR0 & !idr0_clear, QEMU_IDR1 | idr1_set, idr5)
}

#[test]
fn no_stage2() {
    assert_eq!(
        without(1, 0, QEMU_IDR5).check(0),
        Err(Unsupported::NoStage2)
    );
}

#[test]
fn no_aarch64_tables() {
    let f = Features::decode((QEMU_IDR0 & !(0b11 << 2)) | 0b01 << 2, QEMU_IDR1, QEMU_IDR5);
    assert_eq!(f.check(0), Err(Unsupported::NoAArch64Tables));
    // Both formats (0b11) will do.
    let f = Features::decode(QEMU_IDR0 | 0b11 << 2, QEMU_IDR1, QEMU_IDR5);
    assert_eq!(f.check(0), Ok(()));
}

#[test]
fn no_4k_granule() {
    assert_eq!(
        without(0, 0, 4 | 0b110 << 4).check(0),
        Err(Unsupported::No4KGranule)
    );
}

#[test]
fn big_endian_tables() {
    let f = Features::decode(QEMU_IDR0 | 0b11 << 21, QEMU_IDR1, QEMU_IDR5);
    assert_eq!(f.check(0), Err(Unsupported::BigEndianTables));
    let mixed = Features::decode(QEMU_IDR0 & !(0b11 << 21), QEMU_IDR1, QEMU_IDR5);
    assert_eq!(mixed.check(0), Ok(()));
}

#[test]
fn not_coherent() {
    assert_eq!(
        without(1 << 4, 0, QEMU_IDR5).check(0),
        Err(Unsupported::NotCoherent)
    );
}

#[test]
fn preset_tables() {
    for bit in [28, 29, 30] {
        assert_eq!(
            without(0, 1 << bit, QEMU_IDR5).check(0),
            Err(Unsupported::PresetTables)
        );
    }
}

#[test]
fn unknown_output_size() {
    assert_eq!(
        without(0, 0, 7 | 1 << 4).check(0),
        Err(Unsupported::UnknownOutputSize)
    );
}

#[test]
fn output_too_small() {
    assert_eq!(
        qemu().check((1 << 44) + 1),
        Err(Unsupported::OutputTooSmall { bits: 44 })
    );
    assert_eq!(qemu().check(1 << 44), Ok(()));
}

#[test]
fn too_many_streams() {
    let f = Features::decode(QEMU_IDR0, (QEMU_IDR1 & !0x3f) | 8, QEMU_IDR5);
    assert_eq!(
        StreamTableSize::covering(0x100, &f),
        Err(Unsupported::TooManyStreams {
            wanted_bits: 9,
            bits: 8
        })
    );
    assert_eq!(StreamTableSize::covering(0xff, &f).map(|s| s.log2()), Ok(8));
}

#[test]
fn no_queues() {
    let f = Features::decode(QEMU_IDR0, 16 | 19 << 21, QEMU_IDR5);
    assert_eq!(f.check(0), Err(Unsupported::NoQueues));
}

#[test]
fn every_unsupported_reason_reads_differently() {
    let all = [
        Unsupported::NoStage2,
        Unsupported::NoAArch64Tables,
        Unsupported::No4KGranule,
        Unsupported::BigEndianTables,
        Unsupported::NotCoherent,
        Unsupported::PresetTables,
        Unsupported::UnknownOutputSize,
        Unsupported::OutputTooSmall { bits: 40 },
        Unsupported::TooManyStreams {
            wanted_bits: 17,
            bits: 16,
        },
        Unsupported::NoQueues,
    ];
    let texts: Vec<String> = all.iter().map(|u| format!("{u}")).collect();
    for (i, t) in texts.iter().enumerate() {
        assert!(!t.is_empty() && texts[..i].iter().all(|o| o != t), "{t}");
    }
}

#[test]
fn stream_table_covers_the_highest_stream_only() {
    let f = qemu();
    // Bus 0 only: 256 entries, 16 KiB, not 2^16 entries.
    let bus0 = StreamTableSize::covering(0xff, &f).unwrap();
    assert_eq!((bus0.log2(), bus0.entries(), bus0.bytes()), (8, 256, 16384));
    assert!(bus0.covers(0xff) && !bus0.covers(0x100));
    assert_eq!(bus0.offset(0x10), Some(0x400));
    assert_eq!(bus0.offset(0x100), None);
    assert_eq!(StreamTableSize::covering(0x1ff, &f).unwrap().log2(), 9);
    assert_eq!(StreamTableSize::covering(0x200, &f).unwrap().log2(), 10);
    assert_eq!(StreamTableSize::covering(0, &f).unwrap().entries(), 1);
    assert_eq!(StreamTableSize::covering(0xffff, &f).unwrap().log2(), 16);
}

#[test]
fn memory_layout_aligns_the_table_and_gives_each_queue_a_page() {
    let f = qemu();
    let layout = MemoryLayout::new(StreamTableSize::covering(0xff, &f).unwrap(), &f);
    assert_eq!(layout.table, (0, 0x4000));
    assert_eq!(layout.command_queue, (0x4000, 0x1000));
    assert_eq!(layout.event_queue, (0x5000, 0x1000));
    assert_eq!((layout.bytes, layout.align), (0x6000, 0x4000));
    // A tiny table still takes a whole page; tiny queues (IDR1 says so) too.
    let small = Features::decode(QEMU_IDR0, 16 | 2 << 16 | 3 << 21, QEMU_IDR5);
    let layout = MemoryLayout::new(StreamTableSize::covering(3, &small).unwrap(), &small);
    assert_eq!(layout.table, (0, 0x1000));
    assert_eq!(layout.command_queue, (0x1000, 8 * 16));
    assert_eq!(layout.event_queue, (0x2000, 4 * 32));
    assert_eq!((layout.bytes, layout.align), (0x3000, 0x1000));
}

#[test]
fn register_values() {
    let table = StreamTableSize::covering(0xff, &qemu()).unwrap();
    assert_eq!(stream_table_base(0x4000_4000), 1 << 62 | 0x4000_4000);
    assert_eq!(stream_table_config(table), 8, "linear, LOG2SIZE 8");
    assert_eq!(queue_base(0x4000_8000, 8), 1 << 62 | 0x4000_8000 | 8);
    assert_eq!(
        cr1(),
        0b11_01_01_11_01_01,
        "WB, inner shareable tables and queues"
    );
    assert_eq!(cr2(), 0b110, "PTM and RECINVSID");
    assert_eq!(gbpa_abort(), 1 << 31 | 1 << 20);
    assert!(gbpa_updated(1 << 20) && !gbpa_updated(1 << 31 | 1 << 20));
    assert_eq!(irq_ctrl(), 0b101);
    assert_eq!(
        (cr0::command_queue(), cr0::queues(), cr0::enabled()),
        (0b1000, 0b1100, 0b1101)
    );
}

#[test]
fn abort_and_bypass_entries() {
    assert_eq!(StreamTableEntry::ABORT.0, [1, 0, 0, 0, 0, 0, 0, 0]);
    let bypass = StreamTableEntry::BYPASS.0;
    assert_eq!(field(bypass[0], 3, 1), 0b100, "Config bypass");
    assert_eq!(bypass[0] & 1, 1, "valid");
    assert_eq!(field(bypass[1], 45, 44), 0b01, "SHCFG incoming");
}

#[test]
fn stage2_entry_matches_the_cpus_vtcr() {
    let ste = StreamTableEntry::stage2(3, 0x4123_4000, 5, &qemu())
        .unwrap()
        .0;
    assert_eq!(ste[0], 1 | 0b110 << 1, "valid, Config stage 2 only");
    assert_eq!(field(ste[1], 45, 44), 0b01, "SHCFG incoming");
    let w = ste[2];
    assert_eq!(field(w, 15, 0), 3, "S2VMID");
    assert_eq!(field(w, 37, 32), 25, "S2T0SZ = VTCR_EL2.T0SZ");
    assert_eq!(field(w, 39, 38), 1, "S2SL0: start at level 1");
    assert_eq!(field(w, 41, 40), 1, "S2IR0 write-back");
    assert_eq!(field(w, 43, 42), 1, "S2OR0 write-back");
    assert_eq!(field(w, 45, 44), 3, "S2SH0 inner shareable");
    assert_eq!(field(w, 47, 46), 0, "S2TG 4 KiB");
    assert_eq!(
        field(w, 50, 48),
        4,
        "S2PS: the CPU's 48 bits capped to the OAS (44)"
    );
    assert_eq!(field(w, 51, 51), 1, "S2AA64 (0 can abort QEMU)");
    assert_eq!(field(w, 52, 52), 0, "S2ENDI little endian");
    assert_eq!(field(w, 53, 53), 0, "S2AFFD: the tables set AF");
    assert_eq!(field(w, 57, 57), 0, "S2S: never stall");
    assert_eq!(field(w, 58, 58), 1, "S2R: record faults");
    assert_eq!(ste[3], 0x4123_4000, "S2TTB");
    assert_eq!(&ste[4..], &[0; 4]);
    let bytes = StreamTableEntry(ste).to_bytes();
    assert_eq!(bytes[0], 0b1101);
    assert_eq!(&bytes[24..28], &0x4123_4000u32.to_le_bytes());
    // A CPU with a smaller PA size keeps its own.
    let small = StreamTableEntry::stage2(3, 0x4123_4000, 2, &qemu())
        .unwrap()
        .0;
    assert_eq!(field(small[2], 50, 48), 2);
}

#[test]
fn stage2_entry_errors() {
    let eight_bit_vmids = Features::decode(QEMU_IDR0 & !(1 << 18), QEMU_IDR1, QEMU_IDR5);
    assert_eq!(
        StreamTableEntry::stage2(256, 0x4000_0000, 5, &eight_bit_vmids),
        Err(EntryError::VmidTooLarge)
    );
    assert!(StreamTableEntry::stage2(255, 0x4000_0000, 5, &eight_bit_vmids).is_ok());
    assert_eq!(
        StreamTableEntry::stage2(1, 0x4000_0800, 5, &qemu()),
        Err(EntryError::BadRoot)
    );
    assert_eq!(
        StreamTableEntry::stage2(1, 1 << 44, 5, &qemu()),
        Err(EntryError::BadRoot)
    );
    let unknown = Features::decode(QEMU_IDR0, QEMU_IDR1, 7 | 1 << 4);
    assert_eq!(
        StreamTableEntry::stage2(1, 0x4000_0000, 7, &unknown),
        Err(EntryError::BadPhysicalSize)
    );
}

#[test]
fn command_encodings() {
    assert_eq!(
        Command::ConfigInvalidateStream(0x1234).encode(),
        [0x1234 << 32 | 0x03, 1]
    );
    assert_eq!(Command::ConfigInvalidateAll.encode(), [0x04, 31]);
    assert_eq!(Command::InvalidateVmid(7).encode(), [7 << 32 | 0x28, 0]);
    assert_eq!(Command::InvalidateAllGuests.encode(), [0x30, 0]);
    assert_eq!(Command::InvalidateEl2.encode(), [0x20, 0]);
    assert_eq!(Command::Sync.encode(), [0x46, 0], "CS = SIG_NONE");
    let bytes = Command::InvalidateVmid(0x0102).to_bytes();
    assert_eq!(bytes[0], 0x28);
    assert_eq!(&bytes[4..6], &[0x02, 0x01]);
    assert_eq!(&bytes[8..], &[0; 8]);
}

#[test]
fn command_errors_from_the_consumer_register() {
    assert_eq!(CommandError::from_consumer(0x0000_0042), None);
    assert_eq!(
        CommandError::from_consumer(1 << 24 | 5),
        Some(CommandError::Illegal)
    );
    assert_eq!(
        CommandError::from_consumer(2 << 24),
        Some(CommandError::Abort)
    );
    assert_eq!(
        CommandError::from_consumer(3 << 24),
        Some(CommandError::AtcInvalidationSync)
    );
    assert_eq!(
        CommandError::from_consumer(0x7f << 24 | 1 << 31),
        Some(CommandError::Other(0x7f))
    );
    assert_eq!(format!("{}", CommandError::Illegal), "illegal command");
}

#[test]
fn global_errors() {
    let none = GlobalErrors::active(0b101, 0b101);
    assert!(none.is_empty());
    assert_eq!(format!("{none}"), "none");
    let errors = GlobalErrors::active(0b101, 0b000);
    assert!(errors.command_queue() && errors.event_queue_aborted());
    assert_eq!(
        format!("{errors}"),
        "command queue error, event queue full or unwritable, records lost"
    );
    // Toggled back by the SMMU while GERRORN still has the old value: active too.
    assert!(GlobalErrors::active(0, 1).command_queue());
    assert_eq!(
        format!("{}", GlobalErrors(1 << 8 | 1 << 12)),
        "service failure mode, GERROR bits 0x1000"
    );
}

#[test]
fn queue_index_wraps() {
    let start = QueueIndex::new(2);
    assert_eq!(start.capacity(), 4);
    let mut p = start;
    for _ in 0..3 {
        p = p.next();
    }
    assert_eq!((p.index(), p.wrap()), (3, false));
    assert!(!p.is_full(start) && p.used_since(start) == 3);
    p = p.next();
    assert_eq!((p.index(), p.wrap(), p.register()), (0, true, 0b100));
    assert!(p.is_full(start) && !p.is_empty(start));
    assert_eq!(p.used_since(start), 4);
    let c = QueueIndex::from_register(2, 0b100 | 1 << 31 | 0x7f << 24);
    assert!(p.is_empty(c), "flags outside the index are ignored");
    // Eight steps come back to the start.
    let mut q = p;
    for _ in 0..4 {
        q = q.next();
    }
    assert_eq!(q, start);
    assert_eq!(QueueIndex::new(40).capacity(), 1 << 19, "log2 capped at 19");
}

#[test]
fn queue_index_matches_a_counting_model() {
    let mut rng = Rng(0x5111_0001);
    for _ in 0..200 {
        let log2 = rng.index(6) as u8;
        let capacity = 1u64 << log2;
        let (mut produced, mut consumed) = (0u64, 0u64);
        let (mut p, mut c) = (QueueIndex::new(log2), QueueIndex::new(log2));
        for _ in 0..100 {
            if rng.percent(55) && produced - consumed < capacity {
                produced += 1;
                p = p.next();
            } else if produced > consumed {
                consumed += 1;
                c = c.next();
            }
            assert_eq!(u64::from(p.used_since(c)), produced - consumed);
            assert_eq!(p.is_empty(c), produced == consumed);
            assert_eq!(p.is_full(c), produced - consumed == capacity);
            assert_eq!(u64::from(p.index()), produced % capacity);
            assert_eq!(p.wrap(), (produced / capacity) % 2 == 1);
        }
    }
}

/// An event record as QEMU's model writes it (`smmuv3_record_event`).
fn record(kind: u8, stream: u32, address: u64, read: bool, addr2: u64) -> [u64; 4] {
    [
        u64::from(kind) | u64::from(stream) << 32,
        u64::from(read) << 35 | 1 << 39 | 1 << 40,
        address,
        addr2,
    ]
}

#[test]
fn translation_fault_reads_well() {
    let event = Event::decode(record(0x10, 0x10, 0x8_0000_1000, false, 0x8_0000_1000));
    assert_eq!(event.kind, EventKind::Translation);
    assert_eq!(event.stream, 0x10);
    assert_eq!(event.address, Some(0x8_0000_1000));
    assert_eq!(event.access, Some(Access::Write));
    assert!(event.stage2);
    assert_eq!(
        format!("{event}"),
        "translation fault at IOVA 0x800001000 (write)"
    );
    let read = Event::decode(record(0x13, 0x108, 0x4000_0000, true, 0));
    assert_eq!(
        format!("{read}"),
        "permission fault at IOVA 0x40000000 (read)"
    );
}

#[test]
fn other_events_read_well() {
    let bad = Event::decode([0x04 | 0x20 << 32, 0, 0, 0]);
    assert_eq!(bad.stream, 0x20);
    assert_eq!((bad.address, bad.access), (None, None));
    assert_eq!(format!("{bad}"), "invalid stream table entry");
    let walk = Event::decode(record(0x0b, 1, 0x1000, true, 0x4000_2008));
    assert_eq!(
        format!("{walk}"),
        "external abort walking the translation tables at IOVA 0x1000 (read), table address 0x40002008"
    );
    let unknown = Event::decode([0x7e | 1 << 11 | 0x5 << 12, 0, 0, 0]);
    assert_eq!(unknown.kind, EventKind::Other(0x7e));
    assert_eq!(format!("{unknown}"), "event type 0x7e, substream 0x5");
    let bytes: [u8; 32] = core::array::from_fn(|i| if i == 0 { 0x02 } else { 0 });
    assert_eq!(Event::from_bytes(&bytes).kind, EventKind::BadStreamId);
}

#[test]
fn every_event_code_has_its_own_name() {
    let mut seen: Vec<String> = Vec::new();
    for code in 0..=0xffu8 {
        let event = Event::decode([u64::from(code), 0, 0, 0]);
        let text = format!("{event}");
        assert!(!text.is_empty());
        if !matches!(event.kind, EventKind::Other(_)) {
            assert!(!seen.contains(&text), "{code:#x}: {text}");
            seen.push(text);
        }
    }
    assert_eq!(seen.len(), 18);
}

#[test]
fn random_records_decode_and_print() {
    let mut rng = Rng(0xe7e7_0001);
    for _ in 0..2000 {
        let words = [rng.next(), rng.next(), rng.next(), rng.next()];
        let event = Event::decode(words);
        let _ = format!("{event}");
        assert_eq!(event.stream, (words[0] >> 32) as u32);
        assert_eq!(event.code, words[0] as u8);
    }
}
