//! Decode benchmark: CPA queue payloads decoded per second on one core, over the
//! 40 reference payloads (every CPA version and failure shape), in a loop.
//!
//! Run with `cargo xtask bench decode`.

use std::time::Instant;

use cpamp_domain::decode::decode;
use cpamp_domain::event::Decoded;

const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/cpa/usage-events.jsonl");

fn main() {
    let lines: Vec<&[u8]> = FIXTURE
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(5_000);
    let bytes: usize = lines.iter().map(|line| line.len()).sum();
    let mut events = 0usize;
    // Warm up once, then measure.
    for line in &lines {
        if matches!(decode(line, 1_767_225_600_000), Decoded::Event(_)) {
            events += 1;
        }
    }
    assert_eq!(
        events,
        lines.len(),
        "every reference payload must decode to an event"
    );
    let started = Instant::now();
    for _ in 0..rounds {
        for line in &lines {
            std::hint::black_box(decode(std::hint::black_box(line), 1_767_225_600_000));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let payloads = (rounds * lines.len()) as f64;
    println!(
        "decode benchmark: {} reference payloads x {rounds} rounds, one core",
        lines.len()
    );
    println!("{:<24} {:>14}", "measure", "value");
    println!("{:<24} {:>14.0}", "payloads/s", payloads / elapsed);
    println!(
        "{:<24} {:>12.1}MB/s",
        "payload bytes/s",
        (bytes * rounds) as f64 / elapsed / 1e6
    );
    println!("{:<24} {:>12.2}us", "per payload", elapsed / payloads * 1e6);
}
