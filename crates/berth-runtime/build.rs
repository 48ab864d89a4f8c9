//! Builds `berth-probe` (crates/berth-probe/src/main.rs, std only) as a static
//! executable for the target, so berth can hand it to any container: the compose
//! health checks and the in-container reachability check run it, not the image's
//! tools. Without a static C library the probe is left out and berth says so
//! when a container needs it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../berth-probe/src/main.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("berth-probe");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = std::env::var("TARGET").unwrap_or_default();
    let mut c = Command::new(rustc);
    c.args([
        "--edition",
        "2024",
        "--crate-name",
        "berth_probe",
        "-C",
        "opt-level=s",
        "-C",
        "panic=abort",
        "-C",
        "strip=symbols",
        "-C",
        "target-feature=+crt-static",
    ]);
    if !target.is_empty() {
        c.args(["--target", &target]);
    }
    let ok = c
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!(
            "cargo:warning=could not build a static berth-probe (is a static C library installed?); compose health checks will need `health.command`"
        );
        let _ = std::fs::remove_file(&out);
        std::fs::write(&out, b"").unwrap();
    }
}
