//! A bad day, part B: the PostgreSQL state backend (`[state] backend = "postgres"`)
//! goes away in the middle of a deploy, after each of its steps in turn, and comes
//! back after the deploy has ended. The deploy stops before the switch (its lock
//! went with the server) or completes; the lock is free once PostgreSQL is back;
//! the audit holds exactly one record per step the deploy ran, and its outcome.

use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::deploy::Site;
use crate::support::*;

/// Poll `cond` every 20 ms for up to `secs`, failing with `what` (and `show()`).
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool, show: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}\n{}", show());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The audit records of one version's deploy in the state database, in order: (step, result).
fn audit_of(pg: &berth_testkit::Postgres, version: &str) -> Vec<(String, String)> {
    pg.admin(&format!(
        "SELECT record->>'step' || ' ' || coalesce(record->>'result', '') FROM berth_audit \
         WHERE product = 'bestays' AND record->>'version' = '{version}' ORDER BY id"
    ))
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| {
        let (a, b) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
        (a.to_string(), b.to_string())
    })
    .collect()
}

#[test]
fn postgres_state_lost_after_each_step_of_a_deploy() {
    let started = Instant::now();
    let pg = berth_testkit::Postgres::start();
    let site = Site::new(200);
    site.use_postgres_state(40);
    let url = pg.admin_url();
    let env = [("BERTH_STATE_URL", url.as_str())];
    // Something live to keep serving; the second deploy's plan (one with a live
    // slot: switch, then drain the old one) numbers the steps.
    site.berth_env(&["deploy", "bestays", "--yes"], &env)
        .assert_code(0);
    site.change("bestays", 39);
    let first = site.berth_env(&["deploy", "bestays", "--yes"], &env);
    first.assert_code(0);
    let steps: Vec<String> = first
        .all()
        .lines()
        .filter_map(|l| l.strip_prefix("[bestays] "))
        .filter_map(|l| {
            let (n, rest) = l.split_once(' ')?;
            let (_, _total) = n.split_once('/')?;
            Some(rest.to_string())
        })
        .collect();
    let total = steps.len();
    let switch_at = 1 + steps
        .iter()
        .position(|s| s.starts_with("switch traffic"))
        .unwrap_or_else(|| panic!("no switch step in\n{}", first.snapshot()));
    assert!(total >= 8 && switch_at > 3, "{steps:?}");

    let mut live = site.head_version();
    for n in 1..=total {
        site.change("bestays", 40 + n as u32);
        let version = site.head_version();
        let gate = site.repo.path().join(format!(".gate-{n}"));
        let mut child = berth(site.repo.path())
            .args(["deploy", "bestays", "--yes"])
            .env("BERTH_STATE_URL", &url)
            .env("BERTH_OPERATOR", "test-operator")
            .env("BERTH_DEBUG_PAUSE_AFTER_STEP", n.to_string())
            .env("BERTH_DEBUG_RESUME_FILE", &gate)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = Arc::new(Mutex::new(String::new()));
        let reader = {
            let err = err.clone();
            let mut pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(k) = pipe.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    err.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..k]));
                }
            })
        };
        let paused = format!("paused after step {n} ");
        wait_until(
            120,
            &format!("the deploy did not pause after step {n}"),
            || err.lock().unwrap().contains(&paused),
            || err.lock().unwrap().clone(),
        );
        // The state database dies (every session with it), then the deploy goes on.
        pg.stop_immediate();
        std::fs::write(&gate, "").unwrap();
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let err = err.lock().unwrap().clone();
        let (code, body) = site.get("bestays.app", "/api/health");
        assert_eq!(code, 200, "bestays must keep answering (step {n})\n{err}");
        if n < switch_at {
            // The lock went with the server: nothing may switch traffic any more.
            assert!(
                !status.success(),
                "step {n}: the deploy switched without its lock\n{err}"
            );
            assert!(
                err.contains("the deploy lock was lost"),
                "step {n}: the failure must say why\n{err}"
            );
            assert_eq!(
                body, live,
                "step {n}: traffic moved without the lock\n{err}"
            );
        } else {
            assert!(
                status.success(),
                "step {n}: a switched deploy completes\n{err}"
            );
            assert_eq!(body, version, "step {n}\n{err}");
            live = version.clone();
        }

        pg.restart();
        // The lock is not left held once PostgreSQL is back.
        let lock = site.berth_env(&["lock", "status", "bestays"], &env);
        lock.assert_code(0);
        assert!(
            !lock.stdout.contains("bestays: locked by"),
            "step {n}: {}",
            lock.snapshot()
        );
        // The audit shows what happened: the records kept while the server was away
        // are written by the next command that reaches it (the next round's deploy;
        // after the last round, one more deploy), checked below.
    }
    // A command that writes the audit: the last round's kept records go in first.
    site.change("bestays", 40 + total as u32 + 1);
    site.berth_env(&["deploy", "bestays", "--yes"], &env)
        .assert_code(0);
    assert!(
        std::fs::read_to_string(site.repo.path().join(".berth/audit.pending.jsonl"))
            .unwrap_or_default()
            .trim()
            .is_empty(),
        "every kept record was written"
    );

    // Each round's deploy: exactly one record per step it ran, then its outcome.
    let log = site.repo.git(&[
        "log",
        "--format=%h",
        "--abbrev=12",
        "-n",
        &(total + 2).to_string(),
    ]);
    let versions: Vec<&str> = log.lines().rev().collect();
    for (n, version) in versions.iter().enumerate().take(total + 1).skip(1) {
        let got = audit_of(&pg, version);
        let ran = if n < switch_at { switch_at } else { total };
        let steps_got: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(steps_got.len(), ran + 1, "step {n} ({version}): {got:?}");
        assert_eq!(steps_got[ran], "deploy", "step {n}: {got:?}");
        let outcome = &got[ran].1;
        if n < switch_at {
            assert_eq!(outcome, "failed", "step {n}: {got:?}");
            assert_eq!(
                got[ran - 1],
                ("switch".to_string(), "failed".to_string()),
                "{got:?}"
            );
            assert!(got[..ran - 1].iter().all(|(_, r)| r == "ok"), "{got:?}");
        } else {
            assert_eq!(outcome, "ok", "step {n}: {got:?}");
            assert!(got.iter().all(|(_, r)| r == "ok"), "{got:?}");
        }
    }
    eprintln!(
        "badday_state: {total} rounds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
