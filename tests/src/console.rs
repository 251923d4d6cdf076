//! The node console as the tests see it: each line is attributed to the hypervisor
//! (`[hv] ...`), a slice (`[<slice>] ...`) or nobody (firmware, U-Boot, a natively booted guest),
//! and the probe's `SLICE-REPORT {json}` lines are decoded.

use serde::Deserialize;

/// Who printed a console line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// `[hv] <text>`: the microvisor itself.
    Hv,
    /// `[<slice>] <text>`: a slice's guest.
    Slice(String),
    /// No prefix: firmware, U-Boot, or a guest booted without the microvisor.
    Bare,
}

/// One console line, split into its source and its text (the prefix removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub source: Source,
    pub text: String,
}

impl Line {
    /// Splits a raw console line (`\r` already removed). A prefix is `[` + a slice name
    /// (`[a-z0-9-]`, 1..=32) + `] `; anything else is a bare line.
    pub fn parse(raw: &str) -> Line {
        if let Some(rest) = raw.strip_prefix('[')
            && let Some((name, text)) = rest.split_once("] ")
            && is_slice_name(name)
        {
            let source = if name == "hv" {
                Source::Hv
            } else {
                Source::Slice(name.to_string())
            };
            return Line {
                source,
                text: text.to_string(),
            };
        }
        Line {
            source: Source::Bare,
            text: raw.to_string(),
        }
    }

    /// The line as a bare-booted guest would attribute it: bare lines become `slice`'s.
    pub fn attributed_to(mut self, slice: &str) -> Line {
        if self.source == Source::Bare {
            self.source = Source::Slice(slice.to_string());
        }
        self
    }

    /// The slice that printed this line, if a slice did.
    pub fn slice(&self) -> Option<&str> {
        match &self.source {
            Source::Slice(name) => Some(name),
            _ => None,
        }
    }
}

fn is_slice_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The probe's `SLICE-REPORT {json}` (docs/architecture.md, "Plan, bundle and reports"): the fields tests compare, the rest kept as
/// JSON.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SliceReport {
    pub slice: String,
    pub cpus: u64,
    pub mpidrs: Vec<u64>,
    pub memory_bytes: u64,
    /// Every other field (`memory_base`, `el`, `kernel`, `cmdline`, ...).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// MPIDR affinity fields (Aff3..Aff0), without the RES1/U/MT bits.
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

impl SliceReport {
    /// Decodes the text of a `SLICE-REPORT` line; `None` for other lines.
    pub fn from_text(text: &str) -> Option<Result<SliceReport, String>> {
        let json = text.strip_prefix("SLICE-REPORT ")?;
        Some(
            serde_json::from_str(json).map_err(|e| format!("malformed SLICE-REPORT ({e}): {json}")),
        )
    }

    /// What differs between this report and a slice of `cpus` vCPUs and `memory_bytes` of RAM
    /// named `slice` (vCPU i must have affinity i); empty when it matches.
    pub fn mismatches(&self, slice: &str, cpus: u64, memory_bytes: u64) -> Vec<String> {
        let mut out = Vec::new();
        if self.slice != slice {
            out.push(format!("slice is {:?}, expected {slice:?}", self.slice));
        }
        if self.cpus != cpus {
            out.push(format!("cpus is {}, expected {cpus}", self.cpus));
        }
        let affinities: Vec<u64> = self
            .mpidrs
            .iter()
            .map(|m| m & MPIDR_AFFINITY_MASK)
            .collect();
        let expected: Vec<u64> = (0..cpus).collect();
        if affinities != expected {
            out.push(format!(
                "mpidr affinities are {affinities:?}, expected {expected:?}"
            ));
        }
        if self.memory_bytes != memory_bytes {
            out.push(format!(
                "memory_bytes is {:#x}, expected {memory_bytes:#x}",
                self.memory_bytes
            ));
        }
        out
    }

    /// A numeric field besides the required ones (e.g. `nvme_bytes`, `nvme_queues`), if reported.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.other.get(key).and_then(serde_json::Value::as_u64)
    }

    /// `mem_total_kib` (the Linux guest's MemTotal from /proc/meminfo), if reported.
    pub fn mem_total_kib(&self) -> Option<u64> {
        self.other
            .get("mem_total_kib")
            .and_then(serde_json::Value::as_u64)
    }
}

/// The `n` of a `HEARTBEAT <n> ok` (or `HEARTBEAT <n> ok nvme-ok`) line.
pub fn heartbeat_number(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("HEARTBEAT ")?;
    let (n, tail) = rest.split_once(' ')?;
    // A healthy beat: its RAM canary, and its NVMe canary when it checks one.
    matches!(tail, "ok" | "ok nvme-ok").then_some(())?;
    n.parse().ok()
}

/// One `[hv] exits <slice>: <total> in <s>.<ms> s (...)` line (text after `[hv] `) as the slice
/// and the seconds of counter time since its current run started (`Ctrl-A c`).
pub fn exits_uptime(text: &str) -> Option<(&str, f64)> {
    let rest = text.strip_prefix("exits ")?;
    let (slice, rest) = rest.split_once(": ")?;
    let mut words = rest.split(' ');
    words.next()?.parse::<u64>().ok()?;
    (words.next()? == "in").then_some(())?;
    let seconds: f64 = words.next()?.parse().ok()?;
    (words.next()? == "s").then_some(())?;
    Some((slice, seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_hypervisor_slice_and_bare_lines() {
        assert_eq!(
            Line::parse("[hv] slice a started"),
            Line {
                source: Source::Hv,
                text: "slice a started".into()
            }
        );
        assert_eq!(
            Line::parse("[web-0] PROBE PASS"),
            Line {
                source: Source::Slice("web-0".into()),
                text: "PROBE PASS".into()
            }
        );
        assert_eq!(Line::parse("U-Boot 2023.01").source, Source::Bare);
        assert_eq!(Line::parse("[Not A Slice] x").source, Source::Bare);
        assert_eq!(Line::parse("[a]no-space").source, Source::Bare);
        assert_eq!(Line::parse("[] x").source, Source::Bare);
    }

    #[test]
    fn bare_lines_can_be_attributed_to_a_native_guest() {
        let line = Line::parse("PROBE PASS").attributed_to("native");
        assert_eq!(line.slice(), Some("native"));
        let hv = Line::parse("[hv] x").attributed_to("native");
        assert_eq!(hv.source, Source::Hv);
    }

    #[test]
    fn decodes_and_compares_a_slice_report() {
        let text = r#"SLICE-REPORT {"slice":"a","cpus":2,"mpidrs":[2147483648,2147483649],"memory_bytes":268435456,"memory_base":"0x40000000","el":1,"kernel":"probe 0.1.0","cmdline":"","memory":[{"base":"0x40000000","size":268435456}]}"#;
        let report = SliceReport::from_text(text).unwrap().unwrap();
        assert_eq!(report.cpus, 2);
        assert_eq!(report.other["el"], 1);
        assert_eq!(report.other["memory_base"], "0x40000000");
        assert!(report.mismatches("a", 2, 256 << 20).is_empty());
        let wrong = report.mismatches("b", 3, 128 << 20);
        assert_eq!(wrong.len(), 4, "{wrong:?}");
        assert!(SliceReport::from_text("PROBE PASS").is_none());
        assert!(SliceReport::from_text("SLICE-REPORT {").unwrap().is_err());
    }

    #[test]
    fn reads_linux_memtotal() {
        let text = r#"SLICE-REPORT {"slice":"l","cpus":1,"mpidrs":[0],"memory_bytes":268435456,"mem_total_kib":230000}"#;
        let report = SliceReport::from_text(text).unwrap().unwrap();
        assert_eq!(report.mem_total_kib(), Some(230_000));
        let probe = r#"SLICE-REPORT {"slice":"p","cpus":1,"mpidrs":[0],"memory_bytes":1}"#;
        assert_eq!(
            SliceReport::from_text(probe)
                .unwrap()
                .unwrap()
                .mem_total_kib(),
            None
        );
    }

    #[test]
    fn reads_exit_counter_uptimes() {
        assert_eq!(
            exits_uptime(
                "exits web: 1234 in 12.345 s (99 per s) hvc=3 irq-timer=1200; injected 1300"
            ),
            Some(("web", 12.345))
        );
        assert_eq!(
            exits_uptime("exits b: 0 in 0.000 s (0 per s); injected 0"),
            Some(("b", 0.0))
        );
        assert_eq!(exits_uptime("exits web: many in 1.0 s"), None);
        assert_eq!(exits_uptime("slice web started"), None);
    }

    #[test]
    fn reads_heartbeat_numbers() {
        assert_eq!(heartbeat_number("HEARTBEAT 7 ok"), Some(7));
        assert_eq!(heartbeat_number("HEARTBEAT 7 bad"), None);
        assert_eq!(heartbeat_number("HEARTBEAT 8 ok nvme-ok"), Some(8));
        assert_eq!(heartbeat_number("HEARTBEAT 8 ok nvme-CORRUPT"), None);
        assert_eq!(heartbeat_number("HEARTBEAT x ok"), None);
        assert_eq!(heartbeat_number("PROBE PASS"), None);
    }
}
