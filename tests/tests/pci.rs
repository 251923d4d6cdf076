//! The physical PCIe hierarchy (issue 10): with `-kernel` nobody numbers the buses or opens
//! bridge windows, so the microvisor does. NICs behind their own `pcie-root-port`s must show
//! up behind them at 01:00.0, 02:00.0, ... with their BARs placed inside the ports' windows,
//! an empty root port must keep its bus, and the NVMe controller on the root bus must keep
//! working for the slices.

use microvisor_tests::{Expect, Scenario, hv, plan, probe_slice, slice, with_device, with_nvme};

/// Root port `i` at 00:(0x10+i).0 with a virtio-net function behind it (on a hub port: no
/// network reaches outside QEMU), as node profiles with NICs lay them out.
fn nic_behind_root_port(i: u8) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!("hubport,id=net{i},hubid={i}"),
        "-device".into(),
        format!(
            "pcie-root-port,id=rp{i},bus=pcie.0,chassis={},addr={:#x}",
            i + 1,
            0x10 + i
        ),
        "-device".into(),
        format!("virtio-net-pci,bus=rp{i},netdev=net{i},iommu_platform=on,romfile="),
    ]
}

#[test]
fn nics_behind_root_ports_get_buses_and_windows() {
    let mut args: Vec<String> = (0..2).flat_map(nic_behind_root_port).collect();
    // An empty root port: it still gets a bus (like firmware numbers it), and no windows.
    args.extend(
        [
            "-device",
            "pcie-root-port,id=rp2,bus=pcie.0,chassis=3,addr=0x12",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let hex = "0x[0-9a-f]+";
    let nic = |bus: u8, port: u8| {
        hv(&format!(
            r"^pci 0000:{bus:02x}:00\.0 1af4:1041 class 02 00 00 \(net\) behind 0000:00:{port:02x}\.0, BAR1 {hex} \(4 KiB\), BAR4 {hex} \(16 KiB\)$"
        ))
    };
    let port = |device: u8, bus: u8| {
        hv(&format!(
            r"^pci 0000:00:{device:02x}\.0 1b36:000c class 06 04 00 \(bridge\), buses {bus:02x}-{bus:02x}, window {hex}-{hex}, prefetchable {hex}-{hex}(, BAR0 {hex} \(4 KiB\))?$"
        ))
    };
    Scenario::new("pci_root_ports")
        .disk(1 << 30)
        .qemu_args(&args)
        .plan(&plan(&[with_nvme(
            &probe_slice("p", "1", "64MiB", "cmdline = \"heartbeat=500\""),
            1,
            "16MiB",
        )]))
        .all_healthy()
        .expect(Expect::Sequence(vec![
            hv(r"^pci 0000:00:00\.0 1b36:0008 class 06 00 00 \(host bridge\), no BARs$"),
            hv(r"^pci 0000:00:02\.0 1b36:0010 class 01 08 02 \(nvme\), BAR0 "),
            port(0x10, 1),
            nic(1, 0x10),
            port(0x11, 2),
            nic(2, 0x11),
            hv(&format!(r"^pci 0000:00:12\.0 1b36:000c class 06 04 00 \(bridge\), buses 03-03(, BAR0 {hex} \(4 KiB\))?$")),
            hv(r"^nvme 0000:00:02\.0: "),
        ]))
        .expect(Expect::Never(hv("^pci: ")))
        .expect(Expect::line(slice("p", "^NVME PASS ")))
        .run();
}

/// Two virtio-net functions of one multi-function device on the root bus, 00:05.0 and
/// 00:05.1 (on hub ports: no network reaches outside QEMU).
fn two_function_nic() -> Vec<String> {
    (0..2)
        .flat_map(|f| {
            [
                "-netdev".to_string(),
                format!("hubport,id=mf{f},hubid={}", 10 + f),
                "-device".to_string(),
                format!(
                    "virtio-net-pci,bus=pcie.0,addr=0x5.{f},multifunction={},netdev=mf{f},disable-legacy=on,iommu_platform=on,romfile=",
                    if f == 0 { "on" } else { "off" }
                ),
            ]
        })
        .collect()
}

#[test]
fn functions_that_can_reach_each_other_peer_to_peer_go_to_one_slice() {
    // The functions of one multi-function device may talk to each other inside it, where no
    // SMMU sees it (their own ACS controls are not relied on: a function reset clears them):
    // one isolation group. QEMU's root ports implement ACS, which the hypervisor turns on,
    // so the NICs behind them are each alone (every other NIC scenario). Given to two
    // slices, the boot is refused naming the slice and the function; given to one, both are
    // its.
    let args = two_function_nic();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let group =
        hv(r"^pci: isolation group \(peer to peer without ACS\) 0000:00:05\.0 0000:00:05\.1$");
    let probe = |name: &str| probe_slice(name, "1", "64MiB", "cmdline = \"heartbeat=500\"");
    Scenario::new("isolation_group_split")
        .inline_node(4, 1 << 30)
        .smmuv3()
        .qemu_args(&args)
        .plan(&plan(&[
            with_device(&probe("a"), "pci = \"00:05.0\""),
            with_device(&probe("b"), "pci = \"00:05.1\""),
        ]))
        .expect(Expect::line(group.clone()))
        .refused_at_boot(
            r#"slice "b": device 00:05\.1: can reach 00:05\.0 peer to peer without passing the SMMU \(no ACS between them: one isolation group\), and 00:05\.0 is given to slice "a""#,
        )
        .run();
    let assigned = |bdf: &str, slot: u8| {
        hv(&format!(
            r"^assigned: slice a (0000:)?{bdf} as 00:0{slot}\.0, "
        ))
    };
    Scenario::new("isolation_group_whole")
        .inline_node(4, 1 << 30)
        .smmuv3()
        .qemu_args(&args)
        .plan(&plan(&[with_device(
            &with_device(&probe("a"), "pci = \"00:05.0\""),
            "pci = \"00:05.1\"",
        )]))
        .expect(Expect::line(group))
        .expect(Expect::line(assigned(r"00:05\.0", 1)))
        .expect(Expect::line(assigned(r"00:05\.1", 2)))
        .expect(Expect::line(slice("a", "^HEARTBEAT 3 ")))
        .run();
}
