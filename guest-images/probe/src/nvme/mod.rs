//! NVM Express as the probe's polled driver uses it (NVMe Base 1.4): the
//! controller registers (§3.1), submission and completion queue entries
//! (§4.2, §4.6), the admin and NVM commands it sends (§5, §6), the status
//! codes it reports (§4.6.1.2), Identify data (§5.15), PRPs (§4.3), the
//! disk pattern and the attack plans. No hardware access here.

pub mod attacks;
pub mod identify;
pub mod pattern;
pub mod prp;

use core::fmt;

/// Memory page size the driver configures (CC.MPS = 0).
pub const PAGE_SIZE: u64 = 4096;
/// Submission queue entry size (CC.IOSQES = 6).
pub const SQE_BYTES: u64 = 64;
/// Completion queue entry size (CC.IOCQES = 4).
pub const CQE_BYTES: u64 = 16;
/// Where the doorbells start in BAR0.
pub const DOORBELL_BASE: u64 = 0x1000;

/// Controller register offsets in BAR0 (§3.1).
pub mod reg {
    /// Controller Capabilities (64-bit).
    pub const CAP: u64 = 0x00;
    /// Version.
    pub const VS: u64 = 0x08;
    /// Interrupt Mask Set.
    pub const INTMS: u64 = 0x0c;
    /// Controller Configuration.
    pub const CC: u64 = 0x14;
    /// Controller Status.
    pub const CSTS: u64 = 0x1c;
    /// Admin Queue Attributes.
    pub const AQA: u64 = 0x24;
    /// Admin Submission Queue base (64-bit).
    pub const ASQ: u64 = 0x28;
    /// Admin Completion Queue base (64-bit).
    pub const ACQ: u64 = 0x30;
}

/// CAP (§3.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap(pub u64);

impl Cap {
    /// Maximum Queue Entries Supported, as an entry count (MQES + 1).
    pub fn max_entries(self) -> u32 {
        (self.0 & 0xffff) as u32 + 1
    }

    /// Contiguous Queues Required.
    pub fn contiguous_required(self) -> bool {
        self.0 & (1 << 16) != 0
    }

    /// Worst-case time for CSTS.RDY to change (TO, 500 ms units); at least
    /// 500 ms.
    pub fn timeout_ms(self) -> u64 {
        ((self.0 >> 24) & 0xff).max(1) * 500
    }

    /// Bytes between doorbells (4 << DSTRD).
    pub fn doorbell_stride(self) -> u64 {
        4 << ((self.0 >> 32) & 0xf)
    }

    /// Whether the NVM command set is supported (CSS bit 0, bit 37).
    pub fn nvm_command_set(self) -> bool {
        self.0 & (1 << 37) != 0
    }

    /// MPSMIN: smallest memory page size is 4 KiB << this.
    pub fn mps_min(self) -> u32 {
        ((self.0 >> 48) & 0xf) as u32
    }

    /// MPSMAX.
    pub fn mps_max(self) -> u32 {
        ((self.0 >> 52) & 0xf) as u32
    }
}

/// CC with the driver's settings and EN = 1: NVM command set, 4 KiB pages,
/// round robin, 64-byte SQEs, 16-byte CQEs (§3.1.5).
pub const CC_ENABLE: u32 = (4 << 20) | (6 << 16) | 1;

/// CSTS.RDY.
pub const CSTS_READY: u32 = 1 << 0;
/// CSTS.CFS: Controller Fatal Status.
pub const CSTS_FATAL: u32 = 1 << 1;

/// AQA for admin queues of `sq` and `cq` entries (0-based fields).
pub fn aqa(sq: u16, cq: u16) -> u32 {
    (u32::from(cq - 1) << 16) | u32::from(sq - 1)
}

/// Offset in BAR0 of the doorbell of queue `qid` (SQ tail, or CQ head if
/// `completion`), for a doorbell stride of `stride` bytes.
pub fn doorbell_offset(qid: u16, completion: bool, stride: u64) -> u64 {
    DOORBELL_BASE + (2 * u64::from(qid) + u64::from(completion)) * stride
}

/// Admin command opcodes (§5, Figure 139).
pub mod admin {
    /// Delete I/O Submission Queue.
    pub const DELETE_SQ: u8 = 0x00;
    /// Create I/O Submission Queue.
    pub const CREATE_SQ: u8 = 0x01;
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Delete I/O Completion Queue.
    pub const DELETE_CQ: u8 = 0x04;
    /// Create I/O Completion Queue.
    pub const CREATE_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0a;
    /// Namespace Management.
    pub const NS_MANAGEMENT: u8 = 0x0d;
    /// Firmware Commit.
    pub const FIRMWARE_COMMIT: u8 = 0x10;
    /// Firmware Image Download.
    pub const FIRMWARE_DOWNLOAD: u8 = 0x11;
    /// Device Self-test.
    pub const DEVICE_SELF_TEST: u8 = 0x14;
    /// Namespace Attachment.
    pub const NS_ATTACHMENT: u8 = 0x15;
    /// Directive Send.
    pub const DIRECTIVE_SEND: u8 = 0x19;
    /// Directive Receive.
    pub const DIRECTIVE_RECEIVE: u8 = 0x1a;
    /// Virtualization Management.
    pub const VIRTUALIZATION_MANAGEMENT: u8 = 0x1c;
    /// Doorbell Buffer Config.
    pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7c;
    /// Format NVM.
    pub const FORMAT_NVM: u8 = 0x80;
    /// Security Send.
    pub const SECURITY_SEND: u8 = 0x81;
    /// Security Receive.
    pub const SECURITY_RECEIVE: u8 = 0x82;
    /// Sanitize.
    pub const SANITIZE: u8 = 0x84;
    /// First vendor-specific admin opcode.
    pub const VENDOR: u8 = 0xc0;
}

/// NVM command set opcodes (§6, Figure 346).
pub mod io {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Compare.
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// Feature identifier: Number of Queues (§5.21.1.7).
pub const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;
/// Identify CNS: namespace data structure.
pub const CNS_NAMESPACE: u32 = 0x00;
/// Identify CNS: controller data structure.
pub const CNS_CONTROLLER: u32 = 0x01;
/// The broadcast namespace ID.
pub const NSID_BROADCAST: u32 = 0xffff_ffff;

/// FUSE values (CDW0 bits 9:8).
pub const FUSE_FIRST: u8 = 0b01;
/// Second command of a fused operation.
pub const FUSE_SECOND: u8 = 0b10;
/// PSDT (CDW0 bits 15:14): SGL for data, metadata pointer to a buffer.
pub const PSDT_SGL: u8 = 0b01;

/// A 64-byte submission queue entry (§4.2) as sixteen dwords.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// CDW0..CDW15 (CDW1 = NSID, 4-5 MPTR, 6-9 PRP1/PRP2 or the SGL).
    pub dw: [u32; 16],
}

impl Command {
    /// A command with `opcode`, everything else zero (CID set at submission).
    pub fn new(opcode: u8) -> Self {
        let mut c = Self::default();
        c.dw[0] = u32::from(opcode);
        c
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.dw[0] as u8
    }

    /// The command identifier.
    pub fn cid(&self) -> u16 {
        (self.dw[0] >> 16) as u16
    }

    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.dw[0] = (self.dw[0] & 0xffff) | (u32::from(cid) << 16);
    }

    /// Sets FUSE (bits 9:8).
    pub fn fuse(mut self, fuse: u8) -> Self {
        self.dw[0] = (self.dw[0] & !(3 << 8)) | (u32::from(fuse & 3) << 8);
        self
    }

    /// Sets PSDT (bits 15:14).
    pub fn psdt(mut self, psdt: u8) -> Self {
        self.dw[0] = (self.dw[0] & !(3 << 14)) | (u32::from(psdt & 3) << 14);
        self
    }

    /// Sets the namespace ID.
    pub fn nsid(mut self, nsid: u32) -> Self {
        self.dw[1] = nsid;
        self
    }

    /// Sets the metadata pointer.
    pub fn mptr(mut self, mptr: u64) -> Self {
        self.dw[4] = mptr as u32;
        self.dw[5] = (mptr >> 32) as u32;
        self
    }

    /// Sets PRP entries 1 and 2 (or, with PSDT = SGL, the SGL descriptor's
    /// address and length/type words: same dwords 6..9).
    pub fn prp(mut self, prp1: u64, prp2: u64) -> Self {
        self.dw[6] = prp1 as u32;
        self.dw[7] = (prp1 >> 32) as u32;
        self.dw[8] = prp2 as u32;
        self.dw[9] = (prp2 >> 32) as u32;
        self
    }

    /// PRP1.
    pub fn prp1(&self) -> u64 {
        u64::from(self.dw[6]) | (u64::from(self.dw[7]) << 32)
    }

    /// PRP2.
    pub fn prp2(&self) -> u64 {
        u64::from(self.dw[8]) | (u64::from(self.dw[9]) << 32)
    }

    /// Sets CDW10 + `i` (i = 0..=5).
    pub fn cdw(mut self, i: usize, value: u32) -> Self {
        self.dw[10 + i] = value;
        self
    }

    /// Identify (CNS, NSID) into the 4 KiB page at `prp1`.
    pub fn identify(cns: u32, nsid: u32, prp1: u64) -> Self {
        Command::new(admin::IDENTIFY)
            .nsid(nsid)
            .prp(prp1, 0)
            .cdw(0, cns)
    }

    /// Set Features Number of Queues asking for `sq` submission and `cq`
    /// completion queues (1-based counts, 1..=65535).
    pub fn set_number_of_queues(sq: u16, cq: u16) -> Self {
        Command::new(admin::SET_FEATURES)
            .cdw(0, FEATURE_NUMBER_OF_QUEUES)
            .cdw(1, (u32::from(cq - 1) << 16) | u32::from(sq - 1))
    }

    /// Create I/O Completion Queue `qid` of `entries` at `base`; PC set if
    /// `contiguous`, interrupts off (IEN = 0, vector 0).
    pub fn create_cq(qid: u16, entries: u32, base: u64, contiguous: bool) -> Self {
        Command::new(admin::CREATE_CQ)
            .prp(base, 0)
            .cdw(0, (entries.wrapping_sub(1) << 16) | u32::from(qid))
            .cdw(1, u32::from(contiguous))
    }

    /// Create I/O Submission Queue `qid` of `entries` at `base`, completing
    /// to `cqid`; PC set if `contiguous`, priority urgent (ignored with
    /// round robin).
    pub fn create_sq(qid: u16, entries: u32, base: u64, cqid: u16, contiguous: bool) -> Self {
        Command::new(admin::CREATE_SQ)
            .prp(base, 0)
            .cdw(0, (entries.wrapping_sub(1) << 16) | u32::from(qid))
            .cdw(1, (u32::from(cqid) << 16) | u32::from(contiguous))
    }

    /// Delete I/O Submission Queue `qid`.
    pub fn delete_sq(qid: u16) -> Self {
        Command::new(admin::DELETE_SQ).cdw(0, u32::from(qid))
    }

    /// Delete I/O Completion Queue `qid`.
    pub fn delete_cq(qid: u16) -> Self {
        Command::new(admin::DELETE_CQ).cdw(0, u32::from(qid))
    }

    /// Read or Write (`opcode`) of `blocks` (1..=65536) logical blocks from
    /// `slba` of `nsid`; the data pointer is set separately.
    pub fn rw(opcode: u8, nsid: u32, slba: u64, blocks: u32) -> Self {
        Command::new(opcode)
            .nsid(nsid)
            .cdw(0, slba as u32)
            .cdw(1, (slba >> 32) as u32)
            .cdw(2, blocks.wrapping_sub(1) & 0xffff)
    }

    /// Flush of `nsid`.
    pub fn flush(nsid: u32) -> Self {
        Command::new(io::FLUSH).nsid(nsid)
    }
}

/// The 15-bit status field of a completion (DW3 bits 31:17; §4.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u16);

/// Status code types.
pub mod sct {
    /// Generic command status.
    pub const GENERIC: u8 = 0;
    /// Command specific status.
    pub const COMMAND_SPECIFIC: u8 = 1;
    /// Media and data integrity errors.
    pub const MEDIA: u8 = 2;
    /// Path related status.
    pub const PATH: u8 = 3;
    /// Vendor specific.
    pub const VENDOR: u8 = 7;
}

impl Status {
    /// Successful completion.
    pub const SUCCESS: Status = Status(0);

    /// A status with this type and code.
    pub const fn new(sct: u8, sc: u8) -> Status {
        Status(((sct as u16 & 7) << 8) | sc as u16)
    }

    /// Status Code.
    pub fn sc(self) -> u8 {
        self.0 as u8
    }

    /// Status Code Type.
    pub fn sct(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }

    /// Do Not Retry.
    pub fn dnr(self) -> bool {
        self.0 & (1 << 14) != 0
    }

    /// Whether the command succeeded (SCT 0, SC 0).
    pub fn is_success(self) -> bool {
        self.sct() == 0 && self.sc() == 0
    }

    /// The same type and code without CRD/M/DNR.
    pub fn code(self) -> Status {
        Status(self.0 & 0x7ff)
    }

    /// A short name for the status, if the probe knows it.
    pub fn name(self) -> Option<&'static str> {
        Some(match (self.sct(), self.sc()) {
            (0, 0x00) => "success",
            (0, 0x01) => "invalid-opcode",
            (0, 0x02) => "invalid-field",
            (0, 0x03) => "cid-conflict",
            (0, 0x04) => "data-transfer-error",
            (0, 0x05) => "aborted-power-loss",
            (0, 0x06) => "internal-error",
            (0, 0x07) => "abort-requested",
            (0, 0x08) => "aborted-sq-deletion",
            (0, 0x09) => "aborted-failed-fused",
            (0, 0x0a) => "aborted-missing-fused",
            (0, 0x0b) => "invalid-namespace",
            (0, 0x0c) => "command-sequence-error",
            (0, 0x0d) => "invalid-sgl-segment",
            (0, 0x0e) => "invalid-sgl-count",
            (0, 0x0f) => "invalid-sgl-length",
            (0, 0x10) => "invalid-metadata-sgl-length",
            (0, 0x11) => "invalid-sgl-type",
            (0, 0x12) => "invalid-cmb-use",
            (0, 0x13) => "invalid-prp-offset",
            (0, 0x15) => "operation-denied",
            (0, 0x16) => "invalid-sgl-offset",
            (0, 0x1d) => "sanitize-in-progress",
            (0, 0x20) => "namespace-write-protected",
            (0, 0x21) => "command-interrupted",
            (0, 0x80) => "lba-out-of-range",
            (0, 0x81) => "capacity-exceeded",
            (0, 0x82) => "namespace-not-ready",
            (0, 0x83) => "reservation-conflict",
            (0, 0x84) => "format-in-progress",
            (1, 0x00) => "invalid-cq",
            (1, 0x01) => "invalid-qid",
            (1, 0x02) => "invalid-queue-size",
            (1, 0x03) => "abort-limit-exceeded",
            (1, 0x05) => "aer-limit-exceeded",
            (1, 0x06) => "invalid-firmware-slot",
            (1, 0x07) => "invalid-firmware-image",
            (1, 0x08) => "invalid-interrupt-vector",
            (1, 0x09) => "invalid-log-page",
            (1, 0x0a) => "invalid-format",
            (1, 0x0b) => "firmware-needs-reset",
            (1, 0x0c) => "invalid-queue-deletion",
            (1, 0x0d) => "feature-not-saveable",
            (1, 0x0e) => "feature-not-changeable",
            (1, 0x0f) => "feature-not-ns-specific",
            (1, 0x10) => "firmware-needs-subsystem-reset",
            (1, 0x11) => "firmware-needs-controller-reset",
            (1, 0x13) => "firmware-activation-prohibited",
            (1, 0x14) => "overlapping-range",
            (1, 0x15) => "ns-insufficient-capacity",
            (1, 0x16) => "ns-id-unavailable",
            (1, 0x18) => "ns-already-attached",
            (1, 0x19) => "ns-is-private",
            (1, 0x1a) => "ns-not-attached",
            (1, 0x1b) => "thin-provisioning-unsupported",
            (1, 0x1c) => "invalid-controller-list",
            (1, 0x1d) => "self-test-in-progress",
            (1, 0x1f) => "invalid-controller-id",
            (1, 0x20) => "invalid-secondary-state",
            (1, 0x21) => "invalid-resource-count",
            (1, 0x22) => "invalid-resource-id",
            (1, 0x80) => "conflicting-attributes",
            (1, 0x81) => "invalid-protection-info",
            (1, 0x82) => "write-to-read-only-range",
            (2, 0x80) => "write-fault",
            (2, 0x81) => "unrecovered-read-error",
            (2, 0x85) => "compare-failure",
            (2, 0x86) => "access-denied",
            _ => return None,
        })
    }
}

/// `<name>(<sct>/0x<sc>)`, e.g. `lba-out-of-range(0/0x80)`; unknown codes
/// print as `status(<sct>/0x<sc>)`.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name().unwrap_or("status");
        write!(f, "{name}({}/{:#04x})", self.sct(), self.sc())
    }
}

/// A 16-byte completion queue entry (§4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Command specific DW0.
    pub dw0: u32,
    /// SQ Head Pointer.
    pub sq_head: u16,
    /// SQ Identifier.
    pub sq_id: u16,
    /// Command Identifier.
    pub cid: u16,
    /// Phase Tag.
    pub phase: bool,
    /// Status.
    pub status: Status,
}

impl Completion {
    /// Decodes the four dwords of an entry.
    pub fn from_dwords(dw: [u32; 4]) -> Self {
        Self {
            dw0: dw[0],
            sq_head: dw[2] as u16,
            sq_id: (dw[2] >> 16) as u16,
            cid: dw[3] as u16,
            phase: dw[3] & (1 << 16) != 0,
            status: Status((dw[3] >> 17) as u16),
        }
    }

    /// The phase tag of the entry's last dword alone.
    pub fn phase_of(dw3: u32) -> bool {
        dw3 & (1 << 16) != 0
    }
}

/// What Set Features Number of Queues granted: (submission, completion)
/// queue counts, from the completion's DW0 (0-based fields).
pub fn granted_queues(dw0: u32) -> (u32, u32) {
    ((dw0 & 0xffff) + 1, (dw0 >> 16) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields() {
        // QEMU's nvme: MQES 0x7ff, CQR, TO 15, DSTRD 0, CSS NVM, MPSMIN 0,
        // MPSMAX 4.
        let cap = Cap(0x0040_0020_0f01_07ff);
        assert_eq!(cap.max_entries(), 0x800);
        assert!(cap.contiguous_required());
        assert_eq!(cap.timeout_ms(), 7500);
        assert_eq!(cap.doorbell_stride(), 4);
        assert!(cap.nvm_command_set());
        assert_eq!((cap.mps_min(), cap.mps_max()), (0, 4));
        assert_eq!(Cap(0).timeout_ms(), 500, "TO 0 still waits a little");
        assert_eq!(Cap(2 << 32).doorbell_stride(), 16);
    }

    #[test]
    fn register_values() {
        assert_eq!(CC_ENABLE, 0x0046_0001);
        assert_eq!(aqa(32, 16), 0x000f_001f);
        assert_eq!(doorbell_offset(0, false, 4), 0x1000);
        assert_eq!(doorbell_offset(0, true, 4), 0x1004);
        assert_eq!(doorbell_offset(3, true, 4), 0x101c);
        assert_eq!(doorbell_offset(1, false, 16), 0x1020);
    }

    #[test]
    fn read_command_layout() {
        let mut c = Command::rw(io::READ, 1, 0x1_2345_6789, 8).prp(0x4010_0000, 0x4010_1000);
        c.set_cid(0xbeef);
        assert_eq!(c.dw[0], 0xbeef_0002);
        assert_eq!(c.opcode(), io::READ);
        assert_eq!(c.cid(), 0xbeef);
        assert_eq!(c.dw[1], 1);
        assert_eq!(
            (c.dw[6], c.dw[7], c.dw[8], c.dw[9]),
            (0x4010_0000, 0, 0x4010_1000, 0)
        );
        assert_eq!((c.dw[10], c.dw[11], c.dw[12]), (0x2345_6789, 1, 7));
        assert_eq!((c.prp1(), c.prp2()), (0x4010_0000, 0x4010_1000));
        // 65536 blocks is NLB 0xffff.
        assert_eq!(Command::rw(io::WRITE, 1, 0, 65536).dw[12], 0xffff);
    }

    #[test]
    fn fuse_psdt_mptr() {
        let c = Command::new(io::COMPARE)
            .fuse(FUSE_FIRST)
            .psdt(PSDT_SGL)
            .mptr(0x1_0000_0008);
        assert_eq!(c.dw[0], 0x4105);
        assert_eq!((c.dw[4], c.dw[5]), (8, 1));
        assert_eq!(c.fuse(FUSE_SECOND).dw[0], 0x4205);
    }

    #[test]
    fn admin_commands() {
        let c = Command::create_cq(3, 64, 0x4020_0000, true);
        assert_eq!(
            (c.opcode(), c.dw[10], c.dw[11], c.prp1()),
            (0x05, 0x003f_0003, 1, 0x4020_0000)
        );
        let s = Command::create_sq(3, 64, 0x4021_0000, 3, true);
        assert_eq!(
            (s.opcode(), s.dw[10], s.dw[11]),
            (0x01, 0x003f_0003, 0x0003_0001)
        );
        let n = Command::set_number_of_queues(4, 4);
        assert_eq!((n.opcode(), n.dw[10], n.dw[11]), (0x09, 7, 0x0003_0003));
        let i = Command::identify(CNS_CONTROLLER, 0, 0x4030_0000);
        assert_eq!((i.opcode(), i.dw[1], i.dw[10]), (0x06, 0, 1));
        assert_eq!(Command::delete_sq(2).dw[10], 2);
        assert_eq!(Command::delete_cq(2).opcode(), 0x04);
        assert_eq!(Command::flush(1).dw[..2], [0, 1]);
    }

    #[test]
    fn completion_decoding() {
        // DW3: status LBA Out of Range with DNR, phase 1, CID 7.
        let status = (1u32 << 14) | 0x80;
        let dw3 = (status << 17) | (1 << 16) | 7;
        let c = Completion::from_dwords([0x11, 0, (2 << 16) | 5, dw3]);
        assert_eq!(
            (c.dw0, c.sq_head, c.sq_id, c.cid, c.phase),
            (0x11, 5, 2, 7, true)
        );
        assert!(c.status.dnr());
        assert_eq!(c.status.code(), Status::new(0, 0x80));
        assert!(!c.status.is_success());
        assert_eq!(format!("{}", c.status), "lba-out-of-range(0/0x80)");
        assert!(Completion::phase_of(dw3));
    }

    #[test]
    fn status_names() {
        assert_eq!(format!("{}", Status::SUCCESS), "success(0/0x00)");
        assert_eq!(format!("{}", Status::new(0, 1)), "invalid-opcode(0/0x01)");
        assert_eq!(format!("{}", Status::new(1, 1)), "invalid-qid(1/0x01)");
        assert_eq!(
            format!("{}", Status::new(0, 0x0b)),
            "invalid-namespace(0/0x0b)"
        );
        assert_eq!(format!("{}", Status::new(7, 0xc3)), "status(7/0xc3)");
        // Success needs SCT 0 as well.
        assert!(!Status::new(1, 0).is_success());
    }

    #[test]
    fn queues_granted() {
        assert_eq!(granted_queues(0x003f_003f), (64, 64));
        assert_eq!(granted_queues(0x0001_0000), (1, 2));
    }
}
