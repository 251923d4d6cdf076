//! The state of every virtual interrupt of a slice and the events that change it: device
//! lines (edge, level, hardware-backed), SGIs between the slice's vCPUs (§12.2.23), resets.

use alloc::vec::Vec;

use super::{INTIDS, MAX_LIST_REGISTERS, PRIVATE, SPI_BASE, VcpuSet, VirtualGic};
use crate::vits::HostCommand;

/// The state of one virtual interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Irq {
    pub(super) enabled: bool,
    /// Active as far as the guest's register view goes (set while held in a list register).
    pub(super) in_list_register: bool,
    pub(super) priority: u8,
    pub(super) group1: bool,
    /// Edge-triggered (else level-sensitive).
    pub(super) edge: bool,
    /// Level of a level-sensitive virtual line (the PL011).
    pub(super) level: bool,
    /// Backed by this physical INTID (the list register's HW bit: the guest's deactivation
    /// deactivates it).
    pub(super) hardware: Option<u32>,
}

impl Irq {
    pub(super) const RESET: Irq = Irq {
        enabled: false,
        in_list_register: false,
        priority: 0,
        group1: false,
        edge: false,
        level: false,
        hardware: None,
    };

    pub(super) fn sgi() -> Irq {
        Irq {
            edge: true,
            ..Irq::RESET
        }
    }
}

/// One vCPU's private interrupts, redistributor state and list-register shadow.
#[derive(Clone, Debug)]
pub(super) struct VcpuState {
    pub(super) private: [Irq; PRIVATE],
    /// Bit n: private INTID n is pending (waiting to be loaded, or pending again while in a
    /// list register). A list-register pass looks only at these bits, never at every INTID.
    pub(super) pending: u32,
    pub(super) processor_sleep: bool,
    /// INTID held by each list register, as last written.
    pub(super) list_registers: [Option<u32>; MAX_LIST_REGISTERS],
    /// Bit n: `list_registers[n]` holds an interrupt.
    pub(super) loaded: u16,
}

impl VcpuState {
    pub(super) fn new() -> Self {
        let mut private = [Irq::RESET; PRIVATE];
        private[..16].iter_mut().for_each(|irq| *irq = Irq::sgi());
        Self {
            private,
            pending: 0,
            processor_sleep: true,
            list_registers: [None; MAX_LIST_REGISTERS],
            loaded: 0,
        }
    }
}

/// SPI state plus its routing.
#[derive(Clone, Copy, Debug)]
pub(super) struct Spi {
    pub(super) irq: Irq,
    /// Target vCPU (GICD_IROUTER Aff0, always a vCPU of the slice).
    pub(super) target: usize,
}

impl VirtualGic {
    pub(super) fn owns_spi(&self, intid: u32) -> bool {
        (SPI_BASE..INTIDS).contains(&intid) && self.owned & (1 << (intid - SPI_BASE)) != 0
    }

    /// Whether `intid` is pending for `vcpu` (for an SPI: pending at all).
    pub(super) fn is_pending(&self, vcpu: usize, intid: u32) -> bool {
        if intid < SPI_BASE {
            self.vcpus
                .get(vcpu)
                .is_some_and(|v| v.pending & 1 << intid != 0)
        } else {
            self.owns_spi(intid) && self.spi_pending & 1 << (intid - SPI_BASE) != 0
        }
    }

    /// Makes `intid` pending for `vcpu` or not; INTIDs the slice does not have are ignored.
    #[inline] // on an exit path: inlined even under the image's lower inline threshold
    pub(super) fn set_pending(&mut self, vcpu: usize, intid: u32, pending: bool) {
        if intid < SPI_BASE {
            if let Some(v) = self.vcpus.get_mut(vcpu) {
                v.pending = if pending {
                    v.pending | 1 << intid
                } else {
                    v.pending & !(1 << intid)
                };
            }
        } else if self.owns_spi(intid) {
            let bit = 1u128 << (intid - SPI_BASE);
            self.spi_pending = if pending {
                self.spi_pending | bit
            } else {
                self.spi_pending & !bit
            };
        }
    }

    /// The interrupt `intid` as seen by `vcpu` (private ones are per vCPU).
    #[inline] // on an exit path: inlined even under the image's lower inline threshold
    pub(super) fn irq(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        if intid < SPI_BASE {
            self.vcpus.get(vcpu).map(|v| &v.private[intid as usize])
        } else if self.owns_spi(intid) {
            Some(&self.spis[(intid - SPI_BASE) as usize].irq)
        } else {
            None
        }
    }

    pub(super) fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut Irq> {
        if intid < SPI_BASE {
            self.vcpus
                .get_mut(vcpu)
                .map(|v| &mut v.private[intid as usize])
        } else if self.owns_spi(intid) {
            Some(&mut self.spis[(intid - SPI_BASE) as usize].irq)
        } else {
            None
        }
    }

    /// The vCPU an interrupt is delivered to (`vcpu` for private ones).
    pub(super) fn destination(&self, vcpu: usize, intid: u32) -> usize {
        if intid < SPI_BASE {
            vcpu
        } else {
            self.spis[(intid - SPI_BASE) as usize].target
        }
    }

    /// Makes an edge interrupt pending (an SPI, or `vcpu`'s SGI/PPI).
    #[inline] // on an exit path: inlined even under the image's lower inline threshold
    pub fn raise(&mut self, vcpu: usize, intid: u32) -> VcpuSet {
        if self.irq(vcpu, intid).is_none() {
            return VcpuSet::EMPTY;
        }
        self.set_pending(vcpu, intid, true);
        let target = VcpuSet::EMPTY.with(self.destination(vcpu, intid));
        self.mark(target)
    }

    /// A physical PPI/SPI routed to `vcpu`'s core fired: it becomes pending with the HW link,
    /// so the guest's deactivation deactivates `physical` too.
    pub fn raise_hardware(&mut self, vcpu: usize, intid: u32, physical: u32) -> VcpuSet {
        let Some(irq) = self.irq_mut(vcpu, intid) else {
            return VcpuSet::EMPTY;
        };
        irq.hardware = Some(physical);
        self.set_pending(vcpu, intid, true);
        let target = VcpuSet::EMPTY.with(self.destination(vcpu, intid));
        self.mark(target)
    }

    /// Sets the level of a level-sensitive virtual SPI (the emulated PL011's line).
    /// INTIDs that are not SPIs the slice owns are ignored.
    pub fn set_level(&mut self, intid: u32, level: bool) -> VcpuSet {
        if !self.owns_spi(intid) {
            return VcpuSet::EMPTY;
        }
        let target = self.destination(0, intid);
        let Some(irq) = self.irq_mut(0, intid).filter(|irq| irq.level != level) else {
            return VcpuSet::EMPTY;
        };
        irq.level = level;
        if level && !irq.edge && !irq.in_list_register {
            self.set_pending(0, intid, true);
        } else if !level && !irq.edge {
            self.set_pending(0, intid, false);
        }
        self.mark(VcpuSet::EMPTY.with(target))
    }

    /// A trapped ICC_SGI1R_EL1 write from `sender` (§12.2.23): the SGI becomes pending on every
    /// named vCPU of the slice; names of anything else are dropped, as for a PE that does not
    /// exist.
    pub fn send_sgi(&mut self, sender: usize, value: u64) -> VcpuSet {
        let intid = ((value >> 24) & 0xf) as u32;
        let broadcast = value & (1 << 40) != 0;
        let target_list = value & 0xffff;
        let aff1 = (value >> 16) & 0xff;
        let aff2 = (value >> 32) & 0xff;
        let aff3 = (value >> 48) & 0xff;
        let range = (value >> 44) & 0xf;
        let mut targets = VcpuSet::EMPTY;
        for vcpu in 0..self.vcpus.len() {
            let named = if broadcast {
                vcpu != sender
            } else {
                let aff0 = vcpu as u64;
                aff1 == 0
                    && aff2 == 0
                    && aff3 == 0
                    && aff0 / 16 == range
                    && target_list & (1 << (aff0 % 16)) != 0
            };
            if named {
                targets = targets.union(self.raise(vcpu, intid));
            }
        }
        targets
    }

    /// Resets `vcpu`'s interrupt state (PSCI CPU_ON or a slice restart). Returns the physical
    /// INTIDs that were in flight for it and must be deactivated, since their list registers
    /// are being discarded: every private interrupt still linked to one, whatever the guest
    /// did with its pending bit (until 2026-12-04 only pending or loaded ones: a guest that
    /// cleared its disabled timer PPI's pending bit left the physical PPI active on the core
    /// for every later run; found in review). SPIs it held in its list registers are
    /// released, and pending again if edge or still asserted: the vCPU never saw it through, and an SPI
    /// marked as in a list register nobody has any more was never delivered again.
    pub fn reset_vcpu(&mut self, vcpu: usize) -> Vec<u32> {
        let Some(state) = self.vcpus.get_mut(vcpu) else {
            return Vec::new();
        };
        let in_flight = state
            .private
            .iter()
            .filter_map(|irq| irq.hardware)
            .collect();
        let held = state.list_registers;
        *state = VcpuState::new();
        self.dirty = self.dirty.without(vcpu);
        for intid in held.into_iter().flatten().filter(|&i| i >= SPI_BASE) {
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            irq.in_list_register = false;
            // A physical SPI behind it is deactivated by the caller from the list register.
            irq.hardware = None;
            // Pending again if it is an edge one, or a level one whose line is still high.
            let again = irq.edge || irq.level;
            if again {
                self.set_pending(vcpu, intid, true);
                let target = VcpuSet::EMPTY.with(self.destination(vcpu, intid));
                self.mark(target);
            }
        }
        in_flight
    }

    /// Resets the whole GIC (a slice restart): distributor, SPIs and every vCPU. Returns the
    /// physical commands that undo the vITS's translations of assigned functions.
    pub fn reset(&mut self) -> Vec<HostCommand> {
        let mut host = Vec::new();
        let its = self.its.take().map(|mut its| {
            host = its.reset();
            its
        });
        *self = VirtualGic {
            owned: self.owned,
            mbi: self.mbi,
            its,
            ..VirtualGic::new(self.vcpus.len(), &[])
        };
        host
    }
}

#[cfg(test)]
mod tests {
    use super::super::list_registers::lr_intid;
    use super::super::registers::gicd;
    use super::super::testing::*;
    use super::*;

    #[test]
    fn sgis_stay_inside_the_slice() {
        let mut g = gic(2);
        enable(&mut g, 1, 3, 0xa0);
        // Target list names Aff0 = 0..15 with Aff1 = 0: only vCPU 1 exists besides the sender.
        let targets = g.send_sgi(0, 3 << 24 | 0xffff);
        assert_eq!(targets, VcpuSet::EMPTY.with(0).with(1));
        // Aff1 = 1 or RS = 1 names nothing in the slice.
        assert!(g.send_sgi(0, 3 << 24 | 1 << 16 | 0xffff).is_empty());
        assert!(g.send_sgi(0, 3 << 24 | 1 << 44 | 0xffff).is_empty());
        assert!(g.send_sgi(0, 3 << 24 | 1 << 32 | 0xffff).is_empty());
        // Broadcast: everyone but the sender.
        assert_eq!(g.send_sgi(1, 3 << 24 | 1 << 40), VcpuSet::EMPTY.with(0));
        let mut lrs = [0u64; 4];
        g.sync_list_registers(1, &mut lrs);
        assert_eq!(lr_intid(lrs[0]), 3);
    }

    /// Found by the `vgic` fuzz target: the destination was looked up before the INTID was
    /// checked, so a level change of an INTID past the last SPI indexed out of bounds.
    #[test]
    fn levels_of_intids_the_slice_does_not_own_are_ignored() {
        let mut g = gic(1);
        for intid in [0, 16, 31, 32, 34, 127, 128, 200, 1020, u32::MAX] {
            assert!(g.set_level(intid, true).is_empty(), "INTID {intid}");
        }
        assert!(!g.set_level(UART, true).is_empty());
    }

    #[test]
    fn reset_clears_everything_but_ownership() {
        let mut g = gic(2);
        enable(&mut g, 0, UART, 0);
        g.reset();
        assert_eq!(g.distributor_read(gicd::ISENABLER + 4, 4), 0);
        assert_eq!(g.distributor_read(gicd::CTLR, 4) as u32 & 3, 0);
        g.distributor_write(gicd::ISENABLER + 4, 4, 1 << 1);
        assert_eq!(
            g.distributor_read(gicd::ISENABLER + 4, 4),
            1 << 1,
            "still owns its UART SPI"
        );
    }
}
