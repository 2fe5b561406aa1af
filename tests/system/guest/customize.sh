# Runs inside the fresh rootfs (mmdebstrap --customize-hook, chrooted), once per cached image.
# Everything project-specific lives on the run disk instead, so it is rebuilt every run.
set -eu
echo door-guest > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 door-guest\n' > /etc/hosts
cat > /etc/fstab <<'FSTAB'
/dev/vda  /                     ext4  rw,errors=remount-ro  0 1
# The state disk: persistent, write-through on the host (tests/system/qemu.py).
LABEL=dbstate  /var/lib/door-bridge  ext4  rw,nofail,x-systemd.device-timeout=60s  0 2
FSTAB
mkdir -p /var/lib/door-bridge /mnt/run
# The runner: mount the run disk and hand over to the scenario it carries (tests/system/guest/boot.sh).
cat > /usr/local/sbin/dbtest-boot <<'BOOT'
#!/bin/sh
set -eu
mount -o ro /dev/vdb /mnt/run
exec /bin/sh /mnt/run/src/tests/system/guest/boot.sh
BOOT
chmod 0755 /usr/local/sbin/dbtest-boot
cat > /etc/systemd/system/dbtest.service <<'UNIT'
[Unit]
Description=door-bridge system suite (scenario from the run disk)
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/dbtest-boot
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable dbtest.service
# Nothing periodic competes with the scenario under TCG; no login prompt on the console.
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
    systemd-tmpfiles-clean.timer serial-getty@ttyS0.service getty@tty1.service >/dev/null 2>&1 || true
# A clean, empty root password is never needed: the guest has no network and no login.
passwd -l root >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*
