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
    let out = site.berth(&["rollback", "bestays", "--yes"]);
    let took = started.elapsed();
    out.assert_code(0);
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
}

#[test]
fn rollback_within_the_window_under_load_on_local() {
    rollback_within_the_window_under_load(Kind::Local);
}

#[test]
fn rollback_within_the_window_under_load_on_compose() {
    rollback_within_the_window_under_load(Kind::Compose);
}
