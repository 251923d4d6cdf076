//! Placing a plan onto discovered hardware: which physical cores and which RAM each slice gets.
//!
//! The rules are deterministic, so a slice's resources follow from the plan and the hardware
//! alone:
//!
//! 1. The plan is validated first ([`PlanOf::validate`]).
//! 2. **Explicit core lists** (`cores = [1, 2]`) are honoured first, in plan order; an index the
//!    node does not have is `NoSuchCore`. vCPU *i* runs on the *i*-th listed core.
//! 3. **Core counts** (`cores = 2`) are then served in plan order, each slice taking the
//!    lowest-numbered cores still free, in ascending order; `TooManyCores` if not enough are left.
//! 4. **RAM** is allocated top-down in plan order, each slice getting one contiguous block at a
//!    2 MiB-aligned base, `memory` rounded up to 2 MiB long: among the free ranges, the
//!    highest-addressed one that can hold it, and within that range the highest aligned base.
//!    The block is removed from the free ranges; `NotEnoughMemory` if no range can hold it.
//!    With one free range `[base, end)`, slice 1 therefore starts at
//!    `align_down(end - round_up(memory1, 2 MiB), 2 MiB)`, slice 2 right below it, and so on.
//! 5. The manager's **staging pool** (`staging`) is placed the same way after every slice.

use crate::sorted_map::SortedMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::error::{Field, PlanError, Problem};
use crate::layout::{align_down, align_up};
use crate::model::{Cores, PlanOf, Role};
use crate::size::MIB;

/// Alignment and granule of a slice's RAM block (the largest stage-2 block below 1 GiB).
pub const RAM_ALIGN: u64 = 2 * MIB;
/// Alignment a slice of at least this much RAM gets where it fits (a level-1 stage-2 block).
const LARGE_BLOCK: u64 = 1 << 30;

/// A range of physical memory `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RamRange {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl RamRange {
    /// One past the last byte (saturating at `u64::MAX` for a malformed range).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// Size of the largest 2 MiB-aligned block inside the range that is a 2 MiB multiple.
    fn aligned_capacity(&self) -> u64 {
        match align_up(self.base, RAM_ALIGN) {
            Some(start) => align_down(self.end(), RAM_ALIGN).saturating_sub(start),
            None => 0,
        }
    }

    /// The highest `align`-aligned base at which `size` bytes fit in the range.
    fn highest_fit(&self, size: u64, align: u64) -> Option<u64> {
        let base = align_down(self.end().checked_sub(size)?, align);
        (base >= self.base).then_some(base)
    }
}

/// What the hypervisor found on the node, as far as placement cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hardware {
    /// Physical cores; their indexes are `0..cores` in firmware device tree order.
    pub cores: u32,
    /// RAM usable by slices (the hypervisor's own memory already removed): disjoint ranges.
    pub free_ram: Vec<RamRange>,
    /// All RAM on the node, for messages.
    pub ram_total: u64,
}

/// Where every slice of a plan goes, in plan order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// One entry per slice, in plan order.
    pub slices: Vec<SlicePlacement>,
    /// The manager's staging pool (docs/control.md), placed after every slice's RAM.
    pub staging: Option<RamRange>,
}

/// The physical resources of one slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePlacement {
    /// Physical core index of each vCPU, in vCPU order.
    pub cores: Vec<u32>,
    /// Physical RAM: base 2 MiB aligned, size exactly the slice's `memory`.
    pub ram: RamRange,
}

/// Places `plan` onto `hw` following the rules in the module documentation.
pub fn place<I>(plan: &PlanOf<I>, hw: &Hardware) -> Result<Placement, PlanError> {
    plan.validate()?;
    let cores = place_cores(plan, hw)?;
    let mut free = FreeRam::new(&hw.free_ram);
    let mut slices = Vec::with_capacity(plan.slices.len());
    for (slice, cores) in plan.slices.iter().zip(cores) {
        let ram = free.take(slice.memory).map_err(|largest_free| {
            let problem = Problem::NotEnoughMemory {
                asked: slice.memory,
                largest_free,
                ram_on_node: hw.ram_total,
            };
            PlanError::slice(slice.name.as_str(), Field::Memory, problem)
        })?;
        slices.push(SlicePlacement { cores, ram });
    }
    let mut staging = None;
    for slice in &plan.slices {
        if let Role::Manager { staging: size } = slice.role {
            let range = free.take(size).map_err(|largest_free| {
                let problem = Problem::NotEnoughMemory {
                    asked: size,
                    largest_free,
                    ram_on_node: hw.ram_total,
                };
                PlanError::slice(slice.name.as_str(), Field::Staging, problem)
            })?;
            staging = Some(range);
        }
    }
    Ok(Placement { slices, staging })
}

/// A slice's share of the node's NVMe controller: its LBA window on namespace 1 and its
/// hardware I/O queue pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskShare {
    /// First block of the window.
    pub first_block: u64,
    /// Blocks in the window (the slice's namespace size).
    pub blocks: u64,
    /// First hardware I/O queue ID of the slice; it has `queues` consecutive ones.
    pub first_queue: u16,
    pub queues: u16,
}

/// Alignment of each slice's LBA window, in bytes.
pub const DISK_ALIGN: u64 = MIB;

/// Gives every slice with `[slice.nvme]` its window of namespace 1 (`capacity_blocks` blocks
/// of `1 << block_shift` bytes) and its hardware queue pairs (out of `controller_queues`,
/// numbered from 1). Windows are consecutive from block 0 in plan order, each starting on a
/// 1 MiB boundary, so a slice's data stays where it was across restarts of the node. A
/// slice's `nvme.size` must be a multiple of the block size.
pub fn place_disk<I>(
    plan: &PlanOf<I>,
    capacity_blocks: u64,
    block_shift: u8,
    controller_queues: u16,
) -> Result<Vec<Option<DiskShare>>, PlanError> {
    let block = 1u64 << block_shift;
    let capacity = capacity_blocks.saturating_mul(block);
    let mut next_byte = 0u64;
    let mut next_queue = 1u32;
    let mut shares = Vec::with_capacity(plan.slices.len());
    for slice in &plan.slices {
        let Some(nvme) = &slice.nvme else {
            shares.push(None);
            continue;
        };
        let name = slice.name.as_str();
        if nvme.size % block != 0 {
            return Err(PlanError::slice(
                name,
                Field::NvmeSize,
                Problem::NotPageMultiple { value: nvme.size },
            ));
        }
        let start = align_up(next_byte, DISK_ALIGN).unwrap_or(u64::MAX);
        let left = capacity.saturating_sub(start);
        if nvme.size > left {
            let problem = Problem::NotEnoughDisk {
                asked: nvme.size,
                left,
                disk: capacity,
            };
            return Err(PlanError::slice(name, Field::NvmeSize, problem));
        }
        let queues_left = u32::from(controller_queues).saturating_sub(next_queue - 1);
        if nvme.queues > queues_left {
            let problem = Problem::TooManyQueues {
                asked: nvme.queues,
                left: queues_left,
                controller: u32::from(controller_queues),
            };
            return Err(PlanError::slice(name, Field::NvmeQueues, problem));
        }
        shares.push(Some(DiskShare {
            first_block: start / block,
            blocks: nvme.size / block,
            first_queue: next_queue as u16,
            queues: nvme.queues as u16,
        }));
        next_byte = start + nvme.size;
        next_queue += nvme.queues;
    }
    Ok(shares)
}

/// Physical cores given out so far, with the slice that has each.
type TakenCores<'a> = SortedMap<u32, &'a str>;

/// Core lists for every slice, in plan order: explicit lists first, then counts.
fn place_cores<I>(plan: &PlanOf<I>, hw: &Hardware) -> Result<Vec<Vec<u32>>, PlanError> {
    let mut taken = TakenCores::new();
    let mut result: Vec<Vec<u32>> = Vec::with_capacity(plan.slices.len());
    for slice in &plan.slices {
        let name = slice.name.as_str();
        let listed = match &slice.cores {
            Cores::List(list) => take_listed(list, name, hw.cores, &mut taken),
            Cores::Count(_) => Ok(Vec::new()),
        };
        result.push(listed.map_err(|problem| PlanError::slice(name, Field::Cores, problem))?);
    }
    for (slice, cores) in plan.slices.iter().zip(&mut result) {
        if let Cores::Count(count) = slice.cores {
            let name = slice.name.as_str();
            *cores = take_lowest(count, name, hw.cores, &mut taken)
                .map_err(|problem| PlanError::slice(name, Field::Cores, problem))?;
        }
    }
    Ok(result)
}

fn take_listed<'a>(
    list: &[u32],
    slice: &'a str,
    cores_on_node: u32,
    taken: &mut TakenCores<'a>,
) -> Result<Vec<u32>, Problem> {
    for &core in list {
        if core >= cores_on_node {
            return Err(Problem::NoSuchCore {
                core,
                cores_on_node,
            });
        }
        // `validate` already rules this out; checked again so that a core is never given twice.
        if let Some(owner) = taken.insert(core, slice) {
            return Err(Problem::CoreListedTwice {
                core,
                first_slice: owner.into(),
            });
        }
    }
    Ok(list.to_vec())
}

fn take_lowest<'a>(
    count: u32,
    slice: &'a str,
    cores_on_node: u32,
    taken: &mut TakenCores<'a>,
) -> Result<Vec<u32>, Problem> {
    let taken_count = u32::try_from(taken.len()).unwrap_or(u32::MAX);
    let left = cores_on_node.saturating_sub(taken_count);
    if count > left {
        return Err(Problem::TooManyCores {
            asked: count,
            left,
            cores_on_node,
        });
    }
    let chosen: Vec<u32> = (0..cores_on_node)
        .filter(|core| !taken.contains_key(core))
        .take(count as usize)
        .collect();
    taken.extend(chosen.iter().map(|&core| (core, slice)));
    Ok(chosen)
}

/// Free RAM ranges, sorted by address.
struct FreeRam {
    ranges: Vec<RamRange>,
}

impl FreeRam {
    /// Sorts the ranges and merges any that overlap, so that no byte can be handed out twice
    /// even if the caller's ranges are not disjoint.
    fn new(ranges: &[RamRange]) -> FreeRam {
        let mut sorted: Vec<RamRange> = ranges.iter().copied().filter(|r| r.size > 0).collect();
        crate::sort::sort(&mut sorted);
        let mut merged: Vec<RamRange> = Vec::with_capacity(sorted.len());
        for range in sorted {
            match merged.last_mut() {
                Some(last) if range.base < last.end() => {
                    last.size = range.end().max(last.end()) - last.base;
                }
                _ => merged.push(range),
            }
        }
        FreeRam { ranges: merged }
    }

    /// Takes a block for `memory` bytes from the top; on failure returns the largest block left.
    fn take(&mut self, memory: u64) -> Result<RamRange, u64> {
        let largest = || {
            self.ranges
                .iter()
                .map(RamRange::aligned_capacity)
                .max()
                .unwrap_or(0)
        };
        let needed = align_up(memory, RAM_ALIGN).ok_or_else(largest)?;
        let fit = |align| {
            self.ranges
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, range)| Some((i, range.highest_fit(needed, align)?)))
        };
        // A slice of 1 GiB or more goes on a 1 GiB boundary where one fits: its stage 2
        // (and each of its devices') then maps it with 1 GiB blocks instead of one table per
        // GiB from the hypervisor's heap, which a large slice after an odd-sized one could
        // exhaust (found in review). Elsewhere, or when only that fits, 2 MiB.
        let aligned = (needed >= LARGE_BLOCK).then(|| fit(LARGE_BLOCK)).flatten();
        let (index, base) = aligned.or_else(|| fit(RAM_ALIGN)).ok_or_else(largest)?;
        self.remove(index, base, needed);
        Ok(RamRange { base, size: memory })
    }

    /// Cuts `[base, base + size)` out of range `index`, keeping what is left below and above.
    fn remove(&mut self, index: usize, base: u64, size: u64) {
        let range = self.ranges.remove(index);
        let end = base.saturating_add(size);
        let above = RamRange {
            base: end,
            size: range.end().saturating_sub(end),
        };
        let below = RamRange {
            base: range.base,
            size: base.saturating_sub(range.base),
        };
        for piece in [above, below] {
            if piece.size > 0 {
                self.ranges.insert(index, piece);
            }
        }
    }
}

/// Formats core indexes as a compact list, ascending runs collapsed: `[0, 1, 2, 3, 6]` ->
/// `"0-3,6"`. Order is kept (vCPU order), so `[3, 1]` gives `"3,1"`; empty gives `""`.
pub fn format_cores(cores: &[u32]) -> String {
    let mut out = String::new();
    let mut rest = cores;
    while let Some((&first, tail)) = rest.split_first() {
        let run = ascending_run(first, tail);
        if !out.is_empty() {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = match run.checked_sub(1).and_then(|last| tail.get(last)) {
            None => write!(out, "{first}"),
            Some(last) => write!(out, "{first}-{last}"),
        };
        rest = tail.get(run..).unwrap_or_default();
    }
    out
}

/// How many elements at the start of `tail` continue `first, first + 1, ...`.
fn ascending_run(first: u32, tail: &[u32]) -> usize {
    let mut previous = first;
    tail.iter()
        .take_while(|&&core| {
            let continues = previous.checked_add(1) == Some(core);
            previous = core;
            continues
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CompiledPlan, NvmeShare, OnFault, SliceOf};
    use crate::size::GIB;
    use alloc::string::ToString;
    use alloc::vec;

    fn slice(name: &str, cores: Cores, memory: u64) -> SliceOf<u32> {
        SliceOf {
            name: name.to_string(),
            cores,
            memory,
            kernel: 0,
            initrd: None,
            cmdline: String::new(),
            on_fault: OnFault::Stop,
            nvme: None,
            devices: Vec::new(),
            role: Role::Tenant,
            boot: crate::model::BootProtocol::Linux,
            firmware_env: Vec::new(),
            firmware_network_env: Vec::new(),
            redfish_tls: None,
        }
    }

    fn plan(slices: Vec<SliceOf<u32>>) -> CompiledPlan {
        PlanOf { slices }
    }

    fn with_nvme(mut s: SliceOf<u32>, queues: u32, size: u64) -> SliceOf<u32> {
        s.nvme = Some(NvmeShare {
            queues,
            size,
            direct: false,
        });
        s
    }

    #[test]
    fn a_large_slice_after_an_odd_sized_one_still_gets_a_gib_boundary() {
        // 258 MiB first, from the top of a 256 GiB node; the 200 GiB slice below it would sit
        // 2 MiB aligned only, costing a stage-2 table per GiB (found in review).
        let hw = node(8, 0x4000_0000, 256 * GIB);
        let p = plan(vec![
            slice("odd", Cores::Count(1), 258 * MIB),
            slice("big", Cores::Count(1), 200 * GIB),
        ]);
        let placed = place(&p, &hw).unwrap();
        assert_eq!(placed.slices[1].ram.base % GIB, 0);
        assert_eq!(placed.slices[1].ram.size, 200 * GIB);
        // When only a 2 MiB-aligned block fits, that is taken.
        let hw = node(8, 0x4000_0000, 128 * GIB);
        let tight = plan(vec![
            slice("odd", Cores::Count(1), 258 * MIB),
            slice("rest", Cores::Count(1), 128 * GIB - 258 * MIB),
        ]);
        let placed = place(&tight, &hw).unwrap();
        assert_eq!(placed.slices[1].ram.base, 0x4000_0000);
    }

    #[test]
    fn disk_windows_are_consecutive_and_aligned() {
        let p = plan(vec![
            with_nvme(slice("a", Cores::Count(1), GIB), 2, 3 * MIB / 2),
            slice("b", Cores::Count(1), GIB),
            with_nvme(slice("c", Cores::Count(1), GIB), 1, GIB),
        ]);
        let shares = place_disk(&p, 16 << 21, 9, 8).unwrap();
        assert_eq!(
            shares[0],
            Some(DiskShare {
                first_block: 0,
                blocks: 3072,
                first_queue: 1,
                queues: 2
            })
        );
        assert_eq!(shares[1], None);
        assert_eq!(
            shares[2],
            Some(DiskShare {
                first_block: 2 * MIB / 512,
                blocks: GIB / 512,
                first_queue: 3,
                queues: 1
            }),
            "next 1 MiB boundary after 1.5 MiB"
        );
    }

    #[test]
    fn disk_too_small_names_slice_and_field() {
        let p = plan(vec![with_nvme(
            slice("a", Cores::Count(1), GIB),
            1,
            8 * GIB,
        )]);
        let error = place_disk(&p, (4 * GIB) >> 12, 12, 8).unwrap_err();
        assert_eq!(error.field, Field::NvmeSize);
        assert_eq!(
            alloc::format!("{error}"),
            "slice \"a\": nvme.size: asks for 8 GiB but only 4 GiB of the 4 GiB NVMe namespace is left"
        );
        let exact = plan(vec![with_nvme(
            slice("a", Cores::Count(1), GIB),
            1,
            4 * GIB,
        )]);
        assert!(place_disk(&exact, (4 * GIB) >> 12, 12, 8).is_ok());
    }

    #[test]
    fn too_many_queues_names_the_slice() {
        let p = plan(vec![
            with_nvme(slice("a", Cores::Count(1), GIB), 3, MIB),
            with_nvme(slice("b", Cores::Count(1), GIB), 2, MIB),
        ]);
        let error = place_disk(&p, 1 << 20, 9, 4).unwrap_err();
        assert_eq!(
            (error.slice.as_deref(), error.field),
            (Some("b"), Field::NvmeQueues)
        );
        assert_eq!(
            error.problem,
            Problem::TooManyQueues {
                asked: 2,
                left: 1,
                controller: 4
            }
        );
    }

    #[test]
    fn disk_size_must_be_whole_blocks() {
        let p = plan(vec![with_nvme(
            slice("a", Cores::Count(1), GIB),
            1,
            4096 + 4096 * 3,
        )]);
        assert!(
            place_disk(&p, 1 << 30, 9, 4).is_ok(),
            "4 KiB multiples are whole 512-byte blocks"
        );
        let odd = plan(vec![with_nvme(
            slice("a", Cores::Count(1), GIB),
            1,
            8192 + 4096,
        )]);
        let error = place_disk(&odd, 1 << 30, 14, 4).unwrap_err();
        assert_eq!(error.field, Field::NvmeSize);
    }

    /// A node with `cores` cores and one free RAM range `[base, base + size)`.
    fn node(cores: u32, base: u64, size: u64) -> Hardware {
        Hardware {
            cores,
            free_ram: vec![RamRange { base, size }],
            ram_total: size,
        }
    }

    fn problem(result: Result<Placement, PlanError>) -> (String, Field, Problem) {
        let error = result.unwrap_err();
        (error.slice.unwrap(), error.field, error.problem)
    }

    #[test]
    fn top_down_from_the_end_of_ram() {
        let hw = node(8, 0x4000_0000, 4 * GIB);
        let end = 0x4000_0000 + 4 * GIB;
        let plan = plan(vec![
            slice("a", Cores::Count(2), GIB),
            slice("b", Cores::Count(1), 100 * MIB + 4096),
            slice("c", Cores::Count(1), 64 * MIB),
        ]);
        let placed = place(&plan, &hw).unwrap();
        assert_eq!(
            placed.slices[0].ram,
            RamRange {
                base: end - GIB,
                size: GIB
            }
        );
        assert_eq!(
            placed.slices[1].ram,
            RamRange {
                base: end - GIB - 102 * MIB,
                size: 100 * MIB + 4096
            }
        );
        assert_eq!(
            placed.slices[2].ram,
            RamRange {
                base: end - GIB - 166 * MIB,
                size: 64 * MIB
            }
        );
    }

    #[test]
    fn unaligned_end_of_ram_is_aligned_down() {
        let hw = node(1, 0x4000_0000, GIB + MIB);
        let placed = place(&plan(vec![slice("a", Cores::Count(1), 4 * MIB)]), &hw).unwrap();
        assert_eq!(placed.slices[0].ram.base, 0x4000_0000 + GIB - 4 * MIB);
    }

    #[test]
    fn memory_that_fits_exactly() {
        let hw = node(2, 0x8000_0000, GIB);
        let plan = plan(vec![
            slice("a", Cores::Count(1), GIB - 2 * MIB),
            slice("b", Cores::Count(1), 2 * MIB),
        ]);
        let placed = place(&plan, &hw).unwrap();
        assert_eq!(
            placed.slices[1].ram,
            RamRange {
                base: 0x8000_0000,
                size: 2 * MIB
            }
        );
    }

    #[test]
    fn one_byte_too_much_memory() {
        let hw = node(2, 0x8000_0000, GIB);
        let plan = plan(vec![
            slice("a", Cores::Count(1), GIB - 2 * MIB),
            slice("b", Cores::Count(1), 2 * MIB + 4096),
        ]);
        let expected = Problem::NotEnoughMemory {
            asked: 2 * MIB + 4096,
            largest_free: 2 * MIB,
            ram_on_node: GIB,
        };
        assert_eq!(
            problem(place(&plan, &hw)),
            ("b".into(), Field::Memory, expected)
        );
        assert_eq!(
            place(&plan, &hw).unwrap_err().to_string(),
            "slice \"b\": memory: asks for 2052 KiB but the largest free block is 2 MiB (node has 1 GiB of RAM)"
        );
    }

    #[test]
    fn fragmented_ram_uses_the_highest_range_that_fits() {
        let hw = Hardware {
            cores: 4,
            // Deliberately unsorted: placement must not depend on the order firmware gives.
            free_ram: vec![
                RamRange {
                    base: 0x1_0000_0000,
                    size: 256 * MIB,
                },
                RamRange {
                    base: 0x4000_0000,
                    size: GIB,
                },
                RamRange {
                    base: 0x2_0000_0000,
                    size: 64 * MIB,
                },
            ],
            ram_total: 2 * GIB,
        };
        let plan = plan(vec![
            slice("big", Cores::Count(1), 512 * MIB),
            slice("mid", Cores::Count(1), 128 * MIB),
            slice("small", Cores::Count(1), 64 * MIB),
            slice("huge", Cores::Count(1), 513 * MIB),
        ]);
        let result = place(&plan, &hw);
        let (name, field, found) = problem(result);
        assert_eq!((name.as_str(), field), ("huge", Field::Memory));
        let Problem::NotEnoughMemory { largest_free, .. } = found else {
            panic!("{found:?}")
        };
        // Left: [0x4000_0000, +512 MiB) and [0x1_0000_0000, +128 MiB).
        assert_eq!(largest_free, 512 * MIB);

        let fits = PlanOf {
            slices: plan.slices[..3].to_vec(),
        };
        let placed = place(&fits, &hw).unwrap();
        assert_eq!(placed.slices[0].ram.base, 0x4000_0000 + 512 * MIB);
        assert_eq!(placed.slices[1].ram.base, 0x1_0000_0000 + 128 * MIB);
        assert_eq!(placed.slices[2].ram.base, 0x2_0000_0000);
    }

    #[test]
    fn explicit_lists_first_then_lowest_free_cores() {
        let plan = plan(vec![
            slice("a", Cores::Count(2), 2 * MIB),
            slice("b", Cores::List(vec![1, 5]), 2 * MIB),
            slice("c", Cores::Count(3), 2 * MIB),
        ]);
        let placed = place(&plan, &node(8, 0, GIB)).unwrap();
        let cores: Vec<&[u32]> = placed.slices.iter().map(|s| s.cores.as_slice()).collect();
        assert_eq!(cores, [&[0, 2][..], &[1, 5], &[3, 4, 6]]);
    }

    #[test]
    fn listed_cores_keep_vcpu_order() {
        let placed = place(
            &plan(vec![slice("a", Cores::List(vec![3, 0, 2]), 2 * MIB)]),
            &node(4, 0, GIB),
        )
        .unwrap();
        assert_eq!(placed.slices[0].cores, [3, 0, 2]);
    }

    #[test]
    fn no_such_core() {
        let plan = plan(vec![
            slice("a", Cores::Count(1), 2 * MIB),
            slice("b", Cores::List(vec![8]), 2 * MIB),
        ]);
        let expected = Problem::NoSuchCore {
            core: 8,
            cores_on_node: 8,
        };
        assert_eq!(
            problem(place(&plan, &node(8, 0, GIB))),
            ("b".into(), Field::Cores, expected)
        );
    }

    #[test]
    fn too_many_cores_counts_what_lists_took() {
        let plan = plan(vec![
            slice("web-0", Cores::Count(4), 2 * MIB),
            slice("db", Cores::List(vec![0, 1, 2, 3, 4]), 2 * MIB),
        ]);
        let expected = Problem::TooManyCores {
            asked: 4,
            left: 3,
            cores_on_node: 8,
        };
        assert_eq!(
            problem(place(&plan, &node(8, 0, GIB))),
            ("web-0".into(), Field::Cores, expected)
        );
        assert_eq!(
            place(&plan, &node(8, 0, GIB)).unwrap_err().to_string(),
            "slice \"web-0\": cores: asks for 4 cores but only 3 are left (node has 8 cores)"
        );
    }

    #[test]
    fn a_core_is_never_given_twice_even_without_validation() {
        let mut taken = TakenCores::new();
        assert_eq!(take_listed(&[1, 2], "a", 4, &mut taken), Ok(vec![1, 2]));
        let expected = Problem::CoreListedTwice {
            core: 2,
            first_slice: "a".into(),
        };
        assert_eq!(take_listed(&[3, 2], "b", 4, &mut taken), Err(expected));
    }

    #[test]
    fn all_cores_can_be_used() {
        let plan = plan(vec![
            slice("a", Cores::Count(3), 2 * MIB),
            slice("b", Cores::List(vec![3]), 2 * MIB),
        ]);
        assert!(place(&plan, &node(4, 0, GIB)).is_ok());
    }

    #[test]
    fn invalid_plans_are_rejected_before_placement() {
        let error = place(&plan(vec![]), &node(4, 0, GIB)).unwrap_err();
        assert_eq!(error.problem, Problem::NoSlices);
    }

    #[test]
    fn placement_is_deterministic() {
        let hw = Hardware {
            cores: 16,
            free_ram: vec![
                RamRange {
                    base: 0x4000_0000,
                    size: 3 * GIB,
                },
                RamRange {
                    base: 0x1_0000_0000,
                    size: GIB,
                },
            ],
            ram_total: 4 * GIB,
        };
        let plan = plan(vec![
            slice("a", Cores::Count(3), 300 * MIB),
            slice("b", Cores::List(vec![7, 2]), GIB),
            slice("c", Cores::Count(5), 700 * MIB),
        ]);
        let first = place(&plan, &hw).unwrap();
        let mut reversed = hw.clone();
        reversed.free_ram.reverse();
        for _ in 0..3 {
            assert_eq!(place(&plan, &hw).unwrap(), first);
            assert_eq!(place(&plan, &reversed).unwrap(), first);
        }
    }

    #[test]
    fn placements_never_overlap_and_stay_inside_free_ram() {
        let hw = Hardware {
            cores: 64,
            free_ram: vec![
                RamRange {
                    base: 0x4000_0000 + 4096,
                    size: GIB - 4096,
                },
                RamRange {
                    base: 0x8020_0000,
                    size: 3 * GIB + 12345,
                },
            ],
            ram_total: 4 * GIB,
        };
        let slices = (0..10)
            .map(|i| {
                slice(
                    &alloc::format!("s{i}"),
                    Cores::Count(1),
                    (i + 1) * 37 * MIB + 4096,
                )
            })
            .collect();
        let placed = place(&plan(slices), &hw).unwrap();
        for (i, a) in placed.slices.iter().enumerate() {
            assert_eq!(a.ram.base % RAM_ALIGN, 0);
            assert!(
                hw.free_ram
                    .iter()
                    .any(|r| r.base <= a.ram.base && a.ram.end() <= r.end())
            );
            for b in &placed.slices[i + 1..] {
                assert!(
                    a.ram.end() <= b.ram.base || b.ram.end() <= a.ram.base,
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn overlapping_free_ranges_are_merged() {
        let hw = Hardware {
            cores: 2,
            free_ram: vec![
                RamRange {
                    base: 0,
                    size: 8 * MIB,
                },
                RamRange {
                    base: 4 * MIB,
                    size: 8 * MIB,
                },
                RamRange {
                    base: 2 * MIB,
                    size: 2 * MIB,
                },
            ],
            ram_total: 12 * MIB,
        };
        let plan = plan(vec![
            slice("a", Cores::Count(1), 6 * MIB),
            slice("b", Cores::Count(1), 6 * MIB),
        ]);
        let placed = place(&plan, &hw).unwrap();
        assert_eq!(placed.slices[0].ram.base, 6 * MIB);
        assert_eq!(placed.slices[1].ram.base, 0);
        // The merged free RAM is [0, 12 MiB); "a" takes [6, 12) MiB and leaves 6 MiB, too
        // little for 8 MiB (counting the overlapping ranges twice would make it fit).
        let three = PlanOf {
            slices: vec![plan.slices[0].clone(), slice("c", Cores::Count(1), 8 * MIB)],
        };
        let expected = Problem::NotEnoughMemory {
            asked: 8 * MIB,
            largest_free: 6 * MIB,
            ram_on_node: 12 * MIB,
        };
        assert_eq!(
            problem(place(&three, &hw)),
            ("c".into(), Field::Memory, expected)
        );
    }

    #[test]
    fn hostile_hardware_does_not_panic() {
        let hw = Hardware {
            cores: u32::MAX,
            free_ram: vec![
                RamRange {
                    base: u64::MAX - 4096,
                    size: u64::MAX,
                },
                RamRange { base: 1, size: 1 },
            ],
            ram_total: 0,
        };
        let result = place(&plan(vec![slice("a", Cores::Count(1), MIB)]), &hw);
        assert!(matches!(
            result.unwrap_err().problem,
            Problem::NotEnoughMemory { .. }
        ));
    }

    #[test]
    fn format_core_lists() {
        assert_eq!(format_cores(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(format_cores(&[5]), "5");
        assert_eq!(format_cores(&[]), "");
        assert_eq!(format_cores(&[3, 1]), "3,1");
        assert_eq!(format_cores(&[0, 1, 4, 5, 9, 2]), "0-1,4-5,9,2");
        assert_eq!(
            format_cores(&[u32::MAX - 1, u32::MAX, 0]),
            "4294967294-4294967295,0"
        );
    }
}
