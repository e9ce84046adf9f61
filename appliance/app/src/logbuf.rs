//! The last log lines, kept in memory for the diagnostics bundle (a `tracing` layer beside the
//! one that writes to stderr/journald). Bounded: a fixed number of lines, each cut to 1 KiB.
//!
//! What the appliance logs is chosen to hold no patient data (AE titles, addresses, counts,
//! sizes, spool ids, status codes), so the lines can leave the box in a bundle as they are.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

const MAX_LINES: usize = 2000;
const MAX_LINE: usize = 1024;

/// The ring of recent lines.
#[derive(Debug, Default)]
pub struct LogBuffer {
    lines: Mutex<VecDeque<String>>,
}

impl LogBuffer {
    /// The process-wide buffer.
    pub fn global() -> &'static LogBuffer {
        static BUF: OnceLock<LogBuffer> = OnceLock::new();
        BUF.get_or_init(LogBuffer::default)
    }

    /// Appends a line (dropping the oldest past the bound).
    pub fn push(&self, mut line: String) {
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == MAX_LINES {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// A copy of the lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// The layer that feeds [`LogBuffer::global`].
#[derive(Debug, Default)]
pub struct Layer;

struct Line(String);

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let m = event.metadata();
        let mut line = Line(format!(
            "{} {} {}:",
            medgate_contract::now_ms(),
            m.level(),
            m.target()
        ));
        event.record(&mut line);
        LogBuffer::global().push(line.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_and_lines_are_cut() {
        let b = LogBuffer::default();
        for i in 0..MAX_LINES + 10 {
            b.push(format!("line {i}"));
        }
        let lines = b.lines();
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0], "line 10");
        b.push("é".repeat(MAX_LINE));
        assert!(b.lines().last().expect("last").len() <= MAX_LINE);
    }
}
