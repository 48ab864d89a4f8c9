//! The bench's entry to the one load generator of the tests and the bench,
//! crates/berth-testkit/src/load.rs (std only; `rustc -O bench/loadgen.rs`).
//!
//! loadgen 127.0.0.1:PORT PATH CONNECTIONS SECONDS
//!
//! CONNECTIONS workers each keep a connection alive and send one request after
//! another (closed loop, no pause). `LOADGEN_BEARER` adds an `Authorization:
//! Bearer` header. Prints one Markdown table row: path, connections, requests,
//! errors (no answer, or not 2xx), req/s, p50, p90, p99, max latency (ms).

#[allow(dead_code)]
#[path = "../crates/berth-testkit/src/load.rs"]
mod load;

use std::time::Duration;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        eprintln!("usage: loadgen 127.0.0.1:PORT PATH CONNECTIONS SECONDS");
        std::process::exit(2);
    }
    let port: u16 = match a[1].strip_prefix("127.0.0.1:").map(str::parse) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("loadgen: the address must be 127.0.0.1:PORT, not {}", a[1]);
            std::process::exit(2);
        }
    };
    let path = a[2].clone();
    let conns: usize = a[3].parse().expect("CONNECTIONS");
    let secs: u64 = a[4].parse().expect("SECONDS");
    let mut config = load::LoadConfig::new(port, &a[1])
        .paths(&[path.as_str()])
        .workers(conns, 0)
        .pause(Duration::ZERO)
        .max_duration(Duration::from_secs(secs));
    if let Ok(t) = std::env::var("LOADGEN_BEARER") {
        config = config.header(&format!("Authorization: Bearer {t}"));
    }
    let run = config.start();
    while run.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = run.finish();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| `{path}` | {conns} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
        r.requests(),
        r.errors(),
        r.rate(),
        ms(r.percentile(0.50)),
        ms(r.percentile(0.90)),
        ms(r.percentile(0.99)),
        ms(r.max_latency())
    );
}
