//! How the sizes of generated files are spread.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::rng::Xoshiro256PlusPlus;
use crate::size::{format_size, parse_size, SizeError};

/// The shape parameter of [`SizeDist::LogNormal`]: the standard deviation of
/// the natural log of the size. With 1.0, half the files lie within a factor
/// of about 2 of the median and 95% within a factor of about 7, close to
/// what file-system surveys report for real trees.
pub const LOGNORMAL_SIGMA: f64 = 1.0;

/// How many standard deviations a log-normal size may stray from the median
/// before it is clamped: sizes stay within a factor of e^4 (about 55) of the
/// median, so one rare draw cannot make a file of terabytes.
pub const LOGNORMAL_MAX_DEVIATIONS: f64 = 4.0;

/// The distribution of file sizes in a workload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SizeDist {
    /// Every file has the workload's fixed size (`--size`).
    Fixed,
    /// Sizes uniform between `min` and `max` bytes, both included.
    Uniform {
        /// The smallest size.
        min: u64,
        /// The largest size.
        max: u64,
    },
    /// Log-normal sizes with this median in bytes and a log standard
    /// deviation of [`LOGNORMAL_SIGMA`], clamped to
    /// [`LOGNORMAL_MAX_DEVIATIONS`]: many small files and a long tail of
    /// large ones, like real file trees.
    LogNormal {
        /// The median size in bytes.
        median: u64,
    },
}

/// The distributions accepted by [`SizeDist::from_str`].
const DIST_HELP: &str = "fixed, uniform:MIN..MAX or lognormal:MEDIAN";

/// Why a size distribution could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DistError {
    /// The name before `:` is not a distribution.
    #[error("unknown size distribution {0:?} (expected {DIST_HELP})")]
    UnknownKind(String),
    /// `fixed` with an argument: its size comes from elsewhere.
    #[error(
        "invalid size distribution {0:?}: fixed takes no argument (give the size with --size)"
    )]
    FixedArgument(String),
    /// `uniform` without `MIN..MAX`.
    #[error("invalid size distribution {0:?}: uniform needs bounds, e.g. uniform:1KiB..4MiB")]
    MissingBounds(String),
    /// `uniform` with MIN above MAX.
    #[error("invalid size distribution {input:?}: the minimum {min} bytes is above the maximum {max} bytes")]
    BoundsReversed {
        /// The whole text given.
        input: String,
        /// The lower bound in bytes.
        min: u64,
        /// The upper bound in bytes.
        max: u64,
    },
    /// `lognormal` with a median of 0.
    #[error("invalid size distribution {0:?}: the median must be above 0 bytes")]
    ZeroMedian(String),
    /// A bound or the median is not a size.
    #[error("invalid size distribution {input:?}: {source}")]
    Size {
        /// The whole text given.
        input: String,
        /// Why the size was refused.
        source: SizeError,
    },
}

impl FromStr for SizeDist {
    type Err = DistError;

    /// Reads `fixed`, `uniform:MIN..MAX` or `lognormal:MEDIAN`, with sizes
    /// as [`parse_size`] reads them.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (kind, argument) = match input.trim().split_once(':') {
            Some((k, a)) => (k.trim(), Some(a)),
            None => (input.trim(), None),
        };
        let size = |text: &str| {
            parse_size(text).map_err(|source| DistError::Size {
                input: input.to_owned(),
                source,
            })
        };
        match (kind.to_ascii_lowercase().as_str(), argument) {
            ("fixed", None) => Ok(SizeDist::Fixed),
            ("fixed", Some(_)) => Err(DistError::FixedArgument(input.to_owned())),
            ("uniform", Some(bounds)) => {
                let (min, max) = bounds
                    .split_once("..")
                    .ok_or_else(|| DistError::MissingBounds(input.to_owned()))?;
                let (min, max) = (size(min)?, size(max)?);
                if min > max {
                    return Err(DistError::BoundsReversed {
                        input: input.to_owned(),
                        min,
                        max,
                    });
                }
                Ok(SizeDist::Uniform { min, max })
            }
            ("uniform", None) => Err(DistError::MissingBounds(input.to_owned())),
            ("lognormal", Some(median)) => match size(median)? {
                0 => Err(DistError::ZeroMedian(input.to_owned())),
                median => Ok(SizeDist::LogNormal { median }),
            },
            _ => Err(DistError::UnknownKind(input.to_owned())),
        }
    }
}

impl fmt::Display for SizeDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SizeDist::Fixed => f.write_str("fixed"),
            SizeDist::Uniform { min, max } => {
                write!(f, "uniform:{}..{}", format_size(min), format_size(max))
            }
            SizeDist::LogNormal { median } => write!(f, "lognormal:{}", format_size(median)),
        }
    }
}

impl SizeDist {
    /// Draws one size; `fixed` is the size of [`SizeDist::Fixed`].
    pub(crate) fn sample(&self, fixed: u64, rng: &mut Xoshiro256PlusPlus) -> u64 {
        match *self {
            SizeDist::Fixed => fixed,
            SizeDist::Uniform { min, max } => match (max - min).checked_add(1) {
                Some(span) => min + rng.below(span),
                None => rng.next_u64(),
            },
            SizeDist::LogNormal { median } => {
                // Box-Muller: two uniforms give one standard normal draw.
                let u1 = 1.0 - rng.next_f64();
                let u2 = rng.next_f64();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let z = z.clamp(-LOGNORMAL_MAX_DEVIATIONS, LOGNORMAL_MAX_DEVIATIONS);
                // `as` saturates, so a huge median cannot wrap around.
                (median as f64 * (LOGNORMAL_SIGMA * z).exp()).round() as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Purpose;

    #[test]
    fn parses_every_kind() {
        assert_eq!("fixed".parse(), Ok(SizeDist::Fixed));
        assert_eq!(
            "uniform:1KiB..4KiB".parse(),
            Ok(SizeDist::Uniform {
                min: 1024,
                max: 4096
            })
        );
        assert_eq!(
            "Uniform:10..10".parse(),
            Ok(SizeDist::Uniform { min: 10, max: 10 })
        );
        assert_eq!(
            "lognormal:64KiB".parse(),
            Ok(SizeDist::LogNormal { median: 65536 })
        );
    }

    #[test]
    fn display_round_trips() {
        for text in ["fixed", "uniform:1KiB..4MiB", "lognormal:1000B"] {
            let dist: SizeDist = text.parse().expect("valid");
            assert_eq!(dist.to_string(), text);
        }
    }

    #[test]
    fn refuses_bad_input_clearly() {
        assert!(matches!(
            "gamma:1KiB".parse::<SizeDist>(),
            Err(DistError::UnknownKind(_))
        ));
        assert!(matches!(
            "uniform".parse::<SizeDist>(),
            Err(DistError::MissingBounds(_))
        ));
        assert!(matches!(
            "uniform:1KiB".parse::<SizeDist>(),
            Err(DistError::MissingBounds(_))
        ));
        assert!(matches!(
            "uniform:4KiB..1KiB".parse::<SizeDist>(),
            Err(DistError::BoundsReversed { .. })
        ));
        assert!(matches!(
            "lognormal:0".parse::<SizeDist>(),
            Err(DistError::ZeroMedian(_))
        ));
        let err = "uniform:1XB..2KiB".parse::<SizeDist>().unwrap_err();
        assert!(err.to_string().contains("unknown unit"), "{err}");
        assert!(matches!(
            "fixed:1KiB".parse::<SizeDist>(),
            Err(DistError::FixedArgument(_))
        ));
    }

    #[test]
    fn uniform_covers_its_bounds_only() {
        let dist = SizeDist::Uniform { min: 10, max: 13 };
        let mut rng = Xoshiro256PlusPlus::derive(Purpose::FileSize, 0, [0, 0]);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            let size = dist.sample(0, &mut rng);
            assert!((10..=13).contains(&size));
            seen[(size - 10) as usize] = true;
        }
        assert_eq!(seen, [true; 4]);
        let full = SizeDist::Uniform {
            min: 0,
            max: u64::MAX,
        };
        full.sample(0, &mut rng);
    }

    #[test]
    fn lognormal_is_clamped() {
        let dist = SizeDist::LogNormal { median: 1000 };
        let mut rng = Xoshiro256PlusPlus::derive(Purpose::FileSize, 0, [0, 0]);
        let bound = LOGNORMAL_MAX_DEVIATIONS.exp();
        for _ in 0..100_000 {
            let size = dist.sample(0, &mut rng) as f64;
            assert!(size <= 1000.0 * bound + 1.0 && size >= 1000.0 / bound - 1.0);
        }
    }
}
