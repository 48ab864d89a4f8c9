use crate::support::*;

#[test]
fn top_level_help_reads_well() {
    let tmp = temp_dir();
    let out = run(tmp.path(), &["--help"]);
    out.assert_code(0);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn check_help_reads_well() {
    let tmp = temp_dir();
    let out = run(tmp.path(), &["check", "--help"]);
    out.assert_code(0);
    insta::assert_snapshot!(out.stdout);
}

/// The subcommands a `--help` page lists under "Commands:" (clap's own list, `help` aside).
fn listed_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's name is indented by two spaces; wrapped descriptions by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter(|l| l.split_whitespace().next() != Some("help"))
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap_or_default().to_string();
            // Each one says what it does on its line of the list.
            assert!(
                words.next().is_some(),
                "`{name}` has no help text in its parent's list:\n{help}"
            );
            name
        })
        .collect()
}

/// Every subcommand clap knows, at every depth, answers `--help` with its usage and has a line
/// of help text in its parent's list. The list is read from the help pages themselves, so a new
/// subcommand is covered without editing this test.
#[test]
fn every_subcommand_has_help() {
    let tmp = temp_dir();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = Vec::new();
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = run(tmp.path(), &args);
        out.assert_code(0);
        let usage = format!("Usage: berth {}", path.join(" "));
        assert!(
            out.stdout.contains(usage.trim_end()),
            "{path:?}: no `{usage}`\n{}",
            out.snapshot()
        );
        for sub in listed_subcommands(&out.stdout) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
        seen.push(path.join(" "));
    }
    // The walk really descended: top level, the 20-odd commands and the nested groups.
    for expected in [
        "",
        "deploy",
        "product add",
        "backup list",
        "lock status",
        "hooks install",
        "lint commit",
        "serve",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "`{expected}` not reached: {seen:?}"
        );
    }
    assert!(seen.len() > 30, "only {} help pages: {seen:?}", seen.len());
}

#[test]
fn usage_errors_exit_2() {
    let tmp = temp_dir();
    run(tmp.path(), &["check", "--format", "yaml"]).assert_code(2);
    run(tmp.path(), &["no-such-command"]).assert_code(2);
}

#[test]
fn completions_for_each_shell() {
    let tmp = temp_dir();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(tmp.path(), &["completions", shell]);
        out.assert_code(0);
        assert!(
            out.stdout.contains("berth") && out.stdout.contains("check"),
            "{shell}"
        );
    }
}

#[test]
fn color_is_off_with_no_color_and_on_when_forced() {
    let tmp = temp_dir();
    std::fs::copy(
        fixtures().join("broken/06-port-collision.toml"),
        tmp.path().join("berth.toml"),
    )
    .unwrap();
    let plain = run(tmp.path(), &["check", "--no-secret-scan"]);
    assert!(!plain.stderr.contains('\x1b'));
    let colored = run(
        tmp.path(),
        &["check", "--no-secret-scan", "--color", "always"],
    );
    assert!(
        colored.stderr.contains("\x1b[1;31merror[port-collision]"),
        "{}",
        colored.snapshot()
    );
}

#[test]
fn logs_go_to_stderr_when_asked() {
    let repo = example_repo();
    let out = berth(repo.path())
        .args(["check"])
        .env("BERTH_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("list the files git tracks"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("berth.toml: ok"));
}

#[test]
fn a_product_named_like_a_backup_subcommand_is_reached_after_a_double_dash() {
    let tmp = temp_dir();
    std::fs::write(
        tmp.path().join("berth.toml"),
        "[project]\nname = \"x\"\n\n[products.list]\n",
    )
    .unwrap();
    // `berth backup list` is the subcommand: it lists (nothing), it does not back up.
    let out = run(tmp.path(), &["backup", "list"]);
    out.assert_code(0);
    assert!(
        !out.all().contains("nothing to back up"),
        "{}",
        out.snapshot()
    );
    // After `--` the word is the product.
    let out = run(tmp.path(), &["backup", "--", "list"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("product `list` has no [products.list.database]"),
        "{}",
        out.snapshot()
    );
}
