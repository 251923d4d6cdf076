//! A slice's virtual GIC at run time: the emulated state (`microvisor_logic::vgic`) under one
//! lock, the kicks that make other cores look at it, and the list registers of the core that
//! runs each vCPU.
//!
//! Every return to a guest brings its list registers up to date ([`SliceGic::sync`]), but a
//! pass over them (the lock, the hardware registers, the state) runs only when it can change
//! something: when the vCPU's interrupts changed since its last pass (a flag each change sets,
//! under the lock, before the kick) or when the guest finished an interrupt the last pass
//! loaded (ICH_ELRSR_EL2/ICH_EISR_EL2 against the registers that pass left loaded). Otherwise
//! the check is two loads and at most one register read, with no lock.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};

use microvisor_arch::memory::SharedMemory;
use microvisor_arch::{cpu, gic, vgic};
use microvisor_logic::bits::members;
use microvisor_logic::vgic::{
    ListRegisterUpdate, MAX_LIST_REGISTERS, VcpuSet, VirtualGic, hardware_in_flight,
};
use microvisor_logic::vits::{Home, HostCommand, Residency, VirtualIts};
use spin::Mutex;

/// Where each vCPU runs, and its core's list-register bookkeeping. Only `changed` is written
/// by other cores; the rest belongs to the vCPU's own core (atomics only so the slot can be
/// shared, all accesses relaxed).
struct VcpuSlot {
    core: usize,
    mpidr: u64,
    /// The vCPU's interrupts changed since its last list-register pass: set under the state
    /// lock by whoever changed them (before any kick), cleared by the vCPU's core before a pass.
    changed: AtomicBool,
    /// List registers holding an interrupt after the last pass (bit n: ICH_LR<n>_EL2).
    loaded: AtomicU16,
    /// ICH_HCR_EL2.UIE as last written (to skip needless writes).
    underflow: AtomicBool,
    /// Virtual interrupts made pending in this vCPU's list registers.
    injected: AtomicU64,
}

/// The GICv4 residency of a vCPU's vPE, apart from [`VcpuSlot`] (which the exit paths index:
/// it stays 32 bytes).
struct VpeSlot {
    /// A request to make the vPE resident (direct injection): the guest's LPI property
    /// table's physical address | its INTID bits; 0 = none. Set by whoever emulated the
    /// guest's EnableLPIs, taken by the vCPU's own core (at once, on the residency SGI, or
    /// before the vCPU next enters the guest).
    request: AtomicU64,
    /// The request the vPE is resident with on the core (0: not resident; the core's own
    /// business).
    resident: AtomicU64,
}

/// The node's physical ITS and virtual pending tables, as a slice's vGIC needs them for GICv4
/// direct injection (the node's LPIs, `crate::nvme::lpis::Lpis`, handed in at construction).
pub trait DirectInjection: Send + Sync {
    /// Issues the physical commands a vITS asked for, in order; `core_of` gives the core of
    /// each of the slice's vCPUs (the core index is its vPE ID).
    fn issue(
        &self,
        commands: &[HostCommand],
        core_of: &dyn Fn(usize) -> Option<usize>,
    ) -> Result<(), &'static str>;

    /// The virtual pending table of `core`'s vPE.
    fn virtual_pending_table(&self, core: usize) -> Option<&SharedMemory>;
}

/// The slice's virtual GICv3.
pub struct SliceGic {
    state: Mutex<VirtualGic>,
    vcpus: Vec<VcpuSlot>,
    vpes: Vec<VpeSlot>,
    /// The node's ITS, when the slice's assigned functions' MSIs are vLPIs.
    direct: Option<Arc<dyn DirectInjection>>,
}

impl SliceGic {
    /// A GIC for vCPUs on `cores` (core index, MPIDR), owning `spis` (INTIDs), with
    /// message-based SPIs if `mbi`, or LPIs from the virtual ITS `its` (GICv4 nodes), whose
    /// assigned functions' translations go to `direct`.
    pub fn new(
        cores: &[(usize, u64)],
        spis: &[u32],
        mbi: bool,
        its: Option<VirtualIts>,
        direct: Option<Arc<dyn DirectInjection>>,
    ) -> Self {
        let state = VirtualGic::new(cores.len(), spis);
        let state = match its {
            Some(its) => state.with_its(its),
            None if mbi => state.with_mbi(),
            None => state,
        };
        Self {
            state: Mutex::new(state),
            vcpus: cores
                .iter()
                .map(|&(core, mpidr)| VcpuSlot {
                    core,
                    mpidr,
                    changed: AtomicBool::new(true),
                    loaded: AtomicU16::new(0),
                    underflow: AtomicBool::new(false),
                    injected: AtomicU64::new(0),
                })
                .collect(),
            vpes: cores
                .iter()
                .map(|_| VpeSlot {
                    request: AtomicU64::new(0),
                    resident: AtomicU64::new(0),
                })
                .collect(),
            direct,
        }
    }

    /// Runs `change` on the state and kicks the vCPUs it names (it names those whose
    /// interrupts it changed).
    pub fn change(&self, change: impl FnOnce(&mut VirtualGic) -> VcpuSet) {
        let touched = {
            let mut state = self.state.lock();
            let touched = change(&mut state);
            for index in touched.iter() {
                if let Some(slot) = self.vcpus.get(index) {
                    slot.changed.store(true, Ordering::Release);
                }
            }
            touched
        };
        self.kick(touched);
    }

    /// A physical PPI of the core that runs `vcpu` (its timers) fired: the virtual PPI
    /// `intid` becomes pending, linked to the physical one. Called on that core, so nobody
    /// needs a kick; when nothing else waits for the vCPU it goes straight back into the list
    /// register it last used (`VirtualGic::reload_hardware`), else the next sync's pass
    /// loads it.
    pub fn raise_own_hardware(&self, vcpu: usize, intid: u32) {
        let Some(slot) = self.vcpus.get(vcpu) else {
            return;
        };
        let mut state = self.state.lock();
        if let Some((n, value)) =
            state.reload_hardware(vcpu, intid, intid, vgic::read_list_register)
        {
            drop(state);
            vgic::write_list_register(n, value);
            let injected = slot.injected.load(Ordering::Relaxed);
            slot.injected.store(injected + 1, Ordering::Relaxed);
            return;
        }
        let touched = state.raise_hardware(vcpu, intid, intid);
        drop(state);
        if touched.contains(vcpu) {
            slot.changed.store(true, Ordering::Release);
        }
    }

    /// Makes `vcpu`'s next [`sync`](Self::sync) a full pass (e.g. after a maintenance
    /// interrupt, whose condition only a pass clears).
    pub fn resync(&self, vcpu: usize) {
        if let Some(slot) = self.vcpus.get(vcpu) {
            slot.changed.store(true, Ordering::Relaxed);
        }
    }

    /// Makes the cores of `vcpus` (other than this one) look at their vCPU again.
    #[inline] // on an exit path: inlined even under the image's lower inline threshold
    pub fn kick(&self, vcpus: VcpuSet) {
        let here = cpu::core_index();
        for index in vcpus.iter() {
            if let Some(slot) = self.vcpus.get(index).filter(|v| v.core != here) {
                gic::send_hypervisor_sgi(slot.mpidr);
            }
        }
    }

    /// Raises edge-triggered `spis` (message-based interrupts of the slice's devices).
    pub fn raise_spis(&self, spis: &[u32]) {
        if spis.is_empty() {
            return;
        }
        self.change(|gic| {
            spis.iter()
                .fold(VcpuSet::EMPTY, |kick, &spi| kick.union(gic.raise(0, spi)))
        });
    }

    /// Device `device` (the guest's DeviceID) sent `events` to the slice's vITS doorbell:
    /// each translated LPI becomes pending (nothing happens without a vITS, or for events
    /// the guest has not mapped).
    pub fn its_messages(&self, device: u32, events: &[u32]) {
        if events.is_empty() {
            return;
        }
        self.change(|gic| {
            let Some(its) = gic.its_mut() else {
                return VcpuSet::EMPTY;
            };
            let kick = events.iter().fold(VcpuSet::EMPTY, |kick, &event| {
                kick.union(its.translate(device, event).unwrap_or_default())
            });
            gic.lpis_changed(kick)
        });
    }

    /// The guest enabled the LPIs of a vCPU on a slice with assigned functions: its core makes
    /// the vCPU's vPE resident (`arch::gic::make_vpe_resident`), so the physical ITS delivers
    /// its vLPIs with no exit: this core at once if it is the vCPU's, else the vCPU's core
    /// on the residency SGI.
    pub fn request_residency(&self, residency: Residency) {
        let (Some(slot), Some(vpe)) = (
            self.vcpus.get(residency.vcpu),
            self.vpes.get(residency.vcpu),
        ) else {
            return;
        };
        let request = residency.properties.0 | u64::from(residency.id_bits);
        vpe.request.store(request, Ordering::Release);
        if slot.core == cpu::core_index() {
            self.take_residency(residency.vcpu);
        } else {
            gic::send_residency_sgi(slot.mpidr);
        }
    }

    /// Whether the physical ITS may deliver the slice's devices' interrupts to its vPEs
    /// (GICv4 direct injection: assigned functions, or direct NVMe queues).
    pub fn direct_injection(&self) -> bool {
        self.direct.is_some()
    }

    /// Makes hardware events of the slice's shared device `device` (the NVMe share) follow
    /// guest events, or stop following them (decision 5, step 3): each [`EventLink`] unlinks
    /// its old guest event and links its new one; the vITS then has the physical ITS deliver
    /// the hardware event to the guest's vLPI while the guest translates the event (else to
    /// the hypervisor's LPI, the link's home, on the core of vCPU `index` mod vCPUs, where
    /// the boot routed it).
    pub fn relink(&self, device: u32, links: &[EventLink]) {
        if links.is_empty() || self.direct.is_none() {
            return;
        }
        let mut state = self.state.lock();
        let Some(its) = state.its_mut() else {
            return;
        };
        let mut host = Vec::new();
        for link in links {
            let home = Home {
                lpi: link.lpi,
                vcpu: link.index % self.vcpus.len().max(1),
            };
            // A refusal (an event beyond the function's, or one another hardware event
            // already follows) leaves the hardware event home: its interrupts keep their
            // exit. The guest chose it; nothing printed.
            if link.old.is_some()
                && let Ok(commands) = its.unlink_hardware(device, link.hardware)
            {
                host.extend(commands);
            }
            if let Some(event) = link.new
                && let Ok(commands) = its.link(device, event, Some((link.hardware, home)))
            {
                host.extend(commands);
            }
            // An interrupt that arrived while the event moved was dropped with its old
            // mapping: one more, wherever it goes now, finds whatever the CQ holds (found in
            // review; a spurious one costs the receiver a look at its CQ).
            host.push(HostCommand::Int {
                device: link.physical_device,
                event: link.hardware,
            });
        }
        self.issue(&host);
    }

    /// Issues on the physical ITS the commands the slice's vITS asked for (assigned
    /// functions' translations), for vPEs on its vCPUs' cores.
    pub fn issue(&self, commands: &[HostCommand]) {
        if commands.is_empty() {
            return;
        }
        let Some(direct) = &self.direct else {
            return;
        };
        if let Err(e) = direct.issue(commands, &|vcpu| self.vcpus.get(vcpu).map(|v| v.core)) {
            crate::output::hv(format_args!("gic: direct injection: {e}"));
        }
    }

    /// Virtual interrupts injected into `vcpu` so far.
    pub fn injected(&self, vcpu: usize) -> u64 {
        self.vcpus
            .get(vcpu)
            .map_or(0, |v| v.injected.load(Ordering::Relaxed))
    }

    /// Back to the power-on state (the slice restarts): the vITS's physical translations are
    /// discarded, no vPE may become resident before its guest enables LPIs again, and the
    /// injection counts start again. Called while no vCPU of the slice runs.
    pub fn reset(&self) {
        let mut state = self.state.lock();
        let host = state.reset();
        self.issue(&host);
        drop(state);
        // No vPE of the slice is resident now (its vCPUs are parked, none took residency
        // there) and no translation names them: their tables start empty. Emptying them at
        // residency instead lost the vLPIs an MSI made pending before the residency SGI
        // arrived (a guest enabling another vCPU's LPIs and using them at once).
        if let Some(direct) = &self.direct {
            for slot in &self.vcpus {
                if let Some(table) = direct.virtual_pending_table(slot.core)
                    && let Err(e) = gic::clear_virtual_pending_table(table)
                {
                    crate::output::hv(format_args!("gic: vPE of core {}: {e:?}", slot.core));
                }
            }
        }
        for slot in &self.vcpus {
            slot.injected.store(0, Ordering::Relaxed);
        }
        for vpe in &self.vpes {
            vpe.request.store(0, Ordering::Relaxed);
        }
    }

    /// Puts the calling core's virtual CPU interface back to reset for `vcpu`: no interrupt in
    /// flight, interface reset. Every physical interrupt the guest would have deactivated is
    /// deactivated here: the hardware-linked ones in this core's list registers (read from the
    /// hardware, so a reset of the slice's vGIC state cannot hide them) and the ones the state
    /// still held pending for the vCPU. Called on the vCPU's own core when it stops, before
    /// anything resets the slice's vGIC, and again before it starts.
    pub fn quiesce(&self, vcpu: usize) {
        let mut in_flight = self.state.lock().reset_vcpu(vcpu);
        let count = vgic::list_register_count().min(MAX_LIST_REGISTERS);
        in_flight
            .extend((0..count).filter_map(|n| hardware_in_flight(vgic::read_list_register(n))));
        microvisor_plan::sort::sort(&mut in_flight);
        in_flight.dedup();
        in_flight.into_iter().for_each(gic::deactivate);
        vgic::reset();
        // A resident vPE leaves the core with its vCPU. Its guest's LPIs stay enabled until
        // the slice's vGIC is reset (a restart clears the request), so a vCPU powered on
        // again in the same run (PSCI CPU_OFF, CPU_ON) becomes resident again.
        if let Some(vpe) = self.vpes.get(vcpu) {
            let active = vpe.resident.swap(0, Ordering::Relaxed);
            if active != 0 {
                if let Err(e) = gic::make_vpe_non_resident() {
                    crate::output::hv(format_args!(
                        "gic: vPE of core {}: {e:?}",
                        cpu::core_index()
                    ));
                }
                vpe.request.store(active, Ordering::Relaxed);
            }
        }
        if let Some(slot) = self.vcpus.get(vcpu) {
            slot.underflow.store(false, Ordering::Relaxed);
            slot.loaded.store(0, Ordering::Relaxed);
            slot.changed.store(true, Ordering::Relaxed);
        }
    }

    /// Brings the calling core's list registers up to date with `vcpu`'s virtual interrupts.
    /// Called before every return to the guest; see the module doc for when it does nothing.
    #[inline(always)]
    pub fn sync(&self, vcpu: usize) {
        let Some(slot) = self.vcpus.get(vcpu) else {
            return;
        };
        let loaded = slot.loaded.load(Ordering::Relaxed);
        if !slot.changed.load(Ordering::Acquire)
            && (loaded == 0 || loaded & vgic::finished_list_registers() == 0)
        {
            return;
        }
        self.update(slot, vcpu, loaded);
    }

    /// A pass over the list registers, when [`sync`](Self::sync) found it can change something.
    #[inline(never)]
    fn update(&self, slot: &VcpuSlot, vcpu: usize, loaded: u16) {
        // Cleared before the pass: a change made from now on sets it again and is seen by
        // this pass (under the lock) or the next one.
        slot.changed.store(false, Ordering::Relaxed);
        let count = vgic::list_register_count().min(MAX_LIST_REGISTERS);
        // Most cores have 4 list registers: a small array is cheaper to clear.
        let update = if count <= 4 {
            self.pass::<4>(vcpu, loaded, count)
        } else {
            self.pass::<MAX_LIST_REGISTERS>(vcpu, loaded, count)
        };
        slot.loaded.store(update.loaded, Ordering::Relaxed);
        if update.injected != 0 {
            let injected = slot.injected.load(Ordering::Relaxed);
            slot.injected
                .store(injected + u64::from(update.injected), Ordering::Relaxed);
        }
        if update.underflow {
            // Interrupts wait for a register: keep passing until they are all loaded.
            slot.changed.store(true, Ordering::Relaxed);
        }
        if slot.underflow.load(Ordering::Relaxed) != update.underflow {
            slot.underflow.store(update.underflow, Ordering::Relaxed);
            vgic::set_control(update.underflow);
        }
    }

    /// Makes `vcpu`'s vPE resident on this (its) core if a request waits (see
    /// [`SliceGic::request_residency`]). Only while the vCPU runs here: a vPE resident on a
    /// parked core would outlive the run (`irq` leaves the residency SGI to the vCPU's start).
    #[cold]
    pub fn take_residency(&self, vcpu: usize) {
        let (Some(slot), Some(vpe)) = (self.vcpus.get(vcpu), self.vpes.get(vcpu)) else {
            return;
        };
        let request = vpe.request.swap(0, Ordering::Acquire);
        if request == 0 || vpe.resident.load(Ordering::Relaxed) != 0 {
            return;
        }
        let table = self
            .direct
            .as_ref()
            .and_then(|direct| direct.virtual_pending_table(slot.core));
        let Some(table) = table else { return };
        let (properties, id_bits) = (request & !0xfff, (request & 0x1f) as u8);
        match gic::make_vpe_resident(properties, id_bits, table) {
            Ok(()) => vpe.resident.store(request, Ordering::Relaxed),
            Err(e) => crate::output::hv(format_args!("gic: vPE of core {}: {e:?}", slot.core)),
        }
    }

    /// One pass over `vcpu`'s first `count` (<= N) list registers, `loaded` those the last
    /// pass left holding an interrupt: only they are read (the others hold 0, written so by
    /// that pass or by `quiesce`), the ones the pass changes are written.
    fn pass<const N: usize>(&self, vcpu: usize, loaded: u16, count: usize) -> ListRegisterUpdate {
        let count = count.min(N);
        let mut registers = [0u64; N];
        for n in members(u128::from(loaded)).filter(|&n| n < count) {
            registers[n] = vgic::read_list_register(n);
        }
        let update = self
            .state
            .lock()
            .sync_list_registers(vcpu, &mut registers[..count]);
        for n in members(u128::from(update.changed)).filter(|&n| n < count) {
            vgic::write_list_register(n, registers[n]);
        }
        update
    }
}

/// A hardware event of a shared device and the guest event it follows (see
/// [`SliceGic::relink`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLink {
    /// The hardware queue's place among the slice's: its home vCPU, modulo the vCPUs.
    pub index: usize,
    /// The physical DeviceID, the hardware event and the hypervisor's LPI for it.
    pub physical_device: u32,
    pub hardware: u32,
    pub lpi: u32,
    /// The guest event it followed, and the one it follows now.
    pub old: Option<u32>,
    pub new: Option<u32>,
}
