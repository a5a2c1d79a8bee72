#!/usr/bin/env bash
# Instructions per message of each benchmarks/profile_drain.py variant, counted by callgrind:
# (Ir at N2 messages - Ir at N1 messages) / (N2 - N1), so start-up and imports cancel out.
# Repeatable on a loaded machine (counts, not times). ~35 s per valgrind run; two run at once.
# Usage: PYTHONPATH=$PWD bash benchmarks/profile_callgrind.sh [handlers] [outdir]
set -euo pipefail
K=${1:-1}
OUT=${2:-/tmp/eventbus-callgrind}
N1=1000
N2=21000
mkdir -p "$OUT"
VARIANTS="parse body limit route bare acct eventbus"
for v in $VARIANTS; do for n in $N1 $N2; do echo "$v $n"; done; done |
  xargs -P 2 -n 2 sh -c 'valgrind --tool=callgrind --callgrind-out-file="$0/$1.$2.k'"$K"'.out" \
      python -m benchmarks.profile_drain --reps 1 --handlers '"$K"' --messages "$2" --variant "$1" \
      >/dev/null 2>"$0/$1.$2.k'"$K"'.log"' "$OUT"
ir() { sed -n 's/.*I *refs: *//p' "$OUT/$1.$2.k$K.log" | tr -d ,; }
echo "handlers=$K  instructions per message (callgrind, (Ir@$N2 - Ir@$N1) / $((N2 - N1)))"
for v in $VARIANTS; do
  printf '%-9s %6d\n' "$v" $(( ($(ir "$v" $N2) - $(ir "$v" $N1)) / (N2 - N1) ))
done
