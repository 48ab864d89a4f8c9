//! `Cmd`: run an external program with a plain-English summary of why, a
//! timeout, an exit-status check and, on failure, an error that says what berth
//! was trying to do plus the tail of the program's output. Arguments marked
//! secret and registered secret strings are masked in logs and errors.
//!
//! [`Masker`] is berth's one rule for secrets in output it did not write: the
//! same set masks a command's output tails here, and the deploy's log tails,
//! audit records and notifications above.

pub mod clock;
pub mod fs;
pub mod progress;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Lines of output kept for error messages.
const TAIL_LINES: usize = 20;

/// Values shorter than this are not masked: "1", "dev" or "yes" are no secrets,
/// and replacing them would garble every line that contains them. Every password
/// berth generates is 32 characters.
pub const MIN_SECRET_LEN: usize = 4;

/// What stands in for a secret in output.
pub const MASK: &str = "****";

/// A set of secret values (passwords, tokens, URLs holding them), masked wherever
/// they appear in text shown to people or recorded. Its `Debug` shows only how
/// many it holds.
#[derive(Clone, Default)]
pub struct Masker {
    /// Longest first, so a URL is masked whole before the password inside it.
    secrets: Vec<String>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Masker({} secrets)", self.secrets.len())
    }
}

impl Masker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Mask `secret` from now on (ignored when shorter than [`MIN_SECRET_LEN`]).
    pub fn add(&mut self, secret: impl Into<String>) {
        let s = secret.into();
        if s.chars().count() < MIN_SECRET_LEN || self.secrets.contains(&s) {
            return;
        }
        let at = self
            .secrets
            .iter()
            .position(|x| x.len() < s.len())
            .unwrap_or(self.secrets.len());
        self.secrets.insert(at, s);
    }

    pub fn with(mut self, secret: impl Into<String>) -> Self {
        self.add(secret);
        self
    }

    /// Everything `other` masks, too.
    pub fn extend(&mut self, other: &Masker) {
        for s in &other.secrets {
            self.add(s.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }
}

/// A program that ran and exited unsuccessfully.
#[derive(Debug)]
pub struct Failure {
    pub summary: String,
    pub command: String,
    pub status: String,
    pub code: Option<i32>,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

/// What went wrong running an external program.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("could not {summary}: `{program}` was not found on PATH{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    NotFound {
        summary: String,
        program: String,
        hint: Option<String>,
    },
    #[error("could not {summary}: failed to start `{command}`: {source}")]
    Spawn {
        summary: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not {}: `{}` {}{}", .0.summary, .0.command, .0.status, tail_text(&.0.stderr_tail, &.0.stdout_tail))]
    Failed(Box<Failure>),
    #[error(
        "could not {summary}: `{command}` did not finish within {after:?} and was stopped{}",
        tail_text(stderr_tail, "")
    )]
    TimedOut {
        summary: String,
        command: String,
        after: Duration,
        stderr_tail: String,
    },
}

fn tail_text(stderr: &str, stdout: &str) -> String {
    let mut s = String::new();
    for (name, t) in [("stderr", stderr), ("stdout", stdout)] {
        if !t.trim().is_empty() {
            s.push_str(&format!("\n  {name}:\n"));
            for line in t.trim_end().lines() {
                s.push_str("    ");
                s.push_str(line);
                s.push('\n');
            }
        }
    }
    s.trim_end().to_string()
}

impl CmdError {
    /// The child's exit code, when it ran and failed.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Failed(f) => f.code,
            _ => None,
        }
    }
}

/// Captured result of a finished command.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// An external program to run, with the reason berth runs it.
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<(OsString, bool)>,
    summary: String,
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    env_clear: bool,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    secrets: Masker,
    not_found_hint: Option<String>,
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmd")
            .field("summary", &self.summary)
            .field("command", &self.display())
            .finish()
    }
}

impl Cmd {
    /// `summary` completes the sentence "could not ...", e.g. "list the files git tracks".
    pub fn new(program: impl AsRef<OsStr>, summary: impl Into<String>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            summary: summary.into(),
            cwd: None,
            env: Vec::new(),
            env_remove: Vec::new(),
            env_clear: false,
            stdin: None,
            timeout: Some(Duration::from_secs(300)),
            secrets: Masker::new(),
            not_found_hint: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push((a.as_ref().to_owned(), false));
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| (a.as_ref().to_owned(), false)));
        self
    }

    /// An argument that is never shown (logged or in errors) as itself.
    pub fn secret_arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push((a.as_ref().to_owned(), true));
        self
    }

    /// A string (password, token) masked wherever it appears in output shown to people.
    pub fn redact(mut self, secret: impl Into<String>) -> Self {
        self.secrets.add(secret);
        self
    }

    /// Every secret of `masker` (e.g. a product's secret file) masked in this command's output.
    pub fn mask_with(mut self, masker: &Masker) -> Self {
        self.secrets.extend(masker);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Start from an empty environment: only what `env` adds reaches the program.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(k.as_ref().to_owned());
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// `None` waits forever (default: 5 minutes).
    pub fn timeout(mut self, t: Option<Duration>) -> Self {
        self.timeout = t;
        self
    }

    /// Advice shown when the program is not installed.
    pub fn hint_if_missing(mut self, hint: impl Into<String>) -> Self {
        self.not_found_hint = Some(hint.into());
        self
    }

    pub fn summary(&self) -> &str {
        &self.summary
    }

    fn mask(&self, s: &str) -> String {
        self.secrets.mask(s)
    }

    /// The command line as shown to people: quoted where needed, secrets masked.
    pub fn display(&self) -> String {
        let mut parts = vec![quote(&self.program.to_string_lossy())];
        for (a, secret) in &self.args {
            parts.push(if *secret {
                "****".into()
            } else {
                quote(&a.to_string_lossy())
            });
        }
        self.mask(&parts.join(" "))
    }

    /// Run, capture output, and fail unless the exit status is success.
    pub fn output(&self) -> Result<Output, CmdError> {
        let out = self.output_unchecked()?;
        if out.status.success() {
            return Ok(out);
        }
        Err(CmdError::Failed(Box::new(Failure {
            summary: self.summary.clone(),
            command: self.display(),
            status: describe_status(out.status),
            code: out.status.code(),
            stdout_tail: self.mask(&tail(&out.stdout)),
            stderr_tail: self.mask(&tail(&out.stderr)),
        })))
    }

    /// Run and capture output; a non-zero exit is not an error.
    pub fn output_unchecked(&self) -> Result<Output, CmdError> {
        let command = self.display();
        tracing::debug!(target: "berth::cmd", "{}: {command}", self.summary);
        let mut c = self.command();
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = c.spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                CmdError::NotFound {
                    summary: self.summary.clone(),
                    program: self.program.to_string_lossy().into_owned(),
                    hint: self.not_found_hint.clone(),
                }
            } else {
                CmdError::Spawn {
                    summary: self.summary.clone(),
                    command: command.clone(),
                    source,
                }
            }
        })?;
        let stdin_thread = match (child.stdin.take(), self.stdin.clone()) {
            (Some(mut pipe), Some(data)) => Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        let mut so = child.stdout.take().expect("piped stdout");
        let mut se = child.stderr.take().expect("piped stderr");
        let t_out = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = so.read_to_end(&mut b);
            b
        });
        let t_err = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = se.read_to_end(&mut b);
            b
        });
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(source) => {
                    return Err(CmdError::Spawn {
                        summary: self.summary.clone(),
                        command,
                        source,
                    });
                }
            }
            if let Some(t) = self.timeout
                && start.elapsed() > t
            {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = t_err.join().unwrap_or_default();
                return Err(CmdError::TimedOut {
                    summary: self.summary.clone(),
                    command,
                    after: t,
                    stderr_tail: self.mask(&tail(&stderr)),
                });
            }
            std::thread::sleep(poll_interval(start.elapsed()));
        };
        if let Some(t) = stdin_thread {
            let _ = t.join();
        }
        let stdout = t_out.join().unwrap_or_default();
        let stderr = t_err.join().unwrap_or_default();
        let elapsed = start.elapsed();
        trace_end(&command, status, elapsed);
        Ok(Output {
            status,
            stdout,
            stderr,
            elapsed,
        })
    }
}

impl Cmd {
    /// The program, arguments, directory and environment as a `std::process::Command`,
    /// for the few callers that stream its output or hand it berth's terminal (`berth
    /// logs -f`, `berth run`): no timeout, no capture, no masking; stdio as inherited
    /// unless the caller sets it.
    pub fn to_command(&self) -> Command {
        tracing::debug!(target: "berth::cmd", "{}: {}", self.summary, self.display());
        self.command()
    }

    /// The program, arguments, directory and environment; nothing else set.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(self.args.iter().map(|(a, _)| a));
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        if self.env_clear {
            c.env_clear();
        }
        for k in &self.env_remove {
            c.env_remove(k);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Run until the program writes a line on stdout, ends, or `within` passes, then
    /// stop it: for a wait that blocks in the program until something happens
    /// (`docker events`). Returns the first line, if one came. Logged at trace like a
    /// finished command, `-> stopped after its first line in ...` (or `after waiting`).
    pub fn first_line(&self, within: Duration) -> Result<Option<String>, CmdError> {
        use std::io::BufRead;
        let command = self.display();
        tracing::debug!(target: "berth::cmd", "{}: {command}", self.summary);
        let mut c = self.command();
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let start = Instant::now();
        let mut child = c.spawn().map_err(|source| CmdError::Spawn {
            summary: self.summary.clone(),
            command: command.clone(),
            source,
        })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let n = std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .unwrap_or(0);
            let _ = tx.send((n > 0).then_some(line));
        });
        let line = rx.recv_timeout(within).ok().flatten();
        let _ = child.kill();
        let _ = child.wait();
        let elapsed = start.elapsed();
        tracing::trace!(
            target: "berth::cmd",
            "{command} -> stopped {} in {elapsed:?}",
            if line.is_some() { "after its first line" } else { "after waiting" }
        );
        Ok(line.map(|l| l.trim_end().to_string()))
    }

    /// Run, handing stdout to `f` record by record (records end with `sep`) while
    /// the program is still writing, so parsing overlaps with its work. Fails
    /// like [`Cmd::output`] on a non-zero exit; the timeout kills the program.
    pub fn for_each_record(&self, sep: u8, mut f: impl FnMut(&[u8])) -> Result<(), CmdError> {
        use std::io::BufRead;
        use std::sync::{Arc, Mutex};
        let command = self.display();
        tracing::debug!(target: "berth::cmd", "{}: {command}", self.summary);
        let mut c = self.command();
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = c.spawn().map_err(|source| CmdError::Spawn {
            summary: self.summary.clone(),
            command: command.clone(),
            source,
        })?;
        // Written from a thread: a program may answer before it has read all its input.
        let t_in = match (child.stdin.take(), self.stdin.clone()) {
            (Some(mut pipe), Some(data)) => Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let mut se = child.stderr.take().expect("piped stderr");
        let t_err = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = se.read_to_end(&mut b);
            b
        });
        let child = Arc::new(Mutex::new(child));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = self.timeout.map(|t| {
            let (child, done, timed_out) = (child.clone(), done.clone(), timed_out.clone());
            std::thread::spawn(move || {
                while start.elapsed() < t {
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                timed_out.store(true, std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut c) = child.lock() {
                    let _ = c.kill();
                }
            })
        });
        let mut reader = std::io::BufReader::with_capacity(1 << 16, stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(sep, &mut buf) {
                Ok(0) => break,
                Ok(_) => f(&buf),
                Err(_) => break,
            }
        }
        let status = child
            .lock()
            .map_err(|_| CmdError::Spawn {
                summary: self.summary.clone(),
                command: command.clone(),
                source: std::io::Error::other("child lock poisoned"),
            })?
            .wait();
        if let Ok(st) = status {
            trace_end(&command, st, start.elapsed());
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(w) = watchdog {
            let _ = w.join();
        }
        if let Some(t) = t_in {
            let _ = t.join();
        }
        let stderr = t_err.join().unwrap_or_default();
        let status = status.map_err(|source| CmdError::Spawn {
            summary: self.summary.clone(),
            command: command.clone(),
            source,
        })?;
        if timed_out.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(CmdError::TimedOut {
                summary: self.summary.clone(),
                command,
                after: self.timeout.unwrap_or_default(),
                stderr_tail: self.mask(&tail(&stderr)),
            });
        }
        if !status.success() {
            return Err(CmdError::Failed(Box::new(Failure {
                summary: self.summary.clone(),
                command,
                status: describe_status(status),
                code: status.code(),
                stdout_tail: String::new(),
                stderr_tail: self.mask(&tail(&stderr)),
            })));
        }
        Ok(())
    }
}

/// Poll quickly at first (most commands are short), then back off.
fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_millis(20) {
        Duration::from_micros(200)
    } else if elapsed < Duration::from_secs(1) {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(20)
    }
}

/// A finished command at trace level: `<command> -> exited with code N in 12.3ms` (the
/// line bench/swarm.sh and the deploy bench sum as external time).
fn trace_end(command: &str, status: ExitStatus, elapsed: Duration) {
    tracing::trace!(target: "berth::cmd", "{command} -> {} in {elapsed:?}", describe_status(status));
}

fn describe_status(s: ExitStatus) -> String {
    match s.code() {
        Some(c) => format!("exited with code {c}"),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(sig) = s.signal() {
                    return format!("was killed by signal {sig}");
                }
            }
            "ended abnormally".into()
        }
    }
}

fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].join("\n")
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%^".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `first_line` returns as soon as the program writes a line (it is then stopped,
    /// not waited for), and after `within` with none when it writes nothing.
    #[test]
    fn first_line_returns_at_the_first_line_and_stops_the_program() {
        let start = Instant::now();
        let line = Cmd::new("sh", "wait for a line")
            .args(["-c", "sleep 0.2; echo ready; exec sleep 30"])
            .first_line(Duration::from_secs(20))
            .unwrap();
        assert_eq!(line.as_deref(), Some("ready"));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        let start = Instant::now();
        let none = Cmd::new("sh", "wait for nothing")
            .args(["-c", "exec sleep 30"])
            .first_line(Duration::from_millis(300))
            .unwrap();
        assert_eq!(none, None);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(10),
            "{took:?}"
        );
    }

    #[test]
    fn failure_names_the_intent_and_the_output_tail() {
        let err = Cmd::new("sh", "say hello")
            .args(["-c", "echo out; echo boom >&2; exit 3"])
            .output()
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "could not say hello: `sh -c 'echo out; echo boom >&2; exit 3'` exited with code 3"
            ),
            "{msg}"
        );
        assert!(msg.contains("boom") && msg.contains("out"), "{msg}");
        assert_eq!(err.exit_code(), Some(3));
    }

    #[test]
    fn secrets_are_masked_in_display_and_errors() {
        let err = Cmd::new("sh", "leak nothing")
            .args(["-c", "echo hunter2 >&2; exit 1"])
            .redact("hunter2")
            .output()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let c = Cmd::new("psql", "connect").arg("-U").secret_arg("pw");
        assert_eq!(c.display(), "psql -U ****");
    }

    #[test]
    fn the_masker_masks_long_values_longest_first_and_never_shows_them() {
        let m = Masker::new()
            .with("pw9x")
            .with("postgresql://u:pw9x@h/db")
            .with("abc");
        assert_eq!(
            m.mask("url postgresql://u:pw9x@h/db and pw9x, abc"),
            "url **** and ****, abc"
        );
        assert_eq!(format!("{m:?}"), "Masker(2 secrets)");
        let err = Cmd::new("sh", "leak nothing")
            .args(["-c", "echo the key is pw9x; exit 1"])
            .mask_with(&m)
            .output()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the key is ****") && !err.contains("pw9x"),
            "{err}"
        );
    }

    #[test]
    fn timeouts_stop_the_child() {
        let start = Instant::now();
        let err = Cmd::new("sleep", "wait")
            .arg("5")
            .timeout(Some(Duration::from_millis(200)))
            .output()
            .unwrap_err();
        assert!(matches!(err, CmdError::TimedOut { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn missing_programs_are_named() {
        let err = Cmd::new("berth-no-such-program", "do a thing")
            .hint_if_missing("install it")
            .output()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "could not do a thing: `berth-no-such-program` was not found on PATH (install it)"
        );
    }

    #[test]
    fn records_are_streamed_and_failures_reported() {
        let mut got = Vec::new();
        Cmd::new("printf", "print records")
            .arg("a\\036b\\036c")
            .for_each_record(0x1e, |r| got.push(String::from_utf8_lossy(r).into_owned()))
            .unwrap();
        assert_eq!(got, ["a\u{1e}", "b\u{1e}", "c"]);
        let err = Cmd::new("sh", "fail late")
            .args(["-c", "echo x; echo bad >&2; exit 4"])
            .for_each_record(b'\n', |_| {})
            .unwrap_err();
        assert_eq!(err.exit_code(), Some(4));
        assert!(err.to_string().contains("bad"));
        let err = Cmd::new("sleep", "wait")
            .arg("5")
            .timeout(Some(Duration::from_millis(100)))
            .for_each_record(b'\n', |_| {})
            .unwrap_err();
        assert!(matches!(err, CmdError::TimedOut { .. }), "{err}");
    }

    #[test]
    fn a_cleared_environment_holds_only_what_was_set() {
        let out = Cmd::new("/usr/bin/env", "print the environment")
            .env_clear()
            .env("ONLY", "this")
            .output()
            .unwrap();
        assert_eq!(out.stdout_str(), "ONLY=this\n");
    }

    #[test]
    fn stdin_is_fed() {
        let out = Cmd::new("cat", "echo stdin").stdin("abc").output().unwrap();
        assert_eq!(out.stdout_str(), "abc");
    }
}
