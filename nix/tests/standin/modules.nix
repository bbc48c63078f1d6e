# STAND-IN for nixpkgs' module system (lib/modules.nix `evalModules`),
# just large enough to evaluate nix/module.nix and the template modules
# without nixpkgs. It is not NixOS; what it does the same way:
#
# - modules are paths, functions or attribute sets, with `imports`,
#   `options`, `config` (or config given directly), `key` and `_file`;
#   a module imported twice (same path or same `key`) counts once;
# - `config` is a fixpoint: modules read each other's values through it;
# - mkIf / mkMerge / mkOverride are pushed down into attribute sets before
#   their conditions are evaluated (as pushDownProperties does), so a module
#   may set options under a condition that reads other options;
# - the definitions of an option are discharged, the highest priority wins
#   (mkForce 50 < plain 100 < mkDefault 1000 < option default 1500), every
#   definition is checked against the option's type, then merged by it;
# - paths no module declares are merged freely: lists concatenate, other
#   values must agree, attribute sets merge recursively; except below the
#   `strict` prefixes (e.g. services.fabric), where, as everywhere in NixOS,
#   setting an option nobody declared is an error.
#
# What it leaves out: submodules, `apply` ordering subtleties, option
# documentation, `disabledModules`, `_module.args`, and every NixOS option
# that nix/tests/standin/nixos.nix does not declare.
{ lib }:

let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatMap
    concatStringsSep
    filter
    foldl'
    genList
    genericClosure
    isAttrs
    isBool
    isFunction
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    removeAttrs
    toJSON
    ;

  showLoc = loc: concatStringsSep "." loc;

  imap = f: list: genList (i: f i (builtins.elemAt list i)) (length list);

  unique = foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];

  typeOf = v: if isAttrs v then v._type or null else null;

  isOption = v: typeOf v == "option";

  # An attribute set that holds further definitions, as opposed to a value
  # (a property, a package, a literal).
  isPlain = v: isAttrs v && !(v ? _type) && !(lib.isDerivation v);

  # pushDownProperties: mkMerge splits, mkIf and mkOverride move into each
  # attribute of an attribute set. Conditions stay unevaluated.
  pushDown =
    v:
    let
      t = typeOf v;
      wrap = f: x: if isPlain x then mapAttrs (_: f) x else f x;
    in
    if t == "merge" then
      concatMap pushDown v.contents
    else if t == "if" then
      map (wrap (lib.mkIf v.condition)) (pushDown v.content)
    else if t == "override" then
      map (wrap (lib.mkOverride v.priority)) (pushDown v.content)
    else
      [ v ];

  pushDefs = defs: concatMap (d: map (value: { inherit (d) file; inherit value; }) (pushDown d.value)) defs;

  # dischargeProperties: evaluate mkIf, flatten mkMerge, record priority.
  discharge =
    loc: priority: v:
    let
      t = typeOf v;
    in
    if t == "merge" then
      concatMap (discharge loc priority) v.contents
    else if t == "if" then
      if !isBool v.condition then
        throw "mkIf called with a non-Boolean condition at `${showLoc loc}'"
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

  # filterOverrides: keep the definitions with the highest priority.
  winners =
    loc: defs:
    let
      discharged = concatMap (d: map (x: x // { inherit (d) file; }) (discharge loc 100 d.value)) defs;
      top = foldl' (m: d: if d.priority < m then d.priority else m) 9999 discharged;
    in
    filter (d: d.priority == top) discharged;

  # An undeclared path: { defined; value }. Names whose definitions all
  # vanish under mkIf false are dropped, as attrsOf does.
  mergeFree =
    loc: defs:
    let
      pushed = pushDefs defs;
    in
    if pushed != [ ] && any (d: isPlain d.value) pushed then
      if !(all (d: isPlain d.value) pushed) then
        throw "`${showLoc loc}' is defined both as an attribute set and as a value"
      else
        let
          names = unique (concatMap (d: attrNames d.value) pushed);
          children = map (name: {
            inherit name;
            result = mergeFree (loc ++ [ name ]) (
              concatMap (d: if d.value ? ${name} then [ { inherit (d) file; value = d.value.${name}; } ] else [ ]) pushed
            );
          }) names;
          kept = filter (c: c.result.defined) children;
        in
        {
          defined = kept != [ ] || names == [ ];
          value = listToAttrs (map (c: { inherit (c) name; value = c.result.value; }) kept);
        }
    else
      let
        ws = winners loc pushed;
      in
      if ws == [ ] then
        {
          defined = false;
          value = null;
        }
      else
        {
          defined = true;
          value = lib.types.unspecified.merge loc ws;
        };

  # A declared option: discharge, pick the highest priority (the default
  # counts as mkOptionDefault), check every definition, merge by type.
  mergeOption =
    loc: opt: defs:
    let
      default = if opt ? default then [ { file = "the option's default"; value = lib.mkOverride 1500 opt.default; } ] else [ ];
      ws = winners loc (defs ++ default);
      bad = filter (d: !(opt.type.check d.value)) ws;
      merged =
        if opt.type.mergeAttrs or false then
          (mergeFree loc ws).value
        else
          opt.type.merge loc ws;
    in
    if ws == [ ] then
      throw "The option `${showLoc loc}' is used but not defined."
    else if bad != [ ] then
      throw "A definition for option `${showLoc loc}' is not of type `${opt.type.description}'. Definition values:${
        concatStringsSep "" (map (d: "\n  - In `${d.file}': ${toJSON d.value}") bad)
      }"
    else if opt ? apply then
      opt.apply merged
    else
      merged;

  isPrefix =
    prefix: loc:
    length prefix <= length loc
    && all (i: builtins.elemAt prefix i == builtins.elemAt loc i) (genList (i: i) (length prefix));

  # The configuration tree. Where options are declared the names come from
  # declarations and definitions without evaluating any condition; that is
  # what lets `config = mkIf cfg.enable { ... }` read `cfg` at all.
  mergeTree =
    strict: loc: decls: defs:
    if isOption decls then
      mergeOption loc decls defs
    else
      let
        pushed = pushDefs defs;
        notSet = filter (d: !(isPlain d.value)) pushed;
        names = unique (attrNames decls ++ concatMap (d: attrNames d.value) pushed);
        sub =
          name:
          let
            subDefs = concatMap (
              d: if d.value ? ${name} then [ { inherit (d) file; value = d.value.${name}; } ] else [ ]
            ) pushed;
          in
          if decls ? ${name} then
            mergeTree strict (loc ++ [ name ]) decls.${name} subDefs
          else if any (p: isPrefix p loc) strict then
            throw "The option `${showLoc (loc ++ [ name ])}' does not exist."
          else
            let
              r = mergeFree (loc ++ [ name ]) subDefs;
            in
            if r.defined then
              r.value
            else
              throw "`${showLoc (loc ++ [ name ])}' has no definition left after mkIf; declare it in nix/tests/standin/nixos.nix";
      in
      if notSet != [ ] then
        throw "`${showLoc loc}' is a set of options, but `${(builtins.head notSet).file}' sets it to a value"
      else
        listToAttrs (map (name: { inherit name; value = sub name; }) names);

  mergeDecls =
    loc: a: b:
    if a == null then
      b
    else if b == null then
      a
    else if isOption a || isOption b then
      throw "The option `${showLoc loc}' is declared more than once."
    else
      listToAttrs (
        map (name: {
          inherit name;
          value = mergeDecls (loc ++ [ name ]) (a.${name} or null) (b.${name} or null);
        }) (unique (attrNames a ++ attrNames b))
      );

  special = [
    "_file"
    "key"
    "imports"
    "options"
    "config"
    "meta"
    "disabledModules"
  ];
in
{
  modules,
  specialArgs ? { },
  strict ? [ ],
}:
let
  args = specialArgs // {
    inherit lib config options;
  };

  load =
    fallbackKey: m:
    let
      fromFile = isPath m || isString m;
      imported = if fromFile then import m else m;
      raw = if isFunction imported then imported args else imported;
      explicit = raw ? config || raw ? options;
      stray = removeAttrs raw special;
    in
    if explicit && stray != { } then
      throw "module ${if fromFile then toString m else fallbackKey} has both `config'/`options' and ${toJSON (attrNames stray)}"
    else
      {
        key = if fromFile then toString m else toString (raw.key or fallbackKey);
        file = raw._file or (if fromFile then toString m else fallbackKey);
        imports = raw.imports or [ ];
        options = raw.options or { };
        config = if explicit then raw.config or { } else stray;
      };

  collected = genericClosure {
    startSet = imap (i: load "<stand-in root>:${toString i}") modules;
    operator = mod: imap (i: load "${mod.key}:anon-${toString i}") mod.imports;
  };

  options = foldl' (mergeDecls [ ]) { } (map (m: m.options) collected);

  config = mergeTree strict [ ] options (
    map (m: {
      inherit (m) file;
      value = m.config;
    }) collected
  );
in
{
  inherit config options;
}
