# Shared by install.sh and uninstall.sh (sourced, not run): messages and the dry-run switch.
# The sourcing script sets DRY_RUN=0|1 and SCRIPT_NAME before calling these.
# shellcheck shell=bash

say() { printf '==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# Every change goes through run: printed always (shell-quoted, so it can be pasted), executed
# unless --dry-run.
run() {
    local arg line='+'
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
            line+=" $arg"
        else
            line+=" $(printf '%q' "$arg")"
        fi
    done
    printf '%s\n' "$line"
    if [[ $DRY_RUN -eq 0 ]]; then
        "$@"
    fi
}

# Changes need root; a dry run needs nothing.
require_root_unless_dry_run() {
    if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
        die "run as root (sudo $0), or with --dry-run to see what it would do"
    fi
    if [[ $DRY_RUN -eq 1 ]]; then
        say "dry run: nothing will be changed"
    fi
}
