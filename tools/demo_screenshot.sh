#!/usr/bin/env bash
# Screenshot of the windowed emosdk-demo, taken under a virtual X server (Xvfb).
# Usage: tools/demo_screenshot.sh [CLIP] [OUT.png] [MODEL]
# Needs: apt-get install xvfb imagemagick (for `import`), and emosdk installed with [capture].
set -euo pipefail
clip=${1:-tests/data/cremad/1001_DFA_HAP_XX.flv}
out=${2:-docs/img/demo.png}
model=${3:-default}
display=:97
Xvfb "$display" -screen 0 1024x560x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $demo $xvfb 2>/dev/null || true' EXIT
sleep 1
log=$(mktemp)
DISPLAY=$display emosdk-demo --input "$clip" --model "$model" --hold 20 2>"$log" &
demo=$!
# wait until the clip has played and the window holds its last result
for _ in $(seq 1 120); do
  grep -q "holding the window" "$log" && break
  kill -0 "$demo" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.5
done
sleep 1
mkdir -p "$(dirname "$out")"
DISPLAY=$display import -window root -crop 960x520+0+0 "$out"
echo "wrote $out"
