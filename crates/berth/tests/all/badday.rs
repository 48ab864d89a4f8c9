//! A bad day on the server: nginx stopped or broken by someone else between
//! deploys, a full disk (state, render output, backups), a clock set back, a reboot
//! (local and compose), the Docker Engine restarting mid deploy — each on real
//! components.

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

    /// Fill the file system, then give back `room` bytes (whole pages, as tmpfs counts).
    fn fill_leaving(&self, room: u64) -> std::path::PathBuf {
        let path = self.fill();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - room.div_ceil(4096) * 4096).unwrap();
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

/// A full disk under the backup directory (a small tmpfs): `berth backup` fails with
/// exit 1 (the code of a runtime failure; 2 is for bad input) naming the file it could
/// not write, leaves no partial archive, temp file or record, and loses nothing (the
/// older backup is listed and verifies); once space returns the next backup succeeds.
/// Twice: with no byte free (the archive cannot be written), and with room for the
/// archive alone (what follows it cannot be: the Redis part or the record).
#[test]
fn a_full_backup_disk_fails_cleanly_and_the_next_backup_succeeds() {
    let db = crate::backup::Db::with_site(Site::new(0));
    // realestate's small database: its backups take a moment each.
    let t = Instant::now();
    let root = db.site.repo.path().to_path_buf();
    let fs = Tmpfs::over(&root.join("backups"), "32m");
    let dir = root.join("backups/realestate");
    let list = || -> Vec<serde_json::Value> {
        let out = db.run_env(&["backup", "list", "realestate", "--format", "json"], &[]);
        out.assert_code(0);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["backups"].as_array().unwrap().clone()
    };
    // The lock file's text names the last holder's pid: not a backup's content.
    let backups = || {
        let mut f = files(&dir);
        f.remove(".lock");
        f
    };
    db.run_env(&["backup", "realestate"], &[]).assert_code(0);
    let before = backups();
    let archive = before
        .iter()
        .find(|(k, _)| k.ends_with(".dump.zst"))
        .map(|(_, v)| v.len() as u64)
        .expect("the first backup's archive");
    assert!(
        before.keys().any(|k| k.ends_with(".dump.zst.json")),
        "{:?}",
        before.keys()
    );
    for room in [0, archive] {
        let filler = fs.fill_leaving(room);
        let out = db.run_env(&["backup", "realestate"], &[]);
        out.assert_code(1);
        assert!(
            out.stderr.contains("No space left on device")
                && out
                    .stderr
                    .contains(&format!("{}/realestate_", dir.display())),
            "room {room}: {}",
            out.snapshot()
        );
        eprintln!(
            "room {room}: {}",
            out.stderr
                .lines()
                .filter(|l| l.contains("No space"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let now = backups();
        assert!(
            leftovers(&now).is_empty(),
            "room {room}: {:?}",
            leftovers(&now)
        );
        assert_eq!(
            now.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "room {room}: nothing half-written kept, nothing lost"
        );
        assert!(
            now == before,
            "room {room}: the older backup is byte for byte as it was"
        );
        assert_eq!(list().len(), 1);
        std::fs::remove_file(&filler).unwrap();
    }
    let old = list()[0]["path"].as_str().unwrap().to_string();
    db.run_env(&["backup", "verify", &old], &[]).assert_code(0);

    // Space is back: the next backup succeeds and verifies.
    db.run_env(&["backup", "realestate"], &[]).assert_code(0);
    let all = list();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0]["path"], old.as_str());
    db.run_env(&["backup", "verify", all[1]["path"].as_str().unwrap()], &[])
        .assert_code(0);
    let now = backups();
    assert!(leftovers(&now).is_empty(), "{:?}", leftovers(&now));
    eprintln!("badday full backup disk: {:?}", t.elapsed());
    drop(db);
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

/// A Docker Engine of the test's own on the host network (its own data root, exec root,
/// pid file, socket and default bridge; no iptables rules, so it never
/// touches what the shared engine set up), which the test may stop, kill and start
/// again. Neither `--bridge=none` nor `--default-address-pool`: a dockerd started
/// with the first, or restarted with the second, deletes the host's `docker0`, the
/// shared engine's default bridge (whose address is host.docker.internal for every
/// container). Product networks carry their own subnets. Its image store starts empty: the site's images are built `FROM scratch`.
/// Everything it ran is removed on drop.
struct PrivateEngine {
    dir: tempfile::TempDir,
}

impl PrivateEngine {
    fn start() -> Self {
        crate::compose::docker_required();
        let dir = tempfile::Builder::new()
            .prefix("berth-engine-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(dir.path().join("daemon.json"), "{}\n").unwrap();
        let e = Self { dir };
        let bridge = e.bridge();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &bridge])
            .stderr(std::process::Stdio::null())
            .status();
        for args in [
            vec!["link", "add", "name", &bridge, "type", "bridge"],
            vec!["addr", "add", &e.bridge_address(), "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            let st = std::process::Command::new("ip")
                .args(&args)
                .status()
                .unwrap();
            assert!(st.success(), "ip {args:?}");
        }
        e.launch();
        e
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Its default bridge (made by the test: at most 15 characters).
    fn bridge(&self) -> String {
        format!("bpe{}", std::process::id())
    }

    /// The default bridge's address (a /24 no product network of the tests uses).
    fn bridge_address(&self) -> String {
        format!("10.{}.255.1/24", 150 + std::process::id() % 40)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    /// Start dockerd (as docker.service would, starting it again when it exits before it
    /// answers) and wait until it answers.
    fn launch(&self) {
        let docker0 = std::path::Path::new("/sys/class/net/docker0");
        let had_docker0 = docker0.exists();
        for attempt in 1..=3 {
            if self.launch_once() {
                assert!(
                    !had_docker0 || docker0.exists(),
                    "starting the private dockerd deleted the shared engine's docker0"
                );
                return;
            }
            eprintln!(
                "the private dockerd exited while starting (attempt {attempt}), started again"
            );
        }
        panic!("the private dockerd did not start: {}", self.log_tail());
    }

    /// One start of dockerd: whether it answered (false: it exited first).
    fn launch_once(&self) -> bool {
        let d = self.dir.path().display();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("dockerd.log"))
            .unwrap();
        let mut child = std::process::Command::new("dockerd")
            .args([
                "--default-ulimit",
                "nofile=1024:1024",
                "--default-ulimit",
                "nproc=1024:1024",
                "--iptables=false",
                "--bridge",
                &self.bridge(),
            ])
            .args(["--data-root", &format!("{d}/data")])
            .args(["--exec-root", &format!("{d}/exec")])
            .args(["--pidfile", &format!("{d}/dockerd.pid")])
            .args(["--config-file", &format!("{d}/daemon.json")])
            .args(["-H", &self.host()])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let exited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = exited.clone();
        // Reaped here, so a killed dockerd leaves no zombie holding its pid file.
        std::thread::spawn(move || {
            let _ = child.wait();
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let until = Instant::now() + Duration::from_secs(90);
        while !self.answers() {
            if exited.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            assert!(
                Instant::now() < until,
                "the private dockerd did not answer: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    fn answers(&self) -> bool {
        self.docker_cmd()
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("[core]")).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn docker_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new("docker");
        c.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", crate::support::docker_config())
            .env_remove("DOCKER_CONTEXT")
            .stdin(std::process::Stdio::null());
        c
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = self.docker_cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn dockerd_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.path("dockerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// The engine's processes: dockerd, its containerd, the shims (found by the
    /// containerd socket in their command line) and everything under them (docker-proxy,
    /// the containers' processes).
    fn processes(&self) -> Vec<u32> {
        let sock = self.path("exec/containerd/containerd.sock");
        let sock = sock.to_string_lossy();
        let mut parent = std::collections::HashMap::new();
        let mut roots: Vec<u32> = self.dockerd_pid().into_iter().collect();
        let containerd = self.path("exec/containerd/containerd.pid");
        roots.extend(
            std::fs::read_to_string(containerd)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok()),
        );
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok())
            {
                parent.insert(pid, ppid);
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*sock)
                && String::from_utf8_lossy(&cmdline).starts_with("/usr/bin/containerd-shim")
            {
                roots.push(pid);
            }
        }
        roots.retain(|p| parent.contains_key(p));
        let mut all = roots.clone();
        let mut i = 0;
        while i < all.len() {
            let p = all[i];
            for (child, pp) in &parent {
                if *pp == p && !all.contains(child) {
                    all.push(*child);
                }
            }
            i += 1;
        }
        all.retain(|p| !is_zombie(*p));
        all
    }

    /// dockerd goes away: SIGTERM (it stops the containers first) or SIGKILL (dockerd
    /// alone; its containerd dies with it, the shims and the containers live on);
    /// returns once it is gone.
    fn stop(&self, signal: &str) {
        let pid = self.dockerd_pid().expect("dockerd runs");
        let _ = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(60);
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(Instant::now() < until, "dockerd {pid} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.forget_dead_containerd();
    }

    /// A killed containerd lingers as a zombie until this machine's PID 1 reaps it (a
    /// while here; at once under systemd), and dockerd takes a zombie's pid for a live
    /// containerd, waits for it and gives up: remove the pid file of a dead one.
    fn forget_dead_containerd(&self) {
        let file = self.path("exec/containerd/containerd.pid");
        let Some(pid) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return;
        };
        let until = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(Instant::now() < until, "containerd {pid} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&file);
    }

    /// kill -9 of every process of the engine at once (a machine losing power).
    fn kill_everything(&self) -> usize {
        let pids = self.processes();
        kill9(&pids);
        let until = Instant::now() + Duration::from_secs(20);
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
        {
            assert!(Instant::now() < until, "the engine's processes did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.forget_dead_containerd();
        pids.len()
    }

    /// Every container on the engine: (name, compose project, berth.product, berth.slot,
    /// berth.version, one-off, state).
    fn containers(&self) -> Vec<[String; 7]> {
        self.docker(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}}\t{{.Label \"com.docker.compose.project\"}}\t{{.Label \"berth.product\"}}\t{{.Label \"berth.slot\"}}\t{{.Label \"berth.version\"}}\t{{.Label \"com.docker.compose.oneoff\"}}\t{{.State}}",
        ])
        .lines()
        .map(|l| {
            let f: Vec<String> = l.split('\t').map(str::to_string).collect();
            std::array::from_fn(|i| f.get(i).cloned().unwrap_or_default())
        })
        .collect()
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if self.answers() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self.docker_cmd().args(["rm", "-f"]).args(&ids).output();
            }
            let _ = self.docker_cmd().args(["network", "prune", "-f"]).output();
            if self.dockerd_pid().is_some() {
                self.stop("-TERM");
            }
        }
        kill9(&self.processes());
        // What a killed engine left mounted under its directories.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.dir.path().to_string_lossy().into_owned();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = std::process::Command::new("umount")
                .args(["-l", p])
                .status();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .status();
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

fn kill9(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg("-9")
        .args(pids.iter().map(u32::to_string))
        .stderr(std::process::Stdio::null())
        .status();
}

/// Every container on the engine belongs to a slot of the site: a product's compose
/// project `<project>-<product>-<slot>` with that slot's label, no one-off (a migration
/// or `berth run`) left over; each product's live version runs in one slot, every
/// service of it (waiting while they come back with the engine). Returns each
/// product's live slot and the containers outside them (leftovers in an idle slot,
/// which the next deploy stops first).
fn accounted_for(
    engine: &PrivateEngine,
    project: &str,
    live: &[(&str, &str)],
) -> (std::collections::HashMap<String, String>, Vec<String>) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut idle = Vec::new();
        let mut waiting = Vec::new();
        let mut slots: std::collections::HashMap<String, Vec<(String, String)>> =
            Default::default();
        for [name, compose, product, slot, version, oneoff, state] in engine.containers() {
            assert!(
                compose == format!("{project}-{product}-{slot}") && !slot.is_empty(),
                "container {name} ({compose}, {product}, {slot}) belongs to no slot"
            );
            assert!(
                oneoff != "True",
                "one-off container {name} ({state}) left behind"
            );
            if live.contains(&(product.as_str(), version.as_str())) {
                if state != "running" {
                    waiting.push(format!("{name} {state}"));
                }
                slots.entry(product).or_default().push((slot, name));
            } else {
                idle.push(format!("{name} {version} {state}"));
            }
        }
        let mut live_slots = std::collections::HashMap::new();
        for (product, _) in live {
            let mine = slots.get(*product).cloned().unwrap_or_default();
            assert_eq!(
                mine.len(),
                2,
                "{product}'s two services run its live version: {mine:?}"
            );
            assert_eq!(
                mine[0].0, mine[1].0,
                "{product}'s live version runs in one slot: {mine:?}"
            );
            live_slots.insert(product.to_string(), mine[0].0.clone());
        }
        if waiting.is_empty() {
            return (live_slots, idle);
        }
        assert!(
            Instant::now() < until,
            "the live slots' containers do not run: {waiting:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The live (slot, version) of each product's server as `berth status` says.
fn live_all(
    site: &Site,
    env: &[(&str, &str)],
) -> std::collections::HashMap<String, (String, String)> {
    let out = site.berth_env(&["status", "--format", "json"], env);
    out.assert_code(0);
    let st: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    st["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["service"] == "server")
        .map(|r| {
            (
                r["product"].as_str().unwrap().to_string(),
                (
                    r["slot"].as_str().unwrap_or("-").to_string(),
                    r["version"].as_str().unwrap_or("-").to_string(),
                ),
            )
        })
        .collect()
}

/// Poll (20 ms) until `product` answers through nginx with `version`.
fn wait_serving(site: &Site, host: &str, version: &str, secs: u64, what: &str) -> Duration {
    let t = Instant::now();
    while site.get(host, "/api/health") != (200, version.to_string()) {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what}: {host} does not answer {version}: {:?}",
            site.get(host, "/api/health")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

/// The Docker Engine restarts in the middle of a compose deploy, after each of its steps
/// in turn (SIGTERM and start again; once, after the new slot started, kill -9 of dockerd
/// alone and start again), the deploy going on while the engine is away: the deploy fails
/// (exit 1, saying the engine is unreachable) with the old version serving once the
/// engine is back, or completes with the new one; every container belongs to a slot
/// (none a one-off left over); the next deploy converges, leaving exactly the live slot.
/// The rendered compose files restart the containers with the engine
/// (`restart: always`: `unless-stopped` leaves them stopped after an engine that was
/// killed starts again); no `live-restore` is assumed.
///
/// Then a reboot of the whole site (item 2 of the bad day on compose): every process
/// dies at once (kill -9 of dockerd, containerd, the shims and containers, nginx and
/// `berth serve`); the engine starts again as docker.service would, then the rendered
/// boot unit's ExecStart and serve unit's: every product answers on its live slot with
/// its live version.
#[test]
fn the_docker_engine_restarting_mid_deploy_and_a_reboot_on_compose() {
    let t = Instant::now();
    let engine = PrivateEngine::start();
    let site = Site::compose(0);
    let root = site.repo.path().to_path_buf();
    let project = site.compose.clone().unwrap();
    let host = engine.host();
    let env = [("DOCKER_HOST", host.as_str())];
    for product in ["bestays", "realestate"] {
        let yml = std::fs::read_to_string(root.join(format!("deploy/dev/compose/{product}.yml")))
            .unwrap();
        assert_eq!(
            yml.matches("    restart: always\n").count(),
            2,
            "each service comes back with the engine:\n{yml}"
        );
    }
    site.berth_env(&["deploy", "realestate", "--yes"], &env)
        .assert_code(0);
    let v_realestate = site.head_version();
    site.berth_env(&["deploy", "bestays", "--yes"], &env)
        .assert_code(0);
    let mut live = site.head_version();
    // The plan of a deploy with a live slot numbers the steps.
    site.change("bestays", 1);
    let plan = site.berth_env(&["deploy", "bestays", "--dry-run"], &env);
    plan.assert_code(0);
    let steps: Vec<String> = plan
        .stderr
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.trim_start().split_once(". ")?;
            n.parse::<usize>().ok()?;
            Some(rest.to_string())
        })
        .collect();
    let total = steps.len();
    let started_at = 1 + steps
        .iter()
        .position(|s| s.starts_with("start the "))
        .unwrap_or_else(|| panic!("no start step in {steps:?}"));
    assert!(total >= 6, "{steps:?}");
    eprintln!(
        "badday engine: setup {:?}, {total} steps: {steps:?}",
        t.elapsed()
    );

    for n in 1..=total {
        let round = Instant::now();
        site.change("bestays", 10 + n as u32);
        let version = site.head_version();
        let gate = root.join(format!(".gate-{n}"));
        let mut child = crate::support::berth(&root)
            .args(["deploy", "bestays", "--yes"])
            .env("DOCKER_HOST", &host)
            .env("BERTH_OPERATOR", "test-operator")
            .env("BERTH_DEBUG_PAUSE_AFTER_STEP", n.to_string())
            .env("BERTH_DEBUG_RESUME_FILE", &gate)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = {
            let err = err.clone();
            let mut pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                use std::io::Read;
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
        let until = Instant::now() + Duration::from_secs(120);
        while !err.lock().unwrap().contains(&paused) {
            assert!(
                Instant::now() < until,
                "the deploy did not pause after step {n}:\n{}",
                err.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let to_pause = round.elapsed();
        // The engine restarts; the deploy goes on meanwhile.
        let signal = if n == started_at { "-KILL" } else { "-TERM" };
        let down = Instant::now();
        engine.stop(signal);
        std::fs::write(&gate, "").unwrap();
        let stopped = down.elapsed();
        engine.launch();
        let restarted = down.elapsed();
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let ended = down.elapsed();
        let err = err.lock().unwrap().clone();
        let code = status.code().unwrap_or(-1);
        if code == 0 {
            live = version.clone();
        } else {
            assert_eq!(code, 1, "step {n}: a failed deploy exits 1\n{err}");
            assert!(
                err.contains("failed at step") && err.contains("docker"),
                "step {n}: the failure says which step and that docker failed\n{err}"
            );
        }
        let took = wait_serving(
            &site,
            "bestays.app",
            &live,
            90,
            &format!("step {n} ({signal}, exit {code})\n{err}"),
        );
        wait_serving(&site, "realestate.app", &v_realestate, 90, "realestate");
        let (_, idle) = accounted_for(
            &engine,
            &project,
            &[("bestays", &live), ("realestate", &v_realestate)],
        );
        eprintln!(
            "badday engine: step {n} ({}) {signal}: exit {code}; paused {to_pause:?}, engine down {stopped:?}, up {restarted:?}, deploy ended {ended:?}, serving {took:?} later; idle leftovers {idle:?}; round {:?}{}",
            steps[n - 1],
            round.elapsed(),
            err.lines()
                .filter(|l| l.contains("failed at step") || l.contains("Cannot connect"))
                .map(|l| format!("\n    {l}"))
                .collect::<String>()
        );
    }
    // The next deploy converges: exactly the live slots run.
    site.change("bestays", 99);
    site.berth_env(&["deploy", "bestays", "--yes"], &env)
        .assert_code(0);
    let v_bestays = site.head_version();
    wait_serving(
        &site,
        "bestays.app",
        &v_bestays,
        30,
        "after the last deploy",
    );
    let before = live_all(&site, &env);
    let (slots, idle) = accounted_for(
        &engine,
        &project,
        &[("bestays", &v_bestays), ("realestate", &v_realestate)],
    );
    assert!(idle.is_empty(), "only the live slots run: {idle:?}");
    let (b_slot, re_slot) = (slots["bestays"].clone(), slots["realestate"].clone());
    assert_eq!(before["bestays"], (b_slot.clone(), v_bestays.clone()));
    assert_eq!(
        before["realestate"],
        (re_slot.clone(), v_realestate.clone())
    );
    assert_eq!(engine.containers().len(), 4, "{:?}", engine.containers());
    eprintln!("badday engine restarts: {:?}", t.elapsed());

    // The reboot. The units berth renders for compose start after docker.service.
    let t = Instant::now();
    site.berth_env(&["render", "--env", "prod"], &env)
        .assert_code(0);
    let unit =
        std::fs::read_to_string(root.join("deploy/prod/systemd/berth-boot.service")).unwrap();
    assert!(
        unit.contains("After=network-online.target docker.service"),
        "{unit}"
    );
    let exec = |name: &str| -> Vec<String> {
        let unit = std::fs::read_to_string(root.join("deploy/prod/systemd").join(name)).unwrap();
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/berth "))
            .unwrap_or_else(|| panic!("{name}: {unit}"))
            .to_string();
        line.split_whitespace().map(str::to_string).collect()
    };
    let boot_args = exec("berth-boot.service");
    let serve_args = exec("berth-serve.service");
    assert_eq!(boot_args, ["boot"]);
    assert_eq!(serve_args, ["serve"]);
    let serve_args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
    let serve = crate::serve::Serve::start(&root, &serve_args[1..], &env);
    let serve_pid = serve.pid();
    let mut pids = engine.processes();
    pids.extend(nginx_pids(&root));
    pids.push(serve_pid);
    let killed = pids.len();
    kill9(&pids);
    engine.kill_everything();
    let until = Instant::now() + Duration::from_secs(20);
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
    {
        assert!(Instant::now() < until, "the site's processes did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(serve);
    assert_eq!(
        site.get("bestays.app", "/api/health").0,
        0,
        "the site is down"
    );

    let boot = Instant::now();
    engine.launch();
    let engine_up = boot.elapsed();
    let args: Vec<&str> = boot_args.iter().map(String::as_str).collect();
    let out = site.berth_env(&args, &env);
    out.assert_code(0);
    let booted = boot.elapsed();
    let serving_b = wait_serving(&site, "bestays.app", &v_bestays, 60, "after the reboot");
    wait_serving(
        &site,
        "realestate.app",
        &v_realestate,
        60,
        "after the reboot",
    );
    let all = boot.elapsed();
    let serve = crate::serve::Serve::start(&root, &serve_args[1..], &env);
    let v = serve.json("/api/products/bestays");
    assert!(v.to_string().contains(&v_bestays), "{v}");
    eprintln!(
        "badday compose reboot: {killed} processes killed; engine answering {engine_up:?}, `berth boot` done {booted:?}, every product answering {all:?} after the engine started (bestays {serving_b:?} after boot)\n{}",
        out.stdout
    );
    let after = live_all(&site, &env);
    assert_eq!(after["bestays"], (b_slot.clone(), v_bestays.clone()));
    assert_eq!(after["realestate"], (re_slot.clone(), v_realestate.clone()));
    let (slots, idle) = accounted_for(
        &engine,
        &project,
        &[("bestays", &v_bestays), ("realestate", &v_realestate)],
    );
    assert!(idle.is_empty(), "{idle:?}");
    assert_eq!(
        (&slots["bestays"], &slots["realestate"]),
        (&b_slot, &re_slot)
    );
    eprintln!("badday compose reboot: {:?}", t.elapsed());
    drop(serve);
    drop(site);
    drop(engine);
}
