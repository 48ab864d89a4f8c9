use crate::support::*;

#[test]
fn example_passes() {
    let repo = example_repo();
    let out = run(repo.path(), &["check"]);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "berth.toml: ok (2 products, 4 services, 11 tracked files scanned for secrets; 0 warnings)\n"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn example_passes_from_a_subdirectory() {
    let repo = example_repo();
    let out = run(&repo.path().join("apps/server"), &["check"]);
    out.assert_code(0);
    assert!(out.stdout.contains("ok (2 products"), "{}", out.snapshot());
}

/// Each broken manifest names its expected diagnostics on its first line:
/// `# expect: <code> <line>:<col>, ...`. The full output is snapshotted too.
#[test]
fn broken_manifests_fail_with_located_messages() {
    let dir = fixtures().join("broken");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 25,
        "the corpus has {} manifests, want at least 25",
        names.len()
    );
    let tmp = temp_dir();
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: ...`"));
        std::fs::write(tmp.path().join(name), &text).unwrap();
        let out = run(
            tmp.path(),
            &["check", "--no-secret-scan", "--manifest", name],
        );
        out.assert_code(2);
        let errors: Vec<String> = out
            .stderr
            .lines()
            .collect::<Vec<_>>()
            .windows(2)
            .filter_map(|w| {
                let code = w[0].strip_prefix("error[")?.split(']').next()?;
                let loc = w[1]
                    .trim()
                    .strip_prefix("--> ")?
                    .rsplitn(3, ':')
                    .collect::<Vec<_>>();
                Some(format!("{code} {}:{}", loc[1], loc[0]))
            })
            .collect();
        assert_eq!(errors.join(", "), expect, "{name}\n{}", out.snapshot());
        assert!(
            !out.stderr.contains("leakcheck") && !out.stdout.contains("leakcheck"),
            "{name}: a secret value is shown\n{}",
            out.snapshot()
        );
        insta::assert_snapshot!(name.trim_end_matches(".toml"), out.snapshot());
    }
}

#[test]
fn json_diagnostics_are_machine_readable() {
    let tmp = temp_dir();
    let src = fixtures().join("broken/35-many-problems-at-once.toml");
    std::fs::copy(&src, tmp.path().join("berth.toml")).unwrap();
    let out = run(
        tmp.path(),
        &["check", "--no-secret-scan", "--format", "json"],
    );
    out.assert_code(2);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"], 6);
    let d = &v["diagnostics"][5];
    assert_eq!(d["code"], "port-collision");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["primary"]["file"], "berth.toml");
    assert_eq!(d["primary"]["line"], 32);
    assert_eq!(d["primary"]["column"], 13);
    assert_eq!(d["related"][0]["line"], 21);
    assert_eq!(out.stderr, "", "JSON mode writes nothing else");
}

#[test]
fn json_on_success() {
    let repo = example_repo();
    let out = run(repo.path(), &["check", "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["products"], serde_json::json!(["bestays", "realestate"]));
    assert_eq!(v["scanned_files"], 11);
}

#[test]
fn tracked_files_owned_by_two_products_are_errors() {
    let repo = example_repo();
    // `products/*/settings.yaml` claims a file `products/bestays/**` already owns.
    let manifest = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
    let manifest = manifest.replace(
        "paths = [\"products/realestate/**\"]",
        "paths = [\"products/realestate/**\", \"products/*/settings.yaml\"]",
    );
    repo.write("berth.toml", &manifest);
    let out = run(repo.path(), &["check"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains(
            "error[path-overlap]: tracked file `products/bestays/settings.yaml` is owned by both `bestays` (`products/bestays/**`) and `realestate` (`products/*/settings.yaml`)"
        ),
        "{}",
        out.snapshot()
    );
}

#[test]
fn missing_manifest_is_a_usage_error() {
    let tmp = temp_dir();
    let out = run(tmp.path(), &["check"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("no berth.toml in"),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stderr.contains("berth init --from"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn outside_git_the_scan_is_reported_not_silently_skipped() {
    let tmp = temp_dir();
    copy_dir(&example_dir(), tmp.path());
    let out = run(tmp.path(), &["check"]);
    out.assert_code(0);
    assert!(out.stderr.contains("warning[no-git]"), "{}", out.snapshot());
    assert!(out.stdout.contains("1 warning"), "{}", out.snapshot());
}

#[test]
fn every_malformed_input_is_an_error_never_a_panic() {
    // Truncations of a valid manifest at every line: each either passes or fails with exit 2.
    let text = std::fs::read_to_string(example_dir().join("berth.toml")).unwrap();
    let tmp = temp_dir();
    let lines: Vec<&str> = text.lines().collect();
    for n in (0..lines.len()).step_by(3) {
        let mut cut = lines[..n].join("\n");
        cut.push_str("\n[products.x.services.y]\nport = \"");
        std::fs::write(tmp.path().join("berth.toml"), &cut).unwrap();
        let out = run(tmp.path(), &["check", "--no-secret-scan"]);
        assert_eq!(out.code, 2, "truncated at line {n}\n{}", out.snapshot());
        assert!(!out.stderr.contains("panicked"), "{}", out.snapshot());
    }
}

/// The injection allow-lists guard every command that loads berth.toml, not
/// only `berth check`: each refuses the manifest with the located errors, exit 2.
#[test]
fn hostile_values_stop_every_command_that_loads_the_manifest() {
    let tmp = temp_dir();
    std::fs::copy(
        fixtures().join("broken/42-nginx-injection.toml"),
        tmp.path().join("berth.toml"),
    )
    .unwrap();
    for args in [
        &["render", "--env", "dev"][..],
        &["status"],
        &["product", "list"],
        &["deploy", "bestays", "--dry-run"],
        &["provision", "--all"],
    ] {
        let out = run(tmp.path(), args);
        out.assert_code(2);
        for code in ["error[display-name]", "error[route-invalid]"] {
            assert!(out.stderr.contains(code), "{args:?}\n{}", out.snapshot());
        }
        assert!(
            out.stderr.contains("berth.toml:6:16"),
            "{args:?}\n{}",
            out.snapshot()
        );
    }
    assert!(!tmp.path().join("deploy").exists(), "nothing was rendered");
}

#[test]
fn a_berth_toml_that_is_not_a_readable_file_is_named_for_what_it_is() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    type Make<'a> = &'a dyn Fn(&std::path::Path);
    let cases: [(&str, Make, &str); 4] = [
        (
            "directory",
            &|d| std::fs::create_dir(d.join("berth.toml")).unwrap(),
            "berth.toml is a directory, not a file",
        ),
        (
            "loop",
            &|d| symlink("berth.toml", d.join("berth.toml")).unwrap(),
            "berth.toml is a symlink loop",
        ),
        (
            "dangling",
            &|d| symlink("gone.toml", d.join("berth.toml")).unwrap(),
            "berth.toml is a dangling symlink to gone.toml",
        ),
        (
            "unreadable",
            &|d| {
                let p = d.join("berth.toml");
                std::fs::write(&p, "[project]\n").unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
            },
            "berth.toml cannot be read: permission denied",
        ),
    ];
    for (name, make, want) in cases {
        let dir = temp_dir();
        let sub = dir.path().join("apps");
        std::fs::create_dir(&sub).unwrap();
        make(dir.path());
        if name == "unreadable" && std::fs::read(dir.path().join("berth.toml")).is_ok() {
            // Root reads any file: nothing to prove here.
            continue;
        }
        // Found walking up from a subdirectory, and named with --manifest.
        for (cwd, args) in [
            (sub.as_path(), vec!["check"]),
            (dir.path(), vec!["--manifest", "berth.toml", "check"]),
        ] {
            let out = run(cwd, &args);
            out.assert_code(2);
            assert!(
                out.stderr.contains(want) && !out.stderr.contains("no berth.toml in"),
                "{name}: {}",
                out.snapshot()
            );
        }
    }
}
