//! Physical Region Page entries for one transfer (NVMe Base 1.4 §4.3): PRP1
//! points at the first byte (any dword offset), PRP2 at the second page if
//! the transfer touches exactly two, else at a PRP list. A list may start at
//! an offset inside its page; it then ends at the page end, and when more
//! entries follow, the page's last slot points to the next list page
//! (a chain). The probe lays its lists out wherever the caller says, so it
//! can force chains with short transfers (a list starting 16 bytes before a
//! page end) — which Linux's 256-byte PRP pool produces too.

use super::PAGE_SIZE;

/// Most list pages one transfer may use.
pub const MAX_LIST_PAGES: usize = 4;
/// PRP entries in a full list page.
pub const ENTRIES_PER_PAGE: u64 = PAGE_SIZE / 8;

/// Why a transfer cannot be described.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrpError {
    /// Nothing to transfer.
    Empty,
    /// The data does not start on a dword.
    DataUnaligned(u64),
    /// A list does not start on a qword, or a list after the first does not
    /// start on a page.
    ListUnaligned(u64),
    /// The given list pages are too few.
    TooFewLists {
        /// List pages the transfer needs.
        needed: usize,
    },
}

/// What a list slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// The address of data page `n` of the transfer (n >= 1; page 0 is PRP1).
    Data(usize),
    /// The address of list page `n` (n >= 1): a chain pointer.
    Chain(usize),
}

/// One list slot: where it is, what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// Address of the slot.
    pub addr: u64,
    /// The PRP entry to store there.
    pub value: u64,
    /// What the entry points to.
    pub kind: EntryKind,
}

/// The data pointer of one transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prp {
    /// PRP entry 1.
    pub prp1: u64,
    /// PRP entry 2: 0, the second data page or the first list.
    pub prp2: u64,
    /// Data pages the transfer touches.
    pub pages: usize,
    lists: [u64; MAX_LIST_PAGES],
    /// List pages used.
    pub list_count: usize,
}

/// Entries a list starting at `addr` holds up to its page end.
fn capacity(addr: u64) -> u64 {
    (PAGE_SIZE - addr % PAGE_SIZE) / 8
}

impl Prp {
    /// The PRPs for `len` bytes at `data` (one contiguous buffer), with list
    /// pages at `lists` (the first may start inside its page; the others
    /// must be page aligned). Lists are only used for more than two pages.
    pub fn new(data: u64, len: u64, lists: &[u64]) -> Result<Prp, PrpError> {
        if len == 0 {
            return Err(PrpError::Empty);
        }
        if !data.is_multiple_of(4) {
            return Err(PrpError::DataUnaligned(data));
        }
        let pages = (data % PAGE_SIZE + len).div_ceil(PAGE_SIZE) as usize;
        let first_page = data - data % PAGE_SIZE;
        let mut prp = Prp {
            prp1: data,
            prp2: 0,
            pages,
            lists: [0; MAX_LIST_PAGES],
            list_count: 0,
        };
        match pages {
            1 => {}
            2 => prp.prp2 = first_page + PAGE_SIZE,
            _ => {
                let mut remaining = pages as u64 - 1;
                let mut used = 0;
                loop {
                    let Some(&list) = lists.get(used) else {
                        return Err(PrpError::TooFewLists {
                            needed: used + Self::lists_after(remaining),
                        });
                    };
                    if !list.is_multiple_of(8) || (used > 0 && !list.is_multiple_of(PAGE_SIZE)) {
                        return Err(PrpError::ListUnaligned(list));
                    }
                    if used < MAX_LIST_PAGES {
                        prp.lists[used] = list;
                    }
                    used += 1;
                    let slots = capacity(list);
                    if remaining <= slots {
                        break;
                    }
                    remaining -= slots - 1;
                }
                if used > MAX_LIST_PAGES {
                    return Err(PrpError::TooFewLists { needed: used });
                }
                prp.list_count = used;
                prp.prp2 = lists[0];
            }
        }
        Ok(prp)
    }

    /// Full list pages still needed for `remaining` entries.
    fn lists_after(remaining: u64) -> usize {
        let mut n = 0;
        let mut left = remaining;
        while left > 0 {
            n += 1;
            if left <= ENTRIES_PER_PAGE {
                break;
            }
            left -= ENTRIES_PER_PAGE - 1;
        }
        n
    }

    /// The list page addresses used, in chain order.
    pub fn lists(&self) -> &[u64] {
        &self.lists[..self.list_count]
    }

    /// The list slots to fill, in order (none without a list).
    pub fn entries(&self) -> Entries {
        Entries {
            prp: *self,
            list: 0,
            slot: 0,
            next_page: 1,
        }
    }
}

/// Iterator over a transfer's list slots.
#[derive(Clone, Debug)]
pub struct Entries {
    prp: Prp,
    list: usize,
    slot: u64,
    next_page: usize,
}

impl Iterator for Entries {
    type Item = ListEntry;

    fn next(&mut self) -> Option<ListEntry> {
        let prp = &self.prp;
        if prp.list_count == 0 || self.next_page >= prp.pages {
            return None;
        }
        let list = prp.lists[self.list];
        let addr = list + 8 * self.slot;
        let left = (prp.pages - self.next_page) as u64;
        let last_slot = self.slot + 1 == capacity(list);
        let first_page = prp.prp1 - prp.prp1 % PAGE_SIZE;
        if last_slot && left > 1 {
            self.list += 1;
            self.slot = 0;
            return Some(ListEntry {
                addr,
                value: prp.lists[self.list],
                kind: EntryKind::Chain(self.list),
            });
        }
        let page = self.next_page;
        self.next_page += 1;
        self.slot += 1;
        Some(ListEntry {
            addr,
            value: first_page + page as u64 * PAGE_SIZE,
            kind: EntryKind::Data(page),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: u64 = 0x4100_0000;
    const LIST: u64 = 0x4200_0000;

    fn collect(prp: &Prp) -> Vec<(u64, u64, EntryKind)> {
        prp.entries().map(|e| (e.addr, e.value, e.kind)).collect()
    }

    #[test]
    fn one_page_needs_only_prp1() {
        let p = Prp::new(DATA + 0x200, 0x200, &[]).unwrap();
        assert_eq!(
            (p.prp1, p.prp2, p.pages, p.list_count),
            (DATA + 0x200, 0, 1, 0)
        );
        assert_eq!(p.entries().count(), 0);
    }

    #[test]
    fn two_pages_put_the_second_in_prp2() {
        // 1 KiB starting 512 bytes before a page end: two pages.
        let p = Prp::new(DATA + 0xe00, 0x400, &[LIST]).unwrap();
        assert_eq!((p.prp1, p.prp2, p.pages), (DATA + 0xe00, DATA + 0x1000, 2));
        assert_eq!(p.entries().count(), 0);
    }

    #[test]
    fn four_pages_use_a_list() {
        let p = Prp::new(DATA, 0x4000, &[LIST]).unwrap();
        assert_eq!((p.prp1, p.prp2, p.pages, p.list_count), (DATA, LIST, 4, 1));
        assert_eq!(
            collect(&p),
            [
                (LIST, DATA + 0x1000, EntryKind::Data(1)),
                (LIST + 8, DATA + 0x2000, EntryKind::Data(2)),
                (LIST + 16, DATA + 0x3000, EntryKind::Data(3)),
            ]
        );
    }

    #[test]
    fn list_near_the_page_end_chains() {
        // Two slots before the page end: one data entry, then a chain to the
        // second list page, which holds the remaining two entries.
        let second = LIST + 0x1000;
        let p = Prp::new(DATA, 0x4000, &[LIST + 0xff0, second]).unwrap();
        assert_eq!((p.prp2, p.list_count), (LIST + 0xff0, 2));
        assert_eq!(p.lists(), &[LIST + 0xff0, second]);
        assert_eq!(
            collect(&p),
            [
                (LIST + 0xff0, DATA + 0x1000, EntryKind::Data(1)),
                (LIST + 0xff8, second, EntryKind::Chain(1)),
                (second, DATA + 0x2000, EntryKind::Data(2)),
                (second + 8, DATA + 0x3000, EntryKind::Data(3)),
            ]
        );
    }

    #[test]
    fn exactly_filling_the_last_slot_does_not_chain() {
        // Three pages: two list entries fit the two slots before the end.
        let p = Prp::new(DATA, 0x3000, &[LIST + 0xff0]).unwrap();
        assert_eq!(p.list_count, 1);
        assert_eq!(
            collect(&p).iter().map(|e| e.2).collect::<Vec<_>>(),
            [EntryKind::Data(1), EntryKind::Data(2)]
        );
    }

    #[test]
    fn full_page_list_chains_after_511_entries() {
        // 514 pages: 513 entries = 511 + chain in list 0, 2 in list 1.
        let p = Prp::new(DATA, 514 * PAGE_SIZE, &[LIST, LIST + 0x1000]).unwrap();
        let e = collect(&p);
        assert_eq!(e.len(), 514);
        assert_eq!(
            e[510],
            (LIST + 510 * 8, DATA + 511 * PAGE_SIZE, EntryKind::Data(511))
        );
        assert_eq!(e[511], (LIST + 511 * 8, LIST + 0x1000, EntryKind::Chain(1)));
        assert_eq!(
            e[513],
            (LIST + 0x1008, DATA + 513 * PAGE_SIZE, EntryKind::Data(513))
        );
        // 513 pages: 512 entries fit one list exactly.
        assert_eq!(
            Prp::new(DATA, 513 * PAGE_SIZE, &[LIST]).unwrap().list_count,
            1
        );
    }

    #[test]
    fn offset_data_counts_pages_from_the_offset() {
        // 8 KiB starting at offset 0x800 touches three pages.
        let p = Prp::new(DATA + 0x800, 0x2000, &[LIST]).unwrap();
        assert_eq!(p.pages, 3);
        assert_eq!(
            collect(&p),
            [
                (LIST, DATA + 0x1000, EntryKind::Data(1)),
                (LIST + 8, DATA + 0x2000, EntryKind::Data(2)),
            ]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(Prp::new(DATA, 0, &[]), Err(PrpError::Empty));
        assert_eq!(
            Prp::new(DATA + 2, 8, &[]),
            Err(PrpError::DataUnaligned(DATA + 2))
        );
        assert_eq!(
            Prp::new(DATA, 0x4000, &[LIST + 4]),
            Err(PrpError::ListUnaligned(LIST + 4))
        );
        assert_eq!(
            Prp::new(DATA, 0x4000, &[LIST + 0xff0, LIST + 0x1008]),
            Err(PrpError::ListUnaligned(LIST + 0x1008))
        );
        assert_eq!(
            Prp::new(DATA, 0x4000, &[]),
            Err(PrpError::TooFewLists { needed: 1 })
        );
        assert_eq!(
            Prp::new(DATA, 0x4000, &[LIST + 0xff8]),
            Err(PrpError::TooFewLists { needed: 2 })
        );
    }
}
