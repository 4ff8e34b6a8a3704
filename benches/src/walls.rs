//! Walls of a set of jobs through tb, pueue and the bare engine API,
//! interleaved round by round (the order rotating, so that no way always
//! runs first, and the machine's drift hits all three alike): 30 × `true`
//! one at a time with the idle gap between jobs, and 16 × `sleep 2` four
//! at a time.

use crate::session::{Session, median};
use crate::table::{Table, secs};
use crate::ways::{self, Run, Set};

pub const SERIAL: Set = Set {
    jobs: 30,
    at_once: 1,
    command: &["true"],
};

pub const PARALLEL: Set = Set {
    jobs: 16,
    at_once: 4,
    command: &["sleep", "2"],
};

/// The targets: tb's wall against pueue's and the engine floor's.
const SERIAL_VS_PUEUE: f64 = 0.70;
const SERIAL_VS_FLOOR: f64 = 1.00;
const PARALLEL_VS_PUEUE: f64 = 0.90;

pub fn serial(s: &Session, t: &mut Table) -> anyhow::Result<()> {
    // The engine's caches (the image's layers, the bridge) warm before anything is timed.
    ways::floor(s, Set { jobs: 3, ..SERIAL })?;
    let runs = interleaved(s, SERIAL)?;
    t.heading(format!("30 × `true`, one at a time (medians of {} rounds)", s.rounds));
    let (tb, floor) = (wall(&runs.tb), wall(&runs.floor));
    against_pueue(s, t, &runs, SERIAL_VS_PUEUE);
    t.row(
        "  wall, against the bare engine API",
        secs(tb),
        format!("floor {}", secs(floor)),
    )
    .at_most(tb / floor, SERIAL_VS_FLOOR);
    let (tb_gap, floor_gap) = (gap(&runs.tb), gap(&runs.floor));
    if let Some(p) = &runs.pueue {
        t.row(
            "  idle gap between jobs (mean)",
            secs(tb_gap),
            format!("pueue {}", secs(gap(p))),
        )
        .ratio(tb_gap / gap(p));
    }
    t.row(
        "  idle gap, against the bare engine API",
        secs(tb_gap),
        format!("floor {}", secs(floor_gap)),
    )
    .ratio(tb_gap / floor_gap);
    Ok(())
}

pub fn parallel(s: &Session, t: &mut Table) -> anyhow::Result<()> {
    let runs = interleaved(s, PARALLEL)?;
    t.heading(format!(
        "16 × `sleep 2`, four at a time (medians of {} rounds; 8 s of sleep)",
        s.rounds
    ));
    let (tb, floor) = (wall(&runs.tb), wall(&runs.floor));
    against_pueue(s, t, &runs, PARALLEL_VS_PUEUE);
    t.row(
        "  wall, against the bare engine API (4 loops)",
        secs(tb),
        format!("floor {}", secs(floor)),
    )
    .ratio(tb / floor);
    Ok(())
}

/// tb's wall against pueue's, with the target that it be at most `limit` of it.
fn against_pueue(s: &Session, t: &mut Table, runs: &Runs, limit: f64) {
    let tb = wall(&runs.tb);
    match &runs.pueue {
        Some(p) => {
            t.row("  wall", secs(tb), format!("pueue {}", secs(wall(p))))
                .at_most(tb / wall(p), limit);
        }
        None => t.failed("  tb against pueue", &s.pueue_dir().unwrap_err()),
    }
}

#[derive(Default)]
struct Runs {
    tb: Vec<Run>,
    /// None when pueue is not installed.
    pueue: Option<Vec<Run>>,
    floor: Vec<Run>,
}

fn interleaved(s: &Session, set: Set) -> anyhow::Result<Runs> {
    let mut r = Runs {
        pueue: s.pueue.is_some().then(Vec::new),
        ..Default::default()
    };
    for round in 0..s.rounds {
        for k in 0..3 {
            match ((round + k) % 3, r.pueue.as_mut()) {
                (0, _) => r.tb.push(ways::tb(s, set)?),
                (1, Some(p)) => p.push(ways::pueue(s, set)?),
                (1, None) => {}
                _ => r.floor.push(ways::floor(s, set)?),
            }
        }
        let last = |v: &[Run]| v.last().map_or("-".into(), |r| secs(r.wall));
        eprintln!(
            "  {} × `{}`, {} at a time, round {}/{}: tb {}, pueue {}, floor {}",
            set.jobs,
            set.command.join(" "),
            set.at_once,
            round + 1,
            s.rounds,
            last(&r.tb),
            last(r.pueue.as_deref().unwrap_or_default()),
            last(&r.floor)
        );
    }
    Ok(r)
}

fn wall(runs: &[Run]) -> f64 {
    median(&runs.iter().map(|r| r.wall).collect::<Vec<_>>())
}

fn gap(runs: &[Run]) -> f64 {
    median(&runs.iter().map(|r| r.gap).collect::<Vec<_>>())
}
