#!/usr/bin/env python3
"""Crossplane's reconciler reads Fabric: `crossplane composition render`
(the core's `crossplane internal render`) against a running
`fabric function --insecure`, for every example stage of both backends and
both XR kinds, compared with `fabric compose` on the same inputs.

Run by xptest/run, which builds the tools and starts the function. Writes
each render output to $XP_WORK/render/<case>.yaml for the validate step.

Normalisation before comparing (README, "Crossplane's own tools"):
- composed resources: drop what Crossplane adds (labels and annotations
  under crossplane.io/ other than the composition-resource-name,
  ownerReferences, generateName, name), then compare the whole resource;
- XR: the status fields Fabric writes (everything under status except
  conditions), and each condition's type, status and reason;
- results: severity and message.
"""

import copy
import json
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "example")
CLI = os.environ["XP_CLI"]
CORE = os.environ["XP_CORE"]
FABRIC = os.environ["FABRIC"]
TARGET = os.environ["XP_FUNCTION_TARGET"]
WORK = os.environ["XP_WORK"]
NAME_ANNOTATION = "crossplane.io/composition-resource-name"

failures = []


def fail(case, msg):
    failures.append(f"{case}: {msg}")
    print(f"FAIL {case}: {msg}", file=sys.stderr)


def ex(*parts):
    return os.path.join(EX, *parts)


def load_all(text):
    return [d for d in yaml.safe_load_all(text) if d]


def composition_for(kind, composition):
    """The example Compositions name the Machine kind; the legacy kind gets
    the same pipeline with its compositeTypeRef, as an installed
    Composition would have."""
    with open(composition) as f:
        comp = yaml.safe_load(f)
    if comp["spec"]["compositeTypeRef"]["kind"] == kind:
        return composition
    comp["spec"]["compositeTypeRef"]["kind"] = kind
    comp["metadata"]["name"] = comp["metadata"]["name"].replace("machines", "xmachines")
    path = os.path.join(WORK, f"composition-{kind}-{os.path.basename(composition)}")
    with open(path, "w") as f:
        yaml.safe_dump(comp, f)
    return path


# Crossplane hashes the XR's uid into the cloud-init instance-id; render
# gives an XR without one a uid of its own, `fabric compose` none. Both get
# this one, as the API server would have given it.
XR_UID = "0b6c1f3e-5a4d-4c2e-9f1a-6d8e2b7c9a10"


def with_uid(xr):
    with open(xr) as f:
        doc = yaml.safe_load(f)
    doc["metadata"]["uid"] = XR_UID
    path = os.path.join(WORK, f"uid-{os.path.basename(xr)}")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    return path


def render(case, xr, composition, xrd, observed, secret):
    args = [
        CLI, "composition", "render", xr, composition, ex("functions.yaml"),
        "--crossplane-binary", CORE,
        "-a", f"render.crossplane.io/runtime-development-target={TARGET}",
        "--xrd", xrd,
        "--include-full-xr", "--include-function-results",
        "--timeout", "60s",
    ]
    if observed:
        args += ["--observed-resources", observed]
    if secret:
        args += ["--required-resources", secret]
    p = subprocess.run(args, capture_output=True, text=True)
    return p


def compose(xr, composition, observed, secret):
    args = [FABRIC, "compose", xr, "--input", composition]
    if observed:
        args += ["--observed", observed]
    if secret:
        args += ["--secret", secret]
    return subprocess.run(args, capture_output=True, text=True)


def parse_compose_stderr(text):
    results, status, conditions = [], {}, []
    for line in text.splitlines():
        for sev in ("normal", "warning", "fatal"):
            if line.startswith(sev + ": "):
                results.append((sev, line[len(sev) + 2:]))
        if line.startswith("status: "):
            status = json.loads(line[len("status: "):])
        if line.startswith("condition: "):
            head = line[len("condition: "):].split(": ", 1)[0]
            ctype, cstatus, reason = head.split(" ", 2)
            conditions.append((ctype, cstatus, reason))
    return results, status, conditions


def normalise(doc):
    d = copy.deepcopy(doc)
    meta = d.get("metadata", {})
    for key in ("ownerReferences", "generateName", "name", "namespace"):
        meta.pop(key, None)
    for field in ("labels", "annotations"):
        kept = {k: v for k, v in (meta.get(field) or {}).items()
                if not k.startswith("crossplane.io/") or k == NAME_ANNOTATION}
        if kept:
            meta[field] = kept
        else:
            meta.pop(field, None)
    return d


def severity(result):
    return {"Normal": "normal", "Warning": "warning", "Fatal": "fatal"}.get(
        result.get("severity", ""), result.get("severity", "").lower())


def diff_paths(a, b, path=""):
    """Where two JSON-like values differ, as field paths."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff_paths(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff_paths(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [f"{path or '.'}: render {json.dumps(a)[:200]} != compose {json.dumps(b)[:200]}"]


def check_case(case, kind, xr, composition, xrd, observed, secret, want):
    composition = composition_for(kind, composition)
    xr = with_uid(xr)
    before = len(failures)
    p = render(case, xr, composition, xrd, observed, secret)
    if p.returncode != 0:
        fail(case, f"crossplane composition render exited {p.returncode}:\n{p.stderr}")
        return
    docs = load_all(p.stdout)
    # For the validate step: the XR and the composed resources (a Result
    # is render's own report, not a Kubernetes object).
    with open(os.path.join(WORK, "render", kind.lower(), f"{case}.yaml"), "w") as f:
        yaml.safe_dump_all([d for d in docs if d.get("kind") != "Result"], f)
    xrs = [d for d in docs if d.get("kind") == kind]
    results = [d for d in docs if d.get("kind") == "Result"]
    composed = [d for d in docs if d.get("kind") not in (kind, "Result")]
    if len(xrs) != 1:
        fail(case, f"render printed {len(xrs)} {kind}s, expected 1")
        return
    rxr = xrs[0]
    rstatus = rxr.get("status") or {}

    # What Crossplane's reconciler made of the function's answer.
    names = sorted((d.get("metadata", {}).get("annotations") or {}).get(NAME_ANNOTATION, "?") for d in composed)
    kinds = sorted(f"{d['apiVersion'].split('/')[0]}/{d['kind']}" for d in composed)
    if names != sorted(want["names"]):
        fail(case, f"composition names {names}, expected {sorted(want['names'])}")
    if kinds != sorted(want["kinds"]):
        fail(case, f"composed {kinds}, expected {sorted(want['kinds'])}")
    for d in composed:
        meta = d.get("metadata", {})
        # New resources get generateName; observed ones keep their name.
        prefix = rxr["metadata"]["name"] + "-"
        if not (meta.get("generateName") or meta.get("name", "")).startswith(prefix):
            fail(case, f"{d['kind']} is named {meta.get('generateName') or meta.get('name')!r}, not after the XR")
        if kind == "Machine" and meta.get("namespace") != rxr["metadata"].get("namespace"):
            fail(case, f"{d['kind']} namespace {meta.get('namespace')!r} is not the Machine's")
        if kind == "XMachine" and meta.get("namespace"):
            fail(case, f"{d['kind']} of a cluster-scoped XMachine has namespace {meta['namespace']!r}")
        owners = meta.get("ownerReferences") or []
        if not any(o.get("kind") == kind and o.get("controller") for o in owners):
            fail(case, f"{d['kind']} has no controller reference to the {kind}")
    conds = {c["type"]: c for c in rstatus.get("conditions", [])}
    if rstatus.get("phase") != want["phase"]:
        fail(case, f"status.phase {rstatus.get('phase')!r}, expected {want['phase']!r}")
    ready = conds.get("Ready", {})
    if ready.get("status") != want["ready"]:
        fail(case, f"XR Ready condition {ready}, expected status {want['ready']}")
    for ctype in ("Provisioned", "Bootstrapped"):
        if ctype not in conds:
            fail(case, f"no {ctype} condition on the XR: {sorted(conds)}")
    if conds.get("Provisioned", {}).get("reason") != want["phase"]:
        fail(case, f"Provisioned reason {conds.get('Provisioned', {}).get('reason')!r}, expected {want['phase']!r}")
    for key, value in want.get("status", {}).items():
        if rstatus.get(key) != value:
            fail(case, f"status.{key} {rstatus.get(key)!r}, expected {value!r}")
    if want.get("result") and not any(want["result"] in r.get("message", "") for r in results):
        fail(case, f"no result mentions {want['result']!r}: {[r.get('message') for r in results]}")

    # A fleet credential: in the composed snippet, and nowhere else
    # Crossplane shows (the XR's status and conditions, the results).
    if secret and "private-fleet" in secret:
        with open(secret) as f:
            key = yaml.safe_load(f)["stringData"]["ssh-privatekey"]
        body = [line for line in key.splitlines() if line and not line.startswith("-----")]
        shown = json.dumps(rstatus) + json.dumps(results) + p.stderr
        if any(line in shown for line in body):
            fail(case, "the deploy key appears in the XR status, the results or render's stderr")
        if composed and not all(any(line in json.dumps(d) for d in composed) for line in body):
            fail(case, "the composed resources do not deliver the deploy key")

    # The no-cluster twin on the same inputs.
    c = compose(xr, composition, observed, secret)
    if c.returncode != 0:
        fail(case, f"fabric compose exited {c.returncode}:\n{c.stderr}")
        return
    cdocs = {(d.get("metadata", {}).get("annotations") or {}).get(NAME_ANNOTATION): d for d in load_all(c.stdout)}
    rdocs = {(d.get("metadata", {}).get("annotations") or {}).get(NAME_ANNOTATION): d for d in composed}
    if sorted(cdocs) != sorted(rdocs):
        fail(case, f"fabric compose composed {sorted(cdocs)}, render {sorted(rdocs)}")
    for name in sorted(set(cdocs) & set(rdocs)):
        for line in diff_paths(normalise(rdocs[name]), normalise(cdocs[name])):
            fail(case, f"{name}: {line}")
    cresults, cstatus, cconds = parse_compose_stderr(c.stderr)
    rfabric_status = {k: v for k, v in rstatus.items() if k != "conditions"}
    for line in diff_paths(rfabric_status, cstatus, "status"):
        fail(case, line)
    rconds = sorted((c["type"], c["status"], c.get("reason", "")) for c in rstatus.get("conditions", [])
                    if c["type"] not in ("Ready", "Synced", "Responsive"))
    if rconds != sorted(cconds):
        fail(case, f"conditions: render {rconds} != compose {sorted(cconds)}")
    # Crossplane adds results of its own (the composition it selected,
    # composed resources not ready yet) and prefixes the function's with
    # its pipeline step.
    step = 'Pipeline step "compose-machine": '
    rres = sorted((severity(r), r["message"][len(step):]) for r in results
                  if r.get("message", "").startswith(step))
    if rres != sorted(cresults):
        fail(case, f"results: render {rres} != compose {sorted(cresults)}")
    if len(failures) > before:
        return
    print(f"ok   {case}: {', '.join(names) or 'nothing'} composed; phase {rstatus.get('phase')}; "
          f"Ready {ready.get('status')}; fabric compose agrees")


def check_invalid(case, kind, xr_path, composition, xrd, field, secret):
    """An invalid spec: render shows the Fatal result naming the field."""
    p = render(case, xr_path, composition_for(kind, composition), xrd, None, secret)
    out = p.stdout + p.stderr
    if p.returncode == 0 and "Fatal" not in out:
        fail(case, f"render accepted an invalid {kind}:\n{out}")
    elif field not in out or "fatal" not in out.lower():
        fail(case, f"render's output does not show the Fatal result naming {field}:\n{out}")
    else:
        line = next((l for l in out.splitlines() if field in l), "")
        print(f"ok   {case}: Fatal, {line.strip()[:160]}")


def invalid_machine(src, path, value):
    with open(src) as f:
        doc = yaml.safe_load(f)
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    out = os.path.join(WORK, f"invalid-{os.path.basename(src)}")
    with open(out, "w") as f:
        yaml.safe_dump(doc, f)
    return out


def main():
    for kind in ("machine", "xmachine"):
        os.makedirs(os.path.join(WORK, "render", kind), exist_ok=True)
    machines = os.path.join(ROOT, "apis", "machines", "definition.yaml")
    xmachines = os.path.join(ROOT, "apis", "xmachines", "definition.yaml")
    bpg_m = ["virtualenvironmentfile.proxmoxbpg.m.crossplane.io/EnvironmentFile"]
    vm_m = ["virtualenvironmentvm.proxmoxbpg.m.crossplane.io/EnvironmentVM"]
    bpg_c = ["virtualenvironmentfile.proxmoxbpg.crossplane.io/EnvironmentFile"]
    vm_c = ["virtualenvironmentvm.proxmoxbpg.crossplane.io/EnvironmentVM"]
    secret = ex("secret.yaml")
    xr, xm = ex("xr.yaml"), ex("xmachine.yaml")
    pf, pf_secret = ex("private-fleet.yaml"), ex("private-fleet-secret.yaml")
    bpg, tf, xbpg = ex("composition.yaml"), ex("composition-terraform.yaml"), ex("composition-xmachine.yaml")
    obs = lambda n: ex("observed", n)  # noqa: E731
    # Backend bpg composes Fabric's meta-data, and for a static network its
    # network-config, as snippets beside the user-data (README, "What the
    # guest receives"): example/xr.yaml is static, example/xmachine.yaml DHCP.
    static = ["meta-data", "network-config", "user-data"]
    dhcp = ["meta-data", "user-data"]
    cases = [
        ("machine-bpg-no-secret", "Machine", xr, bpg, machines, None, None,
         {"names": [], "kinds": [], "phase": "WaitingForKeys", "ready": "False", "result": "default/admin-keys"}),
        ("machine-bpg-nothing-observed", "Machine", xr, bpg, machines, None, secret,
         {"names": static, "kinds": bpg_m * 3, "phase": "WaitingForSnippet", "ready": "False"}),
        ("machine-bpg-snippet-ready", "Machine", xr, bpg, machines, obs("snippet-ready.yaml"), secret,
         {"names": static + ["vm"], "kinds": bpg_m * 3 + vm_m, "phase": "Provisioning", "ready": "False",
          "status": {"userDataFileId": "local:snippets/fabric-web01-3b6efeb56659cd83.user-data.yaml"}}),
        ("machine-bpg-vm-ready", "Machine", xr, bpg, machines, obs("vm-ready.yaml"), secret,
         {"names": static + ["vm"], "kinds": bpg_m * 3 + vm_m, "phase": "Running", "ready": "True"}),
        ("machine-terraform-nothing-observed", "Machine", xr, tf, machines, None, secret,
         {"names": ["workspace"], "kinds": ["tf.m.upbound.io/Workspace"], "phase": "Provisioning", "ready": "False"}),
        ("machine-terraform-workspace-ready", "Machine", xr, tf, machines, obs("workspace-ready.yaml"), secret,
         {"names": ["workspace"], "kinds": ["tf.m.upbound.io/Workspace"], "phase": "Running", "ready": "True"}),
        # A private fleet (README, "Private fleet repositories"): the deploy
        # key Secret is a required resource like the keys Secret.
        ("machine-private-fleet-no-secret", "Machine", pf, bpg, machines, None, None,
         {"names": [], "kinds": [], "phase": "WaitingForKeys", "ready": "False", "result": "default/fleet-deploy-key"}),
        ("machine-private-fleet-bpg", "Machine", pf, bpg, machines, None, pf_secret,
         {"names": static, "kinds": bpg_m * 3, "phase": "WaitingForSnippet", "ready": "False"}),
        ("machine-private-fleet-terraform", "Machine", pf, tf, machines, None, pf_secret,
         {"names": ["workspace"], "kinds": ["tf.m.upbound.io/Workspace"], "phase": "Provisioning", "ready": "False"}),
        ("xmachine-bpg-nothing-observed", "XMachine", xm, xbpg, xmachines, None, None,
         {"names": dhcp, "kinds": bpg_c * 2, "phase": "WaitingForSnippet", "ready": "False"}),
        ("xmachine-bpg-snippet-ready", "XMachine", xm, xbpg, xmachines, obs("xmachine-snippet-ready.yaml"), None,
         {"names": dhcp + ["vm"], "kinds": bpg_c * 2 + vm_c, "phase": "Provisioning", "ready": "False"}),
        ("xmachine-terraform-nothing-observed", "XMachine", xm, tf, xmachines, None, None,
         {"names": ["workspace"], "kinds": ["tf.upbound.io/Workspace"], "phase": "Provisioning", "ready": "False"}),
    ]
    only = os.environ.get("XP_CASES", "").split()
    for case in cases:
        if only and case[0] not in only:
            continue
        check_case(*case)
    check_invalid("machine-invalid", "Machine",
                  invalid_machine(xr, ["spec", "memory"], {"size": 12}), bpg, machines,
                  "spec.memory.size", secret)
    check_invalid("xmachine-invalid", "XMachine",
                  invalid_machine(xm, ["spec", "cpu", "cores"], 0), xbpg, xmachines,
                  "spec.cpu.cores", None)
    if failures:
        print(f"render: {len(failures)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print("render: Crossplane's reconciler and fabric compose agree on every stage")


if __name__ == "__main__":
    main()
