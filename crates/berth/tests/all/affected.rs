use serde_json::Value;

use crate::support::*;

fn affected(v: &Value) -> Vec<String> {
    v["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The rules that attributed `product` in the JSON explanation.
fn rules(v: &Value, product: &str) -> Vec<String> {
    v["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["product"] == product)
        .unwrap()["commits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["rules"].as_array().unwrap().iter().map(|r| {
                format!(
                    "{} {}",
                    r["rule"].as_str().unwrap(),
                    r["detail"].as_str().unwrap()
                )
            })
        })
        .collect()
}

fn base(repo: &GitRepo) -> String {
    repo.git(&["rev-parse", "HEAD"]).trim().to_string()
}

#[test]
fn path_only() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.write("products/bestays/listing.py", "x");
    repo.commit_all("refactor: tidy listing");
    let v = json(repo.path(), &["affected", "--explain", "--base", &b], 0);
    assert_eq!(affected(&v), ["bestays"]);
    assert_eq!(
        rules(&v, "bestays"),
        ["owned-path products/bestays/listing.py (products/bestays/**)"]
    );
}

#[test]
fn task_only() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.commit_all("feat: login (US-001 TASK-001-login-bestays)");
    let v = json(repo.path(), &["affected", "--explain", "--base", &b], 0);
    assert_eq!(affected(&v), ["bestays"]);
    assert_eq!(rules(&v, "bestays"), ["task-slug TASK-001-login-bestays"]);
}

#[test]
fn porting_task_targets_the_named_product() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.commit_all("feat: port login (TASK-050-port-login-realestate)");
    let v = json(repo.path(), &["affected", "--explain", "--base", &b], 0);
    assert_eq!(affected(&v), ["realestate"]);
}

#[test]
fn trailer_only() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.commit_all("chore: bump settings\n\nProduct: realestate");
    let v = json(repo.path(), &["affected", "--explain", "--base", &b], 0);
    assert_eq!(affected(&v), ["realestate"]);
    assert_eq!(rules(&v, "realestate"), ["trailer Product: realestate"]);
}

#[test]
fn shared_paths_affect_every_dependent() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.write("apps/server/main.py", "x");
    repo.commit_all("fix: server (TASK-002-server-bestays)");
    let v = json(repo.path(), &["affected", "--explain", "--base", &b], 0);
    assert_eq!(affected(&v), ["bestays", "realestate"]);
    assert_eq!(
        rules(&v, "realestate"),
        ["shared-path apps/server/main.py (shared.server: apps/server/**)"]
    );
}

#[test]
fn rename_across_product_dirs_counts_both_sides() {
    let repo = attribution_repo();
    repo.write(
        "products/bestays/search.py",
        "def search():\n    return 1\n",
    );
    repo.commit_all("feat: search (TASK-003-search-bestays)");
    let b = base(&repo);
    std::fs::create_dir_all(repo.path().join("products/realestate")).unwrap();
    repo.git(&[
        "mv",
        "products/bestays/search.py",
        "products/realestate/search.py",
    ]);
    repo.commit_all("refactor: move search (TASK-004-search-realestate)\n\nProduct: realestate");
    let v = json(repo.path(), &["affected", "--explain", "--base", &b], 0);
    assert_eq!(affected(&v), ["bestays", "realestate"]);
    assert!(
        rules(&v, "bestays")
            .contains(&"owned-path products/bestays/search.py (products/bestays/**)".to_string())
    );
}

#[test]
fn deleted_files_count() {
    let repo = attribution_repo();
    repo.write("products/realestate/old.py", "x");
    repo.commit_all("feat: old (TASK-005-old-realestate)");
    let b = base(&repo);
    repo.git(&["rm", "-q", "products/realestate/old.py"]);
    repo.commit_all("chore: drop old code (TASK-006-cleanup-realestate)");
    let v = json(repo.path(), &["affected", "--explain", "--base", &b], 0);
    assert!(
        rules(&v, "realestate").contains(
            &"owned-path products/realestate/old.py (products/realestate/**)".to_string()
        )
    );
}

#[test]
fn merge_commits_count_their_first_parent_diff() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.git(&["checkout", "-q", "-b", "feat/TASK-007-docs-docs"]);
    repo.write("docs/guide.md", "x");
    repo.commit_all("docs: guide (TASK-007-guide-docs)");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("products/bestays/a.py", "x");
    repo.commit_all("feat: a (TASK-008-a-bestays)");
    repo.git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "Merge branch 'feat/TASK-007-docs-docs'",
        "feat/TASK-007-docs-docs",
    ]);
    let v = json(repo.path(), &["affected", "--explain", "--base", &b], 0);
    assert_eq!(affected(&v), ["bestays", "docs"]);
    assert_eq!(v["commits"], 3);
    // The merge commit itself is attributed by the paths it brings in, without a finding for its message.
    assert!(v["findings"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn first_commit_is_attributed_by_its_files() {
    let repo = GitRepo::new();
    repo.write("berth.toml", ATTRIBUTION_MANIFEST);
    repo.write("products/bestays/app.py", "x");
    repo.commit_all("chore: initial import (TASK-001-init-bestays)");
    let v = json(repo.path(), &["log", "--product", "bestays"], 0);
    assert_eq!(v["commits"].as_array().unwrap().len(), 1);
    assert_eq!(v["commits"][0]["products"], serde_json::json!(["bestays"]));
}

#[test]
fn contradictions_are_reported() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.commit_all("feat: x (TASK-009-x-bestays)\n\nProduct: realestate");
    repo.write("products/realestate/y.py", "y");
    repo.commit_all("feat: y (TASK-010-y-bestays)");
    let v = json(repo.path(), &["affected", "--explain", "--base", &b], 0);
    let rules: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        ["trailer-contradicts-slug", "message-contradicts-paths"]
    );
    // Both products are affected: berth reports, it does not guess which side is right.
    assert_eq!(affected(&v), ["bestays", "realestate"]);
}

#[test]
fn unattributable_commits_fail_without_fallback_and_warn_with_it() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.write("README.md", "hello");
    repo.commit_all("chore: readme (TASK-011-readme)");
    let out = run(repo.path(), &["affected", "--base", &b]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("error[no-product]"),
        "{}",
        out.snapshot()
    );
    assert!(out.stdout.contains("affected: none"), "{}", out.snapshot());

    let m = ATTRIBUTION_MANIFEST.replace(
        "name = \"shop\"",
        "name = \"shop\"\nfallback_product = \"docs\"",
    );
    repo.write("berth.toml", &m);
    repo.commit_all("chore: fallback (TASK-012-fallback-docs)");
    let out = run(repo.path(), &["affected", "--base", &b, "--format", "json"]);
    out.assert_code(0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(affected(&v), ["docs"]);
    assert_eq!(v["findings"][0]["rule"], "fallback", "{v}");
    assert!(
        v["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("fallback_product `docs`"),
        "{v}"
    );
    let out = run(repo.path(), &["affected", "--base", &b]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("1 commit(s) name no product")
            && out.stderr.contains("fallback_product"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn since_deploy_with_and_without_tags() {
    let repo = attribution_repo();
    repo.write("products/bestays/a.py", "x");
    repo.commit_all("feat: a (TASK-013-a-bestays)");
    repo.git(&[
        "tag",
        "-a",
        "bestays-deploy-20260101-000000",
        "-m",
        "deploy",
    ]);
    repo.write("products/realestate/b.py", "x");
    repo.commit_all("feat: b (TASK-014-b-realestate)");
    repo.git(&[
        "tag",
        "-a",
        "realestate-deploy-20260101-000100",
        "-m",
        "deploy",
    ]);
    repo.git(&["tag", "-a", "docs-deploy-20260101-000100", "-m", "deploy"]);
    // Nothing since any deploy: only products never deployed... none here.
    let v = json(repo.path(), &["affected", "--since-deploy"], 0);
    assert_eq!(affected(&v), Vec::<String>::new());
    // A realestate change after its deploy affects realestate, and bestays? Its tag is older, so
    // realestate's b.py commit is in bestays' range but is not attributed to bestays.
    repo.write("products/realestate/c.py", "x");
    repo.commit_all("feat: c (TASK-015-c-realestate)");
    let v = json(repo.path(), &["affected", "--since-deploy"], 0);
    assert_eq!(affected(&v), ["realestate"]);
    let re = v["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["product"] == "realestate")
        .unwrap();
    assert_eq!(re["since"], "realestate-deploy-20260101-000100");
    // The newest tag wins.
    repo.git(&[
        "tag",
        "-a",
        "realestate-deploy-20260102-000000",
        "-m",
        "deploy",
    ]);
    let v = json(repo.path(), &["affected", "--since-deploy"], 0);
    assert_eq!(affected(&v), Vec::<String>::new());
}

#[test]
fn since_deploy_never_deployed_is_affected() {
    let repo = attribution_repo();
    let v = json(repo.path(), &["affected", "--since-deploy"], 0);
    assert_eq!(affected(&v), ["bestays", "realestate", "docs"]);
    assert!(
        v["products"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["never_deployed"] == true)
    );
}

#[test]
fn shallow_clone_that_misses_the_base_is_an_error_with_the_fix() {
    let repo = attribution_repo();
    for i in 0..5 {
        repo.write(&format!("products/bestays/{i}.py"), "x");
        repo.commit_all(&format!("feat: {i} (TASK-1{i}-x-bestays)"));
    }
    let base = repo.git(&["rev-parse", "HEAD~4"]).trim().to_string();
    let tmp = temp_dir();
    let url = format!("file://{}", repo.path().display());
    let status = std::process::Command::new("git")
        .args(["clone", "-q", "--depth", "2", &url, "shallow"])
        .current_dir(tmp.path())
        .status()
        .unwrap();
    assert!(status.success());
    let out = run(&tmp.path().join("shallow"), &["affected", "--base", &base]);
    out.assert_code(2);
    assert!(out.stderr.contains("shallow clone"), "{}", out.snapshot());
    assert!(
        out.stderr.contains("git fetch --unshallow") && out.stderr.contains("fetch-depth: 0"),
        "{}",
        out.snapshot()
    );
    assert_eq!(out.stdout, "", "no guess on stdout");
}

#[test]
fn force_pushed_base_uses_the_merge_base_and_says_so() {
    let repo = attribution_repo();
    repo.write("products/bestays/a.py", "x");
    repo.commit_all("feat: a (TASK-020-a-bestays)");
    let fork = base(&repo);
    // The old base: a commit that was later force-pushed away.
    repo.git(&["checkout", "-q", "-b", "old"]);
    repo.write("products/realestate/gone.py", "x");
    repo.commit_all("feat: gone (TASK-021-gone-realestate)");
    let old = base(&repo);
    repo.git(&["checkout", "-q", "main"]);
    repo.write("docs/new.md", "x");
    repo.commit_all("docs: new (TASK-022-new-docs)");
    let out = run(
        repo.path(),
        &["affected", "--base", &old, "--format", "json"],
    );
    out.assert_code(0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["merge_base"], fork.as_str());
    assert_eq!(affected(&v), ["docs"]);
    assert!(
        out.stderr.contains("is not an ancestor of `HEAD`"),
        "{}",
        out.snapshot()
    );
}

/// berth takes the merge base from the log itself when base is a parent of a commit
/// read, and asks `git merge-base` otherwise: a base on a merged branch (not on the
/// first-parent line) is an ancestor either way, in both walks, with no note.
#[test]
fn base_on_a_merged_branch_is_its_own_merge_base_in_both_walks() {
    let repo = attribution_repo();
    repo.git(&["checkout", "-q", "-b", "side"]);
    repo.write("products/realestate/s.py", "x");
    repo.commit_all("feat: s (TASK-40-s-realestate)");
    let b = base(&repo);
    repo.write("products/realestate/t.py", "x");
    repo.commit_all("feat: t (TASK-41-t-realestate)");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("docs/m.md", "x");
    repo.commit_all("docs: m (TASK-42-m-docs)");
    repo.git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "Merge branch 'side'",
        "side",
    ]);
    for walk in [&[][..], &["--first-parent"][..]] {
        let mut args = vec!["affected", "--base", &b, "--format", "json"];
        args.extend_from_slice(walk);
        let out = run(repo.path(), &args);
        out.assert_code(0);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["merge_base"], b.as_str(), "{walk:?}: {v}");
        assert!(
            !out.stderr.contains("not an ancestor"),
            "{walk:?}: {}",
            out.snapshot()
        );
    }
    // The same walks from the tip itself: nothing to read, base is head.
    let head = base(&repo);
    let v = json(repo.path(), &["affected", "--base", &head], 0);
    assert_eq!(v["merge_base"], head.as_str());
    assert_eq!(v["commits"], 0);
}

#[test]
fn unknown_base_is_a_usage_error() {
    let repo = attribution_repo();
    let out = run(repo.path(), &["affected", "--base", "origin/nope"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("`origin/nope` names no commit"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn github_output_is_a_matrix_line() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.write("apps/server/x.py", "x");
    repo.commit_all("fix: x (TASK-023-x-bestays)");
    let out = run(
        repo.path(),
        &["affected", "--base", &b, "--format", "github"],
    );
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "products=[\"bestays\",\"realestate\"]\nany=true\n"
    );
}

#[test]
fn explain_text() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.write("apps/server/x.py", "x");
    repo.write("products/bestays/y.py", "x");
    repo.commit_all("fix: x (TASK-024-x-bestays)");
    let out = run(repo.path(), &["affected", "--base", &b, "--explain"]);
    out.assert_code(0);
    let text = out.stdout.replace(&b, "[BASE]").replace(&b[..7], "[BASE]");
    let re = regex::Regex::new(r"\n  [0-9a-f]{7} ").unwrap();
    insta::assert_snapshot!(re.replace_all(&text, "\n  [SHA] "));
}

#[test]
fn first_parent_reads_what_landed_and_json_without_explain_is_compact() {
    let repo = attribution_repo();
    let b = base(&repo);
    repo.git(&["checkout", "-q", "-b", "side"]);
    repo.write("products/realestate/s.py", "x");
    repo.commit_all("feat: s (TASK-30-s-realestate)");
    repo.commit_all("chore: note (TASK-31-note-docs)");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "Merge branch 'side'",
        "side",
    ]);
    // All commits: the side branch's messages count (docs is named by a task slug).
    let v = json(repo.path(), &["affected", "--base", &b], 0);
    assert_eq!(affected(&v), ["realestate", "docs"]);
    assert_eq!(v["commits"], 3);
    assert_eq!(v["products"][1]["commit_count"], 2);
    assert!(
        v["products"][1].get("commits").is_none(),
        "no explanation unless asked: {v}"
    );
    // First parent only: the merge, with the files it brought in.
    let v = json(
        repo.path(),
        &["affected", "--base", &b, "--first-parent"],
        0,
    );
    assert_eq!(affected(&v), ["realestate"]);
    assert_eq!(v["commits"], 1);
}

#[test]
fn shallow_clone_with_since_deploy_is_an_error_not_everything_affected() {
    let repo = attribution_repo();
    repo.write("products/bestays/a.py", "x");
    repo.commit_all("feat: a (TASK-40-a-bestays)");
    repo.git(&[
        "tag",
        "-a",
        "bestays-deploy-20260101-000000",
        "-m",
        "deploy",
    ]);
    repo.commit_all("feat: b (TASK-41-b-bestays)");
    let tmp = temp_dir();
    let url = format!("file://{}", repo.path().display());
    let ok = std::process::Command::new("git")
        .args(["clone", "-q", "--depth", "1", "--no-tags", &url, "shallow"])
        .current_dir(tmp.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = run(
        &tmp.path().join("shallow"),
        &["affected", "--since-deploy", "--format", "github"],
    );
    out.assert_code(2);
    assert_eq!(out.stdout, "", "no products line: {}", out.snapshot());
    assert!(
        out.stderr.contains("git fetch --unshallow --tags")
            && out.stderr.contains("fetch-depth: 0"),
        "{}",
        out.snapshot()
    );
}

#[test]
fn a_plain_directory_path_owns_what_is_under_it() {
    let repo = GitRepo::new();
    repo.write(
        "berth.toml",
        &ATTRIBUTION_MANIFEST.replace("paths = [\"docs/**\"]", "paths = [\"docs\"]"),
    );
    repo.commit_all("chore: init (TASK-0-init-docs)");
    let b = base(&repo);
    repo.write("docs/guide/intro.md", "x");
    repo.commit_all("chore: intro");
    let v = json(repo.path(), &["affected", "--base", &b], 0);
    assert_eq!(affected(&v), ["docs"]);
}
