//! A slice's virtual GIC at run time: the emulated state (`microvisor_logic::vgic`) under one
//! lock, the kicks that make other cores look at it, and the list registers of the core that
//! runs each vCPU.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use microvisor_arch::{cpu, gic, vgic};
use microvisor_logic::vgic::{MAX_LIST_REGISTERS, VcpuSet, VirtualGic, hardware_in_flight};
use spin::Mutex;

/// Where each vCPU runs, and its core's list-register bookkeeping.
struct VcpuSlot {
    core: usize,
    mpidr: u64,
    /// ICH_HCR_EL2.UIE as last written (to skip needless writes).
    underflow: AtomicBool,
    /// Virtual interrupts written to this vCPU's list registers.
    injected: AtomicU64,
}

/// The slice's virtual GICv3.
pub struct SliceGic {
    state: Mutex<VirtualGic>,
    vcpus: Vec<VcpuSlot>,
}

impl SliceGic {
    /// A GIC for vCPUs on `cores` (core index, MPIDR), owning `spis` (INTIDs), with
    /// message-based SPIs if `mbi`.
    pub fn new(cores: &[(usize, u64)], spis: &[u32], mbi: bool) -> Self {
        let state = VirtualGic::new(cores.len(), spis);
        Self {
            state: Mutex::new(if mbi { state.with_mbi() } else { state }),
            vcpus: cores
                .iter()
                .map(|&(core, mpidr)| VcpuSlot {
                    core,
                    mpidr,
                    underflow: AtomicBool::new(false),
                    injected: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// Runs `change` on the state and kicks the vCPUs it names.
    pub fn change(&self, change: impl FnOnce(&mut VirtualGic) -> VcpuSet) {
        let kick = change(&mut self.state.lock());
        self.kick(kick);
    }

    /// Makes the cores of `vcpus` (other than this one) look at their vCPU again.
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

    /// Virtual interrupts injected into `vcpu` so far.
    pub fn injected(&self, vcpu: usize) -> u64 {
        self.vcpus
            .get(vcpu)
            .map_or(0, |v| v.injected.load(Ordering::Relaxed))
    }

    /// Back to the power-on state (the slice restarts); the injection counts start again.
    pub fn reset(&self) {
        self.state.lock().reset();
        for slot in &self.vcpus {
            slot.injected.store(0, Ordering::Relaxed);
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
        in_flight.sort_unstable();
        in_flight.dedup();
        in_flight.into_iter().for_each(gic::deactivate);
        vgic::reset();
        if let Some(slot) = self.vcpus.get(vcpu) {
            slot.underflow.store(false, Ordering::Relaxed);
        }
    }

    /// Brings the calling core's list registers up to date with `vcpu`'s virtual interrupts.
    /// Called before every return to the guest.
    pub fn sync(&self, vcpu: usize) {
        let Some(slot) = self.vcpus.get(vcpu) else {
            return;
        };
        let mut state = self.state.lock();
        if !state.needs_sync(vcpu) {
            if slot.underflow.swap(false, Ordering::Relaxed) {
                vgic::set_control(false);
            }
            return;
        }
        let count = vgic::list_register_count().min(MAX_LIST_REGISTERS);
        let mut registers = [0u64; MAX_LIST_REGISTERS];
        for (n, value) in registers.iter_mut().enumerate().take(count) {
            *value = vgic::read_list_register(n);
        }
        let update = state.sync_list_registers(vcpu, &mut registers[..count]);
        drop(state);
        for (n, &value) in registers.iter().enumerate().take(count) {
            if update.changed & (1 << n) != 0 {
                vgic::write_list_register(n, value);
            }
        }
        slot.injected
            .fetch_add(u64::from(update.changed.count_ones()), Ordering::Relaxed);
        if slot.underflow.swap(update.underflow, Ordering::Relaxed) != update.underflow {
            vgic::set_control(update.underflow);
        }
    }
}
