"""Typed errors survive a process boundary (DataLoader workers and Ray pickle them)."""

from __future__ import annotations

import pickle

from anycharv.errors import InputError


def test_input_error_pickles_with_its_fields():
    err = pickle.loads(pickle.dumps(InputError("shard-000001.tar", "member 'latents.npy' is truncated",
                                               code="corrupt_member")))
    assert type(err) is InputError
    assert (err.input_name, err.reason, err.code) == ("shard-000001.tar", "member 'latents.npy' is truncated",
                                                      "corrupt_member")
    assert str(err) == "shard-000001.tar: member 'latents.npy' is truncated"
