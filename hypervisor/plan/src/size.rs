//! Byte sizes as written in plans: `4096`, `"512M"`, `"1GiB"`, `"64KiB"` (K/M/G/T with or
//! without `iB`, all binary), and their human-readable form for messages and tables.
//!
//! Accepted: decimal digits, optionally followed (after optional spaces) by one unit: `B`,
//! `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`. Units are case-sensitive and always binary
//! (`1K` = 1024). Surrounding whitespace is ignored, so what [`HumanSize`] prints for an exact
//! size (`"1 GiB"`) parses back to the same value.

use alloc::string::String;
use core::fmt;

/// 1 KiB.
pub const KIB: u64 = 1 << 10;
/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// 1 GiB.
pub const GIB: u64 = 1 << 30;
/// 1 TiB.
pub const TIB: u64 = 1 << 40;

/// Units in decreasing order, with their `HumanSize` spelling.
const UNITS: [(u64, &str); 5] = [
    (TIB, "TiB"),
    (GIB, "GiB"),
    (MIB, "MiB"),
    (KIB, "KiB"),
    (1, "B"),
];

/// Why a size string was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// Nothing (or only whitespace) was given.
    Empty,
    /// The value starts with `-`.
    Negative,
    /// The number has a fractional part (`1.5G`); sizes are whole numbers of a unit.
    Fractional,
    /// The value does not start with a decimal digit (`G`, `+4K`, `0x1000` is caught as a unit).
    NoDigits,
    /// The text after the number is not one of the accepted units.
    UnknownUnit(String),
    /// The number times its unit does not fit in 64 bits.
    Overflow,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Empty => f.write_str("empty size"),
            SizeError::Negative => f.write_str("sizes cannot be negative"),
            SizeError::Fractional => {
                f.write_str("fractions are not accepted (use a smaller unit, e.g. 1536MiB)")
            }
            SizeError::NoDigits => {
                f.write_str("expected a number optionally followed by K, M, G or T")
            }
            SizeError::UnknownUnit(unit) => write!(
                f,
                "unknown unit {unit:?} (use K, M, G, T or KiB, MiB, GiB, TiB; all binary)"
            ),
            SizeError::Overflow => f.write_str("too large (does not fit in 64 bits)"),
        }
    }
}

/// Parses a size such as `"512MiB"` into bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    if s.starts_with('-') {
        return Err(SizeError::Negative);
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, rest) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::NoDigits);
    }
    if rest.starts_with('.') {
        return Err(SizeError::Fractional);
    }
    let number: u64 = digits.parse().map_err(|_| SizeError::Overflow)?;
    let multiplier = unit_multiplier(rest.trim_start())?;
    number.checked_mul(multiplier).ok_or(SizeError::Overflow)
}

/// The multiplier of a unit suffix (`""` means bytes).
fn unit_multiplier(unit: &str) -> Result<u64, SizeError> {
    match unit {
        "" | "B" => Ok(1),
        "K" | "KiB" => Ok(KIB),
        "M" | "MiB" => Ok(MIB),
        "G" | "GiB" => Ok(GIB),
        "T" | "TiB" => Ok(TIB),
        other => Err(SizeError::UnknownUnit(other.into())),
    }
}

/// A byte count displayed for people: `1 GiB`, `512 MiB`, `100 B` when exact in the largest
/// unit that fits or the one below it (`1536 MiB`), otherwise with one decimal (`1.5 GiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanSize(pub u64);

impl fmt::Display for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        let largest = UNITS
            .iter()
            .position(|&(unit, _)| bytes >= unit)
            .unwrap_or(UNITS.len() - 1);
        let exact = UNITS[largest..]
            .iter()
            .take(2)
            .find(|&&(unit, _)| bytes.is_multiple_of(unit));
        if let Some(&(unit, name)) = exact {
            return write!(f, "{} {name}", bytes / unit);
        }
        let (unit, name) = UNITS[largest];
        // Rounded to the nearest tenth; u128 keeps `bytes * 10` from overflowing.
        let tenths = (u128::from(bytes) * 10 + u128::from(unit / 2)) / u128::from(unit);
        write!(f, "{}.{} {name}", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("100B"), Ok(100));
    }

    #[test]
    fn short_and_long_units_are_binary() {
        assert_eq!(parse_size("64K"), Ok(64 * 1024));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
    }

    #[test]
    fn spaces_around_and_before_the_unit_are_accepted() {
        assert_eq!(parse_size(" 1 GiB "), Ok(1 << 30));
    }

    #[test]
    fn empty_is_rejected() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("   "), Err(SizeError::Empty));
    }

    #[test]
    fn negative_is_rejected() {
        assert_eq!(parse_size("-1G"), Err(SizeError::Negative));
    }

    #[test]
    fn fractional_is_rejected() {
        assert_eq!(parse_size("1.5G"), Err(SizeError::Fractional));
    }

    #[test]
    fn missing_number_is_rejected() {
        assert_eq!(parse_size("G"), Err(SizeError::NoDigits));
        assert_eq!(parse_size("+4K"), Err(SizeError::NoDigits));
    }

    #[test]
    fn unknown_units_are_rejected() {
        for (text, unit) in [
            ("5X", "X"),
            ("5MB", "MB"),
            ("5m", "m"),
            ("5gib", "gib"),
            ("0x10", "x10"),
        ] {
            assert_eq!(
                parse_size(text),
                Err(SizeError::UnknownUnit(unit.into())),
                "{text}"
            );
        }
    }

    #[test]
    fn overflow_is_rejected() {
        assert_eq!(parse_size("18446744073709551616"), Err(SizeError::Overflow));
        assert_eq!(parse_size("16777216T"), Err(SizeError::Overflow));
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
    }

    #[test]
    fn size_errors_display_a_hint() {
        assert_eq!(SizeError::Empty.to_string(), "empty size");
        assert!(SizeError::Negative.to_string().contains("negative"));
        assert!(SizeError::Fractional.to_string().contains("1536MiB"));
        assert!(SizeError::NoDigits.to_string().contains("number"));
        assert!(
            SizeError::UnknownUnit("MB".into())
                .to_string()
                .contains("\"MB\"")
        );
        assert!(SizeError::Overflow.to_string().contains("64 bits"));
    }

    #[test]
    fn human_size_exact_units() {
        assert_eq!(HumanSize(1 << 30).to_string(), "1 GiB");
        assert_eq!(HumanSize(512 << 20).to_string(), "512 MiB");
        assert_eq!(HumanSize(4096).to_string(), "4 KiB");
        assert_eq!(HumanSize(100).to_string(), "100 B");
        assert_eq!(HumanSize(0).to_string(), "0 B");
        assert_eq!(HumanSize(3 << 40).to_string(), "3 TiB");
        assert_eq!(HumanSize(1536 << 20).to_string(), "1536 MiB");
    }

    #[test]
    fn human_size_inexact_uses_one_decimal() {
        assert_eq!(HumanSize((3 << 29) + 4096).to_string(), "1.5 GiB");
        assert_eq!(HumanSize(MIB + MIB / 2 + 1).to_string(), "1.5 MiB");
        assert_eq!(HumanSize(1537).to_string(), "1537 B");
        assert_eq!(HumanSize(u64::MAX).to_string(), "16777216.0 TiB");
    }

    #[test]
    fn exact_human_sizes_parse_back() {
        for bytes in [0, 100, 4096, 1536 << 20, 1 << 30, 7 << 40] {
            assert_eq!(parse_size(&HumanSize(bytes).to_string()), Ok(bytes));
        }
    }
}
