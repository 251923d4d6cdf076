//! A physical NVMe controller's registers (NVMe Base 1.4 §3.1) and a function's MSI-X table
//! (PCI Local Bus 3.0 §6.8.2), both reached through [`Mmio`] grants. Queues live in RAM the
//! kernel claimed; commands and completions are built and parsed by the kernel.

use microvisor_logic::nvme::spec::reg;

use crate::pci::{Mmio, barrier};

/// The controller's BAR0.
pub struct NvmeController {
    bar: Mmio,
    stride: u64,
}

impl NvmeController {
    pub fn new(bar: Mmio) -> Self {
        let stride = 4 << ((bar.read64(reg::CAP) >> 32) & 0xf);
        Self { bar, stride }
    }

    pub fn capabilities(&self) -> u64 {
        self.bar.read64(reg::CAP)
    }

    pub fn version(&self) -> u32 {
        self.bar.read32(reg::VS)
    }

    pub fn configuration(&self) -> u32 {
        self.bar.read32(reg::CC)
    }

    pub fn set_configuration(&self, value: u32) {
        self.bar.write32(reg::CC, value);
    }

    pub fn status(&self) -> u32 {
        self.bar.read32(reg::CSTS)
    }

    /// Masks all pin-based interrupts (MSI-X is used instead).
    pub fn mask_pin_interrupts(&self) {
        self.bar.write32(reg::INTMS, u32::MAX);
    }

    /// Sets the admin queue attributes and base addresses (controller disabled).
    pub fn set_admin_queues(&self, sq_entries: u32, cq_entries: u32, sq: u64, cq: u64) {
        self.bar
            .write32(reg::AQA, (cq_entries - 1) << 16 | (sq_entries - 1));
        self.bar.write64(reg::ASQ, sq);
        self.bar.write64(reg::ACQ, cq);
    }

    /// Writes submission queue `queue`'s tail doorbell, after the queue entries.
    pub fn ring_submission(&self, queue: u16, tail: u32) {
        barrier::before_doorbell();
        self.bar
            .write32(reg::DOORBELLS + 2 * u64::from(queue) * self.stride, tail);
    }

    /// Writes completion queue `queue`'s head doorbell.
    pub fn ring_completion(&self, queue: u16, head: u32) {
        self.bar.write32(
            reg::DOORBELLS + (2 * u64::from(queue) + 1) * self.stride,
            head,
        );
    }

    /// The BAR (e.g. to reach an MSI-X table inside it).
    pub fn bar(&self) -> &Mmio {
        &self.bar
    }
}

/// Programs MSI-X entry `vector` of a table at `table` inside `bar` to write `data` to
/// `address`, unmasked.
pub fn set_msix_entry(bar: &Mmio, table: u64, vector: u16, address: u64, data: u32) {
    let entry = table + 16 * u64::from(vector);
    bar.write32(entry, address as u32);
    bar.write32(entry + 4, (address >> 32) as u32);
    bar.write32(entry + 8, data);
    bar.write32(entry + 12, 0);
}
