//! A tiny closed-loop HTTP/1.1 load generator (std only; `rustc -O bench/loadgen.rs`).
//!
//! loadgen HOST:PORT PATH CONNECTIONS SECONDS
//!
//! Each connection is a thread with a keep-alive socket sending one request after
//! another. Prints one Markdown table row: path, connections, requests, errors,
//! req/s, p50, p90, p99, max latency (ms).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn one(reader: &mut BufReader<TcpStream>, req: &[u8]) -> std::io::Result<u16> {
    reader.get_mut().write_all(req)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = None;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        let l = h.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse::<usize>().ok();
        }
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(std::io::Error::other)?;
            let mut body = vec![0u8; n + 2];
            reader.read_exact(&mut body)?;
            if n == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0u8; len.unwrap_or(0)];
        reader.read_exact(&mut body)?;
    }
    Ok(status)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        eprintln!("usage: loadgen HOST:PORT PATH CONNECTIONS SECONDS");
        std::process::exit(2);
    }
    let (addr, path) = (a[1].clone(), a[2].clone());
    let conns: usize = a[3].parse().expect("CONNECTIONS");
    let secs: u64 = a[4].parse().expect("SECONDS");
    let auth = std::env::var("LOADGEN_BEARER")
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").into_bytes();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, req) = (addr.clone(), req.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(200_000);
                let mut errors = 0u64;
                let mut reader = None;
                while Instant::now() < end {
                    if reader.is_none() {
                        match TcpStream::connect(&addr) {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                reader = Some(BufReader::with_capacity(64 * 1024, s));
                            }
                            Err(_) => {
                                errors += 1;
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        }
                    }
                    let t = Instant::now();
                    match one(reader.as_mut().expect("connected"), &req) {
                        Ok(200) => lat.push(t.elapsed()),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            reader = None;
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (l, e) = t.join().expect("a load thread");
        all.extend(l);
        errors += e;
    }
    let took = start.elapsed().as_secs_f64();
    all.sort();
    println!(
        "| `{path}` | {conns} | {} | {errors} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
        all.len(),
        all.len() as f64 / took,
        pct(&all, 0.50),
        pct(&all, 0.90),
        pct(&all, 0.99),
        all.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
}
