//! A benchmark report directory: `summary.md` (machine, command, date,
//! tables), raw CSV files and SVG plots drawn with `plotters`.
//!
//! Plots are SVG because plotters' SVG backend writes text as `<text>`
//! elements: it needs no font files, which PNG output would (ttf +
//! fontconfig) and which a headless server may lack.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

/// A report being written into a directory.
pub struct Report {
    dir: PathBuf,
    summary: String,
    files: Vec<String>,
}

/// One curve of a plot: its legend and (x, y) points.
pub struct Series {
    /// Legend.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

impl Report {
    /// Creates `dir` (and parents) and starts `summary.md` with `title`,
    /// the command line, the date and the machine.
    pub fn create(dir: &Path, title: &str) -> anyhow::Result<Report> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the report directory {}", dir.display()))?;
        let mut summary = String::new();
        let _ = writeln!(summary, "# {title}\n");
        let _ = writeln!(summary, "- command: `{}`", command_line());
        let _ = writeln!(summary, "- date (UTC): {}", utc_now());
        let _ = writeln!(summary, "- machine: {}", machine());
        let _ = writeln!(
            summary,
            "- load average (1, 5, 15 min) at start: {} — other work on the machine shares its cores",
            load_average()
        );
        let _ = writeln!(
            summary,
            "- build: federact {} ({} profile)\n",
            env!("CARGO_PKG_VERSION"),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "optimised"
            }
        );
        Ok(Report {
            dir: dir.to_path_buf(),
            summary,
            files: Vec::new(),
        })
    }

    /// Appends Markdown text to the summary.
    pub fn text(&mut self, md: &str) {
        self.summary.push_str(md);
        if !md.ends_with('\n') {
            self.summary.push('\n');
        }
    }

    /// Appends a Markdown table.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        let _ = writeln!(self.summary, "| {} |", header.join(" | "));
        let _ = writeln!(
            self.summary,
            "|{}|",
            header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
        );
        for r in rows {
            let _ = writeln!(self.summary, "| {} |", r.join(" | "));
        }
        self.summary.push('\n');
    }

    /// Writes `name` (a CSV file) with `header` and `rows`.
    pub fn csv(&mut self, name: &str, header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
        let mut text = header.join(",");
        text.push('\n');
        for r in rows {
            let cells: Vec<String> = r.iter().map(|c| csv_cell(c)).collect();
            text.push_str(&cells.join(","));
            text.push('\n');
        }
        self.write(name, &text)
    }

    /// Draws a line plot of `series` to `name` (an SVG file) and links it
    /// from the summary.
    pub fn plot(
        &mut self,
        name: &str,
        title: &str,
        x_label: &str,
        y_label: &str,
        series: &[Series],
        axes: Axes,
    ) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        draw(&path, title, x_label, y_label, series, axes)
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
        self.files.push(name.to_string());
        let _ = writeln!(self.summary, "![{title}]({name})\n");
        Ok(())
    }

    fn write(&mut self, name: &str, text: &str) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        self.files.push(name.to_string());
        Ok(())
    }

    /// Writes `summary.md` (listing the other files) and returns its path.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        let mut files = std::mem::take(&mut self.files);
        files.sort();
        let _ = writeln!(self.summary, "## Files\n");
        for f in &files {
            let _ = writeln!(self.summary, "- [{f}]({f})");
        }
        let summary = std::mem::take(&mut self.summary);
        self.write("summary.md", &summary)?;
        Ok(self.dir.join("summary.md"))
    }
}

/// Which axes of a plot are logarithmic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axes {
    /// Both linear.
    Linear,
    /// Logarithmic y (latencies spanning decades). Points at or below
    /// zero on a logarithmic axis are left out of the plot.
    LogY,
    /// Both logarithmic: sweeps whose x doubles (rates 1, 2, 4, … 4096),
    /// which a linear x axis squashes into its left edge.
    LogXY,
}

fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

fn draw(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    axes: Axes,
) -> Result<(), Box<dyn std::error::Error>> {
    // A logarithmic axis cannot show zero or below: such points are left
    // out of the plot (the CSV keeps them).
    let (log_x, log_y) = (axes == Axes::LogXY, axes != Axes::Linear);
    let kept: Vec<Series> = series
        .iter()
        .map(|s| Series {
            name: s.name.clone(),
            points: (s.points.iter().copied())
                .filter(|&(x, y)| (!log_x || x > 0.0) && (!log_y || y > 0.0))
                .collect(),
        })
        .collect();
    let series = &kept[..];
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (1.0, 2.0, 1.0, 2.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .draw()?;
            for (i, s) in series.iter().enumerate() {
                let c = colors[i % colors.len()];
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }};
    }
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70);
    let (x_lo, x_hi) = if log_x {
        (x0 / 1.25, x1 * 1.25)
    } else {
        (x0, x1)
    };
    let y_range = if !log_y {
        0.0..if y1 > 0.0 { y1 * 1.1 } else { 1.0 }
    } else {
        let lo = if y0 > 0.0 { y0 * 0.8 } else { 0.01 };
        lo..(y1 * 1.25).max(lo * 10.0)
    };
    match (log_x, log_y) {
        (true, _) => {
            body!(builder.build_cartesian_2d((x_lo..x_hi).log_scale(), y_range.log_scale())?)
        }
        (false, true) => body!(builder.build_cartesian_2d(x_lo..x_hi, y_range.log_scale())?),
        (false, false) => body!(builder.build_cartesian_2d(x_lo..x_hi, y_range)?),
    }
    root.present()?;
    Ok(())
}

/// An axis tick label: whole numbers without a trailing ".0", others with
/// up to three significant decimals.
fn tick(v: &f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The command line as typed (arguments with spaces quoted).
pub fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 {
                Path::new(&a)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or(a)
            } else {
                a
            };
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The CPU model, core count and memory, from /proc.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!(
        "{cores} cores available, {model}, {:.1} GiB RAM, {} {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "unknown".into())
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Formats `x` with `digits` decimals.
pub fn f(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv_cell("a"), "a");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"x\""), "\"say \"\"x\"\"\"");
    }

    #[test]
    fn report_writes_summary_csv_and_an_svg_plot() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Report::create(&dir.path().join("r"), "t").unwrap();
        r.table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        r.csv("x.csv", &["a", "b"], &[vec!["1".into(), "2".into()]])
            .unwrap();
        r.plot(
            "p.svg",
            "title",
            "x",
            "y",
            &[Series {
                name: "s".into(),
                points: vec![(1.0, 2.0), (2.0, 3.0)],
            }],
            Axes::LogXY,
        )
        .unwrap();
        let summary = std::fs::read_to_string(r.finish().unwrap()).unwrap();
        assert!(summary.contains("| a | b |") && summary.contains("![title](p.svg)"));
        let svg = std::fs::read_to_string(dir.path().join("r/p.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("r/x.csv")).unwrap(),
            "a,b\n1,2\n"
        );
    }

    #[test]
    fn ticks_print_whole_numbers_without_decimals() {
        assert_eq!(tick(&1.0), "1");
        assert_eq!(tick(&1_000_000.0), "1000000");
        assert_eq!(tick(&0.25), "0.25");
        assert_eq!(tick(&12.5), "12.5");
        assert_eq!(tick(&0.0), "0");
    }

    #[test]
    fn every_axes_kind_draws_even_with_zero_coordinates() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Report::create(&dir.path().join("r"), "t").unwrap();
        let series = [Series {
            name: "s".into(),
            points: vec![(0.0, 0.0), (1.0, 5.0), (4096.0, 900.0)],
        }];
        for (i, axes) in [Axes::Linear, Axes::LogY, Axes::LogXY]
            .into_iter()
            .enumerate()
        {
            let name = format!("p{i}.svg");
            r.plot(&name, "t", "x", "y", &series, axes).unwrap();
            let svg = std::fs::read_to_string(dir.path().join("r").join(&name)).unwrap();
            assert!(svg.contains("<polyline"), "{axes:?} drew no line");
        }
        let nothing_positive = [Series {
            name: "zeros".into(),
            points: vec![(0.0, 0.0), (0.0, 0.0)],
        }];
        r.plot("z.svg", "t", "x", "y", &nothing_positive, Axes::LogXY)
            .unwrap();
    }

    #[test]
    fn utc_now_is_a_timestamp() {
        let t = utc_now();
        assert_eq!(t.len(), 19, "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
