"""Equivariant channel mixing of Allegro's tensor track, in the channels-last layout (..., components, C).

After the tensor product every channel holds several paths of each irrep (e.g. 4 paths giving 1o). The next
layer's tensor features are, per output irrep and per component m, a linear map of all (path, channel) pairs
with that irrep: V'[..., m, c'] = alpha * sum_{c, p} W[c * P + p, c'] x_p[..., m, c] (P paths). This is e3nn's `Linear`
applied to the paths as multiplicities (`e3nn.flax.Linear(C * irreps_out)` after `axis_to_mul`), with the same
parameter names, shapes, initialisation and normalisation (`e3nn.FunctionalLinear` supplies them), so models
and saved potentials are interchangeable; written with plain reshapes and matmuls on the channels-last array,
whose gradients XLA compiles without the per-irrep slicing and padding of the generic implementation.
"""

from __future__ import annotations

from typing import List

import e3nn_jax as e3nn
import flax.linen as nn
import jax.numpy as jnp


class TensorLinear(nn.Module):
    """(..., irreps_paths.dim, C) -> (..., produced_irreps(...).dim, C), mixing channels and paths of equal irrep.

    Attributes:
        irreps_paths: the irreps of one channel's paths, sorted and simplified (e.g. 3x0e+4x1o+4x2e).
        irreps_out: the irreps of one output channel, each once (e.g. 0e+1o+2e). As in e3nn's Linear, those no
            path produces are left out of the result (see `produced_irreps`).
        channels: C, the number of channels in and out.
    """

    irreps_paths: str
    irreps_out: str
    channels: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        paths, out, C = e3nn.Irreps(self.irreps_paths), e3nn.Irreps(self.irreps_out), self.channels
        if paths != paths.regroup():
            raise ValueError(f"irreps_paths must be sorted and simplified, got {paths}")
        if any(mul != 1 for mul, _ in out) or len(out) != len(out.simplify()):
            raise ValueError(f"irreps_out must hold each irrep once, got {out}")
        out = produced_irreps(paths, out)
        lin = e3nn.FunctionalLinear(e3nn.Irreps([(mul * C, ir) for mul, ir in paths]),
                                    e3nn.Irreps([(C * mul, ir) for mul, ir in out]).simplify())
        # Input blocks as (..., 2l+1, C * paths) with index c * paths + p: e3nn's `axis_to_mul` order.
        blocks: List[jnp.ndarray] = []
        for (mul, ir), sl in zip(paths, paths.slices()):
            block = x[..., sl, :].reshape(x.shape[:-2] + (mul, ir.dim, C))
            block = jnp.moveaxis(block, -3, -1)  # (..., 2l+1, C, paths)
            blocks.append(block.reshape(x.shape[:-2] + (ir.dim, C * mul)))
        outputs = [None] * len(lin.irreps_out)
        for ins in lin.instructions:
            name = f"w[{ins.i_in},{ins.i_out}] {lin.irreps_in[ins.i_in]},{lin.irreps_out[ins.i_out]}"
            w = self.param(name, nn.initializers.normal(stddev=ins.weight_std), ins.path_shape, x.dtype)
            term = ins.path_weight * (blocks[ins.i_in] @ w)  # (..., 2l+1, C)
            outputs[ins.i_out] = term if outputs[ins.i_out] is None else outputs[ins.i_out] + term
        # Output blocks in the order of irreps_out, each (..., 2l+1, C).
        by_irrep = {ir: k for k, (_, ir) in enumerate(lin.irreps_out)}
        return jnp.concatenate([outputs[by_irrep[ir]] for _, ir in out], axis=-2)


def produced_irreps(irreps_paths: e3nn.Irreps, irreps_out: e3nn.Irreps) -> e3nn.Irreps:
    """The irreps of `irreps_out` that some path of `irreps_paths` carries, in the order of `irreps_out`."""
    available = {ir for _, ir in e3nn.Irreps(irreps_paths)}
    return e3nn.Irreps([(mul, ir) for mul, ir in e3nn.Irreps(irreps_out) if ir in available])
