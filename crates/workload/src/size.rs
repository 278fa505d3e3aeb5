//! Byte sizes written by people: `4KiB`, `1MB`, `1.5MiB`, `512`.

use thiserror::Error;

/// One unit a size may carry, with its multiplier in bytes.
struct Unit {
    /// The spelling, compared case-insensitively.
    name: &'static str,
    /// Bytes per unit.
    bytes: u64,
}

/// Every accepted unit. Decimal units (kB, MB...) are powers of 10, binary
/// units (KiB, MiB...) powers of 2, as in IEC 80000-13.
const UNITS: &[Unit] = &[
    Unit {
        name: "b",
        bytes: 1,
    },
    Unit {
        name: "kb",
        bytes: 1_000,
    },
    Unit {
        name: "kib",
        bytes: 1 << 10,
    },
    Unit {
        name: "mb",
        bytes: 1_000_000,
    },
    Unit {
        name: "mib",
        bytes: 1 << 20,
    },
    Unit {
        name: "gb",
        bytes: 1_000_000_000,
    },
    Unit {
        name: "gib",
        bytes: 1 << 30,
    },
    Unit {
        name: "tb",
        bytes: 1_000_000_000_000,
    },
    Unit {
        name: "tib",
        bytes: 1 << 40,
    },
];

/// The units as they are shown in error messages.
const UNITS_HELP: &str = "B, kB, KiB, MB, MiB, GB, GiB, TB or TiB";

/// Why a size could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SizeError {
    /// Nothing was given.
    #[error("empty size: expected a number with an optional unit, e.g. 4KiB or 1MB")]
    Empty,
    /// The part before the unit is not a non-negative decimal number.
    #[error(
        "invalid size {input:?}: {number:?} is not a number (expected e.g. 4KiB, 1.5MiB, 512)"
    )]
    InvalidNumber {
        /// The whole text given.
        input: String,
        /// The part that should have been a number.
        number: String,
    },
    /// The unit is not one of B, kB/KiB, MB/MiB, GB/GiB, TB/TiB.
    #[error("invalid size {input:?}: unknown unit {unit:?} (expected {UNITS_HELP})")]
    UnknownUnit {
        /// The whole text given.
        input: String,
        /// The unit as given.
        unit: String,
    },
    /// The size does not fit in 64 bits.
    #[error("invalid size {input:?}: too large (at most 2^64 - 1 bytes)")]
    TooLarge {
        /// The whole text given.
        input: String,
    },
}

/// Reads a size such as `4KiB`, `1MB` (10^6 bytes), `1MiB` (2^20 bytes),
/// `2GiB`, `512` (bytes), `10kB` or `1.5MiB`.
///
/// Units are case-insensitive: B, kB/KiB, MB/MiB, GB/GiB, TB/TiB; no unit
/// means bytes. Spaces around the number and unit are allowed. A fraction is
/// rounded to the nearest byte (`1.5KiB` is 1536 bytes, `0.3kB` 300).
///
/// # Errors
/// [`SizeError`] when the text is empty, the number is not a non-negative
/// decimal, the unit is unknown, or the size overflows a `u64`.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(SizeError::Empty);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    let invalid = || SizeError::InvalidNumber {
        input: input.to_owned(),
        number: if number.is_empty() { text } else { number }.to_owned(),
    };
    if number.is_empty() {
        return Err(invalid());
    }
    let bytes_per_unit = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(unit))
            .map(|u| u.bytes)
            .ok_or_else(|| SizeError::UnknownUnit {
                input: input.to_owned(),
                unit: unit.to_owned(),
            })?
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(invalid());
    }
    let too_large = || SizeError::TooLarge {
        input: input.to_owned(),
    };
    // Exact integer arithmetic: whole * unit + round(fraction * unit).
    let whole_value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse::<u128>().map_err(|_| too_large())?
    };
    let mut total = whole_value
        .checked_mul(u128::from(bytes_per_unit))
        .ok_or_else(too_large)?;
    // Digits past the 19th are ignored: with units of at most 2^40 bytes they
    // weigh less than 10^-6 of a byte.
    let fraction = &fraction[..fraction.len().min(19)];
    if !fraction.is_empty() {
        let numerator: u128 = fraction.parse().map_err(|_| invalid())?;
        let denominator = 10u128.pow(fraction.len() as u32);
        let scaled = numerator * u128::from(bytes_per_unit);
        total += (scaled + denominator / 2) / denominator;
    }
    u64::try_from(total).map_err(|_| too_large())
}

/// Writes `bytes` the way [`parse_size`] reads it back: in the largest
/// binary unit that divides it exactly (`1MiB`, `1536KiB`), or in bytes.
pub fn format_size(bytes: u64) -> String {
    const BINARY: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in BINARY {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{name}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// A size for people to read, in IEC units with one decimal (`0 B`,
/// `512 B`, `1.5 KiB`, `23.4 MiB`, `1.0 GiB`): the one unit system of every
/// summary, note and bar of the command line (parsing still accepts the
/// decimal units too).
pub fn human_size(bytes: u64) -> String {
    const BINARY: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // 1023.95 would print as 1024.0: move on to the next unit instead.
    while value >= 1023.95 && unit + 1 < BINARY.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", BINARY[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_are_iec_with_one_decimal() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(256 << 20), "256.0 MiB");
        assert_eq!(human_size((1 << 20) - 1), "1.0 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn units_and_plain_bytes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("10kB"), Ok(10_000));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("3GB"), Ok(3_000_000_000));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("1tb"), Ok(1_000_000_000_000));
    }

    #[test]
    fn case_spaces_and_fractions() {
        assert_eq!(parse_size("4kib"), Ok(4096));
        assert_eq!(parse_size(" 4 KIB "), Ok(4096));
        assert_eq!(parse_size("1.5MiB"), Ok(1_572_864));
        assert_eq!(parse_size("0.5KiB"), Ok(512));
        assert_eq!(parse_size(".5KiB"), Ok(512));
        assert_eq!(parse_size("2."), Ok(2));
        assert_eq!(parse_size("1.0001KiB"), Ok(1024));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        let err = parse_size("4QB").unwrap_err();
        assert!(matches!(err, SizeError::UnknownUnit { ref unit, .. } if unit == "QB"));
        assert!(err.to_string().contains("KiB"), "{err}");
        assert!(matches!(
            parse_size("-4KiB"),
            Err(SizeError::InvalidNumber { .. })
        ));
        assert!(matches!(
            parse_size("1.2.3"),
            Err(SizeError::InvalidNumber { .. })
        ));
        assert!(matches!(
            parse_size("MiB"),
            Err(SizeError::InvalidNumber { .. })
        ));
        assert!(matches!(
            parse_size("."),
            Err(SizeError::InvalidNumber { .. })
        ));
        assert!(matches!(
            parse_size("20000000TiB"),
            Err(SizeError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_size("99999999999999999999999999999999999999999"),
            Err(SizeError::TooLarge { .. })
        ));
    }

    #[test]
    fn format_round_trips() {
        for bytes in [0, 1, 1000, 1024, 1536, 1 << 20, 3 << 30, 5 << 40, 12345] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
        }
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(3 << 10), "3KiB");
    }
}
