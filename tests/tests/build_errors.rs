//! Build-time plan errors: `cargo xtask image` exits non-zero with one line naming the slice
//! and the field, and writes no image.

use microvisor_plan::image::build_header;
use microvisor_tests::build_errors::{assert_refused, write_case_file, xtask_image};
use microvisor_tests::{plan, probe_slice};

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
