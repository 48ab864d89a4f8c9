//! berth.toml: the model, loading with source spans, validation and the
//! manifest-editing commands (`init`, `product add`).

pub mod diag;
pub mod duration;
pub mod init;
pub mod limits;
pub mod load;
pub mod model;
pub mod product_add;
pub mod secrets;
pub mod source;
pub mod validate;

pub use diag::{Diagnostic, Label, Severity};
pub use limits::{
    CpuPriority, DbLimits, EffectiveLimits, Limits, effective_db_limits, effective_limits,
};
pub use load::{LoadError, Loaded, check_str, load_path, parse_str};
pub use model::*;

/// The JSON schema of berth.toml, pretty-printed with a trailing newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Manifest);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serializes");
    s.push('\n');
    s
}

/// A lowercase slug of `s` (`Best Stays` -> `best-stays`), as product, image and project names need.
pub fn slug(s: &str) -> String {
    validate::slugify(s)
}

/// The glob berth matches for a path pattern of berth.toml: a plain path
/// (`products/a`, `products/a/`) means that file or everything under that
/// directory; anything with `*`, `?`, `[` or `{` is a glob as written.
pub fn glob_source(pattern: &str) -> String {
    if pattern.contains(['*', '?', '[', '{']) {
        return pattern.to_string();
    }
    let p = pattern.trim_end_matches('/');
    format!("{{{p},{p}/**}}")
}

/// `HH:MM` (a daily UTC time, as `[backup] schedule` takes) as (hour, minute).
pub fn parse_daily_time(s: &str) -> Option<(u8, u8)> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}
