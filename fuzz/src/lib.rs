//! What the fuzz targets share: reading structured input, and the model of a slice's guest RAM
//! and of the physical NVMe device the `nvme` target checks every command against.

pub mod nvme_model;

/// Bit mask of the low `bytes` bytes of a u64 (`bytes` 0..=8).
pub fn width_mask(bytes: u8) -> u64 {
    match bytes {
        0 => 0,
        8.. => u64::MAX,
        n => (1u64 << (8 * u32::from(n))) - 1,
    }
}

/// Whether `value` fits in `bytes` bytes.
pub fn fits(value: u64, bytes: u8) -> bool {
    value & !width_mask(bytes) == 0
}

/// An access width a guest can produce (1, 2, 4 or 8 bytes) from any byte.
pub fn width(selector: u8) -> u8 {
    1 << (selector % 4)
}
