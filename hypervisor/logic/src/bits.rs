//! Sets of small numbers (queues, vectors, vCPUs, SPIs) kept as bits of a `u128`.

/// The members of a bit set, lowest first: one step per member, whatever the set's width.
/// The set is walked as two 64-bit words (128-bit arithmetic costs several instructions per
/// step on aarch64, and these loops run on guest exits).
pub fn members(set: u128) -> impl Iterator<Item = usize> {
    let word = |mut bits: u64, base: usize| {
        core::iter::from_fn(move || {
            (bits != 0).then(|| {
                let member = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                base + member
            })
        })
    };
    word(set as u64, 0).chain(word((set >> 64) as u64, 64))
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
