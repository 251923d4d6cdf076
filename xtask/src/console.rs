//! Running QEMU with its serial console captured: a child killed on drop, and a loop that hands
//! each console line to the caller, types what it asks for, and stops when it is done or a hard
//! timeout passes. Used by `cargo xtask bench`; the integration tests share [`KillOnDrop`].

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What to do after a console line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep reading.
    Continue,
    /// Type these bytes into the serial input, then keep reading.
    Type(Vec<u8>),
    /// Stop: QEMU is killed.
    Done,
}

/// Starts `command` (its stdio is set here), feeds every console line (without `\r\n`) to
/// `on_line` until it returns [`Step::Done`], and kills QEMU. Fails if QEMU exits first or
/// `timeout` passes. Every line read goes to `log` in all cases.
pub fn capture(
    mut command: Command,
    timeout: Duration,
    log: &Path,
    mut on_line: impl FnMut(&str) -> Step,
) -> Result<Vec<String>> {
    let rendered = crate::workspace::render(&command);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(
        command
            .spawn()
            .with_context(|| format!("starting {rendered}"))?,
    );
    let mut stdin = child.0.stdin.take();
    let stdout = child.0.stdout.take().context("stdout is piped")?;
    let stderr = child.0.stderr.take().context("stderr is piped")?;
    let (tx, rx) = mpsc::channel();
    let err_tx = tx.clone();
    thread::spawn(move || read_lines(stdout, tx));
    thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        for line in text.lines() {
            let _ = err_tx.send(Some(format!("qemu stderr: {line}")));
        }
    });
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let outcome = loop {
        // Checked on every pass: a queued line is handed over even with no time left, so a
        // console flood would otherwise outlive the timeout.
        let now = Instant::now();
        if now >= deadline {
            break Err(anyhow::anyhow!("timed out after {} s", timeout.as_secs()));
        }
        let left = deadline.saturating_duration_since(now);
        match rx.recv_timeout(left) {
            Ok(Some(line)) => {
                let step = on_line(&line);
                lines.push(line);
                match step {
                    Step::Continue => {}
                    Step::Type(bytes) => {
                        if let Some(input) = stdin.as_mut() {
                            let _ = input.write_all(&bytes).and_then(|()| input.flush());
                        }
                    }
                    Step::Done => break Ok(()),
                }
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!("QEMU exited before the run was complete"));
            }
            Err(RecvTimeoutError::Timeout) => {
                break Err(anyhow::anyhow!("timed out after {} s", timeout.as_secs()));
            }
        }
    };
    drop(stdin);
    drop(child);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = format!("$ {rendered}\n");
    for line in &lines {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(log, text).with_context(|| format!("writing {}", log.display()))?;
    match outcome {
        Ok(()) => Ok(lines),
        Err(e) => bail!("{e} (log: {})", log.display()),
    }
}

/// Sends each line (without `\r\n`) and then `None`.
fn read_lines(stdout: impl Read, tx: mpsc::Sender<Option<String>>) {
    each_line(stdout, |line| tx.send(Some(line)).is_ok());
    let _ = tx.send(None);
}

/// Calls `each` with every line of a console stream, without its `\r\n` and with any other
/// `\r` dropped, until the stream ends or `each` returns false.
pub fn each_line(stdout: impl Read, mut each: impl FnMut(String) -> bool) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                if !each(text.trim_end_matches(['\n', '\r']).replace('\r', "")) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_when_done_and_types_input() {
        let log = std::env::temp_dir().join("xtask-console-test.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo ready; read x; echo got $x; sleep 30"]);
        let lines = capture(cmd, Duration::from_secs(10), &log, |line| match line {
            "ready" => Step::Type(b"hello\n".to_vec()),
            l if l.starts_with("got") => Step::Done,
            _ => Step::Continue,
        })
        .unwrap();
        assert_eq!(lines, ["ready", "got hello"]);
        let _ = std::fs::remove_file(log);
    }

    #[test]
    fn early_exit_is_an_error() {
        let log = std::env::temp_dir().join("xtask-console-test-exit.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one"]);
        let err = capture(cmd, Duration::from_secs(10), &log, |_| Step::Continue).unwrap_err();
        assert!(err.to_string().contains("exited"), "{err}");
        let _ = std::fs::remove_file(log);
    }
}
