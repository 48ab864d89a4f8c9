//! `berth lint commit` and `berth lint branch`: the conventions of berth.toml
//! applied to one message or branch name, with what was expected and a hint.

use regex::Regex;
use serde::Serialize;

use crate::attribution::{Attribution, Attributor, Commit, Finding, Level};
use crate::message::{Message, SkipKind, task_refs};

/// The verdict on one commit message.
#[derive(Debug, Clone, Serialize)]
pub struct CommitLint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<SkipKind>,
    pub products: Vec<String>,
    pub findings: Vec<Finding>,
}

impl CommitLint {
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Error)
    }
}

/// Lint a commit. `files` are the paths it changes, when known (a range, or the
/// staged files in a commit-msg hook); without them only the message is judged.
pub fn lint_commit(
    a: &Attributor<'_>,
    commit: &Commit,
    files_known: bool,
    include_skipped: bool,
) -> CommitLint {
    let msg = Message::parse(&commit.message);
    let commit_id = (!commit.id.is_empty()).then(|| commit.short().to_string());
    let skip = msg.skip_kind(commit.parents.len());
    if let Some(kind) = skip.filter(|_| !include_skipped) {
        return CommitLint {
            commit: commit_id,
            subject: msg.subject,
            skipped: Some(kind),
            products: Vec::new(),
            findings: Vec::new(),
        };
    }
    let mut findings = Vec::new();
    if msg.subject.is_empty() {
        findings.push(Finding {
            level: Level::Error,
            rule: "empty-message",
            message: "the commit message is empty".into(),
            expected: "a subject line".into(),
            hint: Some(format!(
                "e.g. `feat: short summary (TASK-123-login-{})`",
                example_product(a)
            )),
        });
    }
    let conv = &a.manifest.conventions;
    // Without the files (a message on stdin), the message alone is judged.
    let attribution: Attribution = if files_known {
        a.attribute(commit)
    } else {
        a.attribute(&Commit {
            files: Vec::new(),
            ..commit.clone()
        })
    };
    if conv.require_task && attribution.tasks.is_empty() {
        findings.push(Finding {
            level: Level::Error,
            rule: "task-required",
            message: "no task reference".into(),
            expected: format!(
                "a task reference matching `{}`, e.g. `TASK-123-login-{}`",
                conv.task_pattern,
                example_product(a)
            ),
            hint: near_miss_task(&msg.text(), &a.task_re).or_else(|| {
                Some(format!(
                    "add the task to the subject, e.g. `{} (TASK-123-<what>-{})`",
                    msg.subject,
                    example_product(a)
                ))
            }),
        });
    }
    for t in &conv.required_trailers {
        if !msg.has_trailer(t) {
            findings.push(Finding {
                level: Level::Error,
                rule: "missing-trailer",
                message: format!("no `{t}:` trailer"),
                expected: format!("a `{t}: <value>` line in the last paragraph"),
                hint: Some(format!("end the message with a blank line and `{t}: ...`")),
            });
        }
    }
    findings.extend(attribution.findings.iter().cloned());
    CommitLint {
        commit: commit_id,
        subject: msg.subject,
        skipped: None,
        products: attribution.products.into_iter().collect(),
        findings,
    }
}

fn example_product(a: &Attributor<'_>) -> String {
    a.manifest
        .products
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| "product".into())
}

/// `task-12 login` or `TASK-12` without a slug: say what it should look like.
fn near_miss_task(text: &str, re: &Regex) -> Option<String> {
    static LOOSE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)\btask[-_ ]?(\d+)(?:[-_ ]([a-z0-9-]+))?").expect("static regex")
    });
    let c = LOOSE.captures(text)?;
    let n = c.get(1)?.as_str();
    let slug = c.get(2).map_or("<slug-naming-the-product>", |m| m.as_str());
    let candidate = format!("TASK-{n}-{slug}");
    (task_refs(&candidate, re).is_empty() || c.get(0)?.as_str() != candidate)
        .then(|| format!("did you mean `{candidate}`?"))
}

/// Branches that are exempt from the pattern (long-lived branches).
pub fn branch_exempt(name: &str, exempt: &[String]) -> bool {
    exempt.iter().any(|p| {
        globset::Glob::new(p)
            .map(|g| g.compile_matcher().is_match(name))
            .unwrap_or(false)
    })
}

/// Lint a branch name.
pub fn lint_branch(a: &Attributor<'_>, name: &str) -> Vec<Finding> {
    let conv = &a.manifest.conventions;
    if branch_exempt(name, &conv.branch_exempt) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let example = format!("feat/TASK-001-login-{}-US-001", example_product(a));
    match Regex::new(&conv.branch_pattern) {
        Ok(re) if !re.is_match(name) => out.push(Finding {
            level: Level::Error,
            rule: "branch-pattern",
            message: format!("branch `{name}` does not match the branch pattern"),
            expected: format!("`{}`, e.g. `{example}`", conv.branch_pattern),
            hint: near_miss_task(name, &a.task_re)
                .map(|h| h.replace("did you mean", "the task part would be")),
        }),
        _ => {}
    }
    let tasks = task_refs(name, &a.task_re);
    if let Some(t) = tasks.first()
        && a.products_in_slug(&t.slug).is_empty()
        && a.manifest
            .project
            .fallback_product
            .as_deref()
            .unwrap_or("")
            .is_empty()
    {
        let guess = t
            .slug
            .split('-')
            .find_map(|w| (w.len() >= 3).then(|| a.closest(w)).flatten());
        out.push(Finding {
            level: Level::Error,
            rule: "no-product",
            message: format!("the task slug `{}` names no product", t.slug),
            expected: format!("a slug containing one of {}", a.product_list()),
            hint: Some(match guess {
                Some(g) => format!("did you mean `{g}`?"),
                None => format!("e.g. `{example}`"),
            }),
        });
    }
    out
}
