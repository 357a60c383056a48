import numpy as np
import pytest

from modelgate.description import SignatureSpec, TensorSpec
from modelgate.errors import InputsError
from modelgate.numerics.inputs import InputsUnavailable, batch_of, load_npz, synthesize

SIGNATURE = SignatureSpec(
    key="serving_default", method_name="tensorflow/serving/predict",
    inputs={
        "image": TensorSpec(dtype="float32", shape=[None, 2, None]),
        "ids": TensorSpec(dtype="int64", shape=[None]),
        "mask": TensorSpec(dtype="bool", shape=[None, 3]),
    },
    outputs={"y": TensorSpec(dtype="float32", shape=[None])},
)


def test_synthesis_is_seeded_and_follows_the_specs():
    first = synthesize(SIGNATURE, batch_size=5, unknown_dim_size=7, seed=1)
    again = synthesize(SIGNATURE, batch_size=5, unknown_dim_size=7, seed=1)
    other = synthesize(SIGNATURE, batch_size=5, unknown_dim_size=7, seed=2)
    assert first["image"].shape == (5, 2, 7) and first["image"].dtype == np.float32
    assert first["ids"].shape == (5,) and first["ids"].dtype == np.int64
    assert first["mask"].dtype == np.bool_
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["image"], other["image"])
    assert first["image"].std() > 0.5  # spread, not squeezed into [0, 1)


def test_integers_default_to_zero_or_one_and_strings_are_seeded_words():
    first = synthesize(SIGNATURE, batch_size=64, unknown_dim_size=7, seed=1)
    assert set(np.unique(first["ids"])) == {0, 1}  # no table known: Polygraphy's [0, 1]
    signature = SIGNATURE.model_copy(update={"inputs": {"text": TensorSpec(dtype="string", shape=[None, 2])}})
    text = synthesize(signature, 3, 2, 0)["text"]
    assert text.shape == (3, 2) and text.dtype == object and all(isinstance(t, bytes) and t for t in text.ravel())
    assert text.tolist() == synthesize(signature, 3, 2, 0)["text"].tolist()


def test_dtypes_without_a_synthesis_say_so():
    signature = SIGNATURE.model_copy(update={"inputs": {"z": TensorSpec(dtype="complex64", shape=[None])}})
    with pytest.raises(InputsUnavailable, match="input 'z' has dtype complex64, which cannot be synthesized"):
        synthesize(signature, 2, 2, 0)


def test_npz_is_checked_against_the_signature(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, image=np.zeros((2, 2, 4), "float64"), ids=np.arange(2), mask=np.ones((2, 3), bool))
    feeds = load_npz(good, SIGNATURE)
    assert feeds["image"].dtype == np.float32
    missing = tmp_path / "missing.npz"
    np.savez(missing, image=np.zeros((2, 2, 4), "float32"))
    with pytest.raises(InputsError, match="lacks ids, mask"):
        load_npz(missing, SIGNATURE)
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, image=np.zeros((2, 3, 4), "float32"), ids=np.arange(2), mask=np.ones((2, 3), bool))
    with pytest.raises(InputsError, match="input 'image'.*shape"):
        load_npz(wrong_shape, SIGNATURE)
    with pytest.raises(InputsError, match="does not exist"):
        load_npz(tmp_path / "absent.npz", SIGNATURE)


def test_batch_of_repeats_rows_to_any_size():
    feeds = {"x": np.arange(3)}
    assert batch_of(feeds, 2)["x"].tolist() == [0, 1]
    assert batch_of(feeds, 7)["x"].tolist() == [0, 1, 2, 0, 1, 2, 0]
