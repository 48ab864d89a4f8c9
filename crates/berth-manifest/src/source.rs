//! The text of berth.toml kept beside the model, so any value can be traced
//! back to its line and column.

use std::ops::Range;

use toml_edit::{Document, Item, Value};

use crate::diag::{Label, label_for};

/// berth.toml as read from disk: its display name, its text and a span-preserving parse.
#[derive(Debug, Clone)]
pub struct ManifestSource {
    pub file: String,
    pub text: String,
    doc: Document<String>,
}

enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
}

impl ManifestSource {
    /// Parse for spans only. Syntax errors are reported by `load`.
    pub fn parse(file: &str, text: &str) -> Result<Self, toml_edit::TomlError> {
        let doc = Document::parse(text.to_string())?;
        Ok(Self {
            file: file.to_string(),
            text: text.to_string(),
            doc,
        })
    }

    fn node(&self, path: &[&str]) -> Option<(Node<'_>, Option<Range<usize>>)> {
        let mut cur = Node::Item(self.doc.as_item());
        let mut key_span = None;
        for seg in path {
            let next = match cur {
                Node::Item(Item::Table(t)) => t.get_key_value(seg).map(|(k, v)| {
                    key_span = k.span();
                    Node::Item(v)
                }),
                Node::Item(Item::Value(v)) | Node::Value(v) => match v {
                    Value::InlineTable(t) => t.get_key_value(seg).map(|(k, v)| {
                        key_span = k.span();
                        Node::Item(v)
                    }),
                    Value::Array(a) => {
                        let i: usize = seg.parse().ok()?;
                        a.get(i).map(|v| {
                            key_span = v.span();
                            Node::Value(v)
                        })
                    }
                    _ => None,
                },
                // berth.toml has no arrays of tables; nothing to locate inside one.
                Node::Item(Item::ArrayOfTables(_)) => None,
                Node::Item(Item::None) => None,
            }?;
            cur = next;
        }
        Some((cur, key_span))
    }

    /// Span of the value at `path` (falls back to its key, then to the nearest ancestor).
    pub fn value_span(&self, path: &[&str]) -> Option<Range<usize>> {
        for n in (1..=path.len()).rev() {
            if let Some((node, key)) = self.node(&path[..n]) {
                let span = match node {
                    Node::Item(Item::Value(v)) | Node::Value(v) => v.span(),
                    Node::Item(Item::Table(t)) => t.span(),
                    _ => None,
                };
                if let Some(s) = span.or(key) {
                    return Some(s);
                }
            }
        }
        None
    }

    /// Span of the key that names `path` (`bestays` in `[products.bestays]`).
    pub fn key_span(&self, path: &[&str]) -> Option<Range<usize>> {
        self.node(path)
            .and_then(|(_, k)| k)
            .or_else(|| self.value_span(path))
    }

    /// A label on the value at `path`.
    pub fn label(&self, path: &[&str], message: impl Into<String>) -> Label {
        self.label_span(self.value_span(path), message)
    }

    /// A label on the key that names `path`.
    pub fn key_label(&self, path: &[&str], message: impl Into<String>) -> Label {
        self.label_span(self.key_span(path), message)
    }

    pub fn label_span(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Label {
        label_for(&self.file, &self.text, span.unwrap_or(0..0), message)
    }

    /// Every string value in the document with its key path and span, in file order.
    pub fn strings(&self) -> Vec<(Vec<String>, String, Range<usize>)> {
        let mut out = Vec::new();
        walk_item(self.doc.as_item(), &mut Vec::new(), &mut out);
        out.sort_by_key(|(_, _, s)| s.start);
        out
    }
}

fn walk_item(
    item: &Item,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, String, Range<usize>)>,
) {
    match item {
        Item::Table(t) => {
            for (k, v) in t.iter() {
                path.push(k.to_string());
                walk_item(v, path, out);
                path.pop();
            }
        }
        Item::Value(v) => walk_value(v, path, out),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                path.push(i.to_string());
                for (k, v) in t.iter() {
                    path.push(k.to_string());
                    walk_item(v, path, out);
                    path.pop();
                }
                path.pop();
            }
        }
        Item::None => {}
    }
}

fn walk_value(
    v: &Value,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, String, Range<usize>)>,
) {
    match v {
        Value::String(s) => {
            if let Some(span) = v.span() {
                out.push((path.clone(), s.value().clone(), span));
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(i.to_string());
                walk_value(x, path, out);
                path.pop();
            }
        }
        Value::InlineTable(t) => {
            for (k, x) in t.iter() {
                path.push(k.to_string());
                walk_value(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"[project]
name = "x"

[products.bestays.services.server]
host_port = 8011
env = { A = "b" }

[products.bestays]
aliases = ["best", "bs"]
"#;

    #[test]
    fn finds_values_keys_and_array_elements() {
        let s = ManifestSource::parse("berth.toml", TEXT).unwrap();
        let l = s.label(
            &["products", "bestays", "services", "server", "host_port"],
            "",
        );
        assert_eq!((l.line, l.column), (5, 13));
        let l = s.label(&["products", "bestays", "aliases", "1"], "");
        assert_eq!((l.line, l.column), (9, 20));
        let l = s.label(
            &["products", "bestays", "services", "server", "env", "A"],
            "",
        );
        assert_eq!((l.line, l.column), (6, 13));
        // The explicit `[products.bestays]` header names the product.
        let l = s.key_label(&["products", "bestays"], "");
        assert_eq!(l.line, 8);
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let s = ManifestSource::parse("berth.toml", TEXT).unwrap();
        let l = s.label(&["products", "bestays", "services", "server", "nope"], "");
        assert_eq!(l.line, 4);
    }
}
