//! GICv4 nodes (QEMU `gic-version=4`, GICv4.0; docs/decisions/0004-gicv4-virtual-its.md): a
//! Linux slice whose PCI host bridge has only its NVMe share gets a virtual ITS instead of
//! GICv3 message-based SPIs, and stock Linux drives it with its own ITS driver: its NVMe
//! queues' MSI-X vectors are ITS-MSI interrupts, LPIs the hypervisor translates and loads into
//! the list registers. GICv3 nodes keep MBI (every other scenario).

use microvisor_tests::{
    EXIT_COUNTERS, Expect, Input, Scenario, hv, linux_slice, plan, shell_line, shell_ready, slice,
    with_device, with_nvme,
};
use xtask::node::{Network, Nic};

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
fn a_linux_slice_on_a_gicv4_node_takes_its_nic_interrupts_with_no_exit() {
    // An assigned virtio-net behind the slice's vITS: Linux maps its vectors with its own ITS
    // driver, the hypervisor turns those MAPTIs into VMAPTIs on the physical ITS, and the
    // NIC's MSIs become vLPIs of the slice's resident vPEs. The slice has no NVMe share, so
    // any `irq-device` exit would be the NIC's: its exit counters (Ctrl-A c after 20 pings,
    // and at the end of the first run) must show none while /proc/interrupts counts the
    // pings' receive interrupts. Then `reboot -f`: the restart discards the physical
    // translations and makes the vPEs non-resident; the second boot's /init needs DHCP over
    // the NIC again before its PROBE PASS.
    let one = with_device(&linux_slice("one", "2", "256MiB", ""), "pci = \"01:00.0\"");
    let pinged = slice("one", "^20 packets transmitted, 20 packets received");
    let receive_interrupts = slice(
        "one",
        r"^ *[0-9]+: +([1-9][0-9]+ +[0-9]+|[0-9]+ +[1-9][0-9]+) +ITS-MSI +[0-9]+ +Edge +virtio0-input\.0$",
    );
    let s = Scenario::new("gicv4_linux_direct_nic")
        .inline_node(2, 1 << 30)
        .gic_v4()
        .smmuv3()
        .nic(Nic::on(Network::Host))
        .plan(&plan(&[one]))
        .input(Input::after(
            shell_ready("one"),
            &shell_line("ping -c20 -i.2 10.0.2.2|tail -2"),
        ))
        .input(Input::after_next(
            pinged.clone(),
            &shell_line("grep virtio0 /proc/interrupts"),
        ))
        .input(Input::after_next(receive_interrupts.clone(), EXIT_COUNTERS))
        .input(Input::after_next(
            hv("^exits one: "),
            &shell_line("reboot -f"),
        ))
        .expect(Expect::line(pinged))
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
    s.run();
}
