//! What a running process costs, from /proc: the CPU time of each of its
//! threads (`task/*/schedstat`, in nanoseconds: a supervisor that idles
//! uses a few milliseconds a minute, below the 10 ms tick of
//! `/proc/PID/stat`), its resident memory, and the same for it and every
//! process under it.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A process's cost over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU time over the window, in cores (0.01 = 1 % of one core).
    pub cpu: f64,
    /// The largest resident set seen, in bytes.
    pub rss: u64,
    /// The same for the process and all under it; memory as the sum of
    /// their proportional sets (shared pages counted once).
    pub tree_cpu: f64,
    pub tree_pss: u64,
}

/// Samples `pid` and what runs under it every `every` for `window`.
pub fn sample(pid: u32, window: Duration, every: Duration) -> anyhow::Result<Usage> {
    let start = Instant::now();
    let first = snapshot(pid);
    anyhow::ensure!(first.threads.contains_key(&(pid, pid)), "process {pid} is not running");
    let mut last = first.clone();
    let (mut rss, mut pss) = (first.rss, first.tree_pss);
    while start.elapsed() < window {
        std::thread::sleep(every.min(window.saturating_sub(start.elapsed())));
        let now = snapshot(pid);
        rss = rss.max(now.rss);
        pss = pss.max(now.tree_pss);
        // A thread that has ended keeps the time it was last seen with.
        last.threads.extend(now.threads);
    }
    let secs = start.elapsed().as_secs_f64();
    let used = |own: bool| {
        let ns: u64 = last
            .threads
            .iter()
            .filter(|((p, _), _)| !own || *p == pid)
            .map(|(k, &t)| t - first.threads.get(k).copied().unwrap_or(0).min(t))
            .sum();
        ns as f64 / 1e9 / secs
    };
    Ok(Usage {
        cpu: used(true),
        rss,
        tree_cpu: used(false),
        tree_pss: pss,
    })
}

#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// (pid, tid) → nanoseconds on a CPU.
    threads: HashMap<(u32, u32), u64>,
    rss: u64,
    tree_pss: u64,
}

fn snapshot(root: u32) -> Snapshot {
    let mut s = Snapshot::default();
    for pid in tree(root) {
        let dir = format!("/proc/{pid}");
        if let Ok(tasks) = std::fs::read_dir(format!("{dir}/task")) {
            for t in tasks.flatten() {
                let Ok(tid) = t.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if let Some(ns) = read(&t.path().join("schedstat")).as_deref().and_then(run_time) {
                    s.threads.insert((pid, tid), ns);
                }
            }
        }
        if pid == root {
            s.rss = read(Path::new(&format!("{dir}/status")))
                .as_deref()
                .and_then(|t| kb(t, "VmRSS:"))
                .unwrap_or(0);
        }
        s.tree_pss += read(Path::new(&format!("{dir}/smaps_rollup")))
            .as_deref()
            .and_then(|t| kb(t, "Pss:"))
            .unwrap_or(0);
    }
    s
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The first field of `schedstat`: nanoseconds spent on a CPU.
fn run_time(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// A `Name:   123 kB` line of `status` or `smaps_rollup`, in bytes.
fn kb(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let n: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(n * 1024)
}

/// `root` and every process under it.
fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(ppid) = read(&e.path().join("stat")).as_deref().and_then(parent) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        out.extend(children.get(&out[i]).into_iter().flatten());
        i += 1;
    }
    out
}

/// The parent pid in `/proc/PID/stat` (the field after the state, which
/// follows the command name in parentheses — a name may hold any of them).
fn parent(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_the_kernel_writes_them() {
        assert_eq!(parent("42 (a) b) c) S 7 42 42 0"), Some(7));
        assert_eq!(run_time("41116757 7113118 192\n"), Some(41116757));
        assert_eq!(kb("Name:\tx\nVmRSS:\t    9132 kB\n", "VmRSS:"), Some(9132 * 1024));
        assert_eq!(kb("Rss: 1 kB\n", "Pss:"), None);
    }

    #[test]
    fn a_busy_child_shows_its_cpu_and_an_idle_one_none() {
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let mut idle = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let b = sample(busy.id(), Duration::from_millis(600), Duration::from_millis(200)).unwrap();
        let i = sample(idle.id(), Duration::from_millis(600), Duration::from_millis(200)).unwrap();
        for c in [&mut busy, &mut idle] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        // On a loaded machine a spinning shell still gets a good share of a core.
        assert!(b.cpu > 0.05 && b.cpu <= 1.05, "busy: {b:?}");
        assert!(i.cpu < 0.01, "idle: {i:?}");
        assert!(i.rss > 0 && i.tree_pss > 0, "idle: {i:?}");
    }

    #[test]
    fn the_tree_holds_the_children() {
        let mut parent = std::process::Command::new("sh")
            .args(["-c", "sleep 3 & sleep 3; wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let t = tree(parent.id());
        parent.kill().unwrap();
        parent.wait().unwrap();
        assert!(t.len() >= 3, "sh and its two sleeps: {t:?}");
        assert_eq!(t[0], parent.id());
    }
}
