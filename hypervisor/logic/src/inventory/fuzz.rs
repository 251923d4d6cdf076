//! Malformed firmware device trees: seeded mutations of QEMU virt's own tree, of the tree QEMU
//! hands over with `-dtb` and of a generated one (bit flips, truncation, bogus lengths, offsets
//! and header fields, FDT_NOP insertion, odd `#address-cells`/`#size-cells`, deep nesting,
//! missing terminators, dropped and duplicated tokens), and random `iommu-map`, `msi-map` and
//! SMMU `interrupts` values. Reading the inventory must return `Ok`
//! or `Err` and never panic; every lookup on a tree that validates must terminate; NOPs
//! inserted anywhere change nothing. Deterministic: a failure names its seed and case.

use alloc::string::String;
use alloc::vec::Vec as AllocVec;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::tests::{QEMU_VIRT, QEMU_VIRT_HANDOVER, QEMU_VIRT_SMMUV3, SMMU_PHANDLE, VirtTree};
use super::*;
use crate::testing::Rng;

fn be32_at(blob: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(blob.get(at..at + 4)?.try_into().ok()?))
}

fn set_be32(blob: &mut [u8], at: usize, value: u32) {
    if let Some(word) = blob.get_mut(at..at + 4) {
        word.copy_from_slice(&value.to_be_bytes());
    }
}

/// Header field `index` (1 = totalsize, 2 = off_dt_struct, 3 = off_dt_strings, 9 = size_dt_struct).
fn field(blob: &[u8], index: usize) -> usize {
    be32_at(blob, index * 4).unwrap_or(0) as usize
}

/// One token of a well-formed blob, as this test sees it (independently of `dtb`).
#[derive(Clone, Copy, Debug)]
struct Tok {
    /// Offset in the blob.
    at: usize,
    /// Bytes, padding included.
    len: usize,
    code: u32,
}

/// The tokens of `blob`'s structure block, if it is walkable.
fn tokens(blob: &[u8]) -> Option<AllocVec<Tok>> {
    let start = field(blob, 2);
    let end = start.checked_add(field(blob, 9))?;
    let mut at = start;
    let mut list = AllocVec::new();
    while at < end {
        let code = be32_at(blob, at)?;
        let len = match code {
            1 => {
                let name = blob.get(at + 4..end)?;
                let nul = name.iter().position(|&b| b == 0)?;
                4 + (nul + 1).div_ceil(4) * 4
            }
            3 => 12 + (be32_at(blob, at + 4)? as usize).div_ceil(4) * 4,
            2 | 4 | 9 => 4,
            _ => return None,
        };
        if at.checked_add(len)? > end.min(blob.len()) {
            return None;
        }
        list.push(Tok { at, len, code });
        at += len;
    }
    Some(list)
}

/// Replaces `remove` bytes at blob offset `at` (inside the structure block) by `insert`, and
/// fixes the header: the structure size, the total size and every block after the structure.
fn splice(blob: &[u8], at: usize, remove: usize, insert: &[u8]) -> AllocVec<u8> {
    let mut out = blob.to_vec();
    let at = at.min(out.len());
    let end = (at + remove).min(out.len());
    out.splice(at..end, insert.iter().copied());
    let delta = insert.len() as i64 - (end - at) as i64;
    let shift = |v: usize| (v as i64 + delta).max(0) as u32;
    let off_struct = field(blob, 2);
    set_be32(&mut out, 4, shift(field(blob, 1)));
    set_be32(&mut out, 36, shift(field(blob, 9)));
    for index in [3, 4] {
        if field(blob, index) > off_struct {
            set_be32(&mut out, index * 4, shift(field(blob, index)));
        }
    }
    out
}

/// A value likely to break a length or offset near `around`.
fn nasty(rng: &mut Rng, around: usize) -> u32 {
    let around = around as u32;
    match rng.index(8) {
        0 => 0,
        1 => u32::MAX,
        2 => u32::MAX - rng.index(8) as u32,
        3 => around.wrapping_add(1 + rng.index(8) as u32),
        4 => around.wrapping_sub(1 + rng.index(8) as u32),
        5 => 0x8000_0000,
        6 => rng.index(64) as u32,
        _ => rng.next() as u32,
    }
}

/// Applies one random mutation to `blob`; returns its description.
fn mutate(rng: &mut Rng, blob: &mut AllocVec<u8>) -> String {
    let toks = tokens(blob).unwrap_or_default();
    let pick_tok = |rng: &mut Rng, code: Option<u32>| -> Option<Tok> {
        let matching: AllocVec<Tok> = toks
            .iter()
            .copied()
            .filter(|t| code.is_none_or(|c| t.code == c))
            .collect();
        (!matching.is_empty()).then(|| rng.pick(&matching))
    };
    let len = blob.len();
    match rng.index(15) {
        0 => {
            let flips = 1 + rng.index(8);
            for _ in 0..flips {
                let at = rng.index(len);
                if let Some(b) = blob.get_mut(at) {
                    *b ^= 1 << rng.index(8);
                }
            }
            alloc::format!("{flips} bit flips")
        }
        1 => {
            let at = rng.index(len);
            let count = 1 + rng.index(16);
            let special = rng.pick(&[0u8, 0xff, 1, 2, 3, 4, 9]);
            for b in blob.iter_mut().skip(at).take(count) {
                *b = if rng.index(2) == 0 {
                    special
                } else {
                    rng.next() as u8
                };
            }
            alloc::format!("{count} bytes overwritten at {at:#x}")
        }
        2 => {
            let keep = rng.index(len);
            blob.truncate(keep);
            if rng.index(2) == 0 {
                set_be32(blob, 4, keep as u32);
                alloc::format!("truncated to {keep} with totalsize fixed")
            } else {
                alloc::format!("truncated to {keep}")
            }
        }
        3 => {
            let index = 1 + rng.index(9);
            let value = nasty(rng, field(blob, index));
            set_be32(blob, index * 4, value);
            alloc::format!("header field {index} = {value:#x}")
        }
        4 => match pick_tok(rng, Some(3)) {
            Some(t) => {
                let value = nasty(rng, be32_at(blob, t.at + 4).unwrap_or(0) as usize);
                set_be32(blob, t.at + 4, value);
                alloc::format!("property length at {:#x} = {value:#x}", t.at)
            }
            None => "no property to break".into(),
        },
        5 => match pick_tok(rng, Some(3)) {
            Some(t) => {
                let value = nasty(rng, field(blob, 8));
                set_be32(blob, t.at + 8, value);
                alloc::format!("property name offset at {:#x} = {value:#x}", t.at)
            }
            None => "no property to break".into(),
        },
        6 => {
            let count = 1 + rng.index(20);
            insert_nops(rng, blob, &toks, count);
            alloc::format!("{count} NOPs inserted")
        }
        7 => match pick_tok(rng, None) {
            Some(t) => {
                let whole = rng.index(2) == 0;
                let words = if whole { t.len / 4 } else { 1 };
                for i in 0..words {
                    set_be32(blob, t.at + 4 * i, 4);
                }
                alloc::format!("token at {:#x} NOPed ({} words)", t.at, words)
            }
            None => "no token to NOP".into(),
        },
        8 => {
            let cells = find_cells_properties(blob, &toks);
            match cells.is_empty() {
                true => "no cells property".into(),
                false => {
                    let at = rng.pick(&cells);
                    let random = rng.next() as u32;
                    let value = rng.pick(&[0, 1, 2, 3, 4, 0xffff_ffff, random]);
                    set_be32(blob, at, value);
                    alloc::format!("cells value at {at:#x} = {value:#x}")
                }
            }
        }
        9 => {
            let depth = 1 + rng.index(2 * crate::dtb::MAX_DEPTH + 8);
            let boundary = node_boundary(rng, &toks, blob);
            let mut nest = AllocVec::new();
            for i in 0..depth {
                nest.extend_from_slice(&1u32.to_be_bytes());
                nest.extend_from_slice(alloc::format!("n{}", i % 10).as_bytes());
                nest.extend_from_slice(&[0, 0]);
            }
            for _ in 0..depth {
                nest.extend_from_slice(&2u32.to_be_bytes());
            }
            *blob = splice(blob, boundary, 0, &nest);
            alloc::format!("{depth} nested nodes at {boundary:#x}")
        }
        10 => {
            let code = rng.pick(&[1u32, 2, 9, 3]);
            match pick_tok(rng, Some(code)) {
                Some(t) => {
                    *blob = splice(blob, t.at, t.len, &[]);
                    alloc::format!("token {code} at {:#x} dropped", t.at)
                }
                None => "no token to drop".into(),
            }
        }
        11 => match pick_tok(rng, Some(1)) {
            Some(t) if t.len > 4 => {
                for b in blob.iter_mut().skip(t.at + 4).take(t.len - 4) {
                    *b = b'x';
                }
                alloc::format!("name at {:#x} lost its NUL", t.at)
            }
            _ => {
                let strings = field(blob, 3);
                let end = (strings + field(blob, 8)).min(len);
                for b in blob.iter_mut().take(end).skip(strings) {
                    if *b == 0 {
                        *b = b'y';
                    }
                }
                "strings lost their NULs".into()
            }
        },
        12 => {
            let map = field(blob, 4);
            for b in blob.iter_mut().skip(map).take(16) {
                *b = 0xa5;
            }
            "reservation map terminator overwritten".into()
        }
        13 => {
            if toks.len() < 2 {
                return "too few tokens to duplicate".into();
            }
            let from = rng.index(toks.len());
            let to = (from + 1 + rng.index(8)).min(toks.len());
            let start = toks[from].at;
            let end = toks[to - 1].at + toks[to - 1].len;
            let copy = blob[start..end].to_vec();
            let at = rng.pick(&toks).at;
            *blob = splice(blob, at, 0, &copy);
            alloc::format!("tokens {from}..{to} duplicated at {at:#x}")
        }
        _ => {
            // An unknown token, or a valid one where it does not belong.
            match pick_tok(rng, None) {
                Some(t) => {
                    let random = rng.next() as u32;
                    let code = rng.pick(&[0u32, 5, 8, 10, 1, 2, 3, 9, random]);
                    *blob = splice(blob, t.at, 0, &code.to_be_bytes());
                    alloc::format!("token {code:#x} inserted at {:#x}", t.at)
                }
                None => "no token".into(),
            }
        }
    }
}

/// Inserts `count` NOP tokens at random token boundaries (before any token, including the
/// root's FDT_BEGIN_NODE and the final FDT_END).
fn insert_nops(rng: &mut Rng, blob: &mut AllocVec<u8>, toks: &[Tok], count: usize) {
    if toks.is_empty() {
        return;
    }
    let mut places: AllocVec<usize> = (0..count).map(|_| rng.pick(toks).at).collect();
    // From the back, so earlier offsets stay valid.
    places.sort_unstable_by(|a, b| b.cmp(a));
    for at in places {
        *blob = splice(blob, at, 0, &4u32.to_be_bytes());
    }
}

/// Offset of a token boundary between nodes (before an FDT_BEGIN_NODE or FDT_END_NODE that is
/// not the root's), where a node may be inserted.
fn node_boundary(rng: &mut Rng, toks: &[Tok], blob: &[u8]) -> usize {
    let candidates: AllocVec<usize> = toks
        .iter()
        .skip(1)
        .filter(|t| t.code == 1 || t.code == 2)
        .map(|t| t.at)
        .collect();
    if candidates.is_empty() {
        field(blob, 2)
    } else {
        rng.pick(&candidates)
    }
}

/// Offsets of the values of every `#address-cells` and `#size-cells` property.
fn find_cells_properties(blob: &[u8], toks: &[Tok]) -> AllocVec<usize> {
    let strings = field(blob, 3);
    toks.iter()
        .filter(|t| t.code == 3)
        .filter(|t| {
            let name_at = strings + be32_at(blob, t.at + 8).unwrap_or(0) as usize;
            let name = blob.get(name_at..).unwrap_or_default();
            name.starts_with(b"#address-cells\0") || name.starts_with(b"#size-cells\0")
        })
        .map(|t| t.at + 12)
        .collect()
}

/// What a reader can ask of a tree: each node's name, parent cells and properties, the root's
/// children, a few paths. Must terminate on any tree that validates.
fn describe(tree: &crate::dtb::Tree<'_>) -> AllocVec<(AllocVec<u8>, crate::dtb::Cells, usize)> {
    let mut out = AllocVec::new();
    for node in tree.nodes() {
        let props = node.properties().count();
        let _ = node.is_available();
        let _ = node.is_compatible("arm,pl011");
        out.push((node.name().to_vec(), node.parent_cells(), props));
    }
    let _ = tree.root().children().count();
    for path in [
        &b"/cpus"[..],
        b"/memory",
        b"/chosen",
        b"serial0",
        b"/psci",
        b"/a/b/c",
    ] {
        let _ = tree.find(path);
    }
    out
}

/// Reads `blob` every way boot does; panics (with `case`) if any of it panics or an accepted
/// inventory breaks its invariants.
fn read_everything(blob: &[u8], case: &str) -> Result<Inventory, InventoryError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let result = Inventory::from_dtb(blob);
        let _ = Salvage::from_dtb(blob);
        if let Ok(tree) = crate::dtb::Tree::new(blob) {
            let _ = describe(&tree);
        }
        result
    }));
    let result = outcome.unwrap_or_else(|_| panic!("panicked on {case}"));
    if let Ok(inv) = &result {
        assert!(!inv.cpus.is_empty(), "{case}: no cpus accepted");
        assert!(!inv.ram.is_empty(), "{case}: no RAM accepted");
        assert!(
            inv.ram.windows(2).all(|w| w[0].base <= w[1].base),
            "{case}: RAM not sorted"
        );
        assert!(inv.ram.iter().all(|r| r.size > 0), "{case}: empty RAM bank");
        // Every requester ID maps to some ID or to none, without panicking.
        for rid in [0u16, 1, 0x8, 0xff, 0x100, 0x7fff, 0xffff] {
            let _ = inv.stream_id(rid);
            let _ = inv.pcie.map(|p| p.its_device_id(rid));
        }
    }
    result
}

fn bases() -> [(&'static str, AllocVec<u8>); 5] {
    let mut with_smmu = VirtTree::new(4, 1 << 30);
    with_smmu.smmu = true;
    with_smmu.msi_map = Some(alloc::vec![0, 0x800a, 0, 0x10000]);
    [
        ("qemu-virt", QEMU_VIRT.to_vec()),
        ("qemu-virt handed over", QEMU_VIRT_HANDOVER.to_vec()),
        ("generated", VirtTree::new(4, 1 << 30).build()),
        ("qemu-virt with smmuv3", QEMU_VIRT_SMMUV3.to_vec()),
        ("generated with smmuv3", with_smmu.build()),
    ]
}

/// The error's variant name, without its payload (`Malformed(UnknownToken`).
fn kind(error: &InventoryError) -> String {
    let text = alloc::format!("{error:?}");
    let cut = text
        .match_indices(['(', ' ', '{'])
        .nth(1)
        .map_or(text.len(), |(i, _)| i);
    text[..cut].into()
}

#[test]
fn malformed_trees_never_panic() {
    let mut accepted = 0;
    let mut refused = std::collections::BTreeMap::<String, u32>::new();
    for (seed, (name, base)) in bases().into_iter().enumerate() {
        assert!(
            Inventory::from_dtb(&base).is_ok(),
            "{name} must be readable"
        );
        let mut rng = Rng(0x5eed_0000 + seed as u64);
        for case in 0..4000 {
            let mut blob = base.clone();
            let mut what = AllocVec::new();
            for _ in 0..1 + rng.index(3) {
                what.push(mutate(&mut rng, &mut blob));
            }
            let label = alloc::format!("{name} seed {seed} case {case}: {}", what.join(", "));
            match read_everything(&blob, &label) {
                Ok(_) => accepted += 1,
                Err(e) => *refused.entry(kind(&e)).or_default() += 1,
            }
        }
    }
    // The mutations must reach both outcomes and most ways of failing (every DtbError
    // variant, missing devices, unreadable properties), or the test proves little.
    assert!(accepted > 500, "only {accepted} mutated trees accepted");
    assert!(refused.len() >= 15, "refusals reached: {refused:#?}");
}

#[test]
fn nops_anywhere_read_the_same() {
    for (seed, (name, base)) in bases().into_iter().enumerate() {
        let expected = Inventory::from_dtb(&base).unwrap();
        let expected_tree = describe(&crate::dtb::Tree::new(&base).unwrap());
        let toks = tokens(&base).unwrap();
        let mut rng = Rng(0x0a0a_0000 + seed as u64);
        for case in 0..300 {
            let mut blob = base.clone();
            let count = 1 + rng.index(64);
            insert_nops(&mut rng, &mut blob, &toks, count);
            let label = alloc::format!("{name} case {case}: {count} NOPs");
            assert_eq!(
                read_everything(&blob, &label),
                Ok(expected.clone()),
                "{label}"
            );
            let tree = crate::dtb::Tree::new(&blob).unwrap();
            assert_eq!(describe(&tree), expected_tree, "{label}");
        }
    }
}

#[test]
fn odd_cell_sizes_are_errors_not_panics() {
    let base = QEMU_VIRT.to_vec();
    let toks = tokens(&base).unwrap();
    let cells = find_cells_properties(&base, &toks);
    assert!(cells.len() >= 4, "QEMU's tree has cell properties");
    for &at in &cells {
        for value in [0, 3, 4, 0x10, 0xffff_ffff] {
            let mut blob = base.clone();
            set_be32(&mut blob, at, value);
            let _ = read_everything(&blob, &alloc::format!("cells at {at:#x} = {value}"));
        }
    }
    // The root's own cells decide how RAM reads: 3 cells are refused by name.
    let mut blob = base.clone();
    set_be32(&mut blob, cells[0], 3);
    assert!(matches!(
        Inventory::from_dtb(&blob),
        Err(InventoryError::Unreadable(_))
    ));
}

#[test]
fn every_truncation_is_refused() {
    let base = QEMU_VIRT.to_vec();
    // Past the strings block there is only padding.
    let used = field(&base, 3) + field(&base, 8);
    for keep in 0..used {
        let mut blob = base[..keep].to_vec();
        assert_eq!(
            read_everything(&blob, &alloc::format!("truncated to {keep}")),
            Err(InventoryError::Malformed(crate::dtb::DtbError::Truncated)),
        );
        // With totalsize claiming exactly what is left, it is still never accepted.
        if keep >= 8 {
            set_be32(&mut blob, 4, keep as u32);
            assert!(read_everything(&blob, &alloc::format!("cut to {keep}")).is_err());
        }
    }
}

/// A random `iommu-map`/`msi-map` value: usually whole entries with edge-case numbers,
/// sometimes a ragged length.
fn random_map(rng: &mut Rng) -> AllocVec<u32> {
    let entries = rng.index(MAX_ID_MAP_ENTRIES + 3);
    let mut cells = AllocVec::new();
    let edge = |rng: &mut Rng| {
        let random = rng.next() as u32;
        rng.pick(&[
            0u32,
            1,
            0xff,
            0x100,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x8000_0000,
            random,
        ])
    };
    for _ in 0..entries {
        let random = rng.next() as u32;
        let target = rng.pick(&[SMMU_PHANDLE, 0x800a, 0, random]);
        cells.extend([edge(rng), target, edge(rng), edge(rng)]);
    }
    if rng.index(4) == 0 {
        for _ in 0..1 + rng.index(3) {
            cells.push(edge(rng));
        }
    }
    cells
}

#[test]
fn random_id_maps_never_panic_and_map_within_their_ranges() {
    let mut rng = Rng(0x1033_0000);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..1500 {
        let mut tree = VirtTree::new(1, 1 << 30);
        tree.smmu = true;
        tree.iommu_map = random_map(&mut rng);
        tree.msi_map = (rng.index(2) == 0).then(|| random_map(&mut rng));
        let label = alloc::format!(
            "case {case}: iommu-map {:x?} msi-map {:x?}",
            tree.iommu_map,
            tree.msi_map
        );
        match read_everything(&tree.build(), &label) {
            Ok(inv) => {
                accepted += 1;
                let map = inv.pcie.unwrap().iommu_map.unwrap();
                for _ in 0..32 {
                    let rid = rng.next() as u16;
                    if let Some(m) = map.map(rid) {
                        let entry = map
                            .entries()
                            .iter()
                            .find(|e| {
                                u32::from(rid) >= e.rid_base
                                    && u32::from(rid) - e.rid_base < e.length
                            })
                            .unwrap_or_else(|| panic!("{label}: {rid:#x} mapped by no entry"));
                        assert_eq!(m.id - entry.out_base, u32::from(rid) - entry.rid_base);
                    }
                }
            }
            Err(e) => {
                assert!(matches!(e, InventoryError::Unreadable(_)), "{label}: {e:?}");
                refused += 1;
            }
        }
    }
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}
