//! Isolation groups: functions that may reach each other peer to peer, i.e. whose requests to
//! one another can be routed inside the PCIe fabric without reaching the root complex and
//! its SMMU (PCIe Base 4.0 §6.12, Access Control Services). Two functions of one group must
//! not have different owners: one slice's function could otherwise write another slice's
//! function (or the hypervisor's NVMe controller) directly, whatever the SMMU says.
//!
//! A request from a function is checked by the SMMU only once it reaches the root complex.
//! Where it can turn around before, toward another function, those two share a group. The
//! rules (more conservative than Linux's IOMMU groups):
//!
//! - A root port or switch downstream port *redirects* the requests it receives from below to
//!   the root complex when its Access Control Services capability has Source Validation, P2P
//!   Request Redirect, P2P Completion Redirect and Upstream Forwarding on:
//!   [`isolation_groups`] turns them on wherever they are implemented and reads them back.
//! - A switch downstream port that does not redirect lets what is below it reach everything
//!   below its switch (the upstream port's whole subtree): that subtree is one group.
//! - A root port that does not redirect lets the root complex route what is below it to any
//!   other function of the node: the whole node is one group.
//! - Any other bridge (PCIe-to-PCI, conventional) puts everything below it in its group (a
//!   shared bus); a switch upstream port is transparent (its downstream ports decide).
//! - The functions of one multi-function endpoint share a group: their own ACS controls are
//!   not relied on, as the function-level reset every run ends with clears them. Below a
//!   port (one link, so one device) that is every endpoint function on its bus, whatever its
//!   device number: with ARI a device's functions 8 and up answer at device numbers 1 and
//!   up (found in review); on the root bus, the functions of one device number.
//!
//! Root complex integrated endpoints on the root bus are taken to be isolated from each other
//! and from the root ports' functions (their requests enter the root complex directly).

use alloc::vec;
use alloc::vec::Vec;

use super::topology::Topology;
use super::{Bdf, ConfigSpace, capability, find_capability};

/// Access Control Services' extended capability ID (PCIe Base 4.0 §7.7.7).
pub const EXTENDED_CAPABILITY_ACS: u16 = 0x000d;
/// ACS Capability / Control bits: Source Validation, P2P Request Redirect, P2P Completion
/// Redirect, Upstream Forwarding (§7.7.7.2-3).
pub mod acs {
    pub const SOURCE_VALIDATION: u16 = 1 << 0;
    pub const REQUEST_REDIRECT: u16 = 1 << 2;
    pub const COMPLETION_REDIRECT: u16 = 1 << 3;
    pub const UPSTREAM_FORWARDING: u16 = 1 << 4;
    /// Translation Blocking: requests with translated addresses (ATS) are refused.
    pub const TRANSLATION_BLOCKING: u16 = 1 << 1;
    /// Direct Translated P2P: requests with translated addresses go peer to peer (must be
    /// off; a firmware may have left it on).
    pub const DIRECT_TRANSLATED: u16 = 1 << 6;
    /// What a port needs on to isolate the functions below it.
    pub const ISOLATING: u16 =
        SOURCE_VALIDATION | REQUEST_REDIRECT | COMPLETION_REDIRECT | UPSTREAM_FORWARDING;
}

/// PCI Express Capabilities register's Device/Port Type values (PCIe Base 4.0 §7.5.3.2).
pub mod port_type {
    pub const ROOT_PORT: u8 = 0x4;
    pub const UPSTREAM_PORT: u8 = 0x5;
    pub const DOWNSTREAM_PORT: u8 = 0x6;
}

/// First extended capability (configuration space offset 0x100).
const EXTENDED_START: u16 = 0x100;

/// Offset of extended capability `id` of `bdf`, walking at most the 960 headers 0x100-0xfff
/// can hold (a looping list ends the walk).
pub fn find_extended_capability(config: &mut dyn ConfigSpace, bdf: Bdf, id: u16) -> Option<u16> {
    let mut offset = EXTENDED_START;
    for _ in 0..(0x1000 - EXTENDED_START) / 4 {
        let header = config.read(bdf, offset);
        if header == 0 || header == u32::MAX {
            return None;
        }
        if header as u16 == id {
            return Some(offset);
        }
        let next = ((header >> 20) & 0xffc) as u16;
        if next < EXTENDED_START {
            return None;
        }
        offset = next;
    }
    None
}

/// The Device/Port Type of `bdf`'s PCIe capability (`None`: a conventional PCI function).
pub fn express_port_type(config: &mut dyn ConfigSpace, bdf: Bdf) -> Option<u8> {
    let at = find_capability(config, bdf, capability::PCI_EXPRESS)?;
    Some((config.read(bdf, at) >> 20) as u8 & 0xf)
}

/// Turns on the isolating ACS controls `bdf` implements (and Translation Blocking), and Direct
/// Translated P2P off; whether the four isolating ones are on and Direct Translated P2P off
/// after (read back).
pub fn enable_acs(config: &mut dyn ConfigSpace, bdf: Bdf) -> bool {
    let Some(at) = find_extended_capability(config, bdf, EXTENDED_CAPABILITY_ACS) else {
        return false;
    };
    let register = at + 4;
    let dword = config.read(bdf, register);
    let (implemented, control) = (dword as u16, (dword >> 16) as u16);
    let wanted = implemented & (acs::ISOLATING | acs::TRANSLATION_BLOCKING);
    let control = (control | wanted) & !acs::DIRECT_TRANSLATED;
    config.write(
        bdf,
        register,
        u32::from(control) << 16 | u32::from(implemented),
    );
    let control = (config.read(bdf, register) >> 16) as u16;
    control & acs::ISOLATING == acs::ISOLATING && control & acs::DIRECT_TRANSLATED == 0
}

/// Where the requests of the functions below `bridge` can turn around toward other
/// functions, by its Device/Port Type and ACS (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turnaround {
    /// Nowhere: it redirects them to the root complex, or it is a switch's upstream port.
    None,
    /// Below it: everything below it shares one group with it.
    Below,
    /// Above it, on the bus it sits on: everything below the bridge above it is one group
    /// (everything on the node for a root port).
    Above,
}

fn turnaround(config: &mut dyn ConfigSpace, bridge: Bdf) -> Turnaround {
    match express_port_type(config, bridge) {
        Some(port_type::ROOT_PORT | port_type::DOWNSTREAM_PORT) => {
            if enable_acs(config, bridge) {
                Turnaround::None
            } else {
                Turnaround::Above
            }
        }
        Some(port_type::UPSTREAM_PORT) => Turnaround::None,
        _ => Turnaround::Below,
    }
}

/// Turns on ACS where the hierarchy's ports have it and returns the isolation groups of
/// `topology` that hold more than one function (every other function is alone), each
/// sorted, in the order of their first function.
pub fn isolation_groups(config: &mut dyn ConfigSpace, topology: &Topology) -> Vec<Vec<Bdf>> {
    let functions = &topology.functions;
    let index = |bdf: Bdf| functions.iter().position(|f| f.bdf() == bdf);
    let turnarounds: Vec<Option<Turnaround>> = functions
        .iter()
        .map(|f| f.is_bridge().then(|| turnaround(config, f.bdf())))
        .collect();
    let mut groups = UnionFind::new(functions.len());
    // `root` and every function below it share a group (`None`: the whole node).
    let subtree = |groups: &mut UnionFind, root: Option<usize>| {
        for (i, f) in functions.iter().enumerate() {
            match root {
                None => groups.union(i, 0),
                Some(r) if i == r || f.upstream.contains(&functions[r].bdf()) => groups.union(i, r),
                Some(_) => {}
            }
        }
    };
    for (i, found) in functions.iter().enumerate() {
        match turnarounds[i] {
            Some(Turnaround::Below) => subtree(&mut groups, Some(i)),
            Some(Turnaround::Above) => match found.parent() {
                None => subtree(&mut groups, None),
                Some(parent) => subtree(&mut groups, index(parent)),
            },
            _ => {}
        }
        // The other functions of its device: every endpoint function below the same bridge
        // (one link below a port), or of the same device number on the root bus.
        let bdf = found.bdf();
        if !found.is_bridge()
            && let Some(sibling) = functions[..i].iter().position(|f| {
                let other = f.bdf();
                !f.is_bridge()
                    && other.bus == bdf.bus
                    && (found.parent().is_some() || other.device == bdf.device)
            })
        {
            groups.union(i, sibling);
        }
    }
    let mut out: Vec<Vec<Bdf>> = Vec::new();
    let mut roots: Vec<usize> = Vec::new();
    for (i, found) in functions.iter().enumerate() {
        let root = groups.find(i);
        match roots.iter().position(|&r| r == root) {
            Some(at) => out[at].push(found.bdf()),
            None => {
                roots.push(root);
                out.push(vec![found.bdf()]);
            }
        }
    }
    out.retain(|group| group.len() > 1);
    for group in &mut out {
        microvisor_plan::sort::sort(group);
    }
    out
}

/// Disjoint sets of indices (path halving, no ranks: the hierarchy holds at most a few
/// hundred functions).
struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(len: usize) -> Self {
        Self {
            parent: (0..len).collect(),
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[a.max(b)] = a.min(b);
        }
    }
}
