//! Where output goes: results on stdout (text or JSON), diagnostics and logs on
//! stderr, colour only when asked for or on a terminal without NO_COLOR.

use std::io::{IsTerminal, Write};

use berth_manifest::diag::{self, Diagnostic, Styles};
use clap::ValueEnum;

/// Text berth did not write, safe to print: control characters (ESC, OSC, BEL,
/// ...) escaped, newline and tab kept. Every place that prints commit messages,
/// branch names, paths from git, a product's output or input quoted in an error
/// goes through this (the printer's error, warning, status and diagnostics always do).
pub fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    diag::escape_controls(text)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// For machines: one JSON document on stdout.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ColorChoice {
    /// Colour on a terminal, unless NO_COLOR is set.
    #[default]
    Auto,
    /// Always colour, even when piped
    Always,
    /// Never colour
    Never,
}

impl ColorChoice {
    pub fn enabled(self) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stderr().is_terminal()
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub styles: Styles,
}

impl Printer {
    pub fn new(color: bool) -> Self {
        Self {
            styles: if color {
                Styles::colored()
            } else {
                Styles::plain()
            },
        }
    }

    /// Print diagnostics to stderr, one block each, separated by blank lines.
    pub fn diagnostics(&self, diags: &[Diagnostic]) {
        let mut err = std::io::stderr().lock();
        for d in diags {
            let _ = writeln!(err, "{}", diag::render(d, &self.styles));
        }
    }

    pub fn error(&self, msg: &str) {
        let _ = writeln!(
            std::io::stderr(),
            "{}: {}",
            self.styles.error.paint("error"),
            esc(msg)
        );
    }

    pub fn warn(&self, msg: &str) {
        let _ = writeln!(
            std::io::stderr(),
            "{}: {}",
            self.styles.warning.paint("warning"),
            esc(msg)
        );
    }

    /// A progress or status line (stderr).
    pub fn status(&self, verb: &str, msg: &str) {
        let _ = writeln!(
            std::io::stderr(),
            "{} {}",
            self.styles.help.paint(&format!("{verb:>12}")),
            esc(msg)
        );
    }

    /// A JSON result on stdout.
    pub fn json(&self, value: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, value);
        let _ = writeln!(out);
    }
}
