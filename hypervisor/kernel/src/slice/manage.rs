//! What the manager does to a slice (docs/control.md): power, boot source, console, erase,
//! and the status it reads. Long work (scrubbing and loading for a start, wiping the NVMe
//! share) runs as a [`Job`] on the slice's own vCPU 0 core while the slice is stopped, so the
//! manager's vCPU is never held up by another slice's size.

use alloc::format;
use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::Ordering;

use microvisor_arch::{cpu, gic};
use microvisor_logic::control::{Refusal, Status, hex, json_string};
use microvisor_logic::exits::ExitCause;
use microvisor_logic::nvme::erase::Wipe;

use super::lifecycle::{Ending, Lifecycle, ManagerAction};
use super::{BootImages, Slice, TOTAL};
use crate::output;

/// Work for vCPU 0's core while the slice is not running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// The slice's first start, at node boot: scrub, load the flashed boot source, start.
    FirstStart,
    /// Scrub, load the boot source, start.
    Start,
    /// Wipe the NVMe share, then stay stopped.
    Erase,
}

/// What status reports about a slice's past runs.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Runs started since the node booted.
    pub starts: u64,
    /// Why the last run ended.
    pub last_stop: Option<String>,
    /// Bytes and counter ticks of the last scrub.
    pub scrub: Option<(u64, u64)>,
    /// The last erase's outcome (a JSON object).
    pub last_erase: Option<String>,
    /// The timeout of the graceful shutdown in progress.
    pub shutdown_ms: u64,
}

impl Stats {
    pub fn scrubbed(&mut self, bytes: u64, ticks: u64) {
        self.scrub = Some((bytes, ticks));
    }

    pub fn ended(&mut self, ending: &Ending) {
        self.last_stop = Some(ending.reason());
    }
}

fn ms(ticks: u64) -> u64 {
    ticks.saturating_mul(1000) / cpu::counter_frequency().max(1)
}

impl Slice {
    fn refuse(&self, status: Status, what: impl core::fmt::Display) -> Refusal {
        Refusal::new(status, format_args!("slice \"{}\": {what}", self.name))
    }

    /// Why the slice cannot take a manager request now, for states that are on their way
    /// somewhere.
    fn busy(&self, state: Lifecycle) -> Refusal {
        match state {
            Lifecycle::Broken => self.refuse(
                Status::WrongState,
                "a vCPU did not stop when its last run ended; the node must restart",
            ),
            _ => self.refuse(Status::Busy, format_args!("{}", state_name(state, false))),
        }
    }

    /// The state as status shows it.
    pub fn state_name(&self) -> &'static str {
        let shutting_down = self.shutdown_deadline.load(Ordering::Relaxed) != 0;
        state_name(*self.lifecycle.lock(), shutting_down)
    }

    /// Hands `job` to vCPU 0's core (the slice is stopped: that core waits in its loop).
    fn post_job(&self, job: Job) {
        *self.job.lock() = Some(job);
        gic::send_hypervisor_sgi(self.vcpus[0].mpidr);
    }

    /// Hands the slice's first start to vCPU 0's core at node boot, without waking it
    /// ([`Slice::wake_job_core`] does): the boot core hands out every slice before any core
    /// starts on its own.
    pub fn hand_first_start(&self) {
        *self.lifecycle.lock() = Lifecycle::Starting;
        *self.job.lock() = Some(Job::FirstStart);
    }

    /// Wakes vCPU 0's core for the job handed to it.
    pub fn wake_job_core(&self) {
        gic::send_hypervisor_sgi(self.vcpus[0].mpidr);
    }

    /// Runs the posted job, if any (vCPU 0's core, from its loop). For the first start,
    /// returns the counter ticks it took on this core until vCPU 0 was on (or the start
    /// failed).
    pub fn run_job(&self) -> Option<u64> {
        let job = self.job.lock().take()?;
        match job {
            Job::Start | Job::FirstStart => {
                let begin = cpu::counter();
                let started = self.load().and_then(|entry| self.start(entry));
                let ticks = cpu::counter().saturating_sub(begin);
                match started {
                    Ok(()) => output::hv(format_args!(
                        "slice {} started ({})",
                        self.name,
                        self.scrub_note()
                    )),
                    Err(error) => {
                        output::hv(format_args!("slice {} stopped: {error}", self.name));
                        self.stats.lock().last_stop = Some(error);
                        *self.lifecycle.lock() = Lifecycle::Stopped;
                    }
                }
                return (job == Job::FirstStart).then_some(ticks);
            }
            Job::Erase => {
                // The next tenant reads none of the last one's console output either (found
                // in review), whatever the disk's erase gives.
                self.uart.forget_output();
                let json = match self.disk.as_ref().map(|disk| disk.erase()) {
                    Some(Ok(report)) => {
                        let wipe = match report.wipe {
                            Wipe::WriteZeroes => "write-zeroes",
                            Wipe::ZeroWrites => "zero-writes",
                        };
                        output::hv(format_args!(
                            "slice {} erased: {} MiB by {wipe}, read back as zeros, {} commands in {} ms",
                            self.name,
                            report.bytes >> 20,
                            report.outcome.commands(),
                            report.ms
                        ));
                        format!(
                            "{{\"result\":\"ok\",\"bytes\":{},\"wipe\":\"{wipe}\",\"commands\":{},\"ms\":{}}}",
                            report.bytes,
                            report.outcome.commands(),
                            report.ms
                        )
                    }
                    Some(Err(error)) => {
                        let line = format!("{error}");
                        output::hv(format_args!("slice {} erase failed: {line}", self.name));
                        format!(
                            "{{\"result\":\"error\",\"io_error\":{},\"error\":{}}}",
                            error.is_io_error(),
                            quoted(&line)
                        )
                    }
                    None => "{\"result\":\"error\",\"error\":\"no NVMe share\"}".into(),
                };
                self.stats.lock().last_erase = Some(json);
                *self.lifecycle.lock() = Lifecycle::Stopped;
            }
        }
        None
    }

    /// The last scrub, as the `started` line says it.
    pub fn scrub_note(&self) -> String {
        let (bytes, ticks) = self.stats.lock().scrub.unwrap_or_default();
        format!("RAM scrubbed: {} MiB in {} ms", bytes >> 20, ms(ticks))
    }

    /// `ON`: a stopped slice starts from its boot source.
    pub fn manager_on(&self) -> Result<(), Refusal> {
        let mut lifecycle = self.lifecycle.lock();
        match *lifecycle {
            Lifecycle::Stopped => {
                *lifecycle = Lifecycle::Starting;
                drop(lifecycle);
                self.post_job(Job::Start);
                Ok(())
            }
            Lifecycle::Running => Err(self.refuse(Status::WrongState, "already on")),
            state => Err(self.busy(state)),
        }
    }

    /// `OFF`: a running slice is stopped at once.
    pub fn manager_off(&self) -> Result<(), Refusal> {
        self.manager_end(ManagerAction::Off)
    }

    /// `RESTART`: a running slice restarts at once; a stopped one starts.
    pub fn manager_restart(&self) -> Result<(), Refusal> {
        if *self.lifecycle.lock() == Lifecycle::Stopped {
            return self.manager_on();
        }
        self.manager_end(ManagerAction::Restart)
    }

    fn manager_end(&self, action: ManagerAction) -> Result<(), Refusal> {
        let state = *self.lifecycle.lock();
        match state {
            Lifecycle::Running => {
                if self.request_end(Ending::Manager(action)) {
                    Ok(())
                } else {
                    Err(self.refuse(Status::Busy, "its run is already ending"))
                }
            }
            Lifecycle::Stopped => Err(self.refuse(Status::WrongState, "already off")),
            state => Err(self.busy(state)),
        }
    }

    /// `SHUTDOWN`: presses the power key; the run is forced to end if it is still going
    /// `timeout_ms` from now ([`Slice::check_shutdown`]).
    pub fn manager_shutdown(&self, timeout_ms: u64) -> Result<(), Refusal> {
        let state = *self.lifecycle.lock();
        if state != Lifecycle::Running {
            return Err(if state == Lifecycle::Stopped {
                self.refuse(Status::WrongState, "already off")
            } else {
                self.busy(state)
            });
        }
        let hz = cpu::counter_frequency().max(1);
        let deadline = cpu::counter().saturating_add(timeout_ms.saturating_mul(hz) / 1000);
        // A second request keeps the earlier deadline.
        let first = self
            .shutdown_deadline
            .compare_exchange(0, deadline.max(1), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if first {
            self.stats.lock().shutdown_ms = timeout_ms;
        }
        self.press_power_key();
        output::hv(format_args!(
            "slice {}: power key pressed by the manager ({timeout_ms} ms to power off)",
            self.name
        ));
        Ok(())
    }

    /// Forces the run to end if a graceful shutdown's deadline has passed (any core; one
    /// atomic load when none is asked for).
    #[inline] // on an exit path: inlined even under the image's lower inline threshold
    pub fn check_shutdown(&self) {
        let deadline = self.shutdown_deadline.load(Ordering::Relaxed);
        if deadline == 0 || cpu::counter() < deadline {
            return;
        }
        if self
            .shutdown_deadline
            .compare_exchange(deadline, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let ms = self.stats.lock().shutdown_ms;
            self.request_end(Ending::Manager(ManagerAction::ShutdownTimedOut { ms }));
        }
    }

    /// `ERASE`: a stopped slice's NVMe share is wiped on its own core.
    pub fn manager_erase(&self) -> Result<(), Refusal> {
        if self.disk.is_none() {
            return Err(self.refuse(Status::WrongState, "has no NVMe share to erase"));
        }
        let mut lifecycle = self.lifecycle.lock();
        match *lifecycle {
            Lifecycle::Stopped => {
                *lifecycle = Lifecycle::Erasing;
                drop(lifecycle);
                self.stats.lock().last_erase = None;
                self.post_job(Job::Erase);
                Ok(())
            }
            Lifecycle::Running => Err(self.refuse(Status::WrongState, "is on: power it off first")),
            state => Err(self.busy(state)),
        }
    }

    /// `BOOT`: `images` become the boot source of the next starts; the replaced ones are
    /// returned to the pool.
    pub fn set_boot(
        &self,
        images: BootImages,
    ) -> Result<(), alloc::boxed::Box<(Refusal, BootImages)>> {
        let Some(mut current) = self.images.try_lock() else {
            let refusal = self.refuse(Status::Busy, "is loading its images");
            return Err(alloc::boxed::Box::new((refusal, images)));
        };
        let old = core::mem::replace(&mut *current, images);
        drop(current);
        old.release(self.pool.as_deref());
        Ok(())
    }

    /// The default boot source (the plan's images and command line).
    pub fn flashed_boot(&self) -> Result<BootImages, String> {
        self.boot_images(
            super::ImageBytes::Flashed(self.flashed.kernel),
            self.flashed.initrd.map(super::ImageBytes::Flashed),
            self.flashed.cmdline.clone(),
            false,
        )
        .map_err(|unusable| unusable.why.message())
    }

    /// The flashed firmware, booting from the network first: refused unless the slice boots
    /// firmware that can.
    pub fn network_boot(&self) -> Result<BootImages, String> {
        if !self.firmware.as_ref().is_some_and(|f| f.has_network_boot()) {
            return Err("its flashed kernel is no firmware that boots from the network".into());
        }
        let mut images = self.flashed_boot()?;
        images.network_first = true;
        Ok(images)
    }

    /// The flashed initrd and command line (what `BOOT` keeps unless told otherwise).
    pub fn flashed_initrd(&self) -> Option<super::FlashedImage> {
        self.flashed.initrd
    }

    pub fn flashed_cmdline(&self) -> &str {
        &self.flashed.cmdline
    }

    pub fn flashed_kernel(&self) -> super::FlashedImage {
        self.flashed.kernel
    }

    /// A boot source of this slice from these images.
    pub fn boot_images(
        &self,
        kernel: super::ImageBytes,
        initrd: Option<super::ImageBytes>,
        cmdline: String,
        staged: bool,
    ) -> Result<BootImages, alloc::boxed::Box<super::Unusable>> {
        let nodes = self.devices.nodes();
        let machine = super::Machine {
            name: &self.name,
            vcpus: self.vcpus.len(),
            memory: self.memory.ram.region().size,
            devices: &nodes,
        };
        BootImages::new(
            &machine,
            kernel,
            initrd,
            cmdline,
            staged,
            self.pool.as_deref(),
        )
    }

    /// `CONSOLE_WRITE`: bytes for the slice's UART; how many it took.
    pub fn console_write(&self, bytes: &[u8]) -> usize {
        self.uart.console_input_bytes(bytes, &self.gic)
    }

    /// `CONSOLE_READ`: up to `max` bytes of output from `cursor`.
    pub fn console_read(&self, cursor: u64, max: usize) -> (u64, alloc::vec::Vec<u8>) {
        self.uart.console_read(cursor, max)
    }

    /// The slice's status object (docs/control.md, "Status object").
    pub fn status_json(&self, out: &mut String) {
        let cores: alloc::vec::Vec<u32> = self.vcpus.iter().map(|v| v.core as u32).collect();
        let _ = write!(out, "{{\"name\":");
        json_string(out, &self.name);
        let role = if self.role.is_manager() {
            "manager"
        } else {
            "tenant"
        };
        let _ = write!(
            out,
            ",\"role\":\"{role}\",\"state\":\"{}\",\"cores\":[",
            self.state_name()
        );
        for (i, core) in cores.iter().enumerate() {
            let _ = write!(out, "{}{core}", if i == 0 { "" } else { "," });
        }
        let _ = write!(
            out,
            "],\"memory_bytes\":{},\"nvme\":",
            self.memory.ram.region().size
        );
        match &self.disk {
            Some(disk) => {
                let block = 1u64 << disk.physical.info.lba_shift;
                let _ = write!(
                    out,
                    "{{\"bytes\":{},\"queues\":{}}}",
                    disk.share.blocks * block,
                    disk.share.queues
                );
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"nics\":[");
        if let Some(pci) = &self.pci {
            for (i, function) in pci.assigned().iter().enumerate() {
                let _ = write!(
                    out,
                    "{}{{\"host\":\"{}\",\"slot\":\"00:{:02x}.0\",\"id\":\"{:04x}:{:04x}\",\"mac\":",
                    if i == 0 { "" } else { "," },
                    function.bdf,
                    function.slot,
                    function.ids & 0xffff,
                    function.ids >> 16
                );
                match function.mac() {
                    Some(m) => {
                        let _ = write!(
                            out,
                            "\"{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\"}}",
                            m[0], m[1], m[2], m[3], m[4], m[5]
                        );
                    }
                    None => out.push_str("null}"),
                }
            }
        }
        let running = matches!(*self.lifecycle.lock(), Lifecycle::Running);
        let uptime = if running { ms(self.uptime_ticks()) } else { 0 };
        let stats = self.stats.lock().clone();
        let network_boot = self.firmware.as_ref().is_some_and(|f| f.has_network_boot());
        let _ = write!(
            out,
            "],\"network_boot\":{network_boot},\"uptime_ms\":{uptime},\"starts\":{},\"boot\":",
            stats.starts
        );
        self.boot_json(out);
        out.push_str(",\"last_stop\":");
        match &stats.last_stop {
            Some(reason) => json_string(out, reason),
            None => out.push_str("null"),
        }
        out.push_str(",\"scrub\":");
        match stats.scrub {
            Some((bytes, ticks)) => {
                let _ = write!(out, "{{\"bytes\":{bytes},\"ms\":{}}}", ms(ticks));
            }
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            ",\"last_erase\":{}",
            stats.last_erase.as_deref().unwrap_or("null")
        );
        let _ = write!(
            out,
            ",\"exits\":{{\"total\":{}",
            self.exit_count(TOTAL).unwrap_or(0)
        );
        let causes = ExitCause::ALL.iter().map(|c| c.name());
        let names = causes.chain(self.devices.counters().iter().copied());
        for (selector, name) in names.enumerate() {
            let count = self.exit_count(selector as u64).unwrap_or(0);
            if count != 0 {
                let _ = write!(out, ",");
                json_string(out, name);
                let _ = write!(out, ":{count}");
            }
        }
        out.push_str("}}");
    }

    fn boot_json(&self, out: &mut String) {
        // `null` while the slice loads its images (the lock is held for its whole RAM scrub
        // and copy): a status request never waits for that. Until 2026-12-04 it did, holding
        // the manager's vCPU at EL2 for seconds on a large slice (found in review).
        let Some(images) = self.images.try_lock() else {
            out.push_str("null");
            return;
        };
        let source = match (images.staged, images.network_first) {
            (true, _) => "staged",
            (false, true) => "network",
            (false, false) => "flashed",
        };
        let _ = write!(out, "{{\"source\":\"{source}\",\"kernel\":");
        json_string(out, images.kernel.label());
        let _ = write!(
            out,
            ",\"kernel_bytes\":{},\"kernel_sha256\":\"{}\",\"initrd\":",
            images.kernel.len(),
            hex(&images.kernel.sha256())
        );
        match &images.initrd {
            Some(initrd) => {
                json_string(out, initrd.label());
                let _ = write!(
                    out,
                    ",\"initrd_bytes\":{},\"initrd_sha256\":\"{}\"",
                    initrd.len(),
                    hex(&initrd.sha256())
                );
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"cmdline\":");
        json_string(out, &images.cmdline);
        out.push('}');
    }
}

fn quoted(text: &str) -> String {
    let mut out = String::new();
    json_string(&mut out, text);
    out
}

fn state_name(state: Lifecycle, shutting_down: bool) -> &'static str {
    match state {
        Lifecycle::Running if shutting_down => "shutting-down",
        Lifecycle::Running => "on",
        Lifecycle::Stopping => "stopping",
        Lifecycle::Stopped => "off",
        Lifecycle::Starting => "starting",
        Lifecycle::Erasing => "erasing",
        Lifecycle::Broken => "broken",
    }
}
