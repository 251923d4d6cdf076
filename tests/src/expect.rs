//! Expectations on a node console, checked line by line as the lines arrive.
//!
//! A [`Checker`] holds a list of [`Expect`]s. After each line it can say whether one was
//! violated (fail now), and which are still pending; a run ends as soon as none is pending.

use std::collections::HashMap;
use std::fmt;

use regex::Regex;

use crate::attack_lines::AttackRun;
use crate::console::{Line, SliceReport, Source, exits_uptime, heartbeat_number};

/// Which lines a [`Pattern`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Lines of the hypervisor (`[hv] ...`).
    Hv,
    /// Lines of one slice (`[<slice>] ...`).
    Slice(String),
    /// Lines of any slice.
    AnySlice,
    /// Every line, prefix included (`[a] PROBE PASS` matches `^\[a\] PROBE`).
    Any,
}

/// A regular expression over the lines of one source.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub scope: Scope,
    pub regex: Regex,
}

impl Pattern {
    fn new(scope: Scope, regex: &str) -> Pattern {
        let regex = Regex::new(regex).unwrap_or_else(|e| panic!("bad pattern {regex:?}: {e}"));
        Pattern { scope, regex }
    }

    /// Whether `line` (as parsed) or `raw` (as printed) matches.
    pub fn matches(&self, line: &Line, raw: &str) -> bool {
        match &self.scope {
            Scope::Hv => line.source == Source::Hv && self.regex.is_match(&line.text),
            Scope::Slice(s) => line.slice() == Some(s) && self.regex.is_match(&line.text),
            Scope::AnySlice => line.slice().is_some() && self.regex.is_match(&line.text),
            Scope::Any => self.regex.is_match(raw),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Hv => write!(f, "[hv] /{}/", self.regex),
            Scope::Slice(s) => write!(f, "[{s}] /{}/", self.regex),
            Scope::AnySlice => write!(f, "[<any slice>] /{}/", self.regex),
            Scope::Any => write!(f, "/{}/", self.regex),
        }
    }
}

/// A hypervisor line matching `regex` (text after `[hv] `).
pub fn hv(regex: &str) -> Pattern {
    Pattern::new(Scope::Hv, regex)
}

/// A line of `slice` matching `regex` (text after `[<slice>] `).
pub fn slice(slice: &str, regex: &str) -> Pattern {
    Pattern::new(Scope::Slice(slice.to_string()), regex)
}

/// A line of any slice matching `regex` (text after the prefix).
pub fn any_slice(regex: &str) -> Pattern {
    Pattern::new(Scope::AnySlice, regex)
}

/// Any raw console line matching `regex`.
pub fn any(regex: &str) -> Pattern {
    Pattern::new(Scope::Any, regex)
}

/// `s` with regex metacharacters escaped.
pub fn lit(s: &str) -> String {
    regex::escape(s)
}

/// One thing the console must (or must not) show.
#[derive(Clone, Debug)]
pub enum Expect {
    /// `slice` prints a `SLICE-REPORT` with exactly `cpus` vCPUs (affinities 0..cpus) and
    /// `memory_bytes` of RAM. A report that differs is a violation.
    Report {
        slice: String,
        cpus: u64,
        memory_bytes: u64,
    },
    /// Every `SLICE-REPORT` of `slice` has a `mem_total_kib` (Linux's MemTotal) within
    /// `min_kib..=max_kib`; one is needed. A report outside the range is a violation.
    MemTotal {
        slice: String,
        min_kib: u64,
        max_kib: u64,
    },
    /// Between the first two `[hv] exits <slice>: ...` lines (`Ctrl-A c`), `slice` prints at
    /// least `min_percent` % of the `HEARTBEAT <n> ok` lines its period of `period_ms` gives
    /// for the counter time that passed between them (the slice's uptime in those lines). The
    /// window must last at least [`MIN_RATE_WINDOW_PERIODS`] periods, or the check could not
    /// fail.
    HeartbeatRate {
        slice: String,
        period_ms: u64,
        min_percent: u64,
    },
    /// Every `SLICE-REPORT` of `slice` has `nvme_bytes` = `bytes` (its namespace as the guest
    /// sees it) and `nvme_queues` = `queues` (I/O queues it created); one is needed. A report
    /// without them or with other values is a violation.
    Nvme {
        slice: String,
        bytes: u64,
        queues: u64,
    },
    /// At least `count` lines match `pattern`, and its first capture group is the same text in
    /// every matching line (e.g. a checksum printed before and after something happened). A
    /// line with another value is a violation.
    SameCapture { pattern: Pattern, count: usize },
    /// At least `count` lines match.
    Line { pattern: Pattern, count: usize },
    /// Lines matching each pattern appear in this order (each after the previous one).
    Sequence(Vec<Pattern>),
    /// After the first line matching `after`, each of `slices` prints at least `count` more
    /// `HEARTBEAT <n> ok` lines with increasing `n`.
    HeartbeatsAfter {
        after: Pattern,
        slices: Vec<String>,
        count: usize,
    },
    /// The probe in `slice` was asked for `attacks` (the `attack=` words of its command line):
    /// in each run of the slice every one of them prints `ATTACK <a> attempting ...` and then
    /// exactly one verdict that is not `NOT-CONTAINED unverified`, in order, unless the slice is
    /// stopped or restarted right after the attempting line. A skipped attack, a missing or
    /// second verdict or an `unverified` one is a violation naming the slice and the attack
    /// (see [`AttackRun`]). Met once a run has gone through all of them. [`Scenario`] adds one
    /// for every probe slice it boots, so no scenario can forget it.
    ///
    /// [`Scenario`]: crate::Scenario
    Attacks { slice: String, attacks: Vec<String> },
    /// No line matches, ever (checked until the run ends).
    Never(Pattern),
    /// After the first line matching `after`, no line matches `pattern` (e.g. a stopped slice
    /// prints nothing more).
    NeverAfter { after: Pattern, pattern: Pattern },
    /// Lines matching `pattern` may appear only inside a window: from a line matching `from`
    /// up to the next line matching `until` (a later `from` opens a new window). One outside
    /// is a violation (e.g. a failed transfer while the peer was not restarting).
    OnlyBetween {
        pattern: Pattern,
        from: Pattern,
        until: Pattern,
    },
    /// QEMU exits by itself.
    QemuExits,
}

/// Shortest window a [`Expect::HeartbeatRate`] accepts, in heartbeat periods.
pub const MIN_RATE_WINDOW_PERIODS: f64 = 10.0;

impl Expect {
    /// At least one line matching `pattern`.
    pub fn line(pattern: Pattern) -> Expect {
        Expect::Line { pattern, count: 1 }
    }

    /// `PROBE PASS` from `slice`.
    pub fn probe_pass(slice_name: &str) -> Expect {
        Expect::line(slice(slice_name, "^PROBE PASS$"))
    }

    /// Lines no run may show: hypervisor bugs and guests reporting failure.
    pub fn always_forbidden() -> Vec<Expect> {
        vec![
            Expect::Never(any(r"\[hv\] FATAL")),
            Expect::Never(any("panicked")),
            Expect::Never(any("PROBE FAIL")),
            Expect::Never(any("NOT-CONTAINED")),
        ]
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Report {
                slice,
                cpus,
                memory_bytes,
            } => write!(
                f,
                "[{slice}] SLICE-REPORT with {cpus} cpus and {memory_bytes:#x} bytes"
            ),
            Expect::MemTotal {
                slice,
                min_kib,
                max_kib,
            } => write!(
                f,
                "[{slice}] SLICE-REPORT with mem_total_kib in {min_kib}..={max_kib}"
            ),
            Expect::HeartbeatRate {
                slice,
                period_ms,
                min_percent,
            } => write!(
                f,
                "[{slice}] at least {min_percent}% of one HEARTBEAT per {period_ms} ms between two \
                 [hv] exits {slice} lines"
            ),
            Expect::Nvme {
                slice,
                bytes,
                queues,
            } => write!(
                f,
                "[{slice}] SLICE-REPORT with nvme_bytes {bytes} and nvme_queues {queues}"
            ),
            Expect::SameCapture { pattern, count } => {
                write!(f, "{count} lines {pattern}, all with the same value")
            }
            Expect::Line { pattern, count: 1 } => write!(f, "a line {pattern}"),
            Expect::Line { pattern, count } => write!(f, "{count} lines {pattern}"),
            Expect::Sequence(patterns) => {
                let list: Vec<String> = patterns.iter().map(ToString::to_string).collect();
                write!(f, "lines in order: {}", list.join(" -> "))
            }
            Expect::HeartbeatsAfter {
                after,
                slices,
                count,
            } => write!(
                f,
                "after {after}: {count} more heartbeats from each of {}",
                slices.join(", ")
            ),
            Expect::Attacks { slice, attacks } => write!(
                f,
                "[{slice}] each of {} attempted with one verdict, none unverified",
                attacks.join(",")
            ),
            Expect::Never(pattern) => write!(f, "no line {pattern}"),
            Expect::NeverAfter { after, pattern } => write!(f, "after {after}: no line {pattern}"),
            Expect::OnlyBetween {
                pattern,
                from,
                until,
            } => write!(
                f,
                "lines {pattern} only between {from} and the next {until}"
            ),
            Expect::QemuExits => write!(f, "QEMU exits by itself"),
        }
    }
}

/// Progress of one expectation.
#[derive(Clone, Debug, Default)]
struct State {
    /// Lines matched so far (Line), or patterns done (Sequence).
    count: usize,
    /// The trigger was seen (HeartbeatsAfter), with the heartbeats counted per slice since.
    triggered: bool,
    heartbeats: HashMap<String, (usize, Option<u64>)>,
    /// HeartbeatRate: the slice's uptime when the window opened.
    window_start: Option<f64>,
    /// SameCapture: the value of the first matching line.
    captured: Option<String>,
    /// Attacks: the slice's progress through its attacks.
    attacks: AttackRun,
    /// Set when violated, with the reason.
    violation: Option<String>,
    done: bool,
}

/// Checks a list of expectations against console lines as they arrive.
#[derive(Clone, Debug)]
pub struct Checker {
    expects: Vec<(Expect, State)>,
    lines: usize,
}

impl Checker {
    pub fn new(expects: Vec<Expect>) -> Checker {
        let expects = expects
            .into_iter()
            .map(|e| {
                let done = match &e {
                    Expect::Never(_) | Expect::NeverAfter { .. } | Expect::OnlyBetween { .. } => {
                        true
                    }
                    Expect::Attacks { attacks, .. } => attacks.is_empty(),
                    _ => false,
                };
                (
                    e,
                    State {
                        done,
                        ..State::default()
                    },
                )
            })
            .collect();
        Checker { expects, lines: 0 }
    }

    /// Feeds one parsed console line (`raw` as printed).
    pub fn observe(&mut self, line: &Line, raw: &str) {
        self.lines += 1;
        let number = self.lines;
        let report = line
            .slice()
            .and_then(|_| SliceReport::from_text(&line.text));
        for (expect, state) in &mut self.expects {
            if state.violation.is_some() {
                continue;
            }
            match expect {
                Expect::Report {
                    slice,
                    cpus,
                    memory_bytes,
                } => {
                    if line.slice() != Some(slice.as_str()) {
                        continue;
                    }
                    match &report {
                        Some(Ok(r)) => {
                            let wrong = r.mismatches(slice, *cpus, *memory_bytes);
                            if wrong.is_empty() {
                                state.done = true;
                            } else {
                                state.violation = Some(format!(
                                    "line {number}: [{slice}] SLICE-REPORT does not match the plan: {}",
                                    wrong.join("; ")
                                ));
                            }
                        }
                        Some(Err(e)) => {
                            state.violation = Some(format!("line {number}: [{slice}] {e}"))
                        }
                        None => {}
                    }
                }
                Expect::MemTotal {
                    slice,
                    min_kib,
                    max_kib,
                } => {
                    if line.slice() != Some(slice.as_str()) {
                        continue;
                    }
                    match &report {
                        Some(Ok(r)) => match r.mem_total_kib() {
                            Some(kib) if (*min_kib..=*max_kib).contains(&kib) => state.done = true,
                            Some(kib) => {
                                state.violation = Some(format!(
                                    "line {number}: [{slice}] mem_total_kib is {kib}, expected \
                                     {min_kib}..={max_kib} (memory_bytes {})",
                                    r.memory_bytes
                                ))
                            }
                            None => {
                                state.violation = Some(format!(
                                    "line {number}: [{slice}] SLICE-REPORT has no mem_total_kib"
                                ))
                            }
                        },
                        Some(Err(e)) => {
                            state.violation = Some(format!("line {number}: [{slice}] {e}"))
                        }
                        None => {}
                    }
                }
                Expect::HeartbeatRate {
                    slice,
                    period_ms,
                    min_percent,
                } => {
                    if state.done {
                        continue;
                    }
                    if line.source == Source::Hv
                        && let Some((s, uptime)) = exits_uptime(&line.text)
                        && s == slice
                    {
                        let Some(start) = state.window_start else {
                            state.window_start = Some(uptime);
                            state.triggered = true;
                            continue;
                        };
                        let seconds = uptime - start;
                        let periods = seconds * 1000.0 / *period_ms as f64;
                        let least = periods * *min_percent as f64 / 100.0;
                        let beats = state.count;
                        if periods < MIN_RATE_WINDOW_PERIODS {
                            state.violation = Some(format!(
                                "line {number}: [{slice}] rate window of {seconds:.3} s is \
                                 shorter than {MIN_RATE_WINDOW_PERIODS} heartbeat periods (restarted?)"
                            ));
                        } else if (beats as f64) < least {
                            state.violation = Some(format!(
                                "line {number}: [{slice}] printed {beats} heartbeats in {seconds:.3} s \
                                 of its uptime; one per {period_ms} ms gives {periods:.1}, at least \
                                 {min_percent}% = {least:.1} expected"
                            ));
                        } else {
                            state.done = true;
                        }
                        continue;
                    }
                    if !state.triggered || line.slice() != Some(slice.as_str()) {
                        continue;
                    }
                    if let Some(n) = heartbeat_number(&line.text) {
                        let entry = state.heartbeats.entry(slice.clone()).or_insert((0, None));
                        if entry.1.is_none_or(|last| n > last) {
                            state.count += 1;
                        }
                        entry.1 = Some(n);
                    }
                }
                Expect::Nvme {
                    slice,
                    bytes,
                    queues,
                } => {
                    if line.slice() != Some(slice.as_str()) {
                        continue;
                    }
                    match &report {
                        Some(Ok(r)) => {
                            let got = (r.number("nvme_bytes"), r.number("nvme_queues"));
                            if got == (Some(*bytes), Some(*queues)) {
                                state.done = true;
                            } else {
                                state.violation = Some(format!(
                                    "line {number}: [{slice}] SLICE-REPORT has nvme_bytes {} and \
                                     nvme_queues {}, expected {bytes} and {queues}",
                                    show(got.0),
                                    show(got.1)
                                ));
                            }
                        }
                        Some(Err(e)) => {
                            state.violation = Some(format!("line {number}: [{slice}] {e}"))
                        }
                        None => {}
                    }
                }
                Expect::SameCapture { pattern, count } => {
                    if !pattern.matches(line, raw) {
                        continue;
                    }
                    let text = match &pattern.scope {
                        Scope::Any => raw,
                        _ => line.text.as_str(),
                    };
                    let value = pattern
                        .regex
                        .captures(text)
                        .and_then(|c| c.get(1))
                        .map_or("", |m| m.as_str())
                        .to_string();
                    match &state.captured {
                        Some(first) if *first != value => {
                            state.violation = Some(format!(
                                "line {number}: {pattern} gives {value:?}, earlier {first:?}: {raw}"
                            ));
                        }
                        Some(_) => {}
                        None => state.captured = Some(value),
                    }
                    state.count += 1;
                    state.done = state.count >= *count;
                }
                Expect::Line { pattern, count } => {
                    if pattern.matches(line, raw) {
                        state.count += 1;
                        state.done = state.count >= *count;
                    }
                }
                Expect::Sequence(patterns) => {
                    if let Some(next) = patterns.get(state.count)
                        && next.matches(line, raw)
                    {
                        state.count += 1;
                        state.done = state.count == patterns.len();
                    }
                }
                Expect::HeartbeatsAfter {
                    after,
                    slices,
                    count,
                } => {
                    if !state.triggered {
                        state.triggered = after.matches(line, raw);
                        continue;
                    }
                    let (Some(s), Some(n)) = (line.slice(), heartbeat_number(&line.text)) else {
                        continue;
                    };
                    if !slices.iter().any(|x| x == s) {
                        continue;
                    }
                    let entry = state.heartbeats.entry(s.to_string()).or_insert((0, None));
                    // A slice that restarts counts from 1 again; count only increasing numbers.
                    if entry.1.is_none_or(|last| n > last) {
                        entry.0 += 1;
                    }
                    entry.1 = Some(n);
                    state.done = slices
                        .iter()
                        .all(|s| state.heartbeats.get(s).is_some_and(|(c, _)| c >= count));
                }
                Expect::Attacks { slice, attacks } => {
                    if let Err(why) = state.attacks.observe(slice, attacks, line) {
                        state.violation = Some(format!("line {number}: {why}"));
                    }
                    state.done = state.attacks.complete();
                }
                Expect::Never(pattern) => {
                    if pattern.matches(line, raw) {
                        state.violation =
                            Some(format!("line {number} is forbidden ({pattern}): {raw}"));
                    }
                }
                Expect::OnlyBetween {
                    pattern,
                    from,
                    until,
                } => {
                    if pattern.matches(line, raw) && !state.triggered {
                        state.violation = Some(format!(
                            "line {number} ({pattern}) is allowed only between {from} and the \
                             next {until}: {raw}"
                        ));
                    } else if from.matches(line, raw) {
                        state.triggered = true;
                    } else if until.matches(line, raw) {
                        state.triggered = false;
                    }
                }
                Expect::NeverAfter { after, pattern } => {
                    if !state.triggered {
                        state.triggered = after.matches(line, raw);
                    } else if pattern.matches(line, raw) {
                        state.violation = Some(format!(
                            "line {number} is forbidden after {after} ({pattern}): {raw}"
                        ));
                    }
                }
                Expect::QemuExits => {}
            }
        }
    }

    /// Records that QEMU exited (`status` as text, for messages).
    pub fn qemu_exited(&mut self) {
        for (expect, state) in &mut self.expects {
            if matches!(expect, Expect::QemuExits) {
                state.done = true;
            }
        }
    }

    /// The first violated expectation's reason, if any.
    pub fn violation(&self) -> Option<&str> {
        self.expects
            .iter()
            .find_map(|(_, s)| s.violation.as_deref())
    }

    /// Expectations not met yet (violated ones excluded: see [`Checker::violation`]).
    pub fn pending(&self) -> Vec<String> {
        self.expects
            .iter()
            .filter(|(_, s)| !s.done && s.violation.is_none())
            .map(|(e, s)| describe_pending(e, s))
            .collect()
    }

    /// Whether every expectation holds.
    pub fn satisfied(&self) -> bool {
        self.violation().is_none() && self.pending().is_empty()
    }
}

/// An optional number as text (`none` when absent).
fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn describe_pending(expect: &Expect, state: &State) -> String {
    match expect {
        Expect::SameCapture { .. } => format!("{expect} (saw {})", state.count),
        Expect::Line { count, .. } if *count > 1 => format!("{expect} (saw {})", state.count),
        Expect::Sequence(patterns) => format!(
            "{expect} (stuck at {})",
            patterns
                .get(state.count)
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
        Expect::HeartbeatsAfter { slices, .. } if state.triggered => {
            let seen: Vec<String> = slices
                .iter()
                .map(|s| format!("{s}: {}", state.heartbeats.get(s).map_or(0, |h| h.0)))
                .collect();
            format!("{expect} (saw {})", seen.join(", "))
        }
        Expect::HeartbeatsAfter { .. } => format!("{expect} (trigger not seen)"),
        Expect::HeartbeatRate { .. } if state.triggered => {
            format!("{expect} (window open, {} heartbeats so far)", state.count)
        }
        Expect::HeartbeatRate { .. } => format!("{expect} (no exits line yet)"),
        Expect::Attacks { slice, attacks } => state.attacks.pending(slice, attacks),
        _ => expect.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(checker: &mut Checker, log: &str) {
        for raw in log.lines() {
            checker.observe(&Line::parse(raw), raw);
        }
    }

    const HEALTHY: &str = r#"[hv] microvisor 0.1.0: 4 cores, 1 GiB RAM, GICv3
[hv] partition: slice a cores 0-1 ram 0x78000000-0x80000000 (128 MiB) kernel probe
[hv] partition: slice b cores 2-3 ram 0x70000000-0x78000000 (128 MiB) kernel probe
[hv] slice a started
[hv] slice b started
[a] SLICE-REPORT {"slice":"a","cpus":2,"mpidrs":[0,1],"memory_bytes":134217728}
[b] SLICE-REPORT {"slice":"b","cpus":2,"mpidrs":[0,1],"memory_bytes":134217728}
[a] PROBE PASS
[b] PROBE PASS
[a] HEARTBEAT 1 ok
[b] HEARTBEAT 1 ok
"#;

    fn report(slice: &str, cpus: u64, mib: u64) -> Expect {
        Expect::Report {
            slice: slice.into(),
            cpus,
            memory_bytes: mib << 20,
        }
    }

    #[test]
    fn only_between_allows_lines_inside_each_window() {
        let only = || {
            Checker::new(vec![Expect::OnlyBetween {
                pattern: slice("web", "^NET GET 10.10.0.2 failed$"),
                from: slice("db", "^PROBE ACTION reboot$"),
                until: slice("web", "^NET GET 10.10.0.2 ok "),
            }])
        };
        let ok = "[web] NET GET 10.10.0.2 ok slice db";
        let failed = "[web] NET GET 10.10.0.2 failed";
        let reboot = "[db] PROBE ACTION reboot";
        let mut c = only();
        assert!(c.satisfied());
        feed(
            &mut c,
            &[ok, reboot, failed, failed, ok, reboot, failed, ok].join("\n"),
        );
        assert!(
            c.satisfied() && c.violation().is_none(),
            "{:?}",
            c.violation()
        );

        let mut c = only();
        feed(&mut c, &[ok, failed].join("\n"));
        let why = c.violation().expect("a failure before the reboot");
        assert!(
            why.starts_with(
                "line 2 ([web] /^NET GET 10.10.0.2 failed$/) is allowed only between \
                 [db] /^PROBE ACTION reboot$/ and the next [web] /^NET GET 10.10.0.2 ok /"
            ),
            "{why}"
        );

        let mut c = only();
        feed(&mut c, &[reboot, failed, ok, failed].join("\n"));
        assert!(
            c.violation().unwrap().starts_with("line 4 "),
            "the window closed"
        );
    }

    #[test]
    fn a_healthy_boot_satisfies_reports_and_passes() {
        let mut c = Checker::new(vec![
            report("a", 2, 128),
            report("b", 2, 128),
            Expect::probe_pass("a"),
            Expect::probe_pass("b"),
            Expect::line(hv(r"^partition: slice a cores 0-1 ")),
        ]);
        assert_eq!(c.pending().len(), 5);
        feed(&mut c, HEALTHY);
        assert!(c.satisfied(), "{:?} {:?}", c.violation(), c.pending());
    }

    #[test]
    fn a_report_with_wrong_memory_is_a_violation() {
        let mut c = Checker::new(vec![report("a", 2, 256)]);
        feed(&mut c, HEALTHY);
        let why = c.violation().expect("violation");
        assert!(
            why.contains("memory_bytes is 0x8000000, expected 0x10000000"),
            "{why}"
        );
    }

    #[test]
    fn a_missing_probe_pass_stays_pending() {
        let mut c = Checker::new(vec![Expect::probe_pass("c")]);
        feed(&mut c, HEALTHY);
        assert!(!c.satisfied());
        assert_eq!(c.pending(), vec!["a line [c] /^PROBE PASS$/".to_string()]);
    }

    #[test]
    fn forbidden_lines_are_violations_wherever_they_appear() {
        for bad in [
            "[hv] FATAL data abort at EL2",
            "[a] PROBE FAIL memory",
            "[b] ATTACK mmio NOT-CONTAINED read 0x0",
            "panicked at src/x.rs:1",
        ] {
            let mut c = Checker::new(Expect::always_forbidden());
            assert!(c.satisfied());
            feed(&mut c, HEALTHY);
            feed(&mut c, bad);
            assert!(c.violation().is_some(), "{bad} not caught");
        }
    }

    #[test]
    fn heartbeats_count_only_after_the_trigger_and_per_slice() {
        let mut c = Checker::new(vec![Expect::HeartbeatsAfter {
            after: hv("^slice a stopped: "),
            slices: vec!["b".into(), "c".into()],
            count: 2,
        }]);
        feed(
            &mut c,
            "[b] HEARTBEAT 1 ok\n[c] HEARTBEAT 1 ok\n[b] HEARTBEAT 2 ok\n",
        );
        assert!(c.pending()[0].contains("trigger not seen"));
        feed(
            &mut c,
            "[hv] slice a stopped: data abort outside its RAM at IPA 0x80000000\n",
        );
        feed(
            &mut c,
            "[b] HEARTBEAT 3 ok\n[b] HEARTBEAT 4 ok\n[a] HEARTBEAT 9 ok\n[c] HEARTBEAT 2 ok\n",
        );
        assert!(!c.satisfied(), "c has only one heartbeat since");
        assert!(c.pending()[0].contains("b: 2, c: 1"), "{:?}", c.pending());
        feed(&mut c, "[c] HEARTBEAT 3 ok\n");
        assert!(c.satisfied());
    }

    #[test]
    fn repeated_heartbeat_numbers_do_not_count_twice() {
        let mut c = Checker::new(vec![Expect::HeartbeatsAfter {
            after: any("go"),
            slices: vec!["b".into()],
            count: 2,
        }]);
        feed(&mut c, "go\n[b] HEARTBEAT 5 ok\n[b] HEARTBEAT 5 ok\n");
        assert!(!c.satisfied());
        feed(&mut c, "[b] HEARTBEAT 6 ok\n");
        assert!(c.satisfied());
    }

    #[test]
    fn a_stopped_slice_must_stay_silent() {
        let mut c = Checker::new(vec![Expect::NeverAfter {
            after: hv("^slice a stopped: "),
            pattern: any_slice_named("a"),
        }]);
        feed(&mut c, HEALTHY);
        feed(
            &mut c,
            "[hv] slice a stopped: undefined instruction\n[b] HEARTBEAT 2 ok\n",
        );
        assert!(c.satisfied());
        feed(&mut c, "[a] HEARTBEAT 2 ok\n");
        assert!(c.violation().unwrap().contains("[a] HEARTBEAT 2 ok"));
    }

    fn any_slice_named(name: &str) -> Pattern {
        slice(name, "")
    }

    #[test]
    fn sequences_need_their_order() {
        let mut c = Checker::new(vec![Expect::Sequence(vec![
            hv("^slice a stopped"),
            hv("^slice a restarted"),
            slice("a", "^SLICE-REPORT "),
        ])]);
        feed(&mut c, HEALTHY);
        assert!(
            !c.satisfied(),
            "the first SLICE-REPORT came before the stop"
        );
        feed(
            &mut c,
            "[hv] slice a stopped: undefined instruction\n[hv] slice a restarted\n",
        );
        assert!(!c.satisfied());
        feed(&mut c, HEALTHY);
        assert!(c.satisfied());
    }

    #[test]
    fn line_counts_and_qemu_exit() {
        let mut c = Checker::new(vec![
            Expect::Line {
                pattern: slice("a", "^SLICE-REPORT "),
                count: 2,
            },
            Expect::QemuExits,
        ]);
        feed(&mut c, HEALTHY);
        assert!(c.pending()[0].contains("(saw 1)"), "{:?}", c.pending());
        feed(&mut c, HEALTHY);
        assert_eq!(c.pending(), vec!["QEMU exits by itself".to_string()]);
        c.qemu_exited();
        assert!(c.satisfied());
    }

    #[test]
    fn memtotal_must_be_in_range_in_every_report() {
        let report = |kib: &str| {
            format!(
                "[l] SLICE-REPORT {{\"slice\":\"l\",\"cpus\":1,\"mpidrs\":[0],\"memory_bytes\":268435456{kib}}}\n"
            )
        };
        let expect = || {
            Checker::new(vec![Expect::MemTotal {
                slice: "l".into(),
                min_kib: 200_000,
                max_kib: 262_144,
            }])
        };
        let mut c = expect();
        feed(&mut c, "[l] PROBE PASS\n");
        assert!(!c.satisfied());
        feed(&mut c, &report(",\"mem_total_kib\":230000"));
        assert!(c.satisfied());
        feed(&mut c, &report(",\"mem_total_kib\":262145"));
        let why = c.violation().expect("a later report above the plan");
        assert!(why.contains("mem_total_kib is 262145"), "{why}");

        let mut c = expect();
        feed(&mut c, &report(",\"mem_total_kib\":199999"));
        assert!(c.violation().is_some());
        let mut c = expect();
        feed(&mut c, &report(""));
        assert!(c.violation().unwrap().contains("no mem_total_kib"));
    }

    fn rate(min_percent: u64) -> Checker {
        Checker::new(vec![Expect::HeartbeatRate {
            slice: "p".into(),
            period_ms: 500,
            min_percent,
        }])
    }

    fn beats(from: u64, to: u64) -> String {
        (from..=to)
            .map(|n| format!("[p] HEARTBEAT {n} ok\n"))
            .collect()
    }

    const EXITS_AT_10: &str = "[hv] exits p: 50 in 10.000 s (5 per s); injected 0\n";
    const EXITS_AT_20: &str = "[hv] exits p: 90 in 20.000 s (4 per s); injected 0\n";

    #[test]
    fn heartbeat_rate_counts_beats_between_two_exit_reports() {
        // 10 s at one per 500 ms: 20 expected, 40% = 8.
        let mut c = rate(40);
        feed(&mut c, &beats(1, 30));
        assert!(
            c.pending()[0].contains("no exits line yet"),
            "{:?}",
            c.pending()
        );
        feed(&mut c, EXITS_AT_10);
        feed(
            &mut c,
            "[hv] exits q: 1 in 10.000 s (0 per s); injected 0\n",
        );
        feed(&mut c, &beats(31, 38));
        feed(&mut c, "[q] HEARTBEAT 99 ok\n[p] HEARTBEAT 38 ok\n");
        assert!(
            c.pending()[0].contains("8 heartbeats so far"),
            "{:?}",
            c.pending()
        );
        feed(&mut c, EXITS_AT_20);
        assert!(c.satisfied(), "{:?} {:?}", c.violation(), c.pending());
    }

    #[test]
    fn too_few_heartbeats_in_the_window_is_a_violation() {
        let mut c = rate(40);
        feed(&mut c, EXITS_AT_10);
        feed(&mut c, &beats(1, 7));
        feed(&mut c, EXITS_AT_20);
        let why = c.violation().expect("7 < 8");
        assert!(why.contains("printed 7 heartbeats in 10.000 s"), "{why}");
    }

    #[test]
    fn a_short_window_cannot_pass() {
        let mut c = rate(40);
        feed(&mut c, EXITS_AT_10);
        feed(&mut c, &beats(1, 9));
        feed(
            &mut c,
            "[hv] exits p: 60 in 14.000 s (4 per s); injected 0\n",
        );
        assert!(c.violation().unwrap().contains("shorter than"));
        // A restart in between makes the uptime go back.
        let mut c = rate(40);
        feed(&mut c, EXITS_AT_20);
        feed(&mut c, &beats(1, 40));
        feed(&mut c, EXITS_AT_10);
        assert!(c.violation().is_some());
    }

    #[test]
    fn nvme_reports_must_match_the_plan() {
        let expect = || {
            Checker::new(vec![Expect::Nvme {
                slice: "l".into(),
                bytes: 64 << 20,
                queues: 2,
            }])
        };
        let report = |extra: &str| {
            format!(
                "[l] SLICE-REPORT {{\"slice\":\"l\",\"cpus\":2,\"mpidrs\":[0,1],\"memory_bytes\":1{extra}}}\n"
            )
        };
        let mut c = expect();
        feed(
            &mut c,
            "[m] SLICE-REPORT {\"slice\":\"m\",\"cpus\":1,\"mpidrs\":[0],\"memory_bytes\":1}\n",
        );
        assert!(!c.satisfied() && c.violation().is_none());
        feed(
            &mut c,
            &report(",\"nvme_bytes\":67108864,\"nvme_queues\":2"),
        );
        assert!(c.satisfied(), "{:?}", c.violation());

        let mut c = expect();
        feed(
            &mut c,
            &report(",\"nvme_bytes\":67108864,\"nvme_queues\":4"),
        );
        let why = c.violation().expect("4 queues where 2 are planned");
        assert!(
            why.contains("nvme_queues 4, expected 67108864 and 2"),
            "{why}"
        );
        let mut c = expect();
        feed(&mut c, &report(""));
        assert!(c.violation().unwrap().contains("nvme_bytes none"));
    }

    #[test]
    fn same_capture_needs_equal_values() {
        let expect = || {
            Checker::new(vec![Expect::SameCapture {
                pattern: slice("l", "^DISK sum [0-9]+ ([0-9a-f]+)$"),
                count: 2,
            }])
        };
        let mut c = expect();
        feed(&mut c, "[l] DISK sum 4096 abc\n[m] DISK sum 4096 def\n");
        assert!(!c.satisfied() && c.violation().is_none());
        assert!(c.pending()[0].contains("(saw 1)"), "{:?}", c.pending());
        feed(&mut c, "[l] DISK sum 4096 abc\n");
        assert!(c.satisfied());
        let mut c = expect();
        feed(&mut c, "[l] DISK sum 4096 abc\n[l] DISK sum 4096 abd\n");
        let why = c.violation().expect("the sum changed");
        assert!(why.contains("\"abd\", earlier \"abc\""), "{why}");
    }

    #[test]
    fn attacks_must_be_attempted_and_concluded() {
        let expect = || {
            Checker::new(vec![Expect::Attacks {
                slice: "a".into(),
                attacks: vec!["cpu-on-outside".into(), "hvc-unknown".into()],
            }])
        };
        let mut c = expect();
        feed(&mut c, HEALTHY);
        assert_eq!(
            c.pending(),
            vec![
                "[a] `ATTACK cpu-on-outside attempting` and its verdict (attacks asked for: \
                 cpu-on-outside,hvc-unknown)"
                    .to_string()
            ]
        );
        let mut c = expect();
        feed(
            &mut c,
            "[a] PROBE START probe\n\
             [a] ATTACK cpu-on-outside attempting cpu_on+affinity_info 0x2,0x100\n\
             [a] ATTACK cpu-on-outside contained cpu_on(0x2)=-2\n\
             [a] ATTACK hvc-unknown attempting hvc 0xc6000000\n\
             [a] ATTACK hvc-unknown contained hvc 0xc6000000 returned -1\n",
        );
        assert!(c.satisfied(), "{:?} {:?}", c.violation(), c.pending());

        let mut c = expect();
        feed(
            &mut c,
            "[a] PROBE START probe\n\
             [a] ATTACK cpu-on-outside attempting cpu_on+affinity_info 0x2,0x100\n\
             [a] ATTACK cpu-on-outside contained cpu_on(0x2)=-2\n\
             [a] ATTACK hvc-unknown attempting hvc 0xc6000000\n\
             [a] ATTACK hvc-unknown NOT-CONTAINED unverified because\n",
        );
        let why = c.violation().expect("unverified is a violation");
        assert!(
            why.starts_with("line 5: [a] attack hvc-unknown could not be attempted"),
            "{why}"
        );
        // Nothing asked for: nothing to wait for.
        let c = Checker::new(vec![Expect::Attacks {
            slice: "a".into(),
            attacks: vec![],
        }]);
        assert!(c.satisfied());
    }

    #[test]
    fn patterns_look_only_at_their_source() {
        let line = Line::parse("[a] PROBE PASS");
        assert!(slice("a", "^PROBE PASS$").matches(&line, "[a] PROBE PASS"));
        assert!(!slice("b", "PROBE").matches(&line, "[a] PROBE PASS"));
        assert!(!hv("PROBE").matches(&line, "[a] PROBE PASS"));
        assert!(any(r"^\[a\] PROBE").matches(&line, "[a] PROBE PASS"));
        assert!(any_slice("").matches(&line, "[a] PROBE PASS"));
        assert!(!any_slice("").matches(&Line::parse("[hv] x"), "[hv] x"));
        assert_eq!(lit("a.b[0]"), r"a\.b\[0\]");
    }
}
