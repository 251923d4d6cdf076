//! The physical PCIe hierarchy (issue 10): with `-kernel` nobody numbers the buses or opens
//! bridge windows, so the microvisor does. NICs behind their own `pcie-root-port`s must show
//! up behind them at 01:00.0, 02:00.0, ... with their BARs placed inside the ports' windows,
//! an empty root port must keep its bus, and the NVMe controller on the root bus must keep
//! working for the slices.

use microvisor_tests::{Expect, Scenario, hv, plan, probe_slice, slice, with_nvme};

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
