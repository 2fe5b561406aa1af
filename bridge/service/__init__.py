"""The running service: the daemon that wires the parts and orders start and stop, its worker thread,
sd_notify, logging, the status socket and the checks of files a config names."""
