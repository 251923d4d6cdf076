//! ISO 9660 images for tests (virtual media, docs/redfish.md): files and directories laid out
//! as ECMA-119 has them, with Rock Ridge names (RRIP 1.10 over SUSP 1.12: `SP`, `ER`, `PX`,
//! `NM`) and optionally a Joliet tree, so any reader (Linux's isofs, xorriso, isoinfo, the
//! Redfish service's) sees the original names. Deterministic: the same files give the same
//! bytes (fixed dates, sorted directories). Not bootable by firmware (no El Torito): the
//! Redfish service reads the boot configuration itself.
//!
//! Layout: sectors 0-15 empty, the primary volume descriptor, the Joliet one, the terminator,
//! the path tables, the Rock Ridge `ER` continuation area, the directories, then the files.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

/// ECMA-119's logical block (and sector) size.
pub const BLOCK: usize = 2048;
/// A Rock Ridge or Joliet name is refused above this many bytes (a directory record must
/// fit in 255 bytes).
pub const MAX_NAME: usize = 64;

/// The date every record carries: 2024-01-01 00:00:00 UTC.
const RECORD_DATE: [u8; 7] = [124, 1, 1, 0, 0, 0, 0];
const VOLUME_DATE: &[u8; 16] = b"2024010100000000";

const ER_ID: &str = "RRIP_1991A";
const ER_DESCRIPTOR: &str =
    "THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE: &str = "PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  \
                         SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

#[derive(Clone, Debug, Default)]
struct Dir {
    entries: BTreeMap<String, Node>,
}

#[derive(Clone, Debug)]
enum Node {
    File(Vec<u8>),
    Dir(Dir),
}

/// Files and directories to lay out as an ISO 9660 image.
#[derive(Clone, Debug)]
pub struct IsoBuilder {
    volume_id: String,
    rock_ridge: bool,
    joliet: bool,
    root: Dir,
}

/// What [`IsoBuilder::build`] produced, with where things went (for tests).
#[derive(Clone, Debug)]
pub struct Layout {
    pub image: Vec<u8>,
    /// Each file's path and byte offset in the image.
    pub files: Vec<(String, usize)>,
    /// Each directory's path and ISO 9660 name chain (`/BOOT/GRUB`).
    pub iso_paths: Vec<(String, String)>,
}

fn both_u16(value: u16) -> [u8; 4] {
    let le = value.to_le_bytes();
    let be = value.to_be_bytes();
    [le[0], le[1], be[0], be[1]]
}

fn both_u32(value: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&value.to_le_bytes());
    out[4..].copy_from_slice(&value.to_be_bytes());
    out
}

fn sectors(bytes: usize) -> usize {
    bytes.div_ceil(BLOCK)
}

/// `name` in ISO 9660 d-characters: upper case letters, digits and `_`.
fn d_characters(name: &str, max: usize) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The ISO 9660 level 1 identifiers (8.3 for files with `;1`, 8 for directories) of a
/// directory's entries, made unique with a number at the end of the name part.
fn iso_identifiers(entries: &BTreeMap<String, Node>) -> Vec<String> {
    let mut taken = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (name, node) in entries {
        let (base, ext) = match node {
            Node::Dir(_) => (d_characters(name, 8), None),
            Node::File(_) => match name.rsplit_once('.') {
                Some((base, ext)) if !base.is_empty() => {
                    (d_characters(base, 8), Some(d_characters(ext, 3)))
                }
                _ => (d_characters(name, 8), Some(String::new())),
            },
        };
        let make = |base: &str| match &ext {
            Some(ext) => format!("{base}.{ext};1"),
            None => base.to_string(),
        };
        let mut id = make(&base);
        let mut n = 1usize;
        while taken.contains(&id) {
            let suffix = n.to_string();
            let keep = base.len().min(8 - suffix.len());
            id = make(&format!("{}{suffix}", &base[..keep]));
            n += 1;
        }
        taken.insert(id.clone());
        out.push(id);
    }
    out
}

/// A Joliet identifier: UCS-2 big-endian, without a version (as most writers have it).
fn joliet_identifier(name: &str) -> Vec<u8> {
    name.chars()
        .map(|c| if "*/:;?\\".contains(c) { '_' } else { c })
        .collect::<String>()
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect()
}

/// Which tree a directory record is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tree {
    Primary,
    Joliet,
}

/// A directory as laid out: its path, its parent's index, its children's records.
#[derive(Debug)]
struct PlacedDir {
    path: String,
    iso_path: String,
    parent: usize,
    /// Its own name in the path table (empty for the root).
    iso_id: Vec<u8>,
    joliet_id: Vec<u8>,
    children: Vec<Child>,
    subdirs: usize,
}

#[derive(Debug)]
struct Child {
    name: String,
    iso_id: Vec<u8>,
    joliet_id: Vec<u8>,
    /// A directory's index in the directory list, or a file's in the file list.
    target: Target,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Dir(usize),
    File(usize),
}

/// One directory record (ECMA-119 §9.1) with its System Use bytes.
fn record(id: &[u8], lba: u32, size: u32, is_dir: bool, system_use: &[u8]) -> Vec<u8> {
    let pad = usize::from(id.len().is_multiple_of(2));
    let mut len = 33 + id.len() + pad + system_use.len();
    len += len % 2;
    let mut r = vec![0u8; len];
    r[0] = u8::try_from(len).expect("directory record lengths are checked");
    r[2..10].copy_from_slice(&both_u32(lba));
    r[10..18].copy_from_slice(&both_u32(size));
    r[18..25].copy_from_slice(&RECORD_DATE);
    r[25] = if is_dir { 0x02 } else { 0 };
    r[28..32].copy_from_slice(&both_u16(1));
    r[32] = u8::try_from(id.len()).expect("identifier lengths are checked");
    r[33..33 + id.len()].copy_from_slice(id);
    let su = 33 + id.len() + pad;
    r[su..su + system_use.len()].copy_from_slice(system_use);
    r
}

/// Rock Ridge `PX` (RRIP 1.10, 36 bytes).
fn px(mode: u32, links: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    e.extend_from_slice(&both_u32(mode));
    e.extend_from_slice(&both_u32(links));
    e.extend_from_slice(&both_u32(0));
    e.extend_from_slice(&both_u32(0));
    e
}

fn nm(name: &str) -> Vec<u8> {
    let mut e = vec![b'N', b'M', (5 + name.len()) as u8, 1, 0];
    e.extend_from_slice(name.as_bytes());
    e
}

/// The `ER` entry naming RRIP 1.10.
fn er() -> Vec<u8> {
    let mut e = vec![
        b'E',
        b'R',
        (8 + ER_ID.len() + ER_DESCRIPTOR.len() + ER_SOURCE.len()) as u8,
        1,
        ER_ID.len() as u8,
        ER_DESCRIPTOR.len() as u8,
        ER_SOURCE.len() as u8,
        1,
    ];
    e.extend_from_slice(ER_ID.as_bytes());
    e.extend_from_slice(ER_DESCRIPTOR.as_bytes());
    e.extend_from_slice(ER_SOURCE.as_bytes());
    e
}

fn ce(lba: u32, len: u32) -> Vec<u8> {
    let mut e = vec![b'C', b'E', 28, 1];
    e.extend_from_slice(&both_u32(lba));
    e.extend_from_slice(&both_u32(0));
    e.extend_from_slice(&both_u32(len));
    e
}

const DIR_MODE: u32 = 0o040_555;
const FILE_MODE: u32 = 0o100_444;

impl IsoBuilder {
    /// An empty image named `volume_id` (made d-characters, at most 32), with Rock Ridge
    /// names and no Joliet tree.
    pub fn new(volume_id: &str) -> Self {
        IsoBuilder {
            volume_id: d_characters(volume_id, 32),
            rock_ridge: true,
            joliet: false,
            root: Dir::default(),
        }
    }

    /// Whether to write Rock Ridge entries (on by default); without them readers see the
    /// ISO 9660 level 1 names (`VMLINUZ.`, `GRUB.CFG;1`).
    pub fn rock_ridge(&mut self, on: bool) -> &mut Self {
        self.rock_ridge = on;
        self
    }

    /// Whether to add a Joliet tree (off by default).
    pub fn joliet(&mut self, on: bool) -> &mut Self {
        self.joliet = on;
        self
    }

    /// The directory at `components`, created with its parents.
    fn dir_at(&mut self, components: &[&str]) -> Result<&mut Dir> {
        let mut dir = &mut self.root;
        for part in components {
            let node = dir
                .entries
                .entry((*part).to_string())
                .or_insert_with(|| Node::Dir(Dir::default()));
            dir = match node {
                Node::Dir(d) => d,
                Node::File(_) => bail!("{part} is a file, not a directory"),
            };
        }
        Ok(dir)
    }

    fn split(path: &str) -> Result<Vec<&str>> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for part in &parts {
            ensure!(
                *part != "." && *part != "..",
                "{path}: . and .. are not names"
            );
            ensure!(
                part.len() <= MAX_NAME,
                "{path}: {part} is longer than {MAX_NAME} bytes"
            );
        }
        Ok(parts)
    }

    /// Adds the file `path` (`/`-separated; parents are created) holding `bytes`, replacing
    /// a file of that name.
    pub fn file(&mut self, path: &str, bytes: impl Into<Vec<u8>>) -> Result<&mut Self> {
        let parts = Self::split(path)?;
        let Some((name, parents)) = parts.split_last() else {
            bail!("{path:?} names no file");
        };
        let bytes = bytes.into();
        ensure!(
            u32::try_from(bytes.len()).is_ok(),
            "{path}: files of 4 GiB and more need several extents, which this writer does not write"
        );
        let dir = self.dir_at(parents)?;
        if let Some(Node::Dir(_)) = dir.entries.get(*name) {
            bail!("{path} is a directory");
        }
        dir.entries.insert((*name).to_string(), Node::File(bytes));
        Ok(self)
    }

    /// Adds the (empty) directory `path` and its parents.
    pub fn dir(&mut self, path: &str) -> Result<&mut Self> {
        let parts = Self::split(path)?;
        self.dir_at(&parts)?;
        Ok(self)
    }

    /// The directories in path-table order (breadth first, children sorted by ISO name)
    /// and the files in the order their data is laid out.
    fn place(&self) -> (Vec<PlacedDir>, Vec<&[u8]>) {
        let mut dirs = vec![PlacedDir {
            path: String::new(),
            iso_path: String::new(),
            parent: 0,
            iso_id: vec![0],
            joliet_id: vec![0],
            children: Vec::new(),
            subdirs: 0,
        }];
        let mut sources: Vec<&Dir> = vec![&self.root];
        let mut files = Vec::new();
        let mut index = 0;
        while index < dirs.len() {
            let dir = sources[index];
            let ids = iso_identifiers(&dir.entries);
            let mut children: Vec<(Vec<u8>, &String, &Node)> = dir
                .entries
                .iter()
                .zip(ids)
                .map(|((name, node), id)| (id.into_bytes(), name, node))
                .collect();
            children.sort_by(|a, b| a.0.cmp(&b.0));
            for (iso_id, name, node) in children {
                let joliet_id = joliet_identifier(name);
                let target = match node {
                    Node::Dir(sub) => {
                        dirs[index].subdirs += 1;
                        dirs.push(PlacedDir {
                            path: format!("{}/{name}", dirs[index].path),
                            iso_path: format!(
                                "{}/{}",
                                dirs[index].iso_path,
                                String::from_utf8_lossy(&iso_id)
                            ),
                            parent: index,
                            iso_id: iso_id.clone(),
                            joliet_id: joliet_id.clone(),
                            children: Vec::new(),
                            subdirs: 0,
                        });
                        sources.push(sub);
                        Target::Dir(dirs.len() - 1)
                    }
                    Node::File(bytes) => {
                        files.push((format!("{}/{name}", dirs[index].path), bytes.as_slice()));
                        Target::File(files.len() - 1)
                    }
                };
                dirs[index].children.push(Child {
                    name: name.clone(),
                    iso_id,
                    joliet_id,
                    target,
                });
            }
            index += 1;
        }
        let (_, data): (Vec<String>, Vec<&[u8]>) = files.into_iter().unzip();
        (dirs, data)
    }

    /// The System Use bytes of a record.
    fn system_use(&self, tree: Tree, name: Option<&str>, mode: u32, links: u32) -> Vec<u8> {
        if tree == Tree::Joliet || !self.rock_ridge {
            return Vec::new();
        }
        let mut su = px(mode, links);
        if let Some(name) = name {
            su.extend(nm(name));
        }
        su
    }

    /// The records of directory `index` in `tree`, given every directory's and file's
    /// extent (`None` while sizes are being measured).
    fn directory_bytes(
        &self,
        tree: Tree,
        dirs: &[PlacedDir],
        index: usize,
        dir_extents: &[(u32, u32)],
        file_extents: &[(u32, u32)],
        er_lba: u32,
    ) -> Vec<u8> {
        let dir = &dirs[index];
        let links = |d: &PlacedDir| 2 + d.subdirs as u32;
        let mut records = Vec::new();
        let (self_lba, self_size) = dir_extents[index];
        let mut dot = self.system_use(tree, None, DIR_MODE, links(dir));
        if index == 0 && tree == Tree::Primary && self.rock_ridge {
            // SUSP's SP (check bytes BE EF, nothing skipped), then the ER in a continuation area.
            let mut su = vec![b'S', b'P', 7, 1, 0xbe, 0xef, 0];
            su.extend(dot);
            su.extend(ce(er_lba, er().len() as u32));
            dot = su;
        }
        records.push(record(&[0], self_lba, self_size, true, &dot));
        let (parent_lba, parent_size) = dir_extents[dir.parent];
        let dotdot = self.system_use(tree, None, DIR_MODE, links(&dirs[dir.parent]));
        records.push(record(&[1], parent_lba, parent_size, true, &dotdot));
        for child in &dir.children {
            let id = match tree {
                Tree::Primary => &child.iso_id,
                Tree::Joliet => &child.joliet_id,
            };
            let (lba, size, is_dir, mode, nlink) = match child.target {
                Target::Dir(d) => (
                    dir_extents[d].0,
                    dir_extents[d].1,
                    true,
                    DIR_MODE,
                    links(&dirs[d]),
                ),
                Target::File(f) => (file_extents[f].0, file_extents[f].1, false, FILE_MODE, 1),
            };
            let su = self.system_use(tree, Some(&child.name), mode, nlink);
            records.push(record(id, lba, size, is_dir, &su));
        }
        // No record crosses a sector boundary: pad the sector with zeros instead.
        let mut bytes = Vec::new();
        for r in records {
            let room = BLOCK - bytes.len() % BLOCK;
            if r.len() > room {
                bytes.resize(bytes.len() + room, 0);
            }
            bytes.extend(r);
        }
        bytes.resize(sectors(bytes.len()) * BLOCK, 0);
        bytes
    }

    /// A path table (ECMA-119 §9.4), little-endian (type L) or big-endian (type M).
    fn path_table(
        dirs: &[PlacedDir],
        tree: Tree,
        dir_extents: &[(u32, u32)],
        big_endian: bool,
    ) -> Vec<u8> {
        let mut table = Vec::new();
        for (index, dir) in dirs.iter().enumerate() {
            let id = match tree {
                Tree::Primary => &dir.iso_id,
                Tree::Joliet => &dir.joliet_id,
            };
            table.push(id.len() as u8);
            table.push(0);
            let lba = dir_extents[index].0;
            let parent = (dir.parent + 1) as u16;
            if big_endian {
                table.extend(lba.to_be_bytes());
                table.extend(parent.to_be_bytes());
            } else {
                table.extend(lba.to_le_bytes());
                table.extend(parent.to_le_bytes());
            }
            table.extend(id);
            if !id.len().is_multiple_of(2) {
                table.push(0);
            }
        }
        table
    }

    /// The image.
    pub fn build(&self) -> Result<Layout> {
        let (dirs, files) = self.place();
        ensure!(
            dirs.len() < usize::from(u16::MAX),
            "{} directories: a path table numbers at most 65535",
            dirs.len()
        );
        let trees: &[Tree] = if self.joliet {
            &[Tree::Primary, Tree::Joliet]
        } else {
            &[Tree::Primary]
        };
        // Sizes first (records do not depend on extents), then addresses.
        let zero_dirs = vec![(0u32, 0u32); dirs.len()];
        let zero_files = vec![(0u32, 0u32); files.len()];
        let mut next = 16 + trees.len() + 1; // descriptors and the terminator
        let mut tables = Vec::new();
        for &tree in trees {
            let size = Self::path_table(&dirs, tree, &zero_dirs, false).len();
            tables.push((tree, size, next, next + sectors(size)));
            next += 2 * sectors(size);
        }
        let er_lba = next;
        next += 1;
        let mut tree_extents = Vec::new();
        for &tree in trees {
            let mut extents = Vec::new();
            for index in 0..dirs.len() {
                let size = self
                    .directory_bytes(tree, &dirs, index, &zero_dirs, &zero_files, 0)
                    .len();
                extents.push((u32::try_from(next)?, u32::try_from(size)?));
                next += sectors(size);
            }
            tree_extents.push(extents);
        }
        let mut file_extents = Vec::new();
        for bytes in &files {
            // Empty files have no extent.
            let lba = if bytes.is_empty() { 0 } else { next };
            file_extents.push((u32::try_from(lba)?, u32::try_from(bytes.len())?));
            next += sectors(bytes.len());
        }
        let total = u32::try_from(next).context("an image of 2^32 blocks or more")?;

        let mut image = vec![0u8; next * BLOCK];
        for (i, &tree) in trees.iter().enumerate() {
            let extents = &tree_extents[i];
            let (_, table_size, l_lba, m_lba) = tables[i];
            let descriptor = self.descriptor(tree, total, table_size, l_lba, m_lba, extents[0]);
            let at = (16 + i) * BLOCK;
            image[at..at + BLOCK].copy_from_slice(&descriptor);
            for (lba, big) in [(l_lba, false), (m_lba, true)] {
                let table = Self::path_table(&dirs, tree, extents, big);
                image[lba * BLOCK..lba * BLOCK + table.len()].copy_from_slice(&table);
            }
            for index in 0..dirs.len() {
                let bytes =
                    self.directory_bytes(tree, &dirs, index, extents, &file_extents, er_lba as u32);
                let at = extents[index].0 as usize * BLOCK;
                image[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        }
        let terminator = (16 + trees.len()) * BLOCK;
        image[terminator] = 255;
        image[terminator + 1..terminator + 6].copy_from_slice(b"CD001");
        image[terminator + 6] = 1;
        if self.rock_ridge {
            let er = er();
            image[er_lba * BLOCK..er_lba * BLOCK + er.len()].copy_from_slice(&er);
        }
        let mut placed = Vec::new();
        let mut file_index = 0;
        for dir in &dirs {
            for child in &dir.children {
                if let Target::File(f) = child.target {
                    let at = file_extents[f].0 as usize * BLOCK;
                    image[at..at + files[f].len()].copy_from_slice(files[f]);
                    placed.push((format!("{}/{}", dir.path, child.name), at));
                    file_index += 1;
                }
            }
        }
        debug_assert_eq!(file_index, files.len());
        Ok(Layout {
            image,
            files: placed,
            iso_paths: dirs
                .iter()
                .map(|d| (d.path.clone(), d.iso_path.clone()))
                .collect(),
        })
    }

    /// Builds the image and writes it to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let layout = self.build()?;
        std::fs::write(path, layout.image).with_context(|| format!("writing {}", path.display()))
    }

    /// A primary (type 1) or Joliet (type 2) volume descriptor (ECMA-119 §8.4, §8.5).
    fn descriptor(
        &self,
        tree: Tree,
        total: u32,
        table_size: usize,
        l_lba: usize,
        m_lba: usize,
        root: (u32, u32),
    ) -> Vec<u8> {
        let mut d = vec![0u8; BLOCK];
        d[0] = if tree == Tree::Primary { 1 } else { 2 };
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        let text = |d: &mut [u8], range: std::ops::Range<usize>, value: &str| match tree {
            Tree::Primary => {
                d[range.clone()].fill(b' ');
                let bytes = value.as_bytes();
                let n = bytes.len().min(range.len());
                d[range.start..range.start + n].copy_from_slice(&bytes[..n]);
            }
            Tree::Joliet => {
                for pair in d[range.clone()].chunks_exact_mut(2) {
                    pair.copy_from_slice(&[0, b' ']);
                }
                let units: Vec<u8> = value.encode_utf16().flat_map(u16::to_be_bytes).collect();
                let n = units.len().min(range.len() & !1);
                d[range.start..range.start + n].copy_from_slice(&units[..n]);
            }
        };
        text(&mut d, 8..40, "");
        text(&mut d, 40..72, &self.volume_id);
        d[80..88].copy_from_slice(&both_u32(total));
        if tree == Tree::Joliet {
            // UCS-2 level 3.
            d[88..91].copy_from_slice(b"%/E");
        }
        d[120..124].copy_from_slice(&both_u16(1));
        d[124..128].copy_from_slice(&both_u16(1));
        d[128..132].copy_from_slice(&both_u16(BLOCK as u16));
        d[132..140].copy_from_slice(&both_u32(table_size as u32));
        d[140..144].copy_from_slice(&(l_lba as u32).to_le_bytes());
        d[148..152].copy_from_slice(&(m_lba as u32).to_be_bytes());
        let root = record(&[0], root.0, root.1, true, &[]);
        d[156..190].copy_from_slice(&root);
        for range in [
            190..318,
            318..446,
            446..574,
            574..702,
            702..739,
            739..776,
            776..813,
        ] {
            text(&mut d, range, "");
        }
        for at in [813, 830] {
            d[at..at + 16].copy_from_slice(VOLUME_DATE);
        }
        for at in [847, 864] {
            d[at..at + 16].fill(b'0');
        }
        d[881] = 1;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample() -> IsoBuilder {
        let mut iso = IsoBuilder::new("test media");
        iso.file("/boot/grub/grub.cfg", "menuentry 'x' { linux /vmlinuz }\n")
            .unwrap()
            .file("/vmlinuz", vec![7u8; 5000])
            .unwrap()
            .file("/initrd.img", vec![9u8; 3000])
            .unwrap()
            .file("/isolinux/isolinux.cfg", "DEFAULT x\n")
            .unwrap()
            .dir("/empty")
            .unwrap()
            .file("/empty.txt", Vec::new())
            .unwrap();
        iso
    }

    fn u32_at(image: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(image[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn descriptors_and_size() {
        let layout = sample().build().unwrap();
        let image = &layout.image;
        assert_eq!(image.len() % BLOCK, 0);
        assert_eq!(&image[16 * BLOCK..16 * BLOCK + 7], b"\x01CD001\x01");
        assert_eq!(&image[17 * BLOCK..17 * BLOCK + 7], b"\xffCD001\x01");
        assert_eq!(&image[16 * BLOCK + 40..16 * BLOCK + 50], b"TEST_MEDIA");
        assert_eq!(u32_at(image, 16 * BLOCK + 80) as usize, image.len() / BLOCK);
        // Both halves of both-endian fields agree.
        let pvd = &image[16 * BLOCK..17 * BLOCK];
        assert_eq!(
            pvd[84..88],
            pvd[80..84].iter().rev().copied().collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn files_land_where_the_layout_says() {
        let layout = sample().build().unwrap();
        let (_, at) = layout.files.iter().find(|(p, _)| p == "/vmlinuz").unwrap();
        assert_eq!(&layout.image[*at..*at + 5000], &[7u8; 5000][..]);
        assert_eq!(at % BLOCK, 0);
        assert!(
            layout
                .iso_paths
                .contains(&("/boot/grub".into(), "/BOOT/GRUB".into()))
        );
    }

    #[test]
    fn the_root_dot_record_starts_with_sp() {
        let layout = sample().build().unwrap();
        let root = &layout.image[16 * BLOCK + 156..16 * BLOCK + 190];
        let root_lba = u32_at(root, 2) as usize;
        let dot = &layout.image[root_lba * BLOCK..];
        assert_eq!(dot[32], 1);
        assert_eq!(&dot[34..41], &[b'S', b'P', 7, 1, 0xbe, 0xef, 0]);
    }

    #[test]
    fn output_is_deterministic() {
        assert_eq!(
            sample().build().unwrap().image,
            sample().build().unwrap().image
        );
    }

    #[test]
    fn iso_identifiers_are_8_3_and_unique() {
        let mut entries = BTreeMap::new();
        for name in [
            "grub.cfg",
            "vmlinuz",
            "abcdefghij.cfg",
            "abcdefghik.cfg",
            "x",
            "a.b.c",
        ] {
            entries.insert(name.to_string(), Node::File(Vec::new()));
        }
        entries.insert("boot.dir".into(), Node::Dir(Dir::default()));
        let ids = iso_identifiers(&entries);
        assert_eq!(
            ids,
            [
                "A_B.C;1",
                "ABCDEFGH.CFG;1",
                "ABCDEFG1.CFG;1",
                "BOOT_DIR",
                "GRUB.CFG;1",
                "VMLINUZ.;1",
                "X.;1"
            ]
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut iso = IsoBuilder::new("x");
        assert!(iso.file("/", "x").is_err());
        assert!(iso.file("/a/../b", "x").is_err());
        assert!(
            iso.file(&format!("/{}", "n".repeat(MAX_NAME + 1)), "x")
                .is_err()
        );
        iso.file("/a", "x").unwrap();
        assert!(iso.file("/a/b", "x").is_err());
        iso.dir("/d").unwrap();
        assert!(iso.file("/d", "x").is_err());
    }

    #[test]
    fn many_entries_span_sectors() {
        let mut iso = IsoBuilder::new("many");
        for i in 0..300 {
            iso.file(
                &format!("/d/file-with-a-long-name-{i:04}.cfg"),
                vec![i as u8],
            )
            .unwrap();
        }
        let layout = iso.build().unwrap();
        assert_eq!(layout.files.len(), 300);
        for (path, at) in &layout.files {
            let digits = path.trim_end_matches(".cfg").rsplit('-').next().unwrap();
            let i: usize = digits.parse().unwrap();
            assert_eq!(layout.image[*at], i as u8, "{path}");
        }
    }

    fn tool(name: &str, package: &str) -> bool {
        let found = Command::new(name).arg("-version").output().is_ok();
        if !found {
            eprintln!("skipped: {name} is not installed (apt-get install {package})");
        }
        found
    }

    /// `isoinfo` (genisoimage) and `xorriso` list the files under their Rock Ridge and
    /// Joliet names, and extract them intact.
    #[test]
    fn real_tools_read_the_image() {
        let dir = std::env::temp_dir().join(format!("xtask-iso-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("media.iso");
        sample().joliet(true).write(&path).unwrap();
        if tool("isoinfo", "genisoimage") {
            for (flag, expect) in [
                ("-R", "/boot/grub/grub.cfg"),
                ("-J", "/boot/grub/grub.cfg"),
                ("-f", "/BOOT/GRUB/GRUB.CFG;1"),
            ] {
                let out = Command::new("isoinfo")
                    .args(["-i", path.to_str().unwrap(), "-f", flag])
                    .output()
                    .unwrap();
                let listing = String::from_utf8_lossy(&out.stdout);
                assert!(
                    listing.lines().any(|l| l == expect),
                    "isoinfo {flag}:\n{listing}"
                );
            }
            let out = Command::new("isoinfo")
                .args(["-i", path.to_str().unwrap(), "-R", "-x", "/vmlinuz"])
                .output()
                .unwrap();
            assert_eq!(out.stdout, vec![7u8; 5000]);
        }
        if tool("xorriso", "xorriso") {
            let out = Command::new("xorriso")
                .args([
                    "-indev",
                    path.to_str().unwrap(),
                    "-find",
                    "/",
                    "-exec",
                    "lsdl",
                ])
                .output()
                .unwrap();
            let listing = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            for name in [
                "'/boot/grub/grub.cfg'",
                "'/initrd.img'",
                "'/empty'",
                "'/empty.txt'",
            ] {
                assert!(listing.contains(name), "xorriso:\n{listing}\n{stderr}");
            }
            assert!(
                !stderr.contains("FAILURE") && !stderr.contains("WARNING"),
                "{stderr}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
