"""Checks Kubernetes objects against the providers' CRDs, as the API server
would admit them.

usage: check_composed.py --crds DIR FILE.yaml... ('-' reads stdin)

Each document is matched by apiVersion and kind to a version of a CRD in DIR
(oracles/crds). Its openAPIV3Schema is applied the way a structural schema is,
but strictly, as `kubectl apply --validate=strict` does: a field the schema
does not declare is an error rather than silently pruned. Besides the schema:
- the version must be served;
- a namespaced kind's object must not say `metadata.namespace` differently
  from a cluster-scoped one (cluster-scoped objects have no namespace);
- metadata.name, when given, must be a DNS subdomain (RFC 1123);
- the one CEL rule shape upjet generates for required parameters
  ("spec.forProvider.X is a required parameter", satisfied by forProvider or
  initProvider when the management policies create or update) is evaluated;
  any other CEL rule is reported as unchecked, so it cannot pass unseen.

Exit status: 0 when every document is valid, 1 when one is not (or there are
none), 2 on bad usage.
"""

import copy
import glob
import os
import re
import sys

import jsonschema
import yaml

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
UPJET_REQUIRED = re.compile(
    r"^!\('\*' in self\.managementPolicies \|\| 'Create' in self\.managementPolicies"
    r" \|\| 'Update' in self\.managementPolicies\) \|\| has\(self\.forProvider\.(\w+)\)"
    r" \|\| \(has\(self\.initProvider\) && has\(self\.initProvider\.\1\)\)$"
)


def crd_versions(crd_dir):
    """(apiVersion, kind) -> (schema, scope, served) for every CRD version."""
    table = {}
    paths = sorted(glob.glob(os.path.join(crd_dir, "*.yaml")))
    if not paths:
        raise SystemExit(f"check-composed: no CRDs in {crd_dir}")
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for crd in yaml.safe_load_all(f):
                if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                    continue
                spec = crd["spec"]
                for version in spec["versions"]:
                    schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    table[key] = (schema, spec.get("scope", "Namespaced"), version.get("served", False))
    return table


def as_json_schema(node):
    """An OpenAPI v3 structural schema as a JSON Schema that refuses unknown
    fields and knows the Kubernetes extensions that change what is valid."""
    if isinstance(node, list):
        return [as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    # Formats such as int64 or date-time are not checked by the API server's
    # schema validation of custom resources beyond what the type says.
    out.pop("format", None)
    declares_fields = node.get("type") == "object" and "additionalProperties" not in out
    if declares_fields and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
        out.setdefault("properties", {})
    return out


def cel_problems(schema, doc):
    """The CEL rules on spec that this checker understands, evaluated."""
    spec_schema = (schema.get("properties") or {}).get("spec") or {}
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    problems = []
    for rule in spec_schema.get("x-kubernetes-validations") or []:
        text = " ".join(rule.get("rule", "").split())
        m = UPJET_REQUIRED.match(text)
        if not m:
            problems.append(f"spec: a CEL rule this checker cannot evaluate: {text}")
            continue
        # The CRD defaults managementPolicies to ["*"].
        policies = spec.get("managementPolicies", ["*"])
        if not any(p in policies for p in ("*", "Create", "Update")):
            continue
        field = m.group(1)
        given = [part for part in ("forProvider", "initProvider")
                 if isinstance(spec.get(part), dict) and field in spec[part]]
        if not given:
            problems.append(f"spec.forProvider.{field}: {rule.get('message', 'required')}")
    return problems


def check(doc, table):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in table:
        known = sorted({f"{a} {k}" for a, k in table})
        return [f"no CRD here serves {key[0]} {key[1]} (known: {', '.join(known)})"]
    schema, scope, served = table[key]
    problems = []
    if not served:
        problems.append(f"{key[0]} is not a served version of {key[1]}")
    metadata = doc.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        problems.append("metadata: must be a mapping")
        metadata = {}
    metadata = metadata or {}
    name = metadata.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name)):
        problems.append(f"metadata.name: {name!r} is not a DNS subdomain (lower-case letters, digits, '-' and '.')")
    if scope == "Cluster" and "namespace" in metadata:
        problems.append(f"metadata.namespace: {key[1]} is cluster-scoped and takes no namespace")
    # apiVersion, kind and metadata are the API server's, not the CRD's.
    body_schema = copy.deepcopy(schema)
    for field in ("apiVersion", "kind", "metadata"):
        (body_schema.get("properties") or {}).pop(field, None)
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    validator = jsonschema.Draft7Validator(as_json_schema(body_schema))
    for error in sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path]):
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"{path}: {error.message}")
    return problems + cel_problems(schema, doc)


def main(argv):
    if len(argv) < 3 or argv[0] != "--crds":
        print(__doc__, file=sys.stderr)
        return 2
    table = crd_versions(argv[1])
    documents = bad = 0
    for path in argv[2:]:
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
            docs = list(yaml.safe_load_all(text))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            print(f"INVALID {path}: cannot read: {e}")
            bad += 1
            continue
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            documents += 1
            if not isinstance(doc, dict):
                print(f"INVALID {path} document {i}: not a mapping")
                bad += 1
                continue
            name = (doc.get("metadata") or {}).get("name", "") if isinstance(doc.get("metadata"), dict) else ""
            label = f"{path} document {i}: {doc.get('apiVersion')} {doc.get('kind')} {name}".rstrip()
            problems = check(doc, table)
            if problems:
                bad += 1
                print(f"INVALID {label}")
                for problem in problems:
                    print(f"  {problem}")
            else:
                print(f"valid {label}")
    if documents == 0:
        print("check-composed: no documents to check")
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
