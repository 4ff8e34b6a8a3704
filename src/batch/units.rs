//! Quantities written in batch files: byte sizes (`"8g"`), durations
//! (`"23h"`), GPU counts (`"auto"`), concurrency (`"auto"`), CPU counts.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A byte count written the way `docker run --memory` takes it: a number
/// with an optional `b`, `k`, `m` or `g` suffix (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

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
        let value: f64 = digits.trim().parse().map_err(|_| {
            format!("invalid size `{text}`: expected a number with an optional unit, such as \"512m\" or \"8g\"")
        })?;
        if value.is_nan() || value <= 0.0 || !value.is_finite() {
            return Err(format!("invalid size `{text}`: must be greater than zero"));
        }
        Ok(ByteSize((value * mult as f64) as u64))
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
                Ok(ByteSize(v as u64))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration such as `"23h"`, `"90m"`, `"1h 30m"` or `"45s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let dur = humantime::parse_duration(text.trim()).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration `{text}` ({e}): write it like \"23h\", \"90m\" or \"1h 30m\""
            ))
        })?;
        if dur.is_zero() {
            return Err(de::Error::custom(format!(
                "invalid duration `{text}`: must be greater than zero"
            )));
        }
        Ok(Span(dur))
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
    #[serde(untagged)]
    Count(u32),
}

impl<'de> Deserialize<'de> for GpuRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GpuRequest;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\", \"all\" or a number of GPUs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GpuRequest, E> {
                match v {
                    "auto" => Ok(GpuRequest::Auto),
                    "all" => Ok(GpuRequest::All),
                    _ => Err(E::custom(format!(
                        "invalid gpus `{v}`: expected \"auto\", \"all\" or a number"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GpuRequest, E> {
                u32::try_from(v)
                    .map(GpuRequest::Count)
                    .map_err(|_| E::custom(format!("invalid gpus {v}: must be 0 or more")))
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
        if (1..=1024).contains(&n) {
            Ok(Concurrency::Fixed(n as u32))
        } else {
            Err(format!("invalid concurrency {n}: must be between 1 and 1024"))
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

/// How many times a failed attempt is run again: 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Retries(pub u32);

impl<'de> Deserialize<'de> for Retries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if (0..=100).contains(&n) {
            Ok(Retries(n as u32))
        } else {
            Err(de::Error::custom(format!(
                "invalid retries {n}: must be between 0 and 100"
            )))
        }
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
                if v > 0.0 && v.is_finite() && v <= 4096.0 {
                    Ok(Cpus(v))
                } else {
                    Err(E::custom(format!(
                        "invalid cpus {v}: must be a number of cores greater than zero"
                    )))
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
        assert_eq!(ByteSize::parse("64m").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("8g").unwrap().0, 8 << 30);
        assert_eq!(ByteSize::parse("8GB").unwrap().0, 8 << 30);
        assert_eq!(ByteSize::parse("1.5g").unwrap().0, 3 << 29);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert_eq!(ByteSize::parse("100b").unwrap().0, 100);
        assert!(ByteSize::parse("8x").unwrap_err().contains("invalid size `8x`"));
        assert!(ByteSize::parse("0m").unwrap_err().contains("greater than zero"));
    }

    #[test]
    fn concurrency_parses() {
        assert_eq!(Concurrency::parse("auto").unwrap(), Concurrency::Auto);
        assert_eq!(Concurrency::parse("3").unwrap(), Concurrency::Fixed(3));
        assert!(Concurrency::parse("0").unwrap_err().contains("between 1 and 1024"));
        assert!(Concurrency::parse("many").is_err());
    }
}
