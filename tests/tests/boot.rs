//! Booting plans: the default node with its default plan (Debian Linux slices and a probe over
//! all cores), the small node, the GICv4.0 node, explicit core lists and uneven sizes. Each slice must report
//! exactly its planned vCPUs and RAM.

use std::collections::BTreeSet;

use microvisor_plan::{BuiltIn, ImageSource};
use microvisor_tests::{
    Expect, Input, Scenario, focus, focused, hv, lit, plan, probe_slice, shell_line, shell_ready,
    slice,
};

/// The `[hv] partition: ...` lines, in this order. Written out by hand (see
/// hypervisor/plan/tests/placement.rs for the reasoning), not recomputed with `plan::place`:
/// `all_healthy()` checks the same lines against `place`, so a bug there cannot hide in both.
fn partition_table(lines: &[&str]) -> Expect {
    Expect::Sequence(
        lines
            .iter()
            .map(|line| hv(&format!("^partition: {}$", lit(line))))
            .collect(),
    )
}

#[test]
fn default_node_boots_its_default_plan() {
    let s = Scenario::new("default_node").node("default");
    // What the default plan is for (issue 3): Linux slices next to a bare-metal one, every
    // core in use.
    let plan = s.parsed_plan();
    let of_kind = |kind: BuiltIn| -> Vec<(u8, String)> {
        (1..)
            .zip(&plan.slices)
            .filter(|(_, x)| x.kernel == ImageSource::BuiltIn(kind))
            .map(|(n, x)| (n, x.name.clone()))
            .collect()
    };
    let linux = of_kind(BuiltIn::Linux);
    let probes = of_kind(BuiltIn::Probe);
    assert!(
        linux.len() >= 2 && !probes.is_empty(),
        "the default plan must have two Linux slices and a probe slice: {linux:?} {probes:?}"
    );
    let used: BTreeSet<u32> = s
        .placement()
        .slices
        .iter()
        .flat_map(|p| p.cores.iter().copied())
        .collect();
    let cores = s.load_node().cores;
    assert_eq!(
        used,
        (0..cores).collect(),
        "the default plan leaves cores idle"
    );

    let firmware = of_kind(BuiltIn::Firmware);
    assert!(
        !firmware.is_empty(),
        "the default plan must have a slice that boots firmware"
    );

    // As `cargo xtask run` does: Debian installed on the firmware slices' blank shares.
    let mut s = s
        .install_for_firmware_slices()
        .all_healthy()
        .expect(partition_table(&[
            "slice web cores 0-1 ram 0x100000000-0x140000000 (1 GiB) kernel linux",
            "slice web nvme blocks 0-8388607 (4 GiB) hardware queues 1-3",
            "slice db cores 6-7 ram 0xd0000000-0x100000000 (768 MiB) kernel linux",
            "slice db nvme blocks 8388608-14680063 (3 GiB) hardware queues 4-5",
            "slice batch cores 2-3 ram 0xb0000000-0xd0000000 (512 MiB) kernel probe",
            "slice batch nvme blocks 14680064-15728639 (512 MiB) hardware queues 6-6",
            "slice manager cores 4 ram 0x98000000-0xb0000000 (384 MiB) kernel linux",
            "slice metal cores 5 ram 0x80000000-0x98000000 (384 MiB) kernel u-boot",
            "slice metal nvme blocks 15728640-16777215 (512 MiB) hardware queues 7-7",
        ]))
        .expect(Expect::line(hv(&format!(
            r"^microvisor [^:]+: .*\b{cores} cores\b"
        ))))
        .expect(Expect::line(hv("^footprint: ")))
        .expect(Expect::Never(hv("^slice .* (stopped|restarted)")));
    // Console input switches between the Linux slices: each one's shell answers in turn.
    for (n, name) in &linux {
        s = s
            .input(Input::after(shell_ready(name), &focus(*n)))
            .input(Input::after_next(
                focused(name, *n),
                &shell_line(&format!("echo {name}-$((6 * 7))")),
            ))
            .expect(Expect::line(slice(name, &format!("{}-42", lit(name)))));
    }
    // The firmware slice boots the installed Debian through U-Boot, GRUB and the EFI stub;
    // Linux mounts its root from the share's second partition.
    for (_, name) in &firmware {
        s = s.expect(Expect::Sequence(vec![
            slice(name, "^U-Boot 20"),
            slice(
                name,
                "^Found EFI removable media binary efi/boot/bootaa64.efi",
            ),
            slice(name, "Welcome to GRUB!"),
            slice(name, "^EFI stub: Booting Linux Kernel"),
            slice(
                name,
                &format!(
                    r#"^SLICE-REPORT \{{"slice":"{}",.*"root":"nvme0n1p2""#,
                    lit(name)
                ),
            ),
        ]));
    }
    for (_, name) in &probes {
        s = s.expect(Expect::Line {
            pattern: slice(name, "^HEARTBEAT [0-9]+ ok$"),
            count: 2,
        });
    }
    // The manager's Redfish service, as `cargo xtask run` prints it: DMTF's validators over
    // the whole node (the tools are installed first, from PyPI the first time).
    xtask::redfish_tools::ensure(&microvisor_tests::images::built().ws).expect("Redfish tools");
    s = s.host_script(
        "manager",
        slice("manager", "REDFISH ready "),
        1,
        |session| {
            let (user, password) = microvisor_tests::redfish::credentials(&session.trigger)
                .ok_or_else(|| format!("no credentials in {:?}", session.trigger))?;
            microvisor_tests::redfish::validate(
                "default_node-redfish",
                session.https_port,
                &user,
                &password,
            )
        },
    );
    s.run();
}

#[test]
fn small_node_boots_its_default_plan() {
    Scenario::new("small_node")
        .node("small")
        .all_healthy()
        .expect(partition_table(&[
            "slice left cores 0 ram 0x58000000-0x60000000 (128 MiB) kernel probe",
            "slice right cores 1 ram 0x54000000-0x58000000 (64 MiB) kernel probe",
        ]))
        // xtask hashed the images with the `sha2` crate; QEMU's `-cpu max` has FEAT_SHA256,
        // so the bundle verifying at boot shows the SHA-256 instructions agree with it.
        .expect(Expect::line(hv(
            r"^bundle: 1 images \(\d+ KiB\) verified with the CPU's SHA-256 instructions$",
        )))
        // Each slice is started on its own core; the last one reports the release.
        .expect(Expect::line(hv(
            r"^boot: 2 slices released at counter \d+ \(handed to their cores at \d+, slowest start \d+ ticks\)$",
        )))
        .expect(Expect::line(hv(
            r"^boot stages \(counter at the end of each\): entry=\d+ device-tree=\d+ mmu=\d+ bundle=\d+ slices=\d+ cores=\d+ handed=\d+$",
        )))
        .run();
}

#[test]
fn gicv4_node_boots_its_default_plan() {
    // GICv4.0 hardware (QEMU `gic-version=4`): the banner names it, the redistributors'
    // larger frames are walked, the ITS gets a vPE table, the hypervisor's NVMe completion
    // LPIs go through the GICv4 ITS, and the probes (polled NVMe) pass as on a GICv3 node.
    // "left" owns the NIC: its probe maps the function's MSI-X vectors through its virtual
    // ITS (MAPD, MAPC, MAPTI, INV, SYNC; DeviceID = its requester ID 00:01.0) and takes them
    // as LPIs, delivered by the physical ITS directly (GICv4.0 vLPIs).
    Scenario::new("gicv4_node")
        .node("gicv4")
        .all_healthy()
        .expect(Expect::line(hv(
            r"^microvisor \S+: 4 cores, 1 GiB RAM, GICv4\.0 at 0x8000000, ",
        )))
        // The ITS maps an event to a virtual LPI of a vPE and an INT reaches the vPE's
        // virtual pending table: the commands direct injection is built on.
        .expect(Expect::line(hv(
            r"^gic: GICv4\.0 ITS maps events to virtual LPIs \(checked at boot\)$",
        )))
        .expect(partition_table(&[
            "slice left cores 0-1 ram 0x78000000-0x80000000 (128 MiB) kernel probe",
            "slice left nvme blocks 0-131071 (64 MiB) hardware queues 1-2",
            "slice right cores 2 ram 0x74000000-0x78000000 (64 MiB) kernel probe",
            "slice right nvme blocks 131072-196607 (32 MiB) hardware queues 3-3",
        ]))
        .expect(Expect::line(slice("left", "^NVME PASS .* queues=2 ")))
        .expect(Expect::line(slice("right", "^NVME PASS .* queues=1 ")))
        .expect(Expect::line(hv(
            r"^assigned: slice left 0000:01:00\.0 as 00:01\.0, 4 MSI-X vectors, ",
        )))
        .expect(Expect::line(slice(
            "left",
            r"^NET INFO .* doorbell=its\(0x8090040,device=0x8,lpi=8192\) ",
        )))
        .expect(Expect::line(slice(
            "left",
            r"^NET PASS .* irq-tx=delivered\(us=[0-9]+\) irq-rx=delivered\(us=[0-9]+\)$",
        )))
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
        .expect(partition_table(&[
            "slice wide cores 2,0 ram 0x79e00000-0x7ff00000 (97 MiB) kernel probe",
            "slice one cores 3 ram 0x69e00000-0x79e00000 (256 MiB) kernel probe",
            "slice rest cores 1 ram 0x61c00000-0x69e00000 (130 MiB) kernel probe",
        ]))
        .run();
}
