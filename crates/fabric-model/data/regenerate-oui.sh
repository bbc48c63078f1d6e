#!/bin/sh
# Regenerates oui.bin, the registered IEEE MA-L prefixes (OUIs) that
# spec.network.macAddress is checked against: sorted, 3 bytes each.
# Source: Debian's ieee-data package (apt-get install ieee-data).
# Proxmox's BC:24:11 is added by hand: it was assigned after the ieee-data
# snapshot Debian 12 ships.
set -eu
CSV=${1:-/usr/share/ieee-data/oui.csv}
{ awk -F, '$1=="MA-L"{print $2}' "$CSV"; echo BC2411; } | tr a-f A-F | sort -u | xxd -r -p > "$(dirname "$0")/oui.bin"
