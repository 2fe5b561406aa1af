#!/usr/bin/env bash
# Install or upgrade door-bridge as a systemd service on Raspberry Pi OS or plain Debian 12 (bookworm).
#
#   sudo systemd/install.sh             install from this checkout, or upgrade to it
#   systemd/install.sh --dry-run        print every change it would make; changes nothing
#   sudo systemd/install.sh --no-start  install and enable, but do not (re)start (image builds)
#
# Idempotent: run it again after `git pull` to upgrade. It never overwrites
# /etc/door-bridge/config.toml or /etc/door-bridge/api-key, and never touches /var/lib/door-bridge
# (grant cache, audit outbox). See docs/operations.md.
set -euo pipefail

readonly SERVICE=door-bridge
readonly SERVICE_USER=door-bridge
readonly DEVICE_GROUPS=(gpio input dialout plugdev)
readonly PREFIX=/opt/door-bridge
readonly VENV=$PREFIX/venv
readonly CONF_DIR=/etc/door-bridge
readonly UNIT_DEST=/etc/systemd/system/$SERVICE.service
readonly UDEV_DEST=/etc/udev/rules.d/99-door-bridge.rules
readonly MODPROBE_DEST=/etc/modprobe.d/door-bridge-nfc.conf
APT_PACKAGES=(python3-venv libusb-1.0-0)
# lgpio (gpiozero's bookworm pin factory): Raspberry Pi OS packages it as python3-lgpio; plain Debian
# does not, so there the venv gets it from PyPI (cp311 wheels for x86_64 and aarch64).
PIP_EXTRAS=()

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
SRC=$(dirname -- "$HERE")
readonly HERE SRC SCRIPT_NAME=install.sh
# shellcheck source=script-helpers.sh source-path=SCRIPTDIR
. "$HERE/script-helpers.sh"

DRY_RUN=0
START=1

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

for arg in "$@"; do
    case $arg in
        --dry-run) DRY_RUN=1 ;;
        --no-start) START=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "$SCRIPT_NAME: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

# --- preconditions ------------------------------------------------------------------------------
[[ -f $SRC/pyproject.toml ]] || die "$SRC does not look like a door-bridge checkout (no pyproject.toml)"
for file in systemd/door-bridge.service hardware/udev/99-door-bridge.rules systemd/door-bridge-nfc-blacklist.conf config.example.toml; do
    [[ -f $SRC/$file ]] || die "missing $SRC/$file; is the checkout complete?"
done
require_root_unless_dry_run
command -v systemctl >/dev/null || die "systemctl not found: door-bridge runs as a systemd service"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "python3 >= 3.11 is required (Raspberry Pi OS bookworm has 3.11)"

say "installing door-bridge from $SRC"

# --- OS packages: venv support, lgpio (gpiozero's bookworm pin factory), libusb for nfcpy ---------
if command -v dpkg-query >/dev/null && command -v apt-get >/dev/null; then
    if apt-cache show python3-lgpio >/dev/null 2>&1; then
        APT_PACKAGES+=(python3-lgpio)
    else
        say "python3-lgpio is not in this system's apt archive (plain Debian): lgpio comes from PyPI"
        PIP_EXTRAS+=(lgpio)
    fi
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        run apt-get install -y --no-install-recommends "${missing[@]}"
    fi
else
    say "not a Debian system: make sure python3-venv and libusb-1.0 are installed; lgpio comes from PyPI"
    PIP_EXTRAS+=(lgpio)
fi

# --- groups and the service user -------------------------------------------------------------------
for group in "${DEVICE_GROUPS[@]}" "$SERVICE_USER"; do
    getent group "$group" >/dev/null || run groupadd --system "$group"
done
device_groups_csv=$(IFS=,; echo "${DEVICE_GROUPS[*]}")
if id -u "$SERVICE_USER" >/dev/null 2>&1; then
    run usermod --append --groups "$device_groups_csv" "$SERVICE_USER"
else
    run useradd --system --gid "$SERVICE_USER" --groups "$device_groups_csv" \
        --home-dir /var/lib/door-bridge --no-create-home --shell /usr/sbin/nologin \
        --comment "door-bridge door controller" "$SERVICE_USER"
fi

# --- the program: a venv under /opt, the project pip-installed from this checkout ------------------
# --system-site-packages so the distribution's lgpio (python3-lgpio) is importable: it has no wheel
# for every Pi. A local directory is always rebuilt and reinstalled by pip, so this upgrades too.
# The distribution's python3-evdev (1.6.1 on bookworm) satisfies pyproject's floor and stays in use.
if [[ ! -x $VENV/bin/python ]]; then
    run install -d -m 0755 "$PREFIX"
    run python3 -m venv --system-site-packages "$VENV"
fi
run "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --upgrade "$SRC" "${PIP_EXTRAS[@]}"
run install -d -m 0755 "$PREFIX/share/doc"
if [[ -f $SRC/docs/operations.md ]]; then
    run install -m 0644 "$SRC/docs/operations.md" "$PREFIX/share/doc/operations.md"
fi

# --- configuration: created once, never overwritten --------------------------------------------------
run install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
if [[ -e $CONF_DIR/config.toml ]]; then
    say "keeping existing $CONF_DIR/config.toml"
else
    run install -m 0640 -o root -g "$SERVICE_USER" "$SRC/config.example.toml" "$CONF_DIR/config.toml"
fi
# LoadCredential= fails the start (243/CREDENTIALS) if the file is missing, so create it empty;
# root-only: systemd reads it and hands a copy to the service.
if [[ -e $CONF_DIR/api-key ]]; then
    say "keeping existing $CONF_DIR/api-key"
else
    run install -m 0600 -o root -g root /dev/null "$CONF_DIR/api-key"
    say "put the central API key in $CONF_DIR/api-key (one line, root:root 0600)"
fi

# --- udev rules and the NFC driver blacklist ------------------------------------------------------------
run install -m 0644 "$SRC/hardware/udev/99-door-bridge.rules" "$UDEV_DEST"
run install -m 0644 "$SRC/systemd/door-bridge-nfc-blacklist.conf" "$MODPROBE_DEST"
if command -v udevadm >/dev/null; then
    run udevadm control --reload
    run udevadm trigger --action=change --subsystem-match=gpio --subsystem-match=tty \
        --subsystem-match=input --subsystem-match=usb
fi

# --- the unit -----------------------------------------------------------------------------------------
run install -m 0644 "$SRC/systemd/door-bridge.service" "$UNIT_DEST"
run systemctl daemon-reload
run systemctl enable "$SERVICE.service"

if [[ $START -eq 0 ]]; then
    say "installed and enabled; not started (--no-start)"
    exit 0
fi

# A bad configuration must not replace a running, working daemon: check first, as the service user,
# with the unit's credentials staged as systemd hands them over (LoadCredential=NAME:PATH →
# $CREDENTIALS_DIRECTORY/NAME), so the API keys are checked exactly as `run` will read them.
if [[ -x $VENV/bin/door-bridge ]] || [[ $DRY_RUN -eq 1 ]]; then
    cred_dir=/run/door-bridge-check-config
    run install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$cred_dir"
    while IFS=: read -r cred_name cred_path; do
        [[ -n $cred_name && -r $cred_path ]] || continue
        run install -m 0400 -o "$SERVICE_USER" -g "$SERVICE_USER" "$cred_path" "$cred_dir/$cred_name"
    done < <(sed -n 's/^LoadCredential=//p' "$SRC/systemd/door-bridge.service")
    checked=0
    run runuser -u "$SERVICE_USER" -- env CREDENTIALS_DIRECTORY="$cred_dir" \
        "$VENV/bin/door-bridge" check-config --config "$CONF_DIR/config.toml" || checked=$?
    run rm -rf "$cred_dir"
    if [[ $checked -ne 0 ]]; then
        die "$CONF_DIR/config.toml or a file it names has errors (above); fix them, then: systemctl restart $SERVICE"
    fi
fi
# restart, not `enable --now`: an upgrade must replace the running old code.
run systemctl restart "$SERVICE.service"
say "done: systemctl status $SERVICE; journalctl -u $SERVICE -f; $VENV/bin/door-bridge status"
