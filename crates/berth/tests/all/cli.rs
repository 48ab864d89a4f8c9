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

#[test]
fn every_subcommand_has_help() {
    let tmp = temp_dir();
    for sub in [
        &["init"][..],
        &["product", "add"],
        &["product", "list"],
        &["schema"],
        &["completions"],
        &["demo"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = run(tmp.path(), &args);
        out.assert_code(0);
        assert!(
            out.stdout.contains("Usage: berth"),
            "{sub:?}\n{}",
            out.snapshot()
        );
    }
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
