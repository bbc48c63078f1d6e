//! The converge state files, on any bytes: `bootstrap.json`/`agent.json`
//! through the real reader (a file on disk), and `/etc/nix-flake-target`.
//! A state the reader accepts must survive a save and a reload unchanged.
#![no_main]

use fabric_converge::state;
use fabric_converge::target::parse_flake_target;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static DIR: tempfile::TempDir = tempfile::tempdir().expect("temporary directory");
}

fuzz_target!(|data: &[u8]| {
    DIR.with(|dir| {
        let path = dir.path().join("agent.json");
        std::fs::write(&path, data).unwrap();
        match state::load(&path) {
            Ok(Some(loaded)) => {
                let again = dir.path().join("again.json");
                state::save(&again, &loaded).expect("save an accepted state");
                let reloaded = state::load(&again)
                    .expect("reload a saved state")
                    .expect("the saved file exists");
                assert_eq!(reloaded, loaded, "state changed across save and reload");
            }
            Ok(None) => panic!("an existing file read as absent"),
            Err(e) => {
                let line = e.to_string();
                assert!(
                    !line.contains(['\n', '\r']),
                    "a problem spans lines: {line:?}"
                );
            }
        }
        if let Ok(text) = std::str::from_utf8(data) {
            if let Err(e) = parse_flake_target(&dir.path().join("nix-flake-target"), text) {
                let line = e.to_string();
                assert!(
                    !line.contains(['\n', '\r']),
                    "a problem spans lines: {line:?}"
                );
            }
        }
    });
});
