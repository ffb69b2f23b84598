"""The reliability and security suite at CI counts (`bench/reliability.py` runs the full counts).

Every figure's "bad" count must be 0: requests accepted that should not be, files touched outside
the root, silent overwrites, wrong statuses, runs left RUNNING.
"""
from __future__ import annotations

import os

import pytest

import reliability_suite as suite

FAULT_REPEAT = int(os.environ.get("CD4ML_FAULT_REPEAT", "2"))


def assert_clean(figures):
    bad = [f.row() for f in figures if f.bad]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("area", sorted(suite.AREAS))
def test_area(area, tmp_path):
    assert_clean(suite.AREAS[area](tmp_path))


def test_faults_end_in_the_right_status(tmp_path):
    assert_clean(suite.check_faults(tmp_path, FAULT_REPEAT))


def test_parameter_values_property():
    assert_clean(suite.check_parameter_values(200))
