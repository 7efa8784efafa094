#!/usr/bin/env bash
# Usage: vm-tests/boot-to-login.sh IMAGE [--format raw|qcow2|vpc|vmdk]
#            [--timeout SECONDS] [--mac MAC] [--log FILE] [--until TEXT]...
#
# Boots IMAGE under qemu-system-x86_64 (q35, UEFI via OVMF, 2 GiB RAM, virtio
# disk, user-mode virtio NIC, -snapshot so IMAGE is never modified) and waits
# for a `login:` prompt on the serial console.
#
#   --format   disk format (default: detected with qemu-img info)
#   --timeout  seconds to wait for the prompt (default 600)
#   --mac      MAC address of the NIC (default 52:54:00:12:34:56)
#   --log      keep the serial console log in FILE (default: temp file)
#   --until    wait for TEXT on the serial console instead of `login:`; repeat
#              it to wait until every TEXT has shown up
#
# Exit 0 and print the elapsed seconds when `login:` (or every TEXT) shows up; exit 1 and
# print the last 40 lines of the serial log on timeout or if qemu dies.
#
# Acceleration: KVM only if it really runs firmware here (probed once by
# booting OVMF briefly), else TCG.  Force with IMGFORGE_VM_ACCEL=kvm|tcg.
# Firmware paths can be overridden with OVMF_CODE / OVMF_VARS.
set -euo pipefail

PROG=boot-to-login
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 2
}
usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit "${1:-2}"
}

IMAGE=
FORMAT=
TIMEOUT=600
MAC=52:54:00:12:34:56
LOG_FILE=
UNTIL=()
while (($#)); do
    case $1 in
    --format) (($# >= 2)) || usage; FORMAT=$2; shift 2 ;;
    --format=*) FORMAT=${1#*=}; shift ;;
    --timeout) (($# >= 2)) || usage; TIMEOUT=$2; shift 2 ;;
    --timeout=*) TIMEOUT=${1#*=}; shift ;;
    --mac) (($# >= 2)) || usage; MAC=$2; shift 2 ;;
    --mac=*) MAC=${1#*=}; shift ;;
    --log) (($# >= 2)) || usage; LOG_FILE=$2; shift 2 ;;
    --log=*) LOG_FILE=${1#*=}; shift ;;
    --until) (($# >= 2)) || usage; UNTIL+=("$2"); shift 2 ;;
    --until=*) UNTIL+=("${1#*=}"); shift ;;
    -h | --help) usage 0 ;;
    -*) log "unknown option: $1"; usage ;;
    *)
        [[ -z "$IMAGE" ]] || usage
        IMAGE=$1
        shift
        ;;
    esac
done
[[ -n "$IMAGE" ]] || usage
((${#UNTIL[@]})) || UNTIL=(login:)
[[ -f "$IMAGE" ]] || die "no such image: $IMAGE"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout wants a number of seconds"
[[ "$MAC" =~ ^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$ ]] || die "bad MAC address: $MAC"

QEMU=${QEMU:-qemu-system-x86_64}
command -v "$QEMU" >/dev/null || die "$QEMU not found"
OVMF_CODE=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
OVMF_VARS=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
[[ -r "$OVMF_CODE" && -r "$OVMF_VARS" ]] || die "OVMF firmware not found ($OVMF_CODE, $OVMF_VARS)"

if [[ -z "$FORMAT" ]]; then
    FORMAT=$(qemu-img info --output=json -- "$IMAGE" |
        sed -n 's/^ *"format": "\([^"]*\)".*/\1/p' | head -n 1)
    [[ -n "$FORMAT" ]] || die "cannot detect the format of $IMAGE; use --format"
fi
case $FORMAT in
raw | qcow2 | vpc | vmdk) ;;
*) die "unsupported format: $FORMAT" ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/boot-to-login.XXXXXXXX")
QEMU_PID=
PROBE_PID=
# shellcheck disable=SC2317 # invoked via trap
cleanup() {
    local pid
    for pid in "$QEMU_PID" "$PROBE_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            kill -9 "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf -- "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

SERIAL_LOG=${LOG_FILE:-$WORK/serial.log}
mkdir -p -- "$(dirname -- "$SERIAL_LOG")"
: >"$SERIAL_LOG"

firmware_args() {
    local vars=$1
    cp -- "$OVMF_VARS" "$vars"
    printf '%s\n' \
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE" \
        -drive "if=pflash,format=raw,unit=1,file=$vars"
}

# kvm_works: boot OVMF alone under KVM and see whether it gets as far as
# printing its boot manager messages.  Some hosts expose a /dev/kvm that
# cannot run real firmware (the guest stops with "KVM internal error").
kvm_works() {
    [[ -r /dev/kvm && -w /dev/kvm ]] || return 1
    local plog=$WORK/probe-serial.log perr=$WORK/probe-stderr.log i fw=() saved_stderr
    mapfile -t fw < <(firmware_args "$WORK/probe-vars.fd")
    : >"$plog"
    # Keep bash's "Aborted" job notice quiet if qemu dies on a broken KVM.
    exec {saved_stderr}>&2 2>/dev/null
    "$QEMU" -machine q35 -accel kvm -cpu host -m 256 -nodefaults -display none \
        -monitor none -serial "file:$plog" "${fw[@]}" >/dev/null 2>"$perr" &
    PROBE_PID=$!
    local ok=1
    for ((i = 0; i < 40; i++)); do
        sleep 0.5
        if grep -aq 'BdsDxe' "$plog" 2>/dev/null; then
            ok=0
            break
        fi
        if grep -q 'KVM internal error\|failed to initialize kvm\|Could not access KVM' "$perr" 2>/dev/null ||
            ! kill -0 "$PROBE_PID" 2>/dev/null; then
            break
        fi
    done
    kill "$PROBE_PID" 2>/dev/null || true
    wait "$PROBE_PID" 2>/dev/null || true
    PROBE_PID=
    exec 2>&"$saved_stderr" {saved_stderr}>&-
    return "$ok"
}

ACCEL=${IMGFORGE_VM_ACCEL:-}
PROBED=0
case $ACCEL in
kvm | tcg) log "acceleration forced by IMGFORGE_VM_ACCEL: $ACCEL" ;;
"")
    if kvm_works; then ACCEL=kvm; else ACCEL=tcg; fi
    PROBED=1
    log "acceleration: $ACCEL (probed)"
    ;;
*) die "IMGFORGE_VM_ACCEL must be kvm or tcg, not '$ACCEL'" ;;
esac

# all_seen - every --until text is on the serial console.
all_seen() {
    local text
    for text in "${UNTIL[@]}"; do
        grep -aqF -- "$text" "$SERIAL_LOG" 2>/dev/null || return 1
    done
}

# boot ACCEL - boot the image once; 0: reached the text, 1: timed out, 3: qemu exited early.
boot() {
    local accel=$1 accel_opt cpu smp fw=() args=()
    if [[ "$accel" == kvm ]]; then
        accel_opt=kvm
        cpu=host
        smp=2
    else
        accel_opt=tcg,thread=multi
        cpu=max
        smp=$(($(nproc) >= 2 ? 2 : 1))
    fi
    mapfile -t fw < <(firmware_args "$WORK/vars.fd")
    args=(
        -name imgforge-boot-to-login
        -machine q35 -accel "$accel_opt" -cpu "$cpu" -smp "$smp" -m 2048
        -nodefaults -display none -monitor none -parallel none
        -serial "file:$SERIAL_LOG"
        "${fw[@]}"
        -snapshot
        -drive "file=$IMAGE,format=$FORMAT,if=virtio,cache=unsafe"
        -nic "user,model=virtio-net-pci,mac=$MAC"
        -device virtio-rng-pci
    )
    : >"$SERIAL_LOG"
    log "booting $IMAGE ($FORMAT, $accel, mac $MAC, timeout ${TIMEOUT}s)"
    START=$SECONDS
    "$QEMU" "${args[@]}" >"$WORK/qemu.out" 2>&1 &
    QEMU_PID=$!
    while ((SECONDS - START < TIMEOUT)); do
        if all_seen; then
            return 0
        fi
        if ! kill -0 "$QEMU_PID" 2>/dev/null; then
            local rc=0
            wait "$QEMU_PID" 2>/dev/null || rc=$?
            QEMU_PID=
            log "qemu exited early (status $rc):"
            sed 's/^/  qemu: /' "$WORK/qemu.out" >&2 || true
            return 3
        fi
        sleep 1
    done
    return 1
}

status=0
boot "$ACCEL" || status=$?
if ((status == 3 && PROBED)) && [[ "$ACCEL" == kvm ]]; then
    # KVM passed the probe but qemu died under it (qemu 10 on a paravirtual /dev/kvm aborts on
    # an MSR assertion during boot): the same boot under TCG.
    log "qemu died under KVM: falling back to TCG"
    ACCEL=tcg
    status=0
    boot "$ACCEL" || status=$?
fi
ELAPSED=$((SECONDS - START))

if ((status == 0)); then
    log "reached '${UNTIL[*]}' after ${ELAPSED}s ($ACCEL)"
    echo "$ELAPSED"
    exit 0
fi
if ((status == 1)); then
    log "not all of '${UNTIL[*]}' within ${TIMEOUT}s"
fi
log "last 40 lines of the serial log ($SERIAL_LOG):"
tail -n 40 "$SERIAL_LOG" | sed 's/\x1b\[[0-9;=?]*[A-Za-z]//g; s/\r$//' >&2 || true
exit 1
