//! `berth affected`: which products a range of commits touches, and why.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::attribution::{Attribution, Attributor, Evidence, FastHash, Finding};
use crate::history::CommitRef;
use crate::{GitError, Repo};

/// What to compare against.
#[derive(Debug, Clone)]
pub enum Since {
    /// `base...head`: commits on head since its merge base with base.
    Range { base: String, head: String },
    /// Per product, commits on head since the product's latest deploy tag.
    Deploy { head: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct CommitExplain {
    pub id: String,
    pub short: String,
    pub subject: String,
    pub rules: Vec<Evidence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductAffected {
    pub product: String,
    pub affected: bool,
    /// The deploy tag or base this product was compared from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub never_deployed: bool,
    /// How many commits affected it.
    pub commit_count: usize,
    /// The commits and the rules that matched (with `explain`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<CommitExplain>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommitFinding {
    pub commit: String,
    pub subject: String,
    #[serde(flatten)]
    pub finding: Finding,
}

#[derive(Debug, Clone, Serialize)]
pub struct Affected {
    pub head: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_base: Option<String>,
    /// Commits read.
    pub commits: usize,
    /// The affected products, in manifest order.
    pub affected: Vec<String>,
    pub products: Vec<ProductAffected>,
    pub findings: Vec<CommitFinding>,
    pub notes: Vec<String>,
}

impl Affected {
    /// Commits no product could be derived for (and no fallback is set).
    pub fn unattributed(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.finding.rule == "no-product")
            .count()
    }
}

/// How to get the history a shallow clone lacks (every shallow-clone message ends with it).
pub const UNSHALLOW_HINT: &str = "fetch the full history with `git fetch --unshallow` (GitHub Actions: `actions/checkout` with `fetch-depth: 0`)";

#[derive(Debug, thiserror::Error)]
pub enum AffectedError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(
        "`{rev}` names no commit in this repository{}",
        if *shallow { " (this is a shallow clone)" } else { "; if it was force-pushed away or is not fetched yet, `git fetch origin` (or `git fetch origin <sha>`) may bring it back" }
    )]
    UnknownRev { rev: String, shallow: bool },
    #[error(
        "this is a shallow clone and its history does not reach `{base}`, so berth cannot tell which commits are new; {}",
        UNSHALLOW_HINT
    )]
    Shallow { base: String },
    #[error(
        "this is a shallow clone, so deploy tags and the history since them may be missing and berth cannot tell what changed since each deploy; \
         fetch everything with `git fetch --unshallow --tags` (GitHub Actions: `actions/checkout` with `fetch-depth: 0`)"
    )]
    ShallowDeploy,
    #[error("`{base}` and `{head}` share no history (no merge base)")]
    Unrelated { base: String, head: String },
}

struct Resolver<'r> {
    repo: &'r Repo,
    shallow: Option<bool>,
}

impl Resolver<'_> {
    fn shallow(&mut self) -> Result<bool, GitError> {
        if self.shallow.is_none() {
            self.shallow = Some(self.repo.is_shallow()?);
        }
        Ok(self.shallow.unwrap_or(false))
    }

    fn resolve(&mut self, rev: &str) -> Result<String, AffectedError> {
        match self.repo.resolve(rev)? {
            Some(id) => Ok(id),
            None => {
                let shallow = self.shallow()?;
                if shallow {
                    Err(AffectedError::Shallow {
                        base: rev.to_string(),
                    })
                } else {
                    Err(AffectedError::UnknownRev {
                        rev: rev.to_string(),
                        shallow,
                    })
                }
            }
        }
    }

    /// Merge base of `base` and `head`, with a note when base is not an ancestor.
    fn merge_base(
        &mut self,
        base_name: &str,
        base: &str,
        head_name: &str,
        head: &str,
        notes: &mut Vec<String>,
    ) -> Result<String, AffectedError> {
        let found = self.repo.merge_base(base, head)?;
        self.check_merge_base(found, base_name, base, head_name, notes)
    }

    /// Judge a merge base already looked up.
    fn check_merge_base(
        &mut self,
        found: Option<String>,
        base_name: &str,
        base: &str,
        head_name: &str,
        notes: &mut Vec<String>,
    ) -> Result<String, AffectedError> {
        match found {
            Some(mb) => {
                if mb != base {
                    notes.push(format!(
                        "`{base_name}` ({}) is not an ancestor of `{head_name}` (force-pushed or rebased?); comparing from their merge base {}",
                        &base[..7.min(base.len())],
                        &mb[..7.min(mb.len())]
                    ));
                }
                Ok(mb)
            }
            None if self.shallow()? => Err(AffectedError::Shallow {
                base: base_name.to_string(),
            }),
            None => Err(AffectedError::Unrelated {
                base: base_name.to_string(),
                head: head_name.to_string(),
            }),
        }
    }
}

/// How to walk the history.
#[derive(Debug, Clone, Copy, Default)]
pub struct Walk {
    /// Follow only first parents: a merge counts with everything it brought in
    /// (diffed against its first parent), the merged branch's own commits are not read.
    pub first_parent: bool,
    /// Keep, per product, the commits and rules that affected it.
    pub explain: bool,
}

/// One commit read and attributed, without its message and file list.
struct Attributed {
    id: String,
    subject: String,
    attribution: Attribution,
}

/// Merges, reverts, fixups restate other commits: their paths count, their messages are not judged.
fn attribute(attributor: &Attributor<'_>, c: &CommitRef<'_>, details: bool) -> Attribution {
    let parents = c.parents().count();
    let mut a = attributor.attribute_parts(&c.message, parents, &c.files, details);
    if a.skip.is_some() {
        a.findings.retain(|f| f.rule != "no-product");
        if a.products.is_empty() {
            a.findings.clear();
        }
    }
    if !details {
        // Evidence is only shown with `--explain`: not kept for every commit read.
        a.evidence = Vec::new();
        a.tasks = Vec::new();
    }
    a
}

/// The commits of one range read: their indices into the attributed list, and
/// whether `parent` (when given) is a parent of one of them.
struct Read {
    order: Vec<usize>,
    has_parent: bool,
}

pub fn affected(
    repo: &Repo,
    attributor: &Attributor<'_>,
    since: &Since,
    walk: Walk,
) -> Result<Affected, AffectedError> {
    // Commits are attributed as git streams them, so the two overlap; each commit once.
    let mut seen: HashMap<String, usize, FastHash> = HashMap::default();
    let mut attributed: Vec<Attributed> = Vec::new();
    let mut read = |range: String, parent: Option<&str>| -> Result<Read, GitError> {
        let mut revs = vec![range.as_str()];
        if walk.first_parent {
            revs.insert(0, "--first-parent");
        }
        let mut order = Vec::new();
        let mut has_parent = false;
        repo.for_each_commit_ref_split(&revs, |c| {
            if let Some(p) = parent {
                has_parent = has_parent || c.parents().any(|q| q == p);
            }
            let i = match seen.get(c.id) {
                Some(&i) => i,
                None => {
                    attributed.push(Attributed {
                        id: c.id.to_string(),
                        subject: c.message.lines().next().unwrap_or("").to_string(),
                        attribution: attribute(attributor, c, walk.explain),
                    });
                    seen.insert(c.id.to_string(), attributed.len() - 1);
                    attributed.len() - 1
                }
            };
            order.push(i);
        })?;
        // Oldest first: explanations and findings read in the order things happened.
        order.reverse();
        Ok(Read { order, has_parent })
    };
    let mut r = Resolver {
        repo,
        shallow: None,
    };
    let mut notes = Vec::new();
    let products: Vec<String> = attributor.manifest.products.keys().cloned().collect();
    let mut per_product: BTreeMap<String, ProductAffected> = products
        .iter()
        .map(|p| {
            (
                p.clone(),
                ProductAffected {
                    product: p.clone(),
                    affected: false,
                    since: None,
                    never_deployed: false,
                    commit_count: 0,
                    commits: Vec::new(),
                },
            )
        })
        .collect();
    let mut ranges: Vec<(Vec<usize>, Option<Vec<String>>)> = Vec::new();
    let (head_name, base_name, mb_out) = match since {
        Since::Range { base, head } => {
            let head_id = r.resolve(head)?;
            let base_id = r.resolve(base)?;
            // `base..head` is exactly the commits since their merge base, so the log
            // need not wait for it. When base is a parent of a commit read, it is an
            // ancestor of head and so their merge base; only otherwise (base rebased
            // away, or not on the first-parent line) is `git merge-base` asked.
            let got = read(format!("{base_id}..{head_id}"), Some(&base_id))?;
            let mb = if got.has_parent || base_id == head_id {
                Some(base_id.clone())
            } else {
                repo.merge_base(&base_id, &head_id)?
            };
            let order = got.order;
            let mb = r.check_merge_base(mb, base, &base_id, head, &mut notes)?;
            ranges.push((order, None));
            for pa in per_product.values_mut() {
                pa.since = Some(base.clone());
            }
            (head.clone(), Some(base.clone()), Some(mb))
        }
        Since::Deploy { head } => {
            // Deploy tags and the history behind them may be missing from a shallow
            // clone; "never deployed, so affected" would then be a silent guess.
            if r.shallow()? {
                return Err(AffectedError::ShallowDeploy);
            }
            let head_id = r.resolve(head)?;
            let mut by_base: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for p in &products {
                match repo.tags(&format!("{p}-deploy-*"))?.into_iter().next() {
                    None => {
                        let pa = per_product.get_mut(p).expect("known product");
                        pa.affected = true;
                        pa.never_deployed = true;
                    }
                    Some((tag, commit)) => {
                        let mb = r.merge_base(&tag, &commit, head, &head_id, &mut notes)?;
                        per_product.get_mut(p).expect("known product").since = Some(tag);
                        by_base.entry(mb).or_default().push(p.clone());
                    }
                }
            }
            for (mb, ps) in &by_base {
                ranges.push((
                    read(format!("{mb}..{head_id}"), None)?.order,
                    Some(ps.clone()),
                ));
            }
            (head.clone(), None, None)
        }
    };
    let mut findings: Vec<CommitFinding> = Vec::new();
    let mut finding_seen: BTreeSet<(usize, &'static str)> = BTreeSet::new();
    let mut total = BTreeSet::new();
    for (order, only) in &ranges {
        for &i in order {
            total.insert(i);
            let c = &attributed[i];
            for f in &c.attribution.findings {
                if finding_seen.insert((i, f.rule)) {
                    findings.push(CommitFinding {
                        commit: c.id[..7.min(c.id.len())].to_string(),
                        subject: c.subject.clone(),
                        finding: f.clone(),
                    });
                }
            }
            for p in &c.attribution.products {
                if only.as_ref().is_some_and(|o| !o.contains(p)) {
                    continue;
                }
                let Some(pa) = per_product.get_mut(p) else {
                    continue;
                };
                pa.affected = true;
                pa.commit_count += 1;
                if walk.explain {
                    pa.commits.push(CommitExplain {
                        id: c.id.clone(),
                        short: c.id[..7.min(c.id.len())].to_string(),
                        subject: c.subject.clone(),
                        rules: c
                            .attribution
                            .evidence
                            .iter()
                            .filter(|e| &e.product == p)
                            .cloned()
                            .collect(),
                    });
                }
            }
        }
    }
    let affected: Vec<String> = products
        .iter()
        .filter(|p| per_product[*p].affected)
        .cloned()
        .collect();
    Ok(Affected {
        head: head_name,
        base: base_name,
        merge_base: mb_out,
        commits: total.len(),
        affected,
        products: products
            .iter()
            .map(|p| per_product.remove(p).expect("known product"))
            .collect(),
        findings,
        notes,
    })
}
