# STAND-IN for the part of nixpkgs' `lib` that nix/module.nix,
# nix/proxmox-guest.nix, nix/proxmox-template.nix, the example fleet and the
# stand-in NixOS options (nixos.nix here) use. nixpkgs cannot be fetched
# where CI runs; this lets nix/tests/eval-standin.nix evaluate those files
# with plain `nix-instantiate`. nix/tests/module-system.nix takes nixpkgs'
# real lib instead when FABRIC_NIXPKGS_LIB names a copy of it.
#
# What it does as nixpkgs 25.11's lib/modules.nix, lib/types.nix and
# lib/options.nix do (and the checks hold against both):
#
# - the property constructors (mkIf, mkMerge, mkOverride, mkOrder) build
#   the same attribute sets;
# - an option's definitions are discharged (mkIf, mkMerge), the highest
#   priority wins (mkForce 50 < plain 100 < mkDefault 1000 < the option's
#   default 1500), the winners are sorted by mkOrder (mkBefore 500 <
#   plain 1000 < mkAfter 1500, stable), each is checked against the type,
#   and the type merges them, with nixpkgs' error messages;
# - each type checks and merges as its nixpkgs namesake does, within the
#   cases these files need; `attrsOf` merges every name on its own and
#   drops a name that `mkIf false` leaves without a definition;
#   `submodule` evaluates its definitions as modules (modules.nix here).
#
# Anything else is missing on purpose: a module that starts using another
# `lib` function fails here loudly, and the function must be added with
# nixpkgs' semantics (and checked against the real lib, see README.md,
# "Checking the Nix side").
let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    head
    isAttrs
    isBool
    isFloat
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    map
    match
    sort
    stringLength
    substring
    toJSON
    ;

  # lib/options.nix showOption: names that are not identifiers are quoted.
  showOption =
    loc:
    concatStringsSep "." (
      map (part: if match "[a-zA-Z_][a-zA-Z0-9_'-]*" part != null then part else toJSON part) loc
    );

  showDefs = defs: concatStringsSep "" (map (d: "\n- In `${d.file}': ${showValue d.value}") defs);
  showValue =
    v:
    if isDerivation v then
      "<derivation ${v.name or "?"}>"
    else if isFunction v then
      "<function>"
    else
      toJSON v;

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  isDerivation = v: isAttrs v && (v.type or null) == "derivation";

  # lib/options.nix mergeEqualOption: every definition must have the same
  # value.
  mergeEqualOption =
    loc: defs:
    let
      first = head defs;
    in
    if all (d: d.value == first.value) defs then
      first.value
    else
      throw "The option `${showOption loc}' has conflicting definition values:${showDefs defs}\nUse `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.";

  # lib/options.nix mergeOneOption (what `package` uses).
  mergeOneOption =
    loc: defs:
    if length defs == 1 then
      (head defs).value
    else
      throw "The option `${showOption loc}' is defined multiple times while it's expected to be unique.";

  # lib/options.nix mergeDefaultOption (what `unspecified` uses).
  mergeDefaultOption =
    loc: defs:
    let
      list = map (d: d.value) defs;
    in
    if length list == 1 then
      head list
    else if all isList list then
      concatLists list
    else if all isAttrs list then
      foldl' (a: b: a // b) { } list
    else if all isBool list then
      any (x: x) list
    else if all isString list then
      concatStringsSep "" list
    else if all isInt list && all (x: x == head list) list then
      head list
    else
      throw "Cannot merge definitions of `${showOption loc}'. Definition values:${showDefs defs}";

  mkOptionType =
    attrs:
    {
      _type = "option-type";
      description = attrs.name;
      check = _: true;
      merge = mergeDefaultOption;
    }
    // attrs;

  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkOrder = priority: content: {
    _type = "order";
    inherit priority content;
  };

  # lib/modules.nix dischargeProperties, with the priority of any
  # mkOverride recorded on the way (filterOverrides reads it).
  discharge =
    loc: priority: v:
    let
      t = if isAttrs v then v._type or null else null;
    in
    if t == "merge" then
      concatMap (discharge loc priority) v.contents
    else if t == "if" then
      if !isBool v.condition then
        throw "mkIf called with a non-Boolean condition at `${showOption loc}'"
      else if v.condition then
        discharge loc priority v.content
      else
        [ ]
    else if t == "override" then
      discharge loc v.priority v.content
    else
      [
        {
          inherit priority;
          value = v;
        }
      ];

  # lib/modules.nix mergeDefinitions: discharge, filterOverrides,
  # sortProperties, type check, merge. `isDefined` is false when mkIf left
  # nothing (attrsOf then drops the name).
  mergeDefinitions =
    loc: type: defs:
    let
      discharged = concatMap (
        d: map (x: x // { inherit (d) file; }) (discharge loc 100 d.value)
      ) defs;
      top = foldl' (m: d: if d.priority < m then d.priority else m) 9999 discharged;
      kept = filter (d: d.priority == top) discharged;
      # sortProperties: mkOrder's priority, 1000 when none; builtins.sort
      # is stable, as lib.sort is.
      ordered = map (
        d:
        if isAttrs d.value && (d.value._type or null) == "order" then
          {
            inherit (d) file;
            value = d.value.content;
            order = d.value.priority;
          }
        else
          {
            inherit (d) file value;
            order = 1000;
          }
      ) kept;
      sorted = sort (a: b: a.order < b.order) ordered;
      final = map (d: { inherit (d) file value; }) sorted;
      bad = filter (d: !(type.check d.value)) final;
    in
    {
      isDefined = final != [ ];
      mergedValue =
        if bad != [ ] then
          throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:${showDefs bad}"
        else
          type.merge loc final;
    };

  types = rec {
    bool = mkOptionType {
      name = "bool";
      description = "boolean";
      check = isBool;
      merge = mergeEqualOption;
    };
    str = mkOptionType {
      name = "str";
      description = "string";
      check = isString;
      merge = mergeEqualOption;
    };
    int = mkOptionType {
      name = "int";
      description = "signed integer";
      check = isInt;
      merge = mergeEqualOption;
    };
    float = mkOptionType {
      name = "float";
      description = "floating point number";
      check = isFloat;
      merge = mergeEqualOption;
    };
    ints.positive = mkOptionType {
      name = "positiveInt";
      description = "positive integer, meaning >0";
      check = v: isInt v && v > 0;
      merge = mergeEqualOption;
    };
    port = mkOptionType {
      name = "unsignedInt16";
      description = "16 bit unsigned integer; between 0 and 65535 (both inclusive)";
      check = v: isInt v && v >= 0 && v <= 65535;
      merge = mergeEqualOption;
    };
    path = mkOptionType {
      name = "path";
      description = "path";
      check = v: (isPath v || isString v || isDerivation v) && substring 0 1 (toString v) == "/";
      merge = mergeEqualOption;
    };
    package = mkOptionType {
      name = "package";
      description = "package";
      check = isDerivation;
      merge = mergeOneOption;
    };
    unspecified = mkOptionType {
      name = "unspecified";
      description = "unspecified value";
    };
    attrs = mkOptionType {
      name = "attrs";
      description = "attribute set";
      check = isAttrs;
      merge = loc: defs: foldl' (a: d: a // d.value) { } defs;
    };
    # Strings joined by a separator: `lines` and `commas`.
    lines = mkOptionType {
      name = "lines";
      description = "strings concatenated with \"\\n\"";
      check = isString;
      merge = loc: defs: concatStringsSep "\n" (map (d: d.value) defs);
    };
    commas = mkOptionType {
      name = "commas";
      description = "strings concatenated with \",\"";
      check = isString;
      merge = loc: defs: concatStringsSep "," (map (d: d.value) defs);
    };
    anything = mkOptionType {
      name = "anything";
      description = "anything";
      merge =
        loc: defs:
        let
          kind = v: if isDerivation v then "package" else builtins.typeOf v;
          common = kind (head defs).value;
        in
        if !(all (d: kind d.value == common) defs) then
          throw "The option `${showOption loc}' has conflicting option types in ${
            concatStringsSep " and " (map (d: "`${d.file}'") defs)
          }"
        else if common == "set" then
          (attrsOf anything).merge loc defs
        else if common == "package" then
          mergeOneOption loc defs
        else
          mergeEqualOption loc defs;
    };
    nullOr =
      elemType:
      mkOptionType {
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
            throw "The option `${showOption loc}' is defined both null and not null, in ${
              concatStringsSep " and " (map (d: "`${d.file}'") defs)
            }."
          else
            elemType.merge loc defs;
      };
    either =
      a: b:
      mkOptionType {
        name = "either";
        description = "${a.description} or ${b.description}";
        check = v: a.check v || b.check v;
        merge =
          loc: defs:
          if all (d: a.check d.value) defs then
            a.merge loc defs
          else if all (d: b.check d.value) defs then
            b.merge loc defs
          else
            mergeOneOption loc defs;
      };
    oneOf =
      ts:
      let
        tail = builtins.tail ts;
      in
      foldl' either (head ts) tail;
    listOf =
      elemType:
      mkOptionType {
        name = "listOf";
        description = "list of ${elemType.description}";
        check = v: isList v && all elemType.check v;
        merge = loc: defs: concatMap (d: d.value) defs;
      };
    strMatching =
      pattern:
      mkOptionType {
        name = "strMatching ${toJSON pattern}";
        description = "string matching the pattern ${pattern}";
        check = v: isString v && match pattern v != null;
        merge = mergeEqualOption;
      };
    enum =
      values:
      mkOptionType {
        name = "enum";
        functor.payload = { inherit values; };
        description = "one of ${concatStringsSep ", " (map toJSON values)}";
        check = v: elem v values;
        merge = mergeEqualOption;
      };
    # Every name merged on its own; a name whose definitions mkIf removed
    # is dropped.
    attrsOf =
      elemType:
      mkOptionType {
        name = "attrsOf";
        description = "attribute set of ${elemType.description}";
        check = isAttrs;
        merge =
          loc: defs:
          let
            names = unique (concatMap (d: attrNames d.value) defs);
            merged = map (name: {
              inherit name;
              result = mergeDefinitions (loc ++ [ name ]) elemType (
                concatMap (
                  d:
                  if d.value ? ${name} then
                    [
                      {
                        inherit (d) file;
                        value = d.value.${name};
                      }
                    ]
                  else
                    [ ]
                ) defs
              );
            }) names;
          in
          listToAttrs (
            map (m: {
              inherit (m) name;
              value = m.result.mergedValue;
            }) (filter (m: m.result.isDefined) merged)
          );
      };
    lazyAttrsOf = attrsOf;
    # The definitions become modules of an evaluation of their own, after
    # the submodule's, as types.submodule's extendModules does.
    submodule =
      module:
      mkOptionType {
        name = "submodule";
        description = "submodule";
        check = v: isAttrs v || isFunction v || isPath v;
        merge =
          loc: defs:
          (self.evalModules {
            modules = [ module ] ++ map (d: {
              _file = d.file;
              imports = [ d.value ];
            }) defs;
            prefix = loc;
            specialArgs.name = builtins.elemAt loc (length loc - 1);
          }).config;
      };
  };

  self = {
    inherit
      types
      mkOverride
      mkOrder
      mkOptionType
      isDerivation
      mergeDefinitions
      mergeEqualOption
      mergeOneOption
      showOption
      ;

    evalModules = import ./modules.nix { lib = self; };

    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkDefault = mkOverride 1000;
    mkOptionDefault = mkOverride 1500;
    mkForce = mkOverride 50;
    mkBefore = mkOrder 500;
    mkAfter = mkOrder 1500;

    mkOption =
      attrs:
      attrs
      // {
        _type = "option";
      };
    mkEnableOption = name: {
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

    inherit (builtins) any concatMap concatStringsSep;

    # lib/trivial.nix warn, as it is without builtins.warn (Nix < 2.23,
    # such as Debian's 2.8): a trace, then the value.
    warn = msg: v: builtins.trace "[1;35mevaluation warning:[0m ${msg}" v;

    # lib/asserts.nix checkAssertWarn, what NixOS's top-level.nix applies
    # to `assertions` and `warnings` before it builds the system.
    asserts.checkAssertWarn =
      assertions: warnings: val:
      let
        failedAssertions = map (x: x.message) (filter (x: !x.assertion) assertions);
      in
      if failedAssertions != [ ] then
        throw "\nFailed assertions:\n${concatStringsSep "\n" (map (x: "- ${x}") failedAssertions)}"
      else
        # showWarnings: the first warning is printed first.
        builtins.foldl' (x: w: self.warn w x) val (builtins.genList (
          i: builtins.elemAt warnings (length warnings - 1 - i)
        ) (length warnings));

    hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
    removeSuffix =
      suffix: s:
      let
        sLen = stringLength s;
        n = stringLength suffix;
      in
      if n <= sLen && substring (sLen - n) n s == suffix then substring 0 (sLen - n) s else s;
    genAttrs =
      names: f:
      listToAttrs (
        map (name: {
          inherit name;
          value = f name;
        }) names
      );
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
    # lib/systems elaborate, of which the checks need only `system`.
    systems.elaborate = system: if isString system then { inherit system; } else system;
    optionals = cond: xs: if cond then xs else [ ];
  };
in
self
