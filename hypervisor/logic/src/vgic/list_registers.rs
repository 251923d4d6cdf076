//! The choice of what each vCPU's list registers hold (§11.2, `ICH_LR<n>_EL2`): interrupts the
//! guest finished leave, the most urgent waiting ones enter.

use alloc::vec::Vec;

use super::registers::gicd;
use super::{MAX_LIST_REGISTERS, SPI_BASE, VirtualGic};
use crate::bits::members;

/// `ICH_LR<n>_EL2` fields (§12.4.6).
pub(super) mod lr {
    pub const STATE_SHIFT: u32 = 62;
    pub const STATE_MASK: u64 = 0b11;
    pub const PENDING: u64 = 0b01;
    pub const ACTIVE: u64 = 0b10;
    pub const HW: u64 = 1 << 61;
    pub const GROUP1: u64 = 1 << 60;
    pub const PRIORITY_SHIFT: u32 = 48;
    pub const PINTID_SHIFT: u32 = 32;
    /// With HW = 0: request a maintenance interrupt when the guest deactivates it.
    pub const EOI: u64 = 1 << 41;
}

/// The physical interrupt a list register's value still holds active: its pINTID if the entry
/// is hardware-linked (HW) and not yet finished (pending, active, or both). When a vCPU is
/// stopped with such an entry in a list register, the physical interrupt must be deactivated
/// by hand, since the guest never will.
pub fn hardware_in_flight(register: u64) -> Option<u32> {
    let state = (register >> lr::STATE_SHIFT) & lr::STATE_MASK;
    (register & lr::HW != 0 && state != 0)
        .then_some(((register >> lr::PINTID_SHIFT) & 0x1fff) as u32)
}

/// What a list-register pass decided for one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListRegisterUpdate {
    /// Bit n set: list register n must be written with its new value.
    pub changed: u16,
    /// Interrupts are still waiting for a free list register: ask for a maintenance interrupt
    /// when the list registers drain (ICH_HCR_EL2.UIE).
    pub underflow: bool,
}

impl VirtualGic {
    /// Whether `vcpu` has anything for its list registers: occupied ones to check, or a change
    /// since its last pass. A cheap test before reading the hardware, run on every exit.
    pub fn needs_sync(&self, vcpu: usize) -> bool {
        let Some(state) = self.vcpus.get(vcpu) else {
            return false;
        };
        self.dirty.contains(vcpu) || state.list_registers.iter().any(Option::is_some)
    }

    /// Interrupts that could be loaded for `vcpu`: pending, enabled, group enabled, not loaded.
    /// Only private interrupts and owned SPIs are looked at: this runs on every exit that
    /// syncs the list registers.
    fn candidates(&self, vcpu: usize) -> impl Iterator<Item = u32> + '_ {
        let owned = members(self.owned).map(|n| SPI_BASE + n as u32);
        (0..SPI_BASE).chain(owned).filter(move |&intid| {
            let Some(irq) = self.irq(vcpu, intid) else {
                return false;
            };
            let group_enabled = if irq.group1 {
                self.ctlr & gicd::CTLR_ENABLE_GRP1 != 0
            } else {
                self.ctlr & gicd::CTLR_ENABLE_GRP0 != 0
            };
            irq.pending
                && irq.enabled
                && group_enabled
                && !irq.in_list_register
                && self.destination(vcpu, intid) == vcpu
        })
    }

    /// One pass over `vcpu`'s list registers, whose current hardware values are `registers`
    /// (as many as the core implements): interrupts the guest finished free their register;
    /// the highest-priority candidates fill free ones. `registers` is updated in place.
    pub fn sync_list_registers(
        &mut self,
        vcpu: usize,
        registers: &mut [u64],
    ) -> ListRegisterUpdate {
        let mut update = ListRegisterUpdate {
            changed: 0,
            underflow: false,
        };
        if vcpu >= self.vcpus.len() {
            return update;
        }
        let count = registers.len().min(MAX_LIST_REGISTERS);
        // Retire what the guest has finished with; the register is cleared so that no stale
        // EOI request keeps the maintenance interrupt asserted.
        for (n, register) in registers.iter_mut().enumerate().take(count) {
            let Some(intid) = self.vcpus[vcpu].list_registers[n] else {
                continue;
            };
            if (*register >> lr::STATE_SHIFT) & lr::STATE_MASK != 0 {
                continue;
            }
            self.vcpus[vcpu].list_registers[n] = None;
            *register = 0;
            update.changed |= 1 << n;
            if let Some(irq) = self.irq_mut(vcpu, intid) {
                irq.in_list_register = false;
                // A hardware interrupt that fired again meanwhile keeps its new HW link.
                if !irq.pending {
                    irq.hardware = None;
                }
                if !irq.edge && irq.level {
                    irq.pending = true;
                }
            }
        }
        // Load the most urgent candidates (lowest priority value first, then lowest INTID).
        let mut candidates: Vec<u32> = self.candidates(vcpu).collect();
        candidates
            .sort_by_key(|&intid| (self.irq(vcpu, intid).map_or(u8::MAX, |i| i.priority), intid));
        let mut waiting = candidates.into_iter();
        for (n, register) in registers.iter_mut().enumerate().take(count) {
            if self.vcpus[vcpu].list_registers[n].is_some() {
                continue;
            }
            let Some(intid) = waiting.next() else { break };
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            irq.pending = false;
            irq.in_list_register = true;
            let mut value = u64::from(intid)
                | u64::from(irq.priority) << lr::PRIORITY_SHIFT
                | lr::PENDING << lr::STATE_SHIFT;
            if irq.group1 {
                value |= lr::GROUP1;
            }
            match irq.hardware {
                Some(physical) => value |= lr::HW | u64::from(physical) << lr::PINTID_SHIFT,
                None if !irq.edge => value |= lr::EOI,
                None => {}
            }
            *register = value;
            self.vcpus[vcpu].list_registers[n] = Some(intid);
            update.changed |= 1 << n;
        }
        // An edge interrupt that fired again while active: pending and active (not for HW).
        for (n, register) in registers.iter_mut().enumerate().take(count) {
            let Some(intid) = self.vcpus[vcpu].list_registers[n] else {
                continue;
            };
            let state = (*register >> lr::STATE_SHIFT) & lr::STATE_MASK;
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            if irq.pending && irq.edge && irq.hardware.is_none() && state == lr::ACTIVE {
                irq.pending = false;
                *register |= lr::PENDING << lr::STATE_SHIFT;
                update.changed |= 1 << n;
            }
        }
        update.underflow = waiting.next().is_some();
        if !update.underflow {
            self.dirty = self.dirty.without(vcpu);
        }
        update
    }
}

#[cfg(test)]
pub(super) fn lr_intid(value: u64) -> u32 {
    value as u32
}

#[cfg(test)]
mod tests {
    use super::super::VcpuSet;
    use super::super::testing::*;
    use super::*;

    fn lr_state(value: u64) -> u64 {
        value >> 62
    }

    #[test]
    fn hardware_linked_entries_still_in_flight() {
        let hw = |state: u64| state << lr::STATE_SHIFT | lr::HW | 27 << lr::PINTID_SHIFT | 27;
        assert_eq!(hardware_in_flight(hw(lr::PENDING)), Some(27));
        assert_eq!(hardware_in_flight(hw(lr::ACTIVE)), Some(27));
        assert_eq!(hardware_in_flight(hw(lr::PENDING | lr::ACTIVE)), Some(27));
        assert_eq!(
            hardware_in_flight(hw(0)),
            None,
            "finished: the guest deactivated it"
        );
        let virtual_only = lr::PENDING << lr::STATE_SHIFT | lr::EOI | 33;
        assert_eq!(hardware_in_flight(virtual_only), None);
        assert_eq!(hardware_in_flight(0), None);
    }

    #[test]
    fn list_registers_take_the_most_urgent_first_and_report_overflow() {
        let mut g = gic(1);
        for (intid, priority) in [(1, 0xa0), (2, 0x80), (3, 0xa0), (4, 0x90), (5, 0x10)] {
            enable(&mut g, 0, intid, priority);
            g.raise(0, intid);
        }
        let mut lrs = [0u64; 4];
        let update = g.sync_list_registers(0, &mut lrs);
        assert_eq!(lrs.map(lr_intid), [5, 2, 4, 1]);
        assert_eq!(
            update,
            ListRegisterUpdate {
                changed: 0b1111,
                underflow: true
            }
        );
        assert_eq!(lr_state(lrs[0]), 0b01, "pending");
        assert_ne!(lrs[0] & lr::GROUP1, 0);
        assert_eq!((lrs[0] >> 48) & 0xff, 0x10);
        // The guest handles INTID 2 (its register goes invalid): INTID 3 takes its place.
        lrs[1] = 0;
        let update = g.sync_list_registers(0, &mut lrs);
        assert_eq!(lr_intid(lrs[1]), 3);
        assert_eq!(
            update,
            ListRegisterUpdate {
                changed: 0b0010,
                underflow: false
            }
        );
        assert!(g.needs_sync(0));
    }

    #[test]
    fn quiet_vcpus_need_no_list_register_pass() {
        let mut g = gic(2);
        let mut lrs = [0u64; 4];
        for v in 0..2 {
            g.sync_list_registers(v, &mut lrs);
        }
        assert!(!g.needs_sync(0) && !g.needs_sync(1));
        enable(&mut g, 1, 4, 0);
        g.raise(1, 4);
        assert!(!g.needs_sync(0), "only the target is touched");
        assert!(g.needs_sync(1));
        g.sync_list_registers(1, &mut lrs);
        assert!(g.needs_sync(1), "its list register is occupied");
        lrs[0] = 0;
        g.sync_list_registers(1, &mut lrs);
        assert!(!g.needs_sync(1));
    }

    #[test]
    fn disabled_or_group_disabled_interrupts_wait() {
        let mut g = VirtualGic::new(1, &[UART]);
        enable(&mut g, 0, 7, 0);
        g.raise(0, 7);
        let mut lrs = [0u64; 4];
        assert_eq!(
            g.sync_list_registers(0, &mut lrs).changed,
            0,
            "GICD_CTLR.EnableGrp1 is off"
        );
        g.distributor_write(gicd::CTLR, 4, u64::from(gicd::CTLR_ENABLE_GRP1));
        g.redistributor_write(0, SGI_BASE + gicd::ICENABLER, 4, 1 << 7);
        assert_eq!(g.sync_list_registers(0, &mut lrs).changed, 0, "disabled");
        g.redistributor_write(0, SGI_BASE + gicd::ISENABLER, 4, 1 << 7);
        assert_eq!(g.sync_list_registers(0, &mut lrs).changed, 1);
    }

    #[test]
    fn hardware_interrupts_carry_the_physical_intid() {
        let mut g = gic(1);
        enable(&mut g, 0, 27, 0xa0);
        assert_eq!(g.raise_hardware(0, 27, 27), VcpuSet::EMPTY.with(0));
        let mut lrs = [0u64; 4];
        g.sync_list_registers(0, &mut lrs);
        assert_ne!(lrs[0] & lr::HW, 0);
        assert_eq!((lrs[0] >> 32) & 0x1fff, 27);
        assert_eq!(lrs[0] & lr::EOI, 0, "no EOI maintenance with HW");
        // Reset while in flight: the physical interrupt must be deactivated by the caller.
        assert_eq!(g.reset_vcpu(0), [27]);
        assert!(!g.needs_sync(0));
    }

    #[test]
    fn hardware_interrupt_firing_again_keeps_its_link() {
        let mut g = gic(1);
        enable(&mut g, 0, 27, 0xa0);
        let mut lrs = [0u64; 4];
        g.raise_hardware(0, 27, 27);
        g.sync_list_registers(0, &mut lrs);
        // The guest deactivated it (register invalid, fields left as they were) and the timer
        // fired again before the next pass.
        lrs[0] &= !(0b11 << 62);
        g.raise_hardware(0, 27, 27);
        g.sync_list_registers(0, &mut lrs);
        assert_eq!(lr_state(lrs[0]), 0b01);
        assert_ne!(
            lrs[0] & lr::HW,
            0,
            "still linked to the physical timer interrupt"
        );
        assert_eq!(lrs[0] & lr::EOI, 0);
    }

    #[test]
    fn level_interrupt_comes_back_while_the_line_stays_high() {
        let mut g = gic(2);
        enable(&mut g, 0, UART, 0xa0);
        g.distributor_write(gicd::IROUTER + 8 * u64::from(UART), 8, 1);
        assert_eq!(g.set_level(UART, true), VcpuSet::EMPTY.with(1));
        let mut lrs = [0u64; 4];
        assert_eq!(
            g.sync_list_registers(0, &mut lrs).changed,
            0,
            "routed to vCPU 1"
        );
        g.sync_list_registers(1, &mut lrs);
        assert_eq!(lr_intid(lrs[0]), UART);
        assert_ne!(lrs[0] & lr::EOI, 0, "EOI maintenance for a level interrupt");
        // Guest handled it but the line is still high: it comes back.
        lrs[0] = 0;
        g.sync_list_registers(1, &mut lrs);
        assert_eq!(lr_intid(lrs[0]), UART);
        assert_eq!(lr_state(lrs[0]), 0b01);
        // Line low, guest done: the register is cleared and nothing is left.
        g.set_level(UART, false);
        lrs[0] = lr::EOI | u64::from(UART);
        assert_eq!(g.sync_list_registers(1, &mut lrs).changed, 1);
        assert_eq!(lrs[0], 0);
        assert!(!g.needs_sync(1));
    }

    #[test]
    fn repeated_edge_becomes_pending_and_active() {
        let mut g = gic(1);
        enable(&mut g, 0, 1, 0);
        g.raise(0, 1);
        let mut lrs = [0u64; 4];
        g.sync_list_registers(0, &mut lrs);
        lrs[0] = lrs[0] & !(0b11 << 62) | lr::ACTIVE << 62;
        g.raise(0, 1);
        g.sync_list_registers(0, &mut lrs);
        assert_eq!(lr_state(lrs[0]), 0b11);
    }
}
