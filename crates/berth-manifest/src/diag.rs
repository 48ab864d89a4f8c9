//! Located diagnostics: what is wrong, where (file:line:column with a caret),
//! and how to fix it. Rendered as text like rustc/just, or as JSON.

use std::fmt::Write as _;
use std::ops::Range;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A place in a file, already resolved to a line and column (1-based), with the
/// text of that line to show. The line text is absent, or masked, when showing
/// it would leak a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Width of the caret in characters (at least 1).
    pub width: usize,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip)]
    pub line_text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable identifier of the rule (`port-collision`).
    pub code: &'static str,
    pub message: String,
    /// Where the problem is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<Label>,
    /// Related places (the first definition a duplicate collides with).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Label>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            message: message.into(),
            primary: None,
            related: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, message)
        }
    }

    pub fn at(mut self, label: Label) -> Self {
        self.primary = Some(label);
        self
    }

    pub fn related(mut self, label: Label) -> Self {
        self.related.push(label);
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:column` of the primary label, if any.
    pub fn location(&self) -> Option<String> {
        self.primary
            .as_ref()
            .map(|l| format!("{}:{}:{}", l.file, l.line, l.column))
    }
}

/// Resolve a byte range in `text` to a label.
pub fn label_for(file: &str, text: &str, span: Range<usize>, message: impl Into<String>) -> Label {
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let end = floor_char_boundary(text, span.end.min(text.len())).max(start);
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let line_text = text[line_start..line_end]
        .trim_end_matches('\r')
        .to_string();
    let width = text[start..end.min(line_end)].chars().count().max(1);
    Label {
        file: file.to_string(),
        line,
        column,
        width,
        message: message.into(),
        line_text: Some(line_text),
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Styles used by the text renderer; `plain()` for no colour.
#[derive(Debug, Clone, Copy, Default)]
pub struct Styles {
    pub error: anstyle_lite::Style,
    pub warning: anstyle_lite::Style,
    pub note: anstyle_lite::Style,
    pub help: anstyle_lite::Style,
    pub bold: anstyle_lite::Style,
}

/// A minimal ANSI style so this crate does not depend on a terminal library.
pub mod anstyle_lite {
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Style {
        pub code: Option<&'static str>,
    }
    impl Style {
        pub const fn new(code: &'static str) -> Self {
            Self { code: Some(code) }
        }
        pub fn paint(&self, s: &str) -> String {
            match self.code {
                Some(c) => format!("\x1b[{c}m{s}\x1b[0m"),
                None => s.to_string(),
            }
        }
    }
}

impl Styles {
    pub fn plain() -> Self {
        Self::default()
    }
    pub fn colored() -> Self {
        use anstyle_lite::Style;
        Self {
            error: Style::new("1;31"),
            warning: Style::new("1;33"),
            note: Style::new("1;34"),
            help: Style::new("1;36"),
            bold: Style::new("1"),
        }
    }
}

/// Render one diagnostic as text.
/// Text berth did not write (commit messages, branch names, paths from git, a
/// product's output, input quoted in an error), made safe for a terminal: every
/// C0 and C1 control character but newline and tab, and DEL, shown as `\x1b`
/// (`\u{9b}` above 0xff is not a control), so an ESC/OSC sequence in it cannot
/// retitle, clear or recolour the terminal it is printed to.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let control = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if control(c) {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

pub fn render(d: &Diagnostic, styles: &Styles) -> String {
    let mut out = String::new();
    let (word, style) = match d.severity {
        Severity::Error => ("error", styles.error),
        Severity::Warning => ("warning", styles.warning),
    };
    let _ = writeln!(
        out,
        "{}{}",
        style.paint(&format!("{word}[{}]", d.code)),
        styles
            .bold
            .paint(&format!(": {}", escape_controls(&d.message)))
    );
    let labels: Vec<&Label> = d.primary.iter().chain(d.related.iter()).collect();
    let gutter = labels
        .iter()
        .map(|l| l.line.to_string().len())
        .max()
        .unwrap_or(1);
    let pad = " ".repeat(gutter);
    for (i, l) in labels.iter().enumerate() {
        let arrow = if i == 0 { "-->" } else { ":::" };
        let _ = writeln!(
            out,
            "{pad}{} {}:{}:{}",
            styles.note.paint(arrow),
            escape_controls(&l.file),
            l.line,
            l.column
        );
        if let Some(text) = &l.line_text {
            let marker = if i == 0 { '^' } else { '-' };
            let mstyle = if i == 0 { style } else { styles.note };
            let _ = writeln!(out, "{pad} {}", styles.note.paint("|"));
            let _ = writeln!(
                out,
                "{} {} {}",
                styles.note.paint(&format!("{:>gutter$}", l.line)),
                styles.note.paint("|"),
                escape_controls(text)
            );
            let lead: String = text
                .chars()
                .take(l.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let carets: String = std::iter::repeat_n(marker, l.width).collect();
            let msg = if l.message.is_empty() {
                String::new()
            } else {
                format!(" {}", escape_controls(&l.message))
            };
            let _ = writeln!(
                out,
                "{pad} {} {lead}{}",
                styles.note.paint("|"),
                mstyle.paint(&format!("{carets}{msg}"))
            );
        } else if !l.message.is_empty() {
            let _ = writeln!(
                out,
                "{pad} {} {}",
                styles.note.paint("|"),
                escape_controls(&l.message)
            );
        }
    }
    if let Some(help) = &d.help {
        let _ = writeln!(out, "{pad} {} {}", styles.help.paint("= help:"), help);
    }
    out
}

/// Sort diagnostics by file, line, column (errors before warnings at the same place).
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        let key = |d: &Diagnostic| {
            d.primary
                .as_ref()
                .map(|l| (l.file.clone(), l.line, l.column))
                .unwrap_or_default()
        };
        key(a).cmp(&key(b)).then(a.severity.cmp(&b.severity))
    });
}

#[cfg(test)]
mod escape_tests {
    use super::escape_controls;

    #[test]
    fn controls_but_newline_and_tab_are_escaped() {
        assert_eq!(
            escape_controls("a\x1b]0;pwned\x07b\x1b[2J\tc\nd\u{9b}e\u{7f}é"),
            "a\\x1b]0;pwned\\x07b\\x1b[2J\tc\nd\\x9be\\x7fé"
        );
        assert!(matches!(
            escape_controls("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_resolves_line_and_column() {
        let text = "a = 1\nhost_port = 8011\n";
        let start = text.find("8011").unwrap();
        let l = label_for("berth.toml", text, start..start + 4, "here");
        assert_eq!((l.line, l.column, l.width), (2, 13, 4));
        assert_eq!(l.line_text.as_deref(), Some("host_port = 8011"));
    }

    #[test]
    fn render_points_a_caret_under_the_value() {
        let text = "x = 1\nport = 99999\n";
        let start = text.find("99999").unwrap();
        let d = Diagnostic::error("bad", "too big")
            .at(label_for("f.toml", text, start..start + 5, "here"))
            .help("smaller");
        let r = render(&d, &Styles::plain());
        assert_eq!(
            r,
            "error[bad]: too big\n --> f.toml:2:8\n  |\n2 | port = 99999\n  |        ^^^^^ here\n  = help: smaller\n"
        );
    }
}
