//! The NVMe attacks' plans and verdicts: which commands each attack sends
//! (built here, sent by `bare::nvme_attacks`), and how one compact outcome
//! line is assembled. Every case expects the command to fail with an NVMe
//! error status (or the slice to be stopped by the hypervisor, which ends
//! the run before any verdict); a success is a breach, and a case the probe
//! could not send (or whose preparation failed) makes the attack
//! `unverified`, never `contained`.

use core::fmt::{self, Write};

use super::{Command, Status, admin, io};
use crate::text::Text;
use crate::verdict::Verdict;

/// How one attacking command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It completed with this status.
    Status(Status),
    /// No completion within this many milliseconds.
    Timeout(u64),
    /// The probe could not send it (queue full, MMIO fault...).
    NotSent(&'static str),
    /// It was not attempted (e.g. no size beyond MQES exists).
    Skipped(&'static str),
}

/// `<status>`, `timeout(<ms>ms)`, `not-sent(<why>)`, `skipped(<why>)`.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status(s) => write!(f, "{s}"),
            Outcome::Timeout(ms) => write!(f, "timeout({ms}ms)"),
            Outcome::NotSent(why) => write!(f, "not-sent({why})"),
            Outcome::Skipped(why) => write!(f, "skipped({why})"),
        }
    }
}

impl Outcome {
    /// Whether the command was refused with an error status.
    pub fn refused(&self) -> bool {
        matches!(self, Outcome::Status(s) if !s.is_success())
    }

    /// Whether the command completed successfully.
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Status(s) if s.is_success())
    }

    /// What this outcome says about a command that must be refused: an error status holds
    /// containment, a success or a timeout (neither refused nor stopping the slice) breaks
    /// it, a command the probe could not send proves nothing, a skipped case does not apply.
    pub fn expected_refusal(&self) -> Case {
        match self {
            Outcome::Status(s) if !s.is_success() => Case::Held,
            Outcome::Status(_) | Outcome::Timeout(_) => Case::Breach,
            Outcome::NotSent(_) => Case::Unverified,
            Outcome::Skipped(_) => Case::NotApplicable,
        }
    }
}

/// What one case of an attack says about containment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// The case was attempted and the hypervisor held.
    Held,
    /// The case was attempted and got through.
    Breach,
    /// The probe could not attempt the case (its preparation failed): nothing proven.
    Unverified,
    /// The case does not exist on this controller (e.g. no queue size beyond MQES).
    NotApplicable,
}

/// Collects `label=outcome` items for the outcome line and what each case says. The verdict:
/// `NOT-CONTAINED` if any case breached containment; else `NOT-CONTAINED unverified` if any
/// case could not be attempted, or none was attempted at all; else `contained`.
pub struct Findings {
    /// The microvisor splits console lines at 1024 bytes; with the
    /// `ATTACK <name> NOT-CONTAINED unverified ` prefix and ` ...` this stays below.
    text: Text<950>,
    /// Cases that breached containment.
    pub breaches: u32,
    /// Cases the probe could not attempt.
    pub unverified: u32,
    /// Cases attempted (held or breached).
    pub attempted: u32,
    /// Cases recorded.
    pub cases: u32,
}

impl Default for Findings {
    fn default() -> Self {
        Self::new()
    }
}

impl Findings {
    /// Nothing recorded yet.
    pub fn new() -> Self {
        Self {
            text: Text::new(),
            breaches: 0,
            unverified: 0,
            attempted: 0,
            cases: 0,
        }
    }

    /// Records `label=outcome` as `case`.
    pub fn record(&mut self, label: impl fmt::Display, outcome: impl fmt::Display, case: Case) {
        let sep = if self.text.as_bytes().is_empty() {
            ""
        } else {
            " "
        };
        let _ = write!(self.text, "{sep}{label}={outcome}");
        self.cases += 1;
        match case {
            Case::Held => self.attempted += 1,
            Case::Breach => {
                self.attempted += 1;
                self.breaches += 1;
            }
            Case::Unverified => self.unverified += 1,
            Case::NotApplicable => {}
        }
    }

    /// Records an attempted case `label=outcome`; `breach` says whether it broke containment.
    pub fn add(&mut self, label: impl fmt::Display, outcome: impl fmt::Display, breach: bool) {
        let case = if breach { Case::Breach } else { Case::Held };
        self.record(label, outcome, case);
    }

    /// Records `label=why` for a case (or a step) the probe could not carry out.
    pub fn unverified(&mut self, label: impl fmt::Display, why: impl fmt::Display) {
        self.record(label, why, Case::Unverified);
    }

    /// Records a case that must be refused (see [`Outcome::expected_refusal`]).
    pub fn expect_refused(&mut self, label: impl fmt::Display, outcome: Outcome) {
        self.record(label, outcome, outcome.expected_refusal());
    }

    /// Appends a free-form note (no `=`).
    pub fn note(&mut self, note: impl fmt::Display) {
        let sep = if self.text.as_bytes().is_empty() {
            ""
        } else {
            " "
        };
        let _ = write!(self.text, "{sep}{note}");
    }

    /// The verdict (see [`Findings`]).
    pub fn verdict(&self) -> Verdict {
        if self.breaches != 0 {
            Verdict::NotContained
        } else if self.unverified != 0 || self.attempted == 0 {
            Verdict::Unverified
        } else {
            Verdict::Contained
        }
    }

    /// The items, space separated (` ...` appended if truncated).
    pub fn text(&self) -> &str {
        self.text.as_str().unwrap_or("unprintable")
    }

    /// Whether items were dropped for lack of room.
    pub fn truncated(&self) -> bool {
        self.text.is_truncated()
    }
}

/// What one `nvme-prp-toctou`/`nvme-prp-flip` round saw: the read's outcome, how many pages
/// of the original buffer got the right data, how many of the decoy buffer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// The read.
    pub result: Outcome,
    /// Pages of the original buffer holding the data read.
    pub pages_ok: u64,
    /// Pages read.
    pub pages: u64,
    /// Pages of the decoy buffer holding the data read.
    pub decoy_hit: u64,
}

/// How an `nvme-prp-flip` round ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flip {
    /// Refused with an error status.
    Refused,
    /// Succeeded with all data in the original buffer and none in the decoy.
    Clean,
    /// Anything else: data went elsewhere, or the read timed out.
    Breach,
    /// The probe could not run the round.
    Unverified,
}

impl Round {
    /// Whether the read succeeded with all data in the original buffer and none in the decoy.
    fn clean(&self) -> bool {
        self.result.succeeded() && self.pages_ok == self.pages && self.decoy_hit == 0
    }

    /// A round whose PRPs were rewritten after the doorbell: the device must see them as they
    /// were at the doorbell, so the read must succeed into the original buffer.
    pub fn after_doorbell(&self) -> Case {
        match self.result {
            Outcome::NotSent(_) | Outcome::Skipped(_) => Case::Unverified,
            _ if self.clean() => Case::Held,
            _ => Case::Breach,
        }
    }

    /// The control round (PRPs pointed at the decoy before the doorbell): every page must
    /// land in the decoy, or the check cannot see where data goes and proves nothing.
    pub fn control(&self) -> Case {
        if self.result.succeeded() && self.decoy_hit == self.pages {
            Case::Held
        } else {
            Case::Unverified
        }
    }

    /// A round whose list entries another vCPU flipped meanwhile: refused or clean.
    pub fn flip(&self) -> Flip {
        match self.result {
            Outcome::NotSent(_) | Outcome::Skipped(_) => Flip::Unverified,
            _ if self.result.refused() => Flip::Refused,
            _ if self.clean() => Flip::Clean,
            _ => Flip::Breach,
        }
    }
}

/// `<outcome>,original-pages-ok=<n>/<pages>,decoy-pages-hit=<n>`.
impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},original-pages-ok={}/{},decoy-pages-hit={}",
            self.result, self.pages_ok, self.pages, self.decoy_hit
        )
    }
}

/// What the refused admin commands may point at: two 4 KiB pages of the
/// probe's RAM (their contents prepared by [`admin_buffer_words`]), the
/// namespace's LBA format and the controller ID.
#[derive(Clone, Copy, Debug)]
pub struct AdminContext {
    /// First page.
    pub buffer: u64,
    /// Second page.
    pub buffer2: u64,
    /// A page-aligned address outside RAM (Doorbell Buffer Config's two pages: shadow
    /// doorbells in RAM are a legitimate request a virtual controller may grant).
    pub outside: u64,
    /// LBA format in use (Format NVM keeps it).
    pub lba_format: u8,
    /// Controller ID (Namespace Attachment's controller list).
    pub cntlid: u16,
}

/// Every admin opcode the microvisor refuses, in the order they are sent.
pub const REFUSED_ADMIN: [u8; 14] = [
    admin::FORMAT_NVM,
    admin::SANITIZE,
    admin::FIRMWARE_COMMIT,
    admin::FIRMWARE_DOWNLOAD,
    admin::NS_MANAGEMENT,
    admin::NS_ATTACHMENT,
    admin::VIRTUALIZATION_MANAGEMENT,
    admin::SECURITY_SEND,
    admin::SECURITY_RECEIVE,
    admin::DEVICE_SELF_TEST,
    admin::DIRECTIVE_SEND,
    admin::DIRECTIVE_RECEIVE,
    admin::DOORBELL_BUFFER_CONFIG,
    admin::VENDOR,
];

/// The command sent for refused opcode `opcode`: each one well formed and
/// meaning harm if a controller executed it for a slice (format or erase
/// the shared namespace, replace firmware, create or attach namespaces,
/// bring secondary controllers online, shadow doorbells...).
pub fn refused_admin_command(opcode: u8, ctx: &AdminContext) -> Command {
    let c = Command::new(opcode);
    match opcode {
        // Format namespace 1 with its current LBA format, no secure erase.
        admin::FORMAT_NVM => c.nsid(1).cdw(0, u32::from(ctx.lba_format & 0xf)),
        // Sanitize: block erase (SANACT 010b).
        admin::SANITIZE => c.cdw(0, 0b010),
        // Firmware Commit: replace slot 1 and activate at the next reset.
        admin::FIRMWARE_COMMIT => c.cdw(0, (0b001 << 3) | 1),
        // Firmware Image Download: 4 KiB (NUMD 1023) at offset 0.
        admin::FIRMWARE_DOWNLOAD => c.prp(ctx.buffer, 0).cdw(0, 1023),
        // Namespace Management: create (SEL 0) from the buffer's structure.
        admin::NS_MANAGEMENT => c.prp(ctx.buffer, 0).cdw(0, 0),
        // Namespace Attachment: attach (SEL 0) namespace 1 to the list.
        admin::NS_ATTACHMENT => c.nsid(1).prp(ctx.buffer, 0).cdw(0, 0),
        // Virtualization Management: secondary controller 1 online (ACT 8).
        admin::VIRTUALIZATION_MANAGEMENT => c.cdw(0, (1 << 16) | 0x8),
        // Security Send: protocol 01h (TCG), 512 bytes.
        admin::SECURITY_SEND => c.prp(ctx.buffer, 0).cdw(0, 0x01 << 24).cdw(1, 512),
        // Security Receive: protocol 00h (supported protocols), 512 bytes.
        admin::SECURITY_RECEIVE => c.prp(ctx.buffer, 0).cdw(1, 512),
        // Device Self-test: short test of all namespaces.
        admin::DEVICE_SELF_TEST => c.nsid(super::NSID_BROADCAST).cdw(0, 1),
        // Directive Send: Identify, Enable Directive (DOPER 1) for Streams.
        admin::DIRECTIVE_SEND => c.nsid(1).cdw(1, 0x01).cdw(2, (1 << 8) | 1),
        // Directive Receive: Identify, Return Parameters, 4 KiB.
        admin::DIRECTIVE_RECEIVE => c.nsid(1).prp(ctx.buffer, 0).cdw(0, 1023).cdw(1, 0x01),
        // Doorbell Buffer Config: shadow doorbells and EventIdx outside our RAM, where the
        // controller would write EventIdx values.
        admin::DOORBELL_BUFFER_CONFIG => c.prp(ctx.outside, ctx.outside + 0x1000),
        _ => c,
    }
}

/// The first words of the data buffer for `opcode` (the rest is zero):
/// Namespace Management's new-namespace structure (NSZE = NCAP = 8
/// blocks), Namespace Attachment's controller list (one entry: `cntlid`).
pub fn admin_buffer_words(opcode: u8, ctx: &AdminContext) -> [u64; 2] {
    match opcode {
        admin::NS_MANAGEMENT => [8, 8],
        admin::NS_ATTACHMENT => [1 | (u64::from(ctx.cntlid) << 16), 0],
        _ => [0, 0],
    }
}

/// One `nvme-lba-outside` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbaCase {
    /// Label in the outcome line.
    pub label: &'static str,
    /// Write (else Read).
    pub write: bool,
    /// Starting LBA.
    pub slba: u64,
    /// Blocks (1-based).
    pub blocks: u32,
}

/// The `nvme-lba-outside` commands for a namespace of `ns_blocks`: at the
/// end, crossing the end, at u64::MAX, wrapping past 2^64 to LBA 0, at
/// 2^64 - size (an unchecked add of a window offset k * size wraps into the
/// window before it), at 2^63.
pub fn lba_outside_cases(ns_blocks: u64) -> [LbaCase; 8] {
    let case = |label, write, slba, blocks| LbaCase {
        label,
        write,
        slba,
        blocks,
    };
    [
        case("read@end", false, ns_blocks, 1),
        case("write@end", true, ns_blocks, 1),
        case("read@cross", false, ns_blocks.saturating_sub(1), 2),
        case("write@cross", true, ns_blocks.saturating_sub(1), 2),
        case("read@max", false, u64::MAX, 1),
        case("write@wrap", true, u64::MAX, 2),
        case("write@-size", true, ns_blocks.wrapping_neg(), 1),
        case("read@2^63", false, 1 << 63, 1),
    ]
}

/// One `nvme-nsid` command: (label, write, nsid).
pub const NSID_CASES: [(&str, bool, u32); 5] = [
    ("read-nsid2", false, 2),
    ("read-nsid0", false, 0),
    ("read-nsid-all", false, super::NSID_BROADCAST),
    ("write-nsid2", true, 2),
    ("write-nsid-all", true, super::NSID_BROADCAST),
];

/// The `nvme-prp-outside` shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrpCase {
    /// One page, PRP1 outside.
    Prp1,
    /// Two pages, PRP2 (the second page) outside.
    Prp2,
    /// Four pages, PRP2 (the list pointer) outside.
    ListPointer,
    /// Four pages, list entry of page 2 outside.
    ListEntry,
    /// Four pages, list at a page end, its chain pointer outside.
    ChainPointer,
}

impl PrpCase {
    /// Every shape, in the order sent.
    pub const ALL: [PrpCase; 5] = [
        PrpCase::Prp1,
        PrpCase::Prp2,
        PrpCase::ListPointer,
        PrpCase::ListEntry,
        PrpCase::ChainPointer,
    ];

    /// Label in the outcome line.
    pub fn name(self) -> &'static str {
        match self {
            PrpCase::Prp1 => "prp1",
            PrpCase::Prp2 => "prp2",
            PrpCase::ListPointer => "list-pointer",
            PrpCase::ListEntry => "list-entry",
            PrpCase::ChainPointer => "chain-pointer",
        }
    }

    /// Data pages the transfer spans.
    pub fn pages(self) -> u64 {
        match self {
            PrpCase::Prp1 => 1,
            PrpCase::Prp2 => 2,
            _ => 4,
        }
    }
}

/// What the queue attacks need to know.
#[derive(Clone, Copy, Debug)]
pub struct QueueContext {
    /// A queue ID inside the allocation that is not in use (the probe
    /// deletes its last I/O queue pair first).
    pub free_qid: u16,
    /// Queue pairs granted by Set Features (1-based).
    pub granted: u16,
    /// CAP.MQES + 1.
    pub max_entries: u32,
    /// Entries of a good queue.
    pub entries: u32,
    /// A good CQ page and a good SQ page in the probe's RAM.
    pub good_cq: u64,
    /// See `good_cq`.
    pub good_sq: u64,
    /// An address outside the probe's RAM.
    pub outside: u64,
    /// One page before the end of RAM: a 64 KiB queue there straddles it.
    pub straddle: u64,
}

/// One `nvme-queue-outside` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueCase {
    /// Label in the outcome line.
    pub label: &'static str,
    /// The Create command, or why the case cannot be built on this
    /// controller (it is then reported as skipped).
    pub command: Result<Command, &'static str>,
    /// Create I/O SQ (else CQ): tells the probe what to delete if it
    /// unexpectedly succeeds.
    pub sq: bool,
    /// Queue ID it creates.
    pub qid: u16,
}

/// Entries of a queue that straddles the end of RAM from one (aligned)
/// page before it: 64 KiB of entries capped at MQES; impossible when that
/// fits in the last page.
fn straddle_entries(max_entries: u32, entry_bytes: u32) -> Result<u32, &'static str> {
    let entries = (65536 / entry_bytes).min(max_entries);
    if u64::from(entries) * u64::from(entry_bytes) > super::PAGE_SIZE {
        Ok(entries)
    } else {
        Err("mqes-fits-a-page")
    }
}

/// MQES + 2 entries (one more than allowed), if that is expressible.
fn beyond_mqes(max_entries: u32) -> Result<u32, &'static str> {
    if max_entries < 65536 {
        Ok(max_entries + 1)
    } else {
        Err("mqes-is-max")
    }
}

/// The Create I/O CQ cases (run before a good CQ `free_qid` exists).
pub fn cq_cases(q: &QueueContext) -> [QueueCase; 6] {
    let case = |label, qid: u16, entries: Result<u32, &'static str>, base, pc| QueueCase {
        label,
        command: entries.map(|n| Command::create_cq(qid, n, base, pc)),
        sq: false,
        qid,
    };
    let (f, n) = (q.free_qid, Ok(q.entries));
    [
        case("cq-prp-outside", f, n, q.outside, true),
        case(
            "cq-straddles-ram-end",
            f,
            straddle_entries(q.max_entries, 16),
            q.straddle,
            true,
        ),
        case("cq-noncontiguous", f, n, q.good_cq, false),
        case(
            "cq-qid-beyond",
            q.granted.saturating_add(1),
            n,
            q.good_cq,
            true,
        ),
        case("cq-qid-0", 0, n, q.good_cq, true),
        case(
            "cq-size-beyond-mqes",
            f,
            beyond_mqes(q.max_entries),
            q.good_cq,
            true,
        ),
    ]
}

/// The Create I/O SQ cases (run while a good CQ `free_qid` exists).
pub fn sq_cases(q: &QueueContext) -> [QueueCase; 6] {
    let case = |label, qid: u16, entries: Result<u32, &'static str>, base, cqid, pc| QueueCase {
        label,
        command: entries.map(|n| Command::create_sq(qid, n, base, cqid, pc)),
        sq: true,
        qid,
    };
    let (f, n) = (q.free_qid, Ok(q.entries));
    [
        case("sq-prp-outside", f, n, q.outside, f, true),
        case(
            "sq-straddles-ram-end",
            f,
            straddle_entries(q.max_entries, 64),
            q.straddle,
            f,
            true,
        ),
        case("sq-noncontiguous", f, n, q.good_sq, f, false),
        case(
            "sq-qid-beyond",
            q.granted.saturating_add(1),
            n,
            q.good_sq,
            f,
            true,
        ),
        case(
            "sq-cq-uncreated",
            f,
            n,
            q.good_sq,
            f.saturating_add(1),
            true,
        ),
        case(
            "sq-size-beyond-mqes",
            f,
            beyond_mqes(q.max_entries),
            q.good_sq,
            f,
            true,
        ),
    ]
}

/// One bogus doorbell write of `nvme-doorbell`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoorbellWrite {
    /// Queue ID.
    pub qid: u16,
    /// CQ head doorbell (else SQ tail).
    pub completion: bool,
    /// Value written.
    pub value: u32,
}

impl fmt::Display for DoorbellWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, what) = if self.completion {
            ("cq", "head")
        } else {
            ("sq", "tail")
        };
        write!(f, "{kind}{}-{what}={:#x}", self.qid, self.value)
    }
}

/// The `nvme-doorbell` writes: on the probe's own I/O queue 1 and the admin
/// queue, values at or beyond the queue size; on queues it did not create
/// (the one after its last, the one after its allocation) and on the last
/// queue whose doorbell still lies in the 4 KiB doorbell page.
pub fn doorbell_writes(
    io_entries: u32,
    admin_entries: u32,
    created: u16,
    granted: u16,
    stride: u64,
) -> [DoorbellWrite; 12] {
    let w = |qid, completion, value| DoorbellWrite {
        qid,
        completion,
        value,
    };
    let last_in_page = (0x1000 / (2 * stride)).saturating_sub(1) as u16;
    let uncreated = created.saturating_add(1);
    let beyond = granted.saturating_add(1).min(last_in_page);
    [
        w(1, false, io_entries),
        w(1, false, 0xffff),
        w(1, true, io_entries),
        w(1, true, 0xffff_ffff),
        w(0, false, admin_entries),
        w(0, true, admin_entries + 7),
        w(uncreated, false, 1),
        w(uncreated, true, 1),
        w(beyond, false, 1),
        w(beyond, true, 1),
        w(last_in_page, false, 1),
        w(last_in_page, true, 1),
    ]
}

/// An SGL Data Block descriptor (§4.4, type 0h) in the data pointer:
/// dwords 6-7 address, 8 length, 9 bits 31:24 = SGL identifier (0).
pub fn sgl_read(nsid: u32, slba: u64, blocks: u32, addr: u64, len: u32) -> Command {
    Command::rw(io::READ, nsid, slba, blocks)
        .psdt(super::PSDT_SGL)
        .prp(addr, u64::from(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::{FUSE_FIRST, NSID_BROADCAST};

    #[test]
    fn outcomes_print_compactly() {
        assert_eq!(
            format!("{}", Outcome::Status(Status::new(0, 1))),
            "invalid-opcode(0/0x01)"
        );
        assert_eq!(format!("{}", Outcome::Timeout(5000)), "timeout(5000ms)");
        assert!(Outcome::Status(Status::new(0, 0x80)).refused());
        assert!(!Outcome::Status(Status::SUCCESS).refused());
        assert!(Outcome::Status(Status::SUCCESS).succeeded());
        assert!(!Outcome::Timeout(1).refused());
    }

    #[test]
    fn findings_verdicts() {
        let mut f = Findings::new();
        f.expect_refused("0x80", Outcome::Status(Status::new(0, 1)));
        f.expect_refused("size", Outcome::Skipped("mqes-max"));
        assert_eq!(f.verdict(), Verdict::Contained);
        f.expect_refused("0x7c", Outcome::Status(Status::SUCCESS));
        f.expect_refused("0x84", Outcome::Timeout(5000));
        f.note("reset");
        f.add("stray", 0, false);
        assert_eq!(f.verdict(), Verdict::NotContained);
        assert_eq!((f.breaches, f.attempted, f.cases), (2, 4, 5));
        assert_eq!(
            f.text(),
            "0x80=invalid-opcode(0/0x01) size=skipped(mqes-max) 0x7c=success(0/0x00) \
             0x84=timeout(5000ms) reset stray=0"
        );
    }

    #[test]
    fn a_case_that_was_not_sent_is_unverified_not_contained() {
        let mut f = Findings::new();
        f.expect_refused("read-prp1", Outcome::Status(Status::new(0, 4)));
        f.expect_refused("read-prp2", Outcome::NotSent("queue-full"));
        assert_eq!(f.verdict(), Verdict::Unverified);
        assert_eq!(f.unverified, 1);
        // A breach still wins: something did get through.
        f.expect_refused("write-prp1", Outcome::Status(Status::SUCCESS));
        assert_eq!(f.verdict(), Verdict::NotContained);
    }

    #[test]
    fn a_failed_preparation_is_unverified() {
        let mut f = Findings::new();
        f.expect_refused("cq-prp-outside", Outcome::Status(Status::new(1, 2)));
        f.unverified("good-cq", "timeout(5000ms)");
        assert_eq!(f.verdict(), Verdict::Unverified);
        assert_eq!(
            f.text(),
            "cq-prp-outside=invalid-queue-size(1/0x02) good-cq=timeout(5000ms)"
        );
    }

    #[test]
    fn nothing_attempted_is_unverified() {
        let f = Findings::new();
        assert_eq!(f.verdict(), Verdict::Unverified);
        let mut skipped = Findings::new();
        skipped.expect_refused("read-prp1", Outcome::Skipped("mdts"));
        skipped.expect_refused("read-prp2", Outcome::Skipped("mdts"));
        skipped.note("at=0x48000000");
        assert_eq!(skipped.verdict(), Verdict::Unverified);
    }

    fn round(result: Outcome, pages_ok: u64, decoy_hit: u64) -> Round {
        Round {
            result,
            pages_ok,
            pages: 8,
            decoy_hit,
        }
    }

    #[test]
    fn toctou_rounds() {
        let ok = Outcome::Status(Status::SUCCESS);
        assert_eq!(round(ok, 8, 0).after_doorbell(), Case::Held);
        assert_eq!(round(ok, 0, 0).after_doorbell(), Case::Breach);
        assert_eq!(round(ok, 8, 1).after_doorbell(), Case::Breach);
        assert_eq!(
            round(Outcome::Status(Status::new(0, 4)), 0, 0).after_doorbell(),
            Case::Breach,
            "the device saw the rewritten entries"
        );
        assert_eq!(
            round(Outcome::Timeout(1), 0, 0).after_doorbell(),
            Case::Breach
        );
        assert_eq!(
            round(Outcome::NotSent("queue-full"), 0, 0).after_doorbell(),
            Case::Unverified
        );
        assert_eq!(
            round(ok, 8, 0).to_string(),
            "success(0/0x00),original-pages-ok=8/8,decoy-pages-hit=0"
        );
    }

    #[test]
    fn a_control_round_that_misses_the_decoy_proves_nothing() {
        let ok = Outcome::Status(Status::SUCCESS);
        assert_eq!(round(ok, 0, 8).control(), Case::Held);
        assert_eq!(round(ok, 8, 0).control(), Case::Unverified);
        assert_eq!(
            round(Outcome::Status(Status::new(0, 4)), 0, 0).control(),
            Case::Unverified
        );
        assert_eq!(
            round(Outcome::NotSent("prp"), 0, 0).control(),
            Case::Unverified
        );
    }

    #[test]
    fn flipped_rounds() {
        let ok = Outcome::Status(Status::SUCCESS);
        assert_eq!(round(ok, 8, 0).flip(), Flip::Clean);
        assert_eq!(
            round(Outcome::Status(Status::new(0, 4)), 0, 0).flip(),
            Flip::Refused
        );
        assert_eq!(round(ok, 7, 0).flip(), Flip::Breach);
        assert_eq!(round(Outcome::Timeout(10), 0, 0).flip(), Flip::Breach);
        assert_eq!(
            round(Outcome::NotSent("flipper-not-running"), 0, 0).flip(),
            Flip::Unverified
        );
    }

    #[test]
    fn refused_admin_commands_are_well_formed() {
        let ctx = AdminContext {
            buffer: 0x4100_0000,
            buffer2: 0x4100_1000,
            outside: 0x8000_0000,
            lba_format: 2,
            cntlid: 5,
        };
        for op in REFUSED_ADMIN {
            assert_eq!(refused_admin_command(op, &ctx).opcode(), op);
        }
        let format = refused_admin_command(admin::FORMAT_NVM, &ctx);
        assert_eq!((format.dw[1], format.dw[10]), (1, 2));
        let dbbuf = refused_admin_command(admin::DOORBELL_BUFFER_CONFIG, &ctx);
        assert_eq!((dbbuf.prp1(), dbbuf.prp2()), (0x8000_0000, 0x8000_1000));
        assert_eq!(refused_admin_command(admin::SANITIZE, &ctx).dw[10], 2);
        assert_eq!(
            refused_admin_command(admin::FIRMWARE_COMMIT, &ctx).dw[10],
            9
        );
        assert_eq!(
            refused_admin_command(admin::DEVICE_SELF_TEST, &ctx).dw[1],
            NSID_BROADCAST
        );
        assert_eq!(
            admin_buffer_words(admin::NS_ATTACHMENT, &ctx),
            [0x5_0001, 0]
        );
        assert_eq!(admin_buffer_words(admin::NS_MANAGEMENT, &ctx), [8, 8]);
        assert_eq!(REFUSED_ADMIN.len(), 14);
    }

    #[test]
    fn lba_cases_reach_past_the_end() {
        let c = lba_outside_cases(1000);
        assert_eq!(
            c[0],
            LbaCase {
                label: "read@end",
                write: false,
                slba: 1000,
                blocks: 1
            }
        );
        assert_eq!((c[2].slba, c[2].blocks), (999, 2));
        assert_eq!(
            c[5].slba.wrapping_add(u64::from(c[5].blocks)),
            1,
            "wraps to 0"
        );
        assert_eq!(
            c[6].slba.wrapping_add(2000),
            1000,
            "offset 2 windows lands in window 1"
        );
        assert!(
            c.iter()
                .all(|c| c.slba.saturating_add(u64::from(c.blocks)) > 1000)
        );
        let cmd = Command::rw(io::READ, 1, c[4].slba, c[4].blocks);
        assert_eq!((cmd.dw[10], cmd.dw[11]), (u32::MAX, u32::MAX));
    }

    fn queue_context() -> QueueContext {
        QueueContext {
            free_qid: 2,
            granted: 2,
            max_entries: 0x800,
            entries: 64,
            good_cq: 0x4110_0000,
            good_sq: 0x4111_0000,
            outside: 0x5000_0000,
            straddle: 0x4fff_f000,
        }
    }

    #[test]
    fn queue_cases() {
        let q = queue_context();
        let cq = cq_cases(&q);
        let outside = cq[0].command.unwrap();
        assert_eq!((cq[0].qid, outside.prp1()), (2, 0x5000_0000));
        assert_eq!(outside.dw[11] & 1, 1);
        let straddle = cq[1].command.unwrap();
        assert_eq!(straddle.dw[10] >> 16, 2047, "MQES caps the 64 KiB of CQEs");
        assert_eq!(straddle.prp1(), 0x4fff_f000);
        assert_eq!(cq[2].command.unwrap().dw[11] & 1, 0, "PC = 0");
        assert_eq!(cq[3].qid, 3);
        assert_eq!(cq[4].qid, 0);
        assert_eq!(
            cq[5].command.unwrap().dw[10] >> 16,
            0x800,
            "MQES + 1 entries, 0-based"
        );
        let sq = sq_cases(&q);
        assert!(sq.iter().all(|c| c.sq));
        assert_eq!(
            sq[0].command.unwrap().dw[11] >> 16,
            2,
            "completes to the good CQ"
        );
        assert_eq!(sq[1].command.unwrap().dw[10] >> 16, 1023, "64 KiB of SQEs");
        assert_eq!(sq[4].command.unwrap().dw[11] >> 16, 3);
        // MQES = 0xffff: no size beyond it exists.
        let big = QueueContext {
            max_entries: 65536,
            ..q
        };
        assert_eq!(cq_cases(&big)[5].command, Err("mqes-is-max"));
        assert_eq!(sq_cases(&big)[5].command, Err("mqes-is-max"));
        assert_eq!(
            cq_cases(&big)[1].command.unwrap().dw[10] >> 16,
            4095,
            "64 KiB of CQEs"
        );
        // 64 entries: 1 KiB of CQEs or 4 KiB of SQEs fit in the last page,
        // nothing can straddle the end of RAM from an aligned base.
        let small = QueueContext {
            max_entries: 64,
            ..q
        };
        assert_eq!(cq_cases(&small)[1].command, Err("mqes-fits-a-page"));
        assert_eq!(sq_cases(&small)[1].command, Err("mqes-fits-a-page"));
        // 65 SQEs are 4160 bytes: they straddle.
        let just = QueueContext {
            max_entries: 65,
            ..q
        };
        assert_eq!(sq_cases(&just)[1].command.unwrap().dw[10] >> 16, 64);
        assert!(cq_cases(&just)[1].command.is_err());
    }

    #[test]
    fn doorbells() {
        let w = doorbell_writes(64, 32, 2, 4, 4);
        assert_eq!(format!("{}", w[0]), "sq1-tail=0x40");
        assert_eq!(format!("{}", w[3]), "cq1-head=0xffffffff");
        assert_eq!((w[6].qid, w[8].qid, w[10].qid), (3, 5, 511));
        // The last doorbell in the page: 0x1000 + (2 * 511 + 1) * 4 = 0x1ffc.
        assert_eq!(crate::nvme::doorbell_offset(w[11].qid, true, 4), 0x1ffc);
        // A stride of 16 leaves room for 128 queues.
        assert_eq!(doorbell_writes(64, 32, 2, 400, 16)[8].qid, 127);
    }

    #[test]
    fn sgl_descriptor() {
        let c = sgl_read(1, 8, 1, 0x4100_0000, 512);
        assert_eq!(c.dw[0] >> 14 & 3, 1);
        assert_eq!(
            (c.dw[6], c.dw[7], c.dw[8], c.dw[9]),
            (0x4100_0000, 0, 512, 0)
        );
        let fused = Command::rw(io::READ, 1, 0, 1).fuse(FUSE_FIRST);
        assert_eq!(fused.dw[0] >> 8 & 3, 1);
    }
}
