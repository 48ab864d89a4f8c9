//! One progress interface: on a terminal a deploy shows a spinner on its current step
//! (its step lines stay above it); in a pipe, or with CI set, the same steps are plain
//! lines with no cursor movement or spinner frames.

use std::process::Stdio;

use crate::deploy::Site;
use crate::support::*;

/// What a person at a terminal sees from `berth <args>`: run under a pseudo-terminal
/// (util-linux `script`), stdout and stderr together.
fn on_a_terminal(site: &Site, args: &[&str], env: &[(&str, &str)]) -> String {
    let line = std::iter::once(env!("CARGO_BIN_EXE_berth"))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    // The pinned environment of the support builder, for `script` and the berth it runs.
    let c = berth(site.repo.path());
    let mut s = std::process::Command::new("script");
    s.args(["-qec", &line, "/dev/null"])
        .current_dir(site.repo.path())
        .env_clear()
        .stdin(Stdio::null());
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            s.env(k, v);
        }
    }
    for k in ["PATH", "DOCKER_HOST"] {
        if let Ok(v) = std::env::var(k) {
            s.env(k, v);
        }
    }
    s.env("BERTH_OPERATOR", "test-operator")
        .env("TERM", "xterm");
    for (k, v) in env {
        s.env(k, v);
    }
    let out = s.output().expect("run script (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// indicatif's default spinner frames.
fn has_spinner(s: &str) -> bool {
    s.chars().any(|c| "⠁⠂⠄⡀⢀⠠⠐⠈".contains(c))
}

#[test]
fn deploy_progress_is_a_spinner_on_a_terminal_and_plain_lines_elsewhere() {
    // Slow enough to boot that the spinner ticks while the health gate waits.
    let site = Site::new(1500);
    let piped = site.berth(&["deploy", "bestays", "--yes"]);
    piped.assert_code(0);
    assert!(
        piped.stderr.contains("[bestays] 1/"),
        "{}",
        piped.snapshot()
    );
    assert!(
        !piped.stderr.contains('\r')
            && !piped.stderr.contains('\u{1b}')
            && !has_spinner(&piped.stderr),
        "cursor movement or a spinner in a pipe:\n{:?}",
        piped.stderr
    );

    site.change("bestays", 71);
    let tty = on_a_terminal(&site, &["deploy", "bestays", "--yes"], &[]);
    assert!(has_spinner(&tty), "no spinner on a terminal:\n{tty:?}");
    // The step lines stay on the screen.
    assert!(tty.contains("[bestays] 1/"), "{tty:?}");
    assert!(tty.contains("is live in"), "{tty:?}");

    // CI set: a terminal in a CI log is still plain lines.
    site.change("bestays", 72);
    let ci = on_a_terminal(&site, &["deploy", "bestays", "--yes"], &[("CI", "true")]);
    assert!(ci.contains("[bestays] 1/"), "{ci:?}");
    assert!(!has_spinner(&ci), "a spinner with CI set:\n{ci:?}");
}
