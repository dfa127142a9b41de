"""Pure tensor operators of fast weight programmers: no parameters, no modules.

Every operator takes ``[B, T, H, D]`` inputs, returns ``(output, state)``, and has a slow
reference mode (``"recurrent"``) beside its fast forms.
"""

from fwp.ops._dispatch import auto_modes
from fwp.ops.delta_mlp import delta_mlp
from fwp.ops.delta_product import delta_product
from fwp.ops.delta_rule import delta_rule
from fwp.ops.feature_maps import FEATURE_MAPS, dpfp, feature_dim, get_feature_map
from fwp.ops.gated_delta_rule import gated_delta_rule
from fwp.ops.linear_attention import linear_attention
from fwp.ops.mesa import mesa
from fwp.ops.srwm import srwm, srwm_rows

__all__ = [
    "FEATURE_MAPS",
    "auto_modes",
    "delta_mlp",
    "delta_product",
    "delta_rule",
    "dpfp",
    "feature_dim",
    "gated_delta_rule",
    "get_feature_map",
    "linear_attention",
    "mesa",
    "srwm",
    "srwm_rows",
]
