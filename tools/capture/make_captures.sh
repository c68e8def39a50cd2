#!/usr/bin/env bash
# Record real SIPVicious and sipsak traffic against a loopback Kamailio, one capture per tool.
#
#   tools/capture/make_captures.sh [OUTDIR]      (default OUTDIR: examples/captures)
#
# Needs: kamailio (Debian 'kamailio'), dumpcap (Debian 'wireshark-common' / 'tshark'),
# sipsak (Debian 'sipsak'), python3 with venv. SIPVicious (GPL-2.0, PyPI 'sipvicious') is
# installed into a throw-away venv under /tmp unless SIPVICIOUS_BIN points at its bin/.
# Everything listens and sends on 127.0.0.1:$PORT only; every tool run is bounded (fixed
# ranges, timeouts) and every process started here is killed on exit (trap).
set -euo pipefail

PORT="${PORT:-55060}"
HERE="$(cd "$(dirname "$0")" && pwd)"
OUTDIR="$(mkdir -p "${1:-$HERE/../../examples/captures}" && cd "${1:-$HERE/../../examples/captures}" && pwd)"
WORK="$(mktemp -d /tmp/sipwarden-capture.XXXXXX)"
# A fresh random password per run: the digest exchanges in the captures prove nothing reusable.
PASSWORD="$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
KAMAILIO="$(command -v kamailio || echo /usr/sbin/kamailio)"
DUMPCAP="$(command -v dumpcap)"
SIPSAK="$(command -v sipsak)"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

if [[ -z "${SIPVICIOUS_BIN:-}" ]]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install --quiet "sipvicious==0.3.8"
  SIPVICIOUS_BIN="$WORK/venv/bin"
fi

sed -e "s/@PORT@/$PORT/g" -e "s/@PASSWORD@/$PASSWORD/g" "$HERE/kamailio.cfg.in" > "$WORK/kamailio.cfg"
"$KAMAILIO" -c -f "$WORK/kamailio.cfg" >/dev/null 2>&1
"$KAMAILIO" -f "$WORK/kamailio.cfg" -DD -E -P "$WORK/kamailio.pid" -m 32 -M 4 \
  >"$WORK/kamailio.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do
  ss -lun | grep -q "127.0.0.1:$PORT " && break
  sleep 0.1
done
if ! ss -lun | grep -q "127.0.0.1:$PORT "; then
  echo "kamailio did not start listening on 127.0.0.1:$PORT:" >&2
  tail -n 20 "$WORK/kamailio.log" >&2
  exit 1
fi

# capture NAME CMD...: record loopback UDP to/from $PORT while CMD runs, into $OUTDIR/NAME.pcap.
capture() {
  local name="$1"; shift
  local out="$OUTDIR/$name.pcap"
  "$DUMPCAP" -q -P -i lo -f "udp port $PORT" -w "$WORK/$name.pcap" 2>/dev/null &
  local cap=$!
  PIDS+=("$cap")
  sleep 1
  echo "+ $*" | sed "s/$PASSWORD/PASSWORD/g" >&2
  # Not an error by itself: svwar exits 40 when it found extensions.
  timeout 120 "$@" >"$WORK/$name.log" 2>&1 || echo "  ($name exited $?)" >&2
  tail -n 4 "$WORK/$name.log" | sed -e "s/$PASSWORD/PASSWORD/g" -e 's/^/  | /' >&2
  sleep 1
  kill -INT "$cap"; wait "$cap" 2>/dev/null || true
  cp "$WORK/$name.pcap" "$out"
  chmod 644 "$out"
  echo "  -> $out ($(stat -c %s "$out") bytes)" >&2
}

capture sipvicious-svmap-loopback "$SIPVICIOUS_BIN/sipvicious_svmap" -p "$PORT" 127.0.0.1
capture sipvicious-svwar-loopback \
  "$SIPVICIOUS_BIN/sipvicious_svwar" -e100-199 -p "$PORT" 127.0.0.1
capture sipvicious-svcrack-loopback \
  "$SIPVICIOUS_BIN/sipvicious_svcrack" -u alice -r1000-1100 -p "$PORT" 127.0.0.1
# A client tool: one digest REGISTER for alice and one OPTIONS ping, as a monitoring script does
# (ET's scanner signatures list sipsak too; see tests/golden/tool-sipsak-*).
capture sipsak-register-options-loopback bash -c "
  '$SIPSAK' -U -s sip:alice@127.0.0.1:$PORT -a '$PASSWORD' -l 55070 -H 127.0.0.1 -i -vv &&
  '$SIPSAK' -s sip:alice@127.0.0.1:$PORT -l 55071 -H 127.0.0.1 -vv"
