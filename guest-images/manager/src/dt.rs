//! Finding the control node in the device tree Linux exports under `/proc/device-tree`
//! (docs/control.md, "Where it is"; Devicetree Specification v0.4 §2.3.5 `#address-cells`,
//! `#size-cells`, §2.3.6 `reg`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::protocol::COMPATIBLE;

/// A physical address range from a `reg` property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub base: u64,
    pub size: u64,
}

/// The control node: where its registers and data window are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlNode {
    /// Its directory under the device tree root.
    pub path: PathBuf,
    pub registers: Range,
    pub window: Range,
}

/// Deepest directory level searched, and most directories visited.
const MAX_DEPTH: usize = 8;
const MAX_NODES: usize = 10_000;

/// The `microvisor,control-v1` node under `root` (`/proc/device-tree`), `None` when the tree
/// has none (or no tree is there).
pub fn find_control_node(root: &Path) -> Result<Option<ControlNode>, Error> {
    let mut visited = 0;
    let Some(path) = find_compatible(root, 0, &mut visited) else {
        return Ok(None);
    };
    let parent = path.parent().unwrap_or(root);
    let address_cells = cells(&parent.join("#address-cells"), 2)?;
    let size_cells = cells(&parent.join("#size-cells"), 1)?;
    let reg = fs::read(path.join("reg"))
        .map_err(|e| Error::Interface(format!("{}/reg: {e}", path.display())))?;
    let ranges = parse_reg(&reg, address_cells, size_cells)
        .map_err(|e| Error::Interface(format!("{}/reg: {e}", path.display())))?;
    let names = fs::read(path.join("reg-names")).ok();
    let names: Vec<&[u8]> = names
        .as_deref()
        .map(|n| n.split(|&b| b == 0).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let index_of = |name: &str, default: usize| {
        names
            .iter()
            .position(|n| *n == name.as_bytes())
            .unwrap_or(default)
    };
    let pick = |index: usize, what: &str| {
        ranges.get(index).copied().ok_or_else(|| {
            Error::Interface(format!(
                "{}/reg has no {what} range ({} ranges)",
                path.display(),
                ranges.len()
            ))
        })
    };
    let registers = pick(index_of("registers", 0), "registers")?;
    let window = pick(index_of("window", 1), "window")?;
    Ok(Some(ControlNode {
        path,
        registers,
        window,
    }))
}

/// The first directory under `dir` (depth first, in name order) whose `compatible` lists
/// [`COMPATIBLE`].
fn find_compatible(dir: &Path, depth: usize, visited: &mut usize) -> Option<PathBuf> {
    *visited += 1;
    if depth > MAX_DEPTH || *visited > MAX_NODES {
        return None;
    }
    if let Ok(compatible) = fs::read(dir.join("compatible"))
        && compatible
            .split(|&b| b == 0)
            .any(|c| c == COMPATIBLE.as_bytes())
    {
        return Some(dir.to_path_buf());
    }
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    children
        .iter()
        .find_map(|child| find_compatible(child, depth + 1, visited))
}

/// A one-cell property (`#address-cells`), or `default` when absent.
fn cells(path: &Path, default: u32) -> Result<u32, Error> {
    match fs::read(path) {
        Ok(bytes) if bytes.len() == 4 => {
            Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        }
        Ok(bytes) => Err(Error::Interface(format!(
            "{} has {} bytes, not one cell",
            path.display(),
            bytes.len()
        ))),
        Err(_) => Ok(default),
    }
}

/// The (base, size) pairs of a `reg` value with the parent's cell counts (big-endian cells;
/// at most two cells each, 64-bit values).
pub fn parse_reg(reg: &[u8], address_cells: u32, size_cells: u32) -> Result<Vec<Range>, String> {
    if !(1..=2).contains(&address_cells) || size_cells > 2 {
        return Err(format!(
            "#address-cells = {address_cells}, #size-cells = {size_cells} (1-2 and 0-2 supported)"
        ));
    }
    let entry = (address_cells + size_cells) as usize * 4;
    if reg.is_empty() || reg.len() % entry != 0 {
        return Err(format!(
            "{} bytes, not a multiple of {entry}-byte entries",
            reg.len()
        ));
    }
    Ok(reg
        .chunks(entry)
        .map(|e| {
            let (base, size) = e.split_at(address_cells as usize * 4);
            Range {
                base: be_cells(base),
                size: be_cells(size),
            }
        })
        .collect())
}

fn be_cells(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0, |value, &b| (value << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_tree(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "microvisor-control-dt-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: PathBuf, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    fn cells_bytes(cells: &[u32]) -> Vec<u8> {
        cells.iter().flat_map(|c| c.to_be_bytes()).collect()
    }

    /// The node docs/control.md shows, under a root with 2/2 cells.
    fn doc_tree(name: &str) -> PathBuf {
        let root = temp_tree(name);
        write(root.join("#address-cells"), &cells_bytes(&[2]));
        write(root.join("#size-cells"), &cells_bytes(&[2]));
        write(
            root.join("pl011@9000000/compatible"),
            b"arm,pl011\0arm,primecell\0",
        );
        write(
            root.join("control@a000000/compatible"),
            b"microvisor,control-v1\0",
        );
        write(
            root.join("control@a000000/reg"),
            &cells_bytes(&[0, 0x0a00_0000, 0, 0x1000, 0, 0x0a20_0000, 0, 0x20_0000]),
        );
        write(
            root.join("control@a000000/reg-names"),
            b"registers\0window\0",
        );
        root
    }

    #[test]
    fn the_documented_node_is_found() {
        let root = doc_tree("doc");
        let node = find_control_node(&root).unwrap().unwrap();
        assert_eq!(node.path, root.join("control@a000000"));
        assert_eq!(
            node.registers,
            Range {
                base: 0x0a00_0000,
                size: 0x1000
            }
        );
        assert_eq!(
            node.window,
            Range {
                base: 0x0a20_0000,
                size: 0x20_0000
            }
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn reg_names_decide_which_range_is_which() {
        let root = doc_tree("names");
        write(
            root.join("control@a000000/reg-names"),
            b"window\0registers\0",
        );
        let node = find_control_node(&root).unwrap().unwrap();
        assert_eq!(node.registers.base, 0x0a20_0000);
        assert_eq!(node.window.base, 0x0a00_0000);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_tree_without_the_node_has_none() {
        let root = doc_tree("none");
        fs::remove_dir_all(root.join("control@a000000")).unwrap();
        assert_eq!(find_control_node(&root).unwrap(), None);
        assert_eq!(
            find_control_node(&root.join("missing")).unwrap(),
            None,
            "no device tree at all"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_node_deeper_down_uses_its_parents_cells() {
        let root = temp_tree("deep");
        write(root.join("soc/#address-cells"), &cells_bytes(&[1]));
        write(root.join("soc/#size-cells"), &cells_bytes(&[1]));
        write(
            root.join("soc/ctl@0/compatible"),
            b"vendor,other\0microvisor,control-v1\0",
        );
        write(
            root.join("soc/ctl@0/reg"),
            &cells_bytes(&[0x1000, 0x1000, 0x20_0000, 0x20_0000]),
        );
        let node = find_control_node(&root).unwrap().unwrap();
        assert_eq!(
            node.registers,
            Range {
                base: 0x1000,
                size: 0x1000
            }
        );
        assert_eq!(
            node.window,
            Range {
                base: 0x20_0000,
                size: 0x20_0000
            }
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn malformed_reg_values_are_errors() {
        let root = doc_tree("bad");
        write(root.join("control@a000000/reg"), &cells_bytes(&[0, 1, 0]));
        let err = find_control_node(&root).unwrap_err().to_string();
        assert!(err.contains("not a multiple"), "{err}");
        write(
            root.join("control@a000000/reg"),
            &cells_bytes(&[0, 1, 0, 2]),
        );
        let err = find_control_node(&root).unwrap_err().to_string();
        assert!(err.contains("no window range"), "{err}");
        write(root.join("#size-cells"), &cells_bytes(&[3]));
        assert!(find_control_node(&root).is_err());
        write(root.join("#size-cells"), b"\0\0");
        assert!(find_control_node(&root).is_err());
        fs::remove_dir_all(root).unwrap();
        assert!(parse_reg(&[], 2, 2).is_err());
        assert!(parse_reg(&[0; 8], 0, 2).is_err());
    }
}
