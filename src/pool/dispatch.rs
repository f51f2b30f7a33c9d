//! Which worker serves the next request: herd's dispatch order as a pure
//! structure, with no process, socket or lock in it.
//!
//! A worker offers one *slot* per request it can serve at once (one
//! connection to it each): one for most programs, N for a php-cgi with
//! `PHP_FCGI_CHILDREN=N` or an FCGI::ProcManager script. The free slots are
//! kept in the order they are handed out:
//!
//! 1. the highest generation rank first ([`ranks`]: the newest admitted
//!    generation, then finished ones newest first, and generations
//!    superseded before they finished last, so a rollback never prefers
//!    the code it rolls back from);
//! 2. within a rank, the longest-running worker (the smallest id: warm
//!    caches, and the youngest idle workers are the ones scaling reaps);
//! 3. within a worker, the free slot whose connection was opened ahead
//!    last (a static php-fpm group: the child that finished last, see
//!    [`IdleSlots::take_taken`]), then its lowest free slot, so requests
//!    pack onto busy workers and leave whole ones idle.
//!
//! The set is generic over what a slot carries (the master's connection to
//! the worker), so it is tested with plain values.

use std::cmp::Reverse;
use std::collections::BTreeMap;

/// Workers are numbered in spawn order within a pool, so a smaller id is an
/// older process.
pub type WorkerId = u64;

/// How many of a worker's newest connections opened ahead
/// [`IdleSlots::take_taken`] asks about before it settles for the oldest:
/// more than a few children finishing at the same moment is rare, and
/// each question is a round trip to the kernel.
pub const TAKEN_LOOKS: usize = 4;

/// A free slot's place in the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    rank: Reverse<u64>,
    worker: WorkerId,
    /// Within a worker, the slot whose connection was opened last first
    /// (0: none opened ahead).
    fresh: Reverse<u64>,
    slot: u32,
}

/// The free slots of a pool, best first.
#[derive(Debug)]
pub struct IdleSlots<C> {
    set: BTreeMap<Key, C>,
}

impl<C> Default for IdleSlots<C> {
    fn default() -> Self {
        IdleSlots {
            set: BTreeMap::new(),
        }
    }
}

impl<C> IdleSlots<C> {
    /// Offers `slot` of `worker`, whose generation ranks `rank`.
    pub fn put(&mut self, worker: WorkerId, slot: u32, rank: u64, conn: C) {
        self.put_fresh(worker, slot, rank, 0, conn);
    }

    /// Offers `slot` with a connection opened ahead as the `fresh`-th (a
    /// pool-wide count): within its worker, the newest goes first.
    pub fn put_fresh(&mut self, worker: WorkerId, slot: u32, rank: u64, fresh: u64, conn: C) {
        let key = Key {
            rank: Reverse(rank),
            worker,
            fresh: Reverse(fresh),
            slot,
        };
        self.set.insert(key, conn);
    }

    /// Takes the slot the next request should go to.
    pub fn take(&mut self) -> Option<(WorkerId, u32, C)> {
        let (key, conn) = self.set.pop_first()?;
        Some((key.worker, key.slot, conn))
    }

    /// Takes the slot the next request should go to, unless its connection
    /// opened ahead may not have been taken by the worker yet (`pending`
    /// of the slot's worker says some connection to it waits): then the
    /// worker's slot with the newest connection that `taken` says a
    /// process holds, among the first [`TAKEN_LOOKS`] newest; when `taken`
    /// cannot tell (`None`) or none is held, the slot whose connection was
    /// opened first, the one most surely taken.
    pub fn take_taken(
        &mut self,
        pending: impl FnOnce(WorkerId) -> bool,
        mut taken: impl FnMut(&C) -> Option<bool>,
    ) -> Option<(WorkerId, u32, C)> {
        let first = *self.set.first_key_value()?.0;
        if first.fresh.0 == 0 || !pending(first.worker) {
            return self.take();
        }
        let last = Key {
            fresh: Reverse(1),
            slot: u32::MAX,
            ..first
        };
        let mut held = None;
        for (key, conn) in self.set.range(first..=last).take(TAKEN_LOOKS) {
            match taken(conn) {
                Some(true) => {
                    held = Some(*key);
                    break;
                }
                Some(false) => {}
                None => break,
            }
        }
        let key = match held {
            Some(key) => key,
            None => *self.set.range(first..=last).next_back()?.0,
        };
        let conn = self.set.remove(&key)?;
        Some((key.worker, key.slot, conn))
    }

    /// Every free slot's connection.
    pub fn conns_mut(&mut self) -> impl Iterator<Item = &mut C> {
        self.set.values_mut()
    }

    /// Takes every free slot of `worker` (ranked `rank`) out of service.
    pub fn remove_worker(&mut self, worker: WorkerId, rank: u64) -> Vec<C> {
        let first = Key {
            rank: Reverse(rank),
            worker,
            fresh: Reverse(u64::MAX),
            slot: 0,
        };
        let last = Key {
            fresh: Reverse(0),
            slot: u32::MAX,
            ..first
        };
        let keys: Vec<Key> = self.set.range(first..=last).map(|(k, _)| *k).collect();
        keys.iter().filter_map(|k| self.set.remove(k)).collect()
    }

    /// Puts every free slot in its new place after generation ranks changed.
    pub fn rerank(&mut self, rank_of: impl Fn(WorkerId) -> u64) {
        let old = std::mem::take(&mut self.set);
        for (key, conn) in old {
            let rank = rank_of(key.worker);
            self.put_fresh(key.worker, key.slot, rank, key.fresh.0, conn);
        }
    }

    /// Free slots in all.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// What dispatch needs to know of a generation to rank it.
#[derive(Clone, Copy, Debug)]
pub struct GenerationFacts {
    pub number: u32,
    /// It may still take traffic: not refused, not retired.
    pub live: bool,
    /// It finished a rollout at some point.
    pub finished: bool,
}

/// Dispatch ranks, highest first: the newest live generation, then the
/// generations that finished their rollout, newest first, then any that
/// were superseded before finishing.
pub fn ranks(gens: impl IntoIterator<Item = GenerationFacts> + Clone) -> BTreeMap<u32, u64> {
    let newest = gens
        .clone()
        .into_iter()
        .filter(|g| g.live)
        .map(|g| g.number)
        .max();
    gens.into_iter()
        .map(|g| {
            let rank = if Some(g.number) == newest {
                u64::MAX
            } else if g.finished {
                g.number as u64 + 1
            } else {
                0
            };
            (g.number, rank)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(slots: &mut IdleSlots<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| slots.take().map(|(_, _, c)| c)).collect()
    }

    #[test]
    fn newest_rank_then_oldest_worker_then_lowest_slot() {
        let mut s = IdleSlots::default();
        s.put(5, 0, 1, "old gen, young worker");
        s.put(2, 0, 1, "old gen, old worker");
        s.put(9, 1, 7, "new gen, worker 9 slot 1");
        s.put(9, 0, 7, "new gen, worker 9 slot 0");
        s.put(8, 0, 7, "new gen, worker 8");
        assert_eq!(
            order(&mut s),
            [
                "new gen, worker 8",
                "new gen, worker 9 slot 0",
                "new gen, worker 9 slot 1",
                "old gen, old worker",
                "old gen, young worker",
            ]
        );
        assert!(s.is_empty());
    }

    #[test]
    fn the_newest_connection_opened_ahead_goes_first_unless_it_may_wait() {
        let mut s = IdleSlots::default();
        s.put_fresh(1, 0, 3, 10, "1/0 opened 10th");
        s.put_fresh(1, 1, 3, 12, "1/1 opened 12th");
        s.put_fresh(1, 2, 3, 11, "1/2 opened 11th");
        s.put(1, 3, 3, "1/3 none");
        let unknown = |_: &&str| None;
        // Nothing waits at the worker: the newest.
        assert_eq!(
            s.take_taken(|_| false, unknown).unwrap().2,
            "1/1 opened 12th"
        );
        // Something waits and which one cannot be told: the newest may be
        // it, so the oldest.
        assert_eq!(
            s.take_taken(|w| w == 1, unknown).unwrap().2,
            "1/0 opened 10th"
        );
        assert_eq!(
            s.take_taken(|_| true, unknown).unwrap().2,
            "1/2 opened 11th"
        );
        // Slots with nothing opened ahead, by number.
        assert_eq!(s.take_taken(|_| true, unknown).unwrap().2, "1/3 none");
        assert!(s.take_taken(|_| true, unknown).is_none());
    }

    #[test]
    fn while_a_connection_waits_the_newest_one_a_child_holds_goes_first() {
        let mut s = IdleSlots::default();
        for (slot, order) in [(0, 10), (1, 13), (2, 11), (3, 12)] {
            s.put_fresh(1, slot, 3, order, order);
        }
        // The 13th waits for its child (still finishing), the 12th is held:
        // the child that finished before the last one.
        let mut asked = Vec::new();
        let held = |c: &u64| {
            asked.push(*c);
            Some(*c != 13)
        };
        assert_eq!(s.take_taken(|_| true, held).unwrap().2, 12);
        assert_eq!(asked, [13, 12]);
        // None held among the newest asked about: the oldest.
        assert_eq!(s.take_taken(|_| true, |_| Some(false)).unwrap().2, 10);
        // Cannot tell part-way: the oldest, and no more questions.
        s.put_fresh(1, 0, 3, 14, 14);
        let mut asked = 0;
        let answer = |c: &u64| {
            asked += 1;
            (*c == 14).then_some(false)
        };
        assert_eq!(s.take_taken(|_| true, answer).unwrap().2, 11);
        assert_eq!(asked, 2);
    }

    #[test]
    fn no_more_than_a_few_connections_are_asked_about() {
        let mut s = IdleSlots::default();
        for order in 1..=10u64 {
            s.put_fresh(1, order as u32, 3, order, order);
        }
        let mut asked = 0;
        let held = |c: &u64| {
            asked += 1;
            Some(*c == 1)
        };
        // The only one held is the oldest, past the looks: the oldest all the same.
        assert_eq!(s.take_taken(|_| true, held).unwrap().2, 1);
        assert_eq!(asked, TAKEN_LOOKS);
    }

    #[test]
    fn a_returned_slot_goes_back_to_its_place() {
        let mut s = IdleSlots::default();
        s.put(1, 0, 3, "1/0");
        s.put(1, 1, 3, "1/1");
        s.put(2, 0, 3, "2/0");
        let (w, slot, c) = s.take().unwrap();
        assert_eq!((w, slot, c), (1, 0, "1/0"));
        // Packing: the next request goes to the same worker's next slot.
        assert_eq!(s.take().unwrap().2, "1/1");
        s.put(w, slot, 3, c);
        assert_eq!(s.take().unwrap().2, "1/0");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn removing_a_worker_takes_all_its_free_slots_and_no_other() {
        let mut s = IdleSlots::default();
        for slot in 0..4 {
            s.put(3, slot, 2, slot);
        }
        s.put(4, 0, 2, 10);
        s.put(2, 0, 2, 20);
        let mut gone = s.remove_worker(3, 2);
        gone.sort();
        assert_eq!(gone, [0, 1, 2, 3]);
        assert_eq!(s.len(), 2);
        assert!(s.remove_worker(3, 2).is_empty());
        // The wrong rank finds nothing: the caller passes the worker's own.
        assert!(s.remove_worker(4, 9).is_empty());
    }

    #[test]
    fn rerank_moves_slots_with_their_generation() {
        let mut s = IdleSlots::default();
        s.put(1, 0, 5, "gen A worker 1");
        s.put(2, 0, 9, "gen B worker 2");
        // Generation B was superseded before finishing: it now ranks last.
        s.rerank(|w| if w == 2 { 0 } else { 5 });
        assert_eq!(order(&mut s), ["gen A worker 1", "gen B worker 2"]);
    }

    fn facts(number: u32, live: bool, finished: bool) -> GenerationFacts {
        GenerationFacts {
            number,
            live,
            finished,
        }
    }

    #[test]
    fn a_rollback_ranks_the_superseded_generation_last() {
        // 1 finished; 2 was rolling (bad) and is superseded by 3 (rollback).
        let r = ranks([
            facts(1, true, true),
            facts(2, true, false),
            facts(3, true, false),
        ]);
        assert!(r[&3] > r[&1] && r[&1] > r[&2], "{r:?}");
    }

    #[test]
    fn a_refused_generation_never_outranks_the_serving_one() {
        let r = ranks([facts(1, true, true), facts(2, false, false)]);
        assert!(r[&1] > r[&2]);
    }

    #[test]
    fn finished_generations_rank_newest_first() {
        let r = ranks([
            facts(1, true, true),
            facts(2, true, true),
            facts(3, true, true),
        ]);
        assert!(r[&3] > r[&2] && r[&2] > r[&1], "{r:?}");
        assert_eq!(r[&3], u64::MAX);
    }

    #[test]
    fn dispatch_follows_the_ranks_across_a_rollback() {
        // Generation 2 was bad and superseded by 3 while 3 has no idle
        // worker yet: 1's workers serve before 2's.
        let r = ranks([
            facts(1, true, true),
            facts(2, true, false),
            facts(3, true, false),
        ]);
        let mut s = IdleSlots::default();
        s.put(10, 0, r[&2], "gen 2");
        s.put(4, 0, r[&1], "gen 1");
        assert_eq!(order(&mut s), ["gen 1", "gen 2"]);
    }
}
