//! The `SLICE-REPORT {json}` line and the `PROBE PASS` / `PROBE FAIL
//! <reasons>` verdict (docs/architecture.md, "Plan, bundle and reports").

use core::fmt::{self, Write};

use microvisor_probe::dt::{MemoryRegion, Platform};
use microvisor_probe::json::{Escaped, HexString, NumberList, ObjectWriter};
use microvisor_probe::memplan::Range;
use microvisor_probe::text::Text;
use microvisor_probe::{KERNEL_NAME, MAX_CPUS};

use super::console::println;
use super::memtest::Outcome;
use super::nvme::Probe;
use super::timer;

/// What the report says about NVMe.
pub struct NvmeSummary {
    /// `"ok"`, the error, or nothing (`null`: no controller, or `nvme=0`).
    state: Option<Text<160>>,
    /// Where the function is (`bb:dd.f`), if found.
    pci: Option<Text<8>>,
    /// Set when the controller works.
    ready: Option<NvmeReady>,
}

struct NvmeReady {
    bytes: u64,
    queues: u16,
    lba_bytes: u32,
    model: Text<40>,
}

impl NvmeSummary {
    /// Summarizes a probe of the controller.
    pub fn new(probe: &Probe) -> Self {
        let text = |args: fmt::Arguments<'_>| {
            let mut t = Text::new();
            let _ = t.write_fmt(args);
            t
        };
        match probe {
            Probe::Disabled | Probe::Absent => Self {
                state: None,
                pci: None,
                ready: None,
            },
            Probe::Failed(e, bdf) => Self {
                state: Some(text(format_args!("{e}"))),
                pci: bdf.map(|b| {
                    let mut t = Text::new();
                    let _ = write!(t, "{b}");
                    t
                }),
                ready: None,
            },
            Probe::Ready => match super::nvme::CONTROLLER.lock().as_ref() {
                None => Self {
                    state: Some(text(format_args!("lost"))),
                    pci: None,
                    ready: None,
                },
                Some(c) => Self {
                    state: Some(text(format_args!("ok"))),
                    pci: Some({
                        let mut t = Text::new();
                        let _ = write!(t, "{}", c.bdf);
                        t
                    }),
                    ready: Some(NvmeReady {
                        bytes: c.ns.bytes(),
                        queues: c.io_count,
                        lba_bytes: c.ns.lba_bytes,
                        model: c.info.model,
                    }),
                },
            },
        }
    }
}

/// A JSON value or `null`.
struct OrNull<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for OrNull<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("null"),
        }
    }
}

/// Everything the report shows.
pub struct Report<'a> {
    /// The device tree's view.
    pub platform: &'a Platform,
    /// Affinities read by the online CPUs, in vCPU order.
    pub mpidrs: [u64; MAX_CPUS],
    /// Entries used in `mpidrs` (= CPUs online).
    pub online: usize,
    /// CurrentEL.EL of the probe.
    pub el: u64,
    /// PSCI_VERSION (major, minor).
    pub psci_version: Option<(u16, u16)>,
    /// The memory test.
    pub memtest: Outcome,
    /// Memory-test seed.
    pub seed: u64,
    /// The probe's footprint.
    pub image: Range,
    /// Where the probe was loaded before moving to its link address.
    pub load_address: u64,
    /// Canary region address.
    pub canary: u64,
    /// Whether sleeping uses WFIT.
    pub wfit: bool,
    /// NVMe.
    pub nvme: NvmeSummary,
    /// The NIC.
    pub net: NetSummary,
    /// Whether the `net` keys are printed (cleared when the line would pass
    /// [`MAX_REPORT_LINE`]).
    pub include_net: core::cell::Cell<bool>,
}

/// Longest console line the microvisor passes whole (it splits at 1024 bytes).
pub const MAX_REPORT_LINE: usize = 1023;

/// What the report says about the NIC: `net` (`"ok"` after `NET PASS`, the `NET FAIL` token, or
/// `null` without a virtio-net function or with `net=0`) and `net_mac`.
#[derive(Default)]
pub struct NetSummary {
    /// `"ok"` or the error.
    pub state: Option<Text<48>>,
    /// The MAC address, once read.
    pub mac: Option<Text<17>>,
}

/// Counts the bytes written.
struct Count(usize);

impl Write for Count {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

struct Regions<'a>(&'a [MemoryRegion]);

impl fmt::Display for Regions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('[')?;
        for (i, r) in self.0.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            write!(
                f,
                "{comma}{{\"base\":{},\"size\":{}}}",
                HexString(r.base),
                r.size
            )?;
        }
        f.write_char(']')
    }
}

struct Version(Option<(u16, u16)>);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((major, minor)) => write!(f, "\"{major}.{minor}\""),
            None => f.write_str("null"),
        }
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.platform;
        let m = &self.memtest;
        let mut o = ObjectWriter::new(f);
        o.string("slice", p.slice_name.as_bytes())
            .number("cpus", self.online as u64)
            .raw("mpidrs", NumberList(&self.mpidrs[..self.online]))
            .number("memory_bytes", p.memory_bytes())
            .hex("memory_base", p.memory_base())
            .number("el", self.el)
            .string("kernel", KERNEL_NAME.as_bytes())
            .string("cmdline", p.bootargs.as_bytes())
            .number("dt_cpus", p.dt_cpu_count as u64)
            .raw("memory", Regions(p.memory()))
            .raw(
                "psci",
                p.psci
                    .map_or(Escaped(b"none"), |c| Escaped(c.name().as_bytes())),
            )
            .raw("psci_version", Version(self.psci_version))
            .hex("uart", p.uart_base)
            .hex("image_base", self.image.start)
            .hex("image_end", self.image.end)
            .hex("load_address", self.load_address)
            .number("memtest_bytes", m.bytes)
            .number("memtest_cpus", m.participants as u64)
            .number("memtest_ms", timer::ms_from_ticks(m.ticks))
            .number("memtest_errors", m.errors)
            .hex("seed", self.seed)
            .hex("canary", self.canary)
            .number("counter_hz", timer::frequency())
            .boolean("wfit", self.wfit);
        let n = &self.nvme;
        let r = n.ready.as_ref();
        o.raw(
            "nvme",
            OrNull(n.state.as_ref().map(|s| Escaped(s.as_bytes()))),
        )
        .raw(
            "nvme_pci",
            OrNull(n.pci.as_ref().map(|s| Escaped(s.as_bytes()))),
        )
        .raw("nvme_bytes", OrNull(r.map(|r| r.bytes)))
        .raw("nvme_queues", OrNull(r.map(|r| r.queues)))
        .raw("nvme_lba_bytes", OrNull(r.map(|r| r.lba_bytes)))
        .raw("nvme_model", OrNull(r.map(|r| Escaped(r.model.as_bytes()))));
        if self.include_net.get() {
            let net = &self.net;
            o.raw(
                "net",
                OrNull(net.state.as_ref().map(|s| Escaped(s.as_bytes()))),
            )
            .raw(
                "net_mac",
                OrNull(net.mac.as_ref().map(|s| Escaped(s.as_bytes()))),
            );
        }
        o.finish()
    }
}

/// Reasons for `PROBE FAIL`, space separated, each one token.
pub struct Failures(Text<1024>);

impl Failures {
    /// No failure yet.
    pub fn new() -> Self {
        Failures(Text::new())
    }

    /// Adds one reason.
    pub fn add(&mut self, reason: fmt::Arguments<'_>) {
        if !self.0.as_bytes().is_empty() {
            let _ = self.0.write_char(' ');
        }
        let _ = self.0.write_fmt(reason);
    }

    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.as_bytes().is_empty()
    }
}

/// Prints the report line and the verdict.
/// The `net` keys are left out if the line would not fit [`MAX_REPORT_LINE`].
pub fn print(report: &Report<'_>, failures: &Failures) {
    let mut count = Count("SLICE-REPORT ".len());
    report.include_net.set(true);
    if write!(count, "{report}").is_err() || count.0 > MAX_REPORT_LINE {
        report.include_net.set(false);
    }
    println!("SLICE-REPORT {report}");
    if failures.is_empty() {
        println!("PROBE PASS");
    } else {
        let reasons = failures.0.as_str().unwrap_or("unprintable-reasons");
        let more = if failures.0.is_truncated() {
            " ..."
        } else {
            ""
        };
        println!("PROBE FAIL {reasons}{more}");
    }
}
