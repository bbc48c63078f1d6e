//! `validate` over a generated fleet: parse, check and cross-check.
//!
//! Target (issue 2): 10,000 machines in under 200 ms on the 2-core CI
//! machine, growing linearly. The 1,000-machine run is there to show the
//! growth: its time times ten should match the 10,000-machine time.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fabric_model::fleet::{conflicts, Member};
use fabric_model::machine::{parse_many, Parsed};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIKgbSVplTIryI0rlsezozbM059+F0MeTz+99B8cYy6s alice@laptop";

fn fleet(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: infra.kubelize.io/v1alpha1\nkind: Machine\nmetadata:\n  name: m{i}\n  namespace: fleet\nspec:\n  hostname: m{i}\n  domain: fleet.example\n  cpu: {{cores: 2}}\n  memory: {{size: 4096}}\n  image: nixos-template\n  network:\n    dhcp: false\n    ip: 10.{}.{}.{}\n    cidr: 8\n    gateway: 10.255.255.254\n    dns: [10.0.0.2, 1.1.1.1]\n    ipv6: {{address: \"fd00::{:x}\", prefix: 64, gateway: \"fd00::1\"}}\n  proxmox: {{node: pve1, vlan: 20}}\n  nix:\n    flakeRef: git+https://git.example/fleet?ref=main#m{i}\n  bootstrap:\n    sshAuthorizedKeys: [\"{KEY}\"]\n  tags: {{role: web}}\n",
                ((i + 1) >> 16) & 255,
                ((i + 1) >> 8) & 255,
                (i + 1) & 255,
                i + 2
            )
        })
        .collect()
}

fn validate(files: &[String]) -> usize {
    let mut machines = Vec::with_capacity(files.len());
    for docs in parse_many(files) {
        for doc in docs {
            if let Parsed::Machine(m) = doc {
                machines.push(*m);
            }
        }
    }
    let members: Vec<Member> = machines
        .iter()
        .map(|machine| Member {
            file: "f.yaml",
            machine,
        })
        .collect();
    members.len() + conflicts(&members).len()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    group.sample_size(10);
    for n in [1_000usize, 10_000] {
        let files = fleet(n);
        assert_eq!(
            validate(&files),
            n,
            "the generated fleet must be valid and conflict-free"
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &files, |b, f| {
            b.iter(|| validate(f))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
