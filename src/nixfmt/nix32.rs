//! Nix's base-32: its own alphabet (digits and lowercase letters without `e o u t`)
//! and its own bit order (the last character holds the lowest bits of the first
//! byte), which is why no base-32 crate fits. Store path hashes, NAR hashes in
//! narinfo files and content addresses are all written in it.

use super::NixFormatError;

/// Nix's alphabet: digits and lowercase letters without `e o u t`.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// The value of each byte as a digit of [`ALPHABET`], 0xff for a byte that is not
/// one: a table, since a store path's 32-character hash, a NAR hash and each
/// reference are checked digit by digit for every path of a manifest (a search of
/// the alphabet per digit was a tenth of reading a 2,101-path head).
const DIGITS: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// The value of `c` as a digit of Nix's base-32, if it is one.
pub fn digit(c: u8) -> Option<u8> {
    Some(DIGITS[c as usize]).filter(|&d| d != 0xff)
}

/// Length of the encoding of `n` bytes.
pub fn encoded_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n * 8 - 1) / 5 + 1
    }
}

/// Encodes bytes the way Nix does (the last character holds the lowest bits of
/// the first byte).
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut s = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = (bytes[i] as u16) >> j;
        let hi = if i + 1 < bytes.len() {
            (bytes[i + 1] as u16) << (8 - j)
        } else {
            0
        };
        s.push(ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    s
}

/// Decodes into exactly `N` bytes.
pub fn decode<const N: usize>(s: &str) -> Result<[u8; N], NixFormatError> {
    let err = || NixFormatError::Nix32(super::shown(s));
    if s.len() != encoded_len(N) {
        return Err(err());
    }
    let mut out = [0u8; N];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = digit(c).ok_or_else(err)? as u16;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        if i + 1 < N {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(err());
        }
    }
    Ok(out)
}

/// Whether `s` is exactly the encoding of `N` bytes (right length, alphabet, and no
/// bits beyond the last byte).
pub fn is_encoding_of<const N: usize>(s: &str) -> bool {
    decode::<N>(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Digest;

    // Computed by the real Nix 2.8: `echo -n hello | sha256sum` is 2cf24d…9824 and
    // `nix hash to-base32 --type sha256 2cf24dba…9824` prints this.
    const HELLO_HEX: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const HELLO_NIX32: &str = "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic";

    #[test]
    fn the_digit_table_is_the_alphabet() {
        for c in 0..=255u8 {
            let expected = ALPHABET.iter().position(|&a| a == c).map(|i| i as u8);
            assert_eq!(digit(c), expected, "byte {c}");
        }
    }

    #[test]
    fn nix32_matches_the_real_nix() {
        let d = Digest::from_hex(HELLO_HEX).unwrap();
        assert_eq!(encode(d.as_bytes()), HELLO_NIX32);
        assert_eq!(decode::<32>(HELLO_NIX32).unwrap(), *d.as_bytes());
        let mut one = [0u8; 32];
        one[31] = 1;
        // `nix hash to-base32 --type sha256 000…01`
        assert_eq!(
            encode(&one),
            "0080000000000000000000000000000000000000000000000000"
        );
    }

    #[test]
    fn nix32_refuses_bad_input_without_panicking() {
        for bad in [
            "",
            "e",
            &"z".repeat(52),
            &"0".repeat(51),
            "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwi!",
        ] {
            assert!(decode::<32>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nix32_round_trips() {
        for n in 0u8..=255 {
            let bytes = [n.wrapping_mul(37); 32].map(|b| b ^ n);
            assert_eq!(decode::<32>(&encode(&bytes)).unwrap(), bytes);
        }
        let bytes20 = [0xabu8; 20];
        assert_eq!(encoded_len(20), 32);
        assert_eq!(decode::<20>(&encode(&bytes20)).unwrap(), bytes20);
    }
}
