//! The bare-metal probe: the boot CPU's flow from the entry code to the
//! heartbeats (with `secret=`, its passes around the memory test and the NVMe work). Until the MMU is on, the code here takes no lock and does no
//! atomic read-modify-write (exclusives need Normal memory).

pub mod attacks;
pub mod bench;
pub mod console;
pub mod entry;
pub mod gic;
pub mod gic_attacks;
pub mod guarded;
pub mod heartbeat;
pub mod its;
pub mod its_attacks;
pub mod memtest;
pub mod mmu;
pub mod net;
pub mod net_attacks;
pub mod nvme;
pub mod nvme_attacks;
pub mod nvme_io;
pub mod pci;
pub mod psci;
pub mod report;
pub mod secret;
pub mod secret_regs;
pub mod smp;
pub mod sweep;
pub mod timer;

use aarch64_cpu::registers::{CurrentEL, Readable};
use microvisor_probe::cmdline::{Attack, Options};
use microvisor_probe::dt::{DtError, Platform};
use microvisor_probe::memplan::{Range, TestPlan};
use microvisor_probe::{KERNEL_NAME, MAX_CPUS};

use console::println;
use report::Failures;
use smp::Start;

unsafe extern "C" {
    /// First byte of the image (link.ld).
    static __image_start: u8;
    /// End of the footprint: image, bss (page table, canary), stacks.
    static __image_end: u8;
}

/// Largest device tree the probe accepts (QEMU's is 1 MiB).
const MAX_DTB_SIZE: usize = 8 << 20;

/// Memory-test deadline for a share of `bytes`: a base plus one second per
/// 16 MiB (TCG manages about 250 MiB/s per CPU, plus host page faults).
fn memtest_timeout_ms(bytes: u64) -> u64 {
    20_000 + bytes / (16 << 20) * 1000
}

/// The probe's own footprint, excluded from the memory test.
pub fn footprint() -> Range {
    Range {
        start: &raw const __image_start as u64,
        end: &raw const __image_end as u64,
    }
}

static PLATFORM: spin::Once<Platform> = spin::Once::new();

/// Reads the device tree at `dtb` (MMU off: plain loads and stores only).
fn read_device_tree(dtb: usize) -> Result<Platform, DtError> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return Err(DtError::Header);
    }
    // SAFETY: per the arm64 boot protocol x0 holds the address of a DTB in
    // RAM, 8-byte aligned, that nothing else writes while we read it; the
    // header's totalsize field is at offset 4. (A garbage address faults
    // into the exception handler.)
    let total = u32::from_be(unsafe { ((dtb + 4) as *const u32).read_volatile() }) as usize;
    if !(40..=MAX_DTB_SIZE).contains(&total) {
        return Err(DtError::Header);
    }
    // SAFETY: as above, the blob spans `total` bytes of our own RAM, outside
    // the image (the entry code checked), and nothing else uses it: taking
    // it mutably (for removing NOP tokens in place) aliases nothing. The
    // slice is dropped before the memory test overwrites the blob;
    // everything needed is copied out.
    let blob = unsafe { core::slice::from_raw_parts_mut(dtb as *mut u8, total) };
    Platform::from_fdt(blob)
}

/// Rust entry of the boot CPU, from `linked_entry` (entry.rs): stack set,
/// bss zeroed, MMU off. `dtb` is 0 if the entry code dropped it because it
/// overlapped the footprint (`dropped_dtb` then holds its address); `entry_ticks`
/// is the virtual counter read by the very first instruction (`bench=boot`).
pub extern "C" fn boot_main(
    dtb: usize,
    load_address: usize,
    dropped_dtb: usize,
    entry_ticks: u64,
) -> ! {
    let boot_ticks = timer::now();
    let parsed = read_device_tree(dtb);
    let platform = parsed.clone().unwrap_or_else(|_| Platform::fallback());
    let image = footprint();
    let all_memory_mapped = mmu::build(platform.memory(), image);
    mmu::enable_boot_cpu(image);

    // MMU on: locks and atomics are fine from here.
    timer::init_cpu();
    console::set_uart(platform.uart_base);
    let platform = PLATFORM.call_once(|| platform);
    let el = CurrentEL.read(CurrentEL::EL);
    println!("PROBE START {KERNEL_NAME} el={el} load={load_address:#x} dtb={dtb:#x}");
    let options = Options::parse(platform.bootargs.as_bytes());
    for problem in options.problems() {
        println!("PROBE WARN cmdline {problem}");
    }

    let mut failures = Failures::new();
    match (&parsed, dtb, dropped_dtb) {
        (_, 0, 0) => failures.add(format_args!("dt-missing")),
        (_, 0, dropped) => failures.add(format_args!("dt-overlaps-image({dropped:#x})")),
        (Err(e), _, _) => failures.add(format_args!("dt-{e}")),
        (Ok(_), _, _) => {}
    }
    if platform.bootargs.is_truncated() {
        failures.add(format_args!("bootargs-truncated"));
    }
    if platform.dt_cpu_count > MAX_CPUS {
        failures.add(format_args!(
            "too-many-cpus({}>{MAX_CPUS})",
            platform.dt_cpu_count
        ));
    }
    if platform.dt_memory_count > platform.memory().len() {
        failures.add(format_args!(
            "too-many-memory-ranges({})",
            platform.dt_memory_count
        ));
    }
    if platform.memory_overlaps() {
        failures.add(format_args!("dt-memory-overlap"));
    }
    if !all_memory_mapped {
        failures.add(format_args!("memory-not-mappable"));
    }

    // CPUs.
    // The boot CPU is the tree's CPU with its affinity; if none matches it is
    // taken as vCPU 0, and the MPIDR check below reports the mismatch.
    let own = smp::own_affinity();
    let boot_index = platform.cpus().iter().position(|&m| m == own).unwrap_or(0);
    smp::mark_online(boot_index);
    if (attacks::wants_receiver(&options)
        || options
            .benches()
            .contains(&microvisor_probe::bench::Bench::Ipi))
        && let Some(receiver) = attacks::sgi_receiver(platform, boot_index)
    {
        gic::arm_receiver(receiver);
    }
    if options.attacks().contains(&Attack::NvmePrpFlip)
        && let Some(flipper) = attacks::flipper(platform, boot_index, &options)
    {
        nvme_attacks::arm_flipper(flipper);
    }
    if options.attacks().iter().any(|&a| sweep::needs_racer(a))
        && let Some(racer) = sweep::racer(platform, boot_index, &options)
    {
        sweep::arm_racer(racer);
    }
    let starts = smp::bring_up(platform, boot_index);
    let mut mpidrs = [0u64; MAX_CPUS];
    let mut share_of = [None; MAX_CPUS];
    let mut online = 0;
    for (i, &dt_mpidr) in platform.cpus().iter().enumerate() {
        match (starts[i], smp::seen(i)) {
            (_, Some(seen)) => {
                mpidrs[online] = seen;
                share_of[i] = Some(online as u8);
                online += 1;
                if seen != dt_mpidr {
                    failures.add(format_args!(
                        "cpu{i}-mpidr(dt={dt_mpidr:#x},seen={seen:#x})"
                    ));
                }
            }
            (Start::NoPsci, None) => failures.add(format_args!("cpu{i}-no-psci")),
            (Start::CpuOn(ret), None) if ret != 0 => failures.add(format_args!(
                "cpu{i}-cpu-on-{}({ret})",
                psci::status_name(ret)
            )),
            (_, None) => failures.add(format_args!("cpu{i}-offline(mpidr={dt_mpidr:#x})")),
        }
    }
    if platform.cpus().is_empty() {
        // No usable tree: the boot CPU alone, in slot 0.
        mpidrs[0] = own;
        share_of[0] = Some(0);
        online = 1;
    }
    let boot_share = share_of[boot_index].unwrap_or(0);

    // Memory.
    let seed = mix(boot_ticks ^ timer::now().rotate_left(32));
    // Benchmarks need deterministic, short boots: no memory test.
    let benching = !options.benches().is_empty();
    let tested: &[_] = if benching { &[] } else { platform.memory() };
    // `secret=check`: what the previous tenant left, before the memory test overwrites it.
    let mut secret_passes = secret::Early::default();
    secret_passes.before_memtest(options.secret, platform, image);
    let plan = TestPlan::new(tested, &[image], seed);
    let timeout = memtest_timeout_ms(plan.total_bytes() / online as u64);
    let outcome = memtest::run(
        memtest::Assignment {
            plan,
            participants: online,
            share_of,
        },
        boot_share,
        timeout,
    );
    if outcome.bytes == 0 && parsed.is_ok() && !benching {
        failures.add(format_args!("memtest-nothing-to-test"));
    }
    if outcome.errors != 0 {
        let first = outcome.first_bad.unwrap_or(0);
        failures.add(format_args!(
            "memtest-errors(count={},first={first:#x})",
            outcome.errors
        ));
    }
    if outcome.timed_out {
        failures.add(format_args!("memtest-timeout({timeout}ms)"));
    }
    if outcome.exception {
        failures.add(format_args!("memtest-cpu-exception"));
    }
    heartbeat::fill_canary(seed);
    secret_passes.after_memtest(options.secret, platform, image);

    // NVMe (after the memory test: its DMA memory is RAM the test used).
    let nvme_probe = if options.nvme {
        nvme::probe(platform, image, online)
    } else {
        nvme::Probe::Disabled
    };
    secret_passes.after_nvme_start(options.secret, platform);
    let nvme_summary = report::NvmeSummary::new(&nvme_probe);
    nvme::print_info();

    // The NIC (after NVMe: its BARs and DMA memory come after the controller's).
    let net = net::boot(platform, &options, nvme::dma_end().unwrap_or(image.end));

    // Under the microvisor a PCI host bridge carries an NVMe share or assigned functions: an
    // empty one means a promised NVMe share is missing.
    let promised = platform.slice_named && platform.pci_node && net.state.is_none();
    match &nvme_probe {
        nvme::Probe::Failed(e, found) if found.is_some() || promised => {
            failures.add(format_args!("nvme-{e}"))
        }
        nvme::Probe::Absent if promised => failures.add(format_args!("nvme-not-found")),
        _ => {}
    }

    let conduit = smp::conduit(platform);
    let report = report::Report {
        platform,
        mpidrs,
        online,
        el,
        psci_version: platform.psci.and_then(psci::version),
        memtest: outcome,
        seed,
        image,
        load_address: load_address as u64,
        canary: heartbeat::canary_address(),
        wfit: timer::uses_wfit(),
        nvme: nvme_summary,
        net,
        include_net: core::cell::Cell::new(true),
    };
    report::print(&report, &failures);
    let slice_seed = microvisor_probe::nvme::pattern::slice_seed(platform.slice_name.as_bytes());
    nvme_io::boot(&options, slice_seed, seed);
    secret::finish(options.secret, secret_passes, platform, image);

    let ctx = attacks::Context {
        platform,
        image,
        seed,
        target: options.target,
        conduit,
        boot_index,
    };
    bench::run(&options, platform, image, entry_ticks, boot_index);
    attacks::run(options.attacks(), &ctx);
    nvme_attacks::release_flipper();
    sweep::release_racer();
    heartbeat::run(&options, conduit, seed, slice_seed)
}

/// SplitMix64 finalizer: spreads the counter bits over the whole seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
