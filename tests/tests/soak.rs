//! Soak (issue 13, docs/soak.md): slice `cycle` resets itself by PSCI SYSTEM_RESET after its
//! first heartbeat, run after run, while `beat` (an NVMe share whose canary it re-reads at
//! every heartbeat) and `quiet` keep beating. After every restart the hypervisor prints
//! `[hv] heap: <n> bytes in use, <t> stage-2 tables (slice cycle run <r>)`; the figures after
//! the last cycle must equal those after the first, and both victims must still beat at the
//! end with nothing corrupt.
//!
//! The first [`WARMUP`] restarts are not counted: the victims are still starting then (their
//! memory test, `beat`'s NVMe queues and data test), and what they allocate once is not growth.
//! Cycle 1 is the first restart after both printed their first heartbeat (checked).
//!
//! On a GICv4.0 node (`--gicv4`) `cycle` owns a NIC whose interrupts are vLPIs of its virtual
//! ITS, and every run must exchange a frame with both interrupts delivered.
//!
//! The short versions (20 cycles, both nodes) are part of `cargo xtask test`; `cargo xtask
//! soak --cycles N [--gicv4]` runs the ignored [`soak_cycles_from_xtask`] with [`CYCLES_VAR`]
//! (and [`GICV4_VAR`]) set and prints the report.

use std::time::{Duration, Instant};

use microvisor_tests::{
    Expect, Scenario, hv, lit, plan, probe_slice, slice, with_device, with_nvme,
};
use regex::Regex;
use xtask::cmd::soak::{CYCLES_VAR, GICV4_VAR};
use xtask::node::{Network, Nic};

/// Cycles when [`CYCLES_VAR`] is not set.
const DEFAULT_CYCLES: usize = 1000;
/// Restarts of `cycle` before cycle 1 (about 0.1 s each; the victims are up after 0.5 s).
const WARMUP: usize = 10;
/// Heartbeat period of the victims.
const VICTIM_BEAT_MS: u64 = 200;

/// The hypervisor's heap line after restart `run - 1` of `cycle`: (bytes, stage-2 tables, run).
fn heap_line() -> Regex {
    Regex::new(r"^\[hv\] heap: (\d+) bytes in use, (\d+) stage-2 tables \(slice cycle run (\d+)\)$")
        .expect("valid regex")
}

/// What one soak measured.
#[derive(Debug)]
struct Report {
    cycles: usize,
    elapsed: Duration,
    /// Mean guest time of one run of `cycle`, from its `[hv] exits` lines (ms).
    run_ms: f64,
    /// (bytes, stage-2 tables) after the first restart and after the last.
    first: (u64, u64),
    last: (u64, u64),
    /// `HEARTBEAT <n> ok` lines of each victim.
    beats: Vec<(&'static str, usize)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_cycle = self.elapsed.as_secs_f64() * 1000.0 / self.cycles.max(1) as f64;
        writeln!(
            f,
            "soak: {} cycles done in {:.1} s",
            self.cycles,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "soak: {per_cycle:.0} ms wall time per cycle, {:.0} ms of guest time per run of `cycle`",
            self.run_ms
        )?;
        writeln!(
            f,
            "soak: heap after cycle 1: {} bytes in use, {} stage-2 tables",
            self.first.0, self.first.1
        )?;
        writeln!(
            f,
            "soak: heap after cycle {}: {} bytes in use, {} stage-2 tables",
            self.cycles, self.last.0, self.last.1
        )?;
        for (victim, beats) in &self.beats {
            writeln!(f, "soak: victim {victim}: {beats} heartbeats ok")?;
        }
        Ok(())
    }
}

/// The node a soak runs on.
#[derive(Clone, Copy, PartialEq)]
enum Node {
    /// GICv3, no PCI function assigned.
    Gicv3,
    /// GICv4.0 with an SMMUv3, and `cycle` owning a NIC whose MSIs are its vLPIs: every run
    /// maps them through its virtual ITS (physical VMAPTIs) and every restart discards them,
    /// so the physical ITS's command queue (128 commands) goes round many times.
    Gicv4,
}

fn soak(name: &str, cycles: usize, kind: Node) -> Report {
    assert!(cycles >= 1, "a soak needs at least one cycle");
    let victims = ["beat", "quiet"];
    let beat = format!("cmdline = \"heartbeat={VICTIM_BEAT_MS} nvme-check=1\"");
    let quiet = format!("cmdline = \"heartbeat={VICTIM_BEAT_MS} nvme=0\"");
    let cycling = probe_slice(
        "cycle",
        "1",
        "32MiB",
        "cmdline = \"heartbeat=20 reset-after=1 nvme=0\"",
    );
    let cycling = match kind {
        Node::Gicv3 => cycling,
        Node::Gicv4 => with_device(&cycling, "pci = \"01:00.0\""),
    };
    let node = plan(&[
        cycling,
        with_nvme(&probe_slice("beat", "1", "64MiB", &beat), 1, "16MiB"),
        probe_slice("quiet", "1", "64MiB", &quiet),
    ]);
    // Cycle k is restart WARMUP + k, after which run WARMUP + k + 1 starts.
    let (first_run, last_run) = ((WARMUP + 2) as u64, (WARMUP + cycles + 1) as u64);
    let last_line =
        format!(r"^heap: \d+ bytes in use, \d+ stage-2 tables \(slice cycle run {last_run}\)$");
    let started = Instant::now();
    let mut scenario = Scenario::new(name).inline_node(3, 1 << 30).disk(1 << 30);
    if kind == Node::Gicv4 {
        // Every run's NIC works: an ARP exchange with both interrupts delivered as vLPIs.
        scenario = scenario
            .gic_v4()
            .smmuv3()
            .nic(Nic::on(Network::Host))
            .expect(Expect::Line {
                pattern: slice(
                    "cycle",
                    r"^NET PASS .* irq-tx=delivered\(us=\d+\) irq-rx=delivered\(us=\d+\)$",
                ),
                count: WARMUP + cycles + 1,
            })
            .expect(Expect::Never(slice("cycle", "^NET FAIL")));
    }
    let outcome = scenario
        .plan(&node)
        .timeout(Duration::from_secs(120 + 2 * cycles as u64))
        .all_healthy()
        .expect(Expect::Line {
            pattern: hv(&format!(
                "^slice {} restarted: PSCI SYSTEM_RESET$",
                lit("cycle")
            )),
            count: WARMUP + cycles,
        })
        .expect(Expect::line(hv(&last_line)))
        .expect(Expect::HeartbeatsAfter {
            after: hv(&last_line),
            slices: victims.iter().map(|v| v.to_string()).collect(),
            count: 2,
        })
        .expect(Expect::Never(slice("beat", "CORRUPT|ERROR")))
        .expect(Expect::Never(slice("quiet", "CORRUPT")))
        .expect(Expect::Never(hv("^slice (beat|quiet) (stopped|restarted)")))
        .expect(Expect::Never(hv("^slice cycle (stopped|stays stopped)")))
        .run();
    let elapsed = started.elapsed();

    let heap = heap_line();
    // (line index, bytes, tables, run) of every heap line.
    let figures: Vec<(usize, u64, u64, u64)> = outcome
        .lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((i, heap.captures(l)?)))
        .map(|(i, c)| {
            (
                i,
                c[1].parse().unwrap(),
                c[2].parse().unwrap(),
                c[3].parse().unwrap(),
            )
        })
        .collect();
    let at = |run: u64| {
        figures
            .iter()
            .find(|f| f.3 == run)
            .copied()
            .unwrap_or_else(|| panic!("no heap line for run {run} of `cycle`"))
    };
    let first_line = at(first_run).0;
    for victim in victims {
        let first_beat = outcome
            .lines
            .iter()
            .position(|l| l.starts_with(&format!("[{victim}] HEARTBEAT 1 ")));
        assert!(
            first_beat.is_some_and(|b| b < first_line),
            "victim {victim} was not up before cycle 1 (raise WARMUP)\nserial log: {}",
            outcome.log.display()
        );
    }
    let exits = Regex::new(r"^\[hv\] exits cycle: \d+ in (\d+)\.(\d{3}) s").expect("valid regex");
    let runs: Vec<f64> = outcome
        .lines
        .iter()
        .filter_map(|l| exits.captures(l))
        .map(|c| c[1].parse::<f64>().unwrap() * 1000.0 + c[2].parse::<f64>().unwrap())
        .collect();
    let beats = victims
        .iter()
        .map(|v| {
            let ok = Regex::new(&format!(r"^\[{v}\] HEARTBEAT \d+ ok")).expect("valid regex");
            (*v, outcome.lines.iter().filter(|l| ok.is_match(l)).count())
        })
        .collect();
    let report = Report {
        cycles,
        elapsed,
        run_ms: runs.iter().sum::<f64>() / runs.len().max(1) as f64,
        first: (at(first_run).1, at(first_run).2),
        last: (at(last_run).1, at(last_run).2),
        beats,
    };
    println!("{report}");
    assert_eq!(
        report.first,
        report.last,
        "the hypervisor's heap (bytes, stage-2 tables) changed between the first and the last \
         cycle\n{report}serial log: {}",
        outcome.log.display()
    );
    report
}

#[test]
fn a_slice_resetting_itself_20_times_leaves_the_hypervisor_as_it_was() {
    soak("soak_short", 20, Node::Gicv3);
}

#[test]
fn a_slice_with_direct_nic_interrupts_resetting_itself_20_times_leaves_the_hypervisor_as_it_was() {
    soak("soak_short_gicv4", 20, Node::Gicv4);
}

#[test]
#[ignore = "long: run by `cargo xtask soak`"]
fn soak_cycles_from_xtask() {
    let cycles = std::env::var(CYCLES_VAR)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{CYCLES_VAR}={v}: not a number"))
        })
        .unwrap_or(DEFAULT_CYCLES);
    match std::env::var_os(GICV4_VAR) {
        Some(_) => soak("soak_gicv4", cycles, Node::Gicv4),
        None => soak("soak", cycles, Node::Gicv3),
    };
}
