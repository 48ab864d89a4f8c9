//! Warm standby on the real runtimes behind a real nginx: a rollback within the
//! window is a switch back to the old slot, under 100+ requests a second with not
//! one failed request, and the previous version answers everything right after.

use std::time::{Duration, Instant};

use berth_runtime::Kind;
use berth_testkit::load::{LoadConfig, Report};

use crate::deploy::{ROUTES, Site};

/// When (from the start of the load) every request sent from then on was answered
/// by `version`: the send time plus latency of the first request of that run.
pub fn all_answered_by(report: &Report, version: &str) -> Option<Duration> {
    let mut samples: Vec<_> = report.samples.iter().collect();
    samples.sort_by_key(|s| s.at);
    let last_other = samples.iter().rposition(|s| s.version != version);
    let first = match last_other {
        Some(i) => samples.get(i + 1)?,
        None => samples.first()?,
    };
    Some(first.at + first.latency)
}

fn rollback_within_the_window_under_load(kind: Kind) {
    let site = Site::with(kind, 300);
    site.edit_manifest("standby = \"0\"", "standby = \"10m\"");
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.change("bestays", 1);
    let v1 = site.head_version();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    site.change("bestays", 2);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let before = site.processes("bestays");

    // 8 kept-alive and 4 new-connection workers on the quick routes: over 100 req/s.
    let load = LoadConfig::new(site.http_port, "bestays.app")
        .paths(&ROUTES[..3])
        .workers(8, 4)
        .pause(Duration::from_millis(5))
        .start();
    load.wait_for_answers(50);
    let at = load.elapsed();
    let started = Instant::now();
    let out = site.berth(&["rollback", "bestays", "--yes", "--format", "json"]);
    let took = started.elapsed();
    out.assert_code(0);
    eprintln!("[{kind:?}] rollback steps (ms): {}", out.stdout.trim());
    assert!(
        out.stderr
            .contains("as a warm standby: no build, no start, no migration"),
        "{}",
        out.snapshot()
    );
    load.wait_for_answers(100);
    let report = load.finish();
    report.assert_clean(200).assert_covered();
    assert!(report.rate() >= 100.0, "{}", report.summary());
    let switched = all_answered_by(&report, &v1).expect("answers by the previous version");
    eprintln!(
        "[{kind:?}] rollback within the standby window: the command took {:.3} s; every request answered by {v1} {:.3} s after it started",
        took.as_secs_f64(),
        switched.saturating_sub(at).as_secs_f64()
    );
    assert_eq!(
        site.processes("bestays"),
        before,
        "nothing started or stopped: the rollback was a switch"
    );
    if kind == Kind::Swarm {
        the_next_deploy_updates_the_standby_slot_in_place(&site);
    }
}

/// On swarm, a deploy into the slot of a warm standby updates that slot's services in
/// place (one `docker stack deploy`: the same Swarm services, each with a new completed
/// update) instead of removing them and creating them again; the new version serves.
fn the_next_deploy_updates_the_standby_slot_in_place(site: &Site) {
    let manager = site.swarm.as_ref().unwrap().manager();
    let services = || -> Vec<String> {
        let mut v: Vec<String> = manager
            .docker(&["service", "ls", "--format", "{{.ID}} {{.Name}}"])
            .lines()
            .filter(|l| l.contains("-bestays-"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let before = services();
    assert_eq!(before.len(), 4, "two slots of two services: {before:?}");
    site.change("bestays", 3);
    let v3 = site.head_version();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(services(), before, "no service was removed or created");
    let updated: Vec<String> = before
        .iter()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .filter(|n| {
            manager
                .docker(&[
                    "service",
                    "inspect",
                    "--format",
                    "{{index .Spec.Labels \"berth.version\"}}",
                    n,
                ])
                .trim()
                == v3
        })
        .collect();
    assert_eq!(updated.len(), 2, "the standby's slot runs {v3}: {before:?}");
    for n in &updated {
        let state = manager.docker(&[
            "service",
            "inspect",
            "--format",
            "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
            n,
        ]);
        assert_eq!(state.trim(), "completed", "{n} was updated in place");
    }
    assert_eq!(site.get("bestays.app", "/api/health"), (200, v3));
}

#[test]
fn rollback_within_the_window_under_load_on_local() {
    rollback_within_the_window_under_load(Kind::Local);
}

#[test]
fn rollback_within_the_window_under_load_on_compose() {
    rollback_within_the_window_under_load(Kind::Compose);
}

/// How one measured rollback is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Within the standby window: a switch back.
    Warm,
    /// `standby = "0"`: the old slot is started again (berth before the standby).
    Cold,
    /// Kamal-style: the old containers are retained stopped; `docker start` them,
    /// wait until they answer, then switch (berth rollback onto the started slot).
    Restart,
}

/// The time from the start of `berth rollback` (or of the restart, Kamal-style) to
/// every request answered by the version rolled back to, `n` times in a row.
/// Each rollback's time (s) and the load's rate during it (req/s).
fn rollback_times(kind: Kind, mode: Mode, n: usize) -> Vec<(f64, f64)> {
    let site = Site::with(kind, 300);
    let window = if mode == Mode::Cold { "0" } else { "1h" };
    site.edit_manifest("standby = \"0\"", &format!("standby = \"{window}\""));
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.change("bestays", 1);
    let mut versions = vec![site.head_version()];
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    site.change("bestays", 2);
    versions.push(site.head_version());
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let mut times = Vec::new();
    for i in 0..n {
        // Rollbacks alternate: each returns to the version the previous one left.
        let target = versions[i % 2].clone();
        let (old_ids, ports) = if mode == Mode::Restart {
            let (ids, ports) = standby_containers(&site, &target);
            let out = std::process::Command::new("docker")
                .arg("stop")
                .args(&ids)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            (ids, ports)
        } else {
            Default::default()
        };
        // About 100 req/s (the load): a request every ~10 ms shows when the
        // previous version answers everything, without saturating the 2 cores (at
        // ~500 req/s every command of the rollback waits for a core).
        let load = LoadConfig::new(site.http_port, "bestays.app")
            .paths(&ROUTES[..3])
            .workers(2, 2)
            .pause(Duration::from_millis(35))
            .start();
        load.wait_for_answers(30);
        let at = load.elapsed();
        if mode == Mode::Restart {
            let out = std::process::Command::new("docker")
                .arg("start")
                .args(&old_ids)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            // Until the restarted slot answers its health check.
            let until = Instant::now() + Duration::from_secs(60);
            while !ports.iter().all(|p| {
                berth_testkit::http::get(*p, "bestays.app", "/api/health")
                    .is_ok_and(|r| r.status == 200)
            }) {
                assert!(
                    Instant::now() < until,
                    "the restarted containers never answered"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // BERTH_BENCH_LOG=<filter>: the rollback's own log (each command berth runs,
        // with its time) is printed, to see where the time goes.
        let log = std::env::var("BERTH_BENCH_LOG").ok();
        let mut env: Vec<(&str, &str)> = log.iter().map(|l| ("BERTH_LOG", l.as_str())).collect();
        if log.is_some() {
            env.push(("BERTH_LOG_TIMES", "1"));
        }
        let out = site.berth_env(&["rollback", "bestays", "--yes"], &env);
        if log.is_some() {
            eprintln!("rollback {i} ({kind:?} {mode:?}):\n{}", out.stderr);
        }
        out.assert_code(0);
        let warm = out.stderr.contains("as a warm standby");
        assert_eq!(warm, mode != Mode::Cold, "{}", out.snapshot());
        load.wait_for_answers(30);
        let report = load.finish();
        report.assert_clean(50);
        let switched = all_answered_by(&report, &target).expect("answers by the target");
        times.push((switched.saturating_sub(at).as_secs_f64(), report.rate()));
    }
    times
}

/// The container ids of the product's standby slot (running `version`), and the
/// ports its server answers on.
fn standby_containers(site: &Site, version: &str) -> (Vec<String>, Vec<u16>) {
    let v = crate::support::json(site.repo.path(), &["status", "bestays"], 0);
    let sb = &v["standby"][0];
    assert_eq!(sb["version"], version, "{v}");
    let slot = berth_runtime::Slot::parse(sb["slot"].as_str().unwrap()).unwrap();
    let path = site.repo.path().join("berth.toml");
    let m = berth_manifest::load_path(&path).unwrap().0.manifest;
    let rt = berth_runtime::open(Some(site.runtime), &m, site.repo.path());
    let ids = rt
        .instances("bestays")
        .unwrap()
        .into_iter()
        .filter(|i| i.slot == slot)
        .map(|i| i.id)
        .collect();
    let ports = rt
        .addresses("bestays", "server", slot)
        .iter()
        .map(|a| a.port)
        .collect();
    (ids, ports)
}

/// The `rollback` benchmark (bench/rollback.sh): BERTH_BENCH_N rollbacks (default 10)
/// per runtime and mode, each printed as one `rollback bench` line.
#[test]
#[ignore = "a benchmark: bench/rollback.sh runs it"]
fn rollback_bench() {
    let n: usize = std::env::var("BERTH_BENCH_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    for (kind, mode) in [
        (Kind::Local, Mode::Warm),
        (Kind::Local, Mode::Cold),
        (Kind::Compose, Mode::Warm),
        (Kind::Compose, Mode::Cold),
        (Kind::Compose, Mode::Restart),
    ] {
        // BERTH_BENCH_CASES=Local:Warm,Compose:Warm measures only those cases.
        if let Ok(cases) = std::env::var("BERTH_BENCH_CASES")
            && !cases
                .split(',')
                .any(|c| c.trim() == format!("{kind:?}:{mode:?}"))
        {
            continue;
        }
        let runs = rollback_times(kind, mode, n);
        let mut rates: Vec<f64> = runs.iter().map(|r| r.1).collect();
        rates.sort_by(|a, b| a.total_cmp(b));
        let mut t: Vec<f64> = runs.iter().map(|r| r.0).collect();
        t.sort_by(|a, b| a.total_cmp(b));
        let median = if t.len() % 2 == 1 {
            t[t.len() / 2]
        } else {
            (t[t.len() / 2 - 1] + t[t.len() / 2]) / 2.0
        };
        println!(
            "rollback bench: {kind:?} {mode:?}: median {median:.3} s, min {:.3} s, max {:.3} s, n {}, load {:.0} req/s",
            t[0],
            t[t.len() - 1],
            t.len(),
            rates[rates.len() / 2]
        );
    }
}

/// On swarm the old slot is two services of running tasks: a rollback within the
/// window switches back to them without restarting one (their task ids are unchanged).
#[test]
fn rollback_within_the_window_under_load_on_swarm() {
    rollback_within_the_window_under_load(Kind::Swarm);
}
