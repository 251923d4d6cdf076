//! Build-time plan errors: `cargo xtask image` exits non-zero with one line naming the slice
//! and the field, and writes no image.

use microvisor_plan::image::build_header;
use microvisor_tests::build_errors::{
    assert_refused, assert_refused_on_node, assert_run_refused_on_node, write_case_file,
    xtask_image, xtask_plan,
};
use microvisor_tests::{plan, probe_slice, with_device, with_nvme};

#[test]
fn unknown_field() {
    let text = probe_slice("a", "1", "64MiB", "colour = \"blue\"");
    assert_refused(
        "unknown_field",
        &text,
        &[r#"slice "a""#, "colour", "unknown field"],
    );
}

#[test]
fn duplicate_names() {
    let text = plan(&[
        probe_slice("web", "1", "64MiB", ""),
        probe_slice("web", "1", "64MiB", ""),
    ]);
    assert_refused(
        "duplicate_names",
        &text,
        &[r#"slice "web""#, "name", "already used"],
    );
}

#[test]
fn core_listed_twice() {
    let text = plan(&[
        probe_slice("a", "[0, 1]", "64MiB", ""),
        probe_slice("b", "[1]", "64MiB", ""),
    ]);
    assert_refused(
        "core_listed_twice",
        &text,
        &[r#"slice "b""#, "cores", "core 1"],
    );
}

#[test]
fn zero_cores() {
    assert_refused(
        "zero_cores",
        &probe_slice("a", "0", "64MiB", ""),
        &[r#"slice "a""#, "cores", "at least 1 core"],
    );
    assert_refused(
        "empty_core_list",
        &probe_slice("a", "[]", "64MiB", ""),
        &[r#"slice "a""#, "cores"],
    );
}

#[test]
fn zero_memory() {
    assert_refused(
        "zero_memory",
        &probe_slice("a", "1", "0", ""),
        &[r#"slice "a""#, "memory", "more than 0"],
    );
}

#[test]
fn malformed_size() {
    assert_refused(
        "malformed_size",
        &probe_slice("a", "1", "64 parsecs", ""),
        &[r#"slice "a""#, "memory", "parsecs"],
    );
    assert_refused(
        "fractional_size",
        &probe_slice("a", "1", "1.5GiB", ""),
        &[r#"slice "a""#, "memory"],
    );
}

#[test]
fn missing_image_file() {
    let text =
        "[[slice]]\nname = \"a\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"no-such-kernel.img\"\n";
    assert_refused(
        "missing_image",
        text,
        &[r#"slice "a""#, "kernel", "no-such-kernel.img", "not found"],
    );
}

#[test]
fn image_too_large_for_its_slice() {
    // A kernel whose header claims 96 MiB in a 64 MiB slice.
    let mut image = build_header(0, 96 << 20, 2).to_vec();
    image.resize(4096, 0);
    write_case_file("huge.img", &image);
    let text =
        "[[slice]]\nname = \"small\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"huge.img\"\n";
    assert_refused(
        "image_too_large",
        text,
        &[r#"slice "small""#, "kernel", "needs 96 MiB", "at least"],
    );
    // The probe itself does not fit in 2 MiB (its footprint plus the 2 MiB device tree).
    assert_refused(
        "probe_too_large",
        &probe_slice("tiny", "1", "2MiB", ""),
        &[r#"slice "tiny""#, "kernel", "at least"],
    );
}

#[test]
fn a_valid_plan_is_accepted() {
    // The same command succeeds on a good plan, so the refusals above are about the plans.
    let run = xtask_image("valid", &probe_slice("a", "1", "64MiB", ""));
    assert!(run.success, "{}\n{}", run.command, run.stderr);
    assert!(run.out.is_file());
    assert!(run.stdout.contains("image probe:"), "{}", run.stdout);
}

#[test]
fn bad_nvme_shares() {
    let nvme = |table: &str| {
        format!(
            "{}\n[slice.nvme]\n{table}\n",
            probe_slice("a", "1", "64MiB", "").trim_end()
        )
    };
    assert_refused(
        "nvme_zero_queues",
        &nvme("queues = 0\nsize = \"16MiB\""),
        &[r#"slice "a""#, "nvme.queues", "at least 1 queue"],
    );
    assert_refused(
        "nvme_zero_size",
        &nvme("queues = 1\nsize = 0"),
        &[r#"slice "a""#, "nvme.size", "more than 0"],
    );
    assert_refused(
        "nvme_size_not_4k",
        &nvme("queues = 1\nsize = 5000"),
        &[r#"slice "a""#, "nvme.size", "not a multiple of 4 KiB"],
    );
    assert_refused(
        "nvme_malformed_size",
        &nvme("queues = 1\nsize = \"16 furlongs\""),
        &[r#"slice "a""#, "nvme.size", "furlongs"],
    );
    assert_refused(
        "nvme_unknown_field",
        &nvme("queues = 1\nsize = \"16MiB\"\nnamespace = 2"),
        &[r#"slice "a""#, "namespace", "unknown field"],
    );
    assert_refused(
        "nvme_missing_size",
        &nvme("queues = 1"),
        &[r#"slice "a""#, "size"],
    );
}

/// A probe slice `name` asking for the devices of `lines` (`pci = "00:03.0"`, `class = "net"`).
fn with_devices(name: &str, lines: &[&str]) -> String {
    lines
        .iter()
        .fold(probe_slice(name, "1", "64MiB", ""), |slice, line| {
            with_device(&slice, line)
        })
}

#[test]
fn bad_device_tables() {
    assert_refused(
        "device_without_pci_or_class",
        &with_device(&probe_slice("a", "1", "64MiB", ""), ""),
        &[r#"slice "a""#, "device #1", "needs pci"],
    );
    assert_refused(
        "device_with_pci_and_class",
        &with_device(
            &probe_slice("a", "1", "64MiB", ""),
            "pci = \"00:03.0\"\nclass = \"net\"",
        ),
        &[r#"slice "a""#, "device #1", "both pci and class"],
    );
    assert_refused(
        "device_unknown_class",
        &with_devices("a", &["class = \"net\"", "class = \"gpu\""]),
        &[
            r#"slice "a""#,
            "device #2: class",
            "\"gpu\" is not a device class",
        ],
    );
    assert_refused(
        "device_bad_address",
        &with_devices("a", &["pci = \"00:3.0\""]),
        &[
            r#"slice "a""#,
            "device #1: pci",
            "\"00:3.0\" is not a PCI address",
        ],
    );
    assert_refused(
        "device_unknown_field",
        &with_devices("a", &["pci = \"00:03.0\"\nbar = 0"]),
        &[r#"slice "a""#, "device #1: bar: unknown field"],
    );
}

#[test]
fn device_asked_for_twice() {
    let text = plan(&[
        with_devices("web", &["pci = \"00:03.0\""]),
        with_devices("db", &["class = \"net\"", "pci = \"0000:00:03.0\""]),
    ]);
    assert_refused(
        "device_asked_for_twice",
        &text,
        &[r#"slice "db": device 00:03.0: already given to slice "web""#],
    );
}

/// A node profile like the default one, with an SMMUv3 and `disks` NVMe disks of 1 GiB.
fn smmu_node(disks: usize) -> String {
    let mut text = String::from(
        "description = \"test node with an SMMUv3\"\ncores = 4\nmemory = \"1GiB\"\n\
         iommu = \"smmuv3\"\n",
    );
    for _ in 0..disks {
        text.push_str("[[disk]]\nsize = \"1GiB\"\n");
    }
    text
}

#[test]
fn a_node_without_an_smmu_refuses_every_device() {
    // The small node has no SMMUv3 (the default one has had one since issue 10).
    assert_refused_on_node(
        "device_without_smmu",
        &plan(&[
            probe_slice("web", "1", "64MiB", ""),
            with_devices("db", &["class = \"net\""]),
        ]),
        "small",
        &[r#"slice "db": device class net: the node has no SMMUv3, its DMA could not be confined"#],
    );
}

#[test]
fn functions_the_node_cannot_give() {
    assert_refused_on_node(
        "device_not_on_the_node",
        &with_devices("web", &["pci = \"00:07.0\""]),
        &smmu_node(2),
        &[
            r#"slice "web": device 00:07.0: the node has no such function (free: 00:02.0 nvme"#,
            "00:03.0 nvme 1b36:0010)",
        ],
    );
    assert_refused_on_node(
        "device_host_bridge",
        &with_devices("web", &["pci = \"00:00.0\""]),
        &smmu_node(1),
        &[r#"slice "web": device 00:00.0: is a host bridge (class 06 00 00)"#],
    );
    // The root port in front of the default node's NIC 0 (00:10.0): a bridge forwards other
    // functions' traffic, so it is no function to give.
    assert_refused_on_node(
        "device_root_port",
        &with_devices("web", &["pci = \"00:10.0\""]),
        "default",
        &[r#"slice "web": device 00:10.0: is a PCI-to-PCI bridge (class 06 04 00)"#],
    );
    // The same NIC twice in one slice.
    assert_refused_on_node(
        "device_twice_in_one_slice",
        &with_devices("web", &["pci = \"01:00.0\"", "pci = \"01:00.0\""]),
        "default",
        &[r#"slice "web": device 01:00.0: listed twice"#],
    );
    assert_refused_on_node(
        "device_shared_nvme",
        &plan(&[
            with_nvme(&probe_slice("web", "1", "64MiB", ""), 1, "16MiB"),
            with_devices("db", &["pci = \"00:02.0\""]),
        ]),
        &smmu_node(1),
        &[
            r#"slice "db": device 00:02.0: is the NVMe controller the hypervisor divides"#,
            r#"(slice "web" has one)"#,
        ],
    );
    assert_refused_on_node(
        "device_no_free_function",
        &plan(&[
            with_devices("web", &["class = \"nvme\""]),
            with_devices("db", &["class = \"nvme\""]),
        ]),
        &smmu_node(1),
        &[
            r#"slice "db": device class nvme: no free nvme function left"#,
            r#"00:02.0 is given to slice "web""#,
        ],
    );
    assert_refused_on_node(
        "device_no_function_of_the_class",
        &with_devices("web", &["class = \"net\""]),
        &smmu_node(1),
        &[r#"slice "web": device class net: the node has no net function (class 02 xx xx)"#],
    );
}

#[test]
fn run_refuses_before_qemu_starts() {
    assert_run_refused_on_node(
        "device_run_refused",
        &with_devices("web", &["class = \"net\""]),
        "small",
        &[r#"slice "web": device class net: the node has no SMMUv3"#],
    );
}

#[test]
fn plan_shows_where_each_function_goes() {
    // The same command succeeds on a plan the node can serve, so the refusals above are about
    // the plans.
    let text = plan(&[
        with_nvme(&with_devices("web", &["class = \"nvme\""]), 1, "16MiB"),
        with_devices("db", &["pci = \"00:04.0\""]),
    ]);
    let run = xtask_plan("device_placed", &text, &smmu_node(3));
    assert!(run.success, "{}\n{}", run.command, run.stderr);
    assert!(
        run.stdout.contains(
            "slice  device           gets\n\
             web    class = \"nvme\"   00:03.0 nvme 1b36:0010\n\
             db     pci = \"00:04.0\"  00:04.0 nvme 1b36:0010\n"
        ),
        "{}",
        run.stdout
    );
}
