//! The node's PCIe hierarchy: enumerated and placed once at boot (bus numbers, every BAR,
//! every bridge window; see `microvisor_logic::pci::{topology, windows}`), one `[hv] pci`
//! line per function, and function reset (FLR) on the real ECAM with the system counter as
//! its clock.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use microvisor_arch::cpu;
use microvisor_arch::pci::PciHost;
use microvisor_logic::inventory::PcieHost;
use microvisor_logic::pci::isolation::isolation_groups;
use microvisor_logic::pci::reset::Clock;
use microvisor_logic::pci::topology::{FoundFunction, HeaderType, Topology, enumerate};
use microvisor_logic::pci::windows::{HierarchyPlacement, place_hierarchy};
use microvisor_logic::pci::{BarWindows, Bdf, CLASS_NVME};
use microvisor_plan::size::HumanSize;

use crate::hv;

/// The hierarchy as the hypervisor set it up at boot.
pub struct Hierarchy {
    /// Every function, depth first, with the bridges above it.
    pub topology: Topology,
    /// Every function's BARs (bus and CPU addresses) and every bridge's windows.
    pub placement: HierarchyPlacement,
    /// The host bridge's windows with everything above placed: a later
    /// `microvisor_logic::pci::configure_function` of a placed function keeps its addresses.
    pub windows: BarWindows,
    /// Functions that may reach each other peer to peer (groups of more than one), with ACS
    /// turned on where the ports have it (`microvisor_logic::pci::isolation`).
    pub isolation_groups: Vec<Vec<Bdf>>,
}

impl Hierarchy {
    /// The highest bus number the enumeration gave out (the root bus when there are no
    /// bridges).
    pub fn highest_bus(&self) -> u8 {
        let root = self.topology.functions.iter().map(|f| f.function.bdf.bus);
        let below = self
            .topology
            .functions
            .iter()
            .filter_map(|f| f.buses)
            .map(|b| b.subordinate);
        root.chain(below).max().unwrap_or(0)
    }
}

/// Numbers the buses, places every BAR and bridge window (endpoints left with decoding and
/// bus mastering off, bridges forwarding) and prints one line per function and per problem.
pub fn discover(pci: &mut PciHost, host: &PcieHost) -> Hierarchy {
    let topology = match host.buses() {
        Some(buses) => enumerate(pci.config(), buses),
        None => Topology::default(),
    };
    let mut windows = BarWindows::new(host);
    let placement = place_hierarchy(pci.config(), &topology, &mut windows);
    for function in &topology.functions {
        hv!("pci {}", describe(function, &placement));
    }
    for problem in &topology.problems {
        hv!("pci: {problem}");
    }
    for problem in &placement.problems {
        hv!("pci: {problem}");
    }
    let isolation_groups = isolation_groups(pci.config(), &topology);
    for group in &isolation_groups {
        let members: Vec<String> = group.iter().map(|b| format!("{b}")).collect();
        hv!(
            "pci: isolation group (peer to peer without ACS) {}",
            members.join(" ")
        );
    }
    Hierarchy {
        topology,
        placement,
        windows,
        isolation_groups,
    }
}

/// A short name for common classes.
fn class_name(class: u32) -> Option<&'static str> {
    match class {
        CLASS_NVME => Some("nvme"),
        c if c >> 16 == 0x02 => Some("net"),
        c if c >> 8 == 0x06_04 => Some("bridge"),
        c if c >> 8 == 0x06_00 => Some("host bridge"),
        _ => None,
    }
}

/// `0000:01:00.0 1af4:1041 class 02 00 00 (net) behind 0000:00:10.0, BAR1 0x10100000 (4 KiB),
/// ...` for an endpoint; buses and windows for a bridge.
fn describe(found: &FoundFunction, placement: &HierarchyPlacement) -> String {
    let f = &found.function;
    let mut line = format!(
        "{} {:04x}:{:04x} class {:02x} {:02x} {:02x}",
        f.bdf,
        f.vendor,
        f.device,
        f.class >> 16,
        (f.class >> 8) & 0xff,
        f.class & 0xff
    );
    if let Some(name) = class_name(f.class) {
        line.push_str(&format!(" ({name})"));
    }
    if let Some(parent) = found.parent() {
        line.push_str(&format!(" behind {parent}"));
    }
    if let HeaderType::Other(kind) = found.header {
        line.push_str(&format!(", header type {kind}: not placed"));
        return line;
    }
    if found.header == HeaderType::Bridge {
        match found.buses {
            Some(b) => line.push_str(&format!(
                ", buses {:02x}-{:02x}",
                b.secondary, b.subordinate
            )),
            None => line.push_str(", no buses"),
        }
        if let Some(w) = placement.bridge(f.bdf) {
            if let Some(m) = w.memory {
                line.push_str(&format!(", window {:#x}-{:#x}", m.base, m.limit()));
            }
            if let Some(p) = w.prefetchable {
                line.push_str(&format!(", prefetchable {:#x}-{:#x}", p.base, p.limit()));
            }
        }
    }
    let bars = placement.bars(f.bdf).unwrap_or_default();
    if bars.is_empty() && found.header == HeaderType::Endpoint {
        line.push_str(", no BARs");
    }
    let shown: Vec<String> = bars
        .iter()
        .map(|b| {
            format!(
                "BAR{} {:#x} ({})",
                b.bar.index,
                b.cpu.base,
                HumanSize(b.bar.size)
            )
        })
        .collect();
    if !shown.is_empty() {
        line.push_str(", ");
        line.push_str(&shown.join(", "));
    }
    line
}

/// The system counter in milliseconds.
pub struct SystemCounter;

impl Clock for SystemCounter {
    fn now_ms(&self) -> u64 {
        let hz = u128::from(cpu::counter_frequency().max(1));
        (u128::from(cpu::counter()) * 1000 / hz) as u64
    }

    fn pause(&self) {
        cpu::spin_hint();
    }
}
