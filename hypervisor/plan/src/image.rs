//! The arm64 Linux `Image` header (Documentation/arch/arm64/booting.rst): validated in the order
//! length -> magic -> fields, used by xtask to size slices and by the hypervisor before loading.
//!
//! Header layout (64 bytes, little-endian): `code0` u32 @0, `code1` u32 @4, `text_offset` u64 @8,
//! `image_size` u64 @16, `flags` u64 @24, reserved u64 @32/@40/@48, `magic` u32 @56
//! (`"ARM\x64"`), reserved u32 @60.
//!
//! `text_offset` must be a multiple of 4 KiB and at most [`MAX_TEXT_OFFSET`] (2 MiB). Linux
//! itself only ever uses values below 2 MiB (0x80000 before v5.8, 0 since, random 4 KiB
//! multiples below 2 MiB with `ARM64_RANDOMIZE_TEXT_OFFSET`); exactly 2 MiB is accepted too
//! because this repository's own images use the header convention of `boot/` (0x200000).

use core::fmt;

/// Size of the header.
pub const HEADER_LEN: usize = 64;
/// `"ARM\x64"` read as a little-endian u32.
pub const ARM64_MAGIC: u32 = 0x644d_5241;
/// Largest `text_offset` accepted (inclusive).
pub const MAX_TEXT_OFFSET: u64 = 2 << 20;
/// Offset of the header's reserved u64 @40, where a test image carries [`STACK_OVERFLOW_TEST`].
pub const TEST_MARK_OFFSET: usize = 40;
/// The reserved u64 @40 of a hypervisor image built to overflow a hypervisor stack on purpose
/// once its slices run (the guard page test, `tests/tests/robustness.rs`, writes it into the
/// built image; `cargo xtask image` never does). Anything else there is ignored.
pub const STACK_OVERFLOW_TEST: [u8; 8] = *b"MVSOVFL1";
/// The reserved u64 @40 of a hypervisor image built to aim its NVMe controller's DMA at a RAM
/// page outside the controller's SMMU confinement once at boot (an Identify written there),
/// which must fault and leave the page as it was (`tests/tests/smmu.rs` writes it;
/// `cargo xtask image` never does).
pub const NVME_CONFINEMENT_TEST: [u8; 8] = *b"MVSNVMC1";
/// The reserved u64 @40 of a hypervisor image built to call into a data page of its own heap
/// once its slices run, which its map's W^X must turn into a fatal instruction abort
/// (`tests/tests/robustness.rs` writes it; `cargo xtask image` never does).
pub const DATA_EXECUTION_TEST: [u8; 8] = *b"MVSWXNT1";
/// The reserved u64 @40 of a hypervisor image built to bring up, at boot, a second NVMe
/// controller nobody owns, whose DMA the SMMU must abort (`tests/tests/smmu.rs` writes it;
/// `cargo xtask image` never does).
pub const UNOWNED_DMA_TEST: [u8; 8] = *b"MVSUNDM1";
/// Bytes of RAM the hypervisor image (`boot/`) needs after its loaded file (the flat hypervisor
/// and the bundle, padded to 4 KiB): a 4 KiB guard page and the boot core's 48 KiB stack above
/// it. They are not in the file; the header's `image_size` (file + this) covers them, so a loader
/// keeps the device tree and anything else out of them. `boot/link.ld` adds the same amount to
/// `__image_size`, and `boot/src/entry.S` puts the stack's top at load address + `image_size`.
pub const BOOT_STACK_TAIL: u64 = 52 * 1024;
/// Required alignment of `text_offset`.
const TEXT_OFFSET_ALIGN: u64 = 4096;

/// `flags` bit 0: kernel endianness, 1 = big-endian.
const FLAG_BIG_ENDIAN: u64 = 1 << 0;
/// `flags` bits 1-2: kernel page size (0 unspecified, 1 = 4K, 2 = 16K, 3 = 64K).
const FLAG_PAGE_SIZE_SHIFT: u32 = 1;
/// Mask of the page size field after shifting.
const FLAG_PAGE_SIZE_MASK: u64 = 0b11;
/// `flags` bit 3: the image may be placed anywhere in RAM (not necessarily near its base).
const FLAG_ANYWHERE: u64 = 1 << 3;

/// Why bytes are not a usable arm64 Image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer than 64 bytes: no room for a header.
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// The magic at offset 56 is not `"ARM\x64"` (not an arm64 Image; ELF files are not accepted).
    BadMagic {
        /// The u32 found at offset 56.
        found: u32,
    },
    /// `text_offset` is not a multiple of 4 KiB.
    MisalignedTextOffset(u64),
    /// `text_offset` is above 2 MiB.
    TextOffsetTooLarge(u64),
    /// The kernel is big-endian (flags bit 0); slices run little-endian.
    BigEndian,
    /// The kernel wants 16 KiB or 64 KiB pages (flags bits 1-2); only 4 KiB kernels are accepted.
    UnsupportedPageSize {
        /// Page size in KiB declared by the header.
        kib: u32,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::TooShort { len } => {
                write!(
                    f,
                    "only {len} bytes, an arm64 Image header needs {HEADER_LEN}"
                )
            }
            ImageError::BadMagic { found } => write!(
                f,
                "bad magic {found:#010x} at offset 56 (expected {ARM64_MAGIC:#010x}, \"ARM\\x64\")"
            ),
            ImageError::MisalignedTextOffset(offset) => {
                write!(f, "text_offset {offset:#x} is not a multiple of 4 KiB")
            }
            ImageError::TextOffsetTooLarge(offset) => {
                write!(f, "text_offset {offset:#x} is above {MAX_TEXT_OFFSET:#x}")
            }
            ImageError::BigEndian => f.write_str("big-endian kernel (slices run little-endian)"),
            ImageError::UnsupportedPageSize { kib } => {
                write!(
                    f,
                    "kernel built for {kib} KiB pages (only 4 KiB is supported)"
                )
            }
        }
    }
}

/// The fields of a validated arm64 Image header that matter for loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arm64Header {
    /// Offset of the image from a 2 MiB-aligned base (multiple of 4 KiB, <= 2 MiB).
    pub text_offset: u64,
    /// Bytes the kernel occupies from its load address, BSS included; 0 for pre-3.17 images.
    pub image_size: u64,
    /// Informative flags (endianness, page size, physical placement).
    pub flags: u64,
}

impl Arm64Header {
    /// Parses and validates the header at the start of `bytes` (the file or just its first 64 bytes).
    pub fn parse(bytes: &[u8]) -> Result<Arm64Header, ImageError> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(ImageError::TooShort { len: bytes.len() })?;
        let magic = read_u32(header, 56);
        if magic != ARM64_MAGIC {
            return Err(ImageError::BadMagic { found: magic });
        }
        let parsed = Arm64Header {
            text_offset: read_u64(header, 8),
            image_size: read_u64(header, 16),
            flags: read_u64(header, 24),
        };
        parsed.check_text_offset()?;
        parsed.check_flags()?;
        Ok(parsed)
    }

    fn check_text_offset(&self) -> Result<(), ImageError> {
        if !self.text_offset.is_multiple_of(TEXT_OFFSET_ALIGN) {
            return Err(ImageError::MisalignedTextOffset(self.text_offset));
        }
        if self.text_offset > MAX_TEXT_OFFSET {
            return Err(ImageError::TextOffsetTooLarge(self.text_offset));
        }
        Ok(())
    }

    fn check_flags(&self) -> Result<(), ImageError> {
        if self.flags & FLAG_BIG_ENDIAN != 0 {
            return Err(ImageError::BigEndian);
        }
        match (self.flags >> FLAG_PAGE_SIZE_SHIFT) & FLAG_PAGE_SIZE_MASK {
            0 | 1 => Ok(()),
            2 => Err(ImageError::UnsupportedPageSize { kib: 16 }),
            _ => Err(ImageError::UnsupportedPageSize { kib: 64 }),
        }
    }

    /// Bytes the kernel occupies from its load address: `image_size`, or the file length when
    /// that is larger (legacy images have `image_size` 0; a header that understates the file
    /// must still not let the copy overrun the footprint).
    pub fn effective_size(&self, file_len: u64) -> u64 {
        self.image_size.max(file_len)
    }

    /// Whether the kernel may be placed anywhere in RAM (flags bit 3).
    pub fn anywhere(&self) -> bool {
        self.flags & FLAG_ANYWHERE != 0
    }
}

fn read_u32(header: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&header[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(header: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&header[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Builds a 64-byte header with the given fields (for tests of this crate and its users).
pub fn build_header(text_offset: u64, image_size: u64, flags: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[8..16].copy_from_slice(&text_offset.to_le_bytes());
    header[16..24].copy_from_slice(&image_size.to_le_bytes());
    header[24..32].copy_from_slice(&flags.to_le_bytes());
    header[56..60].copy_from_slice(&ARM64_MAGIC.to_le_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn parses_a_modern_linux_header() {
        let header = build_header(0, 0x2a0_0000, 0xa);
        let parsed = Arm64Header::parse(&header).unwrap();
        assert_eq!(
            parsed,
            Arm64Header {
                text_offset: 0,
                image_size: 0x2a0_0000,
                flags: 0xa
            }
        );
        assert!(parsed.anywhere());
    }

    #[test]
    fn accepts_legacy_and_own_text_offsets() {
        assert_eq!(
            Arm64Header::parse(&build_header(0x8_0000, 0, 0))
                .unwrap()
                .text_offset,
            0x8_0000
        );
        assert_eq!(
            Arm64Header::parse(&build_header(0x20_0000, 0, 2))
                .unwrap()
                .text_offset,
            0x20_0000
        );
    }

    #[test]
    fn reads_fields_past_the_header_in_a_longer_file() {
        let mut file = build_header(0x1000, 8192, 2).to_vec();
        file.extend_from_slice(&[0xff; 100]);
        assert_eq!(Arm64Header::parse(&file).unwrap().image_size, 8192);
    }

    #[test]
    fn too_short() {
        let header = build_header(0, 0, 0);
        assert_eq!(
            Arm64Header::parse(&header[..63]),
            Err(ImageError::TooShort { len: 63 })
        );
        assert_eq!(
            Arm64Header::parse(&[]),
            Err(ImageError::TooShort { len: 0 })
        );
    }

    #[test]
    fn bad_magic() {
        let mut header = build_header(0, 0, 0);
        header[56] = b'E';
        assert_eq!(
            Arm64Header::parse(&header),
            Err(ImageError::BadMagic { found: 0x644d_5245 })
        );
    }

    #[test]
    fn magic_is_checked_before_fields() {
        let mut header = build_header(3, 0, 1);
        header[59] = 0;
        assert!(matches!(
            Arm64Header::parse(&header),
            Err(ImageError::BadMagic { .. })
        ));
    }

    #[test]
    fn misaligned_text_offset() {
        let header = build_header(0x8_0010, 0, 0);
        assert_eq!(
            Arm64Header::parse(&header),
            Err(ImageError::MisalignedTextOffset(0x8_0010))
        );
    }

    #[test]
    fn text_offset_too_large() {
        let header = build_header(0x20_1000, 0, 0);
        assert_eq!(
            Arm64Header::parse(&header),
            Err(ImageError::TextOffsetTooLarge(0x20_1000))
        );
    }

    #[test]
    fn big_endian() {
        assert_eq!(
            Arm64Header::parse(&build_header(0, 0, 1)),
            Err(ImageError::BigEndian)
        );
    }

    #[test]
    fn unsupported_page_size() {
        let parse = |flags| Arm64Header::parse(&build_header(0, 0, flags));
        assert_eq!(
            parse(2 << 1),
            Err(ImageError::UnsupportedPageSize { kib: 16 })
        );
        assert_eq!(
            parse(3 << 1),
            Err(ImageError::UnsupportedPageSize { kib: 64 })
        );
        assert!(parse(1 << 1).is_ok());
        assert!(parse(0).is_ok());
    }

    #[test]
    fn effective_size_never_below_the_file() {
        let header = Arm64Header {
            text_offset: 0,
            image_size: 0x100_0000,
            flags: 0,
        };
        assert_eq!(header.effective_size(0x80_0000), 0x100_0000);
        assert_eq!(header.effective_size(0x200_0000), 0x200_0000);
        let legacy = Arm64Header {
            image_size: 0,
            ..header
        };
        assert_eq!(legacy.effective_size(12345), 12345);
    }

    #[test]
    fn anywhere_flag() {
        let header = Arm64Header {
            text_offset: 0,
            image_size: 0,
            flags: 2,
        };
        assert!(!header.anywhere());
        assert!(
            Arm64Header {
                flags: 0b1010,
                ..header
            }
            .anywhere()
        );
    }

    #[test]
    fn errors_display() {
        assert!(
            ImageError::TooShort { len: 3 }
                .to_string()
                .contains("only 3 bytes")
        );
        assert!(
            ImageError::BadMagic { found: 0x464c_457f }
                .to_string()
                .contains("0x464c457f")
        );
        assert!(
            ImageError::MisalignedTextOffset(0x10)
                .to_string()
                .contains("0x10 is not a multiple")
        );
        assert!(
            ImageError::TextOffsetTooLarge(0x40_0000)
                .to_string()
                .contains("0x400000 is above 0x200000")
        );
        assert!(ImageError::BigEndian.to_string().contains("big-endian"));
        assert!(
            ImageError::UnsupportedPageSize { kib: 64 }
                .to_string()
                .contains("64 KiB pages")
        );
    }
}
