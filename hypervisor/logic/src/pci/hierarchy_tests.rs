//! The whole-hierarchy code against a fake PCIe tree that routes configuration requests the
//! way bridges do (by the bus numbers programmed into them): root ports with endpoints
//! behind them, an empty root port, a switch, a multi-function device, and hostile bridges.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::Cell;

use super::reset::{self, Clock, ResetError, ResetOutcome, SavedFunction};
use super::topology::{BusRange, HeaderType, TopologyProblem, enumerate};
use super::windows::{PlacementProblem, PrefetchableSupport, place_hierarchy};
use super::*;
use crate::inventory::{PciWindow, PcieHost, Region};

/// One fake function.
#[derive(Clone, Debug, Default)]
struct FakeFunction {
    regs: BTreeMap<u16, u32>,
    /// Implemented BAR dwords: (writable bits, read-only type bits).
    bars: BTreeMap<u16, (u32, u32)>,
    /// A bridge: the bus behind it.
    child: Option<FakeBus>,
    /// The bridge ignores writes to its bus numbers (which read as `regs[0x18]`).
    stuck_bus_numbers: bool,
    /// The bridge's prefetchable window.
    prefetchable: Option<PrefetchableSupport>,
    /// The registers as after a reset (for FLR).
    reset_state: BTreeMap<u16, u32>,
    /// FLRs done.
    flrs: u32,
    /// Reads of the Vendor ID that still see all ones after an FLR.
    absent_reads_after_flr: u32,
    absent_reads_left: u32,
    /// Transactions Pending never clears.
    always_pending: bool,
}

#[derive(Clone, Debug, Default)]
struct FakeBus {
    functions: BTreeMap<(u8, u8), FakeFunction>,
}

/// The tree with the root bus at number 0, counting accesses.
#[derive(Clone, Debug, Default)]
struct Tree {
    root: FakeBus,
    accesses: usize,
}

const PCIE_CAP: u16 = 0x80;

fn endpoint(ids: u32, class: u32) -> FakeFunction {
    let mut f = FakeFunction::default();
    f.regs.insert(0x00, ids);
    f.regs.insert(0x08, class << 8);
    f
}

impl FakeFunction {
    fn multifunction(mut self) -> Self {
        let h = self.regs.get(&0x0c).copied().unwrap_or(0);
        self.regs.insert(0x0c, h | 1 << 23);
        self
    }

    /// A memory BAR at `index` of `size` bytes.
    fn bar(mut self, index: u16, size: u64, is_64bit: bool, prefetchable: bool) -> Self {
        let offset = 0x10 + 4 * index;
        let kind = if is_64bit { 0b100 } else { 0 } | if prefetchable { 0b1000 } else { 0 };
        let mask = !(size - 1);
        self.regs.insert(offset, kind);
        self.bars.insert(offset, (mask as u32 & !0xf, kind));
        if is_64bit {
            self.regs.insert(offset + 4, 0);
            self.bars.insert(offset + 4, ((mask >> 32) as u32, 0));
        }
        self
    }

    /// A PCIe capability at 0x80 (FLR capable or not).
    fn express(mut self, flr: bool) -> Self {
        let status = self.regs.get(&0x04).copied().unwrap_or(0);
        self.regs.insert(0x04, status | header::STATUS_CAPABILITIES);
        self.regs.insert(0x34, u32::from(PCIE_CAP));
        self.regs.insert(PCIE_CAP, 0x0002_0010);
        self.regs.insert(
            PCIE_CAP + 4,
            if flr { reset::express::FLR_CAPABLE } else { 0 },
        );
        self.regs.insert(PCIE_CAP + 8, 0x0000_2810);
        self
    }

    /// A PCIe port of Device/Port Type `kind`, with an ACS capability at 0x100 implementing
    /// `acs` (its controls writable) when given.
    fn port(mut self, kind: u8, acs: Option<u16>) -> Self {
        self = self.express(false);
        self.regs
            .insert(PCIE_CAP, 0x0002_0010 | u32::from(kind) << 20);
        if let Some(bits) = acs {
            self.regs.insert(0x100, 0x0001_000d);
            self.regs.insert(0x104, u32::from(bits));
        }
        self.done()
    }

    fn done(mut self) -> Self {
        self.reset_state = self.regs.clone();
        self
    }

    fn read(&mut self, offset: u16) -> u32 {
        if offset == 0 && self.absent_reads_left > 0 {
            self.absent_reads_left -= 1;
            return u32::MAX;
        }
        if offset == PCIE_CAP + 8 && self.always_pending {
            return self.regs.get(&offset).copied().unwrap_or(0)
                | reset::express::TRANSACTIONS_PENDING;
        }
        self.regs.get(&offset).copied().unwrap_or(0)
    }

    fn write(&mut self, offset: u16, value: u32) {
        let bridge = self.child.is_some() || self.stuck_bus_numbers;
        let bar_end = if bridge { 0x18 } else { 0x28 };
        let value = match offset {
            0x00 | 0x08 | 0x0c => return,
            0x04 => value & 0xffff | self.read(0x04) & 0xffff_0000,
            o if (0x10..bar_end).contains(&o) => self
                .bars
                .get(&o)
                .map_or(0, |&(writable, fixed)| value & writable | fixed),
            0x18 if bridge && self.stuck_bus_numbers => return,
            0x20 if bridge => value & 0xfff0_fff0,
            0x24 | 0x28 | 0x2c if bridge => match self.prefetchable {
                None | Some(PrefetchableSupport::None) => 0,
                Some(PrefetchableSupport::Bits32) if offset == 0x24 => value & 0xfff0_fff0,
                Some(PrefetchableSupport::Bits32) => 0,
                Some(PrefetchableSupport::Bits64) if offset == 0x24 => {
                    value & 0xfff0_fff0 | 0x0001_0001
                }
                Some(PrefetchableSupport::Bits64) => value,
            },
            o if o == PCIE_CAP + 8 && value & reset::express::INITIATE_FLR != 0 => {
                self.flrs += 1;
                self.regs = self.reset_state.clone();
                self.absent_reads_left = self.absent_reads_after_flr;
                return;
            }
            _ => value,
        };
        self.regs.insert(offset, value);
    }
}

/// A bridge (type 1) with IDs `ids` and `child` behind it.
fn bridge(ids: u32, child: FakeBus, prefetchable: PrefetchableSupport) -> FakeFunction {
    let mut f = endpoint(ids, 0x06_04_00);
    f.regs.insert(0x0c, 1 << 16);
    if prefetchable == PrefetchableSupport::Bits64 {
        f.regs.insert(0x24, 0x0001_0001);
    }
    f.prefetchable = Some(prefetchable);
    f.child = Some(child);
    f.done()
}

fn root_port(child: FakeBus) -> FakeFunction {
    bridge(0x000c_1b36, child, PrefetchableSupport::Bits64)
}

fn virtio_net() -> FakeFunction {
    endpoint(0x1041_1af4, 0x02_00_00)
        .bar(1, 0x1000, false, false)
        .bar(4, 0x4000, true, true)
        .express(true)
        .done()
}

fn bus(functions: Vec<((u8, u8), FakeFunction)>) -> FakeBus {
    FakeBus {
        functions: functions.into_iter().collect(),
    }
}

/// Finds the function `bdf` addresses, routing through bridges by their programmed bus
/// numbers (a bridge forwards bus `b` when secondary <= b <= subordinate).
fn locate(bus: &mut FakeBus, number: u8, bdf: Bdf) -> Option<&mut FakeFunction> {
    if bdf.bus == number {
        return bus.functions.get_mut(&(bdf.device, bdf.function));
    }
    let next = bus.functions.values_mut().find(|f| {
        let numbers = f.regs.get(&0x18).copied().unwrap_or(0);
        let (secondary, subordinate) = ((numbers >> 8) as u8, (numbers >> 16) as u8);
        f.child.is_some() && secondary > number && (secondary..=subordinate).contains(&bdf.bus)
    })?;
    let secondary = (next.regs[&0x18] >> 8) as u8;
    locate(next.child.as_mut()?, secondary, bdf)
}

impl ConfigSpace for Tree {
    fn read(&mut self, bdf: Bdf, offset: u16) -> u32 {
        self.accesses += 1;
        match locate(&mut self.root, 0, bdf) {
            Some(f) => f.read(offset),
            None => u32::MAX,
        }
    }

    fn write(&mut self, bdf: Bdf, offset: u16, value: u32) {
        self.accesses += 1;
        if let Some(f) = locate(&mut self.root, 0, bdf) {
            f.write(offset, value);
        }
    }
}

/// The test node:
/// - 00:00.0 host bridge; 00:02.0 NVMe (16 KiB 64-bit BAR0);
/// - 00:03.0-1 and 00:03.3: a multi-function device (4 KiB BAR0 each; 00:03.2 absent);
/// - 00:10.0 root port -> 01:00.0 virtio-net (BAR1 4 KiB, BAR4 16 KiB 64-bit prefetchable);
/// - 00:11.0 empty root port;
/// - 00:12.0 root port -> switch 03:00.0 -> ports 04:00.0 (-> 05:00.0: 2 MiB 64-bit
///   prefetchable and 8 KiB BARs) and 04:01.0 (-> 06:00.0 virtio-net);
/// - 00:13.0 root port without a prefetchable window -> 07:00.0 (64 KiB 64-bit prefetchable).
fn node() -> Tree {
    let multi = |f: FakeFunction| f.bar(0, 0x1000, false, false).done();
    let switch_down = bus(vec![
        (
            (0, 0),
            bridge(
                0x000e_1b36,
                bus(vec![(
                    (0, 0),
                    endpoint(0x0001_1234, 0x01_80_00)
                        .bar(0, 0x20_0000, true, true)
                        .bar(2, 0x2000, false, false)
                        .done(),
                )]),
                PrefetchableSupport::Bits64,
            ),
        ),
        (
            (1, 0),
            bridge(
                0x000e_1b36,
                bus(vec![((0, 0), virtio_net())]),
                PrefetchableSupport::Bits64,
            ),
        ),
    ]);
    let root = bus(vec![
        ((0, 0), endpoint(0x0008_1b36, 0x06_00_00).done()),
        (
            (2, 0),
            endpoint(0x0010_1b36, CLASS_NVME)
                .bar(0, 0x4000, true, false)
                .done(),
        ),
        (
            (3, 0),
            multi(endpoint(0x0002_8086, 0x02_00_00).multifunction()),
        ),
        ((3, 1), multi(endpoint(0x0002_8086, 0x02_00_00))),
        ((3, 3), multi(endpoint(0x0002_8086, 0x02_00_00))),
        ((0x10, 0), root_port(bus(vec![((0, 0), virtio_net())]))),
        ((0x11, 0), root_port(FakeBus::default())),
        (
            (0x12, 0),
            root_port(bus(vec![(
                (0, 0),
                bridge(0x000d_1b36, switch_down, PrefetchableSupport::Bits64),
            )])),
        ),
        (
            (0x13, 0),
            bridge(
                0x000c_1b36,
                bus(vec![(
                    (0, 0),
                    endpoint(0x0003_1234, 0x01_80_00)
                        .bar(0, 0x1_0000, true, true)
                        .done(),
                )]),
                PrefetchableSupport::None,
            ),
        ),
    ]);
    Tree { root, accesses: 0 }
}

fn host(buses: u8) -> PcieHost {
    PcieHost {
        ecam: Region::new(0x40_1000_0000, 0x1000_0000),
        bus_start: 0,
        bus_end: buses,
        mem32: Some(PciWindow {
            pci: 0x1000_0000,
            cpu: 0x1000_0000,
            size: 0x2eff_0000,
        }),
        mem64: Some(PciWindow {
            pci: 0x80_0000_0000,
            cpu: 0x80_0000_0000,
            size: 0x80_0000_0000,
        }),
        iommu_map: None,
        msi_map: None,
    }
}

fn b(bus: u8, device: u8, function: u8) -> Bdf {
    Bdf::new(bus, device, function)
}

#[test]
fn numbers_buses_depth_first_like_firmware() {
    let mut tree = node();
    let topology = enumerate(&mut tree, 0..=255);
    let order: Vec<Bdf> = topology.functions.iter().map(|f| f.bdf()).collect();
    assert_eq!(
        order,
        [
            b(0, 0, 0),
            b(0, 2, 0),
            b(0, 3, 0),
            b(0, 3, 1),
            b(0, 3, 3),
            b(0, 0x10, 0),
            b(1, 0, 0),
            b(0, 0x11, 0),
            b(0, 0x12, 0),
            b(3, 0, 0),
            b(4, 0, 0),
            b(5, 0, 0),
            b(4, 1, 0),
            b(6, 0, 0),
            b(0, 0x13, 0),
            b(7, 0, 0),
        ]
    );
    assert!(topology.problems.is_empty());
    let buses = |bdf| topology.get(bdf).unwrap().buses;
    let range = |secondary, subordinate| {
        Some(BusRange {
            secondary,
            subordinate,
        })
    };
    assert_eq!(buses(b(0, 0x10, 0)), range(1, 1));
    assert_eq!(
        buses(b(0, 0x11, 0)),
        range(2, 2),
        "an empty root port keeps its bus"
    );
    assert_eq!(buses(b(0, 0x12, 0)), range(3, 6));
    assert_eq!(buses(b(3, 0, 0)), range(4, 6));
    assert_eq!(buses(b(4, 0, 0)), range(5, 5));
    assert_eq!(buses(b(4, 1, 0)), range(6, 6));
    assert_eq!(buses(b(0, 0x13, 0)), range(7, 7));
    // What the hardware holds: primary, secondary, subordinate.
    assert_eq!(tree.read(b(0, 0x12, 0), 0x18) & 0xff_ffff, 0x06_03_00);
    assert_eq!(tree.read(b(3, 0, 0), 0x18) & 0xff_ffff, 0x06_04_03);
    let net = topology.get(b(6, 0, 0)).unwrap();
    assert_eq!(net.upstream, [b(0, 0x12, 0), b(3, 0, 0), b(4, 1, 0)]);
    assert_eq!(net.parent(), Some(b(4, 1, 0)));
    assert_eq!(net.header, HeaderType::Endpoint);
    assert_eq!(
        (net.function.vendor, net.function.device, net.function.class),
        (0x1af4, 0x1041, 0x02_00_00)
    );
    assert_eq!(topology.get(b(0, 2, 0)).unwrap().upstream, []);
    assert_eq!(topology.behind(b(0, 0x12, 0)).count(), 5);
    assert_eq!(topology.bridges().count(), 7);
    assert_eq!(topology.endpoints().count(), 9);
}

#[test]
fn enumeration_is_the_same_twice() {
    // A second walk (e.g. after stale numbers were left by an earlier boot) gives the same
    // numbers: every bridge of a bus is closed before any is opened.
    let mut tree = node();
    let first = enumerate(&mut tree, 0..=255);
    // Stale, overlapping numbers: every root port claims bus 1 up to 6.
    for device in 0x10..0x14 {
        tree.write(b(0, device, 0), 0x18, 0x06_01_00);
    }
    assert_eq!(enumerate(&mut tree, 0..=255), first);
}

#[test]
fn bus_range_exhaustion_leaves_the_rest_out() {
    let mut tree = node();
    let topology = enumerate(&mut tree, 0..=3);
    assert_eq!(
        topology.problems,
        [
            TopologyProblem::BusesExhausted(b(3, 0, 0)),
            TopologyProblem::BusesExhausted(b(0, 0x13, 0)),
        ]
    );
    assert_eq!(
        topology.get(b(0, 0x12, 0)).unwrap().buses,
        Some(BusRange {
            secondary: 3,
            subordinate: 3
        })
    );
    assert_eq!(topology.get(b(3, 0, 0)).unwrap().buses, None);
    assert!(topology.get(b(4, 0, 0)).is_none());
    assert!(topology.get(b(7, 0, 0)).is_none());
    assert_eq!(
        tree.read(b(0, 0x13, 0), 0x18) & 0xff_ff00,
        0,
        "no bus forwarded"
    );
    // A range of one bus: only the root bus.
    let topology = enumerate(&mut node(), 5..=5);
    assert!(
        topology.functions.is_empty(),
        "nothing at bus 5 of this tree"
    );
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 3..=2;
    assert!(enumerate(&mut node(), backwards).functions.is_empty());
}

#[test]
fn a_bridge_that_claims_secondary_bus_0_is_left_out() {
    let mut tree = node();
    // 00:10.0 keeps "secondary 0" whatever is written.
    let port = tree.root.functions.get_mut(&(0x10, 0)).unwrap();
    port.stuck_bus_numbers = true;
    port.regs.insert(0x18, 0x0000_0000);
    let topology = enumerate(&mut tree, 0..=255);
    assert_eq!(
        topology.problems,
        [TopologyProblem::BusNumbersRefused(b(0, 0x10, 0))]
    );
    assert!(topology.get(b(1, 0, 0)).is_none());
    // The bus number was not used up: the next root port gets bus 1.
    assert_eq!(
        topology.get(b(0, 0x11, 0)).unwrap().buses,
        Some(BusRange {
            secondary: 1,
            subordinate: 1
        })
    );
    // The root bus is never listed twice.
    assert_eq!(
        topology
            .functions
            .iter()
            .filter(|f| f.bdf() == b(0, 2, 0))
            .count(),
        1
    );
}

/// Every bus looks the same: a bridge at 00.0 (multi-function) and an endpoint at 00.1, so
/// following the bridges never ends by itself.
#[derive(Default)]
struct EveryBusTheSame {
    numbers: BTreeMap<Bdf, u32>,
    reads: usize,
}

impl ConfigSpace for EveryBusTheSame {
    fn read(&mut self, bdf: Bdf, offset: u16) -> u32 {
        self.reads += 1;
        match (bdf.device, bdf.function, offset) {
            (0, 0, 0x00) => 0x000c_1b36,
            (0, 0, 0x08) => 0x0604_0000,
            (0, 0, 0x0c) => 0x0081_0000,
            (0, 0, 0x18) => self.numbers.get(&bdf).copied().unwrap_or(0),
            (0, 1, 0x00) => 0x1041_1af4,
            (0, 1, 0x08) => 0x0200_0000,
            (0, 1, 0x0c) => 0,
            (_, _, 0) => u32::MAX,
            _ => 0,
        }
    }

    fn write(&mut self, bdf: Bdf, offset: u16, value: u32) {
        if offset == 0x18 {
            self.numbers.insert(bdf, value);
        }
    }
}

#[test]
fn a_looping_hierarchy_ends_at_the_last_bus() {
    let mut config = EveryBusTheSame::default();
    let topology = enumerate(&mut config, 0..=255);
    assert_eq!(
        topology.functions.len(),
        512,
        "two functions on each of 256 buses"
    );
    assert_eq!(
        topology.problems,
        [TopologyProblem::BusesExhausted(b(255, 0, 0))]
    );
    let deepest = topology.functions.iter().map(|f| f.upstream.len()).max();
    assert_eq!(deepest, Some(255));
    assert!(config.reads < 256 * 300, "{} reads", config.reads);
    // Placing the BARs of such a tree (none) terminates too.
    let placement = place_hierarchy(&mut config, &topology, &mut BarWindows::new(&host(255)));
    assert_eq!(placement.bridges.len(), 255);
}

/// The memory window and prefetchable window a bridge holds in its registers.
/// First and last address of a window.
type Span = Option<(u64, u64)>;

fn windows_of(tree: &mut Tree, bdf: Bdf) -> (Span, Span) {
    let decode = |value: u32, upper_base: u32, upper_limit: u32| {
        let base = u64::from(value & 0xfff0) << 16 | u64::from(upper_base) << 32;
        let limit = u64::from(value >> 16 & 0xfff0) << 16 | 0xf_ffff | u64::from(upper_limit) << 32;
        (base <= limit).then_some((base, limit))
    };
    let memory = decode(tree.read(bdf, 0x20), 0, 0);
    let prefetchable = decode(
        tree.read(bdf, 0x24),
        tree.read(bdf, 0x28),
        tree.read(bdf, 0x2c),
    );
    (memory, prefetchable)
}

/// The bus address a BAR holds.
fn bar_address(tree: &mut Tree, bdf: Bdf, bar: &MemoryBar) -> u64 {
    let offset = 0x10 + 4 * u16::from(bar.index);
    let low = u64::from(tree.read(bdf, offset) & !0xf);
    if bar.is_64bit {
        low | u64::from(tree.read(bdf, offset + 4)) << 32
    } else {
        low
    }
}

#[test]
fn every_bar_sits_in_its_bridges_windows() {
    let mut tree = node();
    let topology = enumerate(&mut tree, 0..=255);
    let mut windows = BarWindows::new(&host(255));
    let placement = place_hierarchy(&mut tree, &topology, &mut windows);
    assert_eq!(placement.problems, []);
    let mut taken: Vec<(u64, u64, Bdf)> = Vec::new();
    for function in &topology.functions {
        let bdf = function.bdf();
        let bars = placement.bars(bdf).unwrap();
        let command = tree.read(bdf, header::COMMAND) & 0xffff;
        if function.is_bridge() {
            assert_eq!(
                command & 0b111,
                header::MEMORY_SPACE | header::BUS_MASTER,
                "{bdf}"
            );
        } else {
            assert_eq!(command & 0b111, 0, "{bdf}: endpoints decode nothing yet");
        }
        for placed in bars {
            let address = bar_address(&mut tree, bdf, &placed.bar);
            assert_eq!(address, placed.pci);
            assert_eq!(
                placed.cpu,
                Region::new(address, placed.bar.size),
                "identity windows"
            );
            assert_eq!(address % placed.bar.size, 0, "naturally aligned");
            let end = address + placed.bar.size - 1;
            for &(start, stop, other) in &taken {
                assert!(end < start || address > stop, "{bdf} overlaps {other}");
            }
            taken.push((address, end, bdf));
            if !placed.bar.is_64bit {
                assert!(end < 1 << 32);
            }
            // Inside every bridge above it, in the window of its kind.
            for &up in &function.upstream {
                let (memory, prefetchable) = windows_of(&mut tree, up);
                let support = placement.bridge(up).unwrap().support;
                let window = if placed.bar.prefetchable
                    && placed.bar.is_64bit
                    && support == PrefetchableSupport::Bits64
                    && prefetchable.is_some_and(|(s, e)| address >= s && end <= e)
                {
                    prefetchable
                } else {
                    memory
                };
                let (start, stop) =
                    window.unwrap_or_else(|| panic!("{up} has no window for {bdf}"));
                assert!(
                    address >= start && end <= stop,
                    "{bdf} BAR{} outside {up}",
                    placed.bar.index
                );
            }
        }
    }
    // The expected counts: NVMe 1, multi-function 3, nets 2 + 2, 05:00.0 2, 07:00.0 1.
    assert_eq!(taken.len(), 11);
    // Windows: 1 MiB granules, the empty port closed, prefetchable BARs in prefetchable
    // windows above 4 GiB where the bridges have them.
    let (memory, prefetchable) = windows_of(&mut tree, b(0, 0x10, 0));
    let (m, p) = (memory.unwrap(), prefetchable.unwrap());
    assert_eq!((m.1 - m.0 + 1, p.1 - p.0 + 1), (1 << 20, 1 << 20));
    assert!(m.1 < 1 << 32 && p.0 >= 1 << 32);
    assert_eq!(m.0 % (1 << 20), 0);
    let net4 = placement
        .bars(b(1, 0, 0))
        .unwrap()
        .iter()
        .find(|p| p.bar.index == 4)
        .unwrap();
    assert!(net4.pci >= p.0 && net4.pci < p.1);
    assert_eq!(windows_of(&mut tree, b(0, 0x11, 0)), (None, None));
    let later = windows_of(&mut tree, b(0, 0x12, 0)).0.unwrap();
    assert!(m.0 < later.0, "root ports' windows in device order");
    assert_eq!(placement.bridge(b(0, 0x11, 0)).unwrap().memory, None);
    let (m, p) = windows_of(&mut tree, b(0, 0x12, 0));
    assert_eq!(
        m.map(|(s, e)| e - s + 1),
        Some(2 << 20),
        "a 1 MiB window per switch port"
    );
    assert_eq!(
        p.map(|(s, e)| e - s + 1),
        Some(3 << 20),
        "2 MiB and 1 MiB windows of the ports"
    );
    // The port without a prefetchable window holds its device's 64-bit prefetchable BAR
    // in its memory window, below 4 GiB.
    let (m, _) = windows_of(&mut tree, b(0, 0x13, 0));
    let port = placement.bridge(b(0, 0x13, 0)).unwrap();
    assert_eq!(
        (port.support, port.prefetchable),
        (PrefetchableSupport::None, None)
    );
    assert!(m.unwrap().1 < 1 << 32);
    // The NVMe controller keeps its addresses when the kernel configures it for itself.
    let nvme = placement.bars(b(0, 2, 0)).unwrap().to_vec();
    let configured = configure_function(&mut tree, &mut windows, b(0, 2, 0)).unwrap();
    assert_eq!(configured, nvme);
    assert_eq!(
        tree.read(b(0, 2, 0), header::COMMAND) & 0b110,
        header::MEMORY_SPACE | header::BUS_MASTER
    );
    assert_eq!(windows.placed(b(1, 0, 0)), placement.bars(b(1, 0, 0)));
    // A function placed afterwards gets room nobody has.
    let mut late = Tree::default();
    late.root.functions.insert(
        (9, 0),
        endpoint(0x1_1234, 0).bar(0, 0x1000, false, false).done(),
    );
    let bars = place_bars(&mut late, &mut windows, b(0, 9, 0)).unwrap();
    for &(start, stop, other) in &taken {
        assert!(
            bars[0].pci > stop || bars[0].pci + 0xfff < start,
            "overlaps {other}"
        );
    }
}

#[test]
fn windows_that_do_not_fit_leave_their_subtree_unplaced() {
    let mut tree = node();
    let topology = enumerate(&mut tree, 0..=255);
    let mut small = host(255);
    // Room for the root bus's own BARs and two 1 MiB windows only; no 64-bit window.
    small.mem32 = Some(PciWindow {
        pci: 0x1000_0000,
        cpu: 0x1000_0000,
        size: 3 << 20,
    });
    small.mem64 = None;
    let placement = place_hierarchy(&mut tree, &topology, &mut BarWindows::new(&small));
    assert!(
        placement
            .problems
            .contains(&PlacementProblem::NoRoomForBridge(b(0, 0x12, 0))),
        "{:?}",
        placement.problems
    );
    assert_eq!(placement.bars(b(5, 0, 0)), Some(&[][..]));
    assert_eq!(windows_of(&mut tree, b(0, 0x12, 0)), (None, None));
    assert_eq!(placement.bars(b(0, 2, 0)).unwrap().len(), 1);
}

#[test]
fn a_bar_that_is_not_a_power_of_two_is_not_placed() {
    let mut tree = node();
    let net = tree
        .root
        .functions
        .get_mut(&(0x10, 0))
        .unwrap()
        .child
        .as_mut()
        .unwrap();
    let f = net.functions.get_mut(&(0, 0)).unwrap();
    f.bars.insert(0x14, (0xffff_e7f0, 0));
    let topology = enumerate(&mut tree, 0..=255);
    let placement = place_hierarchy(&mut tree, &topology, &mut BarWindows::new(&host(255)));
    assert!(matches!(
        placement.problems[..],
        [PlacementProblem::MalformedBar(bdf, _)] if bdf == b(1, 0, 0)
    ));
    assert_eq!(
        placement.bars(b(1, 0, 0)).unwrap().len(),
        1,
        "BAR4 still placed"
    );
}

/// A clock that moves 1 ms per pause.
struct TestClock(Cell<u64>);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
    fn pause(&self) {
        self.0.set(self.0.get() + 1);
    }
}

/// The node, enumerated and placed, with the net function at 01:00.0 switched on.
fn placed_node() -> Tree {
    let mut tree = node();
    let topology = enumerate(&mut tree, 0..=255);
    place_hierarchy(&mut tree, &topology, &mut BarWindows::new(&host(255)));
    let net = b(1, 0, 0);
    tree.write(
        net,
        header::COMMAND,
        header::MEMORY_SPACE | header::BUS_MASTER,
    );
    tree
}

#[test]
fn flr_resets_and_save_restore_puts_the_bars_back() {
    let mut tree = placed_node();
    let net = b(1, 0, 0);
    let saved = SavedFunction::save(&mut tree, net);
    let clock = TestClock(Cell::new(0));
    assert_eq!(
        reset::flr(&mut tree, &clock, net),
        Ok(ResetOutcome::Flr {
            pending_cleared: true
        })
    );
    assert!(clock.now_ms() >= reset::FLR_COMPLETION_MS);
    assert_eq!(locate(&mut tree.root, 0, net).unwrap().flrs, 1);
    assert_eq!(tree.read(net, 0x14), 0, "FLR cleared BAR1");
    saved.restore(&mut tree, 0);
    assert_eq!(tree.read(net, 0x14), saved.bars[1]);
    assert_eq!(tree.read(net, 0x20), saved.bars[4]);
    assert_eq!(tree.read(net, 0x24), saved.bars[5]);
    assert_eq!(
        tree.read(net, header::COMMAND) & 0b110,
        0,
        "decoding left off"
    );
    saved.restore(&mut tree, header::MEMORY_SPACE | header::BUS_MASTER);
    assert_eq!(
        tree.read(net, header::COMMAND) & 0b110,
        header::MEMORY_SPACE | header::BUS_MASTER
    );
    // The function came with Enable No Snoop set (Device Control 0x2810); what is put back
    // has it off, the rest as it was.
    assert_eq!(tree.read(net, PCIE_CAP + 8) & 0xffff, 0x2010);
}

#[test]
fn flr_waits_for_a_slow_function_and_gives_up_in_time() {
    let mut tree = placed_node();
    let net = b(1, 0, 0);
    locate(&mut tree.root, 0, net)
        .unwrap()
        .absent_reads_after_flr = 50;
    let clock = TestClock(Cell::new(0));
    assert!(matches!(
        reset::flr(&mut tree, &clock, net),
        Ok(ResetOutcome::Flr { .. })
    ));
    locate(&mut tree.root, 0, net)
        .unwrap()
        .absent_reads_after_flr = u32::MAX;
    let clock = TestClock(Cell::new(0));
    assert_eq!(
        reset::flr(&mut tree, &clock, net),
        Err(ResetError::NotBackAfterFlr(net))
    );
    let waited = clock.now_ms();
    assert!(
        (reset::FLR_COMPLETION_MS + reset::READY_TIMEOUT_MS
            ..=reset::FLR_COMPLETION_MS + reset::READY_TIMEOUT_MS + 2)
            .contains(&waited),
        "{waited} ms"
    );
}

#[test]
fn flr_goes_ahead_when_transactions_stay_pending() {
    let mut tree = placed_node();
    let net = b(1, 0, 0);
    locate(&mut tree.root, 0, net).unwrap().always_pending = true;
    let clock = TestClock(Cell::new(0));
    assert_eq!(
        reset::flr(&mut tree, &clock, net),
        Ok(ResetOutcome::Flr {
            pending_cleared: false
        })
    );
    assert!(clock.now_ms() >= reset::PENDING_TIMEOUT_MS + reset::FLR_COMPLETION_MS);
    assert_eq!(locate(&mut tree.root, 0, net).unwrap().flrs, 1);
}

#[test]
fn without_flr_only_bus_master_and_decoding_go_off() {
    let mut tree = placed_node();
    let clock = TestClock(Cell::new(0));
    // The NVMe controller on the root bus has no PCIe capability.
    let nvme = b(0, 2, 0);
    tree.write(nvme, header::COMMAND, 0b111 | header::INTX_DISABLE);
    assert_eq!(reset::flr(&mut tree, &clock, nvme), Ok(ResetOutcome::NoFlr));
    assert_eq!(
        tree.read(nvme, header::COMMAND) & 0xffff,
        header::INTX_DISABLE
    );
    assert_ne!(tree.read(nvme, 0x10) & !0xf, 0, "BARs kept");
    // A PCIe function without FLR in Device Capabilities.
    let net = b(1, 0, 0);
    let f = locate(&mut tree.root, 0, net).unwrap();
    f.regs.insert(PCIE_CAP + 4, 0);
    assert_eq!(reset::flr(&mut tree, &clock, net), Ok(ResetOutcome::NoFlr));
    assert_eq!(locate(&mut tree.root, 0, net).unwrap().flrs, 0);
    assert_eq!(clock.now_ms(), 0, "no waiting");
    assert_eq!(
        reset::flr(&mut tree, &clock, b(2, 0, 0)),
        Err(ResetError::Absent(b(2, 0, 0)))
    );
}

#[test]
fn results_say_what_happened() {
    let net = b(1, 0, 0);
    let shown = [
        (
            alloc::format!(
                "{}",
                ResetOutcome::Flr {
                    pending_cleared: true
                }
            ),
            "reset by FLR",
        ),
        (
            alloc::format!("{}", ResetOutcome::NoFlr),
            "no FLR: bus master and decoding off only",
        ),
        (
            alloc::format!("{}", ResetError::NotBackAfterFlr(net)),
            "0000:01:00.0: not back 1100 ms after FLR (Vendor ID invalid)",
        ),
        (
            alloc::format!("{}", TopologyProblem::BusesExhausted(net)),
            "bridge 0000:01:00.0: no bus number left, nothing behind it is used",
        ),
    ];
    for (text, expected) in shown {
        assert_eq!(text, expected);
    }
}

#[test]
fn bars_too_large_for_any_window_are_refused_without_overflow() {
    let mut tree = node();
    // Two 2^63-byte prefetchable BARs behind 00:10.0: their sum overflows 64 bits.
    let port = tree.root.functions.get_mut(&(0x10, 0)).unwrap();
    port.child.as_mut().unwrap().functions.insert(
        (0, 0),
        endpoint(0x1041_1af4, 0x02_00_00)
            .bar(0, 1 << 63, true, true)
            .bar(2, 1 << 63, true, true)
            .done(),
    );
    // And one on the root bus.
    tree.root.functions.insert(
        (5, 0),
        endpoint(0x0001_1234, 0).bar(0, 1 << 62, true, false).done(),
    );
    let topology = enumerate(&mut tree, 0..=255);
    let placement = place_hierarchy(&mut tree, &topology, &mut BarWindows::new(&host(255)));
    assert!(
        placement
            .problems
            .contains(&PlacementProblem::NoRoomForBridge(b(0, 0x10, 0)))
    );
    assert!(matches!(
        placement.problems.iter().find(|p| matches!(p, PlacementProblem::NoRoomForBar(..))),
        Some(PlacementProblem::NoRoomForBar(bdf, _)) if *bdf == b(0, 5, 0)
    ));
    assert_eq!(placement.bars(b(1, 0, 0)), Some(&[][..]));
    // Everything else still placed.
    assert_eq!(placement.bars(b(6, 0, 0)).unwrap().len(), 2);
}

#[test]
fn placing_a_functions_bars_turns_no_snoop_off() {
    let mut tree = node();
    let topology = enumerate(&mut tree, 0..=255);
    let mut windows = BarWindows::new(&host(255));
    place_hierarchy(&mut tree, &topology, &mut windows);
    let net = b(1, 0, 0);
    assert_eq!(tree.read(net, PCIE_CAP + 8) & 0xffff, 0x2810);
    crate::pci::configure_function(&mut tree, &mut windows, net).unwrap();
    assert_eq!(tree.read(net, PCIE_CAP + 8) & 0xffff, 0x2010);
}

// ---- isolation groups ------------------------------------------------------------------------

use super::isolation::{acs, isolation_groups, port_type};

/// The function at `path` (device/function keys from the root bus down).
fn at<'a>(tree: &'a mut Tree, path: &[(u8, u8)]) -> &'a mut FakeFunction {
    let mut bus = &mut tree.root;
    let (last, above) = path.split_last().unwrap();
    for key in above {
        bus = bus.functions.get_mut(key).unwrap().child.as_mut().unwrap();
    }
    bus.functions.get_mut(last).unwrap()
}

/// Makes the function at `path` a PCIe port of `kind` with ACS implementing `acs`.
fn make_port(tree: &mut Tree, path: &[(u8, u8)], kind: u8, acs: Option<u16>) {
    let f = at(tree, path);
    *f = core::mem::take(f).port(kind, acs);
}

/// [`node`] with PCIe ports: root ports 00:10.0, 00:12.0, 00:13.0 and the switch's
/// downstream ports with the isolating ACS controls, except the ports in `without`.
fn node_with_acs(without: &[&[(u8, u8)]]) -> Tree {
    let mut tree = node();
    let ports: [(&[(u8, u8)], u8); 6] = [
        (&[(0x10, 0)], port_type::ROOT_PORT),
        (&[(0x11, 0)], port_type::ROOT_PORT),
        (&[(0x12, 0)], port_type::ROOT_PORT),
        (&[(0x13, 0)], port_type::ROOT_PORT),
        (&[(0x12, 0), (0, 0), (0, 0)], port_type::DOWNSTREAM_PORT),
        (&[(0x12, 0), (0, 0), (1, 0)], port_type::DOWNSTREAM_PORT),
    ];
    for (path, kind) in ports {
        let acs = (!without.contains(&path)).then_some(acs::ISOLATING | 1 << 1);
        make_port(&mut tree, path, kind, acs);
    }
    make_port(
        &mut tree,
        &[(0x12, 0), (0, 0)],
        port_type::UPSTREAM_PORT,
        None,
    );
    tree
}

fn groups_of(mut tree: Tree) -> (Vec<Vec<Bdf>>, Tree) {
    let topology = enumerate(&mut tree, 0..=255);
    (isolation_groups(&mut tree, &topology), tree)
}

#[test]
fn without_acs_every_bridge_groups_what_is_below_it() {
    // node()'s bridges are conventional (no PCIe capability): a shared bus below each.
    let (groups, _) = groups_of(node());
    assert_eq!(
        groups,
        [
            vec![b(0, 3, 0), b(0, 3, 1), b(0, 3, 3)],
            vec![b(0, 0x10, 0), b(1, 0, 0)],
            vec![
                b(0, 0x12, 0),
                b(3, 0, 0),
                b(4, 0, 0),
                b(4, 1, 0),
                b(5, 0, 0),
                b(6, 0, 0)
            ],
            vec![b(0, 0x13, 0), b(7, 0, 0)],
        ]
    );
}

#[test]
fn ports_with_acs_isolate_what_is_below_them() {
    let (groups, mut tree) = groups_of(node_with_acs(&[]));
    // Only the multi-function endpoint's functions share a group.
    assert_eq!(groups, [vec![b(0, 3, 0), b(0, 3, 1), b(0, 3, 3)]]);
    // The controls were turned on, Translation Blocking (implemented too) with them.
    for port in [b(0, 0x10, 0), b(0, 0x12, 0), b(4, 0, 0), b(4, 1, 0)] {
        assert_eq!(
            tree.read(port, 0x104) >> 16,
            u32::from(acs::ISOLATING | acs::TRANSLATION_BLOCKING),
            "{port}"
        );
    }
}

#[test]
fn a_switch_port_without_acs_puts_the_whole_switch_in_one_group() {
    let (groups, _) = groups_of(node_with_acs(&[&[(0x12, 0), (0, 0), (0, 0)]]));
    // 05:00.0 can reach 06:00.0 through the switch, whose upstream port is 03:00.0.
    assert_eq!(
        groups,
        [
            vec![b(0, 3, 0), b(0, 3, 1), b(0, 3, 3)],
            vec![b(3, 0, 0), b(4, 0, 0), b(4, 1, 0), b(5, 0, 0), b(6, 0, 0)],
        ]
    );
}

#[test]
fn a_root_port_without_acs_puts_the_whole_node_in_one_group() {
    let (groups, tree) = groups_of(node_with_acs(&[&[(0x13, 0)]]));
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].len(), 16, "every function: {groups:?}");
    // A port that implements ACS but keeps a control off does not isolate either.
    let mut tree = tree;
    let f = at(&mut tree, &[(0x13, 0)]);
    *f = core::mem::take(f).port(
        port_type::ROOT_PORT,
        Some(acs::ISOLATING & !acs::UPSTREAM_FORWARDING),
    );
    let (groups, _) = groups_of(tree);
    assert_eq!(groups.len(), 1);
}

#[test]
fn a_looping_extended_capability_list_ends() {
    let mut tree = node();
    let f = at(&mut tree, &[(0x10, 0)]);
    f.regs.insert(0x100, 0x1001_0001);
    f.regs.insert(0x104, 0x1001_0002);
    assert_eq!(
        super::isolation::find_extended_capability(&mut tree, b(0, 0x10, 0), 0x000d),
        None
    );
}

#[test]
fn every_function_below_a_port_is_one_device_whatever_its_device_number() {
    // With ARI a device's functions 8 and up answer at device numbers 1 and up of the bus
    // below its port: a second function at 01:01.0 is still the NIC's (found in review).
    let mut tree = node_with_acs(&[]);
    let below = at(&mut tree, &[(0x10, 0)]).child.as_mut().unwrap();
    below.functions.insert((1, 0), virtio_net());
    let (groups, _) = groups_of(tree);
    assert_eq!(
        groups,
        [
            vec![b(0, 3, 0), b(0, 3, 1), b(0, 3, 3)],
            vec![b(1, 0, 0), b(1, 1, 0)],
        ]
    );
}

#[test]
fn direct_translated_peer_to_peer_left_on_is_turned_off() {
    let mut tree = node_with_acs(&[]);
    // The firmware left Direct Translated P2P on at 00:10.0.
    let port = at(&mut tree, &[(0x10, 0)]);
    let implemented = port.regs[&0x104] & 0xffff;
    port.regs
        .insert(0x104, u32::from(acs::DIRECT_TRANSLATED) << 16 | implemented);
    let (groups, mut tree) = groups_of(tree);
    assert_eq!(
        groups.len(),
        1,
        "only the multi-function device: {groups:?}"
    );
    let control = tree.read(b(0, 0x10, 0), 0x104) >> 16;
    assert_eq!(control & u32::from(acs::DIRECT_TRANSLATED), 0);
    assert_eq!(
        control & u32::from(acs::ISOLATING),
        u32::from(acs::ISOLATING)
    );
}
