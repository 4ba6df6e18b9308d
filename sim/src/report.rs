//! The simulation report (`tinychain sim --report FILE.html`): one self-contained HTML file, its
//! plots inline SVG drawn with `plotters`, its style inline CSS, no script to run and nothing
//! fetched. What each plot shows and how to read it is in `docs/sim-report.md`.
//!
//! - `run_html`: one run. Faults as bands on the timeline (and shaded behind every plot over
//!   time), block interval over time, each core's tip and final height over time, the finality
//!   lag, production share per validator, and the distribution of transfer latency.
//! - `sweep_html`: a seed sweep. One row per seed with pass or fail and the command that replays
//!   it, and the distributions of max gap, recovery time and reorg depth across seeds.
//!
//! Every plotted number is also in the page as JSON (`<script type="application/json"
//! id="report-data">`), so a test can compare it with `--json`. The run report's figures come
//! from `Simulation::figures` (the same chain walk as `Simulation::report`), and before writing
//! anything the report checks that the figures give the report's own numbers: a report that
//! disagrees with `--json` is a bug, and it panics rather than drawing it.

use crate::engine::{percentiles, Percentiles, SimReport};
use crate::scenario::Verdict;
use crate::series::{FaultBand, HeightPoint, RunFigures};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Every plot is this wide, with this much room for the y axis on its left, so the plots over
/// time line up one above the other.
const CHART_WIDTH_PX: u32 = 960;
const Y_LABEL_AREA_PX: u32 = 110;
/// Lines of at most this many cores are drawn in the heights plot (the rest are in the data).
const CORES_DRAWN_MAX: usize = 32;
/// The heights plot names its lines in a legend up to this many cores (beyond, it would cover
/// the plot; the colours repeat every ten).
const LEGEND_CORES_MAX: usize = 12;
/// Histograms aim at about this many buckets.
const BUCKETS_TARGET: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot draw the {chart} plot: {reason}")]
    Plot { chart: &'static str, reason: String },
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws one SVG plot of `height_px` into a string.
fn draw_svg<F>(chart: &'static str, height_px: u32, draw: F) -> Result<String, ReportError>
where
    F: FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
{
    let failed = |reason: String| ReportError::Plot { chart, reason };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (CHART_WIDTH_PX, height_px)).into_drawing_area();
        root.fill(&WHITE).map_err(|error| failed(error.to_string()))?;
        draw(&root).map_err(|error| failed(error.to_string()))?;
        root.present().map_err(|error| failed(error.to_string()))?;
    }
    Ok(svg)
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart with every plot's caption style, margins and label areas over `x` by `y`.
fn chart_on<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: impl AsRef<str>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    Ok(ChartBuilder::on(root)
        .caption(caption, caption_style())
        .margin(10)
        .margin_right(25)
        .x_label_area_size(35)
        .y_label_area_size(Y_LABEL_AREA_PX)
        .build_cartesian_2d(x, y)?)
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1_000.0
}

fn kind_color(kind: &str) -> RGBColor {
    match kind {
        "crash" => RGBColor(214, 39, 40),
        "pause" => RGBColor(255, 127, 14),
        "partition" => RGBColor(148, 103, 189),
        "loss" => RGBColor(31, 119, 180),
        "dup" => RGBColor(23, 190, 207),
        "reorder" => RGBColor(44, 160, 44),
        "skew" => RGBColor(140, 86, 75),
        "metrics" => RGBColor(188, 189, 34),
        _ => RGBColor(60, 60, 60),
    }
}

fn core_color(core: usize) -> RGBColor {
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    colors[core % colors.len()]
}

fn caption_style() -> TextStyle<'static> {
    ("sans-serif", 17).into_font().into()
}

fn small_text() -> TextStyle<'static> {
    TextStyle::from(("sans-serif", 12).into_font())
}

/// Shades every fault band (and marks `heal-all`) behind a plot over time whose y axis spans
/// `0..y_max`.
fn shade_faults<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    figures: &RunFigures,
    y_max: f64,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart.draw_series(figures.fault_bands.iter().map(|band| {
        // An instant fault gets a visible sliver.
        let end_s = seconds(band.end_ms).max(seconds(band.start_ms) + seconds(figures.duration_ms) / 400.0);
        Rectangle::new([(seconds(band.start_ms), 0.0), (end_s, y_max)], kind_color(band.kind).mix(0.13).filled())
    }))?;
    if let Some(heal_all_ms) = figures.heal_all_ms {
        let x = seconds(heal_all_ms);
        chart.draw_series(DashedLineSeries::new([(x, 0.0), (x, y_max)], 5, 4, BLACK.mix(0.6).stroke_width(1)))?;
    }
    Ok(())
}

/// The timeline: one row per fault lane, each episode a band from its start to its end.
fn faults_svg(figures: &RunFigures) -> Result<String, ReportError> {
    let mut lanes: Vec<&str> = Vec::new();
    for band in &figures.fault_bands {
        if !lanes.contains(&band.lane.as_str()) {
            lanes.push(&band.lane);
        }
    }
    let rows = lanes.len().max(1);
    let height_px = 90 + 22 * rows as u32;
    draw_svg("faults", height_px, |root| {
        let x_max = seconds(figures.duration_ms).max(1.0);
        let mut chart = chart_on(root, "Faults on the timeline", 0f64..x_max, 0f64..rows as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("virtual time (s)")
            .draw()?;
        // The first lane is the top row.
        let row_of = |lane: &str| (rows - 1 - lanes.iter().position(|name| *name == lane).unwrap_or(0)) as f64;
        chart.draw_series(figures.fault_bands.iter().map(|band: &FaultBand| {
            let row = row_of(&band.lane);
            let end_s = seconds(band.end_ms).max(seconds(band.start_ms) + x_max / 400.0);
            Rectangle::new(
                [(seconds(band.start_ms), row + 0.15), (end_s, row + 0.85)],
                kind_color(band.kind).mix(0.55).filled(),
            )
        }))?;
        for band in &figures.fault_bands {
            // The band's own words beyond its lane's name (`n0,n1 one-way`, `stale`, `12%`),
            // when they fit inside it.
            let text = band.label.strip_prefix(band.lane.as_str()).unwrap_or(&band.label).trim();
            let (left, top) = chart.backend_coord(&(seconds(band.start_ms), row_of(&band.lane) + 0.5));
            let (right, _) = chart.backend_coord(&(seconds(band.end_ms), 0.0));
            if !text.is_empty() && (right - left) as usize > 7 * text.len() + 4 {
                root.draw(&Text::new(
                    text.to_string(),
                    (left + 3, top),
                    small_text().pos(Pos::new(HPos::Left, VPos::Center)),
                ))?;
            }
        }
        for lane in &lanes {
            let (left, y) = chart.backend_coord(&(0.0, row_of(lane) + 0.5));
            root.draw(&Text::new(
                lane.to_string(),
                (left - 6, y),
                small_text().pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
        }
        if lanes.is_empty() {
            let (left, y) = chart.backend_coord(&(0.0, 0.5));
            root.draw(&Text::new(
                "no fault injected",
                (left + 8, y),
                small_text().pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        if let Some(heal_all_ms) = figures.heal_all_ms {
            let x = seconds(heal_all_ms);
            chart.draw_series(DashedLineSeries::new([(x, 0.0), (x, rows as f64)], 5, 4, BLACK.stroke_width(1)))?;
            let (left, top) = chart.backend_coord(&(x, rows as f64));
            root.draw(&Text::new("heal-all", (left + 4, top + 2), small_text().pos(Pos::new(HPos::Left, VPos::Top))))?;
        }
        Ok(())
    })
}

/// Block interval over time, on the reference chain.
fn intervals_svg(figures: &RunFigures) -> Result<String, ReportError> {
    draw_svg("block interval", 320, |root| {
        let x_max = seconds(figures.duration_ms).max(1.0);
        let largest_ms = figures.blocks.iter().map(|block| block.interval_ms).max().unwrap_or(0);
        let y_max = seconds(largest_ms.max(figures.block_interval_ms * 2)) * 1.1;
        let mut chart = chart_on(root, "Block interval over time", 0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("block timestamp (s)")
            .y_desc("interval (s)")
            .draw()?;
        shade_faults(&mut chart, figures, y_max)?;
        let target = seconds(figures.block_interval_ms);
        chart.draw_series(DashedLineSeries::new(
            [(0.0, target), (x_max, target)],
            6,
            4,
            BLACK.mix(0.5).stroke_width(1),
        ))?;
        let points: Vec<(f64, f64)> =
            figures.blocks.iter().map(|block| (seconds(block.timestamp_ms), seconds(block.interval_ms))).collect();
        chart.draw_series(LineSeries::new(points.iter().copied(), core_color(0).mix(0.6).stroke_width(1)))?;
        chart.draw_series(figures.blocks.iter().map(|block| {
            let color = if block.rank > 0 { kind_color("crash") } else { core_color(0) };
            Circle::new((seconds(block.timestamp_ms), seconds(block.interval_ms)), 2, color.filled())
        }))?;
        Ok(())
    })
}

/// A core's points as step lines, one segment per stretch it was up.
fn step_segments(points: &[HeightPoint], end_ms: u64, value: impl Fn(&HeightPoint) -> u64) -> Vec<Vec<(f64, f64)>> {
    let mut segments = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for (index, point) in points.iter().enumerate() {
        let until_ms = points.get(index + 1).map_or(end_ms, |next| next.at_ms);
        if point.up {
            let y = value(point) as f64;
            current.push((seconds(point.at_ms), y));
            current.push((seconds(until_ms), y));
        } else if !current.is_empty() {
            segments.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

/// Each core's tip and final height over time.
fn heights_svg(figures: &RunFigures) -> Result<String, ReportError> {
    draw_svg("heights", 380, |root| {
        let x_max = seconds(figures.duration_ms).max(1.0);
        let top = figures.heights.iter().flatten().map(|point| point.tip).max().unwrap_or(0);
        let y_max = (top as f64 * 1.05).max(2.0);
        let mut chart = chart_on(root, "Tip and final height of each node", 0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc("virtual time (s)")
            .y_desc("height")
            .draw()?;
        shade_faults(&mut chart, figures, y_max)?;
        for (core, points) in figures.heights.iter().enumerate().take(CORES_DRAWN_MAX) {
            let color = core_color(core);
            for (index, segment) in
                step_segments(points, figures.duration_ms, |point| point.tip).into_iter().enumerate()
            {
                let drawn = chart.draw_series(LineSeries::new(segment, color.stroke_width(2)))?;
                if index == 0 && figures.cores.len() <= LEGEND_CORES_MAX {
                    let name = figures.cores[core].clone();
                    drawn
                        .label(name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                }
            }
            for segment in step_segments(points, figures.duration_ms, |point| point.final_height) {
                chart.draw_series(DashedLineSeries::new(segment, 4, 3, color.mix(0.8).stroke_width(1)))?;
            }
        }
        if figures.cores.len() <= LEGEND_CORES_MAX {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(small_text())
                .draw()?;
        }
        Ok(())
    })
}

/// The reference core's finality lag per final height, at the time it saw it final.
fn finality_svg(figures: &RunFigures) -> Result<String, ReportError> {
    draw_svg("finality lag", 300, |root| {
        let x_max = seconds(figures.duration_ms).max(1.0);
        let largest_ms = figures.finality.iter().map(|point| point.lag_ms).max().unwrap_or(0);
        let y_max = (seconds(largest_ms) * 1.1).max(1.0);
        let caption = format!("Finality lag on the reference node ({})", figures.cores[figures.reference]);
        let mut chart = chart_on(root, caption, 0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("virtual time seen final (s)")
            .y_desc("lag (s)")
            .draw()?;
        shade_faults(&mut chart, figures, y_max)?;
        let points: Vec<(f64, f64)> =
            figures.finality.iter().map(|point| (seconds(point.final_at_ms), seconds(point.lag_ms))).collect();
        chart.draw_series(LineSeries::new(points.iter().copied(), core_color(4).mix(0.5).stroke_width(1)))?;
        chart.draw_series(points.iter().map(|point| Circle::new(*point, 2, core_color(4).filled())))?;
        Ok(())
    })
}

/// Blocks per validator on the reference chain, in per-mille, with the fair share.
fn production_svg(report: &SimReport, blocks_by_producer: &[u64]) -> Result<String, ReportError> {
    draw_svg("production share", 320, |root| {
        let validators = report.production_share.len().max(1);
        let fair = 1_000.0 / validators as f64;
        let largest = report.production_share.iter().copied().max().unwrap_or(0) as f64;
        let y_max = (largest.max(fair) * 1.2).max(10.0);
        let mut chart =
            chart_on(root, "Production share per validator", -0.5f64..validators as f64 - 0.5, 0f64..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc("blocks (per-mille)")
            .draw()?;
        chart.draw_series(report.production_share.iter().enumerate().map(|(validator, share)| {
            let color = if report.byzantine.contains(&validator) { kind_color("crash") } else { core_color(0) };
            Rectangle::new(
                [(validator as f64 - 0.35, 0.0), (validator as f64 + 0.35, *share as f64)],
                color.mix(0.8).filled(),
            )
        }))?;
        chart.draw_series(DashedLineSeries::new(
            [(-0.5, fair), (validators as f64 - 0.5, fair)],
            6,
            4,
            BLACK.mix(0.6).stroke_width(1),
        ))?;
        let (right, y) = chart.backend_coord(&(validators as f64 - 0.5, fair));
        root.draw(&Text::new("fair share", (right - 4, y - 3), small_text().pos(Pos::new(HPos::Right, VPos::Bottom))))?;
        if validators <= 32 {
            for (validator, share) in report.production_share.iter().enumerate() {
                let (x, bottom) = chart.backend_coord(&(validator as f64, 0.0));
                root.draw(&Text::new(
                    format!("n{validator}"),
                    (x, bottom + 6),
                    small_text().pos(Pos::new(HPos::Center, VPos::Top)),
                ))?;
                let (_, top) = chart.backend_coord(&(validator as f64, *share as f64));
                let blocks = blocks_by_producer.get(validator).copied().unwrap_or(0);
                root.draw(&Text::new(
                    format!("{share}‰ ({blocks})"),
                    (x, top - 3),
                    small_text().pos(Pos::new(HPos::Center, VPos::Bottom)),
                ))?;
            }
        }
        Ok(())
    })
}

/// One bucket of a histogram: values in `from..to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub from: u64,
    pub to: u64,
    pub count: u64,
}

/// The smallest of 1, 2, 5, 10, 20, 50, ... at or above `at_least`.
fn nice_width(at_least: u64) -> u64 {
    let mut width = 1u64;
    loop {
        for step in [1, 2, 5] {
            if width.saturating_mul(step) >= at_least {
                return width.saturating_mul(step);
            }
        }
        width = width.saturating_mul(10);
    }
}

/// Equal buckets of a round width over the values, about `BUCKETS_TARGET` of them.
pub fn buckets(values: &[u64]) -> Vec<Bucket> {
    let (Some(min), Some(max)) = (values.iter().min(), values.iter().max()) else { return Vec::new() };
    let width = nice_width((max - min + 1).div_ceil(BUCKETS_TARGET));
    let first = min / width * width;
    let mut counts = vec![0u64; ((max - first) / width + 1) as usize];
    for value in values {
        counts[((value - first) / width) as usize] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(index, count)| {
            let from = first + index as u64 * width;
            Bucket { from, to: from + width, count }
        })
        .collect()
}

/// A histogram of `values` (in `unit`), with labelled vertical markers (percentiles).
fn histogram_svg(
    chart_name: &'static str,
    title: &str,
    unit: &str,
    values: &[u64],
    markers: &[(&str, u64)],
) -> Result<String, ReportError> {
    let buckets = buckets(values);
    draw_svg(chart_name, 300, |root| {
        let x_min = buckets.first().map_or(0, |bucket| bucket.from) as f64;
        let x_max = buckets.last().map_or(1, |bucket| bucket.to) as f64;
        let y_max = (buckets.iter().map(|bucket| bucket.count).max().unwrap_or(0) as f64 * 1.15).max(1.0);
        let mut chart = chart_on(root, title, x_min..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc(unit)
            .y_desc("count")
            .draw()?;
        chart.draw_series(buckets.iter().map(|bucket| {
            Rectangle::new(
                [(bucket.from as f64, 0.0), (bucket.to as f64, bucket.count as f64)],
                core_color(0).mix(0.75).filled(),
            )
        }))?;
        chart.draw_series(buckets.iter().map(|bucket| {
            Rectangle::new([(bucket.from as f64, 0.0), (bucket.to as f64, bucket.count as f64)], WHITE.stroke_width(1))
        }))?;
        if values.is_empty() {
            let (left, y) = chart.backend_coord(&(x_min, y_max / 2.0));
            root.draw(&Text::new("no values", (left + 8, y), small_text().pos(Pos::new(HPos::Left, VPos::Center))))?;
        }
        for (index, (name, at)) in markers.iter().enumerate() {
            let x = *at as f64;
            if values.is_empty() || x < x_min || x > x_max {
                continue;
            }
            chart.draw_series(DashedLineSeries::new(
                [(x, 0.0), (x, y_max)],
                5,
                3,
                kind_color("crash").stroke_width(1),
            ))?;
            let (left, top) = chart.backend_coord(&(x, y_max));
            root.draw(&Text::new(
                format!("{name} {at}"),
                (left + 3, top + 2 + 14 * index as i32),
                small_text().color(&kind_color("crash")).pos(Pos::new(HPos::Left, VPos::Top)),
            ))?;
        }
        Ok(())
    })
}

/// The numbers of a run that the report plots, as `--json` gives them: from the `SimReport`, or
/// worked out again from the figures. The report is written only when the two agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlottedNumbers {
    pub height: u64,
    pub final_height: u64,
    pub blocks_by_rank: BTreeMap<u32, u64>,
    pub interval_ms: Percentiles,
    pub finality_lag_ms: Percentiles,
    pub tx_latency_ms: Percentiles,
    pub production_share: Vec<u64>,
    pub reorgs: u64,
    pub max_reorg_depth: u64,
    pub faults_injected: u64,
}

impl PlottedNumbers {
    pub fn of_report(report: &SimReport) -> PlottedNumbers {
        PlottedNumbers {
            height: report.height,
            final_height: report.final_height,
            blocks_by_rank: report.blocks_by_rank.clone(),
            interval_ms: report.interval_ms,
            finality_lag_ms: report.finality_lag_ms,
            tx_latency_ms: report.tx_latency_ms,
            production_share: report.production_share.clone(),
            reorgs: report.reorgs,
            max_reorg_depth: report.max_reorg_depth,
            faults_injected: report.faults_injected,
        }
    }

    pub fn of_figures(figures: &RunFigures, validators: usize) -> PlottedNumbers {
        let reference = figures.heights[figures.reference].last().expect("every core starts with a point");
        let mut blocks_by_rank = BTreeMap::new();
        for block in &figures.blocks {
            *blocks_by_rank.entry(block.rank).or_default() += 1;
        }
        let blocks_by_producer = blocks_by_producer(figures, validators);
        let total: u64 = blocks_by_producer.iter().sum();
        PlottedNumbers {
            height: reference.tip,
            final_height: reference.final_height,
            blocks_by_rank,
            interval_ms: percentiles(figures.blocks.iter().map(|block| block.interval_ms).collect()),
            finality_lag_ms: percentiles(figures.finality.iter().map(|point| point.lag_ms).collect()),
            tx_latency_ms: percentiles(figures.tx_latency_ms.clone()),
            production_share: blocks_by_producer
                .iter()
                .map(|count| (u128::from(*count) * 1_000).checked_div(u128::from(total)).unwrap_or(0) as u64)
                .collect(),
            reorgs: figures.reorgs.len() as u64,
            max_reorg_depth: figures.reorgs.iter().map(|reorg| reorg.depth).max().unwrap_or(0),
            faults_injected: figures.faults.len() as u64,
        }
    }
}

fn blocks_by_producer(figures: &RunFigures, validators: usize) -> Vec<u64> {
    let mut counts = vec![0u64; validators];
    for block in &figures.blocks {
        counts[block.producer] += 1;
    }
    counts
}

/// Text for HTML: `&`, `<`, `>` and quotes escaped.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// JSON inside `<script type="application/json">`: `</` would end the element, so it is
/// written `<\/` (the same string to a JSON reader).
fn data_script<T: Serialize>(data: &T) -> String {
    let json = serde_json::to_string(data).expect("report data serializes").replace("</", "<\\/");
    format!("<script type=\"application/json\" id=\"report-data\">{json}</script>\n")
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1000px; padding: 16px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin: 1.6em 0 0.3em; border-bottom: 1px solid #ddd; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 4px; font-weight: bold; color: white; }
.pass { background: #2a7d2a; } .fail { background: #b22222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
tr.failed td { background: #fde8e8; }
code { font-family: ui-monospace, monospace; font-size: 0.92em; }
td.replay code { white-space: nowrap; }
.scroll { overflow-x: auto; }
figure { margin: 0.4em 0; }
figure svg { max-width: 100%; height: auto; }
figcaption, p.note { font-size: 0.9em; color: #444; max-width: 60em; }
";

fn page(title: &str, body: &str, data: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}{data}</body>\n</html>\n",
        escape(title)
    )
}

fn verdict_badge(passed: bool) -> &'static str {
    if passed {
        "<span class=\"verdict pass\">PASS</span>"
    } else {
        "<span class=\"verdict fail\">FAIL</span>"
    }
}

fn figure(id: &str, title: &str, svg: &str, caption: &str) -> String {
    format!("<section id=\"{id}\">\n<h2>{}</h2>\n<figure>\n{svg}\n<figcaption>{caption}</figcaption>\n</figure>\n</section>\n", escape(title))
}

fn duration_text(ms: u64) -> String {
    if ms >= 10_000 {
        format!("{:.1} s", seconds(ms))
    } else {
        format!("{ms} ms")
    }
}

/// The run report. `expectations`: a scenario's judged expectations (empty for a plain run).
///
/// Panics if the figures do not give the report's own numbers (`PlottedNumbers`): the report
/// would then show something `--json` does not say.
pub fn run_html(report: &SimReport, figures: &RunFigures, expectations: &[Verdict]) -> Result<String, ReportError> {
    let plotted = PlottedNumbers::of_figures(figures, report.nodes);
    assert_eq!(plotted, PlottedNumbers::of_report(report), "the report's figures must give the numbers --json gives");
    let blocks_by_producer = blocks_by_producer(figures, report.nodes);
    let latency = report.tx_latency_ms;
    let mut body = String::new();
    let title = format!("tinychain sim: seed {}, {} nodes", report.seed, report.nodes);
    let _ = write!(
        body,
        "<header>\n<h1>Simulation report {}</h1>\n<table class=\"facts\">\n",
        verdict_badge(report.passed())
    );
    let liveness = match (report.liveness_ok, report.beyond_fault_tolerance) {
        (true, _) => "ok".to_string(),
        (false, true) => "lost (not required past a third dishonest)".to_string(),
        (false, false) => "FAILED".to_string(),
    };
    let dishonest = if report.byzantine.is_empty() {
        "none".to_string()
    } else {
        report.behaviours.iter().map(|(validator, what)| format!("n{validator}: {what}")).collect::<Vec<_>>().join("; ")
    };
    let rows: Vec<(&str, String)> = vec![
        ("replay", format!("<code>{}</code>", escape(&report.replay))),
        (
            "run",
            format!("seed {}, {} validators, {} virtual", report.seed, report.nodes, duration_text(report.virtual_ms)),
        ),
        (
            "chain",
            format!(
                "height {}, final {}, blocks by rank {:?}",
                report.height, report.final_height, report.blocks_by_rank
            ),
        ),
        (
            "block interval",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms",
                report.interval_ms.p50, report.interval_ms.p99, report.interval_ms.max
            ),
        ),
        (
            "finality lag",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms; longest gap before a final block {} ms",
                report.finality_lag_ms.p50,
                report.finality_lag_ms.p99,
                report.finality_lag_ms.max,
                report.max_final_gap_ms
            ),
        ),
        (
            "transfers",
            format!(
                "{} submitted, {} committed, latency p50 {} ms, p99 {} ms, max {} ms; {} acknowledged, {} lost",
                report.txs_submitted,
                report.txs_committed,
                latency.p50,
                latency.p99,
                latency.max,
                report.txs_acknowledged,
                report.txs_lost
            ),
        ),
        (
            "faults",
            format!(
                "{} injected, {} timeouts fired, {} reorgs (deepest {})",
                report.faults_injected, report.timeouts_fired, report.reorgs, report.max_reorg_depth
            ),
        ),
        ("dishonest", escape(&dishonest)),
        ("safety", format!("{} violations", report.safety_violations)),
        ("liveness", escape(&format!("{liveness}: {}", report.liveness))),
        ("trace hash", format!("<code>{}</code>", report.trace_hash)),
    ];
    for (name, value) in rows {
        let _ = writeln!(body, "<tr><th>{name}</th><td>{value}</td></tr>");
    }
    body.push_str("</table>\n");
    if !report.violations.is_empty() {
        body.push_str("<h2>Violations</h2>\n<ul>\n");
        for violation in &report.violations {
            let _ = writeln!(body, "<li><code>{}</code></li>", escape(violation));
        }
        body.push_str("</ul>\n");
    }
    if !expectations.is_empty() {
        body.push_str(
            "<h2>Scenario expectations</h2>\n<table>\n<tr><th></th><th>expectation</th><th>observed</th></tr>\n",
        );
        for verdict in expectations {
            let _ = writeln!(
                body,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                if verdict.ok { "ok" } else { "failed" },
                if verdict.ok { "ok" } else { "FAIL" },
                escape(&verdict.expectation),
                escape(&verdict.observed)
            );
        }
        body.push_str("</table>\n");
    }
    body.push_str("</header>\n");
    body.push_str(&figure(
        "faults",
        "Faults",
        &faults_svg(figures)?,
        "One row per fault: a crashed or paused validator, a partition (its group in the band), message loss, \
         duplication or reordering, a skewed clock, misbehaving metrics; a sliver for an out-of-range report. Each \
         band runs from the fault's injection to what ended it. The dashed line is <code>heal-all</code>: every \
         fault ends there and the liveness phase begins. The same bands are shaded behind the plots below.",
    ));
    body.push_str(&figure(
        "block-interval",
        "Block interval",
        &intervals_svg(figures)?,
        &format!(
            "Each dot is a block of the reference chain: its timestamp, and the time since its parent's. The dashed \
             line is the target interval ({} ms); a red dot is a block produced at rank 1 or later, after a producer \
             timeout ({} ms each). Percentiles: p50 {} ms, p99 {} ms, max {} ms.",
            figures.block_interval_ms,
            figures.producer_timeout_ms,
            report.interval_ms.p50,
            report.interval_ms.p99,
            report.interval_ms.max
        ),
    ));
    let mut cores_note = String::new();
    if figures.cores.len() > LEGEND_CORES_MAX {
        cores_note.push_str(" With this many nodes there is no legend: the colours repeat every ten nodes.");
    }
    if figures.cores.len() > CORES_DRAWN_MAX {
        let _ = write!(
            cores_note,
            " Only the first {CORES_DRAWN_MAX} of {} cores are drawn; the data holds all.",
            figures.cores.len()
        );
    }
    body.push_str(&figure(
        "heights",
        "Heights",
        &heights_svg(figures)?,
        &format!(
            "Solid: each node's tip height; dashed: its final height, in the node's colour. A line stops while the \
             node is crashed. Nodes cut off by a partition stall or fork (a drop is a reorg); the distance between a \
             solid and its dashed line is how far finality trails the tip.{cores_note} Final: tip {}, final {}.",
            report.height, report.final_height
        ),
    ));
    body.push_str(&figure(
        "finality-lag",
        "Finality lag",
        &finality_svg(figures)?,
        &format!(
            "Each dot is a height the reference node saw final: when, and how long after the block's timestamp. \
             Gaps with no dot are times finality stalled. Percentiles: p50 {} ms, p99 {} ms, max {} ms.",
            report.finality_lag_ms.p50, report.finality_lag_ms.p99, report.finality_lag_ms.max
        ),
    ));
    body.push_str(&figure(
        "production-share",
        "Production share",
        &production_svg(report, &blocks_by_producer)?,
        "Blocks of the reference chain produced by each validator, per-mille (blocks in brackets); red bars are \
         dishonest validators. The election favours the least loaded validators, so the shares are uneven by design; \
         the production-share cap bounds any one validator's share over its window.",
    ));
    let latency_caption = if figures.tx_latency_ms.is_empty() {
        "No transfer was committed: run with <code>--tx-rate N</code> to submit transfers.".to_string()
    } else {
        format!(
            "For each transfer committed on the reference chain: from its submission to the first commit on any \
             honest node ({} transfers). The red lines are the percentiles.",
            figures.tx_latency_ms.len()
        )
    };
    body.push_str(&figure(
        "transfer-latency",
        "Transfer latency",
        &histogram_svg(
            "transfer latency",
            "Transfer latency, submitted to committed",
            "latency (ms)",
            &figures.tx_latency_ms,
            &[("p50", latency.p50), ("p99", latency.p99)],
        )?,
        &latency_caption,
    ));
    let data = serde_json::json!({
        "kind": "run",
        "report": report,
        "plotted": plotted,
        "figures": figures,
        "latency_buckets": buckets(&figures.tx_latency_ms),
    });
    Ok(page(&title, &body, &data_script(&data)))
}

/// The sweep report: one row per seed (pass or fail, the command that replays it) and the
/// distributions of max gap, recovery time and reorg depth across seeds. `command`: the sweep's
/// own command line, shown at the top.
pub fn sweep_html(reports: &[SimReport], command: &str) -> Result<String, ReportError> {
    let failing: Vec<u64> = reports.iter().filter(|report| !report.passed()).map(|report| report.seed).collect();
    let gaps: Vec<u64> = reports.iter().map(|report| report.max_final_gap_ms).collect();
    let recoveries: Vec<u64> = reports.iter().filter_map(|report| report.finality_resumed_after_heal_ms).collect();
    let depths: Vec<u64> = reports.iter().map(|report| report.max_reorg_depth).collect();
    let mut body = String::new();
    let _ = write!(
        body,
        "<header>\n<h1>Simulation sweep {}</h1>\n<table class=\"facts\">\n<tr><th>command</th><td><code>{}</code></td></tr>\n<tr><th>seeds</th><td>{} run, {} passed; failing: {}</td></tr>\n</table>\n</header>\n",
        verdict_badge(failing.is_empty()),
        escape(command),
        reports.len(),
        reports.len() - failing.len(),
        if failing.is_empty() { "none".to_string() } else { format!("{failing:?}") }
    );
    body.push_str(
        "<section id=\"seeds\">\n<h2>Seeds</h2>\n<div class=\"scroll\">\n<table id=\"seed-table\">\n<tr><th>seed</th><th>verdict</th><th>height</th><th>final</th>\
         <th>reorgs (deepest)</th><th>max gap (ms)</th><th>recovery (ms)</th><th>violations</th><th>replay</th></tr>\n",
    );
    for report in reports {
        let passed = report.passed();
        let _ = writeln!(
            body,
            "<tr class=\"{}\" data-seed=\"{}\" data-passed=\"{passed}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td class=\"replay\"><code>{}</code></td></tr>",
            if passed { "passed" } else { "failed" },
            report.seed,
            report.seed,
            if passed { "pass" } else { "FAIL" },
            report.height,
            report.final_height,
            report.reorgs,
            report.max_reorg_depth,
            report.max_final_gap_ms,
            report.finality_resumed_after_heal_ms.map_or("none".to_string(), |ms| ms.to_string()),
            report.safety_violations,
            escape(&report.replay)
        );
    }
    body.push_str("</table>\n</div>\n</section>\n");
    let no_recovery = reports.len() - recoveries.len();
    body.push_str(&figure(
        "max-gap",
        "Max gap before a final block",
        &histogram_svg("max gap", "Max gap before a final block, per seed", "gap (ms)", &gaps, &[])?,
        "Per seed, the longest time between the timestamps of two consecutive final blocks of the reference chain \
         (<code>max_final_gap_ms</code>). Crashes of the next producer cost a producer timeout each; partitions \
         and pauses can cost more.",
    ));
    body.push_str(&figure(
        "recovery",
        "Recovery time after the heal",
        &histogram_svg("recovery", "Finality resumed after heal-all, per seed", "recovery (ms)", &recoveries, &[])?,
        &format!(
            "Per seed, the time from <code>heal-all</code> until every honest node's final block passed the height it \
             had at the heal (<code>finality_resumed_after_heal_ms</code>); the liveness rule bounds it. Seeds with \
             no heal or no recovery: {no_recovery}."
        ),
    ));
    body.push_str(&figure(
        "reorg-depth",
        "Deepest reorg",
        &histogram_svg("reorg depth", "Deepest reorg, per seed", "blocks rolled back", &depths, &[])?,
        "Per seed, the most blocks any node rolled back in one reorganisation (<code>max_reorg_depth</code>); 0 when \
         no node reorganised.",
    ));
    let data = serde_json::json!({
        "kind": "sweep",
        "command": command,
        "failing_seeds": failing,
        "reports": reports,
        "buckets": {
            "max_final_gap_ms": buckets(&gaps),
            "finality_resumed_after_heal_ms": buckets(&recoveries),
            "max_reorg_depth": buckets(&depths),
        },
    });
    Ok(page(&format!("tinychain sim sweep: {} seeds", reports.len()), &body, &data_script(&data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_have_a_round_width_and_hold_every_value() {
        assert_eq!(buckets(&[]), Vec::new());
        assert_eq!(buckets(&[3, 3]), vec![Bucket { from: 3, to: 4, count: 2 }]);
        assert_eq!(
            buckets(&[0, 1, 4]),
            vec![
                Bucket { from: 0, to: 1, count: 1 },
                Bucket { from: 1, to: 2, count: 1 },
                Bucket { from: 2, to: 3, count: 0 },
                Bucket { from: 3, to: 4, count: 0 },
                Bucket { from: 4, to: 5, count: 1 },
            ]
        );
        let values: Vec<u64> = (2_000..=8_276).step_by(7).collect();
        let found = buckets(&values);
        assert!(found.iter().all(|bucket| bucket.to - bucket.from == 500), "{found:?}");
        assert_eq!(found.first().map(|bucket| bucket.from), Some(2_000));
        assert_eq!(found.iter().map(|bucket| bucket.count).sum::<u64>(), values.len() as u64);
        assert_eq!(nice_width(3), 5);
        assert_eq!(nice_width(11), 20);
    }

    #[test]
    fn escaping_keeps_markup_and_the_data_block_closed() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        let script = data_script(&serde_json::json!({ "text": "</script><b>" }));
        assert_eq!(script.matches("</script>").count(), 1);
        let json = script
            .trim_start_matches("<script type=\"application/json\" id=\"report-data\">")
            .trim_end_matches("</script>\n");
        let parsed: serde_json::Value = serde_json::from_str(json).expect("still JSON");
        assert_eq!(parsed["text"], "</script><b>");
    }
}
