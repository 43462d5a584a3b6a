"""Secrets rotated and restored over SSH at -vvv --diff never show, reach the service exactly, and
SECRET_KEY is kept: molecule/default's tests of those runs. (Its legacy-.env test, one more
converge, stays with molecule/default: nothing about it depends on the connection.)"""

from side_effect_secrets import (
    runs,
    test_no_secret_in_verbose_output_or_diff,
    test_secret_key_is_generated_once_and_kept,
    test_secrets_reach_the_service_exactly,
)

__all__ = [
    "runs",
    "test_no_secret_in_verbose_output_or_diff",
    "test_secret_key_is_generated_once_and_kept",
    "test_secrets_reach_the_service_exactly",
]
