//! A bad day on the server: nginx stopped or broken by someone else between
//! deploys, a full disk, a clock set back — each on real components.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::deploy::Site;

/// The pid of the nginx master of a [`Site`] (from the pid file its config names).
fn nginx_pid(root: &Path) -> Option<u32> {
    std::fs::read_to_string(root.join(".berth/nginx/nginx.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
}

/// SIGTERM the site's nginx master (its workers go with it) and wait until it is gone.
fn kill_nginx(root: &Path) {
    let pid = nginx_pid(root).expect("nginx runs");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < until, "nginx {pid} did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_json(site: &Site) -> serde_json::Value {
    let out = site.berth(&["status", "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    crate::logs::validate_json_docs("status.schema.json", std::slice::from_ref(&v));
    v
}

fn deploy_count(site: &Site, product: &str) -> usize {
    let out = site.berth(&["history", product, "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["deploys"].as_array().unwrap().len()
}

/// nginx killed, then its config broken, by someone else between deploys: `berth
/// deploy` refuses before doing anything (exit 2, what and what to run), `berth
/// status` says so in text and JSON, and nothing is started, switched or tagged;
/// with nginx back, the deploy goes through.
#[test]
fn deploy_refuses_and_status_says_so_when_nginx_is_killed_or_broken() {
    let t = Instant::now();
    let site = Site::new(0);
    let root = site.repo.path().to_path_buf();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site.head_version();
    assert_eq!(site.get("bestays.app", "/api/health").1, v1);
    assert_eq!(status_json(&site)["front_door"]["state"], "ok");

    // Killed.
    kill_nginx(&root);
    site.change("bestays", 1);
    let before = site.processes("bestays");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("nginx is not running")
            && out.stderr.contains("deploy/dev/nginx/nginx.conf")
            && out.stderr.contains("nothing was switched"),
        "{}",
        out.snapshot()
    );
    assert_eq!(site.processes("bestays"), before, "nothing was started");
    assert!(
        nginx_pid(&root).is_none_or(|p| !Path::new(&format!("/proc/{p}")).exists()),
        "berth did not start nginx behind the operator's back"
    );
    assert_eq!(deploy_count(&site, "bestays"), 1);
    let out = site.berth(&["rollback", "bestays", "--yes"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("nginx is not running"),
        "{}",
        out.snapshot()
    );
    let st = status_json(&site);
    assert_eq!(st["front_door"]["state"], "down", "{st}");
    assert!(
        st["front_door"]["fix"]
            .as_str()
            .unwrap()
            .contains("nginx -p"),
        "{st}"
    );
    let text = site.berth(&["status"]);
    assert!(
        text.stdout.contains("FRONT DOOR DOWN"),
        "{}",
        text.snapshot()
    );

    // Started again by the operator: the deploy goes through.
    let started = std::process::Command::new("nginx")
        .args([
            "-p",
            root.to_str().unwrap(),
            "-c",
            "deploy/dev/nginx/nginx.conf",
        ])
        .status()
        .unwrap();
    assert!(started.success());
    assert_eq!(status_json(&site)["front_door"]["state"], "ok");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v2 = site.head_version();
    assert_eq!(site.get("bestays.app", "/api/health").1, v2);

    // Broken: someone edits nginx's config. The running nginx still serves v2.
    site.change("bestays", 2);
    let conf = root.join("deploy/dev/nginx/nginx.conf");
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{good}\nthis is not nginx;\n")).unwrap();
    let before = site.processes("bestays");
    let out = site.berth(&["deploy", "bestays", "--yes", "--allow-dirty"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("fails its test") && out.stderr.contains("unknown directive \"this\""),
        "{}",
        out.snapshot()
    );
    assert_eq!(site.processes("bestays"), before, "nothing was started");
    assert_eq!(site.get("bestays.app", "/api/health").1, v2);
    let st = status_json(&site);
    assert_eq!(st["front_door"]["state"], "broken", "{st}");
    std::fs::write(&conf, good).unwrap();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(
        site.get("bestays.app", "/api/health").1,
        site.head_version()
    );
    assert_eq!(deploy_count(&site, "bestays"), 3);
    eprintln!("badday nginx: {:?}", t.elapsed());
}

fn history(site: &Site, product: &str) -> Vec<serde_json::Value> {
    let out = site.berth(&["history", product, "--format", "json"]);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["deploys"].as_array().unwrap().clone()
}

/// The clock set back an hour between two deploys (berth's clock only: `BERTH_NOW`,
/// never the machine's): the later deploy is still the newest in the history, its
/// tag sorts after the earlier one by name, and a rollback (clock still back) returns
/// to the earlier version, not "nothing to roll back to".
#[test]
fn a_clock_set_back_an_hour_keeps_deploys_in_order() {
    let t = Instant::now();
    let site = Site::new(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site.head_version();
    site.change("bestays", 1);
    let v2 = site.head_version();
    let back = [("BERTH_NOW", "-3600")];
    site.berth_env(&["deploy", "bestays", "--yes"], &back)
        .assert_code(0);
    let h = history(&site, "bestays");
    let versions: Vec<&str> = h.iter().map(|d| d["version"].as_str().unwrap()).collect();
    assert_eq!(versions, [v2.as_str(), v1.as_str()], "{h:#?}");
    let tags: Vec<&str> = h.iter().map(|d| d["tag"].as_str().unwrap()).collect();
    assert!(
        tags[0] > tags[1],
        "tag names sort in deploy order: {tags:?}"
    );
    assert_eq!(h[0]["previous"], h[1]["tag"]);

    let out = site.berth_env(&["rollback", "bestays", "--yes"], &back);
    out.assert_code(0);
    assert_eq!(site.get("bestays.app", "/api/health").1, v1);
    let h = history(&site, "bestays");
    let versions: Vec<&str> = h.iter().map(|d| d["version"].as_str().unwrap()).collect();
    assert_eq!(versions, [v1.as_str(), v2.as_str(), v1.as_str()], "{h:#?}");
    assert!(h[0]["rollback_of"].is_string());
    let tags: Vec<&str> = h.iter().map(|d| d["tag"].as_str().unwrap()).collect();
    let mut sorted = tags.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    // `-10` after `-9` would break a plain sort; three deploys stay below that.
    assert_eq!(tags, sorted);
    eprintln!("badday clock skew: {:?}", t.elapsed());
}
