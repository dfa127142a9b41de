"""``nn.Module`` layers that own parameters and projections around the operators of ``fwp.ops``.

Every layer maps ``x [B, T, d_model]`` and an optional state to ``(y [B, T, d_model], state)``,
and is registered by name in :data:`LAYERS`, so a model is a list of names (:class:`LayerStack`).
"""

from fwp.layers.baselines import LSTM, SoftmaxAttention
from fwp.layers.block import Block, FeedForward, LayerStack
from fwp.layers.continuous import (
    ContinuousDelta,
    ContinuousFWP,
    ContinuousHebb,
    ContinuousOja,
    NeuralCDE,
)
from fwp.layers.deeper import DeltaMLP, Mesa
from fwp.layers.fast_weights import SRWM, DeltaNet, LinearAttention
from fwp.layers.recurrent import (
    DeltaDelta,
    DeltaLSTM,
    DeltaProduct,
    DeltaRNN,
    GatedDeltaNet,
    RecurrentDeltaNet,
    SRDelta,
)
from fwp.layers.registry import (
    LAYERS,
    build_layer,
    check_layer_options,
    layer_option_names,
    register_layer,
)
from fwp.layers.state import clone_state, detach_state, map_state, repeat_state

__all__ = [
    "LAYERS",
    "LSTM",
    "SRWM",
    "Block",
    "ContinuousDelta",
    "ContinuousFWP",
    "ContinuousHebb",
    "ContinuousOja",
    "DeltaDelta",
    "DeltaLSTM",
    "DeltaMLP",
    "DeltaNet",
    "DeltaProduct",
    "DeltaRNN",
    "FeedForward",
    "GatedDeltaNet",
    "LayerStack",
    "LinearAttention",
    "Mesa",
    "NeuralCDE",
    "RecurrentDeltaNet",
    "SRDelta",
    "SoftmaxAttention",
    "build_layer",
    "check_layer_options",
    "clone_state",
    "detach_state",
    "layer_option_names",
    "map_state",
    "register_layer",
    "repeat_state",
]
