//! `cargo xtask bench --net`: assigned virtio-net NICs, two Linux slices (web, db) against the
//! same Linux booted natively with the same NICs.
//!
//! Each boot runs [`ROUNDS`] rounds of three steps, typed at web's shell (natively: at the only
//! shell, with db's slice-network NIC moved into a network namespace of its own that runs its
//! own httpd, so the traffic still leaves one NIC, crosses QEMU's hub and enters the other):
//!
//! - **slice-to-slice**: web fetches db's `/www/big` (`wget -O /dev/null`, bulk TCP over the
//!   hub), packets = tx + rx of web's slice-network NIC;
//! - **host-to-slice**: the host fetches web's `/www/big` through the forwarded loopback port
//!   ([`download`], in Rust, bounded), packets = tx + rx of web's host NIC;
//! - **round trip**: `ping -c` [`PINGS`] from web to db; busybox prints min/avg/max.
//!
//! In the slice run the driver types `Ctrl-A c` before and after the transfers (the hypervisor
//! prints every slice's exit counters at once, as in the NVMe benchmark), so the difference is
//! what the transfer cost. Throughput and round trip are wall-clock (no icount: a wait for the
//! network has no meaningful length under `sleep=off`), hence medians of the rounds.
//!
//! The harness waits for the shells' banners and for marker lines before typing anything; the
//! markers are written `NET""B` in the typed commands so that the echo of a command never
//! matches.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};

use super::nvme::difference;
use super::parse::{self, Exits};
use crate::console::Step;
use crate::node::Node;

/// Rounds per boot; throughput and round trip are the medians over them.
pub const ROUNDS: usize = 3;
/// Size of `/www/big`, in 64 KiB blocks (16 MiB).
pub const BLOCKS: u64 = 256;
/// Pings per round-trip step.
pub const PINGS: u32 = 5;
/// Bytes of `/www/big`.
pub const BIG_BYTES: u64 = BLOCKS * 65536;

/// One round's transfer: bytes, seconds, packets, and (in a slice) exits per slice and cause.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transfer {
    pub bytes: u64,
    pub seconds: f64,
    pub packets: u64,
    /// Slice name -> cause -> exits during the transfer (slice runs only).
    pub exits: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Transfer {
    /// MB/s (10^6 bytes per second).
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }

    /// Exits of `slice` (all causes, or one) per 1000 packets.
    pub fn per_kpacket(&self, slice: &str, cause: Option<&str>) -> f64 {
        let Some(causes) = self.exits.get(slice) else {
            return 0.0;
        };
        let n: u64 = match cause {
            Some(c) => causes.get(c).copied().unwrap_or(0),
            None => causes.values().sum(),
        };
        n as f64 * 1000.0 / self.packets.max(1) as f64
    }
}

/// Everything one boot measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetRuns {
    pub slice_to_slice: Vec<Transfer>,
    pub host_to_slice: Vec<Transfer>,
    /// Mean round trip of each ping step, ms.
    pub rtt_ms: Vec<f64>,
}

/// Where the driver is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the shell banners (both slices', or the one native shell's).
    Boot,
    /// Slice run: focus moved to db, waiting for the switch line.
    FocusDb,
    /// db (or the native namespace) is preparing its file.
    ServeDb,
    /// Slice run: focus moved back to web.
    FocusWeb,
    /// web is preparing its file and finding its NICs.
    SetupWeb,
    /// A slice-to-slice transfer is typed; waiting for `NETB ready`, the snapshots, the result.
    S2s,
    /// Host-to-slice: waiting for `NETB hready`, the snapshots, the download, the result.
    Host,
    /// A ping step.
    Ping,
}

/// Which snapshot the driver waits for after typing `Ctrl-A c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Snap {
    None,
    Before,
    After,
}

/// Types the steps at a Linux shell and collects their results: a console line handler for
/// [`crate::console::capture`]. `download` is called (from the handler) to fetch `/big` from
/// the host side; it returns (bytes, seconds).
pub struct Driver<D: FnMut() -> Result<(u64, f64)>> {
    /// `true` inside the microvisor (slices web and db, exit snapshots); `false` natively.
    slices: bool,
    phase: Phase,
    shells: u32,
    round: usize,
    snap: Snap,
    /// Exit lines still expected for the snapshot under way.
    snap_left: usize,
    latest: BTreeMap<String, Exits>,
    before: BTreeMap<String, Exits>,
    /// A finished transfer waiting for its after-snapshot.
    pending: Option<Transfer>,
    download: D,
    pub runs: NetRuns,
    pub failure: Option<String>,
}

/// The slices of the slice run, web first (console focus 1, 2).
pub const SLICES: [&str; 2] = ["web", "db"];

impl<D: FnMut() -> Result<(u64, f64)>> Driver<D> {
    pub fn new(slices: bool, download: D) -> Self {
        Driver {
            slices,
            phase: Phase::Boot,
            shells: 0,
            round: 0,
            snap: Snap::None,
            snap_left: 0,
            latest: BTreeMap::new(),
            before: BTreeMap::new(),
            pending: None,
            download,
            runs: NetRuns::default(),
            failure: None,
        }
    }

    /// The guest text of `line` and which slice printed it (`""` natively).
    fn guest_line<'a>(&self, line: &'a str) -> Option<(&'a str, &'a str)> {
        if !self.slices {
            return Some(("", line));
        }
        let rest = line.strip_prefix('[')?;
        let (name, text) = rest.split_once("] ")?;
        SLICES.contains(&name).then_some((name, text))
    }

    /// Handles one console line.
    pub fn on_line(&mut self, line: &str) -> Step {
        if self.slices {
            if let Some(exits) = parse::exits(line) {
                return self.on_exits(exits);
            }
            if let Some(rest) = line.strip_prefix("[hv] console input goes to slice ") {
                return match (self.phase, rest.split_whitespace().next()) {
                    (Phase::FocusDb, Some("db")) => {
                        self.phase = Phase::ServeDb;
                        Step::Type(serve_db_command(true))
                    }
                    (Phase::FocusWeb, Some("web")) => {
                        self.phase = Phase::SetupWeb;
                        Step::Type(setup_web_command())
                    }
                    _ => Step::Continue,
                };
            }
        }
        let Some((slice, text)) = self.guest_line(line) else {
            return Step::Continue;
        };
        if text.ends_with("Enter 'help' for a list of built-in commands.")
            && self.phase == Phase::Boot
        {
            self.shells += 1;
            let wanted = if self.slices { 2 } else { 1 };
            if self.shells < wanted {
                return Step::Continue;
            }
            if self.slices {
                self.phase = Phase::FocusDb;
                return Step::Type(b"\x012".to_vec());
            }
            self.phase = Phase::ServeDb;
            return Step::Type(serve_db_command(false));
        }
        let Some(marker) = text.strip_prefix("NETB ") else {
            return Step::Continue;
        };
        if let Some(why) = marker.strip_prefix("FAIL ") {
            self.failure = Some(format!("{slice}: {why}"));
            return Step::Done;
        }
        match (self.phase, marker) {
            (Phase::ServeDb, "served") => {
                if self.slices {
                    self.phase = Phase::FocusWeb;
                    Step::Type(b"\x011".to_vec())
                } else {
                    self.phase = Phase::SetupWeb;
                    Step::Type(setup_web_command())
                }
            }
            (Phase::SetupWeb, m) if m.starts_with("setup ") => self.start_s2s(),
            (Phase::S2s, "ready") => {
                if self.slices {
                    self.start_snapshot(Snap::Before);
                    Step::Type(b"\x01c\n".to_vec())
                } else {
                    Step::Type(b"\n".to_vec())
                }
            }
            (Phase::S2s, m) if m.starts_with("s2s ") => match parse_transfer(m) {
                Some(t) => self.finish(t),
                None => self.fail(format!("bad result line {text:?}")),
            },
            (Phase::Host, "hready") => {
                if self.slices {
                    self.start_snapshot(Snap::Before);
                    Step::Type(b"\x01c".to_vec())
                } else {
                    self.host_download()
                }
            }
            (Phase::Host, m) if m.starts_with("host ") => {
                let Some(mut t) = self.pending.take() else {
                    return self.fail("host result before the download".into());
                };
                match parse_transfer(m) {
                    Some(p) => {
                        t.packets = p.packets;
                        self.finish(t)
                    }
                    None => self.fail(format!("bad result line {text:?}")),
                }
            }
            (Phase::Ping, m) if m.starts_with("rtt ") => match parse_rtt(m) {
                Some(avg) => {
                    self.runs.rtt_ms.push(avg);
                    self.round += 1;
                    if self.round == ROUNDS {
                        Step::Done
                    } else {
                        self.start_s2s()
                    }
                }
                None => self.fail(format!("bad ping line {text:?}")),
            },
            _ => Step::Continue,
        }
    }

    fn fail(&mut self, why: String) -> Step {
        self.failure = Some(why);
        Step::Done
    }

    fn start_s2s(&mut self) -> Step {
        self.phase = Phase::S2s;
        Step::Type(s2s_command())
    }

    fn start_snapshot(&mut self, snap: Snap) {
        self.snap = snap;
        self.snap_left = SLICES.len();
    }

    /// The host's download, then the line that makes web print its packet count.
    fn host_download(&mut self) -> Step {
        match (self.download)() {
            Ok((bytes, seconds)) => {
                self.pending = Some(Transfer {
                    bytes,
                    seconds,
                    ..Transfer::default()
                });
                Step::Type(b"\n".to_vec())
            }
            Err(e) => self.fail(format!("host download: {e:#}")),
        }
    }

    /// A transfer's result line arrived: take the after-snapshot (slices) or record it.
    fn finish(&mut self, t: Transfer) -> Step {
        if self.slices {
            self.pending = Some(t);
            self.start_snapshot(Snap::After);
            return Step::Type(b"\x01c".to_vec());
        }
        self.record(t)
    }

    fn record(&mut self, t: Transfer) -> Step {
        if self.phase == Phase::S2s {
            self.runs.slice_to_slice.push(t);
            self.phase = Phase::Host;
            Step::Type(host_command())
        } else {
            self.runs.host_to_slice.push(t);
            self.phase = Phase::Ping;
            Step::Type(ping_command())
        }
    }

    fn on_exits(&mut self, exits: Exits) -> Step {
        if !SLICES.contains(&exits.slice.as_str()) {
            return Step::Continue;
        }
        self.latest.insert(exits.slice.clone(), exits);
        if self.snap == Snap::None || self.snap_left == 0 {
            return Step::Continue;
        }
        self.snap_left -= 1;
        if self.snap_left > 0 {
            return Step::Continue;
        }
        let snap = std::mem::replace(&mut self.snap, Snap::None);
        match snap {
            Snap::Before => {
                self.before = self.latest.clone();
                if self.phase == Phase::Host {
                    self.host_download()
                } else {
                    Step::Continue
                }
            }
            Snap::After => {
                let Some(mut t) = self.pending.take() else {
                    return self.fail("after-snapshot without a transfer".into());
                };
                for name in SLICES {
                    if let (Some(a), Some(b)) = (self.before.get(name), self.latest.get(name)) {
                        t.exits.insert(name.to_string(), difference(a, b));
                    }
                }
                self.record(t)
            }
            Snap::None => Step::Continue,
        }
    }
}

/// Finds the NIC with MAC `mac` and sets shell variable `var` to its name.
fn nic_by_mac(var: &str, index: usize) -> String {
    format!(
        "for d in /sys/class/net/*; do grep -q {} $d/address && {var}=${{d##*/}}; done; ",
        Node::nic_mac(index)
    )
}

/// db's side: `/www/big` for its httpd (in a slice); natively, the third NIC (slice network,
/// MAC index 2) moved into a namespace with 10.10.0.2 and an httpd of its own serving it.
fn serve_db_command(slices: bool) -> Vec<u8> {
    let make = format!("dd if=/dev/zero of=/www/big bs=64k count={BLOCKS} 2>/dev/null");
    let line = if slices {
        format!("{make} && echo NET\"\"B served || echo NET\"\"B FAIL dd\n")
    } else {
        format!(
            "{}unshare -n sleep 100000 & P=$!; sleep 1; ip link set $M netns $P && \
             mkdir -p /tmp/p && dd if=/dev/zero of=/tmp/p/big bs=64k count={BLOCKS} 2>/dev/null && \
             nsenter -t $P -n sh -c \"ip link set lo up; ip link set $M up; \
             ip addr add 10.10.0.2/24 dev $M; httpd -p 80 -h /tmp/p\" && {make} && \
             echo NET\"\"B served || echo NET\"\"B FAIL namespace\n",
            nic_by_mac("M", 2)
        )
    };
    line.into_bytes()
}

/// web's side: its slice-network NIC ($N, MAC index 0) and host NIC ($H, MAC index 1), and
/// `/www/big` for the host to fetch (natively it exists already).
fn setup_web_command() -> Vec<u8> {
    format!(
        "{}{}[ -f /www/big ] || dd if=/dev/zero of=/www/big bs=64k count={BLOCKS} 2>/dev/null; \
         echo NET\"\"B setup $N $H\n",
        nic_by_mac("N", 0),
        nic_by_mac("H", 1)
    )
    .into_bytes()
}

/// Packets (tx + rx) of the NIC named by shell variable `var`, into `out`.
fn packets(var: &str, out: &str) -> String {
    format!(
        "{out}=$(($(cat /sys/class/net/${var}/statistics/tx_packets)+$(cat /sys/class/net/${var}/statistics/rx_packets)))"
    )
}

fn s2s_command() -> Vec<u8> {
    format!(
        "echo NET\"\"B ready; read x; {}; t0=$(cut -d' ' -f1 /proc/uptime); \
         wget -q -O /dev/null http://10.10.0.2/big || echo NET\"\"B FAIL wget; \
         t1=$(cut -d' ' -f1 /proc/uptime); {}; \
         echo NET\"\"B s2s bytes={BIG_BYTES} t0=$t0 t1=$t1 packets=$((b-a))\n",
        packets("N", "a"),
        packets("N", "b")
    )
    .into_bytes()
}

fn host_command() -> Vec<u8> {
    format!(
        "{}; echo NET\"\"B hready; read x; {}; echo NET\"\"B host packets=$((b-a))\n",
        packets("H", "a"),
        packets("H", "b")
    )
    .into_bytes()
}

fn ping_command() -> Vec<u8> {
    format!("ping -q -c {PINGS} 10.10.0.2 | sed -n \"s/^round-trip/NET\"\"B rtt/p\"\n").into_bytes()
}

/// `s2s bytes=.. t0=.. t1=.. packets=..` or `host packets=..`.
fn parse_transfer(text: &str) -> Option<Transfer> {
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    let packets = field("packets")?.parse().ok()?;
    if text.starts_with("host ") {
        return Some(Transfer {
            packets,
            ..Transfer::default()
        });
    }
    let t0: f64 = field("t0")?.parse().ok()?;
    let t1: f64 = field("t1")?.parse().ok()?;
    Some(Transfer {
        bytes: field("bytes")?.parse().ok()?,
        seconds: t1 - t0,
        packets,
        exits: BTreeMap::new(),
    })
}

/// `rtt min/avg/max = 0.512/0.830/1.234 ms`: the average.
fn parse_rtt(text: &str) -> Option<f64> {
    let (_, values) = text.split_once("= ")?;
    values.split('/').nth(1)?.trim().parse().ok()
}

/// Fetches `/big` from `127.0.0.1:port` with HTTP/1.0: (body bytes, seconds from connect to
/// the last byte). Every read and write is bounded by `timeout`, the whole by `limit`, and at
/// most `BIG_BYTES` + 64 KiB are read.
pub fn download(port: u16, timeout: Duration, limit: Duration) -> Result<(u64, f64)> {
    let start = Instant::now();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /big HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut head = Vec::new();
    let mut total = 0u64;
    let cap = BIG_BYTES + (1 << 16);
    loop {
        ensure!(
            start.elapsed() < limit,
            "not done after {} s",
            limit.as_secs()
        );
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 4096 {
            head.extend_from_slice(&buf[..n.min(4096)]);
        }
        total += n as u64;
        ensure!(total <= cap, "more than {cap} bytes");
    }
    let seconds = start.elapsed().as_secs_f64();
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no HTTP header in {total} bytes");
    };
    ensure!(
        head.starts_with(b"HTTP/1.") && head.get(9..12) == Some(b"200".as_slice()),
        "not 200: {:?}",
        String::from_utf8_lossy(&head[..end])
    );
    let body = total - (end as u64 + 4);
    ensure!(body == BIG_BYTES, "{body} of {BIG_BYTES} bytes");
    Ok((body, seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(step: Step) -> String {
        match step {
            Step::Type(bytes) => String::from_utf8(bytes).unwrap(),
            other => panic!("expected typing, got {other:?}"),
        }
    }

    fn snapshot(slice: &str, total: u64, irq: u64) -> String {
        format!(
            "[hv] exits {slice}: {total} in 1.000 s ({total} per s) irq-timer={} irq-device={irq}; injected 1",
            total - irq
        )
    }

    #[test]
    fn drives_a_slice_run_and_subtracts_snapshots_per_slice() {
        let downloads = std::cell::Cell::new(0);
        let mut d = Driver::new(true, || {
            downloads.set(downloads.get() + 1);
            Ok((BIG_BYTES, 2.0))
        });
        let banner = "Enter 'help' for a list of built-in commands.";
        assert_eq!(d.on_line(&format!("[web] {banner}")), Step::Continue);
        assert_eq!(typed(d.on_line(&format!("[db] {banner}"))), "\x012");
        assert!(
            typed(d.on_line("[hv] console input goes to slice db (2); Ctrl-A then 1-2 switches"))
                .contains("of=/www/big")
        );
        // The echo of the command does not count.
        assert_eq!(
            d.on_line("[db] ~ # dd if=/dev/zero of=/www/big && echo NET\"\"B served"),
            Step::Continue
        );
        assert_eq!(typed(d.on_line("[db] NETB served")), "\x011");
        assert!(typed(d.on_line("[hv] console input goes to slice web (1)")).contains("setup"));
        assert!(typed(d.on_line("[web] NETB setup eth0 eth1")).contains("wget"));
        for round in 0..ROUNDS {
            let base = round as u64 * 1000;
            assert_eq!(typed(d.on_line("[web] NETB ready")), "\x01c\n");
            assert_eq!(d.on_line(&snapshot("web", 100 + base, 10)), Step::Continue);
            assert_eq!(d.on_line(&snapshot("db", 50 + base, 5)), Step::Continue);
            assert_eq!(
                typed(d.on_line(&format!(
                    "[web] NETB s2s bytes={BIG_BYTES} t0=10.00 t1=14.00 packets=2000"
                ))),
                "\x01c"
            );
            d.on_line(&snapshot("web", 300 + base, 110));
            assert!(typed(d.on_line(&snapshot("db", 150 + base, 55))).contains("hready"));
            assert_eq!(typed(d.on_line("[web] NETB hready")), "\x01c");
            d.on_line(&snapshot("web", 400 + base, 110));
            assert_eq!(typed(d.on_line(&snapshot("db", 150 + base, 55))), "\n");
            assert_eq!(typed(d.on_line("[web] NETB host packets=1000")), "\x01c");
            d.on_line(&snapshot("web", 600 + base, 210));
            assert!(typed(d.on_line(&snapshot("db", 150 + base, 55))).contains("ping"));
            let step = d.on_line("[web] NETB rtt min/avg/max = 0.500/0.750/1.000 ms");
            if round + 1 < ROUNDS {
                assert!(typed(step).contains("wget"));
            } else {
                assert_eq!(step, Step::Done);
            }
        }
        assert_eq!(downloads.get(), ROUNDS);
        assert!(d.failure.is_none(), "{:?}", d.failure);
        let s = &d.runs.slice_to_slice[0];
        assert_eq!(s.mbps(), BIG_BYTES as f64 / 1e6 / 4.0);
        assert_eq!(s.per_kpacket("web", None), 100.0);
        assert_eq!(s.per_kpacket("web", Some("irq-device")), 50.0);
        assert_eq!(s.per_kpacket("db", None), 50.0);
        let h = &d.runs.host_to_slice[0];
        assert_eq!((h.packets, h.seconds), (1000, 2.0));
        assert_eq!(h.per_kpacket("web", Some("irq-device")), 100.0);
        assert_eq!(h.per_kpacket("db", None), 0.0);
        assert_eq!(d.runs.rtt_ms, vec![0.75; ROUNDS]);
    }

    #[test]
    fn natively_there_is_one_shell_and_no_snapshots() {
        let mut d = Driver::new(false, || Ok((BIG_BYTES, 1.0)));
        assert!(
            typed(d.on_line("Enter 'help' for a list of built-in commands."))
                .contains("unshare -n")
        );
        assert!(typed(d.on_line("NETB served")).contains("setup"));
        assert!(typed(d.on_line("NETB setup eth0 eth1")).contains("wget"));
        assert_eq!(typed(d.on_line("NETB ready")), "\n");
        assert!(typed(d.on_line("NETB s2s bytes=100 t0=1.5 t1=2.0 packets=7")).contains("hready"));
        assert_eq!(typed(d.on_line("NETB hready")), "\n");
        assert!(typed(d.on_line("NETB host packets=9")).contains("ping"));
        assert_eq!(d.runs.slice_to_slice[0].seconds, 0.5);
        assert_eq!(d.runs.host_to_slice[0].packets, 9);
        assert_eq!(d.on_line("NETB FAIL wget"), Step::Done);
        assert_eq!(d.failure.as_deref(), Some(": wget"));
    }

    #[test]
    fn downloads_are_bounded_and_checked() {
        use std::net::TcpListener;
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 256];
            let _ = s.read(&mut req).unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: x\r\n\r\n")
                .unwrap();
            s.write_all(&vec![0u8; BIG_BYTES as usize]).unwrap();
        });
        let (bytes, _) = download(port, Duration::from_secs(5), Duration::from_secs(30)).unwrap();
        assert_eq!(bytes, BIG_BYTES);
        server.join().unwrap();
        assert!(parse_rtt("rtt min/avg/max = 0.5/1.25/2.0 ms") == Some(1.25));
        assert!(parse_transfer("s2s bytes=1 t0=x t1=2 packets=3").is_none());
    }
}
