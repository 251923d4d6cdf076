//! SHA-256 (FIPS 180-4 §6.2) over a compression function the caller chooses: the software one
//! of the `sha2` crate ([`software`]), or the hypervisor's, which uses the CPU's SHA-256
//! instructions where the core has them (`microvisor_arch::crypto`). This module does the
//! padding and the block bookkeeping; the compression function only ever sees whole blocks.

/// The SHA-256 compression function: folds whole 64-byte blocks into the state (FIPS 180-4
/// §6.2.2, steps 1 to 4, for each block in order).
pub type Compress = fn(&mut [u32; 8], &[[u8; 64]]);

/// Bytes per block.
pub const BLOCK: usize = 64;

/// The initial hash value H(0) (FIPS 180-4 §5.3.3).
pub const INITIAL_STATE: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The round constants K (FIPS 180-4 §4.2.2), for compression functions that need them.
pub const ROUND_CONSTANTS: [u32; 64] = [
    0x428a_2f98,
    0x7137_4491,
    0xb5c0_fbcf,
    0xe9b5_dba5,
    0x3956_c25b,
    0x59f1_11f1,
    0x923f_82a4,
    0xab1c_5ed5,
    0xd807_aa98,
    0x1283_5b01,
    0x2431_85be,
    0x550c_7dc3,
    0x72be_5d74,
    0x80de_b1fe,
    0x9bdc_06a7,
    0xc19b_f174,
    0xe49b_69c1,
    0xefbe_4786,
    0x0fc1_9dc6,
    0x240c_a1cc,
    0x2de9_2c6f,
    0x4a74_84aa,
    0x5cb0_a9dc,
    0x76f9_88da,
    0x983e_5152,
    0xa831_c66d,
    0xb003_27c8,
    0xbf59_7fc7,
    0xc6e0_0bf3,
    0xd5a7_9147,
    0x06ca_6351,
    0x1429_2967,
    0x27b7_0a85,
    0x2e1b_2138,
    0x4d2c_6dfc,
    0x5338_0d13,
    0x650a_7354,
    0x766a_0abb,
    0x81c2_c92e,
    0x9272_2c85,
    0xa2bf_e8a1,
    0xa81a_664b,
    0xc24b_8b70,
    0xc76c_51a3,
    0xd192_e819,
    0xd699_0624,
    0xf40e_3585,
    0x106a_a070,
    0x19a4_c116,
    0x1e37_6c08,
    0x2748_774c,
    0x34b0_bcb5,
    0x391c_0cb3,
    0x4ed8_aa4a,
    0x5b9c_ca4f,
    0x682e_6ff3,
    0x748f_82ee,
    0x78a5_636f,
    0x84c8_7814,
    0x8cc7_0208,
    0x90be_fffa,
    0xa450_6ceb,
    0xbef9_a3f7,
    0xc671_78f2,
];

/// The compression function in software (the `sha2` crate's; its compact loop of the 64 rounds
/// in the hypervisor, which only needs it where a core has no SHA-256 instructions: plan's
/// Cargo.toml, `force-soft-compact`).
pub fn software(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    use sha2::digest::generic_array::GenericArray;
    for block in blocks {
        sha2::compress256(
            state,
            core::slice::from_ref(GenericArray::from_slice(block)),
        );
    }
}

/// A SHA-256 computation in progress.
#[derive(Clone, Debug)]
pub struct Sha256 {
    compress: Compress,
    state: [u32; 8],
    /// Bytes of an incomplete block.
    pending: [u8; BLOCK],
    pending_len: usize,
    /// Bytes hashed so far.
    length: u64,
}

impl Sha256 {
    /// A new computation with `compress` as its compression function.
    pub fn new(compress: Compress) -> Sha256 {
        Sha256 {
            compress,
            state: INITIAL_STATE,
            pending: [0; BLOCK],
            pending_len: 0,
            length: 0,
        }
    }

    /// Hashes `bytes` after what came before. Whole blocks go to the compression function in
    /// one call, straight from `bytes`.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len() as u64);
        if self.pending_len > 0 {
            let take = (BLOCK - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..][..take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < BLOCK {
                return;
            }
            (self.compress)(&mut self.state, core::slice::from_ref(&self.pending));
            self.pending_len = 0;
        }
        let (blocks, rest) = bytes.as_chunks::<BLOCK>();
        if !blocks.is_empty() {
            (self.compress)(&mut self.state, blocks);
        }
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The digest: the pending bytes, a one bit, zeros and the length in bits (FIPS 180-4
    /// §5.1.1), then the state as big-endian words.
    pub fn finish(mut self) -> [u8; 32] {
        let bits = self.length.wrapping_mul(8);
        let mut tail = [0u8; 2 * BLOCK];
        tail[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
        tail[self.pending_len] = 0x80;
        let blocks = if self.pending_len < BLOCK - 8 { 1 } else { 2 };
        tail[blocks * BLOCK - 8..blocks * BLOCK].copy_from_slice(&bits.to_be_bytes());
        let (tail, _) = tail[..blocks * BLOCK].as_chunks::<BLOCK>();
        (self.compress)(&mut self.state, tail);
        let mut digest = [0u8; 32];
        for (out, word) in digest.chunks_exact_mut(4).zip(self.state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }
}

/// SHA-256 of `bytes` with `compress`.
pub fn digest(bytes: &[u8], compress: Compress) -> [u8; 32] {
    let mut hasher = Sha256::new(compress);
    hasher.update(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use sha2::Digest;

    fn hex(digest: [u8; 32]) -> alloc::string::String {
        digest.iter().map(|b| alloc::format!("{b:02x}")).collect()
    }

    /// A compression function written from FIPS 180-4 §6.2.2 alone, to check [`software`]
    /// and the constants against something that is not the `sha2` crate.
    fn textbook(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
        for block in blocks {
            let mut w = [0u32; 64];
            for (t, word) in block.chunks_exact(4).enumerate() {
                w[t] = u32::from_be_bytes(word.try_into().unwrap());
            }
            for t in 16..64 {
                let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
                let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
                w[t] = w[t - 16]
                    .wrapping_add(s0)
                    .wrapping_add(w[t - 7])
                    .wrapping_add(s1);
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
            for t in 0..64 {
                let big1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
                let ch = (e & f) ^ (!e & g);
                let t1 = h
                    .wrapping_add(big1)
                    .wrapping_add(ch)
                    .wrapping_add(ROUND_CONSTANTS[t])
                    .wrapping_add(w[t]);
                let big0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
                let maj = (a & b) ^ (a & c) ^ (b & c);
                let t2 = big0.wrapping_add(maj);
                (h, g, f, e, d, c, b, a) =
                    (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
            }
            for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *s = s.wrapping_add(v);
            }
        }
    }

    /// FIPS 180-2 appendix B and the NIST example values.
    const VECTORS: [(&[u8], &str); 4] = [
        (
            b"abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            b"",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
        (
            b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
        ),
    ];

    #[test]
    fn known_vectors_with_both_compressions() {
        for compress in [software as Compress, textbook] {
            for (input, expected) in VECTORS {
                assert_eq!(hex(digest(input, compress)), expected, "{input:?}");
            }
        }
    }

    #[test]
    fn a_million_a() {
        let input = alloc::vec![b'a'; 1_000_000];
        let expected = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
        assert_eq!(hex(digest(&input, software)), expected);
        assert_eq!(hex(digest(&input, textbook)), expected);
    }

    /// Every length around the padding boundaries, fed in pieces of every size, gives what the
    /// `sha2` crate gives for the whole.
    #[test]
    fn any_length_in_any_pieces() {
        let data: Vec<u8> = (0..600u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in (0..200).chain([447, 448, 511, 512, 513, 575, 576, 600]) {
            let whole = &data[..len];
            let expected: [u8; 32] = sha2::Sha256::digest(whole).into();
            for piece in [1, 3, 63, 64, 65, 128, 200] {
                let mut hasher = Sha256::new(textbook);
                whole.chunks(piece).for_each(|c| hasher.update(c));
                assert_eq!(hasher.finish(), expected, "len {len} piece {piece}");
            }
            assert_eq!(digest(whole, software), expected, "len {len}");
        }
    }

    #[test]
    fn whole_blocks_reach_the_compression_function_together() {
        use core::sync::atomic::{AtomicUsize, Ordering};
        static LARGEST: AtomicUsize = AtomicUsize::new(0);
        fn counting(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
            LARGEST.fetch_max(blocks.len(), Ordering::Relaxed);
            software(state, blocks);
        }
        let data = alloc::vec![7u8; 64 * 100 + 5];
        let mut hasher = Sha256::new(counting);
        hasher.update(&data[..5]);
        hasher.update(&data[5..]);
        assert_eq!(
            hasher.finish(),
            <[u8; 32]>::from(sha2::Sha256::digest(&data))
        );
        assert_eq!(LARGEST.load(Ordering::Relaxed), 99);
    }
}
