# What a private fleet adds: the agent keeps fetching it over SSH with a
# deploy key after first boot. Import it next to ./common.nix in
# flake.nix's `host` once the fleet's repository is private, the Machines'
# flakeRef reads git+ssh://git@github.com/<org>/fleet?ref=main#<host>, and
# their spec.nix.credentialsSecretRef names the deploy key's Secret
# (README.md, "Private fleet repositories").
{
  services.fabric.credentials = {
    # The deploy key the Machine's Secret put there at first boot. With
    # sops-nix or agenix, name their file instead, e.g.
    # config.sops.secrets.fleet-deploy-key.path; never a Nix path such as
    # ./deploy-key, which would land in the world-readable Nix store.
    sshKeyFile = "/etc/fabric/credentials/ssh-key";
    # github.com's host key, pinned in the fleet itself (it is public, so a
    # Nix path is fine): when the forge changes it, this file is one commit.
    # `ssh-keygen -lf known_hosts` shows the fingerprint to compare with
    # the forge's documentation.
    knownHostsFile = ./known_hosts;
  };
}
