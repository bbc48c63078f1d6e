//! The names the cloud-init renderer writes into every VM must be the ones
//! the converge engine and the NixOS module use; the renderer keeps its own
//! copies so that it stays a pure, light crate, and this test ties them.

#[test]
fn cloud_init_and_converge_agree_on_names_and_paths() {
    use fabric_cloudinit as ci;
    use fabric_converge::layout;
    assert_eq!(ci::BOOTSTRAP_UNIT, layout::BOOTSTRAP_UNIT);
    assert_eq!(ci::FLAKE_TARGET, layout::FLAKE_TARGET);
    assert_eq!(ci::BOOTSTRAP_MARKER, layout::BOOTSTRAP_MARKER);
    // The fleet credential: cloud-init writes it where bootstrap and the
    // agent look for it when no flag says otherwise.
    assert_eq!(ci::CREDENTIALS_DIR, layout::CREDENTIALS_DIR);
    assert_eq!(ci::SSH_KEY_FILE, layout::SSH_KEY_FILE);
    assert_eq!(ci::KNOWN_HOSTS_FILE, layout::KNOWN_HOSTS_FILE);
    assert_eq!(ci::ACCESS_TOKENS_FILE, layout::ACCESS_TOKENS_FILE);
}

#[test]
fn the_rendered_bootstrap_unit_never_retries_a_usage_error() {
    // The runtime unit's RestartPreventExitStatus must be converge's exit
    // code for bad input (a refused flake target), which a retry cannot fix.
    let machine = fabric_model::Machine::from_yaml(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/machines/basic.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let seed = fabric_cloudinit::render(&machine, None, &Default::default()).unwrap();
    let want = format!(
        "RestartPreventExitStatus={}",
        fabric_converge::layout::exit::USAGE
    );
    assert!(seed.user_data.contains(&want), "user-data lacks {want}");
}
