//! Which snapshots a `forget --keep-*` policy keeps.
//!
//! The rules are restic's, so that people who know `restic forget` get what
//! they expect. Snapshots are taken newest first. `--keep-last N` keeps the
//! N newest. Each calendar rule (`--keep-hourly`, `-daily`, `-weekly`,
//! `-monthly`, `-yearly N`) cuts time into buckets (an hour, a day, an ISO
//! week, a month, a year, in the given time zone) and keeps the newest
//! snapshot of each of the N newest buckets that hold a snapshot. A
//! snapshot is kept when any rule keeps it; the others are forgotten.
//!
//! The function is pure (no store, no clock): the caller groups the
//! snapshots (by host and paths) and passes each group on its own.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// How many snapshots each rule keeps; `None` means the rule is not used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// The N newest snapshots.
    pub last: Option<usize>,
    /// The newest snapshot of each of the N newest hours.
    pub hourly: Option<usize>,
    /// The newest snapshot of each of the N newest days.
    pub daily: Option<usize>,
    /// The newest snapshot of each of the N newest ISO weeks.
    pub weekly: Option<usize>,
    /// The newest snapshot of each of the N newest months.
    pub monthly: Option<usize>,
    /// The newest snapshot of each of the N newest years.
    pub yearly: Option<usize>,
}

impl KeepPolicy {
    /// True when no rule is set: such a policy would forget everything, so
    /// callers refuse it instead of applying it.
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }
}

/// The calendar bucket of a time for each rule, as comparable integers.
#[derive(Clone, Copy)]
enum Bucket {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Bucket {
    fn key(self, zoned: &jiff::Zoned) -> i64 {
        let (year, month, day, hour) = (
            i64::from(zoned.year()),
            i64::from(zoned.month()),
            i64::from(zoned.day()),
            i64::from(zoned.hour()),
        );
        match self {
            Bucket::Hour => ((year * 100 + month) * 100 + day) * 100 + hour,
            Bucket::Day => (year * 100 + month) * 100 + day,
            Bucket::Week => {
                let week = zoned.date().iso_week_date();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Bucket::Month => year * 100 + month,
            Bucket::Year => year,
        }
    }
}

/// For each snapshot `(id, time)` of `snapshots` (in any order), whether
/// `policy` keeps it; the result is in the same order as the input. Ties
/// in time are broken by id, so the answer never depends on input order.
pub fn select(snapshots: &[(String, Timestamp)], policy: &KeepPolicy, tz: &TimeZone) -> Vec<bool> {
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|&a, &b| {
        let (ida, ta) = &snapshots[a];
        let (idb, tb) = &snapshots[b];
        tb.cmp(ta).then_with(|| idb.cmp(ida))
    });
    let mut keep = vec![false; snapshots.len()];
    if let Some(n) = policy.last {
        for &i in order.iter().take(n) {
            keep[i] = true;
        }
    }
    let rules = [
        (policy.hourly, Bucket::Hour),
        (policy.daily, Bucket::Day),
        (policy.weekly, Bucket::Week),
        (policy.monthly, Bucket::Month),
        (policy.yearly, Bucket::Year),
    ];
    let zoned: Vec<jiff::Zoned> = snapshots
        .iter()
        .map(|(_, t)| t.to_zoned(tz.clone()))
        .collect();
    for (count, bucket) in rules {
        let Some(n) = count else { continue };
        let mut kept = 0;
        let mut last_key = None;
        for &i in &order {
            if kept == n {
                break;
            }
            let key = bucket.key(&zoned[i]);
            if last_key != Some(key) {
                keep[i] = true;
                kept += 1;
                last_key = Some(key);
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn snaps(times: &[&str]) -> Vec<(String, Timestamp)> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("s{i:02}"), at(t)))
            .collect()
    }

    fn kept(snapshots: &[(String, Timestamp)], policy: &KeepPolicy) -> Vec<String> {
        let keep = select(snapshots, policy, &TimeZone::UTC);
        let mut ids: Vec<String> = snapshots
            .iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|((id, _), _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn keep_last_keeps_the_newest_whatever_the_input_order() {
        let s = snaps(&[
            "2026-01-03T00:00:00Z",
            "2026-01-01T00:00:00Z",
            "2026-01-04T00:00:00Z",
            "2026-01-02T00:00:00Z",
        ]);
        let policy = KeepPolicy {
            last: Some(2),
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&s, &policy), ["s00", "s02"]);
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_of_the_newest_days() {
        // Three on the 5th, two on the 4th, none on the 3rd, one on the 2nd and the 1st.
        let s = snaps(&[
            "2026-03-05T23:00:00Z",
            "2026-03-05T12:00:00Z",
            "2026-03-05T01:00:00Z",
            "2026-03-04T18:00:00Z",
            "2026-03-04T06:00:00Z",
            "2026-03-02T10:00:00Z",
            "2026-03-01T10:00:00Z",
        ]);
        let policy = KeepPolicy {
            daily: Some(3),
            ..KeepPolicy::default()
        };
        // Days with a snapshot count, empty days do not: the 5th, the 4th, the 2nd.
        assert_eq!(kept(&s, &policy), ["s00", "s03", "s05"]);
    }

    #[test]
    fn days_are_cut_in_the_given_time_zone() {
        // 23:30 and 00:30 UTC are one day apart in UTC but the same day at UTC-5.
        let s = snaps(&["2026-06-02T00:30:00Z", "2026-06-01T23:30:00Z"]);
        let policy = KeepPolicy {
            daily: Some(2),
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&s, &policy), ["s00", "s01"]);
        let minus_five = TimeZone::fixed(jiff::tz::offset(-5));
        let keep = select(&s, &policy, &minus_five);
        assert_eq!(keep, [true, false]);
    }

    #[test]
    fn weeks_are_iso_weeks_across_a_year_end() {
        // 2026-12-31 (Thursday) and 2027-01-03 (Sunday) are both in ISO week 2026-W53;
        // 2027-01-04 (Monday) starts 2027-W01.
        let s = snaps(&[
            "2027-01-04T09:00:00Z",
            "2027-01-03T09:00:00Z",
            "2026-12-31T09:00:00Z",
            "2026-12-21T09:00:00Z",
        ]);
        let policy = KeepPolicy {
            weekly: Some(3),
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&s, &policy), ["s00", "s01", "s03"]);
    }

    #[test]
    fn monthly_and_yearly_buckets() {
        let s = snaps(&[
            "2026-02-10T00:00:00Z",
            "2026-02-01T00:00:00Z",
            "2026-01-15T00:00:00Z",
            "2025-12-31T00:00:00Z",
            "2024-06-30T00:00:00Z",
        ]);
        let monthly = KeepPolicy {
            monthly: Some(2),
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&s, &monthly), ["s00", "s02"]);
        let yearly = KeepPolicy {
            yearly: Some(5),
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&s, &yearly), ["s00", "s03", "s04"]);
    }

    #[test]
    fn a_snapshot_kept_by_any_rule_is_kept() {
        let s = snaps(&[
            "2026-03-05T12:00:00Z",
            "2026-03-05T11:00:00Z",
            "2026-03-04T12:00:00Z",
            "2026-02-01T12:00:00Z",
        ]);
        let policy = KeepPolicy {
            last: Some(2),
            monthly: Some(2),
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&s, &policy), ["s00", "s01", "s03"]);
    }

    #[test]
    fn hourly_counts_hours_not_snapshots() {
        let s = snaps(&[
            "2026-03-05T12:59:00Z",
            "2026-03-05T12:01:00Z",
            "2026-03-05T11:30:00Z",
            "2026-03-05T09:00:00Z",
        ]);
        let policy = KeepPolicy {
            hourly: Some(2),
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&s, &policy), ["s00", "s02"]);
    }

    #[test]
    fn equal_times_are_ordered_by_id_and_an_empty_policy_is_reported() {
        let s = snaps(&["2026-03-05T12:00:00Z", "2026-03-05T12:00:00Z"]);
        let policy = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&s, &policy), ["s01"]);
        assert!(KeepPolicy::default().is_empty());
        assert!(!policy.is_empty());
    }
}
