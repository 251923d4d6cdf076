//! Sets of small numbers (queues, vectors, vCPUs, SPIs) kept as bits of a `u128`.

/// The members of a bit set, lowest first: one step per member, whatever the set's width.
pub fn members(mut set: u128) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        (set != 0).then(|| {
            let member = set.trailing_zeros() as usize;
            set &= set - 1;
            member
        })
    })
}

#[cfg(test)]
mod tests {
    use super::members;
    use alloc::vec::Vec;

    #[test]
    fn members_in_order() {
        assert_eq!(members(0).count(), 0);
        assert_eq!(members(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
        assert_eq!(members(1 << 127 | 2).collect::<Vec<_>>(), [1, 127]);
    }
}
