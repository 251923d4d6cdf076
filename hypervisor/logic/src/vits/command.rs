//! ITS commands as 32-byte queue entries (GICv3 spec §5.3, "ITS commands"): decoding of the
//! physical-interrupt commands a guest may queue, and their encoding (for tests, and for
//! whoever builds a guest-shaped queue).
//!
//! Every command is four little-endian doublewords; bits 7:0 of the first are the command
//! number. Fields the spec marks RES0 are ignored, never checked: an ITS need not check them.

/// Bytes of one command.
pub const COMMAND_SIZE: usize = 32;

/// Command numbers (§5.3, Table 5-4).
pub mod number {
    pub const MOVI: u8 = 0x01;
    pub const INT: u8 = 0x03;
    pub const CLEAR: u8 = 0x04;
    pub const SYNC: u8 = 0x05;
    pub const MAPD: u8 = 0x08;
    pub const MAPC: u8 = 0x09;
    pub const MAPTI: u8 = 0x0a;
    pub const MAPI: u8 = 0x0b;
    pub const INV: u8 = 0x0c;
    pub const INVALL: u8 = 0x0d;
    pub const MOVALL: u8 = 0x0e;
    pub const DISCARD: u8 = 0x0f;
}

/// One decoded command. Device, event and collection IDs are the guest's; nothing here is
/// checked beyond the field widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// MAPD (§5.3.8): `valid` maps `device` to an ITT of 2^(`size` + 1) entries at `itt`.
    Mapd {
        device: u32,
        /// The Size field: EventID bits minus one.
        size: u8,
        /// ITT_addr (bits 51:8; 256-byte aligned by construction).
        itt: u64,
        valid: bool,
    },
    /// MAPC (§5.3.7): `valid` maps collection `icid` to redistributor `rdbase` (with
    /// GITS_TYPER.PTA = 0: a processor number, i.e. a vCPU index).
    Mapc { icid: u16, rdbase: u64, valid: bool },
    /// MAPTI (§5.3.10) and MAPI (§5.3.9, `lpi` = `event`).
    Mapti {
        device: u32,
        event: u32,
        lpi: u32,
        icid: u16,
    },
    /// MOVI (§5.3.15): the event's interrupt moves to collection `icid`.
    Movi { device: u32, event: u32, icid: u16 },
    /// DISCARD (§5.3.5).
    Discard { device: u32, event: u32 },
    /// INT (§5.3.6): the event's interrupt becomes pending.
    Int { device: u32, event: u32 },
    /// CLEAR (§5.3.4): the event's interrupt stops being pending.
    Clear { device: u32, event: u32 },
    /// INV (§5.3.12): reload the event's LPI configuration.
    Inv { device: u32, event: u32 },
    /// INVALL (§5.3.13): reload every LPI configuration of collection `icid`.
    Invall { icid: u16 },
    /// MOVALL (§5.3.14): every pending LPI of `from` moves to `to`.
    Movall { from: u64, to: u64 },
    /// SYNC (§5.3.22): effects of earlier commands on `rdbase` are visible.
    Sync { rdbase: u64 },
    /// Any other command number (the GICv4 ones included: the guest's ITS is physical only).
    Unknown(u8),
}

fn bits(word: u64, low: u32, count: u32) -> u64 {
    (word >> low) & ((1u64 << count) - 1)
}

/// RDbase field (bits 51:16 of a doubleword).
fn rdbase(word: u64) -> u64 {
    bits(word, 16, 36)
}

impl Command {
    /// Decodes one queue entry.
    pub fn decode(raw: &[u8; COMMAND_SIZE]) -> Command {
        let mut dw = [0u64; 4];
        for (i, word) in dw.iter_mut().enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            *word = u64::from_le_bytes(bytes);
        }
        let device = (dw[0] >> 32) as u32;
        let event = dw[1] as u32;
        let icid = dw[2] as u16;
        match dw[0] as u8 {
            number::MAPD => Command::Mapd {
                device,
                size: bits(dw[1], 0, 5) as u8,
                itt: bits(dw[2], 8, 44) << 8,
                valid: dw[2] >> 63 != 0,
            },
            number::MAPC => Command::Mapc {
                icid,
                rdbase: rdbase(dw[2]),
                valid: dw[2] >> 63 != 0,
            },
            number::MAPTI => Command::Mapti {
                device,
                event,
                lpi: (dw[1] >> 32) as u32,
                icid,
            },
            number::MAPI => Command::Mapti {
                device,
                event,
                lpi: event,
                icid,
            },
            number::MOVI => Command::Movi {
                device,
                event,
                icid,
            },
            number::DISCARD => Command::Discard { device, event },
            number::INT => Command::Int { device, event },
            number::CLEAR => Command::Clear { device, event },
            number::INV => Command::Inv { device, event },
            number::INVALL => Command::Invall { icid },
            number::MOVALL => Command::Movall {
                from: rdbase(dw[2]),
                to: rdbase(dw[3]),
            },
            number::SYNC => Command::Sync {
                rdbase: rdbase(dw[2]),
            },
            other => Command::Unknown(other),
        }
    }

    /// Encodes the command as a queue entry (MAPI is encoded as the equivalent MAPTI).
    pub fn encode(&self) -> [u8; COMMAND_SIZE] {
        let dev = |number: u8, device: u32| u64::from(number) | u64::from(device) << 32;
        let dw: [u64; 4] = match *self {
            Command::Mapd {
                device,
                size,
                itt,
                valid,
            } => [
                dev(number::MAPD, device),
                u64::from(size & 0x1f),
                (itt & 0x000f_ffff_ffff_ff00) | u64::from(valid) << 63,
                0,
            ],
            Command::Mapc {
                icid,
                rdbase,
                valid,
            } => [
                u64::from(number::MAPC),
                0,
                u64::from(icid) | (rdbase & 0xf_ffff_ffff) << 16 | u64::from(valid) << 63,
                0,
            ],
            Command::Mapti {
                device,
                event,
                lpi,
                icid,
            } => [
                dev(number::MAPTI, device),
                u64::from(event) | u64::from(lpi) << 32,
                u64::from(icid),
                0,
            ],
            Command::Movi {
                device,
                event,
                icid,
            } => [
                dev(number::MOVI, device),
                u64::from(event),
                u64::from(icid),
                0,
            ],
            Command::Discard { device, event } => {
                [dev(number::DISCARD, device), u64::from(event), 0, 0]
            }
            Command::Int { device, event } => [dev(number::INT, device), u64::from(event), 0, 0],
            Command::Clear { device, event } => {
                [dev(number::CLEAR, device), u64::from(event), 0, 0]
            }
            Command::Inv { device, event } => [dev(number::INV, device), u64::from(event), 0, 0],
            Command::Invall { icid } => [u64::from(number::INVALL), 0, u64::from(icid), 0],
            Command::Movall { from, to } => [
                u64::from(number::MOVALL),
                0,
                (from & 0xf_ffff_ffff) << 16,
                (to & 0xf_ffff_ffff) << 16,
            ],
            Command::Sync { rdbase } => [
                u64::from(number::SYNC),
                0,
                (rdbase & 0xf_ffff_ffff) << 16,
                0,
            ],
            Command::Unknown(number) => [u64::from(number), 0, 0, 0],
        };
        let mut raw = [0u8; COMMAND_SIZE];
        for (i, word) in dw.iter().enumerate() {
            raw[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    #[test]
    fn fields_sit_where_the_spec_puts_them() {
        // MAPD DeviceID 0x10, Size 4, ITT at 0x4123_4500, valid (§5.3.8).
        let mut raw = [0u8; 32];
        raw[0] = 0x08;
        raw[4..8].copy_from_slice(&0x10u32.to_le_bytes());
        raw[8] = 4;
        raw[16..24].copy_from_slice(&(0x4123_4500u64 | 1 << 63).to_le_bytes());
        assert_eq!(
            Command::decode(&raw),
            Command::Mapd {
                device: 0x10,
                size: 4,
                itt: 0x4123_4500,
                valid: true
            }
        );
        // MAPTI: EventID in DW1[31:0], pINTID in DW1[63:32], ICID in DW2[15:0].
        let mut raw = [0u8; 32];
        raw[0] = 0x0a;
        raw[8..16].copy_from_slice(&(3u64 | 8195 << 32).to_le_bytes());
        raw[16..18].copy_from_slice(&7u16.to_le_bytes());
        assert_eq!(
            Command::decode(&raw),
            Command::Mapti {
                device: 0,
                event: 3,
                lpi: 8195,
                icid: 7
            }
        );
        // MAPI: the LPI is the EventID.
        raw[0] = 0x0b;
        assert_eq!(
            Command::decode(&raw),
            Command::Mapti {
                device: 0,
                event: 3,
                lpi: 3,
                icid: 7
            }
        );
        // MAPC: RDbase in DW2[51:16], V in DW2[63].
        let mut raw = [0u8; 32];
        raw[0] = 0x09;
        raw[16..24].copy_from_slice(&(2u64 | 5 << 16 | 1 << 63).to_le_bytes());
        assert_eq!(
            Command::decode(&raw),
            Command::Mapc {
                icid: 2,
                rdbase: 5,
                valid: true
            }
        );
        // GICv4 commands are unknown to the guest's physical-only ITS.
        raw[0] = 0x2a;
        assert_eq!(Command::decode(&raw), Command::Unknown(0x2a));
    }

    #[test]
    fn every_encoding_decodes_back_and_any_bytes_decode() {
        let mut rng = Rng(0x1715);
        for _ in 0..10_000 {
            let mut raw = [0u8; 32];
            raw.iter_mut().for_each(|b| *b = rng.next() as u8);
            // Any 32 bytes decode, and re-encoding a decoded command is stable.
            let command = Command::decode(&raw);
            assert_eq!(Command::decode(&command.encode()), command);
        }
    }
}
