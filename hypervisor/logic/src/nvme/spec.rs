//! NVMe wire formats and numbers (NVM Express Base Specification 1.4 and 2.0): controller
//! registers (Base 1.4 §3.1), submission and completion queue entries (§4.2, §4.6), status
//! codes (§4.6.1.2), opcodes (§5, NVM Command Set §6) and the data structures the virtual
//! controller hands out (Dataset Management ranges, log pages).

use tock_registers::register_bitfields;
use zerocopy::little_endian::{U16, U32, U64, U128};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Memory page size (CC.MPS = 0, CAP.MPSMIN = CAP.MPSMAX = 0: 4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// Offset bits inside a memory page.
pub const PAGE_MASK: u64 = PAGE_SIZE - 1;
/// Bytes of one submission queue entry (Identify Controller SQES = 6).
pub const SQE_SIZE: u64 = 64;
/// Bytes of one completion queue entry (Identify Controller CQES = 4).
pub const CQE_SIZE: u64 = 16;

/// Controller register offsets in BAR0 (Base 1.4 §3.1, Figure 78).
pub mod reg {
    /// Controller Capabilities (64-bit).
    pub const CAP: u64 = 0x00;
    /// Version.
    pub const VS: u64 = 0x08;
    /// Interrupt Mask Set.
    pub const INTMS: u64 = 0x0c;
    /// Interrupt Mask Clear.
    pub const INTMC: u64 = 0x10;
    /// Controller Configuration.
    pub const CC: u64 = 0x14;
    /// Controller Status.
    pub const CSTS: u64 = 0x1c;
    /// Admin Queue Attributes.
    pub const AQA: u64 = 0x24;
    /// Admin Submission Queue base address (64-bit).
    pub const ASQ: u64 = 0x28;
    /// Admin Completion Queue base address (64-bit).
    pub const ACQ: u64 = 0x30;
    /// First doorbell: SQ y tail at `DOORBELLS + 8y`, CQ y head at `DOORBELLS + 8y + 4`
    /// (CAP.DSTRD = 0, §3.1.24-25).
    pub const DOORBELLS: u64 = 0x1000;
}

register_bitfields![u64,
    /// CAP, Controller Capabilities (Base 1.4 §3.1.1).
    pub(crate) CAP [
        /// Maximum Queue Entries Supported, 0-based.
        MQES OFFSET(0) NUMBITS(16) [],
        /// Contiguous Queues Required.
        CQR OFFSET(16) NUMBITS(1) [],
        /// Arbitration Mechanism Supported (beyond round robin).
        AMS OFFSET(17) NUMBITS(2) [],
        /// Timeout: worst-case time for CSTS.RDY to change, in 500 ms units.
        TO OFFSET(24) NUMBITS(8) [],
        /// Doorbell Stride: 4 << DSTRD bytes.
        DSTRD OFFSET(32) NUMBITS(4) [],
        /// NVM Subsystem Reset Supported.
        NSSRS OFFSET(36) NUMBITS(1) [],
        /// Command Sets Supported; bit 0 = NVM command set.
        CSS OFFSET(37) NUMBITS(8) [],
        /// Memory Page Size Minimum: 4 KiB << MPSMIN.
        MPSMIN OFFSET(48) NUMBITS(4) [],
        /// Memory Page Size Maximum.
        MPSMAX OFFSET(52) NUMBITS(4) []
    ]
];

register_bitfields![u32,
    /// CC, Controller Configuration (Base 1.4 §3.1.5).
    pub(crate) CC [
        /// Enable.
        EN OFFSET(0) NUMBITS(1) [],
        /// I/O Command Set Selected (0 = NVM).
        CSS OFFSET(4) NUMBITS(3) [],
        /// Memory Page Size: 4 KiB << MPS.
        MPS OFFSET(7) NUMBITS(4) [],
        /// Arbitration Mechanism Selected (0 = round robin).
        AMS OFFSET(11) NUMBITS(3) [],
        /// Shutdown Notification: 01b normal, 10b abrupt.
        SHN OFFSET(14) NUMBITS(2) [],
        /// I/O Submission Queue Entry Size, log2 bytes.
        IOSQES OFFSET(16) NUMBITS(4) [],
        /// I/O Completion Queue Entry Size, log2 bytes.
        IOCQES OFFSET(20) NUMBITS(4) []
    ],
    /// CSTS, Controller Status (Base 1.4 §3.1.6).
    pub(crate) CSTS [
        /// Ready.
        RDY OFFSET(0) NUMBITS(1) [],
        /// Controller Fatal Status.
        CFS OFFSET(1) NUMBITS(1) [],
        /// Shutdown Status.
        SHST OFFSET(2) NUMBITS(2) [
            Normal = 0,
            Occurring = 1,
            Complete = 2
        ]
    ],
    /// AQA, Admin Queue Attributes (Base 1.4 §3.1.8): both sizes 0-based.
    pub(crate) AQA [
        /// Admin Submission Queue Size, 0-based.
        ASQS OFFSET(0) NUMBITS(12) [],
        /// Admin Completion Queue Size, 0-based.
        ACQS OFFSET(16) NUMBITS(12) []
    ]
];

register_bitfields![u32,
    /// CDW10 of Create I/O Completion Queue and Create I/O Submission Queue (Base 1.4 §5.3,
    /// §5.4).
    pub(crate) CREATE_QUEUE_DW10 [
        /// Queue Identifier.
        QID OFFSET(0) NUMBITS(16) [],
        /// Queue Size, 0-based.
        QSIZE OFFSET(16) NUMBITS(16) []
    ],
    /// CDW11 of Create I/O Completion Queue (Base 1.4 §5.3).
    pub(crate) CREATE_CQ_DW11 [
        /// Physically Contiguous.
        PC OFFSET(0) NUMBITS(1) [],
        /// Interrupts Enabled.
        IEN OFFSET(1) NUMBITS(1) [],
        /// Interrupt Vector (the MSI-X vector).
        IV OFFSET(16) NUMBITS(16) []
    ],
    /// CDW11 of Create I/O Submission Queue (Base 1.4 §5.4).
    pub(crate) CREATE_SQ_DW11 [
        /// Physically Contiguous.
        PC OFFSET(0) NUMBITS(1) [],
        /// Queue Priority (weighted round robin only).
        QPRIO OFFSET(1) NUMBITS(2) [],
        /// Completion Queue Identifier.
        CQID OFFSET(16) NUMBITS(16) []
    ],
    /// CDW10 of Identify (Base 1.4 §5.15.1).
    pub(crate) IDENTIFY_DW10 [
        /// Controller or Namespace Structure (see [`cns`]).
        CNS OFFSET(0) NUMBITS(8) [],
        /// Controller Identifier.
        CNTID OFFSET(16) NUMBITS(16) []
    ],
    /// CDW10 of Set Features and Get Features (Base 1.4 §5.21, §5.9).
    pub(crate) FEATURES_DW10 [
        /// Feature Identifier (see [`feature`]).
        FID OFFSET(0) NUMBITS(8) [],
        /// Save (Set Features).
        SV OFFSET(31) NUMBITS(1) []
    ],
    /// The Number of Queues feature (Base 1.4 §5.21.1.7): Set Features CDW11 asks for
    /// NSQR/NCQR, completion DW0 grants NSQA/NCQA; all counts 0-based.
    pub(crate) NUMBER_OF_QUEUES [
        /// I/O submission queues requested or allocated.
        NSQ OFFSET(0) NUMBITS(16) [],
        /// I/O completion queues requested or allocated.
        NCQ OFFSET(16) NUMBITS(16) []
    ],
    /// One LBA Format entry of Identify Namespace (Base 1.4 §5.15.2, LBAF0-15).
    pub(crate) LBA_FORMAT [
        /// Metadata Size in bytes per block.
        MS OFFSET(0) NUMBITS(16) [],
        /// LBA Data Size: log2 of the block size.
        LBADS OFFSET(16) NUMBITS(8) [],
        /// Relative Performance.
        RP OFFSET(24) NUMBITS(2) []
    ]
];

/// VS for NVMe 1.4.0 (Base 1.4 §3.1.2).
pub const VERSION_1_4: u32 = 0x0001_0400;

/// Admin command opcodes (Base 1.4 §5, Figure 139; Base 2.0 Figure 28).
pub mod admin {
    /// Delete I/O Submission Queue (§5.6).
    pub const DELETE_IO_SQ: u8 = 0x00;
    /// Create I/O Submission Queue (§5.4).
    pub const CREATE_IO_SQ: u8 = 0x01;
    /// Get Log Page (§5.14).
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Delete I/O Completion Queue (§5.5).
    pub const DELETE_IO_CQ: u8 = 0x04;
    /// Create I/O Completion Queue (§5.3).
    pub const CREATE_IO_CQ: u8 = 0x05;
    /// Identify (§5.15).
    pub const IDENTIFY: u8 = 0x06;
    /// Abort (§5.1).
    pub const ABORT: u8 = 0x08;
    /// Set Features (§5.21).
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features (§5.9).
    pub const GET_FEATURES: u8 = 0x0a;
    /// Asynchronous Event Request (§5.2).
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0c;
    /// Namespace Management (§5.20).
    pub const NAMESPACE_MANAGEMENT: u8 = 0x0d;
    /// Firmware Commit (§5.11).
    pub const FIRMWARE_COMMIT: u8 = 0x10;
    /// Firmware Image Download (§5.12).
    pub const FIRMWARE_DOWNLOAD: u8 = 0x11;
    /// Device Self-test (§5.8).
    pub const DEVICE_SELF_TEST: u8 = 0x14;
    /// Namespace Attachment (§5.19).
    pub const NAMESPACE_ATTACHMENT: u8 = 0x15;
    /// Keep Alive (§5.16).
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Directive Send (§5.7).
    pub const DIRECTIVE_SEND: u8 = 0x19;
    /// Directive Receive (§5.7).
    pub const DIRECTIVE_RECEIVE: u8 = 0x1a;
    /// Virtualization Management (§5.22).
    pub const VIRTUALIZATION_MANAGEMENT: u8 = 0x1c;
    /// NVMe-MI Send (§5.18).
    pub const NVME_MI_SEND: u8 = 0x1d;
    /// NVMe-MI Receive (§5.17).
    pub const NVME_MI_RECEIVE: u8 = 0x1e;
    /// Capacity Management (Base 2.0).
    pub const CAPACITY_MANAGEMENT: u8 = 0x20;
    /// Lockdown (Base 2.0).
    pub const LOCKDOWN: u8 = 0x24;
    /// Doorbell Buffer Config (§5.10).
    pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7c;
    /// Format NVM (§5.23).
    pub const FORMAT_NVM: u8 = 0x80;
    /// Security Send (§5.26).
    pub const SECURITY_SEND: u8 = 0x81;
    /// Security Receive (§5.25).
    pub const SECURITY_RECEIVE: u8 = 0x82;
    /// Sanitize (§5.24).
    pub const SANITIZE: u8 = 0x84;
    /// Get LBA Status (§5.13).
    pub const GET_LBA_STATUS: u8 = 0x86;
    /// Opcodes from here up are vendor specific.
    pub const VENDOR_SPECIFIC: u8 = 0xc0;
}

/// NVM command set I/O opcodes (NVM Command Set 1.0 §3, Base 1.4 §6).
pub mod io {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: u8 = 0x04;
    /// Compare.
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    /// Verify.
    pub const VERIFY: u8 = 0x0c;
    /// Reservation Register.
    pub const RESERVATION_REGISTER: u8 = 0x0d;
    /// Reservation Report.
    pub const RESERVATION_REPORT: u8 = 0x0e;
    /// Reservation Acquire.
    pub const RESERVATION_ACQUIRE: u8 = 0x11;
    /// Reservation Release.
    pub const RESERVATION_RELEASE: u8 = 0x15;
    /// Copy (NVM Command Set 1.0).
    pub const COPY: u8 = 0x19;
}

/// Feature identifiers (Base 1.4 §5.21.1, Figure 271).
pub mod feature {
    /// Arbitration.
    pub const ARBITRATION: u8 = 0x01;
    /// Power Management.
    pub const POWER_MANAGEMENT: u8 = 0x02;
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    /// Error Recovery.
    pub const ERROR_RECOVERY: u8 = 0x05;
    /// Volatile Write Cache.
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    /// Number of Queues.
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    /// Interrupt Coalescing.
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    /// Interrupt Vector Configuration.
    pub const INTERRUPT_VECTOR_CONFIG: u8 = 0x09;
    /// Write Atomicity Normal.
    pub const WRITE_ATOMICITY: u8 = 0x0a;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0b;
}

/// Log page identifiers (Base 1.4 §5.14.1, Figure 191).
pub mod log {
    /// Error Information.
    pub const ERROR_INFORMATION: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART_HEALTH: u8 = 0x02;
    /// Firmware Slot Information.
    pub const FIRMWARE_SLOT: u8 = 0x03;
}

/// Identify CNS values (Base 1.4 §5.15.1, Figure 244).
pub mod cns {
    /// Identify Namespace data structure for the NSID.
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller data structure.
    pub const CONTROLLER: u8 = 0x01;
    /// Active Namespace ID list.
    pub const ACTIVE_NAMESPACES: u8 = 0x02;
    /// Namespace Identification Descriptor list.
    pub const NAMESPACE_DESCRIPTORS: u8 = 0x03;
}

/// The broadcast namespace ID ("all namespaces").
pub const NSID_ALL: u32 = 0xffff_ffff;

/// The Status Field of a completion (Base 1.4 §4.6.1, Figure 124): SC in bits 7:0, SCT in
/// 10:8, CRD in 12:11, More in 13, Do Not Retry in 14. It sits in CQE DW3 bits 31:17, above
/// the phase tag.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Status(u16);

/// Status Code Type values (Figure 125).
const SCT_GENERIC: u16 = 0;
const SCT_COMMAND_SPECIFIC: u16 = 1;
const SCT_MEDIA: u16 = 2;
const DNR: u16 = 1 << 14;

impl Status {
    const fn generic(code: u8) -> Status {
        Status(DNR | (SCT_GENERIC << 8) | code as u16)
    }
    const fn specific(code: u8) -> Status {
        Status(DNR | (SCT_COMMAND_SPECIFIC << 8) | code as u16)
    }

    /// Successful Completion.
    pub const SUCCESS: Status = Status(0);
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: Status = Status::generic(0x01);
    /// Invalid Field in Command.
    pub const INVALID_FIELD: Status = Status::generic(0x02);
    /// Data Transfer Error.
    pub const DATA_TRANSFER_ERROR: Status = Status::generic(0x04);
    /// Internal Error.
    pub const INTERNAL_ERROR: Status = Status::generic(0x06);
    /// Command Abort Requested (retryable: no DNR).
    pub const ABORT_REQUESTED: Status = Status(0x07);
    /// Command Aborted due to SQ Deletion (retryable: no DNR).
    pub const ABORTED_SQ_DELETION: Status = Status(0x08);
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: Status = Status::generic(0x0b);
    /// Command Sequence Error.
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::generic(0x0c);
    /// PRP Offset Invalid.
    pub const PRP_OFFSET_INVALID: Status = Status::generic(0x13);
    /// LBA Out of Range.
    pub const LBA_OUT_OF_RANGE: Status = Status::generic(0x80);
    /// Completion Queue Invalid (Create I/O SQ).
    pub const COMPLETION_QUEUE_INVALID: Status = Status::specific(0x00);
    /// Invalid Queue Identifier.
    pub const INVALID_QUEUE_ID: Status = Status::specific(0x01);
    /// Invalid Queue Size.
    pub const INVALID_QUEUE_SIZE: Status = Status::specific(0x02);
    /// Asynchronous Event Request Limit Exceeded.
    pub const AER_LIMIT_EXCEEDED: Status = Status::specific(0x05);
    /// Invalid Interrupt Vector.
    pub const INVALID_INTERRUPT_VECTOR: Status = Status::specific(0x08);
    /// Invalid Log Page.
    pub const INVALID_LOG_PAGE: Status = Status::specific(0x09);
    /// Invalid Queue Deletion (Delete I/O CQ with SQs still attached).
    pub const INVALID_QUEUE_DELETION: Status = Status::specific(0x0c);
    /// Feature Identifier Not Saveable.
    pub const FEATURE_NOT_SAVEABLE: Status = Status::specific(0x0d);

    /// The status field of a completion the physical controller wrote (DW3 bits 31:16
    /// including the phase tag). Command Retry Delay and More are cleared: they refer to the
    /// physical controller's CRDT values and error log, which the slice does not see.
    pub const fn from_hardware(status_and_phase: u16) -> Status {
        Status((status_and_phase >> 1) & !(0b11 << 11) & !(1 << 13))
    }

    /// The status field (15 bits, without the phase tag).
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// Status Code.
    pub const fn code(self) -> u8 {
        self.0 as u8
    }

    /// Status Code Type.
    pub const fn code_type(self) -> u8 {
        ((self.0 >> 8) & 0x7) as u8
    }

    /// Do Not Retry.
    pub const fn do_not_retry(self) -> bool {
        self.0 & DNR != 0
    }

    /// The command succeeded.
    pub const fn is_success(self) -> bool {
        self.code() == 0 && self.code_type() == SCT_GENERIC as u8
    }

    /// A media or data integrity error (SCT 2), counted in the SMART log.
    pub const fn is_media_error(self) -> bool {
        self.code_type() == SCT_MEDIA as u8
    }
}

/// A submission queue entry (Base 1.4 §4.2, Figure 105). The same layout serves the guest's
/// commands and the ones the hypervisor puts into hardware queues.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct SubmissionEntry {
    /// CDW0 bits 7:0.
    pub opcode: u8,
    /// CDW0 bits 15:8: FUSE in bits 1:0, PSDT in bits 7:6.
    pub flags: u8,
    /// CDW0 bits 31:16, Command Identifier.
    pub command_id: U16,
    /// Namespace Identifier.
    pub nsid: U32,
    /// Command Dword 2 (reserved for the NVM command set).
    pub cdw2: U32,
    /// Command Dword 3.
    pub cdw3: U32,
    /// Metadata Pointer.
    pub metadata: U64,
    /// Data pointer, PRP Entry 1.
    pub prp1: U64,
    /// Data pointer, PRP Entry 2.
    pub prp2: U64,
    /// Command Dword 10 (command specific).
    pub cdw10: U32,
    /// Command Dword 11.
    pub cdw11: U32,
    /// Command Dword 12.
    pub cdw12: U32,
    /// Command Dword 13.
    pub cdw13: U32,
    /// Command Dword 14.
    pub cdw14: U32,
    /// Command Dword 15.
    pub cdw15: U32,
}

const _: () = assert!(size_of::<SubmissionEntry>() == SQE_SIZE as usize);

impl SubmissionEntry {
    /// Fused Operation bits (CDW0 9:8).
    pub const fn fuse(&self) -> u8 {
        self.flags & 0b11
    }

    /// PRP or SGL for Data Transfer (CDW0 15:14).
    pub const fn psdt(&self) -> u8 {
        self.flags >> 6
    }
}

/// A completion queue entry (Base 1.4 §4.6, Figure 121).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct CompletionEntry {
    /// Command specific DW0.
    pub dw0: U32,
    /// DW1 (reserved).
    pub dw1: U32,
    /// SQ Head Pointer.
    pub sq_head: U16,
    /// SQ Identifier.
    pub sq_id: U16,
    /// Command Identifier.
    pub command_id: U16,
    /// Phase tag in bit 0, status field in bits 15:1.
    pub status: U16,
}

const _: () = assert!(size_of::<CompletionEntry>() == CQE_SIZE as usize);

impl CompletionEntry {
    /// The phase tag.
    pub const fn phase(&self) -> bool {
        self.status.get() & 1 != 0
    }

    /// The status field.
    pub const fn status(&self) -> Status {
        Status::from_hardware(self.status.get())
    }
}

/// One Dataset Management range (NVM Command Set 1.0 §3.2.3, Figure 39; Base 1.4 Figure 364).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct DsmRange {
    /// Context Attributes.
    pub attributes: U32,
    /// Length in logical blocks (1-based).
    pub length: U32,
    /// Starting LBA.
    pub slba: U64,
}

/// Bytes of one Dataset Management range.
pub const DSM_RANGE_SIZE: usize = size_of::<DsmRange>();
const _: () = assert!(DSM_RANGE_SIZE == 16);

/// SMART / Health Information log page (Base 1.4 §5.14.1.2, Figure 194).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct SmartLog {
    /// Critical Warning bits.
    pub critical_warning: u8,
    /// Composite Temperature, in kelvins.
    pub temperature: U16,
    /// Available Spare, percent.
    pub available_spare: u8,
    /// Available Spare Threshold, percent.
    pub spare_threshold: u8,
    /// Percentage Used.
    pub percentage_used: u8,
    /// Endurance Group Critical Warning Summary.
    pub endurance_group_warning: u8,
    /// Reserved.
    pub reserved0: [u8; 25],
    /// Thousands of 512-byte units read, rounded up.
    pub data_units_read: U128,
    /// Thousands of 512-byte units written, rounded up.
    pub data_units_written: U128,
    /// Host Read Commands completed.
    pub host_read_commands: U128,
    /// Host Write Commands completed.
    pub host_write_commands: U128,
    /// Controller Busy Time, minutes.
    pub controller_busy_time: U128,
    /// Power Cycles.
    pub power_cycles: U128,
    /// Power On Hours.
    pub power_on_hours: U128,
    /// Unsafe Shutdowns.
    pub unsafe_shutdowns: U128,
    /// Media and Data Integrity Errors.
    pub media_errors: U128,
    /// Number of Error Information Log Entries.
    pub error_log_entries: U128,
    /// Reserved.
    pub reserved1: [u8; 320],
}

const _: () = assert!(size_of::<SmartLog>() == 512);

/// Firmware Slot Information log page (Base 1.4 §5.14.1.3, Figure 195).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct FirmwareSlotLog {
    /// Active Firmware Info: bits 2:0 the running slot.
    pub active: u8,
    /// Reserved.
    pub reserved0: [u8; 7],
    /// Firmware Revision of slots 1 to 7.
    pub revisions: [[u8; 8]; 7],
    /// Reserved.
    pub reserved1: [u8; 448],
}

const _: () = assert!(size_of::<FirmwareSlotLog>() == 512);

/// Asynchronous event reported through an Asynchronous Event Request completion
/// (Base 1.4 §5.2, Figures 146-147).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncEvent {
    /// Error status: the host wrote the doorbell of a queue that does not exist.
    InvalidDoorbellRegister,
    /// Error status: the host wrote a doorbell value that is not valid for the queue.
    InvalidDoorbellValue,
}

impl AsyncEvent {
    /// Completion DW0: Asynchronous Event Type (2:0), Information (15:8), Log Page (23:16).
    pub const fn dw0(self) -> u32 {
        const ERROR_STATUS: u32 = 0;
        let info: u32 = match self {
            AsyncEvent::InvalidDoorbellRegister => 0x00,
            AsyncEvent::InvalidDoorbellValue => 0x01,
        };
        ERROR_STATUS | info << 8 | (log::ERROR_INFORMATION as u32) << 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn submission_entry_field_offsets() {
        let mut bytes = [0u8; 64];
        bytes[0] = 0x02;
        bytes[1] = 0x41;
        bytes[2..4].copy_from_slice(&0x1234u16.to_le_bytes());
        bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
        bytes[16..24].copy_from_slice(&0x11u64.to_le_bytes());
        bytes[24..32].copy_from_slice(&0x4000_1000u64.to_le_bytes());
        bytes[32..40].copy_from_slice(&0x4000_2000u64.to_le_bytes());
        bytes[40..44].copy_from_slice(&0xaau32.to_le_bytes());
        bytes[60..64].copy_from_slice(&0xbbu32.to_le_bytes());
        let sqe = SubmissionEntry::read_from_bytes(&bytes).unwrap();
        assert_eq!(sqe.opcode, 0x02);
        assert_eq!(sqe.fuse(), 1);
        assert_eq!(sqe.psdt(), 1);
        assert_eq!(sqe.command_id.get(), 0x1234);
        assert_eq!(sqe.nsid.get(), 7);
        assert_eq!(sqe.metadata.get(), 0x11);
        assert_eq!(sqe.prp1.get(), 0x4000_1000);
        assert_eq!(sqe.prp2.get(), 0x4000_2000);
        assert_eq!(sqe.cdw10.get(), 0xaa);
        assert_eq!(sqe.cdw15.get(), 0xbb);
        assert_eq!(sqe.as_bytes(), &bytes);
    }

    #[test]
    fn completion_entry_field_offsets() {
        let mut cqe = CompletionEntry::new_zeroed();
        cqe.dw0 = 1.into();
        cqe.sq_head = 0x22.into();
        cqe.sq_id = 3.into();
        cqe.command_id = 0x4455.into();
        cqe.status = ((Status::LBA_OUT_OF_RANGE.raw() << 1) | 1).into();
        let b = cqe.as_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(&b[8..10], &[0x22, 0]);
        assert_eq!(&b[10..12], &[3, 0]);
        assert_eq!(&b[12..14], &[0x55, 0x44]);
        let dw3 = u32::from_le_bytes(b[12..16].try_into().unwrap());
        assert_eq!(dw3 >> 16 & 1, 1, "phase");
        assert_eq!((dw3 >> 17) & 0xff, 0x80, "status code");
        assert_eq!((dw3 >> 25) & 0x7, 0, "status code type");
        assert_eq!(dw3 >> 31, 1, "do not retry");
        assert!(cqe.phase());
        assert_eq!(cqe.status(), Status::LBA_OUT_OF_RANGE);
    }

    #[test]
    fn status_from_hardware_drops_retry_delay_and_more() {
        let raw = (0x0281u16 | 0b11 << 11 | 1 << 13 | 1 << 14) << 1 | 1;
        let status = Status::from_hardware(raw);
        assert_eq!(status.code(), 0x81);
        assert_eq!(status.code_type(), 2);
        assert!(status.do_not_retry());
        assert!(status.is_media_error());
        assert_eq!(status.raw() & (0b111 << 11), 0);
    }

    #[test]
    fn status_codes_and_types() {
        assert!(Status::SUCCESS.is_success());
        assert!(!Status::INVALID_OPCODE.is_success());
        assert_eq!(
            (
                Status::INVALID_OPCODE.code_type(),
                Status::INVALID_OPCODE.code()
            ),
            (0, 1)
        );
        assert_eq!(
            (
                Status::INVALID_LOG_PAGE.code_type(),
                Status::INVALID_LOG_PAGE.code()
            ),
            (1, 9)
        );
        assert!(!Status::ABORTED_SQ_DELETION.do_not_retry());
        assert!(Status::INVALID_FIELD.do_not_retry());
    }

    #[test]
    fn async_event_dw0() {
        assert_eq!(AsyncEvent::InvalidDoorbellRegister.dw0(), 0x01_00_00);
        assert_eq!(AsyncEvent::InvalidDoorbellValue.dw0(), 0x01_01_00);
    }

    #[test]
    fn register_fields() {
        use tock_registers::LocalRegisterCopy;
        let cc = LocalRegisterCopy::<u32, CC::Register>::new(0x0046_4001);
        assert!(cc.is_set(CC::EN));
        assert_eq!(cc.read(CC::IOSQES), 6);
        assert_eq!(cc.read(CC::IOCQES), 4);
        assert_eq!(cc.read(CC::SHN), 1);
        // The CAP QEMU 10's emulated controller reports (read from its BAR0 under the probe).
        let cap = LocalRegisterCopy::<u64, CAP::Register>::new(0x0040_0820_0f01_07ff);
        assert_eq!(cap.read(CAP::MQES), 2047);
        assert!(cap.is_set(CAP::CQR));
        assert_eq!(cap.read(CAP::TO), 0x0f);
        assert_eq!(cap.read(CAP::CSS) & 1, 1, "NVM command set");
        assert_eq!(cap.read(CAP::MPSMAX), 4);
    }
}
