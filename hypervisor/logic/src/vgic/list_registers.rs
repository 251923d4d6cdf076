//! The choice of what each vCPU's list registers hold (§11.2, `ICH_LR<n>_EL2`): interrupts the
//! guest finished leave, the most urgent waiting ones enter.

use super::registers::gicd;
use super::state::{Irq, Spi, VcpuState};
use super::{MAX_LIST_REGISTERS, SPI_BASE, VirtualGic};

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
    /// Bit n set: list register n holds an interrupt after the pass. Until the guest finishes
    /// one of them (ICH_ELRSR_EL2, ICH_EISR_EL2) or something changes for the vCPU, another
    /// pass would change nothing.
    pub loaded: u16,
    /// Interrupts made pending in a list register by this pass (loaded, or pending again
    /// while active).
    pub injected: u32,
}

impl VirtualGic {
    /// Whether `vcpu` has anything for its list registers: occupied ones to check, or a change
    /// since its last pass. A cheap test before reading the hardware.
    pub fn needs_sync(&self, vcpu: usize) -> bool {
        let Some(state) = self.vcpus.get(vcpu) else {
            return false;
        };
        self.dirty.contains(vcpu) || state.loaded != 0
    }

    /// The most urgent interrupt that could be loaded for `vcpu` (lowest priority value, then
    /// lowest INTID): pending, enabled, its group enabled, not in a list register, delivered to
    /// `vcpu`. Only pending interrupts are looked at (one step per pending INTID, usually one
    /// or none), so the pass that runs on every exit with something to load costs no scan.
    fn most_urgent(&self, vcpu: usize) -> Option<u32> {
        let state = self.vcpus.get(vcpu)?;
        most_urgent(
            self.ctlr,
            state,
            &self.spis,
            self.spi_pending & self.owned,
            vcpu,
        )
    }

    /// The physical PPI `physical` of the core that runs `vcpu` fired again for its private
    /// interrupt `intid` (a timer): when the list register that last held `intid` is finished
    /// (`read(n)` gives ICH_LR<n>_EL2; a hardware-linked interrupt cannot fire again before
    /// the guest deactivated it) and nothing else is pending for the vCPU, the interrupt goes
    /// straight back into that register, pending with the HW link: the register and its new
    /// value are returned, and the state is what `raise_hardware` and a pass would leave
    /// (up to which free register holds it). Otherwise None, nothing changed: the caller
    /// raises it and a pass decides. This is the timer tick's exit: no scan, no pass.
    pub fn reload_hardware(
        &mut self,
        vcpu: usize,
        intid: u32,
        physical: u32,
        read: impl FnOnce(usize) -> u64,
    ) -> Option<(usize, u64)> {
        if intid >= SPI_BASE || self.spi_pending & self.owned != 0 {
            return None;
        }
        let ctlr = self.ctlr;
        let state = self.vcpus.get_mut(vcpu)?;
        if state.pending != 0 {
            return None;
        }
        let mut loaded = state.loaded;
        let n = loop {
            if loaded == 0 {
                return None;
            }
            let n = loaded.trailing_zeros() as usize;
            loaded &= loaded - 1;
            if state.list_registers.get(n) == Some(&Some(intid)) {
                break n;
            }
        };
        if (read(n) >> lr::STATE_SHIFT) & lr::STATE_MASK != 0 {
            return None;
        }
        let irq = state.private.get_mut(intid as usize)?;
        let group = if irq.group1 {
            gicd::CTLR_ENABLE_GRP1
        } else {
            gicd::CTLR_ENABLE_GRP0
        };
        if !irq.enabled || ctlr & group == 0 {
            return None;
        }
        irq.hardware = Some(physical);
        Some((n, pending_entry(intid, irq)))
    }

    /// One pass over `vcpu`'s list registers, whose current hardware values are `registers`
    /// (as many as the core implements; a register the last pass left empty must read 0):
    /// interrupts the guest finished free their register; the highest-priority candidates
    /// fill free ones. `registers` is updated in place. Only the registers the last pass
    /// loaded and the pending interrupts are looked at.
    pub fn sync_list_registers(
        &mut self,
        vcpu: usize,
        registers: &mut [u64],
    ) -> ListRegisterUpdate {
        let mut update = ListRegisterUpdate {
            changed: 0,
            underflow: false,
            loaded: 0,
            injected: 0,
        };
        let count = registers.len().min(MAX_LIST_REGISTERS);
        let implemented = (1u32 << count).wrapping_sub(1) as u16;
        let owned = self.owned;
        let ctlr = self.ctlr;
        let (spis, spi_pending) = (&mut self.spis, &mut self.spi_pending);
        let Some(state) = self.vcpus.get_mut(vcpu) else {
            return update;
        };
        // Retire what the guest has finished with; the register is cleared so that no stale
        // EOI request keeps the maintenance interrupt asserted.
        let mut loaded = state.loaded & implemented;
        let mut retiring = loaded;
        while retiring != 0 {
            let n = retiring.trailing_zeros() as usize;
            retiring &= retiring - 1;
            if (registers[n] >> lr::STATE_SHIFT) & lr::STATE_MASK != 0 {
                continue;
            }
            let Some(intid) = state.list_registers[n].take() else {
                continue;
            };
            loaded &= !(1 << n);
            registers[n] = 0;
            update.changed |= 1 << n;
            let Some((irq, mut pending)) = slot(state, spis, spi_pending, owned, intid) else {
                continue;
            };
            irq.in_list_register = false;
            // A hardware interrupt that fired again meanwhile keeps its new HW link.
            if !pending.get() {
                irq.hardware = None;
            }
            if !irq.edge && irq.level {
                pending.set(true);
            }
        }
        // Load the most urgent candidates into the free registers, in register order.
        let mut free = implemented & !loaded;
        let mut waiting = true;
        while free != 0 && (state.pending != 0 || *spi_pending & owned != 0) {
            let n = free.trailing_zeros() as usize;
            let Some(intid) = most_urgent(ctlr, state, spis, *spi_pending & owned, vcpu) else {
                waiting = false;
                break;
            };
            free &= free - 1;
            let Some((irq, mut pending)) = slot(state, spis, spi_pending, owned, intid) else {
                break;
            };
            pending.set(false);
            irq.in_list_register = true;
            registers[n] = pending_entry(intid, irq);
            state.list_registers[n] = Some(intid);
            loaded |= 1 << n;
            update.changed |= 1 << n;
            update.injected += 1;
        }
        // LPIs of the vITS take the registers left free (group 1, no active state, no HW).
        let mut lpis_waiting = false;
        if let Some(its) = self.its.as_deref_mut()
            && ctlr & gicd::CTLR_ENABLE_GRP1 != 0
            && its.has_pending(vcpu)
        {
            loop {
                let held = &state.list_registers;
                let in_register = |lpi: u32| held.contains(&Some(lpi));
                let Some((lpi, priority)) = its.highest_pending_except(vcpu, in_register) else {
                    break;
                };
                if free == 0 {
                    lpis_waiting = true;
                    break;
                }
                let n = free.trailing_zeros() as usize;
                free &= free - 1;
                its.take(vcpu, lpi);
                registers[n] = u64::from(lpi)
                    | u64::from(priority) << lr::PRIORITY_SHIFT
                    | lr::GROUP1
                    | lr::PENDING << lr::STATE_SHIFT;
                state.list_registers[n] = Some(lpi);
                loaded |= 1 << n;
                update.changed |= 1 << n;
                update.injected += 1;
            }
        }
        // An edge interrupt that fired again while active: pending and active (not for HW).
        let anything_pending = state.pending != 0 || *spi_pending & owned != 0;
        let mut active = if anything_pending { loaded } else { 0 };
        while active != 0 {
            let n = active.trailing_zeros() as usize;
            active &= active - 1;
            let Some(intid) = state.list_registers[n] else {
                continue;
            };
            let Some((irq, mut pending)) = slot(state, spis, spi_pending, owned, intid) else {
                continue;
            };
            let lr_state = (registers[n] >> lr::STATE_SHIFT) & lr::STATE_MASK;
            if pending.get() && irq.edge && irq.hardware.is_none() && lr_state == lr::ACTIVE {
                pending.set(false);
                registers[n] |= lr::PENDING << lr::STATE_SHIFT;
                update.changed |= 1 << n;
                update.injected += 1;
            }
        }
        // Registers past `count` (a caller that passed fewer) keep what they held.
        state.loaded = loaded | state.loaded & !implemented;
        update.loaded = loaded;
        update.underflow =
            lpis_waiting || waiting && anything_pending && self.most_urgent(vcpu).is_some();
        if !update.underflow {
            self.dirty = self.dirty.without(vcpu);
        }
        update
    }
}

/// A list register holding `intid`, pending, as `irq` asks: priority, group, the HW link or,
/// for a level interrupt without one, an EOI maintenance request.
fn pending_entry(intid: u32, irq: &Irq) -> u64 {
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
    value
}

/// The pending bit of one interrupt, wherever it lives (a vCPU's private word, the SPI word).
struct PendingBit<'a> {
    word: PendingWord<'a>,
    bit: u32,
}

enum PendingWord<'a> {
    Private(&'a mut u32),
    Spi(&'a mut u128),
}

impl PendingBit<'_> {
    fn get(&self) -> bool {
        match &self.word {
            PendingWord::Private(w) => **w & 1 << self.bit != 0,
            PendingWord::Spi(w) => **w & 1 << self.bit != 0,
        }
    }

    fn set(&mut self, pending: bool) {
        match &mut self.word {
            PendingWord::Private(w) if pending => **w |= 1 << self.bit,
            PendingWord::Private(w) => **w &= !(1 << self.bit),
            PendingWord::Spi(w) if pending => **w |= 1 << self.bit,
            PendingWord::Spi(w) => **w &= !(1 << self.bit),
        }
    }
}

/// The state and pending bit of `intid` for the vCPU whose state is `state` (None for an SPI
/// the slice does not own or an INTID it does not have).
fn slot<'a>(
    state: &'a mut VcpuState,
    spis: &'a mut [Spi],
    spi_pending: &'a mut u128,
    owned: u128,
    intid: u32,
) -> Option<(&'a mut Irq, PendingBit<'a>)> {
    if intid < SPI_BASE {
        let irq = state.private.get_mut(intid as usize)?;
        let word = PendingWord::Private(&mut state.pending);
        return Some((irq, PendingBit { word, bit: intid }));
    }
    let n = intid - SPI_BASE;
    if n >= 128 || owned & 1 << n == 0 {
        return None;
    }
    let irq = &mut spis.get_mut(n as usize)?.irq;
    Some((
        irq,
        PendingBit {
            word: PendingWord::Spi(spi_pending),
            bit: n,
        },
    ))
}

/// See [`VirtualGic::most_urgent`]; `spi_pending` holds only owned SPIs.
fn most_urgent(
    ctlr: u32,
    state: &VcpuState,
    spis: &[Spi],
    spi_pending: u128,
    vcpu: usize,
) -> Option<u32> {
    let eligible = |irq: &Irq| {
        let group = if irq.group1 {
            gicd::CTLR_ENABLE_GRP1
        } else {
            gicd::CTLR_ENABLE_GRP0
        };
        irq.enabled && !irq.in_list_register && ctlr & group != 0
    };
    // (priority, INTID) of the best so far.
    let mut best: Option<(u8, u32)> = None;
    let mut consider = |priority: u8, intid: u32| {
        if best.is_none_or(|b| (priority, intid) < b) {
            best = Some((priority, intid));
        }
    };
    let mut private = state.pending;
    while private != 0 {
        let intid = private.trailing_zeros();
        private &= private - 1;
        if let Some(irq) = state.private.get(intid as usize)
            && eligible(irq)
        {
            consider(irq.priority, intid);
        }
    }
    let mut pending = spi_pending;
    while pending != 0 {
        let n = pending.trailing_zeros();
        pending &= pending - 1;
        if let Some(spi) = spis.get(n as usize)
            && spi.target == vcpu
            && eligible(&spi.irq)
        {
            consider(spi.irq.priority, SPI_BASE + n);
        }
    }
    best.map(|(_, intid)| intid)
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
                underflow: true,
                loaded: 0b1111,
                injected: 4,
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
                underflow: false,
                loaded: 0b1111,
                injected: 1,
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
    fn a_hardware_interrupt_whose_pending_bit_the_guest_cleared_is_deactivated_at_reset() {
        // The guest disables its timer PPI, the timer fires (pending with its HW link, never
        // loaded), and the guest clears the pending bit: the physical PPI is still active and
        // must be deactivated when the vCPU resets, or no later run on the core gets a tick.
        let mut g = gic(1);
        enable(&mut g, 0, 27, 0xa0);
        g.redistributor_write(0, SGI_BASE + gicd::ICENABLER, 4, 1 << 27);
        g.raise_hardware(0, 27, 27);
        let mut lrs = [0u64; 4];
        g.sync_list_registers(0, &mut lrs);
        assert_eq!(lrs, [0; 4], "disabled: never loaded");
        g.redistributor_write(0, SGI_BASE + gicd::ICPENDR, 4, 1 << 27);
        assert!(!g.is_pending(0, 27));
        assert_eq!(g.reset_vcpu(0), [27]);
    }

    #[test]
    fn an_spi_held_by_a_vcpu_that_resets_is_delivered_again() {
        // SPI 33 routed to vCPU 0 is in its list register when vCPU 0 turns itself off; moved
        // to vCPU 1 (GICD_IROUTER), it must still be delivered there.
        let mut g = gic(2);
        enable(&mut g, 0, UART, 0xa0);
        g.set_level(UART, true);
        let mut lrs = [0u64; 4];
        g.sync_list_registers(0, &mut lrs);
        assert_eq!(lr_intid(lrs[0]), UART);
        assert_eq!(g.reset_vcpu(0), []);
        g.distributor_write(gicd::IROUTER + 8 * u64::from(UART), 8, 1);
        let mut other = [0u64; 4];
        g.sync_list_registers(1, &mut other);
        assert_eq!(lr_intid(other[0]), UART, "pending again, on vCPU 1");
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

    /// Every interrupt a pass could load for `vcpu`, found the slow way: every INTID.
    fn eligible_by_scan(g: &VirtualGic, vcpu: usize) -> Vec<(u8, u32)> {
        let mut all: Vec<(u8, u32)> = (0..super::super::INTIDS)
            .filter(|&intid| {
                let Some(irq) = g.irq(vcpu, intid) else {
                    return false;
                };
                let group = if irq.group1 { 2 } else { 1 };
                g.is_pending(vcpu, intid)
                    && irq.enabled
                    && g.ctlr & group != 0
                    && !irq.in_list_register
                    && g.destination(vcpu, intid) == vcpu
            })
            .map(|intid| (g.irq(vcpu, intid).unwrap().priority, intid))
            .collect();
        all.sort_unstable();
        all
    }

    /// Random events and passes: the pending bitmaps choose exactly what a scan of every
    /// INTID sorted by priority would (the list-register pass before the bitmaps did that).
    #[test]
    fn passes_load_what_a_full_scan_would() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |bound: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % bound
        };
        let owned = [33, 40, 64, 65, 90];
        let (mut loads, mut underflows) = (0, 0);
        for _round in 0..50 {
            let vcpus = 1 + next(3) as usize;
            let mut g = VirtualGic::new(vcpus, &owned);
            g.distributor_write(gicd::CTLR, 4, next(4));
            let mut lrs = alloc::vec![[0u64; 4]; vcpus];
            for _step in 0..200 {
                let vcpu = next(vcpus as u64) as usize;
                let intid = match next(3) {
                    0 => next(32) as u32,
                    1 => owned[next(owned.len() as u64) as usize],
                    _ => next(128) as u32,
                };
                match next(9) {
                    0 | 1 => {
                        g.raise(vcpu, intid);
                    }
                    2 => {
                        g.set_level(intid, next(2) == 0);
                    }
                    3 => enable(&mut g, vcpu, intid, (next(16) as u8) << 4),
                    4 => {
                        g.distributor_write(gicd::IROUTER + 8 * u64::from(intid), 8, next(4));
                    }
                    5 => {
                        g.send_sgi(vcpu, next(16) << 24 | next(8));
                    }
                    6 => {
                        g.distributor_write(gicd::CTLR, 4, next(4));
                    }
                    _ => {
                        // The guest finishes some entries, then a pass.
                        let count = 1 + next(4) as usize;
                        for lr in lrs[vcpu].iter_mut().take(count) {
                            if next(2) == 0 {
                                *lr &= !(0b11 << 62);
                            }
                        }
                        let before: Vec<u32> = g.vcpus[vcpu].list_registers[..count]
                            .iter()
                            .flatten()
                            .copied()
                            .collect();
                        let update = g.sync_list_registers(vcpu, &mut lrs[vcpu][..count]);
                        let left = eligible_by_scan(&g, vcpu);
                        let loaded: Vec<(u8, u32)> = g.vcpus[vcpu].list_registers[..count]
                            .iter()
                            .flatten()
                            .filter(|intid| !before.contains(intid))
                            .map(|&intid| (g.irq(vcpu, intid).unwrap().priority, intid))
                            .collect();
                        let free = g.vcpus[vcpu].list_registers[..count]
                            .iter()
                            .filter(|r| r.is_none())
                            .count();
                        assert_eq!(update.underflow, !left.is_empty());
                        loads += loaded.len();
                        underflows += usize::from(update.underflow);
                        assert!(
                            left.is_empty() || free == 0,
                            "a candidate waits beside a free LR"
                        );
                        if let Some(first_left) = left.first() {
                            assert!(loaded.iter().all(|l| l < first_left), "{loaded:?} {left:?}");
                        }
                        let occupied = g.vcpus[vcpu].list_registers[..count]
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| r.is_some())
                            .fold(0u16, |m, (n, _)| m | 1 << n);
                        assert_eq!(update.loaded, occupied);
                    }
                }
            }
        }
        assert!(
            loads > 300 && underflows > 50,
            "{loads} loads, {underflows} underflows"
        );
    }

    /// A timer that fires again goes back into its finished list register exactly as a
    /// raise and a full pass would put it (compared as the set of entries the registers hold,
    /// after whatever pass the exit runs anyway); otherwise nothing changes.
    #[test]
    fn reloading_a_hardware_interrupt_matches_a_raise_and_a_pass() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |bound: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % bound
        };
        let entries = |lrs: &[u64]| {
            let mut e: Vec<u64> = lrs.iter().copied().filter(|v| v >> 62 != 0).collect();
            e.sort_unstable();
            e
        };
        let (mut reloads, mut declined) = (0, 0);
        for _round in 0..300 {
            let mut g = VirtualGic::new(1, &[33]);
            g.distributor_write(gicd::CTLR, 4, 2 | next(2));
            enable(&mut g, 0, 27, 0xa0);
            let mut lrs = [0u64; 4];
            for _ in 0..next(6) {
                match next(4) {
                    0 => {
                        let intid = next(32) as u32;
                        enable(&mut g, 0, intid, (next(16) as u8) << 4);
                        g.raise(0, intid);
                    }
                    1 => {
                        enable(&mut g, 0, 33, 0x80);
                        g.set_level(33, next(2) == 0);
                    }
                    _ => {
                        g.raise_hardware(0, 27, 27);
                    }
                }
                for lr in &mut lrs {
                    if next(3) == 0 {
                        *lr &= !(0b11 << 62);
                    }
                }
                g.sync_list_registers(0, &mut lrs);
            }
            // The guest finishes some entries; the timer fires.
            for lr in &mut lrs {
                if next(2) == 0 {
                    *lr &= !(0b11 << 62);
                }
            }
            let mut by_pass = g.clone();
            let mut pass_lrs = lrs;
            by_pass.raise_hardware(0, 27, 27);
            by_pass.sync_list_registers(0, &mut pass_lrs);
            let before = g.clone();
            match g.reload_hardware(0, 27, 27, |n| lrs[n]) {
                Some((n, value)) => {
                    reloads += 1;
                    lrs[n] = value;
                    g.sync_list_registers(0, &mut lrs);
                    assert_eq!(entries(&lrs), entries(&pass_lrs));
                    assert!(!g.is_pending(0, 27));
                    assert_eq!(g.irq(0, 27).unwrap().hardware, Some(27));
                }
                None => {
                    declined += 1;
                    assert_eq!(g.vcpus[0].pending, before.vcpus[0].pending);
                    assert_eq!(g.vcpus[0].private, before.vcpus[0].private);
                }
            }
        }
        assert!(
            reloads > 30 && declined > 30,
            "{reloads} reloads, {declined} declined"
        );
    }
}
