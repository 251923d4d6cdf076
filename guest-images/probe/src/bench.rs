//! Benchmarks the probe runs for `cargo xtask bench` (`bench=<a,b,...>` on
//! its command line): their names, the per-operation arithmetic, the
//! `BENCH` line format and the CPU+memory workload, which is pure code and
//! so runs the same instructions natively and in a slice.
//!
//! Every measurement is an instruction count: under QEMU `-icount shift=0`
//! the PMU's INST_RETIRED event and the 1 GHz generic counter both advance
//! by one per executed instruction (docs/performance.md, first paragraph).

use core::fmt;

/// Most benchmarks one command line can ask for.
pub const MAX_BENCHES: usize = 8;
/// Default workload size in MiB (`workload-mib=`).
pub const DEFAULT_WORKLOAD_MIB: u64 = 64;
/// Round trips measured per call benchmark (null HVC, MMIO read).
pub const CALL_ITERATIONS: u64 = 1000;
/// Timer interrupts measured.
pub const TIMER_ITERATIONS: u64 = 16;
/// Where the virtual timer is programmed, in counter ticks after "now".
pub const TIMER_DELAY_TICKS: u64 = 20_000;
/// IPI round trips measured.
pub const IPI_ITERATIONS: u64 = 256;
/// ARP exchanges of the `nic-irq` benchmark.
pub const NIC_IRQ_ITERATIONS: u64 = 32;

/// One benchmark of the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bench {
    /// The generic counter at the probe's first instruction (reset to guest
    /// entry, node-wide instructions).
    Boot,
    /// `hvc #0` with the microvisor's null call, round trip.
    NullHvc,
    /// A read of the PL011 flag register, round trip.
    MmioRead,
    /// Virtual timer deadline to the first instruction of the IRQ vector.
    TimerIrq,
    /// An SGI to another vCPU, which answers with an SGI, until the answer is taken (every
    /// instruction of both CPUs; needs two).
    Ipi,
    /// Fill + pointer chase + hash over most of RAM.
    Workload,
    /// ARP exchanges over the NIC, each waiting for its RX interrupt: the slice's exits per
    /// NIC interrupt taken (0 with GICv4.0 direct injection through the vITS).
    NicIrq,
}

impl Bench {
    /// Every benchmark, in the order the probe runs them.
    pub const ALL: [Bench; 7] = [
        Bench::Boot,
        Bench::NullHvc,
        Bench::MmioRead,
        Bench::TimerIrq,
        Bench::Ipi,
        Bench::Workload,
        Bench::NicIrq,
    ];

    /// The name used on the command line and in `BENCH` lines.
    pub fn name(self) -> &'static str {
        match self {
            Bench::Boot => "boot",
            Bench::NullHvc => "null-hvc",
            Bench::MmioRead => "mmio-read",
            Bench::TimerIrq => "timer-irq",
            Bench::Ipi => "ipi",
            Bench::Workload => "workload",
            Bench::NicIrq => "nic-irq",
        }
    }

    /// The benchmark called `name`, if any.
    pub fn from_name(name: &[u8]) -> Option<Bench> {
        Bench::ALL.into_iter().find(|b| b.name().as_bytes() == name)
    }
}

/// A quantity per operation with one decimal, from integer arithmetic
/// (rounded half up): `total / count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerOp {
    /// Tenths of a unit per operation.
    pub tenths: u64,
}

impl PerOp {
    /// `total / count` (0 for a zero count).
    pub fn new(total: u64, count: u64) -> PerOp {
        if count == 0 {
            return PerOp { tenths: 0 };
        }
        let tenths = (u128::from(total) * 10 + u128::from(count) / 2) / u128::from(count);
        PerOp {
            tenths: tenths.min(u128::from(u64::MAX)) as u64,
        }
    }
}

impl fmt::Display for PerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tenths / 10, self.tenths % 10)
    }
}

/// A full-period linear congruential step over `0..n` (`n` a power of
/// two): `a = 1 mod 4` and odd `c` visit every index once per period
/// (Hull-Dobell), so the chase below touches every word.
pub fn chain_next(i: u64, n: u64) -> u64 {
    i.wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        & (n - 1)
}

/// The largest power of two of 8-byte words that fits in `bytes`.
pub fn workload_words(bytes: u64) -> u64 {
    let words = bytes / 8;
    if words == 0 {
        0
    } else {
        1 << (63 - words.leading_zeros())
    }
}

/// The workload over `buf` (its length a power of two): writes a chain
/// (word i holds the next index), follows it through every word (each load
/// depends on the previous one) and hashes the whole buffer. Returns a
/// checksum that must be the same natively and in a slice.
pub fn workload(buf: &mut [u64]) -> u64 {
    let n = buf.len() as u64;
    if n == 0 || !n.is_power_of_two() {
        return 0;
    }
    for (i, word) in buf.iter_mut().enumerate() {
        *word = chain_next(i as u64, n);
    }
    let mut at = 0u64;
    let mut steps = 0u64;
    loop {
        at = buf[at as usize];
        steps += 1;
        if at == 0 || steps > n {
            break;
        }
    }
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ steps;
    for &word in buf.iter() {
        hash = (hash ^ word).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// One `BENCH` line: `BENCH <name> <value> <unit> [key=value ...]`.
pub struct Line<'a> {
    pub name: &'a str,
    pub value: &'a dyn fmt::Display,
    pub unit: &'a str,
    pub extra: &'a [(&'a str, u64)],
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BENCH {} {} {}", self.name, self.value, self.unit)?;
        for (key, value) in self.extra {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;
    use std::vec;

    #[test]
    fn names_round_trip() {
        for b in Bench::ALL {
            assert_eq!(Bench::from_name(b.name().as_bytes()), Some(b));
        }
        assert_eq!(Bench::from_name(b"nope"), None);
    }

    #[test]
    fn per_op_rounds_to_tenths() {
        assert_eq!(format!("{}", PerOp::new(123_456, 1000)), "123.5");
        assert_eq!(format!("{}", PerOp::new(100, 3)), "33.3");
        assert_eq!(format!("{}", PerOp::new(5, 0)), "0.0");
    }

    #[test]
    fn chain_visits_every_word() {
        let n = 1024;
        let mut seen = vec![false; n as usize];
        let mut at = 0;
        for _ in 0..n {
            at = chain_next(at, n);
            assert!(!seen[at as usize]);
            seen[at as usize] = true;
        }
        assert_eq!(at, 0, "period is exactly n");
    }

    #[test]
    fn workload_is_deterministic_and_walks_everything() {
        let mut a = vec![0u64; 4096];
        let mut b = vec![7u64; 4096];
        assert_eq!(workload(&mut a), workload(&mut b));
        assert_eq!(workload(&mut [0u64; 3]), 0, "not a power of two");
        assert_eq!(workload_words(100 << 20), 8 << 20);
        assert_eq!(workload_words(7), 0);
    }

    #[test]
    fn line_format() {
        let v = PerOp::new(10, 4);
        let line = Line {
            name: "null-hvc",
            value: &v,
            unit: "insn",
            extra: &[("n", 4), ("exits", 4)],
        };
        assert_eq!(format!("{line}"), "BENCH null-hvc 2.5 insn n=4 exits=4");
    }
}
