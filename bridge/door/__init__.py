"""The door itself: the relay (a timed GPIO output), the door monitor (contact, exit button, LED, buzzer and
its alarms), door modes applied to the relay, and the pin factory chosen at start-up."""
