//! A slice's lifecycle: `Running`, `Stopping` while every vCPU parks, `Stopped`; a run starts
//! with vCPU 0 at the kernel entry and ends by a fault, SYSTEM_OFF or SYSTEM_RESET, on the core
//! that saw the cause. The cores themselves park and resume in `crate::run`.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::Ordering;

use microvisor_arch::{cpu, gic, virt};
use microvisor_logic::psci::status;
use microvisor_logic::vgic::VcpuSet;
use microvisor_plan::model::OnFault;

use super::{SetupError, Slice};
use crate::output;
use crate::vcpu::{Power, Vcpu};

/// [`Slice::attention`] bit: the run is ending, every vCPU parks.
const STOP: u8 = 1;
/// [`Slice::attention`] bit: another core asked for the run to end ([`Slice::request_end`]).
const END: u8 = 2;

/// How long the core ending a run waits for the slice's other vCPUs to park.
const STOP_TIMEOUT_MS: u64 = 5000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lifecycle {
    Running,
    /// A stop or restart is in progress: every vCPU parks.
    Stopping,
    Stopped,
    /// The manager asked for a start: vCPU 0's core scrubs and loads, then runs it.
    Starting,
    /// vCPU 0's core is wiping the NVMe share.
    Erasing,
    /// A vCPU did not park when a run ended: the slice cannot be started again.
    Broken,
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
    /// The manager ended the run (docs/control.md).
    Manager(ManagerAction),
}

impl Ending {
    /// Why the run ended, as the node console (`[hv] slice <name> stopped: <reason>`) and the
    /// manager's status (`last_stop`) say it.
    pub fn reason(&self) -> String {
        match self {
            Ending::PowerOff => "powered off (PSCI SYSTEM_OFF)".into(),
            Ending::Reset => "PSCI SYSTEM_RESET".into(),
            Ending::Fault(reason) => reason.clone(),
            Ending::Manager(ManagerAction::Off) => "forced off by the manager".into(),
            Ending::Manager(ManagerAction::Restart) => "forced restart by the manager".into(),
            Ending::Manager(ManagerAction::ShutdownTimedOut { ms }) => {
                format!("not off {ms} ms after the power key, forced off by the manager")
            }
        }
    }
}

/// What the manager asked of a running slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManagerAction {
    Off,
    Restart,
    /// A graceful shutdown of `ms` milliseconds ran out.
    ShutdownTimedOut {
        ms: u64,
    },
}

/// What a vCPU does once an exit has been handled.
pub enum Next {
    /// Resume the guest.
    Resume,
    /// This vCPU powered itself off (PSCI CPU_OFF): its core parks.
    CpuOff,
    /// The slice's run ends; this core parks afterwards.
    End(Ending),
}

/// What a vCPU must do before it returns to its guest.
pub enum Attention {
    /// Nothing: resume.
    None,
    /// The run is ending: park.
    Park,
    /// End the run (asked for by another core).
    End(Ending),
}

/// vCPUs that did not park when a run ended.
struct Unresponsive {
    vcpus: VcpuSet,
}

impl Slice {
    /// Scrubs the slice's RAM and copies its boot source into it; the scrub's cost goes into
    /// its stats. Returns where what it loaded is entered: (kernel entry, device tree), read
    /// under the same lock as the copy, so a boot source the manager sets meanwhile (`BOOT`)
    /// takes effect at the next load and never mixes with this one (until 2026-12-04 the
    /// start read them again afterwards; found in review).
    pub fn load(&self) -> Result<(u64, u64), SetupError> {
        // Nothing of an earlier run may still be writing the RAM about to be scrubbed.
        self.devices
            .drained(&self.context())
            .map_err(|what| format!("slice \"{}\": {what}", self.name))?;
        let begin = cpu::counter();
        let images = self.images.lock();
        if let Some(flash) = &self.firmware {
            flash.prepare(images.network_first);
        }
        let loaded = images.load(&self.memory.ram, self.pool.as_deref());
        let entry = (images.layout.kernel_ipa, images.layout.dtb_ipa);
        drop(images);
        let ticks = cpu::counter().saturating_sub(begin);
        self.stats
            .lock()
            .scrubbed(self.memory.ram.region().size, ticks);
        loaded
            .map(|()| entry)
            .map_err(|_| format!("slice \"{}\": images do not fit its memory", self.name))
    }

    /// Starts a run: devices and vGIC in their power-on state, vCPU 0 powered on at `entry`
    /// (the kernel entry and device tree of the images [`Slice::load`] loaded).
    pub fn start(&self, (entry, dtb): (u64, u64)) -> Result<(), SetupError> {
        // Every vCPU is off (a start left pending by the last run is dropped): nothing of it
        // may run into this one.
        if let Some(on) = self.vcpus.iter().find(|v| v.cancel_pending()) {
            return Err(format!(
                "slice \"{}\": vCPU {} is still on from the last run",
                self.name, on.index
            ));
        }
        self.devices.reset();
        self.gic.reset();
        // Exit counters count this run (the previous run's were printed when it ended).
        self.vcpus.iter().for_each(|v| v.exits.reset());
        self.started_at.store(cpu::counter(), Ordering::Relaxed);
        *self.end_request.lock() = None;
        self.shutdown_deadline.store(0, Ordering::Relaxed);
        self.stats.lock().starts += 1;
        *self.lifecycle.lock() = Lifecycle::Running;
        self.attention.store(0, Ordering::Release);
        self.power_on(&self.vcpus[0], entry, dtb)
            .map_err(|status| format!("slice \"{}\": vCPU 0 did not start ({status})", self.name))
    }

    /// PSCI CPU_ON semantics: marks `vcpu` ON_PENDING with its entry and wakes its core.
    /// Returns the PSCI status on refusal. The lifecycle lock is held until the vCPU is
    /// pending, so a run that starts ending meanwhile ([`Slice::end`] sets `Stopping` under
    /// it) sees the pending start and cancels it; until 2026-12-04 a CPU_ON racing the end
    /// could leave its target pending into the next run (found in review).
    pub fn power_on(&self, vcpu: &Vcpu, entry: u64, context: u64) -> Result<(), i64> {
        let lifecycle = self.lifecycle.lock();
        if *lifecycle != Lifecycle::Running {
            return Err(status::INTERNAL_FAILURE);
        }
        let requested = vcpu.request_on(entry, context);
        drop(lifecycle);
        match requested {
            Ok(()) => {
                self.gic.kick(VcpuSet::EMPTY.with(vcpu.index));
                Ok(())
            }
            Err(Power::OnPending { .. }) => Err(status::ON_PENDING),
            Err(_) => Err(status::ALREADY_ON),
        }
    }

    /// Stops `vcpu` on its own (the calling) core: its EL1 timer off, every physical interrupt
    /// it had in flight deactivated, its CPU interface reset, and only then OFF. A core ending
    /// the run waits for OFF before it may restart the slice (which resets the vGIC state), so
    /// an interrupt the guest never finished cannot stay active on the core for good.
    pub fn stop_vcpu_here(&self, vcpu: &Vcpu) {
        virt::reset_el1();
        self.gic.quiesce(vcpu.index);
        vcpu.set_off();
    }

    /// Whether [`Slice::attention`] has something to say (one atomic load).
    pub fn needs_attention(&self) -> bool {
        self.attention.load(Ordering::Acquire) != 0
    }

    /// What the calling vCPU must do before it returns to the guest (checked on every return:
    /// one atomic load when there is nothing to do).
    pub fn attention(&self) -> Attention {
        let bits = self.attention.load(Ordering::Acquire);
        if bits == 0 {
            return Attention::None;
        }
        if bits & STOP != 0 {
            return Attention::Park;
        }
        // Whoever takes the request ends the run; the others find it gone.
        match self.end_request.lock().take() {
            Some(ending) => Attention::End(ending),
            None => Attention::None,
        }
    }

    /// Asks for the run to end with `ending`, from any core (e.g. the one that took a device's
    /// fault interrupt): every vCPU is interrupted and the first to see the request ends the
    /// run on its own core, as if it had faulted itself. Ignored unless the slice is running
    /// or when an ending is already asked for (false then).
    pub fn request_end(&self, ending: Ending) -> bool {
        let lifecycle = self.lifecycle.lock();
        if *lifecycle != Lifecycle::Running {
            return false;
        }
        {
            let mut request = self.end_request.lock();
            if request.is_some() {
                return false;
            }
            *request = Some(ending);
        }
        drop(lifecycle);
        self.attention.fetch_or(END, Ordering::AcqRel);
        for vcpu in &self.vcpus {
            gic::send_hypervisor_sgi(vcpu.mpidr);
        }
        true
    }

    /// Ends this run of the slice from `vcpu` (the calling core's, stopped here): stops
    /// every other vCPU, quiesces the devices, reports, then either leaves the slice stopped or
    /// restarts it from its pristine images (vCPU 0 ON_PENDING, perhaps this very one). The
    /// caller's core goes back to its run loop afterwards without touching the vCPU's state.
    /// Returns the number of the run it started when it restarted the slice (runs are counted
    /// since the node booted, the first one is 1).
    pub fn end(&self, vcpu: &Vcpu, ending: Ending) -> Option<u64> {
        self.stop_vcpu_here(vcpu);
        let ending = {
            let mut lifecycle = self.lifecycle.lock();
            if *lifecycle != Lifecycle::Running {
                // Another vCPU is already ending this run.
                return None;
            }
            *lifecycle = Lifecycle::Stopping;
            self.attention.store(STOP, Ordering::Release);
            // An ending asked for and accepted but not yet taken (the manager's off or
            // restart, a device's fault) wins over the caller's own: until 2026-12-04 a
            // guest's SYSTEM_RESET dropped it and restarted a slice the manager had been told
            // was going off (found in review).
            self.end_request.lock().take().unwrap_or(ending)
        };
        let stopped = self.stop_other_vcpus();
        let quiet = self.devices.quiesce(&self.context());

        // The ending itself restarts the slice (a reset), or on-fault = "restart" does.
        let restarted = matches!(
            ending,
            Ending::Reset | Ending::Manager(ManagerAction::Restart)
        );
        let restart =
            restarted || (matches!(ending, Ending::Fault(_)) && self.on_fault == OnFault::Restart);
        let verb = if restarted { "restarted" } else { "stopped" };
        output::hv(format_args!(
            "slice {} {verb}: {}",
            self.name,
            ending.reason()
        ));
        self.shutdown_deadline.store(0, Ordering::Relaxed);
        self.stats.lock().ended(&ending);
        self.report_exits();
        if let Err(Unresponsive { vcpus }) = stopped {
            for index in vcpus.iter() {
                output::hv(format_args!(
                    "slice {} stays stopped: vCPU {index} (core {}) did not stop within {STOP_TIMEOUT_MS} ms",
                    self.name, self.vcpus[index].core
                ));
            }
            // The stop request stays up: the vCPU parks whenever it next exits.
            *self.lifecycle.lock() = Lifecycle::Broken;
            return None;
        }
        if let Err(what) = quiet {
            output::hv(format_args!("slice {} stays stopped: {what}", self.name));
            *self.lifecycle.lock() = Lifecycle::Stopped;
            return None;
        }
        if restart {
            if matches!(ending, Ending::Fault(_)) {
                output::hv(format_args!(
                    "slice {} restarted (on-fault = restart)",
                    self.name
                ));
            }
            if let Err(error) = self.load().and_then(|entry| self.start(entry)) {
                output::hv(format_args!(
                    "slice {} stopped: restart failed: {error}",
                    self.name
                ));
                *self.lifecycle.lock() = Lifecycle::Stopped;
                return None;
            }
            Some(self.stats.lock().starts)
        } else {
            *self.lifecycle.lock() = Lifecycle::Stopped;
            None
        }
    }

    /// Cancels pending starts and interrupts every running vCPU of the slice, then waits until
    /// all are parked, re-sending the interrupt every millisecond; gives up after
    /// [`STOP_TIMEOUT_MS`] with the vCPUs still running.
    fn stop_other_vcpus(&self) -> Result<(), Unresponsive> {
        let hz = cpu::counter_frequency().max(1);
        let start = cpu::counter();
        let mut last_kick = None;
        loop {
            let now = cpu::counter();
            let kick = last_kick.is_none_or(|at: u64| now.wrapping_sub(at) > hz / 1000);
            let mut running = VcpuSet::EMPTY;
            for other in &self.vcpus {
                if other.cancel_pending() {
                    running = running.with(other.index);
                    if kick {
                        gic::send_hypervisor_sgi(other.mpidr);
                    }
                }
            }
            if running.is_empty() {
                return Ok(());
            }
            if kick {
                last_kick = Some(now);
            }
            if now.wrapping_sub(start) > hz * STOP_TIMEOUT_MS / 1000 {
                return Err(Unresponsive { vcpus: running });
            }
            cpu::spin_hint();
        }
    }
}
