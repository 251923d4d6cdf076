//! The physical controller's driver: bring-up (PCI set-up, reset and enable, Identify, Number
//! of Queues), the polled admin queue, I/O queue pair creation with their MSI-X vectors, and
//! the doorbells.

use alloc::string::String;

use tock_registers::LocalRegisterCopy;

use super::queue::QueuePair;
use super::{Clock, CpuWritten, DeviceWritten, DmaAllocator, HostBridge, NvmeError, Registers};
use crate::inventory::PcieHost;
use crate::nvme::identify::{IDENTIFY_SIZE, ctrl, ns};
use crate::nvme::spec::{
    AQA, CAP, CC, CQE_SIZE, CREATE_CQ_DW11, CREATE_QUEUE_DW10, CREATE_SQ_DW11, CSTS,
    CompletionEntry, FEATURES_DW10, IDENTIFY_DW10, LBA_FORMAT, NUMBER_OF_QUEUES, PAGE_SIZE,
    SQE_SIZE, SubmissionEntry, admin, cns, feature, reg,
};
use crate::pci::{
    BarWindows, Bdf, CLASS_NVME, ConfigSpace, MsixCapability, header, msix, place_bars, scan_bus,
};

/// Entries of each admin queue.
pub const ADMIN_ENTRIES: u16 = 32;
/// Vector Control with the entry's mask bit set.
const MSIX_ENTRY_MASKED: u32 = 1;
/// CAP.TO's unit.
const TIMEOUT_UNIT_MS: u64 = 500;
/// The namespace the slices share.
const NAMESPACE: u32 = 1;
/// Block sizes the hypervisor passes on: 512 B to 4 KiB.
const BLOCK_SHIFTS: core::ops::RangeInclusive<u8> = 9..=12;

/// What the slices need from the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueNeeds {
    /// I/O queue pairs (Set Features, Number of Queues asks for at least one).
    pub pairs: u16,
    /// Entries per I/O queue.
    pub entries: u16,
}

/// What Identify Controller and Identify Namespace said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerInfo {
    /// PCI Subsystem Vendor ID.
    pub subsystem_vendor: u16,
    /// Serial number, trailing spaces removed.
    pub serial: String,
    /// Model number, trailing spaces removed.
    pub model: String,
    /// Firmware revision, trailing spaces removed.
    pub firmware: String,
    /// Maximum data transfer size as a power of two of 4 KiB pages (0 = no limit).
    pub mdts: u8,
    /// A volatile write cache is present.
    pub volatile_write_cache: bool,
    /// Optional NVM command support (ONCS).
    pub oncs: u16,
    /// Largest queue the controller accepts (CAP.MQES + 1).
    pub max_queue_entries: u32,
    /// I/O queue pairs the controller granted (Set Features, Number of Queues).
    pub io_queues: u16,
    /// Namespace 1: block count.
    pub blocks: u64,
    /// Namespace 1: log2 of the block size.
    pub lba_shift: u8,
}

/// `result`, with the controller behind `registers` disabled (CC.EN = 0) if it is an error.
fn disabled<R: Registers, T>(registers: &R, result: Result<T, NvmeError>) -> Result<T, NvmeError> {
    if result.is_err() {
        registers.write32(reg::CC, 0);
    }
    result
}

/// Turns memory decoding, bus mastering and MSI-X of function `bdf` off (the function mask
/// set): it can neither reach memory nor signal.
fn quiet(config: &mut dyn ConfigSpace, bdf: Bdf) {
    let command = config.read(bdf, header::COMMAND) & 0xffff;
    config.write(
        bdf,
        header::COMMAND,
        command & !(header::MEMORY_SPACE | header::BUS_MASTER),
    );
    if let Some(msix) = MsixCapability::find(config, bdf) {
        msix.set_control(config, bdf, false, true);
    }
}

/// Status Code Type 1 (command specific), Invalid Queue Identifier (Base 1.4 Figure 137).
const INVALID_QUEUE_IDENTIFIER: u16 = 0x101;

/// The physical controller once up: its BAR0 registers `R`, the admin queue pair in memory
/// from `M`, and the clock `K` for its timeouts.
pub struct PhysicalController<R, M: DmaAllocator, K> {
    /// Where it sits on the bus.
    pub bdf: Bdf,
    /// The ITS DeviceID its MSIs carry (its requester ID through the host bridge's `msi-map`).
    pub its_device: u32,
    /// What it said about itself and namespace 1.
    pub info: ControllerInfo,
    registers: R,
    clock: K,
    /// The admin queue, under its own lock: a slice's core may run admin commands at run
    /// time (moving a queue pair, decision 5) while other cores ring their I/O doorbells.
    admin: spin::Mutex<AdminQueue<M::CpuWritten, M::DeviceWritten>>,
    /// Offset of the MSI-X table inside BAR0.
    msix_table: u64,
    msix_vectors: u16,
    /// BAR0's size: every doorbell lies below it.
    bar0_size: u64,
    /// Bytes between doorbells (CAP.DSTRD).
    doorbell_stride: u64,
    timeout_ms: u64,
}

/// The admin queue pair and what its commands need.
struct AdminQueue<S, C> {
    pair: QueuePair<S, C>,
    next_cid: u16,
    /// The opcode of an admin command that timed out (then no more are queued).
    lost: Option<u8>,
}

/// What the controller's status register says of it once it was up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Ready, no fatal status.
    Ready,
    /// CSTS.CFS: a fatal error it could not report in a completion.
    Fatal,
    /// CSTS.RDY = 0 with nothing in the hypervisor having disabled it.
    NotReady,
    /// The registers read all ones: the function no longer answers (link down, removed).
    Gone,
}

impl Health {
    /// Why a controller in this state keeps commands: `None` when it looks healthy.
    pub fn trouble(self) -> Option<&'static str> {
        match self {
            Self::Ready => None,
            Self::Fatal => Some("the controller reports a fatal error (CSTS.CFS)"),
            Self::NotReady => Some("the controller is no longer ready (CSTS.RDY = 0)"),
            Self::Gone => Some("the controller does not answer (its registers read all ones)"),
        }
    }
}

impl<R: Registers, M: DmaAllocator, K: Clock> PhysicalController<R, M, K> {
    /// Finds the NVMe controller behind `bridge` (on `host`'s first bus), places its BARs in
    /// `windows` (shared with every other function the hypervisor places), resets
    /// and enables it, and identifies it and namespace 1; asks for `needs.pairs` I/O queue
    /// pairs and checks that queues of `needs.entries` entries are possible.
    pub fn bring_up<B>(
        bridge: &mut B,
        host: &PcieHost,
        windows: &mut BarWindows,
        memory: &mut M,
        clock: K,
        needs: QueueNeeds,
    ) -> Result<Self, NvmeError>
    where
        B: HostBridge<Registers = R>,
    {
        let function = scan_bus(bridge.config(), host.bus_start)
            .into_iter()
            .find(|f| f.class == CLASS_NVME)
            .ok_or(NvmeError::NoController)?;
        Self::bring_up_at(bridge, function.bdf, host, windows, memory, clock, needs)
    }

    /// [`Self::bring_up`] of the NVMe function at `bdf` (any on `host`'s hierarchy).
    pub fn bring_up_at<B>(
        bridge: &mut B,
        bdf: Bdf,
        host: &PcieHost,
        windows: &mut BarWindows,
        memory: &mut M,
        clock: K,
        needs: QueueNeeds,
    ) -> Result<Self, NvmeError>
    where
        B: HostBridge<Registers = R>,
    {
        let its_device = host
            .its_device_id(bdf.requester_id())
            .ok_or(NvmeError::Unsupported(
                "no ITS DeviceID for its requester ID (msi-map)",
            ))?;
        let result =
            Self::bring_up_function(bridge, windows, memory, clock, needs, bdf, its_device);
        if result.is_err() {
            // Whatever failed, the function is left doing nothing (it stayed enabled and
            // bus-mastering, its vectors aimed at the ITS; found in review).
            quiet(bridge.config(), bdf);
        }
        result
    }

    /// Gives the controller up when what the hypervisor needed of it after [`Self::bring_up`]
    /// failed: disabled, then no DMA, no messages, no decoding.
    pub fn shut_down(self, config: &mut dyn ConfigSpace) {
        self.registers.write32(reg::CC, 0);
        quiet(config, self.bdf);
    }

    fn bring_up_function<B>(
        bridge: &mut B,
        windows: &mut BarWindows,
        memory: &mut M,
        clock: K,
        needs: QueueNeeds,
        bdf: Bdf,
        its_device: u32,
    ) -> Result<Self, NvmeError>
    where
        B: HostBridge<Registers = R>,
    {
        // Bus mastering stays off until the controller is reset: one the firmware left
        // running must not reach memory in between (found in review).
        let bars = place_bars(bridge.config(), windows, bdf)
            .map_err(|_| NvmeError::Bars("no room in the host bridge windows"))?;
        let command = bridge.config().read(bdf, header::COMMAND) & 0xffff;
        bridge.config().write(
            bdf,
            header::COMMAND,
            command | header::MEMORY_SPACE | header::INTX_DISABLE,
        );
        let bar0 = bars
            .iter()
            .find(|b| b.bar.index == 0)
            .ok_or(NvmeError::Bars("no BAR0"))?
            .cpu;
        let registers = bridge
            .map(bar0)
            .ok_or(NvmeError::Bars("BAR0 not grantable"))?;
        // From here on a failure leaves the controller disabled (CC.EN = 0), whatever state
        // the firmware left it in.
        let checked = Self::check(bridge, bdf, &registers, bar0.size, needs);
        let (msix, cap) = disabled(&registers, checked)?;
        let admin = disabled(&registers, QueuePair::new(0, ADMIN_ENTRIES, memory))?;
        let max_queue_entries = cap.read(CAP::MQES) as u32 + 1;
        let mut controller = PhysicalController {
            bdf,
            its_device,
            info: ControllerInfo {
                subsystem_vendor: 0,
                serial: String::new(),
                model: String::new(),
                firmware: String::new(),
                mdts: 0,
                volatile_write_cache: false,
                oncs: 0,
                max_queue_entries,
                io_queues: 0,
                blocks: 0,
                lba_shift: 9,
            },
            registers,
            clock,
            admin: spin::Mutex::new(AdminQueue {
                pair: admin,
                next_cid: 0,
                lost: None,
            }),
            msix_table: msix.table_offset,
            msix_vectors: msix.vectors,
            bar0_size: bar0.size,
            doorbell_stride: 4 << cap.read(CAP::DSTRD),
            timeout_ms: cap.read(CAP::TO).max(1) * TIMEOUT_UNIT_MS,
        };
        let started = controller.start(bridge, bdf, &msix, memory, needs);
        if let Err(error) = started {
            // Nothing it was given may stay in use: the admin queues, the Identify buffer.
            controller.registers.write32(reg::CC, 0);
            return Err(error);
        }
        Ok(controller)
    }

    /// What the function must offer before the hypervisor uses it: MSI-X with its table in
    /// BAR0 (enabled here with the function masked, after pin-based interrupts were masked:
    /// INTMS may not be touched once MSI-X is on, Base 1.4 §3.1.3), the NVM command set,
    /// 4 KiB pages and queues of `needs.entries` entries.
    fn check<B>(
        bridge: &mut B,
        bdf: Bdf,
        registers: &R,
        bar0_size: u64,
        needs: QueueNeeds,
    ) -> Result<(MsixCapability, LocalRegisterCopy<u64, CAP::Register>), NvmeError>
    where
        B: HostBridge<Registers = R>,
    {
        let msix =
            MsixCapability::find(bridge.config(), bdf).ok_or(NvmeError::Unsupported("no MSI-X"))?;
        let table_end = msix.table_offset.checked_add(msix.table_size());
        if msix.table_bar != 0 || table_end.is_none_or(|end| end > bar0_size) {
            return Err(NvmeError::Unsupported("MSI-X table outside BAR0"));
        }
        registers.write32(reg::INTMS, u32::MAX);
        // Enable MSI-X with the function masked until the entries are programmed.
        msix.set_control(bridge.config(), bdf, true, true);
        let cap = LocalRegisterCopy::<u64, CAP::Register>::new(registers.read64(reg::CAP));
        if cap.read(CAP::CSS) & 1 == 0 {
            return Err(NvmeError::Unsupported("no NVM command set"));
        }
        if cap.read(CAP::MPSMIN) != 0 {
            return Err(NvmeError::Unsupported(
                "4 KiB pages not supported (CAP.MPSMIN)",
            ));
        }
        let max_queue_entries = cap.read(CAP::MQES) as u32 + 1;
        if u32::from(needs.entries) > max_queue_entries {
            return Err(NvmeError::QueuesTooShort {
                supported: max_queue_entries,
                needed: needs.entries,
            });
        }
        Ok((msix, cap))
    }

    /// Resets the controller, masks every MSI-X vector (the firmware may have left some
    /// unmasked, aimed anywhere), turns bus mastering on, enables it with the admin queues,
    /// identifies it and asks for the I/O queues.
    fn start<B>(
        &mut self,
        bridge: &mut B,
        bdf: Bdf,
        msix: &MsixCapability,
        memory: &mut M,
        needs: QueueNeeds,
    ) -> Result<(), NvmeError>
    where
        B: HostBridge<Registers = R>,
    {
        self.disable()?;
        for vector in 0..self.msix_vectors {
            let entry = self.msix_table + msix::ENTRY_SIZE * u64::from(vector);
            self.registers
                .write32(entry + msix::ENTRY_VECTOR_CONTROL, MSIX_ENTRY_MASKED);
        }
        // The highest doorbell the queues will use must lie in BAR0 (a write beyond it
        // would be dropped, and every command hang).
        if self.doorbell(needs.pairs, true) + 4 > self.bar0_size {
            return Err(NvmeError::Unsupported("doorbells beyond BAR0 (CAP.DSTRD)"));
        }
        let command = bridge.config().read(bdf, header::COMMAND) & 0xffff;
        bridge
            .config()
            .write(bdf, header::COMMAND, command | header::BUS_MASTER);
        self.enable()?;
        // Release the function mask: entries stay masked (vector control) until programmed.
        msix.set_control(bridge.config(), bdf, true, false);
        self.identify(memory)?;
        self.info.io_queues = self.set_queue_count(needs.pairs)?;
        Ok(())
    }

    /// What CSTS says now (one register read; for a controller that was brought up).
    pub fn health(&self) -> Health {
        let raw = self.registers.read32(reg::CSTS);
        let status = LocalRegisterCopy::<u32, CSTS::Register>::new(raw);
        if raw == u32::MAX {
            Health::Gone
        } else if status.is_set(CSTS::CFS) {
            Health::Fatal
        } else if !status.is_set(CSTS::RDY) {
            Health::NotReady
        } else {
            Health::Ready
        }
    }

    /// Waits until CSTS.RDY is `ready`, at most CAP.TO.
    fn wait_ready(&self, ready: bool) -> Result<(), NvmeError> {
        let start = self.clock.now_ms();
        loop {
            let status =
                LocalRegisterCopy::<u32, CSTS::Register>::new(self.registers.read32(reg::CSTS));
            if ready && status.is_set(CSTS::CFS) {
                return Err(NvmeError::Fatal);
            }
            if status.is_set(CSTS::RDY) == ready {
                return Ok(());
            }
            let waited_ms = self.clock.now_ms().saturating_sub(start);
            if waited_ms > self.timeout_ms {
                return Err(NvmeError::NotReady { ready, waited_ms });
            }
            self.clock.pause();
        }
    }

    /// Disables the controller if the firmware left it enabled and waits until it is idle
    /// (CSTS.RDY = 0; a fatal status left by the firmware is what this reset clears).
    fn disable(&mut self) -> Result<(), NvmeError> {
        let cc = LocalRegisterCopy::<u32, CC::Register>::new(self.registers.read32(reg::CC));
        if cc.is_set(CC::EN) {
            self.registers.write32(reg::CC, 0);
        }
        self.wait_ready(false)
    }

    /// Hands the disabled controller the admin queues and enables it (Base 1.4 §7.6.1).
    fn enable(&mut self) -> Result<(), NvmeError> {
        let mut aqa = LocalRegisterCopy::<u32, AQA::Register>::new(0);
        aqa.write(
            AQA::ASQS.val(u32::from(ADMIN_ENTRIES - 1))
                + AQA::ACQS.val(u32::from(ADMIN_ENTRIES - 1)),
        );
        self.registers.write32(reg::AQA, aqa.get());
        let (sq, cq) = {
            let admin = self.admin.lock();
            (admin.pair.sq_address(), admin.pair.cq_address())
        };
        self.registers.write64(reg::ASQ, sq);
        self.registers.write64(reg::ACQ, cq);
        // NVM command set, 4 KiB pages, round robin, 64-byte SQ and 16-byte CQ entries.
        let mut cc = LocalRegisterCopy::<u32, CC::Register>::new(0);
        cc.write(
            CC::EN::SET
                + CC::CSS.val(0)
                + CC::MPS.val(0)
                + CC::AMS.val(0)
                + CC::IOSQES.val(SQE_SIZE.trailing_zeros())
                + CC::IOCQES.val(CQE_SIZE.trailing_zeros()),
        );
        self.registers.write32(reg::CC, cc.get());
        self.wait_ready(true)
    }

    /// Runs one admin command to completion (polled, at most the controller's timeout) and
    /// returns its completion. Completions for other command identifiers (left over from an
    /// earlier command) are consumed and skipped; however many there are, the wait ends at
    /// the timeout.
    ///
    /// A command that timed out may still be fetched or run later: from then on no command
    /// is queued ([`NvmeError::AdminLost`]), as the queue's state is unknown (found in
    /// review: each later one was queued behind it, and after 31 the tail ran onto entries
    /// the controller had not fetched).
    fn admin(&self, mut command: SubmissionEntry) -> Result<CompletionEntry, NvmeError> {
        let opcode = command.opcode;
        let mut admin = self.admin.lock();
        if let Some(opcode) = admin.lost {
            return Err(NvmeError::AdminLost { opcode });
        }
        let cid = admin.next_cid;
        admin.next_cid = cid.wrapping_add(1);
        command.command_id = cid.into();
        admin.pair.push(&command);
        self.ring_submission(&admin.pair);
        let start = self.clock.now_ms();
        loop {
            if let Some(done) = admin.pair.pop() {
                self.ring_completion(&admin.pair);
                if done.command_id.get() == cid {
                    if !done.status().is_success() {
                        return Err(NvmeError::Command {
                            opcode,
                            status: done.status.get() >> 1,
                        });
                    }
                    return Ok(done);
                }
            }
            if self.clock.now_ms().saturating_sub(start) > self.timeout_ms {
                admin.lost = Some(opcode);
                if self.health() == Health::Fatal {
                    return Err(NvmeError::Fatal);
                }
                return Err(NvmeError::Timeout { opcode });
            }
            self.clock.pause();
        }
    }

    /// Identify Controller written by the controller to bus address `address` (page aligned):
    /// one DMA write of 4 KiB wherever the caller says, to check the controller's SMMU
    /// confinement (the confinement test image). Returns the command's outcome.
    pub fn identify_into(&mut self, address: u64) -> Result<(), NvmeError> {
        let mut dw10 = LocalRegisterCopy::<u32, IDENTIFY_DW10::Register>::new(0);
        dw10.write(IDENTIFY_DW10::CNS.val(cns::CONTROLLER.into()));
        self.admin(SubmissionEntry {
            opcode: admin::IDENTIFY,
            prp1: (address & !(PAGE_SIZE - 1)).into(),
            cdw10: dw10.get().into(),
            ..SubmissionEntry::default()
        })
        .map(|_| ())
    }

    /// Identify Controller and Identify Namespace 1 into [`ControllerInfo`].
    fn identify(&mut self, memory: &mut M) -> Result<(), NvmeError> {
        let buffer = memory
            .device_written(PAGE_SIZE)
            .ok_or(NvmeError::OutOfDeviceMemory)?;
        let mut dw10 = LocalRegisterCopy::<u32, IDENTIFY_DW10::Register>::new(0);
        dw10.write(IDENTIFY_DW10::CNS.val(cns::CONTROLLER.into()));
        let mut command = SubmissionEntry {
            opcode: admin::IDENTIFY,
            prp1: buffer.address().into(),
            cdw10: dw10.get().into(),
            ..SubmissionEntry::default()
        };
        self.admin(command)?;
        let mut data = [0u8; IDENTIFY_SIZE];
        buffer
            .read(0, &mut data)
            .ok_or(NvmeError::OutOfDeviceMemory)?;
        let text = |at: usize, len: usize| {
            String::from(
                core::str::from_utf8(&data[at..at + len])
                    .unwrap_or("")
                    .trim_end(),
            )
        };
        let u16_at = |at: usize| u16::from_le_bytes([data[at], data[at + 1]]);
        let info = &mut self.info;
        info.subsystem_vendor = u16_at(ctrl::SSVID);
        info.serial = text(ctrl::SN, ctrl::MN - ctrl::SN);
        info.model = text(ctrl::MN, ctrl::FR - ctrl::MN);
        info.firmware = text(ctrl::FR, ctrl::RAB - ctrl::FR);
        info.mdts = data[ctrl::MDTS];
        info.oncs = u16_at(ctrl::ONCS);
        info.volatile_write_cache = data[ctrl::VWC] & 1 != 0;

        command.nsid = NAMESPACE.into();
        dw10.write(IDENTIFY_DW10::CNS.val(cns::NAMESPACE.into()));
        command.cdw10 = dw10.get().into();
        self.admin(command)?;
        buffer
            .read(0, &mut data)
            .ok_or(NvmeError::OutOfDeviceMemory)?;
        let mut blocks = [0u8; 8];
        blocks.copy_from_slice(&data[ns::NSZE..ns::NSZE + 8]);
        self.info.blocks = u64::from_le_bytes(blocks);
        // The format in use: FLBAS bits 3:0, and bits 6:5 above them where a namespace has
        // more than 16 (NVMe 2.0; read as bits 3:0 alone, format 17 was taken for format 1;
        // found in review). It must be one of the NLBAF + 1 the namespace lists.
        let flbas = data[ns::FLBAS];
        let index = usize::from(flbas & 0xf) | usize::from((flbas >> 5) & 0b11) << 4;
        if index > usize::from(data[ns::NLBAF]) {
            return Err(NvmeError::Unsupported(
                "namespace 1's format is not one it lists (FLBAS above NLBAF)",
            ));
        }
        let format = ns::LBAF0 + 4 * index;
        let lbaf = LocalRegisterCopy::<u32, LBA_FORMAT::Register>::new(u32::from_le_bytes([
            data[format],
            data[format + 1],
            data[format + 2],
            data[format + 3],
        ]));
        self.info.lba_shift = lbaf.read(LBA_FORMAT::LBADS) as u8;
        if lbaf.read(LBA_FORMAT::MS) != 0 {
            return Err(NvmeError::Unsupported("namespace 1 uses metadata"));
        }
        if !BLOCK_SHIFTS.contains(&self.info.lba_shift) {
            return Err(NvmeError::Unsupported("namespace 1 block size"));
        }
        Ok(())
    }

    /// Set Features, Number of Queues: asks for `wanted` I/O queue pairs (at least one) and
    /// returns how many pairs the controller granted (the fewer of its SQ and CQ answers).
    fn set_queue_count(&mut self, wanted: u16) -> Result<u16, NvmeError> {
        let wanted = u32::from(wanted.max(1) - 1);
        let mut dw10 = LocalRegisterCopy::<u32, FEATURES_DW10::Register>::new(0);
        dw10.write(FEATURES_DW10::FID.val(feature::NUMBER_OF_QUEUES.into()));
        let mut dw11 = LocalRegisterCopy::<u32, NUMBER_OF_QUEUES::Register>::new(0);
        dw11.write(NUMBER_OF_QUEUES::NSQ.val(wanted) + NUMBER_OF_QUEUES::NCQ.val(wanted));
        let done = self.admin(SubmissionEntry {
            opcode: admin::SET_FEATURES,
            cdw10: dw10.get().into(),
            cdw11: dw11.get().into(),
            ..SubmissionEntry::default()
        })?;
        let granted = LocalRegisterCopy::<u32, NUMBER_OF_QUEUES::Register>::new(done.dw0.get());
        let pairs = granted
            .read(NUMBER_OF_QUEUES::NSQ)
            .min(granted.read(NUMBER_OF_QUEUES::NCQ))
            + 1;
        Ok(u16::try_from(pairs).unwrap_or(u16::MAX))
    }

    /// Creates I/O queue pair `id` with `entries` entries, interrupting through MSI-X
    /// `vector`, whose message is (`msi_address`, `msi_data`).
    pub fn create_queue_pair(
        &mut self,
        memory: &mut M,
        id: u16,
        entries: u16,
        vector: u16,
        msi_address: u64,
        msi_data: u32,
    ) -> Result<QueuePair<M::CpuWritten, M::DeviceWritten>, NvmeError> {
        if vector >= self.msix_vectors {
            return Err(NvmeError::Unsupported("not enough MSI-X vectors"));
        }
        if u32::from(entries) > self.info.max_queue_entries {
            return Err(NvmeError::QueuesTooShort {
                supported: self.info.max_queue_entries,
                needed: entries,
            });
        }
        self.set_msix_entry(vector, msi_address, msi_data);
        let pair = QueuePair::new(id, entries, memory)?;
        self.create_io_queues(id, entries, vector, pair.cq_address(), pair.sq_address())?;
        Ok(pair)
    }

    /// Creates I/O completion queue `id` of `entries` entries at physical address `cq`
    /// (page aligned, contiguous, interrupting through MSI-X `vector`), then I/O submission
    /// queue `id` at `sq` posting to it: the admin half of [`Self::create_queue_pair`], for
    /// queues whose memory the caller chose (a queue pair moved at run time, decision 5).
    /// When a command fails with a status, nothing is left created; after a timeout
    /// ([`NvmeError::Timeout`], then [`NvmeError::AdminLost`] for every later command) what
    /// the controller holds is unknown: the queue memory must stay reserved until the
    /// controller is reset.
    pub fn create_io_queues(
        &self,
        id: u16,
        entries: u16,
        vector: u16,
        cq: u64,
        sq: u64,
    ) -> Result<(), NvmeError> {
        if entries < 2 || u32::from(entries) > self.info.max_queue_entries {
            return Err(NvmeError::QueuesTooShort {
                supported: self.info.max_queue_entries,
                needed: entries,
            });
        }
        if vector >= self.msix_vectors {
            return Err(NvmeError::Unsupported("not enough MSI-X vectors"));
        }
        if self.doorbell(id, true) + 4 > self.bar0_size {
            return Err(NvmeError::Unsupported("doorbells beyond BAR0 (CAP.DSTRD)"));
        }
        let mut dw10 = LocalRegisterCopy::<u32, CREATE_QUEUE_DW10::Register>::new(0);
        dw10.write(
            CREATE_QUEUE_DW10::QID.val(id.into())
                + CREATE_QUEUE_DW10::QSIZE.val(u32::from(entries - 1)),
        );
        let mut cq_dw11 = LocalRegisterCopy::<u32, CREATE_CQ_DW11::Register>::new(0);
        cq_dw11.write(
            CREATE_CQ_DW11::PC::SET
                + CREATE_CQ_DW11::IEN::SET
                + CREATE_CQ_DW11::IV.val(vector.into()),
        );
        self.admin(SubmissionEntry {
            opcode: admin::CREATE_IO_CQ,
            prp1: cq.into(),
            cdw10: dw10.get().into(),
            cdw11: cq_dw11.get().into(),
            ..SubmissionEntry::default()
        })?;
        let mut sq_dw11 = LocalRegisterCopy::<u32, CREATE_SQ_DW11::Register>::new(0);
        sq_dw11.write(CREATE_SQ_DW11::PC::SET + CREATE_SQ_DW11::CQID.val(id.into()));
        let created = self.admin(SubmissionEntry {
            opcode: admin::CREATE_IO_SQ,
            prp1: sq.into(),
            cdw10: dw10.get().into(),
            cdw11: sq_dw11.get().into(),
            ..SubmissionEntry::default()
        });
        if let Err(error) = created {
            // Best effort: the CQ alone is of no use, and a later create would find it.
            let _ = self.delete_io_queue(admin::DELETE_IO_CQ, id);
            return Err(error);
        }
        Ok(())
    }

    /// Deletes I/O queue pair `id`: Delete I/O Submission Queue, then Delete I/O Completion
    /// Queue (Base 1.4 §5.6, §5.7). Before the first of them completes the controller has
    /// ended every command still in the SQ: it may post their completions to the CQ, or end
    /// them *implicitly*, with no completion at all (§5.7; QEMU drops those a full CQ
    /// cannot take). So once this returns the controller writes nothing more for the pair
    /// (its memory may be reused), and a caller counting commands in flight must take every
    /// one not completed yet as ended. Each command is bounded by the controller's timeout;
    /// an error leaves the pair as the controller has it (after a failed CQ deletion, the
    /// SQ is gone; after a timeout, unknown: see [`Self::create_io_queues`]).
    pub fn delete_queue_pair(&self, id: u16) -> Result<(), NvmeError> {
        self.delete_io_queue(admin::DELETE_IO_SQ, id)?;
        self.delete_io_queue(admin::DELETE_IO_CQ, id)
    }

    /// Moves I/O queue pair `pair`'s completion queue (decision 5): the pair is deleted (what
    /// was in flight on it ended, see [`Self::delete_queue_pair`]) and created again, both
    /// queues empty from entry 0, interrupting through MSI-X `vector`, with its CQ at bus
    /// address `cq` (memory the caller lends it, a slice's CQ) or, with `None`, back in its
    /// own memory (zeroed first, so that no entry of its earlier life passes for a new one).
    /// While the CQ is lent, the caller reads the entries where it lent it, not through
    /// `pair`, and releases them with [`Self::release_completions`]. Errors are those of the
    /// two halves; the pair is then not usable until a later call succeeds.
    pub fn recreate_queue_pair(
        &self,
        pair: &mut QueuePair<M::CpuWritten, M::DeviceWritten>,
        vector: u16,
        cq: Option<u64>,
    ) -> Result<(), NvmeError> {
        match self.delete_queue_pair(pair.id()) {
            Ok(()) => {}
            // Neither queue exists: an earlier create failed and removed what it had made.
            Err(NvmeError::Command { opcode, status })
                if opcode == admin::DELETE_IO_SQ && status & 0x7ff == INVALID_QUEUE_IDENTIFIER => {}
            Err(error) => return Err(error),
        }
        pair.restart();
        let at = cq.unwrap_or(pair.cq_address());
        self.create_io_queues(pair.id(), pair.entries(), vector, at, pair.sq_address())
    }

    /// Writes completion queue `id`'s head doorbell: the entries before `head` of a CQ lent
    /// by [`Self::recreate_queue_pair`] were consumed.
    pub fn release_completions(&self, id: u16, head: u16) {
        self.registers
            .write32(self.doorbell(id, true), u32::from(head));
    }

    fn delete_io_queue(&self, opcode: u8, id: u16) -> Result<(), NvmeError> {
        let mut dw10 = LocalRegisterCopy::<u32, CREATE_QUEUE_DW10::Register>::new(0);
        dw10.write(CREATE_QUEUE_DW10::QID.val(id.into()));
        self.admin(SubmissionEntry {
            opcode,
            cdw10: dw10.get().into(),
            ..SubmissionEntry::default()
        })
        .map(|_| ())
    }

    /// Programs MSI-X table entry `vector` to write `data` to `address`, then unmasks it.
    fn set_msix_entry(&self, vector: u16, address: u64, data: u32) {
        let entry = self.msix_table + msix::ENTRY_SIZE * u64::from(vector);
        let r = &self.registers;
        r.write32(entry + msix::ENTRY_ADDRESS_LOW, address as u32);
        r.write32(entry + msix::ENTRY_ADDRESS_HIGH, (address >> 32) as u32);
        r.write32(entry + msix::ENTRY_DATA, data);
        r.write32(entry + msix::ENTRY_VECTOR_CONTROL, 0);
    }

    /// Offset of queue `queue`'s submission tail (or completion head) doorbell
    /// (Base 1.4 §3.1.24-25).
    fn doorbell(&self, queue: u16, completion: bool) -> u64 {
        reg::DOORBELLS + (2 * u64::from(queue) + u64::from(completion)) * self.doorbell_stride
    }

    /// Tells the controller about the commands pushed on `pair`'s submission queue (its
    /// entries are made visible to the device first).
    pub fn ring_submission<S: CpuWritten, C: DeviceWritten>(&self, pair: &QueuePair<S, C>) {
        pair.publish();
        self.registers
            .write32(self.doorbell(pair.id(), false), u32::from(pair.tail()));
    }

    /// Tells the controller the completions popped from `pair` are consumed.
    pub fn ring_completion<S: CpuWritten, C: DeviceWritten>(&self, pair: &QueuePair<S, C>) {
        self.registers
            .write32(self.doorbell(pair.id(), true), u32::from(pair.cq_head()));
    }
}
