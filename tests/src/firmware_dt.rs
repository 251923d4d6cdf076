//! Device trees handed to the image with QEMU's `-dtb`, as a loader or firmware would: QEMU's
//! own tree for the scenario's node (dumped with the same machine options), as is, recompiled
//! by `dtc`, or edited to be unusable. The edits walk the structure block here, independently
//! of the hypervisor's reader (Devicetree Specification v0.4 §5.4).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use xtask::qemu::Boot;
use xtask::setup::DTC;

/// The tree a scenario hands over with `-dtb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareTree {
    /// QEMU's own tree for the node, unchanged.
    QemuDump,
    /// QEMU's own tree decompiled to source and compiled back by `dtc`.
    Recompiled,
    /// QEMU's own tree with the root's child node of this name (and its subtree) turned into
    /// FDT_NOP tokens, the way QEMU itself deletes nodes.
    Without(&'static str),
    /// QEMU's own tree with the first property of the root's child node of this name naming
    /// itself by an offset outside the strings block: a malformed tree that QEMU still loads.
    BadPropertyName(&'static str),
}

/// Writes the tree for `boot` to `out` (QEMU's dump goes next to it, `.qemu.dtb`).
pub fn prepare(tree: FirmwareTree, boot: &Boot<'_>, out: &Path) -> PathBuf {
    let dump = out.with_extension("qemu.dtb");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("creating the device tree directory");
    }
    boot.dump_dtb(&dump)
        .unwrap_or_else(|e| panic!("dumping QEMU's device tree: {e:#}"));
    let blob = std::fs::read(&dump).expect("reading QEMU's device tree");
    match tree {
        FirmwareTree::QemuDump => return dump,
        FirmwareTree::Recompiled => recompile(&dump, out),
        FirmwareTree::Without(name) => {
            std::fs::write(out, without_node(&blob, name)).expect("writing the edited tree")
        }
        FirmwareTree::BadPropertyName(name) => {
            std::fs::write(out, with_bad_property_name(&blob, name))
                .expect("writing the edited tree")
        }
    }
    out.to_path_buf()
}

/// `dtc -I dtb -O dts`, then `dtc -I dts -O dtb`.
fn recompile(dump: &Path, out: &Path) {
    static DTC_READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) =
        DTC_READY.get_or_init(|| xtask::setup::ensure_dtc().map_err(|e| format!("{e:#}")))
    {
        panic!("{why}");
    }
    let source = out.with_extension("dts");
    for (from, to, input, output) in [
        ("dtb", "dts", dump, &source),
        ("dts", "dtb", &source, &out.to_path_buf()),
    ] {
        let result = Command::new(DTC)
            .args(["-q", "-I", from, "-O", to, "-o"])
            .arg(output)
            .arg(input)
            .output()
            .unwrap_or_else(|e| panic!("starting {DTC}: {e}"));
        assert!(
            result.status.success(),
            "{DTC} -I {from} -O {to} {} failed: {}",
            input.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

fn word(blob: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(blob[at..at + 4].try_into().expect("4 bytes"))
}

/// One token of a well-formed structure block: offset in the blob, length with padding, code,
/// depth after it, and the node name for FDT_BEGIN_NODE.
struct Token {
    at: usize,
    len: usize,
    code: u32,
    depth: usize,
    name: Vec<u8>,
}

/// The tokens of `blob` (panics on anything malformed: only QEMU's own trees come here).
fn tokens(blob: &[u8]) -> Vec<Token> {
    assert_eq!(word(blob, 0), 0xd00d_feed, "not a flattened device tree");
    let mut at = word(blob, 8) as usize;
    let mut depth = 0;
    let mut list = Vec::new();
    loop {
        let code = word(blob, at);
        let mut name = Vec::new();
        let len = match code {
            BEGIN_NODE => {
                depth += 1;
                let rest = &blob[at + 4..];
                name = rest[..rest.iter().position(|&b| b == 0).expect("NUL")].to_vec();
                4 + (name.len() + 1).div_ceil(4) * 4
            }
            END_NODE => {
                depth -= 1;
                4
            }
            PROP => 12 + (word(blob, at + 4) as usize).div_ceil(4) * 4,
            NOP | END => 4,
            other => panic!("token {other:#x} in QEMU's tree"),
        };
        list.push(Token {
            at,
            len,
            code,
            depth,
            name,
        });
        if code == END {
            return list;
        }
        at += len;
    }
}

/// The index of the FDT_BEGIN_NODE of the root's child `name`.
fn root_child(tokens: &[Token], name: &str) -> usize {
    tokens
        .iter()
        .position(|t| t.code == BEGIN_NODE && t.depth == 2 && t.name == name.as_bytes())
        .unwrap_or_else(|| panic!("QEMU's tree has no /{name}"))
}

/// `blob` with the root's child `name` replaced by FDT_NOP tokens.
pub fn without_node(blob: &[u8], name: &str) -> Vec<u8> {
    let tokens = tokens(blob);
    let first = root_child(&tokens, name);
    let last = first
        + tokens[first..]
            .iter()
            .position(|t| t.code == END_NODE && t.depth == 1)
            .expect("the node ends");
    let (start, end) = (tokens[first].at, tokens[last].at + tokens[last].len);
    let mut out = blob.to_vec();
    for at in (start..end).step_by(4) {
        out[at..at + 4].copy_from_slice(&NOP.to_be_bytes());
    }
    out
}

/// `blob` with the name offset of the first property of the root's child `name` pointing past
/// the strings block.
pub fn with_bad_property_name(blob: &[u8], name: &str) -> Vec<u8> {
    let tokens = tokens(blob);
    let node = root_child(&tokens, name);
    let property = &tokens[node + 1];
    assert_eq!(property.code, PROP, "/{name} has no property first");
    let mut out = blob.to_vec();
    let past_strings = word(blob, 32) + 0x1000;
    out[property.at + 8..property.at + 12].copy_from_slice(&past_strings.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root with `#size-cells`, child `a` (one property, one grandchild) and child `b`.
    fn tree() -> Vec<u8> {
        let strings = b"#size-cells\0reg\0".to_vec();
        let mut s = Vec::new();
        let mut w = |v: u32| s.extend_from_slice(&v.to_be_bytes());
        w(BEGIN_NODE);
        w(0);
        w(PROP);
        w(4);
        w(0);
        w(2);
        w(BEGIN_NODE);
        w(u32::from_be_bytes(*b"a\0\0\0"));
        w(PROP);
        w(4);
        w(12);
        w(7);
        w(BEGIN_NODE);
        w(u32::from_be_bytes(*b"c\0\0\0"));
        w(END_NODE);
        w(END_NODE);
        w(BEGIN_NODE);
        w(u32::from_be_bytes(*b"b\0\0\0"));
        w(END_NODE);
        w(END_NODE);
        w(END);
        let off_struct = 40 + 16;
        let off_strings = off_struct + s.len();
        let total = off_strings + strings.len();
        let mut blob = Vec::new();
        for v in [
            0xd00d_feed,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            40,
            17,
            16,
            0,
            strings.len() as u32,
            s.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_be_bytes());
        }
        blob.extend_from_slice(&[0; 16]);
        blob.extend_from_slice(&s);
        blob.extend_from_slice(&strings);
        blob
    }

    fn codes(blob: &[u8]) -> Vec<u32> {
        tokens(blob).iter().map(|t| t.code).collect()
    }

    #[test]
    fn removing_a_node_nops_exactly_its_subtree() {
        let blob = tree();
        let out = without_node(&blob, "a");
        assert_eq!(out.len(), blob.len());
        // Root, its property, then a's 10 words as NOPs, then b untouched.
        let mut expected = vec![BEGIN_NODE, PROP];
        expected.extend([NOP; 10]);
        expected.extend([BEGIN_NODE, END_NODE, END_NODE, END]);
        assert_eq!(codes(&out), expected);
        assert_eq!(codes(&without_node(&blob, "b"))[..6], codes(&blob)[..6]);
    }

    #[test]
    fn a_bad_property_name_points_past_the_strings() {
        let blob = tree();
        let out = without_node(&with_bad_property_name(&blob, "a"), "b");
        let tokens = tokens(&out);
        let property = &tokens[root_child(&tokens, "a") + 1];
        assert_eq!(word(&out, property.at + 8), 16 + 0x1000);
    }

    #[test]
    #[should_panic(expected = "QEMU's tree has no /nosuch")]
    fn a_missing_node_is_a_harness_error() {
        without_node(&tree(), "nosuch");
    }
}
