"""The channels-last tensor track equals e3nn's generic operations: the sparse channel-wise tensor product (with
its first and second derivatives, with and without path-channel coupling) and the channel mixing `TensorLinear`
(same parameters as e3nn's Linear)."""

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qallegro.nn.tensor_linear import TensorLinear, produced_irreps
from qallegro.nn.tensor_product import channelwise_path_labels, channelwise_paths, channelwise_tensor_product

C = 3


def _e3nn_product(a, b, irreps1, irreps2, filter_ir_out):
    """e3nn's tensor product channel by channel, on channels-last arrays (..., dim, C)."""
    out = e3nn.tensor_product(e3nn.IrrepsArray(irreps1, jnp.swapaxes(a, -1, -2)),
                              e3nn.IrrepsArray(irreps2, jnp.swapaxes(b, -1, -2)), filter_ir_out=filter_ir_out)
    return out.irreps, jnp.swapaxes(out.array, -1, -2)


def _e3nn_coupled_product(a, b, irreps1, irreps2, filter_ir_out, path_weights):
    """The path-channel coupled product built path by path from e3nn (nequip-allegro 0.8's Contracter with
    path_channel_coupling): e3nn's product of one irrep of each input, times path_weights[c, p], the paths in
    e3nn's output order (for each output irrep, for each ir1, for each ir2). Channels-last (..., dim, C)."""
    paths = []
    for (_, ir1), sl1 in zip(irreps1, irreps1.slices()):
        for (_, ir2), sl2 in zip(irreps2, irreps2.slices()):
            for ir_out in ir1 * ir2:
                if ir_out in [e3nn.Irrep(ir) for ir in filter_ir_out]:
                    _, out = _e3nn_product(a[..., sl1, :], b[..., sl2, :], e3nn.Irreps([(1, ir1)]),
                                           e3nn.Irreps([(1, ir2)]), [ir_out])
                    paths.append((ir_out, len(paths), (ir1, ir2), out))
    paths.sort(key=lambda path: path[:2])  # stable in the enumeration order within an output irrep
    labels = [(ir1, ir2, ir_out) for ir_out, _, (ir1, ir2), _ in paths]
    return labels, jnp.concatenate([out * path_weights[:, p] for p, (*_, out) in enumerate(paths)], axis=-2)


@pytest.mark.parametrize("irreps1, filter_ir_out, coupled", [
    ("0e+1o+2e", ["0e", "1o", "2e"], False),                      # l_max 2, parity False (the default model)
    ("0e+1o+2e", ["0e"], False),                                  # the last layer: scalars only
    ("0e+1o+1e+2e+2o", ["0e", "0o", "1e", "1o", "2e", "2o"], False),  # parity True, second layer
    ("0e+1o+1e+2e+2o", ["0e", "0o", "1e", "1o", "2e", "2o"], True),   # the same with path-channel weights
])
def test_tensor_product_equals_e3nn_with_derivatives(x64, irreps1, filter_ir_out, coupled):
    irreps1 = e3nn.Irreps(irreps1)
    irreps2 = e3nn.Irreps.spherical_harmonics(irreps1.lmax)
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    a = jax.random.normal(k1, (5, irreps1.dim, C), jnp.float64)
    b = jax.random.normal(k2, (5, irreps2.dim, C), jnp.float64)
    ref_irreps, ref = _e3nn_product(a, b, irreps1, irreps2, filter_ir_out)
    weights = None
    if coupled:  # every weight differs, so a wrong path order or channel/path transposition shows
        weights = jax.random.uniform(k4, (C, ref_irreps.num_irreps), jnp.float64, -np.sqrt(3), np.sqrt(3))
        labels, ref = _e3nn_coupled_product(a, b, irreps1, irreps2, filter_ir_out, weights)
        assert labels == list(channelwise_path_labels(str(irreps1), str(irreps2), tuple(filter_ir_out)))
    irreps_out, ours = channelwise_tensor_product(a, b, irreps1, irreps2, filter_ir_out, weights)
    assert irreps_out == ref_irreps
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    _, table = channelwise_paths(str(irreps1), str(irreps2), tuple(filter_ir_out))
    assert sum(len(t) for t in table) < 0.2 * irreps1.dim * irreps2.dim * irreps_out.dim  # sparse, as promised

    w = jax.random.normal(k3, ref.shape, jnp.float64)
    ours_f = lambda a, b: channelwise_tensor_product(a, b, irreps1, irreps2, filter_ir_out, weights)[1]  # noqa: E731
    ref_f = ((lambda a, b: _e3nn_coupled_product(a, b, irreps1, irreps2, filter_ir_out, weights)[1]) if coupled
             else (lambda a, b: _e3nn_product(a, b, irreps1, irreps2, filter_ir_out)[1]))
    loss = lambda f, a, b: jnp.sum(w * f(a, b) ** 2)  # noqa: E731
    first = jax.grad(loss, argnums=(1, 2))
    second = jax.grad(lambda f, a, b: jnp.sum(jax.grad(loss, argnums=1)(f, a, b) ** 2), argnums=(1, 2))
    # The second derivative (training on forces) differentiates the hand-written VJP; once is enough (slow).
    for derivative in (first, second) if len(filter_ir_out) == 3 and irreps1.lmax == 2 else (first,):
        for got, want in zip(derivative(ours_f, a, b), derivative(ref_f, a, b)):
            np.testing.assert_allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("paths, out", [("3x0e+4x1o+4x2e", "0e+1o+2e"),
                                        ("3x0e+4x1o+2x1e+4x2e+2x2o", "0e+0o+1e+1o+2e+2o")])
def test_tensor_linear_equals_e3nn_linear_with_the_same_parameters(x64, paths, out):
    paths, out = e3nn.Irreps(paths), e3nn.Irreps(out)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, paths.dim, C), jnp.float64)
    ours = TensorLinear(str(paths), str(out), C)
    params = ours.init(jax.random.PRNGKey(1), x)
    reference = e3nn.flax.Linear(C * out)
    x_e3nn = e3nn.IrrepsArray(paths, jnp.swapaxes(x, 1, 2)).axis_to_mul()  # (5, C * paths.dim)
    ref_params = reference.init(jax.random.PRNGKey(1), x_e3nn)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref_params)  # saved models stay valid
    y = ours.apply(params, x)
    y_ref = reference.apply(params, x_e3nn).mul_to_axis(C)
    assert y_ref.irreps == produced_irreps(paths, out)  # no path gives 0o in the parity case: both drop it
    np.testing.assert_allclose(y, jnp.swapaxes(y_ref.array, 1, 2), atol=1e-12)


def test_first_use_inside_jit():
    """The coefficient table is built eagerly even when the first call is traced (a loaded potential's first
    force call), not from tracers."""
    irreps = e3nn.Irreps("0e+1o+2e")
    a = jnp.ones((2, irreps.dim, C))
    channelwise_paths.cache_clear()
    out = jax.jit(lambda a, b: channelwise_tensor_product(a, b, irreps, irreps, ["0e", "1o", "2e"])[1])(a, a)
    np.testing.assert_allclose(out, channelwise_tensor_product(a, a, irreps, irreps, ["0e", "1o", "2e"])[1])
