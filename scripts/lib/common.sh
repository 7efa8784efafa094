# shellcheck shell=bash
# scripts/lib/common.sh - shared helpers for imgforge's image-building scripts.
#
# Usage (from another script):
#   # shellcheck source=scripts/lib/common.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#
# Provides logging (log/warn/die), temp-dir tracking with cleanup on exit
# (make_tempdir + imgforge_cleanup, installed as an EXIT trap by
# imgforge_install_traps), partition geometry lookup (part_start/part_sectors),
# writing a filesystem image into a disk image at a partition's offset
# (write_fs_into_partition), checksum files (write_sums) and throwaway OpenPGP
# keys/signatures (make_keys_and_sign).
#
# Nothing in here mounts anything or attaches loop devices (make-small-image
# --variant lvm attaches one itself, for LVM's tools).

# Guard against double sourcing.
if [[ -n "${IMGFORGE_COMMON_SH:-}" ]]; then
    return 0
fi
IMGFORGE_COMMON_SH=1

IMGFORGE_PROG=${IMGFORGE_PROG:-$(basename "$0")}

log() {
    printf '%s: %s\n' "$IMGFORGE_PROG" "$*" >&2
}

warn() {
    printf '%s: warning: %s\n' "$IMGFORGE_PROG" "$*" >&2
}

die() {
    printf '%s: error: %s\n' "$IMGFORGE_PROG" "$*" >&2
    exit 1
}

# require_cmds CMD... - die unless every command is available.
require_cmds() {
    local c missing=()
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    if ((${#missing[@]})); then
        die "missing required command(s): ${missing[*]}"
    fi
}

# --- temporary directories and cleanup -------------------------------------

IMGFORGE_TMPDIRS=()
IMGFORGE_CLEANUP_HOOKS=()

# make_tempdir VAR [PARENT] - create a temp dir, store its path in VAR and
# remember it for removal on exit.
make_tempdir() {
    local __var=$1 __parent=${2:-${TMPDIR:-/tmp}} __dir
    mkdir -p "$__parent"
    __dir=$(mktemp -d "$__parent/imgforge.XXXXXXXX")
    IMGFORGE_TMPDIRS+=("$__dir")
    printf -v "$__var" '%s' "$__dir"
}

# add_cleanup_hook CMD - run CMD (via eval) on exit, before temp dirs go.
add_cleanup_hook() {
    IMGFORGE_CLEANUP_HOOKS+=("$1")
}

imgforge_cleanup() {
    local rc=$? h d
    trap - EXIT INT TERM HUP
    set +e
    for h in "${IMGFORGE_CLEANUP_HOOKS[@]}"; do
        eval "$h"
    done
    for d in "${IMGFORGE_TMPDIRS[@]}"; do
        if [[ -n "$d" && -d "$d" ]]; then
            rm -rf --one-file-system -- "$d"
        fi
    done
    return "$rc"
}

imgforge_install_traps() {
    trap imgforge_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# --- disk image helpers ------------------------------------------------------

# part_start IMG N / part_sectors IMG N - first sector / size in 512-byte
# sectors of partition N of the (MBR or GPT) disk image IMG.
part_start() {
    partx --noheadings --output START --nr "$2" -- "$1" | tr -d ' '
}

part_sectors() {
    partx --noheadings --output SECTORS --nr "$2" -- "$1" | tr -d ' '
}

# new_fs_file FILE BYTES - create an empty sparse file of BYTES bytes.
new_fs_file() {
    rm -f -- "$1"
    truncate -s "$2" -- "$1"
}

# write_fs_into_partition DISK N FSIMG - copy FSIMG into partition N of DISK,
# keeping holes (the disk must already be the right size).
write_fs_into_partition() {
    local disk=$1 nr=$2 fs=$3 start sectors fsbytes
    start=$(part_start "$disk" "$nr")
    sectors=$(part_sectors "$disk" "$nr")
    [[ "$start" =~ ^[0-9]+$ && "$sectors" =~ ^[0-9]+$ ]] ||
        die "cannot find partition $nr in $disk"
    fsbytes=$(stat -c %s -- "$fs")
    ((fsbytes <= sectors * 512)) ||
        die "$fs ($fsbytes bytes) does not fit into partition $nr of $disk"
    dd if="$fs" of="$disk" bs=64K seek=$((start * 512)) oflag=seek_bytes \
        conv=notrunc,sparse status=none
}

# --- checksums and signatures ------------------------------------------------

# write_sums DIR FILE... - write DIR/SHA256SUMS and DIR/SHA512SUMS in GNU
# format.  A FILE given as '*NAME' is listed in binary mode ('hex *NAME'),
# like Ubuntu does for its .img files; plain names get 'hex  NAME'.
write_sums() {
    local dir=$1 algo pids=()
    shift
    # Both algorithms in parallel: each is a full read of multi-GiB images.
    for algo in 256 512; do
        _write_sums_one "$dir" "$algo" "$@" &
        pids+=($!)
    done
    for algo in "${pids[@]}"; do
        wait "$algo" || die "checksumming failed"
    done
    for algo in 256 512; do
        mv -f -- "$dir/SHA${algo}SUMS.tmp" "$dir/SHA${algo}SUMS"
    done
}

_write_sums_one() {
    local dir=$1 algo=$2 f
    shift 2
    : >"$dir/SHA${algo}SUMS.tmp"
    for f in "$@"; do
        if [[ "$f" == \** ]]; then
            (cd "$dir" && "sha${algo}sum" --binary -- "${f#\*}") >>"$dir/SHA${algo}SUMS.tmp"
        else
            (cd "$dir" && "sha${algo}sum" -- "$f") >>"$dir/SHA${algo}SUMS.tmp"
        fi
    done
}

# _gpg_home_gen HOME UID - make a throwaway RSA-3072 signing key in HOME.
_gpg_home_gen() {
    local home=$1 uid=$2
    mkdir -p -- "$home"
    chmod 700 -- "$home"
    GNUPGHOME=$home gpg --batch --quiet --no-tty --pinentry-mode loopback \
        --passphrase '' --quick-gen-key "$uid" rsa3072 sign never 2>/dev/null
}

_gpg_home_kill() {
    GNUPGHOME=$1 gpgconf --kill all >/dev/null 2>&1 || true
    rm -rf -- "$1"
}

# make_keys_and_sign DIR - sign DIR/SHA256SUMS with a fresh throwaway vendor
# key (detached binary signature DIR/SHA256SUMS.gpg), export its public key to
# DIR/keys/vendor.asc and the public half of a second unrelated throwaway key
# to DIR/keys/other.asc.  The private keys are deleted afterwards.
make_keys_and_sign() {
    local dir=$1 ghome vendor other
    make_tempdir ghome
    vendor=$ghome/vendor
    other=$ghome/other
    add_cleanup_hook "GNUPGHOME='$vendor' gpgconf --kill all >/dev/null 2>&1; GNUPGHOME='$other' gpgconf --kill all >/dev/null 2>&1"
    mkdir -p -- "$dir/keys"
    # Generate both keys in parallel: RSA key generation dominates run time.
    _gpg_home_gen "$vendor" 'imgforge test vendor <vendor@example.invalid>' &
    local pid_vendor=$!
    _gpg_home_gen "$other" 'imgforge unrelated test key <other@example.invalid>' &
    local pid_other=$!
    wait "$pid_vendor" || die "gpg key generation (vendor) failed"
    wait "$pid_other" || die "gpg key generation (other) failed"

    GNUPGHOME=$vendor gpg --batch --quiet --no-tty --armor \
        --export 'vendor@example.invalid' >"$dir/keys/vendor.asc"
    GNUPGHOME=$other gpg --batch --quiet --no-tty --armor \
        --export 'other@example.invalid' >"$dir/keys/other.asc"
    rm -f -- "$dir/SHA256SUMS.gpg"
    GNUPGHOME=$vendor gpg --batch --quiet --no-tty --pinentry-mode loopback \
        --passphrase '' --local-user 'vendor@example.invalid' \
        --detach-sign --output "$dir/SHA256SUMS.gpg" "$dir/SHA256SUMS"
    [[ -s "$dir/keys/vendor.asc" && -s "$dir/keys/other.asc" && -s "$dir/SHA256SUMS.gpg" ]] ||
        die "exporting keys / signing failed"
    _gpg_home_kill "$vendor"
    _gpg_home_kill "$other"
}

# random_machine_id - 32 lowercase hex chars.
random_machine_id() {
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}
