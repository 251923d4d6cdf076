//! What the Linux guest's disk steps (`microvisor.disk=...`, see `xtask/src/linux/init.sh`)
//! left in a node's disk file, read on the host after the run: every 4 KiB block they write is
//! one line `MVDISK <slice> <region> <block>` padded with spaces to 4095 bytes plus `\n`, so
//! the host can tell which slice wrote it and where that slice meant it to go.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use microvisor_plan::DiskShare;

/// Bytes per block the disk steps write.
pub const GUEST_BLOCK: u64 = 4096;
/// How each such block starts.
const MAGIC: &[u8] = b"MVDISK ";

/// One block written by a slice, found in the disk file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestBlock {
    /// Byte offset in the disk file (the physical namespace).
    pub offset: u64,
    pub slice: String,
    pub region: String,
    /// The block number in the slice's own namespace (4 KiB blocks).
    pub block: u64,
    /// The padding and the final newline are exactly as written.
    pub intact: bool,
}

/// The line a guest writes as block `block` of `region`.
pub fn guest_block(slice: &str, region: &str, block: u64) -> Vec<u8> {
    let label = format!("MVDISK {slice} {region} {block}");
    format!("{label:<4095}\n").into_bytes()
}

/// Every 4 KiB-aligned block of the file that starts with `MVDISK `, in file order.
pub fn scan(path: &Path) -> std::io::Result<Vec<GuestBlock>> {
    let mut file = std::fs::File::open(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut found = Vec::new();
    let mut base = 0u64;
    loop {
        let mut filled = 0;
        while filled < chunk.len() {
            match file.read(&mut chunk[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        for (i, block) in chunk[..filled].chunks(GUEST_BLOCK as usize).enumerate() {
            if block.starts_with(MAGIC) {
                found.push(parse(base + i as u64 * GUEST_BLOCK, block));
            }
        }
        if filled < chunk.len() {
            return Ok(found);
        }
        base += filled as u64;
    }
}

fn parse(offset: u64, bytes: &[u8]) -> GuestBlock {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(bytes);
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace().skip(1);
    let slice = words.next().unwrap_or("").to_string();
    let region = words.next().unwrap_or("").to_string();
    let block = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(u64::MAX);
    let intact = bytes == guest_block(&slice, &region, block).as_slice();
    GuestBlock {
        offset,
        slice,
        region,
        block,
        intact,
    }
}

/// Checks that every guest block sits where its slice's window puts it (window start +
/// block * 4 KiB, inside the window) and is intact. `windows` maps slice names to their shares
/// (`block_bytes` per physical block). Returns one line per problem.
pub fn misplaced(
    blocks: &[GuestBlock],
    windows: &BTreeMap<String, DiskShare>,
    block_bytes: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    for b in blocks {
        let Some(share) = windows.get(&b.slice) else {
            problems.push(format!("{b:?}: written by no slice with a disk window"));
            continue;
        };
        let start = share.first_block * block_bytes;
        let end = start + share.blocks * block_bytes;
        let expected = b
            .block
            .checked_mul(GUEST_BLOCK)
            .and_then(|o| o.checked_add(start));
        if expected != Some(b.offset) || b.offset + GUEST_BLOCK > end {
            problems.push(format!(
                "slice {}'s block {} ({}) is at disk byte {:#x}; its window is {start:#x}-{end:#x}",
                b.slice, b.block, b.region, b.offset
            ));
        } else if !b.intact {
            problems.push(format!(
                "slice {}'s block {} ({}) at {:#x} is damaged",
                b.slice, b.block, b.region, b.offset
            ));
        }
    }
    problems
}

/// Blocks of `slice` found, as (region, block) pairs in file order.
pub fn of_slice<'a>(
    blocks: &'a [GuestBlock],
    slice: &'a str,
) -> impl Iterator<Item = (&'a str, u64)> {
    blocks
        .iter()
        .filter(move |b| b.slice == slice)
        .map(|b| (b.region.as_str(), b.block))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_blocks_and_checks_their_place() {
        let path = std::env::temp_dir().join(format!("microvisor-disk-{}.raw", std::process::id()));
        let mut disk = vec![0u8; 3 << 20];
        // Slice a: window at 1 MiB; its block 1 in place, its block 2 one block too far.
        disk[(1 << 20) + 4096..][..4096].copy_from_slice(&guest_block("a", "first", 1));
        disk[(1 << 20) + 3 * 4096..][..4096].copy_from_slice(&guest_block("a", "load", 2));
        // Slice b: window at 2 MiB, 1 MiB long; its block 0 with a damaged padding.
        let mut damaged = guest_block("b", "first", 0);
        damaged[100] = b'x';
        disk[2 << 20..][..4096].copy_from_slice(&damaged);
        // Not at a block boundary: ignored.
        disk[100..107].copy_from_slice(b"MVDISK ");
        std::fs::write(&path, &disk).unwrap();
        let blocks = scan(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(blocks.len(), 3, "{blocks:?}");
        assert_eq!(
            (
                blocks[0].offset,
                blocks[0].slice.as_str(),
                blocks[0].region.as_str(),
                blocks[0].block
            ),
            ((1 << 20) + 4096, "a", "first", 1)
        );
        assert!(blocks[0].intact && !blocks[2].intact);
        assert_eq!(
            of_slice(&blocks, "a").collect::<Vec<_>>(),
            [("first", 1), ("load", 2)]
        );

        let share = |first_block, blocks| DiskShare {
            first_block,
            blocks,
            first_queue: 1,
            queues: 1,
        };
        let windows: BTreeMap<String, DiskShare> = [
            ("a".to_string(), share(2048, 2048)),
            ("b".to_string(), share(4096, 2048)),
        ]
        .into();
        let problems = misplaced(&blocks, &windows, 512);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("slice a's block 2 (load) is at disk byte 0x103000"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("slice b's block 0 (first) at 0x200000 is damaged"),
            "{problems:?}"
        );
        let none: BTreeMap<String, DiskShare> = BTreeMap::new();
        assert!(misplaced(&blocks, &none, 512)[0].contains("no slice"));
    }
}
