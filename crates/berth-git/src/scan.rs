//! The secret scan of `berth check`: every file git tracks, line by line.

use std::path::Path;

use berth_manifest::diag::{Diagnostic, Label};
use berth_manifest::secrets::{self, FileKind};

/// Files larger than this are not scanned (generated bundles, data).
const MAX_SCAN_BYTES: u64 = 2 * 1024 * 1024;

/// Lock files hold hashes, not secrets.
const SKIP_NAMES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "poetry.lock",
    "uv.lock",
];

/// Scan `files` (relative to `root`) for committed secrets, skipping `exclude` globs.
/// Each finding names file:line:column and shows the line with the secret masked.
pub fn scan_files(root: &Path, files: &[String], exclude: &[String]) -> Vec<Diagnostic> {
    let mut set = globset::GlobSetBuilder::new();
    for pat in exclude {
        if let Ok(g) = globset::GlobBuilder::new(pat)
            .literal_separator(true)
            .build()
        {
            set.add(g);
        }
    }
    let excluded = set.build().unwrap_or_else(|_| globset::GlobSet::empty());
    let mut out = Vec::new();
    for rel in files {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if excluded.is_match(rel) || SKIP_NAMES.contains(&name) {
            continue;
        }
        let path = root.join(rel);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() <= MAX_SCAN_BYTES => {}
            _ => continue,
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.iter().take(8192).any(|b| *b == 0) {
            continue; // binary
        }
        let text = String::from_utf8_lossy(&bytes);
        out.extend(scan_text(rel, &text));
    }
    out
}

/// Scan one file's text.
pub fn scan_text(file: &str, text: &str) -> Vec<Diagnostic> {
    let kind = FileKind::for_path(file);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for hit in secrets::scan_line(line, kind) {
            let value = &line[hit.span.clone()];
            let masked = secrets::mask(value);
            let shown = format!(
                "{}{}{}",
                &line[..hit.span.start],
                masked,
                &line[hit.span.end..]
            );
            let column = line[..hit.span.start].chars().count() + 1;
            let what = match &hit.name {
                Some(n) => format!("`{n}` is assigned a secret value"),
                None => format!("{} is committed", hit.kind.describe()),
            };
            let d = Diagnostic::error("committed-secret", format!("{what}: {masked}"))
                .at(Label {
                    file: file.to_string(),
                    line: i + 1,
                    column,
                    width: masked.chars().count(),
                    message: "secret (masked)".into(),
                    line_text: Some(shown),
                })
                .help("remove the file from git (`git rm --cached`), rotate the secret (it stays in history), and list its name under `secrets = [...]` so berth reads it from the product's untracked secret file; a line that is a deliberate fake can carry `berth:allow-secret`");
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_line_never_shows_the_value() {
        let d = scan_text(".env", "A=1\nCLERK_SECRET_KEY=sk_live_abcdef123456\n");
        assert_eq!(d.len(), 1);
        let l = d[0].primary.as_ref().unwrap();
        assert_eq!((l.line, l.column), (2, 18));
        assert_eq!(
            l.line_text.as_deref(),
            Some("CLERK_SECRET_KEY=sk_live_****(20 chars)")
        );
        assert!(!d[0].message.contains("abcdef"));
    }
}
