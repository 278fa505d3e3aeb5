# Sourced by the session scripts under benchsuite/runs/*-bench-all.sh from
# 2026-12-03d on: runs each benchmark once the machine is quiet.
#   R:   the folder that gets one folder per run (default benchsuite/runs)
#   LOG: a file that gets a line as each run ends

# waitq: waits (at most 7.5 minutes) for a 1-minute load average under 0.5.
waitq() {
  local l
  for _ in $(seq 90); do
    l=$(cut -d' ' -f1 /proc/loadavg)
    awk "BEGIN{exit !($l < 0.5)}" && return
    sleep 5
  done
}

# run NAME CMD...: once quiet, runs CMD with its output in $R/NAME/out.txt,
# the command in command.txt and `uptime` before and after beside it.
run() {
  local name=$1; shift
  mkdir -p "${R:-benchsuite/runs}/$name"
  local d=${R:-benchsuite/runs}/$name
  waitq
  uptime > "$d/load-before.txt"
  echo "\$ $*" > "$d/command.txt"
  "$@" > "$d/out.txt" 2>&1
  uptime > "$d/load-after.txt"
  echo "$name done $(date +%T)" >> "${LOG:-/dev/null}"
}
