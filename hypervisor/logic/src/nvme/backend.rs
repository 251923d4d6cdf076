//! What the kernel provides to a slice's virtual NVMe controller: the slice's RAM, the
//! hypervisor-owned DMA pages, the slice's hardware submission queues, and virtual MSIs.

use super::memory::{GuestMemoryFault, Ipa, Pa};
use super::spec::SubmissionEntry;

/// Bytes of one hypervisor DMA page.
pub const DMA_PAGE_SIZE: usize = 4096;

/// The DMA page the kernel reserved for one hardware command slot: PRP lists and Dataset
/// Management ranges are copied there, so the device never reads guest-writable memory for
/// them.
#[derive(Debug)]
pub struct DmaPage<'a> {
    /// Host physical address the device uses (4 KiB aligned).
    pub address: Pa,
    /// The page's contents, as the hypervisor writes them.
    pub bytes: &'a mut [u8; DMA_PAGE_SIZE],
}

pub use crate::msix::MsiMessage;

/// The environment of one virtual controller, implemented by the kernel (and by a fake
/// physical controller in tests). Hardware queues are named by their physical queue ID.
///
/// Every call is made with the controller's lock held, from whichever core handles the
/// doorbell write, the completion interrupt or the configuration write.
pub trait NvmeBackend {
    /// Copies `buf.len()` bytes of the slice's RAM at `ipa` into `buf`. The controller only
    /// asks for ranges it has checked to lie inside the slice's RAM, and reads each guest
    /// byte of a command at most once.
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault>;

    /// Copies `data` into the slice's RAM at `ipa` (again only inside its RAM). Writes must
    /// become visible to the slice's vCPUs in the order of the calls (a store barrier after
    /// each): completion entries are written in two calls so the phase tag lands last.
    fn write_guest(&mut self, ipa: Ipa, data: &[u8]) -> Result<(), GuestMemoryFault>;

    /// A full barrier: the guest writes before it are visible to the slice's vCPUs before the
    /// guest reads after it are made (a shadow EventIdx store, then a shadow tail load).
    fn fence(&mut self);

    /// The DMA page of command slot `slot` (0 to queue depth - 2) of hardware queue `queue`.
    fn dma_page(&mut self, queue: u16, slot: u16) -> DmaPage<'_>;

    /// Places `command` at the tail of hardware submission queue `queue` without ringing its
    /// doorbell. Its Command Identifier is the slot; every address in it is host physical and
    /// lies inside the slice's RAM or the slot's DMA page. The queue never overflows: a queue
    /// of depth `d` never has more than `d - 1` of the slice's commands outstanding.
    fn submit(&mut self, queue: u16, command: &SubmissionEntry);

    /// Rings hardware queue `queue`'s tail doorbell once after a batch of `submit`s; whatever
    /// was written to its entries and DMA pages must be visible to the device first.
    fn ring(&mut self, queue: u16);

    /// Delivers an MSI-X message as a virtual interrupt of the slice.
    fn signal(&mut self, message: MsiMessage);

    /// Moves the completion queue of hardware pair `queue`: with `Some(at)`, into the
    /// slice's RAM at host physical `at` (page aligned, `depth` entries inside the slice's
    /// RAM), where the controller then writes the completions of the pair's commands itself,
    /// and which the slice can then only read (its page mapped read-only in the slice's
    /// stage 2 until the pair moves back: the controller's entries are what frees the
    /// hardware SQ's slots), zeroed once it is, and which [`Self::write_guest`] then refuses
    /// to write whatever the guest asked for; at most one such CQ per page. With `None`,
    /// back into the hypervisor's memory (and the page writable again). Either way the pair is deleted and
    /// created again (its SQ and CQ both start empty at entry 0), so when this returns the
    /// controller has completed or aborted every command it had on the pair, writes nothing
    /// more where the CQ was, and the pair's interrupt goes to the hypervisor again.
    ///
    /// Only called while no command is outstanding on the pair (`Some`) or while the slice's
    /// commands on it may still be in flight (`None`). What happened is in [`Placed`].
    ///
    /// Called only when [`super::ControllerConfig::direct_queues`] is set.
    fn place_cq(&mut self, queue: u16, at: Option<Pa>) -> Placed;

    /// Writes the CQ head doorbell of hardware pair `queue`, whose CQ lies in the slice's RAM:
    /// the slice has consumed the entries before `head`, which the controller may overwrite.
    fn release_cq(&mut self, queue: u16, head: u16);
}

/// What [`NvmeBackend::place_cq`] did with a hardware pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// The CQ is where it was asked to be.
    Moved,
    /// Not moved to the slice's CQ (`Some`: refused, or the move failed and the pair was
    /// created again where it was): back in the hypervisor's memory, usable as before.
    Stayed,
    /// In neither place: the pair could not be created again after it was deleted (an
    /// admin command failed or timed out). The controller may still write where the CQ
    /// was, and the pair's commands never complete: nothing may go to it again, and the
    /// kernel must reset the physical controller before the slice's RAM is reused (then
    /// [`super::VirtualNvme::cancel_hardware_commands`]).
    Lost,
}
