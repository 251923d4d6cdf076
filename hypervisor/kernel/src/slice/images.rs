//! The images a slice boots from, its *boot source*: the flashed ones, kept pristine in the
//! bundle, or ones the manager staged (docs/control.md, "Boot sources"), kept in the staging
//! pool. Either way they are copied into the slice's RAM, after it is scrubbed, before every
//! run.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use microvisor_arch::memory::{OutOfRange, SharedMemory};
use microvisor_arch::virt;
use microvisor_logic::guest_dt::{self, DeviceNode, GuestMachine};
use microvisor_plan::layout::GUEST_RAM_BASE;
use microvisor_plan::{Arm64Header, BootProtocol, GuestLayout};

use super::staging::{PoolImage, StagingPool};

/// An image of the plan, in the bundle.
#[derive(Clone, Copy, Debug)]
pub struct FlashedImage {
    pub label: &'static str,
    pub bytes: &'static [u8],
    pub sha256: [u8; 32],
    /// How it is started, as a kernel: the plan's `BootProtocol` (staged kernels are always
    /// Linux Images).
    pub protocol: BootProtocol,
}

/// Where the bytes of a boot image are.
#[derive(Debug)]
pub enum ImageBytes {
    Flashed(FlashedImage),
    Staged(PoolImage),
}

impl ImageBytes {
    pub fn len(&self) -> u64 {
        match self {
            ImageBytes::Flashed(image) => image.bytes.len() as u64,
            ImageBytes::Staged(image) => image.len,
        }
    }

    pub fn sha256(&self) -> [u8; 32] {
        match self {
            ImageBytes::Flashed(image) => image.sha256,
            ImageBytes::Staged(image) => image.sha256,
        }
    }

    /// The label shown in status: the plan's, or `staged`.
    pub fn label(&self) -> &str {
        match self {
            ImageBytes::Flashed(image) => image.label,
            ImageBytes::Staged(_) => "staged",
        }
    }

    /// The first bytes (enough for an arm64 Image header).
    fn head(&self, pool: Option<&StagingPool>) -> Vec<u8> {
        let mut head = alloc::vec![0u8; (self.len() as usize).min(4096)];
        match self {
            ImageBytes::Flashed(image) => {
                let len = head.len();
                head.copy_from_slice(&image.bytes[..len]);
            }
            ImageBytes::Staged(image) => {
                if let Some(pool) = pool {
                    let _ = pool.memory.read(image.offset, &mut head);
                }
            }
        }
        head
    }

    /// Copies the image to `at` in `ram`.
    fn copy_to(
        &self,
        ram: &SharedMemory,
        at: u64,
        pool: Option<&StagingPool>,
    ) -> Result<(), OutOfRange> {
        match self {
            ImageBytes::Flashed(image) => ram.write(at, image.bytes),
            ImageBytes::Staged(image) => {
                let pool = pool.ok_or(OutOfRange)?;
                ram.copy_from(at, &pool.memory, image.offset, image.len)
            }
        }
    }
}

/// What a slice boots: kernel, initrd, command line, its device tree, and where each goes.
#[derive(Debug)]
pub struct BootImages {
    pub kernel: ImageBytes,
    pub initrd: Option<ImageBytes>,
    pub cmdline: String,
    /// True when the manager set it (not the flashed default).
    pub staged: bool,
    /// The flashed firmware, booting from the network first (`BOOT` with the network flag).
    pub network_first: bool,
    pub dtb: Vec<u8>,
    pub layout: GuestLayout,
}

/// Why images cannot be a boot source.
#[derive(Debug)]
pub enum ImageProblem {
    NotAKernel(String),
    TooLarge(String),
}

impl ImageProblem {
    /// What is wrong, as one line.
    pub fn message(self) -> String {
        match self {
            ImageProblem::NotAKernel(why) | ImageProblem::TooLarge(why) => why,
        }
    }
}

/// A boot source that could not be made, with the images it was given.
#[derive(Debug)]
pub struct Unusable {
    pub why: ImageProblem,
    pub kernel: ImageBytes,
    pub initrd: Option<ImageBytes>,
}

/// The slice a boot source is made for: what its device tree needs.
pub struct Machine<'a> {
    pub name: &'a str,
    pub vcpus: usize,
    pub memory: u64,
    pub devices: &'a [&'a dyn DeviceNode],
}

impl BootImages {
    /// Lays out `kernel` and `initrd` in the slice's RAM and generates its device tree with
    /// `cmdline`: the boot source, or why it cannot be one (what does not fit, or is not a
    /// kernel). The images are given back with the error.
    pub fn new(
        machine: &Machine<'_>,
        kernel: ImageBytes,
        initrd: Option<ImageBytes>,
        cmdline: String,
        staged: bool,
        pool: Option<&StagingPool>,
    ) -> Result<BootImages, alloc::boxed::Box<Unusable>> {
        match Self::lay_out(machine, &kernel, initrd.as_ref(), &cmdline, pool) {
            Ok((layout, dtb)) => Ok(BootImages {
                kernel,
                initrd,
                cmdline,
                staged,
                network_first: false,
                dtb,
                layout,
            }),
            Err(why) => Err(alloc::boxed::Box::new(Unusable {
                why,
                kernel,
                initrd,
            })),
        }
    }

    fn lay_out(
        machine: &Machine<'_>,
        kernel: &ImageBytes,
        initrd: Option<&ImageBytes>,
        cmdline: &str,
        pool: Option<&StagingPool>,
    ) -> Result<(GuestLayout, Vec<u8>), ImageProblem> {
        let layout = match kernel {
            ImageBytes::Flashed(image) if image.protocol == BootProtocol::Firmware => {
                if initrd.is_some() {
                    return Err(ImageProblem::NotAKernel(
                        "initrd: firmware loads its own (boot a staged kernel with it instead)"
                            .into(),
                    ));
                }
                GuestLayout::firmware(machine.memory, kernel.len())
            }
            _ => {
                let head = kernel.head(pool);
                let header = Arm64Header::parse(&head)
                    .map_err(|e| ImageProblem::NotAKernel(format!("kernel: {e}")))?;
                GuestLayout::new(
                    machine.memory,
                    &header,
                    kernel.len(),
                    initrd.map(ImageBytes::len),
                )
            }
        }
        .map_err(|e| ImageProblem::TooLarge(format!("{e}")))?;
        let guest = GuestMachine {
            slice_name: machine.name,
            vcpus: machine.vcpus,
            memory: machine.memory,
            cmdline,
            initrd: layout.initrd,
        };
        let dtb = guest_dt::generate(&guest, machine.devices)
            .map_err(|e| ImageProblem::TooLarge(format!("device tree: {e:?}")))?;
        Ok((layout, dtb))
    }

    /// Zeroes the whole of `ram` (the slice's, mapped at [`GUEST_RAM_BASE`]) and, unless the
    /// guest can only ever reach it through the caches (`virt::guest_ram_always_cacheable`,
    /// FEAT_S2FWB), writes the zeros back to memory (a guest reading Non-cacheable or with
    /// its MMU off must not find what was there under them), then copies the images in and
    /// makes them visible to a guest starting with caches off. The slice's vCPUs are all off.
    ///
    /// Without FEAT_S2FWB the caches are cleaned and invalidated first: the scrub skips
    /// blocks that read as zero, and a zero line the last scrub left in the cache would hide
    /// what the tenant wrote below it with caches off, which the next one could then read the
    /// same way (found in review, 2026-12-04).
    pub fn load(&self, ram: &SharedMemory, pool: Option<&StagingPool>) -> Result<(), OutOfRange> {
        let size = ram.region().size;
        let cached_only = virt::guest_ram_always_cacheable();
        if !cached_only {
            ram.sync_from_uncached(0, size)?;
        }
        ram.scrub(0, size)?;
        if !cached_only {
            ram.sync_for_uncached(0, size)?;
        }
        let layout = &self.layout;
        let offset = |ipa: u64| ipa - GUEST_RAM_BASE;
        let kernel_at = offset(layout.kernel_ipa);
        self.kernel.copy_to(ram, kernel_at, pool)?;
        // Only the bytes written: the rest of the kernel's footprint (its BSS) was scrubbed
        // above, and is either written back already or reached through the caches only.
        ram.sync_for_guest(kernel_at, self.kernel.len())?;
        if let (Some(initrd), Some((start, _))) = (&self.initrd, layout.initrd) {
            initrd.copy_to(ram, offset(start), pool)?;
            ram.sync_for_guest(offset(start), initrd.len())?;
        }
        ram.write(offset(layout.dtb_ipa), &self.dtb)?;
        ram.sync_for_guest(offset(layout.dtb_ipa), self.dtb.len() as u64)
    }

    /// Gives the staged images back to the pool (when another boot source replaces these).
    pub fn release(self, pool: Option<&StagingPool>) {
        for image in core::iter::once(self.kernel).chain(self.initrd) {
            if let (ImageBytes::Staged(image), Some(pool)) = (image, pool) {
                pool.free(image);
            }
        }
    }
}
