//! The probe's ITS driver (Arm IHI 0069H chapter 5, §6): when its device tree has an
//! `arm,gic-v3-its` (a slice's virtual ITS on a GICv4 node, or QEMU's own natively) and no
//! `mbi-ranges`, the NIC's MSIs are translated by it into LPIs of the boot CPU.
//!
//! Set-up: a flat one-page device table (GITS_BASER0) and collection table (GITS_BASER1), a
//! one-page command queue (GITS_CBASER), GITS_CTLR.Enabled; the LPI property table (8 KiB,
//! LPIs 8192..16383, every LPI disabled until mapped) and pending table on the boot CPU's
//! redistributor, EnableLPIs; MAPC of collection 0 to the boot CPU (its processor number, or
//! its RD_base with GITS_TYPER.PTA = 1). Then [`Its::map_device`] (MAPD, MAPTI, INV, SYNC).
//! Every wait is bounded. Values and encodings are in `microvisor_probe::its`.
//!
//! Memory: 32 pages, 64 KiB aligned, in the probe's RAM after the NIC's DMA area.

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use microvisor_probe::dt::Platform;
use microvisor_probe::gic::DEFAULT_PRIORITY;
use microvisor_probe::its::{
    self, Command, FIRST_LPI, ItsError, ItsType, LPI_ID_BITS, PROPERTY_TABLE_BYTES, TableType,
    gicr, gits, table,
};
use microvisor_probe::memplan::Range;

use super::{gic, timer};

const PAGE: u64 = 4096;
/// How long a command batch may take to complete.
pub const COMMAND_TIMEOUT_MS: u64 = 200;
/// Bytes of the ITS area.
pub const AREA_BYTES: u64 = page::COUNT * PAGE;
/// Bytes reserved per ITT.
pub const ITT_SLOT: u64 = 256;

/// Pages of the ITS area, in order.
pub mod page {
    /// The pending table (64 KiB aligned, 2 KiB used).
    pub const PENDING: u64 = 0;
    /// The property table (8 KiB).
    pub const PROPERTIES: u64 = 1;
    pub const DEVICES: u64 = 3;
    pub const COLLECTIONS: u64 = 4;
    pub const QUEUE: u64 = 5;
    /// ITTs, [`super::ITT_SLOT`] bytes each.
    pub const ITTS: u64 = 6;
    /// Pages the attacks may use (a second queue, scratch).
    pub const SPARE: u64 = 8;
    /// The pending table of the vCPU whose LPIs `its-remote-lpis` enables (64 KiB aligned).
    pub const REMOTE_PENDING: u64 = 16;
    pub const COUNT: u64 = 32;
}

/// The set-up ITS.
pub struct Its {
    /// The control frame (GITS_CTLR).
    pub base: u64,
    /// GITS_TYPER.
    pub typer: ItsType,
    /// The RAM it uses.
    pub area: Range,
    /// The command queue and its size in bytes.
    pub queue: u64,
    /// See `queue`.
    pub queue_bytes: u64,
    /// The next command's offset (the last GITS_CWRITER written).
    pub cwriter: u64,
    /// RD_base of the boot CPU's redistributor.
    pub rd_base: u64,
    /// The RDbase field naming the boot CPU in MAPC and SYNC.
    pub target: u64,
    /// ITTs handed out.
    itts: u64,
    /// The host bridge's `msi-map`.
    msi_map: Option<microvisor_probe::dt::MsiMap>,
}

/// The slowest GITS_CREADR read or GITS_CWRITER write so far, in counter ticks.
pub static SLOWEST_ACCESS_TICKS: AtomicU64 = AtomicU64::new(0);

/// The ITS, once set up.
pub static ITS: spin::Mutex<Option<Its>> = spin::Mutex::new(None);
/// The area, for the accessors' checks.
static AREA: spin::Once<Range> = spin::Once::new();

fn check(addr: u64, len: u64) {
    let ok = AREA
        .get()
        .is_some_and(|r| addr >= r.start && addr.saturating_add(len) <= r.end);
    assert!(ok, "ITS memory access outside its area: {addr:#x}+{len:#x}");
}

/// Writes a `T`-sized value of the ITS area.
fn ram_write<T: Copy>(addr: u64, value: T) {
    check(addr, core::mem::size_of::<T>() as u64);
    // SAFETY: in the ITS area (checked): RAM of the probe's own outside its image and the
    // other drivers' areas that no Rust object occupies; the ITS may read it concurrently,
    // hence volatile.
    unsafe { (addr as *mut T).write_volatile(value) }
}

/// Writes command `cmd` at `addr` of the ITS area (attacks: slots of the queue).
pub fn write_command(addr: u64, cmd: Command) {
    for (i, word) in cmd.iter().enumerate() {
        ram_write::<u64>(addr + 8 * i as u64, *word);
    }
}

/// Whether the tree offers an ITS the NIC can use: one with an `msi-map` and no MBI.
pub fn usable(platform: &Platform) -> bool {
    platform.mbi.is_none() && platform.its.is_some_and(|i| i.msi_map.is_some())
}

impl Its {
    /// Address of GITS register `offset`.
    pub fn reg(&self, offset: u64) -> u64 {
        self.base + offset
    }

    /// GITS_TRANSLATER.
    pub fn translater(&self) -> u64 {
        self.base + gits::TRANSLATER
    }

    /// Page `n` of the area.
    pub fn page(&self, n: u64) -> u64 {
        self.area.start + n * PAGE
    }

    /// Sets the ITS up in the 32 pages at `area_start` (64 KiB aligned, in RAM) and leaves
    /// it in [`ITS`].
    pub fn init(platform: &Platform, area_start: u64) -> Result<(), ItsError> {
        let info = platform.its.ok_or(ItsError::NoTable(0))?;
        let start = area_start
            .checked_next_multiple_of(64 << 10)
            .ok_or(ItsError::NoMemory)?;
        let end = start + AREA_BYTES;
        if !platform
            .memory()
            .iter()
            .any(|r| r.contains(start) && end <= r.end())
        {
            return Err(ItsError::NoMemory);
        }
        let area = Range { start, end };
        AREA.call_once(|| area);
        for a in (area.start..area.end).step_by(8) {
            ram_write::<u64>(a, 0);
        }
        let mut its = Its {
            base: info.base,
            typer: ItsType(0),
            area,
            queue: start + page::QUEUE * PAGE,
            queue_bytes: PAGE,
            cwriter: 0,
            rd_base: 0,
            target: 0,
            itts: 0,
            msi_map: info.msi_map,
        };
        its.typer = ItsType(gic::read64(its.reg(gits::TYPER), "gits_typer")?);
        if !its.typer.physical() {
            return Err(ItsError::NotPhysical);
        }
        // Disabled while the tables are given (their registers are ignored when enabled).
        gic::write32(its.reg(gits::CTLR), 0, "gits_ctlr")?;
        let deadline = timer::now() + timer::ticks_from_ms(COMMAND_TIMEOUT_MS);
        while gic::read32(its.reg(gits::CTLR), "gits_ctlr")? & gits::CTLR_QUIESCENT == 0 {
            if timer::now() > deadline {
                return Err(ItsError::Timeout {
                    creadr: 0,
                    cwriter: 0,
                });
            }
        }
        for (n, kind, pg) in [
            (0u64, table::DEVICES, page::DEVICES),
            (1, table::COLLECTIONS, page::COLLECTIONS),
        ] {
            let reg = its.reg(gits::BASER + 8 * n);
            let t = TableType(gic::read64(reg, "gits_baser")?);
            if t.kind() != kind {
                return Err(ItsError::NoTable(n as u8));
            }
            gic::write64(reg, its::baser(its.page(pg), 1), "gits_baser")?;
        }
        gic::write64(
            its.reg(gits::CBASER),
            its::cbaser(its.queue, 1),
            "gits_cbaser",
        )?;
        gic::write64(its.reg(gits::CWRITER), 0, "gits_cwriter")?;
        // LPIs on the boot CPU: tables, EnableLPIs, the CPU interface open.
        let g = gic::Gic::from_platform();
        its.rd_base = gic::prepare_lpis(&g)?;
        gic::write64(
            its.rd_base + gicr::PROPBASER,
            its::propbaser(its.page(page::PROPERTIES), LPI_ID_BITS),
            "gicr_propbaser",
        )?;
        gic::write64(
            its.rd_base + gicr::PENDBASER,
            its::pendbaser(its.page(page::PENDING)),
            "gicr_pendbaser",
        )?;
        barrier::dsb(barrier::SY);
        let ctlr = gic::read32(its.rd_base + gicr::CTLR, "gicr_ctlr")?;
        gic::write32(
            its.rd_base + gicr::CTLR,
            ctlr | gicr::CTLR_ENABLE_LPIS,
            "gicr_ctlr",
        )?;
        its.target = if its.typer.targets_addresses() {
            its.rd_base >> 16
        } else {
            let typer = gic::read64(
                its.rd_base + microvisor_probe::gic::gicr::TYPER,
                "gicr_typer",
            )?;
            (typer >> 8) & 0xffff
        };
        gic::write32(its.reg(gits::CTLR), gits::CTLR_ENABLED, "gits_ctlr")?;
        its.run(&[its::mapc(0, its.target, true)])?;
        *ITS.lock() = Some(its);
        Ok(())
    }

    /// Puts `cmd` at GITS_CWRITER's offset in the queue (without telling the ITS), waiting
    /// for room first.
    pub fn put(&mut self, cmd: Command) -> Result<(), ItsError> {
        let next = its::next_offset(self.cwriter, self.queue_bytes);
        if next == self.creadr()? & gits::OFFSET_MASK {
            self.kick()?;
            self.wait()?;
        }
        write_command(self.queue + self.cwriter, cmd);
        self.cwriter = next;
        Ok(())
    }

    /// Writes GITS_CWRITER with the queued commands' end.
    pub fn kick(&self) -> Result<(), ItsError> {
        self.write_cwriter(self.cwriter)
    }

    /// GITS_CREADR (the slowest read is kept in [`SLOWEST_ACCESS_TICKS`]: a read runs
    /// queued commands).
    pub fn creadr(&self) -> Result<u64, ItsError> {
        let start = timer::now();
        let value = gic::read64(self.reg(gits::CREADR), "gits_creadr")?;
        SLOWEST_ACCESS_TICKS.fetch_max(timer::now().wrapping_sub(start), Ordering::Relaxed);
        Ok(value)
    }

    /// Writes GITS_CWRITER with `value` as it is (the attacks' offsets), timed like
    /// [`Its::creadr`]. The driver's own offset is not changed.
    pub fn write_cwriter(&self, value: u64) -> Result<(), ItsError> {
        barrier::dsb(barrier::SY);
        let start = timer::now();
        gic::write64(self.reg(gits::CWRITER), value, "gits_cwriter")?;
        SLOWEST_ACCESS_TICKS.fetch_max(timer::now().wrapping_sub(start), Ordering::Relaxed);
        Ok(())
    }

    /// Clears GITS_CTLR.Enabled and waits for Quiescent.
    pub fn disable(&self) -> Result<(), ItsError> {
        gic::write32(self.reg(gits::CTLR), 0, "gits_ctlr")?;
        let deadline = timer::now() + timer::ticks_from_ms(COMMAND_TIMEOUT_MS);
        loop {
            let c = gic::read32(self.reg(gits::CTLR), "gits_ctlr")?;
            if c & gits::CTLR_QUIESCENT != 0 {
                return Ok(());
            }
            if timer::now() > deadline {
                return Err(ItsError::Timeout {
                    creadr: u64::from(c),
                    cwriter: self.cwriter,
                });
            }
        }
    }

    /// Sets GITS_CTLR.Enabled.
    pub fn enable(&self) -> Result<(), ItsError> {
        Ok(gic::write32(
            self.reg(gits::CTLR),
            gits::CTLR_ENABLED,
            "gits_ctlr",
        )?)
    }

    /// Back to the state [`Its::init`] left (the ITS disabled meanwhile): its own tables and
    /// queue (CREADR back to 0), enabled, collection 0 mapped, and `device`'s events
    /// `0..events` mapped to LPIs from `first_lpi` again.
    pub fn reset_to(&mut self, device: u32, events: u32, first_lpi: u32) -> Result<(), ItsError> {
        self.disable()?;
        for (n, pg) in [(0u64, page::DEVICES), (1, page::COLLECTIONS)] {
            gic::write64(
                self.reg(gits::BASER + 8 * n),
                its::baser(self.page(pg), 1),
                "gits_baser",
            )?;
        }
        self.queue = self.page(page::QUEUE);
        self.queue_bytes = PAGE;
        gic::write64(
            self.reg(gits::CBASER),
            its::cbaser(self.queue, 1),
            "gits_cbaser",
        )?;
        self.cwriter = 0;
        gic::write64(self.reg(gits::CWRITER), 0, "gits_cwriter")?;
        self.enable()?;
        self.run(&[its::mapc(0, self.target, true)])?;
        self.map_device(device, events, first_lpi)
    }

    /// Waits until GITS_CREADR reaches the last GITS_CWRITER written (bounded).
    pub fn wait(&self) -> Result<(), ItsError> {
        self.wait_for(COMMAND_TIMEOUT_MS)
    }

    /// [`Its::wait`] with a deadline of `ms`.
    pub fn wait_for(&self, ms: u64) -> Result<(), ItsError> {
        let deadline = timer::now() + timer::ticks_from_ms(ms);
        loop {
            let r = self.creadr()?;
            if r & gits::CREADR_STALLED != 0 {
                return Err(ItsError::Stalled(r & gits::OFFSET_MASK));
            }
            if r & gits::OFFSET_MASK == self.cwriter {
                return Ok(());
            }
            if timer::now() > deadline {
                return Err(ItsError::Timeout {
                    creadr: r,
                    cwriter: self.cwriter,
                });
            }
        }
    }

    /// Queues `cmds` and a SYNC of the boot CPU, and waits for them.
    pub fn run(&mut self, cmds: &[Command]) -> Result<(), ItsError> {
        for &c in cmds {
            self.put(c)?;
        }
        self.put(its::sync(self.target))?;
        self.kick()?;
        self.wait()
    }

    /// The DeviceID of requester ID `rid` (the host bridge's `msi-map`), if it fits the
    /// one-page device table.
    pub fn device_id(&self, rid: u32) -> Result<u32, ItsError> {
        let device = self
            .msi_map
            .and_then(|m| m.device_id(rid))
            .ok_or(ItsError::NoDeviceId(rid))?;
        let entries = PAGE / 8;
        if u64::from(device) >= entries || device >> self.typer.device_bits().min(31) != 0 {
            return Err(ItsError::DeviceTooLarge(device));
        }
        Ok(device)
    }

    /// A fresh 256-byte ITT slot (the area's ITT pages; the last is reused when they run out).
    pub fn new_itt(&mut self) -> u64 {
        let slots = 2 * PAGE / ITT_SLOT;
        let n = self.itts.min(slots - 1);
        self.itts += 1;
        self.page(page::ITTS) + n * ITT_SLOT
    }

    /// Sets LPI `lpi`'s property byte (enabled at the default priority, or disabled).
    pub fn set_property(&self, lpi: u32, enabled: bool) {
        if let Some(off) = lpi.checked_sub(FIRST_LPI).map(u64::from)
            && off < PROPERTY_TABLE_BYTES
        {
            ram_write::<u8>(
                self.page(page::PROPERTIES) + off,
                its::lpi_property(DEFAULT_PRIORITY, enabled),
            );
        }
    }

    /// Maps `device`'s events `0..events` to LPIs `first_lpi..` on the boot CPU: property
    /// bytes enabled, MAPD (a fresh ITT), MAPTI each, INV each, SYNC.
    pub fn map_device(&mut self, device: u32, events: u32, first_lpi: u32) -> Result<(), ItsError> {
        let size = its::itt_size_field(events);
        let itt = self.new_itt();
        for e in 0..events {
            self.set_property(first_lpi + e, true);
        }
        barrier::dsb(barrier::SY);
        self.put(its::mapd(device, size, itt, true))?;
        for e in 0..events {
            self.put(its::mapti(device, e, first_lpi + e, 0))?;
            self.put(its::event_command(its::number::INV, device, e))?;
        }
        self.run(&[])
    }
}
