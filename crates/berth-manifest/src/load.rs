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
