//! Commit messages: subject, body, trailers, conventional-commit header, and
//! the task and story references in them. Pure text logic.

use regex::Regex;

/// `type(scope)!: description`
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConventionalHeader {
    pub kind: String,
    pub scope: Option<String>,
    pub breaking: bool,
    pub description: String,
}

/// A parsed commit message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub body: String,
    /// `Key: value` lines from trailer blocks, in order, keys as written.
    pub trailers: Vec<(String, String)>,
    pub header: Option<ConventionalHeader>,
}

/// Commits that guard rails skip by default: they restate other commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SkipKind {
    Merge,
    Revert,
    Fixup,
    Squash,
}

impl Message {
    /// A message as the commit-msg hook receives it (`.git/COMMIT_EDITMSG`): when git
    /// opened an editor, its `#` comment lines and everything below the scissors line
    /// (`git commit -v` puts the diff there) are not part of the message. A message
    /// given with `-m` keeps lines starting with `#` (`#42 fix crash`), as git does.
    pub fn parse_edit_file(raw: &str) -> Self {
        let mut lines: Vec<&str> = Vec::new();
        for l in raw.lines() {
            if is_scissors(l) {
                break;
            }
            lines.push(l);
        }
        let edited = lines.iter().any(|l| {
            l.starts_with("# Please enter the commit message")
                || l.starts_with("# Please enter a commit message")
        }) || raw.lines().any(is_scissors);
        if edited {
            lines.retain(|l| !l.starts_with('#'));
        }
        Self::parse(&lines.join("\n"))
    }

    /// A message as stored in a commit (already cleaned up by git).
    pub fn parse(raw: &str) -> Self {
        let text = raw.trim();
        let (subject, body) = match text.split_once('\n') {
            Some((s, b)) => (s.trim().to_string(), b.trim().to_string()),
            None => (text.to_string(), String::new()),
        };
        let mut trailers = Vec::new();
        for para in body.split("\n\n") {
            let lines: Vec<&str> = para.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                continue;
            }
            let parsed: Vec<Option<(String, String)>> =
                lines.iter().map(|l| parse_trailer(l)).collect();
            // A trailer block: every line is `Key: value` (or a continuation of one).
            let ok = parsed[0].is_some()
                && lines
                    .iter()
                    .zip(&parsed)
                    .all(|(l, p)| p.is_some() || l.starts_with([' ', '\t']));
            if ok {
                trailers.extend(parsed.into_iter().flatten());
            }
        }
        let header = parse_header(&subject);
        Self {
            subject,
            body,
            trailers,
            header,
        }
    }

    /// Values of trailers with this key (case-insensitive), split on commas.
    pub fn trailer_values(&self, key: &str) -> Vec<String> {
        self.trailers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .collect()
    }

    pub fn has_trailer(&self, key: &str) -> bool {
        self.trailers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(key))
    }

    /// Whether this is a merge, revert, fixup! or squash! commit.
    pub fn skip_kind(&self, parents: usize) -> Option<SkipKind> {
        let s = self.subject.as_str();
        // Only git's own merge subjects: "Merge user data" is an ordinary commit.
        const MERGE: &[&str] = &[
            "Merge branch '",
            "Merge branches '",
            "Merge remote-tracking branch '",
            "Merge pull request #",
            "Merge tag '",
            "Merge commit '",
        ];
        if parents > 1 || MERGE.iter().any(|m| s.starts_with(m)) {
            Some(SkipKind::Merge)
        } else if s.starts_with("Revert \"") || s.starts_with("revert:") || s.starts_with("revert(")
        {
            Some(SkipKind::Revert)
        } else if s.starts_with("fixup!") || s.starts_with("amend!") {
            Some(SkipKind::Fixup)
        } else if s.starts_with("squash!") {
            Some(SkipKind::Squash)
        } else {
            None
        }
    }

    /// The full text (subject and body) references are looked for in.
    pub fn text(&self) -> String {
        if self.body.is_empty() {
            self.subject.clone()
        } else {
            format!("{}\n\n{}", self.subject, self.body)
        }
    }
}

/// git's scissors line: `# ------------------------ >8 ------------------------`.
fn is_scissors(line: &str) -> bool {
    let t = line.trim_start_matches('#').trim();
    t.contains(">8") && t.starts_with("---")
}

fn parse_trailer(line: &str) -> Option<(String, String)> {
    let (k, v) = line.split_once(':')?;
    let k = k.trim_end();
    let valid_key = !k.is_empty()
        && k.len() <= 40
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let v = v.trim();
    (valid_key
        && !v.is_empty()
        && !k.eq_ignore_ascii_case("http")
        && !k.eq_ignore_ascii_case("https"))
    .then(|| (k.to_string(), v.to_string()))
}

fn parse_header(subject: &str) -> Option<ConventionalHeader> {
    let colon = subject.find(": ")?;
    let head = &subject[..colon];
    let (head, breaking) = match head.strip_suffix('!') {
        Some(h) => (h, true),
        None => (head, false),
    };
    let (kind, scope) = match head.split_once('(') {
        Some((k, rest)) => (k, Some(rest.strip_suffix(')')?.to_string())),
        None => (head, None),
    };
    if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    Some(ConventionalHeader {
        kind: kind.to_string(),
        scope,
        breaking,
        description: subject[colon + 2..].trim().to_string(),
    })
}

/// `TASK-001-login-bestays`: the whole reference, its number and its slug.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct TaskRef {
    pub full: String,
    pub number: String,
    pub slug: String,
}

/// Task references in `text`, in order, without duplicates.
pub fn task_refs(text: &str, re: &Regex) -> Vec<TaskRef> {
    let mut out: Vec<TaskRef> = Vec::new();
    for c in re.captures_iter(text) {
        let full = c.get(0).map_or("", |m| m.as_str()).to_string();
        let r = TaskRef {
            number: c.name("number").map_or("", |m| m.as_str()).to_string(),
            slug: c.name("slug").map_or("", |m| m.as_str()).to_string(),
            full,
        };
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Story references (`US-001`) in `text`, in order, without duplicates.
pub fn story_refs(text: &str, re: &Regex) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in re.find_iter(text) {
        let s = m.as_str().to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_message_with_trailers_in_two_blocks() {
        let m = Message::parse(
            "feat: implement login flow (US-001 TASK-001-login-bestays)\n\nSubagent: dev-frontend-svelte\nProduct: bestays\nFiles: apps/frontend/src/routes/login/+page.svelte\n\nStory: US-001\nTask: TASK-001-login-bestays\n",
        );
        assert_eq!(m.trailer_values("product"), ["bestays"]);
        assert_eq!(m.trailer_values("Task"), ["TASK-001-login-bestays"]);
        let h = m.header.unwrap();
        assert_eq!(
            (h.kind.as_str(), h.scope, h.breaking),
            ("feat", None, false)
        );
    }

    #[test]
    fn prose_paragraphs_are_not_trailers() {
        let m = Message::parse("fix: x\n\nThis fixes: the bug in login.\nIt was bad.\n");
        assert!(m.trailers.is_empty());
        let m = Message::parse("fix: x\n\nSee https://example.com/a: b\n");
        assert!(m.trailers.is_empty());
    }

    #[test]
    fn headers() {
        let h = parse_header("feat(api)!: drop v1").unwrap();
        assert_eq!(
            (h.kind.as_str(), h.scope.as_deref(), h.breaking),
            ("feat", Some("api"), true)
        );
        assert!(parse_header("Update README").is_none());
        assert!(parse_header("TASK-1: x").is_none());
    }

    #[test]
    fn skips() {
        assert_eq!(
            Message::parse("Merge branch 'x'").skip_kind(1),
            Some(SkipKind::Merge)
        );
        assert_eq!(Message::parse("x").skip_kind(2), Some(SkipKind::Merge));
        assert_eq!(
            Message::parse("Revert \"feat: x\"").skip_kind(1),
            Some(SkipKind::Revert)
        );
        assert_eq!(
            Message::parse("fixup! feat: x").skip_kind(1),
            Some(SkipKind::Fixup)
        );
        assert_eq!(
            Message::parse("squash! feat: x").skip_kind(1),
            Some(SkipKind::Squash)
        );
        assert_eq!(Message::parse("feat: x").skip_kind(1), None);
    }

    #[test]
    fn comments_are_dropped_like_git_does() {
        let m = Message::parse_edit_file(
            "feat: x\n# Please enter the commit message\n# On branch main\n",
        );
        assert_eq!(m.subject, "feat: x");
        assert_eq!(m.body, "");
        // `-m "#42 ..."`: git keeps the line, so does berth.
        let m = Message::parse_edit_file("#42 fix crash (TASK-9-crash-bestays)\n");
        assert_eq!(m.subject, "#42 fix crash (TASK-9-crash-bestays)");
    }

    #[test]
    fn the_diff_below_the_scissors_is_not_the_message() {
        let raw = "fix: typo\n# Please enter the commit message for your changes.\n# ------------------------ >8 ------------------------\n# Do not modify or remove the line above.\ndiff --git a/x b/x\n+TASK-77-fix-bestays\n";
        let m = Message::parse_edit_file(raw);
        assert_eq!(m.text(), "fix: typo");
    }

    #[test]
    fn only_git_merge_subjects_are_merges() {
        assert_eq!(
            Message::parse("Merge user data (no task)").skip_kind(1),
            None
        );
        assert_eq!(
            Message::parse("Merge pull request #12 from org/feat").skip_kind(1),
            Some(SkipKind::Merge)
        );
    }

    #[test]
    fn task_and_story_refs() {
        let re = Regex::new(berth_manifest::DEFAULT_TASK_PATTERN).unwrap();
        let t = task_refs(
            "feat: x (US-001 TASK-001-login-bestays) TASK-001-login-bestays",
            &re,
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].number.as_str(), t[0].slug.as_str()),
            ("001", "login-bestays")
        );
        let t = task_refs("feat/TASK-001-login-bestays-US-001", &re);
        assert_eq!(t[0].slug, "login-bestays");
        let s = story_refs(
            "US-001 and US-002, US-001",
            &Regex::new(berth_manifest::DEFAULT_STORY_PATTERN).unwrap(),
        );
        assert_eq!(s, ["US-001", "US-002"]);
    }
}
