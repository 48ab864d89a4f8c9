//! `berth backup prune`: keep the newest backup of each of the last N days, ISO weeks
//! and months (UTC); always keep the newest backup and the newest verified one;
//! everything else may go.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::catalog::Record;

/// The retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub keep_days: u32,
    pub keep_weeks: u32,
    pub keep_months: u32,
}

/// One backup as prune sees it.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    /// The backup's number ([`crate::catalog::Record::seq`]): what orders backups
    /// (0 for records without one: then their time does).
    pub seq: u64,
    pub unix: u64,
    pub verified: bool,
}

/// What happens to one backup, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub keep: bool,
    pub reason: String,
}

fn date(unix: u64) -> Date {
    jiff::Timestamp::from_second(unix as i64)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(TimeZone::UTC)
        .date()
}

fn monday(d: Date) -> Date {
    let back = i64::from(d.weekday().to_monday_zero_offset());
    d.checked_sub(jiff::Span::new().days(back)).unwrap_or(d)
}

fn days_between(a: Date, b: Date) -> i64 {
    // Both are civil dates in UTC: whole days apart.
    (b.to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp().as_second())
        .unwrap_or(0)
        - a.to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp().as_second())
            .unwrap_or(0))
        / 86_400
}

/// Decide for every item (any order); the result is in the same order.
pub fn select(items: &[Item], now: u64, policy: Policy) -> Vec<Decision> {
    let today = date(now);
    let this_monday = monday(today);
    let month_index = |d: Date| i64::from(d.year()) * 12 + i64::from(d.month());
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Newest first: by number, never by a clock that may have gone back.
    order.sort_by(|a, b| {
        (items[*b].seq, items[*b].unix)
            .cmp(&(items[*a].seq, items[*a].unix))
            .then(b.cmp(a))
    });
    let newest = order.first().copied();
    let newest_verified = order.iter().copied().find(|i| items[*i].verified);
    let mut days = std::collections::HashSet::new();
    let mut weeks = std::collections::HashSet::new();
    let mut months = std::collections::HashSet::new();
    let mut out = vec![
        Decision {
            keep: false,
            reason: String::new(),
        };
        items.len()
    ];
    for i in order {
        let it = items[i];
        let d = date(it.unix);
        let day_age = days_between(d, today);
        let week_age = days_between(monday(d), this_monday) / 7;
        let month_age = month_index(today) - month_index(d);
        let week = d.iso_week_date();
        let week_name = format!("{}-W{:02}", week.year(), week.week());
        let month_name = format!("{:04}-{:02}", d.year(), d.month());
        let mut reasons = Vec::new();
        if it.unix > now {
            reasons.push("dated in the future (clock skew?)".to_string());
        }
        if day_age < i64::from(policy.keep_days) && days.insert(d) {
            reasons.push(format!("newest of day {d}"));
        }
        if week_age < i64::from(policy.keep_weeks) && weeks.insert(week_name.clone()) {
            reasons.push(format!("newest of week {week_name}"));
        }
        if month_age < i64::from(policy.keep_months) && months.insert(month_name.clone()) {
            reasons.push(format!("newest of month {month_name}"));
        }
        if Some(i) == newest {
            reasons.push("newest backup".into());
        }
        if Some(i) == newest_verified {
            reasons.push("newest verified backup".into());
        }
        out[i] = if reasons.is_empty() {
            let why = if day_age < i64::from(policy.keep_days) {
                format!("a newer backup of {d} is kept")
            } else if week_age < i64::from(policy.keep_weeks) {
                format!("a newer backup of week {week_name} is kept")
            } else if month_age < i64::from(policy.keep_months) {
                format!("a newer backup of {month_name} is kept")
            } else {
                format!(
                    "older than {} days, {} weeks and {} months",
                    policy.keep_days, policy.keep_weeks, policy.keep_months
                )
            };
            Decision {
                keep: false,
                reason: why,
            }
        } else {
            Decision {
                keep: true,
                reason: reasons.join("; "),
            }
        };
    }
    out
}

/// Delete a backup: its data files first, then its record.
pub fn delete(r: &Record) -> std::io::Result<()> {
    let gone = |p: std::path::PathBuf| match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    gone(r.path())?;
    if let Some(redis) = &r.redis {
        gone(r.dir.join(&redis.file))?;
    }
    gone(r.record_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn at(y: i16, m: i8, d: i8, h: i8) -> u64 {
        jiff::civil::date(y, m, d)
            .at(h, 0, 0, 0)
            .to_zoned(TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_second() as u64
    }

    fn kept(items: &[Item], now: u64, p: Policy) -> Vec<String> {
        let d = select(items, now, p);
        let mut v: Vec<String> = items
            .iter()
            .zip(&d)
            .filter(|(_, d)| d.keep)
            .map(|(i, _)| {
                jiff::Timestamp::from_second(i.unix as i64)
                    .unwrap()
                    .strftime("%Y-%m-%dT%H")
                    .to_string()
            })
            .collect();
        v.sort();
        v
    }

    /// One backup a day at 03:00 for 400 days up to and including 2026-11-25 (a Wednesday).
    fn daily_400() -> (Vec<Item>, u64) {
        let last = at(2026, 11, 25, 3);
        let items = (0..400)
            .map(|i| Item {
                seq: 0,
                unix: last - i * DAY,
                verified: false,
            })
            .collect();
        (items, at(2026, 11, 25, 12))
    }

    /// The clock set back an hour between two backups of one day: the second (number 2)
    /// is dated before the first, and is still the newest, kept; the first goes.
    #[test]
    fn a_clock_set_back_does_not_make_the_newest_backup_go() {
        let first = at(2026, 11, 25, 10);
        let items = [
            Item {
                seq: 1,
                unix: first,
                verified: false,
            },
            Item {
                seq: 2,
                unix: first - 3600 + 300,
                verified: false,
            },
        ];
        let p = Policy {
            keep_days: 7,
            keep_weeks: 4,
            keep_months: 6,
        };
        let d = select(&items, first + 3600, p);
        assert!(d[1].keep, "{d:?}");
        assert!(d[1].reason.contains("newest backup"), "{d:?}");
        assert!(!d[0].keep, "{d:?}");
    }

    #[test]
    fn table_of_policies_over_400_days() {
        let (items, now) = daily_400();
        let cases: Vec<(Policy, Vec<&str>)> = vec![
            (
                // 7 days; weeks: Sundays of the 3 previous ISO weeks (11-22 is also a kept
                // day; this week's newest is today); months: the last day of each of the
                // 5 previous months (11-01 belongs to week 2026-W44, outside 4 weeks).
                Policy {
                    keep_days: 7,
                    keep_weeks: 4,
                    keep_months: 6,
                },
                vec![
                    "2026-06-30T03",
                    "2026-07-31T03",
                    "2026-08-31T03",
                    "2026-09-30T03",
                    "2026-10-31T03",
                    "2026-11-08T03",
                    "2026-11-15T03",
                    "2026-11-19T03",
                    "2026-11-20T03",
                    "2026-11-21T03",
                    "2026-11-22T03",
                    "2026-11-23T03",
                    "2026-11-24T03",
                    "2026-11-25T03",
                ],
            ),
            (
                Policy {
                    keep_days: 1,
                    keep_weeks: 0,
                    keep_months: 0,
                },
                vec!["2026-11-25T03"],
            ),
            (
                // Nothing kept by policy: the newest backup still is.
                Policy {
                    keep_days: 0,
                    keep_weeks: 0,
                    keep_months: 0,
                },
                vec!["2026-11-25T03"],
            ),
            (
                // 13 months reach back into 2025-11: its newest is 2025-11-30.
                Policy {
                    keep_days: 0,
                    keep_weeks: 0,
                    keep_months: 13,
                },
                vec![
                    "2025-11-30T03",
                    "2025-12-31T03",
                    "2026-01-31T03",
                    "2026-02-28T03",
                    "2026-03-31T03",
                    "2026-04-30T03",
                    "2026-05-31T03",
                    "2026-06-30T03",
                    "2026-07-31T03",
                    "2026-08-31T03",
                    "2026-09-30T03",
                    "2026-10-31T03",
                    "2026-11-25T03",
                ],
            ),
            (
                // 2 weeks: this week (newest today) and last week's Sunday.
                Policy {
                    keep_days: 0,
                    keep_weeks: 2,
                    keep_months: 0,
                },
                vec!["2026-11-22T03", "2026-11-25T03"],
            ),
        ];
        for (policy, expected) in cases {
            assert_eq!(kept(&items, now, policy), expected, "{policy:?}");
        }
    }

    #[test]
    fn several_a_day_keeps_the_newest_of_each_day() {
        let mut items = Vec::new();
        for d in 0..3u64 {
            for h in [1u64, 9, 17] {
                items.push(Item {
                    seq: 0,
                    unix: at(2026, 11, 23, 0) + d * DAY + h * 3600,
                    verified: false,
                });
            }
        }
        let now = at(2026, 11, 25, 20);
        let p = Policy {
            keep_days: 2,
            keep_weeks: 0,
            keep_months: 0,
        };
        assert_eq!(kept(&items, now, p), vec!["2026-11-24T17", "2026-11-25T17"]);
        let d = select(&items, now, p);
        let first = items
            .iter()
            .position(|i| i.unix == at(2026, 11, 24, 9))
            .unwrap();
        assert_eq!(d[first].reason, "a newer backup of 2026-11-24 is kept");
        let old = items
            .iter()
            .position(|i| i.unix == at(2026, 11, 23, 17))
            .unwrap();
        assert_eq!(d[old].reason, "older than 2 days, 0 weeks and 0 months");
    }

    #[test]
    fn never_deletes_the_newest_verified_backup() {
        let (mut items, now) = daily_400();
        // Only an old one was verified.
        items[300].verified = true;
        let p = Policy {
            keep_days: 7,
            keep_weeks: 0,
            keep_months: 0,
        };
        let d = select(&items, now, p);
        assert!(d[300].keep);
        assert_eq!(d[300].reason, "newest verified backup");
        assert_eq!(d.iter().filter(|d| d.keep).count(), 8);
    }

    #[test]
    fn a_future_backup_is_kept() {
        let now = at(2026, 11, 25, 12);
        let items = [
            Item {
                seq: 0,
                unix: now + 3 * DAY,
                verified: false,
            },
            Item {
                seq: 0,
                unix: now - 1,
                verified: false,
            },
        ];
        let d = select(
            &items,
            now,
            Policy {
                keep_days: 0,
                keep_weeks: 0,
                keep_months: 0,
            },
        );
        assert!(d[0].keep && d[0].reason.contains("future"));
        assert!(!d[1].keep);
    }
}
