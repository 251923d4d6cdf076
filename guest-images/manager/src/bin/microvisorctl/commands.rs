//! What each command does over a [`Client`], what it prints (tables for people, `--json`
//! for scripts), and the exit code of each failure.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use microvisor_control::{
    BootSpec, Client, Error, ImageKind, InitrdChoice, SliceState, SliceStatus, StagedImage, Status,
    Transport,
};
use serde_json::json;

use crate::args::{Command, InitrdArg};

/// Extra time `shutdown --wait` gives the hypervisor after its own deadline.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long the interactive console waits for typed input before it polls the slice's
/// output again.
const INTERACTIVE_POLL: Duration = Duration::from_millis(50);

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// A bad command line.
    Usage(String),
    /// The client library's error.
    Client(Error),
    /// A local file could not be read.
    File(PathBuf, io::Error),
    /// Writing the output failed.
    Output(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(what) => Failure::Usage(what),
            other => Failure::Client(other),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

impl Failure {
    /// The exit code (documented in `--help` and docs/control.md, "Client").
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 1,
            Failure::Client(Error::NoControlInterface) => 2,
            Failure::Client(Error::Interface(_) | Error::Protocol(_)) => 3,
            Failure::Client(Error::Timeout(_)) => 4,
            Failure::File(..) => 5,
            Failure::Client(Error::Refused { status, .. }) => refused_exit_code(*status),
            Failure::Client(Error::InvalidArgument(_)) => 1,
            Failure::Output(_) => 3,
        }
    }

    /// The one error line (without the program name).
    pub fn line(&self) -> String {
        match self {
            Failure::Usage(what) => what.clone(),
            Failure::Client(e) => e.to_string(),
            Failure::File(path, e) => format!("{}: {e}", path.display()),
            Failure::Output(e) => format!("writing the output: {e}"),
        }
    }
}

/// 10 + the status code for the statuses of version 1, 30 for others.
pub fn refused_exit_code(status: Status) -> u8 {
    match status {
        Status::Other(_) | Status::Ok => 30,
        defined => 10 + defined.code() as u8,
    }
}

/// Reads a local file (an image to stage).
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> io::Result<Vec<u8>>;

/// Runs every command but the interactive console.
pub fn run<T: Transport>(
    client: &mut Client<T>,
    command: &Command,
    json: bool,
    read_file: ReadFile<'_>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match command {
        Command::Help => out.write_all(crate::args::USAGE.as_bytes())?,
        Command::List => {
            let slices = client.list()?;
            if json {
                writeln!(out, "{}", to_json(&slices))?;
            } else {
                out.write_all(list_table(&slices).as_bytes())?;
            }
        }
        Command::Node => {
            let node = client.node()?;
            if json {
                writeln!(out, "{}", to_json(&node))?;
            } else {
                writeln!(out, "version      {}", node.version)?;
                writeln!(out, "slices       {}", node.slices)?;
                writeln!(out, "footprint    {} bytes", node.footprint_bytes)?;
                writeln!(
                    out,
                    "heap         {} of {} bytes in use",
                    node.heap_used_bytes, node.heap_bytes
                )?;
                writeln!(
                    out,
                    "staging      {} of {} bytes in use",
                    node.staging.used_bytes, node.staging.bytes
                )?;
            }
        }
        Command::Status(slice) => {
            let status = client.status(slice)?;
            if json {
                writeln!(out, "{}", to_json(&status))?;
            } else {
                out.write_all(status_text(&status).as_bytes())?;
            }
        }
        Command::On(slice) => {
            client.on(slice)?;
            done(out, json, slice, "on", "started")?;
        }
        Command::Off(slice) => {
            client.off(slice)?;
            done(out, json, slice, "off", "forced off")?;
        }
        Command::Restart(slice) => {
            client.restart(slice)?;
            done(out, json, slice, "restart", "restarted")?;
        }
        Command::Shutdown {
            slice,
            timeout,
            wait,
        } => {
            client.shutdown(slice, *timeout)?;
            if *wait {
                let status =
                    client.wait_for_state(slice, SliceState::Off, *timeout + SHUTDOWN_GRACE)?;
                let how = status.last_stop.clone().unwrap_or_else(|| "off".into());
                if json {
                    writeln!(out, "{}", to_json(&status))?;
                } else {
                    writeln!(out, "{slice}: off ({how})")?;
                }
            } else {
                let what = format!(
                    "power key pressed (forced off after {} s)",
                    timeout.as_secs()
                );
                done(out, json, slice, "shutdown", &what)?;
            }
        }
        Command::Boot {
            slice,
            kernel,
            initrd,
            cmdline,
            default,
            network,
            restart,
        } => {
            let mut staged = Vec::new();
            if *default {
                client.boot_default(slice)?;
            } else if *network {
                client.boot_network(slice)?;
            } else {
                let mut spec = BootSpec {
                    staged_kernel: false,
                    initrd: InitrdChoice::Flashed,
                    cmdline: cmdline.clone(),
                };
                if let Some(path) = kernel {
                    let bytes = read_file(path).map_err(|e| Failure::File(path.clone(), e))?;
                    staged.push(client.stage(slice, ImageKind::Kernel, &bytes)?);
                    spec.staged_kernel = true;
                }
                match initrd {
                    InitrdArg::Flashed => {}
                    InitrdArg::None => spec.initrd = InitrdChoice::None,
                    InitrdArg::File(path) => {
                        let bytes = read_file(path).map_err(|e| Failure::File(path.clone(), e))?;
                        staged.push(client.stage(slice, ImageKind::Initrd, &bytes)?);
                        spec.initrd = InitrdChoice::Staged;
                    }
                }
                client.boot(slice, &spec)?;
            }
            if *restart {
                client.restart(slice)?;
            }
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"slice": slice, "done": "boot", "default": default,
                           "network": network, "staged": staged, "restarted": restart})
                )?;
            } else {
                for image in &staged {
                    writeln!(out, "{}", staged_line(slice, image))?;
                }
                let source = if *default {
                    "the flashed default"
                } else if *network {
                    "its firmware, network boot first"
                } else {
                    "set"
                };
                let then = if *restart {
                    ", restarted"
                } else {
                    " (next start)"
                };
                writeln!(out, "{slice}: boot source {source}{then}")?;
            }
        }
        Command::Console { slice, tail } => {
            // The interactive console is main's (it needs the terminal).
            let lines = tail.unwrap_or(usize::MAX);
            let text = client.console_tail(slice, lines)?;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"slice": slice, "text": String::from_utf8_lossy(&text)})
                )?;
            } else {
                out.write_all(&text)?;
                if !text.is_empty() && !text.ends_with(b"\n") {
                    out.write_all(b"\n")?;
                }
            }
        }
        Command::Erase {
            slice,
            wait,
            timeout,
        } => {
            client.erase(slice)?;
            if *wait {
                let status = client.wait_erased(slice, *timeout)?;
                // The hypervisor's report: {"result":"ok",...} or {"result":"error","io_error",
                // "error"} (docs/control.md, "Status object").
                let report = status.last_erase.as_ref();
                let result = report
                    .and_then(|r| r.get("result"))
                    .and_then(|r| r.as_str());
                if result != Some("ok") {
                    let io = report.and_then(|r| r.get("io_error")) == Some(&true.into());
                    let message = report
                        .and_then(|r| r.get("error"))
                        .and_then(|e| e.as_str())
                        .unwrap_or("the erase left no report")
                        .to_string();
                    return Err(Failure::Client(Error::Refused {
                        op: microvisor_control::Op::Erase,
                        status: if io {
                            microvisor_control::Status::IoError
                        } else {
                            microvisor_control::Status::BadRequest
                        },
                        message,
                    }));
                }
                if json {
                    writeln!(out, "{}", to_json(&status))?;
                } else {
                    let report = status
                        .last_erase
                        .as_ref()
                        .map_or_else(|| "no report".to_string(), |r| r.to_string());
                    writeln!(out, "{slice}: erased ({report})")?;
                }
            } else {
                done(out, json, slice, "erase", "erasing")?;
            }
        }
    }
    Ok(())
}

/// What an interactive console session reads: bytes typed, nothing yet, or the end.
pub enum Input {
    Bytes(Vec<u8>),
    Idle,
    End,
}

/// `Ctrl-]`: leaves the interactive console.
pub const ESCAPE: u8 = 0x1d;

/// The interactive console: forwards what `input` gives to the slice's UART until `Ctrl-]`
/// or the end of input, and copies the slice's new output to `out`.
pub fn interactive<T: Transport>(
    client: &mut Client<T>,
    slice: &str,
    input: &mut dyn FnMut(Duration) -> io::Result<Input>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let mut cursor = client.console_end(slice)?;
    loop {
        let chunk = client.console_read(slice, cursor)?;
        if !chunk.bytes.is_empty() {
            out.write_all(&chunk.bytes)?;
            out.flush()?;
        }
        cursor = chunk.next;
        let typed = match input(INTERACTIVE_POLL)? {
            Input::Bytes(bytes) => bytes,
            Input::Idle => continue,
            Input::End => return Ok(()),
        };
        let (send, leave) = match typed.iter().position(|&b| b == ESCAPE) {
            Some(at) => (&typed[..at], true),
            None => (&typed[..], false),
        };
        client.console_write(slice, send)?;
        if leave {
            return Ok(());
        }
    }
}

fn done(out: &mut dyn Write, json: bool, slice: &str, op: &str, what: &str) -> io::Result<()> {
    if json {
        writeln!(out, "{}", json!({"slice": slice, "done": op}))
    } else {
        writeln!(out, "{slice}: {what}")
    }
}

fn staged_line(slice: &str, image: &StagedImage) -> String {
    format!(
        "{slice}: staged {} of {} bytes, sha256 {}",
        image.kind, image.bytes, image.sha256
    )
}

fn to_json<V: serde::Serialize>(value: &V) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// `1073741824` as `1G`, `536870912` as `512M`, others in K or bytes.
pub fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{}{name}", bytes / unit)
            } else {
                format!("{:.1}{name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes}")
}

/// Milliseconds as `850ms`, `5.2s`, `3m12s`, `2h05m`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// Cores as ranges: `0-2,5`.
pub fn cores(cores: &[u32]) -> String {
    let mut sorted = cores.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    if out.is_empty() { "-".into() } else { out }
}

/// The `list` table.
pub fn list_table(slices: &[SliceStatus]) -> String {
    let header = [
        "NAME",
        "ROLE",
        "STATE",
        "CORES",
        "MEMORY",
        "NVME",
        "NICS",
        "UPTIME",
        "STARTS",
        "BOOT",
        "LAST STOP",
    ];
    let rows: Vec<Vec<String>> = slices
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.role.as_str().to_string(),
                s.state.to_string(),
                cores(&s.cores),
                size(s.memory_bytes),
                s.nvme.as_ref().map_or("-".into(), |n| size(n.bytes)),
                s.nics.len().to_string(),
                if s.uptime_ms == 0 {
                    "-".into()
                } else {
                    duration(s.uptime_ms)
                },
                s.starts.to_string(),
                s.boot
                    .as_ref()
                    .map_or("-".into(), |b| format!("{}:{}", b.source, b.kernel)),
                s.last_stop.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// Columns padded to their widest cell, two spaces apart, the last one not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ");
            }
        }
        out.push('\n');
    }
    out
}

/// `status NAME` for people: one `key  value` line each.
pub fn status_text(s: &SliceStatus) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("name", s.name.clone()),
        ("role", s.role.as_str().to_string()),
        ("state", s.state.to_string()),
        ("cores", cores(&s.cores)),
        (
            "memory",
            format!("{} ({} bytes)", size(s.memory_bytes), s.memory_bytes),
        ),
        (
            "nvme",
            s.nvme.as_ref().map_or("none".into(), |n| {
                format!("{} ({} bytes), {} queues", size(n.bytes), n.bytes, n.queues)
            }),
        ),
    ];
    for nic in &s.nics {
        lines.push((
            "nic",
            format!(
                "{} as {} ({}) mac {}",
                nic.host,
                nic.slot,
                nic.id,
                nic.mac.as_deref().unwrap_or("unknown")
            ),
        ));
    }
    lines.push(("uptime", duration(s.uptime_ms)));
    lines.push(("starts", s.starts.to_string()));
    if let Some(boot) = &s.boot {
        lines.push(("boot", boot.source.clone()));
        let sha = |sha: &Option<String>| {
            sha.as_ref()
                .map_or(String::new(), |h| format!(", sha256 {h}"))
        };
        lines.push((
            "kernel",
            format!(
                "{} ({} bytes{})",
                boot.kernel,
                boot.kernel_bytes,
                sha(&boot.kernel_sha256)
            ),
        ));
        lines.push((
            "initrd",
            match &boot.initrd {
                Some(name) => format!(
                    "{name} ({} bytes{})",
                    boot.initrd_bytes.unwrap_or(0),
                    sha(&boot.initrd_sha256)
                ),
                None => "none".into(),
            },
        ));
        if let Some(cmdline) = &boot.cmdline {
            lines.push(("cmdline", cmdline.clone()));
        }
    }
    lines.push((
        "last stop",
        s.last_stop.clone().unwrap_or_else(|| "-".into()),
    ));
    lines.push((
        "scrub",
        s.scrub.as_ref().map_or("-".into(), |sc| {
            format!("{} in {} ms", size(sc.bytes), sc.ms)
        }),
    ));
    lines.push((
        "last erase",
        s.last_erase.as_ref().map_or("-".into(), |e| e.to_string()),
    ));
    if !s.exits.is_empty() {
        let exits: Vec<String> = s.exits.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lines.push(("exits", exits.join(" ")));
    }
    let mut out = String::new();
    for (key, value) in lines {
        let _ = writeln!(out, "{key:<11} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::parse;
    use microvisor_control::Pacing;
    use microvisor_control::fake::{BOOT_LINE, FakeHypervisor, fake_kernel};
    use std::collections::HashMap;

    /// Files `boot` may read.
    fn files() -> HashMap<PathBuf, Vec<u8>> {
        HashMap::from([
            (PathBuf::from("/images/probe"), fake_kernel(10_000)),
            (PathBuf::from("/images/initrd"), vec![7; 5000]),
            (PathBuf::from("/images/notakernel"), vec![1; 5000]),
        ])
    }

    fn client() -> Client<FakeHypervisor> {
        Client::new(FakeHypervisor::default_node().with_capacity(4096)).with_pacing(Pacing {
            poll: Duration::from_millis(1),
            console_retry: Duration::from_millis(1),
            console_stalls: 20,
        })
    }

    /// Runs `line` against `client`: (exit code, stdout, error line).
    fn ctl(client: &mut Client<FakeHypervisor>, line: &str) -> (u8, String, String) {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        let files = files();
        let read = |path: &Path| {
            files
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        };
        let mut out = Vec::new();
        let result = parse(&args)
            .map_err(Failure::Usage)
            .and_then(|inv| run(client, &inv.command, inv.json, &read, &mut out));
        let out = String::from_utf8(out).unwrap();
        match result {
            Ok(()) => (0, out, String::new()),
            Err(f) => (f.exit_code(), out, f.line()),
        }
    }

    #[test]
    fn list_shows_every_slice_in_a_table() {
        let mut c = client();
        let (code, out, _) = ctl(&mut c, "list");
        assert_eq!(code, 0);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("NAME   ROLE     STATE  CORES"),
            "{out}"
        );
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[1].starts_with("ctl    manager  on "), "{out}");
        assert!(
            lines[2].contains(" 1-2 ") && lines[2].contains(" 4G "),
            "{out}"
        );
        assert!(lines[4].starts_with("probe"), "{out}");
    }

    #[test]
    fn list_and_status_as_json() {
        let mut c = client();
        let (code, out, _) = ctl(&mut c, "--json list");
        assert_eq!(code, 0);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value.as_array().unwrap().len(), 4);
        assert_eq!(value[1]["name"], "web");
        assert_eq!(value[1]["nics"][0]["mac"], "52:54:00:6d:76:00");
        let (code, out, _) = ctl(&mut c, "status db --json");
        assert_eq!(code, 0);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["state"], "on");
        assert_eq!(value["nics"][0]["mac"], serde_json::Value::Null);
        assert_eq!(out.lines().count(), 1, "one JSON document");
    }

    #[test]
    fn status_for_people() {
        let mut c = client();
        let (code, out, _) = ctl(&mut c, "status web");
        assert_eq!(code, 0);
        assert!(out.contains("state       on\n"), "{out}");
        assert!(
            out.contains("nvme        4G (4294967296 bytes), 3 queues"),
            "{out}"
        );
        assert!(out.contains("nic         01:00.0 as 00:01.0"), "{out}");
        assert!(out.contains("kernel      linux ("), "{out}");
    }

    #[test]
    fn power_commands_change_the_state() {
        let mut c = client();
        assert_eq!(
            ctl(&mut c, "off web"),
            (0, "web: forced off\n".into(), String::new())
        );
        assert_eq!(c.transport().state("web"), "off");
        assert_eq!(ctl(&mut c, "on web").0, 0);
        assert_eq!(c.transport().state("web"), "on");
        assert_eq!(ctl(&mut c, "restart web").0, 0);
        assert_eq!(c.transport().starts("web"), 3);
        let (code, out, _) = ctl(&mut c, "--json off probe");
        assert_eq!(code, 0);
        assert_eq!(out, "{\"done\":\"off\",\"slice\":\"probe\"}\n");
    }

    #[test]
    fn refusals_exit_with_10_plus_the_status() {
        let mut c = client();
        let (code, _, err) = ctl(&mut c, "on web");
        assert_eq!(
            (code, err.as_str()),
            (15, "slice \"web\": already on (WRONG_STATE)")
        );
        let (code, _, err) = ctl(&mut c, "status nosuch");
        assert_eq!(code, 13, "{err}");
        let (code, _, err) = ctl(&mut c, "off ctl");
        assert_eq!(code, 17, "{err}");
        assert!(err.contains("NOT_PERMITTED"), "{err}");
        c.transport_mut().busy = true;
        let (code, _, err) = ctl(&mut c, "list");
        assert_eq!(code, 14);
        assert!(err.contains("another request"), "{err}");
        assert_eq!(refused_exit_code(Status::IoError), 20);
        assert_eq!(refused_exit_code(Status::UnknownOp), 11);
        assert_eq!(refused_exit_code(Status::Other(77)), 30);
    }

    #[test]
    fn usage_and_local_errors_have_their_codes() {
        let mut c = client();
        assert_eq!(ctl(&mut c, "bogus").0, 1);
        let long = format!("status {}", "x".repeat(33));
        let (code, _, err) = ctl(&mut c, &long);
        assert_eq!(code, 1, "{err}");
        let (code, _, err) = ctl(&mut c, "boot web --kernel /nonexistent");
        assert_eq!(code, 5);
        assert!(err.starts_with("/nonexistent: "), "{err}");
        assert_eq!(Failure::Client(Error::NoControlInterface).exit_code(), 2);
        assert_eq!(Failure::Client(Error::Protocol("x".into())).exit_code(), 3);
        assert_eq!(Failure::Client(Error::Interface("x".into())).exit_code(), 3);
        assert_eq!(Failure::Client(Error::Timeout("x".into())).exit_code(), 4);
    }

    #[test]
    fn shutdown_wait_returns_once_off() {
        let mut c = client();
        let (code, out, err) = ctl(&mut c, "shutdown web --timeout 5 --wait");
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "web: off (powered off (PSCI SYSTEM_OFF))\n");
        // The probe ignores its power key: forced off at the deadline.
        let (code, out, err) = ctl(&mut c, "shutdown probe --timeout 1 --wait");
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("forced off"), "{out}");
        let (code, _, _) = ctl(&mut c, "shutdown probe");
        assert_eq!(code, 15, "already off");
    }

    #[test]
    fn boot_stages_the_images_and_sets_the_source() {
        let mut c = client();
        let (code, out, err) = ctl(
            &mut c,
            "boot web --kernel /images/probe --initrd /images/initrd --restart",
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("web: staged kernel of 10000 bytes, sha256 "),
            "{out}"
        );
        assert!(out.contains("web: staged initrd of 5000 bytes"), "{out}");
        assert!(out.ends_with("web: boot source set, restarted\n"), "{out}");
        let console = String::from_utf8(c.transport().console("web")).unwrap();
        let last = console.lines().last().unwrap();
        assert!(
            last.starts_with(&format!("{BOOT_LINE} kernel=staged initrd=staged")),
            "{last}"
        );
        assert_eq!(ctl(&mut c, "boot web --default --restart").0, 0);
        let console = String::from_utf8(c.transport().console("web")).unwrap();
        let last = console.lines().last().unwrap();
        assert!(
            last.contains("kernel=linux initrd=linux-initramfs"),
            "{last}"
        );
        assert_eq!(
            c.transport().pool_used(),
            0,
            "--default frees the staged images"
        );
    }

    #[test]
    fn boot_with_a_cmdline_only_keeps_the_flashed_kernel() {
        let mut c = client();
        let args: Vec<String> = [
            "boot",
            "db",
            "--cmdline",
            "console=ttyAMA0 x=1",
            "--no-initrd",
        ]
        .map(String::from)
        .to_vec();
        let inv = parse(&args).unwrap();
        let read = |_: &Path| -> io::Result<Vec<u8>> { unreachable!() };
        run(&mut c, &inv.command, false, &read, &mut Vec::new()).unwrap();
        c.restart("db").unwrap();
        let status = c.status("db").unwrap();
        let boot = status.boot.unwrap();
        assert_eq!(boot.kernel, "linux");
        assert_eq!(boot.initrd, None);
        assert_eq!(boot.cmdline.as_deref(), Some("console=ttyAMA0 x=1"));
    }

    #[test]
    fn boot_of_a_bad_kernel_is_bad_image() {
        let mut c = client();
        let (code, _, err) = ctl(&mut c, "boot web --kernel /images/notakernel");
        assert_eq!(code, 19, "{err}");
        assert!(err.contains("not an arm64 Image"), "{err}");
    }

    #[test]
    fn console_tail_shows_the_last_lines() {
        let mut c = client();
        c.transport_mut()
            .guest_output("web", b"one\ntwo\nthree\nfour\n");
        let (code, out, _) = ctl(&mut c, "console web --tail 2");
        assert_eq!((code, out.as_str()), (0, "three\nfour\n"));
        c.transport_mut().guest_output("web", b"# ");
        let (_, out, _) = ctl(&mut c, "console web --tail 1");
        assert_eq!(out, "# \n", "a partial line ends the output with a newline");
        let (_, out, _) = ctl(&mut c, "--json console web --tail 1");
        assert_eq!(out, "{\"slice\":\"web\",\"text\":\"# \"}\n");
    }

    #[test]
    fn console_tail_of_a_ring_larger_than_the_window() {
        let mut c = client();
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        c.transport_mut().guest_output("db", text.as_bytes());
        let (code, out, _) = ctl(&mut c, "console db --tail 3");
        assert_eq!(code, 0);
        assert_eq!(out, "line 4997\nline 4998\nline 4999\n");
    }

    #[test]
    fn erase_wait_reports_the_erase() {
        let mut c = client();
        assert_eq!(ctl(&mut c, "erase db").0, 15, "on");
        ctl(&mut c, "off db");
        let (code, out, err) = ctl(&mut c, "erase db --wait");
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("db: erased ({"), "{out}");
        assert!(out.contains("\"result\":\"ok\""), "{out}");
        assert_eq!(ctl(&mut c, "erase probe").0, 15, "on, and no NVMe");
        ctl(&mut c, "off probe");
        let (code, _, err) = ctl(&mut c, "erase probe");
        assert_eq!(code, 15);
        assert!(err.contains("no NVMe"), "{err}");
    }

    #[test]
    fn interactive_console_forwards_input_until_ctrl_bracket() {
        let mut c = client();
        c.transport_mut().guest_output("web", b"old output\n");
        let mut script = vec![
            Input::Bytes(b"ls\r".to_vec()),
            Input::Idle,
            Input::Bytes(b"uname -a\rexit\x1dignored".to_vec()),
        ]
        .into_iter();
        let mut out = Vec::new();
        let mut step = 0;
        let mut input = |_: Duration| -> io::Result<Input> {
            step += 1;
            Ok(script.next().unwrap_or(Input::End))
        };
        interactive(&mut c, "web", &mut input, &mut out).unwrap();
        assert_eq!(c.transport().input("web"), b"ls\runame -a\rexit");
        assert!(
            !String::from_utf8_lossy(&out).contains("old output"),
            "starts at the end"
        );
        assert_eq!(step, 3);
    }

    /// A fake the test and the client share (the test plays the guest meanwhile).
    struct Shared(std::rc::Rc<std::cell::RefCell<FakeHypervisor>>);

    impl Transport for Shared {
        fn payload_capacity(&self) -> usize {
            self.0.borrow().payload_capacity()
        }

        fn execute(
            &mut self,
            request: &microvisor_control::Request<'_>,
        ) -> Result<microvisor_control::Response, Error> {
            self.0.borrow_mut().execute(request)
        }
    }

    #[test]
    fn interactive_console_shows_new_output_and_leaves_at_end_of_input() {
        let fake = std::rc::Rc::new(std::cell::RefCell::new(FakeHypervisor::default_node()));
        fake.borrow_mut().guest_output("db", b"before\n");
        let mut c = Client::new(Shared(fake.clone()));
        let mut out = Vec::new();
        let mut steps = 0;
        let mut input = |_: Duration| -> io::Result<Input> {
            steps += 1;
            match steps {
                1 => {
                    fake.borrow_mut().guest_output("db", b"login: ");
                    Ok(Input::Idle)
                }
                2 => Ok(Input::Bytes(b"root\r".to_vec())),
                3 => {
                    fake.borrow_mut().guest_output("db", b"root\r\n# ");
                    Ok(Input::Idle)
                }
                _ => Ok(Input::End),
            }
        };
        interactive(&mut c, "db", &mut input, &mut out).unwrap();
        assert_eq!(out, b"login: root\r\n# ");
        assert_eq!(fake.borrow().input("db"), b"root\r");
    }

    #[test]
    fn interactive_console_to_a_slice_that_takes_nothing_times_out() {
        let mut c = Client::new(FakeHypervisor::new(vec![
            microvisor_control::fake::FakeSliceSpec::manager("ctl"),
            microvisor_control::fake::FakeSliceSpec::tenant("stuck").uart_fifo(0),
        ]))
        .with_pacing(Pacing {
            poll: Duration::from_millis(1),
            console_retry: Duration::from_millis(1),
            console_stalls: 5,
        });
        let mut script = vec![Input::Bytes(b"x".to_vec())].into_iter();
        let mut input =
            |_: Duration| -> io::Result<Input> { Ok(script.next().unwrap_or(Input::End)) };
        let err = interactive(&mut c, "stuck", &mut input, &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), 4, "{}", err.line());
    }

    #[test]
    fn sizes_durations_and_cores_read_well() {
        assert_eq!(size(1 << 30), "1G");
        assert_eq!(size(512 << 20), "512M");
        assert_eq!(size(1536 << 20), "1.5G");
        assert_eq!(size(100), "100");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(5230), "5.2s");
        assert_eq!(duration(192_000), "3m12s");
        assert_eq!(duration(7_500_000), "2h05m");
        assert_eq!(cores(&[0, 1, 2, 5]), "0-2,5");
        assert_eq!(cores(&[3]), "3");
        assert_eq!(cores(&[]), "-");
    }
}
