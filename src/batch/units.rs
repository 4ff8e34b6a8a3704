//! Quantities written in batch files: byte sizes (`"8g"`), durations
//! (`"23h"`), GPU counts (`"auto"`, `0.5`), concurrency (`"auto"`), CPU counts.

use crate::gpu::GpuShare;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A byte count written the way `docker run --memory` takes it: a number
/// with an optional `b`, `k`, `m`, `g` or `t` suffix (powers of 1024). A
/// size past what a `u64` holds reads as `u64::MAX`, which every range in
/// [`crate::limits`] refuses, so the check that knows the key says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteSize {
    pub bytes: u64,
    /// As the file wrote it, for messages.
    pub written: String,
}

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        let t = t
            .strip_suffix('b')
            .filter(|s| !s.is_empty() && s.ends_with(|c: char| c.is_ascii_alphabetic()))
            .unwrap_or(&t);
        let (digits, mult) = match t.chars().last() {
            Some('k') => (&t[..t.len() - 1], 1u64 << 10),
            Some('m') => (&t[..t.len() - 1], 1 << 20),
            Some('g') => (&t[..t.len() - 1], 1 << 30),
            Some('t') => (&t[..t.len() - 1], 1 << 40),
            Some('b') => (&t[..t.len() - 1], 1),
            _ => (t, 1),
        };
        let digits = digits.trim();
        let bad =
            || format!("invalid size `{text}`: expected a number with an optional unit, such as \"512m\" or \"8g\"");
        // Whole numbers exactly (a float loses bytes past 2^53); fractions
        // such as "1.5g" through a float.
        let bytes = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let n: u128 = digits.parse().unwrap_or(u128::MAX);
            n.checked_mul(u128::from(mult))
                .and_then(|b| u64::try_from(b).ok())
                .unwrap_or(u64::MAX)
        } else {
            if !digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                return Err(bad());
            }
            let value: f64 = digits.parse().map_err(|_| bad())?;
            if !value.is_finite() {
                return Err(bad());
            }
            let b = value * mult as f64;
            // `as` saturates: past u64::MAX is u64::MAX, out of every range.
            if b >= u64::MAX as f64 { u64::MAX } else { b as u64 }
        };
        if bytes == 0 {
            return Err(format!("invalid size `{text}`: must be greater than zero"));
        }
        Ok(ByteSize {
            bytes,
            written: format!("\"{}\"", text),
        })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"512m\" or \"8g\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                if v <= 0 {
                    return Err(E::custom(format!("invalid size {v}: must be greater than zero")));
                }
                Ok(ByteSize {
                    bytes: v as u64,
                    written: v.to_string(),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration such as `"23h"`, `"90m"`, `"1h 30m"` or `"45s"`. One past
/// what a `Duration` holds reads as `Duration::MAX`, which every range in
/// [`crate::limits`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub duration: Duration,
    /// As the file wrote it, for messages.
    pub written: String,
}

impl Span {
    pub fn parse(text: &str) -> Result<Self, String> {
        let duration = match humantime::parse_duration(text.trim()) {
            Ok(d) => d,
            Err(humantime::DurationError::NumberOverflow) => Duration::MAX,
            Err(e) => {
                return Err(format!(
                    "invalid duration `{text}` ({e}): write it like \"23h\", \"90m\" or \"1h 30m\""
                ));
            }
        };
        if duration.is_zero() {
            return Err(format!("invalid duration `{text}`: must be greater than zero"));
        }
        Ok(Span {
            duration,
            written: format!("\"{text}\""),
        })
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"23h\", \"90m\" or \"1h 30m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                Span::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// How many GPUs a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuRequest {
    /// One if the host has a GPU, else none.
    Auto,
    /// Every GPU of the host, exclusively.
    All,
    /// A number of GPUs, or a share of one (`0.5`).
    #[serde(untagged)]
    Given(GpuShare),
}

impl<'de> Deserialize<'de> for GpuRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GpuRequest;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\", \"all\", a number of GPUs or a share of one such as 0.5")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GpuRequest, E> {
                match v {
                    "auto" => Ok(GpuRequest::Auto),
                    "all" => Ok(GpuRequest::All),
                    _ => Err(E::custom(format!(
                        "invalid gpus `{v}`: expected \"auto\", \"all\", a number or a share of one GPU such as 0.5"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GpuRequest, E> {
                let r = crate::limits::GPUS;
                match u32::try_from(v) {
                    Ok(n) if r.contains(n) => Ok(GpuRequest::Given(GpuShare::Whole(n))),
                    _ => Err(E::custom(format!("invalid gpus {v}: {}", r.between()))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<GpuRequest, E> {
                GpuShare::from_number(v).map(GpuRequest::Given).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// How many jobs run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// One job per free GPU slot; one on a CPU-only host.
    Auto,
    #[serde(untagged)]
    Fixed(u32),
}

impl Concurrency {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "auto" {
            return Ok(Concurrency::Auto);
        }
        match text.parse::<i64>() {
            Ok(n) => Self::from_int(n),
            Err(_) => Err(format!(
                "invalid concurrency `{text}`: expected \"auto\" or a number of jobs"
            )),
        }
    }

    fn from_int(n: i64) -> Result<Self, String> {
        let r = crate::limits::CONCURRENCY;
        if r.contains(n) {
            Ok(Concurrency::Fixed(n as u32))
        } else {
            Err(format!("invalid concurrency {n}: {}", r.between()))
        }
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Concurrency;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\" or a number of jobs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Concurrency, E> {
                if v == "auto" {
                    Ok(Concurrency::Auto)
                } else {
                    Err(E::custom(format!(
                        "invalid concurrency `{v}`: expected \"auto\" or a number of jobs"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Concurrency, E> {
                Concurrency::from_int(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// How many times a failed attempt is run again ([`crate::limits::RETRIES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Retries(pub u32);

impl<'de> Deserialize<'de> for Retries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Retries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of retries such as 1")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Retries, E> {
                let r = crate::limits::RETRIES;
                if r.contains(n) {
                    Ok(Retries(n as u32))
                } else {
                    Err(E::custom(format!("invalid retries {n}: {}", r.between())))
                }
            }
        }
        d.deserialize_i64(V)
    }
}

/// A whole number of something (epochs, a factor) in a batch file: 0 or
/// more. Its range is the key's, checked where the key is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole(pub u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number such as 3")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
                u64::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::custom(format!("invalid number {v}: must be 0 or more")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A CPU limit: a positive number of cores, fractions allowed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Cpus(pub f64);

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Cpus;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of CPU cores such as 4 or 0.5")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cpus, E> {
                let r = crate::limits::CPUS;
                if v.is_finite() && r.contains(v) {
                    Ok(Cpus(v))
                } else {
                    Err(E::custom(format!("invalid cpus {v}: {}", r.between())))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cpus, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_docker() {
        let bytes = |t: &str| ByteSize::parse(t).unwrap().bytes;
        assert_eq!(bytes("64m"), 64 << 20);
        assert_eq!(bytes("8g"), 8 << 30);
        assert_eq!(bytes("8GB"), 8 << 30);
        assert_eq!(bytes("1.5g"), 3 << 29);
        assert_eq!(bytes("4096"), 4096);
        assert_eq!(bytes("100b"), 100);
        assert_eq!(bytes("18446744073709551615"), u64::MAX);
        // Past a u64: the largest, which every limit refuses, not a wrap.
        assert_eq!(bytes("18446744073709551616"), u64::MAX);
        assert_eq!(bytes("99999999999999999999g"), u64::MAX);
        assert_eq!(bytes("1e300g"), u64::MAX);
        assert!(ByteSize::parse("-5m").is_err());
        assert!(ByteSize::parse("infg").is_err());
        assert!(ByteSize::parse("8x").unwrap_err().contains("invalid size `8x`"));
        assert!(ByteSize::parse("0m").unwrap_err().contains("greater than zero"));
    }

    #[test]
    fn durations_past_the_clock_saturate() {
        assert_eq!(Span::parse("90m").unwrap().duration, Duration::from_secs(5400));
        assert_eq!(
            Span::parse("18446744073709551615s").unwrap().duration.as_secs(),
            u64::MAX
        );
        assert_eq!(Span::parse("99999999999999999999999s").unwrap().duration, Duration::MAX);
        assert!(Span::parse("0s").unwrap_err().contains("greater than zero"));
    }

    #[test]
    fn gpus_are_counts_or_shares() {
        #[derive(Deserialize)]
        struct File {
            g: GpuRequest,
        }
        let gpus = |t: &str| toml::from_str::<File>(&format!("g = {t}")).map(|f| f.g);
        assert_eq!(gpus("1").unwrap(), GpuRequest::Given(GpuShare::Whole(1)));
        assert_eq!(gpus("\"all\"").unwrap(), GpuRequest::All);
        let third = gpus("0.33").unwrap();
        assert_eq!(
            third,
            GpuRequest::Given(GpuShare::Fraction(crate::gpu::Fraction::of(3).unwrap()))
        );
        assert_eq!(gpus("0.333").unwrap(), third);
        for bad in ["0.3", "1.5", "-0.5", "0.01"] {
            let e = gpus(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("invalid gpus {bad}")), "{e}");
            assert!(
                e.contains("0.5, 0.33, 0.25, 0.2, 0.17, 0.14, 0.12 or a whole number"),
                "{e}"
            );
        }
        assert!(gpus("65").unwrap_err().to_string().contains("must be between 0 and 64"));
    }

    #[test]
    fn concurrency_parses() {
        assert_eq!(Concurrency::parse("auto").unwrap(), Concurrency::Auto);
        assert_eq!(Concurrency::parse("3").unwrap(), Concurrency::Fixed(3));
        assert!(Concurrency::parse("0").unwrap_err().contains("between 1 and 1024"));
        assert!(Concurrency::parse("many").is_err());
    }
}
