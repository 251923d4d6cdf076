//! The environment a slice's firmware reads (`[slice.firmware] env`, docs/firmware.md).
//!
//! Debian's U-Boot for QEMU `virt` keeps its environment in flash, memory-mapped: 256 KiB at
//! 0x0400_0000 (`CONFIG_ENV_IS_IN_FLASH`, `CONFIG_ENV_SIZE`), a little-endian CRC-32 of the
//! rest and then `name=value` strings, each ending in a NUL, the last followed by another
//! NUL. A slice given variables sees them in that flash: its first pages hold the CRC and the
//! strings, every byte after them is 0xff, as in erased flash. U-Boot checks the CRC and
//! imports the variables instead of its built-in ones ("Loading Environment from Flash...
//! OK"), so the compiled plan holds the firmware's built-in environment with the plan's
//! variables merged in (xtask does that from the firmware binary).

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::Problem;

/// Bytes of U-Boot's environment, CRC included.
pub const ENV_SIZE: usize = 0x4_0000;
/// Size of the pages the variables live in.
pub const PAGE_SIZE: usize = 4096;
/// Most pages the variables may take.
pub const MAX_PAGES: usize = 16;
/// Bytes the strings may take (after the CRC), the final NUL included.
pub const MAX_STRINGS: usize = MAX_PAGES * PAGE_SIZE - 4;
/// Longest variable name accepted.
pub const MAX_NAME: usize = 64;
/// What erased flash reads.
const ERASED: u8 = 0xff;

/// Checks a slice's variables: names of 1..=[`MAX_NAME`] of `[A-Za-z0-9_.-]`, values of
/// printable ASCII (space included), all of them fitting [`MAX_PAGES`] pages.
pub fn check(env: &[(String, String)]) -> Result<(), Problem> {
    for (name, value) in env {
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            return Err(Problem::BadEnvName(name.clone()));
        }
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(Problem::BadEnvValue(name.clone()));
        }
    }
    let bytes = strings_len(env);
    if bytes > MAX_STRINGS {
        return Err(Problem::EnvTooLarge {
            bytes,
            max: MAX_STRINGS,
        });
    }
    Ok(())
}

/// Names of the distro boot's network targets in `boot_targets` (DHCP with TFTP: a boot
/// script, or an EFI binary as PXE clients ask for it; PXELINUX-style `pxe` where a build has it).
const NETWORK_TARGETS: [&str; 2] = ["dhcp", "pxe"];

/// `env` with its network boot targets moved to the front of `boot_targets`, the other targets
/// after them in their order: the firmware tries the network first and falls back to its disk,
/// as a server whose boot order puts PXE first. `None` when `env` has no `boot_targets` or no
/// network target in it.
pub fn network_first(env: &[(String, String)]) -> Option<Vec<(String, String)>> {
    let (_, targets) = env.iter().find(|(name, _)| name == "boot_targets")?;
    let (network, others): (Vec<&str>, Vec<&str>) = targets
        .split_ascii_whitespace()
        .partition(|target| NETWORK_TARGETS.contains(target));
    if network.is_empty() {
        return None;
    }
    let order = network
        .into_iter()
        .chain(others)
        .collect::<Vec<_>>()
        .join(" ");
    Some(
        env.iter()
            .map(|(name, value)| {
                let value = if name == "boot_targets" {
                    &order
                } else {
                    value
                };
                (name.clone(), value.clone())
            })
            .collect(),
    )
}

/// Bytes the strings take: `name=value` and a NUL each, and the final NUL.
fn strings_len(env: &[(String, String)]) -> usize {
    env.iter()
        .map(|(name, value)| name.len() + 1 + value.len() + 1)
        .sum::<usize>()
        + 1
}

/// The first pages of the environment flash for `env` (which [`check`] accepted), as many as
/// the strings need: the CRC of the whole environment as it reads with every later page
/// erased, then the strings, then 0xff.
pub fn pages(env: &[(String, String)]) -> Vec<u8> {
    let mut page = Vec::with_capacity(PAGE_SIZE);
    page.extend_from_slice(&[0; 4]);
    for (name, value) in env {
        page.extend_from_slice(name.as_bytes());
        page.push(b'=');
        page.extend_from_slice(value.as_bytes());
        page.push(0);
    }
    page.push(0);
    page.resize(page.len().div_ceil(PAGE_SIZE) * PAGE_SIZE, ERASED);
    let crc = Crc32::new()
        .update(&page[4..])
        .update_repeated(ERASED, ENV_SIZE - page.len())
        .finish();
    page[..4].copy_from_slice(&crc.to_le_bytes());
    page
}

/// CRC-32 as zlib and U-Boot compute it (IEEE 802.3, reflected, polynomial 0xEDB88320).
struct Crc32(u32);

/// The byte-at-a-time table of [`Crc32`].
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Crc32 {
        Crc32(!0)
    }

    fn update(self, bytes: &[u8]) -> Crc32 {
        self.feed(bytes.iter().copied())
    }

    fn update_repeated(self, byte: u8, count: usize) -> Crc32 {
        self.feed(core::iter::repeat_n(byte, count))
    }

    fn feed(self, bytes: impl Iterator<Item = u8>) -> Crc32 {
        Crc32(bytes.fold(self.0, |c, b| {
            TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
        }))
    }

    fn finish(self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(Crc32::new().update(b"123456789").finish(), 0xcbf4_3926);
        assert_eq!(
            Crc32::new().update_repeated(0xff, 3).finish(),
            Crc32::new().update(&[0xff; 3]).finish()
        );
    }

    #[test]
    fn the_page_holds_crc_strings_and_erased_bytes() {
        let vars = env(&[("bootdelay", "0"), ("mvtag", "hello world")]);
        let page = pages(&vars);
        assert_eq!(page.len(), PAGE_SIZE);
        let strings = b"bootdelay=0\0mvtag=hello world\0\0";
        assert_eq!(&page[4..4 + strings.len()], strings);
        assert!(page[4 + strings.len()..].iter().all(|&b| b == 0xff));
        // The CRC covers the whole environment as U-Boot reads it: this page and the erased
        // pages after it.
        let mut whole = page[4..].to_vec();
        whole.resize(ENV_SIZE - 4, 0xff);
        let crc = Crc32::new().update(&whole).finish();
        assert_eq!(page[..4], crc.to_le_bytes());
    }

    #[test]
    fn network_first_puts_the_network_targets_in_front() {
        let debian = env(&[
            ("bootcmd", "run distro_bootcmd"),
            ("boot_targets", "qfw usb0 scsi0 virtio0 nvme0 dhcp "),
            ("bootdelay", "2"),
        ]);
        assert_eq!(
            network_first(&debian),
            Some(env(&[
                ("bootcmd", "run distro_bootcmd"),
                ("boot_targets", "dhcp qfw usb0 scsi0 virtio0 nvme0"),
                ("bootdelay", "2"),
            ]))
        );
        let both = env(&[("boot_targets", "nvme0 pxe mmc0 dhcp")]);
        assert_eq!(
            network_first(&both),
            Some(env(&[("boot_targets", "pxe dhcp nvme0 mmc0")]))
        );
        // Nothing to put first: no network target, no boot_targets.
        assert_eq!(
            network_first(&env(&[("boot_targets", "nvme0 dhcpx")])),
            None
        );
        assert_eq!(network_first(&env(&[("bootcmd", "dhcp")])), None);
        assert_eq!(network_first(&[]), None);
    }

    #[test]
    fn names_values_and_size_are_checked() {
        assert!(check(&env(&[("bootcmd", "run distro_bootcmd; echo ${x}")])).is_ok());
        assert_eq!(
            check(&env(&[("a=b", "1")])),
            Err(Problem::BadEnvName("a=b".into()))
        );
        assert_eq!(
            check(&env(&[("", "1")])),
            Err(Problem::BadEnvName("".into()))
        );
        assert_eq!(
            check(&env(&[("x", "line\nbreak")])),
            Err(Problem::BadEnvValue("x".into()))
        );
        let long = "v".repeat(MAX_STRINGS);
        assert_eq!(
            check(&env(&[("x", &long)])),
            Err(Problem::EnvTooLarge {
                bytes: MAX_STRINGS + 4,
                max: MAX_STRINGS
            })
        );
        let fits = "v".repeat(MAX_STRINGS - 4);
        assert!(check(&env(&[("x", &fits)])).is_ok());
        let whole = pages(&env(&[("x", &fits)]));
        assert_eq!(whole.len(), MAX_PAGES * PAGE_SIZE);
        assert_eq!(whole[MAX_PAGES * PAGE_SIZE - 1], 0);
        assert_eq!(
            pages(&env(&[("x", &"v".repeat(5000))])).len(),
            2 * PAGE_SIZE
        );
    }
}
