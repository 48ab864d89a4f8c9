//! Reading commits with the files they change, in one `git log` process.

use crate::attribution::Commit;
use crate::{GitError, Repo};

/// Field and record separators unlikely to appear in commit metadata.
const RS: char = '\u{1e}';
const FS: char = '\u{1f}';

impl Repo {
    /// Commits selected by `revs` (e.g. `["base..head"]`), newest first, each with
    /// the paths it changes against its first parent. Renames are listed as the
    /// old and the new path; deletions are included. Paths are relative to the
    /// directory this `Repo` was opened in, and only paths under it are listed.
    pub fn commits(&self, revs: &[&str]) -> Result<Vec<Commit>, GitError> {
        let mut all = Vec::new();
        self.for_each_commit(revs, |c| all.push(c))?;
        Ok(all)
    }

    /// Like [`Repo::commits`], handing each commit to `f` as git produces it.
    pub fn for_each_commit(
        &self,
        revs: &[&str],
        mut f: impl FnMut(Commit),
    ) -> Result<(), GitError> {
        self.git("read the commits and the files they change")
            .args([
                "-c",
                "core.quotePath=false",
                "log",
                "--no-renames",
                "--name-only",
                "--diff-merges=first-parent",
                "--relative",
                "-z",
                "--format=%x1e%H%x1f%P%x1f%an <%ae>%x1f%aI%x1f%B%x1f",
            ])
            .args(revs)
            .arg("--")
            .timeout(Some(std::time::Duration::from_secs(600)))
            .for_each_record(RS as u8, |record| {
                for c in parse_log(&String::from_utf8_lossy(record)) {
                    f(c);
                }
            })?;
        Ok(())
    }

    /// Commits in `revs` without the files (fast: no diffs).
    pub fn commit_messages(&self, revs: &[&str]) -> Result<Vec<Commit>, GitError> {
        let out = self
            .git("read commit messages")
            .args([
                "log",
                "-z",
                "--format=%x1e%H%x1f%P%x1f%an <%ae>%x1f%aI%x1f%B%x1f",
            ])
            .args(revs)
            .arg("--")
            .output()?;
        Ok(parse_log(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// Parse `git log -z --format=<RS>H<FS>P<FS>author<FS>date<FS>body<FS> --name-only` output.
pub fn parse_log(text: &str) -> Vec<Commit> {
    let mut commits = Vec::new();
    for record in text.split(RS).filter(|r| !r.is_empty()) {
        let mut fields = record.splitn(6, FS);
        let id = fields
            .next()
            .unwrap_or_default()
            .trim_start_matches('\0')
            .trim()
            .to_string();
        if id.is_empty() {
            continue;
        }
        let parents = fields
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let author = fields.next().unwrap_or_default().to_string();
        let date = fields.next().unwrap_or_default().to_string();
        let message = fields.next().unwrap_or_default().to_string();
        let files = fields
            .next()
            .unwrap_or_default()
            .split('\0')
            .map(|f| f.trim_start_matches('\n'))
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        commits.push(Commit {
            id,
            parents,
            author,
            date,
            message,
            files,
        });
    }
    commits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_with_and_without_files() {
        let text = "\u{1e}aaa\u{1f}bbb\u{1f}A <a@x>\u{1f}2026-01-01T00:00:00Z\u{1f}feat: x\n\nbody\n\u{1f}\0\na\0b/c\0\u{1e}bbb\u{1f}\u{1f}A <a@x>\u{1f}2026\u{1f}first\n\u{1f}\0";
        let c = parse_log(text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].files, ["a", "b/c"]);
        assert_eq!(c[0].parents, ["bbb"]);
        assert_eq!(c[0].message, "feat: x\n\nbody\n");
        assert!(c[1].files.is_empty() && c[1].parents.is_empty());
    }
}
