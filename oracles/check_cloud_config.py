"""Checks NoCloud seed files the way cloud-init reads them.

usage: check_cloud_config.py --schemas DIR (SEED_DIR | --user-data FILE
       | --network-config FILE | --meta-data FILE)...

DIR holds cloud-init's own JSON schemas (oracles/cloud-init-schemas fetches
them from Debian's cloud-init package). Files are loaded with PyYAML's safe
loader, as cloud-init loads them, so what YAML 1.1 turns into booleans or
numbers (an unquoted `no`, `on`, `12:30`, a MAC address) reaches the schema
as such and fails there, as it would on a machine.

What counts as a problem:
- user-data: no `#cloud-config` first line; not a mapping; anything the
  cloud-config schema refuses; any key the schema marks deprecated (cloud-init
  logs those as DEPRECATED, and Fabric's seeds must log nothing).
- network-config: not version 1 or 2; anything that version's schema
  refuses; `gateway4`/`gateway6` (deprecated in netplan v2); a route
  `to: default`, which cloud-init before 25.3 rejects (NixOS 25.11 runs 25.2).
- meta-data: not a mapping; `instance-id` or `local-hostname` not strings.

Each problem is printed with its file, line and column and its path in the
document. Exit status: 0 when every file is valid, 1 when any is not, 2 on
bad usage.
"""

import json
import os
import sys

import jsonschema
import yaml


def load_schema(schemas, name):
    with open(os.path.join(schemas, name), encoding="utf-8") as f:
        return json.load(f)


def position(text, path):
    """Line and column (1-based) of the node at `path`, or of its nearest
    ancestor that can be found, for pointing a user at the problem."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    mark = node.start_mark
    for step in path:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                    found = (key, value)
                    break
            if found is None:
                break
            mark = found[0].start_mark
            node = found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            mark = node.start_mark
        else:
            break
    return mark.line + 1, mark.column + 1


def dotted(path):
    return ".".join(str(p) for p in path) or "(top level)"


class Report:
    def __init__(self, kind, path, text):
        self.kind, self.path, self.text = kind, path, text
        self.problems = []

    def add(self, where, message):
        pos = position(self.text, list(where)) if self.text is not None else None
        at = f"{self.path}:{pos[0]}:{pos[1]}" if pos else self.path
        problem = f"{at}: {dotted(where)}: {message}"
        # cloud-init's schema declares some keys twice (in allOf branches).
        if problem not in self.problems:
            self.problems.append(problem)


def deprecation_aware(schema):
    """The validator class `schema` names, taught cloud-init's `deprecated`
    keyword: a value present where the schema says `deprecated: true` is an
    error, with cloud-init's own explanation."""
    base = jsonschema.validators.validator_for(schema)

    def deprecated(validator, value, instance, subschema):
        if value is True:
            since = subschema.get("deprecated_version")
            why = subschema.get("deprecated_description", "")
            text = "deprecated" + (f" since cloud-init {since}" if since else "")
            yield jsonschema.ValidationError(f"{text}. {why}".strip())

    return jsonschema.validators.extend(base, {"deprecated": deprecated})


def most_specific(error):
    """For an anyOf/oneOf failure, the branch error that says most (a
    deprecated key inside a user, say) rather than "not valid under any of
    the given schemas"."""
    while error.context:
        # The deepest error wins; at equal depth, one that is not merely
        # "not of type" (the branches the value was never meant for).
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    return error


def validate(report, validator, doc):
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        error = most_specific(error)
        report.add(error.absolute_path, error.message)


def read_text(report):
    try:
        with open(report.path, "rb") as f:
            report.text = f.read().decode("utf-8")
    except OSError as e:
        report.problems.append(f"{report.path}: cannot read: {e.strerror}")
        return None
    except UnicodeDecodeError as e:
        report.problems.append(f"{report.path}: not UTF-8: {e}")
        return None
    try:
        return yaml.safe_load(report.text)
    except yaml.YAMLError as e:
        report.problems.append(f"{report.path}: PyYAML cannot load it: {e}")
        return None


def check_user_data(schemas, path):
    report = Report("user-data", path, None)
    doc = read_text(report)
    if report.problems:
        return report
    if report.text.split("\n", 1)[0].rstrip("\r") != "#cloud-config":
        report.problems.append(f"{path}:1:1: the first line must be exactly '#cloud-config'")
    if not isinstance(doc, dict):
        report.problems.append(f"{path}: the document must be a mapping, not {type(doc).__name__}")
        return report
    schema = load_schema(schemas, "schema-cloud-config-v1.json")
    validate(report, deprecation_aware(schema)(schema), doc)
    return report


def check_network_config(schemas, path):
    report = Report("network-config", path, None)
    doc = read_text(report)
    if report.problems:
        return report
    prefix = []
    if isinstance(doc, dict) and isinstance(doc.get("network"), dict):
        doc, prefix = doc["network"], ["network"]
    version = doc.get("version") if isinstance(doc, dict) else None
    if version not in (1, 2) or isinstance(version, bool):
        report.add(prefix + ["version"], f"must be 1 or 2, not {version!r}")
        return report
    schema = load_schema(schemas, f"schema-network-config-v{version}.json")
    # Both files describe the document under $defs; the top level wraps it
    # in a `network:` key that the seed file may leave out.
    sub = dict(schema["$defs"][f"network_config_version{version}"])
    sub["$defs"] = schema["$defs"]
    sub["$schema"] = schema.get("$schema", "")
    for error in sorted(jsonschema.validators.validator_for(sub)(sub).iter_errors(doc),
                        key=lambda e: [str(p) for p in e.absolute_path]):
        error = most_specific(error)
        report.add(prefix + list(error.absolute_path), error.message)
    if version == 2:
        for kind in ("ethernets", "bonds", "bridges", "vlans", "wifis"):
            devices = doc.get(kind)
            if not isinstance(devices, dict):
                continue
            for name, device in devices.items():
                if not isinstance(device, dict):
                    continue
                for key in ("gateway4", "gateway6"):
                    if key in device:
                        report.add(prefix + [kind, name, key], "deprecated in netplan v2; use routes with to: 0.0.0.0/0 or ::/0")
                for i, route in enumerate(device.get("routes") or []):
                    if isinstance(route, dict) and route.get("to") == "default":
                        report.add(prefix + [kind, name, "routes", i, "to"],
                                   "'default' needs cloud-init 25.3 or later (NixOS 25.11 runs 25.2); use 0.0.0.0/0 or ::/0")
    return report


def check_meta_data(path):
    report = Report("meta-data", path, None)
    doc = read_text(report)
    if report.problems:
        return report
    if not isinstance(doc, dict):
        report.problems.append(f"{path}: the document must be a mapping, not {type(doc).__name__}")
        return report
    for key in ("instance-id", "local-hostname"):
        if key in doc and not isinstance(doc[key], str):
            report.add([key], f"must be a string, but YAML reads {doc[key]!r} ({type(doc[key]).__name__}); quote it")
    if "instance-id" not in doc:
        report.add([], "instance-id is missing (NoCloud needs it)")
    return report


def main(argv):
    if len(argv) < 3 or argv[0] != "--schemas":
        print(__doc__, file=sys.stderr)
        return 2
    schemas, args = argv[1], argv[2:]
    todo = []
    while args:
        arg = args.pop(0)
        if arg in ("--user-data", "--network-config", "--meta-data") and args:
            todo.append((arg[2:], args.pop(0)))
        elif not arg.startswith("--") and os.path.isdir(arg):
            for kind in ("user-data", "network-config", "meta-data"):
                path = os.path.join(arg, kind)
                # A seed may leave network-config out (DHCP); the rest is required.
                if kind != "network-config" or os.path.exists(path):
                    todo.append((kind, path))
        else:
            print(f"check-cloud-config: {arg}: not a seed directory or a --user-data/--network-config/--meta-data FILE",
                  file=sys.stderr)
            return 2
    bad = 0
    for kind, path in todo:
        if kind == "user-data":
            report = check_user_data(schemas, path)
        elif kind == "network-config":
            report = check_network_config(schemas, path)
        else:
            report = check_meta_data(path)
        if report.problems:
            bad += 1
            print(f"INVALID {kind}: {path}")
            for problem in report.problems:
                print(f"  {problem}")
        else:
            print(f"valid {kind}: {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
