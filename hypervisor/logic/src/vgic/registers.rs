//! The emulated distributor (§12.9) and redistributors (§12.10 RD_base, §12.11 SGI_base): the
//! guest's register accesses, on top of the interrupt state.

use super::{INTIDS, PRIVATE, SPI_BASE, VcpuSet, VirtualGic};
use crate::vits::{LPI_ID_BITS, VirtualIts};

/// GIC implementer code for Arm (JEP106 0x43B), used in GICD_IIDR and GICR_IIDR.
const IIDR_ARM: u32 = 0x43b;
/// PIDR2 with ArchRev = 3 (GICv3).
const PIDR2_GICV3: u32 = 0x3b;

/// Distributor register offsets (§12.9, Table 12-25).
pub(super) mod gicd {
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
pub(super) mod gicr {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const WAKER: u64 = 0x0014;
    pub const PIDR2: u64 = 0xffe8;
    pub const SGI_BASE: u64 = 0x1_0000;
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
}

impl VirtualGic {
    /// Reads the distributor register at `offset` (`width` bytes).
    pub fn distributor_read(&self, offset: u64, width: u8) -> u64 {
        match offset {
            gicd::CTLR => u64::from(self.ctlr | gicd::CTLR_ARE | gicd::CTLR_DS),
            // ITLinesNumber = INTIDS/32 - 1, IDbits = 10 bits (value 9), No1N, MBIS; with a
            // vITS: LPIS and 14 INTID bits (value 13).
            gicd::TYPER if self.its.is_some() => {
                u64::from((INTIDS / 32 - 1) | 1 << 17 | (LPI_ID_BITS - 1) << 19 | 1 << 25)
            }
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
                if intid >= SPI_BASE {
                    self.set_pending(0, intid, false);
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
        if let Some(its) = self.its.as_deref()
            && VirtualIts::owns_redistributor_register(offset)
        {
            return its.redistributor_read(vcpu, offset, width);
        }
        match offset {
            gicr::IIDR => u64::from(IIDR_ARM),
            gicr::TYPER | 0x000c => {
                let last = if vcpu + 1 == self.vcpus.len() {
                    1 << 4
                } else {
                    0
                };
                // PLPIS with a vITS (DirectLPI stays 0: LPIs only through the ITS).
                let plpis = u64::from(self.its.is_some());
                let typer = (vcpu as u64) << 32 | (vcpu as u64) << 8 | last | plpis;
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
                        self.is_pending(vcpu, intid) || (!irq.edge && irq.level)
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
            match kind {
                BitRegister::SetPending | BitRegister::ClearPending => {
                    if self.irq(vcpu, intid).is_none() {
                        continue;
                    }
                    self.set_pending(vcpu, intid, kind == BitRegister::SetPending);
                }
                // Active state lives in the list registers; the guest's view is not writable.
                BitRegister::SetActive | BitRegister::ClearActive => continue,
                BitRegister::Group | BitRegister::SetEnable | BitRegister::ClearEnable => {
                    let Some(irq) = self.irq_mut(vcpu, intid) else {
                        continue;
                    };
                    match kind {
                        BitRegister::Group => irq.group1 = set,
                        BitRegister::SetEnable => irq.enabled = true,
                        _ => irq.enabled = false,
                    }
                }
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
    use super::super::list_registers::{lr, lr_intid};
    use super::super::testing::*;
    use super::*;

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
