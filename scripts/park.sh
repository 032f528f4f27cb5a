#!/usr/bin/env bash
# Carry unfinished training runs from one working machine to the next through git.
#
# Run directories (runs/, docs/sweeps/*/runs/) keep their checkpoints out of git, and a fresh
# checkout starts without them: a 2-hour CIFAR-10 run interrupted at a session's end would be
# trained again from nothing. `save` packs every unfinished run (a checkpoint.pt and no
# result.json) into parked/runs.tar, to be committed; `restore` unpacks it on the next machine,
# where `--resume` (or the sweep / benchmark that owns the run) continues it exactly.
#
#   kill -TERM <workers>          # each stops at the end of its step and saves its state
#   bash scripts/park.sh save     # refuses while a run directory is still locked
#   git add parked/runs.tar && git commit -m "park ..."
#   bash scripts/park.sh restore  # on the next checkout, then restart the workers
#
# Finished runs are not parked: their result.json (and the sweep's results.jsonl) are what is
# kept of them. `save` with directories packs only the runs under those.
set -euo pipefail
cd "$(dirname "$0")/.."
archive=parked/runs.tar

case "${1:-}" in
save)
    shift
    roots=("$@")
    if [ ${#roots[@]} -eq 0 ]; then
        roots=()
        for r in runs docs/sweeps; do [ -d "$r" ] && roots+=("$r"); done
    fi
    runs=()
    while IFS= read -r ckpt; do
        run=$(dirname "$ckpt")
        [ -e "$run/result.json" ] && continue
        if [ -e "$run/.lock" ] && ! flock -n "$run/.lock" true; then
            echo "park: $run is being trained (its .lock is held); stop it with SIGTERM first" >&2
            exit 1
        fi
        runs+=("$run")
    done < <(find "${roots[@]}" -name checkpoint.pt -type f | sort)
    if [ ${#runs[@]} -eq 0 ]; then
        echo "park: no unfinished run under ${roots[*]}"
        rm -f "$archive"
        exit 0
    fi
    mkdir -p parked
    tar -cf "$archive" --exclude=.lock --exclude=.claimed "${runs[@]}"
    for run in "${runs[@]}"; do
        echo "parked $run ($(tail -n 1 "$run/metrics.jsonl" 2>/dev/null | cut -c1-60))"
    done
    echo "park: ${#runs[@]} run(s), $(du -h "$archive" | cut -f1) in $archive; commit it"
    ;;
restore)
    if [ ! -f "$archive" ]; then
        echo "park: nothing parked ($archive is absent)"
        exit 0
    fi
    tar -xvf "$archive" | grep -E '/checkpoint\.pt$' | sed 's|/checkpoint.pt$||; s|^|restored |'
    ;;
*)
    echo "usage: bash scripts/park.sh save [DIR...] | restore" >&2
    exit 2
    ;;
esac
