//! PCI enumeration for the NVMe and virtio-net drivers: dword configuration
//! accesses through the DT's ECAM (guarded: a fault is an error, not a parked
//! CPU), a scan of the first bus of the bus range for an NVMe function (class
//! 01_08_02), a depth-first walk through PCI-to-PCI bridges for the NIC
//! (natively it sits behind a `pcie-root-port`; bus numbers and a bridge
//! memory window are assigned when no firmware did), and BAR assignment in the
//! host bridge's 32-bit memory window, shared by both drivers. Only the
//! functions found (and the bridges above them) are touched.

use core::fmt;

use microvisor_probe::dt::PciHost;
use microvisor_probe::dt::PciWindow;
use microvisor_probe::pci::{
    self, Bar, BarKind, Bdf, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_MEMORY,
    WindowAllocator, bridge, config,
};

use super::guarded::{self, Fault};

/// Why the NVMe function could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// A configuration access faulted.
    Config {
        /// Register offset.
        reg: u16,
        /// The fault.
        fault: Fault,
    },
    /// The host bridge has no 32-bit memory window for the BARs.
    NoWindow,
    /// BAR `bar` of `size` bytes does not fit the window.
    NoRoom {
        /// BAR index.
        bar: usize,
        /// Its size.
        size: u64,
    },
    /// BAR 0 is not a memory BAR.
    NoBar0,
    /// The ECAM lies in RAM or in the image.
    EcamInRam(u64),
    /// No bus number is left for a bridge's secondary bus.
    NoBusNumber,
}

/// One token each (they end up in `"nvme"` and `PROBE FAIL`).
impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PciError::Config { reg, fault } => match fault {
                Fault::Exception { esr, .. } => {
                    write!(f, "pci-config-fault(reg={reg:#x},esr={esr:#x})")
                }
                Fault::Unaddressable => write!(f, "pci-config-unaddressable(reg={reg:#x})"),
            },
            PciError::NoWindow => f.write_str("pci-no-32bit-window"),
            PciError::NoRoom { bar, size } => {
                write!(f, "pci-bar-does-not-fit(bar={bar},size={size:#x})")
            }
            PciError::NoBar0 => f.write_str("pci-bar0-not-memory"),
            PciError::EcamInRam(addr) => write!(f, "pci-ecam-in-ram({addr:#x})"),
            PciError::NoBusNumber => f.write_str("pci-no-bus-number"),
        }
    }
}

/// Configuration space of one host bridge.
#[derive(Clone, Copy, Debug)]
pub struct Ecam {
    host: PciHost,
}

impl Ecam {
    /// The bridge's ECAM; refused if it overlaps RAM or the image (the
    /// guarded accesses below must never touch a Rust object).
    pub fn new(host: PciHost) -> Result<Self, PciError> {
        let base = host.ecam.base;
        let end = host.ecam.end();
        let overlaps = super::PLATFORM
            .get()
            .is_some_and(|p| p.memory().iter().any(|m| m.base < end && base < m.end()));
        let image = super::footprint();
        if overlaps || (image.start < end && base < image.end) {
            return Err(PciError::EcamInRam(base));
        }
        Ok(Self { host })
    }

    fn address(&self, bdf: Bdf, reg: u16) -> u64 {
        self.host.ecam.base + bdf.ecam_offset(self.host.bus_start, reg)
    }

    /// Reads the configuration dword at `reg`.
    pub fn read(&self, bdf: Bdf, reg: u16) -> Result<u32, PciError> {
        // SAFETY: the address lies in the ECAM region (device memory outside
        // RAM and the image, checked in `new`), so it aliases no Rust
        // object; a fault returns as an error.
        unsafe { guarded::read32(self.address(bdf, reg)) }
            .map_err(|fault| PciError::Config { reg, fault })
    }

    /// Writes the configuration dword at `reg`.
    pub fn write(&self, bdf: Bdf, reg: u16, value: u32) -> Result<(), PciError> {
        // SAFETY: as in `read`.
        unsafe { guarded::write32(self.address(bdf, reg), value) }
            .map_err(|fault| PciError::Config { reg, fault })
    }

    /// The first NVMe function on the first bus of the bus range, if any.
    pub fn find_nvme(&self) -> Result<Option<Bdf>, PciError> {
        self.scan_bus(self.host.bus_start, |bdf, _, class, layout| {
            Ok((class == pci::CLASS_NVME && layout == 0).then_some(bdf))
        })
    }

    /// Calls `visit(bdf, id, class, header layout)` for every function present on `bus`
    /// (functions 1-7 only of multi-function devices) until it returns something.
    fn scan_bus<T>(
        &self,
        bus: u8,
        mut visit: impl FnMut(Bdf, u32, u32, u8) -> Result<Option<T>, PciError>,
    ) -> Result<Option<T>, PciError> {
        for device in 0..32u8 {
            let f0 = Bdf {
                bus,
                device,
                function: 0,
            };
            if !pci::function_present(self.read(f0, config::ID)?) {
                continue;
            }
            let functions = if pci::multifunction(self.read(f0, config::HEADER)?) {
                8
            } else {
                1
            };
            for function in 0..functions {
                let bdf = Bdf {
                    bus,
                    device,
                    function,
                };
                let id = self.read(bdf, config::ID)?;
                if !pci::function_present(id) {
                    continue;
                }
                let class = self.read(bdf, config::CLASS_REVISION)? >> 8;
                let layout = pci::header_layout(self.read(bdf, config::HEADER)?);
                if let Some(found) = visit(bdf, id, class, layout)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Sizes and assigns every memory BAR of `bdf` in the 32-bit window,
    /// then enables memory decoding and bus mastering (INTx off, MSI-X left
    /// as it is: disabled after reset). Returns BAR 0's CPU address and size.
    pub fn enable(&self, bdf: Bdf) -> Result<(u64, u64), PciError> {
        let window = self.host.mem32.ok_or(PciError::NoWindow)?;
        let bars = with_window(window, |allocator| self.assign_bars(bdf, allocator))?;
        let bar0 = bars[0].ok_or(PciError::NoBar0)?;
        Ok((bar0.cpu, bar0.size))
    }

    /// Sizes and places every memory BAR of `bdf` (decoding off meanwhile),
    /// then turns on memory decoding, bus mastering and INTx disable.
    pub fn assign_bars(
        &self,
        bdf: Bdf,
        allocator: &mut WindowAllocator,
    ) -> Result<[Option<PlacedBar>; config::BARS], PciError> {
        let mut placed = [None; config::BARS];
        let command = self.read(bdf, config::COMMAND)?;
        // Decoding off while the BARs hold sizing patterns.
        let decode = u32::from(COMMAND_MEMORY | 1);
        self.write(bdf, config::COMMAND, command & 0xffff & !decode)?;
        let count = if pci::header_layout(self.read(bdf, config::HEADER)?) == 1 {
            bridge::BARS
        } else {
            config::BARS
        };
        let mut index = 0;
        while index < count {
            let reg = config::BAR0 + 4 * index as u16;
            let original = self.read(bdf, reg)?;
            self.write(bdf, reg, u32::MAX)?;
            let low = self.read(bdf, reg)?;
            let is64 = original & 1 == 0 && (original >> 1) & 3 == 0b10 && index + 1 < count;
            let high = if is64 {
                let original_high = self.read(bdf, reg + 4)?;
                self.write(bdf, reg + 4, u32::MAX)?;
                let high = self.read(bdf, reg + 4)?;
                self.write(bdf, reg + 4, original_high)?;
                high
            } else {
                0
            };
            let bar = Bar::from_sizing(low, high);
            if bar.kind == BarKind::Io || !bar.implemented() {
                self.write(bdf, reg, original)?;
                index += 1;
                continue;
            }
            let below_4g = bar.kind == BarKind::Mem32;
            let place = allocator
                .place(bar.size, below_4g)
                .ok_or(PciError::NoRoom {
                    bar: index,
                    size: bar.size,
                })?;
            self.write(bdf, reg, place.pci as u32)?;
            if bar.kind == BarKind::Mem64 {
                self.write(bdf, reg + 4, (place.pci >> 32) as u32)?;
            }
            placed[index] = Some(PlacedBar {
                cpu: place.cpu,
                pci: place.pci,
                size: bar.size,
                is64: bar.kind == BarKind::Mem64,
            });
            index += if bar.kind == BarKind::Mem64 { 2 } else { 1 };
        }
        let enable = COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
        self.write(
            bdf,
            config::COMMAND,
            (command & 0xffff & !1) | u32::from(enable),
        )?;
        Ok(placed)
    }

    /// The first function for which `wanted(id, class)` holds, searched
    /// depth first from the first bus through PCI-to-PCI bridges (numbering
    /// their secondary buses when they have none), with the bridges above
    /// it, outermost first.
    pub fn find_behind_bridges(
        &self,
        wanted: impl Fn(u32, u32) -> bool,
    ) -> Result<Option<(Bdf, BridgePath)>, PciError> {
        let mut walk = Walk {
            next_bus: self.host.bus_start.saturating_add(1),
            path: BridgePath::default(),
        };
        self.walk_bus(self.host.bus_start, &wanted, &mut walk)
    }

    fn walk_bus(
        &self,
        bus: u8,
        wanted: &impl Fn(u32, u32) -> bool,
        walk: &mut Walk,
    ) -> Result<Option<(Bdf, BridgePath)>, PciError> {
        self.scan_bus(bus, |bdf, id, class, layout| {
            if layout == 0 && wanted(id, class) {
                return Ok(Some((bdf, walk.path)));
            }
            if layout == 1 && walk.path.len < MAX_BRIDGE_DEPTH {
                return self.walk_bridge(bdf, wanted, walk);
            }
            Ok(None)
        })
    }

    fn walk_bridge(
        &self,
        bdf: Bdf,
        wanted: &impl Fn(u32, u32) -> bool,
        walk: &mut Walk,
    ) -> Result<Option<(Bdf, BridgePath)>, PciError> {
        let buses = self.read(bdf, bridge::BUSES)?;
        let mut secondary = (buses >> 8) as u8;
        let assign = secondary <= bdf.bus || secondary > self.host.bus_end;
        if assign {
            if walk.next_bus > self.host.bus_end || walk.next_bus == 0 {
                return Err(PciError::NoBusNumber);
            }
            secondary = walk.next_bus;
            walk.next_bus = walk.next_bus.saturating_add(1);
            let value = pci::bridge_buses(buses, bdf.bus, secondary, self.host.bus_end);
            self.write(bdf, bridge::BUSES, value)?;
        } else {
            walk.next_bus = walk.next_bus.max(secondary.saturating_add(1));
        }
        walk.path.bridges[walk.path.len] = bdf;
        walk.path.len += 1;
        let found = self.walk_bus(secondary, wanted, walk)?;
        walk.path.len -= 1;
        if assign {
            let last = walk.next_bus.saturating_sub(1).max(secondary);
            let now = self.read(bdf, bridge::BUSES)?;
            self.write(
                bdf,
                bridge::BUSES,
                pci::bridge_buses(now, bdf.bus, secondary, last),
            )?;
        }
        Ok(found)
    }

    /// Places the BARs of `bdf` found behind `path`: with no bridge straight
    /// in the shared window; else a 1 MiB window is taken from it, every
    /// bridge of the path forwards it (prefetchable window off, memory and
    /// bus mastering on) and the BARs go inside it.
    pub fn assign_behind(
        &self,
        bdf: Bdf,
        path: &BridgePath,
    ) -> Result<[Option<PlacedBar>; config::BARS], PciError> {
        let window = self.host.mem32.ok_or(PciError::NoWindow)?;
        if path.len == 0 {
            return with_window(window, |allocator| self.assign_bars(bdf, allocator));
        }
        let granule = bridge::WINDOW_GRANULE;
        let place = with_window(window, |allocator| {
            allocator.place(granule, true).ok_or(PciError::NoRoom {
                bar: 0,
                size: granule,
            })
        })?;
        for &b in path.bridges() {
            self.write(
                b,
                bridge::MEMORY,
                pci::bridge_memory_window(place.pci, granule),
            )?;
            self.write(b, bridge::PREFETCH, pci::BRIDGE_PREFETCH_OFF)?;
            self.write(b, bridge::PREFETCH_BASE_UPPER, 0)?;
            self.write(b, bridge::PREFETCH_LIMIT_UPPER, 0)?;
            let command = self.read(b, config::COMMAND)? & 0xffff;
            let on = u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER);
            self.write(b, config::COMMAND, command | on)?;
        }
        let mut inner = WindowAllocator::new(PciWindow {
            cpu: place.cpu,
            pci: place.pci,
            size: granule,
            prefetchable: false,
        });
        self.assign_bars(bdf, &mut inner)
    }
}

/// One BAR as placed: CPU and bus address, size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedBar {
    /// Guest-physical address the CPU uses.
    pub cpu: u64,
    /// Bus address programmed into the BAR.
    pub pci: u64,
    /// Bytes.
    pub size: u64,
    /// A 64-bit BAR (the next BAR register holds the high half).
    pub is64: bool,
}

/// Most bridges between the host bridge and a function the walk follows.
pub const MAX_BRIDGE_DEPTH: usize = 4;

/// The bridges above a function, outermost first.
#[derive(Clone, Copy, Debug)]
pub struct BridgePath {
    bridges: [Bdf; MAX_BRIDGE_DEPTH],
    len: usize,
}

impl Default for BridgePath {
    fn default() -> Self {
        Self {
            bridges: [Bdf {
                bus: 0,
                device: 0,
                function: 0,
            }; MAX_BRIDGE_DEPTH],
            len: 0,
        }
    }
}

impl BridgePath {
    /// The bridges.
    pub fn bridges(&self) -> &[Bdf] {
        &self.bridges[..self.len]
    }
}

struct Walk {
    next_bus: u8,
    path: BridgePath,
}

/// The host bridge's 32-bit window as handed out so far (both drivers place
/// their BARs in it, NVMe first).
static WINDOW: spin::Mutex<Option<WindowAllocator>> = spin::Mutex::new(None);

fn with_window<T>(
    window: PciWindow,
    f: impl FnOnce(&mut WindowAllocator) -> Result<T, PciError>,
) -> Result<T, PciError> {
    let mut guard = WINDOW.lock();
    let allocator = guard.get_or_insert_with(|| WindowAllocator::new(window));
    f(allocator)
}
