use crate::support::*;

#[test]
fn demo_runs_end_to_end() {
    let tmp = temp_dir();
    let dir = tmp.path().join("demo");
    let out = run(tmp.path(), &["demo", "--dir", "demo"]);
    out.assert_code(0);
    assert!(out.stdout.contains("[7] done"), "{}", out.snapshot());
    assert!(
        out.stdout.contains("✗ TASK-002-database-schema"),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stdout.contains("affected: bestays, realestate, villas"),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stdout.contains("caught 3 committed secrets"),
        "{}",
        out.snapshot()
    );
    // The kept directory is a real repository with three products.
    let log = std::process::Command::new("git")
        .args(["log", "--oneline"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&log.stdout).lines().count(), 5);
    let m = std::fs::read_to_string(dir.join("berth.toml")).unwrap();
    assert!(m.contains("[products.villas]"));
    // A non-empty directory is refused.
    run(tmp.path(), &["demo", "--dir", "demo"]).assert_code(2);
}
