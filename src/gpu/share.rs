//! How much of the GPUs one job holds: a whole number of them, or an equal
//! share of a single one (`gpus = 0.5`: two such jobs to a GPU). One type,
//! read from the batch file, written in `job.json` and `state.json`, and
//! counted by the scheduler ([`super::pool`]).

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A GPU's capacity in units every share divides exactly: 840 is the least
/// common multiple of 2 to 8, so shares add up without rounding.
pub const UNITS: u32 = 840;

/// How far from 1/n a written share may be and still mean 1/n: 1/n rounded
/// to two decimals (`0.33`, `0.17`, `0.12` or `0.13`) is. The nearest two
/// shares (1/7 and 1/8) are 0.018 apart, so no number means two of them.
const TOLERANCE: f64 = 0.005;

/// The shares as a batch file writes them, for messages: 1/2 to 1/8
/// rounded to two decimals.
pub const WRITTEN: [&str; 7] = ["0.5", "0.33", "0.25", "0.2", "0.17", "0.14", "0.12"];

/// One of `per_gpu` equal shares of a single GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fraction {
    per_gpu: u8,
}

impl Fraction {
    /// 1/`per_gpu`, for `per_gpu` in [`crate::limits::GPU_SHARERS`].
    pub fn of(per_gpu: u8) -> Option<Fraction> {
        crate::limits::GPU_SHARERS
            .contains(per_gpu)
            .then_some(Fraction { per_gpu })
    }

    /// The share a written number stands for: 1/n within 0.005.
    pub fn from_value(v: f64) -> Option<Fraction> {
        let r = crate::limits::GPU_SHARERS;
        (r.min..=r.max)
            .find(|&n| (v - 1.0 / f64::from(n)).abs() <= TOLERANCE + 1e-9)
            .map(|per_gpu| Fraction { per_gpu })
    }

    /// How many jobs of this share one GPU carries.
    pub fn per_gpu(self) -> u8 {
        self.per_gpu
    }

    /// 1/n exactly, for arithmetic (GPU-hours).
    pub fn exact(self) -> f64 {
        1.0 / f64::from(self.per_gpu)
    }

    /// As tb writes it: 1/n to three decimals (0.5, 0.333, 0.25, 0.2,
    /// 0.167, 0.143, 0.125).
    pub fn value(self) -> f64 {
        (1000.0 / f64::from(self.per_gpu)).round() / 1000.0
    }

    /// Its part of a GPU's [`UNITS`].
    pub fn units(self) -> u32 {
        UNITS / u32::from(self.per_gpu)
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.value())
    }
}

impl Serialize for Fraction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.value())
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Fraction::from_value(v).ok_or_else(|| de::Error::custom(format!("invalid gpu_share {v}: {}", allowed())))
    }
}

/// What a job holds of the GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuShare {
    /// This many GPUs, each for itself alone (0: none).
    Whole(u32),
    /// A share of one GPU, which other shares may use at the same time.
    Fraction(Fraction),
}

impl Default for GpuShare {
    fn default() -> Self {
        GpuShare::Whole(0)
    }
}

impl GpuShare {
    /// How many GPUs it touches: a share is of one.
    pub fn gpus(self) -> u32 {
        match self {
            GpuShare::Whole(n) => n,
            GpuShare::Fraction(_) => 1,
        }
    }

    /// The share, if it is one.
    pub fn fraction(self) -> Option<Fraction> {
        match self {
            GpuShare::Whole(_) => None,
            GpuShare::Fraction(f) => Some(f),
        }
    }

    /// For messages: "2 GPU(s)", "a share of a GPU (gpus = 0.5)".
    pub fn describe(self) -> String {
        match self {
            GpuShare::Whole(n) => format!("{n} GPU(s)"),
            GpuShare::Fraction(f) => format!("a share of a GPU (gpus = {f})"),
        }
    }

    /// GPUs' worth held: n, or 1/n of one (for GPU-hours).
    pub fn amount(self) -> f64 {
        match self {
            GpuShare::Whole(n) => f64::from(n),
            GpuShare::Fraction(f) => f.exact(),
        }
    }

    /// A number written in a batch file (or `job.json`): a whole count in
    /// [`crate::limits::GPUS`] or one of the shares. The error names the
    /// allowed values.
    pub fn from_number(v: f64) -> Result<GpuShare, String> {
        let r = crate::limits::GPUS;
        if v.is_finite() && v.fract() == 0.0 && v >= f64::from(r.min) && v <= f64::from(r.max) {
            return Ok(GpuShare::Whole(v as u32));
        }
        match Fraction::from_value(v) {
            Some(f) => Ok(GpuShare::Fraction(f)),
            None => Err(format!("invalid gpus {v}: {}", allowed())),
        }
    }
}

/// The values `gpus` takes as a number.
pub fn allowed() -> String {
    let r = crate::limits::GPUS;
    format!(
        "expected {} or a whole number between {} and {} (a share of one GPU is 1/n, n from {} to {})",
        WRITTEN.join(", "),
        r.shown.0,
        r.shown.1,
        crate::limits::GPU_SHARERS.min,
        crate::limits::GPU_SHARERS.max
    )
}

impl fmt::Display for GpuShare {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            GpuShare::Whole(n) => write!(f, "{n}"),
            GpuShare::Fraction(x) => x.fmt(f),
        }
    }
}

/// A whole count is written as an integer, exactly as before shares
/// existed (`"gpus": 1`): a job's identity hashes it.
impl Serialize for GpuShare {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            GpuShare::Whole(n) => s.serialize_u32(*n),
            GpuShare::Fraction(f) => f.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for GpuShare {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GpuShare;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of GPUs, or a share of one such as 0.5")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GpuShare, E> {
                u32::try_from(v)
                    .map(GpuShare::Whole)
                    .map_err(|_| E::custom(format!("invalid gpus {v}: {}", allowed())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GpuShare, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("invalid gpus {v}: {}", allowed())))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<GpuShare, E> {
                GpuShare::from_number(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_written_share_is_its_fraction() {
        for (n, text) in (2u8..=8).zip(WRITTEN) {
            let v: f64 = text.parse().unwrap();
            assert_eq!(Fraction::from_value(v), Fraction::of(n), "{text}");
            assert_eq!(Fraction::from_value(1.0 / f64::from(n)), Fraction::of(n));
            assert_eq!(Fraction::from_value(Fraction::of(n).unwrap().value()), Fraction::of(n));
        }
        assert_eq!(Fraction::from_value(0.333).map(Fraction::per_gpu), Some(3));
        assert_eq!(Fraction::from_value(0.125).map(Fraction::per_gpu), Some(8));
        assert_eq!(Fraction::from_value(0.13).map(Fraction::per_gpu), Some(8));
        for far in [0.3, 0.34, 0.4, 0.1, 0.6, 0.0, -0.5, 1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Fraction::from_value(far), None, "{far}");
        }
        assert_eq!(Fraction::of(1), None);
        assert_eq!(Fraction::of(9), None);
    }

    #[test]
    fn shares_divide_a_gpu_exactly() {
        for n in 2u8..=8 {
            let f = Fraction::of(n).unwrap();
            assert_eq!(f.units() * u32::from(n), UNITS, "1/{n}");
        }
    }

    #[test]
    fn numbers_are_whole_counts_or_shares() {
        assert_eq!(GpuShare::from_number(2.0), Ok(GpuShare::Whole(2)));
        assert_eq!(GpuShare::from_number(0.0), Ok(GpuShare::Whole(0)));
        assert_eq!(
            GpuShare::from_number(0.5),
            Ok(GpuShare::Fraction(Fraction::of(2).unwrap()))
        );
        for bad in [0.3, 1.5, -1.0, -0.5, 65.0, 1e300, f64::NAN] {
            let e = GpuShare::from_number(bad).unwrap_err();
            assert!(
                e.contains("0.5, 0.33, 0.25, 0.2, 0.17, 0.14, 0.12 or a whole number between 0 and 64"),
                "{e}"
            );
        }
    }

    #[test]
    fn whole_counts_serialize_as_before_and_shares_as_numbers() {
        assert_eq!(serde_json::to_string(&GpuShare::Whole(1)).unwrap(), "1");
        let third = GpuShare::Fraction(Fraction::of(3).unwrap());
        assert_eq!(serde_json::to_string(&third).unwrap(), "0.333");
        assert_eq!(serde_json::from_str::<GpuShare>("0.333").unwrap(), third);
        assert_eq!(serde_json::from_str::<GpuShare>("2").unwrap(), GpuShare::Whole(2));
        assert!(serde_json::from_str::<GpuShare>("0.3").is_err());
        assert!(serde_json::from_str::<GpuShare>("-1").is_err());
        assert_eq!(third.to_string(), "0.333");
        assert_eq!(GpuShare::Whole(3).to_string(), "3");
    }
}
