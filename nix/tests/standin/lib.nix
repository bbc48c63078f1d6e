# STAND-IN for the part of nixpkgs' `lib` that nix/module.nix,
# nix/proxmox-guest.nix and nix/proxmox-template.nix use. nixpkgs cannot be
# fetched where CI runs; this lets nix/tests/eval-standin.nix evaluate those
# files with plain `nix-instantiate`.
#
# The property constructors (mkIf, mkMerge, mkOverride) build the same
# attribute sets as nixpkgs' lib/modules.nix, and each type merges and
# checks definitions the way its nixpkgs namesake does, within the cases
# these files need. Anything else is missing on purpose: a module that
# starts using another `lib` function fails here loudly, and the function
# must be added with nixpkgs' semantics.
let
  inherit (builtins)
    all
    any
    concatLists
    concatStringsSep
    elem
    filter
    head
    isAttrs
    isBool
    isInt
    isList
    isString
    length
    map
    stringLength
    substring
    toJSON
    ;

  showLoc = loc: concatStringsSep "." loc;

  showDefs = defs: concatStringsSep "" (map (d: "\n  - In `${d.file}': ${toJSON d.value}") defs);

  # nixpkgs' mergeEqualOption: every definition must have the same value.
  mergeEqual =
    loc: defs:
    let
      first = head defs;
    in
    if all (d: d.value == first.value) defs then
      first.value
    else
      throw "The option `${showLoc loc}' has conflicting definition values:${showDefs defs}";

  # nixpkgs' mergeOneOption: exactly one definition.
  mergeOne =
    loc: defs:
    if length defs == 1 then
      (head defs).value
    else
      throw "The unique option `${showLoc loc}' is defined multiple times.";

  isDerivation = v: isAttrs v && (v.type or null) == "derivation";

  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };

  types = {
    bool = {
      name = "bool";
      description = "boolean";
      check = isBool;
      merge = mergeEqual;
    };
    str = {
      name = "str";
      description = "string";
      check = isString;
      merge = mergeEqual;
    };
    int = {
      name = "int";
      description = "signed integer";
      check = isInt;
      merge = mergeEqual;
    };
    package = {
      name = "package";
      description = "package";
      check = isDerivation;
      merge = mergeOne;
    };
    # Any value. Definitions merge the way NixOS merges systemd unit
    # settings (unitOption in nixos/lib/systemd-unit-options.nix): when any
    # is a list, all are concatenated; otherwise they must agree. Undeclared
    # paths in the stand-in module system merge the same way.
    unspecified = {
      name = "unspecified";
      description = "unspecified value";
      check = _: true;
      merge =
        loc: defs:
        if any (d: isList d.value) defs then
          concatLists (map (d: if isList d.value then d.value else [ d.value ]) defs)
        else
          mergeEqual loc defs;
    };
    nullOr = elemType: {
      name = "nullOr";
      description = "null or ${elemType.description}";
      check = v: v == null || elemType.check v;
      merge =
        loc: defs:
        let
          nulls = filter (d: d.value == null) defs;
        in
        if length nulls == length defs then
          null
        else if nulls != [ ] then
          throw "The option `${showLoc loc}' is defined both null and not null:${showDefs defs}"
        else
          elemType.merge loc defs;
    };
    listOf = elemType: {
      name = "listOf";
      description = "list of ${elemType.description}";
      check = v: isList v && all elemType.check v;
      merge = loc: defs: concatLists (map (d: d.value) defs);
    };
    strMatching = pattern: {
      name = "strMatching ${toJSON pattern}";
      description = "string matching the pattern ${pattern}";
      check = v: isString v && builtins.match pattern v != null;
      merge = mergeEqual;
    };
    enum = values: {
      name = "enum";
      inherit values;
      description = "one of ${concatStringsSep ", " (map toJSON values)}";
      check = v: elem v values;
      merge = mergeEqual;
    };
    # An attribute set whose values are merged by the stand-in module
    # system itself (nix/tests/standin/modules.nix), the way an
    # `attrsOf (submodule { freeformType = ...; })` option is in NixOS:
    # `mkIf false` drops a name altogether.
    attrsOf = elemType: {
      name = "attrsOf";
      description = "attribute set of ${elemType.description}";
      check = isAttrs;
      mergeAttrs = true;
    };
  };
in
{
  inherit types mkOverride isDerivation;

  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;

  mkOption =
    attrs:
    attrs
    // {
      _type = "option";
    };
  mkEnableOption =
    name:
    {
      _type = "option";
      default = false;
      example = true;
      type = types.bool;
      description = "Whether to enable ${name}.";
    };
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };

  inherit (builtins) concatMap concatStringsSep;

  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
  removeSuffix =
    suffix: s:
    let
      sLen = stringLength s;
      n = stringLength suffix;
    in
    if n <= sLen && substring (sLen - n) n s == suffix then substring 0 (sLen - n) s else s;
  genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
  recursiveUpdate =
    let
      go =
        lhs: rhs:
        lhs
        // builtins.mapAttrs (
          name: r: if lhs ? ${name} && isAttrs lhs.${name} && isAttrs r then go lhs.${name} r else r
        ) rhs;
    in
    go;
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
}
