//! Boot-time refusals: a plan that does not fit the discovered hardware, an image whose
//! SHA-256 does not match, or a firmware device tree the microvisor cannot use starts no slice
//! at all. The microvisor prints one `[hv] error:` line (naming the slice and the field for plan
//! errors, the reason for device trees), `[hv] halted: no slice was started`, and QEMU exits by
//! itself (firmware SYSTEM_OFF), or, when the tree is too broken to name its PSCI conduit, the
//! boot core says it stops and waits in WFI.

use microvisor_tests::{FirmwareTree, Scenario, Tamper, plan, probe_slice};

#[test]
fn more_cores_than_the_node_has() {
    Scenario::new("refuse_too_many_cores")
        .node("small")
        .plan(&plan(&[
            probe_slice("a", "1", "64MiB", ""),
            probe_slice("b", "2", "64MiB", ""),
        ]))
        .refused_at_boot(
            r#"slice "b": cores: asks for 2 cores but only 1 is left \(node has 2 cores\)"#,
        )
        .run();
}

#[test]
fn more_memory_than_the_node_has() {
    Scenario::new("refuse_too_much_memory")
        .node("small")
        .plan(&plan(&[
            probe_slice("a", "1", "256MiB", ""),
            probe_slice("big", "1", "384MiB", ""),
        ]))
        .refused_at_boot(r#"slice "big": memory: asks for 384 MiB but the largest free block is"#)
        .run();
}

#[test]
fn a_core_index_the_node_does_not_have() {
    Scenario::new("refuse_no_such_core")
        .node("small")
        .plan(&plan(&[probe_slice("a", "[0, 2]", "64MiB", "")]))
        .refused_at_boot(r#"slice "a": cores: core 2 does not exist \(node has 2 cores: 0-1\)"#)
        .run();
}

#[test]
fn the_default_plan_does_not_fit_the_small_node() {
    Scenario::new("refuse_default_plan_on_small")
        .node("small")
        .plan(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../qemu/default-plan.toml"
            ))
            .unwrap(),
        )
        .refused_at_boot(r#"slice "db": cores: core 6 does not exist"#)
        .run();
}

#[test]
fn a_corrupted_image_is_refused() {
    Scenario::new("refuse_corrupt_image")
        .plan(&plan(&[
            probe_slice("a", "1", "64MiB", ""),
            probe_slice("b", "1", "64MiB", ""),
        ]))
        .tamper(Tamper::CorruptImage { index: 0 })
        .refused_at_boot("SHA-256")
        .run();
}

#[test]
fn a_firmware_tree_without_a_gicv3() {
    Scenario::new("refuse_dtb_without_gic")
        .firmware_tree(FirmwareTree::Without("intc@8000000"))
        .plan(&plan(&[probe_slice("a", "1", "64MiB", "")]))
        .refused_at_boot(r"firmware device tree: no GICv3 \(an arm,gic-v3 node")
        .run();
}

#[test]
fn a_malformed_firmware_tree() {
    Scenario::new("refuse_dtb_malformed")
        .firmware_tree(FirmwareTree::BadPropertyName("pl061@9030000"))
        .plan(&plan(&[probe_slice("a", "1", "64MiB", "")]))
        .halted_at_boot(
            r"firmware device tree: malformed: the property at structure offset 0x[0-9a-f]+ has a name outside the strings block$",
        )
        .run();
}

#[test]
fn a_device_on_a_node_without_an_smmu() {
    let mut text = plan(&[probe_slice("web", "1", "64MiB", "")]);
    text.push_str("\n[[slice.device]]\npci = \"00:02.0\"\n");
    Scenario::new("refuse_device_without_smmu")
        .node("small")
        .plan(&text)
        .refused_at_boot(
            r#"slice "web": device 00:02.0: the node has no SMMUv3, its DMA could not be confined"#,
        )
        .run();
}
