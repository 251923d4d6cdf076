//! `/init` (`init.sh`) run by the host's `sh` on fake `/proc` and `/sys` trees: the slice
//! report it prints and the disk steps it runs.

use std::path::PathBuf;
use std::process::Command;

use super::{INIT_SCRIPT, temp_dir};

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
        let disk = self.dir.join("disk.raw");
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        self.run(&[
            ("MICROVISOR_INIT_DISK", steps.as_ref()),
            ("MICROVISOR_DISK", disk.as_os_str()),
            ("MICROVISOR_DISK_TMP", tmp.as_os_str()),
        ])
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
            "kernel": "6.1.0-56-cloud-arm64",
            "cmdline": "console=ttyAMA0 say=\"hi\\there\"\ttab microvisor.heartbeat=500\nnext",
        })
    );
    let keys: Vec<&str> = lines[0].split('"').skip(1).step_by(2).take(3).collect();
    assert_eq!(keys, ["slice", "web-0", "cpus"], "slice comes first");
    assert_eq!(lines[1], "PROBE PASS");
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
