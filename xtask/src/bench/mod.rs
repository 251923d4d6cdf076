//! `cargo xtask bench`: boots fixed scenarios under QEMU `-icount shift=0,sleep=off -seed 1` (one
//! instruction = one nanosecond of virtual time, the counter and the PMU count instructions,
//! idle time warps to the next timer deadline) and turns their console lines into
//! [`results::Results`]. Every number is an instruction or event count, so two runs on the
//! same tree give the same numbers (docs/performance.md says how each one is measured).

pub mod net;
pub mod nvme;
pub mod parse;
pub mod results;
pub mod svg;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::build::Artifacts;
use crate::console::{Step, capture};
use crate::image::ImageOptions;
use crate::node::Node;
use crate::qemu::{Boot, Console, Firmware};
use crate::workspace::Workspace;
use parse::{BenchLine, Exits};
use results::{Goal, Metric, Results};

/// QEMU options of every benchmark run: exact instruction counting, idle periods skipped
/// deterministically instead of following the host clock, and a fixed seed for the guest's
/// random numbers (`RNDR` of `-cpu max` reads the host's otherwise, and Linux's boot then
/// differs by a few dozen IPIs from run to run).
pub const QEMU_OPTIONS: [&str; 4] = ["-icount", "shift=0,sleep=off", "-seed", "1"];

/// Slice counts of the boot-cost runs and the node each runs on (cores, MiB).
const BOOT_SHAPES: [(u32, u32, u64); 4] =
    [(1, 8, 1024), (4, 8, 1024), (8, 8, 1024), (32, 32, 3072)];
/// RAM of each probe slice in the boot-cost runs.
const BOOT_SLICE_MIB: u64 = 64;
/// RAM of the micro-benchmark slice, and of the native machine running the same probe.
const MICRO_MIB: u64 = 160;
/// Workload size: most of the micro-benchmark slice's RAM.
const WORKLOAD_MIB: u64 = 128;
/// The Linux exit-rate runs power off after these many seconds of guest time; the rate is the
/// difference between the two runs divided by the difference of the times. The window starts
/// well after boot: in its first seconds Linux still has deferred work that sends IPIs.
const LINUX_WINDOW: (u64, u64) = (10, 30);
/// Wall-clock limit of one Linux run. Under icount a run's counts do not depend on the host,
/// but its wall time does: on a loaded 2-core host the busy 30 s run took over 10 minutes.
const LINUX_RUN_TIMEOUT: Duration = Duration::from_secs(1800);

/// What to measure.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Skip the Linux exit-rate runs (they need the Debian kernel).
    pub skip_linux: bool,
    /// Run the network benchmark (`--net`; also with `skip_linux`).
    pub net: bool,
    /// Run the network benchmark and nothing else (`--net-only`).
    pub net_only: bool,
    /// Run the NVMe benchmark and nothing else (`--nvme-only`).
    pub nvme_only: bool,
    /// Run the Linux exit-rate and boot rows and nothing else (`--linux-only`).
    pub linux_only: bool,
    /// Run the gicv4 node's rows and nothing else (`--gicv4-only`).
    pub gicv4_only: bool,
}

/// Where the runs keep their images and logs.
struct Dirs {
    out: PathBuf,
}

impl Dirs {
    fn file(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
}

/// Runs every benchmark and collects the results.
pub fn run(ws: &Workspace, artifacts: &Artifacts, plan: &Plan) -> Result<Results> {
    let dirs = Dirs {
        out: ws.target_dir.join("bench"),
    };
    std::fs::create_dir_all(&dirs.out)?;
    let mut metrics = Vec::new();
    if plan.net_only || plan.nvme_only {
        let (rows, method) = if plan.net_only {
            (net_metrics(ws, artifacts, &dirs)?, "network benchmark only")
        } else {
            (nvme_metrics(ws, artifacts, &dirs)?, "NVMe benchmark only")
        };
        metrics.extend(rows);
        return Ok(Results {
            qemu: qemu_version(),
            method: format!("wall clock, no icount ({method})"),
            linux: Some(crate::linux::guest(ws, true)?.release.clone()),
            metrics,
        });
    }
    if plan.gicv4_only {
        let ipi_native = ipi_run(ws, artifacts, &dirs, true)?;
        let native = micro_run(ws, artifacts, &dirs, true)?;
        return Ok(Results {
            qemu: qemu_version(),
            method: format!(
                "qemu-system-aarch64 {} (gicv4 node rows only)",
                QEMU_OPTIONS.join(" ")
            ),
            linux: None,
            metrics: gicv4_metrics(ws, artifacts, &dirs, &native, &ipi_native)?,
        });
    }
    if plan.linux_only {
        let (rows, kernel) = linux_metrics(ws, artifacts, &dirs)?;
        return Ok(Results {
            qemu: qemu_version(),
            method: format!(
                "qemu-system-aarch64 {} (Linux rows only)",
                QEMU_OPTIONS.join(" ")
            ),
            linux: Some(kernel),
            metrics: rows,
        });
    }

    // 1. Image size and footprint.
    let elf = std::fs::read(&artifacts.hypervisor)
        .with_context(|| format!("reading {}", artifacts.hypervisor.display()))?;
    let image_bytes = crate::flat::hypervisor_flat(&elf)?.len() as u64;
    metrics.push(
        Metric::new(
            "image-size",
            "image size without guests",
            kib(image_bytes),
            "KiB",
            Goal::AtMost(256.0),
        )
        .with_note("flat hypervisor (code, data, relocations), padded to 4 KiB"),
    );

    // 2. Boot cost.
    let mut boots = Vec::new();
    for (slices, cores, mib) in BOOT_SHAPES {
        eprintln!("bench: boot with {slices} slices on {cores} cores");
        boots.push((slices, boot_run(ws, artifacts, &dirs, slices, cores, mib)?));
    }
    let (_, eight) = boots
        .iter()
        .find(|(n, _)| *n == 8)
        .context("the 8-slice boot ran")?;
    let slice_ram = 8 * (BOOT_SLICE_MIB << 20);
    let goal_kib = 2048.0 + kib(slice_ram) * 0.001;
    metrics.push(
        Metric::new(
            "footprint",
            "hypervisor RAM footprint (8 slices)",
            kib(eight.footprint),
            "KiB",
            Goal::AtMost(goal_kib),
        )
        .with_note("`[hv] footprint` line: image + stage-1 tables + stacks + heap (stage-2 tables); goal 2 MiB + 0.1% of slice RAM"),
    );
    for (slices, boot) in &boots {
        let released = &boot.released;
        let mut metric = Metric::new(
            &format!("boot-{slices}"),
            &format!("reset to last slice released, {slices} slices"),
            (released.handed + released.slowest) as f64,
            "insn",
            Goal::AtMost(1_000_000.0),
        )
        .with_detail("handed-out", released.handed as f64)
        .with_detail("slowest-slice-start", released.slowest as f64)
        .with_detail("node-wide", released.at as f64)
        .with_detail("last-slice-first-instruction", boot.last_entry as f64);
        let mut last = 0;
        for (name, at) in &boot.stages {
            metric = metric.with_detail(&format!("stage-{name}"), at.saturating_sub(last) as f64);
            last = *at;
        }
        metrics.push(metric.with_note(
            "critical path on parallel cores: node-wide instructions until the boot core had handed every slice to its core (`handed-out`), plus the slowest slice's own start on its core (scrub, image copies, vCPU 0 on); `node-wide` is every core's instructions until the last slice was released, which QEMU's one-thread round robin runs one core after the other; `stage-*` are the boot core's stages",
        ));
    }

    // 3-6. Micro-benchmarks, in a slice and natively.
    eprintln!("bench: micro-benchmarks in a slice");
    let slice = micro_run(ws, artifacts, &dirs, false)?;
    eprintln!("bench: micro-benchmarks natively");
    let native = micro_run(ws, artifacts, &dirs, true)?;
    for (id, title, goal) in MICRO_ROWS {
        let s = find(&slice, id)?;
        let n = find(&native, id)?;
        let mut m =
            Metric::new(id, title, s.value, "insn", Goal::AtMost(goal)).with_native(n.value);
        if let Some(&exits) = s.extra.get("exits") {
            m = m.with_detail("exits", exits as f64);
        }
        if let (Some(&pmu), Some(&n)) = (s.extra.get("pmu"), s.extra.get("n")) {
            // The guest's own INST_RETIRED count, asked to include EL2: the microvisor
            // prohibits counting at EL2 (MDCR_EL2.HPMD), so it holds the guest's loop only.
            let guest = pmu as f64 / n.max(1) as f64;
            ensure!(
                guest < s.value / 2.0,
                "{id}: the slice's PMU counted {guest} instructions per operation of {}: it sees the hypervisor's instructions",
                s.value
            );
            m = m.with_detail("guest-pmu", guest);
        }
        metrics.push(m);
    }
    // 6b. IPI round trip: two vCPUs, each SGI answered by one (issue 14's peer, Xen 4.17
    // dom0less on the same QEMU: 1618 instructions above native).
    eprintln!("bench: IPI round trip in a slice");
    let ipi_slice = ipi_run(ws, artifacts, &dirs, false)?;
    eprintln!("bench: IPI round trip natively");
    let ipi_native = ipi_run(ws, artifacts, &dirs, true)?;
    metrics.push(ipi_metric(
        "ipi",
        "IPI round trip, above native",
        find(&ipi_slice, "ipi")?,
        find(&ipi_native, "ipi")?,
    )
    .with_note("two vCPUs (two cores natively): an SGI to the other CPU, waiting in WFI, answered from its IRQ handler with an SGI back; every instruction of both cores per round trip, minus the native round trip; goal: the peer (Xen) in issue 14"));

    // 6c. The gicv4 node: exits per NIC interrupt, and the rows above with direct injection on.
    metrics.extend(gicv4_metrics(ws, artifacts, &dirs, &native, &ipi_native)?);

    let (s, n) = (find(&slice, "workload")?, find(&native, "workload")?);
    ensure!(
        s.extra.get("checksum") == n.extra.get("checksum"),
        "the workload's checksum differs natively and in a slice"
    );
    metrics.push(
        Metric::new(
            "workload",
            "CPU+memory workload, native/slice instructions",
            n.value / s.value,
            "ratio",
            Goal::AtLeast(0.99),
        )
        .with_detail("slice-insn", s.value)
        .with_detail("native-insn", n.value)
        .with_detail("mib", s.extra.get("mib").copied().unwrap_or(0) as f64)
        .with_detail("exits", s.extra.get("exits").copied().unwrap_or(0) as f64),
    );

    // 7. Linux exit rates, and Linux from slice start to its report.
    let mut linux = None;
    if plan.skip_linux {
        for id in ["exits-idle", "exits-busy"] {
            metrics.push(Metric::missing(
                id,
                "Linux exits per second",
                "exits/s",
                "-",
                "skipped (--no-linux)",
            ));
        }
        metrics.push(Metric::missing(
            "boot-linux-efi",
            "slice start to Linux SLICE-REPORT",
            "insn",
            "-",
            "skipped (--no-linux)",
        ));
    } else {
        let (rows, kernel) = linux_metrics(ws, artifacts, &dirs)?;
        metrics.extend(rows);
        linux = Some(kernel);
    }

    // 8. NVMe (Linux slice against the same Linux natively; wall-clock IOPS, see nvme.rs).
    if plan.skip_linux {
        metrics.push(Metric::missing(
            "nvme-qd1-iops",
            "NVMe 4 KiB random reads",
            "ratio",
            "-",
            "skipped (--no-linux)",
        ));
    } else {
        metrics.extend(nvme_metrics(ws, artifacts, &dirs)?);
    }

    // 9. Network (assigned virtio-net NICs; wall clock, see net.rs). Opt-in: several minutes.
    if plan.net {
        metrics.extend(net_metrics(ws, artifacts, &dirs)?);
    }

    Ok(Results {
        qemu: qemu_version(),
        method: format!("qemu-system-aarch64 {}", QEMU_OPTIONS.join(" ")),
        linux,
        metrics,
    })
}

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

fn find<'a>(lines: &'a [BenchLine], name: &str) -> Result<&'a BenchLine> {
    lines
        .iter()
        .find(|b| b.name == name)
        .with_context(|| format!("no `BENCH {name}` line"))
}

fn qemu_version() -> String {
    Command::new(crate::setup::QEMU)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown QEMU".into())
}

/// Builds `<name>.img` from plan text.
fn image(artifacts: &Artifacts, dirs: &Dirs, name: &str, plan: &str) -> Result<PathBuf> {
    let plan_path = dirs.file(&format!("{name}.toml"));
    std::fs::write(&plan_path, plan)?;
    let out = dirs.file(&format!("{name}.img"));
    crate::image::write_image(
        artifacts,
        &ImageOptions {
            plan: &plan_path,
            out: &out,
            anywhere: false,
        },
    )
    .with_context(|| format!("bench {name}: building its image"))?;
    Ok(out)
}

/// The QEMU command for `image` on `node`, with icount.
fn command(
    ws: &Workspace,
    node: &Node,
    image: &Path,
    virtualization: bool,
    cmdline: Option<String>,
) -> Result<Command> {
    let boot = Boot {
        node,
        image,
        firmware: Firmware::Direct,
        virtualization,
        console: Console::Captured,
        disk_prefix: ws.target_dir.join("bench").join(&node.name),
        kernel_cmdline: cmdline,
        dtb: None,
    };
    let mut cmd = boot.command()?;
    cmd.args(QEMU_OPTIONS);
    Ok(cmd)
}

/// What a boot-cost run saw.
struct BootRun {
    /// The release line: counters when the slices were handed out and released, the
    /// slowest slice's start.
    released: parse::Released,
    /// The boot core's stages: (name, counter at its end).
    stages: Vec<(String, u64)>,
    /// The largest counter any slice's probe read at its first instruction.
    last_entry: u64,
    footprint: u64,
}

fn boot_run(
    ws: &Workspace,
    artifacts: &Artifacts,
    dirs: &Dirs,
    slices: u32,
    cores: u32,
    mib: u64,
) -> Result<BootRun> {
    let name = format!("boot-{slices}");
    let mut plan = String::new();
    for i in 0..slices {
        plan.push_str(&format!(
            "[[slice]]\nname = \"s{i}\"\ncores = 1\nmemory = \"{BOOT_SLICE_MIB}MiB\"\nkernel = \"probe\"\ncmdline = \"heartbeat=0 nvme=0 bench=boot\"\n\n"
        ));
    }
    let img = image(artifacts, dirs, &name, &plan)?;
    let node = Node::inline(&name, cores, mib << 20);
    let cmd = command(ws, &node, &img, true, None)?;
    let mut done = 0;
    let mut released = None;
    let lines = capture(
        cmd,
        Duration::from_secs(300),
        &dirs.file(&format!("{name}.log")),
        |line| {
            if let Some(r) = parse::released(line) {
                released = Some(r);
            }
            if line.ends_with("] BENCH done") {
                done += 1;
            }
            if done == slices && released.is_some() {
                Step::Done
            } else {
                Step::Continue
            }
        },
    )?;
    let released = released.context("no `[hv] boot: ... released` line")?;
    ensure!(
        released.slices == slices,
        "{name}: the hypervisor released {} slices",
        released.slices
    );
    let stages = lines
        .iter()
        .find_map(|l| parse::boot_stages(l))
        .context("no `[hv] boot stages` line")?;
    let entries: Vec<u64> = lines
        .iter()
        .filter_map(|l| parse::bench_line(l))
        .filter(|b| b.name == "boot-entry")
        .map(|b| b.value as u64)
        .collect();
    ensure!(
        entries.len() == slices as usize,
        "{name}: {} boot-entry lines",
        entries.len()
    );
    let footprint = lines
        .iter()
        .find_map(|l| parse::footprint(l))
        .context("no `[hv] footprint:` line")?
        .0;
    Ok(BootRun {
        released,
        stages,
        last_entry: entries.into_iter().max().unwrap_or(0),
        footprint,
    })
}

/// The micro-benchmarks on a one-core machine: in a slice, or the probe alone (EL1, with its
/// own EL2 stub answering HVC).
fn micro_run(
    ws: &Workspace,
    artifacts: &Artifacts,
    dirs: &Dirs,
    native: bool,
) -> Result<Vec<BenchLine>> {
    let benches = format!("null-hvc,mmio-read,timer-irq,workload workload-mib={WORKLOAD_MIB}");
    let name = if native {
        "micro-native"
    } else {
        "micro-slice"
    };
    probe_run(ws, artifacts, dirs, name, native, 1, &benches, 3)
}

/// The IPI round trip on a two-core machine, in a two-vCPU slice or the probe alone.
fn ipi_run(
    ws: &Workspace,
    artifacts: &Artifacts,
    dirs: &Dirs,
    native: bool,
) -> Result<Vec<BenchLine>> {
    let name = if native { "ipi-native" } else { "ipi-slice" };
    probe_run(ws, artifacts, dirs, name, native, 2, "ipi", 3)
}

/// The probe's `bench=<benches>` on a node of `cores` cores whose GIC is version
/// `gic_version`: in a slice of as many vCPUs (and 160 MiB), or alone (EL1, with its own EL2
/// stub answering HVC).
#[allow(clippy::too_many_arguments)]
fn probe_run(
    ws: &Workspace,
    artifacts: &Artifacts,
    dirs: &Dirs,
    name: &str,
    native: bool,
    cores: u32,
    benches: &str,
    gic_version: u32,
) -> Result<Vec<BenchLine>> {
    let cmdline = format!("heartbeat=0 nvme=0 bench={benches}");
    let cmd = if native {
        let elf = std::fs::read(&artifacts.probe)?;
        let flat = crate::flat::elf_to_flat(&elf)?;
        let img = dirs.file(&format!("{name}.img"));
        std::fs::write(&img, flat.bytes)?;
        let mut node = Node::inline(name, cores, MICRO_MIB << 20);
        node.gic_version = gic_version;
        command(ws, &node, &img, true, Some(cmdline))?
    } else {
        let plan = format!(
            "[[slice]]\nname = \"bench\"\ncores = {cores}\nmemory = \"{MICRO_MIB}MiB\"\nkernel = \"probe\"\ncmdline = \"{cmdline}\"\n"
        );
        let img = image(artifacts, dirs, name, &plan)?;
        let mut node = Node::inline(name, cores, 512 << 20);
        node.gic_version = gic_version;
        command(ws, &node, &img, true, None)?
    };
    bench_lines(cmd, dirs, name)
}

/// Runs `cmd` until the probe prints `BENCH done` and returns its `BENCH` lines; a failed
/// benchmark or probe check is an error.
fn bench_lines(cmd: std::process::Command, dirs: &Dirs, name: &str) -> Result<Vec<BenchLine>> {
    let lines = capture(
        cmd,
        Duration::from_secs(300),
        &dirs.file(&format!("{name}.log")),
        |line| {
            if line.ends_with("BENCH done") {
                Step::Done
            } else {
                Step::Continue
            }
        },
    )?;
    if let Some(bad) = lines
        .iter()
        .find(|l| l.contains("FAILED") || l.contains("PROBE FAIL") || l.contains("NET FAIL"))
    {
        bail!("{name}: {bad}");
    }
    Ok(lines.iter().filter_map(|l| parse::bench_line(l)).collect())
}

/// The IPI round trip row `id`: the slice's round trip `s` minus the native one `n` (goal:
/// issue 14's peer, Xen 4.17 dom0less on the same QEMU, 1618 instructions above native).
fn ipi_metric(id: &str, title: &str, s: &BenchLine, n: &BenchLine) -> Metric {
    let per_round_trip = |key: &str| {
        let (exits, rounds) = (s.extra.get(key).copied()?, s.extra.get("n").copied()?);
        Some(exits as f64 / rounds.max(1) as f64)
    };
    let metric = Metric::new(id, title, s.value - n.value, "insn", Goal::Below(1618.0))
        .with_detail("slice", s.value)
        .with_detail("native", n.value);
    match per_round_trip("exits") {
        Some(exits) => metric.with_detail("exits", exits),
        None => metric,
    }
}

/// The micro-benchmark rows (in a slice, on either node) and their goals.
const MICRO_ROWS: [(&str, &str, f64); 3] = [
    ("null-hvc", "null hypercall round trip", 150.0),
    ("mmio-read", "emulated MMIO read (PL011 FR)", 300.0),
    ("timer-irq", "virtual timer IRQ latency", 400.0),
];

/// The gicv4 node's rows: a probe slice owning the node's NIC 01:00.0, so that it has a
/// virtual ITS, its LPIs enabled and its vPE resident (GICv4.0 direct injection on), runs
/// the micro-benchmarks, the NIC interrupt benchmark and (with two vCPUs) the IPI round trip;
/// the same runs with the node's GIC a GICv3 (MBI SPIs through the hypervisor) go in as
/// details. `native` and `ipi_native` are the probe alone on a GICv3 machine (the GIC
/// version does not change what a native SGI or hypercall costs: checked by running the IPI
/// natively on the GICv4 machine too, whose count goes in as a detail).
fn gicv4_metrics(
    ws: &Workspace,
    artifacts: &Artifacts,
    dirs: &Dirs,
    native: &[BenchLine],
    ipi_native: &[BenchLine],
) -> Result<Vec<Metric>> {
    eprintln!("bench: the gicv4 node (GICv4.0, then GICv3)");
    let benches = "null-hvc,mmio-read,timer-irq,nic-irq";
    let v4 = gicv4_node_run(ws, artifacts, dirs, "micro", 4, 1, benches)?;
    let v3 = gicv4_node_run(ws, artifacts, dirs, "micro", 3, 1, benches)?;
    let ipi_v4 = gicv4_node_run(ws, artifacts, dirs, "ipi", 4, 2, "ipi")?;
    let ipi_v3 = gicv4_node_run(ws, artifacts, dirs, "ipi", 3, 2, "ipi")?;
    let ipi_native_v4 = probe_run(ws, artifacts, dirs, "ipi-native-gicv4", true, 2, "ipi", 4)?;
    let detail = |b: &BenchLine, key: &str| b.extra.get(key).copied().unwrap_or(0) as f64;
    let mut metrics = Vec::new();
    for (id, title, goal) in MICRO_ROWS {
        let (s, s3, n) = (find(&v4, id)?, find(&v3, id)?, find(native, id)?);
        metrics.push(
            Metric::new(
                &format!("{id}-gicv4"),
                &format!("{title}, GICv4.0 node"),
                s.value,
                "insn",
                Goal::AtMost(goal),
            )
            .with_native(n.value)
            .with_detail("exits", detail(s, "exits"))
            .with_detail("gicv3", s3.value)
            .with_note("a one-vCPU probe slice owning the gicv4 node's NIC (its vITS mapped, LPIs enabled, vPE resident); `gicv3` the same slice on the node with a GICv3"),
        );
    }
    let (s, s3, n) = (
        find(&ipi_v4, "ipi")?,
        find(&ipi_v3, "ipi")?,
        find(ipi_native, "ipi")?,
    );
    let n4 = find(&ipi_native_v4, "ipi")?;
    metrics.push(
        ipi_metric("ipi-gicv4", "IPI round trip, above native, GICv4.0 node", s, n)
            .with_detail("native-gicv4", n4.value)
            .with_detail("gicv3", s3.value - n.value)
            .with_note("two-vCPU probe slice owning the gicv4 node's NIC; native: the probe alone on two cores"),
    );
    let (nic, nic3) = (find(&v4, "nic-irq")?, find(&v3, "nic-irq")?);
    metrics.push(
        Metric::new(
            "nic-irq-exits",
            "exits per NIC interrupt (GICv4.0 vITS)",
            nic.value,
            "exits",
            Goal::AtMost(0.0),
        )
        .with_detail("irqs", detail(nic, "irqs"))
        .with_detail("exits", detail(nic, "exits"))
        .with_detail("round-trip-us", detail(nic, "us"))
        .with_detail("gicv3", nic3.value)
        .with_detail("gicv3-irqs", detail(nic3, "irqs"))
        .with_detail("gicv3-exits", detail(nic3, "exits"))
        .with_note("a one-vCPU probe slice owning the gicv4 node's NIC 01:00.0: 32 ARP exchanges with slirp, each waiting for the RX interrupt (LPI), no trapped register in the loop (notify pages are the function's own); slice exits in the loop (exit counter hypercall) per RX+TX interrupt taken; `gicv3` the same on the node with a GICv3 (MBI SPIs)"),
    );
    Ok(metrics)
}

/// The probe's `bench=<benches>` in a slice of `cores` vCPUs owning NIC 01:00.0 of the gicv4
/// node profile, with that node's GIC at `gic_version`.
fn gicv4_node_run(
    ws: &Workspace,
    artifacts: &Artifacts,
    dirs: &Dirs,
    what: &str,
    gic_version: u32,
    cores: u32,
    benches: &str,
) -> Result<Vec<BenchLine>> {
    let name = format!("{what}-gicv4-node-gicv{gic_version}");
    let plan = format!(
        "[[slice]]\nname = \"bench\"\ncores = {cores}\nmemory = \"{MICRO_MIB}MiB\"\nkernel = \"probe\"\ncmdline = \"heartbeat=0 nvme=0 bench={benches}\"\n\n[[slice.device]]\npci = \"01:00.0\"\n"
    );
    let img = image(artifacts, dirs, &name, &plan)?;
    let mut node = Node::load(ws, "gicv4")?;
    node.gic_version = gic_version;
    node.name = name.clone();
    let cmd = command(ws, &node, &img, true, None)?;
    bench_lines(cmd, dirs, &name)
}

/// Exits of a Linux slice that powers off after sleeping `first`, then `then` seconds of guest
/// time (`microvisor.action=poweroff-after:<first>+<then>`), from the `[hv] exits`
/// line the hypervisor prints when a slice stops (final counters: no host timing involved),
/// and the kernel release.
fn linux_exits(
    ws: &Workspace,
    artifacts: &Artifacts,
    dirs: &Dirs,
    busy: bool,
    (first, then): (u64, u64),
) -> Result<(Exits, String)> {
    let name = format!(
        "linux-{}-{}",
        if busy { "busy" } else { "idle" },
        first + then
    );
    let load = if busy { " microvisor.load=1" } else { "" };
    // Both runs' command lines have the same length (`10+00`, `10+20`), so the kernel lays
    // itself out the same way and the runs only differ after the earlier one powers off.
    let plan = format!(
        "[[slice]]\nname = \"linux\"\ncores = 2\nmemory = \"512MiB\"\nkernel = \"linux\"\ncmdline = \"quiet microvisor.action=poweroff-after:{first:02}+{then:02}{load}\"\n"
    );
    let img = image(artifacts, dirs, &name, &plan)?;
    let node = Node::inline(&name, 2, 1024 << 20);
    let cmd = command(ws, &node, &img, true, None)?;
    let mut exits = None;
    let mut kernel = String::new();
    capture(
        cmd,
        LINUX_RUN_TIMEOUT,
        &dirs.file(&format!("{name}.log")),
        |line| {
            if let Some(json) = line.strip_prefix("[linux] SLICE-REPORT ")
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(json)
            {
                kernel = v["kernel"].as_str().unwrap_or_default().to_string();
            }
            match parse::exits(line) {
                Some(e) if e.slice == "linux" => {
                    exits = Some(e);
                    Step::Done
                }
                _ => Step::Continue,
            }
        },
    )?;
    Ok((exits.context("no exit counters")?, kernel))
}

/// Instructions from the start of a one-slice node's Linux slice to the end of its run, the
/// guest powering off as soon as it has reported: the bundled kernel (`firmware` false) or
/// the same kernel and initramfs with the same command line installed on the slice's share
/// (UEFI: GRUB on an EFI system partition) and booted by U-Boot. The node has one core, so
/// the run's counter time (1 ns per instruction under icount) counts every instruction the
/// slice and the hypervisor execute for it.
fn boot_to_report(
    ws: &Workspace,
    artifacts: &Artifacts,
    dirs: &Dirs,
    firmware: bool,
) -> Result<f64> {
    let name = if firmware {
        "boot-linux-efi"
    } else {
        "boot-linux-bundled"
    };
    let off = "microvisor.action=poweroff-after:0";
    let kernel = if firmware {
        "kernel = \"firmware\"".to_string()
    } else {
        format!(
            "kernel = \"linux\"\ncmdline = \"{} {off}\"",
            crate::linux::DEFAULT_CMDLINE
        )
    };
    let plan = format!(
        "[[slice]]\nname = \"os\"\ncores = 1\nmemory = \"384MiB\"\n{kernel}\n\n[slice.nvme]\nqueues = 1\nsize = \"512MiB\"\n"
    );
    let img = image(artifacts, dirs, name, &plan)?;
    let mut node = Node::inline(name, 1, 1024 << 20);
    node.disks = vec![crate::node::Disk { size: 1 << 30 }];
    let cmd = command(ws, &node, &img, true, None)?;
    // A blank disk, with the installed OS on the slice's share (from block 0) for firmware.
    let disk = crate::qemu::disk_file(&ws.target_dir.join("bench").join(name), 0);
    let _ = std::fs::remove_file(&disk);
    std::fs::File::create(&disk)?.set_len(1 << 30)?;
    if firmware {
        let guest = crate::linux::guest(ws, true)?;
        crate::disk_image::write_installed_disk(
            &guest,
            crate::disk_image::Installation {
                extra: off,
                ..crate::disk_image::Installation::new(crate::disk_image::Loader::Efi)
            },
            &disk,
            0,
            512 << 20,
            &dirs.file(&format!("{name}-work")),
        )?;
    }
    let mut reported = false;
    let mut exits = None;
    capture(
        cmd,
        LINUX_RUN_TIMEOUT,
        &dirs.file(&format!("{name}.log")),
        |line| {
            reported |= line.starts_with("[os] SLICE-REPORT ");
            match parse::exits(line) {
                Some(e) if e.slice == "os" => {
                    exits = Some(e);
                    Step::Done
                }
                _ => Step::Continue,
            }
        },
    )?;
    ensure!(reported, "{name}: the Linux slice never reported");
    let exits = exits.with_context(|| format!("{name}: no exit counters at the end of its run"))?;
    Ok(exits.ms as f64 * 1e6)
}

/// The Linux rows: exit rates idle and busy, and the bundled and the installed kernel's boot
/// to their report; with the guest kernel's release.
fn linux_metrics(
    ws: &Workspace,
    artifacts: &Artifacts,
    dirs: &Dirs,
) -> Result<(Vec<Metric>, String)> {
    let mut metrics = Vec::new();
    let mut linux = String::new();
    for (id, busy) in [("exits-idle", false), ("exits-busy", true)] {
        eprintln!("bench: Linux slice, {}", if busy { "busy" } else { "idle" });
        let (metric, kernel) = linux_rate(ws, artifacts, dirs, id, busy)?;
        metrics.push(metric);
        linux = kernel;
    }
    // The bundled kernel, and the same kernel installed on the slice's disk and booted
    // through U-Boot, UEFI and GRUB.
    eprintln!("bench: Linux boot to its report, bundled kernel");
    let bundled = boot_to_report(ws, artifacts, dirs, false)?;
    eprintln!("bench: Linux boot to its report, installed and booted through firmware");
    let efi = boot_to_report(ws, artifacts, dirs, true)?;
    let note = "1 vCPU, 384 MiB, 512 MiB share; guest time from slice start until the Linux guest, powering off right after its SLICE-REPORT, is off (all instructions of the node's one core)";
    metrics.push(
        Metric::new(
            "boot-linux-bundled",
            "slice start to Linux SLICE-REPORT, bundled kernel",
            bundled,
            "insn",
            Goal::None,
        )
        .with_note(note),
    );
    metrics.push(
        Metric::new(
            "boot-linux-efi",
            "slice start to Linux SLICE-REPORT, installed OS via U-Boot+GRUB (UEFI)",
            efi,
            "insn",
            Goal::None,
        )
        .with_detail("over-bundled", efi - bundled)
        .with_note(note),
    );
    Ok((metrics, linux))
}

/// Exits per second of guest time, by cause: the difference of two runs that power off
/// [`LINUX_WINDOW`] seconds apart. Both first sleep [`LINUX_WINDOW`]`.0` seconds, the longer
/// one then sleeps the rest, so the two are the same run until the shorter one powers off
/// (with one sleep of each length they idled differently from the start: Linux programs its
/// timers after the deadline it waits for).
fn linux_rate(
    ws: &Workspace,
    artifacts: &Artifacts,
    dirs: &Dirs,
    id: &str,
    busy: bool,
) -> Result<(Metric, String)> {
    let (first, rest) = (LINUX_WINDOW.0, LINUX_WINDOW.1 - LINUX_WINDOW.0);
    let (short, kernel) = linux_exits(ws, artifacts, dirs, busy, (first, 0))?;
    let (long, _) = linux_exits(ws, artifacts, dirs, busy, (first, rest))?;
    // The slices' own run times, from their counters (the window plus the power-off).
    let seconds = long.ms.saturating_sub(short.ms) as f64 / 1000.0;
    ensure!(
        seconds > 0.0,
        "{id}: the longer run ran {} ms, the shorter {} ms",
        long.ms,
        short.ms
    );
    let rate = |a: u64, b: u64| (b as f64 - a as f64) / seconds;
    let title = if busy {
        "Linux exits/s, busy (microvisor.load=1)"
    } else {
        "Linux exits/s, idle"
    };
    let total = rate(short.total, long.total);
    let mut metric = Metric::new(id, title, total, "exits/s", Goal::None);
    let mut causes: Vec<&String> = short.causes.keys().chain(long.causes.keys()).collect();
    causes.sort();
    causes.dedup();
    // The idle goal (issue 14): timer ticks and the IPIs the guest itself sends (the trapped
    // ICC_SGI1R_EL1 write, and the kick that makes the target core inject it), nothing else.
    let mut only_timer = true;
    // A count that fell means the runs were not the same up to the shorter one's end: the
    // difference then says nothing.
    let mut diverged = false;
    for cause in causes {
        let r = rate(
            short.causes.get(cause).copied().unwrap_or(0),
            long.causes.get(cause).copied().unwrap_or(0),
        );
        if r != 0.0 {
            metric = metric.with_detail(cause, r);
            only_timer &= matches!(cause.as_str(), "irq-timer" | "sgi" | "irq-kick");
            diverged |= r < 0.0;
        }
    }
    metric = metric
        .with_detail("injected", rate(short.injected, long.injected))
        .with_note(format!(
            "2 vCPUs, 512 MiB; difference of two runs powering off after {} s and {} s of guest time (the same run until the first powers off){}",
            LINUX_WINDOW.0,
            LINUX_WINDOW.1,
            if diverged { "; the runs DIVERGED: a count fell" } else { "" }
        ));
    if !busy {
        metric = metric.with_met("timer and the guest's IPIs only", only_timer && !diverged);
    }
    Ok((metric, kernel))
}

/// Reads per `iobench` run in the NVMe benchmark.
const NVME_OPS: u64 = 4000;
/// Alternating slice/native rounds; the median IOPS is kept.
const NVME_ROUNDS: usize = 5;
/// The NVMe benchmark's Linux: 2 vCPUs, 512 MiB; its slice's namespace and the disk.
const NVME_PLAN: &str = "[[slice]]\nname = \"io\"\ncores = 2\nmemory = \"512MiB\"\nkernel = \"linux\"\ncmdline = \"quiet\"\n\n[slice.nvme]\nsize = \"1GiB\"\nqueues = 2\n";
const NVME_DISK: u64 = 2 << 30;

/// Metric 8: IOPS slice/native and exits per read at QD1 and QD32.
fn nvme_metrics(ws: &Workspace, artifacts: &Artifacts, dirs: &Dirs) -> Result<Vec<Metric>> {
    let img = image(artifacts, dirs, "nvme-slice", NVME_PLAN)?;
    let mut slice_runs = Vec::new();
    let mut native_runs = Vec::new();
    for round in 0..NVME_ROUNDS {
        eprintln!("bench: NVMe round {}/{NVME_ROUNDS}, slice", round + 1);
        slice_runs.push(nvme_run(ws, dirs, Some(&img), round, 3, "")?);
        eprintln!("bench: NVMe round {}/{NVME_ROUNDS}, native", round + 1);
        native_runs.push(nvme_run(ws, dirs, None, round, 3, "")?);
    }
    // The same slice on a GICv4.0 node: its NVMe share's MSI-X vectors go to its virtual ITS
    // (LPIs through the list registers). Exits only: one run.
    eprintln!("bench: NVMe on a GICv4.0 node, slice");
    let gicv4_runs = nvme_run(ws, dirs, Some(&img), 0, 4, "")?;
    // And with direct queues there (`nvme.direct-queues`, decision 5: the controller writes
    // the slice's CQs itself). Exits only: one run.
    eprintln!("bench: NVMe on a GICv4.0 node, slice with direct queues");
    let direct_plan = format!("{NVME_PLAN}direct-queues = true\n");
    let direct_img = image(artifacts, dirs, "nvme-slice-direct", &direct_plan)?;
    let direct_runs = nvme_run(ws, dirs, Some(&direct_img), 0, 4, "-direct")?;
    let mut metrics = Vec::new();
    for (i, depth) in nvme::DEPTHS.into_iter().enumerate() {
        let iops =
            |runs: &[Vec<nvme::IoRun>]| nvme::median(runs.iter().map(|r| r[i].iops).collect());
        let (slice_iops, native_iops) = (iops(&slice_runs), iops(&native_runs));
        let spread = |runs: &[Vec<nvme::IoRun>]| {
            let v: Vec<f64> = runs.iter().map(|r| r[i].iops).collect();
            let (lo, hi) = (
                v.iter().copied().fold(f64::MAX, f64::min),
                v.iter().copied().fold(0.0, f64::max),
            );
            format!("{lo:.0}-{hi:.0}")
        };
        metrics.push(
            Metric::new(
                &format!("nvme-qd{depth}-iops"),
                &format!("NVMe 4 KiB random reads QD{depth}, IOPS slice/native"),
                slice_iops / native_iops.max(1.0),
                "ratio",
                Goal::AtLeast(0.9),
            )
            .with_detail("slice-iops", slice_iops)
            .with_detail("native-iops", native_iops)
            .with_note(format!(
                "wall clock, no icount; median of {NVME_ROUNDS} alternating runs of {NVME_OPS} reads (slice {}, native {} IOPS)",
                spread(&slice_runs),
                spread(&native_runs)
            )),
        );
        let mean = |f: &dyn Fn(&nvme::IoRun) -> f64| {
            slice_runs.iter().map(|r| f(&r[i])).sum::<f64>() / slice_runs.len() as f64
        };
        metrics.push(exits_per_read(
            format!("nvme-qd{depth}-exits"),
            format!("NVMe QD{depth}, exits per read"),
            |f| mean(f),
            "Ctrl-A c snapshots around the run; doorbell and completion exits (other = timer ticks, the guest's IPIs and the console line that starts the run); goal: <= 1 exit per I/O batch (each read is one: iobench's threads each have one pread in flight)",
        ));
        let run = &gicv4_runs[i];
        metrics.push(exits_per_read(
            format!("nvme-qd{depth}-exits-gicv4"),
            format!("NVMe QD{depth}, exits per read, GICv4.0 node"),
            |f| f(run),
            "the slice above on a gic-version=4 node (its NVMe interrupts are vITS LPIs); one run; goal: <= 1 exit per I/O batch, no exit for completions (decision 5)",
        ));
        let run = &direct_runs[i];
        metrics.push(exits_per_read(
            format!("nvme-qd{depth}-exits-direct"),
            format!("NVMe QD{depth}, exits per read, GICv4.0 node, direct queues"),
            |f| f(run),
            "the slice above with nvme.direct-queues (decision 5: the controller writes its CQs and the physical ITS delivers their interrupts as vLPIs); one run",
        ));
    }
    Ok(metrics)
}

/// An exits-per-read row: `value` computes a per-read figure of the runs it stands for
/// (one, or the mean of several). The row counts the exits the I/O causes: doorbell writes
/// (`mmio-bar`) and completion interrupts (`irq-device`). Everything else in the window
/// (`other`: the guest's timer ticks and its own IPIs, which the idle-exit row measures, and
/// the console line that starts the run) is a detail, with the total.
fn exits_per_read(
    id: String,
    title: String,
    value: impl Fn(&dyn Fn(&nvme::IoRun) -> f64) -> f64,
    note: &str,
) -> Metric {
    let doorbell = value(&|r| r.per_io("mmio-bar"));
    let interrupt = value(&|r| r.per_io("irq-device"));
    let total = value(&nvme::IoRun::total_per_io);
    Metric::new(
        &id,
        &title,
        doorbell + interrupt,
        "exits",
        Goal::AtMost(1.0),
    )
    .with_detail("doorbell", doorbell)
    .with_detail("completion-irq", interrupt)
    .with_detail("other", total - doorbell - interrupt)
    .with_detail("all-exits", total)
    .with_note(note)
}

/// One boot running `iobench` at every depth: in a slice of `image` on a node with GIC
/// version `gic_version`, or natively (GICv3); `variant` tells its log apart.
fn nvme_run(
    ws: &Workspace,
    dirs: &Dirs,
    image: Option<&Path>,
    round: usize,
    gic_version: u32,
    variant: &str,
) -> Result<Vec<nvme::IoRun>> {
    let kind = if image.is_some() { "slice" } else { "native" };
    let name = match gic_version {
        3 => format!("nvme-{kind}{variant}-{round}"),
        v => format!("nvme-{kind}{variant}-gicv{v}-{round}"),
    };
    let disk = dirs.file("nvme-disk");
    let cmd = match image {
        Some(image) => {
            let mut node = Node::inline(&name, 2, 1024 << 20);
            node.gic_version = gic_version;
            node.disks.push(crate::node::Disk { size: NVME_DISK });
            Boot {
                node: &node,
                image,
                firmware: Firmware::Direct,
                virtualization: true,
                console: Console::Captured,
                disk_prefix: disk,
                kernel_cmdline: None,
                dtb: None,
            }
            .command()?
        }
        None => {
            let guest = crate::linux::guest(ws, true)?;
            let mut cmd = crate::linux::native_qemu_command(&guest, 2, 512, "quiet");
            cmd.args(crate::qemu::disk_args(
                &disk,
                &[crate::node::Disk { size: NVME_DISK }],
            )?);
            cmd
        }
    };
    let mut driver = nvme::Driver::new(image.map(|_| "io"), NVME_OPS);
    capture(
        cmd,
        LINUX_RUN_TIMEOUT,
        &dirs.file(&format!("{name}.log")),
        |line| driver.on_line(line),
    )?;
    if let Some(why) = driver.failure {
        bail!("{name}: iobench failed: {why}");
    }
    ensure!(
        driver.runs.len() == nvme::DEPTHS.len(),
        "{name}: {} of {} iobench runs finished",
        driver.runs.len(),
        nvme::DEPTHS.len()
    );
    Ok(driver.runs)
}

/// The network benchmark's slices: web and db, one vCPU and 512 MiB each, each with a
/// slice-network NIC (static address by MAC) and a host NIC (DHCP, forwarded port), httpd on:
/// the default plan's network on a smaller node.
const NET_PLAN: &str = "[[slice]]\nname = \"web\"\ncores = 1\nmemory = \"512MiB\"\nkernel = \"linux\"\ncmdline = \"quiet microvisor.ip=52:54:00:6d:76:00:10.10.0.1/24 microvisor.httpd=1\"\n\n[[slice.device]]\nclass = \"net\"\n[[slice.device]]\nclass = \"net\"\n\n[[slice]]\nname = \"db\"\ncores = 1\nmemory = \"512MiB\"\nkernel = \"linux\"\ncmdline = \"quiet microvisor.ip=52:54:00:6d:76:02:10.10.0.2/24 microvisor.httpd=1\"\n\n[[slice.device]]\nclass = \"net\"\n[[slice.device]]\nclass = \"net\"\n";

/// The network benchmark's NICs: web's slice and host NICs, then db's (as qemu/default.toml).
fn net_nics() -> Vec<crate::node::Nic> {
    use crate::node::{Network, Nic};
    [
        Network::Slices,
        Network::Host,
        Network::Slices,
        Network::Host,
    ]
    .into_iter()
    .map(Nic::on)
    .collect()
}

/// Metric 9: throughput and round trip slice/native, exits per 1000 packets by cause.
fn net_metrics(ws: &Workspace, artifacts: &Artifacts, dirs: &Dirs) -> Result<Vec<Metric>> {
    let img = image(artifacts, dirs, "net-slice", NET_PLAN)?;
    eprintln!("bench: network, slices web and db ({} rounds)", net::ROUNDS);
    let slice = net_run(ws, dirs, Some(&img), true)?;
    eprintln!(
        "bench: network, native without an SMMU ({} rounds)",
        net::ROUNDS
    );
    let native = net_run(ws, dirs, None, false)?;
    eprintln!(
        "bench: network, native with QEMU's SMMUv3 ({} rounds)",
        net::ROUNDS
    );
    let native_smmu = net_run(ws, dirs, None, true)?;
    let med = |v: Vec<f64>| nvme::median(v);
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.2}-{hi:.2}")
    };
    let rounds = net::ROUNDS;
    let mb = net::BIG_BYTES >> 20;
    let mut metrics = Vec::new();
    for (id, title, s, n, ns, how) in [
        (
            "net-s2s-mbps",
            "TCP slice to slice, MB/s",
            &slice.slice_to_slice,
            &native.slice_to_slice,
            &native_smmu.slice_to_slice,
            format!("web wgets {mb} MiB from db's httpd over the slice hub; guest /proc/uptime"),
        ),
        (
            "net-host-mbps",
            "TCP host to slice, MB/s",
            &slice.host_to_slice,
            &native.host_to_slice,
            &native_smmu.host_to_slice,
            format!(
                "the host fetches {mb} MiB from web's httpd through the forwarded port; host clock"
            ),
        ),
    ] {
        let sv: Vec<f64> = s.iter().map(net::Transfer::mbps).collect();
        let nv: Vec<f64> = n.iter().map(net::Transfer::mbps).collect();
        let nsv: Vec<f64> = ns.iter().map(net::Transfer::mbps).collect();
        metrics.push(
            Metric::new(id, title, med(sv.clone()), "MB/s", Goal::None)
                .with_native(med(nv.clone()))
                .with_detail("native-smmu", med(nsv.clone()))
                .with_note(format!(
                    "{how}; wall clock under TCG, no icount: median of {rounds} rounds in one boot (slice {}, native {}, native with SMMU {} MB/s)",
                    spread(&sv),
                    spread(&nv),
                    spread(&nsv)
                )),
        );
    }
    metrics.push(
        Metric::new(
            "net-rtt",
            "ping slice to slice, mean RTT",
            med(slice.rtt_ms.clone()),
            "ms",
            Goal::None,
        )
        .with_native(med(native.rtt_ms.clone()))
        .with_detail("native-smmu", med(native_smmu.rtt_ms.clone()))
        .with_note(format!(
            "busybox ping -c {} web -> db, avg of each step; median of {rounds} steps (slice {}, native {}, native with SMMU {} ms); wall clock under TCG",
            net::PINGS,
            spread(&slice.rtt_ms),
            spread(&native.rtt_ms),
            spread(&native_smmu.rtt_ms)
        )),
    );
    let exits = |id: &str, title: &str, runs: &[net::Transfer], who: &str, what: &str| {
        let mut causes: Vec<String> = runs
            .iter()
            .flat_map(|t| t.exits.get(who).into_iter().flat_map(|c| c.keys().cloned()))
            .collect();
        causes.sort();
        causes.dedup();
        let mean = |cause: Option<&str>| {
            runs.iter().map(|t| t.per_kpacket(who, cause)).sum::<f64>() / runs.len().max(1) as f64
        };
        let packets = runs.iter().map(|t| t.packets).sum::<u64>() / runs.len().max(1) as u64;
        let mut m = Metric::new(id, title, mean(None), "exits/kpkt", Goal::None)
            .with_detail("packets", packets as f64);
        for cause in &causes {
            m = m.with_detail(cause, mean(Some(cause)));
        }
        m.with_note(format!(
            "{what}; Ctrl-A c snapshots around each transfer, exits of slice {who} per 1000 packets (tx+rx of web's NIC), mean of {rounds} rounds; includes timer ticks and the console line that starts the transfer"
        ))
    };
    metrics.push(exits(
        "net-s2s-exits-web",
        "TCP slice to slice, exits/1000 packets, receiver (web)",
        &slice.slice_to_slice,
        "web",
        "web receives",
    ));
    metrics.push(exits(
        "net-s2s-exits-db",
        "TCP slice to slice, exits/1000 packets, sender (db)",
        &slice.slice_to_slice,
        "db",
        "db sends",
    ));
    metrics.push(exits(
        "net-host-exits",
        "TCP host to slice, exits/1000 packets (web sends)",
        &slice.host_to_slice,
        "web",
        "web sends to the host",
    ));
    Ok(metrics)
}

/// One boot running [`net::ROUNDS`] rounds: slices web and db on a 2-core node with an SMMU and
/// four NICs, or (`image` `None`) the same kernel and initramfs natively with 2 CPUs, 1 GiB and
/// three of the NICs (db's slice-network NIC moved into a namespace, see net.rs), with QEMU's
/// SMMUv3 in front of them if `smmu` (Linux then maps every buffer through it; a slice sees no
/// IOMMU: its device stage 2 is the hypervisor's).
fn net_run(ws: &Workspace, dirs: &Dirs, image: Option<&Path>, smmu: bool) -> Result<net::NetRuns> {
    let kind = match (image.is_some(), smmu) {
        (true, _) => "slice",
        (false, false) => "native",
        (false, true) => "native-smmu",
    };
    let name = format!("net-{kind}");
    let launch = match image {
        Some(image) => {
            let mut node = Node::inline(&name, 2, 1536 << 20);
            node.iommu = Some(crate::node::Iommu::Smmuv3);
            node.nics = net_nics();
            Boot {
                node: &node,
                image,
                firmware: Firmware::Direct,
                virtualization: true,
                console: Console::Captured,
                disk_prefix: dirs.file(&name),
                kernel_cmdline: None,
                dtb: None,
            }
            .launch()?
        }
        None => {
            let guest = crate::linux::guest(ws, true)?;
            let nics: Vec<_> = net_nics().into_iter().take(3).collect();
            let append = format!(
                "quiet microvisor.ip={}:10.10.0.1/24 microvisor.ip={}:10.10.0.2/24 microvisor.httpd=1",
                Node::nic_mac(0),
                Node::nic_mac(2)
            );
            crate::linux::native_qemu_launch(&guest, 2, 1024, &append, &nics, smmu)?
        }
    };
    // web's host NIC is the first host NIC in both layouts.
    let port = launch
        .forwards
        .first()
        .context("a forwarded port for web's host NIC")?
        .port;
    let mut driver = net::Driver::new(image.is_some(), || {
        net::download(port, Duration::from_secs(30), Duration::from_secs(300))
    });
    capture(
        launch.command,
        Duration::from_secs(1200),
        &dirs.file(&format!("{name}.log")),
        |line| driver.on_line(line),
    )?;
    if let Some(why) = driver.failure {
        bail!("{name}: {why}");
    }
    let runs = driver.runs;
    ensure!(
        runs.rtt_ms.len() == net::ROUNDS,
        "{name}: {} of {} rounds finished",
        runs.rtt_ms.len(),
        net::ROUNDS
    );
    Ok(runs)
}

/// Reads results written by an earlier run (`results.json`), for `--compare`.
pub fn read_results(path: &Path) -> Result<Results> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Results::from_json(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Writes `results.json`, the plot if asked, and returns the table (and comparison with
/// `compare`, results read before this run) text.
pub fn report(
    ws: &Workspace,
    results: &Results,
    compare: Option<&Results>,
    plot: bool,
) -> Result<String> {
    let dir = ws.target_dir.join("bench");
    std::fs::create_dir_all(&dir)?;
    let json = dir.join("results.json");
    std::fs::write(&json, results.to_json())?;
    let mut out = results.table();
    out.push_str(&format!("\nresults: {}\n", json.display()));
    if let Some(old) = compare {
        out.push_str("\ncompared with the old results:\n\n");
        out.push_str(&results.compare(old));
    }
    if plot {
        let svg = ws.root.join("docs").join("bench.svg");
        std::fs::write(&svg, svg::plot(results))?;
        out.push_str(&format!("plot: {}\n", svg.display()));
    }
    Ok(out)
}
