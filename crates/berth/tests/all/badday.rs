//! A bad day on the server: nginx stopped or broken by someone else between
//! deploys, a full disk, a clock set back — each on real components.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::deploy::Site;
use crate::support::temp_dir;

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

/// A small tmpfs mounted over `dir` (its contents moved onto it), unmounted on drop
/// (lazily: the site's processes may hold files there), its contents lost with it.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    fn over(dir: &Path, size: &str) -> Self {
        let aside = dir.with_extension("before-tmpfs");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::rename(dir, &aside).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a tmpfs at {}", dir.display());
        let fs = Self {
            dir: dir.to_path_buf(),
        };
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(aside.join("."))
            .arg(dir)
            .status()
            .unwrap();
        assert!(copied.success());
        std::fs::remove_dir_all(&aside).unwrap();
        fs
    }

    /// Fill the file system to the last byte; returns the filler.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        // The last partial block too.
        while f.write_all(&[0u8]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Every file under `dir` (relative path -> bytes), the filler excepted.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() && e.file_name() != "filler" {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// Temp files a writer left: `.<name>.<pid>.tmp`, `.partial`, tempfile's `.tmp*`.
fn leftovers(files: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<&String> {
    files
        .keys()
        .filter(|k| {
            let name = k.rsplit('/').next().unwrap();
            name.contains(".tmp") || name.ends_with(".partial")
        })
        .collect()
}

/// A full disk under `.berth/` (a deploy) and under the render output (`berth
/// render`): a clear error naming what and where, the old version still serving,
/// no half-written or temp file, every record whole; after space returns the same
/// command succeeds.
#[test]
fn a_full_disk_fails_cleanly_and_the_next_run_succeeds() {
    let t = Instant::now();
    let site = Site::new(0);
    let root = site.repo.path().to_path_buf();

    // The render output on a full disk.
    site.berth(&["render", "--env", "prod"]).assert_code(0);
    let out_dir = root.join("deploy/prod");
    let rendered = files(&out_dir);
    assert!(rendered.len() > 5);
    let fs = Tmpfs::over(&out_dir, "4m");
    let filler = fs.fill();
    site.edit_manifest("listen = \"127.0.0.1\"", "listen = \"127.0.0.2\"");
    let out = site.berth(&["render", "--env", "prod"]);
    assert_ne!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stderr.contains("No space left on device") && out.stderr.contains("deploy/prod/"),
        "{}",
        out.snapshot()
    );
    let now = files(&out_dir);
    assert!(leftovers(&now).is_empty(), "{:?}", leftovers(&now));
    assert_eq!(now, rendered, "every rendered file is the old one, whole");
    std::fs::remove_file(&filler).unwrap();
    site.berth(&["render", "--env", "prod"]).assert_code(0);
    let now = files(&out_dir);
    assert!(leftovers(&now).is_empty(), "{:?}", leftovers(&now));
    assert_ne!(now, rendered);
    drop(fs);
    site.edit_manifest("listen = \"127.0.0.2\"", "listen = \"127.0.0.1\"");
    site.berth(&["render", "--env", "prod"]).assert_code(0);
    assert_eq!(files(&out_dir), rendered);
    std::fs::remove_dir_all(&out_dir).unwrap();
    eprintln!("badday full disk, render: {:?}", t.elapsed());

    // `.berth/` on a full disk, between two deploys.
    let fs = Tmpfs::over(&root.join(".berth"), "64m");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site.head_version();
    site.change("bestays", 1);
    let filler = fs.fill();
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    assert_ne!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stderr.contains("No space left on device") && out.stderr.contains(".berth/"),
        "{}",
        out.snapshot()
    );
    eprintln!(
        "{}",
        out.stderr
            .lines()
            .filter(|l| l.contains("No space"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        site.get("bestays.app", "/api/health").1,
        v1,
        "the old version serves"
    );
    let state = files(&root.join(".berth"));
    assert!(leftovers(&state).is_empty(), "{:?}", leftovers(&state));
    for (name, body) in &state {
        let text = String::from_utf8_lossy(body);
        if name.ends_with(".json") && name.starts_with("run/") {
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{name} is not whole: {e}: {text}"));
        }
        if name == "audit.jsonl" {
            for line in text.lines().filter(|l| !l.is_empty()) {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("a torn audit record: {e}: {line}"));
            }
        }
    }
    // A secret set on the full disk: refused, the secret file as it was, no temp file.
    let secrets = root.join(".berth/secrets/bestays.env");
    let before = std::fs::read(&secrets).unwrap();
    let set = || {
        use std::io::Write;
        let mut c = crate::support::berth(&root)
            .args(["secrets", "set", "bestays", "CLERK_SECRET_KEY"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(b"a-new-value").unwrap();
        c.wait_with_output().unwrap()
    };
    let out = set();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&secrets).unwrap(), before);
    let state = files(&root.join(".berth"));
    assert!(leftovers(&state).is_empty(), "{:?}", leftovers(&state));

    std::fs::remove_file(&filler).unwrap();
    assert!(set().status.success());
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(
        site.get("bestays.app", "/api/health").1,
        site.head_version()
    );
    eprintln!("badday full disk: {:?}", t.elapsed());
    drop(site);
    drop(fs);
}

/// Every pid of the site's processes: the products' process groups (from berth's
/// pid files: each leads its group) and nginx's master with its workers.
fn site_pids(root: &Path) -> Vec<u32> {
    let groups = product_groups(root);
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.split_whitespace().nth(2)?.parse::<u32>().ok())
                })
                .is_some_and(|g| groups.contains(&g))
        })
        .collect();
    pids.extend(nginx_pids(root));
    pids
}

fn product_groups(root: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![root.join(".berth/run")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json")
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(
                    &std::fs::read_to_string(&p).unwrap_or_default(),
                )
                && let Some(pid) = v["pid"].as_u64()
            {
                pids.push(pid as u32);
            }
        }
    }
    pids
}

fn nginx_pids(root: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    if let Some(master) = nginx_pid(root) {
        pids.push(master);
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string));
            if ppid == Some(master.to_string()) {
                pids.push(name.parse().unwrap());
            }
        }
    }
    pids
}

/// A reboot: every process of the site dies at once (kill -9 of the products' process
/// groups and of nginx with its workers); then only the boot path the rendered
/// units run (`ExecStart` of berth-boot.service). Each product comes back on the slot
/// that was live with the version that was live, nginx with berth's config, and a
/// second boot changes nothing.
#[test]
fn after_a_reboot_the_rendered_boot_unit_brings_every_product_back() {
    let site = Site::new(0);
    let root = site.repo.path().to_path_buf();
    site.berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v_realestate = site.head_version();
    site.change("bestays", 1);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v_bestays = site.head_version();
    let live = |st: &serde_json::Value, product: &str| -> (String, String) {
        let row = st["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["product"] == product && r["service"] == "server")
            .unwrap()
            .clone();
        (
            row["slot"].as_str().unwrap_or("-").to_string(),
            row["version"].as_str().unwrap_or("-").to_string(),
        )
    };
    let before = status_json(&site);
    assert_eq!(
        live(&before, "bestays"),
        ("green".into(), v_bestays.clone())
    );
    assert_eq!(
        live(&before, "realestate"),
        ("blue".into(), v_realestate.clone())
    );

    // The unit berth renders: systemd checks it (with berth where the unit expects it).
    site.berth(&["render", "--env", "prod"]).assert_code(0);
    let unit_path = root.join("deploy/prod/systemd/berth-boot.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(unit.contains("WantedBy=multi-user.target"), "{unit}");
    let exec: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .collect();
    assert_eq!(exec, ["/usr/local/bin/berth boot"], "{unit}");
    let args: Vec<&str> = exec[0].split_whitespace().skip(1).collect();
    let units = temp_dir();
    for name in ["berth-boot.service", "berth-serve.service"] {
        let text = std::fs::read_to_string(root.join("deploy/prod/systemd").join(name)).unwrap();
        std::fs::write(
            units.path().join(name),
            text.replace("/usr/local/bin/berth", env!("CARGO_BIN_EXE_berth")),
        )
        .unwrap();
    }
    let verify = std::process::Command::new(berth_testkit::require_program(
        "systemd-analyze",
        &[],
        "apt-get install systemd",
    ))
    .arg("verify")
    .arg(units.path().join("berth-boot.service"))
    .arg(units.path().join("berth-serve.service"))
    .output()
    .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // The reboot.
    let pids = site_pids(&root);
    assert!(pids.len() >= 5, "{pids:?}");
    for pid in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let until = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|p| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    }) {
        assert!(Instant::now() < until, "the site's processes did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        site.get("bestays.app", "/api/health").0,
        0,
        "the site is down"
    );

    // The boot path, timed until every product answers through nginx.
    let boot = Instant::now();
    let out = site.berth(&args);
    out.assert_code(0);
    let until = Instant::now() + Duration::from_secs(15);
    for (host, version) in [
        ("bestays.app", &v_bestays),
        ("realestate.app", &v_realestate),
    ] {
        while site.get(host, "/api/health") != (200, version.clone()) {
            assert!(
                Instant::now() < until,
                "{host} did not come back: {:?}\n{}",
                site.get(host, "/api/health"),
                out.snapshot()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let took = boot.elapsed();
    eprintln!("boot: every product answering {took:?} after `berth boot` started");
    let after = status_json(&site);
    assert_eq!(live(&after, "bestays"), ("green".into(), v_bestays.clone()));
    assert_eq!(
        live(&after, "realestate"),
        ("blue".into(), v_realestate.clone())
    );
    assert_eq!(after["front_door"]["state"], "ok");

    // Twice: nothing changes.
    let running = (site.processes("bestays"), site.processes("realestate"));
    let again = site.berth(&args);
    again.assert_code(0);
    assert!(
        again.stdout.contains("bestays: already running in green"),
        "{}",
        again.snapshot()
    );
    assert!(
        again.stdout.contains("nginx: already running"),
        "{}",
        again.snapshot()
    );
    assert_eq!(
        (site.processes("bestays"), site.processes("realestate")),
        running
    );
}
