#!/bin/sh
# In the guest, run by dbtest.service after multi-user.target (systemd is PID 1): run the scenario
# named on the kernel command line (dbtest.scenario=NAME), then power off. Results go to ttyS1.
set -u
SRC=/mnt/run/src
scenario=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^dbtest\.scenario=//p')
python3 "$SRC/tests/system/guest/scenario.py" "${scenario:-smoke}"
echo "scenario $scenario ended with $?" > /dev/console
systemctl poweroff --no-block
