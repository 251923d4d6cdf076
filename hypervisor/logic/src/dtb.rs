//! A reader for flattened device trees (Devicetree Specification v0.4 §5) that checks the
//! whole blob once and then answers lookups. It never allocates, never panics and reads the
//! blob only through byte slices (`from_be_bytes`), so boot can use it with the MMU off, where
//! every access is Device memory and must not be unaligned or exclusive.
//!
//! [`Tree::new`] validates the header, the memory reservation map and the structure block
//! token by token: anything malformed is a [`DtbError`]. `FDT_NOP` tokens are allowed wherever
//! a token may stand and are skipped by every lookup, so a tree with NOPs (QEMU and U-Boot
//! leave them where they delete or replace nodes) reads exactly like the same tree without.

pub mod writer;

/// The first word of every flattened device tree (§5.2).
pub const MAGIC: u32 = 0xd00d_feed;
/// Bytes of the version 17 header (§5.2).
pub const HEADER_SIZE: usize = 40;
/// Deepest node nesting accepted (the root counts as 1). Real trees stay below 8; the bound
/// keeps the node walk's cell-size stack fixed.
pub const MAX_DEPTH: usize = 32;

const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

/// The format version this reader implements, and the oldest version with `size_dt_struct`.
const VERSION: u32 = 17;

/// Why a blob is not a usable flattened device tree. Offsets are from the start of the
/// structure block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// Shorter than the header, or than the header's `totalsize`.
    Truncated,
    /// The first word is not [`MAGIC`].
    BadMagic,
    /// A format this reader cannot read (needs `version` >= 17 and `last_comp_version` <= 17).
    UnsupportedVersion(u32),
    /// The reservation map, structure or strings block overlaps the header, lies outside
    /// `totalsize`, or is misaligned.
    BadLayout,
    /// The memory reservation map has no terminating (0, 0) entry inside the blob.
    UnterminatedReservations,
    /// A token the specification does not define.
    UnknownToken { offset: usize, token: u32 },
    /// The structure block ends inside a token (a name, a property value) or before `FDT_END`.
    UnexpectedEnd,
    /// A property's name offset points outside the strings block, or its name has no NUL.
    BadStringOffset { offset: usize },
    /// Nodes do not nest: `FDT_END_NODE` with no node open, `FDT_END` with nodes open or
    /// before the root, a second root, or data after `FDT_END`.
    Unbalanced { offset: usize },
    /// A property outside every node, or after a child node (§5.4.2: properties come first).
    MisplacedProperty { offset: usize },
    /// Nodes nested deeper than [`MAX_DEPTH`].
    TooDeep { offset: usize },
}

impl core::fmt::Display for DtbError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated => f.write_str("truncated (shorter than its header or totalsize)"),
            Self::BadMagic => write!(f, "bad magic (not {MAGIC:#x})"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            Self::BadLayout => {
                f.write_str("a block lies outside the blob, overlaps the header or is misaligned")
            }
            Self::UnterminatedReservations => {
                f.write_str("the memory reservation map has no terminating entry")
            }
            Self::UnknownToken { offset, token } => {
                write!(
                    f,
                    "unknown token {token:#x} at structure offset {offset:#x}"
                )
            }
            Self::UnexpectedEnd => f.write_str("the structure block ends inside a token"),
            Self::BadStringOffset { offset } => write!(
                f,
                "the property at structure offset {offset:#x} has a name outside the strings block"
            ),
            Self::Unbalanced { offset } => {
                write!(f, "unbalanced nodes at structure offset {offset:#x}")
            }
            Self::MisplacedProperty { offset } => write!(
                f,
                "property outside a node or after a child node at structure offset {offset:#x}"
            ),
            Self::TooDeep { offset } => write!(
                f,
                "nodes nested deeper than {MAX_DEPTH} at structure offset {offset:#x}"
            ),
        }
    }
}

/// Big-endian `u32` at `at`, if the bytes are there.
fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// Big-endian `u64` at `at`, if the bytes are there.
fn be64(bytes: &[u8], at: usize) -> Option<u64> {
    let high = be32(bytes, at)?;
    let low = be32(bytes, at.checked_add(4)?)?;
    Some((u64::from(high) << 32) | u64::from(low))
}

/// `at` rounded up to the next token boundary.
fn align4(at: usize) -> Option<usize> {
    Some(at.checked_add(3)? & !3)
}

/// `bytes` up to (not including) its first NUL; `None` without a NUL.
fn until_nul(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes.iter().position(|&b| b == 0)?;
    bytes.get(..end)
}

/// Total size of the flattened device tree whose first 8 bytes are `header` (its
/// `totalsize`), or `None` if they do not start with [`MAGIC`].
pub fn total_size(header: &[u8; 8]) -> Option<usize> {
    (be32(header, 0)? == MAGIC).then_some(be32(header, 4)? as usize)
}

/// One token of the structure block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Begin {
        name: &'a [u8],
    },
    EndNode,
    /// A property: its name is resolved only when asked for ([`Tree::property_name`]), so
    /// walking past properties never scans the strings block.
    Prop {
        name_offset: usize,
        value: &'a [u8],
    },
    Nop,
    End,
}

/// `#address-cells` and `#size-cells` of a node: how its children's `reg` entries are
/// encoded (§2.3.5; defaults 2 and 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cells {
    pub address: u32,
    pub size: u32,
}

impl Cells {
    /// What a node without `#address-cells` / `#size-cells` implies.
    pub const DEFAULT: Cells = Cells {
        address: 2,
        size: 1,
    };
}

/// A validated flattened device tree.
#[derive(Clone, Copy, Debug)]
pub struct Tree<'a> {
    structure: &'a [u8],
    strings: &'a [u8],
    /// The reservation map without its terminator.
    reservations: &'a [u8],
    /// Offset of the root's `FDT_BEGIN_NODE`.
    root: usize,
}

impl<'a> Tree<'a> {
    /// Checks `blob` completely: header, block layout, reservation map, every token.
    pub fn new(blob: &'a [u8]) -> Result<Tree<'a>, DtbError> {
        let magic = be32(blob, 0).ok_or(DtbError::Truncated)?;
        if magic != MAGIC {
            return Err(DtbError::BadMagic);
        }
        let header = blob.get(..HEADER_SIZE).ok_or(DtbError::Truncated)?;
        let field = |index: usize| be32(header, index * 4).map_or(0, |v| v as usize);
        let (total, off_struct, off_strings, off_reservations) =
            (field(1), field(2), field(3), field(4));
        let (version, last_compatible) = (field(5) as u32, field(6) as u32);
        let (size_strings, size_struct) = (field(8), field(9));
        let blob = blob.get(..total).ok_or(DtbError::Truncated)?;
        if version < VERSION || last_compatible > VERSION {
            return Err(DtbError::UnsupportedVersion(version));
        }
        let block = |offset: usize, size: usize, align: usize| {
            let end = offset.checked_add(size)?;
            (offset >= HEADER_SIZE && offset.is_multiple_of(align))
                .then(|| blob.get(offset..end))
                .flatten()
        };
        let structure = block(off_struct, size_struct, 4).ok_or(DtbError::BadLayout)?;
        let strings = block(off_strings, size_strings, 1).ok_or(DtbError::BadLayout)?;
        let map = block(off_reservations, 0, 8)
            .and_then(|_| blob.get(off_reservations..))
            .ok_or(DtbError::BadLayout)?;
        let entries = map
            .chunks_exact(16)
            .position(|entry| entry.iter().all(|&b| b == 0))
            .ok_or(DtbError::UnterminatedReservations)?;
        let reservations = map.get(..entries * 16).ok_or(DtbError::BadLayout)?;
        let mut tree = Tree {
            structure,
            strings,
            reservations,
            root: 0,
        };
        tree.root = tree.validate()?;
        Ok(tree)
    }

    /// Decodes the token at `at`: the token and the offset of the next one.
    fn token(&self, at: usize) -> Result<(Token<'a>, usize), DtbError> {
        let s = self.structure;
        let code = be32(s, at).ok_or(DtbError::UnexpectedEnd)?;
        let after = at + 4;
        match code {
            BEGIN_NODE => {
                let name =
                    until_nul(s.get(after..).unwrap_or_default()).ok_or(DtbError::UnexpectedEnd)?;
                let next = align4(after + name.len() + 1).ok_or(DtbError::UnexpectedEnd)?;
                Ok((Token::Begin { name }, next))
            }
            END_NODE => Ok((Token::EndNode, after)),
            PROP => {
                let len = be32(s, after).ok_or(DtbError::UnexpectedEnd)? as usize;
                let name_offset = be32(s, after + 4).ok_or(DtbError::UnexpectedEnd)? as usize;
                let start = after + 8;
                let value = start
                    .checked_add(len)
                    .and_then(|end| s.get(start..end))
                    .ok_or(DtbError::UnexpectedEnd)?;
                let next = align4(start + len).ok_or(DtbError::UnexpectedEnd)?;
                Ok((Token::Prop { name_offset, value }, next))
            }
            NOP => Ok((Token::Nop, after)),
            END => Ok((Token::End, after)),
            token => Err(DtbError::UnknownToken { offset: at, token }),
        }
    }

    /// Walks every token once; returns the offset of the root node.
    fn validate(&self) -> Result<usize, DtbError> {
        let mut at = 0;
        let mut depth = 0usize;
        let mut root = None;
        // Whether the innermost open node may still get properties (no child seen yet).
        let mut properties_allowed = false;
        loop {
            let (token, next) = self.token(at)?;
            match token {
                Token::Begin { .. } => {
                    if depth == 0 {
                        if root.is_some() {
                            return Err(DtbError::Unbalanced { offset: at });
                        }
                        root = Some(at);
                    }
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(DtbError::TooDeep { offset: at });
                    }
                    properties_allowed = true;
                }
                Token::EndNode => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or(DtbError::Unbalanced { offset: at })?;
                    properties_allowed = false;
                }
                Token::Prop { name_offset, .. } => {
                    if self.property_name(name_offset).is_none() {
                        return Err(DtbError::BadStringOffset { offset: at });
                    }
                    if depth == 0 || !properties_allowed {
                        return Err(DtbError::MisplacedProperty { offset: at });
                    }
                }
                Token::Nop => {}
                Token::End => {
                    return match root {
                        Some(root) if depth == 0 && next == self.structure.len() => Ok(root),
                        _ => Err(DtbError::Unbalanced { offset: at }),
                    };
                }
            }
            at = next;
        }
    }

    /// The name of a property whose name is at `name_offset` in the strings block.
    fn property_name(&self, name_offset: usize) -> Option<&'a [u8]> {
        self.strings.get(name_offset..).and_then(until_nul)
    }

    /// Whether the property name at `name_offset` is `wanted` (compared in place: no scan
    /// for its end).
    fn property_name_is(&self, name_offset: usize, wanted: &[u8]) -> bool {
        self.strings
            .get(name_offset..)
            .and_then(|s| s.get(..=wanted.len()))
            .is_some_and(|s| s[wanted.len()] == 0 && &s[..wanted.len()] == wanted)
    }

    /// The token at `at` of a validated tree (`None` would mean a bug in [`Tree::validate`];
    /// lookups then simply end).
    fn token_at(&self, at: usize) -> Option<(Token<'a>, usize)> {
        self.token(at).ok()
    }

    /// The node whose `FDT_BEGIN_NODE` is at `at`, child of the node whose body starts at
    /// `parent` (`None` for the root).
    fn node_at(&self, at: usize, parent: Option<usize>) -> Option<Node<'a>> {
        match self.token_at(at)? {
            (Token::Begin { name }, body) => Some(Node {
                tree: *self,
                name,
                body,
                parent,
            }),
            _ => None,
        }
    }

    /// `#address-cells` and `#size-cells` of the node whose body starts at `body`.
    fn cells_of(&self, body: usize) -> Cells {
        let mut cells = Cells::DEFAULT;
        let properties = Properties {
            tree: *self,
            at: Some(body),
        };
        for (name, value) in properties {
            match (name, be32(value, 0)) {
                (b"#address-cells", Some(v)) => cells.address = v,
                (b"#size-cells", Some(v)) => cells.size = v,
                _ => {}
            }
        }
        cells
    }

    /// The root node.
    pub fn root(&self) -> Node<'a> {
        self.node_at(self.root, None).unwrap_or(Node {
            tree: *self,
            name: &[],
            body: self.structure.len(),
            parent: None,
        })
    }

    /// The memory reservation map's entries: (address, size).
    pub fn reservations(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.reservations
            .chunks_exact(16)
            .filter_map(|entry| Some((be64(entry, 0)?, be64(entry, 8)?)))
    }

    /// The node at `path` (`/a/b@1`; a component without `@` also matches a node with a unit
    /// address, as in `/memory` for `/memory@40000000`, when it is the first such child), or
    /// the node an alias in `/aliases` names when `path` does not start with `/`.
    pub fn find(&self, path: &[u8]) -> Option<Node<'a>> {
        let path = if path.first() == Some(&b'/') {
            path
        } else {
            let aliases = self.find(b"/aliases")?;
            let target = aliases.property_bytes(path)?;
            let target = until_nul(target).unwrap_or(target);
            if target.first() != Some(&b'/') {
                return None;
            }
            target
        };
        let mut node = self.root();
        for component in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            node = node.child(component)?;
        }
        Some(node)
    }

    /// Every node, depth first in blob order, the root first.
    pub fn nodes(&self) -> Nodes<'a> {
        Nodes {
            tree: *self,
            at: self.root,
            depth: 0,
            open: [0; MAX_DEPTH],
        }
    }
}

/// A node of a [`Tree`].
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    tree: Tree<'a>,
    name: &'a [u8],
    /// Offset of the first token after the node's name.
    body: usize,
    /// The parent's `body` (`None` for the root).
    parent: Option<usize>,
}

impl<'a> Node<'a> {
    /// The node's name with its unit address (`cpu@0`; the root's is empty).
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// How this node's own `reg` entries are encoded (the parent's `#address-cells` and
    /// `#size-cells`).
    pub fn parent_cells(&self) -> Cells {
        self.parent
            .map_or(Cells::DEFAULT, |parent| self.tree.cells_of(parent))
    }

    /// How this node's children's `reg` entries are encoded.
    pub fn cells(&self) -> Cells {
        self.tree.cells_of(self.body)
    }

    /// The node's properties, in blob order: (name, value).
    pub fn properties(&self) -> Properties<'a> {
        Properties {
            tree: self.tree,
            at: Some(self.body),
        }
    }

    /// The value of property `name`.
    pub fn property(&self, name: &str) -> Option<&'a [u8]> {
        self.property_bytes(name.as_bytes())
    }

    fn property_bytes(&self, name: &[u8]) -> Option<&'a [u8]> {
        let tree = &self.tree;
        let mut at = self.body;
        loop {
            match tree.token_at(at)? {
                (Token::Nop, next) => at = next,
                (Token::Prop { name_offset, value }, next) => {
                    if tree.property_name_is(name_offset, name) {
                        return Some(value);
                    }
                    at = next;
                }
                _ => return None,
            }
        }
    }

    /// A string property's value up to its first NUL (the whole value if it has none).
    pub fn string(&self, name: &str) -> Option<&'a [u8]> {
        let value = self.property(name)?;
        Some(until_nul(value).unwrap_or(value))
    }

    /// Whether `compatible` lists `wanted`.
    pub fn is_compatible(&self, wanted: &str) -> bool {
        self.property("compatible").is_some_and(|list| {
            list.split(|&b| b == 0)
                .any(|entry| entry == wanted.as_bytes())
        })
    }

    /// Whether the node is in use: no `status`, or `status` "okay" / "ok" (§2.3.4).
    pub fn is_available(&self) -> bool {
        self.string("status")
            .is_none_or(|s| s == b"okay" || s == b"ok")
    }

    /// Whether this node is a direct child of `parent`.
    pub fn is_child_of(&self, parent: &Node<'_>) -> bool {
        self.parent == Some(parent.body)
    }

    /// The node's direct children, in blob order.
    pub fn children(&self) -> Children<'a> {
        Children {
            tree: self.tree,
            at: Some(self.body),
            parent: self.body,
        }
    }

    /// The child named `name`, or, for a `name` without `@`, the first child whose name
    /// without its unit address is `name`.
    pub fn child(&self, name: &[u8]) -> Option<Node<'a>> {
        let exact = self.children().find(|c| c.name == name);
        exact.or_else(|| {
            if name.contains(&b'@') {
                return None;
            }
            self.children()
                .find(|c| c.name.split(|&b| b == b'@').next() == Some(name))
        })
    }
}

/// The properties of one node (see [`Node::properties`]).
#[derive(Clone, Debug)]
pub struct Properties<'a> {
    tree: Tree<'a>,
    at: Option<usize>,
}

impl<'a> Iterator for Properties<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (token, next) = self.tree.token_at(self.at?)?;
            match token {
                Token::Nop => self.at = Some(next),
                Token::Prop { name_offset, value } => {
                    self.at = Some(next);
                    return Some((self.tree.property_name(name_offset)?, value));
                }
                _ => {
                    self.at = None;
                    return None;
                }
            }
        }
    }
}

/// The children of one node (see [`Node::children`]).
#[derive(Clone, Debug)]
pub struct Children<'a> {
    tree: Tree<'a>,
    at: Option<usize>,
    /// The parent's body.
    parent: usize,
}

impl<'a> Iterator for Children<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        loop {
            let at = self.at?;
            let Some((token, next)) = self.tree.token_at(at) else {
                self.at = None;
                return None;
            };
            match token {
                Token::Nop | Token::Prop { .. } => self.at = Some(next),
                Token::Begin { name } => {
                    self.at = self.tree.subtree_end(next);
                    return Some(Node {
                        tree: self.tree,
                        name,
                        body: next,
                        parent: Some(self.parent),
                    });
                }
                Token::EndNode | Token::End => {
                    self.at = None;
                    return None;
                }
            }
        }
    }
}

impl Tree<'_> {
    /// The offset after the `FDT_END_NODE` that closes the node whose body starts at `body`.
    fn subtree_end(&self, body: usize) -> Option<usize> {
        let mut at = body;
        let mut depth = 1usize;
        loop {
            let (token, next) = self.token_at(at)?;
            match token {
                Token::Begin { .. } => depth += 1,
                Token::EndNode => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(next);
                    }
                }
                Token::End => return None,
                Token::Nop | Token::Prop { .. } => {}
            }
            at = next;
        }
    }
}

/// Every node of a tree (see [`Tree::nodes`]).
#[derive(Clone, Debug)]
pub struct Nodes<'a> {
    tree: Tree<'a>,
    at: usize,
    /// Nodes open around `at`.
    depth: usize,
    /// `open[d]`: the body of the open node at depth `d + 1`.
    open: [usize; MAX_DEPTH],
}

impl<'a> Iterator for Nodes<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        loop {
            let (token, next) = self.tree.token_at(self.at)?;
            match token {
                Token::Begin { name } => {
                    let parent = match self.depth.checked_sub(1) {
                        Some(depth) => Some(*self.open.get(depth)?),
                        None => None,
                    };
                    let node = Node {
                        tree: self.tree,
                        name,
                        body: next,
                        parent,
                    };
                    *self.open.get_mut(self.depth)? = node.body;
                    self.depth += 1;
                    self.at = next;
                    return Some(node);
                }
                Token::EndNode => self.depth = self.depth.checked_sub(1)?,
                Token::End => return None,
                Token::Nop | Token::Prop { .. } => {}
            }
            self.at = next;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A flattened device tree assembled token by token, malformed on request: header,
    /// reservation map at 40, structure block, strings block.
    #[derive(Clone, Debug, Default)]
    pub struct Raw {
        pub reservations: Vec<(u64, u64)>,
        pub structure: Vec<u8>,
        pub strings: Vec<u8>,
    }

    impl Raw {
        /// Starts a tree with an open root node.
        pub fn new() -> Raw {
            let mut raw = Raw::default();
            raw.begin("");
            raw
        }

        pub fn word(&mut self, word: u32) -> &mut Raw {
            self.structure.extend_from_slice(&word.to_be_bytes());
            self
        }

        pub fn begin(&mut self, name: &str) -> &mut Raw {
            self.word(BEGIN_NODE);
            self.structure.extend_from_slice(name.as_bytes());
            self.structure.push(0);
            self.pad()
        }

        pub fn end_node(&mut self) -> &mut Raw {
            self.word(END_NODE)
        }

        pub fn nop(&mut self) -> &mut Raw {
            self.word(NOP)
        }

        pub fn end(&mut self) -> &mut Raw {
            self.word(END)
        }

        /// The offset of `name` in the strings block (added once).
        fn name_offset(&mut self, name: &str) -> u32 {
            let mut wanted = name.as_bytes().to_vec();
            wanted.push(0);
            let found = (0..self.strings.len()).find(|&i| {
                self.strings[i..].starts_with(&wanted) && (i == 0 || self.strings[i - 1] == 0)
            });
            found.unwrap_or_else(|| {
                let at = self.strings.len();
                self.strings.extend_from_slice(&wanted);
                at
            }) as u32
        }

        pub fn prop(&mut self, name: &str, value: &[u8]) -> &mut Raw {
            let name_offset = self.name_offset(name);
            self.word(PROP).word(value.len() as u32).word(name_offset);
            self.structure.extend_from_slice(value);
            self.pad()
        }

        pub fn prop_u32(&mut self, name: &str, value: u32) -> &mut Raw {
            self.prop(name, &value.to_be_bytes())
        }

        fn pad(&mut self) -> &mut Raw {
            while !self.structure.len().is_multiple_of(4) {
                self.structure.push(0);
            }
            self
        }

        /// Closes the root and ends the structure block.
        pub fn finish(&mut self) -> &mut Raw {
            self.end_node().end()
        }

        pub fn build(&self) -> Vec<u8> {
            let map_size = (self.reservations.len() + 1) * 16;
            let off_struct = HEADER_SIZE + map_size;
            let off_strings = off_struct + self.structure.len();
            let total = off_strings + self.strings.len();
            let mut blob = Vec::new();
            for field in [
                MAGIC,
                total as u32,
                off_struct as u32,
                off_strings as u32,
                HEADER_SIZE as u32,
                17,
                16,
                0,
                self.strings.len() as u32,
                self.structure.len() as u32,
            ] {
                blob.extend_from_slice(&field.to_be_bytes());
            }
            for &(address, size) in self.reservations.iter().chain([&(0, 0)]) {
                blob.extend_from_slice(&address.to_be_bytes());
                blob.extend_from_slice(&size.to_be_bytes());
            }
            blob.extend_from_slice(&self.structure);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }

    /// Sets header field `index` (0 = magic, 1 = totalsize, ...).
    fn set_field(blob: &mut [u8], index: usize, value: u32) {
        blob[index * 4..index * 4 + 4].copy_from_slice(&value.to_be_bytes());
    }

    fn small() -> Raw {
        let mut raw = Raw::new();
        raw.prop_u32("#address-cells", 1).prop_u32("#size-cells", 1);
        raw.begin("chosen")
            .prop("stdout-path", b"serial0:115200\0")
            .end_node();
        raw.begin("aliases")
            .prop("serial0", b"/soc/serial@1000\0")
            .end_node();
        raw.begin("soc")
            .prop_u32("#address-cells", 2)
            .prop_u32("#size-cells", 2)
            .begin("serial@1000")
            .prop("compatible", b"vendor,x\0arm,pl011\0")
            .prop(
                "reg",
                &[0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x10, 0],
            )
            .end_node()
            .end_node();
        raw.begin("memory@0")
            .prop("device_type", b"memory\0")
            .end_node();
        raw.finish();
        raw
    }

    /// A node as the NOP test compares it: name, parent cells, properties.
    type Described = (Vec<u8>, Cells, Vec<(Vec<u8>, Vec<u8>)>);

    fn names<'a>(nodes: impl Iterator<Item = Node<'a>>) -> Vec<&'a [u8]> {
        nodes.map(|n| n.name()).collect()
    }

    #[test]
    fn walks_nodes_children_and_properties() {
        let blob = small().build();
        let tree = Tree::new(&blob).unwrap();
        let root = tree.root();
        assert_eq!(root.name(), b"");
        assert_eq!(
            root.cells(),
            Cells {
                address: 1,
                size: 1
            }
        );
        assert_eq!(
            names(root.children()),
            [&b"chosen"[..], b"aliases", b"soc", b"memory@0"]
        );
        assert_eq!(
            names(tree.nodes()),
            [
                &b""[..],
                b"chosen",
                b"aliases",
                b"soc",
                b"serial@1000",
                b"memory@0"
            ]
        );
        let serial = tree.find(b"/soc/serial@1000").unwrap();
        assert!(serial.is_compatible("arm,pl011") && !serial.is_compatible("arm"));
        assert_eq!(
            serial.parent_cells(),
            Cells {
                address: 2,
                size: 2
            }
        );
        let by_walk = tree.nodes().find(|n| n.name() == b"serial@1000").unwrap();
        assert_eq!(
            by_walk.parent_cells(),
            Cells {
                address: 2,
                size: 2
            }
        );
        assert_eq!(
            tree.find(b"/soc").unwrap().parent_cells(),
            Cells {
                address: 1,
                size: 1
            }
        );
        assert_eq!(serial.properties().count(), 2);
        assert_eq!(
            tree.find(b"serial0").map(|n| n.name()),
            Some(&b"serial@1000"[..])
        );
        assert_eq!(
            tree.find(b"/memory").map(|n| n.name()),
            Some(&b"memory@0"[..])
        );
        assert_eq!(
            tree.find(b"/memory").unwrap().string("device_type"),
            Some(&b"memory"[..])
        );
        assert!(tree.find(b"/soc/serial@2000").is_none());
        assert!(tree.find(b"nosuchalias").is_none());
        assert!(tree.find(b"/").is_some_and(|n| n.name().is_empty()));
        assert_eq!(tree.find(b"/chosen").unwrap().cells(), Cells::DEFAULT);
        assert!(tree.root().is_available());
    }

    #[test]
    fn reads_reservations_and_total_size() {
        let mut raw = small();
        raw.reservations = alloc::vec![(0x4800_0000, 0x1000), (0x1_0000_0000, 0x20_0000)];
        let blob = raw.build();
        let tree = Tree::new(&blob).unwrap();
        assert_eq!(
            tree.reservations().collect::<Vec<_>>(),
            [(0x4800_0000, 0x1000), (0x1_0000_0000, 0x20_0000)]
        );
        let header: [u8; 8] = blob[..8].try_into().unwrap();
        assert_eq!(total_size(&header), Some(blob.len()));
        assert_eq!(total_size(&[0; 8]), None);
    }

    #[test]
    fn nops_anywhere_change_nothing() {
        let plain = small().build();
        let mut raw = Raw::new();
        raw.nop()
            .prop_u32("#address-cells", 1)
            .nop()
            .prop_u32("#size-cells", 1)
            .nop();
        raw.begin("chosen")
            .nop()
            .prop("stdout-path", b"serial0:115200\0")
            .nop()
            .end_node();
        raw.nop().nop();
        raw.begin("aliases")
            .prop("serial0", b"/soc/serial@1000\0")
            .end_node();
        raw.begin("soc")
            .prop_u32("#address-cells", 2)
            .nop()
            .prop_u32("#size-cells", 2)
            .begin("serial@1000")
            .nop()
            .prop("compatible", b"vendor,x\0arm,pl011\0")
            .prop(
                "reg",
                &[0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x10, 0],
            )
            .nop()
            .end_node()
            .nop()
            .end_node();
        raw.begin("memory@0")
            .prop("device_type", b"memory\0")
            .end_node()
            .nop();
        raw.end_node().nop().end();
        let mut with_nops = raw.build();
        // A NOP before the root as well.
        let at = HEADER_SIZE + 16;
        with_nops.splice(at..at, NOP.to_be_bytes());
        let total = with_nops.len() as u32;
        set_field(&mut with_nops, 1, total);
        let strings = u32::from_be_bytes(with_nops[12..16].try_into().unwrap()) + 4;
        set_field(&mut with_nops, 3, strings);
        let size = u32::from_be_bytes(with_nops[36..40].try_into().unwrap()) + 4;
        set_field(&mut with_nops, 9, size);

        let (a, b) = (Tree::new(&plain).unwrap(), Tree::new(&with_nops).unwrap());
        let describe = |tree: &Tree<'_>| -> Vec<Described> {
            tree.nodes()
                .map(|n| {
                    let props = n
                        .properties()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect();
                    (n.name().to_vec(), n.parent_cells(), props)
                })
                .collect()
        };
        assert_eq!(describe(&a), describe(&b));
        assert_eq!(names(a.root().children()), names(b.root().children()));
        assert_eq!(
            b.find(b"serial0").map(|n| n.name()),
            Some(&b"serial@1000"[..])
        );
    }

    // One test per DtbError variant.

    #[test]
    fn truncated() {
        let blob = small().build();
        assert_eq!(Tree::new(&blob[..3]).unwrap_err(), DtbError::Truncated);
        assert_eq!(Tree::new(&blob[..20]).unwrap_err(), DtbError::Truncated);
        assert_eq!(
            Tree::new(&blob[..blob.len() - 1]).unwrap_err(),
            DtbError::Truncated
        );
    }

    #[test]
    fn bad_magic() {
        let mut blob = small().build();
        blob[0] ^= 1;
        assert_eq!(Tree::new(&blob).unwrap_err(), DtbError::BadMagic);
    }

    #[test]
    fn unsupported_version() {
        let mut blob = small().build();
        set_field(&mut blob, 5, 16);
        assert_eq!(
            Tree::new(&blob).unwrap_err(),
            DtbError::UnsupportedVersion(16)
        );
        let mut blob = small().build();
        set_field(&mut blob, 6, 18);
        assert_eq!(
            Tree::new(&blob).unwrap_err(),
            DtbError::UnsupportedVersion(17)
        );
    }

    #[test]
    fn bad_layout() {
        let blob = small().build();
        let cases: [(usize, u32); 5] = [
            (2, 2),        // structure inside the header
            (2, 58),       // structure misaligned
            (9, 0x1_0000), // structure past the end
            (3, u32::MAX), // strings past the end
            (4, 44),       // reservation map misaligned
        ];
        for (field, value) in cases {
            let mut bad = blob.clone();
            set_field(&mut bad, field, value);
            assert_eq!(
                Tree::new(&bad).unwrap_err(),
                DtbError::BadLayout,
                "field {field} = {value}"
            );
        }
    }

    #[test]
    fn unterminated_reservations() {
        let mut blob = small().build();
        let total = blob.len() as u32;
        // The map starts at the end of the blob: no room for its terminator.
        set_field(&mut blob, 4, total & !7);
        blob.resize(blob.len() + 8, 0xff);
        set_field(&mut blob, 1, total + 8);
        assert_eq!(
            Tree::new(&blob).unwrap_err(),
            DtbError::UnterminatedReservations
        );
    }

    #[test]
    fn unknown_token() {
        let mut raw = Raw::new();
        raw.word(7).finish();
        assert_eq!(
            Tree::new(&raw.build()).unwrap_err(),
            DtbError::UnknownToken {
                offset: 8,
                token: 7
            }
        );
    }

    #[test]
    fn unexpected_end() {
        // No FDT_END.
        let mut raw = Raw::new();
        raw.end_node();
        assert_eq!(
            Tree::new(&raw.build()).unwrap_err(),
            DtbError::UnexpectedEnd
        );
        // A property value running past the block.
        let mut raw = Raw::new();
        raw.word(PROP).word(1000).word(0).finish();
        raw.strings.push(0);
        assert_eq!(
            Tree::new(&raw.build()).unwrap_err(),
            DtbError::UnexpectedEnd
        );
        // A node name without its NUL.
        let mut raw = Raw::default();
        raw.word(BEGIN_NODE);
        raw.structure.extend_from_slice(b"abcd");
        assert_eq!(
            Tree::new(&raw.build()).unwrap_err(),
            DtbError::UnexpectedEnd
        );
    }

    #[test]
    fn bad_string_offset() {
        let mut raw = Raw::new();
        raw.word(PROP).word(0).word(99).finish();
        assert_eq!(
            Tree::new(&raw.build()).unwrap_err(),
            DtbError::BadStringOffset { offset: 8 }
        );
        // A name with no NUL before the end of the strings block.
        let mut raw = Raw::new();
        raw.word(PROP).word(0).word(0).finish();
        raw.strings.extend_from_slice(b"name");
        assert_eq!(
            Tree::new(&raw.build()).unwrap_err(),
            DtbError::BadStringOffset { offset: 8 }
        );
    }

    /// The error for a tree whose open root is followed by what `tail` adds.
    fn with_tail(tail: fn(&mut Raw) -> &mut Raw) -> DtbError {
        let mut raw = Raw::new();
        tail(&mut raw);
        Tree::new(&raw.build()).unwrap_err()
    }

    #[test]
    fn unbalanced() {
        // FDT_END with the root still open.
        assert_eq!(with_tail(|r| r.end()), DtbError::Unbalanced { offset: 8 });
        // FDT_END_NODE with no node open.
        assert_eq!(
            with_tail(|r| r.end_node().end_node().end()),
            DtbError::Unbalanced { offset: 12 }
        );
        // A second root.
        assert_eq!(
            with_tail(|r| r.end_node().begin("again").end_node().end()),
            DtbError::Unbalanced { offset: 12 }
        );
        // Data after FDT_END.
        assert_eq!(
            with_tail(|r| r.finish().nop()),
            DtbError::Unbalanced { offset: 12 }
        );
        // No root at all.
        let mut raw = Raw::default();
        raw.nop().end();
        assert_eq!(
            Tree::new(&raw.build()).unwrap_err(),
            DtbError::Unbalanced { offset: 4 }
        );
    }

    #[test]
    fn misplaced_property() {
        let mut raw = Raw::new();
        raw.begin("child").end_node().prop_u32("late", 1).finish();
        assert_eq!(
            Tree::new(&raw.build()).unwrap_err(),
            DtbError::MisplacedProperty { offset: 24 }
        );
        let mut raw = Raw::default();
        raw.prop_u32("outside", 1).begin("").finish();
        assert_eq!(
            Tree::new(&raw.build()).unwrap_err(),
            DtbError::MisplacedProperty { offset: 0 }
        );
    }

    #[test]
    fn too_deep() {
        let nest = |depth: usize| {
            let mut raw = Raw::default();
            for _ in 0..depth {
                raw.begin("n");
            }
            for _ in 0..depth {
                raw.end_node();
            }
            raw.end();
            raw.build()
        };
        let deepest = nest(MAX_DEPTH);
        let tree = Tree::new(&deepest).unwrap();
        assert_eq!(tree.nodes().count(), MAX_DEPTH);
        assert_eq!(
            Tree::new(&nest(MAX_DEPTH + 1)).unwrap_err(),
            DtbError::TooDeep {
                offset: MAX_DEPTH * 8
            }
        );
    }

    #[test]
    fn every_error_has_its_own_text() {
        let errors = [
            DtbError::Truncated,
            DtbError::BadMagic,
            DtbError::UnsupportedVersion(3),
            DtbError::BadLayout,
            DtbError::UnterminatedReservations,
            DtbError::UnknownToken {
                offset: 4,
                token: 7,
            },
            DtbError::UnexpectedEnd,
            DtbError::BadStringOffset { offset: 4 },
            DtbError::Unbalanced { offset: 4 },
            DtbError::MisplacedProperty { offset: 4 },
            DtbError::TooDeep { offset: 4 },
        ];
        let texts: Vec<_> = errors.iter().map(|e| alloc::format!("{e}")).collect();
        for (i, text) in texts.iter().enumerate() {
            assert!(texts[..i].iter().all(|t| t != text), "{text}");
        }
        assert_eq!(texts[5], "unknown token 0x7 at structure offset 0x4");
    }
}
