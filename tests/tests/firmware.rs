//! Slices that boot firmware (`kernel = "firmware"`: Debian's U-Boot for QEMU `virt`) boot
//! whatever is installed on their NVMe share, like a bare-metal server: an installed Debian
//! written into the share before the node starts (`xtask::disk_image`: a GPT disk whose ext4
//! root holds the guest's kernel and initramfs) comes up and reports its machine, through
//! U-Boot's distro boot reading `extlinux.conf`, or through UEFI: U-Boot runs GRUB from the
//! EFI system partition's removable path, GRUB boots the kernel's EFI stub. A neighbour keeps
//! beating. A slice whose disk is blank boots from the network instead: DHCP and TFTP over
//! its assigned virtio-net NIC, PXELINUX-style (`xtask::netboot`).

use std::time::{Duration, Instant};

use xtask::disk_image::{Defect, Installation, Loader, MISSING_KERNEL, Os};
use xtask::node::{Network, Nic, Node};

use microvisor_tests::attack_lines::{COUNTED_ATTACKS, requested_attacks};
use microvisor_tests::images::built;
use microvisor_tests::{
    Expect, Input, Scenario, firmware_slice, focus, focused, hv, linux_slice, lit, plan,
    probe_slice, shell_line, shell_ready, shell_script, slice, with_device, with_nvme,
};

/// Heartbeats the neighbour prints while the firmware slice boots.
const BEATS: usize = 3;

/// Slice "fw" (its plan's `[slice.firmware]` lines `firmware`) boots the Debian installed on
/// its share through `loader`: `path` are the lines of the way there, then its report naming
/// `root`; its neighbour keeps beating and it is never stopped.
fn boots_installed(name: &str, loader: Loader, firmware: &str, path: &[&str], root: &str) {
    let fw = with_nvme(&firmware_slice("fw", "1", "384MiB"), 1, "512MiB") + firmware;
    let mut s = Scenario::new(name)
        .inline_node(4, 1 << 30)
        .disk(1 << 30)
        .plan(&plan(&[
            fw,
            probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]));
    s.fresh_disk();
    s.install(0, Installation::new(loader));
    let mut sequence = vec![hv("^partition: slice fw cores 0 ram .* kernel u-boot$")];
    sequence.extend(path.iter().map(|line| slice("fw", line)));
    // Linux mounted its root from the share: the installed system, not an initramfs.
    sequence.push(slice(
        "fw",
        &format!(r#"^SLICE-REPORT \{{"slice":"fw","cpus":1,.*"root":"{root}""#),
    ));
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
        // U-Boot's environment from the plan: no autoboot countdown, and a boot command that
        // says so before it runs the distro boot.
        "[slice.firmware.env]\nbootdelay = \"0\"\nmvtag = \"from-the-plan\"\n\
         bootcmd = \"echo env mvtag=${mvtag}; run distro_bootcmd\"\n\n",
        &[
            "^U-Boot 20",
            r"^Loading Environment from Flash\.\.\. OK$",
            "^env mvtag=from-the-plan$",
            "^Found /boot/extlinux/extlinux.conf",
        ],
        "nvme0n1p1",
    );
}

#[test]
fn a_firmware_slice_boots_grub_from_its_efi_system_partition_and_grub_boots_debian() {
    boots_installed(
        "firmware_efi",
        Loader::Efi,
        "",
        &[
            "^U-Boot 20",
            "^Found EFI removable media binary efi/boot/bootaa64.efi",
            "Welcome to GRUB!",
            "^EFI stub: Booting Linux Kernel",
        ],
        "nvme0n1p2",
    );
}

#[test]
fn a_reboot_goes_back_through_the_firmware_and_bad_disks_leave_only_their_slice_at_its_prompt() {
    // "os": Debian installed with extlinux, which reboots itself 1 s after it reported: the
    // restart runs U-Boot again, which boots the installed OS again. "empty": a share with no
    // partition table. "corrupt": an installed disk whose GPT headers (primary and backup)
    // no longer match their CRC. U-Boot finds nothing to boot on those two and stays at its
    // prompt; nothing else on the node notices. At "empty"'s prompt the harness types
    // `reset`: U-Boot's PSCI SYSTEM_RESET restarts the slice into U-Boot again.
    let mut s = Scenario::new("firmware_reboot_bad_disks")
        .inline_node(4, 2 << 30)
        .disk(1 << 30)
        .plan(&plan(&[
            with_nvme(&firmware_slice("os", "1", "384MiB"), 1, "256MiB"),
            with_nvme(&firmware_slice("empty", "1", "128MiB"), 1, "64MiB"),
            with_nvme(&firmware_slice("corrupt", "1", "384MiB"), 1, "256MiB"),
            probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]));
    s.fresh_disk();
    s.install(
        0,
        Installation {
            extra: "microvisor.action=reboot-after:1",
            ..Installation::new(Loader::Extlinux)
        },
    );
    s.install(2, Installation::new(Loader::Extlinux));
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
    // U-Boot's prompt ends no line, so an empty line is typed to see it ("=> "); U-Boot may
    // still be finishing its boot command and swallow one (it polls the UART for Ctrl-C), so
    // two more follow at the neighbour's next heartbeats. `reset` at the next prompt line.
    let no_ethernet = slice("empty", "^No ethernet found");
    let beat = slice("beat", "^HEARTBEAT [0-9]+ ok$");
    s.input(Input::after_nth(no_ethernet.clone(), 2, &focus(2)))
        .input(Input::after_next(focused("empty", 2), b"\n"))
        .input(Input::after_next(beat.clone(), b"\n"))
        .input(Input::after_next(beat, b"\n"))
        .input(Input::after_next(slice("empty", "^=> $"), b"reset\n"))
        .healthy(&["beat"])
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
            no_ethernet.clone(),
            slice("empty", "^=> reset$"),
            hv("^slice empty restarted: PSCI SYSTEM_RESET$"),
            slice("empty", "^U-Boot 20"),
            slice("empty", r"^\*\* No partition table - nvme 0 \*\*"),
        ]))
        .expect(Expect::Sequence(vec![
            slice("corrupt", "^U-Boot 20"),
            slice("corrupt", r"^\*\* Invalid partition 1 \*\*"),
            slice("corrupt", "^No ethernet found"),
        ]))
        .expect(Expect::Never(report("empty")))
        .expect(Expect::Never(report("corrupt")))
        .expect(Expect::Never(hv("^slice (empty|corrupt|beat) stopped")))
        .expect(Expect::Never(hv("^slice (corrupt|beat) restarted")))
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
            http: None,
        })
        .plan(&plan(&[
            with_device(
                &with_nvme(&firmware_slice("fw", "1", "384MiB"), 1, "64MiB"),
                "class = \"net\"",
            ),
            probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]));
    s.fresh_disk();
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

#[test]
fn broken_installations_leave_their_slice_in_its_firmware_or_rebooting_and_nothing_else_notices() {
    // "noloader": an EFI system partition without a loader at the removable path: U-Boot
    // finds nothing to boot and stays at its prompt. "nokernel": GRUB's configuration names a
    // kernel that is not on the disk: GRUB says so and stays in GRUB. "panics": the installed
    // kernel cannot run the init its command line names and panics; with the guest's
    // `panic=-1` it resets at once (PSCI SYSTEM_RESET), the slice restarts into U-Boot, which
    // boots it again: the loop a bare-metal server with that disk would be in. Only the slice
    // itself notices.
    let mut s = Scenario::new("firmware_broken_installations")
        .inline_node(4, 2 << 30)
        .disk(2 << 30)
        .plan(&plan(&[
            with_nvme(&firmware_slice("noloader", "1", "128MiB"), 1, "512MiB"),
            with_nvme(&firmware_slice("nokernel", "1", "256MiB"), 1, "512MiB"),
            with_nvme(&firmware_slice("panics", "1", "384MiB"), 1, "256MiB"),
            probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]));
    s.fresh_disk();
    s.install(
        0,
        Installation {
            defect: Defect::NoEfiLoader,
            ..Installation::new(Loader::Efi)
        },
    );
    s.install(
        1,
        Installation {
            defect: Defect::KernelMissing,
            ..Installation::new(Loader::Efi)
        },
    );
    s.install(
        2,
        Installation {
            extra: "init=/nonexistent",
            ..Installation::new(Loader::Extlinux)
        },
    );
    let report = |name: &str| slice(name, &format!(r#"^SLICE-REPORT \{{"slice":"{name}","#));
    s.healthy(&["beat"])
        .expect(Expect::Sequence(vec![
            slice("noloader", "^U-Boot 20"),
            slice("noloader", "^No ethernet found"),
        ]))
        .expect(Expect::Never(slice(
            "noloader",
            "Found EFI removable media binary",
        )))
        .expect(Expect::Sequence(vec![
            slice("nokernel", "^U-Boot 20"),
            slice("nokernel", "Welcome to GRUB!"),
            slice(
                "nokernel",
                &format!("error: file `{}' not found", lit(MISSING_KERNEL)),
            ),
        ]))
        .expect(Expect::Sequence(vec![
            slice("panics", "^U-Boot 20"),
            slice("panics", "^Found /boot/extlinux/extlinux.conf"),
            slice("panics", "Kernel panic - not syncing"),
            hv("^slice panics restarted: PSCI SYSTEM_RESET$"),
            slice("panics", "^U-Boot 20"),
            slice("panics", "^Found /boot/extlinux/extlinux.conf"),
        ]))
        .expect(Expect::Never(report("noloader")))
        .expect(Expect::Never(report("nokernel")))
        .expect(Expect::Never(report("panics")))
        .expect(Expect::Never(hv(
            "^slice (noloader|nokernel|beat) (stopped|restarted)",
        )))
        .expect(Expect::Never(hv("^slice panics stopped")))
        .expect(Expect::Line {
            pattern: slice("beat", "^HEARTBEAT [0-9]+ ok$"),
            count: 2 * BEATS,
        })
        .run();
}

#[test]
fn the_manager_powers_a_firmware_slice_off_its_disk_is_re_imaged_and_the_next_power_on_boots_it() {
    // "metal" first boots a Debian installed with extlinux (its command line tagged
    // mvimage=first). The manager powers it off; while it is off, its share is overwritten
    // with another installation (UEFI: GRUB and Debian, tagged mvimage=second), the way a
    // provisioning tool writes a whole-disk image; the manager powers it on and the firmware
    // boots the new OS. The manager and a neighbour notice nothing.
    let manager = format!(
        "{}\nrole = \"manager\"\nstaging = \"64MiB\"\n\n",
        linux_slice("manager", "1", "256MiB", "").trim_end()
    );
    let mut s = Scenario::new("firmware_reimage")
        .inline_node(4, 2 << 30)
        .disk(1 << 30)
        .timeout(Duration::from_secs(480))
        .plan(&plan(&[
            manager,
            with_nvme(&firmware_slice("metal", "1", "384MiB"), 1, "512MiB"),
            probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]));
    s.fresh_disk();
    s.install(
        1,
        Installation {
            extra: "mvimage=first",
            ..Installation::new(Loader::Extlinux)
        },
    );
    let second = s.share_image(
        1,
        "second",
        Installation {
            extra: "mvimage=second",
            ..Installation::new(Loader::Efi)
        },
    );
    let report = |tag: &str| {
        slice(
            "metal",
            &format!(r#"^SLICE-REPORT \{{"slice":"metal",.*\bmvimage={tag}\b"#),
        )
    };
    let says = |regex: &str| slice("manager", regex);
    let stopped = hv("^slice metal stopped: forced off by the manager");
    // The manager is slice 1: console input goes to its shell from the start.
    let mut inputs = vec![Input::wait(shell_ready("manager"))];
    inputs.extend(shell_script(
        "manager",
        report("first"),
        &["microvisorctl off metal; echo OFF rc=$?"],
    ));
    inputs.push(Input::wait(stopped.clone()));
    inputs.push(
        Input::after(says("^OFF rc=0$"), &shell_line("microvisorctl on metal")).writing(second),
    );
    let mut s = s
        .healthy(&["manager", "beat"])
        .expect(Expect::Sequence(vec![
            slice("metal", "^U-Boot 20"),
            slice("metal", "^Found /boot/extlinux/extlinux.conf"),
            report("first"),
            stopped,
            hv("^slice metal started"),
            slice("metal", "^U-Boot 20"),
            slice(
                "metal",
                "^Found EFI removable media binary efi/boot/bootaa64.efi",
            ),
            slice("metal", "Welcome to GRUB!"),
            report("second"),
        ]))
        .expect(Expect::Never(hv(
            "^slice (manager|beat) (stopped|restarted)",
        )))
        .expect(Expect::Line {
            pattern: slice("beat", "^HEARTBEAT [0-9]+ ok$"),
            count: 2 * BEATS,
        });
    for input in inputs {
        s = s.input(input);
    }
    s.run();
}

#[test]
fn the_probe_installed_on_a_disk_and_booted_by_the_firmware_finds_every_attack_contained() {
    // The firmware must leave nothing behind that weakens isolation: the bare-metal probe,
    // installed on the slice's disk and booted by U-Boot through extlinux (no initrd), runs
    // the attack count scenario's attacks (tests/tests/attacks.rs) from there, on both its
    // vCPUs (vCPU 1 is the racer, brought up with PSCI CPU_ON after U-Boot has gone); every
    // one must be attempted and contained, and the neighbours keep beating.
    let attacks = format!("attack={COUNTED_ATTACKS} heartbeat=500");
    let expected = requested_attacks(&attacks).len();
    let probe = std::fs::read(built().native_probe_image("firmware_probe_kernel")).unwrap();
    let mut s = Scenario::new("firmware_probe")
        .disk(256 << 20)
        .plan(&plan(&[
            with_nvme(&firmware_slice("fwprobe", "2", "128MiB"), 1, "64MiB"),
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
            probe_slice("other", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]));
    s.fresh_disk();
    s.install(
        0,
        Installation {
            os: Os::BareMetal(&probe),
            extra: &attacks,
            ..Installation::new(Loader::Extlinux)
        },
    );
    let count = format!("^ATTACKS {expected} contained {expected} not-contained 0 unverified 0$");
    s.all_healthy()
        .expect(Expect::Sequence(vec![
            slice("fwprobe", "^U-Boot 20"),
            slice("fwprobe", "^Found /boot/extlinux/extlinux.conf"),
            slice("fwprobe", &count),
        ]))
        .expect(Expect::Attacks {
            slice: "fwprobe".into(),
            attacks: requested_attacks(&attacks),
        })
        .expect(Expect::HeartbeatsAfter {
            after: slice("fwprobe", "^ATTACKS "),
            slices: vec!["fwprobe".into(), "victim".into(), "other".into()],
            count: BEATS,
        })
        .expect(Expect::Never(hv("^slice fwprobe stopped")))
        .expect(Expect::Never(slice("victim", "CORRUPT")))
        .run();
}
