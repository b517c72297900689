//! A collection of rendered-on-demand diagnostics from any phase.

use std::fmt;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, JSONReportHandler, Report};

use crate::source::SourceFile;

/// Diagnostics from lexing, parsing and checking, in the order found.
#[derive(Debug, Default)]
pub struct Diagnostics {
    reports: Vec<Report>,
    /// (file, byte offset) of each report, for sorting into source order.
    positions: Vec<(u32, u32)>,
}

impl Diagnostics {
    /// Adds a diagnostic whose labels point into `source`.
    pub fn push<D>(&mut self, diagnostic: D, source: &SourceFile)
    where
        D: Diagnostic + Send + Sync + 'static,
    {
        let offset = diagnostic
            .labels()
            .and_then(|mut labels| labels.next())
            .map_or(0, |label| u32::try_from(label.offset()).unwrap_or(u32::MAX));
        self.positions.push((source.order, offset));
        self.reports
            .push(Report::new(diagnostic).with_source_code(source.named_source()));
    }

    /// Puts the diagnostics in source order (file, then offset); those
    /// without a location come last. The sort is stable.
    pub fn sort(&mut self) {
        let mut pairs: Vec<((u32, u32), Report)> = self
            .positions
            .drain(..)
            .zip(self.reports.drain(..))
            .collect();
        pairs.sort_by_key(|(position, _)| *position);
        for (position, report) in pairs {
            self.positions.push(position);
            self.reports.push(report);
        }
    }

    /// Adds a diagnostic that has no location (a bad data file, say).
    pub fn push_plain<D>(&mut self, diagnostic: D)
    where
        D: Diagnostic + Send + Sync + 'static,
    {
        self.positions.push((u32::MAX, u32::MAX));
        self.reports.push(Report::new(diagnostic));
    }

    /// Moves all of `other` in.
    pub fn extend(&mut self, other: Diagnostics) {
        self.positions.extend(other.positions);
        self.reports.extend(other.reports);
    }

    /// Number of diagnostics.
    pub fn len(&self) -> usize {
        self.reports.len()
    }

    /// True when there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    /// The diagnostics' codes, in order (`writ::check::unknown_name`, ...).
    pub fn codes(&self) -> Vec<String> {
        self.reports
            .iter()
            .map(|r| r.code().map(|c| c.to_string()).unwrap_or_default())
            .collect()
    }

    /// The reports themselves.
    pub fn reports(&self) -> &[Report] {
        &self.reports
    }

    /// Renders like rustc: source excerpt, labels, code and help.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let mut out = String::new();
        for report in &self.reports {
            let _ = handler.render_report(&mut out, report.as_ref());
        }
        out
    }

    /// One JSON array of diagnostics (miette's JSON layout).
    pub fn to_json(&self) -> String {
        let handler = JSONReportHandler::new();
        let mut out = String::from("[");
        for (index, report) in self.reports.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            let _ = handler.render_report(&mut out, report.as_ref());
        }
        out.push(']');
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}
