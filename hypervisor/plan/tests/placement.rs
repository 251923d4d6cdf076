//! Placements written out by hand, so a bug in `place` or `place_disk` cannot hide behind
//! tests that recompute their expectations with the same functions (as `tests/` does for its
//! QEMU scenarios). Each value follows from docs/decisions/0002-top-down-placement.md and the
//! rules in `place.rs`: explicit core lists first, then counts take the lowest free cores;
//! RAM top-down in plan order, each slice in the highest free range that holds its memory
//! rounded up to 2 MiB, at the highest 2 MiB-aligned base; NVMe windows consecutive from
//! block 0, each starting on a 1 MiB boundary, queue pairs numbered from 1 in plan order.

use microvisor_plan::{
    DiskShare, Field, Hardware, Placement, Plan, PlanError, Problem, RamRange, format_cores,
    parse_size, place, place_disk,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A free range from `base` to `end`.
fn free(base: u64, end: u64) -> RamRange {
    RamRange {
        base,
        size: end - base,
    }
}

/// A node with `memory` bytes of RAM at 0x4000_0000 as the hypervisor sees it when QEMU
/// `-kernel` starts it (at least 256 MiB of RAM): taken are the hypervisor at 0x4020_0000 with
/// its bundle and working memory (within 62 MiB, as `xtask`'s node model assumes) and QEMU's
/// device tree (1 MiB at RAM + 128 MiB); the rest is free. Top-down placement reaches the
/// holes only when the top is full.
fn kernel_boot(cores: u32, memory: u64) -> Hardware {
    Hardware {
        cores,
        free_ram: vec![
            free(0x4000_0000, 0x4020_0000),
            free(0x4400_0000, 0x4800_0000),
            free(0x4810_0000, 0x4000_0000 + memory),
        ],
        ram_total: memory,
    }
}

/// qemu/default.toml: 8 cores, 4 GiB, one 8 GiB NVMe disk.
fn default_node() -> Hardware {
    kernel_boot(8, 4 * GIB)
}

/// qemu/small.toml: 2 cores, 512 MiB.
fn small_node() -> Hardware {
    kernel_boot(2, 512 * MIB)
}

fn plan(toml: &str) -> Plan {
    Plan::from_toml(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

fn profile_plan(name: &str) -> Plan {
    let path = format!("{}/../../qemu/{name}", env!("CARGO_MANIFEST_DIR"));
    plan(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// (cores, RAM base, RAM end) of each slice.
fn summary(placement: &Placement) -> Vec<(Vec<u32>, u64, u64)> {
    placement
        .slices
        .iter()
        .map(|s| (s.cores.clone(), s.ram.base, s.ram.end()))
        .collect()
}

fn share(first_block: u64, blocks: u64, first_queue: u16, queues: u16) -> Option<DiskShare> {
    Some(DiskShare {
        first_block,
        blocks,
        first_queue,
        queues,
    })
}

fn problem(result: Result<Placement, PlanError>) -> (Option<String>, Field, Problem) {
    let e = result.unwrap_err();
    (e.slice, e.field, e.problem)
}

#[test]
fn the_profiles_are_the_nodes_these_tests_assume() {
    for (name, cores, memory, disks) in [
        ("default.toml", 8, 4 * GIB, vec![8 * GIB]),
        ("small.toml", 2, 512 * MIB, vec![]),
    ] {
        let path = format!("{}/../../qemu/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["cores"].as_integer(), Some(cores), "{name}");
        let size = |v: &toml::Value| parse_size(v.as_str().unwrap()).unwrap();
        assert_eq!(size(&table["memory"]), memory, "{name}");
        let found: Vec<u64> = table
            .get("disk")
            .and_then(|d| d.as_array())
            .map(|a| a.iter().map(|d| size(&d["size"])).collect())
            .unwrap_or_default();
        assert_eq!(found, disks, "{name}");
    }
}

#[test]
fn default_plan_on_the_default_node() {
    // db lists cores 6-7; then web takes 0-1, batch 2-3, the manager 4 and metal 5. RAM ends
    // at 0x1_4000_0000: web's 1 GiB right below it, db's 768 MiB below web, batch's 512 MiB
    // below db, the manager's 384 MiB below batch, metal's 384 MiB below the manager and the
    // manager's 128 MiB staging pool below metal.
    let plan = profile_plan("default-plan.toml");
    let names: Vec<&str> = plan.slices.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "db", "batch", "manager", "metal"]);
    let placed = place(&plan, &default_node()).unwrap();
    assert_eq!(
        summary(&placed),
        [
            (vec![0, 1], 0x1_0000_0000, 0x1_4000_0000),
            (vec![6, 7], 0xd000_0000, 0x1_0000_0000),
            (vec![2, 3], 0xb000_0000, 0xd000_0000),
            (vec![4], 0x9800_0000, 0xb000_0000),
            (vec![5], 0x8000_0000, 0x9800_0000),
        ]
    );
    let staging = placed.staging.unwrap();
    assert_eq!((staging.base, staging.end()), (0x7800_0000, 0x8000_0000));
    let cores: Vec<String> = placed
        .slices
        .iter()
        .map(|s| format_cores(&s.cores))
        .collect();
    assert_eq!(cores, ["0-1", "6-7", "2-3", "4", "5"]);
}

#[test]
fn default_plan_on_the_default_disk() {
    // 8 GiB of 512-byte blocks, 64 queue pairs: web 4 GiB from block 0 on queues 1-3, db 3 GiB
    // from 4 GiB on queues 4-5, batch 512 MiB from 7 GiB on queue 6, metal the last 512 MiB on
    // queue 7; the manager has none.
    let plan = profile_plan("default-plan.toml");
    let shares = place_disk(&plan, 8 * GIB / 512, 9, 64).unwrap();
    assert_eq!(
        shares,
        [
            share(0, 8_388_608, 1, 3),
            share(8_388_608, 6_291_456, 4, 2),
            share(14_680_064, 1_048_576, 6, 1),
            None,
            share(15_728_640, 1_048_576, 7, 1),
        ]
    );
}

#[test]
fn a_loader_that_keeps_the_top_of_ram_shifts_every_slice_down() {
    // U-Boot keeps itself and its device tree at the top: free RAM ends at 0x1_3f7f_f000,
    // not on a 2 MiB boundary. web (1 GiB) goes on the highest 1 GiB boundary below that
    // (0xc000_0000), db (768 MiB) into the room above it (aligned down to 2 MiB), the rest
    // below web.
    let mut hw = default_node();
    hw.free_ram[2] = free(0x4810_0000, 0x1_3f7f_f000);
    let placed = place(&profile_plan("default-plan.toml"), &hw).unwrap();
    assert_eq!(
        summary(&placed),
        [
            (vec![0, 1], 0xc000_0000, 0x1_0000_0000),
            (vec![6, 7], 0x1_0f60_0000, 0x1_3f60_0000),
            (vec![2, 3], 0xa000_0000, 0xc000_0000),
            (vec![4], 0x8800_0000, 0xa000_0000),
            (vec![5], 0x7000_0000, 0x8800_0000),
        ]
    );
}

#[test]
fn small_plan_on_the_small_node() {
    // right lists core 1, left takes core 0; RAM ends at 0x6000_0000.
    let placed = place(&profile_plan("small-plan.toml"), &small_node()).unwrap();
    assert_eq!(
        summary(&placed),
        [
            (vec![0], 0x5800_0000, 0x6000_0000),
            (vec![1], 0x5400_0000, 0x5800_0000),
        ]
    );
}

/// Two slices that fill the small node's RAM above QEMU's device tree.
const EXACT: &str = r#"
[[slice]]
name = "a"
cores = 1
memory = "256MiB"
kernel = "probe"
[[slice]]
name = "b"
cores = 1
memory = "126MiB"
kernel = "probe"
"#;

#[test]
fn the_small_node_filled_exactly() {
    // Above the device tree, [0x4810_0000, 0x6000_0000) holds 382 MiB from the first 2 MiB
    // boundary (0x4820_0000): 256 MiB + 126 MiB fill it exactly.
    let placed = place(&plan(EXACT), &small_node()).unwrap();
    assert_eq!(
        summary(&placed),
        [
            (vec![0], 0x5000_0000, 0x6000_0000),
            (vec![1], 0x4820_0000, 0x5000_0000),
        ]
    );
    // One page more needs a 128 MiB block; the largest left is those 126 MiB (below the
    // device tree there are 64 MiB and 2 MiB).
    let over = plan(&EXACT.replace("126MiB", "129028KiB"));
    assert_eq!(
        problem(place(&over, &small_node())),
        (
            Some("b".into()),
            Field::Memory,
            Problem::NotEnoughMemory {
                asked: 126 * MIB + 4096,
                largest_free: 126 * MIB,
                ram_on_node: 512 * MIB,
            }
        )
    );
}

#[test]
fn a_slice_that_does_not_fit_above_a_reserved_range_goes_below_it() {
    // a takes the top 350 MiB (from 0x4a20_0000); the 33 MiB left above QEMU's device tree
    // (32 MiB from a 2 MiB boundary) cannot hold b's 50 MiB, so b goes to the highest range
    // below the tree, [0x4400_0000, 0x4800_0000), at 0x4800_0000 - 50 MiB.
    let p = plan(
        r#"
[[slice]]
name = "a"
cores = 1
memory = "350MiB"
kernel = "probe"
[[slice]]
name = "b"
cores = 1
memory = "50MiB"
kernel = "probe"
"#,
    );
    let placed = place(&p, &small_node()).unwrap();
    assert_eq!(
        summary(&placed),
        [
            (vec![0], 0x4a20_0000, 0x6000_0000),
            (vec![1], 0x44e0_0000, 0x4800_0000),
        ]
    );
}

#[test]
fn explicit_core_lists_on_the_default_node() {
    // Lists first (x: 6 then 2, in vCPU order; z: 0), then counts in plan order from the
    // lowest free core: y 1, 3, 4; w 5, 7. RAM 64 MiB each, top-down in plan order.
    let p = plan(
        r#"
[[slice]]
name = "x"
cores = [6, 2]
memory = "64MiB"
kernel = "probe"
[[slice]]
name = "y"
cores = 3
memory = "64MiB"
kernel = "probe"
[[slice]]
name = "z"
cores = [0]
memory = "64MiB"
kernel = "probe"
[[slice]]
name = "w"
cores = 2
memory = "64MiB"
kernel = "probe"
"#,
    );
    let placed = place(&p, &default_node()).unwrap();
    assert_eq!(
        summary(&placed),
        [
            (vec![6, 2], 0x1_3c00_0000, 0x1_4000_0000),
            (vec![1, 3, 4], 0x1_3800_0000, 0x1_3c00_0000),
            (vec![0], 0x1_3400_0000, 0x1_3800_0000),
            (vec![5, 7], 0x1_3000_0000, 0x1_3400_0000),
        ]
    );
    let cores: Vec<String> = placed
        .slices
        .iter()
        .map(|s| format_cores(&s.cores))
        .collect();
    assert_eq!(cores, ["6,2", "1,3-4", "0", "5,7"]);
}

#[test]
fn sizes_that_are_not_2_mib_multiples() {
    // The plan of the core_lists_uneven scenario on its 4-core 1 GiB node: 97 MiB takes a
    // 98 MiB block at 0x8000_0000 - 98 MiB and ends 1 MiB below it; 256 MiB and 130 MiB
    // follow below that block.
    let p = plan(
        r#"
[[slice]]
name = "wide"
cores = [2, 0]
memory = "97MiB"
kernel = "probe"
[[slice]]
name = "one"
cores = [3]
memory = "256MiB"
kernel = "probe"
[[slice]]
name = "rest"
cores = 1
memory = "130MiB"
kernel = "probe"
"#,
    );
    let placed = place(&p, &kernel_boot(4, GIB)).unwrap();
    assert_eq!(
        summary(&placed),
        [
            (vec![2, 0], 0x79e0_0000, 0x7ff0_0000),
            (vec![3], 0x69e0_0000, 0x79e0_0000),
            (vec![1], 0x61c0_0000, 0x69e0_0000),
        ]
    );
}

#[test]
fn nvme_windows_start_on_mib_boundaries() {
    // The NVMe shapes scenario on a 1 GiB disk: one 96 MiB from block 0 (queue 1); two
    // 64 MiB + 4 KiB (131080 blocks) from 96 MiB (queues 2-5); three 200 MiB from the first
    // MiB boundary after 160 MiB + 4 KiB, 161 MiB (queues 6-7); the probe 16 MiB from 361 MiB
    // (queue 8).
    let p = plan(
        r#"
[[slice]]
name = "one"
cores = 1
memory = "256MiB"
kernel = "linux"
[slice.nvme]
queues = 1
size = "96MiB"
[[slice]]
name = "two"
cores = 2
memory = "512MiB"
kernel = "linux"
[slice.nvme]
queues = 4
size = "65540KiB"
[[slice]]
name = "nodisk"
cores = 1
memory = "64MiB"
kernel = "probe"
[[slice]]
name = "three"
cores = [7, 5, 6]
memory = "384MiB"
kernel = "linux"
[slice.nvme]
queues = 2
size = "200MiB"
[[slice]]
name = "probe"
cores = 1
memory = "64MiB"
kernel = "probe"
[slice.nvme]
queues = 1
size = "16MiB"
"#,
    );
    let shares = place_disk(&p, GIB / 512, 9, 64).unwrap();
    assert_eq!(
        shares,
        [
            share(0, 196_608, 1, 1),
            share(196_608, 131_080, 2, 4),
            None,
            share(329_728, 409_600, 6, 2),
            share(739_328, 32_768, 8, 1),
        ]
    );
    // With 4 KiB blocks the same windows are 8 times fewer blocks.
    let shares = place_disk(&p, GIB / 4096, 12, 64).unwrap();
    assert_eq!(shares[1], share(24_576, 16_385, 2, 4));
    assert_eq!(shares[4], share(92_416, 4_096, 8, 1));
}
