#!/bin/sh
# door-sim.service, before door-bridge.service: 32 gpio-sim lines stand in for the Pi's header, and
# the kernel's gpio tracepoints record every value any program drives on them from now on.
set -eu
T=/sys/kernel/tracing
[ -e $T/trace ] || mount -t tracefs nodev $T
echo 8192 > $T/buffer_size_kb
echo 1 > $T/events/gpio/gpio_value/enable
echo 1 > $T/events/gpio/gpio_direction/enable
modprobe gpio-sim
[ -d /sys/kernel/config/gpio-sim ] || mount -t configfs none /sys/kernel/config
d=/sys/kernel/config/gpio-sim/door
if [ ! -d $d ]; then
    mkdir $d $d/bank0
    echo 32 > $d/bank0/num_lines
    echo door-sim > $d/bank0/label
    echo 1 > $d/live
fi
mkdir -p /run/door-sim
cat $d/bank0/chip_name > /run/door-sim/chip
cat $d/dev_name > /run/door-sim/dev
udevadm settle
