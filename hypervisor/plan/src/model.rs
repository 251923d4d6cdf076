//! The plan model: a list of slices, generic over how a slice names its images
//! (`ImageSource` in the TOML plan on the host, `ImageIndex` into the bundle at boot).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::devices::DeviceRequest;

/// A plan whose slices name images by source (built-in or path): what the TOML describes.
pub type Plan = PlanOf<ImageSource>;
/// A plan whose slices name images by their index in the bundle: what the hypervisor boots.
pub type CompiledPlan = PlanOf<ImageIndex>;

/// Index of an image in the bundle's image table.
pub type ImageIndex = u32;

/// Longest slice name accepted.
pub const MAX_NAME_LEN: usize = 32;
/// Most slices a plan may have (bounds the work done on a plan read at boot).
pub const MAX_SLICES: usize = 1024;
/// Most vCPUs one slice can have: the redistributor frames (128 KiB each) that fit the guest's
/// GICv3 redistributor window (0x080A_0000..0x0900_0000, as on QEMU virt).
pub const MAX_VCPUS: usize = 123;
/// Largest `memory` of one slice: 255 GiB. Its RAM (from IPA 1 GiB) must end below the
/// slice's PCIe ECAM (IPA 0x40_1000_0000, as QEMU virt's high ECAM) inside the 39-bit IPA space
/// stage 2 translates (`microvisor_logic::guest_dt` asserts both). Until 2026-12-04 this was
/// 128 TiB: a larger slice passed the build and stopped the node at boot, and one above
/// 255.25 GiB had its RAM over its own ECAM (found in review).
pub const MAX_SLICE_MEMORY: u64 = 255 << 30;
/// Most `nvme.queues` of one slice: its emulated controller's MSI-X table has one vector per
/// I/O queue pair and one for the admin queue, at most 128 (`microvisor_logic::nvme`).
pub const MAX_NVME_QUEUES: u32 = 127;
/// Granule that `memory` and `nvme.size` must be multiples of.
pub const PAGE_SIZE: u64 = 4096;
/// Most `[[slice.device]]` tables one slice may have: half the device numbers of the bus its
/// virtual PCIe host bridge shows (it also bounds the work done on a plan read at boot).
pub const MAX_DEVICES: usize = 16;

/// A list of slices: the whole partitioning of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOf<I> {
    /// The slices, in plan order (which is also placement order).
    pub slices: Vec<SliceOf<I>>,
}

/// One slice: its name, cores, RAM, guest images, fault policy, NVMe share and PCI functions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceOf<I> {
    /// `[a-z0-9-]`, 1..=32 characters, unique in the plan.
    pub name: String,
    /// Which physical cores it gets.
    pub cores: Cores,
    /// Bytes of RAM; a non-zero multiple of 4 KiB, at most [`MAX_SLICE_MEMORY`].
    pub memory: u64,
    /// The kernel image.
    pub kernel: I,
    /// The initrd image, if any.
    pub initrd: Option<I>,
    /// Kernel command line. In a host [`Plan`]: what the user wrote (appended to a built-in's
    /// defaults by xtask). In a [`CompiledPlan`]: complete, as the guest will see it.
    pub cmdline: String,
    /// What happens when the slice faults.
    pub on_fault: OnFault,
    /// Its share of the node's NVMe controller, if any.
    pub nvme: Option<NvmeShare>,
    /// Whole PCI functions it asks for (`[[slice.device]]`), in plan order; placed by
    /// [`place_devices`](crate::devices::place_devices).
    pub devices: Vec<DeviceRequest>,
    /// What the slice is on the node (`role`, and the manager's `staging`).
    pub role: Role,
    /// The manager's `redfish-certificate` and `redfish-key`: PEM files (paths as the plan
    /// gives them, relative to it) that xtask puts into the manager's initramfs for its
    /// Redfish service's HTTPS, instead of a certificate generated at each start.
    pub redfish_tls: Option<RedfishTls>,
    /// How its kernel image is started.
    pub boot: BootProtocol,
    /// Environment variables of its firmware (`[slice.firmware] env`, name and value, in
    /// name order): empty for a slice that does not boot firmware, or gives none.
    pub firmware_env: Vec<(String, String)>,
    /// The environment of its starts that boot from the network first (`BOOT` with the
    /// network flag, docs/control.md): the firmware's whole environment, the plan's variables
    /// merged in, its network boot targets first ([`crate::firmware_env::network_first`]).
    /// Filled by xtask; empty when the slice does not boot firmware or its firmware has no
    /// network boot target.
    pub firmware_network_env: Vec<(String, String)>,
}

/// How a slice's flashed kernel image is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootProtocol {
    /// An arm64 Linux `Image` (the probe, Debian's kernel, any kernel file): entered at its
    /// `text_offset` with the device tree's address in x0 (Documentation/arch/arm64/booting.rst,
    /// `crate::layout`).
    Linux,
    /// Firmware for QEMU `virt` (`kernel = "firmware"`: Debian's U-Boot): a raw binary entered
    /// 2 MiB into RAM, its device tree at the start of RAM, where QEMU puts it for `-bios`
    /// and where U-Boot's board code looks for it. It has no command line and no initrd.
    Firmware,
}

/// Staging pool of a manager whose plan gives no `staging`: room for a Debian kernel and
/// initramfs for a few slices at once.
pub const DEFAULT_STAGING: u64 = 128 << 20;
/// Smallest staging pool: the control interface's 2 MiB data window and 2 MiB of images.
pub const MIN_STAGING: u64 = 4 << 20;
/// Largest staging pool.
pub const MAX_STAGING: u64 = 16 << 30;

/// A slice's role (`role`): an ordinary tenant, or the node's manager, which alone reaches
/// the control interface (docs/control.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Tenant,
    /// `role = "manager"`: `staging` bytes of node RAM (a 2 MiB multiple) are reserved for
    /// the control interface's window and the images it stages.
    Manager {
        staging: u64,
    },
}

impl Role {
    pub fn is_manager(&self) -> bool {
        matches!(self, Role::Manager { .. })
    }
}

/// The Redfish service's TLS files, as the plan names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedfishTls {
    /// PEM: the certificate, then any intermediates.
    pub certificate: String,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
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

/// Fault policy (`on-fault`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnFault {
    /// Any fault stops the slice and leaves it stopped.
    Stop,
    /// Any fault restarts the slice from its pristine image.
    Restart,
    /// The default: the guest gets the exception hardware would raise (a synchronous external
    /// abort, Undefined Instruction); what cannot be answered that way stops the slice.
    Exception,
}

/// Where a slice's kernel or initrd comes from (host-side plan only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageSource {
    /// A guest built by this repository (`"probe"`, `"linux"`).
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
    /// Debian's U-Boot for QEMU `virt` (`u-boot-qemu`, `qemu_arm64/u-boot.bin`), started as
    /// firmware ([`BootProtocol::Firmware`]): it boots what is installed on the slice's disk.
    Firmware,
}

/// A slice's share of the node's NVMe controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeShare {
    /// Dedicated hardware I/O queue pairs (>= 1).
    pub queues: u32,
    /// Namespace capacity in bytes (> 0, multiple of 4 KiB).
    pub size: u64,
    /// `direct-queues`: I/O queue pairs whose completion queue the physical controller
    /// writes itself (docs/decisions/0005-nvme-completions-without-exits.md). Completions
    /// then carry the hardware queue's SQ ID, which a guest driver must not check.
    pub direct: bool,
}

impl<I> PlanOf<I> {
    /// The same plan with every image reference converted by `convert`, which is given the
    /// slice, the field (`Kernel` or `Initrd`) and the reference. xtask uses it to turn a
    /// [`Plan`] into a [`CompiledPlan`] (image sources into bundle indexes).
    pub fn try_map_images<J, E>(
        &self,
        mut convert: impl FnMut(&SliceOf<I>, crate::Field, &I) -> Result<J, E>,
    ) -> Result<PlanOf<J>, E> {
        let mut slices = Vec::with_capacity(self.slices.len());
        for slice in &self.slices {
            let kernel = convert(slice, crate::Field::Kernel, &slice.kernel)?;
            let initrd = match &slice.initrd {
                Some(initrd) => Some(convert(slice, crate::Field::Initrd, initrd)?),
                None => None,
            };
            slices.push(SliceOf {
                name: slice.name.clone(),
                cores: slice.cores.clone(),
                memory: slice.memory,
                kernel,
                initrd,
                cmdline: slice.cmdline.clone(),
                on_fault: slice.on_fault,
                nvme: slice.nvme,
                devices: slice.devices.clone(),
                role: slice.role,
                boot: slice.boot,
                firmware_env: slice.firmware_env.clone(),
                firmware_network_env: slice.firmware_network_env.clone(),
                redfish_tls: slice.redfish_tls.clone(),
            });
        }
        Ok(PlanOf { slices })
    }
}

impl<I> PlanOf<I> {
    /// The manager slice's index, if the plan has one.
    pub fn manager(&self) -> Option<usize> {
        self.slices.iter().position(|s| s.role.is_manager())
    }
}

impl<I> SliceOf<I> {
    /// The images this slice uses: its kernel, then its initrd if any.
    pub fn images(&self) -> impl Iterator<Item = &I> {
        core::iter::once(&self.kernel).chain(self.initrd.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn slice(kernel: ImageSource, initrd: Option<ImageSource>) -> SliceOf<ImageSource> {
        SliceOf {
            name: "a".to_string(),
            cores: Cores::List(vec![2, 5]),
            memory: 1 << 30,
            kernel,
            initrd,
            cmdline: "quiet".to_string(),
            on_fault: OnFault::Restart,
            nvme: Some(NvmeShare {
                queues: 2,
                size: 1 << 32,
                direct: false,
            }),
            devices: vec![
                DeviceRequest::Class(crate::devices::DeviceClass::Net),
                DeviceRequest::Pci(crate::devices::PciAddress::from_routing_id(0x18)),
            ],
            role: Role::Tenant,
            boot: BootProtocol::Linux,
            firmware_env: Vec::new(),
            firmware_network_env: Vec::new(),
            redfish_tls: None,
        }
    }

    #[test]
    fn core_count() {
        assert_eq!(Cores::Count(3).count(), 3);
        assert_eq!(Cores::List(vec![4, 1]).count(), 2);
    }

    #[test]
    fn images_lists_kernel_then_initrd() {
        let with = slice(
            ImageSource::BuiltIn(BuiltIn::Linux),
            Some(ImageSource::Path("i".into())),
        );
        assert_eq!(with.images().count(), 2);
        let without = slice(ImageSource::BuiltIn(BuiltIn::Probe), None);
        assert_eq!(
            without.images().collect::<Vec<_>>(),
            [&ImageSource::BuiltIn(BuiltIn::Probe)]
        );
    }

    #[test]
    fn try_map_images_keeps_everything_else() {
        let plan = PlanOf {
            slices: vec![slice(
                ImageSource::Path("k".into()),
                Some(ImageSource::Path("i".into())),
            )],
        };
        let mut seen = Vec::new();
        let compiled: CompiledPlan = plan
            .try_map_images(|_, field, source| {
                seen.push(field);
                Ok::<_, ()>(if *source == ImageSource::Path("k".into()) {
                    7
                } else {
                    9
                })
            })
            .unwrap();
        assert_eq!(seen, [crate::Field::Kernel, crate::Field::Initrd]);
        let compiled_slice = &compiled.slices[0];
        assert_eq!((compiled_slice.kernel, compiled_slice.initrd), (7, Some(9)));
        assert_eq!(compiled_slice.cores, Cores::List(vec![2, 5]));
        assert_eq!(compiled_slice.cmdline, "quiet");
        assert_eq!(compiled_slice.nvme, plan.slices[0].nvme);
        assert_eq!(compiled_slice.devices, plan.slices[0].devices);
    }

    #[test]
    fn try_map_images_stops_at_the_first_error() {
        let plan = PlanOf {
            slices: vec![slice(ImageSource::Path("k".into()), None)],
        };
        let result: Result<CompiledPlan, &str> = plan.try_map_images(|_, _, _| Err("missing"));
        assert_eq!(result, Err("missing"));
    }
}
