//! The I/O command validator: the isolation boundary between a slice and the physical
//! controller. A guest command (already copied out of the guest's SQ, read once) becomes a
//! hardware command only if every field is understood and every address and block lies inside
//! the slice's share; anything else becomes an error status and never reaches the device.
//!
//! - Opcodes: Flush, Write, Read, Write Zeroes, Dataset Management (NVM Command Set 1.0 §3);
//!   everything else is Invalid Command Opcode.
//! - Namespace: NSID 1 (or FFFFFFFFh for Flush) becomes the share's physical NSID.
//! - Blocks: SLBA + NLB is checked against the share's size, then offset to its first block.
//! - Data: PRPs only (Base 1.4 §4.3). PRP Entry 1, PRP Entry 2 and every PRP list entry are
//!   checked to lie inside the slice's RAM and translated to host physical addresses; PRP
//!   lists (also chained ones) are copied into the slot's hypervisor-owned DMA page, so the
//!   device never reads a list the guest can still change. Dataset Management ranges are
//!   copied there too, checked and offset.
//! - Refused with Invalid Field in Command: fused commands, SGLs (PSDT != 0), metadata
//!   pointers, protection information, directives, storage tags, transfers beyond MDTS.

use super::config::NamespaceShare;
use super::memory::{GuestMemoryFault, GuestRam, Ipa, Pa, short_transfer};
use super::spec::{
    DSM_RANGE_SIZE, DsmRange, NSID_ALL, PAGE_MASK, PAGE_SIZE, Status, SubmissionEntry, io,
};
use zerocopy::{FromBytes, IntoBytes};

/// Bytes read from guest memory at a time (PRP lists, DSM ranges): one stack buffer.
const CHUNK: usize = 512;
/// Most PRP list entries a command within MDTS (512 KiB) needs: the data after PRP Entry 1's
/// page is < 512 KiB, so at most 128 pages. A DMA page holds 512.
pub(crate) const MAX_PRP_LIST_ENTRIES: u64 = 128;

/// CDW12 of Read, Write and Write Zeroes (NVM Command Set 1.0 Figures 16, 32, 44).
mod cdw12 {
    pub const NLB: u32 = 0xffff;
    pub const DTYPE: u32 = 0xf << 20;
    pub const STC: u32 = 1 << 24;
    pub const DEAC: u32 = 1 << 25;
    pub const PRINFO: u32 = 0xf << 26;
    pub const FUA: u32 = 1 << 30;
    pub const LR: u32 = 1 << 31;
}
/// Dataset Management hints in CDW13 bits 7:0 (Read/Write).
const CDW13_DSM: u32 = 0xff;
/// Dataset Management CDW11 attributes: IDR, IDW, AD.
const DSM_ATTRIBUTES: u32 = 0b111;

/// What the validator needs around one command: the guest's RAM (read once per byte) and the
/// DMA page of the hardware slot the command will use.
pub(crate) trait CommandMemory {
    /// Copies guest memory (only asked for ranges inside the slice's RAM).
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault>;
    /// Host physical address of the slot's DMA page.
    fn dma_address(&mut self) -> Pa;
    /// Writes into the slot's DMA page at `offset`.
    fn write_dma(&mut self, offset: usize, data: &[u8]);
    /// Whether the device may move data at `[ipa, ipa + len)` (inside the slice's RAM): not
    /// on a direct CQ's page, which only the controller's completions may write (else a Read
    /// could forge them; decision 5).
    fn data_allowed(&self, _ipa: Ipa, _len: u64) -> bool {
        true
    }
}

/// The limits one slice's commands are checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IoRules {
    pub ram: GuestRam,
    pub namespace: NamespaceShare,
    /// Largest transfer in bytes (MDTS).
    pub max_transfer: u64,
    /// Set FUA on every write: the guest turned its volatile write cache off but the physical
    /// controller keeps one.
    pub force_unit_access: bool,
}

/// Data a command moves, for the SMART counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transfer {
    None,
    Read { bytes: u64 },
    Write { bytes: u64 },
}

/// A command ready for a hardware queue (its Command Identifier still to be set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Translated {
    pub command: SubmissionEntry,
    pub transfer: Transfer,
}

/// Validates a guest I/O command and builds the hardware command from scratch: only fields
/// understood here are carried over, everything else is zero.
pub(crate) fn translate(
    guest: &SubmissionEntry,
    rules: &IoRules,
    memory: &mut impl CommandMemory,
) -> Result<Translated, Status> {
    let opcode = guest.opcode;
    if !matches!(
        opcode,
        io::FLUSH | io::WRITE | io::READ | io::WRITE_ZEROES | io::DATASET_MANAGEMENT
    ) {
        return Err(Status::INVALID_OPCODE);
    }
    if guest.fuse() != 0 || guest.psdt() != 0 {
        return Err(Status::INVALID_FIELD);
    }
    let nsid = guest.nsid.get();
    if !(nsid == 1 || (opcode == io::FLUSH && nsid == NSID_ALL)) {
        return Err(Status::INVALID_NAMESPACE);
    }
    if guest.metadata.get() != 0 {
        return Err(Status::INVALID_FIELD);
    }
    let ns = &rules.namespace;
    let mut command = SubmissionEntry {
        opcode,
        nsid: ns.physical_nsid.into(),
        ..SubmissionEntry::default()
    };
    let transfer = match opcode {
        io::FLUSH => Transfer::None,
        io::READ | io::WRITE => {
            let cdw12 = guest.cdw12.get();
            let refused = cdw12::PRINFO | cdw12::STC | cdw12::DTYPE;
            if cdw12 & refused != 0 {
                return Err(Status::INVALID_FIELD);
            }
            let blocks = u64::from(cdw12 & cdw12::NLB) + 1;
            command.set_slba(blocks_in_share(ns, slba(guest), blocks)?);
            let bytes = blocks << ns.block_shift;
            if bytes > rules.max_transfer {
                return Err(Status::INVALID_FIELD);
            }
            let (prp1, prp2) = translate_prps(guest, bytes, rules, memory)?;
            command.prp1 = prp1.into();
            command.prp2 = prp2.into();
            let mut flags = cdw12 & (cdw12::NLB | cdw12::FUA | cdw12::LR);
            if opcode == io::WRITE && rules.force_unit_access {
                flags |= cdw12::FUA;
            }
            command.cdw12 = flags.into();
            command.cdw13 = (guest.cdw13.get() & CDW13_DSM).into();
            if opcode == io::READ {
                Transfer::Read { bytes }
            } else {
                Transfer::Write { bytes }
            }
        }
        io::WRITE_ZEROES => {
            let cdw12 = guest.cdw12.get();
            if cdw12 & (cdw12::PRINFO | cdw12::STC) != 0 {
                return Err(Status::INVALID_FIELD);
            }
            let blocks = u64::from(cdw12 & cdw12::NLB) + 1;
            command.set_slba(blocks_in_share(ns, slba(guest), blocks)?);
            let mut flags = cdw12 & (cdw12::NLB | cdw12::DEAC | cdw12::FUA | cdw12::LR);
            if rules.force_unit_access {
                flags |= cdw12::FUA;
            }
            command.cdw12 = flags.into();
            Transfer::None
        }
        _ => {
            let ranges = (guest.cdw10.get() & 0xff) as usize + 1;
            copy_dsm_ranges(guest, ranges, rules, memory)?;
            command.prp1 = memory.dma_address().0.into();
            command.cdw10 = (ranges as u32 - 1).into();
            command.cdw11 = (guest.cdw11.get() & DSM_ATTRIBUTES).into();
            Transfer::None
        }
    };
    Ok(Translated { command, transfer })
}

trait SetSlba {
    fn set_slba(&mut self, slba: u64);
}

impl SetSlba for SubmissionEntry {
    fn set_slba(&mut self, slba: u64) {
        self.cdw10 = (slba as u32).into();
        self.cdw11 = ((slba >> 32) as u32).into();
    }
}

/// Starting LBA in CDW10 (low) and CDW11 (high).
fn slba(cmd: &SubmissionEntry) -> u64 {
    u64::from(cmd.cdw11.get()) << 32 | u64::from(cmd.cdw10.get())
}

/// The physical LBA of guest block `slba`, if `blocks` blocks from there lie in the share.
fn blocks_in_share(ns: &NamespaceShare, slba: u64, blocks: u64) -> Result<u64, Status> {
    match slba.checked_add(blocks) {
        Some(end) if end <= ns.blocks => Ok(ns.first_block + slba),
        _ => Err(Status::LBA_OUT_OF_RANGE),
    }
}

/// Checks and translates the PRPs of a `len`-byte transfer (Base 1.4 §4.3): returns the
/// hardware PRP Entry 1 and 2. A PRP list is copied, translated, into the DMA page.
fn translate_prps(
    guest: &SubmissionEntry,
    len: u64,
    rules: &IoRules,
    memory: &mut impl CommandMemory,
) -> Result<(u64, u64), Status> {
    let ram = &rules.ram;
    let prp1 = guest.prp1.get();
    if prp1 & 0b11 != 0 {
        return Err(Status::PRP_OFFSET_INVALID);
    }
    let first = len.min(PAGE_SIZE - (prp1 & PAGE_MASK));
    let hw_prp1 = ram
        .translate(Ipa(prp1), first)
        .filter(|_| memory.data_allowed(Ipa(prp1), first))
        .ok_or(Status::DATA_TRANSFER_ERROR)?;
    let rest = len - first;
    let pages = rest.div_ceil(PAGE_SIZE);
    let prp2 = guest.prp2.get();
    match pages {
        0 => Ok((hw_prp1.0, 0)),
        1 => {
            if prp2 & PAGE_MASK != 0 {
                return Err(Status::PRP_OFFSET_INVALID);
            }
            let page = ram
                .translate(Ipa(prp2), rest)
                .filter(|_| memory.data_allowed(Ipa(prp2), rest))
                .ok_or(Status::DATA_TRANSFER_ERROR)?;
            Ok((hw_prp1.0, page.0))
        }
        _ => {
            if pages > MAX_PRP_LIST_ENTRIES {
                return Err(Status::INVALID_FIELD);
            }
            copy_prp_list(prp2, pages as usize, ram, memory)?;
            Ok((hw_prp1.0, memory.dma_address().0))
        }
    }
}

/// Reads the guest's PRP list at `list` (chained through the last entry of each list page
/// while more entries are needed), checks each of its `pages` data entries and writes them,
/// translated, into one unchained list at the start of the DMA page.
fn copy_prp_list(
    mut list: u64,
    pages: usize,
    ram: &GuestRam,
    memory: &mut impl CommandMemory,
) -> Result<(), Status> {
    if list & 0b111 != 0 {
        return Err(Status::PRP_OFFSET_INVALID);
    }
    let mut copied = 0;
    // Every list page after the first is page aligned and holds 511 data entries, more than
    // a transfer within MDTS needs: at most two list pages.
    for _ in 0..2 {
        let room = ((PAGE_SIZE - (list & PAGE_MASK)) / 8) as usize;
        let left = pages - copied;
        let chained = left > room;
        let entries = if chained { room } else { left };
        if !ram.contains(Ipa(list), entries as u64 * 8) {
            return Err(Status::DATA_TRANSFER_ERROR);
        }
        let mut next = None;
        let mut done = 0;
        while done < entries {
            let n = (entries - done).min(CHUNK / 8);
            let mut chunk = [0u8; CHUNK];
            memory
                .read_guest(Ipa(list + done as u64 * 8), &mut chunk[..n * 8])
                .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
            let mut out = [0u8; CHUNK];
            let mut out_len = 0;
            for (i, raw) in chunk[..n * 8].chunks_exact(8).enumerate() {
                let entry = u64::from_le_bytes(raw.try_into().unwrap_or_default());
                if chained && done + i == entries - 1 {
                    next = Some(entry);
                    continue;
                }
                if entry & PAGE_MASK != 0 {
                    return Err(Status::PRP_OFFSET_INVALID);
                }
                let page = ram
                    .translate(Ipa(entry), PAGE_SIZE)
                    .filter(|_| memory.data_allowed(Ipa(entry), PAGE_SIZE))
                    .ok_or(Status::DATA_TRANSFER_ERROR)?;
                out[out_len..out_len + 8].copy_from_slice(&page.0.to_le_bytes());
                out_len += 8;
            }
            memory.write_dma(copied * 8, &out[..out_len]);
            copied += out_len / 8;
            done += n;
        }
        match next {
            None => return Ok(()),
            Some(next) if next & PAGE_MASK != 0 => return Err(Status::PRP_OFFSET_INVALID),
            Some(next) => list = next,
        }
    }
    Err(Status::INVALID_FIELD)
}

/// Copies the `ranges` Dataset Management ranges out of guest memory into the DMA page,
/// checking each against the share and offsetting its starting LBA.
fn copy_dsm_ranges(
    guest: &SubmissionEntry,
    ranges: usize,
    rules: &IoRules,
    memory: &mut impl CommandMemory,
) -> Result<(), Status> {
    let len = ranges * DSM_RANGE_SIZE;
    let transfer = short_transfer(&rules.ram, guest.prp1.get(), guest.prp2.get(), len)?;
    let mut chunk = [0u8; CHUNK];
    let mut filled = 0;
    let mut offset = 0;
    for (ipa, piece) in transfer.pieces() {
        let mut pos = 0;
        while pos < piece {
            let n = (piece - pos).min(CHUNK - filled);
            memory
                .read_guest(Ipa(ipa.0 + pos as u64), &mut chunk[filled..filled + n])
                .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
            filled += n;
            pos += n;
            if filled == CHUNK || offset + filled == len {
                rewrite_ranges(&mut chunk[..filled], &rules.namespace)?;
                memory.write_dma(offset, &chunk[..filled]);
                offset += filled;
                filled = 0;
            }
        }
    }
    Ok(())
}

/// Checks and offsets whole ranges in place. A zero-length range is checked as if it
/// covered one block, so even a device that misreads it stays inside the share.
fn rewrite_ranges(bytes: &mut [u8], ns: &NamespaceShare) -> Result<(), Status> {
    for raw in bytes.chunks_exact_mut(DSM_RANGE_SIZE) {
        let mut range = DsmRange::read_from_bytes(raw).map_err(|_| Status::INTERNAL_ERROR)?;
        let blocks = u64::from(range.length.get()).max(1);
        range.slba = blocks_in_share(ns, range.slba.get(), blocks)?.into();
        raw.copy_from_slice(range.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    const RAM_IPA: u64 = 0x4000_0000;
    const RAM_SIZE: u64 = 0x20_0000;
    const RAM_PA: u64 = 0x8_0000_0000;
    const DMA_PA: u64 = 0x9_0000_0000;

    fn rules() -> IoRules {
        IoRules {
            ram: GuestRam {
                ipa_base: Ipa(RAM_IPA),
                size: RAM_SIZE,
                pa_base: Pa(RAM_PA),
            },
            namespace: NamespaceShare {
                physical_nsid: 5,
                first_block: 1000,
                blocks: 100,
                block_shift: 9,
            },
            max_transfer: 512 * 1024,
            force_unit_access: false,
        }
    }

    /// Guest RAM plus one DMA page; counts how often each guest byte is read.
    struct Memory {
        ram: Vec<u8>,
        reads: Vec<u8>,
        dma: Vec<u8>,
    }

    impl Memory {
        fn new() -> Self {
            Memory {
                ram: vec![0; RAM_SIZE as usize],
                reads: vec![0; RAM_SIZE as usize],
                dma: vec![0xee; 4096],
            }
        }
        fn put_u64(&mut self, ipa: u64, value: u64) {
            let at = (ipa - RAM_IPA) as usize;
            self.ram[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        fn dma_u64(&self, index: usize) -> u64 {
            u64::from_le_bytes(self.dma[index * 8..index * 8 + 8].try_into().unwrap())
        }
        fn max_reads(&self) -> u8 {
            self.reads.iter().copied().max().unwrap()
        }
    }

    impl CommandMemory for Memory {
        fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault> {
            let at = (ipa.0 - RAM_IPA) as usize;
            buf.copy_from_slice(&self.ram[at..at + buf.len()]);
            self.reads[at..at + buf.len()]
                .iter_mut()
                .for_each(|r| *r += 1);
            Ok(())
        }
        fn dma_address(&mut self) -> Pa {
            Pa(DMA_PA)
        }
        fn write_dma(&mut self, offset: usize, data: &[u8]) {
            self.dma[offset..offset + data.len()].copy_from_slice(data);
        }
    }

    fn rw(opcode: u8, slba: u64, blocks: u32, prp1: u64, prp2: u64) -> SubmissionEntry {
        SubmissionEntry {
            command_id: 0x77.into(),
            ..crate::nvme::tests::rw(opcode, slba, blocks, prp1, prp2)
        }
    }

    fn run(cmd: &SubmissionEntry) -> Result<Translated, Status> {
        translate(cmd, &rules(), &mut Memory::new())
    }

    fn pa(ipa: u64) -> u64 {
        ipa - RAM_IPA + RAM_PA
    }

    #[test]
    fn read_of_one_page_is_translated() {
        let t = run(&rw(io::READ, 10, 8, 0x4000_3000, 0x1234_5678)).unwrap();
        let c = t.command;
        assert_eq!(c.opcode, io::READ);
        assert_eq!(c.nsid.get(), 5, "physical NSID");
        assert_eq!(slba(&c), 1010, "offset by the share's first block");
        assert_eq!(c.cdw12.get(), 7);
        assert_eq!(c.prp1.get(), pa(0x4000_3000));
        assert_eq!(c.prp2.get(), 0, "PRP2 unused for one page is not passed on");
        assert_eq!(c.command_id.get(), 0, "the slot is set by the controller");
        assert_eq!(t.transfer, Transfer::Read { bytes: 4096 });
    }

    #[test]
    fn write_across_two_pages_uses_prp2_as_a_page() {
        let t = run(&rw(io::WRITE, 0, 8, 0x4000_3200, 0x4000_8000)).unwrap();
        assert_eq!(t.command.prp1.get(), pa(0x4000_3200));
        assert_eq!(t.command.prp2.get(), pa(0x4000_8000));
        assert_eq!(t.transfer, Transfer::Write { bytes: 4096 });
    }

    #[test]
    fn prp_list_is_copied_translated_and_read_once() {
        let mut mem = Memory::new();
        let list = 0x4001_0000;
        for i in 0..3 {
            mem.put_u64(list + 8 * i, 0x4002_0000 + 0x1000 * i);
        }
        mem.put_u64(list + 24, 0x7777_0000); // beyond the needed entries: never read
        let cmd = rw(io::READ, 0, 32, 0x4000_5000, list);
        let t = translate(&cmd, &rules(), &mut mem).unwrap();
        assert_eq!(t.command.prp1.get(), pa(0x4000_5000));
        assert_eq!(t.command.prp2.get(), DMA_PA, "the device reads the copy");
        for i in 0..3 {
            assert_eq!(mem.dma_u64(i), pa(0x4002_0000 + 0x1000 * i as u64));
        }
        assert_eq!(
            mem.dma_u64(3),
            0xeeee_eeee_eeee_eeee,
            "nothing more written"
        );
        assert_eq!(mem.max_reads(), 1);
        assert_eq!(mem.reads[0x1_0018], 0, "entry past the transfer not read");
    }

    #[test]
    fn page_count_follows_the_prp1_offset() {
        // 16 KiB starting 0x800 into a page: 0x800 bytes in PRP1's page, then 4 pages.
        let mut mem = Memory::new();
        let list = 0x4001_0000;
        for i in 0..4 {
            mem.put_u64(list + 8 * i, 0x4002_0000 + 0x1000 * i);
        }
        let cmd = rw(io::READ, 0, 32, 0x4000_5800, list);
        translate(&cmd, &rules(), &mut mem).unwrap();
        assert_eq!(mem.dma_u64(3), pa(0x4002_3000));
        assert_eq!(mem.reads[0x1_0020], 0);
        // The same with the fourth entry outside RAM fails: it is needed.
        mem.put_u64(list + 24, 0x1000);
        assert_eq!(
            translate(&cmd, &rules(), &mut mem),
            Err(Status::DATA_TRANSFER_ERROR)
        );
    }

    #[test]
    fn chained_prp_list() {
        // The list starts at the last 2 entries of a page: one data entry, then a chain
        // pointer to the next list page.
        let mut mem = Memory::new();
        let list = 0x4001_0ff0;
        let next = 0x4003_0000;
        mem.put_u64(list, 0x4002_0000);
        mem.put_u64(list + 8, next);
        for i in 1..4 {
            mem.put_u64(next + 8 * (i - 1), 0x4002_0000 + 0x1000 * i);
        }
        let cmd = rw(io::WRITE, 0, 40, 0x4000_5000, list);
        let t = translate(&cmd, &rules(), &mut mem).unwrap();
        assert_eq!(t.command.prp2.get(), DMA_PA);
        for i in 0..4 {
            assert_eq!(mem.dma_u64(i), pa(0x4002_0000 + 0x1000 * i as u64));
        }
        assert_eq!(mem.max_reads(), 1);
    }

    #[test]
    fn chain_pointer_alone_in_the_first_list_page() {
        let mut mem = Memory::new();
        let list = 0x4001_0ff8;
        let next = 0x4003_0000;
        mem.put_u64(list, next);
        for i in 0..3 {
            mem.put_u64(next + 8 * i, 0x4002_0000 + 0x1000 * i);
        }
        let cmd = rw(io::READ, 0, 32, 0x4000_5000, list);
        translate(&cmd, &rules(), &mut mem).unwrap();
        assert_eq!(mem.dma_u64(2), pa(0x4002_2000));
    }

    #[test]
    fn largest_transfer_with_offset_fills_128_entries() {
        let mut mem = Memory::new();
        let list = 0x4001_0000;
        for i in 0..128 {
            mem.put_u64(list + 8 * i, 0x4004_0000 + 0x1000 * i);
        }
        let mut r = rules();
        r.namespace.blocks = 1 << 20;
        let cmd = rw(io::READ, 0, 1024, 0x4000_5004, list);
        let t = translate(&cmd, &r, &mut mem).unwrap();
        assert_eq!(t.transfer, Transfer::Read { bytes: 512 * 1024 });
        assert_eq!(mem.dma_u64(127), pa(0x4004_0000 + 0x1000 * 127));
        assert_eq!(mem.max_reads(), 1);
        let too_big = rw(io::READ, 0, 1025, 0x4000_5000, list);
        assert_eq!(
            translate(&too_big, &r, &mut mem),
            Err(Status::INVALID_FIELD),
            "beyond MDTS"
        );
        r.max_transfer = 128 * 1024;
        let over_mdts = rw(io::READ, 0, 257, 0x4000_5000, list);
        assert_eq!(
            translate(&over_mdts, &r, &mut mem),
            Err(Status::INVALID_FIELD)
        );
    }

    #[test]
    fn prp_out_of_ram_each_position() {
        // PRP1 outside.
        assert_eq!(
            run(&rw(io::READ, 0, 1, 0x3fff_f000, 0)),
            Err(Status::DATA_TRANSFER_ERROR)
        );
        assert_eq!(
            run(&rw(io::READ, 0, 1, RAM_IPA + RAM_SIZE, 0)),
            Err(Status::DATA_TRANSFER_ERROR)
        );
        // PRP1 inside but its data runs past the end of RAM.
        assert_eq!(
            run(&rw(io::READ, 0, 2, RAM_IPA + RAM_SIZE - 0x200, 0)),
            Err(Status::DATA_TRANSFER_ERROR)
        );
        // PRP2 as a page outside.
        assert_eq!(
            run(&rw(io::READ, 0, 16, 0x4000_1000, 0x2000_0000)),
            Err(Status::DATA_TRANSFER_ERROR)
        );
        // PRP2 as a list pointer outside.
        assert_eq!(
            run(&rw(io::READ, 0, 24, 0x4000_1000, 0x2000_0000)),
            Err(Status::DATA_TRANSFER_ERROR)
        );
        // List entry outside.
        let mut mem = Memory::new();
        mem.put_u64(0x4001_0000, 0x4002_0000);
        mem.put_u64(0x4001_0008, 0x1_0000_0000);
        assert_eq!(
            translate(
                &rw(io::READ, 0, 24, 0x4000_1000, 0x4001_0000),
                &rules(),
                &mut mem
            ),
            Err(Status::DATA_TRANSFER_ERROR)
        );
        // Chain pointer outside.
        let mut mem = Memory::new();
        mem.put_u64(0x4001_0ff8, 0x6000_0000);
        assert_eq!(
            translate(
                &rw(io::READ, 0, 24, 0x4000_1000, 0x4001_0ff8),
                &rules(),
                &mut mem
            ),
            Err(Status::DATA_TRANSFER_ERROR)
        );
        // List in the last page of RAM whose chain pointer (zero) leads outside.
        assert_eq!(
            run(&rw(io::READ, 0, 24, 0x4000_1000, RAM_IPA + RAM_SIZE - 8)),
            Err(Status::DATA_TRANSFER_ERROR)
        );
    }

    #[test]
    fn prp_offsets() {
        assert_eq!(
            run(&rw(io::READ, 0, 1, 0x4000_1002, 0)),
            Err(Status::PRP_OFFSET_INVALID),
            "PRP1 not dword aligned"
        );
        assert_eq!(
            run(&rw(io::READ, 0, 16, 0x4000_1000, 0x4000_2100)),
            Err(Status::PRP_OFFSET_INVALID),
            "PRP2 page with an offset"
        );
        assert_eq!(
            run(&rw(io::READ, 0, 24, 0x4000_1000, 0x4001_0004)),
            Err(Status::PRP_OFFSET_INVALID),
            "list pointer not qword aligned"
        );
        let mut mem = Memory::new();
        mem.put_u64(0x4001_0000, 0x4002_0010);
        assert_eq!(
            translate(
                &rw(io::READ, 0, 24, 0x4000_1000, 0x4001_0000),
                &rules(),
                &mut mem
            ),
            Err(Status::PRP_OFFSET_INVALID),
            "list entry with an offset"
        );
        let mut mem = Memory::new();
        mem.put_u64(0x4001_0ff8, 0x4003_0008);
        assert_eq!(
            translate(
                &rw(io::READ, 0, 24, 0x4000_1000, 0x4001_0ff8),
                &rules(),
                &mut mem
            ),
            Err(Status::PRP_OFFSET_INVALID),
            "chain pointer with an offset"
        );
    }

    #[test]
    fn lba_range() {
        assert!(
            run(&rw(io::READ, 99, 1, 0x4000_1000, 0)).is_ok(),
            "last block"
        );
        assert!(
            run(&rw(io::READ, 92, 8, 0x4000_1000, 0)).is_ok(),
            "ends at last"
        );
        assert_eq!(
            run(&rw(io::READ, 100, 1, 0x4000_1000, 0)),
            Err(Status::LBA_OUT_OF_RANGE),
            "one past"
        );
        assert_eq!(
            run(&rw(io::WRITE, 93, 8, 0x4000_1000, 0)),
            Err(Status::LBA_OUT_OF_RANGE)
        );
        assert_eq!(
            run(&rw(io::WRITE, u64::MAX, 1, 0x4000_1000, 0)),
            Err(Status::LBA_OUT_OF_RANGE),
            "overflow"
        );
        assert_eq!(
            run(&rw(io::WRITE_ZEROES, u64::MAX - 1, 3, 0, 0)),
            Err(Status::LBA_OUT_OF_RANGE),
            "overflow"
        );
    }

    #[test]
    fn namespace_ids() {
        for nsid in [0, 2, NSID_ALL] {
            let mut cmd = rw(io::READ, 0, 1, 0x4000_1000, 0);
            cmd.nsid = nsid.into();
            assert_eq!(run(&cmd), Err(Status::INVALID_NAMESPACE), "{nsid:#x}");
        }
        let flush = |nsid: u32| SubmissionEntry {
            opcode: io::FLUSH,
            nsid: nsid.into(),
            ..SubmissionEntry::default()
        };
        for nsid in [1, NSID_ALL] {
            let t = run(&flush(nsid)).unwrap();
            assert_eq!(t.command.nsid.get(), 5);
            assert_eq!(t.command.opcode, io::FLUSH);
        }
        assert_eq!(run(&flush(2)), Err(Status::INVALID_NAMESPACE));
    }

    #[test]
    fn refused_opcodes() {
        for opcode in (0..=255u8).filter(|o| ![0, 1, 2, 8, 9].contains(o)) {
            let mut cmd = rw(io::READ, 0, 1, 0x4000_1000, 0);
            cmd.opcode = opcode;
            assert_eq!(run(&cmd), Err(Status::INVALID_OPCODE), "{opcode:#x}");
        }
    }

    #[test]
    fn fused_sgl_metadata_and_protection_refused() {
        let base = rw(io::WRITE, 0, 1, 0x4000_1000, 0);
        let mut cases = vec![];
        for flags in [0x01, 0x02, 0x40, 0x80, 0xc0] {
            cases.push(SubmissionEntry { flags, ..base });
        }
        cases.push(SubmissionEntry {
            metadata: 0x4000_2000.into(),
            ..base
        });
        for bit in [26, 27, 28, 29, 24, 20, 23] {
            cases.push(SubmissionEntry {
                cdw12: (1u32 << bit).into(),
                ..base
            });
        }
        for cmd in cases {
            assert_eq!(run(&cmd), Err(Status::INVALID_FIELD), "{cmd:?}");
        }
    }

    #[test]
    fn only_known_fields_are_carried_over() {
        let mut cmd = rw(io::WRITE, 3, 2, 0x4000_1000, 0);
        cmd.cdw2 = 0xffff_ffff.into();
        cmd.cdw3 = 0xffff_ffff.into();
        cmd.cdw12 = (1 | 1 << 30 | 1 << 31 | 1 << 16).into();
        cmd.cdw13 = 0xffff_ffff.into();
        cmd.cdw14 = 0xffff_ffff.into();
        cmd.cdw15 = 0xffff_ffff.into();
        let c = run(&cmd).unwrap().command;
        assert_eq!(c.flags, 0);
        assert_eq!((c.cdw2.get(), c.cdw3.get()), (0, 0));
        assert_eq!(c.metadata.get(), 0);
        assert_eq!(c.cdw12.get(), 1 | 1 << 30 | 1 << 31, "NLB, FUA, LR");
        assert_eq!(c.cdw13.get(), 0xff, "access hints only");
        assert_eq!((c.cdw14.get(), c.cdw15.get()), (0, 0));
    }

    #[test]
    fn write_cache_off_forces_fua() {
        let mut r = rules();
        r.force_unit_access = true;
        let w = translate(&rw(io::WRITE, 0, 1, 0x4000_1000, 0), &r, &mut Memory::new());
        assert_ne!(w.unwrap().command.cdw12.get() & cdw12::FUA, 0);
        let rd = translate(&rw(io::READ, 0, 1, 0x4000_1000, 0), &r, &mut Memory::new());
        assert_eq!(rd.unwrap().command.cdw12.get() & cdw12::FUA, 0);
    }

    #[test]
    fn write_zeroes() {
        let mut cmd = rw(io::WRITE_ZEROES, 50, 50, 0x4000_1000, 0x4000_2000);
        cmd.cdw12 = (49 | cdw12::DEAC).into();
        let t = run(&cmd).unwrap();
        assert_eq!(slba(&t.command), 1050);
        assert_eq!(t.command.cdw12.get(), 49 | cdw12::DEAC);
        assert_eq!((t.command.prp1.get(), t.command.prp2.get()), (0, 0));
        assert_eq!(t.transfer, Transfer::None);
        cmd.cdw12 = (50 | cdw12::DEAC).into();
        assert_eq!(run(&cmd), Err(Status::LBA_OUT_OF_RANGE));
        cmd.cdw12 = (1 | cdw12::PRINFO).into();
        assert_eq!(run(&cmd), Err(Status::INVALID_FIELD));
    }

    fn dsm(ranges: &[(u32, u64)], at: u64, mem: &mut Memory) -> SubmissionEntry {
        for (i, &(length, slba)) in ranges.iter().enumerate() {
            let r = DsmRange {
                attributes: 0xabc.into(),
                length: length.into(),
                slba: slba.into(),
            };
            let off = (at - RAM_IPA) as usize + i * 16;
            mem.ram[off..off + 16].copy_from_slice(r.as_bytes());
        }
        SubmissionEntry {
            opcode: io::DATASET_MANAGEMENT,
            nsid: 1.into(),
            prp1: at.into(),
            prp2: ((at & !PAGE_MASK) + PAGE_SIZE).into(),
            cdw10: (ranges.len() as u32 - 1).into(),
            cdw11: (4 | 1 << 8).into(),
            ..SubmissionEntry::default()
        }
    }

    fn dma_range(mem: &Memory, i: usize) -> DsmRange {
        DsmRange::read_from_bytes(&mem.dma[i * 16..i * 16 + 16]).unwrap()
    }

    #[test]
    fn dsm_ranges_are_copied_checked_and_offset() {
        let mut mem = Memory::new();
        let cmd = dsm(&[(10, 0), (1, 99), (90, 10)], 0x4000_2000, &mut mem);
        let t = translate(&cmd, &rules(), &mut mem).unwrap();
        assert_eq!(t.command.prp1.get(), DMA_PA);
        assert_eq!(t.command.prp2.get(), 0);
        assert_eq!(t.command.cdw10.get(), 2);
        assert_eq!(t.command.cdw11.get(), 4, "AD kept, reserved bits dropped");
        assert_eq!(dma_range(&mem, 0).slba.get(), 1000);
        assert_eq!(dma_range(&mem, 1).slba.get(), 1099);
        assert_eq!(dma_range(&mem, 2).length.get(), 90);
        assert_eq!(dma_range(&mem, 2).attributes.get(), 0xabc);
        assert_eq!(mem.max_reads(), 1);
        // The guest changing its ranges afterwards changes nothing the device sees.
        dsm(&[(100, 0)], 0x4000_2000, &mut mem);
        assert_eq!(dma_range(&mem, 0).length.get(), 10);
    }

    #[test]
    fn dsm_range_checks() {
        for (ranges, why) in [
            (vec![(1, 0), (1, 100)], "second range one past"),
            (vec![(101, 0)], "too long"),
            (vec![(2, u64::MAX)], "overflow"),
            (vec![(0, 100)], "zero length at the end"),
        ] {
            let mut mem = Memory::new();
            let cmd = dsm(&ranges, 0x4000_2000, &mut mem);
            assert_eq!(
                translate(&cmd, &rules(), &mut mem),
                Err(Status::LBA_OUT_OF_RANGE),
                "{why}"
            );
        }
        let mut mem = Memory::new();
        let cmd = dsm(&[(0, 99)], 0x4000_2000, &mut mem);
        assert!(translate(&cmd, &rules(), &mut mem).is_ok());
    }

    #[test]
    fn dsm_256_ranges_across_a_page_boundary() {
        let mut mem = Memory::new();
        let ranges: Vec<(u32, u64)> = (0..256).map(|i| (1, i % 100)).collect();
        // Starts 8 bytes into a page: the ranges straddle PRP1's and PRP2's pages.
        let cmd = dsm(&ranges, 0x4000_2008, &mut mem);
        // dsm() wrote the ranges contiguously; PRP2 must be the next page for that.
        assert_eq!(cmd.prp2.get(), 0x4000_3000);
        translate(&cmd, &rules(), &mut mem).unwrap();
        for i in 0..256 {
            assert_eq!(dma_range(&mem, i).slba.get(), 1000 + i as u64 % 100, "{i}");
        }
        assert_eq!(mem.max_reads(), 1);
        let mut cmd = cmd;
        cmd.prp2 = 0x1000_0000.into();
        assert_eq!(
            translate(&cmd, &rules(), &mut mem),
            Err(Status::DATA_TRANSFER_ERROR)
        );
    }

    #[test]
    fn dsm_buffer_outside_ram() {
        let mut mem = Memory::new();
        let mut cmd = dsm(&[(1, 0)], 0x4000_2000, &mut mem);
        cmd.prp1 = 0x3000_0000.into();
        assert_eq!(
            translate(&cmd, &rules(), &mut mem),
            Err(Status::DATA_TRANSFER_ERROR)
        );
    }
}
