//! The host's GPU inventory: from the NVIDIA driver, or injected with
//! `TB_GPUS=0,1` (how GPU scheduling is tested on hosts without one); what
//! a job holds of the GPUs ([`share`]), and who holds which ([`pool`]).

pub mod pool;
pub mod share;

pub use share::{Fraction, GpuShare};

use std::process::Command;

/// The GPUs tb may hand out, by the device id Docker and NVIDIA use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub ids: Vec<String>,
    /// Where the list came from, for messages.
    pub source: &'static str,
}

impl Inventory {
    /// `TB_GPUS` if set (comma-separated ids, empty for none), else the
    /// driver's list through `nvidia-smi`, else none.
    pub fn detect() -> Inventory {
        if let Ok(list) = std::env::var("TB_GPUS") {
            return Inventory::from_list(&list, "TB_GPUS");
        }
        let out = Command::new("nvidia-smi")
            .args(["--query-gpu=index", "--format=csv,noheader"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                Inventory::from_list(&text.lines().collect::<Vec<_>>().join(","), "nvidia-smi")
            }
            _ => Inventory {
                ids: Vec::new(),
                source: "nvidia-smi (not found or failed)",
            },
        }
    }

    pub fn from_list(list: &str, source: &'static str) -> Inventory {
        let ids = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        Inventory { ids, source }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `0,1`, or `none`, for messages.
    pub fn describe(&self) -> String {
        if self.ids.is_empty() {
            "none".to_string()
        } else {
            self.ids.join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_injected_list() {
        assert_eq!(Inventory::from_list("0, 1,", "TB_GPUS").ids, vec!["0", "1"]);
        assert!(Inventory::from_list("", "TB_GPUS").is_empty());
    }
}
