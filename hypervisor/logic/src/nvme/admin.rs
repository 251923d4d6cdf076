//! Admin commands of the virtual controller (Base 1.4 §5): all emulated from an allow-list,
//! none ever reaches the physical controller.
//!
//! Emulated: Identify (§5.15), Get Log Page (§5.14: Error Information, SMART / Health
//! Information with the slice's own counters, Firmware Slot Information), Set / Get Features
//! (§5.21, §5.9), Create / Delete I/O Submission and Completion Queue (§5.3-5.6), Asynchronous
//! Event Request (§5.2), Abort (§5.1, never aborts), Keep Alive (§5.16), Doorbell Buffer
//! Config (§5.8, shadow doorbells in the slice's RAM). Everything else, including every
//! optional command Identify Controller OACS says is absent (Format NVM, Sanitize, firmware,
//! namespace management and attachment, virtualization management, security, self-test,
//! directives, NVMe-MI) and vendor specific opcodes, completes with Invalid Command Opcode.

use zerocopy::{FromZeros, IntoBytes};

use super::backend::NvmeBackend;
use super::controller::{CompletionQueue, ShadowDoorbells, SubmissionQueue, VirtualNvme, Work};
use super::identify::{AERL, WCTEMP};
use super::io::Transfer;
use super::memory::{Ipa, short_transfer};
use super::spec::{
    CC, CQE_SIZE, FirmwareSlotLog, NSID_ALL, PAGE_MASK, SQE_SIZE, SmartLog, Status,
    SubmissionEntry, admin, cns, feature, log,
};

/// What an admin command came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AdminOutcome {
    /// Post this completion now.
    Complete { status: Status, dw0: u32 },
    /// Completed later (Asynchronous Event Request, Delete I/O SQ with commands in flight).
    Held,
}

impl AdminOutcome {
    const fn status(status: Status) -> AdminOutcome {
        AdminOutcome::Complete { status, dw0: 0 }
    }
    const fn success(dw0: u32) -> AdminOutcome {
        AdminOutcome::Complete {
            status: Status::SUCCESS,
            dw0,
        }
    }
}

impl From<Result<u32, Status>> for AdminOutcome {
    fn from(result: Result<u32, Status>) -> AdminOutcome {
        match result {
            Ok(dw0) => AdminOutcome::success(dw0),
            Err(status) => AdminOutcome::status(status),
        }
    }
}

/// Feature values the guest can set and read back (Base 1.4 §5.21.1). They change nothing
/// on the physical controller, except that turning the volatile write cache off makes every
/// write Force Unit Access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Features {
    arbitration: u32,
    power_management: u32,
    over_temperature: u16,
    under_temperature: u16,
    error_recovery: u32,
    /// Volatile Write Cache Enable (only meaningful with a cache).
    pub write_cache: bool,
    coalescing: u32,
    /// Interrupt Vector Configuration: Coalescing Disable per vector.
    coalescing_disabled: u128,
    write_atomicity: u32,
    async_events: u32,
}

/// Get Features SEL values (Base 1.4 Figure 238).
const SEL_CURRENT: u32 = 0;
const SEL_DEFAULT: u32 = 1;
const SEL_SAVED: u32 = 2;
const SEL_CAPABILITIES: u32 = 3;
/// Capabilities: changeable, neither saveable nor namespace specific.
const CAPABILITY_CHANGEABLE: u32 = 1 << 2;

impl Features {
    pub fn new(write_cache: bool) -> Features {
        Features {
            arbitration: 0,
            power_management: 0,
            over_temperature: WCTEMP,
            under_temperature: 0,
            error_recovery: 0,
            write_cache,
            coalescing: 0,
            coalescing_disabled: 0,
            write_atomicity: 0,
            async_events: 0,
        }
    }
}

/// Temperature Threshold DW11: TMPTH 15:0, TMPSEL 19:16, THSEL 21:20.
fn temperature_selector(dw11: u32) -> Result<(u32, bool), Status> {
    let sensor = (dw11 >> 16) & 0xf;
    let under = match (dw11 >> 20) & 0b11 {
        0 => false,
        1 => true,
        _ => return Err(Status::INVALID_FIELD),
    };
    Ok((sensor, under))
}

/// The slice's own SMART / Health counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct SmartCounters {
    /// 512-byte units read and written.
    units_read: u128,
    units_written: u128,
    read_commands: u128,
    write_commands: u128,
    media_errors: u128,
}

impl SmartCounters {
    /// Counts one completed I/O command.
    pub fn count(&mut self, transfer: Transfer, status: Status) {
        if status.is_media_error() {
            self.media_errors += 1;
        }
        if !status.is_success() {
            return;
        }
        match transfer {
            Transfer::Read { bytes } => {
                self.units_read += u128::from(bytes.div_ceil(512));
                self.read_commands += 1;
            }
            Transfer::Write { bytes } => {
                self.units_written += u128::from(bytes.div_ceil(512));
                self.write_commands += 1;
            }
            Transfer::None => {}
        }
    }

    fn log(&self) -> SmartLog {
        let mut log = SmartLog::new_zeroed();
        log.temperature = 308.into();
        log.available_spare = 100;
        log.spare_threshold = 10;
        // Data units are thousands of 512-byte units, rounded up (Base 1.4 Figure 194).
        log.data_units_read = self.units_read.div_ceil(1000).into();
        log.data_units_written = self.units_written.div_ceil(1000).into();
        log.host_read_commands = self.read_commands.into();
        log.host_write_commands = self.write_commands.into();
        log.media_errors = self.media_errors.into();
        log
    }
}

/// Bytes of one Error Information log entry; the slice's log has one, always empty.
const ERROR_LOG_ENTRY: usize = 64;

impl VirtualNvme {
    /// Executes one admin command.
    pub(super) fn admin_command(
        &mut self,
        env: &mut impl NvmeBackend,
        cmd: &SubmissionEntry,
        work: &mut Work,
    ) -> AdminOutcome {
        if cmd.fuse() != 0 || cmd.psdt() != 0 {
            return AdminOutcome::status(Status::INVALID_FIELD);
        }
        match cmd.opcode {
            admin::DELETE_IO_SQ => {
                // Deleting a direct SQ ends what is in flight on it (Base 1.4 §5.6): the
                // controller aborts it as the pair moves back.
                let qid = usize::from(cmd.cdw10.get() as u16);
                if (1..=self.hw.len()).contains(&qid) && self.sqs[qid].is_some() {
                    self.end_direct(env, qid - 1, true, work);
                }
                self.delete_sq(cmd)
            }
            admin::CREATE_IO_SQ => {
                let created = self.create_sq(cmd);
                if created.is_ok() {
                    // A new SQ's tail is 0: its first shadow tail update rings.
                    let qid = usize::from(cmd.cdw10.get() as u16);
                    self.bind_direct(env, qid, work);
                    self.write_event_index(env, 2 * qid, 0);
                }
                created.into()
            }
            admin::GET_LOG_PAGE => self.get_log_page(env, cmd).into(),
            admin::DELETE_IO_CQ => self.delete_cq(cmd).into(),
            admin::CREATE_IO_CQ => {
                let created = self.create_cq(cmd);
                if created.is_ok() {
                    let qid = usize::from(cmd.cdw10.get() as u16);
                    if let Some(cq) = self.cqs[qid] {
                        self.set_cq_event(env, qid, cq.behind_head());
                    }
                }
                created.into()
            }
            admin::DOORBELL_BUFFER_CONFIG => self.doorbell_buffer_config(env, cmd).into(),
            admin::IDENTIFY => self.identify(env, cmd).into(),
            // Never aborts anything: DW0 bit 0 = 1, "command not aborted".
            admin::ABORT => AdminOutcome::success(1),
            admin::SET_FEATURES => self.set_features(cmd).into(),
            admin::GET_FEATURES => self.get_features(cmd).into(),
            admin::ASYNC_EVENT_REQUEST => {
                if self.aers.push_back(cmd.command_id.get()).is_err() {
                    return AdminOutcome::status(Status::AER_LIMIT_EXCEEDED);
                }
                self.deliver_events(work);
                AdminOutcome::Held
            }
            admin::KEEP_ALIVE => AdminOutcome::success(0),
            _ => AdminOutcome::status(Status::INVALID_OPCODE),
        }
    }

    /// Doorbell Buffer Config: PRP1 is the shadow doorbell page, PRP2 the EventIdx page, each
    /// page-aligned inside the slice's RAM. The EventIdx of every existing I/O queue is set
    /// at once (a CQ the controller waits on asks for the next head update); new queues get
    /// theirs when created.
    fn doorbell_buffer_config(
        &mut self,
        env: &mut impl NvmeBackend,
        cmd: &SubmissionEntry,
    ) -> Result<u32, Status> {
        let (doorbells, event_indexes) = (cmd.prp1.get(), cmd.prp2.get());
        let page_in_ram =
            |at: u64| at & PAGE_MASK == 0 && self.config.ram.contains(Ipa(at), PAGE_MASK + 1);
        if !page_in_ram(doorbells) || !page_in_ram(event_indexes) || doorbells == event_indexes {
            return Err(Status::INVALID_FIELD);
        }
        self.shadow = Some(ShadowDoorbells {
            doorbells: Ipa(doorbells),
            event_indexes: Ipa(event_indexes),
        });
        for qid in 1..self.sqs.len() {
            if let Some(sq) = self.sqs[qid].as_mut() {
                sq.quiet = None;
                let tail = sq.tail;
                self.write_event_index(env, 2 * qid, tail);
            }
            if let Some(cq) = self.cqs[qid] {
                // Completions held for room, or a direct SQ's commands waiting for it: the
                // controller waits for the guest's next head update, which must now ring.
                let waiting = cq.held.is_some()
                    || cq.direct.is_some_and(|sq| {
                        self.sqs[usize::from(sq)].is_some_and(|sq| sq.head != sq.tail)
                    });
                let event = if waiting { cq.head } else { cq.behind_head() };
                self.set_cq_event(env, qid, event);
            }
        }
        Ok(0)
    }

    /// Copies `data` to the guest buffer the command's PRPs name (at most one page).
    fn write_data(
        &self,
        env: &mut impl NvmeBackend,
        cmd: &SubmissionEntry,
        data: &[u8],
    ) -> Result<(), Status> {
        let transfer =
            short_transfer(&self.config.ram, cmd.prp1.get(), cmd.prp2.get(), data.len())?;
        let mut done = 0;
        for (ipa, len) in transfer.pieces() {
            env.write_guest(ipa, &data[done..done + len])
                .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
            done += len;
        }
        Ok(())
    }

    fn identify(&self, env: &mut impl NvmeBackend, cmd: &SubmissionEntry) -> Result<u32, Status> {
        let nsid = cmd.nsid.get();
        let data = match (cmd.cdw10.get() & 0xff) as u8 {
            cns::NAMESPACE if nsid == 1 => self.identity.namespace(),
            cns::NAMESPACE => return Err(Status::INVALID_NAMESPACE),
            cns::CONTROLLER => self.identity.controller(),
            cns::ACTIVE_NAMESPACES if nsid < NSID_ALL - 1 => self.identity.active_namespaces(nsid),
            cns::ACTIVE_NAMESPACES => return Err(Status::INVALID_NAMESPACE),
            cns::NAMESPACE_DESCRIPTORS if nsid == 1 => self.identity.namespace_descriptors(),
            cns::NAMESPACE_DESCRIPTORS => return Err(Status::INVALID_NAMESPACE),
            _ => return Err(Status::INVALID_FIELD),
        };
        self.write_data(env, cmd, &data)?;
        Ok(0)
    }

    fn get_log_page(
        &mut self,
        env: &mut impl NvmeBackend,
        cmd: &SubmissionEntry,
    ) -> Result<u32, Status> {
        let cdw10 = cmd.cdw10.get();
        let id = (cdw10 & 0xff) as u8;
        let retain_event = cdw10 & 1 << 15 != 0;
        let dwords = (u64::from(cmd.cdw11.get() & 0xffff) << 16 | u64::from(cdw10 >> 16)) + 1;
        let offset = u64::from(cmd.cdw13.get()) << 32 | u64::from(cmd.cdw12.get());
        let mut page = [0u8; 512];
        let len = match id {
            log::ERROR_INFORMATION => ERROR_LOG_ENTRY,
            log::SMART_HEALTH => {
                if !matches!(cmd.nsid.get(), 0 | 1 | NSID_ALL) {
                    return Err(Status::INVALID_FIELD);
                }
                page.copy_from_slice(self.smart.log().as_bytes());
                page.len()
            }
            log::FIRMWARE_SLOT => {
                let mut slots = FirmwareSlotLog::new_zeroed();
                slots.active = 1;
                slots.revisions[0] = self.identity.firmware();
                page.copy_from_slice(slots.as_bytes());
                page.len()
            }
            _ => return Err(Status::INVALID_LOG_PAGE),
        };
        if offset & 0b11 != 0 || offset > len as u64 {
            return Err(Status::INVALID_FIELD);
        }
        let start = offset as usize;
        let end = (start as u64 + dwords * 4).min(len as u64) as usize;
        self.write_data(env, cmd, &page[start..end])?;
        if id == log::ERROR_INFORMATION && !retain_event {
            self.events.masked = false;
        }
        Ok(0)
    }

    fn set_features(&mut self, cmd: &SubmissionEntry) -> Result<u32, Status> {
        let cdw10 = cmd.cdw10.get();
        if cdw10 & 1 << 31 != 0 {
            return Err(Status::FEATURE_NOT_SAVEABLE);
        }
        let value = cmd.cdw11.get();
        let f = &mut self.features;
        match (cdw10 & 0xff) as u8 {
            feature::ARBITRATION => f.arbitration = value & 0xffff_ff07,
            feature::POWER_MANAGEMENT => {
                // One power state (NPSS = 0).
                if value & 0x1f != 0 {
                    return Err(Status::INVALID_FIELD);
                }
                f.power_management = value & 0xff;
            }
            feature::TEMPERATURE_THRESHOLD => match temperature_selector(value)? {
                (0 | 0xf, false) => f.over_temperature = value as u16,
                (0 | 0xf, true) => f.under_temperature = value as u16,
                _ => return Err(Status::INVALID_FIELD),
            },
            feature::ERROR_RECOVERY => {
                // Deallocated or Unwritten Logical Block Error is not supported.
                if value & 1 << 16 != 0 {
                    return Err(Status::INVALID_FIELD);
                }
                f.error_recovery = value & 0xffff;
            }
            feature::VOLATILE_WRITE_CACHE if self.config.volatile_write_cache => {
                f.write_cache = value & 1 != 0
            }
            feature::NUMBER_OF_QUEUES => return self.set_number_of_queues(value),
            feature::INTERRUPT_COALESCING => f.coalescing = value & 0xffff,
            feature::INTERRUPT_VECTOR_CONFIG => {
                let vector = value & 0xffff;
                if vector >= u32::from(self.config.msix_vectors()) {
                    return Err(Status::INVALID_FIELD);
                }
                if value & 1 << 16 != 0 {
                    f.coalescing_disabled |= 1 << vector;
                } else {
                    f.coalescing_disabled &= !(1 << vector);
                }
            }
            feature::WRITE_ATOMICITY => f.write_atomicity = value & 1,
            feature::ASYNC_EVENT_CONFIG => f.async_events = value & 0xffff,
            _ => return Err(Status::INVALID_FIELD),
        }
        Ok(0)
    }

    /// Number of Queues (Base 1.4 §5.21.1.7): grants at most the slice's hardware queue pairs;
    /// only before the first I/O queue exists.
    fn set_number_of_queues(&mut self, value: u32) -> Result<u32, Status> {
        let (sqs, cqs) = (value & 0xffff, value >> 16);
        if sqs == 0xffff || cqs == 0xffff {
            return Err(Status::INVALID_FIELD);
        }
        if self.sqs.iter().skip(1).any(Option::is_some)
            || self.cqs.iter().skip(1).any(Option::is_some)
        {
            return Err(Status::COMMAND_SEQUENCE_ERROR);
        }
        let count = u32::from(self.config.queues.count);
        self.granted_sqs = (sqs + 1).min(count) as u16;
        self.granted_cqs = (cqs + 1).min(count) as u16;
        Ok(self.number_of_queues())
    }

    fn number_of_queues(&self) -> u32 {
        u32::from(self.granted_cqs - 1) << 16 | u32::from(self.granted_sqs - 1)
    }

    fn get_features(&self, cmd: &SubmissionEntry) -> Result<u32, Status> {
        let cdw10 = cmd.cdw10.get();
        let id = (cdw10 & 0xff) as u8;
        let select = (cdw10 >> 8) & 0b111;
        let defaults = Features::new(self.config.volatile_write_cache);
        let f = match select {
            SEL_CURRENT => &self.features,
            SEL_DEFAULT | SEL_SAVED => &defaults,
            SEL_CAPABILITIES => &self.features,
            _ => return Err(Status::INVALID_FIELD),
        };
        let arg = cmd.cdw11.get();
        let value = match id {
            feature::ARBITRATION => f.arbitration,
            feature::POWER_MANAGEMENT => f.power_management,
            feature::TEMPERATURE_THRESHOLD => match temperature_selector(arg)? {
                (0, false) => u32::from(f.over_temperature),
                (0, true) => u32::from(f.under_temperature),
                _ => return Err(Status::INVALID_FIELD),
            },
            feature::ERROR_RECOVERY => f.error_recovery,
            feature::VOLATILE_WRITE_CACHE if self.config.volatile_write_cache => {
                u32::from(f.write_cache)
            }
            feature::NUMBER_OF_QUEUES if select == SEL_CURRENT => self.number_of_queues(),
            feature::NUMBER_OF_QUEUES => {
                let n = u32::from(self.config.queues.count - 1);
                n << 16 | n
            }
            feature::INTERRUPT_COALESCING => f.coalescing,
            feature::INTERRUPT_VECTOR_CONFIG => {
                let vector = arg & 0xffff;
                if vector >= u32::from(self.config.msix_vectors()) {
                    return Err(Status::INVALID_FIELD);
                }
                vector | u32::from(f.coalescing_disabled & 1 << vector != 0) << 16
            }
            feature::WRITE_ATOMICITY => f.write_atomicity,
            feature::ASYNC_EVENT_CONFIG => f.async_events,
            _ => return Err(Status::INVALID_FIELD),
        };
        Ok(if select == SEL_CAPABILITIES {
            CAPABILITY_CHANGEABLE
        } else {
            value
        })
    }

    /// Queue ID (CDW10 15:0) and size (CDW10 31:16, 0-based) of a Create command, and its
    /// memory (PRP1) checked: contiguous, page aligned, inside the slice's RAM.
    fn queue_geometry(&self, cmd: &SubmissionEntry, entry_size: u64) -> Result<(Ipa, u16), Status> {
        let size = (cmd.cdw10.get() >> 16) + 1;
        if size < 2 || size > u32::from(self.config.queues.depth) {
            return Err(Status::INVALID_QUEUE_SIZE);
        }
        // Physically Contiguous is required (CAP.CQR = 1).
        if cmd.cdw11.get() & 1 == 0 {
            return Err(Status::INVALID_FIELD);
        }
        let base = cmd.prp1.get();
        if base & PAGE_MASK != 0 {
            return Err(Status::PRP_OFFSET_INVALID);
        }
        if !self
            .config
            .ram
            .contains(Ipa(base), u64::from(size) * entry_size)
        {
            return Err(Status::INVALID_FIELD);
        }
        Ok((Ipa(base), size as u16))
    }

    fn create_cq(&mut self, cmd: &SubmissionEntry) -> Result<u32, Status> {
        let qid = usize::from(cmd.cdw10.get() as u16);
        if qid == 0 || qid > usize::from(self.granted_cqs) || self.cqs[qid].is_some() {
            return Err(Status::INVALID_QUEUE_ID);
        }
        let (base, size) = self.queue_geometry(cmd, CQE_SIZE)?;
        let cdw11 = cmd.cdw11.get();
        let interrupts = cdw11 & 1 << 1 != 0;
        let vector = (cdw11 >> 16) as u16;
        if interrupts && vector >= self.config.msix_vectors() {
            return Err(Status::INVALID_INTERRUPT_VECTOR);
        }
        if self.cc_entry_sizes() != (6, 4) {
            return Err(Status::INVALID_FIELD);
        }
        self.cqs[qid] = Some(CompletionQueue::new(base, size, vector, interrupts));
        Ok(0)
    }

    fn create_sq(&mut self, cmd: &SubmissionEntry) -> Result<u32, Status> {
        let qid = usize::from(cmd.cdw10.get() as u16);
        if qid == 0 || qid > usize::from(self.granted_sqs) || self.sqs[qid].is_some() {
            return Err(Status::INVALID_QUEUE_ID);
        }
        let (base, size) = self.queue_geometry(cmd, SQE_SIZE)?;
        let cq = usize::from((cmd.cdw11.get() >> 16) as u16);
        if cq == 0 || !matches!(self.cqs.get(cq), Some(Some(_))) {
            return Err(Status::COMPLETION_QUEUE_INVALID);
        }
        if self.cc_entry_sizes() != (6, 4) {
            return Err(Status::INVALID_FIELD);
        }
        if let Some(Some(cq)) = self.cqs.get_mut(cq) {
            cq.sqs += 1;
        }
        // Guest SQ n is bound to the slice's n-th hardware queue (index n - 1).
        self.sqs[qid] = Some(SubmissionQueue {
            base,
            size,
            head: 0,
            tail: 0,
            cq: cq as u16,
            outstanding: 0,
            deleting: None,
            quiet: None,
        });
        Ok(0)
    }

    fn cc_entry_sizes(&self) -> (u32, u32) {
        let cc = self.cc_register();
        (cc.read(CC::IOSQES), cc.read(CC::IOCQES))
    }

    fn delete_sq(&mut self, cmd: &SubmissionEntry) -> AdminOutcome {
        let qid = usize::from(cmd.cdw10.get() as u16);
        let Some(Some(sq)) = self.sqs.get_mut(qid).filter(|_| qid != 0) else {
            return AdminOutcome::status(Status::INVALID_QUEUE_ID);
        };
        if sq.deleting.is_some() {
            return AdminOutcome::status(Status::INVALID_QUEUE_ID);
        }
        // Commands not yet fetched are dropped; fetched ones finish first.
        sq.tail = sq.head;
        if sq.outstanding > 0 {
            sq.deleting = Some(cmd.command_id.get());
            return AdminOutcome::Held;
        }
        let cq = usize::from(sq.cq);
        self.sqs[qid] = None;
        if let Some(Some(cq)) = self.cqs.get_mut(cq) {
            cq.sqs -= 1;
        }
        AdminOutcome::success(0)
    }

    fn delete_cq(&mut self, cmd: &SubmissionEntry) -> Result<u32, Status> {
        let qid = usize::from(cmd.cdw10.get() as u16);
        let Some(Some(cq)) = self.cqs.get(qid).filter(|_| qid != 0) else {
            return Err(Status::INVALID_QUEUE_ID);
        };
        if cq.sqs > 0 {
            return Err(Status::INVALID_QUEUE_DELETION);
        }
        self.cqs[qid] = None;
        Ok(0)
    }
}

/// The most Asynchronous Event Requests outstanding at once.
pub(super) const AER_SLOTS: usize = AERL as usize + 1;
