//! `make bench`: where tb stands, measured side by side on this machine in
//! one run — against pueue and the bare engine API, interleaved — printed
//! as one table of figures, ratios and targets. `tb-bench SECTION...` runs
//! some of it; `tb-bench prune` is the long pruning sweep
//! (`make bench-prune`).

mod events;
mod floor;
mod idle;
mod jobs;
mod output;
mod proc;
mod prune;
mod pueue;
mod report;
mod session;
mod sweep;
mod table;
mod trainer;
mod walls;
mod ways;

use session::Session;
use std::process::ExitCode;
use table::Table;

type Measure = fn(&Session, &mut Table) -> anyhow::Result<()>;

/// Name, what it measures, the measurement, whether `make bench` runs it.
const SECTIONS: [(&str, &str, Measure, bool); 8] = [
    (
        "serial",
        "30 × `true` one at a time through tb, pueue and the bare engine API; the idle gap between jobs",
        walls::serial,
        true,
    ),
    (
        "parallel",
        "16 × `sleep 2` four at a time through tb, pueue and the bare engine API",
        walls::parallel,
        true,
    ),
    (
        "idle",
        "CPU and memory of tb and of pueued while 4 jobs sleep",
        idle::run,
        true,
    ),
    (
        "output",
        "1 GiB of stdout captured byte-exact: tb against `docker run > file`",
        output::run,
        true,
    ),
    (
        "sweep",
        "sweeps of 100, 1,000 and 10,000 jobs: `tb batch` to the first container's start",
        sweep::run,
        true,
    ),
    (
        "report",
        "the report of 1,000 to 10,000 generated jobs",
        report::run,
        true,
    ),
    (
        "trainer",
        "the trainer's throughput against a plain PyTorch loop",
        trainer::run,
        true,
    ),
    (
        "prune",
        "a real 20-job sweep with and without ASHA pruning (~35 min)",
        prune::run,
        false,
    ),
];

const ROUNDS_VAR: &str = "TB_BENCH_ROUNDS";

fn main() -> ExitCode {
    if report::child().is_some() {
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let chosen = match choose(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let rounds = match rounds() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let session = match Session::open(rounds) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let load_before = load();
    let mut table = Table::default();
    for (name, what, measure, _) in chosen {
        eprintln!("== {name}: {what}");
        let started = std::time::Instant::now();
        if let Err(e) = measure(&session, &mut table) {
            eprintln!("  {name} failed: {e:#}");
            table.failed(name, &e);
        }
        eprintln!("  ({name}: {:.0} s)", started.elapsed().as_secs_f64());
    }
    println!("{}", header(&session, &load_before));
    print!("{}", table.render());
    let (_, _, failed) = table.counts();
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn usage() -> String {
    let mut s = String::from("usage: tb-bench [SECTION]...\n\nWith no section, every one but `prune`. Sections:\n");
    for (name, what, _, default) in SECTIONS {
        s += &format!(
            "  {name:<9} {what}{}\n",
            if default { "" } else { " (only when named)" }
        );
    }
    s += &format!("\nEnvironment:\n  {ROUNDS_VAR}=N   interleaved rounds per comparison (default 3)\n");
    s += "  TB_BIN              the tb binary measured (default: target/release/tb, next to this)\n";
    s += "  TB_BENCH_PUEUE      the directory holding pueue and pueued (default: target/bench-tools/bin)\n";
    s
}

fn choose(args: &[String]) -> Result<Vec<(&'static str, &'static str, Measure, bool)>, String> {
    if args.is_empty() {
        return Ok(SECTIONS.iter().copied().filter(|s| s.3).collect());
    }
    args.iter()
        .map(|a| {
            SECTIONS.iter().copied().find(|s| s.0 == a).ok_or_else(|| {
                let names: Vec<&str> = SECTIONS.iter().map(|s| s.0).collect();
                format!("unknown section `{a}`: the sections are {}", names.join(", "))
            })
        })
        .collect()
}

fn rounds() -> Result<usize, String> {
    match std::env::var(ROUNDS_VAR) {
        Err(_) => Ok(3),
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!(
                "{ROUNDS_VAR}={v}: expected a whole number of rounds, 1 or more"
            )),
        },
    }
}

/// The one-minute load average: a busy machine makes every figure noisy.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

fn header(s: &Session, load_before: &str) -> String {
    let version = |cmd: &std::path::Path| {
        std::process::Command::new(cmd)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let engine =
        s.rt.block_on(s.engine.version())
            .map_or("?".into(), |(v, api)| format!("{v} (API {api})"));
    let pueue = s.pueue.as_deref().map_or("not installed".into(), pueue::version);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "\ntb bench, {}: {} ({}), pueue {pueue}, Docker {engine}, {cpus} CPUs, load {load_before} at the start and {} at the end\n",
        chrono::Local::now().format("%Y-%m-%d %H:%M"),
        version(&s.tb),
        s.tb.display(),
        load(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_section_is_every_one_but_the_long_sweep() {
        let names: Vec<&str> = choose(&[]).unwrap().iter().map(|s| s.0).collect();
        assert_eq!(
            names,
            ["serial", "parallel", "idle", "output", "sweep", "report", "trainer"]
        );
        let named: Vec<&str> = choose(&["prune".into(), "idle".into()])
            .unwrap()
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(named, ["prune", "idle"]);
        let err = choose(&["walls".into()]).unwrap_err();
        assert!(
            err.contains("unknown section `walls`: the sections are serial, parallel"),
            "{err}"
        );
    }
}
