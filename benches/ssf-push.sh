#!/usr/bin/env bash
# Pushed SETs accepted per second (issue 17, "Bad input, reliability, speed": at least 1,000/s).
#
#   bash benches/ssf-push.sh                    # 10 s at concurrency 32, CPUs split (load.sh)
#   DURATION=5 CONCURRENCY=64 bash benches/ssf-push.sh
#   ALG=RS256 bash benches/ssf-push.sh          # RSA-2048 signatures instead of Ed25519
#
# A release `tether serve` on a throw-away data directory, with one signal source (inline JWKS)
# and one user. Python (the interop venv's `cryptography`) signs SETS distinct SETs beforehand:
# CAEP credential-change about that user, each with its own `jti`, so every accepted push writes
# `signal.received` and `user.password_reset` (two audit events, one write transaction). wrk
# pushes them to POST /ssf/push/{id} with the source's push authorization, each thread walking its
# own share of the file in order. The figure is counted from the audit log, not from wrk: new
# SETs accepted = audit events written / 2, over the run's duration; pushes past the end of the
# file are replays (202, nothing written) and are not counted. wrk's own requests/s is printed too.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-32}
ALG=${ALG:-EdDSA}
SETS=${SETS:-60000}
. benches/support/load.sh

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { echo "needs the interop venv: python3 -m venv .venv && .venv/bin/pip install -r tests/interop/requirements.txt" >&2; exit 1; }
cargo build --release --quiet --bin tether
work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

"${server_on[@]}" target/release/tether serve --data-dir "$work/data" --listen 127.0.0.1:0 --workers "$WORKERS" \
    >"$work/server.out" 2>"$work/server.err" &
server=$!
for _ in $(seq 1 300); do grep -q "tether listening on " "$work/server.out" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/^tether listening on //p' "$work/server.out" | head -1)
[ -n "$base" ] || { cat "$work/server.err" >&2; exit 1; }
admin=$(tr -d '\n' <"$work/data/admin.credential")

"$PY" - "$base" "$admin" "$ALG" "$SETS" "$work" <<'PY'
import base64, json, sys, time, urllib.request, uuid
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

base, admin, alg, count, work = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
def call(path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
if alg == "EdDSA":
    key = ed25519.Ed25519PrivateKey.generate()
    jwk = {"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64(key.public_key().public_bytes_raw())}
    signer = key.sign
else:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = key.public_key().public_numbers().n
    jwk = {"kty": "RSA", "kid": "k", "n": b64(n.to_bytes((n.bit_length() + 7) // 8, "big")), "e": "AQAB"}
    signer = lambda m: key.sign(m, padding.PKCS1v15(), hashes.SHA256())
source = call("/v1/signal-sources", {"issuer": "https://idp.bench", "jwks": {"keys": [jwk]}, "audience": "tether"})
call("/v1/users", {"external_id": "bench", "email": "bench@example.com", "permissions": []})
header = b64(json.dumps({"alg": alg, "typ": "secevent+jwt", "kid": "k"}).encode())
event = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
started = time.time()
with open(f"{work}/sets", "w") as out:
    for _ in range(count):
        claims = {"iss": "https://idp.bench", "aud": "tether", "iat": int(time.time()), "jti": uuid.uuid4().hex,
                  "sub_id": {"format": "email", "email": "bench@example.com"},
                  "events": {event: {"credential_type": "password", "change_type": "update"}}}
        signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
        out.write(f"{signing_input}.{b64(signer(signing_input.encode()))}\n")
with open(f"{work}/env", "w") as env:
    env.write(f"PUSH_PATH=/ssf/push/{source['id']}\nPUSH_AUTH='{source['push_authorization']}'\n")
print(f"signed {count} {alg} SETs in {time.time() - started:.1f} s", file=sys.stderr)
PY
set -a; . "$work/env"; set +a
export SETS_FILE="$work/sets" WRK_THREADS="$THREADS"

head_seq() { curl -s -H "Authorization: Bearer $admin" "$base/v1/audit/verify" | sed -n 's/.*"head_seq":\([0-9]*\).*/\1/p'; }
before=$(head_seq)
"${load_on[@]}" wrk -t"$THREADS" -c"$CONCURRENCY" -d"${DURATION}s" --latency -s benches/support/push.lua "$base$PUSH_PATH" | tee "$work/wrk.out"
after=$(head_seq)
accepted=$(( (after - before) / 2 ))
echo "$split; $ALG; concurrency $CONCURRENCY; $DURATION s"
echo "new SETs accepted (audit events / 2): $accepted, $(( accepted / DURATION ))/s"
[ "$accepted" -lt "$SETS" ] || echo "every SET was used: raise SETS for a figure not capped by the file" >&2
