# dns01: a caching DNS resolver for the lab network.
{
  services.unbound = {
    enable = true;
    settings.server = {
      interface = [ "0.0.0.0" ];
      access-control = [ "10.0.1.0/24 allow" ];
    };
  };
  networking.firewall = {
    allowedUDPPorts = [ 53 ];
    allowedTCPPorts = [ 53 ];
  };

  # Adds to the fleet-wide checks in common.nix, after them (mkBefore there).
  services.fabric.agent.healthChecks = [ "systemctl is-active --quiet unbound.service" ];
}
