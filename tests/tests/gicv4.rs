//! GICv4 nodes (QEMU `gic-version=4`, GICv4.0; docs/decisions/0004-gicv4-virtual-its.md): a
//! Linux slice whose PCI host bridge has only its NVMe share gets a virtual ITS instead of
//! GICv3 message-based SPIs, and stock Linux drives it with its own ITS driver: its NVMe
//! queues' MSI-X vectors are ITS-MSI interrupts, LPIs the hypervisor translates and loads into
//! the list registers. GICv3 nodes keep MBI (every other scenario).
//!
//! A probe owning the `gicv4` node's NIC maps its MSI-X vectors through its own virtual ITS
//! and then attacks it (`its-*`, issue 14 "Hostile vITS usage") next to a victim probe with
//! RAM and NVMe canaries.

use std::time::Duration;

use microvisor_tests::{
    EXIT_COUNTERS, Expect, Input, Scenario, Step, hv, linux_slice, lit, plan, probe_canary,
    probe_slice, run_step, shell_line, shell_ready, shell_steps, slice, with_device,
    with_direct_queues, with_nvme,
};
use xtask::node::{Network, Nic};

/// Every `its-*` attack of the probe.
const ITS_ATTACKS: [&str; 7] = [
    "its-bogus-commands",
    "its-tables-outside",
    "its-foreign-device",
    "its-queue-wrap",
    "its-remote-lpis",
    "its-disabled",
    "its-mapd-storm",
];

/// Victim heartbeats required after the last attack began.
const BEATS: usize = 3;

/// The victim first (the top of RAM), then the attacker with two vCPUs owning NIC 01:00.0
/// with an NVMe share of its own (DeviceID 0, the emulated function next to the assigned one
/// at 0x8).
fn its_attack_plan(target: u64) -> String {
    plan(&[
        with_nvme(
            &probe_slice(
                "victim",
                "1",
                "64MiB",
                "cmdline = \"heartbeat=500 nvme-check=1\"",
            ),
            1,
            "32MiB",
        ),
        with_device(
            &with_nvme(
                &probe_slice(
                    "attacker",
                    "2",
                    "64MiB",
                    &format!(
                        "cmdline = \"attack={} target={target:#x} heartbeat=500\"",
                        ITS_ATTACKS.join(",")
                    ),
                ),
                1,
                "32MiB",
            ),
            "pci = \"01:00.0\"",
        ),
    ])
}

#[test]
fn its_attacks_on_a_gicv4_node_are_contained() {
    // The attacker's NIC works through its vITS first (NET PASS with both interrupts as LPIs);
    // then each its-* attack must be concluded `contained`: bogus commands skipped with the
    // queue still advancing, LPI tables that cannot move while EnableLPIs is set, a command
    // queue outside RAM (the end of its RAM, and the victim's physical RAM as `target=`) that
    // stalls, device tables and ITTs outside RAM refused (the function's translation still
    // delivers an INT after each MAPD there), no LPI for DeviceIDs it does not own
    // (while an INT of its own function's event arrives), CWRITER tricks processing nothing or
    // at most one lap, a MAPD storm with every GITS access returning promptly, and the NIC
    // taking its interrupts after each. its-remote-lpis enables vCPU 1's LPIs from vCPU 0 and
    // moves the NIC's TX event to vCPU 1: the hypervisor makes vCPU 1's vPE resident on its
    // own core (the residency SGI), and vCPU 1 takes the vLPI. The victim beats with both
    // canaries throughout.
    let victim = Scenario::new("its_attacks")
        .node("gicv4")
        .plan(&its_attack_plan(0))
        .slice_ram("victim");
    let target = probe_canary(victim.base);
    let mut s = Scenario::new("its_attacks")
        .node("gicv4")
        .plan(&its_attack_plan(target))
        .timeout(Duration::from_secs(300))
        .all_healthy()
        .expect(Expect::line(slice(
            "attacker",
            r"^NET INFO .* doorbell=its\(0x8090040,device=0x8,lpi=8192\) ",
        )))
        .expect(Expect::line(slice(
            "attacker",
            r"^NET PASS .* irq-tx=delivered\(us=[0-9]+\) irq-rx=delivered\(us=[0-9]+\)$",
        )));
    for attack in ITS_ATTACKS {
        s = s.expect(Expect::Sequence(vec![
            slice("attacker", &format!("^ATTACK {} attempting ", lit(attack))),
            slice(
                "attacker",
                &format!("^ATTACK {} contained .* nic-after=delivered$", lit(attack)),
            ),
        ]));
    }
    let last = slice("attacker", "^ATTACK its-mapd-storm attempting ");
    s.expect(Expect::line(slice(
        "attacker",
        r"^ATTACK its-tables-outside contained propbaser=ignored pendbaser=ignored queue-end=stalled queue-target=stalled control=delivered devtable=completed\+kept itt=completed\+kept ",
    )))
    .expect(Expect::line(slice(
        "attacker",
        "^ATTACK its-remote-lpis contained enable-lpis=set target=0x1 exchange=ok tx-lpi=[1-9][0-9]* taken-by=0x1 back=completed ",
    )))
    .expect(Expect::HeartbeatsAfter {
        after: last,
        slices: vec!["victim".into(), "attacker".into()],
        count: BEATS,
    })
    .expect(Expect::Line {
        pattern: slice("victim", "^HEARTBEAT [0-9]+ ok nvme-ok$"),
        count: BEATS,
    })
    .expect(Expect::Never(slice("victim", "CORRUPT|ERROR")))
    .expect(Expect::Never(hv("^slice .* (stopped|restarted)")))
    .run();
}

#[test]
fn a_linux_slice_on_a_gicv4_node_takes_its_nvme_interrupts_through_a_virtual_its() {
    // Linux finds the ITS under the GIC node, allocates its device and collection tables, and
    // maps the NVMe function's vectors (MAPD, MAPC, MAPTI, INV, SYNC); the SLICE-REPORT's
    // namespace size and queue count need working admin and I/O completion interrupts. A
    // read of its whole 64 MiB namespace then goes through the I/O queues, whose ITS-MSI count is no longer zero.
    let its_line = slice(
        "one",
        r"^\[ *[0-9.]+\] ITS@0x0000000008080000: allocated [0-9]+ Devices ",
    );
    let io_interrupts = slice(
        "one",
        r"^ *[0-9]+: +([1-9][0-9]* +[0-9]+|[0-9]+ +[1-9][0-9]*) +ITS-MSI +[1-9][0-9]* +Edge +nvme0q[1-9]$",
    );
    let s = Scenario::new("gicv4_linux_virtual_its")
        .inline_node(2, 1 << 30)
        .gic_v4()
        .disk(256 << 20)
        .plan(&plan(&[with_nvme(
            &linux_slice("one", "2", "256MiB", ""),
            2,
            "64MiB",
        )]))
        .all_healthy()
        .input(Input::after(
            shell_ready("one"),
            &shell_line("dmesg | grep ITS@"),
        ))
        .input(Input::after_next(
            its_line.clone(),
            &shell_line("cat /dev/nvme0n1|wc -c"),
        ))
        .input(Input::after_next(
            slice("one", "^67108864$"),
            &shell_line("grep nvme /proc/interrupts"),
        ))
        .expect(Expect::line(its_line))
        .expect(Expect::line(slice(
            "one",
            r"^ *[0-9]+: +[0-9]+ +[0-9]+ +ITS-MSI +0 +Edge +nvme0q0$",
        )))
        .expect(Expect::line(io_interrupts))
        .expect(Expect::Never(slice(
            "one",
            "GICv3-MBI| MSI +[0-9]+ +Edge +nvme",
        )))
        .expect(Expect::Never(hv("^slice .* (stopped|restarted)")));
    s.run();
}

#[test]
fn a_linux_slice_with_direct_nvme_queues_takes_their_completions_with_no_exit() {
    // `nvme.direct-queues` on a GICv4 node (decision 5): the controller writes the slice's
    // I/O CQs itself, and each CQ's interrupt is linked to the guest's vITS translation of
    // its MSI-X vector, so the physical ITS delivers completions as vLPIs to the resident
    // vPEs with no exit. After 10 000 random reads at queue depth 1 (`iobench`, O_DIRECT),
    // /proc/interrupts counts the I/O queues' interrupts, and the exit counters (Ctrl-A c)
    // show at most a few `irq-device` exits: completions that came before the link (a
    // pair's first command). Then 10 000 reads at depth 32 (every submission rings, many
    // commands of each queue in flight at once): every read must complete.
    let one = with_direct_queues(&with_nvme(
        &linux_slice("one", "2", "256MiB", ""),
        2,
        "64MiB",
    ));
    let io_interrupts = slice(
        "one",
        r"^ *[0-9]+: +([1-9][0-9]{2,} +[0-9]+|[0-9]+ +[1-9][0-9]{2,}) +ITS-MSI +[1-9][0-9]* +Edge +nvme0q[1-9]$",
    );
    let qd1 = slice("one", r"^IOBENCH randread qd=1 bs=4096 ops=10000 ");
    let qd32 = slice("one", r"^IOBENCH randread qd=32 bs=4096 ops=10000 ");
    let counters = hv(r"^exits one: ");
    let mut s = Scenario::new("gicv4_linux_direct_nvme")
        .inline_node(2, 1 << 30)
        .gic_v4()
        .disk(256 << 20)
        .plan(&plan(&[one]))
        .all_healthy()
        .input(Input::after(
            shell_ready("one"),
            &shell_line("iobench /dev/nvme0n1"),
        ))
        .input(Input::after_next(
            qd1.clone(),
            &shell_line("grep nvme /proc/interrupts"),
        ))
        .input(Input::after_next(io_interrupts.clone(), EXIT_COUNTERS))
        .input(Input::after_next(
            counters.clone(),
            &shell_line("iobench /dev/nvme0n1 --qd 32"),
        ))
        .expect(Expect::line(qd1))
        .expect(Expect::line(io_interrupts))
        .expect(Expect::line(hv(
            r"^nvme: slice one hardware queue [0-9]+ completes into its CQ at 0x[0-9a-f]+ \(direct\)$",
        )))
        .expect(Expect::line(counters))
        .expect(Expect::line(qd32))
        .expect(Expect::Never(hv(r"^exits one: .* irq-device=([1-9][0-9]{2,})")))
        .expect(Expect::Never(slice("one", "^IOBENCH FAIL")))
        .expect(Expect::Never(hv("direct injection|not linked|not unlinked")))
        .expect(Expect::Never(hv("^slice .* (stopped|restarted)")));
    s = s.timeout(std::time::Duration::from_secs(300));
    s.run();
}

#[test]
fn a_linux_slice_on_a_gicv4_node_takes_its_nic_interrupts_with_no_exit() {
    // An assigned virtio-net behind the slice's vITS: Linux maps its vectors with its own ITS
    // driver, the hypervisor turns those MAPTIs into VMAPTIs on the physical ITS, and the
    // NIC's MSIs become vLPIs of the slice's resident vPEs. The slice has no NVMe share, so
    // any `irq-device` exit would be the NIC's: its exit counters (Ctrl-A c after 20 pings,
    // and at the end of the first run) must show none while /proc/interrupts counts the
    // pings' receive interrupts. Then CPU 1 goes offline and online again (PSCI CPU_OFF and
    // CPU_ON: its vPE leaves the core and must come back with it) and takes the receive
    // interrupt: 20 more pings must get through. Then `reboot -f`: the restart discards the
    // physical translations and makes the vPEs non-resident; the second boot's /init needs
    // DHCP over the NIC again before its PROBE PASS.
    let one = with_device(&linux_slice("one", "2", "256MiB", ""), "pci = \"01:00.0\"");
    let ping = "ping -c20 -i.2 10.0.2.2|tail -2";
    let pinged = slice("one", "^20 packets transmitted, 20 packets received");
    let receive_interrupts = slice(
        "one",
        r"^ *[0-9]+: +([1-9][0-9]+ +[0-9]+|[0-9]+ +[1-9][0-9]+) +ITS-MSI +[0-9]+ +Edge +virtio0-input\.0$",
    );
    // After the second round CPU 1 has taken at least 40 receive interrupts (23 or so
    // before it went offline, the 20 pings' since).
    let on_cpu1 = slice(
        "one",
        r"^ *[0-9]+: +[0-9]+ +([4-9][0-9]|[1-9][0-9]{2,}) +ITS-MSI +[0-9]+ +Edge +virtio0-input\.0$",
    );
    let cpu1 = "/sys/devices/system/cpu/cpu1/online";
    let mut inputs = shell_steps(
        "one",
        shell_ready("one"),
        &[
            run_step(ping),
            Step::WaitFor(pinged.clone()),
            run_step("grep virtio0 /proc/interrupts"),
            Step::WaitFor(receive_interrupts.clone()),
        ],
    );
    inputs.push(Input::after_next(receive_interrupts.clone(), EXIT_COUNTERS));
    inputs.extend(shell_steps(
        "one",
        hv("^exits one: "),
        &[
            run_step(&format!("echo 0 >{cpu1}; echo 1 >{cpu1}")),
            run_step(
                "echo 2 >/proc/irq/$(awk '/virtio0-input/{print $1+0}' /proc/interrupts)/smp_affinity",
            ),
            run_step(ping),
            Step::WaitFor(pinged.clone()),
            run_step("dmesg|grep -c 'CPU1: Booted'"),
            Step::WaitFor(slice("one", "^2$")),
            run_step("grep virtio0-input /proc/interrupts"),
            Step::WaitFor(on_cpu1.clone()),
            run_step("reboot -f"),
        ],
    ));
    let mut s = Scenario::new("gicv4_linux_direct_nic")
        .inline_node(2, 1 << 30)
        .gic_v4()
        .smmuv3()
        .nic(Nic::on(Network::Host))
        .plan(&plan(&[one]))
        .expect(Expect::Line {
            pattern: pinged,
            count: 2,
        })
        .expect(Expect::line(receive_interrupts))
        .expect(Expect::Sequence(vec![
            slice("one", "^PROBE PASS$"),
            hv("^exits one: "),
            hv("^slice one restarted"),
            slice("one", "^PROBE PASS$"),
        ]))
        .expect(Expect::Never(hv("^exits one: .* irq-device=")))
        .expect(Expect::Never(hv("direct injection|vPE of core")))
        .expect(Expect::Never(slice("one", "GICv3-MBI")));
    for input in inputs {
        s = s.input(input);
    }
    s.run();
}
