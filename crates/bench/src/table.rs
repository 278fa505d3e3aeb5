//! The report as a table for a terminal.

use crate::matrix::Report;

/// How a column's cells are aligned.
#[derive(Clone, Copy)]
enum Align {
    /// Text: against the left edge.
    Left,
    /// Numbers: against the right edge, so digits line up.
    Right,
}

/// The columns: heading and alignment.
const COLUMNS: &[(&str, Align)] = &[
    ("operation", Align::Left),
    ("engine", Align::Left),
    ("io", Align::Left),
    ("workers", Align::Right),
    ("MB/s", Align::Right),
    ("(min..max)", Align::Right),
    ("files/s", Align::Right),
    ("p50 ms", Align::Right),
    ("p99 ms", Align::Right),
    ("CPU", Align::Right),
    ("CPU/core", Align::Right),
    ("peak RSS", Align::Right),
    ("round trip", Align::Left),
];

/// Columns are separated by this many spaces.
const GAP: usize = 2;

/// A rate with about three significant digits.
pub(crate) fn format_rate(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Renders one line per record (MB/s and files/s are medians over runs;
/// CPU is busy cores as a percentage of one core, CPU/core of all cores),
/// under a heading row and a rule, columns aligned.
pub fn render_table(report: &Report) -> String {
    let rows: Vec<Vec<String>> = report
        .cells
        .iter()
        .map(|cell| {
            vec![
                cell.operation.to_string(),
                cell.engine.clone(),
                cell.io.clone(),
                cell.workers.to_string(),
                format_rate(cell.mb_per_s.median),
                format!(
                    "{}..{}",
                    format_rate(cell.mb_per_s.min),
                    format_rate(cell.mb_per_s.max)
                ),
                format_rate(cell.files_per_s.median),
                format!("{:.2}", cell.latency_p50_ms),
                format!("{:.2}", cell.latency_p99_ms),
                format!("{:.0}%", cell.cpu_utilisation * 100.0),
                format!("{:.0}%", cell.cpu_per_core * 100.0),
                format!("{:.1} MiB", cell.peak_rss_kib as f64 / 1024.0),
                match &cell.round_trip_error {
                    None => "ok".to_owned(),
                    Some(error) => format!("FAILED: {error}"),
                },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = COLUMNS.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut out = String::new();
        for (i, ((cell, width), (_, align))) in cells.iter().zip(&widths).zip(COLUMNS).enumerate() {
            let last = i + 1 == COLUMNS.len();
            let padded = match align {
                Align::Left if last => cell.clone(),
                Align::Left => format!("{cell:<width$}"),
                Align::Right => format!("{cell:>width$}"),
            };
            out.push_str(&padded);
            if !last {
                out.push_str(&" ".repeat(GAP));
            }
        }
        out.push('\n');
        out
    };
    let headings: Vec<String> = COLUMNS.iter().map(|(h, _)| (*h).to_owned()).collect();
    let mut out = line(&headings);
    let rule = widths.iter().sum::<usize>() + GAP * (widths.len() - 1);
    out.push_str(&"-".repeat(rule));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::sample_report;

    #[test]
    fn columns_line_up() {
        let table = render_table(&sample_report());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 8, "{table}");
        assert!(lines[0].starts_with("operation  engine"));
        assert!(lines[1].chars().all(|c| c == '-'));
        // Right-aligned numbers end in the same column: the MB/s heading
        // ends where every MB/s value ends.
        let end = lines[0].find("MB/s").expect("heading") + "MB/s".len();
        for line in &lines[2..] {
            let before = &line[..end];
            assert!(before.ends_with(|c: char| c.is_ascii_digit()), "{line}");
            assert_eq!(line.as_bytes()[end], b' ', "{line}");
        }
        assert!(lines[2].starts_with("encrypt    threads"));
        assert!(table.contains("FAILED: f000001.bin has different bytes"));
        assert!(lines[2].ends_with("ok"));
    }

    #[test]
    fn rates_keep_three_digits() {
        assert_eq!(format_rate(1234.5), "1234");
        assert_eq!(format_rate(56.78), "56.8");
        assert_eq!(format_rate(0.1234), "0.12");
    }
}
