//! The node once booted: its slices and which vCPU each physical core runs.

use alloc::vec::Vec;
use microvisor_arch::cpu;
use microvisor_logic::inventory::Conduit;
use spin::Once;

use crate::slice::{Slice, Vcpu};

pub struct Node {
    pub conduit: Conduit,
    pub slices: Vec<Slice>,
    /// For each physical core: (slice index, vCPU index) it runs, if any.
    assignment: Vec<Option<(usize, usize)>>,
}

static NODE: Once<Node> = Once::new();

impl Node {
    pub fn new(conduit: Conduit, cores: usize, slices: Vec<Slice>) -> Node {
        let mut assignment = alloc::vec![None; cores];
        for slice in &slices {
            for vcpu in &slice.vcpus {
                assignment[vcpu.core] = Some((slice.index, vcpu.index));
            }
        }
        Node {
            conduit,
            slices,
            assignment,
        }
    }

    /// The slice and vCPU that physical core `core` runs.
    pub fn assigned(&self, core: usize) -> Option<(&Slice, &Vcpu)> {
        let (s, v) = (*self.assignment.get(core)?)?;
        let slice = &self.slices[s];
        Some((slice, &slice.vcpus[v]))
    }

    /// Physical cores that run a vCPU.
    pub fn used_cores(&self) -> impl Iterator<Item = usize> + '_ {
        self.assignment
            .iter()
            .enumerate()
            .filter_map(|(core, a)| a.map(|_| core))
    }
}

/// Publishes the node (boot core, once, before any other core looks).
pub fn publish(node: Node) -> &'static Node {
    NODE.call_once(|| node)
}

pub fn get() -> Option<&'static Node> {
    NODE.get()
}

/// The slice and vCPU this core runs.
pub fn current() -> Option<(&'static Slice, &'static Vcpu)> {
    get()?.assigned(cpu::core_index())
}
