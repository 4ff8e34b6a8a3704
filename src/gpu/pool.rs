//! Who holds which GPU on this host: the local backend's allocator, as
//! plain state with named operations (the backend calls them; nothing here
//! waits or talks to the engine).
//!
//! The rules:
//! - a GPU is free, held whole by one job, or carries shares whose sum is
//!   at most one GPU (`0.5` and `0.25` may share a GPU; shares are counted
//!   in [`UNITS`], so they add up exactly);
//! - a whole-GPU job takes GPUs with no share in use, the first free ones
//!   in inventory order; a share never spans GPUs and never joins a GPU
//!   held whole;
//! - a share goes to the fullest GPU it fits on, so that whole GPUs stay
//!   free for whole-GPU jobs;
//! - fairness, through [`Queue`]: the jobs waiting are looked at in queue
//!   order, and each one that cannot start keeps the GPUs it waits for (the
//!   least used ones) from every job behind it. Those GPUs take no new work
//!   and drain, so a whole-GPU job queued among shares waits only until the
//!   shares on its GPU end — shares behind it use the other GPUs meanwhile.

use super::share::{GpuShare, UNITS};

/// The GPUs of this host and what holds each.
#[derive(Debug, Clone)]
pub struct Pool {
    gpus: Vec<Gpu>,
}

#[derive(Debug, Clone)]
struct Gpu {
    id: String,
    /// Who holds it (a job's index) and how many [`UNITS`] of it.
    holders: Vec<(usize, u32)>,
}

impl Gpu {
    fn used(&self) -> u32 {
        self.holders.iter().map(|(_, u)| u).sum()
    }
}

impl Pool {
    /// Every GPU of `ids` free.
    pub fn new(ids: &[String]) -> Pool {
        Pool {
            gpus: ids
                .iter()
                .map(|id| Gpu {
                    id: id.clone(),
                    holders: Vec::new(),
                })
                .collect(),
        }
    }

    /// Whether `need` could be given now, were nobody waiting.
    pub fn fits(&self, need: GpuShare) -> bool {
        self.place(need, &vec![false; self.gpus.len()]).is_some()
    }

    /// Gives job `holder` what it needs, were nobody waiting: the ids of
    /// its GPUs, or `None` (and nothing changes) when it does not fit now.
    pub fn take(&mut self, holder: usize, need: GpuShare) -> Option<Vec<String>> {
        let at = self.place(need, &vec![false; self.gpus.len()])?;
        Some(self.hold(holder, at))
    }

    /// Gives job `holder` the GPUs a [`Queue`] admitted it to: their ids.
    pub fn hold(&mut self, holder: usize, place: Place) -> Vec<String> {
        let units = match place.need {
            GpuShare::Whole(_) => UNITS,
            GpuShare::Fraction(f) => f.units(),
        };
        place
            .at
            .iter()
            .map(|&i| {
                let g = &mut self.gpus[i];
                g.holders.push((holder, units));
                g.id.clone()
            })
            .collect()
    }

    /// Records that job `holder` already holds `ids` (a run followed again
    /// after a restart): its container has the devices, whatever the rules
    /// would have chosen. Ids this host no longer lists are passed over.
    pub fn adopt(&mut self, holder: usize, ids: &[String], need: GpuShare) {
        let at: Vec<usize> = ids
            .iter()
            .filter_map(|id| self.gpus.iter().position(|g| &g.id == id))
            .collect();
        self.hold(holder, Place { need, at });
    }

    /// Gives back everything job `holder` held.
    pub fn release(&mut self, holder: usize) {
        for g in &mut self.gpus {
            g.holders.retain(|(h, _)| *h != holder);
        }
    }

    /// The jobs waiting, looked at in queue order (see the module's rules).
    pub fn queue(&self) -> Queue<'_> {
        Queue {
            pool: self,
            kept: vec![false; self.gpus.len()],
        }
    }

    /// How full each GPU is, in inventory order: 0.0 free to 1.0 full.
    pub fn load(&self) -> Vec<f64> {
        self.gpus
            .iter()
            .map(|g| f64::from(g.used()) / f64::from(UNITS))
            .collect()
    }

    /// Where `need` goes now, on GPUs not `kept`.
    fn place(&self, need: GpuShare, kept: &[bool]) -> Option<Place> {
        let open = |i: &usize| !kept[*i];
        let at = match need {
            GpuShare::Whole(n) => {
                let free: Vec<usize> = (0..self.gpus.len())
                    .filter(open)
                    .filter(|&i| self.gpus[i].holders.is_empty())
                    .take(n as usize)
                    .collect();
                (free.len() == n as usize).then_some(free)
            }
            GpuShare::Fraction(f) => (0..self.gpus.len())
                .filter(open)
                .filter(|&i| self.gpus[i].used() + f.units() <= UNITS)
                // The fullest that fits; the first of equals.
                .max_by_key(|&i| (self.gpus[i].used(), std::cmp::Reverse(i)))
                .map(|i| vec![i]),
        };
        at.map(|at| Place { need, at })
    }

    /// The GPUs a job that cannot start waits for: as many as it needs
    /// of those not `kept`, the least used first.
    fn awaited(&self, need: GpuShare, kept: &[bool]) -> Vec<usize> {
        let mut open: Vec<usize> = (0..self.gpus.len()).filter(|&i| !kept[i]).collect();
        open.sort_by_key(|&i| (self.gpus[i].used(), i));
        open.truncate(need.gpus() as usize);
        open
    }
}

/// Where a job goes: what it needs, on which GPUs (by position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    need: GpuShare,
    at: Vec<usize>,
}

impl Place {
    /// What it was placed for.
    pub fn need(&self) -> GpuShare {
        self.need
    }
}

/// The queue's view of a [`Pool`]: asked about each waiting job in order.
pub struct Queue<'a> {
    pool: &'a Pool,
    /// GPUs a job ahead waits for.
    kept: Vec<bool>,
}

impl Queue<'_> {
    /// Where the next job in line, needing `need`, starts now: on GPUs no
    /// job ahead of it waits for. `None`: it waits, and keeps the GPUs it
    /// waits for from the jobs behind it.
    pub fn admit(&mut self, need: GpuShare) -> Option<Place> {
        let place = self.pool.place(need, &self.kept);
        if place.is_none() {
            for i in self.pool.awaited(need, &self.kept) {
                self.kept[i] = true;
            }
        }
        place
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::share::Fraction;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn pool(n: usize) -> Pool {
        Pool::new(&(0..n).map(|i| i.to_string()).collect::<Vec<_>>())
    }

    fn share(per_gpu: u8) -> GpuShare {
        GpuShare::Fraction(Fraction::of(per_gpu).unwrap())
    }

    const ONE: GpuShare = GpuShare::Whole(1);

    #[test]
    fn halves_pack_two_to_a_gpu_and_never_span_gpus() {
        let mut p = pool(2);
        let got: Vec<Vec<String>> = (0..4).map(|j| p.take(j, share(2)).unwrap()).collect();
        assert_eq!(got, [["0"], ["0"], ["1"], ["1"]].map(|g| g.map(String::from).to_vec()));
        assert_eq!(p.take(4, share(2)), None, "four halves fill two GPUs");
        assert_eq!(p.load(), [1.0, 1.0]);
        p.release(1);
        assert_eq!(p.take(4, share(2)), Some(vec!["0".to_string()]));
    }

    #[test]
    fn a_whole_gpu_job_needs_a_gpu_with_no_share_in_use() {
        let mut p = pool(2);
        p.take(0, share(2)).unwrap();
        p.take(1, share(4)).unwrap();
        assert_eq!(p.load(), [0.75, 0.0], "shares go to the partly used GPU");
        assert_eq!(p.take(2, ONE), Some(vec!["1".to_string()]));
        assert_eq!(p.take(3, ONE), None, "GPU 0 carries shares");
        assert_eq!(p.take(3, share(2)), None, "a share never joins a GPU held whole");
        assert_eq!(p.take(3, share(4)), Some(vec!["0".to_string()]), "0.5 + 0.25 + 0.25");
        p.release(0);
        p.release(1);
        assert_eq!(p.take(4, ONE), None, "one quarter is still in use on GPU 0");
        p.release(3);
        assert_eq!(p.take(4, ONE), Some(vec!["0".to_string()]));
    }

    #[test]
    fn a_share_prefers_the_fullest_gpu_it_fits_on() {
        let mut p = pool(3);
        p.take(0, share(4)).unwrap();
        p.take(1, share(2)).unwrap();
        // 0: 0.75; a third fits only on an empty one.
        assert_eq!(p.take(2, share(3)), Some(vec!["1".to_string()]));
        // A quarter fits on both: the fuller (0) is filled.
        assert_eq!(p.take(3, share(4)), Some(vec!["0".to_string()]));
        assert_eq!(p.take(4, share(3)), Some(vec!["1".to_string()]));
        assert_eq!(p.load()[2], 0.0, "GPU 2 stays free for a whole job");
    }

    #[test]
    fn a_waiting_whole_gpu_job_keeps_the_least_used_gpu_from_later_shares() {
        let mut p = pool(2);
        for j in 0..3 {
            p.take(j, share(2)).unwrap();
        }
        // GPU 0 is full, GPU 1 half used: the whole job waits for GPU 1.
        let mut q = p.queue();
        assert_eq!(q.admit(ONE), None);
        assert_eq!(q.admit(share(2)), None, "a later half may not take GPU 1's free half");
        assert!(q.admit(GpuShare::Whole(0)).is_some(), "a CPU job needs no GPU");
        // Without the whole job ahead, the half would fit.
        assert!(p.queue().admit(share(2)).is_some());
    }

    #[test]
    fn a_multi_gpu_job_waiting_keeps_back_single_gpu_jobs() {
        let mut p = pool(2);
        p.take(0, ONE).unwrap();
        let mut q = p.queue();
        assert_eq!(q.admit(GpuShare::Whole(2)), None);
        assert_eq!(q.admit(ONE), None, "GPU 1 is kept for the two-GPU job");
    }

    #[test]
    fn shares_behind_a_waiting_whole_job_use_the_other_gpus() {
        let mut p = pool(2);
        for j in 0..3 {
            p.take(j, share(2)).unwrap();
        }
        p.release(0);
        // 0: 0.5, 1: 0.5. The whole job keeps GPU 0 (equal use: the first).
        let mut q = p.queue();
        assert_eq!(q.admit(ONE), None);
        let place = q.admit(share(2)).unwrap();
        assert_eq!(
            p.clone().take(3, share(2)),
            Some(vec!["0".to_string()]),
            "the rule alone: the first of equals"
        );
        assert_eq!(
            p.hold(3, place),
            ["1"],
            "admitted beside the waiting job: on the GPU it does not wait for"
        );
    }

    /// Hands queued jobs over as the dispatcher does: again and again the
    /// first that the queue admits (or, unfair, the first that fits), until
    /// none is. What started.
    fn fill(p: &mut Pool, queue: &mut VecDeque<(usize, GpuShare)>, fair: bool) -> Vec<usize> {
        let mut started = Vec::new();
        loop {
            let mut q = p.queue();
            let Some((pos, place)) = queue.iter().enumerate().find_map(|(pos, (_, need))| {
                let place = if fair {
                    q.admit(*need)
                } else {
                    p.place(*need, &vec![false; p.gpus.len()])
                };
                place.map(|place| (pos, place))
            }) else {
                return started;
            };
            let (job, _) = queue.remove(pos).unwrap();
            p.hold(job, place);
            started.push(job);
        }
    }

    /// Two GPUs full of halves; a whole-GPU job queued, then a stream of
    /// halves. Each step the oldest running half ends. The step at which
    /// the whole job started, if it did within 20.
    fn whole_job_among_halves(fair: bool) -> Option<usize> {
        let mut p = pool(2);
        let mut running: VecDeque<usize> = (0..4).collect();
        for &j in &running {
            p.take(j, share(2)).unwrap();
        }
        const WHOLE: usize = 1000;
        let mut queue: VecDeque<(usize, GpuShare)> = std::iter::once((WHOLE, ONE))
            .chain((4..100).map(|j| (j, share(2))))
            .collect();
        for step in 0..20 {
            p.release(running.pop_front().unwrap());
            for j in fill(&mut p, &mut queue, fair) {
                if j == WHOLE {
                    return Some(step);
                }
                running.push_back(j);
            }
        }
        None
    }

    #[test]
    fn a_whole_gpu_job_is_not_starved_by_a_stream_of_shares() {
        assert_eq!(
            whole_job_among_halves(true),
            Some(1),
            "it starts once the two halves on one GPU end"
        );
        assert_eq!(
            whole_job_among_halves(false),
            None,
            "first fit alone gives each freed half to the next half"
        );
    }

    #[test]
    fn an_adopted_run_holds_its_gpus() {
        let mut p = pool(2);
        p.adopt(7, &["1".to_string()], share(2));
        p.adopt(8, &["9".to_string()], ONE);
        assert_eq!(p.load(), [0.0, 0.5], "an id the host lost is passed over");
        assert_eq!(p.take(0, share(2)), Some(vec!["1".to_string()]));
        assert_eq!(p.take(1, ONE), Some(vec!["0".to_string()]));
        p.release(7);
        assert_eq!(p.load(), [1.0, 0.5]);
    }

    proptest! {
        /// Whatever is taken and released, no GPU is over-full and none
        /// carries a whole job beside anything else.
        #[test]
        fn no_gpu_is_ever_overcommitted(ops in prop::collection::vec((0usize..12, 0u8..10, any::<bool>()), 1..200)) {
            let mut p = pool(3);
            for (job, kind, release) in ops {
                if release {
                    p.release(job);
                    continue;
                }
                if p.gpus.iter().any(|g| g.holders.iter().any(|(h, _)| *h == job)) {
                    continue;
                }
                let need = match kind {
                    0 => GpuShare::Whole(1),
                    1 => GpuShare::Whole(2),
                    k => share(k.min(8)),
                };
                let before = p.fits(need);
                let got = p.take(job, need);
                prop_assert_eq!(before, got.is_some());
                if let Some(ids) = got {
                    prop_assert_eq!(ids.len() as u32, need.gpus());
                }
                for g in &p.gpus {
                    prop_assert!(g.used() <= UNITS);
                    let whole = g.holders.iter().filter(|(_, u)| *u == UNITS).count();
                    prop_assert!(whole == 0 || g.holders.len() == 1, "{:?}", g);
                }
            }
        }
    }
}
