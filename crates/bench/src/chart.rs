//! The report as an SVG bar chart, written by hand.
//!
//! Groups of bars along the x axis are the operations (encrypt, decrypt);
//! within a group, one bar per configuration (`engine/io/workers`), each
//! configuration in its own colour throughout, named in the legend. A bar
//! is the median MB/s over the recorded runs; its whisker spans the slowest
//! and fastest run. A bar whose decrypted output did not match the workload
//! is labelled in red instead of with its value.

use std::fmt::Write;

use crate::matrix::Report;
use crate::table::format_rate;

/// Colours of the series, in order; repeated past the twentieth. Ten hues,
/// each dark then light (Tableau 20), so that a matrix listed with its
/// worker counts innermost (`threads/read/1`, `threads/read/2`, ...) shows
/// one hue per engine and I/O strategy and one shade per worker count.
const PALETTE: &[&str] = &[
    "#4e79a7", "#a0cbe8", "#f28e2b", "#ffbe7d", "#59a14f", "#8cd17d", "#b6992d", "#f1ce63",
    "#499894", "#86bcb6", "#e15759", "#ff9d9a", "#79706e", "#bab0ac", "#d37295", "#fabfd2",
    "#b07aa1", "#d4a6c8", "#9d7660", "#d7b5a6",
];

/// Left margin: room for tick labels and the y axis title.
const LEFT: f64 = 90.0;
/// Top margin: room for the title and two lines of subtitle.
const TOP: f64 = 92.0;
/// Bottom margin: room for group labels and the x axis title.
const BOTTOM: f64 = 70.0;
/// Room on the right for the legend.
const LEGEND_WIDTH: f64 = 230.0;
/// Height of the plot area.
const PLOT_HEIGHT: f64 = 340.0;
/// Narrowest plot area.
const MIN_PLOT_WIDTH: f64 = 480.0;
/// Widest a bar gets; narrower when there are many.
const MAX_BAR_WIDTH: f64 = 56.0;
/// Narrowest a bar gets; the chart widens instead.
const MIN_BAR_WIDTH: f64 = 14.0;
/// Space between two groups, as a share of a group's width.
const GROUP_GAP: f64 = 0.3;
/// Bars narrower than this get no value label (they would overlap).
const LABEL_MIN_BAR: f64 = 30.0;
/// Horizontal grid lines aimed for.
const TICKS: f64 = 5.0;

/// Renders the chart of MB/s per operation and configuration.
pub fn render_chart(report: &Report) -> String {
    let operations = report.operations();
    let configs = report.configs();
    let groups = operations.len().max(1) as f64;
    let series = configs.len().max(1) as f64;

    let bar =
        (MIN_PLOT_WIDTH / groups * (1.0 - GROUP_GAP) / series).clamp(MIN_BAR_WIDTH, MAX_BAR_WIDTH);
    let group_width = bar * series / (1.0 - GROUP_GAP);
    let plot_width = (group_width * groups).max(MIN_PLOT_WIDTH);
    let group_width = plot_width / groups;
    let width = LEFT + plot_width + LEGEND_WIDTH;
    let height = TOP + PLOT_HEIGHT + BOTTOM;

    let top_value = report
        .cells
        .iter()
        .map(|c| c.mb_per_s.max.max(c.mb_per_s.median))
        .fold(0.0, f64::max);
    let (step, top) = nice_scale(top_value);
    let y = |value: f64| TOP + PLOT_HEIGHT * (1.0 - value / top);
    let baseline = TOP + PLOT_HEIGHT;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let title = "cryptstream bench: throughput by configuration";
    let _ = writeln!(svg, "<title>{}</title>", escape(title));
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text class="title" x="{:.1}" y="30" text-anchor="middle" font-size="20" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    let workload = format!(
        "{} file{}, {} MB; bar = median of {} run{}, whisker = slowest..fastest run",
        report.workload.files,
        if report.workload.files == 1 { "" } else { "s" },
        format_rate(report.workload.bytes as f64 / 1e6),
        report.runs,
        if report.runs == 1 { "" } else { "s" }
    );
    let machine = &report.machine;
    let machine_line = format!(
        "{} cores, {}, AES-NI {}, outputs on {}",
        machine.cores,
        machine.cpu_model,
        if machine.aes_ni { "yes" } else { "no" },
        machine.scratch_filesystem
    );
    for (line, text) in [(52, workload), (70, machine_line)] {
        let _ = writeln!(
            svg,
            r##"<text class="subtitle" x="{:.1}" y="{line}" text-anchor="middle" font-size="13" fill="#444">{}</text>"##,
            width / 2.0,
            escape(&text)
        );
    }

    // Grid and y axis.
    let _ = writeln!(svg, r#"<g class="axis y">"#);
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        let ty = y(tick);
        let _ = writeln!(
            svg,
            r##"<line class="grid" x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#ddd"/>"##,
            LEFT + plot_width
        );
        let _ = writeln!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"#,
            LEFT - 8.0,
            ty + 4.0,
            format_tick(tick, step)
        );
        tick += step;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{baseline}" stroke="#333"/>"##
    );
    let mid = TOP + PLOT_HEIGHT / 2.0;
    let _ = writeln!(
        svg,
        r#"<text class="axis-title" x="24" y="{mid:.1}" text-anchor="middle" font-size="14" transform="rotate(-90 24 {mid:.1})">Throughput (MB/s, 10^6 bytes per second)</text>"#
    );
    let _ = writeln!(svg, "</g>");

    // X axis: one labelled group per operation.
    let _ = writeln!(svg, r#"<g class="axis x">"#);
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{baseline}" x2="{:.1}" y2="{baseline}" stroke="#333"/>"##,
        LEFT + plot_width
    );
    for (g, operation) in operations.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">{operation}</text>"#,
            LEFT + group_width * (g as f64 + 0.5),
            baseline + 22.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text class="axis-title" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">Operation</text>"#,
        LEFT + plot_width / 2.0,
        baseline + 52.0
    );
    let _ = writeln!(svg, "</g>");

    // Bars, whiskers and value labels, one group element per series.
    for (s, config) in configs.iter().enumerate() {
        let colour = PALETTE[s % PALETTE.len()];
        let name = escape(&config.to_string());
        let _ = writeln!(
            svg,
            r#"<g class="series" data-series="{name}" fill="{colour}">"#
        );
        for (g, operation) in operations.iter().enumerate() {
            let Some(cell) = report
                .cells
                .iter()
                .find(|c| c.operation == *operation && c.config() == *config)
            else {
                continue;
            };
            let group_left = LEFT + group_width * g as f64;
            let inner = bar * series;
            let x = group_left + (group_width - inner) / 2.0 + bar * s as f64;
            let top_y = y(cell.mb_per_s.median);
            let _ = writeln!(
                svg,
                r#"<rect class="bar" data-operation="{operation}" x="{:.1}" y="{top_y:.1}" width="{:.1}" height="{:.1}"><title>{name} {operation}: {} MB/s (median)</title></rect>"#,
                x + 1.0,
                bar - 2.0,
                (baseline - top_y).max(0.0),
                format_rate(cell.mb_per_s.median)
            );
            let cx = x + bar / 2.0;
            let (lo, hi) = (y(cell.mb_per_s.min), y(cell.mb_per_s.max));
            let cap = (bar / 4.0).min(8.0);
            let _ = writeln!(
                svg,
                r##"<path class="whisker" d="M{cx:.1} {lo:.1}V{hi:.1}M{:.1} {lo:.1}H{:.1}M{:.1} {hi:.1}H{:.1}" stroke="#222" stroke-width="1.5" fill="none"/>"##,
                cx - cap,
                cx + cap,
                cx - cap,
                cx + cap
            );
            // A failed round trip is marked whatever the bar's width: a fast
            // wrong answer must not pass for a result.
            if !cell.round_trip_ok {
                let _ = writeln!(
                    svg,
                    r##"<text class="value failed" x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="11" font-weight="bold" fill="#c00">&#x2717; output differs</text>"##,
                    hi.min(top_y) - 5.0
                );
            } else if bar >= LABEL_MIN_BAR {
                let _ = writeln!(
                    svg,
                    r##"<text class="value" x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#222">{}</text>"##,
                    hi.min(top_y) - 5.0,
                    format_rate(cell.mb_per_s.median)
                );
            }
        }
        let _ = writeln!(svg, "</g>");
    }

    // Legend.
    let legend_x = LEFT + plot_width + 24.0;
    let _ = writeln!(svg, r#"<g class="legend">"#);
    let _ = writeln!(
        svg,
        r#"<text class="legend-title" x="{legend_x:.1}" y="{:.1}" font-size="13" font-weight="bold">engine/io/workers</text>"#,
        TOP + 4.0
    );
    for (s, config) in configs.iter().enumerate() {
        let row = TOP + 24.0 + 22.0 * s as f64;
        let _ = writeln!(
            svg,
            r#"<g class="legend-entry" data-series="{name}"><rect x="{legend_x:.1}" y="{:.1}" width="14" height="14" fill="{}"/><text x="{:.1}" y="{row:.1}" font-size="13">{name}</text></g>"#,
            row - 11.0,
            PALETTE[s % PALETTE.len()],
            legend_x + 20.0,
            name = escape(&config.to_string())
        );
    }
    let _ = writeln!(svg, "</g>");
    svg.push_str("</svg>\n");
    svg
}

/// A tick step of 1, 2, 2.5 or 5 times a power of ten giving about
/// [`TICKS`] intervals, and the axis top: the first step at or above
/// `max` (1 with step 0.2 for an empty chart).
fn nice_scale(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (0.2, 1.0);
    }
    let raw = max / TICKS;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step, (max / step).ceil() * step)
}

/// A tick label with no more decimals than the step needs.
fn format_tick(value: f64, step: f64) -> String {
    let decimals = (0..6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled - scaled.round()).abs() < 1e-9 * scaled.max(1.0)
        })
        .unwrap_or(6) as usize;
    format!("{value:.decimals$}")
}

/// Escapes text for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::sample_report;

    fn has_class(node: &roxmltree::Node<'_, '_>, class: &str) -> bool {
        node.attribute("class")
            .is_some_and(|c| c.split_whitespace().any(|part| part == class))
    }

    #[test]
    fn is_valid_xml_with_one_series_per_configuration() {
        let report = sample_report();
        let svg = render_chart(&report);
        let doc = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );

        let series: Vec<_> = doc
            .descendants()
            .filter(|n| has_class(n, "series"))
            .collect();
        let names: Vec<&str> = series
            .iter()
            .filter_map(|n| n.attribute("data-series"))
            .collect();
        let expected: Vec<String> = report.configs().iter().map(|c| c.to_string()).collect();
        assert_eq!(names, expected);
        for node in &series {
            // One bar per operation in every series, each with a whisker.
            let bars = node.children().filter(|n| has_class(n, "bar")).count();
            let whiskers = node.children().filter(|n| has_class(n, "whisker")).count();
            assert_eq!((bars, whiskers), (2, 2));
        }
        // Each series has its own colour.
        let colours: std::collections::HashSet<_> =
            series.iter().filter_map(|n| n.attribute("fill")).collect();
        assert_eq!(colours.len(), series.len());

        let text_of = |class: &str| -> Vec<String> {
            doc.descendants()
                .filter(|n| has_class(n, class))
                .map(|n| {
                    n.descendants()
                        .filter(|t| t.is_text())
                        .filter_map(|t| t.text())
                        .collect()
                })
                .collect()
        };
        assert_eq!(text_of("title").len(), 1);
        assert!(text_of("title")[0].contains("throughput"));
        let axis_titles = text_of("axis-title");
        assert!(axis_titles.iter().any(|t| t.contains("MB/s")));
        assert!(axis_titles.iter().any(|t| t.contains("Operation")));
        let legend = text_of("legend-entry");
        assert_eq!(legend, expected);
        assert!(text_of("tick").iter().any(|t| t == "encrypt"));
        assert!(text_of("tick").iter().any(|t| t == "0"));
    }

    #[test]
    fn bars_are_as_tall_as_their_value() {
        let report = sample_report();
        let doc_text = render_chart(&report);
        let doc = roxmltree::Document::parse(&doc_text).expect("well-formed");
        let heights: Vec<f64> = doc
            .descendants()
            .filter(|n| has_class(n, "bar"))
            .filter_map(|n| n.attribute("height")?.parse().ok())
            .collect();
        // The fastest bar is the tallest.
        let tallest = heights.iter().copied().fold(0.0, f64::max);
        assert!(tallest > 0.0 && tallest <= PLOT_HEIGHT);
        assert!(heights.iter().all(|h| *h >= 0.0));
    }

    #[test]
    fn scale_is_nice() {
        assert_eq!(nice_scale(812.0), (200.0, 1000.0));
        assert_eq!(nice_scale(100.0), (20.0, 100.0));
        assert_eq!(nice_scale(3.3), (1.0, 4.0));
        assert_eq!(nice_scale(0.0), (0.2, 1.0));
        assert_eq!(format_tick(0.4, 0.2), "0.4");
        assert_eq!(format_tick(250.0, 50.0), "250");
        assert_eq!(format_tick(0.5, 0.25), "0.50");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape(r#"a<b & "c">"#), "a&lt;b &amp; &quot;c&quot;&gt;");
        let mut report = sample_report();
        report.cells[0].engine = "<odd&name>".to_owned();
        let svg = render_chart(&report);
        roxmltree::Document::parse(&svg).expect("still well-formed");
    }
}
