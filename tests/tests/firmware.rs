//! Slices that boot firmware (`kernel = "firmware"`: Debian's U-Boot for QEMU `virt`) boot
//! whatever is installed on their NVMe share, like a bare-metal server: an installed Debian
//! written into the share before the node starts (`xtask::disk_image`: a GPT disk whose ext4
//! root holds the guest's kernel and initramfs) comes up and reports its machine, through
//! U-Boot's distro boot reading `extlinux.conf`, or through UEFI: U-Boot runs GRUB from the
//! EFI system partition's removable path, GRUB boots the kernel's EFI stub. A neighbour keeps
//! beating. A slice whose disk is blank boots from the network instead: DHCP and TFTP over
//! its assigned virtio-net NIC, PXELINUX-style (`xtask::netboot`).

use std::path::Path;
use std::time::Instant;

use xtask::disk_image::Loader;
use xtask::node::{Network, Nic, Node};

use microvisor_tests::{
    Expect, Scenario, firmware_slice, hv, lit, plan, probe_slice, slice, with_device, with_nvme,
};

/// Heartbeats the neighbour prints while the firmware slice boots.
const BEATS: usize = 3;

/// A fresh, all-zero disk file for the scenario's node, kept as written when it boots.
fn fresh_disk(s: &mut Scenario) {
    let disk = s.disk_file(0);
    let size = s.load_node().disks[0].size;
    std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&disk)
        .unwrap();
    file.set_len(size).unwrap();
    s.keep_disk = true;
}

/// Writes the installed Debian, booted through `loader` with `extra` on its command line, into
/// slice `index`'s share of the scenario's disk file (made fresh by [`fresh_disk`] first).
fn install_with(s: &mut Scenario, index: usize, loader: Loader, extra: &str) {
    let share = s.disk_shares()[index].expect("the firmware slice has a share");
    let disk = s.disk_file(0);
    let ws = xtask::workspace::Workspace::locate().unwrap();
    let guest = xtask::linux::guest(&ws, true).unwrap();
    let work = ws
        .target_dir
        .join("test-images")
        .join(format!("{}-disk-work", s.name));
    xtask::disk_image::write_installed_disk(
        &guest,
        loader,
        extra,
        &disk,
        share.first_block * 512,
        share.blocks * 512,
        Path::new(&work),
    )
    .unwrap();
}

/// [`install_with`] on a fresh disk, nothing extra on the command line.
fn install(s: &mut Scenario, index: usize, loader: Loader) {
    fresh_disk(s);
    install_with(s, index, loader, "");
}

/// Slice "fw" boots the Debian installed on its share through `loader`: `path` are the lines
/// of the way there, then its report; its neighbour keeps beating and it is never stopped.
fn boots_installed(name: &str, loader: Loader, path: &[&str]) {
    let mut s = Scenario::new(name)
        .inline_node(4, 1 << 30)
        .disk(1 << 30)
        .plan(&plan(&[
            with_nvme(&firmware_slice("fw", "1", "384MiB"), 1, "512MiB"),
            probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]));
    install(&mut s, 0, loader);
    let mut sequence = vec![hv("^partition: slice fw cores 0 ram .* kernel u-boot$")];
    sequence.extend(path.iter().map(|line| slice("fw", line)));
    sequence.push(slice("fw", r#"^SLICE-REPORT \{"slice":"fw","cpus":1,"#));
    s.all_healthy()
        .expect(Expect::Sequence(sequence))
        .expect(Expect::Line {
            pattern: slice("beat", "^HEARTBEAT [0-9]+ ok$"),
            count: BEATS,
        })
        .expect(Expect::Never(hv(&format!(
            "^slice {} (stopped|restarted)",
            lit("fw")
        ))))
        .run();
}

#[test]
fn a_firmware_slice_boots_the_debian_installed_on_its_disk_through_extlinux() {
    boots_installed(
        "firmware_extlinux",
        Loader::Extlinux,
        &["^U-Boot 20", "^Found /boot/extlinux/extlinux.conf"],
    );
}

#[test]
fn a_firmware_slice_boots_grub_from_its_efi_system_partition_and_grub_boots_debian() {
    boots_installed(
        "firmware_efi",
        Loader::Efi,
        &[
            "^U-Boot 20",
            "^Found EFI removable media binary efi/boot/bootaa64.efi",
            "Welcome to GRUB!",
            "^EFI stub: Booting Linux Kernel",
        ],
    );
}

#[test]
fn a_reboot_goes_back_through_the_firmware_and_bad_disks_leave_only_their_slice_at_its_prompt() {
    // "os": Debian installed with extlinux, which reboots itself 1 s after it reported: the
    // restart runs U-Boot again, which boots the installed OS again. "empty": a share with no
    // partition table. "corrupt": an installed disk whose GPT headers (primary and backup)
    // no longer match their CRC. U-Boot finds nothing to boot on those two and stays at its
    // prompt; nothing else on the node notices.
    let mut s = Scenario::new("firmware_reboot_bad_disks")
        .inline_node(4, 2 << 30)
        .disk(1 << 30)
        .plan(&plan(&[
            with_nvme(&firmware_slice("os", "1", "384MiB"), 1, "256MiB"),
            with_nvme(&firmware_slice("empty", "1", "128MiB"), 1, "64MiB"),
            with_nvme(&firmware_slice("corrupt", "1", "384MiB"), 1, "256MiB"),
            probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]));
    fresh_disk(&mut s);
    install_with(
        &mut s,
        0,
        Loader::Extlinux,
        "microvisor.action=reboot-after:1",
    );
    install_with(&mut s, 2, Loader::Extlinux, "");
    let corrupt = s.disk_shares()[2].unwrap();
    let disk = s.disk_file(0);
    let mut bytes = std::fs::read(&disk).unwrap();
    let base = (corrupt.first_block * 512) as usize;
    let last = base + (corrupt.blocks * 512) as usize - 512;
    // One byte of each header's disk GUID: the header CRCs no longer match.
    bytes[base + 512 + 60] ^= 0xff;
    bytes[last + 60] ^= 0xff;
    std::fs::write(&disk, &bytes).unwrap();
    drop(bytes);
    let report = |name: &str| slice(name, &format!(r#"^SLICE-REPORT \{{"slice":"{name}","#));
    s.healthy(&["beat"])
        .expect(Expect::Sequence(vec![
            slice("os", "^U-Boot 20"),
            slice("os", "^Found /boot/extlinux/extlinux.conf"),
            report("os"),
            hv("^slice os restarted: PSCI SYSTEM_RESET$"),
            slice("os", "^U-Boot 20"),
            slice("os", "^Found /boot/extlinux/extlinux.conf"),
            report("os"),
        ]))
        .expect(Expect::Sequence(vec![
            slice("empty", "^U-Boot 20"),
            slice("empty", r"^\*\* No partition table - nvme 0 \*\*"),
            slice("empty", "^No ethernet found"),
        ]))
        .expect(Expect::Sequence(vec![
            slice("corrupt", "^U-Boot 20"),
            slice("corrupt", r"^\*\* Invalid partition 1 \*\*"),
            slice("corrupt", "^No ethernet found"),
        ]))
        .expect(Expect::Never(report("empty")))
        .expect(Expect::Never(report("corrupt")))
        .expect(Expect::Never(hv(
            "^slice (empty|corrupt|beat) (stopped|restarted)",
        )))
        .expect(Expect::Line {
            pattern: slice("beat", "^HEARTBEAT [0-9]+ ok$"),
            count: 2 * BEATS,
        })
        .run();
}

#[test]
fn a_firmware_slice_with_a_blank_disk_boots_debian_from_the_network() {
    // "fw" has a blank share (no partition table) and NIC 0, on a host network whose TFTP
    // server serves a PXE root: U-Boot's distro boot finds nothing on the disk, gets a lease,
    // runs boot.scr.uimg from the server, which runs `pxe get` and `pxe boot`: the kernel and
    // initramfs come over TFTP. U-Boot negotiates the NIC's features without
    // VIRTIO_F_ACCESS_PLATFORM; the hypervisor acknowledges it on its behalf.
    let ws = xtask::workspace::Workspace::locate().unwrap();
    let root = ws
        .target_dir
        .join("test-images")
        .join("firmware_netboot-tftp");
    let guest = xtask::linux::guest(&ws, true).unwrap();
    xtask::netboot::write_tftp_root(&guest, "", &root).unwrap();
    let mac = Node::nic_mac(0).to_string();
    let mut s = Scenario::new("firmware_netboot")
        .inline_node(4, 1 << 30)
        .disk(1 << 30)
        .smmuv3()
        .nic(Nic {
            network: Network::Host,
            tftp: Some(root),
        })
        .plan(&plan(&[
            with_device(
                &with_nvme(&firmware_slice("fw", "1", "384MiB"), 1, "64MiB"),
                "class = \"net\"",
            ),
            probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]));
    fresh_disk(&mut s);
    let started = Instant::now();
    s.all_healthy()
        .expect(Expect::Sequence(vec![
            hv(&format!(
                "^assigned: slice fw (0000:)?01:00.0 .*, mac {}$",
                lit(&mac)
            )),
            slice("fw", "^U-Boot 20"),
            slice("fw", r"^\*\* No partition table - nvme 0 \*\*"),
            slice("fw", r"^DHCP client bound to address 10\.0\.2\.[0-9]+"),
            slice("fw", "^microvisor netboot: PXE from 10.0.2.2$"),
            slice("fw", "^Retrieving file: pxelinux.cfg/default"),
            slice("fw", "^Retrieving file: initrd.img"),
            slice("fw", "^Retrieving file: Image"),
            slice("fw", "^Starting kernel"),
            slice(
                "fw",
                &format!(
                    r#"^SLICE-REPORT \{{"slice":"fw","cpus":1,.*"mac":"{}","ipv4":"10\.0\.2\.[0-9]+/24"\}}"#,
                    lit(&mac)
                ),
            ),
        ]))
        .expect(Expect::Never(slice("fw", "^No ethernet found")))
        .expect(Expect::Line {
            pattern: slice("beat", "^HEARTBEAT [0-9]+ ok$"),
            count: BEATS,
        })
        .expect(Expect::Never(hv(&format!(
            "^slice {} (stopped|restarted)",
            lit("fw")
        ))))
        .run();
    eprintln!(
        "firmware_netboot: booted over the network in {:.1} s (whole scenario)",
        started.elapsed().as_secs_f64()
    );
}
