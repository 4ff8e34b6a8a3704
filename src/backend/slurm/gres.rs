//! Slurm's gres strings, as pure functions: what a job asks for
//! (`--gres=gpu:N`, `shard:S`), what the nodes offer (`sinfo -o %G`), and
//! which GPUs a running job holds (`scontrol show job -d`).
//!
//! Seen on Slurm 22.05 (tests/slurm/cluster.sh, two GPUs with 3 shards
//! each, `ConstrainDevices=yes`): a `--gres=shard:2` job placed on the
//! second GPU has `SLURM_JOB_GPUS=1`, `SLURM_SHARDS_ON_NODE=2`,
//! `CUDA_VISIBLE_DEVICES=0` (counted within the job's device cgroup), and
//! `scontrol show job -d` prints `GRES=shard:2(IDX:1)`. Slurm 23.11.2 and
//! later print a shard job's part of each GPU instead:
//! `GRES=shard:2(0/3,2/3)`.

use crate::gpu::GpuShare;

/// One entry of a gres list: `gpu:tesla:2(S:0-1)` is `gpu`, 2, `S:0-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry<'a> {
    name: &'a str,
    count: u64,
    /// What the parentheses hold, if any.
    detail: Option<&'a str>,
}

/// The entries of a comma-separated gres list; commas inside parentheses
/// (`IDX:0,2`) belong to their entry.
fn entries(list: &str) -> Vec<Entry<'_>> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts.into_iter().filter_map(entry).collect()
}

fn entry(text: &str) -> Option<Entry<'_>> {
    let text = text.trim();
    let (head, detail) = match text.split_once('(') {
        Some((head, rest)) => (head, Some(rest.strip_suffix(')').unwrap_or(rest))),
        None => (text, None),
    };
    let mut fields = head.split(':');
    let name = fields.next().filter(|n| !n.is_empty() && *n != "null")?;
    // `gpu` alone is one; `gpu:tesla` a type without a count, also one.
    let count = fields.next_back().and_then(count).unwrap_or(1);
    Some(Entry { name, count, detail })
}

/// `64`, or with Slurm's suffixes `1K` (1024), `1M`, `1G`.
fn count(text: &str) -> Option<u64> {
    let (digits, scale) = match text.char_indices().last()? {
        (i, 'K' | 'k') => (&text[..i], 1 << 10),
        (i, 'M' | 'm') => (&text[..i], 1 << 20),
        (i, 'G' | 'g') => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok().map(|n| n * scale)
}

/// `0-1,3`: a Slurm index list.
fn indices(list: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
                if b < a || b - a > 1024 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// The `--gres` a job asks for: `gpu:N` for whole GPUs; for 1/n of a GPU,
/// `shard:S` with S the cluster's shards per GPU divided by n, rounded up
/// (at least its share, never less: 8 per GPU and 1/3 asks for 3). `Err`
/// for a share when the shards per GPU are not known.
pub fn request(gpus: GpuShare, shards_per_gpu: Option<u32>) -> anyhow::Result<Option<String>> {
    Ok(match gpus {
        GpuShare::Whole(0) => None,
        GpuShare::Whole(n) => Some(format!("gpu:{n}")),
        GpuShare::Fraction(f) => {
            let per_gpu = shards_per_gpu.ok_or_else(|| {
                anyhow::anyhow!(
                    "how many shards the cluster gives one GPU is not known; set shards_per_gpu in [batch.slurm]"
                )
            })?;
            Some(format!("shard:{}", per_gpu.div_ceil(u32::from(f.per_gpu())).max(1)))
        }
    })
}

/// Whether any of the nodes' gres lists (`sinfo -o %G`, one a line)
/// offers `name` (`gpu`, `shard`).
pub fn offers(lines: &[String], name: &str) -> bool {
    lines
        .iter()
        .any(|l| entries(l).iter().any(|e| e.name == name && e.count > 0))
}

/// How many shards one GPU has, from the nodes' gres lists
/// (`gpu:2,shard:64`: 32). Nodes that differ give the largest count,
/// rounded up where shards do not divide evenly among a node's GPUs: a
/// job then asks for at least its share everywhere (more where a GPU has
/// fewer shards). `None` when no line has both GPUs and shards.
pub fn shards_per_gpu(lines: &[String]) -> Option<u32> {
    lines
        .iter()
        .filter_map(|l| {
            let sum = |name: &str| -> u64 { entries(l).iter().filter(|e| e.name == name).map(|e| e.count).sum() };
            let (gpus, shards) = (sum("gpu"), sum("shard"));
            (gpus > 0 && shards > 0).then(|| shards.div_ceil(gpus))
        })
        .max()
        .and_then(|n| u32::try_from(n).ok())
}

/// The GPU indices a running job holds on `host`, from
/// `scontrol show job -d`: each node's `GRES=` (`GRES_IDX=` before Slurm
/// 18.08), whose `gpu` and `shard` entries name their GPUs as `IDX:0-1`,
/// or, for shards from Slurm 23.11.2, as the job's part of each GPU in
/// turn (`0/3,2/3`: the second). `None` when it names none.
pub fn held_gpus(detail: &str, host: &str) -> Option<Vec<String>> {
    let nodes: Vec<(&str, &str)> = detail
        .lines()
        .filter_map(|line| {
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            };
            Some((field("Nodes")?, field("GRES").or_else(|| field("GRES_IDX"))?))
        })
        .collect();
    // One line per node of the job; tb's jobs have one.
    let gres = match nodes.as_slice() {
        [(_, gres)] => *gres,
        more => more.iter().find(|(n, _)| *n == host).map(|(_, g)| *g)?,
    };
    let mut ids: Vec<u32> = Vec::new();
    for e in entries(gres).iter().filter(|e| e.name == "gpu" || e.name == "shard") {
        let Some(d) = e.detail else { continue };
        if let Some(list) = d.strip_prefix("IDX:") {
            ids.extend(indices(list)?);
        } else if d.contains('/') {
            for (i, part) in d.split(',').enumerate() {
                let held = part.split('/').next().and_then(|n| n.trim().parse::<u64>().ok());
                if held.is_some_and(|n| n > 0) {
                    ids.push(u32::try_from(i).ok()?);
                }
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    (!ids.is_empty()).then(|| ids.iter().map(u32::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn a_share_of_a_gpu_asks_for_shards() {
        let part = |n| GpuShare::Fraction(crate::gpu::Fraction::of(n).unwrap());
        let ask = |gpus, per_gpu| request(gpus, Some(per_gpu)).unwrap();
        assert_eq!(ask(part(2), 8).as_deref(), Some("shard:4"));
        assert_eq!(ask(part(4), 8).as_deref(), Some("shard:2"));
        assert_eq!(ask(part(3), 8).as_deref(), Some("shard:3"), "rounded up");
        assert_eq!(ask(part(8), 4).as_deref(), Some("shard:1"), "at least one");
        assert_eq!(ask(part(2), 64).as_deref(), Some("shard:32"));
        assert_eq!(ask(part(2), 3).as_deref(), Some("shard:2"));
        assert_eq!(ask(GpuShare::Whole(2), 8).as_deref(), Some("gpu:2"));
        assert_eq!(ask(GpuShare::Whole(0), 8), None);
        assert_eq!(request(GpuShare::Whole(1), None).unwrap().as_deref(), Some("gpu:1"));
        let e = request(part(2), None).unwrap_err().to_string();
        assert!(e.contains("set shards_per_gpu"), "{e}");
    }

    #[test]
    fn shards_per_gpu_is_learned_from_what_sinfo_prints() {
        let per_gpu = |text: &str| shards_per_gpu(&lines(text));
        assert_eq!(per_gpu("gpu:2,shard:64"), Some(32));
        assert_eq!(per_gpu("gpu:tesla:2(S:0),shard:64(S:0)"), Some(32));
        assert_eq!(per_gpu("gpu:2(S:0-1),shard:6(S:0-1)"), Some(3));
        assert_eq!(
            per_gpu("shard:64(S:0,1),gpu:a100:4(S:0,1)"),
            Some(16),
            "commas in parentheses"
        );
        assert_eq!(
            per_gpu("gpu:a100:2(S:0),gpu:v100:2(S:1),shard:32"),
            Some(8),
            "GPUs of two types"
        );
        assert_eq!(per_gpu("gpu:1,shard:1K"), Some(1024));
        assert_eq!(per_gpu("gpu:3,shard:64"), Some(22), "uneven: the larger part");
        assert_eq!(
            per_gpu("gpu:2,shard:16\n(null)\ngpu:4,shard:128\ngpu:8"),
            Some(32),
            "nodes that differ: the largest"
        );
        assert_eq!(per_gpu("gpu:2"), None);
        assert_eq!(per_gpu("shard:64"), None, "shards without GPUs");
        assert_eq!(per_gpu("(null)"), None);
        assert_eq!(per_gpu(""), None);
        assert_eq!(per_gpu("gpu:0,shard:8"), None);
    }

    #[test]
    fn what_the_nodes_offer() {
        let l = lines("(null)\ngpu:tesla:2(S:0),shard:64(S:0)");
        assert!(offers(&l, "gpu") && offers(&l, "shard"));
        assert!(!offers(&l, "mps"));
        assert!(!offers(&lines("gpu:2"), "shard"));
        assert!(!offers(&lines("gpus:2,shards:3"), "gpu"), "names, not substrings");
        assert!(!offers(&lines("(null)"), "gpu"));
    }

    #[test]
    fn the_gpus_a_job_holds_from_scontrol() {
        // As Slurm 22.05 on the test cluster prints them.
        let shard = "JobId=2 JobName=probe.sh\n   JOB_GRES=shard:2\n     \
                     Nodes=vm CPU_IDs=1 Mem=0 GRES=shard:2(IDX:1)\n   TresPerNode=gres:shard:2\n";
        assert_eq!(held_gpus(shard, "vm"), Some(vec!["1".to_string()]));
        let whole = "   JOB_GRES=gpu:2\n     Nodes=vm CPU_IDs=1 Mem=0 GRES=gpu:2(IDX:0-1)\n";
        assert_eq!(held_gpus(whole, "vm"), Some(vec!["0".to_string(), "1".to_string()]));
        // Typed, several entries, an index list with commas.
        let typed = "     Nodes=n1 CPU_IDs=0-3 Mem=0 GRES=gpu:a100:2(IDX:0,3),tmpdisk:100\n";
        assert_eq!(held_gpus(typed, "n1"), Some(vec!["0".to_string(), "3".to_string()]));
        // Slurm 23.11.2 and later: the job's shards on each GPU.
        let counted = "     Nodes=n1 CPU_IDs=0 Mem=0 GRES=shard:2(0/3,2/3)\n";
        assert_eq!(held_gpus(counted, "n1"), Some(vec!["1".to_string()]));
        // Before 18.08.
        let old = "     Nodes=n1 CPU_IDs=0 Mem=0 GRES_IDX=gpu(IDX:2)\n";
        assert_eq!(held_gpus(old, "n1"), Some(vec!["2".to_string()]));
        // Several nodes: this host's line.
        let two = "     Nodes=a CPU_IDs=0 Mem=0 GRES=gpu:1(IDX:0)\n     Nodes=b CPU_IDs=0 Mem=0 GRES=gpu:1(IDX:1)\n";
        assert_eq!(held_gpus(two, "b"), Some(vec!["1".to_string()]));
        assert_eq!(held_gpus(two, "c"), None);
        // Nothing to go by.
        assert_eq!(
            held_gpus("   JOB_GRES=shard:2\n     Nodes=vm CPU_IDs=1 Mem=0 GRES=\n", "vm"),
            None
        );
        assert_eq!(held_gpus("     Nodes=vm CPU_IDs=1 Mem=0 GRES=gpu(CNT:2)\n", "vm"), None);
        assert_eq!(
            held_gpus("     Nodes=vm CPU_IDs=1 Mem=0 GRES=gpu:1(IDX:x)\n", "vm"),
            None
        );
        assert_eq!(held_gpus("slurm_load_jobs error: Invalid job id specified", "vm"), None);
        assert_eq!(
            held_gpus("   JOB_GRES=shard:2\n", "vm"),
            None,
            "JOB_GRES is not a node's"
        );
    }

    #[test]
    fn index_lists() {
        assert_eq!(indices("0-1,3"), Some(vec![0, 1, 3]));
        assert_eq!(indices("2"), Some(vec![2]));
        assert_eq!(indices("3-1"), None);
        assert_eq!(indices(""), None);
    }
}
