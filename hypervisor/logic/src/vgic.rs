//! The virtual GICv3 of one slice (Arm IHI 0069H, "GICv3 and GICv4 Architecture
//! Specification"): the emulated distributor (§12.9) and redistributors (§12.10, §12.11), the
//! state of every virtual interrupt, SGI routing inside the slice (§12.2.23), and the choice of
//! what each vCPU's list registers hold (§11.2, ICH_LR<n>_EL2).
//!
//! The guest sees a single-security-state GIC with affinity routing always on. It sees and
//! configures only the SPIs its slice owns (today its PL011); every other SPI reads as zero and
//! ignores writes. Routing and SGIs can only name its own vCPUs: vCPU *i* has affinity
//! 0.0.0.*i*. The hardware list registers are read and written by the vCPU's own core only;
//! [`VirtualGic::sync_list_registers`] takes their values and returns the new ones.

use alloc::vec;
use alloc::vec::Vec;

use crate::bits::members;

/// INTIDs the virtual GIC implements: SGIs 0-15, PPIs 16-31, SPIs 32-127.
pub const INTIDS: u32 = 128;
/// First SPI.
pub const SPI_BASE: u32 = 32;
/// Number of SPIs.
const SPIS: usize = (INTIDS - SPI_BASE) as usize;
/// INTIDs private to each vCPU (SGIs and PPIs).
const PRIVATE: usize = SPI_BASE as usize;
/// Most list registers an implementation has (ICH_VTR_EL2.ListRegs + 1 <= 16).
pub const MAX_LIST_REGISTERS: usize = 16;

/// GIC implementer code for Arm (JEP106 0x43B), used in GICD_IIDR and GICR_IIDR.
const IIDR_ARM: u32 = 0x43b;
/// PIDR2 with ArchRev = 3 (GICv3).
const PIDR2_GICV3: u32 = 0x3b;

/// Distributor register offsets (§12.9, Table 12-25).
mod gicd {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    /// Message-based SPI set and clear (GICv3 §12.9.26-27).
    pub const SETSPI_NSR: u64 = 0x0040;
    pub const CLRSPI_NSR: u64 = 0x0048;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const ISPENDR: u64 = 0x0200;
    pub const ICPENDR: u64 = 0x0280;
    pub const ISACTIVER: u64 = 0x0300;
    pub const ICACTIVER: u64 = 0x0380;
    pub const IPRIORITYR: u64 = 0x0400;
    pub const ICFGR: u64 = 0x0c00;
    pub const IROUTER: u64 = 0x6000;
    pub const IROUTER_END: u64 = 0x7fe0;
    pub const PIDR2: u64 = 0xffe8;
    /// GICD_CTLR bits: EnableGrp0, EnableGrp1, ARE (RAO), DS (RAO).
    pub const CTLR_ENABLE_GRP0: u32 = 1 << 0;
    pub const CTLR_ENABLE_GRP1: u32 = 1 << 1;
    pub const CTLR_ARE: u32 = 1 << 4;
    pub const CTLR_DS: u32 = 1 << 6;
}

/// Redistributor register offsets: RD_base (§12.10) and SGI_base at +64 KiB (§12.11).
mod gicr {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const WAKER: u64 = 0x0014;
    pub const PIDR2: u64 = 0xffe8;
    pub const SGI_BASE: u64 = 0x1_0000;
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
}

/// Bytes of one vCPU's redistributor (RD_base + SGI_base).
pub const REDISTRIBUTOR_SIZE: u64 = 0x2_0000;

/// ICH_LR<n>_EL2 fields (§12.4.6).
mod lr {
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

/// A set of vCPUs (by index) whose cores must look at their list registers again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuSet(u128);

impl VcpuSet {
    pub const EMPTY: VcpuSet = VcpuSet(0);

    pub fn with(self, vcpu: usize) -> VcpuSet {
        VcpuSet(self.0 | 1u128.checked_shl(vcpu as u32).unwrap_or(0))
    }

    pub fn union(self, other: VcpuSet) -> VcpuSet {
        VcpuSet(self.0 | other.0)
    }

    pub fn contains(self, vcpu: usize) -> bool {
        self.0 & 1u128.checked_shl(vcpu as u32).unwrap_or(0) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set without `vcpu`.
    pub fn without(self, vcpu: usize) -> VcpuSet {
        VcpuSet(self.0 & !1u128.checked_shl(vcpu as u32).unwrap_or(0))
    }

    /// The vCPU indexes in the set, ascending.
    /// The members, lowest first; costs one step per member (it runs on every exit that
    /// touches the vGIC, usually with no member at all).
    pub fn iter(self) -> impl Iterator<Item = usize> {
        members(self.0)
    }
}

/// The state of one virtual interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Irq {
    enabled: bool,
    /// Pending and not yet in a list register.
    pending: bool,
    /// Active as far as the guest's register view goes (set while held in a list register).
    in_list_register: bool,
    priority: u8,
    group1: bool,
    /// Edge-triggered (else level-sensitive).
    edge: bool,
    /// Level of a level-sensitive virtual line (the PL011).
    level: bool,
    /// Backed by this physical INTID (the list register's HW bit: the guest's deactivation
    /// deactivates it).
    hardware: Option<u32>,
}

impl Irq {
    const RESET: Irq = Irq {
        enabled: false,
        pending: false,
        in_list_register: false,
        priority: 0,
        group1: false,
        edge: false,
        level: false,
        hardware: None,
    };

    fn sgi() -> Irq {
        Irq {
            edge: true,
            ..Irq::RESET
        }
    }
}

/// One vCPU's private interrupts, redistributor state and list-register shadow.
#[derive(Clone, Debug)]
struct VcpuState {
    private: [Irq; PRIVATE],
    processor_sleep: bool,
    /// INTID held by each list register, as last written.
    list_registers: [Option<u32>; MAX_LIST_REGISTERS],
}

impl VcpuState {
    fn new() -> Self {
        let mut private = [Irq::RESET; PRIVATE];
        private[..16].iter_mut().for_each(|irq| *irq = Irq::sgi());
        Self {
            private,
            processor_sleep: true,
            list_registers: [None; MAX_LIST_REGISTERS],
        }
    }
}

/// SPI state plus its routing.
#[derive(Clone, Copy, Debug)]
struct Spi {
    irq: Irq,
    /// Target vCPU (GICD_IROUTER Aff0, always a vCPU of the slice).
    target: usize,
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

/// The virtual GIC of one slice.
#[derive(Clone, Debug)]
pub struct VirtualGic {
    ctlr: u32,
    spis: Vec<Spi>,
    /// SPIs the slice owns (bit n = INTID 32 + n).
    owned: u128,
    vcpus: Vec<VcpuState>,
    /// vCPUs whose interrupts changed since their last list-register pass.
    dirty: VcpuSet,
    /// The slice's devices signal SPIs through GICD_SETSPI_NSR (GICD_TYPER.MBIS).
    mbi: bool,
}

impl VirtualGic {
    /// A GIC in its reset state for `vcpus` vCPUs, owning the SPIs in `owned_spis`.
    pub fn new(vcpus: usize, owned_spis: &[u32]) -> Self {
        let owned = owned_spis
            .iter()
            .filter(|&&i| (SPI_BASE..INTIDS).contains(&i))
            .fold(0u128, |set, &i| set | 1 << (i - SPI_BASE));
        Self {
            ctlr: 0,
            spis: vec![
                Spi {
                    irq: Irq::RESET,
                    target: 0
                };
                SPIS
            ],
            owned,
            vcpus: (0..vcpus).map(|_| VcpuState::new()).collect(),
            dirty: VcpuSet::EMPTY,
            mbi: false,
        }
    }

    /// A GIC whose message-based SPIs (GICD_SETSPI_NSR) are on, for a slice with devices that
    /// send MSIs.
    pub fn with_mbi(mut self) -> Self {
        self.mbi = true;
        self
    }

    /// Records that `vcpus` have something new for their list registers, and returns them.
    fn mark(&mut self, vcpus: VcpuSet) -> VcpuSet {
        self.dirty = self.dirty.union(vcpus);
        vcpus
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.vcpus.len()
    }

    fn owns_spi(&self, intid: u32) -> bool {
        (SPI_BASE..INTIDS).contains(&intid) && self.owned & (1 << (intid - SPI_BASE)) != 0
    }

    /// The interrupt `intid` as seen by `vcpu` (private ones are per vCPU).
    fn irq(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        if intid < SPI_BASE {
            self.vcpus.get(vcpu).map(|v| &v.private[intid as usize])
        } else if self.owns_spi(intid) {
            Some(&self.spis[(intid - SPI_BASE) as usize].irq)
        } else {
            None
        }
    }

    fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut Irq> {
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
    fn destination(&self, vcpu: usize, intid: u32) -> usize {
        if intid < SPI_BASE {
            vcpu
        } else {
            self.spis[(intid - SPI_BASE) as usize].target
        }
    }

    // ---- events -----------------------------------------------------------------------

    /// Makes an edge interrupt pending (an SPI, or `vcpu`'s SGI/PPI).
    pub fn raise(&mut self, vcpu: usize, intid: u32) -> VcpuSet {
        match self.irq_mut(vcpu, intid) {
            Some(irq) => {
                irq.pending = true;
                let target = VcpuSet::EMPTY.with(self.destination(vcpu, intid));
                self.mark(target)
            }
            None => VcpuSet::EMPTY,
        }
    }

    /// A physical PPI/SPI routed to `vcpu`'s core fired: it becomes pending with the HW link,
    /// so the guest's deactivation deactivates `physical` too.
    pub fn raise_hardware(&mut self, vcpu: usize, intid: u32, physical: u32) -> VcpuSet {
        match self.irq_mut(vcpu, intid) {
            Some(irq) => {
                irq.pending = true;
                irq.hardware = Some(physical);
                let target = VcpuSet::EMPTY.with(self.destination(vcpu, intid));
                self.mark(target)
            }
            None => VcpuSet::EMPTY,
        }
    }

    /// Sets the level of a level-sensitive virtual SPI (the emulated PL011's line).
    pub fn set_level(&mut self, intid: u32, level: bool) -> VcpuSet {
        let target = self.destination(0, intid);
        match self.irq_mut(0, intid) {
            Some(irq) if intid >= SPI_BASE && irq.level != level => {
                irq.level = level;
                if level && !irq.edge && !irq.in_list_register {
                    irq.pending = true;
                } else if !level && !irq.edge {
                    irq.pending = false;
                }
                self.mark(VcpuSet::EMPTY.with(target))
            }
            _ => VcpuSet::EMPTY,
        }
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
    /// are being discarded.
    pub fn reset_vcpu(&mut self, vcpu: usize) -> Vec<u32> {
        let Some(state) = self.vcpus.get_mut(vcpu) else {
            return Vec::new();
        };
        let in_flight = state
            .private
            .iter()
            .filter(|irq| irq.pending || irq.in_list_register)
            .filter_map(|irq| irq.hardware)
            .collect();
        *state = VcpuState::new();
        self.dirty = self.dirty.without(vcpu);
        in_flight
    }

    /// Resets the whole GIC (a slice restart): distributor, SPIs and every vCPU.
    pub fn reset(&mut self) {
        *self = VirtualGic {
            owned: self.owned,
            mbi: self.mbi,
            ..VirtualGic::new(self.vcpus.len(), &[])
        };
    }

    // ---- list registers ---------------------------------------------------------------

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

    // ---- distributor registers --------------------------------------------------------

    /// Reads the distributor register at `offset` (`width` bytes).
    pub fn distributor_read(&self, offset: u64, width: u8) -> u64 {
        match offset {
            gicd::CTLR => u64::from(self.ctlr | gicd::CTLR_ARE | gicd::CTLR_DS),
            // ITLinesNumber = INTIDS/32 - 1, IDbits = 10 bits (value 9), No1N, MBIS.
            gicd::TYPER => {
                u64::from((INTIDS / 32 - 1) | 9 << 19 | 1 << 25 | u32::from(self.mbi) << 16)
            }
            gicd::IIDR => u64::from(IIDR_ARM),
            gicd::PIDR2 => u64::from(PIDR2_GICV3),
            o if (gicd::IROUTER..gicd::IROUTER_END).contains(&o) => self.router_read(o, width),
            o if (gicd::IPRIORITYR..gicd::IPRIORITYR + u64::from(INTIDS)).contains(&o) => {
                self.priorities_read(0, (o - gicd::IPRIORITYR) as u32, width, true)
            }
            o if (gicd::ICFGR..gicd::ICFGR + u64::from(INTIDS / 4)).contains(&o) => {
                u64::from(self.config_read(0, ((o - gicd::ICFGR) / 4 * 16) as u32, true))
            }
            o => match bit_register(o) {
                Some((kind, first)) => u64::from(self.bits_read(0, kind, first, true)),
                None => 0,
            },
        }
    }

    /// Writes the distributor register at `offset`; returns the vCPUs to re-examine.
    pub fn distributor_write(&mut self, offset: u64, width: u8, value: u64) -> VcpuSet {
        let touched = self.distributor_write_inner(offset, width, value);
        self.mark(touched)
    }

    fn distributor_write_inner(&mut self, offset: u64, width: u8, value: u64) -> VcpuSet {
        match offset {
            gicd::CTLR => {
                self.ctlr = value as u32 & (gicd::CTLR_ENABLE_GRP0 | gicd::CTLR_ENABLE_GRP1);
                self.all_vcpus()
            }
            gicd::SETSPI_NSR if self.mbi && value as u32 & 0x3ff >= SPI_BASE => {
                self.raise(0, value as u32 & 0x3ff)
            }
            gicd::CLRSPI_NSR if self.mbi => {
                let intid = value as u32 & 0x3ff;
                if intid >= SPI_BASE
                    && let Some(irq) = self.irq_mut(0, intid)
                {
                    irq.pending = false;
                }
                VcpuSet::EMPTY
            }
            o if (gicd::IROUTER..gicd::IROUTER_END).contains(&o) => {
                self.router_write(o, width, value)
            }
            o if (gicd::IPRIORITYR..gicd::IPRIORITYR + u64::from(INTIDS)).contains(&o) => {
                self.priorities_write(0, (o - gicd::IPRIORITYR) as u32, width, value, true);
                VcpuSet::EMPTY
            }
            o if (gicd::ICFGR..gicd::ICFGR + u64::from(INTIDS / 4)).contains(&o) => {
                self.config_write(0, ((o - gicd::ICFGR) / 4 * 16) as u32, value as u32, true);
                VcpuSet::EMPTY
            }
            o => match bit_register(o) {
                Some((kind, first)) => self.bits_write(0, kind, first, value as u32, true),
                None => VcpuSet::EMPTY,
            },
        }
    }

    fn all_vcpus(&self) -> VcpuSet {
        (0..self.vcpus.len()).fold(VcpuSet::EMPTY, VcpuSet::with)
    }

    fn router_read(&self, offset: u64, width: u8) -> u64 {
        let intid = ((offset - gicd::IROUTER) / 8) as u32;
        let value = if self.owns_spi(intid) {
            self.spis[(intid - SPI_BASE) as usize].target as u64
        } else {
            0
        };
        if width == 4 && offset % 8 == 4 {
            value >> 32
        } else {
            value
        }
    }

    fn router_write(&mut self, offset: u64, width: u8, value: u64) -> VcpuSet {
        let intid = ((offset - gicd::IROUTER) / 8) as u32;
        if !self.owns_spi(intid) || (width == 4 && offset % 8 == 4) {
            return VcpuSet::EMPTY;
        }
        let broadcast = value & (1 << 31) != 0;
        let aff0 = value & 0xff;
        let upper = value & 0xff_00ff_ff00;
        let target = if broadcast {
            // "Any participating PE": the slice's first vCPU.
            Some(0)
        } else if upper == 0 && (aff0 as usize) < self.vcpus.len() {
            Some(aff0 as usize)
        } else {
            // A PE outside the slice: ignored.
            None
        };
        match target {
            Some(t) => {
                let old = self.spis[(intid - SPI_BASE) as usize].target;
                self.spis[(intid - SPI_BASE) as usize].target = t;
                VcpuSet::EMPTY.with(old).with(t)
            }
            None => VcpuSet::EMPTY,
        }
    }

    // ---- redistributor registers ------------------------------------------------------

    /// Reads `vcpu`'s redistributor register at `offset` from its RD_base.
    pub fn redistributor_read(&self, vcpu: usize, offset: u64, width: u8) -> u64 {
        let Some(state) = self.vcpus.get(vcpu) else {
            return 0;
        };
        if let Some(sgi) = offset.checked_sub(gicr::SGI_BASE) {
            return match sgi {
                o if (gicd::IPRIORITYR..gicd::IPRIORITYR + PRIVATE as u64).contains(&o) => {
                    self.priorities_read(vcpu, (o - gicd::IPRIORITYR) as u32, width, false)
                }
                o if o == gicd::ICFGR || o == gicd::ICFGR + 4 => {
                    u64::from(self.config_read(vcpu, ((o - gicd::ICFGR) / 4 * 16) as u32, false))
                }
                o => match bit_register(o) {
                    Some((kind, 0)) => u64::from(self.bits_read(vcpu, kind, 0, false)),
                    _ => 0,
                },
            };
        }
        match offset {
            gicr::IIDR => u64::from(IIDR_ARM),
            gicr::TYPER | 0x000c => {
                let last = if vcpu + 1 == self.vcpus.len() {
                    1 << 4
                } else {
                    0
                };
                let typer = (vcpu as u64) << 32 | (vcpu as u64) << 8 | last;
                if offset == 0x000c {
                    typer >> 32
                } else if width == 4 {
                    typer & 0xffff_ffff
                } else {
                    typer
                }
            }
            gicr::WAKER if state.processor_sleep => {
                u64::from(gicr::WAKER_PROCESSOR_SLEEP | gicr::WAKER_CHILDREN_ASLEEP)
            }
            gicr::PIDR2 => u64::from(PIDR2_GICV3),
            gicr::CTLR => 0,
            _ => 0,
        }
    }

    /// Writes `vcpu`'s redistributor register at `offset` from its RD_base.
    pub fn redistributor_write(
        &mut self,
        vcpu: usize,
        offset: u64,
        width: u8,
        value: u64,
    ) -> VcpuSet {
        let touched = self.redistributor_write_inner(vcpu, offset, width, value);
        self.mark(touched)
    }

    fn redistributor_write_inner(
        &mut self,
        vcpu: usize,
        offset: u64,
        width: u8,
        value: u64,
    ) -> VcpuSet {
        if vcpu >= self.vcpus.len() {
            return VcpuSet::EMPTY;
        }
        if let Some(sgi) = offset.checked_sub(gicr::SGI_BASE) {
            return match sgi {
                o if (gicd::IPRIORITYR..gicd::IPRIORITYR + PRIVATE as u64).contains(&o) => {
                    self.priorities_write(vcpu, (o - gicd::IPRIORITYR) as u32, width, value, false);
                    VcpuSet::EMPTY
                }
                o if o == gicd::ICFGR + 4 => {
                    self.config_write(vcpu, 16, value as u32, false);
                    VcpuSet::EMPTY
                }
                o => match bit_register(o) {
                    Some((kind, 0)) => self.bits_write(vcpu, kind, 0, value as u32, false),
                    _ => VcpuSet::EMPTY,
                },
            };
        }
        if offset == gicr::WAKER {
            self.vcpus[vcpu].processor_sleep = value as u32 & gicr::WAKER_PROCESSOR_SLEEP != 0;
        }
        VcpuSet::EMPTY
    }

    // ---- shared register shapes -------------------------------------------------------

    /// Whether `intid` is reachable through the distributor (`distributor`) or a
    /// redistributor: SPIs the slice owns, or private interrupts respectively.
    fn visible(&self, intid: u32, distributor: bool) -> bool {
        if distributor {
            self.owns_spi(intid)
        } else {
            intid < SPI_BASE
        }
    }

    fn bits_read(&self, vcpu: usize, kind: BitRegister, first: u32, distributor: bool) -> u32 {
        (0..32).fold(0, |word, bit| {
            let intid = first + bit;
            let set = self.visible(intid, distributor)
                && self.irq(vcpu, intid).is_some_and(|irq| match kind {
                    BitRegister::Group => irq.group1,
                    BitRegister::SetEnable | BitRegister::ClearEnable => irq.enabled,
                    BitRegister::SetPending | BitRegister::ClearPending => {
                        irq.pending || (!irq.edge && irq.level)
                    }
                    BitRegister::SetActive | BitRegister::ClearActive => irq.in_list_register,
                });
            word | u32::from(set) << bit
        })
    }

    fn bits_write(
        &mut self,
        vcpu: usize,
        kind: BitRegister,
        first: u32,
        value: u32,
        distributor: bool,
    ) -> VcpuSet {
        let mut kick = VcpuSet::EMPTY;
        for bit in 0..32 {
            let intid = first + bit;
            let set = value & (1 << bit) != 0;
            if !self.visible(intid, distributor) || (kind != BitRegister::Group && !set) {
                continue;
            }
            let destination = self.destination(vcpu, intid);
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            match kind {
                BitRegister::Group => irq.group1 = set,
                BitRegister::SetEnable => irq.enabled = true,
                BitRegister::ClearEnable => irq.enabled = false,
                BitRegister::SetPending => irq.pending = true,
                BitRegister::ClearPending => irq.pending = false,
                // Active state lives in the list registers; the guest's view is not writable.
                BitRegister::SetActive | BitRegister::ClearActive => continue,
            }
            kick = kick.with(destination);
        }
        kick
    }

    fn priorities_read(&self, vcpu: usize, first: u32, width: u8, distributor: bool) -> u64 {
        (0..u32::from(width.min(8))).fold(0u64, |word, byte| {
            let intid = first + byte;
            let priority = if self.visible(intid, distributor) {
                self.irq(vcpu, intid).map_or(0, |i| i.priority)
            } else {
                0
            };
            word | u64::from(priority) << (8 * byte)
        })
    }

    fn priorities_write(
        &mut self,
        vcpu: usize,
        first: u32,
        width: u8,
        value: u64,
        distributor: bool,
    ) {
        for byte in 0..u32::from(width.min(8)) {
            let intid = first + byte;
            if self.visible(intid, distributor)
                && let Some(irq) = self.irq_mut(vcpu, intid)
            {
                irq.priority = (value >> (8 * byte)) as u8;
            }
        }
    }

    fn config_read(&self, vcpu: usize, first: u32, distributor: bool) -> u32 {
        (0..16).fold(0, |word, n| {
            let intid = first + n;
            let edge =
                self.visible(intid, distributor) && self.irq(vcpu, intid).is_some_and(|i| i.edge);
            word | u32::from(edge) << (2 * n + 1)
        })
    }

    fn config_write(&mut self, vcpu: usize, first: u32, value: u32, distributor: bool) {
        for n in 0..16 {
            let intid = first + n;
            // SGIs are always edge-triggered (ICFGR0 is read-only).
            if intid < 16 || !self.visible(intid, distributor) {
                continue;
            }
            if let Some(irq) = self.irq_mut(vcpu, intid) {
                irq.edge = value & (1 << (2 * n + 1)) != 0;
            }
        }
    }
}

/// Registers with one bit per INTID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BitRegister {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

/// Which one-bit-per-INTID register `offset` falls in, and the first INTID of that word.
fn bit_register(offset: u64) -> Option<(BitRegister, u32)> {
    let banks = [
        (gicd::IGROUPR, BitRegister::Group),
        (gicd::ISENABLER, BitRegister::SetEnable),
        (gicd::ICENABLER, BitRegister::ClearEnable),
        (gicd::ISPENDR, BitRegister::SetPending),
        (gicd::ICPENDR, BitRegister::ClearPending),
        (gicd::ISACTIVER, BitRegister::SetActive),
        (gicd::ICACTIVER, BitRegister::ClearActive),
    ];
    let (base, kind) = banks
        .into_iter()
        .find(|(base, _)| (*base..base + 0x80).contains(&offset))?;
    let first = ((offset - base) / 4 * 32) as u32;
    (first < INTIDS).then_some((kind, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UART: u32 = 33;
    const SGI_BASE: u64 = 0x1_0000;

    fn gic(vcpus: usize) -> VirtualGic {
        let mut g = VirtualGic::new(vcpus, &[UART]);
        g.distributor_write(gicd::CTLR, 4, u64::from(gicd::CTLR_ENABLE_GRP1));
        g
    }

    /// Enables `intid` in group 1 at `priority` the way Linux does.
    fn enable(g: &mut VirtualGic, vcpu: usize, intid: u32, priority: u8) {
        let (word, bit) = (u64::from(intid / 32) * 4, 1u64 << (intid % 32));
        if intid < SPI_BASE {
            g.redistributor_write(vcpu, SGI_BASE + gicd::IGROUPR, 4, u64::from(u32::MAX));
            g.redistributor_write(
                vcpu,
                SGI_BASE + gicd::IPRIORITYR + u64::from(intid),
                1,
                u64::from(priority),
            );
            g.redistributor_write(vcpu, SGI_BASE + gicd::ISENABLER, 4, bit);
        } else {
            g.distributor_write(gicd::IGROUPR + word, 4, u64::from(u32::MAX));
            g.distributor_write(gicd::IPRIORITYR + u64::from(intid), 1, u64::from(priority));
            g.distributor_write(gicd::ISENABLER + word, 4, bit);
        }
    }

    fn lr_intid(value: u64) -> u32 {
        value as u32
    }

    fn lr_state(value: u64) -> u64 {
        value >> 62
    }

    #[test]
    fn vcpu_sets_list_their_members_in_order() {
        let set = VcpuSet::EMPTY.with(127).with(0).with(5).with(200);
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 5, 127]);
        assert_eq!(VcpuSet::EMPTY.iter().count(), 0);
    }

    #[test]
    fn distributor_identifies_itself() {
        let g = gic(2);
        assert_eq!(
            g.distributor_read(gicd::CTLR, 4) as u32,
            gicd::CTLR_ENABLE_GRP1 | gicd::CTLR_ARE | gicd::CTLR_DS
        );
        let typer = g.distributor_read(gicd::TYPER, 4);
        assert_eq!(typer & 0x1f, 3, "ITLinesNumber: 128 INTIDs");
        assert_eq!((typer >> 19) & 0x1f, 9, "10 bits of INTID");
        assert_eq!(g.distributor_read(gicd::PIDR2, 4), 0x3b);
        assert_eq!(g.distributor_read(gicd::IIDR, 4), 0x43b);
    }

    #[test]
    fn foreign_spis_are_raz_wi() {
        let mut g = gic(2);
        assert!(
            g.distributor_write(gicd::ISENABLER + 4, 4, u64::from(u32::MAX))
                .contains(0)
        );
        assert_eq!(
            g.distributor_read(gicd::ISENABLER + 4, 4),
            1 << 1,
            "only INTID 33 sticks"
        );
        g.distributor_write(gicd::IPRIORITYR + 32, 4, 0x8080_8080);
        assert_eq!(
            g.distributor_read(gicd::IPRIORITYR + 32, 4),
            0x8000,
            "INTIDs 32, 34, 35 are not the slice's"
        );
        assert_eq!(g.distributor_read(gicd::IPRIORITYR + 33, 1), 0x80);
        assert!(g.raise(0, 40).is_empty());
        // Private interrupts are not reachable through the distributor (affinity routing).
        g.distributor_write(gicd::ISENABLER, 4, u64::from(u32::MAX));
        assert_eq!(g.redistributor_read(0, SGI_BASE + gicd::ISENABLER, 4), 0);
    }

    #[test]
    fn router_only_names_own_vcpus() {
        let mut g = gic(2);
        let router = gicd::IROUTER + 8 * u64::from(UART);
        g.distributor_write(router, 8, 1);
        assert_eq!(g.distributor_read(router, 8), 1);
        g.distributor_write(router, 8, 2);
        assert_eq!(g.distributor_read(router, 8), 1, "vCPU 2 does not exist");
        g.distributor_write(router, 8, 1 << 8);
        assert_eq!(
            g.distributor_read(router, 8),
            1,
            "Aff1 = 1 is outside the slice"
        );
        g.distributor_write(router, 8, 1 << 31);
        assert_eq!(
            g.distributor_read(router, 8),
            0,
            "any-PE routing goes to vCPU 0"
        );
        g.distributor_write(gicd::IROUTER + 8 * 40, 8, 1);
        assert_eq!(
            g.distributor_read(gicd::IROUTER + 8 * 40, 8),
            0,
            "foreign SPI"
        );
    }

    #[test]
    fn redistributor_typer_and_waker() {
        let mut g = gic(3);
        let typer = |g: &VirtualGic, v| g.redistributor_read(v, gicr::TYPER, 8);
        assert_eq!(typer(&g, 0) >> 32, 0);
        assert_eq!(typer(&g, 2) >> 32, 2);
        assert_eq!(typer(&g, 1) & (1 << 4), 0);
        assert_eq!(typer(&g, 2) & (1 << 4), 1 << 4, "Last on the last frame");
        assert_eq!(
            g.redistributor_read(2, 0xc, 4),
            2,
            "upper half by 32-bit read"
        );
        assert_eq!(g.redistributor_read(1, gicr::WAKER, 4), 0b110);
        g.redistributor_write(1, gicr::WAKER, 4, 0);
        assert_eq!(g.redistributor_read(1, gicr::WAKER, 4), 0);
        assert_eq!(g.redistributor_read(3, gicr::TYPER, 8), 0, "no such vCPU");
        assert_eq!(
            g.redistributor_read(0, SGI_BASE + gicd::ICFGR, 4),
            0xaaaa_aaaa,
            "SGIs are edge"
        );
    }

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

    #[test]
    fn guest_view_of_state_registers() {
        let mut g = gic(1);
        enable(&mut g, 0, UART, 0);
        g.distributor_write(gicd::ISPENDR + 4, 4, 1 << 1);
        assert_eq!(g.distributor_read(gicd::ISPENDR + 4, 4), 1 << 1);
        g.distributor_write(gicd::ICPENDR + 4, 4, 1 << 1);
        assert_eq!(g.distributor_read(gicd::ISPENDR + 4, 4), 0);
        g.distributor_write(gicd::ICFGR + 8, 4, 0b10 << 2);
        assert_eq!(
            g.distributor_read(gicd::ICFGR + 8, 4),
            0b10 << 2,
            "INTID 33 edge"
        );
        g.distributor_write(gicd::ICFGR + 8, 4, u64::from(u32::MAX));
        assert_eq!(
            g.distributor_read(gicd::ICFGR + 8, 4),
            0b10 << 2,
            "others not writable"
        );
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

    #[test]
    fn message_based_spis() {
        let owned: Vec<u32> = (64..96).collect();
        let mut g = VirtualGic::new(2, &owned).with_mbi();
        g.distributor_write(gicd::CTLR, 4, u64::from(gicd::CTLR_ENABLE_GRP1));
        assert_ne!(g.distributor_read(gicd::TYPER, 4) & (1 << 16), 0, "MBIS");
        enable(&mut g, 0, 70, 0xa0);
        // Linux configures MBI SPIs edge-triggered (ICFGR: 2 bits per INTID, bit 1 = edge).
        g.distributor_write(gicd::ICFGR + 4 * (70 / 16), 4, 0b10 << (2 * (70 % 16)));
        g.distributor_write(gicd::IROUTER + 8 * 70, 8, 1);
        assert_eq!(
            g.distributor_write(gicd::SETSPI_NSR, 4, 70),
            VcpuSet::EMPTY.with(1)
        );
        assert!(
            g.distributor_write(gicd::SETSPI_NSR, 4, 33).is_empty(),
            "not the slice's SPI"
        );
        assert!(
            g.distributor_write(gicd::SETSPI_NSR, 4, 27).is_empty(),
            "not an SPI"
        );
        let mut lrs = [0u64; 4];
        g.sync_list_registers(1, &mut lrs);
        assert_eq!(lr_intid(lrs[0]), 70);
        assert_eq!(lrs[0] & lr::EOI, 0, "edge-triggered: no EOI maintenance");
        // A slice restart keeps the slice's MBI.
        g.reset();
        assert_ne!(
            g.distributor_read(gicd::TYPER, 4) & (1 << 16),
            0,
            "MBIS after reset"
        );
        // Without MBI the registers are reserved.
        let mut plain = gic(1);
        assert_eq!(plain.distributor_read(gicd::TYPER, 4) & (1 << 16), 0);
        assert!(plain.distributor_write(gicd::SETSPI_NSR, 4, 33).is_empty());
    }

    #[test]
    fn out_of_range_vcpus_and_offsets_are_harmless() {
        let mut g = gic(1);
        assert!(g.redistributor_write(5, gicr::WAKER, 4, 0).is_empty());
        assert_eq!(g.redistributor_read(0, 0xfff0, 4), 0);
        assert_eq!(g.distributor_read(0x9000, 4), 0);
        assert!(g.distributor_write(0x9000, 4, 1).is_empty());
        assert_eq!(g.sync_list_registers(7, &mut [0; 4]).changed, 0);
        assert!(g.send_sgi(9, 0xffff).contains(0));
        assert_eq!(
            bit_register(gicd::ISENABLER + 0x7c),
            None,
            "beyond INTID 127"
        );
    }
}
