//! The hypervisor's side of the node's physical NVMe controller (NVM Express Base 1.4): PCI
//! function set-up, controller reset and enable (§3.5.1, §7.6.1), a polled admin queue,
//! Identify (§5.15), Set Features Number of Queues (§5.21.1.7), and the hardware I/O queue
//! pairs the slices get. [`super::VirtualNvme`] is the other side: slices only ever see their
//! own virtual controllers, never this one.
//!
//! The driver reaches the machine only through the small traits below, which the kernel
//! implements over the architecture layer's types and the tests over a fake controller:
//! [`HostBridge`] (configuration space, and a grant of BAR0 as [`Registers`]),
//! [`DmaAllocator`] (queue and Identify memory, as [`CpuWritten`] and [`DeviceWritten`]
//! pieces) and [`Clock`] (the timeouts: CAP.TO and the admin command timeout).

mod controller;
mod queue;

#[cfg(test)]
mod tests;

use crate::inventory::Region;
use crate::pci::ConfigSpace;

pub use controller::{ADMIN_ENTRIES, ControllerInfo, Health, PhysicalController, QueueNeeds};
pub use queue::QueuePair;

/// The controller's BAR0 (Base 1.4 §3.1): its registers, doorbells and, on the controllers the
/// hypervisor accepts, the MSI-X table. Offsets are from the start of BAR0; accesses outside
/// it are ignored (writes) or read all-ones.
pub trait Registers {
    /// Reads the 32-bit register at `offset`.
    fn read32(&self, offset: u64) -> u32;
    /// Reads the 64-bit register at `offset`.
    fn read64(&self, offset: u64) -> u64;
    /// Writes the 32-bit register at `offset`.
    fn write32(&self, offset: u64, value: u32);
    /// Writes the 64-bit register at `offset`.
    fn write64(&self, offset: u64, value: u64);
}

/// Memory the CPU writes and the device only reads: a submission queue.
pub trait CpuWritten {
    /// The bus address the device is given (page aligned).
    fn address(&self) -> u64;
    /// Copies `bytes` to `offset` (the caller stays inside the allocation).
    fn write(&mut self, offset: u64, bytes: &[u8]);
    /// Makes every earlier `write` visible to the device before any later register write
    /// (the doorbell that tells the device to read them): a store barrier on hardware.
    fn publish(&self);
}

/// Memory the device writes: a completion queue or an Identify buffer. Every read is a fresh
/// (volatile) access: the device may change the bytes at any time.
pub trait DeviceWritten {
    /// The bus address the device is given (page aligned).
    fn address(&self) -> u64;
    /// The little-endian dword at `offset` (4-byte aligned), read with one access; None
    /// outside the allocation.
    fn read_u32(&self, offset: u64) -> Option<u32>;
    /// Copies `buffer.len()` bytes at `offset` into `buffer`; None outside the allocation.
    fn read(&self, offset: u64, buffer: &mut [u8]) -> Option<()>;
    /// Orders every earlier read before every later one: once a completion's phase tag says
    /// it is there, its other fields and the data it describes are read after (a load barrier
    /// on hardware).
    fn acquire(&self);
    /// Zeroes the first `bytes` (while the device writes nothing there).
    fn zero(&self, bytes: u64);
}

/// Where queues and Identify buffers come from: zeroed, page-aligned, whole pages that the
/// device may reach by DMA, never freed.
pub trait DmaAllocator {
    /// Pieces the CPU writes.
    type CpuWritten: CpuWritten;
    /// Pieces the device writes.
    type DeviceWritten: DeviceWritten;
    /// `bytes` (rounded up to whole pages) for the CPU to write, if there is room.
    fn cpu_written(&mut self, bytes: u64) -> Option<Self::CpuWritten>;
    /// `bytes` (rounded up to whole pages) for the device to write, if there is room.
    fn device_written(&mut self, bytes: u64) -> Option<Self::DeviceWritten>;
}

/// The PCIe host bridge the controller sits behind.
pub trait HostBridge {
    /// What a grant of device registers gives.
    type Registers: Registers;
    /// Its configuration space.
    fn config(&mut self) -> &mut dyn ConfigSpace;
    /// Exclusive access to the registers at CPU addresses `bar` (a BAR placed in a window),
    /// if they can be granted.
    fn map(&mut self, bar: Region) -> Option<Self::Registers>;
}

/// Time, for the timeouts.
pub trait Clock {
    /// Milliseconds since a fixed point in the past; never goes back.
    fn now_ms(&self) -> u64;
    /// Called on each turn of a polling loop (a spin hint on hardware; a test clock moves time
    /// on).
    fn pause(&self);
}

/// Why the controller (or one command to it) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NvmeError {
    /// No NVMe function on the host bridge.
    NoController,
    /// The function's BARs could not be placed or granted.
    Bars(&'static str),
    /// The device memory for queues and tables ran out.
    OutOfDeviceMemory,
    /// The controller did not reach the wanted CSTS.RDY within CAP.TO.
    NotReady {
        /// The CSTS.RDY value waited for.
        ready: bool,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The controller reported a fatal status (CSTS.CFS).
    Fatal,
    /// An admin command did not complete within the timeout.
    Timeout {
        /// The command's opcode.
        opcode: u8,
    },
    /// An admin command completed with an error status.
    Command {
        /// The command's opcode.
        opcode: u8,
        /// The completion's Status Field (Base 1.4 §4.6.1).
        status: u16,
    },
    /// The controller's queues are shorter than the slices' (CAP.MQES).
    QueuesTooShort {
        /// Entries the controller allows per I/O queue (CAP.MQES + 1).
        supported: u32,
        /// Entries asked for.
        needed: u16,
    },
    /// The controller lacks something the hypervisor needs.
    Unsupported(&'static str),
    /// An earlier admin command (this opcode) timed out: it may still sit in the admin queue
    /// or run later, so nothing more is queued behind it.
    AdminLost {
        /// The opcode of the command that timed out.
        opcode: u8,
    },
}

impl core::fmt::Display for NvmeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoController => f.write_str("no NVMe controller on the PCIe host bridge"),
            Self::Bars(why) => write!(f, "cannot place its BARs: {why}"),
            Self::OutOfDeviceMemory => f.write_str("out of device memory for queues"),
            Self::NotReady { ready, waited_ms } => {
                write!(
                    f,
                    "controller did not become {} within {waited_ms} ms",
                    if *ready { "ready" } else { "disabled" }
                )
            }
            Self::Fatal => f.write_str("controller fatal status (CSTS.CFS)"),
            Self::Timeout { opcode } => write!(f, "admin command {opcode:#04x} timed out"),
            Self::Command { opcode, status } => write!(
                f,
                "admin command {opcode:#04x} failed with status {status:#x}"
            ),
            Self::QueuesTooShort { supported, needed } => write!(
                f,
                "unsupported controller: queues shorter than {needed} entries (CAP.MQES allows {supported})"
            ),
            Self::Unsupported(what) => write!(f, "unsupported controller: {what}"),
            Self::AdminLost { opcode } => write!(
                f,
                "admin queue out of use since command {opcode:#04x} timed out"
            ),
        }
    }
}
