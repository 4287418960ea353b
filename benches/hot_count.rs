//! The cost of counting one lookup for `memory.warm: { from: hot }`
//! (`Hotness::count`, on the hit path of `tier: both` rules): time per call
//! on one hot key, over 1,000 keys, and with two threads counting at once.
//!
//!   cargo bench --bench hot_count

use std::sync::Arc;
use std::time::Instant;

use sidecache::cache::hot::Hotness;

const CALLS: usize = 5_000_000;

/// Nanoseconds per call of `count` over `keys`, by `threads` threads at once.
fn per_call(keys: &[String], threads: usize) -> f64 {
    let hot = Arc::new(Hotness::default());
    hot.set(Some(1000));
    let keys = Arc::new(keys.to_vec());
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (hot, keys) = (hot.clone(), keys.clone());
            std::thread::spawn(move || {
                for i in 0..CALLS / threads {
                    let key = &keys[(i + t) % keys.len()];
                    hot.count("product", key, key);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    start.elapsed().as_nanos() as f64 / CALLS as f64
}

fn main() {
    let one = vec!["product:1".to_owned()];
    let many: Vec<String> = (0..1000).map(|i| format!("product:{i}")).collect();
    for round in 1..=3 {
        println!(
            "round {round}: one key {:.1} ns/call, 1,000 keys {:.1} ns/call, one key from 2 threads {:.1} ns/call",
            per_call(&one, 1),
            per_call(&many, 1),
            per_call(&one, 2)
        );
    }
}
