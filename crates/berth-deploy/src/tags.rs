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

/// Deploy records of `product`, newest first.
pub fn history(repo: &Repo, product: &str) -> Result<Vec<DeployRecord>, GitError> {
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
}
