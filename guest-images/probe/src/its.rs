//! The GICv3 ITS as the probe drives it (Arm IHI 0069H): GITS and LPI register offsets and
//! values (§12.19, §12.11), the 32-byte commands it queues (§5.3), the LPI property byte
//! (§6.1.1), and the `its-*` attacks' plans and verdicts. Pure values; the MMIO is in
//! `bare::its`.

use core::fmt;

use crate::gic_attacks::GicError;
use crate::text::Text;
use crate::verdict::{Outcome, Verdict};

/// Why the ITS could not be set up or did not complete its commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItsError {
    /// A GITS or GICR access failed.
    Gic(GicError),
    /// GITS_TYPER.Physical is 0.
    NotPhysical,
    /// GITS_BASER<n> is not the table the probe expects (its Type).
    NoTable(u8),
    /// No RAM for the tables after the driver's own.
    NoMemory,
    /// The function's requester ID is outside the `msi-map` (or there is none).
    NoDeviceId(u32),
    /// The DeviceID does not fit the one-page device table (or GITS_TYPER.Devbits).
    DeviceTooLarge(u32),
    /// GITS_CREADR.Stalled is set at this offset.
    Stalled(u64),
    /// GITS_CREADR did not reach GITS_CWRITER in time.
    Timeout {
        /// GITS_CREADR when the wait gave up.
        creadr: u64,
        /// The offset written.
        cwriter: u64,
    },
}

/// One token each: `gic(..)`, `not-physical`, `no-table(n)`, `no-memory`,
/// `no-device-id(rid=..)`, `device-too-large(..)`, `stalled(at=..)`,
/// `timeout(creadr=..,cwriter=..)`.
impl fmt::Display for ItsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ItsError::Gic(e) => write!(f, "gic({e})"),
            ItsError::NotPhysical => f.write_str("not-physical"),
            ItsError::NoTable(n) => write!(f, "no-table({n})"),
            ItsError::NoMemory => f.write_str("no-memory"),
            ItsError::NoDeviceId(rid) => write!(f, "no-device-id(rid={rid:#x})"),
            ItsError::DeviceTooLarge(d) => write!(f, "device-too-large({d:#x})"),
            ItsError::Stalled(at) => write!(f, "stalled(at={at:#x})"),
            ItsError::Timeout { creadr, cwriter } => {
                write!(f, "timeout(creadr={creadr:#x},cwriter={cwriter:#x})")
            }
        }
    }
}

impl From<GicError> for ItsError {
    fn from(e: GicError) -> Self {
        ItsError::Gic(e)
    }
}

/// How an `its-*` attack ended: whether what decision 0004 promises held (commands skipped
/// or the queue stalled as it says, nothing delivered for what the slice does not own), and
/// whether the slice's own NIC still takes its interrupts through the ITS afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttackOutcome {
    /// The attack's own observations (`key=value` tokens).
    pub detail: Text<200>,
    /// Whether every observation is what containment predicts.
    pub held: bool,
    /// The own NIC's RX interrupt after the attack: `Some(true)` delivered.
    pub nic_after: Option<bool>,
    /// Why it could not be attempted.
    pub unverified: Option<&'static str>,
}

impl Outcome for AttackOutcome {
    fn verdict(&self) -> Verdict {
        if self.unverified.is_some() {
            Verdict::Unverified
        } else {
            Verdict::of(self.held && self.nic_after == Some(true))
        }
    }
}

/// `<why>`, or `<detail> nic-after=delivered|lost|none`.
impl fmt::Display for AttackOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = self.unverified {
            return f.write_str(why);
        }
        let after = match self.nic_after {
            Some(true) => "delivered",
            Some(false) => "lost",
            None => "none",
        };
        write!(
            f,
            "{} nic-after={after}",
            self.detail.as_str().unwrap_or("?")
        )
    }
}

/// GITS register offsets in the control frame (§12.19).
pub mod gits {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0008;
    pub const CBASER: u64 = 0x0080;
    pub const CWRITER: u64 = 0x0088;
    pub const CREADR: u64 = 0x0090;
    /// GITS_BASER<n> at `BASER + 8 * n`.
    pub const BASER: u64 = 0x0100;
    /// GITS_TRANSLATER, in the translation frame.
    pub const TRANSLATER: u64 = 0x1_0040;
    /// GITS_CTLR.Enabled.
    pub const CTLR_ENABLED: u32 = 1;
    /// GITS_CTLR.Quiescent.
    pub const CTLR_QUIESCENT: u32 = 1 << 31;
    /// GITS_CREADR.Stalled.
    pub const CREADR_STALLED: u64 = 1;
    /// GITS_CWRITER.Retry.
    pub const CWRITER_RETRY: u64 = 1;
    /// The Offset field of GITS_CWRITER and GITS_CREADR (bits 19:5).
    pub const OFFSET_MASK: u64 = 0xf_ffe0;
    /// GITS_BASER<n>.Valid (also GITS_CBASER.Valid).
    pub const VALID: u64 = 1 << 63;
}

/// LPI registers in a redistributor's RD_base (§12.11).
pub mod gicr {
    pub const CTLR: u64 = 0x0000;
    pub const PROPBASER: u64 = 0x0070;
    pub const PENDBASER: u64 = 0x0078;
    /// GICR_CTLR.EnableLPIs.
    pub const CTLR_ENABLE_LPIS: u32 = 1;
}

/// First LPI INTID.
pub const FIRST_LPI: u32 = 8192;
/// INTID bits the probe programs (LPIs 8192..16383): GICR_PROPBASER.IDbits + 1.
pub const LPI_ID_BITS: u32 = 14;
/// Bytes of the LPI property table for [`LPI_ID_BITS`] (one byte per LPI).
pub const PROPERTY_TABLE_BYTES: u64 = (1 << LPI_ID_BITS) - FIRST_LPI as u64;
/// Bytes of the LPI pending table for [`LPI_ID_BITS`] (one bit per INTID, 64 KiB aligned).
pub const PENDING_TABLE_BYTES: u64 = (1 << LPI_ID_BITS) / 8;
/// Bytes of one command.
pub const COMMAND_BYTES: u64 = 32;

/// Inner cacheability "Normal Inner Write-back, Read-allocate, Write-allocate" (the ITS table
/// and LPI table registers' InnerCache field value 0b111).
const RAWAWB: u64 = 0b111;
/// Shareability field value "Inner Shareable".
const INNER_SHAREABLE: u64 = 0b01;

/// GITS_TYPER fields (§12.19.16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItsType(pub u64);

impl ItsType {
    /// Physical LPIs supported.
    pub fn physical(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bytes per ITT entry.
    pub fn itt_entry_bytes(self) -> u64 {
        ((self.0 >> 4) & 0xf) + 1
    }
    /// EventID bits.
    pub fn event_bits(self) -> u32 {
        ((self.0 >> 8) & 0x1f) as u32 + 1
    }
    /// DeviceID bits.
    pub fn device_bits(self) -> u32 {
        ((self.0 >> 13) & 0x1f) as u32 + 1
    }
    /// PTA: collections target physical addresses (1) or processor numbers (0).
    pub fn targets_addresses(self) -> bool {
        self.0 & (1 << 19) != 0
    }
    /// Collection ID bits (CIL: CIDbits + 1, else 16).
    pub fn collection_bits(self) -> u32 {
        if self.0 & (1 << 36) != 0 {
            ((self.0 >> 32) & 0xf) as u32 + 1
        } else {
            16
        }
    }
}

/// GITS_BASER<n> read-only fields (§12.19.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableType(pub u64);

/// GITS_BASER<n>.Type values.
pub mod table {
    pub const DEVICES: u8 = 1;
    pub const COLLECTIONS: u8 = 4;
}

impl TableType {
    /// The table's Type (0: none).
    pub fn kind(self) -> u8 {
        ((self.0 >> 56) & 7) as u8
    }
    /// Bytes per entry.
    pub fn entry_bytes(self) -> u64 {
        ((self.0 >> 48) & 0x1f) + 1
    }
}

/// A flat GITS_BASER<n> value: valid, `pages` 4 KiB pages at `pa` (4 KiB aligned),
/// cacheable, inner shareable. `pages` in 1..=256.
pub fn baser(pa: u64, pages: u64) -> u64 {
    gits::VALID
        | RAWAWB << 59
        | (pa & 0x0000_ffff_ffff_f000)
        | INNER_SHAREABLE << 10
        | (pages.clamp(1, 256) - 1)
}

/// A GITS_CBASER value: valid, a queue of `pages` 4 KiB pages at `pa`. `pages` in 1..=256.
pub fn cbaser(pa: u64, pages: u64) -> u64 {
    gits::VALID
        | RAWAWB << 59
        | (pa & 0x000f_ffff_ffff_f000)
        | INNER_SHAREABLE << 10
        | (pages.clamp(1, 256) - 1)
}

/// A GICR_PROPBASER value: the property table at `pa` (4 KiB aligned) covering `id_bits`
/// INTID bits.
pub fn propbaser(pa: u64, id_bits: u32) -> u64 {
    (pa & 0x000f_ffff_ffff_f000)
        | RAWAWB << 7
        | INNER_SHAREABLE << 10
        | u64::from(id_bits.clamp(14, 32) - 1)
}

/// A GICR_PENDBASER value: the pending table at `pa` (64 KiB aligned), PTZ (the table is
/// zero) set.
pub fn pendbaser(pa: u64) -> u64 {
    1 << 62 | (pa & 0x000f_ffff_ffff_0000) | RAWAWB << 7 | INNER_SHAREABLE << 10
}

/// The LPI property byte: `priority` (bits 7:2), Group 1 (bit 1, RES1), enabled (bit 0).
pub fn lpi_property(priority: u8, enabled: bool) -> u8 {
    (priority & 0xfc) | 0b10 | u8::from(enabled)
}

/// The MAPD Size field for an ITT of at least `events` entries: EventID bits - 1.
pub fn itt_size_field(events: u32) -> u8 {
    let bits = events.max(2).next_power_of_two().trailing_zeros();
    (bits - 1) as u8
}

/// Bytes of the ITT a MAPD with `size` (the Size field) describes.
pub fn itt_bytes(size: u8, entry_bytes: u64) -> u64 {
    (1u64 << (u32::from(size) + 1)) * entry_bytes
}

/// Command numbers (§5.3, Table 5-4).
pub mod number {
    pub const MOVI: u8 = 0x01;
    pub const INT: u8 = 0x03;
    pub const CLEAR: u8 = 0x04;
    pub const SYNC: u8 = 0x05;
    pub const MAPD: u8 = 0x08;
    pub const MAPC: u8 = 0x09;
    pub const MAPTI: u8 = 0x0a;
    pub const INV: u8 = 0x0c;
    pub const INVALL: u8 = 0x0d;
    pub const DISCARD: u8 = 0x0f;
    /// VMAPP, a GICv4 command a GICv3-only (virtual) ITS does not know.
    pub const VMAPP: u8 = 0x29;
}

/// One 32-byte command as four doublewords.
pub type Command = [u64; 4];

fn device_word(number: u8, device: u32) -> u64 {
    u64::from(number) | u64::from(device) << 32
}

/// MAPD (§5.3.8): `device` -> an ITT of 2^(`size` + 1) entries at `itt` (256-byte aligned).
pub fn mapd(device: u32, size: u8, itt: u64, valid: bool) -> Command {
    [
        device_word(number::MAPD, device),
        u64::from(size & 0x1f),
        u64::from(valid) << 63 | (itt & 0x000f_ffff_ffff_ff00),
        0,
    ]
}

/// MAPC (§5.3.7): collection `icid` -> redistributor `rdbase` (with GITS_TYPER.PTA = 0 a
/// processor number, else the RD_base address >> 16).
pub fn mapc(icid: u16, rdbase: u64, valid: bool) -> Command {
    [
        u64::from(number::MAPC),
        0,
        u64::from(valid) << 63 | (rdbase & 0xf_ffff_ffff) << 16 | u64::from(icid),
        0,
    ]
}

/// MAPTI (§5.3.10): (`device`, `event`) -> LPI `lpi` in collection `icid`.
pub fn mapti(device: u32, event: u32, lpi: u32, icid: u16) -> Command {
    [
        device_word(number::MAPTI, device),
        u64::from(event) | u64::from(lpi) << 32,
        u64::from(icid),
        0,
    ]
}

/// MOVI (§5.3.18): (`device`, `event`) to collection `icid`.
pub fn movi(device: u32, event: u32, icid: u16) -> Command {
    [
        device_word(number::MOVI, device),
        u64::from(event),
        u64::from(icid),
        0,
    ]
}

/// An event command: INV, INT, CLEAR, DISCARD (`number`) of (`device`, `event`).
pub fn event_command(number: u8, device: u32, event: u32) -> Command {
    [device_word(number, device), u64::from(event), 0, 0]
}

/// INVALL (§5.3.13) of collection `icid`.
pub fn invall(icid: u16) -> Command {
    [u64::from(number::INVALL), 0, u64::from(icid), 0]
}

/// SYNC (§5.3.22) of redistributor `rdbase`.
pub fn sync(rdbase: u64) -> Command {
    [
        u64::from(number::SYNC),
        0,
        (rdbase & 0xf_ffff_ffff) << 16,
        0,
    ]
}

/// The offset after `offset` in a queue of `bytes` (wraps to 0).
pub fn next_offset(offset: u64, bytes: u64) -> u64 {
    let next = offset + COMMAND_BYTES;
    if next >= bytes { 0 } else { next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typer_of_the_microvisor_vits() {
        // decision 0004: Physical, 8-byte ITT entries, 16 EventID bits, 8 DeviceID bits,
        // PTA = 0, CIL with 8 collection bits.
        let t = ItsType(1 | 7 << 4 | 15 << 8 | 7 << 13 | 7 << 32 | 1 << 36);
        assert!(t.physical());
        assert_eq!(t.itt_entry_bytes(), 8);
        assert_eq!(t.event_bits(), 16);
        assert_eq!(t.device_bits(), 8);
        assert!(!t.targets_addresses());
        assert_eq!(t.collection_bits(), 8);
        assert_eq!(ItsType(1 << 19).collection_bits(), 16);
        assert!(ItsType(1 << 19).targets_addresses());
    }

    #[test]
    fn table_registers() {
        let t = TableType(1 << 56 | 7 << 48);
        assert_eq!((t.kind(), t.entry_bytes()), (table::DEVICES, 8));
        assert_eq!(TableType(4 << 56 | 7 << 48).kind(), table::COLLECTIONS);
        let b = baser(0x4123_4000, 2);
        assert_eq!(b & gits::VALID, gits::VALID);
        assert_eq!(b & 0x0000_ffff_ffff_f000, 0x4123_4000);
        assert_eq!(b & 0xff, 1);
        assert_eq!((b >> 8) & 3, 0, "4 KiB pages");
        assert_eq!(cbaser(0x4000_1000, 1) & 0xff, 0);
        assert_eq!(cbaser(0x4000_1000, 300) & 0xff, 255);
        let p = propbaser(0x4001_0000, 14);
        assert_eq!(p & 0x1f, 13);
        assert_eq!(p & 0x000f_ffff_ffff_f000, 0x4001_0000);
        let q = pendbaser(0x4002_0000);
        assert_eq!(q & 0x000f_ffff_ffff_0000, 0x4002_0000);
        assert_ne!(q & 1 << 62, 0);
        assert_eq!(PROPERTY_TABLE_BYTES, 8192);
        assert_eq!(PENDING_TABLE_BYTES, 2048);
    }

    #[test]
    fn property_byte() {
        assert_eq!(lpi_property(0xa0, true), 0xa3);
        assert_eq!(lpi_property(0xa1, false), 0xa2);
    }

    #[test]
    fn itt_sizes() {
        assert_eq!(itt_size_field(1), 0);
        assert_eq!(itt_size_field(2), 0);
        assert_eq!(itt_size_field(3), 1);
        assert_eq!(itt_size_field(4), 1);
        assert_eq!(itt_size_field(32), 4);
        assert_eq!(itt_bytes(1, 8), 32);
        assert_eq!(itt_bytes(4, 8), 256);
    }

    #[test]
    fn command_encodings() {
        // Field positions of §5.3: DeviceID in DW0[63:32], EventID DW1[31:0], pINTID
        // DW1[63:32], ICID DW2[15:0], RDbase DW2[51:16], ITT_addr DW2[51:8], V DW2[63].
        assert_eq!(
            mapd(0x18, 1, 0x4005_0100, true),
            [0x18_0000_0008, 1, 1 << 63 | 0x4005_0100, 0]
        );
        assert_eq!(mapd(3, 0, 0x4005_01ff, false)[2], 0x4005_0100);
        assert_eq!(mapc(2, 1, true), [9, 0, 1 << 63 | 1 << 16 | 2, 0]);
        assert_eq!(mapti(8, 1, 8193, 0), [0x8_0000_000a, 8193 << 32 | 1, 0, 0]);
        assert_eq!(event_command(number::INV, 8, 1), [0x8_0000_000c, 1, 0, 0]);
        assert_eq!(invall(3), [0x0d, 0, 3, 0]);
        assert_eq!(sync(1), [5, 0, 1 << 16, 0]);
    }

    #[test]
    fn errors_are_one_token() {
        let t = |e: ItsError| {
            let mut s = crate::text::Text::<64>::new();
            let _ = fmt::Write::write_fmt(&mut s, format_args!("{e}"));
            s
        };
        assert_eq!(t(ItsError::NotPhysical).as_str(), Some("not-physical"));
        assert_eq!(t(ItsError::NoTable(1)).as_str(), Some("no-table(1)"));
        assert_eq!(t(ItsError::NoMemory).as_str(), Some("no-memory"));
        assert_eq!(
            t(ItsError::NoDeviceId(0x108)).as_str(),
            Some("no-device-id(rid=0x108)")
        );
        assert_eq!(
            t(ItsError::DeviceTooLarge(0x1000)).as_str(),
            Some("device-too-large(0x1000)")
        );
        assert_eq!(
            t(ItsError::Stalled(0x40)).as_str(),
            Some("stalled(at=0x40)")
        );
        assert_eq!(
            t(ItsError::Timeout {
                creadr: 0,
                cwriter: 0x20
            })
            .as_str(),
            Some("timeout(creadr=0x0,cwriter=0x20)")
        );
        assert_eq!(
            t(ItsError::Gic(GicError::NoFrame(1))).as_str(),
            Some("gic(no-redistributor affinity=0x1)")
        );
    }

    #[test]
    fn attack_verdicts() {
        let mut detail = Text::new();
        let _ = fmt::Write::write_str(&mut detail, "creadr=0x40 errors-skipped");
        let o = |held, nic_after, unverified| AttackOutcome {
            detail,
            held,
            nic_after,
            unverified,
        };
        let line = |o: AttackOutcome| {
            let mut t = Text::<256>::new();
            let _ = fmt::Write::write_fmt(&mut t, format_args!("{}", crate::verdict::Line(&o)));
            t
        };
        assert_eq!(
            line(o(true, Some(true), None)).as_str(),
            Some("contained creadr=0x40 errors-skipped nic-after=delivered")
        );
        assert_eq!(o(true, Some(false), None).verdict(), Verdict::NotContained);
        assert_eq!(o(false, Some(true), None).verdict(), Verdict::NotContained);
        assert_eq!(o(true, None, None).verdict(), Verdict::NotContained);
        assert_eq!(
            line(o(true, Some(true), Some("no-its"))).as_str(),
            Some("NOT-CONTAINED unverified no-its")
        );
    }

    #[test]
    fn queue_offsets_wrap() {
        assert_eq!(next_offset(0, 4096), 32);
        assert_eq!(next_offset(4064, 4096), 0);
    }
}
