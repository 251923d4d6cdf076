//! Placements of `[[slice.device]]` written out by hand (not recomputed), and one test per way
//! a node refuses a request, with the whole line the operator reads. The rules are in
//! `src/devices.rs`: no SMMUv3 refuses everything; explicit `pci =` requests first, in plan
//! order; then `class =` requests in plan order, each taking the lowest free function of its
//! class; bridges and the hypervisor's shared NVMe controller are never given.

use microvisor_plan::{
    DeviceClass, Field, FunctionUse, NodePci, PciAddress, PciFunction, Plan, PlanError, Problem,
    place_devices,
};

/// QEMU virt's PCIe host bridge (GPEX).
const HOST_BRIDGE: (&str, u32, u16, u16) = ("00:00.0", 0x06_00_00, 0x1b36, 0x0008);
/// QEMU's NVMe controller (`-device nvme`).
const NVME: (u32, u16, u16) = (0x01_08_02, 0x1b36, 0x0010);
/// QEMU's modern virtio-net-pci (`disable-legacy=on`).
const VIRTIO_NET: (u32, u16, u16) = (0x02_00_00, 0x1af4, 0x1041);
/// QEMU's PCIe root port (`-device pcie-root-port`).
const ROOT_PORT: (u32, u16, u16) = (0x06_04_00, 0x1b36, 0x000c);

fn at(text: &str) -> PciAddress {
    PciAddress::parse(text).unwrap()
}

fn function(address: &str, (class, vendor, device): (u32, u16, u16)) -> PciFunction {
    PciFunction {
        address: at(address),
        class,
        vendor,
        device,
    }
}

fn host_bridge() -> PciFunction {
    let (address, class, vendor, device) = HOST_BRIDGE;
    function(address, (class, vendor, device))
}

/// qemu/default.toml as xtask described it before issue 10 (`Node::pci_functions`): the host bridge, the
/// 8 GiB NVMe disk at 00:02.0 (the hypervisor's), no SMMUv3.
fn default_node_today() -> NodePci {
    NodePci {
        functions: vec![host_bridge(), function("00:02.0", NVME)],
        smmu: false,
        hypervisor_nvme: Some(at("00:02.0")),
        isolation_groups: Vec::new(),
    }
}

/// qemu/default.toml as xtask describes it since issue 10 (`Node::pci_functions`,
/// docs/node-profiles.md): an SMMUv3, the NVMe disk at 00:02.0, and five NICs (since issue 11:
/// one for the manager), NIC i behind root port 00:(10+i).0 on bus i+1.
fn default_node_with_root_ports() -> NodePci {
    let mut functions = vec![host_bridge(), function("00:02.0", NVME)];
    for i in 0..5 {
        functions.push(function(&format!("00:{:02x}.0", 0x10 + i), ROOT_PORT));
        functions.push(function(&format!("{:02x}:00.0", i + 1), VIRTIO_NET));
    }
    NodePci {
        functions,
        smmu: true,
        hypervisor_nvme: Some(at("00:02.0")),
        isolation_groups: Vec::new(),
    }
}

/// A node with an SMMUv3 and one virtio-net-pci per slice on the root bus after the NVMe disk.
fn default_node_with_nics() -> NodePci {
    NodePci {
        functions: vec![
            host_bridge(),
            function("00:02.0", NVME),
            function("00:03.0", VIRTIO_NET),
            function("00:04.0", VIRTIO_NET),
            function("00:05.0", VIRTIO_NET),
        ],
        smmu: true,
        hypervisor_nvme: Some(at("00:02.0")),
        isolation_groups: Vec::new(),
    }
}

fn plan(toml: &str) -> Plan {
    Plan::from_toml(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

fn profile_plan(name: &str) -> Plan {
    let path = format!("{}/../../qemu/{name}", env!("CARGO_MANIFEST_DIR"));
    plan(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// A probe slice named `name` with `extra` TOML after its fields (devices, nvme).
fn slice(name: &str, extra: &str) -> String {
    format!(
        "[[slice]]\nname = \"{name}\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"probe\"\n{extra}\n"
    )
}

fn pci(address: &str) -> String {
    format!("[[slice.device]]\npci = \"{address}\"\n")
}

fn class(name: &str) -> String {
    format!("[[slice.device]]\nclass = \"{name}\"\n")
}

const NVME_SHARE: &str = "[slice.nvme]\nqueues = 1\nsize = \"64MiB\"\n";

/// The placement as address strings, per slice.
fn placed(plan: &Plan, node: &NodePci) -> Vec<Vec<String>> {
    place_devices(plan, node)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|slice| slice.iter().map(ToString::to_string).collect())
        .collect()
}

fn refused(plan: &Plan, node: &NodePci) -> PlanError {
    place_devices(plan, node).expect_err("the placement should be refused")
}

#[test]
fn default_plan_gives_each_linux_slice_two_nics() {
    // web, db (Linux): a slice-network NIC and a host-network NIC each; batch (probe): none;
    // the manager: a host-network NIC; metal (firmware): none.
    assert_eq!(
        placed(
            &profile_plan("default-plan.toml"),
            &default_node_with_root_ports()
        ),
        [
            vec!["01:00.0".to_string(), "02:00.0".to_string()],
            vec!["03:00.0".to_string(), "04:00.0".to_string()],
            vec![],
            vec!["05:00.0".to_string()],
            vec![],
        ]
    );
    assert_eq!(
        refused(&profile_plan("default-plan.toml"), &default_node_today()).problem,
        Problem::NoSmmu,
        "without the SMMUv3 the default plan does not start"
    );
    assert_eq!(
        placed(&profile_plan("small-plan.toml"), &NodePci::default()),
        [Vec::<String>::new(), Vec::new()]
    );
}

#[test]
fn default_node_today_has_no_smmu() {
    let plan = plan(&format!(
        "{}{}",
        slice("web", ""),
        slice("db", &class("net"))
    ));
    let error = refused(&plan, &default_node_today());
    assert_eq!(
        error.to_string(),
        "slice \"db\": device class net: the node has no SMMUv3, its DMA could not be confined"
    );
    assert_eq!(
        (error.field, error.problem),
        (
            Field::Device(microvisor_plan::DeviceRequest::Class(DeviceClass::Net)),
            Problem::NoSmmu
        )
    );
}

#[test]
fn no_smmu_names_the_first_request_in_plan_order() {
    let mut node = default_node_with_nics();
    node.smmu = false;
    let plan = plan(&format!(
        "{}{}",
        slice("web", &format!("{}{}", pci("00:03.0"), class("net"))),
        slice("db", &class("net"))
    ));
    assert_eq!(
        refused(&plan, &node).to_string(),
        "slice \"web\": device 00:03.0: the node has no SMMUv3, its DMA could not be confined"
    );
}

#[test]
fn one_nic_per_slice_by_class_in_plan_order() {
    let plan = plan(&format!(
        "{}{}{}",
        slice("web", &format!("{NVME_SHARE}{}", class("net"))),
        slice("db", &format!("{NVME_SHARE}{}", class("net"))),
        slice("batch", &format!("{NVME_SHARE}{}", class("net"))),
    ));
    assert_eq!(
        placed(&plan, &default_node_with_nics()),
        [["00:03.0"], ["00:04.0"], ["00:05.0"]]
    );
}

#[test]
fn explicit_addresses_are_served_before_classes() {
    let plan = plan(&format!(
        "{}{}{}",
        slice("web", &class("net")),
        slice("db", &pci("00:03.0")),
        slice("batch", &class("net")),
    ));
    assert_eq!(
        placed(&plan, &default_node_with_nics()),
        [["00:04.0"], ["00:03.0"], ["00:05.0"]]
    );
}

#[test]
fn a_slice_gets_its_devices_in_its_own_order() {
    let plan = plan(&slice(
        "web",
        &format!("{}{}{}", class("net"), pci("00:05.0"), class("net")),
    ));
    assert_eq!(
        placed(&plan, &default_node_with_nics()),
        [["00:03.0", "00:05.0", "00:04.0"]]
    );
}

#[test]
fn the_node_order_of_functions_does_not_matter() {
    let mut node = default_node_with_nics();
    node.functions.reverse();
    node.functions.push(function("00:03.0", VIRTIO_NET));
    let plan = plan(&format!(
        "{}{}",
        slice("web", &class("net")),
        slice("db", &class("net"))
    ));
    assert_eq!(placed(&plan, &node), [["00:03.0"], ["00:04.0"]]);
}

#[test]
fn class_nvme_skips_the_hypervisors_controller_while_it_is_shared() {
    let mut node = default_node_with_nics();
    node.functions.push(function("00:06.0", NVME));
    let plan = plan(&format!(
        "{}{}",
        slice("web", NVME_SHARE),
        slice("db", &class("nvme"))
    ));
    assert_eq!(placed(&plan, &node), [vec![], vec!["00:06.0".to_string()]]);
}

#[test]
fn the_hypervisors_controller_is_given_whole_when_nobody_shares_it() {
    let by_class = plan(&slice("db", &class("nvme")));
    assert_eq!(placed(&by_class, &default_node_with_nics()), [["00:02.0"]]);
    let by_address = plan(&slice("db", &pci("0000:00:02.0")));
    assert_eq!(
        placed(&by_address, &default_node_with_nics()),
        [["00:02.0"]]
    );
}

#[test]
fn a_function_the_node_does_not_have_lists_the_free_ones() {
    let plan = plan(&format!(
        "{}{}",
        slice("web", &format!("{NVME_SHARE}{}", pci("00:03.0"))),
        slice("db", &pci("00:07.0"))
    ));
    let error = refused(&plan, &default_node_with_nics());
    assert_eq!(
        error.to_string(),
        "slice \"db\": device 00:07.0: the node has no such function \
         (free: 00:04.0 net 1af4:1041, 00:05.0 net 1af4:1041)"
    );
    assert_eq!(
        error.problem,
        Problem::NoSuchFunction {
            free: vec![
                function("00:04.0", VIRTIO_NET),
                function("00:05.0", VIRTIO_NET)
            ]
        }
    );
}

#[test]
fn a_function_the_node_does_not_have_when_none_is_free() {
    let node = NodePci {
        smmu: true,
        ..default_node_today()
    };
    let plan = plan(&slice("web", &format!("{NVME_SHARE}{}", pci("00:03.0"))));
    assert_eq!(
        refused(&plan, &node).to_string(),
        "slice \"web\": device 00:03.0: the node has no such function \
         (and none left that a slice could have)"
    );
}

#[test]
fn the_host_bridge_is_refused() {
    let plan = plan(&slice("web", &pci("00:00.0")));
    let error = refused(&plan, &default_node_with_nics());
    assert_eq!(
        error.to_string(),
        "slice \"web\": device 00:00.0: is a host bridge (class 06 00 00), \
         not a function a slice can own"
    );
    assert_eq!(error.problem, Problem::Bridge { class: 0x06_00_00 });
}

#[test]
fn a_pci_to_pci_bridge_is_refused() {
    let mut node = default_node_with_nics();
    node.functions
        .push(function("00:1f.0", (0x06_04_00, 0x1b36, 0x000c)));
    let plan = plan(&slice("web", &pci("00:1f.0")));
    assert_eq!(
        refused(&plan, &node).to_string(),
        "slice \"web\": device 00:1f.0: is a PCI-to-PCI bridge (class 06 04 00), \
         not a function a slice can own"
    );
}

#[test]
fn the_shared_nvme_controller_is_refused() {
    let plan = plan(&format!(
        "{}{}",
        slice("web", NVME_SHARE),
        slice("db", &pci("00:02.0"))
    ));
    let error = refused(&plan, &default_node_with_nics());
    assert_eq!(
        error.to_string(),
        "slice \"db\": device 00:02.0: is the NVMe controller the hypervisor divides into \
         [slice.nvme] shares (slice \"web\" has one); name another function, or remove every \
         [slice.nvme] to give it whole"
    );
    assert_eq!(
        error.problem,
        Problem::HypervisorNvme {
            sharer: "web".into()
        }
    );
}

#[test]
fn an_address_asked_for_twice_is_refused_before_the_node_is_looked_at() {
    let across = format!(
        "{}{}",
        slice("web", &pci("00:03.0")),
        slice("db", &pci("00:03.0"))
    );
    let error = Plan::from_toml(&across).unwrap_err();
    assert_eq!(
        error.to_string(),
        "slice \"db\": device 00:03.0: already given to slice \"web\""
    );
    let within = slice("web", &format!("{}{}", pci("00:03.0"), pci("0000:00:03.0")));
    assert_eq!(
        Plan::from_toml(&within).unwrap_err().to_string(),
        "slice \"web\": device 00:03.0: listed twice"
    );
}

#[test]
fn no_free_function_of_a_class_says_who_has_them() {
    let plan = plan(&format!(
        "{}{}{}",
        slice("web", &format!("{}{}", class("net"), class("net"))),
        slice("db", &pci("00:05.0")),
        slice("batch", &class("net")),
    ));
    let error = refused(&plan, &default_node_with_nics());
    assert_eq!(
        error.to_string(),
        "slice \"batch\": device class net: no free net function left (00:03.0 is given to \
         slice \"web\", 00:04.0 is given to slice \"web\", 00:05.0 is given to slice \"db\")"
    );
    assert_eq!(
        error.problem,
        Problem::NoFreeFunction {
            class: DeviceClass::Net,
            uses: vec![
                (at("00:03.0"), FunctionUse::Slice("web".into())),
                (at("00:04.0"), FunctionUse::Slice("web".into())),
                (at("00:05.0"), FunctionUse::Slice("db".into())),
            ]
        }
    );
}

#[test]
fn no_free_nvme_function_when_the_hypervisor_shares_the_only_one() {
    let plan = plan(&format!(
        "{}{}",
        slice("web", NVME_SHARE),
        slice("db", &class("nvme"))
    ));
    assert_eq!(
        refused(&plan, &default_node_with_nics()).to_string(),
        "slice \"db\": device class nvme: no free nvme function left (00:02.0 is kept by the \
         hypervisor for [slice.nvme] shares)"
    );
}

#[test]
fn a_class_the_node_has_no_function_of() {
    let node = NodePci {
        functions: vec![host_bridge()],
        smmu: true,
        hypervisor_nvme: None,
        isolation_groups: Vec::new(),
    };
    let plan = plan(&slice("web", &class("nvme")));
    assert_eq!(
        refused(&plan, &node).to_string(),
        "slice \"web\": device class nvme: the node has no nvme function (class 01 08 02)"
    );
    let plan = self::plan(&slice("web", &class("net")));
    assert_eq!(
        refused(&plan, &node).to_string(),
        "slice \"web\": device class net: the node has no net function (class 02 xx xx)"
    );
}

#[test]
fn an_invalid_plan_is_refused_before_placement() {
    let empty = Plan { slices: vec![] };
    assert_eq!(
        refused(&empty, &default_node_with_nics()).problem,
        Problem::NoSlices
    );
}

/// [`default_node_with_nics`] where 00:03.0 and 00:04.0 may reach each other peer to peer
/// (one isolation group: no ACS between them), and 00:05.0 may reach the hypervisor's NVMe
/// controller.
fn node_with_groups() -> NodePci {
    NodePci {
        isolation_groups: vec![
            vec![at("00:03.0"), at("00:04.0")],
            vec![at("00:02.0"), at("00:05.0")],
        ],
        ..default_node_with_nics()
    }
}

#[test]
fn functions_of_one_isolation_group_go_to_one_slice() {
    let node = node_with_groups();
    let together = plan(&format!(
        "{}{}",
        slice("a", &format!("{}{}", pci("00:03.0"), pci("00:04.0"))),
        slice("b", "")
    ));
    assert_eq!(
        placed(&together, &node),
        [vec!["00:03.0".to_string(), "00:04.0".to_string()], vec![]]
    );
    let apart = plan(&format!(
        "{}{}",
        slice("a", &pci("00:03.0")),
        slice("b", &pci("00:04.0"))
    ));
    let error = refused(&apart, &node);
    assert_eq!(
        error.to_string(),
        "slice \"b\": device 00:04.0: can reach 00:03.0 peer to peer without passing the SMMU \
         (no ACS between them: one isolation group), and 00:03.0 is given to slice \"a\"; give \
         every function of a group to one slice"
    );
    assert!(matches!(
        error.problem,
        Problem::SharedIsolationGroup {
            used: FunctionUse::Slice(_),
            ..
        }
    ));
}

#[test]
fn a_function_in_the_hypervisors_nvme_group_is_refused_while_the_nvme_is_shared() {
    let node = node_with_groups();
    let shared = plan(&format!(
        "{}{}",
        slice("db", NVME_SHARE),
        slice("web", &pci("00:05.0"))
    ));
    assert_eq!(
        refused(&shared, &node).to_string(),
        "slice \"web\": device 00:05.0: can reach 00:02.0 peer to peer without passing the \
         SMMU (no ACS between them: one isolation group), and 00:02.0 is the hypervisor's NVMe \
         controller; give every function of a group to one slice"
    );
    // Without [slice.nvme] the controller is nobody's.
    let alone = plan(&slice("web", &pci("00:05.0")));
    assert_eq!(placed(&alone, &node), [vec!["00:05.0".to_string()]]);
}

#[test]
fn a_class_request_skips_functions_whose_group_someone_else_has() {
    let node = node_with_groups();
    // "a" has 00:03.0; "b"'s net is not 00:04.0 (a's group) but 00:05.0.
    let skip = plan(&format!(
        "{}{}",
        slice("a", &pci("00:03.0")),
        slice("b", &class("net"))
    ));
    assert_eq!(
        placed(&skip, &node),
        [vec!["00:03.0".to_string()], vec!["00:05.0".to_string()]]
    );
    // With the NVMe shared, 00:05.0 is out too: the only free one left is refused, named.
    let none = plan(&format!(
        "{}{}{}",
        slice("db", NVME_SHARE),
        slice("a", &pci("00:03.0")),
        slice("b", &class("net"))
    ));
    assert!(
        refused(&none, &node)
            .to_string()
            .starts_with("slice \"b\": device class net: can reach 00:03.0 peer to peer"),
        "{}",
        refused(&none, &node)
    );
}
