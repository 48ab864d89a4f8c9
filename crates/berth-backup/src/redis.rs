//! The Redis part of a backup: every key under the product's prefix (SCAN + DUMP +
//! PTTL), in a small framed format, through the same zstd (and age) pipeline.
//!
//! Format: `BERTH-REDIS 1\n`, then per key `u32 key length, key, i64 pttl (-1: none),
//! u32 value length, DUMP payload` (big-endian), then `u32::MAX`.

use std::io::{Read, Write};
use std::path::Path;

use berth_manifest::{BackupSettings, Manifest};
use berth_provision::redis_session::{Cmd, FromRedisValue, RedisSession, cmd};

use crate::BackupError;
use crate::backup::Partial;
use crate::catalog::RedisPart;
use crate::stream::{self, Encoder};

const MAGIC: &[u8] = b"BERTH-REDIS 1\n";

fn failed(what: &str) -> impl Fn(String) -> BackupError + '_ {
    move |e| BackupError::Failed(format!("could not {what} on Redis: {e}"))
}

fn run<T: FromRedisValue>(conn: &mut RedisSession, c: &Cmd, what: &str) -> Result<T, BackupError> {
    conn.query(c).map_err(|e| failed(what)(e.to_string()))
}

/// `prefix*` with the glob characters of the prefix escaped.
fn match_pattern(prefix: &str) -> String {
    let mut s = String::new();
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('*');
    s
}

/// What [`scan`] does with each batch of keys (on the same connection).
type Batch<'a> = dyn FnMut(&mut RedisSession, &[Vec<u8>]) -> Result<(), BackupError> + 'a;

/// Walk every key under `prefix` with SCAN, one batch at a time.
fn scan(conn: &mut RedisSession, prefix: &str, each: &mut Batch<'_>) -> Result<(), BackupError> {
    let pattern = match_pattern(prefix);
    let mut cursor = b"0".to_vec();
    loop {
        let (next, keys): (Vec<u8>, Vec<Vec<u8>>) = run(
            conn,
            cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000),
            "scan keys",
        )?;
        each(conn, &keys)?;
        if next == b"0" {
            return Ok(());
        }
        cursor = next;
    }
}

fn connect(m: &Manifest, root: &Path, db: u8) -> Result<RedisSession, BackupError> {
    let url = berth_provision::redis_admin_url(m, root)
        .map_err(|e| BackupError::Config(e.to_string()))?;
    berth_provision::redis_connect(&url, db.into()).map_err(|e| BackupError::Failed(e.to_string()))
}

pub fn dump(
    m: &Manifest,
    root: &Path,
    product: &str,
    dir: &Path,
    stem: &str,
    settings: &BackupSettings,
    recipients: &[age::x25519::Recipient],
) -> Result<RedisPart, BackupError> {
    let space = m.products[product].redis.as_ref().expect("checked");
    let mut conn = connect(m, root, space.db)?;
    let name = format!(
        "{stem}.redis.zst{}",
        if recipients.is_empty() { "" } else { ".age" }
    );
    let tmp = stream::partial_path(dir, &name);
    let _ = std::fs::remove_file(&tmp);
    let mut partial = Partial(Some(tmp.clone()));
    let file = stream::create_private(&tmp)
        .map_err(|e| BackupError::Failed(format!("could not create {}: {e}", tmp.display())))?;
    let mut enc = Encoder::new(file, settings.level, 1, recipients)?;
    let w = stream::io_failed_at("write the Redis backup", &dir.join(&name));
    enc.write_all(MAGIC).map_err(&w)?;
    let mut keys = 0u64;
    scan(&mut conn, &space.prefix, &mut |conn, batch| {
        for key in batch {
            let Some(value): Option<Vec<u8>> = run(conn, cmd("DUMP").arg(key), "dump a key")?
            else {
                continue; // expired between SCAN and DUMP
            };
            let ttl = match run::<i64>(conn, cmd("PTTL").arg(key), "read a key's TTL")? {
                t if t >= 0 => t,
                -2 => continue,
                _ => -1,
            };
            enc.write_all(&(key.len() as u32).to_be_bytes())
                .map_err(&w)?;
            enc.write_all(key).map_err(&w)?;
            enc.write_all(&ttl.to_be_bytes()).map_err(&w)?;
            enc.write_all(&(value.len() as u32).to_be_bytes())
                .map_err(&w)?;
            enc.write_all(&value).map_err(&w)?;
            keys += 1;
        }
        Ok(())
    })?;
    enc.write_all(&u32::MAX.to_be_bytes()).map_err(&w)?;
    let encoded = enc.finish().map_err(&w)?;
    std::fs::rename(&tmp, dir.join(&name)).map_err(&w)?;
    partial.0 = None;
    Ok(RedisPart {
        file: name,
        keys,
        file_bytes: encoded.file_bytes,
        sha256: encoded.sha256,
    })
}

/// Put the keys of a Redis backup back (RESTORE ... REPLACE, with their TTLs).
pub fn restore(
    m: &Manifest,
    root: &Path,
    product: &str,
    mut input: Box<dyn Read>,
) -> Result<u64, BackupError> {
    let space = m.products[product].redis.as_ref().ok_or_else(|| {
        BackupError::Config(format!("product `{product}` has no Redis key space"))
    })?;
    let mut conn = connect(m, root, space.db)?;
    let bad = |what: &str| BackupError::Failed(format!("the Redis backup is damaged: {what}"));
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|e| bad(&e.to_string()))?;
    if magic != MAGIC {
        return Err(bad("not a berth Redis backup"));
    }
    let mut n = 0u64;
    let mut u32buf = [0u8; 4];
    let mut i64buf = [0u8; 8];
    loop {
        input
            .read_exact(&mut u32buf)
            .map_err(|e| bad(&e.to_string()))?;
        let klen = u32::from_be_bytes(u32buf);
        if klen == u32::MAX {
            break;
        }
        let mut key = vec![0u8; klen as usize];
        input
            .read_exact(&mut key)
            .map_err(|e| bad(&e.to_string()))?;
        if !key.starts_with(space.prefix.as_bytes()) {
            return Err(bad("a key outside the product's prefix"));
        }
        input
            .read_exact(&mut i64buf)
            .map_err(|e| bad(&e.to_string()))?;
        let ttl = i64::from_be_bytes(i64buf).max(0);
        input
            .read_exact(&mut u32buf)
            .map_err(|e| bad(&e.to_string()))?;
        let mut value = vec![0u8; u32::from_be_bytes(u32buf) as usize];
        input
            .read_exact(&mut value)
            .map_err(|e| bad(&e.to_string()))?;
        run::<()>(
            &mut conn,
            cmd("RESTORE").arg(&key).arg(ttl).arg(&value).arg("REPLACE"),
            "restore a key",
        )?;
        n += 1;
    }
    Ok(n)
}

/// Delete every key under the product's prefix (SCAN + UNLINK); returns how many.
pub fn clear(m: &Manifest, root: &Path, product: &str) -> Result<u64, BackupError> {
    let space = m.products[product].redis.as_ref().ok_or_else(|| {
        BackupError::Config(format!("product `{product}` has no Redis key space"))
    })?;
    let mut conn = connect(m, root, space.db)?;
    let mut n = 0u64;
    scan(&mut conn, &space.prefix, &mut |conn, batch| {
        if !batch.is_empty() {
            run::<()>(conn, cmd("UNLINK").arg(batch), "delete keys")?;
            n += batch.len() as u64;
        }
        Ok(())
    })?;
    Ok(n)
}
