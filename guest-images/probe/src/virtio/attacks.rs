//! The network attacks' outcomes and verdicts (`net-*`). The rule of every attack holds: a
//! case the probe could not set up or send is `NOT-CONTAINED unverified`, never a pass; a case
//! where the device moved data, or an interrupt or write landed where it must not, is
//! `NOT-CONTAINED`. The probe sees only its own side: data that arrived or left, interrupts it
//! got, registers it reads back. What the device did elsewhere (an SMMU fault record, a victim's
//! canary) the harness checks.

use core::fmt;

use crate::verdict::{Outcome, Verdict};

/// What one descriptor aimed outside the slice's RAM led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaCase {
    /// The device returned the chain in the used ring as done (it read or wrote there).
    Completed {
        /// `len` of the used element.
        len: u32,
    },
    /// An ARP reply arrived for a request whose chain included the outside buffer: the
    /// device read the whole chain.
    Replied,
    /// No used element within the deadline.
    NoCompletion,
    /// The device set DEVICE_NEEDS_RESET (status value) and returned nothing.
    NeedsReset(u8),
    /// The case could not be set up (why).
    NotSent(&'static str),
}

impl DmaCase {
    fn breached(self) -> bool {
        matches!(self, DmaCase::Completed { .. } | DmaCase::Replied)
    }
}

/// `completed(len=<n>)`, `arp-reply`, `no-completion`, `needs-reset(status=0x..)`,
/// `not-sent(<why>)`.
impl fmt::Display for DmaCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DmaCase::Completed { len } => write!(f, "completed(len={len})"),
            DmaCase::Replied => f.write_str("arp-reply"),
            DmaCase::NoCompletion => f.write_str("no-completion"),
            DmaCase::NeedsReset(s) => write!(f, "needs-reset(status={s:#x})"),
            DmaCase::NotSent(why) => write!(f, "not-sent({why})"),
        }
    }
}

/// Most outside addresses one attack tries.
pub const MAX_TARGETS: usize = 2;

/// `net-desc-outside`: per outside address, a TX chain whose second buffer is outside, an RX
/// queue whose only buffer is outside (an ARP request provokes a frame into it), and a TX queue
/// whose descriptor table is outside (rings in RAM); the NIC set up again for each case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescOutsideOutcome {
    /// Whether the NIC passed its own exchange before the attack (else nothing can be told).
    pub nic_ready: bool,
    /// Per address: (address, TX case, RX case, descriptor-table case).
    pub cases: [Option<(u64, DmaCase, DmaCase, DmaCase)>; MAX_TARGETS],
    /// Whether the NIC worked again after the cases (set up afresh; informational).
    pub recovered: Option<bool>,
}

impl Outcome for DescOutsideOutcome {
    fn verdict(&self) -> Verdict {
        let cases = self.cases.iter().flatten();
        let all = |&(_, tx, rx, ring): &(u64, DmaCase, DmaCase, DmaCase)| [tx, rx, ring];
        if cases.clone().flat_map(all).any(DmaCase::breached) {
            return Verdict::NotContained;
        }
        let unsent = cases
            .clone()
            .flat_map(all)
            .any(|c| matches!(c, DmaCase::NotSent(_)));
        if !self.nic_ready || unsent || cases.count() == 0 {
            return Verdict::Unverified;
        }
        Verdict::Contained
    }
}

/// `[nic-not-ready ]at=0x.. tx=<case> rx=<case> ring=<case> ... recovered=ok|failed`.
impl fmt::Display for DescOutsideOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if !self.nic_ready {
            f.write_str("nic-not-ready")?;
            sep = " ";
        }
        for &(at, tx, rx, ring) in self.cases.iter().flatten() {
            write!(f, "{sep}at={at:#x} tx={tx} rx={rx} ring={ring}")?;
            sep = " ";
        }
        match self.recovered {
            Some(true) => write!(f, "{sep}recovered=ok"),
            Some(false) => write!(f, "{sep}recovered=failed"),
            None => Ok(()),
        }
    }
}

/// Whether an interrupt came to the slice's own doorbell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// It came, after this many microseconds.
    Delivered(u64),
    /// It did not come within the deadline.
    NotDelivered,
    /// The frame that should raise it could not be sent (why).
    NotSent(&'static str),
}

/// `delivered(us=<n>)`, `not-delivered`, `not-sent(<why>)`.
impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Delivery::Delivered(us) => write!(f, "delivered(us={us})"),
            Delivery::NotDelivered => f.write_str("not-delivered"),
            Delivery::NotSent(why) => write!(f, "not-sent({why})"),
        }
    }
}

/// What an MSI-X entry aimed elsewhere led to, as far as the probe can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiEffect {
    /// Nothing the probe can observe arrived anywhere, its own doorbell included.
    NoneSeen,
    /// The probe's own doorbell got the interrupt anyway (the entry did not take effect:
    /// the write was ignored or virtualized).
    OwnDoorbell,
    /// The aimed-at target observably got it: the SPI became pending, the RAM word changed.
    Landed,
    /// The entry could not be written or the frame not sent (why).
    NotSent(&'static str),
}

/// `none-seen`, `own-doorbell`, `LANDED`, `not-sent(<why>)`.
impl fmt::Display for MsiEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MsiEffect::NoneSeen => f.write_str("none-seen"),
            MsiEffect::OwnDoorbell => f.write_str("own-doorbell"),
            MsiEffect::Landed => f.write_str("LANDED"),
            MsiEffect::NotSent(why) => write!(f, "not-sent({why})"),
        }
    }
}

/// Most MSI-X cases.
pub const MAX_MSI_CASES: usize = 6;

/// `net-msix-foreign`: the TX vector's entry aimed at other doorbells (the physical ITS
/// translater, SPIs outside the slice's range, an address outside its RAM, a word of its own
/// RAM), a frame sent each time; then the entry restored and its own interrupt checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixOutcome {
    /// Own interrupt before the attack.
    pub baseline: Delivery,
    /// (label, address, data, effect).
    pub cases: [Option<(&'static str, u64, u32, MsiEffect)>; MAX_MSI_CASES],
    /// Own interrupt after restoring the entry.
    pub restored: Delivery,
}

impl Outcome for MsixOutcome {
    fn verdict(&self) -> Verdict {
        let cases = self.cases.iter().flatten();
        if cases.clone().any(|c| c.3 == MsiEffect::Landed) {
            return Verdict::NotContained;
        }
        if !matches!(self.baseline, Delivery::Delivered(_))
            || cases.clone().any(|c| matches!(c.3, MsiEffect::NotSent(_)))
            || matches!(self.restored, Delivery::NotSent(_))
        {
            return Verdict::Unverified;
        }
        Verdict::of(matches!(self.restored, Delivery::Delivered(_)))
    }
}

/// `baseline=<delivery> <label>@0x..=0x..:<effect> ... restored=<delivery>`.
impl fmt::Display for MsixOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "baseline={}", self.baseline)?;
        for (label, addr, data, effect) in self.cases.iter().flatten() {
            write!(f, " {label}@{addr:#x}={data:#x}:{effect}")?;
        }
        write!(f, " restored={}", self.restored)
    }
}

/// `net-pba-write`: the PBA's first dword written with all-ones, then zero; it is read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PbaOutcome {
    /// Read before, then read back after each write.
    Done {
        /// Address written.
        addr: u64,
        /// Before.
        before: u32,
        /// After writing all-ones.
        after_ones: u32,
        /// After writing zero.
        after_zero: u32,
    },
    /// A write faulted: refused.
    Refused {
        /// Address.
        addr: u64,
        /// ESR.
        esr: u64,
    },
    /// The PBA could not be located or read (why).
    Unverified(&'static str),
}

impl Outcome for PbaOutcome {
    fn verdict(&self) -> Verdict {
        match *self {
            PbaOutcome::Done {
                before,
                after_ones,
                after_zero,
                ..
            } => Verdict::of(after_ones == before && after_zero == before),
            PbaOutcome::Refused { .. } => Verdict::Contained,
            PbaOutcome::Unverified(_) => Verdict::Unverified,
        }
    }
}

/// `pba=0x.. before=0x.. after-ones=0x.. after-zero=0x..`, `pba=0x.. write-fault esr=0x..`,
/// `<why>`.
impl fmt::Display for PbaOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PbaOutcome::Done {
                addr,
                before,
                after_ones,
                after_zero,
            } => write!(
                f,
                "pba={addr:#x} before={before:#x} after-ones={after_ones:#x} after-zero={after_zero:#x}"
            ),
            PbaOutcome::Refused { addr, esr } => {
                write!(f, "pba={addr:#x} write-fault esr={esr:#x}")
            }
            PbaOutcome::Unverified(why) => f.write_str(why),
        }
    }
}

/// `net-msix-pending`: the TX vector masked while a frame is sent, then unmasked. PCIe Base
/// §6.1.4.5: a masked vector's message is not sent but its Pending Bit set; unmasked with the
/// bit set, the function sends the message and clears the bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingOutcome {
    /// Masked, a frame sent, read; unmasked, waited, read.
    Done {
        /// Interrupts of the vector taken while it was masked (must be 0).
        while_masked: u32,
        /// Its Pending Bit while masked, after the frame (must be set).
        pba_masked: bool,
        /// Whether its interrupt arrived after the unmask (must).
        delivered: bool,
        /// Its Pending Bit after that (must be clear).
        pba_after: bool,
    },
    /// An entry write, the frame or a PBA read failed (why).
    Unverified(&'static str),
}

impl Outcome for PendingOutcome {
    fn verdict(&self) -> Verdict {
        match *self {
            PendingOutcome::Done {
                while_masked,
                pba_masked,
                delivered,
                pba_after,
            } => Verdict::of(while_masked == 0 && pba_masked && delivered && !pba_after),
            PendingOutcome::Unverified(_) => Verdict::Unverified,
        }
    }
}

/// `masked-irqs=<n> pba-masked=set|clear delivered=yes|no pba-after=set|clear`, `<why>`.
impl fmt::Display for PendingOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bit = |set: bool| if set { "set" } else { "clear" };
        match *self {
            PendingOutcome::Done {
                while_masked,
                pba_masked,
                delivered,
                pba_after,
            } => write!(
                f,
                "masked-irqs={while_masked} pba-masked={} delivered={} pba-after={}",
                bit(pba_masked),
                if delivered { "yes" } else { "no" },
                bit(pba_after)
            ),
            PendingOutcome::Unverified(why) => f.write_str(why),
        }
    }
}

/// What moving a BAR over something showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarCase {
    /// What lies there reads as before.
    Intact,
    /// What lies there changed: the BAR took it over.
    Changed {
        /// The word before.
        before: u64,
        /// The word with the BAR moved there.
        after: u64,
    },
    /// The config write faulted: refused.
    Refused,
    /// While the BARs overlap, nothing decodes the address (reads all-ones, as a host bridge
    /// answers an address no BAR claims): the moved BAR took nothing over.
    Unclaimed,
    /// Not attempted (why).
    NotSent(&'static str),
}

/// `intact`, `CHANGED(0x..->0x..)`, `refused`, `unclaimed`, `not-sent(<why>)`.
impl fmt::Display for BarCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BarCase::Intact => f.write_str("intact"),
            BarCase::Changed { before, after } => write!(f, "CHANGED({before:#x}->{after:#x})"),
            BarCase::Refused => f.write_str("refused"),
            BarCase::Unclaimed => f.write_str("unclaimed"),
            BarCase::NotSent(why) => write!(f, "not-sent({why})"),
        }
    }
}

/// `net-bar-move`: the NIC's notify BAR moved over a page of the slice's own RAM (the page
/// read through the CPU must stay RAM), then over another function's BAR (its register must
/// read as before); the BAR restored and the NIC used again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarMoveOutcome {
    /// Over own RAM: (PCI address written, case).
    pub over_ram: (u64, BarCase),
    /// Over another BAR: (label of the other function's BAR, address, case).
    pub over_bar: (&'static str, u64, BarCase),
    /// Whether the NIC exchanged frames again after the restore (informational).
    pub nic_after: Option<bool>,
}

impl Outcome for BarMoveOutcome {
    fn verdict(&self) -> Verdict {
        let cases = [self.over_ram.1, self.over_bar.2];
        if cases.iter().any(|c| matches!(c, BarCase::Changed { .. })) {
            Verdict::NotContained
        } else if cases.iter().any(|c| matches!(c, BarCase::NotSent(_))) {
            Verdict::Unverified
        } else {
            Verdict::Contained
        }
    }
}

/// `over-ram@0x..=<case> over-<label>@0x..=<case> nic-after=ok|failed`.
impl fmt::Display for BarMoveOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ram_at, ram) = self.over_ram;
        let (label, at, bar) = self.over_bar;
        write!(f, "over-ram@{ram_at:#x}={ram} over-{label}@{at:#x}={bar}")?;
        match self.nic_after {
            Some(true) => f.write_str(" nic-after=ok"),
            Some(false) => f.write_str(" nic-after=failed"),
            None => Ok(()),
        }
    }
}

/// `net-bus-master`: frames queued, bus mastering cleared right after the notify, frames
/// notified again while it is off, then it is set again; the NIC must come back (after a
/// device reset if it needs one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusMasterOutcome {
    /// Frames queued.
    pub queued: u16,
    /// Used elements that appeared while bus mastering was off (informational: under the
    /// microvisor the physical bit may stay on, the DMA staying inside the slice).
    pub done_while_off: u16,
    /// Device status after bus mastering came back.
    pub status_after: u8,
    /// The Command write: `None` when it went through, the ESR when it faulted (refused).
    pub command_fault: Option<u64>,
    /// Whether the NIC exchanged frames afterwards (reset and set up again if it had to).
    pub recovered: Option<bool>,
    /// Preparation that failed (why).
    pub unverified: Option<&'static str>,
}

impl Outcome for BusMasterOutcome {
    fn verdict(&self) -> Verdict {
        if self.unverified.is_some() {
            return Verdict::Unverified;
        }
        if self.command_fault.is_some() {
            return Verdict::Contained;
        }
        match self.recovered {
            Some(true) => Verdict::Contained,
            Some(false) => Verdict::NotContained,
            None => Verdict::Unverified,
        }
    }
}

/// `queued=<n> done-while-off=<n> status-after=0x.. [command-fault esr=0x..] recovered=ok|failed`
/// or `<why>`.
impl fmt::Display for BusMasterOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = self.unverified {
            return f.write_str(why);
        }
        write!(
            f,
            "queued={} done-while-off={} status-after={:#x}",
            self.queued, self.done_while_off, self.status_after
        )?;
        if let Some(esr) = self.command_fault {
            write!(f, " command-fault esr={esr:#x}")?;
        }
        match self.recovered {
            Some(true) => f.write_str(" recovered=ok"),
            Some(false) => f.write_str(" recovered=failed"),
            None => Ok(()),
        }
    }
}

/// Most standard capability IDs listed.
pub const MAX_CAPS: usize = 12;

/// `net-hidden-caps`: the standard capability list is listed, the extended configuration space
/// (0x100-0xfff) is read, written (all-ones, then zero, at the first dwords) and read again;
/// it must read as empty (0) throughout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HiddenCapsOutcome {
    /// Standard capability IDs, in list order.
    pub caps: [u8; MAX_CAPS],
    /// How many.
    pub cap_count: usize,
    /// Non-zero extended dwords before the writes, and the first (offset, value).
    pub ext_before: (u32, Option<(u16, u32)>),
    /// Dwords written.
    pub writes: u32,
    /// Writes that faulted (refused).
    pub write_faults: u32,
    /// Non-zero extended dwords after the writes, and the first.
    pub ext_after: (u32, Option<(u16, u32)>),
    /// A read failed (why).
    pub unverified: Option<&'static str>,
}

impl Outcome for HiddenCapsOutcome {
    fn verdict(&self) -> Verdict {
        if self.unverified.is_some() {
            Verdict::Unverified
        } else {
            Verdict::of(self.ext_before.0 == 0 && self.ext_after.0 == 0)
        }
    }
}

/// `caps=0x11,0x09,... ext-nonzero=<n>[@0x..=0x..] writes=<n> write-faults=<n>
/// ext-nonzero-after=<n>[@0x..=0x..]` or `<why>`.
impl fmt::Display for HiddenCapsOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = self.unverified {
            return f.write_str(why);
        }
        f.write_str("caps=")?;
        for (i, id) in self.caps[..self.cap_count.min(MAX_CAPS)].iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{id:#04x}")?;
        }
        if self.cap_count == 0 {
            f.write_str("none")?;
        }
        let ext = |f: &mut fmt::Formatter<'_>, (n, first): (u32, Option<(u16, u32)>)| {
            write!(f, "{n}")?;
            match first {
                Some((off, v)) => write!(f, "@{off:#x}={v:#x}"),
                None => Ok(()),
            }
        };
        f.write_str(" ext-nonzero=")?;
        ext(f, self.ext_before)?;
        write!(
            f,
            " writes={} write-faults={} ext-nonzero-after=",
            self.writes, self.write_faults
        )?;
        ext(f, self.ext_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Line;

    #[test]
    fn desc_outside_verdicts() {
        let contained = DescOutsideOutcome {
            nic_ready: true,
            cases: [
                Some((
                    0x4800_0000,
                    DmaCase::NeedsReset(0x4f),
                    DmaCase::NoCompletion,
                    DmaCase::NeedsReset(0x4f),
                )),
                None,
            ],
            recovered: Some(true),
        };
        assert_eq!(
            format!("{}", Line(&contained)),
            "contained at=0x48000000 tx=needs-reset(status=0x4f) rx=no-completion \
             ring=needs-reset(status=0x4f) recovered=ok"
        );
        let nc = DmaCase::NoCompletion;
        let breached = DescOutsideOutcome {
            cases: [
                Some((0x4800_0000, nc, nc, nc)),
                Some((
                    0x1_4000_0000,
                    DmaCase::Completed { len: 0 },
                    DmaCase::NotSent("x"),
                    nc,
                )),
            ],
            ..contained
        };
        assert_eq!(breached.verdict(), Verdict::NotContained);
        let replied = DescOutsideOutcome {
            cases: [Some((1, DmaCase::Replied, nc, nc)), None],
            ..contained
        };
        assert_eq!(replied.verdict(), Verdict::NotContained);
        let unsent = DescOutsideOutcome {
            cases: [Some((1, nc, DmaCase::NotSent("no-rx-queue"), nc)), None],
            ..contained
        };
        assert_eq!(unsent.verdict(), Verdict::Unverified);
        let ring_read = DescOutsideOutcome {
            cases: [Some((1, nc, nc, DmaCase::Completed { len: 0 })), None],
            ..contained
        };
        assert_eq!(ring_read.verdict(), Verdict::NotContained);
        let not_ready = DescOutsideOutcome {
            nic_ready: false,
            ..contained
        };
        assert_eq!(not_ready.verdict(), Verdict::Unverified);
        assert!(format!("{not_ready}").starts_with("nic-not-ready at="));
        let nothing = DescOutsideOutcome {
            cases: [None, None],
            ..contained
        };
        assert_eq!(nothing.verdict(), Verdict::Unverified);
    }

    #[test]
    fn msix_verdicts() {
        let ok = MsixOutcome {
            baseline: Delivery::Delivered(120),
            cases: [
                Some(("its", 0x0809_0040, 0, MsiEffect::NoneSeen)),
                Some(("spi", 0x0800_0040, 33, MsiEffect::OwnDoorbell)),
                None,
                None,
                None,
                None,
            ],
            restored: Delivery::Delivered(80),
        };
        assert_eq!(
            format!("{}", Line(&ok)),
            "contained baseline=delivered(us=120) its@0x8090040=0x0:none-seen \
             spi@0x8000040=0x21:own-doorbell restored=delivered(us=80)"
        );
        let mut landed = ok;
        landed.cases[2] = Some(("own-ram", 0x4100_0000, 7, MsiEffect::Landed));
        assert_eq!(landed.verdict(), Verdict::NotContained);
        let lost = MsixOutcome {
            restored: Delivery::NotDelivered,
            ..ok
        };
        assert_eq!(lost.verdict(), Verdict::NotContained);
        let no_baseline = MsixOutcome {
            baseline: Delivery::NotDelivered,
            ..ok
        };
        assert_eq!(no_baseline.verdict(), Verdict::Unverified);
        let mut unsent = ok;
        unsent.cases[0] = Some(("its", 0, 0, MsiEffect::NotSent("entry-write")));
        assert_eq!(unsent.verdict(), Verdict::Unverified);
        let restore_unsent = MsixOutcome {
            restored: Delivery::NotSent("tx"),
            ..ok
        };
        assert_eq!(restore_unsent.verdict(), Verdict::Unverified);
    }

    #[test]
    fn pba_verdicts() {
        let ignored = PbaOutcome::Done {
            addr: 0x1000_0800,
            before: 0,
            after_ones: 0,
            after_zero: 0,
        };
        assert_eq!(
            format!("{}", Line(&ignored)),
            "contained pba=0x10000800 before=0x0 after-ones=0x0 after-zero=0x0"
        );
        let stuck = PbaOutcome::Done {
            addr: 0,
            before: 0,
            after_ones: 0xf,
            after_zero: 0,
        };
        assert_eq!(stuck.verdict(), Verdict::NotContained);
        assert_eq!(
            PbaOutcome::Refused {
                addr: 0,
                esr: 0x9600_0010
            }
            .verdict(),
            Verdict::Contained
        );
        let u = PbaOutcome::Unverified("no-msix");
        assert_eq!(format!("{}", Line(&u)), "NOT-CONTAINED unverified no-msix");
    }

    #[test]
    fn pending_verdicts() {
        let done = |while_masked, pba_masked, delivered, pba_after| PendingOutcome::Done {
            while_masked,
            pba_masked,
            delivered,
            pba_after,
        };
        assert_eq!(
            format!("{}", Line(&done(0, true, true, false))),
            "contained masked-irqs=0 pba-masked=set delivered=yes pba-after=clear"
        );
        for wrong in [
            done(1, true, true, false),
            done(0, false, true, false),
            done(0, true, false, false),
            done(0, true, true, true),
        ] {
            assert_eq!(wrong.verdict(), Verdict::NotContained, "{wrong}");
        }
        let u = PendingOutcome::Unverified("pba-read");
        assert_eq!(format!("{}", Line(&u)), "NOT-CONTAINED unverified pba-read");
    }

    #[test]
    fn bar_move_verdicts() {
        let ok = BarMoveOutcome {
            over_ram: (0x4100_0000, BarCase::Intact),
            over_bar: ("nvme-bar0", 0x1000_0000, BarCase::Intact),
            nic_after: Some(true),
        };
        assert_eq!(
            format!("{}", Line(&ok)),
            "contained over-ram@0x41000000=intact over-nvme-bar0@0x10000000=intact nic-after=ok"
        );
        let taken = BarMoveOutcome {
            over_bar: (
                "nvme-bar0",
                1,
                BarCase::Changed {
                    before: 1,
                    after: 2,
                },
            ),
            ..ok
        };
        assert_eq!(taken.verdict(), Verdict::NotContained);
        assert!(format!("{taken}").contains("CHANGED(0x1->0x2)"));
        let unclaimed = BarMoveOutcome {
            over_bar: ("own-bar1", 0x1000_0000, BarCase::Unclaimed),
            ..ok
        };
        assert_eq!(unclaimed.verdict(), Verdict::Contained);
        assert!(format!("{unclaimed}").contains("over-own-bar1@0x10000000=unclaimed"));
        let refused = BarMoveOutcome {
            over_ram: (0, BarCase::Refused),
            nic_after: Some(false),
            ..ok
        };
        assert_eq!(
            refused.verdict(),
            Verdict::Contained,
            "nic-after is informational"
        );
        let unsent = BarMoveOutcome {
            over_bar: ("bar1", 0, BarCase::NotSent("no-other-bar")),
            ..ok
        };
        assert_eq!(unsent.verdict(), Verdict::Unverified);
    }

    #[test]
    fn bus_master_verdicts() {
        let ok = BusMasterOutcome {
            queued: 8,
            done_while_off: 0,
            status_after: 0x4f,
            command_fault: None,
            recovered: Some(true),
            unverified: None,
        };
        assert_eq!(
            format!("{}", Line(&ok)),
            "contained queued=8 done-while-off=0 status-after=0x4f recovered=ok"
        );
        let dead = BusMasterOutcome {
            recovered: Some(false),
            ..ok
        };
        assert_eq!(dead.verdict(), Verdict::NotContained);
        let refused = BusMasterOutcome {
            command_fault: Some(0x96),
            recovered: Some(false),
            ..ok
        };
        assert_eq!(refused.verdict(), Verdict::Contained);
        let unverified = BusMasterOutcome {
            unverified: Some("nic-not-ready"),
            ..ok
        };
        assert_eq!(
            format!("{}", Line(&unverified)),
            "NOT-CONTAINED unverified nic-not-ready"
        );
    }

    #[test]
    fn hidden_caps_verdicts() {
        let mut caps = [0u8; MAX_CAPS];
        caps[..4].copy_from_slice(&[0x11, 0x09, 0x10, 0x01]);
        let empty = HiddenCapsOutcome {
            caps,
            cap_count: 4,
            ext_before: (0, None),
            writes: 4,
            write_faults: 0,
            ext_after: (0, None),
            unverified: None,
        };
        assert_eq!(
            format!("{}", Line(&empty)),
            "contained caps=0x11,0x09,0x10,0x01 ext-nonzero=0 writes=4 write-faults=0 ext-nonzero-after=0"
        );
        let visible = HiddenCapsOutcome {
            ext_before: (3, Some((0x100, 0x1401_0010))),
            ..empty
        };
        assert_eq!(visible.verdict(), Verdict::NotContained);
        assert!(format!("{visible}").contains("ext-nonzero=3@0x100=0x14010010"));
        let stuck = HiddenCapsOutcome {
            ext_after: (1, Some((0x100, 0xffff_ffff))),
            ..empty
        };
        assert_eq!(stuck.verdict(), Verdict::NotContained);
        let failed = HiddenCapsOutcome {
            unverified: Some("ext-read-fault"),
            ..empty
        };
        assert_eq!(failed.verdict(), Verdict::Unverified);
        let none = HiddenCapsOutcome {
            cap_count: 0,
            ..empty
        };
        assert!(format!("{none}").starts_with("caps=none "));
    }
}
