"""The replicate protocol and the stored re-run record (harness/tuning/replicates.py): which seed and
training subset replicate r uses, and per-example test correctness packed into `final` and read
back, with bad stored data read as absent rather than raising."""

from __future__ import annotations

import base64
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from harness.store.records import RerunRecord
from harness.tuning.replicates import decode_correct, encode_correct, make_record, replicate_overrides


def test_replicate_r_uses_seed_plus_r_and_subset_r():
    assert replicate_overrides(1, 0) == {"seed": 1, "data.subset": 1}
    assert replicate_overrides(3, 10) == {"seed": 13, "data.subset": 3}
    for bad in (0, -1, True, 1.0):
        with pytest.raises(ValueError):
            replicate_overrides(bad, 0)  # subset 0 and the tuning seed are tuning's own


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 250])
def test_correctness_round_trips_through_packed_bits(n):
    correct = np.random.default_rng(n).random(n) < 0.6
    text = encode_correct(correct)
    assert isinstance(text, str) and text.isascii()
    assert len(base64.b64decode(text)) == (n + 7) // 8  # a bit per example
    back = decode_correct(json.loads(json.dumps({"test_correct": text, "n_test": n})))
    assert back is not None and back.dtype == bool and np.array_equal(back, correct)


@pytest.mark.parametrize("record", [
    {},
    {"n_test": 9},
    {"test_correct": encode_correct(np.ones(9, bool))},
    {"test_correct": None, "n_test": 9},
    {"test_correct": encode_correct(np.ones(9, bool)), "n_test": 8},   # wrong length: too few bytes' worth
    {"test_correct": encode_correct(np.ones(9, bool)), "n_test": 17},  # too many
    {"test_correct": encode_correct(np.ones(16, bool)), "n_test": 15},  # a set padding bit
    {"test_correct": "not base64!", "n_test": 9},
    {"test_correct": "AQ", "n_test": 1},  # bad padding
    {"test_correct": "Ünïcode", "n_test": 9},
    {"test_correct": encode_correct(np.ones(9, bool)), "n_test": "9"},
    {"test_correct": encode_correct(np.ones(9, bool)), "n_test": -1},
    {"test_correct": encode_correct(np.ones(1, bool)), "n_test": True},
    {"test_correct": 12, "n_test": 9},
], ids=lambda r: json.dumps(r, ensure_ascii=True)[:60])
def test_bad_stored_correctness_reads_as_none(record):
    assert decode_correct(record) is None


def test_decode_of_something_that_is_not_a_record_is_none():
    assert decode_correct([1, 2]) is None and decode_correct(None) is None  # type: ignore[arg-type]


def test_the_record_of_one_rerun():
    correct = np.array([True, False, True, True, False])
    result = SimpleNamespace(val_acc=0.75, test_acc=float(correct.mean()), test_correct=correct,
                             test_split="0123456789abcdef",
                             compute=SimpleNamespace(total_flops=np.float64(2e9), wall_s=1.5))
    record = make_record(2, 12, result).to_json()
    assert json.loads(json.dumps(record)) == record  # JSON-safe, as Optuna stores it
    assert {k: v for k, v in record.items() if k != "test_correct"} == {
        "replicate": 2, "seed": 12, "subset": 2, "val_acc": 0.75, "test_acc": 0.6, "flops": 2e9, "wall_s": 1.5,
        "n_test": 5, "test_split": "0123456789abcdef", "probe_acc": None, "status": "ok", "reason": None}
    assert type(record["flops"]) is float
    assert make_record(2, 12, result, probe_acc=np.float32(0.5)).probe_acc == 0.5
    assert np.array_equal(decode_correct(record), correct)
    assert RerunRecord.of(record) == make_record(2, 12, result)  # the stored form reads back as written
    assert np.array_equal(RerunRecord.of(record).correct(), correct)


def test_a_stored_record_is_read_with_coercions_never_trusted():
    """What a reader gets from a malformed or older entry of `final`: None for what is missing or not
    a number, 0 for costs, `ok` for a record from before statuses; never an exception."""
    old = RerunRecord.of({"seed": 3, "test_acc": 0.5, "val_acc": "x", "flops": None, "test_correct": 7})
    assert (old.status, old.replicate, old.seed, old.test_acc, old.val_acc, old.flops) == ("ok", None, 3, 0.5, None, 0.0)
    assert old.correct() is None and old.counted and math.isnan(old.value("val_acc"))
    failed = RerunRecord.of({"status": "failed", "chance": 0.1, "test_acc": True})
    assert not failed.counted and failed.test_acc is None and failed.to_json()["chance"] == 0.1
    assert "chance" not in RerunRecord().to_json()  # written only where a failure set it
