//! Writes the seed corpus of every fuzz target from the repository's own
//! examples and test fixtures (run from `fuzz/`):
//!
//! ```text
//! cargo run --example seed_corpus
//! ```
//!
//! Files are named after their source, so a re-run overwrites them rather
//! than adding copies; what libFuzzer found and `cargo fuzz cmin` kept is
//! left alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fabric_converge::state::{self, Deployment, Failure, Outcome, Phase, State, Timestamp};
use function_sdk_rust::proto::v1::{
    RequestMeta, Resource, Resources, RunFunctionRequest, State as ResourceState,
};
use function_sdk_rust::resource::json_to_struct;
use prost::Message;
use serde_json::Value as Json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = repo().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn docs(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Json>(&text).unwrap()
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

fn resource(doc: &Json) -> Resource {
    Resource {
        resource: doc.as_object().map(json_to_struct),
        ..Default::default()
    }
}

fn machines_and_secrets() {
    for dir in [
        "examples/machines",
        "crates/fabric-cloudinit/tests/fixtures",
        "example",
    ] {
        for path in yaml_files(dir) {
            let text = std::fs::read(&path).unwrap();
            let name = format!("{}-{}.yaml", dir.replace('/', "_"), stem(&path));
            let lossy = String::from_utf8_lossy(&text);
            if lossy.contains("kind: Secret") {
                write("secret", &name, &text);
            }
            if lossy.contains("kind: Machine") || lossy.contains("kind: XMachine") {
                write("machine", &name, &text);
                // The same machine as the cluster holds it (JSON).
                for (i, doc) in docs(&path).iter().enumerate() {
                    let json = serde_json::to_vec_pretty(doc).unwrap();
                    write("machine", &format!("{name}.{i}.json"), &json);
                }
                for line in lossy.lines() {
                    if let Some(flake) = line.trim().strip_prefix("flakeRef:") {
                        let flake = flake.trim();
                        let file = format!("{name}-flakeref");
                        write("flake_ref", &file, flake.as_bytes());
                    }
                }
            }
        }
    }
    // Every scheme the parser knows, with the parameters it knows.
    for (i, flake) in [
        "git+https://github.com/org/fleet?ref=main&dir=hosts#dns01",
        "git+ssh://git@github.com/org/fleet?rev=0123456789abcdef0123456789abcdef01234567#web",
        "git+file:///srv/fleet?submodules=1#test",
        "github:org/fleet/v1.2#dns01",
        "gitlab:group/sub/fleet?ref=main#a",
        "sourcehut:~user/fleet#b",
        "https://example.org/fleet.tar.gz#c",
    ]
    .iter()
    .enumerate()
    {
        write("flake_ref", &format!("scheme-{i}"), flake.as_bytes());
    }
}

fn states() {
    let at = |s: u64| Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s));
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let mut s = State {
        flake: Some("git+https://github.com/org/fleet?ref=main#dns01".into()),
        last_check: Some(at(10)),
        last_success: Some(at(9)),
        interval_seconds: Some(60),
        ..State::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str, s: &State| {
        let path = dir.path().join(name);
        state::save(&path, s).unwrap();
        write("state", name, &std::fs::read(&path).unwrap());
    };
    save("empty.json", &State::default());
    let mut ok = Deployment::start(Phase::Build);
    ok.started_at = at(1);
    ok.finished_at = Some(at(5));
    ok.outcome = Outcome::Switched;
    ok.phase = Phase::Commit;
    ok.build_seconds = Some(3.25);
    ok.activation_seconds = Some(0.5);
    ok.revision = serde_json::from_value(Json::String(rev.into())).unwrap();
    s.record(&ok);
    let mut failed = Deployment::start(Phase::Build);
    failed.started_at = at(6);
    failed.outcome = Outcome::RolledBack;
    failed.error = Some(Failure {
        phase: Phase::Health,
        message: "unit nginx.service failed".into(),
        command: Some("systemctl is-system-running --wait".into()),
        exit_code: Some(1),
        tail: "degraded\n".into(),
    });
    s.record(&failed);
    let mut running = Deployment::start(Phase::Switch);
    running.started_at = at(7);
    s.record(&running);
    save("history.json", &s);
    // The flake target file the agent reads.
    write(
        "state",
        "nix-flake-target",
        b"git+https://github.com/org/fleet?ref=main#dns01\n",
    );
}

fn requests() {
    let ex = |f: &str| repo().join("example").join(f);
    let input = docs(&ex("composition.yaml"))
        .into_iter()
        .find_map(|d| {
            d.pointer("/spec/pipeline")
                .and_then(Json::as_array)
                .and_then(|steps| steps.iter().find_map(|s| s.get("input").cloned()))
        })
        .expect("the example Composition has a step input");
    let secret = docs(&ex("secret.yaml")).remove(0);
    for xr_file in ["xr.yaml", "xmachine.yaml"] {
        let xr = docs(&ex(xr_file))
            .into_iter()
            .find(|d| matches!(d["kind"].as_str(), Some("Machine" | "XMachine")))
            .unwrap();
        let base = RunFunctionRequest {
            meta: Some(RequestMeta {
                tag: "fuzz-seed".into(),
                capabilities: vec![],
            }),
            observed: Some(ResourceState {
                composite: Some(resource(&xr)),
                resources: Default::default(),
            }),
            desired: Some(ResourceState::default()),
            input: input.as_object().map(json_to_struct),
            ..Default::default()
        };
        let name = stem(Path::new(xr_file));
        write(
            "run_function",
            &format!("{name}-first"),
            &base.encode_to_vec(),
        );
        // With the Secret the function asks for, and each observed stage.
        let mut with_secret = base.clone();
        with_secret.required_resources.insert(
            "ssh-keys".into(),
            Resources {
                items: vec![resource(&secret)],
            },
        );
        write(
            "run_function",
            &format!("{name}-secret"),
            &with_secret.encode_to_vec(),
        );
        for observed in yaml_files("example/observed") {
            let mut req = with_secret.clone();
            for doc in docs(&observed) {
                let key = doc
                    .pointer("/metadata/annotations/crossplane.io~1composition-resource-name")
                    .and_then(Json::as_str)
                    .unwrap_or("snippet")
                    .to_string();
                req.observed
                    .as_mut()
                    .unwrap()
                    .resources
                    .insert(key, resource(&doc));
            }
            let file = format!("{name}-observed-{}", stem(&observed));
            write("run_function", &file, &req.encode_to_vec());
        }
        // The Secret as an extra resource (the older name of the field).
        let mut selected = base.clone();
        selected.extra_resources.insert(
            "ssh-keys".into(),
            Resources {
                items: vec![resource(&secret)],
            },
        );
        write(
            "run_function",
            &format!("{name}-extra"),
            &selected.encode_to_vec(),
        );
    }
}

fn main() {
    machines_and_secrets();
    states();
    requests();
}
