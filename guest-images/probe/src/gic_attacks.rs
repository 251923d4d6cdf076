//! Outcomes and verdicts of the GIC attacks (`sgi-outside`, `spi-foreign`, `gicr-foreign`) and
//! of the functional checks beside them (`sgi-self-test`, `gicr-own`, where `contained` means
//! the check passed). `bare::gic_attacks` makes the accesses and builds these; the rules are
//! here: a fault of an access the attack made is the hypervisor refusing it (contained for an
//! attack, a failure for a functional check); anything that kept the probe from making the
//! access at all (no GIC system registers, a GIC address in RAM, an unmappable address, a
//! missing redistributor frame, a register that did not settle) is `unverified`, never a pass.

use core::fmt;

use crate::fault::Fault;
use crate::gic::{DistributorType, IntidSet, RedistributorType, routes_inside};
use crate::verdict::{Outcome, Verdict};

/// Why a GIC access was not made or did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicError {
    /// A guarded access to the named register did not complete.
    Access(&'static str, Fault),
    /// The address lies in RAM or in the probe's image: not a device, not accessed.
    InRam(u64),
    /// ICC_SRE_EL1.SRE stays 0: no GIC system-register interface.
    NoSystemRegisters(u64),
    /// No redistributor frame has this affinity.
    NoFrame(u64),
    /// GICR_WAKER.ChildrenAsleep or GICD_CTLR.RWP did not clear.
    Timeout(&'static str, u32),
}

impl GicError {
    /// Whether the access was made and faulted: refused by whoever owns the register. Every
    /// other error means the access was never made.
    pub fn refused(&self) -> bool {
        matches!(self, GicError::Access(_, fault) if fault.was_attempted())
    }
}

/// `<register> fault <class> esr=.. far=..`, `<register> unaddressable`,
/// `ram-address 0x..`, `no-gicv3-sysregs sre=0x..`, `no-redistributor affinity=0x..`,
/// `timeout <register>=0x..`.
impl fmt::Display for GicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GicError::Access(register, fault) => write!(f, "{register} {fault}"),
            GicError::InRam(addr) => write!(f, "ram-address {addr:#x}"),
            GicError::NoSystemRegisters(sre) => write!(f, "no-gicv3-sysregs sre={sre:#x}"),
            GicError::NoFrame(affinity) => write!(f, "no-redistributor affinity={affinity:#x}"),
            GicError::Timeout(register, value) => write!(f, "timeout {register}={value:#x}"),
        }
    }
}

/// `contained` for a refused access, `unverified` for one that was never made.
fn refusal(error: &GicError) -> Verdict {
    if error.refused() {
        Verdict::Contained
    } else {
        Verdict::Unverified
    }
}

/// How `sgi-outside` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgiOutside {
    /// ICC_SRE_EL1.SRE could not be set: no SGI could be sent.
    NoSgi(GicError),
    /// The ICC_SGI1R_EL1 write of this value did not complete.
    WriteFailed {
        /// The register value.
        value: u64,
        /// Why.
        error: GicError,
    },
    /// After the writes aimed outside (before the all-but-self broadcast), the SGI was
    /// pending at, or taken by, one of the slice's own vCPUs: a target outside the slice was
    /// read as one inside.
    Misdelivered {
        /// Index of the vCPU (device tree order) where it showed.
        vcpu: usize,
    },
    /// Every write was made and the slice kept running: the SGIs were dropped.
    Dropped {
        /// Writes made.
        writes: usize,
        /// ICC_CTLR_EL1.RSS (the writes with RS != 0 can name PEs).
        rss: bool,
    },
}

impl Outcome for SgiOutside {
    fn verdict(&self) -> Verdict {
        match self {
            SgiOutside::NoSgi(_) => Verdict::Unverified,
            SgiOutside::WriteFailed { error, .. } => refusal(error),
            SgiOutside::Misdelivered { .. } => Verdict::NotContained,
            SgiOutside::Dropped { .. } => Verdict::Contained,
        }
    }
}

/// `no-sgi <e>`, `sgi1r-refused 0x.. <e>` (or `sgi1r-failed` when not made),
/// `sgis-dropped writes=N rss=0|1`.
impl fmt::Display for SgiOutside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SgiOutside::NoSgi(e) => write!(f, "no-sgi {e}"),
            SgiOutside::WriteFailed { value, error } => {
                let what = if error.refused() { "refused" } else { "failed" };
                write!(f, "sgi1r-{what} {value:#x} {error}")
            }
            SgiOutside::Misdelivered { vcpu } => write!(f, "sgi-reached-own-vcpu={vcpu}"),
            SgiOutside::Dropped { writes, rss } => {
                write!(f, "sgis-dropped writes={writes} rss={}", u8::from(rss))
            }
        }
    }
}

/// How `sgi-self-test` (an SGI to a vCPU of the slice, which must take it) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// The receiving vCPU did not report its set-up in time.
    ReceiverNotReady {
        /// Its vCPU index.
        vcpu: usize,
    },
    /// The receiver's set-up failed.
    ReceiverFailed(GicError),
    /// The sender's system registers could not be enabled.
    SenderFailed(GicError),
    /// The distributor could not be enabled.
    DistributorFailed(GicError),
    /// The ICC_SGI1R_EL1 write faulted.
    SendFailed(GicError),
    /// The SGI was taken, by the wrong vCPU.
    WrongCpu {
        /// Affinity it was sent to.
        to: u64,
        /// Affinity of the vCPU that took it.
        on: u64,
        /// The SGI.
        intid: u8,
    },
    /// The SGI was not taken in time.
    NotDelivered {
        /// Affinity it was sent to.
        to: u64,
        /// The SGI.
        intid: u8,
        /// How long the sender waited.
        waited_ms: u64,
        /// Other interrupts taken meanwhile.
        other_irqs: u32,
    },
    /// The SGI was taken by the vCPU it was sent to.
    Delivered {
        /// Affinity it was sent to (and taken on).
        to: u64,
        /// The SGI.
        intid: u8,
        /// How many were taken.
        count: u32,
        /// Microseconds from the write to the first one seen.
        us: u64,
    },
}

impl Outcome for SelfTest {
    fn verdict(&self) -> Verdict {
        match self {
            SelfTest::ReceiverNotReady { .. }
            | SelfTest::ReceiverFailed(_)
            | SelfTest::SenderFailed(_)
            | SelfTest::DistributorFailed(_) => Verdict::Unverified,
            SelfTest::SendFailed(_) | SelfTest::WrongCpu { .. } | SelfTest::NotDelivered { .. } => {
                Verdict::NotContained
            }
            SelfTest::Delivered { .. } => Verdict::Contained,
        }
    }
}

/// Set-up failures: `receiver-not-ready vcpu=I`, `receiver-failed <e>`, `sender-failed <e>`,
/// `distributor-failed <e>`; the check itself: `sgi-within-slice delivered to=0x.. intid=N
/// count=N us=N`, `sgi-within-slice send-failed <e>`, `sgi-within-slice wrong-cpu to=0x..
/// on=0x.. intid=N`, `sgi-within-slice not-delivered to=0x.. intid=N waited-ms=N other-irqs=N`.
impl fmt::Display for SelfTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SelfTest::ReceiverNotReady { vcpu } => write!(f, "receiver-not-ready vcpu={vcpu}"),
            SelfTest::ReceiverFailed(e) => write!(f, "receiver-failed {e}"),
            SelfTest::SenderFailed(e) => write!(f, "sender-failed {e}"),
            SelfTest::DistributorFailed(e) => write!(f, "distributor-failed {e}"),
            SelfTest::SendFailed(e) => write!(f, "sgi-within-slice send-failed {e}"),
            SelfTest::WrongCpu { to, on, intid } => write!(
                f,
                "sgi-within-slice wrong-cpu to={to:#x} on={on:#x} intid={intid}"
            ),
            SelfTest::NotDelivered {
                to,
                intid,
                waited_ms,
                other_irqs,
            } => write!(
                f,
                "sgi-within-slice not-delivered to={to:#x} intid={intid} waited-ms={waited_ms} \
                 other-irqs={other_irqs}"
            ),
            SelfTest::Delivered {
                to,
                intid,
                count,
                us,
            } => write!(
                f,
                "sgi-within-slice delivered to={to:#x} intid={intid} count={count} us={us}"
            ),
        }
    }
}

/// Where `spi-foreign` could not go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpiStep {
    /// Reading the state before any write.
    Baseline,
    /// Making an attack write (not a refusal: the access was never made).
    Write,
    /// Reading back what the writes did.
    Readback,
}

/// How `spi-foreign` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpiForeign<'a> {
    /// A step failed before anything could be concluded.
    Unverified(SpiStep, GicError),
    /// Everything was read back (refused writes counted in it).
    Readback {
        /// What was read back.
        readback: &'a SpiReadback,
        /// The attacked INTIDs.
        attacked: &'a IntidSet,
        /// The slice's vCPU affinities.
        cpus: &'a [u64],
    },
}

impl Outcome for SpiForeign<'_> {
    fn verdict(&self) -> Verdict {
        match self {
            SpiForeign::Unverified(..) => Verdict::Unverified,
            SpiForeign::Readback { readback, cpus, .. } => Verdict::of(readback.contained(cpus)),
        }
    }
}

/// `baseline <e>`, `write <e>`, `readback <e>`, or the read-back detail
/// ([`SpiReadback::detail`]).
impl fmt::Display for SpiForeign<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpiForeign::Unverified(step, e) => {
                let step = match step {
                    SpiStep::Baseline => "baseline",
                    SpiStep::Write => "write",
                    SpiStep::Readback => "readback",
                };
                write!(f, "{step} {e}")
            }
            SpiForeign::Readback {
                readback, attacked, ..
            } => write!(f, "{}", readback.detail(attacked)),
        }
    }
}

/// How `gicr-foreign` (GICR_TYPER of the frame after the slice's last) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicrForeign {
    /// Frame 0's GICR_TYPER could not be read: the frame stride, and so the foreign frame's
    /// address, is unknown.
    NoStride(GicError),
    /// The foreign frame's GICR_TYPER read returned a value.
    Read {
        /// Where.
        addr: u64,
        /// What.
        value: u64,
    },
    /// The read did not complete.
    Failed(GicError),
}

impl Outcome for GicrForeign {
    fn verdict(&self) -> Verdict {
        match self {
            GicrForeign::NoStride(_) => Verdict::Unverified,
            GicrForeign::Read { .. } => Verdict::NotContained,
            GicrForeign::Failed(e) => refusal(e),
        }
    }
}

/// `frame0 <e>`, `read64 0x.. returned 0x..`, `<e>`.
impl fmt::Display for GicrForeign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GicrForeign::NoStride(e) => write!(f, "frame0 {e}"),
            GicrForeign::Read { addr, value } => write!(f, "read64 {addr:#x} returned {value:#x}"),
            GicrForeign::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// How `gicr-own` (GICR_TYPER of each of the slice's own frames) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicrOwn {
    /// Frame `frame`'s GICR_TYPER could not be read.
    FrameFailed {
        /// Frame index (= vCPU index).
        frame: usize,
        /// Why.
        error: GicError,
    },
    /// A frame names the wrong vCPU or has Last wrong.
    Mismatch(FrameMismatch),
    /// Every frame names its vCPU, only the last has Last.
    Ok {
        /// Frames read.
        frames: usize,
        /// Affinity the last frame names.
        last_affinity: u64,
    },
}

impl Outcome for GicrOwn {
    fn verdict(&self) -> Verdict {
        match self {
            // The slice's own frame must be readable: a fault there is a failed check.
            GicrOwn::FrameFailed { error, .. } if error.refused() => Verdict::NotContained,
            GicrOwn::FrameFailed { .. } => Verdict::Unverified,
            GicrOwn::Mismatch(_) => Verdict::NotContained,
            GicrOwn::Ok { .. } => Verdict::Contained,
        }
    }
}

/// `frame=I <e>`, `typer-mismatch ...`, `typer-ok frames=N last-affinity=0x..`.
impl fmt::Display for GicrOwn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GicrOwn::FrameFailed { frame, error } => write!(f, "frame={frame} {error}"),
            GicrOwn::Mismatch(m) => write!(f, "{m}"),
            GicrOwn::Ok {
                frames,
                last_affinity,
            } => write!(
                f,
                "typer-ok frames={frames} last-affinity={last_affinity:#x}"
            ),
        }
    }
}

/// The `gicr-own` outcome for the GICR_TYPER values read from frames 0.. of a slice whose
/// vCPU affinities are `cpus`.
pub fn gicr_own_outcome(typers: &[u64], cpus: &[u64]) -> GicrOwn {
    match check_redistributors(typers, cpus) {
        Err(mismatch) => GicrOwn::Mismatch(mismatch),
        Ok(()) => GicrOwn::Ok {
            frames: cpus.len(),
            last_affinity: typers
                .last()
                .map_or(0, |&t| RedistributorType(t).affinity()),
        },
    }
}

/// What `spi-foreign` read back after its writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpiReadback {
    /// GICD_TYPER.
    pub typer: u32,
    /// Foreign INTIDs that read back enabled (GICD_ISENABLER).
    pub enabled: IntidSet,
    /// Foreign INTIDs that read back pending (GICD_ISPENDR).
    pub pending: IntidSet,
    /// Foreign INTIDs whose priority reads back non-zero (GICD_IPRIORITYR).
    pub prioritized: IntidSet,
    /// The own SPI whose routing was attacked.
    pub routed_spi: u32,
    /// GICD_IROUTER<routed_spi> writes: (value written, value read back).
    pub routes: [(u64, u64); 2],
    /// Attack writes that faulted (refused by whoever owns the register).
    pub refused_writes: u32,
}

impl SpiReadback {
    /// Contained if no foreign SPI reads back enabled, pending or with a
    /// priority, and the own SPI's routing reads back inside `cpus`.
    pub fn contained(&self, cpus: &[u64]) -> bool {
        self.enabled.is_empty()
            && self.pending.is_empty()
            && self.prioritized.is_empty()
            && self.routes.iter().all(|&(_, r)| routes_inside(r, cpus))
    }

    /// The outcome detail, for foreign set `attacked`:
    /// `typer=0x.. max-spi=N isenabler=W:0x..,.. ispendr=W:0x..,..
    /// ipriorityr-set=C/T irouter<spi>=0xWRITTEN->0xREAD,...[ refused-writes=N]`, where the
    /// ISENABLER/ISPENDR words are the read-back foreign bits of each word
    /// that was written.
    pub fn detail<'a>(&'a self, attacked: &'a IntidSet) -> impl fmt::Display + 'a {
        SpiDetail {
            readback: self,
            attacked,
        }
    }
}

struct SpiDetail<'a> {
    readback: &'a SpiReadback,
    attacked: &'a IntidSet,
}

impl fmt::Display for SpiDetail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.readback;
        write!(
            f,
            "typer={:#x} max-spi={}",
            r.typer,
            DistributorType(r.typer).max_spi()
        )?;
        for (name, set) in [("isenabler", &r.enabled), ("ispendr", &r.pending)] {
            write!(f, " {name}=")?;
            for (i, (index, _)) in self.attacked.words().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                write!(f, "{sep}{index}:{:#x}", set.word(index))?;
            }
        }
        write!(
            f,
            " ipriorityr-set={}/{}",
            r.prioritized.len(),
            self.attacked.len()
        )?;
        write!(f, " irouter{}=", r.routed_spi)?;
        for (i, (written, read)) in r.routes.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{written:#x}->{read:#x}")?;
        }
        if r.refused_writes != 0 {
            write!(f, " refused-writes={}", r.refused_writes)?;
        }
        Ok(())
    }
}

/// A redistributor frame whose GICR_TYPER does not match its vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMismatch {
    /// Frame index (= vCPU index).
    pub frame: usize,
    /// What GICR_TYPER read.
    pub typer: u64,
    /// The vCPU's affinity from the device tree.
    pub expected_affinity: u64,
    /// Whether the frame should be the last.
    pub expected_last: bool,
}

/// `typer-mismatch frame=I typer=0x.. expected-affinity=0x.. expected-last=B`
impl fmt::Display for FrameMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "typer-mismatch frame={} typer={:#x} expected-affinity={:#x} expected-last={}",
            self.frame, self.typer, self.expected_affinity, self.expected_last
        )
    }
}

/// Checks the GICR_TYPER values of frames 0.. against the vCPUs `cpus`:
/// frame i serves vCPU i's affinity, and only the last frame has Last.
pub fn check_redistributors(typers: &[u64], cpus: &[u64]) -> Result<(), FrameMismatch> {
    for (frame, (&typer, &mpidr)) in typers.iter().zip(cpus).enumerate() {
        let t = RedistributorType(typer);
        let expected_last = frame + 1 == cpus.len();
        if t.affinity() != mpidr || t.is_last() != expected_last {
            return Err(FrameMismatch {
                frame,
                typer,
                expected_affinity: mpidr,
                expected_last,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gic::affinity_fields;
    use crate::verdict::Line;

    fn line(outcome: &impl Outcome) -> String {
        Line(outcome).to_string()
    }

    const ABORT: Fault = Fault::Exception {
        esr: 0x9600_0010,
        far: 0x80c_0008,
    };
    const UNDEF: Fault = Fault::Exception {
        esr: 0x200_0000,
        far: 0,
    };

    fn readback(enabled: &[u32], route_back: u64) -> SpiReadback {
        let mut set = IntidSet::new();
        enabled.iter().for_each(|&i| set.insert(i));
        SpiReadback {
            typer: 0x8,
            enabled: set,
            pending: IntidSet::new(),
            prioritized: set,
            routed_spi: 33,
            routes: [(0x2, 0x0), (0x100, route_back)],
            refused_writes: 0,
        }
    }

    #[test]
    fn spi_verdict_and_detail() {
        let attacked = IntidSet::foreign_spis(&[33]);
        let ok = readback(&[], 0x1);
        assert!(ok.contained(&[0, 1]));
        assert_eq!(
            ok.detail(&attacked).to_string(),
            "typer=0x8 max-spi=287 isenabler=1:0x0,2:0x0,31:0x0 ispendr=1:0x0,2:0x0,31:0x0 \
             ipriorityr-set=0/63 irouter33=0x2->0x0,0x100->0x1"
        );
        let enabled = readback(&[34, 1019], 0x1);
        assert!(!enabled.contained(&[0, 1]));
        assert_eq!(
            enabled.detail(&attacked).to_string(),
            "typer=0x8 max-spi=287 isenabler=1:0x4,2:0x0,31:0x8000000 ispendr=1:0x0,2:0x0,31:0x0 \
             ipriorityr-set=2/63 irouter33=0x2->0x0,0x100->0x1"
        );
        assert!(!readback(&[], 0x100).contained(&[0, 1]));
        assert!(readback(&[], 1 << 31).contained(&[0, 1]));
    }

    #[test]
    fn redistributor_frames_match_their_vcpus() {
        let cpus = [0, 1, 0x100];
        let typer = |mpidr: u64, last: bool| {
            let [a0, a1, a2, a3] = affinity_fields(mpidr);
            (u64::from(a3) << 56)
                | (u64::from(a2) << 48)
                | (u64::from(a1) << 40)
                | (u64::from(a0) << 32)
                | if last { 1 << 4 } else { 0 }
        };
        let good = [typer(0, false), typer(1, false), typer(0x100, true)];
        assert_eq!(check_redistributors(&good, &cpus), Ok(()));
        let early_last = [typer(0, true), typer(1, false), typer(0x100, true)];
        let e = check_redistributors(&early_last, &cpus).unwrap_err();
        assert_eq!(e.frame, 0);
        assert_eq!(
            e.to_string(),
            "typer-mismatch frame=0 typer=0x10 expected-affinity=0x0 expected-last=false"
        );
        let swapped = [typer(0, false), typer(0x100, false), typer(1, true)];
        assert_eq!(check_redistributors(&swapped, &cpus).unwrap_err().frame, 1);
        let no_last = [typer(0, false), typer(1, false), typer(0x100, false)];
        assert!(
            check_redistributors(&no_last, &cpus)
                .unwrap_err()
                .expected_last
        );
    }

    #[test]
    fn only_a_made_access_that_faulted_is_a_refusal() {
        assert!(GicError::Access("gicr_typer", ABORT).refused());
        assert!(GicError::Access("icc_sgi1r_el1", UNDEF).refused());
        for never_made in [
            GicError::Access("gicr_typer", Fault::Unaddressable),
            GicError::InRam(0x4000_0000),
            GicError::NoSystemRegisters(0),
            GicError::NoFrame(1),
            GicError::Timeout("gicr_waker", 4),
        ] {
            assert!(!never_made.refused(), "{never_made:?}");
        }
        assert_eq!(
            GicError::Access("gicr_typer", ABORT).to_string(),
            "gicr_typer fault data-abort esr=0x96000010 far=0x80c0008"
        );
        assert_eq!(
            GicError::Access("gicd_ctlr", Fault::Unaddressable).to_string(),
            "gicd_ctlr unaddressable"
        );
        assert_eq!(
            GicError::InRam(0x4000_0000).to_string(),
            "ram-address 0x40000000"
        );
        assert_eq!(
            GicError::NoSystemRegisters(0).to_string(),
            "no-gicv3-sysregs sre=0x0"
        );
        assert_eq!(
            GicError::NoFrame(0x100).to_string(),
            "no-redistributor affinity=0x100"
        );
        assert_eq!(
            GicError::Timeout("gicd_ctlr", 0x8000_0000).to_string(),
            "timeout gicd_ctlr=0x80000000"
        );
    }

    #[test]
    fn sgi_outside_without_system_registers_is_unverified() {
        // gic-version=2: ICC_SRE_EL1 is UNDEFINED, no SGI was sent.
        let none = SgiOutside::NoSgi(GicError::Access("icc_sre_el1", UNDEF));
        assert_eq!(
            line(&none),
            "NOT-CONTAINED unverified no-sgi icc_sre_el1 fault unknown esr=0x2000000"
        );
        let stuck = SgiOutside::NoSgi(GicError::NoSystemRegisters(0));
        assert_eq!(stuck.verdict(), Verdict::Unverified);
    }

    #[test]
    fn sgi_outside_dropped_or_refused_is_contained() {
        let dropped = SgiOutside::Dropped {
            writes: 7,
            rss: false,
        };
        assert_eq!(line(&dropped), "contained sgis-dropped writes=7 rss=0");
        let misdelivered = SgiOutside::Misdelivered { vcpu: 1 };
        assert_eq!(misdelivered.verdict(), Verdict::NotContained);
        assert_eq!(line(&misdelivered), "NOT-CONTAINED sgi-reached-own-vcpu=1");
        let refused = SgiOutside::WriteFailed {
            value: 0xd00fff0,
            error: GicError::Access("icc_sgi1r_el1", UNDEF),
        };
        assert_eq!(
            line(&refused),
            "contained sgi1r-refused 0xd00fff0 icc_sgi1r_el1 fault unknown esr=0x2000000"
        );
    }

    #[test]
    fn self_test_setup_failures_are_unverified_and_delivery_decides() {
        let e = GicError::Access("icc_sre_el1", UNDEF);
        for (outcome, text) in [
            (
                SelfTest::ReceiverNotReady { vcpu: 1 },
                "NOT-CONTAINED unverified receiver-not-ready vcpu=1",
            ),
            (
                SelfTest::ReceiverFailed(e),
                "NOT-CONTAINED unverified receiver-failed icc_sre_el1 fault unknown esr=0x2000000",
            ),
            (
                SelfTest::SenderFailed(GicError::NoSystemRegisters(0)),
                "NOT-CONTAINED unverified sender-failed no-gicv3-sysregs sre=0x0",
            ),
            (
                SelfTest::DistributorFailed(GicError::Timeout("gicd_ctlr", 0x8000_0013)),
                "NOT-CONTAINED unverified distributor-failed timeout gicd_ctlr=0x80000013",
            ),
            (
                SelfTest::SendFailed(GicError::Access("icc_sgi1r_el1", UNDEF)),
                "NOT-CONTAINED sgi-within-slice send-failed icc_sgi1r_el1 fault unknown esr=0x2000000",
            ),
            (
                SelfTest::WrongCpu {
                    to: 1,
                    on: 0,
                    intid: 5,
                },
                "NOT-CONTAINED sgi-within-slice wrong-cpu to=0x1 on=0x0 intid=5",
            ),
            (
                SelfTest::NotDelivered {
                    to: 1,
                    intid: 5,
                    waited_ms: 1000,
                    other_irqs: 2,
                },
                "NOT-CONTAINED sgi-within-slice not-delivered to=0x1 intid=5 waited-ms=1000 other-irqs=2",
            ),
            (
                SelfTest::Delivered {
                    to: 1,
                    intid: 5,
                    count: 1,
                    us: 350,
                },
                "contained sgi-within-slice delivered to=0x1 intid=5 count=1 us=350",
            ),
        ] {
            assert_eq!(line(&outcome), text);
        }
    }

    #[test]
    fn spi_foreign_needs_a_baseline_and_a_readback() {
        let attacked = IntidSet::foreign_spis(&[33]);
        let cpus = [0, 1];
        let irouter = GicError::Access("gicd_irouter", ABORT);
        assert_eq!(
            line(&SpiForeign::Unverified(SpiStep::Baseline, irouter)),
            "NOT-CONTAINED unverified baseline gicd_irouter fault data-abort esr=0x96000010 far=0x80c0008"
        );
        assert_eq!(
            line(&SpiForeign::Unverified(
                SpiStep::Write,
                GicError::InRam(0x4000_0000)
            )),
            "NOT-CONTAINED unverified write ram-address 0x40000000"
        );
        assert_eq!(
            SpiForeign::Unverified(SpiStep::Readback, irouter).verdict(),
            Verdict::Unverified
        );
        fn done<'a>(
            readback: &'a SpiReadback,
            attacked: &'a IntidSet,
            cpus: &'a [u64],
        ) -> SpiForeign<'a> {
            SpiForeign::Readback {
                readback,
                attacked,
                cpus,
            }
        }
        let clean = readback(&[], 0x1);
        assert_eq!(done(&clean, &attacked, &cpus).verdict(), Verdict::Contained);
        let enabled = readback(&[40], 0x1);
        assert_eq!(
            done(&enabled, &attacked, &cpus).verdict(),
            Verdict::NotContained
        );
        // Writes refused with a fault and nothing stuck: contained, and the line says so.
        let mut refused = readback(&[], 0x1);
        refused.refused_writes = 3;
        assert_eq!(
            line(&done(&refused, &attacked, &cpus)),
            "contained typer=0x8 max-spi=287 isenabler=1:0x0,2:0x0,31:0x0 \
             ispendr=1:0x0,2:0x0,31:0x0 ipriorityr-set=0/63 irouter33=0x2->0x0,0x100->0x1 \
             refused-writes=3"
        );
    }

    #[test]
    fn gicr_foreign_read_is_a_breach_a_fault_is_contained() {
        assert_eq!(
            line(&GicrForeign::Read {
                addr: 0x80c_0008,
                value: 0x1_0000_0010
            }),
            "NOT-CONTAINED read64 0x80c0008 returned 0x100000010"
        );
        assert_eq!(
            line(&GicrForeign::Failed(GicError::Access("gicr_typer", ABORT))),
            "contained gicr_typer fault data-abort esr=0x96000010 far=0x80c0008"
        );
    }

    #[test]
    fn gicr_foreign_that_could_not_read_is_unverified() {
        // gic-version=2: frame 0 aborts, so where frame n is cannot be known.
        assert_eq!(
            line(&GicrForeign::NoStride(GicError::Access(
                "gicr_typer",
                ABORT
            ))),
            "NOT-CONTAINED unverified frame0 gicr_typer fault data-abort esr=0x96000010 far=0x80c0008"
        );
        for never_made in [
            GicError::InRam(0x4000_0000),
            GicError::Access("gicr_typer", Fault::Unaddressable),
        ] {
            assert_eq!(
                GicrForeign::Failed(never_made).verdict(),
                Verdict::Unverified
            );
        }
    }

    #[test]
    fn gicr_own_outcomes() {
        let typer = |mpidr: u64, last: bool| {
            let [a0, a1, ..] = affinity_fields(mpidr);
            (u64::from(a1) << 40) | (u64::from(a0) << 32) | if last { 1 << 4 } else { 0 }
        };
        assert_eq!(
            line(&gicr_own_outcome(
                &[typer(0, false), typer(1, true)],
                &[0, 1]
            )),
            "contained typer-ok frames=2 last-affinity=0x1"
        );
        assert_eq!(
            gicr_own_outcome(&[typer(0, false), typer(1, false)], &[0, 1]).verdict(),
            Verdict::NotContained
        );
        let faulted = GicrOwn::FrameFailed {
            frame: 0,
            error: GicError::Access("gicr_typer", ABORT),
        };
        assert_eq!(
            line(&faulted),
            "NOT-CONTAINED frame=0 gicr_typer fault data-abort esr=0x96000010 far=0x80c0008"
        );
        let not_made = GicrOwn::FrameFailed {
            frame: 1,
            error: GicError::InRam(0x4000_0000),
        };
        assert_eq!(
            line(&not_made),
            "NOT-CONTAINED unverified frame=1 ram-address 0x40000000"
        );
    }
}
