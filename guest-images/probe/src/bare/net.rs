//! A small polled virtio-net driver (virtio v1.2 §4.1 PCI transport, §2.7 split virtqueues,
//! §5.1 network device): finds a virtio network function on the DT's host bridge (through
//! PCI-to-PCI bridges natively), assigns its BARs, locates its structures through the
//! vendor-specific capabilities, resets it, negotiates VERSION_1 + ACCESS_PLATFORM (+ MAC),
//! sets up one RX and one TX queue in the probe's RAM with MSI-X vectors aimed at the slice's
//! MSI doorbell, and exchanges an ARP request/reply with QEMU's slirp (10.0.2.2).
//!
//! The doorbell: with `mbi-ranges` in the GIC node (the microvisor), GICD_SETSPI_NSR with the
//! SPIs of that range, taken as IRQs by the boot CPU in short polling windows; without (natively,
//! QEMU's GICv3 has no message-based SPIs), a mailbox page in the probe's RAM that the MSI
//! writes land in and the probe reads.
//!
//! DMA memory: a stretch of RAM after the NVMe driver's (or the footprint), page granular.
//! Every wait has a deadline. Encodings and verdicts are in `microvisor_probe::virtio`.

use core::fmt::{self, Write};

use aarch64_cpu::asm::barrier;
use microvisor_probe::cmdline::Options;
use microvisor_probe::dt::Platform;
use microvisor_probe::its::FIRST_LPI;
use microvisor_probe::memplan::Range;
use microvisor_probe::pci::{Bdf, config};
use microvisor_probe::text::Text;
use microvisor_probe::virtio::{
    self, CfgType, FeatureError, GICD_SETSPI_NSR, Ipv4, Mac, NET_HDR_BYTES, NO_VECTOR, QueueLayout,
    RX_QUEUE, TX_QUEUE, VirtioCap, cap_id, common, desc_flags, msix, status,
};

use super::console::println;
use super::guarded::{self, Fault};
use super::pci::{BridgePath, Ecam, PciError, PlacedBar};
use super::report::NetSummary;
use super::{gic, its, timer};

const PAGE: u64 = 4096;
/// Entries per queue.
pub const QUEUE_ENTRIES: u16 = 16;
/// Bytes per packet buffer.
pub const BUFFER_BYTES: u64 = 2048;
/// RX buffers posted.
pub const RX_BUFFERS: u16 = 8;
/// TX buffers.
pub const TX_BUFFERS: u16 = 16;
/// Deadline for a frame to be sent, a reply to arrive, an interrupt to come.
pub const FRAME_TIMEOUT_MS: u64 = 2000;
/// Deadline for a reset to read back 0.
const RESET_TIMEOUT_MS: u64 = 200;
/// Marker in the data of a mailbox MSI (natively): `MAILBOX_DATA | vector`.
pub const MAILBOX_DATA: u32 = 0x4e45_5400;
/// MSI-X vectors the driver uses: RX 0, TX 1.
pub const RX_VECTOR: u16 = 0;
/// See [`RX_VECTOR`].
pub const TX_VECTOR: u16 = 1;

/// Pages of the DMA area, in order.
mod page {
    pub const RXQ: u64 = 0;
    pub const TXQ: u64 = 1;
    pub const RX_BUFS: u64 = 2; // 4 pages: 8 x 2 KiB
    pub const TX_BUFS: u64 = 6; // 8 pages: 16 x 2 KiB
    pub const MAILBOX: u64 = 14;
    pub const CANARY: u64 = 15;
    pub const MSI_TARGET: u64 = 16;
    pub const COUNT: u64 = 17;
}

/// Why the NIC is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// PCI enumeration or BAR assignment failed.
    Pci(PciError),
    /// A required virtio capability is missing or does not fit its BAR.
    NoCap(&'static str),
    /// A BAR access faulted.
    Mmio {
        /// What was accessed.
        what: &'static str,
        /// The fault.
        fault: Fault,
    },
    /// The reset did not read back 0.
    ResetTimeout(u8),
    /// The features on offer are not enough.
    Features(FeatureError),
    /// FEATURES_OK did not stick.
    FeaturesRefused(u8),
    /// The queue is unavailable (size 0) or too small.
    Queue(u16),
    /// The device refused an MSI-X vector for a queue.
    Vector(u16),
    /// No MSI-X capability, or its table is unusable.
    NoMsix,
    /// RAM after the footprint is too small.
    NoDmaMemory,
    /// The GIC could not take the MSI SPI.
    Gic(gic::GicError),
    /// The ITS could not be set up or map the function.
    Its(microvisor_probe::its::ItsError),
    /// The device set DEVICE_NEEDS_RESET.
    NeedsReset(u8),
    /// A frame was not returned in the used ring in time.
    TxTimeout,
    /// No ARP reply arrived in time (frames seen meanwhile).
    NoReply(u32),
}

/// One token each (`NET FAIL <error>`).
impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NetError::Pci(e) => write!(f, "{e}"),
            NetError::NoCap(what) => write!(f, "no-{what}-cap"),
            NetError::Mmio { what, fault } => match fault {
                Fault::Exception { esr, .. } => write!(f, "{what}-fault(esr={esr:#x})"),
                Fault::Unaddressable => write!(f, "{what}-unaddressable"),
            },
            NetError::ResetTimeout(s) => write!(f, "reset-timeout(status={s:#x})"),
            NetError::Features(e) => write!(f, "{e}"),
            NetError::FeaturesRefused(s) => write!(f, "features-refused(status={s:#x})"),
            NetError::Queue(q) => write!(f, "queue{q}-unavailable"),
            NetError::Vector(q) => write!(f, "queue{q}-vector-refused"),
            NetError::NoMsix => f.write_str("no-msix"),
            NetError::NoDmaMemory => f.write_str("no-dma-memory"),
            NetError::Gic(e) => write!(f, "gic({e})"),
            NetError::Its(e) => write!(f, "its({e})"),
            NetError::NeedsReset(s) => write!(f, "needs-reset(status={s:#x})"),
            NetError::TxTimeout => f.write_str("tx-timeout"),
            NetError::NoReply(seen) => write!(f, "no-arp-reply(frames={seen})"),
        }
    }
}

impl From<PciError> for NetError {
    fn from(e: PciError) -> Self {
        NetError::Pci(e)
    }
}

/// Where the NIC's MSIs go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doorbell {
    /// GICD_SETSPI_NSR, data = `first_spi + vector`.
    Mbi {
        /// The address written.
        address: u64,
        /// SPI of vector 0.
        first_spi: u32,
    },
    /// An ITS: GITS_TRANSLATER, EventID = vector, translated into LPI `first_lpi + vector`
    /// of the boot CPU (the function's DeviceID mapped by `bare::its`).
    Its {
        /// GITS_TRANSLATER.
        translater: u64,
        /// LPI of vector 0.
        first_lpi: u32,
        /// The function's DeviceID.
        device: u32,
    },
    /// A RAM mailbox: vector v writes `MAILBOX_DATA | v` at `address + 16 * v`.
    Ram {
        /// The mailbox page.
        address: u64,
    },
}

impl Doorbell {
    /// Address and data of vector `v`'s own message.
    pub fn message(&self, v: u16) -> (u64, u32) {
        match *self {
            Doorbell::Mbi { address, first_spi } => (address, first_spi + u32::from(v)),
            Doorbell::Its { translater, .. } => (translater, u32::from(v)),
            Doorbell::Ram { address } => (address + 16 * u64::from(v), MAILBOX_DATA | u32::from(v)),
        }
    }
}

/// `mbi(0x..,spi=<n>)`, `its(0x..,device=..,lpi=<n>)` or `ram(0x..)`.
impl fmt::Display for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Doorbell::Mbi { address, first_spi } => write!(f, "mbi({address:#x},spi={first_spi})"),
            Doorbell::Its {
                translater,
                first_lpi,
                device,
            } => write!(f, "its({translater:#x},device={device:#x},lpi={first_lpi})"),
            Doorbell::Ram { address } => write!(f, "ram({address:#x})"),
        }
    }
}

/// One split virtqueue as the driver tracks it.
#[derive(Clone, Copy, Debug)]
pub struct Vq {
    /// Layout within its page.
    pub layout: QueueLayout,
    /// The page.
    pub page: u64,
    /// Notify address (CPU).
    pub notify: u64,
    /// Next available index to publish.
    pub avail_idx: u16,
    /// Used index consumed so far.
    pub used_seen: u16,
}

/// The set-up NIC.
pub struct Nic {
    /// Configuration space.
    pub ecam: Ecam,
    /// PCI location.
    pub bdf: Bdf,
    /// The bridges above it.
    pub path: BridgePath,
    /// Its BARs as placed.
    pub bars: [Option<PlacedBar>; config::BARS],
    /// Common configuration (CPU address).
    pub common: u64,
    /// Notify structure (CPU address) and multiplier.
    pub notify: u64,
    /// See `notify`.
    pub notify_multiplier: u32,
    /// Device configuration (CPU address).
    pub device: u64,
    /// MSI-X capability offset in config space.
    pub msix_cap: u16,
    /// MSI-X table and PBA (CPU addresses) and table size.
    pub msix_table: u64,
    /// See `msix_table`.
    pub msix_pba: u64,
    /// See `msix_table`.
    pub msix_vectors: u16,
    /// Offered and accepted features.
    pub offered: u64,
    /// See `offered`.
    pub features: u64,
    /// MAC address.
    pub mac: Mac,
    /// Where MSIs go.
    pub doorbell: Doorbell,
    /// DMA area.
    pub dma: Range,
    /// Whether DMA is coherent.
    pub coherent: bool,
    /// Queue pairs the device has (`num_queues / 2`).
    pub max_pairs: u16,
    /// RX and TX queues.
    pub rx: Vq,
    /// See `rx`.
    pub tx: Vq,
    /// TX frames sent (index of the next TX buffer).
    pub tx_count: u32,
    /// The address the probe claims in its ARP requests (`net-ip=`).
    pub own_ip: Ipv4,
    /// The address it asks for (`net-peer=`, slirp's gateway by default).
    pub peer_ip: Ipv4,
}

/// The NIC, once set up.
pub static NIC: spin::Mutex<Option<Nic>> = spin::Mutex::new(None);
/// Whether the NIC passed its exchange at boot.
pub static PASSED: spin::Once<bool> = spin::Once::new();

/// The DMA area (its accessors check against it).
static DMA: spin::Once<Range> = spin::Once::new();

fn check_dma(addr: u64, len: u64) {
    let ok = DMA
        .get()
        .is_some_and(|r| addr >= r.start && addr.saturating_add(len) <= r.end);
    assert!(ok, "net DMA access outside its area: {addr:#x}+{len:#x}");
}

/// Reads a `T`-sized little-endian value of the DMA area.
fn dma_read<T: Copy>(addr: u64) -> T {
    check_dma(addr, core::mem::size_of::<T>() as u64);
    // SAFETY: in the net DMA area (checked): RAM of the probe's own outside its image that no
    // Rust object occupies; the device may write it concurrently, hence volatile.
    unsafe { (addr as *const T).read_volatile() }
}

/// Writes a `T`-sized value of the DMA area.
fn dma_write<T: Copy>(addr: u64, value: T) {
    check_dma(addr, core::mem::size_of::<T>() as u64);
    // SAFETY: as in `dma_read`.
    unsafe { (addr as *mut T).write_volatile(value) }
}

/// Reads a dword of the DMA area (attacks: canaries, mailbox).
pub fn dma_read32(addr: u64) -> u32 {
    dma_read(addr)
}

/// Writes a dword of the DMA area.
pub fn dma_write32(addr: u64, value: u32) {
    dma_write(addr, value)
}

/// Whether `addr` lies in the net DMA area.
pub fn in_dma(addr: u64) -> bool {
    DMA.get().is_some_and(|r| r.contains(addr))
}

fn maintain(coherent: bool, addr: u64, len: u64) {
    if coherent {
        barrier::dsb(barrier::SY);
        return;
    }
    check_dma(addr, len);
    let mut a = addr & !63;
    while a < addr + len {
        // SAFETY: DC CIVAC writes back and drops lines of the DMA area; nothing is lost.
        unsafe { core::arch::asm!("dc civac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += 64;
    }
    barrier::dsb(barrier::SY);
}

fn mmio_err(what: &'static str) -> impl Fn(Fault) -> NetError {
    move |fault| NetError::Mmio { what, fault }
}

/// Guarded BAR accesses (BARs lie in the host bridge window: device memory, no Rust object).
pub mod bar {
    use super::*;

    /// 8-bit read.
    pub fn r8(addr: u64, what: &'static str) -> Result<u8, NetError> {
        // SAFETY: a BAR address in the host bridge window; a fault returns as an error.
        unsafe { guarded::read8(addr) }.map_err(mmio_err(what))
    }
    /// 16-bit read.
    pub fn r16(addr: u64, what: &'static str) -> Result<u16, NetError> {
        // SAFETY: as in `r8`.
        unsafe { guarded::read16(addr) }.map_err(mmio_err(what))
    }
    /// 32-bit read.
    pub fn r32(addr: u64, what: &'static str) -> Result<u32, NetError> {
        // SAFETY: as in `r8`.
        unsafe { guarded::read32(addr) }.map_err(mmio_err(what))
    }
    /// 8-bit write.
    pub fn w8(addr: u64, v: u8, what: &'static str) -> Result<(), NetError> {
        // SAFETY: as in `r8`.
        unsafe { guarded::write8(addr, v) }.map_err(mmio_err(what))
    }
    /// 16-bit write.
    pub fn w16(addr: u64, v: u16, what: &'static str) -> Result<(), NetError> {
        // SAFETY: as in `r8`.
        unsafe { guarded::write16(addr, v) }.map_err(mmio_err(what))
    }
    /// 32-bit write.
    pub fn w32(addr: u64, v: u32, what: &'static str) -> Result<(), NetError> {
        // SAFETY: as in `r8`.
        unsafe { guarded::write32(addr, v) }.map_err(mmio_err(what))
    }
    /// 64-bit field as two dwords, low first.
    pub fn w64(addr: u64, v: u64, what: &'static str) -> Result<(), NetError> {
        w32(addr, v as u32, what)?;
        w32(addr + 4, (v >> 32) as u32, what)
    }
}

/// Finds and sets up the NIC (left in [`NIC`]); `None` if there is none.
pub fn probe(
    platform: &Platform,
    dma_after: u64,
    addresses: (Ipv4, Ipv4),
) -> Option<Result<(), NetError>> {
    let host = platform.pci?;
    let ecam = match Ecam::new(host) {
        Ok(e) => e,
        Err(e) => return Some(Err(e.into())),
    };
    let found = ecam.find_behind_bridges(|id, class| {
        id & 0xffff == u32::from(virtio::VENDOR_VIRTIO)
            && (id >> 16 == u32::from(virtio::DEVICE_NET_MODERN)
                || id >> 16 == u32::from(virtio::DEVICE_NET_TRANSITIONAL))
            && class >> 8 == virtio::CLASS_ETHERNET >> 8
    });
    let (bdf, path) = match found {
        Ok(Some(f)) => f,
        Ok(None) => return None,
        Err(e) => return Some(Err(e.into())),
    };
    Some(setup(platform, ecam, bdf, path, dma_after, addresses))
}

fn setup(
    platform: &Platform,
    ecam: Ecam,
    bdf: Bdf,
    path: BridgePath,
    dma_after: u64,
    addresses: (Ipv4, Ipv4),
) -> Result<(), NetError> {
    let bars = ecam.assign_behind(bdf, &path)?;
    // DMA area.
    let base = dma_after
        .checked_next_multiple_of(64 << 10)
        .ok_or(NetError::NoDmaMemory)?
        + (64 << 10);
    let end = base + page::COUNT * PAGE;
    if !platform
        .memory()
        .iter()
        .any(|r| r.contains(base) && end <= r.end())
    {
        return Err(NetError::NoDmaMemory);
    }
    let dma = Range { start: base, end };
    DMA.call_once(|| dma);
    for a in (dma.start..dma.end).step_by(8) {
        dma_write::<u64>(a, 0);
    }
    // Capabilities.
    let mut caps = [None::<VirtioCap>; 5];
    let mut msix_cap = None;
    let mut ptr = (ecam.read(bdf, config::CAP_POINTER)? & 0xfc) as u16;
    let mut guard = 0;
    while ptr >= 0x40 && guard < 48 {
        guard += 1;
        let dw0 = ecam.read(bdf, ptr)?;
        match dw0 as u8 {
            cap_id::VENDOR => {
                let d = |i: u16| ecam.read(bdf, ptr + 4 * i);
                let cap = VirtioCap::parse(dw0, d(1)?, d(2)?, d(3)?, d(4)?);
                let slot = match cap.cfg_type {
                    CfgType::Common => Some(0),
                    CfgType::Notify => Some(1),
                    CfgType::Isr => Some(2),
                    CfgType::Device => Some(3),
                    _ => None,
                };
                // The first of each type is the preferred one (§4.1.4).
                if let Some(i) = slot
                    && caps[i].is_none()
                {
                    caps[i] = Some(cap);
                }
            }
            cap_id::MSIX => msix_cap = Some(ptr),
            _ => {}
        }
        ptr = ((dw0 >> 8) & 0xfc) as u16;
    }
    let locate = |i: usize, what: &'static str, min: u32| -> Result<(u64, VirtioCap), NetError> {
        let cap = caps[i].ok_or(NetError::NoCap(what))?;
        let b = bars
            .get(usize::from(cap.bar))
            .copied()
            .flatten()
            .ok_or(NetError::NoCap(what))?;
        if !cap.fits(b.size, min) {
            return Err(NetError::NoCap(what));
        }
        Ok((b.cpu + u64::from(cap.offset), cap))
    };
    let (common_addr, _) = locate(0, "common", common::LEN)?;
    let (notify_addr, notify_cap) = locate(1, "notify", 2)?;
    let (device_addr, _) = locate(3, "device", 8)?;
    // MSI-X.
    let msix_cap = msix_cap.ok_or(NetError::NoMsix)?;
    let control = (ecam.read(bdf, msix_cap)? >> 16) as u16;
    let vectors = (control & msix::TABLE_SIZE_MASK) + 1;
    let (tbir, toff) = msix::bir_offset(ecam.read(bdf, msix_cap + 4)?);
    let (pbir, poff) = msix::bir_offset(ecam.read(bdf, msix_cap + 8)?);
    let table_bar = bars
        .get(usize::from(tbir))
        .copied()
        .flatten()
        .ok_or(NetError::NoMsix)?;
    let pba_bar = bars
        .get(usize::from(pbir))
        .copied()
        .flatten()
        .ok_or(NetError::NoMsix)?;
    if vectors < 2 || u64::from(toff) + u64::from(vectors) * msix::ENTRY_BYTES > table_bar.size {
        return Err(NetError::NoMsix);
    }
    let doorbell = match (platform.mbi, platform.gic) {
        (Some((first, count)), Some(layout)) if count >= 2 => Doorbell::Mbi {
            address: layout.distributor + GICD_SETSPI_NSR,
            first_spi: first,
        },
        _ if its::usable(platform) => {
            its::Its::init(platform, end).map_err(NetError::Its)?;
            let mut guard = its::ITS.lock();
            let its = guard.as_mut().ok_or(NetError::NoMsix)?;
            let device = its.device_id(bdf.requester_id()).map_err(NetError::Its)?;
            let events = u32::from(vectors).min(gic::COUNTED_LPIS as u32);
            its.map_device(device, events, FIRST_LPI)
                .map_err(NetError::Its)?;
            Doorbell::Its {
                translater: its.translater(),
                first_lpi: FIRST_LPI,
                device,
            }
        }
        _ => Doorbell::Ram {
            address: base + page::MAILBOX * PAGE,
        },
    };
    let coherent = platform.pci.is_some_and(|h| h.dma_coherent);
    let rx_layout = QueueLayout::new(QUEUE_ENTRIES).ok_or(NetError::Queue(RX_QUEUE))?;
    let mut nic = Nic {
        ecam,
        bdf,
        path,
        bars,
        common: common_addr,
        notify: notify_addr,
        notify_multiplier: notify_cap.notify_multiplier,
        device: device_addr,
        msix_cap,
        msix_table: table_bar.cpu + u64::from(toff),
        msix_pba: pba_bar.cpu + u64::from(poff),
        msix_vectors: vectors,
        offered: 0,
        features: 0,
        mac: Mac([0; 6]),
        doorbell,
        dma,
        coherent,
        max_pairs: 0,
        rx: Vq {
            layout: rx_layout,
            page: base + page::RXQ * PAGE,
            notify: 0,
            avail_idx: 0,
            used_seen: 0,
        },
        tx: Vq {
            layout: rx_layout,
            page: base + page::TXQ * PAGE,
            notify: 0,
            avail_idx: 0,
            used_seen: 0,
        },
        tx_count: 0,
        own_ip: addresses.0,
        peer_ip: addresses.1,
    };
    if let Doorbell::Mbi { first_spi, .. } = doorbell {
        let g = gic::Gic::from_platform();
        for v in [RX_VECTOR, TX_VECTOR] {
            gic::prepare_spi(&g, first_spi + u32::from(v)).map_err(NetError::Gic)?;
        }
    }
    nic.start(RX_BUFFERS)?;
    *NIC.lock() = Some(nic);
    Ok(())
}

impl Nic {
    fn c8(&self, off: u64) -> Result<u8, NetError> {
        bar::r8(self.common + off, "common")
    }
    fn c16(&self, off: u64) -> Result<u16, NetError> {
        bar::r16(self.common + off, "common")
    }
    fn c32(&self, off: u64) -> Result<u32, NetError> {
        bar::r32(self.common + off, "common")
    }
    fn w8(&self, off: u64, v: u8) -> Result<(), NetError> {
        bar::w8(self.common + off, v, "common")
    }
    fn w16(&self, off: u64, v: u16) -> Result<(), NetError> {
        bar::w16(self.common + off, v, "common")
    }
    fn w32(&self, off: u64, v: u32) -> Result<(), NetError> {
        bar::w32(self.common + off, v, "common")
    }

    /// Device status.
    pub fn status(&self) -> Result<u8, NetError> {
        self.c8(common::DEVICE_STATUS)
    }

    /// Writes 0 to the device status and waits for it to read 0 (§4.1.4.3.2).
    pub fn reset(&mut self) -> Result<(), NetError> {
        self.w8(common::DEVICE_STATUS, 0)?;
        let deadline = timer::now() + timer::ticks_from_ms(RESET_TIMEOUT_MS);
        loop {
            let s = self.status()?;
            if s == 0 {
                break;
            }
            if timer::now() > deadline {
                return Err(NetError::ResetTimeout(s));
            }
            timer::sleep_us(100);
        }
        self.rx.avail_idx = 0;
        self.rx.used_seen = 0;
        self.tx.avail_idx = 0;
        self.tx.used_seen = 0;
        Ok(())
    }

    /// Full initialization (§3.1.1): reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, MSI-X,
    /// queues (RX with `rx_posted` buffers), DRIVER_OK.
    pub fn start(&mut self, rx_posted: u16) -> Result<(), NetError> {
        self.start_with(rx_posted, None)
    }

    /// [`Nic::start`], with the TX descriptor table at `tx_desc` instead of its page (the
    /// `net-desc-outside` ring case).
    pub fn start_with(&mut self, rx_posted: u16, tx_desc: Option<u64>) -> Result<(), NetError> {
        self.reset()?;
        self.w8(common::DEVICE_STATUS, status::ACKNOWLEDGE)?;
        self.w8(common::DEVICE_STATUS, status::ACKNOWLEDGE | status::DRIVER)?;
        self.w32(common::DEVICE_FEATURE_SELECT, 0)?;
        let low = self.c32(common::DEVICE_FEATURE)?;
        self.w32(common::DEVICE_FEATURE_SELECT, 1)?;
        let high = self.c32(common::DEVICE_FEATURE)?;
        self.offered = u64::from(low) | (u64::from(high) << 32);
        self.features = match virtio::negotiate(self.offered) {
            Ok(f) => f,
            Err(e) => {
                self.w8(common::DEVICE_STATUS, status::FAILED)?;
                return Err(NetError::Features(e));
            }
        };
        self.w32(common::DRIVER_FEATURE_SELECT, 0)?;
        self.w32(common::DRIVER_FEATURE, self.features as u32)?;
        self.w32(common::DRIVER_FEATURE_SELECT, 1)?;
        self.w32(common::DRIVER_FEATURE, (self.features >> 32) as u32)?;
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.w8(common::DEVICE_STATUS, s)?;
        let back = self.status()?;
        if back & status::FEATURES_OK == 0 {
            return Err(NetError::FeaturesRefused(back));
        }
        if self.features & virtio::feature::MAC != 0 {
            for (i, b) in self.mac.0.iter_mut().enumerate() {
                *b = bar::r8(self.device + virtio::netcfg::MAC + i as u64, "device")?;
            }
        } else {
            // A locally administered address of our own.
            self.mac = Mac([0x02, 0x50, 0x52, 0x4f, 0x42, 0x45]);
        }
        self.max_pairs = self.c16(common::NUM_QUEUES)? / 2;
        self.program_msix()?;
        self.w16(common::CONFIG_MSIX_VECTOR, NO_VECTOR)?;
        self.setup_queue(RX_QUEUE, RX_VECTOR, None)?;
        self.setup_queue(TX_QUEUE, TX_VECTOR, tx_desc)?;
        for i in 0..rx_posted.min(RX_BUFFERS) {
            let buf = self.rx_buffer(i);
            self.post_rx(i, buf, BUFFER_BYTES as u32)?;
        }
        self.w8(common::DEVICE_STATUS, s | status::DRIVER_OK)?;
        self.notify_queue(RX_QUEUE)
    }

    /// Enables MSI-X (function unmasked) and aims every entry at the slice's doorbell.
    pub fn program_msix(&self) -> Result<(), NetError> {
        let dw = self.ecam.read(self.bdf, self.msix_cap)?;
        let control = (dw >> 16) as u16 | msix::ENABLE | msix::FUNCTION_MASK;
        self.ecam.write(
            self.bdf,
            self.msix_cap,
            (dw & 0xffff) | (u32::from(control) << 16),
        )?;
        for v in 0..self.msix_vectors {
            let (address, data) = self.doorbell.message(v);
            self.write_msix_entry(v, address, data, false)?;
        }
        let control = control & !msix::FUNCTION_MASK;
        self.ecam.write(
            self.bdf,
            self.msix_cap,
            (dw & 0xffff) | (u32::from(control) << 16),
        )?;
        Ok(())
    }

    /// Sets or clears the Mask bit of MSI-X table entry `v` (Vector Control), nothing else.
    pub fn set_vector_masked(&self, v: u16, masked: bool) -> Result<(), NetError> {
        let control = self.msix_table + u64::from(v) * msix::ENTRY_BYTES + 12;
        bar::w32(
            control,
            if masked { msix::VECTOR_MASKED } else { 0 },
            "msix",
        )
    }

    /// Writes MSI-X table entry `v`.
    pub fn write_msix_entry(
        &self,
        v: u16,
        address: u64,
        data: u32,
        masked: bool,
    ) -> Result<(), NetError> {
        let e = self.msix_table + u64::from(v) * msix::ENTRY_BYTES;
        bar::w32(e + 12, msix::VECTOR_MASKED, "msix")?;
        bar::w32(e, address as u32, "msix")?;
        bar::w32(e + 4, (address >> 32) as u32, "msix")?;
        bar::w32(e + 8, data, "msix")?;
        bar::w32(e + 12, if masked { msix::VECTOR_MASKED } else { 0 }, "msix")
    }

    fn setup_queue(&mut self, q: u16, vector: u16, desc: Option<u64>) -> Result<(), NetError> {
        self.w16(common::QUEUE_SELECT, q)?;
        let max = self.c16(common::QUEUE_SIZE)?;
        let size = virtio::queue_size(max, QUEUE_ENTRIES).ok_or(NetError::Queue(q))?;
        let layout = QueueLayout::new(size).ok_or(NetError::Queue(q))?;
        if size < QUEUE_ENTRIES.min(RX_BUFFERS) {
            return Err(NetError::Queue(q));
        }
        self.w16(common::QUEUE_SIZE, size)?;
        self.w16(common::QUEUE_MSIX_VECTOR, vector)?;
        if self.c16(common::QUEUE_MSIX_VECTOR)? != vector {
            return Err(NetError::Vector(q));
        }
        let vq = if q == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        vq.layout = layout;
        let page_addr = vq.page;
        for a in (page_addr..page_addr + PAGE).step_by(8) {
            dma_write::<u64>(a, 0);
        }
        maintain(self.coherent, page_addr, PAGE);
        let notify_off = {
            self.w64c(common::QUEUE_DESC, desc.unwrap_or(page_addr + layout.desc))?;
            self.w64c(common::QUEUE_DRIVER, page_addr + layout.avail)?;
            self.w64c(common::QUEUE_DEVICE, page_addr + layout.used)?;
            self.c16(common::QUEUE_NOTIFY_OFF)?
        };
        let notify = self.notify + u64::from(notify_off) * u64::from(self.notify_multiplier);
        let vq = if q == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        vq.notify = notify;
        self.w16(common::QUEUE_ENABLE, 1)
    }

    fn w64c(&self, off: u64, v: u64) -> Result<(), NetError> {
        bar::w64(self.common + off, v, "common")
    }

    /// Address of RX buffer `i`.
    pub fn rx_buffer(&self, i: u16) -> u64 {
        self.dma.start + page::RX_BUFS * PAGE + u64::from(i % RX_BUFFERS) * BUFFER_BYTES
    }

    /// Address of TX buffer `i`.
    pub fn tx_buffer(&self, i: u16) -> u64 {
        self.dma.start + page::TX_BUFS * PAGE + u64::from(i % TX_BUFFERS) * BUFFER_BYTES
    }

    /// The mailbox page, the canary page and the own-RAM MSI target page.
    pub fn spare_pages(&self) -> (u64, u64, u64) {
        let p = |n: u64| self.dma.start + n * PAGE;
        (p(page::MAILBOX), p(page::CANARY), p(page::MSI_TARGET))
    }

    fn write_desc(&self, vq: &Vq, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = vq.page + vq.layout.desc_at(i);
        dma_write::<u64>(d, addr);
        dma_write::<u32>(d + 8, len);
        dma_write::<u16>(d + 12, flags);
        dma_write::<u16>(d + 14, next);
    }

    /// Publishes descriptor `head` on queue `q`'s available ring (no notify).
    pub fn publish_head(&mut self, q: u16, head: u16) {
        self.publish(q, head);
    }

    fn publish(&mut self, q: u16, head: u16) {
        let vq = if q == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        let (page_addr, layout, idx) = (vq.page, vq.layout, vq.avail_idx);
        dma_write::<u16>(page_addr + layout.avail_slot(idx), head);
        barrier::dmb(barrier::ISH);
        dma_write::<u16>(page_addr + layout.avail_idx(), idx.wrapping_add(1));
        vq.avail_idx = idx.wrapping_add(1);
        maintain(self.coherent, page_addr, PAGE);
    }

    /// Posts an RX descriptor `i` over `[addr, addr + len)` (device-writable).
    pub fn post_rx(&mut self, i: u16, addr: u64, len: u32) -> Result<(), NetError> {
        let rx = self.rx;
        self.write_desc(&rx, i, addr, len, desc_flags::WRITE, 0);
        self.publish(RX_QUEUE, i % rx.layout.size);
        Ok(())
    }

    /// Writes queue `q`'s notify register.
    pub fn notify_queue(&self, q: u16) -> Result<(), NetError> {
        let vq = if q == RX_QUEUE { &self.rx } else { &self.tx };
        barrier::dsb(barrier::SY);
        bar::w16(vq.notify, q, "notify")
    }

    /// Puts a TX chain of `parts` (address, length) on the ring from descriptor `first` on and
    /// publishes it, without notifying. Returns the head.
    pub fn queue_tx_chain(&mut self, first: u16, parts: &[(u64, u32)]) -> u16 {
        let tx = self.tx;
        let size = tx.layout.size;
        for (k, &(addr, len)) in parts.iter().enumerate() {
            let i = (first + k as u16) % size;
            let last = k + 1 == parts.len();
            let flags = if last { 0 } else { desc_flags::NEXT };
            self.write_desc(&tx, i, addr, len, flags, (i + 1) % size);
        }
        let head = first % size;
        self.publish(TX_QUEUE, head);
        head
    }

    /// Copies header + `frame` into TX buffer `slot`: the address and length of the whole.
    pub fn fill_tx(&self, slot: u16, frame: &[u8]) -> (u64, u32) {
        let buf = self.tx_buffer(slot);
        for a in (buf..buf + NET_HDR_BYTES).step_by(4) {
            dma_write::<u32>(a, 0);
        }
        for (i, &b) in frame.iter().enumerate() {
            dma_write::<u8>(buf + NET_HDR_BYTES + i as u64, b);
        }
        let len = NET_HDR_BYTES as u32 + frame.len() as u32;
        maintain(self.coherent, buf, u64::from(len));
        (buf, len)
    }

    /// Used elements queue `q` has returned since the last call: (id, len) of the next one.
    pub fn next_used(&mut self, q: u16) -> Option<(u32, u32)> {
        let coherent = self.coherent;
        let vq = if q == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        maintain(coherent, vq.page, PAGE);
        let idx: u16 = dma_read(vq.page + vq.layout.used_idx());
        if idx == vq.used_seen {
            return None;
        }
        barrier::dmb(barrier::ISH);
        let e = vq.page + vq.layout.used_elem(vq.used_seen);
        let id: u32 = dma_read(e);
        let len: u32 = dma_read(e + 4);
        vq.used_seen = vq.used_seen.wrapping_add(1);
        Some((id, len))
    }

    /// The ARP request for the peer (slirp's gateway by default) from this NIC.
    pub fn arp_request(&self) -> [u8; virtio::MIN_FRAME_BYTES] {
        virtio::arp_request(self.mac, self.own_ip, self.peer_ip)
    }

    /// Sends one ARP request and waits for it to come back in the TX used ring.
    pub fn send_arp(&mut self) -> Result<(), NetError> {
        let slot = (self.tx_count % u32::from(TX_BUFFERS)) as u16;
        let frame = self.arp_request();
        let part = self.fill_tx(slot, &frame);
        let first = self.tx.avail_idx;
        self.queue_tx_chain(first, &[part]);
        self.tx_count += 1;
        self.notify_queue(TX_QUEUE)?;
        self.wait_tx(1, FRAME_TIMEOUT_MS)
    }

    /// Waits for `n` TX used elements.
    pub fn wait_tx(&mut self, n: u16, ms: u64) -> Result<(), NetError> {
        let deadline = timer::now() + timer::ticks_from_ms(ms);
        let mut got = 0;
        while got < n {
            if self.next_used(TX_QUEUE).is_some() {
                got += 1;
                continue;
            }
            let s = self.status()?;
            if s & status::DEVICE_NEEDS_RESET != 0 {
                return Err(NetError::NeedsReset(s));
            }
            if timer::now() > deadline {
                return Err(NetError::TxTimeout);
            }
            timer::sleep_us(50);
        }
        Ok(())
    }

    /// Waits for slirp's ARP reply, re-posting other frames' buffers. Returns the reply.
    pub fn wait_reply(&mut self, ms: u64) -> Result<virtio::ArpReply, NetError> {
        let deadline = timer::now() + timer::ticks_from_ms(ms);
        let mut seen = 0;
        loop {
            while let Some((id, len)) = self.next_used(RX_QUEUE) {
                seen += 1;
                let i = (id as u16) % RX_BUFFERS;
                let buf = self.rx_buffer(i);
                let len = u64::from(len).min(BUFFER_BYTES);
                maintain(self.coherent, buf, BUFFER_BYTES);
                let mut frame = [0u8; 64];
                let n = len.saturating_sub(NET_HDR_BYTES).min(64) as usize;
                for (k, b) in frame[..n].iter_mut().enumerate() {
                    *b = dma_read(buf + NET_HDR_BYTES + k as u64);
                }
                let reply = virtio::parse_arp_reply(&frame[..n], self.mac, self.peer_ip);
                self.post_rx(i, buf, BUFFER_BYTES as u32)?;
                self.notify_queue(RX_QUEUE)?;
                if let Some(r) = reply {
                    return Ok(r);
                }
            }
            let s = self.status()?;
            if s & status::DEVICE_NEEDS_RESET != 0 {
                return Err(NetError::NeedsReset(s));
            }
            if timer::now() > deadline {
                return Err(NetError::NoReply(seen));
            }
            timer::sleep_us(100);
        }
    }

    /// One ARP exchange that touches no trapped register: the request queued and notified
    /// (the notify page is the function's own), then, until the reply is in, a wait for the
    /// RX vector's interrupt (counted by the IRQ handler, no MMIO) and the used rings
    /// drained (RX buffers re-posted and notified). `Ok(false)`: no reply within `ms`.
    pub fn irq_exchange(&mut self, ms: u64) -> Result<bool, NetError> {
        while self.next_used(TX_QUEUE).is_some() {}
        let slot = (self.tx_count % u32::from(TX_BUFFERS)) as u16;
        let frame = self.arp_request();
        let part = self.fill_tx(slot, &frame);
        let first = self.tx.avail_idx;
        self.queue_tx_chain(first, &[part]);
        self.tx_count += 1;
        let mut seen = self.irq_count(RX_VECTOR);
        self.notify_queue(TX_QUEUE)?;
        let deadline = timer::now() + timer::ticks_from_ms(ms);
        loop {
            let now = self.irq_count(RX_VECTOR);
            if now > seen {
                seen = now;
                while let Some((id, len)) = self.next_used(RX_QUEUE) {
                    let i = (id as u16) % RX_BUFFERS;
                    let buf = self.rx_buffer(i);
                    let len = u64::from(len).min(BUFFER_BYTES);
                    maintain(self.coherent, buf, BUFFER_BYTES);
                    let mut frame = [0u8; 64];
                    let n = len.saturating_sub(NET_HDR_BYTES).min(64) as usize;
                    for (k, b) in frame[..n].iter_mut().enumerate() {
                        *b = dma_read(buf + NET_HDR_BYTES + k as u64);
                    }
                    let reply = virtio::parse_arp_reply(&frame[..n], self.mac, self.peer_ip);
                    self.post_rx(i, buf, BUFFER_BYTES as u32)?;
                    self.notify_queue(RX_QUEUE)?;
                    if reply.is_some() {
                        return Ok(true);
                    }
                }
            }
            if timer::now() > deadline {
                return Ok(false);
            }
            core::hint::spin_loop();
        }
    }

    /// Clears the observation state of vector `v`'s own doorbell (the mailbox word).
    pub fn clear_irq(&self, v: u16) {
        if let Doorbell::Ram { .. } = self.doorbell {
            let (a, _) = self.doorbell.message(v);
            dma_write::<u32>(a, 0);
            maintain(self.coherent, a, 4);
        }
    }

    /// How many own interrupts of vector `v` were seen so far (SPIs taken, or whether the
    /// mailbox holds the vector's data).
    pub fn irq_count(&self, v: u16) -> u32 {
        match self.doorbell {
            Doorbell::Mbi { first_spi, .. }
            | Doorbell::Its {
                first_lpi: first_spi,
                ..
            } => {
                gic::take_pending_irqs();
                gic::taken(first_spi + u32::from(v))
            }
            Doorbell::Ram { .. } => {
                let (a, data) = self.doorbell.message(v);
                maintain(self.coherent, a, 4);
                u32::from(dma_read::<u32>(a) == data)
            }
        }
    }

    /// Waits up to `ms` for vector `v`'s count to exceed `before`; microseconds taken.
    pub fn wait_irq(&self, v: u16, before: u32, ms: u64) -> Option<u64> {
        let start = timer::now();
        let deadline = start + timer::ticks_from_ms(ms);
        loop {
            if self.irq_count(v) > before {
                return Some(timer::us_from_ticks(timer::now() - start));
            }
            if timer::now() > deadline {
                return None;
            }
            timer::sleep_us(50);
        }
    }

    /// With the MBI doorbell: whether the TX vector's SPI, made pending by the CPU through
    /// GICD_ISPENDR, is taken (tells a broken MSI path from a broken SPI set-up).
    pub fn spi_path_check(&self) -> Option<Result<bool, gic::GicError>> {
        let Doorbell::Mbi { first_spi, .. } = self.doorbell else {
            return None;
        };
        let spi = first_spi + u32::from(TX_VECTOR);
        let g = gic::Gic::from_platform();
        let before = gic::taken(spi);
        let reg = g.gicd(microvisor_probe::gic::gicd::ISPENDR + u64::from(spi / 32) * 4);
        if let Err(e) = gic::write32(reg, 1 << (spi % 32), "gicd_ispendr") {
            return Some(Err(e));
        }
        let deadline = timer::now() + timer::ticks_from_ms(100);
        while timer::now() < deadline {
            gic::take_pending_irqs();
            if gic::taken(spi) > before {
                return Some(Ok(true));
            }
            timer::sleep_us(100);
        }
        Some(Ok(false))
    }

    /// One ARP exchange with slirp: the request sent, the TX interrupt, the reply, the RX
    /// interrupt.
    pub fn exchange(&mut self) -> Result<Exchange, NetError> {
        self.clear_irq(TX_VECTOR);
        self.clear_irq(RX_VECTOR);
        let (tx0, rx0) = (self.irq_count(TX_VECTOR), self.irq_count(RX_VECTOR));
        let start = timer::now();
        self.send_arp()?;
        let reply = self.wait_reply(FRAME_TIMEOUT_MS)?;
        let us = timer::us_from_ticks(timer::now() - start);
        let tx_irq = self.wait_irq(TX_VECTOR, tx0, 100);
        let rx_irq = self.wait_irq(RX_VECTOR, rx0, 100);
        Ok(Exchange {
            reply,
            us,
            tx_irq,
            rx_irq,
        })
    }
}

/// An ARP exchange's outcome.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    /// The reply.
    pub reply: virtio::ArpReply,
    /// Round trip in microseconds.
    pub us: u64,
    /// TX and RX interrupts (microseconds after the wait began), if they came.
    pub tx_irq: Option<u64>,
    /// See `tx_irq`.
    pub rx_irq: Option<u64>,
}

struct Irq(Option<u64>);

impl fmt::Display for Irq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(us) => write!(f, "delivered(us={us})"),
            None => f.write_str("not-delivered"),
        }
    }
}

/// Boot: finds the NIC, prints `NET INFO`, exchanges a frame, prints `NET PASS|FAIL`, and
/// returns what the report says. Nothing (no line) without a virtio-net function or with
/// `net=0`.
pub fn boot(platform: &Platform, options: &Options, dma_after: u64) -> NetSummary {
    let mut summary = NetSummary::default();
    let token = |args: fmt::Arguments<'_>| {
        let mut t = Text::new();
        let _ = t.write_fmt(args);
        Some(t)
    };
    if !options.net {
        return summary;
    }
    let addresses = (Ipv4(options.net_ip), Ipv4(options.net_peer));
    let outcome = match probe(platform, dma_after, addresses) {
        None => return summary,
        Some(r) => r,
    };
    if let Err(e) = outcome {
        println!("NET FAIL {e}");
        PASSED.call_once(|| false);
        summary.state = token(format_args!("{e}"));
        return summary;
    }
    let mut guard = NIC.lock();
    let Some(nic) = guard.as_mut() else {
        return summary;
    };
    let mut mac = Text::new();
    let _ = write!(mac, "{}", nic.mac);
    summary.mac = Some(mac);
    let bridges = nic.path;
    let bar = |i: usize| nic.bars[i].map_or(0, |b| b.cpu);
    println!(
        "NET INFO bdf={} mac={} bridges={} bar1={:#x} bar4={:#x} features={:#x} offered={:#x} \
         queue-pairs={} entries={} msix={} doorbell={} ip={} peer={} dma={:#x} coherent={}",
        nic.bdf,
        nic.mac,
        BridgeList(&bridges),
        bar(1),
        bar(4),
        nic.features,
        nic.offered,
        nic.max_pairs,
        nic.rx.layout.size,
        nic.msix_vectors,
        nic.doorbell,
        nic.own_ip,
        nic.peer_ip,
        nic.dma.start,
        u8::from(nic.coherent)
    );
    match nic.exchange() {
        Ok(x) if x.tx_irq.is_some() && x.rx_irq.is_some() => {
            println!(
                "NET PASS arp-reply from={} ip={} us={} irq-tx={} irq-rx={}",
                x.reply.mac,
                x.reply.ip,
                x.us,
                Irq(x.tx_irq),
                Irq(x.rx_irq)
            );
            PASSED.call_once(|| true);
            summary.state = token(format_args!("ok"));
        }
        Ok(x) => {
            println!(
                "NET FAIL interrupts arp-reply from={} irq-tx={} irq-rx={} spi-path={}",
                x.reply.mac,
                Irq(x.tx_irq),
                Irq(x.rx_irq),
                SpiPath(nic.spi_path_check())
            );
            PASSED.call_once(|| false);
            summary.state = token(format_args!("interrupts"));
        }
        Err(e) => {
            println!("NET FAIL {e}");
            PASSED.call_once(|| false);
            summary.state = token(format_args!("{e}"));
        }
    }
    summary
}

/// `ok`, `not-taken`, `n/a` (RAM mailbox) or `error`.
struct SpiPath(Option<Result<bool, gic::GicError>>);

impl fmt::Display for SpiPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            None => "n/a",
            Some(Ok(true)) => "ok",
            Some(Ok(false)) => "not-taken",
            Some(Err(_)) => "error",
        })
    }
}

/// `none` or `00:10.0,...`.
struct BridgeList<'a>(&'a BridgePath);

impl fmt::Display for BridgeList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bridges = self.0.bridges();
        if bridges.is_empty() {
            return f.write_str("none");
        }
        for (i, b) in bridges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{b}")?;
        }
        Ok(())
    }
}
