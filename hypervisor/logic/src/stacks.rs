//! Where the hypervisor's per-core EL2 stacks live: one range of its working memory holding,
//! for every core, a stack with an unmapped guard page right below it, and a small emergency
//! stack the EL2 fatal vectors switch to (a stack that overflowed cannot take the exception
//! frame of its own fault). Layout, from the range's base:
//!
//! | what | size |
//! |---|---|
//! | per core, core 0 first: guard page, emergency stack, guard page, stack | [`GUARD_SIZE`] + [`EMERGENCY_STACK_SIZE`] + [`GUARD_SIZE`] + [`STACK_SIZE`] each |
//!
//! A stack that grows past its bottom touches its guard page, which the EL2 stage-1 map leaves
//! unmapped (Arm ARM D8.3: an invalid descriptor gives a translation fault), so the overflow is
//! a data abort at EL2 instead of a write into whatever lies below. The emergency stacks have
//! guard pages too (they sat back to back: a deep fatal report on one core wrote into another
//! core's; found in review): a fault on one is a nested fatal exception, which the vectors
//! bound. A single frame larger than a page could still step over a guard: the hypervisor
//! has none.

use aarch64_cpu::registers::ESR_EL2;
use tock_registers::{LocalRegisterCopy, register_bitfields};

use crate::inventory::Region;
use crate::pagetable::PAGE_SIZE;

register_bitfields![u64,
    /// ISS of an instruction or data abort (Arm ARM D24.2.43).
    ABORT_ISS [
        /// FAR is not valid.
        FNV OFFSET(10) NUMBITS(1) []
    ]
];

/// Bytes of hypervisor stack per core.
pub const STACK_SIZE: u64 = 32 * 1024;
/// Bytes of the unmapped guard page below every stack.
pub const GUARD_SIZE: u64 = PAGE_SIZE;
/// Bytes of emergency stack per core: enough for the fatal report.
pub const EMERGENCY_STACK_SIZE: u64 = 8 * 1024;
/// Bytes the layout takes per core.
pub const PER_CORE: u64 = GUARD_SIZE + EMERGENCY_STACK_SIZE + GUARD_SIZE + STACK_SIZE;

/// The stacks of `cores` cores from a page-aligned `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackLayout {
    base: u64,
    cores: usize,
}

/// One core's part of a [`StackLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreStacks {
    /// The stack the core runs on (SP starts at its end).
    pub stack: Region,
    /// The unmapped page right below `stack`.
    pub guard: Region,
    /// The stack the fatal vectors switch to.
    pub emergency: Region,
    /// The unmapped page right below `emergency`.
    pub emergency_guard: Region,
}

impl CoreStacks {
    /// Whether an exception taken at EL2 with stack pointer `sp` and fault address `far`
    /// (FAR_EL2, when the syndrome has one) is this stack overflowing: the access that faulted
    /// was in the guard page, or SP already points into it.
    pub fn overflowed(&self, sp: u64, far: Option<u64>) -> bool {
        self.guard.contains(sp) || far.is_some_and(|far| self.guard.contains(far))
    }
}

/// The address that faulted, for an exception taken at EL2 that has one: a data or instruction
/// abort from EL2 itself (ESR_EL2.EC 0x25 or 0x21) whose FAR_EL2 is valid (ISS.FnV = 0).
pub fn el2_fault_address(esr: u64, far: u64) -> Option<u64> {
    let esr = LocalRegisterCopy::<u64, ESR_EL2::Register>::new(esr);
    let abort = matches!(
        esr.read_as_enum(ESR_EL2::EC),
        Some(ESR_EL2::EC::Value::DataAbortCurrentEL | ESR_EL2::EC::Value::InstrAbortCurrentEL)
    );
    let iss = LocalRegisterCopy::<u64, ABORT_ISS::Register>::new(esr.read(ESR_EL2::ISS));
    (abort && !iss.is_set(ABORT_ISS::FNV)).then_some(far)
}

impl StackLayout {
    /// The layout for `cores` cores at `base`; `None` if `base` is not page-aligned, there is
    /// no core, or the range would pass the end of the address space.
    pub fn new(base: u64, cores: usize) -> Option<StackLayout> {
        if !base.is_multiple_of(PAGE_SIZE) || cores == 0 {
            return None;
        }
        base.checked_add(PER_CORE.checked_mul(cores as u64)?)?;
        Some(StackLayout { base, cores })
    }

    /// Bytes the stacks of `cores` cores take.
    pub const fn size_for(cores: usize) -> u64 {
        PER_CORE * cores as u64
    }

    /// The whole range.
    pub fn region(&self) -> Region {
        Region::new(self.base, Self::size_for(self.cores))
    }

    /// Cores the layout has stacks for.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Core `core`'s stacks, if the layout has them.
    pub fn core(&self, core: usize) -> Option<CoreStacks> {
        if core >= self.cores {
            return None;
        }
        let emergency_guard = self.base + PER_CORE * core as u64;
        let emergency = emergency_guard + GUARD_SIZE;
        let guard = emergency + EMERGENCY_STACK_SIZE;
        Some(CoreStacks {
            stack: Region::new(guard + GUARD_SIZE, STACK_SIZE),
            guard: Region::new(guard, GUARD_SIZE),
            emergency: Region::new(emergency, EMERGENCY_STACK_SIZE),
            emergency_guard: Region::new(emergency_guard, GUARD_SIZE),
        })
    }

    /// Every guard page, lowest first.
    pub fn guards(&self) -> impl Iterator<Item = Region> + '_ {
        (0..self.cores)
            .filter_map(|c| self.core(c))
            .flat_map(|s| [s.emergency_guard, s.guard])
    }
}

/// The parts of `range` outside `holes` (sorted by base, not overlapping each other), lowest
/// first: what the identity map maps of a RAM bank that holds guard pages.
pub fn without_holes<I>(range: Region, holes: I) -> Pieces<I::IntoIter>
where
    I: IntoIterator<Item = Region>,
{
    Pieces {
        at: range.base,
        end: range.end(),
        holes: holes.into_iter(),
    }
}

/// Iterator of [`without_holes`].
pub struct Pieces<I> {
    at: u64,
    end: u64,
    holes: I,
}

impl<I: Iterator<Item = Region>> Iterator for Pieces<I> {
    type Item = Region;

    fn next(&mut self) -> Option<Region> {
        while self.at < self.end {
            let Some(hole) = self.holes.next() else {
                let piece = Region::new(self.at, self.end - self.at);
                self.at = self.end;
                return Some(piece);
            };
            if hole.end() <= self.at || hole.size == 0 {
                continue;
            }
            let piece_end = hole.base.clamp(self.at, self.end);
            let start = self.at;
            self.at = hole.end().max(self.at);
            if piece_end > start {
                return Some(Region::new(start, piece_end - start));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn every_stack_sits_right_above_its_own_guard_page() {
        let layout = StackLayout::new(0x4100_0000, 4).unwrap();
        for core in 0..4 {
            let s = layout.core(core).unwrap();
            assert_eq!(s.guard.end(), s.stack.base, "core {core}");
            assert_eq!(s.guard.size, PAGE_SIZE);
            assert_eq!(s.stack.size, STACK_SIZE);
            assert_eq!(s.emergency_guard.end(), s.emergency.base, "core {core}");
            for piece in [s.stack, s.guard, s.emergency, s.emergency_guard] {
                assert!(
                    piece.base.is_multiple_of(PAGE_SIZE) && piece.size.is_multiple_of(PAGE_SIZE)
                );
                assert!(layout.region().contains(piece.base));
                assert!(piece.end() <= layout.region().end());
            }
        }
        assert!(layout.core(4).is_none());
    }

    #[test]
    fn no_two_pieces_overlap_and_together_they_fill_the_range() {
        let layout = StackLayout::new(0x8000_0000, 5).unwrap();
        let mut pieces: Vec<Region> = (0..5)
            .flat_map(|c| {
                let s = layout.core(c).unwrap();
                [s.stack, s.guard, s.emergency, s.emergency_guard]
            })
            .collect();
        pieces.sort_by_key(|r| r.base);
        for pair in pieces.windows(2) {
            assert_eq!(pair[0].end(), pair[1].base, "{pair:x?}");
        }
        assert_eq!(pieces[0].base, layout.region().base);
        assert_eq!(pieces.last().unwrap().end(), layout.region().end());
        assert_eq!(layout.region().size, 5 * PER_CORE);
    }

    #[test]
    fn what_lies_below_a_stack_overflows_into_a_guard_page() {
        // Below each stack is its guard, below each emergency stack its own guard: neither
        // reaches the next piece down (the core's emergency stack, the previous core's stack)
        // without a fault.
        let layout = StackLayout::new(0, 3).unwrap();
        for core in 0..3 {
            let s = layout.core(core).unwrap();
            assert!(s.emergency_guard.contains(s.emergency.base - 8));
            assert_eq!(s.guard.base, s.emergency.end());
            let below = s.stack.base - 8;
            assert!(s.guard.contains(below));
            assert!(s.overflowed(s.stack.base, Some(below)));
            assert!(s.overflowed(below, None));
            assert!(!s.overflowed(s.stack.end() - 16, Some(0x1234)));
            assert!(!s.overflowed(s.stack.base, None));
        }
    }

    #[test]
    fn only_an_abort_at_el2_with_a_valid_far_names_a_fault_address() {
        const EC_SHIFT: u64 = 26;
        let far = 0x4000_1ff8;
        assert_eq!(el2_fault_address(0x25 << EC_SHIFT | 0x07, far), Some(far));
        assert_eq!(el2_fault_address(0x21 << EC_SHIFT | 0x07, far), Some(far));
        assert_eq!(
            el2_fault_address(0x25 << EC_SHIFT | 1 << 10, far),
            None,
            "FnV"
        );
        assert_eq!(
            el2_fault_address(0x24 << EC_SHIFT, far),
            None,
            "from a lower EL"
        );
        assert_eq!(el2_fault_address(0, far), None, "unknown reason");
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(StackLayout::new(0x1000_0800, 1), None, "misaligned");
        assert_eq!(StackLayout::new(0x1000_0000, 0), None, "no core");
        assert_eq!(StackLayout::new(u64::MAX - 0xfff, 1), None, "wraps");
    }

    #[test]
    fn a_bank_is_mapped_around_its_holes() {
        let bank = Region::new(0x1000, 0x10000);
        let holes = [
            Region::new(0x0, 0x2000),
            Region::new(0x4000, 0x1000),
            Region::new(0x6000, 0x1000),
            Region::new(0x10000, 0x2000),
        ];
        let pieces: Vec<Region> = without_holes(bank, holes).collect();
        assert_eq!(
            pieces,
            [
                Region::new(0x2000, 0x2000),
                Region::new(0x5000, 0x1000),
                Region::new(0x7000, 0x9000),
            ]
        );
        let all: Vec<Region> = without_holes(bank, []).collect();
        assert_eq!(all, [bank]);
        let none: Vec<Region> = without_holes(bank, [Region::new(0, 0x20000)]).collect();
        assert!(none.is_empty());
        let after: Vec<Region> = without_holes(bank, [Region::new(0x20000, 0x1000)]).collect();
        assert_eq!(after, [bank]);
    }

    #[test]
    fn the_guard_pages_of_a_layout_are_left_out_of_its_bank() {
        let layout = StackLayout::new(0x4010_0000, 3).unwrap();
        let bank = Region::new(0x4000_0000, 0x100_0000);
        let pieces: Vec<Region> = without_holes(bank, layout.guards()).collect();
        let mapped: u64 = pieces.iter().map(|p| p.size).sum();
        assert_eq!(mapped, bank.size - 2 * 3 * GUARD_SIZE);
        for guard in layout.guards() {
            assert!(pieces.iter().all(|p| !p.overlaps(&guard)));
        }
        for core in 0..3 {
            let s = layout.core(core).unwrap();
            for piece in [s.stack, s.emergency] {
                assert!(
                    pieces
                        .iter()
                        .any(|p| p.base <= piece.base && piece.end() <= p.end())
                );
            }
        }
    }

    #[test]
    fn an_identity_map_built_from_the_pieces_faults_on_every_guard_page() {
        use crate::pagetable::{Attributes, HeapTables, Regime, Translation};
        let layout = StackLayout::new(0x4030_0000, 4).unwrap();
        let bank = Region::new(0x4000_0000, 0x4000_0000);
        let mut map = Translation::new(Regime::El2Stage1, HeapTables::new()).unwrap();
        for piece in without_holes(bank, layout.guards()) {
            map.map(piece.base, piece.base, piece.size, Attributes::RAM)
                .unwrap();
        }
        for core in 0..4 {
            let s = layout.core(core).unwrap();
            assert_eq!(map.translate(s.guard.base), None);
            assert_eq!(map.translate(s.guard.end() - 8), None);
            assert!(map.translate(s.stack.base).is_some());
            assert!(map.translate(s.stack.end() - 8).is_some());
            assert!(map.translate(s.emergency.base).is_some());
            assert_eq!(map.translate(s.emergency_guard.end() - 8), None);
        }
        assert!(map.translate(bank.base).is_some());
        assert!(map.translate(bank.end() - 8).is_some());
    }
}
