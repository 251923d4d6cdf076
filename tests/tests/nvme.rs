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
    Expect, Input, Pattern, Scenario, hv, linux_slice, lit, plan, probe_canary, probe_slice,
    shell_line, shell_ready, slice, with_direct_queues, with_nvme,
};

/// Physical NVMe block size of QEMU's namespace.
const BLOCK_BYTES: u64 = 512;
/// MiB each Linux slice writes at once in the concurrency check.
const LOAD_MIB: u64 = 16;

/// The Linux slices of the shapes scenario: name, cores, memory, queues, namespace size,
/// `nvme.direct-queues`.
const LINUX: [(&str, &str, &str, u32, &str, bool); 3] = [
    ("one", "1", "256MiB", 1, "96MiB", true),
    ("two", "2", "512MiB", 4, "65540KiB", true),
    ("three", "[7, 5, 6]", "384MiB", 2, "200MiB", false),
];

/// The shapes plan: three Linux slices with the disk steps `disk` (slice one also with
/// `one_extra` on its command line) and a probe with the canary and `probe` on its command line.
fn shapes_plan(disk: &str, one_extra: &str, probe: &str) -> String {
    let mut slices: Vec<String> = LINUX
        .iter()
        .map(|(name, cores, memory, queues, size, direct)| {
            let mut cmdline = format!("microvisor.disk={disk}");
            if *name == "one" && !one_extra.is_empty() {
                cmdline = format!("{cmdline} {one_extra}");
            }
            let slice = with_nvme(&linux_slice(name, cores, memory, &cmdline), *queues, size);
            if *direct {
                with_direct_queues(&slice)
            } else {
                slice
            }
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

/// The line of a hardware queue of `name` made direct (its CQ the slice's).
fn direct_queue(name: &str) -> Pattern {
    hv(&format!(
        r"^nvme: slice {name} hardware queue [0-9]+ completes into its CQ at 0x[0-9a-f]+ \(direct\)$"
    ))
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
    // the plan's windows and each SLICE-REPORT's nvme_bytes and nvme_queues. Slices one and
    // two ask for direct queues (`nvme.direct-queues`, decision 5: the controller writes
    // their CQs itself), three and the probe stay mediated; one's reboot moves its pairs
    // back and makes them direct again.
    //
    // First boot of each Linux slice on an empty disk: its start, middle and last blocks read
    // as zeros ("empty": nothing of another slice is visible there), then are written,
    // flushed and read back; reads stop at its end and a write past it fails. At 70 s of
    // uptime (well after the slowest of them finished those steps on a loaded 2-core host,
    // where one took up to 40 s) all three write and read back 16 MiB at the same time (each one's start comes
    // before any one's end) while the probe's canary keeps reading back. Slice one then
    // reboots (microvisor.action) and finds its blocks again; the probe resets itself
    // (reset-after) and finds what it filled. Afterwards the disk file holds every block
    // where its slice's window says, and nothing elsewhere. Then the node restarts on the same
    // disk and every slice finds all its data again.
    //
    // Nothing is typed: the steps run from the command line (typing into slice one's shell
    // right after its banner was lost in 2 of 3 runs: no echo, nothing ran).
    let name = "nvme_linux_shapes";
    let steps = format!("verify,write,end,at:70,load:{LOAD_MIB}");
    // Guest time is what the steps wait for; the generous wall-clock limit only keeps a
    // loaded CI host (other QEMU runs on 2 cores) from failing a run that is merely slow.
    let mut s = Scenario::new(name)
        .timeout(std::time::Duration::from_secs(540))
        .inline_node(8, 2 << 30)
        .disk(1 << 30)
        .plan(&shapes_plan(
            &steps,
            "microvisor.action=reboot-after:130",
            "nvme-verify=1 nvme-fill=1 reset-after=40",
        ))
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
        .expect(Expect::Sequence(vec![
            slice("probe", "^NVME VERIFY CORRUPT lba=0$"),
            hv("^slice probe restarted: PSCI SYSTEM_RESET$"),
            slice("probe", "^NVME VERIFY ok 2048 blocks$"),
        ]))
        .expect(Expect::Never(hv("^slice .* stopped")))
        .expect(Expect::Never(hv("^slice (two|three) restarted")))
        // Direct queues where the plan asks, made again after one's reboot; never elsewhere.
        .expect(Expect::Sequence(vec![
            direct_queue("one"),
            hv("^slice one restarted: PSCI SYSTEM_RESET$"),
            direct_queue("one"),
        ]))
        .expect(Expect::line(direct_queue("two")))
        .expect(Expect::Never(direct_queue("(three|probe)")))
        .expect(Expect::Sequence(vec![
            disk_ok("one", "write", "load"),
            hv("^slice one restarted: PSCI SYSTEM_RESET$"),
            slice("one", "^DISK info "),
            disk_ok("one", "verify", "first"),
            disk_ok("one", "verify", "middle"),
            disk_ok("one", "verify", "last"),
        ]));
    for (name, ..) in LINUX {
        s = s.expect(Expect::Sequence(vec![
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
            slice(name, "^DISK at 70$"),
            slice(name, &format!("^DISK load start {LOAD_MIB}MiB at=[0-9]+$")),
            disk_ok(name, "write", "load"),
        ]));
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
        slice("three", "^DISK load start "),
        slice("probe", "^HEARTBEAT [0-9]+ ok nvme-ok$"),
        slice("probe", "^HEARTBEAT [0-9]+ ok nvme-ok$"),
        disk_ok("three", "write", "load"),
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
        .plan(&shapes_plan(&verify, "", "nvme-verify=1"))
        .all_healthy()
        .expect(Expect::Never(any_disk_failure()))
        .expect(Expect::line(slice("probe", "^NVME VERIFY ok 2048 blocks$")))
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

/// Every NVMe attack of the probe but `nvme-prp-outside` (which needs a target of its own).
const ATTACKS: [&str; 10] = [
    "nvme-prp-toctou",
    "nvme-prp-flip",
    "nvme-lba-outside",
    "nvme-nsid",
    "nvme-admin-refused",
    "nvme-sgl-fused",
    "nvme-doorbell",
    "nvme-queue-outside",
    "nvme-reset-inflight",
    "nvme-cq-write",
];

/// Attackers reset themselves 10 s after their attacks and run them again: the first round
/// comes before the Linux victim has booted, later ones after its first checksum.
const AGAIN: &str = "reset-after=20";

/// The attack plan: a Linux victim (slice 1, so it has the console), a probe victim with the
/// canary, an attacker running [`ATTACKS`] on two vCPUs (nvme-prp-flip flips from the second),
/// and two attackers pointing PRPs at the victims' physical RAM (`targets`).
fn attack_plan(targets: [u64; 2]) -> String {
    let prp = |name: &str, target: u64| {
        with_nvme(
            &probe_slice(
                name,
                "1",
                "64MiB",
                &format!(
                    "cmdline = \"attack=nvme-prp-outside target={target:#x} heartbeat=500 {AGAIN}\""
                ),
            ),
            1,
            "16MiB",
        )
    };
    // `att` and `prp-lin` attack through direct queues (`nvme.direct-queues`, decision 5).
    plan(&[
        with_nvme(
            &linux_slice("lin", "1", "256MiB", "microvisor.disk=write,sum"),
            1,
            "64MiB",
        ),
        with_nvme(
            &probe_slice(
                "victim",
                "1",
                "64MiB",
                "cmdline = \"heartbeat=500 nvme-check=1\"",
            ),
            1,
            "16MiB",
        ),
        with_direct_queues(&with_nvme(
            &probe_slice(
                "att",
                "2",
                "64MiB",
                &format!(
                    "cmdline = \"attack={} heartbeat=500 {AGAIN}\"",
                    ATTACKS.join(",")
                ),
            ),
            2,
            "16MiB",
        )),
        prp("prp-victim", targets[0]),
        with_direct_queues(&prp("prp-lin", targets[1])),
    ])
}

/// `ATTACK <attack> attempting ...` then `ATTACK <attack> contained ...` from `attacker`.
fn contained(attacker: &str, attack: &str) -> Expect {
    Expect::Sequence(vec![
        slice(attacker, &format!("^ATTACK {} attempting ", lit(attack))),
        slice(attacker, &format!("^ATTACK {} contained ", lit(attack))),
    ])
}

#[test]
fn nvme_attacks_are_contained_and_the_victims_data_stays_intact() {
    // Every NVMe attack of the probe under the microvisor: each must end "contained" (an
    // NVMe error status for every case, no transfer outside the attacker's share), no slice is
    // stopped, the probe victim's canary reads back at every heartbeat, and the Linux victim's
    // whole namespace has the same checksum after the attacks as before them. PRPs are aimed
    // at the physical RAM of both victims (the probe victim's canary, 1 MiB into the Linux
    // victim's).
    let name = "nvme_attacks";
    let probe = Scenario::new(name)
        .inline_node(8, 2 << 30)
        .plan(&attack_plan([0, 0]));
    let targets = [
        probe_canary(probe.slice_ram("victim").base),
        probe.slice_ram("lin").base + (1 << 20),
    ];
    for target in targets {
        assert!(
            target >= 0x4000_0000 + (64 << 20),
            "a victim's RAM must lie outside the attackers' IPA window"
        );
    }
    let mut s = Scenario::new(name)
        .inline_node(8, 2 << 30)
        .disk(1 << 30)
        .plan(&attack_plan(targets))
        .all_healthy()
        .expect(Expect::Never(any_disk_failure()))
        .expect(Expect::Never(slice("victim", "CORRUPT")))
        .expect(Expect::Never(hv("^slice .* stopped")))
        .expect(Expect::Never(hv("^slice (lin|victim) restarted")))
        // A command the attacker got onto a hardware queue that is not its own would complete
        // there under a slot nobody had: the one certain sign (found in review of the tests).
        .expect(Expect::Never(hv("^nvme: .*unexpected completion")))
        // The attacker's direct CQ is read-only to it: a forged completion is dropped, a word
        // past the CQ's last entry in its page lands (the hypervisor completes the store).
        .expect(Expect::line(slice(
            "att",
            "^ATTACK nvme-cq-write contained read-before=ok cq-write=dropped after-cq=landed read-after=ok$",
        )))
        // Write Zeroes and Dataset Management past the share's end, not only reads and writes.
        .expect(Expect::line(slice(
            "att",
            "^ATTACK nvme-lba-outside contained .*zeroes@end=.*zeroes@wrap=.*dsm@end=.*dsm@wrap=",
        )));
    for attack in ATTACKS {
        s = s.expect(contained("att", attack));
    }
    for (attacker, target) in [("prp-victim", targets[0]), ("prp-lin", targets[1])] {
        s = s
            .expect(contained(attacker, "nvme-prp-outside"))
            .expect(Expect::line(slice(
                attacker,
                &format!("^ATTACK nvme-prp-outside contained .*at={target:#x}"),
            )));
    }
    // A whole round of every attacker after the Linux victim's first checksum; then the
    // victim's canary still reads back, and the Linux victim checks its blocks and sums its
    // namespace again (it has the console from boot).
    let summed = slice("lin", "^DISK done write,sum$");
    s = s
        .input(Input::wait(shell_ready("lin")))
        .input(Input::wait(summed.clone()));
    let rounds = [
        ("att", ATTACKS[0], ATTACKS[ATTACKS.len() - 1]),
        ("prp-victim", "nvme-prp-outside", "nvme-prp-outside"),
        ("prp-lin", "nvme-prp-outside", "nvme-prp-outside"),
    ];
    for (attacker, first, last) in rounds {
        let done = slice(attacker, &format!("^ATTACK {} contained ", lit(last)));
        s = s
            .expect(Expect::Sequence(vec![
                summed.clone(),
                slice(attacker, &format!("^ATTACK {} attempting ", lit(first))),
                done.clone(),
                slice("victim", "^HEARTBEAT [0-9]+ ok nvme-ok$"),
                slice("victim", "^HEARTBEAT [0-9]+ ok nvme-ok$"),
                slice("victim", "^HEARTBEAT [0-9]+ ok nvme-ok$"),
            ]))
            .input(Input::after_next(
                slice(attacker, &format!("^ATTACK {} attempting ", lit(first))),
                &[],
            ))
            .input(Input::after_next(done, &[]));
    }
    let s = s
        .input(Input::after_next_nth(
            slice("victim", "^HEARTBEAT "),
            2,
            &shell_line("/init disk verify,sum"),
        ))
        .expect(Expect::SameCapture {
            pattern: slice("lin", "^DISK sum 67108864 ([0-9a-f]{32})$"),
            count: 2,
        })
        .expect(Expect::Sequence(vec![
            slice("lin", "^DISK done write,sum$"),
            disk_ok("lin", "verify", "first"),
            disk_ok("lin", "verify", "middle"),
            disk_ok("lin", "verify", "last"),
            slice("lin", "^DISK sum "),
        ]));
    let check = s.clone();
    s.run();
    check_disk_file(&check, &[("lin", &["first", "middle", "last"])]);
}

#[test]
fn nvme_shares_larger_than_the_disk_or_its_queues_are_refused_at_boot() {
    // The windows are checked against the namespace the controller reports at boot: the
    // second slice does not fit in what the first leaves of a 1 GiB disk. Likewise for queue
    // pairs: QEMU's controller grants 64. Nothing starts either time.
    let two = |first: (u32, &str), second: (u32, &str)| {
        plan(&[
            with_nvme(&probe_slice("a", "1", "64MiB", ""), first.0, first.1),
            with_nvme(&probe_slice("b", "1", "64MiB", ""), second.0, second.1),
        ])
    };
    Scenario::new("nvme_refuse_size")
        .disk(1 << 30)
        .plan(&two((1, "768MiB"), (1, "512MiB")))
        .refused_at_boot(
            r#"plan does not fit this node: slice "b": nvme\.size: asks for 512 MiB but only 256 MiB of the 1 GiB NVMe namespace is left"#,
        )
        .run();
    Scenario::new("nvme_refuse_queues")
        .disk(1 << 30)
        .plan(&two((60, "16MiB"), (5, "16MiB")))
        .refused_at_boot(
            r#"plan does not fit this node: slice "b": nvme\.queues: asks for 5 queue pairs but only 4 are left \(the NVMe controller grants 64\)"#,
        )
        .run();
}
