//! Initramfs archives in the cpio "newc" format that Linux unpacks at boot
//! (Documentation/driver-api/early-userspace/buffer-format.rst), written deterministically
//! (sorted paths, fixed inode numbers, owner root, mtime 0) and gzip-compressed.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

/// Magic of a newc header (no checksum variant).
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// Name of the entry that ends every archive.
pub const TRAILER: &str = "TRAILER!!!";
/// Length of a newc header: the magic and 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 110;
/// Modification time of every entry (seconds since the epoch), for reproducible archives.
pub const MTIME: u32 = 0;

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
/// Permission bits (and setuid/setgid/sticky) of a mode.
const PERMISSIONS: u32 = 0o7777;

/// What an archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file and its contents.
    File(Vec<u8>),
    /// A symbolic link and its target.
    Symlink(String),
    /// A character device node.
    CharDevice { major: u32, minor: u32 },
}

/// Why an entry cannot be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveError {
    /// The path is empty, absolute, has an empty, `.` or `..` component, or a NUL.
    BadPath(String),
    /// Something else already has this path.
    Duplicate(String),
    /// A parent of the path is not a directory.
    ParentNotADirectory(String),
    /// The file is larger than a newc header can describe (4 GiB - 1).
    TooLarge(String),
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveError::BadPath(p) => write!(f, "initramfs path {p:?} is not a relative path"),
            ArchiveError::Duplicate(p) => write!(f, "initramfs path {p:?} added twice"),
            ArchiveError::ParentNotADirectory(p) => {
                write!(
                    f,
                    "initramfs path {p:?} has a parent that is not a directory"
                )
            }
            ArchiveError::TooLarge(p) => write!(f, "initramfs file {p:?} is 4 GiB or larger"),
        }
    }
}

impl std::error::Error for ArchiveError {}

/// An archive being built: entries by path (relative, no leading `/`), written in path order so
/// that every directory precedes what it holds. Parent directories are added (mode 0755) when
/// missing.
#[derive(Clone, Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, (u32, Kind)>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory with permission bits `mode`; re-adding a directory only sets its mode.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, ArchiveError> {
        check_path(path)?;
        self.parents(path)?;
        match self.entries.get_mut(path) {
            Some((m, Kind::Dir)) => *m = mode & PERMISSIONS,
            Some(_) => return Err(ArchiveError::Duplicate(path.into())),
            None => {
                self.entries
                    .insert(path.into(), (mode & PERMISSIONS, Kind::Dir));
            }
        }
        Ok(self)
    }

    /// A regular file.
    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        data: Vec<u8>,
    ) -> Result<&mut Self, ArchiveError> {
        if u32::try_from(data.len()).is_err() {
            return Err(ArchiveError::TooLarge(path.into()));
        }
        self.insert(path, mode, Kind::File(data))
    }

    /// A symbolic link to `target` (taken as it is).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, ArchiveError> {
        self.insert(path, 0o777, Kind::Symlink(target.into()))
    }

    /// A character device node.
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self, ArchiveError> {
        self.insert(path, mode, Kind::CharDevice { major, minor })
    }

    /// Number of entries (the trailer not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, path: &str, mode: u32, kind: Kind) -> Result<&mut Self, ArchiveError> {
        check_path(path)?;
        self.parents(path)?;
        if self.entries.contains_key(path) {
            return Err(ArchiveError::Duplicate(path.into()));
        }
        self.entries.insert(path.into(), (mode & PERMISSIONS, kind));
        Ok(self)
    }

    /// Adds the missing parent directories of `path`, failing if one is not a directory.
    fn parents(&mut self, path: &str) -> Result<(), ArchiveError> {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            let parent = &path[..end + slash];
            match self.entries.get(parent) {
                Some((_, Kind::Dir)) => {}
                Some(_) => return Err(ArchiveError::ParentNotADirectory(path.into())),
                None => {
                    self.entries.insert(parent.into(), (0o755, Kind::Dir));
                }
            }
            end += slash + 1;
        }
        Ok(())
    }

    /// The archive in newc format, ending with the trailer. Inode numbers count from 1 in path
    /// order; every entry is owned by root with mtime [`MTIME`].
    pub fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, (mode, kind))) in (1u32..).zip(&self.entries) {
            let (type_bits, nlink, rdev, data): (u32, u32, (u32, u32), &[u8]) = match kind {
                Kind::Dir => (S_IFDIR, 2, (0, 0), &[]),
                Kind::File(data) => (S_IFREG, 1, (0, 0), data),
                Kind::Symlink(target) => (S_IFLNK, 1, (0, 0), target.as_bytes()),
                Kind::CharDevice { major, minor } => (S_IFCHR, 1, (*major, *minor), &[]),
            };
            let header = Header {
                ino,
                mode: type_bits | mode,
                nlink,
                filesize: data.len() as u32,
                rdev,
            };
            write_entry(&mut out, &header, path, data);
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            filesize: 0,
            rdev: (0, 0),
        };
        write_entry(&mut out, &trailer, TRAILER, &[]);
        out
    }

    /// [`Archive::to_newc`], gzip-compressed (best compression, no name, mtime 0).
    pub fn to_gzip(&self) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&self.to_newc())
            .and_then(|()| gz.finish())
            .expect("writing to a Vec cannot fail")
    }
}

/// Header fields that vary between entries; the others are 0 (uid, gid, mtime = [`MTIME`],
/// device numbers, check).
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    filesize: u32,
    rdev: (u32, u32),
}

/// Header, NUL-terminated name padded to 4 bytes, data padded to 4 bytes.
fn write_entry(out: &mut Vec<u8>, h: &Header, name: &str, data: &[u8]) {
    out.extend_from_slice(NEWC_MAGIC);
    let name_size = name.len() as u32 + 1;
    let fields = [
        h.ino, h.mode, 0, 0, h.nlink, MTIME, h.filesize, 0, 0, h.rdev.0, h.rdev.1, name_size, 0,
    ];
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn check_path(path: &str) -> Result<(), ArchiveError> {
    let bad = path.is_empty()
        || path.contains('\0')
        || path == TRAILER
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        Err(ArchiveError::BadPath(path.into()))
    } else {
        Ok(())
    }
}

/// One entry read back from a newc archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEntry {
    pub name: String,
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

impl ReadEntry {
    /// What the entry is, from its mode; `None` for types [`Archive`] does not write.
    pub fn kind(&self) -> Option<Kind> {
        Some(match self.mode & S_IFMT {
            S_IFDIR => Kind::Dir,
            S_IFREG => Kind::File(self.data.clone()),
            S_IFLNK => Kind::Symlink(String::from_utf8(self.data.clone()).ok()?),
            S_IFCHR => Kind::CharDevice {
                major: self.rdev.0,
                minor: self.rdev.1,
            },
            _ => return None,
        })
    }

    /// Permission bits.
    pub fn permissions(&self) -> u32 {
        self.mode & PERMISSIONS
    }
}

/// Why a newc archive does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The archive ends inside the entry starting at this offset.
    Truncated(usize),
    /// No newc magic at this offset.
    BadMagic(usize),
    /// A header field at this offset is not 8 hex digits.
    BadField(usize),
    /// The name at this offset is not NUL-terminated UTF-8.
    BadName(usize),
    /// Non-zero padding at this offset.
    BadPadding(usize),
    /// The archive has no `TRAILER!!!` entry.
    NoTrailer,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Truncated(at) => write!(f, "cpio archive truncated in the entry at {at}"),
            ReadError::BadMagic(at) => write!(f, "no newc cpio magic at offset {at}"),
            ReadError::BadField(at) => write!(f, "bad newc header field at offset {at}"),
            ReadError::BadName(at) => write!(f, "bad entry name at offset {at}"),
            ReadError::BadPadding(at) => write!(f, "non-zero padding at offset {at}"),
            ReadError::NoTrailer => write!(f, "cpio archive has no {TRAILER} entry"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Parses a newc archive strictly (4-byte alignment, zero padding, a trailer); returns its
/// entries without the trailer. Bytes after the trailer are ignored (Linux skips zero padding
/// between concatenated archives).
pub fn read_newc(bytes: &[u8]) -> Result<Vec<ReadEntry>, ReadError> {
    let mut entries = Vec::new();
    let mut at = 0;
    loop {
        let start = at;
        let header = bytes
            .get(at..at + HEADER_LEN)
            .ok_or(ReadError::Truncated(start))?;
        if &header[..6] != NEWC_MAGIC {
            return Err(ReadError::BadMagic(start));
        }
        let mut fields = [0u32; 13];
        for (i, field) in fields.iter_mut().enumerate() {
            let off = 6 + i * 8;
            let text = std::str::from_utf8(&header[off..off + 8])
                .map_err(|_| ReadError::BadField(start + off))?;
            *field = u32::from_str_radix(text, 16).map_err(|_| ReadError::BadField(start + off))?;
        }
        let [
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            _,
            _,
            rmaj,
            rmin,
            namesize,
            _,
        ] = fields;
        at += HEADER_LEN;
        let name_end = at
            .checked_add(namesize as usize)
            .filter(|&end| end <= bytes.len() && namesize > 0)
            .ok_or(ReadError::Truncated(start))?;
        let name = bytes[at..name_end]
            .strip_suffix(&[0])
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or(ReadError::BadName(at))?
            .to_string();
        at = skip_padding(bytes, name_end)?;
        let data_end = at
            .checked_add(filesize as usize)
            .filter(|&end| end <= bytes.len())
            .ok_or(ReadError::Truncated(start))?;
        let data = bytes[at..data_end].to_vec();
        at = skip_padding(bytes, data_end)?;
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(ReadEntry {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            rdev: (rmaj, rmin),
            data,
        });
        if at >= bytes.len() {
            return Err(ReadError::NoTrailer);
        }
    }
}

/// The offset after the zero padding that follows `at` up to a 4-byte boundary.
fn skip_padding(bytes: &[u8], at: usize) -> Result<usize, ReadError> {
    let end = at.next_multiple_of(4);
    let padding = bytes.get(at..end).ok_or(ReadError::Truncated(at))?;
    if padding.iter().any(|&b| b != 0) {
        return Err(ReadError::BadPadding(at));
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
            .unwrap()
            .file("bin/busybox", 0o755, vec![0x7f, b'E', b'L', b'F', 1])
            .unwrap()
            .symlink("bin/sh", "busybox")
            .unwrap()
            .dir("tmp", 0o1777)
            .unwrap()
            .char_device("dev/console", 0o600, 5, 1)
            .unwrap();
        a
    }

    #[test]
    fn reads_back_what_it_writes_in_path_order() {
        let bytes = sample().to_newc();
        let entries = read_newc(&bytes).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "tmp"
            ]
        );
        let find = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(
            find("init").kind(),
            Some(Kind::File(b"#!/bin/sh\necho hi\n".to_vec()))
        );
        assert_eq!(find("init").permissions(), 0o755);
        assert_eq!(find("init").mode & S_IFMT, S_IFREG);
        assert_eq!(find("bin/sh").kind(), Some(Kind::Symlink("busybox".into())));
        assert_eq!(find("bin/sh").mode, S_IFLNK | 0o777);
        assert_eq!(
            find("dev/console").kind(),
            Some(Kind::CharDevice { major: 5, minor: 1 })
        );
        assert_eq!(find("tmp").mode, S_IFDIR | 0o1777);
        assert_eq!((find("tmp").nlink, find("bin").nlink), (2, 2));
        assert_eq!(find("bin").permissions(), 0o755, "implied parent");
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.ino, i as u32 + 1);
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, MTIME));
        }
    }

    #[test]
    fn every_header_name_and_data_starts_4_byte_aligned_and_the_trailer_ends_it() {
        let bytes = sample().to_newc();
        assert!(bytes.len().is_multiple_of(4));
        // Walk the headers by hand: each starts with the magic at a 4-byte boundary.
        let mut at = 0;
        let mut names = Vec::new();
        while at < bytes.len() {
            assert!(at.is_multiple_of(4), "header at {at}");
            assert_eq!(&bytes[at..at + 6], NEWC_MAGIC);
            let field = |i: usize| {
                let off = at + 6 + i * 8;
                usize::from_str_radix(std::str::from_utf8(&bytes[off..off + 8]).unwrap(), 16)
                    .unwrap()
            };
            let (filesize, namesize) = (field(6), field(11));
            let name = &bytes[at + HEADER_LEN..at + HEADER_LEN + namesize];
            assert_eq!(name.last(), Some(&0));
            names.push(String::from_utf8(name[..namesize - 1].to_vec()).unwrap());
            let data = (at + HEADER_LEN + namesize).next_multiple_of(4);
            at = (data + filesize).next_multiple_of(4);
        }
        assert_eq!(at, bytes.len());
        assert_eq!(names.last().map(String::as_str), Some(TRAILER));
        assert!(bytes.ends_with(b"TRAILER!!!\0\0\0\0"), "name padded to 4");
    }

    #[test]
    fn output_is_deterministic_whatever_the_insertion_order() {
        let mut b = Archive::new();
        b.char_device("dev/console", 0o600, 5, 1)
            .unwrap()
            .dir("tmp", 0o1777)
            .unwrap()
            .symlink("bin/sh", "busybox")
            .unwrap()
            .file("bin/busybox", 0o755, vec![0x7f, b'E', b'L', b'F', 1])
            .unwrap()
            .file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
            .unwrap();
        assert_eq!(b.to_newc(), sample().to_newc());
        assert_eq!(b.to_gzip(), sample().to_gzip());
    }

    #[test]
    fn gzip_holds_the_newc_bytes() {
        let a = sample();
        let gz = a.to_gzip();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime 0");
        let mut plain = Vec::new();
        GzDecoder::new(gz.as_slice())
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, a.to_newc());
    }

    #[test]
    fn an_empty_archive_is_just_the_trailer() {
        let bytes = Archive::new().to_newc();
        assert_eq!(
            bytes.len(),
            (HEADER_LEN + TRAILER.len() + 1).next_multiple_of(4)
        );
        assert_eq!(read_newc(&bytes).unwrap(), []);
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in ["", "/init", "a//b", "a/", "./a", "a/../b", "a\0b", TRAILER] {
            assert_eq!(
                Archive::new().file(p, 0o644, vec![]).unwrap_err(),
                ArchiveError::BadPath(p.into()),
                "{p:?}"
            );
        }
    }

    #[test]
    fn duplicates_are_refused_but_a_directory_may_be_named_again() {
        let mut a = sample();
        assert_eq!(
            a.file("init", 0o644, vec![]).unwrap_err(),
            ArchiveError::Duplicate("init".into())
        );
        assert_eq!(
            a.dir("init", 0o755).unwrap_err(),
            ArchiveError::Duplicate("init".into())
        );
        a.dir("bin", 0o700).unwrap();
        let entries = read_newc(&a.to_newc()).unwrap();
        assert_eq!(entries[0].mode, S_IFDIR | 0o700);
    }

    #[test]
    fn a_parent_must_be_a_directory() {
        let mut a = sample();
        assert_eq!(
            a.file("init/x", 0o644, vec![]).unwrap_err(),
            ArchiveError::ParentNotADirectory("init/x".into())
        );
    }

    #[test]
    fn the_reader_rejects_damage() {
        let bytes = sample().to_newc();
        let trailer_at = bytes.len() - (HEADER_LEN + TRAILER.len() + 1).next_multiple_of(4);
        assert_eq!(read_newc(&bytes[..50]), Err(ReadError::Truncated(0)));
        assert_eq!(read_newc(&bytes[..trailer_at]), Err(ReadError::NoTrailer));
        let mut bad = bytes.clone();
        bad[0] = b'1';
        assert_eq!(read_newc(&bad), Err(ReadError::BadMagic(0)));
        let mut bad = bytes.clone();
        bad[6] = b'g';
        assert_eq!(read_newc(&bad), Err(ReadError::BadField(6)));
        // The first entry is "bin" (name size 4): 110 + 4 = 114, padded with 2 zero bytes.
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 4] = 1;
        assert_eq!(read_newc(&bad), Err(ReadError::BadPadding(HEADER_LEN + 4)));
        let mut bad = bytes;
        bad[HEADER_LEN + 3] = b'x';
        assert_eq!(read_newc(&bad), Err(ReadError::BadName(HEADER_LEN)));
    }
}
