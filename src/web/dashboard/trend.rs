//! The overview's trend chart: daily snapshots in, an inline SVG out. Pure, so it is tested
//! without a server; everything it writes is numbers and dates, so the SVG needs no escaping.

use chrono::{NaiveDate, TimeDelta};
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::store::DailySnapshot;

/// One day of the chart: every account·region added up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrendDay {
    pub day: NaiveDate,
    pub keys: u64,
    pub compliant_keys: u64,
    pub delegating_keys: u64,
}

impl TrendDay {
    /// Compliant keys in percent (100 with no keys).
    pub fn percent(&self) -> f64 {
        if self.keys == 0 {
            100.0
        } else {
            self.compliant_keys as f64 * 100.0 / self.keys as f64
        }
    }
}

/// Adds up the snapshots of each day of the `days` days ending with `today`; days without a
/// snapshot are `None` (a gap in the chart, not a zero).
pub fn daily_totals(
    snapshots: &[DailySnapshot],
    today: NaiveDate,
    days: u32,
) -> Vec<(NaiveDate, Option<TrendDay>)> {
    let first = today - TimeDelta::days(i64::from(days.max(1)) - 1);
    let mut by_day: BTreeMap<NaiveDate, TrendDay> = BTreeMap::new();
    for s in snapshots
        .iter()
        .filter(|s| s.day >= first && s.day <= today)
    {
        let d = by_day.entry(s.day).or_insert(TrendDay {
            day: s.day,
            keys: 0,
            compliant_keys: 0,
            delegating_keys: 0,
        });
        d.keys += s.keys;
        d.compliant_keys += s.compliant_keys;
        d.delegating_keys += s.delegating_keys;
    }
    (0..i64::from(days.max(1)))
        .map(|i| {
            let day = first + TimeDelta::days(i);
            (day, by_day.get(&day).copied())
        })
        .collect()
}

const W: f64 = 720.0;
const H: f64 = 200.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 44.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The chart of `days` days ending with `today`: compliance in percent (solid, left axis) and
/// keys delegating to IAM (dashed, right axis).
pub fn trend_svg(snapshots: &[DailySnapshot], today: NaiveDate, days: u32) -> String {
    let series = daily_totals(snapshots, today, days);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = series.len();
    let x = |i: usize| {
        if n <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let y_pct = |p: f64| TOP + plot_h * (100.0 - p.clamp(0.0, 100.0)) / 100.0;
    let max_deleg = series
        .iter()
        .filter_map(|(_, d)| d.map(|d| d.delegating_keys))
        .max()
        .unwrap_or(0)
        .max(1);
    let y_deleg = |k: u64| TOP + plot_h * (1.0 - k as f64 / max_deleg as f64);

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="trend" viewBox="0 0 {W} {H}" width="100%" role="img" aria-labelledby="trend-title" xmlns="http://www.w3.org/2000/svg"><title id="trend-title">Compliance and IAM-delegating keys over the last {n} days</title>"#
    );
    for p in [0.0, 50.0, 100.0] {
        let y = y_pct(p);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{p}%</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis deleg" x="{:.1}" y="{:.1}">{max_deleg}</text><text class="axis deleg" x="{:.1}" y="{:.1}">0</text>"#,
        W - RIGHT + 6.0,
        TOP + 4.0,
        W - RIGHT + 6.0,
        TOP + plot_h + 4.0
    );
    if let (Some((first, _)), Some((last, _))) = (series.first(), series.last()) {
        let _ = write!(
            out,
            r#"<text class="axis" x="{LEFT}" y="{:.1}">{}</text><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            H - 8.0,
            first.format("%b %-d"),
            W - RIGHT,
            H - 8.0,
            last.format("%b %-d")
        );
    }
    if series.iter().all(|(_, d)| d.is_none()) {
        let _ = write!(
            out,
            r#"<text class="empty" x="{:.1}" y="{:.1}" text-anchor="middle">No daily snapshots yet: the sync records one per day.</text></svg>"#,
            W / 2.0,
            TOP + plot_h / 2.0
        );
        return out;
    }
    // Consecutive days with data form one line; a missing day breaks it.
    let mut segments: Vec<Vec<(usize, TrendDay)>> = Vec::new();
    let mut current = Vec::new();
    for (i, (_, d)) in series.iter().enumerate() {
        match d {
            Some(d) => current.push((i, *d)),
            None if !current.is_empty() => segments.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    for seg in &segments {
        let pct: Vec<(f64, f64)> = seg
            .iter()
            .map(|(i, d)| (x(*i), y_pct(d.percent())))
            .collect();
        let deleg: Vec<(f64, f64)> = seg
            .iter()
            .map(|(i, d)| (x(*i), y_deleg(d.delegating_keys)))
            .collect();
        for (class, points) in [("pct", pct), ("deleg", deleg)] {
            if points.len() == 1 {
                let (cx, cy) = points[0];
                let _ = write!(
                    out,
                    r#"<circle class="{class}" cx="{cx:.1}" cy="{cy:.1}" r="3"/>"#
                );
            } else {
                let list: Vec<String> = points
                    .iter()
                    .map(|(a, b)| format!("{a:.1},{b:.1}"))
                    .collect();
                let _ = write!(
                    out,
                    r#"<polyline class="{class}" points="{}"/>"#,
                    list.join(" ")
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(day: NaiveDate, region: &str, keys: u64, compliant: u64, deleg: u64) -> DailySnapshot {
        DailySnapshot {
            day,
            account_id: "111122223333".into(),
            region: region.into(),
            keys,
            compliant_keys: compliant,
            open_findings: keys - compliant,
            delegating_keys: deleg,
        }
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn days_add_up_regions_and_keep_gaps() {
        let today = d("2025-03-10");
        let snaps = [
            snap(d("2025-01-01"), "us-east-1", 9, 9, 0), // outside the window
            snap(d("2025-03-08"), "us-east-1", 10, 5, 3),
            snap(d("2025-03-08"), "eu-west-1", 10, 10, 0),
            snap(d("2025-03-10"), "us-east-1", 10, 8, 1),
        ];
        let totals = daily_totals(&snaps, today, 3);
        assert_eq!(totals.len(), 3);
        let first = totals[0].1.unwrap();
        assert_eq!(
            (first.keys, first.compliant_keys, first.delegating_keys),
            (20, 15, 3)
        );
        assert_eq!(first.percent(), 75.0);
        assert_eq!(totals[1], (d("2025-03-09"), None));
        assert_eq!(totals[2].1.unwrap().keys, 10);
    }

    #[test]
    fn the_chart_draws_lines_points_and_gaps() {
        let today = d("2025-03-10");
        let snaps = [
            snap(d("2025-03-08"), "us-east-1", 10, 5, 2),
            snap(d("2025-03-09"), "us-east-1", 10, 10, 0),
            snap(d("2025-03-10"), "us-east-1", 4, 0, 4),
        ];
        let svg = trend_svg(&snaps, today, 5);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        // 3 consecutive days: one line per series, no gaps
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        // day 3 of 5 at 50 %: x = 44 + 632 * 2/4 = 360, y = 12 + 160 * 0.5 = 92
        assert!(svg.contains("360.0,92.0"), "{svg}");
        // the last day: 0 % compliant (bottom), delegating = the maximum (top)
        assert!(
            svg.contains("676.0,172.0") && svg.contains("676.0,12.0"),
            "{svg}"
        );
        assert!(svg.contains("Mar 6") && svg.contains("Mar 10"));
        // a gap splits the line; a lone day is a point
        let gappy = [
            snap(d("2025-03-06"), "us-east-1", 1, 1, 0),
            snap(d("2025-03-07"), "us-east-1", 1, 1, 0),
            snap(d("2025-03-10"), "us-east-1", 1, 0, 1),
        ];
        let svg = trend_svg(&gappy, today, 5);
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
    }

    #[test]
    fn no_snapshots_says_so() {
        let svg = trend_svg(&[], d("2025-03-10"), 30);
        assert!(svg.contains("No daily snapshots yet"));
        assert!(!svg.contains("<polyline"));
        assert!(svg.ends_with("</svg>"));
    }
}
