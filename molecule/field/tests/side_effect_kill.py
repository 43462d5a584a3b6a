"""Whatever kills Gunicorn's master, a new one serves within 5 seconds: molecule/default's test,
on the hosts deployed over SSH."""

from side_effect_restarts import serving, test_killed_master_is_replaced_within_5_seconds

__all__ = ["serving", "test_killed_master_is_replaced_within_5_seconds"]
