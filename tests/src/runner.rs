//! Runs one QEMU process under a hard timeout, feeding its serial lines to a [`Checker`] as they
//! arrive and typing a scenario's [`Input`]s into its serial input (stdin) when their lines
//! appear; kills QEMU on drop and always writes the full serial log.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::console::Line;
use crate::expect::{Checker, Expect};
use crate::host_get::{ConsoleTap, Fetcher, PortGet, perform};
use crate::input::{Input, Typed, Typist, show_bytes};

/// A child process killed (and reaped) when dropped (shared with `cargo xtask bench`).
pub use xtask::console::KillOnDrop;

/// What to run and what to expect of it.
pub struct Run {
    /// Label in messages and the log header.
    pub name: String,
    /// The command (stdout and stderr must be piped). Its stdin is set here: a pipe when there
    /// is input to type, else null.
    pub command: Command,
    pub expects: Vec<Expect>,
    /// Typed into stdin, in order, as their trigger lines appear.
    pub input: Vec<Input>,
    /// Pages the host fetches through forwarded ports as their trigger lines appear; each must
    /// succeed like an expectation.
    pub host_gets: Vec<PortGet>,
    /// Hard limit for the whole run.
    pub timeout: Duration,
    /// Fail early when no line arrives for this long (a hung run).
    pub silence: Duration,
    /// Attribute unprefixed lines to this slice (a guest booted without the microvisor).
    pub bare_lines_are: Option<String>,
    /// Where the serial log goes (always written).
    pub log: PathBuf,
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// Every serial line, `\r` removed.
    pub lines: Vec<String>,
    /// `Ok` when every expectation held, else why not.
    pub result: Result<(), String>,
    /// The serial log file.
    pub log: PathBuf,
}

impl Outcome {
    /// Panics with the reason, the log's path and its last lines unless the run passed.
    pub fn assert_passed(&self, name: &str) {
        if let Err(why) = &self.result {
            let tail: Vec<&str> = self
                .lines
                .iter()
                .map(String::as_str)
                .skip(self.lines.len().saturating_sub(40))
                .collect();
            panic!(
                "scenario {name} failed: {why}\nserial log: {}\nlast {} lines:\n{}",
                self.log.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

enum Event {
    Line(String),
    Eof,
    /// A host fetch ended (its index in [`Run::host_gets`]).
    Fetched(usize, Result<String, String>),
}

/// Starts the command and checks its serial lines until every expectation holds, one is
/// violated, QEMU exits, or the timeout passes. QEMU is killed in every case.
pub fn run(mut spec: Run) -> Outcome {
    let started = Instant::now();
    let command_line = xtask::workspace::render(&spec.command);
    let mut checker = Checker::new(std::mem::take(&mut spec.expects));
    let mut typist = Typist::new(std::mem::take(&mut spec.input));
    let mut fetcher = Fetcher::new(std::mem::take(&mut spec.host_gets));
    let tap = ConsoleTap::default();
    let mut lines = Vec::new();
    let mut stderr_text = String::new();
    spec.command.stdin(if typist.waiting().is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let result = match spec.command.spawn() {
        Err(e) => Err(format!("cannot start {command_line}: {e}")),
        Ok(child) => {
            let mut child = KillOnDrop(child);
            let mut stdin = child.0.stdin.take();
            let (tx, rx) = mpsc::channel();
            let stdout = child.0.stdout.take().expect("stdout must be piped");
            let tx_fetch = tx.clone();
            let reader = thread::spawn(move || read_lines(stdout, tx));
            let stderr = child.0.stderr.take().map(collect_stderr);
            let deadline = started + spec.timeout;
            let mut last_line = Instant::now();
            let mut status: Option<ExitStatus> = None;
            let result = loop {
                if let Some(why) = checker.violation().or(fetcher.violation()) {
                    break Err(why.to_string());
                }
                if checker.satisfied() && fetcher.satisfied() {
                    break Ok(());
                }
                if let Some(status) = status {
                    break Err(format!(
                        "QEMU exited ({status}) while still waiting for: {}",
                        waiting_for(&checker, &typist, &fetcher)
                    ));
                }
                let now = Instant::now();
                // Checked on every pass, not only when the channel runs dry: a queued line is
                // handed over even with no time left, so a console flood faster than the
                // checks would otherwise outlive the timeout (found in review).
                if now >= deadline {
                    break Err(format!(
                        "timed out after {} s still waiting for: {}",
                        spec.timeout.as_secs(),
                        waiting_for(&checker, &typist, &fetcher)
                    ));
                }
                let quiet_until = last_line + spec.silence;
                let left = deadline.min(quiet_until).saturating_duration_since(now);
                match rx.recv_timeout(left) {
                    Ok(Event::Line(raw)) => {
                        last_line = Instant::now();
                        let mut line = Line::parse(&raw);
                        if let Some(name) = &spec.bare_lines_are {
                            line = line.attributed_to(name);
                        }
                        checker.observe(&line, &raw);
                        tap.push(&raw);
                        for (index, get) in fetcher.observe(&line, &raw) {
                            let tx = tx_fetch.clone();
                            let (tap, trigger) = (tap.clone(), raw.clone());
                            thread::spawn(move || {
                                let result = perform(&get, &trigger, &tap);
                                let _ = tx.send(Event::Fetched(index, result));
                            });
                        }
                        let keys = typist.observe(&line, &raw);
                        lines.push(raw);
                        if !keys.is_empty()
                            && let Err(e) = type_keys(stdin.as_mut(), &keys)
                        {
                            break Err(format!(
                                "cannot type \"{}\" after line {}: {e}",
                                show_bytes(&keys),
                                lines.len()
                            ));
                        }
                    }
                    Ok(Event::Fetched(index, result)) => fetcher.finish(index, result),
                    Ok(Event::Eof) | Err(RecvTimeoutError::Disconnected) => {
                        status = Some(wait_exit(&mut child.0, Duration::from_secs(10)));
                        checker.qemu_exited();
                    }
                    Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                        break Err(format!(
                            "no console output for {} s (hung?) while waiting for: {}",
                            spec.silence.as_secs(),
                            waiting_for(&checker, &typist, &fetcher)
                        ));
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        break Err(format!(
                            "timed out after {} s still waiting for: {}",
                            spec.timeout.as_secs(),
                            waiting_for(&checker, &typist, &fetcher)
                        ));
                    }
                }
            };
            drop(stdin);
            drop(child);
            // Lines read before QEMU died still belong in the log. A grandchild holding the
            // pipes open must not keep us waiting: give the readers a moment, no more.
            let grace = Instant::now() + Duration::from_secs(2);
            while let Ok(event) = rx.recv_timeout(grace.saturating_duration_since(Instant::now())) {
                if Instant::now() >= grace {
                    break;
                }
                match event {
                    Event::Line(l) => lines.push(l),
                    Event::Eof => break,
                    Event::Fetched(..) => {}
                }
            }
            drop(reader);
            if let Some(rx) = stderr {
                stderr_text = rx
                    .recv_timeout(grace.saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
            }
            result
        }
    };
    write_log(
        &spec,
        &command_line,
        &lines,
        &log_notes(typist.typed(), fetcher.report()),
        &stderr_text,
        &result,
        started.elapsed(),
    );
    Outcome {
        lines,
        result,
        log: spec.log,
    }
}

/// The pending expectations, host fetches and the input still waiting, for failure messages.
fn waiting_for(checker: &Checker, typist: &Typist, fetcher: &Fetcher) -> String {
    let mut pending = checker.pending();
    pending.extend(fetcher.pending());
    pending.extend(typist.waiting());
    pending.join("; ")
}

/// Writes `keys` to the child's serial input.
fn type_keys(stdin: Option<&mut ChildStdin>, keys: &[u8]) -> std::io::Result<()> {
    let stdin = stdin.ok_or_else(|| std::io::Error::other("stdin is not piped"))?;
    stdin.write_all(keys)?;
    stdin.flush()
}

/// Sends each line (without `\r\n`) and then `Eof`.
fn read_lines(stdout: impl Read, tx: mpsc::Sender<Event>) {
    xtask::console::each_line(stdout, |line| tx.send(Event::Line(line)).is_ok());
    let _ = tx.send(Event::Eof);
}

/// Reads stderr to its end on a thread; the text arrives on the returned channel.
fn collect_stderr(mut stderr: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// Waits up to `limit` for a child whose stdout closed; kills it if it lingers.
fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            return child.wait().expect("waiting for a killed child");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The log's notes on what was typed and fetched, one header line each (without `# `).
fn log_notes(typed: &[Typed], fetched: Vec<String>) -> Vec<String> {
    let mut notes: Vec<String> = typed
        .iter()
        .map(|t| {
            format!(
                "input {}: typed \"{}\" after line {}",
                t.index + 1,
                show_bytes(&t.bytes),
                t.line
            )
        })
        .collect();
    notes.extend(fetched);
    notes
}

fn write_log(
    spec: &Run,
    command_line: &str,
    lines: &[String],
    notes: &[String],
    stderr: &str,
    result: &Result<(), String>,
    elapsed: Duration,
) {
    let mut text = format!("# scenario: {}\n# command: {command_line}\n", spec.name);
    match result {
        Ok(()) => text.push_str("# result: PASS\n"),
        Err(why) => text.push_str(&format!("# result: FAIL: {why}\n")),
    }
    text.push_str(&format!(
        "# elapsed: {:.1} s (not asserted)\n",
        elapsed.as_secs_f64()
    ));
    for note in notes {
        text.push_str(&format!("# {note}\n"));
    }
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    if !stderr.trim().is_empty() {
        text.push_str("# QEMU stderr:\n");
        text.push_str(stderr);
    }
    if let Some(dir) = spec.log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&spec.log, text) {
        eprintln!("cannot write serial log {}: {e}", spec.log.display());
    }
}

/// Reads a log written by [`run`] back into its serial lines (header and stderr dropped).
pub fn read_log(path: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .skip_while(|l| l.starts_with("# "))
        .take_while(|l| !l.starts_with("# QEMU stderr:"))
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expect::{Expect, hv, slice};
    use crate::input::focus;

    fn shell(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn log_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "microvisor-runner-{}-{name}.log",
            std::process::id()
        ))
    }

    fn spec(name: &str, script: &str, expects: Vec<Expect>, timeout_ms: u64) -> Run {
        Run {
            name: name.into(),
            command: shell(script),
            expects,
            input: Vec::new(),
            host_gets: Vec::new(),
            timeout: Duration::from_millis(timeout_ms),
            silence: Duration::from_secs(60),
            bare_lines_are: None,
            log: log_path(name),
        }
    }

    #[test]
    fn finishes_as_soon_as_expectations_hold_and_kills_the_process() {
        let started = Instant::now();
        let out = run(spec(
            "early",
            "printf '[hv] slice a started\\r\\n[a] PROBE PASS\\r\\n'; exec sleep 60",
            vec![Expect::probe_pass("a")],
            30_000,
        ));
        assert!(out.result.is_ok(), "{:?}", out.result);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "waited for the sleeping child"
        );
        assert_eq!(out.lines, vec!["[hv] slice a started", "[a] PROBE PASS"]);
        let log = std::fs::read_to_string(&out.log).unwrap();
        assert!(log.contains("# result: PASS"), "{log}");
        assert_eq!(read_log(&out.log).unwrap(), out.lines);
        std::fs::remove_file(&out.log).unwrap();
    }

    #[test]
    fn times_out_with_what_it_was_waiting_for_and_keeps_the_log() {
        let out = run(spec(
            "slow",
            "echo '[a] HEARTBEAT 1 ok'; exec sleep 60",
            vec![Expect::probe_pass("a")],
            300,
        ));
        let why = out.result.as_ref().unwrap_err();
        assert!(
            why.contains("timed out") && why.contains("PROBE PASS"),
            "{why}"
        );
        let log = std::fs::read_to_string(&out.log).unwrap();
        assert!(
            log.contains("# result: FAIL: timed out") && log.contains("[a] HEARTBEAT 1 ok"),
            "{log}"
        );
        std::fs::remove_file(&out.log).unwrap();
    }

    #[test]
    fn a_console_flood_does_not_outlive_the_timeout() {
        // Lines arriving faster than they are checked: the channel never runs dry, and the
        // deadline was only looked at when it did (found in review).
        let started = Instant::now();
        let out = run(spec(
            "flood",
            "exec yes '[a] HEARTBEAT 1 ok'",
            vec![Expect::probe_pass("a")],
            300,
        ));
        let why = out.result.as_ref().unwrap_err();
        assert!(why.contains("timed out"), "{why}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the flood kept the run going for {:?}",
            started.elapsed()
        );
        std::fs::remove_file(&out.log).unwrap();
    }

    #[test]
    fn silence_fails_before_the_timeout() {
        let mut s = spec(
            "quiet",
            "echo '[a] HEARTBEAT 1 ok'; exec sleep 60",
            vec![Expect::probe_pass("a")],
            30_000,
        );
        s.silence = Duration::from_millis(300);
        let out = run(s);
        let why = out.result.unwrap_err();
        assert!(why.contains("no console output"), "{why}");
        std::fs::remove_file(&out.log).unwrap();
    }

    #[test]
    fn a_forbidden_line_fails_at_once() {
        let mut expects = Expect::always_forbidden();
        expects.push(Expect::probe_pass("a"));
        let out = run(spec(
            "fatal",
            "echo '[hv] FATAL EL2 data abort'; exec sleep 60",
            expects,
            30_000,
        ));
        let why = out.result.unwrap_err();
        assert!(why.contains("forbidden") && why.contains("FATAL"), "{why}");
        std::fs::remove_file(&out.log).unwrap();
    }

    #[test]
    fn an_early_exit_is_a_failure_unless_expected() {
        let out = run(spec(
            "exit",
            "echo '[hv] error: x'; exit 3",
            vec![Expect::probe_pass("a")],
            30_000,
        ));
        let why = out.result.unwrap_err();
        assert!(
            why.contains("QEMU exited") && why.contains("PROBE PASS"),
            "{why}"
        );

        let out = run(spec(
            "halt",
            "echo '[hv] error: x'; echo '[hv] halted: no slice was started'",
            vec![
                Expect::line(hv("^halted: no slice was started$")),
                Expect::QemuExits,
            ],
            30_000,
        ));
        assert!(out.result.is_ok(), "{:?}", out.result);
        std::fs::remove_file(&out.log).unwrap();
    }

    #[test]
    fn stderr_goes_to_the_log_and_bare_lines_can_be_attributed() {
        let mut s = spec(
            "bare",
            "echo 'warning: x' >&2; echo 'PROBE PASS'",
            vec![Expect::probe_pass("native")],
            30_000,
        );
        s.bare_lines_are = Some("native".into());
        let out = run(s);
        assert!(out.result.is_ok(), "{:?}", out.result);
        let log = std::fs::read_to_string(&out.log).unwrap();
        assert!(log.contains("# QEMU stderr:\nwarning: x"), "{log}");
        std::fs::remove_file(&out.log).unwrap();
    }

    #[test]
    fn input_is_typed_in_order_after_its_lines_and_logged() {
        // `read` takes one line; then the next two bytes are shown in hex: Ctrl-A arrives as is.
        let mut s = spec(
            "typed",
            "echo '[a] ready'; read -r l; echo \"[a] got $l\"; \
             echo \"[hv] bytes $(head -c 2 | od -An -tx1 | tr -d ' \\n')\"; exec sleep 60",
            vec![
                Expect::line(slice("a", "^got hello$")),
                Expect::line(hv("^bytes 0132$")),
            ],
            30_000,
        );
        s.input = vec![
            Input::after(slice("a", "^ready$"), b"hello\n"),
            Input::after_next(slice("a", "^got "), &focus(2)),
        ];
        let out = run(s);
        assert!(out.result.is_ok(), "{:?}", out.result);
        let log = std::fs::read_to_string(&out.log).unwrap();
        assert!(
            log.contains("# input 1: typed \"hello\\n\" after line 1\n")
                && log.contains("# input 2: typed \"\\x012\" after line 2\n"),
            "{log}"
        );
        assert_eq!(read_log(&out.log).unwrap(), out.lines);
        std::fs::remove_file(&out.log).unwrap();
    }

    #[test]
    fn input_still_waiting_is_named_when_the_run_fails() {
        let mut s = spec(
            "typed_never",
            "echo '[a] ready'; exec sleep 60",
            vec![Expect::probe_pass("a")],
            300,
        );
        s.input = vec![
            Input::after(slice("a", "^ready$"), b"x"),
            Input::after_next(slice("a", "^never$"), b"y"),
        ];
        let out = run(s);
        let why = out.result.unwrap_err();
        assert!(
            why.contains("timed out") && why.contains("input 2 of 2 (typing \"y\") waiting for"),
            "{why}"
        );
        std::fs::remove_file(&out.log).unwrap();
    }

    #[test]
    fn without_input_stdin_is_null() {
        // `cat` ends at once on /dev/null; a pipe left open would block it.
        let out = run(spec(
            "no_input",
            "cat; echo '[a] PROBE PASS'; exec sleep 60",
            vec![Expect::probe_pass("a")],
            30_000,
        ));
        assert!(out.result.is_ok(), "{:?}", out.result);
        std::fs::remove_file(&out.log).unwrap();
    }

    #[test]
    fn typing_into_a_closed_input_fails_the_run() {
        let mut s = spec(
            "typed_closed",
            "exec 0<&-; echo '[a] ready'; exec sleep 60",
            vec![Expect::probe_pass("a")],
            30_000,
        );
        s.input = vec![Input::after(slice("a", "^ready$"), b"x\n")];
        let out = run(s);
        let why = out.result.unwrap_err();
        assert!(why.contains("cannot type \"x\\n\" after line 1"), "{why}");
        std::fs::remove_file(&out.log).unwrap();
    }

    /// A one-page server on a free loopback port answering every connection with `page`.
    fn page_server(page: &'static str) -> u16 {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{page}").as_bytes());
            }
        });
        port
    }

    fn host_get(port: u16, contains: &str, timeout_ms: u64) -> PortGet {
        use crate::host_get::HostGet;
        PortGet {
            get: HostGet {
                slice: "web".into(),
                after: slice("web", "^HTTPD 80 started$"),
                nth: 1,
                contains: contains.into(),
                timeout: Duration::from_millis(timeout_ms),
                script: None,
            },
            port,
            https_port: 0,
            nic: "02:00.0".into(),
        }
    }

    #[test]
    fn host_gets_run_after_their_line_and_must_succeed() {
        let port = page_server("<h1>slice web</h1>");
        let mut s = spec(
            "host_get",
            "echo '[web] HTTPD 80 started'; exec sleep 60",
            vec![Expect::line(slice("web", "^HTTPD"))],
            30_000,
        );
        s.host_gets = vec![host_get(port, "<h1>slice web</h1>", 10_000)];
        let out = run(s);
        assert!(out.result.is_ok(), "{:?}", out.result);
        let log = std::fs::read_to_string(&out.log).unwrap();
        assert!(
            log.contains(&format!(
                "# host GET http://127.0.0.1:{port}/ (slice web's host NIC 02:00.0) after"
            )) && log.contains(": ok after line 1: status 200"),
            "{log}"
        );
        assert_eq!(read_log(&out.log).unwrap(), out.lines);
        std::fs::remove_file(&out.log).unwrap();

        // The wrong page fails the run, with what came instead.
        let mut s = spec(
            "host_get_wrong",
            "echo '[web] HTTPD 80 started'; exec sleep 60",
            vec![],
            30_000,
        );
        s.host_gets = vec![host_get(port, "<h1>slice db</h1>", 700)];
        let why = run(s).result.unwrap_err();
        assert!(
            why.contains("(slice web's host NIC 02:00.0)")
                && why.contains("no page containing \"<h1>slice db</h1>\"")
                && why.contains("<h1>slice web</h1>"),
            "{why}"
        );

        // A fetch whose line never comes is pending.
        let mut s = spec(
            "host_get_never",
            "echo '[db] x'; exec sleep 60",
            vec![],
            300,
        );
        s.host_gets = vec![host_get(port, "x", 700)];
        let why = run(s).result.unwrap_err();
        assert!(
            why.contains("timed out") && why.contains("host GET"),
            "{why}"
        );
    }

    #[test]
    fn a_missing_program_is_reported() {
        let mut s = spec("missing", "", vec![], 1000);
        s.command = Command::new("/nonexistent/qemu");
        let out = run(s);
        assert!(out.result.unwrap_err().contains("cannot start"));
        std::fs::remove_file(&out.log).unwrap();
    }
}
