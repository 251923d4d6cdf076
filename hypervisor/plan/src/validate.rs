//! Static plan checks that need no hardware: run on the host after parsing the TOML and by the
//! hypervisor on the bundled plan. Checks run slice by slice, field by field, in plan order;
//! the first problem found is reported.

use crate::sorted_map::SortedMap;
use alloc::format;
use alloc::string::String;

use crate::devices::{DeviceRequest, PciAddress};
use crate::error::{Field, PlanError, Problem};
use crate::model::{
    BootProtocol, BuiltIn, Cores, ImageSource, MAX_DEVICES, MAX_NAME_LEN, MAX_NVME_QUEUES,
    MAX_SLICE_MEMORY, MAX_SLICES, MAX_STAGING, MAX_VCPUS, MIN_STAGING, NvmeShare, PAGE_SIZE,
    PlanOf, Role, SliceOf,
};

impl<I> PlanOf<I> {
    /// Checks everything about the plan that does not depend on the hardware: at least one
    /// slice, valid and unique names, no empty core set, no core listed twice, memory and NVMe
    /// sizes non-zero multiples of 4 KiB, NVMe queues >= 1, no NUL in command lines, at most
    /// [`MAX_DEVICES`] devices per slice, no PCI address asked for twice.
    pub fn validate(&self) -> Result<(), PlanError> {
        check_slice_count(self.slices.len())?;
        let mut names: SortedMap<&str, usize> = SortedMap::new();
        let mut core_owner: SortedMap<u32, usize> = SortedMap::new();
        let mut device_owner: SortedMap<PciAddress, usize> = SortedMap::new();
        let mut manager: Option<usize> = None;
        for (index, slice) in self.slices.iter().enumerate() {
            let at = slice_ref(index, &slice.name);
            let error = |field, problem| PlanError::slice(at.clone(), field, problem);
            check_name(&mut names, index, &slice.name).map_err(|p| error(Field::Name, p))?;
            check_cores(&mut core_owner, index, &slice.cores, |owner| {
                slice_ref(owner, &self.slices[owner].name)
            })
            .map_err(|p| error(Field::Cores, p))?;
            check_memory(slice.memory).map_err(|p| error(Field::Memory, p))?;
            check_cmdline(slice).map_err(|p| error(Field::Cmdline, p))?;
            if slice.redfish_tls.is_some() && !slice.role.is_manager() {
                return Err(error(
                    Field::RedfishCertificate,
                    Problem::RedfishWithoutManager,
                ));
            }
            let has_env = !slice.firmware_env.is_empty() || !slice.firmware_network_env.is_empty();
            if has_env && slice.boot != BootProtocol::Firmware {
                return Err(error(Field::Firmware, Problem::NotFirmware));
            }
            crate::firmware_env::check(&slice.firmware_env)
                .and_then(|()| crate::firmware_env::check(&slice.firmware_network_env))
                .map_err(|p| error(Field::FirmwareEnv, p))?;
            if slice.boot == BootProtocol::Firmware {
                if !slice.cmdline.is_empty() {
                    return Err(error(Field::Cmdline, Problem::FirmwareHasNoCmdline));
                }
                if slice.initrd.is_some() {
                    return Err(error(Field::Initrd, Problem::FirmwareHasNoInitrd));
                }
            }
            if let Role::Manager { staging } = slice.role {
                if let Some(first) = manager {
                    let first_slice = slice_ref(first, &self.slices[first].name);
                    return Err(error(Field::Role, Problem::SecondManager { first_slice }));
                }
                manager = Some(index);
                check_staging(staging).map_err(|p| error(Field::Staging, p))?;
            }
            if let Some(nvme) = &slice.nvme {
                check_nvme(nvme).map_err(|(field, p)| error(field, p))?;
                if nvme.direct && !slice.devices.is_empty() {
                    // Its functions' DMA could write the direct CQs, whose pages only the
                    // CPUs' stage 2 makes read-only (decision 5).
                    return Err(error(
                        Field::NvmeDirectQueues,
                        Problem::DirectQueuesWithDevices,
                    ));
                }
            }
            check_devices(&mut device_owner, index, &slice.devices, |owner| {
                slice_ref(owner, &self.slices[owner].name)
            })
            .map_err(|(field, p)| error(field, p))?;
        }
        Ok(())
    }
}

fn check_staging(staging: u64) -> Result<(), Problem> {
    let fits = (MIN_STAGING..=MAX_STAGING).contains(&staging) && staging.is_multiple_of(2 << 20);
    if fits {
        Ok(())
    } else {
        Err(Problem::BadStaging { value: staging })
    }
}

impl PlanOf<ImageSource> {
    /// The host-side check a compiled plan cannot make: the manager does not run the probe.
    pub fn check_manager_kernel(&self) -> Result<(), PlanError> {
        for (index, slice) in self.slices.iter().enumerate() {
            let linux = !matches!(
                slice.kernel,
                ImageSource::BuiltIn(BuiltIn::Probe | BuiltIn::Firmware)
            );
            if slice.role.is_manager() && !linux {
                let at = slice_ref(index, &slice.name);
                return Err(PlanError::slice(
                    at,
                    Field::Kernel,
                    Problem::ManagerNotLinux,
                ));
            }
        }
        Ok(())
    }
}

/// Whether `name` is a valid slice name: 1 to 32 characters from `[a-z0-9-]`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// How messages refer to slice `index` (0-based): its name when valid, else `#N` (1-based).
pub(crate) fn slice_ref(index: usize, name: &str) -> String {
    if is_valid_name(name) {
        name.into()
    } else {
        format!("#{}", index.saturating_add(1))
    }
}

fn check_slice_count(count: usize) -> Result<(), PlanError> {
    match count {
        0 => Err(PlanError::plan(Problem::NoSlices)),
        count if count > MAX_SLICES => Err(PlanError::plan(Problem::TooManySlices {
            count,
            max: MAX_SLICES,
        })),
        _ => Ok(()),
    }
}

fn check_name<'a>(
    names: &mut SortedMap<&'a str, usize>,
    index: usize,
    name: &'a str,
) -> Result<(), Problem> {
    if !is_valid_name(name) {
        return Err(Problem::BadName(name.into()));
    }
    if let Some(&first) = names.get(&name) {
        return Err(Problem::DuplicateName {
            first: first.saturating_add(1),
        });
    }
    names.insert(name, index);
    Ok(())
}

/// Checks that the slice has cores and that none of its listed cores is already taken
/// (`core_owner` maps each listed core to the slice that listed it first).
fn check_cores(
    core_owner: &mut SortedMap<u32, usize>,
    index: usize,
    cores: &Cores,
    describe: impl Fn(usize) -> String,
) -> Result<(), Problem> {
    if cores.count() == 0 {
        return Err(Problem::ZeroCores);
    }
    if cores.count() > MAX_VCPUS {
        return Err(Problem::TooManyVcpus {
            asked: cores.count(),
            max: MAX_VCPUS,
        });
    }
    if let Cores::List(list) = cores {
        for &core in list {
            if let Some(&owner) = core_owner.get(&core) {
                return Err(Problem::CoreListedTwice {
                    core,
                    first_slice: describe(owner),
                });
            }
            core_owner.insert(core, index);
        }
    }
    Ok(())
}

/// Checks the number of devices and that no address is asked for twice (`device_owner` maps
/// each address to the slice that asks for it first).
fn check_devices(
    device_owner: &mut SortedMap<PciAddress, usize>,
    index: usize,
    devices: &[DeviceRequest],
    describe: impl Fn(usize) -> String,
) -> Result<(), (Field, Problem)> {
    if devices.len() > MAX_DEVICES {
        let problem = Problem::TooManyDevices {
            asked: devices.len(),
            max: MAX_DEVICES,
        };
        return Err((Field::Devices, problem));
    }
    for request in devices {
        if let DeviceRequest::Pci(address) = *request {
            if let Some(&owner) = device_owner.get(&address) {
                let problem = Problem::DeviceListedTwice {
                    first_slice: describe(owner),
                };
                return Err((Field::Device(*request), problem));
            }
            device_owner.insert(address, index);
        }
    }
    Ok(())
}

fn check_memory(memory: u64) -> Result<(), Problem> {
    if memory == 0 {
        return Err(Problem::ZeroMemory);
    }
    if !memory.is_multiple_of(PAGE_SIZE) {
        return Err(Problem::NotPageMultiple { value: memory });
    }
    if memory > MAX_SLICE_MEMORY {
        return Err(Problem::MemoryTooLarge {
            max: MAX_SLICE_MEMORY,
        });
    }
    Ok(())
}

fn check_cmdline<I>(slice: &SliceOf<I>) -> Result<(), Problem> {
    if slice.cmdline.contains('\0') {
        return Err(Problem::CmdlineHasNul);
    }
    Ok(())
}

fn check_nvme(nvme: &NvmeShare) -> Result<(), (Field, Problem)> {
    if nvme.queues == 0 {
        return Err((Field::NvmeQueues, Problem::ZeroQueues));
    }
    if nvme.queues > MAX_NVME_QUEUES {
        return Err((
            Field::NvmeQueues,
            Problem::QueuesAboveLimit {
                max: MAX_NVME_QUEUES,
            },
        ));
    }
    if nvme.size == 0 {
        return Err((Field::NvmeSize, Problem::ZeroNvmeSize));
    }
    if !nvme.size.is_multiple_of(PAGE_SIZE) {
        return Err((
            Field::NvmeSize,
            Problem::NotPageMultiple { value: nvme.size },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CompiledPlan, OnFault};
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    fn slice(name: &str, cores: Cores) -> SliceOf<u32> {
        SliceOf {
            name: name.to_string(),
            cores,
            memory: 64 << 20,
            kernel: 0,
            initrd: None,
            cmdline: String::new(),
            on_fault: OnFault::Stop,
            nvme: None,
            devices: Vec::new(),
            role: Role::Tenant,
            boot: crate::model::BootProtocol::Linux,
            firmware_env: Vec::new(),
            firmware_network_env: Vec::new(),
            redfish_tls: None,
        }
    }

    fn plan(slices: Vec<SliceOf<u32>>) -> CompiledPlan {
        PlanOf { slices }
    }

    fn error_of(plan: &CompiledPlan) -> (Option<String>, Field, Problem) {
        let error = plan.validate().unwrap_err();
        (error.slice, error.field, error.problem)
    }

    fn at(slice: &str) -> Option<String> {
        Some(slice.into())
    }

    #[test]
    fn a_good_plan_passes() {
        let mut second = slice("db-0", Cores::List(vec![6, 7]));
        second.nvme = Some(NvmeShare {
            queues: 2,
            size: 4 << 30,
            direct: false,
        });
        assert_eq!(
            plan(vec![slice("web-0", Cores::Count(4)), second]).validate(),
            Ok(())
        );
    }

    #[test]
    fn names() {
        for good in ["a", "web-0", "0", "-", &"x".repeat(32)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "Web", "web_0", "web 0", "wéb", &"x".repeat(33)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn no_slices() {
        assert_eq!(
            error_of(&plan(vec![])),
            (None, Field::Plan, Problem::NoSlices)
        );
    }

    #[test]
    fn too_many_slices() {
        let slices = (0..=MAX_SLICES)
            .map(|i| slice(&format!("s{i}"), Cores::Count(1)))
            .collect();
        let expected = Problem::TooManySlices {
            count: MAX_SLICES + 1,
            max: MAX_SLICES,
        };
        assert_eq!(error_of(&plan(slices)), (None, Field::Plan, expected));
    }

    #[test]
    fn bad_name_is_reported_by_position() {
        let plan = plan(vec![
            slice("ok", Cores::Count(1)),
            slice("Not_ok", Cores::Count(1)),
        ]);
        assert_eq!(
            error_of(&plan),
            (at("#2"), Field::Name, Problem::BadName("Not_ok".into()))
        );
    }

    #[test]
    fn duplicate_name() {
        let plan = plan(vec![
            slice("a", Cores::Count(1)),
            slice("b", Cores::Count(1)),
            slice("a", Cores::Count(1)),
        ]);
        assert_eq!(
            error_of(&plan),
            (at("a"), Field::Name, Problem::DuplicateName { first: 1 })
        );
    }

    #[test]
    fn zero_cores_as_count_or_empty_list() {
        for cores in [Cores::Count(0), Cores::List(vec![])] {
            assert_eq!(
                error_of(&plan(vec![slice("a", cores)])),
                (at("a"), Field::Cores, Problem::ZeroCores)
            );
        }
    }

    #[test]
    fn more_vcpus_than_the_virtual_gic_holds() {
        assert_eq!(
            error_of(&plan(vec![slice("a", Cores::Count(124))])),
            (
                at("a"),
                Field::Cores,
                Problem::TooManyVcpus {
                    asked: 124,
                    max: 123
                }
            )
        );
        assert!(plan(vec![slice("a", Cores::Count(123))]).validate().is_ok());
    }

    #[test]
    fn core_listed_twice_within_a_slice() {
        let plan = plan(vec![slice("a", Cores::List(vec![1, 2, 1]))]);
        let expected = Problem::CoreListedTwice {
            core: 1,
            first_slice: "a".into(),
        };
        assert_eq!(error_of(&plan), (at("a"), Field::Cores, expected));
    }

    #[test]
    fn core_listed_twice_across_slices() {
        let plan = plan(vec![
            slice("a", Cores::List(vec![0, 3])),
            slice("b", Cores::Count(2)),
            slice("c", Cores::List(vec![3])),
        ]);
        let expected = Problem::CoreListedTwice {
            core: 3,
            first_slice: "a".into(),
        };
        assert_eq!(error_of(&plan), (at("c"), Field::Cores, expected));
        assert_eq!(
            plan.validate().unwrap_err().to_string(),
            "slice \"c\": cores: core 3 is already given to slice \"a\""
        );
    }

    #[test]
    fn zero_memory() {
        let mut s = slice("a", Cores::Count(1));
        s.memory = 0;
        assert_eq!(
            error_of(&plan(vec![s])),
            (at("a"), Field::Memory, Problem::ZeroMemory)
        );
    }

    #[test]
    fn memory_not_page_multiple() {
        let mut s = slice("a", Cores::Count(1));
        s.memory = (1 << 30) + 512;
        let expected = Problem::NotPageMultiple {
            value: (1 << 30) + 512,
        };
        assert_eq!(error_of(&plan(vec![s])), (at("a"), Field::Memory, expected));
    }

    #[test]
    fn memory_too_large() {
        let mut s = slice("a", Cores::Count(1));
        s.memory = MAX_SLICE_MEMORY + PAGE_SIZE;
        let expected = Problem::MemoryTooLarge {
            max: MAX_SLICE_MEMORY,
        };
        assert_eq!(
            error_of(&plan(vec![s.clone()])),
            (at("a"), Field::Memory, expected)
        );
        s.memory = MAX_SLICE_MEMORY;
        assert_eq!(plan(vec![s]).validate(), Ok(()));
    }

    #[test]
    fn cmdline_with_nul() {
        let mut s = slice("a", Cores::Count(1));
        s.cmdline = "console=ttyAMA0\0evil".into();
        assert_eq!(
            error_of(&plan(vec![s])),
            (at("a"), Field::Cmdline, Problem::CmdlineHasNul)
        );
    }

    #[test]
    fn zero_queues() {
        let mut s = slice("a", Cores::Count(1));
        s.nvme = Some(NvmeShare {
            queues: 0,
            size: 1 << 30,
            direct: false,
        });
        assert_eq!(
            error_of(&plan(vec![s])),
            (at("a"), Field::NvmeQueues, Problem::ZeroQueues)
        );
    }

    #[test]
    fn too_many_queues() {
        let mut s = slice("a", Cores::Count(1));
        s.nvme = Some(NvmeShare {
            queues: MAX_NVME_QUEUES + 1,
            size: 1 << 30,
            direct: false,
        });
        assert_eq!(
            error_of(&plan(vec![s.clone()])),
            (
                at("a"),
                Field::NvmeQueues,
                Problem::QueuesAboveLimit {
                    max: MAX_NVME_QUEUES
                }
            )
        );
        s.nvme = Some(NvmeShare {
            queues: MAX_NVME_QUEUES,
            size: 1 << 30,
            direct: false,
        });
        assert_eq!(plan(vec![s]).validate(), Ok(()));
    }

    #[test]
    fn zero_nvme_size() {
        let mut s = slice("a", Cores::Count(1));
        s.nvme = Some(NvmeShare {
            queues: 1,
            size: 0,
            direct: false,
        });
        assert_eq!(
            error_of(&plan(vec![s])),
            (at("a"), Field::NvmeSize, Problem::ZeroNvmeSize)
        );
    }

    #[test]
    fn nvme_size_not_page_multiple() {
        let mut s = slice("a", Cores::Count(1));
        s.nvme = Some(NvmeShare {
            queues: 1,
            size: 1000,
            direct: false,
        });
        let expected = Problem::NotPageMultiple { value: 1000 };
        assert_eq!(
            error_of(&plan(vec![s])),
            (at("a"), Field::NvmeSize, expected)
        );
    }

    fn with_devices(mut s: SliceOf<u32>, devices: &[DeviceRequest]) -> SliceOf<u32> {
        s.devices = devices.to_vec();
        s
    }

    fn pci(device: u8) -> DeviceRequest {
        DeviceRequest::Pci(PciAddress::new(0, device, 0).unwrap())
    }

    #[test]
    fn too_many_devices() {
        let net = DeviceRequest::Class(crate::devices::DeviceClass::Net);
        let s = with_devices(slice("a", Cores::Count(1)), &[net; MAX_DEVICES + 1]);
        let expected = Problem::TooManyDevices {
            asked: MAX_DEVICES + 1,
            max: MAX_DEVICES,
        };
        assert_eq!(
            error_of(&plan(vec![s])),
            (at("a"), Field::Devices, expected)
        );
        let most = with_devices(slice("a", Cores::Count(1)), &[net; MAX_DEVICES]);
        assert_eq!(plan(vec![most]).validate(), Ok(()));
    }

    #[test]
    fn device_listed_twice_within_a_slice() {
        let s = with_devices(slice("a", Cores::Count(1)), &[pci(3), pci(4), pci(3)]);
        let expected = Problem::DeviceListedTwice {
            first_slice: "a".into(),
        };
        assert_eq!(
            error_of(&plan(vec![s])),
            (at("a"), Field::Device(pci(3)), expected)
        );
    }

    #[test]
    fn device_listed_twice_across_slices() {
        let net = DeviceRequest::Class(crate::devices::DeviceClass::Net);
        let plan = plan(vec![
            with_devices(slice("a", Cores::Count(1)), &[pci(4), net]),
            with_devices(slice("b", Cores::Count(1)), &[net, pci(5)]),
            with_devices(slice("c", Cores::Count(1)), &[pci(5)]),
        ]);
        let expected = Problem::DeviceListedTwice {
            first_slice: "b".into(),
        };
        assert_eq!(error_of(&plan), (at("c"), Field::Device(pci(5)), expected));
    }

    #[test]
    fn first_problem_in_plan_order_wins() {
        let mut first = slice("a", Cores::Count(1));
        first.memory = 0;
        let second = slice("b", Cores::Count(0));
        assert_eq!(error_of(&plan(vec![first, second])).1, Field::Memory);
    }
}
