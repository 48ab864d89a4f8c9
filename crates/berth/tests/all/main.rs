//! Integration tests: drive the real `berth` binary in temp directories with a
//! pinned environment, against real git repositories.

mod affected;
mod audit;
mod backup;
mod badday_state;
mod check;
mod cli;
mod compose;
mod contract;
mod demo;
mod deploy;
mod doctor;
mod fastapi;
mod hooks;
mod init;
mod kubernetes;
mod lint;
mod log;
mod logs;
mod notify;
mod product;
mod progress;
mod provision;
mod render;
mod run_cmd;
mod schema;
mod secrets;
mod secrets_cmd;
mod serve;
mod soak;
mod support;
mod swarm;
mod tls;
mod trace_secrets;
