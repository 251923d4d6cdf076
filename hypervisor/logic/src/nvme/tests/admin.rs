//! Admin commands through the admin queue.

use super::*;
use crate::nvme::admin::SmartCounters;
use crate::nvme::spec::{SmartLog, feature};

const BUF: u64 = DATA + 0x4_0000;

fn enabled() -> Slice {
    let mut s = Slice::with(config());
    s.enable();
    s.enable_msix();
    s
}

fn identify(s: &mut Slice, cns: u32, nsid: u32) -> Status {
    s.admin_status(SubmissionEntry {
        nsid: nsid.into(),
        prp1: BUF.into(),
        cdw10: cns.into(),
        ..cmd(op::IDENTIFY)
    })
}

fn u32_at(s: &mut Slice, ipa: u64) -> u32 {
    u32::from_le_bytes(s.node.ram_at(ipa, 4).try_into().unwrap())
}

fn u64_at(s: &mut Slice, ipa: u64) -> u64 {
    u64::from_le_bytes(s.node.ram_at(ipa, 8).try_into().unwrap())
}

fn set_feature(s: &mut Slice, fid: u8, value: u32) -> CompletionEntry {
    s.admin(SubmissionEntry {
        cdw10: u32::from(fid).into(),
        cdw11: value.into(),
        ..cmd(op::SET_FEATURES)
    })
}

fn get_feature(s: &mut Slice, fid: u8, select: u32, arg: u32) -> CompletionEntry {
    s.admin(SubmissionEntry {
        cdw10: (select << 8 | u32::from(fid)).into(),
        cdw11: arg.into(),
        ..cmd(op::GET_FEATURES)
    })
}

#[test]
fn registers_after_reset() {
    let s = Slice::with(config());
    let cap = s.ctrl.mmio_read(0, 8);
    assert_eq!(cap & 0xffff, 7, "MQES = depth - 1");
    assert_eq!(cap >> 16 & 1, 1, "CQR");
    assert_eq!(cap >> 32 & 0xf, 0, "DSTRD");
    assert_eq!(cap >> 37 & 0xff, 1, "NVM command set");
    assert_eq!(cap >> 48 & 0xff, 0, "MPSMIN = MPSMAX = 4 KiB");
    assert_ne!(cap >> 24 & 0xff, 0, "TO");
    assert_eq!(s.read(0x04), (cap >> 32) as u32, "CAP upper half");
    assert_eq!(s.read(0x08), 0x0001_0400, "VS 1.4");
    assert_eq!(s.read(0x14), 0);
    assert_eq!(s.csts(), 0);
    assert_eq!(s.ctrl.mmio_read(0x08, 2), 0x0400, "16-bit read");
    assert_eq!(s.ctrl.mmio_read(0x0a, 1), 0x01, "8-bit read");
    assert_eq!(s.ctrl.mmio_read(0x09, 2), 0, "unaligned");
    assert_eq!(s.ctrl.mmio_read(0x0f00, 4), 0, "reserved");
    assert_eq!(s.ctrl.mmio_read(0x5000, 4), 0, "past BAR0");
}

#[test]
fn read_only_and_partial_writes_are_ignored() {
    let mut s = enabled();
    let (cap, vs, csts) = (s.ctrl.mmio_read(0, 8), s.read(0x08), s.csts());
    s.write(0x00, 0xffff_ffff);
    s.write(0x04, 0xffff_ffff);
    s.write(0x08, 0);
    s.write(0x1c, 0xffff_ffff);
    s.write(0x20, 0x4e56_4d65); // NSSR: not supported
    s.ctrl.mmio_write(&mut s.node, 0x14, 1, 0);
    s.ctrl.mmio_write(&mut s.node, 0x14, 2, 0);
    s.ctrl.mmio_write(&mut s.node, 0x16, 4, 0);
    assert_eq!(s.ctrl.mmio_read(0, 8), cap);
    assert_eq!((s.read(0x08), s.csts()), (vs, csts));
    assert_eq!(s.read(0x14) & 1, 1, "still enabled");
}

#[test]
fn admin_queue_registers_and_64_bit_access() {
    let mut s = Slice::with(config());
    s.ctrl.mmio_write(&mut s.node, 0x28, 8, 0x1_2345_6fff);
    assert_eq!(s.ctrl.mmio_read(0x28, 8), 0x1_2345_6000, "ASQ page aligned");
    s.write(0x24, 0xffff_ffff);
    assert_eq!(s.read(0x24), 0x0fff_0fff);
    s.write(0x0c, 0b101);
    s.write(0x10, 0b001);
    assert_eq!(s.read(0x0c), 0b100, "INTMS/INTMC");
    assert_eq!(s.read(0x10), 0b100);
}

#[test]
fn identify_controller_lands_in_guest_memory() {
    let mut s = enabled();
    assert_eq!(identify(&mut s, 1, 0), Status::SUCCESS);
    let sn = s.node.ram_at(BUF + 4, 20).to_vec();
    assert_eq!(&sn, b"SLICE-web-0         ");
    assert_eq!(s.node.ram_at(BUF + 77, 1)[0], 7, "MDTS");
    assert_eq!(u32_at(&mut s, BUF + 516), 1, "NN");
    assert!(s.node.submitted.is_empty(), "nothing reached the hardware");
}

#[test]
fn identify_namespace_list_and_descriptors() {
    let mut s = enabled();
    assert_eq!(identify(&mut s, 0, 1), Status::SUCCESS);
    assert_eq!(u64_at(&mut s, BUF), 0x800, "NSZE = the share");
    assert_eq!(u32_at(&mut s, BUF + 128), 9 << 16);
    for nsid in [0, 2, 7, 0xffff_ffff] {
        assert_eq!(
            identify(&mut s, 0, nsid),
            Status::INVALID_NAMESPACE,
            "{nsid}"
        );
    }
    assert_eq!(identify(&mut s, 2, 0), Status::SUCCESS);
    assert_eq!(u32_at(&mut s, BUF), 1);
    assert_eq!(u32_at(&mut s, BUF + 4), 0);
    assert_eq!(identify(&mut s, 2, 1), Status::SUCCESS);
    assert_eq!(u32_at(&mut s, BUF), 0, "nothing above NSID 1");
    assert_eq!(identify(&mut s, 2, 0xffff_fffe), Status::INVALID_NAMESPACE);
    assert_eq!(identify(&mut s, 3, 1), Status::SUCCESS);
    assert_eq!(s.node.ram_at(BUF, 2), &[1, 8], "EUI-64 descriptor");
    assert_eq!(identify(&mut s, 3, 2), Status::INVALID_NAMESPACE);
    for cns in [4, 5, 6, 8, 0x10, 0x11, 0x12, 0x13, 0x15, 0xff] {
        assert_eq!(
            identify(&mut s, cns, 1),
            Status::INVALID_FIELD,
            "CNS {cns:#x}"
        );
    }
}

#[test]
fn identify_data_pointer_checks() {
    let mut s = enabled();
    let status = |s: &mut Slice, prp1: u64, prp2: u64| {
        s.admin_status(SubmissionEntry {
            prp1: prp1.into(),
            prp2: prp2.into(),
            cdw10: 1.into(),
            ..cmd(op::IDENTIFY)
        })
    };
    assert_eq!(status(&mut s, 0x1000, 0), Status::DATA_TRANSFER_ERROR);
    assert_eq!(
        status(&mut s, BUF + 0x800, 0x2000_0000),
        Status::DATA_TRANSFER_ERROR
    );
    assert_eq!(
        status(&mut s, BUF + 0x800, BUF + 0x2010),
        Status::PRP_OFFSET_INVALID
    );
    assert_eq!(status(&mut s, BUF + 2, 0), Status::PRP_OFFSET_INVALID);
    assert_eq!(
        status(&mut s, RAM_IPA + RAM_SIZE - 0x800, 0),
        Status::DATA_TRANSFER_ERROR
    );
    assert_eq!(status(&mut s, BUF + 0x800, BUF + 0x2000), Status::SUCCESS);
    assert_eq!(
        s.node.ram_at(BUF + 0x800 + 77, 1)[0],
        7,
        "MDTS in PRP1's page"
    );
    assert_eq!(
        s.node.ram_at(BUF + 0x2000, 2),
        2500u16.to_le_bytes(),
        "PSD0 in PRP2's page"
    );
    s.assert_clean();
}

#[test]
fn every_refused_admin_opcode() {
    let mut s = enabled();
    let implemented = [
        0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x0c, 0x18, 0x7c,
    ];
    let named_refusals = [
        op::FORMAT_NVM,
        op::SANITIZE,
        op::FIRMWARE_COMMIT,
        op::FIRMWARE_DOWNLOAD,
        op::NAMESPACE_MANAGEMENT,
        op::NAMESPACE_ATTACHMENT,
        op::VIRTUALIZATION_MANAGEMENT,
        op::SECURITY_SEND,
        op::SECURITY_RECEIVE,
        op::DEVICE_SELF_TEST,
        op::DIRECTIVE_SEND,
        op::DIRECTIVE_RECEIVE,
        op::NVME_MI_SEND,
        op::NVME_MI_RECEIVE,
        op::CAPACITY_MANAGEMENT,
        op::LOCKDOWN,
        op::GET_LBA_STATUS,
        op::VENDOR_SPECIFIC,
        0xff,
    ];
    for opcode in named_refusals {
        assert!(!implemented.contains(&opcode));
    }
    for opcode in (0..=255u8).filter(|o| !implemented.contains(o)) {
        let c = s.admin(SubmissionEntry {
            nsid: 1.into(),
            prp1: BUF.into(),
            cdw10: 0xffff_ffff.into(),
            ..cmd(opcode)
        });
        assert_eq!(status_of(&c), Status::INVALID_OPCODE, "{opcode:#x}");
    }
    assert!(s.node.submitted.is_empty());
    s.assert_clean();
}

#[test]
fn fused_and_sgl_admin_commands_are_refused() {
    let mut s = enabled();
    for flags in [0x01, 0x02, 0x40, 0x80] {
        let c = s.admin(SubmissionEntry {
            flags,
            prp1: BUF.into(),
            cdw10: 1.into(),
            ..cmd(op::IDENTIFY)
        });
        assert_eq!(status_of(&c), Status::INVALID_FIELD, "{flags:#x}");
    }
}

#[test]
fn abort_never_aborts_and_keep_alive_succeeds() {
    let mut s = enabled();
    let c = s.admin(SubmissionEntry {
        cdw10: (0x1234 << 16 | 1).into(),
        ..cmd(op::ABORT)
    });
    assert_eq!((status_of(&c), c.dw0.get() & 1), (Status::SUCCESS, 1));
    assert_eq!(s.admin_status(cmd(op::KEEP_ALIVE)), Status::SUCCESS);
}

#[test]
fn number_of_queues_is_clipped_to_the_slice() {
    let mut s = enabled();
    let c = set_feature(&mut s, feature::NUMBER_OF_QUEUES, 63 << 16 | 63);
    assert_eq!((status_of(&c), c.dw0.get()), (Status::SUCCESS, 1 << 16 | 1));
    let c = set_feature(&mut s, feature::NUMBER_OF_QUEUES, 0);
    assert_eq!(c.dw0.get(), 0, "one of each");
    let c = get_feature(&mut s, feature::NUMBER_OF_QUEUES, 0, 0);
    assert_eq!(c.dw0.get(), 0);
    let c = get_feature(&mut s, feature::NUMBER_OF_QUEUES, 1, 0);
    assert_eq!(c.dw0.get(), 1 << 16 | 1, "default: all the slice's queues");
    // Only queue 1 was granted.
    assert_eq!(s.create_cq(2, 4, 2), Status::INVALID_QUEUE_ID);
    s.create_pair(1, 4);
    assert_eq!(s.create_sq(2, 4, 1), Status::INVALID_QUEUE_ID);
    let c = set_feature(&mut s, feature::NUMBER_OF_QUEUES, 1 << 16 | 1);
    assert_eq!(
        status_of(&c),
        Status::COMMAND_SEQUENCE_ERROR,
        "queues exist"
    );
    let c = set_feature(&mut s, feature::NUMBER_OF_QUEUES, 0xffff);
    assert_eq!(status_of(&c), Status::INVALID_FIELD);
}

#[test]
fn features_store_and_return_values() {
    let mut s = enabled();
    for (fid, value) in [
        (feature::ARBITRATION, 0x0302_0103),
        (feature::POWER_MANAGEMENT, 0x40),
        (feature::ERROR_RECOVERY, 100),
        (feature::INTERRUPT_COALESCING, 0x0a08),
        (feature::WRITE_ATOMICITY, 1),
        (feature::ASYNC_EVENT_CONFIG, 0x1f),
        (feature::VOLATILE_WRITE_CACHE, 0),
    ] {
        assert_eq!(status_of(&set_feature(&mut s, fid, value)), Status::SUCCESS);
        let c = get_feature(&mut s, fid, 0, 0);
        assert_eq!(
            (status_of(&c), c.dw0.get()),
            (Status::SUCCESS, value),
            "{fid:#x}"
        );
        assert_eq!(
            get_feature(&mut s, fid, 3, 0).dw0.get(),
            0b100,
            "changeable"
        );
    }
    assert_eq!(
        get_feature(&mut s, feature::VOLATILE_WRITE_CACHE, 1, 0)
            .dw0
            .get(),
        1
    );
    assert_eq!(
        get_feature(&mut s, feature::ARBITRATION, 2, 0).dw0.get(),
        0,
        "saved = default"
    );
    // Temperature thresholds: over and under of the composite sensor.
    assert_eq!(
        get_feature(&mut s, feature::TEMPERATURE_THRESHOLD, 0, 0)
            .dw0
            .get(),
        343
    );
    set_feature(&mut s, feature::TEMPERATURE_THRESHOLD, 1 << 20 | 250);
    assert_eq!(
        get_feature(&mut s, feature::TEMPERATURE_THRESHOLD, 0, 1 << 20)
            .dw0
            .get(),
        250
    );
    assert_eq!(
        get_feature(&mut s, feature::TEMPERATURE_THRESHOLD, 0, 0)
            .dw0
            .get(),
        343
    );
    // Interrupt vector configuration per vector.
    set_feature(&mut s, feature::INTERRUPT_VECTOR_CONFIG, 1 << 16 | 2);
    assert_eq!(
        get_feature(&mut s, feature::INTERRUPT_VECTOR_CONFIG, 0, 2)
            .dw0
            .get(),
        1 << 16 | 2
    );
    assert_eq!(
        get_feature(&mut s, feature::INTERRUPT_VECTOR_CONFIG, 0, 1)
            .dw0
            .get(),
        1
    );
}

#[test]
fn feature_errors() {
    let mut s = enabled();
    let invalid = [
        (feature::POWER_MANAGEMENT, 1),
        (feature::TEMPERATURE_THRESHOLD, 1 << 16 | 300),
        (feature::TEMPERATURE_THRESHOLD, 2 << 20),
        (feature::ERROR_RECOVERY, 1 << 16),
        (feature::INTERRUPT_VECTOR_CONFIG, 3),
        (0x0c, 0),
        (0x0f, 0),
        (0x80, 0),
        (0xff, 0),
    ];
    for (fid, value) in invalid {
        let c = set_feature(&mut s, fid, value);
        assert_eq!(
            status_of(&c),
            Status::INVALID_FIELD,
            "set {fid:#x} {value:#x}"
        );
    }
    for (fid, arg) in [
        (feature::INTERRUPT_VECTOR_CONFIG, 3),
        (0x0c, 0),
        (feature::TEMPERATURE_THRESHOLD, 1 << 16),
    ] {
        let c = get_feature(&mut s, fid, 0, arg);
        assert_eq!(status_of(&c), Status::INVALID_FIELD, "get {fid:#x}");
    }
    assert_eq!(
        status_of(&get_feature(&mut s, 1, 4, 0)),
        Status::INVALID_FIELD,
        "SEL 4"
    );
    let save = s.admin(SubmissionEntry {
        cdw10: (1 << 31 | 1).into(),
        ..cmd(op::SET_FEATURES)
    });
    assert_eq!(status_of(&save), Status::FEATURE_NOT_SAVEABLE);
    // Without a volatile write cache there is no such feature.
    let mut config = config();
    config.volatile_write_cache = false;
    let mut s = Slice::with(config);
    s.enable();
    assert_eq!(
        status_of(&set_feature(&mut s, feature::VOLATILE_WRITE_CACHE, 1)),
        Status::INVALID_FIELD
    );
    assert_eq!(
        status_of(&get_feature(&mut s, feature::VOLATILE_WRITE_CACHE, 0, 0)),
        Status::INVALID_FIELD
    );
}

fn create(s: &mut Slice, opcode: u8, qid: u16, size: u32, cdw11: u32, base: u64) -> Status {
    s.admin_status(SubmissionEntry {
        prp1: base.into(),
        cdw10: ((size - 1) << 16 | u32::from(qid)).into(),
        cdw11: cdw11.into(),
        ..cmd(opcode)
    })
}

#[test]
fn create_cq_errors() {
    let mut s = enabled();
    let base = IO_QUEUES;
    let ok = 1 << 16 | 0b11;
    let cases = [
        (0, 4, ok, base, Status::INVALID_QUEUE_ID),
        (3, 4, ok, base, Status::INVALID_QUEUE_ID),
        (0xffff, 4, ok, base, Status::INVALID_QUEUE_ID),
        (1, 1, ok, base, Status::INVALID_QUEUE_SIZE),
        (1, 9, ok, base, Status::INVALID_QUEUE_SIZE),
        (1, 65536, ok, base, Status::INVALID_QUEUE_SIZE),
        (1, 4, 1 << 16 | 0b10, base, Status::INVALID_FIELD),
        (1, 4, 3 << 16 | 0b11, base, Status::INVALID_INTERRUPT_VECTOR),
        (1, 4, ok, base + 0x800, Status::PRP_OFFSET_INVALID),
        (1, 4, ok, 0x2000_0000, Status::INVALID_FIELD),
        (1, 8, ok, RAM_IPA + RAM_SIZE, Status::INVALID_FIELD),
        (1, 4, ok, !0xfff, Status::INVALID_FIELD),
    ];
    for (qid, size, cdw11, base, status) in cases {
        assert_eq!(
            create(&mut s, op::CREATE_IO_CQ, qid, size, cdw11, base),
            status,
            "qid {qid} size {size} cdw11 {cdw11:#x} base {base:#x}"
        );
    }
    assert_eq!(
        create(&mut s, op::CREATE_IO_CQ, 1, 4, ok, base),
        Status::SUCCESS
    );
    assert_eq!(
        create(&mut s, op::CREATE_IO_CQ, 1, 4, ok, base),
        Status::INVALID_QUEUE_ID,
        "exists"
    );
    // A vector the function does not have is fine without interrupts.
    assert_eq!(
        create(&mut s, op::CREATE_IO_CQ, 2, 8, 9 << 16 | 1, base + 0x1000),
        Status::SUCCESS
    );
}

#[test]
fn create_sq_errors() {
    let mut s = enabled();
    assert_eq!(s.create_cq(1, 4, 1), Status::SUCCESS);
    let base = IO_QUEUES;
    let ok = 1 << 16 | 1;
    let cases = [
        (0, 4, ok, base, Status::INVALID_QUEUE_ID),
        (3, 4, ok, base, Status::INVALID_QUEUE_ID),
        (1, 1, ok, base, Status::INVALID_QUEUE_SIZE),
        (1, 9, ok, base, Status::INVALID_QUEUE_SIZE),
        (1, 4, 1, base, Status::COMPLETION_QUEUE_INVALID),
        (1, 4, 2 << 16 | 1, base, Status::COMPLETION_QUEUE_INVALID),
        (1, 4, 300 << 16 | 1, base, Status::COMPLETION_QUEUE_INVALID),
        (1, 4, 1 << 16, base, Status::INVALID_FIELD),
        (1, 4, ok, base + 0x40, Status::PRP_OFFSET_INVALID),
        (1, 4, ok, 0x3fff_f000, Status::INVALID_FIELD),
        (1, 8, ok, RAM_IPA + RAM_SIZE, Status::INVALID_FIELD),
    ];
    for (qid, size, cdw11, base, status) in cases {
        assert_eq!(
            create(&mut s, op::CREATE_IO_SQ, qid, size, cdw11, base),
            status,
            "qid {qid} size {size} cdw11 {cdw11:#x} base {base:#x}"
        );
    }
    assert_eq!(
        create(&mut s, op::CREATE_IO_SQ, 1, 4, ok, base),
        Status::SUCCESS
    );
    assert_eq!(
        create(&mut s, op::CREATE_IO_SQ, 1, 4, ok, base),
        Status::INVALID_QUEUE_ID
    );
    assert!(s.node.submitted.is_empty());
}

#[test]
fn queue_entry_sizes_must_be_configured() {
    let mut s = Slice::with(config());
    // Enabled without IOSQES/IOCQES (allowed), then queues cannot be created.
    s.write(0x24, 15 << 16 | 15);
    s.write(0x28, ADMIN_SQ as u32);
    s.write(0x30, ADMIN_CQ as u32);
    s.write(0x14, 1);
    s.fresh_admin_queues();
    assert_eq!(s.create_cq(1, 4, 1), Status::INVALID_FIELD);
    s.write(0x14, 0x0046_0001);
    assert_eq!(s.create_cq(1, 4, 1), Status::SUCCESS);
}

#[test]
fn delete_queue_errors() {
    let mut s = enabled();
    s.create_pair(1, 4);
    for qid in [0, 2, 3, 0xffff] {
        assert_eq!(
            status_of(&s.delete_sq(qid)),
            Status::INVALID_QUEUE_ID,
            "SQ {qid}"
        );
        assert_eq!(s.delete_cq(qid), Status::INVALID_QUEUE_ID, "CQ {qid}");
    }
    assert_eq!(s.delete_cq(1), Status::INVALID_QUEUE_DELETION);
    assert_eq!(status_of(&s.delete_sq(1)), Status::SUCCESS);
    assert_eq!(status_of(&s.delete_sq(1)), Status::INVALID_QUEUE_ID);
    assert_eq!(s.delete_cq(1), Status::SUCCESS);
    s.create_pair(1, 4);
}

fn log_page(s: &mut Slice, lid: u8, dwords: u32, offset: u64, nsid: u32) -> Status {
    s.admin_status(SubmissionEntry {
        nsid: nsid.into(),
        prp1: BUF.into(),
        cdw10: ((dwords - 1) << 16 | u32::from(lid)).into(),
        cdw12: (offset as u32).into(),
        cdw13: ((offset >> 32) as u32).into(),
        ..cmd(op::GET_LOG_PAGE)
    })
}

#[test]
fn smart_log_counts_only_the_slices_own_io() {
    let mut s = Slice::ready();
    for i in 0..3 {
        s.push(1, rw(io_op::WRITE, i * 8, 8, DATA, 0));
    }
    s.ring(1);
    s.node.run(&mut s.ctrl);
    assert_eq!(s.drain(1).len(), 3);
    s.push(1, rw(io_op::READ, 0, 1, DATA, 0));
    s.push(1, rw(io_op::READ, 0x800, 1, DATA, 0)); // refused: not counted
    s.ring(1);
    s.node.run(&mut s.ctrl);
    assert_eq!(s.drain(1).len(), 2);
    s.node.ram_at(BUF, 512).fill(0xff);
    assert_eq!(log_page(&mut s, 2, 128, 0, 0xffff_ffff), Status::SUCCESS);
    let log = SmartLog::read_from_bytes(s.node.ram_at(BUF, 512)).unwrap();
    assert_eq!(
        log.data_units_read.get(),
        1,
        "1 block rounds up to one unit"
    );
    assert_eq!(log.data_units_written.get(), 1, "24 blocks");
    assert_eq!(log.host_read_commands.get(), 1);
    assert_eq!(log.host_write_commands.get(), 3);
    assert_eq!(log.available_spare, 100);
    assert_ne!(log.temperature.get(), 0);
    for nsid in [0, 1] {
        assert_eq!(log_page(&mut s, 2, 128, 0, nsid), Status::SUCCESS);
    }
    assert_eq!(log_page(&mut s, 2, 128, 0, 2), Status::INVALID_FIELD);
}

#[test]
fn a_new_run_starts_its_smart_counters_from_zero() {
    // The run's end (`restart`) clears them: the next tenant must not read the last one's
    // I/O counts (found in review). A guest's own controller reset keeps them.
    let mut s = Slice::ready();
    s.push(1, rw(io_op::WRITE, 0, 8, DATA, 0));
    s.ring(1);
    s.node.run(&mut s.ctrl);
    assert_eq!(s.drain(1).len(), 1);
    s.write(0x14, 0);
    s.node.run(&mut s.ctrl);
    assert_ne!(
        s.ctrl.smart,
        SmartCounters::default(),
        "kept over a controller reset"
    );
    s.ctrl.restart(&mut s.node);
    assert_eq!(s.ctrl.smart, SmartCounters::default());
}

#[test]
fn log_pages_and_their_errors() {
    let mut s = enabled();
    s.node.ram_at(BUF, 1024).fill(0xff);
    assert_eq!(log_page(&mut s, 1, 16, 0, 0), Status::SUCCESS);
    assert!(
        s.node.ram_at(BUF, 64).iter().all(|&b| b == 0),
        "no errors logged"
    );
    assert_eq!(
        s.node.ram_at(BUF + 64, 1)[0],
        0xff,
        "one 64-byte entry only"
    );
    assert_eq!(log_page(&mut s, 3, 128, 0, 0), Status::SUCCESS);
    assert_eq!(s.node.ram_at(BUF, 1)[0], 1, "slot 1 active");
    assert_eq!(s.node.ram_at(BUF + 8, 8), b"0.1     ");
    // A part of a log page, at an offset.
    s.node.ram_at(BUF, 1024).fill(0xff);
    assert_eq!(log_page(&mut s, 3, 2, 8, 0), Status::SUCCESS);
    assert_eq!(s.node.ram_at(BUF, 8), b"0.1     ");
    assert_eq!(s.node.ram_at(BUF + 8, 1)[0], 0xff);
    for lid in [0x00, 0x04, 0x05, 0x06, 0x0d, 0x70, 0x80, 0xc0, 0xff] {
        assert_eq!(
            log_page(&mut s, lid, 16, 0, 0),
            Status::INVALID_LOG_PAGE,
            "{lid:#x}"
        );
    }
    assert_eq!(
        log_page(&mut s, 2, 16, 2, 0),
        Status::INVALID_FIELD,
        "offset not dword aligned"
    );
    assert_eq!(
        log_page(&mut s, 2, 16, 516, 0),
        Status::INVALID_FIELD,
        "offset past the log"
    );
    assert_eq!(log_page(&mut s, 2, 16, 1 << 40, 0), Status::INVALID_FIELD);
    assert_eq!(
        log_page(&mut s, 2, 0x1_0000, 0, 0),
        Status::SUCCESS,
        "longer than the log"
    );
}

#[test]
fn async_event_requests_are_held_and_limited() {
    let mut s = enabled();
    let mut aers = Vec::new();
    for _ in 0..4 {
        aers.push(s.push(0, cmd(op::ASYNC_EVENT_REQUEST)));
    }
    let fifth = s.push(0, cmd(op::ASYNC_EVENT_REQUEST));
    s.ring(0);
    let c = s.drain(0);
    assert_eq!(c.len(), 1, "only the one over the limit completes");
    assert_eq!(c[0].command_id.get(), fifth);
    assert_eq!(status_of(&c[0]), Status::AER_LIMIT_EXCEEDED);
    // A doorbell of a queue that does not exist: reported through the first request.
    s.write(doorbell_sq(5), 1);
    let c = s.drain(0);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].command_id.get(), aers[0]);
    assert_eq!(
        c[0].dw0.get(),
        0x01_00_00,
        "error event, invalid doorbell register"
    );
    // Masked until the error log is read.
    s.write(doorbell_sq(0), 99);
    assert!(s.drain(0).is_empty());
    assert_eq!(log_page(&mut s, 1, 16, 0, 0), Status::SUCCESS);
    s.write(doorbell_cq(0), 99);
    let c = s.drain(0);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].command_id.get(), aers[1]);
    assert_eq!(c[0].dw0.get(), 0x01_01_00, "invalid doorbell write value");
}

#[test]
fn event_waits_for_a_request() {
    let mut s = enabled();
    s.write(doorbell_cq(1), 0);
    assert!(s.drain(0).is_empty());
    let cid = s.push(0, cmd(op::ASYNC_EVENT_REQUEST));
    s.ring(0);
    let c = s.drain(0);
    assert_eq!(c[0].command_id.get(), cid);
    assert_eq!(c[0].dw0.get(), 0x01_00_00);
}

#[test]
fn full_admin_cq_holds_admin_commands() {
    let mut s = enabled();
    let cids: Vec<u16> = (0..15).map(|_| s.push(0, cmd(op::KEEP_ALIVE))).collect();
    s.ring(0);
    let first: Vec<u16> = (0..15)
        .map_while(|_| s.pop(0))
        .map(|c| c.command_id.get())
        .collect();
    assert_eq!(first, cids, "15 of 16 entries usable, all used");
    let more: Vec<u16> = (0..5).map(|_| s.push(0, cmd(op::KEEP_ALIVE))).collect();
    s.ring(0);
    assert!(s.pop(0).is_none(), "admin CQ full: not executed yet");
    s.ack(0);
    let rest: Vec<u16> = s.drain(0).iter().map(|c| c.command_id.get()).collect();
    assert_eq!(rest, more);
}
