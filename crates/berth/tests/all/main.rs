//! Integration tests: drive the real `berth` binary in temp directories with a
//! pinned environment, against real git repositories.

mod affected;
mod backup;
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
mod lint;
mod log;
mod notify;
mod product;
mod provision;
mod render;
mod schema;
mod secrets;
mod secrets_cmd;
mod serve;
mod support;
mod trace_secrets;
