//! HPACK's static Huffman code (RFC 7541 Appendix B), decoding only.
//!
//! The code is canonical: sorted by (length, symbol), each code is the
//! previous one plus one, shifted left by the growth in length (checked by
//! a test). So a decoder needs, per length, only the first code and how
//! many symbols have that length: reading a string bit by bit, the bits so
//! far are a complete code exactly when they fall inside that range. The
//! common short codes are read ten bits at a time through a 2 KiB lookup
//! table. All tables are computed at compile time from the RFC's table
//! below, which stays the single source.

/// `(code, length in bits)` per symbol 0..=256, copied from RFC 7541
/// Appendix B (256 is EOS).
#[expect(
    clippy::unreadable_literal,
    reason = "written as RFC 7541 Appendix B prints them, to compare at a glance"
)]
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

/// Per length: the first code, how many codes, and where their symbols
/// start in `SYMBOLS`.
struct Canonical {
    first: [u32; MAX_LEN + 1],
    count: [u16; MAX_LEN + 1],
    offset: [u16; MAX_LEN + 1],
    /// Symbols sorted by (length, symbol), i.e. by code within a length.
    symbols: [u16; 257],
}

const fn canonical() -> Canonical {
    let mut c = Canonical {
        first: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut next = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        c.offset[len] = next;
        let mut sym = 0;
        while sym < CODES.len() {
            if CODES[sym].1 as usize == len {
                if c.count[len] == 0 {
                    c.first[len] = CODES[sym].0;
                }
                c.count[len] += 1;
                #[expect(clippy::cast_possible_truncation, reason = "sym < 257")]
                let s = sym as u16;
                c.symbols[next as usize] = s;
                next += 1;
            }
            sym += 1;
        }
        len += 1;
    }
    c
}

static TABLE: Canonical = canonical();

/// Why a Huffman string is invalid (RFC 7541 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    #[error("Huffman string contains EOS")]
    Eos,
    #[error("Huffman string has a code longer than 30 bits")]
    BadCode,
    #[error("Huffman padding is longer than 7 bits or not all ones")]
    BadPadding,
}

/// Bits the lookup table reads at once: every code of up to this length
/// (the 79 commonest symbols, all of `a-z0-9` among them) is decoded with
/// one lookup; longer ones by the canonical ranges.
const LOOKUP: u32 = 10;
const LOOKUP_MASK: u64 = (1 << LOOKUP) - 1;

/// `(symbol, length)` of the code the next [`LOOKUP`] bits start with;
/// length 0 when that code is longer.
static FAST: [(u8, u8); 1 << LOOKUP] = fast_table();

const fn fast_table() -> [(u8, u8); 1 << LOOKUP] {
    let mut t = [(0u8, 0u8); 1 << LOOKUP];
    let mut sym = 0;
    // EOS (256) is 30 bits long: never in this table.
    while sym < 256 {
        let (code, len) = CODES[sym];
        if len as u32 <= LOOKUP {
            let spare = LOOKUP - len as u32;
            let first = (code << spare) as usize;
            let mut i = 0;
            while i < 1 << spare {
                #[expect(clippy::cast_possible_truncation, reason = "sym < 256")]
                let s = sym as u8;
                t[first + i] = (s, len);
                i += 1;
            }
        }
        sym += 1;
    }
    t
}

/// Decodes a Huffman-coded string, appending to `out`.
///
/// The bits are read into a 64-bit window; the next [`LOOKUP`] bits index
/// [`FAST`], and a longer code is found in the canonical ranges. At the
/// end, fewer bits than a lookup are padded with ones (what the padding
/// must be anyway), and a code is taken only if it ends within the real
/// bits. The result is the bit-at-a-time reading's (a test compares them
/// on any bytes).
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    out.reserve(input.len() * 8 / 5);
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut rest = input;
    loop {
        // Keep at least 57 bits while input lasts (more than any code).
        while bits <= 56 {
            let Some((&b, r)) = rest.split_first() else {
                break;
            };
            acc = (acc << 8) | u64::from(b);
            bits += 8;
            rest = r;
        }
        let (sym, len) = if bits >= LOOKUP {
            let (sym, len) = FAST[((acc >> (bits - LOOKUP)) & LOOKUP_MASK) as usize];
            if len != 0 {
                (u16::from(sym), u32::from(len))
            } else {
                match long_code(acc, bits)? {
                    Some(code) => code,
                    None => break,
                }
            }
        } else {
            // The input is all read: pad with ones.
            let pad = LOOKUP - bits;
            let index = ((acc << pad) | ((1 << pad) - 1)) & LOOKUP_MASK;
            let (sym, len) = FAST[index as usize];
            if len == 0 || u32::from(len) > bits {
                break;
            }
            (u16::from(sym), u32::from(len))
        };
        if sym == EOS {
            return Err(HuffmanError::Eos);
        }
        // Symbols other than EOS are bytes.
        out.push(u8::try_from(sym).unwrap_or(0));
        bits -= len;
    }
    // Padding: the most significant bits of EOS (all ones), under 8 bits.
    let ones = (1u64 << bits) - 1;
    if bits > 7 || acc & ones != ones {
        return Err(HuffmanError::BadPadding);
    }
    Ok(())
}

/// The code longer than [`LOOKUP`] bits at the top of the window's `bits`
/// bits: `(symbol, length)`, or None when the window ends first.
fn long_code(acc: u64, bits: u32) -> Result<Option<(u16, u32)>, HuffmanError> {
    let t = &TABLE;
    // Up to MAX_LEN (30) bits.
    for l in (LOOKUP + 1)..=30 {
        let len = l as usize;
        if l > bits {
            return Ok(None);
        }
        #[expect(clippy::cast_possible_truncation, reason = "masked to len <= 30 bits")]
        let code = ((acc >> (bits - l)) & ((1 << l) - 1)) as u32;
        let n = u32::from(t.count[len]);
        if n != 0 && code >= t.first[len] && code - t.first[len] < n {
            let index = usize::from(t.offset[len]) + (code - t.first[len]) as usize;
            return Ok(Some((t.symbols[index], l)));
        }
    }
    Err(HuffmanError::BadCode)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The bit-at-a-time reading the table-driven [`decode`] replaced: the
    /// reference it is compared with.
    fn decode_bitwise(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
        let t = &TABLE;
        let mut code: u32 = 0;
        let mut len: usize = 0;
        for &byte in input {
            for shift in (0..8).rev() {
                code = (code << 1) | u32::from((byte >> shift) & 1);
                len += 1;
                if len > MAX_LEN {
                    return Err(HuffmanError::BadCode);
                }
                let n = u32::from(t.count[len]);
                if n == 0 || code < t.first[len] || code - t.first[len] >= n {
                    continue;
                }
                let index = usize::from(t.offset[len]) + (code - t.first[len]) as usize;
                let sym = t.symbols[index];
                if sym == EOS {
                    return Err(HuffmanError::Eos);
                }
                // Symbols other than EOS are bytes.
                out.push(u8::try_from(sym).unwrap_or(0));
                code = 0;
                len = 0;
            }
        }
        // Padding: the most significant bits of EOS (all ones), under 8 bits.
        if len > 7 || code != (1 << len) - 1 {
            return Err(HuffmanError::BadPadding);
        }
        Ok(())
    }

    /// Encoder for tests only: the decoder must invert it for every byte.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "keeps the low byte on purpose"
    )]
    fn encode(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u64, 0u32);
        for &b in input {
            let (code, len) = CODES[usize::from(b)];
            acc = (acc << len) | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) as u8);
        }
        out
    }

    #[test]
    fn the_code_is_canonical() {
        let mut order: Vec<usize> = (0..CODES.len()).collect();
        order.sort_by_key(|&s| (CODES[s].1, s));
        for w in order.windows(2) {
            let ((pc, pl), (c, l)) = (CODES[w[0]], CODES[w[1]]);
            assert_eq!(c, (pc + 1) << (l - pl), "symbols {} and {}", w[0], w[1]);
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        decode(&encode(&all), &mut out).unwrap();
        assert_eq!(out, all);
    }

    #[test]
    fn rfc_7541_c4_strings() {
        let mut out = Vec::new();
        decode(&hex("f1e3c2e5f23a6ba0ab90f4ff"), &mut out).unwrap();
        assert_eq!(out, b"www.example.com");
        out.clear();
        decode(&hex("25a849e95bb8e8b4bf"), &mut out).unwrap();
        assert_eq!(out, b"custom-value");
    }

    #[test]
    fn invalid_strings_are_refused() {
        let mut out = Vec::new();
        // 30 one-bits: EOS.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xfc], &mut out),
            Err(HuffmanError::Eos)
        );
        // A whole byte of padding.
        assert_eq!(decode(&[0xff], &mut out), Err(HuffmanError::BadPadding));
        // `0` (5 bits 00000) then padding with a zero bit.
        assert_eq!(decode(&[0x02], &mut out), Err(HuffmanError::BadPadding));
        assert!(decode(&[], &mut out).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Any bytes: the same result, the same output, either way.
        #[test]
        fn decodes_any_bytes_as_the_bitwise_reading(input in prop::collection::vec(any::<u8>(), 0..40)) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            prop_assert_eq!(decode(&input, &mut a), decode_bitwise(&input, &mut b));
            prop_assert_eq!(a, b);
        }

        /// Encoded text, possibly cut or with a byte changed: the same.
        #[test]
        fn decodes_bent_codes_as_the_bitwise_reading(
            text in prop::collection::vec(any::<u8>(), 0..60),
            cut in 0usize..80,
            flip in any::<(usize, u8)>(),
        ) {
            let mut input = encode(&text);
            input.truncate(cut.min(input.len()).max(input.len().saturating_sub(cut % 3)));
            if !input.is_empty() && flip.1 != 0 {
                let i = flip.0 % input.len();
                input[i] ^= flip.1;
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            prop_assert_eq!(decode(&input, &mut a), decode_bitwise(&input, &mut b));
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn every_byte_round_trips_alone() {
        for byte in 0..=255u8 {
            let mut out = Vec::new();
            decode(&encode(&[byte]), &mut out).unwrap();
            assert_eq!(out, [byte]);
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
