//! Reading the console lines the benchmarks produce: the probe's `BENCH` lines and the
//! hypervisor's `footprint`, `boot: ... released` and `exits` lines.

use std::collections::BTreeMap;

/// `[<slice>] BENCH <name> <value> <unit> [key=value ...]` (or without the prefix, natively).
#[derive(Clone, Debug, PartialEq)]
pub struct BenchLine {
    /// The slice prefix, if any.
    pub slice: Option<String>,
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub extra: BTreeMap<String, u64>,
}

/// Splits `[<source>] <rest>` into the source and the rest.
fn prefixed(line: &str) -> (Option<&str>, &str) {
    if let Some(rest) = line.strip_prefix('[')
        && let Some(end) = rest.find("] ")
    {
        return (Some(&rest[..end]), &rest[end + 2..]);
    }
    (None, line)
}

/// A `BENCH` line, if `line` is one with a numeric value.
pub fn bench_line(line: &str) -> Option<BenchLine> {
    let (slice, rest) = prefixed(line);
    let mut words = rest.strip_prefix("BENCH ")?.split_whitespace();
    let name = words.next()?.to_string();
    let value = words.next()?.parse::<f64>().ok()?;
    let unit = words.next()?.to_string();
    let extra = words
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    Some(BenchLine {
        slice: slice.map(str::to_string),
        name,
        value,
        unit,
        extra,
    })
}

/// Bytes in `<number> <unit>` as the hypervisor prints sizes (`1724 KiB`, `1.5 MiB`).
pub fn human_size(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    let number: f64 = words.next()?.parse().ok()?;
    let scale: u64 = match words.next()? {
        "bytes" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    Some((number * scale as f64).round() as u64)
}

/// The hypervisor's footprint line: `[hv] footprint: <size> (image <size> at ...`.
/// Returns (footprint bytes, image bytes).
pub fn footprint(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("[hv] footprint: ")?;
    let (total, rest) = rest.split_once(" (image ")?;
    let (image, _) = rest.split_once(" at ")?;
    Some((human_size(total)?, human_size(image)?))
}

/// The hypervisor's boot release line (`crate::bench` says what each number is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    pub slices: u32,
    /// Counter when the last slice's vCPU 0 was on: every core's instructions until then.
    pub at: u64,
    /// Counter when the boot core had handed every slice to its vCPU 0 core.
    pub handed: u64,
    /// Counter ticks of the slowest slice's start on its own core.
    pub slowest: u64,
}

/// `[hv] boot: <n> slices released at counter <ticks> (handed to their cores at <ticks>,
/// slowest start <ticks> ticks)`.
pub fn released(line: &str) -> Option<Released> {
    let rest = line.strip_prefix("[hv] boot: ")?;
    let (n, rest) = rest.split_once(" slices released at counter ")?;
    let (at, rest) = rest.split_once(" (handed to their cores at ")?;
    let (handed, rest) = rest.split_once(", slowest start ")?;
    let slowest = rest.strip_suffix(" ticks)")?;
    Some(Released {
        slices: n.parse().ok()?,
        at: at.parse().ok()?,
        handed: handed.parse().ok()?,
        slowest: slowest.parse().ok()?,
    })
}

/// `[hv] boot stages (counter at the end of each): <name>=<ticks> ...`: the stages in order.
pub fn boot_stages(line: &str) -> Option<Vec<(String, u64)>> {
    let rest = line.strip_prefix("[hv] boot stages (counter at the end of each):")?;
    rest.split_whitespace()
        .map(|w| {
            let (name, at) = w.split_once('=')?;
            Some((name.to_string(), at.parse().ok()?))
        })
        .collect()
}

/// One slice's exit counters from `Ctrl-A c`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    pub slice: String,
    pub total: u64,
    /// The run's length in counter time, in milliseconds.
    pub ms: u64,
    pub causes: BTreeMap<String, u64>,
    pub injected: u64,
}

/// `[hv] exits <slice>: <n> in <s> s (<r> per s) <cause>=<n> ...; injected <n>`.
pub fn exits(line: &str) -> Option<Exits> {
    let rest = line.strip_prefix("[hv] exits ")?;
    let (slice, rest) = rest.split_once(": ")?;
    let (total, rest) = rest.split_once(" in ")?;
    let (seconds, rest) = rest.split_once(" s (")?;
    let (_, rest) = rest.split_once(" per s)")?;
    let (causes, injected) = rest.split_once("; injected ")?;
    let causes = causes
        .split_whitespace()
        .map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect::<Option<_>>()?;
    Some(Exits {
        slice: slice.to_string(),
        total: total.parse().ok()?,
        ms: milliseconds(seconds)?,
        causes,
        injected: injected.trim().parse().ok()?,
    })
}

/// `<s>.<mmm>` (the hypervisor's seconds with three decimals) in milliseconds.
fn milliseconds(seconds: &str) -> Option<u64> {
    let (whole, fraction) = seconds.split_once('.')?;
    if fraction.len() != 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(1000)?
        .checked_add(fraction.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_lines_with_and_without_a_prefix() {
        let b = bench_line("[one] BENCH null-hvc 123.5 insn n=1000 pmu=123456 exits=1000").unwrap();
        assert_eq!(b.slice.as_deref(), Some("one"));
        assert_eq!(
            (b.name.as_str(), b.value, b.unit.as_str()),
            ("null-hvc", 123.5, "insn")
        );
        assert_eq!(b.extra["exits"], 1000);
        let native = bench_line("BENCH boot-entry 8 ticks").unwrap();
        assert_eq!(native.slice, None);
        assert_eq!(native.value, 8.0);
        assert!(bench_line("BENCH done").is_none());
        assert!(bench_line("BENCH timer-irq FAILED gic x").is_none());
        assert!(bench_line("[hv] slice one started").is_none());
    }

    #[test]
    fn sizes_footprint_and_release() {
        assert_eq!(human_size("1724 KiB"), Some(1724 << 10));
        assert_eq!(human_size("1.5 MiB"), Some(3 << 19));
        assert_eq!(human_size("12 parsecs"), None);
        let line = "[hv] footprint: 1724 KiB (image 188 KiB at 0x40200000, stage-1 tables 16 KiB, stacks 132 KiB for 3 cores at 0x402e0000-0x40301000 with unmapped guard pages, heap 1.5 MiB with 100 KiB used incl. 3 stage-2 tables); bundle 60 KiB";
        assert_eq!(footprint(line), Some((1724 << 10, 188 << 10)));
        assert_eq!(
            released(
                "[hv] boot: 8 slices released at counter 123456 (handed to their cores at 1000, slowest start 700 ticks)"
            ),
            Some(Released {
                slices: 8,
                at: 123456,
                handed: 1000,
                slowest: 700
            })
        );
        assert_eq!(
            released("[hv] boot: 8 slices released at counter 123456"),
            None
        );
        assert_eq!(released("[hv] slice a started"), None);
        assert_eq!(
            boot_stages(
                "[hv] boot stages (counter at the end of each): entry=2711 device-tree=528495 handed=1761460"
            ),
            Some(vec![
                ("entry".to_string(), 2711),
                ("device-tree".to_string(), 528495),
                ("handed".to_string(), 1761460)
            ])
        );
        assert_eq!(
            boot_stages("[hv] boot stages (counter at the end of each): x=y"),
            None
        );
    }

    #[test]
    fn exit_counter_lines() {
        let e = exits("[hv] exits linux: 40233 in 12.345 s (3259 per s) hvc=12 mmio-uart=38000 irq-timer=2221; injected 2300").unwrap();
        assert_eq!(e.slice, "linux");
        assert_eq!(e.total, 40233);
        assert_eq!(e.ms, 12_345);
        assert_eq!(e.causes["irq-timer"], 2221);
        assert_eq!(e.causes.len(), 3);
        assert_eq!(e.injected, 2300);
        let quiet = exits("[hv] exits idle: 0 in 1.000 s (0 per s); injected 0").unwrap();
        assert!(quiet.causes.is_empty());
        assert!(exits("[hv] exits broken").is_none());
    }
}
