//! Where a guest's kernel, initrd and device tree go in its IPA space (Linux arm64 boot protocol,
//! Documentation/arch/arm64/booting.rst).
//!
//! - RAM starts at [`GUEST_RAM_BASE`] (2 MiB aligned, as the protocol requires of the base).
//! - The kernel is loaded at `GUEST_RAM_BASE + text_offset` and occupies
//!   [`Arm64Header::effective_size`] bytes.
//! - The device tree gets the last [`DTB_MAX`] (2 MiB, the protocol's limit) of the *boot
//!   window*: the first [`BOOT_WINDOW`] (32 GiB) of RAM, i.e. the end of RAM for any slice of
//!   32 GiB or less. The protocol requires the initrd to lie in a 1 GiB-aligned window of at most
//!   32 GiB that covers the kernel; this window starts at `GUEST_RAM_BASE`, which is 1 GiB aligned.
//! - The initrd, if any, sits right below the device tree, its start aligned down to 4 KiB.

use crate::error::{Field, PlanError, Problem};
use crate::image::Arm64Header;
use crate::size::{GIB, MIB};

/// IPA of the first byte of every slice's RAM (as on QEMU `virt`).
pub const GUEST_RAM_BASE: u64 = 0x4000_0000;
/// Room reserved for the generated device tree (the boot protocol's maximum DTB size).
pub const DTB_MAX: u64 = 2 * MIB;
/// Part of RAM, from its base, that holds kernel, initrd and device tree.
pub const BOOT_WINDOW: u64 = 32 * GIB;
/// Alignment of the initrd and device tree.
const PAGE: u64 = 4096;
/// Granule in which the smallest fitting memory size is suggested.
const SUGGESTION_GRANULE: u64 = 2 * MIB;

/// The IPA layout of one slice at boot. Ranges are half-open: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    /// Where the kernel Image is copied and entered (`GUEST_RAM_BASE + text_offset`).
    pub kernel_ipa: u64,
    /// End of the kernel's footprint (`kernel_ipa + effective_size`).
    pub kernel_end: u64,
    /// The initrd's `[start, end)`, if there is one.
    pub initrd: Option<(u64, u64)>,
    /// Where the device tree is written (passed in x0).
    pub dtb_ipa: u64,
    /// Bytes available for the device tree at `dtb_ipa`.
    pub dtb_max: u64,
}

impl GuestLayout {
    /// Lays out a slice with `memory` bytes of RAM, a kernel with header `kernel` and file
    /// length `kernel_file_len`, and optionally an initrd of `initrd_len` bytes.
    ///
    /// Fails with `ImageTooLarge` on field `kernel` when the kernel does not fit below the
    /// device tree, or on field `initrd` when the kernel fits but the initrd no longer does.
    /// The error names no slice; callers add it with [`PlanError::with_slice`].
    pub fn new(
        memory: u64,
        kernel: &Arm64Header,
        kernel_file_len: u64,
        initrd_len: Option<u64>,
    ) -> Result<GuestLayout, PlanError> {
        let kernel_size = kernel.effective_size(kernel_file_len);
        let min_memory = min_memory(kernel.text_offset, kernel_size, initrd_len.unwrap_or(0));
        let too_large = |field, needed, available| PlanError {
            slice: None,
            field,
            problem: Problem::ImageTooLarge {
                needed,
                available,
                min_memory,
            },
        };
        let kernel_ipa = GUEST_RAM_BASE.saturating_add(kernel.text_offset);
        let dtb_ipa = dtb_ipa(memory).ok_or_else(|| too_large(Field::Kernel, kernel_size, 0))?;
        let kernel_end = kernel_ipa
            .checked_add(kernel_size)
            .filter(|&end| end <= dtb_ipa)
            .ok_or_else(|| {
                too_large(
                    Field::Kernel,
                    kernel_size,
                    dtb_ipa.saturating_sub(kernel_ipa),
                )
            })?;
        let initrd = match initrd_len {
            None => None,
            Some(len) => Some(initrd_range(len, kernel_end, dtb_ipa).ok_or_else(|| {
                let available =
                    dtb_ipa.saturating_sub(align_up(kernel_end, PAGE).unwrap_or(u64::MAX));
                too_large(Field::Initrd, len, available)
            })?),
        };
        Ok(GuestLayout {
            kernel_ipa,
            kernel_end,
            initrd,
            dtb_ipa,
            dtb_max: DTB_MAX,
        })
    }
}

/// Where firmware (`BootProtocol::Firmware`) is loaded and entered: 2 MiB into RAM, above its
/// device tree at the start of RAM (QEMU `virt`'s layout for `-bios`, which Debian's U-Boot
/// expects: its board code reads the tree from the first byte of RAM).
pub const FIRMWARE_OFFSET: u64 = 2 * MIB;
/// Least RAM a firmware slice is given room to run in: U-Boot relocates itself, its heap and
/// its stack to the top of RAM, and loads what it boots in between.
pub const FIRMWARE_MIN_MEMORY: u64 = 64 * MIB;

impl GuestLayout {
    /// Lays out firmware of `file_len` bytes in a slice with `memory` bytes of RAM: the device
    /// tree at the start of RAM, the firmware [`FIRMWARE_OFFSET`] above it, no initrd. Fails
    /// with `ImageTooLarge` on field `kernel` when RAM is below [`FIRMWARE_MIN_MEMORY`] or the
    /// firmware does not fit in it.
    pub fn firmware(memory: u64, file_len: u64) -> Result<GuestLayout, PlanError> {
        let kernel_ipa = GUEST_RAM_BASE + FIRMWARE_OFFSET;
        let min_memory = align_up(FIRMWARE_OFFSET.saturating_add(file_len), SUGGESTION_GRANULE)
            .unwrap_or(u64::MAX)
            .max(FIRMWARE_MIN_MEMORY);
        let kernel_end = kernel_ipa
            .checked_add(file_len)
            .filter(|_| memory >= min_memory)
            .ok_or(PlanError {
                slice: None,
                field: Field::Kernel,
                problem: Problem::ImageTooLarge {
                    needed: file_len,
                    available: memory.saturating_sub(FIRMWARE_OFFSET),
                    min_memory,
                },
            })?;
        Ok(GuestLayout {
            kernel_ipa,
            kernel_end,
            initrd: None,
            dtb_ipa: GUEST_RAM_BASE,
            dtb_max: DTB_MAX,
        })
    }
}

/// IPA of the device tree: the last `DTB_MAX` of the boot window, or `None` if RAM is smaller
/// than `DTB_MAX`.
fn dtb_ipa(memory: u64) -> Option<u64> {
    let window_end = GUEST_RAM_BASE.checked_add(memory.min(BOOT_WINDOW))?;
    let dtb = align_down(window_end.checked_sub(DTB_MAX)?, PAGE);
    (dtb >= GUEST_RAM_BASE).then_some(dtb)
}

/// The initrd's range right below the device tree, if it stays above the kernel.
fn initrd_range(len: u64, kernel_end: u64, dtb_ipa: u64) -> Option<(u64, u64)> {
    let start = align_down(dtb_ipa.checked_sub(len)?, PAGE);
    (start >= kernel_end).then_some((start, start.checked_add(len)?))
}

/// The smallest slice memory (a 2 MiB multiple) holding kernel, initrd and device tree;
/// `u64::MAX` if that does not fit in 64 bits.
fn min_memory(text_offset: u64, kernel_size: u64, initrd_len: u64) -> u64 {
    align_up(kernel_size, PAGE)
        .zip(align_up(initrd_len, PAGE))
        .and_then(|(kernel, initrd)| {
            text_offset
                .checked_add(kernel)?
                .checked_add(initrd)?
                .checked_add(DTB_MAX)
        })
        .and_then(|bytes| align_up(bytes, SUGGESTION_GRANULE))
        .unwrap_or(u64::MAX)
}

/// `value` rounded down to a multiple of `align` (a power of two).
pub(crate) fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

/// `value` rounded up to a multiple of `align` (a power of two), `None` on overflow.
pub(crate) fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(align_down(value.checked_add(align - 1)?, align))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64) -> Arm64Header {
        Arm64Header {
            text_offset,
            image_size,
            flags: 0xa,
        }
    }

    fn problem_of(result: Result<GuestLayout, PlanError>) -> (Field, Problem) {
        let error = result.unwrap_err();
        assert_eq!(error.slice, None);
        (error.field, error.problem)
    }

    #[test]
    fn kernel_initrd_and_dtb_in_256_mib() {
        let layout = GuestLayout::new(
            256 * MIB,
            &header(0, 30 * MIB),
            20 * MIB,
            Some(10 * MIB + 100),
        )
        .unwrap();
        assert_eq!(
            layout,
            GuestLayout {
                kernel_ipa: 0x4000_0000,
                kernel_end: 0x41e0_0000,
                initrd: Some((0x4f3f_f000, 0x4fdf_f064)),
                dtb_ipa: 0x4fe0_0000,
                dtb_max: 0x20_0000,
            }
        );
    }

    #[test]
    fn text_offset_moves_the_kernel() {
        let layout = GuestLayout::new(64 * MIB, &header(0x8_0000, 0), 0x123_4567, None).unwrap();
        assert_eq!(layout.kernel_ipa, 0x4008_0000);
        assert_eq!(layout.kernel_end, 0x4008_0000 + 0x123_4567);
        assert_eq!(layout.initrd, None);
        assert_eq!(layout.dtb_ipa, 0x43e0_0000);
    }

    #[test]
    fn dtb_stays_in_the_first_32_gib() {
        let layout = GuestLayout::new(64 * GIB, &header(0, 40 * MIB), 0, Some(MIB)).unwrap();
        assert_eq!(layout.dtb_ipa, GUEST_RAM_BASE + 32 * GIB - 2 * MIB);
        assert_eq!(layout.initrd, Some((layout.dtb_ipa - MIB, layout.dtb_ipa)));
    }

    #[test]
    fn firmware_sits_2_mib_above_its_device_tree_at_the_start_of_ram() {
        let layout = GuestLayout::firmware(256 * MIB, 900 * 1024).unwrap();
        assert_eq!(
            layout,
            GuestLayout {
                kernel_ipa: 0x4020_0000,
                kernel_end: 0x4020_0000 + 900 * 1024,
                initrd: None,
                dtb_ipa: 0x4000_0000,
                dtb_max: 0x20_0000,
            }
        );
        let (field, problem) = problem_of(GuestLayout::firmware(32 * MIB, 900 * 1024));
        assert_eq!(field, Field::Kernel);
        assert!(matches!(
            problem,
            Problem::ImageTooLarge {
                min_memory,
                ..
            } if min_memory == FIRMWARE_MIN_MEMORY
        ));
        let (_, problem) = problem_of(GuestLayout::firmware(128 * MIB, 200 * MIB));
        assert!(
            matches!(problem, Problem::ImageTooLarge { min_memory, .. } if min_memory == 202 * MIB)
        );
    }

    #[test]
    fn kernel_that_just_fits() {
        let layout = GuestLayout::new(32 * MIB, &header(0, 30 * MIB), 0, None).unwrap();
        assert_eq!(layout.kernel_end, layout.dtb_ipa);
    }

    #[test]
    fn kernel_too_large() {
        let result = GuestLayout::new(32 * MIB, &header(0, 30 * MIB + 1), 0, None);
        let expected = Problem::ImageTooLarge {
            needed: 30 * MIB + 1,
            available: 30 * MIB,
            min_memory: 34 * MIB,
        };
        assert_eq!(problem_of(result), (Field::Kernel, expected));
    }

    #[test]
    fn memory_below_the_dtb_size() {
        let result = GuestLayout::new(MIB, &header(0, 4096), 0, None);
        let expected = Problem::ImageTooLarge {
            needed: 4096,
            available: 0,
            min_memory: 4 * MIB,
        };
        assert_eq!(problem_of(result), (Field::Kernel, expected));
    }

    #[test]
    fn initrd_too_large() {
        let result = GuestLayout::new(64 * MIB, &header(0, 30 * MIB), 0, Some(32 * MIB + 1));
        let expected = Problem::ImageTooLarge {
            needed: 32 * MIB + 1,
            available: 32 * MIB,
            min_memory: 66 * MIB,
        };
        assert_eq!(problem_of(result), (Field::Initrd, expected));
    }

    #[test]
    fn suggested_memory_fits() {
        let kernel = header(0x8_0000, 30 * MIB + 5);
        let initrd = Some(33 * MIB + 7);
        let Problem::ImageTooLarge { min_memory, .. } =
            problem_of(GuestLayout::new(64 * MIB, &kernel, 0, initrd)).1
        else {
            panic!("expected ImageTooLarge");
        };
        assert!(GuestLayout::new(min_memory, &kernel, 0, initrd).is_ok());
        // 2 MiB less is refused, and suggests the same size again: in 64 MiB the initrd has
        // from the kernel's end (0.5 + 30 MiB + 5 bytes, page-rounded) to the DTB (62 MiB).
        let below = problem_of(GuestLayout::new(min_memory - 2 * MIB, &kernel, 0, initrd));
        let expected = Problem::ImageTooLarge {
            needed: 33 * MIB + 7,
            available: 31 * MIB + MIB / 2 - 4096,
            min_memory: 66 * MIB,
        };
        assert_eq!(below, (Field::Initrd, expected));
    }

    #[test]
    fn initrd_rounding_still_clears_the_kernel() {
        // 4 KiB between kernel end and DTB; a 4 KiB initrd fits, 4 KiB + 1 does not.
        let kernel = header(0, 30 * MIB - 4096);
        assert!(GuestLayout::new(32 * MIB, &kernel, 0, Some(4096)).is_ok());
        let (field, _) = problem_of(GuestLayout::new(32 * MIB, &kernel, 0, Some(4097)));
        assert_eq!(field, Field::Initrd);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        // The kernel may use up to the DTB, which stays below 32 GiB of IPA space.
        let too_large = |needed, available| Problem::ImageTooLarge {
            needed,
            available,
            min_memory: u64::MAX,
        };
        assert_eq!(
            problem_of(GuestLayout::new(u64::MAX, &header(0, u64::MAX), 0, None)),
            (Field::Kernel, too_large(u64::MAX, 32 * GIB - 2 * MIB))
        );
        assert_eq!(
            problem_of(GuestLayout::new(u64::MAX, &header(u64::MAX, 0), 0, None)),
            (Field::Kernel, too_large(0, 0)),
            "a text_offset past the address space leaves no room"
        );
        // 1 GiB: kernel in the first MiB, DTB in the last 2: 1021 MiB between.
        assert_eq!(
            problem_of(GuestLayout::new(GIB, &header(0, MIB), 0, Some(u64::MAX))),
            (Field::Initrd, too_large(u64::MAX, 1021 * MIB))
        );
        let Problem::ImageTooLarge { min_memory, .. } =
            problem_of(GuestLayout::new(GIB, &header(0, u64::MAX - 10), 0, None)).1
        else {
            panic!("expected ImageTooLarge");
        };
        assert_eq!(min_memory, u64::MAX);
    }

    #[test]
    fn alignment_helpers() {
        assert_eq!(align_down(0x1fff, 0x1000), 0x1000);
        assert_eq!(align_up(0x1001, 0x1000), Some(0x2000));
        assert_eq!(align_up(0x1000, 0x1000), Some(0x1000));
        assert_eq!(align_up(u64::MAX, 0x1000), None);
    }
}
