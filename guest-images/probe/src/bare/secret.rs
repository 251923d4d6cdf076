//! `secret=plant|check` (tenant hand-over): the RAM and namespace scans and fills. The
//! pattern, the detector and the verdict are `microvisor_probe::secret` (host-tested).
//!
//! RAM is everything in the DT memory ranges but the probe's footprint (image, bss with the
//! page table and canary, stacks), the memory test's plan: 64-byte aligned ranges, plain
//! volatile 8-byte loads and stores by the boot CPU alone. The namespace is read and written
//! whole (Identify's size) in the driver's largest transfers through its data buffers.
//!
//! When (see `boot_main`): `check` alone (or `check,plant`) scans RAM before the memory test
//! writes it and the namespace right after the controller starts (before the NVMe data test
//! writes it); `plant` fills RAM right after the memory test (before the NVMe and NIC DMA areas
//! are laid out) and the namespace after the NVMe boot work; `plant,check` scans both after
//! planting. The lines are printed after the NVMe boot work, in the order the words were given.
//! The registers of `secret_regs` are read with the RAM scan and planted with the RAM.

use core::fmt;

use microvisor_probe::dt::Platform;
use microvisor_probe::memplan::{Range, TestPlan};
use microvisor_probe::nvme::pattern::{self, Blocks};
use microvisor_probe::secret::{
    Detector, SecretMode, Tally, UNKNOWN_DISK_BYTES, Verdict, disk_word, ram_word, verdict,
};

use super::console::println;
use super::nvme::{CONTROLLER, NvmeError, dma_fill, dma_words};
use super::nvme_io::READ_MARKER;

/// The RAM the probe does not need itself: the DT memory minus the footprint `image`.
fn free_ram(platform: &Platform, image: Range) -> TestPlan {
    TestPlan::new(platform.memory(), &[image], 0)
}

/// Scans the free RAM with `detector`.
fn scan_ram(platform: &Platform, image: Range, detector: &Detector) -> Tally {
    let mut tally = Tally::default();
    for range in free_ram(platform, image).ranges() {
        let words = range.len() / 8;
        let start = range.start;
        // SAFETY: the range is DT memory outside the footprint (image, bss, stacks, page
        // table), mapped Normal by mmu::build; no Rust object lives there and only this CPU
        // touches it now (secondaries are parked or wait for the memory test, DMA areas are
        // not in use yet or idle); reads only.
        let read = (0..words).map(|i| unsafe { ((start + 8 * i) as *const u64).read_volatile() });
        tally.scan(detector, start, read);
    }
    tally
}

/// Fills the free RAM with the pattern; returns the bytes written.
fn plant_ram(platform: &Platform, image: Range) -> u64 {
    let plan = free_ram(platform, image);
    for range in plan.ranges() {
        let mut a = range.start;
        while a < range.end {
            // SAFETY: as in `scan_ram`; after the memory test nothing of the probe's lives
            // outside the footprint (the device tree was copied out, the NVMe and NIC areas
            // are laid out later), so overwriting it aliases nothing.
            unsafe { (a as *mut u64).write_volatile(ram_word(a)) };
            a += 8;
        }
    }
    plan.total_bytes()
}

/// A failed NVMe command of a disk pass, and at which LBA.
#[derive(Clone, Copy)]
struct DiskError(NvmeError, u64);

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lba={}", self.0, self.1)
    }
}

/// The namespace's size in bytes (0 without a working controller).
fn disk_bytes() -> u64 {
    CONTROLLER
        .lock()
        .as_ref()
        .map_or(0, |c| c.ns.blocks * u64::from(c.ns.lba_bytes))
}

/// Reads the whole namespace and scans it with `detector`; stops at the first failed read.
fn scan_disk(detector: &Detector) -> (Tally, Option<DiskError>) {
    let mut tally = Tally::default();
    let mut guard = CONTROLLER.lock();
    let Some(c) = guard.as_mut() else {
        return (tally, None);
    };
    let lba_bytes = u64::from(c.ns.lba_bytes);
    let data = c.dma.data2;
    let all = Blocks {
        lba: 0,
        count: c.ns.blocks,
    };
    for chunk in pattern::chunks(all, c.max_blocks()) {
        let words = chunk.count * lba_bytes / 8;
        dma_fill(data, words, |_| READ_MARKER);
        if let Err(e) = c.transfer_ok(1, false, chunk.lba, chunk.count as u32, data) {
            return (tally, Some(DiskError(e, chunk.lba)));
        }
        tally.scan(detector, chunk.lba * lba_bytes, dma_words(data, words));
    }
    (tally, None)
}

/// Writes the pattern over the whole namespace and flushes; returns the bytes written.
fn plant_disk() -> Result<u64, DiskError> {
    let mut guard = CONTROLLER.lock();
    let Some(c) = guard.as_mut() else {
        return Ok(0);
    };
    let lba_bytes = u64::from(c.ns.lba_bytes);
    let data = c.dma.data;
    let all = Blocks {
        lba: 0,
        count: c.ns.blocks,
    };
    for chunk in pattern::chunks(all, c.max_blocks()) {
        let base = chunk.lba * lba_bytes;
        dma_fill(data, chunk.count * lba_bytes / 8, |i| {
            disk_word(base + 8 * i)
        });
        c.transfer_ok(1, true, chunk.lba, chunk.count as u32, data)
            .map_err(|e| DiskError(e, chunk.lba))?;
    }
    c.flush(1).map_err(|e| DiskError(e, 0))?;
    Ok(all.count * lba_bytes)
}

/// What the early passes found (`check` without `plant`).
#[derive(Clone, Copy, Default)]
pub struct Early {
    ram: Option<Tally>,
    regs: Option<(usize, Option<&'static str>)>,
    disk: Option<(Tally, Option<DiskError>)>,
}

impl Early {
    /// `check` alone, before the memory test: scans the free RAM (the disk size is not known
    /// yet: see `UNKNOWN_DISK_BYTES`).
    pub fn before_memtest(&mut self, mode: SecretMode, platform: &Platform, image: Range) {
        if mode.checks_at_boot() {
            let detector = Detector::for_regions(platform.memory(), UNKNOWN_DISK_BYTES);
            self.ram = Some(scan_ram(platform, image, &detector));
            self.regs = Some(super::secret_regs::leftovers());
        }
    }

    /// `plant`, after the memory test: fills the free RAM.
    pub fn after_memtest(&mut self, mode: SecretMode, platform: &Platform, image: Range) {
        if mode.plant {
            let bytes = plant_ram(platform, image);
            PLANTED_RAM.store(bytes, core::sync::atomic::Ordering::Relaxed);
            let regs = super::secret_regs::plant();
            PLANTED_REGS.store(regs, core::sync::atomic::Ordering::Relaxed);
        }
    }

    /// `check` alone, once the controller works and before anything writes the namespace.
    pub fn after_nvme_start(&mut self, mode: SecretMode, platform: &Platform) {
        if mode.checks_at_boot() {
            let detector = Detector::for_regions(platform.memory(), disk_bytes());
            self.disk = Some(scan_disk(&detector));
        }
    }
}

/// Bytes of RAM `plant` wrote.
static PLANTED_RAM: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// Registers `plant` wrote that kept the value (`secret_regs`).
static PLANTED_REGS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// After the NVMe boot work: `plant` fills the namespace and prints `SECRET PLANTED`; `check`
/// prints `SECRET CHECK` and the verdict (with the early results, or scanning after planting).
pub fn finish(mode: SecretMode, early: Early, platform: &Platform, image: Range) {
    if mode.checks_at_boot() {
        check(early, platform, image);
    }
    if mode.plant {
        let disk = match plant_disk() {
            Ok(bytes) => bytes,
            Err(e) => {
                println!("SECRET ERROR plant-disk {e}");
                0
            }
        };
        let ram = PLANTED_RAM.load(core::sync::atomic::Ordering::Relaxed);
        let regs = PLANTED_REGS.load(core::sync::atomic::Ordering::Relaxed);
        println!("SECRET PLANTED ram={ram} disk={disk} regs={regs}");
    }
    if mode.check && !mode.checks_at_boot() {
        check(early, platform, image);
    }
}

/// `SECRET CHECK` and the verdict, from the early passes or scanning now.
fn check(early: Early, platform: &Platform, image: Range) {
    let disk_size = disk_bytes();
    let detector = Detector::for_regions(platform.memory(), disk_size);
    let ram = early
        .ram
        .unwrap_or_else(|| scan_ram(platform, image, &detector));
    let (disk, error) = early.disk.unwrap_or_else(|| scan_disk(&detector));
    if let Some(e) = error {
        println!("SECRET ERROR check-disk {e}");
    }
    let (regs, first_reg) = early.regs.unwrap_or_else(super::secret_regs::leftovers);
    println!(
        "SECRET CHECK ram_words={} disk_words={} ram_scanned={} disk_scanned={} regs={}",
        ram.words, disk.words, ram.scanned, disk.scanned, regs
    );
    let ram_bytes = free_ram(platform, image).total_bytes();
    match verdict(&ram, &disk, regs, ram_bytes, disk_size) {
        Verdict::Clean => println!("SECRET CLEAN"),
        Verdict::Incomplete => println!("SECRET INCOMPLETE"),
        Verdict::Found => println!(
            "SECRET FOUND ram={} disk={} reg={}",
            Location(ram.first),
            Location(disk.first),
            first_reg.unwrap_or("none")
        ),
    }
}

/// `0x<hex>` or `none`.
struct Location(Option<u64>);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a:#x}"),
            None => f.write_str("none"),
        }
    }
}
