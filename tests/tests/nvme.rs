//! NVMe queue slicing (issue 4): every slice with `[slice.nvme]` sees its own controller with a
//! namespace of exactly its planned size and min(queues, vCPUs) I/O queues on dedicated
//! hardware queue pairs; what it writes lands in its own window of the physical namespace and
//! nowhere else, survives a slice reboot and a node restart on the same disk, and holds while
//! every slice does I/O at once; nothing a probe sends to its controller reaches another
//! slice's data or memory.
//!
//! Linux slices run the disk steps of their `/init` (`microvisor.disk=...`, typed as
//! `/init disk ...`; see `xtask/src/linux/init.sh`): blocks at the start, middle and end of the
//! namespace and a multi-MiB load region, each block naming its slice, region and block number.
//! After a run the test reads the node's disk file and checks that every such block sits exactly
//! at its slice's window start + its block number, so a misplaced or leaked write fails even
//! when the guest cannot see it. Probes run their own NVMe data test (`NVME PASS`), canaries
//! (`nvme-check=1`) and attacks.
//!
//! A Linux boot takes 10-20 s under the microvisor with TCG, so each scenario checks several
//! things on one node.

use std::collections::BTreeMap;

use microvisor_plan::DiskShare;
use microvisor_tests::disk::{GUEST_BLOCK, misplaced, of_slice, scan};
use microvisor_tests::{
    Expect, Input, Pattern, Scenario, focus, focused, hv, linux_slice, lit, plan, probe_slice,
    shell_line, shell_ready, slice, with_nvme,
};

/// Physical NVMe block size of QEMU's namespace.
const BLOCK_BYTES: u64 = 512;
/// MiB each Linux slice writes at once in the concurrency check.
const LOAD_MIB: u64 = 16;

/// The Linux slices of the shapes scenario: name, cores, memory, queues, namespace size.
const LINUX: [(&str, &str, &str, u32, &str); 3] = [
    ("one", "1", "256MiB", 1, "96MiB"),
    ("two", "2", "512MiB", 4, "65540KiB"),
    ("three", "[7, 5, 6]", "384MiB", 2, "200MiB"),
];

/// The shapes plan: three Linux slices with the disk steps `disk` and a probe with the
/// canary; `probe` is the probe's extra command line.
fn shapes_plan(disk: &str, probe: &str) -> String {
    let mut slices: Vec<String> = LINUX
        .iter()
        .map(|(name, cores, memory, queues, size)| {
            let cmdline = format!("microvisor.disk={disk}");
            with_nvme(&linux_slice(name, cores, memory, &cmdline), *queues, size)
        })
        .collect();
    slices.push(with_nvme(
        &probe_slice(
            "probe",
            "1",
            "64MiB",
            &format!("cmdline = \"heartbeat=500 nvme-check=1 {probe}\""),
        ),
        1,
        "16MiB",
    ));
    plan(&slices)
}

/// A `DISK <step> <region> ok` line of `name`.
fn disk_ok(name: &str, step: &str, region: &str) -> Pattern {
    slice(name, &format!("^DISK {step} {region} ok$"))
}

/// The windows of the plan's slices that have one, by name.
fn windows(s: &Scenario) -> BTreeMap<String, DiskShare> {
    s.parsed_plan()
        .slices
        .iter()
        .zip(s.disk_shares())
        .filter_map(|(x, share)| Some((x.name.clone(), share?)))
        .collect()
}

/// The disk file after the run holds, for every Linux slice in `expected` (name, regions), the
/// blocks of those regions at exactly the right place, and no guest block anywhere else.
fn check_disk_file(s: &Scenario, expected: &[(&str, &[&str])]) {
    let path = s.disk_file(0);
    let blocks = scan(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let windows = windows(s);
    let problems = misplaced(&blocks, &windows, BLOCK_BYTES);
    assert!(
        problems.is_empty(),
        "{}: guest blocks out of place:\n{}",
        path.display(),
        problems.join("\n")
    );
    for (name, regions) in expected {
        let share = windows[*name];
        let count = share.blocks * BLOCK_BYTES / GUEST_BLOCK;
        let mut want: Vec<(&str, u64)> = Vec::new();
        for region in *regions {
            match *region {
                "first" => want.push(("first", 0)),
                "middle" => want.push(("middle", count / 2)),
                "last" => want.push(("last", count - 1)),
                "load" => {
                    let n = LOAD_MIB * (1 << 20) / GUEST_BLOCK;
                    want.extend((count / 4..count / 4 + n).map(|b| ("load", b)));
                }
                other => panic!("unknown region {other}"),
            }
        }
        want.sort_by_key(|(_, b)| *b);
        let got: Vec<(&str, u64)> = of_slice(&blocks, name).collect();
        assert!(
            got == want,
            "{}: slice {name} left {} blocks, {} expected; first difference: {:?}",
            path.display(),
            got.len(),
            want.len(),
            got.iter().zip(&want).find(|(g, w)| g != w)
        );
    }
}

#[test]
fn linux_slices_get_their_own_namespaces_and_keep_their_data() {
    // Three Linux slices of different shapes and NVMe shares (one: 1 vCPU, 1 queue, 96 MiB;
    // two: 2 vCPUs, 4 queues so 2 used, 64 MiB + 4 KiB; three: 3 vCPUs, 2 queues, 200 MiB) and
    // a probe (data test, canary) on one disk. healthy() checks each partition line against
    // the plan's windows and each SLICE-REPORT's nvme_bytes and nvme_queues.
    //
    // First boot of each Linux slice on an empty disk: its start, middle and last blocks read
    // as zeros ("empty": nothing of another slice is visible there), then are written,
    // flushed and read back; reads stop at its end and a write past it fails. Slice one is
    // rebooted (`reboot -f`) and finds its blocks again. Then all three write and read back
    // 16 MiB at the same time (each one's start comes before any one's end), while the
    // probe's canary keeps reading back. Afterwards the disk file holds every block where
    // its slice's window says, and nothing elsewhere.
    let name = "nvme_linux_shapes";
    let load = format!("/init disk load:{LOAD_MIB}");
    let mut s = Scenario::new(name)
        .inline_node(8, 2 << 30)
        .disk(1 << 30)
        .plan(&shapes_plan("verify,write,end", "nvme-verify=1 nvme-fill=1"))
        .all_healthy()
        .expect(Expect::Line {
            pattern: hv(
                r"^nvme [0-9a-f:.]+: .*namespace 1: 2097152 blocks of 512 \(1 GiB\), 64 I/O queue pairs,",
            ),
            count: 1,
        })
        .expect(Expect::Never(any_disk_failure()))
        .expect(Expect::Never(slice("probe", "^HEARTBEAT .*CORRUPT")))
        .expect(Expect::line(slice("probe", "^NVME PASS ")))
        .expect(Expect::line(slice("probe", "^NVME VERIFY CORRUPT lba=0$")))
        .expect(Expect::Never(hv("^slice (two|three|probe) (stopped|restarted)")))
        // Slice one: rebooted once its disk steps are done, then loads first.
        .input(Input::after(shell_ready("one"), &shell_line("reboot -f")))
        .input(Input::wait(hv("^slice one restarted")))
        .input(Input::wait(shell_ready("two")))
        .input(Input::wait(shell_ready("three")))
        .input(Input::after_nth(shell_ready("one"), 2, &shell_line(&load)))
        .input(Input::after(shell_ready("one"), &focus(2)))
        .input(Input::after_next(focused("two", 2), &shell_line(&load)))
        .input(Input::after(focused("two", 2), &focus(3)))
        .input(Input::after_next(focused("three", 3), &shell_line(&load)))
        .expect(Expect::Sequence(vec![
            hv("^slice one restarted: PSCI SYSTEM_RESET$"),
            disk_ok("one", "verify", "first"),
            disk_ok("one", "verify", "middle"),
            disk_ok("one", "verify", "last"),
        ]));
    for (name, ..) in LINUX {
        s = s
            .expect(Expect::Sequence(vec![
                slice(name, "^DISK info bytes=[0-9]+ blocks=[0-9]+$"),
                slice(name, "^DISK verify first empty$"),
                slice(name, "^DISK verify middle empty$"),
                slice(name, "^DISK verify last empty$"),
                disk_ok(name, "write", "first"),
                disk_ok(name, "write", "middle"),
                disk_ok(name, "write", "last"),
                slice(
                    name,
                    "^DISK end ok read-past=0 read-across=512 write-past=refused$",
                ),
                shell_ready(name),
            ]))
            .expect(Expect::line(disk_ok(name, "write", "load")));
        // Concurrency: this slice started writing before any slice finished.
        for (other, ..) in LINUX {
            s = s.expect(Expect::Sequence(vec![
                slice(name, &format!("^DISK load start {LOAD_MIB}MiB at=[0-9]+$")),
                disk_ok(other, "write", "load"),
            ]));
        }
    }
    // The probe's canary was read back while the Linux slices loaded.
    let s = s.expect(Expect::Sequence(vec![
        disk_ok("three", "write", "load"),
        slice("probe", "^HEARTBEAT [0-9]+ ok nvme-ok$"),
        slice("probe", "^HEARTBEAT [0-9]+ ok nvme-ok$"),
    ]));
    let regions: &[&str] = &["first", "middle", "last", "load"];
    let expected: Vec<(&str, &[&str])> = LINUX.iter().map(|(n, ..)| (*n, regions)).collect();
    let check = s.clone();
    s.run();
    check_disk_file(&check, &expected);

    // The node restarts on the same disk: everything is still there, for Linux and the probe.
    let verify = format!("verify,verify-load:{LOAD_MIB}");
    let mut again = Scenario::new("nvme_linux_restart")
        .inline_node(8, 2 << 30)
        .disk(1 << 30)
        .same_disk_as(name)
        .plan(&shapes_plan(&verify, "nvme-verify=1"))
        .all_healthy()
        .expect(Expect::Never(any_disk_failure()))
        .expect(Expect::line(slice("probe", "^NVME VERIFY ok ")))
        .expect(Expect::Never(slice("probe", "^HEARTBEAT .*CORRUPT")))
        .expect(Expect::Never(hv("^slice .* (stopped|restarted)")));
    for (name, ..) in LINUX {
        again = again.expect(Expect::Sequence(vec![
            disk_ok(name, "verify", "first"),
            disk_ok(name, "verify", "middle"),
            disk_ok(name, "verify", "last"),
            disk_ok(name, "verify", "load"),
            slice(name, &format!("^DISK done {}$", lit(&verify))),
        ]));
    }
    let check = again.clone();
    again.run();
    check_disk_file(&check, &expected);
}

/// Any disk step reporting a failure, or a slice without its disk.
fn any_disk_failure() -> Pattern {
    microvisor_tests::any_slice("^DISK .*FAIL")
}
