//! The images a slice boots from, kept pristine in the bundle and copied into its RAM before
//! every run.

use alloc::vec::Vec;

use microvisor_arch::memory::{OutOfRange, SharedMemory};
use microvisor_plan::GuestLayout;
use microvisor_plan::layout::GUEST_RAM_BASE;

/// A slice's kernel, initrd and device tree, and where they go in its RAM.
pub struct BootImages {
    pub kernel: &'static [u8],
    pub initrd: Option<&'static [u8]>,
    pub dtb: Vec<u8>,
    pub layout: GuestLayout,
}

impl BootImages {
    /// Copies the images into `ram` (the slice's, mapped at [`GUEST_RAM_BASE`]) and makes them
    /// visible to a guest starting with caches off. The slice's vCPUs are all off.
    pub fn load(&self, ram: &SharedMemory) -> Result<(), OutOfRange> {
        let layout = &self.layout;
        let offset = |ipa: u64| ipa - GUEST_RAM_BASE;
        let kernel_at = offset(layout.kernel_ipa);
        let kernel_len = self.kernel.len() as u64;
        ram.write(kernel_at, self.kernel)?;
        ram.zero(
            kernel_at + kernel_len,
            layout
                .kernel_end
                .saturating_sub(layout.kernel_ipa + kernel_len),
        )?;
        ram.sync_for_guest(kernel_at, layout.kernel_end - layout.kernel_ipa)?;
        if let (Some(bytes), Some((start, _))) = (self.initrd, layout.initrd) {
            ram.write(offset(start), bytes)?;
            ram.sync_for_guest(offset(start), bytes.len() as u64)?;
        }
        ram.write(offset(layout.dtb_ipa), &self.dtb)?;
        ram.sync_for_guest(offset(layout.dtb_ipa), self.dtb.len() as u64)
    }
}
