"""Background jobs created on a timetable (``SCHEDULES_CONFIG_PATH``).

- :mod:`.timetable`: ``schedules.toml``, parsed and checked;
- :mod:`.scheduler`: the service that creates each job when it is due,
  claiming the slot in this process (:class:`LocalSlots`) or
- :mod:`.redis_slots`: in Redis, so one instance of many creates it.
"""
