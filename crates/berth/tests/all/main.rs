//! Integration tests: drive the real `berth` binary in temp directories with a
//! pinned environment, against real git repositories.

mod check;
mod cli;
mod demo;
mod init;
mod product;
mod schema;
mod secrets;
mod support;
