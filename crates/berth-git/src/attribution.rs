//! Which products a commit belongs to, and why: the union of owned paths,
//! shared path groups, the task slug and `Product:` trailers, with
//! contradictions reported instead of silently resolved.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use berth_manifest::Manifest;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::Serialize;

use crate::message::{Message, TaskRef, task_refs};

/// Paths remembered by [`Attributor::from_paths`] before the memo starts over.
const MEMO_LIMIT: usize = 500_000;

/// One commit as read from git.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub id: String,
    pub parents: Vec<String>,
    pub author: String,
    pub date: String,
    pub message: String,
    /// Paths the commit changes against its first parent (both sides of a rename, deletions too).
    pub files: Vec<String>,
}

impl Commit {
    pub fn short(&self) -> &str {
        &self.id[..self.id.len().min(7)]
    }
    pub fn subject(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
}

/// Why a product was attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The commit changes a path the product owns.
    OwnedPath,
    /// The commit changes a shared path group the product depends on.
    SharedPath,
    /// The task slug names the product.
    TaskSlug,
    /// A `Product:` trailer names the product.
    Trailer,
    /// Nothing named a product, and `fallback_product` is set.
    Fallback,
}

impl Rule {
    pub fn describe(self) -> &'static str {
        match self {
            Self::OwnedPath => "owned path",
            Self::SharedPath => "shared path",
            Self::TaskSlug => "task slug",
            Self::Trailer => "Product trailer",
            Self::Fallback => "fallback_product",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Evidence {
    pub product: String,
    pub rule: Rule,
    /// The file and the glob, the task, or the trailer value that matched.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

/// A problem with one commit's attribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    pub rule: &'static str,
    pub message: String,
    pub expected: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Attribution {
    /// Merge, revert, fixup or squash: the commit restates others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip: Option<crate::message::SkipKind>,
    pub products: BTreeSet<String>,
    pub evidence: Vec<Evidence>,
    pub findings: Vec<Finding>,
    pub tasks: Vec<TaskRef>,
}

impl Attribution {
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Error)
    }
}

/// Per path, the owned and shared globs it matches.
/// (Shared, so a hit is one lookup and no copy.)
type PathMemo = HashMap<String, std::sync::Arc<[(Rule, usize)]>, FastHash>;

/// Attribution rules compiled from a manifest, reused for every commit.
pub struct Attributor<'m> {
    pub manifest: &'m Manifest,
    owned: Vec<(String, String)>,
    owned_set: GlobSet,
    shared: Vec<(String, String)>,
    shared_set: GlobSet,
    names: Vec<(String, Vec<String>)>,
    product_names: Vec<String>,
    /// For each owned glob, the index of its product.
    owned_product: Vec<usize>,
    /// For each shared glob, the indices of the products depending on its group.
    shared_dependents: Vec<Vec<usize>>,
    memo: RefCell<PathMemo>,
    pub task_re: Regex,
    pub story_re: Regex,
}

#[derive(Debug, thiserror::Error)]
pub enum AttributorError {
    #[error("conventions.{key} is not a valid regex: {source}")]
    Regex {
        key: &'static str,
        #[source]
        source: regex::Error,
    },
    #[error("`{0}` is not a valid glob: {1}")]
    Glob(String, globset::Error),
}

fn glob(p: &str) -> Result<globset::Glob, AttributorError> {
    GlobBuilder::new(&berth_manifest::glob_source(p))
        .literal_separator(true)
        .build()
        .map_err(|e| AttributorError::Glob(p.to_string(), e))
}

impl<'m> Attributor<'m> {
    pub fn new(manifest: &'m Manifest) -> Result<Self, AttributorError> {
        let c = &manifest.conventions;
        let task_re = Regex::new(&c.task_pattern).map_err(|source| AttributorError::Regex {
            key: "task_pattern",
            source,
        })?;
        let story_re = Regex::new(&c.story_pattern).map_err(|source| AttributorError::Regex {
            key: "story_pattern",
            source,
        })?;
        let mut owned = Vec::new();
        let mut ob = GlobSetBuilder::new();
        for (name, p) in &manifest.products {
            for pat in &p.paths {
                ob.add(glob(pat)?);
                owned.push((name.clone(), pat.clone()));
            }
        }
        let mut shared = Vec::new();
        let mut sb = GlobSetBuilder::new();
        for (group, g) in &manifest.shared {
            for pat in &g.paths {
                sb.add(glob(pat)?);
                shared.push((group.clone(), pat.clone()));
            }
        }
        let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, p) in &manifest.products {
            for g in &p.depends_on_shared {
                dependents.entry(g.clone()).or_default().push(name.clone());
            }
        }
        let names = manifest
            .products
            .iter()
            .map(|(name, p)| {
                let mut v = vec![name.clone()];
                v.extend(p.aliases.iter().filter(|a| *a != name).cloned());
                (name.clone(), v)
            })
            .collect();
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| AttributorError::Glob("(set)".into(), e))
        };
        let product_names: Vec<String> = manifest.products.keys().cloned().collect();
        let index = |p: &str| {
            product_names
                .iter()
                .position(|n| n == p)
                .expect("known product")
        };
        let owned_product = owned
            .iter()
            .map(|(p, _): &(String, String)| index(p))
            .collect();
        let shared_dependents = shared
            .iter()
            .map(|(g, _): &(String, String)| {
                dependents
                    .get(g)
                    .into_iter()
                    .flatten()
                    .map(|p| index(p))
                    .collect()
            })
            .collect();
        Ok(Self {
            manifest,
            owned,
            owned_set: build(ob)?,
            shared,
            shared_set: build(sb)?,
            names,
            product_names,
            owned_product,
            shared_dependents,
            memo: RefCell::new(HashMap::default()),
            task_re,
            story_re,
        })
    }

    /// The product a word sequence (a task slug, a trailer value) names.
    /// In `port-<feature>-<product>` the last product named is the target.
    pub fn products_in_slug(&self, slug: &str) -> Vec<String> {
        let words: Vec<&str> = slug.split('-').filter(|w| !w.is_empty()).collect();
        let mut found: Vec<(usize, String)> = Vec::new();
        for (product, names) in &self.names {
            for n in names {
                let nw: Vec<&str> = n.split('-').collect();
                if let Some(pos) = words.windows(nw.len()).rposition(|w| w == nw.as_slice()) {
                    found.push((pos, product.clone()));
                    break;
                }
            }
        }
        found.sort();
        found.dedup_by(|a, b| a.1 == b.1);
        if words.first() == Some(&"port") && found.len() > 1 {
            return vec![found.last().expect("non-empty").1.clone()];
        }
        found.into_iter().map(|(_, p)| p).collect()
    }

    /// The product a trailer value names: a product name or alias.
    pub fn product_named(&self, value: &str) -> Option<String> {
        let v = value.trim().to_ascii_lowercase();
        self.names
            .iter()
            .find(|(_, names)| names.contains(&v))
            .map(|(p, _)| p.clone())
    }

    /// The closest product name or alias to `word`, for "did you mean" hints.
    pub fn closest(&self, word: &str) -> Option<String> {
        let w = word.to_ascii_lowercase();
        self.names
            .iter()
            .flat_map(|(p, names)| names.iter().map(move |n| (p, n)))
            .filter(|(_, n)| n.len() >= 3)
            .map(|(p, n)| (edit_distance(&w, n), p, n.len()))
            .filter(|(d, _, len)| *d <= 2 && *d < len / 2)
            .map(|(d, p, _)| (d, p))
            .min()
            .map(|(_, p)| p.clone())
    }

    /// Products named by the message alone (task slugs and trailers), with evidence.
    pub fn from_message(&self, msg: &Message, out: &mut Attribution) {
        let text = msg.text();
        out.tasks = task_refs(&text, &self.task_re);
        // Trailers `Task:` may carry a task not in the subject.
        for t in msg.trailer_values("Task") {
            for r in task_refs(&t, &self.task_re) {
                if !out.tasks.contains(&r) {
                    out.tasks.push(r);
                }
            }
        }
        let mut slug_products = BTreeSet::new();
        for t in &out.tasks {
            for p in self.products_in_slug(&t.slug) {
                slug_products.insert(p.clone());
                out.evidence.push(Evidence {
                    product: p,
                    rule: Rule::TaskSlug,
                    detail: t.full.clone(),
                });
            }
        }
        let mut trailer_products = BTreeSet::new();
        for v in msg.trailer_values("Product") {
            match self.product_named(&v) {
                Some(p) => {
                    trailer_products.insert(p.clone());
                    out.evidence.push(Evidence {
                        product: p,
                        rule: Rule::Trailer,
                        detail: format!("Product: {v}"),
                    });
                }
                None => out.findings.push(Finding {
                    level: Level::Error,
                    rule: "unknown-product",
                    message: format!("`Product: {v}` names no product"),
                    expected: format!("one of {}", self.product_list()),
                    hint: self.closest(&v).map(|p| format!("did you mean `{p}`?")),
                }),
            }
        }
        if !slug_products.is_empty()
            && !trailer_products.is_empty()
            && slug_products.is_disjoint(&trailer_products)
        {
            out.findings.push(Finding {
                level: Level::Error,
                rule: "trailer-contradicts-slug",
                message: format!(
                    "the Product trailer says {} but the task slug says {}",
                    list(&trailer_products),
                    list(&slug_products)
                ),
                expected: "the trailer and the task slug name the same product".into(),
                hint: Some(format!(
                    "did you mean `Product: {}`?",
                    slug_products.iter().next().expect("non-empty")
                )),
            });
        }
        out.products.extend(slug_products);
        out.products.extend(trailer_products);
    }

    /// Attribute one commit: message and paths.
    pub fn attribute(&self, commit: &Commit) -> Attribution {
        self.attribute_parts(&commit.message, commit.parents.len(), &commit.files, true)
    }

    /// [`Attributor::attribute`] from a commit's parts. Without `details`, path
    /// evidence names its product and rule but not the file and glob (callers that
    /// never show it skip the formatting: `berth affected` without `--explain`).
    pub fn attribute_parts<S: AsRef<str>>(
        &self,
        message: &str,
        parents: usize,
        files: &[S],
        details: bool,
    ) -> Attribution {
        let msg = Message::parse(message);
        let mut out = Attribution {
            skip: msg.skip_kind(parents),
            ..Attribution::default()
        };
        self.from_message(&msg, &mut out);
        let named: BTreeSet<String> = out.products.clone();
        self.paths(files, &mut out, details);
        self.contradictions(&named, &mut out);
        self.finish(&mut out);
        out
    }

    /// Products whose owned or shared paths `files` touch.
    pub fn from_paths<S: AsRef<str>>(&self, files: &[S], out: &mut Attribution) {
        self.paths(files, out, true)
    }

    fn paths<S: AsRef<str>>(&self, files: &[S], out: &mut Attribution, details: bool) {
        // One piece of evidence per (product, rule, glob): its first file and how many more.
        let mut first: HashMap<(usize, Rule, usize), (usize, usize), FastHash> = HashMap::default();
        let mut memo = self.memo.borrow_mut();
        if memo.len() > MEMO_LIMIT {
            memo.clear();
        }
        for f in files {
            let f = f.as_ref();
            // Paths repeat: a hit is one lookup, with no copy of the path.
            let hits = match memo.get(f) {
                Some(h) => h.clone(),
                None => {
                    let h: std::sync::Arc<[(Rule, usize)]> = self.classify(f).into();
                    memo.insert(f.to_string(), h.clone());
                    h
                }
            };
            for &(rule, pat_idx) in hits.iter() {
                let (group_or_product, pat) = match rule {
                    Rule::OwnedPath => &self.owned[pat_idx],
                    _ => &self.shared[pat_idx],
                };
                let products: &[usize] = match rule {
                    Rule::OwnedPath => std::slice::from_ref(&self.owned_product[pat_idx]),
                    _ => &self.shared_dependents[pat_idx],
                };
                for &pi in products {
                    let product = &self.product_names[pi];
                    match first.entry((pi, rule, pat_idx)) {
                        std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().1 += 1,
                        std::collections::hash_map::Entry::Vacant(e) => {
                            let detail = match rule {
                                _ if !details => String::new(),
                                Rule::OwnedPath => format!("{f} ({pat})"),
                                _ => format!("{f} (shared.{group_or_product}: {pat})"),
                            };
                            e.insert((out.evidence.len(), 0));
                            out.evidence.push(Evidence {
                                product: product.clone(),
                                rule,
                                detail,
                            });
                            if !out.products.contains(product) {
                                out.products.insert(product.clone());
                            }
                        }
                    }
                }
            }
        }
        if details {
            for (idx, more) in first.into_values() {
                if more > 0 {
                    let e = &mut out.evidence[idx];
                    e.detail = format!("{} and {more} more file(s)", e.detail);
                }
            }
        }
        out.evidence.sort();
        out.evidence.dedup();
    }

    /// Which owned and shared globs a path matches (memoised: paths repeat across commits).
    fn classify(&self, f: &str) -> Vec<(Rule, usize)> {
        let mut v: Vec<(Rule, usize)> = self
            .owned_set
            .matches(f)
            .into_iter()
            .map(|i| (Rule::OwnedPath, i))
            .collect();
        v.extend(
            self.shared_set
                .matches(f)
                .into_iter()
                .map(|i| (Rule::SharedPath, i)),
        );
        v
    }

    /// The message names products, but the commit only touches other products' own paths.
    fn contradictions(&self, named: &BTreeSet<String>, out: &mut Attribution) {
        if named.is_empty() {
            return;
        }
        let by_path: BTreeSet<&String> = out
            .evidence
            .iter()
            .filter(|e| e.rule == Rule::OwnedPath)
            .map(|e| &e.product)
            .collect();
        let shared = out.evidence.iter().any(|e| e.rule == Rule::SharedPath);
        if !by_path.is_empty() && !shared && by_path.iter().all(|p| !named.contains(*p)) {
            let touched: BTreeSet<String> = by_path.into_iter().cloned().collect();
            out.findings.push(Finding {
                level: Level::Error,
                rule: "message-contradicts-paths",
                message: format!(
                    "the message names {} but the commit only changes files owned by {}",
                    list(named),
                    list(&touched)
                ),
                expected: "a message that names the product whose files change".into(),
                hint: Some(format!(
                    "did you mean `{}`?",
                    touched.iter().next().expect("non-empty")
                )),
            });
        }
    }

    fn finish(&self, out: &mut Attribution) {
        if !out.products.is_empty() {
            return;
        }
        match self
            .manifest
            .project
            .fallback_product
            .as_deref()
            .filter(|f| !f.is_empty())
        {
            Some(f) => {
                out.products.insert(f.to_string());
                out.evidence.push(Evidence {
                    product: f.to_string(),
                    rule: Rule::Fallback,
                    detail: "nothing in the commit names a product".into(),
                });
                out.findings.push(Finding {
                    level: Level::Warning,
                    rule: "fallback",
                    message: format!(
                        "no product named or touched; attributed to fallback_product `{f}`"
                    ),
                    expected: "a task slug or Product trailer naming the product".into(),
                    hint: None,
                });
            }
            None => {
                let hint = out
                    .tasks
                    .first()
                    .map(|t| {
                        // A misspelt product word: suggest the task with it corrected.
                        let words: Vec<&str> = t.slug.split('-').collect();
                        let guess = words
                            .iter()
                            .enumerate()
                            .find_map(|(i, w)| (w.len() >= 3).then(|| self.closest(w)).flatten().map(|g| (i, g)));
                        match guess {
                            Some((i, g)) => {
                                let fixed: Vec<&str> = words.iter().enumerate().map(|(j, w)| if i == j { g.as_str() } else { w }).collect();
                                // The slug may sit anywhere in a custom task pattern.
                                let corrected = t.full.replacen(&t.slug, &fixed.join("-"), 1);
                                format!("did you mean `{corrected}`? or add a `Product: {g}` trailer")
                            }
                            None => format!(
                                "name the product in the slug (`{}-<product>`) or add a `Product: <product>` trailer",
                                t.full
                            ),
                        }
                    })
                    .unwrap_or_else(|| "reference a task whose slug names the product, or add a `Product: <product>` trailer".into());
                out.findings.push(Finding {
                    level: Level::Error,
                    rule: "no-product",
                    message: "no product can be derived from this commit".into(),
                    expected: format!(
                        "a task slug, Product trailer or owned path naming one of {}",
                        self.product_list()
                    ),
                    hint: Some(hint),
                });
            }
        }
    }

    pub fn product_list(&self) -> String {
        self.manifest
            .products
            .keys()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn list(s: &BTreeSet<String>) -> String {
    s.iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A fast hash for the path memo (paths come from the repository being read, not
/// from an adversary, so SipHash's flooding resistance buys nothing here).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastHash = std::hash::BuildHasherDefault<FastHasher>;

/// Levenshtein distance, for short words.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        toml::from_str(
            r#"
[project]
name = "x"
[shared.server]
paths = ["apps/server/**"]
[products.bestays]
paths = ["products/bestays/**"]
aliases = ["bestays"]
depends_on_shared = ["server"]
[products.realestate]
paths = ["products/realestate/**"]
aliases = ["realestate", "real-estate"]
depends_on_shared = ["server"]
"#,
        )
        .unwrap()
    }

    fn commit(msg: &str, files: &[&str]) -> Commit {
        Commit {
            id: "0123456789".into(),
            message: msg.into(),
            files: files.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn slugs_name_products_by_whole_words() {
        let m = manifest();
        let a = Attributor::new(&m).unwrap();
        assert_eq!(a.products_in_slug("login-bestays"), ["bestays"]);
        assert_eq!(a.products_in_slug("port-login-realestate"), ["realestate"]);
        assert_eq!(
            a.products_in_slug("port-login-bestays-realestate"),
            ["realestate"]
        );
        assert_eq!(a.products_in_slug("search-real-estate"), ["realestate"]);
        assert!(a.products_in_slug("bestaysish-login").is_empty());
        assert!(a.products_in_slug("database-schema").is_empty());
    }

    #[test]
    fn union_of_paths_and_message() {
        let m = manifest();
        let a = Attributor::new(&m).unwrap();
        let r = a.attribute(&commit(
            "feat: x (TASK-1-login-bestays)",
            &["apps/server/main.py"],
        ));
        assert_eq!(
            r.products.iter().collect::<Vec<_>>(),
            ["bestays", "realestate"]
        );
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn contradictions_are_findings() {
        let m = manifest();
        let a = Attributor::new(&m).unwrap();
        let r = a.attribute(&commit(
            "feat: x (TASK-1-login-bestays)\n\nProduct: realestate",
            &[],
        ));
        assert_eq!(r.findings[0].rule, "trailer-contradicts-slug");
        let r = a.attribute(&commit(
            "feat: x (TASK-1-login-bestays)",
            &["products/realestate/a"],
        ));
        assert_eq!(r.findings[0].rule, "message-contradicts-paths");
        assert_eq!(
            r.findings[0].hint.as_deref(),
            Some("did you mean `realestate`?")
        );
    }

    #[test]
    fn nothing_named_is_an_error_with_a_hint() {
        let m = manifest();
        let a = Attributor::new(&m).unwrap();
        let r = a.attribute(&commit("feat: x (TASK-2-database-schema)", &["README.md"]));
        assert!(r.products.is_empty());
        assert_eq!(r.findings[0].rule, "no-product");
        let r = a.attribute(&commit("feat: x (TASK-2-schema-bestyas)", &[]));
        assert_eq!(
            r.findings[0].hint.as_deref(),
            Some("did you mean `TASK-2-schema-bestays`? or add a `Product: bestays` trailer")
        );
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("bestyas", "bestays"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
