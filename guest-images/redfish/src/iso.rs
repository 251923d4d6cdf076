//! Virtual media images (docs/redfish.md, "Virtual media"): what an image fetched for
//! `InsertMedia` boots. Either an arm64 kernel on its own, or an ISO 9660 image (ECMA-119,
//! with the Rock Ridge names of IEEE P1282/SUSP P1281 and Joliet's UCS-2 names when present)
//! whose GRUB or isolinux/syslinux/extlinux configuration names a kernel, initrds and a
//! command line.
//!
//! The image is hostile: every offset and length is checked against it, every loop is bounded
//! (directories read, System Use continuation areas followed, configuration files included,
//! bytes decompressed), and nothing allocates more than the [`Limits`] allow.

use std::cell::Cell;

use microvisor_control::{BootSpec, InitrdChoice};

mod grub;
pub mod kernel;
mod syslinux;

pub use kernel::KernelProblem;

/// ECMA-119's logical sector: volume descriptors are sectors from 16 on, and no directory
/// record crosses a sector boundary.
pub const SECTOR: usize = 2048;
/// The first volume descriptor's sector.
const DESCRIPTORS_START: usize = 16;
/// Volume descriptors read before giving up on a terminator.
const MAX_DESCRIPTORS: usize = 64;
/// Path components of a file looked up.
const MAX_COMPONENTS: usize = 32;
/// System Use continuation areas (`CE`) followed for one directory record.
const MAX_CONTINUATIONS: usize = 8;
/// A Rock Ridge name is cut at this many bytes.
const MAX_NAME: usize = 1024;

/// The most the reader does for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a kernel, after decompression.
    pub max_kernel: usize,
    /// Bytes of the initrds together.
    pub max_initrd: usize,
    /// Bytes of one boot configuration file.
    pub max_config: usize,
    /// Bytes of one directory.
    pub max_directory: usize,
    /// Bytes of directories, System Use areas and configuration files read in all.
    pub max_scan: usize,
}

impl Default for Limits {
    /// Sizes that hold any distribution installer's kernel and initrd, and far more metadata
    /// than a real ISO has; a caller sets the kernel and initrd limits to what its staging
    /// pool holds (128 MiB by default, docs/control.md).
    fn default() -> Self {
        Limits {
            max_kernel: 128 << 20,
            max_initrd: 512 << 20,
            max_config: 256 << 10,
            max_directory: 4 << 20,
            max_scan: 64 << 20,
        }
    }
}

/// What an image boots: the kernel (decompressed), the initrds (concatenated, as GRUB and the
/// kernel's initramfs unpacker handle several) and the command line.
#[derive(Clone, PartialEq, Eq)]
pub struct BootMedia {
    /// An arm64 `Image`, its header checked.
    pub kernel: Vec<u8>,
    pub initrd: Option<Vec<u8>>,
    /// The entry's command line; empty for a kernel on its own (the caller keeps the slice's).
    pub cmdline: String,
    /// Where it came from: the configuration file and entry, or the kind of kernel image.
    pub source: String,
}

impl BootMedia {
    /// The `BOOT` source once its kernel (and initrd, if any) are staged (docs/control.md,
    /// "Boot sources"): the staged kernel, the staged initrd or none (never the slice's own
    /// with a foreign kernel), and the command line (the slice's own when empty).
    pub fn boot_spec(&self) -> BootSpec {
        BootSpec {
            staged_kernel: true,
            initrd: if self.initrd.is_some() {
                InitrdChoice::Staged
            } else {
                InitrdChoice::None
            },
            cmdline: (!self.cmdline.is_empty()).then(|| self.cmdline.clone()),
        }
    }
}

impl std::fmt::Debug for BootMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootMedia")
            .field("kernel_bytes", &self.kernel.len())
            .field("initrd_bytes", &self.initrd.as_ref().map(Vec::len))
            .field("cmdline", &self.cmdline)
            .field("source", &self.source)
            .finish()
    }
}

/// Why an image does not boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaError {
    /// Neither an ISO 9660 image nor an arm64 kernel; says what it looks like.
    NotBootable(String),
    /// The ISO 9660 structures are broken (a descriptor, a directory record, an extent past
    /// the end, ...).
    Malformed(String),
    /// Reading the image would take more than `Limits::max_scan`.
    TooMuchWork(usize),
    /// None of the configuration files looked for is on the image.
    NoBootConfig { looked_for: Vec<&'static str> },
    /// A configuration file was found, but no entry of it boots a Linux kernel.
    NoEntry(String),
    /// The chosen entry names a file that is not on the image.
    MissingFile {
        entry: String,
        role: &'static str,
        path: String,
    },
    /// The chosen entry's kernel is not an arm64 kernel this service boots.
    BadKernel {
        entry: String,
        path: String,
        problem: KernelProblem,
    },
    /// A kernel, initrd or configuration file larger than its limit.
    TooLarge {
        what: String,
        bytes: usize,
        limit: usize,
    },
    /// A command line longer than the control interface takes.
    CmdlineTooLong { entry: String, bytes: usize },
}

impl std::fmt::Display for MediaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaError::NotBootable(what) => write!(
                f,
                "not an ISO 9660 image nor an arm64 kernel Image ({what})"
            ),
            MediaError::Malformed(what) => write!(f, "a malformed ISO 9660 image: {what}"),
            MediaError::TooMuchWork(limit) => write!(
                f,
                "the ISO 9660 image needs more than {limit} bytes of directories and \
                 configuration read to find its boot files"
            ),
            MediaError::NoBootConfig { looked_for } => write!(
                f,
                "no boot configuration found (looked for {})",
                looked_for.join(", ")
            ),
            MediaError::NoEntry(why) => write!(f, "no bootable entry: {why}"),
            MediaError::MissingFile { entry, role, path } => write!(
                f,
                "{entry} names {path} as its {role}, which is not on the image"
            ),
            MediaError::BadKernel {
                entry,
                path,
                problem,
            } => write!(f, "{entry} names {path} as its kernel: {problem}"),
            MediaError::TooLarge { what, bytes, limit } => {
                write!(f, "{what} is {bytes} bytes, more than the {limit} allowed")
            }
            MediaError::CmdlineTooLong { entry, bytes } => write!(
                f,
                "{entry} has a command line of {bytes} bytes, more than the {} allowed",
                microvisor_control::protocol::MAX_CMDLINE
            ),
        }
    }
}

impl std::error::Error for MediaError {}

/// GRUB configurations looked for, in order.
pub const GRUB_CONFIGS: [&str; 4] = [
    "/boot/grub/grub.cfg",
    "/EFI/BOOT/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/grub/grub.cfg",
];
/// isolinux, syslinux and extlinux configurations looked for, in order (after GRUB's).
pub const SYSLINUX_CONFIGS: [&str; 9] = [
    "/isolinux/isolinux.cfg",
    "/boot/isolinux/isolinux.cfg",
    "/isolinux.cfg",
    "/syslinux/syslinux.cfg",
    "/boot/syslinux/syslinux.cfg",
    "/syslinux.cfg",
    "/extlinux/extlinux.conf",
    "/boot/extlinux/extlinux.conf",
    "/extlinux.conf",
];

/// Whether `image` has an ISO 9660 volume descriptor where the first one must be.
pub fn is_iso9660(image: &[u8]) -> bool {
    let at = DESCRIPTORS_START * SECTOR + 1;
    image.get(at..at + 5) == Some(b"CD001")
}

/// What `image` boots: an ISO 9660 image's default GRUB or isolinux entry, else `image` itself
/// as an arm64 kernel (plain or compressed, see [`kernel::decode`]).
pub fn boot_media(image: &[u8], limits: &Limits) -> Result<BootMedia, MediaError> {
    if is_iso9660(image) {
        return IsoImage::open(image, limits)?.boot_media();
    }
    match kernel::decode(image, limits.max_kernel) {
        Ok((kernel, how)) => Ok(BootMedia {
            source: format!("{how} of {} bytes", kernel.len()),
            kernel,
            initrd: None,
            cmdline: String::new(),
        }),
        Err(KernelProblem::TooLarge(limit)) => Err(MediaError::TooLarge {
            what: "the kernel image".into(),
            bytes: image.len(),
            limit,
        }),
        Err(KernelProblem::NotArm64(what)) => Err(MediaError::NotBootable(what)),
        Err(problem) => Err(MediaError::NotBootable(problem.to_string())),
    }
}

/// A directory's or file's extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Extent {
    /// Byte offset in the image.
    start: usize,
    len: usize,
}

/// One directory record (ECMA-119 §9.1).
#[derive(Clone, Copy, Debug)]
struct Record<'a> {
    extent: Extent,
    flags: u8,
    id: &'a [u8],
    system_use: &'a [u8],
}

const FLAG_DIRECTORY: u8 = 0x02;
const FLAG_MULTI_EXTENT: u8 = 0x80;

/// Which names a lookup compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tree {
    /// The primary volume's records: Rock Ridge `NM` names when the volume has Rock Ridge,
    /// and the ISO 9660 names (version and a trailing dot dropped).
    Primary,
    /// The Joliet supplementary volume's UCS-2 names.
    Joliet,
}

/// A file or directory found by a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Its name in the tree it was found in (Rock Ridge, Joliet or ISO 9660).
    pub name: String,
    pub is_dir: bool,
    pub bytes: usize,
}

/// An ISO 9660 image opened for lookups (its volume descriptors checked).
#[derive(Debug)]
pub struct IsoImage<'a> {
    data: &'a [u8],
    block: usize,
    root: Extent,
    /// Rock Ridge's `SP` skip length when the root directory has an `SP` entry.
    rock_ridge: Option<usize>,
    joliet_root: Option<Extent>,
    volume_id: String,
    limits: Limits,
    /// Bytes that may still be scanned.
    budget: Cell<usize>,
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn malformed(what: impl Into<String>) -> MediaError {
    MediaError::Malformed(what.into())
}

/// The record of `bytes` (a directory's) at `at`, which the caller checked is not a 0 length.
fn parse_record(bytes: &[u8], at: usize, block: usize) -> Result<(Record<'_>, u8), MediaError> {
    let len = usize::from(bytes[at]);
    let record = bytes.get(at..at + len).ok_or_else(|| {
        malformed(format!(
            "a directory record at byte {at} ends past its directory"
        ))
    })?;
    if len < 34 {
        return Err(malformed(format!(
            "a directory record of {len} bytes (at least 34)"
        )));
    }
    let xattr = usize::from(record[1]);
    let lba = le_u32(record, 2).unwrap_or(0) as usize;
    let size = le_u32(record, 10).unwrap_or(0) as usize;
    let name_len = usize::from(record[32]);
    let id = record
        .get(33..33 + name_len)
        .ok_or_else(|| malformed("a directory record whose name ends past the record"))?;
    let system_use_start = 33 + name_len + usize::from(name_len.is_multiple_of(2));
    let system_use = record.get(system_use_start..).unwrap_or(&[]);
    let start = lba
        .checked_add(xattr)
        .and_then(|blocks| blocks.checked_mul(block))
        .ok_or_else(|| malformed("an extent address that overflows"))?;
    Ok((
        Record {
            extent: Extent { start, len: size },
            flags: record[25],
            id,
            system_use,
        },
        record[0],
    ))
}

/// The records of a directory's bytes, in order (zero bytes skip to the next sector).
struct Records<'a> {
    bytes: &'a [u8],
    at: usize,
    block: usize,
    failed: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            let len = *self.bytes.get(self.at)?;
            if len == 0 {
                self.at = (self.at / SECTOR + 1) * SECTOR;
                continue;
            }
            return match parse_record(self.bytes, self.at, self.block) {
                Ok((record, len)) => {
                    self.at += usize::from(len);
                    Some(Ok(record))
                }
                Err(e) => {
                    self.failed = true;
                    Some(Err(e))
                }
            };
        }
    }
}

/// An ISO 9660 name as people write it: `;1` and a trailing `.` dropped.
fn iso_name(id: &[u8]) -> String {
    let text = String::from_utf8_lossy(id);
    let name = text.split(';').next().unwrap_or("");
    name.strip_suffix('.').unwrap_or(name).to_string()
}

/// A Joliet name (UCS-2 big-endian), `;1` dropped.
fn joliet_name(id: &[u8]) -> String {
    let units = id
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
    let text: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    text.split(';').next().unwrap_or("").to_string()
}

/// `path` as components, `.` and `..` applied.
fn components(path: &str) -> Result<Vec<&str>, MediaError> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => {
                if parts.len() == MAX_COMPONENTS {
                    return Err(malformed(format!(
                        "a path of more than {MAX_COMPONENTS} components"
                    )));
                }
                parts.push(part);
            }
        }
    }
    Ok(parts)
}

/// The type-1 volume descriptor's fields the reader uses.
fn primary_descriptor(descriptor: &[u8]) -> Result<(usize, Extent, String), MediaError> {
    let block = usize::from(le_u16(descriptor, 128).unwrap_or(0));
    if !matches!(block, 512 | 1024 | 2048) {
        return Err(malformed(format!(
            "a logical block size of {block} (512, 1024 or 2048)"
        )));
    }
    let (root, _) = parse_record(&descriptor[156..190], 0, block)?;
    if root.flags & FLAG_DIRECTORY == 0 {
        return Err(malformed(
            "a root directory record without the directory flag",
        ));
    }
    let volume_id = String::from_utf8_lossy(&descriptor[40..72])
        .trim_end()
        .to_string();
    Ok((block, root.extent, volume_id))
}

impl<'a> IsoImage<'a> {
    /// Reads the volume descriptors of `data` (from sector 16 to the terminator): the primary
    /// one, and a Joliet one when there is one.
    pub fn open(data: &'a [u8], limits: &Limits) -> Result<IsoImage<'a>, MediaError> {
        let mut primary = None;
        let mut joliet_root = None;
        for index in 0..MAX_DESCRIPTORS {
            let at = (DESCRIPTORS_START + index) * SECTOR;
            let Some(descriptor) = data.get(at..at + SECTOR) else {
                return Err(malformed(format!(
                    "the volume descriptors run past the end of the image ({} bytes)",
                    data.len()
                )));
            };
            if &descriptor[1..6] != b"CD001" {
                return Err(malformed(format!(
                    "volume descriptor {index} has no CD001 identifier"
                )));
            }
            match descriptor[0] {
                1 if primary.is_none() => primary = Some(primary_descriptor(descriptor)?),
                2 if joliet_root.is_none()
                    && descriptor[88..90] == *b"%/"
                    && matches!(descriptor[90], b'@' | b'C' | b'E') =>
                {
                    // A broken Joliet tree is ignored: the primary one still serves.
                    joliet_root = primary_descriptor(descriptor).ok().map(|(_, root, _)| root);
                }
                255 => break,
                _ => {}
            }
        }
        let (block, root, volume_id) =
            primary.ok_or_else(|| malformed("no primary volume descriptor"))?;
        let mut image = IsoImage {
            data,
            block,
            root,
            rock_ridge: None,
            joliet_root,
            volume_id,
            limits: *limits,
            budget: Cell::new(limits.max_scan),
        };
        image.rock_ridge = image.find_sp()?;
        Ok(image)
    }

    /// The volume identifier of the primary volume descriptor.
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    /// Whether the primary tree has Rock Ridge names.
    pub fn has_rock_ridge(&self) -> bool {
        self.rock_ridge.is_some()
    }

    /// Whether the image has a Joliet tree.
    pub fn has_joliet(&self) -> bool {
        self.joliet_root.is_some()
    }

    fn charge(&self, bytes: usize) -> Result<(), MediaError> {
        let left = self.budget.get();
        if bytes > left {
            self.budget.set(0);
            return Err(MediaError::TooMuchWork(self.limits.max_scan));
        }
        self.budget.set(left - bytes);
        Ok(())
    }

    fn extent(&self, extent: Extent, what: &str) -> Result<&'a [u8], MediaError> {
        extent
            .start
            .checked_add(extent.len)
            .and_then(|end| self.data.get(extent.start..end))
            .ok_or_else(|| {
                malformed(format!(
                    "{what} ({} bytes at byte {}) extends past the end of the image ({} bytes)",
                    extent.len,
                    extent.start,
                    self.data.len()
                ))
            })
    }

    fn directory(&self, extent: Extent, path: &str) -> Result<Records<'a>, MediaError> {
        if extent.len > self.limits.max_directory {
            return Err(MediaError::TooLarge {
                what: format!("directory {path:?}"),
                bytes: extent.len,
                limit: self.limits.max_directory,
            });
        }
        self.charge(extent.len)?;
        Ok(Records {
            bytes: self.extent(extent, &format!("directory {path:?}"))?,
            at: 0,
            block: self.block,
            failed: false,
        })
    }

    /// Rock Ridge's `SP` entry at the start of the root's `.` record (SUSP 1.12 §5.3).
    fn find_sp(&self) -> Result<Option<usize>, MediaError> {
        let Some(first) = self.directory(self.root, "/")?.next() else {
            return Err(malformed("an empty root directory"));
        };
        let su = first?.system_use;
        if su.len() >= 7 && su[0..2] == *b"SP" && su[2] >= 7 && su[4..6] == [0xbe, 0xef] {
            return Ok(Some(usize::from(su[6])));
        }
        Ok(None)
    }

    /// The Rock Ridge name (`NM` entries, following `CE` continuation areas) of a record.
    fn rock_ridge_name(&self, record: &Record<'a>) -> Result<Option<String>, MediaError> {
        let Some(skip) = self.rock_ridge else {
            return Ok(None);
        };
        let mut area = record.system_use.get(skip..).unwrap_or(&[]);
        let mut name: Option<Vec<u8>> = None;
        let mut hops = 0;
        loop {
            let mut continuation = None;
            let mut at = 0;
            while let Some(header) = area.get(at..at + 4) {
                let len = usize::from(header[2]);
                let Some(entry) = area.get(at..at + len).filter(|_| len >= 4) else {
                    break;
                };
                match &entry[0..2] {
                    b"ST" => break,
                    b"CE" if len >= 28 => {
                        let lba = le_u32(entry, 4).unwrap_or(0) as usize;
                        let offset = le_u32(entry, 12).unwrap_or(0) as usize;
                        let bytes = le_u32(entry, 20).unwrap_or(0) as usize;
                        continuation = lba
                            .checked_mul(self.block)
                            .and_then(|start| start.checked_add(offset))
                            .map(|start| Extent { start, len: bytes });
                    }
                    b"NM" if len >= 5 => {
                        let flags = entry[4];
                        let part: &[u8] = match flags & 0b110 {
                            0b010 => b".",
                            0b100 => b"..",
                            _ => &entry[5..],
                        };
                        let name = name.get_or_insert_with(Vec::new);
                        if name.len() + part.len() <= MAX_NAME {
                            name.extend_from_slice(part);
                        }
                        if flags & 1 == 0 {
                            return Ok(Some(String::from_utf8_lossy(name).into_owned()));
                        }
                    }
                    _ => {}
                }
                at += len;
            }
            // A continuation area past the end or longer than a block (SUSP 1.12 §5.1 keeps
            // it in one) ends the entries, as a short one would.
            let next = continuation
                .filter(|extent| hops < MAX_CONTINUATIONS && extent.len <= self.block)
                .and_then(|extent| self.extent(extent, "a continuation area").ok());
            match next {
                Some(next) => {
                    hops += 1;
                    self.charge(next.len())?;
                    area = next;
                }
                None => break,
            }
        }
        Ok(name.map(|n| String::from_utf8_lossy(&n).into_owned()))
    }

    /// The name `record` has in `tree` and, in the primary tree, its plain ISO 9660 name.
    fn names(
        &self,
        tree: Tree,
        record: &Record<'a>,
    ) -> Result<(String, Option<String>), MediaError> {
        Ok(match tree {
            Tree::Joliet => (joliet_name(record.id), None),
            Tree::Primary => match self.rock_ridge_name(record)? {
                Some(name) => (name, Some(iso_name(record.id))),
                None => (iso_name(record.id), None),
            },
        })
    }

    /// The record of `path` in `tree`: an exact name first, else the first that matches
    /// ignoring ASCII case.
    fn find(&self, tree: Tree, path: &str) -> Result<Option<(Record<'a>, String)>, MediaError> {
        let root = match tree {
            Tree::Primary => self.root,
            Tree::Joliet => match self.joliet_root {
                Some(root) => root,
                None => return Ok(None),
            },
        };
        let parts = components(path)?;
        let mut dir = root;
        let mut found = None;
        for (index, part) in parts.iter().enumerate() {
            let mut exact = None;
            let mut folded = None;
            for record in self.directory(dir, path)? {
                let record = record?;
                if record.id == [0] || record.id == [1] {
                    continue;
                }
                let (name, plain) = self.names(tree, &record)?;
                if name == *part || plain.as_deref() == Some(part) {
                    exact = Some((record, name));
                    break;
                }
                if folded.is_none()
                    && (name.eq_ignore_ascii_case(part)
                        || plain
                            .as_deref()
                            .is_some_and(|p| p.eq_ignore_ascii_case(part)))
                {
                    folded = Some((record, name));
                }
            }
            let Some((record, name)) = exact.or(folded) else {
                return Ok(None);
            };
            let last = index + 1 == parts.len();
            if !last {
                if record.flags & FLAG_DIRECTORY == 0 {
                    return Ok(None);
                }
                dir = record.extent;
            }
            found = Some((record, name));
        }
        Ok(found)
    }

    /// The record of `path` in the primary tree, else the Joliet tree.
    fn lookup(&self, path: &str) -> Result<Option<(Record<'a>, String)>, MediaError> {
        match self.find(Tree::Primary, path)? {
            Some(found) => Ok(Some(found)),
            None => self.find(Tree::Joliet, path),
        }
    }

    /// The bytes of the file `path` (`/`-separated, compared as described in [`Tree`]), or
    /// `None` when the image has no such file.
    pub fn read(&self, path: &str) -> Result<Option<&'a [u8]>, MediaError> {
        let Some((record, _)) = self.lookup(path)? else {
            return Ok(None);
        };
        if record.flags & FLAG_DIRECTORY != 0 {
            return Ok(None);
        }
        if record.flags & FLAG_MULTI_EXTENT != 0 {
            return Err(malformed(format!(
                "{path} is stored in several extents, which is not supported"
            )));
        }
        self.extent(record.extent, path).map(Some)
    }

    /// The entries of the directory `path` (the primary tree's, else Joliet's), or `None`
    /// when there is no such directory.
    pub fn list(&self, path: &str) -> Result<Option<Vec<DirEntry>>, MediaError> {
        let (tree, extent) = if components(path)?.is_empty() {
            (Tree::Primary, self.root)
        } else {
            let found = match self.find(Tree::Primary, path)? {
                Some((record, _)) => Some((Tree::Primary, record)),
                None => self
                    .find(Tree::Joliet, path)?
                    .map(|(r, _)| (Tree::Joliet, r)),
            };
            match found {
                Some((tree, record)) if record.flags & FLAG_DIRECTORY != 0 => (tree, record.extent),
                _ => return Ok(None),
            }
        };
        let mut entries = Vec::new();
        for record in self.directory(extent, path)? {
            let record = record?;
            if record.id == [0] || record.id == [1] {
                continue;
            }
            entries.push(DirEntry {
                name: self.names(tree, &record)?.0,
                is_dir: record.flags & FLAG_DIRECTORY != 0,
                bytes: record.extent.len,
            });
        }
        Ok(Some(entries))
    }

    /// A configuration file's text (lossy UTF-8), at most `Limits::max_config` bytes.
    fn config_text(&self, path: &str) -> Result<Option<String>, MediaError> {
        let Some(bytes) = self.read(path)? else {
            return Ok(None);
        };
        if bytes.len() > self.limits.max_config {
            return Err(MediaError::TooLarge {
                what: path.to_string(),
                bytes: bytes.len(),
                limit: self.limits.max_config,
            });
        }
        self.charge(bytes.len())?;
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// What the image's boot configuration starts by default: the first GRUB configuration
    /// of [`GRUB_CONFIGS`] with a menu entry, else the first of [`SYSLINUX_CONFIGS`] with a
    /// label.
    pub fn boot_media(&self) -> Result<BootMedia, MediaError> {
        let mut read = |path: &str| self.config_text(path);
        let mut first_without_entry = None;
        let parsers: [(&[&str], ConfigParser); 2] = [
            (&GRUB_CONFIGS, grub::choose),
            (&SYSLINUX_CONFIGS, syslinux::choose),
        ];
        for (paths, parse) in parsers {
            for path in paths {
                let Some(text) = self.config_text(path)? else {
                    continue;
                };
                match parse(path, &text, &mut read)? {
                    Parsed::Choice(choice) => return self.load(choice),
                    Parsed::NoEntry(why) => {
                        first_without_entry.get_or_insert(why);
                    }
                }
            }
        }
        Err(match first_without_entry {
            Some(why) => MediaError::NoEntry(why),
            None => MediaError::NoBootConfig {
                looked_for: GRUB_CONFIGS
                    .iter()
                    .chain(SYSLINUX_CONFIGS.iter())
                    .copied()
                    .collect(),
            },
        })
    }

    /// The files `choice` names, read and checked.
    fn load(&self, choice: Choice) -> Result<BootMedia, MediaError> {
        let Choice {
            config: _,
            entry,
            kernel: kernel_path,
            initrds,
            cmdline,
        } = choice;
        if cmdline.len() > microvisor_control::protocol::MAX_CMDLINE {
            return Err(MediaError::CmdlineTooLong {
                entry,
                bytes: cmdline.len(),
            });
        }
        let missing = |role: &'static str, path: &str| MediaError::MissingFile {
            entry: entry.clone(),
            role,
            path: path.to_string(),
        };
        let packed = self
            .read(&kernel_path)?
            .ok_or_else(|| missing("kernel", &kernel_path))?;
        let (kernel, how) =
            kernel::decode(packed, self.limits.max_kernel).map_err(|problem| match problem {
                KernelProblem::TooLarge(limit) => MediaError::TooLarge {
                    what: kernel_path.clone(),
                    bytes: packed.len(),
                    limit,
                },
                problem => MediaError::BadKernel {
                    entry: entry.clone(),
                    path: kernel_path.clone(),
                    problem,
                },
            })?;
        let mut initrd: Option<Vec<u8>> = None;
        for path in &initrds {
            let bytes = self.read(path)?.ok_or_else(|| missing("initrd", path))?;
            let total = initrd.as_ref().map_or(0, Vec::len) + bytes.len();
            if total > self.limits.max_initrd {
                return Err(MediaError::TooLarge {
                    what: format!("the initrd ({})", initrds.join(", ")),
                    bytes: total,
                    limit: self.limits.max_initrd,
                });
            }
            initrd.get_or_insert_with(Vec::new).extend_from_slice(bytes);
        }
        Ok(BootMedia {
            source: format!("{entry}: {kernel_path}, {how}"),
            kernel,
            initrd,
            cmdline,
        })
    }
}

/// Reads a configuration file for a parser (`None`: not on the image).
type ReadConfig<'r> = &'r mut dyn FnMut(&str) -> Result<Option<String>, MediaError>;
type ConfigParser = fn(&str, &str, ReadConfig<'_>) -> Result<Parsed, MediaError>;

/// What a configuration parser chose.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Choice {
    /// The configuration file (and the one it led to).
    config: String,
    /// The configuration file and entry, for messages.
    entry: String,
    kernel: String,
    initrds: Vec<String>,
    cmdline: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Parsed {
    Choice(Choice),
    /// The file has no entry that boots Linux: why.
    NoEntry(String),
}

#[cfg(test)]
mod tests;
