//! berth: run several products from one monorepo on shared infrastructure.

mod cli;
mod commands;
mod demo_files;
mod exit;
mod output;
mod progress;

fn main() -> std::process::ExitCode {
    commands::run()
}
