# The Fabric flake of scenario 2: packages the fabric binary under test
# (committed next to this file) as the default package and app, as
# github:kubelize/fabric does with its own build.
{
  outputs =
    { self }:
    let
      fabric = builtins.derivation {
        name = "fabric";
        system = "x86_64-linux";
        builder = "/bin/sh";
        args = [
          "-c"
          "mkdir -p $out/bin && cp $src $out/bin/fabric && chmod 0755 $out/bin/fabric"
        ];
        PATH = "/usr/bin:/bin";
        src = ./fabric;
      };
    in
    {
      packages.x86_64-linux.default = fabric;
      apps.x86_64-linux.default = {
        type = "app";
        program = "${fabric}/bin/fabric";
      };
    };
}
