//! The physical GICv3 ITS (GICv3 spec chapter 5 and §12.19): device and collection tables, the
//! command queue, and the commands that turn a device's MSI writes into LPIs on a chosen core.
//! The tables live in memory the kernel claimed and hands over: the ones the ITS itself
//! writes as [`SharedMemory`], the command queue (CPU-written) as a [`PhysRegion`].

use core::time::Duration;

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

use crate::memory::{PhysRegion, SharedMemory};

register_structs! {
    /// ITS control frame (GICv3 §12.19, Table 12-30).
    ItsRegisters {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => _iidr: ReadOnly<u32>),
        (0x0008 => typer: ReadOnly<u64>),
        (0x0010 => _reserved0),
        (0x0080 => cbaser: ReadWrite<u64>),
        (0x0088 => cwriter: ReadWrite<u64>),
        (0x0090 => creadr: ReadOnly<u64>),
        (0x0098 => _reserved1),
        (0x0100 => baser: [ReadWrite<u64>; 8]),
        (0x0140 => _reserved2),
        (0x10000 => @END),
    }
}

/// Offset of GITS_TRANSLATER, the register devices write MSIs to (second 64 KiB frame).
const TRANSLATER: u64 = 0x1_0040;
/// Command queue size: one 4 KiB page, 128 commands.
pub const COMMAND_QUEUE_SIZE: u64 = 4096;
const COMMAND_SIZE: u64 = 32;
/// How long the ITS may take to consume one command (microseconds on hardware).
const COMMAND_TIMEOUT: Duration = Duration::from_millis(100);
/// Memory attributes for ITS tables: inner write-back read/write-allocate, inner shareable.
const CACHEABLE_WB: u64 = 0b101 << 59;
const INNER_SHAREABLE: u64 = 0b01 << 10;
/// GITS_BASER.Type values.
const TYPE_DEVICES: u64 = 1;
const TYPE_VPES: u64 = 2;
const TYPE_COLLECTIONS: u64 = 4;
/// GITS_TYPER.Virtual: the ITS maps events to virtual LPIs of vPEs (GICv4).
const TYPER_VIRTUAL: u64 = 1 << 1;
/// "No doorbell" as a VMAPTI/VMAPI/VMOVI Dbell_pINTID: nothing is signalled for a vLPI of a
/// non-resident vPE (the hypervisor's vPEs are resident for as long as they exist).
pub const NO_DOORBELL: u32 = 1023;

/// Why the ITS could not be set up or did not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItsError {
    /// No GITS_BASER of the needed type.
    NoTable,
    /// A table region is too small or misaligned.
    BadTable,
    /// The ITS did not consume a command within [`COMMAND_TIMEOUT`].
    CommandTimeout,
    /// The ITS stalled on a command it could not process (GITS_CREADR.Stalled).
    CommandStalled,
    /// A DeviceID past the end of the device table.
    DeviceOutOfRange,
    /// An earlier command timed out or stalled: nothing more is queued (the ITS may still
    /// read the queue where a new command would go).
    Failed,
    /// A table or the command queue did not take the attributes written: 4 KiB pages and
    /// inner shareable (an ITS that only has 64 KiB pages would count the table's size in
    /// them; a non-shareable one would need cache maintenance the hypervisor does not do).
    TableAttributes,
}

/// The ITS's register frames, as found in the firmware DT (created by `boot/`).
pub struct ItsFrames {
    base: u64,
}

impl ItsFrames {
    /// # Safety
    /// `base` must be the ITS's register frames (128 KiB), identity mapped as Device memory,
    /// and only the [`Its`] made from this value may drive them.
    pub unsafe fn new(base: u64) -> Self {
        Self { base }
    }

    /// Whether the ITS is a GICv4 one (GITS_TYPER.Virtual): it can map events to virtual LPIs
    /// and needs a vPE table for that.
    pub fn virtual_lpis(&self) -> bool {
        // SAFETY: as in `device_table_bytes`.
        let registers = unsafe { &*(self.base as *const ItsRegisters) };
        registers.typer.get() & TYPER_VIRTUAL != 0
    }

    /// Bytes of device table (whole pages) that cover DeviceIDs `0..ids` (GITS_BASER's
    /// Entry_Size, §12.19.1), or None without a device table.
    pub fn device_table_bytes(&self, ids: u32) -> Option<u64> {
        // SAFETY: as in `Its::new`: the ITS frames, mapped; reading GITS_BASER has no effect.
        let registers = unsafe { &*(self.base as *const ItsRegisters) };
        let entry = entry_size(registers, TYPE_DEVICES)?;
        Some((u64::from(ids) * entry).next_multiple_of(4096).max(4096))
    }
}

/// The entry size in bytes of the table of type `kind` (GITS_BASER.Entry_Size + 1).
fn entry_size(registers: &ItsRegisters, kind: u64) -> Option<u64> {
    let baser = registers
        .baser
        .iter()
        .map(|b| b.get())
        .find(|b| (b >> 56) & 0b111 == kind)?;
    Some(((baser >> 48) & 0x1f) + 1)
}

/// The node's ITS.
pub struct Its {
    registers: &'static ItsRegisters,
    base: u64,
    queue: PhysRegion,
    write: u64,
    /// A command timed out or stalled: the queue is not written again.
    failed: bool,
    /// DeviceIDs the device table covers.
    device_ids: u64,
    /// vPE IDs the vPE table covers (0 without one).
    vpe_ids: u64,
    /// The device, collection and vPE tables, owned by the ITS for good.
    _tables: [Option<SharedMemory>; 3],
}

// SAFETY: the registers are MMIO reached with volatile accesses; the kernel keeps the one `Its`
// behind a lock, so commands are never issued from two cores at once.
unsafe impl Send for Its {}

impl Its {
    /// Brings the ITS up with its device table, collection table and command queue, and on
    /// a GICv4 ITS ([`ItsFrames::virtual_lpis`]) the vPE table `vpes`.
    pub fn new(
        frames: ItsFrames,
        devices: SharedMemory,
        collections: SharedMemory,
        vpes: Option<SharedMemory>,
        mut queue: PhysRegion,
    ) -> Result<Its, ItsError> {
        let base = frames.base;
        // SAFETY: `ItsFrames::new`'s caller guaranteed these are the ITS frames, mapped and
        // ours alone; `frames` is consumed, so this is the only `Its`.
        let registers = unsafe { &*(base as *const ItsRegisters) };
        registers.ctlr.set(0);
        // Its tables may change only once it is quiescent (GITS_CTLR.Quiescent, bit 31) after
        // being disabled: a loader may have left it enabled (found in review).
        let deadline = crate::cpu::Deadline::after(COMMAND_TIMEOUT);
        while registers.ctlr.get() & 1 << 31 == 0 {
            if deadline.passed() {
                return Err(ItsError::CommandTimeout);
            }
            core::hint::spin_loop();
        }
        set_table(registers, TYPE_DEVICES, &devices)?;
        set_table(registers, TYPE_COLLECTIONS, &collections)?;
        let vpe_ids = match &vpes {
            Some(table) => {
                set_table(registers, TYPE_VPES, table)?;
                table.region().size / entry_size(registers, TYPE_VPES).ok_or(ItsError::NoTable)?
            }
            None => 0,
        };
        let queue_region = queue.region();
        if queue_region.size < COMMAND_QUEUE_SIZE
            || !queue_region.base.is_multiple_of(COMMAND_QUEUE_SIZE)
        {
            return Err(ItsError::BadTable);
        }
        queue
            .zero(0, COMMAND_QUEUE_SIZE)
            .map_err(|_| ItsError::BadTable)?;
        let device_ids =
            devices.region().size / entry_size(registers, TYPE_DEVICES).ok_or(ItsError::NoTable)?;
        let its = Its {
            registers,
            base,
            queue,
            write: 0,
            failed: false,
            device_ids,
            vpe_ids,
            _tables: [Some(devices), Some(collections), vpes],
        };
        registers.cbaser.set(
            1 << 63
                | CACHEABLE_WB
                | INNER_SHAREABLE
                | queue_region.base
                | (COMMAND_QUEUE_SIZE / 4096 - 1),
        );
        took_attributes(registers.cbaser.get())?;
        registers.cwriter.set(0);
        registers.ctlr.set(1);
        Ok(its)
    }
}

/// Points the GITS_BASER of type `kind` at `table`.
fn set_table(registers: &ItsRegisters, kind: u64, table: &SharedMemory) -> Result<(), ItsError> {
    let region = table.region();
    let slot = registers
        .baser
        .iter()
        .find(|b| (b.get() >> 56) & 0b111 == kind)
        .ok_or(ItsError::NoTable)?;
    if !region.base.is_multiple_of(4096) || region.size < 4096 || region.size > 256 * 4096 {
        return Err(ItsError::BadTable);
    }
    table.zero(0, region.size).map_err(|_| ItsError::BadTable)?;
    let pages = region.size / 4096;
    slot.set(1 << 63 | CACHEABLE_WB | kind << 56 | region.base | INNER_SHAREABLE | (pages - 1));
    took_attributes(slot.get())
}

/// Whether a GITS_BASER or GITS_CBASER value read back kept 4 KiB pages (Page_Size, bits
/// [9:8], GITS_BASER only: 0 in GITS_CBASER) and a shareability (bits [11:10]) other than
/// Non-shareable. Found in review: neither was read back.
fn took_attributes(value: u64) -> Result<(), ItsError> {
    if (value >> 8) & 0b11 != 0 || (value >> 10) & 0b11 == 0 {
        return Err(ItsError::TableAttributes);
    }
    Ok(())
}

impl Its {
    /// Physical address a device writes its MSI data (EventID) to.
    pub fn translater(&self) -> u64 {
        self.base + TRANSLATER
    }

    /// Whether MAPC and SYNC name redistributors by physical address (GITS_TYPER.PTA), else by
    /// processor number.
    pub fn targets_by_address(&self) -> bool {
        self.registers.typer.get() & (1 << 19) != 0
    }

    /// Bytes per ITT entry (GITS_TYPER.ITT_entry_size + 1).
    pub fn itt_entry_size(&self) -> u64 {
        ((self.registers.typer.get() >> 4) & 0xf) + 1
    }

    /// Queues one command and waits until the ITS has taken it. After a command that timed
    /// out or stalled, nothing more is queued ([`ItsError::Failed`]): the write pointer would
    /// run on over commands the ITS had not read, and wrap onto them (found in review).
    fn command(&mut self, words: [u64; 4]) -> Result<(), ItsError> {
        if self.failed {
            return Err(ItsError::Failed);
        }
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        self.queue
            .write(self.write, &bytes)
            .map_err(|_| ItsError::BadTable)?;
        self.write = (self.write + COMMAND_SIZE) % COMMAND_QUEUE_SIZE;
        crate::pci::barrier::before_doorbell();
        self.registers.cwriter.set(self.write);
        // Wait for the ITS to consume it; a stalled queue (bit 0 of CREADR) is an error.
        let deadline = crate::cpu::Deadline::after(COMMAND_TIMEOUT);
        loop {
            let read = self.registers.creadr.get();
            if read & 1 != 0 {
                self.failed = true;
                return Err(ItsError::CommandStalled);
            }
            if read & !0x1f == self.write {
                return Ok(());
            }
            if deadline.passed() {
                self.failed = true;
                return Err(ItsError::CommandTimeout);
            }
            core::hint::spin_loop();
        }
    }

    /// MAPD: device `device` uses the interrupt translation table `itt` for `event_bits`-bit
    /// EventIDs.
    pub fn map_device(
        &mut self,
        device: u32,
        itt_table: &SharedMemory,
        event_bits: u8,
    ) -> Result<(), ItsError> {
        if u64::from(device) >= self.device_ids {
            return Err(ItsError::DeviceOutOfRange);
        }
        let itt = itt_table.region();
        if !itt.base.is_multiple_of(256)
            || event_bits == 0
            || itt.size < (self.itt_entry_size() << event_bits)
        {
            return Err(ItsError::BadTable);
        }
        // A fresh table: no stale translations.
        itt_region_zero(itt_table, itt.size)?;
        self.command([
            0x08 | u64::from(device) << 32,
            u64::from(event_bits - 1),
            1 << 63 | (itt.base & 0xf_ffff_ffff_ff00),
            0,
        ])
    }

    /// MAPC: collection `collection` targets the redistributor `target` (see
    /// [`Its::targets_by_address`]: its physical address, or its processor number).
    pub fn map_collection(&mut self, collection: u16, target: u64) -> Result<(), ItsError> {
        self.command([
            0x09,
            0,
            1 << 63 | self.rd_base(target) | u64::from(collection),
            0,
        ])
    }

    /// MAPTI: EventID `event` of `device` becomes LPI `lpi`, delivered through `collection`.
    pub fn map_event(
        &mut self,
        device: u32,
        event: u32,
        lpi: u32,
        collection: u16,
    ) -> Result<(), ItsError> {
        self.command([
            0x0a | u64::from(device) << 32,
            u64::from(event) | u64::from(lpi) << 32,
            u64::from(collection),
            0,
        ])
    }

    /// MOVI: EventID `event` of `device` is delivered through `collection` from now on.
    pub fn move_event(&mut self, device: u32, event: u32, collection: u16) -> Result<(), ItsError> {
        self.command([
            0x01 | u64::from(device) << 32,
            u64::from(event),
            u64::from(collection),
            0,
        ])
    }

    /// INVALL: the redistributors of `collection` reload LPI configuration.
    pub fn invalidate_all(&mut self, collection: u16) -> Result<(), ItsError> {
        self.command([0x0d, 0, u64::from(collection), 0])
    }

    /// SYNC: waits until earlier commands' effects reached redistributor `target`.
    pub fn sync(&mut self, target: u64) -> Result<(), ItsError> {
        self.command([0x05, 0, self.rd_base(target), 0])
    }

    /// VMAPP: vPE `vpe` lives on redistributor `target` (see [`Its::targets_by_address`]) with
    /// its virtual pending table `pending` (64 KiB aligned) covering `id_bits`-bit vINTIDs;
    /// `None` unmaps it.
    pub fn map_vpe(
        &mut self,
        vpe: u16,
        target: u64,
        pending: Option<(&SharedMemory, u8)>,
    ) -> Result<(), ItsError> {
        if u64::from(vpe) >= self.vpe_ids {
            return Err(ItsError::DeviceOutOfRange);
        }
        let (valid, table) = match pending {
            Some((table, id_bits)) => {
                let vpt = table.region();
                if !vpt.base.is_multiple_of(0x1_0000)
                    || !(14..=16).contains(&id_bits)
                    || vpt.size < (1 << id_bits) / 8
                {
                    return Err(ItsError::BadTable);
                }
                (
                    1 << 63,
                    (vpt.base & 0xf_ffff_ffff_0000) | u64::from(id_bits - 1),
                )
            }
            None => (0, 0),
        };
        self.command([
            0x29,
            u64::from(vpe) << 32,
            valid | self.rd_base(target),
            table,
        ])
    }

    /// VMAPTI: EventID `event` of `device` becomes vINTID `vintid` of vPE `vpe`, with no
    /// doorbell.
    pub fn map_virtual_event(
        &mut self,
        device: u32,
        event: u32,
        vpe: u16,
        vintid: u32,
    ) -> Result<(), ItsError> {
        self.command([
            0x2a | u64::from(device) << 32,
            u64::from(event) | u64::from(vpe) << 32,
            u64::from(vintid) | u64::from(NO_DOORBELL) << 32,
            0,
        ])
    }

    /// VMOVI: EventID `event` of `device` goes to vPE `vpe` from now on (no doorbell).
    pub fn move_virtual_event(
        &mut self,
        device: u32,
        event: u32,
        vpe: u16,
    ) -> Result<(), ItsError> {
        self.command([
            0x21 | u64::from(device) << 32,
            u64::from(event) | u64::from(vpe) << 32,
            u64::from(NO_DOORBELL) << 32,
            0,
        ])
    }

    /// DISCARD: EventID `event` of `device` is unmapped (and its pending state dropped).
    pub fn discard(&mut self, device: u32, event: u32) -> Result<(), ItsError> {
        self.command([0x0f | u64::from(device) << 32, u64::from(event), 0, 0])
    }

    /// INT: makes the (virtual) LPI EventID `event` of `device` is mapped to pending, as if the
    /// device had written it.
    pub fn interrupt(&mut self, device: u32, event: u32) -> Result<(), ItsError> {
        self.command([0x03 | u64::from(device) << 32, u64::from(event), 0, 0])
    }

    /// INV: the redistributor reloads the configuration of the (virtual) LPI EventID `event`
    /// of `device` is mapped to.
    pub fn invalidate(&mut self, device: u32, event: u32) -> Result<(), ItsError> {
        self.command([0x0c | u64::from(device) << 32, u64::from(event), 0, 0])
    }

    /// CLEAR: the (virtual) LPI EventID `event` of `device` is mapped to is no longer pending.
    pub fn clear(&mut self, device: u32, event: u32) -> Result<(), ItsError> {
        self.command([0x04 | u64::from(device) << 32, u64::from(event), 0, 0])
    }

    /// VINVALL: the redistributor holding vPE `vpe` reloads every vLPI's configuration.
    pub fn invalidate_vpe(&mut self, vpe: u16) -> Result<(), ItsError> {
        self.command([0x2d, u64::from(vpe) << 32, 0, 0])
    }

    /// VSYNC: waits until earlier commands' effects on vPE `vpe` are visible.
    pub fn sync_vpe(&mut self, vpe: u16) -> Result<(), ItsError> {
        self.command([0x25, u64::from(vpe) << 32, 0, 0])
    }

    /// MAPD with V = 0: `device` is unmapped (its translations are gone).
    pub fn unmap_device(&mut self, device: u32) -> Result<(), ItsError> {
        if u64::from(device) >= self.device_ids {
            return Err(ItsError::DeviceOutOfRange);
        }
        self.command([0x08 | u64::from(device) << 32, 0, 0, 0])
    }

    /// vPE IDs the vPE table covers (0: not a GICv4 ITS).
    pub fn vpe_ids(&self) -> u64 {
        self.vpe_ids
    }

    /// DeviceIDs the device table covers.
    pub fn device_ids(&self) -> u64 {
        self.device_ids
    }

    fn rd_base(&self, target: u64) -> u64 {
        if self.targets_by_address() {
            target & 0xf_ffff_ffff_0000
        } else {
            (target & 0xffff) << 16
        }
    }
}

fn itt_region_zero(table: &SharedMemory, size: u64) -> Result<(), ItsError> {
    table.zero(0, size).map_err(|_| ItsError::BadTable)
}
