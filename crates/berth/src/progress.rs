//! How long work looks: a spinner (with a byte count where there is one) on a
//! terminal, plain lines on stderr in CI and pipes. Everything long reports through
//! [`berth_cmd::progress::Progress`]; this is its one implementation for people.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use berth_cmd::progress::Progress;

/// What the bar shows beside the spinner.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The current step.
    Steps,
    /// Bytes done and the rate (a dump, a restore), then the current step.
    Bytes,
}

pub enum Reporter {
    Bar(indicatif::ProgressBar),
    Lines { prefix: Option<String> },
}

/// Spinners only where a person watches: stderr is a terminal and no CI variable is set.
fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

impl Reporter {
    /// A reporter whose lines are prefixed with `[prefix]` (none: the lines carry it).
    pub fn new(prefix: Option<&str>, shape: Shape) -> Self {
        if !interactive() {
            return Self::Lines {
                prefix: prefix.map(str::to_string),
            };
        }
        let template = match shape {
            Shape::Steps => "{spinner} {prefix}{msg} ({elapsed})",
            Shape::Bytes => "{spinner} {prefix}{bytes} ({bytes_per_sec}, {elapsed}) {msg}",
        };
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
        if let Some(p) = prefix {
            b.set_prefix(format!("{p}: "));
        }
        b.enable_steady_tick(Duration::from_millis(120));
        Self::Bar(b)
    }
}

impl Progress for Reporter {
    fn step(&self, what: &str) {
        match self {
            // Steps stay on the screen above the spinner; the spinner shows the current one.
            Self::Bar(b) => {
                let line = match b.prefix().as_str() {
                    "" => what.to_string(),
                    p => format!("[{}] {what}", p.trim_end_matches(": ")),
                };
                b.println(crate::output::esc(&line));
                b.set_message(crate::output::esc(what).into_owned());
            }
            Self::Lines { prefix } => {
                let mut err = std::io::stderr().lock();
                let _ = match prefix {
                    Some(p) => writeln!(err, "[{p}] {}", crate::output::esc(what)),
                    None => writeln!(err, "{}", crate::output::esc(what)),
                };
            }
        }
    }

    /// On a terminal the count moves; in CI a byte count is noise and is not printed.
    fn bytes(&self, done: u64) {
        if let Self::Bar(b) = self {
            b.set_position(done);
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Self::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}
