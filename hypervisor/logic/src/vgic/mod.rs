//! The virtual GICv3 of one slice (Arm IHI 0069H, "GICv3 and GICv4 Architecture
//! Specification"): the emulated distributor (§12.9) and redistributors (§12.10, §12.11), the
//! state of every virtual interrupt, SGI routing inside the slice (§12.2.23), and the choice of
//! what each vCPU's list registers hold (§11.2, `ICH_LR<n>_EL2`).
//!
//! The guest sees a single-security-state GIC with affinity routing always on. It sees and
//! configures only the SPIs its slice owns (today its PL011); every other SPI reads as zero and
//! ignores writes. Routing and SGIs can only name its own vCPUs: vCPU *i* has affinity
//! 0.0.0.*i*. The hardware list registers are read and written by the vCPU's own core only;
//! [`VirtualGic::sync_list_registers`] takes their values and returns the new ones.
//!
//! The parts: `state` holds each interrupt's state and the slice's events (device lines,
//! SGIs, resets); `list_registers` chooses what each vCPU's list registers hold; `registers`
//! emulates the distributor's and redistributors' registers on top of both.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use crate::vits::VirtualIts;

mod list_registers;
mod registers;
mod state;

pub use list_registers::{ListRegisterUpdate, hardware_in_flight};
use state::{Irq, Spi, VcpuState};

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

/// Bytes of one vCPU's redistributor (RD_base + SGI_base).
pub const REDISTRIBUTOR_SIZE: u64 = 0x2_0000;

/// A set of vCPUs (by index, 0..128) whose cores must look at their list registers again.
/// Two 64-bit words kept apart (the low one holds every vCPU of slices up to 64 vCPUs): every
/// exit that touches the vGIC builds and walks one, and 128-bit shifts cost several
/// instructions each on aarch64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuSet {
    low: u64,
    high: u64,
}

impl VcpuSet {
    pub const EMPTY: VcpuSet = VcpuSet { low: 0, high: 0 };

    /// The set with `vcpu` (unchanged for an index past 127).
    pub fn with(mut self, vcpu: usize) -> VcpuSet {
        match vcpu {
            0..64 => self.low |= 1 << vcpu,
            64..128 => self.high |= 1 << (vcpu - 64),
            _ => {}
        }
        self
    }

    pub fn union(self, other: VcpuSet) -> VcpuSet {
        VcpuSet {
            low: self.low | other.low,
            high: self.high | other.high,
        }
    }

    pub fn contains(self, vcpu: usize) -> bool {
        match vcpu {
            0..64 => self.low & 1 << vcpu != 0,
            64..128 => self.high & 1 << (vcpu - 64) != 0,
            _ => false,
        }
    }

    pub fn is_empty(self) -> bool {
        self.low | self.high == 0
    }

    /// The set without `vcpu`.
    pub fn without(mut self, vcpu: usize) -> VcpuSet {
        match vcpu {
            0..64 => self.low &= !(1 << vcpu),
            64..128 => self.high &= !(1 << (vcpu - 64)),
            _ => {}
        }
        self
    }

    /// The members, lowest first; costs one step per member (it runs on every exit that
    /// touches the vGIC, usually with one member or none).
    pub fn iter(self) -> VcpuSet {
        self
    }
}

/// A set iterates over its members, lowest first, taking them out as it goes.
impl Iterator for VcpuSet {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.low != 0 {
            let member = self.low.trailing_zeros() as usize;
            self.low &= self.low - 1;
            Some(member)
        } else if self.high != 0 {
            let member = self.high.trailing_zeros() as usize;
            self.high &= self.high - 1;
            Some(64 + member)
        } else {
            None
        }
    }
}

/// The virtual GIC of one slice.
#[derive(Clone, Debug)]
pub struct VirtualGic {
    ctlr: u32,
    spis: Vec<Spi>,
    /// SPIs the slice owns (bit n = INTID 32 + n).
    owned: u128,
    /// Pending SPIs (bit n = INTID 32 + n), only ever owned ones.
    spi_pending: u128,
    vcpus: Vec<VcpuState>,
    /// vCPUs whose interrupts changed since their last list-register pass.
    dirty: VcpuSet,
    /// The slice's devices signal SPIs through GICD_SETSPI_NSR (GICD_TYPER.MBIS).
    mbi: bool,
    /// The slice's virtual ITS and its vCPUs' LPIs (GICv4 nodes only; then no MBI).
    its: Option<Box<VirtualIts>>,
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
            spi_pending: 0,
            vcpus: (0..vcpus).map(|_| VcpuState::new()).collect(),
            dirty: VcpuSet::EMPTY,
            mbi: false,
            its: None,
        }
    }

    /// A GIC whose message-based SPIs (GICD_SETSPI_NSR) are on, for a slice with devices that
    /// send MSIs.
    pub fn with_mbi(mut self) -> Self {
        self.mbi = true;
        self
    }

    /// A GIC with LPIs from the virtual ITS `its` (docs/decisions/0004-gicv4-virtual-its.md):
    /// GICD_TYPER.LPIS, GICR_TYPER.PLPIS, the redistributors' LPI registers, and vLPIs in the
    /// list registers. Message-based SPIs are off.
    pub fn with_its(mut self, its: VirtualIts) -> Self {
        self.its = Some(Box::new(its));
        self.mbi = false;
        self
    }

    /// The virtual ITS, if the slice has one. Whoever changes its LPI state passes the vCPUs
    /// it names to [`VirtualGic::lpis_changed`].
    pub fn its_mut(&mut self) -> Option<&mut VirtualIts> {
        self.its.as_deref_mut()
    }

    /// Whether the slice has a virtual ITS.
    pub fn has_its(&self) -> bool {
        self.its.is_some()
    }

    /// The vITS changed the LPIs of `vcpus`: their list registers need a pass.
    pub fn lpis_changed(&mut self, vcpus: VcpuSet) -> VcpuSet {
        let vcpus = vcpus
            .iter()
            .filter(|&v| v < self.vcpus.len())
            .fold(VcpuSet::EMPTY, VcpuSet::with);
        self.mark(vcpus)
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

    /// Every vCPU of the slice.
    fn all_vcpus(&self) -> VcpuSet {
        (0..self.vcpus.len()).fold(VcpuSet::EMPTY, VcpuSet::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_sets_list_their_members_in_order() {
        let set = VcpuSet::EMPTY.with(127).with(0).with(5).with(200).with(64);
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 5, 64, 127]);
        assert_eq!(VcpuSet::EMPTY.iter().count(), 0);
        assert!(set.contains(64) && set.contains(127) && !set.contains(63));
        assert!(!set.contains(200), "only 128 vCPUs");
        assert_eq!(
            set.without(64).without(300).iter().collect::<Vec<_>>(),
            [0, 5, 127]
        );
        assert!(
            set.without(0)
                .without(5)
                .without(64)
                .without(127)
                .is_empty()
        );
        assert_eq!(
            VcpuSet::EMPTY.with(1).union(VcpuSet::EMPTY.with(100)),
            VcpuSet::EMPTY.with(100).with(1)
        );
    }
}

/// What the tests of every part share: a slice's GIC set up the way Linux does.
#[cfg(test)]
mod testing {
    use super::registers::gicd;
    use super::*;

    pub(super) const UART: u32 = 33;
    pub(super) const SGI_BASE: u64 = 0x1_0000;

    pub(super) fn gic(vcpus: usize) -> VirtualGic {
        let mut g = VirtualGic::new(vcpus, &[UART]);
        g.distributor_write(gicd::CTLR, 4, u64::from(gicd::CTLR_ENABLE_GRP1));
        g
    }

    /// Enables `intid` in group 1 at `priority` the way Linux does.
    pub(super) fn enable(g: &mut VirtualGic, vcpu: usize, intid: u32, priority: u8) {
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
}
