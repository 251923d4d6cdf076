//! A slice at run time (docs/architecture.md, "Slices"): its vCPUs pinned to physical cores,
//! its RAM and stage-2 tables, its pristine boot images, its devices and virtual GIC. Built
//! here from its plan; its lifecycle (start, stop, restart) is in [`lifecycle`].

mod firmware;
mod images;
pub mod lifecycle;
mod manage;
mod staging;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use microvisor_arch::memory::{self, SharedMemory};
use microvisor_arch::{cpu, gic};
use microvisor_logic::control::WINDOW_IPA;
use microvisor_logic::exits::ExitCause;
use microvisor_logic::guest_dt::GicNode;
use microvisor_logic::inventory::{Inventory, Region};
use microvisor_logic::nvme::{GuestRam, Ipa, Pa};
use microvisor_logic::pl061::POWER_KEY_LINE;
use microvisor_logic::ratelimit::{LineBudget, Verdict};
use microvisor_logic::vits::{Backing, DeviceSlot, VirtualIts};
use microvisor_plan::bundle::Bundle;
use microvisor_plan::layout::GUEST_RAM_BASE;
use microvisor_plan::model::{BootProtocol, CompiledPlan, OnFault, Role};
use microvisor_plan::place::SlicePlacement;
use spin::Mutex;

use crate::devices::assigned::AssignedDevice;
use crate::devices::control::ControlPage;
use crate::devices::gic::GicRegisters;
use crate::devices::gpio::Gpio;
use crate::devices::its::ItsFrames;
use crate::devices::pci::PciHost;
use crate::devices::uart::Uart;
use crate::devices::{Context, Devices, MmioDevice};
use crate::nvme::slice_disk::SliceDisk;
use crate::nvme::{HardwareQueue, physical::Physical};
use crate::output;
use crate::stage2::CpuStage2;
use crate::vcpu::Vcpu;
use crate::vgic::{DirectInjection, SliceGic};
use firmware::EnvironmentFlash;
pub use images::{BootImages, FlashedImage, ImageBytes, ImageProblem, Machine, Unusable};
use lifecycle::Lifecycle;

/// Events the vITS keeps for the virtual NVMe function: at least its MSI-X vectors (one per
/// I/O queue, at most 64, plus the admin queue's).
const NVME_ITS_EVENTS: u32 = 128;
pub use lifecycle::{Attention, Ending, Next};
pub use manage::{Job, Stats};
pub use staging::{PoolImage, StagingPool};

/// A slice's RAM as the hypervisor sees it, and its CPUs' stage-2 translation.
pub struct SliceMemory {
    /// The RAM, shared with the guest (volatile accesses only).
    pub ram: SharedMemory,
    pub stage2: CpuStage2,
}

/// What boot hands a slice of the node's NVMe controller: its window and queues.
pub struct DiskGrant {
    pub share: microvisor_plan::DiskShare,
    pub queues: Vec<HardwareQueue>,
    pub physical: &'static Physical,
}

/// What went wrong while building a slice from its plan (printed as `[hv] error: ...`).
pub type SetupError = String;

/// The default boot source, from the plan.
struct Flashed {
    kernel: FlashedImage,
    initrd: Option<FlashedImage>,
    cmdline: String,
}

/// What a slice is built from besides its plan: its RAM and cores, its share of the disk, its
/// PCI functions, and the manager's staging (the pool, and the window the manager maps).
pub struct Grants {
    pub disk: Option<DiskGrant>,
    pub assigned: Vec<AssignedDevice>,
    pub pool: Option<Arc<StagingPool>>,
    pub window: Option<Region>,
    /// The node's ITS on a GICv4 node, for assigned functions whose MSIs are vLPIs.
    pub direct: Option<Arc<dyn DirectInjection>>,
}

pub struct Slice {
    pub index: usize,
    pub name: String,
    pub on_fault: OnFault,
    pub vcpus: Vec<Vcpu>,
    pub memory: SliceMemory,
    pub kernel_label: String,
    pub role: Role,
    /// The plan's images and command line: the default boot source.
    flashed: Flashed,
    pub gic: SliceGic,
    pub devices: Devices,
    /// The console UART (also on the bus): node console input goes here.
    uart: Arc<Uart>,
    /// The GPIO controller (also on the bus): its line 3 is the power key.
    gpio: Arc<Gpio>,
    /// The NVMe share (also behind the PCI host on the bus), for the partition table and
    /// interrupt routing.
    pub disk: Option<Arc<SliceDisk>>,
    /// The PCI host (NVMe share and assigned functions), when there is one, and its index
    /// in `devices`.
    pub pci: Option<Arc<PciHost>>,
    pub pci_device: Option<usize>,
    /// The boot source of the next start.
    images: Mutex<BootImages>,
    /// Where staged images live (when the node has a manager).
    pool: Option<Arc<StagingPool>>,
    lifecycle: Mutex<Lifecycle>,
    /// Work for vCPU 0's core while the slice is stopped (`manage`).
    job: Mutex<Option<Job>>,
    stats: Mutex<Stats>,
    /// Counter value by which a graceful shutdown must be done (0: none asked).
    shutdown_deadline: AtomicU64,
    /// What the vCPUs must look at before they return to the guest (`lifecycle::STOP`,
    /// `lifecycle::END`): one load on the way back.
    attention: AtomicU8,
    /// The ending another core asked for ([`Slice::request_end`]).
    end_request: Mutex<Option<Ending>>,
    /// System counter value when the current run started.
    started_at: AtomicU64,
    /// Console lines about exceptions delivered to the guest, rate-limited.
    fault_lines: Mutex<LineBudget>,
    /// The environment flash of a slice that boots firmware.
    firmware: Option<EnvironmentFlash>,
}

impl Slice {
    /// Builds slice `index` of `plan` on the resources `placement` gives it: claims its RAM,
    /// builds its stage-2 map, its devices and their bus, lays out and generates its boot
    /// images. Nothing runs yet.
    pub fn new(
        index: usize,
        plan: &CompiledPlan,
        placement: &SlicePlacement,
        inventory: &Inventory,
        bundle: &'static Bundle<'static>,
        grants: Grants,
    ) -> Result<Slice, SetupError> {
        let Grants {
            disk,
            assigned,
            pool,
            window,
            direct,
        } = grants;
        let spec = &plan.slices[index];
        let name = spec.name.clone();
        let fail = |what: String| format!("slice \"{name}\": {what}");
        let flashed_image = |index: u32, field: &str, protocol| {
            bundle
                .image(index)
                .map(|image| FlashedImage {
                    label: image.label,
                    bytes: image.bytes,
                    sha256: image.sha256,
                    protocol,
                })
                .map_err(|e| fail(format!("{field}: {e}")))
        };
        let kernel = flashed_image(spec.kernel, "kernel", spec.boot)?;
        let initrd = match spec.initrd {
            Some(i) => Some(flashed_image(i, "initrd", BootProtocol::Linux)?),
            None => None,
        };
        if spec.role.is_manager() && (kernel.label == "probe" || spec.boot != BootProtocol::Linux) {
            return Err(fail(
                "kernel: the manager must run Linux, not the probe or firmware".into(),
            ));
        }

        let ram = Region::new(placement.ram.base, placement.ram.size);
        let region = memory::claim(ram)
            .map_err(|e| fail(format!("memory: cannot claim {ram:x?}: {e:?}")))?;
        let vmid = (index + 1) as u16;
        let stage2 = CpuStage2::new(vmid, GUEST_RAM_BASE, ram.base, ram.size)
            .map_err(|e| fail(format!("stage 2: {e:?}")))?;
        let firmware = if spec.boot == BootProtocol::Firmware {
            let flash =
                EnvironmentFlash::new(&stage2, &spec.firmware_env, &spec.firmware_network_env)
                    .map_err(|e| fail(format!("stage 2: firmware environment: {e:?}")))?;
            Some(flash)
        } else {
            None
        };

        let vcpus: Vec<Vcpu> = placement
            .cores
            .iter()
            .enumerate()
            .map(|(i, &core)| Vcpu::new(i, core as usize, inventory.cpus[core as usize]))
            .collect();

        // The devices: the console UART, the GPIO controller with the power key, the PCI host
        // with the NVMe share and assigned functions, the vGIC's frames.
        let uart = Arc::new(Uart::new(&name, pool.is_some()));
        let gpio = Arc::new(Gpio::new());
        let disk = match disk {
            Some(grant) => Some(Arc::new(
                SliceDisk::new(
                    index,
                    &name,
                    Region::new(ram.base, spec.memory),
                    grant.share,
                    grant.queues,
                    grant.physical,
                    // Direct I/O queues where the plan asks (decision 5).
                    spec.nvme.as_ref().is_some_and(|n| n.direct),
                )
                .map_err(fail)?,
            )),
            None => None,
        };
        let mut list: Vec<Arc<dyn MmioDevice>> = alloc::vec![uart.clone(), gpio.clone()];
        if let Some(window) = window {
            list.push(Arc::new(ControlPage::new()));
            stage2
                .map_device(WINDOW_IPA, window.base, window.size)
                .map_err(|e| fail(format!("control window: {e:?}")))?;
        }
        // On a GICv4 node a slice with PCI functions gets a virtual ITS instead of MBI
        // (docs/decisions/0004-gicv4-virtual-its.md): its NVMe share's MSIs become LPIs in
        // the list registers, its assigned functions' vLPIs on the physical ITS.
        let its = (disk.is_some() || !assigned.is_empty())
            && gic::virtual_lpis()
            && assigned.iter().all(|f| f.direct);
        let assigned_direct = !assigned.is_empty();
        // Direct NVMe queues' completions may go to the guest straight from the physical
        // ITS (decision 5, step 3): the share is then a shared device of the vITS.
        let nvme_direct = disk.as_ref().filter(|d| its && d.direct_queues);
        let mut its_devices: Vec<DeviceSlot> = Vec::new();
        if let Some(disk) = &disk {
            its_devices.push(DeviceSlot {
                id: PciHost::NVME_DEVICE_ID,
                events: NVME_ITS_EVENTS,
                backing: match nvme_direct {
                    Some(_) => Backing::Shared {
                        physical_device: disk.physical.its_device,
                    },
                    None => Backing::Emulated,
                },
            });
        }
        its_devices.extend(assigned.iter().map(|f| DeviceSlot {
            id: PciHost::device_id(f.slot),
            events: u32::from(f.vectors),
            backing: Backing::Assigned {
                physical_device: f.its_device,
            },
        }));
        let pci = (disk.is_some() || !assigned.is_empty())
            .then(|| Arc::new(PciHost::new(disk.clone(), assigned, its)));
        let pci_device = pci.as_ref().map(|pci| {
            list.push(pci.clone());
            list.len() - 1
        });
        let gic_node = GicNode {
            vcpus: vcpus.len(),
            mbi: pci_device.is_some() && !its,
            its,
        };
        list.push(Arc::new(GicRegisters::new(gic_node)));
        if its {
            list.push(Arc::new(ItsFrames::new()));
        }
        let devices = Devices::new(list).map_err(|e| fail(format!("devices: {e}")))?;
        let cores: Vec<(usize, u64)> = vcpus.iter().map(|v| (v.core, v.mpidr)).collect();
        let virtual_its = its.then(|| {
            let ram = GuestRam {
                ipa_base: Ipa(GUEST_RAM_BASE),
                size: spec.memory,
                pa_base: Pa(ram.base),
            };
            VirtualIts::new(vcpus.len(), ram, &its_devices)
        });
        let direct = direct.filter(|_| its && (assigned_direct || nvme_direct.is_some()));
        let gic = SliceGic::new(&cores, &devices.spis(), gic_node.mbi, virtual_its, direct);

        let flashed = Flashed {
            kernel,
            initrd,
            cmdline: spec.cmdline.clone(),
        };
        let nodes = devices.nodes();
        let machine = Machine {
            name: &name,
            vcpus: vcpus.len(),
            memory: spec.memory,
            devices: &nodes,
        };
        let images = BootImages::new(
            &machine,
            ImageBytes::Flashed(kernel),
            initrd.map(ImageBytes::Flashed),
            spec.cmdline.clone(),
            false,
            None,
        )
        .map_err(|unusable| fail(unusable.why.message()))?;
        drop(nodes);

        Ok(Slice {
            index,
            name,
            on_fault: spec.on_fault,
            vcpus,
            memory: SliceMemory {
                ram: region.into_shared(),
                stage2,
            },
            kernel_label: kernel.label.into(),
            role: spec.role,
            flashed,
            gic,
            devices,
            uart,
            gpio,
            disk,
            pci,
            pci_device,
            images: Mutex::new(images),
            pool,
            lifecycle: Mutex::new(Lifecycle::Stopped),
            job: Mutex::new(None),
            stats: Mutex::new(Stats::default()),
            shutdown_deadline: AtomicU64::new(0),
            attention: AtomicU8::new(0),
            end_request: Mutex::new(None),
            fault_lines: Mutex::new(LineBudget::new()),
            started_at: AtomicU64::new(0),
            firmware,
        })
    }

    /// Whether its devices' MSIs may reach the slice as vLPIs from the physical ITS (GICv4
    /// direct injection: assigned functions, direct NVMe queues): its vCPUs' vPEs must be
    /// mapped.
    pub fn direct_injection(&self) -> bool {
        self.gic.direct_injection()
    }

    /// Physical RAM of the slice.
    pub fn ram(&self) -> Region {
        self.memory.ram.region()
    }

    /// What the slice's devices may reach.
    pub fn context(&self) -> Context<'_> {
        Context {
            gic: &self.gic,
            ram: &self.memory.ram,
            stage2: &self.memory.stage2,
        }
    }

    /// A byte typed on the node console while this slice has the focus.
    pub fn console_input(&self, byte: u8) {
        self.uart.console_input(byte, &self.gic);
    }

    /// Presses the slice's power key: GPIO line 3 goes high and stays high (a rising edge the
    /// guest's `gpio-keys` or `powerkey` sees) until the slice's devices are reset at its
    /// next start. Pressing it again while it is held changes nothing.
    pub fn press_power_key(&self) {
        self.gpio.set_input(POWER_KEY_LINE, true, &self.gic);
    }

    /// Counter ticks since the current run started.
    pub fn uptime_ticks(&self) -> u64 {
        cpu::counter().saturating_sub(self.started_at.load(Ordering::Relaxed))
    }

    /// `[hv] slice <name>: <what>` for an exception delivered to the guest, at most a burst
    /// and then one line a second (`microvisor_logic::ratelimit`), so a guest faulting in a
    /// loop cannot flood the node console.
    pub fn report_delivered(&self, what: fmt::Arguments<'_>) {
        let verdict = self
            .fault_lines
            .lock()
            .event(cpu::counter(), cpu::counter_frequency());
        if let Verdict::Print { suppressed } = verdict {
            if suppressed == 0 {
                output::hv(format_args!("slice {}: {what}", self.name));
            } else {
                output::hv(format_args!(
                    "slice {}: {what} ({suppressed} more not shown)",
                    self.name
                ));
            }
        }
    }

    /// Exit counter `selector` summed over the slice's vCPUs: an [`ExitCause`] index, then the
    /// bus's MMIO counter slots, [`TOTAL`] or [`INJECTED`]; None for an unknown selector.
    pub fn exit_count(&self, selector: u64) -> Option<u64> {
        let sum = |pick: &dyn Fn(&Vcpu) -> u64| Some(self.vcpus.iter().map(pick).sum());
        let mmio = self.devices.counters().len();
        match selector {
            TOTAL => sum(&|v| v.exits.total()),
            INJECTED => sum(&|v| self.gic.injected(v.index)),
            s if (s as usize) < ExitCause::COUNT => {
                sum(&|v| v.exits.cause(ExitCause::ALL[s as usize]))
            }
            s if (s as usize) < ExitCause::COUNT + mmio => {
                sum(&|v| v.exits.mmio(s as usize - ExitCause::COUNT))
            }
            _ => None,
        }
    }

    /// Prints the slice's exit counters: totals by cause since its run started (also when
    /// the run ends, so `cargo xtask bench` reads final, deterministic totals).
    pub fn report_exits(&self) {
        let hz = cpu::counter_frequency().max(1);
        let ticks = self.uptime_ticks();
        let all = self.exit_count(TOTAL).unwrap_or(0);
        let mut line = String::new();
        let causes = ExitCause::ALL.iter().map(|c| c.name());
        let names = causes.chain(self.devices.counters().iter().copied());
        for (selector, name) in names.enumerate() {
            let count = self.exit_count(selector as u64).unwrap_or(0);
            if count != 0 {
                let _ = write!(line, " {name}={count}");
            }
        }
        output::hv(format_args!(
            "exits {}: {all} in {}.{:03} s ({} per s){line}; injected {}",
            self.name,
            ticks / hz,
            ticks % hz * 1000 / hz,
            all.saturating_mul(hz) / ticks.max(1),
            self.exit_count(INJECTED).unwrap_or(0),
        ));
    }
}

/// [`Slice::exit_count`] selector: every exit.
pub const TOTAL: u64 = microvisor_logic::psci::EXITS_TOTAL;
/// [`Slice::exit_count`] selector: virtual interrupts injected.
pub const INJECTED: u64 = microvisor_logic::psci::EXITS_INJECTED;
