//! Booting plans: the default node with its default plan, the small node, explicit core lists
//! and uneven sizes. Each slice must report exactly its planned vCPUs and RAM.

use microvisor_tests::{Expect, Scenario, hv, plan, probe_slice};

#[test]
fn default_node_boots_its_default_plan() {
    Scenario::new("default_node")
        .node("default")
        .all_healthy()
        .expect(Expect::line(hv(r"^microvisor [^:]+: .*\b8 cores\b")))
        .expect(Expect::line(hv("^footprint: ")))
        .run();
}

#[test]
fn small_node_boots_its_default_plan() {
    Scenario::new("small_node")
        .node("small")
        .all_healthy()
        .run();
}

#[test]
fn explicit_core_lists_and_uneven_sizes() {
    // vCPU order follows the list ([2, 0]: vCPU 0 on core 2); sizes that are not 2 MiB
    // multiples still give the slice exactly what it asked for.
    Scenario::new("core_lists_uneven")
        .inline_node(4, 1 << 30)
        .plan(&plan(&[
            probe_slice("wide", "[2, 0]", "97MiB", ""),
            probe_slice("one", "[3]", "256MiB", ""),
            probe_slice("rest", "1", "130MiB", ""),
        ]))
        .all_healthy()
        .run();
}
