//! Coverage-guided fuzzing of the decoders that take guest or operator input (docs/fuzzing.md):
//! the targets of `fuzz/` (cargo-fuzz, libFuzzer), their prerequisites (a nightly toolchain and
//! cargo-fuzz, installed on first use), building them, running each one and reading libFuzzer's
//! numbers. Used by `cargo xtask fuzz` and by the fuzz step of `cargo xtask test`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::workspace::{Workspace, render, run_checked};

/// Every target of `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: [&str; 12] = [
    "trap",
    "psci",
    "pl011",
    "pl061",
    "vgic",
    "vits",
    "vpci",
    "msix",
    "nvme",
    "control",
    "plan",
    "inventory",
];

/// The toolchain the fuzz crate builds with (libFuzzer's instrumentation needs `-Z` flags).
pub const TOOLCHAIN: &str = "nightly";
/// The host triple cargo-fuzz builds for (its output directory): this machine's architecture
/// on Linux with glibc, as on Debian (it was x86_64 only, so an arm64 host could run no
/// fuzz target; found in review).
fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// A `cargo +nightly` command from `PATH` (rustup's proxy), without the variables the outer
/// cargo set for `cargo xtask` (its own toolchain and target directory would win otherwise).
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{TOOLCHAIN}"));
    for var in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "RUSTC",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Makes sure the nightly toolchain, a C++ compiler (libFuzzer is built from source) and
/// cargo-fuzz are there, installing the toolchain and cargo-fuzz when missing
/// (`rustup toolchain install nightly`, `cargo +nightly install cargo-fuzz --locked`), or stops
/// with one line saying what to run.
pub fn ensure_tools() -> Result<()> {
    let nightly = nightly_cargo()
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        eprintln!("setup: installing the {TOOLCHAIN} toolchain (only for fuzzing)");
        run_checked(Command::new("rustup").args([
            "toolchain",
            "install",
            TOOLCHAIN,
            "--profile",
            "minimal",
        ]))
        .with_context(|| format!("fuzzing needs it: run `rustup toolchain install {TOOLCHAIN}`"))?;
    }
    crate::setup::ensure_cxx()?;
    let fuzz = nightly_cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !fuzz {
        eprintln!("setup: installing cargo-fuzz");
        run_checked(nightly_cargo().args(["install", "cargo-fuzz", "--locked"]))
            .context("fuzzing needs it: run `cargo +nightly install cargo-fuzz --locked`")?;
    }
    Ok(())
}

/// Where the fuzz build, working corpora and crash inputs go.
#[derive(Clone, Debug)]
pub struct FuzzDirs {
    /// `fuzz/` in the source tree (seed corpora, dictionaries).
    pub source: PathBuf,
    /// `<target>/fuzz`: cargo-fuzz's target directory, working corpora, artifacts.
    pub out: PathBuf,
}

impl FuzzDirs {
    pub fn new(ws: &Workspace) -> FuzzDirs {
        FuzzDirs {
            source: ws.root.join("fuzz"),
            out: ws.target_dir.join("fuzz"),
        }
    }

    /// The built binary of `target`.
    pub fn binary(&self, target: &str) -> PathBuf {
        self.out.join(host_triple()).join("release").join(target)
    }

    /// Inputs libFuzzer found interesting (grows across runs; not in the repository).
    pub fn corpus(&self, target: &str) -> PathBuf {
        self.out.join("corpus").join(target)
    }

    /// The checked-in seeds.
    pub fn seeds(&self, target: &str) -> PathBuf {
        self.source.join("corpus").join(target)
    }

    /// Where a crashing input is written.
    pub fn artifacts(&self, target: &str) -> PathBuf {
        self.out.join("artifacts").join(target)
    }
}

/// Builds every target (one crate, release with debug assertions, no sanitizer: the fuzzed
/// code forbids `unsafe`, and coverage instrumentation alone is twice as fast as with ASan).
pub fn build(ws: &Workspace, dirs: &FuzzDirs) -> Result<()> {
    let mut cmd = nightly_cargo();
    cmd.args(["fuzz", "build", "--debug-assertions", "--sanitizer", "none"])
        .arg("--target-dir")
        .arg(&dirs.out)
        .current_dir(&ws.root);
    println!("== fuzz build: {}", render(&cmd));
    run_checked(&mut cmd)
}

/// What one run of one target did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub executions: u64,
    /// Coverage counters hit (libFuzzer's `cov`: edges of the instrumented code).
    pub coverage: u64,
    /// libFuzzer's features (`ft`: edges plus hit counts and compared values).
    pub features: u64,
    pub corpus: u64,
    /// The input that crashed the target, if one did (libFuzzer stops at the first).
    pub crash: Option<String>,
    /// The first line of the panic or error, if any.
    pub reason: Option<String>,
    /// libFuzzer exited 0.
    pub success: bool,
}

impl Outcome {
    /// Takes the numbers from one line of libFuzzer's output.
    pub fn read_line(&mut self, line: &str) {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            self.executions = n.trim().parse().unwrap_or(self.executions);
        } else if let Some(path) = line.split("Test unit written to ").nth(1) {
            self.crash = Some(path.trim().to_string());
        } else if line.starts_with('#') {
            let mut words = line.split_whitespace();
            while let Some(word) = words.next() {
                let slot = match word {
                    "cov:" => &mut self.coverage,
                    "ft:" => &mut self.features,
                    "corp:" => &mut self.corpus,
                    _ => continue,
                };
                if let Some(n) = words.next().and_then(|n| n.split('/').next()) {
                    *slot = n.parse().unwrap_or(*slot);
                }
            }
        } else if self.reason.is_none()
            && (line.contains("panicked at") || line.starts_with("==") && line.contains("ERROR"))
        {
            self.reason = Some(line.to_string());
        }
    }

    /// One line for the summary.
    pub fn summary(&self, target: &str) -> String {
        let crashes = u8::from(self.crash.is_some() || !self.success);
        format!(
            "{target}: {} executions, {crashes} crashes, coverage {} edges ({} features), corpus {}",
            self.executions, self.coverage, self.features, self.corpus
        )
    }
}

/// How long a target runs: until the time is up or the executions are done, whichever
/// comes first.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub seconds: Option<u64>,
    pub runs: Option<u64>,
}

impl Budget {
    pub fn seconds(s: u64) -> Budget {
        Budget {
            seconds: Some(s),
            runs: None,
        }
    }
}

/// Runs `target`'s binary on its working corpus (seeded from `fuzz/corpus/<target>`) within
/// `budget`, one process (`-jobs=1`), and reads its numbers.
pub fn run(ws: &Workspace, dirs: &FuzzDirs, target: &str, budget: Budget) -> Result<Outcome> {
    let corpus = dirs.corpus(target);
    let artifacts = dirs.artifacts(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut cmd = Command::new(dirs.binary(target));
    cmd.arg(&corpus);
    let seeds = dirs.seeds(target);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    if target == "inventory" {
        cmd.arg(ws.root.join("hypervisor/logic/testdata"));
    }
    let dict = dirs.source.join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    if let Some(s) = budget.seconds {
        cmd.arg(format!("-max_total_time={s}"));
    }
    if let Some(n) = budget.runs {
        cmd.arg(format!("-runs={n}"));
    }
    let mut prefix = artifacts.into_os_string();
    prefix.push("/");
    cmd.arg(format!("-artifact_prefix={}", Path::new(&prefix).display()))
        .args([
            "-print_final_stats=1",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-max_len=4096",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting {} (run `cargo xtask fuzz` to build it)",
            render(&cmd)
        )
    })?;
    let stderr = child.stderr.take().context("libFuzzer stderr")?;
    let mut outcome = Outcome::default();
    let mut tail = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading libFuzzer output")?;
        outcome.read_line(&line);
        if outcome.reason.is_some() || outcome.crash.is_some() {
            tail.push(line);
        }
    }
    outcome.success = child.wait()?.success();
    if !outcome.success {
        for line in tail.iter().take(12) {
            eprintln!("  {line}");
        }
    }
    Ok(outcome)
}

/// Runs `targets` one at a time, printing one line each (and, for a crash, the input and the
/// command that replays it). Returns the targets that crashed.
pub fn run_targets(
    ws: &Workspace,
    dirs: &FuzzDirs,
    targets: &[&'static str],
    budget: Budget,
) -> Result<Vec<&'static str>> {
    let mut crashed = Vec::new();
    for target in targets {
        let outcome = run(ws, dirs, target, budget)?;
        println!("{}", outcome.summary(target));
        if !outcome.success {
            let input = outcome.crash.as_deref().unwrap_or("(no input written)");
            println!("  crashing input: {input}");
            println!("  reproduce: cargo xtask fuzz {target} --reproduce {input}");
            crashed.push(*target);
        }
    }
    Ok(crashed)
}

/// Replays one input through `target` (to reproduce a crash), printing what it does.
pub fn reproduce(dirs: &FuzzDirs, target: &str, input: &Path) -> Result<bool> {
    let mut cmd = Command::new(dirs.binary(target));
    cmd.arg(input).env("RUST_BACKTRACE", "1");
    println!("== {}", render(&cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", render(&cmd)))?;
    Ok(status.success())
}

/// The targets `name` selects: all of them, or the one it names.
pub fn select(name: Option<&str>) -> Result<Vec<&'static str>> {
    match name {
        None => Ok(TARGETS.to_vec()),
        Some(n) => match TARGETS.iter().find(|t| **t == n) {
            Some(t) => Ok(vec![*t]),
            None => bail!("no fuzz target {n:?} (targets: {})", TARGETS.join(", ")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_numbers() {
        let mut o = Outcome::default();
        for line in [
            "#2\tINITED cov: 12 ft: 13 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#1048576\tpulse  cov: 367 ft: 935 corp: 27/132b lim: 8 exec/s: 349525 rss: 49Mb",
            "#4194304\tDONE   cov: 370 ft: 939 corp: 29/147b lim: 8 exec/s: 0 rss: 50Mb",
            "stat::number_of_executed_units: 4194304",
            "stat::peak_rss_mb:              50",
        ] {
            o.read_line(line);
        }
        assert_eq!(
            (o.executions, o.coverage, o.features, o.corpus),
            (4194304, 370, 939, 29)
        );
        assert_eq!(o.crash, None);
        o.read_line(
            "thread '<unnamed>' (12917) panicked at hypervisor/logic/src/vgic/state.rs:109:22:",
        );
        o.read_line("==12917== ERROR: libFuzzer: deadly signal");
        o.read_line("artifact_prefix='target/fuzz/artifacts/vgic/'; Test unit written to target/fuzz/artifacts/vgic/crash-85d9c5");
        assert_eq!(
            o.crash.as_deref(),
            Some("target/fuzz/artifacts/vgic/crash-85d9c5")
        );
        assert!(
            o.reason
                .as_deref()
                .is_some_and(|r| r.contains("state.rs:109"))
        );
        assert!(o.summary("vgic").contains("1 crashes"));
    }

    #[test]
    fn selects_targets() {
        assert_eq!(select(None).unwrap().len(), TARGETS.len());
        assert_eq!(select(Some("nvme")).unwrap(), ["nvme"]);
        assert!(select(Some("nope")).is_err());
    }

    #[test]
    fn every_target_has_a_binary_entry_and_seeds() {
        let root = crate::workspace::source_root();
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "{t} not in fuzz/Cargo.toml"
            );
            assert!(root.join(format!("fuzz/fuzz_targets/{t}.rs")).is_file());
            assert!(
                root.join(format!("fuzz/corpus/{t}")).is_dir(),
                "no seeds for {t}"
            );
        }
    }
}
