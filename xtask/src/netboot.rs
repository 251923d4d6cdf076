//! TFTP roots for firmware slices that boot from the network (docs/firmware.md, "Network
//! boot"): what a provisioning server would serve a bare-metal server that PXE boots, built
//! from the Linux guest's Debian kernel and initramfs. A node's `network = "host"` NIC with
//! `tftp = DIR` (docs/node-profiles.md) serves the directory through its QEMU user network.
//!
//! Debian's U-Boot (`qemu_arm64`, 2023.01) tries the network last in its distro boot: `dhcp`,
//! then it fetches `boot.scr.uimg` from the TFTP server and runs it. The root holds:
//!
//! - `boot.scr.uimg`: a U-Boot script (a legacy image of type script, [`script_image`]) that
//!   runs `pxe get` and `pxe boot`;
//! - `pxelinux.cfg/default`: the PXELINUX configuration `pxe get` falls back to after the
//!   per-MAC (`01-52-54-00-...`) and per-address names ([`pxelinux_config`]);
//! - `Image` and `initrd.img`: the kernel and initramfs it names.

use std::path::Path;

use anyhow::{Context, Result};

use crate::linux::{DEFAULT_CMDLINE, LinuxGuest};

/// The script U-Boot's distro boot fetches after DHCP (its `boot_script_dhcp`).
pub const BOOT_SCRIPT: &str = "boot.scr.uimg";
/// What the boot script runs: PXELINUX-style boot from the same server.
pub const SCRIPT: &str = "echo microvisor netboot: PXE from ${serverip}\npxe get && pxe boot\n";

/// Legacy U-Boot image header (`include/image.h`, `struct legacy_img_hdr`): 64 bytes,
/// big-endian.
const HEADER_BYTES: usize = 64;
const IH_MAGIC: u32 = 0x2705_1956;
/// `IH_OS_LINUX`, `IH_ARCH_ARM64`, `IH_TYPE_SCRIPT`, `IH_COMP_NONE`: what `mkimage -A arm64
/// -T script -C none` writes.
const IH_OS_LINUX: u8 = 5;
const IH_ARCH_ARM64: u8 = 22;
const IH_TYPE_SCRIPT: u8 = 6;
const IH_COMP_NONE: u8 = 0;
/// Bytes of `ih_name`.
const NAME_BYTES: usize = 32;

/// `script` as a U-Boot legacy script image (what `mkimage -T script` makes): the header,
/// then the multi-image length table (the script's length, a zero) and the script. Time 0,
/// so the same script always gives the same bytes. Names longer than 31 bytes are cut.
pub fn script_image(name: &str, script: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + script.len());
    data.extend_from_slice(&(script.len() as u32).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script.as_bytes());
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&IH_MAGIC.to_be_bytes());
    // 4..8 header CRC (below), 8..12 time 0.
    header[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    // 16..20 load address, 20..24 entry point: 0.
    header[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    header[28] = IH_OS_LINUX;
    header[29] = IH_ARCH_ARM64;
    header[30] = IH_TYPE_SCRIPT;
    header[31] = IH_COMP_NONE;
    let name = &name.as_bytes()[..name.len().min(NAME_BYTES - 1)];
    header[32..32 + name.len()].copy_from_slice(name);
    let crc = crc32fast::hash(&header);
    header[4..8].copy_from_slice(&crc.to_be_bytes());
    let mut image = header.to_vec();
    image.extend_from_slice(&data);
    image
}

/// `pxelinux.cfg/default` booting `Image` with `initrd.img` (paths relative to the TFTP
/// root) and `append`.
pub fn pxelinux_config(append: &str) -> String {
    format!(
        "# Written by cargo xtask for a microvisor firmware slice that boots from the network\n\
         default debian\n\
         label debian\n\
         \x20   kernel Image\n\
         \x20   initrd initrd.img\n\
         \x20   append {append}\n"
    )
}

/// Writes a TFTP root into `dir` (emptied first) that network boots the Linux guest with its
/// default command line plus `extra`.
pub fn write_tftp_root(guest: &LinuxGuest, extra: &str, dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let cfg = dir.join("pxelinux.cfg");
    std::fs::create_dir_all(&cfg).with_context(|| format!("creating {}", cfg.display()))?;
    let append = if extra.is_empty() {
        DEFAULT_CMDLINE.to_string()
    } else {
        format!("{DEFAULT_CMDLINE} {extra}")
    };
    let script = script_image("microvisor netboot", SCRIPT);
    let config = pxelinux_config(&append);
    let files: [(&str, &[u8]); 4] = [
        (BOOT_SCRIPT, &script),
        ("pxelinux.cfg/default", config.as_bytes()),
        ("Image", &guest.kernel),
        ("initrd.img", &guest.initramfs),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_image_is_what_mkimage_makes() {
        let image = script_image("microvisor netboot", "echo hi\n");
        assert_eq!(image.len(), 64 + 8 + 8);
        let be = |at: usize| u32::from_be_bytes(image[at..at + 4].try_into().unwrap());
        assert_eq!(be(0), IH_MAGIC);
        assert_eq!(be(12), 16, "data: length table and script");
        assert_eq!(&image[28..32], &[5, 22, 6, 0]);
        assert_eq!(&image[32..50], b"microvisor netboot");
        assert_eq!(image[50], 0);
        assert_eq!(be(64), 8, "script length");
        assert_eq!(be(68), 0, "end of the length table");
        assert_eq!(&image[72..], b"echo hi\n");
        assert_eq!(be(24), crc32fast::hash(&image[64..]), "data CRC");
        let mut header = image[..64].to_vec();
        header[4..8].fill(0);
        assert_eq!(be(4), crc32fast::hash(&header), "header CRC");
        // A long name is cut, leaving its terminating zero.
        let long = script_image(&"x".repeat(40), "");
        assert_eq!(&long[32..63], "x".repeat(31).as_bytes());
        assert_eq!(long[63], 0);
    }

    #[test]
    fn the_pxelinux_config_names_the_kernel_initrd_and_command_line() {
        let cfg = pxelinux_config("console=ttyAMA0 a=b");
        assert!(cfg.contains("\ndefault debian\n"), "{cfg}");
        assert!(cfg.contains("\n    kernel Image\n"), "{cfg}");
        assert!(cfg.contains("\n    initrd initrd.img\n"), "{cfg}");
        assert!(cfg.ends_with("\n    append console=ttyAMA0 a=b\n"), "{cfg}");
    }
}
