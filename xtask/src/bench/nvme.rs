//! Metric 8: 4 KiB random reads from NVMe at queue depth 1 and 32, in a Linux slice and with
//! the same Linux booted directly on QEMU with the whole controller.
//!
//! The Linux guest's `iobench` (guest-images/iobench) is typed at its shell with `--wait`: it
//! prints `IOBENCH ready` and waits for a line. In a slice, the driver then types `Ctrl-A c`
//! (the hypervisor prints the slice's exit counters at once) and the go line, and `Ctrl-A c`
//! again after the result, so the difference of the two snapshots is what the reads cost.
//!
//! IOPS come from wall-clock time: under `-icount ... sleep=off` an idle vCPU's clock jumps to
//! the next timer deadline, so waiting for a disk has no meaningful duration there. These runs
//! go without icount, several times, and the median is kept; they are noisy on a shared host.

use std::collections::BTreeMap;

use super::parse::{self, Exits};
use crate::console::Step;

/// Queue depths measured, in order.
pub const DEPTHS: [u32; 2] = [1, 32];

/// One `iobench` run as the guest and (in a slice) the hypervisor reported it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IoRun {
    pub depth: u32,
    pub ops: u64,
    pub iops: f64,
    /// Exits per cause during the run (slice only).
    pub exits: Option<BTreeMap<String, u64>>,
}

impl IoRun {
    /// Exits of `cause` per read.
    pub fn per_io(&self, cause: &str) -> f64 {
        let count = self
            .exits
            .as_ref()
            .and_then(|e| e.get(cause))
            .copied()
            .unwrap_or(0);
        count as f64 / self.ops.max(1) as f64
    }

    /// All exits per read.
    pub fn total_per_io(&self) -> f64 {
        let all: u64 = self.exits.as_ref().map_or(0, |e| e.values().sum());
        all as f64 / self.ops.max(1) as f64
    }
}

/// Types the `iobench` runs at a Linux shell and collects their results: a console line
/// handler for [`crate::console::capture`].
#[derive(Debug)]
pub struct Driver {
    /// `Some(slice name)` inside the microvisor (exit snapshots are taken), `None` natively.
    slice: Option<String>,
    ops: u64,
    /// Index into [`DEPTHS`] of the run under way.
    next: usize,
    started: bool,
    before: Option<Exits>,
    waiting_after: Option<IoRun>,
    pub runs: Vec<IoRun>,
    pub failure: Option<String>,
}

impl Driver {
    pub fn new(slice: Option<&str>, ops: u64) -> Driver {
        Driver {
            slice: slice.map(str::to_string),
            ops,
            next: 0,
            started: false,
            before: None,
            waiting_after: None,
            runs: Vec::new(),
            failure: None,
        }
    }

    fn command(&self) -> Vec<u8> {
        format!(
            "iobench /dev/nvme0n1 --qd {} --ops {} --wait\n",
            DEPTHS[self.next], self.ops
        )
        .into_bytes()
    }

    /// The guest's own line, without the slice prefix; `None` for other slices and `[hv]`.
    fn guest_line<'a>(&self, line: &'a str) -> Option<&'a str> {
        match &self.slice {
            None => Some(line),
            Some(name) => line
                .strip_prefix('[')
                .and_then(|l| l.strip_prefix(name.as_str()))
                .and_then(|l| l.strip_prefix("] ")),
        }
    }

    /// Handles one console line.
    pub fn on_line(&mut self, line: &str) -> Step {
        if let Some(exits) = parse::exits(line)
            && Some(&exits.slice) == self.slice.as_ref()
        {
            return self.on_exits(exits);
        }
        let Some(text) = self.guest_line(line) else {
            return Step::Continue;
        };
        if text.ends_with("Enter 'help' for a list of built-in commands.") && !self.started {
            self.started = true;
            return Step::Type(self.command());
        }
        if text == "IOBENCH ready" {
            return Step::Type(if self.slice.is_some() {
                b"\x01c\n".to_vec()
            } else {
                b"\n".to_vec()
            });
        }
        if let Some(why) = text.strip_prefix("IOBENCH FAIL ") {
            self.failure = Some(why.to_string());
            return Step::Done;
        }
        if let Some(run) = parse_result(text) {
            if self.slice.is_some() {
                self.waiting_after = Some(run);
                return Step::Type(b"\x01c".to_vec());
            }
            self.runs.push(run);
            return self.after_run();
        }
        Step::Continue
    }

    fn on_exits(&mut self, exits: Exits) -> Step {
        match (self.before.take(), self.waiting_after.take()) {
            (Some(before), Some(mut run)) => {
                run.exits = Some(difference(&before, &exits));
                self.runs.push(run);
                self.after_run()
            }
            // The snapshot before a run (or one out of order: start over from it).
            _ => {
                self.before = Some(exits);
                Step::Continue
            }
        }
    }

    fn after_run(&mut self) -> Step {
        self.next += 1;
        if self.next == DEPTHS.len() {
            Step::Done
        } else {
            Step::Type(self.command())
        }
    }
}

/// `IOBENCH randread qd=.. bs=.. ops=.. span=.. seconds=.. iops=.. mean_us=..`.
pub fn parse_result(text: &str) -> Option<IoRun> {
    let rest = text.strip_prefix("IOBENCH randread ")?;
    let field = |key: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    Some(IoRun {
        depth: field("qd")?.parse().ok()?,
        ops: field("ops")?.parse().ok()?,
        iops: field("iops")?.parse().ok()?,
        exits: None,
    })
}

/// Exits per cause from snapshot `a` to snapshot `b`.
pub(super) fn difference(a: &Exits, b: &Exits) -> BTreeMap<String, u64> {
    b.causes
        .iter()
        .map(|(cause, &n)| {
            let before = a.causes.get(cause).copied().unwrap_or(0);
            (cause.clone(), n.saturating_sub(before))
        })
        .filter(|(_, n)| *n != 0)
        .collect()
}

/// The median of `values` (the lower middle one for an even count); 0 for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0)
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

    #[test]
    fn drives_both_depths_in_a_slice_and_subtracts_the_snapshots() {
        let mut d = Driver::new(Some("io"), 2000);
        assert_eq!(
            d.on_line("[other] Enter 'help' for a list of built-in commands."),
            Step::Continue
        );
        assert_eq!(
            typed(d.on_line("[io] Enter 'help' for a list of built-in commands.")),
            "iobench /dev/nvme0n1 --qd 1 --ops 2000 --wait\n"
        );
        assert_eq!(typed(d.on_line("[io] IOBENCH ready")), "\x01c\n");
        let snapshot = |total: u64, nvme: u64, irq: u64| {
            format!(
                "[hv] exits io: {total} in 1.000 s ({total} per s) irq-timer=5 mmio-bar={nvme} irq-device={irq}; injected 1"
            )
        };
        assert_eq!(d.on_line(&snapshot(100, 10, 5)), Step::Continue);
        assert_eq!(
            typed(d.on_line(
                "[io] IOBENCH randread qd=1 bs=4096 ops=2000 span=1 seconds=1.0 iops=2000 mean_us=500.0"
            )),
            "\x01c"
        );
        assert_eq!(
            typed(d.on_line(&snapshot(4200, 2010, 2005))),
            "iobench /dev/nvme0n1 --qd 32 --ops 2000 --wait\n"
        );
        let first = &d.runs[0];
        assert_eq!((first.depth, first.ops, first.iops), (1, 2000, 2000.0));
        assert_eq!(first.per_io("mmio-bar"), 1.0);
        assert_eq!(first.per_io("irq-device"), 1.0);
        assert_eq!(first.per_io("irq-timer"), 0.0);
        assert_eq!(first.total_per_io(), 2.0);
        assert_eq!(typed(d.on_line("[io] IOBENCH ready")), "\x01c\n");
        d.on_line(&snapshot(4300, 2010, 2005));
        d.on_line("[io] IOBENCH randread qd=32 bs=4096 ops=2000 span=1 seconds=0.5 iops=4000 mean_us=8000.0");
        assert_eq!(d.on_line(&snapshot(8300, 4010, 3005)), Step::Done);
        assert_eq!(d.runs[1].total_per_io(), 1.5);
        assert!(d.failure.is_none());
    }

    #[test]
    fn natively_there_are_no_snapshots_and_failures_stop_the_run() {
        let mut d = Driver::new(None, 10);
        typed(d.on_line("Enter 'help' for a list of built-in commands."));
        assert_eq!(typed(d.on_line("IOBENCH ready")), "\n");
        typed(d.on_line("IOBENCH randread qd=1 bs=4096 ops=10 span=1 seconds=1 iops=10 mean_us=1"));
        assert_eq!(d.runs[0].exits, None);
        assert_eq!(
            d.on_line("IOBENCH FAIL open /dev/nvme0n1: No such file"),
            Step::Done
        );
        assert_eq!(
            d.failure.as_deref(),
            Some("open /dev/nvme0n1: No such file")
        );
    }

    #[test]
    fn results_parse_and_medians() {
        assert!(parse_result("IOBENCH ready").is_none());
        assert!(parse_result("IOBENCH randread qd=x ops=1 iops=1").is_none());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
    }
}
