"""Layer pruning: find residual blocks, rank them by γ, remove whole blocks.

(Over 400 lines: finding, ranking and removing blocks share the block type and the
renumbering; the pass and its report sit beside them.)

Channel pruning makes a network thinner but not shallower. A *residual block* is the
chain of convs whose output a ``[shortcut]`` adds back onto that chain's input::

    f            any layer: the identity path
    f+1 .. s-1   convs, each read only by the next one (the last by the shortcut)
    s            [shortcut] from=f, activation=linear: out = f + conv_chain(f)

Deleting layers ``f+1..s`` and letting every reader of ``s`` read ``f`` instead leaves
the identity path. When the conv feeding the shortcut has γ = β = 0 and an activation
with ``act(0) = 0`` (leaky, relu, linear, swish, mish) the block adds exactly zero, so
the network without it computes the same function; sparse training drives γ toward
that, which is why blocks are ranked by the |γ| of that conv (as the field does).

Because a block is a contiguous range, readers that take the previous layer
implicitly (convs, ``[yolo]``, ``[upsample]``, ...) stay consistent: the layer after
``s`` lands right after ``f``. Every layer index a layer holds (``[route] layers``,
``from=`` of ``[shortcut]``, ``[sam]``, ``[scale_channels]`` and other sections, a
conv's ``share_index``) is renumbered by its kind's ``renumber`` rule, and references
to a removed shortcut become references to its ``f``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from ir import (
    Activation,
    Conv,
    Graph,
    Layer,
    Shape,
    Shortcut,
    layer_inputs,
    layer_refs,
    spec_of,
    variables_owner,
)
from ir.shapes import verify
from ir.variables import Variables
from passes import tree
from passes.errors import PruneError
from passes.pipeline import PassResult
from passes.reports import BlocksReport, Counts, RemovedBlock
from passes.text import pass_text


@dataclass(frozen=True, slots=True)
class ResidualBlock:
    """One removable block: layers ``source+1 .. shortcut``.

    Attributes:
        source: ``f``, the layer the shortcut adds back (the identity path).
        shortcut: ``s``, the ``[shortcut]`` layer closing the block.
        convs: the conv chain ``f+1 .. s-1``.
        gamma_conv: the last BN conv of the chain (the one feeding the shortcut when
            it has BN), whose γ ranks the block (a ``share_index`` conv's: its
            owner's); None when no conv of the chain has BN.
    """

    source: int
    shortcut: int
    convs: tuple[int, ...]
    gamma_conv: int | None

    @property
    def layers(self) -> tuple[int, ...]:
        """Every layer the block removes: the convs and the shortcut."""
        return (*self.convs, self.shortcut)


@dataclass(frozen=True, slots=True)
class BlockAnalysis:
    """Which ``[shortcut]`` layers close a removable block, and why the others do not.

    Attributes:
        blocks: the removable blocks, in layer order.
        reasons: ``(shortcut index, why it is not removable)`` for every other shortcut.
    """

    blocks: tuple[ResidualBlock, ...]
    reasons: tuple[tuple[int, str], ...]

    def block(self, shortcut: int) -> ResidualBlock | None:
        for b in self.blocks:
            if b.shortcut == shortcut:
                return b
        return None

    def reason(self, shortcut: int) -> str | None:
        return dict(self.reasons).get(shortcut)


def _where(graph: Graph, index: int) -> str:
    layer = graph.layers[index]
    return f"[{layer.kind}] layer {index} (cfg line {layer.line})"


def _weighted(key: str, value: str) -> bool:
    """Whether a [shortcut] key weights its inputs (then, without the block, the
    identity path would lose its weight)."""
    if key == "weights_type":
        return value != "none"
    if key in ("alpha", "beta"):
        try:
            return float(value) != 1.0
        except ValueError:
            return True
    return False


def _referrers(graph: Graph) -> tuple[tuple[int, ...], ...]:
    """For each layer, the layers that read it or otherwise name it (``share_index``)."""
    found: list[list[int]] = [[] for _ in graph.layers]
    for i in range(len(graph.layers)):
        for j in layer_refs(graph, i):
            if j >= 0:
                found[j].append(i)
    return tuple(tuple(r) for r in found)


def _not_removable(graph: Graph, s: int, readers: tuple[tuple[int, ...], ...],
                   shapes: tuple[Shape, ...]) -> str | None:
    """Why the shortcut at ``s`` does not close a removable block (None if it does)."""
    layer = graph.layers[s]
    assert isinstance(layer, Shortcut)  # called on shortcuts only
    if len(layer.inputs) != 2:
        refs = ",".join(str(j) for j in layer.inputs[1:])
        return (f"adds {len(layer.inputs)} inputs (layers {s - 1} and {refs}): only a "
                "two-input shortcut closes one residual block")
    if layer.activation is not Activation.LINEAR:
        return (f"activation={layer.activation.value}: without the block the identity "
                "path would lose that activation (only linear shortcuts are removable)")
    for key, value in layer.extra:
        if _weighted(key, value):
            return (f"weighted shortcut ({key}={value}): without the block the identity "
                    "path would lose its weight")
    f = layer.inputs[1]
    if f == s - 1:
        return f"from=-1 adds layer {f} to itself: there is no block between them"
    chain = range(f + 1, s)
    for j in chain:
        if not isinstance(graph.layers[j], Conv):
            return (f"layer {j} between from={f} and the shortcut is a "
                    f"[{graph.layers[j].kind}], not a conv: not a plain conv chain")
    if shapes[f].c != shapes[s - 1].c:
        return (f"adds {shapes[s - 1].c} channels (layer {s - 1}) to {shapes[f].c} "
                f"(layer {f}): removing it would change the channel count")
    for j in chain:
        outside = [r for r in readers[j] if r != j + 1]
        if outside:
            r = outside[0]
            if j in layer_inputs(graph, r):
                return (f"{_where(graph, r)} reads layer {j}, inside the block "
                        f"({f + 1}..{s}): removing the block would leave it without input")
            return (f"{_where(graph, r)} runs with the weights of layer {j} "
                    f"(share_index), inside the block ({f + 1}..{s}): removing the "
                    "block would remove them")
    return None


def analyze_blocks(graph: Graph) -> BlockAnalysis:
    """Every ``[shortcut]`` of ``graph``: a removable `ResidualBlock`, or why not.

    A shortcut at ``s`` with inputs ``(s-1, f)`` closes a removable block when it has
    exactly two inputs of the same channel count, a linear activation and no input
    weights, the layers ``f+1 .. s-1`` are at least one conv, and nothing but the next
    layer of the chain reads any of them. Readers of ``s`` itself are fine: they read
    ``f`` once the block is gone. A conv of the chain whose weights a layer outside
    it shares (``share_index``) keeps the block.

    >>> import ir
    >>> g = ir.parse_cfg("[net]\\nwidth=8\\nheight=8\\n[convolutional]\\nfilters=4\\n"
    ...                  "[convolutional]\\nfilters=4\\n[shortcut]\\nfrom=-2\\n")
    >>> analyze_blocks(g).blocks
    (ResidualBlock(source=0, shortcut=2, convs=(1,), gamma_conv=None),)
    """
    shapes = verify(graph)
    readers = _referrers(graph)
    blocks: list[ResidualBlock] = []
    reasons: list[tuple[int, str]] = []
    for s, layer in enumerate(graph.layers):
        if not isinstance(layer, Shortcut):
            continue
        why = _not_removable(graph, s, readers, shapes)
        if why is not None:
            reasons.append((s, f"{_where(graph, s)}: {why}"))
            continue
        f = layer.inputs[1]
        convs = tuple(range(f + 1, s))
        bn = [j for j in convs if getattr(graph.layers[j], "batch_normalize", False)]
        blocks.append(ResidualBlock(source=f, shortcut=s, convs=convs,
                                    gamma_conv=bn[-1] if bn else None))
    return BlockAnalysis(blocks=tuple(blocks), reasons=tuple(reasons))


def find_residual_blocks(graph: Graph) -> tuple[ResidualBlock, ...]:
    """The removable residual blocks of ``graph`` (see `analyze_blocks` for why not)."""
    return analyze_blocks(graph).blocks


# ----------------------------------------------------------------------------- ranking

BlockScore = Callable[[Any], float]


def mean_abs_gamma(gamma: Any) -> float:
    """The field's block score: mean |γ| of the conv feeding the shortcut."""
    return float(np.mean(np.abs(np.asarray(gamma, dtype=np.float64))))


@dataclass(frozen=True, slots=True)
class ScoredBlock:
    """A block and its score (None: no BN conv in the chain, nothing to rank by)."""

    block: ResidualBlock
    score: float | None


def _score(graph: Graph, variables: Variables, block: ResidualBlock, score: BlockScore
           ) -> float | None:
    if block.gamma_conv is None:
        return None
    owner = variables_owner(graph.layers[block.gamma_conv], block.gamma_conv)
    gamma = np.asarray(tree.get(variables, owner, tree.GAMMA))
    if not np.all(np.isfinite(gamma)):
        bad = int(np.flatnonzero(~np.isfinite(gamma))[0])
        raise PruneError(f"{_where(graph, owner)}: BN γ channel {bad} is "
                         f"{gamma[bad]}: expected finite weights to rank block "
                         f"{block.source + 1}..{block.shortcut} by")
    value = float(score(gamma))
    if not math.isfinite(value):
        raise PruneError(f"block {block.source + 1}..{block.shortcut}: score {value}: "
                         "the score function must return a finite number")
    return value


def rank_blocks(graph: Graph, variables: Variables, blocks: Iterable[ResidualBlock] | None = None,
                score: BlockScore = mean_abs_gamma) -> tuple[ScoredBlock, ...]:
    """Blocks scored by ``score(γ of their gamma_conv)``, lowest (least useful) first.

    Ties keep layer order; blocks without a BN conv (score None) come last.
    """
    blocks = find_residual_blocks(graph) if blocks is None else tuple(blocks)
    scored = [ScoredBlock(b, _score(graph, variables, b, score)) for b in blocks]
    return tuple(sorted(scored, key=lambda sb: (sb.score is None, sb.score or 0.0,
                                                sb.block.shortcut)))


def choose_blocks(graph: Graph, variables: Variables, *, n: int | None = None,
                  threshold: float | None = None, score: BlockScore = mean_abs_gamma,
                  analysis: BlockAnalysis | None = None) -> tuple[ScoredBlock, ...]:
    """The ``n`` lowest-scoring blocks, or every block scoring below ``threshold``.

    Returns them in layer order. Blocks without a score are never chosen.
    """
    if (n is None) == (threshold is None):
        raise PruneError("give exactly one of n or threshold", argument="n")
    analysis = analyze_blocks(graph) if analysis is None else analysis
    ranked = [sb for sb in rank_blocks(graph, variables, analysis.blocks, score)
              if sb.score is not None]
    if n is not None:
        if n < 0 or n > len(ranked):
            raise PruneError(f"n={n}: expected 0 <= n <= {len(ranked)}, the number "
                             f"of removable blocks with a BN conv to rank "
                             f"({len(analysis.blocks)} removable, {len(analysis.reasons)} "
                             "shortcuts not removable; see analyze_blocks)", argument="n")
        chosen = ranked[:n]
    else:
        assert threshold is not None  # exactly one of n and threshold was given
        if not math.isfinite(threshold):
            raise PruneError(f"threshold={threshold}: expected a finite number",
                             argument="threshold")
        chosen = [sb for sb in ranked if sb.score is not None and sb.score < threshold]
    return tuple(sorted(chosen, key=lambda sb: sb.block.shortcut))


# ----------------------------------------------------------------------------- removal


def layer_map(graph: Graph, blocks: Iterable[ResidualBlock]) -> dict[int, int]:
    """Old index -> new index of every layer that survives removing ``blocks``, and of
    every removed shortcut (-> the new index of what its readers read instead)."""
    blocks = tuple(blocks)
    removed = {j for b in blocks for j in b.layers}
    redirect = {b.shortcut: b.source for b in blocks}
    new: dict[int, int] = {}
    for i in range(len(graph.layers)):
        if i not in removed:
            new[i] = len(new)
    for s in redirect:
        f = s
        while f in redirect:  # chained blocks: the source may itself be removed
            f = redirect[f]
        new[s] = new[f]
    return dict(sorted(new.items()))


def remove_blocks(graph: Graph, variables: Variables, blocks: Iterable[ResidualBlock]
                  ) -> tuple[Graph, Variables]:
    """``(graph, variables)`` without the layers of ``blocks``, every layer index each
    survivor holds renumbered by its kind's ``renumber`` rule; the blocks must come
    from ``analyze_blocks(graph)``. A survivor that would still name a removed layer
    other than a block's shortcut (a reader inside the block, the conv it shares) is a
    `PruneError`, never a stale index."""
    blocks = tuple(blocks)
    if not blocks:
        return graph, variables
    mapping = layer_map(graph, blocks)
    removed = {j for b in blocks for j in b.layers}

    layers: list[Layer] = []
    for i, layer in enumerate(graph.layers):
        if i in removed:
            continue

        def renumber(j: int, i: int = i) -> int:
            if j < 0:
                return j  # the image
            if j not in mapping:
                block = next(b for b in blocks if j in b.layers)
                raise PruneError(f"{_where(graph, i)} refers to layer {j}, which removing "
                                 f"block {block.source + 1}..{block.shortcut} deletes: "
                                 "expected blocks from analyze_blocks(graph), which keeps "
                                 "such a block")
            return mapping[j]

        new = spec_of(layer).renumber(layer, renumber)
        want = tuple(renumber(j) for j in layer_inputs(graph, i))
        got = spec_of(new).inputs(new, len(layers))
        if got != want:
            # Cannot happen for blocks from analyze_blocks: a contiguous removal keeps
            # the implicit previous-layer input of every survivor.
            raise PruneError(f"{_where(graph, i)}: it would read layers {got}, not "
                             f"{want} (what it read, renumbered)")
        layers.append(new)
    keep = {old: new for old, new in mapping.items() if old not in removed}
    return (dataclasses.replace(graph, layers=tuple(layers)),
            tree.drop_layers(variables, keep))


@dataclass(frozen=True, slots=True)
class RemoveBlocks:
    """The layer-pruning pass: drop whole residual blocks.

    Give exactly one of:
        blocks: shortcut indices of the blocks to remove (each must be removable);
        n: remove the ``n`` lowest-scoring blocks;
        threshold: remove every block scoring below it.
    ``score`` maps the γ of a block's `ResidualBlock.gamma_conv` to its score
    (default `mean_abs_gamma`). Removing nothing returns the input objects.

    >>> g, v = RemoveBlocks(n=8)(graph, variables)
    """

    blocks: tuple[int, ...] | None = None
    n: int | None = None
    threshold: float | None = None
    score: BlockScore = mean_abs_gamma
    name: str = "remove-blocks"

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.blocks, self.n, self.threshold))
        if given != 1:
            raise PruneError("RemoveBlocks: give exactly one of blocks, n or threshold",
                             argument="n", pass_name=self.name)
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(int(s) for s in self.blocks))

    def select(self, graph: Graph, variables: Variables,
               analysis: BlockAnalysis | None = None) -> tuple[ScoredBlock, ...]:
        """The blocks this pass removes from ``(graph, variables)``, with scores, in
        layer order."""
        analysis = analyze_blocks(graph) if analysis is None else analysis
        if self.blocks is None:
            return choose_blocks(graph, variables, n=self.n, threshold=self.threshold,
                                 score=self.score, analysis=analysis)
        chosen = []
        for s in sorted(set(self.blocks)):
            block = analysis.block(s)
            if block is None:
                why = analysis.reason(s) or (
                    f"layer {s} is a [{graph.layers[s].kind}]" if 0 <= s < len(graph)
                    else f"layer {s} is out of range (0..{len(graph) - 1})")
                raise PruneError(f"block {s}: not removable: {why}; expected the index "
                                 "of a [shortcut] closing a removable block",
                                 argument="blocks")
            chosen.append(block)
        return tuple(sorted(rank_blocks(graph, variables, chosen, self.score),
                            key=lambda sb: sb.block.shortcut))

    def run(self, graph: Graph, variables: Variables) -> PassResult:
        """Select once, remove, and report the blocks removed with their scores."""
        analysis = analyze_blocks(graph)
        chosen = self.select(graph, variables, analysis)
        out_graph, out_vars = remove_blocks(graph, variables, (sb.block for sb in chosen))
        mapping = layer_map(graph, (sb.block for sb in chosen))
        report = BlocksReport(
            name=self.name, text=pass_text(self), before=Counts.of(graph),
            after=Counts.of(out_graph), found=len(analysis.blocks),
            removed=tuple(RemovedBlock(shortcut=sb.block.shortcut, source=sb.block.source,
                                       layers=sb.block.layers,
                                       gamma_conv=sb.block.gamma_conv, score=sb.score)
                          for sb in chosen),
            not_removable=analysis.reasons, index_map=tuple(mapping.items()),
            score=getattr(self.score, "__name__", repr(self.score)))
        return PassResult(out_graph, out_vars, report)

    def __call__(self, graph: Graph, variables: Variables) -> tuple[Graph, Variables]:
        result = self.run(graph, variables)
        return result.graph, result.variables
