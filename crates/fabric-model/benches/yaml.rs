//! Reading YAML with many mapping keys (issue 9): Fabric's reader against
//! serde-saphyr alone on the same bytes, measured in the same run.
//!
//! The file is a ConfigMap whose `data` has N keys (10k, 100k, 1M), the
//! shape that made `fabric validate` quadratic (a scan of the mapping per
//! key). Readers:
//! - `fabric`: `source::parse_yaml`, the tree every reader builds (positions,
//!   duplicate-key and nesting checks);
//! - `fabric-validate`: `machine::parse_stream`, what `validate` runs per
//!   file, for the files within the 4 MiB manifest limit (that path refuses
//!   the 27 MB 1M-key file unread);
//! - `serde-saphyr`: `serde_saphyr::from_str` into `serde_json::Value`, with
//!   its default duplicate-key check and no budget (its default budget stops
//!   at 1M events): the baseline;
//! - `events`: the parser's events alone, the floor both sit on.
//!
//! The machine's load drifts (other builds share it), so each round times
//! every reader once, in a rotating order, and the ratio is taken per round;
//! the medians over rounds are printed.

use std::time::{Duration, Instant};

use fabric_model::machine::{parse_stream, Parsed};
use fabric_model::source;
use serde_saphyr::granit_parser::Parser;

fn config_map(keys: usize) -> String {
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n");
    for i in 0..keys {
        text.push_str(&format!("  key-{i}: value {i}\n"));
    }
    text
}

fn events(text: &str) -> usize {
    let mut parser = Parser::new_from_str(text);
    let mut n = 0;
    while let Some(e) = parser.next_event() {
        std::hint::black_box(e.expect("valid YAML"));
        n += 1;
    }
    n
}

fn saphyr(text: &str) -> serde_json::Value {
    let options = serde_saphyr::options! { budget: None };
    serde_saphyr::from_str_with_options(text, options).expect("valid YAML")
}

type Reader = (&'static str, fn(&str));

fn readers(validate: bool) -> Vec<Reader> {
    let mut r: Vec<Reader> = vec![
        ("fabric", |t| {
            drop(std::hint::black_box(source::parse_yaml(t)))
        }),
        ("serde-saphyr", |t| drop(std::hint::black_box(saphyr(t)))),
        ("events", |t| {
            std::hint::black_box(events(t));
        }),
    ];
    if validate {
        r.push(("fabric-validate", |t| {
            drop(std::hint::black_box(parse_stream(t)))
        }));
    }
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // then one quick round of the small file checks the bench still runs.
    let full = std::env::args().any(|a| a == "--bench");
    println!("| keys | bytes | reader | median per file | per key | vs serde-saphyr |");
    println!("|---|---|---|---|---|---|");
    let sizes: &[(usize, usize, usize)] = if full {
        &[(10_000, 21, 10), (100_000, 11, 1), (1_000_000, 7, 1)]
    } else {
        &[(10_000, 1, 1)]
    };
    for &(keys, rounds, iters) in sizes {
        let text = config_map(keys);
        let docs = source::parse_yaml(&text).expect("valid YAML");
        let data = docs[0].get("data").expect("data");
        assert!(matches!(&data.value, source::Value::Map(m) if m.len() == keys));
        assert_eq!(
            saphyr(&text)["data"].as_object().map(|m| m.len()),
            Some(keys)
        );
        let validate = text.len() <= source::MAX_MANIFEST_BYTES;
        if validate {
            assert!(matches!(
                parse_stream(&text).as_slice(),
                [Parsed::NotAMachine { .. }]
            ));
        }
        let readers = readers(validate);
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); readers.len()];
        for round in 0..rounds {
            for k in 0..readers.len() {
                let at = (k + round) % readers.len();
                let start = Instant::now();
                for _ in 0..iters {
                    (readers[at].1)(&text);
                }
                times[at].push(start.elapsed().as_secs_f64() / iters as f64);
            }
        }
        let base = readers
            .iter()
            .position(|r| r.0 == "serde-saphyr")
            .expect("baseline");
        for (i, (name, _)) in readers.iter().enumerate() {
            let ratio = median(
                times[i]
                    .iter()
                    .zip(&times[base])
                    .map(|(t, b)| t / b)
                    .collect(),
            );
            let t = median(times[i].clone());
            println!(
                "| {keys} | {} | {name} | {:.2?} | {:.0} ns | {ratio:.2}x |",
                text.len(),
                Duration::from_secs_f64(t),
                t * 1e9 / keys as f64
            );
        }
    }
}
