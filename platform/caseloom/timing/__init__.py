"""Time: business schedules, SLAs and timers."""
