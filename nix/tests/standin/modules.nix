# STAND-IN for nixpkgs' module system (lib/modules.nix `evalModules`),
# just large enough to evaluate nix/module.nix, the template modules and
# the example fleet without nixpkgs. What it does as nixpkgs 25.11 does
# (nix/check.sh runs the same checks against the real lib when
# FABRIC_NIXPKGS_LIB names a copy):
#
# - modules are paths, functions or attribute sets, with `imports`,
#   `options`, `config` (or config given directly), `key` and `_file`;
#   a module imported twice (same path or same `key`) counts once;
# - modules are collected breadth first (builtins.genericClosure) and then
#   REVERSED, as evalModules does (`reverseList`): a list option gets a
#   later module's definitions first, an import's before its importer's.
#   Only mkBefore/mkAfter/mkOrder decide an order on purpose;
# - `config` is a fixpoint: modules read each other's values through it;
# - mkIf / mkMerge / mkOverride are pushed down into attribute sets before
#   their conditions are evaluated (pushDownProperties), so a module may set
#   options under a condition that reads other options;
# - each option's definitions are merged by lib.mergeDefinitions (see
#   lib.nix), its default counting as mkOptionDefault, then `apply`;
# - a definition of an option nobody declared, anywhere, makes the
#   configuration fail with nixpkgs' message "The option `…' does not
#   exist. Definition values: …" (with no freeformType, as in NixOS); a
#   submodule checks its own definitions the same way.
#
# What it leaves out: freeformType, `_module.args`, `disabledModules`,
# `_class`, option documentation, and every NixOS option that
# nix/tests/standin/nixos.nix does not declare.
{ lib }:

let
  inherit (builtins)
    all
    attrNames
    concatMap
    elemAt
    filter
    foldl'
    genList
    genericClosure
    isAttrs
    isFunction
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    removeAttrs
    toJSON
    ;

  showLoc = lib.showOption;

  imap = f: list: genList (i: f i (elemAt list i)) (length list);
  reverseList = list: genList (i: elemAt list (length list - 1 - i)) (length list);

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

  pushDefs =
    defs:
    concatMap (
      d:
      map (value: {
        inherit (d) file;
        inherit value;
      }) (pushDown d.value)
    ) defs;

  defsOf =
    name: pushed:
    concatMap (
      d:
      if isPlain d.value && d.value ? ${name} then
        [
          {
            inherit (d) file;
            value = d.value.${name};
          }
        ]
      else
        [ ]
    ) pushed;

  # A declared option: mergeDefinitions over the definitions and the
  # default, then `apply`.
  mergeOption =
    loc: opt: defs:
    let
      type = opt.type or lib.types.unspecified;
      default =
        if opt ? default then
          [
            {
              file = "the option's declaration";
              value = lib.mkOptionDefault opt.default;
            }
          ]
        else
          [ ];
      result = lib.mergeDefinitions loc type (defs ++ default);
    in
    if !result.isDefined then
      throw "The option `${showLoc loc}' was accessed but has no value defined. Try setting the option."
    else if opt ? apply then
      opt.apply result.mergedValue
    else
      result.mergedValue;

  # The configuration tree: every declared name, each merged lazily. The
  # names come from the declarations alone, without evaluating any
  # condition; that is what lets `config = mkIf cfg.enable { ... }` read
  # `cfg` at all.
  mergeTree =
    loc: decls: defs:
    if isOption decls then
      mergeOption loc decls defs
    else
      let
        pushed = pushDefs defs;
        notSet = filter (d: !(isPlain d.value)) pushed;
      in
      if notSet != [ ] then
        throw "`${showLoc loc}' is a set of options, but `${(builtins.head notSet).file}' sets it to a value"
      else
        mapAttrs (name: sub: mergeTree (loc ++ [ name ]) sub (defsOf name pushed)) decls;

  # The definitions no declaration matches, each with its full path.
  unmatched =
    loc: decls: defs:
    if isOption decls then
      [ ]
    else
      let
        pushed = filter (d: isPlain d.value) (pushDefs defs);
        names = unique (concatMap (d: attrNames d.value) pushed);
      in
      concatMap (
        name:
        if decls ? ${name} then
          unmatched (loc ++ [ name ]) decls.${name} (defsOf name pushed)
        else
          map (d: d // { loc = loc ++ [ name ]; }) (defsOf name pushed)
      ) names;

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
  prefix ? [ ],
  # Older callers (vmtest/agent-unit.nix) name the prefixes where an
  # undeclared option is an error; it is an error everywhere now, as in
  # nixpkgs, so this is accepted and ignored.
  strict ? [ ],
}:
let
  args = specialArgs // {
    inherit lib config options;
  };

  # An anonymous module takes its importer's file (`<unknown-file>` at the
  # top) and a key from its place, as loadModule does.
  load =
    fallbackFile: fallbackKey: m:
    let
      fromFile = isPath m || isString m;
      imported = if fromFile then import m else m;
      raw0 = if isFunction imported then imported args else imported;
      # mkIf / mkOverride around a whole module, as loadModule allows.
      raw =
        if typeOf raw0 == "if" || typeOf raw0 == "override" || typeOf raw0 == "merge" then
          { config = raw0; }
        else
          raw0;
      explicit = raw ? config || raw ? options;
      stray = removeAttrs raw special;
    in
    if explicit && stray != { } then
      throw "module ${if fromFile then toString m else fallbackKey} has both `config'/`options' and ${toJSON (attrNames stray)}"
    else
      {
        key = if fromFile then toString m else toString (raw.key or fallbackKey);
        file = raw._file or (if fromFile then toString m else fallbackFile);
        imports = raw.imports or [ ];
        options = raw.options or { };
        config = if explicit then raw.config or { } else stray;
      };

  collected = genericClosure {
    startSet = imap (i: load "<unknown-file>" ":anon-${toString (i + 1)}") modules;
    operator = mod: imap (i: load mod.file "${mod.key}:anon-${toString (i + 1)}") mod.imports;
  };

  definitions = map (m: {
    inherit (m) file;
    value = m.config;
  }) (reverseList collected);

  options = foldl' (mergeDecls prefix) { } (map (m: m.options) collected);

  config = mergeTree prefix options definitions;

  undeclared = unmatched prefix options definitions;
  first = builtins.head undeclared;
in
{
  inherit options;
  # As evalModules' `checkUnmatched`: the modules see `config` as it is,
  # the caller only once every definition has found its option.
  config =
    if undeclared != [ ] then
      throw "The option `${showLoc first.loc}' does not exist. Definition values:\n- In `${first.file}': ${
        if isAttrs first.value && !(lib.isDerivation first.value) then
          "{ ${toString (attrNames first.value)} }"
        else
          toJSON first.value
      }"
    else
      config;
}
