//! Per-product logical backups.
//!
//! A backup is a `pg_dump` custom-format archive (uncompressed by pg_dump), streamed
//! through multithreaded zstd (and, with recipients, age) into
//! `<dir>/<product>_<UTC stamp>.dump.zst[.age]`, written under a temporary name,
//! mode 0600, renamed only when complete, with a JSON record beside it
//! (`<file>.json`) holding its checksum, sizes, versions and the row count of every
//! table at the dump's snapshot.

pub mod catalog;

pub use catalog::{Record, TableCount, latest, list};
