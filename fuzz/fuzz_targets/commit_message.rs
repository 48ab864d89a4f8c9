//! Any commit message (and branch name) goes through parsing, attribution and
//! lint without a panic.
#![no_main]

use std::sync::LazyLock;

use berth_git::attribution::{Attributor, Commit};
use berth_manifest::Manifest;
use libfuzzer_sys::fuzz_target;

static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| {
    toml::from_str(
        r#"
[project]
name = "fuzz"
[shared.server]
paths = ["apps/server/**"]
[products.bestays]
paths = ["products/bestays/**"]
aliases = ["bestays", "bs"]
depends_on_shared = ["server"]
[products.realestate]
paths = ["products/realestate/**"]
aliases = ["realestate", "real-estate"]
depends_on_shared = ["server"]
"#,
    )
    .expect("fuzz manifest parses")
});

thread_local! {
    static ATTRIBUTOR: Attributor<'static> = Attributor::new(&MANIFEST).expect("valid conventions");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    ATTRIBUTOR.with(|a| run(a, text));
});

fn run(a: &Attributor<'static>, text: &str) {
    // Split the input: the message, then (after a NUL) changed paths.
    let (message, files) = text.split_once('\0').unwrap_or((text, ""));
    let commit = Commit {
        id: "0123456789abcdef".into(),
        parents: vec!["p".into()],
        message: message.to_string(),
        files: files.split('\n').filter(|f| !f.is_empty()).map(str::to_string).collect(),
        ..Commit::default()
    };
    let _ = berth_git::lint::lint_commit(a, &commit, true, false);
    let _ = berth_git::lint::lint_branch(a, message.lines().next().unwrap_or(""));
    let _ = berth_git::history::parse_log(text);
    let _ = berth_git::hooks::pre_push_ranges(text, &|s| s.len() % 2 == 0);
}
