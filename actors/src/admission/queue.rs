//! The fair order: who runs next. The owner with the fewest running
//! pipelines goes first, ties going to the owner served longest ago; within
//! one owner, the oldest video. So one user's hundred uploads do not hold
//! back another user's one. The job leases claim in this order (in SQL);
//! this model of it answers queue positions, by playing it forward.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::VideoId;

#[derive(Debug, Default)]
pub(crate) struct FairQueue {
    /// Waiting videos per owner, oldest first: ids are time-ordered ULIDs,
    /// so the set's order is creation order whatever order requests came in.
    waiting: BTreeMap<String, BTreeSet<VideoId>>,
    /// Pipelines running per owner.
    running: HashMap<String, usize>,
    /// When each owner was last granted a slot (a counter, not a clock).
    served: HashMap<String, u64>,
    clock: u64,
}

impl FairQueue {
    /// The queue the shared job leases hold, to play the fair order forward.
    pub(crate) fn from_snapshot(snapshot: &crate::leases::QueueSnapshot) -> Self {
        let mut q = Self {
            running: snapshot.running.clone(),
            served: snapshot.served.clone(),
            clock: snapshot.served.values().copied().max().unwrap_or(0),
            ..Self::default()
        };
        for (owner, video) in &snapshot.waiting {
            q.push(owner, video.clone());
        }
        q
    }

    pub(crate) fn push(&mut self, owner: &str, video: VideoId) {
        self.waiting
            .entry(owner.to_string())
            .or_default()
            .insert(video);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.values().map(BTreeSet::len).sum()
    }

    fn pick(
        &self,
        running: &HashMap<String, usize>,
        served: &HashMap<String, u64>,
    ) -> Option<String> {
        self.waiting
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .min_by_key(|(owner, _)| {
                (
                    running.get(*owner).copied().unwrap_or(0),
                    served.get(*owner).copied().unwrap_or(0),
                )
            })
            .map(|(owner, _)| owner.clone())
    }

    /// Grants the next slot: the chosen video, now counted as running.
    #[cfg(test)]
    pub(crate) fn grant(&mut self) -> Option<(String, VideoId)> {
        let owner = self.pick(&self.running, &self.served)?;
        let video = self.waiting.get_mut(&owner)?.pop_first()?;
        self.waiting.retain(|_, q| !q.is_empty());
        *self.running.entry(owner.clone()).or_default() += 1;
        self.clock += 1;
        self.served.insert(owner.clone(), self.clock);
        Some((owner, video))
    }

    /// A running pipeline of `owner` ended.
    #[cfg(test)]
    pub(crate) fn finished(&mut self, owner: &str) {
        if let Some(n) = self.running.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(owner);
            }
        }
    }

    /// How many videos start before each waiting one, if no slot frees
    /// earlier than expected: the grant order played forward.
    pub(crate) fn positions(&self) -> HashMap<VideoId, usize> {
        let mut waiting = self.waiting.clone();
        let mut running = self.running.clone();
        let mut served = self.served.clone();
        let mut clock = self.clock;
        let mut out = HashMap::new();
        let shadow = |w: &BTreeMap<String, BTreeSet<VideoId>>| Self {
            waiting: w.clone(),
            ..Self::default()
        };
        let mut position = 0;
        while let Some(owner) = shadow(&waiting).pick(&running, &served) {
            let Some(video) = waiting.get_mut(&owner).and_then(BTreeSet::pop_first) else {
                break;
            };
            waiting.retain(|_, q| !q.is_empty());
            out.insert(video, position);
            position += 1;
            *running.entry(owner.clone()).or_default() += 1;
            clock += 1;
            served.insert(owner, clock);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_owners_single_video_goes_next() {
        let mut q = FairQueue::default();
        for i in 0..10 {
            q.push("a", format!("a{i}"));
        }
        assert_eq!(q.grant(), Some(("a".into(), "a0".into())));
        q.push("b", "b0".into());
        assert_eq!(q.positions().get("b0"), Some(&0));
        assert_eq!(q.positions().get("a1"), Some(&1));
        q.finished("a");
        assert_eq!(
            q.grant(),
            Some(("b".into(), "b0".into())),
            "b starts at the next free slot"
        );
        assert_eq!(q.grant(), Some(("a".into(), "a1".into())));
    }

    #[test]
    fn owners_alternate_and_each_keeps_its_order() {
        let mut q = FairQueue::default();
        for v in ["a0", "a1", "a2"] {
            q.push("a", v.into());
        }
        for v in ["b0", "b1"] {
            q.push("b", v.into());
        }
        let order: Vec<_> = std::iter::from_fn(|| {
            let g = q.grant();
            if let Some((owner, _)) = &g {
                q.finished(owner);
            }
            g.map(|(_, v)| v)
        })
        .collect();
        assert_eq!(order, ["a0", "b0", "a1", "b1", "a2"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn the_oldest_video_of_an_owner_goes_first_whatever_the_arrival_order() {
        let mut q = FairQueue::default();
        q.push("a", "01B".into());
        q.push("a", "01A".into());
        assert_eq!(q.grant(), Some(("a".into(), "01A".into())));
    }
}
