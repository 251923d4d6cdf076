//! `cargo xtask test`: host unit tests, then the QEMU integration tests, then a summary.

use std::io::{BufRead, BufReader, Write};
use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result};

use crate::workspace::{Workspace, cargo, render};

/// Crates whose unit tests run on the host.
pub const HOST_CRATES: [&str; 6] = [
    "microvisor-plan",
    "microvisor-logic",
    "microvisor-probe",
    "microvisor-iobench",
    "microvisor-control",
    "xtask",
];
/// Parallel QEMU scenarios (each boots a multi-core TCG guest).
pub const QEMU_TEST_THREADS: u32 = 2;

/// Run the host unit tests and the QEMU integration tests (tests/); exit non-zero on any failure.
#[derive(clap::Args)]
pub struct Args {
    /// Passed to the test binaries after `--` (e.g. a test name filter).
    #[arg(last = true)]
    pub filter: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    crate::setup::ensure()?;
    let ws = Workspace::locate()?;
    let mut total = Counts::default();
    let mut failed_steps = Vec::new();

    let mut host: Vec<String> = vec!["test".into()];
    for krate in HOST_CRATES {
        host.extend(["-p".into(), krate.into()]);
    }
    host.push("--".into());
    host.extend(args.filter.iter().cloned());
    let counts = run_cargo_test(&ws, "host unit tests", &host)?;
    total.add(&counts);
    if !counts.success {
        failed_steps.push("host unit tests");
    }

    let mut qemu: Vec<String> = vec![
        "test".into(),
        "-p".into(),
        "microvisor-tests".into(),
        "--".into(),
    ];
    qemu.push(format!("--test-threads={QEMU_TEST_THREADS}"));
    qemu.extend(args.filter.iter().cloned());
    let counts = run_cargo_test(&ws, "QEMU integration tests", &qemu)?;
    total.add(&counts);
    if !counts.success {
        failed_steps.push("QEMU integration tests");
    }

    println!();
    if !failed_steps.is_empty() {
        println!("failed: {}", failed_steps.join(", "));
        println!(
            "serial logs: {}",
            ws.display(&ws.target_dir.join("test-logs"))
        );
    }
    println!(
        "summary: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.ignored
    );
    Ok(if failed_steps.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Test counts read from cargo's `test result:` lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// cargo exited 0.
    pub success: bool,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Adds the numbers of one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    pub fn read_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo <args>`, echoing its output while counting results.
fn run_cargo_test(ws: &Workspace, label: &str, args: &[String]) -> Result<Counts> {
    let mut cmd = cargo();
    cmd.args(args).current_dir(&ws.root).stdout(Stdio::piped());
    println!("== {label}: {}", render(&cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", render(&cmd)))?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut counts = Counts::default();
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        counts.read_line(&line);
        let _ = writeln!(out, "{line}");
    }
    counts.success = child.wait()?.success();
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_over_result_lines() {
        let mut c = Counts::default();
        c.read_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.read_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out; finished in 80.2s");
        c.read_line("running 5 tests");
        c.read_line("test default_plan ... ok");
        assert_eq!((c.passed, c.failed, c.ignored), (15, 2, 1));
    }
}
