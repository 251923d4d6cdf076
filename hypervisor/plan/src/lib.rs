//! The slice plan: model, validation, placement onto hardware, guest memory layout and the
//! image bundle format. One piece of code used by `xtask` (host, feature `std`) and by the
//! hypervisor at boot (no_std + alloc). See `docs/plan.md`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

extern crate alloc;

pub mod bundle;
pub mod devices;
pub mod error;
pub mod firmware_env;
pub mod image;
pub mod layout;
pub mod model;
pub mod place;
pub mod sha256;
pub mod size;
pub mod sort;
pub mod sorted_map;
#[cfg(feature = "std")]
pub mod toml_plan;
pub mod validate;

#[cfg(feature = "std")]
pub use bundle::BundleWriter;
pub use bundle::{Bundle, BundleError, BundleImage, BundleIndex, ImageEntry, header_total_len};
pub use devices::{
    DeviceClass, DeviceRequest, FunctionUse, NodePci, PciAddress, PciAddressError, PciFunction,
    place_devices,
};
pub use error::{Field, PlanError, Problem};
pub use image::{Arm64Header, ImageError};
pub use layout::{GUEST_RAM_BASE, GuestLayout};
pub use model::{
    BootProtocol, BuiltIn, CompiledPlan, Cores, ImageIndex, ImageSource, NvmeShare, OnFault, Plan,
    PlanOf, RedfishTls, SliceOf,
};
pub use place::{
    DiskShare, Hardware, Placement, RamRange, SlicePlacement, format_cores, place, place_disk,
};
pub use size::{HumanSize, SizeError, parse_size};
pub use validate::is_valid_name;

/// The whole path as xtask and the hypervisor use it: TOML -> compiled plan -> bundle ->
/// parse, verify, place and lay out.
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    const PLAN: &str = r#"
[[slice]]
name = "web-0"
cores = 2
memory = "256MiB"
kernel = "probe"
cmdline = "verbose"

[[slice]]
name = "db-0"
cores = [3]
memory = "512M"
kernel = "linux"
initrd = "initrd.cpio"
on-fault = "restart"
[slice.nvme]
queues = 2
size = "8GiB"
[[slice.device]]
class = "net"
"#;

    fn kernel_image(image_size: u64, file_len: usize) -> Vec<u8> {
        let mut bytes = image::build_header(0, image_size, 0xa).to_vec();
        bytes.resize(file_len, 0x5a);
        bytes
    }

    #[test]
    fn toml_to_bundle_to_placement() {
        let plan = Plan::from_toml(PLAN).unwrap();
        let mut writer = BundleWriter::new();
        let compiled: CompiledPlan = plan
            .try_map_images(|_, _, source| {
                let (label, bytes) = match source {
                    ImageSource::BuiltIn(BuiltIn::Probe) => ("probe", kernel_image(0, 8192)),
                    ImageSource::BuiltIn(BuiltIn::Linux) => {
                        ("linux", kernel_image(40 << 20, 64 << 10))
                    }
                    ImageSource::BuiltIn(BuiltIn::Firmware) => ("u-boot", vec![0x14; 900 << 10]),
                    ImageSource::Path(path) => (path.as_str(), vec![7; 300 << 10]),
                };
                Ok::<_, PlanError>(writer.add_image(label, bytes))
            })
            .unwrap();
        let bytes = writer.finish(&compiled);

        assert_eq!(bundle::header_total_len(&bytes), Ok(bytes.len() as u64));
        let bundle = Bundle::parse(&bytes).unwrap();
        bundle.verify_images().unwrap();
        assert_eq!(bundle.plan(), &compiled);

        let hw = Hardware {
            cores: 4,
            free_ram: vec![RamRange {
                base: 0x4000_0000,
                size: 1 << 30,
            }],
            ram_total: 1 << 30,
        };
        let placement = place(bundle.plan(), &hw).unwrap();
        assert_eq!(placement.slices[0].cores, [0, 1]);
        assert_eq!(
            placement.slices[0].ram,
            RamRange {
                base: 0x7000_0000,
                size: 256 << 20
            }
        );
        assert_eq!(placement.slices[1].cores, [3]);
        assert_eq!(
            placement.slices[1].ram,
            RamRange {
                base: 0x5000_0000,
                size: 512 << 20
            }
        );

        let net = PciFunction {
            address: PciAddress::new(0, 3, 0).unwrap(),
            class: 0x02_00_00,
            vendor: 0x1af4,
            device: 0x1041,
        };
        let node = NodePci {
            functions: vec![net],
            smmu: true,
            hypervisor_nvme: None,
            isolation_groups: Vec::new(),
        };
        assert_eq!(
            place_devices(bundle.plan(), &node),
            Ok(vec![vec![], vec![net.address]])
        );

        let db = &bundle.plan().slices[1];
        let kernel = bundle.image(db.kernel).unwrap();
        let header = Arm64Header::parse(kernel.bytes).unwrap();
        let initrd_len = db
            .initrd
            .map(|i| bundle.image(i).unwrap().bytes.len() as u64);
        let layout =
            GuestLayout::new(db.memory, &header, kernel.bytes.len() as u64, initrd_len).unwrap();
        assert_eq!(layout.kernel_end, GUEST_RAM_BASE + (40 << 20));
        assert_eq!(
            layout.initrd,
            Some((
                GUEST_RAM_BASE + (510 << 20) - (300 << 10),
                GUEST_RAM_BASE + (510 << 20)
            ))
        );
    }

    #[test]
    fn fit_errors_read_well() {
        let plan = Plan::from_toml(PLAN).unwrap();
        let hw = Hardware {
            cores: 3,
            free_ram: vec![RamRange {
                base: 0x4000_0000,
                size: 1 << 30,
            }],
            ram_total: 1 << 30,
        };
        assert_eq!(
            place(&plan, &hw).unwrap_err().to_string(),
            "slice \"db-0\": cores: core 3 does not exist (node has 3 cores: 0-2)"
        );
    }
}
