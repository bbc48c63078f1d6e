# STAND-IN for the packages the modules under test refer to: attribute sets
# that pass for derivations (type, name, outPath) and build nothing. Store
# paths are made up; the hash part spells out that they are fake.
let
  fake = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta = { };
  };
in
{
  kubelize-fabric = fake "fabric-0.1.0";
  curl = fake "curl-8.16.0";
  git = fake "git-2.51.0";
  nix = fake "nix-2.31.2";
  openssh = fake "openssh-10.0p2";
  systemd = fake "systemd-258";
  util-linux = fake "util-linux-2.41.1";
  callPackage = path: _: throw "stand-in pkgs cannot build ${toString path}";
}
