//! Where output goes: results on stdout (text or JSON), diagnostics and logs on
//! stderr, colour only when asked for or on a terminal without NO_COLOR.

use std::io::{IsTerminal, Write};

use berth_manifest::diag::{self, Diagnostic, Styles};
use clap::ValueEnum;

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
            "{}: {msg}",
            self.styles.error.paint("error")
        );
    }

    pub fn warn(&self, msg: &str) {
        let _ = writeln!(
            std::io::stderr(),
            "{}: {msg}",
            self.styles.warning.paint("warning")
        );
    }

    /// A progress or status line (stderr).
    pub fn status(&self, verb: &str, msg: &str) {
        let _ = writeln!(
            std::io::stderr(),
            "{} {msg}",
            self.styles.help.paint(&format!("{verb:>12}"))
        );
    }

    /// A JSON result on stdout.
    pub fn json(&self, value: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, value);
        let _ = writeln!(out);
    }
}
