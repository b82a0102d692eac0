#!/bin/sh
# keepalived vrrp_script: is this node's caslb fit to hold the VIP?
#
# Usage: check_caslb.sh [ADMIN_URL]
#   ADMIN_URL defaults to $CASLB_ADMIN_URL, then http://127.0.0.1:9090 (the [admin] bind).
#
# Exit 0 when caslb's admin API answers GET /status and at least one pool has an
# eligible server. Non-zero (keepalived puts the instance in FAULT and the peer takes
# the VIP) when:
#   1  the admin API does not answer: caslb is stopped, hung or crashed;
#   2  no pool has an eligible server: this node cannot reach any CAS server,
#      most likely its own network is cut off from the farm;
#   3  /status did not answer the JSON caslb serves.
# One protocol down on every server (say OWA after a bad update) is a farm problem the
# peer sees too, so it does not fail the check: moving the VIP would only flap.
set -u

url="${1:-${CASLB_ADMIN_URL:-http://127.0.0.1:9090}}"

# --max-time stays under the vrrp_script timeout so keepalived never kills us mid-way.
status=$(curl -fsS --max-time 2 "${url%/}/status") || exit 1

printf '%s' "$status" | python3 -c '
import json, sys
try:
    pools = json.load(sys.stdin)["pools"]
    eligible = sum(int(pool["active_servers"]) for pool in pools.values())
except (ValueError, KeyError, TypeError, AttributeError) as error:
    print(f"check_caslb: unexpected /status document: {error!r}", file=sys.stderr)
    sys.exit(3)
if eligible == 0:
    print(f"check_caslb: no eligible server in any of {len(pools)} pool(s)", file=sys.stderr)
    sys.exit(2)
'
