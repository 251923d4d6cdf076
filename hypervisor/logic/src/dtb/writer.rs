//! Writes flattened device trees (Devicetree Specification v0.4 §5): the trees slices boot
//! with ([`crate::guest_dt`]). The blob is assembled in one buffer as it is written (header,
//! reservation map, structure block; the strings block is appended by [`DtbWriter::finish`]),
//! with each property name stored once. Nothing is allocated per node or property beyond the
//! buffer's growth, so a slice's tree costs a few instructions per byte of tree.
//!
//! The writer refuses what would make a tree [`super::Tree::new`] rejects, or one whose
//! strings a reader would cut short: a NUL inside a name or string value, a property outside
//! a node or after a child node, nodes closed out of order, a second root, and a tree
//! finished with nodes open.

use alloc::vec::Vec;

use super::{BEGIN_NODE, END, END_NODE, HEADER_SIZE, MAGIC, MAX_DEPTH, PROP, VERSION};

/// The oldest version a version-17 tree is compatible with (§5.2).
const LAST_COMPATIBLE: u32 = 16;
/// Slots of the table that finds a property name already in the strings block (a power of
/// two). Names past three quarters of it are stored again at each use: still a valid tree,
/// only a larger one (a slice's tree has about 45 names).
const NAME_SLOTS: usize = 128;

/// Why a tree could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbWriteError {
    /// A node or property name is empty where it may not be, or holds a NUL byte.
    BadName,
    /// A string value holds a NUL byte (it would end the string early).
    NulInString,
    /// A property outside every node or after a child node (§5.4.2: properties come first).
    MisplacedProperty,
    /// A node closed while a node inside it is open, a second root, nodes nested deeper than
    /// [`MAX_DEPTH`], or the tree finished without its root closed.
    Unbalanced,
    /// The tree outgrew the 32-bit offsets of the format.
    TooLarge,
}

impl core::fmt::Display for DtbWriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BadName => "a node or property name is empty or holds a NUL byte",
            Self::NulInString => "a string value holds a NUL byte",
            Self::MisplacedProperty => "a property outside a node or after a child node",
            Self::Unbalanced => "nodes not closed in order",
            Self::TooLarge => "the tree outgrew 4 GiB",
        })
    }
}

/// An open node, handed back to [`DtbWriter::end_node`] to close it.
#[must_use = "a node must be closed with DtbWriter::end_node"]
#[derive(Debug)]
pub struct OpenNode {
    depth: usize,
}

/// A flattened device tree being written.
#[derive(Clone, Debug)]
pub struct DtbWriter {
    /// Header (filled in by [`DtbWriter::finish`]), reservation map, structure block so far.
    blob: Vec<u8>,
    /// Offset of the structure block in `blob`.
    structure: usize,
    /// The strings block: property names, each NUL-terminated.
    strings: Vec<u8>,
    /// Open-addressed by a hash of the name: 1 + the offset of each name in `strings`, 0 for
    /// a free slot.
    names: [u32; NAME_SLOTS],
    /// Slots in use in `names`.
    named: usize,
    /// Nodes open.
    depth: usize,
    /// Whether the innermost open node may still take properties (no child written yet).
    properties_allowed: bool,
    /// Whether the root was written (and maybe closed): a tree has one.
    root_written: bool,
}

impl Default for DtbWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl DtbWriter {
    /// A tree with an empty memory reservation map.
    pub fn new() -> DtbWriter {
        Self::with_reservations(&[])
    }

    /// A tree whose memory reservation map lists `(address, size)` pairs.
    pub fn with_reservations(reservations: &[(u64, u64)]) -> DtbWriter {
        let structure = HEADER_SIZE + (reservations.len() + 1) * 16;
        // Room for a slice's whole tree (about 3 KiB), so it never grows on the way.
        let mut blob = Vec::with_capacity(structure + 4096);
        blob.resize(HEADER_SIZE, 0);
        for &(address, size) in reservations.iter().chain([&(0, 0)]) {
            blob.extend_from_slice(&address.to_be_bytes());
            blob.extend_from_slice(&size.to_be_bytes());
        }
        DtbWriter {
            blob,
            structure,
            strings: Vec::with_capacity(512),
            names: [0; NAME_SLOTS],
            named: 0,
            depth: 0,
            properties_allowed: false,
            root_written: false,
        }
    }

    /// Opens node `name` (the root's name is empty) inside the innermost open node.
    pub fn begin_node(&mut self, name: &str) -> Result<OpenNode, DtbWriteError> {
        self.open(name)?;
        self.blob.push(0);
        self.pad();
        Ok(self.opened())
    }

    /// Opens node `name@address`, the unit address in lower-case hexadecimal without
    /// leading zeros (`cpu@a`, `memory@40000000`).
    pub fn begin_node_at(&mut self, name: &str, address: u64) -> Result<OpenNode, DtbWriteError> {
        if name.is_empty() {
            return Err(DtbWriteError::BadName);
        }
        self.open(name)?;
        self.blob.push(b'@');
        let digits = (64 - address.leading_zeros()).div_ceil(4).max(1);
        for digit in (0..digits).rev() {
            let nibble = (address >> (digit * 4)) as u8 & 0xf;
            self.blob.push(match nibble {
                0..=9 => b'0' + nibble,
                _ => b'a' + nibble - 10,
            });
        }
        self.blob.push(0);
        self.pad();
        Ok(self.opened())
    }

    /// Checks where node `name` may go and writes its token and name (not its NUL).
    fn open(&mut self, name: &str) -> Result<(), DtbWriteError> {
        let root = self.depth == 0;
        if root && self.root_written || self.depth >= MAX_DEPTH {
            return Err(DtbWriteError::Unbalanced);
        }
        if name.is_empty() != root || name.as_bytes().contains(&0) {
            return Err(DtbWriteError::BadName);
        }
        self.word(BEGIN_NODE);
        self.blob.extend_from_slice(name.as_bytes());
        Ok(())
    }

    fn opened(&mut self) -> OpenNode {
        self.depth += 1;
        self.root_written = true;
        self.properties_allowed = true;
        OpenNode { depth: self.depth }
    }

    /// Closes `node`, which must be the innermost open node.
    pub fn end_node(&mut self, node: OpenNode) -> Result<(), DtbWriteError> {
        if node.depth != self.depth || self.depth == 0 {
            return Err(DtbWriteError::Unbalanced);
        }
        self.word(END_NODE);
        self.depth -= 1;
        // The parent has a child now: its properties are behind it.
        self.properties_allowed = false;
        Ok(())
    }

    /// Writes property `name` with `value` as its bytes.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), DtbWriteError> {
        self.property_header(name, value.len())?;
        self.blob.extend_from_slice(value);
        self.pad();
        Ok(())
    }

    /// A property with no value (a flag such as `interrupt-controller`).
    pub fn property_null(&mut self, name: &str) -> Result<(), DtbWriteError> {
        self.property(name, &[])
    }

    /// A string property.
    pub fn property_string(&mut self, name: &str, value: &str) -> Result<(), DtbWriteError> {
        self.property_strings(name, &[value])
    }

    /// A string-list property (`compatible = "a", "b"`).
    pub fn property_strings(&mut self, name: &str, values: &[&str]) -> Result<(), DtbWriteError> {
        if values.iter().any(|v| v.as_bytes().contains(&0)) {
            return Err(DtbWriteError::NulInString);
        }
        let len = values.iter().map(|v| v.len() + 1).sum();
        self.property_header(name, len)?;
        for value in values {
            self.blob.extend_from_slice(value.as_bytes());
            self.blob.push(0);
        }
        self.pad();
        Ok(())
    }

    /// A one-cell property.
    pub fn property_u32(&mut self, name: &str, value: u32) -> Result<(), DtbWriteError> {
        self.property(name, &value.to_be_bytes())
    }

    /// A two-cell property.
    pub fn property_u64(&mut self, name: &str, value: u64) -> Result<(), DtbWriteError> {
        self.property(name, &value.to_be_bytes())
    }

    /// A property of one-cell values.
    pub fn property_array_u32(&mut self, name: &str, cells: &[u32]) -> Result<(), DtbWriteError> {
        self.property_header(name, cells.len() * 4)?;
        for cell in cells {
            self.word(*cell);
        }
        Ok(())
    }

    /// A property of two-cell values.
    pub fn property_array_u64(&mut self, name: &str, cells: &[u64]) -> Result<(), DtbWriteError> {
        self.property_header(name, cells.len() * 8)?;
        for cell in cells {
            self.blob.extend_from_slice(&cell.to_be_bytes());
        }
        Ok(())
    }

    /// Checks that a property may go here and writes its token, length and name offset.
    fn property_header(&mut self, name: &str, len: usize) -> Result<(), DtbWriteError> {
        if self.depth == 0 || !self.properties_allowed {
            return Err(DtbWriteError::MisplacedProperty);
        }
        if name.is_empty() || name.as_bytes().contains(&0) {
            return Err(DtbWriteError::BadName);
        }
        let len = u32::try_from(len).map_err(|_| DtbWriteError::TooLarge)?;
        let name_offset = self.name_offset(name)?;
        let mut header = [0u8; 12];
        for (field, word) in header.chunks_exact_mut(4).zip([PROP, len, name_offset]) {
            field.copy_from_slice(&word.to_be_bytes());
        }
        self.blob.extend_from_slice(&header);
        Ok(())
    }

    /// The offset of `name` in the strings block, added at its first use.
    fn name_offset(&mut self, name: &str) -> Result<u32, DtbWriteError> {
        let name = name.as_bytes();
        // FNV-1a: a few instructions per byte, and property names differ early.
        let hash = name.iter().fold(0x811c_9dc5u32, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let mut slot = hash as usize % NAME_SLOTS;
        let free = loop {
            let Some(at) = self.names[slot].checked_sub(1) else {
                break slot;
            };
            let stored = self.strings.get(at as usize..).unwrap_or_default();
            if stored.get(name.len()) == Some(&0) && stored.starts_with(name) {
                return Ok(at);
            }
            slot = (slot + 1) % NAME_SLOTS;
        };
        let at = u32::try_from(self.strings.len()).map_err(|_| DtbWriteError::TooLarge)?;
        self.strings.extend_from_slice(name);
        self.strings.push(0);
        if self.named < NAME_SLOTS * 3 / 4 {
            self.names[free] = at + 1;
            self.named += 1;
        }
        Ok(at)
    }

    /// Ends the tree and returns the blob.
    pub fn finish(mut self) -> Result<Vec<u8>, DtbWriteError> {
        if !self.root_written || self.depth != 0 {
            return Err(DtbWriteError::Unbalanced);
        }
        self.word(END);
        let size_structure = self.blob.len() - self.structure;
        let off_strings = self.blob.len();
        self.blob.extend_from_slice(&self.strings);
        let total = u32::try_from(self.blob.len()).map_err(|_| DtbWriteError::TooLarge)?;
        // Every offset and size is below `total`, so these fit too.
        let header = [
            MAGIC,
            total,
            self.structure as u32,
            off_strings as u32,
            HEADER_SIZE as u32,
            VERSION,
            LAST_COMPATIBLE,
            0,
            self.strings.len() as u32,
            size_structure as u32,
        ];
        for (field, value) in self.blob.chunks_exact_mut(4).zip(header) {
            field.copy_from_slice(&value.to_be_bytes());
        }
        Ok(self.blob)
    }

    fn word(&mut self, word: u32) {
        self.blob.extend_from_slice(&word.to_be_bytes());
    }

    /// Zeroes up to the next 4-byte boundary (tokens are aligned).
    fn pad(&mut self) {
        let len = (self.blob.len() + 3) & !3;
        self.blob.resize(len, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtb::Tree;
    use crate::dtb::tests::Raw;

    /// The same small tree as written by hand with [`Raw`] (the reader's own test builder).
    fn small() -> Vec<u8> {
        let mut w = DtbWriter::with_reservations(&[(0x4000_0000, 0x1000)]);
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_strings("compatible", &["a,b", "c"]).unwrap();
        let cpu = w.begin_node_at("cpu", 10).unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_null("flag").unwrap();
        w.end_node(cpu).unwrap();
        let memory = w.begin_node_at("memory", 0x4000_0000).unwrap();
        w.property_array_u64("reg", &[0x4000_0000, 0x800_0000])
            .unwrap();
        w.property_array_u32("cells", &[1, 2, 3]).unwrap();
        w.property_string("odd", "12345").unwrap();
        w.end_node(memory).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn writes_what_the_reader_test_builder_writes_byte_for_byte() {
        let mut raw = Raw::new();
        raw.reservations.push((0x4000_0000, 0x1000));
        raw.prop_u32("#address-cells", 2)
            .prop("compatible", b"a,b\0c\0")
            .begin("cpu@a")
            .prop_u32("#address-cells", 1)
            .prop("flag", b"")
            .end_node()
            .begin("memory@40000000")
            .prop(
                "reg",
                &[0x4000_0000u64.to_be_bytes(), 0x800_0000u64.to_be_bytes()].concat(),
            )
            .prop("cells", &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3])
            .prop("odd", b"12345\0")
            .end_node()
            .finish();
        assert_eq!(small(), raw.build());
    }

    #[test]
    fn the_reader_and_the_fdt_crate_read_it_back() {
        let blob = small();
        let tree = Tree::new(&blob).unwrap();
        assert_eq!(
            tree.reservations().collect::<Vec<_>>(),
            [(0x4000_0000, 0x1000)]
        );
        let memory = tree.find(b"/memory@40000000").unwrap();
        assert_eq!(memory.string("odd"), Some(&b"12345"[..]));
        assert_eq!(tree.root().cells().address, 2);
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let cpu = fdt.find_node("/cpu@a").unwrap();
        assert!(cpu.property("flag").is_some());
        assert_eq!(
            fdt.root().compatible().all().collect::<Vec<_>>(),
            ["a,b", "c"]
        );
    }

    #[test]
    fn each_property_name_is_stored_once() {
        let blob = small();
        let tree = Tree::new(&blob).unwrap();
        assert_eq!(
            tree.strings,
            b"#address-cells\0compatible\0flag\0reg\0cells\0odd\0"
        );
    }

    #[test]
    fn more_names_than_the_table_holds_are_stored_again_and_still_read() {
        let mut w = DtbWriter::new();
        let root = w.begin_node("").unwrap();
        let names: Vec<_> = (0..200).map(|i| alloc::format!("p{i}")).collect();
        for round in 0..2u32 {
            let node = w.begin_node_at("n", round.into()).unwrap();
            for (i, name) in names.iter().enumerate() {
                w.property_u32(name, i as u32).unwrap();
            }
            w.end_node(node).unwrap();
        }
        w.end_node(root).unwrap();
        let blob = w.finish().unwrap();
        let tree = Tree::new(&blob).unwrap();
        // The first 96 names are shared by both nodes, the others written twice.
        let stored: usize = names.iter().map(|n| n.len() + 1).sum();
        let again: usize = names[NAME_SLOTS * 3 / 4..]
            .iter()
            .map(|n| n.len() + 1)
            .sum();
        assert_eq!(tree.strings.len(), stored + again);
        for node in tree.root().children() {
            for (i, name) in names.iter().enumerate() {
                assert_eq!(node.property(name), Some(&(i as u32).to_be_bytes()[..]));
            }
        }
    }

    #[test]
    fn unit_addresses_are_lower_case_hex_without_leading_zeros() {
        for (address, name) in [
            (0, "n@0"),
            (0xf, "n@f"),
            (0x10, "n@10"),
            (0x40_1000_0000, "n@4010000000"),
            (u64::MAX, "n@ffffffffffffffff"),
        ] {
            let mut w = DtbWriter::new();
            let root = w.begin_node("").unwrap();
            let node = w.begin_node_at("n", address).unwrap();
            w.end_node(node).unwrap();
            w.end_node(root).unwrap();
            let blob = w.finish().unwrap();
            let tree = Tree::new(&blob).unwrap();
            assert_eq!(
                tree.root().children().next().unwrap().name(),
                name.as_bytes()
            );
        }
    }

    #[test]
    fn refuses_what_no_reader_could_take() {
        let mut w = DtbWriter::new();
        assert_eq!(
            w.property_u32("a", 1),
            Err(DtbWriteError::MisplacedProperty)
        );
        assert_eq!(w.begin_node("x").err(), Some(DtbWriteError::BadName));
        let root = w.begin_node("").unwrap();
        assert_eq!(w.begin_node("").err(), Some(DtbWriteError::BadName));
        assert_eq!(w.begin_node("a\0b").err(), Some(DtbWriteError::BadName));
        assert_eq!(w.begin_node_at("", 1).err(), Some(DtbWriteError::BadName));
        assert_eq!(w.property_null(""), Err(DtbWriteError::BadName));
        assert_eq!(w.property_null("a\0"), Err(DtbWriteError::BadName));
        assert_eq!(
            w.property_string("bootargs", "console\0x"),
            Err(DtbWriteError::NulInString)
        );
        let child = w.begin_node("child").unwrap();
        let grandchild = w.begin_node("grandchild").unwrap();
        assert_eq!(w.end_node(child), Err(DtbWriteError::Unbalanced));
        w.end_node(grandchild).unwrap();
        // `child` was consumed by the refused call: a node at its depth closes it.
        w.end_node(OpenNode { depth: 2 }).unwrap();
        assert_eq!(
            w.property_u32("late", 1),
            Err(DtbWriteError::MisplacedProperty)
        );
        assert_eq!(w.clone().finish(), Err(DtbWriteError::Unbalanced));
        w.end_node(root).unwrap();
        assert_eq!(w.begin_node("").err(), Some(DtbWriteError::Unbalanced));
        assert_eq!(
            w.property_u32("after", 1),
            Err(DtbWriteError::MisplacedProperty)
        );
        // What was refused left no trace: the tree still reads.
        let blob = w.finish().unwrap();
        let tree = Tree::new(&blob).unwrap();
        assert_eq!(tree.root().children().count(), 1);
        assert_eq!(DtbWriter::new().finish(), Err(DtbWriteError::Unbalanced));
    }

    #[test]
    fn nesting_stops_at_the_readers_depth() {
        let mut w = DtbWriter::new();
        let mut open = alloc::vec![w.begin_node("").unwrap()];
        while let Ok(node) = w.begin_node("n") {
            open.push(node);
        }
        assert_eq!(open.len(), MAX_DEPTH);
        while let Some(node) = open.pop() {
            w.end_node(node).unwrap();
        }
        assert!(Tree::new(&w.finish().unwrap()).is_ok());
    }
}
