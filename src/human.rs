//! Quantities written for people: durations and byte sizes in messages,
//! tables and reports.

/// `3h02m`, `4m05s`, `12.3s`.
pub fn duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// [`duration`] of seconds read from a file, whatever they are: huge,
/// negative, infinite or NaN show without a panic (a negative one as 0).
pub fn seconds(s: f64) -> String {
    // `as` saturates (NaN is 0); chrono refuses only i64::MIN.
    let ms = (s * 1000.0) as i64;
    duration(chrono::Duration::try_milliseconds(ms).unwrap_or_else(chrono::Duration::zero))
}

/// A metric value, to four decimals where that reads well (`0.8200`), in
/// scientific notation where it does not (`1.000e-5`).
pub fn value(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// `64.0 MiB`, `512 B`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(duration(chrono::Duration::milliseconds(12_345)), "12.3s");
        assert_eq!(duration(chrono::Duration::seconds(245)), "4m05s");
        assert_eq!(duration(chrono::Duration::seconds(3 * 3600 + 120)), "3h02m");
        assert_eq!(seconds(12.345), "12.3s");
        assert_eq!(seconds(f64::NEG_INFINITY), "0.0s");
        assert_eq!(seconds(-1e308), "0.0s");
        assert_eq!(seconds(f64::NAN), "0.0s");
        assert_eq!(seconds(1e300), "2562047788015h12m");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(bytes(512), "512 B");
    }
}
