//! `/init` (`init.sh`) run by the host's `sh` on fake `/proc` and `/sys` trees: the slice
//! report it prints and the disk steps it runs.

use std::path::PathBuf;
use std::process::Command;

use super::{INIT_SCRIPT, UDHCPC_SCRIPT, temp_dir};

/// A fake `/proc` + `/sys` as the init script reads them.
struct FakeRoot {
    dir: PathBuf,
}

impl FakeRoot {
    fn new(name: &str) -> Self {
        Self {
            dir: temp_dir(&format!("root-{name}")),
        }
    }

    fn write(&self, path: &str, bytes: &[u8]) -> &Self {
        let path = self.dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        self
    }

    fn cpu(&self, node: &str, reg: &[u8]) -> &Self {
        self.write(&format!("proc/device-tree/cpus/{node}/reg"), reg)
    }

    /// Runs the report part of `/init` with the host's `sh`; returns its output lines.
    fn report(&self) -> Vec<String> {
        self.run(&[])
    }

    /// Runs the disk steps of `/init` on `disk.raw` in the fake root (`sys/block/nvme0n1/size`
    /// gives its size); returns the output lines.
    fn disk(&self, steps: &str) -> Vec<String> {
        self.disk_on(steps, &self.dir.join("disk.raw"))
    }

    /// Runs the disk steps of `/init` on `disk` (a file or a device such as `/dev/full`) with
    /// a fake `wget` that serves `served/<path>` for `http://<host>/<path>` (logging
    /// "wget <URL>") and fails as busybox's does on a 404 otherwise.
    fn disk_on(&self, steps: &str, disk: &std::path::Path) -> Vec<String> {
        let bin = self.dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let root = self.dir.display();
        let wget = format!(
            "#!/bin/sh\n\
             while [ $# -gt 0 ]; do case $1 in -O) o=$2; shift ;; *://*) u=$1 ;; esac; shift; done\n\
             echo \"wget $u\" >>{root}/log\n\
             f={root}/served/${{u#*://*/}}\n\
             if [ ! -f \"$f\" ]; then echo 'wget: server returned error: HTTP/1.1 404 Not Found' >&2; exit 1; fi\n\
             cat \"$f\" >\"$o\"\n"
        );
        std::fs::write(bin.join("wget"), wget).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("wget"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        self.run(&[
            ("MICROVISOR_INIT_DISK", steps.as_ref()),
            ("MICROVISOR_DISK", disk.as_os_str()),
            ("MICROVISOR_DISK_TMP", tmp.as_os_str()),
            ("MICROVISOR_INIT_PATH", bin.as_os_str()),
        ])
    }

    /// Runs the network set-up and the report of `/init` with fake `insmod`, `ip`, `udhcpc`
    /// and `usleep` (see [`FakeRoot::fake_tools`]); returns the output lines.
    fn net(&self) -> Vec<String> {
        let bin = self.fake_tools();
        self.write("etc/udhcpc.script", UDHCPC_SCRIPT.as_bytes());
        self.run(&[
            ("MICROVISOR_INIT_NET", "1".as_ref()),
            ("MICROVISOR_INIT_PATH", bin.as_os_str()),
        ])
    }

    /// A network interface `name` with MAC `mac`, backed by a device.
    fn nic(&self, name: &str, mac: &str) -> &Self {
        self.write(
            &format!("sys/class/net/{name}/address"),
            format!("{mac}\n").as_bytes(),
        )
        .write(&format!("sys/class/net/{name}/device/vendor"), b"0x1af4\n")
    }

    /// Fake tools in `bin/`, logging to `log` in the root: `insmod` (fails for the module
    /// named in `insmod-fails`), `ip` (addresses kept in `addresses`, one "<dev> <addr>" a
    /// line), `udhcpc` (runs the -s script with the lease "<dev> <ip> <mask>" of
    /// `dhcp-offers`, else fails) and `usleep` (returns at once).
    fn fake_tools(&self) -> PathBuf {
        let root = self.dir.display();
        let tools = [
            (
                "insmod",
                format!(
                    "echo \"insmod ${{1##*/}}\" >>{root}/log\n\
                     grep -qx \"${{1##*/}}\" {root}/insmod-fails 2>/dev/null && exit 1\nexit 0\n"
                ),
            ),
            (
                "ip",
                format!(
                    "echo \"ip $*\" >>{root}/log\ntouch {root}/addresses\n\
                     case \"$*\" in\n\
                     'addr add '*) echo \"$5 $3\" >>{root}/addresses ;;\n\
                     '-4 addr flush dev '*) grep -v \"^$5 \" {root}/addresses >{root}/a.tmp; \
                     mv {root}/a.tmp {root}/addresses ;;\n\
                     '-4 addr show dev '*) grep \"^$5 \" {root}/addresses | \
                     while read -r d a; do echo \"    inet $a scope global $d\"; done ;;\n\
                     esac\n"
                ),
            ),
            (
                "udhcpc",
                format!(
                    "echo \"udhcpc $*\" >>{root}/log\n\
                     while [ $# -gt 0 ]; do case $1 in -i) i=$2; shift ;; -s) s=$2; shift ;; esac; \
                     shift; done\n\
                     grep \"^$i \" {root}/dhcp-offers 2>/dev/null | {{ read -r d a m || exit 1; \
                     interface=$d ip=$a mask=$m sh \"$s\" deconfig && \
                     interface=$d ip=$a mask=$m sh \"$s\" bound; }}\n"
                ),
            ),
            ("usleep", "exit 0\n".to_string()),
        ];
        let bin = self.dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (name, body) in tools {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        bin
    }

    /// Runs the network steps `steps` of `/init` with a fake `wget` that serves `pages/<ip>`
    /// (after failing as many times as `fail-first/<ip>` says) and a `usleep` that returns at
    /// once; `proc/uptime` gives the uptime. Returns the output lines.
    fn net_steps(&self, steps: &str) -> Vec<String> {
        let bin = self.fake_tools();
        let root = self.dir.display();
        let wget = format!(
            "#!/bin/sh\n\
             while [ $# -gt 0 ]; do case $1 in -O) o=$2; shift ;; http://*) u=$1 ;; esac; shift; done\n\
             ip=${{u#http://}}; ip=${{ip%/}}\n\
             echo \"wget $ip\" >>{root}/log\n\
             f={root}/fail-first/$ip\n\
             if [ -f \"$f\" ] && [ \"$(cat \"$f\")\" -gt 0 ]; then echo $(($(cat \"$f\") - 1)) >\"$f\"; exit 1; fi\n\
             [ -f {root}/pages/$ip ] || exit 1\n\
             cat {root}/pages/$ip >\"$o\"\n"
        );
        std::fs::write(bin.join("wget"), wget).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("wget"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        self.run(&[
            ("MICROVISOR_INIT_NET_STEPS", steps.as_ref()),
            ("MICROVISOR_INIT_PATH", bin.as_os_str()),
            ("MICROVISOR_NET_TMP", tmp.as_os_str()),
        ])
    }

    /// The fake tools' log.
    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn run(&self, env: &[(&str, &std::ffi::OsStr)]) -> Vec<String> {
        let script = self.dir.join("init.sh");
        std::fs::write(&script, INIT_SCRIPT).unwrap();
        let out = Command::new("sh")
            .arg(&script)
            .env("MICROVISOR_INIT_ROOT", &self.dir)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }
}

fn be(values: &[u64], cells: usize) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| v.to_be_bytes()[8 - cells * 4..].to_vec())
        .collect()
}

fn report_json(lines: &[String]) -> serde_json::Value {
    let json = lines[0]
        .strip_prefix("SLICE-REPORT ")
        .unwrap_or_else(|| panic!("{lines:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

#[test]
fn init_reports_a_slice_and_passes() {
    let root = FakeRoot::new("pass");
    root.write("proc/device-tree/#address-cells", &be(&[2], 1))
        .write("proc/device-tree/#size-cells", &be(&[2], 1))
        .write("proc/device-tree/chosen/microvisor,slice-name", b"web-0\0")
        .write("proc/device-tree/cpus/#address-cells", &be(&[1], 1))
        .cpu("cpu@0", &be(&[0], 1))
        .cpu("cpu@1", &be(&[1], 1))
        .write(
            "proc/device-tree/memory@40000000/reg",
            &be(&[0x4000_0000, 512 << 20], 2),
        )
        .write("proc/device-tree/memory@40000000/device_type", b"memory\0")
        .write("sys/devices/system/cpu/online", b"0-1\n")
        .write(
            "proc/meminfo",
            b"MemTotal:         485312 kB\nMemFree:          400000 kB\n",
        )
        .write("proc/sys/kernel/osrelease", b"6.1.0-56-cloud-arm64\n")
        .write(
            "proc/cmdline",
            b"console=ttyAMA0 say=\"hi\\there\"\ttab\x01 microvisor.heartbeat=500\nnext\n",
        );
    let lines = root.report();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let report = report_json(&lines);
    assert_eq!(
        report,
        serde_json::json!({
            "slice": "web-0",
            "cpus": 2,
            "mpidrs": [0, 1],
            "memory_bytes": 512u64 << 20,
            "memory_base": "0x40000000",
            "dt_cpus": 2,
            "mem_total_kib": 485_312,
            "net": [],
            "kernel": "6.1.0-56-cloud-arm64",
            "cmdline": "console=ttyAMA0 say=\"hi\\there\"\ttab microvisor.heartbeat=500\nnext",
        })
    );
    let keys: Vec<&str> = lines[0].split('"').skip(1).step_by(2).take(3).collect();
    assert_eq!(keys, ["slice", "web-0", "cpus"], "slice comes first");
    assert_eq!(lines[1], "PROBE PASS");
}

#[test]
fn init_names_the_disk_its_root_is_mounted_from() {
    // Installed on its share and booted by firmware, Linux mounts / from a partition: the last
    // mount on / in mountinfo names its device numbers, /sys/dev/block names the device.
    let root = FakeRoot::new("disk-root");
    root.write("proc/device-tree/chosen/microvisor,slice-name", b"metal\0")
        .cpu("cpu@0", &be(&[0], 1))
        .write(
            "proc/device-tree/memory@40000000/reg",
            &be(&[0x4000_0000, 256 << 20], 2),
        )
        .write("sys/devices/system/cpu/online", b"0\n")
        .write("proc/meminfo", b"MemTotal:         200000 kB\n")
        .write(
            "proc/self/mountinfo",
            b"1 1 0:2 / / rw - rootfs rootfs rw\n\
              22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/root rw\n\
              23 22 0:21 / /proc rw - proc proc rw\n",
        );
    let block = root.dir.join("sys/dev/block");
    std::fs::create_dir_all(&block).unwrap();
    std::os::unix::fs::symlink(
        "../../devices/pci0000:00/0000:00:00.0/nvme/nvme0/nvme0n1/nvme0n1p2",
        block.join("259:2"),
    )
    .unwrap();
    let report = report_json(&root.report());
    assert_eq!(report["root"], "nvme0n1p2");
    // An initramfs: / is rootfs, which has no block device.
    let ram = FakeRoot::new("ram-root");
    ram.write("proc/device-tree/chosen/microvisor,slice-name", b"metal\0")
        .write(
            "proc/self/mountinfo",
            b"1 1 0:2 / / rw - rootfs rootfs rw\n",
        );
    assert!(report_json(&ram.report()).get("root").is_none());
}

#[test]
fn init_sums_memory_nodes_sorts_cpus_and_defaults_to_native() {
    let big = 6u64 << 30;
    let root = FakeRoot::new("native");
    root.write("proc/device-tree/#address-cells", &be(&[2], 1))
        .write("proc/device-tree/#size-cells", &be(&[2], 1))
        .cpu("cpu@a", &be(&[0x10a], 2))
        .cpu("cpu@2", &be(&[2], 2))
        .cpu("cpu@100000000", &be(&[0x1_0000_0000], 2))
        .write(
            "proc/device-tree/memory@140000000/reg",
            &be(&[0x1_4000_0000, big, 0x2_0000_0000, 1 << 30], 2),
        )
        .write(
            "proc/device-tree/memory@40000000/reg",
            &be(&[0x4000_0000, 1 << 30], 2),
        )
        .write("sys/devices/system/cpu/online", b"0,2-3\n")
        .write("proc/meminfo", b"MemTotal:        8000000 kB\n")
        .write("proc/cmdline", b"");
    let lines = root.report();
    let report = report_json(&lines);
    assert_eq!(report["slice"], "native");
    assert_eq!(
        report["mpidrs"],
        serde_json::json!([2, 0x10a, 0x1_0000_0000u64])
    );
    assert_eq!(report["cpus"], 3);
    assert_eq!(report["dt_cpus"], 3);
    assert_eq!(report["memory_bytes"], big + (2 << 30));
    assert_eq!(report["memory_base"], "0x40000000", "lowest base");
    assert_eq!(report["cmdline"], "");
    assert_eq!(report["kernel"], "");
    assert_eq!(lines[1], "PROBE PASS");
}

#[test]
fn init_fails_on_offline_cpus_and_too_much_memtotal() {
    let root = FakeRoot::new("fail");
    root.cpu("cpu@0", &be(&[0], 1))
        .cpu("cpu@1", &be(&[1], 1))
        // No #address-cells/#size-cells: the defaults 2 and 1 apply (12-byte entries).
        .write(
            "proc/device-tree/memory@40000000/reg",
            &[be(&[0x4000_0000], 2), be(&[64 << 20], 1)].concat(),
        )
        .write("sys/devices/system/cpu/online", b"0\n")
        .write("proc/meminfo", b"MemTotal:          70000 kB\n");
    let lines = root.report();
    let report = report_json(&lines);
    assert_eq!(report["memory_bytes"], 64 << 20);
    assert_eq!(
        (report["cpus"].as_u64(), report["dt_cpus"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        lines[1],
        "PROBE FAIL cpus-online(1)-not-dt-cpus(2) memtotal-above-dt-memory(70000KiB>65536KiB)"
    );
}

#[test]
fn init_fails_without_cpus_memory_or_meminfo() {
    let lines = FakeRoot::new("empty").report();
    let report = report_json(&lines);
    assert_eq!(report["memory_base"], serde_json::Value::Null);
    assert_eq!(report["mpidrs"], serde_json::json!([]));
    assert_eq!(lines[1], "PROBE FAIL dt-no-cpus dt-no-memory no-memtotal");
}

/// One 4 KiB block as the disk steps write it.
fn disk_block(label: &str) -> Vec<u8> {
    format!("{label:<4095}\n").into_bytes()
}

/// A fake root whose slice "a" has a 4 MiB disk (1024 blocks of 4 KiB), all zeros.
fn disk_root(name: &str) -> FakeRoot {
    let root = FakeRoot::new(name);
    root.write("proc/device-tree/chosen/microvisor,slice-name", b"a\0")
        .write("sys/block/nvme0n1/size", b"8192\n")
        .write("disk.raw", &vec![0; 4 << 20]);
    root
}

#[test]
fn disk_steps_write_verify_and_check_the_end() {
    let root = disk_root("disk");
    root.write("proc/uptime", b"7.25 3.50\n");
    let lines = root.disk("verify,write,end,at:7,load:1,verify-load:1");
    assert_eq!(
        lines,
        [
            "DISK info bytes=4194304 blocks=1024",
            "DISK verify first empty",
            "DISK verify middle empty",
            "DISK verify last empty",
            "DISK write first ok",
            "DISK write middle ok",
            "DISK write last ok",
            "DISK end ok read-past=0 read-across=512",
            "DISK at 7",
            "DISK load start 1MiB at=256",
            "DISK write load ok",
            "DISK verify load ok",
            "DISK done verify,write,end,at:7,load:1,verify-load:1",
        ]
    );
    let disk = std::fs::read(root.dir.join("disk.raw")).unwrap();
    assert_eq!(disk.len(), 4 << 20, "nothing written past the end");
    let block = |i: usize| &disk[i * 4096..(i + 1) * 4096];
    assert_eq!(block(0), disk_block("MVDISK a first 0"));
    assert_eq!(block(512), disk_block("MVDISK a middle 512"));
    assert_eq!(block(1023), disk_block("MVDISK a last 1023"));
    assert_eq!(block(256), disk_block("MVDISK a load 256"));
    assert_eq!(block(511), disk_block("MVDISK a load 511"));
    assert!(block(1).iter().all(|&b| b == 0) && block(512 + 1).iter().all(|&b| b == 0));

    // Written before: verify passes, a second run sums the same bytes.
    let again = root.disk("verify,sum,sum");
    assert_eq!(
        &again[1..4],
        [
            "DISK verify first ok",
            "DISK verify middle ok",
            "DISK verify last ok"
        ]
    );
    let sums: Vec<&str> = again[4..6].iter().map(String::as_str).collect();
    assert!(
        sums[0].starts_with("DISK sum 4194304 ") && sums[0].len() == 17 + 32,
        "{sums:?}"
    );
    assert_eq!(sums[0], sums[1]);
}

#[test]
fn disk_steps_name_what_they_found_instead() {
    let root = disk_root("disk-bad");
    root.disk("write");
    // Another slice's block in the middle, garbage at the end of the load region.
    let mut disk = std::fs::read(root.dir.join("disk.raw")).unwrap();
    disk[512 * 4096..513 * 4096].copy_from_slice(&disk_block("MVDISK b middle 512"));
    disk[1023 * 4096 + 100] = b'!';
    std::fs::write(root.dir.join("disk.raw"), &disk).unwrap();
    let lines = root.disk("verify,verify-load:1,load:3,bogus");
    assert_eq!(
        lines[1..],
        [
            "DISK verify first ok",
            "DISK verify middle FAIL found=\"MVDISK b middle 512\" at=512",
            "DISK verify last FAIL found=\"MVDISK a last 1023\" at=1023",
            "DISK verify load empty",
            "DISK load FAIL too-large",
            "DISK FAIL unknown-step bogus",
            "DISK done verify,verify-load:1,load:3,bogus",
        ]
    );

    let none = FakeRoot::new("disk-none");
    assert_eq!(none.disk("write"), ["DISK FAIL no-disk"]);
}

/// md5 of `bytes` in hex, by the host's `md5sum`.
fn md5_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

/// [`disk_root`] with a disk holding 0xee everywhere: what an install leaves shows.
fn install_root(name: &str) -> FakeRoot {
    let root = disk_root(name);
    root.write("disk.raw", &vec![0xee; 4 << 20]);
    root
}

#[test]
fn disk_install_writes_an_image_from_byte_0_and_reads_it_back() {
    let root = install_root("install");
    let image: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
    root.write("served/images/disk.img", &image);
    let url = "http://10.0.2.100/images/disk.img";
    let lines = root.disk(&format!("install:{url}"));
    assert_eq!(
        lines,
        [
            "DISK info bytes=4194304 blocks=1024".to_string(),
            format!("DISK install ok bytes=1000003 md5={}", md5_hex(&image)),
            format!("DISK done install:{url}"),
        ]
    );
    let disk = std::fs::read(root.dir.join("disk.raw")).unwrap();
    assert_eq!(disk.len(), 4 << 20, "nothing written past the end");
    assert!(disk[..image.len()] == image[..], "the image from byte 0");
    assert!(
        disk[image.len()..].iter().all(|&b| b == 0xee),
        "nothing after it"
    );
    assert_eq!(root.log(), [format!("wget {url}")]);
    let left: Vec<_> = std::fs::read_dir(root.dir.join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "the download is not kept: {left:?}");
    // An image exactly the disk's size fits.
    let whole = vec![0x5a; 4 << 20];
    root.write("served/whole.img", &whole);
    let lines = root.disk("install:http://10.0.2.100/whole.img");
    assert_eq!(
        lines[1],
        format!("DISK install ok bytes=4194304 md5={}", md5_hex(&whole))
    );
}

#[test]
fn disk_install_leaves_the_disk_alone_without_a_whole_image_that_fits() {
    let root = install_root("install-refused");
    root.write("served/empty.img", b"")
        .write("served/big.img", &vec![1; (4 << 20) + 1]);
    let steps = "install:http://10.0.2.100/missing.img,install:http://10.0.2.100/empty.img,                 install:http://10.0.2.100/big.img,install:ftp://10.0.2.100/big.img,                 install:http://,install:";
    let lines = root.disk(steps);
    assert_eq!(
        lines[1..],
        [
            "DISK install FAIL download wget:-server-returned-error:-HTTP/1.1-404-Not-Found",
            "DISK install FAIL empty",
            "DISK install FAIL too-large bytes=4194305 disk=4194304",
            "DISK install FAIL not-http",
            "DISK install FAIL not-http",
            "DISK install FAIL not-http",
            &format!("DISK done {steps}"),
        ]
    );
    let disk = std::fs::read(root.dir.join("disk.raw")).unwrap();
    assert!(
        disk.len() == 4 << 20 && disk.iter().all(|&b| b == 0xee),
        "the disk is as it was"
    );
    assert_eq!(root.log().len(), 3, "only http URLs are fetched");
    let left: Vec<_> = std::fs::read_dir(root.dir.join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "no download is kept: {left:?}");
}

#[test]
fn disk_install_reports_a_disk_that_fails_writes_or_does_not_keep_them() {
    let root = disk_root("install-bad-disk");
    let image = vec![0x42; 10_000];
    root.write("served/disk.img", &image);
    let url = "install:http://10.0.2.100/disk.img";
    // /dev/full refuses every write.
    let full = root.disk_on(url, std::path::Path::new("/dev/full"));
    assert!(
        full[1].starts_with("DISK install FAIL dd-write ") && full[1].contains("No-space"),
        "{full:?}"
    );
    // A disk that loses a write: the fake `sync` run between the write and the read-back
    // changes byte 5.
    let disk = root.dir.join("disk.raw");
    root.write(
        "bin/sync",
        format!(
            "#!/bin/sh\nprintf X | dd of={} bs=1 seek=5 conv=notrunc 2>/dev/null\n",
            disk.display()
        )
        .as_bytes(),
    );
    use std::os::unix::fs::PermissionsExt;
    let sync = root.dir.join("bin/sync");
    std::fs::set_permissions(&sync, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lost = root.disk(url);
    let mut read = image.clone();
    read[5] = b'X';
    assert_eq!(
        lost[1],
        format!(
            "DISK install FAIL verify md5={} image={}",
            md5_hex(&read),
            md5_hex(&image)
        )
    );
}

/// A fake root with a CPU, memory, `n` PCI network functions and the modules xtask puts in.
fn net_root(name: &str, functions: usize, cmdline: &str) -> FakeRoot {
    let root = FakeRoot::new(name);
    root.write("proc/device-tree/chosen/microvisor,slice-name", b"web\0")
        .cpu("cpu@0", &be(&[0], 1))
        .write(
            "proc/device-tree/memory@40000000/reg",
            &be(&[0x4000_0000, 0, 256 << 20], 1),
        )
        .write("sys/devices/system/cpu/online", b"0\n")
        .write("proc/meminfo", b"MemTotal:         200000 kB\n")
        .write("proc/cmdline", cmdline.as_bytes())
        .write("sys/bus/pci/devices/0000:00:00.0/class", b"0x060000\n");
    for i in 0..functions {
        root.write(
            &format!("sys/bus/pci/devices/0000:00:0{}.0/class", i + 3),
            b"0x020000\n",
        );
    }
    for (i, module) in super::NET_MODULES.iter().enumerate() {
        root.write(&super::module_path(i, module), b"\x7fELF");
    }
    root
}

#[test]
fn init_brings_nics_up_with_static_addresses_or_dhcp_and_reports_them() {
    let root = net_root(
        "net",
        3,
        "console=ttyAMA0 microvisor.ip=eth0:10.10.0.1/24 microvisor.ip=52:54:00:6D:76:02:10.20.0.9/16 \
         microvisor.ip=eth9:10.0.0.1/8",
    );
    root.nic("eth0", "52:54:00:6d:76:00")
        .nic("eth1", "52:54:00:6d:76:01")
        .nic("eth2", "52:54:00:6d:76:02")
        .write("sys/class/net/lo/address", b"00:00:00:00:00:00\n")
        .write("dhcp-offers", b"eth1 10.0.2.15 24\n");
    let lines = root.net();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let report = report_json(&lines);
    assert_eq!(
        report["net"],
        serde_json::json!([
            {"name": "eth0", "mac": "52:54:00:6d:76:00", "ipv4": "10.10.0.1/24"},
            {"name": "eth1", "mac": "52:54:00:6d:76:01", "ipv4": "10.0.2.15/24"},
            {"name": "eth2", "mac": "52:54:00:6d:76:02", "ipv4": "10.20.0.9/16"},
        ])
    );
    assert_eq!(lines[1], "PROBE PASS");
    let log = root.log();
    let insmods: Vec<&str> = log
        .iter()
        .filter_map(|l| l.strip_prefix("insmod "))
        .collect();
    let expected: Vec<String> = super::NET_MODULES
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{:02}-{m}.ko", i + 1))
        .collect();
    assert_eq!(insmods, expected, "load order");
    assert!(log.contains(&"ip link set eth0 up".to_string()), "{log:?}");
    assert!(
        log.contains(&"ip addr add 10.10.0.1/24 dev eth0".to_string()),
        "{log:?}"
    );
    let dhcp: Vec<&String> = log.iter().filter(|l| l.starts_with("udhcpc ")).collect();
    assert_eq!(dhcp.len(), 1, "only eth1 asks DHCP: {log:?}");
    let script = root.dir.join("etc/udhcpc.script");
    assert_eq!(
        *dhcp[0],
        format!("udhcpc -i eth1 -s {} -f -q -n -t 3 -T 2", script.display())
    );
    assert!(
        !log.iter().any(|l| l.contains(" lo ")),
        "lo is no NIC: {log:?}"
    );
}

#[test]
fn init_fails_on_nics_without_addresses_missing_interfaces_and_modules() {
    let root = net_root(
        "net-fail",
        3,
        "microvisor.ip=eth0:10.10.0.300.1/24 microvisor.ip=eth0:x",
    );
    root.nic("eth0", "52:54:00:6d:76:00")
        .nic("eth1", "52:54:00:6d:76:01")
        .write("insmod-fails", b"08-virtio_net.ko\n");
    let lines = root.net();
    let report = report_json(&lines);
    assert_eq!(report["net"][0]["ipv4"], serde_json::Value::Null);
    assert_eq!(
        lines[1],
        "PROBE FAIL net-module(virtio_net) nic-missing(2/3) net-no-ipv4(eth0) net-no-ipv4(eth1)"
    );
}

#[test]
fn a_long_command_line_is_cut_so_the_report_fits_a_console_line() {
    let long = format!("console=ttyAMA0 {}", "microvisor.pad=\"x\" ".repeat(120));
    let root = net_root("long", 1, &long);
    root.nic("eth0", "52:54:00:6d:76:00")
        .write("dhcp-offers", b"eth0 10.0.2.15 24\n");
    let lines = root.net();
    assert!(lines[0].len() <= 1023, "{} bytes", lines[0].len());
    // Escaped characters make the cut a little longer than the excess, never shorter.
    assert!(
        lines[0].len() > 800,
        "cut about what is needed: {}",
        lines[0].len()
    );
    let report = report_json(&lines);
    let cmdline = report["cmdline"].as_str().unwrap();
    assert!(
        cmdline.starts_with("console=ttyAMA0 microvisor.pad=\"x\""),
        "{cmdline}"
    );
    assert!(cmdline.ends_with("..."), "{cmdline}");
    assert_eq!(report["net"][0]["ipv4"], "10.0.2.15/24");
    assert_eq!(lines[1], "PROBE PASS");
}

#[test]
fn an_nvme_function_without_a_namespace_fails_and_a_host_bridge_alone_does_not() {
    let root = net_root("nvme", 0, "");
    root.write(
        "proc/device-tree/pcie@10000000/compatible",
        b"pci-host-ecam-generic\0",
    );
    assert_eq!(
        root.net()[1],
        "PROBE PASS",
        "QEMU's DT always has a host bridge"
    );
    root.write("sys/bus/pci/devices/0000:00:02.0/class", b"0x010802\n");
    assert_eq!(root.net()[1], "PROBE FAIL nvme-missing");
    root.write("sys/block/nvme0n1/size", b"8192\n")
        .write("sys/block/nvme0n1/mq/0/cpu_list", b"0\n");
    let lines = root.net();
    let report = report_json(&lines);
    assert_eq!(
        (
            report["nvme_bytes"].as_u64(),
            report["nvme_queues"].as_u64()
        ),
        (Some(4 << 20), Some(1))
    );
    assert_eq!(lines[1], "PROBE PASS");
}

#[test]
fn net_steps_fetch_pages_wait_for_a_peer_and_watch_it() {
    let root = FakeRoot::new("net-steps");
    root.write("proc/uptime", b"12.34 20.00\n")
        .write(
            "pages/10.10.0.2",
            b"<!DOCTYPE html>\n<title>slice db</title>\n<h1>slice db</h1>\n",
        )
        .write("pages/10.10.0.3", b"plain\x01text")
        .write("fail-first/10.10.0.2", b"2\n");
    let lines = root.net_steps("wget:10.10.0.2,watch:10.10.0.3:2,at:12,watch:10.10.0.9:1");
    assert_eq!(
        lines,
        [
            "NET GET 10.10.0.2 ok slice db",
            "NET GET 10.10.0.3 ok plain?text",
            "NET GET 10.10.0.3 ok plain?text",
            "NET at 12",
            "NET GET 10.10.0.9 failed",
            "NET done wget:10.10.0.2,watch:10.10.0.3:2,at:12,watch:10.10.0.9:1",
        ]
    );
    let tries = root.log().iter().filter(|l| *l == "wget 10.10.0.2").count();
    assert_eq!(tries, 3, "two failures, then the page");
}

#[test]
fn net_steps_give_up_on_a_silent_peer_and_name_bad_steps() {
    let root = FakeRoot::new("net-steps-bad");
    root.write("proc/uptime", b"5.00 5.00\n");
    let lines = root.net_steps("wget:10.10.0.7,wget:10.10.0,watch:10.10.0.1:x,ping:1,");
    assert_eq!(
        lines,
        [
            "NET GET 10.10.0.7 failed",
            "NET FAIL bad-address wget:10.10.0",
            "PROBE WARN cmdline bad-number microvisor.net=\"x\"",
            "NET FAIL unknown-step ping:1",
            "NET done wget:10.10.0.7,wget:10.10.0,watch:10.10.0.1:x,ping:1,",
        ]
    );
    let tries = root.log().iter().filter(|l| *l == "wget 10.10.0.7").count();
    assert_eq!(tries, 60, "bounded by NET_WAIT_TRIES");
}
