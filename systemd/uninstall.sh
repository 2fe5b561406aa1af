#!/usr/bin/env bash
# Remove the door-bridge service: unit, udev rules, NFC blacklist, the venv under /opt/door-bridge.
#
#   sudo systemd/uninstall.sh            keep /etc/door-bridge (config, API key) and
#                                        /var/lib/door-bridge (grant cache, unreplicated audit events)
#   sudo systemd/uninstall.sh --purge    also delete those and the door-bridge user and group
#   systemd/uninstall.sh --dry-run       print every change it would make; changes nothing
#
# Without --purge a later install.sh picks up where this one left off, including audit events that
# had not reached the central API yet.
set -euo pipefail

readonly SERVICE=door-bridge
readonly SERVICE_USER=door-bridge
readonly PREFIX=/opt/door-bridge
readonly CONF_DIR=/etc/door-bridge
readonly STATE_DIR=/var/lib/door-bridge
readonly UNIT_DEST=/etc/systemd/system/$SERVICE.service
readonly DROPIN_DIR=/etc/systemd/system/$SERVICE.service.d
readonly UDEV_DEST=/etc/udev/rules.d/99-door-bridge.rules
readonly MODPROBE_DEST=/etc/modprobe.d/door-bridge-nfc.conf
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
readonly HERE SCRIPT_NAME=uninstall.sh
# shellcheck source=script-helpers.sh source-path=SCRIPTDIR
. "$HERE/script-helpers.sh"

DRY_RUN=0
PURGE=0

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

for arg in "$@"; do
    case $arg in
        --dry-run) DRY_RUN=1 ;;
        --purge) PURGE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "$SCRIPT_NAME: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

remove() {
    local path
    for path in "$@"; do
        if [[ -e $path || -L $path ]]; then
            run rm -rf -- "$path"
        fi
    done
}

require_root_unless_dry_run

if command -v systemctl >/dev/null && [[ -e $UNIT_DEST ]]; then
    # The daemon leaves the relay de-energised on SIGTERM (TimeoutStopSec=10).
    run systemctl disable --now "$SERVICE.service"
fi
remove "$UNIT_DEST" "$DROPIN_DIR"
if command -v systemctl >/dev/null; then
    run systemctl daemon-reload
    run systemctl reset-failed "$SERVICE.service" || true
fi

remove "$UDEV_DEST" "$MODPROBE_DEST"
if command -v udevadm >/dev/null; then
    run udevadm control --reload
fi

remove "$PREFIX"

if [[ $PURGE -eq 1 ]]; then
    say "purging configuration, state (grant cache, audit outbox) and the service user"
    remove "$CONF_DIR" "$STATE_DIR"
    if id -u "$SERVICE_USER" >/dev/null 2>&1; then
        run userdel "$SERVICE_USER"
    fi
    if getent group "$SERVICE_USER" >/dev/null; then
        run groupdel "$SERVICE_USER"
    fi
else
    for kept in "$CONF_DIR" "$STATE_DIR"; do
        if [[ -e $kept ]]; then
            say "kept $kept (use --purge to delete it)"
        fi
    done
fi
say "door-bridge removed"
