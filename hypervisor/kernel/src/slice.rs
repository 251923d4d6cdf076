//! A slice at run time (DESIGN §4): its vCPUs pinned to physical cores, its RAM and stage-2
//! tables, its pristine boot images, its emulated UART, and its lifecycle (start, stop,
//! restart) coordinated across its cores.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use microvisor_arch::exceptions::GuestFrame;
use microvisor_arch::memory::{self, PhysRegion};
use microvisor_arch::{cpu, gic, vgic, virt};
use microvisor_logic::console::LineBuffer;
use microvisor_logic::exits::ExitCause;
use microvisor_logic::guest_dt::{self, GuestMachine, map};
use microvisor_logic::inventory::{Inventory, Region};
use microvisor_logic::pagetable::{Attributes, HeapTables, Regime, Translation};
use microvisor_logic::pl011::VirtualPl011;
use microvisor_logic::vgic::{MAX_LIST_REGISTERS, VcpuSet, VirtualGic};
use microvisor_plan::bundle::Bundle;
use microvisor_plan::layout::GUEST_RAM_BASE;
use microvisor_plan::model::{CompiledPlan, OnFault};
use microvisor_plan::place::SlicePlacement;
use microvisor_plan::{Arm64Header, GuestLayout};
use spin::Mutex;

use crate::console;
use crate::nvme::slice_disk::{Signals, SliceDisk};

/// Power state of one vCPU (PSCI's view: ON, OFF, ON_PENDING).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    Off,
    /// CPU_ON accepted; the vCPU's core has not picked it up yet.
    OnPending {
        entry: u64,
        context: u64,
    },
    On,
}

/// One vCPU, pinned to one physical core for its whole life.
pub struct Vcpu {
    pub index: usize,
    /// Physical core index (position in the firmware DT).
    pub core: usize,
    /// Physical MPIDR affinity of that core (for hypervisor SGIs).
    pub mpidr: u64,
    power: Mutex<Power>,
    exits: [AtomicU64; ExitCause::COUNT],
    /// Virtual interrupts written to this vCPU's list registers.
    injected: AtomicU64,
    /// ICH_HCR_EL2.UIE as last written (to skip needless writes).
    underflow: AtomicBool,
}

impl Vcpu {
    pub fn power(&self) -> Power {
        *self.power.lock()
    }

    /// Counts one exit of `cause`.
    pub fn count(&self, cause: ExitCause) {
        self.exits[cause.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Exit counts by cause, in `ExitCause::ALL` order.
    pub fn exit_counts(&self) -> [u64; ExitCause::COUNT] {
        core::array::from_fn(|i| self.exits[i].load(Ordering::Relaxed))
    }

    /// Virtual interrupts injected into this vCPU.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Running,
    /// A stop or restart is in progress: every vCPU parks.
    Stopping,
    Stopped,
}

/// What ends a slice's run.
#[derive(Clone, Debug)]
pub enum Ending {
    /// The guest asked to power off (PSCI SYSTEM_OFF).
    PowerOff,
    /// The guest asked to reboot (PSCI SYSTEM_RESET).
    Reset,
    /// The guest did something it must not: apply `on-fault`.
    Fault(String),
}

/// The images a slice boots from, kept pristine in the bundle for restarts.
struct BootImages {
    kernel: &'static [u8],
    initrd: Option<&'static [u8]>,
    dtb: Vec<u8>,
    layout: GuestLayout,
}

struct Uart {
    device: VirtualPl011,
    line: LineBuffer,
    /// Console input waiting for room in the PL011's 32-byte receive FIFO.
    pending_input: alloc::collections::VecDeque<u8>,
}

/// Console input a slice can have waiting (bytes beyond are dropped, as a UART would).
const INPUT_BUFFER: usize = 4096;

impl Uart {
    fn new() -> Self {
        Self {
            device: VirtualPl011::new(),
            line: LineBuffer::new(),
            pending_input: alloc::collections::VecDeque::new(),
        }
    }

    /// Moves waiting input into the receive FIFO while it has room.
    fn refill(&mut self) {
        while let Some(&byte) = self.pending_input.front() {
            if !self.device.receive(byte) {
                break;
            }
            self.pending_input.pop_front();
        }
    }
}

/// A slice's RAM as the hypervisor sees it.
pub struct SliceMemory {
    region: PhysRegion,
    // Kept alive: the hardware walks these tables.
    _stage2: Translation<HeapTables>,
    /// VTTBR_EL2 value: stage-2 root | VMID << 48.
    pub vttbr: u64,
    pub stage2_tables: usize,
}

pub struct Slice {
    pub index: usize,
    pub name: String,
    pub on_fault: OnFault,
    pub vcpus: Vec<Vcpu>,
    pub memory: SliceMemory,
    pub kernel_label: String,
    images: BootImages,
    lifecycle: Mutex<Lifecycle>,
    stop_requested: AtomicBool,
    uart: Mutex<Uart>,
    vgic: Mutex<VirtualGic>,
    /// System counter value when the current run started.
    started_at: AtomicU64,
    /// The slice's share of the node's NVMe controller.
    pub disk: Option<SliceDisk>,
}

/// What boot hands a slice of the node's NVMe controller: its window and queues.
pub struct DiskGrant {
    pub share: microvisor_plan::DiskShare,
    pub queues: Vec<crate::nvme::HardwareQueue>,
    pub physical: &'static crate::nvme::physical::Physical,
}

/// INTID of every slice's emulated PL011.
pub const UART_INTID: u32 = 32 + map::UART_SPI;

/// What went wrong while building a slice from its plan (printed as `[hv] error: ...`).
pub type SetupError = String;

impl Slice {
    /// Builds slice `index` of `plan` on the resources `placement` gives it: claims its RAM,
    /// builds its stage-2 map, lays out and generates its boot images. Nothing runs yet.
    pub fn new(
        index: usize,
        plan: &CompiledPlan,
        placement: &SlicePlacement,
        inventory: &Inventory,
        bundle: &'static Bundle<'static>,
        disk: Option<DiskGrant>,
    ) -> Result<Slice, SetupError> {
        let spec = &plan.slices[index];
        let name = spec.name.clone();
        let fail = |what: String| format!("slice \"{name}\": {what}");
        let kernel = bundle
            .image(spec.kernel)
            .map_err(|e| fail(format!("kernel: {e}")))?;
        let header = Arm64Header::parse(kernel.bytes).map_err(|e| fail(format!("kernel: {e}")))?;
        let initrd = match spec.initrd {
            Some(i) => Some(
                bundle
                    .image(i)
                    .map_err(|e| fail(format!("initrd: {e}")))?
                    .bytes,
            ),
            None => None,
        };
        let layout = GuestLayout::new(
            spec.memory,
            &header,
            kernel.bytes.len() as u64,
            initrd.map(|i| i.len() as u64),
        )
        .map_err(|e| format!("{}", e.with_slice(name.clone())))?;
        let machine = GuestMachine {
            slice_name: &name,
            vcpus: placement.cores.len(),
            memory: spec.memory,
            cmdline: &spec.cmdline,
            initrd: layout.initrd,
            pcie: disk.is_some(),
        };
        let dtb = guest_dt::generate(&machine).map_err(|e| fail(format!("device tree: {e:?}")))?;

        let ram = Region::new(placement.ram.base, placement.ram.size);
        let region = memory::claim(ram)
            .map_err(|e| fail(format!("memory: cannot claim {ram:x?}: {e:?}")))?;
        let mut stage2 = Translation::new(Regime::Stage2, HeapTables::new())
            .map_err(|e| fail(format!("stage 2: {e:?}")))?;
        stage2
            .map(GUEST_RAM_BASE, ram.base, ram.size, Attributes::RAM)
            .map_err(|e| fail(format!("stage 2: {e:?}")))?;
        let disk = match disk {
            Some(grant) => Some(
                SliceDisk::new(
                    index,
                    &name,
                    ram.base,
                    spec.memory,
                    grant.share,
                    grant.queues,
                    grant.physical,
                )
                .map_err(fail)?,
            ),
            None => None,
        };
        let vmid = (index + 1) as u64;
        let vttbr = stage2.root() | vmid << 48;
        let stage2_tables = stage2.store().len();

        let vcpus = placement
            .cores
            .iter()
            .enumerate()
            .map(|(i, &core)| Vcpu {
                index: i,
                core: core as usize,
                mpidr: inventory.cpus[core as usize],
                power: Mutex::new(Power::Off),
                exits: [const { AtomicU64::new(0) }; ExitCause::COUNT],
                injected: AtomicU64::new(0),
                underflow: AtomicBool::new(false),
            })
            .collect();
        let vcpu_count = placement.cores.len();
        Ok(Slice {
            index,
            name,
            on_fault: spec.on_fault,
            vcpus,
            memory: SliceMemory {
                region,
                _stage2: stage2,
                vttbr,
                stage2_tables,
            },
            kernel_label: kernel.label.into(),
            images: BootImages {
                kernel: kernel.bytes,
                initrd,
                dtb,
                layout,
            },
            lifecycle: Mutex::new(Lifecycle::Stopped),
            stop_requested: AtomicBool::new(false),
            uart: Mutex::new(Uart::new()),
            vgic: Mutex::new(match disk {
                Some(_) => {
                    let mut owned: Vec<u32> =
                        (map::MBI_FIRST..map::MBI_FIRST + map::MBI_COUNT).collect();
                    owned.push(UART_INTID);
                    VirtualGic::new(vcpu_count, &owned).with_mbi()
                }
                None => VirtualGic::new(vcpu_count, &[UART_INTID]),
            }),
            started_at: AtomicU64::new(0),
            disk,
        })
    }

    /// Physical RAM of the slice.
    pub fn ram(&self) -> Region {
        self.memory.region.region()
    }

    /// Copies the pristine kernel, initrd and device tree into the slice's RAM and makes them
    /// visible to a guest starting with caches off.
    pub fn load(&self) -> Result<(), SetupError> {
        let images = &self.images;
        let layout = &images.layout;
        let ram = &self.memory.region;
        let offset = |ipa: u64| ipa - GUEST_RAM_BASE;
        let kernel_at = offset(layout.kernel_ipa);
        let kernel_len = images.kernel.len() as u64;
        let result = ram
            .write(kernel_at, images.kernel)
            .and_then(|()| {
                ram.zero(
                    kernel_at + kernel_len,
                    layout
                        .kernel_end
                        .saturating_sub(layout.kernel_ipa + kernel_len),
                )
            })
            .and_then(|()| ram.sync_for_guest(kernel_at, layout.kernel_end - layout.kernel_ipa))
            .and_then(|()| match (images.initrd, layout.initrd) {
                (Some(bytes), Some((start, _))) => ram
                    .write(offset(start), bytes)
                    .and_then(|()| ram.sync_for_guest(offset(start), bytes.len() as u64)),
                _ => Ok(()),
            })
            .and_then(|()| ram.write(offset(layout.dtb_ipa), &images.dtb))
            .and_then(|()| ram.sync_for_guest(offset(layout.dtb_ipa), images.dtb.len() as u64));
        result.map_err(|_| format!("slice \"{}\": images do not fit its memory", self.name))
    }

    /// Powers on vCPU 0 at the kernel entry, with the images already loaded.
    pub fn start(&self) -> Result<(), SetupError> {
        *self.uart.lock() = Uart::new();
        self.vgic.lock().reset();
        self.started_at.store(cpu::counter(), Ordering::Relaxed);
        *self.lifecycle.lock() = Lifecycle::Running;
        self.stop_requested.store(false, Ordering::Release);
        let layout = &self.images.layout;
        self.power_on(&self.vcpus[0], layout.kernel_ipa, layout.dtb_ipa)
            .map_err(|status| format!("slice \"{}\": vCPU 0 did not start ({status})", self.name))
    }

    /// PSCI CPU_ON semantics: marks `vcpu` ON_PENDING with its entry and wakes its core.
    /// Returns the PSCI status on refusal.
    pub fn power_on(&self, vcpu: &Vcpu, entry: u64, context: u64) -> Result<(), i64> {
        use microvisor_logic::psci::status;
        if *self.lifecycle.lock() != Lifecycle::Running {
            return Err(status::INTERNAL_FAILURE);
        }
        let mut power = vcpu.power.lock();
        match *power {
            Power::On => Err(status::ALREADY_ON),
            Power::OnPending { .. } => Err(status::ON_PENDING),
            Power::Off => {
                *power = Power::OnPending { entry, context };
                drop(power);
                self.kick(VcpuSet::EMPTY.with(vcpu.index));
                Ok(())
            }
        }
    }

    /// Parks the calling core (which runs `vcpu`) until the vCPU is powered on, then returns
    /// the frame to enter it with. Called with the vCPU already OFF.
    pub fn wait_for_start(&self, vcpu: &Vcpu) -> GuestFrame {
        self.quiesce(vcpu);
        loop {
            crate::irq::handle_pending(None);
            {
                let mut power = vcpu.power.lock();
                if let Power::OnPending { entry, context } = *power {
                    *power = Power::On;
                    drop(power);
                    self.quiesce(vcpu);
                    return GuestFrame::entry(entry, context);
                }
            }
            cpu::wait_for_interrupt();
        }
    }

    /// Puts the calling core's vCPU state back to reset: EL1 timer off, no interrupt in
    /// flight (physical ones linked to its list registers are deactivated), virtual CPU
    /// interface reset. Called on the vCPU's own core when it stops and before it starts.
    fn quiesce(&self, vcpu: &Vcpu) {
        virt::reset_el1();
        let in_flight = self.vgic.lock().reset_vcpu(vcpu.index);
        in_flight.into_iter().for_each(gic::deactivate);
        vgic::reset();
        vcpu.underflow.store(false, Ordering::Relaxed);
    }

    /// Powers `vcpu` (the caller's) off and parks until it is powered on again; `frame` then
    /// holds the new entry state.
    pub fn park(&self, vcpu: &Vcpu, frame: &mut GuestFrame) {
        *vcpu.power.lock() = Power::Off;
        *frame = self.wait_for_start(vcpu);
    }

    /// Makes the cores of `vcpus` (other than this one) look at their vCPU again.
    pub fn kick(&self, vcpus: VcpuSet) {
        let here = cpu::core_index();
        for index in vcpus.iter() {
            if let Some(vcpu) = self.vcpus.get(index).filter(|v| v.core != here) {
                gic::send_hypervisor_sgi(vcpu.mpidr);
            }
        }
    }

    /// Runs `change` on the slice's virtual GIC and kicks the vCPUs it names.
    pub fn with_gic(&self, change: impl FnOnce(&mut VirtualGic) -> VcpuSet) {
        let kick = change(&mut self.vgic.lock());
        self.kick(kick);
    }

    /// Brings the calling core's list registers up to date with `vcpu`'s virtual interrupts.
    /// Called before every return to the guest.
    pub fn sync_interrupts(&self, vcpu: &Vcpu) {
        let mut gic = self.vgic.lock();
        if !gic.needs_sync(vcpu.index) {
            if vcpu.underflow.swap(false, Ordering::Relaxed) {
                vgic::set_control(false);
            }
            return;
        }
        let count = vgic::list_register_count().min(MAX_LIST_REGISTERS);
        let mut registers = [0u64; MAX_LIST_REGISTERS];
        for (n, value) in registers.iter_mut().enumerate().take(count) {
            *value = vgic::read_list_register(n);
        }
        let update = gic.sync_list_registers(vcpu.index, &mut registers[..count]);
        drop(gic);
        for (n, &value) in registers.iter().enumerate().take(count) {
            if update.changed & (1 << n) != 0 {
                vgic::write_list_register(n, value);
            }
        }
        vcpu.injected
            .fetch_add(u64::from(update.changed.count_ones()), Ordering::Relaxed);
        if vcpu.underflow.swap(update.underflow, Ordering::Relaxed) != update.underflow {
            vgic::set_control(update.underflow);
        }
    }

    /// Routes each hardware queue's completion interrupt to the core of the vCPU that will
    /// most likely handle it (queue i to vCPU i mod n, as Linux spreads queues over CPUs).
    pub fn route_disk_interrupts(&self) -> Result<(), crate::nvme::physical::NvmeError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let device = u32::from(disk.physical.bdf.requester_id());
        for (i, queue) in disk.state.lock().queues.iter().enumerate() {
            let core = self.vcpus[i % self.vcpus.len()].core;
            crate::nvme::route_event(device, u32::from(queue.pair.id), queue.lpi, core)?;
        }
        Ok(())
    }

    /// Raises the virtual SPIs the slice's NVMe function signalled.
    pub fn deliver(&self, signals: &Signals) {
        if signals.spis().is_empty() {
            return;
        }
        self.with_gic(|gic| {
            signals
                .spis()
                .iter()
                .fold(microvisor_logic::vgic::VcpuSet::EMPTY, |kick, &spi| {
                    kick.union(gic.raise(0, spi))
                })
        });
    }

    /// A guest access to its PCIe configuration space.
    pub fn pci_config_access(&self, offset: u64, width: u8, write: Option<u64>) -> u64 {
        let Some(disk) = &self.disk else {
            return u64::MAX;
        };
        let mut signals = Signals::default();
        let value = disk.config_access(&self.memory.region, offset, width, write, &mut signals);
        self.deliver(&signals);
        value
    }

    /// A guest access to `ipa` if it is in its NVMe function's BAR0.
    pub fn nvme_access(&self, ipa: u64, width: u8, write: Option<u64>) -> Option<u64> {
        let disk = self.disk.as_ref()?;
        let mut signals = Signals::default();
        let value = disk.bar_access(&self.memory.region, ipa, width, write, &mut signals);
        self.deliver(&signals);
        value
    }

    /// Completions arrived on hardware queue `queue` (if it is this slice's).
    pub fn nvme_completions(&self, queue: u16) -> bool {
        let Some(disk) = self.disk.as_ref().filter(|d| d.owns_queue(queue)) else {
            return false;
        };
        let mut signals = Signals::default();
        disk.completions(&self.memory.region, queue, &mut signals);
        self.deliver(&signals);
        true
    }

    /// Seconds of counter time since the current run started.
    pub fn uptime_ticks(&self) -> u64 {
        cpu::counter().saturating_sub(self.started_at.load(Ordering::Relaxed))
    }

    /// Called on every return to the guest: if the slice is stopping, park instead.
    pub fn check_stop(&self, vcpu: &Vcpu, frame: &mut GuestFrame) {
        if self.stop_requested.load(Ordering::Acquire) {
            self.park(vcpu, frame);
        }
    }

    /// Ends this run of the slice from `vcpu` (the calling core's): stops every vCPU, reports,
    /// then either leaves the slice stopped or restarts it from its pristine images. The
    /// caller's core parks; `frame` holds whatever it runs next.
    pub fn end(&self, vcpu: &Vcpu, ending: Ending, frame: &mut GuestFrame) {
        {
            let mut lifecycle = self.lifecycle.lock();
            if *lifecycle != Lifecycle::Running {
                // Another vCPU is already ending this run.
                drop(lifecycle);
                self.park(vcpu, frame);
                return;
            }
            *lifecycle = Lifecycle::Stopping;
            self.stop_requested.store(true, Ordering::Release);
        }
        *vcpu.power.lock() = Power::Off;
        self.stop_other_vcpus();
        self.flush_console();

        let restart = match &ending {
            Ending::Reset => {
                console::hv(format_args!(
                    "slice {} restarted: PSCI SYSTEM_RESET",
                    self.name
                ));
                true
            }
            Ending::PowerOff => {
                console::hv(format_args!(
                    "slice {} stopped: powered off (PSCI SYSTEM_OFF)",
                    self.name
                ));
                false
            }
            Ending::Fault(reason) => {
                console::hv(format_args!("slice {} stopped: {}", self.name, reason));
                self.on_fault == OnFault::Restart
            }
        };
        console::print_slice_exit_counters(self);
        // The device may still be writing the slice's RAM for commands it had in flight: wait
        // for them before anything reuses that RAM.
        let drained = self
            .disk
            .as_ref()
            .is_none_or(|d| d.reset_and_drain(&self.memory.region, 5000));
        if !drained {
            console::hv(format_args!(
                "slice {} stays stopped: its NVMe commands did not drain",
                self.name
            ));
        }
        let restart = restart && drained;
        if restart {
            if matches!(ending, Ending::Fault(_)) {
                console::hv(format_args!(
                    "slice {} restarted (on-fault = restart)",
                    self.name
                ));
            }
            if let Err(error) = self.load().and_then(|()| self.start()) {
                console::hv(format_args!(
                    "slice {} stopped: restart failed: {error}",
                    self.name
                ));
                *self.lifecycle.lock() = Lifecycle::Stopped;
            }
        } else {
            *self.lifecycle.lock() = Lifecycle::Stopped;
        }
        *frame = self.wait_for_start(vcpu);
    }

    /// Cancels pending starts and interrupts every running vCPU of the slice, then waits until
    /// all are parked.
    fn stop_other_vcpus(&self) {
        let second = cpu::counter_frequency().max(1);
        let mut last_kick = 0;
        let mut reported = false;
        let start = cpu::counter();
        loop {
            let now = cpu::counter();
            let kick = now.wrapping_sub(last_kick) > second / 1000;
            let mut running = 0;
            for other in &self.vcpus {
                let mut power = other.power.lock();
                match *power {
                    Power::OnPending { .. } => *power = Power::Off,
                    Power::On => {
                        running += 1;
                        if kick {
                            gic::send_hypervisor_sgi(other.mpidr);
                        }
                    }
                    Power::Off => {}
                }
            }
            if running == 0 {
                return;
            }
            if kick {
                last_kick = now;
            }
            if !reported && now.wrapping_sub(start) > second {
                reported = true;
                console::fatal(format_args!(
                    "slice {}: {running} vCPU(s) do not answer the stop request",
                    self.name
                ));
            }
            cpu::spin_hint();
        }
    }

    fn flush_console(&self) {
        let mut uart = self.uart.lock();
        if !uart.line.is_empty() {
            console::slice_line(&self.name, uart.line.take());
        }
    }

    /// Emulates an access to the slice's PL011 at `offset`; returns the value for a read.
    pub fn uart_access(&self, offset: u64, write: Option<u64>) -> u64 {
        let mut uart = self.uart.lock();
        let value = match write {
            Some(value) => {
                if let Some(byte) = uart.device.write(offset, value as u32)
                    && let Some(line) = uart.line.push(byte)
                {
                    console::slice_line(&self.name, line);
                }
                0
            }
            None => {
                let value = uart.device.read(offset);
                uart.refill();
                u64::from(value)
            }
        };
        self.set_uart_level(&uart);
        value
    }

    /// A byte typed on the node console while this slice has the focus.
    pub fn console_input(&self, byte: u8) {
        let mut uart = self.uart.lock();
        if uart.pending_input.len() < INPUT_BUFFER {
            uart.pending_input.push_back(byte);
        }
        uart.refill();
        self.set_uart_level(&uart);
    }

    /// Copies the PL011's interrupt output to the virtual GIC. The caller holds the UART lock
    /// until this is done: two cores (a vCPU reading DR, the core taking console input) that
    /// computed their levels under the lock but applied them after it could otherwise leave
    /// the line low with bytes in the FIFO, and the guest would never read them.
    fn set_uart_level(&self, uart: &Uart) {
        let level = uart.device.interrupt_pending();
        self.with_gic(|gic| gic.set_level(UART_INTID, level));
    }
}
