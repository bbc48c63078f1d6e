//! Rendering cost per machine (issue 2 target: under 50 µs on the 2-core
//! CI machine), and the seed image for comparison.
//!
//! cargo bench -p fabric-cloudinit --bench render

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fabric_cloudinit::{render, seed_iso, RenderOptions};
use fabric_model::Machine;

/// The richest fixture: domain, MAC, IPv4 and IPv6, two keys.
const MACHINE: &str = include_str!("../tests/fixtures/yaml11-traps.yaml");

fn bench(c: &mut Criterion) {
    let Ok(machine) = Machine::from_yaml(MACHINE) else {
        eprintln!("the bench fixture is not a valid machine");
        return;
    };
    let opts = RenderOptions::default();
    c.bench_function(
        "render one machine (user-data, meta-data, network-config)",
        |b| b.iter(|| render(black_box(&machine), None, black_box(&opts))),
    );
    let Ok(seed) = render(&machine, None, &opts) else {
        eprintln!("the bench fixture does not render");
        return;
    };
    c.bench_function("seed ISO of one machine", |b| {
        b.iter(|| seed_iso(black_box(&seed)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
