//! Installed-OS disks for slices that boot firmware (`kernel = "firmware"`, DESIGN.md §9):
//! what a provisioning tool would have written onto a bare-metal server's disk, built from the
//! Linux guest without root-only tools. A GUID partition table (UEFI 2.10 §5.3, written here)
//! holds an ext4 root made by `mke2fs -d` from a directory: the guest's userspace (its
//! initramfs unpacked), the kernel at `/boot/Image` and `/boot/extlinux/extlinux.conf`, or,
//! for UEFI, `/boot/grub/grub.cfg` and an EFI system partition in front with GRUB. The kernel
//! mounts the root itself (`root=PARTUUID=...`). docs/firmware.md.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::linux::{DEFAULT_CMDLINE, LinuxGuest};

/// Bytes per logical block (QEMU's NVMe namespace, and the GPT's LBA).
pub const SECTOR: u64 = 512;
/// The first partition starts 1 MiB into the disk, as partitioning tools place it.
const FIRST_PARTITION_LBA: u64 = 2048;
/// Entries in each partition entry array, and the size of one.
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Blocks of one partition entry array (16 KiB).
const ENTRY_BLOCKS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// Linux filesystem data partition type (0FC63DAF-8483-4772-8E79-3D69D8477DE4).
pub const LINUX_FILESYSTEM: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// GPT attribute bit 2: legacy BIOS bootable, which U-Boot's distro boot takes as "boot from
/// this partition".
const LEGACY_BOOTABLE: u64 = 1 << 2;

/// One partition of a GPT disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Type GUID, text form.
    pub type_guid: &'static str,
    /// Unique GUID, text form.
    pub guid: String,
    pub name: &'static str,
    /// First and last LBA, inclusive.
    pub first: u64,
    pub last: u64,
    pub bootable: bool,
}

/// A GUID in its on-disk byte order: the first three fields little-endian, the rest as
/// written. None unless `text` is `8-4-4-4-12` hex digits.
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let parts: Vec<&str> = text.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    if parts.len() != 5
        || parts.iter().zip(lengths).any(|(p, n)| p.len() != n)
        || !parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let hex: String = parts.concat();
    let mut raw = [0u8; 16];
    for (i, byte) in raw.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    raw[0..4].reverse();
    raw[4..6].reverse();
    raw[6..8].reverse();
    Some(raw)
}

/// The GPT structures of a disk of `blocks` LBAs: the protective MBR and primary header with
/// its entry array (LBA 0 to 33), and the backup entry array and header (the last 33 LBAs).
pub struct Gpt {
    pub primary: Vec<u8>,
    pub backup: Vec<u8>,
    /// LBA where `backup` starts.
    pub backup_lba: u64,
}

/// The partition table of a disk of `blocks` LBAs holding `partitions`, `disk_guid` naming it.
pub fn gpt(blocks: u64, disk_guid: &str, partitions: &[Partition]) -> Result<Gpt> {
    ensure!(
        blocks > 2 * (ENTRY_BLOCKS + 1) + FIRST_PARTITION_LBA,
        "a disk of {blocks} blocks is too small for a partition table"
    );
    ensure!(partitions.len() as u64 <= ENTRIES, "too many partitions");
    let last_lba = blocks - 1;
    let first_usable = 2 + ENTRY_BLOCKS;
    let last_usable = last_lba - ENTRY_BLOCKS - 1;
    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in partitions.iter().enumerate() {
        ensure!(
            first_usable <= p.first && p.first <= p.last && p.last <= last_usable,
            "partition {} ({}-{}) outside the usable blocks {first_usable}-{last_usable}",
            p.name,
            p.first,
            p.last
        );
        let e = &mut entries[i * ENTRY_SIZE as usize..][..ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&guid_bytes(p.type_guid).context("partition type GUID")?);
        e[16..32].copy_from_slice(&guid_bytes(&p.guid).context("partition GUID")?);
        e[32..40].copy_from_slice(&p.first.to_le_bytes());
        e[40..48].copy_from_slice(&p.last.to_le_bytes());
        let attributes = if p.bootable { LEGACY_BOOTABLE } else { 0 };
        e[48..56].copy_from_slice(&attributes.to_le_bytes());
        for (j, unit) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..][..2].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let entries_crc = crc32fast::hash(&entries);
    let header = |current: u64, backup: u64, entries_at: u64| -> Result<Vec<u8>> {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&guid_bytes(disk_guid).context("disk GUID")?);
        h[72..80].copy_from_slice(&entries_at.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        Ok(h)
    };
    // Protective MBR: one partition of type 0xEE over the whole disk (UEFI 2.10 §5.2.3).
    let mut mbr = vec![0u8; SECTOR as usize];
    let record = &mut mbr[446..462];
    record[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    record[4] = 0xee;
    record[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    record[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(last_lba).unwrap_or(u32::MAX);
    record[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;

    let mut primary = mbr;
    primary.extend(header(1, last_lba, 2)?);
    primary.extend(&entries);
    let backup_lba = last_lba - ENTRY_BLOCKS;
    let mut backup = entries.clone();
    backup.extend(header(last_lba, 1, backup_lba)?);
    Ok(Gpt {
        primary,
        backup,
        backup_lba,
    })
}

/// Where the installed kernel is, on the root partition.
pub const KERNEL: &str = "/boot/Image";

/// `extlinux.conf` booting `kernel` with `append`.
pub fn extlinux_conf(kernel: &str, append: &str) -> String {
    format!(
        "# Written by cargo xtask for a microvisor firmware slice\n\
         default installed\n\
         timeout 1\n\
         label installed\n\
         \x20   kernel {kernel}\n\
         \x20   append {append}\n"
    )
}

/// How the installed OS is booted by the slice's firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    /// U-Boot's distro boot reads `/boot/extlinux/extlinux.conf` from the root partition.
    Extlinux,
    /// UEFI: U-Boot's EFI loader runs GRUB from the EFI system partition's removable path
    /// (`/EFI/BOOT/BOOTAA64.EFI`); GRUB reads `/boot/grub/grub.cfg` from the root partition.
    Efi,
}

/// What a provisioning tool wrote onto a firmware slice's disk: how it boots, what its kernel
/// is told, and, for the tests of bad disks, what is wrong with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installation<'a> {
    pub loader: Loader,
    pub os: Os<'a>,
    /// Appended to the Linux guest's default command line; a bare-metal image's whole command
    /// line.
    pub extra: &'a str,
    pub defect: Defect,
}

/// The operating system installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Os<'a> {
    /// The Linux guest: Debian's cloud kernel and the guest's initramfs.
    Debian,
    /// A bare-metal arm64 Image (e.g. the probe), booted without an initrd.
    BareMetal(&'a [u8]),
}

impl Installation<'static> {
    /// A working installation booted through `loader` with the default command line.
    pub fn new(loader: Loader) -> Installation<'static> {
        Installation {
            loader,
            os: Os::Debian,
            extra: "",
            defect: Defect::None,
        }
    }
}

/// Something wrong with an installed disk, as operators meet it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    None,
    /// The EFI system partition is there, empty: no loader at the removable path.
    NoEfiLoader,
    /// The boot configuration (`extlinux.conf`, `grub.cfg`) names a kernel that is not on the
    /// disk ([`MISSING_KERNEL`]).
    KernelMissing,
}

/// The kernel a [`Defect::KernelMissing`] configuration names.
pub const MISSING_KERNEL: &str = "/boot/vmlinuz-missing";

/// EFI system partition type (C12A7328-F81F-11D2-BA4B-00A0C93EC93B).
pub const EFI_SYSTEM: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Size of the EFI system partition.
const ESP_BYTES: u64 = 32 << 20;

/// Writes an installed Debian (the Linux guest's kernel and initramfs, booted as `install`
/// says) into `disk` at byte `offset`, as a GPT disk of `size` bytes: the share of a firmware
/// slice in a node's disk file. `work` is a scratch directory under the target directory.
pub fn write_installed_disk(
    guest: &LinuxGuest,
    install: Installation<'_>,
    disk: &Path,
    offset: u64,
    size: u64,
    work: &Path,
) -> Result<()> {
    ensure!(
        size.is_multiple_of(SECTOR) && offset.is_multiple_of(SECTOR),
        "disk window not block aligned"
    );
    let blocks = size / SECTOR;
    let last_usable = blocks.saturating_sub(ENTRY_BLOCKS + 2);
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let Installation {
        loader,
        os,
        extra,
        defect,
    } = install;
    let mut append = match os {
        Os::BareMetal(_) => String::new(),
        Os::Debian => {
            format!("root=PARTUUID={ROOT_PARTITION} rw rootwait init=/init {DEFAULT_CMDLINE}")
        }
    };
    if !extra.is_empty() {
        if !append.is_empty() {
            append.push(' ');
        }
        append.push_str(extra);
    }
    let kernel = if defect == Defect::KernelMissing {
        MISSING_KERNEL
    } else {
        KERNEL
    };

    let mut parts: Vec<(Partition, std::path::PathBuf)> = Vec::new();
    let mut next = FIRST_PARTITION_LBA;
    if loader == Loader::Efi {
        let last = next + ESP_BYTES / SECTOR - 1;
        ensure!(
            last < last_usable,
            "a disk of {size} bytes is too small for an EFI system partition and a root"
        );
        let esp = work.join("esp.fat");
        let grub = work.join("BOOTAA64.EFI");
        let tools = efi_tools(work)?;
        make_grub(&tools, &grub, work)?;
        let loader_file = (defect != Defect::NoEfiLoader).then_some(grub.as_path());
        make_esp(&tools, &esp, ESP_BYTES, loader_file)?;
        parts.push((
            Partition {
                type_guid: EFI_SYSTEM,
                guid: "6d766973-6f72-4566-6953-797374656d01".into(),
                name: "EFI system partition",
                first: next,
                last,
                bootable: true,
            },
            esp,
        ));
        next = last + 1;
    }
    let tree = work.join("root");
    std::fs::create_dir_all(tree.join("boot"))
        .with_context(|| format!("creating {}", tree.display()))?;
    let mut devices = Vec::new();
    let kernel_bytes = match os {
        Os::Debian => {
            devices = unpack_userspace(&guest.initramfs, &tree)?;
            &guest.kernel[..]
        }
        Os::BareMetal(image) => image,
    };
    std::fs::write(tree.join(KERNEL.trim_start_matches('/')), kernel_bytes)?;
    match loader {
        Loader::Extlinux => {
            std::fs::create_dir_all(tree.join("boot/extlinux"))?;
            std::fs::write(
                tree.join("boot/extlinux/extlinux.conf"),
                extlinux_conf(kernel, &append),
            )?;
        }
        Loader::Efi => {
            std::fs::create_dir_all(tree.join("boot/grub"))?;
            std::fs::write(tree.join("boot/grub/grub.cfg"), grub_cfg(kernel, &append))?;
        }
    }
    let root = Partition {
        type_guid: LINUX_FILESYSTEM,
        guid: ROOT_PARTITION.into(),
        name: "root",
        first: next,
        last: last_usable,
        bootable: loader == Loader::Extlinux,
    };
    let fs = work.join("root.ext4");
    make_ext4(&tree, &fs, (root.last - root.first + 1) * SECTOR)?;
    make_devices(&fs, &devices)?;
    parts.push((root, fs));

    let partitions: Vec<Partition> = parts.iter().map(|(p, _)| p.clone()).collect();
    let table = gpt(blocks, "6d766973-6f72-4469-736b-000000000001", &partitions)?;
    let mut file = OpenOptions::new()
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {}", disk.display()))?;
    let at = |lba: u64| offset + lba * SECTOR;
    file.seek(SeekFrom::Start(at(0)))?;
    file.write_all(&table.primary)?;
    file.seek(SeekFrom::Start(at(table.backup_lba)))?;
    file.write_all(&table.backup)?;
    for (partition, image) in &parts {
        let mut source =
            std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
        file.seek(SeekFrom::Start(at(partition.first)))?;
        std::io::copy(&mut source, &mut file)
            .with_context(|| format!("copying partition {}", partition.name))?;
    }
    let _ = std::fs::remove_dir_all(work);
    Ok(())
}

/// The size of a whole-disk image just big enough for `install` (what provisioning tools
/// serve: the partitions, not a disk's full size): the 1 MiB in front of the first partition,
/// the EFI system partition for UEFI, a root partition of the files' size plus a quarter and
/// 8 MiB for ext4's metadata and journal, and 1 MiB at the end for the backup table; in whole
/// MiB. Such an image boots from any larger disk it is written onto from byte 0: its GPT
/// describes a disk of its own size, whose backup table lies inside the larger one (U-Boot
/// and Linux read the primary table; they check that the partitions lie on the disk, not that
/// the backup ends it).
pub fn image_size(guest: &LinuxGuest, install: Installation<'_>) -> Result<u64> {
    let files = match install.os {
        Os::Debian => {
            use std::io::Read;
            let mut cpio = 0u64;
            let mut decoder = flate2::read::GzDecoder::new(&guest.initramfs[..]);
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = decoder
                    .read(&mut buf)
                    .context("unpacking the guest's initramfs")?;
                if n == 0 {
                    break;
                }
                cpio += n as u64;
            }
            guest.kernel.len() as u64 + cpio
        }
        Os::BareMetal(image) => image.len() as u64,
    };
    let esp = if install.loader == Loader::Efi {
        ESP_BYTES
    } else {
        0
    };
    let root = files + files / 4 + (8 << 20);
    let bytes = (FIRST_PARTITION_LBA * SECTOR) + esp + root + (1 << 20);
    Ok(bytes.div_ceil(1 << 20) << 20)
}

/// Writes the installed system `install` describes into a new file `image` of `size` bytes
/// (e.g. [`image_size`]): a whole-disk image, as an operator or a provisioning tool serves it
/// to a deploy ramdisk that writes it onto a disk from byte 0 (docs/firmware.md). Built by
/// [`write_installed_disk`], as the shares of firmware slices are.
pub fn write_installed_image(
    guest: &LinuxGuest,
    install: Installation<'_>,
    image: &Path,
    size: u64,
    work: &Path,
) -> Result<()> {
    if let Some(dir) = image.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file =
        std::fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
    file.set_len(size)
        .with_context(|| format!("sizing {}", image.display()))?;
    drop(file);
    write_installed_disk(guest, install, image, 0, size, work)
}

/// What [`install_on_blank_shares`] did for one firmware slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareInstall {
    pub slice: String,
    /// Bytes of its share.
    pub bytes: u64,
    /// True if Debian was written now; false if the share already held something.
    pub installed: bool,
}

impl std::fmt::Display for ShareInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = self.bytes >> 20;
        if self.installed {
            write!(
                f,
                "slice {}: Debian installed on its blank {mib} MiB disk share (GPT, EFI system \
                 partition with GRUB, ext4 root); its firmware boots it",
                self.slice
            )
        } else {
            write!(
                f,
                "slice {}: its {mib} MiB disk share is not blank; its firmware boots what is \
                 installed there",
                self.slice
            )
        }
    }
}

/// Blocks at the start of a share that are all zero on a blank one: the protective MBR, the
/// GPT header and its entry array.
const BLANK_CHECK_BLOCKS: u64 = 2 + ENTRY_BLOCKS;

/// For each slice of `plan` that boots firmware and has an NVMe share in `disk` (node disk 0,
/// `disk_size` bytes, QEMU's 512-byte blocks): when the share is blank (its first blocks, where
/// a partition table would be, are all zero), installs Debian there, booted through UEFI and
/// GRUB, so that the firmware has an OS to boot (`cargo xtask run` on the default node). A
/// share holding anything is left as it is: what an operator installed or re-imaged stays.
pub fn install_on_blank_shares(
    guest: &LinuxGuest,
    plan: &microvisor_plan::Plan,
    disk: &Path,
    disk_size: u64,
    work: &Path,
) -> Result<Vec<ShareInstall>> {
    use microvisor_plan::{BuiltIn, ImageSource};
    let shares = microvisor_plan::place_disk(plan, disk_size / SECTOR, 9, u16::MAX)
        .map_err(|e| anyhow::anyhow!("placing the plan's disk shares: {e}"))?;
    let mut done = Vec::new();
    for (slice, share) in plan.slices.iter().zip(shares) {
        let Some(share) = share else { continue };
        if slice.kernel != ImageSource::BuiltIn(BuiltIn::Firmware) {
            continue;
        }
        let offset = share.first_block * SECTOR;
        let bytes = share.blocks * SECTOR;
        let mut head = vec![0u8; (BLANK_CHECK_BLOCKS * SECTOR).min(bytes) as usize];
        {
            use std::io::Read;
            let mut file =
                std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut head)
                .with_context(|| format!("reading slice {}'s share", slice.name))?;
        }
        let installed = head.iter().all(|&b| b == 0);
        if installed {
            write_installed_disk(
                guest,
                Installation::new(Loader::Efi),
                disk,
                offset,
                bytes,
                &work.join(&slice.name),
            )
            .with_context(|| format!("installing Debian on slice {}'s share", slice.name))?;
        }
        done.push(ShareInstall {
            slice: slice.name.clone(),
            bytes,
            installed,
        });
    }
    Ok(done)
}

/// `grub.cfg` booting `kernel` from GRUB's root with `append`.
pub fn grub_cfg(kernel: &str, append: &str) -> String {
    format!(
        "# Written by cargo xtask for a microvisor firmware slice\n\
         set timeout=1\n\
         set default=0\n\
         menuentry 'Installed system' {{\n\
         \x20   linux {kernel} {append}\n\
         }}\n"
    )
}

/// The root partition's unique GUID: the installed Debian's kernel finds its root by it
/// (`root=PARTUUID=...`).
pub const ROOT_PARTITION: &str = "6d766973-6f72-4c69-6e75-78526f6f7401";

/// A character device of the installed root file system (path, permissions, major, minor).
type Device = (String, u32, u32, u32);

/// Unpacks the Linux guest's userspace (its gzipped newc initramfs: busybox, `/init`, the
/// modules and tools) into `tree`, the installed root file system; returns the character
/// devices (`/dev/console`), which [`make_devices`] creates in the file system image without
/// root privileges.
fn unpack_userspace(initramfs: &[u8], tree: &Path) -> Result<Vec<Device>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(initramfs)
        .read_to_end(&mut cpio)
        .context("unpacking the guest's initramfs")?;
    let entries = crate::initramfs::read_newc(&cpio)
        .map_err(|e| anyhow::anyhow!("the guest's initramfs: {e}"))?;
    let mut devices = Vec::new();
    for entry in entries {
        let name = entry.name.trim_start_matches("./").trim_start_matches('/');
        ensure!(
            !name.split('/').any(|c| c == ".."),
            "initramfs entry {} leaves the tree",
            entry.name
        );
        if name.is_empty() || name == "." {
            continue;
        }
        let path = tree.join(name);
        let mode = entry.permissions();
        match entry.kind() {
            Some(crate::initramfs::Kind::Dir) => {
                std::fs::create_dir_all(&path)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            }
            Some(crate::initramfs::Kind::File(data)) => {
                std::fs::write(&path, data)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            }
            Some(crate::initramfs::Kind::Symlink(target)) => {
                std::os::unix::fs::symlink(target, &path)?;
            }
            Some(crate::initramfs::Kind::CharDevice { major, minor }) => {
                devices.push((format!("/{name}"), mode, major, minor));
            }
            None => bail!(
                "initramfs entry {} has a type the installer does not know",
                entry.name
            ),
        }
    }
    Ok(devices)
}

/// Creates `devices` in the ext4 image `fs` with `debugfs -w` (e2fsprogs), which needs no
/// root privileges, unlike `mknod` in the source tree.
fn make_devices(fs: &Path, devices: &[Device]) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    let debugfs = ["/usr/sbin/debugfs", "/sbin/debugfs"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("installing Debian on a firmware slice's disk needs debugfs: run `apt-get install e2fsprogs`")?;
    let mut script = String::new();
    for (path, mode, major, minor) in devices {
        script.push_str(&format!(
            "mknod {path} c {major} {minor}\nsif {path} mode 0{:o}\n",
            0o020000 | mode
        ));
    }
    let commands = fs.with_extension("debugfs");
    std::fs::write(&commands, script)?;
    let mut cmd = Command::new(debugfs);
    cmd.arg("-w").arg("-f").arg(&commands).arg(fs);
    run_tool(&mut cmd)
}

/// The configuration built into GRUB's image: find the partition with `/boot/grub/grub.cfg`
/// and read it.
const GRUB_EMBEDDED_CFG: &str = "search --no-floppy --set=root --file /boot/grub/grub.cfg\n\
     set prefix=($root)/boot/grub\n\
     configfile ($root)/boot/grub/grub.cfg\n";

/// GRUB modules built into `BOOTAA64.EFI` (no module is loaded from disk later).
const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "search",
    "search_fs_file",
    "configfile",
    "normal",
    "linux",
    "echo",
    "test",
    "efi_gop",
    "gzio",
    "boot",
    "ls",
    "cat",
    "halt",
    "reboot",
];

/// Host tools for the EFI disk, run from the cache without installing them: `grub-mkimage`
/// (grub-common), GRUB's arm64-efi modules (grub-efi-arm64-bin) and mtools.
pub struct EfiTools {
    pub grub_mkimage: std::path::PathBuf,
    pub grub_modules: std::path::PathBuf,
    pub mtools: std::path::PathBuf,
}

/// Fetches the EFI tools' Debian packages into `target/guests/debian/` (checked and cached
/// like the Linux guest's).
fn efi_tools(work: &Path) -> Result<EfiTools> {
    let ws = crate::workspace::Workspace::locate()?;
    let _ = work;
    let dir = ws.target_dir.join("guests/debian");
    let got = crate::linux::fetch_extracted(
        &dir,
        &["grub-common", "grub-efi-arm64-bin:arm64", "mtools"],
        true,
    )
    .context("fetching GRUB and mtools for an EFI disk")?;
    let tools = EfiTools {
        grub_mkimage: got[0].join("usr/bin/grub-mkimage"),
        grub_modules: got[1].join("usr/lib/grub/arm64-efi"),
        mtools: got[2].join("usr/bin/mtools"),
    };
    for path in [&tools.grub_mkimage, &tools.grub_modules, &tools.mtools] {
        ensure!(
            path.exists(),
            "{} is missing from the extracted package",
            path.display()
        );
    }
    Ok(tools)
}

/// GRUB for arm64 EFI as one file, its configuration built in.
fn make_grub(tools: &EfiTools, out: &Path, work: &Path) -> Result<()> {
    let embedded = work.join("embedded.cfg");
    std::fs::write(&embedded, GRUB_EMBEDDED_CFG)?;
    let mut cmd = Command::new(&tools.grub_mkimage);
    cmd.args(["-O", "arm64-efi", "-p", "/boot/grub", "-d"])
        .arg(&tools.grub_modules)
        .arg("-c")
        .arg(&embedded)
        .arg("-o")
        .arg(out)
        .args(GRUB_MODULES);
    run_tool(&mut cmd)
}

/// A FAT file system of `bytes` bytes holding `/EFI/BOOT/` and in it `loader` (when given) at
/// the removable-media path `/EFI/BOOT/BOOTAA64.EFI` (UEFI 2.10 §3.5.1.1).
fn make_esp(tools: &EfiTools, out: &Path, bytes: u64, loader: Option<&Path>) -> Result<()> {
    let file = std::fs::File::create(out)?;
    file.set_len(bytes)?;
    drop(file);
    let mtools = |applet: &str| {
        let mut cmd = Command::new(&tools.mtools);
        // mtools picks the applet from argv[0]; `-c <applet>` does the same for one binary.
        cmd.args(["-c", applet]).env("MTOOLS_SKIP_CHECK", "1");
        cmd
    };
    let sectors = (bytes / SECTOR).to_string();
    run_tool(
        mtools("mformat")
            .arg("-i")
            .arg(out)
            .args(["-T", &sectors, "-v", "ESP", "::"]),
    )?;
    run_tool(
        mtools("mmd")
            .arg("-i")
            .arg(out)
            .args(["::/EFI", "::/EFI/BOOT"]),
    )?;
    match loader {
        Some(loader) => run_tool(
            mtools("mcopy")
                .arg("-i")
                .arg(out)
                .arg(loader)
                .arg("::/EFI/BOOT/BOOTAA64.EFI"),
        ),
        None => Ok(()),
    }
}

fn run_tool(cmd: &mut Command) -> Result<()> {
    let output = cmd
        .output()
        .with_context(|| format!("running {}", crate::workspace::render(cmd)))?;
    ensure!(
        output.status.success(),
        "{} failed: {}",
        crate::workspace::render(cmd),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// `mke2fs -t ext4 -d tree` into a file of `bytes` bytes.
fn make_ext4(tree: &Path, out: &Path, bytes: u64) -> Result<()> {
    let mke2fs = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(mke2fs) = mke2fs else {
        bail!("building a firmware slice's disk needs mke2fs: run `apt-get install e2fsprogs`");
    };
    let mut cmd = Command::new(mke2fs);
    cmd.args([
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        "root",
        "-E",
        "root_owner=0:0",
        "-d",
    ])
    .arg(tree)
    .arg(out)
    .arg(format!("{}k", bytes / 1024));
    let output = cmd.output().with_context(|| format!("running {mke2fs}"))?;
    ensure!(
        output.status.success(),
        "{mke2fs} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(
            guid_bytes(LINUX_FILESYSTEM).unwrap(),
            [
                0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
                0x7d, 0xe4
            ]
        );
        assert!(guid_bytes("not-a-guid").is_none());
        assert!(guid_bytes("0FC63DAF-8483-4772-8E79-3D69D8477DEX").is_none());
    }

    #[test]
    fn a_gpt_has_matching_primary_and_backup_headers_with_valid_crcs() {
        let blocks = 524_288;
        let part = Partition {
            type_guid: LINUX_FILESYSTEM,
            guid: "11111111-2222-3333-4444-555555555555".into(),
            name: "root",
            first: 2048,
            last: blocks - 34,
            bootable: true,
        };
        let t = gpt(blocks, "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE", &[part]).unwrap();
        assert_eq!(t.primary.len(), 34 * 512);
        assert_eq!(t.backup.len(), 33 * 512);
        assert_eq!(t.backup_lba, blocks - 33);
        assert_eq!(&t.primary[510..512], &[0x55, 0xaa]);
        assert_eq!(t.primary[446 + 4], 0xee);
        let check = |h: &[u8], current: u64, other: u64, entries_at: u64| {
            assert_eq!(&h[0..8], b"EFI PART");
            let mut zeroed = h[..92].to_vec();
            zeroed[16..20].fill(0);
            assert_eq!(
                u32::from_le_bytes(h[16..20].try_into().unwrap()),
                crc32fast::hash(&zeroed)
            );
            assert_eq!(u64::from_le_bytes(h[24..32].try_into().unwrap()), current);
            assert_eq!(u64::from_le_bytes(h[32..40].try_into().unwrap()), other);
            assert_eq!(
                u64::from_le_bytes(h[72..80].try_into().unwrap()),
                entries_at
            );
        };
        check(&t.primary[512..1024], 1, blocks - 1, 2);
        check(&t.backup[32 * 512..], blocks - 1, 1, blocks - 33);
        let entries = &t.primary[1024..];
        assert_eq!(
            u32::from_le_bytes(t.primary[512 + 88..512 + 92].try_into().unwrap()),
            crc32fast::hash(entries)
        );
        assert_eq!(&t.backup[..32 * 512], entries);
        assert_eq!(
            u64::from_le_bytes(entries[32..40].try_into().unwrap()),
            2048
        );
        assert_eq!(u64::from_le_bytes(entries[48..56].try_into().unwrap()), 4);
        assert_eq!(&entries[56..64], &[b'r', 0, b'o', 0, b'o', 0, b't', 0]);
    }

    #[test]
    fn an_image_is_just_big_enough_for_its_partitions() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![0; 6 << 20]).unwrap();
        let guest = LinuxGuest {
            kernel: vec![0; 26 << 20],
            initramfs: gz.finish().unwrap(),
            manager_initramfs: Vec::new(),
            release: String::new(),
            kernel_file: Default::default(),
            initramfs_file: Default::default(),
            manager_initramfs_file: Default::default(),
            packages: Vec::new(),
            note: None,
        };
        // 1 MiB in front, 32 MiB + 32 MiB / 4 + 8 MiB of root, 1 MiB for the backup table.
        let debian = image_size(&guest, Installation::new(Loader::Extlinux)).unwrap();
        assert_eq!(debian, 50 << 20);
        let efi = image_size(&guest, Installation::new(Loader::Efi)).unwrap();
        assert_eq!(efi, debian + ESP_BYTES);
        let probe = [0u8; 100_000];
        let bare = Installation {
            os: Os::BareMetal(&probe),
            ..Installation::new(Loader::Extlinux)
        };
        assert_eq!(
            image_size(&guest, bare).unwrap(),
            11 << 20,
            "rounded up to MiB"
        );
    }

    #[test]
    fn partitions_must_lie_in_the_usable_blocks() {
        let part = |first, last| Partition {
            type_guid: LINUX_FILESYSTEM,
            guid: "11111111-2222-3333-4444-555555555555".into(),
            name: "x",
            first,
            last,
            bootable: false,
        };
        let disk = "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE";
        assert!(gpt(10_000, disk, &[part(33, 100)]).is_err());
        assert!(gpt(10_000, disk, &[part(2048, 10_000 - 33)]).is_err());
        assert!(gpt(10_000, disk, &[part(2048, 10_000 - 34)]).is_ok());
        assert!(gpt(100, disk, &[]).is_err());
    }
}
