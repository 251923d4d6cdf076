//! The built-in Linux guest booted natively on QEMU `virt` (no microvisor): what `/init`
//! reports and does for each `microvisor.*` option. Needs apt (first run downloads ~22 MB) and
//! QEMU, and takes ~5-10 s per boot under TCG, so these are ignored by default:
//! `cargo test -p xtask --test linux_native -- --ignored`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use xtask::linux::{self, LinuxGuest};
use xtask::workspace::Workspace;

/// Longest any single expectation may take (TCG on a busy 2-core machine).
const TIMEOUT: Duration = Duration::from_secs(90);

fn guest() -> Arc<LinuxGuest> {
    static GUEST: OnceLock<Arc<LinuxGuest>> = OnceLock::new();
    GUEST
        .get_or_init(|| {
            let ws = Workspace::locate().expect("workspace");
            linux::guest(&ws, true).unwrap_or_else(|e| panic!("linux guest: {e:#}"))
        })
        .clone()
}

/// A QEMU boot whose console lines arrive on a channel; killed on drop.
struct Boot {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
    started: Instant,
}

impl Boot {
    fn start(cpus: u32, memory_mib: u64, append: &str, no_reboot: bool) -> Boot {
        let guest = guest();
        let mut cmd = linux::native_qemu_command(&guest, cpus, memory_mib, append);
        if no_reboot {
            cmd.arg("-no-reboot");
        }
        Boot::spawn(cmd)
    }

    fn spawn(mut cmd: std::process::Command) -> Boot {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting qemu-system-aarch64");
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Boot {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            started: Instant::now(),
        }
    }

    /// The first line from now on that contains `needle` (the whole console so far on failure).
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {needle:?} within {TIMEOUT:?}:\n{}",
                        self.seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("QEMU ended before {needle:?}:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// The SLICE-REPORT object, checked to be followed by PROBE PASS.
    fn report(&mut self) -> serde_json::Value {
        let line = self.expect("SLICE-REPORT ");
        let json = line.split_once("SLICE-REPORT ").expect("has it").1;
        let report = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        let verdict = self.expect("PROBE ");
        assert_eq!(verdict, "PROBE PASS", "{}", self.seen.join("\n"));
        eprintln!("PROBE PASS after {:?}", self.started.elapsed());
        report
    }

    fn type_line(&mut self, text: &str) {
        self.stdin
            .write_all(format!("{text}\n").as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("writing to the console");
    }

    /// Waits for QEMU to exit by itself.
    fn exits(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for QEMU") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "QEMU still running:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "boots QEMU (and fetches Debian packages on first use)"]
fn reports_two_cpus_and_512_mib_and_passes() {
    let mut boot = Boot::start(2, 512, "microvisor.test=a\"b", false);
    let r = boot.report();
    assert_eq!(r["slice"], "native");
    assert_eq!(r["cpus"], 2);
    assert_eq!(r["dt_cpus"], 2);
    assert_eq!(r["mpidrs"], serde_json::json!([0, 1]));
    assert_eq!(r["memory_bytes"], 512u64 << 20);
    assert_eq!(r["memory_base"], "0x40000000");
    let kib = r["mem_total_kib"].as_u64().unwrap();
    assert!(kib > 400 << 10 && kib <= 512 << 10, "{kib}");
    assert_eq!(r["kernel"], guest().release.as_str());
    let cmdline = r["cmdline"].as_str().unwrap();
    assert!(cmdline.starts_with(linux::DEFAULT_CMDLINE), "{cmdline}");
    assert!(cmdline.ends_with(" microvisor.test=a\"b"), "{cmdline}");
}

#[test]
#[ignore = "boots QEMU (and fetches Debian packages on first use)"]
fn three_cpus_and_256_mib_with_load_and_heartbeats() {
    let mut boot = Boot::start(3, 256, "microvisor.load=1 microvisor.heartbeat=300", false);
    let r = boot.report();
    assert_eq!(
        (r["cpus"].as_u64(), r["dt_cpus"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(r["mpidrs"], serde_json::json!([0, 1, 2]));
    assert_eq!(r["memory_bytes"], 256u64 << 20);
    boot.expect("LOAD 3 started");
    for n in 1..=3 {
        // The first heartbeat may share its line with the shell prompt.
        boot.expect(&format!("HEARTBEAT {n} ok"));
    }
}

#[test]
#[ignore = "boots QEMU (and fetches Debian packages on first use)"]
fn poweroff_after_stops_the_machine() {
    let mut boot = Boot::start(2, 256, "microvisor.action=poweroff-after:1", true);
    boot.report();
    boot.expect("PROBE ACTION poweroff");
    assert!(boot.exits().success());
}

#[test]
#[ignore = "boots QEMU (and fetches Debian packages on first use)"]
fn reboot_after_resets_the_machine() {
    let mut boot = Boot::start(2, 256, "microvisor.action=reboot-after:1", true);
    boot.report();
    boot.expect("PROBE ACTION reboot");
    // -no-reboot: QEMU exits on the reset PSCI SYSTEM_RESET asks for.
    assert!(boot.exits().success());
}

#[test]
#[ignore = "boots QEMU (and fetches Debian packages on first use)"]
fn the_shell_answers_and_reboot_from_it_boots_again() {
    let mut boot = Boot::start(2, 256, "", false);
    boot.report();
    boot.expect("built-in shell (ash)");
    boot.type_line("echo shell-$((6 * 7))");
    boot.expect("shell-42");
    boot.type_line("reboot");
    boot.expect("reboot: Restarting system");
    let again = boot.report();
    assert_eq!(again["cpus"], 2);
}

#[test]
#[ignore = "boots QEMU (and fetches Debian packages on first use)"]
fn the_power_key_powers_off_and_microvisorctl_finds_no_control_interface() {
    let mut boot = Boot::start(2, 256, "", true);
    boot.report();
    boot.expect("built-in shell (ash)");
    boot.type_line("microvisorctl list; echo ctl-exit=$?");
    boot.expect("microvisorctl: this slice has no control interface (not the manager)");
    boot.expect("ctl-exit=2");
    // QEMU's monitor (Ctrl-A c on the -nographic console): the virt machine's power key,
    // GPIO line 3 of its PL061, which `powerkey` (started by /init) waits for.
    boot.stdin
        .write_all(b"\x01csystem_powerdown\n")
        .and_then(|()| boot.stdin.flush())
        .expect("writing to the monitor");
    boot.expect("powerkey: power key pressed, powering off");
    boot.expect("reboot: Power down");
    assert!(boot.exits().success());
}

#[test]
#[ignore = "boots QEMU (and fetches Debian packages on first use)"]
fn warns_about_bad_options() {
    let mut boot = Boot::start(
        1,
        256,
        "microvisor.heartbeat=fast microvisor.action=explode",
        true,
    );
    boot.report();
    boot.expect("PROBE WARN cmdline bad-number microvisor.heartbeat=\"fast\"");
    boot.expect("PROBE WARN cmdline unknown-action \"explode\"");
}

/// The guest with the NICs a slice of the default node gets (one on the slice hub, one on its
/// own restricted user network, behind root ports and QEMU's SMMUv3), without the microvisor:
/// the hub NIC takes the static address the command line gives its MAC, the host NIC gets
/// 10.0.2.15 by DHCP, and the host reads the httpd page through the forwarded port.
#[test]
#[ignore = "boots QEMU (and fetches Debian packages on first use)"]
fn nics_get_addresses_and_the_host_reaches_httpd_through_the_forwarded_port() {
    use xtask::node::{Network, Nic, Node};
    let nics = [Nic::on(Network::Slices), Nic::on(Network::Host)];
    let hub_mac = Node::nic_mac(0).to_string();
    let host_mac = Node::nic_mac(1).to_string();
    let append = format!("microvisor.ip={hub_mac}:10.10.0.7/24 microvisor.httpd=1");
    let launch =
        linux::native_qemu_launch(&guest(), 2, 512, &append, &nics, true).expect("QEMU command");
    assert_eq!(launch.forwards.len(), 1);
    let forward = launch.forwards[0];
    assert_eq!(forward.mac, Node::nic_mac(1));
    let mut boot = Boot::spawn(launch.command);
    let r = boot.report();
    let net = r["net"].as_array().expect("net array");
    let by_mac = |mac: &str| {
        net.iter()
            .find(|n| n["mac"] == mac)
            .unwrap_or_else(|| panic!("no NIC with MAC {mac}: {net:?}"))
    };
    assert_eq!(by_mac(&hub_mac)["ipv4"], "10.10.0.7/24", "{net:?}");
    assert_eq!(by_mac(&host_mac)["ipv4"], "10.0.2.15/24", "{net:?}");
    assert_eq!(net.len(), 2, "{net:?}");
    boot.expect("HTTPD 80 started");
    let page = xtask::http::get_until(forward.port, TIMEOUT).expect("the page");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("slice native"), "{page:?}");
}

/// TCP over the slice hub in both directions, inside one VM: of two NICs on hub 0, the second
/// is moved into a network namespace of its own, so traffic between the two addresses leaves
/// through one NIC, crosses QEMU's hub and arrives at the other (no user network on that hub).
#[test]
#[ignore = "boots QEMU (and fetches Debian packages on first use)"]
fn tcp_crosses_the_slice_hub_both_ways() {
    use xtask::node::{Network, Nic, Node};
    let nics = [Nic::on(Network::Slices), Nic::on(Network::Slices)];
    let append = format!(
        "microvisor.ip={}:10.10.0.7/24 microvisor.ip={}:10.10.0.8/24 microvisor.httpd=1",
        Node::nic_mac(0),
        Node::nic_mac(1)
    );
    let launch =
        linux::native_qemu_launch(&guest(), 2, 512, &append, &nics, true).expect("QEMU command");
    assert!(launch.forwards.is_empty(), "no host NIC, no user network");
    let mut boot = Boot::spawn(launch.command);
    let r = boot.report();
    assert_eq!(r["net"].as_array().map(Vec::len), Some(2), "{r}");
    boot.expect("HTTPD 80 started");
    boot.expect("built-in shell (ash)");
    // The console echoes what is typed: the markers waited for are quoted apart in the command
    // (`MOV""ED`) so that only the command's output matches.
    // The second NIC by its MAC, into a namespace held by a sleeping process.
    boot.type_line(&format!(
        "for d in /sys/class/net/*; do grep -q {} $d/address && N=${{d##*/}}; done; echo NIC=$N",
        Node::nic_mac(1)
    ));
    boot.expect("NIC=eth");
    boot.type_line(
        "unshare -n sleep 600 & P=$!; sleep 1; ip link set $N netns $P && echo MOV\"\"ED",
    );
    boot.expect("MOVED");
    boot.type_line(
        "mkdir -p /tmp/p && echo hub-peer-page >/tmp/p/index.html && nsenter -t $P -n sh -c \
         \"ip link set lo up; ip link set $N up; ip addr add 10.10.0.8/24 dev $N; \
         httpd -p 80 -h /tmp/p\" && echo PEER\"\"-UP",
    );
    boot.expect("PEER-UP");
    boot.type_line("wget -q -O - http://10.10.0.8/ | sed 's/^/GOT-A /'");
    boot.expect("GOT-A hub-peer-page");
    boot.type_line("nsenter -t $P -n wget -q -O - http://10.10.0.7/ | sed 's/^/GOT-B /'");
    boot.expect("GOT-B <h1>slice native</h1>");
}
