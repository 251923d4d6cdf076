//! Subprocesses with a hard time limit: run to completion with output captured, or killed
//! (their whole process group) when the limit passes; long-running servers killed on drop.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Output kept per stream (the validators print a few hundred KiB at most).
const OUTPUT_LIMIT: u64 = 32 << 20;

/// How a bounded run ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit status; `None` when the time limit passed and the process group was killed.
    pub status: Option<ExitStatus>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Finished {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// "exit status: 1", or "killed after 600 s" for a timeout.
    pub fn describe(&self, limit: Duration) -> String {
        match self.status {
            Some(status) => status.to_string(),
            None => format!("killed after {} s", limit.as_secs()),
        }
    }

    /// The last `n` lines of stdout and stderr, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let mut lines: Vec<&str> = self.stdout.lines().chain(self.stderr.lines()).collect();
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
        lines.join("\n")
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) in a process group of its own; when
/// `limit` passes, the whole group is killed. With `log`, the command line (with `secret`
/// masked) and both streams are written there, whatever the outcome.
pub fn run(
    cmd: &mut Command,
    limit: Duration,
    log: Option<&Path>,
    secret: &str,
) -> Result<Finished> {
    let rendered = masked(&crate::workspace::render(cmd), secret);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {rendered}"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = start + limit;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            kill_group(&mut child);
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let finished = Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    };
    if let Some(log) = log {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = format!(
            "$ {rendered}\n# {} after {:.1} s\n--- stdout\n{}\n--- stderr\n{}\n",
            finished.describe(limit),
            finished.elapsed.as_secs_f64(),
            masked(&finished.stdout, secret),
            masked(&finished.stderr, secret),
        );
        std::fs::write(log, text).with_context(|| format!("writing {}", log.display()))?;
    }
    Ok(finished)
}

/// Like [`run`], failing unless the command exits 0 in time; the error carries its output's tail.
pub fn run_ok(cmd: &mut Command, limit: Duration, log: Option<&Path>) -> Result<Finished> {
    let rendered = crate::workspace::render(cmd);
    let finished = run(cmd, limit, log, "")?;
    if !finished.success() {
        anyhow::bail!(
            "{rendered}: {}\n{}",
            finished.describe(limit),
            finished.tail(20)
        );
    }
    Ok(finished)
}

fn reader(stream: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(stream) = stream {
            let _ = stream.take(OUTPUT_LIMIT).read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// SIGKILL to the child's process group (it leads one: `process_group(0)`), then reaps it.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A long-running child (a server) in its own process group, killed with its group on drop.
#[derive(Debug)]
pub struct Server(Child);

impl Server {
    /// Starts `cmd` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(cmd: &mut Command, log: &Path) -> Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", crate::workspace::render(cmd)))?;
        Ok(Self(child))
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_group(&mut self.0);
    }
}

/// `text` with every occurrence of `secret` replaced by `***` (nothing when `secret` is empty).
pub fn masked(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_captures_both_streams_and_the_status() {
        let done = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(20),
            None,
            "",
        )
        .unwrap();
        assert_eq!(done.status.and_then(|s| s.code()), Some(3));
        assert_eq!(
            (done.stdout.as_str(), done.stderr.as_str()),
            ("out\n", "err\n")
        );
        assert!(!done.success());
        assert_eq!(done.tail(1), "err");
    }

    #[test]
    fn a_run_past_its_limit_is_killed_with_its_children() {
        // The grandchild holds stdout open: without the group kill the readers would wait.
        let done = run(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30; echo never"]),
            Duration::from_millis(300),
            None,
            "",
        )
        .unwrap();
        assert!(done.status.is_none());
        assert!(done.elapsed < Duration::from_secs(10), "{:?}", done.elapsed);
        assert!(
            done.describe(Duration::from_secs(1))
                .contains("killed after 1 s")
        );
    }

    #[test]
    fn logs_mask_the_secret() {
        let dir = std::env::temp_dir().join(format!("xtask-process-{}", std::process::id()));
        let log = dir.join("run.log");
        run(
            Command::new("echo").args(["--password", "hunter2"]),
            Duration::from_secs(20),
            Some(&log),
            "hunter2",
        )
        .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("--password ***"), "{text}");
        assert_eq!(masked("a", ""), "a");
    }
}
