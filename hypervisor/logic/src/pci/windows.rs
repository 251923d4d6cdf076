//! BARs and bridge windows for the whole hierarchy (PCI-to-PCI Bridge Architecture 1.2
//! §3.2.5.8-9, PCIe Base 4.0 §7.5.1.3.8-9): every function's memory BARs are placed, and each
//! bridge gets a memory window and (when it has a 64-bit one) a prefetchable window carved
//! from the host bridge's windows that hold exactly the BARs below it, in 1 MiB granules.
//!
//! Which window a BAR goes in: behind a bridge with a 64-bit prefetchable window, 64-bit
//! prefetchable BARs go in the prefetchable window (placed in the host's 64-bit window when
//! there is one); every other BAR goes in the bridge's memory window, which is always below
//! 4 GiB. A bridge with a 32-bit prefetchable window or none gets it disabled and everything
//! in its memory window. On the root bus BARs are placed as [`super::place_bars`] does.

use alloc::vec::Vec;

use super::topology::{HeaderType, Topology, bridge};
use super::{BarWindows, Bdf, ConfigSpace, MemoryBar, PlacedBar, header, set_bar, size_bar};
use crate::inventory::Region;

/// A bridge's prefetchable window as the hardware implements it (PCI-to-PCI Bridge
/// Architecture 1.2 §3.2.5.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefetchableSupport {
    /// Base and limit read back as zero: no prefetchable window.
    None,
    /// A 32-bit window (not used: its BARs go in the memory window).
    Bits32,
    /// A 64-bit window with the upper base and limit registers.
    Bits64,
}

/// Finds out which prefetchable window `bdf` (a bridge) has, leaving it disabled.
pub fn prefetchable_support(config: &mut dyn ConfigSpace, bdf: Bdf) -> PrefetchableSupport {
    config.write(bdf, bridge::PREFETCHABLE_BASE_LIMIT, 0xfff0_fff0);
    let back = config.read(bdf, bridge::PREFETCHABLE_BASE_LIMIT);
    let support = if back & 0xfff0_fff0 == 0 {
        PrefetchableSupport::None
    } else if back & 0xf == 1 {
        PrefetchableSupport::Bits64
    } else {
        PrefetchableSupport::Bits32
    };
    disable_prefetchable(config, bdf, support);
    support
}

/// A range of PCI bus addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusWindow {
    pub base: u64,
    pub size: u64,
}

impl BusWindow {
    /// The last address inside (the base itself for an empty window).
    pub fn limit(&self) -> u64 {
        self.base.saturating_add(self.size.saturating_sub(1))
    }
}

/// The windows programmed into one bridge (bus addresses); None = disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeWindows {
    pub bdf: Bdf,
    pub memory: Option<BusWindow>,
    pub prefetchable: Option<BusWindow>,
    pub support: PrefetchableSupport,
}

/// One function's BARs as placed (an empty list: no memory BARs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedFunction {
    pub bdf: Bdf,
    pub bars: Vec<PlacedBar>,
}

/// What could not be placed: decoding stays off for those BARs (and the function's other
/// BARs are still placed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementProblem {
    /// The windows of this bridge did not fit in the host's windows: nothing behind it got
    /// addresses.
    NoRoomForBridge(Bdf),
    /// This BAR did not fit in the host's windows.
    NoRoomForBar(Bdf, MemoryBar),
    /// This BAR's size is not a power of two (a broken or hostile function): not placed.
    MalformedBar(Bdf, MemoryBar),
}

impl core::fmt::Display for PlacementProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoRoomForBridge(b) => {
                write!(f, "bridge {b}: its windows do not fit the host bridge's")
            }
            Self::NoRoomForBar(b, bar) => write!(
                f,
                "{b}: BAR{} ({:#x} bytes) does not fit the host bridge's windows",
                bar.index, bar.size
            ),
            Self::MalformedBar(b, bar) => write!(
                f,
                "{b}: BAR{} size {:#x} is not a power of two",
                bar.index, bar.size
            ),
        }
    }
}

/// Every function's BARs and every bridge's windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HierarchyPlacement {
    /// In topology order; bridges too (their own BARs, usually none).
    pub functions: Vec<PlacedFunction>,
    /// In topology order, bridges with bus numbers only.
    pub bridges: Vec<BridgeWindows>,
    pub problems: Vec<PlacementProblem>,
}

impl HierarchyPlacement {
    /// The BARs of `bdf`.
    pub fn bars(&self, bdf: Bdf) -> Option<&[PlacedBar]> {
        self.functions
            .iter()
            .find(|f| f.bdf == bdf)
            .map(|f| f.bars.as_slice())
    }

    /// The windows of bridge `bdf`.
    pub fn bridge(&self, bdf: Bdf) -> Option<&BridgeWindows> {
        self.bridges.iter().find(|b| b.bdf == bdf)
    }
}

/// Which window of a bridge an item goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memory,
    Prefetchable,
}

/// What is placed: a BAR of function `function` (topology index) or window `kind` of bridge
/// `bridge`.
#[derive(Clone, Copy, Debug)]
enum What {
    Bar { function: usize, bar: MemoryBar },
    Window { bridge: usize, kind: Kind },
}

#[derive(Clone, Copy, Debug)]
struct Item {
    what: What,
    size: u64,
    align: u64,
    /// May live above 4 GiB (goes in a 64-bit prefetchable window when the parent has one).
    high: bool,
    /// Offset inside the parent's window once laid out.
    offset: u64,
}

/// The contents of one window of one bridge.
#[derive(Clone, Debug, Default)]
struct Pool {
    items: Vec<Item>,
    size: u64,
    align: u64,
    /// Bus address once the parent's window is placed.
    base: Option<u64>,
}

impl Pool {
    /// Lays items out largest alignment first (each then starts aligned without a gap), the
    /// total rounded up to the window granule. False on overflow.
    fn lay_out(&mut self) -> bool {
        microvisor_plan::sort::sort_by_key(&mut self.items, |i| core::cmp::Reverse(i.align));
        let mut end = 0u64;
        for item in &mut self.items {
            let Some(start) = end.checked_next_multiple_of(item.align) else {
                return false;
            };
            let Some(next) = start.checked_add(item.size) else {
                return false;
            };
            item.offset = start;
            end = next;
        }
        let granule = bridge::WINDOW_GRANULE;
        let Some(size) = end.checked_next_multiple_of(granule) else {
            return false;
        };
        self.size = size;
        self.align = self.items.first().map_or(granule, |i| i.align.max(granule));
        true
    }
}

/// Per bridge: its prefetchable support and its two pools.
struct BridgeState {
    support: PrefetchableSupport,
    memory: Pool,
    prefetchable: Pool,
}

impl BridgeState {
    fn pool(&mut self, kind: Kind) -> &mut Pool {
        match kind {
            Kind::Memory => &mut self.memory,
            Kind::Prefetchable => &mut self.prefetchable,
        }
    }
}

/// Memory BARs a header type has (type 0: six, type 1: two).
fn bar_slots(header: HeaderType) -> u8 {
    match header {
        HeaderType::Endpoint => 6,
        HeaderType::Bridge => 2,
        HeaderType::Other(_) => 0,
    }
}

/// Sizes every memory BAR of `bdf`, with memory decoding and bus mastering off (left off).
fn size_bars(config: &mut dyn ConfigSpace, bdf: Bdf, slots: u8) -> Vec<MemoryBar> {
    let command = config.read(bdf, header::COMMAND) & 0xffff;
    config.write(
        bdf,
        header::COMMAND,
        command & !(header::MEMORY_SPACE | header::BUS_MASTER),
    );
    let mut bars = Vec::new();
    let mut index = 0;
    while index < slots {
        match size_bar(config, bdf, index) {
            Some(bar) => {
                index += if bar.is_64bit { 2 } else { 1 };
                bars.push(bar);
            }
            None => index += 1,
        }
    }
    bars
}

/// Places every BAR of every function in `topology` and gives each bridge its windows,
/// carved from `windows` (which keeps them: a later [`super::configure_function`] of one of
/// these functions reuses its addresses). Afterwards: endpoints have memory decoding and bus
/// mastering off; bridges with bus numbers have their windows, memory decoding and bus
/// mastering on (so their devices' DMA and MSI writes can go upstream) and I/O off; bridges
/// without bus numbers are left off.
pub fn place_hierarchy(
    config: &mut dyn ConfigSpace,
    topology: &Topology,
    windows: &mut BarWindows,
) -> HierarchyPlacement {
    let functions = &topology.functions;
    let mut placement = HierarchyPlacement::default();
    // Bridges by topology index (None for other functions).
    let mut bridges: Vec<Option<BridgeState>> = functions
        .iter()
        .map(|f| {
            f.buses.filter(|_| f.is_bridge()).map(|_| {
                // Closed first: probing the prefetchable window briefly opens one.
                close_bridge(config, f.bdf());
                BridgeState {
                    support: prefetchable_support(config, f.bdf()),
                    memory: Pool::default(),
                    prefetchable: Pool::default(),
                }
            })
        })
        .collect();
    let parent_of = |index: usize| -> Option<usize> {
        let parent = functions[index].parent()?;
        functions.iter().position(|f| f.bdf() == parent)
    };
    let mut root: Vec<Item> = Vec::new();
    // Which pool an item of `parent` goes in.
    let kind_in = |parent: &BridgeState, high: bool| {
        if high && parent.support == PrefetchableSupport::Bits64 {
            Kind::Prefetchable
        } else {
            Kind::Memory
        }
    };

    // BARs, into their parent's pools.
    for (index, function) in functions.iter().enumerate() {
        if function.is_bridge() {
            close_bridge(config, function.bdf());
        }
        let bars = size_bars(config, function.bdf(), bar_slots(function.header));
        placement.functions.push(PlacedFunction {
            bdf: function.bdf(),
            bars: Vec::new(),
        });
        for bar in bars {
            if !bar.size.is_power_of_two() {
                placement
                    .problems
                    .push(PlacementProblem::MalformedBar(function.bdf(), bar));
                continue;
            }
            let item = Item {
                what: What::Bar {
                    function: index,
                    bar,
                },
                size: bar.size,
                align: bar.size,
                high: bar.is_64bit && bar.prefetchable,
                offset: 0,
            };
            match parent_of(index).and_then(|p| bridges[p].as_mut()) {
                Some(parent) => {
                    let kind = kind_in(parent, item.high);
                    parent.pool(kind).items.push(item);
                }
                None if function.parent().is_none() => root.push(item),
                // Behind a bridge without bus numbers: unreachable, never placed.
                None => {}
            }
        }
    }

    // Windows, innermost bridges first, into their parent's pools.
    for index in (0..functions.len()).rev() {
        let Some(mut state) = bridges[index].take() else {
            continue;
        };
        for kind in [Kind::Memory, Kind::Prefetchable] {
            let pool = state.pool(kind);
            if pool.items.is_empty() {
                continue;
            }
            if !pool.lay_out() {
                pool.items.clear();
                placement
                    .problems
                    .push(PlacementProblem::NoRoomForBridge(functions[index].bdf()));
                continue;
            }
            let item = Item {
                what: What::Window {
                    bridge: index,
                    kind,
                },
                size: pool.size,
                align: pool.align,
                high: kind == Kind::Prefetchable,
                offset: 0,
            };
            match parent_of(index).and_then(|p| bridges[p].as_mut()) {
                Some(parent) => {
                    let kind = kind_in(parent, item.high);
                    parent.pool(kind).items.push(item);
                }
                None if functions[index].parent().is_none() => root.push(item),
                None => {}
            }
        }
        bridges[index] = Some(state);
    }

    // Root bus items, in topology order, from the host's windows.
    microvisor_plan::sort::sort_by_key(&mut root, |item| match item.what {
        What::Bar { function, .. } => function,
        What::Window { bridge, .. } => bridge,
    });
    let mut addresses: Vec<(usize, MemoryBar, u64)> = Vec::new();
    for item in &root {
        let address = match item.what {
            What::Bar { bar, .. } => windows.place(&bar).map(|(pci, _)| pci),
            What::Window { .. } => windows.place_window(item.size, item.align, item.high),
        };
        assign(
            item,
            address,
            &mut bridges,
            &mut addresses,
            &mut placement,
            functions,
        );
    }
    // Then every bridge's contents, outermost first.
    for index in 0..functions.len() {
        let Some(state) = bridges[index].as_ref() else {
            continue;
        };
        let mut inner = Vec::new();
        for pool in [&state.memory, &state.prefetchable] {
            for item in &pool.items {
                inner.push((*item, pool.base.and_then(|b| b.checked_add(item.offset))));
            }
        }
        for (item, address) in inner {
            assign(
                &item,
                address,
                &mut bridges,
                &mut addresses,
                &mut placement,
                functions,
            );
        }
    }

    // Program BARs.
    for (index, bar, address) in addresses {
        let bdf = functions[index].bdf();
        set_bar(config, bdf, &bar, address);
        let Some(cpu) = windows.cpu_address(address, bar.size) else {
            continue;
        };
        placement.functions[index].bars.push(PlacedBar {
            bar,
            pci: address,
            cpu: Region::new(cpu, bar.size),
        });
    }
    for placed in &mut placement.functions {
        microvisor_plan::sort::sort_by_key(&mut placed.bars, |b| b.bar.index);
    }
    // Program bridges.
    for (index, function) in functions.iter().enumerate() {
        let Some(state) = bridges[index].as_ref() else {
            continue;
        };
        let window = |pool: &Pool| {
            pool.base.filter(|_| pool.size > 0).map(|base| BusWindow {
                base,
                size: pool.size,
            })
        };
        let programmed = BridgeWindows {
            bdf: function.bdf(),
            memory: window(&state.memory),
            prefetchable: window(&state.prefetchable),
            support: state.support,
        };
        program_bridge(config, &programmed);
        placement.bridges.push(programmed);
    }
    for placed in &placement.functions {
        if !placed.bars.is_empty() {
            windows.placed.push((placed.bdf, placed.bars.clone()));
        }
    }
    placement
}

/// Records where `item` went: a BAR's address, or a window's base for its contents.
fn assign(
    item: &Item,
    address: Option<u64>,
    bridges: &mut [Option<BridgeState>],
    addresses: &mut Vec<(usize, MemoryBar, u64)>,
    placement: &mut HierarchyPlacement,
    functions: &[super::topology::FoundFunction],
) {
    match (item.what, address) {
        (What::Bar { function, bar }, Some(address)) => addresses.push((function, bar, address)),
        (What::Bar { function, bar }, None) => placement.problems.push(
            PlacementProblem::NoRoomForBar(functions[function].bdf(), bar),
        ),
        (What::Window { bridge, kind }, Some(address)) => {
            if let Some(state) = bridges[bridge].as_mut() {
                state.pool(kind).base = Some(address);
            }
        }
        (What::Window { bridge, .. }, None) => {
            let problem = PlacementProblem::NoRoomForBridge(functions[bridge].bdf());
            if !placement.problems.contains(&problem) {
                placement.problems.push(problem);
            }
        }
    }
}

/// Turns a bridge's decoding and bus mastering off and disables its windows.
fn close_bridge(config: &mut dyn ConfigSpace, bdf: Bdf) {
    let command = config.read(bdf, header::COMMAND) & 0xffff;
    config.write(
        bdf,
        header::COMMAND,
        command & !(header::MEMORY_SPACE | header::BUS_MASTER | header::IO_SPACE),
    );
    // I/O window: base 0xf0 above limit 0x00 (Secondary Status bits are cleared by writing
    // ones: write zeros); upper 16 bits zero.
    config.write(bdf, bridge::IO_BASE_LIMIT, 0x00f0);
    config.write(bdf, bridge::IO_UPPER, 0);
    config.write(bdf, bridge::MEMORY_BASE_LIMIT, 0x0000_fff0);
}

fn disable_prefetchable(config: &mut dyn ConfigSpace, bdf: Bdf, support: PrefetchableSupport) {
    config.write(bdf, bridge::PREFETCHABLE_BASE_LIMIT, 0x0000_fff0);
    if support == PrefetchableSupport::Bits64 {
        config.write(bdf, bridge::PREFETCHABLE_BASE_UPPER, u32::MAX);
        config.write(bdf, bridge::PREFETCHABLE_LIMIT_UPPER, 0);
    }
}

/// Base/limit register value of a memory or prefetchable window: address bits 31:20 of base
/// and limit in bits 15:4 of each half.
fn base_limit(window: &BusWindow) -> u32 {
    let base = (window.base >> 16) as u32 & 0xfff0;
    let limit = (window.limit() >> 16) as u32 & 0xfff0;
    limit << 16 | base
}

/// Writes a bridge's windows, then turns on its memory decoding and bus mastering.
fn program_bridge(config: &mut dyn ConfigSpace, windows: &BridgeWindows) {
    let bdf = windows.bdf;
    match &windows.memory {
        Some(w) => config.write(bdf, bridge::MEMORY_BASE_LIMIT, base_limit(w)),
        None => config.write(bdf, bridge::MEMORY_BASE_LIMIT, 0x0000_fff0),
    }
    match &windows.prefetchable {
        Some(w) if windows.support == PrefetchableSupport::Bits64 => {
            // Upper halves first with the window still empty, then base/limit.
            config.write(bdf, bridge::PREFETCHABLE_BASE_UPPER, (w.base >> 32) as u32);
            config.write(
                bdf,
                bridge::PREFETCHABLE_LIMIT_UPPER,
                (w.limit() >> 32) as u32,
            );
            config.write(bdf, bridge::PREFETCHABLE_BASE_LIMIT, base_limit(w));
        }
        _ => disable_prefetchable(config, bdf, windows.support),
    }
    let command = config.read(bdf, header::COMMAND) & 0xffff;
    config.write(
        bdf,
        header::COMMAND,
        command & !header::IO_SPACE | header::MEMORY_SPACE | header::BUS_MASTER,
    );
}

impl BarWindows {
    /// Room for a bridge window of `size` bytes aligned to `align`: in the 64-bit window
    /// first when `high`, else (and as a fallback) below 4 GiB. Its bus address.
    fn place_window(&mut self, size: u64, align: u64, high: bool) -> Option<u64> {
        let mut order: Vec<usize> = (0..self.windows.len()).collect();
        if high {
            order.reverse();
        }
        for i in order {
            let (window, _, _) = &mut self.windows[i];
            let mut trial = *window;
            let Some(address) = trial.allocate_aligned(size, align) else {
                continue;
            };
            let below_4g = address.checked_add(size).is_some_and(|end| end <= 1 << 32);
            if !high && !below_4g {
                continue;
            }
            *window = trial;
            return Some(address);
        }
        None
    }

    /// The CPU address of bus address range `[pci, pci + size)`, when one host window holds
    /// it whole.
    pub fn cpu_address(&self, pci: u64, size: u64) -> Option<u64> {
        self.windows
            .iter()
            .find_map(|(window, pci_base, cpu_base)| {
                let end = pci.checked_add(size)?;
                (pci >= *pci_base && end <= window.end).then(|| cpu_base + (pci - pci_base))
            })
    }

    /// Where [`place_hierarchy`] or [`super::place_bars`] put the BARs of `bdf`.
    pub fn placed(&self, bdf: Bdf) -> Option<&[PlacedBar]> {
        self.placed
            .iter()
            .find(|(b, _)| *b == bdf)
            .map(|(_, bars)| bars.as_slice())
    }
}
