//! `masklm plot RUN_DIR`: draws `loss.png` and `accuracy.png` from `RUN_DIR/metrics.jsonl`.
//!
//! Charts are drawn with plotters' bitmap backend. Text uses DejaVu Sans, embedded in the binary
//! from `assets/DejaVuSans.ttf` (license: `assets/FONT-LICENSE.txt`) and registered with plotters'
//! `ab_glyph` font table, so no system font, fontconfig or freetype is needed.

use crate::error::UsageError;
use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The log `masklm train` writes (see [`crate::train::metrics`]).
pub const METRICS_FILE: &str = crate::train::metrics::FILE;
/// Training loss (raw and, for longer runs, a moving average) and eval loss against step.
pub const LOSS_PNG: &str = "loss.png";
/// Eval masked-token accuracy and top-5 accuracy against step.
pub const ACCURACY_PNG: &str = "accuracy.png";
/// Width of both charts, in pixels.
pub const WIDTH: u32 = 1280;
/// Height of both charts, in pixels.
pub const HEIGHT: u32 = 720;

/// The family name the embedded font is registered under; plotters' `FontFamily::SansSerif`.
const FONT: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Reads `run_dir/metrics.jsonl` and writes `run_dir/loss.png` and `run_dir/accuracy.png`
/// (each [`WIDTH`] × [`HEIGHT`]), returning their paths in that order.
///
/// * `loss.png`: training `loss` per step (faint raw line plus a moving average once there are
///   100 or more rows), and `eval_loss` as a red line with points when eval rows exist.
/// * `accuracy.png`: `eval_accuracy` and `eval_top5_accuracy` per step. With no eval rows yet the
///   file is still written, as a titled chart that says so, so the returned list is always both
///   files.
///
/// Rows are keyed by `step`; when a step appears more than once (a file edited or joined by
/// hand: `--resume` truncates the rows past its checkpoint first) the row written last wins.
/// Lines without a `step`, and `null` or missing values, are ignored. An unparsable *last* line
/// (a run killed mid-write) is skipped silently; any other unparsable line is an error naming
/// `file:line`.
///
/// Both PNGs are drawn in memory, written to hidden temporary files beside their targets and
/// synced, then renamed over them ([`crate::io::write_all_atomic`]): a reader never sees a
/// half-written chart, and a failed write replaces neither.
///
/// Errors: a missing `run_dir`, a missing `metrics.jsonl`, an unparsable line, or a file with no
/// step rows are bad input ([`UsageError`], exit code 2); I/O and drawing failures are runtime
/// errors.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    match fs::metadata(run_dir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(UsageError::new(format!(
                "{} is not a folder: pass the run folder given to `masklm train` \
                 (the one holding {METRICS_FILE})",
                run_dir.display()
            ))
            .into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UsageError::new(format!(
                "run folder {} does not exist: pass the run folder given to `masklm train` \
                 (the one holding {METRICS_FILE}), or run `masklm train` first",
                run_dir.display()
            ))
            .into());
        }
        // A loop of links, a folder without permission: the path given is the problem.
        Err(e) => {
            return Err(UsageError::new(format!(
                "run folder {} cannot be read ({e}): pass the run folder given to `masklm train`",
                run_dir.display()
            ))
            .into());
        }
    }

    let metrics_path = run_dir.join(METRICS_FILE);
    match fs::metadata(&metrics_path) {
        Ok(md) if md.is_file() => {}
        Ok(_) => {
            return Err(UsageError::new(format!(
                "{} is not a file: it should be the metrics log that `masklm train` writes",
                metrics_path.display()
            ))
            .into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A checkpoint folder (run/checkpoint-N) has none; its run folder does.
            let parent = run_dir
                .parent()
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    }
                })
                .filter(|p| p.join(METRICS_FILE).is_file());
            let holds_model = run_dir.join(crate::train::checkpoint::MODEL_FILE).is_file();
            if let Some(run) = parent.filter(|_| holds_model) {
                return Err(UsageError::new(format!(
                    "{} is a checkpoint folder; plot its run folder: masklm plot {}",
                    run_dir.display(),
                    run.display()
                ))
                .into());
            }
            return Err(UsageError::new(format!(
                "{} not found: run `masklm train` with this run folder first \
                 (it appends a row to {METRICS_FILE} every train.logging_steps steps)",
                metrics_path.display()
            ))
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", metrics_path.display())),
    }

    let metrics = read_metrics(&metrics_path)?;
    if metrics.step_rows == 0 {
        return Err(UsageError::new(format!(
            "{} has no step rows yet: let `masklm train` run at least one step, then plot again",
            metrics_path.display()
        ))
        .into());
    }

    // Checked before drawing: a chart is written beside a temporary file, renamed over it.
    if let Some(dir) = [LOSS_PNG, ACCURACY_PNG]
        .map(|n| run_dir.join(n))
        .iter()
        .find(|p| p.is_dir())
    {
        return Err(UsageError::new(format!(
            "{} is a folder, where plot writes its chart; move it away and plot again",
            dir.display()
        ))
        .into());
    }
    crate::io::can_create_in(run_dir).map_err(|e| {
        UsageError::new(format!(
            "cannot write the charts into {} ({e}); make it writable, or plot a copy of the run \
             folder",
            run_dir.display()
        ))
    })?;

    register_font()?;
    let run_name = run_name(run_dir);

    let loss_path = run_dir.join(LOSS_PNG);
    let title = format!("{run_name} — loss");
    let loss = render_png(|root| draw_loss(root, &title, &metrics))
        .with_context(|| format!("drawing {}", loss_path.display()))?;

    let accuracy_path = run_dir.join(ACCURACY_PNG);
    let title = format!("{run_name} — eval accuracy");
    let accuracy = render_png(|root| draw_accuracy(root, &title, &metrics))
        .with_context(|| format!("drawing {}", accuracy_path.display()))?;

    // Both or neither: a chart that cannot be written leaves the other as it was.
    crate::io::write_all_atomic(&[(&loss_path, &loss), (&accuracy_path, &accuracy)])?;
    Ok(vec![loss_path, accuracy_path])
}

/// The fields of a metrics row that the charts use; any others are ignored.
#[derive(Debug, Deserialize)]
struct Row {
    step: Option<u64>,
    loss: Option<f64>,
    eval_loss: Option<f64>,
    eval_accuracy: Option<f64>,
    eval_top5_accuracy: Option<f64>,
}

/// Series keyed and sorted by step.
#[derive(Debug, Default)]
struct Metrics {
    /// Rows that had a `step`.
    step_rows: usize,
    loss: BTreeMap<u64, f64>,
    eval_loss: BTreeMap<u64, f64>,
    eval_accuracy: BTreeMap<u64, f64>,
    eval_top5_accuracy: BTreeMap<u64, f64>,
}

impl Metrics {
    fn add(&mut self, row: Row) {
        let Some(step) = row.step else { return };
        self.step_rows += 1;
        let series = [
            (&mut self.loss, row.loss),
            (&mut self.eval_loss, row.eval_loss),
            (&mut self.eval_accuracy, row.eval_accuracy),
            (&mut self.eval_top5_accuracy, row.eval_top5_accuracy),
        ];
        for (map, value) in series {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                map.insert(step, v);
            }
        }
    }
}

/// The longest metrics row read: `masklm train` writes rows of about 250 bytes.
const MAX_ROW_BYTES: u64 = 64 << 10;

/// Parses `path` line by line (it can be large, so it is streamed, and a line is read up to
/// [`MAX_ROW_BYTES`], so a file without newlines is refused, not loaded). Blank lines are
/// ignored; a parse failure is held back until another non-blank line shows it was not the last.
fn read_metrics(path: &Path) -> Result<Metrics> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut metrics = Metrics::default();
    let mut pending: Option<(usize, serde_json::Error)> = None;
    let mut line = Vec::new();
    let mut line_no = 0usize;
    loop {
        let read = crate::io::read_line_capped(&mut reader, &mut line, MAX_ROW_BYTES)
            .with_context(|| format!("reading {}", path.display()))?;
        if read == crate::io::Line::End {
            break;
        }
        line_no += 1;
        if read == crate::io::Line::TooLong {
            crate::usage!(
                "{}:{line_no}: a line longer than {} is not a metrics row; {} should be the \
                 metrics.jsonl that `masklm train` writes",
                path.display(),
                crate::io::size_words(MAX_ROW_BYTES),
                path.display()
            );
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Some((bad_no, err)) = pending.take() {
            return Err(UsageError::new(format!(
                "{}:{bad_no}: not a valid metrics row ({err}); fix or delete that line, \
                 then plot again",
                path.display()
            ))
            .into());
        }
        match serde_json::from_slice::<Row>(&line) {
            Ok(row) => metrics.add(row),
            Err(err) => pending = Some((line_no, err)),
        }
    }
    // A pending error here belongs to the last line: a row cut short by a kill. Skip it, unless
    // it was the only line: then the file is not a metrics log at all.
    if let Some((bad_no, err)) = pending
        && metrics.step_rows == 0
    {
        crate::usage!(
            "{}:{bad_no}: not a valid metrics row ({err}); {} should be the metrics.jsonl that \
             `masklm train` writes",
            path.display(),
            path.display()
        );
    }
    Ok(metrics)
}

/// Registers the embedded font with plotters once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the embedded chart font (assets/DejaVuSans.ttf) could not be loaded"
        ))
    }
}

/// The run folder's name for chart titles (`.` and the like resolved to a real name).
fn run_name(run_dir: &Path) -> String {
    run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            let abs = run_dir.canonicalize().ok()?;
            abs.file_name().map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| run_dir.display().to_string())
}

/// The PNG file of a chart `draw` makes, drawn in memory (so that writing it fails with the
/// file system's own error, and the two charts can be written together).
fn render_png(draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<Vec<u8>> {
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&rgb)?;
    writer.finish()?;
    Ok(png)
}

fn points(series: &BTreeMap<u64, f64>) -> Vec<(f64, f64)> {
    series.iter().map(|(&s, &v)| (s as f64, v)).collect()
}

/// Centred moving average: each point is the mean of the points up to `half` either side of it
/// (fewer near the ends). Centred rather than trailing, so the curve does not lag the data.
fn moving_average(points: &[(f64, f64)], half: usize) -> Vec<(f64, f64)> {
    let mut prefix = Vec::with_capacity(points.len() + 1);
    prefix.push(0.0);
    for &(_, y) in points {
        prefix.push(prefix[prefix.len() - 1] + y);
    }
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, _))| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(points.len());
            (x, (prefix[hi] - prefix[lo]) / (hi - lo) as f64)
        })
        .collect()
}

/// The x (step) range over all series, widened when it is a single step.
fn step_range<'a>(series: impl IntoIterator<Item = &'a (f64, f64)>) -> std::ops::Range<f64> {
    let (lo, hi) = series
        .into_iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(x, _)| {
            (lo.min(x), hi.max(x))
        });
    if hi > lo {
        lo..hi
    } else {
        (lo - 1.0).max(0.0)..hi + 1.0
    }
}

/// The y range over all series with 5% headroom both ways, widened when it is a single value,
/// and within ±[`VALUE_LIMIT`].
fn value_range<'a>(series: impl IntoIterator<Item = &'a (f64, f64)>) -> std::ops::Range<f64> {
    let (lo, hi) = series
        .into_iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, y)| {
            (lo.min(y), hi.max(y))
        });
    let limit = |v: f64| v.clamp(-VALUE_LIMIT, VALUE_LIMIT);
    let (lo, hi) = (limit(lo), limit(hi));
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        (hi.abs() * 0.1).max(0.5)
    };
    limit(lo - pad)..limit(hi + pad)
}

/// The largest value magnitude a chart's range reaches: plotters' arithmetic on a range near
/// f64::MAX overflows and never returns (a hand-edited 1.7e308 hung `plot`); masklm's own rows,
/// from f32 sums, stay below 3.4e38.
const VALUE_LIMIT: f64 = 1e300;

fn fmt_step(x: &f64) -> String {
    format!("{x:.0}")
}

/// How many step labels an x range takes: at most one per whole step (plotters' default of 10
/// over steps 1 to 3 printed "1 1 1 2 2 2 3"), at most 10.
fn step_labels(range: &std::ops::Range<f64>) -> usize {
    ((range.end - range.start).floor() as usize + 1).clamp(2, 10)
}

/// A value label that fits the label area (about 8 characters): two decimals for a loss, fewer
/// digits or an exponent for the huge values of a diverging run.
fn fmt_value(y: &f64) -> String {
    match y.abs() {
        a if a >= 1e5 => format!("{y:.1e}"),
        a if a >= 100.0 => format!("{y:.0}"),
        _ => format!("{y:.2}"),
    }
}

/// A titled blank chart with `note` in the middle, for a chart with nothing to plot.
fn draw_note(root: &Area<'_>, title: &str, note: &str) -> Result<()> {
    root.fill(&WHITE)?;
    let area = root.margin(20, 20, 20, 20).titled(title, (FONT, 28))?;
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 22))
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(
        note.to_string(),
        ((w / 2) as i32, (h / 2) as i32),
        style,
    ))?;
    Ok(())
}

fn draw_loss(root: &Area<'_>, title: &str, m: &Metrics) -> Result<()> {
    let train = points(&m.loss);
    let eval = points(&m.eval_loss);
    if train.is_empty() && eval.is_empty() {
        return draw_note(
            root,
            title,
            &format!("no loss values in {METRICS_FILE} (all missing or null)"),
        );
    }
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 28))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(
            step_range(train.iter().chain(&eval)),
            value_range(train.iter().chain(&eval)),
        )?;
    let steps = step_range(train.iter().chain(&eval));
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .x_labels(step_labels(&steps))
        .x_label_formatter(&fmt_step)
        .y_label_formatter(&fmt_value)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 20))
        .draw()?;

    let dark_blue = RGBColor(0, 40, 170);
    if !train.is_empty() {
        // Per-step loss is noisy: from 100 rows on, draw it pale and overlay a moving average
        // about 1% of the rows wide (a dozen pixels at this width) in a strong colour.
        let half = (train.len() / 200).max(2);
        let smooth = (train.len() >= 100).then(|| moving_average(&train, half));
        let raw_style = if smooth.is_some() {
            RGBColor(160, 190, 245).stroke_width(1)
        } else {
            dark_blue.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(train.iter().copied(), raw_style))?
            .label("train loss")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], raw_style));
        if train.len() < 50 {
            chart.draw_series(train.iter().map(|&p| Circle::new(p, 2, dark_blue.filled())))?;
        }
        if let Some(smooth) = smooth {
            let style = dark_blue.stroke_width(2);
            // Rows are `train.logging_steps` apart: the width is said in steps.
            let rows = 2 * half + 1;
            let per_row = (train[train.len() - 1].0 - train[0].0) / (train.len() - 1) as f64;
            let label = if (per_row - 1.0).abs() < 0.5 {
                format!("train loss, {rows}-step moving average")
            } else {
                let steps = rows as f64 * per_row;
                format!("train loss, moving average over {rows} rows (about {steps:.0} steps)")
            };
            chart
                .draw_series(LineSeries::new(smooth, style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
    }
    if !eval.is_empty() {
        let style = RED.stroke_width(2);
        chart
            .draw_series(LineSeries::new(eval.iter().copied(), style))?
            .label("eval loss")
            .legend(move |(x, y)| {
                EmptyElement::at((x + 12, y))
                    + PathElement::new(vec![(-12, 0), (12, 0)], style)
                    + Circle::new((0, 0), 4, RED.filled())
            });
        chart.draw_series(eval.iter().map(|&p| Circle::new(p, 4, RED.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 16))
        .draw()?;
    Ok(())
}

fn draw_accuracy(root: &Area<'_>, title: &str, m: &Metrics) -> Result<()> {
    let top1 = points(&m.eval_accuracy);
    let top5 = points(&m.eval_top5_accuracy);
    if top1.is_empty() && top5.is_empty() {
        return draw_note(
            root,
            title,
            &format!(
                "no evaluation rows in {METRICS_FILE} yet: `masklm train` adds \
                 eval_accuracy at each evaluation"
            ),
        );
    }
    // Accuracies are fractions; show them as percentages. Anything above 1 is plotted as is.
    let top = top1.iter().chain(&top5).fold(0.0f64, |a, &(_, y)| a.max(y));
    let fraction = top <= 1.0;
    let y_range = if fraction { 0.0..1.0 } else { 0.0..top * 1.05 };
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 28))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(step_range(top1.iter().chain(&top5)), y_range)?;
    let y_fmt = move |y: &f64| {
        if fraction {
            format!("{:.0}%", y * 100.0)
        } else {
            fmt_value(y)
        }
    };
    let steps = step_range(top1.iter().chain(&top5));
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("masked-token accuracy")
        .x_labels(step_labels(&steps))
        .x_label_formatter(&fmt_step)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 20))
        .draw()?;

    let purple = RGBColor(128, 0, 160);
    let series = [
        (
            top1,
            "eval accuracy (top-1)",
            RGBColor(0, 150, 60).to_rgba(),
        ),
        (top5, "eval accuracy (top-5)", purple.to_rgba()),
    ];
    for (pts, label, color) in series {
        if pts.is_empty() {
            continue;
        }
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), style))?
            .label(label)
            .legend(move |(x, y)| {
                EmptyElement::at((x + 12, y))
                    + PathElement::new(vec![(-12, 0), (12, 0)], style)
                    + Circle::new((0, 0), 4, color.filled())
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 16))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EXIT_USAGE, exit_code};
    use std::fmt::Write as _;

    #[test]
    fn axis_labels_fit_short_runs_and_huge_values() {
        assert_eq!(step_labels(&(1.0..3.0)), 3);
        assert_eq!(step_labels(&(0.0..1.0)), 2);
        assert_eq!(step_labels(&(0.0..5000.0)), 10);
        assert_eq!(fmt_value(&2.5), "2.50");
        assert_eq!(fmt_value(&1234.4), "1234");
        assert_eq!(fmt_value(&-98765432.0), "-9.9e7");
    }

    #[test]
    fn value_ranges_stay_finite_near_the_largest_float() {
        for values in [
            [1.7e308, 3.0],
            [-1.7e308, 1.7e308],
            [1.7e308, 1.7e308],
            [2.0, 2.0],
        ] {
            let points: Vec<(f64, f64)> = values.iter().map(|&v| (1.0, v)).collect();
            let r = value_range(&points);
            assert!(
                r.start < r.end && (r.end - r.start).is_finite(),
                "{values:?}: {r:?}"
            );
        }
        assert_eq!(value_range(&[(1.0, 1.0), (2.0, 3.0)]), 0.9..3.1);
    }

    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

    /// Checks the PNG signature and returns (width, height) from the IHDR chunk.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = fs::read(path).unwrap();
        assert!(
            bytes.starts_with(PNG_MAGIC),
            "{} is not a PNG",
            path.display()
        );
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    fn train_row(step: u64) -> String {
        let loss = 10.0 / (1.0 + step as f64 / 20.0) + 0.1 * ((step as f64) * 1.7).sin();
        format!(
            r#"{{"step": {step}, "loss": {loss}, "lr": 0.0001, "grad_norm": 1.5, "tokens_per_sec": 12000.0, "elapsed_s": {}}}"#,
            step as f64 * 0.5
        )
    }

    /// An eval row; with `with_train_fields` it repeats that step's training row's fields too.
    fn eval_row(step: u64, with_train_fields: bool) -> String {
        let acc = 0.9 - 0.8 / (1.0 + step as f64 / 50.0);
        let extra = if with_train_fields {
            let train = train_row(step);
            format!(
                ", {}",
                &train[train.find(", ").unwrap() + 2..train.len() - 1]
            )
        } else {
            String::new()
        };
        format!(
            r#"{{"step": {step}, "eval_loss": {}, "eval_accuracy": {acc}, "eval_top5_accuracy": {}, "eval_perplexity": 20.0{extra}}}"#,
            3.0 + 100.0 / (step as f64 + 20.0),
            (acc + 0.08).min(1.0),
        )
    }

    /// `steps` training rows, an eval row every 50 steps, and optionally a cut-off last line.
    fn metrics_text(steps: u64, evals: bool, truncated_tail: bool) -> String {
        let mut s = String::new();
        for step in 1..=steps {
            writeln!(s, "{}", train_row(step)).unwrap();
            if evals && step % 50 == 0 {
                writeln!(s, "{}", eval_row(step, step % 100 == 0)).unwrap();
            }
        }
        if truncated_tail {
            s.push_str(r#"{"step": 9999, "loss": 2.3, "lr": 0.0"#);
        }
        s
    }

    fn run_dir_with(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(METRICS_FILE), text).unwrap();
        dir
    }

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_both_pngs_at_the_expected_size() {
        let dir = run_dir_with(&metrics_text(300, true, true));
        let written = plot_run(dir.path()).unwrap();
        assert_eq!(
            written,
            vec![dir.path().join(LOSS_PNG), dir.path().join(ACCURACY_PNG)]
        );
        for p in &written {
            assert_eq!(png_size(p), (WIDTH, HEIGHT), "{}", p.display());
        }
        // No temporary file is left behind.
        assert_eq!(
            file_names(dir.path()),
            vec![ACCURACY_PNG, LOSS_PNG, METRICS_FILE]
        );
        if let Ok(keep) = std::env::var("MASKLM_PLOT_KEEP") {
            for p in &written {
                fs::copy(p, Path::new(&keep).join(p.file_name().unwrap())).unwrap();
            }
        }
    }

    #[test]
    fn replotting_overwrites_the_pngs() {
        let dir = run_dir_with(&metrics_text(20, true, false));
        plot_run(dir.path()).unwrap();
        fs::write(
            dir.path().join(METRICS_FILE),
            metrics_text(120, true, false),
        )
        .unwrap();
        let written = plot_run(dir.path()).unwrap();
        for p in &written {
            assert_eq!(png_size(p), (WIDTH, HEIGHT));
        }
        assert_eq!(
            file_names(dir.path()),
            vec![ACCURACY_PNG, LOSS_PNG, METRICS_FILE]
        );
    }

    #[test]
    fn without_eval_rows_accuracy_png_is_still_written() {
        let dir = run_dir_with(&metrics_text(10, false, false));
        let written = plot_run(dir.path()).unwrap();
        assert_eq!(written.len(), 2);
        for p in &written {
            assert_eq!(png_size(p), (WIDTH, HEIGHT));
        }
        if let Ok(keep) = std::env::var("MASKLM_PLOT_KEEP") {
            let to = Path::new(&keep).join("accuracy-no-eval.png");
            fs::copy(&written[1], to).unwrap();
        }
    }

    #[test]
    fn a_single_row_plots() {
        let dir = run_dir_with(&format!("{}\n", train_row(1)));
        for p in plot_run(dir.path()).unwrap() {
            assert_eq!(png_size(&p), (WIDTH, HEIGHT));
        }
    }

    #[test]
    fn truncated_last_line_is_skipped() {
        let dir = run_dir_with(&metrics_text(100, true, true));
        let m = read_metrics(&dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(m.loss.len(), 100);
        assert!(!m.loss.contains_key(&9999));
        assert_eq!(m.eval_loss.len(), 2);
        assert_eq!(m.eval_accuracy.len(), 2);
        assert_eq!(m.eval_top5_accuracy.len(), 2);
        assert_eq!(m.step_rows, 102);

        // Cut mid-way through a multi-byte character, followed by trailing blank lines.
        let mut bytes = metrics_text(5, false, false).into_bytes();
        bytes.extend_from_slice(b"{\"step\": 6, \"note\": \"\xe2\x82");
        bytes.extend_from_slice(b"\n\n");
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(METRICS_FILE), bytes).unwrap();
        assert_eq!(plot_run(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn bad_middle_line_is_an_error_naming_file_and_line() {
        let mut text = metrics_text(3, false, false);
        text.insert_str(
            text.find('\n').unwrap() + 1,
            "{\"step\": 2, \"loss\": oops}\n",
        );
        let dir = run_dir_with(&text);
        let err = plot_run(dir.path()).unwrap_err();
        let msg = err.to_string();
        let want = format!("{}:2:", dir.path().join(METRICS_FILE).display());
        assert!(msg.contains(&want), "{msg}");
        assert_eq!(exit_code(&err), EXIT_USAGE);
        // Nothing is drawn from a broken file.
        assert_eq!(file_names(dir.path()), vec![METRICS_FILE]);
    }

    #[test]
    fn missing_metrics_file_is_a_usage_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = plot_run(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&dir.path().join(METRICS_FILE).display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("masklm train"), "{msg}");
        assert_eq!(exit_code(&err), EXIT_USAGE);
    }

    #[test]
    fn missing_run_dir_is_a_usage_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-run");
        let err = plot_run(&missing).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert_eq!(exit_code(&err), EXIT_USAGE);
    }

    #[test]
    fn no_step_rows_is_a_usage_error() {
        for text in ["", "\n\n", "{\"note\": \"started\"}\n"] {
            let dir = run_dir_with(text);
            let err = plot_run(dir.path()).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("no step rows"), "{msg}");
            assert!(
                msg.contains(&dir.path().join(METRICS_FILE).display().to_string()),
                "{msg}"
            );
            assert_eq!(exit_code(&err), EXIT_USAGE);
        }
    }

    #[test]
    fn repeated_steps_keep_the_last_row_and_nulls_are_ignored() {
        let text = "\
{\"step\": 1, \"loss\": 5.0}
{\"step\": 2, \"loss\": 4.0}
{\"step\": 2, \"loss\": 3.5}
{\"step\": 3, \"loss\": null}
{\"loss\": 1.0}
";
        let dir = run_dir_with(text);
        let m = read_metrics(&dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(
            m.loss.into_iter().collect::<Vec<_>>(),
            vec![(1, 5.0), (2, 3.5)]
        );
        assert_eq!(m.step_rows, 4);
    }

    #[test]
    fn moving_average_is_centred_and_shrinks_at_the_ends() {
        let pts = [(1.0, 1.0), (2.0, 3.0), (3.0, 5.0), (4.0, 7.0)];
        assert_eq!(
            moving_average(&pts, 1),
            vec![(1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (4.0, 6.0)]
        );
        assert_eq!(moving_average(&pts, 0), pts.to_vec());
    }

    /// The embedded font really produces glyph pixels (not just boxes or nothing).
    #[test]
    fn embedded_font_renders_text() {
        register_font().unwrap();
        let (w, h) = (200u32, 60u32);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.draw(&Text::new(
                "step",
                (10, 10),
                (FONT, 30).into_font().color(&BLACK),
            ))
            .unwrap();
            root.present().unwrap();
        }
        let dark = buf.chunks(3).filter(|px| px[0] < 128).count();
        assert!(dark > 100, "only {dark} dark pixels");
        assert!(dark < (w * h / 2) as usize, "{dark} dark pixels");
    }
}
