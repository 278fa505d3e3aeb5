//! Which snapshots a `forget --keep-*` policy keeps.
//!
//! PLACEHOLDER (helper `snap`): only `--keep-last` is applied here; the
//! lead's calendar-bucket implementation (restic's semantics: per hourly,
//! daily, weekly and monthly bucket in local time, the newest snapshot of
//! each of the N newest buckets) replaces this file at merge, with the same
//! signature.

/// How many snapshots of each kind to keep (`None`: that rule is off).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// The newest N.
    pub last: Option<usize>,
    /// The newest of each of the N newest hours.
    pub hourly: Option<usize>,
    /// The newest of each of the N newest days.
    pub daily: Option<usize>,
    /// The newest of each of the N newest weeks.
    pub weekly: Option<usize>,
    /// The newest of each of the N newest months.
    pub monthly: Option<usize>,
}

impl KeepPolicy {
    /// Whether any rule is set.
    pub fn is_set(&self) -> bool {
        [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
        ]
        .iter()
        .any(Option::is_some)
    }
}

/// For each of `snapshots` (id, time), whether `policy` keeps it.
/// PLACEHOLDER: only `policy.last` is applied (see the module docs).
pub fn select(
    snapshots: &[(String, jiff::Timestamp)],
    policy: &KeepPolicy,
    _tz: &jiff::tz::TimeZone,
) -> Vec<bool> {
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    // Newest first.
    order.sort_by(|&a, &b| snapshots[b].1.cmp(&snapshots[a].1));
    let mut keep = vec![false; snapshots.len()];
    for (rank, &i) in order.iter().enumerate() {
        if policy.last.is_some_and(|n| rank < n) {
            keep[i] = true;
        }
    }
    keep
}
