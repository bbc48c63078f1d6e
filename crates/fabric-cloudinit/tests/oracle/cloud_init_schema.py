"""cloud-init's own schema validation, as a line-oriented server for the
property tests: one JSON request per line on stdin, one JSON answer per line
on stdout, so that thousands of generated seeds cost one interpreter.

Request: {"user_data": str, "network_config": str or null, "meta_data": str,
          "hostname": str}
Answer:  {"problems": [str, ...]}  (empty: cloud-init accepts the seed)

user-data is loaded as cloud-init loads it (PyYAML safe_load, YAML 1.1) and
validated with cloud-init's validator class (cloudinit.config.schema, the
one `cloud-init schema` and the boot use, with its `deprecated` keyword)
against two schemas: the newest (argv[1], cloud-init 26.2's
schema-cloud-config-v1.json) and the one this cloud-init ships. Errors and
deprecations both count, as `validate_cloudconfig_schema(strict=True)`
counts them. network-config is validated against cloud-init's network
config v2 schema (argv[2]) with jsonschema, as cloud-init >= 24.1 does.
"""
import json
import sys

import jsonschema
import yaml
from cloudinit.config import schema as ci_schema

NEWEST = json.load(open(sys.argv[1]))
NETWORK = json.load(open(sys.argv[2]))
VALIDATOR, FORMATS = ci_schema.get_jsonschema_validator()
USER_DATA_VALIDATORS = [
    ("newest schema", VALIDATOR(NEWEST, format_checker=FORMATS())),
    ("installed cloud-init's schema", VALIDATOR(ci_schema.get_schema(), format_checker=FORMATS())),
]
NETWORK_SUB = dict(NETWORK["$defs"]["network_config_version2"])
NETWORK_SUB["$defs"] = NETWORK["$defs"]
NETWORK_VALIDATOR = jsonschema.Draft7Validator(NETWORK_SUB)


def path_of(error):
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def user_data_problems(text):
    if not text.startswith("#cloud-config\n"):
        return ["user-data: the first line is not #cloud-config"]
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"user-data: PyYAML cannot load it: {e}"]
    if not isinstance(doc, dict):
        return [f"user-data: not a mapping but {type(doc).__name__}"]
    problems = []
    for which, validator in USER_DATA_VALIDATORS:
        for error in validator.iter_errors(doc):
            kind = "deprecated" if isinstance(error, ci_schema.SchemaDeprecationError) else "invalid"
            problems.append(f"user-data ({which}): {kind}: {path_of(error)}: {error.message}")
    return problems


def network_problems(text):
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"network-config: PyYAML cannot load it: {e}"]
    if isinstance(doc, dict) and isinstance(doc.get("network"), dict):
        doc = doc["network"]
    if not isinstance(doc, dict) or doc.get("version") != 2:
        return ["network-config: not a version 2 mapping"]
    return [f"network-config: {path_of(e)}: {e.message}" for e in NETWORK_VALIDATOR.iter_errors(doc)]


def meta_data_problems(text, hostname):
    # The NoCloud datasource loads meta-data with the same YAML loader.
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"meta-data: PyYAML cannot load it: {e}"]
    if not isinstance(doc, dict):
        return ["meta-data: not a mapping"]
    problems = []
    if not isinstance(doc.get("instance-id"), str):
        problems.append(f"meta-data: instance-id is {doc.get('instance-id')!r}, not a string")
    if doc.get("local-hostname") != hostname:
        problems.append(f"meta-data: local-hostname is {doc.get('local-hostname')!r}, not {hostname!r}")
    return problems


for line in sys.stdin:
    req = json.loads(line)
    problems = user_data_problems(req["user_data"])
    if req.get("network_config") is not None:
        problems += network_problems(req["network_config"])
    problems += meta_data_problems(req["meta_data"], req["hostname"])
    sys.stdout.write(json.dumps({"problems": problems}) + "\n")
    sys.stdout.flush()
