#!/usr/bin/env bash
# End-to-end check of tests/slurm/cluster.sh on this machine:
#   start -> 4 one-GPU jobs (max 2 concurrent, distinct GPU ids) -> env export
#   -> scancel (SIGTERM then KillWait) -> exit 3 => FAILED 3:0 -> --time=1 => TIMEOUT
#   -> stop -> no leftover processes.
# Usage: tests/slurm/verify.sh [STATE_DIR]   (default: a fresh mktemp dir)
#        TB_SLURM_SKIP_TIMEOUT=1 skips the ~75-90 s TIMEOUT check.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE_DIR="${1:-$(mktemp -d /tmp/tbslurm.XXXXXX)}"
WORK="$STATE_DIR/verify"
FAILS=0

ok() { echo "OK   $*"; }
bad() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }

cleanup() { "$HERE/cluster.sh" stop "$STATE_DIR" || true; }
trap cleanup EXIT

t0=$(date +%s.%N)
eval "$("$HERE/cluster.sh" start "$STATE_DIR")"
t1=$(date +%s.%N)
echo "start took $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s; SLURM_CONF=$SLURM_CONF"
mkdir -p "$WORK"
cd "$WORK"

jstate() { scontrol show job "$1" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
jexit() { scontrol show job "$1" | sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p'; }
wait_final() { # JOBID TIMEOUT_S
  local i
  for ((i = 0; i < $2 * 2; i++)); do
    case "$(jstate "$1")" in
    PENDING | RUNNING | CONFIGURING | COMPLETING | SUSPENDED) sleep 0.5 ;;
    *) return 0 ;;
    esac
  done
  return 1
}

# ---- 1. four 1-GPU jobs, at most two at a time, distinct GPUs -------------
export TB_VERIFY_MARKER=from_submitter
ids=()
for i in 1 2 3 4; do
  ids+=("$(sbatch --parsable -J gpu$i --gres=gpu:1 --cpus-per-task=1 -o "$WORK/gpu$i.out" \
    --wrap 'echo "$SLURM_JOB_GPUS $CUDA_VISIBLE_DEVICES $(date +%s.%N) marker=$TB_VERIFY_MARKER user=$(id -un)"; sleep 5; echo "end $(date +%s.%N)"')")
done
maxrun=0
for ((i = 0; i < 80; i++)); do
  n=$(squeue -h -t RUNNING -o %i | wc -l)
  ((n > maxrun)) && maxrun=$n
  [[ -z "$(squeue -h -t PENDING,RUNNING,COMPLETING -o %i)" ]] && break
  sleep 0.25
done
[[ $maxrun -le 2 && $maxrun -ge 1 ]] && ok "max concurrently RUNNING = $maxrun" || bad "max concurrently RUNNING = $maxrun"
for i in 1 2 3 4; do echo "  gpu$i.out: $(head -n1 "$WORK/gpu$i.out")"; done
# pairs (1,2) and (3,4) ran together (FIFO, same size): their GPUs must differ
for pair in "1 2" "3 4"; do
  set -- $pair
  a=$(awk '{print $1}' "$WORK/gpu$1.out" | head -n1)
  b=$(awk '{print $1}' "$WORK/gpu$2.out" | head -n1)
  [[ -n "$a" && -n "$b" && "$a" != "$b" ]] && ok "concurrent jobs gpu$1/gpu$2 got SLURM_JOB_GPUS $a / $b" ||
    bad "concurrent jobs gpu$1/gpu$2 got '$a' / '$b'"
done
for i in 1 2 3 4; do
  read -r jg cvd _ <"$WORK/gpu$i.out"
  [[ "$jg" == "$cvd" ]] || bad "gpu$i: SLURM_JOB_GPUS=$jg != CUDA_VISIBLE_DEVICES=$cvd"
done
grep -q 'marker=from_submitter user=root' "$WORK/gpu1.out" && ok "submitter env exported (--export=ALL default), runs as root" ||
  bad "env not exported / not root"
for id in "${ids[@]}"; do [[ "$(jstate "$id")" == COMPLETED ]] || bad "job $id state $(jstate "$id")"; done
ok "squeue -t all after completion: $(squeue -h -t all -j "$(IFS=,; echo "${ids[*]}")" -o '%i=%T' | tr '\n' ' ')"

# ---- 2. scancel of a running job: SIGTERM first, SIGKILL after KillWait -----
cat >"$WORK/trap.sh" <<'EOF'
#!/bin/bash
trap 'echo "SIGTERM $(date +%s.%N)"' TERM
echo "started $(date +%s.%N)"
for i in $(seq 1 600); do sleep 0.2; done
EOF
j=$(sbatch --parsable -J trap -c1 --gres=gpu:1 -o "$WORK/trap.out" "$WORK/trap.sh")
for ((i = 0; i < 40; i++)); do [[ "$(jstate "$j")" == RUNNING ]] && grep -q started "$WORK/trap.out" 2>/dev/null && break; sleep 0.25; done
tc=$(date +%s.%N)
scancel "$j"
sleep 1
echo "  1 s after scancel: squeue=$(squeue -h -t all -j "$j" -o %T) scontrol=$(jstate "$j")"
wait_final "$j" 30 || bad "cancelled job $j did not finish"
te=$(date +%s.%N)
echo "  trap.out: $(tr '\n' '|' <"$WORK/trap.out")"
grep -q '^SIGTERM' "$WORK/trap.out" && ok "job script got SIGTERM on scancel" || bad "no SIGTERM seen"
[[ "$(jstate "$j")" == CANCELLED ]] && ok "scancel'ed job: JobState=CANCELLED ExitCode=$(jexit "$j") (ignored SIGTERM -> SIGKILL after $(awk -v a="$tc" -v b="$te" 'BEGIN{printf "%.1f", b-a}') s)" ||
  bad "cancelled job state $(jstate "$j")"

# ---- 3. exit 3 => FAILED, ExitCode=3:0 ------------------------------------
j=$(sbatch --parsable -J fail -c1 -o "$WORK/fail.out" --wrap 'echo failing; exit 3')
wait_final "$j" 30 || true
st=$(jstate "$j")
ec=$(jexit "$j")
[[ "$st" == FAILED && "$ec" == 3:0 ]] && ok "exit 3 job: JobState=$st ExitCode=$ec squeue=$(squeue -h -t all -j "$j" -o '%T/%r')" ||
  bad "exit 3 job: JobState=$st ExitCode=$ec"

# ---- 4. --time=1 => TIMEOUT -------------------------------------------------
if [[ "${TB_SLURM_SKIP_TIMEOUT:-0}" != 1 ]]; then
  j=$(sbatch --parsable -J to --time=1 -c1 -o "$WORK/to.out" "$WORK/trap.sh")
  ts=$(date +%s)
  wait_final "$j" 150 || true
  st=$(jstate "$j")
  [[ "$st" == TIMEOUT ]] && ok "--time=1 job: JobState=$st Reason=$(squeue -h -t all -j "$j" -o %r) ExitCode=$(jexit "$j") after $(($(date +%s) - ts)) s; to.out: $(tr '\n' '|' <"$WORK/to.out")" ||
    bad "--time=1 job state $st"
fi

# ---- 5. stop, nothing left ------------------------------------------------
pids="$(cat "$STATE_DIR"/{munged,slurmctld,slurmd}.pid 2>/dev/null | tr '\n' ' ')"
trap - EXIT
cd /
"$HERE/cluster.sh" stop "$STATE_DIR"
"$HERE/cluster.sh" stop "$STATE_DIR" # idempotent
left=""
for p in $pids; do [[ -d /proc/$p ]] && left+=" $p"; done
# any slurmstepd/job still referencing our state dir?
for p in /proc/[0-9]*; do
  [[ "$(readlink "$p/cwd" 2>/dev/null)" == "$STATE_DIR"* ]] && left+=" ${p#/proc/}"
done
[[ -z "$left" ]] && ok "after stop: none of the started daemons ($pids) or job processes remain" || bad "left over:$left"
ps -eo pid,args | grep -E '[s]lurm(ctld|d|stepd)|[m]unged' || true

echo
[[ $FAILS -eq 0 ]] && echo "ALL CHECKS PASSED" || echo "$FAILS CHECK(S) FAILED"
exit $((FAILS > 0))
