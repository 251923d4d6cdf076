//! What the guest runs: the initramfs with busybox, `iobench`, `powerkey`, `/init`
//! (`init.sh`) and the few files of `/etc` they need, and the manager's, which adds
//! `microvisorctl`, `microvisor-redfish` and the probe image; written with `crate::initramfs`.

use anyhow::Result;

use crate::initramfs::Archive;

/// `/init`: a busybox sh script.
pub const INIT_SCRIPT: &str = include_str!("init.sh");
/// `/etc/udhcpc.script`: what busybox `udhcpc -s` runs on a lease (busybox has no default
/// script: without one the lease is obtained and no address is set).
pub const UDHCPC_SCRIPT: &str = include_str!("udhcpc.sh");
/// Where `/init` finds the kernel modules it loads, in file name order.
pub const MODULES_DIR: &str = "lib/modules";

/// A kernel module for the initramfs: its name (`virtio_net`) and its `.ko` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The initramfs path of module `index` of the load order: `lib/modules/01-virtio_ring.ko`
/// (the number makes the file name order the load order).
pub fn module_path(index: usize, name: &str) -> String {
    format!("{MODULES_DIR}/{:02}-{name}.ko", index + 1)
}
/// `/etc/passwd` and `/etc/group`: root only (names in `ps`, `id`, `ls -l`).
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\n";
/// `/etc/inittab` for busybox init, which `/init` execs last: a shell on the console,
/// restarted when it exits (cttyhack gives it the real tty, so job control and Ctrl-C work).
pub const INITTAB: &str = "::respawn:/bin/cttyhack /bin/sh\n::ctrlaltdel:/sbin/reboot\n";

/// Where the probe image is in the initramfs (for `microvisorctl boot NAME --kernel`).
pub const PROBE_IMAGE: &str = "images/probe";

/// The programs and images of the initramfs besides busybox, built by xtask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tools {
    /// `/bin/iobench` (guest-images/iobench).
    pub iobench: Vec<u8>,
    /// `/bin/powerkey` (guest-images/manager), started by `/init`.
    pub powerkey: Vec<u8>,
    /// What only the manager's initramfs holds.
    pub manager: ManagerTools,
}

/// The manager's programs and images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerTools {
    /// `/bin/microvisorctl` (guest-images/manager).
    pub microvisorctl: Vec<u8>,
    /// `/bin/microvisor-redfish` (guest-images/redfish), started by `/init` on the manager.
    pub redfish: Vec<u8>,
    /// `/images/probe`: the bytes of `kernel = "probe"` (`crate::guest::probe_image`).
    pub probe: Vec<u8>,
}

/// Whose initramfs: a tenant's, or the manager's (with [`ManagerTools`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Tenant,
    Manager,
}

/// The initramfs: busybox (applet links made at boot by `busybox --install -s`), `tools`
/// (the manager's only in the manager's), `/init`, `/etc/inittab`, `/etc/passwd`,
/// `/etc/group`, `/etc/udhcpc.script`, `/dev/console`, the mount points, `/run` and
/// `modules` (in load order, at [`module_path`]), gzipped. Every Linux tenant gets the same
/// one; the manager's adds `microvisorctl`, the Redfish service and the probe image, which a
/// tenant has no use for (it has no control interface) and whose 3 MB every tenant's boot
/// would unpack.
pub fn initramfs(
    busybox: &[u8],
    tools: &Tools,
    modules: &[Module],
    flavour: Flavour,
) -> Result<Vec<u8>> {
    let mut a = Archive::new();
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root", "run", "images",
    ] {
        a.dir(dir, 0o755)?;
    }
    a.dir("tmp", 0o1777)?
        .file("bin/busybox", 0o755, busybox.to_vec())?
        .symlink("bin/sh", "busybox")?
        .file("bin/iobench", 0o755, tools.iobench.clone())?
        .file("bin/powerkey", 0o755, tools.powerkey.clone())?;
    if flavour == Flavour::Manager {
        let manager = &tools.manager;
        a.file("bin/microvisorctl", 0o755, manager.microvisorctl.clone())?
            .file("bin/microvisor-redfish", 0o755, manager.redfish.clone())?
            .file(PROBE_IMAGE, 0o644, manager.probe.clone())?;
    }
    a.char_device("dev/console", 0o600, 5, 1)?
        .file("init", 0o755, INIT_SCRIPT.as_bytes().to_vec())?
        .file("etc/inittab", 0o644, INITTAB.as_bytes().to_vec())?
        .file("etc/passwd", 0o644, PASSWD.as_bytes().to_vec())?
        .file("etc/group", 0o644, GROUP.as_bytes().to_vec())?
        .file(
            "etc/udhcpc.script",
            0o755,
            UDHCPC_SCRIPT.as_bytes().to_vec(),
        )?
        .dir(MODULES_DIR, 0o755)?;
    for (index, module) in modules.iter().enumerate() {
        a.file(
            &module_path(index, &module.name),
            0o644,
            module.bytes.clone(),
        )?;
    }
    Ok(a.to_gzip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initramfs::{Kind, read_newc};
    use flate2::read::GzDecoder;
    use std::io::Read;

    #[test]
    fn the_initramfs_holds_busybox_the_tools_init_and_mount_points() {
        let modules = vec![
            Module {
                name: "virtio_ring".into(),
                bytes: b"ring".to_vec(),
            },
            Module {
                name: "virtio_net".into(),
                bytes: b"net".to_vec(),
            },
        ];
        let tools = Tools {
            iobench: b"\x7fELF iobench".to_vec(),
            powerkey: b"\x7fELF powerkey".to_vec(),
            manager: ManagerTools {
                microvisorctl: b"\x7fELF microvisorctl".to_vec(),
                redfish: b"\x7fELF microvisor-redfish".to_vec(),
                probe: b"probe image".to_vec(),
            },
        };
        let make = |flavour| {
            let gz = initramfs(b"\x7fELF busybox", &tools, &modules, flavour).unwrap();
            let mut cpio = Vec::new();
            GzDecoder::new(gz.as_slice())
                .read_to_end(&mut cpio)
                .unwrap();
            (gz, read_newc(&cpio).unwrap())
        };
        let (gz, entries) = make(Flavour::Manager);
        assert_eq!(gz, make(Flavour::Manager).0, "deterministic");
        // A tenant's is the manager's without the manager's tools.
        let (_, tenant) = make(Flavour::Tenant);
        let names = |entries: &[crate::initramfs::ReadEntry]| -> Vec<String> {
            entries.iter().map(|e| e.name.clone()).collect()
        };
        let manager_only = ["bin/microvisorctl", "bin/microvisor-redfish", PROBE_IMAGE];
        let expected: Vec<String> = names(&entries)
            .into_iter()
            .filter(|n| !manager_only.contains(&n.as_str()))
            .collect();
        assert_eq!(names(&tenant), expected);
        let find = |n: &str| {
            entries
                .iter()
                .find(|e| e.name == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        assert_eq!(
            find("init").kind(),
            Some(Kind::File(INIT_SCRIPT.as_bytes().to_vec()))
        );
        assert_eq!(find("init").permissions(), 0o755);
        assert!(INIT_SCRIPT.starts_with("#!/bin/busybox sh\n"));
        assert_eq!(
            find("bin/busybox").kind(),
            Some(Kind::File(b"\x7fELF busybox".to_vec()))
        );
        assert_eq!(find("bin/sh").kind(), Some(Kind::Symlink("busybox".into())));
        assert_eq!(
            find("bin/iobench").kind(),
            Some(Kind::File(b"\x7fELF iobench".to_vec()))
        );
        assert_eq!(find("bin/iobench").permissions(), 0o755);
        for (tool, bytes) in [
            ("bin/microvisorctl", &b"\x7fELF microvisorctl"[..]),
            ("bin/powerkey", &b"\x7fELF powerkey"[..]),
            ("bin/microvisor-redfish", &b"\x7fELF microvisor-redfish"[..]),
        ] {
            assert_eq!(
                find(tool).kind(),
                Some(Kind::File(bytes.to_vec())),
                "{tool}"
            );
            assert_eq!(find(tool).permissions(), 0o755, "{tool}");
        }
        assert_eq!(
            find(PROBE_IMAGE).kind(),
            Some(Kind::File(b"probe image".to_vec()))
        );
        assert_eq!(find(PROBE_IMAGE).permissions(), 0o644);
        assert_eq!(
            find("dev/console").kind(),
            Some(Kind::CharDevice { major: 5, minor: 1 })
        );
        assert_eq!(find("tmp").permissions(), 0o1777);
        for dir in [
            "proc", "sys", "dev", "etc", "sbin", "usr/bin", "usr/sbin", "run", "images",
        ] {
            assert_eq!(find(dir).kind(), Some(Kind::Dir), "{dir}");
        }
        assert_eq!(
            find("etc/inittab").kind(),
            Some(Kind::File(INITTAB.as_bytes().to_vec()))
        );
        assert_eq!(
            find("etc/passwd").kind(),
            Some(Kind::File(PASSWD.as_bytes().to_vec()))
        );
        assert_eq!(
            find("etc/udhcpc.script").kind(),
            Some(Kind::File(UDHCPC_SCRIPT.as_bytes().to_vec()))
        );
        assert_eq!(find("etc/udhcpc.script").permissions(), 0o755);
        assert_eq!(
            find("lib/modules/01-virtio_ring.ko").kind(),
            Some(Kind::File(b"ring".to_vec()))
        );
        assert_eq!(
            find("lib/modules/02-virtio_net.ko").kind(),
            Some(Kind::File(b"net".to_vec()))
        );
    }

    #[test]
    fn init_starts_powerkey_in_the_background_before_the_report() {
        // In a subshell: not a child of /init's shell, whose `wait` (net_up) would wait for it.
        let start = "[ -x /bin/powerkey ] && (/bin/powerkey &)\n";
        let at = INIT_SCRIPT.find(start).expect("/init starts powerkey");
        let devtmpfs = INIT_SCRIPT.find("mount -t devtmpfs").unwrap();
        let report = INIT_SCRIPT.find("\nnet_up\nreport\n").unwrap();
        assert!(
            devtmpfs < at && at < report,
            "after /dev, before the report"
        );
        assert_eq!(INIT_SCRIPT.matches("powerkey &").count(), 1);
    }
}
