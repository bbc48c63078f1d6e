#!/usr/bin/env bash
# Runs the script of fabric-agent-upgrade.service, as nix/module.nix renders
# it (through the stand-in evaluation), against a real process and a real
# flock, with systemctl faked: systemd as PID 1 cannot exist here. The fake
# answers `show` from variables and records every other call.
#
# Usage: nix/tests/upgrade-script.sh   (from the repository root; needs
# nix-instantiate, python3, flock)
set -euo pipefail

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# The script as the module renders it, with the lock moved into $work (the
# real path, /var/lib/fabric/converge.lock, is checked by the Rust test).
nix-instantiate --readonly-mode --eval --strict --json nix/tests/eval-standin.nix \
  -A units.agent.fabric-agent-upgrade.script |
  python3 -c 'import json, sys; sys.stdout.write(json.load(sys.stdin))' |
  sed "s|/var/lib/fabric/converge.lock|$work/converge.lock|g" >"$work/upgrade.sh"
grep -q "$work/converge.lock" "$work/upgrade.sh"

mkdir "$work/bin"
# An absolute interpreter: the Nix build sandbox has no /usr/bin/env.
printf '#!%s\n' "$(command -v bash)" >"$work/bin/systemctl"
cat >>"$work/bin/systemctl" <<'EOF'
case "$*" in
  "show --property=MainPID --value fabric-agent.service") echo "$FAKE_MAIN_PID" ;;
  "show --property=LoadState --value fabric-agent.service") echo "${FAKE_LOAD_STATE:-loaded}" ;;
  "show --property=Environment --value fabric-agent.service") echo "PATH=/x NIX_REMOTE=daemon FABRIC_AGENT_DEFINITION=$FAKE_LOADED" ;;
  *) echo "$*" >>"$FAKE_CALLS" ;;
esac
EOF
chmod +x "$work/bin/systemctl"
export PATH="$work/bin:$PATH" FAKE_CALLS="$work/calls"

# A stand-in for the running agent: a process whose environment carries
# the definition it was started with.
FABRIC_AGENT_DEFINITION=aaaa sleep 300 &
agent=$!

passed=0
failed=0
expect() { # NAME WANT-CALLS
  local got
  got=$(cat "$FAKE_CALLS" 2>/dev/null || true)
  if [ "$got" = "$2" ]; then
    passed=$((passed + 1))
  else
    echo "upgrade script: $1: expected calls [$2], got [$got]" >&2
    failed=$((failed + 1))
  fi
  rm -f "$FAKE_CALLS"
}

FAKE_MAIN_PID=0 FAKE_LOADED=bbbb bash -e "$work/upgrade.sh" >/dev/null
expect "agent not running" ""

FAKE_MAIN_PID=$agent FAKE_LOADED=aaaa bash -e "$work/upgrade.sh" >/dev/null
expect "agent already on the loaded definition" ""

FAKE_MAIN_PID=$agent FAKE_LOADED=bbbb bash -e "$work/upgrade.sh" >/dev/null
expect "agent on an older definition" "restart --no-block fabric-agent.service"

FAKE_MAIN_PID=$agent FAKE_LOADED= FAKE_LOAD_STATE=not-found bash -e "$work/upgrade.sh" >/dev/null
expect "agent turned off" "stop --no-block fabric-agent.service"

# A converge run holds the lock: the restart waits for it.
flock "$work/converge.lock" sleep 2 &
holder=$!
sleep 0.3
started=$(date +%s%N)
FAKE_MAIN_PID=$agent FAKE_LOADED=bbbb bash -e "$work/upgrade.sh" >/dev/null
waited=$((($(date +%s%N) - started) / 1000000))
wait "$holder"
expect "restart waits for the converge run" "restart --no-block fabric-agent.service"
if [ "$waited" -ge 1000 ]; then
  passed=$((passed + 1))
else
  echo "upgrade script: restarted after ${waited} ms, while the lock was held" >&2
  failed=$((failed + 1))
fi

echo "upgrade-script: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
