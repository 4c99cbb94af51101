"""The sparse channel-wise tensor product equals e3nn's, and so do its first and second derivatives."""

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qallegro.nn.tensor_product import channelwise_paths, channelwise_tensor_product


def _inputs(irreps, seed, shape=(7, 4)):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    irreps = e3nn.Irreps(irreps)
    return (e3nn.IrrepsArray(irreps, jax.random.normal(k1, shape + (irreps.dim,), jnp.float64)),
            e3nn.IrrepsArray(irreps, jax.random.normal(k2, shape + (irreps.dim,), jnp.float64)))


@pytest.mark.parametrize("irreps, filter_ir_out", [
    ("0e+1o+2e", ["0e", "1o", "2e"]),                       # l_max 2, parity False (the default model)
    ("0e+1o+2e", ["0e"]),                                   # the last layer: scalars only
    ("0e+0o+1e+1o+2e+2o", ["0e", "0o", "1e", "1o", "2e", "2o"]),  # parity True
    ("0e+1o+2e+3o", ["0e", "1o", "2e", "3o"]),               # l_max 3
])
def test_equals_e3nn_with_derivatives(x64, irreps, filter_ir_out):
    x1, x2 = _inputs(irreps, 0)
    ours = channelwise_tensor_product(x1, x2, filter_ir_out)
    ref = e3nn.tensor_product(x1, x2, filter_ir_out=filter_ir_out)
    assert ours.irreps == ref.irreps
    np.testing.assert_allclose(ours.array, ref.array, atol=1e-12)
    irreps_out, table = channelwise_paths(str(x1.irreps), str(x1.irreps), tuple(filter_ir_out))
    assert sum(len(t) for t in table) < 0.2 * x1.irreps.dim ** 2 * irreps_out.dim  # sparse, as promised

    w = jax.random.normal(jax.random.PRNGKey(3), ref.array.shape, jnp.float64)

    def loss(f, a, b):  # a scalar whose second derivatives involve the VJP of the VJP
        out = f(e3nn.IrrepsArray(x1.irreps, a), e3nn.IrrepsArray(x2.irreps, b)).array
        return jnp.sum(w * out * out)

    ours_f = lambda a, b: channelwise_tensor_product(a, b, filter_ir_out)  # noqa: E731
    ref_f = lambda a, b: e3nn.tensor_product(a, b, filter_ir_out=filter_ir_out)  # noqa: E731
    for order in (1, 2):
        g_ours = jax.grad(loss, argnums=(1, 2)) if order == 1 else jax.grad(
            lambda f, a, b: jnp.sum(jax.grad(loss, argnums=1)(f, a, b) ** 2), argnums=(1, 2))
        for got, want in zip(g_ours(ours_f, x1.array, x2.array), g_ours(ref_f, x1.array, x2.array)):
            np.testing.assert_allclose(got, want, atol=1e-10)
