//! Octets of one value found 64 at a time: a bitmask per block, so a pass over a chunk finds
//! every line end with a few vector compares per 64 octets instead of one search call per
//! line (mail lines are about 70 octets: a call's set-up cost as much as its search).

use wide::u8x16;

/// Octets per block: one bit each in a `u64`.
pub const BLOCK: usize = 64;

/// A bit for each octet of `block` equal to `byte`: bit `i` for `block[i]`.
#[inline]
pub fn mask(block: &[u8; BLOCK], byte: u8) -> u64 {
    let want = u8x16::splat(byte);
    let mut bits = 0;
    for (k, lane) in block.as_chunks::<16>().0.iter().enumerate() {
        let hits = u8x16::from(*lane).simd_eq(want).to_bitmask() as u16;
        bits |= u64::from(hits) << (16 * k);
    }
    bits
}

/// The mask of the block at `at` in `hay`, where fewer than [`BLOCK`] octets may be left.
#[inline]
fn mask_at(hay: &[u8], at: usize, byte: u8) -> u64 {
    match hay.get(at..at + BLOCK) {
        Some(block) => mask(block.try_into().expect("a block's length"), byte),
        None => {
            let rest = &hay[at..];
            let mut block = [0; BLOCK];
            block[..rest.len()].copy_from_slice(rest);
            mask(&block, byte) & ((1 << rest.len()) - 1)
        }
    }
}

/// The offsets of every `byte` in `hay`, in order: what `memchr::memchr_iter` yields.
pub fn positions(byte: u8, hay: &[u8]) -> Positions<'_> {
    Positions {
        hay,
        byte,
        next_block: 0,
        bits: 0,
    }
}

/// Iterator returned by [`positions`].
pub struct Positions<'h> {
    hay: &'h [u8],
    byte: u8,
    /// Offset of the block after the one `bits` came from.
    next_block: usize,
    /// The hits of the current block not yet yielded.
    bits: u64,
}

impl Iterator for Positions<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            if self.next_block >= self.hay.len() {
                return None;
            }
            self.bits = mask_at(self.hay, self.next_block, self.byte);
            self.next_block += BLOCK;
        }
        let at = self.next_block - BLOCK + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_memchr_iter_for_every_length_and_alignment() {
        // Pseudo-random octets from a small alphabet, so hits are dense and sparse by turns.
        let mut x: u32 = 0x9e37_79b9;
        let data: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b"\n\n\na.\r\xff\x00"[(x % 9) as usize % 8]
            })
            .collect();
        for start in 0..70 {
            for end in (start..data.len()).step_by(7) {
                let hay = &data[start..end];
                for byte in [b'\n', b'.', 0, 0xff, b'z'] {
                    let ours: Vec<usize> = positions(byte, hay).collect();
                    let theirs: Vec<usize> = memchr::memchr_iter(byte, hay).collect();
                    assert_eq!(ours, theirs, "byte {byte} in {start}..{end}");
                }
            }
        }
    }

    #[test]
    fn a_mask_has_one_bit_per_octet_in_order() {
        let mut block = [b'x'; BLOCK];
        block[0] = b'\n';
        block[17] = b'\n';
        block[63] = b'\n';
        assert_eq!(mask(&block, b'\n'), 1 | 1 << 17 | 1 << 63);
        assert_eq!(mask(&block, b'x'), !(1 | 1 << 17 | 1 << 63));
        assert_eq!(mask(&block, b'y'), 0);
    }
}
