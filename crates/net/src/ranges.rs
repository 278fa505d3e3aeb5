//! Sets of byte ranges: what a receiver holds of a file, what a sender
//! still has to send.

use std::collections::BTreeMap;

/// Disjoint, coalesced half-open ranges `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end, disjoint and never touching.
    spans: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// The set of `(offset, length)` ranges (in any order, may overlap).
    pub fn from_ranges(ranges: &[(u64, u64)]) -> RangeSet {
        let mut set = RangeSet::new();
        for &(offset, len) in ranges {
            set.insert(offset, offset.saturating_add(len));
        }
        set
    }

    /// Adds `[start, end)`, merging with what it overlaps or touches.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // A span that begins at or before `start` and reaches it.
        if let Some((&s, &e)) = self.spans.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.spans.remove(&s);
            }
        }
        // Spans that begin inside the new one (or right at its end).
        let inside: Vec<(u64, u64)> = self
            .spans
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in inside {
            end = end.max(e);
            self.spans.remove(&s);
        }
        self.spans.insert(start, end);
    }

    /// Total bytes covered.
    pub fn total(&self) -> u64 {
        self.spans.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether `[0, size)` is covered entirely.
    pub fn covers(&self, size: u64) -> bool {
        size == 0 || self.spans.get(&0).is_some_and(|&end| end >= size)
    }

    /// The end of the span that starts at `start`, if one does.
    pub fn span_from(&self, start: u64) -> Option<u64> {
        self.spans.get(&start).copied()
    }

    /// The spans as `(offset, length)`, in order.
    pub fn to_ranges(&self) -> Vec<(u64, u64)> {
        self.spans.iter().map(|(&s, &e)| (s, e - s)).collect()
    }

    /// The parts of `[start, end)` not in the set, in order, as
    /// `(start, end)` pairs.
    pub fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        let first = self
            .spans
            .range(..=start)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(start);
        for (&s, &e) in self.spans.range(first..end) {
            if e <= at {
                continue;
            }
            if s > at {
                out.push((at, s.min(end)));
            }
            at = at.max(e);
            if at >= end {
                break;
            }
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    /// How many spans.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_coalesce() {
        let mut set = RangeSet::new();
        set.insert(10, 20);
        set.insert(30, 40);
        assert_eq!(set.to_ranges(), vec![(10, 10), (30, 10)]);
        set.insert(20, 30);
        assert_eq!(set.to_ranges(), vec![(10, 30)]);
        set.insert(0, 5);
        set.insert(3, 12);
        assert_eq!(set.to_ranges(), vec![(0, 40)]);
        assert!(set.covers(40));
        assert!(!set.covers(41));
        set.insert(50, 50);
        assert_eq!(set.len(), 1);
        set.insert(45, 60);
        set.insert(44, 61);
        assert_eq!(set.to_ranges(), vec![(0, 40), (44, 17)]);
        assert_eq!(set.total(), 57);
    }

    #[test]
    fn missing_is_the_complement_inside_a_window() {
        let set = RangeSet::from_ranges(&[(10, 10), (30, 10)]);
        assert_eq!(set.missing(0, 50), vec![(0, 10), (20, 30), (40, 50)]);
        assert_eq!(set.missing(12, 18), vec![]);
        assert_eq!(set.missing(15, 35), vec![(20, 30)]);
        assert_eq!(set.missing(40, 45), vec![(40, 45)]);
        assert_eq!(RangeSet::new().missing(0, 7), vec![(0, 7)]);
    }

    #[test]
    fn random_inserts_match_a_bitmap() {
        let mut state = 12345u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            state >> 33
        };
        for _ in 0..200 {
            let mut set = RangeSet::new();
            let mut bits = [false; 128];
            for _ in 0..10 {
                let a = next() % 128;
                let b = (a + next() % 20).min(128);
                set.insert(a, b);
                bits[a as usize..b as usize]
                    .iter_mut()
                    .for_each(|x| *x = true);
            }
            assert_eq!(set.total(), bits.iter().filter(|&&b| b).count() as u64);
            let gaps: u64 = set.missing(0, 128).iter().map(|(s, e)| e - s).sum();
            assert_eq!(gaps, 128 - set.total());
        }
    }
}
