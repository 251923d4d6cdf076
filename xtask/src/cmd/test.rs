//! `cargo xtask test`: host unit tests, a short run of every fuzz target, then the QEMU
//! integration tests, then a summary.

use std::io::{BufRead, BufReader, Write};
use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result};

use crate::workspace::{Workspace, cargo, render};

/// Crates whose unit tests run on the host.
pub const HOST_CRATES: [&str; 7] = [
    "microvisor-plan",
    "microvisor-logic",
    "microvisor-probe",
    "microvisor-iobench",
    "microvisor-control",
    "microvisor-redfish",
    "xtask",
];
/// Seconds each fuzz target runs in the test step (12 targets: about a minute in all).
pub const FUZZ_SECONDS: u64 = 5;
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
    // What the scenarios need besides QEMU, checked (or installed, as root) before anything
    // runs, so that a fresh machine stops at once with one line, not in dozens of tests.
    crate::setup::ensure_dtc()?;
    crate::setup::ensure_cross_cc()?;
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

    if args.filter.is_empty() {
        // A fuzz step that cannot run (no nightly, no C++ compiler) is a failed step, not
        // the end of the whole run before any scenario.
        let counts = run_fuzz_step(&ws).unwrap_or_else(|e| {
            println!("fuzz targets: {e:#}");
            Counts {
                failed: 1,
                success: false,
                ..Counts::default()
            }
        });
        total.add(&counts);
        if !counts.success {
            failed_steps.push("fuzz targets");
        }
    } else {
        println!("== fuzz targets: skipped (a test filter was given)");
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

/// Builds the fuzz targets and runs each for [`FUZZ_SECONDS`]: a target that crashes counts as
/// a failed test (its input path is printed), one that does not as a passed one.
fn run_fuzz_step(ws: &Workspace) -> Result<Counts> {
    use crate::fuzz::{self, Budget, FuzzDirs};
    println!("== fuzz targets: {FUZZ_SECONDS} s each (cargo xtask fuzz for longer runs)");
    fuzz::ensure_tools()?;
    let dirs = FuzzDirs::new(ws);
    let mut counts = Counts {
        success: true,
        ..Counts::default()
    };
    if let Err(e) = fuzz::build(ws, &dirs) {
        println!("fuzz build failed: {e:#}");
        counts.failed += 1;
        counts.success = false;
        return Ok(counts);
    }
    let crashed = fuzz::run_targets(ws, &dirs, &fuzz::TARGETS, Budget::seconds(FUZZ_SECONDS))?;
    counts.failed = crashed.len() as u64;
    counts.passed = (fuzz::TARGETS.len() - crashed.len()) as u64;
    counts.success = crashed.is_empty();
    Ok(counts)
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
