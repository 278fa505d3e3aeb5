#!/bin/bash
case " $* " in *" get "*) exec perf record -q -g -o /work/runs/pget.$(date +%s%N).data -- /work/main/target/release/cryptstream "$@";; esac
exec /work/main/target/release/cryptstream "$@"
