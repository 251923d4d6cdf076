//! ELF to flat binary: the file bytes of every `PT_LOAD` segment placed at its virtual address
//! relative to the lowest one, padded with zeros to a 4 KiB multiple. Memory-only tails
//! (`NOLOAD` `.bss`, stacks) are not part of the file: an arm64 `Image` header's `image_size`
//! covers them. This is what a loader (QEMU `-kernel`, U-Boot `booti`) expects.

use anyhow::{Context, Result, bail, ensure};
use object::{Object, ObjectSegment, ObjectSymbol};

/// Granule the flat binary is padded to.
pub const PAGE: u64 = 4096;

/// A flat binary made from an ELF file.
#[derive(Clone, Debug)]
pub struct Flat {
    /// Virtual address of offset 0 (the lowest `PT_LOAD` address).
    pub base: u64,
    /// The image bytes, a multiple of [`PAGE`] long.
    pub bytes: Vec<u8>,
}

/// Lays out the `PT_LOAD` segments of `elf` as one flat binary.
pub fn elf_to_flat(elf: &[u8]) -> Result<Flat> {
    let file = object::File::parse(elf).context("not a readable ELF file")?;
    let mut segments = Vec::new();
    for segment in file.segments() {
        let data = segment.data().context("reading a PT_LOAD segment")?;
        if data.is_empty() {
            continue;
        }
        ensure!(
            data.len() as u64 <= segment.size(),
            "PT_LOAD at {:#x} has more file bytes than memory bytes",
            segment.address()
        );
        segments.push((segment.address(), data.len() as u64, data));
    }
    let Some(base) = segments.iter().map(|s| s.0).min() else {
        bail!("ELF file has no PT_LOAD segment");
    };
    let end = segments
        .iter()
        .map(|&(addr, size, _)| addr.checked_add(size).context("PT_LOAD segment wraps"))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(base);
    let len = round_up(end - base, PAGE);
    ensure!(
        len <= 1 << 30,
        "PT_LOAD segments span {len:#x} bytes: is this really a kernel?"
    );
    let mut bytes = vec![0u8; len as usize];
    let mut sorted = segments.clone();
    sorted.sort_by_key(|s| s.0);
    for pair in sorted.windows(2) {
        ensure!(
            pair[0].0 + pair[0].1 <= pair[1].0,
            "PT_LOAD segments at {:#x} and {:#x} overlap",
            pair[0].0,
            pair[1].0
        );
    }
    for (addr, _, data) in segments {
        let at = (addr - base) as usize;
        bytes[at..at + data.len()].copy_from_slice(data);
    }
    Ok(Flat { base, bytes })
}

/// Value of the symbol `name` in `elf`, if it has one.
pub fn symbol(elf: &[u8], name: &str) -> Result<Option<u64>> {
    let file = object::File::parse(elf).context("not a readable ELF file")?;
    Ok(file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address()))
}

/// The hypervisor's flat image, checked against its linker symbol `__image_end`
/// (linked at 0, so the flat length must equal it exactly) and its header's `image_size` (the
/// flat length and the boot stack after it, [`microvisor_plan::image::BOOT_STACK_TAIL`]).
pub fn hypervisor_flat(elf: &[u8]) -> Result<Vec<u8>> {
    let flat = elf_to_flat(elf)?;
    ensure!(
        flat.base == 0,
        "the hypervisor must be linked at 0 (lowest PT_LOAD is at {:#x})",
        flat.base
    );
    let end =
        symbol(elf, "__image_end")?.context("the hypervisor ELF has no `__image_end` symbol")?;
    ensure!(
        end == flat.bytes.len() as u64,
        "flat hypervisor is {:#x} bytes but `__image_end` is {end:#x}: check boot/link.ld",
        flat.bytes.len()
    );
    let image_size = flat
        .bytes
        .get(16..24)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    let expected = end + microvisor_plan::image::BOOT_STACK_TAIL;
    ensure!(
        image_size == Some(expected),
        "the hypervisor header's image_size is {image_size:#x?}, not the file and the boot stack \
         ({expected:#x}): check boot/link.ld against microvisor_plan::image::BOOT_STACK_TAIL"
    );
    Ok(flat.bytes)
}

/// `value` rounded up to a multiple of `align` (a power of two).
pub fn round_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian ELF64 executable with the given `(vaddr, file bytes, memsz)`
    /// segments and no sections.
    fn elf(segments: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let phoff = 64u64;
        let data_start = phoff + 56 * segments.len() as u64;
        let mut out = Vec::new();
        out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out.extend_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&segments.first().map_or(0, |s| s.0).to_le_bytes());
        out.extend_from_slice(&phoff.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, segments.len() as u16, 64, 0, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut offset = data_start;
        for (vaddr, data, memsz) in segments {
            out.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
            out.extend_from_slice(&7u32.to_le_bytes());
            for v in [offset, *vaddr, *vaddr, data.len() as u64, *memsz, 0x1000] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            offset += data.len() as u64;
        }
        for (_, data, _) in segments {
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn places_segments_at_their_addresses_from_the_lowest() {
        let image = elf(&[(0x4000_0000, b"head", 4), (0x4000_1000, b"data", 0x10)]);
        let flat = elf_to_flat(&image).unwrap();
        assert_eq!(flat.base, 0x4000_0000);
        assert_eq!(flat.bytes.len(), 0x2000);
        assert_eq!(&flat.bytes[..4], b"head");
        assert_eq!(&flat.bytes[0x1000..0x1004], b"data");
        assert!(flat.bytes[0x1004..].iter().all(|&b| b == 0));
    }

    #[test]
    fn memory_only_tails_are_left_out_and_length_is_padded_to_a_page() {
        let image = elf(&[(0, b"x", 0x3000)]);
        let flat = elf_to_flat(&image).unwrap();
        assert_eq!(flat.bytes.len(), 0x1000);
        assert_eq!(flat.bytes[0], b'x');
        let bss_only = elf(&[(0, b"code", 4), (0x1000, b"", 0x1000)]);
        assert_eq!(elf_to_flat(&bss_only).unwrap().bytes.len(), 0x1000);
    }

    #[test]
    fn rejects_overlapping_segments() {
        let first = [b'a'; 0x100];
        let image = elf(&[(0, &first, 0x100), (0x80, b"bbbb", 4)]);
        let Err(err) = elf_to_flat(&image) else {
            panic!("overlap accepted");
        };
        let err = err.to_string();
        assert!(err.contains("overlap"), "{err}");
    }

    #[test]
    fn rejects_an_elf_without_segments_and_non_elf_input() {
        assert!(elf_to_flat(&elf(&[])).is_err());
        assert!(elf_to_flat(b"not an elf at all").is_err());
    }

    #[test]
    fn hypervisor_without_image_end_symbol_is_rejected() {
        let image = elf(&[(0, b"code", 0x1000)]);
        let err = hypervisor_flat(&image).unwrap_err().to_string();
        assert!(err.contains("__image_end"), "{err}");
    }

    #[test]
    fn hypervisor_must_be_linked_at_zero() {
        let image = elf(&[(0x1000, b"code", 0x1000)]);
        let err = hypervisor_flat(&image).unwrap_err().to_string();
        assert!(err.contains("linked at 0"), "{err}");
    }
}
