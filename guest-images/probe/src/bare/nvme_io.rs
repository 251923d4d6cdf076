//! What the probe does with its namespace at boot and at heartbeats:
//! `nvme-verify=<MiB>` (persistence check), `nvme-fill=<MiB>`, the data test
//! (`NVME PASS|FAIL`), and the `nvme-check=1` canary re-read every
//! heartbeat. The pattern comes from `microvisor_probe::nvme::pattern`:
//! it depends on the byte offset in the namespace and on the slice name, so
//! data of another slice or of another LBA reads back wrong.

use core::fmt::Write;

use microvisor_probe::cmdline::Options;
use microvisor_probe::nvme::PAGE_SIZE;
use microvisor_probe::nvme::pattern::{self, Blocks};
use microvisor_probe::text::Text;

use super::console::println;
use super::nvme::{self, CONTROLLER, Controller, NvmeError, dma_fill, dma_words};

/// Bytes of each data-test range (first, middle, last).
pub const RANGE_BYTES: u64 = 128 << 10;
/// Bytes of each canary range (first and last of the namespace).
pub const CANARY_BYTES: u64 = 16 << 10;
/// What read buffers are filled with before a read, so data that did not
/// arrive cannot pass for data that did.
pub const READ_MARKER: u64 = 0xDEAD_BEEF_0BAD_F00D;

/// Blocks of `bytes`, at least one.
fn blocks_of(c: &Controller, bytes: u64) -> u64 {
    (bytes / u64::from(c.ns.lba_bytes)).max(1)
}

/// Writes the pattern of `seed` over `range` from the first data buffer,
/// on queue `qid`. On failure returns the error and the chunk's LBA.
pub fn write_pattern(
    c: &mut Controller,
    qid: u16,
    range: Blocks,
    seed: u64,
) -> Result<(), (NvmeError, u64)> {
    let lba_bytes = c.ns.lba_bytes;
    let data = c.dma.data;
    for chunk in pattern::chunks(range, c.max_blocks()) {
        let base = chunk.lba * u64::from(lba_bytes);
        let words = chunk.count * u64::from(lba_bytes) / 8;
        dma_fill(data, words, |i| pattern::word(seed, base + 8 * i));
        c.transfer_ok(qid, true, chunk.lba, chunk.count as u32, data)
            .map_err(|e| (e, chunk.lba))?;
    }
    Ok(())
}

/// How reading a range back went.
pub enum Check {
    /// Every block holds the pattern.
    Intact,
    /// This block does not.
    Corrupt(u64),
    /// A read failed at this LBA.
    Error(NvmeError, u64),
}

/// Reads `range` into the second data buffer (marker-filled first) on
/// queue `qid` and compares it with the pattern of `seed`.
pub fn check_pattern(c: &mut Controller, qid: u16, range: Blocks, seed: u64) -> Check {
    let lba_bytes = c.ns.lba_bytes;
    let data = c.dma.data2;
    for chunk in pattern::chunks(range, c.max_blocks()) {
        let words = chunk.count * u64::from(lba_bytes) / 8;
        dma_fill(data, words, |_| READ_MARKER);
        if let Err(e) = c.transfer_ok(qid, false, chunk.lba, chunk.count as u32, data) {
            return Check::Error(e, chunk.lba);
        }
        if let Some(bad) =
            pattern::first_mismatch(dma_words(data, words), seed, chunk.lba, lba_bytes)
        {
            return Check::Corrupt(bad);
        }
    }
    Check::Intact
}

/// Whether `words` qwords at `addr` hold the pattern of `seed` for the
/// namespace bytes from `offset` on.
pub fn holds_pattern(addr: u64, words: u64, seed: u64, offset: u64) -> bool {
    dma_words(addr, words)
        .enumerate()
        .all(|(i, w)| w == pattern::word(seed, offset + 8 * i as u64))
}

/// The boot-time NVMe work, in this order: verify (so a fill from an
/// earlier boot is checked before anything is written), fill, data test,
/// canary set-up. Prints the `NVME ...` lines.
pub fn boot(options: &Options, slice_seed: u64, boot_seed: u64) {
    let mut guard = CONTROLLER.lock();
    let Some(c) = guard.as_mut() else {
        return;
    };
    if let Some(mib) = options.nvme_verify_mib {
        let blocks = pattern::mib_blocks(mib, c.ns.lba_bytes, c.ns.blocks);
        match check_pattern(
            c,
            1,
            Blocks {
                lba: 0,
                count: blocks,
            },
            slice_seed,
        ) {
            Check::Intact => println!("NVME VERIFY ok {blocks} blocks"),
            Check::Corrupt(lba) => println!("NVME VERIFY CORRUPT lba={lba}"),
            Check::Error(e, lba) => println!("NVME VERIFY ERROR {e} lba={lba}"),
        }
    }
    if let Some(mib) = options.nvme_fill_mib {
        let blocks = pattern::mib_blocks(mib, c.ns.lba_bytes, c.ns.blocks);
        let range = Blocks {
            lba: 0,
            count: blocks,
        };
        match write_pattern(c, 1, range, slice_seed).and_then(|()| c.flush(1).map_err(|e| (e, 0))) {
            Ok(()) => println!("NVME FILL ok {blocks} blocks"),
            Err((e, lba)) => println!("NVME FILL ERROR {e} lba={lba}"),
        }
    }
    if options.nvme_test {
        let salted = slice_seed ^ pattern::mix(boot_seed ^ pattern::BOOT_SALT_MIX);
        match data_test(c, slice_seed, salted) {
            Ok(detail) => println!("NVME PASS {}", detail.as_str().unwrap_or("")),
            Err(reason) => println!("NVME FAIL {}", reason.as_str().unwrap_or("unprintable")),
        }
    }
    if options.nvme_check {
        let blocks = blocks_of(c, CANARY_BYTES);
        let mut result = Ok(());
        for range in pattern::canary_ranges(c.ns.blocks, blocks) {
            result = result.and(write_pattern(c, 1, range, slice_seed));
        }
        let result = result.and_then(|()| c.flush(1).map_err(|e| (e, 0)));
        if let Err((e, lba)) = result {
            println!("NVME WARN canary-setup {e} lba={lba}");
        }
    }
}

/// The data test: the salted pattern (slice seed and boot) written to the
/// first, a middle and the last range, each on another queue, flushed,
/// read back on a different queue; then one read with a chained PRP list,
/// one with an offset PRP1, one block per queue, a read one block past the
/// end (must fail with LBA Out of Range); finally the resting pattern
/// (slice seed only) restored over the ranges and checked.
fn data_test(c: &mut Controller, slice_seed: u64, salted: u64) -> Result<Text<256>, Text<104>> {
    let mut detail = Text::<256>::new();
    let fail = |args: core::fmt::Arguments<'_>| {
        let mut t = Text::<104>::new();
        let _ = t.write_fmt(args);
        t
    };
    let queues = c.io_count;
    let q = |i: usize| 1 + (i % usize::from(queues)) as u16;
    let ranges = pattern::test_ranges(c.ns.blocks, blocks_of(c, RANGE_BYTES));
    for (i, (name, range)) in ranges.iter().enumerate() {
        if let Err((e, lba)) = write_pattern(c, q(i), *range, salted) {
            return Err(fail(format_args!("write-{name} lba={lba} {e}")));
        }
    }
    c.flush(1).map_err(|e| fail(format_args!("flush {e}")))?;
    for (i, (name, range)) in ranges.iter().enumerate() {
        match check_pattern(c, q(i + 1), *range, salted) {
            Check::Intact => {}
            Check::Corrupt(lba) => return Err(fail(format_args!("{name}-mismatch lba={lba}"))),
            Check::Error(e, lba) => return Err(fail(format_args!("read-{name} lba={lba} {e}"))),
        }
    }
    let _ = write!(detail, "ranges=");
    for (i, (name, range)) in ranges.iter().enumerate() {
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(detail, "{comma}{name}:{}+{}", range.lba, range.count);
    }

    // A chained PRP list: the list starts 16 bytes before its page end, so
    // one data entry and a chain pointer fit before the next list page.
    let lba_bytes = u64::from(c.ns.lba_bytes);
    let first = ranges[0].1;
    let bytes = (4 * PAGE_SIZE).min(first.count * lba_bytes) / lba_bytes * lba_bytes;
    if bytes > 3 * PAGE_SIZE && bytes <= c.max_transfer {
        let data = c.dma.data2;
        dma_fill(data, bytes / 8, |_| READ_MARKER);
        let cmd = microvisor_probe::nvme::Command::rw(
            microvisor_probe::nvme::io::READ,
            nvme::NSID,
            first.lba,
            (bytes / lba_bytes) as u32,
        );
        let list = c.dma.lists + PAGE_SIZE - 16;
        let done = c
            .transfer_at(q(0), cmd, data, bytes, list)
            .map_err(|e| fail(format_args!("chained-prp {e}")))?;
        if !done.status.is_success() {
            return Err(fail(format_args!("chained-prp {}", done.status)));
        }
        if !holds_pattern(data, bytes / 8, salted, first.lba * lba_bytes) {
            return Err(fail(format_args!("chained-prp-mismatch lba={}", first.lba)));
        }
        let _ = write!(detail, " chained-prp=ok");
    }

    // PRP1 with an offset: two blocks straddling a page boundary.
    let middle = ranges[1].1;
    if lba_bytes < PAGE_SIZE && middle.count >= 2 {
        let data = c.dma.data2 + PAGE_SIZE - lba_bytes;
        dma_fill(data, 2 * lba_bytes / 8, |_| READ_MARKER);
        c.transfer_ok(q(1), false, middle.lba, 2, data)
            .map_err(|e| fail(format_args!("offset-prp {e}")))?;
        if !holds_pattern(data, 2 * lba_bytes / 8, salted, middle.lba * lba_bytes) {
            return Err(fail(format_args!("offset-prp-mismatch lba={}", middle.lba)));
        }
        let _ = write!(detail, " offset-prp=ok");
    }

    // Every queue pair.
    for qid in 1..=queues {
        let one = Blocks {
            lba: first.lba + u64::from(qid - 1) % first.count,
            count: 1,
        };
        match check_pattern(c, qid, one, salted) {
            Check::Intact => {}
            Check::Corrupt(lba) => return Err(fail(format_args!("queue{qid}-mismatch lba={lba}"))),
            Check::Error(e, lba) => return Err(fail(format_args!("queue{qid} lba={lba} {e}"))),
        }
    }
    let _ = write!(detail, " queues={queues}");

    // One block past the end.
    let end = c.ns.blocks;
    let data = c.dma.data2;
    match c.transfer(1, false, end, 1, data) {
        Ok(done) if done.status.code() == microvisor_probe::nvme::Status::new(0, 0x80) => {
            let _ = write!(detail, " past-end={}", done.status);
        }
        Ok(done) => {
            return Err(fail(format_args!(
                "past-end-read lba={end} {}",
                done.status
            )));
        }
        Err(e) => return Err(fail(format_args!("past-end-read lba={end} {e}"))),
    }

    // Back to the resting pattern.
    for (i, (name, range)) in ranges.iter().enumerate() {
        if let Err((e, lba)) = write_pattern(c, q(i), *range, slice_seed) {
            return Err(fail(format_args!("restore-{name} lba={lba} {e}")));
        }
    }
    c.flush(1).map_err(|e| fail(format_args!("flush {e}")))?;
    for (name, range) in ranges.iter() {
        match check_pattern(c, 1, *range, slice_seed) {
            Check::Intact => {}
            Check::Corrupt(lba) => {
                return Err(fail(format_args!("restore-{name}-mismatch lba={lba}")));
            }
            Check::Error(e, lba) => return Err(fail(format_args!("restore-{name} lba={lba} {e}"))),
        }
    }
    if c.stray > 0 {
        return Err(fail(format_args!("stray-completions={}", c.stray)));
    }
    Ok(detail)
}

/// The heartbeat suffix with `nvme-check=1`: ` nvme-ok`,
/// ` nvme-CORRUPT lba=<x>`, ` nvme-ERROR <error> lba=<x>` or
/// ` nvme-ERROR no-controller`; and whether the canary is intact.
pub fn canary_check(slice_seed: u64, out: &mut Text<160>) -> bool {
    let mut guard = CONTROLLER.lock();
    let Some(c) = guard.as_mut() else {
        let _ = write!(out, " nvme-ERROR no-controller");
        return false;
    };
    let blocks = blocks_of(c, CANARY_BYTES);
    for range in pattern::canary_ranges(c.ns.blocks, blocks) {
        match check_pattern(c, 1, range, slice_seed) {
            Check::Intact => {}
            Check::Corrupt(lba) => {
                let _ = write!(out, " nvme-CORRUPT lba={lba}");
                return false;
            }
            Check::Error(e, lba) => {
                let _ = write!(out, " nvme-ERROR {e} lba={lba}");
                return false;
            }
        }
    }
    let _ = write!(out, " nvme-ok");
    true
}
