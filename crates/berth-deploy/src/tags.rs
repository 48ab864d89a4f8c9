//! Deploy tags: annotated `<product>-deploy-YYYYMMDD-HHMMSS` tags whose message
//! carries trailers. The deploy history is these tags; nothing else is kept.

use serde::Serialize;

use berth_git::{GitError, Repo};

/// One deploy, read back from its tag.
#[derive(Debug, Clone, Serialize)]
pub struct DeployRecord {
    pub tag: String,
    pub commit: String,
    pub date: String,
    pub product: String,
    pub version: String,
    pub tasks: Vec<String>,
    pub previous: Option<String>,
    pub duration: Option<String>,
    pub operator: Option<String>,
    pub rollback_of: Option<String>,
    /// Where the version's tasks ran at the switch, each after passing the health
    /// gate (runtimes that spread over machines: swarm); empty elsewhere.
    pub nodes: Vec<TaskNode>,
}

/// A task of a deploy and the node it ran on (a tag's `Nodes: service@node` trailer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskNode {
    pub service: String,
    pub node: String,
}

impl TaskNode {
    /// `service@node` as the trailer writes it.
    pub fn parse(s: &str) -> Option<Self> {
        let (service, node) = s.split_once('@')?;
        (!service.is_empty() && !node.is_empty()).then(|| Self {
            service: service.to_string(),
            node: node.to_string(),
        })
    }
}

impl std::fmt::Display for TaskNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.service, self.node)
    }
}

/// UTC `YYYYMMDD-HHMMSS` and RFC 3339 for a Unix time.
pub fn utc_stamp(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    (
        format!("{y:04}{mo:02}{d:02}-{h:02}{m:02}{s:02}"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z"),
    )
}

/// What the tag refs of a repository looked like: the `refs/tags` directory's and
/// `packed-refs`' change times (and sizes, inodes). A tag written, moved, deleted or
/// packed changes one of them; the deploy tags of a product are read again then.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefsStamp(Vec<Option<(std::time::SystemTime, u64, u64)>>);

/// The stamp of `repo`'s tag refs, or `None` where it cannot be trusted (refs in a
/// reftable, a `.git` file that names no directory, times too coarse to tell a change
/// in the same second from none).
fn refs_stamp(repo: &Repo) -> Option<RefsStamp> {
    use std::os::unix::fs::MetadataExt;
    let dot = repo.dir().join(".git");
    let git_dir = if dot.is_dir() {
        dot
    } else {
        let text = std::fs::read_to_string(&dot).ok()?;
        let d = std::path::PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
        if d.is_absolute() {
            d
        } else {
            repo.dir().join(d)
        }
    };
    // A linked worktree keeps its refs in the common directory.
    let common = match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(c) => git_dir.join(c.trim()),
        Err(_) => git_dir,
    };
    if common.join("reftable").exists() {
        return None;
    }
    let now = std::time::SystemTime::now();
    let mut parts = Vec::new();
    for path in [common.join("refs/tags"), common.join("packed-refs")] {
        match std::fs::metadata(&path) {
            Ok(md) => {
                let t = md.modified().ok()?;
                // Whole-second times (coarse file systems): only a change over a second
                // ago can be told from a later one.
                if md.mtime_nsec() == 0 && now.duration_since(t).ok()?.as_secs() < 2 {
                    return None;
                }
                parts.push(Some((t, md.size(), md.ino())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => parts.push(None),
            Err(_) => return None,
        }
    }
    Some(RefsStamp(parts))
}

/// Deploy records read in this process, by repository and product, with the stamp of
/// the refs they were read under (a rollback reads them five times before its switch;
/// each read is a git process).
#[allow(clippy::type_complexity)]
static READ: std::sync::Mutex<Vec<(std::path::PathBuf, String, RefsStamp, Vec<DeployRecord>)>> =
    std::sync::Mutex::new(Vec::new());

/// Deploy records of `product`, newest first. Read again from git unless this process
/// read them under the same tag refs (a file stat of `refs/tags` and `packed-refs`).
pub fn history(repo: &Repo, product: &str) -> Result<Vec<DeployRecord>, GitError> {
    let stamp = refs_stamp(repo);
    if let Some(st) = &stamp
        && let Ok(read) = READ.lock()
        && let Some((.., records)) = read
            .iter()
            .find(|(d, p, s, _)| d == repo.dir() && p == product && s == st)
    {
        return Ok(records.clone());
    }
    let records = read_history(repo, product)?;
    // Stamped before the read: a tag written during it is seen by the next call.
    if let Some(st) = stamp
        && let Ok(mut read) = READ.lock()
    {
        read.retain(|(d, p, ..)| !(d == repo.dir() && p == product));
        read.push((
            repo.dir().to_path_buf(),
            product.to_string(),
            st,
            records.clone(),
        ));
    }
    Ok(records)
}

fn read_history(repo: &Repo, product: &str) -> Result<Vec<DeployRecord>, GitError> {
    let out = repo
        .git("read the deploy tags")
        .args([
            "for-each-ref",
            "--sort=-refname",
            "--format=%(refname:short)%00%(*objectname)%(objectname)%00%(creatordate:iso-strict)%00%(contents)%00%00",
        ])
        .arg(format!("refs/tags/{product}-deploy-*"))
        .output()?;
    let text = out.stdout_str();
    let mut records = Vec::new();
    for rec in text.split("\0\0\n").filter(|r| !r.trim().is_empty()) {
        let f: Vec<&str> = rec.split('\0').collect();
        if f.len() < 4 {
            continue;
        }
        // %(*objectname) (the commit) comes first for annotated tags; 40 hex chars either way.
        let commit = f[1].get(..40).unwrap_or(f[1]).to_string();
        let msg = berth_git::message::Message::parse(f[3]);
        let one = |k: &str| msg.trailer_values(k).into_iter().next();
        records.push(DeployRecord {
            tag: f[0].trim().to_string(),
            commit,
            date: f[2].to_string(),
            product: one("Product").unwrap_or_else(|| product.to_string()),
            version: one("Version").unwrap_or_default(),
            tasks: msg
                .trailer_values("Tasks")
                .into_iter()
                .filter(|t| t != "none")
                .collect(),
            previous: one("Previous").filter(|p| p != "none"),
            duration: one("Duration"),
            operator: one("Operator"),
            rollback_of: one("Rollback-Of"),
            nodes: msg
                .trailer_values("Nodes")
                .iter()
                .filter_map(|n| TaskNode::parse(n))
                .collect(),
        });
    }
    // Newest first by stamp, then by the number of deploys in that second
    // (`-10` after `-9`, which a sort by name alone gets wrong).
    records.sort_by_cached_key(|r| std::cmp::Reverse(order_key(&r.tag, product)));
    Ok(records)
}

/// `<product>-deploy-<stamp>[-<n>]` as (stamp, n); the first deploy of a second is n = 1.
pub(crate) fn order_key(tag: &str, product: &str) -> (String, u64) {
    let rest = tag
        .strip_prefix(product)
        .and_then(|r| r.strip_prefix("-deploy-"))
        .unwrap_or(tag);
    // The stamp is `YYYYMMDD-HHMMSS` (15 characters); a suffix follows a dash.
    let (stamp, n) = match rest.get(15..).and_then(|s| s.strip_prefix('-')) {
        Some(n) => (&rest[..15], n.parse().unwrap_or(0)),
        None => (rest, 1),
    };
    (stamp.to_string(), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten deploys in one second: the tenth (`-10`) is newer than the ninth (`-9`).
    #[test]
    fn deploys_in_one_second_order_by_their_number() {
        let repo = berth_testkit::GitRepo::new();
        let commit = repo.commit_all("one");
        let base = "bestays-deploy-20260101-000000";
        let mut names = vec![base.to_string()];
        names.extend((2..=11).map(|n| format!("{base}-{n}")));
        for name in &names {
            repo.git(&["tag", "-a", name, "-m", "Version: x\n", &commit]);
        }
        repo.git(&[
            "tag",
            "-a",
            "bestays-deploy-20251231-235959",
            "-m",
            "x",
            &commit,
        ]);
        let r = Repo::open(repo.path()).unwrap();
        let got: Vec<String> = history(&r, "bestays")
            .unwrap()
            .into_iter()
            .map(|d| d.tag)
            .collect();
        let mut want: Vec<String> = names.iter().rev().cloned().collect();
        want.push("bestays-deploy-20251231-235959".into());
        assert_eq!(got, want);
    }

    /// The records kept from an earlier read are never stale: a tag written, moved,
    /// deleted or packed by another git process since is seen by the next read.
    #[test]
    fn history_sees_every_change_of_the_tags_since_the_last_read() {
        let repo = berth_testkit::GitRepo::new();
        let one = repo.commit_all("one");
        let r = Repo::open(repo.path()).unwrap();
        let tags = |what: &str| -> Vec<(String, String)> {
            let got: Vec<(String, String)> = history(&r, "bestays")
                .unwrap()
                .into_iter()
                .map(|d| (d.tag, d.version))
                .collect();
            // What git itself says, for comparison.
            let fresh: Vec<(String, String)> = read_history(&r, "bestays")
                .unwrap()
                .into_iter()
                .map(|d| (d.tag, d.version))
                .collect();
            assert_eq!(got, fresh, "{what}");
            got
        };
        assert!(tags("no tags").is_empty());
        let a = "bestays-deploy-20260101-000000";
        let b = "bestays-deploy-20260101-000001";
        repo.git(&["tag", "-a", a, "-m", "x\n\nVersion: v1\n", &one]);
        assert_eq!(tags("one tag").len(), 1);
        assert_eq!(tags("read twice").len(), 1);
        assert!(
            refs_stamp(&r).is_some(),
            "a plain repository's tag refs can be stamped: the second read kept the first's"
        );
        repo.git(&["tag", "-a", b, "-m", "x\n\nVersion: v2\n", &one]);
        assert_eq!(tags("a second tag").len(), 2);
        repo.git(&["tag", "-f", "-a", b, "-m", "x\n\nVersion: v3\n", &one]);
        assert_eq!(tags("a tag moved")[0].1, "v3");
        repo.git(&["pack-refs", "--all"]);
        assert_eq!(tags("packed").len(), 2);
        repo.git(&["tag", "-d", a]);
        assert_eq!(tags("a packed tag deleted").len(), 1);
        repo.git(&["tag", "-d", b]);
        assert!(tags("all deleted").is_empty());
    }
}
