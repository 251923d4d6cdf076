//! NVMe queue slicing, mediated backend (docs/architecture.md, "NVMe queue slicing"): the virtual NVMe controller each slice
//! sees, and the validator that stands between the slice's commands and the physical
//! controller (NVM Express Base Specification 1.4, NVM Command Set Specification 1.0).
//!
//! The kernel owns the physical controller and reserves hardware I/O queue pairs per slice;
//! it emulates the slice's PCI configuration space and hands everything in BAR0 to a
//! [`VirtualNvme`]: register and doorbell accesses ([`VirtualNvme::mmio_read`],
//! [`VirtualNvme::mmio_write`]), the MSI-X capability's switches
//! ([`VirtualNvme::set_msix_control`]) and the physical completions of the slice's hardware
//! queues ([`VirtualNvme::hardware_completions`]). The controller reaches guest memory, DMA
//! pages, hardware queues and virtual interrupts only through [`NvmeBackend`].
//!
//! The physical controller itself is driven by [`host`]: bring-up, the admin queue, and the
//! hardware queue pairs whose entries the kernel moves between them and [`VirtualNvme`].
//!
//! Modules: `spec` (wire formats and numbers), `memory` (addresses, the slice's RAM),
//! `config`, `identify` (Identify data), `admin` (admin command emulation), `io` (the I/O
//! command validator), `msix` (MSI-X table and PBA), `controller` (registers, queues,
//! completions, reset), `direct` (I/O queues whose CQ the physical controller writes),
//! `host` (the physical controller's driver).

#![warn(missing_docs)]

mod admin;
mod backend;
mod config;
mod controller;
mod direct;
pub mod erase;
pub mod host;
mod identify;
mod io;
mod memory;
mod msix;
pub mod spec;

#[cfg(test)]
mod tests;

pub use backend::{DMA_PAGE_SIZE, DmaPage, MsiMessage, NvmeBackend, Placed};
pub use config::{
    ConfigError, ControllerConfig, DEFAULT_MODEL, HardwareQueues, MAX_IO_QUEUES, MAX_MDTS,
    MAX_QUEUE_DEPTH, NamespaceIds, NamespaceShare,
};
pub use controller::{BAR0_SIZE, CompletionSummary, VirtualNvme};
pub use memory::{GuestMemoryFault, GuestRam, Ipa, Pa};
pub use msix::{MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET};
pub use spec::{CompletionEntry, Status, SubmissionEntry};
