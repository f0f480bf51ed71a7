"""The one owner of the variables layout: keys, expected shapes, the fit check, initialisers.

Flax linen's layout, keyed by absolute layer index (`layer_key`)::

    {"params": {"layer_7": {"conv": {"kernel": (kh, kw, in/groups, out)},
                            "bn": {"scale": (out,), "bias": (out,)}}},
     "batch_stats": {"layer_7": {"bn": {"mean": (out,), "var": (out,)}}}}

A conv without BatchNorm has ``conv.bias`` instead of ``bn``; a ``[connected]`` has
``dense.kernel`` ``(C·H·W, output)`` and ``dense.bias`` or ``bn``. Each kind's
``variables`` rule (`ir.kinds`) gives the shapes. Frontends, passes, the runtime and the
testing kit all take the layout from here (and `Variables`, the type of every variables
argument). The checks read only ``.shape``, so they hold for numpy and jax arrays alike;
the initialisers import numpy when called, so ``import ir`` stays light.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

from ir.kinds import spec_of
from ir.layers import Graph, layer_inputs
from ir.shapes import input_shape, verify

if TYPE_CHECKING:
    import numpy as np

Variables = Mapping[str, Any]
"""The variables pytree ``{collection: {layer_key(i): {part: {name: array}}}}``: the one type
of every ``variables`` argument (read-only: passes return new dicts, never edit one)."""

Leaf = tuple[str, str, str]  # (collection, part, name) of one conv layer's variable

KERNEL: Leaf = ("params", "conv", "kernel")
CONV_BIAS: Leaf = ("params", "conv", "bias")
GAMMA: Leaf = ("params", "bn", "scale")
BETA: Leaf = ("params", "bn", "bias")
MEAN: Leaf = ("batch_stats", "bn", "mean")
VAR: Leaf = ("batch_stats", "bn", "var")

_PREFIX = "layer_"


def layer_key(index: int) -> str:
    """The variables key of layer ``index``: ``layer_7``."""
    return f"{_PREFIX}{index}"


def layer_index(key: str) -> int | None:
    """The layer index a key names (``layer_7`` -> 7), None for any other string."""
    if key.startswith(_PREFIX) and key[len(_PREFIX):].isdigit():
        return int(key[len(_PREFIX):])
    return None


def where(graph: Graph, index: int) -> str:
    """``layer 7 ([convolutional] at yolov3.cfg:61)``: how errors point at a layer."""
    layer = graph.layers[index]
    path = layer.path if layer.path != "<text>" else graph.path
    return f"layer {index} ([{layer.kind}] at {path}:{layer.line})"


def conv_in_channels(graph: Graph) -> dict[int, int]:
    """Input channels of every conv, by layer index (a conv reads the layer before it)."""
    shapes = verify(graph)
    return {i: (shapes[i - 1].c if i else graph.channels) for i in graph.conv_indices()}


def layer_shapes(graph: Graph) -> dict[int, dict[Leaf, tuple[int, ...]]]:
    """Per layer with variables, the shape of each of them, keyed by `Leaf` (each
    kind's ``variables`` rule, `ir.kinds`)."""
    shapes = verify(graph)
    image = input_shape(graph)
    out: dict[int, dict[Leaf, tuple[int, ...]]] = {}
    for i, layer in enumerate(graph.layers):
        ins = tuple(shapes[j] if j >= 0 else image for j in layer_inputs(graph, i))
        tree = spec_of(layer).variables(layer, ins)
        leaves = {(collection, part, name): tuple(shape)
                  for collection, parts in tree.items() for part, names in parts.items()
                  for name, shape in names.items()}
        if leaves:
            out[i] = leaves
    return out


def expected_shapes(graph: Graph) -> dict[str, Any]:
    """The shape of every variable, as a pytree shaped like the variables themselves.

    ``jax.tree.map(np.shape, variables) == expected_shapes(graph)`` holds for variables
    that fit the graph (tuples are the leaves here).

    >>> import ir
    >>> g = ir.parse_cfg("[net]\\nchannels=3\\n[convolutional]\\nfilters=4\\nsize=3\\n")
    >>> expected_shapes(g)["params"]["layer_0"]["conv"]["kernel"]
    (3, 3, 3, 4)
    """
    tree: dict[str, dict[str, Any]] = {"params": {}, "batch_stats": {}}
    for i, leaves in layer_shapes(graph).items():
        for (collection, part, name), shape in leaves.items():
            layer = tree[collection].setdefault(layer_key(i), {})
            layer.setdefault(part, {})[name] = shape
    return tree


def iter_leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
                ) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, leaf)`` for every leaf of a nested mapping, in insertion order."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from iter_leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def flat_shapes(graph: Graph) -> dict[tuple[str, ...], tuple[int, ...]]:
    """`expected_shapes` flattened: ``{("params", "layer_0", "conv", "kernel"): shape}``."""
    return dict(iter_leaves(expected_shapes(graph)))


class Misfit(NamedTuple):
    """One variable that does not fit: its path, its layer (or None) and what is wrong."""

    path: tuple[str, ...]
    index: int | None  # type: ignore[assignment]  # a NamedTuple field named like a tuple method
    problem: str


def _shape_of(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def misfits(graph: Graph, variables: Any) -> tuple[Misfit, ...]:
    """Every variable missing, unexpected or misshapen for ``graph``, in layer order.

    An empty tuple means the variables fit. The structure itself (a mapping with
    ``params`` and ``batch_stats``) is one misfit with an empty path when wrong.
    """
    if (not isinstance(variables, Mapping)
            or not set(variables) <= {"params", "batch_stats"}):
        keys = (sorted(variables) if isinstance(variables, Mapping)
                else type(variables).__name__)
        return (Misfit((), None, "expected a variables dict with 'params' and "
                                 f"'batch_stats', found {keys}"),)
    expected = flat_shapes(graph)
    found = dict(iter_leaves(variables))
    problems: list[Misfit] = []
    for path, shape in expected.items():
        if path not in found:
            problems.append(Misfit(path, layer_index(path[1]),
                                   f"missing, expected shape {shape}"))
        elif _shape_of(found[path]) != shape:
            what = _shape_of(found[path])
            problems.append(Misfit(path, layer_index(path[1]),
                                   f"expected shape {shape}, found "
                                   f"{what if what is not None else type(found[path]).__name__}"))
    for path, value in found.items():
        if path not in expected:
            problems.append(Misfit(path, layer_index(path[1]) if len(path) > 1 else None,
                                   f"unexpected (shape {_shape_of(value)}): the cfg has no "
                                   "such variable"))
    return tuple(sorted(problems, key=lambda m: (m.index is None, m.index or 0)))


def describe_misfits(graph: Graph, source: str, problems: tuple[Misfit, ...],
                     limit: int = 5) -> str:
    """A message listing the first ``limit`` misfits, each naming its layer."""
    if len(problems) == 1 and not problems[0].path:
        return f"{source}: {problems[0].problem}"
    lines = []
    for m in problems[:limit]:
        at = (f" ({where(graph, m.index)})" if m.index is not None
              and m.index < len(graph.layers) else "")
        lines.append(f"  {'/'.join(m.path)}{at}: {m.problem}")
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return (f"{source}: {len(problems)} variable(s) do not fit {graph.path}:\n"
            + "\n".join(lines) + more)


def check_variables(graph: Graph, variables: Any, source: str,
                    error: type[ValueError] = ValueError) -> None:
    """Raise ``error`` listing the first few variables missing, unexpected or misshapen.

    Args:
        source: what the variables are (the file they came from, the pass that made
            them), for the message.
        error: the caller's domain error (`WeightsError`, `PruneError`, ...).
    """
    problems = misfits(graph, variables)
    if problems:
        raise error(describe_misfits(graph, source, problems))


# ---------------------------------------------------------------------- initialisers

Initialiser = Callable[..., dict[str, Any]]


def _kernel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Darknet's rule (`make_convolutional_layer`): uniform in ±sqrt(2 / fan_in)."""
    import numpy as np

    fan_in = shape[0] * shape[1] * shape[2] if len(shape) == 4 else shape[0]
    limit = np.float32(np.sqrt(2.0 / fan_in))
    return (rng.random(shape, dtype=np.float32) * 2 - 1) * limit


_Fill = Callable[["np.random.Generator", Leaf, tuple[int, ...]], "np.ndarray"]


def _init(graph: Graph, seed: int, layers: Collection[int] | None, fill: _Fill
          ) -> dict[str, Any]:
    import numpy as np

    tree: dict[str, dict[str, Any]] = {"params": {}, "batch_stats": {}}
    for i, leaves in layer_shapes(graph).items():
        if layers is not None and i not in layers:
            continue
        rng = np.random.default_rng([seed, i])  # per layer: independent of the others
        for leaf, shape in leaves.items():
            collection, part, name = leaf
            value = _kernel(rng, shape) if name == "kernel" else fill(rng, leaf, shape)
            tree[collection].setdefault(layer_key(i), {}).setdefault(part, {})[name] = value
    return tree


def init_darknet(graph: Graph, seed: int = 0, layers: Collection[int] | None = None
                 ) -> dict[str, Any]:
    """Darknet's initial values: kernels uniform in ±sqrt(2 / fan_in), γ = 1, β = 0,
    running mean 0 and variance 1, conv biases 0 (numpy float32).

    All γ equal means nothing to rank: a prune of these variables is refused. Use
    ``"sparse"`` to try a prune without trained weights.
    """
    import numpy as np

    def fill(rng: np.random.Generator, leaf: Leaf, shape: tuple[int, ...]) -> np.ndarray:
        return (np.ones if leaf in (GAMMA, VAR) else np.zeros)(shape, np.float32)

    return _init(graph, seed, layers, fill)


def init_sparse(graph: Graph, seed: int = 0, layers: Collection[int] | None = None
                ) -> dict[str, Any]:
    """Values that look sparse-trained, for trying prunes: Darknet kernels; |γ| spread
    log-uniformly over [1e-4, 1] (about a third below 0.01, one in five negative);
    β ~ N(0, 0.1); running mean ~ N(0, 0.1), variance in [0.5, 1.5]; conv biases 0.
    """
    import numpy as np

    def fill(rng: np.random.Generator, leaf: Leaf, shape: tuple[int, ...]) -> np.ndarray:
        if leaf == GAMMA:
            sign = np.where(rng.random(shape) < 0.2, -1.0, 1.0)
            return (sign * 10.0 ** rng.uniform(-4.0, 0.0, shape)).astype(np.float32)
        if leaf in (BETA, MEAN):
            return rng.normal(0.0, 0.1, shape).astype(np.float32)
        if leaf == VAR:
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return np.zeros(shape, np.float32)

    return _init(graph, seed, layers, fill)


INITIALISERS: dict[str, Initialiser] = {"darknet": init_darknet, "sparse": init_sparse}


def init_variables(graph: Graph, initialiser: str = "darknet", seed: int = 0,
                   layers: frozenset[int] | None = None) -> dict[str, Any]:
    """Fresh numpy float32 variables for ``graph`` from a named initialiser.

    Each layer draws from its own generator, seeded by ``(seed, layer index)``, so a
    layer's value does not depend on the others (a partial weights file fills in the
    rest with exactly what a full initialisation would have given them).

    Args:
        initialiser: ``"darknet"`` (Darknet's: γ = 1) or ``"sparse"`` (random γ, many
            near zero: what a sparse-trained network looks like, for trying prunes).
        layers: initialise only these conv layer indices (default: every conv).

    >>> import ir
    >>> g = ir.parse_cfg("[net]\\nchannels=3\\n[convolutional]\\nbatch_normalize=1\\n"
    ...                  "filters=4\\nsize=3\\n")
    >>> v = init_variables(g, "sparse", seed=1)
    >>> (v["params"]["layer_0"]["conv"]["kernel"].shape,
    ...  v["batch_stats"]["layer_0"]["bn"]["var"].shape)
    ((3, 3, 3, 4), (4,))
    """
    if initialiser not in INITIALISERS:
        raise ValueError(f"initialiser={initialiser!r}: expected one of "
                         f"{', '.join(map(repr, INITIALISERS))}")
    return INITIALISERS[initialiser](graph, seed, layers)
