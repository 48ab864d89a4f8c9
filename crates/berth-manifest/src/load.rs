//! Reading berth.toml: syntax and schema errors become located diagnostics.

use std::path::Path;

use crate::diag::Diagnostic;
use crate::model::Manifest;
use crate::source::ManifestSource;
use crate::validate;

/// A parsed manifest together with its source text (for locating problems).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub manifest: Manifest,
    pub source: ManifestSource,
}

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has {} problem(s)", diagnostics.iter().filter(|d| d.is_error()).count())]
    Invalid {
        path: String,
        diagnostics: Vec<Diagnostic>,
    },
}

/// Parse `text` (named `file` in messages). Only syntax and schema errors
/// (unknown keys, wrong types, missing keys) are reported here; see [`check_str`].
pub fn parse_str(file: &str, text: &str) -> Result<Loaded, Vec<Diagnostic>> {
    parse_unmasked(file, text).map_err(|mut diags| {
        // The source line of a syntax or type error may hold a secret: never show it.
        diags.iter_mut().for_each(crate::secrets::mask_diagnostic);
        diags
    })
}

fn parse_unmasked(file: &str, text: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let source = ManifestSource::parse(file, text).map_err(|e| {
        let label = crate::diag::label_for(file, text, e.span().unwrap_or(0..0), "");
        vec![
            Diagnostic::error(
                "toml-syntax",
                format!("invalid TOML: {}", e.message().trim_end()),
            )
            .at(label),
        ]
    })?;
    let manifest: Manifest = toml::from_str(text).map_err(|e| {
        let label = crate::diag::label_for(file, text, e.span().unwrap_or(0..0), "");
        let message = e.message().trim_end().to_string();
        let help = if message.starts_with("unknown field") {
            "remove the key or fix its spelling; `berth schema` lists every key berth.toml accepts"
        } else if message.starts_with("missing field") {
            "add the key; `berth schema` describes it"
        } else {
            "`berth schema` describes the type each key expects"
        };
        vec![
            Diagnostic::error("manifest-schema", message)
                .at(label)
                .help(help),
        ]
    })?;
    Ok(Loaded { manifest, source })
}

/// Parse and validate. `Ok` carries the manifest and its warnings; `Err`
/// carries every problem found (errors and warnings), sorted by location.
pub fn check_str(file: &str, text: &str) -> Result<(Loaded, Vec<Diagnostic>), Vec<Diagnostic>> {
    let loaded = parse_str(file, text)?;
    let diags = validate::validate(&loaded);
    if diags.iter().any(Diagnostic::is_error) {
        Err(diags)
    } else {
        Ok((loaded, diags))
    }
}

/// Why a manifest path that exists cannot be read as one (`None`: it is a
/// readable file, or there is nothing there): a directory, a symlink loop, a
/// dangling symlink, a special file, or unreadable (and why).
pub fn unusable_manifest(path: &Path) -> Option<String> {
    let shown = path.display();
    let link = std::fs::symlink_metadata(path).ok()?;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Some(format!("{shown} is a directory, not a file")),
        Ok(m) if !m.is_file() => Some(format!("{shown} is not a regular file")),
        Ok(_) => match std::fs::File::open(path) {
            Ok(_) => None,
            Err(e) => Some(format!("{shown} cannot be read: {}", io_reason(&e))),
        },
        Err(e) if e.raw_os_error() == Some(40) => Some(format!(
            "{shown} is a symlink loop (it resolves back to itself)"
        )),
        Err(e) if link.file_type().is_symlink() && e.kind() == std::io::ErrorKind::NotFound => {
            let target = std::fs::read_link(path)
                .map(|t| format!(" to {}", t.display()))
                .unwrap_or_default();
            Some(format!("{shown} is a dangling symlink{target}"))
        }
        Err(e) => Some(format!("{shown} cannot be read: {}", io_reason(&e))),
    }
}

/// An I/O error without its "(os error N)" tail, lower-case.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => text,
    }
}

/// Read, parse and validate the manifest at `path`.
pub fn load_path(path: &Path) -> Result<(Loaded, Vec<Diagnostic>), LoadError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: display.clone(),
        source,
    })?;
    check_str(&display, &text).map_err(|diagnostics| LoadError::Invalid {
        path: display,
        diagnostics,
    })
}
