//! The benchmark results: one [`Metric`] per measured quantity with its goal, the JSON file
//! (`target/bench/results.json`), the table printed on stdout and the comparison with an older
//! results file.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// What a metric aims for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// The value should be at most this.
    AtMost(f64),
    /// The value should be at least this.
    AtLeast(f64),
    /// The value should be below this (strictly: the peer's figure to beat).
    Below(f64),
    /// No numeric goal (reported only).
    None,
}

impl Goal {
    fn text(self, unit: &str) -> String {
        match self {
            Goal::AtMost(x) => format!("<= {} {unit}", number(x)),
            Goal::AtLeast(x) => format!(">= {} {unit}", number(x)),
            Goal::Below(x) => format!("< {} {unit}", number(x)),
            Goal::None => "-".into(),
        }
    }

    fn met(self, value: f64) -> Option<bool> {
        match self {
            Goal::AtMost(x) => Some(value <= x),
            Goal::AtLeast(x) => Some(value >= x),
            Goal::Below(x) => Some(value < x),
            Goal::None => None,
        }
    }
}

/// One measured quantity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Stable key (`null-hvc`, `boot-8`, ...), used by `--compare`.
    pub id: String,
    /// What it is, in a few words.
    pub title: String,
    /// The measurement; `None` when it could not be measured (see `note`).
    pub value: Option<f64>,
    pub unit: String,
    /// The goal as text (`<= 150 insn`), `-` if none.
    pub goal: String,
    /// Whether the value meets the goal (`None`: no goal or no value).
    pub met: Option<bool>,
    /// The same quantity for the probe booted natively, where one exists.
    pub native: Option<f64>,
    /// Further numbers (per-cause exit rates, raw counts).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detail: BTreeMap<String, f64>,
    /// How it was measured or why it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Metric {
    /// A measured metric; `met` follows from `goal`.
    pub fn new(id: &str, title: &str, value: f64, unit: &str, goal: Goal) -> Metric {
        Metric {
            id: id.into(),
            title: title.into(),
            value: Some(value),
            unit: unit.into(),
            goal: goal.text(unit),
            met: goal.met(value),
            native: None,
            detail: BTreeMap::new(),
            note: None,
        }
    }

    /// A metric that is not measured (yet), with the reason.
    pub fn missing(id: &str, title: &str, unit: &str, goal: &str, why: &str) -> Metric {
        Metric {
            id: id.into(),
            title: title.into(),
            value: None,
            unit: unit.into(),
            goal: goal.into(),
            met: None,
            native: None,
            detail: BTreeMap::new(),
            note: Some(why.into()),
        }
    }

    pub fn with_native(mut self, native: f64) -> Metric {
        self.native = Some(native);
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Metric {
        self.note = Some(note.into());
        self
    }

    pub fn with_detail(mut self, key: &str, value: f64) -> Metric {
        self.detail.insert(key.into(), value);
        self
    }

    /// Overrides `met` for goals that are not a threshold (e.g. "timer only").
    pub fn with_met(mut self, goal: &str, met: bool) -> Metric {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }
}

/// Everything one `cargo xtask bench` run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// `qemu-system-aarch64 --version`, first line.
    pub qemu: String,
    /// QEMU options every run used (`-icount ...`).
    pub method: String,
    /// The Linux guest's kernel, if the Linux metrics ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<String>,
    pub metrics: Vec<Metric>,
}

impl Results {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("results serialize") + "\n"
    }

    pub fn from_json(text: &str) -> serde_json::Result<Results> {
        serde_json::from_str(text)
    }

    pub fn get(&self, id: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.id == id)
    }

    /// The table printed on stdout (Markdown, so it can be pasted into docs/performance.md).
    pub fn table(&self) -> String {
        let mut out =
            String::from("| metric | value | native | goal | met |\n|---|---|---|---|---|\n");
        for m in &self.metrics {
            let value = match m.value {
                Some(v) => format!("{} {}", number(v), m.unit),
                None => "not measured yet".into(),
            };
            let native = m.native.map(number).unwrap_or_else(|| "-".into());
            let met = match m.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            };
            let _ = writeln!(
                out,
                "| {} (`{}`) | {value} | {native} | {} | {met} |",
                m.title, m.id, m.goal
            );
        }
        out
    }

    /// The change from `old` to `self`, one line per metric both have a value for.
    pub fn compare(&self, old: &Results) -> String {
        let mut out = String::from("| metric | old | new | change |\n|---|---|---|---|\n");
        for m in &self.metrics {
            let old_value = old.get(&m.id).and_then(|o| o.value);
            let change = match (old_value, m.value) {
                (Some(a), Some(b)) if a == b => "=".to_string(),
                (Some(a), Some(b)) if a != 0.0 => {
                    format!("{:+} ({:+.2}%)", number(b - a), (b - a) / a.abs() * 100.0)
                }
                (Some(a), Some(b)) => format!("{:+}", number(b - a)),
                (None, Some(_)) => "new".into(),
                (Some(_), None) => "gone".into(),
                (None, None) => "-".into(),
            };
            let show = |v: Option<f64>| v.map(number).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {change} |",
                m.id,
                show(old_value),
                show(m.value)
            );
        }
        out
    }
}

/// A number without a pointless fraction: `123`, `123.5`, `0.9999`.
pub fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Results {
        Results {
            qemu: "QEMU emulator version 10.0.2".into(),
            method: "-icount shift=0,sleep=off".into(),
            linux: None,
            metrics: vec![
                Metric::new(
                    "null-hvc",
                    "null hypercall",
                    120.5,
                    "insn",
                    Goal::AtMost(150.0),
                )
                .with_native(6.0),
                Metric::new(
                    "workload",
                    "workload ratio",
                    0.98,
                    "ratio",
                    Goal::AtLeast(0.99),
                ),
                Metric::missing("nvme", "NVMe", "IOPS", ">= 0.9", "not measured yet"),
            ],
        }
    }

    #[test]
    fn goals_decide_met() {
        let r = sample();
        assert_eq!(r.metrics[0].met, Some(true));
        assert_eq!(r.metrics[0].goal, "<= 150 insn");
        assert_eq!(r.metrics[1].met, Some(false));
        assert_eq!(r.metrics[2].met, None);
        let m = Metric::new("x", "x", 1.0, "s", Goal::None);
        assert_eq!((m.goal.as_str(), m.met), ("-", None));
        let below = |v| Metric::new("ipi", "ipi", v, "insn", Goal::Below(1618.0));
        assert_eq!(below(1617.0).met, Some(true));
        assert_eq!(below(1618.0).met, Some(false));
        assert_eq!(below(1.0).goal, "< 1618 insn");
    }

    #[test]
    fn json_round_trip_has_the_fields() {
        let r = sample();
        let json = r.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let first = &v["metrics"][0];
        for key in ["value", "unit", "goal", "met", "native"] {
            assert!(first.get(key).is_some(), "{key} missing in {first}");
        }
        assert_eq!(first["native"], 6.0);
        assert_eq!(v["metrics"][2]["value"], serde_json::Value::Null);
        assert_eq!(Results::from_json(&json).unwrap(), r);
    }

    #[test]
    fn table_lists_every_metric() {
        let t = sample().table();
        assert!(
            t.contains("| null hypercall (`null-hvc`) | 120.5 insn | 6 | <= 150 insn | yes |"),
            "{t}"
        );
        assert!(t.contains("| **no** |"), "{t}");
        assert!(t.contains("not measured yet"), "{t}");
    }

    #[test]
    fn compare_shows_deltas() {
        let old = sample();
        let mut new = sample();
        new.metrics[0].value = Some(100.0);
        new.metrics
            .push(Metric::new("boot-1", "boot", 5.0, "insn", Goal::None));
        let c = new.compare(&old);
        assert!(
            c.contains("| `null-hvc` | 120.5 | 100 | -20.5 (-17.01%) |"),
            "{c}"
        );
        assert!(c.contains("| `workload` | 0.98 | 0.98 | = |"), "{c}");
        assert!(c.contains("| `boot-1` | - | 5 | new |"), "{c}");
        assert!(c.contains("| `nvme` | - | - | - |"), "{c}");
    }

    #[test]
    fn numbers_print_compactly() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(123.46), "123.5");
        assert_eq!(number(0.99991), "0.9999");
        assert_eq!(number(0.5), "0.5");
    }
}
