//! The two text encodings of age: unpadded canonical base64 (RFC 4648
//! section 4 without `=`, section 3.5 canonical) and Bech32 (BIP 173
//! without its length limit).

/// The standard base64 alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The value of base64 character `c`, if it is one.
pub(crate) fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Encodes `data` as unpadded base64.
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let chars = group.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes unpadded, canonical base64; `None` for any other text
/// (padding, a stray character, a length of 4k+1, or unused bits that are
/// not zero).
pub fn b64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for group in text.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            n |= u32::from(b64_value(c)?) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        let len = group.len() - 1;
        // The bits below the last whole byte must be zero (canonical).
        let unused = n & ((1u32 << (8 * (3 - len))) - 1);
        if unused != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[1..1 + len]);
    }
    Some(out)
}

/// The Bech32 character set.
const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
/// Bech32 checksum generator constants.
const GENERATOR: [u32; 5] = [
    0x3b6a_57b2,
    0x2650_8e6d,
    0x1ea1_19fa,
    0x3d42_33dd,
    0x2a14_62b3,
];

fn polymod(values: impl Iterator<Item = u8>) -> u32 {
    let mut chk = 1u32;
    for v in values {
        let top = chk >> 25;
        chk = (chk & 0x01ff_ffff) << 5 ^ u32::from(v);
        for (i, g) in GENERATOR.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn hrp_expand(hrp: &[u8]) -> impl Iterator<Item = u8> + '_ {
    hrp.iter()
        .map(|c| c >> 5)
        .chain(std::iter::once(0))
        .chain(hrp.iter().map(|c| c & 31))
}

/// Regroups bits from `from`-bit groups to `to`-bit groups; `pad` adds a
/// final partial group (encoding), otherwise leftover bits must be zero
/// and fewer than `from` (decoding).
fn convert_bits(data: &[u8], from: u32, to: u32, pad: bool) -> Option<Vec<u8>> {
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut out = Vec::with_capacity(data.len() * from as usize / to as usize + 1);
    let max = (1u32 << to) - 1;
    for &v in data {
        acc = (acc << from) | u32::from(v);
        bits += from;
        while bits >= to {
            bits -= to;
            out.push(((acc >> bits) & max) as u8);
        }
    }
    if pad {
        if bits > 0 {
            out.push(((acc << (to - bits)) & max) as u8);
        }
    } else if bits >= from || ((acc << (to - bits)) & max) != 0 {
        return None;
    }
    Some(out)
}

/// Encodes `data` as Bech32 with human-readable part `hrp` (lower case).
pub fn bech32_encode(hrp: &str, data: &[u8]) -> String {
    let hrp = hrp.to_ascii_lowercase();
    let values = convert_bits(data, 8, 5, true).expect("padding always succeeds");
    let checksum = polymod(
        hrp_expand(hrp.as_bytes())
            .chain(values.iter().copied())
            .chain([0u8; 6]),
    ) ^ 1;
    let mut out = hrp;
    out.push('1');
    for v in values {
        out.push(CHARSET[v as usize] as char);
    }
    for i in 0..6 {
        out.push(CHARSET[((checksum >> (5 * (5 - i))) & 31) as usize] as char);
    }
    out
}

/// Decodes a Bech32 string: its human-readable part (lower case) and data.
/// `None` for mixed case, a bad character or a bad checksum.
///
/// Identities are decoded here, so the intermediate copies are wiped.
pub fn bech32_decode(text: &str) -> Option<(String, Vec<u8>)> {
    let lower = zeroize::Zeroizing::new(text.to_ascii_lowercase());
    if *lower != text && text.to_ascii_uppercase() != text {
        return None;
    }
    let at = lower.rfind('1')?;
    let (hrp, rest) = (&lower[..at], &lower.as_bytes()[at + 1..]);
    if hrp.is_empty() || rest.len() < 6 || !hrp.bytes().all(|c| (33..=126).contains(&c)) {
        return None;
    }
    let values = zeroize::Zeroizing::new(
        rest.iter()
            .map(|c| CHARSET.iter().position(|x| x == c).map(|p| p as u8))
            .collect::<Option<Vec<u8>>>()?,
    );
    if polymod(hrp_expand(hrp.as_bytes()).chain(values.iter().copied())) != 1 {
        return None;
    }
    let data = convert_bits(&values[..values.len() - 6], 5, 8, false)?;
    Some((hrp.to_string(), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_non_canonical_text() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let text = b64_encode(&data);
            assert!(!text.contains('='));
            assert_eq!(b64_decode(text.as_bytes()).unwrap(), data);
        }
        assert_eq!(b64_encode(b"f"), "Zg");
        assert!(b64_decode(b"Zh").is_none(), "unused bits set");
        assert!(b64_decode(b"Zg==").is_none(), "padding");
        assert!(b64_decode(b"Z").is_none());
        assert!(b64_decode(b"Zg\n").is_none());
    }

    #[test]
    fn bech32_matches_the_spec_example() {
        let text = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj";
        let (hrp, data) = bech32_decode(text).unwrap();
        assert_eq!((hrp.as_str(), data.len()), ("age", 32));
        assert_eq!(bech32_encode("age", &data), text);
        assert!(bech32_decode(&text.replace('j', "k")).is_none());
        assert!(
            bech32_decode("AGE1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj")
                .is_none()
        );
    }
}
