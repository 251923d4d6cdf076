//! The plan model: a list of slices, generic over how a slice names its images
//! (`ImageSource` in the TOML plan on the host, `ImageIndex` into the bundle at boot).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// A plan whose slices name images by source (built-in or path): what the TOML describes.
pub type Plan = PlanOf<ImageSource>;
/// A plan whose slices name images by their index in the bundle: what the hypervisor boots.
pub type CompiledPlan = PlanOf<ImageIndex>;

/// Index of an image in the bundle's image table.
pub type ImageIndex = u32;

/// Longest slice name accepted.
pub const MAX_NAME_LEN: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOf<I> {
    pub slices: Vec<SliceOf<I>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceOf<I> {
    /// `[a-z0-9-]`, 1..=32 characters, unique in the plan.
    pub name: String,
    pub cores: Cores,
    /// Bytes of RAM; a non-zero multiple of 4 KiB.
    pub memory: u64,
    pub kernel: I,
    pub initrd: Option<I>,
    /// Complete kernel command line as the guest will see it (defaults of built-ins included).
    pub cmdline: String,
    pub on_fault: OnFault,
    pub nvme: Option<NvmeShare>,
}

/// Which physical cores a slice gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cores {
    /// Any `n` free cores (the lowest-numbered ones left after explicit lists).
    Count(u32),
    /// Exactly these physical core indexes (position in the firmware DT's `/cpus`), in vCPU order.
    List(Vec<u32>),
}

impl Cores {
    /// Number of vCPUs this slice has.
    pub fn count(&self) -> usize {
        match self {
            Cores::Count(n) => *n as usize,
            Cores::List(l) => l.len(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnFault {
    /// Stop the slice and leave it stopped.
    Stop,
    /// Restart the slice from its pristine image.
    Restart,
}

/// Where a slice's kernel or initrd comes from (host-side plan only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageSource {
    BuiltIn(BuiltIn),
    /// A file path as written in the plan (relative paths are relative to the plan file).
    Path(String),
}

/// Guests built by this repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuiltIn {
    /// `guest-images/probe`: the bare-metal probe.
    Probe,
    /// Debian's arm64 cloud kernel (+ the generated initramfs unless `initrd` is given).
    Linux,
}

/// A slice's share of the node's NVMe controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeShare {
    /// Dedicated hardware I/O queue pairs (>= 1).
    pub queues: u32,
    /// Namespace capacity in bytes (> 0, multiple of 4 KiB).
    pub size: u64,
}
