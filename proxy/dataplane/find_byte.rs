//! Finding one byte in a slice eight bytes at a time: the framing guard looks for the end of every
//! head line it sees, on every request.

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte of a word.
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The index of the first `needle` in `haystack`.
///
/// `iter().position` compares one byte per step (about four instructions a byte). Here eight bytes
/// are read as one word, XORed with the needle repeated (a match becomes a zero byte), and the
/// classic zero-byte test `(x - 0x0101…) & !x & 0x8080…` says whether any byte matched. A borrow
/// can only mark bytes above a zero byte, never below it, so with the word read little-endian the
/// lowest marked byte is the first match; a word without a zero byte marks none.
pub(crate) fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    let pattern = u64::from_ne_bytes([needle; 8]);
    let (words, rest) = haystack.as_chunks::<8>();
    for (i, word) in words.iter().enumerate() {
        let x = u64::from_le_bytes(*word) ^ pattern;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(i * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    rest.iter()
        .position(|&b| b == needle)
        .map(|i| words.len() * 8 + i)
}

#[cfg(test)]
mod tests {
    use super::find_byte;

    #[test]
    fn agrees_with_a_byte_by_byte_scan() {
        // Bytes around a match that could fool the zero-byte test: 0x00, 0x01, 0x7F, 0x80, 0x81,
        // 0xFF, and the needle's neighbours.
        let tricky = [
            0x00u8,
            0x01,
            0x7F,
            0x80,
            0x81,
            0xFF,
            b'\n' - 1,
            b'\n' + 1,
            b':',
        ];
        for needle in [b'\n', b':', 0x00, 0x01, 0x80, 0xFF] {
            for len in 0..40 {
                for fill in tricky {
                    let mut hay = vec![fill; len];
                    assert_eq!(
                        find_byte(&hay, needle),
                        hay.iter().position(|&b| b == needle)
                    );
                    for at in 0..len {
                        hay[at] = needle;
                        // A second needle later on: the first must still be found.
                        if at + 3 < len {
                            hay[at + 3] = needle;
                        }
                        assert_eq!(
                            find_byte(&hay, needle),
                            hay.iter().position(|&b| b == needle),
                            "needle {needle:#x} at {at} of {len}, fill {fill:#x}"
                        );
                        hay.fill(fill);
                    }
                }
            }
        }
    }
}
