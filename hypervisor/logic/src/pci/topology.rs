//! Enumeration of the whole PCI hierarchy below the host bridge (PCI-to-PCI Bridge
//! Architecture 1.2 §3.2.5.2-5, PCIe Base 4.0 §7.5.1.3): depth first, in device/function
//! order, giving each PCI-to-PCI bridge the next free bus number as firmware and Linux do.
//! Every step is bounded by the host's bus range, so a hostile or broken device can neither
//! loop the walk nor make it claim a bus twice.

use alloc::vec::Vec;
use core::ops::RangeInclusive;

use super::{Bdf, ConfigSpace, Function, header};

/// Type-1 (PCI-to-PCI bridge) header offsets (PCI-to-PCI Bridge Architecture 1.2 §3.2).
pub mod bridge {
    /// Primary (7:0), Secondary (15:8) and Subordinate (23:16) Bus Numbers, Secondary
    /// Latency Timer (31:24).
    pub const BUS_NUMBERS: u16 = 0x18;
    /// I/O Base (7:0) and Limit (15:8); Secondary Status above.
    pub const IO_BASE_LIMIT: u16 = 0x1c;
    /// Memory Base (15:0) and Limit (31:16): address bits 31:20 in bits 15:4 of each half.
    pub const MEMORY_BASE_LIMIT: u16 = 0x20;
    /// Prefetchable Memory Base (15:0) and Limit (31:16), as the memory window; bits 3:0 of
    /// each half say 0 = 32-bit, 1 = 64-bit window.
    pub const PREFETCHABLE_BASE_LIMIT: u16 = 0x24;
    /// Prefetchable Base Upper 32 Bits.
    pub const PREFETCHABLE_BASE_UPPER: u16 = 0x28;
    /// Prefetchable Limit Upper 32 Bits.
    pub const PREFETCHABLE_LIMIT_UPPER: u16 = 0x2c;
    /// I/O Base Upper 16 Bits (15:0) and I/O Limit Upper 16 Bits (31:16).
    pub const IO_UPPER: u16 = 0x30;
    /// Window granularity of the memory and prefetchable windows (1 MiB).
    pub const WINDOW_GRANULE: u64 = 1 << 20;
}

/// The header layout of a function (PCI Local Bus 3.0 §6.2.1, Header Type bits 6:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderType {
    /// Type 0: an endpoint (or a host bridge function) with six BARs.
    Endpoint,
    /// Type 1: a PCI-to-PCI bridge (PCIe root and switch ports included).
    Bridge,
    /// Anything else (type 2 CardBus bridges, reserved values): its BARs are never placed
    /// (decoding and bus mastering are turned off).
    Other(u8),
}

impl HeaderType {
    fn from_register(value: u32) -> HeaderType {
        match (value >> 16) as u8 & 0x7f {
            0 => HeaderType::Endpoint,
            1 => HeaderType::Bridge,
            other => HeaderType::Other(other),
        }
    }
}

/// The buses behind a bridge, as the enumeration programmed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusRange {
    /// The bus directly behind the bridge.
    pub secondary: u8,
    /// The highest bus anywhere below it.
    pub subordinate: u8,
}

/// One function of the hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFunction {
    /// Where it is and what it says it is.
    pub function: Function,
    pub header: HeaderType,
    /// The bridges between the host bridge and this function, outermost first (empty on the
    /// root bus).
    pub upstream: Vec<Bdf>,
    /// For a bridge: the buses it forwards to (None when it got none, see
    /// [`TopologyProblem`]).
    pub buses: Option<BusRange>,
}

impl FoundFunction {
    pub fn bdf(&self) -> Bdf {
        self.function.bdf
    }

    /// The bridge directly above this function, if it is not on the root bus.
    pub fn parent(&self) -> Option<Bdf> {
        self.upstream.last().copied()
    }

    pub fn is_bridge(&self) -> bool {
        self.header == HeaderType::Bridge
    }
}

/// Something the enumeration had to leave out. The bridge stays in the topology with no bus
/// numbers (secondary and subordinate 0), so nothing behind it is reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyProblem {
    /// No bus number was left in the host's bus range for this bridge.
    BusesExhausted(Bdf),
    /// The bridge did not keep the bus numbers written to it.
    BusNumbersRefused(Bdf),
}

impl core::fmt::Display for TopologyProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BusesExhausted(b) => write!(
                f,
                "bridge {b}: no bus number left, nothing behind it is used"
            ),
            Self::BusNumbersRefused(b) => {
                write!(
                    f,
                    "bridge {b}: does not keep its bus numbers, nothing behind it is used"
                )
            }
        }
    }
}

/// The hierarchy as enumerated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// Every function found, depth first in device/function order: a bridge comes right
    /// before the functions behind it.
    pub functions: Vec<FoundFunction>,
    /// What was left out, in the order met.
    pub problems: Vec<TopologyProblem>,
}

impl Topology {
    /// The function at `bdf`.
    pub fn get(&self, bdf: Bdf) -> Option<&FoundFunction> {
        self.functions.iter().find(|f| f.bdf() == bdf)
    }

    /// Type-0 functions (endpoints and the host bridge's own function).
    pub fn endpoints(&self) -> impl Iterator<Item = &FoundFunction> {
        self.functions
            .iter()
            .filter(|f| f.header == HeaderType::Endpoint)
    }

    /// PCI-to-PCI bridges.
    pub fn bridges(&self) -> impl Iterator<Item = &FoundFunction> {
        self.functions.iter().filter(|f| f.is_bridge())
    }

    /// Every function below `bridge`, at any depth.
    pub fn behind(&self, bridge: Bdf) -> impl Iterator<Item = &FoundFunction> {
        self.functions
            .iter()
            .filter(move |f| f.upstream.contains(&bridge))
    }
}

/// A bus still being walked: its functions (found in a first pass) and the next to visit.
struct BusFrame {
    found: Vec<(Function, HeaderType)>,
    next: usize,
    /// Bridges above this bus, outermost first.
    upstream: Vec<Bdf>,
    /// Index in `Topology::functions` of the bridge leading here.
    bridge: Option<usize>,
}

/// Whether a Vendor ID read means "nothing here": all ones (no function, PCIe Base 4.0
/// §2.3.2), zero (never valid) or 0x0001 (Configuration Request Retry Status, §2.3.1: not
/// ready yet).
pub fn vendor_absent(ids: u32) -> bool {
    matches!(ids as u16, 0xffff | 0x0000 | 0x0001)
}

/// The functions of `bus` (devices 0-31; functions 1-7 only of multi-function devices),
/// without looking behind bridges; every bridge among them gets its bus numbers cleared
/// (secondary and subordinate 0) so that none forwards anything until it is visited.
fn scan_one_bus(config: &mut dyn ConfigSpace, bus: u8) -> Vec<(Function, HeaderType)> {
    let mut found = Vec::new();
    for device in 0..32 {
        for function in 0..8 {
            let bdf = Bdf::new(bus, device, function);
            let ids = config.read(bdf, header::VENDOR_DEVICE);
            if vendor_absent(ids) {
                if function == 0 {
                    break;
                }
                continue;
            }
            let header_register = config.read(bdf, header::HEADER_TYPE);
            let header = HeaderType::from_register(header_register);
            found.push((
                Function {
                    bdf,
                    vendor: ids as u16,
                    device: (ids >> 16) as u16,
                    class: config.read(bdf, header::CLASS_REVISION) >> 8,
                },
                header,
            ));
            if header == HeaderType::Bridge {
                set_bus_numbers(config, bdf, bus, 0, 0);
            }
            let multifunction = header_register & (1 << 23) != 0;
            if function == 0 && !multifunction {
                break;
            }
        }
    }
    found
}

/// Writes a bridge's primary, secondary and subordinate bus numbers (the latency timer
/// byte is kept); true when it reads them back.
fn set_bus_numbers(
    config: &mut dyn ConfigSpace,
    bdf: Bdf,
    primary: u8,
    secondary: u8,
    subordinate: u8,
) -> bool {
    let old = config.read(bdf, bridge::BUS_NUMBERS);
    let numbers = u32::from(primary) | u32::from(secondary) << 8 | u32::from(subordinate) << 16;
    config.write(bdf, bridge::BUS_NUMBERS, old & 0xff00_0000 | numbers);
    config.read(bdf, bridge::BUS_NUMBERS) & 0x00ff_ffff == numbers
}

/// Enumerates the hierarchy on `buses` (the host's bus range, [`crate::inventory::PcieHost::buses`]):
/// the root bus is the first; each bridge met gets the next free bus as its secondary bus
/// and, once everything behind it is numbered, the highest one as its subordinate bus.
/// Bridges that find no free bus or refuse their numbers are listed in
/// [`Topology::problems`] with nothing behind them. Reads at most every function of every
/// bus in the range once.
pub fn enumerate(config: &mut dyn ConfigSpace, buses: RangeInclusive<u8>) -> Topology {
    let (root, last) = (*buses.start(), *buses.end());
    let mut topology = Topology::default();
    if root > last {
        return topology;
    }
    // Next bus number to hand out (u16: may pass 255).
    let mut next_bus = u16::from(root) + 1;
    let mut stack = alloc::vec![BusFrame {
        found: scan_one_bus(config, root),
        next: 0,
        upstream: Vec::new(),
        bridge: None,
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(&(function, header)) = frame.found.get(frame.next) else {
            // Done with this bus: its bridge's subordinate bus is the last one handed out.
            if let Some(index) = frame.bridge {
                let bridge = &mut topology.functions[index];
                let bdf = bridge.bdf();
                if let Some(range) = &mut bridge.buses {
                    range.subordinate = (next_bus - 1) as u8;
                    set_bus_numbers(config, bdf, bdf.bus, range.secondary, range.subordinate);
                }
            }
            stack.pop();
            continue;
        };
        frame.next += 1;
        let upstream = frame.upstream.clone();
        let index = topology.functions.len();
        topology.functions.push(FoundFunction {
            function,
            header,
            upstream: upstream.clone(),
            buses: None,
        });
        if header != HeaderType::Bridge {
            continue;
        }
        let bdf = function.bdf;
        if next_bus > u16::from(last) {
            topology.problems.push(TopologyProblem::BusesExhausted(bdf));
            continue;
        }
        let secondary = next_bus as u8;
        // Subordinate at the end of the range while the subtree is walked, so configuration
        // requests reach every bus that may be handed out below.
        if !set_bus_numbers(config, bdf, function.bdf.bus, secondary, last) {
            set_bus_numbers(config, bdf, function.bdf.bus, 0, 0);
            topology
                .problems
                .push(TopologyProblem::BusNumbersRefused(bdf));
            continue;
        }
        next_bus += 1;
        topology.functions[index].buses = Some(BusRange {
            secondary,
            subordinate: secondary,
        });
        let mut below = upstream;
        below.push(bdf);
        stack.push(BusFrame {
            found: scan_one_bus(config, secondary),
            next: 0,
            upstream: below,
            bridge: Some(index),
        });
    }
    topology
}
