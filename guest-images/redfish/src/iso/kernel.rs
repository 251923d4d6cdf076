//! Kernels as virtual media carry them: a plain arm64 `Image` (Linux
//! Documentation/arch/arm64/booting.rst, the 64-byte header with the magic at 0x38), the same
//! gzip-compressed (`vmlinuz` of most distributions), or an EFI zboot image whose payload is
//! gzip (Linux drivers/firmware/efi/libstub/zboot-header.S: "zimg" at 4, payload offset and
//! size at 8 and 12, the compression's name at 24).

use std::io::Read;

use flate2::read::GzDecoder;

/// The arm64 Image header's magic, "ARM\x64" at byte 0x38.
pub const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";
const ARM64_MAGIC_OFFSET: usize = 0x38;
/// The smallest arm64 Image: its header.
const ARM64_HEADER_LEN: usize = 64;

/// Why bytes are not an arm64 kernel this service can boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelProblem {
    /// Not a kernel we know: the text says what the bytes look like.
    NotArm64(String),
    /// Decompressed, it would be larger than the limit (bytes).
    TooLarge(usize),
    /// The compressed stream is broken.
    Corrupt(String),
}

impl std::fmt::Display for KernelProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelProblem::NotArm64(what) => write!(f, "not an arm64 kernel Image ({what})"),
            KernelProblem::TooLarge(limit) => {
                write!(f, "a kernel larger than {limit} bytes once decompressed")
            }
            KernelProblem::Corrupt(what) => write!(f, "a corrupt compressed kernel ({what})"),
        }
    }
}

/// Whether `bytes` start with an arm64 Image header.
pub fn is_arm64_image(bytes: &[u8]) -> bool {
    bytes.len() >= ARM64_HEADER_LEN
        && bytes.get(ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4) == Some(ARM64_MAGIC)
}

/// Whether `bytes` start like a gzip member (RFC 1952: 1f 8b, deflate).
fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b, 0x08])
}

/// The arm64 Image in `bytes` (at most `max` bytes) and how it was stored ("an arm64 Image",
/// "a gzip-compressed arm64 Image", ...).
pub fn decode(bytes: &[u8], max: usize) -> Result<(Vec<u8>, &'static str), KernelProblem> {
    if is_arm64_image(bytes) {
        if bytes.len() > max {
            return Err(KernelProblem::TooLarge(max));
        }
        return Ok((bytes.to_vec(), "an arm64 Image"));
    }
    if is_gzip(bytes) {
        let image = gunzip(bytes, max)?;
        check_decompressed(&image, "gzip")?;
        return Ok((image, "a gzip-compressed arm64 Image"));
    }
    if let Some(zboot) = Zboot::parse(bytes) {
        let payload = bytes
            .get(zboot.offset..)
            .and_then(|rest| rest.get(..zboot.size))
            .ok_or_else(|| {
                KernelProblem::Corrupt(format!(
                    "an EFI zboot image whose payload ({} bytes at {}) ends past its {} bytes",
                    zboot.size,
                    zboot.offset,
                    bytes.len()
                ))
            })?;
        if zboot.compression != "gzip" {
            return Err(KernelProblem::NotArm64(format!(
                "an EFI zboot image compressed with {:?}; only gzip is supported",
                zboot.compression
            )));
        }
        let image = gunzip(payload, max)?;
        check_decompressed(&image, "EFI zboot")?;
        return Ok((image, "an EFI zboot (gzip) arm64 Image"));
    }
    Err(KernelProblem::NotArm64(describe(bytes)))
}

fn check_decompressed(image: &[u8], how: &str) -> Result<(), KernelProblem> {
    if is_arm64_image(image) {
        Ok(())
    } else {
        Err(KernelProblem::NotArm64(format!(
            "{how}-compressed, and inside {}",
            describe(image)
        )))
    }
}

/// At most `max` bytes decompressed from the gzip stream `bytes`.
fn gunzip(bytes: &[u8], max: usize) -> Result<Vec<u8>, KernelProblem> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    GzDecoder::new(bytes)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| KernelProblem::Corrupt(format!("gzip: {e}")))?;
    if out.len() > max {
        return Err(KernelProblem::TooLarge(max));
    }
    Ok(out)
}

/// The header of an EFI zboot image.
struct Zboot {
    offset: usize,
    size: usize,
    compression: String,
}

impl Zboot {
    fn parse(bytes: &[u8]) -> Option<Zboot> {
        if bytes.get(0..2)? != b"MZ" || bytes.get(4..8)? != b"zimg" {
            return None;
        }
        let word = |at: usize| -> Option<usize> {
            let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(raw)).ok()
        };
        let name = bytes.get(24..32)?;
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Some(Zboot {
            offset: word(8)?,
            size: word(12)?,
            compression: String::from_utf8_lossy(&name[..end]).into_owned(),
        })
    }
}

/// What `bytes` look like, for an error message.
pub fn describe(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "empty".into();
    }
    if bytes.get(0x202..0x206) == Some(b"HdrS") {
        return "an x86 bzImage".into();
    }
    if bytes.starts_with(b"\x7fELF") {
        return "an ELF file".into();
    }
    if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return "zstd-compressed, which is not supported".into();
    }
    if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return "xz-compressed, which is not supported".into();
    }
    if bytes.starts_with(b"MZ") {
        return "a PE/COFF file without an arm64 Image header".into();
    }
    if bytes.len() < ARM64_HEADER_LEN {
        return format!("{} bytes, shorter than an arm64 Image header", bytes.len());
    }
    "no \"ARM\\x64\" magic at byte 0x38".into()
}

/// A minimal arm64 Image of `len` bytes (at least the header), for tests.
#[cfg(test)]
pub fn test_image(len: usize, fill: u8) -> Vec<u8> {
    let mut image = vec![fill; len.max(ARM64_HEADER_LEN)];
    image[..ARM64_HEADER_LEN].fill(0);
    image[ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4].copy_from_slice(ARM64_MAGIC);
    image
}

#[cfg(test)]
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zboot(payload: &[u8], compression: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 64];
        image[0..2].copy_from_slice(b"MZ");
        image[4..8].copy_from_slice(b"zimg");
        image[8..12].copy_from_slice(&64u32.to_le_bytes());
        image[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image[24..24 + compression.len()].copy_from_slice(compression);
        image.extend_from_slice(payload);
        image
    }

    #[test]
    fn a_plain_image_is_taken_as_it_is() {
        let image = test_image(4096, 7);
        assert_eq!(decode(&image, 1 << 20).unwrap(), (image, "an arm64 Image"));
    }

    #[test]
    fn a_gzip_image_is_decompressed() {
        let image = test_image(100_000, 1);
        let (out, how) = decode(&gzip(&image), 1 << 20).unwrap();
        assert_eq!(out, image);
        assert_eq!(how, "a gzip-compressed arm64 Image");
    }

    #[test]
    fn a_zboot_gzip_image_is_decompressed() {
        let image = test_image(10_000, 3);
        let (out, how) = decode(&zboot(&gzip(&image), b"gzip"), 1 << 20).unwrap();
        assert_eq!(out, image);
        assert!(how.contains("zboot"));
    }

    #[test]
    fn a_zboot_zstd_image_is_refused_by_name() {
        let err = decode(&zboot(b"whatever", b"zstd"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }

    #[test]
    fn a_zboot_payload_past_the_end_is_corrupt() {
        let mut image = zboot(b"abc", b"gzip");
        image[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&image, 1 << 20),
            Err(KernelProblem::Corrupt(_))
        ));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let zeros = gzip(&vec![0u8; 8 << 20]);
        assert_eq!(
            decode(&zeros, 1 << 20).unwrap_err(),
            KernelProblem::TooLarge(1 << 20)
        );
        let image = test_image(2 << 20, 0);
        assert_eq!(
            decode(&image, 1 << 20).unwrap_err(),
            KernelProblem::TooLarge(1 << 20)
        );
    }

    #[test]
    fn gzip_of_something_else_says_what_is_inside() {
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let err = decode(&gzip(&bz), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("x86 bzImage"), "{err}");
    }

    #[test]
    fn truncated_gzip_is_corrupt() {
        let packed = gzip(&test_image(50_000, 9));
        let err = decode(&packed[..packed.len() / 2], 1 << 20).unwrap_err();
        assert!(matches!(err, KernelProblem::Corrupt(_)), "{err}");
    }

    #[test]
    fn others_are_described() {
        assert!(describe(b"").contains("empty"));
        assert!(describe(b"\x7fELF....").contains("ELF"));
        assert!(describe(&[0x28, 0xb5, 0x2f, 0xfd, 0]).contains("zstd"));
        assert!(describe(&[0u8; 100]).contains("0x38"));
        assert!(describe(&[0u8; 10]).contains("shorter"));
    }
}
