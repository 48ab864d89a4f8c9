//! One interface for reporting long work (deploy steps and the build, backup, restore,
//! verify): the library says what it is doing ([`Progress::step`]) and how far it got
//! ([`Progress::bytes`]); the binary decides how that looks — a spinner or byte counter
//! on a terminal, plain lines in CI and pipes.

use std::io;
use std::sync::Mutex;

pub trait Progress: Sync {
    /// A stage of the work begins, in words (`stop bestays (blue slot, 0123abcd)`).
    fn step(&self, what: &str);
    /// How many bytes of the current stage are done (a dump read, a file written).
    fn bytes(&self, _done: u64) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn step(&self, _what: &str) {}
}

/// Keeps every step and the last byte count (for tests and summaries).
#[derive(Default)]
pub struct Recorded {
    pub steps: Mutex<Vec<String>>,
    pub bytes: Mutex<u64>,
}

impl Progress for Recorded {
    fn step(&self, what: &str) {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what.to_string());
    }
    fn bytes(&self, done: u64) {
        *self.bytes.lock().unwrap_or_else(|e| e.into_inner()) = done;
    }
}

/// A `Write` of pre-formatted lines (what the deploy executor writes) handed to a
/// [`Progress`] line by line: each complete line is one step.
pub struct Lines<'a> {
    progress: &'a dyn Progress,
    partial: Vec<u8>,
}

impl<'a> Lines<'a> {
    pub fn new(progress: &'a dyn Progress) -> Self {
        Self {
            progress,
            partial: Vec::new(),
        }
    }
}

impl io::Write for Lines<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            self.progress
                .step(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Lines<'_> {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.progress.step(String::from_utf8_lossy(&rest).as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_become_steps() {
        let r = Recorded::default();
        {
            let mut w = Lines::new(&r);
            write!(w, "[a] 1/2 lock\n[a] 2/2 bu").unwrap();
            writeln!(w, "ild").unwrap();
            write!(w, "tail").unwrap();
        }
        assert_eq!(
            *r.steps.lock().unwrap(),
            ["[a] 1/2 lock", "[a] 2/2 build", "tail"]
        );
    }
}
