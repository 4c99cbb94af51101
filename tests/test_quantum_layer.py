"""The flax QDI module: parameters, shapes, agreement with the functional API, transformations."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qallegro.quantum import QDI, QDIConfig, qdi_expectations, qdi_output_size
from qallegro.quantum.config import QDI_FIELDS, qdi_default
from qallegro.quantum.shots import sample_expectations


def test_init_shapes_and_range():
    layer = QDI(n_qubits=3, depth=2, in_features=6, entangling="strong", method="fused")
    x = jnp.ones((5, 6))
    params = layer.init(jax.random.PRNGKey(0), x)
    w = params["params"]["weights"]
    assert w.shape == (2, 2, 3, 3) and w.dtype == jnp.float32
    assert float(w.min()) >= 0.0 and float(w.max()) < 2 * math.pi
    basic = QDI(n_qubits=3, depth=2, entangling="basic", method="fused")
    assert basic.init(jax.random.PRNGKey(0), jnp.ones((1, 3)))["params"]["weights"].shape == (1, 2, 3)


def test_apply_matches_functional_and_shapes():
    layer = QDI(n_qubits=4, depth=2, measurement_mode="even", method="fused")
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 3, 4), minval=-3, maxval=3)
    params = layer.init(jax.random.PRNGKey(0), x)
    out = layer.apply(params, x)
    assert out.shape == (2, 3, qdi_output_size(4, "even")) == (2, 3, layer.n_outputs)
    cfg = QDIConfig(n_qubits=4, depth=2, measurement_mode="even")
    np.testing.assert_allclose(np.asarray(out),
                               np.asarray(qdi_expectations(cfg, x, params["params"]["weights"])),
                               atol=1e-6)
    # in a bigger model, under jit, with gradients w.r.t. parameters and inputs
    class Head(nn.Module):
        @nn.compact
        def __call__(self, h):
            angles = math.pi * jnp.tanh(nn.Dense(4)(h))
            return nn.Dense(1)(QDI(n_qubits=4, depth=2, measurement_mode="even", method="fused")(angles))

    head = Head()
    h = jnp.ones((7, 5))
    p = head.init(jax.random.PRNGKey(2), h)
    loss = jax.jit(jax.value_and_grad(lambda pp, hh: jnp.sum(head.apply(pp, hh) ** 2), argnums=(0, 1)))
    val, (gp, gh) = loss(p, h)
    assert np.isfinite(float(val)) and gh.shape == h.shape
    assert np.all(np.isfinite(np.asarray(jax.tree_util.tree_leaves(gp)[0])))


def test_shots_mode_needs_rng_and_is_seeded():
    layer = QDI(n_qubits=2, depth=1, shots=32, method="fused")
    x = jnp.zeros((3, 2))
    params = layer.init({"params": jax.random.PRNGKey(0), "shots": jax.random.PRNGKey(1)}, x)
    a = layer.apply(params, x, rngs={"shots": jax.random.PRNGKey(5)})
    np.testing.assert_array_equal(
        np.asarray(a), np.asarray(layer.apply(params, x, rngs={"shots": jax.random.PRNGKey(5)})))
    # an explicit key is used as is
    b = layer.apply(params, x, rng=jax.random.PRNGKey(5))
    cfg = layer.config(2)
    want = sample_expectations(cfg, x, params["params"]["weights"], 32, jax.random.PRNGKey(5),
                               method="fused")
    np.testing.assert_array_equal(np.asarray(b), np.asarray(want))
    np.testing.assert_allclose(np.asarray(a) * 16, np.round(np.asarray(a) * 16), atol=1e-4)
    with pytest.raises(Exception, match="shots"):
        layer.apply(params, x)  # no PRNG key for the shots


def test_wrong_input_width_raises():
    layer = QDI(n_qubits=3, in_features=6)
    with pytest.raises(ValueError, match="in_features=6"):
        layer.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="not a multiple of n_qubits"):
        QDI(n_qubits=3).init(jax.random.PRNGKey(0), jnp.ones((2, 4)))


def test_hyperparameters_are_declared_once():
    # the layer and the allegro-qdi model expose QDIConfig's hyperparameters with QDIConfig's defaults
    from qallegro.nn.variants import AllegroQDI

    layer_fields = {f.name: f.default for f in dataclasses.fields(QDI)}
    model_fields = {f.name: f.default for f in dataclasses.fields(AllegroQDI)}
    model_key = {"depth": "qdi_depth"}  # the model-config key of the circuit's depth
    for name in QDI_FIELDS:
        assert layer_fields[name] == qdi_default(name), name
        assert model_fields[model_key.get(name, name)] == qdi_default(name), name
    assert layer_fields["shots"] is model_fields["shots"] is None
    cfg = QDIConfig(n_qubits=3, depth=2, in_features=6, rotation="x", measure="z", measurement_mode="even")
    assert QDI.from_config(cfg).config() == cfg
    model = AllegroQDI(num_species=1, n_qubits=3, qdi_depth=2, in_features=6, rotation="x", measure="z",
                       measurement_mode="even")
    assert model.qdi_config() == cfg
    assert AllegroQDI(num_species=1).qdi_config() == QDIConfig()  # in_features None: one chunk
    with pytest.raises(KeyError, match="not a QDI hyperparameter"):
        qdi_default("qdi_depth")
