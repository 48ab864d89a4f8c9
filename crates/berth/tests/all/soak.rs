//! A bad day, part B: a long run of deploys and rollbacks. bestays alternates
//! deploy (a new commit) and rollback; after every fifth of its operations,
//! realestate gets one (deploy or rollback, alternating too); both under continuous
//! load through nginx, with `berth serve` watching. Afterwards: no failed request,
//! nothing left that berth does not account for, the audit and the tags count
//! exactly what ran, `berth serve`'s memory flat, and the wall time per operation
//! printed over the run (does it grow?).
//!
//! CI runs `BERTH_SOAK_BESTAYS` (default 20) operations of bestays and a fifth as
//! many of realestate; `bench/run.sh soak` runs 100 + 20 and records the table
//! (`BERTH_SOAK_TABLE=<file>` writes it there as markdown).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_testkit::load::{LoadConfig, Report};

use crate::deploy::{ROUTES, Site};
use crate::serve::Serve;

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// Every process whose working directory is under `root`.
fn processes_under(root: &Path) -> BTreeSet<u32> {
    let root = std::fs::canonicalize(root).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&root))
        })
        .collect()
}

/// The process group of `pid` (berth starts each service as a group leader).
fn pgrp(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// `leader` and every process in its group.
fn group(leader: u32) -> BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| *p == leader || pgrp(*p) == Some(leader))
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The TCP ports `pid` listens on.
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let l = std::fs::read_link(e.path()).ok()?;
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A: LISTEN), inode
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// Files under `dir` (recursively, not into `skip`) whose name says temporary.
fn temp_files(dir: &Path, skip: &[&Path], out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if skip.iter().any(|s| p.starts_with(s)) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp")
            || name.ends_with(".partial")
            || name.starts_with(".berth-")
            || name.ends_with('~')
        {
            out.push(p.display().to_string());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            temp_files(&p, skip, out);
        }
    }
}

/// The live instances' pid files of `product`: (slot, pid) of each.
fn pid_files(root: &Path, product: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for slot in ["blue", "green"] {
        let dir = root.join(".berth/run").join(product).join(slot);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
                out.push((slot.to_string(), v["pid"].as_u64().unwrap() as u32));
            }
        }
    }
    out
}

#[test]
fn a_hundred_deploys_and_rollbacks_under_load_leave_nothing_behind() {
    let bestays_ops: usize = std::env::var("BERTH_SOAK_BESTAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let realestate_every = 5;
    let started = Instant::now();
    let site = Site::new(200);
    let root = site.repo.path().to_path_buf();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    site.berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    let serve = Serve::start(&root, &["--refresh", "200ms"], &[]);
    let serve_pid = serve.pid();
    let load_for = |host: &str| {
        LoadConfig::new(site.http_port, host)
            .paths(ROUTES)
            .max_duration(Duration::from_secs(3 * 3600))
            .start()
    };
    let loads = [load_for("bestays.app"), load_for("realestate.app")];
    for l in &loads {
        l.wait_for_answers(20);
    }
    // Serve's memory once it has read what is there and answered a while.
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss_kib(serve_pid);

    // (operation number, product, kind, wall time)
    let mut times: Vec<(usize, &str, &str, Duration)> = Vec::new();
    let mut ran = std::collections::BTreeMap::<&str, usize>::new();
    let mut change = 1000;
    let mut realestate_ops = 0;
    for i in 0..bestays_ops {
        let mut turn = vec![("bestays", i)];
        if i % realestate_every == realestate_every - 1 {
            turn.push(("realestate", realestate_ops));
            realestate_ops += 1;
        }
        for (product, n) in turn {
            let kind = if n % 2 == 0 { "deploy" } else { "rollback" };
            if kind == "deploy" {
                change += 1;
                site.change(product, change);
            }
            let t = Instant::now();
            let out = site.berth(&[kind, product, "--yes"]);
            out.assert_code(0);
            times.push((times.len() + 1, product, kind, t.elapsed()));
            *ran.entry(product).or_default() += 1;
        }
    }
    for l in &loads {
        l.wait_for_answers(20);
    }
    let rss_after = rss_kib(serve_pid);
    let reports: Vec<Report> = loads.into_iter().map(|l| l.finish()).collect();

    // The wall time of each operation over the run, by tenths.
    let mut table = String::from(
        "| operations | bestays deploys s (mean) | bestays rollbacks s (mean) | realestate s (mean) | slowest s |\n|---|---:|---:|---:|---:|\n",
    );
    let tenth = times.len().div_ceil(10).max(1);
    let mean = |v: &[&(usize, &str, &str, Duration)], p: &str, k: Option<&str>| -> String {
        let d: Vec<f64> = v
            .iter()
            .filter(|t| t.1 == p && k.is_none_or(|k| t.2 == k))
            .map(|t| t.3.as_secs_f64())
            .collect();
        if d.is_empty() {
            "-".into()
        } else {
            format!("{:.2}", d.iter().sum::<f64>() / d.len() as f64)
        }
    };
    for chunk in times.chunks(tenth) {
        let v: Vec<_> = chunk.iter().collect();
        let slowest = v.iter().map(|t| t.3.as_secs_f64()).fold(0.0, f64::max);
        table.push_str(&format!(
            "| {}-{} | {} | {} | {} | {slowest:.2} |\n",
            chunk[0].0,
            chunk[chunk.len() - 1].0,
            mean(&v, "bestays", Some("deploy")),
            mean(&v, "bestays", Some("rollback")),
            mean(&v, "realestate", None),
        ));
    }
    let requests: usize = reports.iter().map(|r| r.requests()).sum();
    let failed: usize = reports.iter().map(|r| r.failures().len()).sum();
    let summary = format!(
        "{} operations ({} of bestays, {} of realestate) in {:.1} s; {requests} requests through nginx, {failed} failed; \
         berth serve VmRSS {rss_before} KiB before, {rss_after} KiB after",
        times.len(),
        ran["bestays"],
        ran.get("realestate").copied().unwrap_or(0),
        started.elapsed().as_secs_f64(),
    );
    eprintln!("soak: {summary}\n{table}");
    if let Ok(path) = std::env::var("BERTH_SOAK_TABLE") {
        std::fs::write(path, format!("{summary}\n\n{table}")).unwrap();
    }

    // 0 failed requests, on every route of both products.
    for r in &reports {
        r.assert_clean(100).assert_covered();
    }
    // The time per operation does not grow: the second half's mean within 1.5x the
    // first half's (+1 s for a loaded machine).
    let half = times.len() / 2;
    let mean_of = |v: &[(usize, &str, &str, Duration)]| {
        v.iter().map(|t| t.3.as_secs_f64()).sum::<f64>() / v.len().max(1) as f64
    };
    let (first, last) = (mean_of(&times[..half]), mean_of(&times[half..]));
    assert!(
        last <= 1.5 * first + 1.0,
        "operations got slower over the run: {first:.2} s -> {last:.2} s\n{table}"
    );
    // serve's memory is flat: at most 8 MiB more after the run.
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "berth serve grew from {rss_before} KiB to {rss_after} KiB"
    );

    // Processes: the live slot's of each product (one per service), nginx, serve.
    let mut accounted: BTreeSet<u32> = BTreeSet::new();
    for product in ["bestays", "realestate"] {
        let live = pid_files(&root, product);
        assert_eq!(
            live.len(),
            2,
            "{product}: one pid file per service: {live:?}"
        );
        assert!(
            live.iter().all(|(slot, _)| *slot == live[0].0),
            "{product}: pid files in both slots: {live:?}"
        );
        for (_, pid) in &live {
            assert!(
                Path::new(&format!("/proc/{pid}")).exists(),
                "{product}: pid {pid} of a pid file is not running"
            );
            let members = group(*pid);
            let ports: BTreeSet<u16> = members.iter().flat_map(|p| listening_ports(*p)).collect();
            assert_eq!(
                ports.len(),
                1,
                "{product}: pid {pid} and its group {members:?}: {ports:?}"
            );
            accounted.extend(members);
        }
    }
    let mut stray = Vec::new();
    for pid in processes_under(&root) {
        let c = comm(pid);
        if accounted.contains(&pid) || pid == serve_pid || c == "nginx" {
            continue;
        }
        stray.push(format!("{pid} {c}"));
    }
    assert!(
        stray.is_empty(),
        "processes berth does not account for: {stray:?}"
    );
    // Ports: nginx listens on its HTTP port only, serve on its own.
    for pid in processes_under(&root) {
        if comm(pid) == "nginx" {
            let ports = listening_ports(pid);
            assert!(
                ports.is_subset(&BTreeSet::from([site.http_port])),
                "nginx {pid} listens on {ports:?}"
            );
        }
    }
    assert_eq!(
        listening_ports(serve_pid),
        BTreeSet::from([serve.port]),
        "berth serve's ports"
    );

    // Checkouts ("images" of the local runtime): at most `[deploy] keep` (5) per
    // product, each with its ready mark, nothing else; no git worktree.
    for product in ["bestays", "realestate"] {
        let dir = root.join(".berth/versions").join(product);
        let mut dirs = BTreeSet::new();
        let mut ready = BTreeSet::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match name.strip_suffix(".ready") {
                Some(v) => ready.insert(v.to_string()),
                None => dirs.insert(name),
            };
        }
        assert!(
            dirs.len() <= 5,
            "{product}: {} checkouts kept: {dirs:?}",
            dirs.len()
        );
        assert_eq!(dirs, ready, "{product}: checkouts and ready marks");
    }
    let worktrees = site.repo.git(&["worktree", "list", "--porcelain"]);
    assert_eq!(
        worktrees
            .lines()
            .filter(|l| l.starts_with("worktree "))
            .count(),
        1,
        "{worktrees}"
    );
    // Log files: one per service and slot at most.
    for product in ["bestays", "realestate"] {
        for slot in ["blue", "green"] {
            let dir = root.join(".berth/run").join(product).join(slot);
            let logs = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .count();
            assert!(logs <= 2, "{product}/{slot}: {logs} log files");
        }
    }
    // Temporary files: none left in the project (checkouts and .git aside).
    let mut tmp = Vec::new();
    temp_files(
        &root,
        &[&root.join(".git"), &root.join(".berth/versions")],
        &mut tmp,
    );
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");

    // The audit and the tags count exactly what ran (plus the first deploy of each).
    let audit = std::fs::read_to_string(root.join(".berth/audit.jsonl")).unwrap();
    for product in ["bestays", "realestate"] {
        let want = ran.get(product).copied().unwrap_or(0) + 1;
        let deploys = audit
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["product"] == product && v["step"] == "deploy")
            .collect::<Vec<_>>();
        assert_eq!(deploys.len(), want, "{product}: deploy records");
        assert!(deploys.iter().all(|v| v["result"] == "ok"), "{product}");
        let tags = site
            .repo
            .git(&["tag", "-l", &format!("{product}-deploy-*")]);
        assert_eq!(tags.lines().count(), want, "{product}: tags\n{tags}");
    }
    eprintln!(
        "soak: the test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
