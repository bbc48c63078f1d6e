//! Reading YAML with many mapping keys (issue 9): Fabric's reader against
//! serde-saphyr alone on the same bytes, in the same run.
//!
//! The file is a ConfigMap whose `data` has N keys, the shape that made
//! `fabric validate` quadratic (a scan of the mapping per key). Rows:
//! - `fabric`: `source::parse_yaml`, the tree every reader builds (positions,
//!   duplicate-key and nesting checks);
//! - `fabric-validate` (10k only): `machine::parse_stream`, what `validate`
//!   runs per file; the 1M-key file is over the 4 MiB manifest limit, which
//!   that path refuses unread;
//! - `serde-saphyr`: `serde_saphyr::from_str` into `serde_json::Value`, with
//!   its default duplicate-key check and no budget (its default budget stops
//!   at 1M events), the baseline;
//! - `events`: the parser's events alone, the floor both sit on.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("yaml-keys");
    group.sample_size(10);
    for keys in [10_000usize, 1_000_000] {
        let text = config_map(keys);
        let docs = source::parse_yaml(&text).expect("valid YAML");
        let data = docs[0].get("data").expect("data");
        assert!(matches!(&data.value, source::Value::Map(m) if m.len() == keys));
        assert_eq!(
            saphyr(&text)["data"].as_object().map(|m| m.len()),
            Some(keys)
        );
        group.throughput(Throughput::Bytes(text.len() as u64));
        let id = |name: &str| BenchmarkId::new(name, keys);
        group.bench_with_input(id("fabric"), &text, |b, t| b.iter(|| source::parse_yaml(t)));
        if text.len() <= source::MAX_MANIFEST_BYTES {
            assert!(matches!(
                parse_stream(&text).as_slice(),
                [Parsed::NotAMachine { .. }]
            ));
            group.bench_with_input(id("fabric-validate"), &text, |b, t| {
                b.iter(|| parse_stream(t))
            });
        }
        group.bench_with_input(id("serde-saphyr"), &text, |b, t| b.iter(|| saphyr(t)));
        group.bench_with_input(id("events"), &text, |b, t| b.iter(|| events(t)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
