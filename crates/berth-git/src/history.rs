//! Reading commits with the files they change: one `git log` process, or for a
//! long range several at once, each showing a slice of it.

use std::borrow::Cow;

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
        self.for_each_commit_ref(revs, |c| f(c.to_commit()))
    }

    /// Like [`Repo::for_each_commit`], lending each commit borrowed from git's
    /// output: nothing is copied that the caller does not keep.
    pub fn for_each_commit_ref(
        &self,
        revs: &[&str],
        mut f: impl FnMut(&CommitRef<'_>),
    ) -> Result<(), GitError> {
        self.log_with_files()
            .args(revs)
            .arg("--")
            .for_each_record(RS as u8, |record| for_each_in(record, &mut f))?;
        Ok(())
    }

    /// [`Repo::for_each_commit_ref`] for a range of many commits (`berth affected`
    /// reads tens of thousands): the same commits in the same order with the same
    /// fields, their diffs computed by several git processes at once. Diffing is
    /// most of the time, and one git diffs on one core. `git rev-list` lists the
    /// range first (the walk one `git log` of a range does before its first commit
    /// anyway), then each process shows a consecutive slice of that list
    /// (`git log --no-walk=unsorted --stdin`: the commits given, in that order).
    /// `revs` is what `git rev-list` takes: a range, `--first-parent`.
    pub fn for_each_commit_ref_split(
        &self,
        revs: &[&str],
        f: impl FnMut(&CommitRef<'_>),
    ) -> Result<(), GitError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.split_walk(revs, cores.clamp(1, SPLIT_MAX), SPLIT_MIN, f)
            .map(|_| ())
    }

    /// [`Repo::for_each_commit_ref_split`] in at most `max` slices of at least
    /// `min` commits (the last may be shorter); returns how many slices it used.
    fn split_walk(
        &self,
        revs: &[&str],
        max: usize,
        min: usize,
        mut f: impl FnMut(&CommitRef<'_>),
    ) -> Result<usize, GitError> {
        let out = self
            .git("list the commits of the range")
            .arg("rev-list")
            .args(revs)
            .arg("--")
            .output()?;
        let ids: Vec<&[u8]> = out
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        if ids.is_empty() {
            // `git log --stdin` given nothing would show HEAD.
            return Ok(0);
        }
        let slices = (ids.len() / min.max(1)).clamp(1, max.max(1));
        let log = |slice: &[&[u8]]| {
            let mut input = Vec::with_capacity(slice.len() * 41);
            for id in slice {
                input.extend_from_slice(id);
                input.push(b'\n');
            }
            self.log_with_files()
                .args(["--no-walk=unsorted", "--stdin", "--"])
                .stdin(input)
        };
        let mut chunks = ids.chunks(ids.len().div_ceil(slices));
        let used = chunks.len();
        let first = log(chunks.next().expect("at least one commit"));
        std::thread::scope(|scope| {
            // The later slices are read whole in the background (a full pipe would
            // stop their git) and handed on in order once the first is done.
            let later: Vec<_> = chunks
                .map(|slice| {
                    let cmd = log(slice);
                    scope.spawn(move || cmd.output())
                })
                .collect();
            first.for_each_record(RS as u8, |record| for_each_in(record, &mut f))?;
            for h in later {
                let out = h.join().expect("git reader thread")?;
                for_each_in(&out.stdout, &mut f);
            }
            Ok(used)
        })
    }

    /// `git log` printing each commit as one record of [`parse_record`].
    fn log_with_files(&self) -> berth_cmd::Cmd {
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
            .timeout(Some(std::time::Duration::from_secs(600)))
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

/// Commits a git process diffs at least (a process costs a few ms).
const SPLIT_MIN: usize = 1000;
/// Git processes at most, however many cores.
const SPLIT_MAX: usize = 8;

/// Each commit in some records of [`Repo::log_with_files`] output.
fn for_each_in(records: &[u8], f: &mut impl FnMut(&CommitRef<'_>)) {
    for part in records.split(|b| *b == RS as u8) {
        if let Some(c) = parse_record(part) {
            f(&c);
        }
    }
}

/// One commit of `git log` output, borrowed from it (see [`Repo::for_each_commit_ref`]).
#[derive(Debug, Clone)]
pub struct CommitRef<'a> {
    pub id: &'a str,
    /// The parent ids, space-separated as git prints them.
    pub parents: &'a str,
    pub author: Cow<'a, str>,
    pub date: Cow<'a, str>,
    pub message: Cow<'a, str>,
    /// Paths the commit changes against its first parent.
    pub files: Vec<Cow<'a, str>>,
}

impl CommitRef<'_> {
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parents.split_ascii_whitespace()
    }

    pub fn to_commit(&self) -> Commit {
        Commit {
            id: self.id.to_string(),
            parents: self.parents().map(str::to_string).collect(),
            author: self.author.to_string(),
            date: self.date.to_string(),
            message: self.message.to_string(),
            files: self.files.iter().map(|f| f.to_string()).collect(),
        }
    }
}

/// One record of `git log -z --format=<RS>H<FS>P<FS>author<FS>date<FS>body<FS> --name-only`
/// without its RS; `None` for an empty one. Text that is not UTF-8 is read lossily
/// (the separators are ASCII, so field by field gives what the whole record would).
pub fn parse_record(record: &[u8]) -> Option<CommitRef<'_>> {
    let mut fields = record.splitn(6, |b| *b == FS as u8);
    // Ids are hex (`%H`, `%P`): always UTF-8, so they borrow from the output.
    let id = std::str::from_utf8(fields.next().unwrap_or_default())
        .ok()?
        .trim_start_matches('\0')
        .trim();
    if id.is_empty() {
        return None;
    }
    let parents = std::str::from_utf8(fields.next().unwrap_or_default()).unwrap_or_default();
    let author = lossy(fields.next().unwrap_or_default());
    let date = lossy(fields.next().unwrap_or_default());
    let message = lossy(fields.next().unwrap_or_default());
    let files = fields
        .next()
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|f| {
            let n = f.iter().take_while(|b| **b == b'\n').count();
            &f[n..]
        })
        .filter(|f| !f.is_empty())
        .map(lossy)
        .collect();
    Some(CommitRef {
        id,
        parents,
        author,
        date,
        message,
        files,
    })
}

fn lossy(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Parse `git log -z --format=<RS>H<FS>P<FS>author<FS>date<FS>body<FS> --name-only` output.
pub fn parse_log(text: &str) -> Vec<Commit> {
    text.split(RS)
        .filter_map(|r| parse_record(r.as_bytes()))
        .map(|c| c.to_commit())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commit with a committer and author date (the fixture's helper pins one date).
    fn commit_at(repo: &berth_testkit::GitRepo, args: &[&str], date: &str) {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(repo.path())
            .env("GIT_AUTHOR_DATE", date)
            .env("GIT_COMMITTER_DATE", date)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    fn fields(c: &CommitRef<'_>) -> (String, String, String, String, String, Vec<String>) {
        let k = c.to_commit();
        (
            k.id,
            k.parents.join(" "),
            k.author,
            k.date,
            k.message,
            k.files,
        )
    }

    #[test]
    fn a_range_split_across_git_processes_reads_what_one_git_log_reads() {
        // Side branches whose commits interleave with main's by date, a merge of main
        // into a branch, merges into main, a rename, a deletion and a root commit:
        // one walk orders them by date, and the slices must keep that order.
        let repo = berth_testkit::GitRepo::new();
        let mut day = 0;
        let mut commit = |repo: &berth_testkit::GitRepo, file: &str, msg: &str| {
            day += 1;
            repo.write(file, &format!("{msg}\n"));
            repo.git(&["add", "-A"]);
            commit_at(
                repo,
                &["commit", "-q", "-m", msg],
                &format!("2026-01-{day:02}T00:00:00Z"),
            );
        };
        commit(&repo, "a/one", "root");
        let base = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
        commit(&repo, "a/two", "main 1");
        repo.git(&["checkout", "-q", "-b", "side"]);
        commit(&repo, "b/one", "side 1");
        repo.git(&["checkout", "-q", "main"]);
        commit(&repo, "a/three", "main 2");
        repo.git(&["checkout", "-q", "side"]);
        commit(&repo, "b/two", "side 2");
        commit_at(
            &repo,
            &["merge", "-q", "--no-edit", "main"],
            "2026-01-20T00:00:00Z",
        );
        repo.git(&["mv", "b/one", "b/moved"]);
        repo.git(&["rm", "-q", "a/two"]);
        commit(&repo, "b/three", "side 3: move and delete");
        repo.git(&["checkout", "-q", "main"]);
        commit(&repo, "a/four", "main 3");
        commit_at(
            &repo,
            &["merge", "-q", "--no-ff", "-m", "Merge side", "side"],
            "2026-01-25T00:00:00Z",
        );
        commit(&repo, "a/five", "main 4\n\nbody\n\nProduct: x");
        let r = Repo::open(repo.path()).unwrap();
        let range = format!("{base}..HEAD");
        for revs in [
            vec![range.as_str()],
            vec!["--first-parent", range.as_str()],
            vec!["HEAD"],
            vec!["side"],
        ] {
            let mut one = Vec::new();
            r.for_each_commit_ref(&revs, |c| one.push(fields(c)))
                .unwrap();
            assert!(one.len() >= 4, "{revs:?}: {one:?}");
            assert!(one.iter().any(|c| !c.5.is_empty()));
            for max in 1..=4 {
                let mut split = Vec::new();
                let used = r
                    .split_walk(&revs, max, 1, |c| split.push(fields(c)))
                    .unwrap();
                assert!(
                    used <= max && (max == 1 || used > 1),
                    "{revs:?}: {used} of {max} slices"
                );
                assert_eq!(split, one, "{revs:?} in {max} slices");
            }
        }
        // An empty range reads nothing (`git log --stdin` given no commit shows HEAD).
        let mut n = 0;
        r.for_each_commit_ref_split(&["HEAD..HEAD"], |_| n += 1)
            .unwrap();
        assert_eq!(n, 0);
    }

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

    #[test]
    fn records_read_field_by_field_match_the_whole_record_read_lossily() {
        // Latin-1 in the message and a path: replaced the same way either way.
        let raw: &[u8] =
            b"\x1eaaa\x1fbbb ccc\x1fA <a@x>\x1f2026\x1ffix: caf\xe9\n\x1f\0\nd/\xe9t\xe9.txt\0e\0";
        let whole = parse_log(&String::from_utf8_lossy(raw));
        let c = parse_record(&raw[1..]).unwrap();
        assert_eq!(c.id, "aaa");
        assert_eq!(c.parents().collect::<Vec<_>>(), ["bbb", "ccc"]);
        assert_eq!(c.message, "fix: caf\u{fffd}\n");
        assert_eq!(c.files, ["d/\u{fffd}t\u{fffd}.txt", "e"]);
        let one = c.to_commit();
        assert_eq!(
            (&one.id, &one.parents, &one.message, &one.files),
            (
                &whole[0].id,
                &whole[0].parents,
                &whole[0].message,
                &whole[0].files
            )
        );
        assert!(parse_record(b"").is_none() && parse_record(b"\0\n").is_none());
    }
}
